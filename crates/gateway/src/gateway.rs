//! The gateway's shared state: the hub, the tokens, the metrics, the options, the open
//! connections and the shutdown signal every stream watches; and how a request's [`Caller`]
//! is found from it.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use imstatus_config::{ServeConfig, TokenConfig};
use imstatus_hub::Hub;
use tokio::sync::watch;

use crate::auth::{Caller, Tokens};
use crate::connection::{Limits, Table};
use crate::error::ApiError;
use crate::frames::Frames;
use crate::metrics::{ExtraMetrics, Metrics};
use crate::snapshots::SnapshotCache;

/// How often an idle SSE stream gets a keep-alive comment (and an idle WebSocket a ping), by
/// default; never less often than half the idle timeout.
pub const DEFAULT_KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How long one WebSocket send may take before the client is closed as too slow, by default.
pub const DEFAULT_WS_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`crate::serve`] waits for requests and streams to finish after shutdown, by default.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a `PUT …/status` may wait for the source, by default.
pub const DEFAULT_SET_STATUS_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared state behind every route; build one, wrap it in an `Arc` ([`GatewayState`]) and
/// hand it to [`crate::app`] or [`crate::serve_on`].
pub struct Gateway {
    pub(crate) hub: Arc<Hub>,
    pub(crate) tokens: Tokens,
    pub(crate) metrics: Metrics,
    pub(crate) keep_alive: Duration,
    pub(crate) ws_send_timeout: Duration,
    pub(crate) drain_timeout: Duration,
    pub(crate) set_status_timeout: Duration,
    /// Without tokens, may anyone set status?
    pub(crate) tokenless_write: bool,
    /// Origins (normalised) whose pages may use the gateway besides its own.
    pub(crate) allowed_origins: HashSet<String>,
    /// The open connections, under the caps of the limits (each one's slot holds it too).
    pub(crate) conns: Arc<Table>,
    /// SSE frames rendered once for every subscriber.
    pub(crate) frames: Frames,
    /// Each account's snapshot as the JSON the read routes answer, rebuilt when it changes.
    pub(crate) snapshots: SnapshotCache,
    /// The size of the last `GET /v1/accounts` answer: the next one's starting capacity.
    pub(crate) list_hint: AtomicUsize,
    /// Series the host adds to `/metrics`.
    pub(crate) extra_metrics: Option<ExtraMetrics>,
    shutdown: watch::Sender<bool>,
    /// Set with `shutdown`: what streams check between events, without a lock.
    stopping: AtomicBool,
    /// Open SSE and WebSocket streams, for the drain.
    streams: watch::Sender<usize>,
}

