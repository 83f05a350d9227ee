//! What every command shares: choosing accounts, starting a hub for them, one-shot answers and
//! exit codes, and why a command stopped early.

use std::io;
use std::time::Duration;

use imstatus_config::{AccountConfig, Config};
use imstatus_core::{Client, CodedError, ErrorCode, Event, Session};
use imstatus_hub::Hub;

use crate::{EXIT_ERROR, EXIT_NOT_RUNNING, EXIT_OK, EXIT_SIGNED_OUT};

/// Why a command stopped early.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Bad usage or config: exit 2.
    Usage(String),
    /// Writing the output failed (a gone reader is not a failure: exit 0).
    Io(io::Error),
    /// Anything else: exit 1.
    Other(anyhow::Error),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

/// Selects accounts by name (all with none); unknown names are a usage error.
pub(crate) fn select<'a>(
    config: &'a Config,
    names: &[&str],
) -> Result<Vec<&'a AccountConfig>, Failure> {
    if names.is_empty() {
        return Ok(config.accounts.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            config.account(n).ok_or_else(|| {
                let known: Vec<_> = config.accounts.iter().map(|a| a.name.as_str()).collect();
                Failure::Usage(format!(
                    "no account `{n}` in the config (accounts: {})",
                    known.join(", ")
                ))
            })
        })
        .collect()
}

/// Starts a hub watching `accounts`, each with the source its settings build.
pub(crate) fn start_hub(accounts: &[&AccountConfig]) -> Result<Hub, Failure> {
    let mut builder = Hub::builder();
    for a in accounts {
        let source = a
            .settings
            .build(&a.name)
            .map_err(|e| Failure::Other(anyhow::anyhow!("account `{}`: {e}", a.name)))?;
        builder = builder.with_source(a.name.clone(), source);
    }
    Ok(builder.start())
}

/// The answer for one account: its snapshot event and the error keeping its source down.
pub(crate) struct Answer {
    pub(crate) event: Event,
    pub(crate) error: Option<CodedError>,
}

impl Answer {
    pub(crate) fn exit_code(&self) -> u8 {
        let Some(s) = self.event.snapshot() else {
            return EXIT_ERROR;
        };
        match &self.error {
            Some(e) if e.code == ErrorCode::ClientNotRunning => return EXIT_NOT_RUNNING,
            Some(_) => return EXIT_ERROR,
            None => {}
        }
        match (s.client, s.session) {
            (Client::NotRunning, _) => EXIT_NOT_RUNNING,
            (_, Session::SignedIn) => EXIT_OK,
            // A desktop account has no sign-in: seeing the desktop is its whole answer.
            (_, Session::Unknown) if s.activity.is_some() => EXIT_OK,
            (_, Session::Unknown) => EXIT_ERROR,
            _ => EXIT_SIGNED_OUT,
        }
    }
}

/// The least good of several exit codes: error, then not running, then signed out.
pub(crate) fn worst(codes: impl IntoIterator<Item = u8>) -> u8 {
    let rank = |c| match c {
        EXIT_ERROR => 3,
        EXIT_NOT_RUNNING => 2,
        EXIT_SIGNED_OUT => 1,
        _ => 0,
    };
    codes
        .into_iter()
        .max_by_key(|&c| rank(c))
        .unwrap_or(EXIT_OK)
}

/// Starts a hub for `account` (or all), waits up to `timeout` for the sources to settle, and
/// answers each account's snapshot with the error that keeps its source down (`timeout` for
/// a source that never answered).
pub(crate) async fn answers(
    config: &Config,
    account: Option<&str>,
    timeout: Duration,
) -> Result<(Hub, Vec<Answer>), Failure> {
    let selected = select(config, &account.into_iter().collect::<Vec<_>>())?;
    let hub = start_hub(&selected)?;
    let ids = hub.accounts();
    let settled = hub.wait_settled(&ids, timeout).await;
    let answers = ids
        .iter()
        .filter_map(|id| {
            let event = hub.snapshot(id)?;
            let error = hub.source_error(id).or_else(|| {
                (!settled
                    && event
                        .snapshot()
                        .is_some_and(|s| s.session == Session::Unknown))
                .then(|| {
                    CodedError::new(
                        ErrorCode::Timeout,
                        format!(
                            "no answer from the source within {}",
                            humantime::format_duration(timeout)
                        ),
                    )
                })
            });
            Some(Answer { event, error })
        })
        .collect();
    Ok((hub, answers))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_exit_code_wins() {
        assert_eq!(worst([EXIT_OK, EXIT_SIGNED_OUT]), EXIT_SIGNED_OUT);
        assert_eq!(worst([EXIT_NOT_RUNNING, EXIT_SIGNED_OUT]), EXIT_NOT_RUNNING);
        assert_eq!(worst([EXIT_NOT_RUNNING, EXIT_ERROR, EXIT_OK]), EXIT_ERROR);
        assert_eq!(worst([]), EXIT_OK);
    }
}
