//! A byte-level scanner of an XML stream's structure (sans-IO): where each top-level element
//! (stanza) starts and ends, how deep it nests, and how long it and its attribute values are.
//!
//! It is not a parser. It follows only what decides structure — start and end tags, quoted
//! attribute values (which may hold `>` and `/`), self-closing tags, comments, CDATA sections
//! and processing instructions — with a handful of counters and no stack, so a peer's
//! 100,000-level nesting costs it nothing. For well-formed XML its depth and element
//! boundaries are exactly the XML parser's (tested against rxml, which tokio-xmpp uses); for
//! malformed XML they may differ, but only past the point where that parser rejects the input
//! anyway. [`crate::guard`] uses it to hold each stanza back until it is complete and within
//! [`Limits`]; the SASL exchange uses it to split the server's replies. The guard also uses its
//! item boundaries and names to hand complete presences to the fast path ([`crate::fast`]).
//!
//! Counting: the stream's root element (`<stream:stream>`) is depth 1, so a stanza is at
//! nesting level 1 and its children at level 2; the prolog and the stream header together are
//! bounded like one stanza. Bytes between stanzas (whitespace keep-alives) are not counted.

/// The stanza size limit: bytes from a stanza's `<` to its last `>` (256 KiB, as Prosody's own
/// limit for what its clients send).
pub const MAX_STANZA_BYTES: usize = 256 * 1024;
/// The nesting limit: a stanza is level 1, its children level 2, … (real presences nest 4 or 5
/// levels, XHTML-IM messages about 10).
pub const MAX_DEPTH: usize = 32;
/// The size limit of one attribute value, as sent (before entities are expanded).
pub const MAX_ATTRIBUTE_BYTES: usize = 8 * 1024;

/// The limits the scanner enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one stanza, and of the prolog plus the stream header.
    pub stanza_bytes: usize,
    /// Nesting levels of a stanza (the stanza itself is level 1).
    pub depth: usize,
    /// Bytes of one attribute value.
    pub attribute_bytes: usize,
}

impl Default for Limits {
    /// [`MAX_STANZA_BYTES`], [`MAX_DEPTH`], [`MAX_ATTRIBUTE_BYTES`].
    fn default() -> Self {
        Limits {
            stanza_bytes: MAX_STANZA_BYTES,
            depth: MAX_DEPTH,
            attribute_bytes: MAX_ATTRIBUTE_BYTES,
        }
    }
}

/// Which limit or rule the input broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A stanza nested deeper than [`Limits::depth`].
    Depth,
    /// A stanza longer than its size limit.
    Size,
    /// An attribute value longer than [`Limits::attribute_bytes`].
    Attribute,
    /// The prolog and stream header longer than [`Limits::stanza_bytes`].
    Header,
    /// `<!DOCTYPE …>` or another markup declaration, which XMPP forbids.
    Markup,
    /// An end tag with no element open.
    Unbalanced,
}

impl Violation {
    /// Whether the stream can go on without the stanza in which this happened (its end can
    /// still be found); otherwise the stream is lost.
    pub fn droppable(self) -> bool {
        matches!(
            self,
            Violation::Depth | Violation::Size | Violation::Attribute
        )
    }

    /// What the rule is, for error details.
    pub fn describe(self, limits: &Limits, stanza_limit: usize) -> String {
        match self {
            Violation::Depth => format!("nested deeper than {} levels", limits.depth),
            Violation::Size => format!("larger than {} bytes", stanza_limit),
            Violation::Attribute => format!(
                "with an attribute value longer than {} bytes",
                limits.attribute_bytes
            ),
            Violation::Header => format!(
                "a stream header (with its prolog) longer than {} bytes",
                limits.stanza_bytes
            ),
            Violation::Markup => {
                "a markup declaration (<!…>), which XMPP does not allow".to_owned()
            }
            Violation::Unbalanced => "an end tag without a start tag".to_owned(),
        }
    }
}

