//! A scripted fake XMPP server on a real loopback socket: garbage, malformed stanzas and
//! silence, which a real Prosody never sends. The source must report them with the right code,
//! never panic, keep processing what follows, and reconnect later.
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
                .expect("read");
            assert!(
                n > 0,
                "client closed while we waited for {marker:?}: {}",
                self.received
            );
            self.received.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    async fn send(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).await.expect("write");
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
    let mut file = NamedTempFile::new().unwrap();
    writeln!(file, "alicepw").unwrap();
    let config = XmppConfig {
        server: Some(format!("127.0.0.1:{port}")),
        tls: TlsMode::InsecurePlaintext,
        visibility,
        ..XmppConfig::new("alice@example.test", Secret::File(file.path().to_owned()))
    };
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
