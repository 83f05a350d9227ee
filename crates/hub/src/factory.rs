//! The registration seam: what a source crate gives the binary so that nothing else has to
//! name it.
//!
//! A source crate exports one [`SourceFactory`]. The binary lists the factories it was built
//! with (one feature-gated list); the config reader hands each `[[account]]` table to the
//! factory its `source` key names, as [`Keys`]: the table's keys with their values and line
//! numbers, independent of the file format. The factory reads the keys it knows into its own
//! typed settings and returns them as a [`SourceSettings`], which builds the running
//! [`Source`] and runs `imstatus doctor`'s steps. Keys the factory did not read are refused by
//! the config reader, naming the source they belong to.
//!
//! ```text
//! config file ──[[account]]──▶ Keys ──SourceFactory::resolve──▶ SourceSettings
//!                                                                  ├─ build()  ─▶ Arc<dyn Source> ─▶ Hub
//!                                                                  └─ doctor() ─▶ Vec<Check>
//! ```

use std::any::Any;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use imstatus_core::{AccountId, CodedError, SourceKind};

use crate::source::{BoxFuture, Check, Source};

/// A kind of source this binary can watch: one per source crate.
pub trait SourceFactory: Send + Sync + 'static {
    /// The `source = "…"` name, also the JSON `source` field.
    fn kind(&self) -> SourceKind;

    /// A short name for people: the Home Assistant device model, the dashboard
    /// (`XMPP account`, `libpurple client (Pidgin, Finch)`).
    fn title(&self) -> &'static str;

    /// One line for `--help` and the docs: what the source watches and how.
    fn description(&self) -> &'static str;

    /// Every account key this source reads besides `name` and `source`, so that a key given to
    /// another source's account can be named as this source's.
    fn keys(&self) -> &'static [&'static str];

    /// The account name this source is watched as with no config file at all, if it is this
    /// platform's zero-config default (libpurple on Unix, `IM Providers` on Windows).
    fn default_account(&self) -> Option<&'static str> {
        None
    }

    /// Reads this source's keys of one `[[account]]` table into its typed settings. Reads
    /// every key it accepts (through [`Keys`]' getters); a key it leaves unread is refused by
    /// the caller.
    fn resolve(&self, keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError>;
}

/// One account's resolved settings, ready to build the source that watches it.
pub trait SourceSettings: fmt::Debug + Send + Sync + 'static {
    /// Builds the source (no I/O yet: it connects when the hub runs it).
    fn build(&self, account: &AccountId) -> Result<Arc<dyn Source>, CodedError>;

    /// `imstatus doctor`'s steps for this account, in order.
    fn doctor(&self) -> BoxFuture<'_, Vec<Check>>;

    /// The settings as `Any`, for tests and callers that know the concrete type.
    fn as_any(&self) -> &dyn Any;
}

/// A config value, independent of the file format.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Value {
    /// A string.
    String(String),
    /// An integer.
    Integer(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Boolean(bool),
    /// An array.
    Array(Vec<Value>),
    /// A value of a type sources do not take (a table, a date), by its type's name.
    Other(&'static str),
}

impl Value {
    fn type_name(&self) -> &'static str {
        match self {
            Value::String(_) => "a string",
            Value::Integer(_) => "an integer",
            Value::Float(_) => "a float",
            Value::Boolean(_) => "a boolean",
            Value::Array(_) => "an array",
            Value::Other(t) => t,
        }
    }
}

/// A value and the 1-based line it was written on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spanned<T> {
    /// The value.
    pub value: T,
    /// Its line.
    pub line: usize,
}

impl<T> Spanned<T> {
    /// The value, without its line.
    pub fn into_inner(self) -> T {
        self.value
    }

    /// Converts the value, keeping the line.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Spanned<U> {
        Spanned {
            value: f(self.value),
            line: self.line,
        }
    }
}

/// A problem with one key; the config reader prefixes the file's path: `file:line: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct KeyError {
    /// The 1-based line.
    pub line: usize,
    /// What is wrong, naming the key (`key `jid`: …`).
    pub message: String,
}

#[derive(Debug, Clone)]
struct Entry {
    value: Value,
    line: usize,
    read: bool,
}

/// The keys of one `[[account]]` table, with their lines. Each getter marks its key as read;
/// [`Keys::unread`] lists the rest.
#[derive(Debug, Clone)]
pub struct Keys {
    account: AccountId,
    line: usize,
    entries: BTreeMap<String, Entry>,
}

impl Keys {
    /// The keys of account `account`, whose `name` is on line `line`.
    pub fn new(account: AccountId, line: usize) -> Self {
        Keys {
            account,
            line,
            entries: BTreeMap::new(),
        }
    }