/// Something the scanner found; it happened at the last byte [`Scanner::scan`] consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The `<` of a top-level item: a stanza, a stray comment, CDATA section or processing
    /// instruction between stanzas, or the stream's end tag.
    ItemStart,
    /// The last byte of that item.
    ItemEnd,
    /// The `>` of the stream header (`<stream:stream …>`).
    HeaderEnd,
    /// A broken limit or rule. After a [droppable](Violation::droppable) one the scanner keeps
    /// following the item (without checking it further) until its [`Mark::ItemEnd`]; after any
    /// other the stream cannot be followed any more.
    Violation(Violation),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Character data: the prolog, whitespace between stanzas, or text inside one.
    Text,
    /// After `<`.
    Open,
    /// After `<!`.
    Bang,
    /// After `<!-`.
    BangDash,
    /// After `<![` and this many bytes of `CDATA[`.
    CdataOpen(u8),
    /// In a comment; how many `-` were just seen (at most 2).
    Comment(u8),
    /// In a CDATA section; how many `]` were just seen (at most 2).
    Cdata(u8),
    /// In a processing instruction; whether the last byte was `?`.
    Pi(bool),
    /// In an end tag.
    EndTag,
    /// In a start tag, outside attribute values; whether the last byte was `/`.
    StartTag(bool),
    /// In an attribute value quoted with this byte.
    Value(u8),
}

/// How many bytes of a stanza's element name, `from` and `id` are kept.
const NAME_CAPTURE: usize = 32;
const FROM_CAPTURE: usize = 256;
const ID_CAPTURE: usize = 64;

/// Which attribute of the stanza's start tag is being captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    From,
    Id,
}

/// The scanner (see the module docs). Feed it the stream's bytes in order with
/// [`Scanner::scan`].
#[derive(Debug, Clone)]
pub struct Scanner {
    limits: Limits,
    state: State,
    /// Open elements, the stream's root included.
    depth: usize,
    /// Inside a top-level item.
    in_item: bool,
    /// The current item broke a droppable limit: it is followed, not checked.
    violated: bool,
    /// Bytes of the current item so far.
    item_len: usize,
    /// The current item's size limit.
    item_limit: usize,
    /// Bytes of the prolog and stream header so far.
    prolog_len: usize,
    /// Bytes of the current attribute value so far.
    value_len: usize,
    /// The start tag being read is the item's own (a stanza's).
    item_tag: bool,
    /// Still reading the element name of the start tag.
    in_name: bool,
    /// The current attribute-name token of the item's start tag (only short names matter).
    token: [u8; 4],
    token_len: usize,
    token_done: bool,
    capture: Capture,
    name: Vec<u8>,
    from: Vec<u8>,
    from_cut: bool,
    id: Vec<u8>,
    id_cut: bool,
    /// An `<iq>` with this id may be as large as the given limit (the roster result).
    large: Option<(Vec<u8>, usize)>,
    /// The stream is lost: this violation is all the scanner says any more.
    failed: Option<Violation>,
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

impl Scanner {
    /// A scanner at the start of a stream (before the prolog).
    pub fn new(limits: Limits) -> Self {
        Scanner {
            limits,
            state: State::Text,
            depth: 0,
            in_item: false,
            violated: false,
            item_len: 0,
            item_limit: limits.stanza_bytes,
            prolog_len: 0,
            value_len: 0,
            item_tag: false,
            in_name: false,
            token: [0; 4],
            token_len: 0,
            token_done: false,
            capture: Capture::None,
            name: Vec::new(),
            from: Vec::new(),
            from_cut: false,
            id: Vec::new(),
            id_cut: false,
            large: None,
            failed: None,
        }
    }

    /// A scanner inside an open stream (after its header), as when splitting the replies
    /// during SASL.
    pub fn in_stream(limits: Limits) -> Self {
        let mut s = Scanner::new(limits);
        s.depth = 1;
        s
    }

    /// Back to the start of a stream (after a stream restart), keeping the limits and the
    /// large-reply allowance.
    pub fn reset(&mut self) {
        let large = self.large.take();
        *self = Scanner::new(self.limits);
        self.large = large;
    }

