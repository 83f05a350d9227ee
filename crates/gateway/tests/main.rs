//! The gateway's integration tests, in one test binary (one link instead of eight on 2 cores),
//! sharing `common` (scripted hubs, a real server on 127.0.0.1:0, a raw SSE client, polling).

mod common;
mod cross_site;
mod dashboard;
mod direct;
mod flood;
mod routes;
mod serve;
mod slow_consumer;
mod xmpp;
