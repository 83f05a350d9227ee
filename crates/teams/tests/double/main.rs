//! A test double for the teams-for-linux app: no Teams client can run in a test, so this
//! stands in for the app, and only for the app. It speaks the app's real interfaces as
//! docs/teams-for-linux.md describes them: over MQTT the real topics with the real retain
//! flags and QoS 0, a last will `connected = false`, `connected = true` again on every
//! reconnect, nothing published while disconnected, the status only when it changes; over
//! D-Bus the real name (requested with DO_NOT_QUEUE), object, interface, `GetState` and
//! signals with their real signatures, in the app's order, every signal on the first change.
//!
//! ```text
//! teams-for-linux-double mqtt URL [PREFIX] [CLIENT_ID]
//! teams-for-linux-double dbus ADDRESS [ANSWER]
//! ```
//!
//! It reads one JSON object per line on stdin, a patch of the app's state in `GetState`'s keys
//! (`{"presenceStatusCode": 2}`, `{"inCall": true, "microphoneState": "muted"}`), or one of
//! `{"quit": true}` (a clean quit), `{"raw": {"topic": "status", "payload": "…", "retain":
//! true}}` (MQTT: publish anything as the app), `{"rawSignal": {"member": "InCallChanged",
//! "string": "yes"}}` (D-Bus: a signal of any type from the owner), `{"getState": "…"}`
//! (D-Bus: what `GetState` answers from now on; also the optional ANSWER argument, from the
//! start), `{"flood": N}` (D-Bus: N presence changes as fast as the bus takes them). It prints `ready` once connected (MQTT, after
//! `connected = true` is written) or owning the name (D-Bus), and `ok` after each line once
//! everything it sent for it is written. Killing it (SIGKILL) is the app crashing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Map, Value};

const NAME: &str = "com.github.IsmaelMartinez.teams_for_linux";
const PATH: &str = "/com/github/IsmaelMartinez/teams_for_linux";
const IFACE: &str = "com.github.IsmaelMartinez.teams_for_linux.Control";

/// The app's `PRESENCE` table.
fn presence(code: i64) -> &'static str {
    match code {
        1 => "available",
        2 => "busy",
        3 => "do_not_disturb",
        4 => "away",
        5 => "be_right_back",
        _ => "unknown",
    }
}

/// The microphone control state the app derives from the microphone state.
fn control(mic: &str) -> &'static str {
    match mic {
        "muted" => "muted",
        "speaking" | "silent" => "unmuted",
        "off" => "off",
        _ => "unknown",
    }
}

fn initial() -> Map<String, Value> {
    let v = json!({"presenceStatus": "unknown", "presenceStatusCode": -1, "inCall": false,
        "incomingCall": false, "incomingCallCaller": null, "cameraEnabled": false,
        "microphoneState": "unknown", "microphoneControlState": "unknown",
        "screenSharing": false, "meetingStarted": false});
    match v {
        Value::Object(m) => m,
        _ => unreachable!(),
    }
}

/// Applies a patch; returns the state before (the app's `teamsStateService`).
fn apply(state: &mut Map<String, Value>, patch: &Map<String, Value>) -> Map<String, Value> {
    let before = state.clone();
    for (k, v) in patch {
        state.insert(k.clone(), v.clone());
    }
    if let Some(code) = patch.get("presenceStatusCode").and_then(Value::as_i64) {
        state.insert("presenceStatus".into(), json!(presence(code)));
    }
    if let Some(mic) = patch.get("microphoneState").and_then(Value::as_str) {
        state.insert("microphoneControlState".into(), json!(control(mic)));
    }
    before
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("mqtt") => {
            let url = args.get(2).expect("URL");
            let prefix = args.get(3).cloned().unwrap_or_else(|| "teams".into());
            let id = args
                .get(4)
                .cloned()
                .unwrap_or_else(|| "teams-for-linux".into());
            mqtt(url, &prefix, &id).await
        }
        Some("dbus") => dbus(args.get(2).expect("ADDRESS"), args.get(3).cloned()).await,
        _ => {
            eprintln!(
                "usage: teams-for-linux-double mqtt URL [PREFIX] [CLIENT_ID] | dbus ADDRESS [ANSWER]"
            );
            std::process::exit(2);
        }
    }
}

