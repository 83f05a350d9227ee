//! `imstatus watch --exec CMD`: runs a command once per event, in order.
//!
//! The command runs through `sh -c` with the event in environment variables and a file, never
//! on the command line — a status message is never interpolated into it, so `$(…)` in a message
//! stays text. The event's JSON is always in a private temp file (`IMSTATUS_JSON_FILE`, mode
//! 0600, removed when the run ends) and also in `IMSTATUS_JSON` when it is at most [`ENV_MAX`]
//! bytes: a snapshot with many contacts (whose status messages the contacts choose) would
//! otherwise exceed what one environment variable may hold (128 KiB on Linux, 32,767
//! characters on Windows) and the hook could not start at all.
//!
//! Each run has a timeout; on expiry its whole process group is killed. When imstatus itself
//! stops (Ctrl-C, SIGTERM) during a run, the future running it is dropped and a guard kills the
//! group as well, so that no child of the hook outlives imstatus. A failing or hanging hook is
//! reported on stderr and the watch goes on. The hook's own output goes to stderr, so that
//! `--json` on stdout stays clean.
//!
//! On Windows the command runs through `cmd.exe /D /V:ON /S /C` (see
//! [`imstatus_config::shell_command`]) in a new console process group and in a job object of
//! its own: everything the hook starts joins the job, and on expiry (or when imstatus stops)
//! the job is terminated, which takes the whole tree at once without starting another
//! process. The job is assigned as soon as `cmd.exe` exists (a process it started before that
//! instant would be outside the job); where no job can be made (or in a build without the
//! `windows` feature) the tree is killed with `taskkill /F /T` instead. The temp file is in
//! the user's own `%TEMP%`.

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use imstatus_core::{Activity, Event, Session, Snapshot};
use tokio::process::Command;

/// The default time limit of one hook run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest value, in bytes, put in one environment variable (`IMSTATUS_JSON`,
/// `IMSTATUS_MESSAGE`): well below Linux's limit of 128 KiB per variable and Windows' 32,767
/// characters.
pub const ENV_MAX: usize = 32_000;

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

/// The environment a hook sees for `event`, given the account's state after it, except
/// `IMSTATUS_JSON_FILE` (see [`run`]): `IMSTATUS_JSON` only when the JSON line is at most
/// [`ENV_MAX`] bytes, and `IMSTATUS_MESSAGE` cut to at most that many; the
/// `IMSTATUS_ACTIVITY_*` variables only when the account has an activity (docs/hooks.md).
pub fn environment(event: &Event, state: &Snapshot) -> Vec<(&'static str, String)> {
    let json = crate::format::json(event);
    let mut env = vec![
        ("IMSTATUS_EVENT", event.kind.name().to_owned()),
        ("IMSTATUS_SEQ", event.seq.to_string()),
        ("IMSTATUS_ACCOUNT", event.account.to_string()),
        ("IMSTATUS_SOURCE", event.source.to_string()),
        ("IMSTATUS_CLIENT", state.client.to_string()),
        ("IMSTATUS_SESSION", state.session.to_string()),
        ("IMSTATUS_AVAILABILITY", state.availability.to_string()),
        (
            "IMSTATUS_MESSAGE",
            truncate(state.message.as_deref().unwrap_or_default(), ENV_MAX).to_owned(),
        ),
        (
            "IMSTATUS_SIGNED_IN",
            u8::from(state.session == Session::SignedIn).to_string(),
        ),
        ("IMSTATUS_MISTATUS", state.mistatus.to_string()),
    ];
    if let Some(d) = &state.decided_by {
        env.push(("IMSTATUS_DECIDED_BY", d.rule.as_str().to_owned()));
    }
    if let Some(a) = &state.activity {
        env.extend(activity_environment(a));
    }
    if json.len() <= ENV_MAX {
        env.push(("IMSTATUS_JSON", json));
    }
    env
}

/// The `IMSTATUS_ACTIVITY_*` variables of an account that reports an activity: `1`/`0` per
/// signal, the idle seconds (empty when unknown) and the apps using the microphone or the
/// camera as `name:pid` (just `name` without a PID), comma-separated, sorted, each once.
fn activity_environment(a: &Activity) -> Vec<(&'static str, String)> {
    let flag = |b: bool| u8::from(b).to_string();
    let mut apps: Vec<_> = a.microphone_apps.iter().chain(&a.camera_apps).collect();
    apps.sort();
    apps.dedup();
    let apps = apps
        .iter()
        .map(|app| {
            let name = app_name(&app.name);
            match app.pid {
                Some(pid) => format!("{name}:{pid}"),
                None => name,
            }
        })
        .collect::<Vec<_>>()
        .join(",");
    vec![
        ("IMSTATUS_ACTIVITY_MICROPHONE", flag(a.microphone)),
        ("IMSTATUS_ACTIVITY_CAMERA", flag(a.camera)),
        ("IMSTATUS_ACTIVITY_IN_CALL", flag(a.in_call)),
        ("IMSTATUS_ACTIVITY_SCREEN_SHARING", flag(a.screen_sharing)),
        ("IMSTATUS_ACTIVITY_IDLE", flag(a.idle)),
        ("IMSTATUS_ACTIVITY_LOCKED", flag(a.locked)),
        (
            "IMSTATUS_ACTIVITY_IDLE_S",
            a.idle_s.map(|s| s.to_string()).unwrap_or_default(),
        ),
        (
            "IMSTATUS_ACTIVITY_APPS",
            truncate(&apps, ENV_MAX).to_owned(),
        ),
    ]
}

