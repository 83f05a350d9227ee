//! Against a real 3-node JetStream cluster (testkit): leases are exclusive, renewed by
//! compare-and-swap, released and expired; a stale owner's write is refused by the server; a
//! gateway's mirror shows exactly the events a watcher published, and a watcher that takes an
//! account over starts from the published state and emits only real differences; a gateway's
//! `set_status` reaches the owner's source, and says so at once when no watcher owns the account.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_cluster::{
    run_gateway, run_watcher, Batch, Cluster, Error, RemoteSource, WatcherOptions,
};
use imstatus_config::ClusterConfig;
use imstatus_core::{
    AccountId, Availability, ErrorCode, Event, EventKind, Observation, PartId, Session, Snapshot,
    SourceKind, Status, Timestamp,
};
use imstatus_hub::testing::scripted;
use imstatus_hub::{Hub, Subscription};
use imstatus_testkit::{wait_until_async, Async, NatsCluster};

/// Every async test's limit.
const LIMIT: Duration = Duration::from_secs(60);
/// The deadline of one step that waits for the cluster.
const STEP: Duration = Duration::from_secs(20);

fn config(nats: &NatsCluster, name: &str) -> ClusterConfig {
    let mut c = ClusterConfig::new(&nats.urls());
    c.name = name.to_owned();
    c.lease = Duration::from_secs(2);
    c.shards = 4;
    c
}

fn kind() -> SourceKind {
    SourceKind::new_static("test")
}

fn alice() -> AccountId {
    AccountId::new("alice@example.test")
}

fn away(n: usize) -> Observation {
    Observation::Presence {
        part: PartId::new("desk"),
        status: Status::with_message(Availability::Away, format!("n{n}")),
        priority: Some(1),
    }
}

fn batch(writer: &str, prev: u64, n: usize) -> Batch {
    Batch {
        writer: writer.into(),
        account: alice(),
        source: kind(),
        prev,
        events: Vec::new(),
        snapshot: Snapshot::unknown(),
        time: Timestamp::from_millis(n as u64),
        source_down: None,
        lost: false,
    }
}

/// A real 3-node cluster (started off the async threads) and its config named `name`.
async fn nats(name: &str) -> (NatsCluster, ClusterConfig) {
    let nats = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .expect("join")
        .expect("nats");
    let cfg = config(&nats, name);
    (nats, cfg)
}

/// A gateway: a mirror hub of alice fed from the stream, and the feeder's task.
fn gateway(c: &Cluster) -> (Hub, tokio::task::JoinHandle<()>) {
    let (hub, mirror) = Hub::builder()
        .with_source(alice(), RemoteSource::shared(c.clone(), alice(), kind()))
        .start_mirror();
    let feeder = tokio::spawn(run_gateway(c.clone(), mirror, std::future::pending()));
    (hub, feeder)
}

