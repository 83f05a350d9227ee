//! `imstatus status [ACCOUNT] [--json]`: one snapshot per account, and an exit code a shell
//! can use (0 signed in, 3 running but signed out, 4 client not running, 1 error).

use std::io::Write;
use std::time::Duration;

use imstatus_config::Config;
use imstatus_core::{Client, CodedError, ErrorCode};

use crate::app::{answers, worst, Answer, Failure};
use crate::format;

/// Runs `imstatus status`.
pub(crate) async fn run(
    config: &Config,
    account: Option<&str>,
    json: bool,
    timeout: Duration,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<u8, Failure> {
    let (_hub, mut answers) = answers(config, account, timeout).await?;
    // A client that is simply not running (its bus answers, nobody owns the name) is not a
    // source error, but it is the SDK's `client_not_running`: say so with the code and hint,
    // as when the bus itself is missing.
    for a in &mut answers {
        let not_running = a
            .event
            .snapshot()
            .is_some_and(|s| s.client == Client::NotRunning);
        if a.error.is_none() && not_running {
            a.error = Some(CodedError::new(
                ErrorCode::ClientNotRunning,
                "the client is not running",
            ));
        }
    }
    let rows: Vec<_> = answers
        .iter()
        .map(|a| (&a.event, a.error.as_ref()))
        .collect();
    if json {
        for (event, _) in &rows {
            writeln!(out, "{}", format::json(event))?;
        }
    } else {
        out.write_all(format::status_table(&rows).as_bytes())?;
    }
    for a in &answers {
        if let Some(e) = &a.error {
            writeln!(err, "imstatus: {}: {e}", a.event.account)?;
            writeln!(err, "  hint: {}", e.code.hint())?;
        }
    }
    out.flush()?;
    Ok(worst(answers.iter().map(Answer::exit_code)))
}
