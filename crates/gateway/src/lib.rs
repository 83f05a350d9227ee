//! The imstatus gateway (`imstatus serve`): the hub's answers over HTTP, Server-Sent Events and
//! WebSocket, with a live dashboard, status badges, Prometheus metrics and bearer tokens.
//!
//! The design in a paragraph: the gateway is a thin view of one [`Hub`](imstatus_hub::Hub).
//! Reads answer from each account's snapshot kept as JSON bytes, rebuilt only when the hub's
//! version of that account moved (the hub's lock is held just to clone the state,
//! never while serialising; `GET /v1/accounts` reads each account on its own); streams are hub
//! [`Subscription`](imstatus_hub::Subscription)s pulled by the transport, each event's frame
//! rendered once per worker thread and shared, so a slow client never makes the gateway
//! buffer: the hub's
//! bounded ring overtakes it and it gets a `snapshot` with `resync: true` (and a WebSocket
//! whose send blocks past a timeout is closed with a reason). Tokens are stored only as
//! SHA-256, compared in constant time, and each is limited to accounts; an account outside a
//! token's scope is indistinguishable from one that does not exist. Without tokens the gateway
//! serves loopback only, and [`serve`] refuses to start anywhere else. Everything is built as
//! one axum [`Router`] by [`app`], which tests drive with tower's `oneshot`; [`serve_on`] runs
//! it on hyper's HTTP/1 server from its own accept loop rather than `axum::serve`, because
//! that is where a flood is stopped: a cap on connections (in all and per address) that
//! answers the excess with 503 instead of holding descriptors, a header-read timeout (hyper's,
//! which needs a timer that `axum::serve` does not give it) and an idle timeout.
//!
//! # API
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /v1/accounts` | JSON array: one snapshot per account the token may see |
//! | `GET /v1/accounts/{name}` | the account's snapshot |
//! | `GET /v1/accounts/{name}/contacts` | `{"account","seq","time","contacts":[{contact,availability,message}]}` |
//! | `PUT /v1/accounts/{name}/status` | body `{"availability": "away", "message": "lunch"}` → 204; write scope |
//! | `GET /v1/accounts/{name}/badge.svg` | an SVG badge (`?label=` overrides the left text) |
//! | `GET /v1/events` | Server-Sent Events (below) |
//! | `GET /v1/ws` | the same stream over WebSocket |
//! | `GET /` | the live dashboard (`/dashboard.js`, `/dashboard.css`) |
//! | `GET /openapi.json` | OpenAPI 3.1 description of every route |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /healthz` | `{"status":"ok"}`; 503 `{"status":"shutting_down"}` while draining |
//!
//! A snapshot is the `snapshot` event of design §1 (`{"seq", "time", "account", "source",
//! "event": "snapshot", "client", "session", "availability", "message", "mistatus",
//! "resources", "contacts", "since"}`), plus `"source_error": {"code", "hresult", "detail",
//! "hint"}` while the account's source is down.
//!
//! **Event stream.** `GET /v1/events` answers `text/event-stream`. It starts with a comment and
//! `retry: 1000`, then one snapshot per account, then every change, each as
//!
//! ```text
//! id: 42
//! data: {"seq":42,"time":"…","account":"alice","source":"xmpp","event":"status_changed",…}
//! ```
//!
//! There is no `event:` line: every event arrives as an unnamed message (`EventSource.onmessage`)
//! and its JSON carries the event name in `"event"`, exactly like `imstatus watch --json`.
//! `id:` is the event's `seq` (it never goes backwards: after a resync whose snapshots carry
//! older seqs it repeats the highest seq sent). Idle streams get a `: keep-alive` comment every
//! 15 s. To resume, send `Last-Event-ID: <seq>` (browsers do it by themselves) or
//! `?last_event_id=<seq>`: the events after it are replayed from the hub's ring, or, if the
//! ring no longer holds them (or the id is from another run of the gateway and ahead of it),
//! fresh snapshots with `"resync": true` come first. Seqs never repeat across restarts (the hub
//! numbers from the start time in microseconds), so an id from an earlier run always leads to
//! a resync, never to another run's events. `?accounts=a,b` limits
//! the stream to some accounts. On shutdown the stream ends with a `: shutting down` comment.
//! `GET /v1/ws` sends the same JSON objects as text frames (same parameters; ignore anything
//! the client sends), a ping after 15 s without an event, and closes with 1001 on shutdown or
//! 1008 when the client does not read for the send timeout (30 s).
//!
//! **Auth.** `Authorization: Bearer <token>`; clients that cannot set headers (`EventSource`,
//! `<img>`, browser WebSockets) may pass `?access_token=<token>` instead. Without a token (or
//! with an unknown one) the answer is 401; an account outside the token's accounts is 404,
//! exactly like one that does not exist; `PUT …/status` with a read-only token is 403
//! `access_denied`. `/`, `/dashboard.*`, `/openapi.json` and `/healthz` need no token. With no
//! tokens configured every read is allowed, but only on loopback, and only when `Host` is a
//! loopback name (`localhost`, `127.0.0.1`, `[::1]`), which defeats DNS rebinding; writes are
//! refused (403 `access_denied`) unless `[serve] tokenless_write = true`, since any local user
//! or process could otherwise set the status. `/metrics` shows a token limited to some
//! accounts only the per-account series of those accounts.
//!
//! **Pages of other sites.** A browser lets any page open a WebSocket to the gateway, and
//! without tokens nothing else would stop it. So every route refuses (403 `access_denied`) a
//! request whose `Origin` is neither the gateway's own (`http://` + `Host`) nor listed in
//! `[serve] allowed_origins`, and `Origin: null`; allowed origins get CORS headers. Without
//! tokens, a request a browser marks as made for a page of another site (`Sec-Fetch-Site:
//! cross-site`/`same-site`, e.g. an `<img>` badge whose size would tell the status) is refused
//! too, unless it is a top-level navigation. Clients that are not browsers send neither.
//!
//! **Connections.** At most `max_connections` at once (512 by default) and
//! `max_connections_per_ip` from one address or IPv6 /64 (64); a connection over a cap gets a
//! 503 JSON error and is closed, and a warning is logged at most every 10 s per cap. A client
//! has `header_read_timeout` (10 s) to send a request head, counted from when the connection
//! opens or the previous response ends; a connection on which nothing moves for
//! `idle_timeout` (60 s) is closed. Streams are never idle: SSE sends a keep-alive comment and
//! WebSocket a ping after 15 s (or half the idle timeout, if shorter) without an event. See
//! [`Limits`].
//!
//! **Errors** are JSON: `{"error": code, "hresult": "0x…", "detail": …, "hint": …}` with the
//! design's codes (`unsupported` → 501, `not_signed_in`/`client_not_running` → 409,
//! `access_denied` → 403, `timeout` → 504) and HTTP-level ones (`unauthorized`, `not_found`,
//! `bad_request`, `method_not_allowed`, `payload_too_large`, `unavailable`, `internal`); see
//! [`ApiError`].
//!
//! **Shutdown.** When the future given to [`serve`] resolves (the CLI maps SIGTERM and Ctrl-C
//! to it), the gateway stops accepting, ends every SSE stream with a final comment and closes
//! every WebSocket with 1001, lets in-flight requests finish, and returns after at most the
//! drain timeout (10 s). `systemd/imstatus.service` in this crate is a user unit that runs it.

