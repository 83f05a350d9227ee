//! Processes by PID: liveness, signals, stopping, finding programs, running helper commands.
//!
//! Zombies count as gone: this container's PID 1 never reaps orphans, and tmux reaps its dead
//! panes lazily (P6), so `kill -0` would report long-dead daemons as alive.

use std::collections::HashSet;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::{try_wait_until, wait_until, Error, Result};

/// How long a process gets after SIGKILL before we report it as unkillable.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Whether `pid` names a running process (zombies and dead processes are not running).
pub fn pid_alive(pid: u32) -> bool {
    stat_fields(pid).is_some_and(|f| !matches!(f.state, 'Z' | 'X' | 'x'))
}

/// Stops a process that is not a child of ours: SIGTERM, SIGKILL after `term_grace`, then
/// waits up to 5 s for it to be gone. A process that is already gone is fine.
///
/// The caller must know that `pid` still names the process it started (PIDs are reused).
pub fn stop_pid(pid: u32, term_grace: Duration) -> Result<()> {
    let what = format!("PID {pid} to exit after SIGTERM");
    if !send(pid, Signal::SIGTERM) {
        return Ok(());
    }
    if wait_until(&what, term_grace, || (!pid_alive(pid)).then_some(())).is_ok() {
        return Ok(());
    }
    send(pid, Signal::SIGKILL);
    wait_until(
        &format!("PID {pid} to exit after SIGKILL"),
        KILL_GRACE,
        || (!pid_alive(pid)).then_some(()),
    )
}

/// The TCP sockets in LISTEN state that process `pid` holds open, sorted.
pub fn listening_sockets(pid: u32) -> Result<Vec<SocketAddr>> {
    let fd_dir = format!("/proc/{pid}/fd");
    let mut inodes = HashSet::new();
    let entries =
        std::fs::read_dir(&fd_dir).map_err(|e| Error::io(format!("reading {fd_dir}"), e))?;
    for entry in entries.flatten() {
        if let Ok(target) = std::fs::read_link(entry.path()) {
            let target = target.to_string_lossy();
            if let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
            {
                inodes.insert(inode.to_owned());
            }
        }
    }
    let mut found = Vec::new();
    for table in ["tcp", "tcp6"] {
        let path = format!("/proc/{pid}/net/{table}");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if cols.len() < 10 || cols[3] != "0A" || !inodes.contains(cols[9]) {
                continue;
            }
            if let Some(addr) = parse_proc_addr(cols[1]) {
                found.push(addr);
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Parses `0100007F:1F90` (IPv4) or the 32-digit IPv6 form from `/proc/net/tcp*`.
fn parse_proc_addr(text: &str) -> Option<SocketAddr> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        Some(
            u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16)
                .ok()?
                .to_ne_bytes(),
        )
    };
    match ip.len() {
        8 => Some(SocketAddr::from((Ipv4Addr::from(word(0)?), port))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(SocketAddr::from((Ipv6Addr::from(bytes), port)))
        }
        _ => None,
    }
}

/// The parts of `/proc/PID/stat` we use.
struct StatFields {
    state: char,
    ppid: u32,
    start_time: u64,
    comm: String,
}

fn stat_fields(pid: u32) -> Option<StatFields> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let rest: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); field 4 is ppid, field 22 is starttime.
    Some(StatFields {
        state: rest.first()?.chars().next()?,
        ppid: rest.get(1)?.parse().ok()?,
        start_time: rest.get(19)?.parse().ok()?,
        comm,
    })
}

/// The running children of `parent` whose command name is `comm`.
pub(crate) fn children_named(parent: u32, comm: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            stat_fields(pid).is_some_and(|f| {
                f.ppid == parent && f.comm == comm && !matches!(f.state, 'Z' | 'X' | 'x')
            })
        })
        .collect()
}

/// A process we did not spawn ourselves, pinned by PID and start time so that a reused PID is
/// never signalled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcId {
    pub(crate) pid: u32,
    start_time: u64,
}

impl ProcId {
    /// Pins the process `pid` as it is now, if it runs.
    pub(crate) fn capture(pid: u32) -> Option<ProcId> {
        let f = stat_fields(pid)?;
        (!matches!(f.state, 'Z' | 'X' | 'x')).then_some(ProcId {
            pid,
            start_time: f.start_time,
        })
    }

