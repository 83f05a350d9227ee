//! Batch hooks, mirrors and takeovers: a hub's batches, renumbered and published into a
//! mirror hub, reach the mirror's subscribers exactly; resume works by the mirror's seqs; a
//! gap is followed by resync snapshots; a taken-over account starts from the state it had.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use imstatus_core::{
    AccountId, Availability, ErrorCode, Event, EventKind, Observation, PartId, Session, Snapshot,
    SourceKind, Status, Timestamp,
};
use imstatus_hub::testing::{scripted, Script};
use imstatus_hub::{BatchHook, Hub, Mirror, MirrorBatch, MirrorError, Subscription, Takeover};

const LIMIT: Duration = Duration::from_secs(10);

fn alice() -> AccountId {
    AccountId::new("alice")
}

fn kind() -> SourceKind {
    SourceKind::new_static("test")
}

/// One batch as the hook saw it: its events and the account's snapshot right after them.
type Seen = Arc<Mutex<Vec<(Vec<Event>, Snapshot)>>>;

fn hook(seen: &Seen) -> BatchHook {
    let seen = seen.clone();
    Arc::new(move |events, tracker| {
        let snap = tracker
            .snapshot(&events[0].account, Timestamp::from_millis(0))
            .and_then(|e| e.snapshot().cloned())
            .expect("the account's snapshot");
        let events = events.iter().map(|e| (**e).clone()).collect();
        seen.lock().expect("lock").push((events, snap));
    })
}

fn presence(show: Availability, n: usize) -> Observation {
    Observation::Presence {
        part: PartId::new("desk"),
        status: Status::with_message(show, format!("n{n}")),
        priority: Some(1),
    }
}

async fn next(sub: &mut Subscription) -> Arc<Event> {
    tokio::time::timeout(LIMIT, sub.recv())
        .await
        .expect("an event within the limit")
        .expect("hub alive")
}

fn mirror_hub() -> (Hub, Mirror) {
    let (source, _script) = scripted(kind(), vec![]);
    Hub::builder()
        .with_history(64)
        .with_source(alice(), source)
        .start_mirror()
}

/// The batch of message `msg` of a stream: seq = msg × 1024 + index.
fn numbered(msg: u64, events: &[Event], snapshot: &Snapshot) -> MirrorBatch {
    let events: Vec<Event> = events
        .iter()
        .enumerate()
        .map(|(i, e)| Event {
            seq: msg * 1024 + i as u64,
            ..e.clone()
        })
        .collect();
    MirrorBatch {
        account: alice(),
        source: kind(),
        seq: events.last().map_or(msg * 1024, |e| e.seq),
        time: events.last().map_or(Timestamp::from_millis(0), |e| e.time),
        events,
        snapshot: snapshot.clone(),
        source_down: None,
        resync: false,
    }
}

async fn source_hub(seen: &Seen) -> (Hub, Script) {
    let (source, script) = scripted(kind(), vec![]);
    let hub = Hub::builder()
        .with_batch_hook(hook(seen))
        .with_source(alice(), source)
        .start();
    (hub, script)
}

