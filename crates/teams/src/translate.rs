//! Sans-IO translation: what teams-for-linux says (MQTT payloads, D-Bus signal values, the
//! `GetState` JSON) into [`AppState`], and an [`AppState`] into [`Observation`]s.
//!
//! Both transports fill the same [`AppState`] (presence, in call, camera, microphone, screen
//! sharing; each `None` until the app said something) and ask a [`Reporter`] for the
//! observations that take imstatus from what it reported last to the new [`View`]. So one
//! sequence of app states gives the same observations, and the same events, over MQTT and over
//! D-Bus. Nothing here does I/O or reads a clock; every input is capped before it is parsed,
//! and bad input is an `Err` with a one-line detail (the source reports it as an anomaly).

use imstatus_core::text::clip;
use imstatus_core::{
    ActivitySignal, App, Availability, Observation, PartId, SignOutReason, Status,
};
use serde_json::Value;

use crate::names;

/// The largest `status` payload read (the app's is about 100 bytes).
pub const MAX_STATUS_PAYLOAD: usize = 4096;
/// The largest payload of the other topics read (`true`, `speaking`…).
pub const MAX_VALUE_PAYLOAD: usize = 64;
/// The largest `GetState` answer read (the app's is about 300 bytes, more with a caller).
pub const MAX_STATE_JSON: usize = 64 * 1024;
/// The largest string argument of a signal read (`busy`, `speaking`…).
pub const MAX_SIGNAL_STRING: usize = 256;
/// How much of an unexpected value a detail quotes.
const QUOTE: usize = 60;

/// A presence value of teams-for-linux (docs/teams-for-linux.md has the mapping).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Presence {
    /// `available` (1).
    Available,
    /// `busy` (2): busy, in a call, in a meeting.
    Busy,
    /// `do_not_disturb` (3): do not disturb, focusing.
    DoNotDisturb,
    /// `away` (4): away, inactive.
    Away,
    /// `be_right_back` (5).
    BeRightBack,
    /// `unknown` (-1): the app has not read a presence (yet).
    Unknown,
    /// A value this version of imstatus does not know (quoted, clipped).
    Other(String),
}

impl Presence {
    /// From the app's string (MQTT `status`, D-Bus `PresenceChanged`'s first argument).
    pub fn from_name(name: &str) -> Presence {
        match name {
            "available" => Presence::Available,
            "busy" => Presence::Busy,
            "do_not_disturb" => Presence::DoNotDisturb,
            "away" => Presence::Away,
            "be_right_back" => Presence::BeRightBack,
            "unknown" => Presence::Unknown,
            other => Presence::Other(clip(other, QUOTE)),
        }
    }

    /// From the app's code (`statusCode`).
    pub fn from_code(code: i64) -> Presence {
        match names::PRESENCE.iter().find(|(_, c)| i64::from(*c) == code) {
            Some((name, _)) => Presence::from_name(name),
            None => Presence::Other(format!("code {code}")),
        }
    }

    /// From D-Bus's pair: the app sends `unknown` with the original number for a code outside
    /// its table, so `unknown` with a code other than -1 is a value imstatus does not know.
    pub fn from_pair(name: &str, code: i64) -> Presence {
        match Presence::from_name(name) {
            Presence::Unknown if code != -1 => Presence::Other(format!("unknown, code {code}")),
            p => p,
        }
    }

    /// The status while signed in, `None` for `unknown` (not signed in as far as the app can
    /// tell). DND is `busy` and BRB is `away`, as for the Windows Teams client; a value
    /// imstatus does not know is signed in with availability `unknown`.
    pub fn status(&self) -> Option<Status> {
        let availability = match self {
            Presence::Available => Availability::Available,
            Presence::Busy | Presence::DoNotDisturb => Availability::Busy,
            Presence::Away | Presence::BeRightBack => Availability::Away,
            Presence::Other(_) => Availability::Unknown,
            Presence::Unknown => return None,
        };
        Some(Status::new(availability))
    }
}

/// What the app said about itself; `None`: nothing (yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppState {
    /// The presence.
    pub presence: Option<Presence>,
    /// In a call.
    pub in_call: Option<bool>,
    /// The camera is on.
    pub camera: Option<bool>,
    /// The microphone is live (`speaking` or `silent`; `muted`, `off`, `unknown` are not).
    pub microphone: Option<bool>,
    /// Sharing the screen.
    pub screen_sharing: Option<bool>,
}

