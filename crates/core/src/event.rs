//! Events, the ordered stream subscribers see, and the snapshot they start from.

use std::borrow::Cow;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::activity::Activity;
use crate::decision::DecidedBy;
use crate::error::ErrorCode;
use crate::id::{AccountId, ContactId, PartId};
use crate::mistatus::mistatus;
use crate::state::{Availability, Client, Session, Status};
use crate::time::Timestamp;

/// Which kind of source watches an account: the source's name as the config and the JSON
/// spell it (`"xmpp"`, `"purple"`, `"windows"`, …).
///
/// The core names no source: each source crate defines its kind as a constant
/// (`SourceKind::new_static("xmpp")`) and registers itself with the binary. Serialised as the
/// plain string.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SourceKind(Cow<'static, str>);

impl SourceKind {
    /// A kind from a string known at compile time (no allocation, usable in `const`).
    pub const fn new_static(name: &'static str) -> Self {
        SourceKind(Cow::Borrowed(name))
    }

    /// A kind from any name (as read from JSON or a config file).
    pub fn new(name: impl Into<String>) -> Self {
        SourceKind(Cow::Owned(name.into()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl PartialEq<str> for SourceKind {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for SourceKind {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Why a session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignOutReason {
    /// The user signed out (or quit the client).
    User,
    /// The client exited without signing out (crash, `kill -9`).
    ClientExited,
    /// The client lost its connection to the server.
    ConnectionLost,
    /// The server shut down.
    ServerShutdown,
    /// The server refused the credentials.
    AuthFailed,
    /// Another login replaced this one.
    Replaced,
    /// It happened while the source could not see it (found out on resynchronisation).
    Unknown,
}

/// The outcome of a sign-in, like the SDK's `OnSignin(hr)`: `ok` or an error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SignInResult {
    /// Signed in.
    Ok,
    /// The sign-in failed; the session is signed out.
    Failed(ErrorCode),
}

impl Serialize for SignInResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SignInResult::Ok => s.serialize_str("ok"),
            SignInResult::Failed(code) => code.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for SignInResult {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        if s == "ok" {
            return Ok(SignInResult::Ok);
        }
        s.parse()
            .map(SignInResult::Failed)
            .map_err(serde::de::Error::custom)
    }
}

/// One part's state as listed in a snapshot (an XMPP resource, a libpurple account).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    /// The XMPP resource or the libpurple account name.
    pub resource: PartId,
    /// Its session.
    pub session: Session,
    /// Its availability.
    pub availability: Availability,
    /// Its status message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Its priority, where the protocol has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
}

impl Resource {
    /// This part's status.
    pub fn status(&self) -> Status {
        Status {
            availability: self.availability,
            message: self.message.clone(),
        }
    }
}

/// A contact's presence as listed in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contact {
    /// The contact.
    pub contact: ContactId,
    /// Its availability.
    pub availability: Availability,
    /// Its status message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Contact {
    /// This contact's status.
    pub fn status(&self) -> Status {
        Status {
            availability: self.availability,
            message: self.message.clone(),
        }
    }
}

/// When each axis last changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    /// The client axis.
    pub client: Option<Timestamp>,
    /// The session axis.
    pub session: Option<Timestamp>,
    /// The status.
    pub status: Option<Timestamp>,
}

/// The whole known state of one account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Is the client running?
    pub client: Client,
    /// Is the user signed in?
    pub session: Session,
    /// The aggregated availability.
    pub availability: Availability,
    /// The aggregated status message.
    pub message: Option<String>,
    /// The MISTATUS code of `session` and `availability`.
    pub mistatus: u32,
    /// Every part (XMPP resource, libpurple account), sorted by name.
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// Every tracked contact, sorted by name (empty unless contacts are tracked).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contacts: Vec<Contact>,
    /// When each axis last changed.
    #[serde(default)]
    pub since: Since,
    /// On a call, idle, locked: only for sources that see the local desktop (`None`, and left
    /// out of the JSON, for every other account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Activity>,
    /// A person's member accounts, in config order (empty, and left out of the JSON, for
    /// every other account).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<AccountId>,
    /// Which rule of a person gave its current status (`None`, and left out of the JSON, for
    /// every other account).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
}

