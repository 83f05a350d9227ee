//! The watcher role: claims the shards of its accounts, runs their sources in one hub per
//! shard, and publishes every batch fenced.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use futures_util::StreamExt;
use imstatus_core::{
    AccountId, CodedError, ErrorCode, Event, Observation, Snapshot, SourceKind, Timestamp, Tracker,
};
use imstatus_hub::{Hub, Source, Takeover};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::lease::{fair_share, member_of};
use crate::{
    shard_of, Batch, Cluster, Error, Lease, Roster, SetStatus, SetStatusReply, SET_STATUS_TIMEOUT,
};

/// Batches a shard's hub may have waiting for the publisher. When full (NATS unreachable for
/// long), further batches are dropped and the account's next message is marked `lost`, so
/// gateways show a resync snapshot: the snapshot in every message is whole, only events go.
const QUEUE: usize = 1024;

/// How long a publish waits for its ack before it is sent again (an ack takes milliseconds;
/// a retry of a stored batch is a duplicate, not a second message).
const ACK_WAIT: Duration = Duration::from_secs(1);

/// The longest pause between two tries of a publish: during an election a publish fails at
/// once ("no stream found"), and the writes should resume within this of the new leader.
const MAX_PUBLISH_DELAY: Duration = Duration::from_millis(500);

/// How the watcher names itself in leases and messages.
#[derive(Debug, Clone)]
pub struct WatcherOptions {
    /// The writer id; unique per process.
    pub writer: String,
}

impl WatcherOptions {
    /// `<host>-<pid>-<start ms>`.
    pub fn new() -> Self {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".to_owned());
        let ms = Timestamp::from_system_time(SystemTime::now()).as_millis();
        WatcherOptions {
            writer: format!("{host}-{}-{ms}", std::process::id()),
        }
    }
}

