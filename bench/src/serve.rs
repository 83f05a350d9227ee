//! The scaffolding of the load-test servers (`gateway_server`, `http_floor`): their tokio
//! runtime, their shutdown, and the control protocol through which benchmark B7's client
//! (`sse_fanout`) makes them produce changes at a given rate.
//!
//! The control protocol, one line each way on a TCP connection:
//!
//! - `RATE R D`: make R changes a second for D seconds (open loop, 1 ms ticks with catch-up),
//!   then answer `SENT <count> <seconds>`. The flow stops after D + 1 s even when the server
//!   is too busy to make them all (count < R × D then).
//! - `SEQ0`: answer `SEQ0 <n>`, the first sequence number of the next `RATE` (sequence
//!   numbers continue across `RATE`s).
//!
//! Anything else is answered `ERR …`.

use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::fail;

/// A multi-threaded tokio runtime with `WORKERS` worker threads (default 2, like the floors of
/// the perf baselines); returns it with the count.
pub fn runtime() -> (tokio::runtime::Runtime, usize) {
    let workers = std::env::var("WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|w| *w > 0)
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format_args!("the tokio runtime: {e}")));
    (rt, workers)
}

/// SIGTERM and SIGINT (Ctrl-C), caught from the moment of [`Shutdown::listen`] on: one that
/// comes earlier than the first [`Shutdown::wait`] is not lost.
pub struct Shutdown {
    term: Signal,
    int: Signal,
}

impl Shutdown {
    /// Starts catching SIGTERM and SIGINT (inside a tokio runtime); exits saying why when it
    /// cannot.
    pub fn listen() -> Shutdown {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Shutdown { term, int },
            _ => fail("cannot catch SIGTERM/SIGINT"),
        }
    }

    /// Returns once one of the signals has come (cancel-safe: usable in `select!` loops).
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// Returns when this process gets SIGTERM or SIGINT (Ctrl-C) after this is first polled.
pub async fn terminated() {
    Shutdown::listen().wait().await;
}

/// Binds a TCP listener on `addr`, or exits saying why.
pub async fn bind(addr: std::net::SocketAddr) -> TcpListener {
    TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| fail(format_args!("binding {addr}: {e}")))
}

/// Serves the control protocol on `listener`, one connection at a time, forever; `change(seq)`
/// makes change number `seq`.
pub async fn control(listener: TcpListener, mut change: impl FnMut(u64) + Send) {
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
                        let (sent, took) = flow(rate, secs, seq0, &mut change).await;
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

/// `RATE R D` from `seq0`: returns (changes made, seconds taken).
async fn flow(rate: u64, secs: f64, seq0: u64, change: &mut impl FnMut(u64)) -> (u64, f64) {
    let total = (rate as f64 * secs).round() as u64;
    let start = Instant::now();
    // Open loop, but bounded: a server that cannot keep up stops after D + 1 s and says how
    // many it sent.
    let hard_stop = Duration::from_secs_f64(secs + 1.0);
    let mut sent = 0u64;
    while sent < total && start.elapsed() < hard_stop {
        let due = ((start.elapsed().as_secs_f64() * rate as f64) as u64 + 1).min(total);
        while sent < due {
            change(seq0 + sent);
            sent += 1;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    (sent, start.elapsed().as_secs_f64())
}
