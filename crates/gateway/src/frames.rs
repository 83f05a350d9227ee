//! The frames of live events: each event's SSE frame and WebSocket text (one JSON), rendered
//! once per worker thread ([`Frames`]) and shared by every stream that thread serves.
//!
//! Every live event goes to every subscriber that may see it, so the same bytes are written to
//! each stream: with thousands of subscribers, serialising per subscriber was half the
//! gateway's CPU (B7 in docs/benchmarks.md).

use std::cell::RefCell;
use std::io::Write as _;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::ws::Utf8Bytes;
use imstatus_core::Event;

/// How many recently rendered frames each worker thread keeps for the other subscribers.
const FRAME_SLOTS: usize = 256;

/// The JSON of an event, as every transport sends it; `None` (logged) if it cannot be
/// serialised.
pub(crate) fn event_json(event: &Event) -> Option<String> {
    match serde_json::to_string(event) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::error!(seq = event.seq, %e, "cannot serialise an event");
            None
        }
    }
}

/// The frames of one event for both transports, sharing one rendering of its JSON.
#[derive(Clone)]
pub(crate) struct Frame {
    /// `id: <seq>\ndata: <json>\n\n`.
    pub(crate) sse: Bytes,
    /// The JSON alone (a slice of `sse`), as a WebSocket text message.
    pub(crate) ws: Utf8Bytes,
}

impl Frame {
    fn render(event: &Event) -> Option<Frame> {
        let json = event_json(event)?;
        let mut sse = Vec::with_capacity(json.len() + 32);
        // Writing into a Vec cannot fail.
        let _ = write!(sse, "id: {}\ndata: ", event.seq);
        let at = sse.len();
        sse.extend_from_slice(json.as_bytes());
        sse.extend_from_slice(b"\n\n");
        let sse = Bytes::from(sse);
        let ws = Utf8Bytes::try_from(sse.slice(at..at + json.len())).ok()?;
        Some(Frame { sse, ws })
    }
}

/// The frames of the most recent events, rendered once per worker thread and shared by every
/// subscriber that thread serves. Each thread keeps its own [`FRAME_SLOTS`] slots, so that a
/// delivery takes no lock and touches no counter another core is writing (a shared table
/// behind a mutex cost one contended lock per delivery: 5 million a second at B7's load);
/// the price is one rendering per event per worker instead of one in all. A slot is found by
/// seq and trusted only for the very same hub event (`Arc::ptr_eq`; holding the `Arc` keeps its
/// address from being reused), so resync snapshots, which are built per subscriber, are never
/// confused with live events of the same seq, nor events of two gateways in one process.
/// Memory: at most [`FRAME_SLOTS`] events and their frames per thread that serves streams.
pub(crate) struct Frames;

/// The slot of the event numbered `seq`. Consecutive seqs (one process's hub) take consecutive
/// slots; so do the seqs of a cluster gateway, `stream sequence × 1024 + i` (docs/events.md),
/// which by `seq % FRAME_SLOTS` alone would all share slot 0 — every subscriber a step behind
/// another would then render each event again (B7 on the cluster: 4× the CPU per delivery).
fn slot_of(seq: u64) -> usize {
    ((seq >> 10).wrapping_add(seq & 1023) % FRAME_SLOTS as u64) as usize
}

/// A rendered frame and the hub event it belongs to.
type Slot = Option<(Arc<Event>, Frame)>;

