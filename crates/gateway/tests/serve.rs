//! `serve`: refusal without tokens on a public address, graceful drain, and hostile input over
//! a real socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use imstatus_config::ServeConfig;
use imstatus_core::{AccountId, CodedError, Observation, SourceKind, Status};
use imstatus_gateway::{check_listen, serve, Error, Gateway};
use imstatus_hub::{BoxFuture, Hub, Sink, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const LIMIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn refuses_a_public_address_without_tokens() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        for listen in ["0.0.0.0:0", "[::]:0", "192.0.2.1:8470"] {
            let config = ServeConfig {
                listen: listen.parse().unwrap(),
                ..ServeConfig::default()
            };
            let gateway = Gateway::from_config(s.hub.clone(), &config);
            let err = serve(gateway, config.listen, async {})
                .await
                .expect_err("refused");
            assert!(matches!(err, Error::PublicWithoutTokens { .. }), "{err:?}");
            let text = err.to_string();
            assert!(
                text.contains("refusing to serve on") && text.contains("[[serve.token]]"),
                "{text}"
            );
            assert!(text.contains(&listen.replace(":0", "")), "{text}");
        }
        // With tokens a public address is allowed; loopback always is.
        let public: SocketAddr = "0.0.0.0:8470".parse().unwrap();
        assert!(check_listen(public, true).is_ok());
        assert!(check_listen("127.0.0.1:8470".parse().unwrap(), false).is_ok());
        assert!(check_listen("[::1]:8470".parse().unwrap(), false).is_ok());
    })
    .await;
}

#[tokio::test]
async fn serve_binds_the_configured_loopback_address_and_stops_on_the_shutdown_future() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let port = imstatus_testkit::free_port();
        let config = ServeConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            ..ServeConfig::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn({
            let hub = s.hub.clone();
            async move {
                serve(
                    Gateway::from_config(hub, &config),
                    config.listen,
                    async move {
                        let _ = stop_rx.await;
                    },
                )
                .await
            }
        });
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut sse = loop {
            if TcpStream::connect(addr).await.is_ok() {
                break SseClient::connect(addr, "/v1/events", &[]).await;
            }
            tokio::task::yield_now().await;
        };
        assert_eq!(sse.status, 200);
        sse.next_data(STEP).await.expect("a snapshot");
        let started = Instant::now();
        stop_tx.send(()).unwrap();
        tokio::time::timeout(STEP, task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        eprintln!("drained in {:?}", started.elapsed());
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );
    })
    .await;
}

/// A source whose `set_status` waits until the test opens the gate.
struct GateSource {
    entered: Arc<Notify>,
    gate: Arc<Notify>,
}

impl Source for GateSource {
    fn kind(&self) -> SourceKind {
        SourceKind::new_static("test")
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            sink.observe(Observation::Synced);
            std::future::pending::<()>().await;
        })
    }

    fn set_status(&self, _status: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        Box::pin(async move {
            self.entered.notify_one();
            self.gate.notified().await;
            Ok(())
        })
    }
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    limit(LIMIT, async {
        let entered = Arc::new(Notify::new());
        let gate = Arc::new(Notify::new());
        let source = GateSource {
            entered: entered.clone(),
            gate: gate.clone(),
        };
        let hub = Arc::new(
            Hub::builder()
                .with_source(AccountId::new("slow"), Arc::new(source))
                .start(),
        );
        let server = Server::start(open_writable_gateway(&hub)).await;
        let addr = server.addr;
        let put = tokio::spawn(async move {
            let body = r#"{"availability":"away"}"#;
            raw_exchange(
                addr,
                format!(
                    "PUT /v1/accounts/slow/status HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
        });
        entered.notified().await;
        let gw = server.gateway.clone();
        let stop = tokio::spawn(server.stop());
        wait_until_async("shutdown started", STEP, || gw.is_shutting_down().then_some(())).await
.unwrap();
        assert!(!put.is_finished(), "the request is still in flight");
        gate.notify_one();
        let answer = put.await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
        stop.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn the_drain_is_bounded_when_a_request_never_finishes() {
    limit(LIMIT, async {
        let entered = Arc::new(Notify::new());
        let source = GateSource {
            entered: entered.clone(),
            gate: Arc::new(Notify::new()),
        };
        let hub = Arc::new(
            Hub::builder()
                .with_source(AccountId::new("stuck"), Arc::new(source))
                .start(),
        );
        let gw = imstatus_gateway::Gateway::new(hub, &[])
            .with_tokenless_write(true)
            .with_drain_timeout(Duration::from_millis(300))
            .with_set_status_timeout(Duration::from_secs(60))
            .into_state();
        let server = Server::start(gw).await;
        let addr = server.addr;
        let _put = tokio::spawn(async move {
            let body = r#"{"availability":"away"}"#;
            raw_exchange(
                addr,
                format!(
                    "PUT /v1/accounts/stuck/status HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await
        });
        entered.notified().await;
        let started = Instant::now();
        server.stop().await.unwrap();
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
    })
    .await;
}

#[tokio::test]
async fn shutdown_ends_sse_streams_with_a_final_comment() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let server = Server::start(gateway(&s.hub, &[])).await;
        let addr = server.addr;
        let mut streams = Vec::new();
        for _ in 0..3 {
            let mut sse = SseClient::connect(addr, "/v1/events", &[]).await;
            sse.next_data(STEP).await.expect("snapshot");
            streams.push(sse);
        }
        let gw = server.gateway.clone();
        wait_until_async("three streams", STEP, || {
            (gw.open_streams() == 3).then_some(())
        })
        .await
        .unwrap();

        let started = Instant::now();
        let stop = tokio::spawn(server.stop());
        for mut sse in streams {
            let mut comments = Vec::new();
            while let Some(f) = sse.next(STEP).await {
                comments.extend(f.comments);
            }
            assert!(sse.ended, "the stream ended");
            assert_eq!(
                comments.last().map(String::as_str),
                Some("shutting down"),
                "{comments:?}"
            );
        }
        stop.await.unwrap().unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_secs(5), "drain took {took:?}");
        assert_eq!(gw.open_streams(), 0);
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );
    })
    .await;
}

async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before the whole request is written.
    let _ = tcp.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(STEP, async {
        let mut buf = [0u8; 8192];
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn hostile_requests_on_the_wire_do_not_hurt_the_server() {
    limit(LIMIT, async {
        let s = scripted_hub().await;
        let server = Server::start(gateway(&s.hub, &tokens())).await;
        let addr = server.addr;

        let huge = format!(
            "GET /v1/accounts/alice HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(1 << 20)
        );
        let answer = raw_exchange(addr, huge.as_bytes()).await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 431"), "{answer}");

        let many: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
        let answer = raw_exchange(
            addr,
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        )
        .await;
        assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "{answer}");

        for garbage in [
            &b"\x00\x01\x02\r\n\r\n"[..],
            b"GET\r\n\r\n",
            b"GET /v1/accounts/alice HTTP/9.9\r\n\r\n",
            b"PUT /v1/accounts/alice/status HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"PUT /v1/accounts/alice/status HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"GET /v1/events HTTP/1.1\r\nHost: x\r\nLast-Event-ID: \xff\xfe\r\nAuthorization: Bearer read-all-secret\r\n\r\n",
        ] {
            let answer = raw_exchange(addr, garbage).await;
            assert!(
                answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
                "{:?} → {answer}",
                String::from_utf8_lossy(garbage)
            );
        }

        // Still serving.
        let answer = raw_exchange(
            addr,
            format!("GET /v1/accounts/alice HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {READ_ALICE}\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        server.stop().await.unwrap();
    })
    .await;
}
