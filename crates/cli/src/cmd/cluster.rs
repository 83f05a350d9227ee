//! `imstatus serve --role watcher|gateway`: the two cluster roles (config `[cluster]`, cargo
//! feature `cluster`, docs/cluster.md). Without the feature both are a usage error.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;

use imstatus_config::{AccountConfig, Config};
use imstatus_hub::Hub;

use crate::app::Failure;

/// Appends a gateway's cluster series to its `/metrics`.
pub(crate) type RenderMetrics = Arc<dyn Fn(&mut String) + Send + Sync>;

/// Feeds the gateway's mirror hub; stops when dropped.
pub(crate) struct Feeder {
    task: Option<tokio::task::JoinHandle<()>>,
    metrics: Option<RenderMetrics>,
}

impl Feeder {
    /// What the feeder knows of the cluster (stream lag, leases, takeovers), for `/metrics`.
    pub(crate) fn metrics(&self) -> Option<RenderMetrics> {
        self.metrics.clone()
    }
}

impl Drop for Feeder {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

#[cfg(feature = "cluster")]
fn cluster_config(config: &Config) -> Result<&imstatus_config::ClusterConfig, Failure> {
    config.cluster.as_ref().ok_or_else(|| {
        Failure::Usage(
            "serve: --role watcher and --role gateway need a [cluster] section in the config \
             (docs/cluster.md)"
                .into(),
        )
    })
}

#[cfg(feature = "cluster")]
async fn connect(config: &Config) -> Result<imstatus_cluster::Cluster, Failure> {
    let c = cluster_config(config)?;
    imstatus_cluster::Cluster::connect(c).await.map_err(|e| {
        let coded = imstatus_core::CodedError::new(e.code(), e.to_string());
        Failure::Other(anyhow::anyhow!("cluster: {coded}\n  hint: {}", e.hint()))
    })
}

/// Runs the watcher role until `stop`.
#[cfg(feature = "cluster")]
pub(crate) async fn watcher(
    config: &Config,
    err: &mut (dyn Write + Send),
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<u8, Failure> {
    let cluster = connect(config).await?;
    let mut accounts = Vec::new();
    for a in &config.accounts {
        let source = a
            .settings
            .build(&a.name)
            .map_err(|e| Failure::Other(anyhow::anyhow!("account `{}`: {e}", a.name)))?;
        accounts.push((a.name.clone(), source));
    }
    let options = imstatus_cluster::WatcherOptions::new();
    writeln!(
        err,
        "imstatus: watching {} account(s) as {} for cluster `{}` ({} shards, lease {:?})",
        accounts.len(),
        options.writer,
        cluster.config().name,
        cluster.config().shards,
        cluster.config().lease,
    )?;
    imstatus_cluster::run_watcher(cluster, accounts, options, stop).await;
    Ok(crate::EXIT_OK)
}

/// A mirror hub of `accounts` fed from the cluster's stream.
#[cfg(feature = "cluster")]
pub(crate) async fn gateway_hub(
    config: &Config,
    accounts: &[&AccountConfig],
    err: &mut (dyn Write + Send),
) -> Result<(Arc<Hub>, Option<Feeder>), Failure> {
    let cluster = connect(config).await?;
    let mut builder = Hub::builder();
    for a in accounts {
        builder = builder.with_source(
            a.name.clone(),
            imstatus_cluster::RemoteSource::shared(cluster.clone(), a.name.clone(), a.kind.clone()),
        );
    }
    let (hub, mirror) = builder.start_mirror();
    writeln!(
        err,
        "imstatus: showing cluster `{}` at {}",
        cluster.config().name,
        cluster.config().servers.join(",")
    )?;
    let metrics = imstatus_cluster::GatewayMetrics::default();
    let task = tokio::spawn(imstatus_cluster::run_gateway(
        cluster,
        mirror,
        metrics.clone(),
        std::future::pending(),
    ));
    let feeder = Feeder {
        task: Some(task),
        metrics: Some(Arc::new(move |out: &mut String| metrics.render(out))),
    };
    Ok((Arc::new(hub), Some(feeder)))
}

#[cfg(not(feature = "cluster"))]
fn not_built() -> Failure {
    Failure::Usage(
        "serve: this build of imstatus has no cluster roles (built without its cargo feature \
         `cluster`)"
            .into(),
    )
}

/// Without the `cluster` feature: a usage error.
#[cfg(not(feature = "cluster"))]
pub(crate) async fn watcher(
    config: &Config,
    err: &mut (dyn Write + Send),
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<u8, Failure> {
    let _ = (config, err, stop);
    Err(not_built())
}

/// Without the `cluster` feature: a usage error.
#[cfg(not(feature = "cluster"))]
pub(crate) async fn gateway_hub(
    config: &Config,
    accounts: &[&AccountConfig],
    err: &mut (dyn Write + Send),
) -> Result<(Arc<Hub>, Option<Feeder>), Failure> {
    let _ = (config, accounts, err);
    Err(not_built())
}
