//! The load client of benchmark B7 (`bench/run.sh`): N Server-Sent Events subscribers on one
//! tokio runtime, against a server in another process (`gateway_server` or `http_floor`),
//! while the server's control port makes R status changes a second for D seconds.
//!
//! ```sh
//! target/release/sse_fanout --url http://127.0.0.1:25282/v1/events --token bench-token --n 1000 \
//!     --control 127.0.0.1:25284 --rate 1000 --secs 3 --pid <server pid>
//! ```
//!
//! Each change carries `b7 <seq> <CLOCK_MONOTONIC ns at the server just before the change>` in
//! its status message; a subscriber stamps every body chunk it reads with the same clock, and
//! takes the highest marker of each SSE event (imstatus's `contact_status_changed` also holds
//! the previous message in `from`). Snapshots are not counted as deliveries (a snapshot that
//! arrives during the flow is a resync). Prints one JSON line: sent, delivered, lost
//! (= N × sent − distinct (subscriber, seq) pairs), duplicates, resyncs, delivery latency
//! percentiles, the server's CPU over the flow (from `/proc/<pid>/stat`, from `RATE` until every
//! event is delivered or the drain deadline) and its RSS per subscriber (RSS with N
//! subscribers connected and their snapshots read, minus RSS before, over N).
//!
//! `lost` counts what did not arrive within the drain time after the last change (`--drain`),
//! whether it never would (a resync replaced it) or was only late; the latency percentiles are
//! over the deliveries that arrived. `rate_achieved` = changes sent / seconds the server took
//! to send them (below `--rate` when the server's own sender was starved).
//!
//! Options: `--workers W` (tokio workers of this client, default 1), `--drain S` (seconds to
//! wait after the last change, default 10), `--connect-timeout S` (default 60).
//!
//! Several servers (the gateways of a cluster, `cluster_fanout`): `--url` and `--pid` take
//! comma-separated lists; subscriber i connects to URL i mod the count, and the server's CPU
//! and memory are the sums over the pids.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, Request};
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use imstatus_bench::args::Args;
use imstatus_bench::fail;
use imstatus_bench::stats::percentile;
use imstatus_bench::system::{mono_ns, usage, Usage};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::{watch, Semaphore};

struct Opts {
    urls: Vec<String>,
    token: Option<String>,
    n: usize,
    control: String,
    rate: u64,
    secs: f64,
    pids: Vec<String>,
    workers: usize,
    drain: f64,
    connect_timeout: f64,
}

fn opts() -> Opts {
    let args = Args::from_env(&[]);
    args.only(&[
        "--url",
        "--token",
        "--n",
        "--control",
        "--rate",
        "--secs",
        "--pid",
        "--workers",
        "--drain",
        "--connect-timeout",
    ]);
    let Some(pid) = args.get("--pid") else {
        fail("--pid of the server is required")
    };
    Opts {
        urls: args
            .text("--url", "http://127.0.0.1:25282/v1/events")
            .split(',')
            .map(str::to_owned)
            .collect(),
        token: args.get("--token").map(str::to_owned),
        n: args.value("--n", 100),
        control: args.text("--control", "127.0.0.1:25284"),
        rate: args.value("--rate", 1000),
        secs: args.value("--secs", 3.0),
        pids: pid.split(',').map(str::to_owned).collect(),
        workers: args.value("--workers", 1),
        drain: args.value("--drain", 10.0),
        connect_timeout: args.value("--connect-timeout", 60.0),
    }
}

#[derive(Default)]
struct Tally {
    connected: bool,
    delivered: u64,
    dup: u64,
    resyncs: u64,
    out_of_range: u64,
    lat_us: Vec<u32>,
}

struct Sub {
    seq0: u64,
    total: u64,
    seen: Vec<u64>,
    buf: Vec<u8>,
    tally: Tally,
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    let mut at = from;
    while at + needle.len() <= hay.len() {
        let p = at
            + hay[at..=hay.len() - needle.len()]
                .iter()
                .position(|&b| b == first)?;
        if &hay[p + 1..p + needle.len()] == rest {
            return Some(p);
        }
        at = p + 1;
    }
    None
}

