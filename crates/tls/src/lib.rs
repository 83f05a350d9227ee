//! TLS client set-up shared by every imstatus client (XMPP, MQTT, Matrix, …): the system's
//! trust roots (rustls-native-certs) plus the PEM certificates of an optional `ca_file`, and
//! rustls with the `ring` provider (no C build). One loader, so that every client trusts the
//! same roots and reports a bad `ca_file` the same way.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use tokio_rustls::rustls;
use tokio_rustls::rustls::client::WebPkiServerVerifier;
use tokio_rustls::rustls::crypto::{ring, CryptoProvider};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// Why the trust roots could not be set up. Every variant means "no certificate can be
/// trusted": callers report it as `invalid_certificate`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `ca_file` could not be read or holds nothing usable.
    #[error("ca_file {path}: {reason}", path = path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither the system nor `ca_file` gave a root.
    #[error("no trusted roots: install the system's CA certificates or set ca_file")]
    NoRoots,
    /// rustls refused the configuration.
    #[error("TLS set-up: {0}")]
    Setup(String),
}

/// The trust roots of one client: the system's plus `ca_file`, loaded once.
#[derive(Debug, Clone)]
pub struct Roots {
    store: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    description: String,
}

impl Roots {
    /// Loads the system roots and the PEM certificates in `ca_file`.
    pub fn load(ca_file: Option<&Path>) -> Result<Roots, Error> {
        let mut store = RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        let (system, _ignored) = store.add_parsable_certificates(native.certs);
        let mut description = format!("{system} system roots");
        if let Some(path) = ca_file {
            let bad = |reason: String| Error::CaFile {
                path: path.to_owned(),
                reason,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<_, _>>())
                .map_err(|e| bad(format!("cannot read it: {e}")))?;
            if certs.is_empty() {
                return Err(bad("holds no PEM certificate".into()));
            }
            let (added, rejected) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(bad(format!(
                    "none of its {rejected} certificates is usable as a root"
                )));
            }
            description.push_str(&format!(" + {added} from {}", path.display()));
        }
        if store.is_empty() {
            return Err(Error::NoRoots);
        }
        Ok(Roots {
            store: Arc::new(store),
            provider: Arc::new(ring::default_provider()),
            description,
        })
    }

    /// Where the roots came from (`140 system roots + 1 from /etc/ca.pem`), for `doctor`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The root store.
    pub fn store(&self) -> &Arc<RootCertStore> {
        &self.store
    }

    /// The crypto provider (ring).
    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// The standard webpki verifier over these roots.
    pub fn verifier(&self) -> Result<Arc<WebPkiServerVerifier>, Error> {
        WebPkiServerVerifier::builder_with_provider(self.store.clone(), self.provider.clone())
            .build()
            .map_err(|e| Error::Setup(e.to_string()))
    }

    /// A client config with the safe default protocol versions and these roots.
    pub fn client_config(&self) -> Result<ClientConfig, Error> {
        Ok(ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Setup(e.to_string()))?
            .with_root_certificates(self.store.clone())
            .with_no_client_auth())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_is_refused_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.pem");
        let e = Roots::load(Some(&missing)).expect_err("missing");
        assert!(
            e.to_string()
                .starts_with(&format!("ca_file {}: cannot read it", missing.display())),
            "{e}"
        );
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").expect("write");
        let e = Roots::load(Some(&empty)).expect_err("empty");
        assert!(e.to_string().ends_with("holds no PEM certificate"), "{e}");
    }

    #[test]
    fn the_system_roots_load_and_build_a_client_config() {
        // Debian's ca-certificates is installed wherever the tests run.
        let roots = Roots::load(None).expect("system roots");
        assert!(
            roots.description().ends_with("system roots"),
            "{}",
            roots.description()
        );
        assert!(!roots.store().is_empty());
        roots.client_config().expect("client config");
        roots.verifier().expect("verifier");
    }
}
