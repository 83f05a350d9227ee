//! What the user typed: the clap definitions of every command and their value parsers (kept
//! apart from what runs, like ripgrep's low-level arguments).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use imstatus_core::{Availability, Client, Session, Snapshot};

/// Is the user's IM client running, are they signed in, and what is their status?
#[derive(Debug, Parser)]
#[command(name = "imstatus", version, about, long_about = None)]
pub struct Cli {
    /// Config file (default: $IMSTATUS_CONFIG, then $XDG_CONFIG_HOME/imstatus/config.toml,
    /// on Windows %APPDATA%\imstatus\config.toml; with none, the local IM client: libpurple
    /// on the session bus, on Windows the `IM Providers` default client).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// One snapshot per account. Exit 0 signed in (a desktop account: seen), 3 signed out, 4
    /// client not running, 1 error.
    Status {
        /// Only this account.
        account: Option<String>,
        /// JSON Lines, one snapshot object per account.
        #[arg(long)]
        json: bool,
        /// How long to wait for the sources to report.
        #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// A snapshot, then live events until Ctrl-C.
    Watch {
        /// Only these accounts.
        accounts: Vec<String>,
        /// JSON Lines (the schema is in docs/events.md).
        #[arg(long)]
        json: bool,
        /// Also show contacts' status changes.
        #[arg(long)]
        contacts: bool,
        /// Run this shell command once per event, in order, with the event in IMSTATUS_*
        /// environment variables (see docs/hooks.md).
        #[arg(long, value_name = "CMD")]
        exec: Option<String>,
        /// Time limit of one --exec run; the hook's process group (on Windows: process tree)
        /// is killed after it.
        #[arg(long, value_name = "DUR", default_value = "10s", value_parser = parse_duration)]
        exec_timeout: Duration,
    },
    /// Block until a state is reached: signed-in, signed-out, running, not-running,
    /// status=AVAILABILITY. Exit 0 when reached, 124 on timeout.
    Wait {
        /// The state to wait for.
        #[arg(value_parser = parse_target)]
        state: Target,
        /// Give up after this long (e.g. 30s, 5m). Default: wait forever.
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// Only this account (default: every account must reach the state).
        #[arg(long)]
        account: Option<String>,
    },
    /// Set the user's status where the source supports it.
    Set {
        /// available, chatty, away, extended_away, busy, invisible or offline.
        #[arg(value_parser = parse_availability)]
        availability: Availability,
        /// The status message.
        #[arg(long)]
        message: Option<String>,
        /// Only this account (default: every account).
        #[arg(long)]
        account: Option<String>,
    },
    /// Contacts and their presence.
    Contacts {
        /// Only this account.
        account: Option<String>,
        /// JSON Lines.
        #[arg(long)]
        json: bool,
    },
    /// Check every configured account step by step and say what to fix.
    Doctor,
    /// Serve the HTTP/SSE/WebSocket gateway and the dashboard (config: `[serve]`) until Ctrl-C
    /// or SIGTERM, then drain.
    #[cfg(feature = "gateway")]
    Serve {
        /// `all`: sources and gateway in this process, no NATS; `watcher` (sources only) or
        /// `gateway` (serves the cluster's state): one role on a NATS cluster (config
        /// `[cluster]`, cargo feature `cluster`, docs/cluster.md).
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
    },
    /// Print a shell completion script (bash, zsh, fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), generated from these definitions.
    Man,
}

/// A state `wait` waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The user is signed in.
    SignedIn,
    /// The user is signed out (or the client is not running).
    SignedOut,
    /// The client runs.
    Running,
    /// The client does not run.
    NotRunning,
    /// Signed in with this availability.
    Availability(Availability),
}

impl Target {
    /// Does this snapshot satisfy the target?
    pub fn reached(self, s: &Snapshot) -> bool {
        match self {
            Target::SignedIn => s.session == Session::SignedIn,
            Target::SignedOut => s.session == Session::SignedOut || s.client == Client::NotRunning,
            Target::Running => s.client == Client::Running,
            Target::NotRunning => s.client == Client::NotRunning,
            Target::Availability(a) => s.session == Session::SignedIn && s.availability == a,
        }
    }
}

pub(crate) fn parse_target(s: &str) -> Result<Target, String> {
    Ok(match s {
        "signed-in" => Target::SignedIn,
        "signed-out" => Target::SignedOut,
        "running" => Target::Running,
        "not-running" => Target::NotRunning,
        other => match other.strip_prefix("status=") {
            Some(a) => Target::Availability(parse_availability(a)?),
            None => {
                return Err(format!(
                    "`{other}`: expected signed-in, signed-out, running, not-running or status=AVAILABILITY"
                ))
            }
        },
    })
}

fn parse_availability(s: &str) -> Result<Availability, String> {
    s.parse()
        .map_err(|e: imstatus_core::state::UnknownAvailability| e.to_string())
}

pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}`: {e} (try 1s, 500ms, 2m)"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn wait_targets_parse() {
        assert_eq!(parse_target("signed-in"), Ok(Target::SignedIn));
        assert_eq!(
            parse_target("status=away"),
            Ok(Target::Availability(Availability::Away))
        );
        assert!(parse_target("status=asleep").is_err());
        assert!(parse_target("online").is_err());
    }
}

/// The role of `imstatus serve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Sources and gateway in one process (no cluster).
    All,
    /// Runs the sources of the shards it leases and writes their state to the cluster.
    Watcher,
    /// Serves the cluster's state; runs no source.
    Gateway,
}