fn number(bytes: &[u8]) -> (u64, usize) {
    let mut v = 0u64;
    let mut i = 0;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        v = v * 10 + u64::from(bytes[i] - b'0');
        i += 1;
    }
    (v, i)
}

impl Sub {
    fn event(&mut self, ev: &[u8], now: u64, flowing: bool) {
        if find(ev, b"\"event\":\"snapshot\"", 0).is_some() {
            if flowing {
                self.tally.resyncs += 1;
            }
            return;
        }
        // The highest `b7 <seq> <ns>` marker of the event.
        let mut best: Option<(u64, u64)> = None;
        let mut at = 0;
        while let Some(p) = find(ev, b"b7 ", at) {
            let (seq, l1) = number(&ev[p + 3..]);
            at = p + 3 + l1;
            if l1 == 0 || ev.get(at) != Some(&b' ') {
                continue;
            }
            let (ns, l2) = number(&ev[at + 1..]);
            at += 1 + l2;
            if l2 > 0 && best.is_none_or(|(s, _)| seq > s) {
                best = Some((seq, ns));
            }
        }
        let Some((seq, ns)) = best else { return };
        let Some(seq) = seq.checked_sub(self.seq0).filter(|s| *s < self.total) else {
            self.tally.out_of_range += 1;
            return;
        };
        let (w, b) = ((seq / 64) as usize, seq % 64);
        if self.seen[w] & (1 << b) != 0 {
            self.tally.dup += 1;
            return;
        }
        self.seen[w] |= 1 << b;
        self.tally.delivered += 1;
        let us = now.saturating_sub(ns) / 1000;
        self.tally
            .lat_us
            .push(u32::try_from(us).unwrap_or(u32::MAX));
    }

    fn feed(&mut self, data: &[u8], now: u64, flowing: bool) {
        if self.buf.is_empty() {
            // The common case: the chunk holds whole events; no copy.
            let rest = self.events(data, now, flowing);
            self.buf.extend_from_slice(&data[rest..]);
            return;
        }
        self.buf.extend_from_slice(data);
        let buf = std::mem::take(&mut self.buf);
        let rest = self.events(&buf, now, flowing);
        self.buf = buf;
        self.buf.drain(..rest);
    }

    /// Handles every complete event (ended by a blank line) of `data`; returns where the
    /// incomplete rest starts.
    fn events(&mut self, data: &[u8], now: u64, flowing: bool) -> usize {
        let mut start = 0;
        while let Some(end) = find(data, b"\n\n", start) {
            self.event(&data[start..end], now, flowing);
            start = end + 2;
        }
        start
    }
}

struct Shared {
    ready: AtomicUsize,
    flowing: AtomicBool,
    done: AtomicUsize,
    done_notify: tokio::sync::Notify,
    ready_notify: tokio::sync::Notify,
    errors: AtomicUsize,
}

