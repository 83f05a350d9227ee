//! No secret in any log, at any level, from any crate: the XMPP source logs in to a real
//! Prosody (SCRAM-SHA-1 over loopback plaintext and over STARTTLS) and to a loopback server that
//! offers only PLAIN (Prosody always offers SCRAM too, which imstatus prefers), while a tracing
//! subscriber at TRACE records everything — tokio-xmpp's byte-level `log` records included,
//! through the `log` bridge that `tracing_subscriber`'s `init` installs, as in the `imstatus`
//! binary with `RUST_LOG=trace`. Its own binary: the subscriber is process-wide.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use imstatus_config::Secret;
use imstatus_core::{AccountId, EventKind};
use imstatus_hub::Hub;
use imstatus_testkit::{Prosody, ProsodyOptions};
use imstatus_xmpp::XmppSource;
use imstatus_xmpp::{TlsMode, Visibility, XmppConfig};
use tempfile::NamedTempFile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STEP: Duration = Duration::from_secs(15);
const PASSWORD: &str = "alicepw";

/// Everything logged, process-wide.
fn log() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || Writer(sink.clone()))
            .try_init()
            .expect("the only subscriber");
        buffer
    })
}

struct Writer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged() -> String {
    String::from_utf8_lossy(&log().lock().unwrap()).into_owned()
}

/// Decodes standard base64; `None` when `token` is not base64.
fn unb64(token: &str) -> Option<Vec<u8>> {
    let digits: Option<Vec<u8>> = token
        .trim_end_matches('=')
        .bytes()
        .map(|c| match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        })
        .collect();
    let digits = digits?;
    let mut out = Vec::new();
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    Some(out)
}

/// Panics if `log` holds the password, its PLAIN form, or any SCRAM client-final (proof) or
/// server-final (signature) message, in the clear or base64-encoded anywhere.
fn assert_no_secret(log: &str) {
    assert!(!log.contains(PASSWORD), "the password is in the log");
    let plain = format!("\0alice\0{PASSWORD}");
    for token in log.split(|c: char| !(c.is_ascii_alphanumeric() || "+/=".contains(c))) {
        if token.len() < 8 {
            continue;
        }
        let Some(bytes) = unb64(token) else { continue };
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(PASSWORD) && !text.contains(&plain),
            "a base64 form of the password is in the log: {token}"
        );
        assert!(
            !(text.starts_with("c=") && text.contains(",p=")),
            "a SCRAM proof is in the log: {token}"
        );
        assert!(
            !text.starts_with("v="),
            "a SCRAM server signature is in the log: {token}"
        );
    }
}

async fn watch_until_synced(config: XmppConfig) {
    let source = XmppSource::new(&config).with_backoff_seed(3);
    let hub = Hub::builder()
        .with_source(AccountId::new("alice"), Arc::new(source))
        .start();
    let mut sub = hub.subscribe();
    tokio::time::timeout(STEP, async {
        loop {
            let event = sub.recv().await.expect("hub open");
            match &event.kind {
                EventKind::StatusChanged { .. } => return,
                EventKind::SourceError { code, detail, .. } => panic!("{code}: {detail}"),
                _ => {}
            }
        }
    })
    .await
    .expect("synced in time");
}

fn config(
    prosody: &Prosody,
    password: &NamedTempFile,
    tls: TlsMode,
    ca: Option<&std::path::Path>,
) -> XmppConfig {
    XmppConfig {
        server: Some(format!("127.0.0.1:{}", prosody.port())),
        tls,
        ca_file: ca.map(ToOwned::to_owned),
        visibility: Visibility::Visible,
        ..XmppConfig::new(
            "alice@example.test",
            Secret::File(password.path().to_owned()),
        )
    }
}

fn password_file() -> NamedTempFile {
    let mut file = NamedTempFile::new().unwrap();
    writeln!(file, "{PASSWORD}").unwrap();
    file
}

