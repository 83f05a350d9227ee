//! The ordering contract of design §1, scenario by scenario and as properties.

use std::time::Duration;

use imstatus_core::{
    AccountId, Activity, ActivitySignal, App, Availability, Client, ContactId, ErrorCode, Event,
    EventKind, Observation, PartId, Session, SignInResult, SignOutReason, Snapshot, SourceKind,
    Status, Timestamp, Tracker,
};
use proptest::prelude::*;

fn alice() -> AccountId {
    AccountId::new("alice")
}

/// A tracker with one synced account and a clock.
struct Harness {
    tracker: Tracker,
    now: u64,
}

impl Harness {
    fn new(source: SourceKind) -> Self {
        let mut tracker = Tracker::new();
        tracker.add_account(alice(), source);
        Harness {
            tracker,
            now: 1_000,
        }
    }

    /// A purple-like account: client not running, synced, nothing signed in.
    fn stopped_client() -> Self {
        let mut h = Harness::new(SourceKind::new_static("purple"));
        h.feed([Observation::ClientVanished, Observation::Synced]);
        h
    }

    fn feed(&mut self, obs: impl IntoIterator<Item = Observation>) -> Vec<EventKind> {
        for o in obs {
            self.now += 10;
            self.tracker
                .handle_observation(Timestamp::from_millis(self.now), &alice(), o)
                .expect("known account");
        }
        self.drain().into_iter().map(|e| e.kind).collect()
    }

    fn drain(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.tracker.poll_event()).collect()
    }

    fn snapshot(&self) -> Snapshot {
        self.tracker
            .snapshot(&alice(), Timestamp::from_millis(self.now))
            .and_then(|e| e.snapshot().cloned())
            .expect("known account")
    }
}

fn part(s: &str) -> PartId {
    PartId::new(s)
}

fn away(msg: &str) -> Status {
    Status::with_message(Availability::Away, msg)
}

fn names(kinds: &[EventKind]) -> Vec<&'static str> {
    kinds.iter().map(EventKind::name).collect()
}

#[test]
fn client_started_comes_before_signed_in_when_sign_on_is_seen_first() {
    let mut h = Harness::stopped_client();
    let kinds = h.feed([
        Observation::Connecting(part("a")),
        Observation::SignedOn(part("a")),
    ]);
    assert_eq!(
        names(&kinds),
        [
            "client_started",
            "signing_in",
            "resource_changed",
            "signed_in",
            "status_changed",
            "resource_changed"
        ]
    );
    assert_eq!(h.snapshot().client, Client::Running);
}

#[test]
fn signed_out_comes_before_client_shutdown_when_killed() {
    let mut h = Harness::stopped_client();
    h.feed([
        Observation::ClientAppeared,
        Observation::presence("a", Status::new(Availability::Available)),
    ]);
    let kinds = h.feed([Observation::ClientVanished]);
    assert_eq!(
        kinds,
        vec![
            EventKind::SignedOut {
                reason: SignOutReason::ClientExited
            },
            EventKind::StatusChanged {
                from: Status::new(Availability::Available),
                to: Status::OFFLINE,
                mistatus: 0x001,
                decided_by: None,
            },
            EventKind::ResourceChanged {
                resource: part("a"),
                from: Some(imstatus_core::Resource {
                    resource: part("a"),
                    session: Session::SignedIn,
                    availability: Availability::Available,
                    message: None,
                    priority: None,
                }),
                to: None,
            },
            EventKind::ClientShutdown,
        ]
    );
}

#[test]
fn quitting_client_signs_out_as_the_user() {
    let mut h = Harness::stopped_client();
    h.feed([
        Observation::ClientAppeared,
        Observation::presence("a", away("x")),
    ]);
    let kinds = h.feed([Observation::ClientQuitting, Observation::ClientVanished]);
    assert_eq!(
        kinds.first(),
        Some(&EventKind::SignedOut {
            reason: SignOutReason::User
        })
    );
    assert_eq!(kinds.last(), Some(&EventKind::ClientShutdown));
}

#[test]
fn repeated_observation_emits_nothing() {
    let mut h = Harness::stopped_client();
    let first = h.feed([
        Observation::ClientAppeared,
        Observation::presence("a", away("lunch")),
    ]);
    assert!(!first.is_empty());
    let again = h.feed([
        Observation::ClientAppeared,
        Observation::presence("a", away("lunch")),
    ]);
    assert_eq!(again, vec![]);
    let contact = ContactId::new("bob@example.test");
    assert_eq!(
        h.feed([Observation::Contact(contact.clone(), away("x"))])
            .len(),
        1
    );
    assert_eq!(h.feed([Observation::Contact(contact, away("x"))]), vec![]);
}

