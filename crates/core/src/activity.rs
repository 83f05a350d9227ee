//! The activity axis: is the user on a call (microphone, camera), idle, or behind a locked
//! screen?
//!
//! Only sources that can see the local desktop (the `desktop` source) or a call client's own
//! view of its call (the `teams-for-linux` source) report it; for every other account a
//! snapshot has no `activity` at all. Sources report each signal on its own
//! ([`ActivitySignal`]), so that the microphone watcher never needs to know what the idle
//! watcher last said; the tracker merges them into one [`Activity`] and emits
//! `activity_changed` when anything but the idle *reading* changed.
//!
//! The idle time is a reading, not state: `idle_s` grows every second, so it is never news on
//! its own. The tracker keeps the instant of the last input it was told about and fills
//! `idle_s` in when a snapshot is taken; `activity_changed` carries it as of the change. What
//! is news is the boolean `idle`, which the source sets when the idle time crosses its
//! `idle_after` threshold (either way).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// An application using the microphone or the camera, as the sound server or `/proc` names
/// it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct App {
    /// Its name (`application.name` of the stream, or the process's `comm`).
    pub name: String,
    /// Its process ID, when known.
    pub pid: Option<u32>,
}

impl App {
    /// An application with a name and maybe a PID.
    pub fn new(name: impl Into<String>, pid: Option<u32>) -> Self {
        App {
            name: name.into(),
            pid,
        }
    }
}

/// What the desktop says about the user: on a call, idle, locked.
///
/// `in_call` is `microphone || camera`, or a call client says it is in a call.
/// `screen_sharing` only comes from a call client. `idle_s` is the idle time in whole seconds as of the
/// snapshot (or of the change, in `activity_changed`), `null` when no idle backend answers; a
/// signal that is not enabled, or whose backend does not answer, reads `false`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// An application captures from a microphone (not a monitor source, not corked).
    pub microphone: bool,
    /// A process holds a camera device open.
    pub camera: bool,
    /// `microphone || camera`, or a call client says the user is in a call
    /// ([`ActivitySignal::InCall`]).
    pub in_call: bool,
    /// A call client says the user shares their screen ([`ActivitySignal::ScreenSharing`]).
    #[serde(default)]
    pub screen_sharing: bool,
    /// Seconds since the last input, when an idle backend answers.
    pub idle_s: Option<u64>,
    /// The idle time has reached the account's `idle_after`.
    pub idle: bool,
    /// The screen is locked.
    pub locked: bool,
    /// The applications capturing from a microphone, sorted.
    #[serde(default)]
    pub microphone_apps: Vec<App>,
    /// The processes holding a camera open, sorted.
    #[serde(default)]
    pub camera_apps: Vec<App>,
}

impl Activity {
    /// Whether `other` differs in anything that is news: every field except the value of the
    /// `idle_s` reading (its presence counts: an idle backend appearing or going away is news).
    pub fn differs_from(&self, other: &Activity) -> bool {
        self.microphone != other.microphone
            || self.camera != other.camera
            || self.in_call != other.in_call
            || self.screen_sharing != other.screen_sharing
            || self.idle_s.is_some() != other.idle_s.is_some()
            || self.idle != other.idle
            || self.locked != other.locked
            || self.microphone_apps != other.microphone_apps
            || self.camera_apps != other.camera_apps
    }
}

/// One desktop signal as a source saw it (see [`Observation::Activity`](crate::Observation)).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ActivitySignal {
    /// The applications capturing from a microphone now (empty: the microphone is not in use).
    Microphone(Vec<App>),
    /// The processes holding a camera open now (empty: no camera in use).
    Camera(Vec<App>),
    /// The idle state: `idle` once the idle time reached the source's threshold; `input_ago`
    /// is the idle time read just now (`None`: no idle backend answers).
    Idle {
        /// The idle time has reached the threshold.
        idle: bool,
        /// The idle time as read now.
        input_ago: Option<Duration>,
    },
    /// The screen is locked (`false` also when no lock backend answers).
    Locked(bool),
    /// A call client says whether the user is in a call (`in_call` is then true even with the
    /// microphone muted and the camera off).
    InCall(bool),
    /// A call client says whether the user shares their screen.
    ScreenSharing(bool),
}

/// Sorts and deduplicates a list of applications (two streams of one application count once).
pub(crate) fn normalise(mut apps: Vec<App>) -> Vec<App> {
    apps.sort();
    apps.dedup();
    apps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_presence_of_the_idle_reading_is_news() {
        let a = Activity {
            idle_s: Some(3),
            ..Activity::default()
        };
        let b = Activity {
            idle_s: Some(250),
            ..Activity::default()
        };
        assert!(!a.differs_from(&b));
        assert!(a.differs_from(&Activity::default()));
        let locked = Activity {
            locked: true,
            ..a.clone()
        };
        assert!(a.differs_from(&locked));
    }

    #[test]
    fn serialises_to_the_documented_json() {
        let a = Activity {
            microphone: true,
            in_call: true,
            idle_s: Some(12),
            microphone_apps: vec![App::new("parecord", Some(4242))],
            ..Activity::default()
        };
        assert_eq!(
            serde_json::to_value(&a).expect("serialise"),
            serde_json::json!({"microphone": true, "camera": false, "in_call": true,
                "screen_sharing": false, "idle_s": 12, "idle": false, "locked": false,
                "microphone_apps": [{"name": "parecord", "pid": 4242}], "camera_apps": []})
        );
    }

    #[test]
    fn apps_are_sorted_and_counted_once() {
        let apps = normalise(vec![
            App::new("b", Some(2)),
            App::new("a", None),
            App::new("b", Some(2)),
        ]);
        assert_eq!(apps, vec![App::new("a", None), App::new("b", Some(2))]);
    }
}
