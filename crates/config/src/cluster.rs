//! `[cluster]`: the NATS JetStream cluster that watchers write to and gateways serve from
//! (`imstatus serve --role watcher|gateway`, docs/cluster.md).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::{ConfigError, Resolver, Secret};

/// Default of `[cluster] shards`.
pub const DEFAULT_SHARDS: u32 = 64;
/// Default of `[cluster] lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
/// Default of `[cluster] replicas`.
pub const DEFAULT_REPLICAS: usize = 3;
/// Default of `[cluster] history`.
pub const DEFAULT_HISTORY: i64 = 64;
/// Default of `[cluster] name`.
pub const DEFAULT_NAME: &str = "imstatus";
/// The most shards the config accepts.
pub const MAX_SHARDS: u32 = 4096;
/// The shortest lease the config accepts (NATS expires messages in whole seconds).
pub const MIN_LEASE: Duration = Duration::from_secs(2);

/// How imstatus authenticates to NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterAuth {
    /// No credentials.
    None,
    /// A user and a password.
    UserPassword {
        /// The user.
        username: String,
        /// Its password.
        password: Secret,
    },
    /// A token.
    Token(Secret),
    /// A NATS credentials file (`.creds`: a user JWT and its nkey seed).
    Credentials(PathBuf),
}

/// The cluster settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// The servers, `nats://host:port` or `tls://host:port` (TLS required), at least one.
    pub servers: Vec<String>,
    /// Names the stream (`<NAME>_events`), the lease bucket (`<name>_leases`) and the subject
    /// prefix (`<name>.`), so that several deployments can share one NATS.
    pub name: String,
    /// How many shards the accounts are hashed into; each is leased by one watcher.
    pub shards: u32,
    /// How long a lease lives without renewal; a dead watcher's accounts move after it.
    pub lease: Duration,
    /// Replicas of the stream and the lease bucket (1 or 3 usually).
    pub replicas: usize,
    /// Messages (observation batches) the stream keeps per account.
    pub history: i64,
    /// Credentials.
    pub auth: ClusterAuth,
    /// Extra trusted root for TLS (PEM).
    pub ca_file: Option<PathBuf>,
}

impl ClusterConfig {
    /// The defaults for the servers in `url` (comma-separated).
    pub fn new(url: &str) -> Self {
        ClusterConfig {
            servers: split_servers(url),
            name: DEFAULT_NAME.to_owned(),
            shards: DEFAULT_SHARDS,
            lease: DEFAULT_LEASE,
            replicas: DEFAULT_REPLICAS,
            history: DEFAULT_HISTORY,
            auth: ClusterAuth::None,
            ca_file: None,
        }
    }

    /// Whether any server URL asks for TLS (`tls://`).
    pub fn requires_tls(&self) -> bool {
        self.servers.iter().any(|s| s.starts_with("tls://"))
    }
}

fn split_servers(url: &str) -> Vec<String> {
    url.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    url: Spanned<String>,
    name: Option<Spanned<String>>,
    shards: Option<Spanned<i64>>,
    lease: Option<Spanned<String>>,
    replicas: Option<Spanned<i64>>,
    history: Option<Spanned<i64>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    pub(crate) password_command: Option<Spanned<String>>,
    token_file: Option<Spanned<String>>,
    pub(crate) token_command: Option<Spanned<String>>,
    credentials_file: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
}

