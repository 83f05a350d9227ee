//! Registers the desktop-signals source with the binary: its [`SourceFactory`] (kind, keys,
//! description) and the [`SourceSettings`] of its resolved config (building the source, its
//! doctor).

use std::any::Any;
use std::sync::Arc;

use imstatus_core::{AccountId, CodedError, SourceKind};
use imstatus_hub::{BoxFuture, Check, KeyError, Keys, Source, SourceFactory, SourceSettings};

use crate::config::{resolve, DesktopConfig, KEYS, KIND};

/// The `desktop` source's factory, for the binary's list of sources.
#[derive(Debug, Clone, Copy, Default)]
pub struct DesktopFactory;

impl SourceFactory for DesktopFactory {
    fn kind(&self) -> SourceKind {
        KIND
    }

    fn title(&self) -> &'static str {
        "desktop signals (microphone, camera, idle, lock)"
    }

    fn description(&self) -> &'static str {
        "the local desktop: microphone and camera in use, idle time, screen locked"
    }

    fn keys(&self) -> &'static [&'static str] {
        KEYS
    }

    fn resolve(&self, keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError> {
        Ok(Box::new(resolve(keys)?))
    }
}

impl SourceSettings for DesktopConfig {
    fn build(&self, _account: &AccountId) -> Result<Arc<dyn Source>, CodedError> {
        crate::source::build(self)
    }

    fn doctor(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(crate::doctor::doctor(self))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}
