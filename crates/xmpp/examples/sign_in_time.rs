//! Sign-in time of the XMPP source, hidden vs visible: from `Hub::start` to `Synced`
//! (`Hub::wait_settled`), on a private Prosody (with `mod_privacy_lists`) and a private
//! ejabberd (`mod_privacy`), both on loopback.
//!
//! ```sh
//! cargo run --release -p imstatus-xmpp --example sign_in_time [RUNS]
//! ```
//!
//! Runs alternate between the modes so that drift (caches, the servers' own warm-up) hits both
//! alike. "idle": alice has no other resource, contacts are not tracked. "busy": alice's desk
//! and her contact bob are online and contacts are tracked (probes, census).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_config::Secret;
use imstatus_core::AccountId;
use imstatus_hub::Hub;
use imstatus_testkit::{Ejabberd, EjabberdOptions, Prosody, ProsodyOptions, XmppClient};
use imstatus_xmpp::XmppSource;
use imstatus_xmpp::{TlsMode, Visibility, XmppConfig};

async fn sign_in(config: &XmppConfig) -> Duration {
    let alice = AccountId::new("alice");
    let start = Instant::now();
    let hub = Hub::builder()
        .with_source(alice.clone(), Arc::new(XmppSource::new(config)))
        .start();
    assert!(
        hub.wait_settled(std::slice::from_ref(&alice), Duration::from_secs(10))
            .await
    );
    let took = start.elapsed();
    assert_eq!(hub.source_error(&alice), None);
    took
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

async fn measure(server: &str, port: u16, runs: usize, password: &std::path::Path) {
    for busy in [false, true] {
        let _others = busy.then(|| {
            let mut desk =
                XmppClient::connect(port, "alice", "example.test", "alicepw", "desk").unwrap();
            desk.presence(None, None, Some(1)).unwrap();
            let mut bob =
                XmppClient::connect(port, "bob", "example.test", "bobpw", "laptop").unwrap();
            bob.presence(Some("away"), None, None).unwrap();
            (desk, bob)
        });
        let config = |visibility| XmppConfig {
            server: Some(format!("127.0.0.1:{port}")),
            tls: TlsMode::InsecurePlaintext,
            contacts: busy,
            visibility,
            ..XmppConfig::new("alice@example.test", Secret::File(password.to_owned()))
        };
        let (visible, hidden) = (config(Visibility::Visible), config(Visibility::Invisible));
        // One warm-up each.
        sign_in(&visible).await;
        sign_in(&hidden).await;
        let mut times = (Vec::new(), Vec::new());
        for _ in 0..runs {
            times.0.push(sign_in(&visible).await);
            times.1.push(sign_in(&hidden).await);
        }
        times.0.sort();
        times.1.sort();
        let scenario = if busy { "busy" } else { "idle" };
        for (mode, t) in [("visible", &times.0), ("invisible", &times.1)] {
            println!(
                "{server:8} {scenario:4} {mode:9} n={runs} p50 {} ms  p90 {} ms  min {} ms  max {} ms",
                ms(percentile(t, 50)),
                ms(percentile(t, 90)),
                ms(t[0]),
                ms(t[t.len() - 1]),
            );
        }
        println!(
            "{server:8} {scenario:4} invisible/visible p50 ratio {:.2}",
            percentile(&times.1, 50).as_secs_f64() / percentile(&times.0, 50).as_secs_f64()
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20);
    let mut password = tempfile::NamedTempFile::new().unwrap();
    writeln!(password, "alicepw").unwrap();
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    measure("prosody", prosody.port(), runs, password.path()).await;
    drop(prosody);
    let ejabberd = Ejabberd::start(EjabberdOptions::default()).unwrap();
    measure("ejabberd", ejabberd.port(), runs, password.path()).await;
}
