//! A person: several accounts (and optionally a desktop's signals) combined into one answer.
//!
//! A person is an account like any other to every consumer; its source computes its state from
//! its *members* with one written rule (`docs/person.md`), in two layers:
//!
//! - [`decide`] is the rule itself, a pure function of what each member shows, which of their
//!   status changes were the user's own choices, and the signals' activity. It is what the
//!   property tests check rule by rule.
//! - [`Person`] is the sans-IO bookkeeping around it: it folds the members' events into their
//!   snapshots, tells the user's status changes from the echoes of imstatus's own writes (each
//!   write is remembered, at most one per member, for [`ECHO_WINDOW`]), and plans the writes of
//!   `sync`: when rule 1 or 3 decides, it sets that status on the synced members and puts each
//!   one's previous status back when the rule stops applying, unless the user changed that
//!   member in between. Like the [`Tracker`](crate::Tracker) it never reads a clock and does no
//!   I/O: the source feeds it events and the time, reports [`Person::state`] as an
//!   [`Observation::Person`](crate::Observation::Person), and performs the [`Write`]s it plans.
//!
//! While imstatus holds a member at a status of its own (or is putting the previous one back),
//! the rule reads that member as the user has it, i.e. with its previous status: so the end of
//! a call goes straight from `busy` to the user's status, never through the imstatus-written
//! status that the members still show for a moment.

use std::time::Duration;

use crate::activity::Activity;
pub use crate::decision::{DecidedBy, Rule, Signal};
use crate::error::{CodedError, ErrorCode};
use crate::event::{Event, EventKind, SignOutReason, Snapshot};
use crate::id::AccountId;
use crate::state::{Availability, Client, Session, Status};
use crate::time::Timestamp;

/// The message of the status rule 1 sets, unless the user chose a busy status with a message.
pub const IN_A_CALL: &str = "In a call";

/// How long a write of imstatus's stays recognisable: a change of a member to the status
/// imstatus wrote within this time is the write coming back, not the user.
pub const ECHO_WINDOW: Duration = Duration::from_secs(10);

/// A status the user chose on a member, and when, as an ever-growing order (larger is later).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choice {
    /// The status chosen.
    pub status: Status,
    /// Its place among all choices of the person (larger is more recent).
    pub order: u64,
}

/// One member as the rule reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// The member account.
    pub account: AccountId,
    /// Its client.
    pub client: Client,
    /// Its session.
    pub session: Session,
    /// Its status as the user has it (while imstatus holds it at a status of its own: the
    /// status it had before).
    pub status: Status,
    /// The user's most recent choice on it during its current session.
    pub choice: Option<Choice>,
}

/// The desktop signals as the rule reads them.
#[derive(Clone, Copy, Debug)]
pub struct Signals<'a> {
    /// The signals account.
    pub account: &'a AccountId,
    /// Its activity.
    pub activity: &'a Activity,
}

/// A person's state as the rule decides it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Running if any member's client runs or any member is signed in (or signing in or
    /// out); else starting if any member's is; unknown only if every member's is unknown;
    /// otherwise not running.
    pub client: Client,
    /// Signed in if any member is; else signing in, else signing out if any member is;
    /// unknown only if every member's session is unknown; otherwise signed out.
    pub session: Session,
    /// The status of the first rule that applies.
    pub status: Status,
    /// Which rule that was.
    pub decided_by: DecidedBy,
}

/// The rule of `docs/person.md`: client, session, and status by the first rule that applies.
///
/// 1. On a call (the signals' microphone or camera) → `busy` "In a call", or the user's own
///    message when their latest choice is a busy status with one.
/// 2. The user's latest choice on a signed-in member, unless it is `available` or `chatty`
///    (choosing available hands the decision back to rules 3 and 4, as libpurple's own
///    auto-away does).
/// 3. The screen locked, else the user idle → `away`.
/// 4. The most available signed-in member (ties: the latest user choice, then member order).
///
/// Rules 1 to 3 apply only while the person is signed in; signed out, signing in or unknown
/// the status is `offline` (`unknown` for an unknown session) and rule 4 is named.
pub fn decide(members: &[Member], signals: Option<Signals<'_>>) -> Decision {
    let client = client_of(members);
    let session = session_of(members);
    let (status, decided_by) = match session {
        Session::SignedIn => status_signed_in(members, signals),
        Session::SigningOut => most_available(members, Session::SigningOut),
        Session::Unknown => (
            Status::UNKNOWN,
            DecidedBy::new(Rule::MostAvailable, None, None),
        ),
        Session::SignedOut | Session::SigningIn => (
            Status::OFFLINE,
            DecidedBy::new(Rule::MostAvailable, None, None),
        ),
    };
    Decision {
        client,
        session,
        status,
        decided_by,
    }
}

