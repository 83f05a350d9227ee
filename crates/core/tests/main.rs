//! The core's integration tests in one test binary: the ordering contract as properties
//! (`contract`) and the person rule (`person`).

mod contract;
mod person;
