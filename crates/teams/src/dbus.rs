//! `via = "dbus"`: follows the app's D-Bus control API (provisional: on an unmerged branch of
//! teams-for-linux; every name is in [`crate::names`]).
//!
//! The app runs while its name has an owner (`NameOwnerChanged` from the bus daemon, so a
//! crash or `kill -9` is seen within milliseconds). The app emits nothing when it starts, so
//! the source asks `GetState` whenever an owner appears, and follows the typed signals after
//! that (`PresenceChanged`, `InCallChanged`, `CameraChanged`, `MicrophoneChanged`,
//! `ScreenSharingChanged`; `StateChanged` only repeats them as JSON). One connection: the
//! message stream and the match rules exist before the first question, and zbus's receive
//! positions tell which signals an answer already reflects. A pump task drains zbus's stream
//! without waiting (zbus reads nothing, replies included, while its queue is full) and passes
//! on only what the [`gate`](crate::gate) admits, into a queue of [`QUEUE`] signals; when the
//! app sends more than that while the source waits for an answer, the pump drops the rest and
//! the source asks `GetState` again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use imstatus_core::{Backoff, ErrorCode, Observation};
use imstatus_hub::Sink;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::Notify;
use zbus::message::{Message, Sequence, Type};
use zbus::{Connection, MessageStream};

use crate::config::BusOptions;
use crate::gate::{Gate, Header};
use crate::names::{self, BUS_DAEMON, DBUS_INTERFACE, DBUS_NAME, DBUS_PATH};
use crate::translate::{parse_state, AppState, Reporter, Signal};

/// How long connecting to the bus may take.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one method call may take (a hung app never answers).
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How many admitted signals the pump holds for the watch loop; when full, it drops what comes
/// next and the source reads the whole state again.
pub(crate) const QUEUE: usize = 256;
/// A connection that held this long resets the reconnect backoff.
const STABLE: Duration = Duration::from_secs(30);

/// "the session bus" or "the bus at ADDRESS", for messages.
pub(crate) fn describe(bus: Option<&str>) -> String {
    match bus {
        Some(address) => format!("the D-Bus bus at {address}"),
        None => match std::env::var("DBUS_SESSION_BUS_ADDRESS") {
            Ok(address) if !address.is_empty() => format!("the session bus ({address})"),
            _ => "the session bus (DBUS_SESSION_BUS_ADDRESS is not set)".to_owned(),
        },
    }
}

/// Connects to `bus` (a D-Bus address) or the session bus.
pub(crate) async fn connect(bus: Option<&str>) -> Result<Connection, String> {
    let build = async {
        let builder = match bus {
            Some(address) => zbus::connection::Builder::address(address)?,
            None => zbus::connection::Builder::session()?,
        };
        builder.method_timeout(CALL_TIMEOUT).build().await
    };
    match tokio::time::timeout(CONNECT_TIMEOUT, build).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(format!("cannot connect to {}: {e}", describe(bus))),
        Err(_) => Err(format!(
            "cannot connect to {}: no answer within {CONNECT_TIMEOUT:?}",
            describe(bus)
        )),
    }
}

/// The match rules: the app's owner changes from the bus itself, and the app's signals from
/// the current owner of its name only (the bus resolves `sender=` when it delivers).
pub(crate) fn match_rules() -> [String; 2] {
    [
        format!(
            "type='signal',sender='{BUS_DAEMON}',interface='{BUS_DAEMON}',\
             member='NameOwnerChanged',arg0='{DBUS_NAME}'"
        ),
        format!(
            "type='signal',sender='{DBUS_NAME}',interface='{DBUS_INTERFACE}',path='{DBUS_PATH}'"
        ),
    ]
}

async fn add_matches(conn: &Connection) -> zbus::Result<()> {
    for rule in match_rules() {
        conn.call_method(
            Some(BUS_DAEMON),
            "/org/freedesktop/DBus",
            Some(BUS_DAEMON),
            "AddMatch",
            &(rule.as_str(),),
        )
        .await?;
    }
    Ok(())
}

/// The unique name owning the app's name (`None`: none), and where the answer was received.
pub(crate) async fn name_owner(conn: &Connection) -> zbus::Result<(Option<String>, Sequence)> {
    let reply = conn
        .call_method(
            Some(BUS_DAEMON),
            "/org/freedesktop/DBus",
            Some(BUS_DAEMON),
            "GetNameOwner",
            &(DBUS_NAME,),
        )
        .await;
    match reply {
        Ok(msg) => Ok((
            Some(msg.body().deserialize::<String>()?),
            msg.recv_position(),
        )),
        Err(zbus::Error::MethodError(name, _, msg))
            if name.as_str() == "org.freedesktop.DBus.Error.NameHasNoOwner" =>
        {
            Ok((None, msg.recv_position()))
        }
        Err(e) => Err(e),
    }
}

