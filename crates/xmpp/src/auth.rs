//! SASL, done here on the guarded transport instead of by tokio-xmpp, for three reasons:
//!
//! - **No secret in any log.** tokio-xmpp traces every byte it writes and reads (target
//!   `tokio_xmpp::xmlstream`, level TRACE), which would put the PLAIN credentials, the SCRAM
//!   proof and the server's signature (each enough to attack the password offline) into the
//!   log of anyone running with `RUST_LOG=trace`. Here the SASL elements are written straight
//!   to the transport and the replies read with [`crate::scan`], so no logger ever sees them.
//! - **The server does not choose our CPU time.** The SCRAM iteration count comes from the
//!   server; more than [`MAX_SCRAM_ITERATIONS`] is refused before any hashing, and the hashing
//!   runs on the blocking pool (at most one per core at a time), never on a runtime thread.
//! - **Only mechanisms we mean.** SCRAM-SHA-256, then SCRAM-SHA-1, then PLAIN, and PLAIN only
//!   over TLS or to a loopback server; never ANONYMOUS (imstatus always logs in as someone).
//!   SCRAM's server signature is checked, so a server that does not know the password cannot
//!   pretend the login worked.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use imstatus_core::ErrorCode;
use sasl::client::mechanisms::{Plain, Scram};
use sasl::client::Mechanism;
use sasl::common::scram::{Sha1, Sha256};
use sasl::common::{ChannelBinding, Credentials};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::Semaphore;
use xmpp_parsers::minidom::Element;
use xmpp_parsers::sasl::{
    Auth, DefinedCondition as SaslCondition, Failure as SaslFailure, Mechanism as SaslMechanism,
    Nonza, Response,
};
use xmpp_parsers::stream_error::StreamError;

use crate::error::{self, Error};
use crate::guard::Guarded;
use crate::scan::{Limits, Mark, Scanner};
use imstatus_core::text::clip;

/// The most SCRAM iterations imstatus computes: above OWASP's 600,000 for PBKDF2-SHA-256 and far
/// above the servers' defaults (ejabberd 4,096, Prosody 10,000); about 0.3 s (SHA-256) to
/// 0.5 s (SHA-1) of one core in a release build. More is `auth_failed`, before any hashing.
pub const MAX_SCRAM_ITERATIONS: u64 = 1_000_000;

/// A SASL mechanism imstatus uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Choice {
    ScramSha256,
    ScramSha1,
    Plain,
}

impl Choice {
    fn name(self) -> &'static str {
        match self {
            Choice::ScramSha256 => "SCRAM-SHA-256",
            Choice::ScramSha1 => "SCRAM-SHA-1",
            Choice::Plain => "PLAIN",
        }
    }

    fn is_scram(self) -> bool {
        !matches!(self, Choice::Plain)
    }
}

/// The best mechanism among `offered`: SCRAM-SHA-256, SCRAM-SHA-1, then PLAIN only when the
/// connection is `secure` (TLS, or plaintext to a loopback address). Never ANONYMOUS.
pub(crate) fn choose(offered: &BTreeSet<String>, secure: bool) -> Option<Choice> {
    [Choice::ScramSha256, Choice::ScramSha1, Choice::Plain]
        .into_iter()
        .find(|c| offered.contains(c.name()) && (c.is_scram() || secure))
}

/// At most one SCRAM hashing per core at a time, so that many accounts logging in at once
/// leave CPU for everything else.
fn hashing_slots() -> &'static Semaphore {
    static SLOTS: OnceLock<Semaphore> = OnceLock::new();
    SLOTS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(1, |n| n.get())))
}

fn protocol(detail: String) -> Error {
    Error::retry(ErrorCode::ProtocolError, detail)
}

