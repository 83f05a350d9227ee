//! The Office Communicator `MISTATUS` codes and the mapping from our state to them.
//!
//! As in the SDK, "signed in" is exactly `mistatus & MISTATUS_ONLINE != 0`.

use crate::state::{Availability, Session};

/// `MISTATUS_UNKNOWN`.
pub const MISTATUS_UNKNOWN: u32 = 0x0000;
/// `MISTATUS_OFFLINE`.
pub const MISTATUS_OFFLINE: u32 = 0x0001;
/// `MISTATUS_ONLINE`; the "signed in" bit of every online code.
pub const MISTATUS_ONLINE: u32 = 0x0002;
/// `MISTATUS_INVISIBLE`.
pub const MISTATUS_INVISIBLE: u32 = 0x0006;
/// `MISTATUS_BUSY`.
pub const MISTATUS_BUSY: u32 = 0x000A;
/// `MISTATUS_BE_RIGHT_BACK`.
pub const MISTATUS_BE_RIGHT_BACK: u32 = 0x000E;
/// `MISTATUS_IDLE`.
pub const MISTATUS_IDLE: u32 = 0x0012;
/// `MISTATUS_AWAY`.
pub const MISTATUS_AWAY: u32 = 0x0022;
/// `MISTATUS_ON_THE_PHONE`.
pub const MISTATUS_ON_THE_PHONE: u32 = 0x0032;
/// `MISTATUS_OUT_TO_LUNCH`.
pub const MISTATUS_OUT_TO_LUNCH: u32 = 0x0042;
/// `MISTATUS_IN_A_MEETING`.
pub const MISTATUS_IN_A_MEETING: u32 = 0x0052;
/// `MISTATUS_OUT_OF_OFFICE`.
pub const MISTATUS_OUT_OF_OFFICE: u32 = 0x0062;
/// `MISTATUS_DO_NOT_DISTURB`.
pub const MISTATUS_DO_NOT_DISTURB: u32 = 0x0072;
/// `MISTATUS_IN_A_CONFERENCE`.
pub const MISTATUS_IN_A_CONFERENCE: u32 = 0x0082;
/// `MISTATUS_ALLOW_URGENT_INTERRUPTIONS`.
pub const MISTATUS_ALLOW_URGENT_INTERRUPTIONS: u32 = 0x0092;
/// `MISTATUS_MAY_BE_AVAILABLE`.
pub const MISTATUS_MAY_BE_AVAILABLE: u32 = 0x00A2;
/// `MISTATUS_CUSTOM`.
pub const MISTATUS_CUSTOM: u32 = 0x00B2;
/// `MISTATUS_LOCAL_FINDING_SERVER`.
pub const MISTATUS_LOCAL_FINDING_SERVER: u32 = 0x0100;
/// `MISTATUS_LOCAL_CONNECTING_TO_SERVER`; what `signing_in` maps to.
pub const MISTATUS_LOCAL_CONNECTING_TO_SERVER: u32 = 0x0200;
/// `MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER`.
pub const MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER: u32 = 0x0300;
/// `MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER`; what `signing_out` maps to.
pub const MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER: u32 = 0x0400;

/// Every MISTATUS code with its SDK name, in the SDK's order.
pub const MISTATUS_TABLE: [(&str, u32); 21] = [
    ("MISTATUS_UNKNOWN", MISTATUS_UNKNOWN),
    ("MISTATUS_OFFLINE", MISTATUS_OFFLINE),
    ("MISTATUS_ONLINE", MISTATUS_ONLINE),
    ("MISTATUS_INVISIBLE", MISTATUS_INVISIBLE),
    ("MISTATUS_BUSY", MISTATUS_BUSY),
    ("MISTATUS_BE_RIGHT_BACK", MISTATUS_BE_RIGHT_BACK),
    ("MISTATUS_IDLE", MISTATUS_IDLE),
    ("MISTATUS_AWAY", MISTATUS_AWAY),
    ("MISTATUS_ON_THE_PHONE", MISTATUS_ON_THE_PHONE),
    ("MISTATUS_OUT_TO_LUNCH", MISTATUS_OUT_TO_LUNCH),
    ("MISTATUS_IN_A_MEETING", MISTATUS_IN_A_MEETING),
    ("MISTATUS_OUT_OF_OFFICE", MISTATUS_OUT_OF_OFFICE),
    ("MISTATUS_DO_NOT_DISTURB", MISTATUS_DO_NOT_DISTURB),
    ("MISTATUS_IN_A_CONFERENCE", MISTATUS_IN_A_CONFERENCE),
    (
        "MISTATUS_ALLOW_URGENT_INTERRUPTIONS",
        MISTATUS_ALLOW_URGENT_INTERRUPTIONS,
    ),
    ("MISTATUS_MAY_BE_AVAILABLE", MISTATUS_MAY_BE_AVAILABLE),
    ("MISTATUS_CUSTOM", MISTATUS_CUSTOM),
    (
        "MISTATUS_LOCAL_FINDING_SERVER",
        MISTATUS_LOCAL_FINDING_SERVER,
    ),
    (
        "MISTATUS_LOCAL_CONNECTING_TO_SERVER",
        MISTATUS_LOCAL_CONNECTING_TO_SERVER,
    ),
    (
        "MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER",
        MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER,
    ),
    (
        "MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER",
        MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER,
    ),
];

