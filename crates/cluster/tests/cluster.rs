//! Against a real 3-node JetStream cluster (testkit): leases are exclusive, renewed by
//! compare-and-swap, released and expired; a stale owner's write is refused by the server; a
//! gateway's mirror shows exactly the events a watcher published, and a watcher that takes an
//! account over starts from the published state and emits only real differences; a gateway's
//! `set_status` reaches the owner's source, and says so at once when no watcher owns the account;
//! a gateway started later replays what came after a client's last id; the gateway's metrics
//! follow the leases; a `kill -9` of the stream's leader stalls writes for the election and
//! loses none.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use imstatus_cluster::{
    run_gateway, run_watcher, Batch, Cluster, Error, GatewayMetrics, RemoteSource, WatcherOptions,
};
use imstatus_config::{ClusterAuth, ClusterConfig, Secret};
use imstatus_core::{
    AccountId, Availability, ErrorCode, Event, EventKind, Observation, PartId, Session, Snapshot,
    SourceKind, Status, Timestamp,
};
use imstatus_hub::testing::{scripted, Script};
use imstatus_hub::{Hub, Subscription};
use imstatus_testkit::{wait_until_async, Async, NatsCluster, NatsOptions};

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
    let (hub, _, feeder) = gateway_metered(c);
    (hub, feeder)
}

/// A gateway, with its cluster metrics.
fn gateway_metered(c: &Cluster) -> (Hub, GatewayMetrics, tokio::task::JoinHandle<()>) {
    let (hub, mirror) = Hub::builder()
        .with_source(alice(), RemoteSource::shared(c.clone(), alice(), kind()))
        .start_mirror();
    let metrics = GatewayMetrics::default();
    let feeder = tokio::spawn(run_gateway(
        c.clone(),
        mirror,
        metrics.clone(),
        std::future::pending(),
    ));
    (hub, metrics, feeder)
}

/// A watcher `writer` of alice with a scripted source: the script, the sender that stops it
/// cleanly, and its task.
fn watcher(
    c: &Cluster,
    writer: &str,
) -> (
    Script,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (source, script) = scripted(kind(), vec![]);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_watcher(
        c.clone(),
        vec![(alice(), source)],
        WatcherOptions {
            writer: writer.into(),
        },
        async move {
            let _ = stopped.await;
        },
    ));
    (script, stop, task)
}

/// The gateway's cluster series as `/metrics` shows them.
fn rendered(metrics: &GatewayMetrics) -> String {
    let mut out = String::new();
    metrics.render(&mut out);
    out
}

async fn next(sub: &mut Subscription) -> Arc<Event> {
    tokio::time::timeout(Duration::from_secs(20), sub.recv())
        .await
        .expect("an event within 20 s")
        .expect("hub alive")
}

/// Waits until `replica` shows alice as `reference` does.
async fn catch_up(replica: &Hub, reference: &Hub) {
    let state = |h: &Hub| h.snapshot(&alice()).and_then(|e| e.snapshot().cloned());
    wait_until_async("a replica to catch up", STEP, || {
        (state(replica) == state(reference)).then_some(())
    })
    .await
    .expect("the replica shows the stream's state");
}

