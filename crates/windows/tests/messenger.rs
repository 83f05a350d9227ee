//! The COM path under wine against the Messenger test double (a real out-of-process COM
//! server): activation, `IDispatch` calls across processes, the `DMessengerEvents` connection
//! point and its events, and the server process vanishing.
#![cfg(windows)]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use crate::common::*;
use imstatus_core::{Availability, Client, ErrorCode, EventKind, Session};
use imstatus_windows::WindowsConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_status_changes_sign_out_and_app_shutdown() {
    let app = TestApp::new("lifecycle");
    blocking(|| app.register_class());
    let mut double = blocking(|| Double::start(&app, &[]));
    let hub = app.hub(false);
    settled(&hub).await;
    let (snap, mut sub) = subscribe(&hub).await;
    assert_eq!(snap.client, Client::Running);
    assert_eq!(
        snap.session,
        Session::SignedOut,
        "MyStatus failed with 0x8100031E"
    );
    assert!(snap.resources.is_empty());

    blocking(|| double.send("signin alice@contoso.test"));
    assert_eq!(
        until(&mut sub, "status:available:0x002").await,
        ["signed_in:ok", "status:available:0x002"]
    );
    let snap = snapshot(&hub);
    assert_eq!(snap.resources.len(), 1);
    assert_eq!(snap.resources[0].resource.as_str(), "alice@contoso.test");

    // Every online MISTATUS has the 0x2 bit; the availability follows the design's table.
    for (code, label) in [
        ("0x22", "status:away:0x022"),
        ("0x0A", "status:busy:0x00A"),
        ("0x6", "status:invisible:0x006"),
        ("0x72", "status:busy:0x00A"),
        ("0x62", "status:extended_away:0x022"),
        ("0x2", "status:available:0x002"),
    ] {
        blocking(|| double.send(&format!("status {code}")));
        assert_eq!(until(&mut sub, label).await, [label], "MISTATUS {code}");
    }
    // Same status again: nothing.
    blocking(|| double.send("status 0xB2"));

    blocking(|| double.send("signout"));
    assert_eq!(
        until(&mut sub, "status:offline:0x001").await,
        ["signed_out:user", "status:offline:0x001"]
    );
    // The registry value stays 2 after sign-out: the client still runs.
    assert_eq!(snapshot(&hub).client, Client::Running);

    blocking(|| double.send("signin alice@contoso.test 0x22"));
    assert_eq!(
        until(&mut sub, "status:away:0x022").await,
        ["signed_in:ok", "status:away:0x022"]
    );
    // OnAppShutdown while signed in: signed_out (user) before client_shutdown.
    blocking(|| double.send("shutdown"));
    assert_eq!(
        until(&mut sub, "client_shutdown").await,
        ["signed_out:user", "status:offline:0x001", "client_shutdown"]
    );
    blocking(|| double.wait_exit());
    nothing_more(&mut sub, Duration::from_millis(300)).await;
    let snap = snapshot(&hub);
    assert_eq!(snap.client, Client::NotRunning);
    assert_eq!(snap.session, Session::SignedOut);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_client_is_signed_out_before_it_is_gone() {
    let mut app = TestApp::new("killed");
    blocking(|| app.register_class());
    let mut double = blocking(|| {
        Double::start(
            &app,
            &["--signed-in", "bob@contoso.test", "--status", "0x22"],
        )
    });
    let hub = app.hub(false);
    settled(&hub).await;
    let (snap, mut sub) = subscribe(&hub).await;
    assert_eq!(snap.client, Client::Running);
    assert_eq!(snap.session, Session::SignedIn);
    assert_eq!(snap.availability, Availability::Away);
    assert_eq!(snap.mistatus, 0x22);
    assert_eq!(snap.resources[0].resource.as_str(), "bob@contoso.test");

    // No OnSignout, no OnAppShutdown: the process is terminated. UpAndRunning stays 2.
    blocking(|| double.kill());
    assert_eq!(
        until(&mut sub, "client_shutdown").await,
        [
            "signed_out:client_exited",
            "status:offline:0x001",
            "client_shutdown"
        ]
    );
    nothing_more(&mut sub, Duration::from_millis(1200)).await;

    // The client starts again: UpAndRunning 1 (starting), then 2 once its class object is
    // registered: attached again. (The value stayed 2 after the kill, and wine, unlike Windows,
    // does not notify a write of an identical value, so the restart is seen through the 1.
    // Wine's rpcss also keeps the killed server's class registration, so the restarted double
    // registers under a fresh class id; see `TestApp::new_class`.)
    blocking(|| app.new_class());
    let mut again = blocking(|| Double::start_staged(&app, &["--signed-in", "bob@contoso.test"]));
    assert_eq!(
        until(&mut sub, "client_starting").await,
        ["client_starting"]
    );
    blocking(|| again.up());
    assert_eq!(
        until(&mut sub, "status:available:0x002").await,
        ["client_started", "signed_in:ok", "status:available:0x002"]
    );
    blocking(|| again.exit());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_and_a_failed_sign_in() {
    let app = TestApp::new("signin-fail");
    blocking(|| app.register_class());
    let mut double = blocking(|| Double::start(&app, &[]));
    let hub = app.hub(false);
    settled(&hub).await;
    let (_, mut sub) = subscribe(&hub).await;

    blocking(|| double.send("connecting"));
    assert_eq!(until(&mut sub, "signing_in").await, ["signing_in"]);
    // MSGR_E_INVALID_PASSWORD (0x81000303) is the design's auth_failed.
    blocking(|| double.send("signin-fail 0x81000303"));
    assert_eq!(
        until(&mut sub, "signed_in:auth_failed").await,
        ["signed_in:auth_failed"]
    );
    let snap = snapshot(&hub);
    assert_eq!(snap.session, Session::SignedOut);
    assert!(snap.resources.is_empty(), "{snap:?}");
    blocking(|| double.send("signin carol@contoso.test 0x0A"));
    assert_eq!(
        until(&mut sub, "status:busy:0x00A").await,
        ["signed_in:ok", "status:busy:0x00A"]
    );
    let snap = snapshot(&hub);
    assert_eq!(snap.resources.len(), 1, "{snap:?}");
    assert_eq!(snap.resources[0].resource.as_str(), "carol@contoso.test");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contact_status_changes_when_tracked() {
    let app = TestApp::new("contacts");
    blocking(|| app.register_class());
    let mut double = blocking(|| Double::start(&app, &["--signed-in", "dave@contoso.test"]));
    let hub = app.hub(true);
    settled(&hub).await;
    let (_, mut sub) = subscribe(&hub).await;
    blocking(|| double.send("contact erin@contoso.test 0x22"));
    assert_eq!(
        until(&mut sub, "contact:erin@contoso.test:away").await,
        ["contact:erin@contoso.test:away"]
    );
    blocking(|| double.send("contact erin@contoso.test 0x1"));
    assert_eq!(
        until(&mut sub, "contact:erin@contoso.test:offline").await,
        ["contact:erin@contoso.test:offline"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_guid_value_the_messenger_class_is_used() {
    // No HKLM\Software\IM Providers\<app>\GUID: CLSID_Messenger (Communicator's class).
    // The only test that registers that class id.
    let mut app = TestApp::new("communicator");
    app.clsid = "{8885370D-B33E-44B7-875D-28E403CF9270}".to_owned();
    let mut double = blocking(|| Double::start(&app, &["--signed-in", "frank@contoso.test"]));
    let hub = app.hub(false);
    settled(&hub).await;
    let snap = snapshot(&hub);
    assert_eq!(snap.client, Client::Running);
    assert_eq!(snap.session, Session::SignedIn);
    assert_eq!(snap.resources[0].resource.as_str(), "frank@contoso.test");
    let checks = imstatus_windows::doctor(&WindowsConfig {
        app: Some(app.name.clone()),
        contacts: false,
    })
    .await;
    let names: Vec<_> = checks.iter().map(|c| (c.name, c.ok)).collect();
    assert_eq!(
        names,
        [
            ("registry", true),
            ("client", true),
            ("com", true),
            ("session", true)
        ],
        "{checks:?}"
    );
    blocking(|| double.exit());
}

async fn refused(code: &str, name: &str) {
    let app = TestApp::new(name);
    blocking(|| app.register_class());
    let _double = blocking(|| Double::start(&app, &["--refuse", code]));
    let hub = app.hub(false);
    settled(&hub).await;
    let snap = snapshot(&hub);
    // The registry says running and it is: the source just cannot see the session.
    assert_eq!(snap.client, Client::Running);
    assert_eq!(snap.session, Session::Unknown);
    let error = hub.source_error(&desktop()).expect("a source error");
    assert_eq!(error.code, ErrorCode::AccessDenied);
    assert_eq!(error.code.hresult(), 0x8007_0005);
    assert!(
        error
            .detail
            .contains("hint: run imstatus at the same integrity level as the client"),
        "{}",
        error.detail
    );
    assert!(error.detail.contains(code), "{}", error.detail);
    let errors = hub.recent_source_errors(&desktop());
    assert!(errors
        .iter()
        .all(|e| matches!(&e.kind, EventKind::SourceError { code, .. } if *code == ErrorCode::AccessDenied)));
    let checks = imstatus_windows::doctor(&WindowsConfig {
        app: Some(app.name.clone()),
        contacts: false,
    })
    .await;
    let com = checks
        .iter()
        .find(|c| c.name == "com")
        .expect("a com check");
    assert!(!com.ok);
    assert!(
        com.detail.starts_with("access_denied (0x80070005)"),
        "{com:?}"
    );
    assert_eq!(
        com.hint.as_deref(),
        Some("run imstatus at the same integrity level as the client (both elevated or both not)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_denied_is_reported_with_the_integrity_hint() {
    refused("0x80070005", "denied").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_exec_failure_is_reported_with_the_integrity_hint() {
    refused("0x80080005", "exec-failure").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn office_integration_state_is_read_through_ilyncclient() {
    // The IUCOfficeIntegration shape (Lync and later), as far as the test double offers it:
    // `GetInterface` → `ILyncClient.State` through IDispatch, no events (the source re-reads
    // `State` on its 500 ms probe). Not the real Lync: see docs/windows.md.
    let app = TestApp::new("office");
    blocking(|| app.register_class());
    let mut double = blocking(|| Double::start(&app, &["--office"]));
    let hub = app.hub(false);
    settled(&hub).await;
    let (snap, mut sub) = subscribe(&hub).await;
    assert_eq!(snap.client, Client::Running);
    assert_eq!(snap.session, Session::SignedOut);

    blocking(|| double.send("signin grace@contoso.test"));
    assert_eq!(
        until(&mut sub, "status:available:0x002").await,
        ["signed_in:ok", "status:available:0x002"]
    );
    blocking(|| double.send("signout"));
    assert_eq!(
        until(&mut sub, "status:offline:0x001").await,
        ["signed_out:user", "status:offline:0x001"]
    );
    blocking(|| double.send("signin grace@contoso.test"));
    assert_eq!(
        until(&mut sub, "status:available:0x002").await,
        ["signed_in:ok", "status:available:0x002"]
    );
    blocking(|| double.kill());
    assert_eq!(
        until(&mut sub, "client_shutdown").await,
        [
            "signed_out:client_exited",
            "status:offline:0x001",
            "client_shutdown"
        ]
    );
}
