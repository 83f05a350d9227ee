//! The COM server. Everything runs on the main thread (an STA with a message loop); a helper
//! thread only reads stdin and posts each line to it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{BufRead, Write};
use std::mem::ManuallyDrop;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use windows::core::{implement, Interface, Ref, BSTR, GUID, HSTRING, PCWSTR};
use windows::Win32::Foundation::{
    CLASS_E_NOAGGREGATION, DISP_E_EXCEPTION, DISP_E_MEMBERNOTFOUND, DISP_E_UNKNOWNNAME, E_NOTIMPL,
    E_POINTER, LPARAM, WPARAM,
};
use windows::Win32::System::Com::{
    CoInitializeEx, CoRegisterClassObject, CoRevokeClassObject, IClassFactory, IClassFactory_Impl,
    IConnectionPoint, IConnectionPointContainer, IConnectionPointContainer_Impl,
    IConnectionPoint_Impl, IDispatch, IDispatch_Impl, IEnumConnectionPoints, IEnumConnections,
    ITypeInfo, CLSCTX_LOCAL_SERVER, COINIT_APARTMENTTHREADED, DISPATCH_FLAGS, DISPATCH_METHOD,
    DISPPARAMS, EXCEPINFO, REGCLS_MULTIPLEUSE,
};
use windows::Win32::System::Registry::{
    RegCloseKey, RegCreateKeyExW, RegSetValueExW, HKEY, HKEY_CURRENT_USER, KEY_WRITE, REG_DWORD,
    REG_OPTION_NON_VOLATILE,
};
use windows::Win32::System::Threading::GetCurrentThreadId;
use windows::Win32::System::Variant::{VariantClear, VARIANT, VT_BSTR, VT_DISPATCH, VT_I4};
use windows::Win32::UI::WindowsAndMessaging::{
    DispatchMessageW, GetMessageW, PostThreadMessageW, TranslateMessage, MSG, WM_APP,
};
use windows_core::IUnknown;

// The real Messenger API numbers (see crates/windows/src/ids.rs for where each comes from).
const DIID_DMESSENGER_EVENTS: GUID = GUID::from_u128(0xc9a6a6b6_9bc1_43a5_b06b_e58874eebc96);
const MY_SIGNIN_NAME: i32 = 1304;
const MY_STATUS: i32 = 1305;
const CONTACT_STATUS: i32 = 1537;
const CONTACT_SIGNIN_NAME: i32 = 1538;
const ON_SIGNIN: i32 = 1024;
const ON_SIGNOUT: i32 = 1025;
const ON_CONTACT_STATUS_CHANGE: i32 = 1030;
const ON_MY_STATUS_CHANGE: i32 = 1031;
const ON_APP_SHUTDOWN: i32 = 1032;
const MSGR_E_NOT_LOGGED_ON: i32 = 0x8100_031E_u32 as i32;

#[derive(Default)]
struct State {
    signed_in: bool,
    name: String,
    status: u32,
    sinks: Vec<(u32, IDispatch)>,
    next_cookie: u32,
}

type Shared = Rc<RefCell<State>>;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

fn parse_guid(s: &str) -> Option<GUID> {
    let hex: String = s
        .trim_matches(|c| c == '{' || c == '}')
        .chars()
        .filter(|c| *c != '-')
        .collect();
    u128::from_str_radix(&hex, 16).ok().map(GUID::from_u128)
}

/// Writes `HKCU\Software\IM Providers\<app>\UpAndRunning`.
fn up_and_running(app: &str, value: u32) {
    let path = HSTRING::from(format!(r"Software\IM Providers\{app}"));
    let mut key = HKEY::default();
    // SAFETY: `path` outlives the call; `key` is a valid out pointer; the key is closed below.
    unsafe {
        if RegCreateKeyExW(
            HKEY_CURRENT_USER,
            PCWSTR(path.as_ptr()),
            None,
            PCWSTR::null(),
            REG_OPTION_NON_VOLATILE,
            KEY_WRITE,
            None,
            &mut key,
            None,
        )
        .is_ok()
        {
            let name = HSTRING::from("UpAndRunning");
            let _ = RegSetValueExW(
                key,
                PCWSTR(name.as_ptr()),
                None,
                REG_DWORD,
                Some(&value.to_le_bytes()),
            );
            let _ = RegCloseKey(key);
        }
    }
}

