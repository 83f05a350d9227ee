//! Prints the desktop source's events with a monotonic timestamp (µs since start):
//! `cargo run -p imstatus-desktop --example watch -- microphone camera=/dev/video* idle lock`.
//! The buses, display and sound server come from the usual environment variables.

use std::sync::Arc;
use std::time::Instant;

use imstatus_core::AccountId;
use imstatus_desktop::{DesktopConfig, DesktopSource};
use imstatus_hub::Hub;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let mut config = DesktopConfig::default();
    for arg in std::env::args().skip(1) {
        match arg.split_once('=') {
            Some(("camera", devices)) => {
                config.camera = true;
                config.camera_devices = vec![devices.to_owned()];
            }
            Some(("idle_after", ms)) => {
                config.idle_after = std::time::Duration::from_millis(ms.parse().unwrap_or(300_000));
            }
            _ => match arg.as_str() {
                "microphone" => config.microphone = true,
                "camera" => config.camera = true,
                "idle" => config.idle = true,
                "lock" => config.lock = true,
                other => eprintln!("ignoring {other}"),
            },
        }
    }
    let hub = Hub::builder()
        .with_source(AccountId::new("desk"), Arc::new(DesktopSource::new(config)))
        .start();
    let mut sub = hub.subscribe();
    let start = Instant::now();
    while let Some(e) = sub.recv().await {
        let json = serde_json::to_string(&*e).unwrap_or_default();
        println!("{} {json}", start.elapsed().as_micros());
    }
}