impl AppState {
    /// What imstatus shows for this state, with the app running or not. When it does not run
    /// nothing it said counts (the retained MQTT values outlive it).
    pub fn view(&self, running: bool) -> View {
        if !running {
            return View::default();
        }
        View {
            running,
            status: self.presence.as_ref().and_then(Presence::status),
            in_call: self.in_call.unwrap_or(false),
            camera: self.camera.unwrap_or(false),
            microphone: self.microphone.unwrap_or(false),
            screen_sharing: self.screen_sharing.unwrap_or(false),
        }
    }

    /// Forgets the call: the media values of an earlier run of the app.
    pub fn forget_media(&mut self) {
        *self = AppState {
            presence: self.presence.take(),
            ..AppState::default()
        };
    }
}

/// What imstatus shows: the three axes and the activity, as one value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The app runs.
    pub running: bool,
    /// Signed in with this status; `None`: signed out.
    pub status: Option<Status>,
    /// In a call.
    pub in_call: bool,
    /// The camera is on.
    pub camera: bool,
    /// The microphone is live.
    pub microphone: bool,
    /// Sharing the screen.
    pub screen_sharing: bool,
}

/// Turns views into observations: everything (then `Synced`) after a (re)connect, only the
/// differences after that. Order within one report: client, presence, then the activity
/// (in call, camera, microphone, screen sharing).
#[derive(Debug, Default)]
pub struct Reporter {
    last: Option<View>,
}

impl Reporter {
    /// A reporter that has reported nothing.
    pub fn new() -> Self {
        Reporter::default()
    }

    /// Whether the last view reported had the app running.
    pub fn last_running(&self) -> bool {
        self.last.as_ref().is_some_and(|v| v.running)
    }

    /// The whole view, then `Synced`.
    pub fn sync(&mut self, view: View) -> Vec<Observation> {
        let mut out = Vec::new();
        out.push(if view.running {
            Observation::ClientAppeared
        } else {
            Observation::ClientVanished
        });
        if let Some(status) = &view.status {
            out.push(Observation::presence(
                PartId::new(names::PART),
                status.clone(),
            ));
        }
        activity(None, &view, &mut out);
        out.push(Observation::Synced);
        self.last = Some(view);
        out
    }

    /// What changed since the last report (the whole view if nothing was reported yet, without
    /// `Synced`).
    pub fn update(&mut self, view: View) -> Vec<Observation> {
        let Some(last) = self.last.replace(view.clone()) else {
            let mut out = self.sync(view);
            out.pop();
            return out;
        };
        let mut out = Vec::new();
        if last.running != view.running {
            out.push(if view.running {
                Observation::ClientAppeared
            } else {
                // Signs the part off first: signed_out, then client_shutdown.
                Observation::ClientVanished
            });
        }
        if view.status != last.status || (view.running && !last.running) {
            match &view.status {
                Some(status) => out.push(Observation::presence(
                    PartId::new(names::PART),
                    status.clone(),
                )),
                // Running, but the presence went back to `unknown`.
                None if view.running && last.status.is_some() => out.push(Observation::Absent(
                    PartId::new(names::PART),
                    SignOutReason::Unknown,
                )),
                None => {}
            }
        }
        activity(Some(&last), &view, &mut out);
        out
    }
}

/// The activity signals that differ from `last` (all of them without a `last`).
fn activity(last: Option<&View>, view: &View, out: &mut Vec<Observation>) {
    let changed = |f: fn(&View) -> bool| last.is_none_or(|l| f(l) != f(view));
    let app = || vec![App::new(names::APP, None)];
    let apps = |on: bool| if on { app() } else { Vec::new() };
    if changed(|v| v.in_call) {
        out.push(Observation::Activity(ActivitySignal::InCall(view.in_call)));
    }
    if changed(|v| v.camera) {
        out.push(Observation::Activity(ActivitySignal::Camera(apps(
            view.camera,
        ))));
    }
    if changed(|v| v.microphone) {
        out.push(Observation::Activity(ActivitySignal::Microphone(apps(
            view.microphone,
        ))));
    }
    if changed(|v| v.screen_sharing) {
        out.push(Observation::Activity(ActivitySignal::ScreenSharing(
            view.screen_sharing,
        )));
    }
}

