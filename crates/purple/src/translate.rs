//! The sans-IO translation from libpurple's signals and query answers to observations.
//!
//! [`Translator`] keeps what the source knows about the running client: its unique bus name,
//! each account handle's username and connection state, connection-handle to account
//! mappings, the last connection error of each account, the saved statuses it has read and
//! which one is current. It never calls D-Bus itself: when a signal needs something it does not
//! know (the username behind a new account handle, the account behind a connection handle, a
//! saved status it has not read) it says so with a [`Need`]; the driver asks libpurple and
//! feeds the answer back before the next signal. What will probably be needed soon (a saved
//! status just created or changed, the account of a connection that just signed on) is a
//! [`Prefetch`]: asked in the background, handed in whenever it comes.
//!
//! Positions (`P`, zbus's receive sequence in the driver, plain numbers in tests) make the
//! initial query race-free: match rules are installed before the query, so a signal can arrive
//! that the query's answer already reflects. A state signal received *before* the earliest
//! answer that read that state is stale and skipped; every later one is applied in order, which
//! is idempotent for the answers in between (each signal sets an absolute state).

use std::collections::HashMap;

use imstatus_core::{ErrorCode, Observation, PartId, SignOutReason, Status};

use crate::signal::{Signal, DBUS_NAME, PURPLE_SERVICE};

/// libpurple's `PurpleConnectionError` codes the source distinguishes.
mod code {
    pub const NETWORK: i32 = 0;
    pub const INVALID_USERNAME: i32 = 1;
    pub const AUTHENTICATION_FAILED: i32 = 2;
    pub const AUTHENTICATION_IMPOSSIBLE: i32 = 3;
    pub const NO_SSL_SUPPORT: i32 = 4;
    pub const ENCRYPTION_ERROR: i32 = 5;
    pub const NAME_IN_USE: i32 = 6;
    pub const CERT_FIRST: i32 = 8;
    pub const CERT_LAST: i32 = 15;
}

/// The text libpurple's XMPP plugin gives a `<system-shutdown/>` stream error.
const SYSTEM_SHUTDOWN: &str = "System Shutdown";

/// The error code of a connection error that ended a sign-in.
pub(crate) fn sign_in_failure(code: i32, text: &str) -> ErrorCode {
    match code {
        code::NETWORK if text.contains(SYSTEM_SHUTDOWN) => ErrorCode::ServerShutdown,
        code::NETWORK => ErrorCode::ServerUnreachable,
        code::INVALID_USERNAME | code::AUTHENTICATION_FAILED | code::AUTHENTICATION_IMPOSSIBLE => {
            ErrorCode::AuthFailed
        }
        code::NO_SSL_SUPPORT | code::ENCRYPTION_ERROR => ErrorCode::TlsFailed,
        code::CERT_FIRST..=code::CERT_LAST => ErrorCode::InvalidCertificate,
        _ => ErrorCode::ProtocolError,
    }
}

/// Why a signed-in session ended, from the connection error that ended it.
pub(crate) fn sign_out_reason(code: i32, text: &str) -> SignOutReason {
    match code {
        code::NETWORK if text.contains(SYSTEM_SHUTDOWN) => SignOutReason::ServerShutdown,
        code::INVALID_USERNAME | code::AUTHENTICATION_FAILED | code::AUTHENTICATION_IMPOSSIBLE => {
            SignOutReason::AuthFailed
        }
        code::NAME_IN_USE => SignOutReason::Replaced,
        _ => SignOutReason::ConnectionLost,
    }
}

/// Does a libpurple username pass the `accounts` filter (full `user@host/resource` or bare
/// `user@host`; empty filter = all)?
pub(crate) fn wanted(filter: &[String], username: &str) -> bool {
    if filter.is_empty() {
        return true;
    }
    let bare = username.split_once('/').map_or(username, |(b, _)| b);
    filter
        .iter()
        .any(|f| f.eq_ignore_ascii_case(username) || f.eq_ignore_ascii_case(bare))
}

/// An account's connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Conn {
    /// Not connected.
    Disconnected,
    /// Signing in.
    Connecting,
    /// Signed in.
    Connected,
}

/// What the initial query read about one account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AccountRead<P> {
    /// The account handle.
    pub handle: i32,
    /// `PurpleAccountGetUsername`.
    pub username: String,
    /// From `PurpleAccountIsConnected` / `IsConnecting`.
    pub conn: Conn,
    /// `PurpleAccountGetConnection` (0 = none).
    pub gc: i32,
    /// Where the earliest of those answers was received.
    pub read_at: P,
}

/// What the initial query read about the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientRead<P> {
    /// The unique name owning `im.pidgin.purple.PurpleService`, if any.
    pub owner: Option<String>,
    /// Where the owner was read.
    pub owner_read_at: P,
    /// The active accounts.
    pub accounts: Vec<AccountRead<P>>,
    /// The current saved status, if it could be read.
    pub status: Option<StatusRead<P>>,
    /// Every buddy (only when contacts are tracked).
    pub contacts: Vec<BuddyRead>,
}

/// A buddy as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct BuddyRead {
    /// The account whose buddy it is.
    pub account: i32,
    /// `PurpleBuddyGetName` (a bare JID for XMPP).
    pub name: String,
    /// Its status; offline when not online.
    pub status: Status,
}

/// A saved status as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StatusRead<P> {
    /// The saved status handle.
    pub saved: i32,
    /// Its primitive and message.
    pub status: Status,
    /// Where the earlier of the two answers (type, message) was received.
    pub read_at: P,
    /// For the current saved status: where the answer naming it was received.
    pub current_at: Option<P>,
}

/// Something the translator needs to know before it can finish a signal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// The username of an account handle: call [`Translator::learn_account`], then hand the
    /// signal in again.
    Username(i32),
    /// The account of a connection handle: call [`Translator::learn_connection`], then hand
    /// the signal in again.
    ConnectionAccount(i32),
    /// A saved status's primitive and message: call [`Translator::handle_saved`]. The signal
    /// is done.
    Saved(i32),
    /// The current saved status: call [`Translator::handle_saved`]. The signal is done.
    Current,
    /// A new client process: query everything again and call [`Translator::handle_sync`].
    Sync,
    /// A buddy's name and status, when contacts are tracked.
    Buddy(i32),
}

