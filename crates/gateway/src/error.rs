//! Errors: [`ApiError`], what an HTTP client gets, and [`Error`], what [`crate::serve`] returns.

use std::net::SocketAddr;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use imstatus_core::{CodedError, ErrorCode};
use serde::Serialize;

/// The gateway's own failures: it could not start, or the listener failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No tokens are configured and the address is reachable from other machines.
    #[error(
        "refusing to serve on {addr} without tokens: anyone who can reach it could read and set \
         the status of every account. Listen on a loopback address (127.0.0.1:8470), or add a \
         [[serve.token]] with the SHA-256 of a secret token"
    )]
    PublicWithoutTokens {
        /// The address that was asked for.
        addr: SocketAddr,
    },
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The listening socket's own address could not be read.
    #[error("the gateway's listener failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// An HTTP-level error code that has no [`ErrorCode`] counterpart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HttpCode {
    Unauthorized,
    NotFound,
    BadRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    Unavailable,
    Internal,
}

impl HttpCode {
    fn as_str(self) -> &'static str {
        match self {
            HttpCode::Unauthorized => "unauthorized",
            HttpCode::NotFound => "not_found",
            HttpCode::BadRequest => "bad_request",
            HttpCode::MethodNotAllowed => "method_not_allowed",
            HttpCode::PayloadTooLarge => "payload_too_large",
            HttpCode::Unavailable => "unavailable",
            HttpCode::Internal => "internal",
        }
    }

    /// The closest Windows HRESULT, in the spirit of the design's table.
    fn hresult(self) -> u32 {
        match self {
            HttpCode::Unauthorized => 0x8007_0005,     // E_ACCESSDENIED
            HttpCode::NotFound => 0x8007_0490,         // HRESULT_FROM_WIN32(ERROR_NOT_FOUND)
            HttpCode::BadRequest => 0x8007_0057,       // E_INVALIDARG
            HttpCode::MethodNotAllowed => 0x8007_0032, // HRESULT_FROM_WIN32(ERROR_NOT_SUPPORTED)
            HttpCode::PayloadTooLarge => 0x8007_0057,  // E_INVALIDARG
            HttpCode::Unavailable => 0x8007_048F, // HRESULT_FROM_WIN32(ERROR_DEVICE_NOT_CONNECTED)
            HttpCode::Internal => 0x8000_FFFF,    // E_UNEXPECTED
        }
    }

    fn hint(self) -> &'static str {
        match self {
            HttpCode::Unauthorized => {
                "send `Authorization: Bearer <token>` with a token configured in [[serve.token]]"
            }
            HttpCode::NotFound => "check the account name and the path; see /openapi.json",
            HttpCode::BadRequest => "fix the request; see /openapi.json for the expected form",
            HttpCode::MethodNotAllowed => "see /openapi.json for the methods of each path",
            HttpCode::PayloadTooLarge => "send a smaller body",
            HttpCode::Unavailable => "the gateway is shutting down; retry in a moment",
            HttpCode::Internal => "this is a bug in imstatus; the gateway log has details",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Code {
    Coded(ErrorCode),
    Http(HttpCode),
}

/// An error answered to an HTTP client, as JSON:
/// `{"error": code, "hresult": "0x…", "detail": …, "hint": …}`.
///
/// `error` is one of the design's stable codes ([`ErrorCode`]) where one applies, otherwise an
/// HTTP-level code: `unauthorized` (401), `not_found` (404), `bad_request` (400),
/// `method_not_allowed` (405), `payload_too_large` (413), `unavailable` (503) or `internal`
/// (500).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: Code,
    detail: String,
    /// `invalid_token` in `WWW-Authenticate` when a token was given but is not valid.
    invalid_token: bool,
    /// A hint for this case instead of the code's general one.
    hint: Option<&'static str>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    hresult: String,
    detail: &'a str,
    hint: &'a str,
}

