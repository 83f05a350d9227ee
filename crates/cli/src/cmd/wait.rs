//! `imstatus wait STATE [--timeout DUR] [--account NAME]`: blocks until every selected account
//! reaches the state; exit 0 when reached, 124 on timeout.

use std::io::Write;
use std::time::Duration;

use imstatus_config::Config;
use imstatus_core::{AccountId, Snapshot};

use crate::app::{names, select, start_hub, Failure};
use crate::args::Target;
use crate::{EXIT_OK, EXIT_TIMEOUT};

/// Runs `imstatus wait`.
pub(crate) async fn run(
    config: &Config,
    target: Target,
    timeout: Option<Duration>,
    account: Option<&str>,
    err: &mut (dyn Write + Send),
) -> Result<u8, Failure> {
    let selected = select(config, &account.into_iter().collect::<Vec<_>>())?;
    let hub = start_hub(config, &selected)?;
    let ids = names(&selected);
    let mut sub = hub.subscribe_to(Some(ids.iter().cloned().collect()));
    let mut states: std::collections::HashMap<AccountId, Snapshot> = Default::default();
    let waiting = async {
        while let Some(event) = sub.recv().await {
            let state = states
                .entry(event.account.clone())
                .or_insert_with(Snapshot::unknown);
            // `reached` reads the account's own state: no contacts kept (`apply_own`).
            state.apply_own(&event.kind, event.time);
            if ids
                .iter()
                .all(|id| states.get(id).is_some_and(|s| target.reached(s)))
            {
                return true;
            }
        }
        false
    };
    let reached = match timeout {
        Some(t) => tokio::time::timeout(t, waiting).await.unwrap_or(false),
        None => waiting.await,
    };
    if reached {
        Ok(EXIT_OK)
    } else {
        if let Some(t) = timeout {
            writeln!(
                err,
                "imstatus: timed out after {}",
                humantime::format_duration(t)
            )?;
        }
        Ok(EXIT_TIMEOUT)
    }
}