/// Something worth knowing soon, asked without holding up later signals: the driver issues it
/// in the background and hands the answer in when it comes, whatever was handled meanwhile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Prefetch {
    /// The account of a new connection handle ([`Translator::learn_connection`]), so that
    /// its `SigningOff` needs no round trip.
    Connection(i32),
    /// A saved status that was just created or changed ([`Translator::handle_saved`]), so that
    /// its activation needs no round trip.
    Saved(i32),
}

/// What handling a signal gave.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// Report these, in order, in one batch.
    pub observations: Vec<Observation>,
    /// Then do this before the next signal.
    pub need: Option<Need>,
    /// And ask this in the background.
    pub prefetch: Option<Prefetch>,
}

impl Outcome {
    fn observe(observations: Vec<Observation>) -> Self {
        Outcome {
            observations,
            ..Outcome::default()
        }
    }

    fn need(need: Need) -> Self {
        Outcome {
            need: Some(need),
            ..Outcome::default()
        }
    }

    fn prefetch(prefetch: Prefetch) -> Self {
        Outcome {
            prefetch: Some(prefetch),
            ..Outcome::default()
        }
    }
}

/// What is known about one saved status.
#[derive(Clone, Debug)]
struct Saved<P> {
    /// `None` after a modification, until it is read again.
    status: Option<Status>,
    /// Where it was read, or where the modification was received.
    at: P,
}

#[derive(Clone, Debug)]
struct Account<P> {
    /// `None`: filtered out by the config, or a handle libpurple did not know.
    part: Option<PartId>,
    conn: Conn,
    /// The last connection error since the account started connecting: (code, text).
    error: Option<(i32, String)>,
    read_at: Option<P>,
}

/// libpurple's state as the source knows it; see the module docs.
#[derive(Clone, Debug)]
pub(crate) struct Translator<P> {
    filter: Vec<String>,
    contacts: bool,
    owner: Option<String>,
    owner_read_at: Option<P>,
    /// The client said `Quitting`: it answers no more calls, so nothing is asked.
    quitting: bool,
    accounts: HashMap<i32, Account<P>>,
    /// Connection handle → account handle.
    connections: HashMap<i32, i32>,
    /// The account of an `AccountSignedOn` that was the last signal: libpurple emits its
    /// connection's `SignedOn` right after it.
    signed_on: Option<i32>,
    /// The current saved status handle (0 = not known).
    saved: i32,
    /// The current saved status.
    status: Option<Status>,
    /// Where the current saved status handle was read.
    status_read_at: Option<P>,
    /// Saved status handle → its status. Saved statuses change only with a
    /// `SavedstatusModified` (which clears the entry until it is read again), and handles are
    /// never reused within a process, so a change to a known saved status needs no round trip.
    cache: HashMap<i32, Saved<P>>,
}

impl<P: Ord + Copy> Translator<P> {
    /// A translator for the accounts passing `filter`; `contacts`: also track buddies.
    pub fn new(filter: Vec<String>, contacts: bool) -> Self {
        Translator {
            filter,
            contacts,
            owner: None,
            owner_read_at: None,
            quitting: false,
            accounts: HashMap::new(),
            connections: HashMap::new(),
            signed_on: None,
            saved: 0,
            status: None,
            status_read_at: None,
            cache: HashMap::new(),
        }
    }

    /// The unique bus name of the running client, if one runs.
    #[cfg(test)]
    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Forgets everything about the client process (handles are valid for one process).
    fn forget_process(&mut self) {
        self.quitting = false;
        self.accounts.clear();
        self.connections.clear();
        self.saved = 0;
        self.status = None;
        self.status_read_at = None;
        self.cache.clear();
    }

    /// The tracked accounts' parts with their state.
    fn tracked(&self) -> impl Iterator<Item = (&PartId, Conn)> {
        self.accounts
            .values()
            .filter_map(|a| a.part.as_ref().map(|p| (p, a.conn)))
    }

    /// Takes in a full query of the client; returns everything to report, ending with
    /// `Synced`.
    pub fn handle_sync(&mut self, read: ClientRead<P>) -> Vec<Observation> {
        self.forget_process();
        self.owner = read.owner;
        self.owner_read_at = Some(read.owner_read_at);
        let mut out = Vec::new();
        if self.owner.is_none() {
            out.push(Observation::ClientVanished);
            out.push(Observation::Synced);
            return out;
        }
        out.push(Observation::ClientAppeared);
        if let Some(s) = read.status {
            self.saved = s.saved;
            self.cache.insert(
                s.saved,
                Saved {
                    status: Some(s.status.clone()),
                    at: s.read_at,
                },
            );
            self.status = Some(s.status);
            self.status_read_at = Some(s.current_at.unwrap_or(s.read_at));
        }
        let status = self.status.clone().unwrap_or(Status::UNKNOWN);
        let mut accounts = read.accounts;
        accounts.sort_by(|a, b| a.username.cmp(&b.username));
        for a in accounts {
            let part = wanted(&self.filter, &a.username).then(|| PartId::new(a.username.clone()));
            if let Some(part) = &part {
                out.push(match a.conn {
                    Conn::Connected => Observation::presence(part.clone(), status.clone()),
                    Conn::Connecting => Observation::Connecting(part.clone()),
                    // Whatever ended it happened before we looked.
                    Conn::Disconnected => {
                        Observation::SignedOff(part.clone(), SignOutReason::Unknown)
                    }
                });
            }
            if a.gc != 0 {
                self.connections.insert(a.gc, a.handle);
            }
            self.accounts.insert(
                a.handle,
                Account {
                    part,
                    conn: a.conn,
                    error: None,
                    read_at: Some(a.read_at),
                },
            );
        }
        let mut contacts = read.contacts;
        contacts.sort_by(|a, b| a.name.cmp(&b.name));
        for buddy in contacts {
            out.extend(self.handle_buddy(buddy));
        }
        out.push(Observation::Synced);
        out
    }

