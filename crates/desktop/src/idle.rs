//! The idle signal: the first configured backend that answers.
//!
//! | backend | idle becomes true | input returns | cost while idle |
//! |---|---|---|---|
//! | `mutter` | `AddIdleWatch(idle_after)` fires | `AddUserActiveWatch` fires | none (push) |
//! | `screensaver` | a timer at `idle_after − idle time`, then a re-query | re-query every 200 ms | one call per 200 ms, only while idle |
//! | `x11` | a SYNC alarm on `IDLETIME` (positive transition at `idle_after`) | a second alarm (negative transition) | none (push) |
//! | `logind` | `IdleHint` changes (logind's own threshold) | `IdleHint` changes | none (push) |
//!
//! Reads: the idle time (a number of milliseconds or seconds) and nothing else: no input
//! events, no window titles.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use x11rb::connection::{Connection as _, RequestConnection as _};
use x11rb::protocol::sync::{self, ConnectionExt as _, CreateAlarmAux, Int64, TESTTYPE, VALUETYPE};
use x11rb::protocol::Event;
use x11rb::rust_connection::RustConnection;
use zbus::Connection;

use crate::config::{DesktopConfig, IdleBackend};
use crate::coordinator::Report;
use crate::dbus::{self, Bus, Next, PropertiesChanged, Watch};
use crate::error::{Error, Result};
use crate::lock::{logind_session, LOGIND, SCREENSAVER, SCREENSAVER_PATH, SESSION_IFACE};
use crate::reporter::Reporter;

/// Idle times above this are nonsense (a year): a backend that says so is misbehaving.
pub(crate) const MAX_IDLE: Duration = Duration::from_secs(366 * 24 * 3600);
/// How often the `screensaver` backend re-reads the idle time while idle, to see input return.
pub(crate) const WHILE_IDLE_POLL: Duration = Duration::from_millis(200);
/// Mutter's idle monitor.
pub(crate) const MUTTER: &str = "org.gnome.Mutter.IdleMonitor";
/// Mutter's idle monitor object.
pub(crate) const MUTTER_PATH: &str = "/org/gnome/Mutter/IdleMonitor/Core";
/// How long connecting to the X display may take.
const X_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks a reading: an absurd one is a protocol error.
pub(crate) fn plausible(what: &str, idle: Duration) -> Result<Duration> {
    if idle > MAX_IDLE {
        return Err(Error::Protocol(format!(
            "{what} says the user has been idle for {} s, which cannot be",
            idle.as_secs()
        )));
    }
    Ok(idle)
}

/// An X11 `Int64` as milliseconds; negative or absurd values are errors.
pub(crate) fn int64_ms(v: Int64) -> Result<Duration> {
    let value = (i64::from(v.hi) << 32) | i64::from(v.lo);
    let ms = u64::try_from(value).map_err(|_| {
        Error::Protocol(format!("the X server's IDLETIME is negative ({value} ms)"))
    })?;
    plausible("the X server's IDLETIME", Duration::from_millis(ms))
}

