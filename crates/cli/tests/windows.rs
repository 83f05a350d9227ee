//! The Windows build of the binary (`imstatus.exe`, cross-built by scripts/windows-build.sh) under
//! wine, against a real Prosody on loopback, next to the Linux binary on the same config.
//!
//! Runs when `IMSTATUS_WINDOWS_EXE` names the exe (scripts/windows-smoke.sh sets it, with
//! `WINEPREFIX` naming a prefix prepared by `ensure_wine_prefix` in scripts/lib.sh);
//! without it each test says so on stderr and passes, so that a plain `cargo test` needs no
//! wine. scripts/windows-smoke.sh checks that they did run.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use imstatus_testkit::{wait_until, Prosody, ProsodyOptions, XmppClient};
use serde_json::Value;

const STEP: Duration = Duration::from_secs(30);

/// The exe, or `None` (the test is skipped) when `IMSTATUS_WINDOWS_EXE` is not set.
fn exe() -> Option<PathBuf> {
    match std::env::var_os("IMSTATUS_WINDOWS_EXE").filter(|v| !v.is_empty()) {
        Some(p) => {
            let p = PathBuf::from(p);
            assert!(
                p.is_file(),
                "IMSTATUS_WINDOWS_EXE={} is not a file",
                p.display()
            );
            Some(p)
        }
        None => {
            eprintln!("skipped: IMSTATUS_WINDOWS_EXE is not set (see scripts/windows-smoke.sh)");
            None
        }
    }
}

/// A Linux path as the Windows program sees it (wine maps `/` to drive `Z:`).
fn win(p: &Path) -> String {
    format!("Z:{}", p.display()).replace('/', "\\")
}

/// `wine imstatus.exe --config CONFIG`.
fn wine(exe: &Path, config: Option<&Path>) -> Command {
    let mut c = Command::new("wine");
    c.arg(exe)
        .env("WINEDEBUG", "-all")
        .env_remove("IMSTATUS_CONFIG")
        .stdin(Stdio::null());
    if let Some(config) = config {
        c.arg("--config").arg(win(config));
    }
    c
}

/// The Linux binary on the same config, for comparison.
fn linux(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imstatus"));
    c.env_remove("IMSTATUS_CONFIG")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null());
    c
}

/// Attempts at a one-shot command that wineserver killed on its way out (see [`run`]).
const ATTEMPTS: u32 = 3;

/// Runs a one-shot command to its end. Under wine, a process that has written all its output
/// and closed its connection to wineserver on its way out can still be killed: wineserver then
/// checks that the unix process is gone (`kill(pid, 0)` after 15, 31, 62, 125 and 250 ms, seen
/// with strace) and sends SIGKILL at about 0.5 s. On a loaded machine the unix side now and
/// then takes that long to reach `exit_group`, and the Windows exit code is lost with it. Only
/// wineserver sends that SIGKILL here, so such a run is run again (at most [`ATTEMPTS`] in all),
/// said on stderr; any other ending is returned as it is.
fn run(cmd: &mut Command) -> Output {
    let mut attempt = 1;
    loop {
        let out = cmd.output().expect("run imstatus");
        if !killed_on_its_way_out(&out.status) || attempt == ATTEMPTS {
            return out;
        }
        eprintln!("wineserver killed {cmd:?} on its way out (attempt {attempt}): running it again");
        attempt += 1;
    }
}

/// Ended by SIGKILL, which in these tests only wineserver sends, and only to a process whose
/// threads have all ended (see [`run`]).
fn killed_on_its_way_out(status: &ExitStatus) -> bool {
    status.signal() == Some(nix::sys::signal::Signal::SIGKILL as i32)
}

