//! A job object holding one process tree, for `imstatus watch --exec` hooks: Windows has no
//! process groups to signal, and killing `cmd.exe` alone leaves what it started running.
//! Everything a process in the job starts joins the job, so terminating the job ends the whole
//! tree at once, even a process whose parent already exited. Closing the handle does not end
//! the processes (a background job a hook leaves behind lives on, as on Unix).

use std::os::windows::io::RawHandle;
use std::time::{Duration, Instant};

use windows::core::PCWSTR;
use windows::Win32::Foundation::{CloseHandle, HANDLE};
use windows::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectBasicAccountingInformation,
    QueryInformationJobObject, TerminateJobObject, JOBOBJECT_BASIC_ACCOUNTING_INFORMATION,
};

/// How long [`Job::terminate`] goes on ending processes that were still starting.
const TERMINATE_FOR: Duration = Duration::from_secs(1);
/// Between two rounds of [`Job::terminate`].
const TERMINATE_EVERY: Duration = Duration::from_millis(10);

/// An owned job handle with one process tree in it.
#[derive(Debug)]
pub struct Job(HANDLE);

// SAFETY: a job handle may be used and closed from any thread.
unsafe impl Send for Job {}
// SAFETY: the job functions called through `&Job` are thread-safe.
unsafe impl Sync for Job {}

impl Job {
    /// A new job with `process` in it: a live process's handle with PROCESS_SET_QUOTA and
    /// PROCESS_TERMINATE access, as the one `CreateProcess` returns (`Child::raw_handle`).
    pub fn holding(process: RawHandle) -> std::io::Result<Job> {
        // SAFETY: no security attributes and no name; the handle is owned by `Job` below.
        let handle = unsafe { CreateJobObjectW(None, PCWSTR::null()) }.map_err(io)?;
        let job = Job(handle);
        // SAFETY: `process` is a live child's handle, owned by its `Child` for this call.
        unsafe { AssignProcessToJobObject(job.0, HANDLE(process)) }.map_err(io)?;
        Ok(job)
    }

    /// Ends every process in the job, including one that a process of the job was starting at
    /// that moment: such a process has no thread yet and a termination passes it over (seen
    /// under wine: the child a hook's shell was starting as the hook was stopped outlived it).
    /// So the job is ended again every [`TERMINATE_EVERY`] until it counts no active process,
    /// for at most [`TERMINATE_FOR`]; this blocks the calling thread that long at most.
    pub fn terminate(self) {
        let deadline = Instant::now() + TERMINATE_FOR;
        loop {
            // SAFETY: a valid job handle. A failure (the job is already empty) leaves nothing
            // to do; the handle is closed on drop.
            let _ = unsafe { TerminateJobObject(self.0, 1) };
            if self.active_processes().is_none_or(|n| n == 0) || Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(TERMINATE_EVERY);
        }
    }

    /// The job's processes not yet ended, or `None` when the job cannot say.
    fn active_processes(&self) -> Option<u32> {
        let mut info = JOBOBJECT_BASIC_ACCOUNTING_INFORMATION::default();
        // SAFETY: a valid job handle; `info` is the structure this class fills, with its size.
        unsafe {
            QueryInformationJobObject(
                Some(self.0),
                JobObjectBasicAccountingInformation,
                std::ptr::from_mut(&mut info).cast(),
                u32::try_from(std::mem::size_of_val(&info)).ok()?,
                None,
            )
        }
        .ok()?;
        Some(info.ActiveProcesses)
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // SAFETY: the handle is ours and closed once.
        let _ = unsafe { CloseHandle(self.0) };
    }
}

fn io(e: windows::core::Error) -> std::io::Error {
    std::io::Error::from_raw_os_error(e.code().0 & 0xFFFF)
}
