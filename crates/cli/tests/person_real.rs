//! A `[[person]]` through the real `imstatus` binary, with real members: alice's XMPP account
//! on a real Prosody (her other client played by testkit's raw client) and a `desktop` account
//! on a real PulseAudio, where a `parecord` capture is the microphone in use. bob, a contact
//! of alice's, looks at what imstatus's `sync` announces. Plus the config errors of
//! `[[person]]`, each with its line and exit code 2.
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imstatus_testkit::mosquitto::Mosquitto;
use imstatus_testkit::{wait_until, Prosody, ProsodyOptions, PulseAudio, XmppClient, Xvfb};
use serde_json::{json, Value};

/// How long one awaited change may take.
const DEADLINE: Duration = Duration::from_secs(15);
/// What every imstatus resource of alice's looks like on the wire.
const IMSTATUS_RESOURCE: &str = "alice@example.test/imstatus-";

/// The binary, isolated from the developer's config and sessions, with the PulseAudio's
/// private environment.
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

/// alice's XMPP account (visible: this Prosody cannot hide a session), the desktop account
/// `desk` watching the microphone, and the person `me` of alice with desk's signals, syncing
/// alice.
fn config(dir: &Path, prosody: &Prosody, pa: &PulseAudio) -> PathBuf {
    config_with(dir, prosody, pa, "")
}

/// [`config`] with more keys for `desk`.
fn config_with(dir: &Path, prosody: &Prosody, pa: &PulseAudio, desk: &str) -> PathBuf {
    let pw = dir.join("alice.pw");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&pw)
        .expect("password file");
    writeln!(f, "alicepw").expect("write password");
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             password_file = \"{}\"\nserver = \"127.0.0.1:{}\"\ntls = \"insecure-plaintext\"\n\
             visibility = \"visible\"\n\n\
             [[account]]\nname = \"desk\"\nsource = \"desktop\"\nmicrophone = true\n\
             pulse_server = \"{}\"\n{desk}\n\
             [[person]]\nname = \"me\"\naccounts = [\"alice\"]\nsignals = \"desk\"\n\
             sync = [\"alice\"]\n",
            pw.display(),
            prosody.port(),
            pa.server()
        ),
    )
    .expect("write config");
    path
}

fn login(prosody: &Prosody, user: &str, resource: &str) -> XmppClient {
    XmppClient::connect(
        prosody.port(),
        user,
        "example.test",
        &format!("{user}pw"),
        resource,
    )
    .expect("XMPP login")
}

/// A client online with `show`/`status`, its own presence back (the server has handled it).
fn online(prosody: &Prosody, user: &str, resource: &str, priority: i8) -> XmppClient {
    let mut c = login(prosody, user, resource);
    c.presence(None, None, Some(priority)).expect("presence");
    c.read_until(&format!("from='{user}@example.test/{resource}'"), DEADLINE)
        .expect("own presence back");
    c
}

/// The next presence bob gets from an imstatus resource of alice's that contains every needle.
fn bob_sees(bob: &mut XmppClient, needles: &[&str]) -> String {
    let deadline = Instant::now() + DEADLINE;
    let mut read = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "bob never saw {needles:?}; read {read:#?}");
        let stanza = bob.read_stanza(left).expect("bob reads");
        if stanza.starts_with("<presence")
            && stanza.contains(IMSTATUS_RESOURCE)
            && needles.iter().all(|n| stanza.contains(n))
        {
            return stanza;
        }
        read.push(stanza);
    }
}