impl ApiError {
    fn http(status: StatusCode, code: HttpCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code: Code::Http(code),
            detail: detail.into(),
            invalid_token: false,
            hint: None,
        }
    }

    /// The same error with a hint for this case instead of the code's general one.
    pub fn with_hint(mut self, hint: &'static str) -> Self {
        self.hint = Some(hint);
        self
    }

    /// 401: no token, or one the gateway does not know.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::http(StatusCode::UNAUTHORIZED, HttpCode::Unauthorized, detail)
    }

    /// 401 for a token that was given but is not valid.
    pub fn invalid_token() -> Self {
        ApiError {
            invalid_token: true,
            ..Self::unauthorized("the bearer token is not valid")
        }
    }

    /// 404: no such route, or an account that does not exist or is outside the token's scope
    /// (the two are indistinguishable on purpose).
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::http(StatusCode::NOT_FOUND, HttpCode::NotFound, detail)
    }

    /// The 404 for an account name, whether it does not exist or is outside the token's scope.
    pub fn no_account(name: &str) -> Self {
        Self::not_found(format!("no account `{}`", printable(name)))
    }

    /// 400: a malformed request.
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::http(StatusCode::BAD_REQUEST, HttpCode::BadRequest, detail)
    }

    /// 405.
    pub fn method_not_allowed() -> Self {
        Self::http(
            StatusCode::METHOD_NOT_ALLOWED,
            HttpCode::MethodNotAllowed,
            "this path does not take that method",
        )
    }

    /// 413.
    pub fn payload_too_large(limit: usize) -> Self {
        Self::http(
            StatusCode::PAYLOAD_TOO_LARGE,
            HttpCode::PayloadTooLarge,
            format!("the body is larger than {limit} bytes"),
        )
    }

    /// 503 while the gateway drains.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::http(
            StatusCode::SERVICE_UNAVAILABLE,
            HttpCode::Unavailable,
            detail,
        )
    }

    /// 500.
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::http(
            StatusCode::INTERNAL_SERVER_ERROR,
            HttpCode::Internal,
            detail,
        )
    }

    /// 403 `access_denied`: the token may not do this (e.g. set status without write scope).
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::coded(StatusCode::FORBIDDEN, ErrorCode::AccessDenied, detail)
    }

    /// An error with one of the design's codes and an explicit HTTP status.
    pub fn coded(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        ApiError {
            status,
            code: Code::Coded(code),
            detail: detail.into(),
            invalid_token: false,
            hint: None,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `error` code in the JSON body.
    pub fn code(&self) -> &'static str {
        match self.code {
            Code::Coded(c) => c.as_str(),
            Code::Http(c) => c.as_str(),
        }
    }

    /// The HRESULT in the JSON body.
    pub fn hresult(&self) -> u32 {
        match self.code {
            Code::Coded(c) => c.hresult(),
            Code::Http(c) => c.hresult(),
        }
    }

    /// The `hint` in the JSON body.
    pub fn hint(&self) -> &'static str {
        if let Some(hint) = self.hint {
            return hint;
        }
        match self.code {
            Code::Coded(c) => c.hint(),
            Code::Http(c) => c.hint(),
        }
    }

    /// The `detail` in the JSON body.
    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The JSON body: `{"error", "hresult", "detail", "hint"}`.
    pub fn to_json(&self) -> Vec<u8> {
        let body = Body {
            error: self.code(),
            hresult: format!("0x{:08X}", self.hresult()),
            detail: &self.detail,
            hint: self.hint(),
        };
        // Serialising plain strings cannot fail; keep a fixed body just in case.
        serde_json::to_vec(&body)
            .unwrap_or_else(|_| br#"{"error":"internal","hresult":"0x8000FFFF"}"#.to_vec())
    }
}

/// A source's error, answered with the status that fits it: `unsupported` → 501,
/// `not_signed_in`/`client_not_running` → 409, `access_denied` → 403, `timeout` → 504,
/// `server_unreachable` → 503 (nothing can take the request right now: a cluster gateway with
/// no watcher owning the account), other source trouble → 502.
impl From<CodedError> for ApiError {
    fn from(e: CodedError) -> Self {
        let status = match e.code {
            ErrorCode::Unsupported => StatusCode::NOT_IMPLEMENTED,
            ErrorCode::NotSignedIn | ErrorCode::ClientNotRunning => StatusCode::CONFLICT,
            ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
            ErrorCode::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorCode::ServerUnreachable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        };
        ApiError::coded(status, e.code, e.detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let json = self.to_json();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            json,
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            let value = if self.invalid_token {
                r#"Bearer realm="imstatus", error="invalid_token""#
            } else {
                r#"Bearer realm="imstatus""#
            };
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(value));
        }
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// `s` shortened to 100 characters with control characters replaced, for error details.
pub(crate) fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .take(100)
        .map(|c| if c.is_control() { '\u{FFFD}' } else { c })
        .collect();
    if s.chars().nth(100).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_errors_keep_their_code_and_hresult() {
        let e = ApiError::from(CodedError::new(ErrorCode::Unsupported, "read-only"));
        assert_eq!(e.status(), StatusCode::NOT_IMPLEMENTED);
        assert_eq!(e.code(), "unsupported");
        assert_eq!(e.hresult(), 0x8000_4001);
        assert_eq!(e.detail(), "read-only");
        let e = ApiError::from(CodedError::new(ErrorCode::ServerUnreachable, "no owner"));
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code(), "server_unreachable");
    }

    #[test]
    fn printable_shortens_and_masks_control_characters() {
        assert_eq!(printable("a\nb"), "a\u{FFFD}b");
        let long = "x".repeat(500);
        assert_eq!(printable(&long).chars().count(), 101);
    }
}
