//! The hub: builds the shared state, starts and supervises the sources (restarting one that
//! panics), and answers readers: snapshots, subscriptions, status changes.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use imstatus_core::{
    AccountId, Backoff, CodedError, ErrorCode, Event, EventKind, Observation, SourceKind, Status,
    Tracker,
};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinSet;

use crate::shared::{now, timer_task, BatchHook, Shared, State, Subscription};
use crate::source::{Sink, Source, Sources};

/// Events kept in the broadcast ring, by default. A subscriber more than this many events
/// behind gets a resync snapshot instead of the events it missed.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Events kept for resuming by seq, by default.
pub const DEFAULT_HISTORY: usize = 1024;

/// Builds a [`Hub`]: add sources, adjust capacities, then [`HubBuilder::start`].
pub struct HubBuilder {
    sources: Vec<(AccountId, Arc<dyn Source>)>,
    capacity: usize,
    history: usize,
    sign_in_timeout: Option<Duration>,
    hook: Option<BatchHook>,
}

impl HubBuilder {
    /// Calls `hook` with the events of every batch, in order, under the hub's lock (so keep
    /// it short: hand the batch on, never wait): all the events one `observe_all` (or one
    /// timeout) emitted, and the tracker as it is right after them, so a batch is never seen
    /// half-applied. For the cluster's watcher, which publishes each batch as one message.
    pub fn with_batch_hook(mut self, hook: BatchHook) -> Self {
        self.hook = Some(hook);
        self
    }

    /// Watches `account` with `source`.
    pub fn with_source(mut self, account: AccountId, source: Arc<dyn Source>) -> Self {
        self.sources.push((account, source));
        self
    }

    /// Sets the broadcast ring's capacity (events); see [`DEFAULT_CAPACITY`].
    pub fn with_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// Sets how many events are kept for resuming by seq; see [`DEFAULT_HISTORY`].
    pub fn with_history(mut self, history: usize) -> Self {
        self.history = history.max(1);
        self
    }

    /// Sets how long signing in may take before it fails with `timeout`.
    pub fn with_sign_in_timeout(mut self, timeout: Duration) -> Self {
        self.sign_in_timeout = Some(timeout);
        self
    }

    /// Starts every source on the current tokio runtime.
    pub fn start(self) -> Hub {
        self.start_with(|_| ()).0
    }

    /// Subscribes to every account, then starts the sources: the subscription sees the
    /// snapshots of the accounts as they were before any source ran, then everything the
    /// sources report, from their very first observation (a source that fails at once is
    /// seen failing, not only as an already-failed snapshot).
    pub fn start_subscribed(self) -> (Hub, Subscription) {
        self.start_with(|hub| hub.subscribe())
    }

    /// Builds the hub, calls `before` on it before any source runs, then starts the sources.
    pub(crate) fn start_with<T>(self, before: impl FnOnce(&Hub) -> T) -> (Hub, T) {
        // Microseconds since the epoch: later runs start above any seq an earlier run could
        // have reached (short of a million events per second for its whole life), and the
        // numbers stay below 2^53, exact in JavaScript, until the year 2255.
        let base = u64::try_from(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros()),
        )
        .unwrap_or(0);
        let mut tracker = Tracker::new().with_seq_base(base);
        if let Some(t) = self.sign_in_timeout {
            tracker = tracker.with_sign_in_timeout(t);
        }
        for (account, source) in &self.sources {
            let members = source.members();
            if members.is_empty() {
                tracker.add_account(account.clone(), source.kind());
            } else {
                tracker.add_person(account.clone(), source.kind(), members);
            }
        }
        let (tx, _) = broadcast::channel(self.capacity);
        let mut index = HashMap::with_capacity(self.sources.len());
        for (account, _) in &self.sources {
            let next = index.len();
            index.entry(account.clone()).or_insert(next);
        }
        let versions = (0..index.len()).map(|_| AtomicU64::new(0)).collect();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                tracker,
                history: VecDeque::with_capacity(self.history),
                since_trim: 0,
            }),
            history_capacity: self.history,
            tx,
            changed: watch::channel(0).0,
            timer: Notify::new(),
            resyncs: AtomicU64::new(0),
            events: AtomicU64::new(0),
            hook: self.hook,
            index,
            versions,
        });
        let mut hub = Hub {
            shared,
            sources: Arc::new(Sources::new(self.sources)),
            _tasks: JoinSet::new(),
        };
        let early = before(&hub);
        hub._tasks.spawn(timer_task(hub.shared.clone()));
        let sources = hub.sources.lock().clone();
        for (account, source) in &sources {
            let sink = Sink {
                account: account.clone(),
                shared: hub.shared.clone(),
                sources: hub.sources.clone(),
            };
            hub._tasks.spawn(supervise(source.clone(), sink));
        }
        (hub, early)
    }
}

