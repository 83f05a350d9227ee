//! Invisibility and contact mode end to end, against a real Prosody (with and without
//! `mod_privacy_lists`) and a real ejabberd (`mod_privacy`; ejabberd 23.01 has no XEP-0186,
//! `tests/fake_server.rs` covers that path). "bob" is a contact of alice's with subscription
//! `both`, played by testkit's raw client: he must never receive a presence from an imstatus
//! resource while imstatus watches alice.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_config::Secret;
use imstatus_core::{
    AccountId, Availability, ContactId, ErrorCode, Event, EventKind, Session, Snapshot,
};
use imstatus_hub::{Hub, Subscription};
use imstatus_testkit::{Ejabberd, EjabberdOptions, Prosody, ProsodyOptions, XmppClient};
use imstatus_xmpp::XmppSource;
use imstatus_xmpp::{TlsMode, Visibility, WatchAs, XmppConfig};
use tempfile::NamedTempFile;

/// How long one awaited event or stanza may take.
const STEP: Duration = Duration::from_secs(10);
/// The observation window of the "never receives" checks, after a positive barrier has shown
/// that the connection is flushed up to now. Anything imstatus could have caused was sent
/// well before; the window only catches a stanza that would arrive out of order.
const QUIET: Duration = Duration::from_millis(300);
/// A failed login would be retried within the first backoff ceiling (1 s, `imstatus_core::
/// Backoff`); half a second more covers the connection itself. The window of the "never
/// retried" checks.
const NO_RETRY: Duration = Duration::from_millis(1500);
/// What every imstatus resource of alice's looks like on the wire.
const IMSTATUS_RESOURCE: &str = "alice@example.test/imstatus-";

fn alice() -> AccountId {
    AccountId::new("alice")
}

/// The XMPP server of a test.
enum Server {
    Prosody(Prosody),
    Ejabberd(Ejabberd),
}