/// Authenticates as `username` on `io` (just after the stream features) and resets the guard
/// for the stream restart that follows. `secure`: TLS is on or the server is on loopback.
pub(crate) async fn authenticate<S>(
    io: &mut Guarded<S>,
    offered: &BTreeSet<String>,
    username: &str,
    password: String,
    secure: bool,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let choice = choose(offered, secure).ok_or_else(|| {
        Error::fatal(
            ErrorCode::AuthFailed,
            format!(
                "the server offers no SASL mechanism imstatus uses (offered: {}; imstatus uses \
                 SCRAM-SHA-256, SCRAM-SHA-1, and PLAIN only over TLS or to a loopback server)",
                clip(&offered.iter().cloned().collect::<Vec<_>>().join(", "), 200)
            ),
        )
    })?;
    let creds = Credentials::default()
        .with_username(username)
        .with_password(password)
        .with_channel_binding(ChannelBinding::None);
    let made = match choice {
        Choice::ScramSha256 => Scram::<Sha256>::from_credentials(creds)
            .map(|m| Box::new(m) as Box<dyn Mechanism + Send>),
        Choice::ScramSha1 => {
            Scram::<Sha1>::from_credentials(creds).map(|m| Box::new(m) as Box<dyn Mechanism + Send>)
        }
        Choice::Plain => {
            Plain::from_credentials(creds).map(|m| Box::new(m) as Box<dyn Mechanism + Send>)
        }
    };
    let mut mechanism =
        made.map_err(|e| Error::retry(ErrorCode::AuthFailed, format!("{}: {e}", choice.name())))?;
    let initial = mechanism.initial();
    let client_nonce = choice.is_scram().then(|| client_nonce(&initial)).flatten();
    let auth = Auth {
        mechanism: match choice {
            Choice::ScramSha256 => SaslMechanism::ScramSha256,
            Choice::ScramSha1 => SaslMechanism::ScramSha1,
            Choice::Plain => SaslMechanism::Plain,
        },
        data: initial,
    };
    write(io, Element::from(auth)).await?;

    let mut reader = Scanner::in_stream(Limits::default());
    let mut challenges = 0;
    let mut verified = false;
    loop {
        match read(io, &mut reader).await? {
            Reply::Sasl(Nonza::Challenge(challenge)) => {
                challenges += 1;
                match (choice.is_scram(), challenges) {
                    (true, 1) => {
                        check_server_first(&challenge.data, client_nonce.as_deref())?;
                        let (back, response) = respond(mechanism, challenge.data).await?;
                        mechanism = back;
                        write(io, Element::from(Response { data: response })).await?;
                    }
                    (true, 2) => {
                        // The server's signature sent as a challenge (RFC 6120 §6.3.10 allows
                        // both this and <success/> with data).
                        verify(mechanism.as_mut(), &challenge.data)?;
                        verified = true;
                        write(io, Element::from(Response { data: Vec::new() })).await?;
                    }
                    _ => {
                        return Err(protocol(format!(
                            "the server sent an unexpected SASL challenge during {}",
                            choice.name()
                        )))
                    }
                }
            }
            Reply::Sasl(Nonza::Success(success)) => {
                if choice.is_scram() && !verified {
                    if success.data.is_empty() {
                        return Err(protocol(
                            "the server accepted the SCRAM login without proving that it knows \
                             the password (no server signature)"
                                .to_owned(),
                        ));
                    }
                    verify(mechanism.as_mut(), &success.data)?;
                }
                return io
                    .restart()
                    .map_err(|e| error::io_failure(&e, "after SASL"));
            }
            Reply::Sasl(Nonza::Failure(failure)) => return Err(sasl_failure(&failure)),
            Reply::Sasl(other) => {
                return Err(protocol(format!(
                    "unexpected SASL element from the server: {}",
                    nonza_name(&other)
                )))
            }
            Reply::StreamError(e) => return Err(error::stream_error(&e)),
            Reply::Other(name) => {
                return Err(protocol(format!(
                    "unexpected <{}/> from the server during SASL",
                    clip(&name, 60)
                )))
            }
            Reply::Closed => {
                return Err(Error::retry(
                    ErrorCode::Disconnected,
                    "the server closed the stream during SASL".to_owned(),
                ))
            }
        }
    }
}

