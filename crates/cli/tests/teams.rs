//! The real `imstatus` binary with a `source = "teams-for-linux"` account on a real mosquitto:
//! `status`, `watch` and `doctor` answer, the call and the shared screen show as the activity,
//! a crash of the app is signed out then client shutdown, and a malformed or oversized payload
//! is reported on one clean line and changes nothing.
//!
//! No Teams client can run here, so the app is played by the real `mosquitto_pub` publishing
//! the app's topics as docs/teams-for-linux.md §6 does: one long-lived `mosquitto_pub -l` with
//! the app's client id holds `teams/connected` and its last will (`false`), one-shot ones
//! publish the retained `status` and media topics. (crates/teams/tests has the full double
//! over MQTT and D-Bus.)
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imstatus_testkit::mosquitto::Mosquitto;
use imstatus_testkit::wait_until;

/// How long one awaited change may take (a publish reaches the source in milliseconds).
const DEADLINE: Duration = Duration::from_secs(10);

/// The app's presence payload, as teams-for-linux publishes it.
fn status(name: &str, code: i32) -> String {
    format!(
        "{{\"status\":\"{name}\",\"statusCode\":{code},\"timestamp\":\"2026-12-02T10:00:00.000Z\",\
         \"clientId\":\"teams-for-linux\"}}"
    )
}

/// The app: `teams/connected` held by a `mosquitto_pub -l` with the app's client id and its
/// last will; killed by PID (SIGKILL: a crash) or on drop.
struct App {
    port: u16,
    holder: Child,
    stdin: Option<ChildStdin>,
}

impl App {
    fn start(broker: &Mosquitto) -> App {
        let port = broker.port();
        let mut holder = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["-i", "teams-for-linux", "-k", "5", "-r", "-l"])
            .args(["-t", "teams/connected"])
            .args(["--will-topic", "teams/connected", "--will-payload", "false"])
            .arg("--will-retain")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mosquitto_pub (Debian package `mosquitto-clients`) must be installed");
        let mut stdin = holder.stdin.take();
        if let Some(s) = stdin.as_mut() {
            s.write_all(b"true\n").expect("write connected");
            s.flush().expect("flush");
        }
        let app = App {
            port,
            holder,
            stdin,
        };
        wait_until("teams/connected = true", DEADLINE, || {
            (app.retained("teams/connected").as_deref() == Some("true")).then_some(())
        })
        .expect("the app is connected");
        app
    }

    /// Publishes `payload` on `teams/<leaf>`, retained, as the app does.
    fn publish(&self, leaf: &str, payload: &str) {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-i", "tfl-standin", "-r", "-t", &format!("teams/{leaf}")])
            .args(["-m", payload])
            .status()
            .expect("mosquitto_pub");
        assert!(status.success(), "mosquitto_pub teams/{leaf}");
    }

    /// The retained message of `topic` (mosquitto_sub, 1 s at most).
    fn retained(&self, topic: &str) -> Option<String> {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", topic])
            .args(["-C", "1", "-W", "1"])
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        (!text.is_empty()).then_some(text)
    }

    /// SIGKILL: the app crashed; the broker publishes its will.
    fn crash(&mut self) {
        self.holder.kill().expect("kill the app");
        let _ = self.holder.wait();
        self.stdin = None;
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if matches!(self.holder.try_wait(), Ok(None)) {
            let _ = self.holder.kill();
        }
        let _ = self.holder.wait();
    }
}

/// The binary, isolated from the developer's config.
fn imstatus(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imstatus"));
    c.env_remove("IMSTATUS_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent-imstatus-test")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null());
    c
}

fn config(dir: &Path, broker: &Mosquitto) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[[account]]\nname = \"work\"\nsource = \"teams-for-linux\"\nvia = \"mqtt\"\n\
             url = \"mqtt://127.0.0.1:{}\"\n",
            broker.port()
        ),
    )
    .expect("write config");
    path
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn imstatus");
    let done = wait_until("imstatus to exit", DEADLINE * 3, || {
        child.try_wait().ok().flatten()
    });
    if done.is_err() {
        let _ = child.kill();
    }
    child.wait_with_output().expect("output")
}

/// A running `imstatus watch` whose stdout lines are collected as they come; killed by its
/// PID when dropped.
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

    /// Waits until the watch has printed `n` lines; the lines without their clock.
    fn count(&self, n: usize) -> Vec<String> {
        match wait_until(&format!("{n} lines from the watch"), DEADLINE, || {
            let l = self.lines();
            (l.len() >= n).then_some(l)
        }) {
            Ok(l) => without_clock(&l),
            Err(_) => panic!(
                "not {n} lines; the watch printed:\n{}",
                self.lines().join("\n")
            ),
        }
    }

    /// SIGTERM, then the exit code (within the deadline).
    fn stop(&mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).expect("pid"));
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
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