/// Reads from `stream` into `seen` until `marker` has arrived; returns what came before it.
async fn upto(stream: &mut TcpStream, seen: &mut String, marker: &str) -> String {
    tokio::time::timeout(STEP, async {
        loop {
            if let Some(at) = seen.find(marker) {
                return seen.drain(..at + marker.len()).collect();
            }
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the client hung up");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("the client spoke in time")
}

/// A loopback server that offers only PLAIN and lets alice in; returns its port and the
/// `<auth/>` it received.
async fn plain_only_server() -> (u16, tokio::sync::oneshot::Receiver<String>) {
    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' id='s' from='example.test' version='1.0'>";
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut seen = String::new();
        upto(&mut s, &mut seen, "<stream:stream").await;
        upto(&mut s, &mut seen, ">").await;
        s.write_all(HEADER.as_bytes()).await.unwrap();
        s.write_all(
            b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
            <mechanism>PLAIN</mechanism></mechanisms></stream:features>",
        )
        .await
        .unwrap();
        let auth = upto(&mut s, &mut seen, "</auth>").await;
        let _ = tx.send(auth);
        s.write_all(b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            .await
            .unwrap();
        upto(&mut s, &mut seen, "<stream:stream").await;
        upto(&mut s, &mut seen, ">").await;
        s.write_all(HEADER.as_bytes()).await.unwrap();
        s.write_all(
            b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>",
        )
        .await
        .unwrap();
        upto(&mut s, &mut seen, "</iq>").await;
        s.write_all(
            b"<iq type='result' id='imstatus-bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
            <jid>alice@example.test/imstatus-fake</jid></bind></iq>",
        )
        .await
        .unwrap();
        upto(&mut s, &mut seen, "</iq>").await;
        s.write_all(b"<iq type='result' id='imstatus-roster'/>")
            .await
            .unwrap();
        upto(&mut s, &mut seen, "</presence>").await;
        upto(&mut s, &mut seen, "</iq>").await;
        s.write_all(b"<iq type='result' id='imstatus-items-0'/>")
            .await
            .unwrap();
        let mut rest = [0u8; 1024];
        while matches!(s.read(&mut rest).await, Ok(n) if n > 0) {}
    });
    (port, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_a_trace_log_with_plain_or_scram() {
    log();
    // PLAIN, to a loopback server that offers nothing else.
    let pw = password_file();
    let (port, auth) = plain_only_server().await;
    watch_until_synced(XmppConfig {
        server: Some(format!("127.0.0.1:{port}")),
        tls: TlsMode::InsecurePlaintext,
        visibility: Visibility::Visible,
        ..XmppConfig::new("alice@example.test", Secret::File(pw.path().to_owned()))
    })
    .await;
    let auth = auth.await.expect("an <auth/>");
    assert!(
        auth.contains("mechanism='PLAIN'>AGFsaWNlAGFsaWNlcHc=</auth>"),
        "PLAIN was used (and the password did go to the server): {auth}"
    );
    let plain_only = imstatus_testkit::wait_until("our own debug event", STEP, || {
        let log = logged();
        log.contains("XMPP source synced").then_some(log)
    })
    .unwrap();
    // The capture works: our own debug events (logged just after the sync) and tokio-xmpp's
    // byte traces are in it.
    assert!(plain_only.contains("SEND"), "no tokio-xmpp traces captured");
    assert!(
        plain_only.contains("<mechanism>PLAIN</mechanism>"),
        "features not logged"
    );
    assert_no_secret(&plain_only);

    // SCRAM-SHA-1 (preferred to PLAIN), over loopback plaintext.
    let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
    watch_until_synced(config(&prosody, &pw, TlsMode::InsecurePlaintext, None)).await;
    let plain = logged();
    assert!(
        plain[plain_only.len()..].contains("<mechanism>SCRAM-SHA-1</mechanism>"),
        "Prosody offered SCRAM"
    );
    assert_no_secret(&plain);

    // SCRAM-SHA-1, over STARTTLS (Prosody with hashed passwords).
    let prosody = Prosody::start(ProsodyOptions::tls()).unwrap();
    watch_until_synced(config(&prosody, &pw, TlsMode::Required, prosody.ca_cert())).await;
    let all = logged();
    let scram = &all[plain.len()..];
    assert!(
        scram.contains("<mechanism>SCRAM-SHA-1</mechanism>"),
        "the server offered SCRAM: {}",
        &scram[..scram.len().min(4000)]
    );
    assert_no_secret(&all);
    eprintln!("{} bytes of log checked", all.len());
}

#[test]
fn the_checker_finds_each_kind_of_secret() {
    let found = |log: &str| std::panic::catch_unwind(|| assert_no_secret(log)).is_err();
    assert!(found(
        "SEND <auth mechanism='PLAIN'>AGFsaWNlAGFsaWNlcHc=</auth>"
    ));
    assert!(found("password alicepw"));
    // c=biws,r=abc,p=xyz and v=xyz, base64.
    assert!(found("<response>Yz1iaXdzLHI9YWJjLHA9eHl6</response>"));
    assert!(found("<success>dj14eXo=</success>"));
    assert!(!found(
        "RECV <presence from='bob@example.test/laptop'/> SEND <iq id='imstatus-roster'/>"
    ));
}
