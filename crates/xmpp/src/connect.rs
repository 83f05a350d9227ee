//! Getting from a config to a bound XMPP session, one step at a time, each failure mapped to
//! one of design §1's codes: DNS (`dns_failed`), TCP (`server_unreachable`), STARTTLS
//! (`tls_failed`, `invalid_certificate`), SASL (`auth_failed`, fatal) and resource binding.
//!
//! This uses tokio-xmpp's XML stream ([`tokio_xmpp::xmlstream`]) rather than its `Client`:
//! the `Client` reconnects by itself forever (auth failures included, with its own backoff),
//! reports login errors only to its log, and builds its rustls config internally (no extra
//! CA). Here every step is ours, SASL included ([`crate::auth`]), and every byte the server
//! sends passes [`crate::guard`] before the XML parser sees it.
//!
//! `tls = "insecure-plaintext"` is refused for any address that is not loopback, before a
//! TCP connection is made (and checked again on the connected socket).

use std::borrow::Cow;
use std::net::SocketAddr;
use std::time::Duration;

use crate::config::TlsMode;
use futures_util::{SinkExt, StreamExt};
use hickory_resolver::proto::rr::{IntoName, RData};
use hickory_resolver::TokioResolver;
use imstatus_core::ErrorCode;
use tokio::io::{AsyncRead, AsyncWrite, BufWriter};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;
use tokio_xmpp::error::Error as XmppError;
use tokio_xmpp::xmlstream::{
    initiate_stream, FallibleStreamElement, ReadError, StreamElementError, StreamHeader, Timeouts,
    XmppStream, XmppStreamElement,
};
use xmpp_parsers::bind::{BindQuery, BindResponse};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid};
use xmpp_parsers::starttls;
use xmpp_parsers::stream_features::StreamFeatures;

use crate::error::{condition_name_of, io_failure, stream_error, xmpp_failure, Error};
use crate::guard::Guarded;
use crate::tls::{self, Roots, Seen};
use imstatus_core::text::clip;

/// The default c2s port when there is no SRV record.
pub(crate) const DEFAULT_PORT: u16 = 5222;
/// How long one TCP connect may take.
const TCP_TIMEOUT: Duration = Duration::from_secs(5);

/// Any byte stream we can speak XMPP over (plain TCP or rustls over TCP).
pub(crate) trait RawIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> RawIo for T {}

/// The transport under the XML stream: reads guarded, writes buffered until flushed (one
/// segment per stanza, as tokio-xmpp flushes after each).
pub(crate) type Io = Guarded<BufWriter<Box<dyn RawIo>>>;
/// An XMPP stream over [`Io`].
pub(crate) type Stream = XmppStream<Io>;

/// The XML stream timeouts: a soft timeout after 60 s of silence (we send a ping), dead 20 s
/// later.
pub(crate) fn timeouts() -> Timeouts {
    Timeouts {
        read_timeout: Duration::from_secs(60),
        response_timeout: Duration::from_secs(20),
    }
}

fn header(domain: &str) -> StreamHeader<'_> {
    StreamHeader {
        to: Some(Cow::Borrowed(domain)),
        from: None,
        id: None,
    }
}

// ---------------------------------------------------------------- DNS

/// Where to connect and how that was found.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) addrs: Vec<SocketAddr>,
    pub(crate) how: String,
}

/// Splits `host:port` / `[v6]:port`.
pub(crate) fn split_host_port(server: &str) -> Option<(&str, u16)> {
    let (host, port) = server.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

async fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    match tokio::net::lookup_host((host, port)).await {
        Ok(addrs) => {
            let addrs: Vec<SocketAddr> = addrs.collect();
            if addrs.is_empty() {
                Err(format!("{host} has no address"))
            } else {
                Ok(addrs)
            }
        }
        Err(e) => Err(format!("cannot resolve {host}: {e}")),
    }
}

