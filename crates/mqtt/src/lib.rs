//! imstatus over MQTT with Home Assistant discovery: every account's state as retained MQTT
//! topics (`imstatus serve`, config `[mqtt]`).
//!
//! The design in a paragraph: [`run_mqtt`] consumes its own hub
//! [`Subscription`](imstatus_hub::Subscription), folds the events into one
//! [`Snapshot`] per account with [`Snapshot::apply`], and turns each snapshot into the
//! *desired* retained payload of each topic. An outbox keeps, per topic, the latest payload
//! and whether the broker has it; it is flushed with rumqttc's non-blocking `try_publish`
//! only while connected. So a broker that is slow or down never makes anything wait: the hub
//! never waits for this subscriber (the loop never awaits the broker), intermediate values of
//! a topic are coalesced into the latest, and memory is bounded by the number of topics.
//! rumqttc's event loop is polled by a driver task of ours, which reports connections, Home
//! Assistant's birth messages and progress over a `watch` channel; after each connection (and
//! each birth message) every topic is marked unsent and published again. Reconnecting follows
//! [`Backoff`] (never rumqttc's own retries); a broker that refuses the credentials is fatal.
//!
//! # Topics
//!
//! With the default topic prefix `imstatus` (all retained, QoS 1):
//!
//! | topic | payload |
//! |---|---|
//! | `imstatus/status` | `online` while connected; `offline` on shutdown and as the last will |
//! | `imstatus/<account>/state` | the account's `snapshot` JSON (as in `docs/events.md`), without contacts |
//! | `imstatus/<account>/availability` | `offline`, `available`, `chatty`, `invisible`, `busy`, `away`, `extended_away` or `unknown` |
//! | `imstatus/<account>/signed_in` | `ON` (session `signed_in`), `OFF` (any other known session), `None` (session `unknown`) |
//! | `imstatus/<account>/running` | `ON` (client `running`), `OFF` (`not_running`, `starting`), `None` (client `unknown`, e.g. any XMPP account) |
//! | `imstatus/<account>/{microphone,camera,in_call,idle,locked}` | `ON`/`OFF`, only for an account whose snapshot has an `activity` (the desktop source) |
//!
//! `None` is Home Assistant's payload for "unknown" on a binary sensor.
//!
//! # Home Assistant discovery
//!
//! Under the discovery prefix (`homeassistant`), retained, per account (`<node>` is the topic
//! prefix with characters outside `[A-Za-z0-9_-]` replaced by `_`; `<object>` is the account
//! name, see [`object_id`]):
//!
//! | topic | entity |
//! |---|---|
//! | `homeassistant/binary_sensor/<node>/<object>_running/config` | device class `connectivity`: the client is running |
//! | `homeassistant/binary_sensor/<node>/<object>_signed_in/config` | device class `presence`: the user is signed in |
//! | `homeassistant/sensor/<node>/<object>_availability/config` | device class `enum` with every [`Availability`] as `options`; the state JSON as attributes |
//!
//! | `homeassistant/binary_sensor/<node>/<object>_{microphone,camera,in_call,idle,locked}/config` | the activity's five binary sensors ([`ACTIVITY_SENSORS`]), only for an account whose snapshot has an `activity` |
//!
//! All of an account's entities share one `device` (identifier `<node>_<object>`), have the
//! stable `unique_id` `<node>_<object>_<leaf>` (`running`, `signed_in`, `availability`,
//! `microphone`…) and name the status topic as their `availability_topic`. When Home
//! Assistant publishes `online` on `homeassistant/status` (its birth message; also
//! `<discovery prefix>/status` when the prefix differs), everything is published again.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_core::{
    AccountId, Activity, Availability, Backoff, Client, Event, EventKind, Session, Snapshot,
    SourceKind, Timestamp,
};
use imstatus_hub::Hub;
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, EventLoop, LastWill, MqttOptions,
    NetworkOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport,
};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{watch, Notify};

/// The default topic prefix.
pub const DEFAULT_TOPIC_PREFIX: &str = "imstatus";
/// The default Home Assistant discovery prefix.
pub const DEFAULT_DISCOVERY_PREFIX: &str = "homeassistant";
/// Where Home Assistant publishes its birth (`online`) and will (`offline`) by default.
pub const HA_STATUS_TOPIC: &str = "homeassistant/status";
/// The default MQTT keep-alive interval.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long [`run_mqtt`] tries to publish `offline` and disconnect on shutdown.
pub const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(3);
/// Payload of the status topic while connected.
pub const ONLINE: &str = "online";
/// Payload of the status topic after shutdown, and the last will.
pub const OFFLINE: &str = "offline";

/// Capacity of rumqttc's request channel. When it is full, topics stay unsent in the outbox
/// (which holds one payload per topic, never a queue of changes) until the driver makes
/// progress.
const REQUEST_CAPACITY: usize = 64;
/// Largest packet in either direction (a state JSON with many resources stays far below).
const MAX_PACKET: usize = 256 * 1024;
/// After DISCONNECT, how long to wait for the broker to close the connection.
const LINGER: Duration = Duration::from_secs(1);
/// How long one connection attempt (TCP, TLS, CONNACK) may take, in seconds.
const CONNECT_TIMEOUT_SECS: u64 = 5;
/// At most this many events that are already waiting are folded before the next flush.
const BATCH: usize = 256;
/// A connection that lasted this long resets the backoff.
const STABLE_CONNECTION: Duration = Duration::from_secs(10);

/// What went wrong: settings that cannot work, or a broker that refuses us for good.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The broker URL cannot be used.
    #[error("mqtt: url `{url}`: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// Why.
        reason: String,
    },
    /// Another setting cannot be used.
    #[error("mqtt: `{key}`: {reason}")]
    Setting {
        /// The config key (`topic_prefix`, `discovery_prefix`, `client_id`, `username`…).
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// The CA file cannot be read or holds no usable certificate.
    #[error("mqtt: ca_file {path}: {reason}")]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The broker refused the connection for a reason retrying cannot fix (bad user name or
    /// password, not authorised, client id or protocol rejected).
    #[error("mqtt: the broker {broker} refused the connection: {reason}")]
    Refused {
        /// `host:port`.
        broker: String,
        /// The CONNACK return code, in words.
        reason: String,
    },
    /// The task that drives the MQTT connection failed (a bug in imstatus or rumqttc).
    #[error("mqtt: the connection task failed: {0}")]
    Crashed(String),
}

/// Where the broker is.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Broker {
    host: String,
    port: u16,
    tls: bool,
}

