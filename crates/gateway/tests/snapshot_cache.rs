//! The read path answers from rendered snapshots kept per account: after every kind of
//! event (a long pseudo-random sequence of every observation, the sign-in timer, a source
//! going down and coming back, desktop signals), `GET /v1/accounts/{name}` and `GET
//! /v1/accounts` must answer exactly what a fresh serialisation of the hub's state says,
//! byte for byte but for `time` (and, for a snapshot whose `idle_s` moves with the clock, that
//! reading); scoped tokens still see only their accounts; the headers are unchanged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use common::*;
use http_body_util::BodyExt as _;
use imstatus_config::TokenConfig;
use imstatus_core::{
    AccountId, ActivitySignal, App, Availability, ContactId, ErrorCode, EventKind, Observation,
    PartId, SignOutReason, SourceKind, Status,
};
use imstatus_gateway::{app, hash_token, Gateway, GatewayState};
use imstatus_hub::testing::{scripted, Script};
use imstatus_hub::{Hub, Subscription};
use serde_json::Value;
use tower::ServiceExt as _;

const LIMIT: Duration = Duration::from_secs(120);

/// A tiny deterministic generator (xorshift64*): the sequence is the same on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn status(rng: &mut Rng) -> Status {
    let availability = *rng.pick(&[
        Availability::Available,
        Availability::Chatty,
        Availability::Away,
        Availability::ExtendedAway,
        Availability::Busy,
        Availability::Invisible,
        Availability::Offline,
    ]);
    match rng.below(4) {
        0 => Status::new(availability),
        1 => Status::with_message(availability, "lunch \"é\" <b>&\u{1F600}"),
        2 => Status::with_message(availability, format!("msg {}", rng.below(1000))),
        _ => Status::with_message(availability, "line\nbreak\ttab\\"),
    }
}

fn apps(rng: &mut Rng) -> Vec<App> {
    (0..rng.below(3))
        .map(|i| {
            App::new(
                format!("app{i}"),
                (rng.below(2) == 0).then_some(100 + i as u32),
            )
        })
        .collect()
}

/// A signal without an idle reading most of the time (the snapshot stays cacheable).
fn activity(rng: &mut Rng) -> Observation {
    Observation::Activity(match rng.below(5) {
        0 => ActivitySignal::Microphone(apps(rng)),
        1 => ActivitySignal::Camera(apps(rng)),
        2 => ActivitySignal::Locked(rng.below(2) == 0),
        3 => ActivitySignal::Idle {
            idle: rng.below(2) == 0,
            input_ago: None,
        },
        _ => ActivitySignal::Idle {
            idle: true,
            input_ago: (rng.below(3) == 0).then(|| Duration::from_secs(rng.below(500))),
        },
    })
}

/// Any observation an IM account can get.
fn im_observation(rng: &mut Rng) -> Observation {
    let part = PartId::new(*rng.pick(&["desk", "phone", "laptop"]));
    let reason = *rng.pick(&[
        SignOutReason::User,
        SignOutReason::ClientExited,
        SignOutReason::ConnectionLost,
        SignOutReason::AuthFailed,
        SignOutReason::Unknown,
    ]);
    let code = *rng.pick(&[
        ErrorCode::AuthFailed,
        ErrorCode::Disconnected,
        ErrorCode::ProtocolError,
    ]);
    match rng.below(18) {
        0 => Observation::ClientStarting,
        1 => Observation::ClientAppeared,
        2 => Observation::ClientQuitting,
        3 => Observation::ClientVanished,
        4 => Observation::Connecting(part),
        5 => Observation::SignedOn(part),
        6 => Observation::SignOnFailed(part, code),
        7 => Observation::SigningOff(part),
        8 => Observation::SignedOff(part, reason),
        9 => Observation::Absent(part, reason),
        10 | 11 => Observation::Presence {
            part,
            status: status(rng),
            priority: (rng.below(2) == 0).then(|| rng.below(20) as i32 - 5),
        },
        12 => Observation::Status(part, status(rng)),
        13 | 14 => Observation::Contact(
            ContactId::new(format!("c{}@example.test", rng.below(4))),
            status(rng),
        ),
        15 => Observation::Anomaly(ErrorCode::ProtocolError, "odd stanza".to_owned()),
        16 => Observation::SourceDown(code, format!("down {}", rng.below(100))),
        _ => Observation::Synced,
    }
}