    /// Adds a key (for the config reader).
    pub fn insert(&mut self, key: impl Into<String>, value: Value, line: usize) {
        self.entries.insert(
            key.into(),
            Entry {
                value,
                line,
                read: false,
            },
        );
    }

    /// Adds a key, builder style.
    pub fn with(mut self, key: impl Into<String>, value: Value) -> Self {
        let line = self.line + 1 + self.entries.len();
        self.insert(key, value, line);
        self
    }

    /// The account's name.
    pub fn account(&self) -> &AccountId {
        &self.account
    }

    /// The line of the account's `name` key: where errors about the account as a whole point.
    pub fn line(&self) -> usize {
        self.line
    }

    /// An error on `line`.
    pub fn error(&self, line: usize, message: impl fmt::Display) -> KeyError {
        KeyError {
            line,
            message: message.to_string(),
        }
    }

    /// `account `a`: missing key `jid``, on the account's line.
    pub fn missing(&self, key: &str) -> KeyError {
        self.error(
            self.line,
            format!("account `{}`: missing key `{key}`", self.account),
        )
    }

    /// Is `key` present (without reading it)?
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The line of `key`, if present (without reading it).
    pub fn line_of(&self, key: &str) -> Option<usize> {
        self.entries.get(key).map(|e| e.line)
    }

    /// Keys no getter read, in file order: `(key, line)`.
    pub fn unread(&self) -> Vec<(&str, usize)> {
        let mut v: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.read)
            .map(|(k, e)| (k.as_str(), e.line))
            .collect();
        v.sort_by_key(|&(_, line)| line);
        v
    }

    /// Marks every key as read (for a factory that accepts anything, e.g. one standing in for
    /// a source this build lacks).
    pub fn read_all(&mut self) {
        for e in self.entries.values_mut() {
            e.read = true;
        }
    }

    /// Reads a key's raw value.
    pub fn value(&mut self, key: &str) -> Option<Spanned<Value>> {
        let e = self.entries.get_mut(key)?;
        e.read = true;
        Some(Spanned {
            value: e.value.clone(),
            line: e.line,
        })
    }

    fn typed<T>(
        &mut self,
        key: &str,
        expected: &str,
        f: impl FnOnce(Value) -> Result<T, Value>,
    ) -> Result<Option<Spanned<T>>, KeyError> {
        let Some(v) = self.value(key) else {
            return Ok(None);
        };
        let line = v.line;
        match f(v.value) {
            Ok(value) => Ok(Some(Spanned { value, line })),
            Err(other) => Err(self.error(
                line,
                format!(
                    "key `{key}`: expected {expected}, found {}",
                    other.type_name()
                ),
            )),
        }
    }

    /// A string key.
    pub fn string(&mut self, key: &str) -> Result<Option<Spanned<String>>, KeyError> {
        self.typed(key, "a string", |v| match v {
            Value::String(s) => Ok(s),
            other => Err(other),
        })
    }

    /// A string key that must be present.
    pub fn required_string(&mut self, key: &str) -> Result<Spanned<String>, KeyError> {
        self.string(key)?.ok_or_else(|| self.missing(key))
    }

    /// A boolean key.
    pub fn bool(&mut self, key: &str) -> Result<Option<Spanned<bool>>, KeyError> {
        self.typed(key, "a boolean", |v| match v {
            Value::Boolean(b) => Ok(b),
            other => Err(other),
        })
    }

    /// An integer key.
    pub fn integer(&mut self, key: &str) -> Result<Option<Spanned<i64>>, KeyError> {
        self.typed(key, "an integer", |v| match v {
            Value::Integer(i) => Ok(i),
            other => Err(other),
        })
    }

    /// An array of strings.
    pub fn strings(&mut self, key: &str) -> Result<Option<Spanned<Vec<String>>>, KeyError> {
        self.typed(key, "an array of strings", |v| match v {
            Value::Array(items) => {
                let strings: Option<Vec<String>> = items
                    .iter()
                    .map(|i| match i {
                        Value::String(s) => Some(s.clone()),
                        _ => None,
                    })
                    .collect();
                strings.ok_or(Value::Array(items))
            }
            other => Err(other),
        })
    }

    /// A path; a leading `~/` is the home directory.
    pub fn path(&mut self, key: &str) -> Result<Option<Spanned<PathBuf>>, KeyError> {
        Ok(self.string(key)?.map(|s| s.map(|p| expand_home(&p))))
    }

    /// A duration written like `5m`, `30s`, `1h 30m`, `500ms`.
    pub fn duration(&mut self, key: &str) -> Result<Option<Spanned<Duration>>, KeyError> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        match humantime::parse_duration(s.value.trim()) {
            Ok(d) => Ok(Some(Spanned {
                value: d,
                line: s.line,
            })),
            Err(e) => Err(self.error(
                s.line,
                format!(
                    "key `{key}`: `{}` is not a duration like 30s or 5m ({e})",
                    s.value
                ),
            )),
        }
    }

    /// A string key that must be one of `choices` (`None` when absent).
    pub fn choice(
        &mut self,
        key: &str,
        choices: &[&'static str],
    ) -> Result<Option<Spanned<&'static str>>, KeyError> {
        let Some(s) = self.string(key)? else {
            return Ok(None);
        };
        match choices.iter().find(|c| **c == s.value) {
            Some(c) => Ok(Some(Spanned {
                value: c,
                line: s.line,
            })),
            None => Err(self.error(
                s.line,
                format!("key `{key}`: `{}` is not {}", s.value, one_of(choices)),
            )),
        }
    }

    /// Refuses `keys` when present (and not read yet): `key `k` does not apply to {why}`.
    pub fn refuse(&mut self, keys: &[&str], why: &str) -> Result<(), KeyError> {
        let first = keys
            .iter()
            .filter_map(|k| Some((*k, self.entries.get(*k).filter(|e| !e.read)?.line)))
            .min_by_key(|&(_, line)| line);
        match first {
            Some((k, line)) => Err(self.error(line, format!("key `{k}` does not apply to {why}"))),
            None => Ok(()),
        }
    }
}

