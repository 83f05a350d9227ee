//! Registers the Windows (IM Providers/COM) source with the binary: its [`SourceFactory`] (kind,
//! keys, description) and the [`SourceSettings`] of its resolved config (building the source, its
//! doctor).

use std::any::Any;
use std::sync::Arc;

use imstatus_core::{AccountId, CodedError, SourceKind};
use imstatus_hub::{
    BoxFuture, Check, KeyError, Keys, Source, SourceFactory, SourceSettings, Spanned,
};

use crate::config::{WindowsConfig, DEFAULT_ACCOUNT, KIND};

/// Why the source cannot run in this build.
#[cfg(not(windows))]
const WINDOWS_ONLY: &str = "the IM Providers/COM source is Windows-only";

/// Registers `source = "windows"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct WindowsFactory;

impl SourceFactory for WindowsFactory {
    fn kind(&self) -> SourceKind {
        KIND
    }

    fn title(&self) -> &'static str {
        "Windows IM client"
    }

    fn description(&self) -> &'static str {
        "a Windows IM client (Communicator, Lync, Skype for Business, Teams) through IM Providers and COM"
    }

    fn keys(&self) -> &'static [&'static str] {
        &["app", "contacts"]
    }

    fn default_account(&self) -> Option<&'static str> {
        cfg!(windows).then_some(DEFAULT_ACCOUNT)
    }

    fn resolve(&self, keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError> {
        Ok(Box::new(WindowsConfig {
            app: keys.string("app")?.map(Spanned::into_inner),
            contacts: keys.bool("contacts")?.is_some_and(|c| c.value),
        }))
    }
}

impl SourceSettings for WindowsConfig {
    fn build(&self, _account: &AccountId) -> Result<Arc<dyn Source>, CodedError> {
        #[cfg(windows)]
        return Ok(Arc::new(crate::WindowsSource::new(self)));
        #[cfg(not(windows))]
        Err(CodedError::new(
            imstatus_core::ErrorCode::Unsupported,
            format!("this build of imstatus has no `windows` source ({WINDOWS_ONLY})"),
        ))
    }

    fn doctor(&self) -> BoxFuture<'_, Vec<Check>> {
        #[cfg(windows)]
        return Box::pin(crate::doctor(self));
        #[cfg(not(windows))]
        Box::pin(async {
            vec![Check::fail(
                "source",
                format!("this build has no `windows` source ({WINDOWS_ONLY})"),
                "use a source this platform has (see docs/config.md)",
            )]
        })
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
    fn windows_source_takes_app_and_contacts() {
        let c = Config::parse(
            "[[account]]\nname = \"desk\"\nsource = \"windows\"\napp = \"Lync\"\ncontacts = true\n",
            Path::new("cfg.toml"),
            &[&WindowsFactory],
        )
        .expect("valid");
        assert_eq!(c.accounts[0].kind, KIND);
        assert_eq!(
            c.accounts[0].settings_as::<WindowsConfig>(),
            Some(&WindowsConfig {
                app: Some("Lync".into()),
                contacts: true
            })
        );
    }

    #[test]
    fn it_is_the_zero_config_default_on_windows_only() {
        let c = Config::default_local(&[&WindowsFactory]).expect("default");
        if cfg!(windows) {
            assert_eq!(c.accounts[0].name.as_str(), DEFAULT_ACCOUNT);
        } else {
            assert!(c.accounts.is_empty());
        }
    }

    #[cfg(not(windows))]
    #[test]
    fn elsewhere_it_reads_its_keys_but_says_it_is_windows_only() {
        let e = WindowsConfig::default()
            .build(&AccountId::new("w"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("has no `windows` source (the IM Providers/COM source is Windows-only)"),
            "{e}"
        );
    }
}
