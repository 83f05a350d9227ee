//! The `[[account]]` keys of `source = "teams-for-linux"`, read into [`TeamsConfig`].

use std::path::PathBuf;

use imstatus_config::Secret;
use imstatus_hub::{KeyError, Keys};
use imstatus_mqtt::Broker;

use crate::names;
use crate::Error;

/// The keys of a teams-for-linux account, besides `name` and `source`.
pub const KEYS: &[&str] = &[
    "via",
    "bus",
    "url",
    "topic_prefix",
    "username",
    "password_file",
    "password_command",
    "ca_file",
];

/// The keys of `via = "dbus"`.
const DBUS_KEYS: &[&str] = &["bus"];
/// The keys of `via = "mqtt"`.
const MQTT_KEYS: &[&str] = &[
    "url",
    "topic_prefix",
    "username",
    "password_file",
    "password_command",
    "ca_file",
];

/// One teams-for-linux account's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TeamsConfig {
    /// How the app is reached.
    pub via: Via,
}

/// How the app is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Its D-Bus control API (`via = "dbus"`; not in a release of the app yet).
    Dbus(BusOptions),
    /// Its MQTT integration, through a broker (`via = "mqtt"`).
    Mqtt(BrokerOptions),
}

/// `via = "dbus"`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BusOptions {
    /// A D-Bus address; `None`: the session bus.
    pub bus: Option<String>,
}

/// `via = "mqtt"`: the broker the app publishes to, and the app's topic prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerOptions {
    /// The URL as given (`mqtt://127.0.0.1:1883`).
    pub url: String,
    /// The URL read.
    pub broker: Broker,
    /// The app's `mqtt.topicPrefix` (default `teams`).
    pub topic_prefix: String,
    /// The user name to log in with.
    pub username: Option<String>,
    /// The password (`password_file` / `password_command`); needs `username`.
    pub password: Option<Secret>,
    /// Extra trusted CA certificates (PEM) for `mqtts://`.
    pub ca_file: Option<PathBuf>,
}

impl BrokerOptions {
    /// The broker at `url` (`mqtt://host[:port]` or `mqtts://…`), anonymous, prefix `teams`.
    pub fn new(url: &str) -> Result<Self, Error> {
        let broker = imstatus_mqtt::parse_url(url.trim()).map_err(|e| Error::Url {
            url: url.to_owned(),
            reason: match e {
                imstatus_mqtt::Error::Url { reason, .. } => reason,
                other => other.to_string(),
            },
        })?;
        Ok(BrokerOptions {
            url: url.trim().to_owned(),
            broker,
            topic_prefix: names::DEFAULT_TOPIC_PREFIX.to_owned(),
            username: None,
            password: None,
            ca_file: None,
        })
    }

    /// `host:port`, for messages.
    pub fn describe(&self) -> String {
        let scheme = if self.broker.tls { "mqtts" } else { "mqtt" };
        if self.broker.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.broker.host, self.broker.port)
        } else {
            format!("{scheme}://{}:{}", self.broker.host, self.broker.port)
        }
    }

    /// A user name and password sent in the clear to another machine.
    pub fn warning(&self) -> Option<String> {
        let host = &self.broker.host;
        let loopback = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        (self.username.is_some() && !self.broker.tls && !loopback).then(|| {
            format!(
                "teams-for-linux: the MQTT user name and password go to {} without TLS, \
                 readable on the network; use mqtts://",
                self.describe()
            )
        })
    }
}

impl TeamsConfig {
    /// Over D-Bus, on `bus` (`None`: the session bus).
    pub fn dbus(bus: Option<String>) -> Self {
        TeamsConfig {
            via: Via::Dbus(BusOptions { bus }),
        }
    }

    /// Over MQTT, through the broker of `options`.
    pub fn mqtt(options: BrokerOptions) -> Self {
        TeamsConfig {
            via: Via::Mqtt(options),
        }
    }