#[test]
fn status_is_aggregated_by_priority_then_availability() {
    let mut h = Harness::new(SourceKind::new_static("xmpp"));
    h.feed([Observation::Synced]);
    let p = |name: &str, a, prio| Observation::Presence {
        part: part(name),
        status: Status::new(a),
        priority: Some(prio),
    };
    h.feed([p("desk", Availability::Away, 5)]);
    h.feed([p("phone", Availability::Available, 0)]);
    assert_eq!(
        h.snapshot().availability,
        Availability::Away,
        "priority wins"
    );
    h.feed([p("laptop", Availability::Chatty, 5)]);
    assert_eq!(
        h.snapshot().availability,
        Availability::Chatty,
        "then availability"
    );
    assert_eq!(h.snapshot().resources.len(), 3);
    let kinds = h.feed([
        Observation::Absent(part("laptop"), SignOutReason::User),
        Observation::Absent(part("desk"), SignOutReason::User),
    ]);
    assert!(names(&kinds).iter().all(|n| *n != "signed_out"));
    assert_eq!(h.snapshot().availability, Availability::Available);
    let kinds = h.feed([Observation::Absent(part("phone"), SignOutReason::User)]);
    assert_eq!(
        kinds.first(),
        Some(&EventKind::SignedOut {
            reason: SignOutReason::User
        })
    );
    assert_eq!(h.snapshot().mistatus, 0x001);
}

#[test]
fn wrong_password_is_a_failed_sign_in_not_a_sign_out() {
    let mut h = Harness::stopped_client();
    h.feed([Observation::ClientAppeared]);
    let kinds = h.feed([
        Observation::Connecting(part("a")),
        Observation::SignOnFailed(part("a"), ErrorCode::AuthFailed),
    ]);
    assert_eq!(
        names(&kinds),
        [
            "signing_in",
            "resource_changed",
            "signed_in",
            "resource_changed"
        ]
    );
    assert_eq!(
        kinds[2],
        EventKind::SignedIn {
            result: SignInResult::Failed(ErrorCode::AuthFailed)
        }
    );
    assert_eq!(h.snapshot().session, Session::SignedOut);
}

#[test]
fn a_sign_in_that_hangs_times_out() {
    let mut h = Harness::stopped_client();
    h.feed([
        Observation::ClientAppeared,
        Observation::Connecting(part("a")),
    ]);
    let deadline = h
        .tracker
        .poll_timeout()
        .expect("a deadline while signing in");
    h.tracker
        .handle_timeout(Timestamp::from_millis(deadline.as_millis() - 1));
    assert!(h.drain().is_empty(), "not before the deadline");
    h.tracker.handle_timeout(deadline);
    let kinds: Vec<_> = h.drain().into_iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds[0],
        EventKind::SignedIn {
            result: SignInResult::Failed(ErrorCode::Timeout)
        }
    );
    assert_eq!(h.tracker.poll_timeout(), None);
}

#[test]
fn source_down_makes_the_session_unknown_and_resync_emits_only_real_differences() {
    let mut h = Harness::new(SourceKind::new_static("xmpp"));
    let bob = ContactId::new("bob@example.test");
    let carol = ContactId::new("carol@example.test");
    h.feed([
        Observation::presence("desk", away("lunch")),
        Observation::presence("phone", away("lunch")),
        Observation::Contact(bob.clone(), Status::new(Availability::Available)),
        Observation::Contact(carol.clone(), Status::new(Availability::Available)),
        Observation::Synced,
    ]);
    let kinds = h.feed([Observation::SourceDown(
        ErrorCode::Disconnected,
        "stream closed".into(),
    )]);
    assert_eq!(
        kinds,
        vec![EventKind::SourceError {
            code: ErrorCode::Disconnected,
            detail: "stream closed".into(),
            session_unknown: true
        }]
    );
    assert_eq!(h.snapshot().session, Session::Unknown);
    assert_eq!(h.snapshot().mistatus, 0);
    // The same failure again while down (a failed reconnect) is not news.
    assert_eq!(
        h.feed([Observation::SourceDown(
            ErrorCode::Disconnected,
            "stream closed".into()
        )]),
        vec![]
    );
    // Reconnected: desk still away, phone gone, bob unchanged, carol not re-reported.
    let kinds = h.feed([
        Observation::presence("desk", away("lunch")),
        Observation::Contact(bob, Status::new(Availability::Available)),
        Observation::Synced,
    ]);
    assert_eq!(
        names(&kinds),
        ["contact_status_changed", "signed_in", "resource_changed"]
    );
    assert!(
        matches!(&kinds[0], EventKind::ContactStatusChanged { contact, to, .. }
        if *contact == carol && *to == Status::OFFLINE)
    );
    assert_eq!(h.snapshot().session, Session::SignedIn);
    assert_eq!(h.snapshot().resources.len(), 1);
}