    /// Takes in a read of a saved status (with `current_at`: the current one). When it is the
    /// current one and differs from what was reported, returns the presence of every signed-in
    /// tracked account. A read older than what is known already changes nothing.
    pub fn handle_saved(&mut self, read: StatusRead<P>) -> Vec<Observation> {
        if self
            .cache
            .get(&read.saved)
            .is_some_and(|c| read.read_at < c.at)
        {
            return Vec::new();
        }
        self.cache.insert(
            read.saved,
            Saved {
                status: Some(read.status.clone()),
                at: read.read_at,
            },
        );
        match read.current_at {
            Some(at) if self.status_read_at.is_some_and(|r| at < r) => return Vec::new(),
            Some(at) => {
                self.saved = read.saved;
                self.status_read_at = Some(at);
            }
            None if read.saved != self.saved => return Vec::new(),
            None => {}
        }
        self.set_status(read.status)
    }

    /// Makes `status` the current one; returns the presences to report if it changed.
    fn set_status(&mut self, status: Status) -> Vec<Observation> {
        if self.status.as_ref() == Some(&status) {
            return Vec::new();
        }
        self.status = Some(status.clone());
        let mut parts: Vec<&PartId> = self
            .tracked()
            .filter(|(_, c)| *c == Conn::Connected)
            .map(|(p, _)| p)
            .collect();
        parts.sort();
        parts
            .into_iter()
            .map(|p| Observation::presence(p.clone(), status.clone()))
            .collect()
    }

    /// Takes in the username of an account handle (`None`: libpurple does not know it).
    pub fn learn_account(&mut self, handle: i32, username: Option<&str>) {
        let part = username
            .filter(|u| wanted(&self.filter, u))
            .map(PartId::new);
        self.accounts.entry(handle).or_insert(Account {
            part,
            conn: Conn::Disconnected,
            error: None,
            read_at: None,
        });
    }

    /// Takes in the account of a connection handle (`None`: libpurple does not know it).
    pub fn learn_connection(&mut self, gc: i32, account: Option<i32>) {
        // 0 marks a handle that was asked about and is not an account we know. Handles are
        // never reused, so a mapping that outlives its connection is merely unused.
        self.connections.insert(gc, account.unwrap_or(0));
    }

    /// Takes in a buddy (reported only when contacts are tracked and its account is).
    pub fn handle_buddy(&self, buddy: BuddyRead) -> Vec<Observation> {
        let tracked = self
            .accounts
            .get(&buddy.account)
            .is_some_and(|a| a.part.is_some());
        if !self.contacts || !tracked || buddy.name.is_empty() {
            return Vec::new();
        }
        vec![Observation::Contact(buddy.name.into(), buddy.status)]
    }

    /// Is `sender` the unique name of the running client?
    pub fn speaks_for_client(&self, sender: Option<&str>) -> bool {
        self.owner.is_some() && sender == self.owner.as_deref()
    }

    /// Handles one signal received at `at` from `sender`.
    pub fn handle_signal(&mut self, at: P, sender: Option<&str>, signal: &Signal) -> Outcome {
        // `old` adds nothing: the translator knows the owner it saw last. Only the bus daemon
        // itself reports owner changes: anybody on the bus can send a signal that says it is
        // `NameOwnerChanged` straight to us, but nobody else can send it as the bus.
        if let Signal::NameOwnerChanged { name, new, .. } = signal {
            if sender != Some(DBUS_NAME) {
                return Outcome::default();
            }
            return self.name_owner_changed(at, name, new);
        }
        // Only the current owner speaks for libpurple.
        if !self.speaks_for_client(sender) {
            return Outcome::default();
        }
        let mut outcome = self.client_signal(at, signal);
        if self.quitting {
            outcome.need = None;
            outcome.prefetch = None;
        }
        outcome
    }

    fn client_signal(&mut self, at: P, signal: &Signal) -> Outcome {
        let signed_on = self.signed_on.take();
        match signal {
            Signal::NameOwnerChanged { .. } => Outcome::default(),
            Signal::Quitting => {
                self.quitting = true;
                Outcome::observe(vec![Observation::ClientQuitting])
            }
            Signal::AccountConnecting(a) => self.account_state(at, *a, Conn::Connecting),
            Signal::AccountSignedOn(a) => {
                let outcome = self.account_state(at, *a, Conn::Connected);
                self.signed_on = self.accounts.contains_key(a).then_some(*a);
                outcome
            }
            Signal::AccountSignedOff(a) => self.account_state(at, *a, Conn::Disconnected),
            Signal::SigningOff(gc) => self.signing_off(at, *gc),
            // Learn the connection handle now, for a later `SigningOff` (a quitting client
            // answers no more): from the `AccountSignedOn` just before it at once, and from
            // libpurple in the background to be sure.
            Signal::SignedOn(gc) if !self.connections.contains_key(gc) => {
                if let Some(account) = signed_on {
                    self.connections.insert(*gc, account);
                }
                Outcome::prefetch(Prefetch::Connection(*gc))
            }
            Signal::SignedOn(_) => Outcome::default(),
            // Every activation of a saved status ends with `SavedstatusChanged`, which names the
            // new one: an account's own status change adds nothing to "status = saved status".
            Signal::AccountStatusChanged(_) => Outcome::default(),
            Signal::SavedstatusChanged(saved) => self.saved_status_changed(at, *saved),
            Signal::SavedstatusAdded(saved) => self.saved_status_modified(at, *saved),
            Signal::SavedstatusModified(saved) => self.saved_status_modified(at, *saved),
            Signal::AccountConnectionError {
                account,
                code,
                text,
            } => {
                self.remember_error(*account, *code, text);
                Outcome::default()
            }
            Signal::ConnectionError { gc, code, text } => {
                if let Some(&account) = self.connections.get(gc) {
                    if self
                        .accounts
                        .get(&account)
                        .is_some_and(|a| a.error.is_none())
                    {
                        self.remember_error(account, *code, text);
                    }
                }
                Outcome::default()
            }
            Signal::Buddy(buddy) => {
                if self.contacts {
                    Outcome::need(Need::Buddy(*buddy))
                } else {
                    Outcome::default()
                }
            }
        }
    }

