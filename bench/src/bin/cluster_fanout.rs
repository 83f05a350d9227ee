//! B7 on the cluster: Server-Sent Events fan-out spread over several `imstatus serve --role
//! gateway` processes, side by side in one run with the single process (`gateway_server`) and
//! the floor (`http_floor`, a bare tokio broadcast → SSE server).
//!
//! One run starts a real 3-node JetStream cluster on 127.0.0.1 and, in this process, the
//! watcher role (`imstatus_cluster::run_watcher`) over `--accounts` accounts (default 8, so
//! their batches go out through several shards' publishers) whose sources this process feeds,
//! and B7's control port. Then for each gateway count K of `--gateways` (default `1,2,3`) it
//! starts K gateway processes (release `imstatus`), waits until each shows every account,
//! and runs `sse_fanout` with `--n` subscribers (default 5,000) spread evenly over them while
//! the control port makes `--rate` contact status changes a second (default 1,000) for
//! `--secs` seconds (default 2), each through the watcher's hub → a fenced publish to the
//! stream → every gateway's ordered consumer → its subscribers. The same client then does the
//! same against `gateway_server` (one process, its own hub) and `http_floor`.
//!
//! The figure that carries over to bigger machines is deliveries per second of gateway CPU
//! (deliveries ÷ the gateways' CPU seconds over the flow): on this 2-core machine everything —
//! NATS, the watcher, the gateways, the client — shares two cores, so no cell can deliver
//! 5 M/s; how much one core of gateway does is what sizing needs. The NATS servers' and the
//! watcher's CPU are reported beside it: they grow with the changes, not with the subscribers.
//!
//! ```sh
//! cargo build --release -p imstatus && cargo build --release -p imstatus-bench --bins
//! target/release/cluster_fanout [--n 5000] [--rate 1000] [--secs 2] [--drain 2] [--gateways 1,2,3]
//! ```
//!
//! Needs `nats-server` 2.15.1 (scripts/lib.sh `ensure_nats`). Prints one JSON line per cell
//! (`sse_fanout`'s, with `impl`, `gateways`, `deliveries_per_cpu_s`, `nats_cpu_s`,
//! `watcher_cpu_s` added) and then a table.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use imstatus_bench::args::Args;
use imstatus_bench::hubs::{fed, Feed};
use imstatus_bench::system::{mono_ns, usage};
use imstatus_bench::{fail, serve, OrFail};
use imstatus_cluster::{run_watcher, Cluster, WatcherOptions};
use imstatus_config::ClusterConfig;
use imstatus_core::{AccountId, Availability, ContactId, Observation, PartId, SourceKind, Status};
use imstatus_hub::Source;
use imstatus_testkit::{free_port, http_get as get, wait_until, NatsCluster, ServeProcess};

/// Contacts per account (as `gateway_server --contacts 50` in B7).
const CONTACTS: usize = 50;
/// How long a server may take to come up and show every account.
const START: Duration = Duration::from_secs(60);

struct Opts {
    n: usize,
    rate: u64,
    secs: f64,
    drain: f64,
    gateways: Vec<usize>,
    accounts: usize,
}

fn contact(i: usize) -> ContactId {
    ContactId::new(format!("c{i:04}@example.test"))
}

/// Signed in, away, with [`CONTACTS`] contacts, synced.
fn initial() -> Vec<Observation> {
    let mut obs = vec![Observation::Presence {
        part: PartId::new("desk"),
        status: Status::with_message(Availability::Away, "lunch"),
        priority: Some(5),
    }];
    for i in 1..=CONTACTS {
        obs.push(Observation::Contact(
            contact(i),
            Status::new(Availability::Available),
        ));
    }
    obs.push(Observation::Synced);
    obs
}

/// The gateways' config: the accounts (names and source kinds are all a gateway uses of
/// them), the listen address, room for thousands of connections, the cluster.
fn gateway_config(dir: &Path, i: usize, http: u16, accounts: usize, nats: &NatsCluster) -> PathBuf {
    let pw = dir.join("unused.pw");
    std::fs::write(&pw, "unused\n").or_fail("a password file");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).or_fail("chmod");
    let mut text = String::new();
    for a in 0..accounts {
        text.push_str(&format!(
            "[[account]]\nname = \"a{a}\"\nsource = \"xmpp\"\njid = \"a{a}@example.test\"\n\
             password_file = \"{}\"\nserver = \"127.0.0.1:1\"\ntls = \"insecure-plaintext\"\n",
            pw.display()
        ));
    }
    text.push_str(&format!(
        "[serve]\nlisten = \"127.0.0.1:{http}\"\nmax_connections = 100000\n\
         max_connections_per_ip = 100000\n[cluster]\nurl = \"{}\"\nname = \"fanout\"\n",
        nats.urls()
    ));
    let path = dir.join(format!("g{i}.toml"));
    std::fs::write(&path, text).or_fail("writing a config");
    path
}