#[test]
fn status_doctor_and_watch_follow_the_app_its_call_and_its_crash() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &broker);
    let mut app = App::start(&broker);
    app.publish("status", &status("busy", 2));
    app.publish("in-call", "true");
    app.publish("screen-sharing", "true");
    app.publish("microphone", "muted");

    let out = run({
        let mut c = imstatus(&config);
        c.arg("status");
        c
    });
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (
            Some(0),
            "work     teams-for-linux client running     signed_in   busy\n\
             \x20          teams-for-linux signed_in busy\n\
             \x20          activity mic off camera off in_call yes screen_sharing yes idle no locked no\n"
                .to_owned()
        ),
        "stderr: {}",
        text(&out.stderr)
    );

    let out = run({
        let mut c = imstatus(&config);
        c.arg("doctor");
        c
    });
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (
            Some(0),
            format!(
                "work (teams-for-linux)\n\
                 \x20 ok   broker     connected to mqtt://127.0.0.1:{} anonymously\n\
                 \x20 ok   topics     retained: teams/connected, teams/in-call, teams/microphone, teams/screen-sharing, teams/status\n\
                 \x20 ok   app        connected = true; presence busy; in a call, camera off, microphone not live, sharing the screen\n",
                broker.port()
            )
        ),
        "stderr: {}",
        text(&out.stderr)
    );

    let mut watch = Watch::start({
        let mut c = imstatus(&config);
        c.arg("watch");
        c
    });
    watch.count(3);
    // The call ends: the shared screen with it; then the presence changes.
    app.publish("screen-sharing", "false");
    app.publish("in-call", "false");
    app.publish("status", &status("available", 1));
    watch.count(7);
    // Bad input from the app: a line each, nothing else changes.
    app.publish("in-call", "\u{1b}[2Jmaybe");
    app.publish(
        "status",
        &format!("{{\"pad\":\"{}\"}}", "x".repeat(100_000)),
    );
    watch.count(9);
    // The app crashes: the broker publishes its will.
    app.crash();
    watch.count(13);
    let code = watch.stop();
    assert_eq!(
        without_clock(&watch.lines()),
        [
            "work       client running, signed_in, busy (mistatus 0x00A)",
            "              resource teams-for-linux: signed_in busy",
            "              activity: mic off camera off in_call yes screen_sharing yes idle no locked no",
            "work       screen sharing ended",
            "work       call ended",
            "work       status busy -> available",
            "work       resource teams-for-linux: signed_in available",
            "work       error: protocol_error (0x81000343): teams/in-call: expected true or false, got \"\u{fffd}[2Jmaybe\"; ignored",
            "work       error: protocol_error (0x81000343): teams/status: 100010 bytes, more than 4096; ignored",
            "work       signed out (client_exited)",
            "work       status available -> offline",
            "work       resource teams-for-linux: gone",
            "work       client shut down",
        ]
    );
    assert_eq!(code, Some(0));
}

/// `via = "dbus"` on a real private bus where the app does not run (no double needed): status
/// says the client is not running (exit 4), doctor says which app setting to turn on. (The
/// app running over D-Bus is tested in crates/teams/tests with the double.)
#[test]
fn a_dbus_account_without_the_app_is_not_running_and_doctor_says_why() {
    let bus = imstatus_testkit::DbusDaemon::start().expect("dbus-daemon");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[[account]]\nname = \"work\"\nsource = \"teams-for-linux\"\nvia = \"dbus\"\n\
             bus = \"{}\"\n",
            bus.address()
        ),
    )
    .expect("write config");

    let out = run({
        let mut c = imstatus(&path);
        c.arg("status");
        c
    });
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (
            Some(4),
            "work     teams-for-linux client not_running client_not_running (0x80040111)\n\
             \x20          activity mic off camera off in_call no idle no locked no\n"
                .to_owned()
        ),
        "stderr: {}",
        text(&out.stderr)
    );

    assert!(
        text(&out.stderr).starts_with("imstatus: work: client_not_running (0x80040111)"),
        "{}",
        text(&out.stderr)
    );

    let out = run({
        let mut c = imstatus(&path);
        c.arg("doctor");
        c
    });
    let doctor = text(&out.stdout);
    assert_ne!(out.status.code(), Some(0), "{doctor}");
    let lines: Vec<&str> = doctor.lines().collect();
    assert_eq!(lines.first(), Some(&"work (teams-for-linux)"), "{doctor}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  ok   bus ") && l.contains(bus.address())),
        "{doctor}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("  FAIL name ")
            && l.contains("com.github.IsmaelMartinez.teams_for_linux has no owner")),
        "{doctor}"
    );
    assert!(
        doctor.contains("{\"dbusControl\": {\"enabled\": true}}"),
        "the hint names the app setting: {doctor}"
    );
}
