//! A private D-Bus session bus (recipe §2), and `dbus-send`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::process::{find_program, read_log, run, stop_child};
use crate::{try_wait_until, Error, Result};

/// How long dbus-daemon may take to print its address (7-10 ms measured).
const START_DEADLINE: Duration = Duration::from_secs(10);
/// How long dbus-daemon gets after SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(5);
/// `dbus-send --reply-timeout`, in milliseconds.
const REPLY_TIMEOUT_MS: u32 = 5000;

/// A private session bus: `dbus-daemon --session` listening on a socket in its own temp dir.
///
/// Unlike recipe §2 it runs with `--nofork` as our child, so that it is reaped (this
/// container's PID 1 does not reap orphans). Dropping it sends SIGTERM to its PID.
#[derive(Debug)]
pub struct DbusDaemon {
    address: String,
    pid: u32,
    child: Option<Child>,
    dbus_send: PathBuf,
    log: PathBuf,
    // Last, so that it is deleted after the daemon is stopped.
    dir: TempDir,
}

impl DbusDaemon {
    /// Starts the daemon and returns once it has printed its address (it listens by then).
    pub fn start() -> Result<Self> {
        let program = find_program("dbus-daemon", "dbus")?;
        let dbus_send = find_program("dbus-send", "dbus")?;
        let dir = tempfile::Builder::new()
            .prefix("imstatus-dbus-")
            .tempdir()
            .map_err(|e| Error::io("creating the D-Bus temp dir", e))?;
        let address_file = dir.path().join("bus.address");
        let log = dir.path().join("dbus-daemon.log");
        let open = |p: &Path| {
            File::create(p).map_err(|e| Error::io(format!("creating {}", p.display()), e))
        };
        let mut child = Command::new(program)
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .arg(format!(
                "--address=unix:path={}",
                dir.path().join("bus.sock").display()
            ))
            .stdin(Stdio::null())
            .stdout(open(&address_file)?)
            .stderr(open(&log)?)
            .spawn()
            .map_err(|e| Error::io("spawning dbus-daemon", e))?;
        let waited = try_wait_until("dbus-daemon to print its address", START_DEADLINE, || {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| Error::io("reaping dbus-daemon", e))?
            {
                return Err(Error::Exited {
                    what: "dbus-daemon".into(),
                    status: status.to_string(),
                    context: String::new(),
                });
            }
            let text = read_log(&address_file);
            Ok(text
                .ends_with('\n')
                .then(|| text.lines().next().unwrap_or_default().trim().to_owned()))
        });
        let address = match waited {
            Ok(address) => address,
            Err(e) => {
                let _ = stop_child(&mut child, "dbus-daemon", TERM_GRACE);
                return Err(e.with_log("dbus-daemon's stderr", &read_log(&log)));
            }
        };
        Ok(DbusDaemon {
            address,
            pid: child.id(),
            child: Some(child),
            dbus_send,
            log,
            dir,
        })
    }

    /// The bus address, for `DBUS_SESSION_BUS_ADDRESS` (`unix:path=…,guid=…`).
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The daemon's PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The daemon's temp dir (socket, address file, stderr log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What the daemon wrote to stderr.
    pub fn log(&self) -> String {
        read_log(&self.log)
    }

    /// Whether `name` (e.g. `im.pidgin.purple.PurpleService`) has an owner on this bus.
    pub fn has_owner(&self, name: &str) -> Result<bool> {
        name_has_owner(&self.dbus_send, &self.address, name)
    }

    /// Stops the daemon (SIGTERM, SIGKILL after 5 s) and reaps it; does nothing if stopped.
    pub fn stop(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, "dbus-daemon", TERM_GRACE)?;
        }
        Ok(())
    }
}

impl Drop for DbusDaemon {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// `NameHasOwner(name)` on the bus at `address`.
pub(crate) fn name_has_owner(dbus_send: &Path, address: &str, name: &str) -> Result<bool> {
    let reply = dbus_send_call(
        dbus_send,
        address,
        "org.freedesktop.DBus",
        "/",
        "org.freedesktop.DBus.NameHasOwner",
        &[format!("string:{name}")],
    )?;
    match reply.as_str() {
        "boolean true" => Ok(true),
        "boolean false" => Ok(false),
        other => Err(Error::Dbus {
            method: "NameHasOwner".into(),
            message: format!("unexpected reply {other:?}"),
        }),
    }
}

/// Calls `member` (`interface.Method`) with `dbus-send --print-reply`; returns the reply body,
/// header line removed and every line trimmed.
pub(crate) fn dbus_send_call(
    dbus_send: &Path,
    address: &str,
    dest: &str,
    path: &str,
    member: &str,
    args: &[String],
) -> Result<String> {
    let result = run(
        Command::new(dbus_send)
            .arg(format!("--bus={address}"))
            .arg("--print-reply")
            .arg(format!("--reply-timeout={REPLY_TIMEOUT_MS}"))
            .arg(format!("--dest={dest}"))
            .arg(path)
            .arg(member)
            .args(args),
        member,
    );
    match result {
        Ok(output) => {
            let text = String::from_utf8_lossy(&output.stdout);
            Ok(text
                .lines()
                .skip(1)
                .map(str::trim)
                .collect::<Vec<_>>()
                .join("\n"))
        }
        Err(Error::Command { output, .. }) => Err(Error::Dbus {
            method: member.to_owned(),
            message: output,
        }),
        Err(e) => Err(e),
    }
}
