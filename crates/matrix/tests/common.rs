//! A hub watching one Matrix account, and helpers to read its events with deadlines.

use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use imstatus_config::Secret;
use imstatus_core::{AccountId, CodedError, ErrorCode, Event, EventKind, SourceKind, Status};
use imstatus_hub::{BoxFuture, Hub, Sink, Source, Subscription};
use imstatus_matrix::{Credentials, MatrixConfig, MatrixSource, UserId};
use tempfile::{NamedTempFile, TempDir};

/// The account name every test watches.
pub fn alice() -> AccountId {
    AccountId::new("alice")
}

/// A config with its password file (0600) and state directory, kept alive with it.
pub struct Account {
    pub config: MatrixConfig,
    _state: TempDir,
    _secret: NamedTempFile,
}

impl Account {
    /// `user` on `homeserver` with a password.
    pub fn password(homeserver: &str, user: &str, password: &str) -> Account {
        Account::new(homeserver, user, password, false)
    }

    /// `user` on `homeserver` with an access token file.
    pub fn token(homeserver: &str, user: &str, token: &str) -> Account {
        Account::new(homeserver, user, token, true)
    }

    fn new(homeserver: &str, user: &str, secret: &str, token: bool) -> Account {
        let mut file = NamedTempFile::new().unwrap();
        writeln!(file, "{secret}").unwrap();
        let path = Secret::File(file.path().to_owned());
        let credentials = if token {
            Credentials::AccessToken(path)
        } else {
            Credentials::Password(path)
        };
        let state = tempfile::tempdir().unwrap();
        let mut config = MatrixConfig::new(homeserver, UserId::parse(user).unwrap(), credentials);
        config.account = alice();
        config.state_dir = Some(state.path().to_owned());
        Account {
            config,
            _state: state,
            _secret: file,
        }
    }

    /// The source for this account, with short long-polls so tests see many syncs.
    pub fn source(&self) -> Arc<MatrixSource> {
        Arc::new(
            MatrixSource::new(&self.config, &alice())
                .unwrap()
                .with_backoff_seed(7)
                .with_poll(Duration::from_secs(2)),
        )
    }
}

/// A hub watching alice, and a subscription to it.
pub struct Watch {
    pub hub: Hub,
    pub sub: Subscription,
    pub source: Arc<MatrixSource>,
}

impl Watch {
    /// Starts a hub with `source`, subscribes, and only then lets the source run, so that no
    /// early event (a refused connection is reported within a millisecond) can be missed.
    pub fn start(source: Arc<MatrixSource>) -> Watch {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let gated = Arc::new(Gated {
            inner: source.clone(),
            gate: gate.clone(),
        });
        let hub = Hub::builder().with_source(alice(), gated).start();
        let sub = hub.subscribe();
        gate.add_permits(1);
        Watch { hub, sub, source }
    }

    /// Events up to and including the first that matches, within `within`.
    pub async fn until_within(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&Event) -> bool,
    ) -> Vec<Arc<Event>> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.sub.recv()).await {
                Ok(Some(event)) => {
                    let done = pred(&event);
                    seen.push(event);
                    if done {
                        return seen;
                    }
                }
                Ok(None) => panic!("hub closed while waiting for {what}; seen {seen:#?}"),
                Err(_) => panic!("no {what} within {within:?}; seen {seen:#?}"),
            }
        }
    }

    /// Events up to and including the first that matches, within 10 s.
    pub async fn until(&mut self, what: &str, pred: impl Fn(&Event) -> bool) -> Vec<Arc<Event>> {
        self.until_within(Duration::from_secs(10), what, pred).await
    }

    /// Every event that arrives within `quiet` (for "nothing more happens").
    pub async fn quiet_for(&mut self, quiet: Duration) -> Vec<Arc<Event>> {
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + quiet;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.sub.recv()).await {
            seen.push(event);
        }
        seen
    }

    /// The first sync: events up to the first `status_changed`.
    pub async fn synced(&mut self) -> Vec<Arc<Event>> {
        self.until("the first status_changed", is("status_changed"))
            .await
    }

    pub fn snapshot(&self) -> imstatus_core::Snapshot {
        self.hub
            .snapshot(&alice())
            .and_then(|e| e.snapshot().cloned())
            .unwrap()
    }
}

/// A source that runs `inner` once the gate has a permit.
struct Gated {
    inner: Arc<MatrixSource>,
    gate: Arc<tokio::sync::Semaphore>,
}

impl Source for Gated {
    fn kind(&self) -> SourceKind {
        self.inner.kind()
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let _ = self.gate.acquire().await;
            self.inner.clone().run(sink).await;
        })
    }

    fn set_status(&self, status: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        self.inner.set_status(status)
    }
}

pub fn names(events: &[Arc<Event>]) -> Vec<&'static str> {
    events.iter().map(|e| e.kind.name()).collect()
}

pub fn is(name: &'static str) -> impl Fn(&Event) -> bool {
    move |e| e.kind.name() == name
}

pub fn source_error(e: &Event) -> Option<(ErrorCode, &str, bool)> {
    match &e.kind {
        EventKind::SourceError {
            code,
            detail,
            session_unknown,
        } => Some((*code, detail.as_str(), *session_unknown)),
        _ => None,
    }
}

/// The kinds of events without seq and time, for whole-sequence comparisons.
pub fn kinds(events: &[Arc<Event>]) -> Vec<EventKind> {
    events.iter().map(|e| e.kind.clone()).collect()
}
