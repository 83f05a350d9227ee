//! Connections: the accept loop, the caps on open connections and the timeouts.
//!
//! Every accepted socket first takes a slot: one of `max_connections` (a semaphore) and one of
//! `max_connections_per_ip` for its address (a counter map; an IPv6 peer counts by its /64,
//! which one host usually owns whole). A socket that gets no slot is answered with a 503 JSON
//! error and closed at once, so a flood never holds more descriptors than the caps plus the
//! one being refused, and a line is logged at most every [`LOG_EVERY`] per limit with the
//! number refused since the last line. The slot lives inside the socket's I/O object
//! ([`Tracked`]), so it is given back when the socket closes, whether hyper or an upgraded
//! WebSocket held it last: streams count against the caps like any other connection. The
//! counter map holds one entry per address with open connections, so it never has more than
//! `max_connections` entries.
//!
//! HTTP/1 is served by hyper with a timer: a client has `header_read_timeout` to send a whole
//! request head, counted from when the connection opens or the previous response ends (which
//! therefore also closes idle keep-alive connections). [`Tracked`] closes a connection on which
//! no byte moved either way for `idle_timeout` (a stalled request body, a response nobody
//! reads, a silent WebSocket); SSE and WebSocket streams send keep-alives more often than
//! that, so an open stream is never idle.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use imstatus_config::ServeConfig;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};

use crate::error::ApiError;
use crate::gateway::GatewayState;

/// How often, at most, a limit that keeps being hit is logged.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long to wait before accepting again after an error such as "too many open files".
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(500);

/// Caps on connections and their timeouts (`[serve] max_connections`, `max_connections_per_ip`,
/// `header_read_timeout`, `idle_timeout`; see docs/gateway.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, all clients together; more are refused with 503.
    pub max_connections: usize,
    /// Connections open at once from one address (IPv6: one /64); more are refused with 503.
    pub max_connections_per_ip: usize,
    /// How long a client has to send a whole request head, counted from when the connection
    /// opens or the previous response ends.
    pub header_read_timeout: Duration,
    /// How long a connection may go without a byte moving either way.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_config(&ServeConfig::default())
    }
}

impl Limits {
    /// The limits of a `[serve]` section.
    pub fn from_config(config: &ServeConfig) -> Limits {
        Limits {
            max_connections: config.max_connections,
            max_connections_per_ip: config.max_connections_per_ip,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
        }
    }

    /// The same limits, made usable: at least one connection, at most the semaphore's maximum,
    /// no zero timeouts.
    fn sane(self) -> Limits {
        let max = self.max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Limits {
            max_connections: max,
            max_connections_per_ip: self.max_connections_per_ip.clamp(1, max),
            header_read_timeout: self.header_read_timeout.max(Duration::from_millis(1)),
            idle_timeout: self.idle_timeout.max(Duration::from_millis(1)),
        }
    }
}

/// What one peer counts as for `max_connections_per_ip`: an IPv4 address, or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Peer {
    V4(Ipv4Addr),
    V6Net([u8; 8]),
}

impl Peer {
    pub(crate) fn of(ip: IpAddr) -> Peer {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Peer::V4(v4),
            IpAddr::V6(v6) => {
                let mut net = [0u8; 8];
                net.copy_from_slice(&v6.octets()[..8]);
                Peer::V6Net(net)
            }
        }
    }
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::V4(v4) => write!(f, "{v4}"),
            Peer::V6Net(net) => {
                let mut octets = [0u8; 16];
                octets[..8].copy_from_slice(net);
                write!(f, "{}/64", std::net::Ipv6Addr::from(octets))
            }
        }
    }
}

/// The open connections: slots under the two caps, and their count.
pub(crate) struct Table {
    limits: Limits,
    slots: Arc<Semaphore>,
    /// Open connections per peer; an entry exists only while its count is above zero.
    per_peer: Mutex<HashMap<Peer, usize>>,
    open: watch::Sender<usize>,
}

/// Why a connection got no slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open.
    Full,
    /// `max_connections_per_ip` are open from this peer.
    PerPeer(Peer),
}

impl Table {
    pub(crate) fn new(limits: Limits) -> Table {
        let limits = limits.sane();
        Table {
            limits,
            slots: Arc::new(Semaphore::new(limits.max_connections)),
            per_peer: Mutex::new(HashMap::new()),
            open: watch::channel(0).0,
        }
    }

    pub(crate) fn limits(&self) -> Limits {
        self.limits
    }

    pub(crate) fn open(&self) -> usize {
        *self.open.borrow()
    }

