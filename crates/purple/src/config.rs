//! The libpurple source's settings and its `[[account]]` keys (`source = "purple"`), and the
//! [`PurpleFactory`] that registers the source with the binary. This is the zero-config
//! default on Unix: with no config file, imstatus watches the local libpurple client on the
//! session bus as the account `purple`.

use std::any::Any;
use std::sync::Arc;

use imstatus_core::{AccountId, CodedError, SourceKind};
use imstatus_hub::{
    BoxFuture, Check, KeyError, Keys, Source, SourceFactory, SourceSettings, Spanned,
};

use crate::PurpleSource;

/// `source = "purple"`.
pub const KIND: SourceKind = SourceKind::new_static("purple");

/// The account name of the zero-config default.
pub const DEFAULT_ACCOUNT: &str = "purple";

/// The libpurple source's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PurpleConfig {
    /// A D-Bus address; `None` = the session bus.
    pub bus: Option<String>,
    /// Only these libpurple accounts (`user@host/resource` or bare); empty = all.
    pub accounts: Vec<String>,
    /// Also track buddies' presence.
    pub contacts: bool,
}

/// Registers `source = "purple"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct PurpleFactory;

impl SourceFactory for PurpleFactory {
    fn kind(&self) -> SourceKind {
        KIND
    }

    fn title(&self) -> &'static str {
        "libpurple client (Pidgin, Finch)"
    }

    fn description(&self) -> &'static str {
        "the local libpurple client (Pidgin, Finch) over D-Bus"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["bus", "accounts", "contacts"]
    }

    fn default_account(&self) -> Option<&'static str> {
        Some(DEFAULT_ACCOUNT)
    }

    fn resolve(&self, keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError> {
        Ok(Box::new(PurpleConfig {
            bus: keys.string("bus")?.map(Spanned::into_inner),
            accounts: keys
                .strings("accounts")?
                .map(Spanned::into_inner)
                .unwrap_or_default(),
            contacts: keys.bool("contacts")?.is_some_and(|c| c.value),
        }))
    }
}

impl SourceSettings for PurpleConfig {
    fn build(&self, _account: &AccountId) -> Result<Arc<dyn Source>, CodedError> {
        Ok(Arc::new(PurpleSource::new(self)))
    }

    fn doctor(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(crate::doctor(self))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use imstatus_config::Config;

    use super::*;

    #[test]
    fn purple_account_with_bus_and_filter() {
        let c = Config::parse(
            "[[account]]\nname = \"desktop\"\nsource = \"purple\"\nbus = \"unix:path=/x\"\naccounts = [\"a@b/c\"]\n",
            Path::new("cfg.toml"),
            &[&PurpleFactory],
        )
        .expect("valid");
        assert_eq!(
            c.accounts[0].settings_as::<PurpleConfig>(),
            Some(&PurpleConfig {
                bus: Some("unix:path=/x".into()),
                accounts: vec!["a@b/c".into()],
                contacts: false
            })
        );
    }

    #[test]
    fn the_zero_config_default_is_the_session_bus_as_purple() {
        let c = Config::default_local(&[&PurpleFactory]).expect("default");
        assert_eq!(c.accounts[0].name.as_str(), "purple");
        assert_eq!(c.accounts[0].kind, KIND);
        assert_eq!(
            c.accounts[0].settings_as::<PurpleConfig>(),
            Some(&PurpleConfig::default())
        );
    }
}
