//! `via = "dbus"` on a real private dbus-daemon, with the app's test double owning the app's
//! real name and emitting its real signals; a hostile peer on the same bus.

use std::collections::HashSet;
use std::time::Duration;

use imstatus_core::{Activity, Availability, Client, Session};
use imstatus_teams::names::{DBUS_INTERFACE, DBUS_NAME, DBUS_PATH};
use imstatus_testkit::DbusDaemon;
use zbus::message::Message;
use zbus::Connection;

use crate::common::*;
use crate::mqtt::NOT_RUNNING;

const GONE: &[&str] = &[
    "signed_out client_exited",
    "status_changed offline 0x001",
    "resource teams-for-linux gone",
    "client_shutdown",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_app_is_read_with_get_state_at_start() {
    bounded(Duration::from_secs(30), async {
        let bus = DbusDaemon::start().expect("dbus-daemon");
        let mut app = Double::dbus(bus.address()).await;
        app.send(r#"{"presenceStatusCode": 2, "inCall": true, "cameraEnabled": true}"#)
            .await;
        let mut w = Watch::dbus(bus.address());
        assert_eq!(
            w.started("resource teams-for-linux signed_in busy").await,
            [
                "client_started",
                "activity in_call",
                "activity in_call camera [Teams for Linux]",
                "signed_in ok",
                "status_changed busy 0x00a",
                "resource teams-for-linux signed_in busy",
            ]
        );
        app.kill9().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_restart_and_kill_9_follow_the_name_owner() {
    bounded(Duration::from_secs(30), async {
        let bus = DbusDaemon::start().expect("dbus-daemon");
        let mut w = Watch::dbus(bus.address());
        assert_eq!(w.started("status_changed offline 0x001").await, NOT_RUNNING);

        let mut app = Double::dbus(bus.address()).await;
        assert_eq!(w.take(1).await, ["client_started"]);
        app.send(r#"{"presenceStatusCode": 1}"#).await;
        assert_eq!(
            w.take(3).await,
            [
                "signed_in ok",
                "status_changed available 0x002",
                "resource teams-for-linux signed_in available"
            ]
        );
        app.quit().await;
        assert_eq!(w.take(4).await, GONE);

        // A new run of the app: GetState says `unknown` until the page shows a presence, so
        // the client runs and the user is not signed in (yet).
        let app = Double::dbus(bus.address()).await;
        assert_eq!(w.take(1).await, ["client_started"]);
        let s = w.snapshot();
        assert_eq!(
            (s.client, s.session, s.mistatus),
            (Client::Running, Session::SignedOut, 0x001)
        );
        app.kill9().await;
        assert_eq!(w.take(1).await, ["client_shutdown"]);
    })
    .await;
}

async fn connect(address: &str) -> Connection {
    zbus::connection::Builder::address(address)
        .expect("address")
        .build()
        .await
        .expect("connect")
}

/// A signal from the peer: to `dest`, or broadcast.
fn signal<B>(dest: Option<&str>, path: &str, iface: &str, member: &str, body: &B) -> Message
where
    B: zbus::export::serde::Serialize + zbus::zvariant::DynamicType,
{
    let mut builder = Message::signal(path, iface, member).expect("header");
    if let Some(dest) = dest {
        builder = builder.destination(dest.to_owned()).expect("destination");
    }
    builder.build(body).expect("body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_spoofing_the_app_or_the_bus_is_ignored() {
    bounded(Duration::from_secs(30), async {
        let bus = DbusDaemon::start().expect("dbus-daemon");
        let mut app = Double::dbus(bus.address()).await;
        app.send(r#"{"presenceStatusCode": 1}"#).await;
        let mut w = Watch::dbus(bus.address());
        w.started("resource teams-for-linux signed_in available")
            .await;

        let peer = connect(bus.address()).await;
        let dbus = zbus::fdo::DBusProxy::new(&peer).await.expect("proxy");
        let owner = dbus
            .get_name_owner(DBUS_NAME.try_into().expect("name"))
            .await
            .expect("owned")
            .to_string();
        let me = peer.unique_name().expect("unique name").to_string();
        // Everyone else on the bus: imstatus's connection.
        let others: HashSet<String> = dbus
            .list_names()
            .await
            .expect("names")
            .into_iter()
            .map(|n| n.to_string())
            .filter(|n| n.starts_with(':') && *n != me && *n != owner)
            .collect();
        assert!(!others.is_empty());
        let mut targets: Vec<Option<&str>> = others.iter().map(|n| Some(n.as_str())).collect();
        targets.push(None);
        for dest in targets {
            for msg in [
                signal(
                    dest,
                    DBUS_PATH,
                    DBUS_INTERFACE,
                    "PresenceChanged",
                    &("away", 4i32),
                ),
                signal(dest, DBUS_PATH, DBUS_INTERFACE, "InCallChanged", &(true,)),
                signal(dest, DBUS_PATH, DBUS_INTERFACE, "CameraChanged", &(true,)),
                signal(dest, DBUS_PATH, DBUS_INTERFACE, "InCallChanged", &("junk",)),
                signal(
                    dest,
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "NameOwnerChanged",
                    &(DBUS_NAME, owner.as_str(), ""),
                ),
                signal(
                    dest,
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "NameOwnerChanged",
                    &(DBUS_NAME, "", me.as_str()),
                ),
            ] {
                peer.send(&msg).await.expect("send");
            }
        }
        // Only the app's own change comes through, and nothing before it.
        app.send(r#"{"presenceStatusCode": 2}"#).await;
        assert_eq!(
            w.take(2).await,
            [
                "status_changed busy 0x00a",
                "resource teams-for-linux signed_in busy"
            ]
        );
        let s = w.snapshot();
        assert_eq!(
            (s.client, s.session, s.availability),
            (Client::Running, Session::SignedIn, Availability::Busy)
        );
        assert_eq!(s.activity, Some(Activity::default()));
        app.kill9().await;
        assert_eq!(w.take(4).await, GONE);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_signals_and_state_from_the_app_are_reported_and_change_nothing() {
    bounded(Duration::from_secs(30), async {
        let bus = DbusDaemon::start().expect("dbus-daemon");
        let mut w = Watch::dbus(bus.address());
        w.started("status_changed offline 0x001").await;
        // GetState answers garbage: reported; the signals of the first change still count.
        let mut app = Double::start_with(&["dbus", bus.address(), "{not json"]).await;
        let events = w.take(2).await;
        assert_eq!(events[0], "client_started");
        assert!(
            events[1].starts_with("source_error protocol_error: GetState: not JSON"),
            "{events:?}"
        );
        app.send(r#"{"presenceStatusCode": 2}"#).await;
        assert_eq!(
            w.take(3).await,
            [
                "signed_in ok",
                "status_changed busy 0x00a",
                "resource teams-for-linux signed_in busy"
            ]
        );
        let raw = |member: &str, body: serde_json::Value| {
            let mut sig = serde_json::json!({"member": member});
            sig.as_object_mut()
                .expect("object")
                .extend(body.as_object().expect("object").clone());
            serde_json::json!({ "rawSignal": sig }).to_string()
        };
        let cases = [
            (
                raw("InCallChanged", serde_json::json!({"string": "yes"})),
                "source_error protocol_error: InCallChanged: a body of type `s`, expected `b`; ignored",
            ),
            (
                raw("PresenceChanged", serde_json::json!({"bool": true})),
                "source_error protocol_error: PresenceChanged: a body of type `b`, expected `si`; ignored",
            ),
            (
                raw("MicrophoneChanged", serde_json::json!({"string": "loud"})),
                "source_error protocol_error: MicrophoneChanged: expected speaking, silent, muted or off, got \"loud\"; ignored",
            ),
            (
                raw(
                    "PresenceChanged",
                    serde_json::json!({"string": "x".repeat(100_000), "code": 2}),
                ),
                "source_error protocol_error: PresenceChanged: a status of 100000 bytes; ignored",
            ),
        ];
        for (line, expected) in &cases {
            app.send(line).await;
            assert_eq!(w.take(1).await, [*expected]);
        }
        assert_eq!(
            w.snapshot().availability,
            Availability::Busy,
            "nothing changed"
        );
        // A value imstatus does not know: signed in, availability unknown, and said so.
        app.send(&raw(
            "PresenceChanged",
            serde_json::json!({"string": "unknown", "code": 6}),
        ))
        .await;
        assert_eq!(
            w.take(3).await,
            [
                "source_error protocol_error: PresenceChanged: presence \"unknown, code 6\" is not one imstatus knows; shown as signed in with availability unknown",
                "status_changed unknown 0x002",
                "resource teams-for-linux signed_in unknown",
            ]
        );
        app.kill9().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_signals_stays_bounded_and_ends_in_the_apps_state() {
    bounded(Duration::from_secs(60), async {
        let bus = DbusDaemon::start().expect("dbus-daemon");
        let mut app = Double::dbus(bus.address()).await;
        app.send(r#"{"presenceStatusCode": 1}"#).await;
        let mut w = Watch::dbus(bus.address());
        w.started("resource teams-for-linux signed_in available")
            .await;
        app.send(r#"{"flood": 20000}"#).await;
        app.send(r#"{"presenceStatusCode": 2}"#).await;
        // Whatever was dropped on the way, the source ends where the app is. (This subscriber
        // may fall behind too and get a fresh snapshot instead of some events: the hub's
        // snapshot is what counts.)
        while w.snapshot().availability != Availability::Busy {
            let line = render(&*w.next().await);
            assert!(!line.starts_with("source_error"), "{line}");
        }
        app.kill9().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_bus_is_client_not_running_and_a_lost_bus_is_disconnected() {
    bounded(Duration::from_secs(30), async {
        let dir = tempfile::tempdir().expect("tempdir");
        let nowhere = format!("unix:path={}", dir.path().join("none").display());
        let mut w = Watch::dbus(&nowhere);
        assert!(w.next().await.snapshot().is_some());
        assert_eq!(w.take(1).await, ["client_shutdown"]);
        let line = w.take(1).await.remove(0);
        assert!(
            line.starts_with(&format!(
                "source_error client_not_running: cannot connect to the D-Bus bus at {nowhere}"
            )),
            "{line}"
        );

        let mut bus = DbusDaemon::start().expect("dbus-daemon");
        let mut w = Watch::dbus(bus.address());
        w.started("status_changed offline 0x001").await;
        bus.stop().expect("stop");
        let line = w.take(1).await.remove(0);
        assert!(
            line.starts_with("source_error disconnected: lost the D-Bus bus at"),
            "{line}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_says_whether_the_apps_dbus_api_is_on() {
    bounded(Duration::from_secs(30), async {
        let bus = DbusDaemon::start().expect("dbus-daemon");
        let config = imstatus_teams::TeamsConfig::dbus(Some(bus.address().to_owned()));
        let checks = imstatus_teams::doctor::doctor(&config).await;
        assert_eq!(
            checks.iter().map(|c| (c.name, c.ok)).collect::<Vec<_>>(),
            [("bus", true), ("name", false), ("state", false)]
        );
        let hint = checks[1].hint.clone().unwrap_or_default();
        assert!(
            hint.contains("{\"dbusControl\": {\"enabled\": true}}"),
            "{hint}"
        );
        assert!(hint.contains("use via = \"mqtt\""), "{hint}");

        let mut app = Double::dbus(bus.address()).await;
        app.send(r#"{"presenceStatusCode": 4, "microphoneState": "speaking", "inCall": true}"#)
            .await;
        let checks = imstatus_teams::doctor::doctor(&config).await;
        assert!(checks.iter().all(|c| c.ok), "{checks:?}");
        assert!(
            checks[1].detail.ends_with(&format!(", pid {}", app.pid())),
            "{checks:?}"
        );
        assert_eq!(
            checks[2].detail,
            "GetState; presence away; in a call, camera off, microphone live, not sharing"
        );
        app.send(r#"{"getState": "[]"}"#).await;
        let checks = imstatus_teams::doctor::doctor(&config).await;
        assert_eq!((checks[2].name, checks[2].ok), ("state", false));
        assert!(
            checks[2].detail.starts_with("GetState: not a JSON object"),
            "{checks:?}"
        );
        app.kill9().await;
    })
    .await;
}
