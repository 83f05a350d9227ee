//! What the benchmark drivers of `bench/run.sh` (and the one-off measurements of
//! `docs/benchmarks.md`) share: command-line arguments ([`args`]), readings of the clock and
//! of `/proc` ([`system`]), percentiles ([`stats`]), hubs over real sources that are signed in
//! before the measurement starts ([`hubs`]), and the scaffolding of the load-test servers:
//! their runtime, their shutdown on SIGTERM/SIGINT and the `RATE`/`SEQ0` control protocol of
//! benchmark B7 ([`serve`]).
//!
//! Each driver is one binary in `src/bin/` that prints its result on stdout (one JSON line for
//! the suite, or a few lines for a person) and its progress on stderr. They are programs, not
//! tests: a driver that cannot do its job (a server missing, a bad argument) says why on stderr
//! and exits non-zero, and the suite reports that. This crate is Linux-only (it reads `/proc`
//! and uses D-Bus, X11 and Unix signals) and never shipped.

pub mod args;
pub mod hubs;
pub mod serve;
pub mod stats;
pub mod system;

/// Prints `bench: <message>` on stderr and exits with status 2: a driver's answer to a bad
/// argument or a setup it cannot use.
pub fn fail(message: impl std::fmt::Display) -> ! {
    eprintln!("bench: {message}");
    std::process::exit(2)
}

/// [`fail`] for results and options: `Prosody::start(..).or_fail("Prosody")`.
pub trait OrFail<T> {
    /// The value, or exit through [`fail`] with `what` (and the error, for a `Result`).
    fn or_fail(self, what: impl std::fmt::Display) -> T;
}

impl<T, E: std::fmt::Display> OrFail<T> for Result<T, E> {
    fn or_fail(self, what: impl std::fmt::Display) -> T {
        self.unwrap_or_else(|e| fail(format_args!("{what}: {e}")))
    }
}

impl<T> OrFail<T> for Option<T> {
    fn or_fail(self, what: impl std::fmt::Display) -> T {
        self.unwrap_or_else(|| fail(format_args!("{what}: nothing")))
    }
}
