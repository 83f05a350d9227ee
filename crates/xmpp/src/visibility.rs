//! Keeping imstatus's own session out of the contacts' sight (sans-IO: the plan and the
//! stanzas; the source sends them).
//!
//! The source must be an *available* resource to be sent the presence of the user's other
//! resources, and an available resource is normally announced to every contact. Two
//! protocols stop that, and the server says in its service discovery which it has:
//!
//! 1. XEP-0186 (`urn:xmpp:invisible:0`): `<invisible probe='true'/>` before the initial
//!    presence; the server then broadcasts nothing and still probes the contacts.
//! 2. XEP-0016 privacy lists (`jabber:iq:privacy`): a list that denies `presence-out`, made the
//!    *active* list of this session only (the user's other clients keep theirs) before the
//!    initial presence. Prosody's `mod_privacy_lists` applies it to the presence probes the
//!    server sends at the initial presence as well, so the source probes the contacts it needs
//!    itself first (see [`probe`]); ejabberd's `mod_privacy` lets probes through.
//!
//! Which one is used, or whether the session stays visible, is [`plan`]ned from the config's
//! [`Visibility`] and the server's features.

use std::collections::BTreeSet;

use crate::config::Visibility;
use xmpp_parsers::iq::Iq;
use xmpp_parsers::jid::{BareJid, Jid};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::presence::{Presence, Type};

/// XEP-0186 Invisible Command.
pub(crate) const NS_INVISIBLE: &str = "urn:xmpp:invisible:0";
/// XEP-0016 Privacy Lists.
pub(crate) const NS_PRIVACY: &str = "jabber:iq:privacy";
/// The privacy list imstatus stores in the account and activates for its own session.
pub(crate) const PRIVACY_LIST: &str = "imstatus-invisible";

/// A way to hide the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Method {
    /// XEP-0186.
    InvisibleCommand,
    /// XEP-0016, an active list denying `presence-out`.
    PrivacyList,
}

impl Method {
    /// How the method is named in messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Method::InvisibleCommand => "XEP-0186 invisible command (urn:xmpp:invisible:0)",
            Method::PrivacyList => "XEP-0016 privacy list (jabber:iq:privacy)",
        }
    }

    /// The requests that hide the session, as (id, stanza); all must succeed.
    pub(crate) fn requests(self) -> Vec<(&'static str, Iq)> {
        match self {
            Method::InvisibleCommand => vec![(
                "imstatus-invisible",
                set(
                    "imstatus-invisible",
                    element("<invisible xmlns='urn:xmpp:invisible:0' probe='true'/>"),
                ),
            )],
            Method::PrivacyList => vec![
                (
                    "imstatus-privacy-list",
                    set(
                        "imstatus-privacy-list",
                        element(&format!(
                            "<query xmlns='jabber:iq:privacy'><list name='{PRIVACY_LIST}'>\
                             <item action='deny' order='1'><presence-out/></item></list></query>"
                        )),
                    ),
                ),
                (
                    "imstatus-privacy-active",
                    set(
                        "imstatus-privacy-active",
                        element(&format!(
                            "<query xmlns='jabber:iq:privacy'><active name='{PRIVACY_LIST}'/></query>"
                        )),
                    ),
                ),
            ],
        }
    }
}

/// Parses one of this module's constant payloads (minidom 0.19 wants checked attribute names,
/// which literal XML gives without `unsafe` macros). The tests check each one; an impossible
/// parse failure yields an empty element the server will refuse.
fn element(xml: &str) -> Element {
    xml.parse()
        .unwrap_or_else(|_| Element::builder("invalid", "urn:imstatus:internal").build())
}

fn set(id: &str, payload: Element) -> Iq {
    Iq::Set {
        from: None,
        to: None,
        id: id.to_owned(),
        payload,
    }
}

/// What to do about the session's visibility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Hide it: try these methods in order until one works.
    Hide(Vec<Method>),
    /// Stay visible: the config says so.
    Visible,
    /// Stay visible because the server cannot hide the session; warn once (`auto`).
    Fallback(String),
    /// The config demands invisibility the server cannot give: `unsupported`, stay down.
    Refuse(String),
}

/// The plan for `visibility` on a server with `features` (its disco#info).
pub(crate) fn plan(visibility: Visibility, features: &BTreeSet<String>) -> Plan {
    if visibility == Visibility::Visible {
        return Plan::Visible;
    }
    let methods: Vec<Method> = [
        (NS_INVISIBLE, Method::InvisibleCommand),
        (NS_PRIVACY, Method::PrivacyList),
    ]
    .into_iter()
    .filter(|(ns, _)| features.contains(*ns))
    .map(|(_, m)| m)
    .collect();
    if methods.is_empty() {
        cannot_hide(
            visibility,
            "the server offers neither XEP-0186 invisibility (urn:xmpp:invisible:0) nor \
             XEP-0016 privacy lists (jabber:iq:privacy)",
        )
    } else {
        Plan::Hide(methods)
    }
}

/// The plan when hiding is impossible: `why` says what the server lacks or refused.
pub(crate) fn cannot_hide(visibility: Visibility, why: &str) -> Plan {
    match visibility {
        Visibility::Invisible => Plan::Refuse(format!(
            "visibility = \"invisible\", but {why}; staying down rather than showing the user's \
             contacts an extra online resource (use visibility = \"auto\" or \"visible\" to \
             accept being seen)"
        )),
        Visibility::Auto | Visibility::Visible => Plan::Fallback(format!(
            "visible to the user's contacts: {why}, so they see an extra available resource \
             (imstatus-…, priority -1) while imstatus runs; set visibility = \"visible\" to \
             accept this without a warning, or enable privacy lists on the server (Prosody: \
             mod_privacy_lists from prosody-modules; ejabberd: mod_privacy)"
        )),
    }
}

