//! A scripted in-memory source for tests (feature `test-source`); never part of the product.

use std::sync::{Arc, Mutex};

use imstatus_core::{CodedError, Observation, PartId, SourceKind, Status};
use tokio::sync::mpsc;

use crate::source::{BoxFuture, Sink, Source};

/// Feeds the observations a test sends; `set_status` succeeds and is reported back as a
/// presence of the part `scripted`.
pub struct ScriptedSource {
    kind: SourceKind,
    initial: Vec<Observation>,
    rx: Mutex<Option<mpsc::UnboundedReceiver<Vec<Observation>>>>,
    sink: Mutex<Option<Sink>>,
}

/// The test's end of a [`ScriptedSource`].
#[derive(Clone)]
pub struct Script {
    tx: mpsc::UnboundedSender<Vec<Observation>>,
}

impl Script {
    /// Sends a batch of observations to the source.
    pub fn send(&self, observations: impl IntoIterator<Item = Observation>) {
        // The source may be gone at the end of a test; nothing to do then.
        let _ = self.tx.send(observations.into_iter().collect());
    }
}

/// A scripted source that first reports `initial`, then what the test sends.
pub fn scripted(kind: SourceKind, initial: Vec<Observation>) -> (Arc<ScriptedSource>, Script) {
    let (tx, rx) = mpsc::unbounded_channel();
    let source = ScriptedSource {
        kind,
        initial,
        rx: Mutex::new(Some(rx)),
        sink: Mutex::new(None),
    };
    (Arc::new(source), Script { tx })
}

impl Source for ScriptedSource {
    fn kind(&self) -> SourceKind {
        self.kind.clone()
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            sink.observe_all(self.initial.clone());
            *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink.clone());
            let rx = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some(mut rx) = rx else { return };
            while let Some(batch) = rx.recv().await {
                if batch
                    .iter()
                    .any(|o| matches!(o, Observation::Anomaly(_, d) if d == "panic"))
                {
                    panic!("scripted panic");
                }
                sink.observe_all(batch);
            }
            std::future::pending::<()>().await;
        })
    }

    fn set_status(&self, status: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        Box::pin(async move {
            let sink = self.sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(sink) = sink {
                sink.observe(Observation::Presence {
                    part: PartId::new("scripted"),
                    status,
                    priority: None,
                });
            }
            Ok(())
        })
    }
}
