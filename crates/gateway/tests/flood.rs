//! Floods over real sockets: idle and trickling connections are closed after the header-read
//! timeout, a connection on which nothing moves after the idle timeout (open streams are
//! not idle), and the caps on connections (per address and in all) refuse the excess with a
//! 503 and one log line, while other clients are served and the hub keeps publishing to an
//! SSE subscriber.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::common::*;
use futures_util::StreamExt as _;
use imstatus_core::{Availability, Observation, PartId, Status};
use imstatus_gateway::{Gateway, GatewayState, Limits};
use imstatus_hub::testing::Script;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;

const LIMIT: Duration = Duration::from_secs(90);
/// How late a timeout may fire on a busy 2-core machine and still count as on time.
const MARGIN: Duration = Duration::from_secs(3);
/// The idle connections of a flood.
const FLOOD: usize = 2_000;
/// The header-read timeout of the flood tests: longer than opening the flood takes.
const FLOOD_TIMEOUT: Duration = Duration::from_secs(5);

/// Lets this process hold a flood's sockets, both ends: the soft descriptor limit up to the
/// hard one.
fn raise_nofile(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        hard >= want,
        "the flood tests need {want} descriptors; the hard limit is {hard} (ulimit -Hn)"
    );
    if soft < want {
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit");
    }
}

/// A connection from `ip` (any 127.0.0.0/8 address is this machine).
async fn connect_from(ip: Ipv4Addr, addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::from((ip, 0)))
        .expect("bind a loopback address");
    socket.connect(addr).await.expect("connect")
}

/// Reads until the server closes (EOF or reset): what it sent, and when it closed.
async fn until_closed(mut tcp: TcpStream, d: Duration) -> (String, Instant) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let result = tokio::time::timeout(d, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    let when = result.unwrap_or_else(|_| {
        panic!(
            "the server did not close the connection within {d:?}; it sent {:?}",
            String::from_utf8_lossy(&out)
        )
    });
    (String::from_utf8_lossy(&out).into_owned(), when)
}

/// One request on a fresh connection from 127.0.0.1; the response head and body.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut tcp = connect_from(Ipv4Addr::LOCALHOST, addr).await;
    tcp.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    until_closed(tcp, STEP).await.0
}

/// A metric's value from `/metrics`.
fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
        .parse()
        .unwrap()
}

/// Log lines of this test binary, captured once for all its tests.
fn log_lines() -> &'static Mutex<Vec<String>> {
    static LINES: OnceLock<Arc<Mutex<Vec<String>>>> = OnceLock::new();
    LINES.get_or_init(|| {
        let lines = Arc::new(Mutex::new(Vec::new()));
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<String>>>);
        impl Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(buf).into_owned());
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink(lines.clone());
        tracing_subscriber::fmt()
            .with_env_filter("imstatus_gateway=info")
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .init();
        lines
    })
}

/// Changes alice's status every 10 ms until the returned sender is dropped; the messages are
/// `tick 1`, `tick 2`, … The last one sent is in the shared counter.
fn keep_publishing(alice: Script) -> (tokio::sync::oneshot::Sender<()>, Arc<Mutex<u64>>) {
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let last = Arc::new(Mutex::new(0));
    let counter = last.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let mut n = 0u64;
        loop {
            tokio::select! {
                _ = &mut stop_rx => return,
                _ = tick.tick() => {}
            }
            n += 1;
            let availability = if n % 2 == 0 {
                Availability::Busy
            } else {
                Availability::Away
            };
            alice.send([Observation::Presence {
                part: PartId::new("desk"),
                status: Status::with_message(availability, format!("tick {n}")),
                priority: Some(5),
            }]);
            *counter.lock().unwrap() = n;
        }
    });
    (stop_tx, last)
}

/// Reads an SSE stream in the background, keeping the highest `tick N` it saw.
fn watch_ticks(mut sse: SseClient) -> Arc<Mutex<u64>> {
    let seen = Arc::new(Mutex::new(0));
    let out = seen.clone();
    tokio::spawn(async move {
        while let Some(f) = sse.next(Duration::from_secs(60)).await {
            let Some(v) = f.json() else { continue };
            let message = v["to"]["message"].as_str().or(v["message"].as_str());
            if let Some(n) = message.and_then(|m| m.strip_prefix("tick ")) {
                let n: u64 = n.parse().unwrap();
                let mut seen = out.lock().unwrap();
                *seen = (*seen).max(n);
            }
        }
    });
    seen
}

