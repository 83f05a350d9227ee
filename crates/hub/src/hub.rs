//! The hub proper: shared tracker, broadcast fan-out with resync, resume ring, timers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, SystemTime};

use imstatus_core::{
    AccountId, Backoff, CodedError, ErrorCode, Event, EventKind, Observation, SourceKind, Status,
    Timestamp, Tracker,
};
use tokio::sync::{broadcast, watch, Notify};
use tokio::task::JoinSet;

use crate::source::{Sink, Source};

/// Events kept in the broadcast ring, by default. A subscriber more than this many events
/// behind gets a resync snapshot instead of the events it missed.
pub const DEFAULT_CAPACITY: usize = 4096;
/// Events kept for resuming by seq, by default.
pub const DEFAULT_HISTORY: usize = 1024;
/// At most this many events in one [`Subscription::recv_batch`] (the rest come in the next).
pub const MAX_BATCH: usize = 4096;

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

pub(crate) struct State {
    pub(crate) tracker: Tracker,
    pub(crate) history: VecDeque<Arc<Event>>,
}

/// Called under the hub's lock with the events of one batch (one `observe_all`, or one
/// timeout) and the tracker after it; see [`HubBuilder::with_batch_hook`].
pub type BatchHook = Arc<dyn Fn(&[Arc<Event>], &Tracker) + Send + Sync>;

