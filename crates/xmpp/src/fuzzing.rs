//! Entry points for fuzzing what reads peer data: the guard (with the XML parser tokio-xmpp
//! uses as the oracle), the translator and the SCRAM server-first check. They panic when an
//! invariant breaks; the cargo-fuzz targets in `crates/xmpp/fuzz` and this crate's property
//! test call them. Not a stable API (only built for tests and with the `fuzzing` feature).

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use imstatus_core::Observation;
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use xmpp_parsers::jid::{BareJid, FullJid};
use xmpp_parsers::minidom::rxml::{self, Parse};
use xmpp_parsers::minidom::Element;
use xmpp_parsers::roster::Roster;

use crate::guard::Guarded;
use crate::scan::{Limits, Mark, Scanner};
use crate::translate::Translator;

/// The stream header the guard target puts before inputs that do not bring their own.
pub const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
    xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

/// Small limits, so that fuzzed inputs reach them.
pub const LIMITS: Limits = Limits {
    stanza_bytes: 512,
    depth: 4,
    attribute_bytes: 32,
};

/// A reader that hands out `data` in pieces of the sizes in `sizes` (cycled; 0 means 1).
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let size = match self.sizes.get(self.turn % self.sizes.len().max(1)) {
            Some(&s) => usize::from(s).max(1) * 7,
            None => 4096,
        };
        self.turn += 1;
        let n = size.min(self.data.len()).min(out.remaining());
        out.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

/// What the guard let through, read to the end or to its error.
pub fn released(data: &[u8], sizes: &[u8], limits: Limits) -> Vec<u8> {
    let mut guarded = Guarded::with_limits(
        Pieces {
            data,
            sizes,
            turn: 0,
        },
        limits,
    );
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    // The reader never blocks, so the guard only yields after many chunks: bounded by the input.
    for _ in 0..data.len() + 16 {
        match Pin::new(&mut guarded).poll_fill_buf(&mut cx) {
            Poll::Ready(Ok([])) | Poll::Ready(Err(_)) => break,
            Poll::Ready(Ok(bytes)) => {
                let n = bytes.len();
                out.extend_from_slice(bytes);
                Pin::new(&mut guarded).consume(n);
            }
            Poll::Pending => {}
        }
    }
    while guarded.shared().take_report().is_some() {}
    out
}

/// Parses `released` with rxml (the parser behind tokio-xmpp) and panics if anything in it
/// nests deeper, or has a longer attribute value, than `limits` allow, or if a top-level
/// element is larger than the stanza limit.
pub fn check_released(released: &[u8], limits: Limits) {
    let mut parser = rxml::Parser::new();
    let mut rest = released;
    let mut depth = 0usize;
    let mut item_from = 0usize;
    loop {
        let before = released.len() - rest.len();
        let event = match parser.parse(&mut rest, true) {
            Ok(Some(event)) => event,
            // The end, or input the parser rejects: what it accepted so far was checked.
            Ok(None) | Err(_) => return,
        };
        let after = released.len() - rest.len();
        match event {
            rxml::Event::StartElement(_, _, attrs) => {
                if depth == 1 {
                    item_from = before;
                }
                depth += 1;
                assert!(
                    depth <= limits.depth + 1,
                    "the guard let through nesting level {}",
                    depth - 1
                );
                for (_, value) in attrs.iter() {
                    assert!(
                        value.len() <= limits.attribute_bytes,
                        "the guard let through a {}-byte attribute value",
                        value.len()
                    );
                }
            }
            rxml::Event::EndElement(_) => {
                depth = depth.saturating_sub(1);
                if depth == 1 {
                    assert!(
                        after - item_from <= limits.stanza_bytes,
                        "the guard let through a {}-byte stanza",
                        after - item_from
                    );
                }
            }
            _ => {}
        }
        if rest.is_empty() {
            return;
        }
    }
}

