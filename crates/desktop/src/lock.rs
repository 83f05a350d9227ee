//! The lock signal: logind's `LockedHint` (system bus) and `org.freedesktop.ScreenSaver`'s
//! `ActiveChanged` (session bus), both pushed by their services; the screen counts as locked
//! when any answering backend says so.
//!
//! Reads: one boolean per backend (`LockedHint`, `GetActive`), and the signals that change it.

use zbus::Connection;

use crate::config::{DesktopConfig, LockBackend};
use crate::coordinator::Report;
use crate::dbus::{self, Bus, Next, PropertiesChanged, Watch};
use crate::error::{Error, Result};
use crate::reporter::Reporter;

/// logind's bus name.
pub(crate) const LOGIND: &str = "org.freedesktop.login1";
/// logind's session interface.
pub(crate) const SESSION_IFACE: &str = "org.freedesktop.login1.Session";
/// logind's manager interface.
pub(crate) const MANAGER_IFACE: &str = "org.freedesktop.login1.Manager";
/// logind's manager object.
pub(crate) const MANAGER_PATH: &str = "/org/freedesktop/login1";
/// The screensaver's bus name and interface.
pub(crate) const SCREENSAVER: &str = "org.freedesktop.ScreenSaver";
/// The screensaver's object.
pub(crate) const SCREENSAVER_PATH: &str = "/org/freedesktop/ScreenSaver";

/// One answering lock backend.
#[derive(Debug)]
pub(crate) struct LockWatch {
    backend: LockBackend,
    conn: Connection,
    watch: Watch,
    /// logind's session object (logind only).
    session: Option<String>,
    locked: bool,
    /// Where it was found, for `Up` and doctor.
    pub(crate) detail: String,
}

/// What one backend's message meant.
enum Seen {
    /// Its state (maybe unchanged).
    Locked(bool),
    /// Something malformed from the owner; the backend still answers.
    Garbage(Error),
    /// Nothing relevant.
    Nothing,
}

/// Finds logind's session object: `GetSession("auto")` (the caller's session), else the
/// session named by `XDG_SESSION_ID`.
pub(crate) async fn logind_session(conn: &Connection) -> Result<String> {
    let auto = dbus::call::<zbus::zvariant::OwnedObjectPath, _>(
        conn,
        LOGIND,
        MANAGER_PATH,
        MANAGER_IFACE,
        "GetSession",
        &("auto",),
    )
    .await;
    match auto {
        Ok(path) => Ok(path.to_string()),
        Err(e) => match std::env::var("XDG_SESSION_ID") {
            Ok(id) if !id.is_empty() => dbus::call::<zbus::zvariant::OwnedObjectPath, _>(
                conn,
                LOGIND,
                MANAGER_PATH,
                MANAGER_IFACE,
                "GetSession",
                &(id.as_str(),),
            )
            .await
            .map(|p| p.to_string()),
            _ => Err(e.context("finding this process's logind session")),
        },
    }
}

impl LockWatch {
    /// Connects one backend and reads its state.
    pub(crate) async fn open(backend: LockBackend, config: &DesktopConfig) -> Result<LockWatch> {
        match backend {
            LockBackend::Logind => {
                let address = config.system_bus.as_deref();
                let conn = dbus::connect(Bus::System, address).await?;
                let mut watch = Watch::new(&conn, LOGIND, &[]).await?;
                if watch.owner().is_none() {
                    return Err(Error::NotRunning(format!(
                        "nobody owns {LOGIND} on {}",
                        dbus::describe(Bus::System, address)
                    )));
                }
                let session = logind_session(&conn).await?;
                watch
                    .add_signal_rule(&format!(
                        "path='{session}',interface='org.freedesktop.DBus.Properties',\
                         member='PropertiesChanged',arg0='{SESSION_IFACE}'"
                    ))
                    .await?;
                let locked =
                    dbus::bool_property(&conn, LOGIND, &session, SESSION_IFACE, "LockedHint")
                        .await?;
                Ok(LockWatch {
                    backend,
                    detail: format!(
                        "logind session {session} on {}",
                        dbus::describe(Bus::System, address)
                    ),
                    conn,
                    watch,
                    session: Some(session),
                    locked,
                })
            }
            LockBackend::ScreenSaver => {
                let address = config.session_bus.as_deref();
                let conn = dbus::connect(Bus::Session, address).await?;
                let watch = Watch::new(
                    &conn,
                    SCREENSAVER,
                    &[format!("interface='{SCREENSAVER}',member='ActiveChanged'")],
                )
                .await?;
                if watch.owner().is_none() {
                    return Err(Error::NotRunning(format!(
                        "nobody owns {SCREENSAVER} on {}",
                        dbus::describe(Bus::Session, address)
                    )));
                }
                let locked = dbus::call::<bool, _>(
                    &conn,
                    SCREENSAVER,
                    SCREENSAVER_PATH,
                    SCREENSAVER,
                    "GetActive",
                    &(),
                )
                .await?;
                Ok(LockWatch {
                    backend,
                    detail: format!("{SCREENSAVER} on {}", dbus::describe(Bus::Session, address)),
                    conn,
                    watch,
                    session: None,
                    locked,
                })
            }
        }
    }

