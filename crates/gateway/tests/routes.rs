//! Every route through `app(state)` as a tower service (`oneshot`), with scripted sources:
//! JSON shapes, the token matrix, bad inputs, and the OpenAPI document.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use crate::common::*;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use http_body_util::BodyExt as _;
use imstatus_core::{Availability, Observation, PartId, SourceKind, Status};
use imstatus_gateway::{app, routes, GatewayState};
use serde_json::{json, Value};
use tower::ServiceExt as _;

const LIMIT: Duration = Duration::from_secs(20);

fn request(method: Method, uri: &str, token: Option<&str>, body: Option<&str>) -> Request<Body> {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    match body {
        Some(text) => b
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(text.to_owned()))
            .unwrap(),
        None => b.body(Body::empty()).unwrap(),
    }
}

async fn call(state: &GatewayState, req: Request<Body>) -> Response {
    app(state.clone()).oneshot(req).await.expect("infallible")
}

async fn body_bytes(resp: Response) -> Vec<u8> {
    resp.into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec()
}

async fn get(state: &GatewayState, uri: &str, token: Option<&str>) -> (StatusCode, Value) {
    let resp = call(state, request(Method::GET, uri, token, None)).await;
    let status = resp.status();
    let bytes = body_bytes(resp).await;
    let value = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!(
            "GET {uri} ({status}) is not JSON: {e}: {}",
            String::from_utf8_lossy(&bytes)
        )
    });
    (status, value)
}

async fn put_status(
    state: &GatewayState,
    account: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, Option<Value>) {
    let resp = call(
        state,
        request(
            Method::PUT,
            &format!("/v1/accounts/{account}/status"),
            token,
            Some(body),
        ),
    )
    .await;
    let status = resp.status();
    let bytes = body_bytes(resp).await;
    let value = (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).expect("JSON error"));
    (status, value)
}

/// Asserts the JSON error shape and returns its code.
fn error_code(v: &Value) -> &str {
    let obj = v.as_object().expect("error object");
    let hresult = obj["hresult"].as_str().expect("hresult");
    assert!(
        hresult.starts_with("0x") && hresult.len() == 10,
        "hresult {hresult}"
    );
    assert!(obj["detail"].is_string(), "{v}");
    assert!(!obj["hint"].as_str().expect("hint").is_empty(), "{v}");
    obj["error"].as_str().expect("error")
}

#[tokio::test]
async fn accounts_list_and_one_account_are_snapshot_events() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &[]);
        let (status, list) = get(&state, "/v1/accounts", None).await;
        assert_eq!(status, StatusCode::OK);
        let names: Vec<&str> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["account"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["alice", "bob", "carol"]);

        let (status, a) = get(&state, "/v1/accounts/alice", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(a["event"], "snapshot");
        assert_eq!(a["account"], "alice");
        assert_eq!(a["source"], "test");
        assert_eq!(a["session"], "signed_in");
        assert_eq!(a["availability"], "away");
        assert_eq!(a["message"], "lunch");
        assert_eq!(a["mistatus"], 0x22);
        assert_eq!(
            a["resources"],
            json!([{"resource": "desk", "session": "signed_in", "availability": "away", "message": "lunch", "priority": 5}])
        );
        assert!(a["seq"].as_u64().unwrap() > 0);
        assert!(a["time"].as_str().unwrap().ends_with('Z'));
        assert!(a.get("source_error").is_none());
        // The same snapshot, but for `time`, which is when it was taken.
        let (mut first, mut a) = (list[0].clone(), a);
        first["time"] = Value::Null;
        a["time"] = Value::Null;
        assert_eq!(first, a, "the list holds the same snapshot");
    })
    .await;
}

#[tokio::test]
async fn contacts_are_listed_with_their_presence() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &[]);
        let (status, c) = get(&state, "/v1/accounts/alice/contacts", None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(c["account"], "alice");
        assert_eq!(
            c["contacts"],
            json!([
                {"contact": "bob@example.test", "availability": "available"},
                {"contact": "carol@example.test", "availability": "busy", "message": "focus"}
            ])
        );
        let (_, b) = get(&state, "/v1/accounts/bob/contacts", None).await;
        assert_eq!(b["contacts"], json!([]));
    })
    .await;
}

