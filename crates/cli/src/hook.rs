//! `imstatus watch --exec CMD`: runs a command once per event, in order.
//!
//! The command runs through `sh -c` with the event in environment variables only — a status
//! message is never interpolated into the command line, so `$(…)` in a message stays text.
//! Each run has a timeout; on expiry its whole process group is killed. A failing or hanging
//! hook is reported on stderr and the watch goes on. The hook's own output goes to stderr, so
//! that `--json` on stdout stays clean.
//!
//! On Windows the command runs through `cmd.exe /D /V:ON /S /C` (see
//! [`imstatus_config::shell_command`]) in a new console process group, and on expiry its
//! process tree is killed with `taskkill /F /T`, then the `cmd.exe` itself.

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
    let mut cmd = Command::from(imstatus_config::shell_command(command));
    cmd.envs(environment(event, state))
        .stdin(Stdio::null())
        .stdout(stderr_for_child())
        .kill_on_drop(true);
    // Its own process group, so that on timeout the whole group can be killed (and Ctrl-C in
    // the terminal reaches imstatus, which then kills the hook, not the hook directly).
    #[cfg(unix)]
    cmd.process_group(0);
    #[cfg(windows)]
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return Outcome::NotStarted(e.to_string()),
    };
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Outcome::Ok,
        Ok(Ok(status)) => Outcome::Failed(status.code()),
        Ok(Err(e)) => Outcome::NotStarted(e.to_string()),
        Err(_) => {
            // Kill the whole group: `sh -c 'sleep 100'` leaves `sleep` behind otherwise.
            if let Some(pid) = child.id() {
                kill_tree(pid).await;
            }
            let _ = child.start_kill();
            let _ = child.wait().await;
            Outcome::TimedOut
        }
    }
}

/// `CREATE_NEW_PROCESS_GROUP` of `CreateProcess`.
#[cfg(windows)]
const CREATE_NEW_PROCESS_GROUP: u32 = 0x0000_0200;

/// A duplicate of our stderr for the hook's stdout and stderr.
fn stderr_for_child() -> Stdio {
    #[cfg(unix)]
    let dup = {
        use std::os::fd::AsFd;
        std::io::stderr().as_fd().try_clone_to_owned()
    };
    #[cfg(windows)]
    let dup = {
        use std::os::windows::io::AsHandle;
        std::io::stderr().as_handle().try_clone_to_owned()
    };
    match dup {
        Ok(d) => Stdio::from(d),
        Err(_) => Stdio::null(),
    }
}

/// Kills the process group led by `pid` (the hook's shell and everything it started).
#[cfg(unix)]
async fn kill_tree(pid: u32) {
    if let Ok(pid) = i32::try_from(pid) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Kills the process tree under `pid`: Windows has no process groups to signal, and killing
/// `cmd.exe` alone leaves what it started running. `taskkill /T` walks the parent links.
#[cfg(windows)]
async fn kill_tree(pid: u32) {
    let _ = Command::new("taskkill")
        .args(["/F", "/T", "/PID", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await;
}
