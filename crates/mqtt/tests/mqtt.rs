//! MQTT against a real mosquitto (started per test on a free loopback port, stopped by PID):
//! Home Assistant discovery checked field by field, state topics following the hub, the birth
//! message, the last will after `kill -9`, a broker restart, a broker that is down at start,
//! TLS with a password, a clean shutdown, and a real XMPP account on a real Prosody.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The gateway's test helpers (scripted hubs, a server on 127.0.0.1:0, an SSE client): one
// test checks that a broker that is down never holds up the gateway's streams.
#[path = "../../gateway/tests/common/mod.rs"]
mod common;

use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use imstatus_config::Secret;
use imstatus_core::{
    AccountId, ActivitySignal, App, Availability, Observation, PartId, SignOutReason, SourceKind,
    Status,
};
use imstatus_hub::testing::{scripted, Script};
use imstatus_hub::Hub;
use imstatus_mqtt::{run_mqtt, Error as MqttError, MqttSettings, SHUTDOWN_TIMEOUT};
use imstatus_testkit::mosquitto::{BrokerOptions, Connect, Message, Mosquitto, Watcher};
use imstatus_testkit::{free_port, Prosody, ProsodyOptions, XmppClient};
use imstatus_xmpp::XmppSource;
use imstatus_xmpp::{TlsMode, XmppConfig};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const LIMIT: Duration = Duration::from_secs(60);
/// A change in the hub reaches the broker within this.
const DELIVERY: Duration = Duration::from_secs(1);
const VERSION: &str = env!("CARGO_PKG_VERSION");
const ALL: [&str; 8] = [
    "offline",
    "available",
    "chatty",
    "invisible",
    "busy",
    "away",
    "extended_away",
    "unknown",
];

/// `run_mqtt` on its own task, stopped through its shutdown future.
struct Running {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), MqttError>>,
}