// ------------------------------------------------------------------------------ values

/// `true` / `false`.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        other => Err(format!("expected true or false, got {}", quote(other))),
    }
}

/// The microphone's state: live for `speaking` and `silent` (and `true`, before v2.11.0).
pub fn parse_microphone(text: &str) -> Result<bool, String> {
    match text.trim() {
        "speaking" | "silent" | "unmuted" | "true" => Ok(true),
        "muted" | "off" | "unknown" | "false" => Ok(false),
        other => Err(format!(
            "expected speaking, silent, muted or off, got {}",
            quote(other)
        )),
    }
}

/// The MQTT `status` payload: `{"status":"busy","statusCode":2,…}`.
pub fn parse_status(payload: &str) -> Result<Presence, String> {
    let json: Value =
        serde_json::from_str(payload).map_err(|e| format!("not JSON ({e}): {}", quote(payload)))?;
    let Value::Object(map) = &json else {
        return Err(format!("not a JSON object: {}", quote(payload)));
    };
    match (map.get("status"), map.get("statusCode")) {
        (Some(Value::String(s)), _) => Ok(Presence::from_name(s)),
        (None, Some(code)) => code
            .as_i64()
            .map(Presence::from_code)
            .ok_or_else(|| format!("statusCode is not a number: {}", quote(&code.to_string()))),
        _ => Err(format!("no \"status\" string: {}", quote(payload))),
    }
}

/// The `GetState` answer: the fields this crate reads (missing or mistyped keys stay `None`;
/// `{"error": …}` and anything but a JSON object are errors).
pub fn parse_state(json: &str) -> Result<AppState, String> {
    if json.len() > MAX_STATE_JSON {
        return Err(format!(
            "GetState answered {} bytes, more than {MAX_STATE_JSON}",
            json.len()
        ));
    }
    let value: Value = serde_json::from_str(json)
        .map_err(|e| format!("GetState: not JSON ({e}): {}", quote(json)))?;
    let Value::Object(map) = &value else {
        return Err(format!("GetState: not a JSON object: {}", quote(json)));
    };
    if let Some(error) = map.get("error") {
        return Err(format!(
            "GetState: the app says {}",
            quote(&error.to_string())
        ));
    }
    let flag = |key: &str| map.get(key).and_then(Value::as_bool);
    let presence = match (
        map.get(names::STATE_PRESENCE).and_then(Value::as_str),
        map.get(names::STATE_PRESENCE_CODE).and_then(Value::as_i64),
    ) {
        (Some(name), Some(code)) => Some(Presence::from_pair(name, code)),
        (Some(name), None) => Some(Presence::from_name(name)),
        (None, Some(code)) => Some(Presence::from_code(code)),
        (None, None) => None,
    };
    Ok(AppState {
        presence,
        in_call: flag(names::STATE_IN_CALL),
        camera: flag(names::STATE_CAMERA),
        microphone: map
            .get(names::STATE_MICROPHONE)
            .and_then(Value::as_str)
            .and_then(|m| parse_microphone(m).ok()),
        screen_sharing: flag(names::STATE_SCREEN_SHARING),
    })
}

// ------------------------------------------------------------------------------ MQTT

/// A payload as the connection hands it over: the bytes, or only the size of one that is
/// larger than anything the app sends (it is never copied).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// The bytes (at most [`MAX_STATUS_PAYLOAD`]).
    Data(Vec<u8>),
    /// Larger than [`MAX_STATUS_PAYLOAD`]: this many bytes.
    TooLarge(usize),
}

impl Payload {
    /// Keeps `bytes` if small enough.
    pub fn capped(bytes: &[u8]) -> Payload {
        if bytes.len() > MAX_STATUS_PAYLOAD {
            Payload::TooLarge(bytes.len())
        } else {
            Payload::Data(bytes.to_vec())
        }
    }
}

/// The topics read, under one prefix.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
}

