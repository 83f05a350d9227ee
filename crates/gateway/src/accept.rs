//! The accept loop: every accepted socket gets a slot under the caps (see
//! [`crate::connection`]) or a 503, and is then served by hyper with the timeouts until it
//! closes or the gateway shuts down.
//!
//! A socket that gets no slot is answered with a 503 JSON error and closed at once, so a flood
//! never holds more descriptors than the caps plus the one being refused, and a line is logged
//! at most every [`LOG_EVERY`] per limit with the number refused since the last line.
//!
//! HTTP/1 is served by hyper with a timer: a client has `header_read_timeout` to send a whole
//! request head, counted from when the connection opens or the previous response ends (which
//! therefore also closes idle keep-alive connections). [`Tracked`] closes a connection on which
//! no byte moved either way for `idle_timeout` (a stalled request body, a response nobody
//! reads, a silent WebSocket); SSE and WebSocket streams send keep-alives more often than
//! that, so an open stream is never idle.

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, Ready};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::http::Request;
use axum::response::Response;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::{TowerToHyperService, TowerToHyperServiceFuture};
use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};

use crate::auth::Remembered;
use crate::connection::{Peer, Refusal, Slot};
use crate::error::ApiError;
use crate::fast;
use crate::gateway::GatewayState;

/// How often, at most, a limit that keeps being hit is logged.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long to wait before accepting again after an error such as "too many open files".
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// Counts occurrences and says when to log: the first at once, then at most one line per
/// `every`, carrying how many happened since the last line. The caller passes the time.
#[derive(Debug)]
pub(crate) struct Throttle {
    every: Duration,
    last: Option<Instant>,
    count: u64,
}

impl Throttle {
    pub(crate) fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            last: None,
            count: 0,
        }
    }

    /// Counts one occurrence at `now`; `Some(n)` when a line is due, `n` occurrences since
    /// the last line (this one included).
    pub(crate) fn hit(&mut self, now: Instant) -> Option<u64> {
        self.count += 1;
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.count))
            }
        }
    }
}

/// The accept loop's state.
struct Acceptor {
    gw: GatewayState,
    router: Router,
    http: http1::Builder,
    full_log: Throttle,
    per_peer_log: Throttle,
    error_log: Throttle,
    /// Pre-rendered answers to refused connections.
    full_answer: Vec<u8>,
    per_peer_answer: Vec<u8>,
}

/// Accepts connections on `listener` until `stop` resolves; then the listener is closed.
pub(crate) async fn accept_until(
    gw: &GatewayState,
    listener: TcpListener,
    router: Router,
    stop: impl Future<Output = ()>,
) {
    let limits = gw.conns.limits();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true);
    let refusal = |detail: String, hint: &'static str| {
        http_answer(&ApiError::unavailable(detail).with_hint(hint))
    };
    let mut acceptor = Acceptor {
        gw: gw.clone(),
        router,
        http,
        full_log: Throttle::new(LOG_EVERY),
        per_peer_log: Throttle::new(LOG_EVERY),
        error_log: Throttle::new(LOG_EVERY),
        full_answer: refusal(
            format!(
                "the gateway has {} connections open, its limit (max_connections)",
                limits.max_connections
            ),
            "retry in a moment; idle connections are closed after header_read_timeout",
        ),
        per_peer_answer: refusal(
            format!(
                "your address has {} connections open, the limit per address \
                 (max_connections_per_ip)",
                limits.max_connections_per_ip
            ),
            "close connections you do not use, or retry in a moment",
        ),
    };
    tokio::pin!(stop);
    loop {
        tokio::select! {
            biased;
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, addr)) => acceptor.admit(tcp, addr),
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    if let Some(n) = acceptor.error_log.hit(Instant::now()) {
                        tracing::error!(error = %e, errors = n, "cannot accept connections; retrying");
                    }
                    tokio::select! {
                        biased;
                        () = &mut stop => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    }
                }
            },
        }
    }
}