fn variant_i4(v: i32) -> VARIANT {
    let mut var = VARIANT::default();
    // SAFETY: tag and matching member of a zeroed VARIANT.
    unsafe {
        (*var.Anonymous.Anonymous).vt = VT_I4;
        (*var.Anonymous.Anonymous).Anonymous.lVal = v;
    }
    var
}

fn variant_bstr(s: &str) -> VARIANT {
    let mut var = VARIANT::default();
    // SAFETY: tag and matching member; the BSTR is owned by the VARIANT.
    unsafe {
        (*var.Anonymous.Anonymous).vt = VT_BSTR;
        (*var.Anonymous.Anonymous).Anonymous.bstrVal = ManuallyDrop::new(BSTR::from(s));
    }
    var
}

fn variant_dispatch(d: IDispatch) -> VARIANT {
    let mut var = VARIANT::default();
    // SAFETY: tag and matching member; the reference is owned by the VARIANT.
    unsafe {
        (*var.Anonymous.Anonymous).vt = VT_DISPATCH;
        (*var.Anonymous.Anonymous).Anonymous.pdispVal = ManuallyDrop::new(Some(d));
    }
    var
}

/// Writes a property result, or fails the way a typelib `Invoke` reports a failing method.
fn answer(
    result: *mut VARIANT,
    excep: *mut EXCEPINFO,
    value: Result<VARIANT, i32>,
) -> windows::core::Result<()> {
    match value {
        Ok(v) => {
            if result.is_null() {
                let mut v = v;
                // SAFETY: our own VARIANT, cleared once.
                unsafe {
                    let _ = VariantClear(&mut v);
                }
                return Err(E_POINTER.into());
            }
            // SAFETY: the caller's result VARIANT is valid and (per contract) empty.
            unsafe { result.write(v) };
            Ok(())
        }
        Err(scode) => {
            // SAFETY: the caller's EXCEPINFO, if any, is valid for writing.
            unsafe {
                if let Some(e) = excep.as_mut() {
                    e.scode = scode;
                }
            }
            Err(DISP_E_EXCEPTION.into())
        }
    }
}

/// Fires one event on every sink, arguments in call order.
fn fire(state: &Shared, id: i32, args: Vec<VARIANT>) {
    let sinks: Vec<IDispatch> = state
        .borrow()
        .sinks
        .iter()
        .map(|(_, s)| s.clone())
        .collect();
    let mut args = args;
    args.reverse();
    for sink in sinks {
        let params = DISPPARAMS {
            rgvarg: if args.is_empty() {
                std::ptr::null_mut()
            } else {
                args.as_mut_ptr()
            },
            rgdispidNamedArgs: std::ptr::null_mut(),
            cArgs: args.len() as u32,
            cNamedArgs: 0,
        };
        // SAFETY: `params` points at `args`, alive across the call; IID_NULL, LCID 0.
        let r = unsafe {
            sink.Invoke(
                id,
                &GUID::zeroed(),
                0,
                DISPATCH_METHOD,
                &params,
                None,
                None,
                None,
            )
        };
        if let Err(e) = r {
            say(&format!("fire-error {id} {e}"));
        }
    }
    for mut v in args {
        // SAFETY: our own VARIANTs, each cleared once.
        unsafe {
            let _ = VariantClear(&mut v);
        }
    }
}

#[implement(IDispatch, IConnectionPointContainer)]
struct Messenger {
    state: Shared,
}