fn active(session: Session) -> bool {
    matches!(
        session,
        Session::SigningIn | Session::SignedIn | Session::SigningOut
    )
}

fn client_of(members: &[Member]) -> Client {
    if members
        .iter()
        .any(|m| m.client == Client::Running || active(m.session))
    {
        Client::Running
    } else if members.iter().any(|m| m.client == Client::Starting) {
        Client::Starting
    } else if members.iter().all(|m| m.client == Client::Unknown) {
        Client::Unknown
    } else {
        Client::NotRunning
    }
}

fn session_of(members: &[Member]) -> Session {
    let has = |s| members.iter().any(|m| m.session == s);
    if has(Session::SignedIn) {
        Session::SignedIn
    } else if has(Session::SigningIn) {
        Session::SigningIn
    } else if has(Session::SigningOut) {
        Session::SigningOut
    } else if members.iter().all(|m| m.session == Session::Unknown) {
        Session::Unknown
    } else {
        Session::SignedOut
    }
}

/// The latest user choice among members in `session`, with its member.
fn latest_choice(members: &[Member], session: Session) -> Option<(&Member, &Choice)> {
    members
        .iter()
        .filter(|m| m.session == session)
        .filter_map(|m| m.choice.as_ref().map(|c| (m, c)))
        .max_by_key(|(_, c)| c.order)
}

fn status_signed_in(members: &[Member], signals: Option<Signals<'_>>) -> (Status, DecidedBy) {
    let latest = latest_choice(members, Session::SignedIn);
    let on_call = |a: &Activity| a.in_call || a.microphone || a.camera;
    if let Some(s) = signals.filter(|s| on_call(s.activity)) {
        let signal = if s.activity.microphone {
            Signal::Microphone
        } else {
            Signal::Camera
        };
        let status = match latest {
            Some((_, c))
                if c.status.availability == Availability::Busy && c.status.message.is_some() =>
            {
                c.status.clone()
            }
            _ => Status::with_message(Availability::Busy, IN_A_CALL),
        };
        return (
            status,
            DecidedBy::new(Rule::Call, Some(s.account), Some(signal)),
        );
    }
    if let Some((m, c)) = latest.filter(|(_, c)| !hands_back(c.status.availability)) {
        return (
            c.status.clone(),
            DecidedBy::new(Rule::User, Some(&m.account), None),
        );
    }
    if let Some(s) = signals {
        let signal = if s.activity.locked {
            Some(Signal::Locked)
        } else if s.activity.idle {
            Some(Signal::Idle)
        } else {
            None
        };
        if let Some(signal) = signal {
            return (
                Status::new(Availability::Away),
                DecidedBy::new(Rule::Away, Some(s.account), Some(signal)),
            );
        }
    }
    most_available(members, Session::SignedIn)
}

/// A status a member can be signed in with (not offline, not unknown).
fn known(s: &Status) -> bool {
    !matches!(
        s.availability,
        Availability::Offline | Availability::Unknown
    )
}

/// A choice of this availability hands the decision back to rules 3 and 4.
fn hands_back(a: Availability) -> bool {
    matches!(a, Availability::Available | Availability::Chatty)
}

fn most_available(members: &[Member], session: Session) -> (Status, DecidedBy) {
    let mut best: Option<&Member> = None;
    let key = |m: &Member| {
        (
            m.status.availability.rank(),
            m.choice.as_ref().map(|c| c.order),
        )
    };
    for m in members.iter().filter(|m| m.session == session) {
        if best.is_none_or(|b| key(m) > key(b)) {
            best = Some(m);
        }
    }
    match best {
        Some(m) => (
            m.status.clone(),
            DecidedBy::new(Rule::MostAvailable, Some(&m.account), None),
        ),
        None => (
            Status::OFFLINE,
            DecidedBy::new(Rule::MostAvailable, None, None),
        ),
    }
}

/// What a person's source reports: its decision and, for a sign-out, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PersonState {
    /// The client axis.
    pub client: Client,
    /// The session axis; never `unknown` (the source reports itself down instead).
    pub session: Session,
    /// The status.
    pub status: Status,
    /// Which rule gave the status.
    pub decided_by: DecidedBy,
    /// Why the person is signed out, when it is: the reason of the member whose sign-out
    /// ended it.
    pub reason: SignOutReason,
}

