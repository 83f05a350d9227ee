//! The event stream over Server-Sent Events (`GET /v1/events`) and WebSocket (`GET /v1/ws`).
//!
//! Both read a hub [`Subscription`] one event at a time, only when the transport can take the
//! next one: an SSE body is polled by hyper when the socket has room, a WebSocket send is
//! awaited before the next event is read. A client that stops reading therefore never makes
//! the gateway buffer more than one event (plus the kernel's socket buffer); the hub's ring
//! overtakes its subscription instead, and its next event is a `snapshot` with `resync: true`.
//! A WebSocket send that blocks longer than the send timeout closes the connection (1008).
//!
//! Every live event goes to every subscriber that may see it, so its SSE frame is rendered
//! once ([`Frames`]) and the same bytes are written to each stream: with thousands of
//! subscribers, serialising per subscriber was half the gateway's CPU (B7 in docs/benchmarks.md).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt as _, StreamExt as _};
use imstatus_core::{AccountId, Event};
use imstatus_hub::Subscription;
use tokio::sync::watch;

use crate::auth::{query_params, Caller};
use crate::error::{printable, ApiError};
use crate::gateway::{Gateway, GatewayState, StreamGuard, StreamKind};

/// The reconnection delay the SSE stream asks `EventSource` clients to use.
const SSE_RETRY: Duration = Duration::from_secs(1);
/// How many recently rendered SSE frames are kept for the other subscribers.
const FRAME_SLOTS: usize = 1024;
/// The largest message a WebSocket client may send (they are ignored anyway).
const WS_MAX_INCOMING: usize = 4096;
/// The most a WebSocket's write buffer may hold; one event is written at a time.
const WS_MAX_WRITE_BUFFER: usize = 8 * 1024 * 1024;
/// How long a close frame may take to go out.
const WS_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// What a stream request asked for.
struct StreamRequest {
    /// `None` = every account.
    accounts: Option<HashSet<AccountId>>,
    /// Resume after this seq.
    after: Option<u64>,
}

/// Reads `accounts=a,b` and the resume point (`Last-Event-ID` header, or `last_event_id`),
/// limited to what the caller may see.
fn stream_request(
    gw: &Gateway,
    caller: &Caller,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<StreamRequest, ApiError> {
    let params = query_params(uri).map_err(ApiError::bad_request)?;
    let mut requested: Option<HashSet<AccountId>> = None;
    let mut after_query = None;
    for (key, value) in params {
        match key.as_str() {
            "accounts" => {
                let set = requested.get_or_insert_with(HashSet::new);
                for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                    let account = AccountId::new(name);
                    if !caller.can_see(&account) || gw.hub.source_kind(&account).is_none() {
                        return Err(ApiError::no_account(name));
                    }
                    set.insert(account);
                }
            }
            "last_event_id" => after_query = Some(value),
            _ => {}
        }
    }
    let accounts = match requested {
        Some(set) => Some(set),
        None if caller.sees_all() => None,
        None => Some(
            gw.hub
                .accounts()
                .into_iter()
                .filter(|a| caller.can_see(a))
                .collect(),
        ),
    };
    let header = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| ApiError::bad_request("Last-Event-ID is not ASCII"))?
                .to_owned(),
        ),
        None => None,
    };
    let after = match header.or(after_query) {
        Some(raw) if raw.trim().is_empty() => None,
        Some(raw) => Some(raw.trim().parse::<u64>().map_err(|_| {
            ApiError::bad_request(format!(
                "Last-Event-ID must be the decimal seq of an event, not `{}`",
                printable(&raw)
            ))
        })?),
        None => None,
    };
    Ok(StreamRequest { accounts, after })
}

fn event_json(event: &Event) -> Option<String> {
    match serde_json::to_string(event) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(seq = event.seq, %e, "cannot serialise an event");
            None
        }
    }
}

/// One SSE frame: `id: <id>` and `data: <json>` (compact JSON has no raw newline).
fn sse_frame(id: u64, json: &str) -> Bytes {
    Bytes::from(format!("id: {id}\ndata: {json}\n\n"))
}

/// An SSE comment frame (`: text`).
fn sse_comment(text: &str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
}

/// The SSE frames of the most recent events, rendered once for all subscribers. A slot is
/// found by seq and trusted only for the very same hub event (`Arc::ptr_eq`; holding the `Arc`
/// keeps its address from being reused), so resync snapshots, which are built per subscriber,
/// are never confused with live events of the same seq.
pub(crate) struct Frames {
    slots: Mutex<Vec<Slot>>,
}

