//! imstatus configuration: finding the config file, reading it with line numbers, secrets, and
//! the sections that belong to no source (`[serve]`, `[mqtt]`, `[cluster]`).
//!
//! Parsing goes in two steps, like ripgrep's low-level and high-level arguments: the TOML file
//! is read into raw tables that keep every key's position, then resolved into the typed
//! [`Config`]. The keys of an `[[account]]` belong to its source: the table is handed, as
//! [`Keys`], to the [`SourceFactory`] its `source` key names, which reads what it knows into
//! its own typed settings (each source crate owns its keys). A key no factory read is refused
//! here, naming the source it belongs to if it is another source's. Every error names the
//! file, the line and the key: `config.toml:5: key `jid` does not apply to source "purple"`.
//!
//! A `[[person]]` combines accounts into one answer ([`PersonConfig`]); it names no source of
//! its own and is checked against the whole file (its accounts exist, no cycles, no name
//! taken twice).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use imstatus_core::{AccountId, SourceKind};
use imstatus_hub::{KeyError, Keys, SourceFactory, SourceSettings, Value};
use serde::Deserialize;
use toml::Spanned;

pub mod cluster;
pub mod mqtt;
pub mod person;
pub mod secret;
pub mod serve;

pub use cluster::{ClusterAuth, ClusterConfig};
pub use imstatus_hub::factory::{expand_home, one_of};
pub use mqtt::MqttConfig;
pub use person::PersonConfig;
pub use secret::{check_private, shell_command, Secret, SecretError};
pub use serve::{ServeConfig, TokenConfig, DEFAULT_LISTEN};

/// A configuration problem; the CLI exits 2 on these.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}", path = path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key or value is wrong.
    #[error("{path}:{line}: {message}", path = path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong, naming the key.
        message: String,
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
#[derive(Debug, Clone)]
pub struct Config {
    /// The watched accounts, in file order.
    pub accounts: Vec<AccountConfig>,
    /// The persons (`[[person]]`), in file order: each combines some of the accounts (or
    /// other persons) into one answer.
    pub persons: Vec<PersonConfig>,
    /// The gateway, if configured.
    pub serve: Option<ServeConfig>,
    /// MQTT, if configured.
    pub mqtt: Option<MqttConfig>,
    /// The NATS cluster (`serve --role watcher|gateway`), if configured.
    pub cluster: Option<ClusterConfig>,
    /// Where it came from.
    pub origin: Origin,
}

/// One watched account.
#[derive(Debug, Clone)]
pub struct AccountConfig {
    /// What the CLI, API and MQTT call it.
    pub name: AccountId,
    /// Its source.
    pub kind: SourceKind,
    /// The source's own settings, as its factory resolved them.
    pub settings: Arc<dyn SourceSettings>,
}

impl AccountConfig {
    /// The settings as the source's own type (`None` for another source's account).
    pub fn settings_as<T: 'static>(&self) -> Option<&T> {
        self.settings.as_any().downcast_ref()
    }
}

/// The source factories a config is read with (the binary's feature-gated list).
pub type Factories<'a> = &'a [&'a dyn SourceFactory];

// ------------------------------------------------------------------ raw (as written)

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    account: Vec<Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>>,
    #[serde(default)]
    person: Vec<person::RawPerson>,
    serve: Option<serve::RawServe>,
    mqtt: Option<mqtt::RawMqtt>,
    cluster: Option<cluster::RawCluster>,
}

