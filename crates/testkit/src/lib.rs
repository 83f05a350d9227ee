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
//! The setup follows `docs/e2e-recipe.md` (section and pitfall numbers in the docs below refer
//! to it). Drop order matters: declare the [`DbusDaemon`] and [`Prosody`] before the [`Finch`]
//! that uses them, so that finch is stopped first.

mod dbus;
mod ejabberd;
mod error;
mod finch;
#[cfg(feature = "mqtt")]
pub mod mosquitto;
mod nats;
mod process;
mod prosody;
mod pulse;
mod synapse;
mod wait;
mod xmpp;
mod xvfb;

pub use dbus::DbusDaemon;
pub use ejabberd::{Ejabberd, EjabberdOptions};
pub use error::{Error, Result};
pub use finch::{DbusArg, Finch, FinchAccount, PURPLE_SERVICE};
pub use nats::{NatsCluster, NATS_VERSION};
pub use process::{listening_sockets, pid_alive, stop_pid};
pub use prosody::{Prosody, ProsodyOptions};
pub use pulse::{PulseAudio, Recorder};
pub use synapse::{Answer, MatrixUser, Synapse, SynapseOptions, SYNAPSE_VERSION};
pub use wait::{free_port, try_wait_until, wait_until, POLL_STEP};
pub use xmpp::XmppClient;
pub use xvfb::Xvfb;