    fn name_owner_changed(&mut self, at: P, name: &str, new: &str) -> Outcome {
        if name != PURPLE_SERVICE || self.owner_read_at.is_some_and(|r| at < r) {
            return Outcome::default();
        }
        let mut observations = Vec::new();
        if self.owner.is_some() && (new.is_empty() || self.owner.as_deref() != Some(new)) {
            self.owner = None;
            self.forget_process();
            observations.push(Observation::ClientVanished);
        }
        if new.is_empty() || self.owner.as_deref() == Some(new) {
            return Outcome::observe(observations);
        }
        self.owner = Some(new.to_owned());
        observations.push(Observation::ClientAppeared);
        Outcome {
            observations,
            need: Some(Need::Sync),
            prefetch: None,
        }
    }

    fn remember_error(&mut self, account: i32, code: i32, text: &str) {
        if let Some(a) = self.accounts.get_mut(&account) {
            a.error = Some((code, text.to_owned()));
        }
    }

    fn account_state(&mut self, at: P, handle: i32, conn: Conn) -> Outcome {
        let Some(account) = self.accounts.get_mut(&handle) else {
            // A signing-off account we never saw was never reported.
            return if conn == Conn::Disconnected {
                Outcome::default()
            } else {
                Outcome::need(Need::Username(handle))
            };
        };
        if account.read_at.is_some_and(|r| at < r) {
            // The query already saw this; its error belongs to that past too.
            account.error = None;
            return Outcome::default();
        }
        let was = account.conn;
        account.conn = conn;
        let Some(part) = account.part.clone() else {
            return Outcome::default();
        };
        let observation = match conn {
            Conn::Connecting => {
                account.error = None;
                Observation::Connecting(part)
            }
            Conn::Connected => {
                account.error = None;
                match &self.status {
                    Some(status) => Observation::presence(part, status.clone()),
                    None => {
                        return Outcome {
                            observations: vec![Observation::SignedOn(part)],
                            need: Some(Need::Current),
                            prefetch: None,
                        }
                    }
                }
            }
            Conn::Disconnected => {
                self.connections.retain(|_, a| *a != handle);
                match (was, account.error.take()) {
                    (Conn::Connecting, Some((code, text))) => {
                        Observation::SignOnFailed(part, sign_in_failure(code, &text))
                    }
                    (_, Some((code, text))) => {
                        Observation::SignedOff(part, sign_out_reason(code, &text))
                    }
                    (_, None) => Observation::SignedOff(part, SignOutReason::User),
                }
            }
        };
        Outcome::observe(vec![observation])
    }

    fn signing_off(&mut self, at: P, gc: i32) -> Outcome {
        let Some(&handle) = self.connections.get(&gc) else {
            // Only a signed-in account can be signing off; don't ask otherwise.
            return if self.tracked().any(|(_, c)| c == Conn::Connected) {
                Outcome::need(Need::ConnectionAccount(gc))
            } else {
                Outcome::default()
            };
        };
        match self.accounts.get(&handle) {
            Some(Account {
                part: Some(part),
                conn: Conn::Connected,
                read_at,
                ..
            }) if !read_at.is_some_and(|r| at < r) => {
                Outcome::observe(vec![Observation::SigningOff(part.clone())])
            }
            _ => Outcome::default(),
        }
    }

    fn saved_status_changed(&mut self, at: P, saved: i32) -> Outcome {
        if self.status_read_at.is_some_and(|r| at < r) {
            return Outcome::default();
        }
        self.saved = saved;
        self.status_read_at = Some(at);
        match self.cache.get(&saved).and_then(|c| c.status.clone()) {
            Some(status) => Outcome::observe(self.set_status(status)),
            None => Outcome::need(Need::Saved(saved)),
        }
    }

    /// A saved status was created or changed: read it in the background (it is usually
    /// activated next), so that its activation needs no round trip. The current one is
    /// reported when the answer comes.
    fn saved_status_modified(&mut self, at: P, saved: i32) -> Outcome {
        if self.cache.get(&saved).is_some_and(|c| at < c.at) {
            return Outcome::default();
        }
        self.cache.insert(saved, Saved { status: None, at });
        Outcome::prefetch(Prefetch::Saved(saved))
    }
}

#[cfg(test)]
mod tests {
    use imstatus_core::Availability;

    use super::*;

    const OWNER: &str = ":1.7";
    const ALICE: &str = "alice@example.test/finch";
    const BOB: &str = "bob@example.test/finch";

    fn part(name: &str) -> PartId {
        PartId::new(name)
    }

    fn away() -> Status {
        Status::with_message(Availability::Away, "lunch")
    }

    fn account(handle: i32, username: &str, conn: Conn, read_at: u64) -> AccountRead<u64> {
        AccountRead {
            handle,
            username: username.into(),
            conn,
            gc: if conn == Conn::Disconnected {
                0
            } else {
                handle + 60
            },
            read_at,
        }
    }

    /// alice (86) connected, bob (90) disconnected, status away "lunch"; all read at 10.
    fn synced(filter: &[&str]) -> (Translator<u64>, Vec<Observation>) {
        let mut t = Translator::new(filter.iter().map(|s| s.to_string()).collect(), false);
        let out = t.handle_sync(ClientRead {
            owner: Some(OWNER.into()),
            owner_read_at: 10,
            accounts: vec![
                account(90, BOB, Conn::Disconnected, 10),
                account(86, ALICE, Conn::Connected, 10),
            ],
            status: Some(StatusRead {
                saved: 149,
                status: away(),
                read_at: 10,
                current_at: Some(10),
            }),
            contacts: Vec::new(),
        });
        (t, out)
    }

