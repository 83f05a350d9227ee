//! [`PurpleSource`]: the driver that connects to the bus, feeds the translator and reports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::PurpleConfig;
use futures_util::StreamExt;
use imstatus_core::{Backoff, CodedError, ErrorCode, Observation, SourceKind, Status};
use imstatus_hub::{BoxFuture, Sink, Source};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;
use tokio::task::{JoinError, JoinSet};
use zbus::message::{Message, Sequence, Type};
use zbus::{Connection, MessageStream};

use crate::bus;
use crate::error::Error;
use crate::gate::Gate;
use crate::signal;
use crate::translate::{wanted, Need, Prefetch, StatusRead, Translator};

/// A connection that held this long resets the reconnect backoff.
const STABLE: Duration = Duration::from_secs(30);
/// How many lookups one signal may need before it is given up (each resolves one unknown).
const MAX_LOOKUPS: usize = 3;
/// How many received signals the pump holds for the watch loop. When it is full the pump drops
/// what comes next and the watch loop reads the whole client again (see the crate docs).
pub(crate) const QUEUE: usize = 1024;

/// Watches the local libpurple client (Pidgin, Finch) over D-Bus and sets its status.
#[derive(Debug)]
pub struct PurpleSource {
    bus: Option<String>,
    accounts: Vec<String>,
    contacts: bool,
    /// The connection `run` keeps, shared with `set_status`; `None` while disconnected.
    conn: Mutex<Option<Connection>>,
}

impl PurpleSource {
    /// A source for the bus, account filter and contact setting of `config`.
    pub fn new(config: &PurpleConfig) -> Self {
        PurpleSource {
            bus: config.bus.clone(),
            accounts: config.accounts.clone(),
            contacts: config.contacts,
            conn: Mutex::new(None),
        }
    }

    fn shared_conn(&self) -> Option<Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn set_shared_conn(&self, conn: Option<Connection>) {
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = conn;
    }