impl Acceptor {
    fn admit(&mut self, tcp: TcpStream, addr: SocketAddr) {
        let slot = match self.gw.conns.slot(Peer::of(addr.ip())) {
            Ok(slot) => slot,
            Err(refusal) => return self.refuse(tcp, refusal),
        };
        // Events are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        self.gw
            .metrics
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let idle = self.gw.conns.limits().idle_timeout;
        let io = TokioIo::new(Tracked::new(tcp, idle, self.gw.clone(), slot));
        let service = Routes {
            gw: self.gw.clone(),
            router: TowerToHyperService::new(self.router.clone()),
            remembered: Remembered::default(),
        };
        let conn = self.http.serve_connection(io, service).with_upgrades();
        tokio::spawn(serve(self.gw.clone(), conn));
    }

    /// Answers 503 and closes, logging at most once per [`LOG_EVERY`] per limit.
    fn refuse(&mut self, tcp: TcpStream, refusal: Refusal) {
        let limits = self.gw.conns.limits();
        let now = Instant::now();
        let answer = match refusal {
            Refusal::Full => {
                self.gw.metrics.refused_max.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.full_log.hit(now) {
                    tracing::warn!(
                        limit = limits.max_connections,
                        refused = n,
                        "connection limit reached (max_connections): refusing new connections \
                         with 503 until some close; `refused` counts them since the last such line"
                    );
                }
                &self.full_answer
            }
            Refusal::PerPeer(peer) => {
                self.gw
                    .metrics
                    .refused_per_ip
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.per_peer_log.hit(now) {
                    tracing::warn!(
                        %peer,
                        limit = limits.max_connections_per_ip,
                        refused = n,
                        "connection limit per address reached (max_connections_per_ip): refusing \
                         this address's new connections with 503 until some close; `refused` \
                         counts refusals of any address since the last such line"
                    );
                }
                &self.per_peer_answer
            }
        };
        // Without blocking: take what the client already sent (so that closing sends FIN, not
        // RST, which could destroy the answer), answer, close.
        let mut buf = [0u8; 4096];
        for _ in 0..4 {
            match tcp.try_read(&mut buf) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        let _ = tcp.try_write(answer);
    }
}

/// A complete HTTP/1.1 response carrying `error`, to write on a socket that HTTP never sees.
fn http_answer(error: &ApiError) -> Vec<u8> {
    let body = error.to_json();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n",
        error.status().as_u16(),
        error.status().canonical_reason().unwrap_or_default(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

/// Errors of one connection that the listener survives (as `axum::serve` treats them).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// A connection's requests: the plain account reads answered at once ([`fast`]), the rest by
/// the router.
struct Routes {
    gw: GatewayState,
    router: TowerToHyperService<Router>,
    /// The bearer token this connection's plain reads presented last and had accepted.
    remembered: Remembered,
}

impl hyper::service::Service<Request<Incoming>> for Routes {
    type Response = Response;
    type Error = Infallible;
    type Future = RoutesFuture;

    fn call(&self, request: Request<Incoming>) -> RoutesFuture {
        match fast::answer(&self.gw, &request, &self.remembered) {
            Some(response) => RoutesFuture::Answered {
                inner: std::future::ready(Ok(response)),
            },
            None => RoutesFuture::Routed {
                inner: self.router.call(request),
            },
        }
    }
}

pin_project! {
    /// The answer of [`Routes`].
    #[project = RoutesProj]
    enum RoutesFuture {
        Answered { #[pin] inner: Ready<Result<Response, Infallible>> },
        Routed { #[pin] inner: TowerToHyperServiceFuture<Router, Request<Incoming>> },
    }
}

impl Future for RoutesFuture {
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            RoutesProj::Answered { inner } => inner.poll(cx),
            RoutesProj::Routed { inner } => inner.poll(cx),
        }
    }
}

/// One HTTP/1 connection, upgradable to a WebSocket.
type Connection = http1::UpgradeableConnection<TokioIo<Tracked>, Routes>;

/// Serves one connection until it ends; on shutdown, lets the request in flight finish and
/// closes it (an SSE stream ends by itself then, a WebSocket is closed by its session).
async fn serve(gw: GatewayState, conn: Connection) {
    let mut stop = gw.shutdown_receiver();
    tokio::pin!(conn);
    let mut stopping = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    let Err(e) = result else { return };
    if e.is_timeout() {
        gw.metrics.header_timeouts.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("closed a connection: no complete request head within header_read_timeout");
    } else {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// The error [`Tracked`] fails a read or write with after `idle_timeout` without traffic.
#[derive(Debug)]
struct IdleTimeout;

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no data moved for idle_timeout")
    }
}

impl std::error::Error for IdleTimeout {}

/// A connection's socket with its slot and the idle timeout: a read or write that waits
/// while nothing has moved either way for `idle` fails with [`IdleTimeout`]. Each direction
/// has its own timer (reads and writes of an upgraded WebSocket are polled by different
/// tasks); a timer is only reset when it fires early, so traffic costs one clock read.
pub(crate) struct Tracked {
    tcp: TcpStream,
    idle: Duration,
    /// When a byte last moved either way.
    last: Instant,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Pin<Box<Sleep>>,
    /// Whether the idle timeout was counted (once per connection).
    timed_out: bool,
    /// Whose metrics count the idle timeout.
    gw: GatewayState,
    /// The connection's place under the caps, given back when the socket is dropped.
    _slot: Slot,
}

impl Tracked {
    fn new(tcp: TcpStream, idle: Duration, gw: GatewayState, slot: Slot) -> Tracked {
        let now = Instant::now();
        Tracked {
            tcp,
            idle,
            last: now,
            read_timer: Box::pin(tokio::time::sleep_until(now + idle)),
            write_timer: Box::pin(tokio::time::sleep_until(now + idle)),
            timed_out: false,
            gw,
            _slot: slot,
        }
    }

    /// `Ready` with the error once nothing has moved for `idle`; otherwise registers to be
    /// woken when that could be the case.
    fn poll_idle(&mut self, write: bool, cx: &mut Context<'_>) -> Poll<io::Error> {
        let timer = if write {
            &mut self.write_timer
        } else {
            &mut self.read_timer
        };
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let deadline = self.last + self.idle;
            if Instant::now() >= deadline {
                break;
            }
            timer.as_mut().reset(deadline);
        }
        if !std::mem::replace(&mut self.timed_out, true) {
            self.gw
                .metrics
                .idle_timeouts
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("closing a connection: nothing moved for idle_timeout");
        }
        Poll::Ready(io::Error::new(io::ErrorKind::TimedOut, IdleTimeout))
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.tcp).poll_read(cx, buf) {
            Poll::Ready(result) => {
                if buf.filled().len() > before {
                    this.last = Instant::now();
                }
                Poll::Ready(result)
            }
            Poll::Pending => this.poll_idle(false, cx).map(Err),
        }
    }
}

impl Tracked {
    fn wrote(
        &mut self,
        result: Poll<io::Result<usize>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<usize>> {
        match result {
            Poll::Ready(Ok(n)) => {
                if n > 0 {
                    self.last = Instant::now();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => self.poll_idle(true, cx).map(Err),
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.tcp).poll_write(cx, buf);
        this.wrote(result, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        this.wrote(result, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_logs_the_first_then_once_per_period_with_the_count() {
        let start = Instant::now();
        let mut t = Throttle::new(Duration::from_secs(10));
        let at = |ms: u64| start + Duration::from_millis(ms);
        assert_eq!(t.hit(at(0)), Some(1));
        let quiet: Vec<_> = (1..=500).map(|i| t.hit(at(i * 10))).collect();
        assert!(
            quiet.iter().all(Option::is_none),
            "one line, not one per refusal"
        );
        assert_eq!(
            t.hit(at(10_000)),
            Some(501),
            "then the count since the last line"
        );
        assert_eq!(t.hit(at(10_001)), None);
        assert_eq!(t.hit(at(30_000)), Some(2));
    }
}
