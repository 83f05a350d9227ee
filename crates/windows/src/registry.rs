//! The `IM Providers` registry key: reading it and watching it by change notification.
//!
//! `HKCU\Software\IM Providers\DefaultIMApp` names the client (`Communicator`, `Lync`,
//! `Teams`…), `HKCU\Software\IM Providers\<app>\UpAndRunning` says whether it runs (0 no,
//! 1 starting, 2 running), and `HKLM\Software\IM Providers\<app>\GUID` names the COM class to
//! attach to. Two watches cover every change without polling: `HKCU\Software\IM Providers` with
//! its whole subtree (values set, subkeys added or removed), and `HKCU\Software` itself (names
//! only), which sees `IM Providers` appear or disappear.

use windows::core::{GUID, HSTRING, PCWSTR};
use windows::Win32::Foundation::{CloseHandle, ERROR_SUCCESS, FILETIME, HANDLE};
use windows::Win32::System::Registry::{
    RegCloseKey, RegGetValueW, RegNotifyChangeKeyValue, RegOpenKeyExW, RegQueryInfoKeyW, HKEY,
    HKEY_CURRENT_USER, HKEY_LOCAL_MACHINE, KEY_NOTIFY, KEY_READ, REG_NOTIFY_CHANGE_LAST_SET,
    REG_NOTIFY_CHANGE_NAME, REG_NOTIFY_FILTER, RRF_RT_REG_DWORD, RRF_RT_REG_SZ,
};
use windows::Win32::System::Threading::{CreateEventW, ResetEvent};

/// `Software\IM Providers`, under HKCU and HKLM.
pub const IM_PROVIDERS: &str = r"Software\IM Providers";

/// What the registry says, compared between wake-ups to see what changed.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct RegState {
    /// `DefaultIMApp`, if set.
    pub default_app: Option<String>,
    /// The client watched: the config's `app`, else `DefaultIMApp`.
    pub app: Option<String>,
    /// `UpAndRunning` of that client, `None` when the key or value is missing.
    pub up_and_running: Option<u32>,
    /// The last write time of `HKCU\Software\IM Providers\<app>`: a client that writes
    /// `UpAndRunning` = 2 again after a crash (the value stayed 2) still changes it.
    pub written: Option<u64>,
    /// The class named by `HKLM\Software\IM Providers\<app>\GUID`, if any.
    pub clsid: Option<GUID>,
}

impl RegState {
    /// Reads the registry for the configured `app` (or `DefaultIMApp`).
    pub fn read(app: Option<&str>) -> RegState {
        let default_app = read_sz(HKEY_CURRENT_USER, IM_PROVIDERS, "DefaultIMApp")
            .filter(|s| !s.trim().is_empty());
        let app = app.map(str::to_owned).or_else(|| default_app.clone());
        let Some(name) = app.as_deref() else {
            return RegState {
                default_app,
                ..RegState::default()
            };
        };
        let key = format!(r"{IM_PROVIDERS}\{name}");
        RegState {
            up_and_running: read_dword(HKEY_CURRENT_USER, &key, "UpAndRunning"),
            written: last_write(HKEY_CURRENT_USER, &key),
            clsid: read_sz(HKEY_LOCAL_MACHINE, &key, "GUID").and_then(|s| parse_guid(&s)),
            default_app,
            app,
        }
    }
}

/// `{8885370D-B33E-44B7-875D-28E403CF9270}` (braces optional) into a GUID.
pub fn parse_guid(s: &str) -> Option<GUID> {
    let s = s.trim().trim_start_matches('{').trim_end_matches('}');
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    if hex.len() != 32 || s.len() != 36 {
        return None;
    }
    u128::from_str_radix(&hex, 16).ok().map(GUID::from_u128)
}

/// A `REG_SZ` value, `None` when missing or of another type.
pub fn read_sz(root: HKEY, key: &str, value: &str) -> Option<String> {
    let (key, value) = (HSTRING::from(key), HSTRING::from(value));
    let mut buf = [0u16; 512];
    let mut len = std::mem::size_of_val(&buf) as u32;
    // SAFETY: `key` and `value` are NUL-terminated wide strings that outlive the call; `buf`
    // is writable for `len` bytes and `len` is a valid in/out pointer.
    let status = unsafe {
        RegGetValueW(
            root,
            &key,
            &value,
            RRF_RT_REG_SZ,
            None,
            Some(buf.as_mut_ptr().cast()),
            Some(&mut len),
        )
    };
    if status != ERROR_SUCCESS {
        return None;
    }
    let chars = (len as usize / 2).min(buf.len());
    let s = String::from_utf16_lossy(&buf[..chars]);
    Some(s.trim_end_matches('\0').to_owned())
}

/// A `REG_DWORD` value, `None` when missing or of another type.
pub fn read_dword(root: HKEY, key: &str, value: &str) -> Option<u32> {
    let (key, value) = (HSTRING::from(key), HSTRING::from(value));
    let mut data = 0u32;
    let mut len = 4u32;
    // SAFETY: the strings outlive the call; `data` is 4 writable bytes, `len` says so.
    let status = unsafe {
        RegGetValueW(
            root,
            &key,
            &value,
            RRF_RT_REG_DWORD,
            None,
            Some((&mut data as *mut u32).cast()),
            Some(&mut len),
        )
    };
    (status == ERROR_SUCCESS).then_some(data)
}

