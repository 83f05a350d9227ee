//! The one error type of the testkit.

use std::fmt::Write as _;
use std::time::Duration;

/// How many lines of a log an error message carries.
const TAIL_LINES: usize = 40;

/// Why a testkit helper failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A program the testkit needs is not on `PATH`.
    #[error("`{program}` not found on PATH; install it ({hint}) — end-to-end tests do not skip")]
    MissingProgram {
        /// The program name looked up.
        program: String,
        /// How to install it.
        hint: String,
    },
    /// A server module the testkit needs is not installed.
    #[error("{module} not found (searched {searched}); install it ({hint}) — end-to-end tests do not skip")]
    MissingModule {
        /// The module looked for.
        module: String,
        /// Where it was looked for.
        searched: String,
        /// How to install it.
        hint: String,
    },
    /// An I/O operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A condition did not hold before the deadline.
    #[error("timed out after {after:?} waiting for {what}{context}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline that passed.
        after: Duration,
        /// Log tails and other context (possibly empty).
        context: String,
    },
    /// A started program exited although it should still run.
    #[error("{what} exited unexpectedly ({status}){context}")]
    Exited {
        /// Which program.
        what: String,
        /// Its exit status as text.
        status: String,
        /// Log tails and other context (possibly empty).
        context: String,
    },
    /// A helper command (prosodyctl, openssl, tmux, dbus-send …) failed.
    #[error("{what} failed ({status}): {output}")]
    Command {
        /// The command that was run.
        what: String,
        /// Its exit status as text.
        status: String,
        /// Its stderr and stdout.
        output: String,
    },
    /// A D-Bus method call returned an error.
    #[error("D-Bus call {method} failed: {message}")]
    Dbus {
        /// The method called.
        method: String,
        /// The error printed by `dbus-send`.
        message: String,
    },
    /// The XMPP server answered something the raw client did not expect.
    #[error("XMPP: {what}; received: {received}")]
    Xmpp {
        /// What went wrong.
        what: String,
        /// What the server sent (possibly truncated).
        received: String,
    },
}

/// The testkit's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Appends the last lines of `log` (labelled `label`) to a timeout or exit error; other
    /// errors are returned unchanged.
    #[must_use]
    pub fn with_log(mut self, label: &str, log: &str) -> Self {
        if let Error::Timeout { context, .. } | Error::Exited { context, .. } = &mut self {
            let _ = write!(context, "\n--- last lines of {label} ---\n{}", tail(log));
        }
        self
    }

    // Only the servers' modules, which are Unix-only, read files and start processes.
    #[cfg(unix)]
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// The last [`TAIL_LINES`] lines of `text`.
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(TAIL_LINES);
    let mut out = lines[start..].join("\n");
    if out.is_empty() {
        out.push_str("(empty)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_log_appends_only_the_tail_to_timeouts() {
        let log: String = (0..100).map(|i| format!("line {i}\n")).collect();
        let err = Error::Timeout {
            what: "x".into(),
            after: Duration::from_millis(5),
            context: String::new(),
        }
        .with_log("x.log", &log);
        let text = err.to_string();
        assert!(text.contains("--- last lines of x.log ---"), "{text}");
        assert!(text.contains("line 99"), "{text}");
        assert!(text.contains("line 60"), "{text}");
        assert!(!text.contains("line 59"), "{text}");
    }

    #[test]
    fn with_log_leaves_other_errors_alone() {
        let err = Error::Dbus {
            method: "M".into(),
            message: "boom".into(),
        }
        .with_log("x.log", "secret");
        assert!(!err.to_string().contains("secret"));
    }
}