impl Snapshot {
    /// The state of an account nothing is known about yet.
    pub fn unknown() -> Self {
        Snapshot {
            client: Client::Unknown,
            session: Session::Unknown,
            availability: Availability::Unknown,
            message: None,
            mistatus: mistatus(Session::Unknown, Availability::Unknown),
            resources: Vec::new(),
            contacts: Vec::new(),
            since: Since::default(),
            activity: None,
            accounts: Vec::new(),
            decided_by: None,
        }
    }

    /// The aggregated status.
    pub fn status(&self) -> Status {
        Status {
            availability: self.availability,
            message: self.message.clone(),
        }
    }

    /// Folds one event into this snapshot, exactly as a subscriber would: after a `snapshot`
    /// event followed by changes, the folded state equals the tracker's own.
    pub fn apply(&mut self, kind: &EventKind, time: Timestamp) {
        match kind {
            EventKind::Snapshot { snapshot, .. } => *self = (**snapshot).clone(),
            EventKind::ClientStarting => self.set_client(Client::Starting, time),
            EventKind::ClientStarted => self.set_client(Client::Running, time),
            EventKind::ClientShutdown => self.set_client(Client::NotRunning, time),
            EventKind::SigningIn => self.set_session(Session::SigningIn, time),
            EventKind::SignedIn { result } => {
                let session = match result {
                    SignInResult::Ok => Session::SignedIn,
                    SignInResult::Failed(_) => Session::SignedOut,
                };
                self.set_session(session, time);
            }
            EventKind::SigningOut => self.set_session(Session::SigningOut, time),
            EventKind::SignedOut { .. } => self.set_session(Session::SignedOut, time),
            EventKind::StatusChanged { to, decided_by, .. } => {
                self.availability = to.availability;
                self.message = to.message.clone();
                self.decided_by = decided_by.clone();
                self.since.status = Some(time);
            }
            EventKind::ResourceChanged { resource, to, .. } => {
                let pos = self
                    .resources
                    .binary_search_by(|r| r.resource.cmp(resource));
                match (pos, to) {
                    (Ok(i), Some(r)) => self.resources[i] = r.clone(),
                    (Err(i), Some(r)) => self.resources.insert(i, r.clone()),
                    (Ok(i), None) => {
                        self.resources.remove(i);
                    }
                    (Err(_), None) => {}
                }
            }
            EventKind::ContactStatusChanged { contact, to, .. } => {
                let entry = Contact {
                    contact: contact.clone(),
                    availability: to.availability,
                    message: to.message.clone(),
                };
                match self.contacts.binary_search_by(|c| c.contact.cmp(contact)) {
                    Ok(i) => self.contacts[i] = entry,
                    Err(i) => self.contacts.insert(i, entry),
                }
            }
            EventKind::SourceError {
                session_unknown, ..
            } => {
                if *session_unknown {
                    self.set_session(Session::Unknown, time);
                }
            }
            EventKind::ActivityChanged { to, .. } => self.activity = Some((**to).clone()),
        }
        self.mistatus = mistatus(self.session, self.availability);
    }

    /// Folds one event as [`Snapshot::apply`] does, but keeps no contacts: a contact's change
    /// is skipped and a snapshot's contact list dropped. For consumers that read only the
    /// account's own state (session, status, resources, activity): they keep no copy of a big
    /// contact list, and a login's contacts are not inserted one by one into a sorted list.
    pub fn apply_own(&mut self, kind: &EventKind, time: Timestamp) {
        if matches!(kind, EventKind::ContactStatusChanged { .. }) {
            return;
        }
        self.apply(kind, time);
        if !self.contacts.is_empty() {
            self.contacts = Vec::new();
        }
    }

    fn set_client(&mut self, client: Client, time: Timestamp) {
        self.client = client;
        self.since.client = Some(time);
    }

