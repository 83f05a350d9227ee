//! The private D-Bus daemon.
#![allow(clippy::unwrap_used)]

use std::time::Instant;

use imstatus_testkit::{pid_alive, DbusDaemon};

#[test]
fn a_private_bus_starts_answers_and_is_gone_after_drop() {
    let t = Instant::now();
    let bus = DbusDaemon::start().unwrap();
    eprintln!("dbus-daemon up after {:?}", t.elapsed());
    let pid = bus.pid();
    let dir = bus.dir().to_owned();
    assert!(pid_alive(pid));
    assert!(
        bus.address()
            .starts_with(&format!("unix:path={}/bus.sock,guid=", dir.display())),
        "{}",
        bus.address()
    );
    assert!(bus.has_owner("org.freedesktop.DBus").unwrap());
    assert!(!bus.has_owner("im.pidgin.purple.PurpleService").unwrap());
    drop(bus);
    assert!(!pid_alive(pid));
    assert!(!dir.exists());
}

#[test]
fn stop_is_idempotent() {
    let mut bus = DbusDaemon::start().unwrap();
    let pid = bus.pid();
    bus.stop().unwrap();
    assert!(!pid_alive(pid));
    bus.stop().unwrap();
    assert!(bus.has_owner("org.freedesktop.DBus").is_err());
}
