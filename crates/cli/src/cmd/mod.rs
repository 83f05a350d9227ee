//! One module per command; each exposes `run`, called by [`crate::run`].

#[cfg(feature = "gateway")]
pub(crate) mod cluster;
pub(crate) mod contacts;
pub(crate) mod doctor;
#[cfg(feature = "gateway")]
pub(crate) mod serve;
pub(crate) mod set;
pub(crate) mod status;
pub(crate) mod wait;
pub(crate) mod watch;
