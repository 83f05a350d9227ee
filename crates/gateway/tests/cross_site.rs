//! Requests a browser makes for a page of another site: a cross-site `Origin` (and
//! `Origin: null`) is refused on every route, WebSocket and SSE included, over a real socket and
//! through `app(state)`; same-origin requests, requests without `Origin` and configured
//! `allowed_origins` are served. (The same in a real Chromium is in tests/dashboard.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::common::*;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use futures_util::StreamExt as _;
use http_body_util::BodyExt as _;
use imstatus_gateway::{app, routes, Gateway, GatewayState};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceExt as _;

const LIMIT: Duration = Duration::from_secs(30);
const EVIL: &str = "https://evil.example";

async fn call(state: &GatewayState, req: Request<Body>) -> Response {
    app(state.clone()).oneshot(req).await.expect("infallible")
}

async fn json_body(resp: Response) -> Value {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("not JSON: {e}: {}", String::from_utf8_lossy(&bytes)))
}

/// A request as a browser on `origin` would send it to the gateway at 127.0.0.1:8470.
fn from_origin(method: Method, uri: &str, origin: Option<&str>) -> Request<Body> {
    let mut b = Request::builder()
        .method(method.clone())
        .uri(uri)
        .header(header::HOST, "127.0.0.1:8470");
    if let Some(o) = origin {
        b = b.header(header::ORIGIN, o);
    }
    if method == Method::PUT {
        b.header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(r#"{"availability":"away"}"#))
            .unwrap()
    } else {
        b.body(Body::empty()).unwrap()
    }
}

/// Asserts the documented 403 `access_denied` shape, naming the config key in the hint.
async fn assert_cross_site_refusal(resp: Response, what: &str) {
    assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{what}");
    let v = json_body(resp).await;
    assert_eq!(v["error"], "access_denied", "{what}: {v}");
    assert_eq!(v["hresult"], "0x80070005", "{what}: {v}");
    assert!(
        v["detail"].as_str().unwrap().contains("Origin"),
        "{what}: {v}"
    );
    assert!(
        v["hint"].as_str().unwrap().contains("allowed_origins"),
        "{what}: {v}"
    );
}

#[tokio::test]
async fn a_cross_site_origin_is_refused_on_every_route() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &[]);
        for (method, path) in routes() {
            let uri = path.replace("{name}", "alice");
            for origin in [
                EVIL,
                "null",
                "http://127.0.0.1:8471",
                "https://127.0.0.1:8470",
                "http://localhost:8470",
                "http://127.0.0.1:8470.evil.example",
            ] {
                let resp = call(&state, from_origin(method.clone(), &uri, Some(origin))).await;
                assert_cross_site_refusal(resp, &format!("{method} {uri} from {origin}")).await;
            }
        }
        // Nothing was set by the refused PUTs.
        assert_eq!(
            s.hub
                .snapshot(&alice())
                .unwrap()
                .snapshot()
                .unwrap()
                .message
                .as_deref(),
            Some("lunch")
        );
    })
    .await;
}

#[tokio::test]
async fn same_origin_and_origin_less_requests_are_served() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &[]);
        for origin in [
            None,
            Some("http://127.0.0.1:8470"),
            Some("HTTP://127.0.0.1:8470"),
        ] {
            for uri in [
                "/v1/accounts",
                "/v1/accounts/alice/badge.svg",
                "/",
                "/metrics",
            ] {
                let resp = call(&state, from_origin(Method::GET, uri, origin)).await;
                assert_eq!(resp.status(), StatusCode::OK, "{uri} from {origin:?}");
            }
        }
        // Same origin for every loopback name, each with its own Host.
        for host in ["localhost:8470", "[::1]:8470", "127.0.0.1"] {
            let req = Request::get("/v1/accounts")
                .header(header::HOST, host)
                .header(header::ORIGIN, format!("http://{host}"))
                .body(Body::empty())
                .unwrap();
            assert_eq!(call(&state, req).await.status(), StatusCode::OK, "{host}");
        }
        // The default port is left out of Origin.
        let req = Request::get("/v1/accounts")
            .header(header::HOST, "localhost:80")
            .header(header::ORIGIN, "http://localhost")
            .body(Body::empty())
            .unwrap();
        assert_eq!(call(&state, req).await.status(), StatusCode::OK);
    })
    .await;
}

/// A WebSocket handshake from `origin` (if any) over a real socket: the messages received, or
/// the HTTP status and body of the refusal.
async fn ws_from(
    addr: std::net::SocketAddr,
    origin: Option<&str>,
) -> Result<Vec<Value>, (u16, String)> {
    let mut req = format!("ws://{addr}/v1/ws").into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((mut ws, _)) => {
            let mut got = Vec::new();
            while got.len() < 3 {
                match tokio::time::timeout(STEP, ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) => got.push(serde_json::from_str(&t).unwrap()),
                    Ok(Some(Ok(_))) => {}
                    other => panic!("the WebSocket ended early: {other:?}"),
                }
            }
            Ok(got)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err((
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        )),
        Err(e) => panic!("handshake: {e}"),
    }
}