/// The `server` override, or SRV `_xmpp-client._tcp.<domain>` then A/AAAA of the domain.
pub(crate) async fn resolve(domain: &str, server: Option<&str>) -> Result<Resolved, Error> {
    let dns = |detail| Error::retry(ErrorCode::DnsFailed, detail);
    if let Some(server) = server {
        let (host, port) = split_host_port(server)
            .ok_or_else(|| dns(format!("`server` {server:?} is not host:port")))?;
        let addrs = lookup(host, port).await.map_err(dns)?;
        return Ok(Resolved {
            how: format!("server {server} → {}", list(&addrs)),
            addrs,
        });
    }
    if domain.parse::<std::net::IpAddr>().is_ok() {
        let addrs = lookup(domain, DEFAULT_PORT).await.map_err(dns)?;
        return Ok(Resolved {
            how: format!("IP literal domain → {}", list(&addrs)),
            addrs,
        });
    }
    let srv_name = format!("_xmpp-client._tcp.{domain}.");
    let (targets, srv_note) = match srv_lookup(&srv_name).await {
        Ok(targets) if targets.is_empty() => {
            return Err(dns(format!(
                "SRV {srv_name} says there is no XMPP service (target \".\")"
            )))
        }
        Ok(targets) => (targets, format!("SRV {srv_name}")),
        Err(e) => (
            vec![(domain.to_owned(), DEFAULT_PORT)],
            if e.contains("no records found") || e == "no SRV answer" {
                format!("no SRV record for {srv_name}; A/AAAA of {domain}")
            } else {
                format!(
                    "SRV lookup of {srv_name} failed ({}); A/AAAA of {domain}",
                    clip(&e, 120)
                )
            },
        ),
    };
    let mut addrs = Vec::new();
    let mut errors = Vec::new();
    for (host, port) in &targets {
        match lookup(host, *port).await {
            Ok(found) => addrs.extend(found),
            Err(e) => errors.push(e),
        }
    }
    if addrs.is_empty() {
        return Err(dns(format!("{srv_note}: {}", errors.join("; "))));
    }
    Ok(Resolved {
        how: format!("{srv_note} → {}", list(&addrs)),
        addrs,
    })
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// SRV targets ordered by priority then weight (`[]` for the "no service" target `.`).
async fn srv_lookup(name: &str) -> Result<Vec<(String, u16)>, String> {
    let resolver = TokioResolver::builder_tokio()
        .map_err(|e| e.to_string())?
        .build()
        .map_err(|e| e.to_string())?;
    let name = name.into_name().map_err(|e| e.to_string())?;
    let lookup = resolver.srv_lookup(name).await.map_err(|e| e.to_string())?;
    let mut records: Vec<(u16, std::cmp::Reverse<u16>, String, u16)> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some((
                srv.priority,
                std::cmp::Reverse(srv.weight),
                srv.target.to_ascii(),
                srv.port,
            )),
            _ => None,
        })
        .collect();
    if records.is_empty() {
        return Err("no SRV answer".to_owned());
    }
    records.sort();
    Ok(records
        .into_iter()
        .filter(|(_, _, target, _)| target != ".")
        .map(|(_, _, target, port)| (target.trim_end_matches('.').to_owned(), port))
        .collect())
}

// ---------------------------------------------------------------- TCP

/// Whether `addr` is a loopback address (IPv4-mapped IPv6 included).
pub(crate) fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}

/// `tls = "insecure-plaintext"` only to loopback: refuses before any connection is made when
/// one of `addrs` is not loopback.
pub(crate) fn check_plaintext(tls: TlsMode, addrs: &[SocketAddr]) -> Result<(), Error> {
    match (tls, addrs.iter().find(|a| !is_loopback(a))) {
        (TlsMode::InsecurePlaintext, Some(addr)) => Err(Error::fatal(
            ErrorCode::TlsFailed,
            format!(
                "tls = \"insecure-plaintext\" is only allowed for a server on this machine \
                 (loopback), and {addr} is not: the password would cross the network in the \
                 clear (use tls = \"required\")"
            ),
        )),
        _ => Ok(()),
    }
}

/// Connects to the first address that answers.
pub(crate) async fn tcp(addrs: &[SocketAddr]) -> Result<TcpStream, Error> {
    let mut errors = Vec::new();
    for addr in addrs {
        match tokio::time::timeout(TCP_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Latency matters more than packet count for presence.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                errors.push(format!("connection refused by {addr}"));
            }
            Ok(Err(e)) => errors.push(format!("{addr}: {e}")),
            Err(_) => errors.push(format!("{addr}: no answer within {TCP_TIMEOUT:?}")),
        }
    }
    Err(Error::retry(
        ErrorCode::ServerUnreachable,
        if errors.is_empty() {
            "no address to connect to".to_owned()
        } else {
            errors.join("; ")
        },
    ))
}

