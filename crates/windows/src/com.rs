//! The client's COM object: activation, late-bound calls through `IDispatch`, and the
//! `DMessengerEvents` sink.
//!
//! Everything here runs on the source's STA thread (see `worker.rs`): the objects are
//! apartment-bound and never leave it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::rc::Rc;

use windows::core::{implement, interface, Interface, BSTR, GUID, HSTRING, PCWSTR};
use windows::Win32::System::Com::{
    CoCreateInstance, IConnectionPointContainer, IDispatch, IDispatch_Impl, IDispatch_Vtbl,
    ITypeInfo, CLSCTX_LOCAL_SERVER, DISPATCH_FLAGS, DISPATCH_METHOD, DISPATCH_PROPERTYGET,
    DISPPARAMS, EXCEPINFO,
};
use windows::Win32::System::Variant::{
    VariantClear, VARENUM, VARIANT, VT_BOOL, VT_BSTR, VT_DISPATCH, VT_I2, VT_I4, VT_INT, VT_UI4,
    VT_UINT,
};
use windows_core::IUnknown;

use crate::ids::{dispid, hr, DIID_DMESSENGER_EVENTS, IID_IUCOFFICE_INTEGRATION};

/// A failed COM call: its HRESULT (from `EXCEPINFO` when the call said `DISP_E_EXCEPTION`) and
/// what was being done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComError {
    /// The HRESULT, as unsigned.
    pub hresult: u32,
    /// What failed, for details.
    pub what: String,
}

impl ComError {
    fn new(e: &windows::core::Error, what: impl Into<String>) -> ComError {
        ComError {
            hresult: e.code().0 as u32,
            what: what.into(),
        }
    }
}

impl std::fmt::Display for ComError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.what,
            crate::translate::describe_hresult(self.hresult)
        )
    }
}

/// `CoCreateInstance(clsid, CLSCTX_LOCAL_SERVER)`.
pub fn create(clsid: &GUID) -> Result<IUnknown, ComError> {
    // SAFETY: COM is initialised on this thread (the worker's STA); `clsid` is a valid GUID.
    unsafe { CoCreateInstance::<_, IUnknown>(clsid, None, CLSCTX_LOCAL_SERVER) }
        .map_err(|e| ComError::new(&e, format!("CoCreateInstance({clsid:?})")))
}

/// Which API the client's object speaks.
pub enum Api {
    /// The Messenger automation API (Communicator): `IMessenger` and `DMessengerEvents`.
    Messenger(IDispatch),
    /// `IUCOfficeIntegration` (Lync, Skype for Business, Teams' Office integration).
    Office(IDispatch),
}

/// Finds out which API the object offers: `IUCOfficeIntegration` first (its presence is what
/// tells an Office-integrated client apart), else the Messenger API's `IDispatch`.
///
/// Asking for `IID_IUCOfficeIntegration` across processes needs the client's type library to
/// be registered (it is a dual interface, marshaled by the typelib marshaler). So an object
/// whose `IDispatch` knows a `GetInterface` member is taken for the Office integration too:
/// everything imstatus calls goes through `IDispatch` anyway.
pub fn api_of(object: &IUnknown) -> Result<Api, ComError> {
    let mut office: *mut std::ffi::c_void = std::ptr::null_mut();
    // SAFETY: a plain QueryInterface into a local out pointer; on success we own one
    // reference, which `IUnknown::from_raw` takes over.
    let qi = unsafe { object.query(&IID_IUCOFFICE_INTEGRATION, &mut office) };
    if qi.is_ok() && !office.is_null() {
        // SAFETY: `office` is an owned reference returned by QueryInterface just above.
        let office = unsafe { IUnknown::from_raw(office) };
        // A dual interface: its `IDispatch` is the same object.
        return office
            .cast::<IDispatch>()
            .map(Api::Office)
            .map_err(|e| ComError::new(&e, "IUCOfficeIntegration as IDispatch"));
    }
    let dispatch = object
        .cast::<IDispatch>()
        .map_err(|e| ComError::new(&e, "the client's object as IDispatch"))?;
    match dispid_of(&dispatch, "GetInterface") {
        Ok(_) => Ok(Api::Office(dispatch)),
        Err(e)
            if crate::translate::classify(e.hresult) == crate::translate::Failure::ServerDied =>
        {
            Err(e)
        }
        Err(_) => Ok(Api::Messenger(dispatch)),
    }
}

