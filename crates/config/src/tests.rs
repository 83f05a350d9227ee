//! The config reader with two small factories standing in for sources (each real source
//! tests its own keys in its own crate).

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use imstatus_core::{AccountId, CodedError, ErrorCode};

use crate::serve::parse_origin;
use imstatus_hub::{BoxFuture, Check, Source};

use super::*;

#[derive(Debug, PartialEq)]
struct Desk {
    bus: Option<String>,
    contacts: bool,
}

#[derive(Debug, PartialEq)]
struct Chat {
    server: String,
    password: Option<Secret>,
}

macro_rules! settings {
    ($t:ty) => {
        impl SourceSettings for $t {
            fn build(&self, _: &AccountId) -> Result<Arc<dyn Source>, CodedError> {
                Err(CodedError::new(ErrorCode::Unsupported, "not in tests"))
            }
            fn doctor(&self) -> BoxFuture<'_, Vec<Check>> {
                Box::pin(async { Vec::new() })
            }
            fn as_any(&self) -> &dyn Any {
                self
            }
        }
    };
}
settings!(Desk);
settings!(Chat);

struct DeskFactory;
impl SourceFactory for DeskFactory {
    fn kind(&self) -> SourceKind {
        SourceKind::new_static("desk")
    }
    fn title(&self) -> &'static str {
        "Desk"
    }
    fn description(&self) -> &'static str {
        "a local client"
    }
    fn keys(&self) -> &'static [&'static str] {
        &["bus", "contacts"]
    }
    fn default_account(&self) -> Option<&'static str> {
        Some("local")
    }
    fn resolve(&self, keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError> {
        Ok(Box::new(Desk {
            bus: keys.string("bus")?.map(|b| b.value),
            contacts: keys.bool("contacts")?.is_some_and(|c| c.value),
        }))
    }
}

struct ChatFactory;
impl SourceFactory for ChatFactory {
    fn kind(&self) -> SourceKind {
        SourceKind::new_static("chat")
    }
    fn title(&self) -> &'static str {
        "Chat"
    }
    fn description(&self) -> &'static str {
        "a remote account"
    }
    fn keys(&self) -> &'static [&'static str] {
        &["server", "password_file", "password_command", "contacts"]
    }
    fn resolve(&self, keys: &mut Keys) -> Result<Box<dyn SourceSettings>, KeyError> {
        let server = keys.required_string("server")?.value;
        let password = Secret::from_keys(keys, "password_file", Some("password_command"))?;
        keys.refuse(&["contacts"], "source \"chat\" yet")?;
        Ok(Box::new(Chat {
            server,
            password: password.map(|p| p.value),
        }))
    }
}

const FACTORIES: Factories<'static> = &[&DeskFactory, &ChatFactory];

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("cfg.toml"), FACTORIES)
}

fn err(text: &str) -> String {
    parse(text).expect_err("should fail").to_string()
}

#[test]
fn each_account_is_resolved_by_the_factory_its_source_names() {
    let c = parse(
        "[[account]]\nname = \"d\"\nsource = \"desk\"\nbus = \"unix:path=/x\"\ncontacts = true\n\
         [[account]]\nname = \"c\"\nsource = \"chat\"\nserver = \"h:1\"\n",
    )
    .expect("valid");
    assert_eq!(c.accounts.len(), 2);
    assert_eq!(c.accounts[0].kind, SourceKind::new_static("desk"));
    assert_eq!(
        c.accounts[0].settings_as::<Desk>(),
        Some(&Desk {
            bus: Some("unix:path=/x".into()),
            contacts: true
        })
    );
    assert_eq!(c.accounts[1].settings_as::<Desk>(), None);
    assert_eq!(
        c.accounts[1].settings_as::<Chat>(),
        Some(&Chat {
            server: "h:1".into(),
            password: None
        })
    );
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let e = err("[[account]]\nname = \"a\"\nsource = \"desk\"\ncolour = \"red\"\n");
    assert_eq!(
        e,
        "cfg.toml:4: unknown key `colour` (source \"desk\" takes name, source, bus, contacts)"
    );
    let e = err("[servve]\nlisten = \"127.0.0.1:1\"\n");
    assert!(e.starts_with("cfg.toml:1: unknown key `servve`"), "{e}");
}

#[test]
fn a_misspelt_required_key_is_named_before_the_key_it_leaves_missing() {
    let e = err("[[account]]\nname = \"a\"\nsource = \"chat\"\nservre = \"h:1\"\n");
    assert!(e.starts_with("cfg.toml:4: unknown key `servre`"), "{e}");
    // With nothing misspelt the missing key itself is the error.
    let e = err("[[account]]\nname = \"a\"\nsource = \"chat\"\n");
    assert!(e.contains("missing key `server`"), "{e}");
}

