//! The source's STA thread: registry watch, COM attach, event sink, all on one thread.
//!
//! # Why a single-threaded apartment
//!
//! The Messenger object is an out-of-process server, so every call is marshaled anyway and the
//! apartment only decides where *our* side runs. In an STA the event sink's `Invoke` runs on
//! this very thread, delivered through its message loop, one call at a time and in the order
//! the client fired them; the loop also waits on the registry events, so registry changes,
//! COM events and liveness probes are handled strictly one after another without a lock, and
//! every COM object stays on the thread that created it (no cross-apartment marshaling of our
//! own proxies). An MTA would deliver events on arbitrary RPC threads, concurrently with our
//! own calls, and need locking to keep the observations in order. The price of the STA is the
//! message loop, which `MsgWaitForMultipleObjectsEx` gives us for free together with the waits.
//!
//! Observations leave the thread in batches over a tokio channel; the async `run` forwards them
//! to the hub's sink. Dropping `run`'s future sets the stop event and the thread ends.
//!
//! # Server death
//!
//! COM does not tell a client that the server process died. While attached, the loop calls
//! the cheap `IDispatch::GetTypeInfoCount` every [`PROBE`]; an RPC failure (`0x800706BA`,
//! `0x80010108`, …) there or in any other call means the client is gone: `ClientVanished`,
//! which the tracker turns into `signed_out {client_exited}` before `client_shutdown`.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_core::{ContactId, ErrorCode, Observation, PartId, SignOutReason};
use tokio::sync::mpsc::UnboundedSender;
use windows::Win32::Foundation::WAIT_OBJECT_0;
use windows::Win32::System::Com::{
    CoInitializeEx, CoUninitialize, IConnectionPoint, IDispatch, COINIT_APARTMENTTHREADED,
};
use windows::Win32::UI::WindowsAndMessaging::{
    DispatchMessageW, MsgWaitForMultipleObjectsEx, PeekMessageW, TranslateMessage, MSG,
    MWMO_INPUTAVAILABLE, PM_REMOVE, QS_ALLINPUT,
};
use windows_core::IUnknown;

use crate::com::{self, Api, ComError, EventSink, SinkEvent, Variant};
use crate::event::Event;
use crate::ids::{dispid, CLSID_MESSENGER, OFFICE_VERSION, OI_INTERFACE_ILYNC_CLIENT};
use crate::registry::{RegState, RegistryWatch};
use crate::translate::{self, Failure, MyStatus};

/// How often an attached client is probed for liveness (and, on the Office path, re-read).
pub const PROBE: Duration = Duration::from_millis(500);
/// Attach retries after a failure while the registry says "running": 250 ms doubling, this
/// many times; then nothing until the registry changes again.
const RETRIES: u32 = 6;

/// The worker's settings.
pub struct Settings {
    /// The configured `app`, if any.
    pub app: Option<String>,
    /// Track contacts (`OnContactStatusChange`).
    pub contacts: bool,
}

enum Attached {
    Messenger {
        object: IDispatch,
        advised: Option<(IConnectionPoint, u32)>,
        _sink: IUnknown,
    },
    Office {
        client: IDispatch,
        state_id: i32,
        last: Option<i32>,
    },
}

struct Worker {
    settings: Settings,
    out: UnboundedSender<Vec<Observation>>,
    reg: Option<RegState>,
    attached: Option<Attached>,
    /// After a death or `OnAppShutdown`: no re-attach until the app key is written again.
    blocked: Option<Option<u64>>,
    retry: Option<(Instant, u32)>,
    /// When the attached client is probed next.
    next_probe: Instant,
    /// The last attach failure reported (kind and HRESULT): a retry failing the same way
    /// reports nothing new.
    last_failure: Option<u32>,
    queue: Rc<RefCell<VecDeque<SinkEvent>>>,
    part: Option<PartId>,
    batch: Vec<Observation>,
}

