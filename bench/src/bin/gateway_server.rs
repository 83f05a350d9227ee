//! A real gateway over a hub this process feeds, for load tests (benchmarks B6 and B7 of
//! `bench/run.sh`):
//!
//! ```sh
//! cargo build --release -p imstatus-bench --bins
//! target/release/gateway_server 127.0.0.1:25282 &
//! wrk -t2 -c64 -d10s --latency -H 'Authorization: Bearer bench-token' \
//!     http://127.0.0.1:25282/v1/accounts/alice
//! ```
//!
//! `gateway_server [ADDR] [--accounts N] [--contacts K] [--control ADDR]`
//!
//! - without `--accounts`: two accounts, `alice` and `bob`, each signed in from `desk` (away,
//!   "lunch") with one contact;
//! - `--accounts N`: N accounts `u0001`…`uN` instead (B6: the read path over 2,000 accounts),
//!   each signed in from `desk` (away, "idle session i", priority 5) with 3 contacts;
//! - `--contacts K`: the first account has K contacts `c0001@example.test`… (default 1);
//! - `--control ADDR`: the control protocol of [`imstatus_bench::serve`] for B7: each change is
//!   a status change of one of the first account's contacts (round robin), alternately away and
//!   available, with the message `b7 <seq> <CLOCK_MONOTONIC ns just before the change enters
//!   the hub>`.
//!
//! `WORKERS` sets the tokio worker threads (default 2, like the floors). The token
//! `bench-token` may read every account. Stops on Ctrl-C or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imstatus_bench::args::Args;
use imstatus_bench::hubs::fed;
use imstatus_bench::system::mono_ns;
use imstatus_bench::{fail, serve};
use imstatus_config::TokenConfig;
use imstatus_core::{AccountId, Availability, ContactId, Observation, PartId, SourceKind, Status};
use imstatus_gateway::{hash_token, serve_on, Gateway, Limits};
use imstatus_hub::Hub;

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

fn main() {
    let args = Args::from_env(&[]);
    args.only(&["--accounts", "--contacts", "--control"]);
    let addr: SocketAddr = args.nth(0, "ADDR", SocketAddr::from(([127, 0, 0, 1], 25282)));
    let accounts: usize = args.value("--accounts", 0);
    let contacts: usize = args.value::<usize>("--contacts", 1).max(1);
    let control: Option<SocketAddr> = args.opt("--control");
    let (rt, workers) = serve::runtime();
    rt.block_on(async move {
        let names: Vec<String> = if accounts == 0 {
            vec!["alice".to_owned(), "bob".to_owned()]
        } else {
            (1..=accounts).map(|i| format!("u{i:04}")).collect()
        };
        let mut builder = Hub::builder();
        let mut feeds = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let (message, k) = match (accounts, index) {
                (0, 0) => ("lunch".to_owned(), contacts),
                (_, 0) => ("idle session 1".to_owned(), contacts),
                (0, _) => ("lunch".to_owned(), 1),
                (_, i) => (format!("idle session {}", i + 1), 3),
            };
            let (source, feed) = fed(SourceKind::new_static("xmpp"), initial(index, &message, k));
            builder = builder.with_source(AccountId::new(name.as_str()), source);
            feeds.push(feed);
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
        let listener = serve::bind(addr).await;
        if let Some(control) = control {
            let listener = serve::bind(control).await;
            let feed = feeds[0].clone();
            tokio::spawn(serve::control(listener, move |seq| {
                let c = contact((seq as usize % contacts) + 1);
                let availability = if seq % 2 == 0 {
                    Availability::Away
                } else {
                    Availability::Available
                };
                let status = Status::with_message(availability, format!("b7 {seq} {}", mono_ns()));
                feed.send([Observation::Contact(c, status)]);
            }));
        }
        eprintln!(
            "gateway_server on {addr} workers={workers} accounts={} settled={settled}",
            names.len()
        );
        if let Err(e) = serve_on(listener, gateway, serve::terminated()).await {
            fail(format_args!("the gateway stopped: {e}"));
        }
        drop(feeds);
    });
}
