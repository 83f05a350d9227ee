//! Hubs whose state comes from elsewhere: a mirror that shows batches numbered by another
//! process (the cluster's gateway role), and a hub that takes accounts over from another
//! process (the cluster's watcher role).
//!
//! A mirror is an ordinary [`Hub`] (its accounts and `set_status` are those of the sources it
//! was built with, which for a gateway forward the request), except that its tracker never
//! sees an observation: a feeder publishes [`MirrorBatch`]es, each the events one observation
//! batch emitted somewhere else, already numbered, and the snapshot they lead to. Under the
//! hub's lock the snapshot replaces the account's state ([`Tracker::restore`]) and the events
//! go into the resume ring and the broadcast ring exactly as the hub's own would, so
//! subscriptions, resume by `seq`, resync after falling behind and every reader of the hub work
//! unchanged. A batch is applied whole, never half. When the feeder lost batches
//! ([`Mirror::gap`]), the resume ring is emptied (no resume can reach across the gap) and the
//! next batch of every account is published as a `snapshot` with `resync: true` instead of its
//! events, so no subscriber ever folds events onto a state that missed some.
//!
//! [`Tracker::restore`]: imstatus_core::Tracker::restore

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use imstatus_core::{
    AccountId, ErrorCode, Event, EventKind, Observation, Snapshot, SourceKind, Timestamp,
};

use crate::hub::{Hub, HubBuilder};
use crate::shared::Shared;

/// Why a batch was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MirrorError {
    /// The hub has no such account.
    #[error("unknown account `{0}`")]
    UnknownAccount(AccountId),
    /// The batch's seq is not above the last one published: it was applied already.
    #[error("seq {seq} is not above the last published seq {last}")]
    Stale {
        /// The batch's seq.
        seq: u64,
        /// The hub's last seq.
        last: u64,
    },
    /// The hub is gone.
    #[error("the hub was dropped")]
    Closed,
}

/// One batch of one account, numbered by the feeder.
#[derive(Debug, Clone, PartialEq)]
pub struct MirrorBatch {
    /// The account.
    pub account: AccountId,
    /// Its source kind.
    pub source: SourceKind,
    /// The events, in order, with strictly increasing seqs, all at most `seq`.
    pub events: Vec<Event>,
    /// The account's whole state after the events.
    pub snapshot: Snapshot,
    /// The seq of the snapshot: the seq of the last event (above every earlier batch's).
    pub seq: u64,
    /// When the batch was observed.
    pub time: Timestamp,
    /// The error keeping the account's source down, if any (`source_error` of the API).
    pub source_down: Option<(ErrorCode, String)>,
    /// The feeder lost this account's earlier events: publish a `snapshot` with
    /// `resync: true` instead of the events.
    pub resync: bool,
}

/// A feeder's handle on a mirror hub ([`HubBuilder::start_mirror`]).
pub struct Mirror {
    shared: std::sync::Weak<Shared>,
    /// Accounts whose next batch must be a resync snapshot (after a gap).
    stale: Mutex<HashSet<AccountId>>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror").finish_non_exhaustive()
    }
}

