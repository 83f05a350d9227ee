//! What sources see, translated into the core's vocabulary.

use crate::activity::ActivitySignal;
use crate::error::ErrorCode;
use crate::event::SignOutReason;
use crate::id::{ContactId, PartId};
use crate::person::PersonState;
use crate::state::Status;

/// One thing a source saw. Sources translate their protocol into these; the
/// [`Tracker`](crate::Tracker) alone decides which events follow.
///
/// A *part* is one independently signed-in piece of the account: an XMPP resource of the user,
/// or one libpurple account of the local client. The account is signed in while at least one
/// part is; its status is that of the best signed-in part (highest priority, then most
/// available).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Observation {
    /// The client is starting (`UpAndRunning` = 1).
    ClientStarting,
    /// The client is running (bus name owned, `UpAndRunning` = 2).
    ClientAppeared,
    /// The client announced that it is quitting (libpurple `Quitting`): later sign-offs are the
    /// user's doing, not a crash.
    ClientQuitting,
    /// The client is gone (bus name lost, process exited or killed). Every part is signed off.
    ClientVanished,
    /// A part started signing in.
    Connecting(PartId),
    /// A part is signed in; its status is left as last reported.
    SignedOn(PartId),
    /// A part failed to sign in.
    SignOnFailed(PartId, ErrorCode),
    /// A part started signing out.
    SigningOff(PartId),
    /// A part is signed out; it stays listed (a disconnected libpurple account).
    SignedOff(PartId, SignOutReason),
    /// A part went away and is forgotten (an XMPP resource sent `unavailable`).
    Absent(PartId, SignOutReason),
    /// A part is signed in with this status and priority (an XMPP available presence).
    Presence {
        /// The part.
        part: PartId,
        /// Its status.
        status: Status,
        /// Its priority, where the protocol has one.
        priority: Option<i32>,
    },
    /// A part's status changed without a change of its session (e.g. set while connecting).
    Status(PartId, Status),
    /// A contact's status (offline when it left).
    Contact(ContactId, Status),
    /// The source saw something wrong that does not change the state (a malformed stanza).
    Anomaly(ErrorCode, String),
    /// The source lost sight of the account (its own connection dropped): the session becomes
    /// `unknown` until the next [`Observation::Synced`].
    SourceDown(ErrorCode, String),
    /// This account has no sign-in (a desktop account): its session and status stay
    /// `unknown`, and `Synced` never turns an empty list of parts into `signed_out`. Reported
    /// once, before the first `Synced`; parts must not be reported after it.
    NoSession,
    /// One desktop signal (microphone, camera, idle, lock). Applied at once, also while the
    /// source is down: the source itself resets a signal whose backend went away.
    Activity(ActivitySignal),
    /// A person's whole state as its rule decided it (only for an account added with
    /// [`Tracker::add_person`](crate::Tracker::add_person)): the tracker emits the client,
    /// session and `status_changed` events that bring the visible state to it, in the order
    /// of the contract, with at most one `status_changed`.
    Person(Box<PersonState>),
    /// The source has reported everything it currently sees (after its start or a reconnect).
    /// Parts and contacts not re-reported since the last `SourceDown` are dropped.
    Synced,
}

impl Observation {
    /// A presence without priority.
    pub fn presence(part: impl Into<PartId>, status: Status) -> Self {
        Observation::Presence {
            part: part.into(),
            status,
            priority: None,
        }
    }
}
