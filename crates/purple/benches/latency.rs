//! `cargo bench -p imstatus-purple`: measured against a real finch on a private bus and a real
//! Prosody: the one-shot query time, the D-Bus signal → imstatus event latency, and how long a
//! `kill -9` of finch takes to become `client_shutdown`. Prints p50/p99; asserts only that the
//! answers are right, never how fast they came (speed is measured, not timed in tests).
//!
//! Besides the human-readable lines on stderr, every measure is printed on stdout as one JSON
//! line (`{"impl": "imstatus@<measure>", "p50_us", "p99_us", "n"}`) for `bench/run.sh P`; the
//! `floor@kill` line is the time until a plain second D-Bus connection saw finch's bus name go.
#![allow(clippy::unwrap_used, missing_docs)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use imstatus_hub::Subscription;
use tokio::sync::mpsc;
use zbus::Connection;

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn summary(key: &str, what: &str, mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    let p50 = percentile(&samples, 50);
    let p99 = percentile(&samples, 99);
    eprintln!("{what}, {} samples: p50 {p50:?} p99 {p99:?}", samples.len());
    println!(
        "{{\"impl\": \"{key}\", \"p50_us\": {:.1}, \"p99_us\": {:.1}, \"n\": {}}}",
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        samples.len()
    );
    p50
}

/// Stamps every `member` signal of libpurple as a second connection receives it.
async fn stamper(
    bus: &str,
    member: &str,
) -> (
    mpsc::UnboundedReceiver<Instant>,
    tokio::task::JoinHandle<()>,
) {
    let conn = zbus::connection::Builder::address(bus)
        .unwrap()
        .build()
        .await
        .unwrap();
    let rule =
        format!("type='signal',interface='im.pidgin.purple.PurpleInterface',member='{member}'");
    let mut stream = zbus::MessageStream::for_match_rule(rule.as_str(), &conn, Some(1024))
        .await
        .unwrap();
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
    let conn = zbus::connection::Builder::address(bus)
        .unwrap()
        .build()
        .await
        .unwrap();
    let rule = "type='signal',sender='org.freedesktop.DBus',member='NameOwnerChanged',\
                arg0='im.pidgin.purple.PurpleService',arg2=''";
    let mut stream = zbus::MessageStream::for_match_rule(rule, &conn, Some(1024))
        .await
        .unwrap();
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
    .unwrap();
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

async fn stamp(rx: &mut mpsc::UnboundedReceiver<Instant>) -> Instant {
    let t = tokio::time::timeout(STEP, rx.recv())
        .await
        .unwrap()
        .unwrap();
    // One such signal per toggle (one account); drop any extra.
    while rx.try_recv().is_ok() {}
    t
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    tokio::time::timeout(Duration::from_secs(180), async {
        let world = blocking(World::start);
        let finch = blocking(|| world.finch(&[world.alice()]));
        blocking(|| finch.wait_signed_in(STEP)).unwrap();
        let bus = world.bus.address();

        // One-shot: hub start (connect, match rules, query) until the answer is complete.
        let mut one_shot = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            let hub = hub_on(bus);
            settled(&hub).await;
            one_shot.push(t.elapsed());
            assert_eq!(snapshot(&hub).session, imstatus_core::Session::SignedIn);
        }
        summary(
            "imstatus@oneshot",
            "one-shot status (hub start → synced)",
            one_shot,
        );

        let hub = hub_on(bus);
        settled(&hub).await;
        let (_, mut sub) = subscribe(&hub).await;
        let (mut account_status, a) = stamper(bus, "AccountStatusChanged").await;
        let (mut saved_status, b) = stamper(bus, "SavedstatusChanged").await;
        let (mut signed_off, c) = stamper(bus, "AccountSignedOff").await;
        let (mut signed_on, d) = stamper(bus, "AccountSignedOn").await;
        let caller = zbus::connection::Builder::address(bus)
            .unwrap()
            .build()
            .await
            .unwrap();

        // Two transient saved statuses to toggle between.
        blocking(|| finch.set_status(5, Some("away-a"))).unwrap();
        let away = blocking(|| finch.purple_int("PurpleSavedstatusGetCurrent", &[])).unwrap();
        blocking(|| finch.set_status(2, None)).unwrap();
        let available = blocking(|| finch.purple_int("PurpleSavedstatusGetCurrent", &[])).unwrap();
        until(&mut sub, "status:available:0x002").await;
        for rx in [&mut account_status, &mut saved_status] {
            while rx.try_recv().is_ok() {}
        }

        let (mut from_saved, mut from_account, mut from_call) =
            (Vec::new(), Vec::new(), Vec::new());
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

        let account = blocking(|| first_account(&finch));
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
        let mut finch = finch;
        let (mut name_lost, e) = name_owner_stamper(bus).await;
        let (mut killed, mut killed_raw) = (Vec::new(), Vec::new());
        for _ in 0..10 {
            let hub = hub_on(bus);
            settled(&hub).await;
            let (_, mut sub) = subscribe(&hub).await;
            while name_lost.try_recv().is_ok() {}
            let t0 = Instant::now();
            finch.send_kill9();
            let t_event = event(&mut sub, "client_shutdown").await;
            killed.push(t_event - t0);
            killed_raw.push(stamp(&mut name_lost).await - t0);
            finch.kill9(); // waits for the exit
            blocking(|| finch.restart()).unwrap();
            blocking(|| finch.wait_signed_in(STEP)).unwrap();
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
    })
    .await
    .expect("within the limit");
}