impl Running {
    fn start(hub: &Arc<Hub>, settings: MqttSettings) -> Running {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_mqtt(hub.clone(), settings, async move {
            let _ = stopped.await;
        }));
        Running {
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) -> Result<(), MqttError> {
        let _ = self.stop.take().expect("running").send(());
        tokio::time::timeout(SHUTDOWN_TIMEOUT + STEP, &mut self.task)
            .await
            .expect("run_mqtt returns after shutdown")
            .expect("the mqtt task")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn settings(port: u16, client_id: &str) -> MqttSettings {
    MqttSettings::new(&format!("mqtt://127.0.0.1:{port}"))
        .unwrap()
        .with_client_id(client_id)
        .with_backoff_seed(7)
        .with_models(models())
}

/// Device models by source kind, as the binary gives them (each factory's title).
fn models() -> Vec<(SourceKind, String)> {
    use imstatus_hub::SourceFactory;
    vec![
        (
            imstatus_xmpp::KIND,
            imstatus_xmpp::XmppFactory.title().to_owned(),
        ),
        (
            SourceKind::new_static("purple"),
            "libpurple client (Pidgin, Finch)".to_owned(),
        ),
    ]
}

/// The discovery configs imstatus must publish for `account`, written out in full.
fn expected_configs(account: &str, model: &str) -> Vec<(String, Value)> {
    let device = json!({
        "identifiers": [format!("imstatus_{account}")],
        "name": format!("imstatus {account}"),
        "manufacturer": "imstatus",
        "model": model,
        "sw_version": VERSION,
    });
    let origin = json!({"name": "imstatus", "sw_version": VERSION});
    vec![
        (
            format!("homeassistant/binary_sensor/imstatus/{account}_running/config"),
            json!({
                "name": "Client running",
                "unique_id": format!("imstatus_{account}_running"),
                "device_class": "connectivity",
                "state_topic": format!("imstatus/{account}/running"),
                "payload_on": "ON",
                "payload_off": "OFF",
                "availability_topic": "imstatus/status",
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device,
                "origin": origin,
            }),
        ),
        (
            format!("homeassistant/binary_sensor/imstatus/{account}_signed_in/config"),
            json!({
                "name": "Signed in",
                "unique_id": format!("imstatus_{account}_signed_in"),
                "device_class": "presence",
                "state_topic": format!("imstatus/{account}/signed_in"),
                "payload_on": "ON",
                "payload_off": "OFF",
                "availability_topic": "imstatus/status",
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device,
                "origin": origin,
            }),
        ),
        (
            format!("homeassistant/sensor/imstatus/{account}_availability/config"),
            json!({
                "name": "Availability",
                "unique_id": format!("imstatus_{account}_availability"),
                "device_class": "enum",
                "options": ALL,
                "state_topic": format!("imstatus/{account}/availability"),
                "json_attributes_topic": format!("imstatus/{account}/state"),
                "availability_topic": "imstatus/status",
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": device,
                "origin": origin,
            }),
        ),
    ]
}

fn state_topics(account: &str) -> [String; 4] {
    ["state", "availability", "signed_in", "running"].map(|l| format!("imstatus/{account}/{l}"))
}

/// Every topic imstatus publishes for `accounts`.
fn all_topics(accounts: &[&str]) -> BTreeSet<String> {
    let mut topics = BTreeSet::from(["imstatus/status".to_owned()]);
    for a in accounts {
        topics.extend(expected_configs(a, "").into_iter().map(|(t, _)| t));
        topics.extend(state_topics(a));
    }
    topics
}

fn has_all(w: &Watcher, topics: &BTreeSet<String>) -> Option<()> {
    topics
        .iter()
        .all(|t| w.latest.contains_key(t))
        .then_some(())
}

const SCRIPTED: [&str; 3] = ["alice", "bob", "carol"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_configs_are_retained_complete_and_stable_field_by_field() {
    limit(LIMIT, async {
        let broker = Mosquitto::start();
        let s = scripted_hub().await;
        let mqtt = Running::start(&s.hub, settings(broker.port(), "imstatus-discovery"));
        let topics = all_topics(&SCRIPTED);
        let mut w = Watcher::connect(broker.port(), &["homeassistant/#", "imstatus/#"]).await;
        w.until("every topic", STEP, |w| has_all(w, &topics)).await;

        for account in SCRIPTED {
            let configs = expected_configs(account, "test source");
            for (topic, expected) in &configs {
                let m = &w.latest[topic];
                assert_eq!(&m.json(), expected, "{topic}");
            }
            // The device block is one and the same for the account's three entities.
            let devices: BTreeSet<String> = configs
                .iter()
                .map(|(t, _)| w.latest[t].json()["device"].to_string())
                .collect();
            assert_eq!(devices.len(), 1, "{devices:?}");
            // The options are every availability the core knows, in its order.
            let sensor = w.latest[&configs[2].0].json();
            let names: Vec<&str> = Availability::ALL.iter().map(|a| a.as_str()).collect();
            assert_eq!(sensor["options"], json!(names));
        }
        // Every unique_id differs.
        let ids: BTreeSet<String> = SCRIPTED
            .iter()
            .flat_map(|a| expected_configs(a, ""))
            .map(|(t, _)| w.latest[&t].json()["unique_id"].to_string())
            .collect();
        assert_eq!(ids.len(), 9);

        // The state topics, with the retain flag.
        let value = |t: &str| w.payload(t).unwrap().to_owned();
        assert_eq!(value("imstatus/status"), "online");
        assert_eq!(value("imstatus/alice/availability"), "away");
        assert_eq!(value("imstatus/alice/signed_in"), "ON");
        // A scripted source cannot see a client: unknown, Home Assistant's `None`.
        assert_eq!(value("imstatus/alice/running"), "None");
        assert_eq!(value("imstatus/bob/availability"), "available");
        assert_eq!(value("imstatus/carol/availability"), "available");
        let state = w.latest["imstatus/alice/state"].json();
        assert_eq!(state["event"], "snapshot");
        assert_eq!(state["account"], "alice");
        assert_eq!(state["source"], "test");
        assert_eq!(state["session"], "signed_in");
        assert_eq!(state["availability"], "away");
        assert_eq!(state["message"], "lunch");
        assert_eq!(state["mistatus"], 0x22);
        assert_eq!(state["resources"][0]["resource"], "desk");
        assert!(
            state.get("contacts").is_none(),
            "contacts stay out of MQTT: {state}"
        );
        let first: Vec<Message> = topics.iter().map(|t| w.latest[t].clone()).collect();
        drop(w);

        // They are retained: a new subscriber gets every one of them from the broker.
        let mut fresh = Watcher::connect(broker.port(), &["homeassistant/#", "imstatus/#"]).await;
        fresh
            .until("every topic, retained", STEP, |w| has_all(w, &topics))
            .await;
        for t in &topics {
            assert!(fresh.latest[t].retain, "{t} is retained");
        }
        drop(fresh);

        // A second run (imstatus restarted) publishes byte-identical configs: the ids are
        // stable. The broker forgets the first run's configs, so what comes is the second's.
        mqtt.stop().await.unwrap();
        let configs: Vec<&Message> = first
            .iter()
            .filter(|m| m.topic.starts_with("homeassistant/"))
            .collect();
        let mut w = Watcher::connect(broker.port(), &["homeassistant/#"]).await;
        for m in &configs {
            w.publish(&m.topic, "", true).await;
        }
        // Our own erasures come back to us once the broker has applied them.
        w.until("the configs erased", STEP, |w| {
            configs
                .iter()
                .all(|m| w.payload(&m.topic) == Some(""))
                .then_some(())
        })
        .await;
        let mqtt = Running::start(&s.hub, settings(broker.port(), "imstatus-discovery-2"));
        for m in &configs {
            let again = w
                .until(&m.topic, STEP, |w| {
                    w.latest
                        .get(&m.topic)
                        .filter(|a| !a.payload.is_empty())
                        .cloned()
                })
                .await;
            assert!(!again.retain, "published by the second run: {}", m.topic);
            assert_eq!(again.payload, m.payload, "{}", m.topic);
        }
        mqtt.stop().await.unwrap();
    })
    .await;
}

fn desktop() -> AccountId {
    AccountId::new("desktop")
}

fn finch_part() -> PartId {
    PartId::new("alice@example.test/finch")
}

/// A libpurple-like account: finch running, signed in, available.
async fn purple_hub() -> (Arc<Hub>, Script) {
    let (source, script) = scripted(
        SourceKind::new_static("purple"),
        vec![
            Observation::ClientAppeared,
            Observation::presence(finch_part(), Status::new(Availability::Available)),
            Observation::Synced,
        ],
    );
    let hub = Hub::builder().with_source(desktop(), source).start();
    assert!(hub.wait_settled(&[desktop()], STEP).await);
    (Arc::new(hub), script)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_topics_follow_status_sign_out_and_the_client() {
    limit(LIMIT, async {
        let broker = Mosquitto::start();
        let (hub, script) = purple_hub().await;
        let mqtt = Running::start(&hub, settings(broker.port(), "imstatus-follow"));
        let mut w = Watcher::connect(broker.port(), &["imstatus/#", "homeassistant/#"]).await;
        w.value("imstatus/desktop/running", "ON", STEP).await;
        w.value("imstatus/desktop/signed_in", "ON", STEP).await;
        w.value("imstatus/desktop/availability", "available", STEP)
            .await;
        let config = w
            .until("the sensor config", STEP, |w| {
                w.latest
                    .get("homeassistant/sensor/imstatus/desktop_availability/config")
                    .cloned()
            })
            .await;
        assert_eq!(
            config.json()["device"]["model"],
            "libpurple client (Pidgin, Finch)"
        );

        // Away "lunch": the availability topic within a second, the message in the state JSON.
        let sent = Instant::now();
        script.send([Observation::presence(
            finch_part(),
            Status::with_message(Availability::Away, "lunch"),
        )]);
        w.value("imstatus/desktop/availability", "away", DELIVERY)
            .await;
        eprintln!("status change → availability topic: {:?}", sent.elapsed());
        let state = w
            .until("the state with lunch", STEP, |w| {
                w.latest
                    .get("imstatus/desktop/state")
                    .map(Message::json)
                    .filter(|s| s["message"] == "lunch")
            })
            .await;
        assert_eq!(state["availability"], "away");
        assert_eq!(state["mistatus"], 0x22);

        // Signed out by the user: signed_in OFF, availability offline, the client still runs.
        script.send([Observation::SignedOff(finch_part(), SignOutReason::User)]);
        w.value("imstatus/desktop/signed_in", "OFF", DELIVERY).await;
        w.value("imstatus/desktop/availability", "offline", DELIVERY)
            .await;
        assert_eq!(w.payload("imstatus/desktop/running"), Some("ON"));

        // Back in, busy; then finch is killed: signed out and not running.
        script.send([Observation::presence(
            finch_part(),
            Status::new(Availability::Busy),
        )]);
        w.value("imstatus/desktop/signed_in", "ON", DELIVERY).await;
        w.value("imstatus/desktop/availability", "busy", DELIVERY)
            .await;
        script.send([Observation::ClientVanished]);
        w.value("imstatus/desktop/running", "OFF", DELIVERY).await;
        w.value("imstatus/desktop/signed_in", "OFF", DELIVERY).await;
        let state = w
            .until("the state after the crash", STEP, |w| {
                w.latest
                    .get("imstatus/desktop/state")
                    .map(Message::json)
                    .filter(|s| s["client"] == "not_running")
            })
            .await;
        assert_eq!(state["session"], "signed_out");

        // The client comes back.
        script.send([Observation::ClientAppeared]);
        w.value("imstatus/desktop/running", "ON", DELIVERY).await;

        // Only real changes are published: no topic got the same payload twice in a row.
        let mut last: std::collections::HashMap<&str, &str> = Default::default();
        for m in &w.all {
            let before = last.insert(m.topic.as_str(), m.payload.as_str());
            assert_ne!(
                before,
                Some(m.payload.as_str()),
                "{} published twice",
                m.topic
            );
        }
        mqtt.stop().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_birth_message_republishes_every_config_and_state() {
    limit(LIMIT, async {
        let broker = Mosquitto::start();
        let s = scripted_hub().await;
        let mqtt = Running::start(&s.hub, settings(broker.port(), "imstatus-birth"));
        let topics = all_topics(&SCRIPTED);
        let mut w = Watcher::connect(broker.port(), &["homeassistant/#", "imstatus/#"]).await;
        w.until("every topic", STEP, |w| has_all(w, &topics)).await;
        let before: Vec<Message> = topics.iter().map(|t| w.latest[t].clone()).collect();
        w.all.clear();

        // Home Assistant restarts: its birth message (not retained, like HA's default).
        let sent = Instant::now();
        w.publish("homeassistant/status", "online", false).await;
        let live = |w: &Watcher, t: &str| w.all.iter().any(|m| m.topic == t && !m.retain);
        w.until("every topic again, live", STEP, |w| {
            topics.iter().all(|t| live(w, t)).then_some(())
        })
        .await;
        eprintln!(
            "birth → {} topics re-published in {:?}",
            topics.len(),
            sent.elapsed()
        );
        for m in &before {
            let again = w
                .all
                .iter()
                .find(|a| a.topic == m.topic && !a.retain)
                .unwrap();
            assert_eq!(again.payload, m.payload, "{}", m.topic);
        }
        // And they are still retained for the next subscriber.
        let mut fresh = Watcher::connect(broker.port(), &["homeassistant/#", "imstatus/#"]).await;
        fresh
            .until("every topic, retained", STEP, |w| has_all(w, &topics))
            .await;
        assert!(fresh
            .latest
            .values()
            .all(|m| m.retain || m.topic == "homeassistant/status"));
        mqtt.stop().await.unwrap();
    })
    .await;
}

// ------------------------------------------------------------------ kill -9

// `kill -9` of a process running MQTT → the broker publishes `offline`: tested with the real
// `imstatus serve` binary in crates/cli/tests/mqtt.rs.

fn availability(hub: &Hub, account: &AccountId) -> Availability {
    hub.snapshot(account)
        .and_then(|e| e.snapshot().map(|s| s.availability))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_broker_gets_everything_again_including_changes_made_while_it_was_down() {
    limit(LIMIT, async {
        let mut broker = Mosquitto::start();
        let port = broker.port();
        let s = scripted_hub().await;
        let mqtt = Running::start(&s.hub, settings(port, "imstatus-restart"));
        let topics = all_topics(&SCRIPTED);
        let mut w = Watcher::connect(port, &["homeassistant/#", "imstatus/#"]).await;
        w.until("every topic", STEP, |w| has_all(w, &topics)).await;
        drop(w);

        // The broker goes away (no persistence: its retained messages are gone with it), and
        // meanwhile alice goes busy.
        broker.stop();
        s.alice.send([Observation::Presence {
            part: PartId::new("desk"),
            status: Status::with_message(Availability::Busy, "meeting"),
            priority: Some(5),
        }]);
        poll("alice busy in the hub", STEP, || {
            (availability(&s.hub, &alice()) == Availability::Busy).then_some(())
        })
        .await;

        let restarted = Instant::now();
        let broker = Mosquitto::start_on(port);
        let mut w = Watcher::connect(port, &["imstatus/status"]).await;
        w.value("imstatus/status", "online", STEP).await;
        eprintln!(
            "broker restart → imstatus online again: {:?}",
            restarted.elapsed()
        );

        // A new subscriber finds every topic retained, with the change made while it was down.
        let mut fresh = Watcher::connect(port, &["homeassistant/#", "imstatus/#"]).await;
        fresh
            .until("every topic retained", STEP, |w| has_all(w, &topics))
            .await;
        fresh
            .value("imstatus/alice/availability", "busy", STEP)
            .await;
        let state = fresh.latest["imstatus/alice/state"].json();
        assert_eq!(state["message"], "meeting");
        for t in &topics {
            assert!(fresh.latest[t].retain, "{t} is retained");
        }
        for (topic, expected) in expected_configs("alice", "test source") {
            assert_eq!(fresh.latest[&topic].json(), expected, "{topic}");
        }
        assert!(
            broker.log().contains("as imstatus-restart"),
            "{}",
            broker.log()
        );
        mqtt.stop().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_down_at_start_blocks_neither_the_hub_nor_other_outputs_and_is_used_once_up() {
    limit(LIMIT, async {
        // Nothing listens on this port yet.
        let port = free_port();
        let s = scripted_hub().await;
        let server = Server::start(gateway(&s.hub, &[])).await;
        let mut sse = SseClient::connect(server.addr, "/v1/events", &[]).await;
        assert_eq!(sse.status, 200);
        let subscribers = s.hub.subscriber_count();
        let mqtt = Running::start(&s.hub, settings(port, "imstatus-late"));
        poll("the mqtt subscription", STEP, || {
            (s.hub.subscriber_count() == subscribers + 1).then_some(())
        })
        .await;
        let mut direct = s.hub.subscribe();
        while direct.try_recv().is_some() {}

        // 200 changes while the broker is down: each reaches a direct subscriber at once.
        let mut slowest = Duration::ZERO;
        for i in 0..200 {
            let availability = if i % 2 == 0 {
                Availability::Busy
            } else {
                Availability::Away
            };
            let message = format!("n{i}");
            let sent = Instant::now();
            s.alice.send([Observation::Presence {
                part: PartId::new("desk"),
                status: Status::with_message(availability, &message),
                priority: Some(5),
            }]);
            loop {
                let e = tokio::time::timeout(DELIVERY, direct.recv())
                    .await
                    .expect("the change reaches the hub's subscriber within a second")
                    .unwrap();
                if let imstatus_core::EventKind::StatusChanged { to, .. } = &e.kind {
                    assert_eq!(to.message.as_deref(), Some(message.as_str()));
                    break;
                }
            }
            slowest = slowest.max(sent.elapsed());
        }
        eprintln!("broker down: slowest of 200 changes to a hub subscriber: {slowest:?}");
        // The gateway's stream got them too.
        sse.until(STEP, |v| {
            v["event"] == "status_changed" && v["to"]["message"] == "n199"
        })
        .await;
        // Nobody fell behind, the MQTT task included, and it is still trying.
        assert_eq!(s.hub.resync_count(), 0);
        assert!(!mqtt.task.is_finished());

        // The broker comes: imstatus connects and publishes the current state.
        let came = Instant::now();
        let broker = Mosquitto::start_on(port);
        let mut w = Watcher::connect(port, &["imstatus/#", "homeassistant/#"]).await;
        w.value("imstatus/status", "online", Duration::from_secs(30))
            .await;
        eprintln!("broker up → imstatus online: {:?}", came.elapsed());
        w.value("imstatus/alice/availability", "away", STEP).await;
        let state = w
            .until("alice's state", STEP, |w| {
                w.latest.get("imstatus/alice/state").map(Message::json)
            })
            .await;
        assert_eq!(state["message"], "n199");
        w.until("every topic", STEP, |w| has_all(w, &all_topics(&SCRIPTED)))
            .await;
        mqtt.stop().await.unwrap();
        drop(broker);
        server.stop().await.unwrap();
    })
    .await;
}

// ------------------------------------------------------------------ shutdown

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_publishes_offline_and_disconnects_cleanly() {
    limit(LIMIT, async {
        let broker = Mosquitto::start();
        let s = scripted_hub().await;
        let subscribers = s.hub.subscriber_count();
        let mqtt = Running::start(&s.hub, settings(broker.port(), "imstatus-clean"));
        let mut w = Watcher::connect(broker.port(), &["imstatus/status"]).await;
        w.value("imstatus/status", "online", STEP).await;

        let asked = Instant::now();
        mqtt.stop().await.unwrap();
        let took = asked.elapsed();
        eprintln!("shutdown: {took:?}");
        assert!(took < SHUTDOWN_TIMEOUT, "{took:?}");
        w.value("imstatus/status", "offline", STEP).await;
        let log = poll_log(&broker, "Client imstatus-clean disconnected.").await;
        assert!(
            log.contains("Received DISCONNECT from imstatus-clean"),
            "{log}"
        );
        assert!(
            !log.contains("imstatus-clean closed its connection"),
            "{log}"
        );
        // Its subscription is gone from the hub.
        assert_eq!(s.hub.subscriber_count(), subscribers);
        let mut fresh = Watcher::connect(broker.port(), &["imstatus/status"]).await;
        assert!(fresh.value("imstatus/status", "offline", STEP).await.retain);
    })
    .await;
}

/// Polls the broker's log until it contains `line`; panics with the log after `STEP`.
async fn poll_log(broker: &Mosquitto, line: &str) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let log = broker.log();
        if log.contains(line) {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "the broker did not log {line:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_hub_ends_mqtt_with_offline() {
    limit(LIMIT, async {
        let broker = Mosquitto::start();
        let (hub, _script) = purple_hub().await;
        let (_stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run_mqtt(
            hub.clone(),
            settings(broker.port(), "imstatus-hubless"),
            async move {
                let _ = stopped.await;
            },
        ));
        let mut w = Watcher::connect(broker.port(), &["imstatus/status"]).await;
        w.value("imstatus/status", "online", STEP).await;
        drop(hub);
        tokio::time::timeout(STEP, task)
            .await
            .expect("run_mqtt ends with the hub")
            .unwrap()
            .unwrap();
        w.value("imstatus/status", "offline", STEP).await;
    })
    .await;
}

// ------------------------------------------------------------------ TLS and passwords

/// A self-signed certificate for 127.0.0.1 (`CA:FALSE`, as webpki wants of a leaf that is
/// also its own trust anchor).
fn make_certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let crt = dir.join("broker.crt");
    let key = dir.join("broker.key");
    let status = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success(), "openssl req failed");
    (crt, key)
}

fn client_tls(ca: &Path) -> Arc<imstatus_tls::rustls::ClientConfig> {
    let roots = imstatus_tls::Roots::load(Some(ca)).unwrap();
    Arc::new(roots.client_config().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_ca_file_and_a_password_works_and_a_wrong_password_is_fatal() {
    limit(LIMIT, async {
        let certs = tempfile::tempdir().unwrap();
        let (crt, key) = make_certificate(certs.path());
        let broker = Mosquitto::start_with(
            free_port(),
            &BrokerOptions {
                tls: Some((crt.clone(), key)),
                users: vec![
                    ("imstatus".to_owned(), "s3cret pw".to_owned()),
                    ("watcher".to_owned(), "watchpw".to_owned()),
                ],
            },
        );
        let url = format!("mqtts://127.0.0.1:{}", broker.port());
        let (hub, _script) = purple_hub().await;

        // The password comes from a file, as the CLI will read it.
        let mut password_file = tempfile::NamedTempFile::new().unwrap();
        writeln!(password_file, "s3cret pw").unwrap();
        let password = std::fs::read_to_string(password_file.path()).unwrap();
        let tls_settings = || {
            MqttSettings::new(&url)
                .unwrap()
                .with_ca_file(&crt)
                .with_username("imstatus")
                .with_client_id("imstatus-tls")
                .with_backoff_seed(1)
        };
        let mqtt = Running::start(&hub, tls_settings().with_password(password.trim_end()));
        let mut w = Watcher::connect_with(
            Connect {
                port: broker.port(),
                tls: Some(client_tls(&crt)),
                host: "127.0.0.1".to_owned(),
                credentials: Some(("watcher".to_owned(), "watchpw".to_owned())),
            },
            &["imstatus/#"],
        )
        .await;
        w.value("imstatus/status", "online", STEP).await;
        w.value("imstatus/desktop/availability", "available", STEP)
            .await;
        mqtt.stop().await.unwrap();
        w.value("imstatus/status", "offline", STEP).await;

        // A wrong password ends run_mqtt with the broker's refusal instead of retrying forever.
        let started = Instant::now();
        let wrong = tokio::time::timeout(
            STEP,
            run_mqtt(
                hub.clone(),
                tls_settings().with_password("wrong"),
                std::future::pending(),
            ),
        )
        .await
        .expect("a refused password is not retried");
        let e = wrong.unwrap_err();
        // mosquitto answers a wrong password with "not authorised" (return code 5).
        assert!(matches!(e, MqttError::Refused { .. }), "{e:?}");
        assert!(e.to_string().contains("password_file"), "{e}");
        eprintln!("wrong password → error after {:?}: {e}", started.elapsed());

        // A CA file that does not exist is reported before connecting.
        let e = run_mqtt(
            hub.clone(),
            MqttSettings::new(&url)
                .unwrap()
                .with_ca_file(certs.path().join("missing.pem")),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(matches!(e, MqttError::CaFile { .. }), "{e:?}");
    })
    .await;
}

// ------------------------------------------------------------------ a real XMPP account

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_xmpp_accounts_changes_reach_mqtt_within_a_second() {
    limit(LIMIT, async {
        let prosody = Prosody::start(ProsodyOptions::default()).expect("prosody starts");
        let broker = Mosquitto::start();
        let mut password = tempfile::NamedTempFile::new().unwrap();
        writeln!(password, "alicepw").unwrap();
        let config = XmppConfig {
            server: Some(format!("127.0.0.1:{}", prosody.port())),
            tls: TlsMode::InsecurePlaintext,
            ..XmppConfig::new(
                "alice@example.test",
                Secret::File(password.path().to_owned()),
            )
        };
        let source = XmppSource::new(&config).with_backoff_seed(3);
        let hub = Arc::new(
            Hub::builder()
                .with_source(alice(), Arc::new(source))
                .start(),
        );
        assert!(
            hub.wait_settled(&[alice()], STEP).await,
            "the XMPP source logs in: {:?}",
            hub.source_error(&alice())
        );
        let mqtt = Running::start(&hub, settings(broker.port(), "imstatus-xmpp"));
        let mut w = Watcher::connect(broker.port(), &["imstatus/#", "homeassistant/#"]).await;
        w.value("imstatus/alice/signed_in", "OFF", STEP).await;
        w.value("imstatus/alice/availability", "offline", STEP)
            .await;
        // imstatus cannot see the user's client over XMPP: unknown.
        w.value("imstatus/alice/running", "None", STEP).await;
        let configs = expected_configs("alice", "XMPP account");
        w.until("alice's configs", STEP, |w| {
            configs
                .iter()
                .all(|(t, _)| w.latest.contains_key(t))
                .then_some(())
        })
        .await;
        for (topic, expected) in &configs {
            assert_eq!(&w.latest[topic].json(), expected, "{topic}");
        }

        // The user's other client signs in, away "lunch".
        let mut desk =
            XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", "desk")
                .expect("desk logs in");
        let sent = Instant::now();
        desk.presence(Some("away"), Some("lunch"), Some(5)).unwrap();
        w.value("imstatus/alice/availability", "away", DELIVERY)
            .await;
        eprintln!("XMPP presence → MQTT availability: {:?}", sent.elapsed());
        w.value("imstatus/alice/signed_in", "ON", DELIVERY).await;
        let state = w
            .until("the state with lunch", STEP, |w| {
                w.latest
                    .get("imstatus/alice/state")
                    .map(Message::json)
                    .filter(|s| s["message"] == "lunch")
            })
            .await;
        assert_eq!(state["source"], "xmpp");
        // One state per batch: the resource that brought the change is already in it.
        assert_eq!(state["resources"][0]["resource"], "desk");
        assert_eq!(state["session"], "signed_in");

        desk.presence(Some("dnd"), Some("meeting"), Some(5))
            .unwrap();
        w.value("imstatus/alice/availability", "busy", DELIVERY)
            .await;
        desk.unavailable().unwrap();
        w.value("imstatus/alice/signed_in", "OFF", DELIVERY).await;
        w.value("imstatus/alice/availability", "offline", DELIVERY)
            .await;
        desk.close().unwrap();
        mqtt.stop().await.unwrap();
    })
    .await;
}

/// The activity's five binary sensors: (state topic leaf, name, device class, icon).
const ACTIVITY: [(&str, &str, Option<&str>, &str); 5] = [
    (
        "microphone",
        "Microphone in use",
        Some("running"),
        "mdi:microphone",
    ),
    ("camera", "Camera in use", Some("running"), "mdi:webcam"),
    ("in_call", "On a call", None, "mdi:phone-in-talk"),
    ("idle", "Idle", None, "mdi:sleep"),
    ("locked", "Screen locked", None, "mdi:monitor-lock"),
];

/// The activity sensors' discovery configs imstatus must publish for `account`, in full.
fn expected_activity_configs(account: &str, model: &str) -> Vec<(String, Value)> {
    ACTIVITY
        .iter()
        .map(|(leaf, name, class, icon)| {
            let mut config = json!({
                "name": name,
                "unique_id": format!("imstatus_{account}_{leaf}"),
                "icon": icon,
                "state_topic": format!("imstatus/{account}/{leaf}"),
                "payload_on": "ON",
                "payload_off": "OFF",
                "availability_topic": "imstatus/status",
                "payload_available": "online",
                "payload_not_available": "offline",
                "device": {
                    "identifiers": [format!("imstatus_{account}")],
                    "name": format!("imstatus {account}"),
                    "manufacturer": "imstatus",
                    "model": model,
                    "sw_version": VERSION,
                },
                "origin": {"name": "imstatus", "sw_version": VERSION},
            });
            if let Some(class) = class {
                config["device_class"] = json!(class);
            }
            (
                format!("homeassistant/binary_sensor/imstatus/{account}_{leaf}/config"),
                config,
            )
        })
        .collect()
}

/// The activity's state topics of `account`, as `(topic, payload)` in [`ACTIVITY`]'s order.
fn activity_states(w: &Watcher, account: &str) -> Vec<(String, Option<String>)> {
    ACTIVITY
        .iter()
        .map(|(leaf, ..)| {
            let topic = format!("imstatus/{account}/{leaf}");
            let payload = w.payload(&topic).map(str::to_owned);
            (topic, payload)
        })
        .collect()
}

/// Waits (within [`DELIVERY`]) until the activity's state topics of `account` are `payloads`.
async fn activity_becomes(w: &mut Watcher, account: &str, payloads: [&str; 5]) {
    let want = states(account, payloads);
    w.until(&format!("{want:?}"), DELIVERY, |w| {
        (activity_states(w, account) == want).then_some(())
    })
    .await;
}

fn states(account: &str, payloads: [&str; 5]) -> Vec<(String, Option<String>)> {
    ACTIVITY
        .iter()
        .zip(payloads)
        .map(|((leaf, ..), p)| (format!("imstatus/{account}/{leaf}"), Some(p.to_owned())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_desktop_account_gets_five_activity_sensors_that_follow_its_activity() {
    limit(LIMIT, async {
        let broker = Mosquitto::start();
        // What source = "desktop" reports at start (microphone, idle, lock), beside an IM
        // account without activity.
        let desk = AccountId::new("desk");
        let (source, script) = scripted(
            SourceKind::new_static("desktop"),
            vec![
                Observation::NoSession,
                Observation::ClientAppeared,
                Observation::Activity(ActivitySignal::Microphone(vec![])),
                Observation::Activity(ActivitySignal::Idle {
                    idle: false,
                    input_ago: Some(Duration::from_secs(3)),
                }),
                Observation::Activity(ActivitySignal::Locked(false)),
                Observation::Synced,
            ],
        );
        let (im, _im) = scripted(SourceKind::new_static("test"), alice_initial());
        let hub = Hub::builder()
            .with_source(desk.clone(), source)
            .with_source(alice(), im)
            .start();
        assert!(hub.wait_settled(&[desk.clone(), alice()], STEP).await);
        let hub = Arc::new(hub);
        let mqtt = Running::start(&hub, settings(broker.port(), "imstatus-activity"));
        let mut w = Watcher::connect(broker.port(), &["homeassistant/#", "imstatus/#"]).await;
        let configs = expected_activity_configs("desk", "desktop source");
        let mut topics = all_topics(&["alice", "desk"]);
        topics.extend(configs.iter().map(|(t, _)| t.clone()));
        topics.extend(ACTIVITY.iter().map(|(l, ..)| format!("imstatus/desk/{l}")));
        w.until("every topic", STEP, |w| has_all(w, &topics)).await;

        // Field by field, on the account's one device.
        for (topic, expected) in &configs {
            assert_eq!(&w.latest[topic].json(), expected, "{topic}");
        }
        // Retained: a subscriber that comes later gets them from the broker.
        let mut later = Watcher::connect(broker.port(), &["homeassistant/#", "imstatus/#"]).await;
        later
            .until("every topic, retained", STEP, |w| has_all(w, &topics))
            .await;
        for t in &topics {
            assert!(later.latest[t].retain, "{t} is retained");
        }
        drop(later);
        let device = w.latest["homeassistant/binary_sensor/imstatus/desk_running/config"].json()
            ["device"]
            .clone();
        assert_eq!(configs[0].1["device"], device);
        assert_eq!(
            activity_states(&w, "desk"),
            states("desk", ["OFF", "OFF", "OFF", "OFF", "OFF"])
        );
        assert_eq!(w.payload("imstatus/desk/running"), Some("ON"));
        // A desktop has no sign-in and no IM status.
        assert_eq!(w.payload("imstatus/desk/signed_in"), Some("None"));
        assert_eq!(w.payload("imstatus/desk/availability"), Some("unknown"));

        // parecord captures: the microphone and the call, within a second; the apps in the
        // state JSON.
        let sent = Instant::now();
        script.send([Observation::Activity(ActivitySignal::Microphone(vec![
            App::new("parecord", Some(4242)),
        ]))]);
        activity_becomes(&mut w, "desk", ["ON", "OFF", "ON", "OFF", "OFF"]).await;
        eprintln!("microphone change → its topics: {:?}", sent.elapsed());
        let state = w
            .until("the state with parecord", STEP, |w| {
                w.latest
                    .get("imstatus/desk/state")
                    .map(Message::json)
                    .filter(|s| s["activity"]["microphone"] == true)
            })
            .await;
        assert_eq!(
            state["activity"]["microphone_apps"],
            json!([{"name": "parecord", "pid": 4242}])
        );

        // The camera too, then the call ends.
        script.send([Observation::Activity(ActivitySignal::Camera(vec![
            App::new("cheese", Some(9)),
        ]))]);
        activity_becomes(&mut w, "desk", ["ON", "ON", "ON", "OFF", "OFF"]).await;
        script.send([
            Observation::Activity(ActivitySignal::Microphone(vec![])),
            Observation::Activity(ActivitySignal::Camera(vec![])),
        ]);
        activity_becomes(&mut w, "desk", ["OFF", "OFF", "OFF", "OFF", "OFF"]).await;

        // The user walks away; the screen locks.
        script.send([
            Observation::Activity(ActivitySignal::Idle {
                idle: true,
                input_ago: Some(Duration::from_secs(300)),
            }),
            Observation::Activity(ActivitySignal::Locked(true)),
        ]);
        activity_becomes(&mut w, "desk", ["OFF", "OFF", "OFF", "ON", "ON"]).await;

        // Everything above reached the broker after alice's topics: she has none of these.
        w.drain();
        for (leaf, ..) in ACTIVITY {
            for topic in [
                format!("imstatus/alice/{leaf}"),
                format!("homeassistant/binary_sensor/imstatus/alice_{leaf}/config"),
            ] {
                assert!(!w.latest.contains_key(&topic), "{topic}");
            }
        }
        // Only real changes are published: no topic got the same payload twice in a row.
        let mut last: std::collections::HashMap<&str, &str> = Default::default();
        for m in &w.all {
            let before = last.insert(m.topic.as_str(), m.payload.as_str());
            assert_ne!(
                before,
                Some(m.payload.as_str()),
                "{} published twice",
                m.topic
            );
        }
        mqtt.stop().await.unwrap();
    })
    .await;
}