#[test]
fn snapshot_seq_is_the_accounts_last_event_and_changes_follow_it() {
    let mut h = Harness::stopped_client();
    let last = h.tracker.last_seq();
    let snap = h
        .tracker
        .snapshot(&alice(), Timestamp::from_millis(h.now))
        .expect("known");
    assert_eq!(snap.seq, last);
    h.feed([Observation::ClientAppeared]);
    assert_eq!(h.tracker.last_seq(), last + 1);
}

#[test]
fn events_serialise_to_the_documented_json() {
    let mut h = Harness::new(SourceKind::new_static("xmpp"));
    h.feed([Observation::Synced]);
    h.tracker
        .handle_observation(
            Timestamp::from_millis(1_795_514_400_000),
            &alice(),
            Observation::Presence {
                part: part("desk"),
                status: away("lunch"),
                priority: Some(5),
            },
        )
        .expect("known");
    let events = h.drain();
    let status = events
        .iter()
        .find(|e| e.kind.name() == "status_changed")
        .expect("status_changed");
    let json = serde_json::to_value(status).expect("serialise");
    assert_eq!(
        json,
        serde_json::json!({
            "seq": status.seq, "time": "2026-11-24T10:00:00.000Z", "account": "alice",
            "source": "xmpp", "event": "status_changed",
            "from": {"availability": "offline", "message": null},
            "to": {"availability": "away", "message": "lunch"}, "mistatus": 34
        })
    );
    let snap = h
        .tracker
        .snapshot(&alice(), Timestamp::from_millis(1_795_514_400_000))
        .expect("known");
    let json = serde_json::to_value(&snap).expect("serialise");
    assert_eq!(json["event"], "snapshot");
    assert_eq!(json["session"], "signed_in");
    assert_eq!(json["availability"], "away");
    assert_eq!(json["mistatus"], 34);
    assert_eq!(
        json["resources"],
        serde_json::json!([{"resource": "desk", "session": "signed_in",
            "availability": "away", "message": "lunch", "priority": 5}])
    );
    assert!(json.get("resync").is_none());
}

// ---------------------------------------------------------------- activity

fn mic(apps: &[(&str, u32)]) -> Observation {
    Observation::Activity(ActivitySignal::Microphone(
        apps.iter().map(|(n, p)| App::new(*n, Some(*p))).collect(),
    ))
}

fn idle(idle: bool, secs: u64) -> Observation {
    Observation::Activity(ActivitySignal::Idle {
        idle,
        input_ago: Some(Duration::from_secs(secs)),
    })
}

/// A desktop-like account: synced, client running, session unknown.
fn desktop() -> Harness {
    let mut h = Harness::new(SourceKind::new_static("desktop"));
    // An hour after the epoch, so that idle readings never reach back before it.
    h.now = 3_600_000;
    let kinds = h.feed([
        Observation::NoSession,
        Observation::ClientAppeared,
        Observation::Synced,
    ]);
    assert_eq!(kinds, vec![EventKind::ClientStarted]);
    h
}

#[test]
fn an_account_without_sign_in_keeps_its_session_unknown_through_resyncs() {
    let mut h = desktop();
    let kinds = h.feed([
        Observation::SourceDown(ErrorCode::ClientNotRunning, "no backend".into()),
        Observation::ClientVanished,
        Observation::ClientAppeared,
        Observation::Synced,
    ]);
    assert_eq!(
        names(&kinds),
        ["source_error", "client_shutdown", "client_started"]
    );
    assert_eq!(h.snapshot().session, Session::Unknown);
    assert_eq!(h.snapshot().availability, Availability::Unknown);
    assert_eq!(h.snapshot().mistatus, 0);
}