#[test]
fn key_of_another_source_is_refused_with_its_line_and_owner() {
    let e = err("[[account]]\nname = \"a\"\nsource = \"desk\"\n\nserver = \"h:1\"\n");
    assert_eq!(
        e,
        "cfg.toml:5: key `server` does not apply to source \"desk\" (it is a key of source \"chat\")"
    );
    // A source may refuse a key it knows, with its own reason.
    let e =
        err("[[account]]\nname = \"a\"\nsource = \"chat\"\nserver = \"h:1\"\ncontacts = true\n");
    assert_eq!(
        e,
        "cfg.toml:5: key `contacts` does not apply to source \"chat\" yet"
    );
}

#[test]
fn bad_values_name_their_key_and_line() {
    let e = err("[[account]]\nname = \"a\"\nsource = \"icq\"\n");
    assert_eq!(
        e,
        "cfg.toml:3: key `source`: unknown source `icq` (expected \"desk\" or \"chat\")"
    );
    let e = err("[[account]]\nname = \"a\"\nsource = \"desk\"\ncontacts = \"yes\"\n");
    assert_eq!(
        e,
        "cfg.toml:4: key `contacts`: expected a boolean, found a string"
    );
    let e = err("[serve]\nlisten = \"everywhere\"\n");
    assert!(e.starts_with("cfg.toml:2: key `listen`"), "{e}");
    let e = err("[[account]]\nname = \"a b\"\nsource = \"desk\"\n");
    assert!(e.starts_with("cfg.toml:2: key `name`"), "{e}");
    let e = err("[[account]]\nname = \"a\"\nsource = \"chat\"\n");
    assert_eq!(e, "cfg.toml:2: account `a`: missing key `server`");
    let e = err("[[account]]\nsource = \"chat\"\n");
    assert_eq!(e, "cfg.toml:1: missing key `name`");
    let e = err("[[account]]\nname = \"a\"\n");
    assert_eq!(e, "cfg.toml:2: account `a`: missing key `source`");
}

#[test]
fn duplicate_account_names_are_refused_at_the_second() {
    let e = err(
        "[[account]]\nname = \"a\"\nsource = \"desk\"\n[[account]]\nname = \"a\"\nsource = \"desk\"\n",
    );
    assert_eq!(e, "cfg.toml:5: key `name`: account `a` is defined twice");
}

fn private_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let pw = dir.path().join("pw");
    std::fs::write(&pw, text).expect("write");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    (dir, pw)
}

#[test]
fn a_secret_file_readable_by_others_is_refused_at_its_line() {
    use std::os::unix::fs::PermissionsExt;
    let (_dir, pw) = private_file("secret\n");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let text = format!(
        "[[account]]\nname = \"a\"\nsource = \"chat\"\nserver = \"h:1\"\npassword_file = \"{}\"\n",
        pw.display()
    );
    let e = err(&text);
    assert!(e.starts_with("cfg.toml:5: key `password_file`: "), "{e}");
    assert!(e.contains("readable by group or others (mode 0644)"), "{e}");
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let c = parse(&text).expect("valid now");
    let chat = c.accounts[0].settings_as::<Chat>().expect("chat");
    assert_eq!(
        chat.password.as_ref().map(|p| p.read().expect("read")),
        Some("secret".into())
    );
    let e = err(&format!("{text}password_command = \"echo x\"\n"));
    assert_eq!(
        e,
        "cfg.toml:6: keys `password_file` and `password_command`: give only one"
    );
}

#[test]
fn a_config_naming_a_command_must_not_be_writable_by_others() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[[account]]\nname = \"a\"\nsource = \"chat\"\nserver = \"h:1\"\npassword_command = \"echo pw\"\n",
    )
    .expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).expect("chmod");
    let e = Config::load(&path, FACTORIES)
        .expect_err("group-writable")
        .to_string();
    assert!(
        e.starts_with(&format!(
            "{}:5: this file names a command to run",
            path.display()
        )),
        "{e}"
    );
    assert!(e.contains("writable by group or others (mode 0664)"), "{e}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    Config::load(&path, FACTORIES).expect("readable by others is fine, writable is not");
    // Without a command, the file's mode does not matter.
    std::fs::write(&path, "[[account]]\nname = \"a\"\nsource = \"desk\"\n").expect("write");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    Config::load(&path, FACTORIES).expect("no command");
}