/// Turns byte spans into lines and key errors into config errors for one file.
pub(crate) struct Resolver<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Resolver<'_> {
    pub(crate) fn line(&self, span: std::ops::Range<usize>) -> usize {
        let end = span.start.min(self.text.len());
        self.text[..end].bytes().filter(|&b| b == b'\n').count() + 1
    }

    pub(crate) fn err(
        &self,
        span: std::ops::Range<usize>,
        message: impl fmt::Display,
    ) -> ConfigError {
        self.at(self.line(span), message)
    }

    pub(crate) fn at(&self, line: usize, message: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_owned(),
            line,
            message: message.to_string(),
        }
    }

    fn key_error(&self, e: KeyError) -> ConfigError {
        self.at(e.line, e.message)
    }

    pub(crate) fn path_value(&self, s: &Spanned<String>) -> PathBuf {
        expand_home(s.get_ref())
    }

    /// A secret from `file_key` / `command_key` (at most one), checked now.
    pub(crate) fn secret(
        &self,
        file: Option<Spanned<String>>,
        command: Option<Spanned<String>>,
        file_key: &str,
        command_key: &str,
    ) -> Result<Option<(Secret, std::ops::Range<usize>)>, ConfigError> {
        match (file, command) {
            (Some(_), Some(c)) => Err(self.err(
                c.span(),
                format!("keys `{file_key}` and `{command_key}`: give only one"),
            )),
            (Some(f), None) => {
                let p = self.path_value(&f);
                check_private(&p)
                    .map_err(|e| self.err(f.span(), format!("key `{file_key}`: {e}")))?;
                Ok(Some((Secret::File(p), f.span())))
            }
            (None, Some(c)) => {
                let span = c.span();
                Ok(Some((Secret::Command(c.into_inner()), span)))
            }
            (None, None) => Ok(None),
        }
    }

    /// Resolves one `[[account]]` table; also gives the line of its `name` and of the first
    /// key that names a command (`…_command`).
    fn account(
        &self,
        table: Spanned<BTreeMap<Spanned<String>, Spanned<toml::Value>>>,
        factories: Factories<'_>,
    ) -> Result<(AccountConfig, usize, Option<usize>), ConfigError> {
        let table_line = self.line(table.span());
        let mut raw = table.into_inner();
        let mut take = |key: &str| {
            let k = raw.keys().find(|k| k.get_ref() == key).cloned()?;
            raw.remove(&k).map(|v| (k, v))
        };
        let (name_key, name) =
            take("name").ok_or_else(|| self.at(table_line, "missing key `name`"))?;
        let name_line = self.line(name_key.span());
        let name = match name.get_ref() {
            toml::Value::String(s) => s.trim().to_owned(),
            _ => return Err(self.at(name_line, "key `name`: expected a string")),
        };
        if !valid_name(&name) {
            return Err(self.at(
                name_line,
                format!("key `name`: `{name}` must be letters, digits, `-`, `_` or `.`"),
            ));
        }
        let (source_key, source) = take("source")
            .ok_or_else(|| self.at(name_line, format!("account `{name}`: missing key `source`")))?;
        let source_line = self.line(source_key.span());
        let toml::Value::String(source) = source.into_inner() else {
            return Err(self.at(source_line, "key `source`: expected a string"));
        };
        let Some(factory) = factories.iter().find(|f| f.kind() == source.as_str()) else {
            let known: Vec<String> = factories.iter().map(|f| f.kind().to_string()).collect();
            let known: Vec<&str> = known.iter().map(String::as_str).collect();
            return Err(self.at(
                source_line,
                format!(
                    "key `source`: unknown source `{source}` (expected {})",
                    one_of(&known)
                ),
            ));
        };
        let mut keys = Keys::new(AccountId::new(name.as_str()), name_line);
        let mut command_line: Option<usize> = None;
        for (k, v) in raw {
            let line = self.line(k.span());
            if k.get_ref().ends_with("_command") {
                command_line = Some(command_line.map_or(line, |l| l.min(line)));
            }
            keys.insert(k.into_inner(), value(v.into_inner()), line);
        }
        let settings = match factory.resolve(&mut keys) {
            Ok(settings) => settings,
            Err(e) => {
                // A misspelt key is likelier the cause than the key it leaves missing: name it.
                let stranger = keys
                    .unread()
                    .into_iter()
                    .find(|(key, _)| !factory.keys().contains(key));
                if let Some((key, line)) = stranger {
                    return Err(self.at(line, unread_message(key, factory.kind(), factories)));
                }
                return Err(self.key_error(e));
            }
        };
        if let Some((key, line)) = keys.unread().first() {
            return Err(self.at(*line, unread_message(key, factory.kind(), factories)));
        }
        let account = AccountConfig {
            name: AccountId::new(name),
            kind: factory.kind(),
            settings: Arc::from(settings),
        };
        Ok((account, name_line, command_line))
    }
}

/// An account or person name: letters, digits, `-`, `_`, `.`.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Why `key` is refused in an account of source `kind`.
fn unread_message(key: &str, kind: SourceKind, factories: Factories<'_>) -> String {
    let owners: Vec<String> = factories
        .iter()
        .filter(|f| f.keys().contains(&key))
        .map(|f| f.kind().to_string())
        .collect();
    let owners: Vec<&str> = owners.iter().map(String::as_str).collect();
    match owners.as_slice() {
        [] => {
            let own = factories
                .iter()
                .find(|f| f.kind() == kind)
                .map(|f| f.keys().join(", "))
                .unwrap_or_default();
            format!("unknown key `{key}` (source \"{kind}\" takes name, source, {own})")
        }
        [one] => format!(
            "key `{key}` does not apply to source \"{kind}\" (it is a key of source \"{one}\")"
        ),
        many => format!(
            "key `{key}` does not apply to source \"{kind}\" (it is a key of sources {})",
            one_of(many)
        ),
    }
}

fn value(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::Integer(i),
        toml::Value::Float(f) => Value::Float(f),
        toml::Value::Boolean(b) => Value::Boolean(b),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(value).collect()),
        toml::Value::Datetime(_) => Value::Other("a date"),
        toml::Value::Table(_) => Value::Other("a table"),
    }
}

impl Config {
    /// The zero-config default: the account of the first factory that is this platform's
    /// default (libpurple on Unix, `IM Providers` on Windows), with no keys.
    pub fn default_local(factories: Factories<'_>) -> Result<Config, ConfigError> {
        let mut accounts = Vec::new();
        if let Some((factory, name)) = factories
            .iter()
            .find_map(|f| f.default_account().map(|n| (f, n)))
        {
            let mut keys = Keys::new(AccountId::new(name), 0);
            let settings = factory
                .resolve(&mut keys)
                .map_err(|e| ConfigError::Invalid {
                    path: PathBuf::from("(default)"),
                    line: e.line,
                    message: e.message,
                })?;
            accounts.push(AccountConfig {
                name: AccountId::new(name),
                kind: factory.kind(),
                settings: Arc::from(settings),
            });
        }
        Ok(Config {
            accounts,
            persons: Vec::new(),
            serve: None,
            mqtt: None,
            cluster: None,
            origin: Origin::Default,
        })
    }