/// stdin's lines, read on a thread of their own (`None` at the end of input).
struct Lines(tokio::sync::mpsc::UnboundedReceiver<String>);

impl Lines {
    async fn next_line(&mut self) -> std::io::Result<Option<String>> {
        Ok(self.0.recv().await)
    }
}

fn lines() -> Lines {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Lines(rx)
}

fn say(what: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{what}");
    let _ = out.flush();
}

fn patch_of(line: &str) -> Map<String, Value> {
    match serde_json::from_str(line) {
        Ok(Value::Object(m)) => m,
        _ => panic!("not a JSON object: {line}"),
    }
}

// ------------------------------------------------------------------------------ MQTT

enum Driven {
    ConnAck,
    Published,
    Lost,
}

async fn mqtt(url: &str, prefix: &str, id: &str) {
    use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
    let rest = url.strip_prefix("mqtt://").expect("mqtt://host:port");
    let (host, port) = rest.rsplit_once(':').expect("host:port");
    let topic = |leaf: &str| format!("{prefix}/{leaf}");
    let mut options = MqttOptions::new(id, host, port.parse::<u16>().expect("port"));
    options
        .set_keep_alive(Duration::from_secs(5))
        .set_clean_session(true)
        .set_max_packet_size(16 << 20, 16 << 20)
        .set_last_will(LastWill::new(
            topic("connected"),
            "false",
            QoS::AtMostOnce,
            true,
        ));
    let (client, mut eventloop) = AsyncClient::new(options, 64);
    // Written means sent: without this, Nagle's algorithm holds a publish back until the
    // previous one is acknowledged (up to 40 ms on loopback), after `ok` was said.
    let mut network = rumqttc::NetworkOptions::new();
    network.set_tcp_nodelay(true);
    eventloop.set_network_options(network);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // Like mqtt.js: reconnects by itself (here every 100 ms).
    tokio::spawn(async move {
        loop {
            let event = match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => Driven::ConnAck,
                Ok(Event::Outgoing(Outgoing::Publish(_))) => Driven::Published,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                    // Read until the broker closes, so the DISCONNECT is not lost.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while eventloop.poll().await.is_ok() {}
                    })
                    .await;
                    std::process::exit(0);
                }
                Ok(_) => continue,
                Err(_) => {
                    let _ = tx.send(Driven::Lost);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    let mut connected = false;
    let mut ready = false;
    let mut state = initial();
    let mut last_status: Option<String> = None;
    // What to say when each queued publish is written, in order.
    let mut owed: VecDeque<Owed> = VecDeque::new();
    let mut input = lines();
    loop {
        tokio::select! {
            event = rx.recv() => match event.expect("driver") {
                Driven::ConnAck => {
                    connected = true;
                    client.publish(topic("connected"), QoS::AtMostOnce, true, "true").await.unwrap();
                    owed.push_back(if ready { Owed::Nothing } else { Owed::Ready });
                    ready = true;
                }
                Driven::Published => match owed.pop_front() {
                    Some(Owed::Ready) => say("ready"),
                    Some(Owed::Ok) => say("ok"),
                    _ => {}
                },
                Driven::Lost => connected = false,
            },
            line = input.next_line() => {
                let Some(line) = line.expect("stdin") else { return };
                if line.trim().is_empty() { continue }
                let patch = patch_of(&line);
                if patch.contains_key("quit") {
                    // The app's will-quit: `connected = false`, then a clean disconnect (the
                    // broker drops the will); the driver exits once the broker closes.
                    if connected {
                        client.publish(topic("connected"), QoS::AtMostOnce, true, "false").await.unwrap();
                    }
                    client.disconnect().await.unwrap();
                    continue;
                }
                let mut publishes: Vec<(String, String, bool)> = Vec::new();
                if let Some(raw) = patch.get("raw") {
                    publishes.push((
                        topic(raw["topic"].as_str().expect("topic")),
                        raw["payload"].as_str().expect("payload").to_owned(),
                        raw.get("retain").and_then(Value::as_bool).unwrap_or(true),
                    ));
                } else {
                    let before = apply(&mut state, &patch);
                    // mqttStatusMonitor → publishStatus: only when the string changes.
                    let status = state["presenceStatus"].as_str().unwrap_or("unknown").to_owned();
                    if patch.contains_key("presenceStatusCode") && last_status.as_deref() != Some(&status) {
                        let payload = json!({"status": status, "statusCode": state["presenceStatusCode"],
                            "timestamp": "2026-12-02T10:00:00.000Z", "clientId": "teams-for-linux"});
                        publishes.push((topic("status"), payload.to_string(), true));
                        last_status = Some(status);
                    }
                    // mediaStatusService: one publish per changed value, in the D-Bus order.
                    for (key, leaf) in [("inCall", "in-call"), ("cameraEnabled", "camera"),
                        ("microphoneState", "microphone"), ("microphoneControlState", "microphone/control"),
                        ("screenSharing", "screen-sharing")] {
                        if before.get(key) != state.get(key) {
                            let v = match &state[key] { Value::String(s) => s.clone(), v => v.to_string() };
                            publishes.push((topic(leaf), v, true));
                        }
                    }
                }
                // Like the app: nothing is published while disconnected.
                if !connected || publishes.is_empty() {
                    say("ok");
                    continue;
                }
                let n = publishes.len();
                for (i, (t, p, retain)) in publishes.into_iter().enumerate() {
                    client.publish(t, QoS::AtMostOnce, retain, p).await.unwrap();
                    owed.push_back(if i + 1 == n { Owed::Ok } else { Owed::Nothing });
                }
            }
        }
    }
}

/// What to print when a queued publish has been written.
enum Owed {
    Nothing,
    Ready,
    Ok,
}

// ------------------------------------------------------------------------------ D-Bus

struct Control {
    state: Arc<Mutex<Map<String, Value>>>,
    answer: Arc<Mutex<Option<String>>>,
}

#[zbus::interface(name = "com.github.IsmaelMartinez.teams_for_linux.Control")]
impl Control {
    fn get_state(&self) -> String {
        if let Some(answer) = self.answer.lock().unwrap().clone() {
            return answer;
        }
        Value::Object(self.state.lock().unwrap().clone()).to_string()
    }
    fn mute(&self, _force: bool) -> bool {
        false
    }
    fn unmute(&self, _force: bool) -> bool {
        false
    }
    fn accept_audio(&self) -> bool {
        false
    }
    fn accept_video(&self) -> bool {
        false
    }
    fn decline_call(&self) -> bool {
        false
    }
    fn toggle_mute(&self) -> bool {
        false
    }
    fn toggle_video(&self) -> bool {
        false
    }
    fn toggle_hand_raise(&self) -> bool {
        false
    }
    fn leave_call(&self) -> bool {
        false
    }
}

async fn emit<B>(conn: &zbus::Connection, member: &str, body: &B)
where
    B: zbus::export::serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.emit_signal(None::<&str>, PATH, IFACE, member, body)
        .await
        .expect("emit");
}

