//! Hostile peers: garbage and absurd values from the bus double, and a spoofer.

use std::time::Duration;

use imstatus_core::Activity;
use imstatus_desktop::{DesktopConfig, IdleBackend, LockBackend};
use imstatus_testkit::DbusDaemon;

use crate::common::{Desk, DEADLINE};
use crate::double;

fn saver_only(session: &DbusDaemon) -> DesktopConfig {
    DesktopConfig {
        lock: true,
        lock_backends: vec![LockBackend::ScreenSaver],
        session_bus: Some(session.address().to_owned()),
        ..DesktopConfig::default()
    }
}

fn locked(b: bool) -> Activity {
    Activity {
        locked: b,
        ..Activity::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_from_the_owner_are_protocol_errors_not_panics() {
    let session = DbusDaemon::start().expect("session bus");
    let _saver = double::screensaver(session.address(), double::HostileScreenSaver).await;
    let mut desk = Desk::start(DesktopConfig {
        idle: true,
        idle_backends: vec![IdleBackend::ScreenSaver],
        ..saver_only(&session)
    });
    let mut errors = vec![
        desk.source_error(DEADLINE).await,
        desk.source_error(DEADLINE).await,
    ];
    errors.sort();
    assert_eq!(errors[0].0, "protocol_error", "{errors:?}");
    assert_eq!(errors[1].0, "protocol_error", "{errors:?}");
    assert!(errors[0].1.starts_with("idle: no backend answered (screensaver: org.freedesktop.ScreenSaver.GetSessionIdleTime answered `x`"), "{errors:?}");
    assert!(errors[1].1.starts_with("lock: no backend answered (screensaver: org.freedesktop.ScreenSaver.GetActive answered `s`"), "{errors:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_idle_time_is_refused() {
    let session = DbusDaemon::start().expect("session bus");
    let _saver = double::screensaver(session.address(), double::AbsurdScreenSaver).await;
    let mut desk = Desk::start(DesktopConfig {
        idle: true,
        idle_backends: vec![IdleBackend::ScreenSaver],
        session_bus: Some(session.address().to_owned()),
        ..DesktopConfig::default()
    });
    let (code, detail) = desk.source_error(DEADLINE).await;
    assert_eq!(code, "protocol_error");
    assert!(
        detail.contains("idle for 4294967295 s, which cannot be"),
        "{detail}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_signal_is_an_anomaly_and_the_next_good_one_counts() {
    let session = DbusDaemon::start().expect("session bus");
    let saver = double::screensaver(
        session.address(),
        double::ScreenSaver {
            active: false,
            idle_s: 0,
        },
    )
    .await;
    let mut desk = Desk::start(saver_only(&session));
    assert_eq!(desk.first_activity().await, locked(false));
    double::emit_active_changed(&saver, &("locked please",), false).await;
    let (code, detail) = desk.source_error(DEADLINE).await;
    assert_eq!(code, "protocol_error");
    assert!(
        detail.starts_with("lock: screensaver: ActiveChanged with a body of type `s`"),
        "{detail}"
    );
    double::emit_active_changed(&saver, &(true,), false).await;
    assert_eq!(desk.activity(DEADLINE).await, locked(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_from_a_peer_that_does_not_own_the_name_are_ignored() {
    let session = DbusDaemon::start().expect("session bus");
    let saver = double::screensaver(
        session.address(),
        double::ScreenSaver {
            active: false,
            idle_s: 0,
        },
    )
    .await;
    let mut desk = Desk::start(saver_only(&session));
    assert_eq!(desk.first_activity().await, locked(false));
    let spoofer = zbus::connection::Builder::address(session.address())
        .expect("address")
        .build()
        .await
        .expect("spoofer");
    // Broadcast and addressed to every peer, our source included.
    double::emit_active_changed(&spoofer, &(true,), true).await;
    desk.quiet(Duration::from_millis(300)).await;
    // The owner's own signal still counts.
    double::emit_active_changed(&saver, &(true,), false).await;
    assert_eq!(desk.activity(DEADLINE).await, locked(true));
}