/// How [`run_mqtt`] connects and names its topics. Build it with [`MqttSettings::new`] and
/// the `with_*` methods; the password is given as a string already read (from
/// `password_file`) and never printed by `Debug`.
#[derive(Clone)]
pub struct MqttSettings {
    url: String,
    broker: Broker,
    discovery_prefix: String,
    topic_prefix: String,
    client_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
    ca_file: Option<PathBuf>,
    keep_alive: Duration,
    backoff_seed: Option<u64>,
    /// The Home Assistant device model of each source kind (its factory's description).
    models: HashMap<SourceKind, String>,
}

impl fmt::Debug for MqttSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MqttSettings")
            .field("url", &self.url)
            .field("discovery_prefix", &self.discovery_prefix)
            .field("topic_prefix", &self.topic_prefix)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("ca_file", &self.ca_file)
            .field("keep_alive", &self.keep_alive)
            .finish()
    }
}

impl MqttSettings {
    /// Settings for the broker at `url`: `mqtt://host[:port]` (default port 1883) or
    /// `mqtts://host[:port]` (TLS, default port 8883; `tcp://` and `ssl://` are accepted too).
    /// User names and passwords do not belong in the URL.
    pub fn new(url: &str) -> Result<Self, Error> {
        Ok(MqttSettings {
            url: url.to_owned(),
            broker: parse_url(url)?,
            discovery_prefix: DEFAULT_DISCOVERY_PREFIX.to_owned(),
            topic_prefix: DEFAULT_TOPIC_PREFIX.to_owned(),
            client_id: None,
            username: None,
            password: None,
            ca_file: None,
            keep_alive: DEFAULT_KEEP_ALIVE,
            backoff_seed: None,
            models: HashMap::new(),
        })
    }

    /// The Home Assistant discovery prefix (default `homeassistant`).
    pub fn with_discovery_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.discovery_prefix = prefix.into();
        self
    }

    /// The prefix of imstatus's own topics (default `imstatus`).
    pub fn with_topic_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.topic_prefix = prefix.into();
        self
    }

    /// The MQTT client id (default `imstatus-<pid>-<random>`, unique per process).
    pub fn with_client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The user name to log in with.
    pub fn with_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password (already read from its file); needs a user name.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// A PEM file of extra trusted CA certificates for `mqtts://` (added to the system's).
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(path.into());
        self
    }

    /// The MQTT keep-alive interval (default 30 s; at least 5 s).
    pub fn with_keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Seeds the reconnect jitter (tests); by default it differs per process.
    pub fn with_backoff_seed(mut self, seed: u64) -> Self {
        self.backoff_seed = Some(seed);
        self
    }

    /// Names the Home Assistant device model of each source kind (e.g. from the source
    /// factories' descriptions); a kind without one is shown as `<kind> source`.
    pub fn with_models(mut self, models: impl IntoIterator<Item = (SourceKind, String)>) -> Self {
        self.models.extend(models);
        self
    }

    /// Settings from the config's `[mqtt]` section; reads the password (blocking: a file or
    /// a command).
    pub fn from_config(config: &imstatus_config::MqttConfig) -> Result<Self, Error> {
        let mut s = MqttSettings::new(&config.url)?
            .with_discovery_prefix(config.discovery_prefix.clone())
            .with_topic_prefix(config.topic_prefix.clone());
        if let Some(id) = &config.client_id {
            s = s.with_client_id(id.clone());
        }
        if let Some(user) = &config.username {
            s = s.with_username(user.clone());
        }
        if let Some(password) = &config.password {
            let password = password.read().map_err(|e| Error::Setting {
                key: "password_file",
                reason: e.to_string(),
            })?;
            s = s.with_password(password);
        }
        if let Some(ca) = &config.ca_file {
            s = s.with_ca_file(ca.clone());
        }
        s.validate()?;
        Ok(s)
    }

    /// A warning to show at start-up, if any: a user name and password sent without TLS to a
    /// broker on another machine, where anyone on the path can read them.
    pub fn warning(&self) -> Option<String> {
        let loopback = self.broker.host.eq_ignore_ascii_case("localhost")
            || self
                .broker
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        (self.username.is_some() && !self.broker.tls && !loopback).then(|| {
            format!(
                "mqtt: the user name and password go to {} without TLS, readable on the \
                 network; use mqtts:// (see docs/mqtt.md)",
                self.broker()
            )
        })
    }

    /// Checks every setting without touching the network or the CA file; [`run_mqtt`] calls
    /// it too, so a config loader can report mistakes early.
    pub fn validate(&self) -> Result<(), Error> {
        check_prefix("topic_prefix", &self.topic_prefix)?;
        check_prefix("discovery_prefix", &self.discovery_prefix)?;
        if let Some(id) = &self.client_id {
            if id.is_empty() || id.len() > 65535 || id.chars().any(char::is_control) {
                return Err(Error::Setting {
                    key: "client_id",
                    reason: "must be 1 to 65535 bytes without control characters".to_owned(),
                });
            }
        }
        if let Some(user) = &self.username {
            if user.is_empty() || user.len() > 65535 {
                return Err(Error::Setting {
                    key: "username",
                    reason: "must be 1 to 65535 bytes".to_owned(),
                });
            }
        }
        if let Some(password) = &self.password {
            if self.username.is_none() {
                return Err(Error::Setting {
                    key: "password_file",
                    reason: "MQTT sends a password only with a user name: set `username` too"
                        .to_owned(),
                });
            }
            if password.len() > 65535 {
                return Err(Error::Setting {
                    key: "password_file",
                    reason: "the password is longer than 65535 bytes".to_owned(),
                });
            }
        }
        if self.ca_file.is_some() && !self.broker.tls {
            return Err(Error::Setting {
                key: "ca_file",
                reason: format!(
                    "a CA file is only used with TLS: write the url as `mqtts://{}:…`",
                    self.broker.host
                ),
            });
        }
        if self.keep_alive < Duration::from_secs(5) {
            return Err(Error::Setting {
                key: "keep_alive",
                reason: "must be at least 5 s".to_owned(),
            });
        }
        Ok(())
    }

    /// The broker as `host:port`.
    pub fn broker(&self) -> String {
        if self.broker.host.contains(':') {
            format!("[{}]:{}", self.broker.host, self.broker.port)
        } else {
            format!("{}:{}", self.broker.host, self.broker.port)
        }
    }

    /// The status topic: `online` / `offline`, the last will (`imstatus/status`).
    pub fn status_topic(&self) -> String {
        format!("{}/status", self.topic_prefix)
    }

    /// One of an account's state topics: `leaf` is `state`, `availability`, `signed_in` or
    /// `running` (`imstatus/alice/availability`).
    pub fn account_topic(&self, account: &AccountId, leaf: &str) -> String {
        format!("{}/{}/{leaf}", self.topic_prefix, account)
    }

    /// The Home Assistant node id: the topic prefix with characters outside
    /// `[A-Za-z0-9_-]` replaced by `_`.
    pub fn node_id(&self) -> String {
        self.topic_prefix
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect()
    }

    /// The topics on which Home Assistant's birth message is awaited.
    pub fn birth_topics(&self) -> Vec<String> {
        let mut topics = vec![HA_STATUS_TOPIC.to_owned()];
        let own = format!("{}/status", self.discovery_prefix);
        if own != HA_STATUS_TOPIC {
            topics.push(own);
        }
        topics
    }

    /// The retained discovery configs of one account: (topic, JSON payload) for the
    /// `running` and `signed_in` binary sensors and the `availability` enum sensor.
    pub fn discovery_configs(
        &self,
        account: &AccountId,
        source: SourceKind,
    ) -> Vec<(String, Value)> {
        let common = |name: &str, what: &str| self.entity(account, &source, name, what);
        let topic = |component: &str, what: &str| self.config_topic(component, account, what);
        let mut running = common("Client running", "running");
        running["device_class"] = json!("connectivity");
        running["payload_on"] = json!("ON");
        running["payload_off"] = json!("OFF");
        let mut signed_in = common("Signed in", "signed_in");
        signed_in["device_class"] = json!("presence");
        signed_in["payload_on"] = json!("ON");
        signed_in["payload_off"] = json!("OFF");
        let mut availability = common("Availability", "availability");
        availability["device_class"] = json!("enum");
        availability["options"] = json!(Availability::ALL
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>());
        availability["json_attributes_topic"] = json!(self.account_topic(account, "state"));
        vec![
            (topic("binary_sensor", "running"), running),
            (topic("binary_sensor", "signed_in"), signed_in),
            (topic("sensor", "availability"), availability),
        ]
    }

    /// The retained discovery configs of the activity's binary sensors (see
    /// [`ACTIVITY_SENSORS`]), published for accounts whose snapshot has an `activity`:
    /// (topic, JSON payload), in the order of [`ACTIVITY_SENSORS`].
    pub fn activity_configs(
        &self,
        account: &AccountId,
        source: SourceKind,
    ) -> Vec<(String, Value)> {
        ACTIVITY_SENSORS
            .iter()
            .map(|sensor| {
                let mut config = self.entity(account, &source, sensor.name, sensor.leaf);
                if let Some(class) = sensor.device_class {
                    config["device_class"] = json!(class);
                }
                config["icon"] = json!(sensor.icon);
                config["payload_on"] = json!("ON");
                config["payload_off"] = json!("OFF");
                (
                    self.config_topic("binary_sensor", account, sensor.leaf),
                    config,
                )
            })
            .collect()
    }

    /// What every entity of `account` shares: name, `unique_id`, state topic (`leaf`), the
    /// status topic as availability, one device, the origin.
    fn entity(&self, account: &AccountId, source: &SourceKind, name: &str, leaf: &str) -> Value {
        let device_id = format!("{}_{}", self.node_id(), object_id(account));
        json!({
            "name": name,
            "unique_id": format!("{device_id}_{leaf}"),
            "state_topic": self.account_topic(account, leaf),
            "availability_topic": self.status_topic(),
            "payload_available": ONLINE,
            "payload_not_available": OFFLINE,
            "device": {
                "identifiers": [device_id],
                "name": format!("imstatus {account}"),
                "manufacturer": "imstatus",
                "model": self.model(source),
                "sw_version": env!("CARGO_PKG_VERSION"),
            },
            "origin": {
                "name": "imstatus",
                "sw_version": env!("CARGO_PKG_VERSION"),
            },
        })
    }

    /// `<discovery prefix>/<component>/<node>/<object>_<leaf>/config`.
    fn config_topic(&self, component: &str, account: &AccountId, leaf: &str) -> String {
        format!(
            "{}/{component}/{}/{}_{leaf}/config",
            self.discovery_prefix,
            self.node_id(),
            object_id(account)
        )
    }

    fn model(&self, source: &SourceKind) -> String {
        self.models
            .get(source)
            .cloned()
            .unwrap_or_else(|| format!("{source} source"))
    }

    /// rumqttc's options: client id, last will, credentials, keep-alive, TLS.
    fn mqtt_options(&self) -> Result<MqttOptions, Error> {
        let client_id = self.client_id.clone().unwrap_or_else(default_client_id);
        // rumqttc joins host and port with a `:`; an IPv6 literal needs its brackets there.
        let host = if self.broker.host.contains(':') {
            format!("[{}]", self.broker.host)
        } else {
            self.broker.host.clone()
        };
        let mut options = MqttOptions::new(client_id, host, self.broker.port);
        options
            .set_keep_alive(self.keep_alive)
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_request_channel_capacity(REQUEST_CAPACITY)
            .set_last_will(LastWill::new(
                self.status_topic(),
                OFFLINE,
                QoS::AtLeastOnce,
                true,
            ));
        if let Some(user) = &self.username {
            options.set_credentials(user.clone(), self.password.clone().unwrap_or_default());
        }
        if self.broker.tls {
            let config = tls_config(self.ca_file.as_deref())?;
            options.set_transport(Transport::Tls(TlsConfiguration::Rustls(Arc::new(config))));
        }
        Ok(options)
    }
}

