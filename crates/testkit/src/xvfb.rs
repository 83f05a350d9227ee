//! A private X server (Xvfb) with MIT-SCREEN-SAVER and SYNC, and synthetic input through
//! `xdotool` (`docs/local-signals.md` §3).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{find_program, read_log, run, stop_child};
use crate::{try_wait_until, Error, Result};

/// How long Xvfb may take to print its display number (60-440 ms measured).
const START_DEADLINE: Duration = Duration::from_secs(20);
/// How long Xvfb gets after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Xvfb on a free display number (`-displayfd`), with `-noreset` (a server reset would reset
/// the idle time whenever the last client leaves) and no TCP. Runs as our child; dropping it
/// stops it.
#[derive(Debug)]
pub struct Xvfb {
    child: Option<Child>,
    display: String,
    xdotool: PathBuf,
    log: PathBuf,
    // Last, so that it is deleted after the server is stopped.
    _dir: TempDir,
}

impl Xvfb {
    /// Starts Xvfb and returns once it has printed its display number (it accepts clients by
    /// then).
    pub fn start() -> Result<Self> {
        let program = find_program("Xvfb", "xvfb")?;
        let xdotool = find_program("xdotool", "xdotool")?;
        let dir = tempfile::Builder::new()
            .prefix("imstatus-xvfb-")
            .tempdir()
            .map_err(|e| Error::io("creating the Xvfb temp dir", e))?;
        let display_file = dir.path().join("display");
        let log = dir.path().join("xvfb.log");
        let open = |p: &Path| {
            File::create(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))
        };
        // `-displayfd 1`: the display number goes to stdout, a file here.
        let mut child = Command::new(program)
            .args(["-displayfd", "1", "-noreset", "-nolisten", "tcp"])
            .args(["-screen", "0", "640x480x24"])
            .stdin(Stdio::null())
            .stdout(open(&display_file)?)
            .stderr(open(&log)?)
            .spawn()
            .map_err(|e| Error::io("spawning Xvfb", e))?;
        let waited = try_wait_until("Xvfb to print its display number", START_DEADLINE, || {
            if let Some(status) = child.try_wait().map_err(|e| Error::io("reaping Xvfb", e))? {
                return Err(Error::Exited {
                    what: "Xvfb".into(),
                    status: status.to_string(),
                    context: String::new(),
                });
            }
            let text = read_log(&display_file);
            Ok(text.ends_with('\n').then(|| format!(":{}", text.trim())))
        });
        let display = match waited {
            Ok(d) => d,
            Err(e) => {
                let _ = stop_child(&mut child, "Xvfb", TERM_GRACE);
                return Err(e.with_log("Xvfb's stderr", &read_log(&log)));
            }
        };
        Ok(Xvfb {
            child: Some(child),
            display,
            xdotool,
            log,
            _dir: dir,
        })
    }

    /// The display, `:N`, for `DISPLAY`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Xvfb's PID.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What Xvfb wrote to stderr.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Synthetic input (XTEST, through `xdotool mousemove`): resets the idle time to zero.
    pub fn input(&self) -> Result<()> {
        run(
            Command::new(&self.xdotool)
                .env("DISPLAY", &self.display)
                .args(["mousemove", "--sync", "10", "10", "mousemove", "20", "20"]),
            "xdotool mousemove",
        )
        .map(drop)
    }

    /// Stops Xvfb (SIGTERM, SIGKILL after 5 s); does nothing if stopped.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "Xvfb", TERM_GRACE)?;
        }
        Ok(())
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