/// The `r=` of a SCRAM client-first message (`n,,n=user,r=NONCE`).
fn client_nonce(initial: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(initial).ok()?;
    text.split(',')
        .find_map(|part| part.strip_prefix("r="))
        .map(str::to_owned)
}

/// Checks a SCRAM server-first message before any hashing: the nonce must extend ours and the
/// iteration count must be within [`MAX_SCRAM_ITERATIONS`].
pub(crate) fn check_server_first(data: &[u8], client_nonce: Option<&str>) -> Result<(), Error> {
    let text = std::str::from_utf8(data)
        .map_err(|_| protocol("the SCRAM server-first message is not UTF-8".to_owned()))?;
    let field = |key: &str| {
        text.split(',')
            .find_map(|part| part.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
    };
    let nonce = field("r").unwrap_or_default();
    if client_nonce.is_none_or(|ours| !nonce.starts_with(ours) || nonce.len() <= ours.len()) {
        return Err(protocol(
            "the SCRAM server nonce does not extend the client's (RFC 5802)".to_owned(),
        ));
    }
    if field("s").is_none_or(str::is_empty) {
        return Err(protocol(
            "the SCRAM server-first message has no salt".to_owned(),
        ));
    }
    let raw = field("i").unwrap_or_default();
    let iterations: u64 = raw.parse().map_err(|_| {
        protocol(format!(
            "the SCRAM iteration count {:?} is not a number",
            clip(raw, 40)
        ))
    })?;
    if iterations == 0 || iterations > MAX_SCRAM_ITERATIONS {
        return Err(Error::fatal(
            ErrorCode::AuthFailed,
            format!(
                "the server asks for {iterations} SCRAM iterations; imstatus computes 1 to \
                 {MAX_SCRAM_ITERATIONS} (a misconfigured or hostile server: each iteration \
                 costs CPU time)"
            ),
        ));
    }
    Ok(())
}

/// Computes the SCRAM client-final message (PBKDF2) on the blocking pool.
async fn respond(
    mut mechanism: Box<dyn Mechanism + Send>,
    challenge: Vec<u8>,
) -> Result<(Box<dyn Mechanism + Send>, Vec<u8>), Error> {
    let _slot = hashing_slots()
        .acquire()
        .await
        .map_err(|e| protocol(format!("SCRAM: {e}")))?;
    let (mechanism, response) = tokio::task::spawn_blocking(move || {
        let response = mechanism.response(&challenge);
        (mechanism, response)
    })
    .await
    .map_err(|e| protocol(format!("SCRAM hashing failed: {e}")))?;
    let response = response.map_err(|e| protocol(format!("SCRAM: {e}")))?;
    Ok((mechanism, response))
}

fn verify(mechanism: &mut (dyn Mechanism + Send), data: &[u8]) -> Result<(), Error> {
    mechanism.success(data).map_err(|e| {
        protocol(format!(
            "the server's SCRAM signature is wrong ({e}): it does not know the password"
        ))
    })
}

/// Maps a SASL `<failure/>`: a wrong password is fatal, a temporary failure is not.
pub(crate) fn sasl_failure(failure: &SaslFailure) -> Error {
    let condition = format!("{:?}", failure.defined_condition);
    let text = failure
        .texts
        .get("en")
        .or_else(|| failure.texts.values().next())
        .filter(|t| !t.is_empty())
        .map(|t| format!(" ({})", clip(t, 200)))
        .unwrap_or_default();
    let detail = format!(
        "the server refused the login: <{}/>{text}",
        error::condition_name_of(&condition)
    );
    match failure.defined_condition {
        SaslCondition::TemporaryAuthFailure | SaslCondition::Aborted => {
            Error::retry(ErrorCode::AuthFailed, detail)
        }
        _ => Error::fatal(ErrorCode::AuthFailed, detail),
    }
}

fn nonza_name(n: &Nonza) -> &'static str {
    match n {
        Nonza::Abort(_) => "<abort/>",
        Nonza::Failure(_) => "<failure/>",
        Nonza::Success(_) => "<success/>",
        Nonza::Auth(_) => "<auth/>",
        Nonza::Challenge(_) => "<challenge/>",
        Nonza::Response(_) => "<response/>",
    }
}