fn parse_url(url: &str) -> Result<Broker, Error> {
    let bad = |reason: &str| Error::Url {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("expected mqtt://host[:port] or mqtts://host[:port]"))?;
    let (tls, default_port) = match scheme.to_ascii_lowercase().as_str() {
        "mqtt" | "tcp" => (false, 1883),
        "mqtts" | "ssl" => (true, 8883),
        _ => return Err(bad("the scheme must be mqtt:// or mqtts:// (TLS)")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('@') {
        return Err(bad(
            "no credentials in the url: set `username` and `password_file` in [mqtt]",
        ));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(bad("expected only host[:port] after the scheme"));
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("an IPv6 address needs its closing `]`"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(bad("not an IPv6 address between `[` and `]`"));
        }
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| bad("expected `:port` after `]`"))?,
            ),
        };
        (host, port)
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err(bad("the host is missing"));
    }
    if tls && host.contains(':') {
        return Err(bad("TLS needs a host name, not an IPv6 address"));
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p != 0 => p,
            _ => return Err(bad("the port must be a number from 1 to 65535")),
        },
    };
    Ok(Broker {
        host: host.to_owned(),
        port,
        tls,
    })
}

fn check_prefix(key: &'static str, prefix: &str) -> Result<(), Error> {
    let reason = if prefix.is_empty() {
        "must not be empty"
    } else if prefix.contains(['+', '#']) {
        "must not contain the MQTT wildcards `+` or `#`"
    } else if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        "must not start or end with `/` or have empty levels"
    } else if prefix.chars().any(char::is_control) {
        "must not contain control characters"
    } else {
        return Ok(());
    };
    Err(Error::Setting {
        key,
        reason: reason.to_owned(),
    })
}

