//! `imstatus contacts [ACCOUNT] [--json]`: contacts and their presence.

use std::io::Write;

use imstatus_config::Config;

use crate::app::{answers, Failure};
use crate::{format, EXIT_ERROR, EXIT_OK, SETTLE};

/// Runs `imstatus contacts`.
pub(crate) async fn run(
    config: &Config,
    account: Option<&str>,
    json: bool,
    out: &mut (dyn Write + Send),
    err: &mut (dyn Write + Send),
) -> Result<u8, Failure> {
    let (_hub, answers) = answers(config, account, SETTLE).await?;
    let mut code = EXIT_OK;
    for a in &answers {
        if let Some(e) = &a.error {
            writeln!(err, "imstatus: {}: {e}", a.event.account)?;
            code = EXIT_ERROR;
            continue;
        }
        let Some(s) = a.event.snapshot() else {
            continue;
        };
        for c in &s.contacts {
            if json {
                let line = serde_json::json!({
                    "account": a.event.account, "contact": c.contact,
                    "availability": c.availability, "message": c.message,
                });
                writeln!(out, "{line}")?;
            } else {
                writeln!(
                    out,
                    "{:<12} {:<32} {}",
                    a.event.account,
                    c.contact,
                    format::status_text(&c.status())
                )?;
            }
        }
    }
    Ok(code)
}