/// What sinks, subscriptions and the hub share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Every account's source, in config order (fixed once the hub is built; emptied when
    /// the hub is dropped, so that a source holding a sink is no cycle): sinks reach other
    /// accounts' sources through it (a person setting its members' status).
    sources: Mutex<Vec<(AccountId, Arc<dyn Source>)>>,
    pub(crate) history_capacity: usize,
    pub(crate) tx: broadcast::Sender<Arc<Event>>,
    /// Bumped after every batch of observations (wakes the timer and `wait_settled`).
    pub(crate) changed: watch::Sender<u64>,
    timer: Notify,
    resyncs: AtomicU64,
    pub(crate) events: AtomicU64,
    hook: Option<BatchHook>,
    /// Each account's position in `versions` (fixed once the hub is built).
    index: HashMap<AccountId, usize>,
    /// Per account, a number bumped under the state lock before anything that may change the
    /// account's snapshot is applied (see [`Hub::snapshot_version`]); readable without the lock.
    versions: Box<[AtomicU64]>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the tracker half-updated in a way that
        // matters more than stopping; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn observe(
        &self,
        account: &AccountId,
        observations: impl IntoIterator<Item = Observation>,
    ) {
        let now = now();
        let mut state = self.lock();
        // Before the change and before its events are sent: whoever sees an event and then
        // reads the version finds it bumped, so a cache keyed by it cannot answer older state.
        self.bump(account);
        let before = state.tracker.poll_timeout();
        for o in observations {
            if let Err(e) = state.tracker.handle_observation(now, account, o) {
                tracing::warn!(%e, "observation for an account the hub does not track");
            }
        }
        self.publish(&mut state);
        let after = state.tracker.poll_timeout();
        drop(state);
        if after.is_some() && after != before {
            self.timer.notify_one();
        }
        self.changed.send_modify(|n| *n += 1);
    }

    fn sources(&self) -> MutexGuard<'_, Vec<(AccountId, Arc<dyn Source>)>> {
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn source(&self, account: &AccountId) -> Option<Arc<dyn Source>> {
        self.sources()
            .iter()
            .find(|(a, _)| a == account)
            .map(|(_, s)| s.clone())
    }

    /// Sets the user's status on an account's source.
    pub(crate) fn set_status(
        &self,
        account: &AccountId,
        status: Status,
    ) -> crate::source::BoxFuture<'static, Result<(), CodedError>> {
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
    ) -> crate::source::BoxFuture<'static, Result<(), CodedError>> {
        let source = self.source(account);
        let account = account.clone();
        Box::pin(async move {
            match source {
                Some(source) => source.restore_status(previous).await,
                None => Err(no_account(&account)),
            }
        })
    }

    /// Has every account in `accounts` synchronised or reported why its source is down?
    fn settled(&self, accounts: &[AccountId]) -> bool {
        let state = self.lock();
        accounts.iter().all(|a| {
            state.tracker.is_synced(a).unwrap_or(true) || state.tracker.source_down(a).is_some()
        })
    }

    /// Waits until every account in `accounts` has settled (see [`Hub::wait_settled`]).
    pub(crate) async fn wait_settled(&self, accounts: &[AccountId]) {
        let mut changed = self.changed.subscribe();
        loop {
            if self.settled(accounts) {
                return;
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    }

    /// Subscribes, resuming after `after_seq` from the history ring when it still holds
    /// every later event (see [`Hub::resume`]).
    pub(crate) fn resume(
        self: &Arc<Self>,
        accounts: Option<HashSet<AccountId>>,
        after_seq: Option<u64>,
    ) -> Subscription {
        let state = self.lock();
        let rx = self.tx.subscribe();
        let mut sub = Subscription {
            shared: Arc::downgrade(self),
            rx,
            accounts,
            pending: VecDeque::new(),
            skip_until: state.tracker.last_seq(),
        };
        let last = state.tracker.last_seq();
        let oldest = state.history.front().map_or(last + 1, |e| e.seq);
        match after_seq {
            Some(after) if after <= last && after + 1 >= oldest => {
                let replay: Vec<Arc<Event>> = state
                    .history
                    .iter()
                    .filter(|e| e.seq > after && sub.wants(&e.account))
                    .cloned()
                    .collect();
                sub.pending.extend(replay);
            }
            Some(_) => sub.push_snapshots(&state, true),
            None => sub.push_snapshots(&state, false),
        }
        sub
    }

    fn handle_timeout(&self) {
        let mut state = self.lock();
        // A timeout may change any account (rare: sign-in deadlines): every version moves.
        for v in self.versions.iter() {
            v.fetch_add(1, Ordering::Release);
        }
        state.tracker.handle_timeout(now());
        self.publish(&mut state);
    }

    pub(crate) fn bump(&self, account: &AccountId) {
        if let Some(&i) = self.index.get(account) {
            self.versions[i].fetch_add(1, Ordering::Release);
        }
    }

    fn publish(&self, state: &mut State) {
        let mut batch = Vec::new();
        while let Some(event) = state.tracker.poll_event() {
            let event = Arc::new(event);
            if self.hook.is_some() {
                batch.push(event.clone());
            }
            if state.history.len() == self.history_capacity {
                state.history.pop_front();
            }
            state.history.push_back(event.clone());
            self.events.fetch_add(1, Ordering::Relaxed);
            // No receivers is fine: nobody is listening right now.
            let _ = self.tx.send(event);
        }
        if let (Some(hook), false) = (&self.hook, batch.is_empty()) {
            hook(&batch, &state.tracker);
        }
    }
}

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
            }),
            sources: Mutex::new(self.sources),
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
            _tasks: JoinSet::new(),
        };
        let early = before(&hub);
        hub._tasks.spawn(timer_task(hub.shared.clone()));
        let sources = hub.shared.sources().clone();
        for (account, source) in &sources {
            let sink = Sink {
                account: account.clone(),
                shared: hub.shared.clone(),
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

fn no_account(account: &AccountId) -> CodedError {
    CodedError::new(ErrorCode::Unsupported, format!("no account `{account}`"))
}

/// A backoff seed that differs per process and account (`RandomState` is randomly keyed).
fn seed(account: &AccountId) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(account)
}

async fn timer_task(shared: Arc<Shared>) {
    loop {
        let deadline = shared.lock().tracker.poll_timeout();
        match deadline {
            None => shared.timer.notified().await,
            Some(d) => {
                let wait = d.saturating_since(now());
                tokio::select! {
                    () = tokio::time::sleep(wait) => shared.handle_timeout(),
                    () = shared.timer.notified() => {}
                }
            }
        }
    }
}

/// Runs the sources and serves their events. Dropping it stops every source.
pub struct Hub {
    pub(crate) shared: Arc<Shared>,
    _tasks: JoinSet<()>,
}

impl Drop for Hub {
    fn drop(&mut self) {
        // The tasks are aborted with the join set; the sources go now, with any sink they
        // keep, so that the broadcast closes and every subscription ends.
        let sources = std::mem::take(&mut *self.shared.sources());
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
        self.shared
            .sources()
            .iter()
            .map(|(a, _)| a.clone())
            .collect()
    }

    /// The source kind of an account.
    pub fn source_kind(&self, account: &AccountId) -> Option<SourceKind> {
        self.shared.source(account).map(|s| s.kind())
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
    pub fn snapshot_version(&self, account: &AccountId) -> Option<u64> {
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
        self.shared.set_status(account, status).await
    }

    /// Subscribes to every account: snapshots first, then changes.
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

/// A subscriber's stream: snapshots first, then changes in `seq` order; a fresh snapshot with
/// `resync: true` after falling behind. Backed by the hub's bounded ring: it holds at most a
/// handful of pending snapshots of its own.
pub struct Subscription {
    /// Weak, so that dropping the hub closes the broadcast and ends the stream.
    shared: Weak<Shared>,
    rx: broadcast::Receiver<Arc<Event>>,
    accounts: Option<HashSet<AccountId>>,
    pending: VecDeque<Arc<Event>>,
    /// Events up to this seq are already folded into delivered snapshots.
    skip_until: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("accounts", &self.accounts)
            .field("skip_until", &self.skip_until)
            .finish()
    }
}

impl Subscription {
    fn wants(&self, account: &AccountId) -> bool {
        self.accounts.as_ref().is_none_or(|a| a.contains(account))
    }

    fn push_snapshots(&mut self, state: &State, resync: bool) {
        let now = now();
        self.skip_until = state.tracker.last_seq();
        let mut snaps: Vec<Event> = state
            .tracker
            .snapshots(now)
            .into_iter()
            .filter(|e| self.wants(&e.account))
            .collect();
        snaps.sort_by_key(|e| e.seq);
        for mut e in snaps {
            if let EventKind::Snapshot { resync: r, .. } = &mut e.kind {
                *r = resync;
            }
            self.pending.push_back(Arc::new(e));
        }
    }

    fn resync(&mut self) {
        // Drop everything queued for us, then snapshot under the publishing lock: every event
        // up to `last_seq` is in the snapshot, every later one is still in the ring.
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        shared.resyncs.fetch_add(1, Ordering::Relaxed);
        let state = shared.lock();
        self.rx = shared.tx.subscribe();
        self.pending.clear();
        self.push_snapshots(&state, true);
    }

    /// The next event; `None` once the hub is gone.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            match self.rx.recv().await {
                Ok(e) => {
                    if e.seq > self.skip_until && self.wants(&e.account) {
                        return Some(e);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => self.resync(),
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event and every other one published with it: the rest of the observation
    /// batch it came from (a source's `observe_all`) and any already waiting. For consumers
    /// that derive one state from several accounts (a person): acting after each whole batch,
    /// they never see half of one. `None` once the hub is gone.
    pub async fn recv_batch(&mut self) -> Option<Vec<Arc<Event>>> {
        let first = self.recv().await?;
        // A batch is published under the hub's lock: once the lock is free, all of the batch
        // is in the ring and `try_recv` reaches it.
        if let Some(shared) = self.shared.upgrade() {
            drop(shared.lock());
        }
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match self.try_recv() {
                Some(e) => batch.push(e),
                None => break,
            }
        }
        Some(batch)
    }

    /// The next event if one is ready now.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            match self.rx.try_recv() {
                Ok(e) => {
                    if e.seq > self.skip_until && self.wants(&e.account) {
                        return Some(e);
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => self.resync(),
                Err(_) => return None,
            }
        }
    }

    /// This subscription as a `Stream`.
    pub fn into_stream(self) -> impl futures_util::Stream<Item = Arc<Event>> + Send {
        futures_util::stream::unfold(
            self,
            |mut sub| async move { sub.recv().await.map(|e| (e, sub)) },
        )
    }
}
