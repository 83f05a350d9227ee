//! Any request through the gateway's router: method, path and query, the headers the gateway
//! reads (Host, Origin, Sec-Fetch-Site, Authorization, Last-Event-ID) and a body. The answer is
//! a response, never a panic and never a 500.
#![no_main]

use std::sync::{Arc, OnceLock};

use imstatus_core::{AccountId, Availability, Observation, SourceKind, Status};
use imstatus_gateway::{app, Gateway, GatewayState};
use imstatus_hub::testing::scripted;
use imstatus_hub::Hub;
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt;

/// One runtime and one gateway for every input: a scripted account, signed in.
fn world() -> &'static (tokio::runtime::Runtime, GatewayState) {
    static WORLD: OnceLock<(tokio::runtime::Runtime, GatewayState)> = OnceLock::new();
    WORLD.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let state = rt.block_on(async {
            let (source, script) = scripted(SourceKind::new_static("test"), Vec::new());
            let hub = Hub::builder()
                .with_source(AccountId::new("alice"), source)
                .start();
            script.send([
                Observation::presence("desk", Status::with_message(Availability::Away, "lunch")),
                Observation::Synced,
            ]);
            Gateway::new(Arc::new(hub), &[]).into_state()
        });
        (rt, state)
    })
}

/// Splits the input at `\n` into: method, path, then `name: value` header lines, then the
/// body after an empty line.
fn request(data: &[u8]) -> Option<axum::http::Request<axum::body::Body>> {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split('\n');
    let method = match lines.next()?.bytes().next().unwrap_or(0) % 5 {
        0 => "GET",
        1 => "PUT",
        2 => "POST",
        3 => "HEAD",
        _ => "OPTIONS",
    };
    let path = lines.next()?;
    let mut builder = axum::http::Request::builder().method(method).uri(path);
    let mut body = String::new();
    let mut in_body = false;
    for line in lines {
        if in_body {
            body.push_str(line);
            body.push('\n');
        } else if line.is_empty() {
            in_body = true;
        } else if let Some((name, value)) = line.split_once(':') {
            builder = builder.header(name.trim(), value.trim());
        }
    }
    builder.body(axum::body::Body::from(body)).ok()
}

fuzz_target!(|data: &[u8]| {
    let (rt, state) = world();
    let Some(req) = request(data) else {
        return;
    };
    let response = rt
        .block_on(app(state.clone()).oneshot(req))
        .expect("the router never fails");
    assert_ne!(response.status().as_u16(), 500, "an internal error");
});
