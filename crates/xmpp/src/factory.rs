//! Registers the XMPP source with the binary: its [`SourceFactory`] (kind, keys, description) and
//! the [`SourceSettings`] of its resolved config (building the source, its doctor).

use std::any::Any;
use std::sync::Arc;

use imstatus_core::{AccountId, CodedError, SourceKind};
use imstatus_hub::{BoxFuture, Check, KeyError, Keys, Source, SourceFactory, SourceSettings};

use crate::config::{resolve, XmppConfig, KEYS, KIND};
use crate::XmppSource;

/// Registers `source = "xmpp"`.
#[derive(Debug, Clone, Copy, Default)]
pub struct XmppFactory;

impl SourceFactory for XmppFactory {
    fn kind(&self) -> SourceKind {
        KIND
    }

    fn title(&self) -> &'static str {
        "XMPP account"
    }

    fn description(&self) -> &'static str {
        "an XMPP account, watched from a hidden resource of its own (or as a contact)"
    }

    fn keys(&self) -> &'static [&'static str] {
        KEYS
    }

    fn resolve(&self, keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError> {
        resolve(keys).map(|c| Box::new(c) as Box<dyn SourceSettings>)
    }
}

impl SourceSettings for XmppConfig {
    fn build(&self, _account: &AccountId) -> Result<Arc<dyn Source>, CodedError> {
        Ok(Arc::new(XmppSource::new(self)))
    }

    fn doctor(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(crate::doctor(self))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
