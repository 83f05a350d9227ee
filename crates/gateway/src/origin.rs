//! Requests a browser makes for a page of another site. A browser attaches no credentials to
//! the gateway's answers, but without tokens it needs none: any page the user visits could
//! open `ws://127.0.0.1:8470/v1/ws` (WebSockets are not subject to CORS) and read every
//! account, or load a badge and read its size. So, on every route:
//!
//! - a request with an `Origin` is served only when that origin is the gateway's own
//!   (`http://` + the `Host` the browser connected to) or listed in `[serve] allowed_origins`;
//!   `Origin: null` (sandboxed frames, `file:` pages) is never served. Allowed origins get
//!   `Access-Control-Allow-Origin` and their CORS preflights answered, so their pages can read
//!   the JSON routes and the SSE stream too.
//! - without tokens, a request without `Origin` that a browser marks as made for a page of
//!   another site (`Sec-Fetch-Site: cross-site` or `same-site`, e.g. an `<img>` or `<script>`
//!   there) is refused too, except a top-level navigation (`Sec-Fetch-Mode: navigate`: the
//!   user follows a link to the dashboard; the linking page sees nothing of it). With tokens
//!   such a request needs a token like any other, so a badge with `?access_token=` can be
//!   shown on another site on purpose.
//!
//! Clients that are not browsers send neither header and are not affected.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use imstatus_config::serve::parse_origin;
use pin_project_lite::pin_project;
use tower_layer::Layer;
use tower_service::Service;

use crate::error::{printable, ApiError};
use crate::gateway::{Gateway, GatewayState};

const HINT: &str = "pages of other sites may not use this gateway; to allow one, add its origin \
                    (like \"https://dash.example\") to `allowed_origins` under [serve]";
const HINT_NO_ORIGIN: &str = "pages of other sites may not load from a gateway without tokens; \
                              read it with fetch/EventSource/WebSocket from an origin listed in \
                              `allowed_origins` under [serve], or configure tokens";

/// The layer that refuses cross-site requests and adds CORS headers for allowed origins, on
/// every route and fallback. A hand-written tower layer rather than `from_fn`: no boxed future
/// and no service clone per request (B6 in `docs/benchmarks.md`).
#[derive(Clone)]
pub(crate) struct Check {
    pub(crate) gw: GatewayState,
}

impl<S> Layer<S> for Check {
    type Service = CheckService<S>;

    fn layer(&self, inner: S) -> CheckService<S> {
        CheckService {
            inner,
            gw: self.gw.clone(),
        }
    }
}

/// [`Check`] around one route or fallback.
#[derive(Clone)]
pub(crate) struct CheckService<S> {
    inner: S,
    gw: GatewayState,
}

impl<S> Service<Request> for CheckService<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CheckFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match verdict(&self.gw, request.headers()) {
            Verdict::Serve => CheckFuture::Serve {
                inner: self.inner.call(request),
            },
            Verdict::Refuse(error) => {
                self.gw
                    .metrics
                    .cross_site_refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(detail = error.detail(), "refused a cross-site request");
                CheckFuture::Answered {
                    response: Some(error.into_response()),
                }
            }
            Verdict::Cors(origin) => {
                if request.method() == Method::OPTIONS
                    && request
                        .headers()
                        .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
                {
                    return CheckFuture::Answered {
                        response: Some(preflight(origin, request.headers())),
                    };
                }
                CheckFuture::Cors {
                    inner: self.inner.call(request),
                    origin: Some(origin),
                }
            }
        }
    }
}

pin_project! {
    /// The answer of a [`CheckService`].
    #[project = CheckProj]
    pub(crate) enum CheckFuture<F> {
        /// Served as it is.
        Serve { #[pin] inner: F },
        /// Served, with CORS headers for `origin` added.
        Cors { #[pin] inner: F, origin: Option<HeaderValue> },
        /// Refused, or a preflight: answered without the route.
        Answered { response: Option<Response> },
    }
}

impl<F, E> Future for CheckFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            CheckProj::Serve { inner } => inner.poll(cx),
            CheckProj::Cors { inner, origin } => {
                let mut response = ready!(inner.poll(cx))?;
                if let Some(origin) = origin.take() {
                    let headers = response.headers_mut();
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                    headers.append(header::VARY, HeaderValue::from_static("Origin"));
                }
                Poll::Ready(Ok(response))
            }
            CheckProj::Answered { response } => Poll::Ready(Ok(response
                .take()
                .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response()))),
        }
    }
}