/// The PID of a unique name, when the bus says.
pub(crate) async fn owner_pid(conn: &Connection, owner: &str) -> Option<u32> {
    conn.call_method(
        Some(BUS_DAEMON),
        "/org/freedesktop/DBus",
        Some(BUS_DAEMON),
        "GetConnectionUnixProcessID",
        &(owner,),
    )
    .await
    .ok()?
    .body()
    .deserialize::<u32>()
    .ok()
}

/// `GetState` of `owner` (its unique name, so the answer is that process's): the JSON and
/// where it was received.
pub(crate) async fn get_state(conn: &Connection, owner: &str) -> zbus::Result<(String, Sequence)> {
    let reply = conn
        .call_method(
            Some(owner),
            DBUS_PATH,
            Some(DBUS_INTERFACE),
            names::METHOD_GET_STATE,
            &(),
        )
        .await?;
    Ok((reply.body().deserialize::<String>()?, reply.recv_position()))
}

/// Did the call fail because the owner is gone?
pub(crate) fn app_gone(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::MethodError(name, _, _) if matches!(
        name.as_str(),
        "org.freedesktop.DBus.Error.ServiceUnknown"
            | "org.freedesktop.DBus.Error.NameHasNoOwner"
            | "org.freedesktop.DBus.Error.NoReply"
            | "org.freedesktop.DBus.Error.Disconnected"
    ))
}

/// Did the call fail because the connection to the bus is gone?
pub(crate) fn connection_lost(e: &zbus::Error) -> bool {
    matches!(e, zbus::Error::InputOutput(io) if io.kind() != std::io::ErrorKind::TimedOut)
}

/// The imstatus code of a failed `GetState`.
pub(crate) fn code(e: &zbus::Error) -> ErrorCode {
    match e {
        zbus::Error::InputOutput(io) if io.kind() == std::io::ErrorKind::TimedOut => {
            ErrorCode::Timeout
        }
        zbus::Error::MethodError(name, _, _) => match name.as_str() {
            "org.freedesktop.DBus.Error.AccessDenied" => ErrorCode::AccessDenied,
            "org.freedesktop.DBus.Error.Timeout" | "org.freedesktop.DBus.Error.TimedOut" => {
                ErrorCode::Timeout
            }
            "org.freedesktop.DBus.Error.UnknownMethod"
            | "org.freedesktop.DBus.Error.UnknownObject"
            | "org.freedesktop.DBus.Error.UnknownInterface" => ErrorCode::Unsupported,
            _ => ErrorCode::ProtocolError,
        },
        _ => ErrorCode::ProtocolError,
    }
}

/// A one-line hint for a failed `GetState`.
pub(crate) fn get_state_failure(e: &zbus::Error) -> String {
    let hint = if code(e) == ErrorCode::Unsupported {
        "; the app's D-Bus API is not the one imstatus knows (it is not released yet and may \
         change: see docs/teams-for-linux.md)"
    } else {
        ""
    };
    format!("{}: {e}{hint}", names::METHOD_GET_STATE)
}

/// Reads one of the app's signals; `Ok(None)` for those not read, `Err` for a body of the
/// wrong type.
pub(crate) fn parse_signal(msg: &Message) -> Result<Option<Signal>, String> {
    let header = msg.header();
    let Some(member) = header.member().map(|m| m.as_str().to_owned()) else {
        return Ok(None);
    };
    let body = msg.body();
    let wrong = |expected: &str| {
        format!(
            "{member}: a body of type `{}`, expected `{expected}`; ignored",
            body.signature()
        )
    };
    let signal = match member.as_str() {
        names::SIGNAL_PRESENCE => body
            .deserialize::<(String, i32)>()
            .map(|(s, c)| Signal::Presence(s, c))
            .map_err(|_| wrong("si"))?,
        names::SIGNAL_IN_CALL => Signal::InCall(body.deserialize().map_err(|_| wrong("b"))?),
        names::SIGNAL_CAMERA => Signal::Camera(body.deserialize().map_err(|_| wrong("b"))?),
        names::SIGNAL_MICROPHONE => Signal::Microphone(body.deserialize().map_err(|_| wrong("s"))?),
        names::SIGNAL_SCREEN_SHARING => {
            Signal::ScreenSharing(body.deserialize().map_err(|_| wrong("b"))?)
        }
        _ => return Ok(None),
    };
    Ok(Some(signal))
}