/// A VARIANT that is cleared on drop.
pub struct Variant(pub VARIANT);

impl Variant {
    /// `VT_EMPTY`.
    pub fn empty() -> Variant {
        Variant(VARIANT::default())
    }

    /// `VT_I4`.
    pub fn i4(v: i32) -> Variant {
        let mut var = VARIANT::default();
        // SAFETY: writing the tag and the matching union member of a zeroed VARIANT.
        unsafe {
            (*var.Anonymous.Anonymous).vt = VT_I4;
            (*var.Anonymous.Anonymous).Anonymous.lVal = v;
        }
        Variant(var)
    }

    /// `VT_BSTR`.
    pub fn bstr(s: &str) -> Variant {
        let mut var = VARIANT::default();
        // SAFETY: writing the tag and the matching union member; the BSTR is owned by the
        // VARIANT from now on and freed by `VariantClear` on drop.
        unsafe {
            (*var.Anonymous.Anonymous).vt = VT_BSTR;
            (*var.Anonymous.Anonymous).Anonymous.bstrVal = ManuallyDrop::new(BSTR::from(s));
        }
        Variant(var)
    }

    fn vt(&self) -> VARENUM {
        // SAFETY: `vt` is always initialised (zero = VT_EMPTY).
        unsafe { self.0.Anonymous.Anonymous.vt }
    }

    /// The value as an integer, for the integer types COM uses for enums and HRESULTs.
    pub fn as_i32(&self) -> Option<i32> {
        variant_i32(&self.0)
    }

    /// The value as a string (`VT_BSTR`).
    pub fn as_string(&self) -> Option<String> {
        // SAFETY: the union member read matches the tag checked first.
        (self.vt() == VT_BSTR)
            .then(|| unsafe { self.0.Anonymous.Anonymous.Anonymous.bstrVal.to_string() })
    }

    /// The value as an `IDispatch` (`VT_DISPATCH`), with a reference of its own.
    pub fn as_dispatch(&self) -> Option<IDispatch> {
        variant_dispatch(&self.0)
    }
}

impl Drop for Variant {
    fn drop(&mut self) {
        // SAFETY: the VARIANT is valid (created here or filled by a callee) and owned by us.
        unsafe {
            let _ = VariantClear(&mut self.0);
        }
    }
}

/// An integer VARIANT (borrowed).
pub fn variant_i32(v: &VARIANT) -> Option<i32> {
    // SAFETY: each union member read matches the tag it is guarded by; `VT_BYREF` variants
    // are not accepted.
    unsafe {
        let inner = &v.Anonymous.Anonymous;
        match inner.vt {
            VT_I4 | VT_INT => Some(inner.Anonymous.lVal),
            VT_UI4 | VT_UINT => Some(inner.Anonymous.ulVal as i32),
            VT_I2 => Some(i32::from(inner.Anonymous.iVal)),
            VT_BOOL => Some(i32::from(inner.Anonymous.boolVal.0)),
            _ => None,
        }
    }
}

/// An `IDispatch` VARIANT (borrowed), with a reference of its own.
pub fn variant_dispatch(v: &VARIANT) -> Option<IDispatch> {
    // SAFETY: the union member read matches the tag; `clone` adds a reference.
    unsafe {
        let inner = &v.Anonymous.Anonymous;
        (inner.vt == VT_DISPATCH)
            .then(|| (*inner.Anonymous.pdispVal).clone())
            .flatten()
    }
}

