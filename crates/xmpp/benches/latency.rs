//! B1 and B2 of the benchmark suite (`bench/run.sh`): presence latency through the XMPP source
//! and the hub. A raw XMPP client (imstatus-testkit's) logs in as alice/desk and toggles between
//! away and available, closed loop, N times; every toggle carries `<status>x SEQ</status>`.
//!
//! - `--observer self` (B1, default): imstatus logs in as alice (priority −1, visible, no
//!   contacts); a hub subscriber stamps each `status_changed` whose new message is the marker.
//! - `--observer roster` (B2): imstatus logs in as `watcher` (alice on its roster, subscription
//!   both; `contacts = true`, visible); the subscriber stamps each `contact_status_changed` of
//!   alice whose new message is the marker.
//!
//! Latency = `Instant` just before the write (as latency.py) → `Instant` when the subscriber
//! received the event (same process, same clock).
//!
//! ```sh
//! cargo bench -p imstatus-xmpp --bench latency -- --port 25322 --domain p.test --n 500
//! cargo bench -p imstatus-xmpp --bench latency -- --port 25322 --observer roster --n 500
//! ```
//!
//! Prints one JSON line (µs). Without `--bench` (i.e. under `cargo test --all-targets`) it does
//! nothing: it needs a server the suite starts.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use imstatus_core::{Availability, EventKind};
use imstatus_testkit::XmppClient;

use common::*;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        eprintln!("latency: run through bench/run.sh (needs a server); skipped");
        return;
    }
    let port: u16 = arg(&args, "--port", "25322").parse().unwrap();
    let domain = arg(&args, "--domain", "p.test");
    let n: usize = arg(&args, "--n", "500").parse().unwrap();
    let gap = Duration::from_secs_f64(arg(&args, "--gap-ms", "5").parse::<f64>().unwrap() / 1000.0);
    let password = arg(&args, "--password", "pw");
    let roster = match arg(&args, "--observer", "self").as_str() {
        "self" => false,
        "roster" => true,
        other => panic!("--observer self|roster, not {other:?}"),
    };
    let observer = if roster { "watcher" } else { "alice" };
    let alice_jid = format!("alice@{domain}");

    let (hub, _alice, _pwfile) = signed_in_hub(
        &format!("{observer}@{domain}"),
        &password,
        port,
        roster,
        Duration::from_secs(30),
    )
    .await;
    let mut sub = hub.subscribe();
    let mut desk = XmppClient::connect(port, "alice", &domain, &password, "desk").unwrap();
    desk.presence(None, Some("x start"), None).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    while sub.try_recv().is_some() {}

    let mut lat = Vec::with_capacity(n);
    let mut lost = 0usize;
    for seq in 0..n {
        let marker = format!("x {seq}");
        let show = if seq % 2 == 0 { Some("away") } else { None };
        let sent = Instant::now();
        desk.presence(show, Some(&marker), None).unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        let got = loop {
            match tokio::time::timeout_at(deadline, sub.recv()).await {
                Ok(Some(ev)) => {
                    let to = match &ev.kind {
                        EventKind::StatusChanged { to, .. } if !roster => to,
                        EventKind::ContactStatusChanged { contact, to, .. }
                            if roster && contact.as_str() == alice_jid =>
                        {
                            to
                        }
                        _ => continue,
                    };
                    if to.message.as_deref() == Some(marker.as_str())
                        && (to.availability == Availability::Away) == show.is_some()
                    {
                        break Some(Instant::now());
                    }
                }
                Ok(None) | Err(_) => break None,
            }
        };
        match got {
            Some(t) => lat.push(t.duration_since(sent).as_secs_f64() * 1e6),
            None => lost += 1,
        }
        if seq % 64 == 63 {
            // Drain what the server reflects to desk so its socket never fills.
            let _ = desk.read_for(Duration::from_millis(1));
        }
        tokio::time::sleep(gap).await;
    }
    lat.sort_by(f64::total_cmp);
    let mean = if lat.is_empty() {
        f64::NAN
    } else {
        lat.iter().sum::<f64>() / lat.len() as f64
    };
    println!(
        "{{\"impl\": \"imstatus\", \"observer\": \"{}\", \"n\": {n}, \"lost\": {lost}, \"p50_us\": {:.1}, \"p90_us\": {:.1}, \"p99_us\": {:.1}, \"max_us\": {:.1}, \"mean_us\": {:.1}}}",
        if roster { "roster" } else { "self" },
        pct(&lat, 50.0),
        pct(&lat, 90.0),
        pct(&lat, 99.0),
        lat.last().copied().unwrap_or(f64::NAN),
        mean
    );
    let _ = desk.close();
}