#[test]
fn mqtt_keys_and_their_combinations() {
    let c = parse("[mqtt]\nurl = \"mqtt://127.0.0.1:1883\"\n").expect("valid");
    assert_eq!(c.mqtt, Some(MqttConfig::new("mqtt://127.0.0.1:1883")));
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
    let e =
        err("[serve]\n[[serve.token]]\nname = \"d\"\nsha256 = \"hunter2\"\naccounts = [\"*\"]\n");
    assert!(e.starts_with("cfg.toml:4: key `sha256`"), "{e}");
}

#[test]
fn empty_file_has_no_accounts_and_the_default_is_the_first_default_factory() {
    assert!(parse("").expect("valid").accounts.is_empty());
    let d = Config::default_local(FACTORIES).expect("default");
    assert_eq!(d.origin, Origin::Default);
    assert_eq!(d.accounts.len(), 1);
    assert_eq!(d.accounts[0].name.as_str(), "local");
    assert_eq!(d.accounts[0].kind, SourceKind::new_static("desk"));
    let none = Config::default_local(&[&ChatFactory]).expect("default");
    assert!(none.accounts.is_empty());
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

// ------------------------------------------------------------------ [[person]]

const TWO_ACCOUNTS: &str = "[[account]]\nname = \"desktop\"\nsource = \"desk\"\n\
    [[account]]\nname = \"alice\"\nsource = \"chat\"\nserver = \"h:1\"\n";

#[test]
fn a_person_combines_accounts_with_signals_and_sync() {
    let c = parse(&format!(
        "{TWO_ACCOUNTS}[[person]]\nname = \"me\"\naccounts = [\"desktop\", \"alice\"]\n\
         signals = \"desktop\"\nsync = [\"alice\"]\n\
         [[person]]\nname = \"us\"\naccounts = [\"me\"]\n"
    ))
    .expect("valid");
    assert_eq!(
        c.persons,
        vec![
            PersonConfig {
                name: AccountId::new("me"),
                accounts: vec![AccountId::new("desktop"), AccountId::new("alice")],
                signals: Some(AccountId::new("desktop")),
                sync: vec![AccountId::new("alice")],
                line: 9,
            },
            PersonConfig {
                name: AccountId::new("us"),
                accounts: vec![AccountId::new("me")],
                signals: None,
                sync: vec![],
                line: 14,
            },
        ]
    );
    assert_eq!(c.person("us").map(|p| p.line), Some(14));
    assert!(c.person("desktop").is_none());
}

#[test]
fn person_errors_name_the_line_and_what_is_wrong() {
    let base = TWO_ACCOUNTS.lines().count();
    for (person, line, want) in [
        (
            "[[person]]\nname = \"me\"\naccounts = [\"desktop\",\n  \"bob\"]\n",
            4,
            "key `accounts`: person `me`: no [[account]] or [[person]] named `bob`",
        ),
        (
            "[[person]]\nname = \"alice\"\naccounts = [\"desktop\"]\n",
            2,
            "key `name`: person `alice` has the name of an [[account]]",
        ),
        (
            "[[person]]\nname = \"me\"\naccounts = [\"desktop\"]\n\
             [[person]]\nname = \"me\"\naccounts = [\"alice\"]\n",
            5,
            "key `name`: person `me` is defined twice",
        ),
        (
            "[[person]]\nname = \"a\"\naccounts = [\"b\"]\n\
             [[person]]\nname = \"b\"\naccounts = [\"desktop\", \"c\"]\n\
             [[person]]\nname = \"c\"\naccounts = [\"a\"]\n",
            2,
            "key `accounts`: persons contain each other in a cycle: a → b → c → a",
        ),
        (
            "[[person]]\nname = \"me\"\naccounts = [\"me\"]\n",
            3,
            "key `accounts`: person `me` cannot contain itself",
        ),
        (
            "[[person]]\nname = \"me\"\naccounts = [\"alice\", \"alice\"]\n",
            3,
            "key `accounts`: person `me` lists `alice` twice",
        ),
        (
            "[[person]]\nname = \"me\"\naccounts = []\n",
            3,
            "key `accounts`: person `me` needs at least one account",
        ),
        (
            "[[person]]\nname = \"me\"\naccounts = [\"alice\"]\nsync = [\"desktop\"]\n",
            4,
            "key `sync`: person `me`: `desktop` is not one of its accounts (alice)",
        ),
        (
            "[[person]]\nname = \"me\"\naccounts = [\"alice\"]\nsignals = \"desk\"\n",
            4,
            "key `signals`: person `me`: no [[account]] named `desk`",
        ),
        (
            "[[person]]\nname = \"me\"\naccounts = [\"alice\"]\n\
             [[person]]\nname = \"you\"\naccounts = [\"alice\"]\nsignals = \"me\"\n",
            7,
            "key `signals`: person `you`: `me` is a person",
        ),
        (
            "[[person]]\nname = \"m e\"\naccounts = [\"alice\"]\n",
            2,
            "key `name`: `m e` must be letters",
        ),
        (
            "[[person]]\nname = \"me\"\naccounts = [\"alice\"]\nsource = \"person\"\n",
            4,
            "unknown key `source`",
        ),
    ] {
        let e = err(&format!("{TWO_ACCOUNTS}{person}"));
        let prefix = format!("cfg.toml:{}: {want}", base + line);
        assert!(
            e.starts_with(&prefix),
            "{person:?}:\n  got  {e}\n  want {prefix}"
        );
    }
    // A missing name or accounts key: the line of the table.
    let e = err(&format!(
        "{TWO_ACCOUNTS}[[person]]\naccounts = [\"alice\"]\n"
    ));
    assert!(e.contains("missing key `name`"), "{e}");
    assert!(e.starts_with(&format!("cfg.toml:{}:", base + 1)), "{e}");
}

#[test]
fn cluster_keys_defaults_and_their_combinations() {
    let c = parse("[cluster]\nurl = \"nats://h1:4222, nats://h2:4222\"\n").expect("valid");
    let cluster = c.cluster.expect("cluster");
    assert_eq!(cluster.servers, ["nats://h1:4222", "nats://h2:4222"]);
    assert_eq!(cluster.shards, 64);
    assert_eq!(cluster.lease, Duration::from_secs(15));
    assert_eq!(cluster.replicas, 3);
    assert_eq!(cluster.name, "imstatus");
    assert_eq!(cluster.auth, ClusterAuth::None);
    assert!(!cluster.requires_tls());
    assert!(parse("").expect("empty").cluster.is_none());

    let c = parse(
        "[cluster]\nurl = \"tls://h1:4222\"\nshards = 8\nlease = \"3s\"\nreplicas = 1\nname = \"desk-1\"\nusername = \"w\"\npassword_command = \"echo pw\"\nca_file = \"/ca.pem\"\n",
    )
    .expect("valid");
    let cluster = c.cluster.expect("cluster");
    assert!(cluster.requires_tls());
    assert_eq!(
        (cluster.shards, cluster.lease, cluster.replicas),
        (8, Duration::from_secs(3), 1)
    );
    assert_eq!(
        cluster.ca_file.as_deref(),
        Some(std::path::Path::new("/ca.pem"))
    );
    match cluster.auth {
        ClusterAuth::UserPassword { username, password } => {
            assert_eq!(username, "w");
            assert_eq!(password.read().expect("command runs"), "pw");
        }
        other => panic!("{other:?}"),
    }

    for (text, want) in [
        ("[cluster]\nurl = \"\"\n", "cfg.toml:2: key `url`: give at least one server"),
        ("[cluster]\nurl = \"http://h:1\"\n", "cfg.toml:2: key `url`: `http://h:1` is not nats://"),
        ("[cluster]\nurl = \"nats://h:1\"\nshards = 0\n", "cfg.toml:3: key `shards`: expected 1 to 4096, not 0"),
        ("[cluster]\nurl = \"nats://h:1\"\nlease = \"1500ms\"\n", "cfg.toml:3: key `lease`: whole seconds, at least 2s"),
        ("[cluster]\nurl = \"nats://h:1\"\nname = \"a.b\"\n", "cfg.toml:3: key `name`: 1 to 32 letters"),
        ("[cluster]\nurl = \"nats://h:1\"\nusername = \"u\"\n", "cfg.toml:3: key `username` needs `password_file`"),
        ("[cluster]\nurl = \"nats://h:1\"\ntoken_command = \"echo t\"\nusername = \"u\"\npassword_command = \"echo p\"\n", "cfg.toml:3: give one kind of credentials"),
        ("[cluster]\nurl = \"nats://h:1\"\nseeds = 1\n", "cfg.toml:3: unknown key `seeds`"),
    ] {
        let e = err(text);
        assert!(e.starts_with(want), "{text:?}: {e}");
    }
    let c =
        parse("[cluster]\nurl = \"nats://h:1\"\ntoken_command = \"echo tok\"\n").expect("valid");
    match c.cluster.expect("cluster").auth {
        ClusterAuth::Token(t) => assert_eq!(t.read().expect("command"), "tok"),
        other => panic!("{other:?}"),
    }
}
