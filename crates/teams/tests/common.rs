//! The app's test double as a child process, a hub watching one teams-for-linux account, and
//! a compact rendering of events for whole-sequence comparisons.

use std::fmt::Write as _;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use imstatus_core::{AccountId, CodedError, Event, EventKind, SourceKind, Status};
use imstatus_hub::{BoxFuture, Hub, Sink, Source, Subscription};
use imstatus_teams::{BrokerOptions, TeamsConfig, TeamsSource};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long any one step may take.
pub const STEP: Duration = Duration::from_secs(10);

pub fn work() -> AccountId {
    AccountId::new("work")
}

/// Every async test's time limit.
pub async fn bounded(limit: Duration, test: impl std::future::Future<Output = ()>) {
    tokio::time::timeout(limit, test)
        .await
        .expect("the test finished within its limit");
}

/// The test double for teams-for-linux (tests/double/main.rs), a child process stopped by its
/// PID (SIGKILL, on drop as well).
pub struct Double {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Double {
    /// The app with MQTT on the broker on `port` (default prefix and client id); returns once
    /// it has published `connected = true`.
    pub async fn mqtt(port: u16) -> Double {
        Double::start_with(&["mqtt", &format!("mqtt://127.0.0.1:{port}")]).await
    }

    /// The app with MQTT under another prefix and client id.
    pub async fn mqtt_with(port: u16, prefix: &str, client_id: &str) -> Double {
        Double::start_with(&[
            "mqtt",
            &format!("mqtt://127.0.0.1:{port}"),
            prefix,
            client_id,
        ])
        .await
    }

    /// The app with its D-Bus API on the bus at `address`; returns once it owns the name.
    pub async fn dbus(address: &str) -> Double {
        Double::start_with(&["dbus", address]).await
    }

    pub async fn start_with(args: &[&str]) -> Double {
        let mut child = Command::new(env!("CARGO_BIN_EXE_teams-for-linux-double"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("the double starts");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut double = Double {
            child,
            stdin,
            stdout,
        };
        double.expect("ready").await;
        double
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    async fn expect(&mut self, word: &str) {
        match tokio::time::timeout(STEP, self.stdout.next_line()).await {
            Ok(Ok(Some(line))) if line == word => {}
            other => panic!("the double said {other:?}, not {word:?}"),
        }
    }

    /// Sends one line (a state patch or a command) and waits until the double has sent all
    /// it sends for it.
    pub async fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("write");
        stdin.flush().await.expect("flush");
        self.expect("ok").await;
    }

    /// The app quits cleanly; waits until it has exited.
    pub async fn quit(mut self) {
        let stdin = self.stdin.as_mut().expect("stdin");
        stdin.write_all(b"{\"quit\": true}\n").await.expect("write");
        stdin.flush().await.expect("flush");
        let status = tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("the double exits")
            .expect("wait");
        assert!(status.success(), "{status}");
    }

    /// `kill -9` of the app (by its PID); waits until it is gone.
    pub async fn kill9(mut self) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.pid()).expect("pid"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).expect("kill");
        tokio::time::timeout(STEP, self.child.wait())
            .await
            .expect("the double dies")
            .expect("wait");
    }
}

/// A hub watching one teams-for-linux account, and a subscription to it.
pub struct Watch {
    pub hub: Hub,
    pub sub: Subscription,
}

impl Watch {
    /// Starts a hub with `config`, subscribes, and only then lets the source run, so that no
    /// event can be missed.
    pub fn start(config: &TeamsConfig) -> Watch {
        Watch::with_source(TeamsSource::new(config).with_backoff_seed(7))
    }

    pub fn mqtt(port: u16) -> Watch {
        let options = BrokerOptions::new(&format!("mqtt://127.0.0.1:{port}")).expect("url");
        Watch::start(&TeamsConfig::mqtt(options))
    }

    pub fn dbus(address: &str) -> Watch {
        Watch::start(&TeamsConfig::dbus(Some(address.to_owned())))
    }

