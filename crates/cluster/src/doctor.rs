//! `imstatus doctor` with `[cluster]`: the connection, the stream and the lease bucket, and who
//! owns each configured account.

use std::time::Duration;

use imstatus_config::ClusterConfig;
use imstatus_core::{AccountId, CodedError};
use imstatus_hub::Check;

use crate::{shard_of, Cluster};

/// How long the doctor waits for the cluster to connect and set up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The cluster's checks: `cluster` (connected, the stream and the bucket exist), `stream` (its
/// messages and leader), and one `lease` per account (which watcher owns it; none is a
/// failure: nothing is watching the account, and writes to it are refused with 503).
pub async fn doctor(config: &ClusterConfig, accounts: &[AccountId]) -> Vec<Check> {
    let servers = config.servers.join(",");
    let cluster = match tokio::time::timeout(CONNECT_TIMEOUT, Cluster::connect(config)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            return vec![Check::fail(
                "cluster",
                CodedError::new(e.code(), e.to_string()).to_string(),
                e.hint(),
            )]
        }
        Err(_) => {
            return vec![Check::fail(
                "cluster",
                format!("no answer from {servers} within {CONNECT_TIMEOUT:?}"),
                "check that the NATS servers run with JetStream and are reachable",
            )]
        }
    };
    let mut checks = vec![Check::pass(
        "cluster",
        format!(
            "connected to {servers}; stream {} and bucket {}_leases ready",
            crate::stream_name(config),
            config.name
        ),
    )];
    let mut stream = cluster.stream.clone();
    checks.push(match stream.info().await {
        Ok(info) => {
            let leader = info
                .cluster
                .as_ref()
                .and_then(|c| c.leader.clone())
                .unwrap_or_else(|| "none".to_owned());
            Check::pass(
                "stream",
                format!(
                    "{} message(s), {} replica(s), leader {leader}",
                    info.state.messages, info.config.num_replicas
                ),
            )
        }
        Err(e) => Check::fail(
            "stream",
            format!("reading the stream's state: {e}"),
            "check the JetStream cluster's health (`nats server report jetstream`)",
        ),
    });
    for account in accounts {
        let shard = shard_of(account, config.shards);
        checks.push(match cluster.holder(shard).await {
            Ok(Some(writer)) => Check::pass(
                "lease",
                format!("{account}: shard {shard} owned by watcher {writer}"),
            ),
            Ok(None) => Check::fail(
                "lease",
                format!("{account}: no watcher owns shard {shard}"),
                "start `imstatus serve --role watcher` with this account in its config",
            ),
            Err(e) => Check::fail(
                "lease",
                format!("{account}: {e}"),
                "check the JetStream cluster's health",
            ),
        });
    }
    checks
}
