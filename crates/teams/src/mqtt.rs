//! `via = "mqtt"`: reads the app's retained topics from the broker.
//!
//! One connection per attempt, with a fresh client id (never the app's: the broker would drop
//! the app and publish its will) and a clean session. It subscribes with QoS 1 to the six
//! topics it reads (`connected`, `status`, `in-call`, `camera`, `microphone`,
//! `screen-sharing` under the prefix; not `<prefix>/#`, so that the app's calendar replies, of
//! any size, and whatever else is published under the prefix never reach it; the doctor reads
//! `<prefix>/#` to list what is there). The state is reported, with `Synced`, once the broker
//! has sent every retained value: the same SUBSCRIBE also asks for a topic of this connection's
//! own (`imstatus-sync/<client id>`), and a message published there right after comes back
//! behind the retained values (a broker queues one client's messages in order; mosquitto sends
//! SUBACK and UNSUBACK ahead of them, so those mark nothing). A broker whose ACL refuses that
//! topic, or drops the marker, gives its retained values [`SETTLE`] instead. The app publishes
//! with QoS 0, so that is what arrives.
//!
//! rumqttc's event loop is polled by a driver task that hands each packet over a channel of [`CHANNEL`] entries; when
//! the channel is full the driver waits, so the socket is not read and TCP holds the broker
//! back (the app's topics are a handful of retained values: the channel is never near full in
//! practice). Payloads larger than anything the app sends are passed on as their size only, and
//! rumqttc refuses packets over [`MAX_PACKET`] (the connection then counts as lost).

use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_core::text::clip;
use imstatus_core::{Backoff, ErrorCode, Observation};
use imstatus_hub::Sink;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions,
    Packet, QoS, SubscribeReasonCode, TlsConfiguration, Transport,
};
use tokio::sync::mpsc;

use crate::config::BrokerOptions;
use crate::translate::{Handled, MqttState, Payload, Reporter, Topics};

/// Packets from the driver to the watch loop; when full, the driver waits (see the module
/// docs).
const CHANNEL: usize = 64;
/// Capacity of rumqttc's request channel (a subscription, an unsubscription, a disconnect).
const REQUESTS: usize = 8;
/// The largest packet read (the app's calendar replies are the largest it sends).
pub(crate) const MAX_PACKET: usize = 1024 * 1024;
/// The longest topic name passed on in full (longer ones are not the app's).
const MAX_TOPIC: usize = 256;
/// The MQTT keep-alive interval.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long connecting (TCP, TLS, CONNACK) may take, in seconds.
const CONNECT_TIMEOUT_SECS: u64 = 5;
/// A connection that held this long resets the backoff.
const STABLE: Duration = Duration::from_secs(10);
/// How long the retained values may take when the marker does not come back (the broker
/// refused its topic, or dropped it).
pub(crate) const SETTLE: Duration = Duration::from_secs(1);
/// After imstatus's own reconnect, if the app was running before and the broker has no
/// `connected` (a broker restarted without persistence, the app not back yet), how long to wait
/// for the app to connect again before it counts as not running.
pub(crate) const RESYNC_GRACE: Duration = Duration::from_secs(5);

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub code: ErrorCode,
    pub detail: String,
    /// Retrying cannot help (the broker refused the credentials).
    pub fatal: bool,
}

/// What the driver hands over.
#[derive(Debug)]
pub(crate) enum Wire {
    /// CONNACK.
    Connected,
    /// SUBACK: were the app's topics granted, and the marker's?
    Subscribed {
        /// Every topic of the app.
        app: bool,
        /// The marker's topic.
        marker: bool,
    },
    /// The marker came back: every retained value is in.
    Barrier,
    /// A message.
    Publish {
        topic: String,
        payload: Payload,
        retain: bool,
    },
    /// The connection ended.
    Lost(Failure),
}

