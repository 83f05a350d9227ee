//! `source = "desktop"`: the keys of its `[[account]]` table, resolved into [`DesktopConfig`].

use std::time::Duration;

use imstatus_core::SourceKind;
use imstatus_hub::factory::one_of;
use imstatus_hub::{KeyError, Keys};

/// The source's kind, `"desktop"`.
pub const KIND: SourceKind = SourceKind::new_static("desktop");

/// The default `idle_after`.
pub const DEFAULT_IDLE_AFTER: Duration = Duration::from_secs(300);

/// The shortest `idle_after` accepted.
pub const MIN_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The default `camera_devices`.
pub const DEFAULT_CAMERA_DEVICES: &str = "/dev/video*";

/// Every key a desktop account reads besides `name` and `source`.
pub const KEYS: &[&str] = &[
    "microphone",
    "camera",
    "camera_devices",
    "idle",
    "lock",
    "idle_after",
    "idle_backends",
    "lock_backends",
    "session_bus",
    "system_bus",
    "display",
    "pulse_server",
];

/// Where the idle time comes from; tried in the configured order, the first that answers is
/// used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdleBackend {
    /// GNOME's `org.gnome.Mutter.IdleMonitor` on the session bus (watches, no polling).
    Mutter,
    /// `org.freedesktop.ScreenSaver.GetSessionIdleTime` on the session bus (KDE).
    ScreenSaver,
    /// The X server's SYNC `IDLETIME` counter, with alarms both ways (no polling).
    X11,
    /// logind's `IdleHint` of the session, on the system bus (logind decides when).
    Logind,
}

impl IdleBackend {
    /// Every backend, in the default order.
    pub const ALL: [IdleBackend; 4] = [
        IdleBackend::Mutter,
        IdleBackend::ScreenSaver,
        IdleBackend::X11,
        IdleBackend::Logind,
    ];

    /// Its config name.
    pub fn as_str(self) -> &'static str {
        match self {
            IdleBackend::Mutter => "mutter",
            IdleBackend::ScreenSaver => "screensaver",
            IdleBackend::X11 => "x11",
            IdleBackend::Logind => "logind",
        }
    }
}

/// Where the lock state comes from; every configured one that answers is watched, and the
/// screen counts as locked when any says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LockBackend {
    /// logind's `LockedHint` of the session, on the system bus.
    Logind,
    /// `org.freedesktop.ScreenSaver` `GetActive` / `ActiveChanged`, on the session bus.
    ScreenSaver,
}

impl LockBackend {
    /// Every backend, in the default order.
    pub const ALL: [LockBackend; 2] = [LockBackend::Logind, LockBackend::ScreenSaver];

    /// Its config name.
    pub fn as_str(self) -> &'static str {
        match self {
            LockBackend::Logind => "logind",
            LockBackend::ScreenSaver => "screensaver",
        }
    }
}

/// The resolved settings of one desktop account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesktopConfig {
    /// Watch capture streams on the sound server.
    pub microphone: bool,
    /// Watch the camera devices.
    pub camera: bool,
    /// The camera device paths; a `*` or `?` in the last component is expanded.
    pub camera_devices: Vec<String>,
    /// Watch the idle time.
    pub idle: bool,
    /// Watch the lock state.
    pub lock: bool,
    /// When `idle` becomes true.
    pub idle_after: Duration,
    /// The idle backends to try, in order.
    pub idle_backends: Vec<IdleBackend>,
    /// The lock backends to watch.
    pub lock_backends: Vec<LockBackend>,
    /// The session bus address (default: `DBUS_SESSION_BUS_ADDRESS`).
    pub session_bus: Option<String>,
    /// The system bus address (default: `DBUS_SYSTEM_BUS_ADDRESS`, else the standard socket).
    pub system_bus: Option<String>,
    /// The X display (default: `DISPLAY`).
    pub display: Option<String>,
    /// The sound server's socket, `unix:/path` or a path (default: `PULSE_SERVER`, else
    /// `$XDG_RUNTIME_DIR/pulse/native`).
    pub pulse_server: Option<String>,
}