impl Default for WatcherOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// Aborts the task when dropped (dropping its hub stops the shard's sources).
struct Task(JoinHandle<Result<(), Error>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Held {
    lease: Lease,
    renewed: Instant,
    task: Task,
}

/// How long a starting watcher waits after announcing itself before its first claim (at most;
/// lease/3 if shorter), so that watchers started together see each other and share the shards
/// at once instead of the first taking all and handing half over a tick later.
const SETTLE: Duration = Duration::from_secs(1);

/// Runs the watcher role until `stop`. Every lease/3 it announces itself (its member key in
/// the lease bucket, naming the shards it can run), renews the shards it holds and claims free
/// shards of its accounts up to its fair share (docs/cluster.md, "Sharing the shards"); a
/// free shard nobody claimed for a whole tick is claimed regardless, so every shard finds an
/// owner. Holding more
/// than its share (another watcher joined) it hands the excess over: stops those shards'
/// sources and releases their leases, and the others claim them within a tick. A shard whose
/// lease is lost (or not renewed for lease − lease/3, or whose writes were fenced) is dropped
/// with its sources at once. On `stop` it stops the sources, releases its leases and
/// withdraws.
pub async fn run_watcher(
    cluster: Cluster,
    accounts: Vec<(AccountId, Arc<dyn Source>)>,
    options: WatcherOptions,
    stop: impl Future<Output = ()>,
) {
    let lease = cluster.config().lease;
    let tick = lease / 3;
    let mut shards: BTreeMap<u32, Accounts> = BTreeMap::new();
    for (a, s) in accounts {
        shards
            .entry(shard_of(&a, cluster.config().shards))
            .or_default()
            .push((a, s));
    }
    let mine: Vec<u32> = shards.keys().copied().collect();
    let writer = options.writer;
    let me = member_of(&writer);
    let mut roster = Roster::default();
    let mut held: BTreeMap<u32, Held> = BTreeMap::new();
    // Free shards this watcher left to others at the last tick (it was at its share).
    let mut left: BTreeSet<u32> = BTreeSet::new();
    // Shards it took beyond its share because nobody else did: never handed over (no one
    // wanted them; handing them over would only move them back and forth) until the number of
    // watchers grows.
    let mut extra: BTreeSet<u32> = BTreeSet::new();
    let mut watchers = 0;
    tokio::pin!(stop);
    let mut settling = true;
    loop {
        if let Err(e) = cluster.announce(&writer, &mine).await {
            tracing::debug!("{e}");
        }
        match cluster.roster().await {
            Ok(r) => roster = r,
            Err(e) => tracing::debug!("{e}"),
        }
        roster
            .members
            .insert(me.clone(), mine.iter().copied().collect());
        if settling {
            settling = false;
            tokio::select! {
                () = &mut stop => break,
                () = tokio::time::sleep(SETTLE.min(tick)) => {}
            }
            continue;
        }
        if roster.members.len() > watchers {
            extra.clear();
        }
        watchers = roster.members.len();
        let share = fair_share(&mine, &roster.members);
        let mut skipped = BTreeSet::new();
        for (&shard, accounts) in &shards {
            if let Some(h) = held.get_mut(&shard) {
                if h.task.0.is_finished() {
                    if let Some(h) = held.remove(&shard) {
                        let mut task = h.task;
                        match (&mut task.0).await {
                            Ok(Err(e)) => tracing::warn!(shard, "shard stopped: {e}"),
                            Ok(Ok(())) => {}
                            Err(e) => tracing::warn!(shard, "shard task ended: {e}"),
                        }
                        if let Err(e) = cluster.release(&h.lease).await {
                            tracing::debug!(shard, "{e}");
                        }
                    }
                    continue;
                }
                match cluster.renew(&h.lease, &writer).await {
                    Ok(Some(l)) => {
                        h.lease = l;
                        h.renewed = Instant::now();
                    }
                    Ok(None) => {
                        tracing::warn!(
                            shard,
                            "lease lost to another watcher; stopping its sources"
                        );
                        held.remove(&shard);
                    }
                    Err(e) if h.renewed.elapsed() >= lease.saturating_sub(tick) => {
                        tracing::warn!(
                            shard,
                            "lease not renewed in time ({e}); stopping its sources"
                        );
                        held.remove(&shard);
                    }
                    Err(e) => tracing::debug!(shard, "renewing: {e}"),
                }
            } else if roster.held.contains(&shard) {
                // Someone holds it (as of this tick's listing).
            } else if held.len() < share || left.contains(&shard) {
                match cluster.claim(shard, &writer).await {
                    Ok(Some(l)) => {
                        tracing::info!(
                            shard,
                            "lease taken; starting {} account(s)",
                            accounts.len()
                        );
                        if held.len() >= share {
                            extra.insert(shard);
                        }
                        let task = tokio::spawn(run_shard(
                            cluster.clone(),
                            writer.clone(),
                            shard,
                            accounts.clone(),
                        ));
                        held.insert(
                            shard,
                            Held {
                                lease: l,
                                renewed: Instant::now(),
                                task: Task(task),
                            },
                        );
                    }
                    Ok(None) => {}
                    Err(e) => tracing::debug!(shard, "claiming: {e}"),
                }
            } else {
                skipped.insert(shard);
            }
        }
        left = skipped;
        extra.retain(|s| held.contains_key(s));
        hand_over(&cluster, &mut held, share, &roster, &extra).await;
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(tick) => {}
        }
    }
    for (shard, h) in std::mem::take(&mut held) {
        drop(h.task);
        if let Err(e) = cluster.release(&h.lease).await {
            tracing::warn!(shard, "{e}");
        }
    }
    if let Err(e) = cluster.withdraw(&writer).await {
        tracing::debug!("{e}");
    }
}

/// Releases the shards held beyond `share` that another live watcher can run (not those in
/// `extra`), highest first: their sources stop now, and the other watchers claim them at their
/// next tick (each account is then taken over as after any owner change).
async fn hand_over(
    cluster: &Cluster,
    held: &mut BTreeMap<u32, Held>,
    share: usize,
    roster: &Roster,
    extra: &BTreeSet<u32>,
) {
    let excess = held.len().saturating_sub(share);
    if excess == 0 {
        return;
    }
    let others = |s: &u32| roster.members.values().filter(|m| m.contains(s)).count() > 1;
    let give: Vec<u32> = held
        .keys()
        .rev()
        .filter(|s| others(s) && !extra.contains(s))
        .take(excess)
        .copied()
        .collect();
    for shard in give {
        let Some(h) = held.remove(&shard) else {
            continue;
        };
        drop(h.task);
        tracing::info!(
            shard,
            "lease handed over: {} watcher(s) share the shards, this one's share is {share}",
            roster.members.len()
        );
        if let Err(e) = cluster.release(&h.lease).await {
            tracing::debug!(shard, "{e}");
        }
    }
}

