//! Real programs for end-to-end tests: Prosody, ejabberd, Synapse, a NATS JetStream cluster, a
//! private D-Bus daemon, finch
//! in tmux, minimal raw XMPP and Matrix clients, and for the desktop source a private PulseAudio
//! and Xvfb.
//!
//! Every helper starts the real binary (never a mock) in its own temporary directory, on free
//! loopback ports, and stops it again by the PID it recorded, in `Drop` as well: nothing is
//! ever looked up or signalled by name. Waiting is always polling with a deadline
//! ([`wait_until`]); a timeout is an [`Error::Timeout`] that carries the tail of the relevant
//! log. A missing program is an [`Error::MissingProgram`], never a skipped test. The API is
//! synchronous (`std::process`, `std::net`) so plain tests and tokio tests can both use it; from
//! async code call it from `spawn_blocking` or accept that it blocks the worker briefly.
//!
//! Waiting has a synchronous form ([`wait_until`], [`try_wait_until`]) and, with the `tokio`
//! feature, an async twin for tokio tests (`wait_until_async`) that sleeps on the runtime's
//! timer instead of blocking a worker: the one way the tests poll. On Windows (the Windows
//! source's tests, run under wine) only the waiting helpers and [`free_port`] exist; the
//! programs are Unix ones.
//!
//! The setup follows `docs/e2e-recipe.md` (section and pitfall numbers in the docs below refer
//! to it). Drop order matters: declare the [`DbusDaemon`] and [`Prosody`] before the [`Finch`]
//! that uses them, so that finch is stopped first.

#[cfg(unix)]
mod dbus;
#[cfg(unix)]
mod ejabberd;
mod error;
#[cfg(unix)]
mod finch;
#[cfg(all(unix, feature = "mqtt"))]
pub mod mosquitto;
#[cfg(unix)]
mod nats;
#[cfg(unix)]
mod process;
#[cfg(unix)]
mod prosody;
#[cfg(unix)]
mod pulse;
#[cfg(unix)]
mod serve;
#[cfg(unix)]
mod synapse;
mod wait;
#[cfg(unix)]
mod xmpp;
#[cfg(unix)]
mod xvfb;

#[cfg(unix)]
pub use dbus::DbusDaemon;
#[cfg(unix)]
pub use ejabberd::{Ejabberd, EjabberdOptions};
pub use error::{Error, Result};
#[cfg(unix)]
pub use finch::{DbusArg, Finch, FinchAccount, PURPLE_SERVICE};
#[cfg(unix)]
pub use nats::{NatsCluster, NatsOptions, NATS_VERSION};
#[cfg(unix)]
pub use process::{listening_sockets, pid_alive, stop_pid};
#[cfg(unix)]
pub use prosody::{Prosody, ProsodyOptions};
#[cfg(unix)]
pub use pulse::{PulseAudio, Recorder};
#[cfg(unix)]
pub use serve::{http_get, ServeProcess};
#[cfg(unix)]
pub use synapse::{Answer, MatrixUser, Synapse, SynapseOptions, SYNAPSE_VERSION};
pub use wait::{free_port, try_wait_until, wait_until, POLL_STEP};
#[cfg(feature = "tokio")]
pub use wait::{wait_until_async, Async, Attempt};
#[cfg(unix)]
pub use xmpp::XmppClient;
#[cfg(unix)]
pub use xvfb::Xvfb;
