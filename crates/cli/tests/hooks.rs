//! `watch --exec`: order, environment, failure, timeout, and no shell injection.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use imstatus::Cli;
use imstatus_core::{Availability, Observation, SourceKind, Status};
use imstatus_hub::testing::{scripted, Script, ScriptedFactory};
use imstatus_hub::Source;

const LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Default)]
struct Buffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Buffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Runs `watch --exec HOOK [extra]` against a scripted source fed `feed` after the snapshot,
/// until `done` holds (or the test's limit).
async fn watch_with_hook(
    dir: &Path,
    hook: &str,
    extra: &[&str],
    feed: Vec<Vec<Observation>>,
    done: impl Fn(&str) -> bool + Send + 'static,
) -> (u8, String) {
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "[[account]]\nname = \"desk\"\nsource = \"purple\"\n",
    )
    .expect("config");
    let (source, script): (_, Script) = scripted(
        SourceKind::new_static("purple"),
        vec![Observation::ClientAppeared, Observation::Synced],
    );
    let factory = ScriptedFactory::new(
        SourceKind::new_static("purple"),
        [source as Arc<dyn Source>],
    );
    let mut argv = vec![
        "imstatus".to_owned(),
        "--config".into(),
        config.display().to_string(),
        "watch".into(),
        "--exec".into(),
        hook.into(),
    ];
    argv.extend(extra.iter().map(|s| (*s).to_owned()));
    let cli = Cli::try_parse_from(argv).expect("args");
    let out = Buffer::default();
    let err = Buffer::default();
    let started = out.clone();
    let feeder = tokio::spawn(async move {
        while started.text().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for batch in feed {
            script.send(batch);
        }
    });
    let stderr = err.clone();
    let stop = async move {
        while !done(&stderr.text()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (mut o, mut e) = (out.clone(), err.clone());
    let code = tokio::time::timeout(LIMIT, imstatus::run(cli, &[&factory], &mut o, &mut e, stop))
        .await
        .expect("watch ends");
    feeder.await.expect("feeder");
    (code, err.text())
}

fn presence(a: Availability, msg: &str) -> Observation {
    Observation::presence("a", Status::with_message(a, msg))
}

#[tokio::test]
async fn hooks_run_once_per_event_in_order_with_the_state_in_the_environment() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log: PathBuf = dir.path().join("log");
    let hook = format!(
        "printf '%s|%s|%s|%s|%s|%s|%s\\n' \"$IMSTATUS_SEQ\" \"$IMSTATUS_EVENT\" \"$IMSTATUS_ACCOUNT\" \
         \"$IMSTATUS_AVAILABILITY\" \"$IMSTATUS_MESSAGE\" \"$IMSTATUS_SIGNED_IN\" \"$IMSTATUS_MISTATUS\" >> '{}'",
        log.display()
    );
    let watched = log.clone();
    let (code, err) = watch_with_hook(
        dir.path(),
        &hook,
        &[],
        vec![
            vec![presence(Availability::Away, "lunch")],
            vec![presence(Availability::Busy, "call")],
        ],
        move |_| lines(&watched).len() >= 6,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let got = lines(&log);
    let events: Vec<&str> = got
        .iter()
        .map(|l| l.split('|').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(
        events,
        [
            "snapshot",
            "signed_in",
            "status_changed",
            "resource_changed",
            "status_changed",
            "resource_changed",
        ]
    );
    let seqs: Vec<u64> = got[1..]
        .iter()
        .filter_map(|l| l.split('|').next()?.parse().ok())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert!(got[2].ends_with("|desk|away|lunch|1|34"), "{}", got[2]);
    assert!(got[4].ends_with("|desk|busy|call|1|10"), "{}", got[4]);
}

#[tokio::test]
async fn a_status_message_cannot_inject_shell_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pwned = dir.path().join("pwned");
    let log = dir.path().join("log");
    let hook = format!(
        "printf '%s\\n' \"$IMSTATUS_MESSAGE\" >> '{}'",
        log.display()
    );
    let message = format!("$(touch {}) `touch {}`", pwned.display(), pwned.display());
    let watched = log.clone();
    let (code, _) = watch_with_hook(
        dir.path(),
        &hook,
        &[],
        vec![vec![presence(Availability::Away, &message)]],
        move |_| lines(&watched).iter().any(|l| l.contains("touch")),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        lines(&log).contains(&message),
        "the message arrives verbatim"
    );
    assert!(!pwned.exists(), "nothing in the message was executed");
}

#[tokio::test]
async fn a_failing_hook_is_reported_and_the_watch_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hook = "exit 3";
    let (code, err) = watch_with_hook(
        dir.path(),
        hook,
        &[],
        vec![vec![presence(Availability::Away, "x")]],
        // Stop once the failure of the status_changed run is reported, not when the hook has
        // merely written its line: the report comes after the hook exits.
        move |err: &str| err.contains("for event status_changed"),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        err.contains("--exec exited with 3 for event snapshot of desk"),
        "{err}"
    );
    assert!(
        err.contains("--exec exited with 3 for event status_changed"),
        "{err}"
    );
}

#[tokio::test]
async fn a_hanging_hook_is_killed_after_its_timeout_and_the_watch_goes_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("log");
    // The first run hangs (with a child of its own); later runs return at once.
    let marker = dir.path().join("hung-once");
    let child_pid = dir.path().join("child.pid");
    let hook = format!(
        "echo \"$IMSTATUS_EVENT\" >> '{log}'; if [ ! -e '{m}' ]; then touch '{m}'; \
         sleep 60 & echo $! > '{p}'; wait; fi",
        log = log.display(),
        m = marker.display(),
        p = child_pid.display()
    );
    let watched = log.clone();
    let started = std::time::Instant::now();
    let (code, err) = watch_with_hook(
        dir.path(),
        &hook,
        &["--exec-timeout", "300ms"],
        vec![vec![presence(Availability::Away, "x")]],
        move |_| lines(&watched).iter().any(|l| l == "status_changed"),
    )
    .await;
    assert_eq!(code, 0);
    assert!(
        err.contains("--exec ran past 300ms for event snapshot of desk (seq")
            && err.contains("killed it"),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not held up by the hung hook"
    );
    // The hook's own child went with it: the whole process group was killed.
    let pid: u32 = std::fs::read_to_string(&child_pid)
        .expect("the hung hook wrote its child's pid")
        .trim()
        .parse()
        .expect("a pid");
    let gone = imstatus_testkit::wait_until("the hook's child to be gone", LIMIT, || {
        (!imstatus_testkit::pid_alive(pid)).then_some(())
    });
    assert!(gone.is_ok(), "sleep {pid} survived its hook");
}