/// The accounts of one shard with their sources.
type Accounts = Vec<(AccountId, Arc<dyn Source>)>;

/// One batch of one account, from the hub's hook to the publisher.
struct Outgoing {
    account: AccountId,
    source: SourceKind,
    events: Vec<Event>,
    snapshot: Snapshot,
    time: Timestamp,
    source_down: Option<(ErrorCode, String)>,
    lost: bool,
}

/// Takes a shard's accounts over (their last published state), runs their sources, publishes
/// their batches and answers the gateways' status requests for them, until fenced or aborted
/// (aborting it ends the request subscription and the requests in flight with it).
async fn run_shard(
    cluster: Cluster,
    writer: String,
    shard: u32,
    accounts: Accounts,
) -> Result<(), Error> {
    let mut prev: HashMap<AccountId, u64> = HashMap::new();
    let mut takeovers = Vec::new();
    for (a, _) in &accounts {
        if let Some((batch, seq)) = cluster.last_batch(a).await? {
            prev.insert(a.clone(), seq);
            takeovers.push(Takeover {
                account: a.clone(),
                seq: batch.events.last().map_or(0, |e| e.seq),
                snapshot: batch.snapshot,
                time: batch.time,
                then: vec![Observation::SourceDown(
                    ErrorCode::Disconnected,
                    "taking over from another watcher".into(),
                )],
            });
        }
    }
    let (tx, mut rx) = mpsc::channel::<Outgoing>(QUEUE);
    let dropped: Arc<Mutex<HashSet<AccountId>>> = Arc::default();
    let hook = {
        let dropped = dropped.clone();
        Arc::new(move |events: &[Arc<Event>], tracker: &Tracker| {
            // A timeout batch can cover several accounts: one message per account.
            let mut order: Vec<AccountId> = Vec::new();
            for e in events {
                if !order.contains(&e.account) {
                    order.push(e.account.clone());
                }
            }
            let now = Timestamp::from_system_time(SystemTime::now());
            let mut dropped = dropped.lock().unwrap_or_else(|e| e.into_inner());
            for account in order {
                let Some(snapshot) = tracker
                    .snapshot(&account, now)
                    .and_then(|e| e.snapshot().cloned())
                else {
                    continue;
                };
                let mine: Vec<Event> = events
                    .iter()
                    .filter(|e| e.account == account)
                    .map(|e| (**e).clone())
                    .collect();
                let Some(last) = mine.last() else { continue };
                let out = Outgoing {
                    account: account.clone(),
                    source: last.source.clone(),
                    time: last.time,
                    source_down: tracker
                        .source_down(&account)
                        .map(|(c, d)| (c, d.to_owned())),
                    lost: dropped.contains(&account),
                    events: mine,
                    snapshot,
                };
                if tx.try_send(out).is_ok() {
                    dropped.remove(&account);
                } else {
                    dropped.insert(account);
                }
            }
        })
    };
    let mut builder = Hub::builder().with_batch_hook(hook);
    for (a, s) in accounts {
        builder = builder.with_source(a, s);
    }
    let hub = Arc::new(builder.start_restored(takeovers));
    let client = cluster.js.client();
    let mut requests = client
        .subscribe(cluster.set_subject(shard))
        .await
        .map_err(|e| Error::request("subscribing to status requests", e))?;
    let mut answering = JoinSet::new();
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(out) = out else { break };
                let id = BATCHES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                publish(&cluster, &writer, id, &mut prev, out).await?;
            }
            Some(request) = requests.next(), if answering.len() < MAX_REQUESTS => {
                answering.spawn(answer(client.clone(), hub.clone(), request));
            }
            Some(_) = answering.join_next(), if !answering.is_empty() => {}
        }
    }
    Ok(())
}