thread_local! {
    static SLOTS: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

impl Frames {
    pub(crate) fn new() -> Frames {
        Frames
    }

    /// The frames of `event` with `id: <event.seq>`.
    pub(crate) fn get(&self, event: &Arc<Event>) -> Option<Frame> {
        let slot = slot_of(event.seq);
        let hit = SLOTS.with(|slots| match slots.borrow().get(slot) {
            Some(Some((e, frame))) if Arc::ptr_eq(e, event) => Some(frame.clone()),
            _ => None,
        });
        if hit.is_some() {
            return hit;
        }
        let frame = Frame::render(event)?;
        SLOTS.with(|slots| {
            let mut slots = slots.borrow_mut();
            if slots.len() < FRAME_SLOTS {
                slots.resize(FRAME_SLOTS, None);
            }
            slots[slot] = Some((event.clone(), frame.clone()));
        });
        Some(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imstatus_core::{AccountId, EventKind, SourceKind, Timestamp};

    fn event(seq: u64) -> Arc<Event> {
        Arc::new(Event {
            seq,
            time: Timestamp::default(),
            account: AccountId::new("alice"),
            source: SourceKind::new_static("test"),
            kind: EventKind::ClientStarting,
        })
    }

    #[test]
    fn recent_events_take_distinct_slots_for_both_numberings() {
        for seqs in [
            (5_000..5_000 + FRAME_SLOTS as u64).collect::<Vec<_>>(),
            (0..FRAME_SLOTS as u64).map(|s| (77 + s) * 1024).collect(),
        ] {
            let slots: std::collections::BTreeSet<usize> =
                seqs.iter().map(|&s| slot_of(s)).collect();
            // At most one pair shares a slot (where a run of 1,024 seqs wraps).
            assert!(
                slots.len() >= FRAME_SLOTS - 1,
                "{} slots for {seqs:?}",
                slots.len()
            );
        }
    }

    #[test]
    fn a_live_event_is_rendered_once_and_shared() {
        let frames = Frames::new();
        let e = event(7);
        let a = frames.get(&e).expect("frame");
        let b = frames.get(&e).expect("frame");
        assert_eq!(
            a.sse.as_ptr(),
            b.sse.as_ptr(),
            "the same bytes, not a second rendering"
        );
        assert_eq!(a.ws.as_ptr(), b.ws.as_ptr());
        let text = std::str::from_utf8(&a.sse).expect("utf-8");
        assert!(text.starts_with("id: 7\ndata: {"), "{text}");
        assert!(text.ends_with("}\n\n"), "{text}");
        assert_eq!(text.matches('\n').count(), 3, "{text}");
        let json = &text["id: 7\ndata: ".len()..text.len() - 2];
        assert_eq!(a.ws.as_str(), json, "the WebSocket text is the same JSON");
        assert_eq!(
            a.ws.as_ptr(),
            a.sse[("id: 7\ndata: ".len())..].as_ptr(),
            "and the same bytes"
        );
        let json: serde_json::Value = serde_json::from_str(json).expect("json");
        assert_eq!(json["seq"], 7);
        assert_eq!(
            serde_json::to_string(&*e).expect("json"),
            a.ws.as_str(),
            "exactly the event's serialisation"
        );
    }

    #[test]
    fn another_event_with_the_same_seq_or_slot_gets_its_own_frame() {
        let frames = Frames::new();
        let first = event(3);
        let f1 = frames.get(&first).expect("frame");
        // A snapshot built for one subscriber can carry the seq of a live event.
        let other = event(3);
        let f2 = frames.get(&other).expect("frame");
        assert_ne!(f1.sse.as_ptr(), f2.sse.as_ptr());
        // An event FRAME_SLOTS later takes the slot; the first is rendered again, correctly.
        let later = event(3 + FRAME_SLOTS as u64);
        let f3 = frames.get(&later).expect("frame");
        assert!(f3
            .sse
            .starts_with(format!("id: {}\n", 3 + FRAME_SLOTS).as_bytes()));
        assert_eq!(frames.get(&first).expect("frame").sse, f1.sse);
    }

    #[test]
    fn each_thread_renders_once_and_keeps_its_own_copy() {
        let frames = Arc::new(Frames::new());
        let e = event(11);
        let here = frames.get(&e).expect("frame");
        let (f, e2) = (frames.clone(), e.clone());
        let there = std::thread::spawn(move || {
            let a = f.get(&e2).expect("frame");
            let b = f.get(&e2).expect("frame");
            assert_eq!(a.sse.as_ptr(), b.sse.as_ptr(), "shared on that thread");
            a.sse
        })
        .join()
        .expect("thread");
        assert_eq!(here.sse, there, "the same frame");
        assert_ne!(
            here.sse.as_ptr(),
            there.as_ptr(),
            "each thread its own copy"
        );
    }
}
