//! Every name teams-for-linux defines that this crate relies on, in one place: MQTT topic
//! leaves and payloads (released, v2.6.12 – v2.17.1), the D-Bus control API (on an unmerged
//! branch only: provisional until a release ships `app/dbus/controlService.js`; adjust here
//! when it does), and the presence values shared by both.

/// How imstatus names the app in `microphone_apps` / `camera_apps` and in messages.
pub const APP: &str = "Teams for Linux";

/// The part (resource) of the account that carries the presence.
pub const PART: &str = "teams-for-linux";

/// The app's default MQTT `clientId`: imstatus never connects with it (the broker would drop
/// the app and publish its last will).
pub const APP_CLIENT_ID: &str = "teams-for-linux";

/// MQTT: the default `mqtt.topicPrefix`.
pub const DEFAULT_TOPIC_PREFIX: &str = "teams";
/// MQTT: `true` on every connect, `false` on quit and as the last will (retained).
pub const TOPIC_CONNECTED: &str = "connected";
/// MQTT: the presence JSON (`mqtt.statusTopic`, retained).
pub const TOPIC_STATUS: &str = "status";
/// MQTT: `true`/`false` (`mqtt.mediaTopics.inCall`, retained).
pub const TOPIC_IN_CALL: &str = "in-call";
/// MQTT: `true`/`false` (`mqtt.mediaTopics.camera`, retained).
pub const TOPIC_CAMERA: &str = "camera";
/// MQTT: `speaking`, `silent`, `muted`, `off` (`true`/`false` before v2.11.0; retained).
pub const TOPIC_MICROPHONE: &str = "microphone";
/// MQTT: `true`/`false` (`mqtt.mediaTopics.screenSharing`, retained).
pub const TOPIC_SCREEN_SHARING: &str = "screen-sharing";
/// MQTT: the app's other topics: known, deliberately not read.
pub const TOPICS_IGNORED: &[&str] = &[
    "microphone/control",
    "incoming-call",
    "meeting-started",
    "calendar",
];

/// D-Bus: the bus name (the app uses `$FLATPAK_ID` instead when set; Flathub's id is this
/// same name).
pub const DBUS_NAME: &str = "com.github.IsmaelMartinez.teams_for_linux";
/// D-Bus: the object path.
pub const DBUS_PATH: &str = "/com/github/IsmaelMartinez/teams_for_linux";
/// D-Bus: the interface.
pub const DBUS_INTERFACE: &str = "com.github.IsmaelMartinez.teams_for_linux.Control";
/// D-Bus: the whole state as JSON, `() → s`.
pub const METHOD_GET_STATE: &str = "GetState";
/// D-Bus: `PresenceChanged(s status, i statusCode)`.
pub const SIGNAL_PRESENCE: &str = "PresenceChanged";
/// D-Bus: `InCallChanged(b inCall)`.
pub const SIGNAL_IN_CALL: &str = "InCallChanged";
/// D-Bus: `CameraChanged(b enabled)`.
pub const SIGNAL_CAMERA: &str = "CameraChanged";
/// D-Bus: `MicrophoneChanged(s state)`.
pub const SIGNAL_MICROPHONE: &str = "MicrophoneChanged";
/// D-Bus: `ScreenSharingChanged(b sharing)`.
pub const SIGNAL_SCREEN_SHARING: &str = "ScreenSharingChanged";
/// D-Bus: the app's other signals: known, deliberately not read (`StateChanged` repeats the
/// typed signals as one JSON snapshot).
pub const SIGNALS_IGNORED: &[&str] = &[
    "StateChanged",
    "IncomingCallChanged",
    "IncomingCallCallerChanged",
    "MicrophoneControlChanged",
    "MeetingStartedChanged",
];
/// `GetState` keys read (the others are ignored).
pub const STATE_PRESENCE: &str = "presenceStatus";
/// `GetState`: the presence code.
pub const STATE_PRESENCE_CODE: &str = "presenceStatusCode";
/// `GetState`: in a call.
pub const STATE_IN_CALL: &str = "inCall";
/// `GetState`: the camera.
pub const STATE_CAMERA: &str = "cameraEnabled";
/// `GetState`: the microphone (the `MicrophoneChanged` vocabulary).
pub const STATE_MICROPHONE: &str = "microphoneState";
/// `GetState`: screen sharing.
pub const STATE_SCREEN_SHARING: &str = "screenSharing";

/// The presence values: (string, code), as in the app's `statusMap` / `PRESENCE`.
pub const PRESENCE: &[(&str, i32)] = &[
    ("unknown", -1),
    ("available", 1),
    ("busy", 2),
    ("do_not_disturb", 3),
    ("away", 4),
    ("be_right_back", 5),
];

/// The bus daemon's own name: the only sender whose `NameOwnerChanged` counts.
pub const BUS_DAEMON: &str = "org.freedesktop.DBus";
