//! The GUIDs, DISPIDs and HRESULTs of the client APIs, each with where it came from.
//!
//! Everything is called through `IDispatch` (late binding): the Messenger API and the Office
//! integration API are dual interfaces, so their `IDispatch` side works across processes with
//! the proxy/stub that `oleaut32` always registers, and imstatus needs neither the client's type
//! library nor a proxy DLL of its own.

use windows_core::GUID;

/// `CLSID_Messenger` of Office Communicator 2007/R2 (`msgrua.h` of the Communicator SDK; the
/// same class id is used in the `classid="clsid:8885370D-…"` `<object>` tags of the SDK's
/// web samples). Used when `HKLM\Software\IM Providers\<app>\GUID` names no class.
pub const CLSID_MESSENGER: GUID = GUID::from_u128(0x8885370d_b33e_44b7_875d_28e403cf9270);

/// `IID_IMessenger` (`msgrua.h`, Communicator SDK: `MIDL_INTERFACE("D50C3186-0F89-48f8-B204-
/// 3604629DEE10") IMessenger : public IDispatch`). Documentation only: the calls go through
/// `IDispatch`.
pub const IID_IMESSENGER: GUID = GUID::from_u128(0xd50c3186_0f89_48f8_b204_3604629dee10);

/// `DIID_DMessengerEvents` (`msgrua.h`, Communicator SDK: `MIDL_INTERFACE("C9A6A6B6-9BC1-43a5-
/// B06B-E58874EEBC96") DMessengerEvents : public IDispatch`), the connection point of the
/// Messenger object.
pub const DIID_DMESSENGER_EVENTS: GUID = GUID::from_u128(0xc9a6a6b6_9bc1_43a5_b06b_e58874eebc96);

/// `IID_IUCOfficeIntegration` (the `UCCollaborationLib` type library of Lync 2010/2013 and
/// Skype for Business, as imported into a `.tlh`: `struct __declspec(uuid("6a222195-f65e-467f-
/// 8f77-eb180bd85288")) IUCOfficeIntegration`). Offered by the class registered under
/// `HKLM\Software\IM Providers\<app>\GUID` of Office-integrated clients.
pub const IID_IUCOFFICE_INTEGRATION: GUID = GUID::from_u128(0x6a222195_f65e_467f_8f77_eb180bd85288);

/// `IID_ILyncClient` (same type library: `struct __declspec(uuid("c413a27f-601e-4261-b9e3-
/// 0eb966f4e7d1")) ILyncClient`). Documentation only: reached through
/// `IUCOfficeIntegration::GetInterface(version, oiInterfaceILyncClient)` as an `IDispatch`.
pub const IID_ILYNC_CLIENT: GUID = GUID::from_u128(0xc413a27f_601e_4261_b9e3_0eb966f4e7d1);

/// `OIInterface.oiInterfaceILyncClient` = 1 (`UCCollaborationLib`, enum `OIInterface`).
pub const OI_INTERFACE_ILYNC_CLIENT: i32 = 1;

/// The version string Office 2013 passes to `IUCOfficeIntegration` ("Integrating IM
/// applications with Office", Office developer documentation).
pub const OFFICE_VERSION: &str = "15.0.0.0";

/// `ClientState` of `ILyncClient.State` (`UCCollaborationLib`, enum `ClientState`):
/// `ucClientStateUninitialized` 0, `SignedOut` 1, `SigningIn` 2, `SignedIn` 3, `SigningOut` 4,
/// `ShuttingDown` 5, `Initializing` 6.
pub mod client_state {
    /// `ucClientStateSignedOut`.
    pub const SIGNED_OUT: i32 = 1;
    /// `ucClientStateSigningIn`.
    pub const SIGNING_IN: i32 = 2;
    /// `ucClientStateSignedIn`.
    pub const SIGNED_IN: i32 = 3;
    /// `ucClientStateSigningOut`.
    pub const SIGNING_OUT: i32 = 4;
    /// `ucClientStateShuttingDown`.
    pub const SHUTTING_DOWN: i32 = 5;
}

