//! A scripted fake XMPP server on a real loopback socket: garbage, malformed stanzas and
//! silence, which a real Prosody never sends, and hostile servers (huge, deep or endless
//! stanzas, SCRAM iteration bombs, ANONYMOUS-only logins, spoofed replies). The source must
//! report them with the right code, never panic or abort, keep memory bounded, keep
//! processing what follows, and reconnect later.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use imstatus_config::Secret;
use imstatus_core::{AccountId, Availability, ErrorCode, Event, EventKind, Session, Snapshot};
use imstatus_hub::{Hub, Subscription};
use imstatus_xmpp::XmppSource;
use imstatus_xmpp::{TlsMode, Visibility, XmppConfig};
use tempfile::NamedTempFile;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const STEP: Duration = Duration::from_secs(10);

const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' id='fake' from='example.test' version='1.0'>";
const SASL_FEATURES: &str =
    "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
    <mechanism>PLAIN</mechanism></mechanisms></stream:features>";
/// The census result: the end of the initial presences.
const BARRIER: &str = "<iq type='result' id='imstatus-items-0'/>";
const BIND_FEATURES: &str =
    "<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></stream:features>";

/// One side of a fake connection: reads until a marker, writes what the script says.
struct Peer {
    stream: TcpStream,
    received: String,
}

impl Peer {
    /// Reads until `marker` has arrived (consuming everything up to it).
    async fn expect(&mut self, marker: &str) {
        self.take(marker).await;
    }

    /// Reads until `marker` has arrived and returns everything up to and including it.
    async fn take(&mut self, marker: &str) -> String {
        loop {
            if let Some(at) = self.received.find(marker) {
                return self.received.drain(..at + marker.len()).collect();
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(STEP, self.stream.read(&mut buf))
                .await
                .expect("client spoke in time")
                .unwrap_or(0);
            if n == 0 {
                // The client hung up (a test ending, or what a test provokes): this script is
                // over. Not a panic, whose backtrace would blur the memory measurements.
                std::future::pending::<()>().await;
            }
            self.received.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Sends `text`; a client that hung up is ignored (the next read ends the script).
    async fn send(&mut self, text: &str) {
        let _ = self.stream.write_all(text.as_bytes()).await;
    }

    /// The plaintext login up to the bound resource; returns what the client sent after it.
    async fn bind(&mut self) {
        self.expect("<stream:stream").await;
        self.expect(">").await;
        self.send(HEADER).await;
        self.send(SASL_FEATURES).await;
        self.expect("</auth>").await;
        self.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            .await;
        self.expect("<stream:stream").await;
        self.expect(">").await;
        self.send(HEADER).await;
        self.send(BIND_FEATURES).await;
        self.expect("</iq>").await;
        self.send(
            "<iq type='result' id='imstatus-bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <jid>alice@example.test/imstatus-fake</jid></bind></iq>",
        )
        .await;
    }

    /// The plaintext login up to the bound resource.
    async fn login(&mut self) {
        self.expect("<stream:stream").await;
        self.expect(">").await;
        self.send(HEADER).await;
        self.send(SASL_FEATURES).await;
        self.expect("</auth>").await;
        self.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
            .await;
        self.expect("<stream:stream").await;
        self.expect(">").await;
        self.send(HEADER).await;
        self.send(BIND_FEATURES).await;
        self.expect("</iq>").await;
        self.send(
            "<iq type='result' id='imstatus-bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <jid>alice@example.test/imstatus-fake</jid></bind></iq>",
        )
        .await;
        // The roster request (visibility = "visible": no service discovery).
        self.expect("</iq>").await;
        self.send("<iq type='result' id='imstatus-roster'/>").await;
        // The initial presence and the census request.
        self.expect("</presence>").await;
        self.expect("</iq>").await;
    }
}

/// A fake server that runs `script` for every connection and counts connections.
async fn serve<F, Fut>(script: F) -> (u16, Arc<AtomicUsize>)
where
    F: Fn(Peer, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let counter = count.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(script(
                Peer {
                    stream,
                    received: String::new(),
                },
                n,
            ));
        }
    });
    (port, count)
}

struct Watch {
    hub: Hub,
    sub: Subscription,
    /// The state as the events so far tell it (the hub's own may have moved on).
    state: Snapshot,
    _password: NamedTempFile,
}

fn watch(port: u16, login_timeout: Option<Duration>) -> Watch {
    watch_with(port, login_timeout, Visibility::Visible)
}

fn watch_with(port: u16, login_timeout: Option<Duration>, visibility: Visibility) -> Watch {
    watch_config(port, login_timeout, |c| c.visibility = visibility)
}

fn watch_config(
    port: u16,
    login_timeout: Option<Duration>,
    adjust: impl FnOnce(&mut XmppConfig),
) -> Watch {
    let mut file = NamedTempFile::new().unwrap();
    writeln!(file, "alicepw").unwrap();
    let mut config = XmppConfig {
        server: Some(format!("127.0.0.1:{port}")),
        tls: TlsMode::InsecurePlaintext,
        visibility: Visibility::Visible,
        ..XmppConfig::new("alice@example.test", Secret::File(file.path().to_owned()))
    };
    adjust(&mut config);
    let mut source = XmppSource::new(&config).with_backoff_seed(1);
    if let Some(t) = login_timeout {
        source = source.with_login_timeout(t);
    }
    let hub = Hub::builder()
        .with_source(AccountId::new("alice"), Arc::new(source))
        .start();
    let sub = hub.subscribe();
    Watch {
        hub,
        sub,
        state: Snapshot::unknown(),
        _password: file,
    }
}

