//! `/sync` and presence JSON in, [`Observation`]s out: sans-IO, no clock, no panics.
//!
//! The user's own presence is one part of the account, named after the user ID: Synapse
//! folds the presence of all the user's devices into one state (busy, then online, then
//! unavailable, then offline), so there is nothing finer to report. `online` is `available`, `unavailable`
//! is `away`, MSC3026's `org.matrix.msc3026.busy` is `busy`; `offline` removes the part,
//! which signs the account out. Why it went offline the server does not say; when the last
//! activity is older than [`TIMED_OUT_AFTER`] the user's client most likely stopped syncing
//! and timed out (`connection_lost`), otherwise a client set it (`user`).
//!
//! Contacts (opt-in) are the members of the rooms the account is joined to, from the
//! `m.room.member` state of the filtered `/sync`, and whoever the server sends presence for
//! (it only sends it for users who share a room). At most [`MAX_CONTACTS`] contacts and
//! [`MAX_ROOMS`] rooms are tracked; past that, new ones are ignored and reported once as an
//! anomaly. Anything malformed becomes an [`Observation::Anomaly`] with
//! [`ErrorCode::ProtocolError`] and the rest of the response is translated as usual; a
//! response that is not a `/sync` answer at all is an error for the caller.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use imstatus_core::{
    Availability, ContactId, ErrorCode, Observation, PartId, SignOutReason, Status,
};
use serde::Deserialize;
use serde_json::Value;

use imstatus_core::text::{clip, sanitize};

use crate::config::UserId;

/// Status messages longer than this many characters are cut (and reported as an anomaly),
/// as in the XMPP source.
pub use imstatus_core::text::MAX_STATUS_CHARS;
/// At most this many contacts are tracked.
pub const MAX_CONTACTS: usize = 1000;
/// At most this many joined rooms are read for contacts.
pub const MAX_ROOMS: usize = 1000;
/// An `offline` whose last activity is at least this old is a client that timed out.
pub const TIMED_OUT_AFTER: Duration = Duration::from_secs(5);
/// How much of a peer-supplied string an anomaly's detail quotes.
const MAX_DETAIL_CHARS: usize = 200;
/// MSC3026's busy presence, as Synapse sends it.
pub const BUSY: &str = "org.matrix.msc3026.busy";

/// The `/sync` filter: presence only (for the user alone unless contacts are tracked), and
/// with contacts the `m.room.member` state of joined rooms, each member event cut to the
/// fields read here.
pub fn filter(user: &UserId, contacts: bool) -> String {
    let value = if contacts {
        serde_json::json!({
            "presence": {"types": ["m.presence"]},
            "account_data": {"types": []},
            "event_fields": ["type", "sender", "state_key", "content.membership",
                             "content.presence", "content.status_msg", "content.last_active_ago"],
            "room": {
                "state": {"types": ["m.room.member"], "lazy_load_members": false},
                "timeline": {"types": ["m.room.member"], "limit": 50},
                "ephemeral": {"types": []},
                "account_data": {"types": []},
                "include_leave": false
            }
        })
    } else {
        serde_json::json!({
            "presence": {"types": ["m.presence"], "senders": [user.as_str()]},
            "account_data": {"types": []},
            "room": {"rooms": []}
        })
    };
    value.to_string()
}

#[derive(Deserialize, Default)]
struct EventList {
    #[serde(default)]
    events: Vec<Value>,
}

#[derive(Deserialize, Default)]
struct JoinedRoom {
    #[serde(default)]
    state: EventList,
    #[serde(default)]
    timeline: EventList,
}

#[derive(Deserialize, Default)]
struct Rooms {
    #[serde(default)]
    join: BTreeMap<String, JoinedRoom>,
    #[serde(default)]
    leave: BTreeMap<String, serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct SyncResponse {
    next_batch: String,
    #[serde(default)]
    presence: EventList,
    #[serde(default)]
    rooms: Rooms,
}

/// Translates what the homeserver sends into observations of one account (see the module
/// docs).
#[derive(Debug, Clone)]
pub struct Translator {
    user: UserId,
    part: PartId,
    contacts: bool,
    /// Joined room → its members that are tracked contacts.
    rooms: HashMap<String, HashSet<String>>,
    /// Tracked contacts → their status as last reported (`None`: not reported yet).
    known: HashMap<String, Option<Status>>,
    warned_contacts: bool,
    warned_rooms: bool,
}

impl Translator {
    /// A translator for `user`; `contacts` turns contact tracking on.
    pub fn new(user: UserId, contacts: bool) -> Self {
        Translator {
            part: PartId::new(user.as_str()),
            user,
            contacts,
            rooms: HashMap::new(),
            known: HashMap::new(),
            warned_contacts: false,
            warned_rooms: false,
        }
    }

