//! The end of the initial presences, on servers that deliver them in order and on servers that
//! do not (sans-IO).
//!
//! Prosody handles a stream's stanzas in order and answers presence probes synchronously, so
//! every presence the initial presence brings is delivered before the answer to an IQ sent
//! after it. ejabberd answers probes from each contact's (and each of the user's resources')
//! own session process: those answers routinely arrive *after* such an IQ's result (measured:
//! nearly always on loopback). So after the initial presence the source asks the server, with
//! a disco#items to the user's bare JID, which of the user's resources are online. A server
//! that lists online resources (ejabberd) lists ours among them; then each watched contact is
//! asked too (a bounded number of requests in flight, see `source`), and the login ends once
//! each listed resource has sent a presence — or after a short settle time for one that never
//! does (a session bound but not yet available, a contact hiding from us). A server that does
//! not list our own session (Prosody) lists no one's: its contacts are not asked (5,000
//! requests that would each come back empty), except those on other domains, whose servers
//! may list them. Resources named `imstatus-…` are other watchers and never waited for.
//!
//! Every step is O(1) per stanza: the census keeps the expected resources that have not spoken
//! yet in a set, so a presence removes its entry and "is anyone missing" is a length check.

use std::collections::{BTreeSet, HashSet};

use xmpp_parsers::disco::DiscoItemsResult;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::minidom::Element;

use crate::translate::RESOURCE_PREFIX;

/// Who has sent a presence during the login, and whose presence the login waits for.
#[derive(Debug, Default)]
pub(crate) struct Census {
    /// The bare JIDs whose resources matter: the user and the watched contacts.
    watched: BTreeSet<BareJid>,
    /// Listed resources that have not sent a presence yet.
    missing: HashSet<String>,
    /// Full JIDs that have sent a presence (so that a listing that comes later expects
    /// nothing of them).
    seen: HashSet<String>,
    /// How many resources were ever expected (the cap).
    expected: usize,
    /// The login is over: nothing is recorded any more.
    finished: bool,
}

impl Census {
    /// Sets whose resources matter (before the first presence can arrive).
    pub(crate) fn watch(&mut self, watched: &[BareJid]) {
        self.watched = watched.iter().take(MAX_TRACKED).cloned().collect();
    }

    /// Notes a presence (of any type) from `from`, if it is from a watched JID and the login
    /// is not over: nobody else can grow the census.
    pub(crate) fn saw(&mut self, from: &str) {
        if self.finished {
            return;
        }
        let Ok(jid) = Jid::new(from) else { return };
        if !self.watched.contains(&jid.to_bare()) {
            return;
        }
        if !self.missing.remove(jid.as_str()) && self.seen.len() < MAX_TRACKED {
            self.seen.insert(jid.as_str().to_owned());
        }
    }

    /// The login is over: forgets everything and records nothing more.
    pub(crate) fn finish(&mut self) {
        *self = Census {
            finished: true,
            ..Census::default()
        };
    }

    /// Adds the resources of `queried` listed in a disco#items result to the expected ones,
    /// except `own` and other imstatus sessions. Anything else (nodes, other JIDs, an
    /// unparseable payload) is ignored. Returns whether the list named `own`: then the server
    /// lists online resources (and our session is one).
    pub(crate) fn expect(
        &mut self,
        queried: &BareJid,
        own: &FullJid,
        payload: Option<Element>,
    ) -> bool {
        let Some(items) = payload.and_then(|p| DiscoItemsResult::try_from(p).ok()) else {
            return false;
        };
        let mut listed_own = false;
        for item in items.items {
            if item.node.is_some() || item.jid.to_bare() != *queried {
                continue;
            }
            let Some(resource) = item.jid.resource() else {
                continue;
            };
            if item.jid.as_str() == own.as_str() {
                listed_own = true;
                continue;
            }
            if resource.as_str().starts_with(RESOURCE_PREFIX)
                || self.expected >= MAX_TRACKED
                || self.seen.contains(item.jid.as_str())
            {
                continue;
            }
            if self.missing.insert(item.jid.as_str().to_owned()) {
                self.expected += 1;
            }
        }
        listed_own
    }

    /// Whether every expected resource has sent a presence.
    pub(crate) fn complete(&self) -> bool {
        self.missing.is_empty()
    }

    /// The expected resources that have not sent a presence yet (sorted, at most `max`).
    pub(crate) fn missing(&self, max: usize) -> Vec<&str> {
        let mut missing: Vec<&str> = self.missing.iter().map(String::as_str).collect();
        missing.sort_unstable();
        missing.truncate(max);
        missing
    }
}

