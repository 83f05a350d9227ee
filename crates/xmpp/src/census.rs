//! The end of the initial presences, on servers that deliver them in order and on servers that
//! do not (sans-IO).
//!
//! Prosody handles a stream's stanzas in order and answers presence probes synchronously, so
//! every presence the initial presence brings is delivered before the answer to an IQ sent
//! after it. ejabberd answers probes from each contact's (and each of the user's resources')
//! own session process: those answers routinely arrive *after* such an IQ's result (measured:
//! nearly always on loopback). So after the initial presence the source asks the server, with
//! one disco#items per watched bare JID, which resources are online (ejabberd lists them to
//! subscribers and to the user; Prosody lists none), and the login ends once each listed
//! resource has sent a presence — or after a short settle time for one that never does (a
//! session bound but not yet available, a contact hiding from us). Resources named
//! `imstatus-…` are other watchers and never waited for.

use std::collections::BTreeSet;

use xmpp_parsers::disco::DiscoItemsResult;
use xmpp_parsers::jid::{BareJid, FullJid, Jid};
use xmpp_parsers::minidom::Element;

use crate::translate::RESOURCE_PREFIX;

/// Who has sent a presence during the login, and whose presence the login waits for.
#[derive(Debug, Default)]
pub(crate) struct Census {
    /// The bare JIDs whose resources matter: the user and the watched contacts.
    watched: BTreeSet<BareJid>,
    expected: BTreeSet<String>,
    seen: BTreeSet<String>,
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
        if self.finished || self.seen.len() >= MAX_TRACKED {
            return;
        }
        let Ok(jid) = Jid::new(from) else { return };
        if self.watched.contains(&jid.to_bare()) {
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
    /// unparseable payload) is ignored.
    pub(crate) fn expect(&mut self, queried: &BareJid, own: &FullJid, payload: Option<Element>) {
        let Some(items) = payload.and_then(|p| DiscoItemsResult::try_from(p).ok()) else {
            return;
        };
        for item in items.items {
            if item.node.is_some() || item.jid.to_bare() != *queried {
                continue;
            }
            let Some(resource) = item.jid.resource() else {
                continue;
            };
            if item.jid.as_str() == own.as_str()
                || resource.as_str().starts_with(RESOURCE_PREFIX)
                || self.expected.len() >= MAX_TRACKED
            {
                continue;
            }
            self.expected.insert(item.jid.as_str().to_owned());
        }
    }

    /// The expected resources that have not sent a presence yet.
    pub(crate) fn missing(&self) -> Vec<&str> {
        self.expected
            .iter()
            .filter(|jid| !self.seen.contains(*jid))
            .map(String::as_str)
            .collect()
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
        c.expect(
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
        c.expect(
            &bare("bob@example.test"),
            &own(),
            items(
                "<query xmlns='http://jabber.org/protocol/disco#items'>\
                 <item jid='bob@example.test/laptop'/><item jid='mallory@example.test/x'/></query>",
            ),
        );
        assert_eq!(c.missing(), ["alice@example.test/desk"]);
        c.saw("Alice@Example.test/desk");
        assert!(c.missing().is_empty());
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
        c.expect(
            &bare("alice@example.test"),
            &own(),
            items("<query xmlns='http://jabber.org/protocol/disco#items'/>"),
        );
        c.expect(&bare("alice@example.test"), &own(), None);
        c.expect(
            &bare("alice@example.test"),
            &own(),
            items("<query xmlns='jabber:iq:roster'><item jid='alice@example.test/x'/></query>"),
        );
        assert!(c.missing().is_empty());
    }
}
