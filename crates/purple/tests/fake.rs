//! Malformed and odd signals through the real source, from a fake libpurple on a real private
//! bus: the kind of input real finch never sends on demand, and status changes faster than
//! finch makes them. The real-finch tests are in `finch.rs`; this only covers what they cannot
//! provoke.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use imstatus_core::{Availability, Session, Status};
use imstatus_testkit::DbusDaemon;
use zbus::object_server::SignalEmitter;
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

/// One connected account (handle 86) and libpurple's saved statuses, with the signals
/// libpurple emits while it handles a call (before its reply), as in recipe §4.
#[derive(Default)]
struct FakeSavedStatuses {
    /// Handle → (primitive, message).
    saved: HashMap<i32, (i32, String)>,
    current: i32,
    last: i32,
}

#[zbus::interface(name = "im.pidgin.purple.PurpleInterface")]
impl FakeSavedStatuses {
    #[zbus(name = "PurpleAccountsGetAllActive")]
    fn accounts_get_all_active(&self) -> Vec<i32> {
        vec![86]
    }

    #[zbus(name = "PurpleAccountGetUsername")]
    fn account_get_username(&self, _account: i32) -> String {
        ALICE.to_owned()
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
        self.current
    }

    #[zbus(name = "PurpleSavedstatusGetType")]
    fn savedstatus_get_type(&self, saved: i32) -> i32 {
        self.saved.get(&saved).map_or(0, |s| s.0)
    }

    #[zbus(name = "PurpleSavedstatusGetMessage")]
    fn savedstatus_get_message(&self, saved: i32) -> String {
        self.saved
            .get(&saved)
            .map(|s| s.1.clone())
            .unwrap_or_default()
    }

    #[zbus(name = "PurpleSavedstatusHasSubstatuses")]
    fn savedstatus_has_substatuses(&self, _saved: i32) -> i32 {
        0
    }

    #[zbus(name = "PurpleSavedstatusFindTransientByTypeAndMessage")]
    fn savedstatus_find_transient(&self, primitive: i32, message: &str) -> i32 {
        self.saved
            .iter()
            .find(|(_, (p, m))| *p == primitive && m == message)
            .map_or(0, |(&h, _)| h)
    }

    #[zbus(name = "PurpleSavedstatusNew")]
    async fn savedstatus_new(
        &mut self,
        _title: &str,
        primitive: i32,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> i32 {
        self.last += 1;
        let saved = self.last;
        self.saved.insert(saved, (primitive, String::new()));
        emitter
            .emit(INTERFACE, "SavedstatusAdded", &(saved,))
            .await
            .unwrap();
        saved
    }

    #[zbus(name = "PurpleSavedstatusSetMessage")]
    async fn savedstatus_set_message(
        &mut self,
        saved: i32,
        message: &str,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) {
        if let Some(s) = self.saved.get_mut(&saved) {
            s.1 = message.to_owned();
        }
        emitter
            .emit(INTERFACE, "SavedstatusModified", &(saved,))
            .await
            .unwrap();
    }

    #[zbus(name = "PurpleSavedstatusActivate")]
    async fn savedstatus_activate(
        &mut self,
        saved: i32,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) {
        let old = std::mem::replace(&mut self.current, saved);
        emitter
            .emit(INTERFACE, "AccountStatusChanged", &(86i32, old, saved))
            .await
            .unwrap();
        emitter
            .emit(INTERFACE, "SavedstatusChanged", &(saved, old))
            .await
            .unwrap();
    }
}

impl FakeSavedStatuses {
    /// Starts with the transient "available" saved status 149 current.
    fn new() -> Self {
        FakeSavedStatuses {
            saved: HashMap::from([(149, (2, String::new()))]),
            current: 149,
            last: 149,
        }
    }
}

/// One connected account (handle 86) whose saved status 500 takes a burst to read: asked for
/// its type, it first emits `BURST` `AccountStatusChanged` signals, then activates saved status
/// 501 ("away: burst") and emits its `SavedstatusChanged`, all before it answers. Counts the
/// full queries (`PurpleAccountsGetAllActive`). Activating a saved status changes what it
/// answers and emits `SavedstatusChanged`, as libpurple does.
struct FakeBurst {
    current: Arc<AtomicI32>,
    queries: Arc<AtomicUsize>,
}

/// More signals than the source's queue holds (1024), with room to spare.
const BURST: usize = 5000;

#[zbus::interface(name = "im.pidgin.purple.PurpleInterface")]
impl FakeBurst {
    #[zbus(name = "PurpleAccountsGetAllActive")]
    fn accounts_get_all_active(&self) -> Vec<i32> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        vec![86]
    }

    #[zbus(name = "PurpleAccountGetUsername")]
    fn account_get_username(&self, _account: i32) -> String {
        ALICE.to_owned()
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
        self.current.load(Ordering::SeqCst)
    }

    #[zbus(name = "PurpleSavedstatusGetType")]
    async fn savedstatus_get_type(
        &self,
        saved: i32,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) -> i32 {
        match saved {
            500 => {
                for _ in 0..BURST {
                    emitter
                        .emit(INTERFACE, "AccountStatusChanged", &(86i32, 500i32, 500i32))
                        .await
                        .unwrap();
                }
                self.current.store(501, Ordering::SeqCst);
                emitter
                    .emit(INTERFACE, "SavedstatusChanged", &(501i32, 500i32))
                    .await
                    .unwrap();
                3
            }
            501 => 5,
            _ => 2,
        }
    }

