//! Shared helpers of the end-to-end tests: the real source in a hub, events as labels.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_core::{AccountId, Event, EventKind, SignInResult, Snapshot, Status};
use imstatus_hub::{Hub, Subscription};
use imstatus_purple::PurpleConfig;
use imstatus_purple::PurpleSource;
use imstatus_testkit::{DbusDaemon, Finch, FinchAccount, Prosody, ProsodyOptions};

/// Every wait of a test step.
pub const STEP: Duration = Duration::from_secs(10);
/// The account name the hub uses.
pub const DESKTOP: &str = "desktop";
/// finch's first account.
pub const ALICE: &str = "alice@example.test/finch";

/// Runs blocking testkit code on this worker without starving the hub (multi-thread runtime).
pub fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The account id.
pub fn desktop() -> AccountId {
    AccountId::new(DESKTOP)
}

/// A hub watching the bus at `address` with a real `PurpleSource`.
pub fn hub_on(address: &str) -> Hub {
    hub_with(PurpleConfig {
        bus: Some(address.into()),
        accounts: vec![],
        contacts: false,
    })
}

/// A hub with a real `PurpleSource` for `config`.
pub fn hub_with(config: PurpleConfig) -> Hub {
    Hub::builder()
        .with_source(desktop(), Arc::new(PurpleSource::new(&config)))
        .start()
}

/// Waits until the source synchronised (or reported why not).
pub async fn settled(hub: &Hub) {
    assert!(
        hub.wait_settled(&[desktop()], STEP).await,
        "the source settled"
    );
}

/// Subscribes and returns the first event's snapshot with the subscription.
pub async fn subscribe(hub: &Hub) -> (Snapshot, Subscription) {
    let mut sub = hub.subscribe();
    let first = next(&mut sub).await;
    let snap = first.snapshot().expect("a snapshot first").clone();
    (snap, sub)
}

/// The next event within [`STEP`].
pub async fn next(sub: &mut Subscription) -> Arc<Event> {
    tokio::time::timeout(STEP, sub.recv())
        .await
        .expect("an event within the step deadline")
        .expect("the hub is alive")
}

/// A short label of an event for whole-sequence assertions (`resource_changed` is `None`:
/// every test checks parts through snapshots instead).
pub fn label(e: &Event) -> Option<String> {
    let status = |s: &Status| match &s.message {
        Some(m) => format!("{}:{m}", s.availability),
        None => s.availability.to_string(),
    };
    Some(match &e.kind {
        EventKind::ResourceChanged { .. } => return None,
        EventKind::SignedIn { result } => match result {
            SignInResult::Ok => "signed_in:ok".to_owned(),
            SignInResult::Failed(code) => format!("signed_in:{code}"),
        },
        EventKind::SignedOut { reason } => {
            format!("signed_out:{}", serde_name(reason))
        }
        EventKind::StatusChanged { to, mistatus, .. } => {
            format!("status:{}:0x{mistatus:03X}", status(to))
        }
        EventKind::SourceError { code, .. } => format!("source_error:{code}"),
        EventKind::ContactStatusChanged { contact, to, .. } => {
            format!("contact:{contact}:{}", status(to))
        }
        other => other.name().to_owned(),
    })
}

fn serde_name(reason: &imstatus_core::SignOutReason) -> String {
    format!("{reason:?}")
        .chars()
        .fold(String::new(), |mut out, c| {
            if c.is_ascii_uppercase() && !out.is_empty() {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            out
        })
}

/// Collects labelled events until one equals `last` (included), within [`STEP`].
pub async fn until(sub: &mut Subscription, last: &str) -> Vec<String> {
    let deadline = Instant::now() + STEP;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = match tokio::time::timeout(left, sub.recv()).await {
            Ok(Some(e)) => e,
            Ok(None) => panic!("hub gone; seen so far: {seen:?}"),
            Err(_) => panic!("no `{last}` within {STEP:?}; seen: {seen:?}"),
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

/// The hub's current snapshot of the account.
pub fn snapshot(hub: &Hub) -> Snapshot {
    hub.snapshot(&desktop())
        .and_then(|e| e.snapshot().cloned())
        .expect("a snapshot")
}

/// Prosody (plain), a private bus.
pub struct World {
    /// The XMPP server.
    pub prosody: Prosody,
    /// The private bus.
    pub bus: DbusDaemon,
}

impl World {
    /// Starts Prosody with the default users and a private bus.
    pub fn start() -> World {
        let prosody = Prosody::start(ProsodyOptions::default()).unwrap();
        let bus = DbusDaemon::start().unwrap();
        World { prosody, bus }
    }

    /// alice's finch account.
    pub fn alice(&self) -> FinchAccount {
        self.prosody.finch_account("alice", "alicepw")
    }

    /// Starts finch with `accounts` on the private bus (does not wait).
    pub fn finch(&self, accounts: &[FinchAccount]) -> Finch {
        Finch::start(&self.bus, accounts).unwrap()
    }
}

/// The handle of finch's first active account.
pub fn first_account(finch: &Finch) -> i32 {
    finch
        .purple_ints("PurpleAccountsGetAllActive", &[])
        .unwrap()[0]
}
