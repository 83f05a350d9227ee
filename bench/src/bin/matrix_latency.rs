//! Presence-change latency of the Matrix source against a minimal `/sync` reader, in the same
//! run against the same real Synapse, plus the source's start-up times and memory.
//!
//! ```text
//! target/release/matrix_latency [TOGGLES] [CONTACTS]
//! ```
//!
//! alice's "client" (the testkit's HTTP client) PUTs her presence `TOGGLES` times (default
//! 200), alternating online/unavailable with a fresh message each time. Two watchers see
//! each change: the source inside a hub (time = the hub subscriber receiving the
//! `status_changed`), and a minimal reader: a thread long-polling `/sync?set_presence=offline`
//! as a second device of alice's and parsing the JSON (time = the answer parsed). Both are
//! timed from just before the PUT. Then `CONTACTS` users (default 200) join a room with
//! alice and a contact-tracking source starts, for the memory per contact (RSS of this process
//! before and after, divided by the count: rough).

use std::io::Write as _;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_bench::args::Args;
use imstatus_bench::stats::{millis, ms};
use imstatus_bench::system::own_usage;
use imstatus_bench::{hubs, OrFail};
use imstatus_config::Secret;
use imstatus_core::{AccountId, EventKind};
use imstatus_hub::Hub;
use imstatus_matrix::{Credentials, MatrixConfig, MatrixSource, UserId};
use imstatus_testkit::Synapse;

fn rss_kib() -> u64 {
    own_usage().rss_kb
}

/// `GET path` on 127.0.0.1:`port` with a bearer token over HTTP/1.0 (so the answer is never
/// chunked and ends when the server closes); the JSON body.
fn get(port: u16, path: &str, token: &str) -> Option<serde_json::Value> {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n\r\n");
    stream.write_all(request.as_bytes()).ok()?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).ok()?;
    let body = raw.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    serde_json::from_slice(&raw[body..]).ok()
}

struct Watched {
    hub: Hub,
    sub: imstatus_hub::Subscription,
    _state: tempfile::TempDir,
    _secret: tempfile::NamedTempFile,
}

