//! The one error type of the desktop source: why a backend does not answer.

use imstatus_core::ErrorCode;

/// Why a backend (sound server, bus service, X display, camera devices) does not answer, or
/// what was wrong with what it said. The text is the detail of the `source_error` event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing answers there: no socket, connection refused, nobody owns the bus name.
    #[error("{0}")]
    NotRunning(String),
    /// The connection was lost after it worked.
    #[error("{0}")]
    Lost(String),
    /// The peer sent something malformed or absurd.
    #[error("{0}")]
    Protocol(String),
    /// The peer refused us.
    #[error("{0}")]
    Denied(String),
    /// The peer did not answer in time.
    #[error("{0}")]
    Timeout(String),
    /// The peer does not implement what we need (a method, an X extension).
    #[error("{0}")]
    Unsupported(String),
}

impl Error {
    /// The stable code of the `source_error` event.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::NotRunning(_) => ErrorCode::ClientNotRunning,
            Error::Lost(_) => ErrorCode::Disconnected,
            Error::Protocol(_) => ErrorCode::ProtocolError,
            Error::Denied(_) => ErrorCode::AccessDenied,
            Error::Timeout(_) => ErrorCode::Timeout,
            Error::Unsupported(_) => ErrorCode::Unsupported,
        }
    }

    /// The same error with `prefix: ` before its text.
    #[must_use]
    pub fn context(self, prefix: impl std::fmt::Display) -> Self {
        let wrap = |s: String| format!("{prefix}: {s}");
        match self {
            Error::NotRunning(s) => Error::NotRunning(wrap(s)),
            Error::Lost(s) => Error::Lost(wrap(s)),
            Error::Protocol(s) => Error::Protocol(wrap(s)),
            Error::Denied(s) => Error::Denied(wrap(s)),
            Error::Timeout(s) => Error::Timeout(wrap(s)),
            Error::Unsupported(s) => Error::Unsupported(wrap(s)),
        }
    }

    /// An error of the same kind as `like`, with `text`.
    #[must_use]
    pub(crate) fn with_kind_of(self, like: &Error, text: String) -> Self {
        match like {
            Error::NotRunning(_) => Error::NotRunning(text),
            Error::Lost(_) => Error::Lost(text),
            Error::Protocol(_) => Error::Protocol(text),
            Error::Denied(_) => Error::Denied(text),
            Error::Timeout(_) => Error::Timeout(text),
            Error::Unsupported(_) => Error::Unsupported(text),
        }
    }

    /// The text without the code.
    pub fn detail(&self) -> &str {
        match self {
            Error::NotRunning(s)
            | Error::Lost(s)
            | Error::Protocol(s)
            | Error::Denied(s)
            | Error::Timeout(s)
            | Error::Unsupported(s) => s,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An I/O error while connecting or talking: refused/missing socket is `NotRunning`, a
/// permission problem `Denied`, a timeout `Timeout`, anything else `Lost`.
pub(crate) fn from_io(what: impl std::fmt::Display, e: &std::io::Error) -> Error {
    use std::io::ErrorKind as K;
    let text = format!("{what}: {e}");
    match e.kind() {
        K::NotFound | K::ConnectionRefused | K::AddrNotAvailable => Error::NotRunning(text),
        K::PermissionDenied => Error::Denied(text),
        K::TimedOut => Error::Timeout(text),
        _ => Error::Lost(text),
    }
}
