//! `[serve]`: the gateway's address and tokens.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use crate::{ConfigError, Resolver};

/// The default gateway address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";

/// The gateway's settings. `ServeConfig::default()` is what an absent `[serve]` means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Accepted tokens.
    pub tokens: Vec<TokenConfig>,
    /// Web origins (`scheme://host[:port]`, lower-case, no trailing `/`) whose pages may use
    /// the gateway besides its own; every other `Origin` is refused.
    pub allowed_origins: Vec<String>,
    /// Without tokens, may any local client set status (`PUT …/status`)? Off: read-only.
    pub tokenless_write: bool,
    /// Connections open at once, all clients together; more are refused with 503.
    pub max_connections: usize,
    /// Connections open at once from one address (an IPv6 /64); more are refused with 503.
    pub max_connections_per_ip: usize,
    /// How long a client has for a whole request head, from when the connection opens or the
    /// previous response ends (so also how long an idle keep-alive connection stays open).
    pub header_read_timeout: Duration,
    /// How long a connection may go without a byte moving either way before it is closed.
    pub idle_timeout: Duration,
}

/// Default of `[serve] max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Default of `[serve] max_connections_per_ip`.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// Default of `[serve] header_read_timeout`.
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Default of `[serve] idle_timeout`.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest `max_connections` (and `max_connections_per_ip`) the config accepts.
pub const MAX_CONNECTIONS_LIMIT: usize = 1 << 20;

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            tokens: Vec::new(),
            allowed_origins: Vec::new(),
            tokenless_write: false,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// One gateway token, stored as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenConfig {
    /// A name for logs and metrics.
    pub name: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
    /// Accounts it may see; `*` = all.
    pub accounts: Vec<String>,
    /// May it set status?
    pub write: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServe {
    listen: Option<Spanned<String>>,
    #[serde(default)]
    token: Vec<RawToken>,
    allowed_origins: Option<Spanned<Vec<String>>>,
    tokenless_write: Option<bool>,
    max_connections: Option<Spanned<i64>>,
    max_connections_per_ip: Option<Spanned<i64>>,
    header_read_timeout: Option<Spanned<String>>,
    idle_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawToken {
    name: Spanned<String>,
    sha256: Spanned<String>,
    accounts: Spanned<Vec<String>>,
    #[serde(default)]
    write: bool,
}

impl Resolver<'_> {
    pub(crate) fn serve(&self, raw: RawServe) -> Result<ServeConfig, ConfigError> {
        let listen = match &raw.listen {
            None => ServeConfig::default().listen,
            Some(l) => l.get_ref().parse().map_err(|_| {
                self.err(
                    l.span(),
                    format!(
                        "key `listen`: `{}` is not an address like 127.0.0.1:8470",
                        l.get_ref()
                    ),
                )
            })?,
        };
        let mut tokens = Vec::new();
        for t in raw.token {
            let hex = t.sha256.get_ref().trim();
            let sha256 = parse_sha256(hex).ok_or_else(|| {
                self.err(
                    t.sha256.span(),
                    "key `sha256`: expected 64 hex digits (the SHA-256 of the token, never the token)",
                )
            })?;
            tokens.push(TokenConfig {
                name: t.name.into_inner(),
                sha256,
                accounts: t.accounts.into_inner(),
                write: t.write,
            });
        }
        let mut allowed_origins = Vec::new();
        if let Some(list) = &raw.allowed_origins {
            for o in list.get_ref() {
                let origin = parse_origin(o).ok_or_else(|| {
                    self.err(
                        list.span(),
                        format!(
                            "key `allowed_origins`: `{o}` is not an origin like \
                             https://dash.example or http://localhost:3000 (scheme://host[:port], \
                             no path; `*` and `null` are not allowed)"
                        ),
                    )
                })?;
                allowed_origins.push(origin);
            }
        }
        let defaults = ServeConfig::default();
        let count = |key: &str, v: &Option<Spanned<i64>>, default: usize| {
            match v {
            None => Ok(default),
            Some(n) => usize::try_from(*n.get_ref())
                .ok()
                .filter(|n| (1..=MAX_CONNECTIONS_LIMIT).contains(n))
                .ok_or_else(|| {
                    self.err(
                        n.span(),
                        format!(
                            "key `{key}`: {} is not a number of connections from 1 to {MAX_CONNECTIONS_LIMIT}",
                            n.get_ref()
                        ),
                    )
                }),
        }
        };
        let max_connections = count(
            "max_connections",
            &raw.max_connections,
            defaults.max_connections,
        )?;
        let max_connections_per_ip = count(
            "max_connections_per_ip",
            &raw.max_connections_per_ip,
            defaults.max_connections_per_ip.min(max_connections),
        )?;
        if max_connections_per_ip > max_connections {
            let span = raw
                .max_connections_per_ip
                .as_ref()
                .map_or(0..0, Spanned::span);
            return Err(self.err(
                span,
                format!(
                    "key `max_connections_per_ip`: {max_connections_per_ip} is more than \
                     max_connections ({max_connections})"
                ),
            ));
        }
        let timeout = |key: &str, v: &Option<Spanned<String>>, default: Duration| {
            match v {
            None => Ok(default),
            Some(d) => humantime::parse_duration(d.get_ref().trim())
                .ok()
                .filter(|d| !d.is_zero() && *d <= Duration::from_secs(24 * 3600))
                .ok_or_else(|| {
                    self.err(
                        d.span(),
                        format!(
                            "key `{key}`: `{}` is not a duration like 10s or 2m (more than 0, at most 24h)",
                            d.get_ref()
                        ),
                    )
                }),
        }
        };
        Ok(ServeConfig {
            listen,
            tokens,
            allowed_origins,
            tokenless_write: raw.tokenless_write.unwrap_or(defaults.tokenless_write),
            max_connections,
            max_connections_per_ip,
            header_read_timeout: timeout(
                "header_read_timeout",
                &raw.header_read_timeout,
                defaults.header_read_timeout,
            )?,
            idle_timeout: timeout("idle_timeout", &raw.idle_timeout, defaults.idle_timeout)?,
        })
    }
}

/// A web origin as browsers send it in `Origin`: `http` or `https`, a host, an optional port,
/// nothing else; lower-cased, with the scheme's default port left out (`https://a.example:443`
/// is `https://a.example`). `None` for anything else.
pub fn parse_origin(text: &str) -> Option<String> {
    let text = text.trim().to_ascii_lowercase();
    let (scheme, rest) = text.split_once("://")?;
    let default_port = match scheme {
        "http" => "80",
        "https" => "443",
        _ => return None,
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.is_empty() || rest.contains(['/', '?', '#', '@', ' ', '\\']) || rest.contains("*") {
        return None;
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (inner, after) = v6.split_once(']')?;
        inner.parse::<std::net::Ipv6Addr>().ok()?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{inner}]"), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (rest.to_owned(), None),
        }
    };
    let host_ok = host.starts_with('[')
        || (!host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')));
    if !host_ok {
        return None;
    }
    match port {
        None => Some(format!("{scheme}://{host}")),
        Some(p) if p == default_port => Some(format!("{scheme}://{host}")),
        Some(p) => {
            let n: u16 = p.parse().ok()?;
            (n != 0 && !p.starts_with('0')).then(|| format!("{scheme}://{host}:{n}"))
        }
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}
