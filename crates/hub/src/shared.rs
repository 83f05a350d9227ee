//! What the hub, its sources' sinks and its subscribers share: the tracker and the history
//! ring under one lock, the broadcast ring, the per-account snapshot versions, the timer; and
//! the [`Subscription`] that reads them.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::SystemTime;

use imstatus_core::{AccountId, Event, EventKind, Observation, Timestamp, Tracker};
use tokio::sync::{broadcast, watch, Notify};

/// At most this many events in one [`Subscription::recv_batch`] (the rest come in the next).
pub const MAX_BATCH: usize = 4096;

pub(crate) fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

pub(crate) struct State {
    pub(crate) tracker: Tracker,
    pub(crate) history: VecDeque<Arc<Event>>,
    /// Observations handled since the heap was last trimmed (see [`TRIM_AFTER`]).
    pub(crate) since_trim: usize,
}

/// After a `Synced` that ends at least this many observations (a login that brought a big
/// roster), the hub hands the allocator's free pages back to the OS: the login's parse peak is
/// not kept for the life of the process (`imstatus_heap`; B8 in `docs/benchmarks.md`).
/// Logins are rare, so this costs nothing per event.
pub(crate) const TRIM_AFTER: usize = 1_024;

/// Called under the hub's lock with the events of one batch (one `observe_all`, or one
/// timeout) and the tracker after it; see
/// [`HubBuilder::with_batch_hook`](crate::HubBuilder::with_batch_hook).
pub type BatchHook = Arc<dyn Fn(&[Arc<Event>], &Tracker) + Send + Sync>;

/// What sinks, subscriptions and the hub share.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    pub(crate) history_capacity: usize,
    pub(crate) tx: broadcast::Sender<Arc<Event>>,
    /// Bumped after every batch of observations (wakes the timer and `wait_settled`).
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) timer: Notify,
    pub(crate) resyncs: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) hook: Option<BatchHook>,
    /// Each account's position in `versions` (fixed once the hub is built).
    pub(crate) index: HashMap<AccountId, usize>,
    /// Per account, a number bumped under the state lock before anything that may change the
    /// account's snapshot is applied (see [`Hub::snapshot_version`]); readable without the lock.
    pub(crate) versions: Box<[AtomicU64]>,
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
        let mut trim = false;
        let mut since_trim = state.since_trim;
        let observations = observations.into_iter().inspect(|o| {
            since_trim += 1;
            if matches!(o, Observation::Synced) && since_trim >= TRIM_AFTER {
                since_trim = 0;
                trim = true;
            }
        });
        if let Err(e) = state
            .tracker
            .handle_observations(now, account, observations)
        {
            tracing::warn!(%e, "observations for an account the hub does not track");
        }
        state.since_trim = since_trim;
        self.publish(&mut state);
        let after = state.tracker.poll_timeout();
        drop(state);
        if after.is_some() && after != before {
            self.timer.notify_one();
        }
        self.changed.send_modify(|n| *n += 1);
        if trim {
            let started = std::time::Instant::now();
            let returned = imstatus_heap::release_free_memory();
            tracing::debug!(%account, returned, took = ?started.elapsed(), "heap trimmed after a big login");
        }
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

pub(crate) async fn timer_task(shared: Arc<Shared>) {
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
        // Boxed, so that each item moves a pointer in and out of its future, not the whole
        // subscription.
        futures_util::stream::unfold(Box::new(self), |mut sub| async move {
            sub.recv().await.map(|e| (e, sub))
        })
    }
}
