//! imstatus source for the local libpurple client (Pidgin, Finch) over D-Bus.
//!
//! libpurple's D-Bus API is the closest thing Linux has to the Office Communicator automation
//! SDK: the client runs while `im.pidgin.purple.PurpleService` has an owner, an account is
//! signed in while libpurple says it is connected, and the status is the current saved status.
//! [`PurpleSource`] keeps **one** bus connection. It opens its message stream and installs
//! narrow match rules (libpurple's owner changes and a dozen account and saved-status signals,
//! never the per-stanza noise) *before* it queries anything, then reads the whole client in two
//! pipelined round trips. After that most signals become observations with no round trip at
//! all: account usernames, connection handles and saved statuses are cached, and what is not
//! known yet is asked in the background (a new saved status as soon as it is created, a new
//! connection's account as soon as it signs on) so that the signal that needs it later finds
//! it. The translation is sans-IO (module `translate`, unit-tested with literal values) and
//! uses zbus's receive positions to make the initial query race-free: a signal that the query
//! already reflects is skipped. Signal bodies are read with the types libpurple really sends,
//! not its introspection data (which is wrong, recipe P14); a body that does not fit is an
//! anomaly and the source carries on. A bus that cannot be reached is `client_not_running`
//! (retried with the core's backoff); a lost bus connection is `disconnected`, followed by a
//! reconnect and a full resynchronisation.
//!
//! Any process on the session bus can send a signal straight to our unique name, past every
//! match rule, and call it anything. So what counts is the sender the bus daemon writes into
//! each message: `NameOwnerChanged` only from `org.freedesktop.DBus` itself, libpurple's
//! signals only from the current owner of `im.pidgin.purple.PurpleService` (the match rules
//! say the same, so others' broadcasts are not even delivered). A pump task drains zbus's
//! stream without ever waiting (zbus reads no replies while its queue is full) and passes on
//! only what that check admits (module `gate`), so once the first query has named the owner,
//! another peer's traffic never reaches the queue. The queue holds 1024 signals (`QUEUE` in
//! module `source`); when libpurple itself sends more than that while the source waits for an
//! answer, the pump drops the rest, and the source reads the whole client again as soon as it
//! gets to it and carries on from there: state is never wrong for longer than one query, and
//! memory stays bounded.

mod bus;
pub mod config;
mod doctor;
mod error;
mod factory;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod gate;
mod signal;
mod source;
mod translate;

pub use config::{PurpleConfig, DEFAULT_ACCOUNT, KIND};
pub use doctor::doctor;
pub use factory::PurpleFactory;
pub use source::PurpleSource;
