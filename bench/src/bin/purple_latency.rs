//! Benchmark P of `bench/run.sh`: the libpurple source against a real finch on a private bus
//! and a real Prosody (all started here through imstatus-testkit): the one-shot query time,
//! the D-Bus signal → imstatus event latency, and how long a `kill -9` of finch takes to
//! become `client_shutdown`. Prints p50/p99; checks only that the answers are right, never how
//! fast they came.
//!
//! ```sh
//! target/release/purple_latency
//! ```
//!
//! Besides the human-readable lines on stderr, every measure is printed on stdout as one JSON
//! line (`{"impl": "imstatus@<measure>", "p50_us", "p99_us", "n"}`) for `bench/run.sh P`; the
//! `floor@kill` line is the time until a plain second D-Bus connection saw finch's bus name go.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use imstatus_bench::stats::us;
use imstatus_bench::{fail, hubs, OrFail};
use imstatus_core::{AccountId, Availability, Event, EventKind, Session, Snapshot};
use imstatus_hub::{Hub, Subscription};
use imstatus_testkit::{DbusDaemon, Finch, Prosody, ProsodyOptions};
use tokio::sync::mpsc;
use zbus::Connection;

/// Every wait of one step.
const STEP: Duration = Duration::from_secs(10);

/// Runs blocking testkit code on this worker without starving the hub (multi-thread runtime).
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

fn account() -> AccountId {
    AccountId::new(hubs::PURPLE_ACCOUNT)
}

/// A hub over the source on `bus`, settled.
async fn settled_hub(bus: &str) -> Hub {
    let hub = hubs::purple(bus);
    hubs::settled(&hub, &account(), STEP).await;
    hub
}

/// The next event within [`STEP`].
async fn next(sub: &mut Subscription) -> Arc<Event> {
    match tokio::time::timeout(STEP, sub.recv()).await {
        Ok(Some(e)) => e,
        Ok(None) => fail("the hub is gone"),
        Err(_) => fail(format_args!("no event within {STEP:?}")),
    }
}

/// Subscribes; returns the first event's snapshot with the subscription.
async fn subscribe(hub: &Hub) -> (Snapshot, Subscription) {
    let mut sub = hub.subscribe();
    let first = next(&mut sub).await;
    match first.snapshot() {
        Some(snap) => (snap.clone(), sub),
        None => fail(format_args!("a snapshot first, not {}", first.kind.name())),
    }
}

fn summary(key: &str, what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let (p50, p99) = (us(&samples, 50.0), us(&samples, 99.0));
    eprintln!(
        "{what}, {} samples: p50 {:.1} ms p99 {:.1} ms",
        samples.len(),
        p50 / 1e3,
        p99 / 1e3
    );
    println!(
        "{{\"impl\": \"{key}\", \"p50_us\": {p50:.1}, \"p99_us\": {p99:.1}, \"n\": {}}}",
        samples.len()
    );
}

/// Stamps every `member` signal of libpurple as a second connection receives it.
async fn stamper(
    bus: &str,
    member: &str,
) -> (
    mpsc::UnboundedReceiver<Instant>,
    tokio::task::JoinHandle<()>,
) {
    let conn = connect(bus).await;
    let rule =
        format!("type='signal',interface='im.pidgin.purple.PurpleInterface',member='{member}'");
    let mut stream = zbus::MessageStream::for_match_rule(rule.as_str(), &conn, Some(1024))
        .await
        .or_fail("a match rule");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _conn = conn;
        while let Some(Ok(_)) = stream.next().await {
            let _ = tx.send(Instant::now());
        }
    });
    (rx, task)
}

/// Stamps every `NameOwnerChanged` that says libpurple's bus name lost its owner.
async fn name_owner_stamper(
    bus: &str,
) -> (
    mpsc::UnboundedReceiver<Instant>,
    tokio::task::JoinHandle<()>,
) {
    let conn = connect(bus).await;
    let rule = "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',\
                arg0='im.pidgin.purple.PurpleService',arg2=''";
    let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, Some(1024))
        .await
        .or_fail("a match rule");
    let (tx, rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let _conn = conn;
        while let Some(Ok(_)) = stream.next().await {
            let _ = tx.send(Instant::now());
        }
    });
    (rx, task)
}

async fn purple(conn: &Connection, method: &str, arg: i32) {
    conn.call_method(
        Some("im.pidgin.purple.PurpleService"),
        "/im/pidgin/purple/PurpleObject",
        Some("im.pidgin.purple.PurpleInterface"),
        method,
        &(arg,),
    )
    .await
    .or_fail(method);
}

/// Waits for the next event named `name`; returns when it was received.
async fn event(sub: &mut Subscription, name: &str) -> Instant {
    loop {
        let e = next(sub).await;
        if e.kind.name() == name {
            return Instant::now();
        }
    }
}

/// Waits for the account's status to become available.
async fn until_available(sub: &mut Subscription) {
    loop {
        if let EventKind::StatusChanged { to, .. } = &next(sub).await.kind {
            if to.availability == Availability::Available {
                return;
            }
        }
    }
}

async fn stamp(rx: &mut mpsc::UnboundedReceiver<Instant>) -> Instant {
    let t = match tokio::time::timeout(STEP, rx.recv()).await {
        Ok(Some(t)) => t,
        _ => fail(format_args!("no D-Bus signal within {STEP:?}")),
    };
    // One such signal per toggle (one account); drop any extra.
    while rx.try_recv().is_ok() {}
    t
}

