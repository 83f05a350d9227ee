//! The hub: snapshot first, ordered fan-out, resync of laggards with bounded memory, resume.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use imstatus_core::{
    AccountId, Availability, ContactId, ErrorCode, Event, EventKind, Observation, PartId, Session,
    SignInResult, SourceKind, Status,
};
use imstatus_hub::testing::{scripted, Script};
use imstatus_hub::Hub;

const LIMIT: Duration = Duration::from_secs(10);

fn alice() -> AccountId {
    AccountId::new("alice")
}

fn hub_with(capacity: usize) -> (Hub, Script) {
    let (source, script) = scripted(SourceKind::new_static("test"), vec![Observation::Synced]);
    let hub = Hub::builder()
        .with_capacity(capacity)
        .with_history(64)
        .with_source(alice(), source)
        .start();
    (hub, script)
}

async fn next(sub: &mut imstatus_hub::Subscription) -> Arc<Event> {
    tokio::time::timeout(LIMIT, sub.recv())
        .await
        .expect("an event within the limit")
        .expect("hub alive")
}

fn presence(show: Availability, n: usize) -> Observation {
    Observation::Presence {
        part: PartId::new("desk"),
        status: Status::with_message(show, format!("n{n}")),
        priority: Some(1),
    }
}

async fn settled(hub: &Hub) {
    assert!(hub.wait_settled(&[alice()], LIMIT).await, "source synced");
}

#[tokio::test]
async fn subscriber_gets_snapshot_first_then_changes_in_seq_order() {
    let (hub, script) = hub_with(1024);
    settled(&hub).await;
    let mut sub = hub.subscribe();
    let first = next(&mut sub).await;
    let snap = first.snapshot().expect("snapshot first");
    assert_eq!(snap.session, Session::SignedOut);
    script.send([presence(Availability::Away, 1)]);
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(next(&mut sub).await);
    }
    let names: Vec<_> = seen.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["signed_in", "status_changed", "resource_changed"]);
    assert!(seen.windows(2).all(|w| w[0].seq < w[1].seq));
    assert!(seen[0].seq > first.seq);
}