/// One connection to the broker: its driver task is aborted on drop.
pub(crate) struct Link {
    pub rx: mpsc::Receiver<Wire>,
    _client: AsyncClient,
    driver: tokio::task::JoinHandle<()>,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Connects (the password read off the async workers), subscribes to `filters` and the
/// marker's topic, and publishes the marker.
pub(crate) async fn open(options: &BrokerOptions, filters: Vec<String>) -> Result<Link, Failure> {
    let password = match options.password.clone() {
        None => None,
        Some(secret) => Some(
            tokio::task::spawn_blocking(move || secret.read())
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()))
                .map_err(|e| Failure {
                    code: ErrorCode::AuthFailed,
                    detail: format!("cannot read the MQTT password: {e}"),
                    fatal: false,
                })?,
        ),
    };
    let id = client_id();
    let marker = marker_topic(&id);
    let mut mqtt = MqttOptions::new(id, host(options), options.broker.port);
    mqtt.set_keep_alive(KEEP_ALIVE)
        .set_clean_session(true)
        .set_max_packet_size(MAX_PACKET, 64 * 1024)
        .set_request_channel_capacity(REQUESTS);
    if let Some(user) = &options.username {
        mqtt.set_credentials(user.clone(), password.unwrap_or_default());
    }
    if options.broker.tls {
        let ca_file = options.ca_file.clone();
        let config = tokio::task::spawn_blocking(move || {
            imstatus_tls::Roots::load(ca_file.as_deref()).and_then(|r| r.client_config())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_err(|detail| Failure {
            code: ErrorCode::InvalidCertificate,
            detail,
            fatal: false,
        })?;
        mqtt.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
    }
    let (client, mut eventloop) = AsyncClient::new(mqtt, REQUESTS);
    let mut network = NetworkOptions::new();
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(CONNECT_TIMEOUT_SECS);
    eventloop.set_network_options(network);
    let filters = filters
        .into_iter()
        .map(|f| rumqttc::SubscribeFilter::new(f, QoS::AtLeastOnce))
        .chain([rumqttc::SubscribeFilter::new(
            marker.clone(),
            QoS::AtMostOnce,
        )]);
    let queued = client
        .try_subscribe_many(filters)
        .and_then(|()| client.try_publish(marker.clone(), QoS::AtMostOnce, false, "sync"));
    if let Err(e) = queued {
        return Err(Failure {
            code: ErrorCode::ProtocolError,
            detail: format!("queueing the subscription: {e}"),
            fatal: false,
        });
    }
    let (tx, rx) = mpsc::channel(CHANNEL);
    let driver = tokio::spawn(drive(eventloop, tx, options.describe(), marker));
    Ok(Link {
        rx,
        _client: client,
        driver,
    })
}

/// The marker's topic: this connection's own, outside any app prefix.
fn marker_topic(client_id: &str) -> String {
    format!("imstatus-sync/{client_id}")
}

/// rumqttc joins host and port with `:`; an IPv6 literal needs its brackets there.
fn host(options: &BrokerOptions) -> String {
    if options.broker.host.contains(':') {
        format!("[{}]", options.broker.host)
    } else {
        options.broker.host.clone()
    }
}

/// `imstatus-teams-<pid>-<random>`: unique per process and attempt, never the app's.
fn client_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "imstatus-teams-{}-{:06x}",
        std::process::id(),
        nanos & 0xFF_FFFF
    )
}

