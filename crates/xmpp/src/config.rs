//! The XMPP source's settings and its `[[account]]` keys (`source = "xmpp"`); the
//! [`XmppFactory`](crate::XmppFactory) registers the source with the binary.

use std::net::IpAddr;
use std::path::PathBuf;

use imstatus_config::Secret;
use imstatus_core::SourceKind;
use imstatus_hub::{KeyError, Keys, Spanned};

/// `source = "xmpp"`.
pub const KIND: SourceKind = SourceKind::new_static("xmpp");

/// Every key of an XMPP account.
pub(crate) const KEYS: &[&str] = &[
    "jid",
    "password_file",
    "password_command",
    "server",
    "tls",
    "ca_file",
    "contacts",
    "visibility",
    "watch_as",
    "watcher_jid",
    "watcher_password_file",
    "watcher_password_command",
];

/// How to connect to an XMPP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// STARTTLS required (the default).
    Required,
    /// No TLS at all; only to a loopback `server` (a test server on this machine).
    InsecurePlaintext,
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

/// A bare JID like `user@example.org` from `key`.
fn bare_jid(keys: &Keys, key: &str, jid: &Spanned<String>) -> Result<String, KeyError> {
    let bare = jid.value.trim();
    let valid = bare
        .split_once('@')
        .is_some_and(|(l, d)| !l.is_empty() && !d.is_empty() && !d.contains(['/', '@', ' ']));
    if valid {
        Ok(bare.to_owned())
    } else {
        Err(keys.error(
            jid.line,
            format!("key `{key}`: `{bare}` is not a bare JID like user@example.org"),
        ))
    }
}

/// Is `host` (of `host:port`) a loopback address or `localhost`?
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Reads an XMPP account's keys.
pub fn resolve(keys: &mut Keys) -> Result<XmppConfig, KeyError> {
    let name = keys.account().clone();
    let jid = keys.required_string("jid")?;
    let jid = bare_jid(keys, "jid", &jid)?;
    let server = keys.string("server")?;
    if let Some(server) = &server {
        let ok = server
            .value
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !ok {
            return Err(keys.error(
                server.line,
                format!("key `server`: `{}` is not host:port", server.value),
            ));
        }
    }
    let tls = match keys.choice("tls", &["required", "insecure-plaintext"])? {
        Some(t) if t.value == "insecure-plaintext" => {
            // Plaintext sends the password in the clear: only to this machine.
            let local = server
                .as_ref()
                .and_then(|s| s.value.rsplit_once(':'))
                .is_some_and(|(h, _)| is_loopback(h));
            if !local {
                return Err(keys.error(
                    t.line,
                    "key `tls`: \"insecure-plaintext\" sends the password in the clear and is \
                     only allowed with a loopback `server` (127.0.0.1, [::1] or localhost)",
                ));
            }
            TlsMode::InsecurePlaintext
        }
        _ => TlsMode::Required,
    };
    let visibility = match keys.choice("visibility", &["auto", "invisible", "visible"])? {
        None => Visibility::Auto,
        Some(v) => match v.value {
            "invisible" => Visibility::Invisible,
            "visible" => Visibility::Visible,
            _ => Visibility::Auto,
        },
    };
    let contact_mode = keys
        .choice("watch_as", &["user", "contact"])?
        .is_some_and(|w| w.value == "contact");
    let contacts = keys.bool("contacts")?;
    let (password, watch_as) = if contact_mode {
        // imstatus logs in as the watcher: the user's password is neither needed nor wanted,
        // and the watcher's roster is not the user's.
        keys.refuse(
            &["password_file", "password_command"],
            "watch_as = \"contact\" (imstatus logs in as `watcher_jid` with \
             `watcher_password_file` or `watcher_password_command`)",
        )?;
        if let Some(c) = contacts.as_ref().filter(|c| c.value) {
            return Err(keys.error(
                c.line,
                "key `contacts` does not apply to watch_as = \"contact\" (the watcher's \
                 roster is not the user's)",
            ));
        }
        let watch_as_line = keys.line_of("watch_as").unwrap_or(keys.line());
        let watcher = keys.string("watcher_jid")?.ok_or_else(|| {
            keys.error(
                watch_as_line,
                format!("account `{name}`: watch_as = \"contact\" needs key `watcher_jid`"),
            )
        })?;
        let watcher_jid = bare_jid(keys, "watcher_jid", &watcher)?;
        if watcher_jid.eq_ignore_ascii_case(&jid) {
            return Err(keys.error(
                watcher.line,
                "key `watcher_jid`: must be a separate account, not the user's `jid`",
            ));
        }
        let password = Secret::from_keys(
            keys,
            "watcher_password_file",
            Some("watcher_password_command"),
        )?
        .ok_or_else(|| {
            keys.error(
                watcher.line,
                format!(
                    "account `{name}`: missing key `watcher_password_file` (or \
                     `watcher_password_command`)"
                ),
            )
        })?;
        (password.value, WatchAs::Contact { watcher_jid })
    } else {
        keys.refuse(
            &[
                "watcher_jid",
                "watcher_password_file",
                "watcher_password_command",
            ],
            "watch_as = \"user\" (the default); set watch_as = \"contact\" to log in as a \
             separate watcher account",
        )?;
        let password = Secret::from_keys(keys, "password_file", Some("password_command"))?
            .ok_or_else(|| {
                keys.error(
                    keys.line(),
                    format!(
                        "account `{name}`: missing key `password_file` (or `password_command`)"
                    ),
                )
            })?;
        (password.value, WatchAs::User)
    };
    Ok(XmppConfig {
        jid,
        password,
        server: server.map(Spanned::into_inner),
        tls,
        ca_file: keys.path("ca_file")?.map(Spanned::into_inner),
        contacts: contacts.is_some_and(|c| c.value),
        visibility,
        watch_as,
    })
}

#[cfg(all(test, unix))]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::XmppFactory;

    use imstatus_config::{Config, ConfigError, Secret};

    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("cfg.toml"), &[&XmppFactory])
    }

    fn err(text: &str) -> String {
        parse(text).expect_err("should fail").to_string()
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
        let x = xmpp(&c);
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
        c.accounts[0]
            .settings_as::<XmppConfig>()
            .expect("an xmpp account")
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
    fn insecure_plaintext_is_only_for_a_loopback_server() {
        let (_dir, pw) = private_file();
        for server in ["127.0.0.1:5222", "[::1]:5222", "localhost:5222"] {
            let c = parse(&xmpp_account(
                &format!("server = \"{server}\"\ntls = \"insecure-plaintext\"\n"),
                &pw,
            ))
            .expect("loopback is fine");
            assert_eq!(xmpp(&c).tls, TlsMode::InsecurePlaintext);
        }
        for server in [
            "",
            "server = \"xmpp.example.org:5222\"\n",
            "server = \"10.0.0.1:5222\"\n",
        ] {
            let e = err(&xmpp_account(
                &format!("{server}tls = \"insecure-plaintext\"\n"),
                &pw,
            ));
            assert!(
                e.contains("key `tls`: \"insecure-plaintext\" sends the password in the clear"),
                "{e}"
            );
        }
    }
}
