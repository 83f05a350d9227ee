//! [`TeamsSource`]: runs the transport the account names.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use imstatus_core::{CodedError, ErrorCode, SourceKind, Status};
use imstatus_hub::{BoxFuture, Sink, Source};

use crate::config::{TeamsConfig, Via};

/// Why `set` cannot work, whatever the transport.
pub const SET_UNSUPPORTED: &str = "teams-for-linux cannot set the presence: its MQTT commands \
     and D-Bus methods only mute, unmute, toggle the camera or hand and answer calls; set it in \
     Teams itself";

/// Watches Teams for Linux over MQTT or D-Bus.
#[derive(Debug)]
pub struct TeamsSource {
    via: Via,
    seed: Option<u64>,
    grace: Duration,
}

impl TeamsSource {
    /// A source for `config`.
    pub fn new(config: &TeamsConfig) -> Self {
        TeamsSource {
            via: config.via.clone(),
            seed: None,
            grace: crate::mqtt::RESYNC_GRACE,
        }
    }

    /// Seeds the reconnect jitter (tests); by default it differs per process.
    pub fn with_backoff_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// After a reconnect to the broker that has lost `connected` (a restart without
    /// persistence), how long to wait for the app to publish it again before it counts as not
    /// running (default 5 s; MQTT only).
    pub fn with_resync_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }
}

impl Source for TeamsSource {
    fn kind(&self) -> SourceKind {
        crate::KIND
    }

    fn run(self: Arc<Self>, sink: Sink) -> BoxFuture<'static, ()> {
        let seed = self.seed.unwrap_or_else(seed);
        match &self.via {
            Via::Dbus(options) => Box::pin(crate::dbus::run(options.clone(), sink, seed)),
            Via::Mqtt(options) => {
                Box::pin(crate::mqtt::run(options.clone(), sink, seed, self.grace))
            }
        }
    }

    fn set_status(&self, _status: Status) -> BoxFuture<'_, Result<(), CodedError>> {
        Box::pin(async { Err(CodedError::new(ErrorCode::Unsupported, SET_UNSUPPORTED)) })
    }
}

/// A backoff seed that differs per process and start.
fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ (u64::from(std::process::id()) << 32)
}
