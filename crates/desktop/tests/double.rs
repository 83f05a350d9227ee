//! A test double for logind and a desktop's screensaver on private buses: no logind, GNOME or
//! KDE can run here. It serves the real names, objects, methods, properties and signals the
//! source uses, from its own bus connections (so the source sees a distinct peer that owns the
//! name, as with the real services), and can misbehave on purpose.

use zbus::object_server::SignalEmitter;
use zbus::zvariant::{ObjectPath, OwnedObjectPath};
use zbus::Connection;

pub const SESSION_PATH: &str = "/org/freedesktop/login1/session/_31";

/// `org.freedesktop.login1.Manager`.
pub struct Manager;

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    fn get_session(&self, id: &str) -> zbus::fdo::Result<OwnedObjectPath> {
        if id == "auto" || id == "1" {
            OwnedObjectPath::try_from(SESSION_PATH)
                .map_err(|e| zbus::fdo::Error::Failed(e.to_string()))
        } else {
            Err(zbus::fdo::Error::Failed(format!("No session '{id}' known")))
        }
    }
}

/// `org.freedesktop.login1.Session`: `LockedHint`, changed by `SetLockedHint` as a locker
/// does.
pub struct Session {
    pub locked: bool,
}

#[zbus::interface(name = "org.freedesktop.login1.Session")]
impl Session {
    #[zbus(property)]
    fn locked_hint(&self) -> bool {
        self.locked
    }

    #[zbus(property)]
    fn idle_hint(&self) -> bool {
        false
    }

    async fn set_locked_hint(
        &mut self,
        locked: bool,
        #[zbus(signal_emitter)] e: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<()> {
        self.locked = locked;
        self.locked_hint_changed(&e).await?;
        Ok(())
    }
}

/// `org.freedesktop.ScreenSaver`: `GetActive`, `SetActive` → `ActiveChanged`,
/// `GetSessionIdleTime`.
pub struct ScreenSaver {
    pub active: bool,
    pub idle_s: u32,
}

#[zbus::interface(name = "org.freedesktop.ScreenSaver")]
impl ScreenSaver {
    fn get_active(&self) -> bool {
        self.active
    }

    fn get_session_idle_time(&self) -> u32 {
        self.idle_s
    }

    async fn set_active(
        &mut self,
        active: bool,
        #[zbus(signal_emitter)] e: SignalEmitter<'_>,
    ) -> zbus::fdo::Result<bool> {
        self.active = active;
        Self::active_changed(&e, active).await?;
        Ok(true)
    }

    #[zbus(signal)]
    async fn active_changed(e: &SignalEmitter<'_>, active: bool) -> zbus::Result<()>;
}

/// A screensaver that answers with the wrong types and absurd numbers.
pub struct HostileScreenSaver;

#[zbus::interface(name = "org.freedesktop.ScreenSaver")]
impl HostileScreenSaver {
    fn get_active(&self) -> String {
        "yes".into()
    }

    fn get_session_idle_time(&self) -> i64 {
        -1
    }
}

/// A screensaver whose idle time is u32::MAX seconds (136 years).
pub struct AbsurdScreenSaver;

#[zbus::interface(name = "org.freedesktop.ScreenSaver")]
impl AbsurdScreenSaver {
    fn get_session_idle_time(&self) -> u32 {
        u32::MAX
    }
}

/// Serves logind (Manager and one Session) on `address` as `org.freedesktop.login1`; the
/// objects are exported before the name is requested, so a client that finds the name finds
/// them.
pub async fn logind(address: &str, locked: bool) -> Connection {
    zbus::connection::Builder::address(address)
        .expect("address")
        .serve_at("/org/freedesktop/login1", Manager)
        .expect("serve Manager")
        .serve_at(SESSION_PATH, Session { locked })
        .expect("serve Session")
        .name("org.freedesktop.login1")
        .expect("name")
        .build()
        .await
        .expect("logind double")
}

/// Serves `iface` at `/org/freedesktop/ScreenSaver` as `org.freedesktop.ScreenSaver`.
pub async fn screensaver<I: zbus::object_server::Interface>(address: &str, iface: I) -> Connection {
    zbus::connection::Builder::address(address)
        .expect("address")
        .serve_at("/org/freedesktop/ScreenSaver", iface)
        .expect("serve ScreenSaver")
        .name("org.freedesktop.ScreenSaver")
        .expect("name")
        .build()
        .await
        .expect("screensaver double")
}

/// Calls a method of the double, as the locker (another peer) would.
pub async fn call<B>(conn: &Connection, dest: &str, path: &str, iface: &str, method: &str, body: &B)
where
    B: serde_like::Body,
{
    conn.call_method(Some(dest), path, Some(iface), method, body)
        .await
        .unwrap_or_else(|e| panic!("{iface}.{method}: {e}"));
}

/// Sends `ActiveChanged` with `body` from `conn`, to everyone and to each unique name on the
/// bus (`to_all`), as a peer that does not own the name would try.
pub async fn emit_active_changed<B>(conn: &Connection, body: &B, to_all: bool)
where
    B: serde_like::Body,
{
    let path = ObjectPath::try_from("/org/freedesktop/ScreenSaver").expect("path");
    conn.emit_signal(
        None::<&str>,
        &path,
        "org.freedesktop.ScreenSaver",
        "ActiveChanged",
        body,
    )
    .await
    .expect("emit");
    if !to_all {
        return;
    }
    let names: Vec<String> = conn
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus"),
            "ListNames",
            &(),
        )
        .await
        .expect("ListNames")
        .body()
        .deserialize()
        .expect("names");
    let me = conn.unique_name().map(|n| n.to_string());
    for name in names
        .iter()
        .filter(|n| n.starts_with(':') && Some(*n) != me.as_ref())
    {
        conn.emit_signal(
            Some(name.as_str()),
            &path,
            "org.freedesktop.ScreenSaver",
            "ActiveChanged",
            body,
        )
        .await
        .expect("emit unicast");
    }
}

pub mod serde_like {
    /// A message body zbus can send.
    pub trait Body: zbus::export::serde::Serialize + zbus::zvariant::DynamicType + Sync {}
    impl<T: zbus::export::serde::Serialize + zbus::zvariant::DynamicType + Sync> Body for T {}
}
