//! `imstatus watch --exec CMD`: runs a command once per event, in order.
//!
//! The command runs through `sh -c` with the event in environment variables only — a status
//! message is never interpolated into the command line, so `$(…)` in a message stays text.
//! Each run has a timeout; on expiry its whole process group is killed. A failing or hanging
//! hook is reported on stderr and the watch goes on. The hook's own output goes to stderr, so
//! that `--json` on stdout stays clean.

use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::Duration;

use imstatus_core::{Event, Session, Snapshot};
use tokio::process::Command;

/// The default time limit of one hook run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What became of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Exited with status 0.
    Ok,
    /// Exited otherwise (`None`: killed by a signal).
    Failed(Option<i32>),
    /// Ran past the time limit and was killed.
    TimedOut,
    /// Could not be started.
    NotStarted(String),
}

/// The environment a hook sees for `event`, given the account's state after it.
pub fn environment(event: &Event, state: &Snapshot) -> Vec<(&'static str, String)> {
    vec![
        ("IMSTATUS_EVENT", event.kind.name().to_owned()),
        ("IMSTATUS_SEQ", event.seq.to_string()),
        ("IMSTATUS_ACCOUNT", event.account.to_string()),
        ("IMSTATUS_SOURCE", event.source.to_string()),
        ("IMSTATUS_CLIENT", state.client.to_string()),
        ("IMSTATUS_SESSION", state.session.to_string()),
        ("IMSTATUS_AVAILABILITY", state.availability.to_string()),
        (
            "IMSTATUS_MESSAGE",
            state.message.clone().unwrap_or_default(),
        ),
        (
            "IMSTATUS_SIGNED_IN",
            u8::from(state.session == Session::SignedIn).to_string(),
        ),
        ("IMSTATUS_MISTATUS", state.mistatus.to_string()),
        ("IMSTATUS_JSON", crate::format::json(event)),
    ]
}

/// Runs `command` for one event and waits for it, at most `timeout`.
pub async fn run(command: &str, event: &Event, state: &Snapshot, timeout: Duration) -> Outcome {
    let stderr = match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => Stdio::from(fd),
        Err(_) => Stdio::null(),
    };
    let mut child = match Command::new("sh")
        .arg("-c")
        .arg(command)
        .envs(environment(event, state))
        .stdin(Stdio::null())
        .stdout(stderr)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => return Outcome::NotStarted(e.to_string()),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Outcome::Ok,
        Ok(Ok(status)) => Outcome::Failed(status.code()),
        Ok(Err(e)) => Outcome::NotStarted(e.to_string()),
        Err(_) => {
            // Kill the whole group: `sh -c 'sleep 100'` leaves `sleep` behind otherwise.
            if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            Outcome::TimedOut
        }
    }
}
