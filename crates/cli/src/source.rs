//! The sources compiled into this binary (cargo features `purple`, `xmpp`), built from config
//! entries. The hub never names a concrete source; this is the one place that does.

use std::sync::Arc;

use imstatus_hub::config::{AccountConfig, SourceConfig};
use imstatus_hub::{Check, Source};

/// Builds the source for one account.
pub fn build(account: &AccountConfig) -> anyhow::Result<Arc<dyn Source>> {
    match &account.source {
        #[cfg(feature = "purple")]
        SourceConfig::Purple(cfg) => Ok(Arc::new(imstatus_purple::PurpleSource::new(cfg))),
        #[cfg(feature = "xmpp")]
        SourceConfig::Xmpp(cfg) => Ok(Arc::new(imstatus_xmpp::XmppSource::new(cfg))),
        other => anyhow::bail!(
            "account `{}`: this build of imstatus has no `{}` source",
            account.name,
            other.kind()
        ),
    }
}

/// Runs `doctor`'s checks for one account.
pub async fn doctor(account: &AccountConfig) -> Vec<Check> {
    match &account.source {
        #[cfg(feature = "purple")]
        SourceConfig::Purple(cfg) => imstatus_purple::doctor(cfg).await,
        #[cfg(feature = "xmpp")]
        SourceConfig::Xmpp(cfg) => imstatus_xmpp::doctor(cfg).await,
        other => vec![Check::fail(
            "source",
            format!("this build has no `{}` source", other.kind()),
            "rebuild with the source's cargo feature",
        )],
    }
}
