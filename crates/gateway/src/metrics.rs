//! Prometheus metrics: hub counters, stream and connection gauges, per-account source state and
//! a request latency histogram per route, rendered as the text exposition format.
//!
//! A token limited to some accounts sees only the per-account families, for its accounts: the
//! hub- and gateway-wide ones (events, subscribers, streams, connections, requests by route)
//! describe what other tokens' clients do, so they are shown only to `*` tokens (and, without
//! tokens, to everyone, who may see every account anyway).
//!
//! The counters are bumped where things happen (the accept loop, the streams, the origin
//! check); requests are timed by the [`Track`](crate::track::Track) layer on each route.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use imstatus_core::Client;
use imstatus_hub::Hub;

use crate::auth::Caller;

/// Appends series in Prometheus' text format to a `/metrics` answer
/// ([`Gateway::with_extra_metrics`](crate::Gateway::with_extra_metrics)).
pub type ExtraMetrics = std::sync::Arc<dyn Fn(&mut String) + Send + Sync>;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Label for requests that matched no route.
const OTHER: &str = "other";

/// How many copies of each route's request counters there are: each thread adds to one copy
/// (see [`shard`]: the threads take them in turn), so the gateway's worker threads (2 by
/// default) do not write the same cache line per request; `/metrics` sums the copies. Past 8
/// recording threads copies are shared, still correctly.
const SHARDS: usize = 8;

/// One copy of a route's request counters, on cache lines of its own (128 bytes: the
/// adjacent-line prefetcher of x86 moves lines in pairs).
#[repr(align(128))]
#[derive(Default)]
struct Counts {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
    /// Responses by status class: 1xx … 5xx.
    classes: [AtomicU64; 5],
}

/// The copy of the counters the calling thread adds to: threads take copies in turn, on their
/// first request.
fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

struct RouteMetrics {
    route: &'static str,
    shards: [Counts; SHARDS],
}

/// A route's counters summed over the copies.
#[derive(Default)]
struct Totals {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum_nanos: u64,
    classes: [u64; 5],
}

impl RouteMetrics {
    fn new(route: &'static str) -> Self {
        RouteMetrics {
            route,
            shards: Default::default(),
        }
    }

