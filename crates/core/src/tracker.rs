//! The sans-IO tracker: observations in, ordered events out.
//!
//! Call order, as in quinn-proto: feed what the sources saw with
//! [`Tracker::handle_observation`] and the passing of time with [`Tracker::handle_timeout`]
//! (when [`Tracker::poll_timeout`] says so), then drain [`Tracker::poll_event`] until it returns
//! `None`. The tracker never reads a clock, spawns or sleeps: `now` is always an argument.
//!
//! The tracker keeps, per account, the *visible* state (exactly the fold of the events it
//! emitted) and the *observed* parts and contacts. After every observation it reconciles the
//! two, emitting events in the order the contract requires:
//!
//! 1. `client_started` before any sign-in while the client was `not_running` (rule 4);
//! 2. the session event (`signing_in`, `signed_in`, `signing_out`, `signed_out`);
//! 3. `status_changed`;
//! 4. `resource_changed` for each part that changed.
//!
//! When the client vanishes, its parts are signed off first, so `signed_out` comes before
//! `client_shutdown` (rule 3). Nothing is emitted when nothing visible changed (rule 2).
//! While the source is down (after `SourceDown`, and before the first `Synced`), the session is
//! `unknown` and part changes are held back: on `Synced` only the real differences are emitted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use crate::activity::{self, ActivitySignal};
use crate::error::ErrorCode;
use crate::event::{
    Contact, Event, EventKind, Resource, SignInResult, SignOutReason, Snapshot, SourceKind,
};
use crate::id::{AccountId, ContactId, PartId};
use crate::mistatus::mistatus;
use crate::observation::Observation;
use crate::person::PersonState;
use crate::state::{Availability, Client, Session, Status};
use crate::time::Timestamp;

/// How long a part may stay `signing_in` before the sign-in counts as timed out, by default.
pub const DEFAULT_SIGN_IN_TIMEOUT: Duration = Duration::from_secs(60);

/// An observation named an account the tracker does not know.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown account `{0}`")]
pub struct UnknownAccount(pub AccountId);

