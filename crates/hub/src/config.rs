//! The TOML configuration (design §4): lookup, parsing with line numbers, validation.
//!
//! Parsing goes in two steps, like ripgrep's low-level and high-level arguments: the file is
//! read into raw structs that keep every key's position ([`toml::Spanned`]), then resolved
//! into the typed [`Config`]. Unknown keys, keys that do not apply to an account's source and
//! bad values are errors that name the file, the line and the key.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use imstatus_core::{AccountId, SourceKind};
use serde::Deserialize;
use toml::Spanned;

/// The account name used when there is no config file.
pub const DEFAULT_ACCOUNT: &str = "purple";

/// A configuration problem; the CLI exits 2 on these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key or value is wrong.
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// A secret file can be read by group or others.
    #[error("{path}: readable by group or others (mode {mode:04o}); run `chmod 600 {path}`", path = path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file.
    File(PathBuf),
    /// No file: the zero-config default.
    Default,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The watched accounts, in file order.
    pub accounts: Vec<AccountConfig>,
    /// The gateway, if configured.
    pub serve: Option<ServeConfig>,
    /// MQTT, if configured.
    pub mqtt: Option<MqttConfig>,
    /// Where it came from.
    pub origin: Origin,
}

/// One watched account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountConfig {
    /// What the CLI, API and MQTT call it.
    pub name: AccountId,
    /// The source and its settings.
    pub source: SourceConfig,
}

/// A source and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SourceConfig {
    /// An XMPP account.
    Xmpp(XmppConfig),
    /// The local libpurple client over D-Bus.
    Purple(PurpleConfig),
}

impl SourceConfig {
    /// The source kind.
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceConfig::Xmpp(_) => SourceKind::Xmpp,
            SourceConfig::Purple(_) => SourceKind::Purple,
        }
    }
}

/// How to connect to an XMPP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS required (the default).
    Required,
    /// No TLS at all; only for loopback test servers.
    InsecurePlaintext,
}

/// Where a password comes from. Never the command line, never the config itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// A file (mode 0600 or stricter); trailing newlines are dropped.
    File(PathBuf),
    /// A command whose first output line is the password (`pass show xmpp/alice`).
    Command(String),
}

impl Secret {
    /// Reads the secret.
    pub fn read(&self) -> Result<String, ConfigError> {
        match self {
            Secret::File(path) => {
                check_private(path)?;
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
                    path: path.clone(),
                    source,
                })?;
                Ok(text.trim_end_matches(['\r', '\n']).to_owned())
            }
            Secret::Command(cmd) => {
                let out = std::process::Command::new("sh")
                    .arg("-c")
                    .arg(cmd)
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(|source| ConfigError::Io {
                        path: PathBuf::from(cmd),
                        source,
                    })?;
                if !out.status.success() {
                    return Err(ConfigError::Io {
                        path: PathBuf::from("password_command"),
                        source: std::io::Error::other(format!(
                            "`{cmd}` exited with {}",
                            out.status
                        )),
                    });
                }
                let text = String::from_utf8_lossy(&out.stdout);
                Ok(text.lines().next().unwrap_or_default().to_owned())
            }
        }
    }
}

/// Refuses a secret file that group or others can read.
pub fn check_private(path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ConfigError::Permissions {
            path: path.to_owned(),
            mode,
        });
    }
    Ok(())
}

/// An XMPP account's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmppConfig {
    /// The user's bare JID.
    pub jid: String,
    /// The user's password.
    pub password: Secret,
    /// `host:port` to connect to instead of the SRV/A lookup.
    pub server: Option<String>,
    /// TLS mode.
    pub tls: TlsMode,
    /// An extra trusted root (PEM).
    pub ca_file: Option<PathBuf>,
    /// Also track the roster's presence.
    pub contacts: bool,
}

/// The libpurple source's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurpleConfig {
    /// A D-Bus address; `None` = the session bus.
    pub bus: Option<String>,
    /// Only these libpurple accounts (`user@host/resource` or bare); empty = all.
    pub accounts: Vec<String>,
    /// Also track buddies' presence.
    pub contacts: bool,
}

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Accepted tokens.
    pub tokens: Vec<TokenConfig>,
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