    /// Resolves once no connection is open.
    pub(crate) async fn all_closed(&self) {
        let mut rx = self.open.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// A slot for a connection from `peer`, under both caps.
    fn take(&self, peer: Peer) -> Result<(OwnedSemaphorePermit, Peer), Refusal> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refusal::Full)?;
        let mut map = self.per_peer.lock().unwrap_or_else(PoisonError::into_inner);
        let n = map.entry(peer).or_insert(0);
        if *n >= self.limits.max_connections_per_ip {
            return Err(Refusal::PerPeer(peer));
        }
        *n += 1;
        drop(map);
        self.open.send_modify(|n| *n += 1);
        Ok((permit, peer))
    }

    fn give_back(&self, peer: Peer) {
        let mut map = self.per_peer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&peer);
            }
        }
        drop(map);
        self.open.send_modify(|n| *n = n.saturating_sub(1));
    }

    #[cfg(test)]
    fn peers(&self) -> usize {
        self.per_peer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// One connection's place under the caps, given back when dropped.
pub(crate) struct Slot {
    gw: GatewayState,
    peer: Peer,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gw.conns.give_back(self.peer);
    }
}

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
        let peer = Peer::of(addr.ip());
        let (permit, peer) = match self.gw.conns.take(peer) {
            Ok(slot) => slot,
            Err(refusal) => return self.refuse(tcp, refusal),
        };
        // Events are small and latency matters more than packet count.
        let _ = tcp.set_nodelay(true);
        self.gw
            .metrics
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        let slot = Slot {
            gw: self.gw.clone(),
            peer,
            _permit: permit,
        };
        let io = TokioIo::new(Tracked::new(tcp, self.gw.conns.limits().idle_timeout, slot));
        let conn = self
            .http
            .serve_connection(io, TowerToHyperService::new(self.router.clone()))
            .with_upgrades();
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

/// One HTTP/1 connection, upgradable to a WebSocket.
type Connection = http1::UpgradeableConnection<TokioIo<Tracked>, TowerToHyperService<Router>>;

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
    slot: Slot,
}

impl Tracked {
    fn new(tcp: TcpStream, idle: Duration, slot: Slot) -> Tracked {
        let now = Instant::now();
        Tracked {
            tcp,
            idle,
            last: now,
            read_timer: Box::pin(tokio::time::sleep_until(now + idle)),
            write_timer: Box::pin(tokio::time::sleep_until(now + idle)),
            timed_out: false,
            slot,
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
            let gw = &self.slot.gw;
            gw.metrics.idle_timeouts.fetch_add(1, Ordering::Relaxed);
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
    fn peers_are_addresses_and_ipv6_networks() {
        let p = |s: &str| Peer::of(s.parse().expect("ip"));
        assert_eq!(p("10.0.0.1"), p("::ffff:10.0.0.1"), "v4-mapped is v4");
        assert_ne!(p("10.0.0.1"), p("10.0.0.2"));
        assert_eq!(p("2001:db8:1:2::1"), p("2001:db8:1:2:ffff::9"), "one /64");
        assert_ne!(p("2001:db8:1:2::1"), p("2001:db8:1:3::1"));
        assert_eq!(p("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(p("127.0.0.1").to_string(), "127.0.0.1");
    }

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

    #[test]
    fn limits_are_made_usable() {
        let l = Limits {
            max_connections: 0,
            max_connections_per_ip: 99,
            header_read_timeout: Duration::ZERO,
            idle_timeout: Duration::ZERO,
        }
        .sane();
        assert_eq!((l.max_connections, l.max_connections_per_ip), (1, 1));
        assert!(!l.header_read_timeout.is_zero() && !l.idle_timeout.is_zero());
    }

    #[test]
    fn the_table_caps_both_ways_and_keeps_no_empty_entries() {
        let table = Table::new(Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            ..Limits::default()
        });
        let a = Peer::of("10.0.0.1".parse().expect("ip"));
        let b = Peer::of("10.0.0.2".parse().expect("ip"));
        let a1 = table.take(a).expect("a 1");
        let a2 = table.take(a).expect("a 2");
        assert_eq!(table.take(a).err(), Some(Refusal::PerPeer(a)));
        let b1 = table.take(b).expect("b 1");
        assert_eq!(table.take(b).err(), Some(Refusal::Full));
        assert_eq!(table.open(), 3);
        drop(a1);
        table.give_back(a);
        drop(a2);
        table.give_back(a);
        assert_eq!(table.peers(), 1, "a's entry is gone");
        drop(b1);
        table.give_back(b);
        assert_eq!((table.open(), table.peers()), (0, 0));
    }
}
