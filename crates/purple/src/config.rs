//! The libpurple source's settings and its `[[account]]` keys (`source = "purple"`); the
//! [`PurpleFactory`](crate::PurpleFactory) registers the source with the binary. This is the zero-config
//! default on Unix: with no config file, imstatus watches the local libpurple client on the
//! session bus as the account `purple`.

use imstatus_core::SourceKind;

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

#[cfg(test)]
mod tests {
    use crate::PurpleFactory;
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
