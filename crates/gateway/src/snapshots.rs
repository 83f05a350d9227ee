//! The read path's cache: each account's snapshot kept as the JSON bytes `GET
//! /v1/accounts/{name}` answers, rebuilt only after the account changed.
//!
//! A read compares the hub's [`snapshot_version`](imstatus_hub::Hub::snapshot_version) of the
//! account (an atomic, no lock) with the version the cached bytes were rendered from. While
//! they match, the answer is those bytes with the current time written over the `time` field
//! (always 24 bytes: RFC 3339 with milliseconds); otherwise the hub's lock is held just long
//! enough to clone the account's state ([`Hub::account_state`]), and it is serialised after the
//! lock is released, then kept for the next reads. The hub bumps the version before it applies
//! anything that could change the account and before the resulting events go out, so a
//! client that has seen an event never reads a snapshot older than it.
//!
//! Not cached: a snapshot whose activity carries `idle_s` (the desktop source's seconds since
//! the last input, which changes with the clock alone); it is rendered on every read, still
//! outside the lock. Memory: one rendered snapshot per configured account, no more (the
//! accounts are fixed when the gateway starts).

use std::cell::Cell;
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::{Mutex, PoisonError};

use imstatus_core::{AccountId, CodedError, Event, Timestamp};
use imstatus_hub::{AccountState, Hub};
use serde::Serialize;

use crate::error::ApiError;

/// The length of a serialised [`Timestamp`] between its quotes (`2026-11-24T10:00:00.123Z`).
const TIME_LEN: usize = 24;

/// One account's rendered snapshot.
struct Rendered {
    version: u64,
    /// The snapshot's JSON, `source_error` included.
    body: Box<[u8]>,
    /// Where the 24 bytes of the `time` value start in `body`.
    time_at: usize,
}

/// The rendered snapshots of every account of the hub, in the hub's order.
pub(crate) struct SnapshotCache {
    index: HashMap<AccountId, usize>,
    slots: Box<[(AccountId, Mutex<Option<Rendered>>)]>,
}

impl SnapshotCache {
    /// An empty cache for the hub's accounts.
    pub(crate) fn new(hub: &Hub) -> SnapshotCache {
        let slots: Box<[_]> = hub
            .accounts()
            .into_iter()
            .map(|a| (a, Mutex::new(None)))
            .collect();
        let index = slots
            .iter()
            .enumerate()
            .map(|(i, (a, _))| (a.clone(), i))
            .collect();
        SnapshotCache { index, slots }
    }

    /// The accounts, in the hub's order.
    pub(crate) fn accounts(&self) -> impl Iterator<Item = &AccountId> {
        self.slots.iter().map(|(a, _)| a)
    }

    /// Appends the account's snapshot as JSON (with `source_error` while its source is down)
    /// with `time` = `now`; `Ok(false)` for an account the hub does not have.
    pub(crate) fn write(
        &self,
        hub: &Hub,
        account: &str,
        now: Timestamp,
        out: &mut Vec<u8>,
    ) -> Result<bool, ApiError> {
        let Some(&i) = self.index.get(account) else {
            return Ok(false);
        };
        let Some(version) = hub.snapshot_version(account) else {
            return Ok(false);
        };
        let time = time_text(now);
        let (account, slot) = &self.slots[i];
        {
            let cached = slot.lock().unwrap_or_else(PoisonError::into_inner);
            if let (Some(r), Some(time)) = (cached.as_ref(), time.as_ref()) {
                if r.version == version {
                    put(out, r, time);
                    return Ok(true);
                }
            }
        }
        // Stale or empty: the state under the hub's lock, serialised after it.
        let Some(mut state) = hub.account_state(account) else {
            return Ok(false);
        };
        state.snapshot.time = now;
        let start = out.len();
        write_snapshot(&state.snapshot, state.source_error.as_ref(), out)?;
        if let (Some(rendered), Some(_)) = (cacheable(&state, &out[start..]), time) {
            let mut cached = slot.lock().unwrap_or_else(PoisonError::into_inner);
            // Never replace bytes of a newer version that another read stored meanwhile.
            if cached.as_ref().is_none_or(|r| r.version < rendered.version) {
                *cached = Some(rendered);
            }
        }
        Ok(true)
    }
}

/// Appends a rendered snapshot with its `time` replaced.
fn put(out: &mut Vec<u8>, r: &Rendered, time: &[u8; TIME_LEN]) {
    let start = out.len();
    out.extend_from_slice(&r.body);
    let at = start + r.time_at;
    out[at..at + TIME_LEN].copy_from_slice(time);
}

/// The bytes of `state` to keep, unless the snapshot changes with the clock alone or its
/// `time` is not where it is expected (a year past 9999).
fn cacheable(state: &AccountState, json: &[u8]) -> Option<Rendered> {
    let snapshot = state.snapshot.snapshot()?;
    if snapshot
        .activity
        .as_ref()
        .is_some_and(|a| a.idle_s.is_some())
    {
        return None;
    }
    let prefix = format!("{{\"seq\":{},\"time\":\"", state.snapshot.seq);
    let time_at = prefix.len();
    let time = time_text(state.snapshot.time)?;
    let ok = json.starts_with(prefix.as_bytes())
        && json.get(time_at..time_at + TIME_LEN) == Some(&time[..])
        && json.get(time_at + TIME_LEN) == Some(&b'"');
    ok.then(|| Rendered {
        version: state.version,
        body: json.into(),
        time_at,
    })
}

thread_local! {
    /// The last time formatted on this thread: reads come many to the millisecond.
    static LAST_TIME: Cell<(u64, [u8; TIME_LEN])> = const { Cell::new((u64::MAX, [0; TIME_LEN])) };
}

/// `t` as its JSON string's 24 bytes; `None` if it does not have that length.
pub(crate) fn time_text(t: Timestamp) -> Option<[u8; TIME_LEN]> {
    let ms = t.as_millis();
    let (last, text) = LAST_TIME.with(Cell::get);
    if last == ms {
        return Some(text);
    }
    let mut buf = [0u8; TIME_LEN + 8];
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    write!(cursor, "{t}").ok()?;
    let len = usize::try_from(cursor.position()).ok()?;
    let text: [u8; TIME_LEN] = buf.get(..len)?.try_into().ok()?;
    LAST_TIME.with(|c| c.set((ms, text)));
    Some(text)
}

/// A source's current error, as in error responses.
#[derive(Serialize)]
struct SourceErrorView<'a> {
    code: &'static str,
    hresult: String,
    detail: &'a str,
    hint: &'static str,
}

/// Serialises a snapshot event; when the account's source is down, a `source_error` object
/// is added (the only addition to the snapshot event's shape).
pub(crate) fn write_snapshot(
    event: &Event,
    source_error: Option<&CodedError>,
    out: &mut Vec<u8>,
) -> Result<(), ApiError> {
    let start = out.len();
    serde_json::to_writer(&mut *out, event)
        .map_err(|e| ApiError::internal(format!("serialising a snapshot: {e}")))?;
    if let Some(err) = source_error {
        if out.len() > start && out.last() == Some(&b'}') {
            out.pop();
            out.extend_from_slice(b",\"source_error\":");
            let view = SourceErrorView {
                code: err.code.as_str(),
                hresult: format!("0x{:08X}", err.code.hresult()),
                detail: &err.detail,
                hint: err.code.hint(),
            };
            serde_json::to_writer(&mut *out, &view)
                .map_err(|e| ApiError::internal(format!("serialising an error: {e}")))?;
            out.push(b'}');
        }
    }
    Ok(())
}