#[tokio::test]
async fn token_matrix() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &tokens());

        // No token, a wrong token, a malformed header: 401 with WWW-Authenticate.
        for token in [None, Some("wrong"), Some("read-alice-secretX")] {
            let resp = call(
                &state,
                request(Method::GET, "/v1/accounts/alice", token, None),
            )
            .await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token:?}");
            let www = resp.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .unwrap()
                .to_owned();
            assert!(www.starts_with("Bearer"), "{www}");
            let v: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
            assert_eq!(error_code(&v), "unauthorized");
            assert!(
                !v.to_string().contains("read-alice-secretX"),
                "the token is not echoed"
            );
        }
        let basic = Request::get("/v1/accounts")
            .header(header::AUTHORIZATION, "Basic YWxpY2U6cHc=")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&state, basic).await.status(), StatusCode::UNAUTHORIZED);

        // A token limited to alice: alice yes, bob and an unknown account the same 404.
        let (st, _) = get(&state, "/v1/accounts/alice", Some(READ_ALICE)).await;
        assert_eq!(st, StatusCode::OK);
        let (st_bob, bob) = get(&state, "/v1/accounts/bob", Some(READ_ALICE)).await;
        let (st_none, none) = get(&state, "/v1/accounts/nobody", Some(READ_ALICE)).await;
        assert_eq!(st_bob, StatusCode::NOT_FOUND);
        assert_eq!(st_none, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&bob), "not_found");
        assert_eq!(
            bob["detail"].as_str().unwrap().replace("bob", "X"),
            none["detail"].as_str().unwrap().replace("nobody", "X"),
            "out of scope and missing look the same"
        );
        for path in ["contacts", "badge.svg"] {
            let resp = call(
                &state,
                request(
                    Method::GET,
                    &format!("/v1/accounts/bob/{path}"),
                    Some(READ_ALICE),
                    None,
                ),
            )
            .await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let (_, list) = get(&state, "/v1/accounts", Some(READ_ALICE)).await;
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["account"], "alice");

        // `*` sees everything.
        let (_, list) = get(&state, "/v1/accounts", Some(READ_ALL)).await;
        assert_eq!(list.as_array().unwrap().len(), 3);
        let (st, _) = get(&state, "/v1/accounts/bob", Some(READ_ALL)).await;
        assert_eq!(st, StatusCode::OK);

        // Writing: read-only → 403; out of scope → 404 even for a writer; write → 204.
        let body = r#"{"availability":"busy","message":"call"}"#;
        let (st, v) = put_status(&state, "alice", Some(READ_ALICE), body).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        assert_eq!(error_code(v.as_ref().unwrap()), "access_denied");
        assert_eq!(v.unwrap()["hresult"], "0x80070005");
        let (st, _) = put_status(&state, "alice", Some(READ_ALL), body).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let (st, _) = put_status(&state, "bob", Some(WRITE_ALICE), body).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        let (st, _) = put_status(&state, "bob", Some(READ_ALICE), body).await;
        assert_eq!(st, StatusCode::NOT_FOUND, "no 403 that would reveal bob");
        let (st, _) = put_status(&state, "alice", None, body).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);
        let (st, v) = put_status(&state, "alice", Some(WRITE_ALICE), body).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{v:?}");
        let (st, _) = put_status(&state, "bob", Some(WRITE_ALL), body).await;
        assert_eq!(st, StatusCode::NO_CONTENT);

        // The token may also come as ?access_token= (EventSource, <img>).
        let (st, _) = get(
            &state,
            &format!("/v1/accounts/alice?access_token={READ_ALICE}"),
            None,
        )
        .await;
        assert_eq!(st, StatusCode::OK);
        let (st, _) = get(&state, "/v1/accounts/alice?access_token=nope", None).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED);

        // Metrics need a token and show only the token's accounts.
        let resp = call(&state, request(Method::GET, "/metrics", None, None)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        let resp = call(
            &state,
            request(Method::GET, "/metrics", Some(READ_ALICE), None),
        )
        .await;
        let text = String::from_utf8(body_bytes(resp).await).unwrap();
        assert!(text.contains("account=\"alice\""));
        assert!(!text.contains("account=\"bob\""));

        // Streams: an out-of-scope account is 404 too.
        let resp = call(
            &state,
            request(
                Method::GET,
                "/v1/events?accounts=bob",
                Some(READ_ALICE),
                None,
            ),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
        let resp = call(&state, request(Method::GET, "/v1/events", None, None)).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

        // Public routes need no token.
        for path in [
            "/",
            "/dashboard.js",
            "/dashboard.css",
            "/openapi.json",
            "/healthz",
        ] {
            let resp = call(&state, request(Method::GET, path, None, None)).await;
            assert_eq!(resp.status(), StatusCode::OK, "{path}");
        }
    })
    .await;
}

