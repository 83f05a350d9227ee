//! rustls set-up: system roots plus an optional `ca_file`, a verifier that remembers the
//! server's certificate (for error details and `doctor`), and a tiny DER reader that names a
//! certificate's subject, issuer and DNS names without a full X.509 crate.

use std::path::Path;
use std::sync::{Arc, Mutex};

use imstatus_core::ErrorCode;
use tokio_rustls::rustls::client::danger::{
    HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier,
};
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::rustls::{
    self, CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme,
};

use crate::error::Error;

/// The trust roots of one source: the system's plus `ca_file`, loaded once
/// ([`imstatus_tls::Roots`]).
#[derive(Debug, Clone)]
pub(crate) struct Roots {
    roots: imstatus_tls::Roots,
    /// Where the roots came from, for `doctor`.
    pub(crate) description: String,
}

impl Roots {
    /// Loads the system roots (rustls-native-certs) and the PEM certificates in `ca_file`.
    pub(crate) fn load(ca_file: Option<&Path>) -> Result<Roots, Error> {
        let roots = imstatus_tls::Roots::load(ca_file)
            .map_err(|e| Error::retry(ErrorCode::InvalidCertificate, e.to_string()))?;
        Ok(Roots {
            description: roots.description().to_owned(),
            roots,
        })
    }

    /// A client config for one connection, with a verifier that records the peer's
    /// certificate into the returned slot.
    pub(crate) fn client_config(&self) -> Result<(Arc<ClientConfig>, Seen), Error> {
        let tls_failed = |e: &dyn std::fmt::Display| {
            Error::retry(ErrorCode::TlsFailed, format!("TLS set-up: {e}"))
        };
        let inner = self.roots.verifier().map_err(|e| tls_failed(&e))?;
        let seen = Seen::default();
        let verifier = Arc::new(RecordingVerifier {
            inner,
            seen: seen.clone(),
        });
        let config = ClientConfig::builder_with_provider(self.roots.provider().clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| tls_failed(&e))?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok((Arc::new(config), seen))
    }
}

/// The certificate the server presented on one connection, once it did.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen(Arc<Mutex<Option<CertificateDer<'static>>>>);

impl Seen {
    /// What the recorded certificate says about itself.
    pub(crate) fn describe(&self) -> Option<String> {
        let guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        guard.as_ref().map(|c| describe_certificate(c.as_ref()))
    }
}

/// Delegates to webpki and remembers the end-entity certificate.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    seen: Seen,
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.0.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(end_entity.clone().into_owned());
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Classifies a failed TLS handshake: certificate problems are `invalid_certificate` (with the
/// certificate's subject and webpki's reason), everything else `tls_failed`.
pub(crate) fn handshake_failure(error: &std::io::Error, seen: &Seen) -> Error {
    let tls = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>());
    let subject = seen
        .describe()
        .map(|s| format!(" (certificate {s})"))
        .unwrap_or_default();
    match tls {
        Some(rustls::Error::InvalidCertificate(reason)) => Error::retry(
            ErrorCode::InvalidCertificate,
            format!(
                "the server's certificate is not trusted: {}{subject}",
                certificate_reason(reason)
            ),
        ),
        Some(e) => Error::retry(
            ErrorCode::TlsFailed,
            format!("TLS handshake failed: {e}{subject}"),
        ),
        None => Error::retry(
            ErrorCode::TlsFailed,
            format!("TLS handshake failed: {error}"),
        ),
    }
}

/// Why webpki refused a certificate, in words.
fn certificate_reason(reason: &CertificateError) -> String {
    match reason {
        CertificateError::UnknownIssuer => {
            "issued by an unknown authority (self-signed or a private CA: add it with ca_file)"
                .to_owned()
        }
        CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
            format!("not valid for the server's name ({reason:?})")
        }
        CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
            format!("expired ({reason:?})")
        }
        CertificateError::Other(other) => {
            let text = other.to_string();
            if text.contains("CaUsedAsEndEntity") {
                "a CA certificate (CA:TRUE) used as the server's own; issue one with basicConstraints CA:FALSE".to_owned()
            } else {
                text
            }
        }
        other => format!("{other:?}"),
    }
}