/// Watches the app on the bus forever, reconnecting with backoff.
pub(crate) async fn run(options: BusOptions, sink: Sink, seed: u64) {
    let mut backoff = Backoff::new(seed);
    let mut reporter = Reporter::new();
    loop {
        let down = match connect(options.bus.as_deref()).await {
            // No bus, no app on it.
            Err(detail) => {
                sink.observe(Observation::ClientVanished);
                Observation::SourceDown(ErrorCode::ClientNotRunning, detail)
            }
            Ok(conn) => {
                let started = Instant::now();
                let why = watch(&conn, &sink, &mut reporter).await;
                if started.elapsed() >= STABLE {
                    backoff.reset();
                }
                Observation::SourceDown(
                    ErrorCode::Disconnected,
                    format!("lost {}: {why}", describe(options.bus.as_deref())),
                )
            }
        };
        sink.observe(down);
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// What the source knows about the app on one connection.
struct App {
    /// The owner of the app's name; `None`: not running.
    owner: Option<String>,
    /// Where the owner was learnt: owner changes received before are old news.
    owner_at: Option<Sequence>,
    /// The app's state.
    state: AppState,
    /// Where the last `GetState` answer was received: signals received before are in it.
    state_at: Option<Sequence>,
}

/// Watches one connection until it is lost; returns why.
async fn watch(conn: &Connection, sink: &Sink, reporter: &mut Reporter) -> String {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let gate = Arc::new(Mutex::new(Gate::new()));
    let lost = Arc::new(Lost::default());
    let _pump = AbortOnDrop(tokio::spawn(pump(
        MessageStream::from(conn),
        tx,
        gate.clone(),
        lost.clone(),
    )));
    if let Err(e) = add_matches(conn).await {
        return format!("adding match rules: {e}");
    }
    let mut app = App {
        owner: None,
        owner_at: None,
        state: AppState::default(),
        state_at: None,
    };
    match name_owner(conn).await {
        Ok((owner, at)) => {
            lock(&gate).learn(owner.as_deref(), at);
            app.owner = owner;
            app.owner_at = Some(at);
        }
        Err(e) if connection_lost(&e) => return e.to_string(),
        Err(e) => sink.observe(Observation::Anomaly(
            ErrorCode::ProtocolError,
            format!("GetNameOwner: {e}"),
        )),
    }
    if let Err(why) = read_state(conn, sink, &mut app).await {
        return why;
    }
    sink.observe_all(reporter.sync(app.state.view(app.owner.is_some())));
    loop {
        let next = tokio::select! {
            biased;
            () = lost.notify.notified() => None,
            item = rx.recv() => Some(item),
        };
        let result = match next {
            None => {
                let dropped = lost.dropped.swap(0, Ordering::Relaxed);
                tracing::warn!(
                    dropped,
                    "teams-for-linux: the queue of {QUEUE} signals was full; reading the state again"
                );
                read_state(conn, sink, &mut app).await
            }
            Some(Some(Ok(msg))) => {
                if handle(sink, &mut app, &msg) == Next::AskState {
                    // Report the client at once; its state follows from GetState.
                    let changes = reporter.update(app.state.view(app.owner.is_some()));
                    sink.observe_all(changes);
                    read_state(conn, sink, &mut app).await
                } else {
                    Ok(())
                }
            }
            Some(Some(Err(e))) => Err(e.to_string()),
            Some(None) => Err("the bus closed the connection".to_owned()),
        };
        if let Err(why) = result {
            return why;
        }
        let changes = reporter.update(app.state.view(app.owner.is_some()));
        if !changes.is_empty() {
            sink.observe_all(changes);
        }
    }
}

/// Asks the owner (if any) for `GetState`; `Err` only when the connection is lost.
async fn read_state(conn: &Connection, sink: &Sink, app: &mut App) -> Result<(), String> {
    app.state = AppState::default();
    let Some(owner) = app.owner.clone() else {
        return Ok(());
    };
    match get_state(conn, &owner).await {
        Ok((json, at)) => {
            app.state_at = Some(at);
            match parse_state(&json) {
                Ok(state) => app.state = state,
                Err(why) => sink.observe(Observation::Anomaly(ErrorCode::ProtocolError, why)),
            }
        }
        Err(e) if connection_lost(&e) => return Err(e.to_string()),
        // Its NameOwnerChanged follows.
        Err(e) if app_gone(&e) => {}
        Err(e) => sink.observe(Observation::Anomaly(code(&e), get_state_failure(&e))),
    }
    Ok(())
}

/// What the watch loop does after a signal.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    /// Report what changed.
    Report,
    /// A new owner: report it, then ask it for `GetState`.
    AskState,
}

/// Handles one admitted signal.
fn handle(sink: &Sink, app: &mut App, msg: &Message) -> Next {
    let header = msg.header();
    let sender = header.sender().map(|s| s.as_str().to_owned());
    let at = msg.recv_position();
    if sender.as_deref() == Some(BUS_DAEMON) {
        if app.owner_at.is_some_and(|known| at < known) {
            return Next::Report;
        }
        let Ok((_, _, new)) = msg.body().deserialize::<(String, String, String)>() else {
            return Next::Report;
        };
        app.owner_at = Some(at);
        app.state_at = None;
        app.state = AppState::default();
        if new.is_empty() {
            app.owner = None;
            return Next::Report;
        }
        app.owner = Some(new);
        return Next::AskState;
    }
    // The pump admitted it before it knew the owner, or the owner changed since.
    if app.owner.is_none() || sender != app.owner {
        return Next::Report;
    }
    if app.state_at.is_some_and(|known| at < known) {
        return Next::Report;
    }
    let outcome = parse_signal(msg).and_then(|signal| match signal {
        Some(signal) => signal.apply(&mut app.state),
        None => Ok(()),
    });
    if let Err(why) = outcome {
        tracing::debug!(%why, "teams-for-linux: unexpected signal");
        sink.observe(Observation::Anomaly(ErrorCode::ProtocolError, why));
    }
    Next::Report
}

/// How the pump tells the watch loop that it dropped signals.
#[derive(Default)]
struct Lost {
    /// Signals dropped since the watch loop last looked.
    dropped: AtomicU64,
    /// Notified on every drop (one permit is kept until taken).
    notify: Notify,
}

/// Moves the signals the gate admits (and the final error) from zbus's stream into the queue,
/// never waiting for room (see the module docs).
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

fn admit(gate: &Mutex<Gate<Sequence>>, msg: &Message) -> bool {
    let header = msg.header();
    let h = Header {
        sender: header.sender().map(|s| s.as_str()),
        path: header.path().map(|p| p.as_str()),
        interface: header.interface().map(|i| i.as_str()),
        member: header.member().map(|m| m.as_str()),
    };
    let owner_change = || {
        msg.body()
            .deserialize::<(String, String, String)>()
            .ok()
            .map(|(name, _, new)| (name, new))
    };
    lock(gate).admit(msg.recv_position(), h, owner_change)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Aborts a task when dropped (the pump must not outlive the watch).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_rules_name_the_app_and_only_its_owner_changes() {
        let [owner, app] = match_rules();
        assert_eq!(
            owner,
            "type='signal',sender='org.freedesktop.DBus',interface='org.freedesktop.DBus',\
             member='NameOwnerChanged',arg0='com.github.IsmaelMartinez.teams_for_linux'"
        );
        assert_eq!(
            app,
            "type='signal',sender='com.github.IsmaelMartinez.teams_for_linux',\
             interface='com.github.IsmaelMartinez.teams_for_linux.Control',\
             path='/com/github/IsmaelMartinez/teams_for_linux'"
        );
        for rule in match_rules() {
            zbus::MatchRule::try_from(rule.as_str()).expect("a valid match rule");
        }
    }

    fn signal(
        member: &str,
        body: &(impl zbus::export::serde::Serialize + zbus::zvariant::DynamicType),
    ) -> Message {
        Message::signal(DBUS_PATH, DBUS_INTERFACE, member)
            .expect("header")
            .build(body)
            .expect("body")
    }

    #[test]
    fn signal_bodies_are_read_with_the_documented_types() {
        assert_eq!(
            parse_signal(&signal("PresenceChanged", &("busy", 2i32))),
            Ok(Some(Signal::Presence("busy".into(), 2)))
        );
        assert_eq!(
            parse_signal(&signal("InCallChanged", &(true,))),
            Ok(Some(Signal::InCall(true)))
        );
        assert_eq!(
            parse_signal(&signal("MicrophoneChanged", &("muted",))),
            Ok(Some(Signal::Microphone("muted".into())))
        );
        assert_eq!(parse_signal(&signal("StateChanged", &("{}",))), Ok(None));
        assert_eq!(parse_signal(&signal("Whatever", &(1u8,))), Ok(None));
        let e = parse_signal(&signal("InCallChanged", &("yes",))).expect_err("wrong type");
        assert_eq!(
            e,
            "InCallChanged: a body of type `s`, expected `b`; ignored"
        );
        let e = parse_signal(&signal("PresenceChanged", &("busy",))).expect_err("short");
        assert!(e.contains("expected `si`"), "{e}");
    }
}
