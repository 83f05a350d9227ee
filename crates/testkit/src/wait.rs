//! Polling with a deadline, and free loopback ports.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// The interval between two polls of [`wait_until`], [`try_wait_until`] and
/// `wait_until_async`.
pub const POLL_STEP: Duration = Duration::from_millis(10);

/// Calls `f` every [`POLL_STEP`] until it returns `Some`, or fails with [`Error::Timeout`]
/// naming `what` once `deadline` has passed (`f` is always called at least once).
pub fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T, Error> {
    try_wait_until(what, deadline, || Ok(f()))
}

/// Like [`wait_until`], but `f` may end the wait early with an error (for example when the
/// awaited process has exited).
pub fn try_wait_until<T>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = f()? {
            return Ok(value);
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: deadline,
                context: String::new(),
            });
        }
        std::thread::sleep(POLL_STEP.min(deadline - elapsed));
    }
}

/// The async twin of [`wait_until`], for tokio tests: calls `f` every [`POLL_STEP`] (sleeping
/// on the runtime's timer, so the worker stays free for what is awaited) until its answer is
/// `Some`, or fails with [`Error::Timeout`] naming `what` once `deadline` has passed (`f` is
/// always called at least once). The deadline is on tokio's clock, so a test with paused time
/// reaches it in virtual time.
///
/// `f` answers an [`Attempt`]: an `Option<T>` computed on the spot (the usual case,
/// `|| (hub.event_count() >= 3).then_some(())`), or an [`Async`] future for a condition that
/// has to await something itself (`|| Async(async move { page(client).await.ready() })`).
#[cfg(feature = "tokio")]
pub async fn wait_until_async<T, A: Attempt<T>>(
    what: &str,
    deadline: Duration,
    mut f: impl FnMut() -> A,
) -> Result<T> {
    let start = tokio::time::Instant::now();
    loop {
        if let Some(value) = f().attempt().await {
            return Ok(value);
        }
        let elapsed = start.elapsed();
        if elapsed >= deadline {
            return Err(Error::Timeout {
                what: what.to_owned(),
                after: deadline,
                context: String::new(),
            });
        }
        tokio::time::sleep(POLL_STEP.min(deadline - elapsed)).await;
    }
}

/// One check of [`wait_until_async`]: `Some(value)` when the awaited condition holds.
#[cfg(feature = "tokio")]
pub trait Attempt<T> {
    /// The future of the check's answer.
    type Check: std::future::Future<Output = Option<T>>;
    /// Starts the check.
    fn attempt(self) -> Self::Check;
}

#[cfg(feature = "tokio")]
impl<T> Attempt<T> for Option<T> {
    type Check = std::future::Ready<Option<T>>;
    fn attempt(self) -> Self::Check {
        std::future::ready(self)
    }
}

/// A check of [`wait_until_async`] that awaits something itself (a request, a browser): the
/// future's `Some(value)` ends the wait.
#[cfg(feature = "tokio")]
pub struct Async<F>(pub F);

#[cfg(feature = "tokio")]
impl<T, F: std::future::Future<Output = Option<T>>> Attempt<T> for Async<F> {
    type Check = F;
    fn attempt(self) -> Self::Check {
        self.0
    }
}

/// Ports this process has handed out already, so that two tests never get the same one.
static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port on 127.0.0.1 that was free a moment ago and that this process has not returned
/// before.
///
/// Another process can still take it before it is used; [`crate::Prosody::start`] detects that
/// and picks another one.
///
/// # Panics
///
/// If no port can be bound on 127.0.0.1 at all.
pub fn free_port() -> u16 {
    let mut guard = HANDED_OUT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let handed_out = guard.get_or_insert_with(HashSet::new);
    loop {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .expect("binding 127.0.0.1:0 to find a free port");
        let port = listener
            .local_addr()
            .expect("local address of a bound listener")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_returns_the_first_some() {
        let mut calls = 0;
        let got = wait_until("three calls", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        });
        assert_eq!(got.ok(), Some(3));
    }

    #[test]
    fn wait_until_times_out_with_the_name_of_the_condition() {
        let start = Instant::now();
        let err = wait_until("never", Duration::from_millis(50), || None::<()>)
            .err()
            .map(|e| e.to_string());
        assert!(start.elapsed() >= Duration::from_millis(50));
        assert!(start.elapsed() < Duration::from_secs(2));
        assert_eq!(
            err.as_deref(),
            Some("timed out after 50ms waiting for never")
        );
    }

    #[test]
    fn try_wait_until_stops_at_the_first_error() {
        let mut calls = 0;
        let err = try_wait_until("an error", Duration::from_secs(5), || {
            calls += 1;
            Err::<Option<()>, _>(Error::Exited {
                what: "p".into(),
                status: "1".into(),
                context: String::new(),
            })
        });
        assert!(matches!(err, Err(Error::Exited { .. })));
        assert_eq!(calls, 1);
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn wait_until_async_returns_the_first_some() {
        let mut calls = 0;
        let got = wait_until_async("three calls", Duration::from_secs(5), || {
            calls += 1;
            (calls == 3).then_some(calls)
        })
        .await;
        assert_eq!(got.ok(), Some(3));
    }

    #[cfg(feature = "tokio")]
    #[tokio::test]
    async fn wait_until_async_awaits_an_async_check() {
        let (tx, rx) = tokio::sync::watch::channel(0u32);
        let feeder = tokio::spawn(async move {
            for n in 1..=5 {
                tokio::task::yield_now().await;
                let _ = tx.send(n);
            }
            tx
        });
        let got = wait_until_async("the fifth value", Duration::from_secs(5), || {
            let mut rx = rx.clone();
            Async(async move {
                let n = *rx.wait_for(|n| *n > 0).await.ok()?;
                (n == 5).then_some(n)
            })
        })
        .await;
        assert_eq!(got.ok(), Some(5));
        drop(feeder.await);
    }

    #[cfg(feature = "tokio")]
    #[tokio::test(start_paused = true)]
    async fn wait_until_async_times_out_on_tokios_clock_with_the_name_of_the_condition() {
        let start = tokio::time::Instant::now();
        let mut calls = 0u32;
        let err = wait_until_async("never", Duration::from_millis(50), || {
            calls += 1;
            None::<()>
        })
        .await
        .err()
        .map(|e| e.to_string());
        assert_eq!(start.elapsed(), Duration::from_millis(50));
        assert_eq!(calls, 6, "at 0, 10, 20, 30, 40 and 50 ms");
        assert_eq!(
            err.as_deref(),
            Some("timed out after 50ms waiting for never")
        );
    }

    #[test]
    fn free_port_never_repeats_itself() {
        let ports: HashSet<u16> = (0..50).map(|_| free_port()).collect();
        assert_eq!(ports.len(), 50);
        assert!(!ports.contains(&0));
    }
}