/// A source that ran this long before it panicked is restarted as quickly as the first time.
const STABLE_RUN: Duration = imstatus_core::backoff::MAX;

/// Runs a source, and restarts it when it panics: a panic is reported as the source being down
/// (instead of taking the hub along), then the source is started again after the core's
/// backoff (jittered, 1 s doubling to 60 s; back to 1 s after a run of [`STABLE_RUN`]), so a
/// source that panics on every start is retried ever more slowly, never in a loop. A source
/// whose `run` returns is not restarted.
async fn supervise(source: Arc<dyn Source>, sink: Sink) {
    /// Aborts the source's task when the supervisor is aborted (the hub was dropped).
    struct AbortOnDrop(tokio::task::JoinHandle<()>);
    impl Drop for AbortOnDrop {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let mut backoff = Backoff::new(seed(sink.account()));
    loop {
        let started = tokio::time::Instant::now();
        let mut task = AbortOnDrop(tokio::spawn(source.clone().run(sink.clone())));
        match (&mut task.0).await {
            Err(e) if e.is_panic() => {}
            _ => return,
        }
        if started.elapsed() >= STABLE_RUN {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        tracing::error!(account = %sink.account(), ?delay, "source task panicked; restarting it");
        sink.observe(Observation::SourceDown(
            ErrorCode::ProtocolError,
            format!(
                "the source stopped after an internal error (panic), restarting it in {}; \
                 see the log",
                humantime::format_duration(Duration::from_millis(
                    u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)
                ))
            ),
        ));
        tokio::time::sleep(delay).await;
    }
}

/// A backoff seed that differs per process and account (`RandomState` is randomly keyed).
fn seed(account: &AccountId) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(account)
}

/// Runs the sources and serves their events. Dropping it stops every source.
pub struct Hub {
    pub(crate) shared: Arc<Shared>,
    pub(crate) sources: Arc<Sources>,
    _tasks: JoinSet<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        // The tasks are aborted with the join set; the sources go now, with any sink they
        // keep, so that the broadcast closes and every subscription ends.
        let sources = std::mem::take(&mut *self.sources.lock());
        drop(sources);
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("accounts", &self.accounts())
            .finish()
    }
}

impl Hub {
    /// A builder with the default capacities.
    pub fn builder() -> HubBuilder {
        HubBuilder {
            sources: Vec::new(),
            capacity: DEFAULT_CAPACITY,
            history: DEFAULT_HISTORY,
            sign_in_timeout: None,
            hook: None,
        }
    }

    /// The watched accounts, in config order.
    pub fn accounts(&self) -> Vec<AccountId> {
        self.sources.lock().iter().map(|(a, _)| a.clone()).collect()
    }

    /// The source kind of an account.
    pub fn source_kind(&self, account: &AccountId) -> Option<SourceKind> {
        self.sources.source(account).map(|s| s.kind())
    }

    /// The current state of one account as a `snapshot` event.
    pub fn snapshot(&self, account: &AccountId) -> Option<Event> {
        self.shared.lock().tracker.snapshot(account, now())
    }

    /// Snapshots of every account.
    pub fn snapshots(&self) -> Vec<Event> {
        self.shared.lock().tracker.snapshots(now())
    }

