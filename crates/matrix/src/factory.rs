//! Registers the Matrix source with the binary: its [`SourceFactory`] (kind, keys, description) and
//! the [`SourceSettings`] of its resolved config (building the source, its doctor).

use std::any::Any;
use std::sync::Arc;

use imstatus_core::{AccountId, CodedError};
use imstatus_hub::{BoxFuture, Check, KeyError, Keys, Source, SourceFactory, SourceSettings};

use crate::config::{MatrixConfig, KEYS};
use crate::source::MatrixSource;
use crate::KIND;

/// Registers the Matrix source with the binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatrixFactory;

impl SourceFactory for MatrixFactory {
    fn kind(&self) -> imstatus_core::SourceKind {
        KIND
    }

    fn title(&self) -> &'static str {
        "Matrix account"
    }

    fn description(&self) -> &'static str {
        "a Matrix user's presence (and their room contacts'), from the homeserver's /sync, without changing it"
    }

    fn keys(&self) -> &'static [&'static str] {
        KEYS
    }

    fn resolve(&self, keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError> {
        MatrixConfig::from_keys(keys).map(|c| Box::new(c) as Box<dyn SourceSettings>)
    }
}

impl SourceSettings for MatrixConfig {
    fn build(&self, account: &AccountId) -> Result<Arc<dyn Source>, CodedError> {
        Ok(Arc::new(MatrixSource::new(self, account)?))
    }

    fn doctor(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(crate::doctor::doctor(self))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