#[tokio::test]
async fn open_mode_answers_loopback_names_only() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &[]);
        for host in [
            "127.0.0.1:8470",
            "localhost:8470",
            "[::1]:8470",
            "localhost",
        ] {
            let req = Request::get("/v1/accounts/alice")
                .header(header::HOST, host)
                .body(Body::empty())
                .unwrap();
            assert_eq!(call(&state, req).await.status(), StatusCode::OK, "{host}");
        }
        let req = Request::get("/v1/accounts/alice")
            .header(header::HOST, "rebound.example:8470")
            .body(Body::empty())
            .unwrap();
        let resp = call(&state, req).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let v: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
        assert_eq!(error_code(&v), "access_denied");
        // Open mode reads only, unless configured to write.
        let (st, _) = put_status(&state, "alice", None, r#"{"availability":"available"}"#).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let state = open_writable_gateway(&s.hub);
        let (st, _) = put_status(&state, "alice", None, r#"{"availability":"available"}"#).await;
        assert_eq!(st, StatusCode::NO_CONTENT);
    })
    .await;
}

#[tokio::test]
async fn without_tokens_the_gateway_is_read_only_by_default() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &[]);
        let before = s.hub.snapshot(&alice()).unwrap();
        let (st, v) = put_status(&state, "alice", None, r#"{"availability":"busy"}"#).await;
        assert_eq!(st, StatusCode::FORBIDDEN);
        let v = v.expect("a JSON error");
        assert_eq!(error_code(&v), "access_denied");
        assert_eq!(v["hresult"], "0x80070005");
        let hint = v["hint"].as_str().unwrap();
        assert!(
            hint.contains("tokenless_write = true") && hint.contains("[serve]"),
            "{hint}"
        );
        // Refused before the source was asked: nothing changed, not even the seq.
        assert_eq!(s.hub.snapshot(&alice()).unwrap().seq, before.seq);
        // Reading still works.
        let (st, a) = get(&state, "/v1/accounts/alice", None).await;
        assert_eq!(
            (st, a["availability"].as_str()),
            (StatusCode::OK, Some("away"))
        );

        // `tokenless_write = true` lets it through to the source.
        let state = open_writable_gateway(&s.hub);
        let (st, v) = put_status(&state, "alice", None, r#"{"availability":"busy"}"#).await;
        assert_eq!(st, StatusCode::NO_CONTENT, "{v:?}");
        // The scripted source reports the set status as its part `scripted`.
        let (_, a) = get(&state, "/v1/accounts/alice", None).await;
        assert!(
            a["resources"]
                .as_array()
                .unwrap()
                .iter()
                .any(|r| r["resource"] == "scripted" && r["availability"] == "busy"),
            "{a}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_token_scoped_to_some_accounts_sees_only_their_metrics() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &tokens());
        let _ = get(&state, "/v1/accounts/bob", Some(READ_ALL)).await;
        let metrics = |token: &'static str| {
            let state = state.clone();
            async move {
                let resp = call(&state, request(Method::GET, "/metrics", Some(token), None)).await;
                assert_eq!(resp.status(), StatusCode::OK);
                String::from_utf8(body_bytes(resp).await).unwrap()
            }
        };
        let scoped = metrics(READ_ALICE).await;
        let samples: Vec<&str> = scoped.lines().filter(|l| !l.starts_with('#')).collect();
        assert!(!samples.is_empty(), "{scoped}");
        for line in &samples {
            assert!(
                line.contains("{account=\"alice\""),
                "a sample not about alice: {line}"
            );
        }
        for family in [
            "imstatus_events_published_total",
            "imstatus_subscribers",
            "imstatus_lagged_resyncs_total",
            "imstatus_gateway_",
            "imstatus_http_",
        ] {
            assert!(
                !scoped.contains(family),
                "{family} shown to a scoped token:\n{scoped}"
            );
        }
        assert!(scoped.contains("imstatus_account_source_up{account=\"alice\",source=\"test\"} 1"));

        let all = metrics(READ_ALL).await;
        for needle in [
            "imstatus_events_published_total ",
            "imstatus_gateway_streams{transport=\"sse\"} 0",
            "imstatus_http_responses_total{route=\"/v1/accounts/{name}\",code=\"2xx\"} 1",
            "imstatus_account_signed_in{account=\"bob\"} 1",
        ] {
            assert!(
                all.contains(needle),
                "missing {needle:?} for a `*` token:\n{all}"
            );
        }
    })
    .await;
}

