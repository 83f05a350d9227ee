//! Registers the libpurple source with the binary: its [`SourceFactory`] (kind, keys, description)
//! and the [`SourceSettings`] of its resolved config (building the source, its doctor).

use std::any::Any;
use std::sync::Arc;

use imstatus_core::{AccountId, CodedError, SourceKind};
use imstatus_hub::{
    BoxFuture, Check, KeyError, Keys, Source, SourceFactory, SourceSettings, Spanned,
};

use crate::config::{PurpleConfig, DEFAULT_ACCOUNT, KIND};
use crate::PurpleSource;

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