    /// Parses a config file's text; `path` is used in error messages.
    pub fn parse(text: &str, path: &Path, factories: Factories<'_>) -> Result<Config, ConfigError> {
        Config::parse_inner(text, path, factories).map(|(c, _)| c)
    }

    /// Parses, and gives the line of the first key that names a command to run.
    fn parse_inner(
        text: &str,
        path: &Path,
        factories: Factories<'_>,
    ) -> Result<(Config, Option<usize>), ConfigError> {
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
        let mut commands: Option<usize> = raw
            .mqtt
            .as_ref()
            .and_then(|m| m.password_command.as_ref())
            .map(|c| r.line(c.span()));
        if let Some(c) = &raw.cluster {
            let line = [&c.password_command, &c.token_command]
                .into_iter()
                .flatten()
                .map(|c| r.line(c.span()))
                .min();
            commands = match (commands, line) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        for table in raw.account {
            let (account, name_line, command_line) = r.account(table, factories)?;
            if !seen.insert(account.name.clone()) {
                return Err(r.at(
                    name_line,
                    format!("key `name`: account `{}` is defined twice", account.name),
                ));
            }
            if let Some(l) = command_line {
                commands = Some(commands.map_or(l, |c| c.min(l)));
            }
            accounts.push(account);
        }
        let persons = r.persons(raw.person, &accounts)?;
        let serve = raw.serve.map(|s| r.serve(s)).transpose()?;
        let mqtt = raw.mqtt.map(|m| r.mqtt(m)).transpose()?;
        let cluster = raw.cluster.map(|c| r.cluster(c)).transpose()?;
        let config = Config {
            accounts,
            persons,
            serve,
            mqtt,
            cluster,
            origin: Origin::File(path.to_owned()),
        };
        Ok((config, commands))
    }

    /// Reads and parses a config file. A file that names commands to run
    /// (`password_command`, …) must be the user's own and writable by nobody else, or anyone
    /// who can write it runs commands as the user.
    pub fn load(path: &Path, factories: Factories<'_>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let (config, commands) = Config::parse_inner(&text, path, factories)?;
        if let Some(line) = commands {
            check_commands_safe(path, line)?;
        }
        Ok(config)
    }

    /// Finds the config: `explicit` (`--config`), else `$IMSTATUS_CONFIG`, else
    /// [`default_path`]; with none of them present, the zero-config default
    /// ([`Config::default_local`]). An explicitly named file that is missing is an error.
    pub fn discover(
        explicit: Option<&Path>,
        factories: Factories<'_>,
    ) -> Result<Config, ConfigError> {
        if let Some(p) = explicit {
            return Config::load(p, factories);
        }
        if let Some(p) = std::env::var_os("IMSTATUS_CONFIG").filter(|p| !p.is_empty()) {
            return Config::load(Path::new(&p), factories);
        }
        match default_path() {
            Some(p) if p.exists() => Config::load(&p, factories),
            _ => Config::default_local(factories),
        }
    }

    /// An account by name.
    pub fn account(&self, name: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.name.as_str() == name)
    }

    /// A person by name.
    pub fn person(&self, name: &str) -> Option<&PersonConfig> {
        self.persons.iter().find(|p| p.name.as_str() == name)
    }
}

/// Refuses a config file that names a command (a key ending in `_command`, on `line`) while
/// another user could change it: not owned by this user (or root), or writable by group or
/// others.
fn check_commands_safe(path: &Path, line: usize) -> Result<(), ConfigError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).map_err(|source| ConfigError::Io {
            path: path.to_owned(),
            source,
        })?;
        let me = nix::unistd::geteuid().as_raw();
        let mode = meta.mode() & 0o7777;
        let problem = if meta.uid() != me && meta.uid() != 0 {
            Some(format!("owned by uid {}, not by this user", meta.uid()))
        } else if mode & 0o022 != 0 {
            Some(format!("writable by group or others (mode {mode:04o})"))
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                line,
                message: format!(
                    "this file names a command to run, but it is {problem}: whoever can change it \
                     runs commands as you; run `chmod go-w {}`",
                    path.display()
                ),
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, line);
    Ok(())
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

/// `$XDG_STATE_HOME/imstatus`, or `~/.local/state/imstatus`; on Windows
/// `%LOCALAPPDATA%\imstatus`: where sources keep what they must remember across restarts
/// (a Matrix device's access token, …).
pub fn state_dir() -> Option<PathBuf> {
    #[cfg(windows)]
    let base = std::env::var_os("LOCALAPPDATA")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)?;
    #[cfg(not(windows))]
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local").join("state"))
        })?;
    Some(base.join("imstatus"))
}

#[cfg(test)]
mod tests;
