//! A hostile peer on the same bus as real finch: it spoofs the bus daemon's `NameOwnerChanged`
//! and libpurple's signals, sent straight to imstatus's unique name and broadcast, and floods
//! imstatus with them. None of it may change what imstatus reports, and its memory stays
//! bounded.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::common::*;
use imstatus_core::{Client, Session};
use imstatus_hub::Subscription;
use zbus::message::Message;
use zbus::Connection;

const DBUS: &str = "org.freedesktop.DBus";
const DBUS_PATH: &str = "/org/freedesktop/DBus";
const PURPLE_SERVICE: &str = "im.pidgin.purple.PurpleService";
const PURPLE_PATH: &str = "/im/pidgin/purple/PurpleObject";
const PURPLE_INTERFACE: &str = "im.pidgin.purple.PurpleInterface";

/// How many signals the flood sends.
const FLOOD: usize = 1_000_000;
/// How much the test process's peak RSS may grow during the flood. The flood is ~150 MB on
/// the wire; a source that queued it would grow by several hundred MiB.
const RSS_BOUND_KIB: u64 = 32 * 1024;

async fn bounded(limit: Duration, test: impl Future<Output = ()>) {
    tokio::time::timeout(limit, test)
        .await
        .expect("the test finished within its limit");
}

async fn connect(address: &str) -> Connection {
    zbus::connection::Builder::address(address)
        .unwrap()
        .build()
        .await
        .unwrap()
}

async fn call<R>(conn: &Connection, method: &str, body: &impl Body) -> R
where
    R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    let reply = conn
        .call_method(Some(DBUS), DBUS_PATH, Some(DBUS), method, body)
        .await
        .unwrap();
    reply.body().deserialize::<R>().unwrap()
}

/// A serialisable D-Bus body.
trait Body: zbus::export::serde::Serialize + zbus::zvariant::DynamicType {}
impl<T: zbus::export::serde::Serialize + zbus::zvariant::DynamicType> Body for T {}

/// The unique names on the bus.
async fn unique_names(conn: &Connection) -> HashSet<String> {
    call::<Vec<String>>(conn, "ListNames", &())
        .await
        .into_iter()
        .filter(|n| n.starts_with(':'))
        .collect()
}

/// A signal from the peer: to `dest`, or broadcast when `None`.
fn signal(
    dest: Option<&str>,
    path: &str,
    interface: &str,
    member: &str,
    body: &impl Body,
) -> Message {
    let mut builder = Message::signal(path, interface, member).unwrap();
    if let Some(dest) = dest {
        builder = builder.destination(dest.to_owned()).unwrap();
    }
    builder.build(body).unwrap()
}

/// Every lie the peer tells, to each of `targets` and broadcast: libpurple's owner left (and
/// the peer took over), the account signed off, another saved status, libpurple quitting.
fn lies(targets: &[String], owner: &str, peer: &str, account: i32) -> Vec<Message> {
    let dests = targets.iter().map(|t| Some(t.as_str())).chain([None]);
    dests
        .flat_map(|dest| {
            [
                signal(
                    dest,
                    DBUS_PATH,
                    DBUS,
                    "NameOwnerChanged",
                    &(PURPLE_SERVICE, owner, ""),
                ),
                signal(
                    dest,
                    DBUS_PATH,
                    DBUS,
                    "NameOwnerChanged",
                    &(PURPLE_SERVICE, "", peer),
                ),
                signal(
                    dest,
                    PURPLE_PATH,
                    PURPLE_INTERFACE,
                    "AccountSignedOff",
                    &(account,),
                ),
                signal(
                    dest,
                    PURPLE_PATH,
                    PURPLE_INTERFACE,
                    "SavedstatusChanged",
                    &(7i32, 8i32),
                ),
                signal(dest, PURPLE_PATH, PURPLE_INTERFACE, "Quitting", &()),
            ]
        })
        .collect()
}

/// Sends `messages` over and over, `total` in all, then makes sure the bus has handed every
/// one on (the bus handles a connection's messages in order: its reply to a later call comes
/// after them).
async fn send_all(peer: &Connection, messages: &[Message], total: usize) {
    for msg in messages.iter().cycle().take(total) {
        peer.send(msg).await.unwrap();
    }
    let _: String = call(peer, "GetId", &()).await;
}

