//! The gateway's most frequent request answered before the router: a plain `GET
//! /v1/accounts/{name}`.
//!
//! Through axum's router every request clones the router and the matched route's boxed service
//! stack (the origin check, the metrics layer and the handler, each holding the gateway), and
//! runs its extractors in boxed futures: on two worker threads, each clone and drop is an
//! atomic on a reference count the other thread also writes. The answer itself needs none of
//! that: [`answer`] serves the request synchronously from a borrowed [`Gateway`] with the same
//! functions the route uses ([`Access::authenticate`], [`api::account`]) and records it under
//! the same route in the metrics. No memory is written by every request: the caller borrows
//! its token ([`Access`]), the account is looked up by the `&str` of the path, and the metrics
//! count in per-thread copies; the one lock taken is the account's own snapshot slot, shared
//! only by reads of the same account. A connection that presents the bearer token it had
//! accepted before is not hashed again ([`Remembered`]).
//!
//! Only the plain case is taken: `GET`, no query, a name of unreserved characters (nothing the
//! router's path decoding would change), a request [`origin::serves_as_is`], and a caller
//! that authenticates. Anything else (`HEAD`, percent escapes, `?access_token=`, CORS, a
//! cross-site refusal, a missing or wrong token) goes to the router, which answers as before;
//! `tests/direct.rs` holds the two paths to the same answers and metrics over a real socket.

use std::time::Instant;

use axum::http::{Method, Request};
use axum::response::{IntoResponse, Response};

use crate::api;
use crate::auth::{Access, Remembered};
use crate::gateway::Gateway;
use crate::origin;

/// The route this path answers, as the router and the metrics name it.
pub(crate) const ACCOUNT_ROUTE: &str = "/v1/accounts/{name}";

/// The answer to `request` when it is a plain read of one account (see the module docs),
/// recorded in the metrics; `None` when the router should answer it.
pub(crate) fn answer<B>(
    gw: &Gateway,
    request: &Request<B>,
    remembered: &Remembered,
) -> Option<Response> {
    if request.method() != Method::GET || request.uri().query().is_some() {
        return None;
    }
    let name = request.uri().path().strip_prefix("/v1/accounts/")?;
    if name.is_empty() || !name.bytes().all(is_unreserved) {
        return None;
    }
    let start = Instant::now();
    let headers = request.headers();
    if !origin::serves_as_is(gw, headers) {
        return None;
    }
    let caller = Access::authenticate_on(
        &gw.tokens,
        gw.tokenless_write,
        headers,
        request.uri(),
        remembered,
    )
    .ok()?;
    let response = api::account(gw, caller, name).unwrap_or_else(IntoResponse::into_response);
    gw.metrics
        .record(Some(ACCOUNT_ROUTE), start.elapsed(), response.status());
    Some(response)
}

/// RFC 3986's unreserved characters and `@`: bytes a path segment carries as they are.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'@')
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use axum::http::{header, StatusCode};
    use imstatus_config::TokenConfig;
    use imstatus_hub::Hub;

    use super::*;
    use crate::auth::hash_token;

    fn request(method: Method, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap()
    }

    /// Which requests the direct path takes (the answers are compared with the router's over a
    /// real socket in tests/direct.rs).
    #[tokio::test]
    async fn takes_only_plain_account_reads() {
        let hub = Arc::new(Hub::builder().start());
        let token = TokenConfig {
            name: "t".to_owned(),
            sha256: hash_token("secret"),
            accounts: vec!["*".to_owned()],
            write: false,
        };
        let gw = Gateway::new(hub.clone(), &[token]).with_allowed_origins(["https://ok.example"]);
        let open = Gateway::new(hub, &[]);
        let bearer = ("authorization", "Bearer secret");
        let host = ("host", "127.0.0.1:8470");
        let taken = |gw: &Gateway, r: Request<()>| {
            answer(gw, &r, &Remembered::default()).map(|a| a.status())
        };
        let get = |uri: &str, h: &[(&str, &str)]| request(Method::GET, uri, h);

        let plain = get("/v1/accounts/alice", &[bearer, host]);
        assert_eq!(taken(&gw, plain), Some(StatusCode::NOT_FOUND));
        let own = get(
            "/v1/accounts/a.b-c_d~e@x",
            &[bearer, host, ("origin", "http://127.0.0.1:8470")],
        );
        assert_eq!(taken(&gw, own), Some(StatusCode::NOT_FOUND));
        assert_eq!(
            taken(&open, get("/v1/accounts/alice", &[host])),
            Some(StatusCode::NOT_FOUND)
        );

        for (why, gw, r) in [
            (
                "HEAD",
                &gw,
                request(Method::HEAD, "/v1/accounts/alice", &[bearer]),
            ),
            (
                "PUT",
                &gw,
                request(Method::PUT, "/v1/accounts/alice", &[bearer]),
            ),
            (
                "a query",
                &gw,
                get("/v1/accounts/alice?access_token=secret", &[]),
            ),
            ("an escape", &gw, get("/v1/accounts/al%69ce", &[bearer])),
            (
                "a sub-route",
                &gw,
                get("/v1/accounts/alice/contacts", &[bearer]),
            ),
            ("no name", &gw, get("/v1/accounts/", &[bearer])),
            ("the list", &gw, get("/v1/accounts", &[bearer])),
            ("no token", &gw, get("/v1/accounts/alice", &[])),
            (
                "a wrong token",
                &gw,
                get("/v1/accounts/alice", &[("authorization", "Bearer no")]),
            ),
            (
                "an allowed origin (CORS headers)",
                &gw,
                get(
                    "/v1/accounts/alice",
                    &[bearer, host, ("origin", "https://ok.example")],
                ),
            ),
            (
                "another site's origin",
                &gw,
                get(
                    "/v1/accounts/alice",
                    &[bearer, host, ("origin", "https://evil.example")],
                ),
            ),
            (
                "another site's page, no tokens",
                &open,
                get(
                    "/v1/accounts/alice",
                    &[host, ("sec-fetch-site", "cross-site")],
                ),
            ),
            (
                "not a loopback host, no tokens",
                &open,
                get(
                    "/v1/accounts/alice",
                    &[(header::HOST.as_str(), "evil.example")],
                ),
            ),
        ] {
            assert_eq!(taken(gw, r), None, "{why} goes to the router");
        }
    }
}