/// A rendered frame and the hub event it belongs to.
type Slot = Option<(Arc<Event>, Bytes)>;

impl Frames {
    pub(crate) fn new() -> Frames {
        Frames {
            slots: Mutex::new(vec![None; FRAME_SLOTS]),
        }
    }

    /// The frame of `event` with `id: <event.seq>`.
    fn get(&self, event: &Arc<Event>) -> Option<Bytes> {
        let slot = (event.seq % FRAME_SLOTS as u64) as usize;
        {
            let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((e, frame)) = &slots[slot] {
                if Arc::ptr_eq(e, event) {
                    return Some(frame.clone());
                }
            }
        }
        // Rendered outside the lock; two subscribers may race to render the same event,
        // which costs one extra rendering, never a wrong frame.
        let frame = sse_frame(event.seq, &event_json(event)?);
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots[slot] = Some((event.clone(), frame.clone()));
        Some(frame)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    Live,
    Done,
}

/// What woke an SSE stream.
enum Next {
    Shutdown,
    Event(Option<Arc<Event>>),
    /// Nothing for the keep-alive interval.
    Idle,
}

struct SseState {
    gw: GatewayState,
    sub: Subscription,
    shutdown: watch::Receiver<bool>,
    /// The highest seq sent: `id:` never goes backwards, also across a resync whose
    /// snapshots carry older seqs.
    last_id: u64,
    step: Step,
    _guard: StreamGuard,
}

async fn next_sse(mut st: SseState) -> Option<(Result<Bytes, Infallible>, SseState)> {
    loop {
        match st.step {
            Step::Start => {
                st.step = Step::Live;
                let hello = format!(
                    "retry: {}\n: imstatus events: snapshot first, then changes; id = seq\n\n",
                    SSE_RETRY.as_millis()
                );
                return Some((Ok(Bytes::from(hello)), st));
            }
            Step::Done => return None,
            Step::Live => {}
        }
        let next = tokio::select! {
            biased;
            _ = st.shutdown.wait_for(|s| *s) => Next::Shutdown,
            event = st.sub.recv() => Next::Event(event),
            () = tokio::time::sleep(st.gw.stream_keep_alive()) => Next::Idle,
        };
        let out = match next {
            Next::Idle => sse_comment("keep-alive"),
            Next::Shutdown => {
                st.step = Step::Done;
                sse_comment("shutting down")
            }
            Next::Event(None) => {
                st.step = Step::Done;
                sse_comment("the event hub stopped")
            }
            Next::Event(Some(event)) if event.seq > st.last_id => {
                let Some(frame) = st.gw.frames.get(&event) else {
                    continue;
                };
                st.last_id = event.seq;
                frame
            }
            Next::Event(Some(event)) => {
                // A resync snapshot older than what this stream already sent: its own frame.
                let Some(json) = event_json(&event) else {
                    continue;
                };
                sse_frame(st.last_id, &json)
            }
        };
        return Some((Ok(out), st));
    }
}

/// `GET /v1/events`: the Server-Sent Events stream.
pub(crate) async fn events(
    State(gw): State<GatewayState>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response, ApiError> {
    if gw.is_shutting_down() {
        return Err(ApiError::unavailable("the gateway is shutting down"));
    }
    let req = stream_request(&gw, &caller, &headers, &uri)?;
    let sub = gw.hub.resume(req.accounts, req.after);
    let state = SseState {
        gw: gw.clone(),
        sub,
        shutdown: gw.shutdown_receiver(),
        last_id: 0,
        step: Step::Start,
        _guard: gw.open_stream(StreamKind::Sse),
    };
    let stream = futures_util::stream::unfold(state, next_sse);
    let mut response = Body::from_stream(stream).into_response();
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert("cache-control", HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// `GET /v1/ws`: the same stream over WebSocket, one JSON text frame per event.
pub(crate) async fn ws(
    State(gw): State<GatewayState>,
    caller: Caller,
    headers: HeaderMap,
    uri: Uri,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if gw.is_shutting_down() {
        return Err(ApiError::unavailable("the gateway is shutting down"));
    }
    let req = stream_request(&gw, &caller, &headers, &uri)?;
    let upgrade = upgrade.map_err(|e| {
        ApiError::bad_request(format!(
            "GET /v1/ws needs a WebSocket upgrade: {}",
            e.body_text()
        ))
    })?;
    let sub = gw.hub.resume(req.accounts, req.after);
    let guard = gw.open_stream(StreamKind::Ws);
    Ok(upgrade
        .max_message_size(WS_MAX_INCOMING)
        .max_frame_size(WS_MAX_INCOMING)
        .max_write_buffer_size(WS_MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| ws_session(gw, socket, sub, guard)))
}

fn close(code: u16, reason: &str) -> Option<CloseFrame> {
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

async fn ws_session(
    gw: Arc<Gateway>,
    socket: WebSocket,
    mut sub: Subscription,
    _guard: StreamGuard,
) {
    let (mut tx, mut rx) = socket.split();
    // Read (and ignore) what the client sends, so pings are answered and a close is seen.
    let (gone_tx, mut gone) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(message)) = rx.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
        let _ = gone_tx.send(());
    });
    let mut shutdown = gw.shutdown_receiver();
    // A ping when nothing was sent for the keep-alive interval: the connection is not idle,
    // and a peer that is gone is noticed.
    let keep_alive = gw.stream_keep_alive();
    let ping = tokio::time::sleep(keep_alive);
    tokio::pin!(ping);
    let frame = loop {
        let message = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break close(1001, "server shutting down"),
            _ = &mut gone => break None,
            event = sub.recv() => {
                let Some(event) = event else {
                    break close(1001, "the event hub stopped");
                };
                let Some(json) = event_json(&event) else {
                    continue;
                };
                Message::Text(json.into())
            }
            () = &mut ping => Message::Ping(Bytes::new()),
        };
        let sent = tokio::time::timeout(gw.ws_send_timeout, tx.send(message)).await;
        ping.as_mut()
            .reset(tokio::time::Instant::now() + keep_alive);
        match sent {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break None,
            Err(_) => {
                gw.metrics
                    .ws_slow_disconnects
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    timeout_ms = gw.ws_send_timeout.as_millis() as u64,
                    "closing a WebSocket client that does not read"
                );
                break close(
                    1008,
                    "too slow: the client did not read; reconnect with last_event_id",
                );
            }
        }
    };
    if let Some(frame) = frame {
        // A slow client gets as long again to read what is queued and then the reason; the
        // close frame is the only thing added to its buffer meanwhile.
        let grace = if frame.code == 1008 {
            gw.ws_send_timeout
        } else {
            WS_CLOSE_TIMEOUT
        };
        let _ = tokio::time::timeout(grace, tx.send(Message::Close(Some(frame)))).await;
    }
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use imstatus_core::{EventKind, SourceKind, Timestamp};

