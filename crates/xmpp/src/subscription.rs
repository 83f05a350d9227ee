//! Contact mode: does the watcher account have a presence subscription to the user? (sans-IO)
//!
//! In contact mode imstatus logs in as a separate watcher account and sees the user's
//! resources only through a presence subscription (`to` or `both` in the watcher's roster).
//! Without one it asks for it (`<presence type='subscribe'/>`) and reports `access_denied`
//! while the request is pending — "we cannot see", never "signed out". A refused or cancelled
//! subscription is `access_denied` too, and final: asking again on every reconnect would pester
//! the user; the next start of imstatus asks again.

use xmpp_parsers::jid::BareJid;
use xmpp_parsers::roster::{Ask, Roster, Subscription as Sub};

/// The watcher's subscription to the user's presence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Subscription {
    /// `to` or `both`: the server sends the watcher the user's presence.
    Approved,
    /// Asked for, not answered yet (`ask='subscribe'`).
    Pending,
    /// None: never asked, refused, cancelled or removed from the roster.
    None,
}

/// The subscription to `user` in a roster result or push; `None` when the push does not
/// mention the user.
pub(crate) fn in_roster(roster: &Roster, user: &BareJid) -> Option<Subscription> {
    roster
        .items
        .iter()
        .find(|i| i.jid == *user)
        .map(|item| match (&item.subscription, &item.ask) {
            (Sub::To | Sub::Both, _) => Subscription::Approved,
            (Sub::Remove, _) => Subscription::None,
            (_, Ask::Subscribe) => Subscription::Pending,
            _ => Subscription::None,
        })
}

/// What `access_denied` says while the request is pending.
pub(crate) fn pending_detail(watcher: &BareJid, user: &BareJid) -> String {
    format!(
        "{watcher} has asked {user} for a presence subscription (watch_as = \"contact\"); \
         waiting for {user} to approve it in their client"
    )
}

/// What `access_denied` says when the user refused or cancelled the subscription.
pub(crate) fn refused_detail(watcher: &BareJid, user: &BareJid, when: &str) -> String {
    format!(
        "{user} {when} the presence subscription of {watcher} (watch_as = \"contact\"); \
         imstatus asks again when it is restarted"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use xmpp_parsers::minidom::Element;

    fn roster(xml: &str) -> Roster {
        let el: Element = xml.parse().expect("xml");
        Roster::try_from(el).expect("roster")
    }

    fn alice() -> BareJid {
        BareJid::new("alice@example.test").expect("jid")
    }

    #[test]
    fn subscription_states_come_from_the_roster_item() {
        let cases = [
            ("subscription='both'", Subscription::Approved),
            ("subscription='to'", Subscription::Approved),
            ("subscription='to' ask='subscribe'", Subscription::Approved),
            ("subscription='none' ask='subscribe'", Subscription::Pending),
            ("subscription='from' ask='subscribe'", Subscription::Pending),
            ("subscription='from'", Subscription::None),
            ("subscription='none'", Subscription::None),
            ("subscription='remove'", Subscription::None),
        ];
        for (attrs, expected) in cases {
            let r = roster(&format!(
                "<query xmlns='jabber:iq:roster'><item jid='alice@example.test' {attrs}/></query>"
            ));
            assert_eq!(in_roster(&r, &alice()), Some(expected), "{attrs}");
        }
        let other = roster(
            "<query xmlns='jabber:iq:roster'><item jid='bob@example.test' subscription='both'/></query>",
        );
        assert_eq!(in_roster(&other, &alice()), None);
    }

    #[test]
    fn the_details_name_both_accounts_and_what_to_do() {
        let w = BareJid::new("watcher@example.test").expect("jid");
        let p = pending_detail(&w, &alice());
        assert!(
            p.contains("watcher@example.test has asked alice@example.test"),
            "{p}"
        );
        assert!(p.contains("approve"), "{p}");
        let r = refused_detail(&w, &alice(), "refused");
        assert!(
            r.starts_with(
                "alice@example.test refused the presence subscription of watcher@example.test"
            ),
            "{r}"
        );
    }
}
