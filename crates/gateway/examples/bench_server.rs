//! A gateway over a scripted hub for load tests of the read path (benchmark B6):
//!
//! ```sh
//! cargo run --release -p imstatus-gateway --example bench_server -- 127.0.0.1:25282
//! wrk -t2 -c64 -d10s --latency -H 'Authorization: Bearer bench-token' \
//!     http://127.0.0.1:25282/v1/accounts/alice
//! ```
//!
//! `WORKERS` sets the tokio worker threads (default 2, like `httpfloor`). The token
//! `bench-token` may read every account.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imstatus_core::{AccountId, Availability, ContactId, Observation, PartId, SourceKind, Status};
use imstatus_gateway::{hash_token, serve_on, Gateway};
use imstatus_hub::config::TokenConfig;
use imstatus_hub::testing::scripted;
use imstatus_hub::Hub;

fn main() {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:25282".to_owned())
        .parse()
        .expect("an address like 127.0.0.1:25282");
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
        let mut builder = Hub::builder();
        let mut scripts = Vec::new();
        for name in ["alice", "bob"] {
            let (source, script) = scripted(
                SourceKind::Xmpp,
                vec![
                    Observation::Presence {
                        part: PartId::new("desk"),
                        status: Status::with_message(Availability::Away, "lunch"),
                        priority: Some(5),
                    },
                    Observation::Contact(
                        ContactId::new("carol@example.test"),
                        Status::new(Availability::Available),
                    ),
                    Observation::Synced,
                ],
            );
            builder = builder.with_source(AccountId::new(name), source);
            scripts.push(script);
        }
        let hub = Arc::new(builder.start());
        hub.wait_settled(&hub.accounts(), Duration::from_secs(5))
            .await;
        let token = TokenConfig {
            name: "bench".to_owned(),
            sha256: hash_token("bench-token"),
            accounts: vec!["*".to_owned()],
            write: false,
        };
        let gateway = Gateway::new(hub, &[token]).into_state();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        eprintln!("bench_server on {addr} workers={workers}");
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        serve_on(listener, gateway, stop).await.unwrap();
        drop(scripts);
    });
}