/// An app's name as one item of `IMSTATUS_ACTIVITY_APPS`: the separators `,` and `:` and
/// control characters (a NUL could not be passed at all) become `_`.
fn app_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c == ',' || c == ':' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Writes the event's JSON line to a new private temp file (created exclusively, mode 0600 on
/// Unix, in the user's temp dir); it is removed when the returned handle is dropped.
fn json_file(event: &Event) -> std::io::Result<tempfile::NamedTempFile> {
    let mut file = tempfile::Builder::new()
        .prefix("imstatus-event-")
        .suffix(".json")
        .tempfile()?;
    writeln!(file, "{}", crate::format::json(event))?;
    file.flush()?;
    Ok(file)
}

/// Runs `command` for one event and waits for it, at most `timeout`.
///
/// Dropping the future while the hook runs (imstatus is stopping) kills the hook's process
/// group (on Windows: its process tree) at once. The event's JSON file lives as long as the
/// run: a background job the hook leaves behind must copy it if it needs it later.
pub async fn run(command: &str, event: &Event, state: &Snapshot, timeout: Duration) -> Outcome {
    let file = match json_file(event) {
        Ok(f) => f,
        Err(e) => {
            return Outcome::NotStarted(format!(
                "cannot write the event to a temp file in {}: {e}",
                std::env::temp_dir().display()
            ))
        }
    };
    let mut cmd = Command::from(imstatus_config::shell_command(command));
    cmd.envs(environment(event, state))
        .env("IMSTATUS_JSON_FILE", file.path())
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
    // Declared after `child`, so dropped before it: the group is killed while its leader is
    // not reaped yet, so its id cannot have been reused.
    let mut running = Running::new(&child);
    let outcome = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) if status.success() => Outcome::Ok,
        Ok(Ok(status)) => Outcome::Failed(status.code()),
        Ok(Err(e)) => Outcome::NotStarted(e.to_string()),
        Err(_) => {
            // Kill the whole group: `sh -c 'sleep 100'` leaves `sleep` behind otherwise.
            running.kill().await;
            let _ = child.start_kill();
            let _ = child.wait().await;
            Outcome::TimedOut
        }
    };
    // Reaped (or killed): the group is no longer ours to signal.
    running.done();
    drop(file);
    outcome
}

/// The hook's process group (on Windows: its job, or the root of its process tree) while it
/// runs; killed when dropped still running, i.e. when the future running the hook is dropped
/// mid-run.
struct Running {
    pid: Option<u32>,
    #[cfg(all(windows, feature = "windows"))]
    job: Option<imstatus_windows::job::Job>,
}

impl Running {
    fn new(child: &tokio::process::Child) -> Self {
        Running {
            pid: child.id(),
            #[cfg(all(windows, feature = "windows"))]
            job: child
                .raw_handle()
                .and_then(|process| imstatus_windows::job::Job::holding(process).ok()),
        }
    }

    /// Kills what the hook started (it ran past its time).
    async fn kill(&mut self) {
        #[cfg(all(windows, feature = "windows"))]
        if let Some(job) = self.job.take() {
            // Off the async workers: it may wait for processes the job was still starting.
            let _ = tokio::task::spawn_blocking(move || job.terminate()).await;
            self.pid = None;
            return;
        }
        if let Some(pid) = self.pid.take() {
            kill_tree(pid).await;
        }
    }