/// `"a"`, `"a" or "b"`, `"a", "b" or "c"`.
pub fn one_of(choices: &[&str]) -> String {
    let quoted: Vec<String> = choices.iter().map(|c| format!("\"{c}\"")).collect();
    match quoted.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

/// Expands a leading `~/` to `$HOME/` (on Windows also `~\`, and `%USERPROFILE%` when `HOME`
/// is not set).
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

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        let mut k = Keys::new(AccountId::new("a"), 2);
        k.insert("jid", Value::String("a@b".into()), 4);
        k.insert("contacts", Value::Boolean(true), 5);
        k.insert("accounts", Value::Array(vec![Value::String("x".into())]), 6);
        k.insert("idle_after", Value::String("5m".into()), 7);
        k.insert("tls", Value::String("maybe".into()), 8);
        k
    }

    #[test]
    fn getters_read_typed_values_with_their_lines_and_mark_them_read() {
        let mut k = keys();
        assert_eq!(
            k.string("jid"),
            Ok(Some(Spanned {
                value: "a@b".into(),
                line: 4
            }))
        );
        assert_eq!(
            k.bool("contacts").map(|b| b.map(|b| b.value)),
            Ok(Some(true))
        );
        assert_eq!(
            k.strings("accounts").map(|b| b.map(|b| b.value)),
            Ok(Some(vec!["x".to_owned()]))
        );
        assert_eq!(
            k.duration("idle_after").map(|d| d.map(|d| d.value)),
            Ok(Some(Duration::from_secs(300)))
        );
        assert_eq!(k.string("absent"), Ok(None));
        assert_eq!(k.unread(), vec![("tls", 8)]);
    }

    #[test]
    fn wrong_types_and_values_name_key_and_line() {
        let mut k = keys();
        assert_eq!(
            k.bool("jid").expect_err("string").to_string(),
            "line 4: key `jid`: expected a boolean, found a string"
        );
        assert_eq!(
            k.choice("tls", &["required", "insecure-plaintext"])
                .expect_err("bad choice")
                .message,
            "key `tls`: `maybe` is not \"required\" or \"insecure-plaintext\""
        );
        assert_eq!(k.required_string("server").expect_err("missing").line, 2);
        assert_eq!(
            k.duration("jid").expect_err("not a duration").line,
            4,
            "a duration error points at its key"
        );
    }

    #[test]
    fn refuse_names_the_first_present_key_in_file_order() {
        let mut k = keys();
        let e = k
            .refuse(&["tls", "contacts", "nope"], "source \"x\"")
            .expect_err("present");
        assert_eq!(e.line, 5);
        assert_eq!(e.message, "key `contacts` does not apply to source \"x\"");
        assert!(k.refuse(&["nope"], "y").is_ok());
    }

    #[test]
    fn one_of_lists_choices_in_prose() {
        assert_eq!(one_of(&["a"]), "\"a\"");
        assert_eq!(one_of(&["a", "b"]), "\"a\" or \"b\"");
        assert_eq!(one_of(&["a", "b", "c"]), "\"a\", \"b\" or \"c\"");
    }
}
