//! The `Source` trait, the `Sink` sources report through, and the list of every account's
//! source that sinks reach other accounts through.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use imstatus_core::{AccountId, CodedError, ErrorCode, Observation, SourceKind, Status};

use crate::shared::{Shared, Subscription};

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

    /// Puts back what the account showed before imstatus set a status on it (`previous`, as
    /// its snapshot showed it then). By default that is `set_status(previous)`; a source whose
    /// `set_status` adds a status of imstatus's own instead of changing the user's (XMPP's
    /// own resource) withdraws it.
    fn restore_status(&self, previous: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        self.set_status(previous)
    }

    /// The accounts this source combines into its own (a person's members), in order: the
    /// hub lists them as the snapshot's `accounts`. Empty (the default) for a source that
    /// watches an account itself.
    fn members(&self) -> Vec<AccountId> {
        Vec::new()
    }
}

/// Where a source reports observations of its account. Cheap to clone.
#[derive(Clone)]
pub struct Sink {
    pub(crate) account: AccountId,
    pub(crate) shared: Arc<Shared>,
    pub(crate) sources: Arc<Sources>,
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

    /// Subscribes to other accounts of the hub, as [`Hub::subscribe_to`](crate::Hub::subscribe_to)
    /// does: their snapshots first, then their changes. For a source that combines accounts
    /// (a person); the subscription is bounded like any other (a resync snapshot when it
    /// falls behind).
    pub fn subscribe_to(&self, accounts: HashSet<AccountId>) -> Subscription {
        self.shared.resume(Some(accounts), None)
    }

    /// Sets the user's status on another account of the hub, through that account's source.
    /// (A source must not call this for its own account from within its `set_status`.)
    pub fn set_status(
        &self,
        account: &AccountId,
        status: Status,
    ) -> BoxFuture<'static, Result<(), CodedError>> {
        self.sources.set_status(account, status)
    }

    /// Puts back what another account showed before imstatus set its status
    /// ([`Source::restore_status`]).
    pub fn restore_status(
        &self,
        account: &AccountId,
        previous: Status,
    ) -> BoxFuture<'static, Result<(), CodedError>> {
        self.sources.restore_status(account, previous)
    }

    /// Waits until every account in `accounts` has synchronised or reported why its source
    /// is down (an account the hub does not watch counts as settled).
    pub async fn wait_settled(&self, accounts: &[AccountId]) {
        self.shared.wait_settled(accounts).await;
    }
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("account", &self.account)
            .finish()
    }
}

/// Every account's source, in config order, shared by the hub and every sink: sinks reach
/// other accounts' sources through it (a person setting its members' status). The hub empties
/// it when dropped, so that a source holding a sink is no reference cycle.
pub(crate) struct Sources(Mutex<Vec<(AccountId, Arc<dyn Source>)>>);

impl Sources {
    pub(crate) fn new(sources: Vec<(AccountId, Arc<dyn Source>)>) -> Self {
        Sources(Mutex::new(sources))
    }

    /// Every account's source, in config order. (Fixed once the hub is built; emptied when the
    /// hub is dropped.)
    pub(crate) fn lock(&self) -> MutexGuard<'_, Vec<(AccountId, Arc<dyn Source>)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn source(&self, account: &AccountId) -> Option<Arc<dyn Source>> {
        self.lock()
            .iter()
            .find(|(a, _)| a == account)
            .map(|(_, s)| s.clone())
    }

    /// Sets the user's status on an account's source.
    pub(crate) fn set_status(
        &self,
        account: &AccountId,
        status: Status,
    ) -> BoxFuture<'static, Result<(), CodedError>> {
        let source = self.source(account);
        let account = account.clone();
        Box::pin(async move {
            match source {
                Some(source) => source.set_status(status).await,
                None => Err(no_account(&account)),
            }
        })
    }

    /// Puts back the status an account had before imstatus set one.
    pub(crate) fn restore_status(
        &self,
        account: &AccountId,
        previous: Status,
    ) -> BoxFuture<'static, Result<(), CodedError>> {
        let source = self.source(account);
        let account = account.clone();
        Box::pin(async move {
            match source {
                Some(source) => source.restore_status(previous).await,
                None => Err(no_account(&account)),
            }
        })
    }
}

fn no_account(account: &AccountId) -> CodedError {
    CodedError::new(ErrorCode::Unsupported, format!("no account `{account}`"))
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
