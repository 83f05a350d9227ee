//! The CLI's commands in-process against a scripted source: exit codes, output, ordering.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use imstatus::Cli;
use imstatus_core::{Availability, ErrorCode, Observation, PartId, SourceKind, Status};
use imstatus_hub::testing::{scripted, Script, ScriptedFactory};
use imstatus_hub::Source;

const LIMIT: Duration = Duration::from_secs(10);

/// A buffer several writers and the test can share.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    config: PathBuf,
}

fn config(accounts: &[&str]) -> Setup {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    let mut text = String::new();
    for a in accounts {
        text.push_str(&format!(
            "[[account]]\nname = \"{a}\"\nsource = \"purple\"\n"
        ));
    }
    std::fs::write(&path, text).expect("write config");
    Setup {
        _dir: dir,
        config: path,
    }
}

/// A factory of `purple` accounts handing out one scripted source with these initial
/// observations.
fn factory(initial: Vec<Observation>) -> (ScriptedFactory, Script) {
    let kind = SourceKind::new_static("purple");
    let (source, script) = scripted(kind.clone(), initial);
    let f = ScriptedFactory::new(kind, [source as Arc<dyn Source>]);
    (f, script)
}

async fn run(
    args: &[&str],
    setup: &Setup,
    factory: &ScriptedFactory,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> (u8, String, String) {
    let mut argv = vec![
        "imstatus",
        "--config",
        setup.config.to_str().expect("utf-8"),
    ];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("valid arguments");
    let (mut out, mut err) = (Shared::default(), Shared::default());
    let code = tokio::time::timeout(
        LIMIT,
        imstatus::run(cli, &[factory], &mut out, &mut err, stop),
    )
    .await
    .expect("command finishes");
    (code, out.text(), err.text())
}

fn away(part: &str, msg: &str) -> Observation {
    Observation::presence(part, Status::with_message(Availability::Away, msg))
}

#[tokio::test]
async fn status_exit_codes_follow_the_design() {
    let setup = config(&["desk"]);
    let cases: Vec<(Vec<Observation>, u8, &str)> = vec![
        (
            vec![
                Observation::ClientAppeared,
                away("a", "lunch"),
                Observation::Synced,
            ],
            0,
            "signed_in   away \"lunch\"",
        ),
        (
            vec![Observation::ClientAppeared, Observation::Synced],
            3,
            "client running     signed_out",
        ),
        (
            vec![Observation::ClientVanished, Observation::Synced],
            4,
            "client not_running",
        ),
    ];
    for (initial, expected, text) in cases {
        let (f, _script) = factory(initial);
        let (code, out, _) = run(&["status"], &setup, &f, std::future::pending()).await;
        assert_eq!(code, expected, "{out}");
        assert!(out.contains(text), "{out:?} should contain {text:?}");
    }
}

#[tokio::test]
async fn a_client_that_is_not_running_on_a_live_bus_gets_the_code_and_hint_too() {
    // The bus answers, nobody owns the client's name: no source error, but still the SDK's
    // client_not_running, exactly as when the bus itself is missing.
    let setup = config(&["desk"]);
    let (f, _s) = factory(vec![Observation::ClientVanished, Observation::Synced]);
    let (code, out, err) = run(&["status"], &setup, &f, std::future::pending()).await;
    assert_eq!(code, 4);
    assert!(
        out.contains("client not_running client_not_running (0x80040111)"),
        "{out}"
    );
    assert!(
        err.contains("imstatus: desk: client_not_running (0x80040111): the client is not running"),
        "{err}"
    );
    assert!(err.contains("hint: start Pidgin or Finch"), "{err}");
}

#[tokio::test]
async fn status_of_a_source_that_is_down_prints_code_hresult_and_hint() {
    let setup = config(&["desk"]);
    let (f, _s) = factory(vec![Observation::SourceDown(
        ErrorCode::ClientNotRunning,
        "bus unix:path=/nowhere: No such file".into(),
    )]);
    let (code, out, err) = run(&["status"], &setup, &f, std::future::pending()).await;
    assert_eq!(code, 4);
    assert!(out.contains("client_not_running (0x80040111)"), "{out}");
    assert!(
        err.contains("client_not_running (0x80040111): bus unix:path=/nowhere"),
        "{err}"
    );
    assert!(err.contains("hint: start Pidgin or Finch"), "{err}");

    let (f, _s) = factory(vec![Observation::SourceDown(
        ErrorCode::AuthFailed,
        "not-authorized".into(),
    )]);
    let (code, _, err) = run(&["status"], &setup, &f, std::future::pending()).await;
    assert_eq!(code, 1);
    assert!(err.contains("auth_failed (0x81000303)"), "{err}");
}

#[tokio::test]
async fn status_times_out_when_the_source_never_answers() {
    let setup = config(&["desk"]);
    let (f, _s) = factory(vec![]);
    let (code, _, err) = run(
        &["status", "--timeout", "200ms"],
        &setup,
        &f,
        std::future::pending(),
    )
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("timeout (0x81000306)"), "{err}");
}