/// Tracks the state of many accounts and numbers their events with one `seq`.
#[derive(Debug)]
pub struct Tracker {
    accounts: Vec<AccountTracker>,
    index: HashMap<AccountId, usize>,
    seq: u64,
    queue: VecDeque<Event>,
    sign_in_timeout: Duration,
    /// Parts with a sign-in deadline, over all accounts: `poll_timeout` is O(1) when none.
    deadlines: usize,
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Tracker {
            accounts: Vec::new(),
            index: HashMap::new(),
            seq: 0,
            queue: VecDeque::new(),
            sign_in_timeout: DEFAULT_SIGN_IN_TIMEOUT,
            deadlines: 0,
        }
    }

    /// Numbers events from `base + 1` instead of 1. A process that restarts should pass
    /// something that grows with time (the hub uses microseconds since the epoch), so that a
    /// `seq` from an earlier run is never mistaken for one of this run when a client resumes.
    pub fn with_seq_base(mut self, base: u64) -> Self {
        self.seq = base;
        self
    }

    /// Sets how long a part may stay `signing_in` before it fails with `timeout`.
    pub fn with_sign_in_timeout(mut self, timeout: Duration) -> Self {
        self.sign_in_timeout = timeout;
        self
    }

    /// Starts tracking an account; its state is unknown until its source reports `Synced`.
    /// Adding a known account again does nothing.
    pub fn add_account(&mut self, account: AccountId, source: SourceKind) {
        if self.index.contains_key(&account) {
            return;
        }
        self.index.insert(account.clone(), self.accounts.len());
        self.accounts.push(AccountTracker::new(account, source));
    }

    /// Starts tracking a person: an account whose state its source decides from its member
    /// `accounts` (listed in its snapshots as `accounts`) and reports whole with
    /// [`Observation::Person`]. Adding a known account again does nothing.
    pub fn add_person(&mut self, account: AccountId, source: SourceKind, accounts: Vec<AccountId>) {
        if self.index.contains_key(&account) {
            return;
        }
        let mut tracker = AccountTracker::new(account.clone(), source);
        tracker.visible.accounts = accounts;
        tracker.person = Some(None);
        self.index.insert(account, self.accounts.len());
        self.accounts.push(tracker);
    }

    /// The tracked accounts, in the order they were added.
    pub fn accounts(&self) -> impl Iterator<Item = &AccountId> {
        self.accounts.iter().map(|a| &a.account)
    }

    /// Feeds one observation of one account.
    pub fn handle_observation(
        &mut self,
        now: Timestamp,
        account: &AccountId,
        observation: Observation,
    ) -> Result<(), UnknownAccount> {
        self.handle_observations(now, account, [observation])
    }

    /// Feeds several observations of one account, in order, as one batch: the same events as
    /// feeding them one by one, but contacts that are new to the account's visible state are
    /// merged into it once at the end of the batch, so a login that brings 100,000 contacts in
    /// any order costs O(n log n) rather than a shift of the sorted list per contact.
    pub fn handle_observations(
        &mut self,
        now: Timestamp,
        account: &AccountId,
        observations: impl IntoIterator<Item = Observation>,
    ) -> Result<(), UnknownAccount> {
        let i = *self
            .index
            .get(account)
            .ok_or_else(|| UnknownAccount(account.clone()))?;
        let mut out = Emitter {
            now,
            seq: &mut self.seq,
            queue: &mut self.queue,
        };
        let account = &mut self.accounts[i];
        let before = account.deadline_count();
        account.batching = true;
        for observation in observations {
            account.observe(now, observation, self.sign_in_timeout, &mut out);
        }
        account.batching = false;
        account.merge_new_contacts();
        self.deadlines = self.deadlines + account.deadline_count() - before;
        debug_assert_eq!(
            self.deadlines,
            self.accounts
                .iter()
                .map(AccountTracker::deadline_count)
                .sum::<usize>(),
            "deadline count out of step"
        );
        Ok(())
    }

    /// Advances time: parts that have been signing in for too long fail with `timeout`.
    pub fn handle_timeout(&mut self, now: Timestamp) {
        if self.deadlines == 0 {
            return;
        }
        for account in &mut self.accounts {
            let expired: Vec<PartId> = account
                .parts
                .iter()
                .filter(|(_, p)| p.deadline.is_some_and(|d| d <= now))
                .map(|(id, _)| id.clone())
                .collect();
            for part in expired {
                let mut out = Emitter {
                    now,
                    seq: &mut self.seq,
                    queue: &mut self.queue,
                };
                account.observe(
                    now,
                    Observation::SignOnFailed(part, ErrorCode::Timeout),
                    self.sign_in_timeout,
                    &mut out,
                );
                self.deadlines -= 1;
            }
        }
    }

    /// The next event, in order; `None` when all are drained.
    pub fn poll_event(&mut self) -> Option<Event> {
        let event = self.queue.pop_front();
        if event.is_none() && self.queue.capacity() > QUEUE_KEEP {
            // A burst (a 5,000-contact roster arrives as 5,000 events at once) must not pin its
            // peak queue (~330 B per event) for the life of the process.
            self.queue.shrink_to(QUEUE_KEEP);
        }
        event
    }

    /// When [`Tracker::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        if self.deadlines == 0 {
            return None;
        }
        self.accounts
            .iter()
            .flat_map(|a| a.parts.values().filter_map(|p| p.deadline))
            .min()
    }

    /// The seq of the last event emitted (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.seq
    }

    /// The current state of an account as a `snapshot` event (its `seq` is the account's last
    /// event).
    pub fn snapshot(&self, account: &AccountId, now: Timestamp) -> Option<Event> {
        let a = &self.accounts[*self.index.get(account)?];
        Some(a.snapshot_event(now, false))
    }

    /// Snapshots of every account, in the order they were added.
    pub fn snapshots(&self, now: Timestamp) -> Vec<Event> {
        self.accounts
            .iter()
            .map(|a| a.snapshot_event(now, false))
            .collect()
    }

    /// Replaces an account's visible state with `snapshot`, as of `time`, whose last event was
    /// `last_seq`: for a process that takes an account over from another (the snapshot is the
    /// one the previous owner published last), and for a mirror that shows state published
    /// elsewhere. The account is then down, as after `SourceDown`: its parts are forgotten,
    /// its contacts are kept as stale (gone ones turn offline on `Synced`), and on the next
    /// `Synced` only the real differences to `snapshot` are emitted. `source_down` is the
    /// error to report from [`Tracker::source_down`] meanwhile. The tracker's own `seq` is not
    /// changed ([`Tracker::set_last_seq`]).
    pub fn restore(
        &mut self,
        account: &AccountId,
        snapshot: Snapshot,
        last_seq: u64,
        time: Timestamp,
        source_down: Option<(ErrorCode, String)>,
    ) -> Result<(), UnknownAccount> {
        let i = *self
            .index
            .get(account)
            .ok_or_else(|| UnknownAccount(account.clone()))?;
        let a = &mut self.accounts[i];
        self.deadlines -= a.deadline_count();
        a.last_input = snapshot
            .activity
            .as_ref()
            .and_then(|act| act.idle_s)
            .map(|s| {
                Timestamp::from_millis(time.as_millis().saturating_sub(s.saturating_mul(1000)))
            });
        a.contacts = snapshot
            .contacts
            .iter()
            .map(|c| {
                let entry = ContactEntry {
                    status: c.status(),
                    stale: true,
                };
                (c.contact.clone(), entry)
            })
            .collect();
        a.parts.clear();
        a.visible = snapshot;
        a.last_seq = last_seq;
        a.down = true;
        a.ever_synced = false;
        a.last_down = source_down;
        a.last_anomaly = None;
        a.quitting = false;
        a.pending_reason = None;
        a.pending_failure = None;
        Ok(())
    }

    /// Sets the seq of the last event: the next event is numbered `seq + 1`. For a mirror that
    /// numbers events itself.
    pub fn set_last_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// Has the account's source reported `Synced` at least once?
    pub fn is_synced(&self, account: &AccountId) -> Option<bool> {
        self.index
            .get(account)
            .map(|&i| self.accounts[i].ever_synced)
    }

    /// The last error that took the account's source down and has not been cleared by a
    /// `Synced` since (e.g. `auth_failed` at start-up).
    pub fn source_down(&self, account: &AccountId) -> Option<(ErrorCode, &str)> {
        let a = &self.accounts[*self.index.get(account)?];
        a.last_down
            .as_ref()
            .filter(|_| a.down)
            .map(|(c, d)| (*c, d.as_str()))
    }
}

