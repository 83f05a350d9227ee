//! imstatus source for Windows IM clients (Communicator, Lync, Skype for Business, Teams):
//! `HKCU\Software\IM Providers\<app>\UpAndRunning` for the client axis and the client's COM
//! automation object for the session and status axes. Windows only; empty elsewhere.
//!
//! See `docs/windows.md` for what was verified how.

#![cfg_attr(not(windows), allow(unused))]

#[cfg(windows)]
mod com;
#[cfg(windows)]
pub mod ids;
#[cfg(windows)]
mod registry;
#[cfg(windows)]
mod source;
#[cfg(windows)]
pub mod translate;
#[cfg(windows)]
mod worker;
#[cfg(windows)]
pub use source::{doctor, WindowsSource};
