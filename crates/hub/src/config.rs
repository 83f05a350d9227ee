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
use std::time::Duration;

use imstatus_core::{AccountId, SourceKind};
use serde::Deserialize;
use toml::Spanned;

/// The account name used when there is no config file (on Unix: the libpurple client).
pub const DEFAULT_ACCOUNT: &str = "purple";
/// The account name used when there is no config file on Windows (the `IM Providers` client).
pub const DEFAULT_WINDOWS_ACCOUNT: &str = "windows";

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
    /// A Windows IM client through `IM Providers` and its COM automation object.
    Windows(WindowsConfig),
}

impl SourceConfig {
    /// The source kind.
    pub fn kind(&self) -> SourceKind {
        match self {
            SourceConfig::Xmpp(_) => SourceKind::new_static("xmpp"),
            SourceConfig::Purple(_) => SourceKind::new_static("purple"),
            SourceConfig::Windows(_) => SourceKind::new_static("windows"),
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
                let out = shell_command(cmd)
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

/// A command that runs `cmd` through the platform's shell: `sh -c CMD` on Unix; on Windows
/// `cmd.exe /D /V:ON /S /C "CMD"` (no AutoRun, delayed expansion so that `!VAR!` expands a
/// variable after the line is parsed, and the line passed to cmd verbatim rather than quoted
/// by Rust's argument rules, which cmd does not follow).
pub fn shell_command(cmd: &str) -> std::process::Command {
    #[cfg(windows)]
    {
        use std::os::windows::process::CommandExt;
        let mut c = std::process::Command::new("cmd.exe");
        c.raw_arg(format!("/D /V:ON /S /C \"{cmd}\""));
        c
    }
    #[cfg(not(windows))]
    {
        let mut c = std::process::Command::new("sh");
        c.arg("-c").arg(cmd);
        c
    }
}

/// Refuses a secret file that group or others can read (Unix: any of the mode bits 0o077).
///
/// On Windows there are no mode bits, and the ACL is not inspected: the file only has to exist
/// and be a file. Keep it under the user's profile (`%APPDATA%\imstatus\`), whose default ACL
/// grants only the user, SYSTEM and Administrators.
pub fn check_private(path: &Path) -> Result<(), ConfigError> {
    let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(ConfigError::Permissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    if !meta.is_file() {
        return Err(ConfigError::Io {
            path: path.to_owned(),
            source: std::io::Error::other("not a file"),
        });
    }
    Ok(())
}

/// An XMPP account's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmppConfig {
    /// The watched user's bare JID.
    pub jid: String,
    /// The password of the account imstatus logs in as: the user's, or with
    /// [`WatchAs::Contact`] the watcher's.
    pub password: Secret,
    /// `host:port` to connect to instead of the SRV/A lookup.
    pub server: Option<String>,
    /// TLS mode.
    pub tls: TlsMode,
    /// An extra trusted root (PEM).
    pub ca_file: Option<PathBuf>,
    /// Also track the roster's presence.
    pub contacts: bool,
    /// Whether the user's contacts may see imstatus's session.
    pub visibility: Visibility,
    /// Which account imstatus logs in as.
    pub watch_as: WatchAs,
}

impl XmppConfig {
    /// The defaults for the user `jid` with `password`: SRV lookup, STARTTLS required, no
    /// contacts, [`Visibility::Auto`], [`WatchAs::User`].
    pub fn new(jid: impl Into<String>, password: Secret) -> Self {
        XmppConfig {
            jid: jid.into(),
            password,
            server: None,
            tls: TlsMode::Required,
            ca_file: None,
            contacts: false,
            visibility: Visibility::Auto,
            watch_as: WatchAs::User,
        }
    }

    /// The bare JID imstatus logs in as: the user's, or the watcher's in contact mode.
    pub fn login_jid(&self) -> &str {
        match &self.watch_as {
            WatchAs::User => &self.jid,
            WatchAs::Contact { watcher_jid } => watcher_jid,
        }
    }
}

/// Whether the XMPP source's own session is visible to the user's contacts
/// (`docs/xmpp-visibility.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Visibility {
    /// Invisible where the server allows it (XEP-0186, else XEP-0016 privacy lists); visible
    /// otherwise, with a one-time warning (the default).
    #[default]
    Auto,
    /// Invisible or not at all: a server that cannot hide the session is an `unsupported`
    /// error, and the source stays down.
    Invisible,
    /// Visible on purpose: contacts see an extra available resource (priority −1); no warning.
    Visible,
}

impl Visibility {
    /// The config spelling: `auto`, `invisible`, `visible`.
    pub fn as_str(self) -> &'static str {
        match self {
            Visibility::Auto => "auto",
            Visibility::Invisible => "invisible",
            Visibility::Visible => "visible",
        }
    }
}

/// Which account the XMPP source logs in as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum WatchAs {
    /// As the user, with a resource of its own: sees every other resource of the user.
    #[default]
    User,
    /// As a separate watcher account that has (or requests) a presence subscription to the
    /// user, for users who cannot or will not give imstatus their password.
    Contact {
        /// The watcher account's bare JID; its password is [`XmppConfig::password`].
        watcher_jid: String,
    },
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

/// The Windows source's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsConfig {
    /// The `IM Providers` subkey to watch (`Communicator`, `Lync`, `Teams`, ...); `None` = the
    /// one named by `HKCU\Software\IM Providers\DefaultIMApp`, followed when it changes.
    pub app: Option<String>,
    /// Also track contacts' presence (`OnContactStatusChange`).
    pub contacts: bool,
}

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