// ---------------------------------------------------------------- minimal DER reading

/// One DER TLV: tag, content, rest.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*input.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let content = input.get(header..header.checked_add(len)?)?;
    let rest = input.get(header + len..)?;
    Some((tag, content, rest))
}

/// `CN=…, O=…` of an X.501 Name (the attributes people recognise; others skipped).
fn name_to_string(name: &[u8]) -> String {
    let mut parts = Vec::new();
    let mut rdns = name;
    while let Some((_, set, rest)) = tlv(rdns) {
        rdns = rest;
        let mut atvs = set;
        while let Some((_, atv, rest)) = tlv(atvs) {
            atvs = rest;
            let Some((_, oid, value)) = tlv(atv) else {
                continue;
            };
            let Some((_, value, _)) = tlv(value) else {
                continue;
            };
            let label = match oid {
                [0x55, 0x04, 0x03] => "CN",
                [0x55, 0x04, 0x0a] => "O",
                [0x55, 0x04, 0x0b] => "OU",
                [0x55, 0x04, 0x06] => "C",
                _ => continue,
            };
            parts.push(format!("{label}={}", String::from_utf8_lossy(value)));
        }
    }
    if parts.is_empty() {
        "(empty)".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The DNS names in the subjectAltName extension.
fn dns_names(extensions: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let Some((_, list, _)) = tlv(extensions) else {
        return names;
    };
    let mut exts = list;
    while let Some((_, ext, rest)) = tlv(exts) {
        exts = rest;
        let Some((_, oid, mut fields)) = tlv(ext) else {
            continue;
        };
        if oid != [0x55, 0x1d, 0x11] {
            continue;
        }
        // Optional `critical` BOOLEAN, then the OCTET STRING.
        while let Some((tag, value, rest)) = tlv(fields) {
            fields = rest;
            if tag != 0x04 {
                continue;
            }
            if let Some((_, general_names, _)) = tlv(value) {
                let mut gns = general_names;
                while let Some((tag, name, rest)) = tlv(gns) {
                    gns = rest;
                    if tag == 0x82 {
                        names.push(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
        }
    }
    names
}

/// `subject CN=…, issuer CN=…, DNS names a, b` of a DER certificate (best effort; never
/// panics on malformed input).
pub(crate) fn describe_certificate(der: &[u8]) -> String {
    let parsed = (|| {
        let (_, cert, _) = tlv(der)?;
        let (_, tbs, _) = tlv(cert)?;
        let mut rest = tbs;
        // [0] version, if present.
        if rest.first() == Some(&0xa0) {
            rest = tlv(rest)?.2;
        }
        let (_, _serial, rest) = tlv(rest)?;
        let (_, _sig, rest) = tlv(rest)?;
        let (_, issuer, rest) = tlv(rest)?;
        let (_, _validity, rest) = tlv(rest)?;
        let (_, subject, mut rest) = tlv(rest)?;
        let mut dns = Vec::new();
        while let Some((tag, value, more)) = tlv(rest) {
            rest = more;
            if tag == 0xa3 {
                dns = dns_names(value);
            }
        }
        Some((name_to_string(subject), name_to_string(issuer), dns))
    })();
    match parsed {
        Some((subject, issuer, dns)) if dns.is_empty() => {
            format!("subject {subject}, issuer {issuer}")
        }
        Some((subject, issuer, dns)) => {
            format!(
                "subject {subject}, issuer {issuer}, DNS names {}",
                dns.join(", ")
            )
        }
        None => "(unreadable certificate)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_reader_survives_garbage() {
        for input in [
            &b""[..],
            b"\x30",
            b"\x30\x85\xff\xff\xff\xff\xff",
            b"\x30\x02\x30\x10",
            &[0xff; 64],
        ] {
            assert_eq!(describe_certificate(input), "(unreadable certificate)");
        }
    }

    #[test]
    fn tlv_reads_long_lengths() {
        let mut input = vec![0x04, 0x81, 0x80];
        input.extend(std::iter::repeat_n(7u8, 0x80));
        input.push(0x05);
        let (tag, content, rest) = tlv(&input).expect("tlv");
        assert_eq!((tag, content.len(), rest), (0x04, 0x80, &[0x05][..]));
    }
}