/// Writes one element straight to the transport (never through a logger).
async fn write<S: AsyncWrite + Unpin>(io: &mut Guarded<S>, element: Element) -> Result<(), Error> {
    let text = String::from(&element);
    io.write_all(text.as_bytes())
        .await
        .map_err(|e| error::io_failure(&e, "sending SASL"))?;
    io.flush()
        .await
        .map_err(|e| error::io_failure(&e, "sending SASL"))
}

/// What the server sent during SASL.
#[derive(Debug)]
enum Reply {
    Sasl(Nonza),
    StreamError(StreamError),
    /// Another element, by name.
    Other(String),
    /// The stream's end tag or the end of the connection.
    Closed,
}

/// Reads the next top-level element (the guard has checked its limits).
async fn read<S: AsyncRead + Unpin>(
    io: &mut Guarded<S>,
    reader: &mut Scanner,
) -> Result<Reply, Error> {
    let mut item: Vec<u8> = Vec::new();
    loop {
        let available = io
            .fill_buf()
            .await
            .map_err(|e| error::io_failure(&e, "reading the SASL reply"))?;
        if available.is_empty() {
            return Ok(Reply::Closed);
        }
        let (used, mark) = reader.scan(available);
        if reader.in_item() || mark == Some(Mark::ItemEnd) {
            let from = if mark == Some(Mark::ItemStart) {
                used - 1
            } else {
                0
            };
            item.extend_from_slice(&available[from..used]);
        }
        io.consume(used);
        match mark {
            Some(Mark::ItemEnd) => return Ok(parse(&item)),
            Some(Mark::Violation(v)) => {
                return Err(protocol(format!(
                    "during SASL the server sent {}",
                    v.describe(reader.limits(), reader.item_limit())
                )))
            }
            _ => {}
        }
    }
}

