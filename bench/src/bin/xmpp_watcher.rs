//! B4, B5 and B9 of the benchmark suite (`bench/run.sh`): imstatus as the watcher under test,
//! with the same stdout contract as `bench/py/watcher.py` (perf-baselines §5), so that
//! `bench/py/ingest_run.py`, `b5_run.py` and `b9_run.py` drive imstatus, slixmpp and the raw
//! reader identically.
//!
//! The XMPP source logs in as `watcher` (`contacts = true`, visible, plaintext) in a hub with
//! the default capacities; a hub subscriber (what `imstatus watch` and the gateway are) reads
//! every event. `gen.py` marks each presence `<status>KIND SEQ T_NS</status>` with its
//! CLOCK_MONOTONIC send time; the subscriber parses the marker of each
//! `contact_status_changed` and stamps it with CLOCK_MONOTONIC.
//!
//! - `READY roster=N login_s=S rss_kb=R` once the source is synced (hub start → `Synced`);
//!   contacts already online in the first snapshot are counted then.
//! - `P TOTAL kind=n …` every 0.25 s.
//! - On SIGTERM/SIGINT: `RESULT {json}` with, per kind, n, first/last receive, first send,
//!   the mid-80 % receive rate and latency percentiles (µs), plus RSS and CPU seconds; with
//!   `--dump FILE`, the hub's final snapshot of every contact (`jid TAB state TAB message`).
//! - `DOWN T_NS` / `RECONNECTED T_NS DOWN_NS` when the source loses its connection and when
//!   it is synced again (B9).
//!
//! imstatus reports a contact's `unavailable` as `offline` without its status text (the
//! marker), so an `offline` change carries no marker: it is counted for the kind of the
//! markers around it (the current phase's; after a pause of 0.3 s, the next marker's) and
//! has no latency sample.
//!
//! ```sh
//! target/release/xmpp_watcher --port 25322 --domain p.test [--user watcher] [--dump FILE]
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use imstatus_bench::args::Args;
use imstatus_bench::stats::percentile;
use imstatus_bench::system::{mono_ns, own_usage};
use imstatus_bench::{fail, hubs, serve};
use imstatus_core::{Availability, EventKind, Snapshot};

fn pct(sorted: &[f64], p: f64) -> f64 {
    percentile(sorted, p).unwrap_or(f64::NAN)
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.1}")
    } else {
        "null".to_owned()
    }
}

/// `KIND SEQ T_NS` (gen.py's marker) → (kind, t_ns).
fn marker(message: Option<&str>) -> Option<(char, u64)> {
    let mut it = message?.split(' ');
    let kind = it.next()?;
    let mut chars = kind.chars();
    let k = chars.next()?;
    if chars.next().is_some() || !k.is_ascii_lowercase() {
        return None;
    }
    let _seq: u64 = it.next()?.parse().ok()?;
    let t: u64 = it.next()?.parse().ok()?;
    it.next().is_none().then_some((k, t))
}

#[derive(Default)]
struct Kind {
    n: u64,
    first_recv: u64,
    last_recv: u64,
    first_send: u64,
    lat_us: Vec<f64>,
    recv: Vec<u64>,
}

#[derive(Default)]
struct Stats {
    total: u64,
    kinds: BTreeMap<char, Kind>,
    /// The kind of the last marker and when it came.
    current: Option<(char, u64)>,
    /// `offline` changes waiting for the next marker (they came after a pause), and when the
    /// first of them came.
    pending_offline: u64,
    pending_since: u64,
    offline_counted: u64,
}

/// A pause longer than this between markers separates two phases of the generator (the
/// drivers pause at least 0.3 s between phases).
const PHASE_GAP_NS: u64 = 200_000_000;
/// Pending `offline` changes with no marker after them for this long were the end of the
/// current phase, not the start of the next.
const PENDING_FLUSH_NS: u64 = 2_000_000_000;

