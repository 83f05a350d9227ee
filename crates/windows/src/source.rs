//! [`WindowsSource`]: the async face of the STA worker, and `doctor`.

use std::sync::Arc;

use crate::config::WindowsConfig;
use imstatus_core::{ErrorCode, Observation, SourceKind};
use imstatus_hub::{BoxFuture, Check, Sink, Source};
use windows::Win32::System::Com::{CoInitializeEx, CoUninitialize, COINIT_APARTMENTTHREADED};

use crate::com;
use crate::event::Event;
use crate::ids::{dispid, CLSID_MESSENGER};
use crate::registry::{RegState, IM_PROVIDERS};
use crate::translate::{self, Failure, MyStatus};
use crate::worker::{self, Settings};

/// Watches one Windows IM client: the `IM Providers` registry key for the client axis, the
/// client's COM object (Messenger API, or `IUCOfficeIntegration`) for session and status.
pub struct WindowsSource {
    config: WindowsConfig,
}

impl WindowsSource {
    /// A source for the account's settings.
    pub fn new(config: &WindowsConfig) -> Self {
        WindowsSource {
            config: config.clone(),
        }
    }
}

/// Stops the worker when `run`'s future is dropped.
struct StopOnDrop(Arc<Event>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.set();
    }
}

impl Source for WindowsSource {
    fn kind(&self) -> SourceKind {
        crate::KIND
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let stop = match Event::new() {
                Ok(e) => Arc::new(e),
                Err(e) => {
                    sink.observe(Observation::SourceDown(
                        ErrorCode::ProtocolError,
                        format!("CreateEvent: {e}"),
                    ));
                    return std::future::pending().await;
                }
            };
            let _stop = StopOnDrop(stop.clone());
            let settings = Settings {
                app: self.config.app.clone(),
                contacts: self.config.contacts,
            };
            let spawned = std::thread::Builder::new()
                .name("imstatus-windows-sta".into())
                .spawn(move || worker::run(settings, tx, stop));
            if let Err(e) = spawned {
                sink.observe(Observation::SourceDown(
                    ErrorCode::ProtocolError,
                    format!("starting the COM thread: {e}"),
                ));
                return std::future::pending().await;
            }
            while let Some(batch) = rx.recv().await {
                sink.observe_all(batch);
            }
            sink.observe(Observation::SourceDown(
                ErrorCode::ProtocolError,
                "the COM thread ended".into(),
            ));
            std::future::pending().await
        })
    }
}

/// `imstatus doctor` for a Windows account: the registry key, `UpAndRunning`, the COM class,
/// and one call.
pub async fn doctor(config: &WindowsConfig) -> Vec<Check> {
    let app = config.app.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("imstatus-windows-doctor".into())
        .spawn(move || {
            let _ = tx.send(doctor_blocking(app.as_deref()));
        });
    if let Err(e) = spawned {
        return vec![Check::fail(
            "com",
            format!("starting a thread: {e}"),
            "retry",
        )];
    }
    rx.await
        .unwrap_or_else(|_| vec![Check::fail("com", "the doctor thread failed", "retry")])
}

fn doctor_blocking(app: Option<&str>) -> Vec<Check> {
    let mut checks = Vec::new();
    let reg = RegState::read(app);
    let Some(name) = reg.app.clone() else {
        checks.push(Check::fail(
            "registry",
            format!(r"HKCU\{IM_PROVIDERS}\DefaultIMApp is not set and the config names no `app`"),
            "install or start an IM client that registers itself (Communicator, Lync, Skype for Business, Teams), or set `app`",
        ));
        return checks;
    };
    checks.push(Check::pass("registry", format!("client `{name}`")));
    match reg.up_and_running {
        Some(2) => checks.push(Check::pass("client", "UpAndRunning = 2 (running)")),
        Some(v) => {
            checks.push(Check::fail(
                "client",
                format!(r"HKCU\{IM_PROVIDERS}\{name}\UpAndRunning = {v}"),
                ErrorCode::ClientNotRunning.hint(),
            ));
            return checks;
        }
        None => {
            checks.push(Check::fail(
                "client",
                format!(r"HKCU\{IM_PROVIDERS}\{name}\UpAndRunning is missing: client_not_running (0x80040111)"),
                translate::hint(0x8004_0111),
            ));
            return checks;
        }
    }
    let clsid = reg.clsid.unwrap_or(CLSID_MESSENGER);
    // SAFETY: this thread is ours; paired with CoUninitialize below.
    let init = unsafe { CoInitializeEx(None, COINIT_APARTMENTTHREADED) };
    if init.is_err() {
        checks.push(Check::fail(
            "com",
            format!(
                "CoInitializeEx: {}",
                translate::describe_hresult(init.0 as u32)
            ),
            "retry",
        ));
        return checks;
    }
    let result = com::create(&clsid).and_then(|o| com::api_of(&o));
    match result {
        Err(e) => {
            let code = match translate::classify(e.hresult) {
                Failure::NotRunning | Failure::ServerDied => ErrorCode::ClientNotRunning,
                Failure::NotSignedIn => ErrorCode::NotSignedIn,
                Failure::Other(code) => code,
            };
            checks.push(Check::fail(
                "com",
                format!("{code} ({:#010x}): {e}", code.hresult()),
                translate::hint(e.hresult),
            ));
        }
        Ok(com::Api::Office(_)) => checks.push(Check::pass(
            "com",
            format!("{clsid:?} offers IUCOfficeIntegration"),
        )),
        Ok(com::Api::Messenger(object)) => {
            checks.push(Check::pass("com", format!("{clsid:?} (Messenger API)")));
            match com::get(&object, dispid::MY_STATUS, "IMessenger.MyStatus") {
                Ok(v) => {
                    let s = v.as_i32().unwrap_or(0) as u32;
                    match translate::my_status(s) {
                        MyStatus::SignedIn(_) => checks.push(Check::pass(
                            "session",
                            format!("MyStatus = {s:#05x}: signed in"),
                        )),
                        _ => checks.push(Check::fail(
                            "session",
                            format!("MyStatus = {s:#05x}: not signed in"),
                            ErrorCode::NotSignedIn.hint(),
                        )),
                    }
                }
                Err(e) => checks.push(Check::fail(
                    "session",
                    e.to_string(),
                    translate::hint(e.hresult),
                )),
            }
        }
    }
    // SAFETY: pairs the successful CoInitializeEx; the objects above are dropped.
    unsafe { CoUninitialize() };
    checks
}