/// The guard target: `data` as a stream (after [`HEADER`] unless it starts with `<?xml` or
/// `<stream`), read in pieces whose sizes come from `sizes`; checks what is let through.
pub fn guard(data: &[u8], sizes: &[u8]) {
    let input = if data.starts_with(b"<?xml") || data.starts_with(b"<stream") {
        data.to_vec()
    } else {
        let mut with = HEADER.as_bytes().to_vec();
        with.extend_from_slice(data);
        with
    };
    let out = released(&input, sizes, LIMITS);
    check_released(&out, LIMITS);
}

/// The top-level elements of `released` (after the stream header), as text.
pub fn items(released: &[u8]) -> Vec<String> {
    let mut scanner = Scanner::in_stream(Limits {
        stanza_bytes: usize::MAX,
        depth: usize::MAX,
        attribute_bytes: usize::MAX,
    });
    let mut items = Vec::new();
    let mut rest = released;
    // Skip the header.
    if let Some(end) = find_header_end(rest) {
        rest = &rest[end..];
    }
    let mut start = None;
    let mut at = 0;
    while at < rest.len() {
        let (n, mark) = scanner.scan(&rest[at..]);
        at += n;
        match mark {
            Some(Mark::ItemStart) => start = Some(at - 1),
            Some(Mark::ItemEnd) => {
                if let Some(s) = start.take() {
                    items.push(String::from_utf8_lossy(&rest[s..at]).into_owned());
                }
            }
            Some(Mark::Violation(v)) if !v.droppable() => break,
            _ => {}
        }
    }
    items
}

fn find_header_end(bytes: &[u8]) -> Option<usize> {
    let mut scanner = Scanner::new(Limits {
        stanza_bytes: usize::MAX,
        depth: usize::MAX,
        attribute_bytes: usize::MAX,
    });
    let mut at = 0;
    while at < bytes.len() {
        let (n, mark) = scanner.scan(&bytes[at..]);
        at += n;
        match mark {
            Some(Mark::HeaderEnd) => return Some(at),
            Some(Mark::Violation(_)) => return None,
            _ => {}
        }
    }
    None
}

/// A translator for alice, tracking contacts, with bob and carol in the roster.
pub fn translator() -> Translator {
    let mut t = Translator::new(
        BareJid::new("alice@example.test").expect("a constant JID"),
        FullJid::new("alice@example.test/imstatus-fuzz").ok(),
        true,
    );
    let roster: Option<Roster> = "<query xmlns='jabber:iq:roster'>\
         <item jid='bob@example.test' subscription='both'/>\
         <item jid='carol@example.test' subscription='to'/></query>"
        .parse::<Element>()
        .ok()
        .and_then(|e| Roster::try_from(e).ok());
    if let Some(roster) = roster {
        t.set_roster(&roster, &mut Vec::new());
    }
    t
}

/// Whether `text` could forge or reorder a line of human output.
fn forges_lines(text: &str) -> bool {
    text.chars().any(|c| {
        c.is_control()
            || matches!(
                c,
                '\u{2028}' | '\u{2029}' | '\u{61c}' | '\u{200e}' | '\u{200f}'
            )
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c)
    })
}

