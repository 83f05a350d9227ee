//! The bus itself going away and coming back, on a dbus-daemon this test controls (the
//! testkit's daemon cannot be restarted on the same address).
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::*;
use imstatus_core::{Client, Session};

/// A `dbus-daemon --session` on a fixed socket path, killed by its PID on drop.
struct OwnBus(Option<Child>);

impl OwnBus {
    fn start(socket: &Path) -> OwnBus {
        // A socket left by a killed daemon would make the bind fail.
        let _ = std::fs::remove_file(socket);
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .arg(format!("--address=unix:path={}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon runs");
        // It prints its address once it listens (or exits, closing stdout).
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("unix:"), "dbus-daemon printed {line:?}");
        OwnBus(Some(child))
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnBus {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_bus_is_a_source_error_and_the_source_resyncs_when_it_is_back() {
    tokio::time::timeout(Duration::from_secs(40), async {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("bus.sock");
        let address = format!("unix:path={}", socket.display());
        let mut bus = blocking(|| OwnBus::start(&socket));
        let hub = hub_on(&address);
        settled(&hub).await;
        let (snap, mut sub) = subscribe(&hub).await;
        assert_eq!(
            (snap.client, snap.session),
            (Client::NotRunning, Session::SignedOut)
        );

        blocking(|| bus.kill());
        assert_eq!(
            until(&mut sub, "source_error:disconnected").await,
            ["source_error:disconnected"]
        );
        assert_eq!(snapshot(&hub).session, Session::Unknown);
        // The first reconnect finds no bus at all.
        assert_eq!(
            until(&mut sub, "source_error:client_not_running").await,
            ["source_error:client_not_running"]
        );

        let _bus = blocking(|| OwnBus::start(&socket));
        assert_eq!(
            until(&mut sub, "signed_out:unknown").await,
            ["signed_out:unknown"]
        );
        assert_eq!(hub.source_error(&desktop()), None);
        let snap = snapshot(&hub);
        assert_eq!(
            (snap.client, snap.session),
            (Client::NotRunning, Session::SignedOut)
        );
    })
    .await
    .expect("within the limit");
}