/// Whole seconds from the last input to `now`.
fn idle_seconds(last_input: Option<Timestamp>, now: Timestamp) -> Option<u64> {
    last_input.map(|t| now.saturating_since(t).as_secs())
}

/// Queue capacity kept after a burst has been drained.
const QUEUE_KEEP: usize = 64;

/// Appends numbered events to the queue and folds them into the visible state.
struct Emitter<'a> {
    now: Timestamp,
    seq: &'a mut u64,
    queue: &'a mut VecDeque<Event>,
}

impl Emitter<'_> {
    fn emit(&mut self, account: &mut AccountTracker, kind: EventKind) {
        if !account.hold_new_contact(&kind) {
            account.visible.apply(&kind, self.now);
        }
        *self.seq += 1;
        account.last_seq = *self.seq;
        self.queue.push_back(Event {
            seq: *self.seq,
            time: self.now,
            account: account.account.clone(),
            source: account.source.clone(),
            kind,
        });
    }
}

#[derive(Debug, Clone)]
struct Part {
    session: Session,
    status: Status,
    priority: Option<i32>,
    /// Signing in must finish by then.
    deadline: Option<Timestamp>,
    /// Not re-reported since the source went down.
    stale: bool,
}

impl Part {
    fn new() -> Self {
        Part {
            session: Session::SignedOut,
            status: Status::UNKNOWN,
            priority: None,
            deadline: None,
            stale: false,
        }
    }

    fn resource(&self, id: &PartId) -> Resource {
        let shows_status = matches!(self.session, Session::SignedIn | Session::SigningOut);
        Resource {
            resource: id.clone(),
            session: self.session,
            availability: if shows_status {
                self.status.availability
            } else {
                Availability::Offline
            },
            message: if shows_status {
                self.status.message.clone()
            } else {
                None
            },
            priority: self.priority,
        }
    }
}

#[derive(Debug, Clone)]
struct ContactEntry {
    status: Status,
    stale: bool,
}

#[derive(Debug)]
struct AccountTracker {
    account: AccountId,
    source: SourceKind,
    /// Exactly the fold of the events emitted so far.
    visible: Snapshot,
    last_seq: u64,
    parts: BTreeMap<PartId, Part>,
    contacts: BTreeMap<ContactId, ContactEntry>,
    /// The session is unknown and part changes wait for `Synced`.
    down: bool,
    ever_synced: bool,
    last_down: Option<(ErrorCode, String)>,
    last_anomaly: Option<(ErrorCode, String)>,
    quitting: bool,
    pending_reason: Option<SignOutReason>,
    pending_failure: Option<ErrorCode>,
    /// When the last input happened, per the last idle reading: `idle_s` in snapshots counts
    /// from here.
    last_input: Option<Timestamp>,
    /// The source said the account has no sign-in: the session stays as it is (`unknown`).
    no_session: bool,
    /// A call client's own word that the user is in a call ([`ActivitySignal::InCall`]).
    app_in_call: bool,
    /// A person (`Some`), with the state its source last reported (`None` before any).
    person: Option<Option<PersonState>>,
    /// Inside [`Tracker::handle_observations`]: contacts new to `visible` wait in
    /// `new_contacts` until the end of the batch.
    batching: bool,
    /// Contacts emitted during this batch that `visible.contacts` does not hold yet, in
    /// emission order (a contact may appear more than once: the last entry wins).
    new_contacts: Vec<Contact>,
}

