//! [`XmppSource`]: log in (as the user, or as a watcher account), hide the session, and watch
//! the user's resources.
//!
//! One connection goes through these steps, each bounded by the login timeout but for the
//! wait for a subscription approval (contact mode), which may take as long as the user takes:
//!
//! 1. DNS, TCP, STARTTLS, SASL, resource binding ([`crate::connect`]).
//! 2. Discovery, in one flight: the server's disco#info (for invisibility) and the roster.
//!    Every reply to our requests is accepted only from the entity the request went to (the
//!    server answers with no `from`, or the account's bare JID for requests without `to`), so
//!    nobody else who knows our full JID can inject a roster or end the census early.
//! 3. Contact mode: without a subscription to the user, ask for one and report
//!    `access_denied` until it is approved.
//! 4. Hiding ([`crate::visibility`]): probes to the watched JIDs, then XEP-0186 or the privacy
//!    list, *before* the initial presence — on every (re)connect.
//! 5. The initial presence (priority −1) and the census ([`crate::census`]), whose results and
//!    the presences they announce end the login: then the roster marks the contacts not
//!    heard from as offline, and the source reports `Synced`.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{TlsMode, Visibility, WatchAs, XmppConfig};
use futures_util::FutureExt;
use imstatus_core::{
    Availability, Backoff, CodedError, ErrorCode, Observation, SourceKind, Status,
};
use imstatus_hub::{BoxFuture, Sink, Source};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_xmpp::xmlstream::{StreamElementError, XmppStreamElement};
use xmpp_parsers::disco::{DiscoInfoQuery, DiscoItemsQuery};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::ping::Ping;
use xmpp_parsers::presence::{Presence, Type as PresenceType};
use xmpp_parsers::roster::Roster;
use xmpp_parsers::stanza::Stanza;
use xmpp_parsers::stanza_error::{DefinedCondition, ErrorType, StanzaError};

use crate::announce::{self, Announce};
use crate::census::Census;
use crate::connect::{self, Next, Stream};
use crate::error::Error;
use crate::subscription::{self, Subscription};
use crate::tls::Roots;
use crate::translate::{Translator, RESOURCE_PREFIX};
use crate::visibility::{self, Method, Plan};
use imstatus_core::text::clip;

/// How long a login (DNS, TCP, TLS, SASL, bind, hiding, initial presences) may take.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the login waits for the presence of a resource the server listed as online but
/// that does not answer (the census of the module docs of `source`).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(1);
/// A session that lasted this long resets the reconnect backoff.
const HELD: Duration = Duration::from_secs(10);
/// At most this many stanzas already received are reported in one batch.
const MAX_BATCH: usize = 256;
/// The login's observations are reported at once, with `Synced`, unless there are more than
/// this many: then they go out early (the tracker holds part changes until `Synced` anyway),
/// so that a server flooding the login cannot grow memory.
const MAX_HELD: usize = 4096;
/// The id of the roster request.
const ROSTER_ID: &str = "imstatus-roster";
/// The id of the server's disco#info request.
const DISCO_ID: &str = "imstatus-disco";
/// The ids of the census requests are this plus a number.
const CENSUS_ID: &str = "imstatus-items-";
/// At most this many contact census requests are in flight at once (more wait until replies
/// come), so that a large roster is not one burst of requests at the server.
const CENSUS_WINDOW: usize = 256;

/// The outcome of one of our IQ requests: the result's payload, or the error.
type Reply = Result<Option<Element>, StanzaError>;

/// The roster result may be this large (a roster of 100,000 contacts is about 10 MB); every
/// other stanza is held to [`crate::scan::MAX_STANZA_BYTES`].
pub const MAX_ROSTER_BYTES: usize = 16 * 1024 * 1024;

/// How many `set_status` requests may wait for the running session; one more waits for room.
const COMMANDS: usize = 4;

/// A `set_status` / `restore_status` for the running session, and where its outcome goes.
struct Command {
    what: Announce,
    reply: oneshot::Sender<Result<(), CodedError>>,
}

/// Watches one XMPP account: logs in as the user (resource `imstatus-<random>`, priority −1)
/// or as a watcher account subscribed to the user, hidden from the contacts where the server
/// allows it, and translates the presence of the user's resources.
#[derive(Debug)]
pub struct XmppSource {
    config: XmppConfig,
    backoff_seed: u64,
    login_timeout: Duration,
    settle_timeout: Duration,
    /// System roots plus `ca_file`, loaded on the first TLS connection.
    roots: Mutex<Option<Roots>>,
    /// Whether the "visible to contacts" warning has been reported (once per source).
    warned_visible: AtomicBool,
    /// The status imstatus's own session announces (`set_status`), announced again after a
    /// reconnect until `restore_status`.
    announced: Mutex<Option<Status>>,
    /// The running session's queue of [`COMMANDS`] `set_status` requests.
    commands: Mutex<Option<mpsc::Sender<Command>>>,
}