impl IDispatch_Impl for Messenger_Impl {
    fn GetTypeInfoCount(&self) -> windows::core::Result<u32> {
        Ok(0)
    }
    fn GetTypeInfo(&self, _: u32, _: u32) -> windows::core::Result<ITypeInfo> {
        Err(E_NOTIMPL.into())
    }
    fn GetIDsOfNames(
        &self,
        _riid: *const GUID,
        names: *const PCWSTR,
        count: u32,
        _lcid: u32,
        ids: *mut i32,
    ) -> windows::core::Result<()> {
        if count != 1 || names.is_null() || ids.is_null() {
            return Err(DISP_E_UNKNOWNNAME.into());
        }
        // SAFETY: one valid name pointer and one out id, per the caller.
        let name = unsafe { (*names).to_string() }.unwrap_or_default();
        let id = match name.as_str() {
            "MyStatus" => MY_STATUS,
            "MySigninName" => MY_SIGNIN_NAME,
            _ => return Err(DISP_E_UNKNOWNNAME.into()),
        };
        // SAFETY: as above.
        unsafe { *ids = id };
        Ok(())
    }
    fn Invoke(
        &self,
        id: i32,
        _riid: *const GUID,
        _lcid: u32,
        _flags: DISPATCH_FLAGS,
        _params: *const DISPPARAMS,
        result: *mut VARIANT,
        excep: *mut EXCEPINFO,
        _arg_err: *mut u32,
    ) -> windows::core::Result<()> {
        let state = self.state.borrow();
        let value = match id {
            MY_STATUS if state.signed_in => Ok(variant_i4(state.status as i32)),
            MY_SIGNIN_NAME if state.signed_in => Ok(variant_bstr(&state.name)),
            MY_STATUS | MY_SIGNIN_NAME => Err(MSGR_E_NOT_LOGGED_ON),
            _ => return Err(DISP_E_MEMBERNOTFOUND.into()),
        };
        answer(result, excep, value)
    }
}

impl IConnectionPointContainer_Impl for Messenger_Impl {
    fn EnumConnectionPoints(&self) -> windows::core::Result<IEnumConnectionPoints> {
        Err(E_NOTIMPL.into())
    }
    fn FindConnectionPoint(&self, riid: *const GUID) -> windows::core::Result<IConnectionPoint> {
        // SAFETY: the caller's IID pointer.
        if riid.is_null() || unsafe { *riid } != DIID_DMESSENGER_EVENTS {
            // CONNECT_E_NOCONNECTION (ocidl.h).
            return Err(windows::core::HRESULT(0x8004_0200_u32 as i32).into());
        }
        Ok(ConnectionPoint {
            state: self.state.clone(),
        }
        .into())
    }
}

#[implement(IConnectionPoint)]
struct ConnectionPoint {
    state: Shared,
}

impl IConnectionPoint_Impl for ConnectionPoint_Impl {
    fn GetConnectionInterface(&self) -> windows::core::Result<GUID> {
        Ok(DIID_DMESSENGER_EVENTS)
    }
    fn GetConnectionPointContainer(&self) -> windows::core::Result<IConnectionPointContainer> {
        Err(E_NOTIMPL.into())
    }
    fn Advise(&self, sink: Ref<IUnknown>) -> windows::core::Result<u32> {
        // As Communicator: the sink must speak IDispatch (the dispinterface's calls).
        let sink: IDispatch = sink.ok()?.cast()?;
        let mut state = self.state.borrow_mut();
        state.next_cookie += 1;
        let cookie = state.next_cookie;
        state.sinks.push((cookie, sink));
        say(&format!("advised {cookie}"));
        Ok(cookie)
    }
    fn Unadvise(&self, cookie: u32) -> windows::core::Result<()> {
        self.state.borrow_mut().sinks.retain(|(c, _)| *c != cookie);
        say(&format!("unadvised {cookie}"));
        Ok(())
    }
    fn EnumConnections(&self) -> windows::core::Result<IEnumConnections> {
        Err(E_NOTIMPL.into())
    }
}

#[implement(IDispatch)]
struct Contact {
    name: String,
    status: u32,
}

