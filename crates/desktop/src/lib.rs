//! imstatus source for the local desktop: is the user on a call (microphone or camera in
//! use), idle, or behind a locked screen?
//!
//! Each signal is opt-in and watched by its own task through the interface that *pushes*
//! changes where there is one, so nothing polls while nothing happens: capture streams through
//! the sound server's subscription (PulseAudio's native protocol, spoken in pure Rust, which
//! covers PipeWire's `pipewire-pulse` too), camera devices through inotify plus a bounded
//! `/proc` scan to name their users, the idle time through Mutter's watches or the X server's
//! SYNC `IDLETIME` alarms (with a timer and a short re-query while idle only for
//! `org.freedesktop.ScreenSaver`, which has no watches), the lock through logind's
//! `PropertiesChanged` and the screensaver's `ActiveChanged`, accepted only from the bus name's
//! current owner. The tasks report to a sans-IO coordinator that turns their answers and
//! outages into the core's observations (the client axis is "the desktop answers"; there is
//! no sign-in), and the core's tracker decides the `activity_changed` events. Nothing reads
//! audio, video, input events or window titles: `docs/signals.md` lists what each signal
//! reads.
//!
//! Linux only: on other systems the factory still resolves the keys, and building the source
//! says it is not supported.

#[cfg(target_os = "linux")]
mod camera;
mod config;
#[cfg(target_os = "linux")]
mod coordinator;
#[cfg(target_os = "linux")]
mod dbus;
#[cfg(target_os = "linux")]
mod doctor;
mod error;
mod factory;
#[cfg(target_os = "linux")]
mod idle;
#[cfg(target_os = "linux")]
mod lock;
#[cfg(target_os = "linux")]
mod microphone;
#[cfg(target_os = "linux")]
mod reporter;
#[cfg(target_os = "linux")]
mod source;
#[cfg(target_os = "linux")]
mod unit;

pub use config::{
    resolve, DesktopConfig, IdleBackend, LockBackend, DEFAULT_CAMERA_DEVICES, DEFAULT_IDLE_AFTER,
    KEYS, KIND, MIN_IDLE_AFTER,
};
pub use error::{Error, Result};
pub use factory::DesktopFactory;
#[cfg(target_os = "linux")]
pub use source::DesktopSource;

#[cfg(not(target_os = "linux"))]
mod source {
    use std::sync::Arc;

    use imstatus_core::{CodedError, ErrorCode};
    use imstatus_hub::Source;

    pub(crate) fn build(_: &crate::DesktopConfig) -> Result<Arc<dyn Source>, CodedError> {
        Err(CodedError::new(
            ErrorCode::Unsupported,
            "the desktop source is Linux only",
        ))
    }
}

#[cfg(not(target_os = "linux"))]
mod doctor {
    use imstatus_hub::Check;

    pub(crate) async fn doctor(_: &crate::DesktopConfig) -> Vec<Check> {
        vec![Check::fail(
            "platform",
            "the desktop source is Linux only",
            "remove the desktop account from this machine's config",
        )]
    }
}