/// `out` ended with exit code `code`; else fails with how it ended and its stderr.
#[track_caller]
fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}: {}",
        out.status,
        text(&out.stderr)
    );
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// An xmpp account for alice on the Prosody at `port`; `password_file` written as the
/// Windows path when `windows`.
/// A private Prosody, the config for alice as seen from wine (`xmpp_config(.., true)`) and
/// alice's desk client online at priority 5 with `show` and `message`.
fn alice_at_her_desk(
    dir: &Path,
    show: Option<&str>,
    message: Option<&str>,
) -> (Prosody, PathBuf, XmppClient) {
    let prosody = Prosody::start(ProsodyOptions::default()).expect("prosody");
    let wcfg = xmpp_config(dir, prosody.port(), true);
    let mut desk = XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", "desk")
        .expect("alice's desk client");
    desk.presence(show, message, Some(5)).expect("presence");
    (prosody, wcfg, desk)
}

fn xmpp_config(dir: &Path, port: u16, windows: bool) -> PathBuf {
    let pw = dir.join("alice.pw");
    std::fs::write(&pw, "alicepw\r\n").expect("write password");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let (path, pw) = if windows {
        (dir.join("windows.toml"), win(&pw))
    } else {
        (dir.join("linux.toml"), pw.display().to_string())
    };
    std::fs::write(
        &path,
        format!(
            "[[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             password_file = '{pw}'\nserver = \"127.0.0.1:{port}\"\ntls = \"insecure-plaintext\"\n",
        ),
    )
    .expect("write config");
    path
}

/// The JSON's shape: every value replaced by its type, recursively.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.iter().map(shape).collect()),
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
    }
}

/// The fields of a snapshot that do not depend on when it was taken.
fn answer(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        for k in ["seq", "time", "since"] {
            m.remove(k);
        }
    }
    v
}

fn one_json(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {:?}, stderr {:?}",
            text(&out.stdout),
            text(&out.stderr)
        )
    })
}

#[test]
fn version_status_and_config_errors_match_linux() {
    let Some(exe) = exe() else { return };
    let out = run(wine(&exe, None).arg("--version"));
    assert_code(&out, 0);
    assert_eq!(
        text(&out.stdout),
        format!("imstatus {}\n", env!("CARGO_PKG_VERSION"))
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let prosody = Prosody::start(ProsodyOptions::default()).expect("prosody");
    let wcfg = xmpp_config(dir.path(), prosody.port(), true);
    let lcfg = xmpp_config(dir.path(), prosody.port(), false);

    // Nobody online: signed out, exit 3, on both.
    let w = run(wine(&exe, Some(&wcfg)).args(["status", "--json"]));
    assert_code(&w, 3);
    let l = run(linux(&lcfg).args(["status", "--json"]));
    assert_code(&l, 3);
    assert_eq!(answer(&one_json(&w)), answer(&one_json(&l)));

    // Alice's desk client away "lunch": signed in, exit 0, the same JSON.
    let mut desk = XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", "desk")
        .expect("alice's desk client");
    desk.presence(Some("away"), Some("lunch"), Some(5))
        .expect("presence");
    let w = run(wine(&exe, Some(&wcfg)).args(["status", "--json"]));
    assert_code(&w, 0);
    let l = run(linux(&lcfg).args(["status", "--json"]));
    assert_code(&l, 0);
    let (wv, lv) = (one_json(&w), one_json(&l));
    assert_eq!(wv["session"], "signed_in", "{wv}");
    assert_eq!(wv["availability"], "away", "{wv}");
    assert_eq!(wv["message"], "lunch", "{wv}");
    assert_eq!(wv["resources"][0]["resource"], "desk", "{wv}");
    assert_eq!(shape(&wv), shape(&lv), "windows {wv}\nlinux {lv}");
    assert_eq!(answer(&wv), answer(&lv));

    // The table too.
    let w = run(wine(&exe, Some(&wcfg)).arg("status"));
    assert_code(&w, 0);
    assert!(
        text(&w.stdout).contains("signed_in   away \"lunch\""),
        "{}",
        text(&w.stdout)
    );

    // A bad key: exit 2 naming the file and the line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[account]]\nname = \"a\"\nsource = \"xmpp\"\nbuss = 1\n",
    )
    .expect("write");
    let w = run(wine(&exe, Some(&bad)).arg("status"));
    assert_code(&w, 2);
    let err = text(&w.stderr);
    assert!(
        err.starts_with(&format!(
            "imstatus: config: {}:4: unknown key `buss`",
            win(&bad)
        )),
        "{err}"
    );

    // A named config file that does not exist: exit 2.
    let w = run(wine(&exe, Some(&dir.path().join("missing.toml"))).arg("status"));
    assert_code(&w, 2);

    // A purple account: refused, saying that libpurple over D-Bus is Unix-only.
    let purple = dir.path().join("purple.toml");
    std::fs::write(
        &purple,
        "[[account]]\nname = \"desk\"\nsource = \"purple\"\n",
    )
    .expect("write");
    let w = run(wine(&exe, Some(&purple)).arg("status"));
    assert_code(&w, 1);
    assert!(
        text(&w.stderr).contains("has no `purple` source (libpurple over D-Bus is Unix-only)"),
        "{}",
        text(&w.stderr)
    );

    // doctor checks the account for real.
    let w = run(wine(&exe, Some(&wcfg)).arg("doctor"));
    assert_eq!(
        w.status.code(),
        Some(0),
        "{}{}",
        text(&w.stdout),
        text(&w.stderr)
    );
    desk.close().expect("close");
}