/// Any observation a desktop account (no sign-in) can get after its start.
fn desk_observation(rng: &mut Rng) -> Observation {
    match rng.below(8) {
        0 => Observation::SourceDown(ErrorCode::Disconnected, "bus gone".to_owned()),
        1 => Observation::Synced,
        2 => Observation::ClientVanished,
        3 => Observation::ClientAppeared,
        _ => activity(rng),
    }
}

const READ_IM: &str = "read-im-secret";
const READ_EVERY: &str = "read-every-secret";

fn scoped_tokens() -> Vec<TokenConfig> {
    let t = |secret: &str, accounts: &[&str]| TokenConfig {
        name: secret.trim_end_matches("-secret").to_owned(),
        sha256: hash_token(secret),
        accounts: accounts.iter().map(|a| (*a).to_owned()).collect(),
        write: false,
    };
    vec![t(READ_IM, &["im"]), t(READ_EVERY, &["*"])]
}

struct Setup {
    hub: Arc<Hub>,
    state: GatewayState,
    im: Script,
    desk: Script,
    other: Script,
}

async fn setup(sign_in_timeout: Duration) -> (Setup, Subscription) {
    let (im, im_script) = scripted(
        SourceKind::new_static("test"),
        vec![
            Observation::presence("desk", Status::with_message(Availability::Away, "lunch")),
            Observation::Synced,
        ],
    );
    let (desk, desk_script) = scripted(
        SourceKind::new_static("desktop"),
        vec![
            Observation::NoSession,
            Observation::Activity(ActivitySignal::Locked(false)),
            Observation::Synced,
        ],
    );
    let (other, other_script) = scripted(
        SourceKind::new_static("test"),
        vec![
            Observation::presence("box", Status::new(Availability::Available)),
            Observation::Synced,
        ],
    );
    let (hub, sub) = Hub::builder()
        .with_source(AccountId::new("im"), im)
        .with_source(AccountId::new("desk"), desk)
        .with_source(AccountId::new("other"), other)
        .with_sign_in_timeout(sign_in_timeout)
        .start_subscribed();
    let hub = Arc::new(hub);
    let accounts = hub.accounts();
    assert!(hub.wait_settled(&accounts, STEP).await, "settled");
    let state = Gateway::new(hub.clone(), &scoped_tokens()).into_state();
    (
        Setup {
            hub,
            state,
            im: im_script,
            desk: desk_script,
            other: other_script,
        },
        sub,
    )
}

async fn get_raw(state: &GatewayState, uri: &str, token: &str) -> (StatusCode, Vec<u8>) {
    let req = Request::get(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Body::empty())
        .unwrap();
    let resp = app(state.clone()).oneshot(req).await.expect("infallible");
    let status = resp.status();
    if status == StatusCode::OK {
        let h = resp.headers();
        assert_eq!(h[header::CONTENT_TYPE], "application/json", "{uri}");
        assert_eq!(h[header::CACHE_CONTROL], "no-store", "{uri}");
        assert!(h.get(header::ETAG).is_none(), "{uri}: no ETag, as before");
    }
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, body.to_vec())
}

/// A fresh serialisation of the account as the hub has it now, written independently of the
/// gateway: the snapshot event, plus `source_error` while the source is down.
fn fresh(hub: &Hub, account: &str) -> Vec<u8> {
    let state = hub
        .account_state(&AccountId::new(account))
        .expect("account");
    let mut out = serde_json::to_vec(&state.snapshot).unwrap();
    if let Some(e) = state.source_error {
        let text = |s: &str| serde_json::to_string(s).unwrap();
        out.pop();
        let obj = format!(
            r#","source_error":{{"code":{},"hresult":{},"detail":{},"hint":{}}}}}"#,
            text(e.code.as_str()),
            text(&format!("0x{:08X}", e.code.hresult())),
            text(&e.detail),
            text(e.code.hint()),
        );
        out.extend_from_slice(obj.as_bytes());
    }
    out
}

