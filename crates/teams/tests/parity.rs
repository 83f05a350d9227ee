//! One scenario, driven against both transports: the app (its test double) starts, goes
//! through every presence value, has a call with the camera and the microphone toggling and a
//! screen share, hangs up and is killed with SIGKILL. Each step's events are checked against
//! the documented mapping, and the two whole sequences must be equal, event for event.

use std::time::Duration;

use imstatus_core::EventKind;
use imstatus_testkit::mosquitto::Mosquitto;
use imstatus_testkit::DbusDaemon;

use crate::common::*;

/// (what the app does, the events imstatus must give for it, rendered by `common::render`).
fn scenario() -> Vec<(&'static str, Vec<&'static str>)> {
    vec![
        ("start", vec!["client_started"]),
        (
            r#"{"presenceStatusCode": 1}"#,
            vec![
                "signed_in ok",
                "status_changed available 0x002",
                "resource teams-for-linux signed_in available",
            ],
        ),
        (
            r#"{"presenceStatusCode": 3}"#,
            vec![
                "status_changed busy 0x00a",
                "resource teams-for-linux signed_in busy",
            ],
        ),
        (
            r#"{"presenceStatusCode": 4}"#,
            vec![
                "status_changed away 0x022",
                "resource teams-for-linux signed_in away",
            ],
        ),
        (
            r#"{"presenceStatusCode": 2}"#,
            vec![
                "status_changed busy 0x00a",
                "resource teams-for-linux signed_in busy",
            ],
        ),
        (
            r#"{"presenceStatusCode": 5}"#,
            vec![
                "status_changed away 0x022",
                "resource teams-for-linux signed_in away",
            ],
        ),
        (
            r#"{"presenceStatusCode": 1}"#,
            vec![
                "status_changed available 0x002",
                "resource teams-for-linux signed_in available",
            ],
        ),
        // Joining muted: in a call, the microphone not live.
        (
            r#"{"inCall": true, "microphoneState": "muted"}"#,
            vec!["activity in_call"],
        ),
        (
            r#"{"cameraEnabled": true}"#,
            vec!["activity in_call camera [Teams for Linux]"],
        ),
        (
            r#"{"microphoneState": "speaking"}"#,
            vec!["activity in_call camera microphone [Teams for Linux] [Teams for Linux]"],
        ),
        // Speaking and silent are both a live microphone: no news.
        (r#"{"microphoneState": "silent"}"#, vec![]),
        (
            r#"{"microphoneState": "muted"}"#,
            vec!["activity in_call camera [Teams for Linux]"],
        ),
        (r#"{"cameraEnabled": false}"#, vec!["activity in_call"]),
        (
            r#"{"screenSharing": true}"#,
            vec!["activity in_call screen_sharing"],
        ),
        (
            r#"{"presenceStatusCode": 2}"#,
            vec![
                "status_changed busy 0x00a",
                "resource teams-for-linux signed_in busy",
            ],
        ),
        (
            r#"{"microphoneState": "speaking"}"#,
            vec!["activity in_call microphone screen_sharing [Teams for Linux]"],
        ),
        // Hanging up: the call, the microphone and the share end, in the app's order (in_call
        // holds while the microphone is live).
        (
            r#"{"inCall": false, "microphoneState": "off", "screenSharing": false}"#,
            vec!["activity screen_sharing", "activity"],
        ),
        (
            "kill -9",
            vec![
                "signed_out client_exited",
                "status_changed offline 0x001",
                "resource teams-for-linux gone",
                "client_shutdown",
            ],
        ),
    ]
}

/// The events of imstatus starting with no app running (after the subscriber's snapshot).
const NOT_RUNNING: &[&str] = &[
    "client_shutdown",
    "activity",
    "signed_out unknown",
    "status_changed offline 0x001",
];

/// The next `n` events rendered; their kinds are kept in `kinds`.
async fn take(watch: &mut Watch, n: usize, kinds: &mut Vec<EventKind>, step: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..n {
        match tokio::time::timeout(STEP, watch.sub.recv()).await {
            Ok(Some(e)) => {
                lines.push(render(&e));
                kinds.push(e.kind.clone());
            }
            _ => panic!("after {step}: only {lines:?} within {STEP:?}, {n} expected"),
        }
    }
    lines
}

/// Runs the scenario; `start` starts the app's double. Returns every event after the
/// snapshot, whole.
async fn run<F, Fut>(mut watch: Watch, start: F) -> Vec<EventKind>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Double>,
{
    let mut kinds = Vec::new();
    let first = watch.next().await;
    assert!(first.snapshot().is_some(), "a snapshot first");
    assert_eq!(
        take(&mut watch, NOT_RUNNING.len(), &mut kinds, "the start").await,
        NOT_RUNNING
    );
    let mut start = Some(start);
    let mut double = None;
    for (step, expected) in scenario() {
        match step {
            "start" => double = Some((start.take().expect("once"))().await),
            "kill -9" => double.take().expect("running").kill9().await,
            patch => double.as_mut().expect("running").send(patch).await,
        }
        assert_eq!(
            take(&mut watch, expected.len(), &mut kinds, step).await,
            expected,
            "after {step}"
        );
    }
    // Nothing follows.
    watch.quiet(Duration::from_millis(200)).await;
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_scenario_gives_the_same_events_over_mqtt_and_dbus() {
    bounded(Duration::from_secs(60), async {
        let broker = Mosquitto::start();
        let port = broker.port();
        let over_mqtt = run(Watch::mqtt(port), || Double::mqtt(port)).await;

        let bus = DbusDaemon::start().expect("dbus-daemon");
        let address = bus.address().to_owned();
        let over_dbus = run(Watch::dbus(&address), || Double::dbus(&address)).await;

        assert_eq!(over_mqtt, over_dbus);
        let expected: usize =
            NOT_RUNNING.len() + scenario().iter().map(|(_, e)| e.len()).sum::<usize>();
        assert_eq!(over_mqtt.len(), expected);
    })
    .await;
}
