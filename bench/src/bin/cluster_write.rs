//! Write latency through the cluster's stream against a direct hub publish, side by side in
//! one run: an observation handed to a source → its `status_changed` on a subscription.
//! Direct: one hub, as `imstatus serve` runs it. Through the stream: a watcher's hub publishes
//! the batch to a real 3-node JetStream cluster on 127.0.0.1 (3 replicas, fenced by the
//! subject's last sequence) and a gateway's mirror hub reads it with an ordered consumer.
//! Samples alternate between the two; one observation in flight at a time.
//!
//! ```sh
//! cargo build --release -p imstatus-bench --bins
//! target/release/cluster_write [--samples N]     # default 1000
//! ```
//!
//! Needs `nats-server` 2.15.1 (scripts/lib.sh `ensure_nats`, or `IMSTATUS_NATS_SERVER`).

use std::time::{Duration, Instant};

use imstatus_bench::args::Args;
use imstatus_bench::stats::{ms, us};
use imstatus_bench::OrFail;
use imstatus_cluster::{run_gateway, run_watcher, Cluster, GatewayMetrics, RemoteSource};
use imstatus_config::ClusterConfig;
use imstatus_core::{AccountId, Availability, EventKind, Observation, PartId, SourceKind, Status};
use imstatus_hub::testing::{scripted, Script};
use imstatus_hub::{Hub, Subscription};
use imstatus_testkit::NatsCluster;

/// How long one sample may take before the run is abandoned.
const LIMIT: Duration = Duration::from_secs(30);

fn away(n: usize) -> Observation {
    Observation::Presence {
        part: PartId::new("desk"),
        status: Status::with_message(Availability::Away, format!("n{n}")),
        priority: Some(1),
    }
}

/// Waits for the `status_changed` to `n{n}` on `sub`.
async fn until(sub: &mut Subscription, n: usize) {
    let want = format!("n{n}");
    loop {
        let e = tokio::time::timeout(LIMIT, sub.recv())
            .await
            .or_fail(format_args!("no n{n} within {LIMIT:?}"))
            .or_fail("the hub is gone");
        if let EventKind::StatusChanged { to, .. } = &e.kind {
            if to.message.as_deref() == Some(want.as_str()) {
                return;
            }
        }
    }
}

/// One sample: from handing `n` to the source to its event on `sub`.
async fn sample(script: &Script, sub: &mut Subscription, n: usize) -> Duration {
    let t = Instant::now();
    script.send([away(n)]);
    until(sub, n).await;
    t.elapsed()
}

async fn run(samples: usize) {
    let nats = tokio::task::spawn_blocking(|| NatsCluster::start(3))
        .await
        .or_fail("joining")
        .or_fail("a 3-node NATS cluster");
    let mut config = ClusterConfig::new(&nats.urls());
    config.name = "bench".to_owned();
    let cluster = Cluster::connect(&config).await.or_fail("connecting");
    let alice = AccountId::new("alice@example.test");
    let kind = SourceKind::new_static("test");

    // Through the stream: a gateway's mirror hub and a watcher.
    let (gateway, mirror) = Hub::builder()
        .with_source(
            alice.clone(),
            RemoteSource::shared(cluster.clone(), alice.clone(), kind.clone()),
        )
        .start_mirror();
    tokio::spawn(run_gateway(
        cluster.clone(),
        mirror,
        GatewayMetrics::default(),
        std::future::pending(),
    ));
    let mut through = gateway.subscribe();
    let (source, via_stream) = scripted(kind.clone(), vec![]);
    tokio::spawn(run_watcher(
        cluster.clone(),
        vec![(alice.clone(), source)],
        imstatus_cluster::WatcherOptions {
            writer: "bench".into(),
        },
        std::future::pending(),
    ));
    // Direct: one hub.
    let (source, direct_script) = scripted(kind, vec![]);
    let direct = Hub::builder().with_source(alice, source).start();
    let mut straight = direct.subscribe();

    for (script, sub) in [(&via_stream, &mut through), (&direct_script, &mut straight)] {
        script.send([Observation::ClientAppeared, away(0), Observation::Synced]);
        until(sub, 0).await;
    }
    eprintln!("cluster_write: {samples} samples each");
    let (mut stream, mut hub) = (Vec::new(), Vec::new());
    for n in 1..=samples {
        if n % 2 == 0 {
            stream.push(sample(&via_stream, &mut through, n).await);
            hub.push(sample(&direct_script, &mut straight, n).await);
        } else {
            hub.push(sample(&direct_script, &mut straight, n).await);
            stream.push(sample(&via_stream, &mut through, n).await);
        }
    }
    stream.sort();
    hub.sort();
    for (name, s) in [("through the stream", &stream), ("direct hub", &hub)] {
        println!(
            "{name}: p50 {:.0} µs, p99 {:.0} µs, max {} ms",
            us(s, 50.0),
            us(s, 99.0),
            ms(s, 100.0)
        );
    }
    println!(
        "ratio stream/direct: p50 {:.0}x, p99 {:.0}x",
        us(&stream, 50.0) / us(&hub, 50.0),
        us(&stream, 99.0) / us(&hub, 99.0)
    );
    drop(nats);
}

fn main() {
    let args = Args::from_env(&[]);
    args.only(&["--samples"]);
    let samples: usize = args.value("--samples", 1000);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("a runtime")
        .block_on(run(samples));
}