/// What the router holds: the gateway, shared.
pub type GatewayState = Arc<Gateway>;

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("accounts", &self.hub.accounts())
            .field(
                "tokens",
                &self.tokens.iter().map(|t| &t.name).collect::<Vec<_>>(),
            )
            .field("tokenless_write", &self.tokenless_write)
            .field("allowed_origins", &self.allowed_origins)
            .field("limits", &self.conns.limits())
            .field("shutting_down", &self.is_shutting_down())
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// A gateway over `hub` accepting `tokens` (none = open mode: anyone may read, nobody may
    /// write unless [`Gateway::with_tokenless_write`]; only serve it on loopback, which
    /// [`crate::serve`] enforces), with the default [`Limits`] and no allowed origins.
    pub fn new(hub: Arc<Hub>, tokens: &[TokenConfig]) -> Gateway {
        let routes: Vec<&'static str> = crate::routes().into_iter().map(|(_, p)| p).collect();
        for t in tokens {
            for a in &t.accounts {
                let a = a.trim();
                if a != "*" && !hub.accounts().iter().any(|x| x.as_str() == a) {
                    tracing::warn!(token = %t.name, account = %a, "token names an account that is not configured");
                }
            }
        }
        let snapshots = SnapshotCache::new(&hub);
        Gateway {
            hub,
            tokens: Tokens::new(tokens),
            metrics: Metrics::new(&routes),
            keep_alive: DEFAULT_KEEP_ALIVE,
            ws_send_timeout: DEFAULT_WS_SEND_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            set_status_timeout: DEFAULT_SET_STATUS_TIMEOUT,
            tokenless_write: false,
            allowed_origins: HashSet::new(),
            conns: Arc::new(Table::new(Limits::default())),
            frames: Frames::new(),
            snapshots,
            list_hint: AtomicUsize::new(512),
            extra_metrics: None,
            shutdown: watch::channel(false).0,
            stopping: AtomicBool::new(false),
            streams: watch::channel(0).0,
        }
    }

    /// A gateway with the tokens, origins, write mode and limits of a `[serve]` section.
    pub fn from_config(hub: Arc<Hub>, config: &ServeConfig) -> Gateway {
        Gateway::new(hub, &config.tokens)
            .with_allowed_origins(config.allowed_origins.iter().map(String::as_str))
            .with_tokenless_write(config.tokenless_write)
            .with_limits(Limits::from_config(config))
    }

    /// Adds the series `render` appends (e.g. the cluster role's) to `/metrics`, for callers
    /// that see every account (no token, or a `*` token): they are not per account.
    pub fn with_extra_metrics(mut self, render: ExtraMetrics) -> Self {
        self.extra_metrics = Some(render);
        self
    }

    /// Lets pages of these origins (`https://dash.example`) use the gateway: their requests
    /// are served, with CORS headers. Anything that is not an origin is ignored with a warning
    /// (the config refuses it).
    pub fn with_allowed_origins<'a>(mut self, origins: impl IntoIterator<Item = &'a str>) -> Self {
        for o in origins {
            match imstatus_config::serve::parse_origin(o) {
                Some(origin) => {
                    self.allowed_origins.insert(origin);
                }
                None => {
                    tracing::warn!(origin = %o, "ignoring an allowed origin that is not scheme://host[:port]")
                }
            }
        }
        self
    }

    /// Without tokens, lets anyone who can reach the gateway set status (default: read-only).
    pub fn with_tokenless_write(mut self, allow: bool) -> Self {
        self.tokenless_write = allow;
        self
    }

    /// Sets the caps on connections and their timeouts ([`Limits::default`] otherwise).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.conns = Arc::new(Table::new(limits));
        self
    }

    /// The caps on connections and their timeouts.
    pub fn limits(&self) -> Limits {
        self.conns.limits()
    }

    /// How many connections are open (streams included).
    pub fn open_connections(&self) -> usize {
        self.conns.open()
    }

    /// Whether setting status without a token is allowed (without tokens only).
    pub fn tokenless_write(&self) -> bool {
        self.tokenless_write
    }

    /// The keep-alive interval of streams: the configured one, but at most half the idle
    /// timeout, so that an open stream is never closed as idle.
    pub(crate) fn stream_keep_alive(&self) -> Duration {
        self.keep_alive
            .min(self.conns.limits().idle_timeout / 2)
            .max(Duration::from_millis(10))
    }

    /// Sets the keep-alive interval of SSE streams ([`DEFAULT_KEEP_ALIVE`]).
    pub fn with_keep_alive(mut self, interval: Duration) -> Self {
        self.keep_alive = interval.max(Duration::from_millis(10));
        self
    }

    /// Sets how long one WebSocket send may block before the client is closed as too slow
    /// ([`DEFAULT_WS_SEND_TIMEOUT`]).
    pub fn with_ws_send_timeout(mut self, timeout: Duration) -> Self {
        self.ws_send_timeout = timeout;
        self
    }

    /// Sets how long [`crate::serve`] drains after shutdown ([`DEFAULT_DRAIN_TIMEOUT`]).
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Self {
        self.drain_timeout = timeout;
        self
    }

    /// Sets how long `PUT …/status` waits for the source ([`DEFAULT_SET_STATUS_TIMEOUT`]).
    pub fn with_set_status_timeout(mut self, timeout: Duration) -> Self {
        self.set_status_timeout = timeout;
        self
    }

    /// Wraps it for [`crate::app`].
    pub fn into_state(self) -> GatewayState {
        Arc::new(self)
    }

    /// The hub it serves.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    /// Whether tokens are configured (otherwise: open, loopback-only mode).
    pub fn has_tokens(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Starts the shutdown: every SSE stream ends with a final `: shutting down` comment, every
    /// WebSocket gets a close frame (1001), new streams are refused with 503, and a running
    /// [`crate::serve_on`] stops accepting and drains.
    pub fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.shutdown.send_replace(true);
    }

    /// Whether [`Gateway::shutdown`] was called, from an atomic flag (no lock).
    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Whether [`Gateway::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// Resolves once [`Gateway::shutdown`] was called.
    pub async fn shutdown_started(&self) {
        let mut rx = self.shutdown.subscribe();
        // The sender lives as long as `self`; an error cannot happen while we borrow it.
        let _ = rx.wait_for(|s| *s).await;
    }

    pub(crate) fn shutdown_receiver(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// How many SSE and WebSocket streams are open.
    pub fn open_streams(&self) -> usize {
        *self.streams.borrow()
    }

    /// Resolves once no SSE or WebSocket stream is open.
    pub async fn streams_closed(&self) {
        let mut rx = self.streams.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// How many WebSocket clients were closed for not reading.
    pub fn ws_slow_disconnects(&self) -> u64 {
        self.metrics.ws_slow_disconnects.load(Ordering::Relaxed)
    }

    pub(crate) fn open_stream(self: &Arc<Self>, kind: StreamKind) -> StreamGuard {
        let (gauge, total) = self.stream_counters(kind);
        gauge.fetch_add(1, Ordering::Relaxed);
        total.fetch_add(1, Ordering::Relaxed);
        self.streams.send_modify(|n| *n += 1);
        StreamGuard {
            gateway: self.clone(),
            kind,
        }
    }

    fn stream_counters(&self, kind: StreamKind) -> (&AtomicUsize, &AtomicU64) {
        match kind {
            StreamKind::Sse => (&self.metrics.sse_streams, &self.metrics.sse_total),
            StreamKind::Ws => (&self.metrics.ws_streams, &self.metrics.ws_total),
        }
    }
}

/// Authenticates a request's caller against the gateway's tokens (open mode without tokens).
impl FromRequestParts<GatewayState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        Caller::authenticate(
            &state.tokens,
            state.tokenless_write,
            &parts.headers,
            &parts.uri,
        )
    }
}

/// A transport of the event stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StreamKind {
    Sse,
    Ws,
}

/// Counts one open stream until dropped.
pub(crate) struct StreamGuard {
    gateway: GatewayState,
    kind: StreamKind,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let (gauge, _) = self.gateway.stream_counters(self.kind);
        gauge.fetch_sub(1, Ordering::Relaxed);
        self.gateway
            .streams
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}
