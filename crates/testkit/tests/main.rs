//! The testkit's own tests against the real programs it starts, in one test binary (one link
//! instead of four on 2 cores).

mod dbus;
mod ejabberd;
mod finch;
mod prosody;