/// An account name as a Home Assistant object id (`[A-Za-z0-9_-]`): unchanged when it fits;
/// otherwise (a name with `.`) the dots become `_` and a short hash of the name keeps it
/// unique (`work.im` → `work_im_1b0e6a3c`).
pub fn object_id(account: &AccountId) -> String {
    let name = account.as_str();
    let fits = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if name.chars().all(fits) {
        return name.to_owned();
    }
    let digest = Sha256::digest(name.as_bytes());
    let mut id: String = name
        .chars()
        .map(|c| if fits(c) { c } else { '_' })
        .collect();
    id.push('_');
    for b in &digest[..4] {
        id.push_str(&format!("{b:02x}"));
    }
    id
}

fn default_client_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("imstatus-{}-{:06x}", std::process::id(), nanos & 0xFF_FFFF)
}

fn default_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// rustls with ring: the system roots plus the PEM certificates of `ca_file`
/// ([`imstatus_tls::Roots`], the same loader as every other client of imstatus).
fn tls_config(ca_file: Option<&Path>) -> Result<imstatus_tls::rustls::ClientConfig, Error> {
    let roots = imstatus_tls::Roots::load(ca_file).map_err(|e| match e {
        imstatus_tls::Error::CaFile { path, reason } => Error::CaFile { path, reason },
        other => Error::Setting {
            key: "ca_file",
            reason: other.to_string(),
        },
    })?;
    roots.client_config().map_err(|e| Error::Setting {
        key: "url",
        reason: e.to_string(),
    })
}

/// One binary sensor of the activity axis.
#[derive(Clone, Copy, Debug)]
pub struct ActivitySensor {
    /// The last level of its state topic and of its `unique_id` (`microphone`).
    pub leaf: &'static str,
    /// Its name in Home Assistant (`Microphone in use`).
    pub name: &'static str,
    /// Its Home Assistant device class, where one fits.
    pub device_class: Option<&'static str>,
    /// Its icon.
    pub icon: &'static str,
    /// Its state in an activity.
    pub read: fn(&Activity) -> bool,
}

/// The activity's binary sensors, in the order they are published. Device classes: `running`
/// ("Running"/"Not running") for the microphone and the camera, which an application is
/// running; none for the others, where Home Assistant has no class that means it (`lock` means
/// *unlocked* when on, which would make "Screen locked" `on` while unlocked).
pub const ACTIVITY_SENSORS: [ActivitySensor; 5] = [
    ActivitySensor {
        leaf: "microphone",
        name: "Microphone in use",
        device_class: Some("running"),
        icon: "mdi:microphone",
        read: |a| a.microphone,
    },
    ActivitySensor {
        leaf: "camera",
        name: "Camera in use",
        device_class: Some("running"),
        icon: "mdi:webcam",
        read: |a| a.camera,
    },
    ActivitySensor {
        leaf: "in_call",
        name: "On a call",
        device_class: None,
        icon: "mdi:phone-in-talk",
        read: |a| a.in_call,
    },
    ActivitySensor {
        leaf: "idle",
        name: "Idle",
        device_class: None,
        icon: "mdi:sleep",
        read: |a| a.idle,
    },
    ActivitySensor {
        leaf: "locked",
        name: "Screen locked",
        device_class: None,
        icon: "mdi:monitor-lock",
        read: |a| a.locked,
    },
];

/// `ON`/`OFF`/`None` for the `running` binary sensor.
fn running_payload(client: Client) -> &'static str {
    match client {
        Client::Running => "ON",
        Client::NotRunning | Client::Starting => "OFF",
        Client::Unknown => "None",
    }
}

/// `ON`/`OFF`/`None` for the `signed_in` binary sensor.
fn signed_in_payload(session: Session) -> &'static str {
    match session {
        Session::SignedIn => "ON",
        Session::SignedOut | Session::SigningIn | Session::SigningOut => "OFF",
        Session::Unknown => "None",
    }
}

// ------------------------------------------------------------------ the outbox

/// Publishing order within one flush: discovery first, then states, then `online`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Class {
    Discovery,
    State,
    Status,
}

type Key = (Class, String);

/// The desired retained payload of every topic, and which ones the broker lacks.
#[derive(Debug, Default)]
struct Outbox {
    payloads: HashMap<Key, Vec<u8>>,
    unsent: BTreeSet<Key>,
    /// Subscribe to the birth topics before anything else.
    subscribe: bool,
}

enum Flushed {
    /// Everything is with rumqttc.
    Done,
    /// rumqttc's channel is full: try again after the driver makes progress.
    Full,
}

impl Outbox {
    fn set(&mut self, class: Class, topic: String, payload: impl Into<Vec<u8>>) {
        let key = (class, topic);
        let payload = payload.into();
        if self.payloads.get(&key) == Some(&payload) {
            return;
        }
        self.payloads.insert(key.clone(), payload);
        self.unsent.insert(key);
    }

    /// Everything again (a new connection, or Home Assistant restarted).
    fn resend_all(&mut self) {
        self.unsent.extend(self.payloads.keys().cloned());
    }

    fn flush(&mut self, client: &AsyncClient, birth_topics: &[String]) -> Flushed {
        if self.subscribe {
            let filters = birth_topics
                .iter()
                .map(|t| rumqttc::SubscribeFilter::new(t.clone(), QoS::AtLeastOnce));
            if client.try_subscribe_many(filters).is_err() {
                return Flushed::Full;
            }
            self.subscribe = false;
        }
        while let Some(key) = self.unsent.first().cloned() {
            let payload = self.payloads.get(&key).cloned().unwrap_or_default();
            if client
                .try_publish(key.1.clone(), QoS::AtLeastOnce, true, payload)
                .is_err()
            {
                return Flushed::Full;
            }
            self.unsent.remove(&key);
        }
        Flushed::Done
    }
}

/// One account as folded from the subscription.
struct Account {
    snapshot: Snapshot,
    seq: u64,
    time: Timestamp,
    source: SourceKind,
    /// The activity's discovery configs are set in the outbox (not erased).
    activity: bool,
}

/// The fold of the subscription and the topics it produces.
struct Publisher {
    settings: MqttSettings,
    accounts: HashMap<AccountId, Account>,
    outbox: Outbox,
}

impl Publisher {
    fn new(settings: MqttSettings) -> Self {
        let mut outbox = Outbox::default();
        outbox.set(Class::Status, settings.status_topic(), ONLINE);
        Publisher {
            settings,
            accounts: HashMap::new(),
            outbox,
        }
    }

