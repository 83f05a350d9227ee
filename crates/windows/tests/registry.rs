//! The registry path under wine, for real: `IM Providers` values written with `reg.exe`, seen
//! by the source through `RegNotifyChangeKeyValue`, translated into events by the hub.
#![cfg(windows)]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::common::*;
use imstatus_core::{Client, ErrorCode, EventKind, Session};
use imstatus_windows::WindowsConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_key_is_client_not_running() {
    let app = TestApp::new("missing");
    let hub = app.hub(false);
    settled(&hub).await;
    let (snap, mut sub) = subscribe(&hub).await;
    assert_eq!(snap.client, Client::NotRunning);
    assert_eq!(snap.session, Session::SignedOut);
    assert_eq!(snap.mistatus, 0x001);
    assert!(hub.source_error(&desktop()).is_none());

    // The key appears with "starting", then the client goes away again.
    blocking(|| app.up_and_running(1));
    assert_eq!(
        until(&mut sub, "client_starting").await,
        ["client_starting"]
    );
    blocking(|| app.up_and_running(0));
    assert_eq!(
        until(&mut sub, "client_shutdown").await,
        ["client_shutdown"]
    );
    blocking(|| app.up_and_running(1));
    assert_eq!(
        until(&mut sub, "client_starting").await,
        ["client_starting"]
    );
    // Deleting the whole key is "not running" too.
    blocking(|| reg(&["delete", &app.key(), "/f"]));
    assert_eq!(
        until(&mut sub, "client_shutdown").await,
        ["client_shutdown"]
    );
    // Rewriting the same value changes nothing visible.
    blocking(|| app.up_and_running(0));
    blocking(|| app.up_and_running(0));
    nothing_more(&mut sub, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_and_running_starting_is_seen_at_start() {
    let app = TestApp::new("starting");
    blocking(|| app.up_and_running(1));
    let hub = app.hub(false);
    settled(&hub).await;
    let snap = snapshot(&hub);
    assert_eq!(snap.client, Client::Starting);
    assert_eq!(snap.session, Session::SignedOut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_im_app_names_the_client_and_is_followed() {
    // The only test that uses DefaultIMApp (it is one value for the whole prefix).
    let first = TestApp::new("default-a");
    let second = TestApp::new("default-b");
    blocking(|| first.up_and_running(1));
    blocking(|| {
        reg(&[
            "add",
            r"HKCU\Software\IM Providers",
            "/v",
            "DefaultIMApp",
            "/t",
            "REG_SZ",
            "/d",
            &first.name,
            "/f",
        ])
    });
    let hub = hub_with(WindowsConfig {
        app: None,
        contacts: false,
    });
    settled(&hub).await;
    let (snap, mut sub) = subscribe(&hub).await;
    assert_eq!(snap.client, Client::Starting);

    // The default switches to a client without a key: not running.
    blocking(|| {
        reg(&[
            "add",
            r"HKCU\Software\IM Providers",
            "/v",
            "DefaultIMApp",
            "/t",
            "REG_SZ",
            "/d",
            &second.name,
            "/f",
        ])
    });
    assert_eq!(
        until(&mut sub, "client_shutdown").await,
        ["client_shutdown"]
    );
    blocking(|| second.up_and_running(1));
    assert_eq!(
        until(&mut sub, "client_starting").await,
        ["client_starting"]
    );
    blocking(|| {
        reg(&[
            "delete",
            r"HKCU\Software\IM Providers",
            "/v",
            "DefaultIMApp",
            "/f",
        ])
    });
    assert_eq!(
        until(&mut sub, "client_shutdown").await,
        ["client_shutdown"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_up_and_running_without_a_server_is_client_not_running() {
    // UpAndRunning says 2 but no process serves the class: CoCreateInstance fails
    // (CLASS_E_CLASSNOTAVAILABLE / REGDB_E_CLASSNOTREG), which is `client_not_running`.
    let app = TestApp::new("stale");
    blocking(|| app.register_class());
    blocking(|| app.up_and_running(2));
    let hub = app.hub(false);
    settled(&hub).await;
    let snap = snapshot(&hub);
    assert_eq!(snap.client, Client::NotRunning);
    assert_eq!(snap.session, Session::SignedOut);
    let errors = hub.recent_source_errors(&desktop());
    let [error] = errors.as_slice() else {
        panic!("one source error: {errors:?}")
    };
    let EventKind::SourceError { code, detail, .. } = &error.kind else {
        unreachable!()
    };
    assert_eq!(*code, ErrorCode::ClientNotRunning);
    assert_eq!(code.hresult(), 0x8004_0111);
    assert!(detail.contains("CoCreateInstance"), "{detail}");
    assert!(detail.contains("0x8004"), "{detail}");
    assert!(detail.contains("hint: start the IM client"), "{detail}");
}