/// Which of the app's topics a message is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Topic {
    Connected,
    Status,
    InCall,
    Camera,
    Microphone,
    ScreenSharing,
}

impl Topics {
    /// The topics under `prefix` (`teams`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Topics {
            prefix: prefix.into(),
        }
    }

    /// Everything under the prefix: `<prefix>/#` (what the doctor lists).
    pub fn filter(&self) -> String {
        format!("{}/#", self.prefix)
    }

    /// The topics the source reads, one filter each: `<prefix>/connected`, `…/status`,
    /// `…/in-call`, `…/camera`, `…/microphone`, `…/screen-sharing`.
    pub fn read(&self) -> Vec<String> {
        [
            names::TOPIC_CONNECTED,
            names::TOPIC_STATUS,
            names::TOPIC_IN_CALL,
            names::TOPIC_CAMERA,
            names::TOPIC_MICROPHONE,
            names::TOPIC_SCREEN_SHARING,
        ]
        .iter()
        .map(|leaf| self.topic(leaf))
        .collect()
    }

    /// `<prefix>/<leaf>`.
    pub fn topic(&self, leaf: &str) -> String {
        format!("{}/{leaf}", self.prefix)
    }

    fn classify(&self, topic: &str) -> Option<Topic> {
        let leaf = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        Some(match leaf {
            names::TOPIC_CONNECTED => Topic::Connected,
            names::TOPIC_STATUS => Topic::Status,
            names::TOPIC_IN_CALL => Topic::InCall,
            names::TOPIC_CAMERA => Topic::Camera,
            names::TOPIC_MICROPHONE => Topic::Microphone,
            names::TOPIC_SCREEN_SHARING => Topic::ScreenSharing,
            _ => return None,
        })
    }

    /// Whether `topic` is one of the app's topics this crate reads or knows it need not.
    pub fn is_known(&self, topic: &str) -> bool {
        self.classify(topic).is_some()
            || topic
                .strip_prefix(&self.prefix)
                .and_then(|t| t.strip_prefix('/'))
                .is_some_and(|leaf| names::TOPICS_IGNORED.contains(&leaf))
    }
}

/// The app's topics as read from the broker: `connected` and the [`AppState`].
///
/// The retained values outlive the app: they count only while `connected` is `true`. When the
/// app connects again after a `false` seen live (a restart, or the broker's will after a lost
/// connection), the media values of its earlier run are forgotten; the presence is kept, since
/// the app sends it only when it changes. After imstatus's own reconnect, `connected` must come
/// from the broker again, and the other values the broker no longer has (a restart without
/// persistence) are kept from before: the app does not send them again.
#[derive(Clone, Debug)]
pub struct MqttState {
    topics: Topics,
    connected: Option<bool>,
    app: AppState,
}

/// What one message did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handled {
    /// Read (the state may or may not have changed).
    Read,
    /// Not one of the topics read.
    Ignored,
    /// Malformed: the state is unchanged; the detail says why.
    Bad(String),
}

impl MqttState {
    /// Nothing known yet.
    pub fn new(topics: Topics) -> Self {
        MqttState {
            topics,
            connected: None,
            app: AppState::default(),
        }
    }

    /// The topics.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    /// `connected` as last read.
    pub fn connected(&self) -> Option<bool> {
        self.connected
    }

    /// The app's values as last read.
    pub fn app(&self) -> &AppState {
        &self.app
    }

    /// What imstatus shows now.
    pub fn view(&self) -> View {
        self.app.view(self.connected == Some(true))
    }

    /// imstatus lost the broker: `connected` must be read again; the rest is kept.
    pub fn reconnecting(&mut self) {
        self.connected = None;
    }

