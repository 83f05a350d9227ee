//! A minimal raw XMPP client: plaintext, SASL PLAIN, resource binding, raw stanzas.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Deadline for the whole login in [`XmppClient::connect`].
const LOGIN_DEADLINE: Duration = Duration::from_secs(10);
/// How long [`XmppClient::close`] waits for the server's `</stream:stream>`.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);
/// How much of the received text an error message carries.
const ERROR_TEXT: usize = 2000;

/// A blocking XMPP client for tests, playing "the user's other client" or a contact.
///
/// It speaks plaintext only (the testkit's Prosody and ejabberd): stream, SASL PLAIN, bind, and then
/// whatever [`XmppClient::send_raw`] sends. It splits what it receives into top-level stanzas
/// (tracking element depth, no full XML parsing); [`XmppClient::read_until`] consumes them.
#[derive(Debug)]
pub struct XmppClient {
    stream: TcpStream,
    jid: String,
    domain: String,
    /// Bytes received but not yet split into stanzas.
    buffer: Vec<u8>,
    /// Stanzas split off but not yet returned.
    stanzas: VecDeque<String>,
    /// Whether the server's `<stream:stream>` is open.
    in_stream: bool,
}

impl XmppClient {
    /// Connects to 127.0.0.1:`port`, logs in as `jid_local@domain` with SASL PLAIN and binds
    /// `resource`. Sends no presence.
    pub fn connect(
        port: u16,
        jid_local: &str,
        domain: &str,
        password: &str,
        resource: &str,
    ) -> Result<Self> {
        let deadline = Instant::now() + LOGIN_DEADLINE;
        let (mut client, features) = XmppClient::open(
            port,
            format!("{jid_local}@{domain}/{resource}"),
            domain,
            LOGIN_DEADLINE,
        )?;
        if !features.contains("<mechanism>PLAIN</mechanism>") {
            return Err(xmpp_error("the server offers no SASL PLAIN", &features));
        }
        let credentials = format!("\0{jid_local}\0{password}");
        client.send_raw(&format!(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
            base64(credentials.as_bytes())
        ))?;
        let outcome = client.next_stanza(deadline, LOGIN_DEADLINE)?;
        if !outcome.starts_with("<success") {
            // Leave no session behind; the failure is the error that matters.
            let _ = client.finish();
            return Err(xmpp_error(
                &format!("SASL PLAIN as {jid_local}@{domain} failed"),
                &outcome,
            ));
        }

        // The server starts a new stream after <success/>.
        client.in_stream = false;
        client.open_stream(deadline, LOGIN_DEADLINE)?;
        client.send_raw(&format!(
            "<iq type='set' id='bind1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>\
             <resource>{}</resource></bind></iq>",
            escape(resource)
        ))?;
        let bound = client.next_stanza(deadline, LOGIN_DEADLINE)?;
        if !bound.starts_with("<iq") || !bound.contains("type='result'") {
            return Err(xmpp_error(
                &format!("binding resource {resource:?} failed"),
                &bound,
            ));
        }
        if let Some(jid) = between(&bound, "<jid>", "</jid>") {
            client.jid = jid.to_owned();
        }
        Ok(client)
    }

    /// Connects to 127.0.0.1:`port` and opens a stream to `domain` without logging in;
    /// returns the server's `<stream:features>` (Prosody answers them once its event loop
    /// runs) and closes the stream. Everything must happen within `d`.
    pub fn stream_features(port: u16, domain: &str, d: Duration) -> Result<String> {
        let (mut client, features) =
            XmppClient::open(port, format!("(no login)@{domain}"), domain, d)?;
        let _ = client.send_raw("</stream:stream>");
        Ok(features)
    }