    /// Lets the `<iq>` whose `id` is `id` be up to `limit` bytes (for a reply known to be
    /// large: the roster); `None` withdraws the allowance.
    pub fn allow_large(&mut self, allowance: Option<(&str, usize)>) {
        self.large = allowance.map(|(id, limit)| (id.as_bytes().to_vec(), limit));
    }

    /// The limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Bytes of the current item so far.
    pub fn item_len(&self) -> usize {
        self.item_len
    }

    /// The current item's size limit.
    pub fn item_limit(&self) -> usize {
        self.item_limit
    }

    /// Open elements, the stream's root included.
    #[cfg(test)]
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Whether the scanner is inside a top-level item.
    pub fn in_item(&self) -> bool {
        self.in_item
    }

    /// Whether the current (or last) stanza's local element name is `name`.
    pub fn item_is(&self, name: &[u8]) -> bool {
        self.name == name
    }

    /// The current (or last) stanza's element name as far as seen (at most 32 bytes, lossy).
    pub fn item_name(&self) -> String {
        String::from_utf8_lossy(&self.name).into_owned()
    }

    /// The current (or last) stanza's `from`, if its start tag carried one (at most 256
    /// bytes, lossy, `…` when longer).
    pub fn item_from(&self) -> Option<String> {
        if self.from.is_empty() && !self.from_cut {
            return None;
        }
        let mut from = String::from_utf8_lossy(&self.from).into_owned();
        if self.from_cut {
            from.push('…');
        }
        Some(from)
    }

    /// Scans `input` up to and including the first byte that makes a [`Mark`]; returns how
    /// many bytes were consumed and the mark, or `(input.len(), None)`. After a violation that
    /// is not droppable the stream cannot be followed: every later call consumes everything
    /// and reports that violation again.
    pub fn scan(&mut self, input: &[u8]) -> (usize, Option<Mark>) {
        let mut i = 0;
        while i < input.len() {
            if let Some(v) = self.failed {
                return (input.len(), Some(Mark::Violation(v)));
            }
            // Fast paths over runs of text and attribute values, up to the next limit.
            let run = match self.state {
                State::Text => input[i..].iter().position(|&b| b == b'<'),
                State::Value(quote) => input[i..].iter().position(|&b| b == quote),
                _ => Some(0),
            }
            .unwrap_or(input.len() - i);
            let mut take = run.min(self.room());
            if let State::Value(_) = self.state {
                if !(self.in_item && self.violated) {
                    take = take.min(self.limits.attribute_bytes.saturating_sub(self.value_len));
                }
                self.value_len += take;
                self.capture_bytes(&input[i..i + take]);
            }
            if take > 0 {
                self.add(take);
                i += take;
                continue;
            }
            // One byte of markup, or the byte that breaks a limit.
            let b = input[i];
            i += 1;
            let over = self.count_one();
            let mark = self.step(b);
            if let Some(v) = over {
                return (i, Some(Mark::Violation(v)));
            }
            if let Some(mark) = mark {
                return (i, Some(mark));
            }
        }
        (input.len(), None)
    }

    /// How many more bytes fit before the size limit that applies here.
    fn room(&self) -> usize {
        if self.in_item {
            if self.violated {
                usize::MAX
            } else {
                self.item_limit.saturating_sub(self.item_len)
            }
        } else if self.depth == 0 {
            self.limits.stanza_bytes.saturating_sub(self.prolog_len)
        } else {
            usize::MAX
        }
    }

    /// Counts `n` bytes that fit.
    fn add(&mut self, n: usize) {
        if self.in_item {
            self.item_len = self.item_len.saturating_add(n);
        } else if self.depth == 0 {
            self.prolog_len = self.prolog_len.saturating_add(n);
        }
    }

    /// Counts one byte; the violation when it breaks the size limit (once per item).
    fn count_one(&mut self) -> Option<Violation> {
        let room = self.room();
        self.add(1);
        if room > 0 {
            return None;
        }
        if self.in_item {
            self.violated = true;
            Some(Violation::Size)
        } else {
            self.failed = Some(Violation::Header);
            Some(Violation::Header)
        }
    }