#[test]
fn activity_is_absent_until_a_source_reports_it_and_then_starts_from_null() {
    let mut h = desktop();
    assert_eq!(h.snapshot().activity, None);
    let json = serde_json::to_value(h.snapshot()).expect("serialise");
    assert!(json.get("activity").is_none(), "{json}");
    let kinds = h.feed([Observation::Activity(ActivitySignal::Locked(false))]);
    assert_eq!(
        kinds,
        vec![EventKind::ActivityChanged {
            from: None,
            to: Box::new(Activity::default()),
        }]
    );
    assert_eq!(h.snapshot().activity, Some(Activity::default()));
}

#[test]
fn microphone_apps_make_a_call_and_repeating_them_emits_nothing() {
    let mut h = desktop();
    h.feed([Observation::Activity(ActivitySignal::Locked(false))]);
    let kinds = h.feed([mic(&[("zoom", 7), ("parecord", 42), ("zoom", 7)])]);
    let on_call = Activity {
        microphone: true,
        in_call: true,
        microphone_apps: vec![App::new("parecord", Some(42)), App::new("zoom", Some(7))],
        ..Activity::default()
    };
    assert_eq!(
        kinds,
        vec![EventKind::ActivityChanged {
            from: Some(Box::new(Activity::default())),
            to: Box::new(on_call.clone()),
        }]
    );
    assert_eq!(h.feed([mic(&[("parecord", 42), ("zoom", 7)])]), vec![]);
    let kinds = h.feed([mic(&[])]);
    assert_eq!(
        kinds,
        vec![EventKind::ActivityChanged {
            from: Some(Box::new(on_call)),
            to: Box::new(Activity::default()),
        }]
    );
}

#[test]
fn idle_seconds_grow_in_snapshots_without_events_and_only_the_crossing_is_news() {
    let mut h = desktop();
    let kinds = h.feed([idle(false, 10)]);
    assert_eq!(names(&kinds), ["activity_changed"]);
    // The same state read again later: a larger reading, no event.
    assert_eq!(h.feed([idle(false, 40)]), vec![]);
    h.now += 5_000;
    assert_eq!(
        h.snapshot().activity.and_then(|a| a.idle_s),
        Some(45),
        "the snapshot counts from the last input it was told about"
    );
    let kinds = h.feed([idle(true, 300)]);
    let EventKind::ActivityChanged { from, to } = &kinds[0] else {
        panic!("expected activity_changed, got {kinds:?}");
    };
    assert_eq!(kinds.len(), 1);
    assert!(!from.as_ref().expect("known before").idle);
    assert!(to.idle);
    assert_eq!(to.idle_s, Some(300));
    // No idle backend any more: the reading's absence is news.
    let kinds = h.feed([Observation::Activity(ActivitySignal::Idle {
        idle: false,
        input_ago: None,
    })]);
    assert_eq!(names(&kinds), ["activity_changed"]);
    assert_eq!(h.snapshot().activity.and_then(|a| a.idle_s), None);
}

#[test]
fn absurd_idle_readings_saturate_instead_of_panicking() {
    let mut h = desktop();
    h.feed([Observation::Activity(ActivitySignal::Idle {
        idle: true,
        input_ago: Some(Duration::MAX),
    })]);
    let idle_s = h.snapshot().activity.and_then(|a| a.idle_s);
    assert_eq!(idle_s, Some(h.now / 1000), "counted from the epoch at most");
}