// ---------------------------------------------------------------- stream and STARTTLS

/// What the TLS step found, for `doctor`.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsInfo {
    /// TLS is on, or the server is on loopback: PLAIN may be used.
    pub(crate) secure: bool,
    /// The protocol version and cipher suite, when TLS is used.
    pub(crate) session: Option<String>,
    /// The server's certificate, described.
    pub(crate) certificate: Option<String>,
}

/// Opens the XML stream: plaintext, or STARTTLS with `roots` (required; a server that does
/// not offer it fails with `tls_failed`).
pub(crate) async fn open(
    tcp: TcpStream,
    domain: &str,
    tls: TlsMode,
    roots: Option<&Roots>,
) -> Result<(StreamFeatures, Stream, TlsInfo), Error> {
    match (tls, roots) {
        (TlsMode::InsecurePlaintext, _) => {
            let peer = tcp.peer_addr().map_err(|e| io_failure(&e, "connecting"))?;
            check_plaintext(TlsMode::InsecurePlaintext, &[peer])?;
            let io: Io = Guarded::new(BufWriter::new(Box::new(tcp)));
            let (features, stream) = start_stream(io, domain).await?;
            let requires_tls = features.starttls.as_ref().is_some_and(|s| s.required)
                || (features.can_starttls() && features.sasl_mechanisms.is_empty());
            if requires_tls {
                return Err(Error::retry(
                    ErrorCode::TlsFailed,
                    "the server requires STARTTLS but the config says tls = \"insecure-plaintext\""
                        .to_owned(),
                ));
            }
            Ok((
                features,
                stream,
                TlsInfo {
                    secure: is_loopback(&peer),
                    ..TlsInfo::default()
                },
            ))
        }
        (TlsMode::Required, None) => Err(Error::retry(
            ErrorCode::TlsFailed,
            "TLS is required but no trust roots were loaded".to_owned(),
        )),
        (TlsMode::Required, Some(roots)) => starttls(tcp, domain, roots).await,
    }
}

/// Sends our stream header and reads the server's header and features.
async fn start_stream<S>(
    io: Guarded<S>,
    domain: &str,
) -> Result<(StreamFeatures, XmppStream<Guarded<S>>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let pending = initiate_stream(
        io,
        xmpp_parsers::ns::JABBER_CLIENT,
        header(domain),
        timeouts(),
    )
    .await
    .map_err(|e| io_failure(&e, "opening the stream"))?;
    pending
        .recv_features::<FallibleStreamElement>()
        .await
        .map_err(|e| xmpp_failure(&XmppError::from(e), "reading stream features"))
}

async fn starttls(
    tcp: TcpStream,
    domain: &str,
    roots: &Roots,
) -> Result<(StreamFeatures, Stream, TlsInfo), Error> {
    let (features, mut stream) = start_stream(Guarded::new(BufWriter::new(tcp)), domain).await?;
    if !features.can_starttls() {
        return Err(Error::retry(
            ErrorCode::TlsFailed,
            "the server does not offer STARTTLS (set tls = \"insecure-plaintext\" only for a loopback test server)"
                .to_owned(),
        ));
    }
    stream
        .send(&XmppStreamElement::Starttls(starttls::Nonza::Request(
            starttls::Request,
        )))
        .await
        .map_err(|e| io_failure(&e, "sending <starttls/>"))?;
    loop {
        match next(&mut stream).await? {
            Next::Element(XmppStreamElement::Starttls(starttls::Nonza::Proceed(_))) => break,
            Next::Element(XmppStreamElement::StreamError(e)) => return Err(stream_error(&e.0)),
            Next::Element(other) => {
                return Err(Error::retry(
                    ErrorCode::TlsFailed,
                    format!(
                        "the server refused STARTTLS: {}",
                        clip(&format!("{other:?}"), 200)
                    ),
                ))
            }
            Next::Invalid(e) => {
                return Err(Error::retry(
                    ErrorCode::ProtocolError,
                    format!("during STARTTLS: {}", clip(&e.to_string(), 200)),
                ))
            }
            Next::Anomaly(_) | Next::Dropped(..) | Next::Idle => {}
        }
    }
    let tcp = stream
        .into_inner()
        .into_inner()
        .map_err(|e| io_failure(&e, "STARTTLS"))?
        .into_inner();
    let (config, seen) = roots.client_config()?;
    let name = ServerName::try_from(domain.to_owned()).map_err(|e| {
        Error::retry(
            ErrorCode::TlsFailed,
            format!("{domain:?} is not a TLS server name: {e}"),
        )
    })?;
    let tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| tls::handshake_failure(&e, &seen))?;
    let info = describe_session(&tls, &seen);
    let io: Io = Guarded::new(BufWriter::new(Box::new(tls)));
    let (features, stream) = start_stream(io, domain).await?;
    Ok((features, stream, info))
}

