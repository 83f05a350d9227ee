//! Takeover time over many kills, with real processes: a 3-node JetStream cluster and a
//! Prosody on 127.0.0.1, one `imstatus serve --role gateway` and two `--role watcher` with
//! one XMPP account, a 2 s lease. Each round `kill -9`s the watcher that owns the account,
//! has the account's other XMPP client send a new status at once, and times how long until
//! the gateway's `GET /v1/accounts/alice` shows it (polled every 5 ms); then starts a new
//! standby watcher for the next round. Prints the distribution.
//!
//! ```sh
//! cargo build --release -p imstatus && cargo build --release -p imstatus-bench --bins
//! target/release/cluster_takeover [--imstatus PATH] [--kills N]     # default 20
//! ```
//!
//! `--imstatus` defaults to the `imstatus` next to this program. Needs Prosody and
//! `nats-server` 2.15.1 (scripts/lib.sh).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use imstatus_bench::args::Args;
use imstatus_bench::stats::ms;
use imstatus_bench::{fail, OrFail};
use imstatus_testkit::{
    free_port, http_get as get, NatsCluster, Prosody, ProsodyOptions, ServeProcess, XmppClient,
};

/// The lease (the shortest the config accepts).
const LEASE: Duration = Duration::from_secs(2);
/// How long one step may take before the run is abandoned.
const STEP: Duration = Duration::from_secs(30);

/// The message of alice's status on the gateway, when signed in.
fn shown(http: u16) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(&get(http, "/v1/accounts/alice")?).ok()?;
    let v = v.get("snapshot").unwrap_or(&v);
    (v["session"] == "signed_in").then(|| v["message"].as_str().unwrap_or("").to_owned())
}

/// Polls `f` every 5 ms until it gives a value, or fails after [`STEP`].
fn wait<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + STEP;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() > deadline {
            fail(format_args!("{what}: not within {STEP:?}"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn main() {
    let args = Args::from_env(&[]);
    args.only(&["--imstatus", "--kills"]);
    let imstatus = args.imstatus();
    let kills: usize = args.value("--kills", 20);
    let nats = NatsCluster::start(3).or_fail("a 3-node NATS cluster");
    let prosody = Prosody::start(ProsodyOptions::default()).or_fail("Prosody");
    let dir = tempfile::tempdir().or_fail("a temporary directory");
    let http = free_port();
    let pw = dir.path().join("alice.pw");
    std::fs::write(&pw, "alicepw\n").or_fail("writing the password file");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).or_fail("chmod");
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             password_file = \"{}\"\nserver = \"127.0.0.1:{}\"\ntls = \"insecure-plaintext\"\n\
             [serve]\nlisten = \"127.0.0.1:{http}\"\n\
             [cluster]\nurl = \"{}\"\nname = \"takeover\"\nshards = 4\nlease = \"{}s\"\n",
            pw.display(),
            prosody.port(),
            nats.urls(),
            LEASE.as_secs()
        ),
    )
    .or_fail("writing the config");
    let log = |name: String| dir.path().join(format!("{name}.log"));
    let _gateway = ServeProcess::start(&imstatus, &config, "gateway", log("gateway".into()))
        .or_fail("the gateway");
    let mut watchers = [
        ServeProcess::start(&imstatus, &config, "watcher", log("w0".into())).or_fail("a watcher"),
        ServeProcess::start(&imstatus, &config, "watcher", log("w1".into())).or_fail("a watcher"),
    ];
    let mut desk = XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", "desk")
        .or_fail("alice's desk client");
    desk.presence(Some("away"), Some("k0"), Some(5))
        .or_fail("presence");
    wait("the gateway to show k0", || {
        (shown(http).as_deref() == Some("k0")).then_some(())
    });
    eprintln!("cluster_takeover: {kills} kills, lease {LEASE:?}");
    let mut samples = Vec::with_capacity(kills);
    for k in 1..=kills {
        let owner = wait("one watcher to own the account", || {
            let owners: Vec<usize> = (0..watchers.len())
                .filter(|&i| watchers[i].log().contains("lease taken"))
                .collect();
            (owners.len() == 1).then(|| owners[0])
        });
        // The standby is up (connected, claiming) before the owner dies.
        let standby = 1 - owner;
        wait("the standby to start", || {
            watchers[standby]
                .log()
                .contains("imstatus: watching")
                .then_some(())
        });
        let killed = Instant::now();
        watchers[owner].kill();
        let message = format!("k{k}");
        let show = if k % 2 == 0 { "away" } else { "dnd" };
        desk.presence(Some(show), Some(&message), Some(5))
            .or_fail("presence");
        wait("the standby to take over", || {
            (shown(http).as_deref() == Some(message.as_str())).then_some(())
        });
        let took = killed.elapsed();
        eprintln!("  kill {k}: {} ms", imstatus_bench::stats::millis(took));
        samples.push(took);
        watchers[owner] =
            ServeProcess::start(&imstatus, &config, "watcher", log(format!("w{k}-{owner}")))
                .or_fail("a watcher");
    }
    samples.sort();
    let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap_or(1);
    println!(
        "takeover after kill -9, lease {LEASE:?}, {} kills: min {} ms, p50 {} ms, p90 {} ms, max {} ms, mean {} ms",
        samples.len(),
        ms(&samples, 0.0),
        ms(&samples, 50.0),
        ms(&samples, 90.0),
        ms(&samples, 100.0),
        imstatus_bench::stats::millis(mean)
    );
    let _ = desk.close();
}
