//! What a gateway knows of the cluster, for its `/metrics`: how far behind the stream it is,
//! which watcher holds the shards of its accounts, how often they moved.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The longest watcher name shown in a label (a lease's value is written by any watcher).
const MAX_WATCHER_LABEL: usize = 128;

/// A gateway's cluster series, updated by [`run_gateway`](crate::run_gateway) (the stream
/// position with each message, the rest every lease/3) and rendered by
/// [`GatewayMetrics::render`]. Cheap to clone: clones share the values.
#[derive(Debug, Clone, Default)]
pub struct GatewayMetrics(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// The stream sequence of the last message applied.
    applied: AtomicU64,
    /// The stream's last sequence at the last check.
    stream_last: AtomicU64,
    /// Shard moves from one watcher to another seen.
    takeovers: AtomicU64,
    /// Accounts shown as owned by no watcher.
    unowned_accounts: AtomicU64,
    /// Of the shards of the gateway's accounts: how many each watcher holds, and how many
    /// none does (key `None`).
    leases: Mutex<BTreeMap<Option<String>, u64>>,
}

impl GatewayMetrics {
    pub(crate) fn applied(&self, stream_seq: u64) {
        self.0.applied.fetch_max(stream_seq, Ordering::Relaxed);
    }

    pub(crate) fn stream_last(&self, stream_seq: u64) {
        self.0.stream_last.store(stream_seq, Ordering::Relaxed);
    }

    pub(crate) fn takeover(&self) {
        self.0.takeovers.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn unowned_accounts(&self, n: usize) {
        self.0.unowned_accounts.store(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn leases(&self, leases: BTreeMap<Option<String>, u64>) {
        *self.0.leases.lock().unwrap_or_else(|e| e.into_inner()) = leases;
    }

    /// The stream sequence of the last message applied.
    pub fn applied_sequence(&self) -> u64 {
        self.0.applied.load(Ordering::Relaxed)
    }

    /// Messages of the stream not applied yet, as of the last check.
    pub fn stream_lag(&self) -> u64 {
        let last = self.0.stream_last.load(Ordering::Relaxed);
        last.saturating_sub(self.0.applied.load(Ordering::Relaxed))
    }

    /// Shard moves from one watcher to another this gateway has seen.
    pub fn takeovers(&self) -> u64 {
        self.0.takeovers.load(Ordering::Relaxed)
    }

    /// Appends the series in Prometheus' text format.
    pub fn render(&self, out: &mut String) {
        let i = &self.0;
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            out,
            "imstatus_cluster_stream_lag",
            "Messages of the cluster's stream this gateway has not applied, as of its last check (every lease/3).",
            self.stream_lag(),
        );
        gauge(
            out,
            "imstatus_cluster_stream_applied_sequence",
            "The stream sequence of the last message this gateway applied.",
            self.applied_sequence(),
        );
        let _ = writeln!(
            out,
            "# HELP imstatus_cluster_takeovers_total Times a shard of this gateway's accounts moved to another watcher, as this gateway saw it.\n\
             # TYPE imstatus_cluster_takeovers_total counter\n\
             imstatus_cluster_takeovers_total {}",
            self.takeovers()
        );
        gauge(
            out,
            "imstatus_cluster_accounts_unowned",
            "Accounts shown as owned by no watcher (no lease on their shard for a whole lease).",
            i.unowned_accounts.load(Ordering::Relaxed),
        );
        let leases = i.leases.lock().unwrap_or_else(|e| e.into_inner()).clone();
        gauge(
            out,
            "imstatus_cluster_shards_unowned",
            "Shards of this gateway's accounts with no lease at the last check.",
            leases.get(&None).copied().unwrap_or(0),
        );
        let _ = writeln!(
            out,
            "# HELP imstatus_cluster_leases Shards of this gateway's accounts each watcher held at the last check.\n\
             # TYPE imstatus_cluster_leases gauge"
        );
        for (watcher, n) in &leases {
            if let Some(w) = watcher {
                let _ = writeln!(
                    out,
                    "imstatus_cluster_leases{{watcher=\"{}\"}} {n}",
                    label(w)
                );
            }
        }
    }
}

/// A label value: at most [`MAX_WATCHER_LABEL`] characters, `\`, `"` and line feeds escaped.
fn label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars().take(MAX_WATCHER_LABEL) {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push('?'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_series_with_escaped_clipped_watcher_names() {
        let m = GatewayMetrics::default();
        m.applied(7);
        m.stream_last(10);
        m.takeover();
        let long = "w".repeat(500);
        m.leases(BTreeMap::from([
            (None, 2),
            (Some("a\"b\\c\nd".to_owned()), 3),
            (Some(long.clone()), 1),
        ]));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("\nimstatus_cluster_stream_lag 3\n"), "{out}");
        assert!(
            out.contains("\nimstatus_cluster_stream_applied_sequence 7\n"),
            "{out}"
        );
        assert!(
            out.contains("\nimstatus_cluster_takeovers_total 1\n"),
            "{out}"
        );
        assert!(
            out.contains("\nimstatus_cluster_shards_unowned 2\n"),
            "{out}"
        );
        assert!(
            out.contains("\nimstatus_cluster_leases{watcher=\"a\\\"b\\\\c\\nd\"} 3\n"),
            "{out}"
        );
        let clipped = format!(
            "\nimstatus_cluster_leases{{watcher=\"{}\"}} 1\n",
            &long[..128]
        );
        assert!(out.contains(&clipped), "{out}");
        // Every sample line belongs to a family declared before it.
        for line in out.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            assert!(out.contains(&format!("# TYPE {name} ")), "{line}");
        }
    }

    #[test]
    fn a_gateway_ahead_of_its_last_check_has_no_lag() {
        let m = GatewayMetrics::default();
        m.stream_last(5);
        m.applied(9);
        assert_eq!(m.stream_lag(), 0);
    }
}