    fn set_session(&mut self, session: Session, time: Timestamp) {
        self.session = session;
        self.since.session = Some(time);
    }
}

/// What happened. JSON: the `event` field, snake_case, with the variant's fields beside it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// The whole state; always first for a subscriber, and again with `resync: true` after it
    /// fell behind.
    Snapshot {
        /// The state.
        #[serde(flatten)]
        snapshot: Box<Snapshot>,
        /// Sent because the subscriber fell behind or resumed from too far back.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resync: bool,
    },
    /// The client is starting.
    ClientStarting,
    /// The client is running.
    ClientStarted,
    /// The user is signing in.
    SigningIn,
    /// The sign-in finished: `ok`, or an error code (then the session is signed out).
    SignedIn {
        /// The outcome.
        result: SignInResult,
    },
    /// The aggregated status changed; for a person, also when only the rule that decides it
    /// changed (then `from` equals `to`).
    StatusChanged {
        /// Before.
        from: Status,
        /// After.
        to: Status,
        /// The MISTATUS code after the change.
        mistatus: u32,
        /// A person's rule that gave `to` (`None`, and left out of the JSON, for every other
        /// account).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        decided_by: Option<DecidedBy>,
    },
    /// One part (resource, libpurple account) appeared, changed or left (`to: null`).
    ResourceChanged {
        /// The part.
        resource: PartId,
        /// Before (`null` if new).
        from: Option<Resource>,
        /// After (`null` if gone).
        to: Option<Resource>,
    },
    /// The user is signing out.
    SigningOut,
    /// The user is signed out.
    SignedOut {
        /// Why.
        reason: SignOutReason,
    },
    /// The client is no longer running.
    ClientShutdown,
    /// A contact's status changed.
    ContactStatusChanged {
        /// The contact.
        contact: ContactId,
        /// Before.
        from: Status,
        /// After.
        to: Status,
    },
    /// The source hit an error. With `session_unknown: true` the source lost sight of the
    /// account and the session is `unknown` until the next session event.
    SourceError {
        /// The stable code.
        code: ErrorCode,
        /// The source's own message.
        detail: String,
        /// The session became `unknown`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        session_unknown: bool,
    },
    /// The activity (microphone, camera, idle, locked) changed; `from` is `null` the first
    /// time a source reports it. `idle_s` is the reading as of the change: it changing alone
    /// is never an event.
    ActivityChanged {
        /// Before (`null` the first time).
        from: Option<Box<Activity>>,
        /// After.
        to: Box<Activity>,
    },
}

impl EventKind {
    /// The snake_case name of the event (the JSON `event` field).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Snapshot { .. } => "snapshot",
            EventKind::ClientStarting => "client_starting",
            EventKind::ClientStarted => "client_started",
            EventKind::SigningIn => "signing_in",
            EventKind::SignedIn { .. } => "signed_in",
            EventKind::StatusChanged { .. } => "status_changed",
            EventKind::ResourceChanged { .. } => "resource_changed",
            EventKind::SigningOut => "signing_out",
            EventKind::SignedOut { .. } => "signed_out",
            EventKind::ClientShutdown => "client_shutdown",
            EventKind::ContactStatusChanged { .. } => "contact_status_changed",
            EventKind::SourceError { .. } => "source_error",
            EventKind::ActivityChanged { .. } => "activity_changed",
        }
    }
}

/// One event of one account, numbered by `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Strictly increasing across all accounts of a tracker; a snapshot carries the seq of the
    /// last event folded into it.
    pub seq: u64,
    /// When the observation that caused it was made.
    pub time: Timestamp,
    /// The account.
    pub account: AccountId,
    /// The account's source.
    pub source: SourceKind,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

impl Event {
    /// The snapshot carried by a `snapshot` event.
    pub fn snapshot(&self) -> Option<&Snapshot> {
        match &self.kind {
            EventKind::Snapshot { snapshot, .. } => Some(snapshot),
            _ => None,
        }
    }
}
