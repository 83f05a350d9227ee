//! `[serve]`: the gateway's address and tokens.

use std::net::SocketAddr;

use serde::Deserialize;
use toml::Spanned;

use crate::{ConfigError, Resolver};

/// The default gateway address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Accepted tokens.
    pub tokens: Vec<TokenConfig>,
}

impl Default for ServeConfig {
    /// [`DEFAULT_LISTEN`], no tokens.
    fn default() -> Self {
        ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            tokens: Vec::new(),
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
        Ok(ServeConfig { listen, tokens })
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
