//! End-to-end tests of the Matrix source (one binary: see Cargo.toml).