fn int64(ms: u64) -> Int64 {
    let v = i64::try_from(ms).unwrap_or(i64::MAX);
    Int64 {
        hi: (v >> 32) as i32,
        lo: (v & 0xFFFF_FFFF) as u32,
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the first idle backend that answers; `Err` when none does or it is lost.
pub(crate) async fn run(config: &DesktopConfig, r: &mut Reporter) -> Error {
    let mut failures = Vec::new();
    for backend in &config.idle_backends {
        let opened = match backend {
            IdleBackend::Mutter => Mutter::open(config).await.map(Opened::Mutter),
            IdleBackend::ScreenSaver => ScreenSaver::open(config).await.map(Opened::ScreenSaver),
            IdleBackend::X11 => X11::open(config).await.map(Opened::X11),
            IdleBackend::Logind => Logind::open(config).await.map(Opened::Logind),
        };
        match opened {
            Ok(o) => {
                let e = match o {
                    Opened::Mutter(b) => b.run(config, r).await,
                    Opened::ScreenSaver(b) => b.run(config, r).await,
                    Opened::X11(b) => b.run(config, r).await,
                    Opened::Logind(b) => b.run(r).await,
                };
                return e.context(backend.as_str());
            }
            Err(e) => failures.push((backend.as_str(), e)),
        }
    }
    crate::lock::no_backend(failures)
}

enum Opened {
    Mutter(Mutter),
    ScreenSaver(ScreenSaver),
    X11(X11),
    Logind(Logind),
}

/// The X server's SYNC `IDLETIME` counter with two alarms at `idle_after`.
pub(crate) struct X11 {
    conn: XConn,
    counter: sync::Counter,
    display: String,
}

impl X11 {
    /// Connects to the display and finds the counter.
    pub(crate) async fn open(config: &DesktopConfig) -> Result<X11> {
        let display = config
            .display
            .clone()
            .or_else(|| std::env::var("DISPLAY").ok().filter(|d| !d.is_empty()))
            .ok_or_else(|| Error::NotRunning("no X display (DISPLAY is not set)".into()))?;
        let d = display.clone();
        let connect = tokio::task::spawn_blocking(move || RustConnection::connect(Some(&d)));
        let conn = match tokio::time::timeout(X_CONNECT_TIMEOUT, connect).await {
            Ok(Ok(Ok((conn, _screen)))) => conn,
            Ok(Ok(Err(e))) => {
                return Err(Error::NotRunning(format!(
                    "cannot connect to X display {display}: {e}"
                )))
            }
            Ok(Err(e)) => return Err(Error::Lost(format!("connecting to {display}: {e}"))),
            Err(_) => {
                return Err(Error::Timeout(format!(
                    "X display {display} did not answer within {X_CONNECT_TIMEOUT:?}"
                )))
            }
        };
        // The replies below come from a server that answered the handshake: quick.
        let x = |e: &dyn std::fmt::Display| Error::Protocol(format!("X display {display}: {e}"));
        if conn
            .extension_information(sync::X11_EXTENSION_NAME)
            .map_err(|e| x(&e))?
            .is_none()
        {
            return Err(Error::Unsupported(format!(
                "X display {display} has no SYNC extension"
            )));
        }
        conn.sync_initialize(3, 1)
            .map_err(|e| x(&e))?
            .reply()
            .map_err(|e| x(&e))?;
        let counters = conn
            .sync_list_system_counters()
            .map_err(|e| x(&e))?
            .reply()
            .map_err(|e| x(&e))?;
        let counter = counters
            .counters
            .iter()
            .find(|c| c.name == b"IDLETIME")
            .map(|c| c.counter)
            .ok_or_else(|| {
                Error::Unsupported(format!("X display {display} has no IDLETIME counter"))
            })?;
        Ok(X11 {
            conn: XConn(conn),
            counter,
            display,
        })
    }

    /// The idle time now.
    pub(crate) fn query(&self) -> Result<Duration> {
        let reply = self
            .conn
            .0
            .sync_query_counter(self.counter)
            .map_err(|e| Error::Lost(format!("X display {}: {e}", self.display)))?
            .reply()
            .map_err(|e| Error::Lost(format!("X display {}: {e}", self.display)))?;
        int64_ms(reply.counter_value)
    }

    /// Describes what answered.
    pub(crate) fn detail(&self) -> String {
        format!("X display {} (SYNC IDLETIME alarms)", self.display)
    }

    fn alarm(&self, test: TESTTYPE, at: Duration) -> Result<sync::Alarm> {
        let lost =
            |e: &dyn std::fmt::Display| Error::Lost(format!("X display {}: {e}", self.display));
        let id = self.conn.0.generate_id().map_err(|e| lost(&e))?;
        let aux = CreateAlarmAux::new()
            .counter(self.counter)
            .value_type(VALUETYPE::ABSOLUTE)
            .value(int64(ms(at)))
            .test_type(test)
            .delta(int64(0))
            .events(1);
        self.conn
            .0
            .sync_create_alarm(id, &aux)
            .map_err(|e| lost(&e))?
            .check()
            .map_err(|e| lost(&e))?;
        Ok(id)
    }

    async fn run(self, config: &DesktopConfig, r: &mut Reporter) -> Error {
        match self.watch(config, r).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn watch(
        self,
        config: &DesktopConfig,
        r: &mut Reporter,
    ) -> Result<std::convert::Infallible> {
        // Both alarms before the first reading: a crossing between the two is not missed.
        let became_idle = self.alarm(TESTTYPE::POSITIVE_TRANSITION, config.idle_after)?;
        let became_active = self.alarm(TESTTYPE::NEGATIVE_TRANSITION, config.idle_after)?;
        let idle = self.query()?;
        r.up(self.detail()).await;
        r.send(Report::Idle {
            idle: idle >= config.idle_after,
            input_ago: Some(idle),
        })
        .await;
        let display = self.display.clone();
        let lost = |e: &dyn std::fmt::Display| Error::Lost(format!("X display {display}: {e}"));
        // `AsyncFd::new` is deprecated because it cannot know that the descriptor outlives
        // the registration; here it does: the AsyncFd owns the connection, which owns the
        // socket. `register`, its replacement, is `unsafe`, which this workspace forbids.
        #[allow(deprecated)]
        let fd = AsyncFd::new(self.conn).map_err(|e| lost(&e))?;
        let conn = &fd.get_ref().0;
        loop {
            // Drain what x11rb has buffered or can read now, then wait for the socket.
            while let Some(event) = conn.poll_for_event().map_err(|e| lost(&e))? {
                let Event::SyncAlarmNotify(n) = event else {
                    continue;
                };
                let idle = match int64_ms(n.counter_value) {
                    Ok(idle) => idle,
                    Err(e) => {
                        r.anomaly(e).await;
                        continue;
                    }
                };
                if n.alarm == became_idle {
                    r.send(Report::Idle {
                        idle: true,
                        input_ago: Some(idle),
                    })
                    .await;
                } else if n.alarm == became_active {
                    r.send(Report::Idle {
                        idle: false,
                        input_ago: Some(idle),
                    })
                    .await;
                }
            }
            conn.flush().map_err(|e| lost(&e))?;
            let mut guard = fd.readable().await.map_err(|e| lost(&e))?;
            guard.clear_ready();
        }
    }
}

/// The X connection, whose socket tokio watches for readiness.
struct XConn(RustConnection);

impl AsRawFd for XConn {
    fn as_raw_fd(&self) -> RawFd {
        self.0.stream().as_raw_fd()
    }
}

/// GNOME's idle monitor: watches both ways.
pub(crate) struct Mutter {
    conn: Connection,
    watch: Watch,
    detail: String,
}

impl Mutter {
    /// Connects and checks that the monitor answers.
    pub(crate) async fn open(config: &DesktopConfig) -> Result<Mutter> {
        let address = config.session_bus.as_deref();
        let conn = dbus::connect(Bus::Session, address).await?;
        let watch = Watch::new(
            &conn,
            MUTTER,
            &[format!(
                "path='{MUTTER_PATH}',interface='{MUTTER}',member='WatchFired'"
            )],
        )
        .await?;
        if watch.owner().is_none() {
            return Err(Error::NotRunning(format!(
                "nobody owns {MUTTER} on {}",
                dbus::describe(Bus::Session, address)
            )));
        }
        let m = Mutter {
            detail: format!("{MUTTER} on {}", dbus::describe(Bus::Session, address)),
            conn,
            watch,
        };
        m.idletime().await?;
        Ok(m)
    }

    async fn idletime(&self) -> Result<Duration> {
        let t: u64 =
            dbus::call(&self.conn, MUTTER, MUTTER_PATH, MUTTER, "GetIdletime", &()).await?;
        plausible("GetIdletime", Duration::from_millis(t))
    }

    async fn call_watch(
        &self,
        method: &str,
        body: &(impl zbus::export::serde::Serialize + zbus::zvariant::DynamicType),
    ) -> Result<u32> {
        dbus::call(&self.conn, MUTTER, MUTTER_PATH, MUTTER, method, body).await
    }

    async fn run(mut self, config: &DesktopConfig, r: &mut Reporter) -> Error {
        match self.watch_loop(config, r).await {
            Ok(never) => match never {},
            Err(e) => e,
        }
    }

    async fn watch_loop(
        &mut self,
        config: &DesktopConfig,
        r: &mut Reporter,
    ) -> Result<std::convert::Infallible> {
        let idle_watch = self
            .call_watch("AddIdleWatch", &(ms(config.idle_after),))
            .await?;
        let idle = self.idletime().await?;
        let mut active_watch = None;
        if idle >= config.idle_after {
            active_watch = Some(self.call_watch("AddUserActiveWatch", &()).await?);
        }
        r.up(self.detail.clone()).await;
        r.send(Report::Idle {
            idle: idle >= config.idle_after,
            input_ago: Some(idle),
        })
        .await;
        loop {
            let msg = match self.watch.next().await? {
                Next::Owner(None) => {
                    return Err(Error::NotRunning(format!("{MUTTER} left the bus")))
                }
                Next::Owner(Some(o)) => {
                    return Err(Error::Lost(format!("a new owner ({o}) took over {MUTTER}")))
                }
                Next::Signal(msg) => msg,
            };
            if dbus::member(&msg).1.as_deref() != Some("WatchFired") {
                continue;
            }
            let id = match dbus::body::<u32>(&msg, "WatchFired") {
                Ok(id) => id,
                Err(e) => {
                    r.anomaly(e).await;
                    continue;
                }
            };
            if id == idle_watch {
                let idle = self.idletime().await?;
                active_watch = Some(self.call_watch("AddUserActiveWatch", &()).await?);
                r.send(Report::Idle {
                    idle: true,
                    input_ago: Some(idle),
                })
                .await;
            } else if Some(id) == active_watch {
                active_watch = None;
                let idle = self.idletime().await?;
                r.send(Report::Idle {
                    idle: false,
                    input_ago: Some(idle),
                })
                .await;
            }
        }
    }
}

/// `org.freedesktop.ScreenSaver.GetSessionIdleTime` (seconds): a timer while active, a short
/// re-query while idle.
pub(crate) struct ScreenSaver {
    conn: Connection,
    watch: Watch,
    detail: String,
}

impl ScreenSaver {
    /// Connects and checks that `GetSessionIdleTime` answers.
    pub(crate) async fn open(config: &DesktopConfig) -> Result<ScreenSaver> {
        let address = config.session_bus.as_deref();
        let conn = dbus::connect(Bus::Session, address).await?;
        let watch = Watch::new(&conn, SCREENSAVER, &[]).await?;
        if watch.owner().is_none() {
            return Err(Error::NotRunning(format!(
                "nobody owns {SCREENSAVER} on {}",
                dbus::describe(Bus::Session, address)
            )));
        }
        let s = ScreenSaver {
            detail: format!(
                "{SCREENSAVER}.GetSessionIdleTime on {}",
                dbus::describe(Bus::Session, address)
            ),
            conn,
            watch,
        };
        s.idletime().await?;
        Ok(s)
    }

    async fn idletime(&self) -> Result<Duration> {
        let t: u32 = dbus::call(
            &self.conn,
            SCREENSAVER,
            SCREENSAVER_PATH,
            SCREENSAVER,
            "GetSessionIdleTime",
            &(),
        )
        .await?;
        plausible("GetSessionIdleTime", Duration::from_secs(u64::from(t)))
    }

    async fn run(mut self, config: &DesktopConfig, r: &mut Reporter) -> Error {
        r.up(self.detail.clone()).await;
        let mut last: Option<bool> = None;
        loop {
            let wait = match self.idletime().await {
                Ok(idle) => {
                    let is_idle = idle >= config.idle_after;
                    // Every reading while active (rare: one per threshold), only changes while
                    // idle (every 200 ms).
                    if last != Some(is_idle) || !is_idle {
                        r.send(Report::Idle {
                            idle: is_idle,
                            input_ago: Some(idle),
                        })
                        .await;
                    }
                    last = Some(is_idle);
                    if is_idle {
                        WHILE_IDLE_POLL
                    } else {
                        // Seconds resolution: ask again just after the threshold can be
                        // reached, not before.
                        config.idle_after.saturating_sub(idle) + Duration::from_millis(50)
                    }
                }
                // A garbage answer is the owner's fault, not a lost backend: say so and ask
                // again later, at the pace of the threshold (never in a tight loop).
                Err(e @ Error::Protocol(_)) => {
                    r.anomaly(e).await;
                    config.idle_after.max(Duration::from_secs(1))
                }
                Err(e) => return e,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                next = self.watch.next() => match next {
                    Err(e) => return e,
                    Ok(Next::Owner(None)) => {
                        return Error::NotRunning(format!("{SCREENSAVER} left the bus"))
                    }
                    Ok(Next::Owner(Some(_)) | Next::Signal(_)) => {}
                },
            }
        }
    }
}

/// logind's `IdleHint`: logind (or the desktop telling it) decides when.
pub(crate) struct Logind {
    conn: Connection,
    watch: Watch,
    session: String,
    detail: String,
}

impl Logind {
    /// Connects and reads the hint once.
    pub(crate) async fn open(config: &DesktopConfig) -> Result<Logind> {
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
        let l = Logind {
            detail: format!(
                "logind IdleHint of {session} on {}",
                dbus::describe(Bus::System, address)
            ),
            conn,
            watch,
            session,
        };
        l.read().await?;
        Ok(l)
    }

    /// `(IdleHint, time since IdleSinceHint when idle)`.
    async fn read(&self) -> Result<(bool, Option<Duration>)> {
        let idle =
            dbus::bool_property(&self.conn, LOGIND, &self.session, SESSION_IFACE, "IdleHint")
                .await?;
        if !idle {
            return Ok((false, None));
        }
        let since = dbus::property(
            &self.conn,
            LOGIND,
            &self.session,
            SESSION_IFACE,
            "IdleSinceHint",
        )
        .await?;
        let since = u64::try_from(&since).map_err(|_| {
            Error::Protocol(format!(
                "IdleSinceHint is `{}`, not a number",
                since.value_signature()
            ))
        })?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let ago = now.saturating_sub(Duration::from_micros(since));
        Ok((true, Some(plausible("IdleSinceHint", ago)?)))
    }

    async fn run(mut self, r: &mut Reporter) -> Error {
        let (idle, ago) = match self.read().await {
            Ok(v) => v,
            Err(e) => return e,
        };
        r.up(self.detail.clone()).await;
        r.send(Report::Idle {
            idle,
            input_ago: ago,
        })
        .await;
        loop {
            let msg = match self.watch.next().await {
                Err(e) => return e,
                Ok(Next::Owner(None)) => {
                    return Error::NotRunning(format!("{LOGIND} left the bus"))
                }
                Ok(Next::Owner(Some(o))) => {
                    return Error::Lost(format!("a new owner ({o}) took over {LOGIND}"))
                }
                Ok(Next::Signal(msg)) => msg,
            };
            if dbus::path(&msg).as_deref() != Some(self.session.as_str()) {
                continue;
            }
            let changed = match dbus::body::<PropertiesChanged>(&msg, "PropertiesChanged") {
                Ok((iface, changed, invalidated)) if iface == SESSION_IFACE => {
                    changed.contains_key("IdleHint") || invalidated.iter().any(|n| n == "IdleHint")
                }
                Ok(_) => false,
                Err(e) => {
                    r.anomaly(e).await;
                    false
                }
            };
            if changed {
                match self.read().await {
                    Ok((idle, ago)) => {
                        r.send(Report::Idle {
                            idle,
                            input_ago: ago,
                        })
                        .await;
                    }
                    Err(e @ Error::Protocol(_)) => r.anomaly(e).await,
                    Err(e) => return e,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x11_counter_values_are_checked() {
        assert_eq!(
            int64_ms(Int64 { hi: 0, lo: 1500 }),
            Ok(Duration::from_millis(1500))
        );
        assert!(matches!(
            int64_ms(Int64 { hi: -1, lo: u32::MAX }),
            Err(Error::Protocol(m)) if m.contains("negative")
        ));
        assert!(matches!(
            int64_ms(Int64 { hi: i32::MAX, lo: u32::MAX }),
            Err(Error::Protocol(m)) if m.contains("cannot be")
        ));
        let parts = |v: Int64| (v.hi, v.lo);
        assert_eq!(parts(int64(300_000)), (0, 300_000));
        assert_eq!(parts(int64(u64::MAX)), (i32::MAX, u32::MAX));
    }

    #[test]
    fn absurd_readings_are_errors() {
        assert!(plausible("x", Duration::from_secs(3600)).is_ok());
        assert!(plausible("x", Duration::from_secs(u64::from(u32::MAX))).is_err());
        assert!(plausible("x", Duration::from_millis(u64::MAX)).is_err());
    }
}
