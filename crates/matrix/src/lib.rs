//! The Matrix source of imstatus: is the user signed in on Matrix, and with what status?
//!
//! A homeserver cannot see the user's client processes, so the client axis stays `unknown`;
//! what it has is the user's *presence*, folded over all their devices. The source logs in
//! as the user on a device of its own (once: the device and its token are kept in the state
//! directory and reused across restarts) and follows the presence with `/sync` long-polls,
//! filtered down to presence (and, when contacts are tracked, room membership).
//! Translation ([`translate`]) is sans-IO: `/sync` JSON in, [`Observation`]s out, tested with
//! literal JSON. Every `/sync` says `set_presence=offline`, because Matrix's default
//! (`online`) would make the watcher itself sign the user in.
//!
//! The HTTP client is small and our own (the `http` module: hyper 1 and hyper-util's pool over
//! our own DNS/TCP/rustls connector, ring through `imstatus-tls`) rather than matrix-sdk: the
//! source needs six JSON calls, and matrix-sdk 0.18 brings ~250 crates (with e2e encryption,
//! SQLite and aws-lc) and needs a newer compiler than the workspace's 1.85; this client adds
//! no crate to Cargo.lock. Each failure maps to one stable code as in the XMPP
//! source; every answer is capped before it is parsed ([`api::SYNC_CAP`], [`api::SMALL_CAP`]),
//! and serde_json's depth limit (128) keeps parsing off deep recursion. The source reconnects
//! with [`imstatus_core::Backoff`], waits as long as `M_LIMIT_EXCEEDED` asks, replaces a
//! refused token with one new login, and stops for good after `auth_failed`.
//!
//! [`Observation`]: imstatus_core::Observation

pub mod api;
mod config;
pub mod doctor;
mod factory;
mod http;
mod source;
mod state;
pub mod translate;

use imstatus_core::SourceKind;

pub use config::{
    default_state_dir, parse_homeserver, Credentials, Homeserver, MatrixConfig, UserId,
    DEFAULT_DEVICE_NAME, KEYS,
};
pub use factory::MatrixFactory;
pub use source::{presence_for, MatrixSource};
pub use state::{Error, StoredLogin};

/// The `source = "matrix"` kind.
pub const KIND: SourceKind = SourceKind::new_static("matrix");