    /// The part the user's presence is reported as (the user ID).
    pub fn part(&self) -> &PartId {
        &self.part
    }

    /// How many contacts are tracked.
    pub fn contact_count(&self) -> usize {
        self.known.len()
    }

    /// Forgets the rooms and contacts (call before the initial sync of a new session).
    pub fn reset(&mut self) {
        self.rooms.clear();
        self.known.clear();
    }

    /// Translates one `/sync` answer and returns its `next_batch`; `Err` (with a detail) when
    /// it is not a `/sync` answer at all.
    pub fn handle_sync(
        &mut self,
        body: &[u8],
        out: &mut Vec<Observation>,
    ) -> Result<String, String> {
        let sync: SyncResponse = serde_json::from_slice(body).map_err(|e| {
            format!(
                "not a /sync answer: {}",
                clip(&e.to_string(), MAX_DETAIL_CHARS)
            )
        })?;
        let mut reported: HashSet<String> = HashSet::new();
        for event in &sync.presence.events {
            self.handle_presence_event(event, &mut reported, out);
        }
        if self.contacts {
            for room in sync.rooms.leave.keys() {
                if let Some(members) = self.rooms.remove(room) {
                    for member in members {
                        self.drop_if_gone(&member, out);
                    }
                }
            }
            for (room, joined) in &sync.rooms.join {
                for event in joined.state.events.iter().chain(&joined.timeline.events) {
                    self.handle_member_event(room, event, out);
                }
            }
            // Members with no presence yet are offline: an initial sync lists only users who
            // are not, and an incremental one only changes.
            let mut fresh: Vec<&String> = self
                .known
                .iter()
                .filter(|(id, s)| s.is_none() && !reported.contains(*id))
                .map(|(id, _)| id)
                .collect();
            fresh.sort();
            let fresh: Vec<String> = fresh.into_iter().cloned().collect();
            for id in fresh {
                self.known.insert(id.clone(), Some(Status::OFFLINE));
                out.push(Observation::Contact(ContactId::new(id), Status::OFFLINE));
            }
        }
        if sync.next_batch.is_empty() || sync.next_batch.len() > 1024 {
            return Err(format!(
                "unusable next_batch {:?}",
                clip(&sync.next_batch, 40)
            ));
        }
        Ok(sync.next_batch)
    }

    /// Translates the answer of `GET /presence/{user}/status` (the user's own presence).
    pub fn handle_own_status(
        &mut self,
        body: &[u8],
        out: &mut Vec<Observation>,
    ) -> Result<(), String> {
        let content: Value = serde_json::from_slice(body).map_err(|e| {
            format!(
                "not a presence answer: {}",
                clip(&e.to_string(), MAX_DETAIL_CHARS)
            )
        })?;
        if !content.is_object() {
            return Err("the presence answer is not a JSON object".to_owned());
        }
        let user = self.user.as_str().to_owned();
        self.handle_own(&user, &content, out);
        Ok(())
    }

    fn handle_presence_event(
        &mut self,
        event: &Value,
        reported: &mut HashSet<String>,
        out: &mut Vec<Observation>,
    ) {
        if event.get("type").and_then(Value::as_str) != Some("m.presence") {
            return;
        }
        let Some(sender) = event.get("sender").and_then(Value::as_str) else {
            out.push(anomaly("m.presence event without a sender".to_owned()));
            return;
        };
        let Some(content) = event.get("content").filter(|c| c.is_object()) else {
            out.push(anomaly(format!(
                "m.presence event of {} without content",
                clip(sender, MAX_DETAIL_CHARS)
            )));
            return;
        };
        if sender == self.user.as_str() {
            self.handle_own(sender, content, out);
        } else if self.contacts {
            let Some(status) = status_of(sender, content, out) else {
                return;
            };
            let status = status.unwrap_or(Status::OFFLINE);
            if self.track(sender, out) {
                reported.insert(sender.to_owned());
                self.known.insert(sender.to_owned(), Some(status.clone()));
                out.push(Observation::Contact(ContactId::new(sender), status));
            }
        }
    }

