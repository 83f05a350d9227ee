//! [`XmppSource`]: log in as the user with a resource of our own, watch the other resources.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use imstatus_core::{Backoff, ErrorCode, Observation, SourceKind};
use imstatus_hub::config::{TlsMode, XmppConfig};
use imstatus_hub::{BoxFuture, Sink, Source};
use tokio_xmpp::xmlstream::{StreamElementError, XmppStreamElement};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::ping::Ping;
use xmpp_parsers::presence::Presence;
use xmpp_parsers::roster::Roster;
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::connect::{self, Failure, Next, Stream};
use crate::tls::Roots;
use crate::translate::{clip, Translator};

/// How long a login (DNS, TCP, TLS, SASL, bind, initial presences) may take.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// A session that lasted this long resets the reconnect backoff.
const HELD: Duration = Duration::from_secs(10);
/// At most this many stanzas already received are reported in one batch.
const MAX_BATCH: usize = 256;
/// The id of the roster request that doubles as the end-of-initial-presences barrier.
const ROSTER_ID: &str = "imstatus-roster";

/// Watches one XMPP account by logging in as the user (resource `imstatus-<random>`,
/// priority −1) and translating the presence of the user's other resources.
#[derive(Debug)]
pub struct XmppSource {
    config: XmppConfig,
    backoff_seed: u64,
    login_timeout: Duration,
    /// System roots plus `ca_file`, loaded on the first TLS connection.
    roots: Mutex<Option<Roots>>,
}

impl XmppSource {
    /// A source for the account in `config`; nothing happens until the hub runs it. The
    /// password is read (never logged) on every login.
    pub fn new(config: &XmppConfig) -> Self {
        XmppSource {
            config: config.clone(),
            backoff_seed: random_u64(),
            login_timeout: LOGIN_TIMEOUT,
            roots: Mutex::new(None),
        }
    }

    /// Seeds the reconnect jitter (for reproducible tests).
    pub fn with_backoff_seed(mut self, seed: u64) -> Self {
        self.backoff_seed = seed;
        self
    }

    /// Sets how long a login may take before it fails with `timeout` (default 10 s).
    pub fn with_login_timeout(mut self, timeout: Duration) -> Self {
        self.login_timeout = timeout;
        self
    }