impl IDispatch_Impl for Contact_Impl {
    fn GetTypeInfoCount(&self) -> windows::core::Result<u32> {
        Ok(0)
    }
    fn GetTypeInfo(&self, _: u32, _: u32) -> windows::core::Result<ITypeInfo> {
        Err(E_NOTIMPL.into())
    }
    fn GetIDsOfNames(
        &self,
        _: *const GUID,
        _: *const PCWSTR,
        _: u32,
        _: u32,
        _: *mut i32,
    ) -> windows::core::Result<()> {
        Err(DISP_E_UNKNOWNNAME.into())
    }
    fn Invoke(
        &self,
        id: i32,
        _riid: *const GUID,
        _lcid: u32,
        _flags: DISPATCH_FLAGS,
        _params: *const DISPPARAMS,
        result: *mut VARIANT,
        excep: *mut EXCEPINFO,
        _arg_err: *mut u32,
    ) -> windows::core::Result<()> {
        let value = match id {
            CONTACT_SIGNIN_NAME => Ok(variant_bstr(&self.name)),
            CONTACT_STATUS => Ok(variant_i4(self.status as i32)),
            _ => return Err(DISP_E_MEMBERNOTFOUND.into()),
        };
        answer(result, excep, value)
    }
}

/// `--office`: the `IUCOfficeIntegration` shape of Lync and later, through `IDispatch` only:
/// `GetInterface(version, oiInterfaceILyncClient)` gives an `ILyncClient` whose `State` is
/// `ucClientStateSignedIn` (3) or `ucClientStateSignedOut` (1). No connection point.
#[implement(IDispatch)]
struct OfficeIntegration {
    state: Shared,
}

const OFFICE_GET_INTERFACE: i32 = 0x6001_0000;
const LYNC_STATE: i32 = 0x6002_0000;

fn name_to_id(
    names: *const PCWSTR,
    count: u32,
    ids: *mut i32,
    known: &[(&str, i32)],
) -> windows::core::Result<()> {
    if count != 1 || names.is_null() || ids.is_null() {
        return Err(DISP_E_UNKNOWNNAME.into());
    }
    // SAFETY: one valid name pointer and one out id, per the caller.
    let name = unsafe { (*names).to_string() }.unwrap_or_default();
    let Some((_, id)) = known.iter().find(|(n, _)| *n == name) else {
        return Err(DISP_E_UNKNOWNNAME.into());
    };
    // SAFETY: as above.
    unsafe { *ids = *id };
    Ok(())
}

impl IDispatch_Impl for OfficeIntegration_Impl {
    fn GetTypeInfoCount(&self) -> windows::core::Result<u32> {
        Ok(0)
    }
    fn GetTypeInfo(&self, _: u32, _: u32) -> windows::core::Result<ITypeInfo> {
        Err(E_NOTIMPL.into())
    }
    fn GetIDsOfNames(
        &self,
        _riid: *const GUID,
        names: *const PCWSTR,
        count: u32,
        _lcid: u32,
        ids: *mut i32,
    ) -> windows::core::Result<()> {
        name_to_id(names, count, ids, &[("GetInterface", OFFICE_GET_INTERFACE)])
    }
    fn Invoke(
        &self,
        id: i32,
        _riid: *const GUID,
        _lcid: u32,
        _flags: DISPATCH_FLAGS,
        _params: *const DISPPARAMS,
        result: *mut VARIANT,
        excep: *mut EXCEPINFO,
        _arg_err: *mut u32,
    ) -> windows::core::Result<()> {
        if id != OFFICE_GET_INTERFACE {
            return Err(DISP_E_MEMBERNOTFOUND.into());
        }
        let client: IDispatch = LyncClient {
            state: self.state.clone(),
        }
        .into();
        answer(result, excep, Ok(variant_dispatch(client)))
    }
}

#[implement(IDispatch)]
struct LyncClient {
    state: Shared,
}