    /// Takes in one message (`retain`: delivered from the broker's store, not live).
    pub fn handle(&mut self, topic: &str, payload: &Payload, retain: bool) -> Handled {
        let Some(which) = self.topics.classify(topic) else {
            return Handled::Ignored;
        };
        let bytes = match payload {
            Payload::Data(b) => b,
            Payload::TooLarge(n) => {
                return Handled::Bad(format!(
                    "{topic}: {n} bytes, more than {MAX_STATUS_PAYLOAD}; ignored"
                ))
            }
        };
        let limit = if which == Topic::Status {
            MAX_STATUS_PAYLOAD
        } else {
            MAX_VALUE_PAYLOAD
        };
        if bytes.len() > limit {
            return Handled::Bad(format!(
                "{topic}: {} bytes, more than {limit}; ignored",
                bytes.len()
            ));
        }
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Handled::Bad(format!("{topic}: not UTF-8; ignored"));
        };
        // An empty retained message deletes the topic's value.
        let empty = text.trim().is_empty();
        let result = match which {
            Topic::Connected if empty => {
                self.connected = None;
                Ok(())
            }
            Topic::Connected => parse_bool(text).map(|up| {
                if up && !retain && self.connected == Some(false) {
                    self.app.forget_media();
                }
                self.connected = Some(up);
            }),
            Topic::Status if empty => {
                self.app.presence = None;
                Ok(())
            }
            Topic::Status => parse_status(text).map(|p| self.app.presence = Some(p)),
            _ if empty => {
                *self.media(which) = None;
                Ok(())
            }
            Topic::Microphone => parse_microphone(text).map(|m| self.app.microphone = Some(m)),
            _ => parse_bool(text).map(|b| *self.media(which) = Some(b)),
        };
        match result {
            Ok(()) => match &self.app.presence {
                Some(Presence::Other(value)) if which == Topic::Status => Handled::Bad(format!(
                    "{topic}: presence {value:?} is not one imstatus knows; shown as signed in \
                     with availability unknown"
                )),
                _ => Handled::Read,
            },
            Err(why) => Handled::Bad(format!("{topic}: {why}; ignored")),
        }
    }

    fn media(&mut self, which: Topic) -> &mut Option<bool> {
        match which {
            Topic::InCall => &mut self.app.in_call,
            Topic::Camera => &mut self.app.camera,
            Topic::Microphone => &mut self.app.microphone,
            _ => &mut self.app.screen_sharing,
        }
    }
}

// ------------------------------------------------------------------------------ D-Bus

/// One of the app's D-Bus signals, with its arguments read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Signal {
    /// `PresenceChanged(s, i)`.
    Presence(String, i32),
    /// `InCallChanged(b)`.
    InCall(bool),
    /// `CameraChanged(b)`.
    Camera(bool),
    /// `MicrophoneChanged(s)`.
    Microphone(String),
    /// `ScreenSharingChanged(b)`.
    ScreenSharing(bool),
}

impl Signal {
    /// Applies the signal to `app`; `Err` for a value imstatus does not know (the state is
    /// unchanged then, except for a presence, which is kept as [`Presence::Other`]).
    pub fn apply(self, app: &mut AppState) -> Result<(), String> {
        match self {
            Signal::Presence(name, code) => {
                if name.len() > MAX_SIGNAL_STRING {
                    return Err(format!(
                        "{}: a status of {} bytes; ignored",
                        names::SIGNAL_PRESENCE,
                        name.len()
                    ));
                }
                let presence = Presence::from_pair(&name, i64::from(code));
                let other = match &presence {
                    Presence::Other(v) => Some(v.clone()),
                    _ => None,
                };
                app.presence = Some(presence);
                if let Some(value) = other {
                    return Err(format!(
                        "{}: presence {value:?} is not one imstatus knows; shown as signed in \
                         with availability unknown",
                        names::SIGNAL_PRESENCE
                    ));
                }
            }
            Signal::InCall(b) => app.in_call = Some(b),
            Signal::Camera(b) => app.camera = Some(b),
            Signal::ScreenSharing(b) => app.screen_sharing = Some(b),
            Signal::Microphone(state) => {
                if state.len() > MAX_SIGNAL_STRING {
                    return Err(format!(
                        "{}: a state of {} bytes; ignored",
                        names::SIGNAL_MICROPHONE,
                        state.len()
                    ));
                }
                let live = parse_microphone(&state)
                    .map_err(|why| format!("{}: {why}; ignored", names::SIGNAL_MICROPHONE))?;
                app.microphone = Some(live);
            }
        }
        Ok(())
    }
}

// ------------------------------------------------------------------------------ helpers