    /// Connects to 127.0.0.1:`port` (`jid` names the connection in errors) and opens a stream
    /// to `domain` within `d`; returns the client and the server's `<stream:features>`.
    fn open(port: u16, jid: String, domain: &str, d: Duration) -> Result<(Self, String)> {
        let deadline = Instant::now() + d;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let stream = TcpStream::connect_timeout(&addr, d)
            .map_err(|e| Error::io(format!("connecting to {addr}"), e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| Error::io("setting TCP_NODELAY", e))?;
        let mut client = XmppClient {
            stream,
            jid,
            domain: domain.to_owned(),
            buffer: Vec::new(),
            stanzas: VecDeque::new(),
            in_stream: false,
        };
        let features = client.open_stream(deadline, d)?;
        Ok((client, features))
    }

    /// The full JID the server bound.
    pub fn jid(&self) -> &str {
        &self.jid
    }

    /// Sends `xml` as it is.
    pub fn send_raw(&mut self, xml: &str) -> Result<()> {
        self.stream
            .write_all(xml.as_bytes())
            .map_err(|e| Error::io(format!("sending to the XMPP server as {}", self.jid), e))
    }

    /// Sends available presence with optional `<show>`, `<status>` and `<priority>`.
    pub fn presence(
        &mut self,
        show: Option<&str>,
        status: Option<&str>,
        priority: Option<i8>,
    ) -> Result<()> {
        let mut xml = String::from("<presence>");
        if let Some(show) = show {
            xml.push_str(&format!("<show>{}</show>", escape(show)));
        }
        if let Some(status) = status {
            xml.push_str(&format!("<status>{}</status>", escape(status)));
        }
        if let Some(priority) = priority {
            xml.push_str(&format!("<priority>{priority}</priority>"));
        }
        xml.push_str("</presence>");
        self.send_raw(&xml)
    }

    /// Sends `<presence type='unavailable'/>`.
    pub fn unavailable(&mut self) -> Result<()> {
        self.send_raw("<presence type='unavailable'/>")
    }

    /// Closes the stream cleanly: sends `</stream:stream>` and waits (up to 5 s) until the
    /// server has closed the connection, so that its session is gone when this returns (a
    /// Prosody stopped while a session lingers takes ~1 s longer to exit).
    pub fn close(mut self) -> Result<()> {
        self.finish()
    }

    /// Sends `</stream:stream>` and reads until the server closes the connection.
    fn finish(&mut self) -> Result<()> {
        self.send_raw("</stream:stream>")?;
        let deadline = Instant::now() + CLOSE_DEADLINE;
        loop {
            match self.poll_stanza(deadline) {
                Ok(Some(_)) => {}
                // Closed (or reset) by the server: done.
                Err(Error::Xmpp { .. }) => return Ok(()),
                Ok(None) => {
                    return Err(Error::Timeout {
                        what: format!("the server to close the connection of {}", self.jid),
                        after: CLOSE_DEADLINE,
                        context: String::new(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Drops the connection abortively (SO_LINGER 0: the server gets a TCP RST, no stream
    /// close), as a crashed client would.
    pub fn reset(self) {
        // If this fails the drop below still closes the socket, only less abruptly.
        let _ = socket2::SockRef::from(&self.stream).set_linger(Some(Duration::ZERO));
    }

    /// Reads until a stanza containing `needle` arrives, within `d`; returns every stanza
    /// read, that one last, joined by newlines. Stanzas after it stay queued. Prosody writes
    /// attributes with single quotes (`from='alice@example.test/desk'`). A closed or reset
    /// connection is an [`Error::Xmpp`] saying "the server closed the connection".
    pub fn read_until(&mut self, needle: &str, d: Duration) -> Result<String> {
        let deadline = Instant::now() + d;
        let mut read = Vec::new();
        loop {
            let polled = match self.poll_stanza(deadline) {
                Ok(polled) => polled,
                Err(Error::Xmpp { what, received }) => {
                    let mut all = read.join("\n");
                    all.push_str(&received);
                    return Err(xmpp_error(
                        &format!("{what} while waiting for {needle:?}"),
                        &all,
                    ));
                }
                Err(e) => return Err(e),
            };
            match polled {
                Some(stanza) => {
                    let found = stanza.contains(needle);
                    read.push(stanza);
                    if found {
                        return Ok(read.join("\n"));
                    }
                }
                None => {
                    return Err(Error::Timeout {
                        what: format!("a stanza containing {needle:?} for {}", self.jid),
                        after: d,
                        context: format!("\n--- read meanwhile ---\n{}", read.join("\n")),
                    });
                }
            }
        }
    }

    /// Reads every stanza that arrives within `d` and returns them (possibly none). For
    /// checks that something is *never* received the window is the caller's to choose and
    /// justify; a closed connection is an [`Error::Xmpp`].
    pub fn read_for(&mut self, d: Duration) -> Result<Vec<String>> {
        let deadline = Instant::now() + d;
        let mut read = Vec::new();
        while let Some(stanza) = self.poll_stanza(deadline)? {
            read.push(stanza);
        }
        Ok(read)
    }

    /// Reads the next top-level stanza (or `</stream:stream>`), within `d`.
    pub fn read_stanza(&mut self, d: Duration) -> Result<String> {
        self.next_stanza(Instant::now() + d, d)
    }

    /// Sends the stream header; returns the server's `<stream:features>`, read before
    /// `deadline` (`d` from the caller's start, as a timeout error says).
    fn open_stream(&mut self, deadline: Instant, d: Duration) -> Result<String> {
        self.send_raw(&format!(
            "<?xml version='1.0'?><stream:stream to='{}' version='1.0' xmlns='jabber:client' \
             xmlns:stream='http://etherx.jabber.org/streams'>",
            escape(&self.domain)
        ))?;
        let features = self.next_stanza(deadline, d)?;
        if features.starts_with("<stream:features") {
            Ok(features)
        } else {
            Err(xmpp_error("expected <stream:features>", &features))
        }
    }

    /// The next stanza before `deadline`, which is `d` from the caller's start.
    fn next_stanza(&mut self, deadline: Instant, d: Duration) -> Result<String> {
        self.poll_stanza(deadline)?.ok_or_else(|| Error::Timeout {
            what: format!("a stanza for {}", self.jid),
            after: d,
            context: String::new(),
        })
    }

    /// The next stanza, or `None` once `deadline` has passed.
    fn poll_stanza(&mut self, deadline: Instant) -> Result<Option<String>> {
        loop {
            if let Some(stanza) = self.stanzas.pop_front() {
                return Ok(Some(stanza));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let timeout = (deadline - now).max(Duration::from_millis(1));
            self.stream
                .set_read_timeout(Some(timeout))
                .map_err(|e| Error::io("setting the read timeout", e))?;
            let mut chunk = [0u8; 16 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    return Err(xmpp_error(
                        &format!("the server closed the connection of {}", self.jid),
                        &String::from_utf8_lossy(&self.buffer),
                    ));
                }
                Ok(n) => {
                    self.buffer.extend_from_slice(&chunk[..n]);
                    self.split();
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(e) if e.kind() == ErrorKind::ConnectionReset => {
                    return Err(xmpp_error(
                        &format!("the server closed the connection of {} (reset)", self.jid),
                        &String::from_utf8_lossy(&self.buffer),
                    ));
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("reading from the XMPP server as {}", self.jid),
                        e,
                    ));
                }
            }
        }
    }

    /// Moves every complete top-level stanza from the buffer to the queue.
    fn split(&mut self) {
        loop {
            let start = self
                .buffer
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buffer.len());
            self.buffer.drain(..start);
            let Some(item) = next_item(&self.buffer, self.in_stream) else {
                return;
            };
            let text = String::from_utf8_lossy(&self.buffer[..item.end]).into_owned();
            self.buffer.drain(..item.end);
            match item.kind {
                ItemKind::StreamOpen => self.in_stream = true,
                ItemKind::StreamClose => {
                    self.in_stream = false;
                    self.stanzas.push_back(text);
                }
                ItemKind::Stanza => self.stanzas.push_back(text),
                ItemKind::Skip => {}
            }
        }
    }
}

/// What [`next_item`] found at the start of the buffer.
#[derive(Debug, PartialEq, Eq)]
enum ItemKind {
    /// `<?xml …?>` or a comment.
    Skip,
    /// The server's `<stream:stream …>`.
    StreamOpen,
    /// `</stream:stream>`.
    StreamClose,
    /// A complete element.
    Stanza,
}

#[derive(Debug, PartialEq, Eq)]
struct Item {
    kind: ItemKind,
    end: usize,
}

/// The kind of one tag.
#[derive(Debug, PartialEq, Eq)]
enum Tag {
    Open,
    Close,
    Empty,
    Other,
}

/// Finds the end of the tag starting at `buf[at] == b'<'`: the index after its `>`.
fn scan_tag(buf: &[u8], at: usize) -> Option<(usize, Tag)> {
    let rest = buf.get(at..)?;
    for (prefix, suffix) in [
        (&b"<?"[..], &b"?>"[..]),
        (b"<!--", b"-->"),
        (b"<![CDATA[", b"]]>"),
    ] {
        if rest.starts_with(prefix) {
            let end = find(rest, suffix, prefix.len())? + suffix.len();
            return Some((at + end, Tag::Other));
        }
    }
    let mut quote = None;
    for (i, &b) in rest.iter().enumerate().skip(1) {
        match (quote, b) {
            (Some(q), _) if b == q => quote = None,
            (Some(_), _) => {}
            (None, b'\'' | b'"') => quote = Some(b),
            (None, b'>') => {
                let kind = if rest.get(1) == Some(&b'/') {
                    Tag::Close
                } else if rest.get(i - 1) == Some(&b'/') {
                    Tag::Empty
                } else {
                    Tag::Open
                };
                return Some((at + i + 1, kind));
            }
            _ => {}
        }
    }
    None
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|p| p + from)
}

/// The complete item at the start of `buf` (which starts with `<`), if it is all there.
fn next_item(buf: &[u8], in_stream: bool) -> Option<Item> {
    if buf.first() != Some(&b'<') {
        // Text between stanzas (not whitespace): skip up to the next tag.
        let end = buf.iter().position(|&b| b == b'<')?;
        return Some(Item {
            kind: ItemKind::Skip,
            end,
        });
    }
    let (end, tag) = scan_tag(buf, 0)?;
    match tag {
        Tag::Other => {
            return Some(Item {
                kind: ItemKind::Skip,
                end,
            })
        }
        Tag::Close => {
            return Some(Item {
                kind: ItemKind::StreamClose,
                end,
            })
        }
        Tag::Open if !in_stream || buf.starts_with(b"<stream:stream") => {
            return Some(Item {
                kind: ItemKind::StreamOpen,
                end,
            })
        }
        Tag::Empty => {
            return Some(Item {
                kind: ItemKind::Stanza,
                end,
            })
        }
        Tag::Open => {}
    }
    let mut depth = 1usize;
    let mut at = end;
    while depth > 0 {
        let lt = at + buf.get(at..)?.iter().position(|&b| b == b'<')?;
        let (end, tag) = scan_tag(buf, lt)?;
        match tag {
            Tag::Open => depth += 1,
            Tag::Close => depth -= 1,
            Tag::Empty | Tag::Other => {}
        }
        at = end;
    }
    Some(Item {
        kind: ItemKind::Stanza,
        end: at,
    })
}

/// The text between the first `open` and the following `close`.
fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text.get(start..)?.find(close)?;
    text.get(start..start + len)
}

fn xmpp_error(what: &str, received: &str) -> Error {
    let mut received = received.to_owned();
    if received.len() > ERROR_TEXT {
        let mut cut = ERROR_TEXT;
        while !received.is_char_boundary(cut) {
            cut -= 1;
        }
        received.truncate(cut);
        received.push('…');
    }
    Error::Xmpp {
        what: what.to_owned(),
        received,
    }
}

/// Escapes text for XML content and attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(input: &str) -> (Vec<String>, String) {
        let mut buffer = input.as_bytes().to_vec();
        let mut out = Vec::new();
        let mut in_stream = false;
        loop {
            let start = buffer
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(buffer.len());
            buffer.drain(..start);
            let Some(item) = next_item(&buffer, in_stream) else {
                break;
            };
            let text = String::from_utf8_lossy(&buffer[..item.end]).into_owned();
            buffer.drain(..item.end);
            match item.kind {
                ItemKind::StreamOpen => in_stream = true,
                ItemKind::Skip => {}
                _ => out.push(text),
            }
        }
        (out, String::from_utf8_lossy(&buffer).into_owned())
    }

    #[test]
    fn stanzas_are_split_at_the_top_level() {
        let (stanzas, rest) = split_all(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:client' id='x'>\
             <stream:features><mechanisms><mechanism>PLAIN</mechanism></mechanisms></stream:features>\
             <presence from='a@b/c' type='unavailable'/> \n\
             <presence from='a@b/d'><status>1 > 0 'q'</status><x a='>' b=\"/>\"/></presence>\
             <message><body>part",
        );
        assert_eq!(
            stanzas,
            vec![
                "<stream:features><mechanisms><mechanism>PLAIN</mechanism></mechanisms></stream:features>",
                "<presence from='a@b/c' type='unavailable'/>",
                "<presence from='a@b/d'><status>1 > 0 'q'</status><x a='>' b=\"/>\"/></presence>",
            ]
        );
        assert_eq!(rest, "<message><body>part");
    }

    #[test]
    fn the_stream_close_is_an_item_of_its_own() {
        let (stanzas, rest) = split_all(
            "<stream:stream><stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             </stream:error></stream:stream>",
        );
        assert_eq!(
            stanzas,
            vec![
                "<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
                "</stream:stream>",
            ]
        );
        assert_eq!(rest, "");
    }

    #[test]
    fn incomplete_tags_wait_for_more_bytes() {
        assert_eq!(next_item(b"<presence from='a>", true), None);
        assert_eq!(next_item(b"<presence><show>away</show>", true), None);
        assert_eq!(next_item(b"<?xml version='1.0'", false), None);
    }

    #[test]
    fn base64_matches_the_rfc_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in cases {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
        assert_eq!(base64(b"\0alice\0alicepw"), "AGFsaWNlAGFsaWNlcHc=");
    }

    #[test]
    fn escape_covers_markup() {
        assert_eq!(
            escape("<a & 'b' \"c\">"),
            "&lt;a &amp; &apos;b&apos; &quot;c&quot;&gt;"
        );
    }

    #[test]
    fn between_finds_the_bound_jid() {
        assert_eq!(
            between("<iq><bind><jid>a@b/c</jid></bind></iq>", "<jid>", "</jid>"),
            Some("a@b/c")
        );
        assert_eq!(between("<iq/>", "<jid>", "</jid>"), None);
    }
}
