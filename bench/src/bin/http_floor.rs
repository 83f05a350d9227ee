//! The floors of benchmarks B6 and B7 (`bench/run.sh`): the least an axum 0.8 / tokio server
//! can do on this machine, with no hub, no auth and no serialisation per request.
//!
//! ```sh
//! target/release/http_floor 127.0.0.1:25283 --control 127.0.0.1:25285
//! ```
//!
//! - `GET /v1/accounts/{name}`: a fixed ~70-byte JSON (the shape of ejabberd's `get_presence`
//!   answer, like `httpfloor` of the perf baselines);
//!   `--one-bytes N` pads its message so that the body has N bytes (the size of the gateway's
//!   answer: the by-hand check under "Known misses" in docs/benchmarks.md);
//! - `GET /v1/accounts`: a fixed JSON array of 2,000 such objects (`--list N` changes N);
//! - `GET /v1/events`: a minimal tokio `broadcast` → Server-Sent Events fan-out: every event is
//!   formatted once (`data: …\n\n`, shared `Bytes`) and written to each subscriber as a body
//!   chunk; a subscriber that lags just skips what it missed (the count is printed at exit);
//! - `--control ADDR`: the control protocol of [`imstatus_bench::serve`], each change an event
//!   carrying `b7 <seq> <CLOCK_MONOTONIC ns>` in its message.
//!
//! `WORKERS` sets the tokio worker threads (default 2). Stops on Ctrl-C or SIGTERM.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use imstatus_bench::args::Args;
use imstatus_bench::system::mono_ns;
use imstatus_bench::{fail, serve};
use tokio::sync::broadcast;

const ONE: &str = r#"{"account":"u0007","availability":"away","message":"idle session 7"}"#;

/// The broadcast ring's capacity; a subscriber further behind skips ahead (counted).
const RING: usize = 4096;

#[derive(Clone)]
struct App {
    list: Bytes,
    tx: broadcast::Sender<Bytes>,
    lagged: Arc<AtomicU64>,
}

/// The answer of `GET /v1/accounts/{name}`: [`ONE`], or padded to `--one-bytes`.
static ONE_BODY: OnceLock<Bytes> = OnceLock::new();

async fn one() -> impl IntoResponse {
    let body = ONE_BODY
        .get()
        .cloned()
        .unwrap_or(Bytes::from_static(ONE.as_bytes()));
    ([(header::CONTENT_TYPE, "application/json")], body)
}

/// [`ONE`] with its message padded so that the whole body has `bytes` bytes (at least ONE's).
fn one_padded(bytes: usize) -> Bytes {
    let pad = "x".repeat(bytes.saturating_sub(ONE.len()));
    Bytes::from(ONE.replace("idle session 7", &format!("idle session 7{pad}")))
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

/// Change number `seq` as an SSE event, shaped like the gateway's `contact_status_changed`.
fn event(seq: u64) -> Bytes {
    Bytes::from(format!(
        "data: {{\"seq\":{seq},\"account\":\"alice\",\"event\":\"contact_status_changed\",\"contact\":\"c{:04}@example.test\",\"to\":{{\"availability\":\"away\",\"message\":\"b7 {seq} {}\"}}}}\n\n",
        seq % 50 + 1,
        mono_ns()
    ))
}

fn main() {
    let args = Args::from_env(&[]);
    args.only(&["--control", "--list", "--one-bytes"]);
    let addr: SocketAddr = args.nth(0, "ADDR", SocketAddr::from(([127, 0, 0, 1], 25283)));
    let control: Option<SocketAddr> = args.opt("--control");
    let n_list: usize = args.value("--list", 2000);
    if let Some(bytes) = args.opt::<usize>("--one-bytes") {
        let _ = ONE_BODY.set(one_padded(bytes));
    }
    let (rt, workers) = serve::runtime();
    rt.block_on(async move {
        let all: Vec<String> = (1..=n_list)
            .map(|i| ONE.replace("u0007", &format!("u{i:04}")))
            .collect();
        let (tx, _) = broadcast::channel(RING);
        let lagged = Arc::new(AtomicU64::new(0));
        let app = App {
            list: Bytes::from(format!("[{}]", all.join(","))),
            tx: tx.clone(),
            lagged: lagged.clone(),
        };
        let router = Router::new()
            .route("/v1/accounts", get(list))
            .route("/v1/accounts/{name}", get(one))
            .route("/v1/events", get(events))
            .with_state(app);
        let listener = serve::bind(addr).await;
        if let Some(control) = control {
            let listener = serve::bind(control).await;
            tokio::spawn(serve::control(listener, move |seq| {
                let _ = tx.send(event(seq));
            }));
        }
        eprintln!("http_floor on {addr} workers={workers}");
        let stop = async move {
            serve::terminated().await;
            eprintln!(
                "http_floor: subscribers skipped {} events (lagged)",
                lagged.load(Ordering::Relaxed)
            );
            // Streaming bodies never end by themselves: do not wait for them.
            std::process::exit(0);
        };
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(stop)
            .await
        {
            fail(format_args!("the floor stopped: {e}"));
        }
    });
}
