//! `scripts/demo.sh`: imstatus watching a real finch (libpurple) on a private D-Bus, signed in
//! to a real private Prosody on loopback, and the desktop's microphone on a private PulseAudio
//! (its own runtime dir, a null source) that a real `parecord` captures from; then the same
//! account on a real 3-node NATS JetStream cluster (two `serve --role watcher`, one
//! `--role gateway`), with `kill -9` of the watcher that owns it. Everything it starts is
//! stopped by PID at the end.
//!
//! The steps wait for the events they cause (with deadlines); the short pauses between steps
//! are only there so a person can read along.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;
use imstatus_testkit::{
    free_port, http_get as get, wait_until_async, DbusDaemon, Finch, NatsCluster, Prosody,
    ProsodyOptions, PulseAudio, ServeProcess, XmppClient,
};

/// Stdout that the demo can also read back, to wait for events.
#[derive(Clone, Default)]
struct Tee(Arc<Mutex<Vec<u8>>>);

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        std::io::stdout().write_all(buf)?;
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

impl Tee {
    fn text(&self) -> String {
        self.0
            .lock()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

fn say(what: &str) {
    println!("\n\x1b[1m# {what}\x1b[0m");
}

impl Tee {
    fn count(&self, needle: &str) -> usize {
        self.text().matches(needle).count()
    }
}

/// Waits (15 s at most) until the watch output shows `needle` more than `before` times.
async fn shown(out: &Tee, needle: &str, before: usize) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while out.count(needle) <= before {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no `{needle}` within 15 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Let a person read it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    Ok(())
}

/// Does `action`, then waits until the watch output shows `needle` once more.
async fn step<T>(
    out: &Tee,
    needle: &str,
    action: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let before = out.count(needle);
    let value = action()?;
    shown(out, needle, before).await?;
    Ok(value)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    say(
        "starting a private Prosody (with privacy lists) on 127.0.0.1, a private D-Bus and a \
         private PulseAudio",
    );
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists())?;
    let bus = DbusDaemon::start()?;
    let pulse = PulseAudio::start()?;
    println!(
        "prosody on 127.0.0.1:{}, bus {}, PulseAudio (null source `mic`) at {}",
        prosody.port(),
        bus.address(),
        pulse.server()
    );

    let dir = tempfile::tempdir()?;
    // Three accounts: finch on the private bus; alice's XMPP account, watched from its own
    // resource (priority -1, hidden from her contacts by a privacy list) so that it sees her
    // other clients — finch among them; and the desktop's microphone on the private PulseAudio.
    // And the person `me` of finch and alice, with the desktop's signals: one answer for both.
    let password = dir.path().join("alice.pw");
    std::fs::write(&password, "alicepw\n")?;
    std::fs::set_permissions(
        &password,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[[account]]\nname = \"finch\"\nsource = \"purple\"\nbus = \"{bus}\"\n\n\
             [[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             password_file = \"{pw}\"\nserver = \"127.0.0.1:{port}\"\ntls = \"insecure-plaintext\"\n\n\
             [[account]]\nname = \"desk\"\nsource = \"desktop\"\nmicrophone = true\n\
             pulse_server = \"{pulse}\"\n\n\
             [[person]]\nname = \"me\"\naccounts = [\"finch\", \"alice\"]\nsignals = \"desk\"\n",
            bus = bus.address(),
            pw = password.display(),
            port = prosody.port(),
            pulse = pulse.server(),
        ),
    )?;
    println!(
        "config {}:\n{}",
        config.display(),
        std::fs::read_to_string(&config)?
    );

    say(&format!("imstatus --config {} watch", config.display()));
    let out = Tee::default();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watch = {
        let mut out = out.clone();
        let config = config.clone();
        tokio::spawn(async move {
            let cli = imstatus::Cli::parse_from([
                "imstatus",
                "--config",
                config.to_str().unwrap_or_default(),
                "watch",
            ]);
            let mut err = std::io::stderr();
            imstatus::run(
                cli,
                &imstatus::sources::factories(),
                &mut out,
                &mut err,
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        })
    };
    step(&out, "client not_running", || Ok(())).await?;

    say("starting finch (alice@example.test/finch) in tmux");
    let mut finch = step(&out, "signed in", || {
        Ok(Finch::start(
            &bus,
            &[prosody.finch_account("alice", "alicepw")],
        )?)
    })
    .await?;

    say("alice also signs in on her phone (another XMPP client, priority -1)");
    let mut phone = step(&out, "resource phone", || {
        let mut phone =
            XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", "phone")?;
        phone.presence(None, None, Some(-1))?;
        Ok(phone)
    })
    .await?;

    say("finch: status Away, \"lunch\" (through libpurple's D-Bus API)");
    step(&out, "lunch", || Ok(finch.set_status(5, Some("lunch"))?)).await?;

    say("imstatus set busy --message \"in a call\"");
    let cli = imstatus::Cli::parse_from([
        "imstatus",
        "--config",
        config.to_str().unwrap_or_default(),
        "set",
        "--account",
        "finch",
        "busy",
        "--message",
        "in a call",
    ]);
    let before = out.count("in a call");
    let code = imstatus::run(
        cli,
        &imstatus::sources::factories(),
        &mut std::io::stdout(),
        &mut std::io::stderr(),
        std::future::pending(),
    )
    .await;
    println!("(exit {code})");
    shown(&out, "in a call", before).await?;
    let seen = phone.read_until("<show>dnd</show>", Duration::from_secs(10))?;
    println!(
        "alice's phone received: {}",
        seen.lines().last().unwrap_or_default().trim()
    );

    say("the call starts: parecord captures from the microphone (the private PulseAudio's `mic`)");
    // The desk shows the microphone on, then the person `me` busy "In a call" and why.
    let mut call = step(&out, "decided by call (desk: microphone)", || {
        Ok(pulse.record("mic")?)
    })
    .await?;

    say("the call ends: parecord stops");
    step(&out, "microphone off", || Ok(call.stop()?)).await?;

    say("quitting finch (Alt-q)");
    step(&out, "client shut down", || Ok(finch.quit()?)).await?;

    say("starting finch again, then kill -9");
    step(&out, "signed in", || Ok(finch.restart()?)).await?;
    step(&out, "client shut down", || {
        finch.kill9();
        Ok(())
    })
    .await?;

    say("alice signs off on her phone: her last client");
    step(&out, "alice      signed out", || Ok(phone.close()?)).await?;

    let _ = stop_tx.send(());
    let _ = watch.await;
    drop(call);
    drop(finch);
    drop(bus);
    drop(pulse);

    cluster(&prosody, dir.path(), &password).await?;
    say("done; stopping everything by PID");
    drop(prosody);
    Ok(())
}

/// The `imstatus` binary beside this example's directory (`scripts/demo.sh` builds it).
fn imstatus_binary() -> anyhow::Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    exe.parent()
        .and_then(std::path::Path::parent)
        .map(|d| d.join("imstatus"))
        .filter(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("no imstatus binary beside {}", exe.display()))
}

