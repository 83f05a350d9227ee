//! `watch --exec`: order, environment, failure, timeout, and no shell injection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use imstatus::Cli;
use imstatus_core::{Availability, Observation, SourceKind, Status};
use imstatus_hub::testing::{scripted, Script, ScriptedFactory};
use imstatus_hub::Source;

const LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs `watch --exec HOOK [extra]` against a scripted source fed `feed` after the snapshot,
/// until `done` holds (or the test's limit).
async fn watch_with_hook(
    dir: &Path,
    hook: &str,
    extra: &[&str],
    feed: Vec<Vec<Observation>>,
    done: impl Fn(&str) -> bool + Send + 'static,
) -> (u8, String) {
    let initial = vec![Observation::ClientAppeared, Observation::Synced];
    watch_with_hook_initial(dir, hook, extra, initial, feed, done).await
}

/// [`watch_with_hook`] with a source that first reports `initial`.
async fn watch_with_hook_initial(
    dir: &Path,
    hook: &str,
    extra: &[&str],
    initial: Vec<Observation>,
    feed: Vec<Vec<Observation>>,
    done: impl Fn(&str) -> bool + Send + 'static,
) -> (u8, String) {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[[account]]\nname = \"desk\"\nsource = \"purple\"\n",
    )
    .expect("config");
    let (source, script): (_, Script) = scripted(SourceKind::new_static("purple"), initial);
    let factory = ScriptedFactory::new(
        SourceKind::new_static("purple"),
        [source as Arc<dyn Source>],
    );
    let mut argv = vec![
        "imstatus".to_owned(),
        "--config".into(),
        config.display().to_string(),
        "watch".into(),
        "--exec".into(),
        hook.into(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let cli = Cli::try_parse_from(argv).expect("args");
    let out = Buffer::default();
    let err = Buffer::default();
    let started = out.clone();
    let feeder = tokio::spawn(async move {
        while started.text().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for batch in feed {
            script.send(batch);
        }
    });
    let stderr = err.clone();
    let stop = async move {
        while !done(&stderr.text()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (mut o, mut e) = (out.clone(), err.clone());
    let code = tokio::time::timeout(LIMIT, imstatus::run(cli, &[&factory], &mut o, &mut e, stop))
        .await
        .expect("watch ends");
    feeder.await.expect("feeder");
    (code, err.text())
}

fn presence(a: Availability, msg: &str) -> Observation {
    Observation::presence("a", Status::with_message(a, msg))
}

#[tokio::test]
async fn hooks_run_once_per_event_in_order_with_the_state_in_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log: PathBuf = dir.path().join("log");
    let hook = format!(
        "printf '%s|%s|%s|%s|%s|%s|%s\\n' \"$IMSTATUS_SEQ\" \"$IMSTATUS_EVENT\" \"$IMSTATUS_ACCOUNT\" \
         \"$IMSTATUS_AVAILABILITY\" \"$IMSTATUS_MESSAGE\" \"$IMSTATUS_SIGNED_IN\" \"$IMSTATUS_MISTATUS\" >> '{}'",
        log.display()
    );
    let watched = log.clone();
    let (code, err) = watch_with_hook(
        dir.path(),
        &hook,
        &[],
        vec![
            vec![presence(Availability::Away, "lunch")],
            vec![presence(Availability::Busy, "call")],
        ],
        move |_| lines(&watched).len() >= 6,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let got = lines(&log);
    let events: Vec<&str> = got
        .iter()
        .map(|l| l.split('|').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        events,
        [
            "snapshot",
            "signed_in",
            "status_changed",
            "resource_changed",
            "status_changed",
            "resource_changed",
        ]
    );
    let seqs: Vec<u64> = got[1..]
        .iter()
        .filter_map(|l| l.split('|').next()?.parse().ok())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(got[2].ends_with("|desk|away|lunch|1|34"), "{}", got[2]);
    assert!(got[4].ends_with("|desk|busy|call|1|10"), "{}", got[4]);
}

#[tokio::test]
async fn a_status_message_cannot_inject_shell_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pwned = dir.path().join("pwned");
    let log = dir.path().join("log");
    let hook = format!(
        "printf '%s\\n' \"$IMSTATUS_MESSAGE\" >> '{}'",
        log.display()
    );
    let message = format!("$(touch {}) `touch {}`", pwned.display(), pwned.display());
    let watched = log.clone();
    let (code, _) = watch_with_hook(
        dir.path(),
        &hook,
        &[],
        vec![vec![presence(Availability::Away, &message)]],
        move |_| lines(&watched).iter().any(|l| l.contains("touch")),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        lines(&log).contains(&message),
        "the message arrives verbatim"
    );
    assert!(!pwned.exists(), "nothing in the message was executed");
}

#[tokio::test]
async fn a_failing_hook_is_reported_and_the_watch_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = "exit 3";
    let (code, err) = watch_with_hook(
        dir.path(),
        hook,
        &[],
        vec![vec![presence(Availability::Away, "x")]],
        // Stop once the failure of the status_changed run is reported, not when the hook has
        // merely written its line: the report comes after the hook exits.
        move |err: &str| err.contains("for event status_changed"),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        err.contains("--exec exited with 3 for event snapshot of desk"),
        "{err}"
    );
    assert!(
        err.contains("--exec exited with 3 for event status_changed"),
        "{err}"
    );
}

#[tokio::test]
async fn a_hanging_hook_is_killed_after_its_timeout_and_the_watch_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    // The first run hangs (with a child of its own); later runs return at once.
    let marker = dir.path().join("hung-once");
    let child_pid = dir.path().join("child.pid");
    let hook = format!(
        "echo \"$IMSTATUS_EVENT\" >> '{log}'; if [ ! -e '{m}' ]; then touch '{m}'; \
         sleep 60 & echo $! > '{p}'; wait; fi",
        log = log.display(),
        m = marker.display(),
        p = child_pid.display()
    );
    let watched = log.clone();
    let started = std::time::Instant::now();
    let (code, err) = watch_with_hook(
        dir.path(),
        &hook,
        &["--exec-timeout", "300ms"],
        vec![vec![presence(Availability::Away, "x")]],
        move |_| lines(&watched).iter().any(|l| l == "status_changed"),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        err.contains("--exec ran past 300ms for event snapshot of desk (seq")
            && err.contains("killed it"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not held up by the hung hook"
    );
    // The hook's own child went with it: the whole process group was killed.
    let pid: u32 = std::fs::read_to_string(&child_pid)
        .expect("the hung hook wrote its child's pid")
        .trim()
        .parse()
        .expect("a pid");
    let gone = imstatus_testkit::wait_until("the hook's child to be gone", LIMIT, || {
        (!imstatus_testkit::pid_alive(pid)).then_some(())
    });
    assert!(gone.is_ok(), "sleep {pid} survived its hook");
}

#[tokio::test]
async fn a_snapshot_of_300_contacts_with_long_messages_reaches_the_hook_through_a_private_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    // Contacts choose their own status messages: 300 of 1 KiB make a ~330 KiB snapshot, more
    // than one environment variable may hold (128 KiB on Linux).
    let message = "m".repeat(1024);
    let contacts: Vec<Observation> = (0..300)
        .map(|n| {
            Observation::Contact(
                format!("c{n:03}@example.test").into(),
                Status::with_message(Availability::Away, message.clone()),
            )
        })
        .collect();
    let hook = format!(
        "if [ \"$IMSTATUS_EVENT\" = snapshot ]; then \
           cp \"$IMSTATUS_JSON_FILE\" '{d}/snapshot.json'; \
           printf '%s' \"$IMSTATUS_JSON_FILE\" > '{d}/path'; \
           stat -c %a \"$IMSTATUS_JSON_FILE\" > '{d}/mode'; \
           printf '%s' \"${{IMSTATUS_JSON-unset}}\" > '{d}/env'; \
           touch '{d}/done'; \
         fi"
    );
    let done = dir.path().join("done");
    let (code, err) = watch_with_hook_initial(
        dir.path(),
        &hook,
        &["--contacts"],
        [
            vec![Observation::ClientAppeared],
            contacts,
            vec![Observation::Synced],
        ]
        .concat(),
        Vec::new(),
        move |_| done.exists(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("--exec"), "the hook ran fine: {err}");
    let json = std::fs::read_to_string(dir.path().join("snapshot.json")).expect("copied");
    let snapshot: serde_json::Value = serde_json::from_str(json.trim_end()).expect("JSON");
    assert_eq!(snapshot["event"], "snapshot");
    let listed = snapshot["contacts"].as_array().expect("contacts");
    assert_eq!(listed.len(), 300);
    assert!(listed
        .iter()
        .all(|c| c["message"].as_str() == Some(message.as_str())));
    // Too big for the environment: only the file has it, and only we could read the file.
    let read = |name: &str| std::fs::read_to_string(dir.path().join(name)).expect(name);
    assert_eq!(read("env"), "unset");
    assert_eq!(read("mode").trim(), "600");
    let path = read("path");
    assert!(
        !Path::new(&path).exists(),
        "{path} was removed after the hook"
    );
}

#[tokio::test]
async fn small_events_carry_their_json_in_the_environment_and_in_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    let hook = format!(
        "if [ \"$IMSTATUS_JSON\" = \"$(cat \"$IMSTATUS_JSON_FILE\")\" ]; then r=same; else r=differ; fi; \
         echo \"$IMSTATUS_EVENT $r\" >> '{}'",
        log.display()
    );
    let watched = log.clone();
    let (code, err) = watch_with_hook(
        dir.path(),
        &hook,
        &[],
        vec![vec![presence(Availability::Away, "lunch")]],
        move |_| lines(&watched).len() >= 4,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        lines(&log),
        [
            "snapshot same",
            "signed_in same",
            "status_changed same",
            "resource_changed same"
        ]
    );
}