#[tokio::test]
async fn status_json_is_one_snapshot_object_per_account() {
    let setup = config(&["desk"]);
    let (f, _s) = factory(vec![
        Observation::ClientAppeared,
        away("a", "lunch"),
        Observation::Synced,
    ]);
    let (code, out, _) = run(&["status", "--json"], &setup, &f, std::future::pending()).await;
    assert_eq!(code, 0);
    let lines: Vec<_> = out.lines().collect();
    assert_eq!(lines.len(), 1);
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
    assert_eq!(v["event"], "snapshot");
    assert_eq!(v["account"], "desk");
    assert_eq!(v["source"], "purple");
    assert_eq!(v["client"], "running");
    assert_eq!(v["session"], "signed_in");
    assert_eq!(v["availability"], "away");
    assert_eq!(v["message"], "lunch");
    assert_eq!(v["mistatus"], 0x22);
    assert_eq!(v["resources"][0]["resource"], "a");
}

#[tokio::test]
async fn watch_prints_the_snapshot_then_events_in_order_until_stopped() {
    let setup = config(&["desk"]);
    let (f, script) = factory(vec![Observation::ClientVanished, Observation::Synced]);
    let out = Shared::default();
    let probe = out.clone();
    let stop = async move {
        // The test's own deadline bounds this loop (run() times out after LIMIT).
        loop {
            if probe.text().lines().count() >= 8 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let feeder = {
        let script = script.clone();
        let probe = out.clone();
        tokio::spawn(async move {
            while probe.text().is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            script.send([
                Observation::ClientAppeared,
                Observation::Connecting(PartId::new("a")),
                away("a", "lunch"),
            ]);
            script.send([Observation::ClientVanished]);
        })
    };
    let cli = Cli::try_parse_from([
        "imstatus",
        "--config",
        setup.config.to_str().expect("utf-8"),
        "watch",
        "--json",
    ])
    .expect("args");
    let mut out_w = out.clone();
    let mut err = Shared::default();
    let code = tokio::time::timeout(LIMIT, imstatus::run(cli, &[&f], &mut out_w, &mut err, stop))
        .await
        .expect("watch ends when stopped");
    feeder.await.expect("feeder");
    assert_eq!(code, 0);
    let events: Vec<serde_json::Value> = out
        .text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let names: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    assert_eq!(
        names[..8],
        [
            "snapshot",
            "client_started",
            "signing_in",
            "resource_changed",
            "signed_in",
            "status_changed",
            "resource_changed",
            "signed_out",
        ]
    );
    let seqs: Vec<u64> = events[1..]
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(events[7]["reason"], "client_exited");
}

#[tokio::test]
async fn wait_returns_when_reached_and_124_on_timeout() {
    let setup = config(&["desk"]);
    let (f, script) = factory(vec![Observation::ClientAppeared, Observation::Synced]);
    let feeder = tokio::spawn(async move {
        tokio::task::yield_now().await;
        script.send([away("a", "")]);
    });
    let (code, _, _) = run(
        &["wait", "status=away", "--timeout", "5s"],
        &setup,
        &f,
        std::future::pending(),
    )
    .await;
    feeder.await.expect("feeder");
    assert_eq!(code, 0);

    let (f, _script) = factory(vec![Observation::ClientAppeared, Observation::Synced]);
    let start = std::time::Instant::now();
    let (code, _, err) = run(
        &["wait", "signed-in", "--timeout", "300ms"],
        &setup,
        &f,
        std::future::pending(),
    )
    .await;
    assert_eq!(code, 124);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(err.contains("timed out after 300ms"), "{err}");
}

#[tokio::test]
async fn set_reports_each_account() {
    let setup = config(&["desk"]);
    let (f, _s) = factory(vec![Observation::ClientAppeared, Observation::Synced]);
    let (code, out, _) = run(
        &["set", "busy", "--message", "in a call"],
        &setup,
        &f,
        std::future::pending(),
    )
    .await;
    assert_eq!(code, 0);
    assert_eq!(out, "desk: busy \"in a call\"\n");
}

#[tokio::test]
async fn unknown_account_is_a_usage_error() {
    let setup = config(&["desk"]);
    let (f, _s) = factory(vec![Observation::Synced]);
    let (code, _, err) = run(&["status", "laptop"], &setup, &f, std::future::pending()).await;
    assert_eq!(code, 2);
    assert!(
        err.contains("no account `laptop` in the config (accounts: desk)"),
        "{err}"
    );
}

#[tokio::test]
async fn watch_shows_warnings_the_source_gave_before_it_settled() {
    let setup = config(&["desk"]);
    let (f, _script) = factory(vec![
        Observation::Anomaly(
            ErrorCode::Unsupported,
            "the server hides nobody: imstatus is visible to contacts".into(),
        ),
        Observation::ClientAppeared,
        Observation::Synced,
    ]);
    let out = Shared::default();
    let probe = out.clone();
    let stop = async move {
        while probe.text().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let cli = Cli::try_parse_from([
        "imstatus",
        "--config",
        setup.config.to_str().expect("utf-8"),
        "watch",
    ])
    .expect("args");
    let (mut o, mut err) = (out.clone(), Shared::default());
    let code = tokio::time::timeout(LIMIT, imstatus::run(cli, &[&f], &mut o, &mut err, stop))
        .await
        .expect("watch ends");
    assert_eq!(code, 0);
    let err = err.text();
    assert!(
        err.contains("warning:")
            && err.contains("unsupported (0x80004001): the server hides nobody"),
        "{err}"
    );
    assert!(out.text().contains("client running"), "{}", out.text());
}