#[test]
fn a_call_clients_own_in_call_holds_with_microphone_and_camera_off_and_sharing_is_its_own_field() {
    let mut h = desktop();
    h.feed([Observation::Activity(ActivitySignal::Locked(false))]);
    let in_call = Activity {
        in_call: true,
        ..Activity::default()
    };
    assert_eq!(
        h.feed([Observation::Activity(ActivitySignal::InCall(true))]),
        vec![EventKind::ActivityChanged {
            from: Some(Box::new(Activity::default())),
            to: Box::new(in_call.clone()),
        }]
    );
    // The microphone going live and muted again leaves the call as it is.
    let live = Activity {
        microphone: true,
        microphone_apps: vec![App::new("Teams for Linux", None)],
        ..in_call.clone()
    };
    assert_eq!(
        h.feed([Observation::Activity(ActivitySignal::Microphone(vec![
            App::new("Teams for Linux", None)
        ]))]),
        vec![EventKind::ActivityChanged {
            from: Some(Box::new(in_call.clone())),
            to: Box::new(live.clone()),
        }]
    );
    let kinds = h.feed([
        Observation::Activity(ActivitySignal::Microphone(vec![])),
        Observation::Activity(ActivitySignal::ScreenSharing(true)),
    ]);
    let sharing = Activity {
        screen_sharing: true,
        ..in_call.clone()
    };
    assert_eq!(
        kinds,
        vec![
            EventKind::ActivityChanged {
                from: Some(Box::new(live)),
                to: Box::new(in_call.clone()),
            },
            EventKind::ActivityChanged {
                from: Some(Box::new(in_call)),
                to: Box::new(sharing.clone()),
            },
        ]
    );
    // Repeating is no news; the call ending clears in_call but not the share (its own signal).
    assert_eq!(
        h.feed([Observation::Activity(ActivitySignal::ScreenSharing(true))]),
        vec![]
    );
    let kinds = h.feed([Observation::Activity(ActivitySignal::InCall(false))]);
    assert_eq!(
        kinds,
        vec![EventKind::ActivityChanged {
            from: Some(Box::new(sharing)),
            to: Box::new(Activity {
                screen_sharing: true,
                ..Activity::default()
            }),
        }]
    );
}

#[test]
fn activity_changed_serialises_to_the_documented_json() {
    let mut h = desktop();
    h.feed([Observation::Activity(ActivitySignal::Locked(false))]);
    h.tracker
        .handle_observation(
            Timestamp::from_millis(1_795_514_400_000),
            &alice(),
            Observation::Activity(ActivitySignal::Camera(vec![App::new("cheese", Some(99))])),
        )
        .expect("known");
    let event = h.drain().pop().expect("an event");
    assert_eq!(
        serde_json::to_value(&event).expect("serialise"),
        serde_json::json!({
            "seq": event.seq, "time": "2026-11-24T10:00:00.000Z", "account": "alice",
            "source": "desktop", "event": "activity_changed",
            "from": {"microphone": false, "camera": false, "in_call": false,
                "screen_sharing": false, "idle_s": null,
                "idle": false, "locked": false, "microphone_apps": [], "camera_apps": []},
            "to": {"microphone": false, "camera": true, "in_call": true,
                "screen_sharing": false, "idle_s": null,
                "idle": false, "locked": false, "microphone_apps": [],
                "camera_apps": [{"name": "cheese", "pid": 99}]}
        })
    );
}

#[test]
fn snapshots_without_activity_keep_their_json_and_old_json_still_parses() {
    let old = r#"{"seq":7,"time":"2026-11-24T10:00:00.000Z","account":"alice","source":"xmpp",
        "event":"snapshot","client":"unknown","session":"signed_in","availability":"away",
        "message":"lunch","mistatus":34,"resources":[],
        "since":{"client":null,"session":null,"status":null}}"#;
    let event: Event = serde_json::from_str(old).expect("old JSON parses");
    assert_eq!(event.snapshot().map(|s| s.activity.clone()), Some(None));
    let back = serde_json::to_value(&event).expect("serialise");
    let expected: serde_json::Value = serde_json::from_str(old).expect("valid JSON");
    assert_eq!(
        back, expected,
        "no new key appears for a source without activity"
    );
}

// ---------------------------------------------------------------- properties

fn arb_status() -> impl Strategy<Value = Status> {
    (
        prop::sample::select(Availability::ALL.to_vec()),
        prop::option::of(prop::sample::select(vec!["lunch", "call", ""])),
    )
        .prop_map(|(a, m)| match m {
            Some(m) => Status::with_message(a, m),
            None => Status::new(a),
        })
}

