//! Presence and roster stanzas in, [`Observation`]s out: sans-IO, no clock, no panics.
//!
//! [`Translator`] knows the user's bare JID, our own full JID and whether contacts are
//! tracked. A presence from one of the user's *other* resources becomes a part
//! ([`Observation::Presence`] / [`Observation::Absent`]); our own reflected presence, and that
//! of any other imstatus session (a resource named `imstatus-…`, [`RESOURCE_PREFIX`]), is
//! ignored, so that a one-shot `imstatus status` never shows up as the user signing in to a
//! running `imstatus watch`; a presence from a roster contact (when contacts are tracked) is
//! aggregated over its resources (highest priority, then most available) into one
//! [`Observation::Contact`]; a presence from anyone else creates nothing.
//! Anything malformed becomes an [`Observation::Anomaly`] with [`ErrorCode::ProtocolError`],
//! and the next stanza is translated as if nothing happened.
//!
//! Peer data is bounded here: at most [`MAX_CONTACTS`] contacts and [`MAX_RESOURCES`] resources
//! per account and per contact are tracked (each cap reported once when hit), status texts are
//! cut to [`MAX_STATUS_CHARS`] (the guard has already bounded the whole stanza), and control
//! characters in anything a peer wrote (status texts, resource names, quoted errors) are
//! replaced ([`sanitize`]), so that they cannot forge lines in human output.

use std::collections::{HashMap, HashSet};
use std::fmt;

use imstatus_core::text::{clip, sanitize};
use imstatus_core::{
    Availability, ContactId, ErrorCode, Observation, PartId, SignOutReason, Status,
};
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::presence::{Presence, Show, Type};
use xmpp_parsers::roster::{Roster, Subscription};

/// Status texts longer than this many characters are cut (and reported as an anomaly).
pub use imstatus_core::text::MAX_STATUS_CHARS;

/// At most this many roster contacts are tracked; more are ignored (reported once).
pub const MAX_CONTACTS: usize = 100_000;

/// At most this many resources are tracked for the account, and for each contact; more are
/// ignored (reported once).
pub const MAX_RESOURCES: usize = 256;

/// How much of a peer-supplied string (a JID, an error) an anomaly's detail quotes.
const MAX_DETAIL_CHARS: usize = 200;

/// The start of every resource imstatus binds (`imstatus-<random>`, `imstatus-doctor-…`):
/// such resources are watchers, never the user's clients.
pub const RESOURCE_PREFIX: &str = "imstatus-";

/// Prosody's status text on the `unavailable` it sends for a session that ended without one
/// (connection dropped, client killed, server shutdown).
const DISCONNECTED_PREFIX: &str = "Disconnected:";

/// One resource of a contact.
#[derive(Debug, Clone)]
struct ContactResource {
    resource: String,
    priority: i8,
    status: Status,
}

/// Translates what the server sends into observations of one account (see the module docs).
#[derive(Debug, Clone)]
pub struct Translator {
    user: BareJid,
    own: Option<FullJid>,
    contacts: bool,
    /// The roster's contacts (when contacts are tracked): only they are heard.
    roster: HashSet<BareJid>,
    /// Contacts' available resources, this connection.
    contact_resources: HashMap<BareJid, Vec<ContactResource>>,
    /// The user's other resources that are available, this connection.
    own_resources: HashSet<String>,
    /// Whether the contact cap has been reported.
    warned_contacts: bool,
    /// Whether a resource cap has been reported.
    warned_resources: bool,
}

impl Translator {
    /// A translator for the account `user`; `own` is our bound full JID (its reflected
    /// presence is ignored); `contacts` turns contact tracking on.
    pub fn new(user: BareJid, own: Option<FullJid>, contacts: bool) -> Self {
        Translator {
            user,
            own,
            contacts,
            roster: HashSet::new(),
            contact_resources: HashMap::new(),
            own_resources: HashSet::new(),
            warned_contacts: false,
            warned_resources: false,
        }
    }

    /// Sets our own full JID (after resource binding).
    pub fn set_own(&mut self, own: FullJid) {
        self.own = Some(own);
    }