impl AccountTracker {
    fn new(account: AccountId, source: SourceKind) -> Self {
        AccountTracker {
            account,
            source,
            visible: Snapshot::unknown(),
            last_seq: 0,
            parts: BTreeMap::new(),
            contacts: BTreeMap::new(),
            down: true,
            ever_synced: false,
            last_down: None,
            last_anomaly: None,
            quitting: false,
            pending_reason: None,
            pending_failure: None,
            last_input: None,
            no_session: false,
            app_in_call: false,
            person: None,
            batching: false,
            new_contacts: Vec::new(),
        }
    }

    /// During a batch, folds a contact's change into `visible` itself when the contact is
    /// there already (in place), or holds it in `new_contacts` when it is not (an insertion
    /// into the sorted list would shift its tail); `false` for every other event.
    fn hold_new_contact(&mut self, kind: &EventKind) -> bool {
        let EventKind::ContactStatusChanged { contact, to, .. } = kind else {
            return false;
        };
        if !self.batching {
            return false;
        }
        let entry = Contact {
            contact: contact.clone(),
            availability: to.availability,
            message: to.message.clone(),
        };
        let contacts = &mut self.visible.contacts;
        match contacts.binary_search_by(|c| c.contact.cmp(contact)) {
            Ok(i) => contacts[i] = entry,
            // After the last one: the list stays sorted.
            Err(i) if i == contacts.len() && self.new_contacts.is_empty() => contacts.push(entry),
            Err(_) => self.new_contacts.push(entry),
        }
        true
    }

    /// Ends a batch: merges `new_contacts` into `visible.contacts` (sorted, the last entry of
    /// each contact winning), in O(n + k log k).
    fn merge_new_contacts(&mut self) {
        if self.new_contacts.is_empty() {
            return;
        }
        let mut new = std::mem::take(&mut self.new_contacts);
        // Stable: a contact's entries stay in emission order; keep the last of each run.
        new.sort_by(|a, b| a.contact.cmp(&b.contact));
        new.reverse();
        new.dedup_by(|later, kept| later.contact == kept.contact);
        new.reverse();
        let old = std::mem::take(&mut self.visible.contacts);
        let mut merged = Vec::with_capacity(old.len() + new.len());
        let mut old = old.into_iter().peekable();
        for entry in new {
            while let Some(o) = old.next_if(|o| o.contact < entry.contact) {
                merged.push(o);
            }
            merged.push(entry);
        }
        merged.extend(old);
        self.visible.contacts = merged;
    }

    fn snapshot_event(&self, now: Timestamp, resync: bool) -> Event {
        let mut snapshot = self.visible.clone();
        if let Some(activity) = &mut snapshot.activity {
            activity.idle_s = idle_seconds(self.last_input, now);
        }
        Event {
            seq: self.last_seq,
            time: now,
            account: self.account.clone(),
            source: self.source.clone(),
            kind: EventKind::Snapshot {
                snapshot: Box::new(snapshot),
                resync,
            },
        }
    }

    /// Folds one desktop signal into the activity; emits `activity_changed` when anything but
    /// the idle reading changed.
    fn observe_activity(&mut self, now: Timestamp, signal: ActivitySignal, out: &mut Emitter<'_>) {
        let from = self.visible.activity.clone();
        let mut to = from.clone().unwrap_or_default();
        match signal {
            ActivitySignal::Microphone(apps) => {
                to.microphone_apps = activity::normalise(apps);
                to.microphone = !to.microphone_apps.is_empty();
            }
            ActivitySignal::Camera(apps) => {
                to.camera_apps = activity::normalise(apps);
                to.camera = !to.camera_apps.is_empty();
            }
            ActivitySignal::Idle { idle, input_ago } => {
                to.idle = idle;
                self.last_input = input_ago.map(|ago| {
                    let ms = u64::try_from(ago.as_millis()).unwrap_or(u64::MAX);
                    Timestamp::from_millis(now.as_millis().saturating_sub(ms))
                });
            }
            ActivitySignal::Locked(locked) => to.locked = locked,
            ActivitySignal::InCall(in_call) => self.app_in_call = in_call,
            ActivitySignal::ScreenSharing(sharing) => to.screen_sharing = sharing,
        }
        to.in_call = to.microphone || to.camera || self.app_in_call;
        to.idle_s = idle_seconds(self.last_input, now);
        if from.as_ref().is_none_or(|f| f.differs_from(&to)) {
            out.emit(
                self,
                EventKind::ActivityChanged {
                    from: from.map(Box::new),
                    to: Box::new(to),
                },
            );
        }
    }

