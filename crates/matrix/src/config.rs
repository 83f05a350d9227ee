//! The `[[account]]` keys of `source = "matrix"`, read into [`MatrixConfig`].

use std::fmt;
use std::path::PathBuf;

use imstatus_config::Secret;
use imstatus_core::AccountId;
use imstatus_hub::{KeyError, Keys};

/// The keys of a Matrix account, besides `name` and `source`.
pub const KEYS: &[&str] = &[
    "homeserver",
    "user",
    "password_file",
    "password_command",
    "access_token_file",
    "device_name",
    "ca_file",
    "contacts",
];

/// The device display name when `device_name` is not set.
pub const DEFAULT_DEVICE_NAME: &str = "imstatus";

/// The longest `device_name` accepted (Synapse refuses names over 100 characters).
const MAX_DEVICE_NAME: usize = 100;

/// A Matrix user ID, `@localpart:server_name` (the server name may carry a port).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    /// Parses `@localpart:server_name`; `None` when it is not one.
    pub fn parse(text: &str) -> Option<UserId> {
        let rest = text.strip_prefix('@')?;
        let (local, server) = rest.split_once(':')?;
        let ok_local = !local.is_empty()
            && local
                .chars()
                .all(|c| c.is_ascii_graphic() && c != ':' && c != '@');
        let ok_server = !server.is_empty()
            && server
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
        (ok_local && ok_server && text.len() <= 255).then(|| UserId(text.to_owned()))
    }

    /// The whole ID.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The local part (`alice`).
    pub fn localpart(&self) -> &str {
        self.0
            .get(1..)
            .and_then(|r| r.split_once(':'))
            .map_or("", |(l, _)| l)
    }

    /// The server name (`example.test`, or `example.test:8448`).
    pub fn server_name(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, s)| s)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// How the source proves it is the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// A password: the source logs in once as its own device and keeps the access token in
    /// the state directory; it logs in again (same device) when the token stops working.
    Password(Secret),
    /// An access token the user made elsewhere: used as is, never refreshed, never logged
    /// out; a refused token is `auth_failed`.
    AccessToken(Secret),
}

/// One Matrix account's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatrixConfig {
    /// The homeserver's client-server base URL (`https://matrix.example.org`), without a
    /// trailing `/`.
    pub homeserver: String,
    /// The watched user.
    pub user: UserId,
    /// Password or access token.
    pub credentials: Credentials,
    /// The display name of the device the source logs in as.
    pub device_name: String,
    /// An extra PEM trust root for an `https` homeserver.
    pub ca_file: Option<PathBuf>,
    /// Also track the users the account shares rooms with.
    pub contacts: bool,
    /// The account's name (the state file is named after it).
    pub account: AccountId,
    /// Where the login (device and access token) is kept; `None`: `$XDG_STATE_HOME/imstatus/
    /// matrix`, else `~/.local/state/imstatus/matrix`. Not a config key: for tests.
    pub state_dir: Option<PathBuf>,
}

impl MatrixConfig {
    /// Settings with the defaults (`device_name = "imstatus"`, no contacts, no `ca_file`,
    /// the account named after the user's local part). `homeserver` is taken as given (see
    /// [`parse_homeserver`] for the checks the config reader makes).
    pub fn new(homeserver: impl Into<String>, user: UserId, credentials: Credentials) -> Self {
        MatrixConfig {
            account: AccountId::new(user.localpart()),
            homeserver: homeserver.into().trim_end_matches('/').to_owned(),
            user,
            credentials,
            device_name: DEFAULT_DEVICE_NAME.to_owned(),
            ca_file: None,
            contacts: false,
            state_dir: None,
        }
    }

