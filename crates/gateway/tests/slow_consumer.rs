//! A consumer that stops reading while 100k events flow: memory stays bounded, an active
//! consumer is unaffected and sees the events in order (or a resync snapshot), and the stuck
//! ones get a resync snapshot (SSE) or are closed with a reason (WebSocket).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt as _;
use imstatus_core::{Availability, Observation, PartId, Status};
use imstatus_gateway::Gateway;
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(120);
/// Observations sent; each makes two events (status_changed, resource_changed).
const OBSERVATIONS: usize = 50_000;
const BATCH: usize = 500;

#[derive(Debug, Default)]
struct Seen {
    events: u64,
    snapshots: u64,
    resyncs: u64,
    last_seq: u64,
    final_message: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_consumer_neither_blocks_others_nor_grows_memory() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let gw = Gateway::new(s.hub.clone(), &[])
            .with_ws_send_timeout(Duration::from_secs(2))
            .into_state();
        let server = Server::start(gw.clone()).await;
        let addr = server.addr;

        // The active consumer: reads everything, checks the order, folds alice's status.
        let mut active = SseClient::connect(addr, "/v1/events?accounts=alice", &[]).await;
        let reader = tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut last_id = 0u64;
            loop {
                let Some(frame) = active.next_data(Duration::from_secs(60)).await else {
                    panic!("the active stream stalled or ended: {seen:?}");
                };
                let id: u64 = frame.id.as_deref().unwrap().parse().unwrap();
                assert!(id >= last_id, "ids never go backwards");
                last_id = id;
                let v = frame.json().unwrap();
                let seq = v["seq"].as_u64().unwrap();
                let message = match v["event"].as_str().unwrap() {
                    "snapshot" => {
                        seen.snapshots += 1;
                        if v["resync"] == true {
                            seen.resyncs += 1;
                        }
                        v["message"].as_str().map(str::to_owned)
                    }
                    "status_changed" => {
                        assert!(seq > seen.last_seq, "changes in seq order: {seq} after {}", seen.last_seq);
                        v["to"]["message"].as_str().map(str::to_owned)
                    }
                    _ => {
                        assert!(seq > seen.last_seq, "changes in seq order");
                        None
                    }
                };
                seen.last_seq = seen.last_seq.max(seq);
                seen.events += 1;
                if message.as_deref() == Some("done") {
                    seen.final_message = message;
                    return seen;
                }
            }
        });

        // Two consumers that stop reading: SSE and WebSocket, with small receive buffers.
        let mut stuck_sse = SseClient::connect_stuck(addr, "/v1/events?accounts=alice").await;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let (mut stuck_ws, _) =
            tokio_tungstenite::client_async(format!("ws://{addr}/v1/ws?accounts=alice"), tcp)
                .await
                .expect("upgrade");
        wait_until_async("three streams", STEP, || (gw.open_streams() == 3).then_some(())).await