/// `text` clipped, [sanitised](imstatus_core::text::sanitize) and quoted with escapes (control
/// characters and bidirectional overrides never reach a detail as is).
fn quote(text: &str) -> String {
    format!("{:?}", clip(text, QUOTE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use imstatus_core::ActivitySignal as A;

    fn teams() -> PartId {
        PartId::new(names::PART)
    }

    fn mic_app() -> Vec<App> {
        vec![App::new(names::APP, None)]
    }

    #[test]
    fn every_presence_value_maps_as_documented() {
        let table = [
            ("available", 1, Some(Availability::Available)),
            ("busy", 2, Some(Availability::Busy)),
            ("do_not_disturb", 3, Some(Availability::Busy)),
            ("away", 4, Some(Availability::Away)),
            ("be_right_back", 5, Some(Availability::Away)),
            ("unknown", -1, None),
        ];
        for (name, code, availability) in table {
            let expected = availability.map(Status::new);
            assert_eq!(Presence::from_name(name).status(), expected, "{name}");
            assert_eq!(Presence::from_code(code).status(), expected, "{code}");
            assert_eq!(Presence::from_pair(name, code).status(), expected);
        }
        assert_eq!(names::PRESENCE.len(), table.len());
        // Values imstatus does not know: signed in, availability unknown.
        for p in [
            Presence::from_name("offline"),
            Presence::from_code(6),
            Presence::from_pair("unknown", 7),
        ] {
            assert!(matches!(p, Presence::Other(_)), "{p:?}");
            assert_eq!(p.status(), Some(Status::new(Availability::Unknown)));
        }
    }

    #[test]
    fn status_payloads_are_read_and_bad_ones_say_why() {
        let p = parse_status(
            r#"{"status":"busy","statusCode":2,"timestamp":"2026-12-02T10:00:00.000Z","clientId":"teams-for-linux"}"#,
        );
        assert_eq!(p, Ok(Presence::Busy));
        assert_eq!(parse_status(r#"{"statusCode":4}"#), Ok(Presence::Away));
        for (bad, words) in [
            ("busy", "not JSON"),
            ("[1,2]", "not a JSON object"),
            ("{}", "no \"status\" string"),
            (r#"{"status":2}"#, "no \"status\" string"),
            (r#"{"statusCode":"x"}"#, "statusCode is not a number"),
            ("{\"status\":", "not JSON"),
        ] {
            let e = parse_status(bad).expect_err(bad);
            assert!(e.contains(words), "{bad}: {e}");
        }
        // Deep nesting stops at serde_json's depth limit, not the stack.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_status(&deep).is_err());
    }

    #[test]
    fn get_state_json_is_read_with_every_key_optional() {
        let initial = r#"{"presenceStatus":"unknown","presenceStatusCode":-1,"inCall":false,"incomingCall":false,"incomingCallCaller":null,"cameraEnabled":false,"microphoneState":"unknown","microphoneControlState":"unknown","screenSharing":false,"meetingStarted":false}"#;
        assert_eq!(
            parse_state(initial),
            Ok(AppState {
                presence: Some(Presence::Unknown),
                in_call: Some(false),
                camera: Some(false),
                microphone: Some(false),
                screen_sharing: Some(false),
            })
        );
        let call = r#"{"presenceStatus":"busy","presenceStatusCode":2,"inCall":true,"cameraEnabled":true,"microphoneState":"speaking","screenSharing":true}"#;
        let s = parse_state(call).expect("valid");
        assert_eq!(s.presence, Some(Presence::Busy));
        assert_eq!(s.microphone, Some(true));
        assert_eq!(parse_state("{}"), Ok(AppState::default()));
        let e = parse_state(r#"{"error":"State unavailable"}"#).expect_err("error");
        assert!(e.contains("State unavailable"), "{e}");
        assert!(parse_state("nope").is_err());
        assert!(parse_state("\"x\"").is_err());
        let huge = format!("{{\"x\":\"{}\"}}", "a".repeat(MAX_STATE_JSON));
        assert!(parse_state(&huge).expect_err("huge").contains("more than"));
    }

    #[test]
    fn microphone_states_are_live_only_when_unmuted() {
        for (text, live) in [
            ("speaking", true),
            ("silent", true),
            ("true", true),
            ("muted", false),
            ("off", false),
            ("false", false),
            ("unknown", false),
        ] {
            assert_eq!(parse_microphone(text), Ok(live), "{text}");
        }
        assert!(parse_microphone("loud").is_err());
    }

    fn state() -> MqttState {
        MqttState::new(Topics::new("teams"))
    }

    fn data(s: &str) -> Payload {
        Payload::Data(s.as_bytes().to_vec())
    }

    #[test]
    fn retained_values_count_only_while_connected() {
        let mut m = state();
        assert_eq!(
            m.handle("teams/status", &data(r#"{"status":"away"}"#), true),
            Handled::Read
        );
        m.handle("teams/in-call", &data("true"), true);
        assert_eq!(m.view(), View::default(), "no `connected` yet");
        m.handle("teams/connected", &data("false"), true);
        assert_eq!(m.view(), View::default());
        m.handle("teams/connected", &data("true"), true);
        assert_eq!(
            m.view(),
            View {
                running: true,
                status: Some(Status::new(Availability::Away)),
                in_call: true,
                ..View::default()
            }
        );
    }

    #[test]
    fn a_live_reconnect_after_false_forgets_the_call_but_keeps_the_presence() {
        let mut m = state();
        m.handle("teams/connected", &data("true"), false);
        m.handle("teams/status", &data(r#"{"status":"busy"}"#), false);
        m.handle("teams/in-call", &data("true"), false);
        m.handle("teams/camera", &data("true"), false);
        m.handle("teams/connected", &data("false"), false);
        assert!(!m.view().running);
        m.handle("teams/connected", &data("true"), false);
        assert_eq!(
            m.view(),
            View {
                running: true,
                status: Some(Status::new(Availability::Busy)),
                ..View::default()
            }
        );
        // Our own reconnect keeps everything but `connected`, which the broker must say again.
        m.handle("teams/in-call", &data("true"), false);
        m.reconnecting();
        assert!(!m.view().running);
        m.handle("teams/connected", &data("true"), false);
        assert!(
            m.view().in_call,
            "a live true after our reconnect is no restart"
        );
    }

    #[test]
    fn bad_payloads_change_nothing_and_say_why() {
        let mut m = state();
        m.handle("teams/connected", &data("true"), true);
        m.handle("teams/status", &data(r#"{"status":"busy"}"#), true);
        let before = m.view();
        for (topic, payload, words) in [
            ("teams/status", data("{nope"), "not JSON"),
            ("teams/connected", data("yes"), "expected true or false"),
            ("teams/in-call", data("1"), "expected true or false"),
            ("teams/microphone", data("loud"), "expected speaking"),
            ("teams/camera", data(&"x".repeat(65)), "65 bytes"),
            (
                "teams/status",
                Payload::TooLarge(10_000_000),
                "10000000 bytes",
            ),
            (
                "teams/screen-sharing",
                Payload::Data(vec![0xff, 0xfe]),
                "UTF-8",
            ),
        ] {
            match m.handle(topic, &payload, false) {
                Handled::Bad(why) => assert!(why.contains(words), "{topic}: {why}"),
                other => panic!("{topic}: {other:?}"),
            }
            assert_eq!(m.view(), before, "{topic}");
        }
        assert_eq!(
            m.handle("teams/microphone/control", &data("muted"), false),
            Handled::Ignored
        );
        assert_eq!(
            m.handle("other/status", &data("x"), false),
            Handled::Ignored
        );
        assert_eq!(
            m.handle("teamsx/status", &data("x"), false),
            Handled::Ignored
        );
        // Control characters never reach a detail as is: sanitised, then quoted.
        match m.handle("teams/in-call", &data("\u{1b}[31m"), false) {
            Handled::Bad(why) => assert_eq!(
                why,
                "teams/in-call: expected true or false, got \"\u{fffd}[31m\"; ignored"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unknown_presence_is_signed_in_with_availability_unknown_and_reported() {
        let mut m = state();
        m.handle("teams/connected", &data("true"), false);
        let h = m.handle("teams/status", &data(r#"{"status":"presenting"}"#), false);
        assert!(
            matches!(h, Handled::Bad(ref w) if w.contains("\"presenting\"")),
            "{h:?}"
        );
        assert_eq!(m.view().status, Some(Status::new(Availability::Unknown)));
        // An empty retained payload deletes the value: signed out, still running.
        assert_eq!(m.handle("teams/status", &data(""), false), Handled::Read);
        assert_eq!(
            m.view(),
            View {
                running: true,
                ..View::default()
            }
        );
    }

    #[test]
    fn the_reporter_reports_everything_then_only_differences() {
        let mut r = Reporter::new();
        let off = View::default();
        assert_eq!(
            r.sync(off.clone()),
            vec![
                Observation::ClientVanished,
                Observation::Activity(A::InCall(false)),
                Observation::Activity(A::Camera(vec![])),
                Observation::Activity(A::Microphone(vec![])),
                Observation::Activity(A::ScreenSharing(false)),
                Observation::Synced,
            ]
        );
        assert_eq!(r.update(off.clone()), vec![]);
        let running = View {
            running: true,
            ..View::default()
        };
        assert_eq!(r.update(running.clone()), vec![Observation::ClientAppeared]);
        let busy = View {
            status: Some(Status::new(Availability::Busy)),
            ..running.clone()
        };
        assert_eq!(
            r.update(busy.clone()),
            vec![Observation::presence(
                teams(),
                Status::new(Availability::Busy)
            )]
        );
        let call = View {
            in_call: true,
            microphone: true,
            ..busy.clone()
        };
        assert_eq!(
            r.update(call.clone()),
            vec![
                Observation::Activity(A::InCall(true)),
                Observation::Activity(A::Microphone(mic_app())),
            ]
        );
        assert_eq!(
            r.update(running.clone()),
            vec![
                Observation::Absent(teams(), SignOutReason::Unknown),
                Observation::Activity(A::InCall(false)),
                Observation::Activity(A::Microphone(vec![])),
            ]
        );
        r.update(call);
        assert_eq!(
            r.update(off),
            vec![
                Observation::ClientVanished,
                Observation::Activity(A::InCall(false)),
                Observation::Activity(A::Microphone(vec![])),
            ]
        );
        // Appearing with a presence already known reports it with the client.
        assert_eq!(
            r.update(busy),
            vec![
                Observation::ClientAppeared,
                Observation::presence(teams(), Status::new(Availability::Busy)),
            ]
        );
    }

    #[test]
    fn signals_apply_like_the_topics() {
        let mut app = AppState::default();
        Signal::Presence("do_not_disturb".into(), 3)
            .apply(&mut app)
            .expect("known");
        Signal::InCall(true).apply(&mut app).expect("ok");
        Signal::Microphone("silent".into())
            .apply(&mut app)
            .expect("ok");
        assert_eq!(
            app.view(true),
            View {
                running: true,
                status: Some(Status::new(Availability::Busy)),
                in_call: true,
                microphone: true,
                ..View::default()
            }
        );
        let e = Signal::Microphone("x".repeat(10_000))
            .apply(&mut app)
            .expect_err("huge");
        assert!(e.contains("10000 bytes"), "{e}");
        assert_eq!(app.microphone, Some(true));
        let e = Signal::Presence("unknown".into(), 9)
            .apply(&mut app)
            .expect_err("code 9");
        assert!(e.contains("code 9"), "{e}");
        assert_eq!(
            app.view(true).status,
            Some(Status::new(Availability::Unknown))
        );
        Signal::Presence("unknown".into(), -1)
            .apply(&mut app)
            .expect("the initial value");
        assert_eq!(app.view(true).status, None);
    }

    #[test]
    fn app_text_is_clipped_and_sanitised_before_it_is_kept_or_quoted() {
        // A presence the app might send one day, with a forged line and a bidi override.
        let p = Presence::from_name("busy\nwork  signed out\u{202e}x");
        assert_eq!(
            p,
            Presence::Other("busy work  signed out\u{fffd}x".to_owned())
        );
        let long = "é".repeat(10_000);
        let Presence::Other(kept) = Presence::from_name(&long) else {
            panic!("not Other");
        };
        assert_eq!(kept.chars().count(), QUOTE + 1, "clipped with …");
        assert_eq!(
            quote("a\u{1b}[31mb\u{2066}"),
            format!("{:?}", "a\u{fffd}[31mb\u{fffd}")
        );
    }
}
