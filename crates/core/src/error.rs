//! The stable public error codes, each with the HRESULT the SDK would have given.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A stable error code (snake_case in JSON), with its SDK HRESULT and a one-line hint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The local client is not running (bus name not owned).
    ClientNotRunning,
    /// The operation needs a signed-in session.
    NotSignedIn,
    /// Wrong password or not authorised; fatal, never retried.
    AuthFailed,
    /// TCP connect refused or host down.
    ServerUnreachable,
    /// SRV/A lookup failed.
    DnsFailed,
    /// TLS handshake failed.
    TlsFailed,
    /// The server's certificate is not trusted.
    InvalidCertificate,
    /// Login or request timed out.
    Timeout,
    /// Stream lost after sign-in.
    Disconnected,
    /// The server said it is shutting down.
    ServerShutdown,
    /// Malformed or unexpected data from the peer.
    ProtocolError,
    /// Bus, permission or token refused.
    AccessDenied,
    /// The source cannot do this.
    Unsupported,
}

impl ErrorCode {
    /// Every code, in the design's order.
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::ClientNotRunning,
        ErrorCode::NotSignedIn,
        ErrorCode::AuthFailed,
        ErrorCode::ServerUnreachable,
        ErrorCode::DnsFailed,
        ErrorCode::TlsFailed,
        ErrorCode::InvalidCertificate,
        ErrorCode::Timeout,
        ErrorCode::Disconnected,
        ErrorCode::ServerShutdown,
        ErrorCode::ProtocolError,
        ErrorCode::AccessDenied,
        ErrorCode::Unsupported,
    ];

    /// The snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::ClientNotRunning => "client_not_running",
            ErrorCode::NotSignedIn => "not_signed_in",
            ErrorCode::AuthFailed => "auth_failed",
            ErrorCode::ServerUnreachable => "server_unreachable",
            ErrorCode::DnsFailed => "dns_failed",
            ErrorCode::TlsFailed => "tls_failed",
            ErrorCode::InvalidCertificate => "invalid_certificate",
            ErrorCode::Timeout => "timeout",
            ErrorCode::Disconnected => "disconnected",
            ErrorCode::ServerShutdown => "server_shutdown",
            ErrorCode::ProtocolError => "protocol_error",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::Unsupported => "unsupported",
        }
    }

    /// The HRESULT the Office Communicator SDK would have returned.
    pub fn hresult(self) -> u32 {
        match self {
            ErrorCode::ClientNotRunning => 0x8004_0111,
            ErrorCode::NotSignedIn => 0x8100_031E,
            ErrorCode::AuthFailed => 0x8100_0303,
            ErrorCode::ServerUnreachable => 0x8100_0314,
            ErrorCode::DnsFailed => 0x8100_0358,
            ErrorCode::TlsFailed => 0x8100_0361,
            ErrorCode::InvalidCertificate => 0x8100_0368,
            ErrorCode::Timeout => 0x8100_0306,
            ErrorCode::Disconnected => 0x8100_030C,
            ErrorCode::ServerShutdown => 0x8100_0347,
            ErrorCode::ProtocolError => 0x8100_0343,
            ErrorCode::AccessDenied => 0x8007_0005,
            ErrorCode::Unsupported => 0x8000_4001,
        }
    }

    /// A one-line hint saying what to do about it.
    pub fn hint(self) -> &'static str {
        match self {
            ErrorCode::ClientNotRunning => {
                "start Pidgin or Finch, or set `bus` in the config to the bus it runs on"
            }
            ErrorCode::NotSignedIn => "sign in to the account first",
            ErrorCode::AuthFailed => {
                "check the password file or command; imstatus will not retry until the config changes"
            }
            ErrorCode::ServerUnreachable => {
                "check that the server runs and `server` (host:port) in the config is right"
            }
            ErrorCode::DnsFailed => "check the JID's domain, or set `server` to host:port",
            ErrorCode::TlsFailed => {
                "the server's TLS failed; check its TLS setup, or `tls` in the config"
            }
            ErrorCode::InvalidCertificate => {
                "the server's certificate is not trusted; add its CA with `ca_file`"
            }
            ErrorCode::Timeout => "the server did not answer in time; check the network and server",
            ErrorCode::Disconnected => "the connection dropped; imstatus reconnects by itself",
            ErrorCode::ServerShutdown => {
                "the server is shutting down; imstatus reconnects when it is back"
            }
            ErrorCode::ProtocolError => {
                "the peer sent malformed or unexpected data; run with RUST_LOG=debug for details"
            }
            ErrorCode::AccessDenied => "permission refused; check the bus policy, token or subscription",
            ErrorCode::Unsupported => "this source cannot do that",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// A string that is not an [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown error code `{0}`")]
pub struct UnknownErrorCode(pub String);

impl FromStr for ErrorCode {
    type Err = UnknownErrorCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownErrorCode(s.to_owned()))
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An error code with the source's own detail, printed as
/// `client_not_running (0x80040111): <detail>`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{code} (0x{hresult:08X}): {detail}", hresult = code.hresult())]
pub struct CodedError {
    /// The stable code.
    pub code: ErrorCode,
    /// What the source said.
    pub detail: String,
}

impl CodedError {
    /// A coded error with a detail.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_design_table() {
        let table: [(&str, u32); 13] = [
            ("client_not_running", 0x80040111),
            ("not_signed_in", 0x8100031E),
            ("auth_failed", 0x81000303),
            ("server_unreachable", 0x81000314),
            ("dns_failed", 0x81000358),
            ("tls_failed", 0x81000361),
            ("invalid_certificate", 0x81000368),
            ("timeout", 0x81000306),
            ("disconnected", 0x8100030C),
            ("server_shutdown", 0x81000347),
            ("protocol_error", 0x81000343),
            ("access_denied", 0x80070005),
            ("unsupported", 0x80004001),
        ];
        for (name, hr) in table {
            let code: ErrorCode = name.parse().expect("known code");
            assert_eq!(code.hresult(), hr, "{name}");
            assert_eq!(code.as_str(), name);
            assert!(!code.hint().is_empty());
            assert!(!code.hint().contains('\n'), "hints are one line");
        }
        assert_eq!(ErrorCode::ALL.len(), table.len());
    }

    #[test]
    fn coded_error_prints_code_hresult_and_detail() {
        let e = CodedError::new(ErrorCode::ClientNotRunning, "no owner");
        assert_eq!(e.to_string(), "client_not_running (0x80040111): no owner");
    }
}