/// A write `sync` asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// The member to set.
    pub account: AccountId,
    /// The status to set.
    pub status: Status,
    /// Setting the rule's status, or putting the member's previous one back.
    pub kind: WriteKind,
}

/// Why a [`Write`] is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// Rule 1 or 3 decides: the member gets its status.
    Impose,
    /// The rule no longer applies: the member gets back what it had before.
    Restore,
}

/// imstatus holds a synced member at the rule's status.
#[derive(Clone, Debug)]
struct Imposed {
    /// What the member had before imstatus's first write.
    previous: Status,
    /// What imstatus wrote last.
    wrote: Status,
    /// The user changed the member since: never written again, never restored.
    overridden: bool,
    /// The previous status is being put back (until its echo, or the window's end).
    restoring: bool,
}

#[derive(Clone, Debug)]
struct MemberState {
    account: AccountId,
    snapshot: Snapshot,
    choice: Option<Choice>,
    imposed: Option<Imposed>,
    /// The last error its source reported while its session was unknown.
    down: Option<(ErrorCode, String)>,
    /// A status its source failed to take: not tried again while the rule asks for it.
    refused: Option<Status>,
}

impl MemberState {
    fn view(&self) -> Member {
        let status = match &self.imposed {
            Some(i) if !i.overridden => i.previous.clone(),
            _ => self.snapshot.status(),
        };
        Member {
            account: self.account.clone(),
            client: self.snapshot.client,
            session: self.snapshot.session,
            status,
            choice: self.choice.clone(),
        }
    }
}

/// A write of imstatus's, remembered for the echo window.
#[derive(Clone, Debug)]
struct Pending {
    account: AccountId,
    status: Status,
    at: Timestamp,
    /// Its own member has reported it back.
    seen: bool,
}

/// The bookkeeping of one person: members' state, the user's choices, imstatus's writes.
///
/// Call order: [`Person::handle_event`] for every event of a member or of the signals account
/// (a whole batch of them), then [`Person::state`] to report and [`Person::poll_writes`] for
/// the writes `sync` needs now; report each write that failed with
/// [`Person::handle_write_failed`].
#[derive(Clone, Debug)]
pub struct Person {
    members: Vec<MemberState>,
    signals: Option<(AccountId, Snapshot)>,
    sync: Vec<AccountId>,
    pending: Vec<Pending>,
    order: u64,
    reason: SignOutReason,
    echo_window: Duration,
}

impl Person {
    /// A person of `members` (in config order), with a signals account and the members whose
    /// status `sync` sets (names that are not members are ignored).
    pub fn new(members: Vec<AccountId>, signals: Option<AccountId>, sync: Vec<AccountId>) -> Self {
        let sync = sync.into_iter().filter(|s| members.contains(s)).collect();
        Person {
            members: members
                .into_iter()
                .map(|account| MemberState {
                    account,
                    snapshot: Snapshot::unknown(),
                    choice: None,
                    imposed: None,
                    down: None,
                    refused: None,
                })
                .collect(),
            signals: signals.map(|a| (a, Snapshot::unknown())),
            sync,
            pending: Vec::new(),
            order: 0,
            reason: SignOutReason::Unknown,
            echo_window: ECHO_WINDOW,
        }
    }

    /// Sets how long a write stays recognisable (default [`ECHO_WINDOW`]).
    pub fn with_echo_window(mut self, window: Duration) -> Self {
        self.echo_window = window;
        self
    }

    /// The accounts whose events this person needs: its members, then its signals account.
    pub fn accounts(&self) -> Vec<AccountId> {
        let mut v: Vec<AccountId> = self.members.iter().map(|m| m.account.clone()).collect();
        if let Some((s, _)) = &self.signals {
            if !v.contains(s) {
                v.push(s.clone());
            }
        }
        v
    }

    /// Folds one event of a member or of the signals account (others are ignored); the same
    /// as a batch of one.
    pub fn handle_event(&mut self, now: Timestamp, event: &Event) {
        self.handle_events(now, std::iter::once(event));
    }