    /// Reads the account's keys, checking each one against its line.
    pub fn from_keys(keys: &mut Keys) -> Result<TeamsConfig, KeyError> {
        let Some(via) = keys.choice("via", &["mqtt", "dbus"])? else {
            return Err(keys.error(
                keys.line(),
                format!(
                    "account `{}`: missing key `via`: set via = \"mqtt\" (teams-for-linux's MQTT \
                     integration) or via = \"dbus\" (its D-Bus API, not in a release yet)",
                    keys.account()
                ),
            ));
        };
        if via.value == "dbus" {
            keys.refuse(MQTT_KEYS, "via = \"dbus\"")?;
            let bus = keys.string("bus")?.map(|b| b.value.trim().to_owned());
            if bus.as_deref() == Some("") {
                let line = keys.line_of("bus").unwrap_or(keys.line());
                return Err(keys.error(line, "key `bus`: empty; drop it for the session bus"));
            }
            return Ok(TeamsConfig::dbus(bus));
        }
        keys.refuse(DBUS_KEYS, "via = \"mqtt\"")?;
        let url = keys.required_string("url")?;
        let mut options = BrokerOptions::new(&url.value).map_err(|e| {
            let Error::Url { reason, .. } = e;
            keys.error(url.line, format!("key `url`: {reason}"))
        })?;
        if let Some(prefix) = keys.string("topic_prefix")? {
            check_prefix(&prefix.value).map_err(|why| {
                keys.error(
                    prefix.line,
                    format!("key `topic_prefix`: {why} (the app's mqtt.topicPrefix)"),
                )
            })?;
            options.topic_prefix = prefix.value;
        }
        if let Some(user) = keys.string("username")? {
            if user.value.is_empty() || user.value.len() > 65535 {
                return Err(keys.error(user.line, "key `username`: give 1 to 65535 bytes"));
            }
            options.username = Some(user.value);
        }
        if let Some(password) = Secret::from_keys(keys, "password_file", Some("password_command"))?
        {
            if options.username.is_none() {
                let key = match password.value {
                    Secret::File(_) => "password_file",
                    Secret::Command(_) => "password_command",
                };
                return Err(keys.error(
                    password.line,
                    format!(
                        "key `{key}`: MQTT sends a password only with a user name: set \
                         `username` too"
                    ),
                ));
            }
            options.password = Some(password.value);
        }
        if let Some(ca) = keys.path("ca_file")? {
            if !options.broker.tls {
                return Err(keys.error(
                    ca.line,
                    "key `ca_file`: the url is plain mqtt://, so no certificate is checked; use \
                     mqtts:// or drop `ca_file`",
                ));
            }
            options.ca_file = Some(ca.value);
        }
        Ok(TeamsConfig::mqtt(options))
    }
}