/// Runs the worker until `stop` is set. COM is initialised here (STA) and uninitialised on
/// the way out.
pub fn run(settings: Settings, out: UnboundedSender<Vec<Observation>>, stop: Arc<Event>) {
    // SAFETY: first COM call on this fresh thread; paired with CoUninitialize below.
    let init = unsafe { CoInitializeEx(None, COINIT_APARTMENTTHREADED) };
    if init.is_err() {
        let _ = out.send(vec![Observation::SourceDown(
            ErrorCode::ProtocolError,
            format!(
                "CoInitializeEx(STA): {}",
                translate::describe_hresult(init.0 as u32)
            ),
        )]);
        return;
    }
    let mut worker = Worker {
        settings,
        out,
        reg: None,
        attached: None,
        blocked: None,
        retry: None,
        next_probe: Instant::now(),
        last_failure: None,
        queue: Rc::new(RefCell::new(VecDeque::new())),
        part: None,
        batch: Vec::new(),
    };
    let mut watch = RegistryWatch::new();
    worker.on_registry();
    worker.flush();
    loop {
        let mut handles = vec![stop.handle()];
        handles.extend(watch.handles());
        let timeout = worker.timeout();
        // SAFETY: all handles are open events owned by `stop` and `watch`, which outlive the
        // wait; the wait also returns when a message (an incoming COM call) is queued.
        let woke = unsafe {
            MsgWaitForMultipleObjectsEx(Some(&handles), timeout, QS_ALLINPUT, MWMO_INPUTAVAILABLE)
        };
        if woke == WAIT_OBJECT_0 {
            break;
        }
        worker.pump();
        worker.drain();
        let index = woke.0.wrapping_sub(WAIT_OBJECT_0.0) as usize;
        if index >= 1 && index < handles.len() {
            watch.rearm();
            worker.on_registry();
        }
        // Deadlines are checked after every wake-up, so a busy registry or message queue
        // never starves the liveness probe or a retry.
        worker.on_deadlines();
        worker.drain();
        worker.flush();
    }
    worker.detach(true);
    drop(worker);
    // SAFETY: pairs the successful CoInitializeEx above; every COM object is released.
    unsafe { CoUninitialize() };
}

impl Worker {
    fn timeout(&self) -> u32 {
        let next = [
            self.attached.as_ref().map(|_| self.next_probe),
            self.retry.map(|(at, _)| at),
        ]
        .into_iter()
        .flatten()
        .min();
        next.map_or(u32::MAX, |at| {
            let left = at.saturating_duration_since(Instant::now());
            left.as_millis().min(u128::from(u32::MAX - 1)) as u32
        })
    }

    fn on_deadlines(&mut self) {
        let now = Instant::now();
        if let Some((at, attempt)) = self.retry {
            if now >= at && self.attached.is_none() {
                self.retry = None;
                self.attach(attempt + 1);
                return;
            }
        }
        if self.attached.is_some() && now >= self.next_probe {
            self.probe();
        }
    }

    /// Dispatches the thread's queued messages: incoming COM calls run the sink here.
    fn pump(&mut self) {
        let mut msg = MSG::default();
        // SAFETY: standard message loop on this thread's queue with a valid MSG buffer.
        unsafe {
            while PeekMessageW(&mut msg, None, 0, 0, PM_REMOVE).as_bool() {
                let _ = TranslateMessage(&msg);
                DispatchMessageW(&msg);
            }
        }
    }

    fn flush(&mut self) {
        if !self.batch.is_empty() {
            let batch = std::mem::take(&mut self.batch);
            tracing::debug!(?batch, "windows observations");
            let _ = self.out.send(batch);
        }
    }

    fn emit(&mut self, o: Observation) {
        self.batch.push(o);
    }

    fn app(&self) -> String {
        self.reg
            .as_ref()
            .and_then(|r| r.app.clone())
            .unwrap_or_else(|| "client".to_owned())
    }

    // ---- registry -------------------------------------------------------------------------

    fn on_registry(&mut self) {
        let now = RegState::read(self.settings.app.as_deref());
        if self.reg.as_ref() == Some(&now) {
            return;
        }
        let prev = self.reg.replace(now.clone());
        self.retry = None;
        self.last_failure = None;
        if prev
            .as_ref()
            .is_some_and(|p| p.app != now.app || p.clsid != now.clsid)
            && self.attached.is_some()
        {
            // Another client now: forget the old one.
            self.detach(false);
            self.emit(Observation::ClientVanished);
        }
        match now.up_and_running {
            None | Some(0) => {
                if self.attached.is_some() {
                    self.detach(false);
                }
                self.blocked = None;
                self.part = None;
                self.emit(Observation::ClientVanished);
                self.emit(Observation::Synced);
            }
            Some(1) => {
                if self.attached.is_none() {
                    self.blocked = None;
                    self.emit(Observation::ClientStarting);
                    self.emit(Observation::Synced);
                }
            }
            Some(_) => {
                if self.attached.is_some() {
                    return;
                }
                if self.blocked == Some(now.written) {
                    // The value stayed 2 after the client died or said goodbye; wait for the
                    // client to write it again.
                    return;
                }
                self.blocked = None;
                self.attach(0);
            }
        }
    }

    /// Checks that the attached client is alive (and, on the Office path, re-reads its state).
    fn probe(&mut self) {
        self.next_probe = Instant::now() + PROBE;
        match &mut self.attached {
            Some(Attached::Messenger { object, .. }) => {
                if let Err(e) = com::ping(object) {
                    self.failed(e);
                }
            }
            Some(Attached::Office {
                client,
                state_id,
                last,
            }) => {
                let client = client.clone();
                let id = *state_id;
                let previous = *last;
                match com::get(&client, id, "ILyncClient.State") {
                    Ok(v) => {
                        let state = v.as_i32().unwrap_or(0);
                        if previous != Some(state) {
                            if let Some(Attached::Office { last, .. }) = &mut self.attached {
                                *last = Some(state);
                            }
                            self.apply(translate::client_state(state));
                        }
                    }
                    Err(e) => self.failed(e),
                }
            }
            None => {}
        }
    }