#[tokio::test]
async fn lagging_subscriber_never_blocks_and_gets_a_resync_snapshot_with_bounded_memory() {
    const EVENTS: usize = 1_000_000;
    let (hub, script) = hub_with(256);
    settled(&hub).await;
    let mut stuck = hub.subscribe();
    let mut live = hub.subscribe();
    let _ = next(&mut stuck).await; // its snapshot; then it stops reading
    let _ = next(&mut live).await;

    // A reader that keeps up counts every status change, in order.
    let reader = tokio::spawn(async move {
        let mut last_seq = 0;
        let mut changes = 0usize;
        let mut resyncs = 0usize;
        while changes + resyncs < EVENTS {
            let e = match tokio::time::timeout(LIMIT, live.recv()).await {
                Ok(Some(e)) => e,
                _ => break,
            };
            assert!(e.seq > last_seq || e.snapshot().is_some());
            last_seq = last_seq.max(e.seq);
            match &e.kind {
                EventKind::StatusChanged { .. } => changes += 1,
                EventKind::Snapshot { .. } => resyncs += 1,
                _ => {}
            }
        }
        (changes, resyncs)
    });

    let rss_before = rss_kib();
    let shows = [Availability::Away, Availability::Busy];
    for chunk in 0..EVENTS / 1000 {
        let batch: Vec<_> = (0..1000)
            .map(|i| {
                let n = chunk * 1000 + i;
                presence(shows[n % 2], n)
            })
            .collect();
        script.send(batch);
        // Pace the feed so the scripted source's own channel never holds much: what is
        // measured is the hub's memory, not the test's.
        if chunk % 20 == 19 {
            let fed = (chunk as u64 + 1) * 1000 * 2;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while hub.event_count() < fed {
                assert!(tokio::time::Instant::now() < deadline, "source stalled");
                tokio::task::yield_now().await;
            }
        }
    }
    // Wait until the source has fed everything.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while hub.event_count() < (EVENTS as u64) * 2 {
        assert!(tokio::time::Instant::now() < deadline, "source stalled");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rss_after = rss_kib();
    // 1M events of ~250 bytes would be ~250 MB if anything buffered them all.
    assert!(
        rss_after.saturating_sub(rss_before) < 64 * 1024,
        "RSS grew by {} KiB",
        rss_after - rss_before
    );

    // The stuck subscriber now reads: a resync snapshot equal to the current state.
    let e = next(&mut stuck).await;
    match &e.kind {
        EventKind::Snapshot { snapshot, resync } => {
            assert!(*resync, "marked as a resync");
            let current = hub.snapshot(&alice()).expect("known");
            assert_eq!(Some(&**snapshot), current.snapshot());
            assert_eq!(snapshot.message.as_deref(), Some("n999999"));
        }
        other => panic!("expected a resync snapshot, got {other:?}"),
    }
    assert!(hub.resync_count() >= 1);
    let (changes, resyncs) = reader.await.expect("reader");
    assert!(changes + resyncs >= 1, "the live reader made progress");
    // After the resync the stuck subscriber sees new changes normally.
    script.send([presence(Availability::Chatty, 0)]);
    loop {
        let e = next(&mut stuck).await;
        if let EventKind::StatusChanged { to, .. } = &e.kind {
            assert_eq!(to.availability, Availability::Chatty);
            break;
        }
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

#[tokio::test]
async fn resume_replays_from_history_or_resyncs_when_too_old() {
    let (hub, script) = hub_with(1024);
    settled(&hub).await;
    let mut sub = hub.subscribe();
    let _ = next(&mut sub).await;
    script.send([
        presence(Availability::Away, 1),
        presence(Availability::Busy, 2),
    ]);
    let mut got = Vec::new();
    while got.len() < 4 {
        got.push(next(&mut sub).await);
    }
    // Resume after the first event: the rest comes again, same seqs.
    let mut resumed = hub.resume(None, Some(got[0].seq));
    for expected in &got[1..] {
        let e = next(&mut resumed).await;
        assert_eq!(e.seq, expected.seq);
    }
    // Push the early events out of the 64-event history, then resume from seq 1.
    for n in 0..100 {
        script.send([presence([Availability::Away, Availability::Busy][n % 2], n)]);
    }
    let deadline = tokio::time::Instant::now() + LIMIT;
    while hub.event_count() < 150 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut old = hub.resume(None, Some(1));
    let e = next(&mut old).await;
    assert!(matches!(e.kind, EventKind::Snapshot { resync: true, .. }));
    // A seq from the future (the hub restarted) also resyncs.
    let mut future = hub.resume(None, Some(u64::MAX / 2));
    assert!(matches!(
        next(&mut future).await.kind,
        EventKind::Snapshot { resync: true, .. }
    ));
}

#[tokio::test]
async fn subscription_ends_when_the_hub_is_dropped() {
    let (hub, _script) = hub_with(16);
    let mut sub = hub.subscribe();
    let _ = next(&mut sub).await;
    drop(hub);
    let end = tokio::time::timeout(LIMIT, sub.recv()).await.expect("ends");
    assert!(end.is_none());
}

#[tokio::test]
async fn filtered_subscription_sees_only_its_accounts() {
    let (a, script_a) = scripted(SourceKind::new_static("test"), vec![Observation::Synced]);
    let (b, script_b) = scripted(SourceKind::new_static("test"), vec![Observation::Synced]);
    let hub = Hub::builder()
        .with_source(alice(), a)
        .with_source(AccountId::new("bob"), b)
        .start();
    let only_bob: HashSet<_> = [AccountId::new("bob")].into();
    let mut sub = hub.subscribe_to(Some(only_bob));
    let snap = next(&mut sub).await;
    assert_eq!(snap.account.as_str(), "bob");
    script_a.send([presence(Availability::Away, 1)]);
    script_b.send([Observation::Contact(
        ContactId::new("c@x"),
        Status::new(Availability::Away),
    )]);
    loop {
        let e = next(&mut sub).await;
        assert_eq!(e.account.as_str(), "bob");
        if e.kind.name() == "contact_status_changed" {
            break;
        }
    }
}

#[tokio::test]
async fn a_panicking_source_is_reported_not_fatal() {
    let (hub, script) = hub_with(64);
    settled(&hub).await;
    let mut sub = hub.subscribe();
    let _ = next(&mut sub).await;
    script.send([Observation::Anomaly(
        ErrorCode::ProtocolError,
        "panic".into(),
    )]);
    let e = next(&mut sub).await;
    assert!(matches!(
        e.kind,
        EventKind::SourceError {
            code: ErrorCode::ProtocolError,
            session_unknown: true,
            ..
        }
    ));
    assert!(hub.source_error(&alice()).is_some());
}

#[tokio::test]
async fn a_sign_in_that_hangs_fails_with_timeout_through_the_hub_timer() {
    let (source, script) = scripted(
        SourceKind::new_static("test"),
        vec![Observation::ClientAppeared, Observation::Synced],
    );
    let hub = Hub::builder()
        .with_sign_in_timeout(Duration::from_millis(200))
        .with_source(alice(), source)
        .start();
    settled(&hub).await;
    let mut sub = hub.subscribe();
    let _ = next(&mut sub).await;
    script.send([Observation::Connecting(PartId::new("a"))]);
    loop {
        let e = next(&mut sub).await;
        if let EventKind::SignedIn { result } = e.kind {
            assert_eq!(result, SignInResult::Failed(ErrorCode::Timeout));
            break;
        }
    }
}

#[tokio::test]
async fn set_status_reaches_the_source() {
    let (hub, _script) = hub_with(64);
    settled(&hub).await;
    hub.set_status(&alice(), Status::new(Availability::Busy))
        .await
        .expect("scripted source accepts");
    let snap = hub.snapshot(&alice()).expect("known");
    assert_eq!(
        snap.snapshot().map(|s| s.availability),
        Some(Availability::Busy)
    );
    let err = hub
        .set_status(&AccountId::new("nobody"), Status::new(Availability::Busy))
        .await
        .expect_err("unknown account");
    assert_eq!(err.code, ErrorCode::Unsupported);
}

#[tokio::test]
async fn a_restarted_hub_never_reuses_the_seqs_of_an_earlier_run() {
    let (first, script) = hub_with(64);
    settled(&first).await;
    let mut sub = first.subscribe();
    let _ = next(&mut sub).await;
    script.send([presence(Availability::Away, 1)]);
    let last_of_first_run = next(&mut sub).await.seq;
    drop(sub);
    drop(first);

    let (second, script) = hub_with(64);
    settled(&second).await;
    let mut sub = second.subscribe();
    let _ = next(&mut sub).await;
    script.send([presence(Availability::Busy, 2)]);
    let first_of_second_run = next(&mut sub).await.seq;
    assert!(
        first_of_second_run > last_of_first_run,
        "{first_of_second_run} <= {last_of_first_run}"
    );
    assert!(first_of_second_run < 1 << 53, "exact in JavaScript");
    // A client resuming with an id of the first run gets a resync, not someone else's events.
    let mut resumed = second.resume(None, Some(last_of_first_run));
    assert!(matches!(
        next(&mut resumed).await.kind,
        EventKind::Snapshot { resync: true, .. }
    ));
}

/// A source that panics on the starts listed in `panics` (counted from 0) and otherwise reports
/// the client running and stays; tells the test the (tokio) instant of every start.
struct Crashing {
    starts: std::sync::Mutex<u32>,
    panics: fn(u32) -> bool,
    started: tokio::sync::mpsc::UnboundedSender<tokio::time::Instant>,
    /// How long a start that panics runs first.
    runs_for: fn(u32) -> Duration,
}

impl imstatus_hub::Source for Crashing {
    fn kind(&self) -> SourceKind {
        SourceKind::new_static("test")
    }

    fn run(self: Arc<Self>, sink: imstatus_hub::Sink) -> imstatus_hub::BoxFuture<'static, ()> {
        Box::pin(async move {
            let n = {
                let mut starts = self.starts.lock().expect("lock");
                *starts += 1;
                *starts - 1
            };
            let _ = self.started.send(tokio::time::Instant::now());
            if (self.panics)(n) {
                tokio::time::sleep((self.runs_for)(n)).await;
                panic!("crashing source, start {n}");
            }
            sink.observe_all([Observation::ClientAppeared, Observation::Synced]);
            std::future::pending::<()>().await;
        })
    }
}

fn crashing(
    panics: fn(u32) -> bool,
    runs_for: fn(u32) -> Duration,
) -> (
    Hub,
    tokio::sync::mpsc::UnboundedReceiver<tokio::time::Instant>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let source = Arc::new(Crashing {
        starts: std::sync::Mutex::new(0),
        panics,
        started: tx,
        runs_for,
    });
    let hub = Hub::builder().with_source(alice(), source).start();
    (hub, rx)
}

async fn next_start(
    starts: &mut tokio::sync::mpsc::UnboundedReceiver<tokio::time::Instant>,
) -> tokio::time::Instant {
    tokio::time::timeout(Duration::from_secs(300), starts.recv())
        .await
        .expect("a start within the limit")
        .expect("the hub is alive")
}

#[tokio::test(start_paused = true)]
async fn a_source_that_panicked_is_reported_down_then_restarted_after_a_backoff() {
    let (hub, mut starts) = crashing(|n| n == 0, |_| Duration::ZERO);
    let mut sub = hub.subscribe();
    let first = next_start(&mut starts).await;
    let events = [next(&mut sub).await, next(&mut sub).await];
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["snapshot", "source_error"]);
    let err = hub.source_error(&alice()).expect("down after the panic");
    assert_eq!(err.code, ErrorCode::ProtocolError);

    let second = next_start(&mut starts).await;
    let waited = second - first;
    assert!(
        (Duration::from_millis(500)..=Duration::from_secs(1)).contains(&waited),
        "restarted after {waited:?}"
    );
    let e = next(&mut sub).await;
    assert_eq!(e.kind.name(), "client_started");
    assert!(hub.wait_settled(&[alice()], LIMIT).await);
    assert_eq!(hub.source_error(&alice()), None);
}