/// A running `imstatus watch`, its stdout lines collected; killed by its PID when dropped.
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

    /// The JSON events printed so far.
    fn events(&self) -> Vec<Value> {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Waits until `n` events are out; returns them all.
    fn until(&self, n: usize, what: &str) -> Vec<Value> {
        wait_until(what, DEADLINE, || {
            let got = self.events();
            (got.len() >= n).then_some(got)
        })
        .unwrap_or_else(|_| panic!("no {what}; the watch printed:\n{:#?}", self.events()))
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

/// What a person's event says: its kind, status and what decided it.
fn summary(e: &Value) -> Value {
    match e["event"].as_str() {
        Some("snapshot") => json!({
            "event": "snapshot",
            "availability": e["availability"],
            "message": e["message"],
            "decided_by": e["decided_by"],
        }),
        Some("status_changed") => json!({
            "event": "status_changed",
            "availability": e["to"]["availability"],
            "message": e["to"]["message"],
            "decided_by": e["decided_by"],
        }),
        _ => json!({"event": e["event"]}),
    }
}

fn status(availability: &str, message: Option<&str>, decided_by: Value, event: &str) -> Value {
    json!({
        "event": event,
        "availability": availability,
        "message": message,
        "decided_by": decided_by,
    })
}

#[test]
fn a_call_makes_the_person_busy_sync_tells_alices_contacts_and_the_end_puts_it_back() {
    let prosody = Prosody::start(ProsodyOptions::default()).expect("Prosody");
    let pa = PulseAudio::start().expect("PulseAudio");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &prosody, &pa);
    let mut bob = online(&prosody, "bob", "laptop", 0);
    let mut laptop = online(&prosody, "alice", "laptop", 1);

    let mut cmd = imstatus(&pa, &config);
    cmd.args(["watch", "me", "--json"]);
    let watch = Watch::start(cmd);
    let member = json!({"rule": "most_available", "account": "alice"});
    let call = json!({"rule": "call", "account": "desk", "signal": "microphone"});
    let first = watch.until(1, "the person's snapshot");
    assert_eq!(first[0]["account"], "me");
    assert_eq!(first[0]["source"], "person");
    assert_eq!(first[0]["accounts"], json!(["alice"]));

    // A call: the microphone in use.
    let mut rec = pa.record("mic").expect("parecord");
    watch.until(2, "busy for the call");
    let seen = bob_sees(
        &mut bob,
        &["<show>dnd</show>", "<status>In a call</status>"],
    );
    assert!(seen.contains("<priority>-1</priority>"), "{seen}");

    // status, in its own process, says why.
    let out = imstatus(&pa, &config)
        .args(["status", "me"])
        .output()
        .expect("imstatus status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("busy \"In a call\"")
            && text.contains("accounts alice; decided by call (desk: microphone)"),
        "{text}"
    );

    // The call ends: back to alice's own status, and imstatus's session plainly available.
    rec.stop().expect("stop parecord");
    watch.until(3, "available after the call");
    let seen = bob_sees(&mut bob, &["<priority>-1</priority>"]);
    assert!(
        !seen.contains("<show>") && !seen.contains("<status>"),
        "{seen}"
    );

    // A change of alice's own, as a positive barrier: the next event is the person's answer
    // to it, so nothing came from imstatus's own writes in between.
    laptop
        .presence(Some("away"), Some("lunch"), Some(1))
        .expect("presence");
    let events = watch.until(4, "alice's own change");
    let user = json!({"rule": "user", "account": "alice"});
    assert_eq!(
        events.iter().map(summary).collect::<Vec<_>>(),
        [
            status("available", None, member.clone(), "snapshot"),
            status("busy", Some("In a call"), call, "status_changed"),
            status("available", None, member, "status_changed"),
            status("away", Some("lunch"), user, "status_changed"),
        ]
    );
    assert!(events.iter().all(|e| e["account"] == "me"), "{events:#?}");
    drop(watch);
    laptop.close().expect("close");
    bob.close().expect("close");
}

