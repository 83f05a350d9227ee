//! The imstatus hub: runs the sources, keeps the tracker, numbers events and fans them out.
//!
//! Sources push [`Observation`](imstatus_core::Observation)s through a [`Sink`]; the hub runs
//! them through one [`Tracker`](imstatus_core::Tracker) under a short lock and publishes the
//! resulting events on one bounded broadcast ring. A subscriber that falls behind never blocks
//! a source and never grows memory: when the ring overtakes it, its next read is a fresh
//! `snapshot` with `resync: true`, taken under the same lock, and it continues from there. A
//! second, smaller ring keeps recent events so a client can resume by `seq`
//! (`Last-Event-ID`).
//!
//! The hub never names a concrete source: binaries register them through
//! [`Hub::builder`] or [`Hub::from_config`] with a factory.

pub mod config;
pub mod factory;
pub mod hub;
pub mod source;
#[cfg(any(test, feature = "test-source"))]
pub mod testing;

pub use config::{AccountConfig, Config, ConfigError, SourceConfig};
pub use factory::{KeyError, Keys, SourceFactory, SourceSettings, Spanned, Value};
pub use hub::{Hub, HubBuilder, Subscription};
pub use source::{BoxFuture, Check, Sink, Source};