fn describe_session(tls: &tokio_rustls::client::TlsStream<TcpStream>, seen: &Seen) -> TlsInfo {
    let (_, connection) = tls.get_ref();
    let session = match (
        connection.protocol_version(),
        connection.negotiated_cipher_suite(),
    ) {
        (Some(v), Some(s)) => Some(format!("{v:?}, {:?}", s.suite())),
        (Some(v), None) => Some(format!("{v:?}")),
        _ => None,
    };
    TlsInfo {
        secure: true,
        session,
        certificate: seen.describe(),
    }
}

// ---------------------------------------------------------------- SASL and binding

/// Authenticates as the JID's local part ([`crate::auth`]) and restarts the stream.
/// `secure`: TLS is on or the server is on loopback ([`TlsInfo::secure`]).
pub(crate) async fn authenticate(
    stream: Stream,
    features: &StreamFeatures,
    jid: &BareJid,
    password: String,
    secure: bool,
) -> Result<(StreamFeatures, Stream), Error> {
    let username = jid.node().map(|n| n.as_str()).unwrap_or_default();
    let mut io = stream.into_inner();
    crate::auth::authenticate(
        &mut io,
        &features.sasl_mechanisms,
        username,
        password,
        secure,
    )
    .await?;
    start_stream(io, jid.domain().as_str()).await
}

/// Binds `resource`; returns the full JID the server assigned.
pub(crate) async fn bind(stream: &mut Stream, resource: &str) -> Result<FullJid, Error> {
    const ID: &str = "imstatus-bind";
    send(
        stream,
        Iq::from_set(ID, BindQuery::new(Some(resource.to_owned()))).into(),
    )
    .await?;
    loop {
        match next(stream).await? {
            Next::Element(XmppStreamElement::Stanza(xmpp_parsers::stanza::Stanza::Iq(iq)))
                if iq.id() == ID =>
            {
                return match iq {
                    Iq::Result {
                        payload: Some(payload),
                        ..
                    } => BindResponse::try_from(payload)
                        .map(FullJid::from)
                        .map_err(|e| {
                            Error::retry(
                                ErrorCode::ProtocolError,
                                format!("invalid bind result: {}", clip(&e.to_string(), 200)),
                            )
                        }),
                    Iq::Error { error, .. } => Err(Error::retry(
                        ErrorCode::ProtocolError,
                        format!(
                            "the server refused to bind a resource: {}",
                            condition_name_of(&format!("{:?}", error.defined_condition))
                        ),
                    )),
                    _ => Err(Error::retry(
                        ErrorCode::ProtocolError,
                        "the bind result carries no JID".to_owned(),
                    )),
                };
            }
            Next::Element(XmppStreamElement::StreamError(e)) => return Err(stream_error(&e.0)),
            Next::Element(_)
            | Next::Anomaly(_)
            | Next::Dropped(..)
            | Next::Idle
            | Next::Invalid(_) => {}
        }
    }
}

// ---------------------------------------------------------------- reading and writing

/// What [`next`] read.
// Boxing the big variant would cost an allocation per stanza; a `Next` lives only briefly.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Next {
    /// A stream-level element.
    Element(XmppStreamElement),
    /// A stanza that failed to parse; the stream goes on.
    Invalid(StreamElementError),
    /// Something unparseable that the stream survived.
    Anomaly(String),
    /// The guard dropped a stanza that broke a limit; the stream goes on. The number is how
    /// many more were dropped before it without a report (the report queue was full).
    Dropped(crate::guard::Dropped, usize),
    /// Nothing for a long time (the soft timeout): send something to check the link.
    Idle,
}

