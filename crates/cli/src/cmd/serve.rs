//! `imstatus serve`: the HTTP/SSE/WebSocket gateway and dashboard (config `[serve]`), and MQTT
//! beside it (config `[mqtt]`, cargo feature `mqtt`), until Ctrl-C or SIGTERM, then drain.

use std::future::Future;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use imstatus_config::{AccountConfig, Config, ServeConfig};
use imstatus_hub::SourceFactory;

use crate::app::{start_hub, Failure};
use crate::args::Role;
use crate::EXIT_OK;

/// Runs `imstatus serve`.
pub(crate) async fn run(
    config: &Config,
    factories: &[&dyn SourceFactory],
    role: Role,
    err: &mut (dyn Write + Send),
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<u8, Failure> {
    if role == Role::Watcher {
        return super::cluster::watcher(config, err, stop).await;
    }
    let serve = config.serve.clone().unwrap_or_default();
    // Refuse a public address without tokens before starting any source.
    if let Err(e) = imstatus_gateway::check_listen(serve.listen, !serve.tokens.is_empty()) {
        return Err(Failure::Usage(format!("serve: {e}")));
    }
    // MQTT settings are checked (and the password read) before any source starts, too.
    let mqtt = mqtt_settings(config, factories)?;
    let all: Vec<&AccountConfig> = config.accounts.iter().collect();
    // The gateway role's hub shows the cluster's stream; `feeder` stops feeding it on drop.
    let (hub, feeder) = match role {
        Role::Gateway => super::cluster::gateway_hub(config, &all, err).await?,
        _ => (Arc::new(start_hub(config, &all)?), None),
    };
    writeln!(
        err,
        "imstatus: serving {} account(s) on http://{}/ ({})",
        all.len(),
        serve.listen,
        access(&serve)
    )?;
    // MQTT runs beside HTTP on its own subscription: a broker that is down never holds up the
    // gateway. Both stop on the same signal; MQTT then publishes `offline`.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    if let Some(m) = &config.mqtt {
        writeln!(err, "imstatus: publishing to MQTT at {}", m.url)?;
    }
    let mqtt = start_mqtt(mqtt, &hub, stopped(stop_rx.clone()), err)?;
    tokio::spawn(async move {
        stop.await;
        let _ = stop_tx.send(true);
    });
    let mut gateway = imstatus_gateway::Gateway::from_config(hub, &serve);
    if let Some(render) = feeder.as_ref().and_then(super::cluster::Feeder::metrics) {
        gateway = gateway.with_extra_metrics(render);
    }
    let served = imstatus_gateway::serve(gateway, serve.listen, stopped(stop_rx)).await;
    if let Some(task) = mqtt {
        match tokio::time::timeout(Duration::from_secs(5), task).await {
            Ok(Ok(Err(e))) => writeln!(err, "imstatus: {e}")?,
            Ok(_) => {}
            Err(_) => writeln!(err, "imstatus: mqtt: did not stop within 5 s")?,
        }
    }
    match served {
        Ok(()) => Ok(EXIT_OK),
        Err(e @ imstatus_gateway::Error::Bind { .. }) => Err(Failure::Usage(format!("serve: {e}"))),
        Err(e) => Err(Failure::Other(e.into())),
    }
}

/// Who may use the gateway, for the start-up line.
fn access(serve: &ServeConfig) -> &'static str {
    match (serve.tokens.is_empty(), serve.tokenless_write) {
        (true, false) => "loopback only, no tokens, read-only",
        (true, true) => "loopback only, no tokens, read-write: tokenless_write = true",
        (false, _) => "bearer tokens required",
    }
}

#[cfg(feature = "mqtt")]
type MqttSettings = imstatus_mqtt::MqttSettings;
#[cfg(not(feature = "mqtt"))]
type MqttSettings = std::convert::Infallible;

/// The MQTT client's settings from `[mqtt]`, with each source's title as its Home Assistant
/// device model; any problem is a config error (exit 2).
fn mqtt_settings(
    config: &Config,
    factories: &[&dyn SourceFactory],
) -> Result<Option<MqttSettings>, Failure> {
    let Some(cfg) = &config.mqtt else {
        return Ok(None);
    };
    #[cfg(feature = "mqtt")]
    {
        let models = factories.iter().map(|f| (f.kind(), f.title().to_owned()));
        imstatus_mqtt::MqttSettings::from_config(cfg)
            .map(|s| Some(s.with_models(models)))
            .map_err(|e| Failure::Usage(format!("config: [mqtt]: {e}")))
    }
    #[cfg(not(feature = "mqtt"))]
    {
        let _ = (cfg, factories);
        Err(Failure::Usage(
            "config: [mqtt]: this build of imstatus has no MQTT (built without its cargo feature `mqtt`)"
                .into(),
        ))
    }
}

/// MQTT's task, publishing until `stopped`.
type MqttTask = tokio::task::JoinHandle<Result<(), Box<dyn std::error::Error + Send + Sync>>>;

fn start_mqtt(
    settings: Option<MqttSettings>,
    hub: &Arc<imstatus_hub::Hub>,
    stopped: impl Future<Output = ()> + Send + 'static,
    err: &mut (dyn Write + Send),
) -> Result<Option<MqttTask>, Failure> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    #[cfg(feature = "mqtt")]
    {
        if let Some(warning) = settings.warning() {
            writeln!(err, "imstatus: warning: {warning}")?;
        }
        let hub = hub.clone();
        Ok(Some(tokio::spawn(async move {
            imstatus_mqtt::run_mqtt(hub, settings, stopped)
                .await
                .map_err(Into::into)
        })))
    }
    #[cfg(not(feature = "mqtt"))]
    {
        let _ = (hub, stopped, err);
        match settings {}
    }
}