impl Watch {
    async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Vec<Arc<Event>> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            match tokio::time::timeout_at(deadline, self.sub.recv()).await {
                Ok(Some(event)) => {
                    self.state.apply(&event.kind, event.time);
                    let done = pred(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                Ok(None) => panic!("hub closed while waiting for {what}; seen {seen:#?}"),
                Err(_) => panic!("no {what} within {STEP:?}; seen {seen:#?}"),
            }
        }
    }
}

fn source_error(e: &Event) -> Option<(ErrorCode, &str)> {
    match &e.kind {
        EventKind::SourceError { code, detail, .. } => Some((*code, detail.as_str())),
        _ => None,
    }
}

async fn wait_connections(count: &AtomicUsize, n: usize) {
    tokio::time::timeout(STEP, async {
        while count.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the source reconnected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_after_the_stream_header_is_a_protocol_error_and_the_source_reconnects() {
    let (port, count) = serve(|mut peer, _| async move {
        peer.expect("<stream:stream").await;
        peer.expect(">").await;
        peer.send(HEADER).await;
        peer.send("\u{0}\u{ff}<<<this is not XML>>>").await;
        // Keep the socket open: the source must notice by itself.
        let _ = peer.stream.read(&mut [0u8; 1024]).await;
    })
    .await;
    let mut w = watch(port, None);
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::ProtocolError, "{detail}");
    wait_connections(&count, 2).await;
    assert_eq!(
        w.hub
            .snapshot(&AccountId::new("alice"))
            .unwrap()
            .snapshot()
            .unwrap()
            .session,
        Session::Unknown
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_stanzas_after_login_are_anomalies_and_later_ones_still_count() {
    let (port, count) = serve(|mut peer, n| async move {
        peer.login().await;
        if n > 0 {
            let _ = peer.stream.read(&mut [0u8; 1024]).await;
            return;
        }
        let huge = "x".repeat(100_000);
        let script = [
            // Unknown <show/>, no from, a bad priority, a huge status: each an anomaly.
            "<presence from='alice@example.test/a'><show>sleeping</show></presence>".to_owned(),
            "<presence><show>away</show></presence>".to_owned(),
            "<presence from='alice@example.test/b'><priority>999</priority></presence>".to_owned(),
            format!("<presence from='alice@example.test/big'><status>{huge}</status></presence>"),
            // A good one, then the census result (the barrier).
            "<presence from='alice@example.test/desk'><show>dnd</show><priority>3</priority></presence>"
                .to_owned(),
            BARRIER.to_owned(),
            // After sync: a valid change.
            "<presence from='alice@example.test/desk'><show>xa</show><priority>3</priority></presence>"
                .to_owned(),
        ];
        for part in script {
            peer.send(&part).await;
        }
        // Now garbage: the stream is lost.
        peer.send("</presence></presence>&&&").await;
        let _ = peer.stream.read(&mut [0u8; 1024]).await;
    })
    .await;
    let mut w = watch(port, None);
    let events = w
        .until("extended_away", |e| {
            matches!(&e.kind, EventKind::StatusChanged { to, .. } if to.availability == Availability::ExtendedAway)
        })
        .await;
    let anomalies: Vec<&str> = events
        .iter()
        .filter_map(|e| source_error(e))
        .map(|(code, detail)| {
            assert_eq!(code, ErrorCode::ProtocolError);
            detail
        })
        .collect();
    assert_eq!(anomalies.len(), 4, "{anomalies:#?}");
    assert!(
        anomalies[0].contains("alice@example.test/a"),
        "{anomalies:#?}"
    );
    assert!(anomalies[1].contains("without `from`"), "{anomalies:#?}");
    assert!(anomalies[3].contains("cut to 1024"), "{anomalies:#?}");
    let snap = &w.state;
    assert_eq!(snap.session, Session::SignedIn);
    let listed: Vec<&str> = snap.resources.iter().map(|r| r.resource.as_str()).collect();
    assert_eq!(listed, ["big", "desk"]);
    let big = &snap.resources[0];
    assert_eq!(
        big.message.as_deref().map(|m| m.chars().count()),
        Some(1024)
    );

    let events = w
        .until("source_error for the garbage", |e| {
            matches!(
                e.kind,
                EventKind::SourceError {
                    session_unknown: true,
                    ..
                }
            )
        })
        .await;
    let (code, detail) = source_error(&events[events.len() - 1]).unwrap();
    assert!(
        matches!(code, ErrorCode::ProtocolError | ErrorCode::Disconnected),
        "{code}: {detail}"
    );
    wait_connections(&count, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_a_login_timeout() {
    let (port, count) = serve(|mut peer, _| async move {
        let _ = peer.stream.read(&mut [0u8; 1024]).await;
        // Say nothing; hold the connection until the client gives up.
        let _ = peer.stream.read(&mut [0u8; 1024]).await;
    })
    .await;
    let mut w = watch(port, Some(Duration::from_millis(300)));
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::Timeout, "{detail}");
    assert!(detail.contains("stuck at: stream"), "{detail}");
    wait_connections(&count, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_shutdown_stream_error_is_server_shutdown() {
    let (port, _count) = serve(|mut peer, n| async move {
        peer.login().await;
        if n > 0 {
            let _ = peer.stream.read(&mut [0u8; 1024]).await;
            return;
        }
        peer.send(BARRIER).await;
        peer.send(
            "<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             </stream:error></stream:stream>",
        )
        .await;
        let _ = peer.stream.read(&mut [0u8; 1024]).await;
    })
    .await;
    let mut w = watch(port, None);
    let events = w
        .until("source_error", |e| {
            matches!(
                e.kind,
                EventKind::SourceError {
                    session_unknown: true,
                    ..
                }
            )
        })
        .await;
    let (code, detail) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::ServerShutdown, "{detail}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_reconnect_only_real_differences_are_reported() {
    let (port, _count) = serve(|mut peer, n| async move {
        peer.login().await;
        peer.send("<presence from='alice@example.test/desk'><show>dnd</show><status>busy</status></presence>")
            .await;
        peer.send(BARRIER).await;
        if n == 0 {
            // The server closes the stream cleanly: the source lost sight of the account.
            peer.send("</stream:stream>").await;
        }
        let _ = peer.stream.read(&mut [0u8; 1024]).await;
    })
    .await;
    let mut w = watch(port, None);
    let events = w
        .until("the first resource_changed", |e| {
            e.kind.name() == "resource_changed"
        })
        .await;
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        names,
        [
            "snapshot",
            "signed_in",
            "status_changed",
            "resource_changed"
        ]
    );
    let events = w
        .until("signed_in again", |e| e.kind.name() == "signed_in")
        .await;
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["source_error", "signed_in"], "{events:#?}");
    let (code, _) = source_error(&events[0]).unwrap();
    assert_eq!(code, ErrorCode::Disconnected);
    assert!(matches!(
        events[0].kind,
        EventKind::SourceError {
            session_unknown: true,
            ..
        }
    ));
    // Same resource, same status: nothing else to say.
    assert!(w.sub.try_recv().is_none());
    assert_eq!(w.state.availability, Availability::Busy);
}

/// A disco#info result with these features.
fn disco_result(features: &[&str]) -> String {
    let features: String = features
        .iter()
        .map(|f| format!("<feature var='{f}'/>"))
        .collect();
    format!(
        "<iq type='result' id='imstatus-disco' from='example.test'>\
         <query xmlns='http://jabber.org/protocol/disco#info'>\
         <identity category='server' type='im'/>{features}</query></iq>"
    )
}

/// A fake server offering `features`, answering the requests whose id contains a key of
/// `errors` with that error condition and the others with a result; it sends what the client
/// sent after binding, up to its initial presence, into the returned channel.
async fn hiding_server(
    features: &'static [&'static str],
    errors: &'static [(&'static str, &'static str)],
) -> (u16, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (port, _count) = serve(move |mut peer, n| {
        let tx = tx.clone();
        async move {
            if n > 0 {
                let _ = peer.stream.read(&mut [0u8; 1024]).await;
                return;
            }
            peer.bind().await;
            // disco#info and the roster, in one flight.
            let mut transcript = peer.take("</iq>").await;
            transcript.push_str(&peer.take("</iq>").await);
            peer.send(&disco_result(features)).await;
            peer.send("<iq type='result' id='imstatus-roster'/>").await;
            // Requests until the initial presence.
            loop {
                let next = peer.take(">").await;
                transcript.push_str(&next);
                if next.trim_start().starts_with("<presence") && !next.contains("type=") {
                    break;
                }
                let Some(id) = next
                    .split("id='")
                    .nth(1)
                    .and_then(|rest| rest.split('\'').next())
                    .map(str::to_owned)
                else {
                    continue;
                };
                transcript.push_str(&peer.take("</iq>").await);
                match errors.iter().find(|(key, _)| id.contains(key)) {
                    Some((_, condition)) => {
                        peer.send(&format!(
                            "<iq type='error' id='{id}'><error type='cancel'>\
                             <{condition} xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                        ))
                        .await
                    }
                    None => peer.send(&format!("<iq type='result' id='{id}'/>")).await,
                }
            }
            let _ = tx.send(transcript);
            peer.expect("</iq>").await;
            peer.send(BARRIER).await;
            let _ = peer.stream.read(&mut [0u8; 1024]).await;
        }
    })
    .await;
    (port, rx)
}

async fn transcript(rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(STEP, rx.recv())
        .await
        .expect("the client went online")
        .expect("a transcript")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_xep_0186_gets_the_invisible_command_before_the_initial_presence() {
    let (port, mut rx) = hiding_server(&["jabber:iq:privacy", "urn:xmpp:invisible:0"], &[]).await;
    let mut w = watch_with(port, None, Visibility::Auto);
    let events = w
        .until("the first status_changed", |e| {
            e.kind.name() == "status_changed"
        })
        .await;
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(
        names,
        ["snapshot", "signed_out", "status_changed"],
        "no warning"
    );
    let sent = transcript(&mut rx).await;
    let invisible = sent
        .find("<invisible xmlns='urn:xmpp:invisible:0' probe='true'>")
        .unwrap_or_else(|| panic!("the invisible command: {sent}"));
    let presence = sent.rfind("<presence").expect("the initial presence");
    assert!(invisible < presence, "{sent}");
    assert!(
        !sent.contains("jabber:iq:privacy"),
        "XEP-0186 is enough: {sent}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_invisible_command_falls_back_to_the_privacy_list() {
    let (port, mut rx) = hiding_server(
        &["urn:xmpp:invisible:0", "jabber:iq:privacy"],
        &[("invisible", "feature-not-implemented")],
    )
    .await;
    let mut w = watch_with(port, None, Visibility::Invisible);
    let events = w
        .until("the first status_changed", |e| {
            e.kind.name() == "status_changed"
        })
        .await;
    assert!(
        events.iter().all(|e| source_error(e).is_none()),
        "{events:#?}"
    );
    let sent = transcript(&mut rx).await;
    let list = sent
        .find("<list name='imstatus-invisible'>")
        .expect("the list");
    let active = sent
        .find("<active name='imstatus-invisible'>")
        .expect("activated");
    let presence = sent.rfind("<presence").expect("the initial presence");
    assert!(list < active && active < presence, "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_privacy_list_means_visible_with_a_warning_under_auto() {
    let (port, _rx) =
        hiding_server(&["jabber:iq:privacy"], &[("privacy-list", "not-allowed")]).await;
    let mut w = watch_with(port, None, Visibility::Auto);
    let events = w
        .until("the first status_changed", |e| {
            e.kind.name() == "status_changed"
        })
        .await;
    let warnings: Vec<(ErrorCode, &str)> = events.iter().filter_map(|e| source_error(e)).collect();
    assert_eq!(warnings.len(), 1, "{events:#?}");
    assert_eq!(warnings[0].0, ErrorCode::Unsupported);
    assert!(
        warnings[0].1.contains(
            "the server refused the XEP-0016 privacy list (jabber:iq:privacy) (not-allowed)"
        ),
        "{}",
        warnings[0].1
    );
    assert_eq!(w.state.session, Session::SignedOut);
}

// ---------------------------------------------------------------- hostile servers

/// Features offering these SASL mechanisms.
fn sasl_features(mechanisms: &[&str]) -> String {
    let list: String = mechanisms
        .iter()
        .map(|m| format!("<mechanism>{m}</mechanism>"))
        .collect();
    format!(
        "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{list}</mechanisms></stream:features>"
    )
}

/// Standard base64, for the SASL payloads the fake server reads and writes.
fn b64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn unb64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        _ => 63,
    };
    let digits: Vec<u8> = text
        .bytes()
        .filter(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
        .map(value)
        .collect();
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
    out
}

/// The text content of the first `<tag …>…</tag>` in `xml`.
fn content<'a>(xml: &'a str, tag: &str) -> &'a str {
    let start = xml.find(&format!("<{tag}")).expect("the element");
    let rest = &xml[start..];
    let open_end = rest.find('>').expect("its start tag") + 1;
    let close = rest.find(&format!("</{tag}>")).unwrap_or(open_end);
    &rest[open_end..close]
}

impl Peer {
    /// Opens the stream offering `mechanisms`; returns what the client sent up to its
    /// `</auth>`, or `None` when it closed the connection instead.
    async fn offer(&mut self, mechanisms: &[&str]) -> Option<String> {
        self.expect("<stream:stream").await;
        self.expect(">").await;
        self.send(HEADER).await;
        self.send(&sasl_features(mechanisms)).await;
        loop {
            if let Some(at) = self.received.find("</auth>") {
                return Some(self.received.drain(..at + "</auth>".len()).collect());
            }
            let mut buf = [0u8; 4096];
            let n = tokio::time::timeout(STEP, self.stream.read(&mut buf))
                .await
                .expect("client spoke in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.received.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// After `<success/>`: the restarted stream, binding, the roster request (answered with
    /// `roster`, a `<query/>` or nothing), the initial presence and `census` census requests.
    async fn after_auth(&mut self, roster: &str, census: usize) {
        self.expect("<stream:stream").await;
        self.expect(">").await;
        self.send(HEADER).await;
        self.send(BIND_FEATURES).await;
        self.expect("</iq>").await;
        self.send(
            "<iq type='result' id='imstatus-bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <jid>alice@example.test/imstatus-fake</jid></bind></iq>",
        )
        .await;
        self.expect("</iq>").await;
        self.send(&format!(
            "<iq type='result' id='imstatus-roster'>{roster}</iq>"
        ))
        .await;
        self.expect("</presence>").await;
        for _ in 0..census {
            self.expect("</iq>").await;
        }
    }

    /// Writes `unit` `count` times, in 64 KiB writes; `false` once the client hung up.
    async fn flood(&mut self, unit: &[u8], count: usize) -> bool {
        let per = (64 * 1024 / unit.len()).max(1);
        let chunk = unit.repeat(per);
        let mut left = count;
        while left > 0 {
            let n = per.min(left);
            if self
                .stream
                .write_all(&chunk[..n * unit.len()])
                .await
                .is_err()
            {
                return false;
            }
            left -= n;
        }
        true
    }

    /// Holds the connection until the client closes it.
    async fn hold(mut self) {
        let mut buf = [0u8; 1024];
        while matches!(self.stream.read(&mut buf).await, Ok(n) if n > 0) {}
    }
}

/// The process's peak resident set (VmHWM) in KiB, after resetting it to the current one.
fn reset_peak_rss() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").expect("resetting the peak RSS");
    peak_rss()
}

fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// Tests that measure the peak RSS run one at a time.
static RSS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn errors(events: &[Arc<Event>]) -> Vec<(ErrorCode, String)> {
    events
        .iter()
        .filter_map(|e| source_error(e))
        .map(|(c, d)| (c, d.to_owned()))
        .collect()
}

fn is_busy(e: &Event) -> bool {
    matches!(&e.kind, EventKind::StatusChanged { to, .. } if to.availability == Availability::Busy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_presence_nested_100000_levels_deep_is_dropped_and_the_stream_goes_on() {
    let (port, count) = serve(|mut peer, n| async move {
        peer.login().await;
        if n == 0 {
            peer.send(BARRIER).await;
            peer.send("<presence from='alice@example.test/deep'>").await;
            peer.flood(b"<a>", 100_000).await;
            peer.flood(b"</a>", 100_000).await;
            peer.send(
                "</presence><presence from='alice@example.test/desk'><show>dnd</show></presence>",
            )
            .await;
        }
        peer.hold().await;
    })
    .await;
    let mut w = watch(port, None);
    let events = w
        .until("desk", |e| e.kind.name() == "resource_changed")
        .await;
    assert_eq!(
        errors(&events),
        [(
            ErrorCode::ProtocolError,
            "dropped a <presence> from alice@example.test/deep nested deeper than 32 levels"
                .to_owned()
        )]
    );
    assert_eq!(w.state.session, Session::SignedIn);
    let listed: Vec<&str> = w
        .state
        .resources
        .iter()
        .map(|r| r.resource.as_str())
        .collect();
    assert_eq!(listed, ["desk"]);
    assert_eq!(count.load(Ordering::SeqCst), 1, "the stream went on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_10_mb_attribute_is_dropped_without_being_buffered() {
    let _one = RSS.lock().await;
    let (port, count) = serve(|mut peer, n| async move {
        peer.login().await;
        if n == 0 {
            peer.send(BARRIER).await;
            peer.send("<presence from='alice@example.test/big'><x xmlns='urn:x' a='")
                .await;
            peer.flood(b"a", 10_000_000).await;
            peer.send("'/></presence><presence from='alice@example.test/desk'><show>dnd</show></presence>")
                .await;
        }
        peer.hold().await;
    })
    .await;
    let before = reset_peak_rss();
    let mut w = watch(port, None);
    let events = w.until("busy", is_busy).await;
    let grown = peak_rss().saturating_sub(before);
    assert_eq!(
        errors(&events),
        [(
            ErrorCode::ProtocolError,
            "dropped a <presence> from alice@example.test/big with an attribute value longer \
             than 8192 bytes"
                .to_owned()
        )]
    );
    assert_eq!(count.load(Ordering::SeqCst), 1, "the stream went on");
    eprintln!("peak RSS grew by {grown} KiB");
    assert!(
        grown < 32 * 1024,
        "peak RSS grew by {grown} KiB (a panic's backtrace elsewhere in this binary counts too)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mb_stanza_ends_the_stream_with_protocol_error_and_memory_stays_bounded() {
    let _one = RSS.lock().await;
    let (port, count) = serve(|mut peer, n| async move {
        peer.login().await;
        peer.send(BARRIER).await;
        if n == 0 {
            peer.send("<presence from='alice@example.test/huge'><status>")
                .await;
            if peer.flood(b"x", 50_000_000).await {
                peer.send("</status></presence>").await;
            }
        }
        peer.hold().await;
    })
    .await;
    let before = reset_peak_rss();
    let mut w = watch(port, None);
    let events = w
        .until("the stream's end", |e| {
            matches!(
                e.kind,
                EventKind::SourceError {
                    session_unknown: true,
                    ..
                }
            )
        })
        .await;
    let grown = peak_rss().saturating_sub(before);
    assert_eq!(
        errors(&events),
        [
            (
                ErrorCode::ProtocolError,
                "dropped a <presence> from alice@example.test/huge larger than 262144 bytes"
                    .to_owned()
            ),
            (
                ErrorCode::ProtocolError,
                "reading: the server sent a stanza larger than 16777216 bytes".to_owned()
            )
        ]
    );
    wait_connections(&count, 2).await;
    eprintln!("peak RSS grew by {grown} KiB");
    assert!(
        grown < 32 * 1024,
        "peak RSS grew by {grown} KiB (a panic's backtrace elsewhere in this binary counts too)"
    );
}

/// The SCRAM client-first message in an `<auth/>`: (mechanism, gs2 header stripped
/// `n=…,r=…`, client nonce).
fn client_first(auth: &str) -> (String, String, String) {
    let mechanism = auth
        .split("mechanism='")
        .nth(1)
        .and_then(|r| r.split('\'').next())
        .expect("a mechanism")
        .to_owned();
    let first = String::from_utf8(unb64(content(auth, "auth"))).expect("UTF-8");
    let bare = first.trim_start_matches("n,,").to_owned();
    let nonce = bare.split(",r=").nth(1).expect("a nonce").to_owned();
    (mechanism, bare, nonce)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_scram_iteration_count_is_refused_before_any_hashing() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (port, count) = serve(move |mut peer, _| {
        let tx = tx.clone();
        async move {
            let auth = peer
                .offer(&["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"])
                .await
                .expect("an <auth/>");
            let (mechanism, _, nonce) = client_first(&auth);
            let _ = tx.send(mechanism);
            let server_first = format!("r={nonce}srv,s={},i=4294967295", b64(b"salt"));
            peer.send(&format!(
                "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</challenge>",
                b64(server_first.as_bytes())
            ))
            .await;
            peer.hold().await;
        }
    })
    .await;
    let started = std::time::Instant::now();
    let mut w = watch(port, None);
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let took = started.elapsed();
    assert_eq!(
        rx.recv().await.as_deref(),
        Some("SCRAM-SHA-256"),
        "SCRAM first, SHA-256 first"
    );
    let (code, detail) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::AuthFailed, "{detail}");
    assert!(
        detail.starts_with(
            "the server asks for 4294967295 SCRAM iterations; imstatus computes 1 to 1000000"
        ),
        "{detail}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // Fatal: a retry would come within the first backoff ceiling (1 s).
    let retried = tokio::time::timeout(Duration::from_secs(3), wait_connections(&count, 2)).await;
    assert!(retried.is_err(), "retried");
}

/// How long PBKDF2-SHA-256 takes here for `iterations` (debug and release builds differ 50×).
fn pbkdf2_time(iterations: u32) -> Duration {
    use sasl::common::scram::{ScramProvider, Sha256};
    let t = std::time::Instant::now();
    Sha256::derive(&"pw".to_owned().into(), b"salt", iterations).expect("derive");
    t.elapsed()
}

#[tokio::test(flavor = "current_thread")]
async fn scram_hashing_runs_off_the_runtime_thread() {
    // About two seconds of hashing on this machine and build (debug), at most the cap (about
    // 0.3 s in a release build).
    let per_10k = pbkdf2_time(10_000).max(Duration::from_micros(100));
    let iterations = (20_000.0 / per_10k.as_secs_f64()).clamp(10_000.0, 1_000_000.0) as u32;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (port, _count) = serve(move |mut peer, _| {
        let tx = tx.clone();
        async move {
            let auth = peer.offer(&["SCRAM-SHA-256"]).await.expect("an <auth/>");
            let (_, _, nonce) = client_first(&auth);
            let server_first = format!("r={nonce}srv,s={},i={iterations}", b64(b"salt"));
            peer.send(&format!(
                "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</challenge>",
                b64(server_first.as_bytes())
            ))
            .await;
            let challenged = tokio::time::Instant::now();
            peer.expect("</response>").await;
            let _ = tx.send((challenged, tokio::time::Instant::now()));
            peer.send(
                "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>",
            )
            .await;
            peer.hold().await;
        }
    })
    .await;
    // A ticker on the same (only) runtime thread notes when it got to run.
    let ticks = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.lock().unwrap().push(tokio::time::Instant::now());
            }
        })
    };
    let mut w = watch(port, None);
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::AuthFailed, "{detail}");
    let (challenged, answered) = rx.recv().await.expect("the SCRAM exchange");
    ticker.abort();
    let hashing = answered - challenged;
    let ticks = ticks.lock().unwrap();
    let during: Vec<_> = ticks
        .iter()
        .filter(|t| **t >= challenged && **t <= answered)
        .collect();
    let longest_gap = during
        .windows(2)
        .map(|p| *p[1] - *p[0])
        .max()
        .unwrap_or(hashing);
    eprintln!(
        "{iterations} iterations hashed in {hashing:?}; {} ticks meanwhile, longest gap {longest_gap:?}",
        during.len()
    );
    assert!(
        hashing > Duration::from_millis(100),
        "too little hashing to tell ({hashing:?})"
    );
    // Hashing on the runtime thread would leave one gap as long as the hashing.
    assert!(
        longest_gap < hashing / 4,
        "the runtime stalled for {longest_gap:?} of {hashing:?} of hashing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_prove_it_knows_the_password_is_refused() {
    use sasl::common::scram::{ScramProvider, Sha1};
    let (port, count) = serve(|mut peer, n| async move {
        let auth = peer.offer(&["SCRAM-SHA-1"]).await.expect("an <auth/>");
        let (_, first_bare, nonce) = client_first(&auth);
        let salt = b"NaCl-NaCl";
        let server_first = format!("r={nonce}srv,s={},i=4096", b64(salt));
        peer.send(&format!(
            "<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</challenge>",
            b64(server_first.as_bytes())
        ))
        .await;
        let response = peer.take("</response>").await;
        let client_final = String::from_utf8(unb64(content(&response, "response"))).unwrap();
        let without_proof = client_final.split(",p=").next().unwrap();
        let auth_message = format!("{first_bare},{server_first},{without_proof}");
        let salted = Sha1::derive(&"alicepw".to_owned().into(), salt, 4096).unwrap();
        let server_key = Sha1::hmac(b"Server Key", &salted).unwrap();
        let mut signature = Sha1::hmac(auth_message.as_bytes(), &server_key).unwrap();
        if n == 0 {
            // An impostor: it accepts any proof but cannot sign.
            signature[0] ^= 1;
        }
        peer.send(&format!(
            "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{}</success>",
            b64(format!("v={}", b64(&signature)).as_bytes())
        ))
        .await;
        if n > 0 {
            peer.after_auth("", 1).await;
            peer.send(BARRIER).await;
        }
        peer.hold().await;
    })
    .await;
    let mut w = watch(port, None);
    let events = w.until("sync", |e| e.kind.name() == "status_changed").await;
    let errs = errors(&events);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].0, ErrorCode::ProtocolError);
    assert!(
        errs[0]
            .1
            .starts_with("the server's SCRAM signature is wrong"),
        "{}",
        errs[0].1
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "one retry, which logged in"
    );
    assert_eq!(w.state.session, Session::SignedOut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_offering_only_anonymous_gets_no_login_attempt() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (port, count) = serve(move |mut peer, _| {
        let tx = tx.clone();
        async move {
            let auth = peer.offer(&["ANONYMOUS"]).await;
            if auth.is_some() {
                peer.send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
                    .await;
            }
            let _ = tx.send(auth.unwrap_or(peer.received.clone()));
        }
    })
    .await;
    let mut w = watch(port, None);
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::AuthFailed, "{detail}");
    assert!(
        detail
            .starts_with("the server offers no SASL mechanism imstatus uses (offered: ANONYMOUS;"),
        "{detail}"
    );
    let sent = rx.recv().await.expect("what the client sent");
    assert!(!sent.contains("<auth"), "{sent}");
    let retried = tokio::time::timeout(Duration::from_secs(3), wait_connections(&count, 2)).await;
    assert!(retried.is_err(), "fatal: never retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_to_an_address_that_is_not_loopback_is_refused_before_connecting() {
    let (port, count) = serve(|peer, _| async move { peer.hold().await }).await;
    // 0.0.0.0 is not a loopback address, yet Linux connects it to this machine: were the
    // check missing, the fake server would see a connection (and the test no traffic leaves).
    let mut w = watch_config(port, None, |c| c.server = Some(format!("0.0.0.0:{port}")));
    let events = w.until("source_error", |e| source_error(e).is_some()).await;
    let (code, detail) = source_error(&events[events.len() - 1]).unwrap();
    assert_eq!(code, ErrorCode::TlsFailed, "{detail}");
    assert!(
        detail.starts_with(
            "tls = \"insecure-plaintext\" is only allowed for a server on this machine"
        ),
        "{detail}"
    );
    let connected = tokio::time::timeout(Duration::from_secs(2), wait_connections(&count, 1)).await;
    assert!(connected.is_err(), "a connection was made");
}

/// The census results for alice (id 0) and bob (id 1).
const BARRIER_2: &str =
    "<iq type='result' id='imstatus-items-0'/><iq type='result' id='imstatus-items-1'/>";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_roster_result_from_another_entity_is_ignored() {
    let (port, _count) = serve(|mut peer, n| async move {
        if n > 0 {
            return peer.hold().await;
        }
        peer.bind().await;
        peer.expect("</iq>").await;
        // Someone who knows our full JID answers first.
        peer.send(
            "<iq type='result' id='imstatus-roster' from='mallory@evil.test/x'>\
             <query xmlns='jabber:iq:roster'><item jid='eve@evil.test' subscription='both'/></query></iq>",
        )
        .await;
        peer.send(
            "<iq type='result' id='imstatus-roster'>\
             <query xmlns='jabber:iq:roster'><item jid='bob@example.test' subscription='both'/></query></iq>",
        )
        .await;
        peer.expect("</presence>").await;
        // The census of the user: the reply lists no resource, so no contact is asked.
        peer.expect("</iq>").await;
        peer.send(BARRIER_2).await;
        peer.hold().await;
    })
    .await;
    let mut w = watch_config(port, None, |c| c.contacts = true);
    w.until("sync", |e| e.kind.name() == "status_changed").await;
    let contacts: Vec<&str> = w
        .state
        .contacts
        .iter()
        .map(|c| c.contact.as_str())
        .collect();
    assert_eq!(contacts, ["bob@example.test"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_census_result_from_another_entity_does_not_end_the_login() {
    let (port, _count) = serve(|mut peer, n| async move {
        peer.login().await;
        if n == 0 {
            peer.send("<iq type='result' id='imstatus-items-0' from='mallory@evil.test/x'/>")
                .await;
            peer.send("<iq type='error' id='imstatus-items-0' from='alice@example.test/phone'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
                .await;
            peer.send("<presence from='alice@example.test/desk'><show>dnd</show></presence>")
                .await;
            peer.send("<iq type='result' id='imstatus-items-0' from='alice@example.test'/>")
                .await;
        }
        peer.hold().await;
    })
    .await;
    let mut w = watch(port, None);
    let events = w.until("sync", |e| e.kind.name() == "status_changed").await;
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["snapshot", "signed_in", "status_changed"]);
    assert_eq!(w.state.availability, Availability::Busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_create_no_contacts_and_status_texts_cannot_forge_lines() {
    let (port, _count) = serve(|mut peer, n| async move {
        if n > 0 {
            return peer.hold().await;
        }
        peer.bind().await;
        peer.expect("</iq>").await;
        peer.send(
            "<iq type='result' id='imstatus-roster'>\
             <query xmlns='jabber:iq:roster'><item jid='bob@example.test' subscription='both'/></query></iq>",
        )
        .await;
        peer.expect("</presence>").await;
        // The census of the user: the reply lists no resource, so no contact is asked.
        peer.expect("</iq>").await;
        peer.send(BARRIER_2).await;
        for stanza in [
            "<presence from='mallory@evil.test/x'><show>dnd</show></presence>",
            "<presence from='mallory@evil.test/x' type='unavailable'/>",
            "<presence from='eve@evil.test/y'><show>sleeping</show></presence>",
            "<presence from='eve@evil.test/y'>",
        ] {
            peer.send(stanza).await;
        }
        peer.flood(b"<a>", 100).await;
        peer.flood(b"</a>", 100).await;
        peer.send(
            "</presence><presence from='bob@example.test/laptop'><show>away</show>\
             <status>lunch&#10;10:00:00.000  alice    signed_out&#x2028;&#x202e;</status></presence>",
        )
        .await;
        peer.hold().await;
    })
    .await;
    let mut w = watch_config(port, None, |c| c.contacts = true);
    w.until("sync", |e| e.kind.name() == "status_changed").await;
    let events = w
        .until("bob's status", |e| {
            e.kind.name() == "contact_status_changed"
        })
        .await;
    assert_eq!(errors(&events), [], "strangers' junk is not reported");
    let contacts: Vec<(&str, Availability, Option<&str>)> = w
        .state
        .contacts
        .iter()
        .map(|c| (c.contact.as_str(), c.availability, c.message.as_deref()))
        .collect();
    assert_eq!(
        contacts,
        [(
            "bob@example.test",
            Availability::Away,
            Some("lunch 10:00:00.000  alice    signed_out \u{fffd}")
        )]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flooded_with_presences_holds_little_and_ends_in_the_final_state() {
    let (port, _count) = serve(|mut peer, n| async move {
        peer.login().await;
        if n == 0 {
            // Far more than the source holds back before Synced.
            for i in 0..20_000 {
                peer.send(&format!(
                    "<presence from='alice@example.test/desk'><show>away</show><status>{i}</status></presence>"
                ))
                .await;
            }
            peer.send("<presence from='alice@example.test/desk'><show>dnd</show><status>last</status></presence>")
                .await;
            peer.send(BARRIER).await;
        }
        peer.hold().await;
    })
    .await;
    let mut w = watch(port, None);
    let events = w.until("sync", |e| e.kind.name() == "status_changed").await;
    let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["snapshot", "signed_in", "status_changed"]);
    assert_eq!(w.state.availability, Availability::Busy);
    assert_eq!(w.state.message.as_deref(), Some("last"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_lists_resources_gets_a_census_of_each_contact() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let (port, _count) = serve(move |mut peer, n| {
        let tx = tx.clone();
        async move {
            if n > 0 {
                return peer.hold().await;
            }
            peer.bind().await;
            peer.expect("</iq>").await;
            peer.send(
                "<iq type='result' id='imstatus-roster'>\
                 <query xmlns='jabber:iq:roster'><item jid='bob@example.test' subscription='both'/>\
                 <item jid='carol@example.test' subscription='from'/></query></iq>",
            )
            .await;
            peer.expect("</presence>").await;
            // The user's census lists our own session (and the desk): the server lists
            // resources, so each watched contact is asked next (carol is not watched: 'from').
            let user = peer.take("</iq>").await;
            peer.send(
                "<iq type='result' id='imstatus-items-0' from='alice@example.test'>\
                 <query xmlns='http://jabber.org/protocol/disco#items'>\
                 <item jid='alice@example.test/imstatus-fake'/><item jid='alice@example.test/desk'/>\
                 </query></iq>",
            )
            .await;
            let contact = peer.take("</iq>").await;
            let _ = tx.send((user, contact));
            peer.send(
                "<iq type='result' id='imstatus-items-1' from='bob@example.test'>\
                 <query xmlns='http://jabber.org/protocol/disco#items'>\
                 <item jid='bob@example.test/laptop'/></query></iq>",
            )
            .await;
            // The presences come after the census results (as ejabberd's often do).
            peer.send("<presence from='alice@example.test/desk'><show>away</show></presence>")
                .await;
            peer.send("<presence from='bob@example.test/laptop'><show>dnd</show></presence>")
                .await;
            peer.hold().await;
        }
    })
    .await;
    let mut w = watch_config(port, None, |c| c.contacts = true);
    w.until("sync", |e| e.kind.name() == "status_changed").await;
    let (user, contact) = rx.recv().await.unwrap();
    assert!(
        user.contains("id='imstatus-items-0'") && user.contains("to='alice@example.test'"),
        "{user}"
    );
    assert!(
        contact.contains("id='imstatus-items-1'") && contact.contains("to='bob@example.test'"),
        "{contact}"
    );
    // The login waited for both listed resources.
    assert_eq!(w.state.availability, Availability::Away);
    let contacts: Vec<(&str, Availability)> = w
        .state
        .contacts
        .iter()
        .map(|c| (c.contact.as_str(), c.availability))
        .collect();
    assert_eq!(
        contacts,
        [
            ("bob@example.test", Availability::Busy),
            ("carol@example.test", Availability::Offline)
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presences_read_by_either_parser_keep_their_order() {
    let (port, _count) = serve(|mut peer, n| async move {
        if n > 0 {
            return peer.hold().await;
        }
        peer.bind().await;
        peer.expect("</iq>").await;
        peer.send(
            "<iq type='result' id='imstatus-roster'>\
             <query xmlns='jabber:iq:roster'><item jid='bob@example.test' subscription='both'/></query></iq>",
        )
        .await;
        peer.expect("</presence>").await;
        peer.expect("</iq>").await;
        peer.send(BARRIER).await;
        // In one write: presences the fast path reads (plain), presences it leaves to the
        // full parser (an xml:lang status, a prefixed payload), an iq and a message between.
        let mut burst = String::new();
        for i in 0..50 {
            let show = ["away", "dnd", "xa", "chat"][i % 4];
            if i % 3 == 0 {
                burst.push_str(&format!(
                    "<presence from='bob@example.test/laptop'><show>{show}</show>\
                     <status xml:lang='en'>s{i}</status></presence>"
                ));
            } else if i % 3 == 1 {
                burst.push_str(&format!(
                    "<presence from='bob@example.test/laptop'><show>{show}</show><status>s{i}</status></presence>\
                     <iq type='result' id='stray{i}'/><message from='bob@example.test/laptop'><body>x</body></message>"
                ));
            } else {
                burst.push_str(&format!(
                    "<presence from='bob@example.test/laptop'><show>{show}</show><status>s{i}</status>\
                     <p:x xmlns:p='urn:example:{i}'/></presence> "
                ));
            }
        }
        peer.send(&burst).await;
        peer.hold().await;
    })
    .await;
    let mut w = watch_config(port, None, |c| c.contacts = true);
    w.until("sync", |e| e.kind.name() == "status_changed").await;
    let events = w
        .until("the last presence", |e| {
            matches!(&e.kind, EventKind::ContactStatusChanged { to, .. } if to.message.as_deref() == Some("s49"))
        })
        .await;
    let seen: Vec<(Availability, String)> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::ContactStatusChanged { to, .. } => {
                Some((to.availability, to.message.clone().unwrap_or_default()))
            }
            _ => None,
        })
        .collect();
    let expected: Vec<(Availability, String)> = (0..50)
        .map(|i| {
            let availability = [
                Availability::Away,
                Availability::Busy,
                Availability::ExtendedAway,
                Availability::Chatty,
            ][i % 4];
            (availability, format!("s{i}"))
        })
        .collect();
    assert_eq!(seen, expected);
}
