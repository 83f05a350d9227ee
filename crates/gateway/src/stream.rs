//! The event stream over Server-Sent Events (`GET /v1/events`) and WebSocket (`GET /v1/ws`).
//!
//! Both read a hub [`Subscription`] only when the transport can take more: an SSE body is
//! polled by hyper when its write buffer has room (hyper pulls every frame that is ready, up
//! to 16, into one vectored write), a WebSocket session feeds what is ready (at most
//! [`WS_BATCH`] events) and flushes them in one go before it reads again. A client that stops
//! reading therefore never makes the gateway buffer more than a batch (plus the kernel's
//! socket buffer); the hub's ring overtakes its subscription instead, and its next event is a
//! `snapshot` with `resync: true`. A WebSocket batch that blocks longer than the send timeout
//! closes the connection (1008).
//!
//! Every live event goes to every subscriber that may see it, so its frames (SSE and
//! WebSocket, one JSON) are rendered once per worker thread and the same bytes are written to
//! each stream (see [`Frames`](crate::frames::Frames)). Waiting for the next event registers
//! nothing new per event: the shutdown signal and the keep-alive timer are made once per
//! stream, the timer is only moved when it fires early, and while events are ready neither is
//! polled (an atomic flag ends a stream whose events never stop).

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
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
use tokio::time::{Instant, Sleep};

use crate::auth::{query_params, Caller};
use crate::error::{printable, ApiError};
use crate::frames::event_json;
use crate::gateway::{Gateway, GatewayState, StreamGuard, StreamKind};

/// The reconnection delay the SSE stream asks `EventSource` clients to use.
const SSE_RETRY: Duration = Duration::from_secs(1);
/// The most events a WebSocket session writes before it flushes them in one go.
const WS_BATCH: usize = 64;
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

/// One SSE frame: `id: <id>` and `data: <json>` (compact JSON has no raw newline).
fn sse_frame(id: u64, json: &str) -> Bytes {
    Bytes::from(format!("id: {id}\ndata: {json}\n\n"))
}

/// An SSE comment frame (`: text`).
fn sse_comment(text: &str) -> Bytes {
    Bytes::from(format!(": {text}\n\n"))
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
    /// Resolves on shutdown; made once per stream, so that waiting for the next event does
    /// not register with the shutdown signal anew each time.
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Fires at the latest keep-alive deadline it was set to; only reset when it fires before
    /// `last_sent + keep_alive` (an event costs a clock read, not a timer update).
    keep_alive: Pin<Box<Sleep>>,
    /// When something was last handed to the transport.
    last_sent: Instant,
    /// The highest seq sent: `id:` never goes backwards, also across a resync whose
    /// snapshots carry older seqs.
    last_id: u64,
    step: Step,
    _guard: StreamGuard,
}

/// A future that resolves once the gateway shuts down.
fn shutdown_signal(gw: &Gateway) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let mut rx = gw.shutdown_receiver();
    Box::pin(async move {
        // The sender lives as long as the gateway; an error means it is gone: stop too.
        let _ = rx.wait_for(|s| *s).await;
    })
}

async fn next_sse(mut st: Box<SseState>) -> Option<(Result<Bytes, Infallible>, Box<SseState>)> {
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
        let keep_alive = st.gw.stream_keep_alive();
        // Events first: while they are ready, neither the shutdown signal nor the timer is
        // polled (hyper keeps pulling ready frames into one vectored write); the flag still
        // ends a stream whose events never stop.
        let next = if st.gw.is_stopping() {
            Next::Shutdown
        } else {
            tokio::select! {
                biased;
                event = st.sub.recv() => Next::Event(event),
                () = &mut st.shutdown => Next::Shutdown,
                () = &mut st.keep_alive => {
                    let due = st.last_sent + keep_alive;
                    if Instant::now() < due {
                        st.keep_alive.as_mut().reset(due);
                        continue;
                    }
                    Next::Idle
                }
            }
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
                frame.sse
            }
            Next::Event(Some(event)) => {
                // A resync snapshot older than what this stream already sent: its own frame.
                let Some(json) = event_json(&event) else {
                    continue;
                };
                sse_frame(st.last_id, &json)
            }
        };
        st.last_sent = Instant::now();
        if st.keep_alive.is_elapsed() {
            st.keep_alive.as_mut().reset(st.last_sent + keep_alive);
        }
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
    let now = Instant::now();
    let state = SseState {
        gw: gw.clone(),
        sub,
        shutdown: shutdown_signal(&gw),
        keep_alive: Box::pin(tokio::time::sleep_until(now + gw.stream_keep_alive())),
        last_sent: now,
        last_id: 0,
        step: Step::Start,
        _guard: gw.open_stream(StreamKind::Sse),
    };
    // Boxed: `unfold` moves its state into each item's future and back out with the item;
    // moving a pointer instead of the whole state removed the memcpy that took 4 % of the
    // server's CPU in B7's profile (5,000 subscribers, 100 changes/s).
    let stream = futures_util::stream::unfold(Box::new(state), next_sse);
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
    let mut shutdown = shutdown_signal(&gw);
    // A ping when nothing was sent for the keep-alive interval: the connection is not idle,
    // and a peer that is gone is noticed. The timer is only reset when it fires early.
    let keep_alive = gw.stream_keep_alive();
    let mut last_sent = Instant::now();
    let ping = tokio::time::sleep_until(last_sent + keep_alive);
    tokio::pin!(ping);
    let frame = loop {
        if gw.is_stopping() {
            break close(1001, "server shutting down");
        }
        let first = tokio::select! {
            biased;
            _ = &mut gone => break None,
            event = sub.recv() => {
                let Some(event) = event else {
                    break close(1001, "the event hub stopped");
                };
                let Some(frame) = gw.frames.get(&event) else {
                    continue;
                };
                Message::Text(frame.ws)
            }
            () = &mut shutdown => break close(1001, "server shutting down"),
            () = &mut ping => {
                let due = last_sent + keep_alive;
                if Instant::now() < due {
                    ping.as_mut().reset(due);
                    continue;
                }
                Message::Ping(Bytes::new())
            }
        };
        // Everything else that is ready goes out with it, in one flush (one write when it
        // fits the socket); the time limit covers the whole batch.
        let batch = async {
            tx.feed(first).await?;
            for _ in 1..WS_BATCH {
                let Some(event) = sub.try_recv() else { break };
                if let Some(frame) = gw.frames.get(&event) {
                    tx.feed(Message::Text(frame.ws)).await?;
                }
            }
            tx.flush().await
        };
        let sent = tokio::time::timeout(gw.ws_send_timeout, batch).await;
        last_sent = Instant::now();
        if ping.is_elapsed() {
            ping.as_mut().reset(last_sent + keep_alive);
        }
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
