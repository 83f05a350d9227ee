//! One unit's task: watch until the backend is lost, say so once, retry with the core's
//! backoff.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_core::Backoff;
use tokio::sync::mpsc;

use crate::config::DesktopConfig;
use crate::coordinator::{Report, Unit};
use crate::error::Error;

/// A watch that held this long resets the reconnect backoff.
const STABLE: Duration = Duration::from_secs(30);

/// A unit's end of the channel to the coordinator; remembers whether the backend answers, so
/// that an outage is reported once, not once per retry.
#[derive(Debug)]
pub(crate) struct Reporter {
    unit: Unit,
    tx: mpsc::Sender<Report>,
    up: bool,
    down_reported: bool,
}

impl Reporter {
    pub(crate) fn new(unit: Unit, tx: mpsc::Sender<Report>) -> Self {
        Reporter {
            unit,
            tx,
            up: false,
            down_reported: false,
        }
    }

    /// Sends a report. The coordinator only ends with the source, and then this task is
    /// aborted too, so a closed channel needs no handling.
    pub(crate) async fn send(&self, report: Report) {
        let _ = self.tx.send(report).await;
    }

    /// The backend answers.
    pub(crate) async fn up(&mut self, detail: String) {
        tracing::debug!(unit = self.unit.name(), %detail, "backend answers");
        self.up = true;
        self.down_reported = false;
        self.send(Report::Up(self.unit, detail)).await;
    }

    /// The backend said something malformed.
    pub(crate) async fn anomaly(&self, e: Error) {
        tracing::debug!(unit = self.unit.name(), %e, "anomaly");
        self.send(Report::Anomaly(self.unit, e)).await;
    }

    /// The backend is gone (or never answered): reported once per outage.
    async fn down(&mut self, e: Error) {
        tracing::debug!(unit = self.unit.name(), %e, "backend does not answer");
        self.up = false;
        if !self.down_reported {
            self.down_reported = true;
            self.send(Report::Down(self.unit, e)).await;
        }
    }
}

/// Runs `unit` forever: watch, report the loss once, wait, retry.
pub(crate) async fn run(unit: Unit, config: Arc<DesktopConfig>, tx: mpsc::Sender<Report>) {
    let mut r = Reporter::new(unit, tx);
    let mut backoff = Backoff::new(seed(unit));
    loop {
        let started = Instant::now();
        let e = watch(unit, &config, &mut r).await;
        if r.up && started.elapsed() >= STABLE {
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
