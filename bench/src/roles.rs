//! `imstatus serve --role …` as child processes, for the cluster drivers
//! (`cluster_takeover`, `cluster_fanout`), and the HTTP GET they poll them with.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::OrFail;

/// A running `imstatus serve --role <role>`, killed on drop; its stderr goes to a log file.
pub struct Role {
    /// The process.
    pub child: Child,
    log: PathBuf,
}

impl Role {
    /// Starts `imstatus --config <config> serve --role <role>`, logging to `log`.
    pub fn start(imstatus: &Path, config: &Path, role: &str, log: PathBuf) -> Role {
        let out = std::fs::File::create(&log).or_fail("a log file");
        let child = Command::new(imstatus)
            .env("XDG_CONFIG_HOME", "/nonexistent")
            .env("RUST_LOG", "imstatus_cluster=info,warn")
            .arg("--config")
            .arg(config)
            .args(["serve", "--role", role])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .or_fail("starting imstatus");
        Role { child, log }
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The body of `GET path` on 127.0.0.1:`port` (HTTP/1.0, at most 1 MiB); `None` while nothing
/// answers.
pub fn get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut text = String::new();
    s.take(1 << 20).read_to_string(&mut text).ok()?;
    Some(text.split_once("\r\n\r\n")?.1.to_owned())
}
