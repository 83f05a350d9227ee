//! [`DesktopSource`]: one task per enabled signal, and the coordinator between them and the
//! hub.

use std::sync::Arc;

use imstatus_core::{CodedError, SourceKind};
use imstatus_hub::{BoxFuture, Sink, Source};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::config::{DesktopConfig, KIND};
use crate::coordinator::{Coordinator, Unit};

/// The queue from the units to the coordinator, in reports. The coordinator only hands each
/// report to the hub (a short synchronous call), so it stays nearly empty; when it is full a
/// unit waits before it reads more from its backend (which then queues in the kernel).
const QUEUE: usize = 64;

/// Watches the local desktop: microphone and camera in use, idle, screen locked.
#[derive(Debug)]
pub struct DesktopSource {
    config: Arc<DesktopConfig>,
}

/// Builds the source (no I/O until the hub runs it).
pub(crate) fn build(config: &DesktopConfig) -> Result<Arc<dyn Source>, CodedError> {
    Ok(Arc::new(DesktopSource::new(config.clone())))
}

impl DesktopSource {
    /// A source for these settings.
    pub fn new(config: DesktopConfig) -> Self {
        DesktopSource {
            config: Arc::new(config),
        }
    }

    fn units(&self) -> Vec<Unit> {
        let c = &self.config;
        [
            (c.microphone, Unit::Microphone),
            (c.camera, Unit::Camera),
            (c.idle, Unit::Idle),
            (c.lock, Unit::Lock),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, u)| u)
        .collect()
    }

    async fn run_forever(self: Arc<Self>, sink: Sink) {
        let units = self.units();
        let mut coordinator = Coordinator::new(units.clone());
        sink.observe_all(coordinator.start());
        let (tx, mut rx) = mpsc::channel(QUEUE);
        // Dropped with this future (the hub stopped the source): every unit is aborted.
        let mut tasks = JoinSet::new();
        for unit in units {
            tasks.spawn(crate::unit::run(unit, self.config.clone(), tx.clone()));
        }
        drop(tx);
        while let Some(report) = rx.recv().await {
            let observations = coordinator.handle(report);
            if !observations.is_empty() {
                sink.observe_all(observations);
            }
        }
    }
}

impl Source for DesktopSource {
    fn kind(&self) -> SourceKind {
        KIND
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(self.run_forever(sink))
    }
}