/// The snapshot bytes with the 24 bytes of `time` blanked.
fn without_time(json: &[u8]) -> Vec<u8> {
    let key = br#","time":""#;
    let at = json
        .windows(key.len())
        .position(|w| w == key)
        .expect("a time field")
        + key.len();
    let mut out = json.to_vec();
    out[at..at + 24].fill(b'#');
    assert_eq!(out[at + 24], b'"', "{}", String::from_utf8_lossy(json));
    out
}

/// `got` is `want` but for the time (and an `idle_s` read a moment apart).
fn assert_same(got: &[u8], want: &[u8], what: &str) {
    let (got_v, want_v): (Value, Value) = (
        serde_json::from_slice(got).expect("json"),
        serde_json::from_slice(want).expect("json"),
    );
    let idle = |v: &Value| v.pointer("/activity/idle_s").and_then(Value::as_u64);
    if let (Some(a), Some(b)) = (idle(&got_v), idle(&want_v)) {
        assert!(a.abs_diff(b) <= 1, "{what}: idle_s {a} vs {b}");
        let (mut g, mut w) = (got_v, want_v);
        for v in [&mut g, &mut w] {
            v["time"] = Value::Null;
            v["activity"]["idle_s"] = Value::Null;
        }
        assert_eq!(g, w, "{what}");
        return;
    }
    assert_eq!(
        String::from_utf8_lossy(&without_time(got)),
        String::from_utf8_lossy(&without_time(want)),
        "{what}"
    );
}

