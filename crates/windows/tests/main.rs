//! The Windows source's tests under wine (scripts/windows-test.sh), in one test binary:
//! the registry path and the COM path against the Messenger test double, sharing `common`.
//! Windows only: on other targets this binary has no tests.
#![cfg(windows)]

mod common;
mod messenger;
mod registry;