/// Translates one top-level element (a presence, or a roster query as a push) with `t` and
/// panics if an observation carries text that could forge a line.
pub fn translate_item(t: &mut Translator, item: &str) {
    let wrapped = format!(
        "<wrap xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>{item}</wrap>"
    );
    let Some(element) = wrapped
        .parse::<Element>()
        .ok()
        .and_then(|w| w.children().next().cloned())
    else {
        return;
    };
    let mut out = Vec::new();
    if element.is("query", xmpp_parsers::ns::ROSTER) {
        if let Ok(roster) = Roster::try_from(element) {
            t.handle_roster(&roster, &mut out);
        }
    } else {
        t.handle_element(element, &mut out);
    }
    for o in &out {
        let texts: Vec<&str> = match o {
            Observation::Presence { part, status, .. } => {
                vec![part.as_str(), status.message.as_deref().unwrap_or_default()]
            }
            Observation::Absent(part, _) => vec![part.as_str()],
            Observation::Contact(contact, status) => {
                vec![
                    contact.as_str(),
                    status.message.as_deref().unwrap_or_default(),
                ]
            }
            Observation::Anomaly(_, detail) => vec![detail.as_str()],
            _ => Vec::new(),
        };
        for text in texts {
            assert!(!forges_lines(text), "{o:?}");
        }
        if let Observation::Presence { status, .. } | Observation::Contact(_, status) = o {
            let chars = status.message.as_deref().map_or(0, |m| m.chars().count());
            assert!(
                chars <= crate::translate::MAX_STATUS_CHARS,
                "{chars} characters"
            );
        }
    }
}

/// The translate target: `data` as one stanza.
pub fn translate(data: &[u8]) {
    let mut t = translator();
    translate_item(&mut t, &String::from_utf8_lossy(data));
}

