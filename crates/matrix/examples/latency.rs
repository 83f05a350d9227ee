//! Presence-change latency of the Matrix source against a minimal `/sync` reader, in the same
//! run against the same real Synapse, plus the source's start-up times and memory.
//!
//! ```text
//! cargo run --release -p imstatus-matrix --example latency -- [TOGGLES] [CONTACTS]
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

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_config::Secret;
use imstatus_core::{AccountId, EventKind};
use imstatus_hub::Hub;
use imstatus_matrix::{Credentials, MatrixConfig, MatrixSource, UserId};
use imstatus_testkit::Synapse;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
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
    let mut secret = tempfile::NamedTempFile::new().unwrap();
    writeln!(secret, "{password}").unwrap();
    let state = state.unwrap_or_else(|| tempfile::tempdir().unwrap());
    let mut config = MatrixConfig::new(
        synapse.url(),
        UserId::parse(user).unwrap(),
        Credentials::Password(Secret::File(secret.path().to_owned())),
    );
    config.contacts = contacts;
    config.state_dir = Some(state.path().to_owned());
    let account = AccountId::new("alice");
    let source = Arc::new(MatrixSource::new(&config, &account).unwrap());
    let started = Instant::now();
    let hub = Hub::builder().with_source(account.clone(), source).start();
    let sub = hub.subscribe();
    assert!(
        hub.wait_settled(&[account], Duration::from_secs(30)).await,
        "synced"
    );
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
    let mut args = std::env::args().skip(1);
    let toggles: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let contacts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(200);
    let synapse = Arc::new(
        tokio::task::spawn_blocking(|| Synapse::start().unwrap())
            .await
            .unwrap(),
    );
    let s = synapse.clone();
    let (alice, reader_token) = tokio::task::spawn_blocking(move || {
        let alice = s.register("alice", "alicepw").unwrap();
        let reader = s.login("alice", "alicepw", "READER").unwrap();
        (alice, reader)
    })
    .await
    .unwrap();

    let rss_before = rss_kib();
    let (mut first, login_start) = watch(&synapse, &alice.user_id, "alicepw", false, None).await;
    let rss_idle = rss_kib();
    // Again with the stored login: no password login.
    let state = first._state.path().to_owned();
    let kept = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(&state).unwrap().flatten() {
        std::fs::copy(entry.path(), kept.path().join(entry.file_name())).unwrap();
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
        tokio::task::spawn_blocking(move || s.set_presence(&a, presence, Some(&m)).unwrap())
            .await
            .unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let event = tokio::time::timeout_at(deadline, first.sub.recv())
                .await
                .unwrap()
                .unwrap();
            if let EventKind::StatusChanged { to, .. } = &event.kind {
                if to.message.as_deref() == Some(message.as_str()) {
                    ours.push(sent.elapsed());
                    break;
                }
            }
        }
        loop {
            let (m, at) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
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
        ms(percentile(&ours, 0.5)),
        ms(percentile(&ours, 0.9)),
        ms(percentile(&ours, 0.99)),
        ms(percentile(&ours, 1.0))
    );
    println!(
        "  {:<28} p50 {:>6}  p90 {:>6}  p99 {:>6}  max {:>6}",
        "minimal /sync reader",
        ms(percentile(&reader, 0.5)),
        ms(percentile(&reader, 0.9)),
        ms(percentile(&reader, 0.99)),
        ms(percentile(&reader, 1.0))
    );
    println!(
        "start -> synced: {} ms with a password login, {} ms with the stored login",
        ms(login_start),
        ms(stored_start)
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
                .unwrap()
                .body["room_id"]
                .as_str()
                .unwrap()
                .to_owned();
            for i in 0..contacts {
                let u = s.register(&format!("c{i}"), "pw").unwrap();
                s.join(&u.access_token, &room).unwrap();
                if i % 2 == 0 {
                    s.set_presence(&u, "online", Some("here")).unwrap();
                }
            }
        })
        .await
        .unwrap();
        let before = rss_kib();
        let (with_contacts, took) =
            watch(&synapse, "@alice:example.test", "alicepw", true, None).await;
        let after = rss_kib();
        let snap = with_contacts
            .hub
            .snapshot(&AccountId::new("alice"))
            .unwrap();
        let n = snap.snapshot().map_or(0, |s| s.contacts.len());
        println!(
            "{n} contacts: synced in {} ms; RSS +{} KiB ({:.1} KiB per contact, rough: allocator noise included)",
            ms(took),
            after.saturating_sub(before),
            after.saturating_sub(before) as f64 / n.max(1) as f64
        );
    }
}