/// Polls `f` (the testkit's poll) until it gives a value; fails after [`START`].
fn wait<T>(what: &str, f: impl FnMut() -> Option<T>) -> T {
    wait_until(what, START, f).or_fail("waiting")
}

/// Runs `sse_fanout` against `urls` (servers `pids`) with the run's options; its JSON line.
fn fanout(o: &Opts, urls: &[String], pids: &[u32], control: u16, token: bool) -> serde_json::Value {
    let me = std::env::current_exe().or_fail("this program's path");
    let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
    let mut cmd = Command::new(me.with_file_name("sse_fanout"));
    cmd.args(["--url", &urls.join(","), "--pid", &pids.join(",")])
        .args(["--n", &o.n.to_string(), "--rate", &o.rate.to_string()])
        .args([
            "--secs",
            &o.secs.to_string(),
            "--drain",
            &o.drain.to_string(),
        ])
        .args(["--control", &format!("127.0.0.1:{control}")])
        .args(["--connect-timeout", "60"])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if token {
        cmd.args(["--token", "bench-token"]);
    }
    let out = cmd.output().or_fail("running sse_fanout");
    if !out.status.success() {
        fail(format_args!("sse_fanout failed: {}", out.status));
    }
    serde_json::from_slice(&out.stdout).or_fail("sse_fanout's JSON line")
}

/// The CPU seconds of the NATS servers so far.
fn nats_cpu(nats: &NatsCluster) -> f64 {
    (0..nats.len())
        .filter_map(|i| nats.pid(i))
        .map(|p| usage(&p.to_string()).cpu_s)
        .sum()
}

