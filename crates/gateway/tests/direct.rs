//! The direct path for `GET /v1/accounts/{name}` (the gateway answers plain reads before the
//! router): over a real socket, every request of a matrix (tokens and scopes, no token, wrong
//! tokens, escapes, queries, `HEAD`, origins, open mode) gets the same answer as through the
//! router alone (`app(state)`), and the metrics count them under the same route and classes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use crate::common::*;
use axum::body::Body;
use axum::http::{Method, Request};
use http_body_util::BodyExt as _;
use imstatus_gateway::{app, GatewayState};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;
use tower::ServiceExt as _;

const LIMIT: Duration = Duration::from_secs(30);
const HOST: &str = "127.0.0.1:8470";

/// An answer with what differs between two identical answers taken out: the `Date` and
/// `Connection` headers and `Content-Length` (which only the socket shows; the body is
/// compared), and the value of `"time"` (the clock at the read).
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Answer {
    fn new(status: u16, mut headers: Vec<(String, String)>, body: &[u8]) -> Answer {
        headers.retain(|(k, _)| !matches!(k.as_str(), "date" | "connection" | "content-length"));
        headers.sort();
        Answer {
            status,
            headers,
            body: without_time(&String::from_utf8_lossy(body)),
        }
    }
}

/// `text` with the 24 characters after each `"time":"` replaced by `T`.
fn without_time(text: &str) -> String {
    const KEY: &str = "\"time\":\"";
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(KEY) {
        let end = (at + KEY.len() + 24).min(rest.len());
        out.push_str(&rest[..at + KEY.len()]);
        out.push('T');
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The request as raw HTTP/1.1 with `Connection: close`, and as a `Request` for the router.
fn both(method: &str, uri: &str, headers: &[(&str, &str)]) -> (String, Request<Body>) {
    let (raw, req) = keep_alive(method, uri, headers);
    (raw.replacen("\r\n", "\r\nconnection: close\r\n", 1), req)
}

/// The request as raw HTTP/1.1 on a kept-alive connection, and as a `Request` for the router.
fn keep_alive(method: &str, uri: &str, headers: &[(&str, &str)]) -> (String, Request<Body>) {
    let mut raw = format!("{method} {uri} HTTP/1.1\r\nhost: {HOST}\r\n");
    let mut b = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(uri)
        .header("host", HOST);
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
        b = b.header(*k, *v);
    }
    raw.push_str("\r\n");
    (raw, b.body(Body::empty()).unwrap())
}

/// Sends `raw` on a new connection and reads the answer to the end.
async fn over_socket(server: &Server, raw: &str, head_only: bool) -> Answer {
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(raw.as_bytes()).await.unwrap();
    let mut bytes = Vec::new();
    tcp.read_to_end(&mut bytes).await.unwrap();
    let text = String::from_utf8(bytes).expect("an ASCII/UTF-8 answer");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head");
    parse(head, body, head_only)
}

/// Sends `raw` (a keep-alive request) on `tcp` and reads one answer, by its `Content-Length`.
async fn on_connection(tcp: &mut BufReader<TcpStream>, raw: &str, head_only: bool) -> Answer {
    tcp.get_mut().write_all(raw.as_bytes()).await.unwrap();
    let mut head = String::new();
    while !head.ends_with("\r\n\r\n") {
        let before = head.len();
        tcp.read_line(&mut head).await.unwrap();
        assert!(head.len() > before, "the connection stayed open");
    }
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a Content-Length");
    let mut body = vec![0; if head_only { 0 } else { length }];
    tcp.read_exact(&mut body).await.unwrap();
    let body = String::from_utf8(body).expect("an ASCII/UTF-8 answer");
    parse(head.trim_end(), &body, head_only)
}

/// An answer from its head (status line and headers) and body.
fn parse(head: &str, body: &str, head_only: bool) -> Answer {
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').expect("a header line");
            (k.to_ascii_lowercase(), v.trim().to_owned())
        })
        .collect();
    assert!(!head_only || body.is_empty(), "HEAD has no body: {body}");
    Answer::new(status, headers, body.as_bytes())
}

async fn through_router(state: &GatewayState, req: Request<Body>) -> Answer {
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap().to_owned()))
        .collect();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer::new(status, headers, &body)
}