impl Default for DesktopConfig {
    /// Every signal off, the default threshold, devices and backends.
    fn default() -> Self {
        DesktopConfig {
            microphone: false,
            camera: false,
            camera_devices: vec![DEFAULT_CAMERA_DEVICES.to_owned()],
            idle: false,
            lock: false,
            idle_after: DEFAULT_IDLE_AFTER,
            idle_backends: IdleBackend::ALL.to_vec(),
            lock_backends: LockBackend::ALL.to_vec(),
            session_bus: None,
            system_bus: None,
            display: None,
            pulse_server: None,
        }
    }
}

impl DesktopConfig {
    /// Is any signal enabled?
    pub fn any_signal(&self) -> bool {
        self.microphone || self.camera || self.idle || self.lock
    }
}

/// Reads a desktop account's keys.
pub fn resolve(keys: &mut Keys) -> Result<DesktopConfig, KeyError> {
    let mut c = DesktopConfig::default();
    let flag = |keys: &mut Keys, key: &str| -> Result<bool, KeyError> {
        Ok(keys.bool(key)?.is_some_and(|b| b.value))
    };
    c.microphone = flag(keys, "microphone")?;
    c.camera = flag(keys, "camera")?;
    c.idle = flag(keys, "idle")?;
    c.lock = flag(keys, "lock")?;
    if let Some(devices) = keys.strings("camera_devices")? {
        if devices.value.is_empty() || devices.value.iter().any(|d| !d.starts_with('/')) {
            return Err(keys.error(
                devices.line,
                "key `camera_devices`: expected absolute paths like \"/dev/video*\"",
            ));
        }
        c.camera_devices = devices.value;
    }
    if let Some(d) = keys.duration("idle_after")? {
        if d.value < MIN_IDLE_AFTER {
            return Err(keys.error(
                d.line,
                format!(
                    "key `idle_after`: {} is too short; use at least 1s",
                    humanise(d.value)
                ),
            ));
        }
        c.idle_after = d.value;
    }
    if let Some(list) = keys.strings("idle_backends")? {
        c.idle_backends = backends(keys, "idle_backends", list, &IdleBackend::ALL, |b| {
            b.as_str()
        })?;
    }
    if let Some(list) = keys.strings("lock_backends")? {
        c.lock_backends = backends(keys, "lock_backends", list, &LockBackend::ALL, |b| {
            b.as_str()
        })?;
    }
    c.session_bus = keys.string("session_bus")?.map(|s| s.value);
    c.system_bus = keys.string("system_bus")?.map(|s| s.value);
    c.display = keys.string("display")?.map(|s| s.value);
    c.pulse_server = keys.string("pulse_server")?.map(|s| s.value);
    if !c.any_signal() {
        return Err(keys.error(
            keys.line(),
            format!(
                "account `{}`: enable at least one of microphone, camera, idle, lock",
                keys.account()
            ),
        ));
    }
    Ok(c)
}

/// Parses a non-empty list of backend names without repeats.
fn backends<B: Copy + PartialEq>(
    keys: &Keys,
    key: &str,
    list: imstatus_hub::Spanned<Vec<String>>,
    all: &[B],
    name: impl Fn(B) -> &'static str,
) -> Result<Vec<B>, KeyError> {
    let names: Vec<&str> = all.iter().map(|b| name(*b)).collect();
    if list.value.is_empty() {
        return Err(keys.error(
            list.line,
            format!("key `{key}`: name at least one of {}", one_of(&names)),
        ));
    }
    let mut out = Vec::new();
    for item in &list.value {
        let Some(b) = all.iter().find(|b| name(**b) == item) else {
            return Err(keys.error(
                list.line,
                format!(
                    "key `{key}`: unknown backend `{item}` (expected {})",
                    one_of(&names)
                ),
            ));
        };
        if out.contains(b) {
            return Err(keys.error(list.line, format!("key `{key}`: `{item}` is listed twice")));
        }
        out.push(*b);
    }
    Ok(out)
}

fn humanise(d: Duration) -> String {
    if d.is_zero() {
        "0s".to_owned()
    } else {
        format!("{d:?}")
    }
}