/// A bench server process (`gateway_server`, `http_floor`) on `port`, control on `control`.
fn server(name: &str, port: u16, control: u16, extra: &[&str]) -> Child {
    let me = std::env::current_exe().or_fail("this program's path");
    let child = Command::new(me.with_file_name(name))
        .arg(format!("127.0.0.1:{port}"))
        .args(extra)
        .args(["--control", &format!("127.0.0.1:{control}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .or_fail(format_args!("starting {name}"));
    wait(&format!("{name} to listen"), || {
        (std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", control)).is_ok())
        .then_some(())
    });
    child
}

fn main() {
    let args = Args::from_env(&[]);
    args.only(&[
        "--imstatus",
        "--n",
        "--rate",
        "--secs",
        "--drain",
        "--gateways",
        "--accounts",
    ]);
    let imstatus = args.imstatus();
    let o = Opts {
        n: args.value("--n", 5000),
        rate: args.value("--rate", 1000),
        secs: args.value("--secs", 2.0),
        drain: args.value("--drain", 2.0),
        gateways: args
            .text("--gateways", "1,2,3")
            .split(',')
            .map(|k| k.parse().or_fail("--gateways: counts like 1,2,3"))
            .collect(),
        accounts: args.value::<usize>("--accounts", 8).max(1),
    };
    let nats = NatsCluster::start(3).or_fail("a 3-node NATS cluster");
    let dir = tempfile::tempdir().or_fail("a temporary directory");
    let (rt, _) = serve::runtime();
    let control = free_port();
    let accounts = o.accounts;
    let urls = nats.urls();
    rt.block_on(async move {
        let mut config = ClusterConfig::new(&urls);
        config.name = "fanout".to_owned();
        let cluster = Cluster::connect(&config).await.or_fail("connecting");
        let mut sources: Vec<(AccountId, Arc<dyn Source>)> = Vec::new();
        let mut feeds: Vec<Feed> = Vec::new();
        for a in 0..accounts {
            let (source, feed) = fed(SourceKind::new_static("xmpp"), initial());
            sources.push((AccountId::new(format!("a{a}")), source));
            feeds.push(feed);
        }
        tokio::spawn(run_watcher(
            cluster,
            sources,
            WatcherOptions {
                writer: "bench".into(),
            },
            std::future::pending(),
        ));
        let listener = serve::bind(([127, 0, 0, 1], control).into()).await;
        tokio::spawn(serve::control(listener, move |seq| {
            let n = seq as usize;
            let availability = if seq % 2 == 0 {
                Availability::Away
            } else {
                Availability::Available
            };
            let status = Status::with_message(availability, format!("b7 {seq} {}", mono_ns()));
            feeds[n % feeds.len()].send([Observation::Contact(
                contact((n / feeds.len()) % CONTACTS + 1),
                status,
            )]);
        }));
    });
    eprintln!(
        "cluster_fanout: {} subscribers, {} changes/s for {} s over {} accounts; gateways {:?}",
        o.n, o.rate, o.secs, o.accounts, o.gateways
    );
    let mut rows = Vec::new();
    for &k in &o.gateways {
        let ports: Vec<u16> = (0..k).map(|_| free_port()).collect();
        let gateways: Vec<ServeProcess> = ports
            .iter()
            .enumerate()
            .map(|(i, &port)| {
                let config = gateway_config(dir.path(), i, port, o.accounts, &nats);
                let log = dir.path().join(format!("k{k}-g{i}.log"));
                ServeProcess::start(&imstatus, &config, "gateway", log).or_fail("a gateway")
            })
            .collect();
        for (g, &port) in gateways.iter().zip(&ports) {
            wait("a gateway to show every account signed in", || {
                (0..o.accounts)
                    .all(|a| {
                        get(port, &format!("/v1/accounts/a{a}"))
                            .is_some_and(|b| b.contains("\"session\":\"signed_in\""))
                    })
                    .then_some(())
            });
            if g.log().contains("ERROR") {
                fail(format_args!("a gateway logged an error:\n{}", g.log()));
            }
        }
        let urls: Vec<String> = ports
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}/v1/events"))
            .collect();
        let pids: Vec<u32> = gateways.iter().map(ServeProcess::pid).collect();
        let (nats0, me0) = (nats_cpu(&nats), usage("self").cpu_s);
        let mut line = fanout(&o, &urls, &pids, control, false);
        let (nats1, me1) = (nats_cpu(&nats), usage("self").cpu_s);
        line["impl"] = format!("cluster@g{k}").into();
        line["gateways"] = k.into();
        line["nats_cpu_s"] = (((nats1 - nats0) * 1000.0).round() / 1000.0).into();
        line["watcher_cpu_s"] = (((me1 - me0) * 1000.0).round() / 1000.0).into();
        drop(gateways);
        rows.push(line);
    }
    for (name, extra, token) in [
        ("gateway_server", &["--contacts", "50"][..], true),
        ("http_floor", &[][..], false),
    ] {
        let (port, control) = (free_port(), free_port());
        let mut child = server(name, port, control, extra);
        let url = format!("http://127.0.0.1:{port}/v1/events");
        let mut line = fanout(&o, &[url], &[child.id()], control, token);
        let _ = child.kill();
        let _ = child.wait();
        line["impl"] = if token { "single" } else { "floor" }.into();
        line["gateways"] = 1.into();
        rows.push(line);
    }
    for line in &mut rows {
        let delivered = line["delivered"].as_f64().unwrap_or(0.0);
        let cpu = line["server_cpu_s"].as_f64().unwrap_or(0.0);
        line["deliveries_per_cpu_s"] = if cpu > 0.0 {
            (delivered / cpu).round().into()
        } else {
            0.into()
        };
        println!("{line}");
    }
    let per = |name: &str| {
        rows.iter()
            .find(|r| r["impl"] == name)
            .and_then(|r| r["deliveries_per_cpu_s"].as_f64())
            .unwrap_or(0.0)
    };
    let (single, floor) = (per("single"), per("floor"));
    println!(
        "\n| impl | gateways | delivered % | p50 ms | p99 ms | deliveries/s | gateway CPU s | \
         deliveries per CPU s | ÷ single | ÷ floor | NATS CPU s | watcher CPU s | KB/sub |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let f = |k: &str| r[k].as_f64().unwrap_or(0.0);
        let d = f("deliveries_per_cpu_s");
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {} | {} | {:.1} |",
            r["impl"].as_str().unwrap_or("?"),
            r["gateways"],
            f("delivered_pct"),
            f("p50_us") / 1000.0,
            f("p99_us") / 1000.0,
            f("delivered") / f("window_s").max(1e-9),
            f("server_cpu_s"),
            d,
            if single > 0.0 { d / single } else { 0.0 },
            if floor > 0.0 { d / floor } else { 0.0 },
            r.get("nats_cpu_s").map_or("-".to_owned(), |v| v.to_string()),
            r.get("watcher_cpu_s").map_or("-".to_owned(), |v| v.to_string()),
            f("kb_per_sub"),
        );
    }
    drop(rt);
    drop(nats);
}
