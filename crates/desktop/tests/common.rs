//! A hub around one desktop account, and waiting for its events with deadlines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_core::{AccountId, Activity, Event, EventKind};
use imstatus_desktop::{DesktopConfig, DesktopSource};
use imstatus_hub::{Hub, Subscription};

pub const DEADLINE: Duration = Duration::from_secs(10);

pub fn account() -> AccountId {
    AccountId::new("desk")
}

pub struct Desk {
    pub hub: Hub,
    pub sub: Subscription,
}

impl Desk {
    pub fn start(config: DesktopConfig) -> Desk {
        let hub = Hub::builder()
            .with_source(account(), Arc::new(DesktopSource::new(config)))
            .start();
        let sub = hub.subscribe();
        Desk { hub, sub }
    }

    /// The next event, within `deadline`.
    pub async fn next(&mut self, deadline: Duration) -> Arc<Event> {
        match tokio::time::timeout(deadline, self.sub.recv()).await {
            Ok(Some(e)) => {
                // Shown when a test fails.
                eprintln!("{}", serde_json::to_string(&*e).unwrap_or_default());
                e
            }
            Ok(None) => panic!("the hub stopped"),
            Err(_) => panic!("no event within {deadline:?}"),
        }
    }

    /// The next event satisfying `f`, within `deadline` (others are skipped).
    pub async fn until<T>(&mut self, deadline: Duration, f: impl Fn(&Event) -> Option<T>) -> T {
        let end = Instant::now() + deadline;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let e = self.next(left).await;
            if let Some(t) = f(&e) {
                return t;
            }
        }
    }

    /// The next `activity_changed`'s `to`, within `deadline`, failing on a `source_error`.
    pub async fn activity(&mut self, deadline: Duration) -> Activity {
        self.until(deadline, |e| match &e.kind {
            EventKind::ActivityChanged { to, .. } => Some((**to).clone()),
            EventKind::SourceError { code, detail, .. } => {
                panic!("unexpected source_error {code}: {detail}")
            }
            _ => None,
        })
        .await
    }

    /// The activity as first known: from the snapshot a subscriber gets first if the source
    /// reported it already, else from the first `activity_changed`.
    pub async fn first_activity(&mut self) -> Activity {
        let first = self.next(DEADLINE).await;
        let snapshot = first.snapshot().expect("a snapshot first");
        match &snapshot.activity {
            Some(a) => a.clone(),
            None => self.activity(DEADLINE).await,
        }
    }

    /// Nothing but `activity_changed` events that `ignore` accepts during `window` (an
    /// absence, so it waits the whole window).
    pub async fn quiet(&mut self, window: Duration) {
        if let Ok(Some(e)) = tokio::time::timeout(window, self.sub.recv()).await {
            panic!("expected no event, got {e:?}");
        }
    }

    /// The `source_error` that comes next (other events skipped), as (code, detail).
    pub async fn source_error(&mut self, deadline: Duration) -> (String, String) {
        self.until(deadline, |e| match &e.kind {
            EventKind::SourceError { code, detail, .. } => Some((code.to_string(), detail.clone())),
            _ => None,
        })
        .await
    }
}
