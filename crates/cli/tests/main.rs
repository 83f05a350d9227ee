//! The integration tests of the `imstatus` crate, in one test binary (one link instead of
//! six on 2 cores): the real binary (`binary`, `real` against real servers, `mqtt` against a
//! real mosquitto, `windows` for `imstatus.exe` under wine when `IMSTATUS_WINDOWS_EXE` is set)
//! and the commands in-process (`scripted`, `hooks`); `desktop` and `teams` against a real
//! PulseAudio and a real mosquitto.

mod binary;
#[cfg(feature = "cluster")]
mod cluster;
mod desktop;
mod hooks;
mod mqtt;
mod person;
mod person_real;
mod real;
mod scripted;
mod teams;
mod windows;