/// Rule 3 from a real X server's idle time, and rule 1 over it: idle → away (synced to alice's
/// contacts), a call while idle → busy, its end → away again, input → alice's own status.
#[test]
fn idle_makes_the_person_away_a_call_overrides_it_and_input_ends_it() {
    let prosody = Prosody::start(ProsodyOptions::default()).expect("Prosody");
    let pa = PulseAudio::start().expect("PulseAudio");
    let x = Xvfb::start().expect("Xvfb");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config_with(
        dir.path(),
        &prosody,
        &pa,
        &format!(
            "idle = true\nidle_after = \"1s\"\nidle_backends = [\"x11\"]\ndisplay = \"{}\"\n",
            x.display()
        ),
    );
    let mut bob = online(&prosody, "bob", "laptop", 0);
    let laptop = online(&prosody, "alice", "laptop", 1);

    let mut cmd = imstatus(&pa, &config);
    cmd.args(["watch", "me", "--json"]);
    let watch = Watch::start(cmd);
    let idle = json!({"rule": "away", "account": "desk", "signal": "idle"});
    let call = json!({"rule": "call", "account": "desk", "signal": "microphone"});
    let member = json!({"rule": "most_available", "account": "alice"});
    // No input: idle after a second, whatever the first answer was.
    let is_idle = |e: &Value| summary(e)["decided_by"] == idle;
    let from = |events: &[Value]| -> Vec<Value> {
        let at = events.iter().position(is_idle).unwrap_or(events.len());
        events[at..].iter().map(summary).collect()
    };
    wait_until("the person away for idle", DEADLINE, || {
        watch.events().iter().any(is_idle).then_some(())
    })
    .unwrap_or_else(|_| panic!("never idle: {:#?}", watch.events()));
    bob_sees(&mut bob, &["<show>away</show>"]);

    let mut rec = pa.record("mic").expect("parecord");
    wait_until("busy while idle", DEADLINE, || {
        (from(&watch.events()).len() >= 2).then_some(())
    })
    .unwrap_or_else(|_| panic!("no call: {:#?}", watch.events()));
    bob_sees(
        &mut bob,
        &["<show>dnd</show>", "<status>In a call</status>"],
    );
    rec.stop().expect("stop parecord");
    wait_until("away again", DEADLINE, || {
        (from(&watch.events()).len() >= 3).then_some(())
    })
    .unwrap_or_else(|_| panic!("no end of the call: {:#?}", watch.events()));
    bob_sees(&mut bob, &["<show>away</show>"]);
    x.input().expect("xdotool");
    wait_until("back from idle", DEADLINE, || {
        (from(&watch.events()).len() >= 4).then_some(())
    })
    .unwrap_or_else(|_| panic!("no input seen: {:#?}", watch.events()));
    let seen = bob_sees(&mut bob, &["<priority>-1</priority>"]);
    assert!(!seen.contains("<show>"), "{seen}");

    let events = from(&watch.events());
    let kind = |k: &str| {
        if k == "snapshot" {
            "snapshot"
        } else {
            "status_changed"
        }
    };
    assert_eq!(
        events[..4].to_vec(),
        [
            status(
                "away",
                None,
                idle.clone(),
                kind(events[0]["event"].as_str().unwrap_or(""))
            ),
            status("busy", Some("In a call"), call, "status_changed"),
            status("away", None, idle, "status_changed"),
            status("available", None, member, "status_changed"),
        ]
    );
    drop(watch);
    laptop.close().expect("close");
    bob.close().expect("close");
}

#[test]
fn set_on_the_person_sets_the_synced_xmpp_account_for_alices_contacts() {
    let prosody = Prosody::start(ProsodyOptions::default()).expect("Prosody");
    let pa = PulseAudio::start().expect("PulseAudio");
    let dir = tempfile::tempdir().expect("tempdir");
    let config = config(dir.path(), &prosody, &pa);
    let mut bob = online(&prosody, "bob", "laptop", 0);
    let laptop = online(&prosody, "alice", "laptop", 1);

    let out = imstatus(&pa, &config)
        .args(["set", "busy", "--message", "focus", "--account", "me"])
        .output()
        .expect("imstatus set");
    assert_eq!(
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
        ),
        (Some(0), "me: busy \"focus\"\n".to_owned()),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bob_sees(&mut bob, &["<show>dnd</show>", "<status>focus</status>"]);
    laptop.close().expect("close");
    bob.close().expect("close");
}

