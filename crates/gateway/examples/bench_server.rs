//! A gateway over a scripted hub for load tests (benchmarks B6 and B7 of `bench/run.sh`):
//!
//! ```sh
//! cargo run --release -p imstatus-gateway --example bench_server -- 127.0.0.1:25282
//! wrk -t2 -c64 -d10s --latency -H 'Authorization: Bearer bench-token' \
//!     http://127.0.0.1:25282/v1/accounts/alice
//! ```
//!
//! `bench_server [ADDR] [--accounts N] [--contacts K] [--control ADDR]`
//!
//! - without `--accounts`: two accounts, `alice` and `bob`, each signed in from `desk` (away,
//!   "lunch") with one contact;
//! - `--accounts N`: N accounts `u0001`…`uN` instead (B6: the read path over 2,000 accounts),
//!   each signed in from `desk` (away, "idle session i", priority 5) with 3 contacts;
//! - `--contacts K`: the first account has K contacts `c0001@example.test`… (default 1);
//! - `--control ADDR`: a line protocol on a TCP port for B7: `RATE R D` makes the first
//!   account's contacts change status R times a second for D seconds (open loop, 1 ms ticks
//!   with catch-up, round robin over the contacts), each with the message
//!   `b7 <seq> <CLOCK_MONOTONIC ns just before the change enters the hub>`; the answer is
//!   `SENT <count> <seconds>` once the last one is sent (the flow stops after D + 1 s even when
//!   the server is too busy to send them all: count < R × D then); `SEQ0` answers `SEQ0 <n>`, the first
//!   seq of the next `RATE` (seqs continue across `RATE`s).
//!
//! `WORKERS` sets the tokio worker threads (default 2, like the floors). The token
//! `bench-token` may read every account. Stops on Ctrl-C or SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_config::TokenConfig;
use imstatus_core::{AccountId, Availability, ContactId, Observation, PartId, SourceKind, Status};
use imstatus_gateway::{hash_token, serve_on, Gateway, Limits};
use imstatus_hub::testing::{scripted, Script};
use imstatus_hub::Hub;
use nix::time::{clock_gettime, ClockId};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};

/// CLOCK_MONOTONIC in nanoseconds: comparable across processes on this host.
fn mono_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

struct Args {
    addr: SocketAddr,
    accounts: usize,
    contacts: usize,
    control: Option<SocketAddr>,
}

fn args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:25282".parse().unwrap(),
        accounts: 0,
        contacts: 1,
        control: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--accounts" => a.accounts = value("--accounts").parse().expect("--accounts N"),
            "--contacts" => a.contacts = value("--contacts").parse().expect("--contacts K"),
            "--control" => {
                a.control = Some(value("--control").parse().expect("--control ADDR"));
            }
            other => a.addr = other.parse().expect("an address like 127.0.0.1:25282"),
        }
    }
    a
}

fn contact(i: usize) -> ContactId {
    ContactId::new(format!("c{i:04}@example.test"))
}

/// The initial observations of account number `index` (0-based).
fn initial(index: usize, message: &str, contacts: usize) -> Vec<Observation> {
    let mut obs = vec![Observation::Presence {
        part: PartId::new("desk"),
        status: Status::with_message(Availability::Away, message),
        priority: Some(5),
    }];
    for i in 1..=contacts {
        let status = if (i + index) % 2 == 0 {
            Status::new(Availability::Available)
        } else {
            Status::with_message(Availability::Away, "out")
        };
        obs.push(Observation::Contact(contact(i), status));
    }
    obs.push(Observation::Synced);
    obs
}

/// `RATE R D`: R changes a second for D seconds; returns (sent, seconds).
async fn flow(script: &Script, contacts: usize, rate: u64, secs: f64, seq0: u64) -> (u64, f64) {
    let total = (rate as f64 * secs).round() as u64;
    let start = Instant::now();
    // Open loop, but bounded: a server that cannot keep up stops after D + 1 s and says how
    // many it sent.
    let hard_stop = Duration::from_secs_f64(secs + 1.0);
    let mut sent = 0u64;
    while sent < total && start.elapsed() < hard_stop {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while sent < due {
            let seq = seq0 + sent;
            let c = contact((seq as usize % contacts.max(1)) + 1);
            let availability = if seq % 2 == 0 {
                Availability::Away
            } else {
                Availability::Available
            };
            let status = Status::with_message(availability, format!("b7 {seq} {}", mono_ns()));
            script.send([Observation::Contact(c, status)]);
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (sent, start.elapsed().as_secs_f64())
}

async fn control(listener: tokio::net::TcpListener, script: Script, contacts: usize) {
    let mut seq0 = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (rd, mut wr) = stream.into_split();
        let mut lines = BufReader::new(rd).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            let answer = match words.as_slice() {
                ["RATE", r, d] => match (r.parse::<u64>(), d.parse::<f64>()) {
                    (Ok(rate), Ok(secs)) if rate > 0 && secs > 0.0 && secs <= 600.0 => {
                        let (sent, took) = flow(&script, contacts, rate, secs, seq0).await;
                        seq0 += sent;
                        format!("SENT {sent} {took:.3}\n")
                    }
                    _ => "ERR RATE needs R > 0 and 0 < D <= 600\n".to_owned(),
                },
                ["SEQ0"] => format!("SEQ0 {seq0}\n"),
                _ => "ERR unknown command\n".to_owned(),
            };
            if wr.write_all(answer.as_bytes()).await.is_err() {
                break;
            }
        }
    }
}

fn main() {
    let args = args();
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let names: Vec<String> = if args.accounts == 0 {
            vec!["alice".to_owned(), "bob".to_owned()]
        } else {
            (1..=args.accounts).map(|i| format!("u{i:04}")).collect()
        };
        let mut builder = Hub::builder();
        let mut scripts = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let (message, contacts) = match (args.accounts, index) {
                (_, 0) => (
                    if args.accounts == 0 {
                        "lunch".to_owned()
                    } else {
                        "idle session 1".to_owned()
                    },
                    args.contacts.max(1),
                ),
                (0, _) => ("lunch".to_owned(), 1),
                (_, i) => (format!("idle session {}", i + 1), 3),
            };
            let (source, script) = scripted(
                SourceKind::new_static("xmpp"),
                initial(index, &message, contacts),
            );
            builder = builder.with_source(AccountId::new(name.as_str()), source);
            scripts.push(script);
        }
        let hub = Arc::new(builder.start());
        let settled = hub
            .wait_settled(&hub.accounts(), Duration::from_secs(30))
            .await;
        let token = TokenConfig {
            name: "bench".to_owned(),
            sha256: hash_token("bench-token"),
            accounts: vec!["*".to_owned()],
            write: false,
        };
        // B6 and B7 open thousands of connections from one address.
        let limits = Limits {
            max_connections: 100_000,
            max_connections_per_ip: 100_000,
            ..Limits::default()
        };
        let gateway = Gateway::new(hub, &[token]).with_limits(limits).into_state();
        let listener = tokio::net::TcpListener::bind(args.addr).await.unwrap();
        if let Some(addr) = args.control {
            let l = tokio::net::TcpListener::bind(addr).await.unwrap();
            tokio::spawn(control(l, scripts[0].clone(), args.contacts.max(1)));
        }
        eprintln!(
            "bench_server on {} workers={workers} accounts={} settled={settled}",
            args.addr,
            names.len()
        );
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        serve_on(listener, gateway, stop).await.unwrap();
        drop(scripts);
    });
}