mod accept;
mod api;
mod auth;
mod badge;
mod connection;
mod dashboard;
mod error;
mod fast;
mod frames;
mod gateway;
mod metrics;
mod origin;
mod snapshots;
mod stream;
mod track;

use std::future::Future;
use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::http::Method;
use axum::routing::{get, put, MethodRouter};
use axum::Router;
use tokio::net::TcpListener;

pub use auth::{hash_token, hash_token_hex, Caller};
pub use connection::Limits;
pub use error::{ApiError, Error};
pub use gateway::{
    Gateway, GatewayState, DEFAULT_DRAIN_TIMEOUT, DEFAULT_KEEP_ALIVE, DEFAULT_SET_STATUS_TIMEOUT,
    DEFAULT_WS_SEND_TIMEOUT,
};
pub use metrics::ExtraMetrics;

/// The OpenAPI 3.1 document served at `/openapi.json`, before [`openapi_document`] fills in
/// the source kinds.
pub const OPENAPI_JSON: &str = include_str!("openapi.json");

/// The OpenAPI document for a gateway serving accounts of the source kinds `kinds`: the
/// `source` field of a snapshot lists exactly those (the gateway names no source itself).
pub fn openapi_document(kinds: &[imstatus_core::SourceKind]) -> serde_json::Value {
    let mut doc: serde_json::Value =
        serde_json::from_str(OPENAPI_JSON).unwrap_or(serde_json::Value::Null);
    let mut names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if let Some(source) = doc
        .pointer_mut("/components/schemas/Snapshot/properties/source")
        .and_then(serde_json::Value::as_object_mut)
    {
        source.insert("enum".into(), serde_json::json!(names));
    }
    doc
}