#[tokio::test]
async fn setting_status_reaches_the_source_and_the_snapshot() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &tokens());
        let (st, _) = put_status(
            &state,
            "alice",
            Some(WRITE_ALICE),
            r#"{"availability":"Extended-Away","message":"holiday"}"#,
        )
        .await;
        assert_eq!(st, StatusCode::NO_CONTENT);
        // The scripted source reports the set status as its part `scripted`.
        let snap = s.hub.snapshot(&alice()).unwrap();
        let r: Vec<_> = snap
            .snapshot()
            .unwrap()
            .resources
            .iter()
            .map(|r| r.resource.to_string())
            .collect();
        assert!(r.contains(&"scripted".to_owned()), "{r:?}");
        let (_, a) = get(&state, "/v1/accounts/alice", Some(READ_ALICE)).await;
        assert!(a["resources"].to_string().contains("holiday"), "{a}");
    })
    .await;
}

#[tokio::test]
async fn unsupported_set_status_is_501_with_the_design_code() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = open_writable_gateway(&s.hub);
        let (st, v) = put_status(&state, "carol", None, r#"{"availability":"away"}"#).await;
        assert_eq!(st, StatusCode::NOT_IMPLEMENTED);
        let v = v.unwrap();
        assert_eq!(error_code(&v), "unsupported");
        assert_eq!(v["hresult"], "0x80004001");
    })
    .await;
}