/// Reads the next element; a dead or closed stream is a [`Error`]. A stanza the guard
/// dropped is reported as soon as it is dropped; a presence the guard's fast path read comes in
/// its place in the stream ([`crate::guard`]).
pub(crate) async fn next<S: AsyncRead + Unpin>(
    stream: &mut XmppStream<Guarded<S>>,
) -> Result<Next, Error> {
    let shared = stream.get_stream().shared().clone();
    loop {
        if let Some((dropped, unqueued)) = shared.take_report() {
            return Ok(Next::Dropped(dropped, unqueued));
        }
        if let Some(presence) = shared.take_presence() {
            return Ok(Next::Element(XmppStreamElement::Stanza(
                xmpp_parsers::stanza::Stanza::Presence(presence),
            )));
        }
        let item = tokio::select! {
            biased;
            () = shared.reported() => continue,
            item = stream.next() => item,
        };
        return match item {
            Some(Ok(FallibleStreamElement::Ok(element))) => Ok(Next::Element(element)),
            Some(Ok(FallibleStreamElement::Err(e))) => Ok(Next::Invalid(e)),
            Some(Err(ReadError::SoftTimeout)) => Ok(Next::Idle),
            Some(Err(ReadError::ParseError(e))) => Ok(Next::Anomaly(clip(&e.to_string(), 200))),
            Some(Err(ReadError::HardError(e))) => Err(io_failure(&e, "reading")),
            Some(Err(ReadError::StreamFooterReceived)) | None => Err(Error::retry(
                ErrorCode::Disconnected,
                "the server closed the stream".to_owned(),
            )),
        };
    }
}

/// Sends one stanza.
pub(crate) async fn send(
    stream: &mut Stream,
    stanza: xmpp_parsers::stanza::Stanza,
) -> Result<(), Error> {
    stream
        .send(&XmppStreamElement::Stanza(stanza))
        .await
        .map_err(|e| io_failure(&e, "sending"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_override_forms() {
        assert_eq!(
            split_host_port("127.0.0.1:15222"),
            Some(("127.0.0.1", 15222))
        );
        assert_eq!(split_host_port("[::1]:5222"), Some(("::1", 5222)));
        assert_eq!(
            split_host_port("xmpp.example.org:5222"),
            Some(("xmpp.example.org", 5222))
        );
        assert_eq!(split_host_port("example.org"), None);
        assert_eq!(split_host_port(":5222"), None);
        assert_eq!(split_host_port("h:99999"), None);
    }

    #[test]
    fn plaintext_is_refused_for_any_address_off_this_machine() {
        let addrs = |list: &[&str]| -> Vec<SocketAddr> {
            list.iter().map(|a| a.parse().expect("addr")).collect()
        };
        let local = addrs(&["127.0.0.1:5222", "[::1]:5222", "[::ffff:127.0.0.2]:5222"]);
        assert!(check_plaintext(TlsMode::InsecurePlaintext, &local).is_ok());
        for remote in ["192.0.2.1:5222", "[2001:db8::1]:5222", "0.0.0.0:5222"] {
            let mixed = addrs(&["127.0.0.1:5222", remote]);
            let f = check_plaintext(TlsMode::InsecurePlaintext, &mixed).expect_err("refused");
            assert_eq!(
                (f.code(), f.is_fatal()),
                (ErrorCode::TlsFailed, true),
                "{remote}"
            );
            assert!(
                f.detail().contains("is not: the password would cross"),
                "{}",
                f.detail()
            );
            assert!(check_plaintext(TlsMode::Required, &mixed).is_ok());
        }
    }
}

#[cfg(test)]
mod resolve_tests {
    use super::*;

    #[tokio::test]
    async fn without_srv_the_domain_itself_is_used_on_the_default_port() {
        let r = resolve("localhost", None)
            .await
            .expect("localhost resolves");
        assert!(
            r.addrs
                .iter()
                .all(|a| a.port() == DEFAULT_PORT && a.ip().is_loopback()),
            "{r:?}"
        );
        assert!(r.how.contains("no SRV record"), "{r:?}");
    }
}