    /// Reads the account's keys, checking each one against its line.
    pub fn from_keys(keys: &mut Keys) -> Result<MatrixConfig, KeyError> {
        let homeserver = keys.required_string("homeserver")?;
        let url = parse_homeserver(&homeserver.value)
            .map_err(|why| keys.error(homeserver.line, format!("key `homeserver`: {why}")))?;
        let user = keys.required_string("user")?;
        let user_id = UserId::parse(user.value.trim()).ok_or_else(|| {
            keys.error(
                user.line,
                format!(
                    "key `user`: {:?} is not a Matrix user ID like \"@alice:example.org\"",
                    user.value
                ),
            )
        })?;
        let password = Secret::from_keys(keys, "password_file", Some("password_command"))?;
        let token = Secret::from_keys(keys, "access_token_file", None)?;
        let credentials = match (password, token) {
            (Some(_), Some(t)) => {
                return Err(keys.error(
                    t.line,
                    "key `access_token_file`: give either a password (`password_file` / \
                     `password_command`) or an access token, not both",
                ))
            }
            (Some(p), None) => Credentials::Password(p.value),
            (None, Some(t)) => Credentials::AccessToken(t.value),
            (None, None) => {
                return Err(keys.error(
                    keys.line(),
                    format!(
                        "account `{}`: missing key `password_file`, `password_command` or \
                         `access_token_file`",
                        keys.account()
                    ),
                ))
            }
        };
        let device_name = match keys.string("device_name")? {
            None => DEFAULT_DEVICE_NAME.to_owned(),
            Some(d) => {
                let name = d.value.trim();
                if name.is_empty() || name.chars().count() > MAX_DEVICE_NAME {
                    return Err(keys.error(
                        d.line,
                        format!("key `device_name`: give 1 to {MAX_DEVICE_NAME} characters"),
                    ));
                }
                name.to_owned()
            }
        };
        let ca_file = keys.path("ca_file")?;
        if let Some(ca) = &ca_file {
            if url.scheme == "http" {
                return Err(keys.error(
                    ca.line,
                    "key `ca_file`: the homeserver is plain http://, so no certificate is checked; \
                     use an https:// homeserver or drop `ca_file`",
                ));
            }
        }
        let contacts = keys.bool("contacts")?.is_some_and(|c| c.value);
        Ok(MatrixConfig {
            account: keys.account().clone(),
            homeserver: url.base,
            user: user_id,
            credentials,
            device_name,
            ca_file: ca_file.map(|c| c.value),
            contacts,
            state_dir: None,
        })
    }

    /// The state file of `account`: `<state_dir>/<account>.json` (the name made safe).
    pub fn state_file(&self, account: &AccountId) -> Option<PathBuf> {
        let dir = match &self.state_dir {
            Some(d) => d.clone(),
            None => default_state_dir()?,
        };
        Some(dir.join(format!("{}.json", file_name(account.as_str()))))
    }
}

/// `$XDG_STATE_HOME/imstatus/matrix`, else `$HOME/.local/state/imstatus/matrix`; on Windows
/// `%LOCALAPPDATA%\imstatus\matrix`.
pub fn default_state_dir() -> Option<PathBuf> {
    #[cfg(windows)]
    if let Some(local) = std::env::var_os("LOCALAPPDATA").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(local).join("imstatus").join("matrix"));
    }
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(|h| PathBuf::from(h).join(".local/state"))
        })?;
    Some(base.join("imstatus").join("matrix"))
}

/// An account name as a file name: ASCII letters, digits, `-`, `_` and `.` kept (no leading
/// dot), anything else as `%xx`.
fn file_name(account: &str) -> String {
    let mut out = String::new();
    for (i, b) in account.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_') || (b == b'.' && i > 0) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    out
}

/// A checked homeserver URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Homeserver {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// `scheme://authority[/prefix]`, no trailing `/`.
    pub base: String,
}

