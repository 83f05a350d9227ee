//! The real `imstatus` binary: config errors, exit codes, a bus with no client, closed stdout.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn imstatus() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_imstatus"));
    // Never pick up the developer's own config or session bus.
    c.env_remove("IMSTATUS_CONFIG")
        .env("XDG_CONFIG_HOME", "/nonexistent-imstatus-test")
        .env(
            "DBUS_SESSION_BUS_ADDRESS",
            "unix:path=/nonexistent-imstatus-test/bus",
        )
        .stdin(Stdio::null());
    c
}

fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

/// A purple account on a bus that does not exist.
fn missing_bus_config(dir: &Path) -> PathBuf {
    write_config(
        dir,
        &format!(
            "[[account]]\nname = \"desktop\"\nsource = \"purple\"\nbus = \"unix:path={}/no-such-bus\"\n",
            dir.display()
        ),
    )
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("run imstatus")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn unknown_key_exits_2_naming_the_key_and_line() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "[[account]]\nname = \"desktop\"\nsource = \"purple\"\nbuss = \"unix:path=/x\"\n",
    );
    let out = run(imstatus().arg("--config").arg(&cfg).arg("status"));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{}:4: unknown key `buss`", cfg.display())),
        "{err}"
    );
}

#[test]
fn config_from_the_environment_and_missing_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(dir.path(), "[[account]]\nname = \"x\"\nsource = \"aim\"\n");
    let out = run(imstatus().env("IMSTATUS_CONFIG", &cfg).arg("status"));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains(":3: key `source`: unknown source `aim`"));

    let out = run(imstatus().args(["--config", "/nonexistent/imstatus.toml", "status"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/nonexistent/imstatus.toml"));
}

#[test]
fn password_file_readable_by_others_exits_2() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("alice.pw");
    std::fs::write(&pw, "alicepw\n").expect("write");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
    );
    let out = run(imstatus().arg("--config").arg(&cfg).arg("status"));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("readable by group or others (mode 0640)"),
        "{err}"
    );
    assert!(!err.contains("alicepw"), "never print the password");
}

#[test]
fn bad_usage_exits_2() {
    let out = run(imstatus().args(["wait", "online"]));
    assert_eq!(out.status.code(), Some(2));
    let out = run(imstatus().args(["set", "sleepy"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn purple_account_on_a_bus_that_does_not_exist_exits_4_with_code_and_hint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = missing_bus_config(dir.path());
    let start = Instant::now();
    let out = run(imstatus().arg("--config").arg(&cfg).arg("status"));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("client_not_running (0x80040111)"), "{err}");
    assert!(err.contains("hint: start Pidgin or Finch"), "{err}");
    assert!(start.elapsed() < Duration::from_secs(5), "answers at once");
}

#[test]
fn zero_config_uses_the_session_bus() {
    // No config anywhere: the default purple account on $DBUS_SESSION_BUS_ADDRESS (missing).
    let out = run(imstatus().arg("status"));
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("purple "),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn wait_times_out_with_124_after_about_the_timeout() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = missing_bus_config(dir.path());
    let start = Instant::now();
    let out =
        run(imstatus()
            .arg("--config")
            .arg(&cfg)
            .args(["wait", "signed-in", "--timeout", "1s"]));
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(124), "{}", text(&out.stderr));
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "{took:?}"
    );
}

#[test]
fn watch_json_ends_with_0_when_stdout_closes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = missing_bus_config(dir.path());
    let mut child = imstatus()
        .arg("--config")
        .arg(&cfg)
        .args(["watch", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("one line");
    // The reader is dropped here, as `head -1` exits.
    let v: serde_json::Value = serde_json::from_str(&first).expect("json");
    assert_eq!(v["event"], "snapshot");
    assert_eq!(v["client"], "not_running");
    let status = imstatus_testkit::wait_until("watch to exit", Duration::from_secs(10), || {
        child.try_wait().ok().flatten()
    });
    let Ok(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("watch did not end after its stdout closed");
    };
    assert_eq!(status.code(), Some(0));
}

#[test]
fn completions_are_valid_shell_and_need_no_config() {
    for shell in ["bash", "zsh", "fish"] {
        let out = run(imstatus().args(["completions", shell]));
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(text(&out.stdout).contains("imstatus"), "{shell}");
    }
    // bash parses its script without errors.
    let script = run(imstatus().args(["completions", "bash"])).stdout;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("imstatus.bash");
    std::fs::write(&path, script).expect("write");
    let check = run(Command::new("bash").arg("-n").arg(&path));
    assert!(check.status.success(), "{}", text(&check.stderr));
}

#[test]
fn man_page_is_roff_generated_from_the_cli_definition() {
    let out = run(imstatus().arg("man"));
    assert_eq!(out.status.code(), Some(0));
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH imstatus"),
        "{page}"
    );
    for command in ["status", "watch", "wait", "set", "contacts", "doctor"] {
        assert!(page.contains(command), "the page lists `{command}`");
    }
}

/// One HTTP/1.1 GET over a plain socket; returns the whole response.
fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

#[test]
fn serve_answers_on_loopback_and_drains_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = imstatus_testkit::free_port();
    let cfg = write_config(
        dir.path(),
        &format!(
            "[[account]]\nname = \"desktop\"\nsource = \"purple\"\nbus = \"unix:path={}/no-bus\"\n\n[serve]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path().display()
        ),
    );
    let mut child = imstatus()
        .arg("--config")
        .arg(&cfg)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let health =
        imstatus_testkit::wait_until("the gateway to answer", Duration::from_secs(10), || {
            http_get(port, "/healthz").ok()
        });
    // The source reports the missing client once it has tried the bus: poll for that answer.
    let accounts = imstatus_testkit::wait_until(
        "the account to say its client is not running",
        Duration::from_secs(10),
        || {
            http_get(port, "/v1/accounts/desktop")
                .ok()
                .filter(|a| a.contains("\"client\":\"not_running\""))
        },
    );
    // SIGTERM: a graceful drain, exit 0.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = imstatus_testkit::wait_until("serve to exit", Duration::from_secs(15), || {
        child.try_wait().ok().flatten()
    });
    if status.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let health = health.expect("healthz answered");
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let accounts = accounts.expect("account answered");
    assert!(accounts.starts_with("HTTP/1.1 200"), "{accounts}");
    assert!(
        accounts.contains("\"client\":\"not_running\""),
        "{accounts}"
    );
    assert_eq!(status.expect("exited").code(), Some(0));
    // The start-up line says who may do what: without tokens, read-only by default.
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    assert!(
        err.contains(&format!(
            "imstatus: serving 1 account(s) on http://127.0.0.1:{port}/ (loopback only, no tokens, read-only)"
        )),
        "{err}"
    );
}

#[test]
fn serve_refuses_a_public_address_without_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = write_config(
        dir.path(),
        "[[account]]\nname = \"desktop\"\nsource = \"purple\"\n\n[serve]\nlisten = \"0.0.0.0:8470\"\n",
    );
    let out = run(imstatus().arg("--config").arg(&cfg).arg("serve"));
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("refusing to serve on 0.0.0.0:8470 without tokens"),
        "{err}"
    );
}
