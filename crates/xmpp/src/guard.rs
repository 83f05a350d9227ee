//! [`Guarded`]: the byte stream under the XML parser, which lets through only stanzas that are
//! complete and within [`Limits`].
//!
//! tokio-xmpp builds every stanza into a tree (its payloads recursively, on the task's stack)
//! and has no size or depth limits, so a deeply nested presence from any contact would
//! overflow the stack — an abort that nothing can catch — and a large one would be buffered
//! whole. So the bytes from the TLS or TCP stream go through [`crate::scan`] first, and each
//! stanza is held back (at most [`Limits::stanza_bytes`], or the roster allowance) until its
//! last byte has arrived:
//!
//! - A stanza that nests too deep, holds a too long attribute value or grows too large is
//!   *dropped*: its bytes never reach the parser, the rest of it is discarded as it arrives, a
//!   [`Dropped`] report says what and from whom, and the stream goes on. (A contact's presence
//!   is re-sent by the server on every login, so ending the stream would make one hostile
//!   contact keep the account blind.)
//! - Skipping more than [`MAX_DROP_BYTES`] of one stanza, an oversized stream header, a
//!   markup declaration or an unbalanced end tag lose the stream: the read fails with
//!   `InvalidData` (`protocol_error`), and the source reconnects with backoff.
//!
//! The read buffer holds at most one stanza and one read chunk; reports wait in a queue of
//! [`MAX_REPORTS`] (when it is full, further drops are only counted). Writes pass through.
//!
//! The presence fast path ([`Shared::fast_path`]): once it is on, each complete `<presence>`
//! goes to [`crate::fast::presence`] first; one it reads is taken out of the byte stream and
//! queued ([`Shared::take_presence`]) at its place in it. The bytes after a queued presence
//! are not handed to the XML parser until that presence is taken (the reader is woken through
//! [`Shared::reported`]), so stanzas reach the reader in the order they were sent, whichever
//! way each was read. The queue holds what one read chunk brought at most (no more is read
//! while a queued presence waits for the parser to catch up with it).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

use xmpp_parsers::presence::Presence;

use crate::scan::{Limits, Mark, Scanner, Violation};

/// How much is read from the transport at once.
const READ_CHUNK: usize = 16 * 1024;
/// A dropped stanza still going after this many bytes ends the stream (only a hostile server
/// sends one: relaying servers have their own stanza limits, Prosody 256 KiB / 512 KiB).
pub const MAX_DROP_BYTES: usize = 16 * 1024 * 1024;
/// At most this many drop reports wait to be taken; later ones are counted.
pub const MAX_REPORTS: usize = 32;
/// How many chunks are skipped in one poll before yielding to the runtime.
const CHUNKS_PER_POLL: usize = 64;

/// A stanza the guard dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    /// Its element name (`presence`, `iq`, …), as far as seen.
    pub name: String,
    /// Its `from`, when its start tag carried one (raw: not validated).
    pub from: Option<String>,
    /// Which limit it broke.
    pub violation: Violation,
    /// That limit, described ("nested deeper than 32 levels").
    pub rule: String,
}

impl Dropped {
    /// One line for an anomaly's detail (the caller sanitises and clips it).
    pub fn describe(&self) -> String {
        let name = if self.name.is_empty() {
            "stanza"
        } else {
            &self.name
        };
        match &self.from {
            Some(from) => format!("dropped a <{name}> from {from} {}", self.rule),
            None => format!("dropped a <{name}> {}", self.rule),
        }
    }
}

/// What the guard shares with whoever reads the stream: drop reports and the large-reply
/// allowance. Cloned handles refer to the same state.
#[derive(Debug, Default)]
pub struct Shared {
    reports: Mutex<VecDeque<Dropped>>,
    /// Drops not queued because the queue was full.
    uncounted: AtomicUsize,
    notify: Notify,
    large: Mutex<Option<(String, usize)>>,
    /// Whether complete presences go to the fast path.
    fast: AtomicBool,
    /// Presences the fast path read, each with the stream offset at which it was sent.
    presences: Mutex<VecDeque<(u64, Presence)>>,
    /// The stream offset up to which the XML parser has consumed the released bytes.
    consumed: AtomicU64,
}