impl IDispatch_Impl for LyncClient_Impl {
    fn GetTypeInfoCount(&self) -> windows::core::Result<u32> {
        Ok(0)
    }
    fn GetTypeInfo(&self, _: u32, _: u32) -> windows::core::Result<ITypeInfo> {
        Err(E_NOTIMPL.into())
    }
    fn GetIDsOfNames(
        &self,
        _riid: *const GUID,
        names: *const PCWSTR,
        count: u32,
        _lcid: u32,
        ids: *mut i32,
    ) -> windows::core::Result<()> {
        name_to_id(names, count, ids, &[("State", LYNC_STATE)])
    }
    fn Invoke(
        &self,
        id: i32,
        _riid: *const GUID,
        _lcid: u32,
        _flags: DISPATCH_FLAGS,
        _params: *const DISPPARAMS,
        result: *mut VARIANT,
        excep: *mut EXCEPINFO,
        _arg_err: *mut u32,
    ) -> windows::core::Result<()> {
        if id != LYNC_STATE {
            return Err(DISP_E_MEMBERNOTFOUND.into());
        }
        let state = if self.state.borrow().signed_in { 3 } else { 1 };
        answer(result, excep, Ok(variant_i4(state)))
    }
}

#[implement(IClassFactory)]
struct Factory {
    state: Shared,
    /// `--refuse HRESULT`: every `CreateInstance` fails with it (an access check failing).
    refuse: Option<u32>,
    /// `--office`: serve `OfficeIntegration` instead of `Messenger`.
    office: bool,
}

impl IClassFactory_Impl for Factory_Impl {
    fn CreateInstance(
        &self,
        outer: Ref<IUnknown>,
        riid: *const GUID,
        object: *mut *mut core::ffi::c_void,
    ) -> windows::core::Result<()> {
        if outer.is_some() {
            return Err(CLASS_E_NOAGGREGATION.into());
        }
        if let Some(code) = self.refuse {
            return Err(windows::core::HRESULT(code as i32).into());
        }
        let messenger: IUnknown = if self.office {
            OfficeIntegration {
                state: self.state.clone(),
            }
            .into()
        } else {
            Messenger {
                state: self.state.clone(),
            }
            .into()
        };
        // SAFETY: the caller's IID and out pointer, passed straight to QueryInterface.
        unsafe { messenger.query(riid, object).ok() }
    }
    fn LockServer(&self, _lock: windows::core::BOOL) -> windows::core::Result<()> {
        Ok(())
    }
}

