//! The three axes of an account's state: client, session and status.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Is the IM client running? Like the SDK's `UpAndRunning` (0/1/2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Client {
    /// The client is not running (`UpAndRunning` = 0).
    NotRunning,
    /// The client is starting (`UpAndRunning` = 1).
    Starting,
    /// The client is running (`UpAndRunning` = 2).
    Running,
    /// The source cannot see the client (a remote XMPP account) or has not looked yet.
    Unknown,
}

/// Is the user signed in? Transitional states match `MISTATUS_LOCAL_*`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Session {
    /// Not signed in.
    SignedOut,
    /// Signing in.
    SigningIn,
    /// Signed in.
    SignedIn,
    /// Signing out.
    SigningOut,
    /// Not known: the source itself is down or has not synchronised yet.
    Unknown,
}

/// The user's availability, as in the design's table (XMPP `<show/>`, libpurple primitives).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Availability {
    /// Offline (signed out).
    Offline,
    /// Available.
    Available,
    /// Available and keen to chat (XMPP `chat`).
    Chatty,
    /// Signed in but invisible to others.
    Invisible,
    /// Busy / do not disturb (XMPP `dnd`, libpurple UNAVAILABLE).
    Busy,
    /// Away.
    Away,
    /// Extended away (XMPP `xa`).
    ExtendedAway,
    /// Not known.
    Unknown,
}

impl Availability {
    /// Every availability, in declaration order (the complete list, e.g. for Home Assistant).
    pub const ALL: [Availability; 8] = [
        Availability::Offline,
        Availability::Available,
        Availability::Chatty,
        Availability::Invisible,
        Availability::Busy,
        Availability::Away,
        Availability::ExtendedAway,
        Availability::Unknown,
    ];

    /// The snake_case name used in JSON, the CLI and MQTT.
    pub fn as_str(self) -> &'static str {
        match self {
            Availability::Offline => "offline",
            Availability::Available => "available",
            Availability::Chatty => "chatty",
            Availability::Invisible => "invisible",
            Availability::Busy => "busy",
            Availability::Away => "away",
            Availability::ExtendedAway => "extended_away",
            Availability::Unknown => "unknown",
        }
    }

    /// How reachable the user is; higher wins when resources of equal priority are aggregated.
    pub fn rank(self) -> u8 {
        match self {
            Availability::Chatty => 7,
            Availability::Available => 6,
            Availability::Away => 5,
            Availability::ExtendedAway => 4,
            Availability::Busy => 3,
            Availability::Invisible => 2,
            Availability::Unknown => 1,
            Availability::Offline => 0,
        }
    }

    /// The XMPP `<show/>` value (`None` = no `<show/>`, plain available) for a signed-in
    /// availability; `None` also for values XMPP has no presence for.
    pub fn xmpp_show(self) -> Option<&'static str> {
        match self {
            Availability::Chatty => Some("chat"),
            Availability::Busy => Some("dnd"),
            Availability::Away => Some("away"),
            Availability::ExtendedAway => Some("xa"),
            _ => None,
        }
    }

    /// The availability an XMPP `<show/>` value means (`None` = no `<show/>`); `None` for an
    /// unknown value.
    pub fn from_xmpp_show(show: Option<&str>) -> Option<Availability> {
        Some(match show {
            None => Availability::Available,
            Some("chat") => Availability::Chatty,
            Some("dnd") => Availability::Busy,
            Some("away") => Availability::Away,
            Some("xa") => Availability::ExtendedAway,
            Some(_) => return None,
        })
    }

    /// The libpurple status primitive (`PurpleStatusPrimitive`) for this availability.
    pub fn purple_primitive(self) -> Option<i32> {
        match self {
            Availability::Offline => Some(1),
            Availability::Available | Availability::Chatty => Some(2),
            Availability::Busy => Some(3),
            Availability::Invisible => Some(4),
            Availability::Away => Some(5),
            Availability::ExtendedAway => Some(6),
            Availability::Unknown => None,
        }
    }

    /// The availability of a libpurple status primitive; unset, mobile, tune, mood and
    /// out-of-range values are `Unknown`.
    pub fn from_purple_primitive(primitive: i32) -> Availability {
        match primitive {
            1 => Availability::Offline,
            2 => Availability::Available,
            3 => Availability::Busy,
            4 => Availability::Invisible,
            5 => Availability::Away,
            6 => Availability::ExtendedAway,
            _ => Availability::Unknown,
        }
    }
}