    fn signal(t: &mut Translator<u64>, at: u64, s: Signal) -> Outcome {
        t.handle_signal(at, Some(OWNER), &s)
    }

    /// A libpurple signal as it arrives from `sender`.
    fn wire<B>(member: &str, sender: &str, body: &B) -> zbus::Message
    where
        B: zbus::export::serde::Serialize + zbus::zvariant::DynamicType,
    {
        zbus::Message::signal(
            crate::signal::PURPLE_PATH,
            crate::signal::PURPLE_INTERFACE,
            member,
        )
        .expect("valid names")
        .sender(sender)
        .expect("valid sender")
        .build(body)
        .expect("serialisable body")
    }

    /// Parses and handles a wire signal as the driver does.
    fn from_wire(t: &mut Translator<u64>, at: u64, msg: &zbus::Message) -> Outcome {
        let header = msg.header();
        let sender = header.sender().map(|s| s.as_str());
        let signal = crate::signal::parse(msg)
            .expect("a body that fits")
            .expect("a signal we handle");
        t.handle_signal(at, sender, &signal)
    }

    #[test]
    fn signal_bodies_from_the_wire_become_observations() {
        let (mut t, _) = synced(&[]);
        let connecting = wire("AccountConnecting", OWNER, &(90i32,));
        assert_eq!(
            from_wire(&mut t, 11, &connecting).observations,
            vec![Observation::Connecting(part(BOB))]
        );
        let error = wire(
            "AccountConnectionError",
            OWNER,
            &(90i32, 2i32, "Not Authorized"),
        );
        assert_eq!(from_wire(&mut t, 12, &error), Outcome::default());
        let off = wire("AccountSignedOff", OWNER, &(90i32,));
        assert_eq!(
            from_wire(&mut t, 13, &off).observations,
            vec![Observation::SignOnFailed(part(BOB), ErrorCode::AuthFailed)]
        );
        // An integer as a string (P14) from the client.
        let off = wire("AccountSignedOff", OWNER, &("86",));
        assert_eq!(
            from_wire(&mut t, 14, &off).observations,
            vec![Observation::SignedOff(part(ALICE), SignOutReason::User)]
        );
        // The same from another connection on the bus: nothing.
        let forged = wire("AccountSignedOn", ":1.99", &(86i32,));
        assert_eq!(from_wire(&mut t, 15, &forged), Outcome::default());
        // An unknown handle is looked up.
        let unknown = wire("AccountSignedOn", OWNER, &(4242i32,));
        assert_eq!(
            from_wire(&mut t, 16, &unknown),
            Outcome::need(Need::Username(4242))
        );
        let quitting = wire("Quitting", OWNER, &());
        assert_eq!(
            from_wire(&mut t, 17, &quitting).observations,
            vec![Observation::ClientQuitting]
        );
    }

    #[test]
    fn a_sync_lists_every_account_and_ends_with_synced() {
        let (_, out) = synced(&[]);
        assert_eq!(
            out,
            vec![
                Observation::ClientAppeared,
                Observation::presence(part(ALICE), away()),
                Observation::SignedOff(part(BOB), SignOutReason::Unknown),
                Observation::Synced,
            ]
        );
    }

    #[test]
    fn no_owner_means_the_client_is_not_running() {
        let mut t = Translator::<u64>::new(Vec::new(), false);
        let out = t.handle_sync(ClientRead {
            owner: None,
            owner_read_at: 3,
            accounts: Vec::new(),
            status: None,
            contacts: Vec::new(),
        });
        assert_eq!(out, vec![Observation::ClientVanished, Observation::Synced]);
        // A purple signal without an owner is noise.
        assert_eq!(
            t.handle_signal(4, Some(OWNER), &Signal::Quitting),
            Outcome::default()
        );
    }

    #[test]
    fn the_filter_takes_full_or_bare_names() {
        assert!(wanted(&[], ALICE));
        assert!(wanted(&[ALICE.into()], ALICE));
        assert!(wanted(&["Alice@Example.test".into()], ALICE));
        assert!(!wanted(&["alice@example.test/desk".into()], ALICE));
        assert!(!wanted(&["bob@example.test".into()], ALICE));
        let (_, out) = synced(&["bob@example.test"]);
        assert_eq!(
            out,
            vec![
                Observation::ClientAppeared,
                Observation::SignedOff(part(BOB), SignOutReason::Unknown),
                Observation::Synced,
            ]
        );
    }

    #[test]
    fn connecting_then_signed_on_reports_the_cached_status() {
        let (mut t, _) = synced(&[]);
        assert_eq!(
            signal(&mut t, 11, Signal::AccountConnecting(90)).observations,
            vec![Observation::Connecting(part(BOB))]
        );
        assert_eq!(
            signal(&mut t, 12, Signal::AccountSignedOn(90)),
            Outcome::observe(vec![Observation::presence(part(BOB), away())])
        );
    }

    #[test]
    fn signals_the_query_already_saw_are_skipped() {
        let (mut t, _) = synced(&[]);
        // Received before the answers that said alice is connected.
        assert_eq!(
            signal(&mut t, 9, Signal::AccountConnecting(86)),
            Outcome::default()
        );
        assert_eq!(
            signal(&mut t, 9, Signal::SavedstatusChanged(149)),
            Outcome::default()
        );
        // After them, applied.
        assert_eq!(
            signal(&mut t, 11, Signal::SavedstatusChanged(150)),
            Outcome::need(Need::Saved(150))
        );
    }

    #[test]
    fn an_unknown_handle_is_looked_up_once_and_then_reported() {
        let (mut t, _) = synced(&[]);
        assert_eq!(
            signal(&mut t, 11, Signal::AccountConnecting(99)),
            Outcome::need(Need::Username(99))
        );
        t.learn_account(99, Some("carol@example.test/finch"));
        assert_eq!(
            signal(&mut t, 11, Signal::AccountConnecting(99)).observations,
            vec![Observation::Connecting(part("carol@example.test/finch"))]
        );
        // A handle libpurple does not know either is ignored from then on.
        assert_eq!(
            signal(&mut t, 12, Signal::AccountSignedOn(-5)),
            Outcome::need(Need::Username(-5))
        );
        t.learn_account(-5, None);
        assert_eq!(
            signal(&mut t, 12, Signal::AccountSignedOn(-5)),
            Outcome::default()
        );
        // Signing off an account never seen reports nothing and asks nothing.
        assert_eq!(
            signal(&mut t, 13, Signal::AccountSignedOff(1234)),
            Outcome::default()
        );
    }

