//! B3 of the benchmark suite (`bench/run.sh`): client-side ingest ceiling with no XMPP server
//! in the path. `bench/py/replay_server.py` (a fake c2s server: PLAIN, bind, a K-item roster)
//! streams M pre-rendered contact presences over loopback TCP as fast as the client reads;
//! here the full imstatus path consumes them: the XMPP source's stream (tokio-xmpp's XML
//! parser, xmpp-parsers), the translator, the hub and the core tracker (contacts tracked).
//! Every stanza carries a unique status marker, so each one is one `contact_status_changed`.
//!
//! ```sh
//! python3 bench/py/replay_server.py --port 25390 --k 2000 --m 100000 &
//! target/release/xmpp_ingest --port 25390 --m 100000
//! ```
//!
//! Prints one JSON line: presences/s from the first to the last event, CPU µs per stanza
//! (this process's user+system time over the same window) and RSS.

use std::time::{Duration, Instant};

use imstatus_bench::args::Args;
use imstatus_bench::hubs;
use imstatus_bench::system::own_usage;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::from_env(&[]);
    args.only(&["--port", "--m", "--k"]);
    let port: u16 = args.value("--port", 25390);
    let m: u64 = args.value("--m", 100_000);
    let k: u64 = args.value("--k", 2000);

    let t_login = Instant::now();
    let watched = hubs::xmpp("watcher@r.test", "pw", port, true, Duration::from_secs(20)).await;
    let hub = &watched.hub;
    let ready_s = t_login.elapsed().as_secs_f64();
    let base = hub.event_count();
    // Wait for the first replayed presence (the replay server starts 1 s after our presence);
    // a fine-grained poll, as its time is where the measured window starts.
    let wait_until = Instant::now() + Duration::from_secs(30);
    while hub.event_count() == base && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let c0 = own_usage().cpu_s;
    let t0 = Instant::now();
    let first = hub.event_count();
    let (mut last_count, mut t_last) = (first, t0);
    let hard = t0 + Duration::from_secs(120);
    loop {
        tokio::time::sleep(Duration::from_millis(1)).await;
        let now = Instant::now();
        let c = hub.event_count();
        if c != last_count {
            last_count = c;
            t_last = now;
        }
        if c - base >= m || now.duration_since(t_last) > Duration::from_secs(1) || now > hard {
            break;
        }
    }
    let end = own_usage();
    let events = last_count - base;
    let span = t_last.duration_since(t0).as_secs_f64();
    // Events counted inside the window (the first ones arrived before t0).
    let in_window = last_count - first;
    println!(
        "{{\"impl\": \"imstatus\", \"k\": {k}, \"m\": {m}, \"events\": {events}, \"ready_s\": {ready_s:.3}, \"rate\": {:.0}, \"cpu_us_per_stanza\": {:.2}, \"rss_mb\": {:.1}}}",
        in_window as f64 / span.max(1e-9),
        (end.cpu_s - c0) * 1e6 / in_window.max(1) as f64,
        end.rss_kb as f64 / 1024.0
    );
}