/// Parses one item; the stream header's namespaces are declared around it.
fn parse(item: &[u8]) -> Reply {
    if item.starts_with(b"</") {
        return Reply::Closed;
    }
    let wrapped = format!(
        "<wrap xmlns='{}' xmlns:stream='{}'>{}</wrap>",
        xmpp_parsers::ns::JABBER_CLIENT,
        xmpp_parsers::ns::STREAM,
        String::from_utf8_lossy(item)
    );
    let Some(element) = wrapped
        .parse::<Element>()
        .ok()
        .and_then(|w| w.children().next().cloned())
    else {
        return Reply::Other("(not well-formed XML)".to_owned());
    };
    let name = element.name().to_owned();
    if element.is("error", xmpp_parsers::ns::STREAM) {
        return match StreamError::try_from(element) {
            Ok(e) => Reply::StreamError(e),
            Err(_) => Reply::Other(name),
        };
    }
    match Nonza::try_from(element) {
        Ok(n) => Reply::Sasl(n),
        Err(_) => Reply::Other(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn scram_is_preferred_plain_needs_a_secure_link_and_anonymous_is_never_used() {
        let all = offered(&["ANONYMOUS", "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"]);
        assert_eq!(choose(&all, false), Some(Choice::ScramSha256));
        let sha1 = offered(&["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS"]);
        assert_eq!(choose(&sha1, false), Some(Choice::ScramSha1));
        let plain = offered(&["PLAIN", "ANONYMOUS"]);
        assert_eq!(choose(&plain, true), Some(Choice::Plain));
        assert_eq!(choose(&plain, false), None);
        assert_eq!(choose(&offered(&["ANONYMOUS"]), true), None);
        assert_eq!(choose(&offered(&["X-OAUTH2", "EXTERNAL"]), true), None);
    }

    #[test]
    fn the_server_first_message_is_checked_before_hashing() {
        let ok = b"r=abcdefXYZ,s=QSXCR+Q6sek8bf92,i=4096";
        assert!(check_server_first(ok, Some("abcdef")).is_ok());
        let f = check_server_first(b"r=abcdefXYZ,s=QSXC,i=4294967295", Some("abcdef"))
            .expect_err("refused");
        assert_eq!((f.code(), f.is_fatal()), (ErrorCode::AuthFailed, true));
        assert!(
            f.detail().contains("4294967295 SCRAM iterations"),
            "{}",
            f.detail()
        );
        let f = check_server_first(b"r=abcdefXYZ,s=QSXC,i=99999999999999999999", Some("abcdef"))
            .expect_err("refused");
        assert_eq!(f.code(), ErrorCode::ProtocolError, "{}", f.detail());
        let f = check_server_first(b"r=abcdefXYZ,s=QSXC,i=0", Some("abcdef")).expect_err("refused");
        assert_eq!(f.code(), ErrorCode::AuthFailed);
        let f = check_server_first(b"r=evil,s=QSXC,i=4096", Some("abcdef")).expect_err("refused");
        assert!(f.detail().contains("nonce"), "{}", f.detail());
        let f = check_server_first(b"r=abcdef,s=QSXC,i=4096", Some("abcdef")).expect_err("refused");
        assert!(f.detail().contains("nonce"), "{}", f.detail());
        let f = check_server_first(b"r=abcdefX,i=4096", Some("abcdef")).expect_err("refused");
        assert!(f.detail().contains("salt"), "{}", f.detail());
    }

    #[test]
    fn the_client_nonce_is_read_from_the_client_first_message() {
        assert_eq!(
            client_nonce(b"n,,n=alice,r=fyko+d2lbbFgONRv9qkxdawL").as_deref(),
            Some("fyko+d2lbbFgONRv9qkxdawL")
        );
        assert_eq!(client_nonce(b"\0alice\0pw"), None);
    }

    #[test]
    fn replies_parse_with_the_streams_namespaces() {
        assert!(matches!(
            parse(b"<challenge xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>cj1hYmM=</challenge>"),
            Reply::Sasl(Nonza::Challenge(c)) if c.data == b"r=abc"
        ));
        assert!(matches!(
            parse(b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"),
            Reply::StreamError(_)
        ));
        assert!(matches!(parse(b"</stream:stream>"), Reply::Closed));
        assert!(matches!(parse(b"<presence/>"), Reply::Other(n) if n == "presence"));
        assert!(matches!(parse(b"<a><b></a>"), Reply::Other(_)));
    }

    #[test]
    fn a_wrong_password_is_fatal_and_a_temporary_failure_is_not() {
        let failure = |xml: &str| {
            let el: Element = xml.parse().expect("xml");
            sasl_failure(&SaslFailure::try_from(el).expect("a failure"))
        };
        let f = failure(
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/>\
             <text xml:lang='en'>bad\npassword</text></failure>",
        );
        assert_eq!((f.code(), f.is_fatal()), (ErrorCode::AuthFailed, true));
        // The server's text without its control characters.
        assert_eq!(
            f.detail(),
            "the server refused the login: <not-authorized/> (bad password)"
        );
        let f = failure(
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><temporary-auth-failure/></failure>",
        );
        assert_eq!((f.code(), f.is_fatal()), (ErrorCode::AuthFailed, false));
        assert_eq!(
            f.detail(),
            "the server refused the login: <temporary-auth-failure/>"
        );
    }
}