impl Shared {
    /// The oldest drop report not taken yet, and how many were not queued (the queue was
    /// full) before it.
    pub fn take_report(&self) -> Option<(Dropped, usize)> {
        let report = self
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()?;
        Some((report, self.uncounted.swap(0, Ordering::Relaxed)))
    }

    /// Resolves when a report may have been queued since the last call.
    pub async fn reported(&self) {
        self.notify.notified().await;
    }

    /// Lets the `<iq>` with this id be up to `limit` bytes (the roster result); `None` ends
    /// the allowance.
    pub fn allow_large(&self, allowance: Option<(&str, usize)>) {
        *self.large.lock().unwrap_or_else(|e| e.into_inner()) =
            allowance.map(|(id, limit)| (id.to_owned(), limit));
    }

    /// Turns the presence fast path on or off (off at first: the login's own steps read
    /// everything through the full parser).
    pub fn fast_path(&self, on: bool) {
        self.fast.store(on, Ordering::Relaxed);
    }

    /// The next presence the fast path read, once the XML parser has delivered everything
    /// sent before it.
    pub fn take_presence(&self) -> Option<Presence> {
        let mut presences = self.presences.lock().unwrap_or_else(|e| e.into_inner());
        match presences.front() {
            Some((at, _)) if *at <= self.consumed.load(Ordering::Relaxed) => {
                presences.pop_front().map(|(_, p)| p)
            }
            _ => None,
        }
    }

    /// The stream offset of the oldest queued presence.
    fn next_presence_at(&self) -> Option<u64> {
        self.presences
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .front()
            .map(|(at, _)| *at)
    }

    fn report(&self, dropped: Dropped) {
        let mut reports = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        if reports.len() < MAX_REPORTS {
            reports.push_back(dropped);
        } else {
            self.uncounted.fetch_add(1, Ordering::Relaxed);
        }
        drop(reports);
        self.notify.notify_one();
    }
}

/// A transport (TCP or TLS) whose reads go through the guard (see the module docs).
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    scanner: Scanner,
    /// Bytes read and kept: `[..pos]` consumed, `[pos..ready]` released, `[ready..]` the
    /// stanza held back.
    buf: Vec<u8>,
    pos: usize,
    ready: usize,
    /// Where the held-back item starts in `buf`.
    item_start: Option<usize>,
    /// The current item is being dropped.
    dropping: bool,
    /// The stream is lost; returned once the released bytes are consumed.
    failed: Option<String>,
    eof: bool,
    chunk: Box<[u8]>,
    shared: Arc<Shared>,
    /// The allowance last copied into the scanner.
    large_seen: Option<(String, usize)>,
    /// The stream offset of `buf[0]` (bytes taken by the fast path do not count).
    base: u64,
}

impl<S> Guarded<S> {
    /// Guards `inner` with the default [`Limits`].
    pub fn new(inner: S) -> Self {
        Guarded::with_limits(inner, Limits::default())
    }

    /// Guards `inner` with `limits`.
    pub fn with_limits(inner: S, limits: Limits) -> Self {
        Guarded {
            inner,
            scanner: Scanner::new(limits),
            buf: Vec::new(),
            pos: 0,
            ready: 0,
            item_start: None,
            dropping: false,
            failed: None,
            eof: false,
            chunk: vec![0; READ_CHUNK].into_boxed_slice(),
            shared: Arc::default(),
            large_seen: None,
            base: 0,
        }
    }

