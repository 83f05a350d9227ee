//! Against a loopback fake homeserver (a tokio listener answering canned HTTP), for what a
//! real Synapse cannot be made to send: 429 with `retry_after_ms` on demand, malformed and
//! oversized `/sync` answers, a plaintext port where TLS is expected. It counts requests, so
//! "exactly one login" is checked on the wire.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use imstatus_core::{ErrorCode, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{is, source_error, Account, Watch};

const LOGIN: &str =
    r#"{"access_token":"syt_fake","device_id":"FAKEDEV","user_id":"@alice:example.test"}"#;

/// What the fake answers to one request.
enum Reply {
    /// Status and JSON body.
    Json(u16, &'static str),
    /// The same after a pause (a long-poll with nothing new).
    Later(Duration, u16, &'static str),
    /// Raw bytes: headers and body as given.
    Raw(Vec<u8>),
}

type Handler = dyn Fn(&str, usize) -> Reply + Send + Sync;

/// A fake homeserver on 127.0.0.1; `handler(path, n)` answers the `n`-th (0-based) request
/// to `path` (without the query).
struct Fake {
    url: String,
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Fake {
    async fn start(handler: impl Fn(&str, usize) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let s = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, handler.clone(), s.clone()));
            }
        });
        Fake { url, seen, task }
    }

    fn count(&self, path: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .count()
    }

    fn times(&self, path: &str) -> Vec<Instant> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| *t)
            .collect()
    }

    fn total(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn account(&self) -> Account {
        Account::password(&self.url, "@alice:example.test", "alicepw")
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads requests (head and `Content-Length` body) and answers each, then closes.
async fn serve(
    mut stream: TcpStream,
    handler: Arc<Handler>,
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        if buf.first() == Some(&0x16) {
            // A TLS ClientHello on a plaintext port: answer like an HTTP server would.
            let _ = stream
                .write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n")
                .await;
            return;
        }
        if buf.len() > 64 * 1024 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + 4 + length {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    let target = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let path = target.split('?').next().unwrap_or("").to_owned();
    let n = {
        let mut seen = seen.lock().unwrap();
        let n = seen.iter().filter(|(p, _)| *p == path).count();
        seen.push((path.clone(), Instant::now()));
        n
    };
    let response = match handler(&path, n) {
        Reply::Json(status, body) => json(status, body),
        Reply::Later(pause, status, body) => {
            tokio::time::sleep(pause).await;
            json(status, body)
        }
        Reply::Raw(bytes) => bytes,
    };
    let _ = stream.write_all(&response).await;
    let _ = stream.shutdown().await;
}

fn json(status: u16, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A homeserver that works: login, an empty initial sync, alice online, quiet long-polls.
fn working(path: &str, _: usize) -> Reply {
    match path {
        "/_matrix/client/v3/login" => Reply::Json(200, LOGIN),
        "/_matrix/client/v3/sync" => {
            Reply::Later(Duration::from_millis(300), 200, r#"{"next_batch":"s1"}"#)
        }
        p if p.starts_with("/_matrix/client/v3/presence/%40alice") => {
            Reply::Json(200, r#"{"presence":"online"}"#)
        }
        p if p.starts_with("/_matrix/client/v3/presence/") => Reply::Json(
            403,
            r#"{"errcode":"M_FORBIDDEN","error":"You are not allowed to see their presence."}"#,
        ),
        _ => Reply::Json(404, r#"{"errcode":"M_UNRECOGNIZED"}"#),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_one_login_request_and_auth_failed_once() {
    let fake = Fake::start(|_, _| {
        Reply::Json(
            403,
            r#"{"errcode":"M_FORBIDDEN","error":"Invalid username or password"}"#,
        )
    })
    .await;
    let acc = fake.account();
    let mut w = Watch::start(acc.source());
    let events = w.until("source_error", is("source_error")).await;
    let (code, _, _) = source_error(events.last().unwrap()).unwrap();
    assert_eq!(code, ErrorCode::AuthFailed);
    assert!(w.quiet_for(Duration::from_secs(3)).await.is_empty());
    assert_eq!(fake.total(), 1, "exactly one request, the login");
    assert_eq!(fake.count("/_matrix/client/v3/login"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_login_waits_for_retry_after_ms() {
    let fake = Fake::start(|path, n| match (path, n) {
        ("/_matrix/client/v3/login", 0) => Reply::Json(
            429,
            r#"{"errcode":"M_LIMIT_EXCEEDED","error":"Too Many Requests","retry_after_ms":2500}"#,
        ),
        _ => working(path, n),
    })
    .await;
    let acc = fake.account();
    let mut w = Watch::start(acc.source());
    let events = w.until("source_error", is("source_error")).await;
    let (code, detail, _) = source_error(events.last().unwrap()).unwrap();
    assert_eq!(code, ErrorCode::AccessDenied);
    assert!(
        detail.contains("rate-limited") && detail.contains("2500 ms"),
        "{detail}"
    );
    w.until("signed_in", is("signed_in")).await;
    let logins = fake.times("/_matrix/client/v3/login");
    assert_eq!(logins.len(), 2);
    let waited = logins[1] - logins[0];
    // The backoff alone would have waited 0.5-1 s.
    assert!(waited >= Duration::from_millis(2500), "{waited:?}");
    assert!(waited < Duration::from_millis(4000), "{waited:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_sync_answers_are_protocol_errors_and_retried() {
    let fake = Fake::start(|path, n| match (path, n) {
        ("/_matrix/client/v3/sync", 0) => Reply::Json(200, "{\"next_batch\": [unquoted"),
        ("/_matrix/client/v3/sync", 1) => Reply::Json(200, r#"{"rooms":{"join":"not an object"}}"#),
        _ => working(path, n),
    })
    .await;
    let acc = fake.account();
    let mut w = Watch::start(acc.source());
    let events = w.until("source_error", is("source_error")).await;
    let (code, detail, _) = source_error(events.last().unwrap()).unwrap();
    assert_eq!(code, ErrorCode::ProtocolError);
    assert!(detail.starts_with("not a /sync answer"), "{detail}");
    // Retried with the backoff; the third answer is good.
    w.until("signed_in", is("signed_in")).await;
    assert!(fake.count("/_matrix/client/v3/sync") >= 3);
    assert_eq!(
        fake.count("/_matrix/client/v3/login"),
        1,
        "the token is kept"
    );
    assert_eq!(w.snapshot().session, Session::SignedIn);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_sync_answers_are_refused_before_they_are_read() {
    let fake = Fake::start(|path, n| match (path, n) {
        // Declared too large: refused on the header.
        ("/_matrix/client/v3/sync", 0) => Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 104857600\r\nConnection: close\r\n\r\n{\"next_batch\":"
                .to_vec(),
        ),
        // Chunked, no length: read up to the cap (8 MiB), then refused.
        ("/_matrix/client/v3/sync", 1) => {
            let mut raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
            let piece = vec![b' '; 1024 * 1024];
            for _ in 0..9 {
                raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                raw.extend_from_slice(&piece);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n\r\n");
            Reply::Raw(raw)
        }
        _ => working(path, n),
    })
    .await;
    let acc = fake.account();
    let mut w = Watch::start(acc.source());
    let events = w.until("source_error", is("source_error")).await;
    let (code, detail, _) = source_error(events.last().unwrap()).unwrap();
    assert_eq!(code, ErrorCode::ProtocolError);
    assert!(
        detail.ends_with("the answer is larger than 8192 KiB; not read"),
        "{detail}"
    );
    // The chunked one fails the same way (same detail: the tracker reports it once), then a
    // good answer.
    w.until("signed_in", is("signed_in")).await;
    assert!(fake.count("/_matrix/client/v3/sync") >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_plaintext_port_is_tls_failed() {
    let fake = Fake::start(|_, _| Reply::Json(400, "{}")).await;
    let acc = Account::password(
        &fake.url.replace("http://", "https://"),
        "@alice:example.test",
        "pw",
    );
    let mut w = Watch::start(acc.source());
    let events = w.until("source_error", is("source_error")).await;
    let (code, detail, _) = source_error(events.last().unwrap()).unwrap();
    assert_eq!(code, ErrorCode::TlsFailed, "{detail}");
    assert!(detail.contains("TLS handshake failed"), "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_gets_one_new_login_and_then_auth_failed() {
    let fake = Fake::start(|path, n| match path {
        "/_matrix/client/v3/sync" => Reply::Json(
            401,
            r#"{"errcode":"M_UNKNOWN_TOKEN","error":"Invalid access token passed.","soft_logout":false}"#,
        ),
        _ => working(path, n),
    })
    .await;
    let acc = fake.account();
    // A login kept from an earlier run.
    imstatus_matrix::StoredLogin {
        homeserver: fake.url.clone(),
        user_id: "@alice:example.test".into(),
        device_id: "FAKEDEV".into(),
        access_token: "syt_old".into(),
    }
    .save(&acc.config.state_file(&crate::common::alice()).unwrap())
    .unwrap();
    let mut w = Watch::start(acc.source());
    let events = w.until("source_error", is("source_error")).await;
    let (code, detail, _) = source_error(events.last().unwrap()).unwrap();
    assert_eq!(code, ErrorCode::AuthFailed);
    assert!(detail.ends_with("right after a new login"), "{detail}");
    assert!(w.quiet_for(Duration::from_secs(2)).await.is_empty());
    // The stored token, one new login, its token: refused too, and nothing more.
    assert_eq!(fake.count("/_matrix/client/v3/sync"), 2);
    assert_eq!(fake.count("/_matrix/client/v3/login"), 1);
    assert_eq!(fake.total(), 3);
}