    pub fn with_source(source: TeamsSource) -> Watch {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let gated = Arc::new(Gated {
            inner: Arc::new(source),
            gate: gate.clone(),
        });
        let hub = Hub::builder().with_source(work(), gated).start();
        let sub = hub.subscribe();
        gate.add_permits(1);
        Watch { hub, sub }
    }

    /// The next event, within `STEP`.
    pub async fn next(&mut self) -> Arc<Event> {
        match tokio::time::timeout(STEP, self.sub.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("the hub stopped"),
            Err(_) => panic!("no event within {STEP:?}"),
        }
    }

    /// The next `n` events, rendered.
    pub async fn take(&mut self, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(render(&*self.next().await));
        }
        out
    }

    /// Events up to and including the first that `done` accepts, rendered.
    pub async fn until(&mut self, done: impl Fn(&str) -> bool) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let line = render(&*self.next().await);
            let stop = done(&line);
            out.push(line);
            if stop {
                return out;
            }
        }
    }

    /// The first events: the subscriber's snapshot, then everything up to the first sync's
    /// last event (which `last` names).
    pub async fn started(&mut self, last: &str) -> Vec<String> {
        let first = self.next().await;
        assert!(first.snapshot().is_some(), "a snapshot first: {first:?}");
        self.until(|l| l == last).await
    }

    /// Nothing happens for `window` (an absence, so it waits the whole window).
    pub async fn quiet(&mut self, window: Duration) {
        if let Ok(Some(e)) = tokio::time::timeout(window, self.sub.recv()).await {
            panic!("expected no event, got {}", render(&e));
        }
    }

    /// The account's snapshot now.
    pub fn snapshot(&self) -> imstatus_core::Snapshot {
        self.hub
            .snapshot(&work())
            .and_then(|e| e.snapshot().cloned())
            .expect("a snapshot")
    }
}

/// A source that runs `inner` once the gate has a permit.
struct Gated {
    inner: Arc<TeamsSource>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Source for Gated {
    fn kind(&self) -> SourceKind {
        self.inner.kind()
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.gate.acquire().await;
            self.inner.clone().run(sink).await;
        })
    }

    fn set_status(&self, status: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        self.inner.set_status(status)
    }
}

/// A value's JSON word (`"ok"` → `ok`).
fn word(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v)
        .unwrap_or_default()
        .trim_matches('"')
        .to_owned()
}

fn status(s: &Status) -> String {
    s.availability.as_str().to_owned()
}

/// One event as one short line: `signed_in ok`, `status_changed busy 0x00a`,
/// `activity in_call microphone`, `source_error protocol_error: …`.
pub fn render(e: &Event) -> String {
    match &e.kind {
        EventKind::Snapshot { snapshot, .. } => format!(
            "snapshot {} {} {}",
            snapshot.client, snapshot.session, snapshot.availability
        ),
        EventKind::SignedIn { result } => format!("signed_in {}", word(result)),
        EventKind::SignedOut { reason } => format!("signed_out {}", word(reason)),
        EventKind::StatusChanged { to, mistatus, .. } => {
            format!("status_changed {} 0x{mistatus:03x}", status(to))
        }
        EventKind::ResourceChanged { resource, to, .. } => match to {
            Some(r) => format!("resource {resource} {} {}", r.session, r.availability),
            None => format!("resource {resource} gone"),
        },
        EventKind::ActivityChanged { to, .. } => {
            let mut line = String::from("activity");
            for (on, name) in [
                (to.in_call, "in_call"),
                (to.camera, "camera"),
                (to.microphone, "microphone"),
                (to.screen_sharing, "screen_sharing"),
            ] {
                if on {
                    let _ = write!(line, " {name}");
                }
            }
            for app in to.microphone_apps.iter().chain(&to.camera_apps) {
                let _ = write!(line, " [{}]", app.name);
            }
            line
        }
        EventKind::SourceError { code, detail, .. } => format!("source_error {code}: {detail}"),
        other => other.name().to_owned(),
    }
}

/// Whether a rendered line is a `source_error` with `code`.
pub fn is_error(line: &str, code: &str) -> bool {
    line.starts_with(&format!("source_error {code}:"))
}