    fn handle_own(&mut self, sender: &str, content: &Value, out: &mut Vec<Observation>) {
        let Some(status) = status_of(sender, content, out) else {
            return;
        };
        match status {
            Some(status) => out.push(Observation::presence(self.part.clone(), status)),
            None => {
                let idle = content
                    .get("last_active_ago")
                    .and_then(Value::as_u64)
                    .map(Duration::from_millis);
                let reason = if idle.is_some_and(|d| d >= TIMED_OUT_AFTER) {
                    SignOutReason::ConnectionLost
                } else {
                    SignOutReason::User
                };
                out.push(Observation::Absent(self.part.clone(), reason));
            }
        }
    }

    /// Starts tracking `id` if there is room; whether it is tracked.
    fn track(&mut self, id: &str, out: &mut Vec<Observation>) -> bool {
        if self.known.contains_key(id) {
            return true;
        }
        if id == self.user.as_str() || UserId::parse(id).is_none() {
            return false;
        }
        if self.known.len() >= MAX_CONTACTS {
            if !self.warned_contacts {
                self.warned_contacts = true;
                out.push(anomaly(format!(
                    "more than {MAX_CONTACTS} contacts; the others are not tracked"
                )));
            }
            return false;
        }
        self.known.insert(id.to_owned(), None);
        true
    }

    fn handle_member_event(&mut self, room: &str, event: &Value, out: &mut Vec<Observation>) {
        if event.get("type").and_then(Value::as_str) != Some("m.room.member") {
            return;
        }
        let (Some(member), Some(membership)) = (
            event.get("state_key").and_then(Value::as_str),
            event
                .get("content")
                .and_then(|c| c.get("membership"))
                .and_then(Value::as_str),
        ) else {
            out.push(anomaly(format!(
                "m.room.member event in {} without state_key or membership",
                clip(room, MAX_DETAIL_CHARS)
            )));
            return;
        };
        if member == self.user.as_str() {
            if membership != "join" {
                // We left (or were kicked): the room's members are no longer shared.
                if let Some(members) = self.rooms.remove(room) {
                    for m in members {
                        self.drop_if_gone(&m, out);
                    }
                }
            }
            return;
        }
        if membership == "join" {
            if !self.rooms.contains_key(room) {
                if self.rooms.len() >= MAX_ROOMS {
                    if !self.warned_rooms {
                        self.warned_rooms = true;
                        out.push(anomaly(format!(
                            "more than {MAX_ROOMS} rooms; members of the others are not tracked"
                        )));
                    }
                    return;
                }
                self.rooms.insert(room.to_owned(), HashSet::new());
            }
            if self.track(member, out) {
                if let Some(members) = self.rooms.get_mut(room) {
                    members.insert(member.to_owned());
                }
            }
        } else if let Some(members) = self.rooms.get_mut(room) {
            if members.remove(member) {
                self.drop_if_gone(member, out);
            }
        }
    }