/// Reads `child`'s stdout lines on a thread; returns the receiving end.
fn lines_of(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for `child` to exit, at most `limit`; kills it (by its PID) after that.
fn exit_within(child: &mut Child, limit: Duration) -> ExitStatus {
    let exited = wait_until("imstatus.exe to exit", limit, || {
        child.try_wait().expect("try_wait")
    });
    if let Ok(status) = exited {
        return status;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("imstatus.exe did not exit within {limit:?}");
}

/// `status` is a clean exit: code 0, or wineserver's SIGKILL after the program had ended (see
/// [`run`]: a long-running command cannot be run again, and its code is then lost; said on
/// stderr). Any other code or signal fails, with `what` and `stderr`.
fn assert_clean_exit(status: ExitStatus, what: &str, stderr: &str) {
    if killed_on_its_way_out(&status) {
        eprintln!("wineserver killed {what} on its way out: its exit code is lost");
        return;
    }
    assert_eq!(status.code(), Some(0), "{what}: {status}: {stderr}");
}

#[test]
fn watch_streams_events_and_ends_on_ctrl_c() {
    let Some(exe) = exe() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prosody, wcfg, mut desk) = alice_at_her_desk(dir.path(), None, None);

    let mut child = wine(&exe, Some(&wcfg))
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let rx = lines_of(&mut child);
    let first: Value =
        serde_json::from_str(&rx.recv_timeout(STEP).expect("snapshot")).expect("json");
    assert_eq!(first["event"], "snapshot", "{first}");
    assert_eq!(first["session"], "signed_in", "{first}");

    desk.presence(Some("dnd"), Some("in a call"), Some(5))
        .expect("presence");
    let changed = loop {
        let line = rx.recv_timeout(STEP).expect("status_changed");
        let v: Value = serde_json::from_str(&line).expect("json");
        if v["event"] == "status_changed" {
            break v;
        }
    };
    assert_eq!(changed["to"]["availability"], "busy", "{changed}");
    assert_eq!(changed["to"]["message"], "in a call", "{changed}");
    // The change's second event: after it the watch waits for the next one, and the Ctrl-C
    // below lands on an idle program (see `IDLE` in exec_hooks_…).
    loop {
        let line = rx.recv_timeout(STEP).expect("resource_changed");
        let v: Value = serde_json::from_str(&line).expect("json");
        if v["event"] == "resource_changed" {
            break;
        }
    }

    // SIGINT to wine's process is the console's Ctrl-C for the Windows program.
    let pid = i32::try_from(child.id()).expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    assert_clean_exit(
        exit_within(&mut child, STEP),
        "the watch stopped by Ctrl-C",
        "",
    );
    desk.close().expect("close");
}

#[test]
fn watch_ends_when_its_reader_goes_at_the_next_event() {
    let Some(exe) = exe() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prosody, wcfg, mut desk) = alice_at_her_desk(dir.path(), None, None);

    let mut child = wine(&exe, Some(&wcfg))
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("snapshot");
    assert!(line.contains("\"snapshot\""), "{line}");
    // `| head -1`: the reader goes. On Windows nothing tells imstatus until it next writes.
    drop(stdout);
    // Each change is a write that fails once the reader has gone: change the status until
    // imstatus notices, within STEP.
    let mut shows = ["away", "xa"].into_iter().cycle();
    let noticed = wait_until("watch to notice its reader went", STEP, || {
        let status = child.try_wait().expect("try_wait");
        if status.is_none() {
            desk.presence(shows.next(), None, Some(5))
                .expect("presence");
        }
        status
    });
    let status = match noticed {
        Ok(status) => status,
        Err(_) => exit_within(&mut child, Duration::ZERO),
    };
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err);
    assert_clean_exit(status, "the watch whose reader went", &err);
    desk.close().expect("close");
}

