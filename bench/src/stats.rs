//! Percentiles, computed the way the Python peers compute them (`bench/py/xmpputil.py`'s
//! `pct`: the nearest rank on the sorted samples), so that both sides of a comparison agree.

use std::time::Duration;

/// The `p`th percentile (0-100) of `sorted` (ascending): the sample at rank
/// `round(p / 100 × (n − 1))`, ties to even as Python's `round`; `None` when there are no
/// samples.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let rank = ((p / 100.0) * last as f64).round_ties_even() as usize;
    sorted.get(rank.min(last)).copied()
}

/// [`percentile`] of durations in milliseconds with one decimal, for the human-readable
/// reports (`-` when there are no samples).
pub fn ms(sorted: &[Duration], p: f64) -> String {
    percentile(sorted, p).map_or_else(|| "-".to_owned(), millis)
}

/// `d` in milliseconds with one decimal.
pub fn millis(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

/// [`percentile`] of durations in microseconds (NaN when there are no samples).
pub fn us(sorted: &[Duration], p: f64) -> f64 {
    percentile(sorted, p).map_or(f64::NAN, |d| d.as_secs_f64() * 1e6)
}
