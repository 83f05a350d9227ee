//! End to end over real sockets: a real Prosody, the real XMPP source in a hub, the gateway on
//! 127.0.0.1:0, and the user's other client (testkit's raw XMPP client, resource `desk`)
//! changing status. The SSE and WebSocket clients must see it within 1 s, and resume by
//! `Last-Event-ID`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt as _;
use imstatus_config::Secret;
use imstatus_core::{AccountId, Availability, Session};
use imstatus_hub::Hub;
use imstatus_testkit::{Prosody, ProsodyOptions, XmppClient};
use imstatus_xmpp::XmppSource;
use imstatus_xmpp::{TlsMode, XmppConfig};
use serde_json::Value;
use tempfile::NamedTempFile;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(60);
/// The promise: a change by the user's client reaches a stream client within this.
const DELIVERY: Duration = Duration::from_secs(1);

struct Setup {
    prosody: Prosody,
    hub: Arc<Hub>,
    server: Server,
    _password: NamedTempFile,
}

async fn setup() -> Setup {
    let prosody = Prosody::start(ProsodyOptions::default()).expect("prosody starts");
    let mut password = NamedTempFile::new().unwrap();
    writeln!(password, "alicepw").unwrap();
    let config = XmppConfig {
        server: Some(format!("127.0.0.1:{}", prosody.port())),
        tls: TlsMode::InsecurePlaintext,
        ..XmppConfig::new(
            "alice@example.test",
            Secret::File(password.path().to_owned()),
        )
    };
    let source = XmppSource::new(&config).with_backoff_seed(3);
    let hub = Arc::new(
        Hub::builder()
            .with_source(alice(), Arc::new(source))
            .start(),
    );
    assert!(
        hub.wait_settled(&[alice()], STEP).await,
        "the XMPP source logs in: {:?}",
        hub.source_error(&alice())
    );
    let server = Server::start(gateway(&hub, &tokens())).await;
    Setup {
        prosody,
        hub,
        server,
        _password: password,
    }
}

fn desk(prosody: &Prosody) -> XmppClient {
    XmppClient::connect(prosody.port(), "alice", "example.test", "alicepw", "desk")
        .expect("desk logs in")
}

fn availability(hub: &Hub, account: &AccountId) -> Availability {
    hub.snapshot(account)
        .and_then(|e| e.snapshot().map(|s| s.availability))
        .unwrap()
}