impl Resolver<'_> {
    /// `[cluster]`: the URLs, the names, the numbers and which credentials go together.
    pub(crate) fn cluster(&self, c: RawCluster) -> Result<ClusterConfig, ConfigError> {
        let mut config = ClusterConfig::new(c.url.get_ref());
        if config.servers.is_empty() {
            return Err(self.err(
                c.url.span(),
                "key `url`: give at least one server, e.g. \"nats://h1:4222,nats://h2:4222\"",
            ));
        }
        for s in &config.servers {
            let Some((scheme, rest)) = s.split_once("://") else {
                return Err(self.err(
                    c.url.span(),
                    format!("key `url`: `{s}` is not nats://host:port or tls://host:port"),
                ));
            };
            if !matches!(scheme, "nats" | "tls") || rest.is_empty() || rest.contains('/') {
                return Err(self.err(
                    c.url.span(),
                    format!("key `url`: `{s}` is not nats://host:port or tls://host:port"),
                ));
            }
        }
        if let Some(n) = c.name {
            let name = n.get_ref();
            if name.is_empty()
                || name.len() > 32
                || !name
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_'))
            {
                return Err(self.err(
                    n.span(),
                    "key `name`: 1 to 32 letters, digits, `-` or `_` (it names a stream, a \
                     bucket and a subject prefix)",
                ));
            }
            config.name = n.into_inner();
        }
        if let Some(s) = c.shards {
            let v = *s.get_ref();
            config.shards = u32::try_from(v)
                .ok()
                .filter(|v| (1..=MAX_SHARDS).contains(v))
                .ok_or_else(|| {
                    self.err(
                        s.span(),
                        format!("key `shards`: expected 1 to {MAX_SHARDS}, not {v}"),
                    )
                })?;
        }
        if let Some(l) = c.lease {
            let d = humantime::parse_duration(l.get_ref())
                .map_err(|e| self.err(l.span(), format!("key `lease`: {e} (try 15s)")))?;
            if d < MIN_LEASE || d.subsec_nanos() != 0 {
                return Err(self.err(
                    l.span(),
                    "key `lease`: whole seconds, at least 2s (NATS expires messages in seconds)",
                ));
            }
            config.lease = d;
        }
        if let Some(r) = c.replicas {
            let v = *r.get_ref();
            config.replicas = usize::try_from(v)
                .ok()
                .filter(|v| (1..=5).contains(v))
                .ok_or_else(|| {
                    self.err(
                        r.span(),
                        format!("key `replicas`: expected 1 to 5, not {v}"),
                    )
                })?;
        }
        if let Some(h) = c.history {
            let v = *h.get_ref();
            if !(2..=10_000).contains(&v) {
                return Err(self.err(
                    h.span(),
                    format!("key `history`: expected 2 to 10000, not {v}"),
                ));
            }
            config.history = v;
        }
        let password = self.secret(
            c.password_file,
            c.password_command,
            "password_file",
            "password_command",
        )?;
        let token = self.secret(c.token_file, c.token_command, "token_file", "token_command")?;
        let credentials = match c.credentials_file {
            Some(f) => {
                let p = self.path_value(&f);
                crate::check_private(&p)
                    .map_err(|e| self.err(f.span(), format!("key `credentials_file`: {e}")))?;
                Some((p, f.span()))
            }
            None => None,
        };
        config.auth = match (c.username, password, token, credentials) {
            (None, None, None, None) => ClusterAuth::None,
            (Some(u), Some((p, _)), None, None) => ClusterAuth::UserPassword {
                username: u.into_inner(),
                password: p,
            },
            (Some(u), None, _, _) => {
                return Err(self.err(
                    u.span(),
                    "key `username` needs `password_file` or `password_command`",
                ))
            }
            (None, Some((_, span)), _, _) => {
                return Err(self.err(
                    span,
                    "key `password_file`/`password_command` needs `username`",
                ))
            }
            (None, None, Some((t, _)), None) => ClusterAuth::Token(t),
            (None, None, None, Some((p, _))) => ClusterAuth::Credentials(p),
            (_, _, Some((_, span)), _) | (_, _, None, Some((_, span))) => {
                return Err(self.err(
                    span,
                    "give one kind of credentials: username + password, a token, or a \
                     credentials file",
                ))
            }
        };
        config.ca_file = c.ca_file.as_ref().map(|p| self.path_value(p));
        Ok(config)
    }
}
