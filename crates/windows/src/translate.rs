//! Pure translation: MISTATUS codes, `ClientState`s and HRESULTs into the core's vocabulary.

use imstatus_core::mistatus as ms;
use imstatus_core::{Availability, ErrorCode, Status};

use crate::ids::{client_state, hr};

/// What one MISTATUS code says about the session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MyStatus {
    /// Signed in (the `0x2` bit, as in the SDK) with this status.
    SignedIn(Status),
    /// `MISTATUS_LOCAL_FINDING_SERVER`/`CONNECTING`/`SYNCHRONIZING`: signing in.
    SigningIn,
    /// `MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER`: signing out.
    SigningOut,
    /// `MISTATUS_OFFLINE`, `MISTATUS_UNKNOWN` or anything else without the `0x2` bit.
    SignedOut,
}

/// The availability of an online MISTATUS code (the design's table, extended to the SDK's
/// other online codes: "be right back", "idle", "out to lunch" are away; "on the phone",
/// "in a meeting", "in a conference", "do not disturb", "urgent interruptions only" are busy;
/// "out of office" is extended away).
pub fn availability(mistatus: u32) -> Availability {
    match mistatus {
        ms::MISTATUS_INVISIBLE => Availability::Invisible,
        ms::MISTATUS_BUSY
        | ms::MISTATUS_ON_THE_PHONE
        | ms::MISTATUS_IN_A_MEETING
        | ms::MISTATUS_DO_NOT_DISTURB
        | ms::MISTATUS_IN_A_CONFERENCE
        | ms::MISTATUS_ALLOW_URGENT_INTERRUPTIONS => Availability::Busy,
        ms::MISTATUS_AWAY
        | ms::MISTATUS_BE_RIGHT_BACK
        | ms::MISTATUS_IDLE
        | ms::MISTATUS_OUT_TO_LUNCH => Availability::Away,
        ms::MISTATUS_OUT_OF_OFFICE => Availability::ExtendedAway,
        _ => Availability::Available,
    }
}

/// Reads `IMessenger.MyStatus` (or `OnMyStatusChange`'s `mMyStatus`).
pub fn my_status(mistatus: u32) -> MyStatus {
    match mistatus {
        ms::MISTATUS_LOCAL_FINDING_SERVER
        | ms::MISTATUS_LOCAL_CONNECTING_TO_SERVER
        | ms::MISTATUS_LOCAL_SYNCHRONIZING_WITH_SERVER => MyStatus::SigningIn,
        ms::MISTATUS_LOCAL_DISCONNECTING_FROM_SERVER => MyStatus::SigningOut,
        s if ms::is_signed_in(s) => MyStatus::SignedIn(Status::new(availability(s))),
        _ => MyStatus::SignedOut,
    }
}

/// A contact's status from `IMessengerContact.Status` / `OnContactStatusChange`.
pub fn contact_status(mistatus: u32) -> Status {
    match my_status(mistatus) {
        MyStatus::SignedIn(status) => status,
        MyStatus::SignedOut => Status::OFFLINE,
        MyStatus::SigningIn | MyStatus::SigningOut => Status::UNKNOWN,
    }
}

/// Reads `ILyncClient.State` (the `IUCOfficeIntegration` path). Lync's state carries no
/// availability, so a signed-in client reads as `available`.
pub fn client_state(state: i32) -> MyStatus {
    match state {
        client_state::SIGNED_IN => MyStatus::SignedIn(Status::new(Availability::Available)),
        client_state::SIGNING_IN => MyStatus::SigningIn,
        client_state::SIGNING_OUT | client_state::SHUTTING_DOWN => MyStatus::SigningOut,
        client_state::SIGNED_OUT => MyStatus::SignedOut,
        _ => MyStatus::SignedOut,
    }
}

/// How a failed COM call is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The client is not running (no class object): `client_not_running`.
    NotRunning,
    /// The client's process went away under us (RPC failure): the client exited.
    ServerDied,
    /// The user is not signed in (`MSGR_E_NOT_LOGGED_ON`).
    NotSignedIn,
    /// Anything else, with the design's code.
    Other(ErrorCode),
}

/// Classifies an HRESULT of `CoCreateInstance` or of a call on the client's object.
pub fn classify(hresult: u32) -> Failure {
    match hresult {
        hr::CLASS_E_CLASSNOTAVAILABLE | hr::REGDB_E_CLASSNOTREG | hr::CO_E_SERVER_STOPPING => {
            Failure::NotRunning
        }
        hr::RPC_E_SERVER_DIED
        | hr::RPC_E_SERVER_DIED_DNE
        | hr::RPC_E_DISCONNECTED
        | hr::RPC_S_SERVER_UNAVAILABLE
        | hr::RPC_S_CALL_FAILED
        | hr::RPC_S_CALL_FAILED_DNE
        | hr::CO_E_OBJNOTCONNECTED => Failure::ServerDied,
        hr::MSGR_E_NOT_LOGGED_ON => Failure::NotSignedIn,
        hr::E_ACCESSDENIED | hr::CO_E_SERVER_EXEC_FAILURE => {
            Failure::Other(ErrorCode::AccessDenied)
        }
        other => Failure::Other(sign_in_error(other)),
    }
}