    /// Waits for the next change; `Err` when the backend is gone.
    async fn next(&mut self) -> Result<Seen> {
        let msg = match self.watch.next().await? {
            Next::Owner(None) => {
                return Err(Error::NotRunning(format!(
                    "{} left the bus",
                    match self.backend {
                        LockBackend::Logind => LOGIND,
                        LockBackend::ScreenSaver => SCREENSAVER,
                    }
                )))
            }
            // A new owner (the service restarted): start over, as its state is new too.
            Next::Owner(Some(owner)) => {
                return Err(Error::Lost(format!("a new owner ({owner}) took over")))
            }
            Next::Signal(msg) => msg,
        };
        let (interface, member) = dbus::member(&msg);
        Ok(match self.backend {
            LockBackend::Logind => {
                if member.as_deref() != Some("PropertiesChanged")
                    || dbus::path(&msg) != self.session
                {
                    return Ok(Seen::Nothing);
                }
                let (iface, changed, invalidated) =
                    match dbus::body::<PropertiesChanged>(&msg, "PropertiesChanged") {
                        Ok(b) => b,
                        Err(e) => return Ok(Seen::Garbage(e)),
                    };
                if iface != SESSION_IFACE {
                    return Ok(Seen::Nothing);
                }
                match changed.get("LockedHint") {
                    Some(v) => match bool::try_from(v) {
                        Ok(b) => Seen::Locked(b),
                        Err(_) => Seen::Garbage(Error::Protocol(format!(
                            "LockedHint changed to a `{}`, not a boolean",
                            v.value_signature()
                        ))),
                    },
                    None if invalidated.iter().any(|n| n == "LockedHint") => {
                        let session = self.session.clone().unwrap_or_default();
                        Seen::Locked(
                            dbus::bool_property(
                                &self.conn,
                                LOGIND,
                                &session,
                                SESSION_IFACE,
                                "LockedHint",
                            )
                            .await?,
                        )
                    }
                    None => Seen::Nothing,
                }
            }
            LockBackend::ScreenSaver => {
                if interface.as_deref() != Some(SCREENSAVER)
                    || member.as_deref() != Some("ActiveChanged")
                {
                    return Ok(Seen::Nothing);
                }
                match dbus::body::<bool>(&msg, "ActiveChanged") {
                    Ok(b) => Seen::Locked(b),
                    Err(e) => Seen::Garbage(e),
                }
            }
        })
    }
}

/// Watches every configured lock backend that answers until one is lost; `Err` says why
/// (none answered, or one went away).
pub(crate) async fn run(config: &DesktopConfig, r: &mut Reporter) -> Error {
    let mut watches = Vec::new();
    let mut failures = Vec::new();
    for backend in &config.lock_backends {
        match LockWatch::open(*backend, config).await {
            Ok(w) => watches.push(w),
            Err(e) => failures.push((backend.as_str(), e)),
        }
    }
    if watches.is_empty() {
        return no_backend(failures);
    }
    let detail: Vec<String> = watches.iter().map(|w| w.detail.clone()).collect();
    r.up(detail.join("; ")).await;
    let locked = |ws: &[LockWatch]| ws.iter().any(|w| w.locked);
    r.send(Report::Locked(locked(&watches))).await;
    loop {
        let futures = watches.iter_mut().map(|w| Box::pin(w.next()));
        let (seen, i, _) = futures_util::future::select_all(futures).await;
        match seen {
            Err(e) => {
                let name = watches[i].backend.as_str();
                return e.context(name);
            }
            Ok(Seen::Locked(b)) => {
                watches[i].locked = b;
                r.send(Report::Locked(locked(&watches))).await;
            }
            Ok(Seen::Garbage(e)) => r.anomaly(e.context(watches[i].backend.as_str())).await,
            Ok(Seen::Nothing) => {}
        }
    }
}

/// The error for "no backend answered", every reason in the text; its code is a protocol
/// error when any backend answered garbage (someone is there, misbehaving), else the first
/// backend's.
pub(crate) fn no_backend(failures: Vec<(&'static str, Error)>) -> Error {
    let text: Vec<String> = failures.iter().map(|(b, e)| format!("{b}: {e}")).collect();
    let text = format!("no backend answered ({})", text.join("; "));
    let protocol = failures
        .iter()
        .any(|(_, e)| matches!(e, Error::Protocol(_)));
    match failures.into_iter().next() {
        _ if protocol => Error::Protocol(text),
        Some((_, e)) => Error::NotRunning(String::new()).with_kind_of(&e, text),
        None => Error::NotRunning(text),
    }
}
