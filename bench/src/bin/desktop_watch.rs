//! Prints the desktop source's events with a monotonic timestamp (µs since start), to see by
//! hand how soon a microphone, camera, idle or lock change becomes an event:
//!
//! ```sh
//! target/release/desktop_watch microphone camera=/dev/video* idle idle_after=5000 lock
//! ```
//!
//! The buses, display and sound server come from the usual environment variables. Runs until
//! Ctrl-C.

use std::sync::Arc;
use std::time::{Duration, Instant};

use imstatus_bench::args::Args;
use imstatus_bench::fail;
use imstatus_core::AccountId;
use imstatus_desktop::{DesktopConfig, DesktopSource};
use imstatus_hub::Hub;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::from_env(&[]);
    args.only(&[]);
    let mut config = DesktopConfig::default();
    for arg in args.positional() {
        match arg.split_once('=') {
            Some(("camera", devices)) => {
                config.camera = true;
                config.camera_devices = vec![devices.to_owned()];
            }
            Some(("idle_after", ms)) => match ms.parse() {
                Ok(ms) => config.idle_after = Duration::from_millis(ms),
                Err(_) => fail(format_args!("idle_after={ms}: not a number of milliseconds")),
            },
            _ => match arg.as_str() {
                "microphone" => config.microphone = true,
                "camera" => config.camera = true,
                "idle" => config.idle = true,
                "lock" => config.lock = true,
                other => fail(format_args!(
                    "unknown signal {other:?} (microphone, camera[=GLOB], idle, idle_after=MS, lock)"
                )),
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