/// MQTT settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// Broker URL (`mqtt://host:port`).
    pub url: String,
    /// Home Assistant discovery prefix.
    pub discovery_prefix: String,
}

// ------------------------------------------------------------------ raw (as written)

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    account: Vec<RawAccount>,
    serve: Option<RawServe>,
    mqtt: Option<RawMqtt>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAccount {
    name: Spanned<String>,
    source: Spanned<String>,
    jid: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_command: Option<Spanned<String>>,
    server: Option<Spanned<String>>,
    tls: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    contacts: Option<Spanned<bool>>,
    bus: Option<Spanned<String>>,
    accounts: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: Spanned<String>,
    discovery_prefix: Option<Spanned<String>>,
}

/// The default gateway address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8470";

struct Resolver<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Resolver<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    fn err(&self, span: Range<usize>, message: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line: self.line(span),
            message: message.to_string(),
        }
    }

    fn path_value(&self, s: &Spanned<String>) -> PathBuf {
        expand_home(s.get_ref())
    }

    fn account(&self, raw: RawAccount) -> Result<AccountConfig, ConfigError> {
        let name = raw.name.get_ref().trim().to_owned();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(self.err(
                raw.name.span(),
                format!("key `name`: `{name}` must be letters, digits, `-`, `_` or `.`"),
            ));
        }
        // Keys that belong to the other source.
        let xmpp_only: [(&str, Option<Range<usize>>); 6] = [
            ("jid", raw.jid.as_ref().map(Spanned::span)),
            (
                "password_file",
                raw.password_file.as_ref().map(Spanned::span),
            ),
            (
                "password_command",
                raw.password_command.as_ref().map(Spanned::span),
            ),
            ("server", raw.server.as_ref().map(Spanned::span)),
            ("tls", raw.tls.as_ref().map(Spanned::span)),
            ("ca_file", raw.ca_file.as_ref().map(Spanned::span)),
        ];
        let purple_only: [(&str, Option<Range<usize>>); 2] = [
            ("bus", raw.bus.as_ref().map(Spanned::span)),
            ("accounts", raw.accounts.as_ref().map(Spanned::span)),
        ];
        let not_for = |keys: &[(&str, Option<Range<usize>>)], source: &str| {
            keys.iter()
                .find_map(|(k, span)| span.clone().map(|s| (*k, s)))
                .map(|(k, span)| {
                    self.err(
                        span,
                        format!("key `{k}` does not apply to source \"{source}\""),
                    )
                })
        };
        let contacts = raw.contacts.as_ref().is_some_and(|c| *c.get_ref());
        let source = match raw.source.get_ref().as_str() {
            "xmpp" => {
                if let Some(e) = not_for(&purple_only, "xmpp") {
                    return Err(e);
                }
                let jid = raw.jid.ok_or_else(|| {
                    self.err(
                        raw.name.span(),
                        format!("account `{name}`: missing key `jid`"),
                    )
                })?;
                let bare = jid.get_ref().trim();
                let valid = bare.split_once('@').is_some_and(|(l, d)| {
                    !l.is_empty() && !d.is_empty() && !d.contains(['/', '@', ' '])
                });
                if !valid {
                    return Err(self.err(
                        jid.span(),
                        format!("key `jid`: `{bare}` is not a bare JID like user@example.org"),
                    ));
                }
                let password = match (raw.password_file, raw.password_command) {
                    (Some(f), None) => {
                        let p = self.path_value(&f);
                        check_private(&p)
                            .map_err(|e| self.err(f.span(), format!("key `password_file`: {e}")))?;
                        Secret::File(p)
                    }
                    (None, Some(c)) => Secret::Command(c.into_inner()),
                    (Some(_), Some(c)) => {
                        return Err(self.err(
                            c.span(),
                            "keys `password_file` and `password_command`: give only one",
                        ))
                    }
                    (None, None) => {
                        return Err(self.err(
                            raw.name.span(),
                            format!(
                            "account `{name}`: missing key `password_file` (or `password_command`)"
                        ),
                        ))
                    }
                };
                let tls = match raw.tls.as_ref().map(|t| (t.get_ref().as_str(), t.span())) {
                    None | Some(("required", _)) => TlsMode::Required,
                    Some(("insecure-plaintext", _)) => TlsMode::InsecurePlaintext,
                    Some((other, span)) => {
                        return Err(self.err(
                            span,
                            format!(
                                "key `tls`: `{other}` is not \"required\" or \"insecure-plaintext\""
                            ),
                        ))
                    }
                };
                if let Some(server) = &raw.server {
                    let ok = server
                        .get_ref()
                        .rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
                    if !ok {
                        return Err(self.err(
                            server.span(),
                            format!("key `server`: `{}` is not host:port", server.get_ref()),
                        ));
                    }
                }
                SourceConfig::Xmpp(XmppConfig {
                    jid: bare.to_owned(),
                    password,
                    server: raw.server.map(Spanned::into_inner),
                    tls,
                    ca_file: raw.ca_file.as_ref().map(|c| self.path_value(c)),
                    contacts,
                })
            }
            "purple" => {
                if let Some(e) = not_for(&xmpp_only, "purple") {
                    return Err(e);
                }
                SourceConfig::Purple(PurpleConfig {
                    bus: raw.bus.map(Spanned::into_inner),
                    accounts: raw.accounts.map(Spanned::into_inner).unwrap_or_default(),
                    contacts,
                })
            }
            other => {
                return Err(self.err(
                    raw.source.span(),
                    format!(
                        "key `source`: unknown source `{other}` (expected \"xmpp\" or \"purple\")"
                    ),
                ))
            }
        };
        Ok(AccountConfig {
            name: AccountId::new(name),
            source,
        })
    }

    fn serve(&self, raw: RawServe) -> Result<ServeConfig, ConfigError> {
        let listen = match &raw.listen {
            None => DEFAULT_LISTEN
                .parse()
                .map_err(|_| self.err(0..0, "bad default"))?,
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

/// Expands a leading `~/` to `$HOME/`.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

impl Config {
    /// The zero-config default: the local libpurple client on the session bus, as `purple`.
    pub fn default_purple() -> Config {
        Config {
            accounts: vec![AccountConfig {
                name: AccountId::new(DEFAULT_ACCOUNT),
                source: SourceConfig::Purple(PurpleConfig {
                    bus: None,
                    accounts: Vec::new(),
                    contacts: false,
                }),
            }],
            serve: None,
            mqtt: None,
            origin: Origin::Default,
        }
    }

    /// Parses a config file's text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let r = Resolver { path, text };
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let message = e
                .message()
                .replace("unknown field", "unknown key")
                .replace("missing field", "missing key");
            r.err(e.span().unwrap_or(0..0), message)
        })?;
        let mut accounts = Vec::new();
        let mut seen = HashSet::new();
        for a in raw.account {
            let span = a.name.span();
            let account = r.account(a)?;
            if !seen.insert(account.name.clone()) {
                return Err(r.err(
                    span,
                    format!("key `name`: account `{}` is defined twice", account.name),
                ));
            }
            accounts.push(account);
        }
        let serve = raw.serve.map(|s| r.serve(s)).transpose()?;
        let mqtt = raw.mqtt.map(|m| MqttConfig {
            url: m.url.into_inner(),
            discovery_prefix: m
                .discovery_prefix
                .map_or_else(|| "homeassistant".to_owned(), Spanned::into_inner),
        });
        Ok(Config {
            accounts,
            serve,
            mqtt,
            origin: Origin::File(path.to_owned()),
        })
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Finds the config: `explicit` (`--config`), else `$IMSTATUS_CONFIG`, else
    /// `$XDG_CONFIG_HOME/imstatus/config.toml` (`~/.config/…`); with none of them present, the
    /// zero-config default. An explicitly named file that is missing is an error.
    pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(p) = explicit {
            return Config::load(p);
        }
        if let Some(p) = std::env::var_os("IMSTATUS_CONFIG").filter(|p| !p.is_empty()) {
            return Config::load(Path::new(&p));
        }
        match default_path() {
            Some(p) if p.exists() => Config::load(&p),
            _ => Ok(Config::default_purple()),
        }
    }

    /// An account by name.
    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.name.as_str() == name)
    }
}

