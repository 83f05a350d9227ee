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
//! The hub never names a concrete source: each source crate registers itself through a
//! [`SourceFactory`] (module [`factory`]), the binary lists the factories it was built with,
//! and hands the hub the sources they build ([`Hub::builder`]).
//!
//! A source may also combine other accounts of the same hub (a person, `imstatus-person`):
//! it names them in [`Source::members`], reads them through [`Sink::subscribe_to`] and
//! [`Subscription::recv_batch`] (whole observation batches, so it never acts on half of one),
//! and sets their status through [`Sink::set_status`] and [`Sink::restore_status`], which reach
//! their sources through the hub's shared list of sources.
//! For the cluster roles, module [`mirror`] lets a feeder publish batches numbered elsewhere
//! into a hub (a gateway serving state from a stream) and lets a hub take accounts over with
//! the state another process published; [`HubBuilder::with_batch_hook`] hands each batch of
//! events to a publisher whole.

pub mod factory;
pub mod hub;
pub mod mirror;
mod shared;
pub mod source;
#[cfg(any(test, feature = "test-source"))]
pub mod testing;

pub use factory::{KeyError, Keys, SourceFactory, SourceSettings, Spanned, Value};
pub use hub::{AccountState, Hub, HubBuilder, DEFAULT_CAPACITY, DEFAULT_HISTORY};
pub use mirror::{Mirror, MirrorBatch, MirrorError, Takeover};
pub use shared::{BatchHook, Subscription, MAX_BATCH};
pub use source::{BoxFuture, Check, Sink, Source};
