//! Shared helpers of the wine tests: the real source in a hub, `reg.exe`, the test double.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_core::{AccountId, Event, EventKind, SignInResult, Snapshot, Status};
use imstatus_hub::{Hub, Subscription};
use imstatus_testkit::{wait_until, wait_until_async};
use imstatus_windows::WindowsConfig;
use imstatus_windows::WindowsSource;

/// Every wait of a test step.
pub const STEP: Duration = Duration::from_secs(20);
/// The account name the hub uses.
pub const DESKTOP: &str = "desktop";

/// The account id.
pub fn desktop() -> AccountId {
    AccountId::new(DESKTOP)
}

/// Runs blocking code on this worker without starving the hub (multi-thread runtime).
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A per-test `IM Providers` client name and COM class id, unique in this run and removed
/// (with whatever an earlier run left) when created and when dropped.
pub struct TestApp {
    /// The `IM Providers` subkey.
    pub name: String,
    /// The class the test double registers, `{…}`.
    pub clsid: String,
}

static NEXT: AtomicU32 = AtomicU32::new(1);

fn fresh_clsid() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    format!("{{1A5B7E57-{:04X}-4000-8000-{pid:08X}{n:04X}}}", n & 0xFFFF)
}

impl TestApp {
    /// A fresh client name; no registry keys yet.
    pub fn new(tag: &str) -> TestApp {
        let app = TestApp {
            name: format!("ImstatusTest-{tag}"),
            clsid: fresh_clsid(),
        };
        app.cleanup();
        app
    }

    /// Moves the client to a fresh class id and registers it. Only for a restart after a
    /// kill: wine's rpcss keeps the class registration of a killed server (Windows' SCM drops
    /// it with the process), so a restarted server under the same class id would not be
    /// reached under wine.
    pub fn new_class(&mut self) {
        reg_quiet(&[
            "delete",
            &format!(r"HKCU\Software\Classes\CLSID\{}", self.clsid),
            "/f",
        ]);
        self.clsid = fresh_clsid();
        self.register_class();
    }

    /// `HKCU\Software\IM Providers\<name>`.
    pub fn key(&self) -> String {
        format!(r"HKCU\Software\IM Providers\{}", self.name)
    }

    /// Sets `UpAndRunning` with `reg add`.
    pub fn up_and_running(&self, value: u32) {
        reg(&[
            "add",
            &self.key(),
            "/v",
            "UpAndRunning",
            "/t",
            "REG_DWORD",
            "/d",
            &value.to_string(),
            "/f",
        ]);
    }

    /// Registers the class as the client's (`HKLM\Software\IM Providers\<name>\GUID`, as
    /// Office-integrated clients do) and under `HKCU\Software\Classes\CLSID` with its name.
    /// No `LocalServer32`: COM must find the running test double, never start one itself.
    pub fn register_class(&self) {
        reg(&[
            "add",
            &format!(r"HKLM\Software\IM Providers\{}", self.name),
            "/v",
            "GUID",
            "/t",
            "REG_SZ",
            "/d",
            &self.clsid,
            "/f",
        ]);
        reg(&[
            "add",
            &format!(r"HKCU\Software\Classes\CLSID\{}", self.clsid),
            "/ve",
            "/t",
            "REG_SZ",
            "/d",
            "imstatus Messenger TEST DOUBLE (tests only)",
            "/f",
        ]);
    }

    fn cleanup(&self) {
        reg_quiet(&["delete", &self.key(), "/f"]);
        reg_quiet(&[
            "delete",
            &format!(r"HKLM\Software\IM Providers\{}", self.name),
            "/f",
        ]);
        reg_quiet(&[
            "delete",
            &format!(r"HKCU\Software\Classes\CLSID\{}", self.clsid),
            "/f",
        ]);
    }