    /// Forgets what this connection saw (call on every new connection).
    pub fn reset(&mut self) {
        self.roster.clear();
        self.contact_resources.clear();
        self.own_resources.clear();
    }

    /// Translates one stanza element. Presences are translated; other elements are ignored.
    pub fn handle_element(&mut self, element: Element, out: &mut Vec<Observation>) {
        if !element.is("presence", xmpp_parsers::ns::DEFAULT_NS) {
            return;
        }
        let from = element.attr("from").map(str::to_owned);
        match Presence::try_from(element) {
            Ok(presence) => self.handle_presence(&presence, out),
            Err(e) => self.handle_invalid_presence(from.as_deref(), &e, out),
        }
    }

    /// Reports a presence that failed to parse (unknown `<show/>`, bad priority, bad JID…),
    /// unless it came from our own resource.
    pub fn handle_invalid_presence(
        &mut self,
        from: Option<&str>,
        error: &dyn fmt::Display,
        out: &mut Vec<Observation>,
    ) {
        if let (Some(from), Some(own)) = (from, &self.own) {
            if from == own.as_str() {
                return;
            }
        }
        // Only the user's and the roster's stanzas are worth an anomaly; a stranger's junk is
        // not reported (it would let anyone fill the event log).
        if from.is_some_and(|f| self.is_stranger(f)) {
            return;
        }
        let from = from.map_or_else(|| "(no from)".to_owned(), |f| clip(f, MAX_DETAIL_CHARS));
        out.push(anomaly(format!(
            "invalid presence from {from}: {}",
            clip(&error.to_string(), MAX_DETAIL_CHARS)
        )));
    }

    /// Translates one parsed presence.
    pub fn handle_presence(&mut self, presence: &Presence, out: &mut Vec<Observation>) {
        let Some(from) = &presence.from else {
            out.push(anomaly("presence without `from`".to_owned()));
            return;
        };
        if self.is_user(from) {
            self.handle_own(from, presence, out);
        } else if self.contacts && self.roster.contains(&from.to_bare()) {
            self.handle_contact(from, presence, out);
        }
    }

    /// Learns the roster (the result of the roster request) without reporting anything:
    /// presence from its contacts is heard from now on. Call it before the initial presence,
    /// and [`Translator::handle_roster`] with the same roster once the initial presences are in.
    pub fn set_roster(&mut self, roster: &Roster, out: &mut Vec<Observation>) {
        if !self.contacts {
            return;
        }
        self.roster.clear();
        for item in &roster.items {
            if item.subscription != Subscription::Remove {
                self.add_contact(&item.jid, out);
            }
        }
    }

    /// Roster items become contacts; those without a presence on this connection yet are
    /// reported offline, and removed ones are forgotten (offline if they were online). Call it
    /// with the roster result (before `Synced`) and with pushes.
    pub fn handle_roster(&mut self, roster: &Roster, out: &mut Vec<Observation>) {
        if !self.contacts {
            return;
        }
        for item in &roster.items {
            if item.jid == self.user {
                continue;
            }
            let id = || ContactId::new(item.jid.as_str());
            if item.subscription == Subscription::Remove {
                self.roster.remove(&item.jid);
                if self
                    .contact_resources
                    .remove(&item.jid)
                    .is_some_and(|rs| !rs.is_empty())
                {
                    out.push(Observation::Contact(id(), Status::OFFLINE));
                }
                continue;
            }
            if !self.add_contact(&item.jid, out) {
                continue;
            }
            if !self.contact_resources.contains_key(&item.jid) {
                out.push(Observation::Contact(id(), Status::OFFLINE));
            }
        }
    }

    /// Adds `jid` to the roster unless the cap is reached; whether it is a contact now.
    fn add_contact(&mut self, jid: &BareJid, out: &mut Vec<Observation>) -> bool {
        if *jid == self.user {
            return false;
        }
        if self.roster.contains(jid) {
            return true;
        }
        if self.roster.len() >= MAX_CONTACTS {
            if !self.warned_contacts {
                self.warned_contacts = true;
                out.push(anomaly(format!(
                    "the roster has more than {MAX_CONTACTS} contacts; only the first \
                     {MAX_CONTACTS} are tracked"
                )));
            }
            return false;
        }
        self.roster.insert(jid.clone());
        true
    }

