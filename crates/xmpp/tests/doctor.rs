//! `doctor` against a real Prosody (and ejabberd): every step passing, and each kind of failure
//! stopping at the right step with a hint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;

use imstatus_config::Secret;
use imstatus_hub::Check;
use imstatus_testkit::{free_port, Ejabberd, EjabberdOptions, Prosody, ProsodyOptions};
use imstatus_xmpp::doctor;
use imstatus_xmpp::{TlsMode, Visibility, WatchAs, XmppConfig};
use tempfile::NamedTempFile;

fn config(
    port: u16,
    password: &NamedTempFile,
    tls: TlsMode,
    ca: Option<&std::path::Path>,
) -> XmppConfig {
    XmppConfig {
        server: Some(format!("127.0.0.1:{port}")),
        tls,
        ca_file: ca.map(ToOwned::to_owned),
        contacts: true,
        ..XmppConfig::new(
            "alice@example.test",
            Secret::File(password.path().to_owned()),
        )
    }
}

fn password(text: &str) -> NamedTempFile {
    let mut file = NamedTempFile::new().unwrap();
    writeln!(file, "{text}").unwrap();
    file
}

fn summary(checks: &[Check]) -> Vec<(&'static str, bool)> {
    checks.iter().map(|c| (c.name, c.ok)).collect()
}