pub fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(clsid) = arg(&args, "--clsid").and_then(|s| parse_guid(&s)) else {
        eprintln!("usage: imstatus-messenger-testdouble --clsid {{GUID}} --app NAME [--signed-in NAME] [--status 0x2]");
        std::process::exit(2);
    };
    let app = arg(&args, "--app").unwrap_or_else(|| "Communicator".to_owned());
    let state: Shared = Rc::new(RefCell::new(State::default()));
    if let Some(name) = arg(&args, "--signed-in") {
        let mut s = state.borrow_mut();
        s.signed_in = true;
        s.name = name;
        s.status = arg(&args, "--status")
            .and_then(|s| parse_u32(&s))
            .unwrap_or(2);
    } else {
        state.borrow_mut().status = 1;
    }
    // SAFETY: first COM call of the main thread, which stays an STA until exit.
    let init = unsafe { CoInitializeEx(None, COINIT_APARTMENTTHREADED) };
    if init.is_err() {
        eprintln!("CoInitializeEx: {init:?}");
        std::process::exit(1);
    }
    // Like a real client: "starting" first, "running" once the class object is registered.
    up_and_running(&app, 1);
    if args.iter().any(|a| a == "--staged") {
        say("starting");
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        if line.trim() != "up" {
            up_and_running(&app, 0);
            std::process::exit(0);
        }
    }
    let factory: IClassFactory = Factory {
        state: state.clone(),
        refuse: arg(&args, "--refuse").and_then(|s| parse_u32(&s)),
        office: args.iter().any(|a| a == "--office"),
    }
    .into();
    // SAFETY: registers our factory for the process lifetime; revoked before exit.
    let cookie = match unsafe {
        CoRegisterClassObject(&clsid, &factory, CLSCTX_LOCAL_SERVER, REGCLS_MULTIPLEUSE)
    } {
        Ok(c) => c,
        Err(e) => {
            eprintln!("CoRegisterClassObject: {e}");
            std::process::exit(1);
        }
    };
    up_and_running(&app, 2);
    say("ready");

    // SAFETY: plain query of this thread's id.
    let main_thread = unsafe { GetCurrentThreadId() };
    let lines: Arc<Mutex<VecDeque<String>>> = Arc::default();
    {
        let lines = lines.clone();
        std::thread::spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(line);
                // SAFETY: posting to our own main thread's queue.
                unsafe {
                    let _ = PostThreadMessageW(main_thread, WM_APP, WPARAM(0), LPARAM(0));
                }
            }
            lines
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_back("exit".to_owned());
            // SAFETY: as above.
            unsafe {
                let _ = PostThreadMessageW(main_thread, WM_APP, WPARAM(0), LPARAM(0));
            }
        });
    }

    let quit = |code: i32| -> ! {
        // SAFETY: the cookie of our registration.
        unsafe {
            let _ = CoRevokeClassObject(cookie);
        }
        std::process::exit(code);
    };
    let mut msg = MSG::default();
    // SAFETY: a standard message loop on this thread.
    while unsafe { GetMessageW(&mut msg, None, 0, 0) }.as_bool() {
        if msg.message != WM_APP {
            // SAFETY: dispatching the message we just got (COM's calls to our objects).
            unsafe {
                let _ = TranslateMessage(&msg);
                DispatchMessageW(&msg);
            }
            continue;
        }
        loop {
            let line = lines.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
            let Some(line) = line else { break };
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["signin", name, rest @ ..] => {
                    {
                        let mut s = state.borrow_mut();
                        s.signed_in = true;
                        s.name = (*name).to_owned();
                        s.status = rest.first().and_then(|s| parse_u32(s)).unwrap_or(2);
                    }
                    fire(&state, ON_SIGNIN, vec![variant_i4(0)]);
                }
                ["signin-fail", code] => {
                    let code = parse_u32(code).unwrap_or(0x8100_0303);
                    fire(&state, ON_SIGNIN, vec![variant_i4(code as i32)]);
                }
                ["connecting"] => {
                    state.borrow_mut().status = 0x200;
                    fire(
                        &state,
                        ON_MY_STATUS_CHANGE,
                        vec![variant_i4(0), variant_i4(0x200)],
                    );
                }
                ["status", status] => {
                    let status = parse_u32(status).unwrap_or(2);
                    state.borrow_mut().status = status;
                    fire(
                        &state,
                        ON_MY_STATUS_CHANGE,
                        vec![variant_i4(0), variant_i4(status as i32)],
                    );
                }
                ["signout"] => {
                    {
                        let mut s = state.borrow_mut();
                        s.signed_in = false;
                        s.status = 1;
                    }
                    fire(&state, ON_SIGNOUT, vec![]);
                }
                ["contact", name, status] => {
                    let status = parse_u32(status).unwrap_or(1);
                    let contact: IDispatch = Contact {
                        name: (*name).to_owned(),
                        status,
                    }
                    .into();
                    fire(
                        &state,
                        ON_CONTACT_STATUS_CHANGE,
                        vec![variant_dispatch(contact), variant_i4(status as i32)],
                    );
                }
                ["shutdown"] => {
                    fire(&state, ON_APP_SHUTDOWN, vec![]);
                    state.borrow_mut().sinks.clear();
                    up_and_running(&app, 0);
                    say("done shutdown");
                    quit(0);
                }
                ["exit"] => quit(0),
                _ => {
                    say(&format!("unknown {line}"));
                    continue;
                }
            }
            say(&format!("done {line}"));
        }
    }
    quit(0);
}
