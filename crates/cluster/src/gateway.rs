//! The gateway role's feeder: the stream, read by an ordered consumer, into a mirror hub.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures_util::StreamExt;
use imstatus_core::{
    mistatus, AccountId, CodedError, ErrorCode, Event, EventKind, Session, Snapshot, SourceKind,
    Status, Timestamp,
};
use imstatus_hub::{BoxFuture, Mirror, MirrorBatch, MirrorError, Sink, Source};

use crate::{shard_of, window, Batch, Cluster, GatewayMetrics};

/// Events of one message get seqs `stream sequence × SEQ_STRIDE + i`: the same on every
/// gateway replica, strictly increasing along the stream. A message with more events is shown
/// as a resync snapshot.
const SEQ_STRIDE: u64 = 1024;

/// How often a gateway checks that its consumer is not stuck: when the stream holds messages
/// after the last one applied and none came for a whole period, the consumer is recreated.
/// (async-nats notices a consumer lost with its server only after two missed 15 s idle
/// heartbeats; a gateway would show nothing new for up to a minute.)
const STALL_CHECK: Duration = Duration::from_secs(1);

/// Feeds `mirror` from the stream until `stop`: first each account's last message before the
/// stream's last [`Mirror::history_capacity`] messages (shown as a resync snapshot), then
/// every message from there on as events — so a client resuming by `Last-Event-ID` from
/// within those messages gets exactly the events after its id, on a gateway that started
/// after them (see the `window` module). A message whose `prev` is not the
/// last one this gateway applied for its account (it missed some: the consumer was
/// recreated, the stream dropped old messages) or that says `lost` is shown as a resync
/// snapshot, never as events folded onto a state that missed some. Messages of accounts the
/// mirror does not have, undecodable ones and ones on another account's subject are skipped
/// with a warning. The consumer is recreated after an error, from the next stream sequence.
/// Every lease/3 it reads the leases of the accounts' shards, and shows an account no watcher
/// took for a whole lease as unknown, with a `source_error` saying so. `metrics` gets the
/// stream position and the leases as it goes.
pub async fn run_gateway(
    cluster: Cluster,
    mirror: Mirror,
    metrics: GatewayMetrics,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    // One entry per account the mirror has (unknown accounts are refused before insert).
    let mut applied: HashMap<AccountId, u64> = HashMap::new();
    let accounts = mirror.accounts();
    let mut owners = Owners::new(&accounts, cluster.config().shards, metrics.clone());
    let mut check = tokio::time::interval(cluster.config().lease / 3);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stall = tokio::time::interval(STALL_CHECK);
    stall.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut delay = Duration::from_millis(100);
    let window = u64::try_from(mirror.history_capacity()).unwrap_or(u64::MAX);
    let from = loop {
        let started = tokio::select! {
            () = &mut stop => return,
            s = window::start(&cluster, &accounts, window) => s,
        };
        match started {
            Ok((bases, from)) => {
                for b in bases {
                    match apply(
                        &cluster,
                        &mirror,
                        &mut applied,
                        b.seq,
                        &b.subject,
                        &b.payload,
                    ) {
                        Err(()) => return,
                        Ok(Some(shown)) => owners.shown(shown),
                        Ok(None) => {}
                    }
                }
                metrics.applied(from.saturating_sub(1));
                break from;
            }
            Err(e) => {
                tracing::warn!("{e}; retrying in {delay:?}");
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    let mut deliver = DeliverPolicy::ByStartSequence {
        start_sequence: from,
    };
    loop {
        let consumer = cluster
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: format!("{}.ev.>", cluster.config().name),
                deliver_policy: deliver,
                ..Default::default()
            })
            .await;
        let messages = match consumer {
            Ok(c) => c.messages().await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let mut messages = match messages {
            Ok(m) => {
                delay = Duration::from_millis(100);
                m
            }
            Err(e) => {
                tracing::warn!("reading the stream: {e}; retrying in {delay:?}");
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let mut last_stream = None;
        // The last stream sequence applied when the stall check last looked.
        let mut seen_at_check = None;
        loop {
            let next = tokio::select! {
                () = &mut stop => return,
                _ = check.tick() => {
                    owners.check(&cluster, &mirror, &mut applied).await;
                    continue;
                }
                _ = stall.tick() => {
                    let position = metrics.applied_sequence();
                    if seen_at_check.replace(position) == Some(position)
                        && stream_is_ahead(&cluster, position).await
                    {
                        tracing::warn!(
                            applied = position,
                            "the stream has newer messages and none came for {STALL_CHECK:?}; \
                             recreating the consumer"
                        );
                        break;
                    }
                    continue;
                }
                m = messages.next() => m,
            };
            match next {
                Some(Ok(m)) => {
                    let Ok(info) = m.info() else { continue };
                    let seq = info.stream_sequence;
                    last_stream = Some(seq);
                    metrics.applied(seq);
                    let applied_now =
                        apply(&cluster, &mirror, &mut applied, seq, &m.subject, &m.payload);
                    match applied_now {
                        Err(()) => return,
                        Ok(Some(shown)) => owners.shown(shown),
                        Ok(None) => {}
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!("reading the stream: {e}; recreating the consumer");
                    break;
                }
                None => break,
            }
        }
        if let Some(seq) = last_stream {
            deliver = DeliverPolicy::ByStartSequence {
                start_sequence: seq + 1,
            };
        }
    }
}

/// Whether the stream holds a message after `position` (false when that cannot be read now).
async fn stream_is_ahead(cluster: &Cluster, position: u64) -> bool {
    match tokio::time::timeout(STALL_CHECK, cluster.stream.get_info()).await {
        Ok(Ok(info)) => info.state.last_sequence > position,
        Ok(Err(e)) => {
            tracing::debug!("reading the stream's state: {e}");
            false
        }
        Err(_) => false,
    }
}

/// Applies one message: what the mirror now shows of its account, `None` when skipped, `Err`
/// when the mirror is gone.
fn apply(
    cluster: &Cluster,
    mirror: &Mirror,
    applied: &mut HashMap<AccountId, u64>,
    stream_seq: u64,
    subject: &str,
    payload: &[u8],
) -> Result<Option<Shown>, ()> {
    let batch = match Batch::decode(payload) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(stream_seq, "skipping an undecodable batch: {e}");
            return Ok(None);
        }
    };
    if cluster.subject(&batch.account) != subject {
        tracing::warn!(stream_seq, "skipping a batch on another account's subject");
        return Ok(None);
    }
    let continues = match applied.get(&batch.account) {
        Some(&last) => last == batch.prev,
        None => batch.prev == 0,
    };
    let n = batch.events.len() as u64;
    let resync = !continues || batch.lost || n >= SEQ_STRIDE || n == 0;
    if resync {
        tracing::debug!(
            stream_seq,
            prev = batch.prev,
            applied = applied.get(&batch.account).copied(),
            lost = batch.lost,
            events = n,
            "showing a batch as a resync snapshot"
        );
    }
    let base = stream_seq.saturating_mul(SEQ_STRIDE);
    let events: Vec<Event> = batch
        .events
        .into_iter()
        .zip(0..)
        .map(|(e, i)| Event { seq: base + i, ..e })
        .collect();
    let account = batch.account.clone();
    let shown = Shown {
        account: batch.account.clone(),
        source: batch.source.clone(),
        snapshot: batch.snapshot.clone(),
    };
    let result = mirror.publish(MirrorBatch {
        account: batch.account,
        source: batch.source,
        seq: base + n.saturating_sub(1).min(SEQ_STRIDE - 1),
        time: batch.time,
        events: if resync { Vec::new() } else { events },
        snapshot: batch.snapshot,
        source_down: batch.source_down,
        resync,
    });
    match result {
        Ok(()) => {
            applied.insert(account, stream_seq);
            Ok(Some(shown))
        }
        Err(MirrorError::Closed) => Err(()),
        Err(MirrorError::UnknownAccount(a)) => {
            tracing::debug!("skipping a batch of `{a}`, not in this gateway's config");
            Ok(None)
        }
        Err(e) => {
            tracing::debug!(stream_seq, "skipping: {e}");
            Ok(None)
        }
    }
}

/// The state the mirror shows of one account, as the last applied message left it.
struct Shown {
    account: AccountId,
    source: SourceKind,
    snapshot: Snapshot,
}

/// The detail of the `source_error` shown for an account no watcher owns.
const UNOWNED: &str =
    "no watcher owns this account now (its shard's lease is free): this is its last published state";

/// Which accounts' shards are owned: an account whose shard stayed without a lease for a whole
/// lease (no watcher took it over: all stopped, or none has it in its config) is shown with a
/// `source_error` `server_unreachable` and its session `unknown`, instead of its last state as
/// if it were still current. (A takeover, which comes within about a third of a lease after
/// the old lease ends, is not marked: the new owner reports its own `source_error`.) The next
/// message of the account is then shown as a resync snapshot.
struct Owners {
    /// The shards of the gateway's accounts.
    shards: BTreeSet<u32>,
    /// Who held each shard when last seen held.
    holders: HashMap<u32, String>,
    metrics: GatewayMetrics,
    /// Every account with a message, and what it shows.
    shown: HashMap<AccountId, Shown>,
    /// Shards seen without a lease: since when, and the lease key's revision then (a new
    /// revision at the next look means someone held it in between).
    free_since: HashMap<u32, (Option<u64>, Instant)>,
    /// Accounts marked unowned (until their next message).
    marked: HashSet<AccountId>,
}

impl Owners {
    fn new(accounts: &[AccountId], shards: u32, metrics: GatewayMetrics) -> Owners {
        Owners {
            shards: accounts.iter().map(|a| shard_of(a, shards)).collect(),
            holders: HashMap::new(),
            metrics,
            shown: HashMap::new(),
            free_since: HashMap::new(),
            marked: HashSet::new(),
        }
    }

    fn shown(&mut self, shown: Shown) {
        if self.marked.remove(&shown.account) {
            self.metrics.unowned_accounts(self.marked.len());
        }
        self.shown.insert(shown.account.clone(), shown);
    }

    async fn check(
        &mut self,
        cluster: &Cluster,
        mirror: &Mirror,
        applied: &mut HashMap<AccountId, u64>,
    ) {
        match cluster.stream.get_info().await {
            Ok(info) => self.metrics.stream_last(info.state.last_sequence),
            Err(e) => tracing::debug!("reading the stream's state: {e}"),
        }
        let now = Instant::now();
        let mut unowned = BTreeSet::new();
        let mut leases = BTreeMap::new();
        for &shard in &self.shards {
            match cluster.lease_of(shard).await {
                Ok((Some(holder), _)) => {
                    self.free_since.remove(&shard);
                    *leases.entry(Some(holder.clone())).or_insert(0) += 1;
                    let before = self.holders.insert(shard, holder.clone());
                    if before.is_some_and(|b| b != holder) {
                        self.metrics.takeover();
                    }
                }
                Ok((None, revision)) => {
                    *leases.entry(None).or_insert(0) += 1;
                    let free = self.free_since.entry(shard).or_insert((revision, now));
                    if free.0 != revision {
                        *free = (revision, now);
                    }
                    if now.duration_since(free.1) >= cluster.config().lease {
                        unowned.insert(shard);
                    }
                }
                // Cannot tell: leave the account as it is.
                Err(e) => tracing::debug!(shard, "reading the lease: {e}"),
            }
        }
        self.metrics.leases(leases);
        for shown in self.shown.values() {
            if self.marked.contains(&shown.account)
                || !unowned.contains(&shard_of(&shown.account, cluster.config().shards))
            {
                continue;
            }
            // A seq above the last one shown, still below the next stream message's first.
            let last = mirror.last_seq();
            if last % SEQ_STRIDE == SEQ_STRIDE - 1 {
                continue;
            }
            let seq = last + 1;
            let time = Timestamp::from_system_time(SystemTime::now());
            let mut snapshot = shown.snapshot.clone();
            snapshot.session = Session::Unknown;
            snapshot.mistatus = mistatus(Session::Unknown, snapshot.availability);
            let event = Event {
                seq,
                time,
                account: shown.account.clone(),
                source: shown.source.clone(),
                kind: EventKind::SourceError {
                    code: ErrorCode::ServerUnreachable,
                    detail: UNOWNED.to_owned(),
                    session_unknown: true,
                },
            };
            let published = mirror.publish(MirrorBatch {
                account: shown.account.clone(),
                source: shown.source.clone(),
                events: vec![event],
                snapshot,
                seq,
                time,
                source_down: Some((ErrorCode::ServerUnreachable, UNOWNED.to_owned())),
                resync: false,
            });
            match published {
                Ok(()) => {
                    tracing::info!(account = %shown.account, "no watcher owns it: shown as unknown");
                    self.marked.insert(shown.account.clone());
                    // Its next message does not continue what this gateway now shows.
                    applied.remove(&shown.account);
                }
                Err(e) => tracing::debug!(account = %shown.account, "marking unowned: {e}"),
            }
        }
        self.metrics.unowned_accounts(self.marked.len());
    }
}

/// The gateway's stand-in for an account's source: it observes nothing (the state comes from
/// the stream) and forwards `set_status` to the watcher that owns the account
/// ([`Cluster::set_status`]).
#[derive(Debug)]
pub struct RemoteSource {
    cluster: Cluster,
    account: AccountId,
    kind: SourceKind,
}

impl RemoteSource {
    /// A stand-in for `account`, a source of `kind`, whose writes go through `cluster`.
    pub fn shared(cluster: Cluster, account: AccountId, kind: SourceKind) -> Arc<dyn Source> {
        Arc::new(RemoteSource {
            cluster,
            account,
            kind,
        })
    }
}

impl Source for RemoteSource {
    fn kind(&self) -> SourceKind {
        self.kind.clone()
    }

    fn run(self: Arc<Self>, _sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }

    fn set_status(&self, status: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        Box::pin(self.cluster.set_status(&self.account, status))
    }
}