    /// A hub watching this client.
    pub fn hub(&self, contacts: bool) -> Hub {
        hub_with(WindowsConfig {
            app: Some(self.name.clone()),
            contacts,
        })
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Runs wine's `reg.exe`; panics when it fails.
pub fn reg(args: &[&str]) {
    let out = Command::new("reg")
        .args(args)
        .output()
        .expect("reg.exe runs");
    assert!(
        out.status.success(),
        "reg {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs `reg.exe`, ignoring failure (deleting what may not exist).
pub fn reg_quiet(args: &[&str]) {
    let _ = Command::new("reg")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// A hub with a real `WindowsSource` for `config`.
pub fn hub_with(config: WindowsConfig) -> Hub {
    Hub::builder()
        .with_source(desktop(), Arc::new(WindowsSource::new(&config)))
        .start()
}

/// Waits until the source synchronised (or reported why not).
pub async fn settled(hub: &Hub) {
    assert!(
        hub.wait_settled(&[desktop()], STEP).await,
        "the source settled"
    );
}

/// Subscribes and returns the first event's snapshot with the subscription.
pub async fn subscribe(hub: &Hub) -> (Snapshot, Subscription) {
    let mut sub = hub.subscribe();
    let first = tokio::time::timeout(STEP, sub.recv())
        .await
        .expect("a snapshot within the step")
        .expect("the hub is alive");
    let snap = first.snapshot().expect("a snapshot first").clone();
    (snap, sub)
}

/// A short label of an event (`resource_changed` is `None`: parts are checked through
/// snapshots).
pub fn label(e: &Event) -> Option<String> {
    let status = |s: &Status| match &s.message {
        Some(m) => format!("{}:{m}", s.availability),
        None => s.availability.to_string(),
    };
    Some(match &e.kind {
        EventKind::ResourceChanged { .. } => return None,
        EventKind::SignedIn { result } => match result {
            SignInResult::Ok => "signed_in:ok".to_owned(),
            SignInResult::Failed(code) => format!("signed_in:{code}"),
        },
        EventKind::SignedOut { reason } => format!(
            "signed_out:{}",
            serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_else(|| format!("{reason:?}"))
        ),
        EventKind::StatusChanged { to, mistatus, .. } => {
            format!("status:{}:0x{mistatus:03X}", status(to))
        }
        EventKind::SourceError { code, .. } => format!("source_error:{code}"),
        EventKind::ContactStatusChanged { contact, to, .. } => {
            format!("contact:{contact}:{}", status(to))
        }
        other => other.name().to_owned(),
    })
}

/// Collects labelled events until one equals `last` (included), within [`STEP`].
pub async fn until(sub: &mut Subscription, last: &str) -> Vec<String> {
    let deadline = Instant::now() + STEP;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = match tokio::time::timeout(left, sub.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("hub gone; seen so far: {seen:?}"),
            Err(_) => panic!("no `{last}` within {STEP:?}; seen: {seen:?}"),
        };
        if let Some(l) = label(&e) {
            let done = l == last;
            seen.push(l);
            if done {
                return seen;
            }
        }
    }
}

/// Asserts that nothing (labelled) arrives for `quiet`: used only after an exact sequence, to
/// show that nothing follows it.
pub async fn nothing_more(sub: &mut Subscription, quiet: Duration) {
    let deadline = Instant::now() + quiet;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sub.recv()).await {
            Err(_) => return,
            Ok(None) => panic!("hub gone"),
            Ok(Some(e)) => {
                if let Some(l) = label(&e) {
                    panic!("unexpected event {l}");
                }
            }
        }
    }
}

/// The hub's current snapshot of the account.
pub fn snapshot(hub: &Hub) -> Snapshot {
    hub.snapshot(&desktop())
        .and_then(|e| e.snapshot().cloned())
        .expect("a snapshot")
}

/// Polls `f` on the hub's snapshot until it holds, within [`STEP`].
pub async fn eventually(hub: &Hub, what: &str, f: impl Fn(&Snapshot) -> bool) -> Snapshot {
    wait_until_async(what, STEP, || {
        let s = snapshot(hub);
        f(&s).then_some(s)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}; last: {:?}", snapshot(hub)))
}

/// The test double's executable: next to the test binary's `deps` directory (cargo builds it
/// there with `-p imstatus-windows-testdouble`), or `IMSTATUS_TESTDOUBLE`.
pub fn double_exe() -> PathBuf {
    if let Some(p) = std::env::var_os("IMSTATUS_TESTDOUBLE") {
        return PathBuf::from(p);
    }
    let me = std::env::current_exe().unwrap();
    let dir = me.parent().and_then(|d| d.parent()).unwrap();
    let exe = dir.join("imstatus-messenger-testdouble.exe");
    assert!(
        exe.exists(),
        "{} is missing: build it with `cargo build -p imstatus-windows-testdouble --target x86_64-pc-windows-gnu` (scripts/windows-test.sh does)",
        exe.display()
    );
    exe
}

/// A running test double (the stand-in for Communicator), stopped by PID on drop.
pub struct Double {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Double {
    /// Starts the double for `app` and waits until it registered its class and wrote
    /// `UpAndRunning` = 2.
    pub fn start(app: &TestApp, extra: &[&str]) -> Double {
        let mut double = Double::spawn(app, extra);
        double.expect("ready");
        double
    }

    /// Starts the double with `--staged`: it writes `UpAndRunning` = 1 and waits for
    /// [`Double::up`] before it registers its class and writes 2.
    pub fn start_staged(app: &TestApp, extra: &[&str]) -> Double {
        let mut double = Double::spawn(app, &[extra, &["--staged"]].concat());
        double.expect("starting");
        double
    }

    /// Lets a staged double finish starting.
    pub fn up(&mut self) {
        let stdin = self.stdin.as_mut().expect("the double's stdin");
        writeln!(stdin, "up").unwrap();
        stdin.flush().unwrap();
        self.expect("ready");
    }

    fn spawn(app: &TestApp, extra: &[&str]) -> Double {
        let mut child = Command::new(double_exe())
            .args(["--clsid", &app.clsid, "--app", &app.name])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("the test double starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Double {
            child,
            stdin,
            lines,
        }
    }

    /// The double's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for a line of the double's output (skipping others), within [`STEP`].
    pub fn expect(&mut self, line: &str) {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l == line => return,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("no `{line}` from the double"),
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the double exited before `{line}`")
                }
            }
        }
    }

    /// Sends a command and waits until the double fired it (`done <command>`).
    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("the double's stdin");
        writeln!(stdin, "{command}").unwrap();
        stdin.flush().unwrap();
        self.expect(&format!("done {command}"));
    }

    /// Asks the double to exit quietly (no event) and waits for it.
    pub fn exit(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "exit");
        }
        self.wait_exit();
    }

    /// Kills the double (`TerminateProcess` on its PID): the crash case.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the double's own exit (after `shutdown`), within [`STEP`].
    pub fn wait_exit(&mut self) {
        wait_until("the double to exit", STEP, || {
            self.child.try_wait().unwrap()
        })
        .expect("the double exits");
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.stdin.take();
        self.kill();
    }
}
