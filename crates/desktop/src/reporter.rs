//! A unit's end of the channel to the coordinator: what the signal watchers (microphone,
//! camera, idle, lock) report through.

use tokio::sync::mpsc;

use crate::coordinator::{Report, Unit};
use crate::error::Error;

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

    /// Whether the backend answered since the last loss.
    pub(crate) fn is_up(&self) -> bool {
        self.up
    }

    /// The backend is gone (or never answered): reported once per outage.
    pub(crate) async fn down(&mut self, e: Error) {
        tracing::debug!(unit = self.unit.name(), %e, "backend does not answer");
        self.up = false;
        if !self.down_reported {
            self.down_reported = true;
            self.send(Report::Down(self.unit, e)).await;
        }
    }
}