/// Prints the first few connection errors only.
fn complain(shared: &Shared, what: &str) {
    if shared.errors.fetch_add(1, Ordering::Relaxed) < 5 {
        eprintln!("sse_fanout: {what}");
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    client: HttpClient,
    o: Arc<Opts>,
    url: usize,
    seq0: u64,
    total: u64,
    shared: Arc<Shared>,
    connect: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> Tally {
    let mut sub = Sub {
        seq0,
        total,
        seen: vec![0; (total as usize).div_ceil(64)],
        buf: Vec::with_capacity(4096),
        tally: Tally::default(),
    };
    let mut body = None;
    for _attempt in 0..3 {
        // The semaphore is never closed.
        let Ok(permit) = connect.acquire().await else {
            break;
        };
        let url = o.urls[url % o.urls.len()].as_str();
        let mut req = Request::get(url).header(header::ACCEPT, "text/event-stream");
        if let Some(t) = &o.token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match req.body(Empty::<Bytes>::new()) {
            Ok(req) => req,
            Err(e) => fail(format_args!("a request for {url}: {e}")),
        };
        let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req)).await;
        drop(permit);
        match resp {
            Ok(Ok(r)) if r.status().is_success() => {
                body = Some(r.into_body());
                break;
            }
            Ok(Ok(r)) => complain(&shared, &format!("HTTP {}", r.status())),
            Ok(Err(e)) => complain(&shared, &format!("connect: {e}")),
            Err(_) => complain(&shared, "connect timed out"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let Some(mut body) = body else {
        shared.ready.fetch_add(1, Ordering::SeqCst);
        shared.ready_notify.notify_one();
        shared.done.fetch_add(1, Ordering::SeqCst);
        shared.done_notify.notify_one();
        return sub.tally;
    };
    sub.tally.connected = true;
    let mut first = true;
    let mut finished = false;
    loop {
        let frame = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            f = body.frame() => f,
        };
        let now = mono_ns();
        let Some(Ok(frame)) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        sub.feed(&data, now, shared.flowing.load(Ordering::Relaxed));
        if first {
            first = false;
            shared.ready.fetch_add(1, Ordering::SeqCst);
            shared.ready_notify.notify_one();
        }
        if !finished && sub.tally.delivered >= total {
            finished = true;
            shared.done.fetch_add(1, Ordering::SeqCst);
            shared.done_notify.notify_one();
        }
    }
    if first {
        shared.ready.fetch_add(1, Ordering::SeqCst);
        shared.ready_notify.notify_one();
    }
    if !finished {
        shared.done.fetch_add(1, Ordering::SeqCst);
        shared.done_notify.notify_one();
    }
    sub.tally
}

async fn wait_count(counter: &AtomicUsize, notify: &tokio::sync::Notify, n: usize, limit: Instant) {
    while counter.load(Ordering::SeqCst) < n && Instant::now() < limit {
        let _ = tokio::time::timeout(Duration::from_millis(50), notify.notified()).await;
    }
}

fn pct(sorted: &[u32], p: f64) -> u64 {
    percentile(sorted, p).map_or(0, u64::from)
}

async fn run(o: Arc<Opts>) {
    let total = (o.rate as f64 * o.secs).round() as u64;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build(connector);
    let shared = Arc::new(Shared {
        ready: AtomicUsize::new(0),
        flowing: AtomicBool::new(false),
        done: AtomicUsize::new(0),
        done_notify: tokio::sync::Notify::new(),
        ready_notify: tokio::sync::Notify::new(),
        errors: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let connect = Arc::new(Semaphore::new(128));
    // The first seq of the coming flow, and the control connection for it.
    let stream = tokio::net::TcpStream::connect(&o.control)
        .await
        .unwrap_or_else(|e| fail(format_args!("the server's control port {}: {e}", o.control)));
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut answer = String::new();
    if wr.write_all(b"SEQ0\n").await.is_err() || rd.read_line(&mut answer).await.is_err() {
        fail("the control connection broke");
    }
    let Some(seq0) = answer
        .strip_prefix("SEQ0 ")
        .and_then(|v| v.trim().parse::<u64>().ok())
    else {
        fail(format_args!(
            "not `SEQ0 <n>` from the control port: {answer:?}"
        ))
    };
    let server_usage = || {
        o.pids
            .iter()
            .map(|p| usage(p))
            .fold(Usage::default(), |a, b| Usage {
                cpu_s: a.cpu_s + b.cpu_s,
                rss_kb: a.rss_kb + b.rss_kb,
            })
    };
    let rss_before = server_usage().rss_kb;
    let t_connect = Instant::now();
    let tasks: Vec<_> = (0..o.n)
        .map(|i| {
            tokio::spawn(subscriber(
                client.clone(),
                o.clone(),
                i,
                seq0,
                total,
                shared.clone(),
                connect.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    wait_count(
        &shared.ready,
        &shared.ready_notify,
        o.n,
        Instant::now() + Duration::from_secs_f64(o.connect_timeout),
    )
    .await;
    let connect_s = t_connect.elapsed().as_secs_f64();
    // Let the snapshots be read, then sample the server's memory with N subscribers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server0 = server_usage();
    let (rss_subs, cpu0) = (server0.rss_kb, server0.cpu_s);
    let me0 = usage("self").cpu_s;
    let t0 = Instant::now();
    shared.flowing.store(true, Ordering::SeqCst);
    if wr
        .write_all(format!("RATE {} {}\n", o.rate, o.secs).as_bytes())
        .await
        .is_err()
    {
        fail("the control connection broke");
    }
    answer.clear();
    match tokio::time::timeout(
        Duration::from_secs_f64(o.secs + 30.0),
        rd.read_line(&mut answer),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => fail(format_args!("the control connection broke: {e}")),
        Err(_) => fail("the server did not answer RATE in time"),
    }
    let sent: u64 = answer
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let flow_s = t0.elapsed().as_secs_f64();
    wait_count(
        &shared.done,
        &shared.done_notify,
        o.n,
        Instant::now() + Duration::from_secs_f64(o.drain),
    )
    .await;
    let window = t0.elapsed().as_secs_f64();
    let server = server_usage();
    let (cpu1, rss_after) = (server.cpu_s, server.rss_kb);
    let me1 = usage("self").cpu_s;
    let _ = stop_tx.send(true);
    let mut lat = Vec::new();
    let (mut delivered, mut dup, mut resyncs, mut oor, mut connected) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for t in tasks {
        if let Ok(t) = t.await {
            delivered += t.delivered;
            dup += t.dup;
            resyncs += t.resyncs;
            oor += t.out_of_range;
            connected += u64::from(t.connected);
            lat.extend_from_slice(&t.lat_us);
        }
    }
    lat.sort_unstable();
    let expected = o.n as u64 * sent;
    let server_cpu = cpu1 - cpu0;
    let line = serde_json::json!({
        "n": o.n,
        "connected": connected,
        "rate": o.rate,
        "secs": o.secs,
        "sent": sent,
        "expected": expected,
        "delivered": delivered,
        "lost": expected.saturating_sub(delivered),
        "dup": dup,
        "resyncs": resyncs,
        "out_of_range": oor,
        "connect_errors": shared.errors.load(Ordering::Relaxed),
        "p50_us": pct(&lat, 50.0),
        "p90_us": pct(&lat, 90.0),
        "p99_us": pct(&lat, 99.0),
        "max_us": lat.last().copied().unwrap_or(0),
        "connect_s": (connect_s * 1000.0).round() / 1000.0,
        "flow_s": (flow_s * 1000.0).round() / 1000.0,
        "rate_achieved": (sent as f64 / flow_s).round(),
        "delivered_pct": if expected > 0 { (delivered as f64 * 1e4 / expected as f64).round() / 100.0 } else { 0.0 },
        "window_s": (window * 1000.0).round() / 1000.0,
        "server_cpu_pct": (server_cpu / window * 1000.0).round() / 10.0,
        "server_cpu_s": (server_cpu * 1000.0).round() / 1000.0,
        "server_cpu_us_per_delivery": if delivered > 0 { (server_cpu * 1e7 / delivered as f64).round() / 10.0 } else { 0.0 },
        "client_cpu_pct": ((me1 - me0) / window * 1000.0).round() / 10.0,
        "rss_kb_before": rss_before,
        "rss_kb_subs": rss_subs,
        "rss_kb_after": rss_after,
        "kb_per_sub": if o.n > 0 { ((rss_subs as f64 - rss_before as f64) / o.n as f64 * 10.0).round() / 10.0 } else { 0.0 },
        "kb_per_sub_after": if o.n > 0 { ((rss_after as f64 - rss_before as f64) / o.n as f64 * 10.0).round() / 10.0 } else { 0.0 },
    });
    println!("{line}");
}

fn main() {
    let o = Arc::new(opts());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(o.workers.max(1))
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format_args!("the tokio runtime: {e}")));
    rt.block_on(run(o));
    // Do not wait for connections still being torn down.
    std::process::exit(0);
}