#[tokio::test]
async fn bad_inputs_get_json_errors() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = open_writable_gateway(&s.hub);
        for body in [
            "{not json",
            "",
            "null",
            r#"{"availability":"sleeping"}"#,
            r#"{"availability":"unknown"}"#,
            r#"{"availability":"away","extra":1}"#,
            r#"{"availability":["away"]}"#,
            r#"{"availability":"away","message":"a\u0007b"}"#,
        ] {
            let (st, v) = put_status(&state, "alice", None, body).await;
            assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(error_code(v.as_ref().unwrap()), "bad_request", "{body}");
        }
        let (_, v) = put_status(&state, "alice", None, r#"{"availability":"sleeping"}"#).await;
        assert!(v.unwrap()["detail"].as_str().unwrap().contains("sleeping"));

        // Too large.
        let big = format!(
            r#"{{"availability":"away","message":"{}"}}"#,
            "x".repeat(100_000)
        );
        let (st, v) = put_status(&state, "alice", None, &big).await;
        assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(error_code(v.as_ref().unwrap()), "payload_too_large");

        // Bad Last-Event-ID, header and query.
        for (uri, header_value) in [
            ("/v1/events", Some("abc")),
            ("/v1/events", Some("-1")),
            ("/v1/events", Some("99999999999999999999999")),
            ("/v1/events?last_event_id=x", None),
            ("/v1/ws?last_event_id=1.5", None),
            ("/v1/events?accounts=%zz", None),
        ] {
            let mut req = Request::get(uri);
            if let Some(h) = header_value {
                req = req.header("last-event-id", h);
            }
            let resp = call(&state, req.body(Body::empty()).unwrap()).await;
            assert_eq!(
                resp.status(),
                StatusCode::BAD_REQUEST,
                "{uri} {header_value:?}"
            );
            let v: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
            assert_eq!(error_code(&v), "bad_request");
        }
        let bin = Request::get("/v1/events")
            .header(
                "last-event-id",
                axum::http::HeaderValue::from_bytes(b"\xff1").unwrap(),
            )
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&state, bin).await.status(), StatusCode::BAD_REQUEST);

        // Unknown accounts in the stream filter.
        let (st, v) = get(&state, "/v1/events?accounts=alice,nobody", None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&v), "not_found");

        // Paths: bad encoding, unknown routes, wrong methods.
        let (st, v) = get(&state, "/v1/accounts/%ff%fe", None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&v), "bad_request");
        let (st, v) = get(&state, "/v1/nothing/here", None).await;
        assert_eq!(st, StatusCode::NOT_FOUND);
        assert_eq!(error_code(&v), "not_found");
        let resp = call(
            &state,
            request(Method::DELETE, "/v1/accounts/alice", None, None),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        let v: Value = serde_json::from_slice(&body_bytes(resp).await).unwrap();
        assert_eq!(error_code(&v), "method_not_allowed");

        // A WebSocket route asked without an upgrade.
        let (st, v) = get(&state, "/v1/ws", None).await;
        assert_eq!(st, StatusCode::BAD_REQUEST);
        assert_eq!(error_code(&v), "bad_request");
    })
    .await;
}

#[tokio::test]
async fn odd_requests_never_get_a_server_error() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &tokens());
        let long = "a".repeat(10_000);
        let paths = [
            "/v1/accounts/".to_owned(),
            "/v1/accounts//contacts".to_owned(),
            "/v1/accounts/alice/../bob".to_owned(),
            "/v1/accounts/%00".to_owned(),
            format!("/v1/accounts/{long}"),
            format!("/v1/accounts/{long}/badge.svg?label={long}"),
            "/v1/accounts/alice/badge.svg?label=%3Cscript%3E".to_owned(),
            "/v1/events?accounts=,,,".to_owned(),
            "/v1/events?&&=&a".to_owned(),
            "/metrics?x=%".to_owned(),
            "/%2e%2e/etc/passwd".to_owned(),
        ];
        let auths = [
            None,
            Some("Bearer ".to_owned()),
            Some(format!("Bearer {long}")),
            Some("Bearer \t write-all-secret".to_owned()),
            Some(format!("Bearer {WRITE_ALL}")),
        ];
        for path in &paths {
            for auth in &auths {
                for method in [Method::GET, Method::PUT, Method::POST, Method::HEAD] {
                    let mut req = Request::builder().method(method.clone()).uri(path.as_str());
                    if let Some(a) = auth {
                        req = req.header(header::AUTHORIZATION, a.as_str());
                    }
                    let resp =
                        call(&state, req.body(Body::from("{\"availability\":")).unwrap()).await;
                    assert!(
                        !resp.status().is_server_error(),
                        "{method} {path} {auth:?}: {}",
                        resp.status()
                    );
                }
            }
        }
    })
    .await;
}

