//! The teams-for-linux source of imstatus: Teams for Linux
//! ([teams-for-linux](https://github.com/IsmaelMartinez/teams-for-linux)) as a local client,
//! without Microsoft Graph or any tenant consent.
//!
//! The app reads the user's presence from the Teams web page it wraps and publishes it, with
//! its call, camera, microphone and screen-sharing state, on one of two interfaces: MQTT
//! topics on a broker the user runs (released; `via = "mqtt"`) or a D-Bus control API on the
//! session bus (on an unmerged branch; `via = "dbus"`, its names kept in [`names`] so they are
//! easy to adjust when it ships). Both are translated by the same sans-IO code
//! ([`translate`]): each transport fills an [`translate::AppState`] and a
//! [`translate::Reporter`] turns the difference into observations, so the same app behaviour
//! gives the same events over either. The client axis follows the app's own liveness signal (the
//! retained `connected` topic with its last will, or the owner of the bus name), so a
//! `kill -9` is `signed_out` then `client_shutdown` as for every local client; retained values
//! count only while `connected` is `true`, since they outlive the app. The MQTT client is
//! rumqttc with the broker URL parser of `imstatus-mqtt` and the TLS roots of `imstatus-tls`;
//! the D-Bus side is zbus with the libpurple source's defences (signals only from the name's
//! owner, owner changes only from the bus daemon, a bounded queue). Nothing can set the
//! presence through either interface, so `set` is `unsupported`.

mod config;
mod dbus;
pub mod doctor;
mod error;
mod factory;
mod gate;
mod mqtt;
pub mod names;
mod source;
pub mod translate;

use imstatus_core::SourceKind;

pub use config::{BrokerOptions, BusOptions, TeamsConfig, Via, KEYS};
pub use error::Error;
pub use factory::TeamsFactory;
pub use source::{TeamsSource, SET_UNSUPPORTED};

/// The `source = "teams-for-linux"` kind.
pub const KIND: SourceKind = SourceKind::new_static("teams-for-linux");