#[tokio::test(start_paused = true)]
async fn a_source_that_panics_on_every_start_is_restarted_ever_more_slowly() {
    let (hub, mut starts) = crashing(|_| true, |_| Duration::ZERO);
    let mut at = vec![next_start(&mut starts).await];
    for _ in 0..8 {
        at.push(next_start(&mut starts).await);
    }
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    // Ceilings 1, 2, 4, 8, 16, 32, 60, 60 s; each wait between half the ceiling and it.
    for (n, gap) in gaps.iter().enumerate() {
        let ceiling = imstatus_core::Backoff::ceiling(n as u32);
        assert!(
            *gap >= ceiling / 2 && *gap <= ceiling,
            "wait {n} was {gap:?}, ceiling {ceiling:?}; all: {gaps:?}"
        );
    }
    // No spinning: at most 4 starts in the first 7 seconds (the shortest waits allowed,
    // 0.5 + 1 + 2 + 4 s, put the fifth at 7.5 s or later; a spinning restart would make
    // thousands).
    let early = at
        .iter()
        .filter(|t| **t - at[0] < Duration::from_secs(7))
        .count();
    assert!(early <= 4, "{early} starts in 7 s: {gaps:?}");
    assert!(hub.source_error(&alice()).is_some());
}

#[tokio::test(start_paused = true)]
async fn a_source_that_ran_long_before_it_panicked_is_restarted_quickly_again() {
    // Starts 0-2 panic at once (waits up to 1, 2 s), start 3 after two minutes of running
    // (the wait starts over at up to 1 s), start 4 runs.
    let (hub, mut starts) = crashing(
        |n| n <= 3,
        |n| {
            if n == 3 {
                Duration::from_secs(120)
            } else {
                Duration::ZERO
            }
        },
    );
    let mut at = Vec::new();
    for _ in 0..5 {
        at.push(next_start(&mut starts).await);
    }
    let last = at[4] - at[3] - Duration::from_secs(120);
    assert!(
        last <= Duration::from_secs(1),
        "restarted {last:?} after the long run's panic"
    );
    assert!(hub.wait_settled(&[alice()], LIMIT).await);
    assert_eq!(hub.source_error(&alice()), None);
}

#[tokio::test]
async fn a_subscription_taken_at_start_sees_a_source_that_fails_at_once() {
    let (source, _script) = scripted(
        SourceKind::new_static("test"),
        vec![Observation::SourceDown(
            ErrorCode::ServerUnreachable,
            "connection refused".into(),
        )],
    );
    let (_hub, mut sub) = Hub::builder()
        .with_source(alice(), source)
        .start_subscribed();
    let first = next(&mut sub).await;
    let snapshot = first.snapshot().expect("a snapshot first");
    assert_eq!(snapshot.session, Session::Unknown);
    let second = next(&mut sub).await;
    assert_eq!(
        second.kind,
        EventKind::SourceError {
            code: ErrorCode::ServerUnreachable,
            detail: "connection refused".into(),
            // It never synced: the session was unknown already.
            session_unknown: false,
        }
    );
}