/// Numbers every batch this process publishes, over all its shards and every time it holds
/// them: with the writer id (host, pid, start time) it makes the batch's `Nats-Msg-Id`, which
/// must be unique in the stream's duplicate window — a retry of a stored batch is dropped as a
/// duplicate, and so would be another batch with the same id.
static BATCHES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

/// Status requests one shard answers at once; more wait in the subscription.
const MAX_REQUESTS: usize = 64;

/// Sets the status a gateway asked for through the account's source, and replies with the
/// source's answer. A request for an account of another shard is answered `unsupported` (the
/// hub has no such account).
async fn answer(client: async_nats::Client, hub: Arc<Hub>, request: async_nats::Message) {
    let Some(reply) = request.reply else { return };
    let result = match serde_json::from_slice::<SetStatus>(&request.payload) {
        // A second less than the gateway waits, so that a slow source's `timeout` reaches it.
        Ok(r) => match tokio::time::timeout(
            SET_STATUS_TIMEOUT.saturating_sub(Duration::from_secs(1)),
            hub.set_status(&r.account, r.status),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => Err(CodedError::new(
                ErrorCode::Timeout,
                format!("the source of `{}` did not answer in time", r.account),
            )),
        },
        Err(e) => Err(CodedError::new(
            ErrorCode::ProtocolError,
            format!("an unreadable status request: {e}"),
        )),
    };
    let body = serde_json::to_vec(&SetStatusReply::new(result)).unwrap_or_default();
    if let Err(e) = client.publish(reply, body.into()).await {
        tracing::debug!("answering a status request: {e}");
    }
}

/// Publishes one batch with the account's last sequence as the fence.
async fn publish(
    cluster: &Cluster,
    writer: &str,
    id: u64,
    prev: &mut HashMap<AccountId, u64>,
    out: Outgoing,
) -> Result<(), Error> {
    let expected = prev.get(&out.account).copied().unwrap_or(0);
    let account = out.account.clone();
    let batch = Batch {
        writer: writer.to_owned(),
        account: out.account,
        source: out.source,
        prev: expected,
        events: out.events,
        snapshot: out.snapshot,
        time: out.time,
        source_down: out.source_down,
        lost: out.lost,
    };
    let seq = cluster
        .publish_batch(&batch, &format!("{writer}-{id}"))
        .await?;
    prev.insert(account, seq);
    Ok(())
}

impl Cluster {
    /// Publishes `batch` on its account's subject, fenced: the server stores it only if the
    /// subject's last message is at stream sequence `batch.prev` (0: none), else
    /// [`Error::Fenced`]. Transient failures (an election, a reconnect) are retried with
    /// backoff for up to one lease; `id` (unique per batch) makes a retry of a publish that
    /// was stored already a duplicate, not a second message. Returns the stream sequence.
    pub async fn publish_batch(&self, batch: &Batch, id: &str) -> Result<u64, Error> {
        let subject = self.subject(&batch.account);
        let payload: bytes::Bytes = batch
            .encode()
            .map_err(|e| Error::request("encoding a batch", e))?
            .into();
        let deadline = Instant::now() + self.config().lease;
        let mut delay = Duration::from_millis(100);
        loop {
            let message = PublishMessage::build()
                .payload(payload.clone())
                .message_id(id)
                .expected_last_subject_sequence(batch.prev);
            let result = match self.js.send_publish(subject.clone(), message).await {
                // A publish in flight when the stream's leader dies gets no ack: retry it after
                // ACK_WAIT rather than the request timeout, so writes resume right after the
                // election.
                Ok(ack) => {
                    tokio::time::timeout(ACK_WAIT, std::future::IntoFuture::into_future(ack))
                        .await
                        .unwrap_or_else(|_| Err(PublishError::new(PublishErrorKind::TimedOut)))
                }
                Err(e) => Err(e),
            };
            match result {
                Ok(ack) => return Ok(ack.sequence),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                    return Err(Error::Fenced(batch.account.clone()));
                }
                Err(e) if Instant::now() >= deadline => {
                    return Err(Error::request(format!("publishing `{}`", batch.account), e));
                }
                Err(e) => {
                    tracing::debug!(account = %batch.account, "publishing, will retry: {e}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_PUBLISH_DELAY);
                }
            }
        }
    }
}