/// The design's code for an `OnSignin(hr)` failure or another client error: the Messenger
/// `MSGR_E_*` codes the design's table names map to themselves (the table keeps the SDK's
/// HRESULTs); the rest is a `protocol_error` with the HRESULT in the detail.
pub fn sign_in_error(hresult: u32) -> ErrorCode {
    if hresult == 0x8100_0301 {
        // MSGR_E_CONNECT.
        return ErrorCode::ServerUnreachable;
    }
    ErrorCode::ALL
        .into_iter()
        .find(|c| c.hresult() == hresult)
        .unwrap_or(ErrorCode::ProtocolError)
}

/// The SDK name of the HRESULTs the source meets, for details and `doctor`.
pub fn hresult_name(hresult: u32) -> Option<&'static str> {
    Some(match hresult {
        hr::CLASS_E_CLASSNOTAVAILABLE => "CLASS_E_CLASSNOTAVAILABLE",
        hr::REGDB_E_CLASSNOTREG => "REGDB_E_CLASSNOTREG",
        hr::CO_E_SERVER_STOPPING => "CO_E_SERVER_STOPPING",
        hr::CO_E_SERVER_EXEC_FAILURE => "CO_E_SERVER_EXEC_FAILURE",
        hr::E_ACCESSDENIED => "E_ACCESSDENIED",
        hr::RPC_E_SERVER_DIED => "RPC_E_SERVER_DIED",
        hr::RPC_E_SERVER_DIED_DNE => "RPC_E_SERVER_DIED_DNE",
        hr::RPC_E_DISCONNECTED => "RPC_E_DISCONNECTED",
        hr::RPC_S_SERVER_UNAVAILABLE => "RPC_S_SERVER_UNAVAILABLE",
        hr::RPC_S_CALL_FAILED => "RPC_S_CALL_FAILED",
        hr::RPC_S_CALL_FAILED_DNE => "RPC_S_CALL_FAILED_DNE",
        hr::CO_E_OBJNOTCONNECTED => "CO_E_OBJNOTCONNECTED",
        hr::MSGR_E_NOT_LOGGED_ON => "MSGR_E_NOT_LOGGED_ON",
        hr::DISP_E_EXCEPTION => "DISP_E_EXCEPTION",
        _ => return None,
    })
}

/// `0x80040111 (CLASS_E_CLASSNOTAVAILABLE)`.
pub fn describe_hresult(hresult: u32) -> String {
    match hresult_name(hresult) {
        Some(name) => format!("0x{hresult:08X} ({name})"),
        None => format!("0x{hresult:08X}"),
    }
}

/// The one-line hint for a COM failure, more precise than the code's generic hint.
pub fn hint(hresult: u32) -> &'static str {
    match classify(hresult) {
        Failure::NotRunning => {
            "start the IM client (Communicator, Lync, Skype for Business), or set `app` in the config to the client that runs"
        }
        Failure::ServerDied => "the IM client exited; start it again",
        Failure::NotSignedIn => "sign in to the IM client first",
        Failure::Other(ErrorCode::AccessDenied) => {
            "run imstatus at the same integrity level as the client (both elevated or both not)"
        }
        Failure::Other(code) => code.hint(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_online_bit_decides_signed_in() {
        for (name, code) in ms::MISTATUS_TABLE {
            let signed_in = matches!(my_status(code), MyStatus::SignedIn(_));
            let transitional = code >= 0x100;
            assert_eq!(signed_in, ms::is_signed_in(code) && !transitional, "{name}");
        }
    }

    #[test]
    fn design_table_round_trips() {
        for a in Availability::ALL {
            let code = ms::availability_mistatus(a);
            if ms::is_signed_in(code) {
                let back = availability(code);
                assert_eq!(ms::availability_mistatus(back), code, "{a}");
            }
        }
        assert_eq!(my_status(0x1), MyStatus::SignedOut);
        assert_eq!(my_status(0x0), MyStatus::SignedOut);
        assert_eq!(my_status(0x200), MyStatus::SigningIn);
        assert_eq!(my_status(0x400), MyStatus::SigningOut);
        assert_eq!(
            my_status(0x22),
            MyStatus::SignedIn(Status::new(Availability::Away))
        );
        assert_eq!(
            my_status(0x72),
            MyStatus::SignedIn(Status::new(Availability::Busy))
        );
    }

    #[test]
    fn hresults_get_the_design_codes() {
        assert_eq!(classify(0x8004_0111), Failure::NotRunning);
        assert_eq!(classify(0x8004_0154), Failure::NotRunning);
        assert_eq!(classify(0x8007_06BA), Failure::ServerDied);
        assert_eq!(classify(0x8001_0108), Failure::ServerDied);
        assert_eq!(classify(0x8100_031E), Failure::NotSignedIn);
        assert_eq!(
            classify(0x8008_0005),
            Failure::Other(ErrorCode::AccessDenied)
        );
        assert_eq!(
            classify(0x8007_0005),
            Failure::Other(ErrorCode::AccessDenied)
        );
        assert!(hint(0x8008_0005).contains("same integrity level"));
        assert_eq!(sign_in_error(0x8100_0303), ErrorCode::AuthFailed);
        assert_eq!(sign_in_error(0x8100_0301), ErrorCode::ServerUnreachable);
        assert_eq!(sign_in_error(0x8100_0361), ErrorCode::TlsFailed);
        assert_eq!(sign_in_error(0x8123_4567), ErrorCode::ProtocolError);
        assert_eq!(
            describe_hresult(0x8004_0111),
            "0x80040111 (CLASS_E_CLASSNOTAVAILABLE)"
        );
    }
}