#[tokio::test]
async fn a_cross_site_websocket_or_event_stream_gets_nothing_over_a_real_socket() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let server = Server::start(gateway(&s.hub, &[])).await;
        let addr = server.addr;
        let own = format!("http://{addr}");

        for origin in [EVIL, "null"] {
            let (status, body) = ws_from(addr, Some(origin)).await.expect_err("refused");
            assert_eq!(status, 403, "{origin}: {body}");
            let v: Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["error"], "access_denied", "{v}");

            let sse = SseClient::connect(addr, "/v1/events", &[("Origin", origin)]).await;
            assert_eq!(sse.status, 403, "{origin}: {}", sse.head);
        }
        assert_eq!(server.gateway.open_streams(), 0, "no stream was opened");

        // The gateway's own origin and clients without Origin get the stream.
        for origin in [Some(own.as_str()), None] {
            let got = ws_from(addr, origin).await.expect("accepted");
            let accounts: Vec<&str> = got.iter().map(|v| v["account"].as_str().unwrap()).collect();
            assert_eq!(accounts, ["alice", "bob", "carol"], "{origin:?}");
            let mut sse = SseClient::connect(
                addr,
                "/v1/events",
                &origin.map(|o| vec![("Origin", o)]).unwrap_or_default(),
            )
            .await;
            assert_eq!(sse.status, 200, "{origin:?}");
            assert!(sse.next_data(STEP).await.is_some());
        }
        server.stop().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn an_allowed_origin_is_served_with_cors_headers_and_its_preflight_answered() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = Gateway::new(s.hub.clone(), &[])
            .with_allowed_origins(["https://Dash.example/"])
            .into_state();
        let resp = call(
            &state,
            from_origin(Method::GET, "/v1/accounts", Some("https://dash.example")),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://dash.example"
        );
        assert_eq!(resp.headers()[header::VARY], "Origin");
        let list = json_body(resp).await;
        assert_eq!(list.as_array().unwrap().len(), 3);
        // Its stream too.
        let resp = call(
            &state,
            from_origin(Method::GET, "/v1/events", Some("https://dash.example")),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(
            resp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://dash.example"
        );
        // Only that one: another scheme, port or host is refused.
        for other in [
            "http://dash.example",
            "https://dash.example:8443",
            "https://evil.dash.example",
        ] {
            let resp = call(
                &state,
                from_origin(Method::GET, "/v1/accounts", Some(other)),
            )
            .await;
            assert_cross_site_refusal(resp, other).await;
        }

        // A preflight for PUT with a token (and Private Network Access).
        let preflight = |origin: &'static str| {
            Request::builder()
                .method(Method::OPTIONS)
                .uri("/v1/accounts/alice/status")
                .header(header::HOST, "127.0.0.1:8470")
                .header(header::ORIGIN, origin)
                .header(header::ACCESS_CONTROL_REQUEST_METHOD, "PUT")
                .header(
                    header::ACCESS_CONTROL_REQUEST_HEADERS,
                    "authorization,content-type",
                )
                .header("access-control-request-private-network", "true")
                .body(Body::empty())
                .unwrap()
        };
        let resp = call(&state, preflight("https://dash.example")).await;
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let h = resp.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://dash.example"
        );
        assert!(h[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap()
            .contains("PUT"));
        let allowed = h[header::ACCESS_CONTROL_ALLOW_HEADERS].to_str().unwrap();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        assert_eq!(h["access-control-allow-private-network"], "true");
        let resp = call(&state, preflight(EVIL)).await;
        assert_cross_site_refusal(resp, "a preflight from another origin").await;
        // OPTIONS from no page at all is still not a method of the API.
        let resp = call(
            &state,
            Request::builder()
                .method(Method::OPTIONS)
                .uri("/v1/accounts")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);

        // An allowed origin still cannot write without tokens when the gateway is read-only.
        let resp = call(
            &state,
            from_origin(
                Method::PUT,
                "/v1/accounts/alice/status",
                Some("https://dash.example"),
            ),
        )
        .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN);
        let v = json_body(resp).await;
        assert!(
            v["hint"].as_str().unwrap().contains("tokenless_write"),
            "{v}"
        );
    })
    .await;
}

/// A request without Origin as a browser makes it for a page: `Sec-Fetch-*` headers.
fn fetched(uri: &str, site: &str, mode: &str, dest: &str) -> Request<Body> {
    Request::get(uri)
        .header(header::HOST, "127.0.0.1:8470")
        .header("sec-fetch-site", site)
        .header("sec-fetch-mode", mode)
        .header("sec-fetch-dest", dest)
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn without_tokens_another_sites_img_or_script_is_refused_but_a_link_is_followed() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let state = gateway(&s.hub, &[]);
        let badge = "/v1/accounts/alice/badge.svg";
        for (site, mode, dest, uri) in [
            ("cross-site", "no-cors", "image", badge),
            ("same-site", "no-cors", "image", badge),
            ("cross-site", "no-cors", "script", "/v1/accounts"),
            ("cross-site", "no-cors", "style", "/dashboard.css"),
        ] {
            let resp = call(&state, fetched(uri, site, mode, dest)).await;
            assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{site} {dest} {uri}");
            let v = json_body(resp).await;
            assert_eq!(v["error"], "access_denied");
            assert!(
                v["detail"].as_str().unwrap().contains("Sec-Fetch-Site"),
                "{v}"
            );
            assert!(
                v["hint"].as_str().unwrap().contains("allowed_origins"),
                "{v}"
            );
        }
        for (site, mode, dest, uri) in [
            ("cross-site", "navigate", "document", "/"),
            ("same-origin", "no-cors", "image", badge),
            ("none", "navigate", "document", "/v1/accounts"),
        ] {
            let resp = call(&state, fetched(uri, site, mode, dest)).await;
            assert_eq!(resp.status(), StatusCode::OK, "{site} {mode} {uri}");
        }

        // With tokens a page elsewhere may show a badge on purpose, with a token in its URL.
        let state = gateway(&s.hub, &tokens());
        let uri = format!("{badge}?access_token={READ_ALICE}");
        let resp = call(&state, fetched(&uri, "cross-site", "no-cors", "image")).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let resp = call(&state, fetched(badge, "cross-site", "no-cors", "image")).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    })
    .await;
}
