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
//! with a barrier (`census`: the results of disco#items requests sent after the initial
//! presence, plus the presence of every resource they list, for servers such as ejabberd that
//! answer probes out of order), and then the source reports `Synced`. Translation
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
//! Connections use tokio-xmpp's lower layers (XML stream, SASL) with our own DNS (SRV, then
//! A/AAAA, or the `server` override), TCP, STARTTLS (rustls with the system roots plus
//! `ca_file`) and resource binding, because tokio-xmpp's `Client` reconnects by itself
//! forever (also after a wrong password), keeps login errors in its log, and cannot trust an
//! extra CA. Each failure maps to one stable code; the source reconnects with
//! [`imstatus_core::Backoff`] (1 s → 60 s, jittered), except after `auth_failed`, which is
//! reported once and then the source stays down.
//!
//! `set_status` (for a person's `sync`, or `imstatus set`) cannot change the user's other
//! resources, which XMPP leaves to each client: imstatus's own session announces the status
//! instead, shown to the contacts for as long as it is set (module `announce`), and
//! `restore_status` hides it again. See `docs/xmpp-visibility.md`.

mod announce;
mod census;
pub mod config;
mod connect;
pub mod doctor;
mod source;
mod subscription;
mod tls;
pub mod translate;
mod visibility;

pub use config::{TlsMode, Visibility, WatchAs, XmppConfig, XmppFactory, KIND};
pub use doctor::doctor;
pub use source::{XmppSource, LOGIN_TIMEOUT, SETTLE_TIMEOUT};
