//! The presence fast path: a strict, streaming, zero-copy reader for the common shape of a
//! `<presence>` stanza, used in front of the full XML parser (sans-IO).
//!
//! Almost everything a server sends a watcher is presence, and building each one through
//! tokio-xmpp's parser (rxml's lexer, namespace resolution, xso's builders, a minidom tree for
//! every payload) costs ~10 µs, while imstatus needs five fields. So [`crate::guard`], which
//! already holds each stanza until its last byte has arrived and within the limits, hands every
//! complete `<presence>` to [`presence`] first. It walks the bytes once with no allocation but
//! the fields it returns (`from`, `to`, `id`, `type`, `show`, `status`, `priority`; XML escapes
//! decoded only when present) and no recursion (the nesting of unknown payloads, such as
//! entity capabilities or avatar hashes, is followed with a counter bounded by the guard's
//! depth limit). It is deliberately a subset reader: whatever it is not sure the full parser
//! would read the same way — a prefix, a comment, CDATA, an `xml:lang` anywhere but on the
//! `<presence>` itself, a second `<status>`,
//! a raw `\r` or tab in an attribute value, non-ASCII names, an invalid JID, a value the full
//! parser rejects — makes it return `None`, and the stanza goes to the full parser unchanged,
//! which then reports it exactly as before. The differential tests check that whatever it
//! accepts, the full parser accepts with the same fields and the same observations.

use std::borrow::Cow;
use std::collections::BTreeMap;

use xmpp_parsers::jid::Jid;
use xmpp_parsers::message::Lang;
use xmpp_parsers::presence::{Presence, Priority, Show, Type};

use crate::scan::MAX_DEPTH;

/// Reads one complete top-level `<presence>` stanza (exactly its bytes, from `<` to the last
/// `>`), or `None` when the full parser must read it (see the module docs).
pub(crate) fn presence(item: &[u8]) -> Option<Presence> {
    // UTF-8 once for the whole stanza; every slice below starts and ends on ASCII bytes.
    let text = std::str::from_utf8(item).ok()?;
    let mut r = Reader { s: text, i: 0 };
    r.lit("<presence")?;
    let mut from = None;
    let mut to = None;
    let mut id = None;
    let mut type_ = None;
    let mut lang = None;
    let mut xmlns = false;
    let empty = loop {
        let spaced = r.skip_space();
        match r.peek()? {
            b'>' => {
                r.i += 1;
                break false;
            }
            b'/' => {
                r.lit("/>")?;
                break true;
            }
            _ if !spaced => return None,
            _ => {}
        }
        let name = if r.rest().starts_with("xml:lang") {
            r.i += "xml:lang".len();
            "xml:lang"
        } else {
            r.name()?
        };
        let value = r.attribute_value()?;
        let slot = match name {
            "from" => &mut from,
            "xml:lang" => &mut lang,
            "to" => &mut to,
            "id" => &mut id,
            "type" => &mut type_,
            "xmlns" if !xmlns && value == "jabber:client" => {
                xmlns = true;
                continue;
            }
            _ => return None,
        };
        if slot.replace(value).is_some() {
            return None;
        }
    };
    let mut show = None;
    let mut status = None;
    let mut priority = None;
    if !empty {
        loop {
            if !r.text()?.trim_matches(is_space).is_empty() {
                return None;
            }
            if r.rest().starts_with("</") {
                r.lit("</presence")?;
                r.skip_space();
                r.lit(">")?;
                break;
            }
            r.lit("<")?;
            let name = r.name()?;
            let slot = match name {
                "show" => &mut show,
                "status" => &mut status,
                "priority" => &mut priority,
                _ => {
                    r.payload(name)?;
                    continue;
                }
            };
            let value = if r.rest().starts_with("/>") {
                r.i += 2;
                Cow::Borrowed("")
            } else {
                r.lit(">")?;
                let value = r.text()?;
                r.lit("</")?;
                r.lit(name)?;
                r.skip_space();
                r.lit(">")?;
                value
            };
            if slot.replace(value).is_some() {
                return None;
            }
        }
    }
    if r.i != text.len() {
        return None;
    }
    let type_ = match type_.as_deref() {
        None => Type::None,
        Some("unavailable") => Type::Unavailable,
        Some("subscribe") => Type::Subscribe,
        Some("subscribed") => Type::Subscribed,
        Some("unsubscribe") => Type::Unsubscribe,
        Some("unsubscribed") => Type::Unsubscribed,
        Some("probe") => Type::Probe,
        // `error` (and anything invalid) goes the long way.
        Some(_) => return None,
    };
    let show = match show.as_deref() {
        None => None,
        Some("away") => Some(Show::Away),
        Some("chat") => Some(Show::Chat),
        Some("dnd") => Some(Show::Dnd),
        Some("xa") => Some(Show::Xa),
        Some(_) => return None,
    };
    let priority = match priority.as_deref() {
        None => 0,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit() || b == b'-') => p.parse().ok()?,
        Some(_) => return None,
    };
    let mut statuses = BTreeMap::new();
    if let Some(status) = status {
        let lang = lang.map_or_else(String::new, Cow::into_owned);
        statuses.insert(Lang(lang), status.into_owned());
    }
    Some(Presence {
        from: Some(Jid::new(&from?).ok()?),
        to: match to {
            Some(to) => Some(Jid::new(&to).ok()?),
            None => None,
        },
        id: id.map(Cow::into_owned),
        type_,
        show,
        statuses,
        priority: Priority(priority),
        payloads: Vec::new(),
    })
}

fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// A cursor over one stanza.
struct Reader<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Reader<'a> {
    fn rest(&self) -> &'a str {
        self.s.get(self.i..).unwrap_or_default()
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    /// Consumes `lit` or fails.
    fn lit(&mut self, lit: &str) -> Option<()> {
        if self.rest().starts_with(lit) {
            self.i += lit.len();
            Some(())
        } else {
            None
        }
    }

    /// Skips XML whitespace; whether there was any.
    fn skip_space(&mut self) -> bool {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
        self.i > start
    }

    /// An element or attribute name: ASCII letters, digits, `_`, `-` and `.`, not starting
    /// with a digit, `-` or `.` (no prefixes).
    fn name(&mut self) -> Option<&'a str> {
        let start = self.i;
        let bytes = self.s.as_bytes();
        match bytes.get(self.i) {
            Some(b) if b.is_ascii_alphabetic() || *b == b'_' => self.i += 1,
            _ => return None,
        }
        while bytes
            .get(self.i)
            .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        {
            self.i += 1;
        }
        // `xml…` names are reserved (xml:lang, xmlns:…): only `xmlns` itself is read.
        let name = self.s.get(start..self.i)?;
        if name.len() >= 3 && name[..3].eq_ignore_ascii_case("xml") && name != "xmlns" {
            return None;
        }
        Some(name)
    }

    /// `= 'value'` after an attribute name, the value decoded. Values with a raw tab, line
    /// break or `<` go the long way (attribute-value normalisation).
    fn attribute_value(&mut self) -> Option<Cow<'a, str>> {
        self.skip_space();
        self.lit("=")?;
        self.skip_space();
        let quote = self.peek().filter(|q| matches!(q, b'\'' | b'"'))?;
        self.i += 1;
        let len = self.rest().bytes().position(|b| b == quote)?;
        let raw = self.s.get(self.i..self.i + len)?;
        self.i += len + 1;
        if raw
            .bytes()
            .any(|b| matches!(b, b'<' | b'\t' | b'\n' | b'\r'))
        {
            return None;
        }
        decode(raw)
    }

    /// Character data up to the next `<`, decoded. A raw `\r` (line-end normalisation) or `]]>`
    /// goes the long way.
    fn text(&mut self) -> Option<Cow<'a, str>> {
        let len = self
            .rest()
            .bytes()
            .position(|b| b == b'<')
            .unwrap_or(self.rest().len());
        let raw = self.s.get(self.i..self.i + len)?;
        self.i += len;
        if raw.contains('\r') || raw.contains("]]>") {
            return None;
        }
        decode(raw)
    }

    /// Skips the rest of a payload element whose `<name` was just read: attributes (unique,
    /// unprefixed, well-formed), text and child elements, each end tag matching its start.
    /// Nesting is counted, not recursed into; the stack of open names is at most
    /// [`MAX_DEPTH`] long.
    fn payload(&mut self, name: &'a str) -> Option<()> {
        let mut open: Vec<&'a str> = Vec::new();
        let mut name = name;
        loop {
            // The rest of a start tag.
            let mut names: [&str; 8] = [""; 8];
            let mut count = 0;
            let empty = loop {
                let spaced = self.skip_space();
                match self.peek()? {
                    b'>' => {
                        self.i += 1;
                        break false;
                    }
                    b'/' => {
                        self.lit("/>")?;
                        break true;
                    }
                    _ if !spaced => return None,
                    _ => {}
                }
                let attribute = self.name()?;
                if count == names.len() || names[..count].contains(&attribute) {
                    return None;
                }
                names[count] = attribute;
                count += 1;
                let value = self.attribute_value()?;
                if attribute == "xmlns" && value.is_empty() {
                    return None;
                }
            };
            if !empty {
                if open.len() >= MAX_DEPTH {
                    return None;
                }
                open.push(name);
            }
            // Content until the next start tag, or the end of the payload.
            loop {
                let Some(&top) = open.last() else {
                    return Some(());
                };
                self.text()?;
                self.lit("<")?;
                if self.peek()? == b'/' {
                    self.i += 1;
                    self.lit(top)?;
                    self.skip_space();
                    self.lit(">")?;
                    open.pop();
                    continue;
                }
                name = self.name()?;
                break;
            }
        }
    }
}