#[tokio::test]
async fn badge_is_an_svg_coloured_by_availability() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &[]);
        let resp = call(
            &state,
            request(
                Method::GET,
                "/v1/accounts/alice/badge.svg?label=Alice%20%3Cme%3E",
                None,
                None,
            ),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::CONTENT_TYPE],
            "image/svg+xml; charset=utf-8"
        );
        let svg = String::from_utf8(body_bytes(resp).await).unwrap();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.contains(">away<"), "{svg}");
        assert!(svg.contains("Alice &lt;me&gt;"), "{svg}");
        assert!(svg.contains("#d4a72c"), "away is amber: {svg}");
        assert!(
            !svg.contains("@import") && !svg.contains("url(http"),
            "no external resources"
        );

        s.alice.send([Observation::Presence {
            part: PartId::new("desk"),
            status: Status::new(Availability::Busy),
            priority: Some(5),
        }]);
        let hub = s.hub.clone();
        wait_until_async("busy", STEP, || {
            (hub.snapshot(&alice())
                .unwrap()
                .snapshot()
                .unwrap()
                .availability
                == Availability::Busy)
                .then_some(())
        })
        .await
        .unwrap();
        let resp = call(
            &state,
            request(Method::GET, "/v1/accounts/alice/badge.svg", None, None),
        )
        .await;
        let svg = String::from_utf8(body_bytes(resp).await).unwrap();
        assert!(svg.contains(">busy<") && svg.contains("#cf222e"), "{svg}");
    })
    .await;
}

#[tokio::test]
async fn metrics_health_and_dashboard() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &[]);
        let _ = get(&state, "/v1/accounts/alice", None).await;
        let _ = get(&state, "/nope", None).await;
        let resp = call(&state, request(Method::GET, "/metrics", None, None)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert!(resp.headers()[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/plain; version=0.0.4"));
        let text = String::from_utf8(body_bytes(resp).await).unwrap();
        for needle in [
            "# TYPE imstatus_events_published_total counter",
            "# TYPE imstatus_subscribers gauge",
            "# TYPE imstatus_lagged_resyncs_total counter",
            "imstatus_account_source_up{account=\"alice\",source=\"test\"} 1",
            "imstatus_account_state{account=\"alice\",source=\"test\",client=\"unknown\",session=\"signed_in\",availability=\"away\"} 1",
            "imstatus_account_signed_in{account=\"alice\"} 1",
            "# TYPE imstatus_http_request_duration_seconds histogram",
            "imstatus_http_request_duration_seconds_count{route=\"/v1/accounts/{name}\"} 1",
            "imstatus_http_request_duration_seconds_bucket{route=\"/v1/accounts/{name}\",le=\"+Inf\"} 1",
            "imstatus_http_responses_total{route=\"/v1/accounts/{name}\",code=\"2xx\"} 1",
            "imstatus_http_responses_total{route=\"other\",code=\"4xx\"} 1",
            "imstatus_gateway_streams{transport=\"sse\"} 0",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in\n{text}");
        }
        let events: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("imstatus_events_published_total "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(events, s.hub.event_count());

        let (st, v) = get(&state, "/healthz", None).await;
        assert_eq!((st, v), (StatusCode::OK, json!({"status": "ok"})));

        let resp = call(&state, request(Method::GET, "/", None, None)).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let csp = resp.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"), "{csp}");
        let html = String::from_utf8(body_bytes(resp).await).unwrap();
        assert!(html.contains("<script src=\"/dashboard.js\""));
        assert!(html.contains("name=\"viewport\""), "readable on a phone");
        assert!(!html.contains("https://"), "no CDN");
        let js = String::from_utf8(body_bytes(call(&state, request(Method::GET, "/dashboard.js", None, None)).await).await).unwrap();
        assert!(js.contains("new EventSource"));
        assert!(!js.contains("https://") && !js.contains("http://"), "no external resources");

        state.shutdown();
        let (st, v) = get(&state, "/healthz", None).await;
        assert_eq!((st, v), (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "shutting_down"})));
        let resp = call(&state, request(Method::GET, "/v1/events", None, None)).await;
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    })
    .await;
}

