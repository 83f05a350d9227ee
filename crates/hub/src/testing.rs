//! A scripted in-memory source for tests (feature `test-source`); never part of the product.

use std::sync::{Arc, Mutex};

use imstatus_core::{AccountId, CodedError, ErrorCode, Observation, PartId, SourceKind, Status};
use tokio::sync::mpsc;

use crate::factory::{KeyError, Keys, SourceFactory, SourceSettings};
use crate::source::{BoxFuture, Check, Sink, Source};

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

/// A [`SourceFactory`] that hands out prepared sources (scripted ones, or any test source) in
/// order, one per configured account of its kind; takes no keys.
pub struct ScriptedFactory {
    kind: SourceKind,
    sources: Arc<Mutex<std::collections::VecDeque<Arc<dyn Source>>>>,
}

impl ScriptedFactory {
    /// A factory of `kind` that builds `sources`, in order.
    pub fn new(kind: SourceKind, sources: impl IntoIterator<Item = Arc<dyn Source>>) -> Self {
        ScriptedFactory {
            kind,
            sources: Arc::new(Mutex::new(sources.into_iter().collect())),
        }
    }
}

struct ScriptedSettings {
    sources: Arc<Mutex<std::collections::VecDeque<Arc<dyn Source>>>>,
}

impl std::fmt::Debug for ScriptedSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScriptedSettings")
    }
}

impl SourceFactory for ScriptedFactory {
    fn kind(&self) -> SourceKind {
        self.kind.clone()
    }

    fn title(&self) -> &'static str {
        "scripted source"
    }

    fn description(&self) -> &'static str {
        "a scripted source for tests"
    }

    fn keys(&self) -> &'static [&'static str] {
        &[]
    }

    fn resolve(&self, _keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError> {
        Ok(Box::new(ScriptedSettings {
            sources: self.sources.clone(),
        }))
    }
}

impl SourceSettings for ScriptedSettings {
    fn build(&self, account: &AccountId) -> Result<Arc<dyn Source>, CodedError> {
        self.sources
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
            .ok_or_else(|| {
                CodedError::new(
                    ErrorCode::Unsupported,
                    format!("no scripted source left for account `{account}`"),
                )
            })
    }

    fn doctor(&self) -> BoxFuture<'_, Vec<Check>> {
        Box::pin(async { vec![Check::pass("script", "a scripted source")] })
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}