    /// Whether the raw `from` of an invalid stanza names neither the user nor a contact.
    pub(crate) fn is_stranger(&self, from: &str) -> bool {
        match Jid::new(from) {
            Ok(jid) => {
                let contact = self.contacts && self.roster.contains(&jid.to_bare());
                !self.is_user(&jid) && !contact
            }
            // Unparseable: it came through the server, so it is reported (clipped, sanitised).
            Err(_) => false,
        }
    }

    /// Reports a resource cap once.
    fn resource_cap(&mut self, whose: &str, out: &mut Vec<Observation>) {
        if !self.warned_resources {
            self.warned_resources = true;
            out.push(anomaly(format!(
                "{} has more than {MAX_RESOURCES} resources online; only {MAX_RESOURCES} are tracked",
                clip(whose, MAX_DETAIL_CHARS)
            )));
        }
    }

    /// Is `jid` (bare or full) the account's own?
    pub(crate) fn is_user(&self, jid: &Jid) -> bool {
        jid.node() == self.user.node() && jid.domain() == self.user.domain()
    }

    fn handle_own(&mut self, from: &Jid, presence: &Presence, out: &mut Vec<Observation>) {
        if let Some(own) = &self.own {
            if from.as_str() == own.as_str() {
                return;
            }
        }
        let Some(resource) = from.resource() else {
            // A bare `unavailable` is a server's answer to a probe when the user has no
            // available resource (what a watcher account sees); nothing to report.
            if !matches!(presence.type_, Type::Error | Type::Unavailable) {
                out.push(anomaly(format!(
                    "presence from the account's bare JID {} without a resource",
                    clip(from.as_str(), MAX_DETAIL_CHARS)
                )));
            }
            return;
        };
        if resource.as_str().starts_with(RESOURCE_PREFIX) {
            return;
        }
        let part = PartId::new(sanitize(resource.as_str()).as_ref());
        match presence.type_ {
            Type::None => {
                if !self.own_resources.contains(resource.as_str()) {
                    if self.own_resources.len() >= MAX_RESOURCES {
                        let user = self.user.to_string();
                        self.resource_cap(&user, out);
                        return;
                    }
                    self.own_resources.insert(resource.as_str().to_owned());
                }
                let status = self.status(from, presence, out);
                out.push(Observation::Presence {
                    part,
                    status,
                    priority: Some(i32::from(presence.priority.0)),
                });
            }
            Type::Unavailable => {
                self.own_resources.remove(resource.as_str());
                let reason = match best_status(presence) {
                    Some(text) if text.starts_with(DISCONNECTED_PREFIX) => {
                        SignOutReason::ConnectionLost
                    }
                    _ => SignOutReason::User,
                };
                out.push(Observation::Absent(part, reason));
            }
            Type::Error => out.push(anomaly(format!(
                "presence error from {}",
                clip(from.as_str(), MAX_DETAIL_CHARS)
            ))),
            // Subscription management and probes say nothing about the user's presence.
            _ => {}
        }
    }

    fn handle_contact(&mut self, from: &Jid, presence: &Presence, out: &mut Vec<Observation>) {
        let bare = from.to_bare();
        let resource = from.resource().map_or("", |r| r.as_str());
        match presence.type_ {
            Type::None => {
                let known = self
                    .contact_resources
                    .get(&bare)
                    .map_or(0, |rs| rs.iter().filter(|r| r.resource != resource).count());
                let new = self
                    .contact_resources
                    .get(&bare)
                    .is_none_or(|rs| rs.iter().all(|r| r.resource != resource));
                if new && known >= MAX_RESOURCES {
                    self.resource_cap(bare.as_str(), out);
                    return;
                }
                let status = self.status(from, presence, out);
                let resources = self.contact_resources.entry(bare.clone()).or_default();
                let entry = ContactResource {
                    resource: resource.to_owned(),
                    priority: presence.priority.0,
                    status,
                };
                match resources.iter_mut().find(|r| r.resource == resource) {
                    Some(r) => *r = entry,
                    None => resources.push(entry),
                }
            }
            Type::Unavailable | Type::Error => {
                // A roster contact going offline: keep an (empty) entry, so that the roster
                // step knows it has been heard from.
                let resources = self.contact_resources.entry(bare.clone()).or_default();
                if resource.is_empty() || presence.type_ == Type::Error {
                    resources.clear();
                } else {
                    resources.retain(|r| r.resource != resource);
                }
            }
            _ => return,
        }
        let status = self
            .contact_resources
            .get(&bare)
            .and_then(|rs| {
                rs.iter()
                    .max_by_key(|r| (r.priority, r.status.availability.rank()))
                    .map(|r| r.status.clone())
            })
            .unwrap_or(Status::OFFLINE);
        out.push(Observation::Contact(ContactId::new(bare.as_str()), status));
    }

