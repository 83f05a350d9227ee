//! The sources compiled into this binary (cargo features `purple`, `xmpp`, `windows`), built
//! from config entries. The hub never names a concrete source; this is the one place that does.
//!
//! `purple` (D-Bus) exists only in Unix builds and `windows` (IM Providers + COM) only in
//! Windows builds; either feature is a no-op on the other platform, and an account of a source
//! the build lacks is refused with a message that says why.

use std::sync::Arc;

use imstatus_hub::config::{AccountConfig, SourceConfig};
use imstatus_hub::{Check, Source};

/// Builds the source for one account.
pub fn build(account: &AccountConfig) -> anyhow::Result<Arc<dyn Source>> {
    match &account.source {
        #[cfg(all(unix, feature = "purple"))]
        SourceConfig::Purple(cfg) => Ok(Arc::new(imstatus_purple::PurpleSource::new(cfg))),
        #[cfg(feature = "xmpp")]
        SourceConfig::Xmpp(cfg) => Ok(Arc::new(imstatus_xmpp::XmppSource::new(cfg))),
        #[cfg(all(windows, feature = "windows"))]
        SourceConfig::Windows(cfg) => Ok(Arc::new(imstatus_windows::WindowsSource::new(cfg))),
        other => anyhow::bail!(
            "account `{}`: this build of imstatus has no `{}` source{}",
            account.name,
            other.kind(),
            why_missing(other)
        ),
    }
}

/// Runs `doctor`'s checks for one account.
pub async fn doctor(account: &AccountConfig) -> Vec<Check> {
    match &account.source {
        #[cfg(all(unix, feature = "purple"))]
        SourceConfig::Purple(cfg) => imstatus_purple::doctor(cfg).await,
        #[cfg(feature = "xmpp")]
        SourceConfig::Xmpp(cfg) => imstatus_xmpp::doctor(cfg).await,
        #[cfg(all(windows, feature = "windows"))]
        SourceConfig::Windows(cfg) => imstatus_windows::doctor(cfg).await,
        other => vec![Check::fail(
            "source",
            format!(
                "this build has no `{}` source{}",
                other.kind(),
                why_missing(other)
            ),
            if platform_lacks(other) {
                "use a source this platform has (see docs/config.md)"
            } else {
                "rebuild with the source's cargo feature"
            },
        )],
    }
}

/// Is `source` one this platform cannot have, whatever the features?
fn platform_lacks(source: &SourceConfig) -> bool {
    match source {
        SourceConfig::Purple(_) => !cfg!(unix),
        SourceConfig::Windows(_) => !cfg!(windows),
        _ => false,
    }
}

/// Why an account's source is missing from this build, as the tail of a sentence.
fn why_missing(source: &SourceConfig) -> &'static str {
    match source {
        SourceConfig::Purple(_) if platform_lacks(source) => " (libpurple over D-Bus is Unix-only)",
        SourceConfig::Windows(_) if platform_lacks(source) => {
            " (the IM Providers/COM source is Windows-only)"
        }
        _ => " (built without its cargo feature)",
    }
}
