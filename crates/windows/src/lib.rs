//! imstatus source for Windows IM clients (Communicator, Lync, Skype for Business, Teams):
//! `HKCU\Software\IM Providers\<app>\UpAndRunning` for the client axis and the client's COM
//! automation object for the session and status axes. Windows only; empty elsewhere.

#![cfg_attr(not(windows), allow(unused))]

#[cfg(windows)]
mod source;
#[cfg(windows)]
pub use source::{doctor, WindowsSource};