/// Every read route agrees with a fresh serialisation, twice (the second read is served from
/// what the first one kept), for every account, and the scoped token sees only `im`.
async fn check_all(s: &Setup, step: usize) {
    let names = ["im", "desk", "other"];
    let want: Vec<Vec<u8>> = names.iter().map(|a| fresh(&s.hub, a)).collect();
    for round in 0..2 {
        for (name, want) in names.iter().zip(&want) {
            let (st, got) = get_raw(&s.state, &format!("/v1/accounts/{name}"), READ_EVERY).await;
            assert_eq!(st, StatusCode::OK);
            assert_same(
                &got,
                want,
                &format!("step {step} round {round}: GET {name}"),
            );
        }
        let (st, list) = get_raw(&s.state, "/v1/accounts", READ_EVERY).await;
        assert_eq!(st, StatusCode::OK);
        let list: Vec<Value> = serde_json::from_slice(&list).expect("list");
        assert_eq!(list.len(), 3);
        for (item, want) in list.iter().zip(&want) {
            let got = serde_json::to_vec(item).unwrap();
            // Values re-serialised: same order of keys (serde_json's map is sorted, so both
            // sides go through the same `Value`).
            let want = serde_json::to_vec(&serde_json::from_slice::<Value>(want).unwrap()).unwrap();
            assert_same(&got, &want, &format!("step {step} round {round}: list"));
        }
        // The list's own bytes are the single answers' bytes joined.
        let (_, raw) = get_raw(&s.state, "/v1/accounts", READ_EVERY).await;
        let mut joined = b"[".to_vec();
        for (i, want) in want.iter().enumerate() {
            if i > 0 {
                joined.push(b',');
            }
            joined.extend_from_slice(want);
        }
        joined.push(b']');
        if !raw.windows(9).any(|w| w == b"\"idle_s\":") {
            let blank = |b: &[u8]| {
                // Blank every time value: `"time":"` + 24 bytes.
                let mut out = b.to_vec();
                let key = br#""time":""#;
                let mut i = 0;
                while let Some(p) = out[i..].windows(key.len()).position(|w| w == key) {
                    let at = i + p + key.len();
                    out[at..at + 24].fill(b'#');
                    i = at + 24;
                }
                out
            };
            assert_eq!(
                String::from_utf8_lossy(&blank(&raw)),
                String::from_utf8_lossy(&blank(&joined)),
                "step {step}: the list's bytes"
            );
        }
        // The scoped token: `im` only, the others 404 like a missing account.
        let (st, _) = get_raw(&s.state, "/v1/accounts/im", READ_IM).await;
        assert_eq!(st, StatusCode::OK);
        for name in ["desk", "other", "nobody"] {
            let (st, _) = get_raw(&s.state, &format!("/v1/accounts/{name}"), READ_IM).await;
            assert_eq!(st, StatusCode::NOT_FOUND, "{name}");
        }
        let (_, scoped) = get_raw(&s.state, "/v1/accounts", READ_IM).await;
        let scoped: Vec<Value> = serde_json::from_slice(&scoped).expect("list");
        let names: Vec<&str> = scoped
            .iter()
            .map(|v| v["account"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["im"], "step {step}");
    }
}

/// Sends a batch and waits until the hub has applied it (its version moved, and reading the
/// state waits for the hub's lock, which the batch holds while it is applied).
async fn apply(hub: &Hub, script: &Script, account: &str, batch: Vec<Observation>) {
    let id = AccountId::new(account);
    let before = hub.snapshot_version(&id).expect("version");
    script.send(batch);
    poll("the batch applied", STEP, || {
        (hub.snapshot_version(&id).expect("version") != before).then_some(())
    })
    .await;
    let _ = hub.account_state(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_equal_a_fresh_serialisation_after_every_kind_of_event() {
    limit(LIMIT, async {
        // No sign-in timer fires during the sequence (the next test has one): each check
        // compares with the state right before it, which nothing else changes meanwhile.
        let (s, mut sub) = setup(Duration::from_secs(3600)).await;
        check_all(&s, 0).await;
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        for step in 1..=300 {
            let (account, script) = match rng.below(10) {
                0..=5 => ("im", &s.im),
                6..=8 => ("desk", &s.desk),
                _ => ("other", &s.other),
            };
            let n = 1 + rng.below(3) as usize;
            let batch: Vec<Observation> = (0..n)
                .map(|_| match account {
                    "desk" => desk_observation(&mut rng),
                    _ => im_observation(&mut rng),
                })
                .collect();
            apply(&s.hub, script, account, batch).await;
            check_all(&s, step).await;
        }
        // Which kinds of event the sequence produced: all of them but the snapshot.
        let mut kinds = BTreeSet::new();
        while let Some(e) = sub.try_recv() {
            if !matches!(e.kind, EventKind::Snapshot { .. }) {
                kinds.insert(e.kind.name());
            }
        }
        let want: BTreeSet<&str> = [
            "activity_changed",
            "client_shutdown",
            "client_started",
            "client_starting",
            "contact_status_changed",
            "resource_changed",
            "signed_in",
            "signed_out",
            "signing_in",
            "signing_out",
            "source_error",
            "status_changed",
        ]
        .into_iter()
        .collect();
        assert_eq!(kinds, want, "every kind of event was checked");
        // The subscription never lagged: the ring held all of them.
        assert_eq!(s.hub.resync_count(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sign_in_timer_invalidates_the_cached_answer() {
    limit(LIMIT, async {
        let (s, _sub) = setup(Duration::from_millis(300)).await;
        let im = AccountId::new("im");
        check_all(&s, 0).await;
        let before = s.hub.snapshot_version(&im).unwrap();
        apply(
            &s.hub,
            &s.im,
            "im",
            vec![Observation::Connecting(PartId::new("slow"))],
        )
        .await;
        let connecting = s.hub.snapshot_version(&im).unwrap();
        assert_ne!(connecting, before);
        // Read (and so keep) the answer while the part signs in, unless the timer already
        // fired on a very slow machine.
        let (_, first) = get_raw(&s.state, "/v1/accounts/im", READ_EVERY).await;
        let first: Value = serde_json::from_slice(&first).unwrap();
        if s.hub.snapshot_version(&im).unwrap() == connecting {
            let slow = first["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["resource"] == "slow")
                .expect("the part is listed");
            assert_eq!(slow["session"], "signing_in");
        }
        // The timer fails the sign-in by itself, with no request in between; the next read
        // must say so.
        poll("the sign-in timer fired", STEP, || {
            (s.hub.snapshot_version(&im).unwrap() != connecting).then_some(())
        })
        .await;
        let _ = s.hub.account_state(&im);
        let (_, after) = get_raw(&s.state, "/v1/accounts/im", READ_EVERY).await;
        let after: Value = serde_json::from_slice(&after).unwrap();
        assert!(
            after["resources"]
                .as_array()
                .unwrap()
                .iter()
                .all(|r| r["resource"] != "slow" || r["session"] != "signing_in"),
            "{after}"
        );
        check_all(&s, 1).await;
    })
    .await;
}