/// `IDispatch::Invoke` with positional arguments (given in call order). A `DISP_E_EXCEPTION`
/// becomes the HRESULT of its `EXCEPINFO`, as a typelib-driven `Invoke` reports a failing
/// method.
pub fn invoke(
    object: &IDispatch,
    id: i32,
    flags: DISPATCH_FLAGS,
    args: Vec<Variant>,
    what: &str,
) -> Result<Variant, ComError> {
    // DISPPARAMS wants the arguments in reverse order.
    let mut raw: Vec<VARIANT> = args
        .into_iter()
        .rev()
        .map(|v| {
            let v = ManuallyDrop::new(v);
            // SAFETY: moving the VARIANT out of a wrapper whose destructor will not run.
            unsafe { std::ptr::read(&v.0) }
        })
        .collect();
    let params = DISPPARAMS {
        rgvarg: if raw.is_empty() {
            std::ptr::null_mut()
        } else {
            raw.as_mut_ptr()
        },
        rgdispidNamedArgs: std::ptr::null_mut(),
        cArgs: raw.len() as u32,
        cNamedArgs: 0,
    };
    let mut result = Variant::empty();
    let mut excep = EXCEPINFO::default();
    let mut arg_err = 0u32;
    // SAFETY: `params` points at `raw`, which lives until after the call; the out pointers
    // are valid locals; IID_NULL and LCID 0 as the contract requires.
    let outcome = unsafe {
        object.Invoke(
            id,
            &GUID::zeroed(),
            0,
            flags,
            &params,
            Some(&mut result.0),
            Some(&mut excep),
            Some(&mut arg_err),
        )
    };
    for mut v in raw {
        // SAFETY: each argument VARIANT is owned here and cleared once.
        unsafe {
            let _ = VariantClear(&mut v);
        }
    }
    // SAFETY: the BSTRs of EXCEPINFO are ours to free (null ones are fine).
    let scode = unsafe {
        let scode = excep.scode;
        ManuallyDrop::drop(&mut excep.bstrSource);
        ManuallyDrop::drop(&mut excep.bstrDescription);
        ManuallyDrop::drop(&mut excep.bstrHelpFile);
        scode
    };
    match outcome {
        Ok(()) => Ok(result),
        Err(e) if e.code().0 as u32 == hr::DISP_E_EXCEPTION && scode != 0 => Err(ComError {
            hresult: scode as u32,
            what: what.to_owned(),
        }),
        Err(e) => Err(ComError::new(&e, what)),
    }
}

/// Reads a property.
pub fn get(object: &IDispatch, id: i32, what: &str) -> Result<Variant, ComError> {
    invoke(object, id, DISPATCH_PROPERTYGET, Vec::new(), what)
}

/// Calls a method.
pub fn call(
    object: &IDispatch,
    id: i32,
    args: Vec<Variant>,
    what: &str,
) -> Result<Variant, ComError> {
    invoke(object, id, DISPATCH_METHOD, args, what)
}

/// The DISPID of a member, by name (for the Office API, whose DISPIDs imstatus does not hard
/// code: the client's own type information answers).
pub fn dispid_of(object: &IDispatch, name: &str) -> Result<i32, ComError> {
    let name_w = HSTRING::from(name);
    let names = [PCWSTR(name_w.as_ptr())];
    let mut id = 0i32;
    // SAFETY: one name, one out DISPID; both live across the call.
    unsafe { object.GetIDsOfNames(&GUID::zeroed(), names.as_ptr(), 1, 0, &mut id) }
        .map_err(|e| ComError::new(&e, format!("GetIDsOfNames({name})")))?;
    Ok(id)
}

/// A cheap call that goes to the server: fails with an RPC error once its process is gone.
pub fn ping(object: &IDispatch) -> Result<(), ComError> {
    // SAFETY: a plain call on a live proxy.
    unsafe { object.GetTypeInfoCount() }
        .map(|_| ())
        .map_err(|e| ComError::new(&e, "GetTypeInfoCount"))
}

/// `IConnectionPointContainer::FindConnectionPoint(DIID_DMessengerEvents)->Advise(sink)`.
/// Returns the connection point and cookie, for `Unadvise`.
pub fn advise(
    messenger: &IDispatch,
    sink: &IUnknown,
) -> Result<(windows::Win32::System::Com::IConnectionPoint, u32), ComError> {
    let container: IConnectionPointContainer = messenger
        .cast()
        .map_err(|e| ComError::new(&e, "Messenger as IConnectionPointContainer"))?;
    // SAFETY: plain calls on live interfaces; the IID outlives the call.
    let point = unsafe { container.FindConnectionPoint(&DIID_DMESSENGER_EVENTS) }
        .map_err(|e| ComError::new(&e, "FindConnectionPoint(DMessengerEvents)"))?;
    // SAFETY: as above; the connection point keeps its own reference to the sink.
    let cookie =
        unsafe { point.Advise(sink) }.map_err(|e| ComError::new(&e, "Advise(DMessengerEvents)"))?;
    Ok((point, cookie))
}