/// The last write time of a key, `None` when it does not exist.
fn last_write(root: HKEY, key: &str) -> Option<u64> {
    let key = Key::open(root, key, KEY_READ.0)?;
    let mut time = FILETIME::default();
    // SAFETY: `key.0` is an open key; `time` is a valid out pointer; the others are null.
    let status = unsafe {
        RegQueryInfoKeyW(
            key.0,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            Some(&mut time),
        )
    };
    (status == ERROR_SUCCESS)
        .then_some((u64::from(time.dwHighDateTime) << 32) | u64::from(time.dwLowDateTime))
}

/// An open registry key, closed on drop.
struct Key(HKEY);

impl Key {
    fn open(root: HKEY, path: &str, access: u32) -> Option<Key> {
        let path = HSTRING::from(path);
        let mut key = HKEY::default();
        // SAFETY: `path` outlives the call; `key` is a valid out pointer.
        let status = unsafe {
            RegOpenKeyExW(
                root,
                PCWSTR(path.as_ptr()),
                None,
                windows::Win32::System::Registry::REG_SAM_FLAGS(access),
                &mut key,
            )
        };
        (status == ERROR_SUCCESS).then_some(Key(key))
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: the key was opened by `Key::open` and is closed exactly once.
        unsafe {
            let _ = RegCloseKey(self.0);
        }
    }
}

/// One armed change notification: a key and the manual-reset event it signals.
struct Watch {
    key: Key,
    event: HANDLE,
    subtree: bool,
    filter: REG_NOTIFY_FILTER,
}

impl Watch {
    fn new(root: HKEY, path: &str, subtree: bool, filter: REG_NOTIFY_FILTER) -> Option<Watch> {
        let key = Key::open(root, path, KEY_NOTIFY.0 | KEY_READ.0)?;
        // SAFETY: plain event creation (manual reset, not signalled, unnamed).
        let event = unsafe { CreateEventW(None, true, false, PCWSTR::null()) }.ok()?;
        let watch = Watch {
            key,
            event,
            subtree,
            filter,
        };
        watch.arm().then_some(watch)
    }

    /// Resets the event and asks for the next change. False when the key is gone.
    fn arm(&self) -> bool {
        // SAFETY: `event` is our open event handle and `key.0` our open key; the notification
        // is asynchronous, so the call returns at once and signals `event` on the next change
        // (or when the key is closed).
        unsafe {
            let _ = ResetEvent(self.event);
            RegNotifyChangeKeyValue(
                self.key.0,
                self.subtree,
                self.filter,
                Some(self.event),
                true,
            ) == ERROR_SUCCESS
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        // SAFETY: `event` was created by `Watch::new` and is closed exactly once, after the key
        // (dropped first below would signal it; the order does not matter once we stop
        // waiting on it).
        unsafe {
            let _ = CloseHandle(self.event);
        }
    }
}

/// The two watches of the module documentation.
pub struct RegistryWatch {
    software: Option<Watch>,
    providers: Option<Watch>,
}

impl RegistryWatch {
    /// Arms both watches (the second only if `IM Providers` exists).
    pub fn new() -> RegistryWatch {
        let mut w = RegistryWatch {
            software: None,
            providers: None,
        };
        w.rearm();
        w
    }

    /// The events to wait on.
    pub fn handles(&self) -> Vec<HANDLE> {
        [&self.software, &self.providers]
            .into_iter()
            .flatten()
            .map(|w| w.event)
            .collect()
    }

    /// After a wake-up: re-arms both watches, reopening `IM Providers` if it was created,
    /// deleted or re-created. Call before reading the values, so that no change between the
    /// read and the next wait is missed.
    pub fn rearm(&mut self) {
        if let Some(w) = &self.software {
            if !w.arm() {
                self.software = None;
            }
        }
        if self.software.is_none() {
            self.software =
                Watch::new(HKEY_CURRENT_USER, "Software", false, REG_NOTIFY_CHANGE_NAME);
        }
        // `IM Providers` may have been deleted or re-created since it was opened (a deleted key
        // can still be armed, it just never changes again): reopen it by name every time.
        self.providers = Watch::new(
            HKEY_CURRENT_USER,
            IM_PROVIDERS,
            true,
            REG_NOTIFY_CHANGE_NAME | REG_NOTIFY_CHANGE_LAST_SET,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_parse_with_or_without_braces() {
        let g = parse_guid("{8885370D-B33E-44B7-875D-28E403CF9270}");
        assert_eq!(g, Some(crate::ids::CLSID_MESSENGER));
        assert_eq!(
            parse_guid("8885370d-b33e-44b7-875d-28e403cf9270"),
            Some(crate::ids::CLSID_MESSENGER)
        );
        assert_eq!(parse_guid("not a guid"), None);
        assert_eq!(parse_guid("{8885370D-B33E-44B7-875D-28E403CF927}"), None);
    }
}