    /// Reports `v`: droppable ones inside an item mark the item as violated; anything else
    /// (also a long attribute in the stream header) loses the stream.
    fn violation(&mut self, v: Violation) -> Option<Mark> {
        if self.in_item && v.droppable() {
            self.violated = true;
            return Some(Mark::Violation(v));
        }
        self.fail(if v.droppable() { Violation::Header } else { v })
    }

    fn fail(&mut self, v: Violation) -> Option<Mark> {
        self.failed = Some(v);
        Some(Mark::Violation(v))
    }

    /// One byte of markup (not a fast-path run).
    fn step(&mut self, b: u8) -> Option<Mark> {
        match self.state {
            State::Text => {
                // Text bytes reach here only when they break a size limit.
                if b != b'<' {
                    return None;
                }
                self.state = State::Open;
                if self.depth == 1 && !self.in_item {
                    self.start_item();
                    return Some(Mark::ItemStart);
                }
                None
            }
            State::Open => match b {
                b'/' => {
                    self.state = State::EndTag;
                    None
                }
                b'!' => {
                    self.state = State::Bang;
                    None
                }
                b'?' => {
                    self.state = State::Pi(false);
                    None
                }
                _ => self.start_tag(b),
            },
            State::Bang => match b {
                b'-' => {
                    self.state = State::BangDash;
                    None
                }
                b'[' if self.depth > 0 => {
                    self.state = State::CdataOpen(0);
                    None
                }
                _ => self.fail(Violation::Markup),
            },
            State::BangDash => match b {
                b'-' => {
                    self.state = State::Comment(0);
                    None
                }
                _ => self.fail(Violation::Markup),
            },
            State::CdataOpen(n) => {
                const CDATA: &[u8] = b"CDATA[";
                if CDATA.get(usize::from(n)) != Some(&b) {
                    return self.fail(Violation::Markup);
                }
                self.state = if usize::from(n) + 1 == CDATA.len() {
                    State::Cdata(0)
                } else {
                    State::CdataOpen(n + 1)
                };
                None
            }
            State::Comment(dashes) => {
                self.state = match b {
                    b'-' => State::Comment((dashes + 1).min(2)),
                    b'>' if dashes >= 2 => return self.construct_end(),
                    _ => State::Comment(0),
                };
                None
            }
            State::Cdata(brackets) => {
                self.state = match b {
                    b']' => State::Cdata((brackets + 1).min(2)),
                    b'>' if brackets >= 2 => return self.construct_end(),
                    _ => State::Cdata(0),
                };
                None
            }
            State::Pi(question) => {
                self.state = match b {
                    b'?' => State::Pi(true),
                    b'>' if question => return self.construct_end(),
                    _ => State::Pi(false),
                };
                None
            }
            State::EndTag => {
                if b != b'>' {
                    return None;
                }
                self.state = State::Text;
                if self.depth == 0 {
                    return self.fail(Violation::Unbalanced);
                }
                self.depth -= 1;
                match self.depth {
                    // The stream's end tag: an item of its own.
                    0 => {
                        self.prolog_len = 0;
                        self.end_item()
                    }
                    1 => self.end_item(),
                    _ => None,
                }
            }
            State::StartTag(slash) => self.in_start_tag(b, slash),
            State::Value(quote) if b == quote => {
                self.state = State::StartTag(false);
                self.capture = Capture::None;
                None
            }
            // A value byte past the attribute limit (the fast path takes the others).
            State::Value(_) => {
                self.value_len += 1;
                if self.value_len > self.limits.attribute_bytes && !(self.in_item && self.violated)
                {
                    return self.violation(Violation::Attribute);
                }
                None
            }
        }
    }

    /// The first byte of an element name after `<`.
    fn start_tag(&mut self, b: u8) -> Option<Mark> {
        self.state = State::StartTag(false);
        self.item_tag = self.depth == 1;
        self.in_name = self.item_tag;
        self.token_len = 0;
        self.token_done = false;
        self.capture = Capture::None;
        if self.item_tag {
            self.push_name(b);
        }
        // This element's nesting level inside the stream is the number of open elements.
        if self.depth > self.limits.depth && !self.violated {
            self.violated = true;
            return Some(Mark::Violation(Violation::Depth));
        }
        None
    }