    fn record(&self, elapsed: Duration, status: StatusCode) {
        let counts = &self.shards[shard()];
        let secs = elapsed.as_secs_f64();
        // Cumulative buckets are computed when rendering; store each observation once.
        if let Some(i) = BUCKETS.iter().position(|&b| secs <= b) {
            counts.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        counts.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        counts.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        counts.classes[class].fetch_add(1, Ordering::Relaxed);
    }

    /// The counters summed over the copies (each read on its own: a request recorded meanwhile
    /// may show in some totals and not yet in others, as with any scrape). Sums wrap as the
    /// atomic adds do.
    fn totals(&self) -> Totals {
        let mut t = Totals::default();
        let add = |sum: &mut u64, n: &AtomicU64| *sum = sum.wrapping_add(n.load(Ordering::Relaxed));
        for c in &self.shards {
            for (sum, n) in t.buckets.iter_mut().zip(&c.buckets) {
                add(sum, n);
            }
            add(&mut t.count, &c.count);
            add(&mut t.sum_nanos, &c.sum_nanos);
            for (sum, n) in t.classes.iter_mut().zip(&c.classes) {
                add(sum, n);
            }
        }
        t
    }
}

/// The gateway's own counters.
pub(crate) struct Metrics {
    routes: Vec<RouteMetrics>,
    pub(crate) sse_streams: AtomicUsize,
    pub(crate) ws_streams: AtomicUsize,
    pub(crate) sse_total: AtomicU64,
    pub(crate) ws_total: AtomicU64,
    pub(crate) ws_slow_disconnects: AtomicU64,
    /// Connections handed to HTTP.
    pub(crate) connections_accepted: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub(crate) refused_max: AtomicU64,
    /// Connections refused because `max_connections_per_ip` were open from the address.
    pub(crate) refused_per_ip: AtomicU64,
    /// Connections closed because the request head did not arrive in time.
    pub(crate) header_timeouts: AtomicU64,
    /// Connections closed because nothing moved for the idle timeout.
    pub(crate) idle_timeouts: AtomicU64,
    /// Requests refused because they came from a page of another site.
    pub(crate) cross_site_refused: AtomicU64,
}

impl Metrics {
    pub(crate) fn new(routes: &[&'static str]) -> Self {
        let mut list: Vec<RouteMetrics> = routes.iter().map(|r| RouteMetrics::new(r)).collect();
        list.push(RouteMetrics::new(OTHER));
        Metrics {
            routes: list,
            sse_streams: AtomicUsize::new(0),
            ws_streams: AtomicUsize::new(0),
            sse_total: AtomicU64::new(0),
            ws_total: AtomicU64::new(0),
            ws_slow_disconnects: AtomicU64::new(0),
            connections_accepted: AtomicU64::new(0),
            refused_max: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
            header_timeouts: AtomicU64::new(0),
            idle_timeouts: AtomicU64::new(0),
            cross_site_refused: AtomicU64::new(0),
        }
    }

    fn route(&self, path: Option<&str>) -> &RouteMetrics {
        let found = path.and_then(|p| self.routes.iter().find(|r| r.route == p));
        // The last entry is always `other`.
        found.unwrap_or_else(|| &self.routes[self.routes.len() - 1])
    }

    /// Records a request answered with `status` after `elapsed`, under its route (a path
    /// template); `None` or a route not given to [`Metrics::new`] counts as `other`.
    pub(crate) fn record(&self, route: Option<&str>, elapsed: Duration, status: StatusCode) {
        self.route(route).record(elapsed, status);
    }

    /// Records a request that matched no route (fallbacks run outside the route layer).
    pub(crate) fn record_unmatched(&self, status: StatusCode) {
        self.record(None, Duration::ZERO, status);
    }

    /// Renders everything the caller may see: per-account series only for its accounts, and
    /// the hub- and gateway-wide ones (and `extra`'s) only when it sees every account. `hub`
    /// is the gateway's hub and `open_connections` how many connections it has open.
    pub(crate) fn render(
        &self,
        hub: &Hub,
        open_connections: usize,
        caller: &Caller,
        extra: Option<&ExtraMetrics>,
    ) -> String {
        let mut out = String::with_capacity(4096);
        let all = caller.sees_all();
        if all {
            self.render_global(&mut out, hub, open_connections);
        }
        self.render_accounts(&mut out, hub, caller);
        if all {
            self.render_requests(&mut out);
            if let Some(extra) = extra {
                extra(&mut out);
            }
        }
        out
    }

    /// The hub's counters, the gateway's streams and connections.
    fn render_global(&self, out: &mut String, hub: &Hub, open_connections: usize) {
        family(
            out,
            "imstatus_events_published_total",
            "counter",
            "Events the hub has published.",
        );
        let _ = writeln!(out, "imstatus_events_published_total {}", hub.event_count());
        family(
            out,
            "imstatus_subscribers",
            "gauge",
            "Open hub subscriptions (gateway streams and any other subscriber).",
        );
        let _ = writeln!(out, "imstatus_subscribers {}", hub.subscriber_count());
        family(
            out,
            "imstatus_lagged_resyncs_total",
            "counter",
            "Subscribers that fell behind the hub's ring and were resynchronised with a snapshot.",
        );
        let _ = writeln!(out, "imstatus_lagged_resyncs_total {}", hub.resync_count());
        family(
            out,
            "imstatus_gateway_streams",
            "gauge",
            "Open event streams of the gateway, by transport.",
        );
        let _ = writeln!(
            out,
            "imstatus_gateway_streams{{transport=\"sse\"}} {}\nimstatus_gateway_streams{{transport=\"ws\"}} {}",
            self.sse_streams.load(Ordering::Relaxed),
            self.ws_streams.load(Ordering::Relaxed)
        );
        family(
            out,
            "imstatus_gateway_streams_opened_total",
            "counter",
            "Event streams the gateway has opened, by transport.",
        );
        let _ = writeln!(
            out,
            "imstatus_gateway_streams_opened_total{{transport=\"sse\"}} {}\nimstatus_gateway_streams_opened_total{{transport=\"ws\"}} {}",
            self.sse_total.load(Ordering::Relaxed),
            self.ws_total.load(Ordering::Relaxed)
        );
        family(
            out,
            "imstatus_gateway_ws_slow_disconnects_total",
            "counter",
            "WebSocket clients closed because a send did not complete within the send timeout.",
        );
        let _ = writeln!(
            out,
            "imstatus_gateway_ws_slow_disconnects_total {}",
            self.ws_slow_disconnects.load(Ordering::Relaxed)
        );
        family(
            out,
            "imstatus_gateway_connections",
            "gauge",
            "Open HTTP connections, WebSockets included.",
        );
        let _ = writeln!(out, "imstatus_gateway_connections {open_connections}");
        family(
            out,
            "imstatus_gateway_connections_accepted_total",
            "counter",
            "HTTP connections accepted and served.",
        );
        let _ = writeln!(
            out,
            "imstatus_gateway_connections_accepted_total {}",
            self.connections_accepted.load(Ordering::Relaxed)
        );
        family(
            out,
            "imstatus_gateway_connections_refused_total",
            "counter",
            "Connections refused with 503, by the limit that was reached.",
        );
        let _ = writeln!(
            out,
            "imstatus_gateway_connections_refused_total{{limit=\"max_connections\"}} {}\nimstatus_gateway_connections_refused_total{{limit=\"max_connections_per_ip\"}} {}",
            self.refused_max.load(Ordering::Relaxed),
            self.refused_per_ip.load(Ordering::Relaxed)
        );
        family(
            out,
            "imstatus_gateway_connections_timed_out_total",
            "counter",
            "Connections closed by a timeout: header_read_timeout or idle_timeout.",
        );
        let _ = writeln!(
            out,
            "imstatus_gateway_connections_timed_out_total{{timeout=\"header_read\"}} {}\nimstatus_gateway_connections_timed_out_total{{timeout=\"idle\"}} {}",
            self.header_timeouts.load(Ordering::Relaxed),
            self.idle_timeouts.load(Ordering::Relaxed)
        );
        family(
            out,
            "imstatus_gateway_cross_site_refused_total",
            "counter",
            "Requests refused because a page of another site made them (Origin, Sec-Fetch-Site).",
        );
        let _ = writeln!(
            out,
            "imstatus_gateway_cross_site_refused_total {}",
            self.cross_site_refused.load(Ordering::Relaxed)
        );
    }

    /// The per-account families, for the accounts the caller may see.
    fn render_accounts(&self, out: &mut String, hub: &Hub, caller: &Caller) {
        let accounts: Vec<_> = hub
            .snapshots()
            .into_iter()
            .filter(|e| caller.can_see(&e.account))
            .collect();
        family(
            out,
            "imstatus_account_source_up",
            "gauge",
            "1 while the account's source sees the account, 0 while it is down.",
        );
        for e in &accounts {
            let up = u8::from(hub.source_error(&e.account).is_none());
            let _ = writeln!(
                out,
                "imstatus_account_source_up{{account=\"{}\",source=\"{}\"}} {up}",
                label(e.account.as_str()),
                e.source
            );
        }
        family(
            out,
            "imstatus_account_source_error",
            "gauge",
            "1 with the error code that keeps the account's source down.",
        );
        for e in &accounts {
            if let Some(err) = hub.source_error(&e.account) {
                let _ = writeln!(
                    out,
                    "imstatus_account_source_error{{account=\"{}\",code=\"{}\"}} 1",
                    label(e.account.as_str()),
                    err.code
                );
            }
        }
        family(
            out,
            "imstatus_account_state",
            "gauge",
            "1 with the account's current client, session and availability as labels.",
        );
        for e in &accounts {
            if let Some(s) = e.snapshot() {
                let _ = writeln!(
                    out,
                    "imstatus_account_state{{account=\"{}\",source=\"{}\",client=\"{}\",session=\"{}\",availability=\"{}\"}} 1",
                    label(e.account.as_str()),
                    e.source,
                    s.client,
                    s.session,
                    s.availability
                );
            }
        }
        family(
            out,
            "imstatus_account_client_running",
            "gauge",
            "1 while the account's IM client runs (like UpAndRunning = 2), 0 otherwise or unknown.",
        );
        for e in &accounts {
            if let Some(s) = e.snapshot() {
                let _ = writeln!(
                    out,
                    "imstatus_account_client_running{{account=\"{}\"}} {}",
                    label(e.account.as_str()),
                    u8::from(s.client == Client::Running)
                );
            }
        }
        family(
            out,
            "imstatus_account_signed_in",
            "gauge",
            "1 while the user is signed in (mistatus & MISTATUS_ONLINE).",
        );
        for e in &accounts {
            if let Some(s) = e.snapshot() {
                let _ = writeln!(
                    out,
                    "imstatus_account_signed_in{{account=\"{}\"}} {}",
                    label(e.account.as_str()),
                    u8::from(imstatus_core::is_signed_in(s.mistatus))
                );
            }
        }
    }

    /// Request latencies and responses by route.
    fn render_requests(&self, out: &mut String) {
        family(
            out,
            "imstatus_http_request_duration_seconds",
            "histogram",
            "Time to answer a request (for /v1/events and /v1/ws: until the stream starts), by route.",
        );
        let totals: Vec<Totals> = self.routes.iter().map(RouteMetrics::totals).collect();
        for (r, t) in self.routes.iter().zip(&totals) {
            let mut cumulative = 0;
            for (n, b) in t.buckets.iter().zip(BUCKETS) {
                cumulative += n;
                let _ = writeln!(
                    out,
                    "imstatus_http_request_duration_seconds_bucket{{route=\"{}\",le=\"{b}\"}} {cumulative}",
                    r.route
                );
            }
            let count = t.count;
            let sum = t.sum_nanos as f64 / 1e9;
            let _ = writeln!(
                out,
                "imstatus_http_request_duration_seconds_bucket{{route=\"{0}\",le=\"+Inf\"}} {count}\n\
                 imstatus_http_request_duration_seconds_sum{{route=\"{0}\"}} {sum}\n\
                 imstatus_http_request_duration_seconds_count{{route=\"{0}\"}} {count}",
                r.route
            );
        }
        family(
            out,
            "imstatus_http_responses_total",
            "counter",
            "Responses by route and status class.",
        );
        for (r, t) in self.routes.iter().zip(&totals) {
            for (i, &n) in t.classes.iter().enumerate() {
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "imstatus_http_responses_total{{route=\"{}\",code=\"{}xx\"}} {n}",
                        r.route,
                        i + 1
                    );
                }
            }
        }
    }
}

