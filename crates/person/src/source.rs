//! [`PersonSource`]: follows the members, reports the rule's decision, performs `sync`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::future::join_all;
use imstatus_config::PersonConfig;
use imstatus_core::person::{Person, PersonState, Write, WriteKind};
use imstatus_core::{AccountId, CodedError, ErrorCode, Observation, SourceKind, Status, Timestamp};
use imstatus_hub::{BoxFuture, Sink, Source};
use tokio::sync::{mpsc, oneshot};

/// How many `set` requests may wait for the person's loop; one more waits for room.
pub const COMMANDS: usize = 8;

/// How long one write to a member may take before it counts as failed (`timeout`).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn now() -> Timestamp {
    Timestamp::from_system_time(SystemTime::now())
}

/// `imstatus set` on the person: set every synced member.
struct Command {
    status: Status,
    reply: oneshot::Sender<Result<(), CodedError>>,
}

/// One `[[person]]`: its members' events in, its state out, `sync`'s writes performed.
///
/// `run` subscribes to the members and the signals account through its sink, waits until
/// each of them has settled (synchronised, or reported why its source is down), and from
/// then on reports after every whole batch of their events. `set_status` hands the status to
/// the running loop (through a queue of [`COMMANDS`]), which sets it on every synced member:
/// those are the user's own changes, not imstatus's, so they count for rule 2.
#[derive(Debug)]
pub struct PersonSource {
    config: PersonConfig,
    commands: Mutex<Option<mpsc::Sender<Command>>>,
}

impl PersonSource {
    /// The source of one `[[person]]`; nothing happens until the hub runs it.
    pub fn new(config: &PersonConfig) -> Self {
        PersonSource {
            config: config.clone(),
            commands: Mutex::new(None),
        }
    }

    fn not_running(&self) -> CodedError {
        CodedError::new(
            ErrorCode::Disconnected,
            format!("person `{}` is not running", self.config.name),
        )
    }

    async fn run_loop(self: Arc<Self>, sink: Sink) {
        let (tx, mut commands) = mpsc::channel(COMMANDS);
        *self.commands.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let mut person = Person::new(
            self.config.accounts.clone(),
            self.config.signals.clone(),
            self.config.sync.clone(),
        );
        let watched = person.accounts();
        let mut sub = sink.subscribe_to(watched.iter().cloned().collect());
        let settle = sink.wait_settled(&watched);
        tokio::pin!(settle);
        let mut settled = false;
        let mut reported: Option<Result<PersonState, CodedError>> = None;
        loop {
            tokio::select! {
                // Events first: when the members have settled, the events of their sync are
                // already out, and the first report comes after them.
                biased;
                batch = sub.recv_batch() => match batch {
                    Some(batch) => person.handle_events(now(), batch.iter().map(|e| &**e)),
                    None => return,
                },
                () = &mut settle, if !settled => settled = true,
                Some(command) = commands.recv() => {
                    let result = self.set_members(&sink, command.status).await;
                    // The caller may have gone; nothing to tell then.
                    let _ = command.reply.send(result);
                    continue;
                }
            }
            if !settled {
                continue;
            }
            report(&sink, &person, &mut reported);
            let writes = person.poll_writes(now());
            if !writes.is_empty() {
                perform(&sink, &mut person, writes).await;
            }
        }
    }

    /// `imstatus set` on the person: every synced member, at once.
    async fn set_members(&self, sink: &Sink, status: Status) -> Result<(), CodedError> {
        if self.config.sync.is_empty() {
            return Err(CodedError::new(
                ErrorCode::Unsupported,
                format!(
                    "person `{}` has no `sync` accounts whose status it could set",
                    self.config.name
                ),
            ));
        }
        let results = join_all(self.config.sync.iter().map(|account| {
            let set = sink.set_status(account, status.clone());
            async move { (account, timed(set).await) }
        }))
        .await;
        match results
            .into_iter()
            .find_map(|(a, r)| r.err().map(|e| (a, e)))
        {
            None => Ok(()),
            Some((account, e)) => Err(CodedError::new(e.code, format!("{account}: {}", e.detail))),
        }
    }
}

/// A write with [`WRITE_TIMEOUT`].
async fn timed(write: BoxFuture<'static, Result<(), CodedError>>) -> Result<(), CodedError> {
    tokio::time::timeout(WRITE_TIMEOUT, write)
        .await
        .unwrap_or_else(|_| {
            Err(CodedError::new(
                ErrorCode::Timeout,
                format!("no answer within {} s", WRITE_TIMEOUT.as_secs()),
            ))
        })
}

/// Reports the person's state when it changed: the rule's decision and `Synced`, or the
/// source down when no member's session is known.
fn report(sink: &Sink, person: &Person, reported: &mut Option<Result<PersonState, CodedError>>) {
    let state = person.state();
    if reported.as_ref() == Some(&state) {
        return;
    }
    match &state {
        Ok(s) => sink.observe_all([
            Observation::Person(Box::new(s.clone())),
            Observation::Synced,
        ]),
        Err(e) => sink.observe(Observation::SourceDown(e.code, e.detail.clone())),
    }
    *reported = Some(state);
}

/// Performs `sync`'s writes at once; a failure is reported (an anomaly on the person) and
/// not retried while the rule asks for the same status.
async fn perform(sink: &Sink, person: &mut Person, writes: Vec<Write>) {
    let results = join_all(writes.into_iter().map(|w| {
        let write = match w.kind {
            WriteKind::Impose => sink.set_status(&w.account, w.status.clone()),
            WriteKind::Restore => sink.restore_status(&w.account, w.status.clone()),
        };
        async move { (w, timed(write).await) }
    }))
    .await;
    for (w, result) in results {
        match result {
            Ok(()) => tracing::debug!(account = %w.account, kind = ?w.kind, "sync write done"),
            Err(e) => {
                person.handle_write_failed(&w);
                let verb = match w.kind {
                    WriteKind::Impose => "set",
                    WriteKind::Restore => "put back the status of",
                };
                tracing::warn!(account = %w.account, %e, "sync: could not {verb} a member");
                sink.observe(Observation::Anomaly(
                    e.code,
                    format!("sync: could not {verb} {}: {}", w.account, e.detail),
                ));
            }
        }
    }
}

impl Source for PersonSource {
    fn kind(&self) -> SourceKind {
        crate::KIND
    }

    fn members(&self) -> Vec<AccountId> {
        self.config.accounts.clone()
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        Box::pin(self.run_loop(sink))
    }

    fn set_status(&self, status: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        let tx = self
            .commands
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Box::pin(async move {
            let tx = tx.ok_or_else(|| self.not_running())?;
            let (reply, answer) = oneshot::channel();
            tx.send(Command { status, reply })
                .await
                .map_err(|_| self.not_running())?;
            answer.await.map_err(|_| self.not_running())?
        })
    }
}