#[tokio::test]
async fn openapi_documents_every_route_and_nothing_else() {
    let doc: Value = serde_json::from_str(imstatus_gateway::OPENAPI_JSON).expect("valid JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().expect("paths");
    let documented: BTreeSet<(String, String)> = paths
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), p.clone()))
        })
        .collect();
    let served: BTreeSet<(String, String)> = routes()
        .into_iter()
        .map(|(m, p)| (m.to_string(), p.to_owned()))
        .collect();
    assert_eq!(documented, served);
    // The source kinds come from the accounts served, not from a list in the gateway.
    let kinds = [
        SourceKind::new_static("xmpp"),
        SourceKind::new_static("matrix"),
        SourceKind::new_static("xmpp"),
    ];
    let filled = imstatus_gateway::openapi_document(&kinds);
    assert_eq!(
        filled["components"]["schemas"]["Snapshot"]["properties"]["source"]["enum"],
        json!(["matrix", "xmpp"])
    );
    // Every operation documents its responses, and every $ref resolves.
    for (p, ops) in paths {
        for (m, op) in ops.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{m} {p}"
            );
            assert!(op["summary"].is_string(), "{m} {p}");
        }
    }
    let text = imstatus_gateway::OPENAPI_JSON;
    for piece in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = piece.split('"').next().unwrap();
        assert!(doc["components"]["schemas"][name].is_object(), "{name}");
    }

    // And the router really serves each of them (not the 404/405 fallbacks).
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &[]);
        for (method, path) in routes() {
            let uri = path.replace("{name}", "alice");
            let body = (method == Method::PUT).then_some(r#"{"availability":"away"}"#);
            let resp = call(&state, request(method.clone(), &uri, None, body)).await;
            let status = resp.status();
            let bytes = if uri.starts_with("/v1/events") {
                Vec::new()
            } else {
                body_bytes(resp).await
            };
            let text = String::from_utf8_lossy(&bytes);
            assert!(
                !text.contains("no such route") && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {path}: {status} {text}"
            );
        }
    })
    .await;
}

/// Reads SSE frames from a oneshot response body.
async fn sse_frames(resp: Response, want_data: usize) -> Vec<SseFrame> {
    let mut body = resp.into_body();
    let mut text = String::new();
    let mut frames: Vec<SseFrame> = Vec::new();
    while frames.iter().filter(|f| f.data.is_some()).count() < want_data {
        let frame = tokio::time::timeout(STEP, body.frame())
            .await
            .expect("an SSE frame in time")
            .expect("stream open")
            .expect("frame");
        if let Ok(data) = frame.into_data() {
            text.push_str(std::str::from_utf8(&data).unwrap());
            let (f, rest) = parse_sse(&text);
            frames.extend(f);
            text = rest;
        }
    }
    frames
}

