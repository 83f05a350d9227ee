//! imstatus on a NATS JetStream cluster (docs/cluster.md): watchers own accounts by lease and
//! write each observation batch as one fenced message; gateways show the stream in a mirror hub.
//!
//! The design choice is to build no cluster protocol of our own: JetStream already gives a
//! replicated, ordered log with the last message per subject and compare-and-swap per subject.
//! Accounts are hashed into shards; a watcher owns a shard while it holds the shard's key in
//! the lease bucket (created if absent, renewed by compare-and-swap on its revision, deleted on
//! clean shutdown, expired by the bucket's `max_age` = the lease when its holder dies). Each
//! account has one subject; every batch of events the account's tracker emits is one message
//! on it carrying those events and the snapshot they lead to, published with
//! `Nats-Expected-Last-Subject-Sequence` = the sequence of the subject's previous message, so a
//! watcher that lost its shard (paused, partitioned) is refused by the server the moment the
//! new owner has written. A gateway reads the stream with an ordered consumer (each account's
//! state before the stream's last messages, then those messages and everything new) and feeds
//! an [`imstatus_hub::Mirror`], so the existing gateway serves it unchanged, resume by
//! `Last-Event-ID` included.

mod doctor;
mod gateway;
mod lease;
mod metrics;
mod watcher;
mod window;
mod wire;

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use imstatus_config::{ClusterAuth, ClusterConfig};
use imstatus_core::{AccountId, CodedError, ErrorCode, Status};

pub use doctor::doctor;
pub use gateway::{run_gateway, RemoteSource};
pub use lease::{Lease, Roster};
pub use metrics::GatewayMetrics;
pub use watcher::{run_watcher, WatcherOptions};
pub use wire::{Batch, SetStatus, SetStatusReply};