.unwrap();

        let rss_before = rss_kib();
        let mut rss_peak = rss_before;
        let events_before = s.hub.event_count();
        let started = Instant::now();
        for batch in 0..OBSERVATIONS / BATCH {
            let observations = (0..BATCH).map(|i| {
                let n = batch * BATCH + i;
                let availability = if n % 2 == 0 { Availability::Busy } else { Availability::Away };
                Observation::Presence {
                    part: PartId::new("desk"),
                    status: Status::with_message(availability, format!("m{n}")),
                    priority: Some(5),
                }
            });
            s.alice.send(observations);
            let target = events_before + ((batch + 1) * BATCH * 2) as u64;
            let hub = s.hub.clone();
            wait_until_async("the hub to publish the batch", STEP, || (hub.event_count() >= target).then_some(())).await
.unwrap();
            rss_peak = rss_peak.max(rss_kib());
        }
        let flood = started.elapsed();
        let published = s.hub.event_count() - events_before;
        s.alice.send([Observation::Presence {
            part: PartId::new("desk"),
            status: Status::with_message(Availability::Available, "done"),
            priority: Some(5),
        }]);

        let seen = tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("the active consumer keeps up and reaches the end")
            .unwrap();
        let active_done = started.elapsed();
        rss_peak = rss_peak.max(rss_kib());
        eprintln!(
            "published {published} events in {flood:?}; active consumer done after {active_done:?}: {seen:?}"
        );
        eprintln!(
            "RSS before {rss_before} KiB, peak {rss_peak} KiB, growth {} KiB; hub resyncs {}",
            rss_peak.saturating_sub(rss_before),
            s.hub.resync_count()
        );
        assert!(published >= (OBSERVATIONS * 2) as u64);
        assert_eq!(seen.final_message.as_deref(), Some("done"));
        assert!(
            seen.events >= published || seen.resyncs > 0,
            "every event or a resync: {seen:?}"
        );
        assert!(
            rss_peak.saturating_sub(rss_before) < 48 * 1024,
            "memory grew by {} KiB",
            rss_peak - rss_before
        );

        // The stuck WebSocket, reading again: either it was closed for not reading (when its
        // buffers filled up for longer than the send timeout), or it gets a resync snapshot.
        let mut ws_messages = 0u64;
        let ws_outcome = loop {
            let msg = tokio::time::timeout(STEP, stuck_ws.next()).await.expect("a message or the end");
            match msg {
                Some(Ok(Message::Text(text))) => {
                    ws_messages += 1;
                    let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                    if v["event"] == "snapshot" && v["resync"] == true {
                        break format!("a resync snapshot at seq {}", v["seq"]);
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let frame = frame.expect("a close frame with a code");
                    assert_eq!(u16::from(frame.code), 1008);
                    assert!(frame.reason.as_str().starts_with("too slow"), "{frame:?}");
                    break format!("closed: {} {:?}", u16::from(frame.code), frame.reason.as_str());
                }
                Some(Ok(_)) => {}
                other => panic!("the stuck WebSocket ended without a reason: {other:?}"),
            }
        };
        eprintln!(
            "stuck WebSocket: {ws_messages} buffered messages, then {ws_outcome} (slow disconnects: {})",
            gw.ws_slow_disconnects()
        );
        assert!(ws_messages < published, "it did not get everything buffered for it");

        // The stuck SSE client, reading again, gets a resync snapshot and the final state.
        stuck_sse.read_head().await;
        assert_eq!(stuck_sse.status, 200);
        let mut stale = 0u64;
        let (resync, _) = loop {
            let frame = stuck_sse
                .next_data(Duration::from_secs(30))
                .await
                .expect("the stuck stream continues");
            let v = frame.json().unwrap();
            if v["event"] == "snapshot" && v["resync"] == true {
                break (v, stale);
            }
            stale += 1;
        };
        let final_in_snapshot = resync["message"] == "done";
        eprintln!(
            "stuck SSE: {stale} buffered events, then a resync snapshot at seq {} (final state in it: {final_in_snapshot})",
            resync["seq"]
        );
        // The final state: in the resync snapshot itself when the stream fell behind after
        // "done" was published, else in an event after it.
        let last = if final_in_snapshot {
            resync
        } else {
            stuck_sse
                .until(STEP, |v| {
                    v["message"] == "done" || v["to"]["message"] == "done"
                })
                .await
                .0
        };
        assert_eq!(last["account"], "alice");
        assert!(s.hub.resync_count() >= 1);
        drop(stuck_sse);
        server.stop().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_that_does_not_read_is_closed_with_a_reason() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let gw = Gateway::new(s.hub.clone(), &[])
            .with_ws_send_timeout(Duration::from_millis(500))
            .into_state();
        let server = Server::start(gw.clone()).await;
        let addr = server.addr;
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let tcp = socket.connect(addr).await.unwrap();
        let (mut stuck, _) = tokio_tungstenite::client_async(format!("ws://{addr}/v1/ws"), tcp)
            .await
            .expect("upgrade");
        wait_until_async("the stream", STEP, || {
            (gw.open_streams() == 1).then_some(())
        })
        .await
        .unwrap();

        // Events flow until the socket's buffers are full and a send times out.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut n = 0usize;
        while gw.ws_slow_disconnects() == 0 {
            assert!(
                Instant::now() < deadline,
                "no slow disconnect after {n} observations"
            );
            let batch = (0..BATCH).map(|i| Observation::Presence {
                part: PartId::new("desk"),
                status: Status::with_message(Availability::Away, format!("{}", n + i)),
                priority: Some(5),
            });
            let target = s.hub.event_count() + 1;
            s.alice.send(batch);
            n += BATCH;
            let hub = s.hub.clone();
            wait_until_async("the batch", STEP, || {
                (hub.event_count() >= target).then_some(())
            })
            .await
            .unwrap();
            tokio::task::yield_now().await;
        }

        // Reading again: what was queued, then the reason.
        let mut messages = 0u64;
        let frame = loop {
            match tokio::time::timeout(STEP, stuck.next())
                .await
                .expect("the close in time")
            {
                Some(Ok(Message::Close(frame))) => break frame.expect("a close frame with a code"),
                Some(Ok(_)) => messages += 1,
                other => panic!("ended without a close frame after {messages} messages: {other:?}"),
            }
        };
        eprintln!(
            "closed after {messages} buffered messages: {} {:?}",
            u16::from(frame.code),
            frame.reason.as_str()
        );
        assert_eq!(u16::from(frame.code), 1008);
        assert_eq!(
            frame.reason.as_str(),
            "too slow: the client did not read; reconnect with last_event_id"
        );
        wait_until_async("the stream to be gone", STEP, || {
            (gw.open_streams() == 0).then_some(())
        })
        .await
        .unwrap();
        server.stop().await.unwrap();
    })
    .await;
}