/// A presence probe to `to`, sent before the session hides itself: the server answers it
/// with `to`'s current presence (Prosody, XEP-0016: the server's own probes would be blocked).
/// Only for JIDs we are subscribed to (`to`/`both`): a probe without a subscription makes
/// Prosody answer with `unsubscribed`.
pub(crate) fn probe(to: &BareJid) -> Presence {
    Presence::new(Type::Probe).with_to(Jid::from(to.clone()))
}

/// The features of a disco#info result (empty when it is not one).
pub(crate) fn features(payload: Option<Element>) -> BTreeSet<String> {
    payload
        .and_then(|p| xmpp_parsers::disco::DiscoInfoResult::try_from(p).ok())
        .map(|info| info.features)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn features_of(xml: &str) -> BTreeSet<String> {
        features(Some(xml.parse().expect("xml")))
    }

    #[test]
    fn the_servers_features_choose_the_method_invisible_command_first() {
        let prosody = features_of(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <identity category='server' type='im' name='Prosody'/>\
             <feature var='jabber:iq:roster'/><feature var='jabber:iq:privacy'/></query>",
        );
        assert_eq!(
            plan(Visibility::Auto, &prosody),
            Plan::Hide(vec![Method::PrivacyList])
        );
        let both = features_of(
            "<query xmlns='http://jabber.org/protocol/disco#info'>\
             <feature var='jabber:iq:privacy'/><feature var='urn:xmpp:invisible:0'/></query>",
        );
        assert_eq!(
            plan(Visibility::Invisible, &both),
            Plan::Hide(vec![Method::InvisibleCommand, Method::PrivacyList])
        );
        assert_eq!(plan(Visibility::Visible, &both), Plan::Visible);
    }

    #[test]
    fn without_support_auto_falls_back_with_a_warning_and_invisible_refuses() {
        let none = features_of(
            "<query xmlns='http://jabber.org/protocol/disco#info'><feature var='urn:xmpp:ping'/></query>",
        );
        let Plan::Fallback(warning) = plan(Visibility::Auto, &none) else {
            panic!("fallback expected");
        };
        assert!(
            warning.starts_with("visible to the user's contacts"),
            "{warning}"
        );
        assert!(warning.contains("visibility = \"visible\""), "{warning}");
        assert!(warning.contains("mod_privacy_lists"), "{warning}");
        let Plan::Refuse(detail) = plan(Visibility::Invisible, &none) else {
            panic!("refusal expected");
        };
        assert!(
            detail.starts_with("visibility = \"invisible\", but"),
            "{detail}"
        );
        assert_eq!(plan(Visibility::Visible, &none), Plan::Visible);
        assert_eq!(
            plan(Visibility::Auto, &features(None)),
            plan(Visibility::Auto, &none),
            "no disco#info answer counts as no support"
        );
    }

    #[test]
    fn a_disco_error_or_junk_payload_has_no_features() {
        assert!(features_of("<query xmlns='jabber:iq:roster'/>").is_empty());
    }

    #[test]
    fn the_list_name_is_the_documented_one() {
        let xml = String::from(&Element::from(Method::PrivacyList.requests()[1].1.clone()));
        assert!(xml.contains(&format!("name='{PRIVACY_LIST}'")), "{xml}");
    }

    #[test]
    fn the_privacy_list_denies_presence_out_and_becomes_the_active_list() {
        let requests = Method::PrivacyList.requests();
        let xml: Vec<(&str, String)> = requests
            .into_iter()
            .map(|(id, iq)| (id, String::from(&Element::from(iq))))
            .collect();
        assert_eq!(xml[0].0, "imstatus-privacy-list");
        assert!(
            xml[0].1.contains(
                "<query xmlns='jabber:iq:privacy'><list name='imstatus-invisible'>\
                 <item action='deny' order='1'><presence-out/></item></list></query>"
            ),
            "{}",
            xml[0].1
        );
        assert!(xml[0].1.contains("type='set'"), "{}", xml[0].1);
        assert_eq!(xml[1].0, "imstatus-privacy-active");
        assert!(
            xml[1].1.contains(
                "<query xmlns='jabber:iq:privacy'><active name='imstatus-invisible'/></query>"
            ),
            "{}",
            xml[1].1
        );
    }

    #[test]
    fn the_invisible_command_asks_the_server_to_keep_probing() {
        let requests = Method::InvisibleCommand.requests();
        let xml = String::from(&Element::from(requests[0].1.clone()));
        assert!(
            xml.contains("<invisible xmlns='urn:xmpp:invisible:0' probe='true'/>"),
            "{xml}"
        );
    }

    #[test]
    fn probes_go_to_the_bare_jid() {
        let bob = BareJid::new("bob@example.test").expect("jid");
        let xml = String::from(&Element::from(probe(&bob)));
        assert!(xml.contains("type='probe'"), "{xml}");
        assert!(xml.starts_with("<presence "), "{xml}");
        assert!(xml.contains("to='bob@example.test'"), "{xml}");
    }
}