    #[test]
    fn disconnect_is_signing_out_then_signed_out_by_the_user() {
        let (mut t, _) = synced(&[]);
        // 146 is alice's connection handle (86 + 60).
        assert_eq!(
            signal(&mut t, 11, Signal::SigningOff(146)).observations,
            vec![Observation::SigningOff(part(ALICE))]
        );
        assert_eq!(
            signal(&mut t, 12, Signal::AccountSignedOff(86)).observations,
            vec![Observation::SignedOff(part(ALICE), SignOutReason::User)]
        );
        // The connection handle is gone with the connection.
        assert_eq!(
            signal(&mut t, 13, Signal::SigningOff(146)),
            Outcome::default()
        );
    }

    #[test]
    fn an_unknown_connection_handle_is_looked_up() {
        let (mut t, _) = synced(&[]);
        assert_eq!(
            signal(&mut t, 11, Signal::SigningOff(500)),
            Outcome::need(Need::ConnectionAccount(500))
        );
        t.learn_connection(500, Some(86));
        assert_eq!(
            signal(&mut t, 11, Signal::SigningOff(500)).observations,
            vec![Observation::SigningOff(part(ALICE))]
        );
    }

    #[test]
    fn server_shutdown_and_network_errors_give_their_reasons() {
        let (mut t, _) = synced(&[]);
        signal(
            &mut t,
            11,
            Signal::AccountConnectionError {
                account: 86,
                code: 0,
                text: "System Shutdown".into(),
            },
        );
        assert_eq!(
            signal(&mut t, 12, Signal::AccountSignedOff(86)).observations,
            vec![Observation::SignedOff(
                part(ALICE),
                SignOutReason::ServerShutdown
            )]
        );
        signal(&mut t, 13, Signal::AccountConnecting(86));
        signal(&mut t, 14, Signal::AccountSignedOn(86));
        // ConnectionError by connection handle, learnt from the sync? Not any more after a
        // reconnect: learn it as the driver would.
        t.learn_connection(700, Some(86));
        signal(
            &mut t,
            15,
            Signal::ConnectionError {
                gc: 700,
                code: 0,
                text: "Read Error".into(),
            },
        );
        assert_eq!(
            signal(&mut t, 16, Signal::AccountSignedOff(86)).observations,
            vec![Observation::SignedOff(
                part(ALICE),
                SignOutReason::ConnectionLost
            )]
        );
    }

    #[test]
    fn a_wrong_password_fails_the_sign_in_with_auth_failed() {
        let (mut t, _) = synced(&[]);
        signal(&mut t, 11, Signal::AccountConnecting(90));
        signal(
            &mut t,
            12,
            Signal::AccountConnectionError {
                account: 90,
                code: 2,
                text: "Not Authorized".into(),
            },
        );
        // SigningOff of a connection that never signed in says nothing.
        assert_eq!(
            signal(&mut t, 13, Signal::SigningOff(333)).need,
            Some(Need::ConnectionAccount(333))
        );
        t.learn_connection(333, Some(90));
        assert_eq!(
            signal(&mut t, 13, Signal::SigningOff(333)),
            Outcome::default()
        );
        assert_eq!(
            signal(&mut t, 14, Signal::AccountSignedOff(90)).observations,
            vec![Observation::SignOnFailed(part(BOB), ErrorCode::AuthFailed)]
        );
    }

    #[test]
    fn error_codes_map_to_the_design_codes() {
        assert_eq!(
            sign_in_failure(0, "Unable to connect"),
            ErrorCode::ServerUnreachable
        );
        assert_eq!(
            sign_in_failure(0, "System Shutdown"),
            ErrorCode::ServerShutdown
        );
        assert_eq!(sign_in_failure(2, "Not Authorized"), ErrorCode::AuthFailed);
        assert_eq!(
            sign_in_failure(5, "You require encryption"),
            ErrorCode::TlsFailed
        );
        assert_eq!(
            sign_in_failure(9, "untrusted"),
            ErrorCode::InvalidCertificate
        );
        assert_eq!(sign_in_failure(16, "other"), ErrorCode::ProtocolError);
        assert_eq!(
            sign_out_reason(0, "Read Error"),
            SignOutReason::ConnectionLost
        );
        assert_eq!(
            sign_out_reason(6, "Resource conflict"),
            SignOutReason::Replaced
        );
        assert_eq!(sign_out_reason(2, "x"), SignOutReason::AuthFailed);
    }

