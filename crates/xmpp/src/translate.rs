//! Presence and roster stanzas in, [`Observation`]s out: sans-IO, no clock, no panics.
//!
//! [`Translator`] knows the user's bare JID, our own full JID and whether contacts are
//! tracked. A presence from one of the user's *other* resources becomes a part
//! ([`Observation::Presence`] / [`Observation::Absent`]); our own reflected presence, and that
//! of any other imstatus session (a resource named `imstatus-…`, [`RESOURCE_PREFIX`]), is
//! ignored, so that a one-shot `imstatus status` never shows up as the user signing in to a
//! running `imstatus watch`; a presence from anyone else is a contact, aggregated over its
//! resources (highest priority, then most available) into one [`Observation::Contact`].
//! Anything malformed becomes an [`Observation::Anomaly`] with [`ErrorCode::ProtocolError`],
//! and the next stanza is translated as if nothing happened.

use std::collections::HashMap;
use std::fmt;

use imstatus_core::{
    Availability, ContactId, ErrorCode, Observation, PartId, SignOutReason, Status,
};
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::presence::{Presence, Show, Type};
use xmpp_parsers::roster::Roster;

/// Status texts longer than this many characters are cut (and reported as an anomaly).
pub const MAX_STATUS_CHARS: usize = 1024;

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
    /// Contacts' available resources, this connection.
    contact_resources: HashMap<BareJid, Vec<ContactResource>>,
}

impl Translator {
    /// A translator for the account `user`; `own` is our bound full JID (its reflected
    /// presence is ignored); `contacts` turns contact tracking on.
    pub fn new(user: BareJid, own: Option<FullJid>, contacts: bool) -> Self {
        Translator {
            user,
            own,
            contacts,
            contact_resources: HashMap::new(),
        }
    }

    /// Sets our own full JID (after resource binding).
    pub fn set_own(&mut self, own: FullJid) {
        self.own = Some(own);
    }

    /// Forgets what this connection saw of contacts (call on every new connection).
    pub fn reset(&mut self) {
        self.contact_resources.clear();
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
        } else if self.contacts {
            self.handle_contact(from, presence, out);
        }
    }

    /// Roster items become contacts; those without a presence on this connection yet are
    /// reported offline. Call it with the roster result (before `Synced`) and with pushes.
    pub fn handle_roster(&mut self, roster: &Roster, out: &mut Vec<Observation>) {
        if !self.contacts {
            return;
        }
        for item in &roster.items {
            if item.jid == self.user {
                continue;
            }
            if !self.contact_resources.contains_key(&item.jid) {
                out.push(Observation::Contact(
                    ContactId::new(item.jid.as_str()),
                    Status::OFFLINE,
                ));
            }
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
        let part = PartId::new(resource.as_str());
        match presence.type_ {
            Type::None => {
                let status = self.status(from, presence, out);
                out.push(Observation::Presence {
                    part,
                    status,
                    priority: Some(i32::from(presence.priority.0)),
                });
            }
            Type::Unavailable => {
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
            if text.chars().nth(MAX_STATUS_CHARS).is_some() {
                out.push(anomaly(format!(
                    "status text of {} characters from {} cut to {MAX_STATUS_CHARS}",
                    text.chars().count(),
                    clip(from.as_str(), MAX_DETAIL_CHARS)
                )));
                text.chars().take(MAX_STATUS_CHARS).collect()
            } else {
                text.to_owned()
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

/// At most `max` characters of `text`, with `…` when cut.
pub(crate) fn clip(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => {
            let mut s = text.get(..at).unwrap_or_default().to_owned();
            s.push('…');
            s
        }
        None => text.to_owned(),
    }
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
        let mut t = translator(true);
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
        let mut t = translator(true);
        run(
            &mut t,
            "<presence xmlns='jabber:client' from='bob@example.test/laptop'/>",
        );
        let roster: Element = "<query xmlns='jabber:iq:roster'>\
             <item jid='bob@example.test' subscription='both'/>\
             <item jid='carol@example.test' subscription='to'/>\
             <item jid='alice@example.test' subscription='both'/></query>"
            .parse()
            .expect("xml");
        let roster = Roster::try_from(roster).expect("roster");
        let mut out = Vec::new();
        t.handle_roster(&roster, &mut out);
        assert_eq!(
            out,
            vec![Observation::Contact(
                ContactId::new("carol@example.test"),
                Status::OFFLINE
            )]
        );
    }

    #[test]
    fn clip_cuts_on_character_boundaries() {
        assert_eq!(clip("abc", 5), "abc");
        assert_eq!(clip("äöüß", 2), "äö…");
    }
}