    #[zbus(name = "PurpleSavedstatusGetMessage")]
    fn savedstatus_get_message(&self, saved: i32) -> String {
        if saved == 501 {
            "burst".to_owned()
        } else {
            String::new()
        }
    }

    #[zbus(name = "PurpleSavedstatusHasSubstatuses")]
    fn savedstatus_has_substatuses(&self, _saved: i32) -> i32 {
        0
    }

    #[zbus(name = "PurpleSavedstatusActivate")]
    async fn savedstatus_activate(
        &self,
        saved: i32,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
    ) {
        let old = self.current.swap(saved, Ordering::SeqCst);
        emitter
            .emit(INTERFACE, "SavedstatusChanged", &(saved, old))
            .await
            .unwrap();
    }
}

async fn fake_purple(bus: &DbusDaemon) -> Connection {
    fake_purple_serving(bus, FakePurple).await
}

async fn fake_purple_serving<I: zbus::object_server::Interface>(
    bus: &DbusDaemon,
    iface: I,
) -> Connection {
    zbus::connection::Builder::address(bus.address())
        .unwrap()
        .serve_at(PATH, iface)
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

/// Status changes while the source is busy with earlier ones: its background reads and the
/// lookups it waits for share one bus connection with the status setters, so they queue for
/// the same socket. However they interleave, every call completes and the source keeps up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_status_changes_never_stall_the_source() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let bus = blocking(DbusDaemon::start).unwrap();
        let _purple = fake_purple_serving(&bus, FakeSavedStatuses::new()).await;
        let hub = std::sync::Arc::new(hub_on(bus.address()));
        settled(&hub).await;
        let (snap, mut sub) = subscribe(&hub).await;
        assert_eq!(snap.session, Session::SignedIn);

        let setters = (0..3).map(|setter| {
            let hub = hub.clone();
            tokio::spawn(async move {
                for i in 0..100 {
                    let status = Status::with_message(Availability::Away, format!("{setter}.{i}"));
                    tokio::time::timeout(STEP, hub.set_status(&desktop(), status))
                        .await
                        .unwrap_or_else(|_| panic!("setting status {setter}.{i} stalled"))
                        .unwrap();
                }
            })
        });
        for setter in futures_util::future::join_all(setters).await {
            setter.unwrap();
        }
        hub.set_status(&desktop(), Status::with_message(Availability::Busy, "done"))
            .await
            .unwrap();
        let seen = until(&mut sub, "status:busy:done:0x00A").await;
        assert_eq!(seen.last().unwrap(), "status:busy:done:0x00A");
    })
    .await
    .expect("within the limit");
}

/// libpurple sending more signals than the source's queue holds while the source waits for an
/// answer: the pump drops the excess (the last signal, the one that matters, among it), and the
/// source reads the whole client again, so it ends up with libpurple's real status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_that_overflows_the_queue_is_followed_by_a_full_read_and_the_state_is_right() {
    tokio::time::timeout(Duration::from_secs(60), async {
        let bus = blocking(DbusDaemon::start).unwrap();
        let current = Arc::new(AtomicI32::new(149));
        let queries = Arc::new(AtomicUsize::new(0));
        let purple = fake_purple_serving(
            &bus,
            FakeBurst {
                current: current.clone(),
                queries: queries.clone(),
            },
        )
        .await;
        let hub = hub_on(bus.address());
        settled(&hub).await;
        let (snap, mut sub) = subscribe(&hub).await;
        assert_eq!(
            (snap.session, snap.availability),
            (Session::SignedIn, Availability::Available)
        );
        assert_eq!(queries.load(Ordering::SeqCst), 1);

        // Saved status 500 is new to the source: it asks for it and waits, and the burst comes
        // (on the wire, before the answer).
        emit(&purple, "SavedstatusChanged", &(500i32, 149i32)).await;
        assert_eq!(
            until(&mut sub, "status:away:burst:0x022").await,
            ["status:busy:0x00A", "status:away:burst:0x022"]
        );
        assert_eq!(current.load(Ordering::SeqCst), 501);
        // At least one full read after the drop (a second one when the last signals of the
        // burst were dropped after the first had begun).
        let reads = queries.load(Ordering::SeqCst);
        assert!(reads >= 2, "{reads} full reads");
        // And the source goes on: the next change is seen, whether through its signal or,
        // had that been dropped too, through one more full read.
        let user = zbus::connection::Builder::address(bus.address())
            .unwrap()
            .build()
            .await
            .unwrap();
        user.call_method(
            Some("im.pidgin.purple.PurpleService"),
            PATH,
            Some(INTERFACE),
            "PurpleSavedstatusActivate",
            &(149i32,),
        )
        .await
        .unwrap();
        assert_eq!(
            until(&mut sub, "status:available:0x002").await,
            ["status:available:0x002"]
        );
        assert_eq!(hub.source_error(&desktop()), None);
    })
    .await
    .expect("within the limit");
}