    /// Connects, watches until the connection is lost, and reconnects with backoff.
    async fn run_forever(self: Arc<Self>, sink: Sink) {
        let mut backoff = Backoff::new(seed());
        loop {
            let down = match bus::connect(self.bus.as_deref()).await {
                // No bus, no client can run on it: the client axis is `not_running` and the
                // CLI says "client_not_running (0x80040111)".
                Err(e) => {
                    sink.observe(Observation::ClientVanished);
                    Observation::SourceDown(ErrorCode::ClientNotRunning, e.to_string())
                }
                Ok(conn) => {
                    let started = Instant::now();
                    self.set_shared_conn(Some(conn.clone()));
                    let why = self.watch(&conn, &sink).await;
                    self.set_shared_conn(None);
                    if started.elapsed() >= STABLE {
                        backoff.reset();
                    }
                    Observation::SourceDown(
                        ErrorCode::Disconnected,
                        format!("lost {}: {why}", bus::describe(self.bus.as_deref())),
                    )
                }
            };
            tracing::debug!(?down, "purple source down");
            sink.observe(down);
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Watches one connection until it is lost; returns why.
    async fn watch(&self, conn: &Connection, sink: &Sink) -> Error {
        // The stream exists before the match rules, and a pump task always drains it, so zbus
        // never stalls on a full queue while this task awaits a reply. The pump passes on only
        // what the gate admits, into a queue of `QUEUE` signals; when that is full it drops
        // signals and says so through `lost`, and the loop reads the whole client again.
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let gate = Arc::new(Mutex::new(Gate::new()));
        let lost = Arc::new(Lost::default());
        let _pump = AbortOnDrop(tokio::spawn(pump(
            bus::messages(conn),
            tx,
            gate.clone(),
            lost.clone(),
        )));
        if let Err(e) = bus::add_matches(conn, self.contacts).await {
            return Error::Match(Box::new(e));
        }
        let mut t = Translator::<Sequence>::new(self.accounts.clone(), self.contacts);
        let sync = Resync {
            conn,
            sink,
            gate: &gate,
            contacts: self.contacts,
        };
        if let Err(e) = sync.run(&mut t).await {
            return e;
        }
        // Background questions (prefetches), one per recent signal, each on its own task; they
        // are aborted when the watch ends.
        let mut lane = Lane::new();
        loop {
            let next = tokio::select! {
                biased;
                () = lost.notify.notified() => Next::Lost,
                Some(fetched) = lane.join_next(), if !lane.is_empty() => Next::Fetched(fetched),
                item = rx.recv() => Next::Message(item),
            };
            let result = match next {
                Next::Lost => {
                    let dropped = lost.dropped.swap(0, Ordering::Relaxed);
                    tracing::warn!(
                        dropped,
                        "the queue of {QUEUE} signals was full; reading libpurple's state again"
                    );
                    sync.run(&mut t).await
                }
                Next::Fetched(Ok(fetched)) => apply(&mut t, sink, fetched),
                // Only a panic ends a question early (aborts happen on drop): it was optional.
                Next::Fetched(Err(e)) => {
                    tracing::warn!(%e, "background question failed");
                    Ok(())
                }
                Next::Message(Some(Ok(msg))) => self.handle(&sync, &mut t, &msg, &mut lane).await,
                Next::Message(Some(Err(e))) => Err(Error::Lost(Box::new(e))),
                Next::Message(None) => Err(Error::Closed),
            };
            if let Err(why) = result {
                return why;
            }
        }
    }

    /// Handles one received signal. `Err` only when the connection itself is lost.
    async fn handle(
        &self,
        sync: &Resync<'_>,
        t: &mut Translator<Sequence>,
        msg: &Message,
        lane: &mut Lane,
    ) -> Result<(), Error> {
        let (conn, sink) = (sync.conn, sync.sink);
        let header = msg.header();
        let sender = header.sender().map(|s| s.as_str());
        let signal = match signal::parse(msg) {
            Ok(Some(signal)) => signal,
            Ok(None) => return Ok(()),
            Err(detail) => {
                // Only the client's own malformed signals are worth an anomaly; anybody else
                // on the bus is ignored like the rest of what they send.
                if t.speaks_for_client(sender) || sender == Some(signal::DBUS_NAME) {
                    sink.observe(Observation::Anomaly(ErrorCode::ProtocolError, detail));
                }
                return Ok(());
            }
        };
        let at = msg.recv_position();
        for _ in 0..MAX_LOOKUPS {
            let outcome = t.handle_signal(at, sender, &signal);
            report(sink, outcome.observations);
            match outcome.prefetch {
                None => {}
                Some(Prefetch::Connection(gc)) => {
                    let conn = conn.clone();
                    lane.spawn(async move {
                        Fetched::Connection(
                            gc,
                            bus::purple_int(&conn, "PurpleConnectionGetAccount", (gc,)).await,
                        )
                    });
                }
                Some(Prefetch::Saved(saved)) => {
                    let conn = conn.clone();
                    lane.spawn(async move {
                        Fetched::Saved(saved, bus::read_saved(&conn, saved).await)
                    });
                }
            }
            let failed = |method: &str, e: zbus::Error| failed(sink, method, e);
            match outcome.need {
                None => return Ok(()),
                Some(Need::Username(handle)) => {
                    let name = match bus::purple_string(conn, "PurpleAccountGetUsername", (handle,))
                        .await
                    {
                        Ok(name) => Some(name),
                        Err(e) => {
                            failed(&format!("PurpleAccountGetUsername({handle})"), e)?;
                            None
                        }
                    };
                    t.learn_account(handle, name.as_deref());
                }
                Some(Need::ConnectionAccount(gc)) => {
                    let account =
                        match bus::purple_int(conn, "PurpleConnectionGetAccount", (gc,)).await {
                            Ok((0, _)) => None,
                            Ok((account, _)) => Some(account),
                            Err(e) => {
                                failed(&format!("PurpleConnectionGetAccount({gc})"), e)?;
                                None
                            }
                        };
                    t.learn_connection(gc, account);
                }
                Some(Need::Saved(saved)) => {
                    match bus::read_saved(conn, saved).await {
                        Ok(read) => report(sink, t.handle_saved(read)),
                        Err(e) => failed(&format!("reading saved status {saved}"), e)?,
                    }
                    return Ok(());
                }
                Some(Need::Current) => {
                    match bus::read_current(conn).await {
                        Ok(read) => report(sink, t.handle_saved(read)),
                        Err(e) => failed("reading the current saved status", e)?,
                    }
                    return Ok(());
                }
                Some(Need::Sync) => return sync.run(t).await,
                Some(Need::Buddy(buddy)) => {
                    match bus::read_buddy(conn, buddy).await {
                        Ok(read) => report(sink, t.handle_buddy(read)),
                        Err(e) => failed(&format!("reading buddy {buddy}"), e)?,
                    }
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The active account handles passing the filter.
    async fn tracked_accounts(&self, conn: &Connection) -> Result<Vec<i32>, CodedError> {
        let (handles, _) = bus::purple::<Vec<i32>, _>(conn, "PurpleAccountsGetAllActive", ())
            .await
            .map_err(|e| bus::coded("PurpleAccountsGetAllActive", &e))?;
        let names = futures_util::future::join_all(
            handles
                .iter()
                .map(|&a| bus::purple_string(conn, "PurpleAccountGetUsername", (a,))),
        )
        .await;
        Ok(handles
            .into_iter()
            .zip(names)
            .filter(|(_, name)| name.as_ref().is_ok_and(|n| wanted(&self.accounts, n)))
            .map(|(a, _)| a)
            .collect())
    }

    async fn set(&self, status: Status) -> Result<(), CodedError> {
        if status.availability.purple_primitive().is_none() {
            return Err(CodedError::new(
                ErrorCode::Unsupported,
                format!("libpurple has no status `{}`", status.availability),
            ));
        }
        let conn = match self.shared_conn() {
            Some(conn) => conn,
            None => bus::connect(self.bus.as_deref())
                .await
                .map_err(|e| CodedError::new(ErrorCode::ClientNotRunning, e.to_string()))?,
        };
        let accounts = if status.availability == imstatus_core::Availability::Chatty {
            self.tracked_accounts(&conn).await?
        } else {
            Vec::new()
        };
        bus::set_status(&conn, &status, &accounts)
            .await
            .map_err(|e| {
                if e.code == ErrorCode::ClientNotRunning {
                    CodedError::new(
                        ErrorCode::ClientNotRunning,
                        format!(
                            "no libpurple client ({}) on {}",
                            signal::PURPLE_SERVICE,
                            bus::describe(self.bus.as_deref())
                        ),
                    )
                } else {
                    e
                }
            })
    }
}

impl Source for PurpleSource {
    fn kind(&self) -> SourceKind {
        crate::KIND
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(self.run_forever(sink))
    }

    fn set_status(&self, status: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        Box::pin(self.set(status))
    }
}

/// What one watch needs to read the whole client again.
struct Resync<'a> {
    conn: &'a Connection,
    sink: &'a Sink,
    /// The pump's gate, told the owner each query reads.
    gate: &'a Mutex<Gate<Sequence>>,
    contacts: bool,
}

impl Resync<'_> {
    /// Queries the whole client and reports it, ending with `Synced`. `Err` only when the
    /// connection itself is lost.
    async fn run(&self, t: &mut Translator<Sequence>) -> Result<(), Error> {
        match bus::query(self.conn, self.contacts).await {
            Ok(read) => {
                self.gate
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .learn(read.owner.as_deref(), read.owner_read_at);
                self.sink.observe_all(t.handle_sync(read));
            }
            Err(e) if bus::connection_lost(&e) => return Err(Error::Lost(Box::new(e))),
            Err(e) => {
                // Report what is known so that one-shot readers are not left waiting.
                self.sink.observe_all([
                    Observation::Anomaly(bus::code(&e), format!("querying libpurple: {e}")),
                    Observation::Synced,
                ]);
            }
        }
        Ok(())
    }
}

/// How the pump tells the watch loop that it dropped signals.
#[derive(Default)]
struct Lost {
    /// Signals dropped since the watch loop last looked.
    dropped: AtomicU64,
    /// Notified on every drop (the permit of one notification is kept until it is taken).
    notify: Notify,
}

/// What the watch loop waits for.
enum Next {
    /// The pump dropped signals: read the whole client again.
    Lost,
    /// A background answer (`Err`: its task panicked).
    Fetched(Result<Fetched, JoinError>),
    /// A signal from the pump, its final error, or the pump's end.
    Message(Option<zbus::Result<Message>>),
}

/// A background answer (see [`Prefetch`]).
enum Fetched {
    /// `PurpleConnectionGetAccount(gc)`.
    Connection(i32, zbus::Result<(i32, Sequence)>),
    /// A saved status.
    Saved(i32, zbus::Result<StatusRead<Sequence>>),
}

/// The background questions in flight.
///
/// Each runs on its own task, never as a future polled only by the watch loop: zbus hands its
/// socket's write lock to waiting senders in turn (a fair `tokio::sync::Mutex`), so a question
/// that was handed the lock while the watch loop awaited a lookup on the same connection would
/// hold it unpolled, and the lookup (with every other call, `set_status` too) would wait for it
/// forever: the method timeout covers only the reply, not the send.
type Lane = JoinSet<Fetched>;

/// Hands a background answer to the translator. `Err` only when the connection is lost; any
/// other failure is only logged (the question was optional: it is asked again when needed).
fn apply(t: &mut Translator<Sequence>, sink: &Sink, fetched: Fetched) -> Result<(), Error> {
    let failure = match fetched {
        Fetched::Connection(gc, Ok((account, _))) => {
            t.learn_connection(gc, (account != 0).then_some(account));
            return Ok(());
        }
        Fetched::Saved(_, Ok(read)) => {
            report(sink, t.handle_saved(read));
            return Ok(());
        }
        Fetched::Connection(gc, Err(e)) => (format!("PurpleConnectionGetAccount({gc})"), e),
        Fetched::Saved(saved, Err(e)) => (format!("reading saved status {saved}"), e),
    };
    let (what, e) = failure;
    if bus::connection_lost(&e) {
        return Err(Error::Lost(Box::new(e)));
    }
    tracing::debug!(%what, %e, "background question failed");
    Ok(())
}

/// Handles a failed call the signal needed: `Err` when the connection is lost; an anomaly
/// unless the client is simply gone (its `NameOwnerChanged` follows).
fn failed(sink: &Sink, method: &str, e: zbus::Error) -> Result<(), Error> {
    if bus::connection_lost(&e) {
        return Err(Error::Lost(Box::new(e)));
    }
    if !bus::client_gone(&e) {
        sink.observe(Observation::Anomaly(
            bus::code(&e),
            format!("{method}: {e}"),
        ));
    }
    Ok(())
}

/// Reports a batch under one lock; an empty one is not reported at all.
fn report(sink: &Sink, observations: Vec<Observation>) {
    if !observations.is_empty() {
        sink.observe_all(observations);
    }
}

/// Moves the signals the gate admits (and the final error) from zbus's stream into the queue.
///
/// It never waits for room: zbus reads nothing else (method replies included) while its own
/// queue is full, so a waiting pump would stall the watch loop's calls. A signal that finds the
/// queue full is dropped and counted in `lost`.
async fn pump(
    mut stream: MessageStream,
    tx: mpsc::Sender<zbus::Result<Message>>,
    gate: Arc<Mutex<Gate<Sequence>>>,
    lost: Arc<Lost>,
) {
    while let Some(item) = stream.next().await {
        let msg = match item {
            Ok(msg) => msg,
            Err(e) => {
                // The connection is gone: this must arrive, and waiting costs nothing now.
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if msg.message_type() != Type::Signal || !admit(&gate, &msg) {
            continue;
        }
        match tx.try_send(Ok(msg)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                lost.dropped.fetch_add(1, Ordering::Relaxed);
                lost.notify.notify_one();
            }
            Err(TrySendError::Closed(_)) => return,
        }
    }
}

/// Asks the gate about one received signal.
fn admit(gate: &Mutex<Gate<Sequence>>, msg: &Message) -> bool {
    let header = msg.header();
    let sender = header.sender().map(|s| s.as_str());
    let interface = header.interface().map(|i| i.as_str());
    let member = header.member().map(|m| m.as_str());
    let owner_change = || {
        msg.body()
            .deserialize::<(String, String, String)>()
            .ok()
            .map(|(name, _, new)| (name, new))
    };
    gate.lock().unwrap_or_else(|e| e.into_inner()).admit(
        msg.recv_position(),
        sender,
        interface,
        member,
        owner_change,
    )
}

/// Aborts a task when dropped (the pump must not outlive the watch, or it keeps the
/// connection open).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A backoff seed that differs per process and start.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Truncation is fine: only the low bits vary anyway.
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}