impl XmppSource {
    /// A source for the account in `config`; nothing happens until the hub runs it. The
    /// password is read (never logged) on every login.
    pub fn new(config: &XmppConfig) -> Self {
        XmppSource {
            config: config.clone(),
            backoff_seed: random_u64(),
            login_timeout: LOGIN_TIMEOUT,
            settle_timeout: SETTLE_TIMEOUT,
            roots: Mutex::new(None),
            warned_visible: AtomicBool::new(false),
            announced: Mutex::new(None),
            commands: Mutex::new(None),
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

    /// Sets how long the login waits for listed resources that stay silent (default 1 s).
    pub fn with_settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }

    /// The trust roots, loaded once (off the async threads: it reads many files).
    pub(crate) async fn roots(&self) -> Result<Roots, Error> {
        if let Some(roots) = self.roots.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return Ok(roots);
        }
        let roots = load_roots(self.config.ca_file.clone()).await?;
        *self.roots.lock().unwrap_or_else(|e| e.into_inner()) = Some(roots.clone());
        Ok(roots)
    }

    async fn run_loop(self: Arc<Self>, sink: Sink) {
        let mut backoff = Backoff::new(self.backoff_seed);
        let (Some(user), Some(login)) = (
            bare_account(&self.config.jid),
            bare_account(self.config.login_jid()),
        ) else {
            let bad = if bare_account(&self.config.jid).is_none() {
                &self.config.jid
            } else {
                self.config.login_jid()
            };
            sink.observe(Observation::SourceDown(
                ErrorCode::AuthFailed,
                format!("{bad:?} is not a bare JID like user@example.org"),
            ));
            return;
        };
        loop {
            let (failure, synced_at) = self.session(&user, &login, &sink).await;
            tracing::debug!(jid = %user, code = %failure.code(), detail = %failure.detail(), "XMPP session ended");
            sink.observe(Observation::SourceDown(
                failure.code(),
                failure.detail().to_owned(),
            ));
            if failure.is_fatal() {
                // Retrying cannot help until the config changes (or the user acts): stay down.
                return;
            }
            if synced_at.is_some_and(|t| t.elapsed() >= HELD) {
                backoff.reset();
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// One connection, from DNS to its end; returns why it ended and when it synced.
    async fn session(
        &self,
        user: &BareJid,
        login: &BareJid,
        sink: &Sink,
    ) -> (Error, Option<Instant>) {
        // `password_command` may take a while (gpg): keep it off the async threads.
        let secret = self.config.password.clone();
        let read = tokio::task::spawn_blocking(move || secret.read().map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        let password = match read {
            Ok(p) => p,
            Err(e) => {
                return (
                    Error::fatal(
                        ErrorCode::AuthFailed,
                        format!("cannot read the password: {e}"),
                    ),
                    None,
                )
            }
        };
        let mut step = "dns";
        let started = Instant::now();
        let deadline = started + self.login_timeout;
        let connected = tokio::time::timeout_at(
            deadline,
            self.connect(login, user, password, sink, &mut step),
        )
        .await;
        let mut conn = match connected {
            Ok(Ok(conn)) => conn,
            Ok(Err(failure)) => return (failure, None),
            Err(_) => {
                return (
                    Error::retry(
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
        match self.prepare(&mut conn, user, sink, deadline).await {
            Ok(()) => {}
            Err(failure) => return (failure, None),
        }
        // From the first report on, `set_status` queues for `watch`, which carries it out.
        let (tx, mut commands) = mpsc::channel(COMMANDS);
        *self.commands.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        sink.observe_all(std::mem::take(&mut conn.batch));
        if conn.warned_visible {
            self.warned_visible.store(true, Ordering::Relaxed);
        }
        let synced_at = Instant::now();
        tracing::debug!(jid = %user, took = ?synced_at - started, "XMPP source synced");
        // A status set before a reconnect is announced again by the new session.
        let announced = self
            .announced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut failure = match announced {
            Some(status) => match conn.announce(&status).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::warn!(jid = %user, %e, "could not announce the status again");
                    None
                }
                Err(failure) => Some(failure),
            },
            None => None,
        };
        if !conn.batch.is_empty() {
            sink.observe_all(std::mem::take(&mut conn.batch));
        }
        let mut failure = match failure.take() {
            Some(failure) => failure,
            None => {
                conn.watch(sink, self.contact_mode().then_some(user), &mut commands)
                    .await
            }
        };
        *self.commands.lock().unwrap_or_else(|e| e.into_inner()) = None;
        if failure.code() == ErrorCode::Timeout {
            // The stream's hard timeout after an unanswered ping: the link is gone.
            failure = Error::retry(ErrorCode::Disconnected, failure.detail().to_owned());
        }
        (failure, Some(synced_at))
    }

    fn contact_mode(&self) -> bool {
        matches!(self.config.watch_as, WatchAs::Contact { .. })
    }

    /// DNS, TCP, TLS, SASL and resource binding.
    async fn connect(
        &self,
        login: &BareJid,
        user: &BareJid,
        password: String,
        sink: &Sink,
        step: &mut &'static str,
    ) -> Result<Conn, Error> {
        let domain = login.domain().as_str();
        *step = "dns";
        let resolved = connect::resolve(domain, self.config.server.as_deref()).await?;
        connect::check_plaintext(self.config.tls, &resolved.addrs)?;
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
        let (features, stream, info) =
            connect::open(tcp, domain, self.config.tls, roots.as_ref()).await?;
        *step = "sasl";
        let (_, mut stream) =
            connect::authenticate(stream, &features, login, password, info.secure).await?;
        *step = "bind";
        let resource = format!("{RESOURCE_PREFIX}{:016x}", random_u64());
        let own = connect::bind(&mut stream, &resource).await?;
        // From here on presences may take the fast path (`crate::fast`).
        stream.get_stream().shared().fast_path(true);
        Ok(Conn {
            stream,
            translator: Translator::new(user.clone(), Some(own.clone()), self.config.contacts),
            login: login.clone(),
            own,
            batch: Vec::new(),
            sink: sink.clone(),
            census: Census::default(),
            warned_visible: false,
            hidden: None,
            lifted: false,
            subscribers: BTreeSet::new(),
        })
    }

    /// Steps 2 to 5 of the module docs: everything between binding and `Synced`, which it
    /// leaves at the end of `conn.batch`.
    async fn prepare(
        &self,
        conn: &mut Conn,
        user: &BareJid,
        sink: &Sink,
        deadline: Instant,
    ) -> Result<(), Error> {
        let visibility = self.config.visibility;
        let timed = |what: &'static str| {
            let login_timeout = self.login_timeout;
            move |_| {
                Error::retry(
                    ErrorCode::Timeout,
                    format!("login did not finish within {login_timeout:?} (stuck at: {what})"),
                )
            }
        };

        // 2. What the server can do, and the roster.
        let (features, roster) =
            tokio::time::timeout_at(deadline, conn.discover(visibility != Visibility::Visible))
                .await
                .map_err(timed("discovery"))??;

        // 3. Contact mode: a subscription to the user's presence, or access_denied.
        let mut deadline = deadline;
        if self.contact_mode() {
            let state = subscription::in_roster(&roster, user).unwrap_or(Subscription::None);
            if state != Subscription::Approved {
                if state == Subscription::None {
                    let subscribe =
                        Presence::new(PresenceType::Subscribe).with_to(Jid::from(user.clone()));
                    conn.send(subscribe.into()).await?;
                }
                sink.observe(Observation::SourceDown(
                    ErrorCode::AccessDenied,
                    subscription::pending_detail(&conn.login, user),
                ));
                conn.await_approval(user).await?;
                // The user may take hours: the rest of the login gets a fresh deadline.
                deadline = Instant::now() + self.login_timeout;
            }
        }

        // The roster's contacts are heard from now on (their offline ones are reported at the
        // end of the login).
        conn.translator.set_roster(&roster, &mut conn.batch);

        // Who sees the user's presence (for withdrawing a status imstatus announced).
        announce::note_subscribers(&mut conn.subscribers, &roster);

        // Whose presence we need: the user's and, when tracked, the contacts'.
        let mut watched = vec![user.clone()];
        if self.config.contacts {
            watched.extend(
                roster
                    .items
                    .iter()
                    .filter(|i| {
                        matches!(
                            i.subscription,
                            xmpp_parsers::roster::Subscription::To
                                | xmpp_parsers::roster::Subscription::Both
                        ) && i.jid != *user
                    })
                    .map(|i| i.jid.clone()),
            );
        }
        conn.census.watch(&watched);
        // Only JIDs we are subscribed to may be probed; our own resources need no probe.
        let probes: Vec<BareJid> = if self.contact_mode() {
            vec![user.clone()]
        } else {
            watched.iter().skip(1).cloned().collect()
        };

        // 4. Hidden before the initial presence, on every connection.
        let outcome = match visibility::plan(visibility, &features) {
            Plan::Hide(methods) => {
                match tokio::time::timeout_at(deadline, conn.hide(&methods, &probes))
                    .await
                    .map_err(timed("hiding the session"))??
                {
                    Ok(method) => {
                        tracing::debug!(jid = %user, method = method.describe(), "XMPP session hidden");
                        conn.hidden = Some(method);
                        None
                    }
                    Err(why) => Some(visibility::cannot_hide(visibility, &why)),
                }
            }
            other => Some(other),
        };
        match outcome {
            Some(Plan::Refuse(detail)) => return Err(Error::fatal(ErrorCode::Unsupported, detail)),
            Some(Plan::Fallback(warning)) if !self.warned_visible.load(Ordering::Relaxed) => {
                // Once per source: marked as said when the login batch is reported.
                conn.batch
                    .push(Observation::Anomaly(ErrorCode::Unsupported, warning));
                conn.warned_visible = true;
            }
            Some(Plan::Fallback(_) | Plan::Visible | Plan::Hide(_)) | None => {}
        }

        // 5. Online, and the end of the initial presences.
        tokio::time::timeout_at(
            deadline,
            conn.go_online(&watched, self.settle_timeout.min(self.login_timeout)),
        )
        .await
        .map_err(timed("initial presence"))??;
        conn.translator.handle_roster(&roster, &mut conn.batch);
        conn.batch.push(Observation::Synced);
        Ok(())
    }
}

/// A bare JID with a local part, or `None`.
fn bare_account(jid: &str) -> Option<BareJid> {
    BareJid::new(jid).ok().filter(|j| j.node().is_some())
}

/// What one read brought, beyond what [`Conn::next`] handles itself.
// Boxing the big variant would cost an allocation per reply; a `Got` lives only briefly.
#[allow(clippy::large_enum_variant)]
enum Got {
    /// Nothing for the caller (a presence was translated, a push or ping answered).
    Other,
    /// The result or error of one of our requests: id, sender, outcome.
    Reply(String, Option<Jid>, Reply),
    /// A roster push from the server (already answered and translated).
    RosterPush(Roster),
    /// A subscription presence (`subscribed`, `unsubscribed`, …) from this bare JID.
    Subscription(BareJid, PresenceType),
}

/// A bound connection and what it has seen.
struct Conn {
    stream: Stream,
    translator: Translator,
    /// The account we are logged in as (roster pushes come from it or from the server).
    login: BareJid,
    own: FullJid,
    /// Observations not reported yet (the whole login is reported at once, with `Synced`, up
    /// to [`MAX_HELD`]).
    batch: Vec<Observation>,
    sink: Sink,
    census: Census,
    /// Whether `batch` carries the "visible to contacts" warning.
    warned_visible: bool,
    /// How the session was hidden, if it was.
    hidden: Option<crate::visibility::Method>,
    /// The hiding is lifted: the session announces a status (`set_status`).
    lifted: bool,
    /// The contacts subscribed to the user's presence (roster `from`/`both`).
    subscribers: BTreeSet<BareJid>,
}

impl Conn {
    async fn send(&mut self, stanza: Stanza) -> Result<(), Error> {
        connect::send(&mut self.stream, stanza).await
    }

    /// Sends `requests` and reads until each has its reply from the entity it went to
    /// ([`answers`]); replies from anyone else are ignored.
    async fn request(
        &mut self,
        requests: Vec<(String, Iq)>,
    ) -> Result<HashMap<String, Reply>, Error> {
        let mut waiting: HashMap<String, Option<Jid>> = HashMap::with_capacity(requests.len());
        for (id, iq) in requests {
            let to = match &iq {
                Iq::Get { to, .. } | Iq::Set { to, .. } => to.clone(),
                Iq::Result { to, .. } | Iq::Error { to, .. } => to.clone(),
            };
            self.send(iq.into()).await?;
            waiting.insert(id, to);
        }
        let mut replies = HashMap::with_capacity(waiting.len());
        while replies.len() < waiting.len() {
            if let Got::Reply(id, from, reply) = self.next().await? {
                let Some(to) = waiting.get(&id) else { continue };
                if replies.contains_key(&id) {
                    continue;
                }
                if answers(from.as_ref(), to.as_ref(), &self.login) {
                    replies.insert(id, reply);
                } else {
                    tracing::debug!(
                        id = %id,
                        from = %from.as_ref().map_or("", |j| j.as_str()),
                        "ignored a reply from an entity the request did not go to"
                    );
                }
            }
        }
        Ok(replies)
    }

    /// The server's features (if asked for) and the roster, in one flight.
    async fn discover(
        &mut self,
        features: bool,
    ) -> Result<(std::collections::BTreeSet<String>, Roster), Error> {
        let domain = Jid::from(BareJid::from_parts(None, self.login.domain()));
        // The roster reply may be larger than other stanzas.
        self.stream
            .get_stream()
            .shared()
            .allow_large(Some((ROSTER_ID, MAX_ROSTER_BYTES)));
        let mut requests = Vec::new();
        if features {
            requests.push((
                DISCO_ID.to_owned(),
                Iq::from_get(DISCO_ID, DiscoInfoQuery { node: None }).with_to(domain),
            ));
        }
        requests.push((
            ROSTER_ID.to_owned(),
            Iq::from_get(
                ROSTER_ID,
                Roster {
                    ver: None,
                    items: Vec::new(),
                },
            ),
        ));
        let replies = self.request(requests).await;
        self.stream.get_stream().shared().allow_large(None);
        let mut replies = replies?;
        let features = match replies.remove(DISCO_ID) {
            Some(Ok(payload)) => visibility::features(payload),
            _ => Default::default(),
        };
        let roster = match replies.remove(ROSTER_ID) {
            Some(Ok(Some(payload))) => Roster::try_from(payload).unwrap_or_else(|e| {
                self.batch.push(Observation::Anomaly(
                    ErrorCode::ProtocolError,
                    format!("invalid roster: {}", clip(&e.to_string(), 200)),
                ));
                empty_roster()
            }),
            Some(Ok(None)) | None => empty_roster(),
            Some(Err(error)) => {
                self.batch.push(Observation::Anomaly(
                    ErrorCode::ProtocolError,
                    format!(
                        "the server refused the roster: {:?}",
                        error.defined_condition
                    ),
                ));
                empty_roster()
            }
        };
        Ok((features, roster))
    }

    /// Contact mode: reads until the user approves the subscription (`Ok`) or refuses it.
    async fn await_approval(&mut self, user: &BareJid) -> Result<(), Error> {
        loop {
            match self.next().await? {
                Got::RosterPush(push) => match subscription::in_roster(&push, user) {
                    Some(Subscription::Approved) => return Ok(()),
                    Some(Subscription::None) => return Err(self.refused(user, "refused")),
                    Some(Subscription::Pending) | None => {}
                },
                Got::Subscription(from, PresenceType::Subscribed) if from == *user => return Ok(()),
                Got::Subscription(from, PresenceType::Unsubscribed) if from == *user => {
                    return Err(self.refused(user, "refused"))
                }
                _ => {}
            }
        }
    }

    fn refused(&self, user: &BareJid, when: &str) -> Error {
        Error::fatal(
            ErrorCode::AccessDenied,
            subscription::refused_detail(&self.login, user, when),
        )
    }

    /// Probes `probes`, then hides the session with the first method the server accepts.
    /// `Ok(Err(why))` when every method was refused.
    async fn hide(
        &mut self,
        methods: &[Method],
        probes: &[BareJid],
    ) -> Result<Result<Method, String>, Error> {
        for to in probes {
            self.send(visibility::probe(to).into()).await?;
        }
        let mut refusals = Vec::new();
        for &method in methods {
            let requests: Vec<(String, Iq)> = method
                .requests()
                .into_iter()
                .map(|(id, iq)| (id.to_owned(), iq))
                .collect();
            let ids: Vec<String> = requests.iter().map(|(id, _)| id.clone()).collect();
            let replies = self.request(requests).await?;
            let errors: Vec<String> = ids
                .iter()
                .filter_map(|id| match replies.get(id) {
                    Some(Err(e)) => Some(condition(e)),
                    _ => None,
                })
                .collect();
            if errors.is_empty() {
                return Ok(Ok(method));
            }
            refusals.push(format!(
                "the server refused the {} ({})",
                method.describe(),
                errors.join(", ")
            ));
        }
        Ok(Err(refusals.join("; ")))
    }

    /// Sends the initial presence and the census (the user's bare JID, then — on a server that
    /// lists online resources, or for contacts on other domains — the watched contacts, at
    /// most [`CENSUS_WINDOW`] requests in flight), and reads until every listed resource has
    /// spoken (or `settle` has passed since the census results).
    async fn go_online(&mut self, watched: &[BareJid], settle: Duration) -> Result<(), Error> {
        self.send(Presence::available().with_priority(-1).into())
            .await?;
        let Some((user, contacts)) = watched.split_first() else {
            self.census.finish();
            return Ok(());
        };
        let id = format!("{CENSUS_ID}0");
        let mut replies = self
            .request(vec![(id.clone(), census_request(&id, user))])
            .await?;
        let own = self.own.clone();
        let lists = match replies.remove(&id) {
            Some(Ok(payload)) => self.census.expect(user, &own, payload),
            _ => false,
        };
        // Contact `i` of `watched` (1-based) is asked with the id `imstatus-items-<i>`.
        let asked: Vec<usize> = contacts
            .iter()
            .enumerate()
            .filter(|(_, jid)| lists || jid.domain() != user.domain())
            .map(|(i, _)| i + 1)
            .collect();
        self.census_contacts(watched, &asked).await?;
        let settled = Instant::now() + settle;
        while !self.census.complete() {
            match tokio::time::timeout_at(settled, self.next()).await {
                Ok(got) => {
                    got?;
                }
                Err(_) => {
                    tracing::debug!(missing = ?self.census.missing(20), "listed resources did not send a presence");
                    break;
                }
            }
        }
        self.census.finish();
        Ok(())
    }

    /// Asks `watched[i]` for each `i` in `asked` which resources are online, with at most
    /// [`CENSUS_WINDOW`] requests in flight, and records the answers in the census. A reply is
    /// matched by its id's number in O(1) and counts only from the JID it was asked of.
    async fn census_contacts(&mut self, watched: &[BareJid], asked: &[usize]) -> Result<(), Error> {
        let own = self.own.clone();
        let mut answered = vec![false; watched.len()];
        let (mut sent, mut done) = (0, 0);
        while done < asked.len() {
            while sent < asked.len() && sent - done < CENSUS_WINDOW {
                let i = asked[sent];
                let id = format!("{CENSUS_ID}{i}");
                self.send(census_request(&id, &watched[i]).into()).await?;
                sent += 1;
            }
            let Got::Reply(id, from, reply) = self.next().await? else {
                continue;
            };
            let Some(i) = id
                .strip_prefix(CENSUS_ID)
                .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|n| n.parse::<usize>().ok())
                .filter(|&i| i > 0 && i < watched.len() && !answered[i])
            else {
                continue;
            };
            let to = Jid::from(watched[i].clone());
            if !answers(from.as_ref(), Some(&to), &self.login) {
                tracing::debug!(
                    id = %id,
                    from = %from.as_ref().map_or("", |j| j.as_str()),
                    "ignored a reply from an entity the request did not go to"
                );
                continue;
            }
            // Only asked JIDs have ids in flight; anything else was never sent.
            if asked.binary_search(&i).map_or(true, |k| k >= sent) {
                continue;
            }
            answered[i] = true;
            done += 1;
            if let Ok(payload) = reply {
                self.census.expect(&watched[i], &own, payload);
            }
        }
        Ok(())
    }

    /// Reads until the stream ends, reporting what is already received in batches, and carries
    /// out `set_status` requests between reads. In contact mode (`user` given) a cancelled
    /// subscription ends the session for good.
    async fn watch(
        &mut self,
        sink: &Sink,
        user: Option<&BareJid>,
        commands: &mut mpsc::Receiver<Command>,
    ) -> Error {
        loop {
            // Waiting to read is cancel-safe (the stream keeps what it buffered), so a request
            // is carried out as soon as it comes.
            let first = tokio::select! {
                got = self.next() => got,
                Some(command) = commands.recv() => {
                    if let Err(failure) = self.command(command).await {
                        return failure;
                    }
                    if !self.batch.is_empty() {
                        sink.observe_all(std::mem::take(&mut self.batch));
                    }
                    continue;
                }
            };
            let result = async {
                let mut got = vec![first?];
                for _ in 1..MAX_BATCH {
                    let Some(next) = self.next().now_or_never() else {
                        break;
                    };
                    got.push(next?);
                }
                Ok::<_, Error>(got)
            }
            .await;
            let mut revoked = None;
            if let (Ok(got), Some(user)) = (&result, user) {
                revoked = got.iter().find_map(|g| match g {
                    Got::RosterPush(push)
                        if subscription::in_roster(push, user)
                            .is_some_and(|s| s != Subscription::Approved) =>
                    {
                        Some(self.refused(user, "cancelled"))
                    }
                    Got::Subscription(from, PresenceType::Unsubscribed) if from == user => {
                        Some(self.refused(user, "cancelled"))
                    }
                    _ => None,
                });
            }
            if let Some(failure) = revoked {
                // What came with the cancellation (the user's resources going "unavailable"
                // for us) is not the user signing out: report none of it.
                self.batch.clear();
                return failure;
            }
            if !self.batch.is_empty() {
                sink.observe_all(std::mem::take(&mut self.batch));
            }
            if let Err(failure) = result {
                return failure;
            }
        }
    }

    /// Reads one item: presences are translated (into `batch`, reported early beyond
    /// [`MAX_HELD`]) and counted for the census, roster pushes, privacy-list pushes and pings
    /// are answered.
    async fn next(&mut self) -> Result<Got, Error> {
        let got = self.read().await;
        if self.batch.len() >= MAX_HELD {
            self.sink.observe_all(std::mem::take(&mut self.batch));
        }
        got
    }

    /// [`Conn::next`] without the bound on held observations.
    async fn read(&mut self) -> Result<Got, Error> {
        match connect::next(&mut self.stream).await? {
            Next::Element(XmppStreamElement::Stanza(Stanza::Presence(presence))) => {
                if let Some(from) = &presence.from {
                    self.census.saw(from.as_str());
                    if matches!(
                        presence.type_,
                        PresenceType::Subscribe
                            | PresenceType::Subscribed
                            | PresenceType::Unsubscribe
                            | PresenceType::Unsubscribed
                    ) {
                        return Ok(Got::Subscription(from.to_bare(), presence.type_));
                    }
                }
                self.translator.handle_presence(&presence, &mut self.batch);
            }
            Next::Element(XmppStreamElement::Stanza(Stanza::Iq(iq))) => {
                return self.handle_iq(iq).await
            }
            Next::Element(XmppStreamElement::StreamError(e)) => {
                return Err(crate::error::stream_error(&e.0))
            }
            // Messages go to the user's real clients (we have priority −1); nonzas are not ours.
            Next::Element(_) => {}
            Next::Invalid(StreamElementError::InvalidStanza {
                name,
                header,
                error,
                ..
            }) => match name.to_string().as_str() {
                "presence" => {
                    if let Some(from) = header.from.as_deref() {
                        self.census.saw(from);
                    }
                    self.translator.handle_invalid_presence(
                        header.from.as_deref(),
                        &error,
                        &mut self.batch,
                    );
                }
                "iq" => self.batch.push(Observation::Anomaly(
                    ErrorCode::ProtocolError,
                    format!("invalid iq: {}", clip(&error.to_string(), 200)),
                )),
                _ => {}
            },
            Next::Invalid(e @ StreamElementError::InvalidNonza { .. }) => self.batch.push(
                Observation::Anomaly(ErrorCode::ProtocolError, clip(&e.to_string(), 200)),
            ),
            Next::Anomaly(detail) => self
                .batch
                .push(Observation::Anomaly(ErrorCode::ProtocolError, detail)),
            Next::Dropped(dropped, unqueued) => {
                // Strangers' junk says nothing (it would let anyone fill the event log).
                let stranger = dropped
                    .from
                    .as_deref()
                    .is_some_and(|f| self.translator.is_stranger(f));
                if stranger && unqueued == 0 {
                    tracing::debug!(detail = %clip(&dropped.describe(), 300), "dropped a stranger's stanza");
                } else {
                    let more = if unqueued > 0 {
                        format!(" (and {unqueued} more stanzas before it)")
                    } else {
                        String::new()
                    };
                    self.batch.push(Observation::Anomaly(
                        ErrorCode::ProtocolError,
                        format!("{}{more}", clip(&dropped.describe(), 300)),
                    ));
                }
            }
            Next::Idle => {
                // Silence for a long time: ask the server for a sign of life (the stream's hard
                // timeout ends the session if none comes).
                self.send(Iq::from_get("imstatus-ping", Ping).into())
                    .await?;
            }
        }
        Ok(Got::Other)
    }

    async fn handle_iq(&mut self, iq: Iq) -> Result<Got, Error> {
        match iq {
            Iq::Result {
                id, from, payload, ..
            } => Ok(Got::Reply(id, from, Ok(payload))),
            Iq::Error {
                id, from, error, ..
            } => Ok(Got::Reply(id, from, Err(error))),
            Iq::Set {
                from, id, payload, ..
            } if payload.is("query", xmpp_parsers::ns::ROSTER)
                && self.pushed_by_server(from.as_ref()) =>
            {
                self.reply(from, id, None).await?;
                match Roster::try_from(payload) {
                    Ok(roster) => {
                        self.translator.handle_roster(&roster, &mut self.batch);
                        announce::note_subscribers(&mut self.subscribers, &roster);
                        Ok(Got::RosterPush(roster))
                    }
                    Err(_) => Ok(Got::Other),
                }
            }
            // XEP-0016: the server tells every session that a list changed (ours, too).
            Iq::Set {
                from, id, payload, ..
            } if payload.is("query", visibility::NS_PRIVACY)
                && self.pushed_by_server(from.as_ref()) =>
            {
                self.reply(from, id, None).await?;
                Ok(Got::Other)
            }
            Iq::Get {
                from, id, payload, ..
            } if payload.is("ping", xmpp_parsers::ns::PING) => {
                self.reply(from, id, None).await?;
                Ok(Got::Other)
            }
            Iq::Get { from, id, .. } | Iq::Set { from, id, .. } => {
                let error = StanzaError::new(
                    ErrorType::Cancel,
                    DefinedCondition::ServiceUnavailable,
                    "en",
                    "",
                );
                self.reply(from, id, Some(error)).await?;
                Ok(Got::Other)
            }
        }
    }

    /// Carries out one `set_status` / `restore_status`; `Err` only when the connection is lost
    /// (the request gets that error too).
    async fn command(&mut self, command: Command) -> Result<(), Error> {
        let outcome = match &command.what {
            Announce::Status(status) => self.announce(status).await,
            Announce::Withdraw => self.withdraw().await.map(Ok),
        };
        match outcome {
            Ok(result) => {
                // The caller may have gone; nothing to tell then.
                let _ = command.reply.send(result);
                Ok(())
            }
            Err(failure) => {
                let _ = command.reply.send(Err(CodedError::new(
                    failure.code(),
                    failure.detail().to_owned(),
                )));
                Err(failure)
            }
        }
    }

    /// Announces `status` from this session, showing the session first if it is hidden.
    /// `Ok(Err)` when the server refuses to show it (the session stays hidden).
    async fn announce(&mut self, status: &Status) -> Result<Result<(), CodedError>, Error> {
        let presence = match announce::presence(status) {
            Ok(p) => p,
            Err(why) => return Ok(Err(CodedError::new(ErrorCode::Unsupported, why))),
        };
        if let (Some(method), false) = (self.hidden, self.lifted) {
            let mut replies = self
                .request(vec![(announce::LIFT_ID.to_owned(), announce::lift(method))])
                .await?;
            if let Some(Err(e)) = replies.remove(announce::LIFT_ID) {
                return Ok(Err(CodedError::new(
                    ErrorCode::Unsupported,
                    format!(
                        "the server refused to show imstatus's session to the contacts ({}: {})",
                        method.describe(),
                        condition(&e)
                    ),
                )));
            }
            self.lifted = true;
        }
        self.send(presence.into()).await?;
        Ok(Ok(()))
    }

    /// Stops announcing: hides the session again the way it was hidden, or sends the plain
    /// presence of a visible session.
    async fn withdraw(&mut self) -> Result<(), Error> {
        match (self.hidden, self.lifted) {
            (Some(method), true) => {
                if method == crate::visibility::Method::PrivacyList {
                    // The list does not tell the contacts the session is gone; we do.
                    let contacts: Vec<BareJid> = self.subscribers.iter().cloned().collect();
                    for contact in &contacts {
                        self.send(announce::unavailable_to(contact).into()).await?;
                    }
                }
                let requests: Vec<(String, Iq)> = method
                    .requests()
                    .into_iter()
                    .map(|(id, iq)| (id.to_owned(), iq))
                    .collect();
                let replies = self.request(requests).await?;
                if let Some(e) = replies.values().find_map(|r| r.as_ref().err()) {
                    tracing::warn!(error = %condition(e), "the server refused to hide the session again");
                }
                self.lifted = false;
                Ok(())
            }
            (Some(_), false) => Ok(()),
            (None, _) => self.send(announce::plain().into()).await,
        }
    }

    /// Pushes must come from the server: no `from`, or the account's bare JID.
    fn pushed_by_server(&self, from: Option<&Jid>) -> bool {
        from.is_none_or(|j| j.resource().is_none() && j.to_bare() == self.login)
    }

    async fn reply(
        &mut self,
        to: Option<Jid>,
        id: String,
        error: Option<StanzaError>,
    ) -> Result<(), Error> {
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
        self.send(iq.into()).await
    }
}

/// Whether a reply from `from` answers a request sent to `to` by the account `login`:
/// a stanza without `from` comes from the server itself (it stamps every stanza it routes);
/// otherwise it must come from `to`, or from the account's bare JID for a request without `to`
/// (RFC 6120 §8.1.2.1 and §10.3.3, RFC 6121 §2.1.4).
pub(crate) fn answers(from: Option<&Jid>, to: Option<&Jid>, login: &BareJid) -> bool {
    match (from, to) {
        (None, _) => true,
        (Some(from), Some(to)) => from == to,
        (Some(from), None) => from.resource().is_none() && from.to_bare() == *login,
    }
}

/// The census request (a disco#items without a node) with this id to `to`.
fn census_request(id: &str, to: &BareJid) -> Iq {
    Iq::from_get(
        id.to_owned(),
        DiscoItemsQuery {
            node: None,
            rsm: None,
        },
    )
    .with_to(Jid::from(to.clone()))
}

fn empty_roster() -> Roster {
    Roster {
        ver: None,
        items: Vec::new(),
    }
}

/// A stanza error's condition as its element name, with the server's text if any.
fn condition(e: &StanzaError) -> String {
    let out = crate::error::condition_name_of(&format!("{:?}", e.defined_condition));
    match e.texts.values().next() {
        Some(text) if !text.is_empty() => format!("{out}: {}", clip(text, 200)),
        _ => out,
    }
}

/// Loads the trust roots on a blocking thread.
pub(crate) async fn load_roots(ca_file: Option<std::path::PathBuf>) -> Result<Roots, Error> {
    tokio::task::spawn_blocking(move || Roots::load(ca_file.as_deref()))
        .await
        .unwrap_or_else(|e| {
            Err(Error::retry(
                ErrorCode::TlsFailed,
                format!("loading trust roots failed: {e}"),
            ))
        })
}

/// 64 random bits from the standard library's per-process hash keys, the clock and a counter
/// (resource names and backoff jitter need variety, not cryptographic strength).
pub(crate) fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::AtomicU64;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish()
}

impl XmppSource {
    /// Hands `what` to the running session and waits for its outcome.
    async fn announce(&self, what: Announce) -> Result<(), CodedError> {
        if self.contact_mode() {
            return Err(CodedError::new(
                ErrorCode::Unsupported,
                "watch_as = \"contact\": imstatus is signed in as the watcher, whose presence is \
                 not the user's",
            ));
        }
        if let Announce::Status(status) = &what {
            announce::presence(status).map_err(|e| CodedError::new(ErrorCode::Unsupported, e))?;
        }
        let tx = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let lost = || {
            CodedError::new(
                ErrorCode::NotSignedIn,
                "imstatus's XMPP session is not connected now",
            )
        };
        let result = match tx {
            // Not connected: a withdrawal only has to keep the next session from announcing.
            None if what == Announce::Withdraw => Ok(()),
            None => Err(lost()),
            Some(tx) => {
                let (reply, outcome) = oneshot::channel();
                match tx
                    .send(Command {
                        what: what.clone(),
                        reply,
                    })
                    .await
                {
                    Ok(()) => outcome.await.unwrap_or_else(|_| Err(lost())),
                    Err(_) => Err(lost()),
                }
            }
        };
        let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        match (&what, &result) {
            (Announce::Status(s), Ok(())) => *announced = Some(s.clone()),
            (Announce::Withdraw, _) => *announced = None,
            (Announce::Status(_), Err(_)) => {}
        }
        result
    }
}

impl Source for XmppSource {
    fn kind(&self) -> SourceKind {
        crate::KIND
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(self.run_loop(sink))
    }

    /// Announces the status from imstatus's own session (see `docs/xmpp-visibility.md`);
    /// `invisible` withdraws it.
    fn set_status(&self, status: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        let what = if status.availability == Availability::Invisible {
            Announce::Withdraw
        } else {
            Announce::Status(status)
        };
        Box::pin(self.announce(what))
    }

    /// Withdraws the status imstatus's session announced: the user's other resources never
    /// changed, so that is what was there before.
    fn restore_status(&self, _previous: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        Box::pin(self.announce(Announce::Withdraw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stanza_error_conditions_read_like_their_elements() {
        let mut e = StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::FeatureNotImplemented,
            "en",
            "",
        );
        assert_eq!(condition(&e), "feature-not-implemented");
        e = StanzaError::new(
            ErrorType::Cancel,
            DefinedCondition::Conflict,
            "en",
            "in use",
        );
        assert_eq!(condition(&e), "conflict: in use");
    }

    #[test]
    fn replies_count_only_from_whom_they_were_asked_of() {
        let jid = |s: &str| Jid::new(s).expect("jid");
        let alice = BareJid::new("alice@example.test").expect("jid");
        let bob = jid("bob@example.test");
        // The server itself (no `from`) answers for anyone.
        assert!(answers(None, Some(&bob), &alice));
        assert!(answers(None, None, &alice));
        // Otherwise only the addressee, exactly.
        assert!(answers(Some(&bob), Some(&bob), &alice));
        assert!(!answers(
            Some(&jid("bob@example.test/x")),
            Some(&bob),
            &alice
        ));
        assert!(!answers(
            Some(&jid("mallory@evil.test")),
            Some(&jid("example.test")),
            &alice
        ));
        // A request without `to` is answered for the account's bare JID.
        assert!(answers(Some(&jid("Alice@example.test")), None, &alice));
        assert!(!answers(
            Some(&jid("alice@example.test/phone")),
            None,
            &alice
        ));
        assert!(!answers(Some(&jid("mallory@evil.test/x")), None, &alice));
    }

    #[test]
    fn account_jids_need_a_local_part() {
        assert!(bare_account("alice@example.test").is_some());
        assert!(bare_account("example.test").is_none());
        assert!(bare_account("alice@example.test/desk").is_none());
    }
}