async fn dbus(address: &str, answer: Option<String>) {
    let state = Arc::new(Mutex::new(initial()));
    let answer = Arc::new(Mutex::new(answer));
    let conn = zbus::connection::Builder::address(address)
        .expect("address")
        .serve_at(
            PATH,
            Control {
                state: state.clone(),
                answer: answer.clone(),
            },
        )
        .expect("serve")
        .build()
        .await
        .expect("connect");
    let reply = conn
        .request_name_with_flags(NAME, zbus::fdo::RequestNameFlags::DoNotQueue.into())
        .await;
    if !matches!(reply, Ok(zbus::fdo::RequestNameReply::PrimaryOwner)) {
        eprintln!("name taken: {reply:?}");
        std::process::exit(3);
    }
    say("ready");
    let mut first = true;
    let mut input = lines();
    while let Some(line) = input.next_line().await.expect("stdin") {
        if line.trim().is_empty() {
            continue;
        }
        let patch = patch_of(&line);
        if patch.contains_key("quit") {
            std::process::exit(0);
        }
        if let Some(a) = patch.get("getState") {
            *answer.lock().unwrap() = a.as_str().map(str::to_owned);
            say("ok");
            continue;
        }
        if let Some(n) = patch.get("flood").and_then(Value::as_u64) {
            // As fast as the bus takes them: presence changes, away and available in turn.
            for i in 0..n {
                let (name, code) = if i % 2 == 0 {
                    ("away", 4)
                } else {
                    ("available", 1)
                };
                {
                    let mut s = state.lock().unwrap();
                    s.insert("presenceStatus".into(), json!(name));
                    s.insert("presenceStatusCode".into(), json!(code));
                }
                emit(&conn, "PresenceChanged", &(name, code)).await;
            }
            first = false;
            say("ok");
            continue;
        }
        if let Some(raw) = patch.get("rawSignal") {
            let member = raw["member"].as_str().expect("member");
            match (raw.get("string"), raw.get("code"), raw.get("bool")) {
                (Some(s), Some(c), _) => {
                    emit(
                        &conn,
                        member,
                        &(s.as_str().unwrap(), c.as_i64().unwrap() as i32),
                    )
                    .await
                }
                (Some(s), None, _) => emit(&conn, member, &(s.as_str().unwrap(),)).await,
                (None, _, Some(b)) => emit(&conn, member, &(b.as_bool().unwrap(),)).await,
                _ => emit(&conn, member, &()).await,
            }
            say("ok");
            continue;
        }
        let (cur, before) = {
            let mut s = state.lock().unwrap();
            let before = apply(&mut s, &patch);
            (s.clone(), before)
        };
        if cur == before && !first {
            say("ok");
            continue;
        }
        // The app's controlService: StateChanged, PresenceChanged, the typed signals of the
        // changed keys, IncomingCallCallerChanged; everything on the first change.
        let changed = |k: &str| first || before.get(k) != cur.get(k);
        emit(
            &conn,
            "StateChanged",
            &(Value::Object(cur.clone()).to_string(),),
        )
        .await;
        if changed("presenceStatus") || changed("presenceStatusCode") {
            let name = cur["presenceStatus"]
                .as_str()
                .unwrap_or("unknown")
                .to_owned();
            let code = cur["presenceStatusCode"].as_i64().unwrap_or(-1) as i32;
            emit(&conn, "PresenceChanged", &(name, code)).await;
        }
        for (key, member) in [
            ("inCall", "InCallChanged"),
            ("incomingCall", "IncomingCallChanged"),
            ("cameraEnabled", "CameraChanged"),
            ("microphoneState", "MicrophoneChanged"),
            ("microphoneControlState", "MicrophoneControlChanged"),
            ("screenSharing", "ScreenSharingChanged"),
            ("meetingStarted", "MeetingStartedChanged"),
        ] {
            if changed(key) {
                match &cur[key] {
                    Value::Bool(b) => emit(&conn, member, &(*b,)).await,
                    Value::String(s) => emit(&conn, member, &(s.as_str(),)).await,
                    other => emit(&conn, member, &(other.to_string(),)).await,
                }
            }
        }
        if changed("incomingCallCaller") {
            emit(
                &conn,
                "IncomingCallCallerChanged",
                &(cur["incomingCallCaller"].to_string(),),
            )
            .await;
        }
        first = false;
        say("ok");
    }
}