    #[test]
    fn a_status_change_reads_a_new_saved_status_once_and_reports_every_signed_in_account() {
        let (mut t, _) = synced(&[]);
        // An account's own status change says nothing about the saved status.
        assert_eq!(
            signal(&mut t, 11, Signal::AccountStatusChanged(86)),
            Outcome::default()
        );
        assert_eq!(
            signal(&mut t, 12, Signal::SavedstatusChanged(151)),
            Outcome::need(Need::Saved(151))
        );
        let busy = Status::with_message(Availability::Busy, "in a call");
        let read = |saved, status: &Status, read_at| StatusRead {
            saved,
            status: status.clone(),
            read_at,
            current_at: None,
        };
        assert_eq!(
            t.handle_saved(read(151, &busy, 13)),
            vec![Observation::presence(part(ALICE), busy.clone())]
        );
        // Back to the first one: known, no round trip.
        assert_eq!(
            signal(&mut t, 14, Signal::SavedstatusChanged(149)),
            Outcome::observe(vec![Observation::presence(part(ALICE), away())])
        );
        assert_eq!(
            signal(&mut t, 15, Signal::SavedstatusChanged(151)),
            Outcome::observe(vec![Observation::presence(part(ALICE), busy.clone())])
        );
        // A new saved status is read (in the background) as soon as it is created or changed.
        assert_eq!(
            signal(&mut t, 16, Signal::SavedstatusAdded(152)),
            Outcome::prefetch(Prefetch::Saved(152))
        );
        let xa = Status::new(Availability::ExtendedAway);
        assert_eq!(t.handle_saved(read(152, &xa, 17)), vec![]);
        assert_eq!(
            signal(&mut t, 18, Signal::SavedstatusChanged(152)),
            Outcome::observe(vec![Observation::presence(part(ALICE), xa.clone())])
        );
        // Changing the current one reads it again and reports it when the answer comes.
        assert_eq!(
            signal(&mut t, 19, Signal::SavedstatusModified(152)),
            Outcome::prefetch(Prefetch::Saved(152))
        );
        let xa_gone = Status::with_message(Availability::ExtendedAway, "gone");
        assert_eq!(
            t.handle_saved(read(152, &xa_gone, 21)),
            vec![Observation::presence(part(ALICE), xa_gone.clone())]
        );
        // An answer older than that (a read issued before the modification) changes nothing.
        assert_eq!(t.handle_saved(read(152, &xa, 18)), vec![]);
        // A modification the read already reflects is skipped.
        assert_eq!(
            signal(&mut t, 20, Signal::SavedstatusModified(152)),
            Outcome::default()
        );
        // The same status again reports nothing.
        let mut again = read(152, &xa_gone, 22);
        again.current_at = Some(22);
        assert_eq!(t.handle_saved(again), vec![]);
        // bob signs on with the current status.
        signal(&mut t, 22, Signal::AccountConnecting(90));
        assert_eq!(
            signal(&mut t, 23, Signal::AccountSignedOn(90)).observations,
            vec![Observation::presence(part(BOB), xa_gone)]
        );
    }

    #[test]
    fn a_new_saved_status_is_reported_on_activation_whatever_order_its_reads_come_in() {
        // purple-remote's chatty (recipe §4), positions as received in a real run: New emits
        // Added (28), SetSubstatus and SetMessage each Modified (35, 40), Activate Changed (44).
        // Each Added/Modified asks a background read; a read's position is its earliest answer.
        let read = |status: &Status, read_at| StatusRead {
            saved: 488,
            status: status.clone(),
            read_at,
            current_at: None,
        };
        let chatty = Status::new(Availability::Chatty);
        let plain = Status::new(Availability::Available);
        let reported = vec![Observation::presence(part(ALICE), chatty.clone())];
        let prefetch = Outcome::prefetch(Prefetch::Saved(488));

        // The reads lag behind: the read before SetSubstatus is superseded by the Modified,
        // the activation asks, and the later answers change nothing.
        let (mut t, _) = synced(&[]);
        assert_eq!(signal(&mut t, 28, Signal::SavedstatusAdded(488)), prefetch);
        assert_eq!(t.handle_saved(read(&plain, 30)), vec![]);
        assert_eq!(
            signal(&mut t, 35, Signal::SavedstatusModified(488)),
            prefetch
        );
        assert_eq!(
            signal(&mut t, 40, Signal::SavedstatusModified(488)),
            prefetch
        );
        assert_eq!(
            signal(&mut t, 44, Signal::SavedstatusChanged(488)),
            Outcome::need(Need::Saved(488))
        );
        assert_eq!(t.handle_saved(read(&chatty, 50)), reported);
        assert_eq!(t.handle_saved(read(&chatty, 37)), vec![]);
        assert_eq!(t.handle_saved(read(&plain, 30)), vec![]);

        // The reads keep up: the activation needs no round trip.
        let (mut t, _) = synced(&[]);
        signal(&mut t, 28, Signal::SavedstatusAdded(488));
        signal(&mut t, 35, Signal::SavedstatusModified(488));
        assert_eq!(t.handle_saved(read(&chatty, 37)), vec![]);
        signal(&mut t, 40, Signal::SavedstatusModified(488));
        assert_eq!(t.handle_saved(read(&chatty, 42)), vec![]);
        assert_eq!(
            signal(&mut t, 44, Signal::SavedstatusChanged(488)),
            Outcome::observe(reported.clone())
        );
        // A stale answer arriving last changes nothing.
        assert_eq!(t.handle_saved(read(&plain, 30)), vec![]);

        // The signals lag behind: the first read already reflects both modifications.
        let (mut t, _) = synced(&[]);
        signal(&mut t, 28, Signal::SavedstatusAdded(488));
        assert_eq!(t.handle_saved(read(&chatty, 46)), vec![]);
        assert_eq!(
            signal(&mut t, 35, Signal::SavedstatusModified(488)),
            Outcome::default()
        );
        assert_eq!(
            signal(&mut t, 40, Signal::SavedstatusModified(488)),
            Outcome::default()
        );
        assert_eq!(
            signal(&mut t, 44, Signal::SavedstatusChanged(488)),
            Outcome::observe(reported)
        );
    }

    #[test]
    fn signed_on_teaches_the_connection_handle_and_quitting_stops_asking() {
        let (mut t, _) = synced(&[]);
        signal(&mut t, 11, Signal::AccountConnecting(90));
        signal(&mut t, 12, Signal::AccountSignedOn(90));
        assert_eq!(
            signal(&mut t, 13, Signal::SignedOn(555)),
            Outcome::prefetch(Prefetch::Connection(555))
        );
        // Paired with the AccountSignedOn right before it, before the answer comes.
        assert_eq!(
            signal(&mut t, 13, Signal::SigningOff(555)).observations,
            vec![Observation::SigningOff(part(BOB))]
        );
        t.learn_connection(555, Some(90));
        assert_eq!(
            signal(&mut t, 13, Signal::SignedOn(555)),
            Outcome::default()
        );
        assert_eq!(
            signal(&mut t, 14, Signal::Quitting).observations,
            vec![Observation::ClientQuitting]
        );
        assert_eq!(
            signal(&mut t, 15, Signal::SigningOff(555)).observations,
            vec![Observation::SigningOff(part(BOB))]
        );
        // An unknown connection while quitting: nothing to ask a client that won't answer.
        assert_eq!(
            signal(&mut t, 16, Signal::SigningOff(777)),
            Outcome::default()
        );
        assert_eq!(
            signal(&mut t, 16, Signal::SavedstatusAdded(999)),
            Outcome::default()
        );
        assert_eq!(
            signal(&mut t, 16, Signal::SignedOn(888)),
            Outcome::default()
        );
    }