    /// The reports and the allowance.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Bytes received and not consumed by the reader yet (released or held back).
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The stream restarts (after SASL): the scanner starts over. Fails when the server
    /// already sent more, which it must not before our new stream header.
    pub fn restart(&mut self) -> io::Result<()> {
        if self.buffered() > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the server sent {} bytes before the stream restart",
                    self.buffered()
                ),
            ));
        }
        self.scanner.reset();
        self.buf.clear();
        self.pos = 0;
        self.ready = 0;
        self.item_start = None;
        self.dropping = false;
        Ok(())
    }

    /// The transport, for STARTTLS; fails when the server sent anything after `<proceed/>`
    /// (which would otherwise be read as if it had come over TLS).
    pub fn into_inner(self) -> io::Result<S> {
        if self.buffered() > 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the server sent {} plaintext bytes after <proceed/>",
                    self.buffered()
                ),
            ));
        }
        Ok(self.inner)
    }

    /// Scans and keeps `n` new bytes of `self.chunk`.
    fn take_in(&mut self, n: usize) {
        let mut at = 0;
        while at < n && self.failed.is_none() {
            let (used, mark) = self.scanner.scan(&self.chunk[at..n]);
            if !self.dropping {
                self.buf.extend_from_slice(&self.chunk[at..at + used]);
            }
            at += used;
            match mark {
                None => {}
                Some(Mark::ItemStart) => {
                    // The `<` is the last byte kept.
                    let start = self.buf.len() - 1;
                    self.ready = start;
                    self.item_start = Some(start);
                }
                Some(Mark::ItemEnd) => self.end_item(),
                Some(Mark::HeaderEnd) => self.ready = self.buf.len(),
                Some(Mark::Violation(v)) if v.droppable() => {
                    let start = self.item_start.take().unwrap_or(self.ready);
                    self.buf.truncate(start);
                    self.dropping = true;
                    let limits = *self.scanner.limits();
                    self.shared.report(Dropped {
                        name: self.scanner.item_name(),
                        from: self.scanner.item_from(),
                        violation: v,
                        rule: v.describe(&limits, self.scanner.item_limit()),
                    });
                    if !self.scanner.in_item() {
                        // The violating byte was also the item's last.
                        self.end_item();
                    }
                }
                Some(Mark::Violation(v)) => {
                    let limits = *self.scanner.limits();
                    self.fail(format!(
                        "the server sent {}",
                        v.describe(&limits, self.scanner.item_limit())
                    ));
                }
            }
            if self.dropping && self.scanner.item_len() > MAX_DROP_BYTES {
                self.fail(format!(
                    "the server sent a stanza larger than {MAX_DROP_BYTES} bytes"
                ));
            }
            if self.item_start.is_none() && !self.dropping && self.failed.is_none() {
                self.ready = self.buf.len();
            }
        }
    }

    fn end_item(&mut self) {
        if self.dropping {
            self.dropping = false;
        } else {
            if let Some(start) = self.item_start {
                if self.scanner.item_is(b"presence") && self.shared.fast.load(Ordering::Relaxed) {
                    if let Some(presence) = crate::fast::presence(&self.buf[start..]) {
                        self.buf.truncate(start);
                        let at = self.base + start as u64;
                        self.shared
                            .presences
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .push_back((at, presence));
                    }
                }
            }
            self.ready = self.buf.len();
        }
        self.item_start = None;
    }

    fn fail(&mut self, detail: String) {
        self.failed = Some(detail);
        self.buf.truncate(self.ready);
        self.item_start = None;
        self.dropping = false;
    }

    /// Copies the shared allowance into the scanner when it changed.
    fn sync_allowance(&mut self) {
        let large = self
            .shared
            .large
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if large != self.large_seen {
            self.scanner
                .allow_large(large.as_ref().map(|(id, limit)| (id.as_str(), *limit)));
            self.large_seen = large;
        }
    }

    /// Drops consumed bytes from the front of the buffer.
    fn compact(&mut self) {
        if self.pos == 0 {
            return;
        }
        self.buf.drain(..self.pos);
        self.base += self.pos as u64;
        self.ready -= self.pos;
        if let Some(start) = self.item_start.as_mut() {
            *start -= self.pos;
        }
        self.pos = 0;
        // A large roster reply may have grown the buffer: give the memory back.
        if self.buf.capacity() > 4 * READ_CHUNK + self.buf.len() * 2 {
            self.buf.shrink_to(self.buf.len().max(READ_CHUNK));
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncBufRead for Guarded<S> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        let mut chunks = 0;
        loop {
            // Released bytes up to the next queued presence (the parser must not overtake it).
            let mut end = this.ready;
            if let Some(at) = this.shared.next_presence_at() {
                let at = usize::try_from(at.saturating_sub(this.base)).unwrap_or(usize::MAX);
                if at <= this.pos {
                    // The parser has caught up with it: the reader takes it next.
                    this.shared.notify.notify_one();
                    return Poll::Pending;
                }
                end = end.min(at);
            }
            if this.pos < end {
                return Poll::Ready(Ok(&this.buf[this.pos..end]));
            }
            if let Some(detail) = &this.failed {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    detail.clone(),
                )));
            }
            if this.eof {
                return Poll::Ready(Ok(&[]));
            }
            if chunks == CHUNKS_PER_POLL {
                // Skipping a long dropped stanza: let the runtime run other tasks.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.compact();
            this.sync_allowance();
            let mut read = ReadBuf::new(&mut this.chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let n = read.filled().len();
            if n == 0 {
                this.eof = true;
                continue;
            }
            this.take_in(n);
            chunks += 1;
        }
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.ready);
        this.shared
            .consumed
            .store(this.base + this.pos as u64, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let available = match self.as_mut().poll_fill_buf(cx) {
            Poll::Ready(Ok(available)) => available,
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Pending => return Poll::Pending,
        };
        let n = available.len().min(out.remaining());
        out.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::scan::MAX_DEPTH;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt};

    const HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:client' \
        xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";

    /// Everything the guard lets through, read in small pieces.
    async fn through(input: Vec<u8>, limits: Limits) -> (io::Result<String>, Vec<Dropped>) {
        let mut g = Guarded::with_limits(&input[..], limits);
        let mut out = Vec::new();
        let result = g.read_to_end(&mut out).await;
        let mut reports = Vec::new();
        while let Some((r, _)) = g.shared().take_report() {
            reports.push(r);
        }
        (
            result.map(|_| String::from_utf8_lossy(&out).into_owned()),
            reports,
        )
    }

    #[tokio::test]
    async fn good_stanzas_pass_unchanged() {
        let input = format!(
            "{HEADER} <presence from='a@b/c'><show>away</show></presence>\n<iq id='1' type='get'/></stream:stream>"
        );
        let (out, reports) = through(input.clone().into_bytes(), Limits::default()).await;
        assert_eq!(out.unwrap(), input);
        assert!(reports.is_empty());
    }

    #[tokio::test]
    async fn a_too_deep_stanza_is_dropped_and_the_next_one_passes() {
        let deep = format!(
            "<presence from='mallory@example.test/x'>{}{}</presence>",
            "<a>".repeat(100_000),
            "</a>".repeat(100_000)
        );
        let good = "<presence from='alice@example.test/desk'/>";
        let input = format!("{HEADER}{deep}{good}");
        let (out, reports) = through(input.into_bytes(), Limits::default()).await;
        assert_eq!(out.unwrap(), format!("{HEADER}{good}"));
        assert_eq!(
            reports,
            vec![Dropped {
                name: "presence".into(),
                from: Some("mallory@example.test/x".into()),
                violation: Violation::Depth,
                rule: format!("nested deeper than {MAX_DEPTH} levels"),
            }]
        );
        assert_eq!(
            reports[0].describe(),
            "dropped a <presence> from mallory@example.test/x nested deeper than 32 levels"
        );
    }

    #[tokio::test]
    async fn a_stanza_ending_on_its_violating_byte_is_dropped_whole() {
        let limits = Limits {
            stanza_bytes: 130,
            ..Limits::default()
        };
        // Exactly 131 bytes: the last '>' breaks the limit and ends the stanza.
        let input = format!("{HEADER}<a>{}</a><b/>", "x".repeat(124));
        let (out, reports) = through(input.into_bytes(), limits).await;
        assert_eq!(out.unwrap(), format!("{HEADER}<b/>"));
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].violation, Violation::Size);
    }

    #[tokio::test]
    async fn skipping_too_much_ends_the_stream() {
        let mut input = format!("{HEADER}<presence><status>").into_bytes();
        input.resize(input.len() + MAX_DROP_BYTES + 10, b'x');
        let (out, reports) = through(input, Limits::default()).await;
        let e = out.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("larger than 16777216 bytes"), "{e}");
        assert_eq!(reports.len(), 1);
    }

    #[tokio::test]
    async fn the_header_is_released_before_any_stanza_and_nothing_after_a_loss() {
        let input = format!("{HEADER}<!DOCTYPE x><presence/>");
        let mut g = Guarded::new(input.as_bytes());
        let got = g.fill_buf().await.unwrap().to_vec();
        assert_eq!(got, HEADER.as_bytes());
        g.consume(got.len());
        let e = g.fill_buf().await.unwrap_err();
        assert!(e.to_string().contains("markup declaration"), "{e}");
    }

    #[tokio::test]
    async fn a_restart_needs_an_empty_buffer() {
        let input = format!("{HEADER}<success/>{HEADER}");
        let mut g = Guarded::new(input.as_bytes());
        let mut n = 0;
        while n < HEADER.len() + "<success/>".len() {
            let got = g.fill_buf().await.unwrap().len();
            let take = got.min(HEADER.len() + 10 - n);
            g.consume(take);
            n += take;
        }
        // The second header is scanned as a stanza (held back): it is buffered, not released.
        assert!(g.buffered() > 0);
        assert!(g.restart().is_err());
        let mut g = Guarded::new(HEADER.as_bytes());
        let got = g.fill_buf().await.unwrap().len();
        g.consume(got);
        assert!(g.restart().is_ok());
    }

    #[tokio::test]
    async fn the_roster_allowance_applies_only_to_its_id() {
        let limits = Limits {
            stanza_bytes: 150,
            ..Limits::default()
        };
        let big = "<item jid='x@y'/>".repeat(50);
        let roster = format!("<iq type='result' id='imstatus-roster'>{big}</iq>");
        let other = format!("<iq type='result' id='other'>{big}</iq>");
        let input = format!("{HEADER}{roster}{other}");
        let mut g = Guarded::with_limits(input.as_bytes(), limits);
        g.shared().allow_large(Some(("imstatus-roster", 10_000)));
        let mut out = String::new();
        g.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, format!("{HEADER}{roster}"));
        assert_eq!(
            g.shared().take_report().map(|r| r.0.violation),
            Some(Violation::Size)
        );
    }

    #[tokio::test]
    async fn reports_beyond_the_queue_are_counted() {
        let limits = Limits {
            depth: 1,
            ..Limits::default()
        };
        let input = format!("{HEADER}{}", "<p><a/></p>".repeat(MAX_REPORTS + 5));
        let (out, reports) = through(input.into_bytes(), limits).await;
        assert_eq!(out.unwrap(), HEADER);
        assert_eq!(reports.len(), MAX_REPORTS);
        let input = format!("{HEADER}{}", "<p><a/></p>".repeat(MAX_REPORTS + 5));
        let mut g = Guarded::with_limits(input.as_bytes(), limits);
        let mut sink = Vec::new();
        g.read_to_end(&mut sink).await.unwrap();
        let mut uncounted = 0;
        while let Some((_, n)) = g.shared().take_report() {
            uncounted += n;
        }
        assert_eq!(uncounted, 5);
    }
}