    /// A contact that shares no tracked room any more is reported offline and forgotten.
    fn drop_if_gone(&mut self, member: &str, out: &mut Vec<Observation>) {
        if self.rooms.values().any(|m| m.contains(member)) {
            return;
        }
        if let Some(status) = self.known.remove(member) {
            if status.is_some_and(|s| s != Status::OFFLINE) {
                out.push(Observation::Contact(
                    ContactId::new(member),
                    Status::OFFLINE,
                ));
            }
        }
    }
}

/// The status of a presence content: `Some(Some(status))` signed in, `Some(None)` offline,
/// `None` (with an anomaly) when it cannot be read.
fn status_of(sender: &str, content: &Value, out: &mut Vec<Observation>) -> Option<Option<Status>> {
    let presence = content.get("presence").and_then(Value::as_str);
    let availability = match presence {
        Some("online") => Availability::Available,
        Some("unavailable") => Availability::Away,
        Some(BUSY) | Some("busy") => Availability::Busy,
        Some("offline") => return Some(None),
        other => {
            out.push(anomaly(format!(
                "presence of {} is {}",
                clip(sender, MAX_DETAIL_CHARS),
                match other {
                    Some(p) => format!(
                        "{:?}, not online, unavailable, busy or offline",
                        clip(p, 40)
                    ),
                    None => "missing or not a string".to_owned(),
                }
            )));
            return None;
        }
    };
    let message = match content.get("status_msg") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => {
            if text.chars().nth(MAX_STATUS_CHARS).is_some() {
                out.push(anomaly(format!(
                    "status message of {} characters from {} cut to {MAX_STATUS_CHARS}",
                    text.chars().count(),
                    clip(sender, MAX_DETAIL_CHARS)
                )));
                let cut: String = text.chars().take(MAX_STATUS_CHARS).collect();
                Some(sanitize(&cut).into_owned())
            } else {
                // A contact's own text: nothing in it may forge a line of human output.
                Some(sanitize(text).into_owned())
            }
        }
        Some(_) => {
            out.push(anomaly(format!(
                "status_msg of {} is not a string",
                clip(sender, MAX_DETAIL_CHARS)
            )));
            None
        }
    };
    Some(Some(Status {
        availability,
        message: message.filter(|m: &String| !m.is_empty()),
    }))
}

