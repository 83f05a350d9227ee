//! The imstatus model and its sans-IO core.
//!
//! Three independent axes describe each watched account: is the **client** running, is the
//! user's **session** signed in, and what is their **status**. Sources translate what they see
//! into [`Observation`]s; the [`Tracker`] alone turns them into ordered [`Event`]s under the
//! ordering contract (snapshot first, no event without a change, `signed_out` before
//! `client_shutdown`, `client_started` before `signed_in`). This crate does no I/O, spawns
//! nothing and never reads a clock: time is always an argument, so every rule is testable with
//! plain values.
//!
//! A fourth, optional axis, **activity** (on a call, idle, screen locked), comes from sources
//! that see the local desktop; see [`activity`].
//!
//! A **person** combines several accounts (and a desktop's signals) into one answer with a
//! written rule; the rule is a pure function here, and so is the bookkeeping of which status
//! changes were the user's and which were imstatus's own writes; see [`person`].
//!
//! The MISTATUS and HRESULT tables keep the Office Communicator SDK's numbers so that people
//! who know that SDK recognise them.

pub mod activity;
pub mod backoff;
pub mod decision;
pub mod error;
pub mod event;
pub mod id;
pub mod mistatus;
pub mod observation;
pub mod person;
pub mod state;
pub mod text;
pub mod time;
pub mod tracker;

pub use activity::{Activity, ActivitySignal, App};
pub use backoff::Backoff;
pub use decision::{DecidedBy, Rule, Signal};
pub use error::{CodedError, ErrorCode};
pub use event::{
    Contact, Event, EventKind, Resource, SignInResult, SignOutReason, Since, Snapshot, SourceKind,
};
pub use id::{AccountId, ContactId, PartId};
pub use mistatus::{is_signed_in, mistatus};
pub use observation::Observation;
pub use person::PersonState;
pub use state::{Availability, Client, Session, Status};
pub use time::Timestamp;
pub use tracker::{Tracker, UnknownAccount};
