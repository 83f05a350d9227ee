//! Registers the teams-for-linux source with the binary: its [`SourceFactory`] (kind, keys,
//! description) and the [`SourceSettings`] of its resolved config (building the source, its
//! doctor).

use std::any::Any;
use std::sync::Arc;

use imstatus_core::{AccountId, CodedError, SourceKind};
use imstatus_hub::{BoxFuture, Check, KeyError, Keys, Source, SourceFactory, SourceSettings};

use crate::config::{TeamsConfig, KEYS};
use crate::source::TeamsSource;
use crate::KIND;

/// Registers the teams-for-linux source with the binary.
#[derive(Debug, Clone, Copy, Default)]
pub struct TeamsFactory;

impl SourceFactory for TeamsFactory {
    fn kind(&self) -> SourceKind {
        KIND
    }

    fn title(&self) -> &'static str {
        "Teams for Linux"
    }

    fn description(&self) -> &'static str {
        "Teams for Linux (teams-for-linux): presence and call from its MQTT topics or D-Bus API, no cloud consent"
    }

    fn keys(&self) -> &'static [&'static str] {
        KEYS
    }

    fn resolve(&self, keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError> {
        TeamsConfig::from_keys(keys).map(|c| Box::new(c) as Box<dyn SourceSettings>)
    }
}

impl SourceSettings for TeamsConfig {
    fn build(&self, _account: &AccountId) -> Result<Arc<dyn Source>, CodedError> {
        Ok(Arc::new(TeamsSource::new(self)))
    }

    fn doctor(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(crate::doctor::doctor(self))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
