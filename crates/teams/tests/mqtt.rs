//! `via = "mqtt"` against a real mosquitto, with the app's test double publishing the app's
//! real topics (retained, QoS 0) and holding its real last will.

use std::io::Write as _;
use std::time::Duration;

use imstatus_config::Secret;
use imstatus_core::{Availability, Client, ErrorCode, Session, Status};
use imstatus_teams::{BrokerOptions, TeamsConfig, TeamsSource};
use imstatus_testkit::mosquitto::{BrokerOptions as Users, Mosquitto, Watcher};

use crate::common::*;

/// What imstatus says when it starts with no app running (after the subscriber's snapshot).
pub const NOT_RUNNING: &[&str] = &[
    "client_shutdown",
    "activity",
    "signed_out unknown",
    "status_changed offline 0x001",
];

const BUSY: &[&str] = &[
    "signed_in ok",
    "status_changed busy 0x00a",
    "resource teams-for-linux signed_in busy",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_running_before_imstatus_is_read_from_its_retained_topics() {
    bounded(Duration::from_secs(30), async {
        let broker = Mosquitto::start();
        let mut app = Double::mqtt(broker.port()).await;
        app.send(r#"{"presenceStatusCode": 2}"#).await;
        app.send(r#"{"inCall": true, "cameraEnabled": true, "microphoneState": "silent"}"#)
            .await;
        let mut w = Watch::mqtt(broker.port());
        let mut expected = vec![
            "client_started",
            "activity in_call",
            "activity in_call camera [Teams for Linux]",
            "activity in_call camera microphone [Teams for Linux] [Teams for Linux]",
        ];
        expected.extend(BUSY);
        assert_eq!(
            w.started("resource teams-for-linux signed_in busy").await,
            expected
        );
        let s = w.snapshot();
        assert_eq!((s.client, s.session), (Client::Running, Session::SignedIn));
        assert_eq!(s.mistatus, 0x00A);
        app.kill9().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retained_values_of_an_app_that_quit_are_not_read_and_its_next_run_forgets_the_call() {
    bounded(Duration::from_secs(30), async {
        let broker = Mosquitto::start();
        let mut app = Double::mqtt(broker.port()).await;
        app.send(r#"{"presenceStatusCode": 2}"#).await;
        app.send(r#"{"inCall": true, "screenSharing": true}"#).await;
        app.quit().await;
        // The broker still has busy, in-call and screen-sharing, retained, with connected =
        // false.
        let mut watcher = Watcher::connect(broker.port(), &["teams/#"]).await;
        watcher.value("teams/connected", "false", STEP).await;
        watcher.value("teams/in-call", "true", STEP).await;

        let mut w = Watch::mqtt(broker.port());
        assert_eq!(w.started("status_changed offline 0x001").await, NOT_RUNNING);
        let s = w.snapshot();
        assert_eq!(s.client, Client::NotRunning);
        assert_eq!(s.activity.map(|a| a.in_call), Some(false));

        // The app starts again: `connected = true` after `false`, seen live. The presence is
        // the app's last (it sends it only on change); the earlier run's call is over.
        let mut app = Double::mqtt(broker.port()).await;
        let mut expected = vec!["client_started"];
        expected.extend(BUSY);
        assert_eq!(w.take(4).await, expected);
        assert_eq!(
            w.snapshot().activity,
            Some(imstatus_core::Activity::default())
        );
        app.send(r#"{"inCall": true}"#).await;
        assert_eq!(w.take(1).await, ["activity in_call"]);
        app.kill9().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_and_kill_9_are_signed_out_then_client_shutdown() {
    bounded(Duration::from_secs(30), async {
        let broker = Mosquitto::start();
        let mut w = Watch::mqtt(broker.port());
        assert_eq!(w.started("status_changed offline 0x001").await, NOT_RUNNING);
        let gone = [
            "signed_out client_exited",
            "status_changed offline 0x001",
            "resource teams-for-linux gone",
            "client_shutdown",
        ];

        // A clean quit: the app publishes `connected = false` itself.
        let mut app = Double::mqtt(broker.port()).await;
        app.send(r#"{"presenceStatusCode": 2}"#).await;
        let mut expected = vec!["client_started"];
        expected.extend(BUSY);
        assert_eq!(w.take(4).await, expected);
        app.quit().await;
        assert_eq!(w.take(4).await, gone);

        // kill -9 in a call: the broker publishes the will; the call ends with the app.
        let mut app = Double::mqtt(broker.port()).await;
        app.send(r#"{"inCall": true, "microphoneState": "speaking"}"#)
            .await;
        assert_eq!(
            w.take(6).await,
            [
                "client_started",
                "signed_in ok",
                "status_changed busy 0x00a",
                "resource teams-for-linux signed_in busy",
                "activity in_call",
                "activity in_call microphone [Teams for Linux]",
            ]
        );
        app.kill9().await;
        let mut expected = gone.to_vec();
        expected.push("activity");
        assert_eq!(w.take(5).await, expected);
    })
    .await;
}

/// Stops the broker with SIGKILL (by its PID, in `Drop`), as a crash or power loss would: a
/// broker stopped with SIGTERM publishes its clients' wills first (docs/teams-for-linux.md), so
/// which of the app's and imstatus's connections it closes first would decide the events.
fn crash(broker: Mosquitto) {
    let port = broker.port();
    drop(broker);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    imstatus_testkit::wait_until("the broker's port to be free", STEP, || {
        std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100))
            .is_err()
            .then_some(())
    })
    .expect("the port is free");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_restart_without_persistence_keeps_the_last_status() {
    bounded(Duration::from_secs(30), async {
        let broker = Mosquitto::start();
        let port = broker.port();
        let mut app = Double::mqtt(port).await;
        app.send(r#"{"presenceStatusCode": 2}"#).await;
        app.send(r#"{"inCall": true}"#).await;
        let mut w = Watch::mqtt(port);
        w.started("resource teams-for-linux signed_in busy").await;

        crash(broker);
        let broker = Mosquitto::start_on(port);
        // imstatus loses the broker (session unknown), reconnects, and the app publishes
        // `connected = true` again, but not its status or call: the broker has neither.
        let events = w.until(|l| l == "signed_in ok").await;
        assert!(is_error(&events[0], "disconnected"), "{events:?}");
        assert!(
            events[..events.len() - 1]
                .iter()
                .all(|l| l.starts_with("source_error ")),
            "{events:?}"
        );
        let mut watcher = Watcher::connect(port, &["teams/#"]).await;
        watcher.value("teams/connected", "true", STEP).await;
        assert_eq!(watcher.payload("teams/status"), None);
        // imstatus shows what it last read: busy, in a call.
        let s = w.snapshot();
        assert_eq!(
            (s.client, s.session, s.availability),
            (Client::Running, Session::SignedIn, Availability::Busy)
        );
        assert_eq!(s.activity.map(|a| a.in_call), Some(true));
        // And follows the next change.
        app.send(r#"{"presenceStatusCode": 1}"#).await;
        assert_eq!(
            w.take(2).await,
            [
                "status_changed available 0x002",
                "resource teams-for-linux signed_in available"
            ]
        );
        app.kill9().await;
        drop(broker);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_died_while_the_broker_was_down_is_not_running_after_the_grace() {
    bounded(Duration::from_secs(30), async {
        let broker = Mosquitto::start();
        let port = broker.port();
        let mut app = Double::mqtt(port).await;
        app.send(r#"{"presenceStatusCode": 4}"#).await;
        let options = BrokerOptions::new(&format!("mqtt://127.0.0.1:{port}")).expect("url");
        let source = TeamsSource::new(&TeamsConfig::mqtt(options))
            .with_backoff_seed(7)
            .with_resync_grace(Duration::from_millis(300));
        let mut w = Watch::with_source(source);
        w.started("resource teams-for-linux signed_in away").await;

        crash(broker);
        // No broker: no will. The app is gone all the same.
        app.kill9().await;
        let _broker = Mosquitto::start_on(port);
        // While imstatus has no broker the session is unknown, so the client's end comes first
        // (as with the libpurple source after a lost bus).
        let events = w.until(|l| l == "resource teams-for-linux gone").await;
        let (errors, rest) = events.split_at(events.len() - 4);
        assert!(
            !errors.is_empty() && errors.iter().all(|l| l.starts_with("source_error ")),
            "{events:?}"
        );
        assert_eq!(
            rest,
            [
                "client_shutdown",
                "signed_out client_exited",
                "status_changed offline 0x001",
                "resource teams-for-linux gone"
            ]
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_payloads_are_reported_and_change_nothing() {
    bounded(Duration::from_secs(30), async {
        let broker = Mosquitto::start();
        let mut app = Double::mqtt(broker.port()).await;
        app.send(r#"{"presenceStatusCode": 2}"#).await;
        let mut w = Watch::mqtt(broker.port());
        w.started("resource teams-for-linux signed_in busy").await;
        let before = w.snapshot();

        let raw = |topic: &str, payload: &str| {
            serde_json::json!({"raw": {"topic": topic, "payload": payload}}).to_string()
        };
        let huge_status = format!(
            "{{\"status\":\"available\",\"pad\":\"{}\"}}",
            "x".repeat(100_000)
        );
        let cases = [
            (
                raw("status", "not json"),
                "source_error protocol_error: teams/status: not JSON",
            ),
            (
                raw("status", r#"{"statusCode":"x"}"#),
                "source_error protocol_error: teams/status: statusCode is not a number",
            ),
            (
                raw("in-call", "maybe"),
                "source_error protocol_error: teams/in-call: expected true or false, got \"maybe\"; ignored",
            ),
            (
                raw("microphone", "\u{1b}[31mloud"),
                "source_error protocol_error: teams/microphone: expected speaking, silent, muted or off, got \"\u{fffd}[31mloud\"; ignored",
            ),
            (
                raw("camera", &"t".repeat(65)),
                "source_error protocol_error: teams/camera: 65 bytes, more than 64; ignored",
            ),
            (
                raw("status", &huge_status),
                "source_error protocol_error: teams/status: 100031 bytes, more than 4096; ignored",
            ),
        ];
        for (line, expected) in &cases {
            app.send(line).await;
            let got = w.take(1).await;
            assert!(got[0].starts_with(expected), "{got:?} vs {expected}");
        }
        // The app's other topics never reach the source, whatever their size (a calendar
        // reply larger than any packet the source reads, not retained).
        app.send(
            &serde_json::json!({"raw": {"topic": "calendar", "payload": "c".repeat(2 << 20),
                "retain": false}})
            .to_string(),
        )
        .await;
        // A presence imstatus does not know: signed in, availability unknown, and said so.
        app.send(&raw("status", r#"{"status":"presenting","statusCode":6}"#))
            .await;
        assert_eq!(
            w.take(3).await,
            [
                "source_error protocol_error: teams/status: presence \"presenting\" is not one imstatus knows; shown as signed in with availability unknown",
                "status_changed unknown 0x002",
                "resource teams-for-linux signed_in unknown",
            ]
        );
        // A valid value after all that is read as usual.
        app.send(r#"{"presenceStatusCode": 4}"#).await;
        assert_eq!(
            w.take(2).await,
            [
                "status_changed away 0x022",
                "resource teams-for-linux signed_in away"
            ]
        );
        let after = w.snapshot();
        assert_eq!(
            (before.client, before.session, after.client, after.session),
            (
                Client::Running,
                Session::SignedIn,
                Client::Running,
                Session::SignedIn
            )
        );
        app.kill9().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_auth_failed_once_and_the_right_one_works() {
    bounded(Duration::from_secs(30), async {
        let broker = Mosquitto::start_with(
            imstatus_testkit::free_port(),
            &Users {
                users: vec![("watcher".into(), "right".into())],
                ..Users::default()
            },
        );
        let options = |password: &str| {
            let mut file = tempfile::NamedTempFile::new().expect("temp file");
            writeln!(file, "{password}").expect("write");
            let mut o = BrokerOptions::new(&broker.url()).expect("url");
            o.username = Some("watcher".into());
            o.password = Some(Secret::File(file.path().to_owned()));
            (o, file)
        };
        let (wrong, _file) = options("wrong");
        let mut w = Watch::start(&TeamsConfig::mqtt(wrong));
        let first = w.next().await;
        assert!(first.snapshot().is_some());
        let line = render(&*w.next().await);
        // mosquitto answers a wrong password with "not authorised".
        assert!(
            line.starts_with("source_error auth_failed: mqtt://127.0.0.1:"),
            "{line}"
        );
        assert!(line.contains("check `username`, `password_file`"), "{line}");
        // Fatal: no retry (the first backoff would be about a second).
        w.quiet(Duration::from_millis(1500)).await;

        let (right, _file) = options("right");
        let mut w = Watch::start(&TeamsConfig::mqtt(right));
        assert_eq!(w.started("status_changed offline 0x001").await, NOT_RUNNING);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_broker_is_server_unreachable_and_set_is_unsupported() {
    bounded(Duration::from_secs(30), async {
        let port = imstatus_testkit::free_port();
        let mut w = Watch::mqtt(port);
        assert!(w.next().await.snapshot().is_some());
        let line = render(&*w.next().await);
        assert!(
            line.starts_with(&format!(
                "source_error server_unreachable: mqtt://127.0.0.1:{port}:"
            )),
            "{line}"
        );
        let e = w
            .hub
            .set_status(&work(), Status::new(Availability::Away))
            .await
            .expect_err("unsupported");
        assert_eq!(e.code, ErrorCode::Unsupported);
        assert_eq!(e.detail, imstatus_teams::SET_UNSUPPORTED);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_says_which_app_setting_to_turn_on() {
    bounded(Duration::from_secs(30), async {
        let broker = Mosquitto::start();
        let config = TeamsConfig::mqtt(BrokerOptions::new(&broker.url()).expect("url"));
        let summary = |checks: Vec<imstatus_hub::Check>| {
            checks
                .into_iter()
                .map(|c| (c.name, c.ok, c.detail, c.hint.unwrap_or_default()))
                .collect::<Vec<_>>()
        };
        // Nothing under teams/: the app's MQTT is off.
        let checks = summary(imstatus_teams::doctor::doctor(&config).await);
        assert_eq!(
            checks.iter().map(|c| (c.0, c.1)).collect::<Vec<_>>(),
            [("broker", true), ("topics", false), ("app", false)]
        );
        assert!(
            checks[1].3.contains(&format!(
                "{{\"mqtt\": {{\"enabled\": true, \"brokerUrl\": \"{}\", \"topicPrefix\": \"teams\"}}}}",
                broker.url()
            )),
            "{checks:?}"
        );
        assert_eq!(checks[2].2, "skipped: an earlier step failed");

        // The app runs: every step passes and says what the app shows.
        let mut app = Double::mqtt(broker.port()).await;
        app.send(r#"{"presenceStatusCode": 3, "inCall": true}"#).await;
        let checks = summary(imstatus_teams::doctor::doctor(&config).await);
        assert!(checks.iter().all(|c| c.1), "{checks:?}");
        assert_eq!(
            checks[1].2,
            "retained: teams/connected, teams/in-call, teams/status"
        );
        assert_eq!(
            checks[2].2,
            "connected = true; presence do_not_disturb; in a call, camera off, microphone not \
             live, not sharing"
        );
        app.quit().await;
        let checks = summary(imstatus_teams::doctor::doctor(&config).await);
        assert_eq!((checks[2].0, checks[2].1), ("app", false));
        assert!(checks[2].2.contains("not running"), "{checks:?}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_topic_prefix_is_read_and_other_prefixes_are_not() {
    bounded(Duration::from_secs(30), async {
        let broker = Mosquitto::start();
        // An app under the default prefix, which this account does not watch.
        let mut other = Double::mqtt(broker.port()).await;
        other.send(r#"{"presenceStatusCode": 4}"#).await;
        let mut options = BrokerOptions::new(&broker.url()).expect("url");
        options.topic_prefix = "office/teams".into();
        let mut w = Watch::start(&TeamsConfig::mqtt(options));
        assert_eq!(w.started("status_changed offline 0x001").await, NOT_RUNNING);
        let mut app = Double::mqtt_with(broker.port(), "office/teams", "tfl-office").await;
        app.send(r#"{"presenceStatusCode": 2}"#).await;
        let mut expected = vec!["client_started"];
        expected.extend(BUSY);
        assert_eq!(w.take(4).await, expected);
        other.kill9().await;
        app.kill9().await;
        assert_eq!(
            w.take(4).await,
            [
                "signed_out client_exited",
                "status_changed offline 0x001",
                "resource teams-for-linux gone",
                "client_shutdown"
            ]
        );
    })
    .await;
}