/// Resuming on `replica` after `id` replays exactly `later` (same seqs, same events).
async fn assert_replays(replica: &Hub, id: u64, later: &[Arc<Event>]) {
    let mut resumed = replica.resume(None, Some(id));
    let mut replayed = Vec::new();
    for _ in 0..later.len() {
        replayed.push(next(&mut resumed).await);
    }
    let key = |events: &[Arc<Event>]| {
        events
            .iter()
            .map(|e| (e.seq, e.kind.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(key(&replayed), key(later));
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

/// A watcher `writer` of `accounts`, each with its own scripted source: the sender that stops
/// it cleanly, and its task (which keeps the scripts).
fn watcher_of(
    c: &Cluster,
    writer: &str,
    accounts: &[AccountId],
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let mut scripts = Vec::new();
    let mut sources: Vec<(AccountId, Arc<dyn imstatus_hub::Source>)> = Vec::new();
    for a in accounts {
        let (source, script) = scripted(kind(), vec![]);
        sources.push((a.clone(), source));
        scripts.push(script);
    }
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(run_watcher(
        c.clone(),
        sources,
        WatcherOptions {
            writer: writer.into(),
        },
        async move {
            let _ = stopped.await;
            drop(scripts);
        },
    ));
    (stop, task)
}

/// How many of `shards` each writer holds now (`-` for none).
async fn holders(c: &Cluster, shards: &std::collections::BTreeSet<u32>) -> Vec<(String, usize)> {
    let mut count = std::collections::BTreeMap::<String, usize>::new();
    for &s in shards {
        let h = c
            .holder(s)
            .await
            .expect("holder")
            .unwrap_or_else(|| "-".into());
        *count.entry(h).or_default() += 1;
    }
    count.into_iter().collect()
}

/// Watchers with the same accounts share the shards: one alone holds them all; a second one
/// joining gets half (the first hands them over); a third gets its third; when one stops
/// cleanly the others take its shards over at their next tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_share_the_shards_and_take_a_leavers_over() {
    tokio::time::timeout(LIMIT * 2, async {
        let (_nats, mut cfg) = nats("balance").await;
        cfg.shards = 16;
        let c = Cluster::connect(&cfg).await.expect("connect");
        let accounts: Vec<AccountId> = (0..24).map(|i| AccountId::new(format!("u{i}"))).collect();
        let shards: std::collections::BTreeSet<u32> = accounts
            .iter()
            .map(|a| imstatus_cluster::shard_of(a, cfg.shards))
            .collect();
        let n = shards.len();
        assert!(n >= 12, "{n} shards in use");
        let settled = |want: Vec<(&'static str, usize)>| {
            let want: Vec<(String, usize)> =
                want.into_iter().map(|(w, k)| (w.to_owned(), k)).collect();
            let c = c.clone();
            let shards = shards.clone();
            async move {
                let mut last = Vec::new();
                let start = Instant::now();
                while start.elapsed() < STEP {
                    last = holders(&c, &shards).await;
                    if last == want {
                        return start.elapsed();
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                panic!("the shards are held as {last:?}, not {want:?}");
            }
        };
        let (stop_a, a) = watcher_of(&c, "A", &accounts);
        settled(vec![("A", n)]).await;
        let (stop_b, b) = watcher_of(&c, "B", &accounts);
        let took = settled(vec![("A", n.div_ceil(2)), ("B", n / 2)]).await;
        eprintln!("{n} shards shared by two watchers {took:?} after the second started");
        let (stop_c, cc) = watcher_of(&c, "C", &accounts);
        // Each holds at most its share, ⌈n/3⌉; together all n.
        let start = Instant::now();
        let three = loop {
            let h = holders(&c, &shards).await;
            let fair = h.len() == 3
                && h.iter().all(|(w, k)| w != "-" && *k <= n.div_ceil(3))
                && h.iter().map(|(_, k)| k).sum::<usize>() == n;
            if fair {
                break h;
            }
            assert!(start.elapsed() < STEP, "three watchers hold {h:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!("three watchers: {three:?} after {:?}", start.elapsed());
        // B stops cleanly: it releases and withdraws, A and C take its shards over.
        stop_b.send(()).expect("stop B");
        b.await.expect("B stops");
        let start = Instant::now();
        loop {
            let h = holders(&c, &shards).await;
            if h.len() == 2 && h.iter().all(|(w, _)| w == "A" || w == "C") {
                eprintln!("B's shards taken over: {h:?} after {:?}", start.elapsed());
                break;
            }
            assert!(start.elapsed() < STEP, "after B stopped: {h:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for (stop, task) in [(stop_a, a), (stop_c, cc)] {
            stop.send(()).expect("stop");
            task.await.expect("stops");
        }
        assert_eq!(holders(&c, &shards).await, vec![("-".to_owned(), n)]);
        let roster = c.roster().await.expect("roster");
        assert!(
            roster.members.is_empty() && roster.held.is_empty(),
            "{roster:?}"
        );
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
        let (gateway, metrics, feeder) = gateway_metered(&c);
        let mut sub = gateway.subscribe();

        // Watcher A.
        let (script, stop_a, a) = watcher(&c, "A");
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
        // The gateway's metrics name the owner of alice's shard, and it is caught up.
        wait_until_async("the metrics to name A", STEP, || {
            let m = rendered(&metrics);
            (m.contains("\nimstatus_cluster_leases{watcher=\"A\"} 1\n")
                && m.contains("\nimstatus_cluster_shards_unowned 0\n"))
            .then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rendered(&metrics)));
        assert_eq!(metrics.takeovers(), 0);

        // A stops cleanly (releases its lease); B takes over at once.
        let _ = stop_a.send(());
        a.await.expect("watcher A");
        let (script, _stop_b, _b) = watcher(&c, "B");
        let started = Instant::now();
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
        // The gateway counted the move from A to B, and applied everything in the stream.
        wait_until_async("the metrics to count the takeover", STEP, || {
            let m = rendered(&metrics);
            (metrics.takeovers() == 1
                && m.contains("\nimstatus_cluster_leases{watcher=\"B\"} 1\n")
                && !m.contains("watcher=\"A\"")
                && metrics.stream_lag() == 0
                && m.contains("\nimstatus_cluster_stream_lag 0\n"))
            .then_some(())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", rendered(&metrics)));
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
        let (script, stop, w) = watcher(&c, "W");
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
        let (script, _stop, _w) = watcher(&c, "W");
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
        assert_replays(&two, id, &later).await;
        // A replica that started after those events (a restarted gateway) reads the stream's
        // last messages as events: it replays exactly what came after the id, same seqs.
        let (three, feed_three) = gateway(&c);
        catch_up(&three, &one).await;
        assert_replays(&three, id, &later).await;
        // One whose resume ring holds fewer events than came after the id cannot replay
        // them: a resync snapshot equal to the others' state, never an event at or before it.
        let (hub, mirror) = Hub::builder()
            .with_history(2)
            .with_source(alice(), RemoteSource::shared(c.clone(), alice(), kind()))
            .start_mirror();
        let feed_four = tokio::spawn(run_gateway(
            c.clone(),
            mirror,
            GatewayMetrics::default(),
            std::future::pending(),
        ));
        catch_up(&hub, &one).await;
        let mut short = hub.resume(None, Some(id));
        let e = next(&mut short).await;
        assert!(
            matches!(e.kind, EventKind::Snapshot { resync: true, .. }),
            "{e:?}"
        );
        assert_eq!(
            e.snapshot().cloned(),
            one.snapshot(&alice()).and_then(|e| e.snapshot().cloned())
        );
        for f in [feed_one, feed_two, feed_three, feed_four] {
            f.abort();
        }
    })
    .await
    .expect("within the limit");
}

/// `kill -9` of the stream's leader while a watcher writes 40 batches a second (restarted once
/// another node leads): writes stall for the election, then every batch arrives at the
/// gateway once, in order, with no resync; the stream's last message is the last status sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_leaders_kill_9_stalls_writes_for_the_election_and_loses_nothing() {
    // What the watcher and the gateway did, shown when the test fails.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("imstatus_cluster=debug")
        .with_test_writer()
        .try_init();
    tokio::time::timeout(Duration::from_secs(90), async {
        let (mut nats, mut cfg) = nats("leader").await;
        // Longer than an election (4-5 s, ../shared/docs/nats-recipe.md §5), so the watcher
        // keeps its lease and retries its writes through it.
        cfg.lease = Duration::from_secs(30);
        // The stream keeps every message of the run: a gateway whose consumer is recreated
        // after the kill finds them all (with the default 64 per account, those a burst
        // superseded meanwhile are gone, and it shows a resync snapshot instead).
        cfg.history = 10_000;
        let c = Cluster::connect(&cfg).await.expect("connect");
        let (hub, feeder) = gateway(&c);
        let mut sub = hub.subscribe();
        let (script, _stop, _w) = watcher(&c, "W");
        script.send([Observation::ClientAppeared, away(0), Observation::Synced]);
        loop {
            let e = next(&mut sub).await;
            if matches!(e.kind, EventKind::SignedIn { .. }) {
                break;
            }
        }
        let stream = format!("{}_events", cfg.name);
        let leader = nats
            .stream_leader(&stream)
            .and_then(|name| nats.index_of(&name))
            .expect("the stream has a leader");

        // The flap generator: 40 batches a second for 8 s; the leader dies 1 s in and comes
        // back 3 s later.
        const N: usize = 320;
        let generator = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(25));
            for n in 1..=N {
                tick.tick().await;
                script.send([away(n)]);
            }
            script
        });
        // The gateway's side, read as it comes: every status arrives once, in order, as
        // events (nothing lost or redone); when each arrived.
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut arrivals = Vec::new();
            while seen.last() != Some(&N) {
                let e = tokio::time::timeout(STEP, sub.recv())
                    .await
                    .unwrap_or_else(|_| {
                        panic!(
                            "no status within {STEP:?} after n{:?}; {} seen",
                            seen.last(),
                            seen.len()
                        )
                    })
                    .expect("hub alive");
                assert!(e.snapshot().is_none(), "no resync: {e:?}");
                if let EventKind::StatusChanged { to, .. } = &e.kind {
                    let n: usize = to
                        .message
                        .as_deref()
                        .and_then(|m| m.strip_prefix('n'))
                        .and_then(|m| m.parse().ok())
                        .expect("a generated message");
                    if n > 0 {
                        // (n0 is the status from before the generator started.)
                        seen.push(n);
                        arrivals.push(Instant::now());
                    }
                }
            }
            (seen, arrivals)
        });
        // Once writes flow, the leader dies; once another node leads, it comes back.
        wait_until_async("the generator's writes to be stored", STEP, || {
            Async(async {
                let (last, _) = c.last_batch(&alice()).await.ok()??;
                let n: usize = last.snapshot.message?.strip_prefix('n')?.parse().ok()?;
                (n >= 20).then_some(())
            })
        })
        .await
        .expect("writes flow");
        let old = nats.name(leader).to_owned();
        let stream_name = stream.clone();
        let mut nats = tokio::task::spawn_blocking(move || {
            nats.kill(leader).expect("kill -9 the leader");
            imstatus_testkit::wait_until("another node to lead the stream", STEP, || {
                nats.stream_leader(&stream_name).filter(|l| *l != old)
            })
            .expect("a new leader");
            nats.restart(leader).expect("restart the old leader");
            nats
        })
        .await
        .expect("join");
        let (seen, arrivals) = reader.await.expect("the gateway's reader");
        assert_eq!(seen, (1..=N).collect::<Vec<_>>());
        let stall = arrivals
            .windows(2)
            .map(|w| w[1] - w[0])
            .max()
            .expect("arrivals");
        eprintln!("longest pause between two statuses at the gateway: {stall:?}");
        assert!(stall < cfg.lease, "writes stalled for {stall:?}");
        let _script = generator.await.expect("generator");
        // What the stream stored: one unbroken chain (each batch fenced on the one before, so
        // an acknowledged batch that went missing would have stopped the writer), every
        // status once; the longest pause between two stored batches is the write stall.
        let servers: Vec<async_nats::ServerAddr> = (0..nats.len())
            .map(|i| nats.url(i).parse().expect("a server address"))
            .collect();
        let client = async_nats::connect(servers).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let mut messages = js
            .get_stream(&stream)
            .await
            .expect("the stream")
            .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                filter_subject: c.subject(&alice()),
                ..Default::default()
            })
            .await
            .expect("a consumer")
            .messages()
            .await
            .expect("messages");
        let (mut prev, mut stored, mut write_stall) = (0, Vec::new(), Duration::ZERO);
        let mut published = None;
        loop {
            let m = messages.next().await.expect("a message").expect("read");
            let info = m.info().expect("info");
            let batch = Batch::decode(&m.payload).expect("a batch");
            assert_eq!(
                batch.prev, prev,
                "the chain breaks at {}",
                info.stream_sequence
            );
            prev = info.stream_sequence;
            if let Some(before) = published.replace(info.published) {
                let gap = Duration::try_from(info.published - before).unwrap_or_default();
                write_stall = write_stall.max(gap);
            }
            stored.extend(batch.snapshot.message.clone());
            if info.pending == 0 {
                break;
            }
        }
        stored.dedup();
        let want: Vec<String> = (0..=N).map(|n| format!("n{n}")).collect();
        assert_eq!(stored, want);
        eprintln!("longest pause between two stored batches: {write_stall:?}");
        let (last, _) = c.last_batch(&alice()).await.expect("read").expect("some");
        assert_eq!(last.snapshot.message, Some(format!("n{N}")));
        // The old leader is a member again.
        let nats = tokio::task::spawn_blocking(move || {
            nats.wait_ready(leader).expect("rejoined");
            nats
        })
        .await
        .expect("join");
        assert!(nats.stream_leader(&stream).is_some());
        feeder.abort();
    })
    .await
    .expect("within the limit");
}

/// A cluster that requires a user name, a password and TLS: the right password from a file and
/// the servers' certificate as `ca_file` connect (and set up the stream and bucket); a wrong
/// password is `auth_failed`, no `ca_file` is `invalid_certificate` — each at once, with a hint
/// naming the `[cluster]` key to fix, and the password in no message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_and_tls_are_used_and_a_refusal_says_what_to_fix() {
    use std::os::unix::fs::PermissionsExt;
    tokio::time::timeout(LIMIT, async {
        let options = NatsOptions {
            user: Some(("watcher".into(), "s3cret-nats".into())),
            tls: true,
            ..NatsOptions::default()
        };
        let nats = tokio::task::spawn_blocking(move || NatsCluster::start_with(3, options))
            .await
            .expect("join")
            .expect("nats with a password and TLS");
        let dir = tempfile::tempdir().expect("tempdir");
        let secret = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            Secret::File(path)
        };
        let mut cfg = ClusterConfig::new(&nats.urls());
        assert!(cfg.servers[0].starts_with("tls://"), "{:?}", cfg.servers);
        cfg.name = "auth".into();
        cfg.auth = ClusterAuth::UserPassword {
            username: "watcher".into(),
            password: secret("right.pw", "s3cret-nats\n"),
        };
        cfg.ca_file = nats.ca_cert().map(ToOwned::to_owned);
        let c = Cluster::connect(&cfg).await.expect("connects");
        assert_eq!(c.last_batch(&alice()).await.expect("reads"), None);

        let refused = |cfg: ClusterConfig| async move {
            let started = Instant::now();
            let e = Cluster::connect(&cfg).await.expect_err("refused");
            assert!(started.elapsed() < Duration::from_secs(5), "{e}");
            assert!(!e.to_string().contains("s3cret"), "{e}");
            e
        };
        let mut wrong = cfg.clone();
        wrong.auth = ClusterAuth::UserPassword {
            username: "watcher".into(),
            password: secret("wrong.pw", "not-it\n"),
        };
        let e = refused(wrong).await;
        assert_eq!(e.code(), ErrorCode::AuthFailed, "{e}");
        assert!(e.to_string().contains("authorization violation"), "{e}");
        assert!(
            e.hint().contains("credentials of `[cluster]`"),
            "{}",
            e.hint()
        );

        let mut untrusted = cfg.clone();
        untrusted.ca_file = None;
        let e = refused(untrusted).await;
        assert_eq!(e.code(), ErrorCode::InvalidCertificate, "{e}");
        assert!(e.hint().contains("`[cluster] ca_file`"), "{}", e.hint());

        // A ca_file that cannot be read is refused before any connection, naming the file (the
        // same loader as every other client: crates/tls).
        let mut unreadable = cfg.clone();
        unreadable.ca_file = Some(dir.path().join("no-such-ca.pem"));
        let e = refused(unreadable).await;
        assert_eq!(e.code(), ErrorCode::InvalidCertificate, "{e}");
        assert!(e.to_string().contains("no-such-ca.pem"), "{e}");
    })
    .await
    .expect("within the limit");
}