async fn next(sub: &mut Subscription) -> Arc<Event> {
    tokio::time::timeout(Duration::from_secs(20), sub.recv())
        .await
        .expect("an event within 20 s")
        .expect("hub alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_exclusive_renewed_by_cas_released_and_expire() {
    tokio::time::timeout(LIMIT, async {
        let (_nats, cfg) = nats("lease").await;
        let c = Cluster::connect(&cfg).await.expect("connect");
        let a = c.claim(0, "A").await.expect("claim").expect("free");
        assert_eq!(c.claim(0, "B").await.expect("claim"), None);
        assert_eq!(c.holder(0).await.expect("holder").as_deref(), Some("A"));
        let a2 = c.renew(&a, "A").await.expect("renew").expect("still mine");
        assert!(a2.revision > a.revision);
        // The old revision is stale: renewing with it fails, as it does for a watcher whose
        // lease expired and was claimed by another.
        assert_eq!(c.renew(&a, "A").await.expect("renew"), None);
        c.release(&a2).await.expect("release");
        let b = c.claim(0, "B").await.expect("claim").expect("released");
        assert_eq!(c.holder(0).await.expect("holder").as_deref(), Some("B"));
        // B stops renewing: its lease expires after the bucket's max_age (the lease).
        let start = Instant::now();
        let taken = loop {
            if let Some(l) = c.claim(0, "C").await.expect("claim") {
                break l;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2 + 3),
                "lease did not expire"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let waited = start.elapsed();
        eprintln!("lease of 2 s expired after {waited:?}");
        assert!(waited >= Duration::from_millis(1500), "{waited:?}");
        assert_eq!(c.renew(&b, "B").await.expect("renew"), None);
        assert_eq!(c.holder(0).await.expect("holder").as_deref(), Some("C"));
        assert!(taken.revision > b.revision);
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_cannot_write() {
    tokio::time::timeout(LIMIT, async {
        let (_nats, cfg) = nats("fence").await;
        let c = Cluster::connect(&cfg).await.expect("connect");
        let s1 = c
            .publish_batch(&batch("A", 0, 1), "A-1")
            .await
            .expect("first");
        // A retried publish (same id) is a duplicate, not a second message.
        assert_eq!(
            c.publish_batch(&batch("A", 0, 1), "A-1")
                .await
                .expect("dup"),
            s1
        );
        // Another writer that did not see s1 is refused.
        match c.publish_batch(&batch("B", 0, 2), "B-1").await {
            Err(Error::Fenced(a)) => assert_eq!(a, alice()),
            other => panic!("{other:?}"),
        }
        // B takes over (it read s1), writes; A, still believing s1 is last, is refused.
        let (last, seq) = c.last_batch(&alice()).await.expect("read").expect("one");
        assert_eq!((last.writer.as_str(), seq), ("A", s1));
        let s2 = c.publish_batch(&batch("B", s1, 3), "B-2").await.expect("B");
        assert!(s2 > s1);
        match c.publish_batch(&batch("A", s1, 4), "A-2").await {
            Err(Error::Fenced(a)) => assert_eq!(a, alice()),
            other => panic!("{other:?}"),
        }
        let (last, seq) = c.last_batch(&alice()).await.expect("read").expect("one");
        assert_eq!((last, seq), (batch("B", s1, 3), s2));
    })
    .await
    .expect("within the limit");
}

fn names(events: &[Arc<Event>]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_shows_the_watchers_batches_and_a_takeover_keeps_the_contract() {
    tokio::time::timeout(LIMIT, async {
        let (_nats, cfg) = nats("e2e").await;
        let c = Cluster::connect(&cfg).await.expect("connect");
        // The gateway: a mirror hub fed from the stream.
        let (gateway, feeder) = gateway(&c);
        let mut sub = gateway.subscribe();

        // Watcher A.
        let (source, script) = scripted(kind(), vec![]);
        let (stop_a, stopped_a) = tokio::sync::oneshot::channel::<()>();
        let a = tokio::spawn(run_watcher(
            c.clone(),
            vec![(alice(), source)],
            WatcherOptions { writer: "A".into() },
            async move {
                let _ = stopped_a.await;
            },
        ));
        // A subscription starts with the account's snapshot: nothing known yet.
        let first = next(&mut sub).await;
        assert_eq!(first.snapshot(), Some(&Snapshot::unknown()));
        script.send([Observation::ClientAppeared, away(1), Observation::Synced]);
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(next(&mut sub).await);
        }
        assert_eq!(
            names(&got),
            [
                "client_started",
                "signed_in",
                "status_changed",
                "resource_changed"
            ]
        );
        // Seqs are the gateway's: strictly increasing.
        assert!(got.windows(2).all(|w| w[0].seq < w[1].seq));
        let fold = |events: &[Arc<Event>], mut s: Snapshot| {
            for e in events {
                s.apply(&e.kind, e.time);
            }
            s
        };
        let state = fold(&got, Snapshot::unknown());
        assert_eq!(
            gateway
                .snapshot(&alice())
                .and_then(|e| e.snapshot().cloned()),
            Some(state.clone())
        );
        assert_eq!(state.session, Session::SignedIn);

        // A stops cleanly (releases its lease); B takes over at once.
        let _ = stop_a.send(());
        a.await.expect("watcher A");
        let (source, script) = scripted(kind(), vec![]);
        let (_stop_b, stopped_b) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let _b = tokio::spawn(run_watcher(
            c.clone(),
            vec![(alice(), source)],
            WatcherOptions { writer: "B".into() },
            async move {
                let _ = stopped_b.await;
            },
        ));
        // B restored A's state and reports it unknown until its source syncs.
        let e = next(&mut sub).await;
        eprintln!("takeover after a clean stop: {:?}", started.elapsed());
        assert_eq!(
            e.kind,
            EventKind::SourceError {
                code: ErrorCode::Disconnected,
                detail: "taking over from another watcher".into(),
                session_unknown: true
            }
        );
        // The same state, except the status message: only that difference is emitted.
        script.send([Observation::ClientAppeared, away(2), Observation::Synced]);
        let mut got = vec![e];
        for _ in 0..3 {
            got.push(next(&mut sub).await);
        }
        assert_eq!(
            names(&got),
            [
                "source_error",
                "signed_in",
                "status_changed",
                "resource_changed"
            ]
        );
        let (last, _) = c.last_batch(&alice()).await.expect("read").expect("some");
        assert_eq!(last.writer, "B");
        let want = fold(&got, state);
        assert_eq!(
            gateway
                .snapshot(&alice())
                .and_then(|e| e.snapshot().cloned()),
            Some(want.clone())
        );
        assert_eq!(last.snapshot, want);
        feeder.abort();
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_sets_the_status_through_the_owner_and_says_when_there_is_none() {
    tokio::time::timeout(LIMIT, async {
        let (_nats, cfg) = nats("set").await;
        let c = Cluster::connect(&cfg).await.expect("connect");
        let (gateway, feeder) = gateway(&c);
        let gateway = Arc::new(gateway);
        let busy = Status::with_message(Availability::Busy, "set through the gateway");

        // No watcher holds the account's shard: nobody to ask.
        let asked = Instant::now();
        let e = gateway
            .set_status(&alice(), busy.clone())
            .await
            .expect_err("no owner");
        assert_eq!(e.code, ErrorCode::ServerUnreachable, "{e}");
        assert!(
            e.detail.contains(&format!("no watcher owns `{}`", alice())),
            "{e}"
        );
        // NATS says "no responders" at once: no waiting for a timeout.
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );

        // A watcher takes the account: the request reaches its source, which sets the status;
        // the status comes back to the gateway through the stream like any other change.
        let (source, script) = scripted(kind(), vec![]);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let w = tokio::spawn(run_watcher(
            c.clone(),
            vec![(alice(), source)],
            WatcherOptions { writer: "W".into() },
            async move {
                let _ = stopped.await;
            },
        ));
        script.send([Observation::ClientAppeared, away(1), Observation::Synced]);
        wait_until_async("the owner to set the status", STEP, || {
            let (gateway, busy) = (gateway.clone(), busy.clone());
            Async(async move { gateway.set_status(&alice(), busy).await.ok() })
        })
        .await
        .expect("set through the owner");
        wait_until_async("the gateway to show the status the owner set", STEP, || {
            gateway
                .snapshot(&alice())
                .and_then(|e| e.snapshot().cloned())
                .filter(|s| {
                    s.resources.iter().any(|r| {
                        r.resource.as_str() == "scripted"
                            && r.availability == Availability::Busy
                            && r.message.as_deref() == Some("set through the gateway")
                    })
                })
        })
        .await
        .expect("the status, back through the stream");

        // The watcher stops and releases its lease: no owner again. Once nobody took the
        // account for a whole lease, the gateway shows it unknown, with the reason.
        let before = gateway
            .snapshot(&alice())
            .and_then(|e| e.snapshot().cloned())
            .expect("a snapshot");
        let _ = stop.send(());
        w.await.expect("watcher");
        let marked = Instant::now();
        wait_until_async("the gateway to mark the account unowned", STEP, || {
            let error = gateway.source_error(&alice())?;
            let snapshot = gateway.snapshot(&alice())?.snapshot()?.clone();
            (error.code == ErrorCode::ServerUnreachable && snapshot.session == Session::Unknown)
                .then_some((error, snapshot))
        })
        .await
        .map(|(error, snapshot)| {
            assert!(
                error.detail.contains("no watcher owns this account"),
                "{error}"
            );
            // The last state is kept, only the session is no longer known.
            assert_eq!(snapshot.availability, before.availability);
            assert_eq!(snapshot.resources, before.resources);
        })
        .expect("marked unowned");
        let took = marked.elapsed();
        assert!(
            took >= cfg.lease,
            "marked after {took:?}, before a whole lease"
        );
        eprintln!("marked unowned {took:?} after the release");
        let e = gateway
            .set_status(&alice(), busy)
            .await
            .expect_err("no owner after the release");
        assert_eq!(e.code, ErrorCode::ServerUnreachable, "{e}");
        feeder.abort();
    })
    .await
    .expect("within the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_last_event_id_from_one_gateway_resumes_on_another() {
    tokio::time::timeout(LIMIT, async {
        let (_nats, cfg) = nats("replicas").await;
        let c = Cluster::connect(&cfg).await.expect("connect");
        // Two replicas, both up before anything is written.
        let (one, feed_one) = gateway(&c);
        let (two, feed_two) = gateway(&c);
        let mut sub_one = one.subscribe();
        let mut sub_two = two.subscribe();
        assert!(next(&mut sub_one).await.snapshot().is_some());
        assert!(next(&mut sub_two).await.snapshot().is_some());
        let (source, script) = scripted(kind(), vec![]);
        let (_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let _w = tokio::spawn(run_watcher(
            c.clone(),
            vec![(alice(), source)],
            WatcherOptions { writer: "W".into() },
            async move {
                let _ = stopped.await;
            },
        ));
        script.send([Observation::ClientAppeared, away(1), Observation::Synced]);
        let mut first = Vec::new();
        for _ in 0..4 {
            first.push(next(&mut sub_one).await);
        }
        for _ in 0..4 {
            next(&mut sub_two).await;
        }
        script.send([away(2)]);
        script.send([away(3)]);
        let mut later = Vec::new();
        for _ in 0..4 {
            later.push(next(&mut sub_one).await);
        }
        for _ in 0..4 {
            next(&mut sub_two).await;
        }
        // Both replicas numbered every event the same way.
        let id = first.last().expect("events").seq;
        // A client of replica one reconnects to replica two with its last id: replica two
        // replays exactly what came after it, with the same seqs.
        let mut resumed = two.resume(None, Some(id));
        let mut replayed = Vec::new();
        for _ in 0..later.len() {
            replayed.push(next(&mut resumed).await);
        }
        assert_eq!(
            replayed
                .iter()
                .map(|e| (e.seq, e.kind.clone()))
                .collect::<Vec<_>>(),
            later
                .iter()
                .map(|e| (e.seq, e.kind.clone()))
                .collect::<Vec<_>>()
        );
        // A replica that started after those events cannot replay them: resync snapshot first,
        // equal to the others' state; never an event at or before the id.
        let (three, feed_three) = gateway(&c);
        wait_until_async("replica three to catch up", STEP, || {
            (three.snapshot(&alice()).and_then(|e| e.snapshot().cloned())
                == one.snapshot(&alice()).and_then(|e| e.snapshot().cloned()))
            .then_some(())
        })
        .await
        .expect("replica three shows the stream's state");
        let mut late = three.resume(None, Some(id));
        let e = next(&mut late).await;
        assert!(
            matches!(e.kind, EventKind::Snapshot { resync: true, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.snapshot().cloned(),
            one.snapshot(&alice()).and_then(|e| e.snapshot().cloned())
        );
        for f in [feed_one, feed_two, feed_three] {
            f.abort();
        }
    })
    .await
    .expect("within the limit");
}