impl fmt::Display for Availability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An availability name that is not one of [`Availability::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown availability `{0}` (expected one of: offline, available, chatty, invisible, busy, away, extended_away, unknown)")]
pub struct UnknownAvailability(pub String);

impl FromStr for Availability {
    type Err = UnknownAvailability;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Availability::ALL
            .into_iter()
            .find(|a| a.as_str() == norm)
            .ok_or_else(|| UnknownAvailability(s.to_owned()))
    }
}

/// An availability with an optional message ("lunch").
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Status {
    /// The availability.
    pub availability: Availability,
    /// The status message, if any.
    pub message: Option<String>,
}

impl Status {
    /// A status without a message.
    pub const fn new(availability: Availability) -> Self {
        Self {
            availability,
            message: None,
        }
    }

    /// A status with a message (an empty message counts as none).
    pub fn with_message(availability: Availability, message: impl Into<String>) -> Self {
        let message = message.into();
        Self {
            availability,
            message: (!message.is_empty()).then_some(message),
        }
    }

    /// The offline status.
    pub const OFFLINE: Status = Status::new(Availability::Offline);

    /// The unknown status.
    pub const UNKNOWN: Status = Status::new(Availability::Unknown);
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Client::NotRunning => "not_running",
            Client::Starting => "starting",
            Client::Running => "running",
            Client::Unknown => "unknown",
        })
    }
}

impl fmt::Display for Session {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Session::SignedOut => "signed_out",
            Session::SigningIn => "signing_in",
            Session::SignedIn => "signed_in",
            Session::SigningOut => "signing_out",
            Session::Unknown => "unknown",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xmpp_show_round_trips_for_every_signed_in_availability() {
        for a in [
            Availability::Available,
            Availability::Chatty,
            Availability::Busy,
            Availability::Away,
            Availability::ExtendedAway,
        ] {
            assert_eq!(Availability::from_xmpp_show(a.xmpp_show()), Some(a));
        }
        assert_eq!(Availability::from_xmpp_show(Some("sleeping")), None);
    }

    #[test]
    fn purple_primitives_match_the_design_table() {
        let table = [
            (1, Availability::Offline),
            (2, Availability::Available),
            (3, Availability::Busy),
            (4, Availability::Invisible),
            (5, Availability::Away),
            (6, Availability::ExtendedAway),
        ];
        for (p, a) in table {
            assert_eq!(Availability::from_purple_primitive(p), a);
            assert_eq!(a.purple_primitive(), Some(p));
        }
        assert_eq!(Availability::Chatty.purple_primitive(), Some(2));
        for p in [0, 7, 8, 9, 10, -1, i32::MAX] {
            assert_eq!(
                Availability::from_purple_primitive(p),
                Availability::Unknown
            );
        }
    }

    #[test]
    fn availability_names_parse_back() {
        for a in Availability::ALL {
            assert_eq!(a.as_str().parse::<Availability>(), Ok(a));
            let json = format!("\"{}\"", a.as_str());
            assert_eq!(serde_json::to_string(&a).expect("serialise"), json);
        }
        assert_eq!(
            "Extended-Away".parse::<Availability>(),
            Ok(Availability::ExtendedAway)
        );
        assert!("asleep".parse::<Availability>().is_err());
    }

    #[test]
    fn empty_message_counts_as_none() {
        assert_eq!(Status::with_message(Availability::Away, "").message, None);
    }
}
