//! `imstatus serve --role …` as a child process (the cluster tests, the demo and the cluster
//! benchmarks start several), and the plain HTTP GET they poll a gateway with.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{Error, Result};

/// A running `imstatus --config <config> serve --role <role>` whose stderr goes to a log file;
/// killed (after a SIGCONT, so that a stopped one dies too) and reaped when dropped.
#[derive(Debug)]
pub struct ServeProcess {
    child: Child,
    log: PathBuf,
}

impl ServeProcess {
    /// Starts the `imstatus` binary at `imstatus` (no `IMSTATUS_CONFIG`, no user config
    /// directory, `RUST_LOG=imstatus_cluster=info,warn`), logging to `log`.
    pub fn start(imstatus: &Path, config: &Path, role: &str, log: PathBuf) -> Result<ServeProcess> {
        let out = std::fs::File::create(&log)
            .map_err(|e| Error::io(format!("creating {}", log.display()), e))?;
        let child = Command::new(imstatus)
            .env_remove("IMSTATUS_CONFIG")
            .env("XDG_CONFIG_HOME", "/nonexistent-imstatus-test")
            .env("RUST_LOG", "imstatus_cluster=info,warn")
            .arg("--config")
            .arg(config)
            .args(["serve", "--role", role])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .map_err(|e| Error::io(format!("starting {}", imstatus.display()), e))?;
        Ok(ServeProcess { child, log })
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends it `signal` (`SIGKILL`, `SIGSTOP`, `SIGCONT`, …).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        kill(pid, signal).map_err(|e| Error::io(format!("{signal} to {pid}"), e.into()))
    }

    /// Kills it (`SIGKILL`) and reaps it; does nothing when it is gone already.
    pub fn kill(&mut self) {
        let _ = self.signal(Signal::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of `GET path` on 127.0.0.1:`port` (HTTP/1.0, at most 1 MiB, 5 s to answer);
/// `None` while nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_owned())
}
