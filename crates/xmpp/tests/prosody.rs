//! End to end against a real Prosody (started by imstatus-testkit): the source runs inside a
//! real hub, the user's "other client" is testkit's raw XMPP client, and the assertions are on
//! the hub's event stream. Prosody runs with `mod_privacy_lists`, so the source takes its
//! default path: invisible via a privacy list (`tests/visibility.rs` covers the other paths).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_config::Secret;
use imstatus_core::{
    AccountId, Availability, ContactId, ErrorCode, Event, EventKind, Session, SignOutReason,
};
use imstatus_hub::{Hub, Subscription};
use imstatus_testkit::{free_port, Prosody, ProsodyOptions, XmppClient};
use imstatus_xmpp::XmppSource;
use imstatus_xmpp::{TlsMode, XmppConfig};
use tempfile::NamedTempFile;

/// How long one awaited event may take.
const STEP: Duration = Duration::from_secs(10);

fn alice() -> AccountId {
    AccountId::new("alice")
}

/// A password file (0600, as the config demands) and the config pointing at it.
struct Account {
    config: XmppConfig,
    _password: NamedTempFile,
}

fn xmpp_account(
    server: String,
    password: &str,
    tls: TlsMode,
    ca_file: Option<&std::path::Path>,
) -> Account {
    let mut file = NamedTempFile::new().unwrap();
    writeln!(file, "{password}").unwrap();
    Account {
        config: XmppConfig {
            server: Some(server),
            tls,
            ca_file: ca_file.map(ToOwned::to_owned),
            ..XmppConfig::new("alice@example.test", Secret::File(file.path().to_owned()))
        },
        _password: file,
    }
}

fn plain_account(prosody: &Prosody) -> Account {
    xmpp_account(
        format!("127.0.0.1:{}", prosody.port()),
        "alicepw",
        TlsMode::InsecurePlaintext,
        None,
    )
}

/// A hub watching alice with the XMPP source, and a subscription to it.
struct Watch {
    hub: Hub,
    sub: Subscription,
    _account: Account,
}

impl Watch {
    fn start(account: Account) -> Watch {
        let source = XmppSource::new(&account.config).with_backoff_seed(7);
        let hub = Hub::builder()
            .with_source(alice(), Arc::new(source))
            .start();
        let sub = hub.subscribe();
        Watch {
            hub,
            sub,
            _account: account,
        }
    }

    /// Events up to and including the first that matches, within [`STEP`].
    async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Vec<Arc<Event>> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.sub.recv()).await {
                Ok(Some(event)) => {
                    let done = pred(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                Ok(None) => panic!("hub closed while waiting for {what}; seen {:#?}", seen),
                Err(_) => panic!("no {what} within {STEP:?}; seen {:#?}", seen),
            }
        }
    }

    /// Waits for the first sync: the snapshot, the session leaving `unknown`, then the status
    /// leaving `unknown` (always the last event of the first batch but for resources).
    async fn synced(&mut self) -> Vec<Arc<Event>> {
        self.until("the first status_changed", is("status_changed"))
            .await
    }

    /// Waits for a sign-in batch to end (signed_in, status_changed, resource_changed).
    async fn signed_in(&mut self) -> Vec<Arc<Event>> {
        let events = self.until("resource_changed", is("resource_changed")).await;
        assert_eq!(
            names(&events),
            ["signed_in", "status_changed", "resource_changed"]
        );
        events
    }

    fn snapshot(&self) -> imstatus_core::Snapshot {
        self.hub
            .snapshot(&alice())
            .and_then(|e| e.snapshot().cloned())
            .unwrap()
    }
}

