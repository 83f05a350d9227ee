//! Sign-in time of the XMPP source, hidden vs visible: from `Hub::start` to `Synced`
//! (`Hub::wait_settled`), on a private Prosody (with `mod_privacy_lists`) and a private
//! ejabberd (`mod_privacy`), both on loopback.
//!
//! ```sh
//! target/release/xmpp_sign_in [RUNS]     # default 20
//! ```
//!
//! Runs alternate between the modes so that drift (caches, the servers' own warm-up) hits both
//! alike. "idle": alice has no other resource, contacts are not tracked. "busy": alice's desk
//! and her contact bob are online and contacts are tracked (probes, census).

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_bench::args::Args;
use imstatus_bench::stats::{ms, percentile};
use imstatus_bench::{fail, OrFail};
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
    let settled = hub
        .wait_settled(std::slice::from_ref(&alice), Duration::from_secs(10))
        .await;
    let took = start.elapsed();
    if !settled || hub.source_error(&alice).is_some() {
        fail(format_args!(
            "alice did not sign in: {:?}",
            hub.source_error(&alice)
        ));
    }
    took
}

async fn measure(server: &str, port: u16, runs: usize, password: &std::path::Path) {
    for busy in [false, true] {
        let _others = busy.then(|| {
            let mut desk = XmppClient::connect(port, "alice", "example.test", "alicepw", "desk")
                .or_fail("alice/desk");
            desk.presence(None, None, Some(1))
                .or_fail("alice/desk's presence");
            let mut bob = XmppClient::connect(port, "bob", "example.test", "bobpw", "laptop")
                .or_fail("bob/laptop");
            bob.presence(Some("away"), None, None)
                .or_fail("bob's presence");
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
                ms(t, 50.0),
                ms(t, 90.0),
                ms(t, 0.0),
                ms(t, 100.0),
            );
        }
        let p50 = |t: &[Duration]| percentile(t, 50.0).map_or(f64::NAN, |d| d.as_secs_f64());
        println!(
            "{server:8} {scenario:4} invisible/visible p50 ratio {:.2}",
            p50(&times.1) / p50(&times.0)
        );
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::from_env(&[]);
    args.only(&[]);
    let runs: usize = args.nth(0, "RUNS", 20).max(1);
    let mut password = tempfile::NamedTempFile::new().or_fail("a password file");
    writeln!(password, "alicepw").or_fail("a password file");
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).or_fail("Prosody");
    measure("prosody", prosody.port(), runs, password.path()).await;
    drop(prosody);
    let ejabberd = Ejabberd::start(EjabberdOptions::default()).or_fail("ejabberd");
    measure("ejabberd", ejabberd.port(), runs, password.path()).await;
}