/// MQTT settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttConfig {
    /// Broker URL (`mqtt://host:port`, or `mqtts://host:port` for TLS).
    pub url: String,
    /// Home Assistant discovery prefix (`homeassistant`).
    pub discovery_prefix: String,
    /// Prefix of imstatus's own topics (`imstatus`).
    pub topic_prefix: String,
    /// MQTT client id; `None` = `imstatus-<pid>-<random>`.
    pub client_id: Option<String>,
    /// User name for the broker.
    pub username: Option<String>,
    /// Password for the broker (needs `username`).
    pub password: Option<Secret>,
    /// Extra trusted root for `mqtts://` (PEM).
    pub ca_file: Option<PathBuf>,
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
    visibility: Option<Spanned<String>>,
    watch_as: Option<Spanned<String>>,
    watcher_jid: Option<Spanned<String>>,
    watcher_password_file: Option<Spanned<String>>,
    watcher_password_command: Option<Spanned<String>>,
    bus: Option<Spanned<String>>,
    accounts: Option<Spanned<Vec<String>>>,
    app: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServe {
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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMqtt {
    url: Spanned<String>,
    discovery_prefix: Option<Spanned<String>>,
    topic_prefix: Option<Spanned<String>>,
    client_id: Option<Spanned<String>>,
    username: Option<Spanned<String>>,
    password_file: Option<Spanned<String>>,
    password_command: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
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
        let span = |k: &Option<Spanned<String>>| k.as_ref().map(Spanned::span);
        // Keys that belong to the other source.
        let xmpp_only: [(&str, Option<Range<usize>>); 11] = [
            ("jid", span(&raw.jid)),
            ("password_file", span(&raw.password_file)),
            ("password_command", span(&raw.password_command)),
            ("server", span(&raw.server)),
            ("tls", span(&raw.tls)),
            ("ca_file", span(&raw.ca_file)),
            ("visibility", span(&raw.visibility)),
            ("watch_as", span(&raw.watch_as)),
            ("watcher_jid", span(&raw.watcher_jid)),
            ("watcher_password_file", span(&raw.watcher_password_file)),
            (
                "watcher_password_command",
                span(&raw.watcher_password_command),
            ),
        ];
        let purple_only: [(&str, Option<Range<usize>>); 2] = [
            ("bus", raw.bus.as_ref().map(Spanned::span)),
            ("accounts", raw.accounts.as_ref().map(Spanned::span)),
        ];
        let windows_only: [(&str, Option<Range<usize>>); 1] =
            [("app", raw.app.as_ref().map(Spanned::span))];
        let not_for = |keys: &[(&str, Option<Range<usize>>)], what: &str| {
            keys.iter()
                .find_map(|(k, span)| span.clone().map(|s| (*k, s)))
                .map(|(k, span)| self.err(span, format!("key `{k}` does not apply to {what}")))
        };
        let contacts = raw.contacts.as_ref().is_some_and(|c| *c.get_ref());
        let source = match raw.source.get_ref().as_str() {
            "xmpp" => {
                if let Some(e) = not_for(&purple_only, "source \"xmpp\"")
                    .or_else(|| not_for(&windows_only, "source \"xmpp\""))
                {
                    return Err(e);
                }
                SourceConfig::Xmpp(self.xmpp(&name, raw, contacts)?)
            }
            "purple" => {
                if let Some(e) = not_for(&xmpp_only, "source \"purple\"")
                    .or_else(|| not_for(&windows_only, "source \"purple\""))
                {
                    return Err(e);
                }
                SourceConfig::Purple(PurpleConfig {
                    bus: raw.bus.map(Spanned::into_inner),
                    accounts: raw.accounts.map(Spanned::into_inner).unwrap_or_default(),
                    contacts,
                })
            }
            "windows" => {
                if let Some(e) = not_for(&xmpp_only, "source \"windows\"")
                    .or_else(|| not_for(&purple_only, "source \"windows\""))
                {
                    return Err(e);
                }
                SourceConfig::Windows(WindowsConfig {
                    app: raw.app.map(Spanned::into_inner),
                    contacts,
                })
            }
            other => {
                return Err(self.err(
                    raw.source.span(),
                    format!(
                        "key `source`: unknown source `{other}` (expected \"xmpp\", \"purple\" or \"windows\")"
                    ),
                ))
            }
        };
        Ok(AccountConfig {
            name: AccountId::new(name),
            source,
        })
    }

    /// A bare JID like `user@example.org` from `key`.
    fn bare_jid(&self, key: &str, jid: &Spanned<String>) -> Result<String, ConfigError> {
        let bare = jid.get_ref().trim();
        let valid = bare
            .split_once('@')
            .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains(['/', '@', ' ']));
        if valid {
            Ok(bare.to_owned())
        } else {
            Err(self.err(
                jid.span(),
                format!("key `{key}`: `{bare}` is not a bare JID like user@example.org"),
            ))
        }
    }

    /// A password from `<prefix>password_file` or `<prefix>password_command` (exactly one).
    fn secret(
        &self,
        prefix: &str,
        file: Option<Spanned<String>>,
        command: Option<Spanned<String>>,
        missing: impl FnOnce() -> ConfigError,
    ) -> Result<Secret, ConfigError> {
        match (file, command) {
            (Some(f), None) => {
                let p = self.path_value(&f);
                check_private(&p)
                    .map_err(|e| self.err(f.span(), format!("key `{prefix}password_file`: {e}")))?;
                Ok(Secret::File(p))
            }
            (None, Some(c)) => Ok(Secret::Command(c.into_inner())),
            (Some(_), Some(c)) => Err(self.err(
                c.span(),
                format!(
                    "keys `{prefix}password_file` and `{prefix}password_command`: give only one"
                ),
            )),
            (None, None) => Err(missing()),
        }
    }

    fn xmpp(&self, name: &str, raw: RawAccount, contacts: bool) -> Result<XmppConfig, ConfigError> {
        let jid = raw.jid.as_ref().ok_or_else(|| {
            self.err(
                raw.name.span(),
                format!("account `{name}`: missing key `jid`"),
            )
        })?;
        let jid = self.bare_jid("jid", jid)?;
        let tls = match raw.tls.as_ref().map(|t| (t.get_ref().as_str(), t.span())) {
            None | Some(("required", _)) => TlsMode::Required,
            Some(("insecure-plaintext", _)) => TlsMode::InsecurePlaintext,
            Some((other, span)) => {
                return Err(self.err(
                    span,
                    format!("key `tls`: `{other}` is not \"required\" or \"insecure-plaintext\""),
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
        let visibility = match raw
            .visibility
            .as_ref()
            .map(|v| (v.get_ref().as_str(), v.span()))
        {
            None | Some(("auto", _)) => Visibility::Auto,
            Some(("invisible", _)) => Visibility::Invisible,
            Some(("visible", _)) => Visibility::Visible,
            Some((other, span)) => {
                return Err(self.err(
                    span,
                    format!(
                        "key `visibility`: `{other}` is not \"auto\", \"invisible\" or \"visible\""
                    ),
                ))
            }
        };
        let contact_mode = match raw
            .watch_as
            .as_ref()
            .map(|w| (w.get_ref().as_str(), w.span()))
        {
            None | Some(("user", _)) => false,
            Some(("contact", _)) => true,
            Some((other, span)) => {
                return Err(self.err(
                    span,
                    format!("key `watch_as`: `{other}` is not \"user\" or \"contact\""),
                ))
            }
        };
        let (password, watch_as) = if contact_mode {
            // imstatus logs in as the watcher: the user's password is neither needed nor
            // wanted, and the watcher's roster is not the user's.
            let user_keys = [
                (
                    "password_file",
                    raw.password_file.as_ref().map(Spanned::span),
                ),
                (
                    "password_command",
                    raw.password_command.as_ref().map(Spanned::span),
                ),
            ];
            if let Some((k, span)) = user_keys.into_iter().find_map(|(k, s)| s.map(|s| (k, s))) {
                return Err(self.err(
                    span,
                    format!(
                        "key `{k}` does not apply to watch_as = \"contact\" (imstatus logs in as \
                         `watcher_jid` with `watcher_password_file` or `watcher_password_command`)"
                    ),
                ));
            }
            if let Some(c) = raw.contacts.as_ref().filter(|c| *c.get_ref()) {
                return Err(self.err(
                    c.span(),
                    "key `contacts` does not apply to watch_as = \"contact\" (the watcher's \
                     roster is not the user's)",
                ));
            }
            let watcher = raw.watcher_jid.as_ref().ok_or_else(|| {
                self.err(
                    raw.watch_as.as_ref().map_or(raw.name.span(), Spanned::span),
                    format!("account `{name}`: watch_as = \"contact\" needs key `watcher_jid`"),
                )
            })?;
            let watcher_jid = self.bare_jid("watcher_jid", watcher)?;
            if watcher_jid.eq_ignore_ascii_case(&jid) {
                return Err(self.err(
                    watcher.span(),
                    "key `watcher_jid`: must be a separate account, not the user's `jid`",
                ));
            }
            let watcher_span = watcher.span();
            let password = self.secret(
                "watcher_",
                raw.watcher_password_file,
                raw.watcher_password_command,
                || {
                    self.err(
                        watcher_span,
                        format!(
                            "account `{name}`: missing key `watcher_password_file` (or \
                             `watcher_password_command`)"
                        ),
                    )
                },
            )?;
            (password, WatchAs::Contact { watcher_jid })
        } else {
            let watcher_keys = [
                ("watcher_jid", raw.watcher_jid.as_ref().map(Spanned::span)),
                (
                    "watcher_password_file",
                    raw.watcher_password_file.as_ref().map(Spanned::span),
                ),
                (
                    "watcher_password_command",
                    raw.watcher_password_command.as_ref().map(Spanned::span),
                ),
            ];
            if let Some((k, span)) = watcher_keys
                .into_iter()
                .find_map(|(k, s)| s.map(|s| (k, s)))
            {
                return Err(self.err(
                    span,
                    format!(
                        "key `{k}` does not apply to watch_as = \"user\" (the default); \
                         set watch_as = \"contact\" to log in as a separate watcher account"
                    ),
                ));
            }
            let password = self.secret("", raw.password_file, raw.password_command, || {
                self.err(
                    raw.name.span(),
                    format!(
                        "account `{name}`: missing key `password_file` (or `password_command`)"
                    ),
                )
            })?;
            (password, WatchAs::User)
        };
        Ok(XmppConfig {
            jid,
            password,
            server: raw.server.map(Spanned::into_inner),
            tls,
            ca_file: raw.ca_file.as_ref().map(|c| self.path_value(c)),
            contacts,
            visibility,
            watch_as,
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

impl Resolver<'_> {
    /// `[mqtt]`: the broker and Home Assistant discovery. The URL and topic syntax are checked
    /// by the MQTT client when it starts; here, which keys go together.
    fn mqtt(&self, m: RawMqtt) -> Result<MqttConfig, ConfigError> {
        let password = match (m.password_file, m.password_command) {
            (Some(_), Some(c)) => {
                return Err(self.err(
                    c.span(),
                    "keys `password_file` and `password_command`: give only one",
                ))
            }
            (Some(f), None) => {
                let p = self.path_value(&f);
                check_private(&p)
                    .map_err(|e| self.err(f.span(), format!("key `password_file`: {e}")))?;
                Some((Secret::File(p), f.span()))
            }
            (None, Some(c)) => {
                let span = c.span();
                Some((Secret::Command(c.into_inner()), span))
            }
            (None, None) => None,
        };
        if let (Some((_, span)), None) = (&password, &m.username) {
            return Err(self.err(
                span.clone(),
                "key `password_file`/`password_command` needs `username`",
            ));
        }
        let tls = m.url.get_ref().starts_with("mqtts://") || m.url.get_ref().starts_with("ssl://");
        if let (Some(ca), false) = (&m.ca_file, tls) {
            return Err(self.err(
                ca.span(),
                "key `ca_file` needs a TLS `url` (mqtts://host:port)",
            ));
        }
        Ok(MqttConfig {
            url: m.url.into_inner(),
            discovery_prefix: m
                .discovery_prefix
                .map_or_else(|| "homeassistant".to_owned(), Spanned::into_inner),
            topic_prefix: m
                .topic_prefix
                .map_or_else(|| "imstatus".to_owned(), Spanned::into_inner),
            client_id: m.client_id.map(Spanned::into_inner),
            username: m.username.map(Spanned::into_inner),
            password: password.map(|(p, _)| p),
            ca_file: m.ca_file.as_ref().map(|c| self.path_value(c)),
        })
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

/// Expands a leading `~/` to `$HOME/` (on Windows also `~\`, and `%USERPROFILE%` when
/// `HOME` is not set).
pub fn expand_home(path: &str) -> PathBuf {
    let rest = path.strip_prefix("~/");
    #[cfg(windows)]
    let rest = rest.or_else(|| path.strip_prefix("~\\"));
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty());
    #[cfg(windows)]
    let home = home.or_else(|| std::env::var_os("USERPROFILE").filter(|h| !h.is_empty()));
    match (rest, home) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

impl Config {
    /// The zero-config default of this platform: [`Config::default_windows`] on Windows,
    /// [`Config::default_purple`] elsewhere.
    pub fn default_local() -> Config {
        if cfg!(windows) {
            Config::default_windows()
        } else {
            Config::default_purple()
        }
    }

    /// The zero-config default on Windows: the client named by `IM Providers\DefaultIMApp`,
    /// as `windows`.
    pub fn default_windows() -> Config {
        Config {
            accounts: vec![AccountConfig {
                name: AccountId::new(DEFAULT_WINDOWS_ACCOUNT),
                source: SourceConfig::Windows(WindowsConfig {
                    app: None,
                    contacts: false,
                }),
            }],
            serve: None,
            mqtt: None,
            origin: Origin::Default,
        }
    }

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
        let mqtt = raw.mqtt.map(|m| r.mqtt(m)).transpose()?;
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
    /// [`default_path`]; with none of them present, the zero-config default
    /// ([`Config::default_local`]). An explicitly named file that is missing is an error.
    pub fn discover(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        if let Some(p) = explicit {
            return Config::load(p);
        }
        if let Some(p) = std::env::var_os("IMSTATUS_CONFIG").filter(|p| !p.is_empty()) {
            return Config::load(Path::new(&p));
        }
        match default_path() {
            Some(p) if p.exists() => Config::load(&p),
            _ => Ok(Config::default_local()),
        }
    }

    /// An account by name.
    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.name.as_str() == name)
    }
}

/// `$XDG_CONFIG_HOME/imstatus/config.toml`, or `~/.config/imstatus/config.toml`; on Windows
/// `%APPDATA%\imstatus\config.toml`.
pub fn default_path() -> Option<PathBuf> {
    #[cfg(windows)]
    let base = std::env::var_os("APPDATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)?;
    #[cfg(not(windows))]
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
    fn windows_source_takes_app_and_contacts_and_nothing_of_the_others() {
        let c = parse(
            "[[account]]\nname = \"desk\"\nsource = \"windows\"\napp = \"Lync\"\ncontacts = true\n",
        )
        .expect("valid");
        assert_eq!(
            c.accounts[0].source,
            SourceConfig::Windows(WindowsConfig {
                app: Some("Lync".into()),
                contacts: true
            })
        );
        assert_eq!(
            c.accounts[0].source.kind(),
            SourceKind::new_static("windows")
        );
        let e = err("[[account]]\nname = \"a\"\nsource = \"windows\"\nbus = \"unix:path=/x\"\n");
        assert_eq!(
            e,
            "cfg.toml:4: key `bus` does not apply to source \"windows\""
        );
        let e = err("[[account]]\nname = \"a\"\nsource = \"purple\"\napp = \"Teams\"\n");
        assert_eq!(
            e,
            "cfg.toml:4: key `app` does not apply to source \"purple\""
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

    /// A private password file in a temp dir, and the dir (keep it alive).
    fn private_file() -> (tempfile::TempDir, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "secret\n").expect("write");
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        (dir, pw)
    }

    fn xmpp_account(extra: &str, pw: &Path) -> String {
        format!(
            "[[account]]\nname = \"a\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             password_file = \"{}\"\n{extra}",
            pw.display()
        )
    }

    fn xmpp(c: &Config) -> &XmppConfig {
        match &c.accounts[0].source {
            SourceConfig::Xmpp(x) => x,
            other => panic!("xmpp account expected: {other:?}"),
        }
    }

    #[test]
    fn visibility_defaults_to_auto_and_takes_three_values() {
        let (_dir, pw) = private_file();
        let c = parse(&xmpp_account("", &pw)).expect("valid");
        assert_eq!(xmpp(&c).visibility, Visibility::Auto);
        assert_eq!(xmpp(&c).watch_as, WatchAs::User);
        assert_eq!(xmpp(&c).login_jid(), "alice@example.test");
        for (text, v) in [
            ("auto", Visibility::Auto),
            ("invisible", Visibility::Invisible),
            ("visible", Visibility::Visible),
        ] {
            let c =
                parse(&xmpp_account(&format!("visibility = \"{text}\"\n"), &pw)).expect("valid");
            assert_eq!(xmpp(&c).visibility, v);
            assert_eq!(v.as_str(), text);
        }
        let e = err(&xmpp_account("visibility = \"hidden\"\n", &pw));
        assert_eq!(
            e,
            "cfg.toml:6: key `visibility`: `hidden` is not \"auto\", \"invisible\" or \"visible\""
        );
    }

    #[test]
    fn contact_mode_logs_in_as_the_watcher_with_its_own_password() {
        let (_dir, pw) = private_file();
        let text = format!(
            "[[account]]\nname = \"a\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             watch_as = \"contact\"\nwatcher_jid = \"watcher@example.test\"\n\
             watcher_password_file = \"{}\"\nvisibility = \"invisible\"\n",
            pw.display()
        );
        let c = parse(&text).expect("valid");
        let x = xmpp(&c);
        assert_eq!(x.jid, "alice@example.test");
        assert_eq!(
            x.watch_as,
            WatchAs::Contact {
                watcher_jid: "watcher@example.test".into()
            }
        );
        assert_eq!(x.login_jid(), "watcher@example.test");
        assert_eq!(x.password, Secret::File(pw.clone()));
        assert_eq!(x.visibility, Visibility::Invisible);
        let with_command =
            "[[account]]\nname = \"a\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             watch_as = \"contact\"\nwatcher_jid = \"watcher@example.test\"\n\
             watcher_password_command = \"echo pw\"\n";
        let c = parse(with_command).expect("valid");
        assert_eq!(xmpp(&c).password, Secret::Command("echo pw".into()));
    }

    #[test]
    fn contact_mode_refuses_the_users_password_and_contacts_and_needs_the_watcher() {
        let (_dir, pw) = private_file();
        let base = "[[account]]\nname = \"a\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
                    watch_as = \"contact\"\n";
        let watcher = format!(
            "watcher_jid = \"watcher@example.test\"\nwatcher_password_file = \"{}\"\n",
            pw.display()
        );
        let e = err(&format!(
            "{base}{watcher}password_file = \"{}\"\n",
            pw.display()
        ));
        assert!(
            e.starts_with(
                "cfg.toml:8: key `password_file` does not apply to watch_as = \"contact\""
            ),
            "{e}"
        );
        let e = err(&format!("{base}{watcher}contacts = true\n"));
        assert!(
            e.starts_with("cfg.toml:8: key `contacts` does not apply to watch_as = \"contact\""),
            "{e}"
        );
        assert!(parse(&format!("{base}{watcher}contacts = false\n")).is_ok());
        let e = err(base);
        assert_eq!(
            e,
            "cfg.toml:5: account `a`: watch_as = \"contact\" needs key `watcher_jid`"
        );
        let e = err(&format!("{base}watcher_jid = \"watcher@example.test\"\n"));
        assert!(
            e.starts_with("cfg.toml:6: account `a`: missing key `watcher_password_file`"),
            "{e}"
        );
        let e = err(&format!(
            "{base}watcher_jid = \"watcher\"\nwatcher_password_file = \"{}\"\n",
            pw.display()
        ));
        assert!(
            e.starts_with("cfg.toml:6: key `watcher_jid`: `watcher` is not a bare JID"),
            "{e}"
        );
        let e = err(&format!(
            "{base}watcher_jid = \"Alice@example.test\"\nwatcher_password_file = \"{}\"\n",
            pw.display()
        ));
        assert!(e.contains("must be a separate account"), "{e}");
        let e = err(&format!(
            "{base}{watcher}watcher_password_command = \"echo\"\n"
        ));
        assert!(
            e.starts_with("cfg.toml:8: keys `watcher_password_file` and `watcher_password_command`: give only one"),
            "{e}"
        );
        let e = err(&format!("{base}watch_as = \"spy\"\n"));
        assert!(e.contains("duplicate key"), "{e}");
        let e = err(&xmpp_account("watch_as = \"spy\"\n", &pw));
        assert_eq!(
            e,
            "cfg.toml:6: key `watch_as`: `spy` is not \"user\" or \"contact\""
        );
    }

    #[test]
    fn watcher_keys_without_contact_mode_and_xmpp_keys_on_purple_are_refused() {
        let (_dir, pw) = private_file();
        let e = err(&xmpp_account("watcher_jid = \"w@example.test\"\n", &pw));
        assert!(
            e.starts_with("cfg.toml:6: key `watcher_jid` does not apply to watch_as = \"user\""),
            "{e}"
        );
        let e = err(&xmpp_account(
            &format!("watcher_password_file = \"{}\"\n", pw.display()),
            &pw,
        ));
        assert!(
            e.starts_with("cfg.toml:6: key `watcher_password_file`"),
            "{e}"
        );
        for key in [
            "visibility = \"visible\"",
            "watch_as = \"contact\"",
            "watcher_jid = \"w@example.test\"",
            "watcher_password_command = \"echo\"",
        ] {
            let e = err(&format!(
                "[[account]]\nname = \"a\"\nsource = \"purple\"\n{key}\n"
            ));
            let k = key.split(' ').next().unwrap_or_default();
            assert_eq!(
                e,
                format!("cfg.toml:4: key `{k}` does not apply to source \"purple\""),
            );
        }
    }

    #[test]
    fn a_watcher_password_file_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, pw) = private_file();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let e = err(&format!(
            "[[account]]\nname = \"a\"\nsource = \"xmpp\"\njid = \"alice@example.test\"\n\
             watch_as = \"contact\"\nwatcher_jid = \"watcher@example.test\"\n\
             watcher_password_file = \"{}\"\n",
            pw.display()
        ));
        assert!(
            e.starts_with("cfg.toml:7: key `watcher_password_file`: "),
            "{e}"
        );
        assert!(e.contains("(mode 0640)"), "{e}");
    }

    #[test]
    fn xmpp_config_new_has_the_documented_defaults() {
        let c = XmppConfig::new("a@b", Secret::Command("x".into()));
        assert_eq!(c.tls, TlsMode::Required);
        assert_eq!(c.visibility, Visibility::Auto);
        assert_eq!(c.watch_as, WatchAs::User);
        assert!(!c.contacts && c.server.is_none() && c.ca_file.is_none());
    }

    #[test]
    fn mqtt_keys_and_their_combinations() {
        let c = parse("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n").expect("valid");
        let m = c.mqtt.expect("mqtt");
        assert_eq!(
            (m.discovery_prefix.as_str(), m.topic_prefix.as_str()),
            ("homeassistant", "imstatus")
        );
        assert_eq!((m.username, m.password, m.ca_file), (None, None, None));
        let e = err("[mqtt]\nurl = \"mqtt://h:1\"\npassword_command = \"pass mqtt\"\n");
        assert!(
            e.starts_with("cfg.toml:3: key `password_file`/`password_command` needs `username`"),
            "{e}"
        );
        let e = err("[mqtt]\nurl = \"mqtt://h:1\"\nca_file = \"/ca.pem\"\n");
        assert!(
            e.starts_with("cfg.toml:3: key `ca_file` needs a TLS `url`"),
            "{e}"
        );
        let e = err("[mqtt]\nurl = \"mqtt://h:1\"\nretain = true\n");
        assert!(e.starts_with("cfg.toml:3: unknown key `retain`"), "{e}");
        let c = parse(
            "[mqtt]\nurl = \"mqtts://h:8883\"\nusername = \"ha\"\npassword_command = \"echo pw\"\nca_file = \"/ca.pem\"\ntopic_prefix = \"desk\"\n",
        )
        .expect("valid");
        let m = c.mqtt.expect("mqtt");
        assert_eq!(
            m.password.expect("password").read().expect("command runs"),
            "pw"
        );
        assert_eq!(m.topic_prefix, "desk");
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
    fn serve_defaults_when_absent() {
        let c = parse("[serve]\n").expect("valid");
        let s = c.serve.expect("serve");
        assert_eq!(s, ServeConfig::default());
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert!(!s.tokenless_write, "read-only without tokens unless asked");
        assert!(s.allowed_origins.is_empty());
        assert_eq!((s.max_connections, s.max_connections_per_ip), (512, 64));
        assert_eq!(
            (s.header_read_timeout, s.idle_timeout),
            (Duration::from_secs(10), Duration::from_secs(60))
        );
    }

    #[test]
    fn serve_hardening_keys_are_read() {
        let c = parse(
            "[serve]\nallowed_origins = [\"https://Dash.example/\", \"http://localhost:3000\", \"https://x.example:443\", \"http://[::1]:8080\"]\n\
             tokenless_write = true\nmax_connections = 100\nmax_connections_per_ip = 100\n\
             header_read_timeout = \"2s 500ms\"\nidle_timeout = \"5m\"\n",
        )
        .expect("valid");
        let s = c.serve.expect("serve");
        assert_eq!(
            s.allowed_origins,
            [
                "https://dash.example",
                "http://localhost:3000",
                "https://x.example",
                "http://[::1]:8080"
            ]
        );
        assert!(s.tokenless_write);
        assert_eq!((s.max_connections, s.max_connections_per_ip), (100, 100));
        assert_eq!(s.header_read_timeout, Duration::from_millis(2500));
        assert_eq!(s.idle_timeout, Duration::from_secs(300));
        // A small max_connections lowers the default per-address cap with it.
        let s = parse("[serve]\nmax_connections = 10\n")
            .expect("valid")
            .serve
            .expect("serve");
        assert_eq!((s.max_connections, s.max_connections_per_ip), (10, 10));
    }

    #[test]
    fn serve_hardening_keys_are_checked_with_file_line_and_key() {
        for (text, want) in [
            (
                "[serve]\n\nallowed_origins = [\"https://dash.example/app\"]\n",
                "cfg.toml:3: key `allowed_origins`: `https://dash.example/app` is not an origin",
            ),
            (
                "[serve]\nallowed_origins = [\"*\"]\n",
                "cfg.toml:2: key `allowed_origins`: `*` is not an origin",
            ),
            (
                "[serve]\nallowed_origins = [\"null\"]\n",
                "cfg.toml:2: key `allowed_origins`: `null` is not an origin",
            ),
            (
                "[serve]\nallowed_origins = [\"ftp://a.example\"]\n",
                "cfg.toml:2: key `allowed_origins`: `ftp://a.example` is not an origin",
            ),
            (
                "[serve]\nmax_connections = 0\n",
                "cfg.toml:2: key `max_connections`: 0 is not a number of connections",
            ),
            (
                "[serve]\nmax_connections_per_ip = -1\n",
                "cfg.toml:2: key `max_connections_per_ip`: -1 is not a number of connections",
            ),
            (
                "[serve]\nmax_connections = 10\nmax_connections_per_ip = 11\n",
                "cfg.toml:3: key `max_connections_per_ip`: 11 is more than max_connections (10)",
            ),
            (
                "[serve]\nheader_read_timeout = \"soon\"\n",
                "cfg.toml:2: key `header_read_timeout`: `soon` is not a duration like 10s",
            ),
            (
                "[serve]\nidle_timeout = \"0s\"\n",
                "cfg.toml:2: key `idle_timeout`: `0s` is not a duration",
            ),
        ] {
            let e = err(text);
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
        let e = err("[serve]\ntokenless_write = \"yes\"\n");
        assert!(e.starts_with("cfg.toml:2:"), "{e}");
    }

    #[test]
    fn origins_are_normalised_like_browsers_send_them() {
        for (text, want) in [
            ("http://127.0.0.1:8470", Some("http://127.0.0.1:8470")),
            ("HTTP://LocalHost:80/", Some("http://localhost")),
            ("https://a.example:8443", Some("https://a.example:8443")),
            ("http://[::1]", Some("http://[::1]")),
            ("http://a.example:0", None),
            ("http://a.example:99999", None),
            ("http://a.example:080", None),
            ("http://[::1", None),
            ("http://[zz]:1", None),
            ("https://", None),
            ("https://user@a.example", None),
            ("https://a.example?x", None),
            ("a.example", None),
            ("null", None),
        ] {
            assert_eq!(parse_origin(text).as_deref(), want, "{text}");
        }
    }

    #[test]
    fn empty_file_has_no_accounts_and_default_is_purple() {
        assert!(parse("").expect("valid").accounts.is_empty());
        let d = Config::default_purple();
        assert_eq!(d.accounts[0].name.as_str(), "purple");
        assert_eq!(d.origin, Origin::Default);
        let w = Config::default_windows();
        assert_eq!(w.accounts[0].name.as_str(), DEFAULT_WINDOWS_ACCOUNT);
        assert_eq!(
            w.accounts[0].source.kind(),
            SourceKind::new_static("windows")
        );
        let local = Config::default_local();
        if cfg!(windows) {
            assert_eq!(local, w);
        } else {
            assert_eq!(local, d);
        }
    }

    #[test]
    fn password_command_runs_through_the_platform_shell() {
        let cmd = if cfg!(windows) {
            "echo s3cret& echo second"
        } else {
            "printf 's3cret\\nsecond\\n'"
        };
        let secret = Secret::Command(cmd.to_owned()).read().expect("password");
        assert_eq!(secret, "s3cret");
        let e = Secret::Command("exit 3".to_owned())
            .read()
            .expect_err("failing command");
        assert!(e.to_string().contains("`exit 3` exited with"), "{e}");
    }
}