fn arb_observation() -> impl Strategy<Value = Observation> {
    let part = prop::sample::select(vec!["a", "b", "c"]).prop_map(PartId::new);
    let contact = prop::sample::select(vec!["x@e.test", "y@e.test"]).prop_map(ContactId::new);
    let code = prop::sample::select(ErrorCode::ALL.to_vec());
    let reason = prop::sample::select(vec![
        SignOutReason::User,
        SignOutReason::ConnectionLost,
        SignOutReason::ServerShutdown,
    ]);
    prop_oneof![
        Just(Observation::ClientStarting),
        Just(Observation::ClientAppeared),
        Just(Observation::ClientQuitting),
        Just(Observation::ClientVanished),
        Just(Observation::Synced),
        part.clone().prop_map(Observation::Connecting),
        part.clone().prop_map(Observation::SignedOn),
        (part.clone(), code.clone()).prop_map(|(p, c)| Observation::SignOnFailed(p, c)),
        part.clone().prop_map(Observation::SigningOff),
        (part.clone(), reason.clone()).prop_map(|(p, r)| Observation::SignedOff(p, r)),
        (part.clone(), reason).prop_map(|(p, r)| Observation::Absent(p, r)),
        (part.clone(), arb_status(), prop::option::of(-2i32..3)).prop_map(
            |(part, status, priority)| Observation::Presence {
                part,
                status,
                priority
            }
        ),
        (part, arb_status()).prop_map(|(p, s)| Observation::Status(p, s)),
        (contact, arb_status()).prop_map(|(c, s)| Observation::Contact(c, s)),
        code.clone()
            .prop_map(|c| Observation::Anomaly(c, "bad".into())),
        code.prop_map(|c| Observation::SourceDown(c, "down".into())),
        arb_activity(),
    ]
}

fn arb_activity() -> impl Strategy<Value = Observation> {
    let apps = prop::collection::vec(
        (
            prop::sample::select(vec!["zoom", "parecord", "cheese"]),
            prop::option::of(1u32..4),
        )
            .prop_map(|(n, p)| App::new(n, p)),
        0..3,
    );
    prop_oneof![
        apps.clone().prop_map(ActivitySignal::Microphone),
        apps.prop_map(ActivitySignal::Camera),
        (any::<bool>(), prop::option::of(0u64..600_000)).prop_map(|(idle, ms)| {
            ActivitySignal::Idle {
                idle,
                input_ago: ms.map(Duration::from_millis),
            }
        }),
        any::<bool>().prop_map(ActivitySignal::Locked),
    ]
    .prop_map(Observation::Activity)
}

/// Steps: an observation, or time passing by that many seconds.
fn arb_steps() -> impl Strategy<Value = Vec<Result<Observation, u64>>> {
    prop::collection::vec(
        prop_oneof![
            9 => arb_observation().prop_map(Ok),
            1 => (1u64..90).prop_map(Err),
        ],
        0..80,
    )
}

struct Run {
    first: Snapshot,
    events: Vec<Event>,
    last: Snapshot,
    /// The last idle reading: when the last input was, per the last `Idle` observation.
    last_input: Option<Option<u64>>,
    /// The time of the final snapshot.
    end: u64,
    /// For each step: the events it produced and the observation.
    steps: Vec<(Option<Observation>, Vec<Event>)>,
}

fn run(steps: Vec<Result<Observation, u64>>) -> Run {
    let mut t = Tracker::new().with_sign_in_timeout(std::time::Duration::from_secs(30));
    t.add_account(alice(), SourceKind::new_static("purple"));
    let mut now = 1_000_000u64;
    let first = t
        .snapshot(&alice(), Timestamp::from_millis(now))
        .and_then(|e| e.snapshot().cloned())
        .expect("known");
    let mut all = Vec::new();
    let mut per_step = Vec::new();
    let mut last_input = None;
    for step in steps {
        now += 1;
        let obs = match step {
            Ok(o) => {
                if let Observation::Activity(ActivitySignal::Idle { input_ago, .. }) = &o {
                    last_input = Some(input_ago.map(|d| now - d.as_millis() as u64));
                }
                t.handle_observation(Timestamp::from_millis(now), &alice(), o.clone())
                    .expect("known");
                Some(o)
            }
            Err(secs) => {
                now += secs * 1000;
                if t.poll_timeout().is_some_and(|d| d.as_millis() <= now) {
                    t.handle_timeout(Timestamp::from_millis(now));
                }
                None
            }
        };
        let evs: Vec<Event> = std::iter::from_fn(|| t.poll_event()).collect();
        all.extend(evs.iter().cloned());
        per_step.push((obs, evs));
    }
    let last = t
        .snapshot(&alice(), Timestamp::from_millis(now))
        .and_then(|e| e.snapshot().cloned())
        .expect("known");
    Run {
        first,
        events: all,
        last,
        last_input,
        end: now,
        steps: per_step,
    }
}