const ALL: [&str; 6] = ["dns", "tcp", "tls", "sasl", "roster", "visibility"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_step_passes_over_tls_with_ca_file() {
    let prosody = Prosody::start(ProsodyOptions::tls()).unwrap();
    let pw = password("alicepw");
    let checks = doctor(&config(
        prosody.port(),
        &pw,
        TlsMode::Required,
        prosody.ca_cert(),
    ))
    .await;
    assert_eq!(summary(&checks), ALL.map(|n| (n, true)), "{checks:#?}");
    let tls = &checks[2];
    assert!(tls.detail.contains("CN=example.test"), "{tls:?}");
    assert!(tls.detail.contains("TLSv1_3"), "{tls:?}");
    assert!(
        checks[4].detail.starts_with("2 contacts"),
        "{:?}",
        checks[4]
    );
    assert!(
        checks[5]
            .detail
            .starts_with("warning: visible to the user's contacts"),
        "no privacy lists, visibility auto: {:?}",
        checks[5]
    );
    for c in &checks {
        eprintln!("{:6} {} {}", c.name, c.ok, c.detail);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_at_tls_naming_the_subject_and_the_fix() {
    let prosody = Prosody::start(ProsodyOptions::tls()).unwrap();
    let pw = password("alicepw");
    let checks = doctor(&config(prosody.port(), &pw, TlsMode::Required, None)).await;
    assert_eq!(
        summary(&checks),
        [
            ("dns", true),
            ("tcp", true),
            ("tls", false),
            ("sasl", false),
            ("roster", false),
            ("visibility", false)
        ]
    );
    let tls = &checks[2];
    assert!(
        tls.detail.starts_with("invalid_certificate (0x81000368)"),
        "{tls:?}"
    );
    assert!(tls.detail.contains("subject CN=example.test"), "{tls:?}");
    assert!(tls.detail.contains("unknown authority"), "{tls:?}");
    assert!(
        tls.hint.as_deref().unwrap_or_default().contains("ca_file"),
        "{tls:?}"
    );
    assert!(checks[3].detail.contains("skipped"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_sasl_and_plaintext_is_flagged() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let pw = password("wrong");
    let checks = doctor(&config(
        prosody.port(),
        &pw,
        TlsMode::InsecurePlaintext,
        None,
    ))
    .await;
    assert_eq!(
        summary(&checks),
        [
            ("dns", true),
            ("tcp", true),
            ("tls", true),
            ("sasl", false),
            ("roster", false),
            ("visibility", false)
        ]
    );
    assert!(
        checks[2].detail.contains("insecure-plaintext"),
        "{:?}",
        checks[2]
    );
    assert!(checks[2].hint.is_some());
    assert!(
        checks[3].detail.starts_with("auth_failed (0x81000303)"),
        "{:?}",
        checks[3]
    );
    assert!(checks[3].hint.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_fails_at_tcp() {
    let pw = password("alicepw");
    let checks = doctor(&config(free_port(), &pw, TlsMode::Required, None)).await;
    assert_eq!(
        summary(&checks),
        [
            ("dns", true),
            ("tcp", false),
            ("tls", false),
            ("sasl", false),
            ("roster", false),
            ("visibility", false)
        ]
    );
    assert!(
        checks[1]
            .detail
            .starts_with("server_unreachable (0x81000314)"),
        "{:?}",
        checks[1]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_fails_at_dns() {
    let pw = password("alicepw");
    let mut cfg = config(5222, &pw, TlsMode::Required, None);
    cfg.server = Some("no-such-host.invalid:5222".to_owned());
    let checks = doctor(&cfg).await;
    assert_eq!(checks[0].name, "dns");
    assert!(!checks[0].ok);
    assert!(
        checks[0].detail.starts_with("dns_failed (0x81000358)"),
        "{:?}",
        checks[0]
    );
    assert_eq!(checks.len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_privacy_lists_the_visibility_check_says_invisible_on_prosody_and_ejabberd() {
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let ejabberd = Ejabberd::start(EjabberdOptions::default()).unwrap();
    let pw = password("alicepw");
    for (name, port) in [("prosody", prosody.port()), ("ejabberd", ejabberd.port())] {
        let checks = doctor(&config(port, &pw, TlsMode::InsecurePlaintext, None)).await;
        assert_eq!(
            summary(&checks),
            ALL.map(|n| (n, true)),
            "{name}: {checks:#?}"
        );
        assert_eq!(
            checks[5].detail,
            "invisible to the user's contacts via the XEP-0016 privacy list (jabber:iq:privacy)",
            "{name}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_required_without_support_fails_at_visibility_with_a_hint() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let pw = password("alicepw");
    let cfg = XmppConfig {
        visibility: Visibility::Invisible,
        ..config(prosody.port(), &pw, TlsMode::InsecurePlaintext, None)
    };
    let checks = doctor(&cfg).await;
    let mut expected = ALL.map(|n| (n, true));
    expected[5].1 = false;
    assert_eq!(summary(&checks), expected, "{checks:#?}");
    assert!(
        checks[5]
            .detail
            .starts_with("unsupported (0x80004001): visibility = \"invisible\""),
        "{:?}",
        checks[5]
    );
    assert!(
        checks[5]
            .hint
            .as_deref()
            .unwrap_or_default()
            .contains("mod_privacy_lists"),
        "{:?}",
        checks[5]
    );
    let visible = XmppConfig {
        visibility: Visibility::Visible,
        ..config(prosody.port(), &pw, TlsMode::InsecurePlaintext, None)
    };
    let checks = doctor(&visible).await;
    assert!(checks[5].ok, "{:?}", checks[5]);
    assert!(
        checks[5].detail.starts_with("visible on purpose"),
        "{:?}",
        checks[5]
    );
}

fn contact_config(port: u16, password: &NamedTempFile) -> XmppConfig {
    XmppConfig {
        contacts: false,
        watch_as: WatchAs::Contact {
            watcher_jid: "watcher@example.test".to_owned(),
        },
        ..config(port, password, TlsMode::InsecurePlaintext, None)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_mode_logs_in_as_the_watcher_and_checks_the_subscription() {
    // Default accounts: watcher and alice are 'both'.
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let pw = password("watcherpw");
    let checks = doctor(&contact_config(prosody.port(), &pw)).await;
    let names = [
        "dns",
        "tcp",
        "tls",
        "sasl",
        "roster",
        "subscription",
        "visibility",
    ];
    assert_eq!(summary(&checks), names.map(|n| (n, true)), "{checks:#?}");
    assert!(
        checks[3]
            .detail
            .starts_with("authenticated as watcher@example.test"),
        "{:?}",
        checks[3]
    );
    assert_eq!(
        checks[5].detail,
        "watcher@example.test is subscribed to the presence of alice@example.test"
    );

    // Without a subscription: access_denied at that step, with what to do.
    let lonely = Prosody::start(ProsodyOptions {
        both: vec![("alice".into(), "bob".into())],
        ..ProsodyOptions::default()
    })
    .unwrap();
    let checks = doctor(&contact_config(lonely.port(), &pw)).await;
    let mut expected = names.map(|n| (n, true));
    expected[5].1 = false;
    expected[6].1 = false;
    assert_eq!(summary(&checks), expected, "{checks:#?}");
    assert!(
        checks[5].detail.starts_with("access_denied (0x80070005): watcher@example.test has no presence subscription to alice@example.test"),
        "{:?}",
        checks[5]
    );
    assert!(checks[5]
        .hint
        .as_deref()
        .unwrap_or_default()
        .contains("approve"));
    assert!(checks[6].detail.contains("skipped"));
}