/// At most this many JIDs are tracked each way (a hostile server cannot grow memory).
const MAX_TRACKED: usize = 100_000;

#[cfg(test)]
mod tests {
    use super::*;

    fn bare(s: &str) -> BareJid {
        BareJid::new(s).expect("jid")
    }

    fn own() -> FullJid {
        FullJid::new("alice@example.test/imstatus-1").expect("jid")
    }

    fn items(xml: &str) -> Option<Element> {
        Some(xml.parse().expect("xml"))
    }

    #[test]
    fn listed_resources_are_awaited_until_each_has_spoken() {
        let mut c = Census::default();
        c.watch(&[bare("alice@example.test"), bare("bob@example.test")]);
        c.saw("bob@example.test/laptop");
        let listed_own = c.expect(
            &bare("alice@example.test"),
            &own(),
            items(
                "<query xmlns='http://jabber.org/protocol/disco#items'>\
                 <item jid='alice@example.test/desk' name='alice'/>\
                 <item jid='alice@example.test/imstatus-1' name='alice'/>\
                 <item jid='alice@example.test/imstatus-feedface' name='alice'/>\
                 <item jid='alice@example.test' node='urn:xmpp:microblog:0'/></query>",
            ),
        );
        assert!(listed_own);
        let listed_own = c.expect(
            &bare("bob@example.test"),
            &own(),
            items(
                "<query xmlns='http://jabber.org/protocol/disco#items'>\
                 <item jid='bob@example.test/laptop'/><item jid='mallory@example.test/x'/></query>",
            ),
        );
        assert!(!listed_own);
        assert_eq!(c.missing(10), ["alice@example.test/desk"]);
        assert!(!c.complete());
        c.saw("Alice@Example.test/desk");
        assert!(c.complete() && c.missing(10).is_empty());
    }

    #[test]
    fn only_watched_jids_are_recorded_and_nothing_after_the_login() {
        let mut c = Census::default();
        c.watch(&[bare("alice@example.test")]);
        c.saw("mallory@evil.test/x");
        c.saw("@@junk");
        c.saw("alice@example.test/desk");
        assert_eq!(c.seen.len(), 1);
        c.finish();
        c.saw("alice@example.test/phone");
        assert!(c.seen.is_empty() && c.watched.is_empty());
    }

    #[test]
    fn prosodys_empty_lists_errors_and_junk_expect_nothing() {
        let mut c = Census::default();
        assert!(!c.expect(
            &bare("alice@example.test"),
            &own(),
            items("<query xmlns='http://jabber.org/protocol/disco#items'/>"),
        ));
        assert!(!c.expect(&bare("alice@example.test"), &own(), None));
        assert!(!c.expect(
            &bare("alice@example.test"),
            &own(),
            items("<query xmlns='jabber:iq:roster'><item jid='alice@example.test/imstatus-1'/></query>"),
        ));
        assert!(c.complete());
    }

    /// 20,000 listed resources, each then heard from, "complete?" asked after each: the census
    /// answers in O(1) (the old one rebuilt the list of missing resources for every question,
    /// 2·10⁸ steps here: this test would run for minutes).
    #[test]
    fn a_large_census_is_linear() {
        const N: usize = 20_000;
        let mut c = Census::default();
        let contacts: Vec<BareJid> = (0..N)
            .map(|i| bare(&format!("c{i}@example.test")))
            .collect();
        c.watch(&contacts);
        for jid in &contacts {
            let xml = format!(
                "<query xmlns='http://jabber.org/protocol/disco#items'><item jid='{jid}/r'/></query>"
            );
            assert!(!c.expect(jid, &own(), items(&xml)));
        }
        assert_eq!(c.missing(usize::MAX).len(), N);
        for (i, jid) in contacts.iter().enumerate() {
            assert!(!c.complete(), "complete after {i} of {N}");
            c.saw(&format!("{jid}/r"));
        }
        assert!(c.complete());
    }

    #[test]
    fn a_resource_heard_before_its_listing_is_not_awaited() {
        let mut c = Census::default();
        c.watch(&[bare("bob@example.test")]);
        c.saw("bob@example.test/laptop");
        c.expect(
            &bare("bob@example.test"),
            &own(),
            items("<query xmlns='http://jabber.org/protocol/disco#items'><item jid='bob@example.test/laptop'/></query>"),
        );
        assert!(c.complete());
    }
}
