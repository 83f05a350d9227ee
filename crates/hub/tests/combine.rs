//! Sources that combine other accounts of the hub: members in the snapshot, subscriptions
//! from a sink in whole batches, setting another account's status, waiting for it to settle,
//! and a hub that still stops cleanly when a source keeps its sink.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imstatus_core::{
    AccountId, Availability, CodedError, ErrorCode, Event, EventKind, Observation, PartId,
    SignOutReason, SourceKind, Status,
};
use imstatus_hub::testing::scripted;
use imstatus_hub::{BoxFuture, Hub, Sink, Source};
use tokio::sync::mpsc;

const LIMIT: Duration = Duration::from_secs(10);

fn id(s: &str) -> AccountId {
    AccountId::new(s)
}

fn kind() -> SourceKind {
    SourceKind::new_static("combined")
}

/// What the combining source saw and did.
#[derive(Debug)]
enum Seen {
    Settled,
    Batch(Vec<Arc<Event>>),
    Set(Result<(), CodedError>),
    Restored(Result<(), CodedError>),
}

/// Subscribes to its members, reports each batch it receives, and on a command sets (or
/// restores) a member's status through the sink.
struct Combiner {
    members: Vec<AccountId>,
    seen: mpsc::UnboundedSender<Seen>,
    commands: Mutex<Option<mpsc::UnboundedReceiver<(bool, AccountId, Status)>>>,
}

impl Source for Combiner {
    fn kind(&self) -> SourceKind {
        kind()
    }

    fn members(&self) -> Vec<AccountId> {
        self.members.clone()
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let mut sub = sink.subscribe_to(self.members.iter().cloned().collect());
            sink.wait_settled(&self.members).await;
            let _ = self.seen.send(Seen::Settled);
            let commands = self.commands.lock().expect("lock").take();
            let Some(mut commands) = commands else { return };
            loop {
                tokio::select! {
                    batch = sub.recv_batch() => match batch {
                        Some(b) => { let _ = self.seen.send(Seen::Batch(b)); }
                        None => return,
                    },
                    Some((restore, account, status)) = commands.recv() => {
                        let r = if restore {
                            sink.restore_status(&account, status).await
                        } else {
                            sink.set_status(&account, status).await
                        };
                        let _ = self.seen.send(if restore { Seen::Restored(r) } else { Seen::Set(r) });
                    }
                }
            }
        })
    }
}

struct World {
    hub: Hub,
    member: imstatus_hub::testing::Script,
    seen: mpsc::UnboundedReceiver<Seen>,
    commands: mpsc::UnboundedSender<(bool, AccountId, Status)>,
}

fn world(member_initial: Vec<Observation>) -> World {
    let (member, script) = scripted(SourceKind::new_static("test"), member_initial);
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (commands, rx) = mpsc::unbounded_channel();
    let combiner = Arc::new(Combiner {
        members: vec![id("alice"), id("ghost")],
        seen: seen_tx,
        commands: Mutex::new(Some(rx)),
    });
    let hub = Hub::builder()
        .with_source(id("alice"), member)
        .with_source(id("me"), combiner)
        .start();
    World {
        hub,
        member: script,
        seen,
        commands,
    }
}

impl World {
    async fn next(&mut self) -> Seen {
        tokio::time::timeout(LIMIT, self.seen.recv())
            .await
            .expect("within the limit")
            .expect("the source runs")
    }

    /// The next batch, skipping nothing.
    async fn batch(&mut self) -> Vec<Arc<Event>> {
        match self.next().await {
            Seen::Batch(b) => b,
            other => panic!("expected a batch, got {other:?}"),
        }
    }
}

fn available() -> Status {
    Status::new(Availability::Available)
}

#[tokio::test]
async fn members_are_the_snapshots_accounts_and_only_there() {
    let w = world(vec![Observation::Synced]);
    let me = w.hub.snapshot(&id("me")).expect("me");
    let snap = me.snapshot().expect("snapshot");
    assert_eq!(snap.accounts, vec![id("alice"), id("ghost")]);
    let json = serde_json::to_value(&me).expect("serialise");
    assert_eq!(json["accounts"], serde_json::json!(["alice", "ghost"]));
    let alice =
        serde_json::to_value(w.hub.snapshot(&id("alice")).expect("alice")).expect("serialise");
    assert!(alice.get("accounts").is_none(), "{alice}");
    assert!(alice.get("decided_by").is_none(), "{alice}");
}

