//! End-to-end tests of the desktop source against real components (PulseAudio, Xvfb, inotify
//! and /proc) and, where none can run here (logind, a desktop's screensaver), a test double on
//! private buses.

#![allow(missing_docs)]

mod camera;
mod common;
mod config;
mod double;
mod hostile;
mod idle;
mod lock;
mod microphone;