#[cfg(test)]
mod tests {
    use crate::DesktopFactory;
    use imstatus_core::AccountId;
    use imstatus_hub::SourceFactory;
    use imstatus_hub::Value;

    use super::*;

    fn keys(entries: &[(&str, Value)]) -> Keys {
        let mut k = Keys::new(AccountId::new("desk"), 1);
        for (i, (key, value)) in entries.iter().enumerate() {
            k.insert(*key, value.clone(), i + 3);
        }
        k
    }

    fn s(v: &str) -> Value {
        Value::String(v.into())
    }

    fn list(v: &[&str]) -> Value {
        Value::Array(v.iter().map(|s| Value::String((*s).into())).collect())
    }

    #[test]
    fn the_issue_example_resolves_with_every_key_read() {
        let mut k = keys(&[
            ("microphone", Value::Boolean(true)),
            ("camera", Value::Boolean(true)),
            ("camera_devices", list(&["/dev/video*"])),
            ("idle", Value::Boolean(true)),
            ("lock", Value::Boolean(true)),
            ("idle_after", s("5m")),
        ]);
        let c = resolve(&mut k).expect("valid");
        assert_eq!(
            c,
            DesktopConfig {
                microphone: true,
                camera: true,
                idle: true,
                lock: true,
                ..DesktopConfig::default()
            }
        );
        assert_eq!(k.unread(), vec![]);
    }

    #[test]
    fn bad_values_name_their_line() {
        let cases: &[(&[(&str, Value)], &str)] = &[
            (
                &[("idle", Value::Boolean(true)), ("idle_after", s("soon"))],
                "line 4: key `idle_after`: `soon` is not a duration like 30s or 5m",
            ),
            (
                &[("idle", Value::Boolean(true)), ("idle_after", s("500ms"))],
                "line 4: key `idle_after`: 500ms is too short; use at least 1s",
            ),
            (
                &[
                    ("idle", Value::Boolean(true)),
                    ("idle_backends", list(&["x11", "wayland"])),
                ],
                "line 4: key `idle_backends`: unknown backend `wayland` (expected \"mutter\", \"screensaver\", \"x11\" or \"logind\")",
            ),
            (
                &[("lock", Value::Boolean(true)), ("lock_backends", list(&[]))],
                "line 4: key `lock_backends`: name at least one of \"logind\" or \"screensaver\"",
            ),
            (
                &[("camera", Value::Boolean(true)), ("camera_devices", list(&["video0"]))],
                "line 4: key `camera_devices`: expected absolute paths",
            ),
            (
                &[("microphone", s("yes"))],
                "line 3: key `microphone`: expected a boolean, found a string",
            ),
            (
                &[("microphone", Value::Boolean(false))],
                "line 1: account `desk`: enable at least one of microphone, camera, idle, lock",
            ),
        ];
        for (entries, expected) in cases {
            let err = resolve(&mut keys(entries))
                .expect_err("invalid")
                .to_string();
            assert!(err.starts_with(expected), "{err}\nexpected: {expected}");
        }
    }

    #[test]
    fn advanced_keys_override_the_environment() {
        let mut k = keys(&[
            ("lock", Value::Boolean(true)),
            ("lock_backends", list(&["screensaver"])),
            ("session_bus", s("unix:path=/tmp/s")),
            ("system_bus", s("unix:path=/tmp/y")),
            ("display", s(":7")),
            ("pulse_server", s("unix:/tmp/p")),
        ]);
        let c = resolve(&mut k).expect("valid");
        assert_eq!(c.lock_backends, vec![LockBackend::ScreenSaver]);
        assert_eq!(c.session_bus.as_deref(), Some("unix:path=/tmp/s"));
        assert_eq!(c.system_bus.as_deref(), Some("unix:path=/tmp/y"));
        assert_eq!(c.display.as_deref(), Some(":7"));
        assert_eq!(c.pulse_server.as_deref(), Some("unix:/tmp/p"));
    }

    #[test]
    fn the_factory_describes_itself() {
        let f = DesktopFactory;
        assert_eq!(f.kind(), KIND);
        assert_eq!(f.keys(), KEYS);
        assert_eq!(f.default_account(), None);
    }
}