/// The MISTATUS code of an availability while signed in (design §1 table).
pub fn availability_mistatus(availability: Availability) -> u32 {
    match availability {
        Availability::Offline => MISTATUS_OFFLINE,
        Availability::Available | Availability::Chatty => MISTATUS_ONLINE,
        Availability::Invisible => MISTATUS_INVISIBLE,
        Availability::Busy => MISTATUS_BUSY,
        Availability::Away | Availability::ExtendedAway => MISTATUS_AWAY,
        Availability::Unknown => MISTATUS_UNKNOWN,
    }
}

/// The MISTATUS code for a session and availability.
///
/// Signed in gives the availability's code (an unknown availability while signed in is
/// `MISTATUS_ONLINE`, so that the "signed in" bit holds); signed out is `MISTATUS_OFFLINE`;
/// `signing_in`/`signing_out` are `MISTATUS_LOCAL_CONNECTING_TO_SERVER` /
/// `MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER`; an unknown session is `MISTATUS_UNKNOWN`.
pub fn mistatus(session: Session, availability: Availability) -> u32 {
    match session {
        Session::SignedIn => match availability {
            Availability::Offline | Availability::Unknown => MISTATUS_ONLINE,
            a => availability_mistatus(a),
        },
        Session::SignedOut => MISTATUS_OFFLINE,
        Session::SigningIn => MISTATUS_LOCAL_CONNECTING_TO_SERVER,
        Session::SigningOut => MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER,
        Session::Unknown => MISTATUS_UNKNOWN,
    }
}

/// The SDK's rule: a MISTATUS code means "signed in" exactly when it has the online bit.
pub fn is_signed_in(mistatus: u32) -> bool {
    mistatus & MISTATUS_ONLINE != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Session;

    const SESSIONS: [Session; 5] = [
        Session::SignedOut,
        Session::SigningIn,
        Session::SignedIn,
        Session::SigningOut,
        Session::Unknown,
    ];

    #[test]
    fn design_table_codes() {
        let expected = [
            (Availability::Offline, 0x001),
            (Availability::Available, 0x002),
            (Availability::Chatty, 0x002),
            (Availability::Invisible, 0x006),
            (Availability::Busy, 0x00A),
            (Availability::Away, 0x022),
            (Availability::ExtendedAway, 0x022),
            (Availability::Unknown, 0x000),
        ];
        for (a, code) in expected {
            assert_eq!(availability_mistatus(a), code, "{a}");
        }
    }

    #[test]
    fn transitional_sessions_use_the_local_codes() {
        assert_eq!(mistatus(Session::SigningIn, Availability::Away), 0x200);
        assert_eq!(mistatus(Session::SigningOut, Availability::Away), 0x400);
        assert_eq!(mistatus(Session::SignedOut, Availability::Away), 0x001);
        assert_eq!(mistatus(Session::Unknown, Availability::Away), 0x000);
    }

    #[test]
    fn signed_in_exactly_when_the_online_bit_is_set() {
        for s in SESSIONS {
            for a in Availability::ALL {
                assert_eq!(
                    is_signed_in(mistatus(s, a)),
                    s == Session::SignedIn,
                    "{s} {a}"
                );
            }
        }
    }

    #[test]
    fn every_online_code_in_the_table_has_the_online_bit() {
        for (name, code) in MISTATUS_TABLE {
            let online = (0x2..0x100).contains(&code);
            assert_eq!(is_signed_in(code), online, "{name}");
        }
    }
}