    fn handle_event(&mut self, event: &Event) {
        // Other people's presence is not published, and must not re-publish the state.
        if matches!(event.kind, EventKind::ContactStatusChanged { .. }) {
            return;
        }
        if !self.accounts.contains_key(&event.account) {
            // The first event of an account is its snapshot (the hub's contract); should a
            // change ever come first, it is folded into "unknown" rather than dropped.
            self.accounts.insert(
                event.account.clone(),
                Account {
                    snapshot: Snapshot::unknown(),
                    seq: 0,
                    time: event.time,
                    source: event.source.clone(),
                    activity: false,
                },
            );
            for (topic, config) in self
                .settings
                .discovery_configs(&event.account, event.source.clone())
            {
                self.outbox.set(Class::Discovery, topic, config.to_string());
            }
        }
        let Some(account) = self.accounts.get_mut(&event.account) else {
            return;
        };
        // A snapshot (first, or a resync) replaces the state; a change is folded into it.
        account.snapshot.apply(&event.kind, event.time);
        account.snapshot.contacts.clear();
        account.seq = event.seq;
        account.time = event.time;
        account.source = event.source.clone();
        self.publish_state(&event.account);
    }

    fn publish_state(&mut self, name: &AccountId) {
        self.publish_activity(name);
        let Some(account) = self.accounts.get(name) else {
            return;
        };
        let s = &account.snapshot;
        let event = Event {
            seq: account.seq,
            time: account.time,
            account: name.clone(),
            source: account.source.clone(),
            kind: EventKind::Snapshot {
                snapshot: Box::new(s.clone()),
                resync: false,
            },
        };
        // Serialising our own types into a string cannot fail; keep the topic as it was if
        // it ever did.
        if let Ok(json) = serde_json::to_string(&event) {
            self.outbox.set(
                Class::State,
                self.settings.account_topic(name, "state"),
                json,
            );
        }
        let topics = [
            ("availability", s.availability.as_str()),
            ("signed_in", signed_in_payload(s.session)),
            ("running", running_payload(s.client)),
        ];
        for (leaf, payload) in topics {
            self.outbox.set(
                Class::State,
                self.settings.account_topic(name, leaf),
                payload,
            );
        }
    }

    /// The activity's sensors follow the snapshot: configs and `ON`/`OFF` states while it has
    /// an `activity`; should it ever lose it, empty retained payloads erase both (Home
    /// Assistant removes an entity whose config is erased). An account that never had one
    /// gets none of these topics.
    fn publish_activity(&mut self, name: &AccountId) {
        let Publisher {
            settings,
            accounts,
            outbox,
        } = self;
        let Some(account) = accounts.get_mut(name) else {
            return;
        };
        let activity = account.snapshot.activity.as_ref();
        let had = account.activity;
        account.activity = activity.is_some();
        if !had && activity.is_none() {
            return;
        }
        if had != activity.is_some() {
            for (topic, config) in settings.activity_configs(name, account.source.clone()) {
                let payload = match activity {
                    Some(_) => config.to_string(),
                    None => String::new(),
                };
                outbox.set(Class::Discovery, topic, payload);
            }
        }
        for sensor in &ACTIVITY_SENSORS {
            let payload = match activity {
                Some(a) if (sensor.read)(a) => "ON",
                Some(_) => "OFF",
                None => "",
            };
            outbox.set(
                Class::State,
                settings.account_topic(name, sensor.leaf),
                payload,
            );
        }
    }
}

// ------------------------------------------------------------------ the driver

/// What the driver tells the publisher; a `watch` value, so it never queues.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Link {
    /// Incremented on every accepted connection.
    generation: u64,
    connected: bool,
    /// Incremented on every Home Assistant birth message.
    births: u64,
}

/// Polls rumqttc's event loop: reports connections and birth messages, reconnects with
/// backoff, stops after sending DISCONNECT, and fails on a refusal retrying cannot fix.
async fn drive(
    mut eventloop: EventLoop,
    link: watch::Sender<Link>,
    progress: Arc<Notify>,
    birth_topics: Vec<String>,
    broker: String,
    seed: u64,
) -> Result<(), Error> {
    let mut backoff = Backoff::new(seed);
    let mut connected_at: Option<Instant> = None;
    loop {
        match eventloop.poll().await {
            Ok(rumqttc::Event::Incoming(Packet::ConnAck(_))) => {
                tracing::info!(%broker, "mqtt connected");
                connected_at = Some(Instant::now());
                link.send_modify(|l| {
                    l.generation += 1;
                    l.connected = true;
                });
            }
            Ok(rumqttc::Event::Incoming(Packet::Publish(p))) => {
                // A retained birth is an old one, replayed by our own subscription; only a
                // live `online` means Home Assistant (re)started.
                if !p.retain
                    && birth_topics.contains(&p.topic)
                    && p.payload.as_ref() == ONLINE.as_bytes()
                {
                    tracing::info!(%broker, topic = %p.topic, "home assistant came online");
                    link.send_modify(|l| l.births += 1);
                }
            }
            Ok(rumqttc::Event::Outgoing(Outgoing::Disconnect)) => {
                link.send_modify(|l| l.connected = false);
                // Read on until the broker closes the connection: closing it ourselves with
                // unread data (a late PUBACK) makes the kernel reset it, the broker may then
                // lose the DISCONNECT, and it would publish the last will.
                let _ =
                    tokio::time::timeout(LINGER, async { while eventloop.poll().await.is_ok() {} })
                        .await;
                return Ok(());
            }
            Ok(rumqttc::Event::Outgoing(_)) => progress.notify_one(),
            Ok(_) => {}
            Err(ConnectionError::ConnectionRefused(code)) if fatal(code) => {
                link.send_modify(|l| l.connected = false);
                return Err(Error::Refused {
                    broker,
                    reason: refusal(code).to_owned(),
                });
            }
            Err(ConnectionError::RequestsDone) => {
                link.send_modify(|l| l.connected = false);
                return Ok(());
            }
            Err(e) => {
                link.send_modify(|l| l.connected = false);
                if connected_at
                    .take()
                    .is_some_and(|t| t.elapsed() >= STABLE_CONNECTION)
                {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::warn!(
                    %broker,
                    error = %e,
                    retry_in = ?delay,
                    attempt = backoff.attempt(),
                    "mqtt connection failed or lost"
                );
                tokio::time::sleep(delay).await;
            }
        }
    }
}

fn fatal(code: ConnectReturnCode) -> bool {
    !matches!(
        code,
        ConnectReturnCode::Success | ConnectReturnCode::ServiceUnavailable
    )
}

fn refusal(code: ConnectReturnCode) -> &'static str {
    match code {
        ConnectReturnCode::Success => "accepted",
        ConnectReturnCode::RefusedProtocolVersion => {
            "it does not speak MQTT 3.1.1 (enable it on the broker)"
        }
        ConnectReturnCode::BadClientId => "it rejected the client id (set another `client_id`)",
        ConnectReturnCode::ServiceUnavailable => "it is unavailable",
        ConnectReturnCode::BadUserNamePassword => {
            "bad user name or password (check `username` and `password_file`)"
        }
        ConnectReturnCode::NotAuthorized => {
            "not authorised (check `username`, `password_file` and the broker's ACL)"
        }
    }
}