    fn deadline_count(&self) -> usize {
        self.parts.values().filter(|p| p.deadline.is_some()).count()
    }

    fn part(&mut self, id: PartId) -> &mut Part {
        let part = self.parts.entry(id).or_insert_with(Part::new);
        part.stale = false;
        part
    }

    fn observe(
        &mut self,
        now: Timestamp,
        observation: Observation,
        sign_in_timeout: Duration,
        out: &mut Emitter<'_>,
    ) {
        if !matches!(observation, Observation::Anomaly(..)) {
            self.last_anomaly = None;
        }
        match observation {
            Observation::ClientStarting => {
                if !matches!(self.visible.client, Client::Starting | Client::Running) {
                    out.emit(self, EventKind::ClientStarting);
                }
            }
            Observation::ClientAppeared => {
                self.quitting = false;
                if self.visible.client != Client::Running {
                    out.emit(self, EventKind::ClientStarted);
                }
            }
            Observation::ClientQuitting => self.quitting = true,
            Observation::ClientVanished => {
                let reason = if self.quitting {
                    SignOutReason::User
                } else {
                    SignOutReason::ClientExited
                };
                if !self.parts.is_empty() {
                    self.parts.clear();
                    self.pending_reason = Some(reason);
                    self.reconcile(out);
                }
                self.quitting = false;
                if self.visible.client != Client::NotRunning {
                    out.emit(self, EventKind::ClientShutdown);
                }
            }
            Observation::Connecting(id) => {
                let part = self.part(id);
                if part.session != Session::SigningIn {
                    part.session = Session::SigningIn;
                    part.deadline = Some(now.saturating_add(sign_in_timeout));
                }
                self.reconcile(out);
            }
            Observation::SignedOn(id) => {
                let part = self.part(id);
                part.session = Session::SignedIn;
                part.deadline = None;
                self.reconcile(out);
            }
            Observation::SignOnFailed(id, code) => {
                let part = self.part(id);
                part.session = Session::SignedOut;
                part.deadline = None;
                self.pending_failure = Some(code);
                self.reconcile(out);
            }
            Observation::SigningOff(id) => {
                let part = self.part(id);
                if part.session != Session::SignedOut {
                    part.session = Session::SigningOut;
                    part.deadline = None;
                }
                self.reconcile(out);
            }
            Observation::SignedOff(id, reason) => {
                let part = self.part(id);
                part.session = Session::SignedOut;
                part.deadline = None;
                self.pending_reason = Some(reason);
                self.reconcile(out);
            }
            Observation::Absent(id, reason) => {
                if self.parts.remove(&id).is_some() {
                    self.pending_reason = Some(reason);
                }
                self.reconcile(out);
            }
            Observation::Presence {
                part: id,
                status,
                priority,
            } => {
                let part = self.part(id);
                part.session = Session::SignedIn;
                part.deadline = None;
                part.status = status;
                part.priority = priority;
                self.reconcile(out);
            }
            Observation::Status(id, status) => {
                self.part(id).status = status;
                self.reconcile(out);
            }
            Observation::Contact(contact, status) => {
                let entry = self
                    .contacts
                    .entry(contact.clone())
                    .or_insert(ContactEntry {
                        status: Status::UNKNOWN,
                        stale: false,
                    });
                entry.stale = false;
                if entry.status != status {
                    let from = std::mem::replace(&mut entry.status, status.clone());
                    out.emit(
                        self,
                        EventKind::ContactStatusChanged {
                            contact,
                            from,
                            to: status,
                        },
                    );
                }
            }
            Observation::Anomaly(code, detail) => {
                let key = (code, detail);
                if self.last_anomaly.as_ref() != Some(&key) {
                    let (code, detail) = key.clone();
                    self.last_anomaly = Some(key);
                    out.emit(
                        self,
                        EventKind::SourceError {
                            code,
                            detail,
                            session_unknown: false,
                        },
                    );
                }
            }
            Observation::SourceDown(code, detail) => {
                let key = (code, detail);
                if self.down && self.last_down.as_ref() == Some(&key) {
                    return;
                }
                if !self.down {
                    self.down = true;
                    self.parts.values_mut().for_each(|p| p.stale = true);
                    self.contacts.values_mut().for_each(|c| c.stale = true);
                }
                let (code, detail) = key.clone();
                self.last_down = Some(key);
                let session_unknown = self.visible.session != Session::Unknown;
                out.emit(
                    self,
                    EventKind::SourceError {
                        code,
                        detail,
                        session_unknown,
                    },
                );
            }
            Observation::NoSession => self.no_session = true,
            Observation::Person(state) => {
                if let Some(person) = &mut self.person {
                    *person = Some(*state);
                    self.reconcile(out);
                }
            }
            Observation::Activity(signal) => self.observe_activity(now, signal, out),
            Observation::Synced => {
                if !self.down {
                    return;
                }
                self.down = false;
                self.ever_synced = true;
                self.last_down = None;
                let before = self.parts.len();
                self.parts.retain(|_, p| !p.stale);
                if self.parts.len() != before {
                    self.pending_reason.get_or_insert(SignOutReason::Unknown);
                }
                let stale: Vec<ContactId> = self
                    .contacts
                    .iter()
                    .filter(|(_, c)| c.stale)
                    .map(|(id, _)| id.clone())
                    .collect();
                for contact in stale {
                    self.observe(
                        now,
                        Observation::Contact(contact, Status::OFFLINE),
                        sign_in_timeout,
                        out,
                    );
                }
                self.reconcile(out);
            }
        }
    }

