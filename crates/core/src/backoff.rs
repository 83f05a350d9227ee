//! Reconnect delays: exponential from 1 s to 60 s with "equal jitter", pure and seedable.
//!
//! Attempt `n` (0-based) waits a delay drawn uniformly from `[c/2, c]` where
//! `c = min(60 s, 1 s × 2ⁿ)`: never less than half a second, never more than a minute, and
//! many watchers restarting together spread out instead of hammering the server at once.
//! Authentication failures are not retried at all; that decision belongs to the source.

use std::time::Duration;

/// The first ceiling.
pub const INITIAL: Duration = Duration::from_secs(1);
/// The largest ceiling.
pub const MAX: Duration = Duration::from_secs(60);

/// A reconnect schedule. `next_delay` gives the next wait; `reset` after a good connection.
#[derive(Debug, Clone)]
pub struct Backoff {
    attempt: u32,
    rng: u64,
}

impl Backoff {
    /// A schedule whose jitter comes from `seed` (use anything that differs per process).
    pub fn new(seed: u64) -> Self {
        Backoff {
            attempt: 0,
            rng: seed,
        }
    }

    /// How many delays were handed out since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The ceiling for attempt `n`.
    pub fn ceiling(n: u32) -> Duration {
        INITIAL
            .checked_mul(1u32.checked_shl(n).unwrap_or(u32::MAX))
            .map_or(MAX, |d| d.min(MAX))
    }

    /// The next delay to wait before reconnecting.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = Self::ceiling(self.attempt);
        self.attempt = self.attempt.saturating_add(1);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        let half = ms / 2;
        let jitter = self.next_u64() % (ms - half + 1);
        Duration::from_millis(half + jitter)
    }

    /// Starts again from the first delay (after a connection that held).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// splitmix64: tiny, fast and good enough for jitter.
    fn next_u64(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceilings_double_from_one_second_up_to_a_minute() {
        let secs: Vec<u64> = (0..9).map(|n| Backoff::ceiling(n).as_secs()).collect();
        assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(Backoff::ceiling(u32::MAX), MAX);
    }

    #[test]
    fn delays_stay_between_half_the_ceiling_and_the_ceiling() {
        for seed in 0..200 {
            let mut b = Backoff::new(seed);
            for n in 0..40 {
                let d = b.next_delay();
                let c = Backoff::ceiling(n);
                assert!(
                    d >= c / 2 && d <= c,
                    "seed {seed} attempt {n}: {d:?} vs {c:?}"
                );
            }
        }
    }

    #[test]
    fn same_seed_same_schedule_and_different_seeds_spread() {
        let run = |seed| {
            let mut b = Backoff::new(seed);
            (0..8).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        let firsts: std::collections::BTreeSet<_> =
            (0..50).map(|s| Backoff::new(s).next_delay()).collect();
        assert!(
            firsts.len() > 20,
            "jitter spreads first retries: {}",
            firsts.len()
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(1);
        for _ in 0..10 {
            b.next_delay();
        }
        b.reset();
        assert!(b.next_delay() <= INITIAL);
        assert_eq!(b.attempt(), 1);
    }
}
