//! The camera signal: which processes hold a configured camera device open.
//!
//! Linux has no "camera in use" notification for V4L2 devices, but inotify reports every
//! open and close of a device node (`IN_OPEN`, `IN_CLOSE_*`), and `/proc/<pid>/fd` says who
//! holds it. So: inotify on each device (and on its directory, to pick up devices that appear
//! later), and a scan of `/proc` at start and after each burst of opens and closes. inotify
//! reports an open just *before* the opener's file descriptor exists, so a burst is scanned
//! at once and again 25 ms and 100 ms later; nothing runs while no device is touched.
//!
//! Reads: the names of the configured devices' directories, the targets of `/proc/*/fd/*`
//! links, and `/proc/<pid>/comm` of the processes holding a device; nothing else (other
//! users' processes are invisible without privileges, and are not asked for).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::StreamExt;
use imstatus_core::App;
use inotify::{Inotify, WatchMask};

use crate::config::DesktopConfig;
use crate::coordinator::Report;
use crate::error::{from_io, Error, Result};
use crate::reporter::Reporter;

/// A scan looks at no more processes than this.
pub(crate) const MAX_PROCS: usize = 32_768;
/// A scan reads no more file descriptor links than this, over all processes (~5 µs each).
pub(crate) const MAX_FDS: usize = 200_000;
/// Follow-up scans after a burst, from its start.
const RESCANS: [Duration; 2] = [Duration::from_millis(25), Duration::from_millis(100)];
/// inotify's read buffer (events are ~16-32 bytes; the kernel queues the rest).
const EVENT_BUFFER: usize = 4096;

/// A configured device path, split into its directory and its last component (which may hold
/// `*` and `?`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pattern {
    dir: PathBuf,
    name: String,
}

impl Pattern {
    pub(crate) fn new(path: &str) -> Pattern {
        let p = Path::new(path);
        Pattern {
            dir: p
                .parent()
                .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
            name: p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        }
    }

    fn matches(&self, name: &str) -> bool {
        glob(self.name.as_bytes(), name.as_bytes())
    }

    /// The existing paths it names.
    pub(crate) fn expand_paths(&self) -> Vec<PathBuf> {
        self.expand()
    }

