//! Why the source lost its bus, or could not reach it: the detail of the `source_down` it
//! reports (the code is the caller's: `client_not_running` when there is no bus at all,
//! `disconnected` when a working connection went away).

use std::time::Duration;

/// Why a connection to the bus failed or ended. (zbus's errors are boxed: they are large,
/// and this travels up every call of the watch loop.)
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The bus could not be reached.
    #[error("cannot connect to {bus}: {source}")]
    Connect {
        /// The bus, described for humans (see `bus::describe`).
        bus: String,
        /// What zbus said.
        source: Box<zbus::Error>,
    },
    /// The bus did not answer the connection's handshake in time.
    #[error("cannot connect to {bus}: no answer within {after:?}")]
    ConnectTimeout {
        /// The bus, described for humans.
        bus: String,
        /// The time allowed.
        after: Duration,
    },
    /// The bus refused the signal subscriptions.
    #[error("adding match rules: {0}")]
    Match(#[source] Box<zbus::Error>),
    /// The connection failed under a call or a read.
    #[error("{0}")]
    Lost(#[source] Box<zbus::Error>),
    /// The bus closed the connection.
    #[error("the bus closed the connection")]
    Closed,
}
