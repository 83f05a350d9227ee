//! A manual-reset Win32 event: how the async side tells the STA worker to stop.

use windows::core::PCWSTR;
use windows::Win32::Foundation::{CloseHandle, HANDLE};
use windows::Win32::System::Threading::{CreateEventW, SetEvent};

/// A manual-reset Win32 event, closed on drop; shared between the async side and the worker.
pub struct Event(HANDLE);

// SAFETY: an event handle may be used from any thread; `Event` only waits on, sets and closes
// it.
unsafe impl Send for Event {}
// SAFETY: as above; `SetEvent` and waits are thread-safe.
unsafe impl Sync for Event {}

impl Event {
    pub(crate) fn new() -> windows::core::Result<Event> {
        // SAFETY: plain event creation (manual reset, not signalled, unnamed).
        unsafe { CreateEventW(None, true, false, PCWSTR::null()) }.map(Event)
    }

    /// The handle, valid while `self` lives.
    pub fn handle(&self) -> HANDLE {
        self.0
    }

    pub(crate) fn set(&self) {
        // SAFETY: our open event handle.
        unsafe {
            let _ = SetEvent(self.0);
        }
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: created in `Event::new`, closed exactly once.
        unsafe {
            let _ = CloseHandle(self.0);
        }
    }
}