    fn expand(&self) -> Vec<PathBuf> {
        if !self.name.contains(['*', '?']) {
            let p = self.dir.join(&self.name);
            return if p.exists() { vec![p] } else { Vec::new() };
        }
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut found: Vec<PathBuf> = entries
            .flatten()
            .filter(|e| self.matches(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
        found.sort();
        found
    }
}

/// `*` (any run) and `?` (any one byte) matching, iterative (no recursion on input).
pub(crate) fn glob(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && (pattern[p] == b'?' || pattern[p] == name[n]) {
            p += 1;
            n += 1;
        } else if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// The processes holding any of `devices` open, by scanning `/proc` (bounded by
/// [`MAX_PROCS`] and [`MAX_FDS`]). Blocking: run it off the async threads.
pub(crate) fn holders(proc_dir: &Path, devices: &BTreeSet<PathBuf>) -> Vec<App> {
    let mut apps = Vec::new();
    if devices.is_empty() {
        return apps;
    }
    let Ok(entries) = std::fs::read_dir(proc_dir) else {
        return apps;
    };
    let mut fds = 0usize;
    for entry in entries.flatten().take(MAX_PROCS) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        // Other users' processes: permission denied, skipped.
        let Ok(links) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let mut holds = false;
        for link in links.flatten() {
            fds += 1;
            if fds > MAX_FDS {
                break;
            }
            if std::fs::read_link(link.path()).is_ok_and(|t| devices.contains(&t)) {
                holds = true;
                break;
            }
        }
        if holds {
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            let name: String = comm.trim_end().chars().take(64).collect();
            apps.push(App::new(
                if name.is_empty() {
                    pid.to_string()
                } else {
                    name
                },
                Some(pid),
            ));
        }
        if fds > MAX_FDS {
            tracing::debug!("camera scan stopped after {MAX_FDS} file descriptors");
            break;
        }
    }
    apps.sort();
    apps
}

/// Watches the camera devices until the watch breaks.
pub(crate) async fn run(config: &DesktopConfig, r: &mut Reporter) -> Error {
    match watch(config, r).await {
        Ok(never) => match never {},
        Err(e) => e,
    }
}

async fn watch(config: &DesktopConfig, r: &mut Reporter) -> Result<std::convert::Infallible> {
    let patterns: Vec<Pattern> = config
        .camera_devices
        .iter()
        .map(|p| Pattern::new(p))
        .collect();
    let inotify = Inotify::init().map_err(|e| from_io("inotify", &e))?;
    let mut watches = inotify.watches();
    let dir_mask =
        WatchMask::CREATE | WatchMask::DELETE | WatchMask::MOVED_TO | WatchMask::MOVED_FROM;
    let device_mask = WatchMask::OPEN | WatchMask::CLOSE_WRITE | WatchMask::CLOSE_NOWRITE;
    let mut dirs = BTreeSet::new();
    for p in &patterns {
        if dirs.insert(p.dir.clone()) {
            watches
                .add(&p.dir, dir_mask)
                .map_err(|e| from_io(format!("watching {}", p.dir.display()), &e))?;
        }
    }
    let mut stream = inotify
        .into_event_stream(vec![0u8; EVENT_BUFFER])
        .map_err(|e| from_io("inotify", &e))?;
    let mut devices = BTreeSet::new();
    let mut add_devices = |devices: &mut BTreeSet<PathBuf>| {
        for p in &patterns {
            for d in p.expand() {
                if !devices.contains(&d) {
                    // A device that vanished between listing and watching is simply skipped.
                    if watches.add(&d, device_mask).is_ok() {
                        devices.insert(d);
                    }
                }
            }
        }
        devices.retain(|d| d.exists());
    };
    add_devices(&mut devices);
    let detail = if devices.is_empty() {
        format!(
            "no device matches {} yet (watching for new ones)",
            config.camera_devices.join(", ")
        )
    } else {
        let names: Vec<String> = devices.iter().map(|d| d.display().to_string()).collect();
        format!("watching {}", names.join(", "))
    };
    r.up(detail).await;
    let mut last = scan(&devices).await;
    r.send(Report::Camera(last.clone())).await;
    // Follow-up scans pending after the last burst (deadline of each).
    let mut rescans: Vec<tokio::time::Instant> = Vec::new();
    loop {
        let next_rescan = rescans.first().copied();
        let event = tokio::select! {
            event = stream.next() => Some(event),
            () = sleep_until(next_rescan) => None,
        };
        match event {
            None => {
                rescans.remove(0);
            }
            Some(None) => return Err(Error::Lost("the inotify stream ended".into())),
            Some(Some(Err(e))) => return Err(from_io("reading inotify events", &e)),
            Some(Some(Ok(ev))) => {
                let in_dir = ev.mask.intersects(
                    inotify::EventMask::CREATE
                        | inotify::EventMask::DELETE
                        | inotify::EventMask::MOVED_TO
                        | inotify::EventMask::MOVED_FROM,
                );
                if in_dir {
                    let name = ev
                        .name
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if !patterns.iter().any(|p| p.matches(&name)) {
                        continue;
                    }
                    add_devices(&mut devices);
                }
                if ev.mask.contains(inotify::EventMask::Q_OVERFLOW) {
                    add_devices(&mut devices);
                }
                let now = tokio::time::Instant::now();
                rescans = RESCANS.iter().map(|d| now + *d).collect();
            }
        }
        let apps = scan(&devices).await;
        if apps != last {
            last = apps.clone();
            r.send(Report::Camera(apps)).await;
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Scans `/proc` on the blocking pool.
async fn scan(devices: &BTreeSet<PathBuf>) -> Vec<App> {
    let devices = devices.clone();
    tokio::task::spawn_blocking(move || holders(Path::new("/proc"), &devices))
        .await
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_the_shell_last_component() {
        assert!(glob(b"video*", b"video0"));
        assert!(glob(b"video*", b"video"));
        assert!(glob(b"video?", b"video1"));
        assert!(!glob(b"video?", b"video10"));
        assert!(!glob(b"video*", b"media0"));
        assert!(glob(b"*0", b"video0"));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        let long = vec![b'a'; 10_000];
        assert!(!glob(b"*a*a*a*b", &long), "no blow-up on long names");
    }

    #[test]
    fn patterns_split_into_directory_and_name() {
        let p = Pattern::new("/dev/video*");
        assert_eq!(p.dir, PathBuf::from("/dev"));
        assert!(p.matches("video2"));
    }

    #[test]
    fn this_process_is_found_holding_a_file_it_opened() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("video0");
        let file = std::fs::File::create(&path).expect("create");
        let devices: BTreeSet<PathBuf> = [path.clone()].into();
        let apps = holders(Path::new("/proc"), &devices);
        assert!(
            apps.iter().any(|a| a.pid == Some(std::process::id())),
            "{apps:?}"
        );
        drop(file);
        assert!(holders(Path::new("/proc"), &devices).is_empty());
        assert!(holders(Path::new("/proc"), &BTreeSet::new()).is_empty());
    }
}
