//! The real `imstatus` binary with a `desktop` account on a real PulseAudio (the testkit's,
//! in a private runtime dir) and real `parecord` captures: `watch` shows the activity and
//! what changed, a hook gets `IMSTATUS_ACTIVITY_*`, `status` and `doctor` answer.
#![cfg(unix)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imstatus_testkit::{wait_until, PulseAudio};

/// How long one awaited change may take (the microphone is seen within a second).
const DEADLINE: Duration = Duration::from_secs(10);

/// The binary, isolated from the developer's config and sessions, with the PulseAudio's
/// private environment (runtime dir and HOME).
fn imstatus(pa: &PulseAudio, config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imstatus"));
    c.env_remove("IMSTATUS_CONFIG")
        .env_remove("PULSE_SERVER")
        .env("XDG_CONFIG_HOME", "/nonexistent-imstatus-test")
        .envs(pa.env())
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null());
    c
}

/// A desktop account watching the microphone on `pa`.
fn desk_config(dir: &Path, pa: &PulseAudio) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[[account]]\nname = \"desk\"\nsource = \"desktop\"\nmicrophone = true\n\
             pulse_server = \"{}\"\n",
            pa.server()
        ),
    )
    .expect("write config");
    path
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A running `imstatus watch` whose stdout lines are collected as they come; stopped with
/// SIGTERM (then SIGKILL) by its PID when dropped.
struct Watch {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Watch {
    fn start(mut cmd: Command) -> Watch {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn imstatus watch");
        let stdout = child.stdout.take().expect("stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                sink.lock().expect("lock").push(line);
            }
        });
        Watch { child, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().expect("lock").clone()
    }

    /// Waits until a line contains `needle`.
    fn shows(&self, needle: &str) {
        if wait_until(&format!("`{needle}` in the watch"), DEADLINE, || {
            self.lines()
                .iter()
                .any(|l| l.contains(needle))
                .then_some(())
        })
        .is_err()
        {
            panic!(
                "no `{needle}`; the watch printed:\n{}",
                self.lines().join("\n")
            );
        }
    }

