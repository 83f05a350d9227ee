//! The `Source` trait and the `Sink` sources report through.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use imstatus_core::{AccountId, CodedError, ErrorCode, Observation, SourceKind, Status};

use crate::hub::Shared;

/// A boxed, sendable future (object-safe async in traits).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Something that watches one account and reports what it sees.
///
/// `run` reports through the sink until the hub drops it (the future is then cancelled); it
/// must end `run`-level problems with an observation (`SourceDown`, `Anomaly`), never a panic.
/// Every report of the current state is followed by [`Observation::Synced`] so that one-shot
/// readers know when the answer is complete.
pub trait Source: Send + Sync + 'static {
    /// Which kind of source this is.
    fn kind(&self) -> SourceKind;

    /// Watches the account, forever or until cancelled.
    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()>;

    /// Sets the user's status, where the source can (`unsupported` otherwise).
    fn set_status(&self, status: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        let _ = status;
        Box::pin(async {
            Err(CodedError::new(
                ErrorCode::Unsupported,
                "this source cannot set the status",
            ))
        })
    }
}

/// Where a source reports observations of its account. Cheap to clone.
#[derive(Clone)]
pub struct Sink {
    pub(crate) account: AccountId,
    pub(crate) shared: Arc<Shared>,
}

impl Sink {
    /// The account this sink reports for.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// Reports one observation; the resulting events are published before this returns.
    pub fn observe(&self, observation: Observation) {
        self.observe_all([observation]);
    }

    /// Reports several observations under one lock, in order.
    pub fn observe_all(&self, observations: impl IntoIterator<Item = Observation>) {
        self.shared.observe(&self.account, observations);
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("account", &self.account)
            .finish()
    }
}

/// One step of `imstatus doctor`: what was checked, whether it passed, and what to do if not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked (`bus`, `client`, `dns`, `tcp`, `tls`, `auth`, `roster`…).
    pub name: &'static str,
    /// Did it pass?
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// What to do about a failure.
    pub hint: Option<String>,
}

impl Check {
    /// A step that passed.
    pub fn pass(name: &'static str, detail: impl Into<String>) -> Self {
        Check {
            name,
            ok: true,
            detail: detail.into(),
            hint: None,
        }
    }

    /// A step that failed, with what to do about it.
    pub fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        Check {
            name,
            ok: false,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}
