//! A small HTTP/1.1 client for the client-server API: hyper-util's connection pool over our
//! own connector (DNS, TCP, rustls), so that each way of failing maps to one stable code, and
//! every response body capped before it is parsed.
//!
//! The connector is ours rather than hyper-rustls' for the same reason the XMPP source does
//! its own steps: hyper-util's `HttpConnector` reports a DNS failure and a refused port as the
//! same opaque connect error, and the codes (`dns_failed`, `server_unreachable`, `tls_failed`,
//! `invalid_certificate`, `timeout`) are what the user acts on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use imstatus_core::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::{self, ClientConfig};
use tokio_rustls::TlsConnector;

use imstatus_core::text::clip;

/// How long one TCP connect may take.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an idle pooled connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a step failed: a stable code, the detail, whether retrying can help, and how long the
/// server asked us to wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failure {
    pub(crate) code: ErrorCode,
    pub(crate) detail: String,
    /// Retrying will not help until the config changes (wrong password, refused token).
    pub(crate) fatal: bool,
    /// `retry_after_ms` of an `M_LIMIT_EXCEEDED`, or a `Retry-After` header.
    pub(crate) retry_after: Option<Duration>,
    /// The homeserver refused the access token (`M_UNKNOWN_TOKEN`, `M_MISSING_TOKEN`): a
    /// password login may get a new one.
    pub(crate) token_refused: bool,
}

impl Failure {
    /// A failure worth retrying later.
    pub(crate) fn retry(code: ErrorCode, detail: impl Into<String>) -> Self {
        Failure {
            code,
            detail: detail.into(),
            fatal: false,
            retry_after: None,
            token_refused: false,
        }
    }

    /// A failure that stays until the config changes.
    pub(crate) fn fatal(code: ErrorCode, detail: impl Into<String>) -> Self {
        Failure {
            code,
            detail: detail.into(),
            fatal: true,
            retry_after: None,
            token_refused: false,
        }
    }
}

/// A response: status, the capped body, and `Retry-After` if the server sent one.
#[derive(Debug)]
pub(crate) struct Response {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
    pub(crate) retry_after: Option<Duration>,
}

/// The client of one homeserver.
#[derive(Clone)]
pub(crate) struct Http {
    client: Client<Connector, Full<Bytes>>,
    base: String,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http").field("base", &self.base).finish()
    }
}

impl Http {
    /// A client for `base` (`https://host[:port][/prefix]`); `tls` is required for https.
    pub(crate) fn new(base: &str, tls: Option<Arc<ClientConfig>>) -> Http {
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(IDLE_TIMEOUT)
            .pool_max_idle_per_host(2)
            // A request on a pooled connection the server had just closed is sent again.
            .retry_canceled_requests(true)
            .build(Connector { tls });
        Http {
            client,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    /// The base URL.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Sends one request and reads at most `cap` bytes of the answer, all within `timeout`.
    /// `path` starts with `/` and is already percent-encoded.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        timeout: Duration,
        cap: usize,
    ) -> Result<Response, Failure> {
        let what = describe(&method, path);
        match tokio::time::timeout(timeout, self.send_inner(method, path, token, body, cap)).await {
            Ok(result) => result.map_err(|mut f| {
                f.detail = format!("{what}: {}", f.detail);
                f
            }),
            Err(_) => Err(Failure::retry(
                ErrorCode::Timeout,
                format!("{what}: no answer within {timeout:?}"),
            )),
        }
    }

    async fn send_inner(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        cap: usize,
    ) -> Result<Response, Failure> {
        let uri: Uri = format!("{}{path}", self.base)
            .parse()
            .map_err(|e| Failure::fatal(ErrorCode::ProtocolError, format!("bad URL: {e}")))?;
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            let mut value = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
                Failure::fatal(
                    ErrorCode::AuthFailed,
                    "the access token holds characters an HTTP header cannot carry",
                )
            })?;
            value.set_sensitive(true);
            request = request.header(AUTHORIZATION, value);
        }
        let body = match body {
            Some(b) => {
                request = request.header(CONTENT_TYPE, "application/json");
                Full::new(Bytes::from(b))
            }
            None => Full::new(Bytes::new()),
        };
        let request = request
            .body(body)
            .map_err(|e| Failure::fatal(ErrorCode::ProtocolError, format!("bad request: {e}")))?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| request_failure(&e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let declared = response
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > cap as u64) {
            return Err(too_large(cap));
        }
        let body = Limited::new(response.into_body(), cap)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some()
                {
                    too_large(cap)
                } else {
                    Failure::retry(
                        ErrorCode::Disconnected,
                        format!("reading the answer: {}", chain(e.as_ref())),
                    )
                }
            })?
            .to_bytes();
        Ok(Response {
            status,
            body,
            retry_after,
        })
    }
}

fn too_large(cap: usize) -> Failure {
    Failure::retry(
        ErrorCode::ProtocolError,
        format!("the answer is larger than {} KiB; not read", cap / 1024),
    )
}