    /// The status of an available presence; a huge text is cut and reported.
    fn status(&self, from: &Jid, presence: &Presence, out: &mut Vec<Observation>) -> Status {
        let availability = match &presence.show {
            None => Availability::Available,
            Some(Show::Chat) => Availability::Chatty,
            Some(Show::Dnd) => Availability::Busy,
            Some(Show::Away) => Availability::Away,
            Some(Show::Xa) => Availability::ExtendedAway,
        };
        let message = best_status(presence).map(|text| {
            let text = sanitize(text);
            if text.chars().nth(MAX_STATUS_CHARS).is_some() {
                out.push(anomaly(format!(
                    "status text of {} characters from {} cut to {MAX_STATUS_CHARS}",
                    text.chars().count(),
                    clip(from.as_str(), MAX_DETAIL_CHARS)
                )));
                text.chars().take(MAX_STATUS_CHARS).collect()
            } else {
                text.into_owned()
            }
        });
        Status {
            availability,
            message: message.filter(|m| !m.is_empty()),
        }
    }
}

/// The status text without a language, else the first one.
fn best_status(presence: &Presence) -> Option<&str> {
    presence
        .statuses
        .iter()
        .find(|(lang, _)| lang.0.is_empty())
        .or_else(|| presence.statuses.iter().next())
        .map(|(_, text)| text.as_str())
}