/// DISPIDs of `IMessenger` (the Messenger API type library as imported by Delphi's
/// `MessengerAPI_TLB.pas`, `IMessengerDisp`: `property MySigninName … dispid 1304`,
/// `property MyStatus: MISTATUS dispid 1305`; Communicator's `IMessenger` keeps the IID and the
/// DISPIDs of the Messenger API).
pub mod dispid {
    /// `IMessenger.MySigninName` (propget).
    pub const MY_SIGNIN_NAME: i32 = 1304;
    /// `IMessenger.MyStatus` (propget/propput).
    pub const MY_STATUS: i32 = 1305;
    /// `IMessengerContact.Status` (`IMessengerContact`, `@DeclDISPID(1537)` in the generated
    /// Java binding `com.wilutions.mslib.messengerapi.IMessengerContact`).
    pub const CONTACT_STATUS: i32 = 1537;
    /// `IMessengerContact.SigninName` (same source, `@DeclDISPID(1538)`).
    pub const CONTACT_SIGNIN_NAME: i32 = 1538;

    /// `DMessengerEvents.OnSignin(hr)` (the generated Java binding
    /// `com.wilutions.mslib.messengerapi.DMessengerEvents`, `@DeclDISPID(1024)`, for the
    /// dispinterface `{C9A6A6B6-9BC1-43A5-B06B-E58874EEBC96}`).
    pub const ON_SIGNIN: i32 = 1024;
    /// `DMessengerEvents.OnSignout()` (same source, 1025).
    pub const ON_SIGNOUT: i32 = 1025;
    /// `DMessengerEvents.OnContactStatusChange(pMContact, mStatus)` (same source, 1030).
    pub const ON_CONTACT_STATUS_CHANGE: i32 = 1030;
    /// `DMessengerEvents.OnMyStatusChange(hr, mMyStatus)` (same source, 1031).
    pub const ON_MY_STATUS_CHANGE: i32 = 1031;
    /// `DMessengerEvents.OnAppShutdown()` (same source, 1032).
    pub const ON_APP_SHUTDOWN: i32 = 1032;
}

/// HRESULTs the source tells apart (`winerror.h` unless noted).
pub mod hr {
    /// `CLASS_E_CLASSNOTAVAILABLE`: what `CoCreateInstance(Messenger)` gives while the client
    /// is not running (Communicator SDK documentation).
    pub const CLASS_E_CLASSNOTAVAILABLE: u32 = 0x8004_0111;
    /// `REGDB_E_CLASSNOTREG`: the class is not registered (client not installed, or gone).
    pub const REGDB_E_CLASSNOTREG: u32 = 0x8004_0154;
    /// `CO_E_SERVER_STOPPING`: the server is shutting down.
    pub const CO_E_SERVER_STOPPING: u32 = 0x8000_4028;
    /// `CO_E_SERVER_EXEC_FAILURE`: the server could not be started or reached; with
    /// Communicator typically an integrity-level (elevation) mismatch.
    pub const CO_E_SERVER_EXEC_FAILURE: u32 = 0x8008_0005;
    /// `E_ACCESSDENIED`.
    pub const E_ACCESSDENIED: u32 = 0x8007_0005;
    /// `RPC_E_SERVER_DIED`.
    pub const RPC_E_SERVER_DIED: u32 = 0x8001_0007;
    /// `RPC_E_SERVER_DIED_DNE`.
    pub const RPC_E_SERVER_DIED_DNE: u32 = 0x8001_0012;
    /// `RPC_E_DISCONNECTED`: the object's server is gone.
    pub const RPC_E_DISCONNECTED: u32 = 0x8001_0108;
    /// `RPC_S_SERVER_UNAVAILABLE` as an HRESULT.
    pub const RPC_S_SERVER_UNAVAILABLE: u32 = 0x8007_06BA;
    /// `RPC_S_CALL_FAILED` as an HRESULT.
    pub const RPC_S_CALL_FAILED: u32 = 0x8007_06BE;
    /// `RPC_S_CALL_FAILED_DNE` as an HRESULT.
    pub const RPC_S_CALL_FAILED_DNE: u32 = 0x8007_06BF;
    /// `CO_E_OBJNOTCONNECTED`.
    pub const CO_E_OBJNOTCONNECTED: u32 = 0x8004_01FD;
    /// `MSGR_E_NOT_LOGGED_ON` = `MSGR_E(0x001E)` (`msgrua.h`): a call needs a signed-in user.
    pub const MSGR_E_NOT_LOGGED_ON: u32 = 0x8100_031E;
    /// `DISP_E_EXCEPTION`: the real error is in `EXCEPINFO`.
    pub const DISP_E_EXCEPTION: u32 = 0x8002_0009;
}
