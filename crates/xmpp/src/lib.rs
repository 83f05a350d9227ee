//! The XMPP source of imstatus: is the user signed in on XMPP, and with what status?
//!
//! A remote XMPP account has no "client process" to look at, so this source does what a
//! second client of the user would do: it logs in as the user's own JID with a resource of
//! its own (`imstatus-<random>`) and priority −1 (so it never receives the user's messages).
//! The server then sends it the presence of the user's *other* resources; each one becomes a
//! part of the account ([`Observation::Presence`](imstatus_core::Observation) /
//! `Absent`), and the core tracker aggregates them (signed in ⇔ at least one other resource
//! is available; status of the highest-priority, then most available one). Because a user
//! with no other resource produces no stanza at all, the end of the initial presences is found
//! with a barrier (`census`: the result of a disco#items request to the user's JID sent after
//! the initial presence — and, on servers such as ejabberd that list online resources there and
//! answer probes out of order, one per watched contact, a bounded number in flight — plus the
//! presence of every resource they list), and then the source reports `Synced`. Translation
//! ([`translate`]) is sans-IO and never panics on peer data: malformed stanzas become
//! `Anomaly(protocol_error)` and the stream goes on.
//!
//! An available resource is normally announced to every contact of the user, which would make
//! the user look online to everyone while imstatus runs. So before its initial presence the
//! source hides the session where the server allows it (`visibility`: XEP-0186, else an
//! XEP-0016 privacy list active for this session only); where it cannot, it stays visible and
//! says so once (`visibility = "auto"`), or refuses with `unsupported` (`"invisible"`). In
//! contact mode (`watch_as = "contact"`) it logs in as a separate watcher account with a
//! presence subscription to the user instead, and reports a missing, pending or refused
//! subscription as `access_denied`, never as "signed out". See `docs/xmpp-visibility.md`.
//!
//! Connections use tokio-xmpp's XML stream with our own DNS (SRV, then A/AAAA, or the
//! `server` override), TCP, STARTTLS (rustls with the system roots plus `ca_file`), SASL and
//! resource binding, because tokio-xmpp's `Client` reconnects by itself forever (also after a
//! wrong password), keeps login errors in its log, and cannot trust an extra CA. Each failure
//! maps to one stable code; the source reconnects with [`imstatus_core::Backoff`] (1 s → 60 s,
//! jittered), except after `auth_failed`, which is reported once and then the source stays
//! down.
//!
//! Everything a server or contact sends is treated as hostile and bounded ([`limits`]): the
//! bytes pass a guard (`guard`, `scan`) that holds each stanza back until it is complete and
//! drops it — before the XML parser, which builds trees recursively, sees a byte of it — when it
//! nests deeper than 32 levels, is larger than 256 KiB or carries an attribute value over
//! 8 KiB; SASL (`auth`) is done on the guarded socket, not through tokio-xmpp, so credentials
//! never reach a logger, the server cannot make us hash for minutes (SCRAM iterations capped,
//! hashing off the runtime threads), ANONYMOUS is never used and PLAIN only over TLS or
//! loopback; replies are accepted only from whom they were asked of; only the user's resources
//! and roster contacts create state, capped; and text that reaches human output has its
//! control characters replaced. See `docs/xmpp-visibility.md`, "Limits and hostile peers".
//!
//! `set_status` (for a person's `sync`, or `imstatus set`) cannot change the user's other
//! resources, which XMPP leaves to each client: imstatus's own session announces the status
//! instead, shown to the contacts for as long as it is set (module `announce`), and
//! `restore_status` hides it again. See `docs/xmpp-visibility.md`.

mod announce;
mod auth;
mod census;
pub mod config;
mod connect;
pub mod doctor;
mod error;
mod factory;
mod fast;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod guard;
mod scan;
mod source;
mod subscription;
mod tls;
pub mod translate;
mod visibility;

pub use config::{TlsMode, Visibility, WatchAs, XmppConfig, KIND};
pub use doctor::doctor;
pub use factory::XmppFactory;

/// The limits on what a server or contact can make imstatus hold, parse or compute, in one
/// place (see `docs/xmpp-visibility.md`, "Limits and hostile peers").
pub mod limits {
    pub use crate::auth::MAX_SCRAM_ITERATIONS;
    pub use crate::guard::{MAX_DROP_BYTES, MAX_REPORTS};
    pub use crate::scan::{MAX_ATTRIBUTE_BYTES, MAX_DEPTH, MAX_STANZA_BYTES};
    pub use crate::source::MAX_ROSTER_BYTES;
    pub use crate::translate::{MAX_CONTACTS, MAX_RESOURCES, MAX_STATUS_CHARS};
}
pub use source::{XmppSource, LOGIN_TIMEOUT, SETTLE_TIMEOUT};
