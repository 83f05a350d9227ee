//! Idle against a real Xvfb (SYNC IDLETIME alarms) and xdotool's synthetic input.

use std::time::{Duration, Instant};

use imstatus_desktop::{DesktopConfig, IdleBackend};
use imstatus_testkit::Xvfb;

use crate::common::{Desk, DEADLINE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_turns_true_after_idle_after_and_false_on_input_twice() {
    let x = Xvfb::start().expect("Xvfb");
    let idle_after = Duration::from_secs(1);
    let mut desk = Desk::start(DesktopConfig {
        idle: true,
        idle_after,
        idle_backends: vec![IdleBackend::X11],
        display: Some(x.display().to_owned()),
        ..DesktopConfig::default()
    });
    x.input().expect("xdotool");
    let first = desk.first_activity().await;
    assert!(first.idle_s.is_some(), "{first:?}");
    let mut active = first.clone();
    if first.idle {
        x.input().expect("xdotool");
        active = desk.activity(DEADLINE).await;
    }
    assert!(!active.idle);
    for _ in 0..2 {
        let since_input = Instant::now();
        let idle = desk.activity(DEADLINE).await;
        assert!(idle.idle, "{idle:?}");
        assert!(idle.idle_s.is_some_and(|s| s >= 1), "{idle:?}");
        assert!(since_input.elapsed() >= idle_after - Duration::from_millis(50));
        let start = Instant::now();
        x.input().expect("xdotool");
        let back = desk.activity(DEADLINE).await;
        let took = start.elapsed();
        assert!(!back.idle, "{back:?}");
        assert_eq!(back.idle_s, Some(0));
        assert!(took < Duration::from_millis(250), "took {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_display_is_a_source_error_naming_every_backend_tried() {
    let mut desk = Desk::start(DesktopConfig {
        idle: true,
        idle_backends: vec![IdleBackend::X11],
        display: Some(":999".into()),
        ..DesktopConfig::default()
    });
    let (code, detail) = desk.source_error(DEADLINE).await;
    assert_eq!(code, "client_not_running");
    assert!(
        detail.starts_with("idle: no backend answered (x11: cannot connect to X display :999"),
        "{detail}"
    );
}
