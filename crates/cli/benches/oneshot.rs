//! `cargo bench -p imstatus --bench oneshot`: wall time of the real `imstatus status` binary,
//! process start to exit, against a real finch on a private bus and a real Prosody (plaintext,
//! loopback). Prints p50/p99 of 30 runs each; asserts only that the answers are right.

#![allow(missing_docs, clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imstatus_testkit::{DbusDaemon, Finch, Prosody, ProsodyOptions};

const RUNS: usize = 30;

fn measure(what: &str, config: &Path, expect_code: i32) {
    let mut samples = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        let out = Command::new(env!("CARGO_BIN_EXE_imstatus"))
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .arg("--config")
            .arg(config)
            .arg("status")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        samples.push(t.elapsed());
        assert_eq!(out.status.code(), Some(expect_code), "{what}: {out:?}");
    }
    samples.sort();
    let pct = |p: usize| samples[(samples.len() * p / 100).min(samples.len() - 1)];
    println!(
        "{what}: {RUNS} runs, p50 {:.1} ms, p99 {:.1} ms",
        pct(50).as_secs_f64() * 1e3,
        pct(99).as_secs_f64() * 1e3
    );
}

fn main() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let bus = DbusDaemon::start().unwrap();
    let finch = Finch::start(&bus, &[prosody.finch_account("alice", "alicepw")]).unwrap();
    finch.wait_signed_in(Duration::from_secs(10)).unwrap();
    let dir = tempfile::tempdir().unwrap();

    let purple = dir.path().join("purple.toml");
    std::fs::write(
        &purple,
        format!(
            "[[account]]\nname = \"desktop\"\nsource = \"purple\"\nbus = \"{}\"\n",
            bus.address()
        ),
    )
    .unwrap();
    measure(
        "imstatus status, purple account (finch signed in)",
        &purple,
        0,
    );

    let pw = dir.path().join("alice.pw");
    std::fs::write(&pw, "alicepw\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    let xmpp = dir.path().join("xmpp.toml");
    std::fs::write(
        &xmpp,
        format!(
            "[[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             password_file = \"{}\"\nserver = \"127.0.0.1:{}\"\ntls = \"insecure-plaintext\"\n",
            pw.display(),
            prosody.port()
        ),
    )
    .unwrap();
    measure(
        "imstatus status, xmpp account (login + census barrier, plaintext, visible)",
        &xmpp,
        0,
    );
}
