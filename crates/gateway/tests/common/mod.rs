//! Shared test helpers: scripted hubs, tokens, a real server on 127.0.0.1:0, a raw SSE client
//! and the testkit's polling with a deadline (`wait_until_async`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use imstatus_config::TokenConfig;
use imstatus_core::{AccountId, Availability, ContactId, Observation, PartId, SourceKind, Status};
use imstatus_gateway::{hash_token, serve_on, Error, Gateway, GatewayState};
use imstatus_hub::testing::{scripted, Script};
use imstatus_hub::{BoxFuture, Hub, Sink, Source};
pub use imstatus_testkit::wait_until_async;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// A generous bound for one awaited step.
pub const STEP: Duration = Duration::from_secs(10);

/// Runs `f` with a time limit; every async test goes through this.
pub async fn limit<T>(d: Duration, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(d, f)
        .await
        .unwrap_or_else(|_| panic!("the test did not finish within {d:?}"))
}

pub fn alice() -> AccountId {
    AccountId::new("alice")
}

pub fn bob() -> AccountId {
    AccountId::new("bob")
}

/// alice: signed in from `desk`, away "lunch" at priority 5, with two contacts.
pub fn alice_initial() -> Vec<Observation> {
    vec![
        Observation::Presence {
            part: PartId::new("desk"),
            status: Status::with_message(Availability::Away, "lunch"),
            priority: Some(5),
        },
        Observation::Contact(
            ContactId::new("bob@example.test"),
            Status::new(Availability::Available),
        ),
        Observation::Contact(
            ContactId::new("carol@example.test"),
            Status::with_message(Availability::Busy, "focus"),
        ),
        Observation::Synced,
    ]
}

/// bob: signed in from `phone`, available.
pub fn bob_initial() -> Vec<Observation> {
    vec![
        Observation::Presence {
            part: PartId::new("phone"),
            status: Status::new(Availability::Available),
            priority: Some(0),
        },
        Observation::Synced,
    ]
}

/// A source that cannot set status (the default `unsupported`), and reports nothing else.
pub struct ReadOnlySource;

impl Source for ReadOnlySource {
    fn kind(&self) -> SourceKind {
        SourceKind::new_static("test")
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            sink.observe_all([
                Observation::presence("box", Status::new(Availability::Available)),
                Observation::Synced,
            ]);
            std::future::pending::<()>().await;
        })
    }
}

/// A hub with scripted alice and bob and a read-only `carol`, settled.
pub struct Scripted {
    pub hub: Arc<Hub>,
    pub alice: Script,
    pub bob: Script,
}

pub async fn scripted_hub() -> Scripted {
    scripted_hub_with(alice_initial(), bob_initial()).await
}

pub async fn scripted_hub_with(alice_obs: Vec<Observation>, bob_obs: Vec<Observation>) -> Scripted {
    let (a, alice_script) = scripted(SourceKind::new_static("test"), alice_obs);
    let (b, bob_script) = scripted(SourceKind::new_static("test"), bob_obs);
    let hub = Hub::builder()
        .with_source(alice(), a)
        .with_source(bob(), b)
        .with_source(AccountId::new("carol"), Arc::new(ReadOnlySource))
        .start();
    let settled = hub
        .wait_settled(&[alice(), bob(), AccountId::new("carol")], STEP)
        .await;
    assert!(settled, "the scripted sources settle");
    Scripted {
        hub: Arc::new(hub),
        alice: alice_script,
        bob: bob_script,
    }
}

/// Tokens of the matrix: the secret is the name.
pub const READ_ALICE: &str = "read-alice-secret";
pub const WRITE_ALICE: &str = "write-alice-secret";
pub const READ_ALL: &str = "read-all-secret";
pub const WRITE_ALL: &str = "write-all-secret";