impl Stats {
    fn kind(&mut self, k: char, recv: u64, send: u64) -> &mut Kind {
        let e = self.kinds.entry(k).or_insert_with(|| Kind {
            first_recv: recv,
            first_send: send,
            ..Kind::default()
        });
        e.first_send = e.first_send.min(send);
        e
    }

    fn mark(&mut self, k: char, t_send: u64, recv: u64) {
        let pending = std::mem::take(&mut self.pending_offline);
        let e = self.kind(k, recv, t_send);
        e.n += 1 + pending;
        e.last_recv = recv;
        e.lat_us.push(recv.saturating_sub(t_send) as f64 / 1000.0);
        e.recv.push(recv);
        self.offline_counted += pending;
        self.current = Some((k, recv));
    }

    fn offline(&mut self, recv: u64) {
        match self.current {
            Some((k, at))
                if self.pending_offline == 0 && recv.saturating_sub(at) < PHASE_GAP_NS =>
            {
                let e = self.kind(k, recv, recv);
                e.n += 1;
                e.last_recv = recv;
                e.recv.push(recv);
                self.offline_counted += 1;
            }
            _ => {
                if self.pending_offline == 0 {
                    self.pending_since = recv;
                }
                self.pending_offline += 1;
            }
        }
    }

    /// Counts long-pending `offline` changes for the current phase (see `PENDING_FLUSH_NS`).
    fn flush_pending(&mut self, now: u64) {
        if self.pending_offline == 0 || now.saturating_sub(self.pending_since) < PENDING_FLUSH_NS {
            return;
        }
        if let Some((k, _)) = self.current {
            let pending = std::mem::take(&mut self.pending_offline);
            let e = self.kind(k, now, now);
            e.n += pending;
            self.offline_counted += pending;
        }
    }

    fn progress(&self) -> String {
        let mut s = format!("P {}", self.total);
        for (k, v) in &self.kinds {
            let _ = write!(s, " {k}={}", v.n);
        }
        s
    }

    fn result(&mut self, extra: &str) -> String {
        let mut s = format!("{{\"total_presence\": {}", self.total);
        for (k, v) in &mut self.kinds {
            v.lat_us.sort_by(f64::total_cmp);
            v.recv.sort_unstable();
            let n = v.recv.len();
            let (i10, i90) = (n / 10, n * 9 / 10);
            let mid80 = if n >= 20 && v.recv[i90 - 1] > v.recv[i10] {
                num((i90 - i10) as f64 / ((v.recv[i90 - 1] - v.recv[i10]) as f64 / 1e9))
            } else {
                "null".to_owned()
            };
            let _ = write!(
                s,
                ", \"{k}\": {{\"n\": {}, \"first_recv\": {}, \"last_recv\": {}, \"first_send\": {}, \"rate_mid80\": {mid80}, \"p50_us\": {}, \"p90_us\": {}, \"p99_us\": {}, \"max_us\": {}, \"lat_samples\": {}}}",
                v.n,
                v.first_recv,
                v.last_recv,
                v.first_send,
                num(pct(&v.lat_us, 50.0)),
                num(pct(&v.lat_us, 90.0)),
                num(pct(&v.lat_us, 99.0)),
                num(v.lat_us.last().copied().unwrap_or(f64::NAN)),
                v.lat_us.len()
            );
        }
        let usage = own_usage();
        let (cpu, rss) = (usage.cpu_s, usage.rss_kb);
        let _ = write!(
            s,
            ", \"offline_counted\": {}, \"pending_offline\": {}, \"rss_kb\": {rss}, \"cpu_s\": {cpu:.3}{extra}}}",
            self.offline_counted, self.pending_offline
        );
        s
    }
}