fn anomaly(detail: String) -> Observation {
    Observation::Anomaly(ErrorCode::ProtocolError, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALICE: &str = "@alice:example.test";

    fn translator(contacts: bool) -> Translator {
        Translator::new(UserId::parse(ALICE).expect("user"), contacts)
    }

    fn sync(t: &mut Translator, json: &str) -> (Result<String, String>, Vec<Observation>) {
        let mut out = Vec::new();
        let r = t.handle_sync(json.as_bytes(), &mut out);
        (r, out)
    }

    fn me() -> PartId {
        PartId::new(ALICE)
    }

    fn presence(sender: &str, content: &str) -> String {
        format!(
            r#"{{"next_batch":"s2","presence":{{"events":[{{"type":"m.presence","sender":"{sender}","content":{content}}}]}}}}"#
        )
    }

    #[test]
    fn own_presence_maps_to_the_availabilities_of_the_docs() {
        let mut t = translator(false);
        let cases = [
            (
                r#"{"presence":"online","currently_active":true,"last_active_ago":6}"#,
                Observation::presence(me(), Status::new(Availability::Available)),
            ),
            (
                r#"{"presence":"unavailable","status_msg":"lunch","last_active_ago":157}"#,
                Observation::presence(me(), Status::with_message(Availability::Away, "lunch")),
            ),
            (
                r#"{"presence":"org.matrix.msc3026.busy","status_msg":""}"#,
                Observation::presence(me(), Status::new(Availability::Busy)),
            ),
            (
                r#"{"presence":"offline","last_active_ago":301,"status_msg":"bye"}"#,
                Observation::Absent(me(), SignOutReason::User),
            ),
            (
                r#"{"presence":"offline","last_active_ago":34993}"#,
                Observation::Absent(me(), SignOutReason::ConnectionLost),
            ),
        ];
        for (content, expected) in cases {
            let (r, out) = sync(&mut t, &presence(ALICE, content));
            assert_eq!(r.as_deref(), Ok("s2"));
            assert_eq!(out, vec![expected], "{content}");
        }
    }

    #[test]
    fn without_contacts_other_users_are_ignored() {
        let mut t = translator(false);
        let (r, out) = sync(
            &mut t,
            &presence("@bob:example.test", r#"{"presence":"online"}"#),
        );
        assert_eq!((r.as_deref(), out), (Ok("s2"), vec![]));
    }

    #[test]
    fn an_empty_sync_says_nothing_and_gives_the_next_batch() {
        let mut t = translator(true);
        let (r, out) = sync(
            &mut t,
            r#"{"next_batch":"s9_1","account_data":{},"device_lists":{}}"#,
        );
        assert_eq!((r.as_deref(), out), (Ok("s9_1"), vec![]));
    }

    #[test]
    fn members_of_joined_rooms_become_contacts_offline_unless_their_presence_came() {
        let mut t = translator(true);
        let json = r#"{"next_batch":"s1",
          "presence":{"events":[{"type":"m.presence","sender":"@bob:example.test","content":{"presence":"online","status_msg":"hi"}}]},
          "rooms":{"join":{"!r:example.test":{"state":{"events":[
            {"type":"m.room.member","state_key":"@alice:example.test","content":{"membership":"join"}},
            {"type":"m.room.member","state_key":"@bob:example.test","content":{"membership":"join"}},
            {"type":"m.room.member","state_key":"@carol:example.test","content":{"membership":"join"}},
            {"type":"m.room.member","state_key":"@dave:example.test","content":{"membership":"invite"}}
          ]},"timeline":{"events":[]}}}}}"#;
        let (r, out) = sync(&mut t, json);
        assert_eq!(r.as_deref(), Ok("s1"));
        assert_eq!(
            out,
            vec![
                Observation::Contact(
                    ContactId::new("@bob:example.test"),
                    Status::with_message(Availability::Available, "hi")
                ),
                Observation::Contact(ContactId::new("@carol:example.test"), Status::OFFLINE),
            ]
        );
        assert_eq!(t.contact_count(), 2);
        // carol leaves the only shared room: she is no longer a contact (already offline: no
        // observation); bob goes offline.
        let json = r#"{"next_batch":"s2",
          "presence":{"events":[{"type":"m.presence","sender":"@bob:example.test","content":{"presence":"offline"}}]},
          "rooms":{"join":{"!r:example.test":{"timeline":{"events":[
            {"type":"m.room.member","state_key":"@carol:example.test","content":{"membership":"leave"}}
          ]}}}}}"#;
        let (_, out) = sync(&mut t, json);
        assert_eq!(
            out,
            vec![Observation::Contact(
                ContactId::new("@bob:example.test"),
                Status::OFFLINE
            )]
        );
        assert_eq!(t.contact_count(), 1);
        // We leave the room: bob goes with it.
        let (_, out) = sync(
            &mut t,
            r#"{"next_batch":"s3","rooms":{"leave":{"!r:example.test":{}}}}"#,
        );
        assert_eq!(out, vec![]);
        assert_eq!(t.contact_count(), 0);
    }

    #[test]
    fn malformed_events_are_anomalies_and_the_rest_is_read() {
        let mut t = translator(true);
        let json = r#"{"next_batch":"s5","presence":{"events":[
            {"type":"m.presence","content":{"presence":"online"}},
            {"type":"m.presence","sender":"@bob:example.test"},
            {"type":"m.presence","sender":"@bob:example.test","content":{"presence":"sleeping"}},
            {"type":"m.presence","sender":"@bob:example.test","content":{"presence":7}},
            {"type":"m.presence","sender":"@bob:example.test","content":{"presence":"online","status_msg":{"x":1}}},
            {"type":"m.presence","sender":"not a user id","content":{"presence":"online"}},
            "not even an object",
            {"type":"m.presence","sender":"@alice:example.test","content":{"presence":"unavailable"}}
          ]},
          "rooms":{"join":{"!r:x":{"state":{"events":[{"type":"m.room.member","content":{}}]}}}}}"#;
        let (r, out) = sync(&mut t, json);
        assert_eq!(r.as_deref(), Ok("s5"));
        let anomalies: Vec<&str> = out
            .iter()
            .filter_map(|o| match o {
                Observation::Anomaly(ErrorCode::ProtocolError, d) => Some(d.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(
            anomalies,
            [
                "m.presence event without a sender",
                "m.presence event of @bob:example.test without content",
                "presence of @bob:example.test is \"sleeping\", not online, unavailable, busy or offline",
                "presence of @bob:example.test is missing or not a string",
                "status_msg of @bob:example.test is not a string",
                "m.room.member event in !r:x without state_key or membership",
            ]
        );
        assert!(out.contains(&Observation::Contact(
            ContactId::new("@bob:example.test"),
            Status::new(Availability::Available)
        )));
        assert!(out.contains(&Observation::presence(
            me(),
            Status::new(Availability::Away)
        )));
    }

    #[test]
    fn answers_that_are_not_sync_answers_are_errors() {
        let mut t = translator(true);
        for bad in [
            "",
            "{",
            "[]",
            r#"{"presence":{}}"#,
            r#"{"next_batch":5}"#,
            r#"{"next_batch":""}"#,
            r#"{"next_batch":"s","rooms":{"join":{"!r":{"state":7}}}}"#,
            "\u{0}\u{1}binary",
        ] {
            let (r, out) = sync(&mut t, bad);
            assert!(r.is_err(), "{bad:?} gave {r:?}");
            assert!(out.is_empty());
        }
        // Deep nesting where events are read into values: serde_json's recursion limit (128)
        // makes it an error, not a stack overflow; in an ignored field it is skipped.
        let nest = |n| format!("{}{}", "[".repeat(n), "]".repeat(n));
        let deep = format!(
            r#"{{"next_batch":"s","presence":{{"events":[{}]}}}}"#,
            nest(100_000)
        );
        let (r, _) = sync(&mut t, &deep);
        assert!(r.is_err());
        let ignored = format!(r#"{{"next_batch":"s","x":{}}}"#, nest(100_000));
        let (r, out) = sync(&mut t, &ignored);
        assert_eq!((r.as_deref(), out), (Ok("s"), vec![]));
    }

    #[test]
    fn control_characters_in_a_status_message_cannot_forge_output_lines() {
        let mut t = translator(false);
        let (_, out) = sync(
            &mut t,
            &presence(
                ALICE,
                r#"{"presence":"online","status_msg":"lunch\nbob  signed_out\u001b[2J"}"#,
            ),
        );
        assert_eq!(
            out,
            vec![Observation::presence(
                me(),
                Status::with_message(Availability::Available, "lunch bob  signed_out\u{fffd}[2J")
            )]
        );
    }

    #[test]
    fn long_status_messages_are_cut_to_1024_characters() {
        let mut t = translator(false);
        let long = "ä".repeat(5000);
        let (_, out) = sync(
            &mut t,
            &presence(
                ALICE,
                &format!(r#"{{"presence":"online","status_msg":"{long}"}}"#),
            ),
        );
        assert_eq!(
            out,
            vec![
                anomaly(format!(
                    "status message of 5000 characters from {ALICE} cut to 1024"
                )),
                Observation::presence(
                    me(),
                    Status::with_message(Availability::Available, "ä".repeat(1024))
                ),
            ]
        );
    }

    #[test]
    fn the_contact_cap_holds_and_is_reported_once() {
        let mut t = translator(true);
        let events: Vec<String> = (0..MAX_CONTACTS + 5)
            .map(|i| format!(r#"{{"type":"m.presence","sender":"@u{i}:x","content":{{"presence":"online"}}}}"#))
            .collect();
        let json = format!(
            r#"{{"next_batch":"s","presence":{{"events":[{}]}}}}"#,
            events.join(",")
        );
        let (_, out) = sync(&mut t, &json);
        assert_eq!(t.contact_count(), MAX_CONTACTS);
        let anomalies = out
            .iter()
            .filter(|o| matches!(o, Observation::Anomaly(..)))
            .count();
        assert_eq!(anomalies, 1);
        assert_eq!(out.len(), MAX_CONTACTS + 1);
    }

    #[test]
    fn own_status_answers_translate_like_events() {
        let mut t = translator(false);
        let mut out = Vec::new();
        t.handle_own_status(br#"{"presence":"offline"}"#, &mut out)
            .expect("valid");
        t.handle_own_status(
            br#"{"presence":"online","status_msg":"x","currently_active":true}"#,
            &mut out,
        )
        .expect("valid");
        assert_eq!(
            out,
            vec![
                Observation::Absent(me(), SignOutReason::User),
                Observation::presence(me(), Status::with_message(Availability::Available, "x")),
            ]
        );
        assert!(t.handle_own_status(b"[1]", &mut out).is_err());
        assert!(t.handle_own_status(b"<html>", &mut out).is_err());
    }

    #[test]
    fn the_filter_asks_for_the_users_presence_only_without_contacts() {
        let user = UserId::parse(ALICE).expect("user");
        let f: Value = serde_json::from_str(&filter(&user, false)).expect("json");
        assert_eq!(f["presence"]["senders"], serde_json::json!([ALICE]));
        assert_eq!(f["room"]["rooms"], serde_json::json!([]));
        let f: Value = serde_json::from_str(&filter(&user, true)).expect("json");
        assert_eq!(
            f["room"]["state"]["types"],
            serde_json::json!(["m.room.member"])
        );
        assert!(f["presence"].get("senders").is_none());
    }
}