    /// A number that changes whenever the account's snapshot (or its source error) may have
    /// changed, apart from the fields read off the clock (`time`, and `activity.idle_s`, which
    /// moves by itself). Read without the hub's lock: a reader that caches something derived
    /// from [`Hub::account_state`] keeps it while this stays the same. `None` for an unknown
    /// account.
    pub fn snapshot_version<Q>(&self, account: &Q) -> Option<u64>
    where
        AccountId: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = *self.shared.index.get(account)?;
        Some(self.shared.versions[i].load(Ordering::Acquire))
    }

    /// The account's snapshot, its source error and its [`Hub::snapshot_version`], all read
    /// under one short hold of the lock (the snapshot is cloned; nothing is serialised there).
    pub fn account_state(&self, account: &AccountId) -> Option<AccountState> {
        let i = *self.shared.index.get(account)?;
        let state = self.shared.lock();
        let version = self.shared.versions[i].load(Ordering::Acquire);
        let snapshot = state.tracker.snapshot(account, now())?;
        let source_error = state
            .tracker
            .source_down(account)
            .map(|(code, detail)| CodedError::new(code, detail));
        Some(AccountState {
            version,
            snapshot,
            source_error,
        })
    }

    /// The error that currently keeps an account's source down (e.g. `auth_failed`).
    pub fn source_error(&self, account: &AccountId) -> Option<CodedError> {
        self.shared
            .lock()
            .tracker
            .source_down(account)
            .map(|(code, detail)| CodedError::new(code, detail))
    }

    /// Waits until every account in `accounts` has either synchronised or reported why its
    /// source is down, or until `timeout`. Returns whether all settled.
    pub async fn wait_settled(&self, accounts: &[AccountId], timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.shared.wait_settled(accounts))
            .await
            .is_ok()
    }

    /// The `source_error` events of an account still held in the history ring, oldest first:
    /// warnings a source gave while it started (e.g. that it works visibly), for readers that
    /// subscribe only once the account has settled.
    pub fn recent_source_errors(&self, account: &AccountId) -> Vec<Arc<Event>> {
        self.shared
            .lock()
            .history
            .iter()
            .filter(|e| &e.account == account && matches!(e.kind, EventKind::SourceError { .. }))
            .cloned()
            .collect()
    }

    /// Sets the user's status on an account's source.
    pub async fn set_status(&self, account: &AccountId, status: Status) -> Result<(), CodedError> {
        self.sources.set_status(account, status).await
    }

    /// Subscribes to every account: snapshots first, then changes.
    ///
    /// For the lowest latency, read the subscription in a task spawned on the hub's runtime:
    /// the worker that publishes an event then runs the reader right after. Awaited from a
    /// thread outside the runtime's workers (a `block_on` on the main thread), every event
    /// also wakes that thread: ~0.2 ms more at p50 on a 2-core VM (B1, `docs/benchmarks.md`).
    pub fn subscribe(&self) -> Subscription {
        self.subscribe_to(None)
    }

    /// Subscribes to some accounts (`None` = all): snapshots first, then changes.
    pub fn subscribe_to(&self, accounts: Option<HashSet<AccountId>>) -> Subscription {
        self.resume(accounts, None)
    }

    /// Subscribes, resuming after `after_seq` from the history ring when it still holds every
    /// later event; otherwise (or with `None`) starts with snapshots (`resync: true` when a
    /// resume was asked for but the gap is too old).
    pub fn resume(
        &self,
        accounts: Option<HashSet<AccountId>>,
        after_seq: Option<u64>,
    ) -> Subscription {
        self.shared.resume(accounts, after_seq)
    }

    /// How many subscribers fell behind and were resynchronised.
    pub fn resync_count(&self) -> u64 {
        self.shared.resyncs.load(Ordering::Relaxed)
    }

    /// How many events were published.
    pub fn event_count(&self) -> u64 {
        self.shared.events.load(Ordering::Relaxed)
    }

    /// How many subscriptions are open.
    pub fn subscriber_count(&self) -> usize {
        self.shared.tx.receiver_count()
    }
}

/// One account as [`Hub::account_state`] read it, consistently.
#[derive(Clone, Debug)]
pub struct AccountState {
    /// The [`Hub::snapshot_version`] this state belongs to.
    pub version: u64,
    /// The `snapshot` event (its `time` is when it was read).
    pub snapshot: Event,
    /// The error that keeps the account's source down, if it is down.
    pub source_error: Option<CodedError>,
}
