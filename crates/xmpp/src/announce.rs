//! `set_status` on an XMPP account: imstatus's own session announces the status (sans-IO: the
//! stanzas; the source sends them).
//!
//! XMPP has no way for one client to change another client's presence: each resource of the
//! user announces its own. So setting "the user's status" means that imstatus's own session
//! (`imstatus-…`, priority −1, so it still never receives the user's messages) announces it to
//! the user's contacts, next to the user's other resources, which keep theirs. A session hidden
//! from the contacts ([`crate::visibility`]) is shown first: XEP-0186 `<visible/>`, or, for an
//! XEP-0016 privacy list, declining the session's active list. Putting the status back
//! ([`Announce::Withdraw`]) hides the session again the same way (XEP-0186 `<invisible/>`, after which the
//! server sends the contacts `unavailable`; for a privacy list, a directed `unavailable` to each
//! contact subscribed to the user's presence, then the list again), or, for a session that was
//! visible anyway, sends its plain initial presence (available, priority −1, no status).

use std::collections::BTreeSet;

use imstatus_core::{Availability, Status};
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::presence::{Presence, Show, Type};
use xmpp_parsers::roster::{Roster, Subscription};

use crate::visibility::Method;

/// The id of the request that shows the hidden session.
pub(crate) const LIFT_ID: &str = "imstatus-visible";

/// What `set_status` / `restore_status` asks of the running session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Announce {
    /// Announce this status from imstatus's own session.
    Status(Status),
    /// Stop announcing: back to how the session was (hidden, or plainly available).
    Withdraw,
}

/// The presence that announces `status` at priority −1; `Err` for what XMPP has no presence
/// for (offline, unknown; invisible is [`Announce::Withdraw`]).
pub(crate) fn presence(status: &Status) -> Result<Presence, String> {
    let show = match status.availability {
        Availability::Available => None,
        Availability::Chatty => Some(Show::Chat),
        Availability::Away => Some(Show::Away),
        Availability::ExtendedAway => Some(Show::Xa),
        Availability::Busy => Some(Show::Dnd),
        a => {
            return Err(format!(
                "XMPP has no presence for `{a}` that imstatus's session could announce (it \
                 stays signed in; `invisible` puts back what was there)"
            ))
        }
    };
    let mut p = Presence::available().with_priority(-1);
    p.show = show;
    if let Some(m) = &status.message {
        p.set_status("", m.as_str());
    }
    Ok(p)
}

/// The plain presence of a visible imstatus session (its initial presence).
pub(crate) fn plain() -> Presence {
    Presence::available().with_priority(-1)
}

/// The request that shows a session hidden with `method`.
pub(crate) fn lift(method: Method) -> Iq {
    let payload = match method {
        Method::InvisibleCommand => "<visible xmlns='urn:xmpp:invisible:0'/>",
        // Declining the active list: the session is under no list, as a plain one.
        Method::PrivacyList => "<query xmlns='jabber:iq:privacy'><active/></query>",
    };
    Iq::Set {
        from: None,
        to: None,
        id: LIFT_ID.to_owned(),
        payload: element(payload),
    }
}

/// A directed `unavailable` to one contact (before a privacy list hides the session again,
/// since the list itself does not tell the contacts the session is gone).
pub(crate) fn unavailable_to(contact: &BareJid) -> Presence {
    Presence::new(Type::Unavailable).with_to(Jid::from(contact.clone()))
}

/// Notes who is subscribed to the user's presence (roster `from`/`both`) from a roster or a
/// roster push: the contacts a privacy-list withdrawal tells. At most
/// [`crate::translate::MAX_CONTACTS`] are kept; more are not told.
pub(crate) fn note_subscribers(subscribers: &mut BTreeSet<BareJid>, roster: &Roster) {
    for item in &roster.items {
        if matches!(item.subscription, Subscription::From | Subscription::Both) {
            if subscribers.len() < crate::translate::MAX_CONTACTS {
                subscribers.insert(item.jid.clone());
            }
        } else {
            subscribers.remove(&item.jid);
        }
    }
}

fn element(xml: &str) -> Element {
    xml.parse()
        .unwrap_or_else(|_| Element::builder("invalid", "urn:imstatus:internal").build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn xml(e: impl Into<Element>) -> String {
        String::from(&e.into())
    }

    #[test]
    fn each_status_becomes_a_presence_at_priority_minus_one() {
        let p = presence(&Status::with_message(Availability::Busy, "In a call")).expect("busy");
        assert_eq!(
            xml(p),
            "<presence xmlns='jabber:client'><show>dnd</show><status>In a call</status>\
             <priority>-1</priority></presence>"
        );
        let p = presence(&Status::new(Availability::Available)).expect("available");
        assert_eq!(
            xml(p),
            "<presence xmlns='jabber:client'><priority>-1</priority></presence>"
        );
        for (a, show) in [
            (Availability::Chatty, "chat"),
            (Availability::Away, "away"),
            (Availability::ExtendedAway, "xa"),
        ] {
            let text = xml(presence(&Status::new(a)).expect("a presence"));
            assert!(text.contains(&format!("<show>{show}</show>")), "{text}");
        }
        for a in [
            Availability::Offline,
            Availability::Unknown,
            Availability::Invisible,
        ] {
            assert!(presence(&Status::new(a)).is_err(), "{a}");
        }
        assert_eq!(
            xml(plain()),
            xml(presence(&Status::new(Availability::Available)).expect("p"))
        );
    }

    #[test]
    fn lifting_each_hiding_method_is_one_request() {
        let text = xml(lift(Method::InvisibleCommand));
        assert!(
            text.contains("<visible xmlns='urn:xmpp:invisible:0'/>") && text.contains("type='set'"),
            "{text}"
        );
        let text = xml(lift(Method::PrivacyList));
        assert!(
            text.contains("<query xmlns='jabber:iq:privacy'><active/></query>"),
            "{text}"
        );
        let bob = BareJid::new("bob@example.test").expect("jid");
        assert_eq!(
            xml(unavailable_to(&bob)),
            "<presence xmlns='jabber:client' to='bob@example.test' type='unavailable'>\
             <priority>0</priority></presence>"
        );
    }
}