impl Server {
    fn port(&self) -> u16 {
        match self {
            Server::Prosody(p) => p.port(),
            Server::Ejabberd(e) => e.port(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Server::Prosody(_) => "prosody",
            Server::Ejabberd(_) => "ejabberd",
        }
    }

    fn login(&self, user: &str, resource: &str) -> XmppClient {
        XmppClient::connect(
            self.port(),
            user,
            "example.test",
            &format!("{user}pw"),
            resource,
        )
        .unwrap()
    }
}

fn hidden_prosody() -> Server {
    Server::Prosody(Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap())
}

fn ejabberd() -> Server {
    Server::Ejabberd(Ejabberd::start(EjabberdOptions::default()).unwrap())
}

/// alice on `port`, plaintext; adjust the rest with struct update syntax.
fn config(port: u16, password: &NamedTempFile) -> XmppConfig {
    XmppConfig {
        server: Some(format!("127.0.0.1:{port}")),
        tls: TlsMode::InsecurePlaintext,
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

/// A hub watching alice with the XMPP source, and a subscription to it.
struct Watch {
    hub: Hub,
    sub: Subscription,
    /// Every event received so far.
    seen: Vec<Arc<Event>>,
    started: Instant,
}

impl Watch {
    fn start(config: &XmppConfig) -> Watch {
        let started = Instant::now();
        let source = XmppSource::new(config).with_backoff_seed(11);
        let hub = Hub::builder()
            .with_source(alice(), Arc::new(source))
            .start();
        let sub = hub.subscribe();
        Watch {
            hub,
            sub,
            seen: Vec::new(),
            started,
        }
    }

    /// Events up to and including the first that matches, within [`STEP`].
    async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Vec<Arc<Event>> {
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.sub.recv()).await {
                Ok(Some(event)) => {
                    self.seen.push(event.clone());
                    let done = pred(&event);
                    got.push(event);
                    if done {
                        return got;
                    }
                }
                Ok(None) => panic!("hub closed while waiting for {what}; got {got:#?}"),
                Err(_) => panic!("no {what} within {STEP:?}; got {got:#?}"),
            }
        }
    }

    /// The first sync: up to the status leaving `unknown` (the last session event of the
    /// login batch).
    async fn synced(&mut self) -> Vec<Arc<Event>> {
        let events = self
            .until("the first status_changed", is("status_changed"))
            .await;
        eprintln!("synced after {:?}", self.started.elapsed());
        events
    }

    fn snapshot(&self) -> Snapshot {
        self.hub
            .snapshot(&alice())
            .and_then(|e| e.snapshot().cloned())
            .unwrap()
    }

    /// Everything already published, without waiting.
    fn drain(&mut self) -> Vec<Arc<Event>> {
        let mut got = Vec::new();
        while let Some(e) = self.sub.try_recv() {
            self.seen.push(e.clone());
            got.push(e);
        }
        got
    }
}

fn is(name: &'static str) -> impl Fn(&Event) -> bool {
    move |e| e.kind.name() == name
}

fn names(events: &[Arc<Event>]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
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

fn is_status_to(availability: Availability) -> impl Fn(&Event) -> bool {
    move |e| matches!(&e.kind, EventKind::StatusChanged { to, .. } if to.availability == availability)
}

/// Reads stanzas until one contains every needle (attribute order differs between servers).
fn read_until_all(client: &mut XmppClient, needles: &[&str]) -> Vec<String> {
    let deadline = Instant::now() + STEP;
    let mut read = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no stanza with {needles:?}; read {read:#?}"
        );
        let stanza = client.read_stanza(left).unwrap();
        let done = needles.iter().all(|n| stanza.contains(n));
        read.push(stanza);
        if done {
            return read;
        }
    }
}

/// A presence from an imstatus resource of alice's, among `stanzas`.
fn imstatus_presence(stanzas: &[String]) -> Option<&String> {
    stanzas
        .iter()
        .find(|s| s.starts_with("<presence") && s.contains(IMSTATUS_RESOURCE))
}

/// bob online with a status, before imstatus starts.
fn bob_online(server: &Server) -> XmppClient {
    let mut bob = server.login("bob", "laptop");
    bob.presence(Some("away"), Some("reading"), None).unwrap();
    // His own presence comes back once the server has handled it.
    bob.read_until("from='bob@example.test/laptop'", STEP)
        .unwrap();
    bob
}

async fn a_hidden_session_is_never_seen_while_alices_clients_are_followed(server: Server) {
    let t = Instant::now();
    let mut bob = bob_online(&server);
    let pw = password("alicepw");
    let mut w = Watch::start(&XmppConfig {
        contacts: true,
        ..config(server.port(), &pw)
    });
    let first = w.synced().await;
    assert!(
        first.iter().all(|e| source_error(e).is_none()),
        "{}: hidden without a warning: {first:#?}",
        server.name()
    );
    assert_eq!(w.snapshot().session, Session::SignedOut);

    let mut desk = server.login("alice", "desk");
    desk.presence(None, None, Some(1)).unwrap();
    let events = w.until("resource_changed", is("resource_changed")).await;
    assert_eq!(
        names(&events),
        ["signed_in", "status_changed", "resource_changed"]
    );
    desk.presence(Some("dnd"), Some("meeting"), Some(1))
        .unwrap();
    let events = w.until("busy", is_status_to(Availability::Busy)).await;
    let EventKind::StatusChanged { to, mistatus, .. } = &events[events.len() - 1].kind else {
        panic!()
    };
    assert_eq!((to.message.as_deref(), *mistatus), (Some("meeting"), 0x0A));
    desk.unavailable().unwrap();
    w.until("signed_out", is("signed_out")).await;
    let listed: Vec<String> = w
        .seen
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ResourceChanged { resource, .. } => Some(resource.as_str().to_owned()),
            _ => None,
        })
        .collect();
    assert!(listed.iter().all(|r| r == "desk"), "{listed:?}");

    // bob saw alice's desk come and go: his stream is flushed past all of that.
    let mut read = read_until_all(&mut bob, &["alice@example.test/desk", "unavailable"]);
    read.extend(bob.read_for(QUIET).unwrap());
    assert!(
        read.iter().any(|s| s.contains("alice@example.test/desk")),
        "{read:#?}"
    );
    assert_eq!(
        imstatus_presence(&read),
        None,
        "{}: bob saw imstatus",
        server.name()
    );
    desk.close().unwrap();

    // The end of imstatus's session (the hub dropped, as after a one-shot command).
    drop(w);
    let after = bob.read_for(QUIET).unwrap();
    let available = after
        .iter()
        .filter(|s| s.contains(IMSTATUS_RESOURCE) && !s.contains("unavailable"))
        .count();
    assert_eq!(available, 0, "{after:#?}");
    eprintln!(
        "{}: after imstatus ended (alice's last session), bob received: {after:?}",
        server.name()
    );
    bob.close().unwrap();
    eprintln!("{} took {:?}", server.name(), t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_with_privacy_lists_hides_imstatus_from_bob_and_follows_alice() {
    a_hidden_session_is_never_seen_while_alices_clients_are_followed(hidden_prosody()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_with_mod_privacy_hides_imstatus_from_bob_and_follows_alice() {
    a_hidden_session_is_never_seen_while_alices_clients_are_followed(ejabberd()).await;
}

async fn what_was_online_before_the_start_is_in_the_first_snapshot(server: Server) {
    let mut bob = bob_online(&server);
    let mut phone = server.login("alice", "phone");
    phone.presence(Some("xa"), None, Some(2)).unwrap();
    phone
        .read_until("from='alice@example.test/phone'", STEP)
        .unwrap();
    let pw = password("alicepw");
    let mut w = Watch::start(&XmppConfig {
        contacts: true,
        ..config(server.port(), &pw)
    });
    let first = w.synced().await;
    assert!(
        !names(&first).contains(&"signed_out"),
        "{}: {first:#?}",
        server.name()
    );
    // bob went straight from unknown to what he is: no "offline" first.
    let bob_id = ContactId::new("bob@example.test");
    let bob_changes: Vec<Availability> = first
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ContactStatusChanged { contact, to, .. } if *contact == bob_id => {
                Some(to.availability)
            }
            _ => None,
        })
        .collect();
    assert_eq!(bob_changes, [Availability::Away], "{}", server.name());
    let snap = w.snapshot();
    assert_eq!(snap.session, Session::SignedIn, "{}", server.name());
    assert_eq!(snap.availability, Availability::ExtendedAway);
    let resources: Vec<(&str, Option<i32>)> = snap
        .resources
        .iter()
        .map(|r| (r.resource.as_str(), r.priority))
        .collect();
    assert_eq!(resources, [("phone", Some(2))]);
    let contacts: Vec<(&str, Availability, Option<&str>)> = snap
        .contacts
        .iter()
        .map(|c| (c.contact.as_str(), c.availability, c.message.as_deref()))
        .collect();
    assert_eq!(
        contacts,
        [
            ("bob@example.test", Availability::Away, Some("reading")),
            ("watcher@example.test", Availability::Offline, None)
        ]
    );
    // A round trip through bob's own stream, then a short window.
    bob.send_raw("<iq type='get' id='flush' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>")
        .unwrap();
    let mut read = bob.read_until("id='flush'", STEP).unwrap_or_default();
    read.push('\n');
    let mut read: Vec<String> = read.lines().map(str::to_owned).collect();
    read.extend(bob.read_for(QUIET).unwrap());
    assert_eq!(imstatus_presence(&read), None, "{}", server.name());
    phone.close().unwrap();
    bob.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_resources_and_contacts_online_before_the_start_are_in_the_first_snapshot() {
    what_was_online_before_the_start_is_in_the_first_snapshot(hidden_prosody()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_resources_and_contacts_online_before_the_start_are_in_the_first_snapshot() {
    what_was_online_before_the_start_is_in_the_first_snapshot(ejabberd()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_privacy_lists_auto_stays_visible_and_warns_once() {
    let mut prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let server_port = prosody.port();
    let mut bob =
        XmppClient::connect(server_port, "bob", "example.test", "bobpw", "laptop").unwrap();
    bob.presence(None, None, None).unwrap();
    bob.read_until("from='bob@example.test/laptop'", STEP)
        .unwrap();
    let pw = password("alicepw");
    let mut w = Watch::start(&config(server_port, &pw));
    let first = w.synced().await;
    let warnings: Vec<(ErrorCode, &str, bool)> =
        first.iter().filter_map(|e| source_error(e)).collect();
    assert_eq!(warnings.len(), 1, "{first:#?}");
    let (code, detail, session_unknown) = warnings[0];
    assert_eq!(code, ErrorCode::Unsupported);
    assert!(!session_unknown, "a warning, not a source down");
    assert!(
        detail.starts_with("visible to the user's contacts: the server offers neither"),
        "{detail}"
    );
    assert_eq!(w.hub.source_error(&alice()), None, "the source is up");
    assert_eq!(w.snapshot().session, Session::SignedOut);
    // The warning is true: bob sees an extra resource of alice's.
    let seen = bob.read_until(IMSTATUS_RESOURCE, STEP).unwrap();
    assert!(seen.contains("<priority>-1</priority>"), "{seen}");

    // A reconnect does not repeat the warning.
    let prosody = tokio::task::spawn_blocking(move || {
        prosody.restart().unwrap();
        prosody
    })
    .await
    .unwrap();
    w.until("the source down", |e| {
        source_error(e).is_some_and(|(_, _, unknown)| unknown)
    })
    .await;
    let deadline = Instant::now() + STEP;
    while w.hub.source_error(&alice()).is_some() {
        assert!(Instant::now() < deadline, "the source came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let again = w.drain();
    assert!(
        again
            .iter()
            .all(|e| !matches!(source_error(e), Some((ErrorCode::Unsupported, _, _)))),
        "{again:#?}"
    );
    drop(prosody);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicitly_visible_is_silent() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let pw = password("alicepw");
    let mut w = Watch::start(&XmppConfig {
        visibility: Visibility::Visible,
        ..config(prosody.port(), &pw)
    });
    let first = w.synced().await;
    assert_eq!(
        names(&first),
        ["snapshot", "signed_out", "status_changed"],
        "{first:#?}"
    );
}

/// The number of c2s connections Prosody accepted so far (from its log).
fn connections(prosody: &Prosody) -> usize {
    prosody.log().matches("Client connected").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invisible_required_without_support_is_unsupported_never_retried_and_never_seen() {
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    let mut bob =
        XmppClient::connect(prosody.port(), "bob", "example.test", "bobpw", "laptop").unwrap();
    bob.presence(None, None, None).unwrap();
    bob.read_until("from='bob@example.test/laptop'", STEP)
        .unwrap();
    let pw = password("alicepw");
    let mut w = Watch::start(&XmppConfig {
        visibility: Visibility::Invisible,
        ..config(prosody.port(), &pw)
    });
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    assert_eq!(names(&events), ["snapshot", "source_error"]);
    let (code, detail, _) = source_error(&events[1]).unwrap();
    assert_eq!(code, ErrorCode::Unsupported);
    assert!(
        detail.starts_with("visibility = \"invisible\", but the server offers neither"),
        "{detail}"
    );
    assert_eq!(
        w.hub.source_error(&alice()).map(|e| e.code),
        Some(ErrorCode::Unsupported)
    );
    assert_eq!(w.snapshot().session, Session::Unknown);
    let before = connections(&prosody);
    // See NO_RETRY; bob's stream is read over the same window.
    let read = bob.read_for(NO_RETRY).unwrap();
    assert_eq!(connections(&prosody), before, "retried: {}", prosody.log());
    assert_eq!(imstatus_presence(&read), None, "{read:#?}");
    assert!(w.sub.try_recv().is_none(), "no further events");
}

/// Prosody or ejabberd where watcher has no subscription to alice (alice and bob are 'both').
fn without_watcher_subscription(prosody: bool) -> Server {
    let both = vec![("alice".to_owned(), "bob".to_owned())];
    if prosody {
        Server::Prosody(
            Prosody::start(
                ProsodyOptions {
                    both,
                    ..ProsodyOptions::default()
                }
                .with_privacy_lists(),
            )
            .unwrap(),
        )
    } else {
        Server::Ejabberd(
            Ejabberd::start(EjabberdOptions {
                both,
                ..EjabberdOptions::default()
            })
            .unwrap(),
        )
    }
}

fn contact_config(port: u16, watcher_password: &NamedTempFile) -> XmppConfig {
    XmppConfig {
        watch_as: WatchAs::Contact {
            watcher_jid: "watcher@example.test".to_owned(),
        },
        ..config(port, watcher_password)
    }
}

/// Starts contact mode, checks the pending state, and returns alice's desk once it has
/// received the watcher's subscription request.
async fn pending_subscription(server: &Server, w: &mut Watch) -> XmppClient {
    let mut desk = server.login("alice", "desk");
    desk.presence(None, None, Some(1)).unwrap();
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail, _) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::AccessDenied, "{detail}");
    assert!(
        detail.starts_with(
            "watcher@example.test has asked alice@example.test for a presence subscription"
        ),
        "{detail}"
    );
    assert_eq!(w.snapshot().session, Session::Unknown, "never signed out");
    read_until_all(&mut desk, &["watcher@example.test", "type='subscribe'"]);
    desk
}

async fn contact_mode_follows_the_user_once_the_subscription_is_approved(server: Server) {
    let pw = password("watcherpw");
    let mut w = Watch::start(&contact_config(server.port(), &pw));
    let mut desk = pending_subscription(&server, &mut w).await;
    desk.send_raw("<presence to='watcher@example.test' type='subscribed'/>")
        .unwrap();
    let events = w.until("signed_in", is("signed_in")).await;
    assert!(!names(&events).contains(&"signed_out"), "{events:#?}");
    w.until("status", is("status_changed")).await;
    let snap = w.snapshot();
    assert_eq!(snap.session, Session::SignedIn, "{}", server.name());
    let resources: Vec<&str> = snap.resources.iter().map(|r| r.resource.as_str()).collect();
    assert_eq!(resources, ["desk"]);
    assert_eq!(w.hub.source_error(&alice()), None);

    desk.presence(Some("away"), Some("lunch"), Some(1)).unwrap();
    let events = w.until("away", is_status_to(Availability::Away)).await;
    let EventKind::StatusChanged { to, .. } = &events[events.len() - 1].kind else {
        panic!()
    };
    assert_eq!(to.message.as_deref(), Some("lunch"));
    desk.unavailable().unwrap();
    w.until("signed_out", is("signed_out")).await;
    desk.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_contact_mode_asks_for_a_subscription_and_follows_alice_once_approved() {
    contact_mode_follows_the_user_once_the_subscription_is_approved(without_watcher_subscription(
        true,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejabberd_contact_mode_asks_for_a_subscription_and_follows_alice_once_approved() {
    contact_mode_follows_the_user_once_the_subscription_is_approved(without_watcher_subscription(
        false,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_mode_refused_is_access_denied_for_good() {
    let server = without_watcher_subscription(true);
    let Server::Prosody(prosody) = &server else {
        unreachable!()
    };
    let pw = password("watcherpw");
    let mut w = Watch::start(&contact_config(server.port(), &pw));
    let mut desk = pending_subscription(&server, &mut w).await;
    desk.send_raw("<presence to='watcher@example.test' type='unsubscribed'/>")
        .unwrap();
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail, _) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::AccessDenied, "{detail}");
    assert!(
        detail.starts_with(
            "alice@example.test refused the presence subscription of watcher@example.test"
        ),
        "{detail}"
    );
    assert_eq!(
        w.hub.source_error(&alice()).map(|e| e.code),
        Some(ErrorCode::AccessDenied)
    );
    let before = connections(prosody);
    // See NO_RETRY: a refusal is final for this run.
    tokio::time::sleep(NO_RETRY).await;
    assert_eq!(connections(prosody), before, "retried: {}", prosody.log());
    assert!(
        !w.seen.iter().any(|e| e.kind.name() == "signed_out"),
        "{:#?}",
        w.seen
    );
    assert_eq!(w.snapshot().session, Session::Unknown);
    desk.close().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_mode_with_an_existing_subscription_is_followed_at_once_and_hidden() {
    // The default accounts: watcher and alice are 'both'.
    let prosody = Prosody::start(ProsodyOptions::default().with_privacy_lists()).unwrap();
    let server = Server::Prosody(prosody);
    let mut desk = server.login("alice", "desk");
    desk.presence(Some("dnd"), None, Some(1)).unwrap();
    desk.read_until("from='alice@example.test/desk'", STEP)
        .unwrap();
    let pw = password("watcherpw");
    let mut w = Watch::start(&contact_config(server.port(), &pw));
    let first = w.synced().await;
    assert_eq!(
        names(&first),
        ["snapshot", "signed_in", "status_changed"],
        "{first:#?}"
    );
    assert_eq!(w.snapshot().availability, Availability::Busy);
    // alice's desk is flushed by a ping round trip; the watcher never showed up there.
    desk.send_raw("<iq type='get' id='flush' to='example.test'><ping xmlns='urn:xmpp:ping'/></iq>")
        .unwrap();
    let read = desk.read_until("id='flush'", STEP).unwrap();
    assert!(
        !read.contains("from='watcher@example.test/"),
        "alice saw the watcher: {read}"
    );
    desk.close().unwrap();
}