/// How long one JetStream request (a publish's ack, a lease write) may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a gateway waits for the owner's answer to a status request (the owner's source
/// may need a round trip to its server).
pub const SET_STATUS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Cluster::connect`] retries creating the stream and the bucket.
const SETUP_DEADLINE: Duration = Duration::from_secs(30);

/// What went wrong talking to the cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No server of `[cluster] url` could be reached, or it refused the connection.
    #[error("cannot connect to NATS at {servers}: {detail}")]
    Connect {
        /// What kind of failure: `auth_failed`, `tls_failed`, `invalid_certificate`,
        /// `dns_failed`, `timeout` or `server_unreachable`.
        code: ErrorCode,
        /// The servers tried.
        servers: String,
        /// Why.
        detail: String,
    },
    /// A credentials file or secret could not be read.
    #[error("reading the NATS credentials: {0}")]
    Credentials(String),
    /// Creating or opening the stream or the lease bucket failed.
    #[error("setting up {what}: {detail}")]
    Setup {
        /// The stream or bucket.
        what: String,
        /// Why.
        detail: String,
    },
    /// A JetStream request failed.
    #[error("{what}: {detail}")]
    Request {
        /// What was asked.
        what: String,
        /// Why it failed.
        detail: String,
    },
    /// The server refused a write because another watcher wrote the account since: this
    /// watcher is no longer its owner.
    #[error("account `{0}`: fenced, another watcher owns it now")]
    Fenced(AccountId),
}

impl Error {
    /// The documented code of the failure (docs/events.md).
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Connect { code, .. } => *code,
            Error::Credentials(_) => ErrorCode::AuthFailed,
            Error::Setup { .. } | Error::Request { .. } => ErrorCode::ServerUnreachable,
            Error::Fenced(_) => ErrorCode::AccessDenied,
        }
    }

    /// One line saying what to do about it, in terms of `[cluster]`.
    pub fn hint(&self) -> &'static str {
        match self.code() {
            ErrorCode::AuthFailed => {
                "check the credentials of `[cluster]` (username with password_file or \
                 password_command, token_file, or credentials_file) against the NATS servers'"
            }
            ErrorCode::InvalidCertificate => {
                "the NATS servers' certificate is not trusted: add its CA with `[cluster] ca_file`"
            }
            ErrorCode::TlsFailed => {
                "TLS with the NATS servers failed: check their TLS setup, and tls:// or nats:// in \
                 `[cluster] url`"
            }
            _ => "start the NATS servers of `[cluster] url` with JetStream (`-js`), or fix `url`",
        }
    }

    fn request(what: impl Into<String>, e: impl std::fmt::Display) -> Self {
        Error::Request {
            what: what.into(),
            detail: e.to_string(),
        }
    }
}

/// A connection to the cluster with its stream and lease bucket.
#[derive(Clone)]
pub struct Cluster {
    config: ClusterConfig,
    js: jetstream::Context,
    stream: stream::Stream,
    leases: kv::Store,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("servers", &self.config.servers)
            .field("name", &self.config.name)
            .finish_non_exhaustive()
    }
}

impl Cluster {
    /// Connects to the servers of `config` and creates (or opens) the stream and the lease
    /// bucket. Reads secrets: call it from a task that may block briefly.
    pub async fn connect(config: &ClusterConfig) -> Result<Cluster, Error> {
        let mut options = async_nats::ConnectOptions::new()
            .name("imstatus")
            .require_tls(config.requires_tls());
        match &config.auth {
            ClusterAuth::None => {}
            ClusterAuth::UserPassword { username, password } => {
                let p = read_secret(password).await?;
                options = options.user_and_password(username.clone(), p);
            }
            ClusterAuth::Token(token) => {
                options = options.token(read_secret(token).await?);
            }
            ClusterAuth::Credentials(path) => {
                options = options
                    .credentials_file(path)
                    .await
                    .map_err(|e| Error::Credentials(format!("{}: {e}", path.display())))?;
            }
        }
        // TLS as every other client of imstatus has it: the system's roots plus `ca_file`
        // (crates/tls), rustls with ring.
        let servers_text = || config.servers.join(",");
        let roots = imstatus_tls::Roots::load(config.ca_file.as_deref())
            .and_then(|r| r.client_config())
            .map_err(|e| Error::Connect {
                code: ErrorCode::InvalidCertificate,
                servers: servers_text(),
                detail: e.to_string(),
            })?;
        options = options.tls_client_config(roots);
        let servers: Vec<async_nats::ServerAddr> = config
            .servers
            .iter()
            .map(|s| s.parse())
            .collect::<Result<_, _>>()
            .map_err(|e: std::io::Error| Error::Connect {
                code: ErrorCode::ServerUnreachable,
                servers: config.servers.join(","),
                detail: e.to_string(),
            })?;
        let client = options.connect(servers).await.map_err(|e| Error::Connect {
            code: connect_code(&e),
            servers: config.servers.join(","),
            detail: e.to_string(),
        })?;
        let mut js = jetstream::new(client);
        js.set_timeout(REQUEST_TIMEOUT);
        // Several processes starting at once all create the stream and the bucket; a request
        // can time out while the cluster is busy with that (or electing a leader): retry.
        let deadline = std::time::Instant::now() + SETUP_DEADLINE;
        let mut delay = Duration::from_millis(200);
        let (stream, leases) = loop {
            match setup(&js, config).await {
                Ok(v) => break v,
                Err(e) if std::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::info!("{e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        };
        Ok(Cluster {
            config: config.clone(),
            js,
            stream,
            leases,
        })
    }

    /// The settings it was connected with.
    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// The subject of `account`'s batches: `<name>.ev.<hex of the account name>` (hex, so
    /// that no account name can contain a subject's `.`, `*` or `>`).
    pub fn subject(&self, account: &AccountId) -> String {
        let mut s = format!("{}.ev.", self.config.name);
        for b in account.as_str().bytes() {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// The subject on which the owner of `shard` takes status requests:
    /// `<name>.set.<shard>` (core NATS request/reply, outside the stream).
    pub fn set_subject(&self, shard: u32) -> String {
        format!("{}.set.{shard}", self.config.name)
    }

    /// Asks the watcher that owns `account` to set its status, and returns its source's
    /// answer. No owner (the shard's lease is free: no watcher has the account, or its owner
    /// died and the lease has not expired yet) is `server_unreachable`, which the gateway
    /// answers with 503; an owner that does not answer within [`SET_STATUS_TIMEOUT`] is
    /// `timeout`.
    pub async fn set_status(&self, account: &AccountId, status: Status) -> Result<(), CodedError> {
        use async_nats::RequestErrorKind as K;
        let request = SetStatus {
            account: account.clone(),
            status,
        };
        let payload = serde_json::to_vec(&request)
            .map_err(|e| CodedError::new(ErrorCode::ProtocolError, e.to_string()))?;
        let subject = self.set_subject(shard_of(account, self.config.shards));
        let asked = tokio::time::timeout(
            SET_STATUS_TIMEOUT,
            self.js.client().request(subject, payload.into()),
        )
        .await;
        let reply = match asked {
            Ok(Ok(reply)) => reply,
            Ok(Err(e)) if e.kind() == K::NoResponders => {
                return Err(CodedError::new(
                    ErrorCode::ServerUnreachable,
                    format!(
                        "no watcher owns `{account}` right now (its shard's lease is free); \
                         try again once a watcher has taken it"
                    ),
                ))
            }
            Ok(Err(e)) if e.kind() == K::TimedOut => return Err(owner_timeout(account)),
            Ok(Err(e)) => {
                return Err(CodedError::new(
                    ErrorCode::ServerUnreachable,
                    format!("asking the owner of `{account}`: {e}"),
                ))
            }
            Err(_) => return Err(owner_timeout(account)),
        };
        serde_json::from_slice::<SetStatusReply>(&reply.payload)
            .map_err(|e| {
                CodedError::new(
                    ErrorCode::ProtocolError,
                    format!("the owner of `{account}` answered something unreadable: {e}"),
                )
            })?
            .into_result()
    }

    /// The last batch published for `account` and its stream sequence, if any.
    pub async fn last_batch(&self, account: &AccountId) -> Result<Option<(Batch, u64)>, Error> {
        use async_nats::jetstream::stream::LastRawMessageErrorKind as K;
        match self
            .stream
            .get_last_raw_message_by_subject(&self.subject(account))
            .await
        {
            Ok(m) => {
                let batch = Batch::decode(&m.payload).map_err(|e| {
                    Error::request(format!("decoding the last batch of `{account}`"), e)
                })?;
                Ok(Some((batch, m.sequence)))
            }
            Err(e) if e.kind() == K::NoMessageFound => Ok(None),
            Err(e) => Err(Error::request(
                format!("reading the last batch of `{account}`"),
                e,
            )),
        }
    }
}

/// The code of a failed connection.
fn connect_code(e: &async_nats::ConnectError) -> ErrorCode {
    use async_nats::ConnectErrorKind as K;
    // rustls says "invalid peer certificate: …" for an untrusted or mismatched one, which
    // async-nats reports as an I/O error of the handshake.
    if e.to_string().contains("invalid peer certificate") {
        return ErrorCode::InvalidCertificate;
    }
    match e.kind() {
        K::Authentication | K::AuthorizationViolation => ErrorCode::AuthFailed,
        K::Tls => ErrorCode::TlsFailed,
        K::Dns => ErrorCode::DnsFailed,
        K::TimedOut => ErrorCode::Timeout,
        K::ServerParse | K::Io | K::MaxReconnects => ErrorCode::ServerUnreachable,
    }
}

/// Creates (or opens) the stream and the lease bucket.
async fn setup(
    js: &jetstream::Context,
    config: &ClusterConfig,
) -> Result<(stream::Stream, kv::Store), Error> {
    let stream_name = stream_name(config);
    let stream = js
        .get_or_create_stream(stream::Config {
            name: stream_name.clone(),
            subjects: vec![format!("{}.ev.>", config.name)],
            num_replicas: config.replicas,
            max_messages_per_subject: config.history,
            allow_direct: true,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|e| Error::Setup {
            what: format!("stream {stream_name}"),
            detail: e.to_string(),
        })?;
    let bucket = format!("{}_leases", config.name);
    let leases = js
        .create_or_update_key_value(kv::Config {
            bucket: bucket.clone(),
            history: 1,
            max_age: config.lease,
            num_replicas: config.replicas,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::Setup {
            what: format!("bucket {bucket}"),
            detail: e.to_string(),
        })?;
    // A bucket just created on a fresh cluster can exist before its replicas answer: a read
    // then fails with "no responders" (503), and so would the first claim. Read a key that is
    // never written, so that `connect` retries until the bucket answers.
    leases
        .entry(READY_PROBE_KEY)
        .await
        .map_err(|e| Error::Setup {
            what: format!("bucket {bucket} (not answering yet)"),
            detail: e.to_string(),
        })?;
    Ok((stream, leases))
}

/// The lease bucket's key that [`setup`] reads to see that the bucket answers; never written.
const READY_PROBE_KEY: &str = "ready-probe";

/// The stream's name: `<name>_events`.
fn stream_name(config: &ClusterConfig) -> String {
    format!("{}_events", config.name)
}

fn owner_timeout(account: &AccountId) -> CodedError {
    CodedError::new(
        ErrorCode::Timeout,
        format!("the owner of `{account}` did not answer within {SET_STATUS_TIMEOUT:?}"),
    )
}

async fn read_secret(secret: &imstatus_config::Secret) -> Result<String, Error> {
    let secret = secret.clone();
    tokio::task::spawn_blocking(move || secret.read())
        .await
        .map_err(|e| Error::Credentials(e.to_string()))?
        .map_err(|e| Error::Credentials(e.to_string()))
}

/// The shard of `account` among `shards`: FNV-1a of its name (stable across builds and
/// platforms, unlike the standard library's hasher).
pub fn shard_of(account: &AccountId, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    u32::try_from(h % u64::from(shards.max(1))).unwrap_or(0)
}
