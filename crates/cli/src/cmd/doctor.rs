//! `imstatus doctor`: every configured account's checks, step by step, with what to fix; and
//! with `[cluster]`, the cluster's (connection, stream, who owns each account).

use std::io::Write;

use imstatus_config::Config;
use imstatus_hub::Check;

use crate::app::Failure;
use crate::{EXIT_ERROR, EXIT_OK};

/// Runs `imstatus doctor`.
pub(crate) async fn run(config: &Config, out: &mut (dyn Write + Send)) -> Result<u8, Failure> {
    let mut all_ok = true;
    for account in &config.accounts {
        writeln!(out, "{} ({})", account.name, account.kind)?;
        all_ok &= print(out, account.settings.doctor().await)?;
    }
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &config.cluster {
        writeln!(out, "cluster ({})", cluster.name)?;
        let accounts: Vec<_> = config.accounts.iter().map(|a| a.name.clone()).collect();
        all_ok &= print(out, imstatus_cluster::doctor(cluster, &accounts).await)?;
    }
    Ok(if all_ok { EXIT_OK } else { EXIT_ERROR })
}

/// Prints checks as `  ok   name  detail` / `  FAIL name  detail` + hint; whether all passed.
fn print(out: &mut (dyn Write + Send), checks: Vec<Check>) -> Result<bool, Failure> {
    let mut all_ok = true;
    for check in checks {
        all_ok &= check.ok;
        let mark = if check.ok { "ok  " } else { "FAIL" };
        writeln!(out, "  {mark} {:<10} {}", check.name, check.detail)?;
        if let (false, Some(hint)) = (check.ok, &check.hint) {
            writeln!(out, "       hint: {hint}")?;
        }
    }
    Ok(all_ok)
}