/// The lines of `/metrics` about `GET /v1/accounts/{name}`'s responses, as `READ_ALL` sees them.
async fn route_counts(state: &GatewayState) -> Vec<String> {
    let (_, req) = both(
        "GET",
        "/metrics",
        &[("authorization", "Bearer read-all-secret")],
    );
    let text = through_router(state, req).await.body;
    text.lines()
        .filter(|l| l.starts_with("imstatus_http_responses_total{route=\"/v1/accounts/{name}\""))
        .map(str::to_owned)
        .collect()
}

/// A request's headers beside `host` and `connection`.
type Headers = Vec<(&'static str, &'static str)>;

/// Runs the matrix against `served` (over its socket) and `routed` (through the router),
/// which must be the same configuration over the same hub.
async fn same_answers(served: GatewayState, routed: GatewayState, open: bool) {
    let server = Server::start(served.clone()).await;
    let bearer = |t: &'static str| ("authorization", t);
    let own = ("origin", "http://127.0.0.1:8470");
    let evil = ("origin", "https://evil.example");
    let allowed = ("origin", "https://ok.example");
    let cross = ("sec-fetch-site", "cross-site");
    let all = bearer("Bearer read-all-secret");
    let alice_only = bearer("Bearer read-alice-secret");
    let mut matrix: Vec<(&str, &str, Headers)> = vec![];
    for uri in [
        "/v1/accounts/alice",
        "/v1/accounts/bob",
        "/v1/accounts/carol",
        "/v1/accounts/nobody",
        "/v1/accounts/al%69ce",
        "/v1/accounts/a.b~c@d_e-f",
        "/v1/accounts/alice?x=1",
        "/v1/accounts/alice?access_token=read-alice-secret",
    ] {
        for headers in [
            vec![],
            vec![all],
            vec![alice_only],
            vec![bearer("Bearer wrong")],
            vec![bearer("Basic cmVhZA==")],
            vec![all, own],
            vec![all, evil],
            vec![all, allowed],
            vec![all, cross],
            vec![own],
            vec![cross],
        ] {
            matrix.push(("GET", uri, headers));
        }
    }
    matrix.push(("HEAD", "/v1/accounts/alice", vec![all]));
    matrix.push(("HEAD", "/v1/accounts/alice", vec![]));
    let mut plain_ok = 0;
    for (method, uri, headers) in &matrix {
        let (raw, req) = both(method, uri, headers);
        let socket = over_socket(&server, &raw, *method == "HEAD").await;
        let router = through_router(&routed, req).await;
        assert_eq!(
            socket, router,
            "{method} {uri} {headers:?} (open mode: {open})"
        );
        if socket.status == 200 && *method == "GET" {
            plain_ok += 1;
        }
    }
    assert!(
        plain_ok >= 8,
        "the matrix reads accounts successfully ({plain_ok} times)"
    );
    // Again, every request on one kept-alive connection: the tokens change from request to
    // request (all, alice only, wrong, Basic, none), so what the connection remembers of its
    // last accepted token is put to the test against the router's full check each time.
    let mut tcp = BufReader::new(TcpStream::connect(server.addr).await.unwrap());
    for (method, uri, headers) in &matrix {
        let (raw, req) = keep_alive(method, uri, headers);
        let socket = on_connection(&mut tcp, &raw, *method == "HEAD").await;
        let router = through_router(&routed, req).await;
        assert_eq!(
            socket, router,
            "kept alive: {method} {uri} {headers:?} (open mode: {open})"
        );
    }
    drop(tcp);
    let (served_counts, routed_counts) = (route_counts(&served).await, route_counts(&routed).await);
    assert!(!served_counts.is_empty(), "the reads are counted");
    assert_eq!(served_counts, routed_counts, "the same metrics");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn with_tokens_the_direct_path_answers_as_the_router() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let config = |hub| {
            imstatus_gateway::Gateway::new(hub, &tokens())
                .with_allowed_origins(["https://ok.example"])
                .into_state()
        };
        same_answers(config(s.hub.clone()), config(s.hub.clone()), false).await;
    })
    .await;
}

#[tokio::test]
async fn without_tokens_the_direct_path_answers_as_the_router() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let config = |hub| {
            imstatus_gateway::Gateway::new(hub, &[])
                .with_allowed_origins(["https://ok.example"])
                .into_state()
        };
        same_answers(config(s.hub.clone()), config(s.hub.clone()), true).await;
    })
    .await;
}