pub fn tokens() -> Vec<TokenConfig> {
    let t = |secret: &str, accounts: &[&str], write: bool| TokenConfig {
        name: secret.trim_end_matches("-secret").to_owned(),
        sha256: hash_token(secret),
        accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
        write,
    };
    vec![
        t(READ_ALICE, &["alice"], false),
        t(WRITE_ALICE, &["alice"], true),
        t(READ_ALL, &["*"], false),
        t(WRITE_ALL, &["*"], true),
    ]
}

/// A gateway running on a real socket.
pub struct Server {
    pub addr: SocketAddr,
    pub gateway: GatewayState,
    task: Option<JoinHandle<Result<(), Error>>>,
}

impl Server {
    /// Serves `gateway` on 127.0.0.1:0.
    pub async fn start(gateway: GatewayState) -> Server {
        Server::start_on(gateway, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Serves `gateway` on `addr` (e.g. the port of a previous server).
    pub async fn start_on(gateway: GatewayState, addr: SocketAddr) -> Server {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(serve_on(
            listener,
            gateway.clone(),
            std::future::pending::<()>(),
        ));
        Server {
            addr,
            gateway,
            task: Some(task),
        }
    }

    /// Shuts it down and waits for `serve_on` to return.
    pub async fn stop(mut self) -> Result<(), Error> {
        self.gateway.shutdown();
        let task = self.task.take().expect("running");
        tokio::time::timeout(STEP, task)
            .await
            .expect("serve_on returns after shutdown")
            .expect("serve task")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            self.gateway.shutdown();
            task.abort();
        }
    }
}

/// A gateway state over a hub.
pub fn gateway(hub: &Arc<Hub>, tokens: &[TokenConfig]) -> GatewayState {
    Gateway::new(hub.clone(), tokens).into_state()
}

/// A gateway without tokens that lets anyone set status (`tokenless_write = true`).
pub fn open_writable_gateway(hub: &Arc<Hub>) -> GatewayState {
    Gateway::new(hub.clone(), &[])
        .with_tokenless_write(true)
        .into_state()
}

/// One Server-Sent Events message (or a comment-only block).
#[derive(Debug, Default, Clone)]
pub struct SseFrame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub retry: Option<String>,
    pub comments: Vec<String>,
}

impl SseFrame {
    pub fn json(&self) -> Option<serde_json::Value> {
        self.data
            .as_deref()
            .map(|d| serde_json::from_str(d).expect("data is JSON"))
    }
}

/// Parses SSE blocks out of `text`, returning them and the unparsed rest.
pub fn parse_sse(text: &str) -> (Vec<SseFrame>, String) {
    let mut frames = Vec::new();
    let mut rest = text;
    while let Some(end) = rest.find("\n\n") {
        let block = &rest[..end];
        rest = &rest[end + 2..];
        let mut f = SseFrame::default();
        for line in block.lines() {
            if let Some(c) = line.strip_prefix(':') {
                f.comments.push(c.trim().to_owned());
            } else if let Some((k, v)) = line.split_once(':') {
                let v = v.strip_prefix(' ').unwrap_or(v).to_owned();
                match k {
                    "id" => f.id = Some(v),
                    "event" => f.event = Some(v),
                    "retry" => f.retry = Some(v),
                    "data" => {
                        f.data = Some(match f.data.take() {
                            Some(d) => format!("{d}\n{v}"),
                            None => v,
                        })
                    }
                    _ => {}
                }
            }
        }
        frames.push(f);
    }
    (frames, rest.to_owned())
}

/// A minimal HTTP/1.1 client for an SSE stream: sends one GET, decodes the chunked body.
pub struct SseClient {
    stream: TcpStream,
    raw: Vec<u8>,
    text: String,
    pub status: u16,
    pub head: String,
    pub ended: bool,
    frames: std::collections::VecDeque<SseFrame>,
}

