//! The `imstatus` command line: what the user typed (clap structs) is kept apart from what
//! runs (a [`Hub`](imstatus_hub::Hub) built from the resolved config), so every command is testable in-process
//! with a scripted source and, end to end, as the real binary.
//!
//! Exit codes are part of the interface: `status` exits 0 signed in, 3 running but signed
//! out, 4 client not running, 1 on an error, 2 on a usage or config error; `wait` exits 124
//! on timeout. A closed stdout (`imstatus watch --json | head -1`) ends `watch` with 0.
//!
//! One module per command (`cmd::status`, `cmd::watch`, …), each with a `run`; [`run`] only
//! reads the config and dispatches. The sources this binary was built with are listed in one
//! place, [`sources::factories`]; nothing else names a source.
//!
//! The same code builds for Windows (`x86_64-pc-windows-gnu`): the platform-specific parts are
//! [`stop_signal`] (SIGTERM vs. the console's close/shutdown events), the closed-stdout check,
//! and `watch --exec` ([`hook`]: process group vs. process tree).

use std::future::Future;
use std::io::Write;
use std::time::Duration;

use imstatus_config::Config;
use imstatus_core::Status;
use imstatus_hub::SourceFactory;

mod app;
pub mod args;
mod cmd;
pub mod format;
pub mod hook;
mod signal;
pub mod sources;

use app::Failure;
pub use args::{Cli, Command, Target};
pub use signal::stop_signal;

/// Exit: signed in (a desktop account: seen) / reached / ok.
pub const EXIT_OK: u8 = 0;
/// Exit: an error (the code and hint are printed).
pub const EXIT_ERROR: u8 = 1;
/// Exit: bad usage or config.
pub const EXIT_USAGE: u8 = 2;
/// Exit: the client runs but the user is signed out.
pub const EXIT_SIGNED_OUT: u8 = 3;
/// Exit: the client is not running.
pub const EXIT_NOT_RUNNING: u8 = 4;
/// Exit: `wait` timed out.
pub const EXIT_TIMEOUT: u8 = 124;

/// How long one-shot commands wait for sources to report, by default.
const SETTLE: Duration = Duration::from_secs(10);

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Runs one command with the sources of `factories`; returns the exit code. `stop` ends
/// `watch` and `serve` (Ctrl-C in the binary).
pub async fn run(
    cli: Cli,
    factories: &[&dyn SourceFactory],
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    stop: impl Future<Output = ()> + Send + 'static,
) -> u8 {
    if let Some(code) = without_config(&cli.command, out, err) {
        return code;
    }
    let config = match Config::discover(cli.config.as_deref(), factories) {
        Ok(c) => sources::with_persons(c),
        Err(e) => {
            let _ = writeln!(err, "imstatus: config: {e}");
            return EXIT_USAGE;
        }
    };
    if config.accounts.is_empty() {
        let _ = writeln!(
            err,
            "imstatus: config: no [[account]] configured; add one (see docs/config.md)"
        );
        return EXIT_USAGE;
    }
    let result = match cli.command {
        Command::Status {
            account,
            json,
            timeout,
        } => cmd::status::run(&config, account.as_deref(), json, timeout, out, err).await,
        Command::Watch {
            accounts,
            json,
            contacts,
            exec,
            exec_timeout,
        } => {
            let view = cmd::watch::WatchView {
                json,
                contacts,
                hook: exec.map(|command| (command, exec_timeout)),
            };
            cmd::watch::run(&config, &accounts, &view, out, err, stop).await
        }
        Command::Wait {
            state,
            timeout,
            account,
        } => cmd::wait::run(&config, state, timeout, account.as_deref(), err).await,
        Command::Set {
            availability,
            message,
            account,
        } => {
            let status = match message {
                Some(m) => Status::with_message(availability, m),
                None => Status::new(availability),
            };
            cmd::set::run(&config, status, account.as_deref(), out, err).await
        }
        Command::Contacts { account, json } => {
            cmd::contacts::run(&config, account.as_deref(), json, out, err).await
        }
        Command::Doctor => cmd::doctor::run(&config, out).await,
        #[cfg(feature = "gateway")]
        Command::Serve { role } => cmd::serve::run(&config, factories, role, err, stop).await,
        Command::Completions { .. } | Command::Man => Ok(EXIT_OK),
    };
    match result {
        Ok(code) => code,
        Err(Failure::Usage(msg)) => {
            let _ = writeln!(err, "imstatus: {msg}");
            EXIT_USAGE
        }
        Err(Failure::Io(e)) if signal::reader_gone(&e) => EXIT_OK,
        Err(Failure::Io(e)) => {
            let _ = writeln!(err, "imstatus: {e}");
            EXIT_ERROR
        }
        Err(Failure::Other(e)) => {
            let _ = writeln!(err, "imstatus: {e:#}");
            EXIT_ERROR
        }
    }
}

/// The commands that need no config: shell completions and the man page.
fn without_config(
    command: &Command,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Option<u8> {
    let cmd = || <Cli as clap::CommandFactory>::command().after_help(sources::help());
    match command {
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut cmd(), "imstatus", out);
            Some(EXIT_OK)
        }
        Command::Man => Some(match clap_mangen::Man::new(cmd()).render(out) {
            Ok(()) => EXIT_OK,
            Err(e) if signal::reader_gone(&e) => EXIT_OK,
            Err(e) => {
                let _ = writeln!(err, "imstatus: {e}");
                EXIT_ERROR
            }
        }),
        _ => None,
    }
}
