//! `imstatus doctor`: every configured account's checks, step by step, with what to fix.

use std::io::Write;

use imstatus_config::Config;

use crate::app::Failure;
use crate::{EXIT_ERROR, EXIT_OK};

/// Runs `imstatus doctor`.
pub(crate) async fn run(config: &Config, out: &mut (dyn Write + Send)) -> Result<u8, Failure> {
    let mut all_ok = true;
    for account in &config.accounts {
        writeln!(out, "{} ({})", account.name, account.kind)?;
        for check in account.settings.doctor().await {
            all_ok &= check.ok;
            let mark = if check.ok { "ok  " } else { "FAIL" };
            writeln!(out, "  {mark} {:<10} {}", check.name, check.detail)?;
            if let (false, Some(hint)) = (check.ok, &check.hint) {
                writeln!(out, "       hint: {hint}")?;
            }
        }
    }
    Ok(if all_ok { EXIT_OK } else { EXIT_ERROR })
}