fn is_status_to(v: &Value, availability: &str) -> bool {
    v["event"] == "status_changed" && v["to"]["availability"] == availability
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_sees_the_users_status_change_within_a_second_and_resumes_by_last_event_id() {
    limit(LIMIT, async {
        let s = setup().await;
        let auth = format!("Bearer {READ_ALICE}");
        let mut sse =
            SseClient::connect(s.server.addr, "/v1/events", &[("Authorization", &auth)]).await;
        assert_eq!(sse.status, 200, "{}", sse.head);
        assert!(sse
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/event-stream"));
        let first = sse.next_data(STEP).await.expect("a snapshot");
        let snap = first.json().unwrap();
        assert_eq!(snap["event"], "snapshot");
        assert_eq!(snap["account"], "alice");
        assert_eq!(snap["source"], "xmpp");
        assert_eq!(snap["session"], "signed_out");
        assert_eq!(first.id.as_deref().unwrap(), snap["seq"].to_string());

        // The user's other client signs in, away "lunch".
        let mut desk = desk(&s.prosody);
        // A direct hub subscriber tells the source's share of the latency from the gateway's.
        let mut probe = s.hub.subscribe();
        let sent = Instant::now();
        let at_hub = tokio::spawn(async move {
            while let Some(e) = probe.recv().await {
                if e.kind.name() == "status_changed" {
                    return sent.elapsed();
                }
            }
            Duration::MAX
        });
        desk.presence(Some("away"), Some("lunch"), Some(5)).unwrap();
        let (changed, before) = sse.until(DELIVERY, |v| is_status_to(v, "away")).await;
        let took = sent.elapsed();
        assert!(took < DELIVERY, "status_changed took {took:?}");
        let at_hub = at_hub.await.unwrap();
        eprintln!("presence → hub status_changed: {at_hub:?}; → SSE client: {took:?}");
        assert_eq!(changed["to"]["message"], "lunch");
        assert_eq!(changed["mistatus"], 0x22);
        assert!(
            before
                .iter()
                .any(|v| v["event"] == "signed_in" && v["result"] == "ok"),
            "{before:#?}"
        );
        let mut last_id = changed["seq"].as_u64().unwrap();
        // Drain the rest of the batch (resource_changed) to know the last id delivered.
        while let Some(f) = sse.next_data(Duration::from_millis(300)).await {
            last_id = f.id.unwrap().parse().unwrap();
        }

        // The SSE client goes away; meanwhile the user goes busy, then extended away.
        drop(sse);
        desk.presence(Some("dnd"), Some("meeting"), Some(5))
            .unwrap();
        wait_until_async("busy", STEP, || {
            (availability(&s.hub, &alice()) == Availability::Busy).then_some(())
        })
        .await
        .unwrap();
        desk.presence(Some("xa"), None, Some(5)).unwrap();
        wait_until_async("extended away", STEP, || {
            (availability(&s.hub, &alice()) == Availability::ExtendedAway).then_some(())
        })
        .await
        .unwrap();

        // Resuming replays exactly the missed changes, in order, without a snapshot.
        let id = last_id.to_string();
        let mut sse = SseClient::connect(
            s.server.addr,
            "/v1/events",
            &[("Authorization", &auth), ("Last-Event-ID", &id)],
        )
        .await;
        assert_eq!(sse.status, 200);
        let (xa, replayed) = sse.until(STEP, |v| is_status_to(v, "extended_away")).await;
        let mut all = replayed.clone();
        all.push(xa);
        let seqs: Vec<u64> = all.iter().map(|v| v["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs[0], last_id + 1, "{all:#?}");
        assert!(
            seqs.windows(2).all(|w| w[1] == w[0] + 1),
            "contiguous: {seqs:?}"
        );
        assert!(all.iter().all(|v| v["event"] != "snapshot"), "{all:#?}");
        assert!(replayed
            .iter()
            .any(|v| is_status_to(v, "busy") && v["to"]["message"] == "meeting"));

        // Still live after the replay.
        let sent = Instant::now();
        desk.presence(None, None, Some(5)).unwrap();
        sse.until(DELIVERY, |v| is_status_to(v, "available")).await;
        assert!(sent.elapsed() < DELIVERY);

        // The user signs out: the stream says so.
        desk.unavailable().unwrap();
        let (out, _) = sse.until(STEP, |v| v["event"] == "signed_out").await;
        assert_eq!(out["reason"], "user");
        desk.close().unwrap();
        let snap = s.hub.snapshot(&alice()).unwrap();
        assert_eq!(snap.snapshot().unwrap().session, Session::SignedOut);
        s.server.stop().await.unwrap();
    })
    .await;
}

async fn ws_json(
    ws: &mut (impl futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
              + Unpin),
    d: Duration,
    mut pred: impl FnMut(&Value) -> bool,
) -> (Value, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + d;
    let mut seen = Vec::new();
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no matching WebSocket message within {d:?}; saw {seen:#?}"))
            .expect("the socket stays open")
            .expect("a message");
        let Message::Text(text) = msg else {
            continue;
        };
        let v: Value = serde_json::from_str(text.as_str()).unwrap();
        if pred(&v) {
            return (v, seen);
        }
        seen.push(v);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sees_the_same_stream_and_resumes() {
    limit(LIMIT, async {
        let s = setup().await;
        let url = format!("ws://{}/v1/ws?access_token={READ_ALL}", s.server.addr);
        let (mut ws, resp) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("upgrade");
        assert_eq!(resp.status(), 101);
        let (snap, _) = ws_json(&mut ws, STEP, |_| true).await;
        assert_eq!(snap["event"], "snapshot");
        assert_eq!(snap["account"], "alice");
        assert_eq!(snap["session"], "signed_out");

        let mut desk = desk(&s.prosody);
        let sent = Instant::now();
        desk.presence(Some("away"), Some("lunch"), Some(5)).unwrap();
        let (changed, _) = ws_json(&mut ws, DELIVERY, |v| is_status_to(v, "away")).await;
        let took = sent.elapsed();
        assert!(took < DELIVERY, "{took:?}");
        eprintln!("presence → WebSocket status_changed: {took:?}");
        let (resource, _) = ws_json(&mut ws, STEP, |v| v["event"] == "resource_changed").await;
        let last = resource["seq"].as_u64().unwrap();
        assert!(last > changed["seq"].as_u64().unwrap());

        // Close, miss a change, resume with ?last_event_id.
        ws.close(None).await.unwrap();
        desk.presence(Some("dnd"), None, Some(5)).unwrap();
        wait_until_async("busy", STEP, || {
            (availability(&s.hub, &alice()) == Availability::Busy).then_some(())
        })
        .await
        .unwrap();
        let url = format!(
            "ws://{}/v1/ws?access_token={READ_ALL}&last_event_id={last}",
            s.server.addr
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("upgrade");
        let (first, _) = ws_json(&mut ws, STEP, |_| true).await;
        assert_eq!(first["seq"].as_u64().unwrap(), last + 1, "{first}");
        assert_ne!(first["event"], "snapshot");
        assert!(
            is_status_to(&first, "busy"),
            "the missed change comes first: {first}"
        );

        // A graceful shutdown closes the socket with 1001.
        desk.close().unwrap();
        let stop = tokio::spawn(s.server.stop());
        let close = loop {
            match tokio::time::timeout(STEP, ws.next())
                .await
                .expect("close in time")
            {
                Some(Ok(Message::Close(frame))) => break frame,
                Some(Ok(_)) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        };
        let frame = close.expect("a close frame with a code");
        assert_eq!(u16::from(frame.code), 1001);
        assert_eq!(frame.reason.as_str(), "server shutting down");
        stop.await.unwrap().unwrap();
    })
    .await;
}