/// A topic prefix the app could have: no wildcards, no empty levels, no control characters.
fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    if prefix.is_empty() {
        Err("must not be empty")
    } else if prefix.contains(['+', '#']) {
        Err("must not contain the MQTT wildcards `+` or `#`")
    } else if prefix.starts_with('/') || prefix.ends_with('/') || prefix.contains("//") {
        Err("must not start or end with `/` or have empty levels")
    } else if prefix.chars().any(char::is_control) || prefix.len() > 1024 {
        Err("must be at most 1024 bytes without control characters")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TeamsFactory;
    use imstatus_core::AccountId;
    use imstatus_hub::SourceFactory;
    use imstatus_hub::Value;

    fn keys(entries: &[(&str, Value)]) -> Keys {
        let mut k = Keys::new(AccountId::new("work"), 1);
        for (i, (key, value)) in entries.iter().enumerate() {
            k.insert(*key, value.clone(), i + 2);
        }
        k
    }

    fn s(v: &str) -> Value {
        Value::String(v.to_owned())
    }

    fn resolve(entries: &[(&str, Value)]) -> Result<TeamsConfig, KeyError> {
        TeamsConfig::from_keys(&mut keys(entries))
    }

    #[test]
    fn dbus_needs_nothing_but_via() {
        let mut k = keys(&[("via", s("dbus"))]);
        assert_eq!(TeamsConfig::from_keys(&mut k), Ok(TeamsConfig::dbus(None)));
        assert_eq!(k.unread(), vec![]);
        assert_eq!(
            resolve(&[("via", s("dbus")), ("bus", s("unix:path=/run/bus"))]),
            Ok(TeamsConfig::dbus(Some("unix:path=/run/bus".into())))
        );
    }

    #[test]
    fn mqtt_reads_every_key() {
        let mut k = keys(&[
            ("via", s("mqtt")),
            ("url", s("mqtts://broker.lan")),
            ("topic_prefix", s("home/teams")),
            ("username", s("imstatus")),
            ("password_command", s("echo pw")),
            ("ca_file", s("/etc/ca.pem")),
        ]);
        let c = TeamsConfig::from_keys(&mut k).expect("valid");
        assert_eq!(k.unread(), vec![]);
        let Via::Mqtt(o) = c.via else {
            panic!("mqtt expected")
        };
        assert_eq!(
            o.broker,
            Broker {
                host: "broker.lan".into(),
                port: 8883,
                tls: true
            }
        );
        assert_eq!(o.topic_prefix, "home/teams");
        assert_eq!(o.username.as_deref(), Some("imstatus"));
        assert_eq!(o.password, Some(Secret::Command("echo pw".into())));
        assert_eq!(o.ca_file, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(o.describe(), "mqtts://broker.lan:8883");
        assert_eq!(o.warning(), None);
        let plain = resolve(&[
            ("via", s("mqtt")),
            ("url", s("mqtt://[::1]")),
            ("username", s("u")),
        ])
        .expect("valid");
        let Via::Mqtt(o) = plain.via else {
            panic!("mqtt expected")
        };
        assert_eq!(o.topic_prefix, "teams");
        assert_eq!(o.describe(), "mqtt://[::1]:1883");
        assert_eq!(o.warning(), None, "loopback");
        let remote = BrokerOptions {
            username: Some("u".into()),
            ..BrokerOptions::new("mqtt://broker.lan").expect("valid")
        };
        assert!(remote.warning().expect("a warning").contains("without TLS"));
    }

    #[test]
    fn bad_keys_are_refused_with_their_line() {
        let mqtt = ("via", s("mqtt"));
        let url = ("url", s("mqtt://127.0.0.1"));
        type Case<'a> = (Vec<(&'a str, Value)>, usize, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![],
                1,
                "account `work`: missing key `via`: set via = \"mqtt\"",
            ),
            (
                vec![("via", s("http"))],
                2,
                "key `via`: `http` is not \"mqtt\" or \"dbus\"",
            ),
            (
                vec![("via", s("dbus")), ("url", s("mqtt://x"))],
                3,
                "key `url` does not apply to via = \"dbus\"",
            ),
            (
                vec![("via", s("dbus")), ("topic_prefix", s("t"))],
                3,
                "key `topic_prefix` does not apply to via = \"dbus\"",
            ),
            (
                vec![mqtt.clone(), url.clone(), ("bus", s("unix:path=/x"))],
                4,
                "key `bus` does not apply to via = \"mqtt\"",
            ),
            (
                vec![("via", s("dbus")), ("bus", s(" "))],
                3,
                "key `bus`: empty",
            ),
            (vec![mqtt.clone()], 1, "account `work`: missing key `url`"),
            (
                vec![mqtt.clone(), ("url", s("127.0.0.1:1883"))],
                3,
                "key `url`: expected mqtt://",
            ),
            (
                vec![mqtt.clone(), ("url", s("mqtt://u:p@h"))],
                3,
                "key `url`: no credentials in the url",
            ),
            (
                vec![mqtt.clone(), url.clone(), ("topic_prefix", s("teams/#"))],
                4,
                "key `topic_prefix`: must not contain the MQTT wildcards",
            ),
            (
                vec![mqtt.clone(), url.clone(), ("topic_prefix", s("/teams"))],
                4,
                "key `topic_prefix`: must not start or end with `/`",
            ),
            (
                vec![
                    mqtt.clone(),
                    url.clone(),
                    ("password_command", s("echo pw")),
                ],
                4,
                "key `password_command`: MQTT sends a password only with a user name",
            ),
            (
                vec![mqtt.clone(), url.clone(), ("username", s(""))],
                4,
                "key `username`: give 1 to 65535 bytes",
            ),
            (
                vec![mqtt.clone(), url.clone(), ("ca_file", s("/etc/ca.pem"))],
                4,
                "key `ca_file`: the url is plain mqtt://",
            ),
            (
                vec![mqtt.clone(), ("url", Value::Integer(1883))],
                3,
                "key `url`: expected a string, found an integer",
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
    fn a_password_file_others_can_read_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("pw");
        std::fs::write(&file, "pw\n").expect("write");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let e = resolve(&[
            ("via", s("mqtt")),
            ("url", s("mqtt://127.0.0.1")),
            ("username", s("u")),
            ("password_file", s(&file.to_string_lossy())),
        ])
        .expect_err("mode");
        assert_eq!(e.line, 5);
        assert!(e.message.contains("(mode 0644)"), "{e}");
    }

    #[test]
    fn the_factory_names_every_key_it_reads() {
        let f = TeamsFactory;
        assert_eq!(f.kind(), "teams-for-linux");
        assert_eq!(f.title(), "Teams for Linux");
        let mut all: Vec<&str> = DBUS_KEYS.iter().chain(MQTT_KEYS).copied().collect();
        all.push("via");
        all.sort_unstable();
        let mut keys = KEYS.to_vec();
        keys.sort_unstable();
        assert_eq!(all, keys);
    }
}
