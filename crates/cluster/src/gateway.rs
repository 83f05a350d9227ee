//! The gateway role's feeder: the stream, read by an ordered consumer, into a mirror hub.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use futures_util::StreamExt;
use imstatus_core::{AccountId, CodedError, Event, SourceKind, Status};
use imstatus_hub::{BoxFuture, Mirror, MirrorBatch, MirrorError, Sink, Source};

use crate::{Batch, Cluster};

/// Events of one message get seqs `stream sequence × SEQ_STRIDE + i`: the same on every
/// gateway replica, strictly increasing along the stream. A message with more events is shown
/// as a resync snapshot.
const SEQ_STRIDE: u64 = 1024;

/// Feeds `mirror` from the stream until `stop`: first the last message of every account
/// (shown as a resync snapshot), then every new message. A message whose `prev` is not the
/// last one this gateway applied for its account (it missed some: the consumer was
/// recreated, the stream dropped old messages) or that says `lost` is shown as a resync
/// snapshot, never as events folded onto a state that missed some. Messages of accounts the
/// mirror does not have, undecodable ones and ones on another account's subject are skipped
/// with a warning. The consumer is recreated after an error, from the next stream sequence.
pub async fn run_gateway(cluster: Cluster, mirror: Mirror, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    // One entry per account the mirror has (unknown accounts are refused before insert).
    let mut applied: HashMap<AccountId, u64> = HashMap::new();
    let mut deliver = DeliverPolicy::LastPerSubject;
    let mut delay = Duration::from_millis(100);
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
        loop {
            let next = tokio::select! {
                () = &mut stop => return,
                m = messages.next() => m,
            };
            match next {
                Some(Ok(m)) => {
                    let Ok(info) = m.info() else { continue };
                    let seq = info.stream_sequence;
                    last_stream = Some(seq);
                    if apply(&cluster, &mirror, &mut applied, seq, &m.subject, &m.payload).is_err()
                    {
                        return;
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

/// Applies one message; `Err` when the mirror is gone.
fn apply(
    cluster: &Cluster,
    mirror: &Mirror,
    applied: &mut HashMap<AccountId, u64>,
    stream_seq: u64,
    subject: &str,
    payload: &[u8],
) -> Result<(), ()> {
    let batch = match Batch::decode(payload) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(stream_seq, "skipping an undecodable batch: {e}");
            return Ok(());
        }
    };
    if cluster.subject(&batch.account) != subject {
        tracing::warn!(stream_seq, "skipping a batch on another account's subject");
        return Ok(());
    }
    let continues = match applied.get(&batch.account) {
        Some(&last) => last == batch.prev,
        None => batch.prev == 0,
    };
    let n = batch.events.len() as u64;
    let resync = !continues || batch.lost || n >= SEQ_STRIDE || n == 0;
    let base = stream_seq.saturating_mul(SEQ_STRIDE);
    let events: Vec<Event> = batch
        .events
        .into_iter()
        .zip(0..)
        .map(|(e, i)| Event { seq: base + i, ..e })
        .collect();
    let account = batch.account.clone();
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
            Ok(())
        }
        Err(MirrorError::Closed) => Err(()),
        Err(MirrorError::UnknownAccount(a)) => {
            tracing::debug!("skipping a batch of `{a}`, not in this gateway's config");
            Ok(())
        }
        Err(e) => {
            tracing::debug!(stream_seq, "skipping: {e}");
            Ok(())
        }
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
