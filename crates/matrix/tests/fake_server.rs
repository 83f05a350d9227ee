//! Against a loopback fake homeserver.