/// Collects labelled events until `last`, within `deadline`.
async fn until_within(sub: &mut Subscription, last: &str, deadline: Duration) -> Vec<String> {
    let end = Instant::now() + deadline;
    let mut seen = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let e = match tokio::time::timeout(left, sub.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("hub gone; seen so far: {seen:?}"),
            Err(_) => panic!("no `{last}` within {deadline:?}; seen: {seen:?}"),
        };
        if let Some(l) = label(&e) {
            let done = l == last;
            seen.push(l);
            if done {
                return seen;
            }
        }
    }
}

/// `VmHWM` (peak RSS) or `VmRSS` of this process, in KiB.
fn memory_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Real finch signed in, a hub watching it, the peer, imstatus's unique names, finch's unique
/// name and account handle.
/// Fields drop in order: the hub, the peer, finch, then Prosody and the bus.
struct Scene {
    hub: imstatus_hub::Hub,
    peer: Connection,
    targets: Vec<String>,
    owner: String,
    account: i32,
    finch: imstatus_testkit::Finch,
    _world: World,
}

async fn scene() -> Scene {
    let world = blocking(World::start);
    let finch = blocking(|| world.finch(&[world.alice()]));
    blocking(|| finch.wait_signed_in(STEP)).unwrap();
    let peer = connect(world.bus.address()).await;
    let before = unique_names(&peer).await;
    let hub = hub_on(world.bus.address());
    settled(&hub).await;
    // imstatus's connection is the one that appeared with the hub.
    let mut targets: Vec<String> = unique_names(&peer)
        .await
        .difference(&before)
        .cloned()
        .collect();
    targets.sort();
    assert!(!targets.is_empty(), "imstatus is on the bus");
    let owner: String = call(&peer, "GetNameOwner", &(PURPLE_SERVICE,)).await;
    let account = blocking(|| first_account(&finch));
    Scene {
        hub,
        peer,
        targets,
        owner,
        account,
        finch,
        _world: world,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_spoofing_the_bus_and_libpurple_changes_nothing() {
    bounded(Duration::from_secs(40), async {
        let s = scene().await;
        let (snap, mut sub) = subscribe(&s.hub).await;
        assert_eq!(
            (snap.client, snap.session),
            (Client::Running, Session::SignedIn)
        );
        let me = s.peer.unique_name().unwrap().to_string();
        let lies = lies(&s.targets, &s.owner, &me, s.account);
        send_all(&s.peer, &lies, lies.len()).await;

        // The next thing imstatus reports is finch's own change, and nothing before it.
        blocking(|| s.finch.set_status(5, Some("lunch"))).unwrap();
        assert_eq!(
            until(&mut sub, "status:away:lunch:0x022").await,
            ["status:away:lunch:0x022"]
        );
        let snap = snapshot(&s.hub);
        assert_eq!(
            (snap.client, snap.session),
            (Client::Running, Session::SignedIn)
        );
        assert_eq!(s.hub.source_error(&desktop()), None);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_signals_from_a_peer_keep_memory_bounded_and_the_state_right() {
    bounded(Duration::from_secs(300), async {
        let s = scene().await;
        let (_, mut sub) = subscribe(&s.hub).await;
        let me = s.peer.unique_name().unwrap().to_string();
        let lies = lies(&s.targets, &s.owner, &me, s.account);

        let (rss, peak) = (memory_kib("VmRSS:"), memory_kib("VmHWM:"));
        let started = Instant::now();
        send_all(&s.peer, &lies, FLOOD).await;
        let sent = started.elapsed();
        // finch's change comes after the whole flood: seeing it means imstatus read it all.
        blocking(|| s.finch.set_status(3, Some("flooded"))).unwrap();
        let seen = until_within(
            &mut sub,
            "status:busy:flooded:0x00A",
            Duration::from_secs(120),
        )
        .await;
        let drained = started.elapsed();
        let (rss_after, peak_after) = (memory_kib("VmRSS:"), memory_kib("VmHWM:"));
        eprintln!(
            "flood of {FLOOD}: sent in {sent:?}, seen through in {drained:?}; \
             RSS {rss} -> {rss_after} KiB, peak {peak} -> {peak_after} KiB"
        );
        assert_eq!(seen, ["status:busy:flooded:0x00A"]);
        assert!(
            peak_after.saturating_sub(peak) < RSS_BOUND_KIB,
            "peak RSS grew from {peak} to {peak_after} KiB"
        );
        let snap = snapshot(&s.hub);
        assert_eq!(
            (snap.client, snap.session),
            (Client::Running, Session::SignedIn)
        );
        assert_eq!(s.hub.source_error(&desktop()), None);
    })
    .await;
}