/// `$XDG_CONFIG_HOME/imstatus/config.toml`, or `~/.config/imstatus/config.toml`.
pub fn default_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("imstatus").join("config.toml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("cfg.toml"))
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("should fail").to_string()
    }

    #[test]
    fn purple_account_with_bus() {
        let c = parse(
            "[[account]]\nname = \"desktop\"\nsource = \"purple\"\nbus = \"unix:path=/x\"\naccounts = [\"a@b/c\"]\n",
        )
        .expect("valid");
        assert_eq!(c.accounts.len(), 1);
        assert_eq!(
            c.accounts[0].source,
            SourceConfig::Purple(PurpleConfig {
                bus: Some("unix:path=/x".into()),
                accounts: vec!["a@b/c".into()],
                contacts: false
            })
        );
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = err("[[account]]\nname = \"a\"\nsource = \"purple\"\ncolour = \"red\"\n");
        assert!(e.starts_with("cfg.toml:4: unknown key `colour`"), "{e}");
        let e = err("[servve]\nlisten = \"127.0.0.1:1\"\n");
        assert!(e.starts_with("cfg.toml:1: unknown key `servve`"), "{e}");
    }

    #[test]
    fn key_of_the_other_source_is_refused_with_its_line() {
        let e = err("[[account]]\nname = \"a\"\nsource = \"purple\"\n\njid = \"a@b\"\n");
        assert_eq!(
            e,
            "cfg.toml:5: key `jid` does not apply to source \"purple\""
        );
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = err("[[account]]\nname = \"a\"\nsource = \"icq\"\n");
        assert!(
            e.starts_with("cfg.toml:3: key `source`: unknown source `icq`"),
            "{e}"
        );
        let e = err("[[account]]\nname = \"a\"\nsource = \"purple\"\ncontacts = \"yes\"\n");
        assert!(e.starts_with("cfg.toml:4:"), "{e}");
        let e = err("[serve]\nlisten = \"everywhere\"\n");
        assert!(e.starts_with("cfg.toml:2: key `listen`"), "{e}");
        let e = err("[[account]]\nname = \"a b\"\nsource = \"purple\"\n");
        assert!(e.starts_with("cfg.toml:2: key `name`"), "{e}");
    }

    #[test]
    fn duplicate_account_names_are_refused() {
        let e = err("[[account]]\nname = \"a\"\nsource = \"purple\"\n[[account]]\nname = \"a\"\nsource = \"purple\"\n");
        assert!(
            e.starts_with("cfg.toml:5: key `name`: account `a` is defined twice"),
            "{e}"
        );
    }

    #[test]
    fn password_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").expect("write");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let text = format!(
            "[[account]]\nname = \"a\"\nsource = \"xmpp\"\njid = \"a@example.test\"\npassword_file = \"{}\"\n",
            pw.display()
        );
        let e = err(&text);
        assert!(e.contains("readable by group or others (mode 0644)"), "{e}");
        assert!(e.starts_with("cfg.toml:5: key `password_file`"), "{e}");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let c = parse(&text).expect("valid now");
        let SourceConfig::Xmpp(x) = &c.accounts[0].source else {
            panic!("xmpp account expected");
        };
        assert_eq!(x.password.read().expect("readable"), "secret");
        assert_eq!(x.tls, TlsMode::Required);
    }

    #[test]
    fn serve_tokens_are_hashes() {
        let c = parse(&format!(
            "[serve]\nlisten = \"127.0.0.1:9000\"\n[[serve.token]]\nname = \"d\"\nsha256 = \"{}\"\naccounts = [\"*\"]\n",
            "ab".repeat(32)
        ))
        .expect("valid");
        let s = c.serve.expect("serve");
        assert_eq!(s.tokens[0].sha256, [0xab; 32]);
        assert!(!s.tokens[0].write);
        let e = err(
            "[serve]\n[[serve.token]]\nname = \"d\"\nsha256 = \"hunter2\"\naccounts = [\"*\"]\n",
        );
        assert!(e.starts_with("cfg.toml:4: key `sha256`"), "{e}");
    }

    #[test]
    fn empty_file_has_no_accounts_and_default_is_purple() {
        assert!(parse("").expect("valid").accounts.is_empty());
        let d = Config::default_purple();
        assert_eq!(d.accounts[0].name.as_str(), "purple");
        assert_eq!(d.origin, Origin::Default);
    }
}