    fn event(seq: u64) -> Arc<Event> {
        Arc::new(Event {
            seq,
            time: Timestamp::default(),
            account: AccountId::new("alice"),
            source: SourceKind::new_static("test"),
            kind: EventKind::ClientStarting,
        })
    }

    #[test]
    fn a_live_event_is_rendered_once_and_shared() {
        let frames = Frames::new();
        let e = event(7);
        let a = frames.get(&e).expect("frame");
        let b = frames.get(&e).expect("frame");
        assert_eq!(
            a.as_ptr(),
            b.as_ptr(),
            "the same bytes, not a second rendering"
        );
        let text = std::str::from_utf8(&a).expect("utf-8");
        assert!(text.starts_with("id: 7\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n"), "{text}");
        assert_eq!(text.matches('\n').count(), 3, "{text}");
        let json: serde_json::Value =
            serde_json::from_str(&text["id: 7\ndata: ".len()..text.len() - 2]).expect("json");
        assert_eq!(json["seq"], 7);
    }

    #[test]
    fn another_event_with_the_same_seq_or_slot_gets_its_own_frame() {
        let frames = Frames::new();
        let first = event(3);
        let f1 = frames.get(&first).expect("frame");
        // A snapshot built for one subscriber can carry the seq of a live event.
        let other = event(3);
        let f2 = frames.get(&other).expect("frame");
        assert_ne!(f1.as_ptr(), f2.as_ptr());
        // An event FRAME_SLOTS later takes the slot; the first is rendered again, correctly.
        let later = event(3 + FRAME_SLOTS as u64);
        let f3 = frames.get(&later).expect("frame");
        assert!(f3.starts_with(format!("id: {}\n", 3 + FRAME_SLOTS).as_bytes()));
        assert_eq!(frames.get(&first).expect("frame"), f1);
    }
}