    /// The session the parts add up to.
    fn target_session(&self) -> Session {
        let has = |s| self.parts.values().any(|p| p.session == s);
        if has(Session::SignedIn) {
            Session::SignedIn
        } else if has(Session::SigningIn) {
            Session::SigningIn
        } else if has(Session::SigningOut) {
            Session::SigningOut
        } else {
            Session::SignedOut
        }
    }

    /// The status of the best part in `session`: highest priority, then most available, then
    /// first by name.
    fn target_status(&self, session: Session) -> Status {
        if !matches!(session, Session::SignedIn | Session::SigningOut) {
            return Status::OFFLINE;
        }
        let mut best: Option<&Part> = None;
        for part in self.parts.values().filter(|p| p.session == session) {
            let key = |p: &Part| (p.priority.unwrap_or(0), p.status.availability.rank());
            if best.is_none_or(|b| key(part) > key(b)) {
                best = Some(part);
            }
        }
        best.map_or(Status::OFFLINE, |p| p.status.clone())
    }

    /// Emits the events that bring the visible state to what the parts say.
    fn reconcile(&mut self, out: &mut Emitter<'_>) {
        if self.down || self.no_session {
            return;
        }
        if self.person.is_some() {
            return self.reconcile_person(out);
        }
        let session = self.target_session();
        if matches!(session, Session::SigningIn | Session::SignedIn)
            && self.visible.client == Client::NotRunning
        {
            out.emit(self, EventKind::ClientStarted);
        }
        if session != self.visible.session {
            let kind = match session {
                Session::SigningIn => EventKind::SigningIn,
                Session::SignedIn => EventKind::SignedIn {
                    result: SignInResult::Ok,
                },
                Session::SigningOut => EventKind::SigningOut,
                _ => match self.pending_failure {
                    Some(code)
                        if matches!(
                            self.visible.session,
                            Session::SigningIn | Session::Unknown
                        ) =>
                    {
                        EventKind::SignedIn {
                            result: SignInResult::Failed(code),
                        }
                    }
                    _ => EventKind::SignedOut {
                        reason: self.pending_reason.unwrap_or(SignOutReason::Unknown),
                    },
                },
            };
            out.emit(self, kind);
        }
        self.pending_reason = None;
        self.pending_failure = None;

        let status = self.target_status(session);
        if status != self.visible.status() {
            let from = self.visible.status();
            let mistatus = mistatus(session, status.availability);
            out.emit(
                self,
                EventKind::StatusChanged {
                    from,
                    to: status,
                    mistatus,
                    decided_by: None,
                },
            );
        }

        self.reconcile_resources(out);
    }