/// Aborts the driver when [`run_mqtt`] returns by any path.
struct AbortOnDrop(tokio::task::JoinHandle<Result<(), Error>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Publishes every account of `hub` to MQTT with Home Assistant discovery (see the module
/// docs) until `shutdown` resolves or the hub is dropped; then publishes `offline` on the
/// status topic and disconnects cleanly (within [`SHUTDOWN_TIMEOUT`]).
///
/// It subscribes to the hub on its own and never makes the hub or any other subscriber wait,
/// whether the broker is up, slow or down; it reconnects with [`Backoff`] and publishes
/// everything again after each connection. It returns an error for settings that cannot work
/// (checked before connecting, including the CA file) and when the broker refuses the
/// credentials, the client id or the protocol — retrying would not help.
pub async fn run_mqtt(
    hub: Arc<Hub>,
    options: MqttSettings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    options.validate()?;
    if let Some(warning) = options.warning() {
        tracing::warn!("{warning}");
    }
    // Loading the system's CA certificates reads files: off the async workers.
    let mqtt_options = {
        let options = options.clone();
        tokio::task::spawn_blocking(move || options.mqtt_options())
            .await
            .map_err(|e| Error::Setting {
                key: "url",
                reason: format!("TLS set-up failed: {e}"),
            })??
    };
    let broker = options.broker();
    let birth_topics = options.birth_topics();
    let status_topic = options.status_topic();
    let seed = options.backoff_seed.unwrap_or_else(default_seed);

    // Subscribe first, then let go of the hub: dropping it elsewhere ends the stream.
    let mut subscription = hub.subscribe();
    drop(hub);

    let (client, mut eventloop) = AsyncClient::new(mqtt_options, REQUEST_CAPACITY);
    let mut network = NetworkOptions::new();
    // Small messages, latency first (Nagle's delay would hold back every other publish).
    network.set_tcp_nodelay(true);
    network.set_connection_timeout(CONNECT_TIMEOUT_SECS);
    eventloop.set_network_options(network);
    let (link_tx, mut link_rx) = watch::channel(Link::default());
    let progress = Arc::new(Notify::new());
    let mut driver = AbortOnDrop(tokio::spawn(drive(
        eventloop,
        link_tx,
        progress.clone(),
        birth_topics.clone(),
        broker.clone(),
        seed,
    )));
    tracing::info!(%broker, topic = %status_topic, "mqtt starting");

    let mut publisher = Publisher::new(options);
    let mut seen = Link::default();
    let mut blocked = false;
    tokio::pin!(shutdown);
    loop {
        if seen.connected && !blocked {
            match publisher.outbox.flush(&client, &birth_topics) {
                Flushed::Done => {}
                Flushed::Full => blocked = true,
            }
        }
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            result = &mut driver.0 => return driver_ended(result),
            changed = link_rx.changed() => {
                if changed.is_err() {
                    // The driver is gone; its result says why.
                    return driver_ended((&mut driver.0).await);
                }
                let now = *link_rx.borrow_and_update();
                if now.generation != seen.generation && now.connected {
                    publisher.outbox.subscribe = true;
                    publisher.outbox.resend_all();
                    blocked = false;
                }
                if now.births != seen.births {
                    publisher.outbox.resend_all();
                }
                seen = now;
            }
            () = progress.notified(), if blocked => blocked = false,
            event = subscription.recv() => match event {
                Some(event) => {
                    publisher.handle_event(&event);
                    // The rest of the batch (e.g. `signed_in`, `status_changed`,
                    // `resource_changed` of one presence) is already there: fold it too, so
                    // the broker gets one state per batch rather than each step.
                    for _ in 0..BATCH {
                        let Some(event) = subscription.try_recv() else { break };
                        publisher.handle_event(&event);
                    }
                }
                None => break,
            },
        }
    }

    // Shutdown: `offline`, then DISCONNECT (the broker then drops the will); the driver
    // returns once the DISCONNECT is written.
    if link_rx.borrow().connected {
        let goodbye = async {
            let _ = client
                .publish(status_topic.clone(), QoS::AtLeastOnce, true, OFFLINE)
                .await;
            let _ = client.disconnect().await;
            let _ = (&mut driver.0).await;
        };
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, goodbye)
            .await
            .is_err()
        {
            tracing::warn!(%broker, "mqtt: could not publish `offline` and disconnect in time");
        } else {
            tracing::info!(%broker, "mqtt disconnected");
        }
    }
    Ok(())
}