/// Decodes the five predefined entities and character references; `None` for anything else
/// (an unknown entity, a bare `&`, a reference to a character XML does not allow) or for a
/// character XML does not allow.
fn decode(raw: &str) -> Option<Cow<'_, str>> {
    if raw.chars().any(|c| !allowed(c)) {
        return None;
    }
    if !raw.contains('&') {
        return Some(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let end = rest[at..].find(';')? + at;
        let entity = &rest[at + 1..end];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let number = entity.strip_prefix('#')?;
                let code = match number.strip_prefix('x') {
                    Some(hex)
                        if (1..=6).contains(&hex.len())
                            && hex.bytes().all(|b| b.is_ascii_hexdigit()) =>
                    {
                        u32::from_str_radix(hex, 16).ok()?
                    }
                    None if (1..=7).contains(&number.len())
                        && number.bytes().all(|b| b.is_ascii_digit()) =>
                    {
                        number.parse().ok()?
                    }
                    _ => return None,
                };
                char::from_u32(code).filter(|&c| allowed(c))?
            }
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(Cow::Owned(out))
}

/// XML 1.0's `Char` production.
fn allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::translate::Translator;
    use imstatus_core::Observation;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use xmpp_parsers::minidom::Element;

    /// The full parser's reading of one stanza, as the stream delivers it (default namespace
    /// `jabber:client`): `None` when it is not well-formed, else the presence or its error.
    fn full(item: &str) -> Option<Result<Presence, String>> {
        let wrapped = format!(
            "<wrap xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>{item}</wrap>"
        );
        let wrap: Element = wrapped.parse().ok()?;
        let mut children = wrap.children();
        let element = children.next()?.clone();
        if children.next().is_some() || wrap.texts().any(|t| !t.is_empty()) {
            return None;
        }
        Some(Presence::try_from(element).map_err(|e| e.to_string()))
    }

    fn translator() -> Translator {
        crate::fuzzing::translator()
    }

    fn observe(p: &Presence) -> Vec<Observation> {
        let mut out = Vec::new();
        translator().handle_presence(p, &mut out);
        out
    }

    /// Checks one stanza: whatever the fast path reads, the full parser reads with the same
    /// fields and the translator turns into the same observations. Returns whether the fast
    /// path read it.
    fn check(item: &str) -> bool {
        let Some(fast) = presence(item.as_bytes()) else {
            return false;
        };
        let full = match full(item) {
            Some(Ok(p)) => p,
            other => panic!("fast path read {item:?}, the full parser: {other:?}"),
        };
        let fields = |p: &Presence| {
            (
                p.from.clone(),
                p.to.clone(),
                p.id.clone(),
                p.type_.clone(),
                p.show.clone(),
                p.statuses.clone(),
                p.priority.clone(),
            )
        };
        assert_eq!(fields(&fast), fields(&full), "{item:?}");
        assert_eq!(observe(&fast), observe(&full), "{item:?}");
        true
    }

    #[test]
    fn common_presences_take_the_fast_path_with_the_full_parsers_fields() {
        for item in [
            "<presence from='bob@example.test/laptop'/>",
            "<presence from='bob@example.test/laptop' to='alice@example.test/imstatus-1' id='x1'>\
             <show>dnd</show><status>in a call &amp; &#x263A; &lt;3</status><priority>-5</priority>\
             <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v=='/>\
             <x xmlns='vcard-temp:x:update'><photo>abc</photo></x></presence>",
            "<presence xmlns='jabber:client' type=\"unavailable\" from=\"Bob@Example.test/Laptop\">\n \
             <status>Disconnected: closed</status>\n</presence >",
            "<presence from='alice@example.test/desk'><status/><priority>127</priority></presence>",
            "<presence from='bob@example.test' type='subscribe'/>",
            "<presence from='u0001@r.test/g' to='watcher@r.test/imstatus-1' xml:lang='en'>\
             <show>away</show><status>f 1 2</status><priority>0</priority>\
             <c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v'/></presence>",
        ] {
            assert!(check(item), "not read: {item}");
        }
    }

    #[test]
    fn anything_unusual_goes_to_the_full_parser() {
        for item in [
            // Not well-formed, or not the same reading.
            "<presence from='bob@example.test/x'><show>dnd</show>",
            "<presence from='bob@example.test/x'><x xmlns='a'><y></x></y></presence>",
            "<presence from='bob@example.test/x' from='eve@example.test/y'/>",
            "<presence from='bob@example.test/x'><show>sleeping</show></presence>",
            "<presence from='bob@example.test/x'><show>dnd</show><show>away</show></presence>",
            "<presence from='bob@example.test/x'><priority>128</priority></presence>",
            "<presence from='bob@example.test/x'><priority>+1</priority></presence>",
            "<presence from='bob@example.test/x'><status xml:lang='en'>hi</status></presence>",
            "<presence from='bob@example.test/x'><status>a</status><status>b</status></presence>",
            "<presence from='bob@example.test/x'><status><![CDATA[x]]></status></presence>",
            "<presence from='bob@example.test/x'><status>a&bogus;</status></presence>",
            "<presence from='bob@example.test/x'><status>a&#0;</status></presence>",
            "<presence from='bob@example.test/x'><status>a\r\nb</status></presence>",
            "<presence from='bob@example.test/x'><!-- c --></presence>",
            "<presence from='bob@example.test/x'>text</presence>",
            "<presence from='bob@example.test/x' type='error'/>",
            "<presence from='bob@example.test/x' type='away'/>",
            "<presence from='@@'/>",
            "<presence to='alice@example.test'/>",
            "<presence from='bob@example.test/x' foo='bar'/>",
            "<presence from='bob\texample.test/x'/>",
            "<presence xmlns='jabber:server' from='bob@example.test/x'/>",
            "<stream:presence from='bob@example.test/x'/>",
            "<presence from='bob@example.test/x'><p:x xmlns:p='a'/></presence>",
            "<presence from='bob@example.test/x'><x xmlns='a' a='1' a='2'/></presence>",
        ] {
            assert!(presence(item.as_bytes()).is_none(), "read: {item}");
        }
    }

    fn pick(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
        proptest::sample::select(options)
    }

    /// Text pieces: plain, escaped, hostile (control characters, bidi overrides, broken
    /// entities, markup); four in five texts are made of well-formed pieces only.
    fn text() -> impl Strategy<Value = String> {
        let fine = proptest::collection::vec(
            pick(&[
                "lunch",
                " ",
                "&amp;",
                "&lt;x&gt;",
                "&#10;",
                "&#x85;",
                "&#x202e;",
                "&#x9b;",
                "&#x1F600;",
                ">",
                "'",
                "\"",
                "\t",
                "\n",
                "é",
                "\u{202e}",
                "away",
                "-1",
                "0",
            ]),
            0..6,
        );
        let hostile = proptest::collection::vec(
            pick(&[
                "lunch",
                "&#13;",
                "&#0;",
                "&#xD800;",
                "&#x110000;",
                "&#x+41;",
                "&#;",
                "&bogus;",
                "&",
                "]]>",
                "\r",
                "\u{1}",
                "<",
                "<!--x-->",
                "<![CDATA[y]]>",
                "<b/>",
                "128",
                "+3",
                "007",
            ]),
            1..4,
        );
        prop_oneof![4 => fine, 1 => hostile].prop_map(|v| v.concat())
    }

    fn jid() -> impl Strategy<Value = &'static str> {
        pick(&[
            "bob@example.test/laptop",
            "Bob@Example.test/Laptop",
            "bob@example.test",
            "alice@example.test/desk",
            "alice@example.test/imstatus-1",
            "alice@example.test/imstatus-other",
            "alice@example.test",
            "carol@example.test/x",
            "mallory@evil.test/x",
            "@@",
            "bob@example.test/",
            "bob@&amp;example.test/x",
            "bob@example.test/&#x202e;x",
            "",
        ])
    }

    fn attribute() -> impl Strategy<Value = String> {
        let quote = || pick(&["'", "\""]);
        prop_oneof![
            (quote(), jid()).prop_map(|(q, j)| format!(" from={q}{j}{q}")),
            (quote(), jid()).prop_map(|(q, j)| format!(" to={q}{j}{q}")),
            (quote(), text()).prop_map(|(q, t)| format!(" id={q}{}{q}", t.replace(q, ""))),
            (
                quote(),
                pick(&[
                    "unavailable",
                    "subscribe",
                    "subscribed",
                    "unsubscribe",
                    "unsubscribed",
                    "probe",
                    "error",
                    "",
                    "away",
                    "Unavailable",
                ])
            )
                .prop_map(|(q, t)| format!(" type={q}{t}{q}")),
            pick(&[
                " xmlns='jabber:client'",
                " xmlns='jabber:server'",
                " xml:lang='en'",
                " xml:lang=''",
                " xml:lang='fr' xml:lang='en'",
                " foo='bar'",
                " from = 'bob@example.test/x'",
                "from='bob@example.test/x'",
                " from='bob@example.test/x",
                " from=bob@example.test/x",
            ])
            .prop_map(str::to_owned),
        ]
    }

    fn child() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => pick(&["away", "chat", "dnd", "xa"]).prop_map(|s| format!("<show>{s}</show>")),
            3 => pick(&[
                "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://pidgin.im/' ver='AcN1/PEN8nq7AHD+9jpxMV4U6YM='/>",
                "<x xmlns='vcard-temp:x:update'><photo>0a1b</photo></x>",
                "<delay xmlns='urn:xmpp:delay' stamp='2002-09-10T23:41:07Z'/>",
            ])
            .prop_map(str::to_owned),
            1 => pick(&["away", "chat", "dnd", "xa", "", "sleeping", " dnd"])
                .prop_map(|s| format!("<show>{s}</show>")),
            3 => text().prop_map(|t| format!("<status>{t}</status>")),
            1 => text().prop_map(|t| format!("<priority>{t}</priority>")),
            1 => pick(&["-128", "127", "0", "-1", "5"]).prop_map(|p| format!("<priority>{p}</priority>")),
            1 => pick(&[
                "<status/>",
                "<show/>",
                "<priority/>",
                "<status xml:lang='en'>hi</status>",
                "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='http://pidgin.im/' ver='AcN1/PEN8nq7AHD+9jpxMV4U6YM='/>",
                "<x xmlns='vcard-temp:x:update'><photo>0a1b</photo></x>",
                "<x xmlns='vcard-temp:x:update'><photo/></x>",
                "<delay xmlns='urn:xmpp:delay' stamp='2002-09-10T23:41:07Z'/>",
                "<x xmlns='a'><y><z a='1' b=\"2\">t&amp;</z></y></x>",
                "<x xmlns='a'><y></x></y>",
                "<x xmlns='a' a='1' a='2'/>",
                "<x xmlns=''/>",
                "<x/>",
                "<p:x xmlns:p='a'/>",
                "<x xmlns='a'><!-- c --></x>",
                "<x xmlns='a'><![CDATA[c]]></x>",
                "<x xmlns='a'>",
                "</x>",
                "<x xmlns='a'></x >",
                "<x xmlns='a' ></x>",
                " ",
                "\n",
                "text",
                "&amp;",
            ])
            .prop_map(str::to_owned),
        ]
    }

    fn stanza() -> impl Strategy<Value = String> {
        (
            proptest::option::weighted(0.8, (pick(&["'", "\""]), jid())),
            proptest::collection::vec(attribute(), 0..4),
            proptest::option::weighted(0.85, proptest::collection::vec(child(), 0..5)),
            pick(&["", " ", "\n"]),
        )
            .prop_map(|(from, attributes, children, space)| {
                let from = from.map_or(String::new(), |(q, j)| format!(" from={q}{j}{q}"));
                let attributes = from + &attributes.concat();
                match children {
                    None => format!("<presence{attributes}{space}/>"),
                    Some(children) => format!(
                        "<presence{attributes}{space}>{}</presence{space}>",
                        children.concat()
                    ),
                }
            })
    }

    /// Hostile variants of a stanza: every one-byte deletion, and a replacement of each byte
    /// with one of a few markup bytes, capped at `max` variants.
    fn variants(item: &str, max: usize, mut f: impl FnMut(&str)) {
        let bytes = item.as_bytes();
        let mut n = 0;
        for i in 0..bytes.len() {
            for replacement in [
                None,
                Some(b'<'),
                Some(b'>'),
                Some(b'\''),
                Some(b'/'),
                Some(b'&'),
            ] {
                if n == max {
                    return;
                }
                let mut v = bytes.to_vec();
                match replacement {
                    None => {
                        v.remove(i);
                    }
                    Some(b) if v[i] != b => v[i] = b,
                    Some(_) => continue,
                }
                if let Ok(v) = std::str::from_utf8(&v) {
                    f(v);
                    n += 1;
                }
            }
        }
    }

    /// The differential test: generated stanzas (valid, unusual and hostile) and their one-byte
    /// mutations; whatever the fast path reads, the full parser reads the same way.
    #[test]
    fn the_fast_path_agrees_with_the_full_parser() {
        const CASES: u32 = 4_400;
        const VARIANTS: usize = 256;
        let total = AtomicUsize::new(0);
        let read = AtomicUsize::new(0);
        let mut runner = TestRunner::new(Config {
            cases: CASES,
            failure_persistence: None,
            ..Config::default()
        });
        runner
            .run(&stanza(), |item| {
                let mut stanzas = 1;
                let mut accepted = usize::from(check(&item));
                variants(&item, VARIANTS, |v| {
                    stanzas += 1;
                    accepted += usize::from(check(v));
                });
                total.fetch_add(stanzas, Ordering::Relaxed);
                read.fetch_add(accepted, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
        let (total, read) = (total.into_inner(), read.into_inner());
        eprintln!("{total} stanzas, {read} read by the fast path");
        assert!(total >= 1_000_000, "{total} stanzas");
        assert!(read >= 20_000, "the fast path read only {read} stanzas");
    }
}