async fn connect(bus: &str) -> Connection {
    let builder = zbus::connection::Builder::address(bus).or_fail("the bus address");
    builder.build().await.or_fail("a D-Bus connection")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if !std::env::args().skip(1).collect::<Vec<_>>().is_empty() {
        fail("purple_latency takes no arguments");
    }
    let limit = Duration::from_secs(180);
    if tokio::time::timeout(limit, run()).await.is_err() {
        fail(format_args!("not done within {limit:?}"));
    }
}

async fn run() {
    // Declared before finch, so that finch is stopped first.
    let prosody = blocking(|| Prosody::start(ProsodyOptions::default())).or_fail("Prosody");
    let daemon = blocking(DbusDaemon::start).or_fail("dbus-daemon");
    let alice = prosody.finch_account("alice", "alicepw");
    let mut finch = blocking(|| Finch::start(&daemon, &[alice])).or_fail("finch");
    blocking(|| finch.wait_signed_in(STEP)).or_fail("finch signing in");
    let bus = daemon.address();

    // One-shot: hub start (connect, match rules, query) until the answer is complete.
    let mut one_shot = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let hub = settled_hub(bus).await;
        one_shot.push(t.elapsed());
        let session = hub
            .snapshot(&account())
            .and_then(|e| e.snapshot().map(|s| s.session));
        if session != Some(Session::SignedIn) {
            fail(format_args!(
                "one-shot: the session is {session:?}, not signed in"
            ));
        }
    }
    summary(
        "imstatus@oneshot",
        "one-shot status (hub start → synced)",
        one_shot,
    );

    let hub = settled_hub(bus).await;
    let (_, mut sub) = subscribe(&hub).await;
    let (mut account_status, a) = stamper(bus, "AccountStatusChanged").await;
    let (mut saved_status, b) = stamper(bus, "SavedstatusChanged").await;
    let (mut signed_off, c) = stamper(bus, "AccountSignedOff").await;
    let (mut signed_on, d) = stamper(bus, "AccountSignedOn").await;
    let caller = connect(bus).await;

    // Two transient saved statuses to toggle between.
    blocking(|| finch.set_status(5, Some("away-a"))).or_fail("away");
    let current = |finch: &Finch| {
        blocking(|| finch.purple_int("PurpleSavedstatusGetCurrent", &[]))
            .or_fail("the current saved status")
    };
    let away = current(&finch);
    blocking(|| finch.set_status(2, None)).or_fail("available");
    let available = current(&finch);
    until_available(&mut sub).await;
    for rx in [&mut account_status, &mut saved_status] {
        while rx.try_recv().is_ok() {}
    }

    let (mut from_saved, mut from_account, mut from_call) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..100 {
        let target = if i % 2 == 0 { away } else { available };
        let t0 = Instant::now();
        purple(&caller, "PurpleSavedstatusActivate", target).await;
        let t_event = event(&mut sub, "status_changed").await;
        from_account.push(t_event.saturating_duration_since(stamp(&mut account_status).await));
        from_saved.push(t_event.saturating_duration_since(stamp(&mut saved_status).await));
        from_call.push(t_event - t0);
    }
    summary(
        "imstatus@saved_status",
        "SavedstatusChanged received → status_changed event",
        from_saved,
    );
    summary(
        "imstatus@account_status",
        "AccountStatusChanged (first signal of the change) → status_changed",
        from_account,
    );
    summary(
        "imstatus@activate",
        "SavedstatusActivate sent → status_changed event",
        from_call,
    );

    let accounts = blocking(|| finch.purple_ints("PurpleAccountsGetAllActive", &[]))
        .or_fail("finch's accounts");
    let Some(&account) = accounts.first() else {
        fail("finch has no active account")
    };
    let (mut off, mut on) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        purple(&caller, "PurpleAccountDisconnect", account).await;
        let t_event = event(&mut sub, "signed_out").await;
        off.push(t_event.saturating_duration_since(stamp(&mut signed_off).await));
        purple(&caller, "PurpleAccountConnect", account).await;
        let t_event = event(&mut sub, "signed_in").await;
        on.push(t_event.saturating_duration_since(stamp(&mut signed_on).await));
    }
    summary(
        "imstatus@signed_off",
        "AccountSignedOff received → signed_out event",
        off,
    );
    summary(
        "imstatus@signed_on",
        "AccountSignedOn received → signed_in event",
        on,
    );
    for task in [a, b, c, d] {
        task.abort();
    }
    drop(sub);
    drop(hub);

    // kill -9 of finch → client_shutdown (no Quitting signal comes; only the bus name goes).
    let (mut name_lost, e) = name_owner_stamper(bus).await;
    let (mut killed, mut killed_raw) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let hub = settled_hub(bus).await;
        let (_, mut sub) = subscribe(&hub).await;
        while name_lost.try_recv().is_ok() {}
        let t0 = Instant::now();
        finch.send_kill9();
        let t_event = event(&mut sub, "client_shutdown").await;
        killed.push(t_event - t0);
        killed_raw.push(stamp(&mut name_lost).await - t0);
        finch.kill9(); // waits for the exit
        blocking(|| finch.restart()).or_fail("restarting finch");
        blocking(|| finch.wait_signed_in(STEP)).or_fail("finch signing in");
    }
    e.abort();
    summary(
        "imstatus@kill",
        "kill -9 of finch → client_shutdown event",
        killed,
    );
    summary(
        "floor@kill",
        "kill -9 of finch → NameOwnerChanged seen by a plain connection",
        killed_raw,
    );
}
