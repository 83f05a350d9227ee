//! Sans-IO: the backends' reports in, the core's observations out.
//!
//! Every enabled signal runs as one *unit* on its own task. A unit says when its backend
//! answers (`Up`), what it sees, and when it stops answering (`Down`, said once per outage:
//! its retries are silent). The coordinator turns that into the account's observations:
//!
//! - the client axis: `running` while at least one unit answers, `not_running` (with
//!   `SourceDown`) when none does;
//! - `Synced` once every unit has given its first reading or failed (at start, and again
//!   after a total outage), so that the first snapshot is complete: a unit that answers but
//!   has not said what it sees yet still holds it back;
//! - a unit that goes down resets its signal (no sound server: nobody captures) and is a
//!   `source_error` (`Anomaly`) while others still answer.

use std::time::Duration;

use imstatus_core::{ActivitySignal, App, Observation};

use crate::error::Error;

/// One independently watched backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Unit {
    /// The sound server (microphone).
    Microphone,
    /// The camera devices.
    Camera,
    /// The idle backend in use (the first of the configured ones that answers).
    Idle,
    /// The lock backends (every configured one that answers).
    Lock,
}

impl Unit {
    /// Its name in messages.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Unit::Microphone => "microphone",
            Unit::Camera => "camera",
            Unit::Idle => "idle",
            Unit::Lock => "lock",
        }
    }
}

/// What a unit reports.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Report {
    /// The backend answers (again); the text says which and where.
    Up(Unit, String),
    /// The applications capturing from a microphone.
    Microphone(Vec<App>),
    /// The processes holding a camera open.
    Camera(Vec<App>),
    /// The idle state and the idle time just read.
    Idle {
        /// The idle time reached `idle_after`.
        idle: bool,
        /// The idle time read (`None`: the backend does not tell, logind while not idle).
        input_ago: Option<Duration>,
    },
    /// The screen is locked (any answering lock backend says so).
    Locked(bool),
    /// The backend stopped answering (or never did).
    Down(Unit, Error),
    /// The backend said something malformed; it still answers.
    Anomaly(Unit, Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not heard of since the start (or since the last total outage).
    Pending,
    /// The backend answers; its first reading is still to come.
    Answering,
    /// The backend answers and its signal is known.
    Up,
    Down,
}

/// Merges the units' reports into observations.
#[derive(Debug)]
pub(crate) struct Coordinator {
    units: Vec<(Unit, State)>,
    /// `Synced` has been reported since the last total outage.
    synced: bool,
    /// `ClientAppeared` has been reported since the last total outage.
    appeared: bool,
}

impl Coordinator {
    /// A coordinator for these units; `start` gives the observations to report first.
    pub(crate) fn new(units: Vec<Unit>) -> Self {
        Coordinator {
            units: units.into_iter().map(|u| (u, State::Pending)).collect(),
            synced: false,
            appeared: false,
        }
    }

    /// What to report before any unit has said anything.
    pub(crate) fn start(&self) -> Vec<Observation> {
        vec![Observation::NoSession]
    }

    /// A unit's reading came: once answering, it is now up.
    fn read(&mut self, unit: Unit) {
        if let Some(entry) = self.units.iter_mut().find(|(u, _)| *u == unit) {
            if entry.1 == State::Answering {
                entry.1 = State::Up;
            }
        }
    }

    fn set(&mut self, unit: Unit, state: State) -> Option<State> {
        let entry = self.units.iter_mut().find(|(u, _)| *u == unit)?;
        Some(std::mem::replace(&mut entry.1, state))
    }

    /// The observations one report makes.
    pub(crate) fn handle(&mut self, report: Report) -> Vec<Observation> {
        let mut out = Vec::new();
        match report {
            Report::Up(unit, _) => {
                self.set(unit, State::Answering);
                if !self.appeared {
                    self.appeared = true;
                    out.push(Observation::ClientAppeared);
                }
            }
            Report::Microphone(apps) => {
                self.read(Unit::Microphone);
                out.push(Observation::Activity(ActivitySignal::Microphone(apps)));
            }
            Report::Camera(apps) => {
                self.read(Unit::Camera);
                out.push(Observation::Activity(ActivitySignal::Camera(apps)));
            }
            Report::Idle { idle, input_ago } => {
                self.read(Unit::Idle);
                out.push(Observation::Activity(ActivitySignal::Idle {
                    idle,
                    input_ago,
                }));
            }
            Report::Locked(locked) => {
                self.read(Unit::Lock);
                out.push(Observation::Activity(ActivitySignal::Locked(locked)));
            }
            Report::Anomaly(unit, e) => {
                out.push(Observation::Anomaly(
                    e.code(),
                    format!("{}: {}", unit.name(), e.detail()),
                ));
            }
            Report::Down(unit, e) => return self.down(unit, e, out),
        }
        self.maybe_synced(&mut out);
        out
    }

