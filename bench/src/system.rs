//! The clock the suite compares across processes, and this host's accounting of a process's
//! CPU time and memory (`/proc`).

use nix::time::{clock_gettime, ClockId};
use nix::unistd::{sysconf, SysconfVar};

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of Python's `time.monotonic_ns()` (what
/// `bench/py/gen.py` stamps into its presences), comparable across processes on this host.
pub fn mono_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only make the latencies obviously wrong.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0)
}

/// A process's CPU time and resident memory.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    /// User + system CPU seconds so far.
    pub cpu_s: f64,
    /// Resident set size in KiB (`VmRSS`).
    pub rss_kb: u64,
}

/// The [`Usage`] of process `pid` (`"self"` for this one); zeros for a process that is gone.
pub fn usage(pid: &str) -> Usage {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the command name in parentheses, utime and stime are fields 12 and 13.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks: f64 = fields
        .get(11..13)
        .map(|f| f.iter().filter_map(|v| v.parse::<f64>().ok()).sum())
        .unwrap_or(0.0);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Usage {
        cpu_s: ticks / clock_ticks(),
        rss_kb,
    }
}

/// The [`Usage`] of this process.
pub fn own_usage() -> Usage {
    usage("self")
}

/// Clock ticks per second of `/proc/<pid>/stat` (`CLK_TCK`, 100 on every Linux this runs on).
fn clock_ticks() -> f64 {
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(t)) if t > 0 => t as f64,
        _ => 100.0,
    }
}
