//! End to end: the real `PurpleSource` in a hub, against real finch on a private bus with real
//! Prosody (docs/e2e-recipe.md). Whole event sequences are compared as labels.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use imstatus_core::{Availability, Client, ErrorCode, Session, Status};
use imstatus_hub::Hub;
use imstatus_purple::PurpleConfig;
use imstatus_purple::{doctor, PurpleSource};
use imstatus_testkit::{DbusArg, XmppClient};

/// The limit of a whole test.
const TEST: Duration = Duration::from_secs(40);

async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(TEST, test)
        .await
        .expect("the test finished within its limit");
}

fn labels(expected: &[&str]) -> Vec<String> {
    expected.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_client_on_the_bus_is_a_snapshot_with_the_client_not_running() {
    bounded(async {
        let bus = blocking(imstatus_testkit::DbusDaemon::start).unwrap();
        let hub = hub_on(bus.address());
        settled(&hub).await;
        let (snap, _sub) = subscribe(&hub).await;
        assert_eq!(snap.client, Client::NotRunning);
        assert_eq!(snap.session, Session::SignedOut);
        assert!(snap.resources.is_empty());
        assert_eq!(hub.source_error(&desktop()), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_that_does_not_exist_is_source_error_client_not_running() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix:path={}/no-such-bus.sock", dir.path().display());
        // Subscribed before the source runs: its failure comes at once, and must be seen as
        // an event, not only in the first snapshot.
        let (hub, mut sub) = Hub::builder()
            .with_source(
                desktop(),
                Arc::new(PurpleSource::new(&PurpleConfig {
                    bus: Some(address.clone()),
                    ..PurpleConfig::default()
                })),
            )
            .start_subscribed();
        settled(&hub).await;
        let err = hub.source_error(&desktop()).expect("the source is down");
        assert_eq!(err.code, ErrorCode::ClientNotRunning);
        assert!(err.detail.contains(&address), "{}", err.detail);
        // The subscriber saw it as a source_error (after its snapshot).
        let seen = until(&mut sub, "source_error:client_not_running").await;
        assert_eq!(seen.last().unwrap(), "source_error:client_not_running");
        assert_eq!(snapshot(&hub).session, Session::Unknown);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finch_started_after_the_watch_is_client_started_signing_in_signed_in() {
    bounded(async {
        let world = blocking(World::start);
        let hub = hub_on(world.bus.address());
        settled(&hub).await;
        let (snap, mut sub) = subscribe(&hub).await;
        assert_eq!(snap.client, Client::NotRunning);

        let finch = blocking(|| world.finch(&[world.alice()]));
        let seen = until(&mut sub, "status:available:0x002").await;
        assert_eq!(
            seen,
            labels(&[
                "client_started",
                "signing_in",
                "signed_in:ok",
                "status:available:0x002"
            ])
        );
        let snap = snapshot(&hub);
        assert_eq!(snap.client, Client::Running);
        assert_eq!(snap.session, Session::SignedIn);
        assert_eq!(snap.resources.len(), 1);
        assert_eq!(snap.resources[0].resource.as_str(), ALICE);
        assert_eq!(snap.resources[0].session, Session::SignedIn);
        drop(finch);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_set_in_finch_arrive_with_their_availability_and_mistatus() {
    bounded(async {
        let world = blocking(World::start);
        let finch = blocking(|| world.finch(&[world.alice()]));
        blocking(|| finch.wait_signed_in(STEP)).unwrap();
        let hub = hub_on(world.bus.address());
        settled(&hub).await;
        let (snap, mut sub) = subscribe(&hub).await;
        assert_eq!(snap.session, Session::SignedIn);
        assert_eq!(snap.availability, Availability::Available);

        let steps: [(i32, Option<&str>, &str); 6] = [
            (5, Some("lunch"), "status:away:lunch:0x022"),
            (3, None, "status:busy:0x00A"),
            (6, None, "status:extended_away:0x022"),
            // XMPP has no invisible: finch sends nothing, only SavedstatusChanged fires.
            (4, None, "status:invisible:0x006"),
            (2, None, "status:available:0x002"),
            (5, Some("back soon"), "status:away:back soon:0x022"),
        ];
        for (primitive, message, expected) in steps {
            blocking(|| finch.set_status(primitive, message)).unwrap();
            assert_eq!(
                until(&mut sub, expected).await,
                labels(&[expected]),
                "primitive {primitive}"
            );
        }
        assert_eq!(snapshot(&hub).mistatus, 0x022);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_status_busy_reaches_finch_and_another_resource_as_dnd() {
    bounded(async {
        let world = blocking(World::start);
        let finch = blocking(|| world.finch(&[world.alice()]));
        blocking(|| finch.wait_signed_in(STEP)).unwrap();
        let mut obs = blocking(|| {
            let mut obs = XmppClient::connect(
                world.prosody.port(),
                "alice",
                "example.test",
                "alicepw",
                "obs",
            )
            .unwrap();
            obs.presence(None, None, Some(-1)).unwrap();
            obs.read_until("from='alice@example.test/finch'", STEP)
                .unwrap();
            obs
        });
        let hub = hub_on(world.bus.address());
        settled(&hub).await;
        let (_, mut sub) = subscribe(&hub).await;

        hub.set_status(
            &desktop(),
            Status::with_message(Availability::Busy, "in a call"),
        )
        .await
        .unwrap();
        let dnd = blocking(|| obs.read_until("<show>dnd</show>", STEP)).unwrap();
        let dnd = dnd.lines().last().unwrap();
        assert!(dnd.contains("from='alice@example.test/finch'"), "{dnd}");
        assert!(dnd.contains("<status>in a call</status>"), "{dnd}");
        let (primitive, message) = blocking(|| {
            let saved = finch
                .purple_int("PurpleSavedstatusGetCurrent", &[])
                .unwrap();
            (
                finch
                    .purple_int("PurpleSavedstatusGetType", &[DbusArg::Int(saved)])
                    .unwrap(),
                finch
                    .purple_string("PurpleSavedstatusGetMessage", &[DbusArg::Int(saved)])
                    .unwrap(),
            )
        });
        assert_eq!((primitive, message.as_str()), (3, "in a call"));
        assert_eq!(
            until(&mut sub, "status:busy:in a call:0x00A").await,
            labels(&["status:busy:in a call:0x00A"])
        );

        // Chatty is available with the freeforchat substatus: <show>chat</show>.
        hub.set_status(&desktop(), Status::new(Availability::Chatty))
            .await
            .unwrap();
        let chat = blocking(|| obs.read_until("<show>chat</show>", STEP)).unwrap();
        assert!(!chat.lines().last().unwrap().contains("<status>"), "{chat}");
        assert_eq!(
            until(&mut sub, "status:chatty:0x002").await,
            labels(&["status:chatty:0x002"])
        );
        // And back to plain available, without a message.
        hub.set_status(&desktop(), Status::new(Availability::Available))
            .await
            .unwrap();
        let available = blocking(|| obs.read_until("<priority>1</priority>", STEP)).unwrap();
        let available = available.lines().last().unwrap();
        assert!(!available.contains("<show>"), "{available}");
        assert_eq!(
            until(&mut sub, "status:available:0x002").await,
            labels(&["status:available:0x002"])
        );

        let err = hub
            .set_status(&desktop(), Status::new(Availability::Unknown))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::Unsupported);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnecting_the_account_is_signed_out_by_the_user_and_connect_signs_in_again() {
    bounded(async {
        let world = blocking(World::start);
        let finch = blocking(|| world.finch(&[world.alice()]));
        blocking(|| finch.wait_signed_in(STEP)).unwrap();
        let hub = hub_on(world.bus.address());
        settled(&hub).await;
        let (_, mut sub) = subscribe(&hub).await;
        let account = blocking(|| first_account(&finch));

        blocking(|| finch.purple_call("PurpleAccountDisconnect", &[DbusArg::Int(account)]))
            .unwrap();
        assert_eq!(
            until(&mut sub, "status:offline:0x001").await,
            labels(&["signing_out", "signed_out:user", "status:offline:0x001"])
        );
        let snap = snapshot(&hub);
        assert_eq!(snap.client, Client::Running);
        assert_eq!(snap.resources[0].session, Session::SignedOut);

        blocking(|| finch.purple_call("PurpleAccountConnect", &[DbusArg::Int(account)])).unwrap();
        assert_eq!(
            until(&mut sub, "status:available:0x002").await,
            labels(&["signing_in", "signed_in:ok", "status:available:0x002"])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alt_q_signs_out_by_the_user_before_client_shutdown() {
    bounded(async {
        let world = blocking(World::start);
        let mut finch = blocking(|| world.finch(&[world.alice()]));
        blocking(|| finch.wait_signed_in(STEP)).unwrap();
        let hub = hub_on(world.bus.address());
        settled(&hub).await;
        let (_, mut sub) = subscribe(&hub).await;

        assert_eq!(blocking(|| finch.quit()).unwrap(), 0);
        assert_eq!(
            until(&mut sub, "client_shutdown").await,
            labels(&[
                "signing_out",
                "signed_out:user",
                "status:offline:0x001",
                "client_shutdown"
            ])
        );
        let snap = snapshot(&hub);
        assert_eq!(snap.client, Client::NotRunning);
        assert!(snap.resources.is_empty());
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_is_signed_out_client_exited_then_client_shutdown_and_a_restart_is_seen() {
    bounded(async {
        let world = blocking(World::start);
        let mut finch = blocking(|| world.finch(&[world.alice()]));
        blocking(|| finch.wait_signed_in(STEP)).unwrap();
        let hub = hub_on(world.bus.address());
        settled(&hub).await;
        let (_, mut sub) = subscribe(&hub).await;

        blocking(|| finch.kill9());
        assert_eq!(
            until(&mut sub, "client_shutdown").await,
            labels(&[
                "signed_out:client_exited",
                "status:offline:0x001",
                "client_shutdown"
            ])
        );

        blocking(|| finch.restart()).unwrap();
        assert_eq!(
            until(&mut sub, "status:available:0x002").await,
            labels(&[
                "client_started",
                "signing_in",
                "signed_in:ok",
                "status:available:0x002"
            ])
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prosody_stopping_is_server_shutdown_and_a_reconnect_after_its_restart_signs_in() {
    bounded(async {
        let mut world = blocking(World::start);
        let finch = blocking(|| world.finch(&[world.alice()]));
        blocking(|| finch.wait_signed_in(STEP)).unwrap();
        let hub = hub_on(world.bus.address());
        settled(&hub).await;
        let (_, mut sub) = subscribe(&hub).await;
        let account = blocking(|| first_account(&finch));

        blocking(|| world.prosody.stop()).unwrap();
        assert_eq!(
            until(&mut sub, "status:offline:0x001").await,
            labels(&[
                "signing_out",
                "signed_out:server_shutdown",
                "status:offline:0x001"
            ])
        );
        assert_eq!(snapshot(&hub).client, Client::Running);

        // finch's own retry waits ~10 s (P17): reconnect it explicitly.
        blocking(|| world.prosody.restart()).unwrap();
        blocking(|| finch.purple_call("PurpleAccountConnect", &[DbusArg::Int(account)])).unwrap();
        assert_eq!(
            until(&mut sub, "status:available:0x002").await,
            labels(&["signing_in", "signed_in:ok", "status:available:0x002"])
        );
        drop(finch);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_signed_in_auth_failed_and_the_session_stays_signed_out() {
    bounded(async {
        let world = blocking(World::start);
        let hub = hub_on(world.bus.address());
        settled(&hub).await;
        let (_, mut sub) = subscribe(&hub).await;

        let wrong = world.prosody.finch_account("alice", "not-the-password");
        let finch = blocking(|| world.finch(&[wrong]));
        assert_eq!(
            until(&mut sub, "signed_in:auth_failed").await,
            labels(&["client_started", "signing_in", "signed_in:auth_failed"])
        );
        let snap = snapshot(&hub);
        assert_eq!(snap.client, Client::Running);
        assert_eq!(snap.session, Session::SignedOut);
        assert_eq!(snap.resources[0].session, Session::SignedOut);
        drop(finch);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_in_one_finch_are_two_resources_and_the_filter_picks_one() {
    bounded(async {
        let world = blocking(World::start);
        let bob = world.prosody.finch_account("bob", "bobpw");
        let finch = blocking(|| world.finch(&[world.alice(), bob]));
        blocking(|| finch.wait_signed_in(STEP)).unwrap();

        let hub = hub_on(world.bus.address());
        settled(&hub).await;
        let (snap, _sub) = subscribe(&hub).await;
        let names: Vec<(&str, Session)> = snap
            .resources
            .iter()
            .map(|r| (r.resource.as_str(), r.session))
            .collect();
        assert_eq!(
            names,
            [
                (ALICE, Session::SignedIn),
                ("bob@example.test/finch", Session::SignedIn)
            ]
        );
        assert_eq!(snap.session, Session::SignedIn);

        let only_bob = hub_with(PurpleConfig {
            bus: Some(world.bus.address().into()),
            accounts: vec!["bob@example.test".into()],
            contacts: false,
        });
        settled(&only_bob).await;
        let snap = snapshot(&only_bob);
        let names: Vec<&str> = snap.resources.iter().map(|r| r.resource.as_str()).collect();
        assert_eq!(names, ["bob@example.test/finch"]);

        // Signing alice out leaves the filtered hub signed in and untouched.
        let mut sub = only_bob.subscribe();
        next(&mut sub).await;
        let alice = blocking(|| {
            let accounts = finch
                .purple_ints("PurpleAccountsGetAllActive", &[])
                .unwrap();
            accounts
                .into_iter()
                .find(|&a| {
                    finch
                        .purple_string("PurpleAccountGetUsername", &[DbusArg::Int(a)])
                        .unwrap()
                        == ALICE
                })
                .unwrap()
        });
        let (_, mut all) = subscribe(&hub).await;
        blocking(|| finch.purple_call("PurpleAccountDisconnect", &[DbusArg::Int(alice)])).unwrap();
        // The unfiltered hub is still signed in through bob.
        let mut changes = Vec::new();
        while changes.len() < 2 {
            let e = next(&mut all).await;
            if let imstatus_core::EventKind::ResourceChanged { resource, to, .. } = &e.kind {
                changes.push((resource.to_string(), to.as_ref().map(|r| r.session)));
            }
        }
        assert_eq!(
            changes,
            [
                (ALICE.to_owned(), Some(Session::SigningOut)),
                (ALICE.to_owned(), Some(Session::SignedOut))
            ]
        );
        assert_eq!(snapshot(&hub).session, Session::SignedIn);
        assert!(sub.try_recv().is_none(), "the filtered hub saw nothing");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_status_without_a_client_is_client_not_running() {
    bounded(async {
        let bus = blocking(imstatus_testkit::DbusDaemon::start).unwrap();
        let hub = hub_on(bus.address());
        settled(&hub).await;
        let err = hub
            .set_status(&desktop(), Status::new(Availability::Away))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ClientNotRunning, "{err}");

        let nowhere = hub_on("unix:path=/nonexistent/imstatus/bus.sock");
        let err = nowhere
            .set_status(&desktop(), Status::new(Availability::Away))
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ClientNotRunning, "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_walks_bus_client_accounts_and_connections() {
    bounded(async {
        let config = |bus: &str| PurpleConfig {
            bus: Some(bus.into()),
            accounts: vec![],
            contacts: false,
        };
        let checks = doctor(&config("unix:path=/nonexistent/imstatus/bus.sock")).await;
        assert_eq!(checks.len(), 1);
        assert_eq!((checks[0].name, checks[0].ok), ("bus", false));
        assert!(checks[0].hint.is_some());

        let world = blocking(World::start);
        let checks = doctor(&config(world.bus.address())).await;
        let steps: Vec<(&str, bool)> = checks.iter().map(|c| (c.name, c.ok)).collect();
        assert_eq!(steps, [("bus", true), ("client", false)]);
        assert!(
            checks[1].hint.as_deref().unwrap().contains("Finch"),
            "{checks:?}"
        );

        let finch = blocking(|| world.finch(&[world.alice()]));
        blocking(|| finch.wait_signed_in(STEP)).unwrap();
        let checks = doctor(&config(world.bus.address())).await;
        let steps: Vec<(&str, bool)> = checks.iter().map(|c| (c.name, c.ok)).collect();
        assert_eq!(
            steps,
            [
                ("bus", true),
                ("client", true),
                ("accounts", true),
                ("connection", true)
            ],
            "{checks:?}"
        );
        assert!(
            checks[1].detail.contains("libpurple 2."),
            "{}",
            checks[1].detail
        );
        assert_eq!(checks[2].detail, "alice@example.test/finch (prpl-jabber)");
        assert_eq!(checks[3].detail, "alice@example.test/finch: signed in");

        let mut filtered = config(world.bus.address());
        filtered.accounts = vec!["carol@example.test".into()];
        let checks = doctor(&filtered).await;
        assert_eq!(
            (checks[2].name, checks[2].ok),
            ("accounts", false),
            "{checks:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contacts_are_listed_and_follow_a_buddy_signing_in_and_out() {
    bounded(async {
        let world = blocking(World::start);
        let finch = blocking(|| world.finch(&[world.alice()]));
        blocking(|| finch.wait_signed_in(STEP)).unwrap();
        let hub = hub_with(PurpleConfig {
            bus: Some(world.bus.address().into()),
            accounts: vec![],
            contacts: true,
        });
        settled(&hub).await;
        let (snap, mut sub) = subscribe(&hub).await;
        let contacts: Vec<(&str, Availability)> = snap
            .contacts
            .iter()
            .map(|c| (c.contact.as_str(), c.availability))
            .collect();
        assert_eq!(
            contacts,
            [
                ("bob@example.test", Availability::Offline),
                ("watcher@example.test", Availability::Offline)
            ]
        );

        let mut bob = blocking(|| {
            let mut bob =
                XmppClient::connect(world.prosody.port(), "bob", "example.test", "bobpw", "desk")
                    .unwrap();
            bob.presence(Some("away"), Some("lunch"), Some(5)).unwrap();
            bob
        });
        assert_eq!(
            until(&mut sub, "contact:bob@example.test:away:lunch").await,
            labels(&["contact:bob@example.test:away:lunch"])
        );
        blocking(|| bob.presence(Some("dnd"), None, Some(5))).unwrap();
        assert_eq!(
            until(&mut sub, "contact:bob@example.test:busy").await,
            labels(&["contact:bob@example.test:busy"])
        );
        blocking(|| bob.close()).unwrap();
        assert_eq!(
            until(&mut sub, "contact:bob@example.test:offline").await,
            labels(&["contact:bob@example.test:offline"])
        );
        // The user's own status never moved.
        assert_eq!(snapshot(&hub).availability, Availability::Available);
    })
    .await;
}