#[test]
fn exec_hooks_get_the_event_in_variables_and_are_killed_on_timeout() {
    let Some(exe) = exe() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    // A message that would run a command if it were pasted into cmd's command line.
    let (_prosody, wcfg, mut desk) =
        alice_at_her_desk(dir.path(), Some("away"), Some("a & echo INJECTED"));

    let mut child = wine(&exe, Some(&wcfg))
        .args([
            "watch",
            "--json",
            "--exec",
            "echo hook !IMSTATUS_EVENT! !IMSTATUS_AVAILABILITY! [!IMSTATUS_MESSAGE!] >> hooks.txt",
        ])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let rx = lines_of(&mut child);
    rx.recv_timeout(STEP).expect("snapshot");
    let log = dir.path().join("hooks.txt");
    let hooks = wait_until("the snapshot's hook", STEP, || {
        let hooks = std::fs::read_to_string(&log).unwrap_or_default();
        hooks.contains("hook snapshot").then_some(hooks)
    })
    .unwrap_or_default();
    assert!(
        hooks.contains("hook snapshot away [a & echo INJECTED]"),
        "{hooks:?}"
    );
    assert!(!hooks.lines().any(|l| l.trim() == "INJECTED"), "{hooks:?}");
    // IDLE: Ctrl-C only once the hook's shell has gone. Wine runs the console's Ctrl-C on a
    // thread it creates inside its SIGINT handler (see the stop mid-hook below); sent just
    // after the hook had written its line, it once crashed the watch (SIGSEGV, 1 run in 40),
    // likely landing while the program reaped the hook. Windows delivers Ctrl-C without a
    // signal.
    let hook = ["echo hook", "hooks.txt"];
    wait_until("the snapshot's hook to end", STEP, || {
        grandchildren(&hook).is_empty().then_some(())
    })
    .unwrap_or_else(|e| panic!("{e}: {:?}", grandchildren(&hook)));
    let pid = i32::try_from(child.id()).expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    assert_clean_exit(
        exit_within(&mut child, STEP),
        "the hooks' watch stopped by Ctrl-C",
        "",
    );

    // A hook that hangs, with a grandchild (another imstatus.exe waiting for a state that never
    // comes): past --exec-timeout it is killed, reported, and the watch goes on to the next
    // event's run.
    let marker = dir.path().join("runs.txt");
    let hang = format!(
        "echo run >> {} && {} --config {} wait status=chatty --timeout 120s",
        win(&marker),
        win(&exe),
        win(&wcfg)
    );
    let mut child = wine(&exe, Some(&wcfg))
        .args(["watch", "--json", "--exec-timeout", "5s", "--exec", &hang])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn watch");
    let rx = lines_of(&mut child);
    rx.recv_timeout(STEP).expect("snapshot");
    let stderr = child.stderr.take().expect("stderr");
    let (etx, erx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if etx.send(line).is_err() {
                return;
            }
        }
    });
    let ran_past = |what: &str| loop {
        let line = erx.recv_timeout(STEP).expect("stderr line");
        if line.contains("--exec ran past 5s") {
            assert!(line.contains(what), "{line}");
            return;
        }
    };
    // The hook's own child is in the hook's job: killed with it, not left waiting.
    let config = win(&wcfg);
    let hung = ["status=chatty", config.as_str()];
    ran_past("for event snapshot of alice");
    let gone = |when: &str| {
        if let Err(e) = wait_until(when, STEP, || grandchildren(&hung).is_empty().then_some(())) {
            let left = grandchildren(&hung);
            kill_all(&left);
            panic!("{e}: the hook's child outlived it: {left:?}");
        }
    };
    gone("the timed-out hook's child to be killed with it");
    desk.presence(Some("xa"), None, Some(5)).expect("presence");
    ran_past("for event status_changed of alice");
    // A status change is two events, status_changed and resource_changed: the third run is
    // resource_changed's. Stopping imstatus mid-run takes the running hook's tree too. The stop
    // waits until that run's shell has written its line: wine turns SIGINT into a thread
    // created inside its signal handler, which deadlocks on malloc's lock when the signal lands
    // while imstatus.exe forks the hook's process (seen with gdb: `NtCreateThreadEx` →
    // `calloc` from the handler, interrupting `fork` in `NtCreateUserProcess`). Windows
    // delivers Ctrl-C on a new thread without a signal, so this is wine's alone.
    let runs = wait_until("resource_changed's run to start", STEP, || {
        let runs = std::fs::read_to_string(&marker).unwrap_or_default();
        (runs.lines().count() >= 3).then_some(runs)
    })
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(runs.lines().count(), 3, "{runs:?}");
    let pid = i32::try_from(child.id()).expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    assert_clean_exit(
        exit_within(&mut child, STEP),
        "the watch stopped mid-hook by Ctrl-C",
        "",
    );
    gone("the running hook's child to be killed when imstatus stops");
    desk.close().expect("close");
}