#[tokio::test]
async fn sse_starts_with_snapshots_and_resumes_from_last_event_id() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &tokens());
        let resp = call(
            &state,
            request(Method::GET, "/v1/events", Some(READ_ALL), None),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        let frames = sse_frames(resp, 3).await;
        assert_eq!(frames[0].retry.as_deref(), Some("1000"));
        let data: Vec<&SseFrame> = frames.iter().filter(|f| f.data.is_some()).collect();
        let mut accounts = Vec::new();
        for f in &data {
            let v = f.json().unwrap();
            assert_eq!(v["event"], "snapshot");
            assert!(f.event.is_none(), "no event: line");
            assert_eq!(f.id.as_deref().unwrap(), v["seq"].to_string());
            accounts.push(v["account"].as_str().unwrap().to_owned());
        }
        accounts.sort();
        assert_eq!(accounts, ["alice", "bob", "carol"]);
        let last: u64 = data
            .iter()
            .map(|f| f.id.as_ref().unwrap().parse::<u64>().unwrap())
            .max()
            .unwrap();

        // Two changes happen while nobody listens.
        s.alice.send([Observation::Presence {
            part: PartId::new("desk"),
            status: Status::new(Availability::Available),
            priority: Some(5),
        }]);
        s.bob.send([Observation::Presence {
            part: PartId::new("phone"),
            status: Status::new(Availability::Busy),
            priority: Some(0),
        }]);
        let hub = s.hub.clone();
        wait_until_async("bob busy", STEP, || {
            (hub.snapshot(&bob())
                .unwrap()
                .snapshot()
                .unwrap()
                .availability
                == Availability::Busy)
                .then_some(())
        })
        .await
        .unwrap();

        // Resume: the missed events, no snapshot; a scoped token only gets its account.
        let mut req = request(Method::GET, "/v1/events", Some(READ_ALICE), None);
        req.headers_mut()
            .insert("last-event-id", last.to_string().parse().unwrap());
        let frames = sse_frames(call(&state, req).await, 2).await;
        let events: Vec<Value> = frames.iter().filter_map(SseFrame::json).collect();
        assert!(
            events
                .iter()
                .all(|e| e["account"] == "alice" && e["event"] != "snapshot"),
            "{events:#?}"
        );
        assert!(
            events
                .iter()
                .any(|e| e["event"] == "status_changed" && e["to"]["availability"] == "available"),
            "{events:#?}"
        );
        assert!(events.iter().all(|e| e["seq"].as_u64().unwrap() > last));

        // An id from the future (another run): snapshots with resync.
        let mut req = request(Method::GET, "/v1/events?accounts=bob", Some(READ_ALL), None);
        req.headers_mut()
            .insert("last-event-id", "999999".parse().unwrap());
        let frames = sse_frames(call(&state, req).await, 1).await;
        let v = frames.iter().find_map(SseFrame::json).unwrap();
        assert_eq!(v["event"], "snapshot");
        assert_eq!(v["resync"], true);
        assert_eq!(v["account"], "bob");
        assert_eq!(v["availability"], "busy");
    })
    .await;
}

/// A source that is down for good (a wrong password).
struct DownSource;

impl imstatus_hub::Source for DownSource {
    fn kind(&self) -> imstatus_core::SourceKind {
        imstatus_core::SourceKind::new_static("xmpp")
    }

    fn run(
        self: std::sync::Arc<Self>,
        sink: imstatus_hub::Sink,
    ) -> imstatus_hub::BoxFuture<'static, ()> {
        Box::pin(async move {
            sink.observe(Observation::SourceDown(
                imstatus_core::ErrorCode::AuthFailed,
                "not-authorized".to_owned(),
            ));
            std::future::pending::<()>().await;
        })
    }
}

#[tokio::test]
async fn a_source_that_is_down_shows_its_error_in_the_snapshot_and_metrics() {
    limit(LIMIT, async {
        let down = imstatus_core::AccountId::new("down");
        let hub = std::sync::Arc::new(
            imstatus_hub::Hub::builder()
                .with_source(down.clone(), std::sync::Arc::new(DownSource))
                .start(),
        );
        assert!(hub.wait_settled(&[down], STEP).await);
        let state = gateway(&hub, &[]);
        let (st, v) = get(&state, "/v1/accounts/down", None).await;
        assert_eq!(st, StatusCode::OK);
        assert_eq!(v["event"], "snapshot");
        assert_eq!(
            v["source_error"],
            json!({
                "code": "auth_failed",
                "hresult": "0x81000303",
                "detail": "not-authorized",
                "hint": imstatus_core::ErrorCode::AuthFailed.hint(),
            })
        );
        let (_, list) = get(&state, "/v1/accounts", None).await;
        assert_eq!(list[0]["source_error"]["code"], "auth_failed");
        let resp = call(&state, request(Method::GET, "/metrics", None, None)).await;
        let text = String::from_utf8(body_bytes(resp).await).unwrap();
        assert!(
            text.contains("imstatus_account_source_up{account=\"down\",source=\"xmpp\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("imstatus_account_source_error{account=\"down\",code=\"auth_failed\"} 1"),
            "{text}"
        );
    })
    .await;
}
