//! The XMPP source's integration tests in one test binary (one link instead of five on 2
//! cores): against a real Prosody (`prosody`, `visibility`, `announce`, `doctor`, the last two
//! also against ejabberd where they say so) and a scripted server of our own for what a real
//! one will not send (`fake_server`). `log_secrets` stays a binary of its own: it installs a
//! process-wide subscriber at TRACE.

mod announce;
mod doctor;
mod fake_server;
mod prosody;
mod visibility;