impl SseClient {
    /// Connects and sends `GET path` with extra headers; reads the response head.
    pub async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let socket = TcpSocket::new_v4().unwrap();
        let stream = socket.connect(addr).await.expect("connect");
        Self::start(stream, path, headers, true).await
    }

    /// Like `connect`, with a small receive buffer, and without reading the head: a client
    /// that will not read for a while.
    pub async fn connect_stuck(addr: SocketAddr, path: &str) -> SseClient {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let stream = socket.connect(addr).await.expect("connect");
        Self::start(stream, path, &[], false).await
    }

    async fn start(
        mut stream: TcpStream,
        path: &str,
        headers: &[(&str, &str)],
        read_head: bool,
    ) -> SseClient {
        // Host as a browser sends it: the address and port it connected to.
        let host = stream.peer_addr().expect("peer address");
        let mut req =
            format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        stream
            .write_all(req.as_bytes())
            .await
            .expect("send request");
        let mut client = SseClient {
            stream,
            raw: Vec::new(),
            text: String::new(),
            status: 0,
            head: String::new(),
            ended: false,
            frames: Default::default(),
        };
        if read_head {
            client.read_head().await;
        }
        client
    }

    /// Reads the response head (status and headers).
    pub async fn read_head(&mut self) {
        loop {
            if let Some(end) = find(&self.raw, b"\r\n\r\n") {
                self.head = String::from_utf8_lossy(&self.raw[..end]).into_owned();
                self.raw.drain(..end + 4);
                self.status = self
                    .head
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                return;
            }
            assert!(self.read_more().await, "connection closed before the head");
        }
    }

    async fn read_more(&mut self) -> bool {
        let mut buf = [0u8; 16384];
        match self.stream.read(&mut buf).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.raw.extend_from_slice(&buf[..n]);
                true
            }
        }
    }

    /// Moves complete chunks from `raw` into `text`.
    fn decode_chunks(&mut self) {
        loop {
            let Some(line_end) = find(&self.raw, b"\r\n") else {
                return;
            };
            let size_line = String::from_utf8_lossy(&self.raw[..line_end]).into_owned();
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
            if size == 0 {
                self.ended = true;
                self.raw.clear();
                return;
            }
            if self.raw.len() < line_end + 2 + size + 2 {
                return;
            }
            let data = self.raw[line_end + 2..line_end + 2 + size].to_vec();
            self.raw.drain(..line_end + 2 + size + 2);
            self.text
                .push_str(&String::from_utf8(data).expect("utf-8 body"));
        }
    }

    /// The next SSE block, or `None` when the stream ended (or `d` passed).
    pub async fn next(&mut self, d: Duration) -> Option<SseFrame> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            if let Some(f) = self.frames.pop_front() {
                return Some(f);
            }
            self.decode_chunks();
            let (frames, rest) = parse_sse(&self.text);
            self.text = rest;
            self.frames.extend(frames);
            if !self.frames.is_empty() {
                continue;
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.read_more()).await {
                Ok(true) => {}
                Ok(false) => {
                    self.ended = true;
                    self.decode_chunks();
                }
                Err(_) => return None,
            }
        }
    }

    /// The next block that carries data, skipping comments and `retry`.
    pub async fn next_data(&mut self, d: Duration) -> Option<SseFrame> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self.next(left).await?;
            if f.data.is_some() {
                return Some(f);
            }
        }
    }

    /// Data events until one matches `pred`; panics after `d`.
    pub async fn until(
        &mut self,
        d: Duration,
        mut pred: impl FnMut(&serde_json::Value) -> bool,
    ) -> (serde_json::Value, Vec<serde_json::Value>) {
        let deadline = tokio::time::Instant::now() + d;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let f = self
                .next_data(left)
                .await
                .unwrap_or_else(|| panic!("no matching event within {d:?}; saw {seen:#?}"));
            let v = f.json().unwrap();
            if pred(&v) {
                return (v, seen);
            }
            seen.push(v);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// This process's resident set size in KiB.
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}
