//! `imstatus serve` with `[mqtt]` against a real mosquitto: the real binary publishes
//! `online`, and when it is killed with `kill -9` the broker publishes its last will,
//! `offline`. (Discovery payloads, state topics, birth messages and reconnects are tested in
//! the gateway crate.)

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use imstatus_testkit::mosquitto::Mosquitto;
use imstatus_testkit::{free_port, wait_until};

const STEP: Duration = Duration::from_secs(10);

fn config(dir: &Path, broker: &Mosquitto) -> std::path::PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[[account]]\nname = \"desktop\"\nsource = \"purple\"\nbus = \"unix:path={}/no-bus\"\n\n\
             [serve]\nlisten = \"127.0.0.1:{}\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\n",
            dir.display(),
            free_port(),
            broker.port()
        ),
    )
    .expect("write config");
    path
}

/// Starts `imstatus serve` publishing to `broker`; waits for it to announce itself online.
fn serve(dir: &Path, broker: &Mosquitto) -> (Child, imstatus_testkit::Result<String>) {
    let imstatus = Command::new(env!("CARGO_BIN_EXE_imstatus"))
        .env("XDG_CONFIG_HOME", "/nonexistent-imstatus-test")
        .arg("--config")
        .arg(config(dir, broker))
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn imstatus serve");
    let online = wait_until("imstatus/status = online", STEP, || {
        broker.retained("imstatus/status").filter(|s| s == "online")
    });
    (imstatus, online)
}

#[test]
fn kill_9_of_imstatus_makes_the_broker_publish_offline() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut imstatus, online) = serve(dir.path(), &broker);
    let running = wait_until("the running topic of the account", STEP, || {
        broker.retained("imstatus/desktop/running")
    });
    imstatus.kill().expect("kill -9");
    let _ = imstatus.wait();
    let offline = wait_until("the last will: imstatus/status = offline", STEP, || {
        broker
            .retained("imstatus/status")
            .filter(|s| s == "offline")
    });
    online.expect("imstatus announced itself online");
    assert_eq!(
        running.expect("state published"),
        "OFF",
        "no client on that bus"
    );
    offline.expect("the broker published the last will");
}

#[test]
fn sigterm_publishes_offline_itself_and_exits_0() {
    let broker = Mosquitto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut imstatus, online) = serve(dir.path(), &broker);
    let pid = nix::unistd::Pid::from_raw(i32::try_from(imstatus.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let exited = wait_until("imstatus to exit", Duration::from_secs(15), || {
        imstatus.try_wait().ok().flatten()
    });
    if exited.is_err() {
        let _ = imstatus.kill();
        let _ = imstatus.wait();
    }
    online.expect("online first");
    assert_eq!(exited.expect("exited").code(), Some(0));
    assert_eq!(
        broker.retained("imstatus/status").as_deref(),
        Some("offline")
    );
}