/// The processes (zombies aside) whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // After the command's ")": state, ppid, pgrp.
            let mut fields = stat
                .rsplit_once(')')
                .map_or("", |(_, rest)| rest)
                .split_whitespace();
            let state = fields.next().unwrap_or("Z");
            let pgrp = fields.nth(1).and_then(|p| p.parse::<u32>().ok());
            state != "Z" && pgrp == Some(pgid)
        })
        .collect()
}

/// SIGKILLs what a test left running, by the PIDs it recorded.
struct Leftovers(Vec<u32>);

impl Drop for Leftovers {
    fn drop(&mut self) {
        for &pid in &self.0 {
            if imstatus_testkit::pid_alive(pid) {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Runs the real binary's `watch --exec` with a hook that starts two `sleep 600` and waits for
/// them, sends `signal` to imstatus once the hook runs, and checks that nothing of the hook's
/// process group outlives imstatus.
fn stopping_watch_ends_the_hooks_process_group(signal: nix::sys::signal::Signal) {
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path().display();
    let config = dir.path().join("config.toml");
    // No bus there: the source is down, and the snapshot saying so runs the hook.
    std::fs::write(
        &config,
        format!(
            "[[account]]\nname = \"desk\"\nsource = \"purple\"\nbus = \"unix:path={d}/no-bus\"\n"
        ),
    )
    .expect("config");
    let hook = format!(
        "sleep 600 & a=$!; sleep 600 & b=$!; echo \"$$ $a $b\" > '{d}/pids.tmp'; \
         mv '{d}/pids.tmp' '{d}/pids'; wait"
    );
    let stderr = std::fs::File::create(dir.path().join("stderr")).expect("stderr file");
    let mut watch = Command::new(env!("CARGO_BIN_EXE_imstatus"))
        .arg("--config")
        .arg(&config)
        .args(["watch", "--exec", &hook, "--exec-timeout", "10m"])
        .env_remove("IMSTATUS_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent-imstatus-test")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("imstatus runs");
    let mut leftovers = Leftovers(vec![watch.id()]);
    let pids: Vec<u32> = imstatus_testkit::wait_until("the hook to start", LIMIT, || {
        let text = std::fs::read_to_string(dir.path().join("pids")).ok()?;
        let pids: Vec<u32> = text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        (pids.len() == 3).then_some(pids)
    })
    .expect("the hook wrote its PIDs");
    leftovers.0.extend(&pids);
    let pgid = pids[0];
    assert_eq!(
        group_members(pgid).len(),
        3,
        "the hook's shell and its two sleeps"
    );

    let imstatus = nix::unistd::Pid::from_raw(watch.id() as i32);
    nix::sys::signal::kill(imstatus, signal).expect("signal imstatus");
    let status = imstatus_testkit::wait_until("imstatus to exit", LIMIT, || {
        watch.try_wait().expect("wait for imstatus")
    })
    .expect("imstatus exited");
    assert_eq!(status.code(), Some(0), "{signal}: {status}");
    let gone = imstatus_testkit::wait_until("the hook's process group to be gone", LIMIT, || {
        group_members(pgid).is_empty().then_some(())
    });
    assert!(
        gone.is_ok(),
        "after {signal} to imstatus, {:?} of the hook's group {pgid} survived",
        group_members(pgid)
    );
}

#[test]
fn ctrl_c_ends_the_running_hooks_whole_process_group() {
    stopping_watch_ends_the_hooks_process_group(nix::sys::signal::Signal::SIGINT);
}

#[test]
fn sigterm_ends_the_running_hooks_whole_process_group() {
    stopping_watch_ends_the_hooks_process_group(nix::sys::signal::Signal::SIGTERM);
}
