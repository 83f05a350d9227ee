//! Against a real Synapse: the source inside a real hub, the user's "other client" is the
//! testkit's blocking HTTP client, and the assertions are on the hub's event stream and on
//! what another user (bob) sees.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use imstatus_core::{
    Availability, ContactId, ErrorCode, EventKind, Session, SignOutReason, Status,
};
use imstatus_matrix::{MatrixFactory, StoredLogin};
use imstatus_testkit::{free_port, MatrixUser, Synapse, SynapseOptions};

use crate::common::{alice, is, kinds, names, source_error, Account, Watch};

/// How long a presence change may take to become an event.
const PROMPT: Duration = Duration::from_secs(1);

/// One Synapse for every test that does not stop it, started by the first and stopped when
/// the last one using it ends.
fn shared() -> Arc<Synapse> {
    static SHARED: Mutex<Weak<Synapse>> = Mutex::new(Weak::new());
    let mut guard = SHARED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = guard.upgrade() {
        return s;
    }
    let s = Arc::new(Synapse::start().unwrap());
    *guard = Arc::downgrade(&s);
    s
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// A fresh local part (the shared server keeps every user).
fn fresh(name: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!("{name}{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A server and a registered user (password `<local>pw`) on it.
async fn user(synapse: &Arc<Synapse>, name: &str) -> MatrixUser {
    let s = synapse.clone();
    let local = fresh(name);
    blocking(move || s.register(&local, &format!("{local}pw")).unwrap()).await
}

fn password_of(u: &MatrixUser) -> String {
    let local = u.user_id.trim_start_matches('@').split(':').next().unwrap();
    format!("{local}pw")
}

fn account(synapse: &Synapse, u: &MatrixUser) -> Account {
    Account::password(&synapse.url(), &u.user_id, &password_of(u))
}

async fn put(
    synapse: &Arc<Synapse>,
    u: &MatrixUser,
    presence: &'static str,
    msg: Option<&'static str>,
) -> Instant {
    let (s, u) = (synapse.clone(), u.clone());
    blocking(move || s.set_presence(&u, presence, msg).unwrap()).await;
    Instant::now()
}

fn status_to(events: &[Arc<imstatus_core::Event>]) -> Option<Status> {
    events.iter().find_map(|e| match &e.kind {
        EventKind::StatusChanged { to, .. } => Some(to.clone()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_set_by_the_users_client_becomes_events_in_order_each_within_a_second() {
    let synapse = blocking(shared).await;
    let a = user(&synapse, "alice").await;
    let acc = account(&synapse, &a);
    let mut w = Watch::start(acc.source());
    let events = w.synced().await;
    assert_eq!(names(&events), ["snapshot", "signed_out", "status_changed"]);
    assert_eq!(w.snapshot().session, Session::SignedOut);
    assert_eq!(w.snapshot().client, imstatus_core::Client::Unknown);

    type Step<'a> = (&'a str, Option<&'a str>, &'a [&'a str], Option<Status>);
    let steps: [Step; 4] = [
        (
            "online",
            None,
            &["signed_in", "status_changed", "resource_changed"],
            Some(Status::new(Availability::Available)),
        ),
        (
            "unavailable",
            Some("lunch"),
            &["status_changed", "resource_changed"],
            Some(Status::with_message(Availability::Away, "lunch")),
        ),
        (
            "org.matrix.msc3026.busy",
            Some("call"),
            &["status_changed", "resource_changed"],
            Some(Status::with_message(Availability::Busy, "call")),
        ),
        (
            "offline",
            None,
            &["signed_out", "status_changed", "resource_changed"],
            Some(Status::OFFLINE),
        ),
    ];
    for (i, (presence, msg, expected, to)) in steps.into_iter().enumerate() {
        if i == 2 {
            // The same presence again emits nothing: the next event is the next change.
            put(&synapse, &a, "unavailable", Some("lunch")).await;
        }
        let sent = put(&synapse, &a, presence, msg).await;
        let events = w.until(presence, is("resource_changed")).await;
        let took = sent.elapsed();
        assert_eq!(names(&events), expected, "{presence}");
        assert_eq!(status_to(&events), to, "{presence}");
        assert!(took < PROMPT, "{presence} took {took:?}");
    }
    // The client went offline on purpose, just after being active: the user signed out.
    let snap = w.snapshot();
    assert_eq!(snap.session, Session::SignedOut);
    assert!(w.quiet_for(Duration::from_millis(500)).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_already_online_is_seen_at_start_and_signed_out_when_it_stops_syncing() {
    let synapse = blocking(shared).await;
    let started = Instant::now();
    let a = user(&synapse, "alice").await;
    // alice's client: /sync with the default presence (online), 1 s long-polls, until stopped.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let (s, a, stop) = (synapse.clone(), a.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut since: Option<String> = None;
            while !stop.load(Ordering::Relaxed) {
                let r = s
                    .sync(&a.access_token, since.as_deref(), "online", 1000)
                    .unwrap();
                since = r["next_batch"].as_str().map(str::to_owned);
            }
        })
    };
    let (s, token, id) = (synapse.clone(), a.access_token.clone(), a.user_id.clone());
    imstatus_testkit::wait_until(
        "alice's client to be online",
        Duration::from_secs(10),
        || (s.presence(&token, &id).ok()?["presence"] == "online").then_some(()),
    )
    .unwrap();
    let acc = account(&synapse, &a);
    let mut w = Watch::start(acc.source());
    let events = w.synced().await;
    assert_eq!(names(&events), ["snapshot", "signed_in", "status_changed"]);
    assert_eq!(
        status_to(&events),
        Some(Status::new(Availability::Available))
    );

    stop.store(true, Ordering::Relaxed);
    blocking(move || client.join().unwrap()).await;
    let stopped = Instant::now();
    // Synapse times out a device 5 s (sync_online_timeout) after its last sync, on a 5 s
    // wheel that starts 30 s after the server (recipe M3).
    let events = w
        .until_within(Duration::from_secs(45), "signed_out", is("signed_out"))
        .await;
    assert_eq!(
        events.last().map(|e| e.kind.clone()),
        Some(EventKind::SignedOut {
            reason: SignOutReason::ConnectionLost
        })
    );
    eprintln!(
        "signed out {:?} after the client stopped ({:?} after the server started)",
        stopped.elapsed(),
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_never_makes_the_user_look_online_to_others() {
    let synapse = blocking(shared).await;
    let a = user(&synapse, "alice").await;
    let b = user(&synapse, "bob").await;
    let (s, a2, b2) = (synapse.clone(), a.clone(), b.clone());
    blocking(move || s.share_room(&a2, &b2).unwrap()).await;
    let acc = account(&synapse, &a);
    let mut w = Watch::start(acc.source());
    w.synced().await;
    // Let the watcher long-poll a few times (2 s polls): count its /sync requests in
    // Synapse's access log.
    let s = synapse.clone();
    let who = a.user_id.clone();
    blocking(move || {
        imstatus_testkit::wait_until("3 syncs of the watcher", Duration::from_secs(15), || {
            let log = s.log();
            let n = log
                .lines()
                .filter(|l| l.contains(&who) && l.contains("/sync?set_presence=offline"))
                .count();
            (n >= 3).then_some(())
        })
        .unwrap()
    })
    .await;
    let (s, bt, aid) = (synapse.clone(), b.access_token.clone(), a.user_id.clone());
    let seen_by_bob = blocking(move || s.presence(&bt, &aid).unwrap()).await;
    assert_eq!(seen_by_bob["presence"], "offline", "{seen_by_bob}");
    assert_eq!(w.snapshot().session, Session::SignedOut);

    // The control: one plain /sync as alice (default set_presence=online) does make her
    // online for bob, so the check above can fail.
    let (s, at) = (synapse.clone(), a.access_token.clone());
    blocking(move || {
        s.request("GET", "/_matrix/client/v3/sync?timeout=0", Some(&at), None)
            .unwrap()
    })
    .await;
    let (s, bt, aid) = (synapse.clone(), b.access_token.clone(), a.user_id.clone());
    let seen_by_bob = blocking(move || s.presence(&bt, &aid).unwrap()).await;
    assert_eq!(seen_by_bob["presence"], "online", "{seen_by_bob}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_are_the_members_of_shared_rooms_with_their_presence() {
    let synapse = blocking(shared).await;
    let a = user(&synapse, "alice").await;
    let b = user(&synapse, "bob").await;
    let c = user(&synapse, "carol").await;
    let (s, a2, b2, c2) = (synapse.clone(), a.clone(), b.clone(), c.clone());
    blocking(move || {
        s.share_room(&a2, &b2).unwrap();
        s.share_room(&a2, &c2).unwrap();
        s.set_presence(&b2, "online", Some("hi")).unwrap();
    })
    .await;
    let mut acc = account(&synapse, &a);
    acc.config.contacts = true;
    let mut w = Watch::start(acc.source());
    w.until("the first status_changed", |e| {
        matches!(&e.kind, EventKind::StatusChanged { .. })
    })
    .await;
    // Both contacts are known: bob online with his message, carol offline.
    let mut contacts: Vec<(ContactId, Status)> = w
        .snapshot()
        .contacts
        .iter()
        .map(|c| {
            (
                c.contact.clone(),
                Status {
                    availability: c.availability,
                    message: c.message.clone(),
                },
            )
        })
        .collect();
    contacts.sort_by(|x, y| x.0.as_str().cmp(y.0.as_str()));
    assert_eq!(
        contacts,
        vec![
            (
                ContactId::new(b.user_id.clone()),
                Status::with_message(Availability::Available, "hi")
            ),
            (ContactId::new(c.user_id.clone()), Status::OFFLINE),
        ]
    );
    let sent = put(&synapse, &c, "unavailable", Some("brb")).await;
    let events = w
        .until("carol's change", is("contact_status_changed"))
        .await;
    assert!(sent.elapsed() < PROMPT);
    assert_eq!(
        kinds(&events),
        vec![EventKind::ContactStatusChanged {
            contact: ContactId::new(c.user_id.clone()),
            from: Status::OFFLINE,
            to: Status::with_message(Availability::Away, "brb"),
        }]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_auth_failed_after_one_login_attempt() {
    let synapse = blocking(shared).await;
    let a = user(&synapse, "alice").await;
    let acc = Account::password(&synapse.url(), &a.user_id, "wrong");
    let mut w = Watch::start(acc.source());
    let events = w.until("source_error", is("source_error")).await;
    let (code, detail, _) = source_error(events.last().unwrap()).unwrap();
    assert_eq!(code, ErrorCode::AuthFailed);
    assert!(detail.contains("wrong user or password"), "{detail}");
    // No retry: nothing more happens, and the source tried exactly once.
    assert!(w.quiet_for(Duration::from_secs(3)).await.is_empty());
    assert_eq!(w.source.logins(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_login_is_kept_across_restarts_and_a_revoked_token_is_replaced_once() {
    let synapse = blocking(shared).await;
    let a = user(&synapse, "alice").await;
    let acc = account(&synapse, &a);
    let state_file = acc.config.state_file(&alice()).unwrap();
    {
        let mut w = Watch::start(acc.source());
        w.synced().await;
        assert_eq!(w.source.logins(), 1);
    }
    let first = StoredLogin::load(&state_file).expect("stored login");
    assert_eq!(first.user_id, a.user_id);
    // A second run reuses the device and token: no login at all.
    let mut w = Watch::start(acc.source());
    w.synced().await;
    assert_eq!(w.source.logins(), 0);
    // The token is revoked (logged out from another client): one new login, same device,
    // and the watch goes on without the session becoming unknown.
    let (s, token) = (synapse.clone(), first.access_token.clone());
    blocking(move || s.logout(&token).unwrap()).await;
    let (path, old) = (state_file.clone(), first.access_token.clone());
    let second = blocking(move || {
        imstatus_testkit::wait_until("a new stored login", Duration::from_secs(10), || {
            StoredLogin::load(&path).filter(|l| l.access_token != old)
        })
        .unwrap()
    })
    .await;
    assert_eq!(w.source.logins(), 1);
    assert_eq!(second.device_id, first.device_id);
    assert_ne!(second.access_token, first.access_token);
    let sent = put(&synapse, &a, "online", Some("back")).await;
    let events = w.until("signed_in", is("resource_changed")).await;
    assert_eq!(
        names(&events),
        ["signed_in", "status_changed", "resource_changed"]
    );
    assert!(sent.elapsed() < PROMPT);
    // Only the registration's device and the watcher's: no device per run.
    let (s, token) = (synapse.clone(), a.access_token.clone());
    let devices = blocking(move || {
        s.request("GET", "/_matrix/client/v3/devices", Some(&token), None)
            .unwrap()
    })
    .await;
    assert_eq!(
        devices.body["devices"].as_array().map(Vec::len),
        Some(2),
        "{}",
        devices.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_access_token_is_auth_failed_without_a_login() {
    let synapse = blocking(shared).await;
    let a = user(&synapse, "alice").await;
    let acc = imstatus_matrix_token_account(&synapse, &a.user_id, "syt_not_a_token");
    let mut w = Watch::start(acc.source());
    let events = w.until("source_error", is("source_error")).await;
    let (code, detail, _) = source_error(events.last().unwrap()).unwrap();
    assert_eq!(code, ErrorCode::AuthFailed);
    assert!(detail.contains("M_UNKNOWN_TOKEN"), "{detail}");
    assert!(detail.contains("access_token_file"), "{detail}");
    assert!(w.quiet_for(Duration::from_secs(2)).await.is_empty());
    assert_eq!(w.source.logins(), 0);
}

fn imstatus_matrix_token_account(synapse: &Synapse, user: &str, token: &str) -> Account {
    Account::token(&synapse.url(), user, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_homeserver_makes_the_session_unknown_then_the_true_state() {
    let synapse = blocking(|| Synapse::start().unwrap()).await;
    let synapse = Arc::new(Mutex::new(synapse));
    let (url, a) = {
        let s = synapse.clone();
        blocking(move || {
            let s = s.lock().unwrap();
            let a = s.register("alice", "alicepw").unwrap();
            s.set_presence(&a, "online", Some("here")).unwrap();
            (s.url(), a)
        })
        .await
    };
    let acc = Account::password(&url, &a.user_id, "alicepw");
    let mut w = Watch::start(acc.source());
    let events = w.synced().await;
    assert_eq!(names(&events), ["snapshot", "signed_in", "status_changed"]);

    let s = synapse.clone();
    blocking(move || s.lock().unwrap().stop().unwrap()).await;
    let events = w.until("source_error", is("source_error")).await;
    let (code, _, unknown) = source_error(events.last().unwrap()).unwrap();
    assert!(unknown, "the session becomes unknown");
    assert!(
        matches!(code, ErrorCode::Disconnected | ErrorCode::ServerUnreachable),
        "{code}"
    );
    assert_eq!(w.snapshot().session, Session::Unknown);

    let s = synapse.clone();
    blocking(move || s.lock().unwrap().restart().unwrap()).await;
    // Presence survives the restart (Synapse persists it): signed in again, same status.
    let events = w
        .until_within(Duration::from_secs(20), "signed_in", is("signed_in"))
        .await;
    assert!(
        names(&events)
            .iter()
            .all(|n| *n == "source_error" || *n == "signed_in"),
        "{:?}",
        names(&events)
    );
    let snap = w.snapshot();
    assert_eq!(snap.session, Session::SignedIn);
    assert_eq!(
        snap.status(),
        Status::with_message(Availability::Available, "here")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_port_is_server_unreachable_and_retried() {
    let acc = Account::password(
        &format!("http://127.0.0.1:{}", free_port()),
        "@alice:example.test",
        "pw",
    );
    let mut w = Watch::start(acc.source());
    let events = w.until("source_error", is("source_error")).await;
    let (code, detail, _) = source_error(events.last().unwrap()).unwrap();
    assert_eq!(code, ErrorCode::ServerUnreachable);
    assert!(detail.contains("connection refused"), "{detail}");
    // Retried after the backoff (0.5-1 s, then 1-2 s): a second login attempt.
    let source = w.source.clone();
    blocking(move || {
        imstatus_testkit::wait_until("a second attempt", Duration::from_secs(5), || {
            (source.logins() >= 2).then_some(())
        })
        .unwrap()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_status_changes_what_others_see_and_refuses_what_matrix_cannot_say() {
    let synapse = blocking(shared).await;
    let a = user(&synapse, "alice").await;
    let b = user(&synapse, "bob").await;
    let (s, a2, b2) = (synapse.clone(), a.clone(), b.clone());
    blocking(move || s.share_room(&a2, &b2).unwrap()).await;
    let acc = account(&synapse, &a);
    let mut w = Watch::start(acc.source());
    w.synced().await;
    w.hub
        .set_status(
            &alice(),
            Status::with_message(Availability::ExtendedAway, "holiday"),
        )
        .await
        .unwrap();
    let (s, bt, aid) = (synapse.clone(), b.access_token.clone(), a.user_id.clone());
    let seen = blocking(move || s.presence(&bt, &aid).unwrap()).await;
    assert_eq!(
        (seen["presence"].as_str(), seen["status_msg"].as_str()),
        (Some("unavailable"), Some("holiday"))
    );
    let events = w.until("the change", is("resource_changed")).await;
    assert_eq!(
        status_to(&events),
        Some(Status::with_message(Availability::Away, "holiday"))
    );
    let e = w
        .hub
        .set_status(&alice(), Status::new(Availability::Invisible))
        .await
        .expect_err("no invisible in Matrix");
    assert_eq!(e.code, ErrorCode::Unsupported);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_every_step_and_keeps_its_login_for_the_source() {
    use imstatus_hub::{SourceFactory, Value};
    let synapse = blocking(shared).await;
    let a = user(&synapse, "alice").await;
    let acc = account(&synapse, &a);
    let mut keys = imstatus_hub::Keys::new(alice(), 1)
        .with("homeserver", Value::String(synapse.url()))
        .with("user", Value::String(a.user_id.clone()))
        .with(
            "password_command",
            Value::String(format!("echo {}", password_of(&a))),
        );
    let settings = MatrixFactory.resolve(&mut keys).unwrap();
    assert!(keys.unread().is_empty());
    // The doctor keeps its login where the source will find it.
    let mut config = settings
        .as_any()
        .downcast_ref::<imstatus_matrix::MatrixConfig>()
        .unwrap()
        .clone();
    config.state_dir = acc.config.state_dir.clone();
    let checks = imstatus_matrix::doctor::doctor(&config).await;
    let summary: Vec<(&str, bool)> = checks.iter().map(|c| (c.name, c.ok)).collect();
    assert_eq!(
        summary,
        [
            ("versions", true),
            ("login", true),
            ("sync", true),
            ("presence", true)
        ],
        "{checks:#?}"
    );
    assert!(StoredLogin::load(&config.state_file(&alice()).unwrap()).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_tls_the_certificate_must_be_trusted_and_disabled_presence_is_reported() {
    let off = blocking(|| {
        Synapse::start_with(SynapseOptions {
            presence: false,
            tls: true,
        })
        .unwrap()
    })
    .await;
    let url = off.tls_url().unwrap();
    let ca = off.ca_cert().unwrap().to_owned();
    let off = Arc::new(off);
    let o = off.clone();
    blocking(move || o.register("alice", "alicepw").unwrap()).await;

    // Not trusted without ca_file.
    let acc = Account::password(&url, "@alice:example.test", "alicepw");
    let mut w = Watch::start(acc.source());
    let events = w.until("source_error", is("source_error")).await;
    let (code, detail, _) = source_error(events.last().unwrap()).unwrap();
    assert_eq!(code, ErrorCode::InvalidCertificate, "{detail}");
    assert!(detail.contains("unknown authority"), "{detail}");
    drop(w);

    // With it, the watch works, and says once that presence is off.
    let mut acc = Account::password(&url, "@alice:example.test", "alicepw");
    acc.config.ca_file = Some(ca);
    let mut w = Watch::start(acc.source());
    let events = w.synced().await;
    let errors: Vec<_> = events.iter().filter_map(|e| source_error(e)).collect();
    assert_eq!(errors.len(), 1, "{events:#?}");
    assert_eq!(errors[0].0, ErrorCode::Unsupported);
    assert!(
        errors[0].1.contains("presence looks disabled"),
        "{}",
        errors[0].1
    );
    assert!(!errors[0].2, "the session is not unknown for it");

    let checks = imstatus_matrix::doctor::doctor(&acc.config).await;
    let summary: Vec<(&str, bool)> = checks.iter().map(|c| (c.name, c.ok)).collect();
    assert_eq!(
        summary,
        [
            ("versions", true),
            ("login", true),
            ("sync", true),
            ("presence", false)
        ],
        "{checks:#?}"
    );
    let last = checks.last().unwrap();
    assert!(
        last.detail.contains("presence looks disabled"),
        "{}",
        last.detail
    );
    assert!(last
        .hint
        .as_deref()
        .unwrap_or("")
        .contains("presence: {enabled: true}"));
    drop(off);
}