    /// Emits the events that bring a person's visible state to what its source decided, in
    /// the contract's order: client start, session, one `status_changed` (also when only the
    /// deciding rule changed), client shutdown last and only once no session is active.
    fn reconcile_person(&mut self, out: &mut Emitter<'_>) {
        let Some(Some(p)) = self.person.clone() else {
            return;
        };
        let active = |s: Session| {
            matches!(
                s,
                Session::SigningIn | Session::SignedIn | Session::SigningOut
            )
        };
        let session = match p.session {
            Session::Unknown => self.visible.session,
            s => s,
        };
        match p.client {
            Client::Running if self.visible.client != Client::Running => {
                out.emit(self, EventKind::ClientStarted);
            }
            Client::Starting if self.visible.client != Client::Starting => {
                out.emit(self, EventKind::ClientStarting);
            }
            _ => {}
        }
        if matches!(session, Session::SigningIn | Session::SignedIn)
            && self.visible.client == Client::NotRunning
        {
            out.emit(self, EventKind::ClientStarted);
        }
        if session != self.visible.session {
            let kind = match session {
                Session::SigningIn => EventKind::SigningIn,
                Session::SignedIn => EventKind::SignedIn {
                    result: SignInResult::Ok,
                },
                Session::SigningOut => EventKind::SigningOut,
                _ => EventKind::SignedOut { reason: p.reason },
            };
            out.emit(self, kind);
        }
        let status = match session {
            Session::SignedOut | Session::SigningIn => Status::OFFLINE,
            _ => p.status,
        };
        let decided_by = Some(p.decided_by);
        if status != self.visible.status() || decided_by != self.visible.decided_by {
            let from = self.visible.status();
            let mistatus = mistatus(session, status.availability);
            out.emit(
                self,
                EventKind::StatusChanged {
                    from,
                    to: status,
                    mistatus,
                    decided_by,
                },
            );
        }
        if p.client == Client::NotRunning
            && self.visible.client != Client::NotRunning
            && !active(self.visible.session)
        {
            out.emit(self, EventKind::ClientShutdown);
        }
    }

