//! One unit's task: watch until the backend is lost, say so once, retry with the core's
//! backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_core::Backoff;
use tokio::sync::mpsc;

use crate::config::DesktopConfig;
use crate::coordinator::{Report, Unit};
use crate::error::Error;
use crate::reporter::Reporter;

/// A watch that held this long resets the reconnect backoff.
const STABLE: Duration = Duration::from_secs(30);

/// Runs `unit` forever: watch, report the loss once, wait, retry.
pub(crate) async fn run(unit: Unit, config: Arc<DesktopConfig>, tx: mpsc::Sender<Report>) {
    let mut r = Reporter::new(unit, tx);
    let mut backoff = Backoff::new(seed(unit));
    loop {
        let started = Instant::now();
        let e = watch(unit, &config, &mut r).await;
        if r.is_up() && started.elapsed() >= STABLE {
            backoff.reset();
        }
        r.down(e).await;
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Watches until the backend is lost; returns why.
async fn watch(unit: Unit, config: &DesktopConfig, r: &mut Reporter) -> Error {
    match unit {
        Unit::Microphone => crate::microphone::run(config, r).await,
        Unit::Camera => crate::camera::run(config, r).await,
        Unit::Idle => crate::idle::run(config, r).await,
        Unit::Lock => crate::lock::run(config, r).await,
    }
}

/// A backoff seed that differs per process, start and unit.
fn seed(unit: Unit) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Truncation is fine: only the low bits vary anyway.
    (nanos as u64) ^ (u64::from(std::process::id()) << 32) ^ (unit as u64)
}
