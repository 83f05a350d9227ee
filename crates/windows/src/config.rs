//! The Windows source's settings and its `[[account]]` keys (`source = "windows"`); the
//! [`WindowsFactory`](crate::WindowsFactory) registers the source. This part builds on every
//! platform, so that a config naming a Windows account reads the same everywhere; only Windows
//! builds can run the source (elsewhere `build` says it is Windows-only). On Windows this is the
//! zero-config default: the client `HKCU\Software\IM Providers\DefaultIMApp` names, as `windows`.

use imstatus_core::SourceKind;

/// `source = "windows"`.
pub const KIND: SourceKind = SourceKind::new_static("windows");

/// The account name of the zero-config default on Windows.
pub const DEFAULT_ACCOUNT: &str = "windows";

/// The Windows source's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WindowsConfig {
    /// The `IM Providers` subkey to watch (`Communicator`, `Lync`, `Teams`, ...); `None` = the
    /// one named by `HKCU\Software\IM Providers\DefaultIMApp`, followed when it changes.
    pub app: Option<String>,
    /// Also track contacts' presence (`OnContactStatusChange`).
    pub contacts: bool,
}