/// The routing table: the single source of both [`app`] and [`routes`].
fn table() -> Vec<(Method, &'static str, MethodRouter<GatewayState>)> {
    vec![
        (Method::GET, "/", get(api::dashboard)),
        (Method::GET, "/dashboard.js", get(api::dashboard_js)),
        (Method::GET, "/dashboard.css", get(api::dashboard_css)),
        (Method::GET, "/healthz", get(api::healthz)),
        (Method::GET, "/metrics", get(api::metrics)),
        (Method::GET, "/openapi.json", get(api::openapi)),
        (Method::GET, "/v1/accounts", get(api::list_accounts)),
        (Method::GET, fast::ACCOUNT_ROUTE, get(api::get_account)),
        (
            Method::GET,
            "/v1/accounts/{name}/contacts",
            get(api::get_contacts),
        ),
        (
            Method::PUT,
            "/v1/accounts/{name}/status",
            put(api::set_status).layer(DefaultBodyLimit::max(api::STATUS_BODY_LIMIT)),
        ),
        (
            Method::GET,
            "/v1/accounts/{name}/badge.svg",
            get(api::badge),
        ),
        (Method::GET, "/v1/events", get(stream::events)),
        (Method::GET, "/v1/ws", get(stream::ws)),
    ]
}

/// Every route [`app`] serves, as (method, path template). `GET` routes also answer `HEAD`.
pub fn routes() -> Vec<(Method, &'static str)> {
    table().into_iter().map(|(m, p, _)| (m, p)).collect()
}

/// The gateway's router: every route of [`routes`], JSON 404/405 fallbacks, the per-route
/// latency metrics, and, around everything, the refusal of cross-site requests (and CORS
/// for allowed origins).
pub fn app(state: GatewayState) -> Router {
    let mut router = Router::new();
    for (_, path, handler) in table() {
        let track = track::Track {
            gw: state.clone(),
            route: path,
        };
        router = router.route(path, handler.layer(track));
    }
    router
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(origin::Check { gw: state.clone() })
        .with_state(state)
}

/// Refuses an address reachable from other machines when no tokens are configured.
pub fn check_listen(addr: SocketAddr, has_tokens: bool) -> Result<(), Error> {
    if has_tokens || addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(Error::PublicWithoutTokens { addr })
    }
}

/// Serves `gateway` (e.g. [`Gateway::from_config`]) on `listen` until `shutdown` resolves,
/// then drains (see the crate docs). Refuses to start on a non-loopback address without
/// tokens.
pub async fn serve(
    gateway: Gateway,
    listen: SocketAddr,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    check_listen(listen, gateway.has_tokens())?;
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    serve_on(listener, gateway.into_state(), shutdown).await
}

/// Serves `gateway` on an already bound listener (e.g. `127.0.0.1:0` in tests) until
/// `shutdown` resolves or [`Gateway::shutdown`] is called, then drains for at most the
/// gateway's drain timeout. Refuses a non-loopback listener without tokens. Connections are
/// capped and timed out by the gateway's [`Limits`].
pub async fn serve_on(
    listener: TcpListener,
    gateway: GatewayState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let addr = listener.local_addr().map_err(Error::Serve)?;
    check_listen(addr, gateway.has_tokens())?;
    let limits = gateway.limits();
    tracing::info!(
        %addr,
        tokens = gateway.has_tokens(),
        tokenless_write = gateway.tokenless_write(),
        max_connections = limits.max_connections,
        max_connections_per_ip = limits.max_connections_per_ip,
        header_read_timeout_ms = limits.header_read_timeout.as_millis() as u64,
        idle_timeout_ms = limits.idle_timeout.as_millis() as u64,
        "gateway listening"
    );
    let stop = {
        let gw = gateway.clone();
        async move {
            tokio::select! {
                () = shutdown => {}
                () = gw.shutdown_started() => {}
            }
            gw.shutdown();
        }
    };
    // Returns once shutdown started, with the listener closed.
    accept::accept_until(&gateway, listener, app(gateway.clone()), stop).await;
    tracing::info!(%addr, "gateway draining");
    let drained = tokio::time::timeout(gateway.drain_timeout, async {
        gateway.conns.all_closed().await;
        gateway.streams_closed().await;
    })
    .await;
    match drained {
        Ok(()) => tracing::info!(%addr, "gateway stopped"),
        Err(_) => tracing::warn!(
            %addr,
            open_connections = gateway.open_connections(),
            open_streams = gateway.open_streams(),
            "gateway stopped with connections still open after the drain timeout"
        ),
    }
    Ok(())
}
