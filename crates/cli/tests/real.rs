//! The real binary against real servers: a private dbus-daemon with and without finch, and a
//! private Prosody. Every process is stopped by PID when its guard drops.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use imstatus_testkit::{DbusArg, DbusDaemon, Finch, Prosody, ProsodyOptions, XmppClient};

const STEP: Duration = Duration::from_secs(10);

fn imstatus(config: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imstatus"));
    c.env_remove("IMSTATUS_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent-imstatus-test")
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null());
    c
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run imstatus")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn purple_config(dir: &Path, bus: &DbusDaemon) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[[account]]\nname = \"desktop\"\nsource = \"purple\"\nbus = \"{}\"\n",
            bus.address()
        ),
    )
    .expect("write config");
    path
}

fn xmpp_config(dir: &Path, port: u16, password: &str) -> PathBuf {
    let pw = dir.join("alice.pw");
    std::fs::write(&pw, format!("{password}\n")).expect("write password");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             password_file = \"{}\"\nserver = \"127.0.0.1:{port}\"\ntls = \"insecure-plaintext\"\n",
            pw.display()
        ),
    )
    .expect("write config");
    path
}

#[test]
fn no_client_on_a_real_bus_exits_4_with_client_not_running() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bus = DbusDaemon::start().expect("dbus-daemon");
    let out = run(imstatus(&purple_config(dir.path(), &bus)).arg("status"));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("client not_running"),
        "{}",
        text(&out.stdout)
    );
    let json = run(imstatus(&purple_config(dir.path(), &bus)).args(["status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["client"], "not_running");
    assert_eq!(v["mistatus"], 1);
}

#[test]
fn set_busy_reaches_finch_and_status_reports_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prosody = Prosody::start(ProsodyOptions::default()).expect("prosody");
    let bus = DbusDaemon::start().expect("dbus-daemon");
    let finch = Finch::start(&bus, &[prosody.finch_account("alice", "alicepw")]).expect("finch");
    finch.wait_signed_in(STEP).expect("finch signed in");
    let config = purple_config(dir.path(), &bus);

    let out = run(imstatus(&config).args(["set", "busy", "--message", "in a call"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "desktop: busy \"in a call\"\n");
    let saved = finch
        .purple_int("PurpleSavedstatusGetCurrent", &[])
        .expect("current saved status");
    let primitive = finch
        .purple_int("PurpleSavedstatusGetType", &[DbusArg::Int(saved)])
        .expect("type");
    let message = finch
        .purple_string("PurpleSavedstatusGetMessage", &[DbusArg::Int(saved)])
        .expect("message");
    assert_eq!((primitive, message.as_str()), (3, "in a call"));

    let out = run(imstatus(&config).arg("status"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("signed_in   busy \"in a call\""),
        "{}",
        text(&out.stdout)
    );

    let out = run(imstatus(&config).arg("doctor"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
}

#[test]
fn xmpp_status_follows_the_users_other_client_and_a_wrong_password_exits_1() {
    let dir = tempfile::tempdir().expect("tempdir");
    let prosody = Prosody::start(ProsodyOptions::default()).expect("prosody");
    let config = xmpp_config(dir.path(), prosody.port(), "alicepw");

    let out = run(imstatus(&config).arg("status"));
    assert_eq!(
        out.status.code(),
        Some(3),
        "nobody online: {}",
        text(&out.stderr)
    );

    let mut desk = XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", "desk")
        .expect("alice's desk client");
    desk.presence(Some("away"), Some("lunch"), Some(5))
        .expect("presence");
    let out = run(imstatus(&config).args(["status", "--json"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["session"], "signed_in");
    assert_eq!(v["availability"], "away");
    assert_eq!(v["message"], "lunch");
    assert_eq!(v["resources"][0]["resource"], "desk");
    assert_eq!(v["resources"][0]["priority"], 5);

    let bad = tempfile::tempdir().expect("tempdir");
    let out = run(imstatus(&xmpp_config(bad.path(), prosody.port(), "wrong")).arg("status"));
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("auth_failed (0x81000303)"), "{err}");
    assert!(!err.contains("wrong"), "the password never appears: {err}");
    desk.close().expect("close");
}