    /// The trust roots, loaded once (off the async threads: it reads many files).
    pub(crate) async fn roots(&self) -> Result<Roots, Failure> {
        if let Some(roots) = self.roots.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(roots);
        }
        let roots = load_roots(self.config.ca_file.clone()).await?;
        *self.roots.lock().unwrap_or_else(|e| e.into_inner()) = Some(roots.clone());
        Ok(roots)
    }

    async fn run_loop(self: Arc<Self>, sink: Sink) {
        let mut backoff = Backoff::new(self.backoff_seed);
        let user = match BareJid::new(&self.config.jid) {
            Ok(user) if user.node().is_some() => user,
            _ => {
                sink.observe(Observation::SourceDown(
                    ErrorCode::AuthFailed,
                    format!(
                        "{:?} is not a bare JID like user@example.org",
                        self.config.jid
                    ),
                ));
                return;
            }
        };
        loop {
            let (failure, synced_at) = self.session(&user, &sink).await;
            tracing::debug!(jid = %user, code = %failure.code, detail = %failure.detail, "XMPP session ended");
            sink.observe(Observation::SourceDown(failure.code, failure.detail));
            if failure.fatal {
                // Retrying cannot help until the config changes: stay down.
                return;
            }
            if synced_at.is_some_and(|t| t.elapsed() >= HELD) {
                backoff.reset();
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One connection, from DNS to its end; returns why it ended and when it synced.
    async fn session(&self, user: &BareJid, sink: &Sink) -> (Failure, Option<Instant>) {
        // `password_command` may take a while (gpg): keep it off the async threads.
        let secret = self.config.password.clone();
        let read = tokio::task::spawn_blocking(move || secret.read().map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let password = match read {
            Ok(p) => p,
            Err(e) => {
                return (
                    Failure {
                        code: ErrorCode::AuthFailed,
                        detail: format!("cannot read the password: {e}"),
                        fatal: true,
                    },
                    None,
                )
            }
        };
        let mut translator = Translator::new(user.clone(), None, self.config.contacts);
        let mut step = "dns";
        let login = tokio::time::timeout(
            self.login_timeout,
            self.login(user, password, &mut translator, &mut step),
        )
        .await;
        let (mut stream, batch) = match login {
            Ok(Ok(ok)) => ok,
            Ok(Err(failure)) => return (failure, None),
            Err(_) => {
                return (
                    Failure::retry(
                        ErrorCode::Timeout,
                        format!(
                            "login did not finish within {:?} (stuck at: {step})",
                            self.login_timeout
                        ),
                    ),
                    None,
                )
            }
        };
        sink.observe_all(batch);
        let synced_at = Instant::now();
        tracing::debug!(jid = %user, "XMPP source synced");
        let mut failure = watch(&mut stream, &mut translator, sink).await;
        if failure.code == ErrorCode::Timeout {
            // The stream's hard timeout after an unanswered ping: the link is gone.
            failure.code = ErrorCode::Disconnected;
        }
        (failure, Some(synced_at))
    }

    /// Connects, logs in, sends the initial presence and the roster request, and reads up to
    /// the roster result. Returns the stream and the observations ending with `Synced`.
    async fn login(
        &self,
        user: &BareJid,
        password: String,
        translator: &mut Translator,
        step: &mut &'static str,
    ) -> Result<(Stream, Vec<Observation>), Failure> {
        let domain = user.domain().as_str();
        *step = "dns";
        let resolved = connect::resolve(domain, self.config.server.as_deref()).await?;
        *step = "tcp";
        let tcp = connect::tcp(&resolved.addrs).await?;
        *step = match self.config.tls {
            TlsMode::Required => "starttls",
            TlsMode::InsecurePlaintext => "stream",
        };
        let roots = match self.config.tls {
            TlsMode::Required => Some(self.roots().await?),
            TlsMode::InsecurePlaintext => None,
        };
        let (features, stream, _) =
            connect::open(tcp, domain, self.config.tls, roots.as_ref()).await?;
        *step = "sasl";
        let (_, mut stream) = connect::authenticate(stream, &features, user, password).await?;
        *step = "bind";
        let resource = format!("imstatus-{:016x}", random_u64());
        let own = connect::bind(&mut stream, &resource).await?;
        translator.set_own(own);
        *step = "initial presence";
        connect::send(&mut stream, Presence::available().with_priority(-1).into()).await?;
        // Prosody handles a stream's stanzas in order: when the roster result arrives, the
        // presences our initial presence triggered have all been delivered before it.
        connect::send(
            &mut stream,
            Iq::from_get(
                ROSTER_ID,
                Roster {
                    ver: None,
                    items: Vec::new(),
                },
            )
            .into(),
        )
        .await?;
        let mut batch = Vec::new();
        loop {
            let next = connect::next(&mut stream).await?;
            if handle(next, &mut stream, translator, &mut batch).await? {
                batch.push(Observation::Synced);
                return Ok((stream, batch));
            }
        }
    }
}

/// Reads until the stream ends, reporting what is already received in batches.
async fn watch(stream: &mut Stream, translator: &mut Translator, sink: &Sink) -> Failure {
    let mut batch = Vec::new();
    loop {
        let result = async {
            let next = connect::next(stream).await?;
            handle(next, stream, translator, &mut batch).await?;
            for _ in 1..MAX_BATCH {
                let Some(next) = connect::next(stream).now_or_never() else {
                    break;
                };
                handle(next?, stream, translator, &mut batch).await?;
            }
            Ok::<(), Failure>(())
        }
        .await;
        if !batch.is_empty() {
            sink.observe_all(std::mem::take(&mut batch));
        }
        if let Err(failure) = result {
            return failure;
        }
    }
}

/// Handles one read item; returns whether it was the roster result (the sync barrier).
async fn handle(
    next: Next,
    stream: &mut Stream,
    translator: &mut Translator,
    out: &mut Vec<Observation>,
) -> Result<bool, Failure> {
    match next {
        Next::Element(XmppStreamElement::Stanza(Stanza::Presence(presence))) => {
            translator.handle_presence(&presence, out);
        }
        Next::Element(XmppStreamElement::Stanza(Stanza::Iq(iq))) => {
            return handle_iq(iq, stream, translator, out).await;
        }
        Next::Element(XmppStreamElement::StreamError(e)) => {
            return Err(connect::stream_error(&e.0))
        }
        // Messages go to the user's real clients (we have priority −1); nonzas are not ours.
        Next::Element(_) => {}
        Next::Invalid(StreamElementError::InvalidStanza {
            name,
            header,
            error,
            ..
        }) => match name.to_string().as_str() {
            "presence" => translator.handle_invalid_presence(header.from.as_deref(), &error, out),
            "iq" => out.push(Observation::Anomaly(
                ErrorCode::ProtocolError,
                format!("invalid iq: {}", clip(&error.to_string(), 200)),
            )),
            _ => {}
        },
        Next::Invalid(e @ StreamElementError::InvalidNonza { .. }) => out.push(
            Observation::Anomaly(ErrorCode::ProtocolError, clip(&e.to_string(), 200)),
        ),
        Next::Anomaly(detail) => out.push(Observation::Anomaly(ErrorCode::ProtocolError, detail)),
        Next::Idle => {
            // Silence for a long time: ask the server for a sign of life (the stream's hard
            // timeout ends the session if none comes).
            connect::send(stream, Iq::from_get("imstatus-ping", Ping).into()).await?;
        }
    }
    Ok(false)
}

async fn handle_iq(
    iq: Iq,
    stream: &mut Stream,
    translator: &mut Translator,
    out: &mut Vec<Observation>,
) -> Result<bool, Failure> {
    match iq {
        Iq::Result { id, payload, .. } if id == ROSTER_ID => {
            match payload.map(Roster::try_from) {
                Some(Ok(roster)) => translator.handle_roster(&roster, out),
                Some(Err(e)) => out.push(Observation::Anomaly(
                    ErrorCode::ProtocolError,
                    format!("invalid roster: {}", clip(&e.to_string(), 200)),
                )),
                None => {}
            }
            Ok(true)
        }
        Iq::Error { id, error, .. } if id == ROSTER_ID => {
            out.push(Observation::Anomaly(
                ErrorCode::ProtocolError,
                format!(
                    "the server refused the roster: {:?}",
                    error.defined_condition
                ),
            ));
            Ok(true)
        }
        Iq::Set {
            from, id, payload, ..
        } if payload.is("query", xmpp_parsers::ns::ROSTER)
            && from_server(from.as_ref(), translator) =>
        {
            if let Ok(roster) = Roster::try_from(payload) {
                translator.handle_roster(&roster, out);
            }
            reply(stream, from, id, None).await?;
            Ok(false)
        }
        Iq::Get {
            from, id, payload, ..
        } if payload.is("ping", xmpp_parsers::ns::PING) => {
            reply(stream, from, id, None).await?;
            Ok(false)
        }
        Iq::Get { from, id, .. } | Iq::Set { from, id, .. } => {
            let error = StanzaError::new(
                ErrorType::Cancel,
                DefinedCondition::ServiceUnavailable,
                "en",
                "",
            );
            reply(stream, from, id, Some(error)).await?;
            Ok(false)
        }
        Iq::Result { .. } | Iq::Error { .. } => Ok(false),
    }
}

/// Roster pushes must come from the server (no `from`, or the account's bare JID).
fn from_server(from: Option<&Jid>, translator: &Translator) -> bool {
    from.is_none_or(|j| j.resource().is_none() && translator.is_user(j))
}

async fn reply(
    stream: &mut Stream,
    to: Option<Jid>,
    id: String,
    error: Option<StanzaError>,
) -> Result<(), Failure> {
    let iq = match error {
        None => Iq::Result {
            from: None,
            to,
            id,
            payload: None,
        },
        Some(error) => Iq::Error {
            from: None,
            to,
            id,
            error,
            payload: None,
        },
    };
    connect::send(stream, iq.into()).await
}

/// Loads the trust roots on a blocking thread.
pub(crate) async fn load_roots(ca_file: Option<std::path::PathBuf>) -> Result<Roots, Failure> {
    tokio::task::spawn_blocking(move || Roots::load(ca_file.as_deref()))
        .await
        .unwrap_or_else(|e| {
            Err(Failure::retry(
                ErrorCode::TlsFailed,
                format!("loading trust roots failed: {e}"),
            ))
        })
}

/// 64 random bits from the standard library's per-process hash keys, the clock and a counter
/// (resource names and backoff jitter need variety, not cryptographic strength).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

impl Source for XmppSource {
    fn kind(&self) -> SourceKind {
        SourceKind::Xmpp
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(self.run_loop(sink))
    }
}