    /// Folds a batch of events of the members and the signals account (others are ignored).
    ///
    /// A member's status change is the user's choice when one of its parts (an XMPP resource,
    /// a libpurple account) that stayed signed in changed its status, to a status that is
    /// not one of imstatus's writes coming back (for a member without parts, its own status
    /// change counts). Parts signing in or out, and a member's status moving only because
    /// of them, are nobody's choice. A write is recognised once on its own member (its next
    /// matching change), and for its whole window on the other members, which see it through
    /// a client they both watch (finch signed in to the XMPP account of another member).
    pub fn handle_events<'a>(
        &mut self,
        now: Timestamp,
        events: impl IntoIterator<Item = &'a Event>,
    ) {
        self.expire(now);
        // Per member touched by the batch: the statuses its parts changed to, whether it has
        // parts that changed at all, and its own status change.
        let mut batch: Vec<(usize, Vec<Status>, bool, Option<Status>)> = Vec::new();
        for event in events {
            // Contacts' presences are not the person's: the rule reads its members' sessions,
            // statuses and resources and the signals' activity (hence `apply_own` below).
            if matches!(event.kind, EventKind::ContactStatusChanged { .. }) {
                continue;
            }
            if let Some((account, snapshot)) = &mut self.signals {
                if *account == event.account {
                    snapshot.apply_own(&event.kind, event.time);
                }
            }
            let Some(i) = self.members.iter().position(|m| m.account == event.account) else {
                continue;
            };
            let at = match batch.iter().position(|b| b.0 == i) {
                Some(at) => at,
                None => {
                    batch.push((i, Vec::new(), false, None));
                    batch.len() - 1
                }
            };
            let before = self.members[i].snapshot.session;
            self.members[i].snapshot.apply_own(&event.kind, event.time);
            match &event.kind {
                EventKind::SignedOut { reason } => self.reason = *reason,
                EventKind::SourceError {
                    code,
                    detail,
                    session_unknown,
                } if *session_unknown || self.members[i].snapshot.session == Session::Unknown => {
                    self.members[i].down = Some((*code, detail.clone()));
                }
                EventKind::StatusChanged { from, to, .. }
                    if before == Session::SignedIn && from != to && known(from) && known(to) =>
                {
                    batch[at].3 = Some(to.clone());
                }
                EventKind::ResourceChanged { from, to, .. } => {
                    batch[at].2 = true;
                    if let (Some(f), Some(t)) = (from, to) {
                        let (fs, ts) = (f.status(), t.status());
                        if f.session == Session::SignedIn
                            && t.session == Session::SignedIn
                            && fs != ts
                            && known(&fs)
                            && known(&ts)
                        {
                            batch[at].1.push(ts);
                        }
                    }
                }
                _ => {}
            }
            let m = &mut self.members[i];
            if m.snapshot.session != Session::Unknown {
                m.down = None;
            }
            if !matches!(m.snapshot.session, Session::SignedIn | Session::Unknown) {
                // A member's choices and imstatus's hold end with its session.
                m.choice = None;
                m.imposed = None;
                let account = m.account.clone();
                self.pending.retain(|p| p.account != account);
            }
        }
        for (i, parts, has_parts, own) in batch {
            if self.members[i].snapshot.session != Session::SignedIn {
                continue;
            }
            let changed = if has_parts {
                parts
            } else {
                own.into_iter().collect()
            };
            let account = self.members[i].account.clone();
            let mut choice = None;
            let mut echoed = Vec::new();
            for status in changed {
                let own = self
                    .pending
                    .iter()
                    .any(|p| p.account == account && p.status == status && !p.seen);
                let other = self
                    .pending
                    .iter()
                    .any(|p| p.account != account && p.status == status);
                if own {
                    echoed.push(status);
                } else if !other {
                    choice = Some(status);
                }
            }
            for p in &mut self.pending {
                if p.account == account && echoed.contains(&p.status) {
                    p.seen = true;
                }
            }
            let m = &mut self.members[i];
            if !echoed.is_empty()
                && m.imposed
                    .as_ref()
                    .is_some_and(|x| x.restoring && !x.overridden)
            {
                m.imposed = None;
            }
            if let Some(status) = choice {
                self.order += 1;
                m.choice = Some(Choice {
                    status,
                    order: self.order,
                });
                if let Some(imposed) = &mut m.imposed {
                    // The user's change wins: imstatus expects nothing more of this member
                    // (a write of its still on the way counts as the user's when it lands:
                    // it is what the member then shows).
                    imposed.overridden = true;
                    self.pending.retain(|p| p.account != account);
                }
            }
        }
    }

    /// Forgets writes older than the echo window; a restore whose echo never came is over.
    fn expire(&mut self, now: Timestamp) {
        let window = self.echo_window;
        self.pending
            .retain(|p| now.saturating_since(p.at) <= window);
        for m in &mut self.members {
            // A hold the user overrode stays until the rule lets go (`poll_writes`).
            let restoring = m
                .imposed
                .as_ref()
                .is_some_and(|i| i.restoring && !i.overridden);
            if restoring
                && !self
                    .pending
                    .iter()
                    .any(|p| p.account == m.account && !p.seen)
            {
                m.imposed = None;
            }
        }
    }

    /// The members as the rule reads them.
    pub fn members(&self) -> Vec<Member> {
        self.members.iter().map(MemberState::view).collect()
    }

    /// The rule's decision now.
    pub fn decide(&self) -> Decision {
        let members = self.members();
        let signals = self.signals.as_ref().and_then(|(account, s)| {
            s.activity
                .as_ref()
                .map(|activity| Signals { account, activity })
        });
        decide(&members, signals)
    }

    /// What the person's source reports now: its state, or why no member's session is known
    /// (then it reports itself down with that error: the first member's own error, or
    /// `unsupported` when no member has a sign-in at all, as a person of desktop accounts).
    pub fn state(&self) -> Result<PersonState, CodedError> {
        let d = self.decide();
        if d.session == Session::Unknown {
            let why: Vec<String> = self
                .members
                .iter()
                .map(|m| match &m.down {
                    Some((code, detail)) => format!("{}: {code}: {detail}", m.account),
                    None => format!("{}: session unknown", m.account),
                })
                .collect();
            let code = self
                .members
                .iter()
                .find_map(|m| m.down.as_ref().map(|(c, _)| *c))
                .unwrap_or(ErrorCode::Unsupported);
            return Err(CodedError::new(
                code,
                format!("no member's session is known ({})", why.join("; ")),
            ));
        }
        Ok(PersonState {
            client: d.client,
            session: d.session,
            status: d.status,
            decided_by: d.decided_by,
            reason: self.reason,
        })
    }

    /// The writes `sync` needs now, each remembered (as of `now`) so that its echo is not
    /// taken for the user's.
    pub fn poll_writes(&mut self, now: Timestamp) -> Vec<Write> {
        self.expire(now);
        let d = self.decide();
        let target = (d.session == Session::SignedIn
            && matches!(d.decided_by.rule, Rule::Call | Rule::Away))
        .then_some(d.status);
        let mut writes = Vec::new();
        for account in &self.sync {
            let Some(m) = self.members.iter_mut().find(|m| m.account == *account) else {
                continue;
            };
            let signed_in = m.snapshot.session == Session::SignedIn;
            if m.refused.is_some() && m.refused.as_ref() != target.as_ref() {
                m.refused = None;
            }
            match (&target, &mut m.imposed) {
                (Some(t), None) => {
                    if signed_in && m.snapshot.status() != *t && m.refused.as_ref() != Some(t) {
                        m.imposed = Some(Imposed {
                            previous: m.snapshot.status(),
                            wrote: t.clone(),
                            overridden: false,
                            restoring: false,
                        });
                        writes.push(Write {
                            account: account.clone(),
                            status: t.clone(),
                            kind: WriteKind::Impose,
                        });
                    }
                }
                (Some(t), Some(i)) => {
                    if signed_in && !i.overridden && (i.restoring || i.wrote != *t) {
                        i.wrote = t.clone();
                        i.restoring = false;
                        writes.push(Write {
                            account: account.clone(),
                            status: t.clone(),
                            kind: WriteKind::Impose,
                        });
                    }
                }
                (None, Some(i)) => {
                    if i.overridden {
                        m.imposed = None;
                    } else if !i.restoring {
                        i.restoring = true;
                        writes.push(Write {
                            account: account.clone(),
                            status: i.previous.clone(),
                            kind: WriteKind::Restore,
                        });
                    }
                }
                (None, None) => {}
            }
        }
        for w in &writes {
            self.pending.retain(|p| p.account != w.account);
            self.pending.push(Pending {
                account: w.account.clone(),
                status: w.status.clone(),
                at: now,
                seen: false,
            });
        }
        writes
    }

    /// A write failed: nothing of it will come back, and there is nothing to put back. A
    /// status a member failed to take is not written to it again while the rule asks for
    /// that status (no retry on every event).
    pub fn handle_write_failed(&mut self, write: &Write) {
        self.pending.retain(|p| p.account != write.account);
        if let Some(m) = self.members.iter_mut().find(|m| m.account == write.account) {
            m.imposed = None;
            if write.kind == WriteKind::Impose {
                m.refused = Some(write.status.clone());
            }
        }
    }

    /// Is imstatus holding `account` at a status of its own (or putting its previous one
    /// back)?
    pub fn holds(&self, account: &AccountId) -> bool {
        self.members
            .iter()
            .any(|m| m.account == *account && m.imposed.is_some())
    }

    /// How many writes are remembered (at most one per synced member).
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, session: Session, status: Status) -> Member {
        Member {
            account: AccountId::new(name),
            client: Client::Unknown,
            session,
            status,
            choice: None,
        }
    }

    #[test]
    fn contacts_change_nothing_and_are_not_kept() {
        use crate::id::{ContactId, PartId};
        use crate::observation::Observation;
        use crate::tracker::Tracker;
        use crate::SourceKind;

        let alice = AccountId::new("alice");
        let mut tracker = Tracker::new();
        tracker.add_account(alice.clone(), SourceKind::new_static("xmpp"));
        let away = Status::with_message(Availability::Away, "out");
        let mut with = Person::new(vec![alice.clone()], None, vec![alice.clone()]);
        let mut without = Person::new(vec![alice.clone()], None, vec![alice.clone()]);
        let batches = [
            vec![
                Observation::presence(PartId::new("desk"), away.clone()),
                Observation::Contact(ContactId::new("b@x"), away.clone()),
                Observation::Contact(ContactId::new("a@x"), Status::new(Availability::Available)),
                Observation::Synced,
            ],
            vec![Observation::Contact(ContactId::new("a@x"), away.clone())],
            vec![Observation::presence(
                PartId::new("desk"),
                Status::new(Availability::Available),
            )],
        ];
        let mut contacts = 0;
        for (n, batch) in batches.into_iter().enumerate() {
            let now = Timestamp::from_millis(1_000 + n as u64);
            tracker
                .handle_observations(now, &alice, batch)
                .expect("known account");
            let mut events: Vec<Event> = std::iter::from_fn(|| tracker.poll_event()).collect();
            if n == 0 {
                // A snapshot that carries contacts, as a subscription's first event does.
                events.extend(tracker.snapshots(now));
            }
            with.handle_events(now, &events);
            events.retain(|e| !matches!(e.kind, EventKind::ContactStatusChanged { .. }));
            contacts += events
                .iter()
                .filter(|e| match &e.kind {
                    EventKind::Snapshot { snapshot, .. } => !snapshot.contacts.is_empty(),
                    _ => false,
                })
                .count();
            without.handle_events(now, &events);
            assert_eq!(with.members(), without.members(), "after batch {n}");
            assert_eq!(with.decide(), without.decide(), "after batch {n}");
            assert!(with.members.iter().all(|m| m.snapshot.contacts.is_empty()));
        }
        assert_eq!(contacts, 1, "the snapshot fed in carried the contacts");
        assert_eq!(
            with.members()[0].status,
            Status::new(Availability::Available)
        );
    }

    #[test]
    fn decided_by_reads_and_serialises_as_documented() {
        let d = DecidedBy::new(
            Rule::Call,
            Some(&AccountId::new("desk")),
            Some(Signal::Microphone),
        );
        assert_eq!(d.to_string(), "call (desk: microphone)");
        assert_eq!(
            serde_json::to_value(&d).expect("serialise"),
            serde_json::json!({"rule": "call", "account": "desk", "signal": "microphone"})
        );
        let d = DecidedBy::new(Rule::MostAvailable, None, None);
        assert_eq!(d.to_string(), "most_available");
        assert_eq!(
            serde_json::to_value(&d).expect("serialise"),
            serde_json::json!({"rule": "most_available"})
        );
    }

    #[test]
    fn a_member_signed_in_with_an_unseen_client_makes_the_client_running() {
        let mut purple = member("desktop", Session::SignedOut, Status::OFFLINE);
        purple.client = Client::NotRunning;
        let xmpp = member(
            "alice",
            Session::SignedIn,
            Status::new(Availability::Available),
        );
        let d = decide(&[purple.clone(), xmpp.clone()], None);
        assert_eq!((d.client, d.session), (Client::Running, Session::SignedIn));
        let mut offline = xmpp;
        offline.session = Session::SignedOut;
        let d = decide(&[purple, offline], None);
        assert_eq!(
            (d.client, d.session, d.status),
            (Client::NotRunning, Session::SignedOut, Status::OFFLINE)
        );
    }
}