fn names(events: &[Arc<Event>]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

fn is(name: &'static str) -> impl Fn(&Event) -> bool {
    move |e| e.kind.name() == name
}

fn source_error(e: &Event) -> Option<(ErrorCode, &str, bool)> {
    match &e.kind {
        EventKind::SourceError {
            code,
            detail,
            session_unknown,
        } => Some((*code, detail.as_str(), *session_unknown)),
        _ => None,
    }
}

fn login(prosody: &Prosody, resource: &str) -> XmppClient {
    XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", resource).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_in_when_the_users_other_client_signs_in_and_signed_out_when_it_leaves() {
    let t = Instant::now();
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let mut w = Watch::start(plain_account(&prosody));
    let events = w.synced().await;
    assert_eq!(names(&events), ["snapshot", "signed_out", "status_changed"]);
    assert_eq!(w.snapshot().session, Session::SignedOut);

    let mut desk = login(&prosody, "desk");
    desk.presence(None, None, Some(1)).unwrap();
    let events = w.signed_in().await;
    let EventKind::StatusChanged { to, mistatus, .. } = &events[1].kind else {
        panic!()
    };
    assert_eq!((to.availability, *mistatus), (Availability::Available, 2));
    let snap = w.snapshot();
    assert_eq!(snap.session, Session::SignedIn);
    assert_eq!(snap.resources.len(), 1);
    assert_eq!(snap.resources[0].resource.as_str(), "desk");
    assert_eq!(snap.resources[0].priority, Some(1));

    desk.unavailable().unwrap();
    let events = w.until("resource_changed", is("resource_changed")).await;
    assert_eq!(
        names(&events),
        ["signed_out", "status_changed", "resource_changed"]
    );
    assert_eq!(
        events[0].kind,
        EventKind::SignedOut {
            reason: SignOutReason::User
        }
    );
    assert!(w.snapshot().resources.is_empty());
    desk.close().unwrap();
    eprintln!("took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_already_signed_in_client_is_seen_at_login() {
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let mut desk = login(&prosody, "desk");
    desk.presence(Some("away"), Some("lunch"), Some(5)).unwrap();
    // The server has handled desk's presence once desk can read its own reflection.
    desk.read_until("from='alice@example.test/desk'", STEP)
        .unwrap();
    let mut w = Watch::start(plain_account(&prosody));
    let events = w.synced().await;
    assert_eq!(names(&events), ["snapshot", "signed_in", "status_changed"]);
    let snap = w.snapshot();
    assert_eq!(snap.session, Session::SignedIn);
    assert_eq!(snap.availability, Availability::Away);
    assert_eq!(snap.message.as_deref(), Some("lunch"));
    assert_eq!(snap.mistatus, 0x22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_show_value_gives_its_availability_and_mistatus() {
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let mut w = Watch::start(plain_account(&prosody));
    w.synced().await;
    let mut desk = login(&prosody, "desk");
    desk.presence(Some("xa"), None, None).unwrap();
    w.signed_in().await;
    let cases = [
        (Some("away"), Some("out"), Availability::Away, 0x22),
        (Some("dnd"), None, Availability::Busy, 0x0A),
        (Some("xa"), None, Availability::ExtendedAway, 0x22),
        (Some("chat"), None, Availability::Chatty, 0x02),
        (None, None, Availability::Available, 0x02),
    ];
    for (show, message, availability, code) in cases {
        desk.presence(show, message, None).unwrap();
        let events = w.until("status_changed", is("status_changed")).await;
        let EventKind::StatusChanged { to, mistatus, .. } = &events[events.len() - 1].kind else {
            panic!()
        };
        assert_eq!(to.availability, availability, "{show:?}");
        assert_eq!(to.message.as_deref(), message, "{show:?}");
        assert_eq!(*mistatus, code, "{show:?}");
        assert_eq!(w.snapshot().mistatus, code);
    }
    desk.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_resource_is_listed_and_the_higher_priority_one_sets_the_status() {
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let mut w = Watch::start(plain_account(&prosody));
    w.synced().await;
    let mut desk = login(&prosody, "desk");
    desk.presence(Some("away"), None, Some(1)).unwrap();
    w.signed_in().await;
    let mut phone = login(&prosody, "phone");
    phone.presence(Some("dnd"), None, Some(5)).unwrap();
    let events = w.until("status_changed", is("status_changed")).await;
    let EventKind::StatusChanged { to, .. } = &events[events.len() - 1].kind else {
        panic!()
    };
    assert_eq!(
        to.availability,
        Availability::Busy,
        "priority 5 beats priority 1"
    );
    w.until("phone's resource_changed", |e| {
        matches!(&e.kind, EventKind::ResourceChanged { resource, .. } if resource.as_str() == "phone")
    })
    .await;
    let snap = w.snapshot();
    let listed: Vec<(&str, Availability, Option<i32>)> = snap
        .resources
        .iter()
        .map(|r| (r.resource.as_str(), r.availability, r.priority))
        .collect();
    assert_eq!(
        listed,
        [
            ("desk", Availability::Away, Some(1)),
            ("phone", Availability::Busy, Some(5))
        ]
    );

    // The phone leaves: still signed in, with the desk's status; no signed_out.
    phone.unavailable().unwrap();
    let events = w.until("status_changed", is("status_changed")).await;
    assert_eq!(names(&events), ["status_changed"]);
    assert_eq!(w.snapshot().availability, Availability::Away);
    assert_eq!(w.snapshot().session, Session::SignedIn);
    desk.close().unwrap();
    phone.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_connection_is_reset_is_signed_out() {
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let mut w = Watch::start(plain_account(&prosody));
    w.synced().await;
    let mut desk = login(&prosody, "desk");
    desk.presence(None, None, None).unwrap();
    w.signed_in().await;
    desk.reset();
    let events = w.until("signed_out", is("signed_out")).await;
    assert_eq!(names(&events), ["signed_out"]);
    let EventKind::SignedOut { reason } = events[0].kind else {
        panic!()
    };
    assert!(
        matches!(reason, SignOutReason::User | SignOutReason::ConnectionLost),
        "{reason:?}"
    );
    eprintln!("reset → signed_out{{{reason:?}}}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prosody_restart_makes_the_session_unknown_until_the_source_is_back() {
    let t = Instant::now();
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let mut w = Watch::start(plain_account(&prosody));
    w.synced().await;
    let mut desk = login(&prosody, "desk");
    desk.presence(Some("away"), None, None).unwrap();
    w.signed_in().await;

    let restarted_at = Instant::now();
    let prosody = tokio::task::spawn_blocking(move || {
        let mut prosody = prosody;
        prosody.restart().unwrap();
        prosody
    })
    .await
    .unwrap();
    eprintln!("prosody restarted in {:?}", restarted_at.elapsed());
    let events = w
        .until("source_error with session_unknown", |e| {
            source_error(e).is_some_and(|(_, _, unknown)| unknown)
        })
        .await;
    let (code, detail, _) = source_error(&events[events.len() - 1]).unwrap();
    assert!(
        matches!(code, ErrorCode::Disconnected | ErrorCode::ServerShutdown),
        "{code}: {detail}"
    );
    eprintln!("down: {code}: {detail}; events {:?}", names(&events));

    // The user's client logs in again; the source reconnects by itself.
    let mut desk = login(&prosody, "desk");
    desk.presence(Some("dnd"), None, None).unwrap();
    let events = w.until("signed_in", is("signed_in")).await;
    eprintln!(
        "back after {:?}: {:?}",
        restarted_at.elapsed(),
        names(&events)
    );
    let snap = w.snapshot();
    assert_eq!(snap.session, Session::SignedIn);
    w.until("status busy", |e| {
        matches!(&e.kind, EventKind::StatusChanged { to, .. } if to.availability == Availability::Busy)
    })
    .await;
    desk.close().unwrap();
    eprintln!("took {:?}", t.elapsed());
}

/// The number of c2s connections Prosody accepted so far (from its log).
fn connections(prosody: &Prosody) -> usize {
    prosody.log().matches("Client connected").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_auth_failed_and_never_retried() {
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let mut account = plain_account(&prosody);
    let mut file = std::fs::File::create(account._password.path()).unwrap();
    writeln!(file, "wrong").unwrap();
    account.config.password = Secret::File(account._password.path().to_owned());
    let mut w = Watch::start(account);
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail, _) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::AuthFailed, "{detail}");
    assert!(detail.contains("not-authorized"), "{detail}");
    assert_eq!(
        w.hub.source_error(&alice()).map(|e| e.code),
        Some(ErrorCode::AuthFailed)
    );
    // Prosody::start's readiness probe is a connection too (logged a little later): ours is
    // the second.
    tokio::time::timeout(STEP, async {
        while connections(&prosody) < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("two connections logged");
    // A retry would come within the first backoff ceiling (1 s); wait three times that for
    // a second connection that must never come.
    let retried = tokio::time::timeout(Duration::from_secs(3), async {
        while connections(&prosody) < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(retried.is_err(), "retried: {}", prosody.log());
    assert!(w.sub.try_recv().is_none(), "no further events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_server_unreachable_and_retried() {
    let port = free_port();
    let mut w = Watch::start(xmpp_account(
        format!("127.0.0.1:{port}"),
        "alicepw",
        TlsMode::InsecurePlaintext,
        None,
    ));
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail, _) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::ServerUnreachable, "{detail}");
    assert!(detail.contains("refused"), "{detail}");
    assert_eq!(w.snapshot().session, Session::Unknown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_server_is_dns_failed() {
    let mut w = Watch::start(xmpp_account(
        "no-such-host.invalid:5222".to_owned(),
        "alicepw",
        TlsMode::InsecurePlaintext,
        None,
    ));
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail, _) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::DnsFailed, "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_the_self_signed_certificate_trusted_via_ca_file_works() {
    let prosody = Prosody::start(ProsodyOptions::tls().with_privacy_lists()).unwrap();
    let ca = prosody.ca_cert().unwrap().to_owned();
    let mut w = Watch::start(xmpp_account(
        format!("127.0.0.1:{}", prosody.port()),
        "alicepw",
        TlsMode::Required,
        Some(&ca),
    ));
    let events = w.synced().await;
    assert_eq!(
        names(&events),
        ["snapshot", "signed_out", "status_changed"],
        "{events:#?}"
    );
    assert_eq!(w.snapshot().session, Session::SignedOut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_without_ca_file_is_invalid_certificate() {
    let prosody = Prosody::start(ProsodyOptions::tls().with_privacy_lists()).unwrap();
    let mut w = Watch::start(xmpp_account(
        format!("127.0.0.1:{}", prosody.port()),
        "alicepw",
        TlsMode::Required,
        None,
    ));
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail, _) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::InvalidCertificate, "{detail}");
    assert!(detail.contains("CN=example.test"), "{detail}");
    eprintln!("{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_against_a_server_that_requires_tls_is_tls_failed() {
    let prosody = Prosody::start(ProsodyOptions::tls().with_privacy_lists()).unwrap();
    let mut w = Watch::start(plain_account(&prosody));
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail, _) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::TlsFailed, "{detail}");
    assert!(detail.contains("requires STARTTLS"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_flapping_a_thousand_times_ends_in_the_right_state_with_ordered_events() {
    const FLAPS: usize = 1000;
    let t = Instant::now();
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let mut account = plain_account(&prosody);
    account.config.contacts = true;
    let mut w = Watch::start(account);
    let events = w.synced().await;
    eprintln!("synced: {:?}", names(&events));
    let bob_id = ContactId::new("bob@example.test");
    let snap = w.snapshot();
    let contacts: Vec<(&str, Availability)> = snap
        .contacts
        .iter()
        .map(|c| (c.contact.as_str(), c.availability))
        .collect();
    assert_eq!(
        contacts,
        [
            ("bob@example.test", Availability::Offline),
            ("watcher@example.test", Availability::Offline)
        ]
    );

    let mut bob =
        XmppClient::connect(prosody.port(), "bob", "example.test", "bobpw", "laptop").unwrap();
    let start = Instant::now();
    for i in 0..FLAPS {
        let show = if i % 2 == 0 { Some("away") } else { None };
        bob.presence(show, Some(&format!("flap {i}")), None)
            .unwrap();
    }
    let last = format!("flap {}", FLAPS - 1);
    let events = w
        .until("the last flap", |e| {
            matches!(&e.kind, EventKind::ContactStatusChanged { to, .. } if to.message.as_deref() == Some(last.as_str()))
        })
        .await;
    eprintln!("{FLAPS} flaps seen after {:?}", start.elapsed());
    let flaps: Vec<(u64, &imstatus_core::Status)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ContactStatusChanged { contact, to, .. } if *contact == bob_id => {
                Some((e.seq, to))
            }
            _ => None,
        })
        .collect();
    assert_eq!(flaps.len(), FLAPS);
    for (i, (_, to)) in flaps.iter().enumerate() {
        let expected = if i % 2 == 0 {
            Availability::Away
        } else {
            Availability::Available
        };
        assert_eq!(to.availability, expected, "flap {i}");
        assert_eq!(to.message.as_deref(), Some(format!("flap {i}").as_str()));
    }
    assert!(
        events.windows(2).all(|p| p[0].seq < p[1].seq),
        "seq strictly increasing"
    );
    let snap = w.snapshot();
    let bob_now = snap.contacts.iter().find(|c| c.contact == bob_id).unwrap();
    assert_eq!(bob_now.availability, Availability::Available);
    assert_eq!(bob_now.message.as_deref(), Some(last.as_str()));

    bob.unavailable().unwrap();
    w.until("bob offline", |e| {
        matches!(&e.kind, EventKind::ContactStatusChanged { to, .. } if to.availability == Availability::Offline)
    })
    .await;
    assert_eq!(
        w.snapshot().session,
        Session::SignedOut,
        "contacts never touch the session"
    );
    bob.close().unwrap();
    eprintln!("took {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contacts_deeply_nested_presence_is_dropped_and_the_session_stays_up() {
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let mut account = plain_account(&prosody);
    account.config.contacts = true;
    let mut w = Watch::start(account);
    w.synced().await;
    let mut bob =
        XmppClient::connect(prosody.port(), "bob", "example.test", "bobpw", "laptop").unwrap();
    // 30,000 levels, 210 KB: under Prosody's 256 KiB limit, so Prosody relays it to alice's
    // sessions, ours included.
    let depth = 30_000;
    bob.send_raw(&format!(
        "<presence><x xmlns='urn:example:deep'>{}{}</x></presence>",
        "<a>".repeat(depth),
        "</a>".repeat(depth)
    ))
    .unwrap();
    let events = w.until("the anomaly", |e| source_error(e).is_some()).await;
    let (code, detail, session_unknown) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::ProtocolError);
    assert!(
        detail.starts_with(
            "dropped a <presence> from bob@example.test/laptop nested deeper than 32 levels"
        ),
        "{detail}"
    );
    assert!(!session_unknown, "the session stays up");
    bob.presence(Some("away"), Some("back soon"), None).unwrap();
    let events = w
        .until("bob away", |e| {
            matches!(&e.kind, EventKind::ContactStatusChanged { to, .. } if to.availability == Availability::Away)
        })
        .await;
    assert!(
        events.iter().all(|e| source_error(e).is_none()),
        "{events:#?}"
    );
    assert_eq!(w.snapshot().session, Session::SignedOut);
    bob.close().unwrap();
}

/// Contacts in the roster of `a_roster_of_thousands_of_contacts_syncs_within_the_login_timeout`
/// (100,000 take ~25 s of CPU between Prosody and a debug build, which does not fit a test on
/// a shared 2-core machine: that size is a benchmark's).
const LARGE_ROSTER: usize = 3_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_of_thousands_of_contacts_syncs_within_the_login_timeout() {
    // alice's roster: bob, watcher and 3,000 contacts without accounts, each with alice in
    // its own roster ('both'), so that Prosody answers every probe with `unavailable`.
    let mut opts = ProsodyOptions::default().with_privacy_lists();
    opts.both
        .extend((0..LARGE_ROSTER).map(|i| ("alice".to_owned(), format!("c{i}"))));
    let prosody = Prosody::start(opts).unwrap();
    let mut bob =
        XmppClient::connect(prosody.port(), "bob", "example.test", "bobpw", "laptop").unwrap();
    bob.presence(Some("dnd"), Some("busy"), None).unwrap();
    let mut account = plain_account(&prosody);
    account.config.contacts = true;
    let started = Instant::now();
    let mut w = Watch::start(account);
    // The source itself judges: a login that does not finish within
    // imstatus_xmpp::LOGIN_TIMEOUT is a `timeout` source error (which fails this test); the
    // test's own deadline only bounds the wait for either.
    let deadline = tokio::time::Instant::now() + imstatus_xmpp::LOGIN_TIMEOUT * 3;
    let snap = loop {
        let snap = w.snapshot();
        if snap.session != Session::Unknown {
            break snap;
        }
        while let Some(e) = w.sub.try_recv() {
            assert!(source_error(&e).is_none(), "{:?}", e.kind);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "neither synced nor a source error within {:?}",
            imstatus_xmpp::LOGIN_TIMEOUT * 3
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "synced with {} contacts after {:?}",
        snap.contacts.len(),
        started.elapsed()
    );
    assert_eq!(snap.contacts.len(), LARGE_ROSTER + 2);
    let online: Vec<(&str, Availability, Option<&str>)> = snap
        .contacts
        .iter()
        .filter(|c| c.availability != Availability::Offline)
        .map(|c| (c.contact.as_str(), c.availability, c.message.as_deref()))
        .collect();
    assert_eq!(
        online,
        [("bob@example.test", Availability::Busy, Some("busy"))]
    );
    bob.close().unwrap();
}