    fn reconcile_resources(&mut self, out: &mut Emitter<'_>) {
        let mut changes = Vec::new();
        let mut visible = self.visible.resources.iter().peekable();
        let mut target = self.parts.iter().peekable();
        loop {
            match (visible.peek(), target.peek()) {
                (None, None) => break,
                (Some(v), Some((id, part))) if v.resource == **id => {
                    let now = part.resource(id);
                    if **v != now {
                        changes.push((now.resource.clone(), Some((*v).clone()), Some(now)));
                    }
                    visible.next();
                    target.next();
                }
                (Some(v), Some((id, _))) if v.resource < **id => {
                    changes.push((v.resource.clone(), Some((*v).clone()), None));
                    visible.next();
                }
                (Some(v), None) => {
                    changes.push((v.resource.clone(), Some((*v).clone()), None));
                    visible.next();
                }
                (_, Some((id, part))) => {
                    changes.push(((*id).clone(), None, Some(part.resource(id))));
                    target.next();
                }
            }
        }
        for (resource, from, to) in changes {
            out.emit(self, EventKind::ResourceChanged { resource, from, to });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_account_is_an_error_not_a_panic() {
        let mut t = Tracker::new();
        let err = t
            .handle_observation(
                Timestamp::from_millis(0),
                &AccountId::new("nobody"),
                Observation::Synced,
            )
            .expect_err("unknown");
        assert_eq!(err, UnknownAccount(AccountId::new("nobody")));
    }

    /// Observations for a batch: contacts (drawn from a small pool, so they repeat and change),
    /// the source going down and syncing again, a resource.
    fn batch_observation() -> impl proptest::strategy::Strategy<Value = Observation> {
        use proptest::prelude::*;
        let availability = prop_oneof![
            Just(crate::Availability::Available),
            Just(crate::Availability::Away),
            Just(crate::Availability::Offline),
        ];
        prop_oneof![
            8 => (0u16..40, availability, proptest::option::of("[a-c]{0,2}")).prop_map(
                |(c, a, m)| {
                    let status = match m {
                        Some(m) => Status::with_message(a, m),
                        None => Status::new(a),
                    };
                    Observation::Contact(ContactId::new(format!("c{c:02}@x.test")), status)
                }
            ),
            1 => Just(Observation::Synced),
            1 => Just(Observation::SourceDown(ErrorCode::Disconnected, "gone".into())),
            1 => Just(Observation::Presence {
                part: PartId::new("desk"),
                status: Status::new(crate::Availability::Away),
                priority: None,
            }),
        ]
    }

    proptest::proptest! {
        /// A batch emits exactly the events and leaves exactly the snapshot that the same
        /// observations fed one by one do, and the snapshot's contacts stay sorted, one entry
        /// each (the held-back new contacts are merged at the end of the batch).
        #[test]
        fn a_batch_equals_its_observations_one_by_one(
            batches in proptest::collection::vec(
                proptest::collection::vec(batch_observation(), 0..60), 1..5),
        ) {
            let account = AccountId::new("a");
            let now = Timestamp::from_millis(1_000);
            let mut one = Tracker::new();
            let mut all = Tracker::new();
            one.add_account(account.clone(), SourceKind::new_static("test"));
            all.add_account(account.clone(), SourceKind::new_static("test"));
            // The contract's reference: the plain fold of every event, one at a time.
            let mut folded = Snapshot::unknown();
            for batch in batches {
                for o in batch.clone() {
                    one.handle_observation(now, &account, o).expect("known");
                }
                all.handle_observations(now, &account, batch).expect("known");
                let events = |t: &mut Tracker| {
                    std::iter::from_fn(|| t.poll_event()).map(|e| (e.seq, e.kind)).collect::<Vec<_>>()
                };
                let batched = events(&mut all);
                proptest::prop_assert_eq!(events(&mut one), batched.clone());
                for (_, kind) in &batched {
                    folded.apply(kind, now);
                }
                let snap = |t: &Tracker| t.snapshot(&account, now).and_then(|e| e.snapshot().cloned());
                let (a, b) = (snap(&one), snap(&all));
                proptest::prop_assert_eq!(&a, &b);
                proptest::prop_assert_eq!(Some(&folded), b.as_ref());
                let contacts = b.map(|s| s.contacts).unwrap_or_default();
                proptest::prop_assert!(contacts.windows(2).all(|w| w[0].contact < w[1].contact));
            }
        }
    }

    #[test]
    fn a_restored_account_emits_only_real_differences_after_synced() {
        use crate::event::Contact;
        let account = AccountId::new("a");
        let now = Timestamp::from_millis(10_000);
        // The previous owner's state: signed in, away "lunch" on `desk`, bob available.
        let mut before = Tracker::new();
        before.add_account(account.clone(), SourceKind::new_static("test"));
        let away = Status::with_message(crate::Availability::Away, "lunch");
        let bob = ContactId::new("bob@example.test");
        for o in [
            Observation::ClientAppeared,
            Observation::Presence {
                part: PartId::new("desk"),
                status: away.clone(),
                priority: Some(5),
            },
            Observation::Contact(bob.clone(), Status::new(crate::Availability::Available)),
            Observation::Synced,
        ] {
            before.handle_observation(now, &account, o).expect("known");
        }
        while before.poll_event().is_some() {}
        let snap = before.snapshot(&account, now).expect("snapshot");
        let state = snap.snapshot().expect("a snapshot").clone();

        let mut t = Tracker::new();
        t.add_account(account.clone(), SourceKind::new_static("test"));
        t.restore(&account, state.clone(), 42, now, None)
            .expect("known");
        assert_eq!(t.snapshot(&account, now).map(|e| e.seq), Some(42));
        assert_eq!(
            t.snapshot(&account, now)
                .and_then(|e| e.snapshot().cloned()),
            Some(state.clone())
        );
        assert_eq!(t.is_synced(&account), Some(false));
        t.set_last_seq(100);
        // The new owner's source sees the same, plus bob went away, and syncs.
        for o in [
            Observation::SourceDown(ErrorCode::Disconnected, "taking over".into()),
            Observation::ClientAppeared,
            Observation::Presence {
                part: PartId::new("desk"),
                status: away.clone(),
                priority: Some(5),
            },
            Observation::Contact(bob.clone(), Status::new(crate::Availability::Away)),
            Observation::Synced,
        ] {
            t.handle_observation(now, &account, o).expect("known");
        }
        let kinds: Vec<(u64, EventKind)> = std::iter::from_fn(|| t.poll_event())
            .map(|e| (e.seq, e.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (
                    101,
                    EventKind::SourceError {
                        code: ErrorCode::Disconnected,
                        detail: "taking over".into(),
                        session_unknown: true
                    }
                ),
                (
                    102,
                    EventKind::ContactStatusChanged {
                        contact: bob.clone(),
                        from: Status::new(crate::Availability::Available),
                        to: Status::new(crate::Availability::Away),
                    }
                ),
                (
                    103,
                    EventKind::SignedIn {
                        result: SignInResult::Ok
                    }
                ),
            ]
        );
        let after = t.snapshot(&account, now).expect("snapshot");
        let after = after.snapshot().expect("a snapshot");
        assert_eq!(after.resources, state.resources);
        assert_eq!(
            after.contacts,
            vec![Contact {
                contact: bob,
                availability: crate::Availability::Away,
                message: None
            }]
        );
    }

    #[test]
    fn a_drained_burst_does_not_keep_its_queue() {
        let mut t = Tracker::new();
        let account = AccountId::new("a");
        t.add_account(account.clone(), SourceKind::new_static("test"));
        let now = Timestamp::from_millis(0);
        for i in 0..5_000 {
            let contact = ContactId::new(format!("c{i}@example.test"));
            let status = Status::new(crate::Availability::Available);
            t.handle_observation(now, &account, Observation::Contact(contact, status))
                .expect("known account");
        }
        assert!(t.queue.capacity() >= 5_000);
        let mut drained = 0;
        while t.poll_event().is_some() {
            drained += 1;
        }
        assert_eq!(drained, 5_000);
        assert!(t.queue.capacity() <= QUEUE_KEEP, "{}", t.queue.capacity());
    }
}
