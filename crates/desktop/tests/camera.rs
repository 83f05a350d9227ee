//! The camera signal: inotify and /proc against a process holding a stand-in device.
//!
//! A real `/dev/video*` needs the v4l2loopback kernel module, which this machine cannot load;
//! a plain file in a temp dir stands in for the device node: inotify reports its opens and
//! closes, and `/proc/<pid>/fd` shows who holds it, exactly as for a device.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use imstatus_core::{Activity, App};
use imstatus_desktop::DesktopConfig;

use crate::common::{Desk, DEADLINE};

/// A shell that opens the device as its descriptor 3 and waits on its stdin (a pipe nobody
/// writes to) until it is killed; its name stays `sh` (an `exec` would rename it meanwhile).
fn hold(device: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg("exec 3<\"$0\"; read _")
        .arg(device)
        .stdin(Stdio::piped())
        .spawn()
        .expect("spawn sh")
}

fn in_use(pid: u32) -> Activity {
    Activity {
        camera: true,
        in_call: true,
        camera_apps: vec![App::new("sh", Some(pid))],
        ..Activity::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_holding_the_device_is_a_call_until_it_lets_go() {
    let dir = tempfile::tempdir().expect("temp dir");
    let video0 = dir.path().join("video0");
    std::fs::write(&video0, b"").expect("device stand-in");
    let mut desk = Desk::start(DesktopConfig {
        camera: true,
        camera_devices: vec![format!("{}/video*", dir.path().display())],
        ..DesktopConfig::default()
    });
    assert_eq!(desk.first_activity().await, Activity::default());
    for _ in 0..2 {
        let start = Instant::now();
        let mut child = hold(&video0);
        assert_eq!(desk.activity(DEADLINE).await, in_use(child.id()));
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
        let start = Instant::now();
        child.kill().expect("kill");
        child.wait().expect("reap");
        assert_eq!(desk.activity(DEADLINE).await, Activity::default());
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
    }
    // A device that appears later is watched too. It appears by a rename, as a node does
    // (writing it in place would be an open by this test process, which the watch would
    // rightly report as the camera in use).
    let video1 = dir.path().join("video1");
    let made = dir.path().join("made");
    std::fs::write(&made, b"").expect("second device");
    std::fs::rename(&made, &video1).expect("second device appears");
    let mut child = hold(&video1);
    assert_eq!(desk.activity(DEADLINE).await, in_use(child.id()));
    child.kill().expect("kill");
    child.wait().expect("reap");
    assert_eq!(desk.activity(DEADLINE).await, Activity::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_already_held_at_start_is_found() {
    let dir = tempfile::tempdir().expect("temp dir");
    let video0 = dir.path().join("video0");
    std::fs::write(&video0, b"").expect("device stand-in");
    let mut child = hold(&video0);
    // Wait until the shell has opened it.
    imstatus_testkit::wait_until("sleep to hold the device", DEADLINE, || {
        std::fs::read_link(format!("/proc/{}/fd/3", child.id()))
            .ok()
            .filter(|t| *t == video0)
    })
    .expect("held");
    let mut desk = Desk::start(DesktopConfig {
        camera: true,
        camera_devices: vec![video0.display().to_string()],
        ..DesktopConfig::default()
    });
    // The first report may come before or after the scan; the state settles on "in use".
    let mut to = desk.first_activity().await;
    if !to.camera {
        to = desk.activity(DEADLINE).await;
    }
    assert_eq!(to, in_use(child.id()));
    child.kill().expect("kill");
    child.wait().expect("reap");
}
