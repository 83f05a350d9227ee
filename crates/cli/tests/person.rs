//! A `[[person]]` through the CLI's commands, in-process against scripted member sources: it
//! is an account to `status`, `wait`, `watch` and `set`, and selecting it starts its members.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use imstatus::Cli;
use imstatus_core::{Availability, Observation, SourceKind, Status};
use imstatus_hub::testing::{scripted, Script, ScriptedFactory};
use imstatus_hub::Source;

const LIMIT: Duration = Duration::from_secs(10);

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

/// Two scripted accounts, `desktop` (synced) and `phone`, and the person `me` of both.
fn setup(sync: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[[account]]\nname = \"desktop\"\nsource = \"purple\"\n\
             [[account]]\nname = \"phone\"\nsource = \"purple\"\n\
             [[person]]\nname = \"me\"\naccounts = [\"desktop\", \"phone\"]\n{sync}"
        ),
    )
    .expect("write config");
    (dir, path)
}

fn available(part: &str) -> Observation {
    Observation::presence(part, Status::new(Availability::Available))
}

/// A factory handing out the desktop's and the phone's scripted sources, in config order.
fn factory(
    desktop: Vec<Observation>,
    phone: Vec<Observation>,
) -> (ScriptedFactory, Script, Script) {
    let kind = SourceKind::new_static("purple");
    let (d, ds) = scripted(kind.clone(), desktop);
    let (p, ps) = scripted(kind.clone(), phone);
    let f = ScriptedFactory::new(kind, [d as Arc<dyn Source>, p as Arc<dyn Source>]);
    (f, ds, ps)
}

async fn run(
    args: &[&str],
    config: &Path,
    factory: &ScriptedFactory,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> (u8, String, String) {
    run_with(args, config, factory, stop, Shared::default()).await
}

async fn run_with(
    args: &[&str],
    config: &Path,
    factory: &ScriptedFactory,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    out: Shared,
) -> (u8, String, String) {
    let mut argv = vec!["imstatus", "--config", config.to_str().expect("utf-8")];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("valid arguments");
    let (mut out, mut err) = (out, Shared::default());
    let code = tokio::time::timeout(
        LIMIT,
        imstatus::run(cli, &[factory], &mut out, &mut err, stop),
    )
    .await
    .expect("command finishes");
    (code, out.text(), err.text())
}

fn signed_in() -> Vec<Observation> {
    vec![
        Observation::ClientAppeared,
        available("a"),
        Observation::Synced,
    ]
}

#[tokio::test]
async fn status_of_a_person_starts_its_members_and_shows_only_the_person() {
    let (_dir, config) = setup("");
    let (f, _d, _p) = factory(
        signed_in(),
        vec![Observation::ClientVanished, Observation::Synced],
    );
    let (code, out, err) = run(
        &["status", "me", "--json"],
        &config,
        &f,
        std::future::pending(),
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(lines[0]).expect("json");
    assert_eq!(v["account"], "me");
    assert_eq!(v["source"], "person");
    assert_eq!(v["client"], "running");
    assert_eq!(v["session"], "signed_in");
    assert_eq!(v["availability"], "available");
    assert_eq!(v["accounts"], serde_json::json!(["desktop", "phone"]));
    assert_eq!(
        v["decided_by"],
        serde_json::json!({"rule": "most_available", "account": "desktop"})
    );
    // The human table says the same, with the members and the rule.
    let (f, _d, _p) = factory(
        signed_in(),
        vec![Observation::ClientVanished, Observation::Synced],
    );
    let (code, out, _) = run(&["status", "me"], &config, &f, std::future::pending()).await;
    assert_eq!(code, 0);
    assert_eq!(
        out,
        "me       person  client running     signed_in   available\n\
         \x20          accounts desktop, phone; decided by most_available (desktop)\n"
    );
}

#[tokio::test]
async fn wait_on_a_person_ends_when_its_rule_gives_the_status() {
    let (_dir, config) = setup("");
    let (f, _d, phone) = factory(
        vec![Observation::ClientVanished, Observation::Synced],
        vec![Observation::Synced],
    );
    let waiting = run(
        &["wait", "status=away", "--account", "me", "--timeout", "8s"],
        &config,
        &f,
        std::future::pending(),
    );
    // The phone signs in away; the desktop is not running: rule 4 gives the phone's status
    // (whether `wait` subscribes before or after, it reaches the state).
    phone.send([Observation::presence(
        "p",
        Status::with_message(Availability::Away, "lunch"),
    )]);
    let (code, _, err) = waiting.await;
    assert_eq!(code, 0, "{err}");
}

#[tokio::test]
async fn set_on_a_person_sets_its_synced_members_and_nothing_without_sync() {
    let (_dir, config) = setup("sync = [\"desktop\", \"phone\"]\n");
    let (f, _d, _p) = factory(signed_in(), signed_in());
    let (code, out, err) = run(
        &["set", "busy", "--message", "focus", "--account", "me"],
        &config,
        &f,
        std::future::pending(),
    )
    .await;
    assert_eq!((code, out.as_str()), (0, "me: busy \"focus\"\n"), "{err}");

    let (_dir, config) = setup("");
    let (f, _d, _p) = factory(signed_in(), signed_in());
    let (code, _, err) = run(
        &["set", "away", "--account", "me"],
        &config,
        &f,
        std::future::pending(),
    )
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("unsupported (0x80004001): person `me` has no `sync` accounts"),
        "{err}"
    );
}

#[tokio::test]
async fn watch_of_a_person_shows_its_snapshot_then_each_decision_once() {
    let (_dir, config) = setup("");
    let (f, desktop, _p) = factory(signed_in(), vec![Observation::Synced]);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let out = Shared::default();
    let watching = run_with(
        &["watch", "me", "--json"],
        &config,
        &f,
        async move {
            let _ = stop_rx.await;
        },
        out.clone(),
    );
    let until = |what: &'static str| {
        let out = out.clone();
        async move {
            tokio::time::timeout(LIMIT, async {
                while !out.text().contains(what) {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
            .await
            .unwrap_or_else(|_| panic!("no {what} within {LIMIT:?}: {}", out.text()));
        }
    };
    let change = async move {
        until("\"snapshot\"").await;
        desktop.send([Observation::presence(
            "a",
            Status::with_message(Availability::Busy, "focus"),
        )]);
        until("\"status_changed\"").await;
        let _ = stop_tx.send(());
    };
    let ((code, out, err), ()) = tokio::join!(watching, change);
    assert_eq!(code, 0, "{err}");
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["snapshot", "status_changed"], "{out}");
    assert!(events.iter().all(|e| e["account"] == "me"));
    assert_eq!(
        events[1]["to"],
        serde_json::json!({"availability": "busy", "message": "focus"})
    );
    assert_eq!(
        events[1]["decided_by"],
        serde_json::json!({"rule": "user", "account": "desktop"})
    );
}