/// The config errors of `[[person]]`: exit 2, the file's line, what is wrong.
#[test]
fn person_config_errors_exit_2_with_the_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let accounts = "[[account]]\nname = \"alice\"\nsource = \"purple\"\n\
                    [[account]]\nname = \"desk\"\nsource = \"desktop\"\nmicrophone = true\n";
    for (person, line, want) in [
        (
            "[[person]]\nname = \"me\"\naccounts = [\"alice\", \"carol\"]\n",
            10,
            "person `me`: no [[account]] or [[person]] named `carol`",
        ),
        (
            "[[person]]\nname = \"alice\"\naccounts = [\"desk\"]\n",
            9,
            "person `alice` has the name of an [[account]]",
        ),
        (
            "[[person]]\nname = \"a\"\naccounts = [\"b\"]\n\
             [[person]]\nname = \"b\"\naccounts = [\"a\"]\n",
            9,
            "persons contain each other in a cycle: a → b → a",
        ),
        (
            "[[person]]\nname = \"me\"\naccounts = [\"alice\"]\n\
             [[person]]\nname = \"me\"\naccounts = [\"desk\"]\n",
            12,
            "person `me` is defined twice",
        ),
    ] {
        let path = dir.path().join("config.toml");
        std::fs::write(&path, format!("{accounts}{person}")).expect("write config");
        let out = Command::new(env!("CARGO_BIN_EXE_imstatus"))
            .env_remove("IMSTATUS_CONFIG")
            .env("XDG_CONFIG_HOME", "/nonexistent-imstatus-test")
            .arg("--config")
            .arg(&path)
            .args(["status", "--json"])
            .stdin(Stdio::null())
            .output()
            .expect("imstatus status");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{person}: {err}");
        let at = format!("{}:{line}:", path.display());
        assert!(
            err.contains(&at) && err.contains(want),
            "{person}: want {at} {want}, got {err}"
        );
    }
}

/// One HTTP/1.0 GET (no chunked encoding): the whole response.
fn http_get(port: u16, path: &str) -> String {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(DEADLINE)).expect("timeout");
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("response");
    out
}

/// An SSE stream (HTTP/1.0, so the body is the events as they come), read line by line.
struct Sse {
    reader: BufReader<std::net::TcpStream>,
}

impl Sse {
    fn open(port: u16, path: &str) -> Sse {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(DEADLINE)).expect("timeout");
        write!(
            s,
            "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n"
        )
        .expect("request");
        Sse {
            reader: BufReader::new(s),
        }
    }

    /// The next event of the person `me` that matches, with its `id:`, within [`DEADLINE`].
    fn next_of_me(&mut self, pred: impl Fn(&Value) -> bool) -> (u64, Value) {
        let deadline = Instant::now() + DEADLINE;
        let mut id = 0;
        let mut read = Vec::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "no such event of me within {DEADLINE:?}; read {read:#?}"
            );
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap_or_else(|e| {
                panic!("SSE: {e}; read {read:#?}");
            });
            assert!(n > 0, "the SSE stream ended; read {read:#?}");
            read.push(line.chars().take(300).collect::<String>());
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().expect("numeric id");
            } else if let Some(data) = line.strip_prefix("data:") {
                let v: Value = serde_json::from_str(data.trim()).expect("JSON data");
                if v["account"] == "me" && pred(&v) {
                    return (id, v);
                }
            }
        }
    }
}