/// Waits (20 s at most, the testkit's poll) until the gateway shows alice's message
/// `message`; prints the line.
async fn gateway_shows(port: u16, message: &str) -> anyhow::Result<()> {
    let v = wait_until_async(&format!("the gateway to show \"{message}\""), STEP, || {
        let body = get(port, "/v1/accounts/alice")?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        (v["session"] == "signed_in" && v["message"] == message).then_some(v)
    })
    .await?;
    println!(
        "gateway: alice signed_in {} \"{message}\"",
        v["availability"].as_str().unwrap_or("")
    );
    Ok(())
}

/// How long the cluster part waits for one step.
const STEP: Duration = Duration::from_secs(20);

/// The watcher pid holding alice's shard, from the gateway's `/metrics`.
fn owner(port: u16) -> Option<u32> {
    let metrics = get(port, "/metrics")?;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("imstatus_cluster_leases{watcher=\"") && l.ends_with("} 1"))?;
    let id = line.split('"').nth(1)?;
    id.rsplit('-').nth(1)?.parse().ok()
}

/// The same account on a cluster: a real 3-node NATS JetStream cluster on 127.0.0.1, two
/// `serve --role watcher` processes and a `serve --role gateway`; `kill -9` of the watcher
/// that owns alice, and the other takes her over.
async fn cluster(
    prosody: &Prosody,
    dir: &std::path::Path,
    password: &std::path::Path,
) -> anyhow::Result<()> {
    say("the same alice on a cluster: a 3-node NATS JetStream on 127.0.0.1, two watchers, one gateway");
    let nats = tokio::task::spawn_blocking(|| NatsCluster::start(3)).await??;
    let http = free_port();
    let config = dir.join("cluster.toml");
    std::fs::write(
        &config,
        format!(
            "[[account]]\nname = \"alice\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             password_file = \"{pw}\"\nserver = \"127.0.0.1:{port}\"\ntls = \"insecure-plaintext\"\n\n\
             [serve]\nlisten = \"127.0.0.1:{http}\"\n\n\
             [cluster]\nurl = \"{urls}\"\nname = \"demo\"\nlease = \"2s\"\n",
            pw = password.display(),
            port = prosody.port(),
            urls = nats.urls(),
        ),
    )?;
    println!(
        "config {}:\n{}",
        config.display(),
        std::fs::read_to_string(&config)?
    );
    let imstatus = imstatus_binary()?;
    let gateway = ServeProcess::start(&imstatus, &config, "gateway", dir.join("gateway.log"))?;
    let mut watchers = [
        ServeProcess::start(&imstatus, &config, "watcher", dir.join("w1.log"))?,
        ServeProcess::start(&imstatus, &config, "watcher", dir.join("w2.log"))?,
    ];
    println!(
        "imstatus serve --role gateway (pid {}) on http://127.0.0.1:{http}/; \
         imstatus serve --role watcher (pids {} and {})",
        gateway.pid(),
        watchers[0].pid(),
        watchers[1].pid()
    );
    say("alice's desk: away, \"at the cluster\"");
    let mut desk = XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", "desk")?;
    desk.presence(Some("away"), Some("at the cluster"), Some(5))?;
    gateway_shows(http, "at the cluster").await?;
    let held = wait_until_async("an owner in /metrics", STEP, || owner(http)).await?;
    println!("gateway /metrics: watcher pid {held} holds alice's shard");

    say(&format!(
        "kill -9 {held} (the owner); alice's desk: busy, \"after the kill\""
    ));
    let victim = watchers
        .iter_mut()
        .find(|w| w.pid() == held)
        .ok_or_else(|| anyhow::anyhow!("the owner {held} is not one of the watchers"))?;
    victim.kill();
    let killed = std::time::Instant::now();
    desk.presence(Some("dnd"), Some("after the kill"), Some(5))?;
    gateway_shows(http, "after the kill").await?;
    let took = killed.elapsed();
    // The gateway reads the leases every lease/3.
    let now = wait_until_async("a new owner in /metrics", STEP, || {
        owner(http).filter(|&p| p != held)
    })
    .await?;
    println!(
        "the gateway showed it {:.1} s after the kill (lease 2 s); /metrics: watcher pid {now} holds alice's shard",
        took.as_secs_f64()
    );
    desk.close()?;
    drop(watchers);
    drop(gateway);
    Ok(())
}