    // ---- COM ------------------------------------------------------------------------------

    fn attach(&mut self, attempt: u32) {
        let clsid = self
            .reg
            .as_ref()
            .and_then(|r| r.clsid)
            .unwrap_or(CLSID_MESSENGER);
        let result = com::create(&clsid).and_then(|object| {
            let api = com::api_of(&object)?;
            Ok(api)
        });
        let api = match result {
            Ok(api) => api,
            Err(e) => {
                self.attach_failed(e, attempt);
                return;
            }
        };
        self.last_failure = None;
        match api {
            Api::Messenger(object) => {
                let sink = EventSink::new_unknown(self.queue.clone());
                let advised = match com::advise(&object, &sink) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        self.emit(Observation::Anomaly(
                            ErrorCode::ProtocolError,
                            format!("no events from the client, {e}"),
                        ));
                        None
                    }
                };
                self.next_probe = Instant::now() + PROBE;
                self.attached = Some(Attached::Messenger {
                    object,
                    advised,
                    _sink: sink,
                });
                self.emit(Observation::ClientAppeared);
                self.read_my_status();
            }
            Api::Office(office) => {
                let client = com::dispid_of(&office, "GetInterface").and_then(|id| {
                    com::call(
                        &office,
                        id,
                        vec![
                            Variant::bstr(OFFICE_VERSION),
                            Variant::i4(OI_INTERFACE_ILYNC_CLIENT),
                        ],
                        "IUCOfficeIntegration.GetInterface(oiInterfaceILyncClient)",
                    )
                });
                let client = match client.map(|v| v.as_dispatch()) {
                    Ok(Some(client)) => client,
                    Ok(None) => {
                        self.emit(Observation::ClientAppeared);
                        self.emit(Observation::SourceDown(
                            ErrorCode::Unsupported,
                            "IUCOfficeIntegration.GetInterface returned no ILyncClient".into(),
                        ));
                        return;
                    }
                    Err(e) => {
                        self.attach_failed(e, attempt);
                        return;
                    }
                };
                let state_id = match com::dispid_of(&client, "State") {
                    Ok(id) => id,
                    Err(e) => {
                        self.attach_failed(e, attempt);
                        return;
                    }
                };
                self.attached = Some(Attached::Office {
                    client,
                    state_id,
                    last: None,
                });
                self.emit(Observation::ClientAppeared);
                self.probe();
            }
        }
        self.emit(Observation::Synced);
    }

    fn attach_failed(&mut self, e: ComError, attempt: u32) {
        let detail = format!("{e}; hint: {}", translate::hint(e.hresult));
        let repeat = self.last_failure == Some(e.hresult);
        self.last_failure = Some(e.hresult);
        if attempt < RETRIES {
            let delay = Duration::from_millis(250u64 << attempt.min(10));
            self.retry = Some((Instant::now() + delay, attempt));
        }
        if repeat {
            return;
        }
        match translate::classify(e.hresult) {
            Failure::NotRunning | Failure::ServerDied => {
                // The registry says running, but no client answers: a stale `UpAndRunning`.
                self.part = None;
                self.emit(Observation::ClientVanished);
                self.emit(Observation::Anomaly(ErrorCode::ClientNotRunning, detail));
                self.emit(Observation::Synced);
            }
            Failure::NotSignedIn => {
                self.emit(Observation::ClientAppeared);
                self.emit(Observation::SourceDown(ErrorCode::NotSignedIn, detail));
            }
            Failure::Other(code) => {
                self.emit(Observation::ClientAppeared);
                self.emit(Observation::SourceDown(code, detail));
            }
        }
    }

    /// A call on the attached client failed.
    fn failed(&mut self, e: ComError) {
        match translate::classify(e.hresult) {
            Failure::ServerDied | Failure::NotRunning => self.died(),
            Failure::NotSignedIn => self.signed_out(SignOutReason::User),
            Failure::Other(code) => self.emit(Observation::Anomaly(code, e.to_string())),
        }
    }

    /// The client's process went away without `OnAppShutdown`.
    fn died(&mut self) {
        self.detach(false);
        self.blocked = Some(self.reg.as_ref().and_then(|r| r.written));
        self.part = None;
        // The tracker signs every part off (`client_exited`) before `client_shutdown`.
        self.emit(Observation::ClientVanished);
    }

    /// Releases the client's objects; `unadvise` only when the client is alive.
    fn detach(&mut self, unadvise: bool) {
        if let Some(Attached::Messenger {
            advised: Some((point, cookie)),
            ..
        }) = &self.attached
        {
            if unadvise {
                // SAFETY: a plain call on a live proxy with the cookie Advise gave us.
                let _ = unsafe { point.Unadvise(*cookie) };
            }
        }
        self.attached = None;
        self.queue.borrow_mut().clear();
    }

    fn messenger(&self) -> Option<IDispatch> {
        match &self.attached {
            Some(Attached::Messenger { object, .. }) => Some(object.clone()),
            _ => None,
        }
    }

    fn read_my_status(&mut self) {
        let Some(object) = self.messenger() else {
            return;
        };
        match com::get(&object, dispid::MY_STATUS, "IMessenger.MyStatus") {
            Ok(v) => {
                let status = v.as_i32().unwrap_or(0) as u32;
                self.apply(translate::my_status(status));
            }
            Err(e) => self.failed(e),
        }
    }

    /// The part the session is reported under: the sign-in name once known, else the app.
    fn part_for(&mut self, signed_in: bool) -> PartId {
        if signed_in {
            if let Some(object) = self.messenger() {
                if let Ok(name) = com::get(&object, dispid::MY_SIGNIN_NAME, "MySigninName") {
                    if let Some(name) = name.as_string().filter(|n| !n.is_empty()) {
                        return PartId::new(name);
                    }
                }
            }
        }
        self.part.clone().unwrap_or_else(|| PartId::new(self.app()))
    }

    fn apply(&mut self, status: MyStatus) {
        match status {
            MyStatus::SignedIn(status) => {
                let part = match &self.part {
                    Some(p) if p.as_str() != self.app() => p.clone(),
                    _ => self.part_for(true),
                };
                self.emit(Observation::presence(part.clone(), status));
                if let Some(old) = self.part.replace(part.clone()) {
                    if old != part {
                        self.emit(Observation::Absent(old, SignOutReason::User));
                    }
                }
            }
            MyStatus::SigningIn => {
                let part = self.part_for(false);
                self.part = Some(part.clone());
                self.emit(Observation::Connecting(part));
            }
            MyStatus::SigningOut => {
                let part = self.part_for(false);
                self.part = Some(part.clone());
                self.emit(Observation::SigningOff(part));
            }
            MyStatus::SignedOut => self.signed_out(SignOutReason::User),
        }
    }

    fn signed_out(&mut self, reason: SignOutReason) {
        if let Some(part) = self.part.take() {
            self.emit(Observation::Absent(part, reason));
        }
    }

    // ---- events ---------------------------------------------------------------------------

    fn drain(&mut self) {
        loop {
            let next = self.queue.borrow_mut().pop_front();
            let Some(event) = next else { break };
            if self.attached.is_none() {
                continue;
            }
            self.on_event(event);
        }
    }

    fn on_event(&mut self, event: SinkEvent) {
        match event {
            SinkEvent::Signin(0) => self.read_my_status(),
            SinkEvent::Signin(code) => {
                let part = self.part_for(false);
                self.part = Some(part.clone());
                self.emit(Observation::SignOnFailed(
                    part.clone(),
                    translate::sign_in_error(code),
                ));
                // Signed out means no part, as after `OnSignout`.
                self.part = None;
                self.emit(Observation::Absent(part, SignOutReason::User));
            }
            SinkEvent::Signout => self.signed_out(SignOutReason::User),
            SinkEvent::MyStatusChange(0, status) => self.apply(translate::my_status(status)),
            SinkEvent::MyStatusChange(code, _) => self.emit(Observation::Anomaly(
                translate::sign_in_error(code),
                format!(
                    "OnMyStatusChange failed: {}",
                    translate::describe_hresult(code)
                ),
            )),
            SinkEvent::AppShutdown => {
                // The SDK's rule: release everything on OnAppShutdown. Sign-offs from here on
                // are the user's doing (`ClientQuitting`), not a crash.
                self.detach(false);
                self.blocked = Some(self.reg.as_ref().and_then(|r| r.written));
                self.part = None;
                self.emit(Observation::ClientQuitting);
                self.emit(Observation::ClientVanished);
            }
            SinkEvent::ContactStatusChange(contact, status) => {
                if !self.settings.contacts {
                    return;
                }
                let Some(contact) = contact else { return };
                match com::get(&contact, dispid::CONTACT_SIGNIN_NAME, "SigninName") {
                    Ok(name) => {
                        if let Some(name) = name.as_string() {
                            self.emit(Observation::Contact(
                                ContactId::new(name),
                                translate::contact_status(status),
                            ));
                        }
                    }
                    Err(e) => self.failed(e),
                }
            }
        }
    }
}
