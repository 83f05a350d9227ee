//! The libpurple source's integration tests, in one test binary (one link instead of four on
//! 2 cores), sharing `common` (the real source in a hub, events as labels, real finch).

mod bus;
mod common;
mod fake;
mod finch;
mod peer;