/// Polls rumqttc's event loop until the connection ends; never reconnects (the watch loop
/// opens a new connection after its backoff).
async fn drive(mut eventloop: EventLoop, tx: mpsc::Sender<Wire>, broker: String, marker: String) {
    let mut connected = false;
    loop {
        let wire = match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                connected = true;
                Wire::Connected
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let granted =
                    |c: &SubscribeReasonCode| matches!(c, SubscribeReasonCode::Success(_));
                match ack.return_codes.split_last() {
                    Some((last, app)) => Wire::Subscribed {
                        app: !app.is_empty() && app.iter().all(granted),
                        marker: granted(last),
                    },
                    None => Wire::Subscribed {
                        app: false,
                        marker: false,
                    },
                }
            }
            Ok(Event::Incoming(Packet::Publish(p))) if p.topic == marker => Wire::Barrier,
            Ok(Event::Incoming(Packet::Publish(p))) => Wire::Publish {
                // Clipped and sanitised: it may be quoted in a detail.
                topic: clip(&p.topic, MAX_TOPIC),
                payload: Payload::capped(&p.payload),
                retain: p.retain,
            },
            Ok(_) => continue,
            Err(e) => {
                let _ = tx.send(Wire::Lost(failure(&e, connected, &broker))).await;
                return;
            }
        };
        if tx.send(wire).await.is_err() {
            return;
        }
    }
}

/// The imstatus code of a connection error.
pub(crate) fn failure(e: &ConnectionError, connected: bool, broker: &str) -> Failure {
    let fail = |code, what: &str| Failure {
        code,
        detail: format!("{broker}: {what}"),
        fatal: false,
    };
    match e {
        ConnectionError::ConnectionRefused(code) => {
            let (error, why, fatal) = match code {
                ConnectReturnCode::BadUserNamePassword => (
                    ErrorCode::AuthFailed,
                    "the broker refused the user name or password (check `username` and \
                     `password_file`)",
                    true,
                ),
                ConnectReturnCode::NotAuthorized => (
                    ErrorCode::AuthFailed,
                    "the broker says not authorised (check `username`, `password_file` and the \
                     broker's ACL)",
                    true,
                ),
                ConnectReturnCode::ServiceUnavailable => (
                    ErrorCode::ServerUnreachable,
                    "the broker is unavailable",
                    false,
                ),
                ConnectReturnCode::RefusedProtocolVersion => (
                    ErrorCode::ProtocolError,
                    "the broker does not speak MQTT 3.1.1",
                    false,
                ),
                ConnectReturnCode::BadClientId | ConnectReturnCode::Success => (
                    ErrorCode::ProtocolError,
                    "the broker refused the client id",
                    false,
                ),
            };
            Failure {
                code: error,
                detail: format!("{broker}: {why}"),
                fatal,
            }
        }
        ConnectionError::Io(io) => fail(io_code(io, connected), &e.to_string()),
        ConnectionError::Tls(tls) => {
            let code = match tls {
                rumqttc::TlsError::TLS(r) => rustls_code(r),
                rumqttc::TlsError::Io(io) => io_code(io, connected),
                _ => ErrorCode::TlsFailed,
            };
            fail(code, &e.to_string())
        }
        ConnectionError::NetworkTimeout | ConnectionError::FlushTimeout => {
            fail(ErrorCode::Timeout, &e.to_string())
        }
        ConnectionError::MqttState(rumqttc::StateError::AwaitPingResp) => fail(
            ErrorCode::Timeout,
            "the broker stopped answering (no PINGRESP)",
        ),
        ConnectionError::MqttState(rumqttc::StateError::Deserialization(d)) => fail(
            ErrorCode::ProtocolError,
            &format!("a packet imstatus cannot read ({d}; at most {MAX_PACKET} bytes)"),
        ),
        ConnectionError::MqttState(rumqttc::StateError::Io(io)) => {
            fail(io_code(io, connected), &e.to_string())
        }
        ConnectionError::MqttState(rumqttc::StateError::ConnectionAborted) => {
            fail(ErrorCode::Disconnected, "the broker closed the connection")
        }
        _ if connected => fail(ErrorCode::Disconnected, &e.to_string()),
        _ => fail(ErrorCode::ProtocolError, &e.to_string()),
    }
}

