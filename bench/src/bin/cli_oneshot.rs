//! Wall time of the real `imstatus status` binary, process start to exit, against a real finch
//! on a private bus and a real Prosody (plaintext, loopback). Prints p50/p99 of 30 runs each;
//! checks only that the answers are right.
//!
//! ```sh
//! cargo build --release -p imstatus && cargo build --release -p imstatus-bench --bins
//! target/release/cli_oneshot [--imstatus PATH] [--runs N]
//! ```
//!
//! `--imstatus` defaults to the `imstatus` next to this program (the same target directory).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use imstatus_bench::args::Args;
use imstatus_bench::stats::ms;
use imstatus_bench::{fail, OrFail};
use imstatus_testkit::{DbusDaemon, Finch, Prosody, ProsodyOptions};

fn measure(imstatus: &Path, runs: usize, what: &str, config: &Path) {
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new(imstatus)
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .arg("--config")
            .arg(config)
            .arg("status")
            .stdin(Stdio::null())
            .output()
            .or_fail("running imstatus");
        samples.push(t.elapsed());
        if !out.status.success() {
            fail(format_args!("{what}: imstatus status failed: {out:?}"));
        }
    }
    samples.sort();
    println!(
        "{what}: {runs} runs, p50 {} ms, p99 {} ms",
        ms(&samples, 50.0),
        ms(&samples, 99.0)
    );
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).or_fail(format_args!("writing {}", path.display()));
}

fn main() {
    let args = Args::from_env(&[]);
    args.only(&["--imstatus", "--runs"]);
    let imstatus = args.imstatus();
    let runs: usize = args.value("--runs", 30);
    // Declared before finch, so that finch is stopped first.
    let prosody = Prosody::start(ProsodyOptions::default()).or_fail("Prosody");
    let bus = DbusDaemon::start().or_fail("dbus-daemon");
    let finch = Finch::start(&bus, &[prosody.finch_account("alice", "alicepw")]).or_fail("finch");
    finch
        .wait_signed_in(Duration::from_secs(10))
        .or_fail("finch signing in");
    let dir = tempfile::tempdir().or_fail("a temporary directory");

    let purple = dir.path().join("purple.toml");
    write(
        &purple,
        &format!(
            "[[account]]\nname = \"desktop\"\nsource = \"purple\"\nbus = \"{}\"\n",
            bus.address()
        ),
    );
    measure(
        &imstatus,
        runs,
        "imstatus status, purple account (finch signed in)",
        &purple,
    );

    let pw = dir.path().join("alice.pw");
    write(&pw, "alicepw\n");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).or_fail("chmod 600");
    let xmpp = dir.path().join("xmpp.toml");
    write(
        &xmpp,
        &format!(
            "[[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             password_file = \"{}\"\nserver = \"127.0.0.1:{}\"\ntls = \"insecure-plaintext\"\n",
            pw.display(),
            prosody.port()
        ),
    );
    measure(
        &imstatus,
        runs,
        "imstatus status, xmpp account (login + census barrier, plaintext, visible)",
        &xmpp,
    );
}
