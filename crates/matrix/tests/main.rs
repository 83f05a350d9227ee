//! End-to-end tests of the Matrix source, in one test binary (one link on 2 cores):
//! `synapse` runs the source inside a real hub against a real Synapse (started by
//! imstatus-testkit; one server shared by the tests that can share it, each with its own
//! users), `fake_server` answers over loopback what Synapse cannot be made to send (429 with
//! `retry_after_ms`, malformed and oversized JSON) and counts requests.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod fake_server;
mod synapse;
