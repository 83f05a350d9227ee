//! Malformed and odd signals through the real source, from a fake libpurple on a real private
//! bus: the kind of input real finch never sends on demand. The real-finch tests are in
//! `finch.rs`; this only covers what they cannot provoke.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use imstatus_core::Session;
use imstatus_testkit::DbusDaemon;
use zbus::Connection;

const PATH: &str = "/im/pidgin/purple/PurpleObject";
const INTERFACE: &str = "im.pidgin.purple.PurpleInterface";

/// Just enough of libpurple's API for one connected account (handle 86).
struct FakePurple;

#[zbus::interface(name = "im.pidgin.purple.PurpleInterface")]
impl FakePurple {
    #[zbus(name = "PurpleAccountsGetAllActive")]
    fn accounts_get_all_active(&self) -> Vec<i32> {
        vec![86]
    }

    #[zbus(name = "PurpleAccountGetUsername")]
    fn account_get_username(&self, account: i32) -> zbus::fdo::Result<String> {
        match account {
            86 => Ok(ALICE.to_owned()),
            _ => Err(zbus::fdo::Error::InvalidArgs(format!(
                "no account {account}"
            ))),
        }
    }

    #[zbus(name = "PurpleAccountIsConnected")]
    fn account_is_connected(&self, _account: i32) -> i32 {
        1
    }

    #[zbus(name = "PurpleAccountIsConnecting")]
    fn account_is_connecting(&self, _account: i32) -> i32 {
        0
    }

    #[zbus(name = "PurpleAccountGetConnection")]
    fn account_get_connection(&self, _account: i32) -> i32 {
        148
    }

    #[zbus(name = "PurpleSavedstatusGetCurrent")]
    fn savedstatus_get_current(&self) -> i32 {
        149
    }

    #[zbus(name = "PurpleSavedstatusGetType")]
    fn savedstatus_get_type(&self, _saved: i32) -> i32 {
        2
    }

    #[zbus(name = "PurpleSavedstatusGetMessage")]
    fn savedstatus_get_message(&self, _saved: i32) -> String {
        String::new()
    }

    #[zbus(name = "PurpleSavedstatusHasSubstatuses")]
    fn savedstatus_has_substatuses(&self, _saved: i32) -> i32 {
        0
    }
}

async fn fake_purple(bus: &DbusDaemon) -> Connection {
    zbus::connection::Builder::address(bus.address())
        .unwrap()
        .serve_at(PATH, FakePurple)
        .unwrap()
        .name("im.pidgin.purple.PurpleService")
        .unwrap()
        .build()
        .await
        .unwrap()
}

async fn emit<B>(conn: &Connection, member: &str, body: &B)
where
    B: zbus::export::serde::Serialize + zbus::zvariant::DynamicType,
{
    conn.emit_signal(None::<&str>, PATH, INTERFACE, member, body)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_signals_are_anomalies_and_the_source_carries_on() {
    tokio::time::timeout(Duration::from_secs(30), async {
        let bus = blocking(DbusDaemon::start).unwrap();
        let purple = fake_purple(&bus).await;
        let hub = hub_on(bus.address());
        settled(&hub).await;
        let (snap, mut sub) = subscribe(&hub).await;
        assert_eq!(snap.session, Session::SignedIn);

        // Someone else on the bus sending libpurple-looking garbage is ignored entirely.
        let stranger = zbus::connection::Builder::address(bus.address())
            .unwrap()
            .build()
            .await
            .unwrap();
        emit(&stranger, "AccountSignedOff", &("eighty-six",)).await;
        emit(&stranger, "AccountSignedOff", &(86i32,)).await;
        // The client's own garbage is an anomaly, and nothing else changes.
        emit(&purple, "AccountSignedOff", &("eighty-six",)).await;
        assert_eq!(
            until(&mut sub, "source_error:protocol_error").await,
            ["source_error:protocol_error"]
        );
        // An integer sent as a string (P14) is read.
        emit(&purple, "AccountSignedOff", &("86",)).await;
        assert_eq!(
            until(&mut sub, "status:offline:0x001").await,
            ["signed_out:user", "status:offline:0x001"]
        );
        // A handle libpurple does not know is looked up, reported as an anomaly, then ignored.
        emit(&purple, "AccountConnecting", &(999i32,)).await;
        let seen = until(&mut sub, "source_error:protocol_error").await;
        assert_eq!(seen, ["source_error:protocol_error"]);
        // And the source still works.
        emit(&purple, "AccountConnecting", &(86i32,)).await;
        emit(&purple, "AccountSignedOn", &(86i32,)).await;
        assert_eq!(
            until(&mut sub, "status:available:0x002").await,
            ["signing_in", "signed_in:ok", "status:available:0x002"]
        );
        assert_eq!(hub.source_error(&desktop()), None);
    })
    .await
    .expect("within the limit");
}
