//! Where a gateway starts reading the stream: the last `window` messages are read as events,
//! so that a client resuming by `Last-Event-ID` on a gateway that started after those events
//! (a restart, a new replica) gets exactly the events after its id, not a resync.
//!
//! Each account's state before the window is its last message before the window (its
//! "base", shown as a resync snapshot); the live read then starts at the window, and each
//! account's first message there continues its base (its `prev` is the base's sequence), so
//! its events are shown as events. Every read goes to the stream's leader, so no lagging
//! replica can give an older base than the stream holds.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::message::StreamMessage;
use async_nats::jetstream::stream::{LastRawMessageErrorKind, RawMessageError};
use futures_util::{StreamExt, TryStreamExt};
use imstatus_core::AccountId;

use crate::{Batch, Cluster};

/// How many bases are read at once.
const CONCURRENT_READS: usize = 32;
/// How many `prev` links are followed back from an account's last message to the window's
/// start (the account wrote after the window was fixed); beyond that it has no base and its
/// first message is shown as a resync snapshot.
const MAX_HOPS: usize = 16;
/// How long the first pass waits for each message of the window.
const WINDOW_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One stored message.
pub(crate) struct Stored {
    pub(crate) seq: u64,
    pub(crate) subject: String,
    pub(crate) payload: bytes::Bytes,
}

/// Where to start: the bases of `accounts` in stream order, and the first sequence of the
/// window (where the live read starts). At most `window` messages are in the window.
pub(crate) async fn start(
    cluster: &Cluster,
    accounts: &[AccountId],
    window: u64,
) -> Result<(Vec<Stored>, u64), String> {
    let info = cluster
        .stream
        .get_info()
        .await
        .map_err(|e| format!("reading the stream's state: {e}"))?;
    let last = info.state.last_sequence;
    if info.state.messages == 0 {
        return Ok((Vec::new(), last + 1));
    }
    let from = (last + 1)
        .saturating_sub(window.max(1))
        .max(info.state.first_sequence)
        .max(1);
    let first_prev = first_prevs(cluster, from, last).await?;
    let subjects: Vec<(String, Option<u64>)> = accounts
        .iter()
        .map(|account| {
            let subject = cluster.subject(account);
            let prev = first_prev.get(&subject).copied();
            (subject, prev)
        })
        .collect();
    let mut bases: Vec<Stored> = futures_util::stream::iter(subjects)
        .map(|(subject, prev)| base(cluster, subject, prev, from))
        .buffer_unordered(CONCURRENT_READS)
        .try_filter_map(|b| async move { Ok(b) })
        .try_collect()
        .await?;
    bases.sort_by_key(|b| b.seq);
    Ok((bases, from))
}

/// The `prev` of each subject's first message in `from..=last`.
async fn first_prevs(
    cluster: &Cluster,
    from: u64,
    last: u64,
) -> Result<HashMap<String, u64>, String> {
    let mut messages = cluster
        .stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{}.ev.>", cluster.config().name),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| format!("reading the stream: {e}"))?
        .messages()
        .await
        .map_err(|e| format!("reading the stream: {e}"))?;
    let mut prevs = HashMap::new();
    loop {
        let m = match tokio::time::timeout(WINDOW_READ_TIMEOUT, messages.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(format!("reading the stream: {e}")),
            // Nothing more (messages of the window were deleted): what was read is the window.
            Ok(None) | Err(_) => return Ok(prevs),
        };
        let Ok(info) = m.info() else { continue };
        let (seq, pending) = (info.stream_sequence, info.pending);
        if let Ok(batch) = Batch::decode(&m.payload) {
            prevs.entry(m.subject.to_string()).or_insert(batch.prev);
        }
        if seq >= last || pending == 0 {
            return Ok(prevs);
        }
    }
}

/// The last message of `subject` before `from`: the one at `prev` when the subject has one
/// in the window, else its last message, followed back by `prev` if it was written since.
async fn base(
    cluster: &Cluster,
    subject: String,
    prev: Option<u64>,
    from: u64,
) -> Result<Option<Stored>, String> {
    let mut message = match prev {
        Some(0) => return Ok(None),
        Some(seq) => by_seq(cluster, seq).await?,
        None => last_of(cluster, &subject).await?,
    };
    for _ in 0..MAX_HOPS {
        match message {
            Some(m) if m.seq >= from => {
                let prev = Batch::decode(&m.payload).map(|b| b.prev).unwrap_or(0);
                if prev == 0 {
                    return Ok(None);
                }
                message = by_seq(cluster, prev).await?;
            }
            other => return Ok(other.filter(|m| m.subject == subject)),
        }
    }
    Ok(None)
}

async fn by_seq(cluster: &Cluster, seq: u64) -> Result<Option<Stored>, String> {
    found(cluster.stream.get_raw_message(seq).await)
        .map_err(|e| format!("reading message {seq}: {e}"))
}

async fn last_of(cluster: &Cluster, subject: &str) -> Result<Option<Stored>, String> {
    found(
        cluster
            .stream
            .get_last_raw_message_by_subject(subject)
            .await,
    )
    .map_err(|e| format!("reading the last message of {subject}: {e}"))
}

/// The message read, `None` when there is none.
fn found(read: Result<StreamMessage, RawMessageError>) -> Result<Option<Stored>, RawMessageError> {
    match read {
        Ok(m) => Ok(Some(Stored {
            seq: m.sequence,
            subject: m.subject.to_string(),
            payload: m.payload,
        })),
        Err(e) if is_not_found(e.kind()) => Ok(None),
        Err(e) => Err(e),
    }
}

/// No such message: never written, or dropped by the stream's limits.
fn is_not_found(kind: LastRawMessageErrorKind) -> bool {
    kind == LastRawMessageErrorKind::NoMessageFound
}