fn limited(hub: &Arc<imstatus_hub::Hub>, limits: Limits) -> GatewayState {
    Gateway::new(hub.clone(), &[])
        .with_limits(limits)
        .into_state()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_and_trickling_connections_are_closed_after_the_header_read_timeout() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let timeout = Duration::from_secs(1);
        let limits = Limits { header_read_timeout: timeout, ..Limits::default() };
        let server = Server::start(limited(&s.hub, limits)).await;
        let addr = server.addr;

        let started = Instant::now();
        let mut idle = Vec::new();
        for _ in 0..20 {
            idle.push(connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).await);
        }
        // Trickling clients: a request head that never ends, one header line every 200 ms.
        let mut trickling = Vec::new();
        for i in 0..5 {
            let mut tcp = connect_from(Ipv4Addr::new(127, 0, 0, 3), addr).await;
            trickling.push(tokio::spawn(async move {
                let opened = Instant::now();
                tcp.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
                    .await
                    .unwrap();
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                let mut buf = [0u8; 1024];
                let mut lines = 0;
                loop {
                    tokio::select! {
                        read = tcp.read(&mut buf) => match read {
                            Ok(0) | Err(_) => return (opened.elapsed(), lines),
                            Ok(n) => panic!("an answer to an unfinished head: {:?}", &buf[..n]),
                        },
                        _ = tick.tick() => {
                            if tcp.write_all(format!("X-Trickle-{i}-{lines}: a\r\n").as_bytes()).await.is_err() {
                                return (opened.elapsed(), lines);
                            }
                            lines += 1;
                        }
                    }
                }
            }));
        }

        // Meanwhile a normal request is answered at once.
        let answer = get(addr, "/healthz").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(started.elapsed() < timeout, "served while the others wait");

        let closed = futures_util::future::join_all(
            idle.into_iter().map(|tcp| until_closed(tcp, timeout + MARGIN)),
        )
        .await;
        for (sent, when) in closed {
            let after = when - started;
            assert!(sent.is_empty(), "nothing is answered to no request: {sent:?}");
            assert!(after >= timeout - Duration::from_millis(50), "closed early: {after:?}");
            assert!(after <= timeout + MARGIN, "closed late: {after:?}");
        }
        for t in trickling {
            let (lived, lines) = tokio::time::timeout(timeout + MARGIN, t)
                .await
                .expect("a trickling client is closed in time")
                .unwrap();
            assert!(lines >= 3, "it kept sending: {lines} lines");
            assert!(lived >= timeout - Duration::from_millis(50) && lived <= timeout + MARGIN, "{lived:?}");
        }
        let text = get(addr, "/metrics").await;
        assert_eq!(
            metric(&text, "imstatus_gateway_connections_timed_out_total{timeout=\"header_read\"}"),
            25
        );
        server.stop().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_is_capped_and_everyone_else_is_served() {
    raise_nofile(3 * FLOOD as u64);
    let lines = log_lines();
    limit(LIMIT, async {
        let Scripted {
            hub,
            alice,
            bob: _bob,
        } = scripted_hub().await;
        let timeout = FLOOD_TIMEOUT;
        let limits = Limits {
            header_read_timeout: timeout,
            ..Limits::default()
        };
        assert_eq!(limits.max_connections_per_ip, 64, "the default");
        let gw = limited(&hub, limits);
        let server = Server::start(gw.clone()).await;
        let addr = server.addr;

        // An SSE subscriber and a source that keeps publishing through the flood.
        let sse = SseClient::connect(addr, "/v1/events", &[]).await;
        assert_eq!(sse.status, 200);
        let seen = watch_ticks(sse);
        let (stop_publishing, sent) = keep_publishing(alice);
        wait_until_async("the subscriber to see a tick", STEP, || {
            (*seen.lock().unwrap() > 0).then_some(())
        })
        .await
        .unwrap();

        let flooder = Ipv4Addr::new(127, 0, 0, 2);
        let started = Instant::now();
        let mut flood = Vec::with_capacity(FLOOD);
        for _ in 0..FLOOD {
            flood.push(connect_from(flooder, addr).await);
        }
        eprintln!("{FLOOD} connections opened in {:?}", started.elapsed());
        assert!(
            started.elapsed() < timeout,
            "the flood must be open before the first timeout"
        );

        // Others are served at once, and the subscriber keeps getting events.
        let served = Instant::now();
        let answer = get(addr, "/v1/accounts/alice").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            served.elapsed() < Duration::from_secs(1),
            "{:?}",
            served.elapsed()
        );
        let during = *sent.lock().unwrap();
        wait_until_async("the subscriber to keep up during the flood", STEP, || {
            (*seen.lock().unwrap() >= during).then_some(())
        })
        .await
        .unwrap();

        // 64 are held until the header-read timeout; the rest got a 503 and were closed.
        let closed = futures_util::future::join_all(
            flood
                .into_iter()
                .map(|tcp| until_closed(tcp, timeout + MARGIN + Duration::from_secs(5))),
        )
        .await;
        let (refused, held): (Vec<_>, Vec<_>) =
            closed.iter().partition(|(sent, _)| !sent.is_empty());
        assert_eq!(held.len(), 64, "max_connections_per_ip were served");
        for (answer, _) in &refused {
            assert!(
                answer.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
                "{answer}"
            );
            let body: serde_json::Value =
                serde_json::from_str(answer.split("\r\n\r\n").nth(1).unwrap()).unwrap();
            assert_eq!(body["error"], "unavailable", "{body}");
            assert!(
                body["detail"]
                    .as_str()
                    .unwrap()
                    .contains("max_connections_per_ip"),
                "{body}"
            );
        }
        for (_, when) in &held {
            let after = *when - started;
            assert!(
                after <= timeout + MARGIN + Duration::from_secs(2),
                "closed late: {after:?}"
            );
        }
        assert_eq!(gw.open_connections(), 1, "only the SSE stream is left");
        let text = get(addr, "/metrics").await;
        assert_eq!(
            metric(
                &text,
                "imstatus_gateway_connections_refused_total{limit=\"max_connections_per_ip\"}"
            ),
            (FLOOD - 64) as u64
        );

        // One log line for all those refusals, naming the limit and the address.
        let logged: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("max_connections_per_ip") && l.contains("127.0.0.2"))
            .cloned()
            .collect();
        assert!(!logged.is_empty() && logged.len() <= 2, "{logged:#?}");
        assert!(
            logged[0].contains("WARN") && logged[0].contains("refused=1"),
            "{logged:#?}"
        );

        // Still publishing and streaming after the flood.
        let after = *sent.lock().unwrap() + 5;
        wait_until_async("ticks after the flood", STEP, || {
            (*seen.lock().unwrap() >= after).then_some(())
        })
        .await
        .unwrap();
        drop(stop_publishing);
        server.stop().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_many_addresses_fills_max_connections_and_a_client_is_served_again_within_the_timeout(
) {
    raise_nofile(3 * FLOOD as u64);
    let lines = log_lines();
    limit(LIMIT, async {
        let Scripted {
            hub,
            alice,
            bob: _bob,
        } = scripted_hub().await;
        let timeout = FLOOD_TIMEOUT;
        let limits = Limits {
            max_connections: 200,
            header_read_timeout: timeout,
            ..Limits::default()
        };
        let gw = limited(&hub, limits);
        let server = Server::start(gw.clone()).await;
        let addr = server.addr;
        let sse = SseClient::connect(addr, "/v1/events", &[]).await;
        let seen = watch_ticks(sse);
        let (stop_publishing, sent) = keep_publishing(alice);

        // 20 connections from each of 100 addresses: under the per-address cap, over the total.
        let started = Instant::now();
        let mut flood = Vec::with_capacity(FLOOD);
        for i in 0..FLOOD {
            let ip = Ipv4Addr::new(127, 0, 1, 1 + (i % 100) as u8);
            flood.push(connect_from(ip, addr).await);
        }
        let flooded = Instant::now();
        eprintln!("{FLOOD} connections opened in {:?}", flooded - started);
        assert!(
            flooded - started < timeout,
            "the flood must be open before the first timeout"
        );
        wait_until_async("the gateway to be full", STEP, || {
            (gw.open_connections() == 200).then_some(())
        })
        .await
        .unwrap();

        // A client retrying: refused while full, served once the idle ones are timed out.
        let mut refusals = 0;
        let answer = loop {
            let answer = get(addr, "/v1/accounts/alice").await;
            if answer.starts_with("HTTP/1.1 200") {
                break answer;
            }
            assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
            assert!(answer.contains("max_connections"), "{answer}");
            refusals += 1;
            assert!(
                flooded.elapsed() < timeout + MARGIN,
                "not served within the timeout + margin"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        eprintln!(
            "served again {:?} after the flood, after {refusals} refusals",
            flooded.elapsed()
        );
        assert!(answer.contains("\"alice\""), "{answer}");
        assert!(refusals > 0, "it was full");
        let during = *sent.lock().unwrap();
        wait_until_async("the subscriber to keep up", STEP, || {
            (*seen.lock().unwrap() >= during).then_some(())
        })
        .await
        .unwrap();

        let closed = futures_util::future::join_all(
            flood
                .into_iter()
                .map(|tcp| until_closed(tcp, timeout + MARGIN + Duration::from_secs(5))),
        )
        .await;
        let held = closed.iter().filter(|(sent, _)| sent.is_empty()).count();
        assert_eq!(
            held, 199,
            "max_connections minus the subscriber were held until the timeout"
        );

        let logged: Vec<String> = lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("(max_connections)"))
            .cloned()
            .collect();
        let secs = started.elapsed().as_secs();
        assert!(
            !logged.is_empty() && logged.len() as u64 <= 1 + secs / 10,
            "{logged:#?}"
        );
        drop(stop_publishing);
        server.stop().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_on_which_nothing_moves_is_closed_after_the_idle_timeout_but_streams_are_not()
{
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let idle = Duration::from_secs(1);
        let limits = Limits {
            idle_timeout: idle,
            ..Limits::default()
        };
        let gw = Gateway::new(s.hub.clone(), &[])
            .with_tokenless_write(true)
            .with_limits(limits)
            .into_state();
        let server = Server::start(gw.clone()).await;
        let addr = server.addr;

        // A body that stops after 10 of 100 bytes.
        let mut stalled = connect_from(Ipv4Addr::LOCALHOST, addr).await;
        let opened = Instant::now();
        stalled
            .write_all(
                format!(
                    "PUT /v1/accounts/alice/status HTTP/1.1\r\nHost: {addr}\r\n\
                     Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"availab"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        // Streams that stay quiet longer than the idle timeout: no events for them.
        let mut sse = SseClient::connect(addr, "/v1/events?accounts=carol", &[]).await;
        assert_eq!(sse.status, 200);
        let (mut ws, _) = tokio_tungstenite::client_async(
            format!("ws://{addr}/v1/ws?accounts=carol"),
            connect_from(Ipv4Addr::LOCALHOST, addr).await,
        )
        .await
        .expect("upgrade");

        let (_, when) = until_closed(stalled, idle + MARGIN).await;
        let lived = when - opened;
        assert!(
            lived >= idle - Duration::from_millis(50) && lived <= idle + MARGIN,
            "{lived:?}"
        );

        // Both streams live through three idle timeouts, kept alive by comments and pings.
        let quiet = Instant::now();
        let mut keep_alives = 0;
        while quiet.elapsed() < 3 * idle {
            let f = sse.next(STEP).await.expect("the SSE stream is still open");
            if f.comments.iter().any(|c| c == "keep-alive") {
                keep_alives += 1;
            }
        }
        assert!(keep_alives >= 4, "{keep_alives} keep-alive comments");
        let quiet = Instant::now();
        let mut pings = 0;
        while quiet.elapsed() < 3 * idle {
            match tokio::time::timeout(STEP, ws.next())
                .await
                .expect("a frame in time")
            {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(Message::Text(_))) => {}
                other => panic!("the WebSocket ended: {other:?}"),
            }
        }
        assert!(pings >= 4, "{pings} pings");
        assert_eq!(gw.open_streams(), 2);

        let text = get(addr, "/metrics").await;
        assert_eq!(
            metric(
                &text,
                "imstatus_gateway_connections_timed_out_total{timeout=\"idle\"}"
            ),
            1
        );
        server.stop().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_idle_connections_at_once() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let gw = limited(&s.hub, Limits::default());
        let server = Server::start(gw.clone()).await;
        let addr = server.addr;
        let mut idle = Vec::new();
        for _ in 0..50 {
            idle.push(connect_from(Ipv4Addr::new(127, 0, 0, 4), addr).await);
        }
        wait_until_async("50 connections", STEP, || {
            (gw.open_connections() == 50).then_some(())
        })
        .await
        .unwrap();
        let started = Instant::now();
        server.stop().await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(2), "the drain took {took:?}");
        assert_eq!(gw.open_connections(), 0);
        for tcp in idle {
            until_closed(tcp, STEP).await;
        }
    })
    .await;
}