/// A hub with a Matrix source for `user`; returns once it has synced, and how long that took.
async fn watch(
    synapse: &Synapse,
    user: &str,
    password: &str,
    contacts: bool,
    state: Option<tempfile::TempDir>,
) -> (Watched, Duration) {
    let mut secret = tempfile::NamedTempFile::new().or_fail("a password file");
    writeln!(secret, "{password}").or_fail("a password file");
    let state = state.unwrap_or_else(|| tempfile::tempdir().or_fail("a state directory"));
    let mut config = MatrixConfig::new(
        synapse.url(),
        UserId::parse(user).or_fail(user),
        Credentials::Password(Secret::File(secret.path().to_owned())),
    );
    config.contacts = contacts;
    config.state_dir = Some(state.path().to_owned());
    let account = AccountId::new("alice");
    let source = Arc::new(MatrixSource::new(&config, &account).or_fail("the Matrix source"));
    let started = Instant::now();
    let hub = Hub::builder().with_source(account.clone(), source).start();
    let sub = hub.subscribe();
    hubs::settled(&hub, &account, Duration::from_secs(30)).await;
    let took = started.elapsed();
    (
        Watched {
            hub,
            sub,
            _state: state,
            _secret: secret,
        },
        took,
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args = Args::from_env(&[]);
    args.only(&[]);
    let toggles: usize = args.nth(0, "TOGGLES", 200).max(1);
    let contacts: usize = args.nth(1, "CONTACTS", 200);
    let synapse = Arc::new(
        tokio::task::spawn_blocking(Synapse::start)
            .await
            .or_fail("starting Synapse")
            .or_fail("Synapse"),
    );
    let s = synapse.clone();
    let (alice, reader_token) = tokio::task::spawn_blocking(move || {
        let alice = s.register("alice", "alicepw").or_fail("registering alice");
        let reader = s
            .login("alice", "alicepw", "READER")
            .or_fail("alice's READER login");
        (alice, reader)
    })
    .await
    .or_fail("registering alice");

    let rss_before = rss_kib();
    let (mut first, login_start) = watch(&synapse, &alice.user_id, "alicepw", false, None).await;
    let rss_idle = rss_kib();
    // Again with the stored login: no password login.
    let state = first._state.path().to_owned();
    let kept = tempfile::tempdir().or_fail("a state directory");
    for entry in std::fs::read_dir(&state)
        .or_fail("the state directory")
        .flatten()
    {
        std::fs::copy(entry.path(), kept.path().join(entry.file_name()))
            .or_fail("copying the state");
    }
    let (second, stored_start) =
        watch(&synapse, &alice.user_id, "alicepw", false, Some(kept)).await;
    drop(second);

    // The minimal reader: long-polls /sync as alice's READER device over a plain socket (it
    // holds no handle on the server, so that Synapse is stopped when main ends), reports each
    // message.
    let (tx, rx) = mpsc::channel::<(String, Instant)>();
    let port = synapse.port();
    std::thread::spawn(move || {
        let filter = "%7B%22presence%22%3A%7B%22types%22%3A%5B%22m.presence%22%5D%7D%2C%22room%22%3A%7B%22rooms%22%3A%5B%5D%7D%7D";
        let mut since: Option<String> = None;
        loop {
            let mut path = format!(
                "/_matrix/client/v3/sync?set_presence=offline&filter={filter}&timeout=30000"
            );
            if let Some(s) = &since {
                path.push_str(&format!("&since={s}"));
            }
            let Some(answer) = get(port, &path, &reader_token) else {
                return;
            };
            let now = Instant::now();
            since = answer["next_batch"].as_str().map(str::to_owned);
            for e in answer["presence"]["events"]
                .as_array()
                .into_iter()
                .flatten()
            {
                if let Some(m) = e["content"]["status_msg"].as_str() {
                    if tx.send((m.to_owned(), now)).is_err() {
                        return;
                    }
                }
            }
        }
    });

    let mut ours = Vec::new();
    let mut reader = Vec::new();
    for i in 0..toggles {
        let message = format!("t{i}");
        let presence = if i % 2 == 0 { "online" } else { "unavailable" };
        let (s, a, m) = (synapse.clone(), alice.clone(), message.clone());
        let sent = Instant::now();
        tokio::task::spawn_blocking(move || s.set_presence(&a, presence, Some(&m)))
            .await
            .or_fail("setting alice's presence")
            .or_fail("alice's presence");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(deadline, first.sub.recv())
                .await
                .or_fail("alice's status_changed within 10 s")
                .or_fail("the hub");
            if let EventKind::StatusChanged { to, .. } = &event.kind {
                if to.message.as_deref() == Some(message.as_str()) {
                    ours.push(sent.elapsed());
                    break;
                }
            }
        }
        loop {
            let (m, at) = rx
                .recv_timeout(Duration::from_secs(10))
                .or_fail("the minimal reader's answer");
            if m == message {
                reader.push(at - sent);
                break;
            }
        }
    }
    ours.sort();
    reader.sort();
    println!("presence change -> event, {toggles} toggles (ms from before the PUT):");
    println!(
        "  {:<28} p50 {:>6}  p90 {:>6}  p99 {:>6}  max {:>6}",
        "imstatus (hub subscriber)",
        ms(&ours, 50.0),
        ms(&ours, 90.0),
        ms(&ours, 99.0),
        ms(&ours, 100.0)
    );
    println!(
        "  {:<28} p50 {:>6}  p90 {:>6}  p99 {:>6}  max {:>6}",
        "minimal /sync reader",
        ms(&reader, 50.0),
        ms(&reader, 90.0),
        ms(&reader, 99.0),
        ms(&reader, 100.0)
    );
    println!(
        "start -> synced: {} ms with a password login, {} ms with the stored login",
        millis(login_start),
        millis(stored_start)
    );
    println!(
        "RSS: {rss_before} KiB before the source, {rss_idle} KiB with one idle source (+{} KiB)",
        rss_idle.saturating_sub(rss_before)
    );
    drop(first);

    if contacts > 0 {
        let s = synapse.clone();
        tokio::task::spawn_blocking(move || {
            let body = serde_json::json!({"preset": "public_chat"});
            let room = s
                .request(
                    "POST",
                    "/_matrix/client/v3/createRoom",
                    Some(&alice.access_token),
                    Some(&body),
                )
                .or_fail("creating a room")
                .body["room_id"]
                .as_str()
                .or_fail("the new room's id")
                .to_owned();
            for i in 0..contacts {
                let u = s
                    .register(&format!("c{i}"), "pw")
                    .or_fail("registering a contact");
                s.join(&u.access_token, &room).or_fail("joining the room");
                if i % 2 == 0 {
                    s.set_presence(&u, "online", Some("here"))
                        .or_fail("a contact's presence");
                }
            }
        })
        .await
        .or_fail("registering the contacts");
        let before = rss_kib();
        let (with_contacts, took) =
            watch(&synapse, "@alice:example.test", "alicepw", true, None).await;
        let after = rss_kib();
        let snap = with_contacts
            .hub
            .snapshot(&AccountId::new("alice"))
            .or_fail("alice's snapshot");
        let n = snap.snapshot().map_or(0, |s| s.contacts.len());
        println!(
            "{n} contacts: synced in {} ms; RSS +{} KiB ({:.1} KiB per contact, rough: allocator noise included)",
            millis(took),
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / n.max(1) as f64
        );
    }
}
