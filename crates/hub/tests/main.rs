//! The hub's integration tests in one test binary: fan-out and ordering (`hub`), sources that
//! combine other accounts (`combine`), and hubs fed from elsewhere (`mirror`).

mod combine;
mod hub;
mod mirror;
