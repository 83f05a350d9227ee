//! The event stream over Server-Sent Events (`GET /v1/events`) and WebSocket (`GET /v1/ws`).
//!
//! Both read a hub [`Subscription`] one event at a time, only when the transport can take the
//! next one: an SSE body is polled by hyper when the socket has room, a WebSocket send is
//! awaited before the next event is read. A client that stops reading therefore never makes
//! the gateway buffer more than one event (plus the kernel's socket buffer); the hub's ring
//! overtakes its subscription instead, and its next event is a `snapshot` with `resync: true`.
//! A WebSocket send that blocks longer than the send timeout closes the connection (1008).

use std::collections::HashSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    Start,
    Live,
    Done,
}

struct SseState {
    sub: Subscription,
    shutdown: watch::Receiver<bool>,
    /// The highest seq sent: `id:` never goes backwards, also across a resync whose
    /// snapshots carry older seqs.
    last_id: u64,
    step: Step,
    _guard: StreamGuard,
}

async fn next_sse(mut st: SseState) -> Option<(Result<SseEvent, Infallible>, SseState)> {
    loop {
        match st.step {
            Step::Start => {
                st.step = Step::Live;
                let hello = SseEvent::default()
                    .retry(SSE_RETRY)
                    .comment("imstatus events: snapshot first, then changes; id = seq");
                return Some((Ok(hello), st));
            }
            Step::Done => return None,
            Step::Live => {}
        }
        let next = tokio::select! {
            biased;
            _ = st.shutdown.wait_for(|s| *s) => None,
            event = st.sub.recv() => Some(event),
        };
        let out = match next {
            None => {
                st.step = Step::Done;
                SseEvent::default().comment("shutting down")
            }
            Some(None) => {
                st.step = Step::Done;
                SseEvent::default().comment("the event hub stopped")
            }
            Some(Some(event)) => {
                let Some(json) = event_json(&event) else {
                    continue;
                };
                st.last_id = st.last_id.max(event.seq);
                SseEvent::default().id(st.last_id.to_string()).data(json)
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
        sub,
        shutdown: gw.shutdown_receiver(),
        last_id: 0,
        step: Step::Start,
        _guard: gw.open_stream(StreamKind::Sse),
    };
    let stream = futures_util::stream::unfold(state, next_sse);
    let mut response = Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(gw.keep_alive).text("keep-alive"))
        .into_response();
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
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
    let frame = loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break close(1001, "server shutting down"),
            _ = &mut gone => break None,
            event = sub.recv() => event,
        };
        let Some(event) = next else {
            break close(1001, "the event hub stopped");
        };
        let Some(json) = event_json(&event) else {
            continue;
        };
        match tokio::time::timeout(gw.ws_send_timeout, tx.send(Message::Text(json.into()))).await {
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