fn state_word(a: Availability) -> &'static str {
    match a {
        Availability::Available => "available",
        Availability::Away => "away",
        Availability::ExtendedAway => "xa",
        Availability::Busy => "dnd",
        Availability::Chatty => "chat",
        Availability::Offline => "unavailable",
        _ => "unknown",
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::from_env(&[]);
    args.only(&["--port", "--domain", "--user", "--dump"]);
    let t0 = Instant::now();
    mono_ns();
    let port: u16 = args.value("--port", 25322);
    let domain = args.text("--domain", "p.test");
    let user = args.text("--user", "watcher");
    let dump = args.get("--dump").map(str::to_owned);
    // From now on, SIGTERM and SIGINT end the session with its RESULT.
    let mut shutdown = serve::Shutdown::listen();

    let watched = hubs::xmpp(
        &format!("{user}@{domain}"),
        "pw",
        port,
        true,
        Duration::from_secs(60),
    )
    .await;
    let (hub, account) = (&watched.hub, &watched.account);
    let mut sub = hub.subscribe();
    let mut st = Stats::default();
    let mut roster = 0usize;
    // The subscription starts with the snapshot: contacts already online are known now.
    while let Some(ev) = sub.try_recv() {
        if let EventKind::Snapshot { snapshot, .. } = &ev.kind {
            let now = mono_ns();
            roster = snapshot.contacts.len();
            for c in &snapshot.contacts {
                if let Some((k, t)) = marker(c.message.as_deref()) {
                    st.total += 1;
                    st.mark(k, t, now);
                }
            }
            break;
        }
    }
    let rss = own_usage().rss_kb;
    say(&format!(
        "READY roster={roster} login_s={:.3} rss_kb={rss}",
        t0.elapsed().as_secs_f64()
    ));

    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let (mut down, mut reconnects, mut recovery_s) = (None::<u64>, 0u32, Vec::<f64>::new());
    loop {
        tokio::select! {
            ev = sub.recv() => {
                let Some(ev) = ev else { break };
                let now = mono_ns();
                match &ev.kind {
                    EventKind::ContactStatusChanged { from, to, .. } => {
                        st.total += 1;
                        if let Some((k, t)) = marker(to.message.as_deref()) {
                            st.mark(k, t, now);
                        } else if to.availability == Availability::Offline
                            && from.availability != Availability::Offline
                            && down.is_none()
                        {
                            st.offline(now);
                        }
                    }
                    EventKind::SourceError { session_unknown: true, .. } => {
                        down = Some(now);
                        say(&format!("DOWN {now}"));
                    }
                    _ => {}
                }
            }
            // The source is synced again once the hub no longer reports it down.
            _ = tokio::time::sleep(Duration::from_millis(2)), if down.is_some() => {
                if hub.source_error(account).is_none() {
                    let (now, at) = (mono_ns(), down.take().unwrap_or_default());
                    reconnects += 1;
                    recovery_s.push((now - at) as f64 / 1e9);
                    say(&format!("RECONNECTED {now} {at}"));
                }
            }
            _ = tick.tick() => {
                st.flush_pending(mono_ns());
                say(&st.progress());
            }
            _ = shutdown.wait() => break,
        }
    }
    let recovery = recovery_s
        .iter()
        .map(|r| format!("{r:.3}"))
        .collect::<Vec<_>>()
        .join(", ");
    let extra = format!(
        ", \"resyncs\": {}, \"events\": {}, \"reconnects\": {reconnects}, \"recovery_s\": [{recovery}]",
        hub.resync_count(),
        hub.event_count()
    );
    say(&format!("RESULT {}", st.result(&extra)));
    if let Some(path) = dump {
        let snap: Snapshot = match hub.snapshot(account).map(|e| e.kind.clone()) {
            Some(EventKind::Snapshot { snapshot, .. }) => *snapshot,
            _ => Snapshot::unknown(),
        };
        let mut text = String::new();
        for c in &snap.contacts {
            let _ = writeln!(
                text,
                "{}\t{}\t{}",
                c.contact.as_str(),
                state_word(c.availability),
                c.message.as_deref().unwrap_or("")
            );
        }
        if let Err(e) = std::fs::write(&path, text) {
            fail(format_args!("writing {path}: {e}"));
        }
    }
}