    fn in_start_tag(&mut self, b: u8, slash: bool) -> Option<Mark> {
        match b {
            b'>' => {
                self.state = State::Text;
                self.in_name = false;
                if self.item_tag {
                    self.item_tag = false;
                    self.item_limit = self.limit_for_item();
                }
                if slash {
                    // An empty element: a whole stanza at depth 1.
                    return match self.depth {
                        0 => self.fail(Violation::Unbalanced),
                        1 => self.end_item(),
                        _ => None,
                    };
                }
                self.depth += 1;
                if self.depth == 1 {
                    self.prolog_len = 0;
                    return Some(Mark::HeaderEnd);
                }
                None
            }
            b'\'' | b'"' => {
                self.in_name = false;
                self.state = State::Value(b);
                self.value_len = 0;
                self.capture = if self.item_tag {
                    match &self.token[..self.token_len.min(4)] {
                        _ if self.token_len > 4 => Capture::None,
                        b"from" => {
                            self.from.clear();
                            self.from_cut = false;
                            Capture::From
                        }
                        b"id" => {
                            self.id.clear();
                            self.id_cut = false;
                            Capture::Id
                        }
                        _ => Capture::None,
                    }
                } else {
                    Capture::None
                };
                self.token_len = 0;
                self.token_done = false;
                None
            }
            b'/' => {
                self.in_name = false;
                self.state = State::StartTag(true);
                None
            }
            _ => {
                self.state = State::StartTag(false);
                if is_space(b) || b == b'=' {
                    self.in_name = false;
                    self.token_done = true;
                } else if self.item_tag {
                    if self.in_name {
                        self.push_name(b);
                    } else {
                        if self.token_done {
                            self.token_len = 0;
                            self.token_done = false;
                        }
                        if let Some(slot) = self.token.get_mut(self.token_len) {
                            *slot = b;
                        }
                        self.token_len = self.token_len.saturating_add(1);
                    }
                }
                None
            }
        }
    }

    fn push_name(&mut self, b: u8) {
        if b == b':' {
            // Keep the local name only.
            self.name.clear();
        } else if self.name.len() < NAME_CAPTURE {
            self.name.push(b);
        }
    }