/// What the client told the sink, queued for the worker loop (which makes any follow-up
/// calls outside the callback, so the client is never re-entered while it fires).
pub enum SinkEvent {
    /// `OnSignin(hr)`.
    Signin(u32),
    /// `OnSignout()`.
    Signout,
    /// `OnMyStatusChange(hr, mMyStatus)`.
    MyStatusChange(u32, u32),
    /// `OnAppShutdown()`.
    AppShutdown,
    /// `OnContactStatusChange(pMContact, mStatus)`.
    ContactStatusChange(Option<IDispatch>, u32),
}

/// The `DMessengerEvents` dispinterface: an `IDispatch` under its own IID, so that a client
/// that asks the sink for `DIID_DMessengerEvents` (rather than `IDispatch`) gets it too.
#[interface("C9A6A6B6-9BC1-43A5-B06B-E58874EEBC96")]
pub unsafe trait DMessengerEvents: IDispatch {}

/// The event sink handed to `Advise`. Lives on the worker's STA thread; COM delivers the
/// client's events to it through the thread's message loop.
#[implement(DMessengerEvents, IDispatch)]
pub struct EventSink {
    queue: Rc<RefCell<VecDeque<SinkEvent>>>,
}

impl EventSink {
    /// A sink that queues into `queue`.
    pub fn new_unknown(queue: Rc<RefCell<VecDeque<SinkEvent>>>) -> IUnknown {
        EventSink { queue }.into()
    }
}

impl DMessengerEvents_Impl for EventSink_Impl {}

impl IDispatch_Impl for EventSink_Impl {
    fn GetTypeInfoCount(&self) -> windows::core::Result<u32> {
        Ok(0)
    }

    fn GetTypeInfo(&self, _itinfo: u32, _lcid: u32) -> windows::core::Result<ITypeInfo> {
        Err(windows::Win32::Foundation::E_NOTIMPL.into())
    }

    fn GetIDsOfNames(
        &self,
        _riid: *const GUID,
        _names: *const PCWSTR,
        _count: u32,
        _lcid: u32,
        _ids: *mut i32,
    ) -> windows::core::Result<()> {
        Err(windows::Win32::Foundation::E_NOTIMPL.into())
    }

    fn Invoke(
        &self,
        id: i32,
        _riid: *const GUID,
        _lcid: u32,
        _flags: DISPATCH_FLAGS,
        params: *const DISPPARAMS,
        _result: *mut VARIANT,
        _excep: *mut EXCEPINFO,
        _arg_err: *mut u32,
    ) -> windows::core::Result<()> {
        // SAFETY: COM hands us a valid DISPPARAMS (or null) for the duration of the call.
        let args: &[VARIANT] = unsafe {
            match params.as_ref() {
                Some(p) if !p.rgvarg.is_null() && p.cArgs > 0 => {
                    std::slice::from_raw_parts(p.rgvarg, p.cArgs as usize)
                }
                _ => &[],
            }
        };
        // Arguments arrive in reverse order: the first parameter is last.
        let arg = |n: usize| args.len().checked_sub(n + 1).map(|i| &args[i]);
        let int = |n: usize| arg(n).and_then(variant_i32).unwrap_or(0) as u32;
        let event = match id {
            dispid::ON_SIGNIN => SinkEvent::Signin(int(0)),
            dispid::ON_SIGNOUT => SinkEvent::Signout,
            dispid::ON_MY_STATUS_CHANGE => SinkEvent::MyStatusChange(int(0), int(1)),
            dispid::ON_APP_SHUTDOWN => SinkEvent::AppShutdown,
            dispid::ON_CONTACT_STATUS_CHANGE => {
                SinkEvent::ContactStatusChange(arg(0).and_then(variant_dispatch), int(1))
            }
            // Every other DMessengerEvents member is accepted and ignored.
            _ => return Ok(()),
        };
        self.queue.borrow_mut().push_back(event);
        Ok(())
    }
}