/// Writes the `# HELP` and `# TYPE` lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn observations_land_in_one_bucket_and_one_class() {
        let m = Metrics::new(&["/x"]);
        m.route(Some("/x"))
            .record(Duration::from_micros(300), StatusCode::OK);
        m.route(Some("/nope"))
            .record(Duration::from_secs(60), StatusCode::NOT_FOUND);
        let x = m.route(Some("/x")).totals();
        assert_eq!(x.buckets, [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(x.classes, [0, 1, 0, 0, 0]);
        assert_eq!((x.count, x.sum_nanos), (1, 300_000));
        let other = m.route(None);
        assert_eq!(other.route, OTHER);
        let other = other.totals();
        assert_eq!(other.count, 1);
        assert_eq!(other.buckets.iter().sum::<u64>(), 0);
        assert_eq!(other.classes, [0, 0, 0, 1, 0]);
    }

    /// Threads add to their own copies of the counters; the totals are the sums of all of them.
    #[test]
    fn totals_add_up_the_copies_of_every_thread() {
        let m = Metrics::new(&["/x"]);
        let threads = SHARDS + 3;
        std::thread::scope(|s| {
            for t in 0..threads {
                let m = &m;
                s.spawn(move || {
                    for _ in 0..1000 {
                        let status = if t % 2 == 0 {
                            StatusCode::OK
                        } else {
                            StatusCode::FORBIDDEN
                        };
                        m.record(Some("/x"), Duration::from_micros(1), status);
                    }
                });
            }
        });
        let x = m.route(Some("/x"));
        let used = x
            .shards
            .iter()
            .filter(|c| c.count.load(Ordering::Relaxed) > 0)
            .count();
        assert!(used > 1, "the threads added to more than one copy ({used})");
        let t = x.totals();
        let n = u64::try_from(threads).unwrap_or(u64::MAX) * 1000;
        assert_eq!(t.count, n);
        assert_eq!(t.buckets[0], n);
        assert_eq!(t.sum_nanos, n * 1000);
        let ok = u64::try_from(threads.div_ceil(2)).unwrap_or(u64::MAX) * 1000;
        assert_eq!(t.classes, [0, ok, 0, n - ok, 0]);
    }
}