/// The driver ends on its own only for a fatal refusal (or a panic, a bug).
fn driver_ended(result: Result<Result<(), Error>, tokio::task::JoinError>) -> Result<(), Error> {
    result.unwrap_or_else(|e| Err(Error::Crashed(e.to_string())))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use imstatus_core::{Resource, SignInResult, Status};

    #[test]
    fn urls_give_host_port_and_tls() {
        let b = |u: &str| parse_url(u).unwrap();
        assert_eq!(
            b("mqtt://127.0.0.1:1884"),
            Broker {
                host: "127.0.0.1".into(),
                port: 1884,
                tls: false
            }
        );
        assert_eq!(b("mqtt://broker.lan").port, 1883);
        assert_eq!(b("mqtt://broker.lan/").host, "broker.lan");
        assert_eq!(b("tcp://broker.lan").port, 1883);
        let tls = b("mqtts://broker.lan");
        assert!(tls.tls);
        assert_eq!(tls.port, 8883);
        assert!(b("ssl://broker.lan:9999").tls);
        assert_eq!(
            b("mqtt://[::1]:1883"),
            Broker {
                host: "::1".into(),
                port: 1883,
                tls: false
            }
        );
        assert_eq!(b("mqtt://[::1]").port, 1883);
    }

    #[test]
    fn bad_urls_say_why() {
        for (url, words) in [
            ("127.0.0.1:1883", "expected mqtt://"),
            ("http://broker", "scheme"),
            ("mqtt://user:pw@broker", "no credentials"),
            ("mqtt://broker/topic", "only host[:port]"),
            ("mqtt://broker:0", "port"),
            ("mqtt://broker:99999", "port"),
            ("mqtt://broker:x", "port"),
            ("mqtt://", "host is missing"),
            ("mqtt://[::1", "closing"),
            ("mqtt://[nope]:1", "IPv6"),
            ("mqtts://[::1]:8883", "host name"),
        ] {
            let e = parse_url(url).unwrap_err().to_string();
            assert!(e.contains(words), "{url}: {e}");
        }
    }

    #[test]
    fn settings_are_validated() {
        let s = || MqttSettings::new("mqtt://127.0.0.1").unwrap();
        s().validate().unwrap();
        let key = |s: MqttSettings| match s.validate().unwrap_err() {
            Error::Setting { key, .. } => key,
            e => panic!("{e}"),
        };
        assert_eq!(key(s().with_topic_prefix("")), "topic_prefix");
        assert_eq!(key(s().with_topic_prefix("a/#")), "topic_prefix");
        assert_eq!(key(s().with_topic_prefix("/a")), "topic_prefix");
        assert_eq!(key(s().with_topic_prefix("a//b")), "topic_prefix");
        assert_eq!(key(s().with_discovery_prefix("ha/+")), "discovery_prefix");
        assert_eq!(key(s().with_password("pw")), "password_file");
        assert_eq!(key(s().with_ca_file("/ca.pem")), "ca_file");
        assert_eq!(key(s().with_client_id("")), "client_id");
        assert_eq!(key(s().with_username("")), "username");
        assert_eq!(
            key(s().with_keep_alive(Duration::from_secs(1))),
            "keep_alive"
        );
        s().with_topic_prefix("home/imstatus").validate().unwrap();
        s().with_username("u")
            .with_password("p")
            .validate()
            .unwrap();
    }

    #[test]
    fn debug_never_shows_the_password() {
        let s = MqttSettings::new("mqtt://h")
            .unwrap()
            .with_username("u")
            .with_password("hunter2");
        let d = format!("{s:?}");
        assert!(!d.contains("hunter2"), "{d}");
        assert!(d.contains("<redacted>"));
    }

    #[test]
    fn object_ids_keep_plain_names_and_stay_unique_for_dotted_ones() {
        assert_eq!(object_id(&AccountId::new("alice")), "alice");
        assert_eq!(object_id(&AccountId::new("work-im_2")), "work-im_2");
        let dotted = object_id(&AccountId::new("work.im"));
        assert!(dotted.starts_with("work_im_"), "{dotted}");
        assert_eq!(dotted.len(), "work_im_".len() + 8);
        assert_ne!(dotted, object_id(&AccountId::new("work_im")));
        assert_eq!(dotted, object_id(&AccountId::new("work.im")), "stable");
    }

    #[test]
    fn node_id_follows_the_topic_prefix() {
        let s = MqttSettings::new("mqtt://h").unwrap();
        assert_eq!(s.node_id(), "imstatus");
        assert_eq!(
            s.with_topic_prefix("home/im.status").node_id(),
            "home_im_status"
        );
    }

    #[test]
    fn birth_topics_include_a_custom_discovery_prefix() {
        let s = MqttSettings::new("mqtt://h").unwrap();
        assert_eq!(s.birth_topics(), ["homeassistant/status"]);
        assert_eq!(
            s.with_discovery_prefix("ha").birth_topics(),
            ["homeassistant/status", "ha/status"]
        );
    }

    #[test]
    fn binary_sensor_payloads_say_unknown_as_none() {
        assert_eq!(running_payload(Client::Running), "ON");
        assert_eq!(running_payload(Client::Starting), "OFF");
        assert_eq!(running_payload(Client::NotRunning), "OFF");
        assert_eq!(running_payload(Client::Unknown), "None");
        assert_eq!(signed_in_payload(Session::SignedIn), "ON");
        for s in [Session::SignedOut, Session::SigningIn, Session::SigningOut] {
            assert_eq!(signed_in_payload(s), "OFF");
        }
        assert_eq!(signed_in_payload(Session::Unknown), "None");
    }

    #[test]
    fn discovery_configs_have_every_field() {
        let s = MqttSettings::new("mqtt://h").unwrap();
        let configs = s.discovery_configs(&AccountId::new("alice"), SourceKind::new_static("xmpp"));
        let topics: Vec<&str> = configs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/binary_sensor/imstatus/alice_running/config",
                "homeassistant/binary_sensor/imstatus/alice_signed_in/config",
                "homeassistant/sensor/imstatus/alice_availability/config",
            ]
        );
        let sensor = &configs[2].1;
        assert_eq!(sensor["device_class"], "enum");
        assert_eq!(
            sensor["options"],
            json!([
                "offline",
                "available",
                "chatty",
                "invisible",
                "busy",
                "away",
                "extended_away",
                "unknown"
            ])
        );
        // Without a model for the kind, the kind itself; with one, the given title.
        assert_eq!(sensor["device"]["model"], "xmpp source");
        let titled = s
            .clone()
            .with_models([(SourceKind::new_static("xmpp"), "XMPP account".to_owned())]);
        let configs =
            titled.discovery_configs(&AccountId::new("alice"), SourceKind::new_static("xmpp"));
        assert_eq!(configs[2].1["device"]["model"], "XMPP account");
        assert_eq!(configs[0].1["device"], configs[1].1["device"]);
    }

    #[test]
    fn activity_configs_are_five_binary_sensors_on_the_accounts_device() {
        let s = MqttSettings::new("mqtt://h").unwrap();
        let desk = AccountId::new("desk");
        let configs = s.activity_configs(&desk, SourceKind::new_static("desktop"));
        let topics: Vec<&str> = configs.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "homeassistant/binary_sensor/imstatus/desk_microphone/config",
                "homeassistant/binary_sensor/imstatus/desk_camera/config",
                "homeassistant/binary_sensor/imstatus/desk_in_call/config",
                "homeassistant/binary_sensor/imstatus/desk_idle/config",
                "homeassistant/binary_sensor/imstatus/desk_locked/config",
            ]
        );
        let mic = &configs[0].1;
        assert_eq!(mic["name"], "Microphone in use");
        assert_eq!(mic["unique_id"], "imstatus_desk_microphone");
        assert_eq!(mic["state_topic"], "imstatus/desk/microphone");
        assert_eq!(mic["device_class"], "running");
        assert!(configs[4].1.get("device_class").is_none());
        let others = s.discovery_configs(&desk, SourceKind::new_static("desktop"));
        for (_, c) in &configs {
            assert_eq!(c["device"], others[0].1["device"], "one device per account");
        }
    }

    fn activity_event(seq: u64, from: Option<Activity>, to: Activity) -> Event {
        event(
            seq,
            EventKind::ActivityChanged {
                from: from.map(Box::new),
                to: Box::new(to),
            },
        )
    }

    #[test]
    fn activity_topics_exist_exactly_while_the_snapshot_has_an_activity() {
        let mut p = Publisher::new(MqttSettings::new("mqtt://h").unwrap());
        let leaves = ["microphone", "camera", "in_call", "idle", "locked"];
        let has = |p: &Publisher, topic: &str| p.outbox.payloads.keys().any(|(_, t)| t == topic);
        p.handle_event(&event(
            1,
            EventKind::Snapshot {
                snapshot: Box::new(Snapshot::unknown()),
                resync: false,
            },
        ));
        for leaf in leaves {
            assert!(!has(&p, &format!("imstatus/alice/{leaf}")), "{leaf}");
            assert!(!has(
                &p,
                &format!("homeassistant/binary_sensor/imstatus/alice_{leaf}/config")
            ));
        }
        let call = Activity {
            microphone: true,
            in_call: true,
            locked: true,
            ..Activity::default()
        };
        p.handle_event(&activity_event(2, None, call.clone()));
        let states: Vec<String> = leaves
            .iter()
            .map(|l| payload(&p, &format!("imstatus/alice/{l}")))
            .collect();
        assert_eq!(states, ["ON", "OFF", "ON", "OFF", "ON"]);
        let config = payload(
            &p,
            "homeassistant/binary_sensor/imstatus/alice_in_call/config",
        );
        assert_eq!(
            serde_json::from_str::<Value>(&config).unwrap()["name"],
            "On a call"
        );
        // The state JSON carries the activity too.
        let state: Value = serde_json::from_str(&payload(&p, "imstatus/alice/state")).unwrap();
        assert_eq!(state["activity"]["microphone"], true);

        // Only the microphone changes: only its topic, the call's and the state JSON.
        p.outbox.unsent.clear();
        let quiet = Activity {
            locked: true,
            ..Activity::default()
        };
        p.handle_event(&activity_event(3, Some(call), quiet.clone()));
        let unsent: Vec<&str> = p.outbox.unsent.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            unsent,
            [
                "imstatus/alice/in_call",
                "imstatus/alice/microphone",
                "imstatus/alice/state"
            ]
        );

        // A snapshot without an activity (the core never sends one after an activity; a
        // fold of any stream stays right): every activity topic is erased.
        p.outbox.unsent.clear();
        p.handle_event(&event(
            4,
            EventKind::Snapshot {
                snapshot: Box::new(Snapshot::unknown()),
                resync: true,
            },
        ));
        for leaf in leaves {
            assert_eq!(payload(&p, &format!("imstatus/alice/{leaf}")), "");
            assert_eq!(
                payload(
                    &p,
                    &format!("homeassistant/binary_sensor/imstatus/alice_{leaf}/config")
                ),
                ""
            );
        }
        assert_eq!(
            p.outbox.unsent.len(),
            10 + 1,
            "the erasures and the state JSON"
        );
    }

    #[tokio::test]
    async fn a_full_request_channel_keeps_the_rest_unsent_and_coalesces_changes() {
        // An event loop nobody polls: its request channel holds 2 requests, then is full.
        let (client, _eventloop) = AsyncClient::new(MqttOptions::new("t", "127.0.0.1", 1), 2);
        let mut outbox = Outbox::default();
        for i in 0..5 {
            outbox.set(Class::State, format!("t/{i}"), "a");
        }
        assert!(matches!(outbox.flush(&client, &[]), Flushed::Full));
        assert_eq!(outbox.unsent.len(), 3);
        // Later values of an unsent topic replace the earlier one: still one entry each.
        outbox.set(Class::State, "t/4".to_owned(), "b");
        outbox.set(Class::State, "t/4".to_owned(), "c");
        assert_eq!(outbox.unsent.len(), 3);
        assert_eq!(outbox.payloads[&(Class::State, "t/4".to_owned())], b"c");
        // Setting the value the broker already has sends nothing.
        outbox.set(Class::State, "t/0".to_owned(), "a");
        assert_eq!(outbox.unsent.len(), 3);
        assert!(matches!(outbox.flush(&client, &[]), Flushed::Full));
    }

    fn event(seq: u64, kind: EventKind) -> Event {
        Event {
            seq,
            time: Timestamp::default(),
            account: AccountId::new("alice"),
            source: SourceKind::new_static("test"),
            kind,
        }
    }

    fn payload(p: &Publisher, topic: &str) -> String {
        let key = p
            .outbox
            .payloads
            .keys()
            .find(|(_, t)| t == topic)
            .unwrap_or_else(|| panic!("no {topic}"));
        String::from_utf8(p.outbox.payloads[key].clone()).unwrap()
    }

    #[test]
    fn the_fold_sets_each_topic_and_only_changes_are_unsent() {
        let mut p = Publisher::new(MqttSettings::new("mqtt://h").unwrap());
        let mut snap = Snapshot::unknown();
        snap.client = Client::Running;
        snap.session = Session::SignedOut;
        snap.availability = Availability::Offline;
        p.handle_event(&event(
            3,
            EventKind::Snapshot {
                snapshot: Box::new(snap),
                resync: false,
            },
        ));
        assert_eq!(payload(&p, "imstatus/alice/running"), "ON");
        assert_eq!(payload(&p, "imstatus/alice/signed_in"), "OFF");
        assert_eq!(payload(&p, "imstatus/alice/availability"), "offline");
        let state: Value = serde_json::from_str(&payload(&p, "imstatus/alice/state")).unwrap();
        assert_eq!(state["event"], "snapshot");
        assert_eq!(state["seq"], 3);
        // 3 discovery configs, 4 state topics, the status topic.
        assert_eq!(p.outbox.unsent.len(), 8);
        p.outbox.unsent.clear();

        p.handle_event(&event(
            4,
            EventKind::SignedIn {
                result: SignInResult::Ok,
            },
        ));
        p.handle_event(&event(
            5,
            EventKind::StatusChanged {
                from: Status::OFFLINE,
                to: Status::with_message(Availability::Away, "lunch"),
                mistatus: 0x22,
            },
        ));
        p.handle_event(&event(
            6,
            EventKind::ResourceChanged {
                resource: "desk".into(),
                from: None,
                to: Some(Resource {
                    resource: "desk".into(),
                    session: Session::SignedIn,
                    availability: Availability::Away,
                    message: Some("lunch".into()),
                    priority: None,
                }),
            },
        ));
        let unsent: Vec<&str> = p.outbox.unsent.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            unsent,
            [
                "imstatus/alice/availability",
                "imstatus/alice/signed_in",
                "imstatus/alice/state"
            ]
        );
        assert_eq!(payload(&p, "imstatus/alice/availability"), "away");
        assert_eq!(payload(&p, "imstatus/alice/signed_in"), "ON");
        let state: Value = serde_json::from_str(&payload(&p, "imstatus/alice/state")).unwrap();
        assert_eq!(state["seq"], 6);
        assert_eq!(state["message"], "lunch");
        assert_eq!(state["mistatus"], 0x22);
        assert_eq!(state["resources"][0]["resource"], "desk");

        // Contacts never change a topic.
        p.outbox.unsent.clear();
        p.handle_event(&event(
            7,
            EventKind::ContactStatusChanged {
                contact: "bob@example.test".into(),
                from: Status::UNKNOWN,
                to: Status::new(Availability::Available),
            },
        ));
        assert!(p.outbox.unsent.is_empty());
        p.outbox.resend_all();
        assert_eq!(p.outbox.unsent.len(), 8);
    }
}
