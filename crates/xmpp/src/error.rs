//! The source's one error type: why a step of the XMPP session failed, as one of design
//! §1's codes with its detail, and whether retrying can help; and how the errors of the
//! stream (stream errors, I/O, tokio-xmpp) map to it.

use imstatus_core::text::clip;
use imstatus_core::{CodedError, ErrorCode};
use tokio_xmpp::error::Error as XmppError;
use xmpp_parsers::stream_error::{DefinedCondition as StreamCondition, StreamError};

/// Why a step failed: a stable code and its detail; the variant says whether retrying helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Error {
    /// Worth retrying later (the network, the server, a timeout), with the backoff.
    #[error("{code}: {detail}")]
    Retry {
        /// The stable code.
        code: ErrorCode,
        /// What happened, for humans.
        detail: String,
    },
    /// Retrying cannot help until the config (or the server) changes: a wrong password, a
    /// plaintext connection that would leave this machine.
    #[error("{code}: {detail}")]
    Fatal {
        /// The stable code.
        code: ErrorCode,
        /// What happened, for humans.
        detail: String,
    },
}

impl Error {
    /// A failure worth retrying later.
    pub(crate) fn retry(code: ErrorCode, detail: String) -> Self {
        Error::Retry { code, detail }
    }

    /// A failure that retrying cannot fix until the config (or the server) changes.
    pub(crate) fn fatal(code: ErrorCode, detail: String) -> Self {
        Error::Fatal { code, detail }
    }

    /// The stable code.
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            Error::Retry { code, .. } | Error::Fatal { code, .. } => *code,
        }
    }

    /// The detail, for humans.
    pub(crate) fn detail(&self) -> &str {
        match self {
            Error::Retry { detail, .. } | Error::Fatal { detail, .. } => detail,
        }
    }

    /// Retrying will not help until the config changes.
    pub(crate) fn is_fatal(&self) -> bool {
        matches!(self, Error::Fatal { .. })
    }
}

impl From<Error> for CodedError {
    fn from(e: Error) -> Self {
        match e {
            Error::Retry { code, detail } | Error::Fatal { code, detail } => {
                CodedError::new(code, detail)
            }
        }
    }
}

/// Maps a stream error the server sent.
pub(crate) fn stream_error(e: &StreamError) -> Error {
    let text = e
        .get_best_text(vec!["en"])
        .map(|(_, t)| format!(": {}", clip(t, 200)))
        .unwrap_or_default();
    let detail = format!("stream error <{}/>{text}", condition_name(&e.condition));
    let code = match e.condition {
        StreamCondition::SystemShutdown => ErrorCode::ServerShutdown,
        StreamCondition::BadFormat
        | StreamCondition::InvalidXml
        | StreamCondition::NotWellFormed
        | StreamCondition::RestrictedXml
        | StreamCondition::UnsupportedEncoding
        | StreamCondition::UnsupportedStanzaType
        | StreamCondition::InvalidNamespace
        | StreamCondition::BadNamespacePrefix => ErrorCode::ProtocolError,
        StreamCondition::HostUnknown | StreamCondition::HostGone => ErrorCode::ServerUnreachable,
        _ => ErrorCode::Disconnected,
    };
    Error::retry(code, detail)
}

fn condition_name(c: &StreamCondition) -> String {
    condition_name_of(&format!("{c:?}"))
}

/// Maps an I/O error of the XML stream: malformed XML is `protocol_error`, anything else
/// means the connection is gone.
pub(crate) fn io_failure(e: &std::io::Error, doing: &str) -> Error {
    use std::io::ErrorKind;
    let detail = format!("{doing}: {}", clip(&e.to_string(), 300));
    let code = match e.kind() {
        ErrorKind::InvalidData => ErrorCode::ProtocolError,
        ErrorKind::TimedOut => ErrorCode::Timeout,
        _ => ErrorCode::Disconnected,
    };
    Error::retry(code, detail)
}

/// Maps a tokio-xmpp error.
pub(crate) fn xmpp_failure(e: &XmppError, doing: &str) -> Error {
    match e {
        XmppError::Io(io) => io_failure(io, doing),
        XmppError::Auth(other) => {
            Error::retry(ErrorCode::ProtocolError, format!("{doing}: {other}"))
        }
        XmppError::StreamError(e) => stream_error(&e.0),
        XmppError::Disconnected => Error::retry(
            ErrorCode::Disconnected,
            format!("{doing}: the server closed the connection"),
        ),
        other => Error::retry(
            ErrorCode::ProtocolError,
            format!("{doing}: {}", clip(&other.to_string(), 300)),
        ),
    }
}

/// `NotAuthorized` → `not-authorized`: a condition's Debug name as its element name.
pub(crate) fn condition_name_of(debug: &str) -> String {
    let mut out = String::with_capacity(debug.len() + 4);
    for (i, ch) in debug.chars().enumerate() {
        if ch.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_errors_map_to_codes() {
        let parse = |xml: &str| {
            let el: xmpp_parsers::minidom::Element = xml.parse().expect("xml");
            StreamError::try_from(el).expect("stream error")
        };
        let e = parse(
            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>\
             <system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
        );
        let f = stream_error(&e);
        assert_eq!(f.code(), ErrorCode::ServerShutdown);
        assert_eq!(f.detail(), "stream error <system-shutdown/>");
        let e = parse(
            "<stream:error xmlns:stream='http://etherx.jabber.org/streams'>\
             <conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced by new connection</text></stream:error>",
        );
        let f = stream_error(&e);
        assert_eq!(f.code(), ErrorCode::Disconnected);
        assert_eq!(
            f.detail(),
            "stream error <conflict/>: Replaced by new connection"
        );
        assert!(!f.is_fatal());
    }

    #[test]
    fn io_errors_map_to_codes() {
        use std::io::{Error, ErrorKind};
        assert_eq!(
            io_failure(&Error::new(ErrorKind::InvalidData, "junk"), "reading").code(),
            ErrorCode::ProtocolError
        );
        assert_eq!(
            io_failure(&Error::from(ErrorKind::ConnectionReset), "reading").code(),
            ErrorCode::Disconnected
        );
        assert_eq!(
            io_failure(&Error::from(ErrorKind::TimedOut), "reading").code(),
            ErrorCode::Timeout
        );
    }
}