    /// A unit stopped answering: its signal is reset (what the backend said last no longer
    /// holds); an anomaly while others answer, the whole source down when none does.
    fn down(&mut self, unit: Unit, e: Error, mut out: Vec<Observation>) -> Vec<Observation> {
        let before = self.set(unit, State::Down);
        out.push(match unit {
            Unit::Microphone => Observation::Activity(ActivitySignal::Microphone(Vec::new())),
            Unit::Camera => Observation::Activity(ActivitySignal::Camera(Vec::new())),
            Unit::Idle => Observation::Activity(ActivitySignal::Idle {
                idle: false,
                input_ago: None,
            }),
            Unit::Lock => Observation::Activity(ActivitySignal::Locked(false)),
        });
        let detail = format!("{}: {}", unit.name(), e.detail());
        if self.units.iter().all(|(_, s)| *s == State::Down) {
            // Nothing of the desktop answers: the client axis says so, and the account's
            // error is the one that made it so. The next answer brings the client back and
            // syncs again.
            out.push(Observation::ClientVanished);
            out.push(Observation::SourceDown(e.code(), detail));
            self.appeared = false;
            self.synced = false;
            return out;
        }
        if before != Some(State::Down) {
            out.push(Observation::Anomaly(e.code(), detail));
        }
        self.maybe_synced(&mut out);
        out
    }

    /// `Synced` once every unit is up (with its first reading) or down, and one is up.
    fn maybe_synced(&mut self, out: &mut Vec<Observation>) {
        if !self.synced
            && self
                .units
                .iter()
                .all(|(_, s)| matches!(s, State::Up | State::Down))
            && self.units.iter().any(|(_, s)| *s == State::Up)
        {
            self.synced = true;
            out.push(Observation::Synced);
        }
    }
}

#[cfg(test)]
mod tests {
    use imstatus_core::ErrorCode;

    use super::*;

    fn mic(apps: &[&str]) -> Report {
        Report::Microphone(apps.iter().map(|n| App::new(*n, Some(1))).collect())
    }

    #[test]
    fn synced_comes_once_every_unit_has_answered_or_failed() {
        let mut c = Coordinator::new(vec![Unit::Microphone, Unit::Idle]);
        assert_eq!(c.start(), vec![Observation::NoSession]);
        assert_eq!(
            c.handle(Report::Up(Unit::Microphone, "pulse".into())),
            vec![Observation::ClientAppeared]
        );
        assert_eq!(
            c.handle(mic(&[])),
            vec![Observation::Activity(ActivitySignal::Microphone(vec![]))]
        );
        let down = c.handle(Report::Down(
            Unit::Idle,
            Error::NotRunning("no display".into()),
        ));
        assert_eq!(
            down,
            vec![
                Observation::Activity(ActivitySignal::Idle {
                    idle: false,
                    input_ago: None
                }),
                Observation::Anomaly(ErrorCode::ClientNotRunning, "idle: no display".into()),
                Observation::Synced,
            ]
        );
    }

    #[test]
    fn a_total_outage_is_source_down_and_the_first_answer_brings_the_client_back() {
        let mut c = Coordinator::new(vec![Unit::Microphone]);
        c.handle(Report::Up(Unit::Microphone, "pulse".into()));
        c.handle(mic(&["parecord"]));
        let down = c.handle(Report::Down(
            Unit::Microphone,
            Error::Lost("connection closed".into()),
        ));
        assert_eq!(
            down,
            vec![
                Observation::Activity(ActivitySignal::Microphone(vec![])),
                Observation::ClientVanished,
                Observation::SourceDown(
                    ErrorCode::Disconnected,
                    "microphone: connection closed".into()
                ),
            ]
        );
        let up = c.handle(Report::Up(Unit::Microphone, "pulse".into()));
        assert_eq!(up, vec![Observation::ClientAppeared]);
        assert_eq!(
            c.handle(mic(&[])),
            vec![
                Observation::Activity(ActivitySignal::Microphone(vec![])),
                Observation::Synced
            ]
        );
    }

    #[test]
    fn a_unit_that_answers_holds_synced_back_until_its_first_reading() {
        // Otherwise the first snapshot (`imstatus status`) would have no activity yet.
        let mut c = Coordinator::new(vec![Unit::Microphone, Unit::Lock]);
        assert_eq!(
            c.handle(Report::Up(Unit::Microphone, "pulse".into())),
            vec![Observation::ClientAppeared]
        );
        assert_eq!(c.handle(Report::Up(Unit::Lock, "logind".into())), vec![]);
        assert_eq!(
            c.handle(mic(&["parecord"])),
            vec![Observation::Activity(ActivitySignal::Microphone(vec![
                App::new("parecord", Some(1))
            ]))]
        );
        assert_eq!(
            c.handle(Report::Locked(false)),
            vec![
                Observation::Activity(ActivitySignal::Locked(false)),
                Observation::Synced
            ]
        );
        // Answering, then failing before the first reading: down, and the rest syncs.
        let mut c = Coordinator::new(vec![Unit::Microphone, Unit::Idle]);
        c.handle(Report::Up(Unit::Idle, "screensaver".into()));
        c.handle(Report::Up(Unit::Microphone, "pulse".into()));
        c.handle(mic(&[]));
        let down = c.handle(Report::Down(
            Unit::Idle,
            Error::Lost("GetSessionIdleTime failed".into()),
        ));
        assert_eq!(down.last(), Some(&Observation::Synced), "{down:?}");
    }

    #[test]
    fn a_failure_at_start_with_nothing_answering_is_reported_as_down() {
        let mut c = Coordinator::new(vec![Unit::Camera]);
        let out = c.handle(Report::Down(
            Unit::Camera,
            Error::NotRunning("no devices".into()),
        ));
        assert_eq!(
            out,
            vec![
                Observation::Activity(ActivitySignal::Camera(vec![])),
                Observation::ClientVanished,
                Observation::SourceDown(ErrorCode::ClientNotRunning, "camera: no devices".into()),
            ]
        );
    }
}