/// `GET /_matrix/client/v3/sync` without the query (which holds nothing secret, but is long).
fn describe(method: &Method, path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    format!("{method} {}", clip(path, 120))
}

/// The messages of an error and its sources, joined.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    clip(&out, 300)
}

/// A failed request: our connector's own failure when connecting failed, else the connection
/// dropped.
fn request_failure(e: &hyper_util::client::legacy::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<ConnectFailure>() {
            return Failure::retry(c.code, c.detail.clone());
        }
        source = s.source();
    }
    Failure::retry(
        ErrorCode::Disconnected,
        format!("the connection dropped: {}", chain(e)),
    )
}

/// Why a connection could not be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{detail}")]
struct ConnectFailure {
    code: ErrorCode,
    detail: String,
}

impl ConnectFailure {
    fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        ConnectFailure {
            code,
            detail: detail.into(),
        }
    }
}

/// DNS, TCP and (for https) rustls, each failure with its code.
#[derive(Clone)]
struct Connector {
    tls: Option<Arc<ClientConfig>>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = ConnectFailure;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        Box::pin(async move { connect(uri, tls).await.map(TokioIo::new) })
    }
}

async fn connect(uri: Uri, tls: Option<Arc<ClientConfig>>) -> Result<Stream, ConnectFailure> {
    let https = uri.scheme_str() == Some("https");
    let host = uri
        .host()
        .ok_or_else(|| ConnectFailure::new(ErrorCode::DnsFailed, "the URL has no host"))?;
    let bare_host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::net::lookup_host((bare_host.as_str(), port)).await {
            Ok(a) => a.collect(),
            Err(e) => {
                return Err(ConnectFailure::new(
                    ErrorCode::DnsFailed,
                    format!("cannot resolve {bare_host}: {e}"),
                ))
            }
        };
    if addrs.is_empty() {
        return Err(ConnectFailure::new(
            ErrorCode::DnsFailed,
            format!("{bare_host} has no address"),
        ));
    }
    let mut errors = Vec::new();
    let mut timed_out = false;
    let mut tcp = None;
    for addr in &addrs {
        match tokio::time::timeout(TCP_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                tcp = Some(s);
                break;
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                errors.push(format!("connection refused by {addr}"));
            }
            Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
            Err(_) => {
                timed_out = true;
                errors.push(format!("{addr}: no answer within {TCP_TIMEOUT:?}"));
            }
        }
    }
    let Some(tcp) = tcp else {
        let code = if timed_out && errors.len() == 1 {
            ErrorCode::Timeout
        } else {
            ErrorCode::ServerUnreachable
        };
        return Err(ConnectFailure::new(code, errors.join("; ")));
    };
    if !https {
        return Ok(Stream::Tcp(tcp));
    }
    let Some(config) = tls else {
        return Err(ConnectFailure::new(
            ErrorCode::TlsFailed,
            "https without trust roots",
        ));
    };
    let name = ServerName::try_from(bare_host.clone()).map_err(|e| {
        ConnectFailure::new(
            ErrorCode::TlsFailed,
            format!("{bare_host:?} is not a TLS server name: {e}"),
        )
    })?;
    match tokio::time::timeout(TCP_TIMEOUT, TlsConnector::from(config).connect(name, tcp)).await {
        Ok(Ok(s)) => Ok(Stream::Tls(Box::new(s))),
        Ok(Err(e)) => Err(handshake_failure(&e)),
        Err(_) => Err(ConnectFailure::new(
            ErrorCode::Timeout,
            format!("TLS handshake with {bare_host} did not finish within {TCP_TIMEOUT:?}"),
        )),
    }
}

/// Certificate problems are `invalid_certificate`, every other handshake failure `tls_failed`.
fn handshake_failure(error: &std::io::Error) -> ConnectFailure {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(rustls::Error::InvalidCertificate(reason)) => ConnectFailure::new(
            ErrorCode::InvalidCertificate,
            format!(
                "the server's certificate is not trusted: {}",
                match reason {
                    rustls::CertificateError::UnknownIssuer =>
                        "issued by an unknown authority (self-signed or a private CA: add it with ca_file)"
                            .to_owned(),
                    other => format!("{other:?}"),
                }
            ),
        ),
        Some(e) => ConnectFailure::new(ErrorCode::TlsFailed, format!("TLS handshake failed: {e}")),
        None => ConnectFailure::new(
            ErrorCode::TlsFailed,
            format!("TLS handshake failed: {error}"),
        ),
    }
}

/// Plain TCP or rustls over TCP.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Percent-encodes one path segment or query value (everything but RFC 3986's unreserved
/// characters).
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(encode("@alice:example.test"), "%40alice%3Aexample.test");
        assert_eq!(encode("{\"a\":[]}"), "%7B%22a%22%3A%5B%5D%7D");
        assert_eq!(encode("ä"), "%C3%A4");
    }

    #[test]
    fn descriptions_leave_the_query_out() {
        assert_eq!(
            describe(&Method::GET, "/_matrix/client/v3/sync?since=s1&filter=x"),
            "GET /_matrix/client/v3/sync"
        );
    }
}
