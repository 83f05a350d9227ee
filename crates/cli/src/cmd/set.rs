//! `imstatus set AVAILABILITY [--message TEXT] [--account NAME]`: sets the user's status
//! where the source can (`unsupported` and exit 1 elsewhere); on a person, on each of its
//! `sync` accounts.

use std::io::Write;

use imstatus_config::Config;
use imstatus_core::Status;

use crate::app::{names, select, start_hub, Failure};
use crate::{format, EXIT_ERROR, EXIT_OK, SETTLE};

/// Runs `imstatus set`.
pub(crate) async fn run(
    config: &Config,
    status: Status,
    account: Option<&str>,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<u8, Failure> {
    let mut selected = select(config, &account.into_iter().collect::<Vec<_>>())?;
    if account.is_none() {
        // Every account is set on its own; a person would only set some of them again.
        selected.retain(|a| a.kind != imstatus_person::KIND);
    }
    let hub = start_hub(config, &selected)?;
    let ids = names(&selected);
    hub.wait_settled(&ids, SETTLE).await;
    let mut code = EXIT_OK;
    for id in &ids {
        match hub.set_status(id, status.clone()).await {
            Ok(()) => writeln!(out, "{id}: {}", format::status_text(&status))?,
            Err(e) => {
                writeln!(err, "imstatus: {id}: {e}")?;
                writeln!(err, "  hint: {}", e.code.hint())?;
                code = EXIT_ERROR;
            }
        }
    }
    Ok(code)
}
