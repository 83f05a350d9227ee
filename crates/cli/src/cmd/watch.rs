//! `imstatus watch [ACCOUNT…] [--json] [--contacts] [--exec CMD]`: a snapshot, then live
//! events until Ctrl-C or until stdout's reader goes; `--exec` runs a hook per event.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Write;
use std::time::Duration;

use imstatus_config::Config;
use imstatus_core::{AccountId, EventKind, SignInResult, Snapshot};

use crate::app::{names, select, start_hub, Failure};
use crate::{format, hook, EXIT_OK, SETTLE};

/// How `watch` shows events.
pub(crate) struct WatchView {
    /// JSON Lines instead of human lines.
    pub(crate) json: bool,
    /// Also show contacts' changes.
    pub(crate) contacts: bool,
    /// `--exec` command and its time limit.
    pub(crate) hook: Option<(String, Duration)>,
}

/// Runs `imstatus watch`.
pub(crate) async fn run(
    config: &Config,
    accounts: &[String],
    view: &WatchView,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
    stop: impl Future<Output = ()>,
) -> Result<u8, Failure> {
    let wanted: Vec<&str> = accounts.iter().map(String::as_str).collect();
    let selected = select(config, &wanted)?;
    let hub = start_hub(config, &selected)?;
    let ids = names(&selected);
    // Start from a settled state so the first snapshot is the real answer, not "unknown".
    hub.wait_settled(&ids, SETTLE).await;
    let mut sub = hub.subscribe_to(Some(ids.iter().cloned().collect::<HashSet<AccountId>>()));
    // Warnings given while the sources started (e.g. "working visibly") came before the
    // subscription: show them once, on stderr, so that stdout keeps the documented stream.
    if !view.json {
        for id in &ids {
            for e in hub.recent_source_errors(id) {
                writeln!(err, "warning: {}", format::event_line(&e, false))?;
            }
        }
    }
    // Each account's own state after every event, for the hook's environment (which names
    // no contact: the event's JSON carries them): only kept when there is a hook.
    let mut states: HashMap<AccountId, Snapshot> = Default::default();
    tokio::pin!(stop);
    let mut warned = HashSet::new();
    // One JSON line at a time, in a buffer kept across events.
    let mut line: Vec<u8> = Vec::with_capacity(1024);
    loop {
        let event = tokio::select! {
            biased;
            () = &mut stop => break,
            e = sub.recv() => match e {
                Some(e) => e,
                None => break,
            },
        };
        if view.hook.is_some() {
            match states.get_mut(&event.account) {
                Some(state) => state.apply_own(&event.kind, event.time),
                None => {
                    let mut state = Snapshot::unknown();
                    state.apply_own(&event.kind, event.time);
                    states.insert(event.account.clone(), state);
                }
            }
        }
        if !view.contacts && matches!(event.kind, EventKind::ContactStatusChanged { .. }) {
            continue;
        }
        if view.json {
            // The whole line in one write: stdout's line buffer passes a buffer that ends in
            // a newline straight to the pipe (one syscall, however long the line), where a
            // `writeln!` of a line longer than its 1 KB buffer took two.
            line.clear();
            format::json_line(&event, &mut line);
            out.write_all(&line)?;
        } else {
            writeln!(out, "{}", format::event_line(&event, view.contacts))?;
            if let EventKind::SourceError { code, .. }
            | EventKind::SignedIn {
                result: SignInResult::Failed(code),
            } = &event.kind
            {
                if warned.insert((event.account.clone(), *code)) {
                    writeln!(err, "  hint: {}", code.hint())?;
                }
            }
        }
        out.flush()?;
        if let Some((command, timeout)) = &view.hook {
            let Some(state) = states.get(&event.account) else {
                continue;
            };
            let outcome = tokio::select! {
                () = &mut stop => break,
                o = hook::run(command, &event, state, *timeout) => o,
            };
            let what = format!(
                "event {} of {} (seq {})",
                event.kind.name(),
                event.account,
                event.seq
            );
            match outcome {
                hook::Outcome::Ok => {}
                hook::Outcome::Failed(Some(code)) => {
                    writeln!(err, "imstatus: --exec exited with {code} for {what}")?;
                }
                hook::Outcome::Failed(None) => {
                    writeln!(err, "imstatus: --exec was killed by a signal for {what}")?;
                }
                hook::Outcome::TimedOut => writeln!(
                    err,
                    "imstatus: --exec ran past {} for {what}; killed it",
                    humantime::format_duration(*timeout)
                )?,
                hook::Outcome::NotStarted(e) => {
                    writeln!(err, "imstatus: --exec could not start for {what}: {e}")?;
                }
            }
        }
    }
    Ok(EXIT_OK)
}