    fn capture_bytes(&mut self, bytes: &[u8]) {
        let (buf, cut, max) = match self.capture {
            Capture::None => return,
            Capture::From => (&mut self.from, &mut self.from_cut, FROM_CAPTURE),
            Capture::Id => (&mut self.id, &mut self.id_cut, ID_CAPTURE),
        };
        let room = max.saturating_sub(buf.len());
        if bytes.len() > room {
            *cut = true;
        }
        buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// The size limit of the item whose start tag just ended.
    fn limit_for_item(&self) -> usize {
        match &self.large {
            Some((id, limit)) if self.name == b"iq" && !self.id_cut && self.id == *id => {
                (*limit).max(self.limits.stanza_bytes)
            }
            _ => self.limits.stanza_bytes,
        }
    }

    fn start_item(&mut self) {
        self.in_item = true;
        self.violated = false;
        self.item_len = 1;
        self.item_limit = self.limits.stanza_bytes;
        self.name.clear();
        self.from.clear();
        self.from_cut = false;
        self.id.clear();
        self.id_cut = false;
    }

    fn end_item(&mut self) -> Option<Mark> {
        if !self.in_item {
            return None;
        }
        self.in_item = false;
        Some(Mark::ItemEnd)
    }

    /// The end of a comment, CDATA section or processing instruction.
    fn construct_end(&mut self) -> Option<Mark> {
        self.state = State::Text;
        if self.depth == 1 {
            return self.end_item();
        }
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Scans `input` one byte at a time and in one piece; both must agree. Returns the marks
    /// with the offset just after the byte that made each.
    fn marks_with(mut s: Scanner, input: &str) -> Vec<(usize, Mark)> {
        let bytes = input.as_bytes();
        let mut whole = Vec::new();
        let mut at = 0;
        let mut s2 = s.clone();
        while at < bytes.len() {
            let (n, mark) = s.scan(&bytes[at..]);
            at += n;
            if let Some(m) = mark {
                whole.push((at, m));
                if matches!(m, Mark::Violation(v) if !v.droppable()) {
                    break;
                }
            }
        }
        let mut single = Vec::new();
        for (i, b) in bytes.iter().enumerate() {
            let (n, mark) = s2.scan(std::slice::from_ref(b));
            assert_eq!(n, 1);
            if let Some(m) = mark {
                single.push((i + 1, m));
                if matches!(m, Mark::Violation(v) if !v.droppable()) {
                    break;
                }
            }
        }
        assert_eq!(whole, single, "chunking changed the result for {input:?}");
        whole
    }

    fn marks(input: &str) -> Vec<(usize, Mark)> {
        marks_with(Scanner::new(Limits::default()), input)
    }

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

    #[test]
    fn stanzas_are_found_between_keepalives() {
        let stanza = "<presence from='a@b/c'><status>x &amp; y > z</status></presence>";
        let iq = "<iq type='get' id='1'/>";
        let input = format!("{HEADER} \n{stanza}{iq}  </stream:stream>");
        let h = HEADER.len();
        let s = h + 2;
        let e = s + stanza.len();
        let i = e + iq.len();
        assert_eq!(
            marks(&input),
            vec![
                (h, Mark::HeaderEnd),
                (s + 1, Mark::ItemStart),
                (e, Mark::ItemEnd),
                (e + 1, Mark::ItemStart),
                (i, Mark::ItemEnd),
                (i + 3, Mark::ItemStart),
                (input.len(), Mark::ItemEnd),
            ]
        );
    }

    #[test]
    fn quoted_values_comments_cdata_and_pis_do_not_change_depth() {
        let stanza = "<message a='/>' b=\"<x>\"><!-- </message> --><![CDATA[</message>]]]>\
                      <?pi </message> ?><body/></message>";
        let input = format!("{HEADER}{stanza}");
        let m = marks(&input);
        assert_eq!(
            m,
            vec![
                (HEADER.len(), Mark::HeaderEnd),
                (HEADER.len() + 1, Mark::ItemStart),
                (input.len(), Mark::ItemEnd)
            ]
        );
    }

    #[test]
    fn the_stanzas_name_from_and_id_are_captured() {
        let mut s = Scanner::new(Limits::default());
        let input = format!(
            "{HEADER}<jc:presence xmlns:jc='jabber:client' id = \"p1\" from='bob@example.test/x'>"
        );
        let mut at = 0;
        while at < input.len() {
            at += s.scan(&input.as_bytes()[at..]).0;
        }
        assert_eq!(s.item_name(), "presence");
        assert_eq!(s.item_from().as_deref(), Some("bob@example.test/x"));
        assert_eq!(s.id, b"p1");
        assert!(s.in_item());
        assert_eq!(s.depth(), 2);
    }

    #[test]
    fn nesting_beyond_the_limit_is_reported_once_and_the_stanza_still_ends() {
        let limits = Limits {
            depth: 3,
            ..Limits::default()
        };
        let ok = "<p><a><b/></a></p>";
        let deep = "<p><a><b><c/></b></a></p>";
        let input = format!("{HEADER}{ok}{deep}<p/>");
        let h = HEADER.len();
        let d = h + ok.len();
        let m = marks_with(Scanner::new(limits), &input);
        assert_eq!(
            m,
            vec![
                (h, Mark::HeaderEnd),
                (h + 1, Mark::ItemStart),
                (d, Mark::ItemEnd),
                (d + 1, Mark::ItemStart),
                (d + 11, Mark::Violation(Violation::Depth)),
                (d + deep.len(), Mark::ItemEnd),
                (d + deep.len() + 1, Mark::ItemStart),
                (input.len(), Mark::ItemEnd),
            ]
        );
    }

    #[test]
    fn a_hundred_thousand_levels_cost_nothing_but_counting() {
        let mut s = Scanner::new(Limits::default());
        let input = format!(
            "{HEADER}<presence>{}{}</presence>",
            "<a>".repeat(100_000),
            "</a>".repeat(100_000)
        );
        let m = marks_with(s.clone(), &input);
        // The 32nd <a> is level 33: the violation is at its name.
        assert_eq!(
            m[2],
            (
                HEADER.len() + 10 + 31 * 3 + 2,
                Mark::Violation(Violation::Depth)
            )
        );
        // The stanza is 700 KB: also too large, but only the first violation is reported.
        assert_eq!(m.len(), 4, "{m:?}");
        assert_eq!(m[3], (input.len(), Mark::ItemEnd));
        assert_eq!(s.scan(input.as_bytes()).1, Some(Mark::HeaderEnd));
    }

    #[test]
    fn a_long_attribute_value_and_a_large_stanza_are_reported() {
        // The header (120 bytes) fits; the second stanza does not.
        let limits = Limits {
            stanza_bytes: 150,
            depth: 8,
            attribute_bytes: 50,
        };
        let first = format!("<p a='{}'/>", "x".repeat(51));
        let input = format!("{HEADER}{first}<p>{}</p>", "y".repeat(300));
        let h = HEADER.len();
        let f = h + first.len();
        let m = marks_with(Scanner::new(limits), &input);
        assert_eq!(
            m,
            vec![
                (h, Mark::HeaderEnd),
                (h + 1, Mark::ItemStart),
                // The 51st byte of the value.
                (
                    h + "<p a='".len() + 51,
                    Mark::Violation(Violation::Attribute)
                ),
                (f, Mark::ItemEnd),
                (f + 1, Mark::ItemStart),
                // The 151st byte of the stanza.
                (f + 151, Mark::Violation(Violation::Size)),
                (input.len(), Mark::ItemEnd),
            ]
        );
    }

    #[test]
    fn the_roster_reply_may_be_larger_but_nothing_else() {
        let limits = Limits {
            stanza_bytes: 150,
            ..Limits::default()
        };
        let mut s = Scanner::new(limits);
        s.allow_large(Some(("r1", 1000)));
        let big = "z".repeat(500);
        let input = format!(
            "{HEADER}<iq type='result' id='r1'>{big}</iq><iq id='r2'>{big}</iq><message id='r1'>{big}</message>"
        );
        let violations: Vec<_> = marks_with(s, &input)
            .into_iter()
            .filter(|(_, m)| matches!(m, Mark::Violation(_)))
            .collect();
        assert_eq!(violations.len(), 2, "{violations:?}");
    }

    #[test]
    fn stream_level_breaches_are_fatal() {
        let limits = Limits {
            stanza_bytes: 100,
            ..Limits::default()
        };
        let m = marks_with(
            Scanner::new(limits),
            &format!("<stream:stream a='{}'>", "x".repeat(200)),
        );
        assert_eq!(
            m.last().map(|m| m.1),
            Some(Mark::Violation(Violation::Header))
        );
        let m = marks(&format!("{HEADER}<!DOCTYPE x [<!ENTITY a 'b'>]>"));
        assert_eq!(
            m.last().map(|m| m.1),
            Some(Mark::Violation(Violation::Markup))
        );
        let m = marks("</x>");
        assert_eq!(
            m.last().map(|m| m.1),
            Some(Mark::Violation(Violation::Unbalanced))
        );
        // Once lost, always lost.
        let mut s = Scanner::new(Limits::default());
        s.scan(b"</x>");
        assert_eq!(
            s.scan(b"<presence/>"),
            (11, Some(Mark::Violation(Violation::Unbalanced)))
        );
    }

    #[test]
    fn a_reset_starts_a_new_stream() {
        let mut s = Scanner::new(Limits::default());
        let (n, m) = s.scan(HEADER.as_bytes());
        assert_eq!((n, m), (HEADER.len(), Some(Mark::HeaderEnd)));
        s.reset();
        assert_eq!(s.depth(), 0);
        let (n, m) = s.scan(HEADER.as_bytes());
        assert_eq!((n, m), (HEADER.len(), Some(Mark::HeaderEnd)));
        assert_eq!(s.depth(), 1);
    }
}
