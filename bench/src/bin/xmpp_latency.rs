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
//! target/release/xmpp_latency --port 25322 --domain p.test --n 500
//! target/release/xmpp_latency --port 25322 --observer roster --n 500
//! ```
//!
//! Where the subscriber runs (`--on`): `worker` (default) — the measuring loop is a spawned
//! task on the runtime's two workers, where the gateway's, the MQTT bridge's and `watch`'s
//! consumers run; the worker that read the stanza wakes it in place. `main` — the loop is the
//! main thread's `block_on`, so every event also crosses threads (a parked thread woken by
//! futex: ~0.2 ms more at p50 on the project's VM, B1 in `docs/benchmarks.md`).
//!
//! Options: `--port` (25322), `--domain` (p.test), `--n` (500), `--gap-ms` (5), `--password`
//! (pw), `--observer self|roster`, `--on worker|main`. Needs the server and accounts
//! `bench/run.sh` sets up. Prints one JSON line (µs).

use std::time::{Duration, Instant};

use imstatus_bench::args::Args;
use imstatus_bench::fail;
use imstatus_bench::hubs;
use imstatus_bench::stats::percentile;
use imstatus_core::{Availability, EventKind};
use imstatus_testkit::XmppClient;

fn main() {
    let args = Args::from_env(&[]);
    args.only(&[
        "--port",
        "--domain",
        "--n",
        "--gap-ms",
        "--password",
        "--observer",
        "--on",
    ]);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format_args!("runtime: {e}")));
    match args.text("--on", "worker").as_str() {
        "main" => runtime.block_on(measure(args)),
        "worker" => runtime.block_on(async {
            tokio::spawn(measure(args))
                .await
                .unwrap_or_else(|e| fail(format_args!("measuring task: {e}")))
        }),
        other => fail(format_args!("--on main|worker, not {other:?}")),
    }
}

async fn measure(args: Args) {
    let port: u16 = args.value("--port", 25322);
    let domain = args.text("--domain", "p.test");
    let n: usize = args.value("--n", 500);
    let gap = Duration::from_secs_f64(args.value::<f64>("--gap-ms", 5.0) / 1000.0);
    let password = args.text("--password", "pw");
    let roster = match args.text("--observer", "self").as_str() {
        "self" => false,
        "roster" => true,
        other => fail(format_args!("--observer self|roster, not {other:?}")),
    };
    let observer = if roster { "watcher" } else { "alice" };
    let alice_jid = format!("alice@{domain}");

    let watched = hubs::xmpp(
        &format!("{observer}@{domain}"),
        &password,
        port,
        roster,
        Duration::from_secs(30),
    )
    .await;
    let mut sub = watched.hub.subscribe();
    let mut desk = XmppClient::connect(port, "alice", &domain, &password, "desk")
        .unwrap_or_else(|e| fail(format_args!("alice/desk: {e}")));
    let say = |desk: &mut XmppClient, show: Option<&str>, status: &str| {
        if let Err(e) = desk.presence(show, Some(status), None) {
            fail(format_args!("alice/desk's presence: {e}"));
        }
    };
    say(&mut desk, None, "x start");
    // Let the start presence and what it causes pass before the first toggle.
    tokio::time::sleep(Duration::from_millis(500)).await;
    while sub.try_recv().is_some() {}

    let mut lat = Vec::with_capacity(n);
    let mut lost = 0usize;
    for seq in 0..n {
        let marker = format!("x {seq}");
        let show = if seq % 2 == 0 { Some("away") } else { None };
        let sent = Instant::now();
        say(&mut desk, show, &marker);
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
    let p = |q| percentile(&lat, q).unwrap_or(f64::NAN);
    println!(
        "{{\"impl\": \"imstatus\", \"observer\": \"{}\", \"n\": {n}, \"lost\": {lost}, \"p50_us\": {:.1}, \"p90_us\": {:.1}, \"p99_us\": {:.1}, \"max_us\": {:.1}, \"mean_us\": {:.1}}}",
        if roster { "roster" } else { "self" },
        p(50.0),
        p(90.0),
        p(99.0),
        lat.last().copied().unwrap_or(f64::NAN),
        mean
    );
    let _ = desk.close();
}