impl Mirror {
    /// Applies one batch: the snapshot becomes the account's state and the events (or a
    /// resync snapshot, see [`MirrorBatch::resync`] and [`Mirror::gap`]) go to the resume ring
    /// and to every subscriber, all under the hub's lock.
    pub fn publish(&self, batch: MirrorBatch) -> Result<(), MirrorError> {
        let shared = self.shared.upgrade().ok_or(MirrorError::Closed)?;
        let mut stale = self.stale.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = shared.lock();
        let last = state.tracker.last_seq();
        if batch.seq <= last {
            return Err(MirrorError::Stale {
                seq: batch.seq,
                last,
            });
        }
        let in_order = batch
            .events
            .iter()
            .try_fold(last, |prev, e| {
                (e.seq > prev && e.seq <= batch.seq && e.account == batch.account).then_some(e.seq)
            })
            .is_some();
        let resync = batch.resync || !in_order || stale.contains(&batch.account);
        // The account's snapshot changes: cached renderings of it (the gateway's) are stale.
        shared.bump(&batch.account);
        state
            .tracker
            .restore(
                &batch.account,
                batch.snapshot.clone(),
                batch.seq,
                batch.time,
                batch.source_down,
            )
            .map_err(|e| MirrorError::UnknownAccount(e.0))?;
        stale.remove(&batch.account);
        state.tracker.set_last_seq(batch.seq);
        let events: Vec<Event> = if resync {
            vec![Event {
                seq: batch.seq,
                time: batch.time,
                account: batch.account,
                source: batch.source,
                kind: EventKind::Snapshot {
                    snapshot: Box::new(batch.snapshot),
                    resync: true,
                },
            }]
        } else {
            batch.events
        };
        for event in events {
            let event = Arc::new(event);
            if state.history.len() >= shared.history_capacity {
                state.history.pop_front();
            }
            state.history.push_back(event.clone());
            shared
                .events
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // No receivers is fine: nobody is listening right now.
            let _ = shared.tx.send(event);
        }
        drop(state);
        shared.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// The feeder lost batches: empties the resume ring (a resume from before the gap gets
    /// snapshots) and makes every account's next batch a resync snapshot.
    pub fn gap(&self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let mut stale = self.stale.lock().unwrap_or_else(|e| e.into_inner());
        let mut state = shared.lock();
        state.history.clear();
        stale.extend(state.tracker.accounts().cloned());
    }

    /// The accounts it shows.
    pub fn accounts(&self) -> Vec<AccountId> {
        self.shared
            .upgrade()
            .map_or_else(Vec::new, |s| s.lock().tracker.accounts().cloned().collect())
    }

    /// How many events its resume ring holds ([`HubBuilder::with_history`]).
    pub fn history_capacity(&self) -> usize {
        self.shared.upgrade().map_or(0, |s| s.history_capacity)
    }

    /// The seq of the last batch published (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.shared
            .upgrade()
            .map_or(0, |s| s.lock().tracker.last_seq())
    }
}

/// An account a hub takes over: the state another process published last, and what to
/// observe right after restoring it, before the sources start.
#[derive(Debug, Clone, PartialEq)]
pub struct Takeover {
    /// The account.
    pub account: AccountId,
    /// Its last published state.
    pub snapshot: Snapshot,
    /// The seq of that state.
    pub seq: u64,
    /// When it was published.
    pub time: Timestamp,
    /// Observed right after restoring, e.g. `SourceDown(Disconnected, "taking over")`, so the
    /// session is `unknown` until the source syncs.
    pub then: Vec<Observation>,
}

impl HubBuilder {
    /// Starts a hub that shows what a feeder publishes through the returned [`Mirror`] (see
    /// the module docs). The sources it was given still answer `set_status`; they should not
    /// observe anything. Seqs are the feeder's: the hub starts at 0.
    pub fn start_mirror(self) -> (Hub, Mirror) {
        self.start_with(|hub| {
            hub.shared.lock().tracker.set_last_seq(0);
            Mirror {
                shared: Arc::downgrade(&hub.shared),
                stale: Mutex::new(HashSet::new()),
            }
        })
    }

    /// Starts the sources after restoring each taken-over account
    /// ([`Tracker::restore`](imstatus_core::Tracker::restore)) and observing its `then`: on
    /// their `Synced`, the sources' accounts emit only the real differences to the state
    /// they took over. Batch hooks see the `then` observations' events first.
    pub fn start_restored(self, takeovers: Vec<Takeover>) -> Hub {
        self.start_with(|hub| {
            for t in takeovers {
                hub.shared.bump(&t.account);
                let restored = hub
                    .shared
                    .lock()
                    .tracker
                    .restore(&t.account, t.snapshot, t.seq, t.time, None);
                if restored.is_ok() {
                    hub.shared.observe(&t.account, t.then);
                }
            }
        })
        .0
    }
}