fn io_code(io: &std::io::Error, connected: bool) -> ErrorCode {
    use std::io::ErrorKind;
    if let Some(r) = io
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<imstatus_tls::rustls::Error>())
    {
        return rustls_code(r);
    }
    match io.kind() {
        ErrorKind::TimedOut => ErrorCode::Timeout,
        _ if connected => ErrorCode::Disconnected,
        ErrorKind::ConnectionRefused
        | ErrorKind::ConnectionReset
        | ErrorKind::AddrNotAvailable
        | ErrorKind::NotConnected => ErrorCode::ServerUnreachable,
        _ if io.to_string().contains("lookup") || io.to_string().contains("resolve") => {
            ErrorCode::DnsFailed
        }
        _ => ErrorCode::ServerUnreachable,
    }
}

fn rustls_code(e: &imstatus_tls::rustls::Error) -> ErrorCode {
    match e {
        imstatus_tls::rustls::Error::InvalidCertificate(_) => ErrorCode::InvalidCertificate,
        _ => ErrorCode::TlsFailed,
    }
}

/// Watches the app through the broker forever (or until the broker refuses the credentials).
pub(crate) async fn run(options: BrokerOptions, sink: Sink, seed: u64, grace: Duration) {
    if let Some(warning) = options.warning() {
        tracing::warn!("{warning}");
    }
    let topics = Topics::new(options.topic_prefix.clone());
    let mut state = MqttState::new(topics.clone());
    let mut reporter = Reporter::new();
    let mut backoff = Backoff::new(seed);
    loop {
        let started = Instant::now();
        let failure = watch(&options, &topics, &mut state, &mut reporter, &sink, grace).await;
        tracing::debug!(code = %failure.code, detail = %failure.detail, "teams-for-linux: broker lost");
        sink.observe(Observation::SourceDown(failure.code, failure.detail));
        if failure.fatal {
            return;
        }
        state.reconnecting();
        if started.elapsed() >= STABLE {
            backoff.reset();
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// What the watch loop waits for before it reports the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// The retained values (the marker, or [`SETTLE`] without one).
    Retained,
    /// The app's `connected`, after a reconnect that found none ([`RESYNC_GRACE`]).
    App,
}

/// One connection: subscribe, report the retained state once it is all in, then follow;
/// returns why it ended.
async fn watch(
    options: &BrokerOptions,
    topics: &Topics,
    state: &mut MqttState,
    reporter: &mut Reporter,
    sink: &Sink,
    grace: Duration,
) -> Failure {
    let mut link = match open(options, topics.read()).await {
        Ok(link) => link,
        Err(failure) => return failure,
    };
    // Was the app running when imstatus last saw it? Then a missing `connected` once the
    // retained values are in may only mean the broker lost it: wait up to `grace` for the app.
    let was_running = reporter.last_running();
    let mut synced = false;
    let mut timer: Option<(tokio::time::Instant, Wait)> = None;
    // The retained values are in: report, or wait for the app first.
    let retained_in = |state: &MqttState,
                       reporter: &mut Reporter,
                       synced: &mut bool,
                       timer: &mut Option<(tokio::time::Instant, Wait)>| {
        if was_running && state.connected().is_none() {
            *timer = Some((tokio::time::Instant::now() + grace, Wait::App));
        } else {
            *timer = None;
            *synced = true;
            sink.observe_all(reporter.sync(state.view()));
        }
    };
    loop {
        let wire = tokio::select! {
            wire = link.rx.recv() => wire,
            () = sleep_until(timer.map(|(t, _)| t)), if timer.is_some() => {
                if timer.is_some_and(|(_, w)| w == Wait::Retained) {
                    retained_in(state, reporter, &mut synced, &mut timer);
                } else {
                    timer = None;
                    synced = true;
                    sink.observe_all(reporter.sync(state.view()));
                }
                continue;
            }
        };
        let Some(wire) = wire else {
            return Failure {
                code: ErrorCode::Disconnected,
                detail: format!("{}: the connection task ended", options.describe()),
                fatal: false,
            };
        };
        match wire {
            Wire::Connected => {
                tracing::debug!(broker = %options.describe(), "teams-for-linux: broker connected")
            }
            Wire::Subscribed { app: false, .. } => {
                return Failure {
                    code: ErrorCode::AccessDenied,
                    detail: format!(
                        "{}: the broker refused the subscription to {} (check the broker's ACL \
                         for this user)",
                        options.describe(),
                        topics.read().join(", ")
                    ),
                    fatal: false,
                }
            }
            Wire::Subscribed { marker, .. } => {
                if !marker {
                    tracing::debug!("teams-for-linux: the broker refused the marker's topic");
                }
                // The limit for the retained values, should the marker not come back.
                if !synced && timer.is_none() {
                    timer = Some((tokio::time::Instant::now() + SETTLE, Wait::Retained));
                }
            }
            Wire::Barrier => {
                if !synced && timer.is_none_or(|(_, w)| w == Wait::Retained) {
                    retained_in(state, reporter, &mut synced, &mut timer);
                }
            }
            Wire::Publish {
                topic,
                payload,
                retain,
            } => {
                if let Handled::Bad(why) = state.handle(&topic, &payload, retain) {
                    tracing::debug!(%why, "teams-for-linux: unexpected MQTT payload");
                    sink.observe(Observation::Anomaly(ErrorCode::ProtocolError, why));
                }
                if synced {
                    let changes = reporter.update(state.view());
                    if !changes.is_empty() {
                        sink.observe_all(changes);
                    }
                } else if timer.is_some_and(|(_, w)| w == Wait::App) && state.connected().is_some()
                {
                    timer = None;
                    synced = true;
                    sink.observe_all(reporter.sync(state.view()));
                }
            }
            Wire::Lost(failure) => return failure,
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_map_to_codes() {
        let refused = |c| failure(&ConnectionError::ConnectionRefused(c), false, "b");
        let f = refused(ConnectReturnCode::BadUserNamePassword);
        assert_eq!((f.code, f.fatal), (ErrorCode::AuthFailed, true));
        let f = refused(ConnectReturnCode::NotAuthorized);
        assert_eq!((f.code, f.fatal), (ErrorCode::AuthFailed, true));
        let f = refused(ConnectReturnCode::ServiceUnavailable);
        assert_eq!((f.code, f.fatal), (ErrorCode::ServerUnreachable, false));
        let io = |kind| ConnectionError::Io(std::io::Error::from(kind));
        assert_eq!(
            failure(&io(std::io::ErrorKind::ConnectionRefused), false, "b").code,
            ErrorCode::ServerUnreachable
        );
        assert_eq!(
            failure(&io(std::io::ErrorKind::ConnectionReset), true, "b").code,
            ErrorCode::Disconnected
        );
        assert_eq!(
            failure(&ConnectionError::NetworkTimeout, false, "b").code,
            ErrorCode::Timeout
        );
        let bad_cert = ConnectionError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            imstatus_tls::rustls::Error::InvalidCertificate(
                imstatus_tls::rustls::CertificateError::UnknownIssuer,
            ),
        ));
        assert_eq!(
            failure(&bad_cert, false, "b").code,
            ErrorCode::InvalidCertificate
        );
        let f = failure(
            &ConnectionError::MqttState(rumqttc::StateError::AwaitPingResp),
            true,
            "mqtt://h:1",
        );
        assert_eq!(f.code, ErrorCode::Timeout);
        assert!(f.detail.starts_with("mqtt://h:1: "), "{}", f.detail);
    }

    #[test]
    fn client_ids_are_never_the_apps() {
        let id = client_id();
        assert!(id.starts_with("imstatus-teams-"), "{id}");
        assert_ne!(id, crate::names::APP_CLIENT_ID);
    }

    #[test]
    fn the_marker_is_outside_the_apps_topics() {
        let t = Topics::new("teams");
        let marker = marker_topic("imstatus-teams-1-abc");
        assert_eq!(marker, "imstatus-sync/imstatus-teams-1-abc");
        assert!(!t.is_known(&marker));
        assert!(!t.read().contains(&marker));
    }
}
