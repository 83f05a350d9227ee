//! How a command learns it should stop: Ctrl-C, SIGTERM (on Windows the console's close,
//! logoff and shutdown events), or stdout's reader going away; and how a write failure that
//! means "the reader has gone" is told from a real one.

use std::io;

/// Resolves on Ctrl-C or SIGTERM, or when stdout's reader goes away.
///
/// On Windows: on Ctrl-C or Ctrl-Break, or when the console window is closed, the user logs
/// off or the system shuts down (`CTRL_CLOSE_EVENT` & co.; Windows ends the process a few
/// seconds after those, so the drain must be quick). A closed stdout is noticed by the next
/// write failing (`ERROR_NO_DATA`, a broken pipe, which `watch` treats as the end).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
            () = stdout_closed() => {}
        }
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows;
        // A listener that cannot be installed (no console, e.g. under a service manager) just
        // never fires.
        macro_rules! on {
            ($listener:expr) => {
                async {
                    match $listener {
                        Ok(mut s) => {
                            s.recv().await;
                        }
                        Err(_) => std::future::pending::<()>().await,
                    }
                }
            };
        }
        tokio::select! {
            () = on!(windows::ctrl_c()) => {}
            () = on!(windows::ctrl_break()) => {}
            () = on!(windows::ctrl_close()) => {}
            () = on!(windows::ctrl_logoff()) => {}
            () = on!(windows::ctrl_shutdown()) => {}
        }
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Resolves when stdout is a pipe whose reader has gone (POLLERR/POLLHUP), so that
/// `imstatus watch | head -1` ends even if no further event comes.
#[cfg(unix)]
async fn stdout_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let stdout = io::stdout();
        loop {
            let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {
                    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
                    if revents.intersects(PollFlags::POLLERR | PollFlags::POLLHUP) {
                        let _ = tx.send(());
                        return;
                    }
                    if revents.contains(PollFlags::POLLNVAL) {
                        return;
                    }
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(_) => return,
            }
        }
    });
    if rx.await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Did a write fail because stdout's reader has gone (`imstatus watch | head -1`)? A broken
/// pipe; on Windows also `ERROR_PIPE_NOT_CONNECTED` (233), which is what wine reports there
/// (Windows itself says `ERROR_NO_DATA`, 232, which Rust already calls a broken pipe).
pub(crate) fn reader_gone(e: &io::Error) -> bool {
    const ERROR_BROKEN_PIPE: i32 = 109;
    const ERROR_NO_DATA: i32 = 232;
    const ERROR_PIPE_NOT_CONNECTED: i32 = 233;
    e.kind() == io::ErrorKind::BrokenPipe
        || (cfg!(windows)
            && matches!(
                e.raw_os_error(),
                Some(ERROR_BROKEN_PIPE | ERROR_NO_DATA | ERROR_PIPE_NOT_CONNECTED)
            ))
}
