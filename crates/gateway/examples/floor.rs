//! The floors of benchmarks B6 and B7 (`bench/run.sh`): the least an axum 0.8 / tokio server
//! can do on this machine, with no hub, no auth and no serialisation per request.
//!
//! ```sh
//! cargo run --release -p imstatus-gateway --example floor -- 127.0.0.1:25283 --control 127.0.0.1:25285
//! ```
//!
//! - `GET /v1/accounts/{name}`: a fixed ~70-byte JSON (the shape of ejabberd's `get_presence`
//!   answer, like `httpfloor` of the perf baselines);
//! - `GET /v1/accounts`: a fixed JSON array of 2,000 such objects (`--list N` changes N);
//! - `GET /v1/events`: a minimal tokio `broadcast` → Server-Sent Events fan-out: every event is
//!   formatted once (`data: …\n\n`, shared `Bytes`) and written to each subscriber as a body
//!   chunk; a subscriber that lags just skips what it missed (and the count is logged);
//! - `--control ADDR`: the same line protocol as `bench_server` (`RATE R D` → `SENT n secs`, `SEQ0` → the
//!   first seq of the next `RATE`),
//!   each event carrying `b7 <seq> <CLOCK_MONOTONIC ns>` in its message.
//!
//! `WORKERS` sets the tokio worker threads (default 2).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use nix::time::{clock_gettime, ClockId};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::sync::broadcast;

const ONE: &str = r#"{"account":"u0007","availability":"away","message":"idle session 7"}"#;

fn mono_ns() -> u64 {
    let t = clock_gettime(ClockId::CLOCK_MONOTONIC).expect("CLOCK_MONOTONIC");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}

#[derive(Clone)]
struct App {
    list: Bytes,
    tx: broadcast::Sender<Bytes>,
    lagged: Arc<AtomicU64>,
}

async fn one() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], ONE)
}

async fn list(State(app): State<App>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], app.list)
}

async fn events(State(app): State<App>) -> Response {
    let rx = app.tx.subscribe();
    let hello = Bytes::from_static(b": floor events\nretry: 1000\n\n");
    let stream = futures_util::stream::unfold(
        (Some(hello), rx, app.lagged),
        |(first, mut rx, lagged)| async move {
            if let Some(h) = first {
                return Some((Ok::<Bytes, Infallible>(h), (None, rx, lagged)));
            }
            loop {
                match rx.recv().await {
                    Ok(b) => return Some((Ok(b), (None, rx, lagged))),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        },
    );
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn flow(tx: &broadcast::Sender<Bytes>, rate: u64, secs: f64, seq0: u64) -> (u64, f64) {
    let total = (rate as f64 * secs).round() as u64;
    let start = Instant::now();
    // Open loop, but bounded: a server that cannot keep up stops after D + 1 s and says how
    // many it sent.
    let hard_stop = Duration::from_secs_f64(secs + 1.0);
    let mut sent = 0u64;
    while sent < total && start.elapsed() < hard_stop {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while sent < due {
            let seq = seq0 + sent;
            let event = format!(
                "data: {{\"seq\":{seq},\"account\":\"alice\",\"event\":\"contact_status_changed\",\"contact\":\"c{:04}@example.test\",\"to\":{{\"availability\":\"away\",\"message\":\"b7 {seq} {}\"}}}}\n\n",
                seq % 50 + 1,
                mono_ns()
            );
            let _ = tx.send(Bytes::from(event));
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (sent, start.elapsed().as_secs_f64())
}

async fn control(listener: tokio::net::TcpListener, tx: broadcast::Sender<Bytes>) {
    let mut seq0 = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (rd, mut wr) = stream.into_split();
        let mut lines = BufReader::new(rd).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let words: Vec<&str> = line.split_whitespace().collect();
            let answer = match words.as_slice() {
                ["RATE", r, d] => match (r.parse::<u64>(), d.parse::<f64>()) {
                    (Ok(rate), Ok(secs)) if rate > 0 && secs > 0.0 && secs <= 600.0 => {
                        let (sent, took) = flow(&tx, rate, secs, seq0).await;
                        seq0 += sent;
                        format!("SENT {sent} {took:.3}\n")
                    }
                    _ => "ERR RATE needs R > 0 and 0 < D <= 600\n".to_owned(),
                },
                ["SEQ0"] => format!("SEQ0 {seq0}\n"),
                _ => "ERR unknown command\n".to_owned(),
            };
            if wr.write_all(answer.as_bytes()).await.is_err() {
                break;
            }
        }
    }
}

fn main() {
    let mut addr: SocketAddr = "127.0.0.1:25283".parse().unwrap();
    let mut control_addr: Option<SocketAddr> = None;
    let mut n_list = 2000usize;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--control" => control_addr = Some(it.next().expect("--control ADDR").parse().unwrap()),
            "--list" => n_list = it.next().expect("--list N").parse().unwrap(),
            other => addr = other.parse().expect("an address like 127.0.0.1:25283"),
        }
    }
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut all = String::from("[");
        for i in 0..n_list {
            if i > 0 {
                all.push(',');
            }
            all.push_str(&ONE.replace("u0007", &format!("u{:04}", i + 1)));
        }
        all.push(']');
        let (tx, _) = broadcast::channel(4096);
        let lagged = Arc::new(AtomicU64::new(0));
        let app = App {
            list: Bytes::from(all),
            tx: tx.clone(),
            lagged: lagged.clone(),
        };
        let router = Router::new()
            .route("/v1/accounts", get(list))
            .route("/v1/accounts/{name}", get(one))
            .route("/v1/events", get(events))
            .with_state(app);
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        if let Some(c) = control_addr {
            let l = tokio::net::TcpListener::bind(c).await.unwrap();
            tokio::spawn(control(l, tx.clone()));
        }
        eprintln!("floor on {addr} workers={workers}");
        let stop = async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).unwrap();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!(
                "floor: subscribers skipped {} events (lagged)",
                lagged.load(Ordering::Relaxed)
            );
            std::process::exit(0);
        };
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
            .unwrap();
    });
}