/// Checks a homeserver URL: `http://` or `https://`, a host, an optional port and path
/// prefix, no query, fragment or user info.
pub fn parse_homeserver(text: &str) -> Result<Homeserver, String> {
    let text = text.trim();
    let uri: hyper::Uri = text
        .parse()
        .map_err(|e| format!("{text:?} is not a URL like \"https://matrix.example.org\" ({e})"))?;
    let scheme = match uri.scheme_str() {
        Some("https") => "https",
        Some("http") => "http",
        Some(other) => {
            return Err(format!(
                "scheme {other:?}: use https:// (or http:// on loopback)"
            ))
        }
        None => return Err(format!("{text:?} has no scheme; write \"https://{text}\"")),
    };
    let Some(authority) = uri.authority() else {
        return Err(format!("{text:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err("user info in the URL is not supported; use password_file".into());
    }
    if authority.host().is_empty() {
        return Err(format!("{text:?} has no host"));
    }
    if uri.query().is_some() || text.contains('#') {
        return Err(format!("{text:?}: no query or fragment, please"));
    }
    let path = uri.path().trim_end_matches('/');
    Ok(Homeserver {
        scheme,
        base: format!("{scheme}://{authority}{path}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use imstatus_hub::Value;

    fn keys(entries: &[(&str, Value)]) -> Keys {
        let mut k = Keys::new(AccountId::new("alice"), 1);
        for (i, (key, value)) in entries.iter().enumerate() {
            k.insert(*key, value.clone(), i + 2);
        }
        k
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_owned())
    }

    fn resolve(entries: &[(&str, Value)]) -> Result<MatrixConfig, KeyError> {
        MatrixConfig::from_keys(&mut keys(entries))
    }

    #[test]
    fn a_full_account_resolves_and_reads_every_key() {
        let mut k = keys(&[
            ("homeserver", s("http://127.0.0.1:8008/")),
            ("user", s("@alice:example.test")),
            ("password_command", s("echo pw")),
            ("device_name", s("desk watcher")),
            ("contacts", Value::Boolean(true)),
        ]);
        let c = MatrixConfig::from_keys(&mut k).expect("valid");
        assert_eq!(c.homeserver, "http://127.0.0.1:8008");
        assert_eq!(c.user.localpart(), "alice");
        assert_eq!(c.user.server_name(), "example.test");
        assert_eq!(
            c.credentials,
            Credentials::Password(Secret::Command("echo pw".into()))
        );
        assert_eq!(c.device_name, "desk watcher");
        assert!(c.contacts);
        assert_eq!(k.unread(), vec![]);
    }

    #[test]
    fn bad_keys_are_refused_with_their_line() {
        let cmd = ("password_command", s("echo pw"));
        let user = ("user", s("@alice:example.test"));
        type Case<'a> = (Vec<(&'a str, Value)>, usize, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![("homeserver", s("matrix.example.org")), user.clone(), cmd.clone()],
                2,
                "key `homeserver`: \"matrix.example.org\" has no scheme",
            ),
            (
                vec![("homeserver", s("ftp://x.org")), user.clone(), cmd.clone()],
                2,
                "key `homeserver`: scheme \"ftp\"",
            ),
            (
                vec![("homeserver", s("https://x.org/?a=b")), user.clone(), cmd.clone()],
                2,
                "key `homeserver`:",
            ),
            (
                vec![("homeserver", s("https://x.org")), ("user", s("alice@example.test")), cmd.clone()],
                3,
                "key `user`: \"alice@example.test\" is not a Matrix user ID",
            ),
            (
                vec![("homeserver", s("https://x.org")), ("user", s("@:example.test")), cmd.clone()],
                3,
                "key `user`:",
            ),
            (
                vec![("homeserver", s("https://x.org")), user.clone()],
                1,
                "account `alice`: missing key `password_file`, `password_command` or `access_token_file`",
            ),
            (
                vec![
                    ("homeserver", s("http://127.0.0.1:8008")),
                    user.clone(),
                    cmd.clone(),
                    ("ca_file", s("/etc/ssl/ca.pem")),
                ],
                5,
                "key `ca_file`: the homeserver is plain http://",
            ),
            (
                vec![("homeserver", s("https://x.org")), user.clone(), cmd.clone(), ("device_name", s(" "))],
                5,
                "key `device_name`: give 1 to 100 characters",
            ),
            (
                vec![("homeserver", s("https://x.org")), user.clone(), cmd.clone(), ("contacts", s("yes"))],
                5,
                "key `contacts`: expected a boolean",
            ),
            (
                vec![user.clone(), cmd.clone()],
                1,
                "account `alice`: missing key `homeserver`",
            ),
        ];
        for (entries, line, message) in cases {
            let e = resolve(&entries).expect_err(message);
            assert_eq!(e.line, line, "{e}");
            assert!(e.message.starts_with(message), "{} vs {message}", e.message);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_password_and_a_token_together_are_refused_and_a_token_alone_is_taken() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let token = dir.path().join("token");
        std::fs::write(&token, "syt_x\n").expect("write");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let base = vec![
            ("homeserver", s("https://x.org")),
            ("user", s("@alice:x.org")),
            ("access_token_file", s(&token.to_string_lossy())),
        ];
        let c = resolve(&base).expect("token only");
        assert_eq!(
            c.credentials,
            Credentials::AccessToken(Secret::File(token.clone()))
        );
        let mut both = base.clone();
        both.push(("password_command", s("echo pw")));
        let e = resolve(&both).expect_err("both");
        assert_eq!(e.line, 4);
        assert!(e.message.contains("not both"), "{e}");
        // A token file others can read is refused like a password file.
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = resolve(&base).expect_err("mode");
        assert!(e.message.contains("(mode 0644)"), "{e}");
    }

    #[test]
    fn user_ids_split_into_local_part_and_server_name() {
        let u = UserId::parse("@bob:example.test:8448").expect("valid");
        assert_eq!(
            (u.localpart(), u.server_name()),
            ("bob", "example.test:8448")
        );
        for bad in [
            "bob:example.test",
            "@bob",
            "@bob:",
            "@:x",
            "@b b:x",
            "@bob:ex ample",
        ] {
            assert!(UserId::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn state_files_are_named_after_the_account_safely() {
        assert_eq!(file_name("alice"), "alice");
        assert_eq!(file_name("../x y"), "%2e.%2fx%20y");
        assert_eq!(file_name("a.b"), "a.b");
    }
}