/// A cluster that requires a token: `token_file` with the right one connects, a wrong one is
/// `auth_failed` at once with the hint, and the token is in no message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_file_is_used_and_a_wrong_token_refused() {
    use std::os::unix::fs::PermissionsExt;
    tokio::time::timeout(LIMIT, async {
        let options = NatsOptions {
            token: Some("t0ken-for-nats".into()),
            ..NatsOptions::default()
        };
        let nats = tokio::task::spawn_blocking(move || NatsCluster::start_with(3, options))
            .await
            .expect("join")
            .expect("nats with a token");
        let dir = tempfile::tempdir().expect("tempdir");
        let token = |text: &str| {
            let path = dir.path().join("nats.token");
            std::fs::write(&path, text).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            ClusterAuth::Token(Secret::File(path))
        };
        let mut cfg = ClusterConfig::new(&nats.urls());
        cfg.name = "token".into();
        cfg.auth = token("t0ken-for-nats\n");
        let c = Cluster::connect(&cfg)
            .await
            .expect("connects with the token");
        assert_eq!(c.last_batch(&alice()).await.expect("reads"), None);
        cfg.auth = token("wrong-t0ken\n");
        let started = Instant::now();
        let e = Cluster::connect(&cfg).await.expect_err("a wrong token");
        assert!(started.elapsed() < Duration::from_secs(5), "{e}");
        assert_eq!(e.code(), ErrorCode::AuthFailed, "{e}");
        assert!(!e.to_string().contains("t0ken"), "{e}");
        assert!(e.hint().contains("token_file"), "{}", e.hint());
    })
    .await
    .expect("within the limit");
}
