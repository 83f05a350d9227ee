//! The microphone against a real PulseAudio and a real `parecord`.

use std::time::{Duration, Instant};

use imstatus_core::{Activity, App, Client, EventKind};
use imstatus_desktop::DesktopConfig;
use imstatus_testkit::PulseAudio;

use crate::common::{Desk, DEADLINE};

fn config(pa: &PulseAudio) -> DesktopConfig {
    DesktopConfig {
        microphone: true,
        pulse_server: Some(pa.server()),
        ..DesktopConfig::default()
    }
}

fn on_call(name: &str, pid: u32) -> Activity {
    Activity {
        microphone: true,
        in_call: true,
        microphone_apps: vec![App::new(name, Some(pid))],
        ..Activity::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capture_stream_is_a_call_with_its_app_twice_in_a_row() {
    let pa = PulseAudio::start().expect("PulseAudio");
    let mut desk = Desk::start(config(&pa));
    assert_eq!(desk.first_activity().await, Activity::default());
    for _ in 0..2 {
        let start = Instant::now();
        let mut rec = pa.record("mic").expect("parecord");
        let to = desk.activity(DEADLINE).await;
        let took = start.elapsed();
        assert_eq!(to, on_call("parecord", rec.pid()));
        assert!(took < Duration::from_secs(1), "took {took:?}");
        let start = Instant::now();
        rec.stop().expect("stop parecord");
        assert_eq!(desk.activity(DEADLINE).await, Activity::default());
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "took {:?}",
            start.elapsed()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_a_monitor_is_not_a_call() {
    let pa = PulseAudio::start().expect("PulseAudio");
    let mut desk = Desk::start(config(&pa));
    assert_eq!(desk.first_activity().await, Activity::default());
    let _monitor = pa.record("speaker.monitor").expect("parecord");
    let mut mic = pa.record("mic").expect("parecord");
    // The first change is the microphone's stream alone.
    assert_eq!(
        desk.activity(DEADLINE).await,
        on_call("parecord", mic.pid())
    );
    mic.stop().expect("stop");
    assert_eq!(desk.activity(DEADLINE).await, Activity::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sound_server_is_a_source_error_and_its_return_is_seen() {
    let mut pa = PulseAudio::start().expect("PulseAudio");
    let mut desk = Desk::start(config(&pa));
    assert_eq!(desk.first_activity().await, Activity::default());
    let rec = pa.record("mic").expect("parecord");
    assert_eq!(
        desk.activity(DEADLINE).await,
        on_call("parecord", rec.pid())
    );
    drop(rec);
    assert_eq!(desk.activity(DEADLINE).await, Activity::default());

    pa.kill().expect("kill PulseAudio");
    let (code, detail) = desk.source_error(DEADLINE).await;
    assert_eq!(code, "disconnected", "{detail}");
    assert!(detail.starts_with("microphone: "), "{detail}");
    let snap = desk
        .hub
        .snapshot(&crate::common::account())
        .expect("account");
    assert_eq!(snap.snapshot().map(|s| s.client), Some(Client::NotRunning));

    pa.restart().expect("restart PulseAudio");
    desk.until(DEADLINE, |e| {
        matches!(e.kind, EventKind::ClientStarted).then_some(())
    })
    .await;
    let rec = pa.record("mic").expect("parecord");
    assert_eq!(
        desk.activity(DEADLINE).await,
        on_call("parecord", rec.pid())
    );
}