/// The snapshot with the idle reading's value blanked (its presence kept): the reading grows
/// with time and is filled in when a snapshot is taken, never folded from events.
fn without_idle_reading(mut s: Snapshot) -> Snapshot {
    if let Some(a) = &mut s.activity {
        a.idle_s = a.idle_s.map(|_| 0);
    }
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn seq_is_strictly_increasing(steps in arb_steps()) {
        let r = run(steps);
        for w in r.events.windows(2) {
            prop_assert!(w[0].seq < w[1].seq);
        }
    }

    #[test]
    fn folding_events_over_the_first_snapshot_gives_the_current_one(steps in arb_steps()) {
        let r = run(steps);
        let mut folded = r.first.clone();
        // The same fold without contacts, as `wait`, `watch --exec` and a person keep it.
        let mut own = r.first.clone();
        own.contacts.clear();
        for e in &r.events {
            // Through JSON, as a subscriber receives them.
            let wire = serde_json::to_string(e).expect("serialise");
            let back: Event = serde_json::from_str(&wire).expect("parse back");
            prop_assert_eq!(&back, e);
            folded.apply(&back.kind, back.time);
            own.apply_own(&back.kind, back.time);
        }
        let idle_s = r.last.activity.as_ref().and_then(|a| a.idle_s);
        prop_assert_eq!(
            idle_s,
            r.last_input.flatten().map(|t| (r.end - t) / 1000),
            "a snapshot's idle_s counts from the last reading"
        );
        let mut expected_own = folded.clone();
        expected_own.contacts.clear();
        prop_assert_eq!(&own, &expected_own);
        prop_assert_eq!(without_idle_reading(folded), without_idle_reading(r.last));
    }

    #[test]
    fn an_idle_reading_alone_is_never_an_event(steps in arb_steps(), ms in 0u64..600_000) {
        // After any history, a second reading of the same idle state emits nothing.
        let mut steps = steps;
        steps.push(Ok(Observation::Activity(ActivitySignal::Idle {
            idle: true,
            input_ago: Some(Duration::from_millis(ms)),
        })));
        steps.push(Err(1));
        steps.push(Ok(Observation::Activity(ActivitySignal::Idle {
            idle: true,
            input_ago: Some(Duration::from_millis(ms / 2)),
        })));
        let r = run(steps);
        let last = r.steps.last().map(|(_, evs)| evs.clone()).unwrap_or_default();
        prop_assert!(last.is_empty(), "{:?}", last);
    }

    #[test]
    fn signed_out_always_precedes_client_shutdown(steps in arb_steps()) {
        let r = run(steps);
        let mut state = r.first.clone();
        for e in &r.events {
            if e.kind == EventKind::ClientShutdown {
                prop_assert!(
                    !matches!(state.session, Session::SignedIn | Session::SigningIn | Session::SigningOut),
                    "client_shutdown while {:?}", state.session
                );
            }
            state.apply(&e.kind, e.time);
        }
    }

    #[test]
    fn signed_in_never_while_client_not_running(steps in arb_steps()) {
        let r = run(steps);
        let mut state = r.first.clone();
        for e in &r.events {
            if matches!(e.kind, EventKind::SignedIn { result: SignInResult::Ok } | EventKind::SigningIn) {
                prop_assert_ne!(state.client, Client::NotRunning);
            }
            state.apply(&e.kind, e.time);
        }
    }

    #[test]
    fn repeating_an_observation_emits_nothing(steps in arb_steps()) {
        // Run the sequence with every observation doubled: the second copy adds nothing.
        let doubled: Vec<_> = steps
            .iter()
            .flat_map(|s| match s {
                Ok(o) => vec![Ok(o.clone()), Ok(o.clone())],
                Err(t) => vec![Err(*t)],
            })
            .collect();
        let r = run(doubled);
        let mut prev_obs: Option<Observation> = None;
        for (obs, evs) in &r.steps {
            if let (Some(o), Some(p)) = (obs, &prev_obs) {
                if o == p {
                    prop_assert!(evs.is_empty(), "{:?} repeated gave {:?}", o, evs);
                }
            }
            prev_obs = obs.clone();
        }
    }

    #[test]
    fn mistatus_signed_in_bit_matches_the_session(steps in arb_steps()) {
        let r = run(steps);
        let mut state = r.first.clone();
        for e in &r.events {
            state.apply(&e.kind, e.time);
            prop_assert_eq!(imstatus_core::is_signed_in(state.mistatus), state.session == Session::SignedIn);
            if let EventKind::StatusChanged { mistatus, .. } = e.kind {
                prop_assert_eq!(mistatus, state.mistatus);
            }
        }
    }
}
