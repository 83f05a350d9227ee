//! What decided a person's status: the rule of `docs/person.md` that applied, and the account
//! or desktop signal that made it apply. Shared by the [`person`](crate::person) fold and the
//! [`Event`](crate::Event) it emits.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::AccountId;

/// Which rule gave a person's current status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Rule 1: on a call (microphone or camera in use).
    Call,
    /// Rule 2: the status the user chose most recently on a signed-in member.
    User,
    /// Rule 3: the screen is locked or the user is idle.
    Away,
    /// Rule 4: the most available signed-in member (`offline` when none is signed in).
    MostAvailable,
}

impl Rule {
    /// The snake_case name (the JSON `rule`).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Call => "call",
            Rule::User => "user",
            Rule::Away => "away",
            Rule::MostAvailable => "most_available",
        }
    }
}

/// The desktop signal behind rules 1 and 3.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// A microphone is in use.
    Microphone,
    /// A camera is in use.
    Camera,
    /// The screen is locked.
    Locked,
    /// The user is idle.
    Idle,
}

impl Signal {
    /// The snake_case name (the JSON `signal`).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Microphone => "microphone",
            Signal::Camera => "camera",
            Signal::Locked => "locked",
            Signal::Idle => "idle",
        }
    }
}

/// What decided a person's status: the rule, and the account or signal that made it apply.
///
/// JSON: `{"rule":"call","account":"desk","signal":"microphone"}`; `account` is left out when
/// no account decided (nobody signed in), `signal` for the rules that read no signal.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DecidedBy {
    /// The rule.
    pub rule: Rule,
    /// The member (rules 2 and 4) or the signals account (rules 1 and 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<AccountId>,
    /// The signal (rules 1 and 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<Signal>,
}

impl DecidedBy {
    pub(crate) fn new(rule: Rule, account: Option<&AccountId>, signal: Option<Signal>) -> Self {
        DecidedBy {
            rule,
            account: account.cloned(),
            signal,
        }
    }
}

impl fmt::Display for DecidedBy {
    /// `call (desk: microphone)`, `user (alice)`, `most_available`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.rule.as_str())?;
        match (&self.account, self.signal) {
            (Some(a), Some(s)) => write!(f, " ({a}: {})", s.as_str()),
            (Some(a), None) => write!(f, " ({a})"),
            (None, Some(s)) => write!(f, " ({})", s.as_str()),
            (None, None) => Ok(()),
        }
    }
}