    /// The hook's shell was reaped: nothing left to kill (what it left in the background lives
    /// on, on every platform).
    fn done(&mut self) {
        self.pid = None;
        #[cfg(all(windows, feature = "windows"))]
        drop(self.job.take());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        #[cfg(all(windows, feature = "windows"))]
        if let Some(job) = self.job.take() {
            job.terminate();
            self.pid = None;
        }
        if let Some(pid) = self.pid.take() {
            kill_tree_now(pid);
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
    kill_tree_now(pid);
}

/// [`kill_tree`], synchronously (for `Drop`).
#[cfg(unix)]
fn kill_tree_now(pid: u32) {
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

/// [`kill_tree`], synchronously (for `Drop`: imstatus is stopping, so blocking this thread for
/// the moment `taskkill` takes is fine).
#[cfg(windows)]
fn kill_tree_now(pid: u32) {
    let _ = std::process::Command::new("taskkill")
        .args(["/F", "/T", "/PID", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

#[cfg(test)]
mod tests {
    use super::*;
    use imstatus_core::{AccountId, App, EventKind, SourceKind, Timestamp};

    fn event(kind: EventKind) -> Event {
        Event {
            seq: 9,
            time: Timestamp::from_millis(1_000),
            account: AccountId::new("desk"),
            source: SourceKind::new_static("desktop"),
            kind,
        }
    }

    fn activity_vars(env: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        env.iter()
            .filter(|(k, _)| k.starts_with("IMSTATUS_ACTIVITY_"))
            .cloned()
            .collect()
    }

    #[test]
    fn an_account_with_an_activity_gets_its_variables() {
        let to = Activity {
            microphone: true,
            camera: true,
            in_call: true,
            idle_s: Some(312),
            idle: true,
            locked: false,
            screen_sharing: true,
            microphone_apps: vec![
                App::new("parecord", Some(1234)),
                App::new("firefox", Some(88)),
            ],
            // Firefox holds both: named once.
            camera_apps: vec![App::new("firefox", Some(88)), App::new("cheese", None)],
        };
        let mut state = Snapshot::unknown();
        let e = event(EventKind::ActivityChanged {
            from: None,
            to: Box::new(to),
        });
        state.apply(&e.kind, e.time);
        let env = environment(&e, &state);
        assert_eq!(
            activity_vars(&env),
            [
                ("IMSTATUS_ACTIVITY_MICROPHONE", "1".to_owned()),
                ("IMSTATUS_ACTIVITY_CAMERA", "1".to_owned()),
                ("IMSTATUS_ACTIVITY_IN_CALL", "1".to_owned()),
                ("IMSTATUS_ACTIVITY_SCREEN_SHARING", "1".to_owned()),
                ("IMSTATUS_ACTIVITY_IDLE", "1".to_owned()),
                ("IMSTATUS_ACTIVITY_LOCKED", "0".to_owned()),
                ("IMSTATUS_ACTIVITY_IDLE_S", "312".to_owned()),
                (
                    "IMSTATUS_ACTIVITY_APPS",
                    "cheese,firefox:88,parecord:1234".to_owned()
                ),
            ]
        );
        assert!(env
            .iter()
            .any(|(k, v)| *k == "IMSTATUS_EVENT" && v == "activity_changed"));

        // Nothing in use, no idle backend.
        let quiet = Snapshot {
            activity: Some(Activity::default()),
            ..Snapshot::unknown()
        };
        let env = environment(&e, &quiet);
        assert_eq!(
            activity_vars(&env),
            [
                ("IMSTATUS_ACTIVITY_MICROPHONE", "0".to_owned()),
                ("IMSTATUS_ACTIVITY_CAMERA", "0".to_owned()),
                ("IMSTATUS_ACTIVITY_IN_CALL", "0".to_owned()),
                ("IMSTATUS_ACTIVITY_SCREEN_SHARING", "0".to_owned()),
                ("IMSTATUS_ACTIVITY_IDLE", "0".to_owned()),
                ("IMSTATUS_ACTIVITY_LOCKED", "0".to_owned()),
                ("IMSTATUS_ACTIVITY_IDLE_S", String::new()),
                ("IMSTATUS_ACTIVITY_APPS", String::new()),
            ]
        );
    }

    #[test]
    fn an_account_without_an_activity_gets_none_of_them() {
        let e = event(EventKind::ClientStarted);
        let env = environment(&e, &Snapshot::unknown());
        assert_eq!(activity_vars(&env), []);
        assert!(env.iter().any(|(k, _)| *k == "IMSTATUS_CLIENT"));
    }

    #[test]
    fn app_names_cannot_forge_items_or_break_the_variable() {
        let a = Activity {
            microphone: true,
            in_call: true,
            microphone_apps: vec![
                App::new("evil:1,zoom\0x\n", Some(7)),
                App::new("nul\0", None),
            ],
            ..Activity::default()
        };
        let env = activity_environment(&a);
        let apps = &env
            .iter()
            .find(|(k, _)| *k == "IMSTATUS_ACTIVITY_APPS")
            .expect("apps")
            .1;
        assert_eq!(apps, "evil_1_zoom_x_:7,nul_");
    }

    #[test]
    fn long_values_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("lunch", 10), "lunch");
        assert_eq!(truncate("lunch", 5), "lunch");
        assert_eq!(truncate("lunch", 3), "lun");
        // "é" is two bytes: a cut in its middle keeps the whole characters before it.
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("ééé", 5), "éé");
    }
}