/// The SCRAM target: `data` as a server-first message (never panics, never accepts an
/// iteration count above the cap).
pub fn scram(data: &[u8]) {
    if crate::auth::check_server_first(data, Some("nonce")).is_ok() {
        let text = String::from_utf8_lossy(data);
        let i: u64 = text
            .split(',')
            .find_map(|p| p.strip_prefix("i="))
            .and_then(|i| i.parse().ok())
            .unwrap_or(u64::MAX);
        assert!(
            (1..=crate::auth::MAX_SCRAM_ITERATIONS).contains(&i),
            "{text}"
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Limits the generated stanzas sometimes break.
    const MEDIUM: Limits = Limits {
        stanza_bytes: 4096,
        depth: 8,
        attribute_bytes: 256,
    };

    fn pick(options: &'static [&'static str]) -> impl Strategy<Value = &'static str> {
        proptest::sample::select(options)
    }

    fn text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            pick(&[
                "lunch",
                " ",
                "&amp;",
                "&lt;x&gt;",
                "&#10;",
                "&#13;",
                "&#x85;",
                "&#x202e;",
                "&#x9b;",
                "&#x2028;",
                ">",
                "'",
                "\"",
                "ü",
                "]]>",
                "/>",
                "xxxxxxxxxxxxxxxxxxxxxxxx",
            ]),
            0..8,
        )
        .prop_map(|parts| parts.concat())
    }

    fn jid() -> impl Strategy<Value = &'static str> {
        pick(&[
            "alice@example.test/desk",
            "alice@example.test/phone",
            "alice@example.test",
            "alice@example.test/imstatus-fuzz",
            "alice@example.test/imstatus-0123",
            "bob@example.test/laptop",
            "bob@example.test/phone",
            "bob@example.test",
            "carol@example.test/x",
            "mallory@evil.test/x",
            "@@not a jid",
            "bob@example.test/a&#10;b",
            "ALICE@Example.TEST/desk",
        ])
    }

    /// One stanza-like item: mostly presences, some roster pushes and other elements, with
    /// payloads that nest, long attribute values, comments and CDATA.
    fn stanza() -> impl Strategy<Value = String> {
        let presence = (
            jid(),
            pick(&["", " type='unavailable'", " type='error'", " type='subscribe'", " type='probe'", " type='bogus'"]),
            pick(&["", "<show>away</show>", "<show>xa</show>", "<show>dnd</show>", "<show>chat</show>", "<show>sleep</show>"]),
            proptest::option::of(text()),
            pick(&["", "<priority>5</priority>", "<priority>-1</priority>", "<priority>127</priority>", "<priority>999</priority>", "<priority>x</priority>"]),
            0usize..12,
            0usize..300,
            pick(&["", "<!-- c -->", "<![CDATA[ <presence> ]]>", "<?pi x?>"]),
        )
            .prop_map(|(from, ty, show, status, priority, depth, attr, extra)| {
                let status = status.map(|s| format!("<status>{s}</status>")).unwrap_or_default();
                let open: String = (0..depth).map(|i| format!("<x{i} a='{}'>", "v".repeat(if i == 0 { attr } else { 1 }))).collect();
                let close: String = (0..depth).rev().map(|i| format!("</x{i}>")).collect();
                format!("<presence from='{from}'{ty}>{show}{status}{priority}{extra}{open}{close}</presence>")
            });
        let roster = proptest::collection::vec(
            (
                jid(),
                pick(&["both", "to", "from", "none", "remove", "bogus"]),
            ),
            0..6,
        )
        .prop_map(|items| {
            let items: String = items
                .into_iter()
                .map(|(j, s)| {
                    format!(
                        "<item jid='{}' subscription='{s}'/>",
                        j.split('/').next().unwrap_or(j)
                    )
                })
                .collect();
            format!("<query xmlns='jabber:iq:roster'>{items}</query>")
        });
        let other = pick(&[
            "<iq type='result' id='x'/>",
            "<message from='bob@example.test/x'><body>hi</body></message>",
            " \n ",
            "<presence/>",
        ])
        .prop_map(str::to_owned);
        prop_oneof![8 => presence, 2 => roster, 1 => other]
    }

    /// A stream of stanzas, the read sizes, and byte-level mutations (position, byte).
    fn case() -> impl Strategy<Value = (Vec<String>, Vec<u8>, Vec<(usize, u8)>)> {
        (
            proptest::collection::vec(stanza(), 1..100),
            proptest::collection::vec(any::<u8>(), 1..8),
            proptest::collection::vec(
                (
                    any::<usize>(),
                    pick(&["<", ">", "/", "'", "\"", "!", "-", "?", "a", "\0"])
                        .prop_map(|b| b.as_bytes()[0]),
                ),
                0..3,
            ),
        )
    }

    /// ≥ 100,000 generated stanzas, about a quarter of the streams mutated at the byte level,
    /// go through the guard (checked against rxml), then each released item through the
    /// translator: no panic, nothing past the limits, no line-forging text.
    #[test]
    fn a_hundred_thousand_generated_and_mutated_stanzas_pass_the_guard_and_the_translator() {
        let stanzas = AtomicUsize::new(0);
        let mut runner = TestRunner::new(Config {
            cases: 2_200,
            failure_persistence: None,
            ..Config::default()
        });
        let result = runner.run(&case(), |(items, sizes, mutations)| {
            stanzas.fetch_add(items.len(), Ordering::Relaxed);
            let mut input = HEADER.as_bytes().to_vec();
            for item in &items {
                input.extend_from_slice(item.as_bytes());
            }
            for (at, byte) in mutations {
                let at = HEADER.len() + at % (input.len() - HEADER.len()).max(1);
                if let Some(b) = input.get_mut(at) {
                    *b = byte;
                }
            }
            let out = released(&input, &sizes, MEDIUM);
            check_released(&out, MEDIUM);
            let mut t = translator();
            for item in super::items(&out) {
                translate_item(&mut t, &item);
            }
            Ok(())
        });
        if let Err(e) = result {
            panic!("{e}");
        }
        let n = stanzas.load(Ordering::Relaxed);
        assert!(n >= 100_000, "only {n} stanzas");
        eprintln!("{n} stanzas through the guard and the translator");
    }

    #[test]
    fn the_fuzz_targets_accept_anything() {
        for data in [
            &b""[..],
            b"<",
            b"<presence><a><a><a><a><a><a></a></a></a></a></a></a></presence>",
            b"<stream:stream><presence/>",
            b"r=nonce1,s=c2FsdA==,i=4096",
            b"r=nonce1,s=c2FsdA==,i=4294967295",
            b"\xff\xfe<<<>>>",
        ] {
            guard(data, &[1, 2, 3]);
            translate(data);
            scram(data);
        }
    }
}