/// Would [`Check`] serve a request with these headers as it is (same origin, or not from a
/// browser page of another site), with no CORS headers to add?
pub(crate) fn serves_as_is(gw: &Gateway, headers: &HeaderMap) -> bool {
    matches!(verdict(gw, headers), Verdict::Serve)
}

enum Verdict {
    /// Same origin, or not from a browser page of another site.
    Serve,
    /// From an allowed origin: serve with CORS headers for it.
    Cors(HeaderValue),
    /// A page of another site.
    Refuse(ApiError),
}

fn verdict(gw: &Gateway, headers: &HeaderMap) -> Verdict {
    let Some(raw) = headers.get(header::ORIGIN) else {
        return if !gw.has_tokens() && for_another_site(headers) {
            let site = headers
                .get("sec-fetch-site")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            Verdict::Refuse(
                ApiError::forbidden(format!(
                    "cross-site request refused: a page of another site loaded this \
                     (Sec-Fetch-Site: {}) and the gateway has no tokens",
                    printable(site)
                ))
                .with_hint(HINT_NO_ORIGIN),
            )
        } else {
            Verdict::Serve
        };
    };
    let origin = raw.to_str().ok().and_then(parse_origin);
    if let Some(origin) = &origin {
        if is_own(origin, headers) {
            return Verdict::Serve;
        }
        if gw.allowed_origins.contains(origin) {
            if let Ok(value) = HeaderValue::from_str(origin) {
                return Verdict::Cors(value);
            }
        }
    }
    let shown = printable(&String::from_utf8_lossy(raw.as_bytes()));
    Verdict::Refuse(
        ApiError::forbidden(format!(
            "cross-site request refused: Origin `{shown}` is neither this gateway's own origin \
             nor listed in allowed_origins"
        ))
        .with_hint(HINT),
    )
}

/// Is `origin` the gateway's own, as the browser sees it: `http://` and the `Host` it sent?
fn is_own(origin: &str, headers: &HeaderMap) -> bool {
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|host| parse_origin(&format!("http://{host}")))
        .is_some_and(|own| own == origin)
}

/// Does a browser say this request (which has no `Origin`) is for a page of another site,
/// other than a top-level navigation?
fn for_another_site(headers: &HeaderMap) -> bool {
    let value = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    matches!(value("sec-fetch-site"), Some("cross-site" | "same-site"))
        && value("sec-fetch-mode") != Some("navigate")
}

/// The answer to a CORS preflight from an allowed origin: the methods and headers the API
/// takes (a token in `Authorization`, a JSON body, `Last-Event-ID`).
fn preflight(origin: HeaderValue, headers: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, HEAD, PUT"),
    );
    out.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("authorization, content-type, last-event-id"),
    );
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    // Chromium's Private Network Access asks before a public page talks to a private address.
    if headers
        .get("access-control-request-private-network")
        .is_some_and(|v| v == "true")
    {
        out.insert(
            "access-control-allow-private-network",
            HeaderValue::from_static("true"),
        );
    }
    out.insert(
        header::VARY,
        HeaderValue::from_static(
            "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        ),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn own_origin_is_http_and_the_host_the_browser_sent() {
        let h = headers(&[("host", "127.0.0.1:8470")]);
        assert!(is_own("http://127.0.0.1:8470", &h));
        assert!(!is_own("https://127.0.0.1:8470", &h));
        assert!(!is_own("http://127.0.0.1:8471", &h));
        assert!(!is_own("http://localhost:8470", &h));
        assert!(is_own(
            "http://localhost",
            &headers(&[("host", "LOCALHOST:80")])
        ));
        assert!(is_own("http://[::1]:1", &headers(&[("host", "[::1]:1")])));
        assert!(!is_own("http://127.0.0.1:8470", &HeaderMap::new()));
        assert!(!is_own("http://a", &headers(&[("host", "a/b")])));
    }

    #[test]
    fn only_subresources_for_other_sites_count() {
        for (site, mode, other) in [
            ("cross-site", "no-cors", true),
            ("same-site", "cors", true),
            ("cross-site", "navigate", false),
            ("same-origin", "no-cors", false),
            ("none", "navigate", false),
        ] {
            let h = headers(&[("sec-fetch-site", site), ("sec-fetch-mode", mode)]);
            assert_eq!(for_another_site(&h), other, "{site} {mode}");
        }
        assert!(!for_another_site(&HeaderMap::new()));
    }
}
