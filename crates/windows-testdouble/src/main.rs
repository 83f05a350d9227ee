//! **TEST DOUBLE — never shipped with imstatus.** A stand-in for the discontinued Office
//! Communicator, for the wine tests of `imstatus-windows`: an out-of-process COM server
//! (`CoRegisterClassObject`, `CLSCTX_LOCAL_SERVER`) offering the Messenger API subset imstatus
//! uses — `IMessenger.MyStatus`/`MySigninName` through `IDispatch` with the real DISPIDs, and the
//! `DMessengerEvents` connection point, whose events it fires through `IDispatch::Invoke` on the
//! advised sinks, with the real DISPIDs — and writing `HKCU\Software\IM Providers\<app>\
//! UpAndRunning` like the real client.
//!
//! ```text
//! imstatus-messenger-testdouble --clsid {GUID} --app NAME [--signed-in NAME] [--status 0x22]
//!                               [--staged] [--refuse HRESULT] [--office]
//! ```
//!
//! `--refuse` makes every `CreateInstance` fail with that HRESULT (as a server whose access
//! check fails, e.g. `E_ACCESSDENIED` across integrity levels). `--office` serves the
//! `IUCOfficeIntegration` shape instead (through `IDispatch` only: `GetInterface` →
//! `ILyncClient.State`, 3 signed in / 1 signed out, no events), driven by the same `signin` and
//! `signout` commands.
//!
//! It writes `UpAndRunning` = 1 (with `--staged` it then prints `starting` and waits for a line
//! `up` on stdin), registers its class object, writes `UpAndRunning` = 2, prints `ready`, reads
//! commands from stdin, one per line, and answers each with `done <command>` after the event
//! was delivered to every sink (the sinks' `Invoke` returned):
//!
//! | command | does |
//! |---|---|
//! | `signin NAME [STATUS]` | signed in (status default 0x2), fires `OnSignin(S_OK)` |
//! | `signin-fail HRESULT` | fires `OnSignin(hr)` |
//! | `connecting` | status 0x200, fires `OnMyStatusChange(S_OK, 0x200)` |
//! | `status STATUS` | fires `OnMyStatusChange(S_OK, STATUS)` |
//! | `signout` | signed out, fires `OnSignout()` |
//! | `contact NAME STATUS` | fires `OnContactStatusChange(contact, STATUS)` |
//! | `shutdown` | fires `OnAppShutdown()`, revokes, writes `UpAndRunning` = 0, exits |
//! | `exit` (or end of stdin) | revokes and exits without a word |
//!
//! Being killed (`TerminateProcess`) is the crash case: no event, `UpAndRunning` stays 2.
//! While signed out, `MyStatus` and `MySigninName` fail like Communicator's with
//! `DISP_E_EXCEPTION` carrying `MSGR_E_NOT_LOGGED_ON` (0x8100031E) in `EXCEPINFO.scode`.

#[cfg(windows)]
mod messenger;

#[cfg(windows)]
fn main() {
    messenger::main();
}

#[cfg(not(windows))]
fn main() {
    eprintln!("imstatus-messenger-testdouble: a Windows COM server; build it for Windows");
    std::process::exit(2);
}
