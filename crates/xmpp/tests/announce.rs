//! `set_status` on an XMPP account, against a real Prosody: imstatus's own session announces
//! the status to alice's contacts, and `restore_status` takes it back. "bob" (subscription
//! `both` with alice, testkit's raw client) is the contact who looks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_config::Secret;
use imstatus_core::{AccountId, Availability, ErrorCode, EventKind, Status};
use imstatus_hub::Hub;
use imstatus_testkit::{Prosody, ProsodyOptions, XmppClient};
use imstatus_xmpp::{TlsMode, Visibility, WatchAs, XmppConfig, XmppSource};
use tempfile::NamedTempFile;

/// How long one awaited event or stanza may take.
const STEP: Duration = Duration::from_secs(10);
/// What every imstatus resource of alice's looks like on the wire.
const IMSTATUS_RESOURCE: &str = "alice@example.test/imstatus-";

fn alice() -> AccountId {
    AccountId::new("alice")
}

fn password(text: &str) -> NamedTempFile {
    let mut file = NamedTempFile::new().unwrap();
    writeln!(file, "{text}").unwrap();
    file
}

fn config(port: u16, password: &NamedTempFile, visibility: Visibility) -> XmppConfig {
    XmppConfig {
        server: Some(format!("127.0.0.1:{port}")),
        tls: TlsMode::InsecurePlaintext,
        visibility,
        ..XmppConfig::new(
            "alice@example.test",
            Secret::File(password.path().to_owned()),
        )
    }
}

/// bob online, his own presence back (the server has handled it).
fn bob_online(prosody: &Prosody) -> XmppClient {
    let mut bob =
        XmppClient::connect(prosody.port(), "bob", "example.test", "bobpw", "laptop").unwrap();
    bob.presence(None, None, None).unwrap();
    bob.read_until("from='bob@example.test/laptop'", STEP)
        .unwrap();
    bob
}

/// The hub with alice's XMPP source, once its first status is known.
async fn started(config: &XmppConfig) -> Hub {
    let hub = Hub::builder()
        .with_source(alice(), Arc::new(XmppSource::new(config)))
        .start();
    let mut sub = hub.subscribe();
    tokio::time::timeout(STEP, async {
        while let Some(e) = sub.recv().await {
            if matches!(e.kind, EventKind::StatusChanged { .. }) {
                return;
            }
        }
        panic!("hub closed");
    })
    .await
    .expect("alice's XMPP account synced");
    hub
}

/// The stanzas bob reads until a presence from an imstatus resource of alice's that contains
/// every needle.
fn bob_sees(bob: &mut XmppClient, needles: &[&str]) -> String {
    let deadline = Instant::now() + STEP;
    let mut read = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "bob never saw {needles:?}; read {read:#?}");
        let stanza = bob.read_stanza(left).unwrap();
        if stanza.starts_with("<presence")
            && stanza.contains(IMSTATUS_RESOURCE)
            && needles.iter().all(|n| stanza.contains(n))
        {
            return stanza;
        }
        read.push(stanza);
    }
}

async fn set_then_restore(prosody: Prosody, visibility: Visibility, hidden: bool) {
    let mut bob = bob_online(&prosody);
    let pw = password("alicepw");
    let hub = started(&config(prosody.port(), &pw, visibility)).await;

    hub.set_status(
        &alice(),
        Status::with_message(Availability::Busy, "In a call"),
    )
    .await
    .unwrap();
    let seen = bob_sees(
        &mut bob,
        &["<show>dnd</show>", "<status>In a call</status>"],
    );
    assert!(seen.contains("<priority>-1</priority>"), "{seen}");

    // A second status replaces the first.
    hub.set_status(&alice(), Status::new(Availability::Away))
        .await
        .unwrap();
    let seen = bob_sees(&mut bob, &["<show>away</show>"]);
    assert!(!seen.contains("In a call"), "{seen}");

    // Putting back: a hidden session is gone for bob, a visible one is plainly available.
    hub.set_status(&alice(), Status::new(Availability::Invisible))
        .await
        .unwrap();
    if hidden {
        bob_sees(&mut bob, &["type='unavailable'"]);
    } else {
        let seen = bob_sees(&mut bob, &["<priority>-1</priority>"]);
        assert!(
            !seen.contains("<show>") && !seen.contains("<status>"),
            "{seen}"
        );
    }

    // What XMPP has no presence for is refused, and nothing is sent.
    let err = hub
        .set_status(&alice(), Status::new(Availability::Offline))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unsupported, "{err:?}");
    let after: Vec<String> = bob
        .read_for(Duration::from_millis(300))
        .unwrap()
        .into_iter()
        .filter(|s| s.contains(IMSTATUS_RESOURCE))
        .collect();
    assert_eq!(after, Vec::<String>::new());
    drop(hub);
    bob.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hidden_session_shows_the_status_to_bob_then_hides_again() {
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        set_then_restore(prosody, Visibility::Invisible, true),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visible_session_shows_the_status_to_bob_then_its_plain_presence() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    tokio::time::timeout(
        Duration::from_secs(60),
        set_then_restore(prosody, Visibility::Visible, false),
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_contact_mode_setting_the_status_is_unsupported() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let pw = password("watcherpw");
    let hub = tokio::time::timeout(
        Duration::from_secs(60),
        started(&XmppConfig {
            watch_as: WatchAs::Contact {
                watcher_jid: "watcher@example.test".to_owned(),
            },
            ..config(prosody.port(), &pw, Visibility::Visible)
        }),
    )
    .await
    .unwrap();
    let err = hub
        .set_status(&alice(), Status::new(Availability::Busy))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unsupported, "{err:?}");
}