/// The person over the gateway: its snapshot (REST, with `accounts` and `decided_by`), its
/// badge, its events over SSE, resumed after a disconnect, and its MQTT state and Home
/// Assistant device on a real mosquitto.
#[test]
fn the_gateway_serves_the_person_with_what_decided_and_resumes_its_events() {
    let prosody = Prosody::start(ProsodyOptions::default()).expect("Prosody");
    let pa = PulseAudio::start().expect("PulseAudio");
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = imstatus_testkit::free_port();
    let config = config_with(
        dir.path(),
        &prosody,
        &pa,
        &format!(
            "\n[serve]\nlisten = \"127.0.0.1:{port}\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n",
            broker.port()
        ),
    );
    let laptop = online(&prosody, "alice", "laptop", 1);
    let mut cmd = imstatus(&pa, &config);
    cmd.arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let serve = Watch::start(cmd);
    wait_until("the gateway to answer", DEADLINE, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("serve listens");

    let mut sse = Sse::open(port, "/v1/events");
    // The snapshot comes first; the person may still be settling then.
    let (_, snap) = sse.next_of_me(|v| v["event"] == "snapshot");
    assert_eq!(snap["source"], "person");
    assert_eq!(snap["accounts"], json!(["alice"]));
    if snap["availability"] != "available" {
        sse.next_of_me(|v| {
            v["event"] == "status_changed" && v["to"]["availability"] == "available"
        });
    }
    let mut rec = pa.record("mic").expect("parecord");
    let (busy_id, busy) = sse.next_of_me(|v| v["event"] == "status_changed");
    assert_eq!(
        (busy["to"].clone(), busy["decided_by"].clone()),
        (
            json!({"availability": "busy", "message": "In a call"}),
            json!({"rule": "call", "account": "desk", "signal": "microphone"})
        )
    );

    let rest = http_get(port, "/v1/accounts/me");
    assert!(
        rest.starts_with("HTTP/1.1 200") || rest.starts_with("HTTP/1.0 200"),
        "{rest}"
    );
    let body: Value =
        serde_json::from_str(rest.split("\r\n\r\n").nth(1).unwrap_or("")).expect("JSON body");
    assert_eq!(
        (
            body["source"].clone(),
            body["availability"].clone(),
            body["accounts"].clone(),
            body["decided_by"].clone()
        ),
        (
            json!("person"),
            json!("busy"),
            json!(["alice"]),
            json!({"rule": "call", "account": "desk", "signal": "microphone"})
        )
    );
    let badge = http_get(port, "/v1/accounts/me/badge.svg");
    assert!(
        badge.contains("image/svg+xml") && badge.contains("busy"),
        "{badge}"
    );

    // MQTT: the person's state JSON with what decided, and its Home Assistant device.
    let state = wait_until("imstatus/me/state during the call", DEADLINE, || {
        broker
            .retained("imstatus/me/state")
            .filter(|s| s.contains("\"availability\":\"busy\""))
    })
    .expect("the person's state on MQTT");
    let state: Value = serde_json::from_str(&state).expect("state JSON");
    assert_eq!(
        (
            state["source"].clone(),
            state["accounts"].clone(),
            state["decided_by"].clone()
        ),
        (
            json!("person"),
            json!(["alice"]),
            json!({"rule": "call", "account": "desk", "signal": "microphone"})
        )
    );
    assert_eq!(
        broker.retained("imstatus/me/availability").as_deref(),
        Some("busy")
    );
    let discovery = broker
        .retained("homeassistant/sensor/imstatus/me_availability/config")
        .expect("the person's availability sensor config");
    assert!(
        discovery.contains("imstatus/me/availability"),
        "{discovery}"
    );

    // Disconnected during the call's end: resuming after the busy event replays it.
    drop(sse);
    rec.stop().expect("stop parecord");
    wait_until("the person available again", DEADLINE, || {
        http_get(port, "/v1/accounts/me")
            .contains("\"availability\":\"available\"")
            .then_some(())
    })
    .expect("available after the call");
    let mut sse = Sse::open(port, &format!("/v1/events?last_event_id={busy_id}"));
    let (id, back) = sse.next_of_me(|_| true);
    assert!(id > busy_id, "{id} after {busy_id}");
    assert_eq!(
        (
            back["event"].clone(),
            back["to"].clone(),
            back["decided_by"].clone()
        ),
        (
            json!("status_changed"),
            json!({"availability": "available", "message": null}),
            json!({"rule": "most_available", "account": "alice"})
        )
    );
    drop(serve);
    laptop.close().expect("close");
}