    #[test]
    fn owner_changes_are_client_start_and_exit() {
        let (mut t, _) = synced(&[]);
        assert_eq!(
            signal(&mut t, 11, Signal::Quitting).observations,
            vec![Observation::ClientQuitting]
        );
        let lost = Signal::NameOwnerChanged {
            name: PURPLE_SERVICE.into(),
            old: OWNER.into(),
            new: String::new(),
        };
        assert_eq!(
            t.handle_signal(12, Some("org.freedesktop.DBus"), &lost),
            Outcome::observe(vec![Observation::ClientVanished])
        );
        assert_eq!(t.owner(), None);
        // Handles died with the process.
        assert_eq!(
            t.handle_signal(13, Some(OWNER), &Signal::AccountSignedOff(86)),
            Outcome::default()
        );
        let back = Signal::NameOwnerChanged {
            name: PURPLE_SERVICE.into(),
            old: String::new(),
            new: ":1.9".into(),
        };
        assert_eq!(
            t.handle_signal(14, Some("org.freedesktop.DBus"), &back),
            Outcome {
                observations: vec![Observation::ClientAppeared],
                need: Some(Need::Sync),
                prefetch: None,
            }
        );
        assert_eq!(t.owner(), Some(":1.9"));
        // The old process's name can no longer speak for libpurple.
        assert_eq!(
            t.handle_signal(15, Some(OWNER), &Signal::Quitting),
            Outcome::default()
        );
        // Another name's owner change is not ours, and neither is a stale one.
        let other = Signal::NameOwnerChanged {
            name: "org.example".into(),
            old: String::new(),
            new: ":1.10".into(),
        };
        assert_eq!(t.handle_signal(16, None, &other), Outcome::default());
        assert_eq!(t.handle_signal(5, None, &lost), Outcome::default());
    }

    #[test]
    fn owner_changes_that_do_not_come_from_the_bus_are_ignored() {
        let (mut t, _) = synced(&[]);
        let peer = Some(":1.66");
        let lost = Signal::NameOwnerChanged {
            name: PURPLE_SERVICE.into(),
            old: OWNER.into(),
            new: String::new(),
        };
        let taken = Signal::NameOwnerChanged {
            name: PURPLE_SERVICE.into(),
            old: OWNER.into(),
            new: ":1.66".into(),
        };
        // From a peer, from libpurple itself, or with no sender: nothing, and the owner stays.
        for sender in [peer, Some(OWNER), None] {
            assert_eq!(t.handle_signal(11, sender, &lost), Outcome::default());
            assert_eq!(t.handle_signal(12, sender, &taken), Outcome::default());
        }
        assert_eq!(t.owner(), Some(OWNER));
        // libpurple's signals from the peer are not libpurple's either.
        assert_eq!(
            t.handle_signal(13, peer, &Signal::AccountSignedOff(86)),
            Outcome::default()
        );
        assert_eq!(
            t.handle_signal(14, Some(OWNER), &Signal::AccountSignedOff(86))
                .observations,
            vec![Observation::SignedOff(part(ALICE), SignOutReason::User)]
        );
    }

    #[test]
    fn signed_on_before_any_status_read_asks_for_the_status() {
        let mut t = Translator::<u64>::new(Vec::new(), false);
        t.handle_sync(ClientRead {
            owner: Some(OWNER.into()),
            owner_read_at: 1,
            accounts: Vec::new(),
            status: None,
            contacts: Vec::new(),
        });
        t.learn_account(86, Some(ALICE));
        assert_eq!(
            signal(&mut t, 2, Signal::AccountSignedOn(86)),
            Outcome {
                observations: vec![Observation::SignedOn(part(ALICE))],
                need: Some(Need::Current),
                prefetch: None,
            }
        );
    }

    #[test]
    fn buddies_are_reported_only_with_contacts_on_for_tracked_accounts() {
        let (mut t, _) = synced(&[]);
        assert_eq!(signal(&mut t, 11, Signal::Buddy(300)), Outcome::default());
        let buddy = |account, name: &str| BuddyRead {
            account,
            name: name.into(),
            status: away(),
        };
        assert_eq!(t.handle_buddy(buddy(86, "carol@example.test")), vec![]);

        let mut t = Translator::<u64>::new(vec![ALICE.into()], true);
        let out = t.handle_sync(ClientRead {
            owner: Some(OWNER.into()),
            owner_read_at: 10,
            accounts: vec![
                account(86, ALICE, Conn::Connected, 10),
                account(90, BOB, Conn::Connected, 10),
            ],
            status: None,
            contacts: vec![
                buddy(86, "dave@example.test"),
                buddy(86, "carol@example.test"),
                buddy(90, "erin@example.test"),
            ],
        });
        assert_eq!(
            out,
            vec![
                Observation::ClientAppeared,
                Observation::presence(part(ALICE), Status::UNKNOWN),
                Observation::Contact("carol@example.test".into(), away()),
                Observation::Contact("dave@example.test".into(), away()),
                Observation::Synced,
            ]
        );
        assert_eq!(
            signal(&mut t, 11, Signal::Buddy(300)),
            Outcome::need(Need::Buddy(300))
        );
        assert_eq!(
            t.handle_buddy(buddy(86, "carol@example.test")),
            vec![Observation::Contact("carol@example.test".into(), away())]
        );
        // A buddy of an account that is filtered out is not reported.
        assert_eq!(t.handle_buddy(buddy(90, "erin@example.test")), vec![]);
    }
}