#[tokio::test]
async fn a_source_reads_other_accounts_in_whole_batches_after_they_settle() {
    // The member has not synced: the combiner waits (an account the hub does not watch,
    // `ghost`, counts as settled).
    let mut w = world(vec![]);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), w.seen.recv())
            .await
            .is_err(),
        "nothing before the member settles"
    );
    w.member.send([Observation::Synced]);
    assert!(matches!(w.next().await, Seen::Settled));
    // The subscription's snapshot came first (it was taken before the member synced), then
    // the member's sync; the combiner may get them in one batch or two.
    let mut first = w.batch().await;
    while !first.iter().any(|e| e.kind.name() == "signed_out") {
        first.extend(w.batch().await);
    }
    assert_eq!(first[0].kind.name(), "snapshot");
    assert!(first.iter().all(|e| e.account == id("alice")));
    // One observe_all of three observations: one batch of all its events.
    w.member.send([
        Observation::presence("desk", available()),
        Observation::presence("phone", Status::with_message(Availability::Away, "x")),
        Observation::Absent(PartId::new("desk"), SignOutReason::User),
    ]);
    let batch = w.batch().await;
    let names: Vec<&str> = batch.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        names,
        [
            "signed_in",
            "status_changed",
            "resource_changed",
            "resource_changed",
            "status_changed",
            "resource_changed"
        ]
    );
    assert!(batch.windows(2).all(|p| p[0].seq < p[1].seq));
}

#[tokio::test]
async fn a_source_sets_and_restores_another_accounts_status_through_its_sink() {
    let mut w = world(vec![Observation::Synced]);
    assert!(matches!(w.next().await, Seen::Settled));
    let _ = w.batch().await;
    w.commands
        .send((false, id("alice"), Status::new(Availability::Busy)))
        .expect("send");
    // The scripted member reports what it was set to as its part `scripted`.
    let (set, batch) = match (w.next().await, w.next().await) {
        (Seen::Set(r), Seen::Batch(b)) | (Seen::Batch(b), Seen::Set(r)) => (r, b),
        other => panic!("{other:?}"),
    };
    assert_eq!(set, Ok(()));
    assert!(batch.iter().any(|e| matches!(&e.kind,
        EventKind::StatusChanged { to, .. } if to.availability == Availability::Busy)));
    // Restoring defaults to setting the previous status.
    w.commands
        .send((true, id("alice"), available()))
        .expect("send");
    let (restored, batch) = match (w.next().await, w.next().await) {
        (Seen::Restored(r), Seen::Batch(b)) | (Seen::Batch(b), Seen::Restored(r)) => (r, b),
        other => panic!("{other:?}"),
    };
    assert_eq!(restored, Ok(()));
    assert!(batch.iter().any(|e| matches!(&e.kind,
        EventKind::StatusChanged { to, .. } if *to == available())));
    // An account the hub does not watch.
    w.commands
        .send((false, id("ghost"), available()))
        .expect("send");
    match w.next().await {
        Seen::Set(Err(e)) => {
            assert_eq!(e.code, ErrorCode::Unsupported);
            assert!(e.detail.contains("no account `ghost`"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn dropping_the_hub_ends_subscriptions_even_when_a_source_keeps_its_sink() {
    // The scripted source keeps its sink (for set_status), and the hub keeps its sources.
    let (source, _script) = scripted(SourceKind::new_static("test"), vec![Observation::Synced]);
    let hub = Hub::builder().with_source(id("alice"), source).start();
    assert!(hub.wait_settled(&[id("alice")], LIMIT).await);
    hub.set_status(&id("alice"), available())
        .await
        .expect("scripted set");
    let mut sub = hub.subscribe_to(Some(HashSet::from([id("alice")])));
    while tokio::time::timeout(Duration::from_millis(100), sub.recv())
        .await
        .is_ok_and(|e| e.is_some())
    {}
    drop(hub);
    let end = tokio::time::timeout(LIMIT, async { while sub.recv().await.is_some() {} }).await;
    assert!(end.is_ok(), "the subscription ended with the hub");
}
