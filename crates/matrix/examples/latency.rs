//! Presence-change latency of the Matrix source against a minimal /sync reader.

fn main() {}