    /// Whether this very process still runs.
    pub(crate) fn alive(self) -> bool {
        stat_fields(self.pid)
            .is_some_and(|f| f.start_time == self.start_time && !matches!(f.state, 'Z' | 'X' | 'x'))
    }

    /// Sends `signal` if this very process still runs; returns whether it was sent.
    pub(crate) fn signal(self, signal: Signal) -> bool {
        self.alive() && send(self.pid, signal)
    }

    /// Waits up to `deadline` for this process to be gone; returns whether it is.
    pub(crate) fn wait_gone(self, deadline: Duration) -> bool {
        wait_until("", deadline, || (!self.alive()).then_some(())).is_ok()
    }
}

/// Sends `signal` to `pid`; returns false if there is no such process.
fn send(pid: u32, signal: Signal) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    kill(Pid::from_raw(raw), signal).is_ok()
}

/// Stops our child: SIGTERM, SIGKILL after `term_grace`, and reaps it.
pub(crate) fn stop_child(
    child: &mut Child,
    what: &str,
    term_grace: Duration,
) -> Result<ExitStatus> {
    if let Some(status) = child
        .try_wait()
        .map_err(|e| Error::io(format!("reaping {what}"), e))?
    {
        return Ok(status);
    }
    send(child.id(), Signal::SIGTERM);
    let waited = try_wait_until(&format!("{what} to exit after SIGTERM"), term_grace, || {
        child
            .try_wait()
            .map_err(|e| Error::io(format!("reaping {what}"), e))
    });
    match waited {
        Ok(status) => Ok(status),
        Err(Error::Timeout { .. }) => kill_child(child, what),
        Err(e) => Err(e),
    }
}

/// SIGKILLs our child and reaps it.
pub(crate) fn kill_child(child: &mut Child, what: &str) -> Result<ExitStatus> {
    // An error here means it has exited already; `wait` reaps it either way.
    let _ = child.kill();
    child
        .wait()
        .map_err(|e| Error::io(format!("reaping {what} after SIGKILL"), e))
}

/// Finds `program` on `PATH`, or explains how to install it.
pub(crate) fn find_program(program: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
        .ok_or_else(|| Error::MissingProgram {
            program: program.to_owned(),
            hint: format!("apt-get install -y {package}"),
        })
}

/// Runs `cmd` to completion with stdin from /dev/null; a non-zero exit is an error.
pub(crate) fn run(cmd: &mut Command, what: &str) -> Result<Output> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::io(format!("running {what}"), e))?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(Error::Command {
            what: what.to_owned(),
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            )
            .trim()
            .to_owned(),
        })
    }
}

/// The part of the log written after byte `start`.
pub(crate) fn log_since(path: &Path, start: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = std::io::Read::read_to_end(&mut file, &mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The contents of a log file, lossily decoded; empty if it does not exist.
pub(crate) fn read_log(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_an_error_that_says_how_to_install_it() {
        let err = find_program("imstatus-no-such-program", "nothing-at-all")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("`imstatus-no-such-program` not found on PATH"),
            "{err}"
        );
        assert!(err.contains("apt-get install -y nothing-at-all"), "{err}");
    }

    #[test]
    fn sh_is_found() {
        assert!(find_program("sh", "dash").is_ok());
    }

    #[test]
    fn proc_addresses_parse() {
        assert_eq!(
            parse_proc_addr("0100007F:1F90"),
            Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
        );
        let v6: SocketAddr = "[::1]:80".parse().expect("literal address");
        assert_eq!(
            parse_proc_addr("00000000000000000000000001000000:0050"),
            Some(v6)
        );
        assert_eq!(parse_proc_addr("zz"), None);
    }

    #[test]
    fn our_own_process_is_alive_and_pinned() {
        let me = std::process::id();
        assert!(pid_alive(me));
        let id = ProcId::capture(me);
        assert!(id.is_some_and(ProcId::alive));
    }

    #[test]
    fn a_reaped_child_is_not_alive_and_stop_pid_accepts_it() {
        let mut child = Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait true");
        assert!(!pid_alive(pid));
        assert!(stop_pid(pid, Duration::from_millis(10)).is_ok());
    }

    #[test]
    fn stop_child_terminates_a_sleeping_child() {
        let mut child = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = child.id();
        let status = stop_child(&mut child, "sleep", Duration::from_secs(5)).expect("stop");
        assert!(!status.success());
        assert!(!pid_alive(pid));
    }
}