#[test]
fn serve_answers_over_http_and_drains_on_ctrl_c() {
    let Some(exe) = exe() else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let (_prosody, wcfg, desk) = alice_at_her_desk(dir.path(), Some("chat"), None);
    let port = imstatus_testkit::free_port();
    let mut text = std::fs::read_to_string(&wcfg).expect("config");
    text.push_str(&format!("\n[serve]\nlisten = \"127.0.0.1:{port}\"\n"));
    std::fs::write(&wcfg, text).expect("config");

    let mut child = wine(&exe, Some(&wcfg))
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let body = wait_until("a signed-in answer from imstatus.exe serve", STEP, || {
        let v: Value = serde_json::from_str(&http_get(port, "/v1/accounts/alice")?).expect("json");
        (v["session"] == "signed_in").then_some(v)
    })
    .expect("no answer from imstatus.exe serve");
    assert_eq!(body["availability"], "chatty", "{body}");
    let pid = i32::try_from(child.id()).expect("pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    assert_clean_exit(exit_within(&mut child, STEP), "serve stopped by Ctrl-C", "");
    desk.close().expect("close");
}

/// `GET path` on 127.0.0.1:`port`: the body of a 200 answer, else `None`.
fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then_some(())
        .or_else(|| head.starts_with("HTTP/1.1 200").then_some(()))?;
    Some(body.to_owned())
}

/// PIDs of processes whose command line contains all of `needles`, other than the watch (whose
/// `--exec` argument contains them too).
/// Kills `pids` (left behind by a failed test) with SIGKILL.
fn kill_all(pids: &[u32]) {
    for &pid in pids {
        if let Ok(pid) = i32::try_from(pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn grandchildren(needles: &[&str]) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = text(&cmdline);
        if needles.iter().all(|n| cmdline.contains(n)) && !cmdline.contains("--exec") {
            found.push(pid);
        }
    }
    found
}
