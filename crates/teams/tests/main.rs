//! End-to-end tests of the teams-for-linux source, in one test binary (one link on 2 cores).
//! No Teams client can run here, so a test double stands in for the app, and only for the
//! app (tests/double/main.rs, a separate process so that `kill -9` is real): `mqtt` runs it
//! against a real mosquitto, `dbus` on a real private dbus-daemon, `parity` drives one
//! scenario through both and compares the events.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;
mod dbus;
mod mqtt;
mod parity;