async fn batches(seen: &Seen, n: usize) -> Vec<(Vec<Event>, Snapshot)> {
    tokio::time::timeout(LIMIT, async {
        loop {
            {
                let got = seen.lock().expect("lock");
                if got.len() >= n {
                    return got.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the batches within the limit")
}

#[tokio::test]
async fn the_hook_sees_each_batch_whole_with_the_snapshot_after_it() {
    let seen: Seen = Arc::default();
    let (_hub, script) = source_hub(&seen).await;
    script.send([
        Observation::ClientAppeared,
        presence(Availability::Away, 1),
        Observation::Synced,
    ]);
    script.send([Observation::ClientVanished]);
    let got = batches(&seen, 2).await;
    let names =
        |b: &(Vec<Event>, Snapshot)| -> Vec<&str> { b.0.iter().map(|e| e.kind.name()).collect() };
    assert_eq!(
        names(&got[0]),
        [
            "client_started",
            "signed_in",
            "status_changed",
            "resource_changed"
        ]
    );
    // Rule 3 inside one batch: signed_out before client_shutdown, never split.
    assert_eq!(
        names(&got[1]),
        [
            "signed_out",
            "status_changed",
            "resource_changed",
            "client_shutdown"
        ]
    );
    // The snapshot is the fold of every event up to the batch's end.
    let mut fold = Snapshot::unknown();
    for (events, snapshot) in &got {
        for e in events {
            fold.apply(&e.kind, e.time);
        }
        assert_eq!(&fold, snapshot);
    }
}

#[tokio::test]
async fn a_mirror_serves_the_batches_renumbered_with_resume_and_resync() {
    let seen: Seen = Arc::default();
    let (source, script) = source_hub(&seen).await;
    let (mirror_hub, mirror) = mirror_hub();
    let mut live = mirror_hub.subscribe();
    let first = next(&mut live).await;
    assert_eq!(first.seq, 0);
    assert_eq!(first.snapshot().map(|s| s.session), Some(Session::Unknown));

    script.send([
        Observation::ClientAppeared,
        presence(Availability::Away, 1),
        Observation::Synced,
    ]);
    script.send([presence(Availability::Busy, 2)]);
    script.send([presence(Availability::Available, 3)]);
    let got = batches(&seen, 3).await;
    for (i, (events, snapshot)) in got.iter().enumerate() {
        mirror
            .publish(numbered(i as u64 + 1, events, snapshot))
            .expect("published");
    }
    let want: Vec<(u64, EventKind)> = got
        .iter()
        .enumerate()
        .flat_map(|(m, (events, _))| {
            events
                .iter()
                .enumerate()
                .map(move |(i, e)| ((m as u64 + 1) * 1024 + i as u64, e.kind.clone()))
        })
        .collect();
    let mut live_got = Vec::new();
    while live_got.len() < want.len() {
        let e = next(&mut live).await;
        live_got.push((e.seq, e.kind.clone()));
    }
    assert_eq!(live_got, want);
    // The mirror's state is the source's, with the mirror's seq.
    let snap = mirror_hub.snapshot(&alice()).expect("snapshot");
    assert_eq!(snap.seq, want.last().expect("events").0);
    assert_eq!(
        snap.snapshot(),
        source.snapshot(&alice()).as_ref().and_then(Event::snapshot)
    );
    // Resume after the first batch: exactly the later events.
    let after = want[3].0;
    let mut resumed = mirror_hub.resume(None, Some(after));
    let mut replay = Vec::new();
    while let Some(e) = resumed.try_recv() {
        replay.push((e.seq, e.kind.clone()));
    }
    assert_eq!(replay, want[4..].to_vec());
    // Replaying a batch is refused, not published twice.
    assert_eq!(
        mirror.publish(numbered(3, &got[2].0, &got[2].1)),
        Err(MirrorError::Stale {
            seq: 3 * 1024 + got[2].0.len() as u64 - 1,
            last: 3 * 1024 + got[2].0.len() as u64 - 1
        })
    );

    // A gap: resume from before it resyncs, and the next batch is a resync snapshot.
    mirror.gap();
    let mut old = mirror_hub.resume(None, Some(after));
    let e = old.try_recv().expect("a snapshot");
    assert!(
        matches!(e.kind, EventKind::Snapshot { resync: true, .. }),
        "{e:?}"
    );
    script.send([presence(Availability::Away, 4)]);
    let got = batches(&seen, 4).await;
    mirror
        .publish(numbered(9, &got[3].0, &got[3].1))
        .expect("published");
    let e = next(&mut live).await;
    assert_eq!(e.seq, 9 * 1024 + got[3].0.len() as u64 - 1);
    match &e.kind {
        EventKind::Snapshot { snapshot, resync } => {
            assert!(resync);
            assert_eq!(**snapshot, got[3].1);
        }
        other => panic!("{other:?}"),
    }
    // Then events again.
    script.send([presence(Availability::Busy, 5)]);
    let got = batches(&seen, 5).await;
    mirror
        .publish(numbered(10, &got[4].0, &got[4].1))
        .expect("published");
    let e = next(&mut live).await;
    assert_eq!(
        (e.seq, e.kind.clone()),
        (10 * 1024, got[4].0[0].kind.clone())
    );
    assert_eq!(
        mirror.publish(MirrorBatch {
            account: AccountId::new("nobody"),
            ..numbered(11, &[], &got[4].1)
        }),
        Err(MirrorError::UnknownAccount(AccountId::new("nobody")))
    );
}

#[tokio::test]
async fn a_taken_over_account_is_unknown_until_synced_then_only_differences() {
    // The state another process published last: signed in, away "n1".
    let seen: Seen = Arc::default();
    let (_before, script) = source_hub(&seen).await;
    script.send([
        Observation::ClientAppeared,
        presence(Availability::Away, 1),
        Observation::Synced,
    ]);
    let last = batches(&seen, 1).await.remove(0).1;

    let seen: Seen = Arc::default();
    let (source, script) = scripted(kind(), vec![]);
    let hub = Hub::builder()
        .with_batch_hook(hook(&seen))
        .with_source(alice(), source)
        .start_restored(vec![Takeover {
            account: alice(),
            snapshot: last.clone(),
            seq: 7,
            time: Timestamp::from_millis(0),
            then: vec![Observation::SourceDown(
                ErrorCode::Disconnected,
                "taking over".into(),
            )],
        }]);
    let first = batches(&seen, 1).await.remove(0);
    assert_eq!(
        first.0.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(),
        vec![EventKind::SourceError {
            code: ErrorCode::Disconnected,
            detail: "taking over".into(),
            session_unknown: true
        }]
    );
    assert_eq!(first.1.session, Session::Unknown);
    assert_eq!(first.1.resources, last.resources);
    // The new source sees the same and a new status: only the status differs.
    script.send([
        Observation::ClientAppeared,
        presence(Availability::Busy, 2),
        Observation::Synced,
    ]);
    let second = batches(&seen, 2).await.remove(1);
    assert_eq!(
        second.0.iter().map(|e| e.kind.name()).collect::<Vec<_>>(),
        ["signed_in", "status_changed", "resource_changed"]
    );
    assert_eq!(
        hub.snapshot(&alice()).and_then(|e| e.snapshot().cloned()),
        Some(second.1)
    );
}