    /// SIGTERM, then the exit code (within the deadline).
    fn stop(&mut self) -> Option<i32> {
        terminate(&self.child);
        let status = wait_until("watch to exit", DEADLINE, || {
            self.child.try_wait().ok().flatten()
        })
        .expect("watch exits after SIGTERM");
        status.code()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn terminate(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
}

/// The lines without their clock (`10:00:00.123  `); continuation lines as they are.
fn without_clock(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .map(|l| match l.get(..14) {
            Some(clock) if clock.as_bytes()[0].is_ascii_digit() => l[14..].to_owned(),
            _ => l.clone(),
        })
        .collect()
}

fn read_lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn watch_shows_the_microphone_in_use_and_a_hook_gets_the_activity_variables() {
    let pa = PulseAudio::start().expect("PulseAudio");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = desk_config(dir.path(), &pa);
    let log = dir.path().join("hook.log");
    let hook = format!(
        "printf '%s|%s|%s|%s|%s|%s|%s|%s\\n' \"$IMSTATUS_EVENT\" \"$IMSTATUS_ACTIVITY_MICROPHONE\" \
         \"$IMSTATUS_ACTIVITY_CAMERA\" \"$IMSTATUS_ACTIVITY_IN_CALL\" \"$IMSTATUS_ACTIVITY_IDLE\" \
         \"$IMSTATUS_ACTIVITY_LOCKED\" \"${{IMSTATUS_ACTIVITY_IDLE_S-unset}}\" \
         \"$IMSTATUS_ACTIVITY_APPS\" >> '{}'",
        log.display()
    );
    let mut cmd = imstatus(&pa, &config);
    cmd.args(["watch", "--exec", &hook]);
    let mut watch = Watch::start(cmd);
    watch.shows("activity: mic off");
    let hook_lines = |n: usize| {
        wait_until(&format!("{n} hook runs"), DEADLINE, || {
            let got = read_lines(&log);
            (got.len() >= n).then_some(got)
        })
        .unwrap_or_else(|_| panic!("hook log: {:?}", read_lines(&log)))
    };
    hook_lines(1);

    // parecord captures from the microphone: one line saying so, with its PID.
    let mut rec = pa.record("mic").expect("parecord");
    let pid = rec.pid();
    watch.shows(&format!("microphone on (parecord {pid})"));
    hook_lines(2);
    rec.stop().expect("stop parecord");
    watch.shows("microphone off");
    let hooks = hook_lines(3);
    let code = watch.stop();

    assert_eq!(
        without_clock(&watch.lines()),
        [
            "desk       client running, unknown, unknown (mistatus 0x000)".to_owned(),
            format!(
                "{:14}activity: mic off camera off in_call no idle no locked no",
                ""
            ),
            format!("desk       microphone on (parecord {pid})"),
            "desk       microphone off".to_owned(),
        ]
    );
    // Idle is not watched, so its seconds are unknown: set, and empty.
    assert_eq!(
        hooks,
        [
            "snapshot|0|0|0|0|0||".to_owned(),
            format!("activity_changed|1|0|1|0|0||parecord:{pid}"),
            "activity_changed|0|0|0|0|0||".to_owned(),
        ]
    );
    assert_eq!(code, Some(0));
}

#[test]
fn status_shows_the_activity_and_exits_0_and_json_carries_it() {
    let pa = PulseAudio::start().expect("PulseAudio");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = desk_config(dir.path(), &pa);
    // The first answer already has the activity: the source syncs only after its first
    // reading.
    let out = imstatus(&pa, &config)
        .arg("status")
        .output()
        .expect("run imstatus status");
    assert_eq!(
        text(&out.stdout),
        format!(
            "desk     desktop client running     unknown     unknown\n\
             {:11}activity mic off camera off in_call no idle no locked no\n",
            ""
        )
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    let rec = pa.record("mic").expect("parecord");
    let pid = rec.pid();
    // parecord's stream appears within milliseconds of its start; ask until it is seen.
    let seen = wait_until("status to see parecord", DEADLINE, || {
        let out: Output = imstatus(&pa, &config)
            .arg("status")
            .output()
            .expect("run imstatus status");
        text(&out.stdout).contains("mic on").then_some(out)
    })
    .expect("status sees the capture");
    assert_eq!(
        text(&seen.stdout),
        format!(
            "desk     desktop client running     unknown     unknown\n\
             {:11}activity mic on (parecord {pid}) camera off in_call yes idle no locked no\n",
            ""
        )
    );
    assert_eq!(seen.status.code(), Some(0), "{}", text(&seen.stderr));
    assert_eq!(text(&seen.stderr), "");

    let out = imstatus(&pa, &config)
        .args(["status", "--json"])
        .output()
        .expect("run imstatus status --json");
    let v: serde_json::Value = serde_json::from_str(&text(&out.stdout)).expect("one JSON line");
    assert_eq!(
        v["activity"],
        serde_json::json!({"microphone": true, "camera": false, "in_call": true, "idle_s": null,
            "idle": false, "locked": false,
            "microphone_apps": [{"name": "parecord", "pid": pid}], "camera_apps": []})
    );
    drop(rec);
}

#[test]
fn doctor_names_the_sound_server_and_says_what_to_fix_when_it_is_gone() {
    let mut pa = PulseAudio::start().expect("PulseAudio");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = desk_config(dir.path(), &pa);
    let out = imstatus(&pa, &config)
        .arg("doctor")
        .output()
        .expect("run imstatus doctor");
    let report = text(&out.stdout);
    eprintln!("{report}");
    assert_eq!(out.status.code(), Some(0), "{report}");
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines.first(), Some(&"desk (desktop)"), "{report}");
    assert!(
        lines.iter().any(|l| l.starts_with("  ok   microphone ")
            && l.contains(&pa.server())
            && l.contains("answers")),
        "{report}"
    );

    pa.stop().expect("stop PulseAudio");
    let out = imstatus(&pa, &config)
        .arg("doctor")
        .output()
        .expect("run imstatus doctor");
    let report = text(&out.stdout);
    eprintln!("{report}");
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.lines().any(|l| l.starts_with("  FAIL microphone ")),
        "{report}"
    );
    assert!(
        report.lines().any(|l| l.starts_with("       hint: ")),
        "{report}"
    );
}
