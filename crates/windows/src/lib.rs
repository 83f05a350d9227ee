//! imstatus source for Windows IM clients (Communicator, Lync, Skype for Business, Teams):
//! `HKCU\Software\IM Providers\<app>\UpAndRunning` for the client axis and the client's COM
//! automation object for the session and status axes. The source is Windows only; its config
//! ([`WindowsFactory`]) builds everywhere, so a config names a Windows account the same way on
//! every platform.
//!
//! See `docs/windows.md` for what was verified how.

#[cfg(windows)]
mod com;
pub mod config;
#[cfg(windows)]
mod event;
mod factory;
#[cfg(windows)]
pub mod ids;
#[cfg(windows)]
pub mod job;
#[cfg(windows)]
mod registry;
#[cfg(windows)]
mod source;
#[cfg(windows)]
pub mod translate;
#[cfg(windows)]
mod worker;
pub use config::{WindowsConfig, DEFAULT_ACCOUNT, KIND};
pub use factory::WindowsFactory;
#[cfg(windows)]
pub use source::{doctor, WindowsSource};