fn anomaly(detail: String) -> Observation {
    Observation::Anomaly(ErrorCode::ProtocolError, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "alice@example.test/imstatus-1";

    fn translator(contacts: bool) -> Translator {
        Translator::new(
            BareJid::new("alice@example.test").expect("jid"),
            Some(FullJid::new(OWN).expect("jid")),
            contacts,
        )
    }

    fn run(t: &mut Translator, xml: &str) -> Vec<Observation> {
        let element: Element = xml.parse().expect("well-formed test XML");
        let mut out = Vec::new();
        t.handle_element(element, &mut out);
        out
    }

    fn one(xml: &str) -> Vec<Observation> {
        run(&mut translator(false), xml)
    }

    fn roster(xml: &str) -> Roster {
        let el: Element = xml.parse().expect("xml");
        Roster::try_from(el).expect("roster")
    }

    /// A translator tracking contacts, with bob and carol in the roster.
    fn with_roster() -> Translator {
        let mut t = translator(true);
        let mut out = Vec::new();
        t.set_roster(
            &roster(
                "<query xmlns='jabber:iq:roster'>\
                 <item jid='bob@example.test' subscription='both'/>\
                 <item jid='carol@example.test' subscription='to'/>\
                 <item jid='alice@example.test' subscription='both'/></query>",
            ),
            &mut out,
        );
        assert_eq!(out, vec![], "learning the roster reports nothing");
        t
    }

    fn presence(
        part: &str,
        availability: Availability,
        message: Option<&str>,
        priority: i32,
    ) -> Observation {
        Observation::Presence {
            part: PartId::new(part),
            status: Status {
                availability,
                message: message.map(str::to_owned),
            },
            priority: Some(priority),
        }
    }

    fn is_anomaly(o: &Observation) -> bool {
        matches!(o, Observation::Anomaly(ErrorCode::ProtocolError, _))
    }

    #[test]
    fn each_show_value_maps_to_its_availability() {
        let cases = [
            ("", Availability::Available),
            ("<show>chat</show>", Availability::Chatty),
            ("<show>away</show>", Availability::Away),
            ("<show>xa</show>", Availability::ExtendedAway),
            ("<show>dnd</show>", Availability::Busy),
        ];
        for (show, availability) in cases {
            let xml = format!(
                "<presence xmlns='jabber:client' from='alice@example.test/desk'>{show}</presence>"
            );
            assert_eq!(
                one(&xml),
                vec![presence("desk", availability, None, 0)],
                "{show}"
            );
        }
    }

    #[test]
    fn priority_and_status_text_are_kept() {
        let out = one(
            "<presence xmlns='jabber:client' from='alice@example.test/desk'>\
             <show>away</show><status>lunch</status><priority>5</priority></presence>",
        );
        assert_eq!(
            out,
            vec![presence("desk", Availability::Away, Some("lunch"), 5)]
        );
        let out = one(
            "<presence xmlns='jabber:client' from='alice@example.test/phone'>\
             <priority>-3</priority><status xml:lang='de'>Mittag</status><status>noon</status></presence>",
        );
        assert_eq!(
            out,
            vec![presence("phone", Availability::Available, Some("noon"), -3)]
        );
    }

    #[test]
    fn finch_style_presence_with_caps_and_vcard_payloads_is_understood() {
        let out = one(
            "<presence xmlns='jabber:client' from='alice@example.test/finch' to='alice@example.test/imstatus-1'>\
             <priority>1</priority><c xmlns='http://jabber.org/protocol/caps' node='http://pidgin.im/' hash='sha-1' ver='x'/>\
             <x xmlns='vcard-temp:x:update'><photo/></x></presence>",
        );
        assert_eq!(
            out,
            vec![presence("finch", Availability::Available, None, 1)]
        );
    }

    #[test]
    fn unavailable_is_absent_and_prosodys_disconnected_text_means_connection_lost() {
        let out = one(
            "<presence xmlns='jabber:client' from='alice@example.test/desk' type='unavailable'/>",
        );
        assert_eq!(
            out,
            vec![Observation::Absent(
                PartId::new("desk"),
                SignOutReason::User
            )]
        );
        let out = one(
            "<presence xmlns='jabber:client' from='alice@example.test/desk' type='unavailable'>\
             <status>Disconnected: connection closed</status></presence>",
        );
        assert_eq!(
            out,
            vec![Observation::Absent(
                PartId::new("desk"),
                SignOutReason::ConnectionLost
            )]
        );
    }

    #[test]
    fn our_own_reflected_presence_is_ignored_even_when_invalid() {
        assert_eq!(
            one("<presence xmlns='jabber:client' from='alice@example.test/imstatus-1'><priority>-1</priority></presence>"),
            vec![]
        );
        assert_eq!(
            one("<presence xmlns='jabber:client' from='alice@example.test/imstatus-1'><show>zzz</show></presence>"),
            vec![]
        );
    }

    #[test]
    fn other_imstatus_sessions_of_the_user_are_not_the_user() {
        let mut t = translator(false);
        for xml in [
            "<presence xmlns='jabber:client' from='alice@example.test/imstatus-0123456789abcdef'><priority>-1</priority></presence>",
            "<presence xmlns='jabber:client' from='alice@example.test/imstatus-doctor-1234'/>",
            "<presence xmlns='jabber:client' from='alice@example.test/imstatus-0123456789abcdef' type='unavailable'/>",
        ] {
            assert_eq!(run(&mut t, xml), vec![], "{xml}");
        }
        assert_eq!(
            run(
                &mut t,
                "<presence xmlns='jabber:client' from='alice@example.test/imstatusbox'/>"
            ),
            vec![presence("imstatusbox", Availability::Available, None, 0)],
            "only the exact prefix marks a watcher"
        );
    }

    #[test]
    fn a_bare_unavailable_from_the_user_is_a_probe_answer_and_says_nothing() {
        assert_eq!(
            one("<presence xmlns='jabber:client' from='alice@example.test' type='unavailable'/>"),
            vec![]
        );
    }

    #[test]
    fn presence_without_from_is_an_anomaly() {
        let out = one("<presence xmlns='jabber:client'><show>away</show></presence>");
        assert_eq!(out.len(), 1);
        assert!(is_anomaly(&out[0]), "{out:?}");
    }

    #[test]
    fn unknown_show_and_bad_priority_are_anomalies_that_change_nothing() {
        for xml in [
            "<presence xmlns='jabber:client' from='alice@example.test/desk'><show>sleeping</show></presence>",
            "<presence xmlns='jabber:client' from='alice@example.test/desk'><priority>200</priority></presence>",
            "<presence xmlns='jabber:client' from='alice@example.test/desk'><priority>high</priority></presence>",
            "<presence xmlns='jabber:client' from='alice@example.test/desk' type='sideways'/>",
            "<presence xmlns='jabber:client' from='@@not a jid'/>",
        ] {
            let out = one(xml);
            assert_eq!(out.len(), 1, "{xml}: {out:?}");
            assert!(is_anomaly(&out[0]), "{xml}: {out:?}");
        }
        let out = one("<presence xmlns='jabber:client' from='alice@example.test/desk'><show>sleeping</show></presence>");
        let Observation::Anomaly(_, detail) = &out[0] else {
            panic!("anomaly expected");
        };
        assert!(detail.contains("alice@example.test/desk"), "{detail}");
    }

    #[test]
    fn the_translator_keeps_going_after_malformed_stanzas() {
        let mut t = translator(false);
        assert!(is_anomaly(
            &run(&mut t, "<presence xmlns='jabber:client'/>")[0]
        ));
        assert!(is_anomaly(
            &run(&mut t, "<presence xmlns='jabber:client' from='alice@example.test/x'><show>?</show></presence>")[0]
        ));
        assert_eq!(
            run(
                &mut t,
                "<presence xmlns='jabber:client' from='alice@example.test/desk'/>"
            ),
            vec![presence("desk", Availability::Available, None, 0)]
        );
    }

    #[test]
    fn huge_status_text_is_cut_and_reported() {
        let text = "ü".repeat(100_000);
        let xml = format!(
            "<presence xmlns='jabber:client' from='alice@example.test/desk'><status>{text}</status></presence>"
        );
        let out = one(&xml);
        assert_eq!(out.len(), 2, "anomaly and presence");
        assert!(is_anomaly(&out[0]));
        let Observation::Presence { status, .. } = &out[1] else {
            panic!("presence expected: {out:?}");
        };
        let message = status.message.as_deref().unwrap_or_default();
        assert_eq!(message.chars().count(), MAX_STATUS_CHARS);
        assert!(message.chars().all(|c| c == 'ü'));
    }

    #[test]
    fn a_bare_jid_presence_from_the_account_is_an_anomaly() {
        let out = one("<presence xmlns='jabber:client' from='alice@example.test'/>");
        assert!(is_anomaly(&out[0]), "{out:?}");
    }

    #[test]
    fn subscription_requests_and_probes_say_nothing() {
        for ty in [
            "subscribe",
            "subscribed",
            "unsubscribe",
            "unsubscribed",
            "probe",
        ] {
            let xml = format!(
                "<presence xmlns='jabber:client' from='alice@example.test/desk' type='{ty}'/>"
            );
            assert_eq!(one(&xml), vec![], "{ty}");
            let xml =
                format!("<presence xmlns='jabber:client' from='bob@example.test' type='{ty}'/>");
            assert_eq!(run(&mut translator(true), &xml), vec![], "{ty}");
        }
    }

    #[test]
    fn other_jids_are_ignored_without_contact_tracking() {
        assert_eq!(
            one("<presence xmlns='jabber:client' from='bob@example.test/laptop'><show>dnd</show></presence>"),
            vec![]
        );
        assert_eq!(
            one("<presence xmlns='jabber:client' from='alice@other.test/desk'/>"),
            vec![],
            "same local part, other domain: not the user"
        );
    }

    #[test]
    fn contacts_are_aggregated_over_their_resources() {
        let mut t = with_roster();
        let bob = |a, m: Option<&str>| {
            Observation::Contact(
                ContactId::new("bob@example.test"),
                Status {
                    availability: a,
                    message: m.map(str::to_owned),
                },
            )
        };
        assert_eq!(
            run(&mut t, "<presence xmlns='jabber:client' from='bob@example.test/laptop'><show>away</show><priority>5</priority></presence>"),
            vec![bob(Availability::Away, None)]
        );
        assert_eq!(
            run(&mut t, "<presence xmlns='jabber:client' from='bob@example.test/phone'><status>hi</status><priority>1</priority></presence>"),
            vec![bob(Availability::Away, None)],
            "higher priority wins over more available"
        );
        assert_eq!(
            run(&mut t, "<presence xmlns='jabber:client' from='bob@example.test/tablet'><show>chat</show><priority>5</priority></presence>"),
            vec![bob(Availability::Chatty, None)],
            "same priority: more available wins"
        );
        run(
            &mut t,
            "<presence xmlns='jabber:client' from='bob@example.test/tablet' type='unavailable'/>",
        );
        assert_eq!(
            run(&mut t, "<presence xmlns='jabber:client' from='bob@example.test/laptop' type='unavailable'/>"),
            vec![bob(Availability::Available, Some("hi"))]
        );
        assert_eq!(
            run(&mut t, "<presence xmlns='jabber:client' from='bob@example.test/phone' type='unavailable'/>"),
            vec![bob(Availability::Offline, None)]
        );
    }

    #[test]
    fn roster_items_without_presence_are_offline() {
        let mut t = with_roster();
        run(
            &mut t,
            "<presence xmlns='jabber:client' from='bob@example.test/laptop'/>",
        );
        let mut out = Vec::new();
        t.handle_roster(
            &roster(
                "<query xmlns='jabber:iq:roster'>\
                 <item jid='bob@example.test' subscription='both'/>\
                 <item jid='carol@example.test' subscription='to'/>\
                 <item jid='alice@example.test' subscription='both'/></query>",
            ),
            &mut out,
        );
        assert_eq!(
            out,
            vec![Observation::Contact(
                ContactId::new("carol@example.test"),
                Status::OFFLINE
            )]
        );
    }

    #[test]
    fn strangers_create_nothing_not_even_with_unavailable_or_junk() {
        let mut t = with_roster();
        for xml in [
            "<presence xmlns='jabber:client' from='mallory@evil.test/x'><show>dnd</show></presence>",
            "<presence xmlns='jabber:client' from='mallory@evil.test/x' type='unavailable'/>",
            "<presence xmlns='jabber:client' from='mallory@evil.test' type='error'/>",
            "<presence xmlns='jabber:client' from='mallory@evil.test/x'><show>sleeping</show></presence>",
            "<presence xmlns='jabber:client' from='mallory@evil.test/x'><priority>999</priority></presence>",
        ] {
            assert_eq!(run(&mut t, xml), vec![], "{xml}");
        }
        assert!(t.contact_resources.is_empty(), "{:?}", t.contact_resources);
        // Without the roster, nobody is a contact.
        let mut t = translator(true);
        assert_eq!(
            run(
                &mut t,
                "<presence xmlns='jabber:client' from='bob@example.test/x'/>"
            ),
            vec![]
        );
        assert!(t.contact_resources.is_empty());
    }

    #[test]
    fn a_removed_contact_is_forgotten_and_shown_offline_if_it_was_online() {
        let mut t = with_roster();
        run(
            &mut t,
            "<presence xmlns='jabber:client' from='bob@example.test/laptop'/>",
        );
        let mut out = Vec::new();
        t.handle_roster(
            &roster(
                "<query xmlns='jabber:iq:roster'>\
                 <item jid='bob@example.test' subscription='remove'/>\
                 <item jid='carol@example.test' subscription='remove'/></query>",
            ),
            &mut out,
        );
        assert_eq!(
            out,
            vec![Observation::Contact(
                ContactId::new("bob@example.test"),
                Status::OFFLINE
            )]
        );
        assert_eq!(
            run(
                &mut t,
                "<presence xmlns='jabber:client' from='bob@example.test/laptop'/>"
            ),
            vec![],
            "no longer a contact"
        );
        assert!(
            t.contact_resources.is_empty()
                && !t
                    .roster
                    .contains(&BareJid::new("bob@example.test").expect("jid"))
        );
    }

    #[test]
    fn contacts_beyond_the_cap_are_ignored_and_reported_once() {
        let mut t = translator(true);
        let items: String = (0..MAX_CONTACTS + 10)
            .map(|i| format!("<item jid='c{i}@example.test' subscription='both'/>"))
            .collect();
        let big = roster(&format!("<query xmlns='jabber:iq:roster'>{items}</query>"));
        let mut out = Vec::new();
        t.set_roster(&big, &mut out);
        assert_eq!(out.len(), 1, "one anomaly");
        assert!(is_anomaly(&out[0]), "{:?}", out[0]);
        assert_eq!(t.roster.len(), MAX_CONTACTS);
        let mut out = Vec::new();
        t.handle_roster(&big, &mut out);
        assert_eq!(
            out.len(),
            MAX_CONTACTS,
            "offline contacts, and no second anomaly"
        );
        let last = format!("c{}@example.test", MAX_CONTACTS + 1);
        assert_eq!(
            run(
                &mut t,
                &format!("<presence xmlns='jabber:client' from='{last}/x'/>")
            ),
            vec![]
        );
    }

    #[test]
    fn resources_beyond_the_cap_are_ignored_and_reported_once() {
        let mut t = with_roster();
        let mut anomalies = 0;
        let mut parts = 0;
        for i in 0..MAX_RESOURCES + 5 {
            for o in run(
                &mut t,
                &format!("<presence xmlns='jabber:client' from='alice@example.test/r{i}'/>"),
            ) {
                match o {
                    Observation::Presence { .. } => parts += 1,
                    o if is_anomaly(&o) => anomalies += 1,
                    o => panic!("{o:?}"),
                }
            }
        }
        assert_eq!((parts, anomalies), (MAX_RESOURCES, 1));
        // One that leaves makes room for one more.
        run(
            &mut t,
            "<presence xmlns='jabber:client' from='alice@example.test/r0' type='unavailable'/>",
        );
        assert_eq!(
            run(
                &mut t,
                "<presence xmlns='jabber:client' from='alice@example.test/new'/>"
            )
            .len(),
            1
        );
        for i in 0..MAX_RESOURCES + 5 {
            run(
                &mut t,
                &format!("<presence xmlns='jabber:client' from='bob@example.test/r{i}'/>"),
            );
        }
        let bob = BareJid::new("bob@example.test").expect("jid");
        assert_eq!(t.contact_resources[&bob].len(), MAX_RESOURCES);
    }

    #[test]
    fn control_characters_cannot_forge_lines() {
        let out = one(
            "<presence xmlns='jabber:client' from='alice@example.test/desk'>\
             <status>lunch&#10;10:00:00.000  desktop    signed_out&#13;&#9;&#x9b;31m&#x7f;&#x202e;x&#x85;y&#x2028;</status></presence>",
        );
        let Observation::Presence { status, .. } = &out[0] else {
            panic!("{out:?}");
        };
        assert_eq!(
            status.message.as_deref(),
            // (ESC itself cannot occur: XML 1.0 forbids it; C1's CSI can.)
            Some("lunch 10:00:00.000  desktop    signed_out  \u{fffd}31m\u{fffd}\u{fffd}x y ")
        );
        // JIDs with control characters do not parse (stringprep), so they never become parts.
        assert!(Jid::new("alice@example.test/a\nb").is_err());
        assert!(Jid::new("alice@example.test/a\u{202e}b").is_err());
        // Quoted peer text in anomalies is clean too.
        let out = one("<presence xmlns='jabber:client' from='alice@example.test/desk'><show>a&#10;b</show></presence>");
        let Observation::Anomaly(_, detail) = &out[0] else {
            panic!("{out:?}");
        };
        assert!(!detail.chars().any(char::is_control), "{detail:?}");
        assert_eq!(
            sanitize("plain text"),
            std::borrow::Cow::Borrowed("plain text")
        );
    }
}
