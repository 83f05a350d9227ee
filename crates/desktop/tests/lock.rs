//! The lock signal against the logind and screensaver test double on private buses.

use std::time::{Duration, Instant};

use imstatus_core::Activity;
use imstatus_desktop::{DesktopConfig, LockBackend};
use imstatus_testkit::DbusDaemon;

use crate::common::{Desk, DEADLINE};
use crate::double;

fn locked(b: bool) -> Activity {
    Activity {
        locked: b,
        ..Activity::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logind_locked_hint_and_screensaver_active_both_lock_the_screen() {
    let system = DbusDaemon::start().expect("system bus");
    let session = DbusDaemon::start().expect("session bus");
    let logind = double::logind(system.address(), false).await;
    let saver = double::screensaver(
        session.address(),
        double::ScreenSaver {
            active: false,
            idle_s: 0,
        },
    )
    .await;
    let mut desk = Desk::start(DesktopConfig {
        lock: true,
        system_bus: Some(system.address().to_owned()),
        session_bus: Some(session.address().to_owned()),
        ..DesktopConfig::default()
    });
    assert_eq!(desk.first_activity().await, locked(false));
    let locker = zbus::connection::Builder::address(system.address())
        .expect("address")
        .build()
        .await
        .expect("locker");
    for b in [true, false] {
        let start = Instant::now();
        double::call(
            &locker,
            "org.freedesktop.login1",
            double::SESSION_PATH,
            "org.freedesktop.login1.Session",
            "SetLockedHint",
            &(b,),
        )
        .await;
        assert_eq!(desk.activity(DEADLINE).await, locked(b));
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
    }
    let kde = zbus::connection::Builder::address(session.address())
        .expect("address")
        .build()
        .await
        .expect("screensaver client");
    for b in [true, false] {
        let start = Instant::now();
        double::call(
            &kde,
            "org.freedesktop.ScreenSaver",
            "/org/freedesktop/ScreenSaver",
            "org.freedesktop.ScreenSaver",
            "SetActive",
            &(b,),
        )
        .await;
        assert_eq!(desk.activity(DEADLINE).await, locked(b));
        assert!(
            start.elapsed() < Duration::from_millis(250),
            "{:?}",
            start.elapsed()
        );
    }
    drop((logind, saver));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_service_leaving_the_bus_is_reported_and_its_return_seen() {
    let session = DbusDaemon::start().expect("session bus");
    let saver = double::screensaver(
        session.address(),
        double::ScreenSaver {
            active: true,
            idle_s: 0,
        },
    )
    .await;
    let mut desk = Desk::start(DesktopConfig {
        lock: true,
        lock_backends: vec![LockBackend::ScreenSaver],
        session_bus: Some(session.address().to_owned()),
        ..DesktopConfig::default()
    });
    assert_eq!(desk.first_activity().await, locked(true));
    drop(saver);
    let (code, detail) = desk.source_error(DEADLINE).await;
    assert_eq!(code, "client_not_running", "{detail}");
    assert!(detail.contains("left the bus"), "{detail}");
    let _saver = double::screensaver(
        session.address(),
        double::ScreenSaver {
            active: true,
            idle_s: 0,
        },
    )
    .await;
    assert_eq!(desk.activity(DEADLINE).await, locked(true));
}
