//! The person rule (`docs/person.md`): each rule in turn, their order, and the bookkeeping of
//! `sync` (imstatus's writes, their echoes, the user's changes), scenario by scenario and as
//! properties over random histories run through real trackers.

use std::collections::BTreeMap;
use std::time::Duration;

use imstatus_core::person::{
    decide, Choice, Decision, Member, Person, Signals, Write, WriteKind, IN_A_CALL,
};
use imstatus_core::{
    AccountId, Activity, ActivitySignal, App, Availability, Client, DecidedBy, Event, EventKind,
    Observation, PartId, Rule, Session, SignOutReason, Signal, Snapshot, SourceKind, Status,
    Timestamp, Tracker,
};
use proptest::prelude::*;

fn id(s: &str) -> AccountId {
    AccountId::new(s)
}

fn st(a: Availability) -> Status {
    Status::new(a)
}

fn msg(a: Availability, m: &str) -> Status {
    Status::with_message(a, m)
}

fn by(rule: Rule, account: Option<&str>, signal: Option<Signal>) -> DecidedBy {
    DecidedBy {
        rule,
        account: account.map(id),
        signal,
    }
}

fn member(name: &str, session: Session, status: Status, choice: Option<(Status, u64)>) -> Member {
    Member {
        account: id(name),
        client: Client::Unknown,
        session,
        status,
        choice: choice.map(|(status, order)| Choice { status, order }),
    }
}

fn activity(mic: bool, locked: bool, idle: bool) -> Activity {
    Activity {
        microphone: mic,
        in_call: mic,
        locked,
        idle,
        microphone_apps: if mic {
            vec![App::new("parecord", Some(7))]
        } else {
            Vec::new()
        },
        ..Activity::default()
    }
}

// ------------------------------------------------------------------ the rule, one by one

#[test]
fn each_rule_decides_in_turn_with_what_decided_it() {
    let desk = id("desk");
    let signed_in = |choice| {
        vec![
            member("desktop", Session::SignedIn, st(Availability::Away), choice),
            member(
                "alice",
                Session::SignedIn,
                st(Availability::Available),
                None,
            ),
        ]
    };
    let with = |a: &Activity, members: &[Member]| {
        decide(
            members,
            Some(Signals {
                account: &desk,
                activity: a,
            }),
        )
    };
    let user = Some((msg(Availability::Away, "lunch"), 1));

    // 4: nothing else applies: the most available member.
    let d = with(&activity(false, false, false), &signed_in(None));
    assert_eq!(d.status, st(Availability::Available));
    assert_eq!(d.decided_by, by(Rule::MostAvailable, Some("alice"), None));
    // 3: idle, then locked (locked first when both).
    let d = with(&activity(false, false, true), &signed_in(None));
    assert_eq!(
        (d.status.clone(), d.decided_by),
        (
            st(Availability::Away),
            by(Rule::Away, Some("desk"), Some(Signal::Idle))
        )
    );
    let d = with(&activity(false, true, true), &signed_in(None));
    assert_eq!(
        d.decided_by,
        by(Rule::Away, Some("desk"), Some(Signal::Locked))
    );
    // 2: the user's own choice beats the lock.
    let d = with(&activity(false, true, true), &signed_in(user.clone()));
    assert_eq!(
        (d.status.clone(), d.decided_by),
        (
            msg(Availability::Away, "lunch"),
            by(Rule::User, Some("desktop"), None)
        )
    );
    // 1: the call beats everything.
    let d = with(&activity(true, true, true), &signed_in(user));
    assert_eq!(
        (d.status.clone(), d.decided_by),
        (
            msg(Availability::Busy, IN_A_CALL),
            by(Rule::Call, Some("desk"), Some(Signal::Microphone))
        )
    );
    // 1 with the user's own busy message.
    let d = with(
        &activity(true, false, false),
        &signed_in(Some((msg(Availability::Busy, "focus"), 2))),
    );
    assert_eq!(d.status, msg(Availability::Busy, "focus"));
    assert_eq!(d.decided_by.rule, Rule::Call);
    // A camera alone is a call too.
    let camera = Activity {
        camera: true,
        in_call: true,
        ..Activity::default()
    };
    assert_eq!(
        with(&camera, &signed_in(None)).decided_by,
        by(Rule::Call, Some("desk"), Some(Signal::Camera))
    );
}

#[test]
fn choosing_available_hands_the_decision_back_to_the_lock() {
    let desk = id("desk");
    let members = [member(
        "desktop",
        Session::SignedIn,
        st(Availability::Available),
        Some((st(Availability::Available), 3)),
    )];
    let a = activity(false, true, false);
    let d = decide(
        &members,
        Some(Signals {
            account: &desk,
            activity: &a,
        }),
    );
    assert_eq!(d.decided_by.rule, Rule::Away);
}

#[test]
fn signed_out_everywhere_is_offline_whatever_the_desktop_says() {
    let desk = id("desk");
    let mut desktop = member("desktop", Session::SignedOut, Status::OFFLINE, None);
    desktop.client = Client::NotRunning;
    let members = [
        desktop,
        member("alice", Session::Unknown, Status::UNKNOWN, None),
    ];
    let a = activity(true, true, false);
    let d = decide(
        &members,
        Some(Signals {
            account: &desk,
            activity: &a,
        }),
    );
    assert_eq!(
        d,
        Decision {
            client: Client::NotRunning,
            session: Session::SignedOut,
            status: Status::OFFLINE,
            decided_by: by(Rule::MostAvailable, None, None),
        }
    );
}

// ------------------------------------------------------------------ properties of the rule

fn arb_status() -> impl Strategy<Value = Status> {
    (
        prop::sample::select(Availability::ALL.to_vec()),
        prop::option::of(prop::sample::select(vec!["lunch", "focus", IN_A_CALL])),
    )
        .prop_map(|(a, m)| match m {
            Some(m) => msg(a, m),
            None => st(a),
        })
}

fn arb_members() -> impl Strategy<Value = Vec<Member>> {
    let one = (
        prop::sample::select(vec![
            Client::NotRunning,
            Client::Starting,
            Client::Running,
            Client::Unknown,
        ]),
        prop::sample::select(vec![
            Session::SignedOut,
            Session::SigningIn,
            Session::SignedIn,
            Session::SigningOut,
            Session::Unknown,
        ]),
        arb_status(),
        prop::option::of((arb_status(), 1u64..6)),
    );
    prop::collection::vec(one, 1..4).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (client, session, status, choice))| Member {
                account: id(&format!("m{i}")),
                client,
                session,
                status,
                choice: choice.map(|(status, order)| Choice {
                    status,
                    order: order * 10 + i as u64,
                }),
            })
            .collect()
    })
}

fn arb_activity() -> impl Strategy<Value = Option<Activity>> {
    prop::option::of(
        (any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
            |(mic, cam, locked, idle)| Activity {
                microphone: mic,
                camera: cam,
                in_call: mic || cam,
                locked,
                idle,
                ..Activity::default()
            },
        ),
    )
}

fn run_decide(members: &[Member], a: &Option<Activity>) -> Decision {
    let desk = id("desk");
    decide(
        members,
        a.as_ref().map(|activity| Signals {
            account: &desk,
            activity,
        }),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn every_rule_decides_when_it_should_and_earlier_rules_win(
        members in arb_members(),
        a in arb_activity(),
    ) {
        let d = run_decide(&members, &a);
        let signed_in: Vec<&Member> =
            members.iter().filter(|m| m.session == Session::SignedIn).collect();
        // Session: signed in iff any member is; unknown iff every member's is.
        prop_assert_eq!(d.session == Session::SignedIn, !signed_in.is_empty());
        prop_assert_eq!(
            d.session == Session::Unknown,
            members.iter().all(|m| m.session == Session::Unknown)
        );
        // Client: never not running while a session is active (the ordering contract);
        // unknown only when every member's is.
        if matches!(d.session, Session::SigningIn | Session::SignedIn | Session::SigningOut) {
            prop_assert_eq!(d.client, Client::Running);
        }
        if d.client == Client::Unknown {
            prop_assert!(members.iter().all(|m| m.client == Client::Unknown));
        }
        if d.session != Session::SignedIn {
            prop_assert_ne!(d.decided_by.rule, Rule::Call);
            prop_assert_ne!(d.decided_by.rule, Rule::User);
            prop_assert_ne!(d.decided_by.rule, Rule::Away);
            return Ok(());
        }
        let on_call = a.as_ref().is_some_and(|a| a.in_call);
        let latest = signed_in
            .iter()
            .filter_map(|m| m.choice.as_ref().map(|c| (m, c)))
            .max_by_key(|(_, c)| c.order);
        let sticky = latest.filter(|(_, c)| {
            !matches!(c.status.availability, Availability::Available | Availability::Chatty)
        });
        let away = a.as_ref().is_some_and(|a| a.locked || a.idle);
        if on_call {
            prop_assert_eq!(d.decided_by.rule, Rule::Call);
            prop_assert_eq!(d.status.availability, Availability::Busy);
            let own = latest
                .filter(|(_, c)| c.status.availability == Availability::Busy && c.status.message.is_some())
                .map(|(_, c)| c.status.message.clone());
            prop_assert_eq!(d.status.message.clone(), own.unwrap_or(Some(IN_A_CALL.to_owned())));
        } else if let Some((m, c)) = sticky {
            prop_assert_eq!(&d.decided_by, &by(Rule::User, Some(m.account.as_str()), None));
            prop_assert_eq!(&d.status, &c.status);
        } else if away {
            prop_assert_eq!(d.decided_by.rule, Rule::Away);
            prop_assert_eq!(&d.status, &st(Availability::Away));
            let locked = a.as_ref().is_some_and(|a| a.locked);
            prop_assert_eq!(
                d.decided_by.signal,
                Some(if locked { Signal::Locked } else { Signal::Idle })
            );
        } else {
            prop_assert_eq!(d.decided_by.rule, Rule::MostAvailable);
            let best = signed_in.iter().map(|m| m.status.availability.rank()).max();
            prop_assert_eq!(Some(d.status.availability.rank()), best);
            let from = signed_in
                .iter()
                .find(|m| Some(&m.account) == d.decided_by.account.as_ref());
            prop_assert_eq!(from.map(|m| &m.status), Some(&d.status));
        }
    }

    #[test]
    fn a_later_signal_never_overrules_an_earlier_rule(members in arb_members(), a in arb_activity()) {
        // Adding a lock or idleness leaves rules 1 and 2 as they were; adding a call always
        // makes rule 1 decide while signed in.
        let d = run_decide(&members, &a);
        let mut more = a.clone().unwrap_or_default();
        more.locked = true;
        more.idle = true;
        let d2 = run_decide(&members, &Some(more.clone()));
        if matches!(d.decided_by.rule, Rule::Call | Rule::User) {
            prop_assert_eq!(&d2, &d);
        }
        more.microphone = true;
        more.in_call = true;
        let d3 = run_decide(&members, &Some(more));
        if d.session == Session::SignedIn {
            prop_assert_eq!(d3.decided_by.rule, Rule::Call);
        } else {
            prop_assert_eq!(d3, d);
        }
    }
}

// ------------------------------------------------------------------ the bookkeeping

/// Two members and a signals account in one real tracker, and the person in another, with
/// `sync` applied to the members the way their sources would: `desktop` (libpurple-like: a
/// write changes its part `a`, which `alice` also sees as her resource `finch`) and `alice`
/// (XMPP-like: a write changes nothing `alice` reports).
struct World {
    members: Tracker,
    person_tracker: Tracker,
    person: Person,
    now: u64,
    /// desktop's part `a`, when signed in.
    desk: Option<Status>,
    /// alice's resource `phone`, when signed in.
    phone: Option<Status>,
    /// The person's events of each step.
    events: Vec<Event>,
    /// The writes of each step.
    writes: Vec<Write>,
    /// The members whose status the user's observations of each step changed.
    changed_by_user: Vec<AccountId>,
    /// Every write with its time.
    written: Vec<(Status, u64)>,
}

fn me() -> AccountId {
    id("me")
}

impl World {
    fn new() -> World {
        let mut members = Tracker::new();
        members.add_account(id("desktop"), SourceKind::new_static("purple"));
        members.add_account(id("alice"), SourceKind::new_static("xmpp"));
        members.add_account(id("desk"), SourceKind::new_static("desktop"));
        let mut person_tracker = Tracker::new();
        person_tracker.add_person(
            me(),
            SourceKind::new_static("person"),
            vec![id("desktop"), id("alice")],
        );
        let person = Person::new(
            vec![id("desktop"), id("alice")],
            Some(id("desk")),
            vec![id("desktop"), id("alice")],
        );
        let mut w = World {
            members,
            person_tracker,
            person,
            now: 1_000_000,
            desk: None,
            phone: None,
            events: Vec::new(),
            writes: Vec::new(),
            changed_by_user: Vec::new(),
            written: Vec::new(),
        };
        // The subscription's first snapshots.
        let snaps = w.members.snapshots(Timestamp::from_millis(w.now));
        w.person
            .handle_events(Timestamp::from_millis(w.now), &snaps);
        w.observe(
            "desktop",
            vec![Observation::ClientAppeared, Observation::Synced],
        );
        w.observe("alice", vec![Observation::Synced]);
        w.observe(
            "desk",
            vec![
                Observation::NoSession,
                Observation::ClientAppeared,
                Observation::Activity(ActivitySignal::Microphone(Vec::new())),
                Observation::Synced,
            ],
        );
        w
    }

    fn t(&self) -> Timestamp {
        Timestamp::from_millis(self.now)
    }

    /// One batch of one member's observations, its events fed to the person.
    fn observe(&mut self, account: &str, obs: Vec<Observation>) {
        self.now += 1;
        for o in obs {
            self.members
                .handle_observation(self.t(), &id(account), o)
                .expect("known account");
        }
        let events: Vec<Event> = std::iter::from_fn(|| self.members.poll_event()).collect();
        let now = self.t();
        self.person.handle_events(now, &events);
    }

    /// Reports the person's state and performs the writes it plans, until none are left.
    fn settle(&mut self) {
        for _ in 0..8 {
            let obs = match self.person.state() {
                Ok(s) => Observation::Person(Box::new(s)),
                Err(e) => Observation::SourceDown(e.code, e.detail),
            };
            let synced = matches!(obs, Observation::Person(_));
            self.person_tracker
                .handle_observation(self.t(), &me(), obs)
                .expect("person");
            if synced {
                self.person_tracker
                    .handle_observation(self.t(), &me(), Observation::Synced)
                    .expect("person");
            }
            let evs: Vec<Event> = std::iter::from_fn(|| self.person_tracker.poll_event()).collect();
            let changes = evs
                .iter()
                .filter(|e| matches!(e.kind, EventKind::StatusChanged { .. }))
                .count();
            assert!(changes <= 1, "one status_changed per batch: {evs:?}");
            self.events.extend(evs);
            let writes = self.person.poll_writes(self.t());
            if writes.is_empty() {
                return;
            }
            for w in writes {
                self.apply_write(&w);
                self.written.push((w.status.clone(), self.now));
                self.writes.push(w);
            }
        }
        panic!("sync did not settle");
    }

    fn apply_write(&mut self, w: &Write) {
        if w.account == id("desktop") && self.desk.is_some() {
            self.desk = Some(w.status.clone());
            self.desk_changed();
        }
        // alice: imstatus's own resource announces it; nothing alice reports changes.
    }

    fn desk_changed(&mut self) {
        match self.desk.clone() {
            Some(s) => {
                self.observe(
                    "desktop",
                    vec![Observation::Status(PartId::new("a"), s.clone())],
                );
                self.observe("alice", vec![Observation::presence("finch", s)]);
            }
            None => {
                self.observe(
                    "desktop",
                    vec![Observation::SignedOff(
                        PartId::new("a"),
                        SignOutReason::User,
                    )],
                );
                self.observe(
                    "alice",
                    vec![Observation::Absent(
                        PartId::new("finch"),
                        SignOutReason::User,
                    )],
                );
            }
        }
    }

    /// Each member's parts that are signed in, with their status.
    fn member_states(&self) -> Vec<(AccountId, BTreeMap<PartId, Status>)> {
        [id("desktop"), id("alice")]
            .into_iter()
            .map(|a| {
                let s = self
                    .members
                    .snapshot(&a, self.t())
                    .and_then(|e| e.snapshot().cloned())
                    .expect("member");
                let parts = s
                    .resources
                    .iter()
                    .filter(|r| r.session == Session::SignedIn)
                    .map(|r| (r.resource.clone(), r.status()))
                    .collect();
                (a, parts)
            })
            .collect()
    }

    fn step(&mut self, s: &Step) {
        self.events.clear();
        self.writes.clear();
        let before = self.member_states();
        self.user_step(s);
        // A part that stayed signed in with another status: the user's change. One to exactly
        // a status imstatus wrote within the echo window cannot be told from the write coming
        // back (a documented limit), so it does not count here.
        let window = imstatus_core::person::ECHO_WINDOW.as_millis() as u64;
        let now = self.now;
        let recent = |s: &Status| {
            self.written
                .iter()
                .any(|(w, at)| w == s && now.saturating_sub(*at) <= window)
        };
        self.changed_by_user = before
            .into_iter()
            .zip(self.member_states())
            .filter(|((_, p0), (_, p1))| {
                p0.iter()
                    .any(|(part, s0)| p1.get(part).is_some_and(|s1| s1 != s0 && !recent(s1)))
            })
            .map(|((a, _), _)| a)
            .collect();
        self.settle();
    }

    fn user_step(&mut self, s: &Step) {
        match s {
            Step::DeskOn(status) => {
                self.desk = Some(status.clone());
                self.observe("desktop", vec![Observation::presence("a", status.clone())]);
                self.observe(
                    "alice",
                    vec![Observation::presence("finch", status.clone())],
                );
            }
            Step::DeskSet(status) => {
                if self.desk.is_some() {
                    self.desk = Some(status.clone());
                    self.desk_changed();
                }
            }
            Step::DeskOff => {
                self.desk = None;
                self.desk_changed();
            }
            Step::PhoneOn(status) | Step::PhoneSet(status) => {
                if matches!(s, Step::PhoneSet(_)) && self.phone.is_none() {
                    return;
                }
                self.phone = Some(status.clone());
                self.observe(
                    "alice",
                    vec![Observation::presence("phone", status.clone())],
                );
            }
            Step::PhoneOff => {
                self.phone = None;
                self.observe(
                    "alice",
                    vec![Observation::Absent(
                        PartId::new("phone"),
                        SignOutReason::User,
                    )],
                );
            }
            Step::Mic(on) => {
                let apps = if *on {
                    vec![App::new("parecord", Some(7))]
                } else {
                    Vec::new()
                };
                self.observe(
                    "desk",
                    vec![Observation::Activity(ActivitySignal::Microphone(apps))],
                );
            }
            Step::Locked(on) => self.observe(
                "desk",
                vec![Observation::Activity(ActivitySignal::Locked(*on))],
            ),
            Step::Idle(on) => self.observe(
                "desk",
                vec![Observation::Activity(ActivitySignal::Idle {
                    idle: *on,
                    input_ago: Some(Duration::from_secs(if *on { 600 } else { 0 })),
                })],
            ),
            Step::Wait(secs) => self.now += secs * 1000,
        }
    }

    fn snapshot(&self) -> Snapshot {
        self.person_tracker
            .snapshot(&me(), self.t())
            .and_then(|e| e.snapshot().cloned())
            .expect("person")
    }

    fn decided(&self) -> (Status, DecidedBy) {
        let s = self.snapshot();
        (s.status(), s.decided_by.expect("decided"))
    }

    fn status_changes(&self) -> Vec<(Status, Status, DecidedBy)> {
        self.events
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::StatusChanged {
                    from,
                    to,
                    decided_by,
                    ..
                } => Some((
                    from.clone(),
                    to.clone(),
                    decided_by.clone().expect("decided"),
                )),
                _ => None,
            })
            .collect()
    }
}

#[derive(Clone, Debug)]
enum Step {
    DeskOn(Status),
    DeskSet(Status),
    DeskOff,
    PhoneOn(Status),
    PhoneSet(Status),
    PhoneOff,
    Mic(bool),
    Locked(bool),
    Idle(bool),
    Wait(u64),
}

fn in_a_call() -> Status {
    msg(Availability::Busy, IN_A_CALL)
}

fn write(account: &str, status: Status, kind: WriteKind) -> Write {
    Write {
        account: id(account),
        status,
        kind,
    }
}

#[test]
fn a_call_sets_every_synced_member_and_its_end_puts_each_back_in_one_change() {
    let mut w = World::new();
    w.step(&Step::DeskOn(st(Availability::Available)));
    w.step(&Step::PhoneOn(msg(Availability::Away, "phone")));
    assert_eq!(
        w.decided(),
        (
            st(Availability::Available),
            by(Rule::MostAvailable, Some("desktop"), None)
        )
    );
    w.step(&Step::Mic(true));
    assert_eq!(
        w.status_changes(),
        vec![(
            st(Availability::Available),
            in_a_call(),
            by(Rule::Call, Some("desk"), Some(Signal::Microphone))
        )]
    );
    assert_eq!(
        w.writes,
        vec![
            write("desktop", in_a_call(), WriteKind::Impose),
            write("alice", in_a_call(), WriteKind::Impose),
        ]
    );
    // The echoes (desktop's part, and alice's finch resource) are nobody's choice.
    assert!(w.person.members().iter().all(|m| m.choice.is_none()));
    w.step(&Step::Mic(false));
    assert_eq!(
        w.status_changes(),
        vec![(
            in_a_call(),
            st(Availability::Available),
            by(Rule::MostAvailable, Some("desktop"), None)
        )],
        "straight back, never through the written status"
    );
    assert_eq!(
        w.writes,
        vec![
            write("desktop", st(Availability::Available), WriteKind::Restore),
            // alice had finch's "available" (most available of her resources) before.
            write("alice", st(Availability::Available), WriteKind::Restore),
        ]
    );
    assert_eq!(w.desk, Some(st(Availability::Available)));
    assert!(w.person.members().iter().all(|m| m.choice.is_none()));
    // alice's restore never echoes (XMPP): it is forgotten after the window.
    w.step(&Step::Wait(11));
    assert!(!w.person.holds(&id("alice")));
    assert_eq!(w.person.pending_writes(), 0);
}

#[test]
fn a_manual_change_during_a_call_is_kept_and_never_overwritten() {
    let mut w = World::new();
    w.step(&Step::DeskOn(st(Availability::Available)));
    w.step(&Step::Mic(true));
    assert_eq!(w.desk, Some(in_a_call()));
    // The user picks "away lunch" in finch mid-call.
    w.step(&Step::DeskSet(msg(Availability::Away, "lunch")));
    assert!(w.writes.is_empty(), "{:?}", w.writes);
    assert_eq!(w.decided().1.rule, Rule::Call);
    // The lock (rule 3) would write again; the user's change wins.
    w.step(&Step::Mic(false));
    assert!(
        w.writes.iter().all(|x| x.account != id("desktop")),
        "{:?}",
        w.writes
    );
    assert_eq!(w.desk, Some(msg(Availability::Away, "lunch")));
    // Both members saw the user's change (alice through her finch resource).
    let (status, decided_by) = w.decided();
    assert_eq!(status, msg(Availability::Away, "lunch"));
    assert_eq!(decided_by.rule, Rule::User);
}

#[test]
fn the_lock_and_idleness_set_away_and_the_call_beats_them() {
    let mut w = World::new();
    w.step(&Step::DeskOn(st(Availability::Available)));
    w.step(&Step::Idle(true));
    assert_eq!(
        w.decided(),
        (
            st(Availability::Away),
            by(Rule::Away, Some("desk"), Some(Signal::Idle))
        )
    );
    assert_eq!(w.desk, Some(st(Availability::Away)));
    w.step(&Step::Locked(true));
    assert_eq!(
        w.status_changes(),
        vec![(
            st(Availability::Away),
            st(Availability::Away),
            by(Rule::Away, Some("desk"), Some(Signal::Locked))
        )],
        "only the rule changed: one status_changed saying so"
    );
    assert!(w.writes.is_empty());
    w.step(&Step::Mic(true));
    assert_eq!(w.decided().0, in_a_call());
    assert_eq!(w.desk, Some(in_a_call()));
    w.step(&Step::Mic(false));
    assert_eq!(w.decided().1.signal, Some(Signal::Locked));
    assert_eq!(w.desk, Some(st(Availability::Away)));
    w.step(&Step::Locked(false));
    w.step(&Step::Idle(false));
    assert_eq!(w.decided().1.rule, Rule::MostAvailable);
    assert_eq!(w.desk, Some(st(Availability::Available)), "restored");
}

#[test]
fn a_status_a_member_refuses_is_not_written_again_while_the_rule_asks_for_it() {
    let mut w = World::new();
    w.step(&Step::DeskOn(st(Availability::Available)));
    let apps = vec![App::new("parecord", Some(7))];
    w.observe(
        "desk",
        vec![Observation::Activity(ActivitySignal::Microphone(apps))],
    );
    let writes = w.person.poll_writes(w.t());
    assert_eq!(writes.len(), 2, "{writes:?}");
    for x in &writes {
        w.person.handle_write_failed(x);
    }
    assert!(!w.person.holds(&id("desktop")), "nothing to put back");
    w.observe(
        "alice",
        vec![Observation::presence("phone", st(Availability::Away))],
    );
    assert_eq!(
        w.person.poll_writes(w.t()),
        vec![],
        "no retry on the next event"
    );
    // Another status (the lock, once the call ends) is tried.
    w.observe(
        "desk",
        vec![
            Observation::Activity(ActivitySignal::Microphone(Vec::new())),
            Observation::Activity(ActivitySignal::Locked(true)),
        ],
    );
    let writes = w.person.poll_writes(w.t());
    assert_eq!(
        writes.first(),
        Some(&write("desktop", st(Availability::Away), WriteKind::Impose))
    );
}

#[test]
fn a_members_sign_out_ends_its_choice_and_the_person_signs_out_with_its_reason() {
    let mut w = World::new();
    w.step(&Step::DeskOn(st(Availability::Available)));
    w.step(&Step::DeskSet(msg(Availability::Away, "lunch")));
    assert_eq!(w.decided().1.rule, Rule::User);
    w.step(&Step::DeskOff);
    let names: Vec<&str> = w.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, ["signed_out", "status_changed"]);
    assert_eq!(
        w.events[0].kind,
        EventKind::SignedOut {
            reason: SignOutReason::User
        }
    );
    w.step(&Step::DeskOn(st(Availability::Available)));
    assert_eq!(w.decided().1.rule, Rule::MostAvailable);
}

#[test]
fn with_no_member_known_the_person_is_down_and_says_why() {
    let mut p = Person::new(vec![id("a")], None, vec![]);
    let t = Timestamp::from_millis(5);
    let mut tr = Tracker::new();
    tr.add_account(id("a"), SourceKind::new_static("xmpp"));
    tr.handle_observation(
        t,
        &id("a"),
        Observation::SourceDown(imstatus_core::ErrorCode::AuthFailed, "bad password".into()),
    )
    .expect("known");
    while let Some(e) = tr.poll_event() {
        p.handle_event(t, &e);
    }
    let e = p.state().expect_err("down");
    assert_eq!(e.code, imstatus_core::ErrorCode::AuthFailed);
    assert_eq!(
        e.detail,
        "no member's session is known (a: auth_failed: bad password)"
    );
}

#[test]
fn person_json_adds_accounts_and_decided_by_and_nothing_else() {
    let mut w = World::new();
    w.step(&Step::DeskOn(st(Availability::Available)));
    let snap = w
        .person_tracker
        .snapshot(&me(), Timestamp::from_millis(1_795_514_400_000))
        .expect("person");
    let json = serde_json::to_value(&snap).expect("serialise");
    assert_eq!(json["accounts"], serde_json::json!(["desktop", "alice"]));
    assert_eq!(
        json["decided_by"],
        serde_json::json!({"rule": "most_available", "account": "desktop"})
    );
    assert_eq!(json["source"], "person");
    assert_eq!(json["resources"], serde_json::json!([]));
    w.step(&Step::Mic(true));
    let change = w
        .events
        .iter()
        .find(|e| e.kind.name() == "status_changed")
        .expect("status_changed");
    let json = serde_json::to_value(change).expect("serialise");
    assert_eq!(
        json["decided_by"],
        serde_json::json!({"rule": "call", "account": "desk", "signal": "microphone"})
    );
    let back: Event = serde_json::from_value(json).expect("parses back");
    assert_eq!(&back, change);
}

// ------------------------------------------------------------------ properties of sync

fn arb_user_status() -> impl Strategy<Value = Status> {
    // Never a status imstatus itself writes (plain away, busy "In a call"), so that a choice
    // of one would betray an echo taken for the user.
    prop::sample::select(vec![
        st(Availability::Available),
        st(Availability::Chatty),
        msg(Availability::Away, "lunch"),
        st(Availability::Busy),
        msg(Availability::Busy, "focus"),
        st(Availability::ExtendedAway),
        st(Availability::Invisible),
        msg(Availability::Available, "wfh"),
    ])
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        1 => arb_user_status().prop_map(Step::DeskOn),
        3 => arb_user_status().prop_map(Step::DeskSet),
        1 => Just(Step::DeskOff),
        1 => arb_user_status().prop_map(Step::PhoneOn),
        2 => arb_user_status().prop_map(Step::PhoneSet),
        1 => Just(Step::PhoneOff),
        3 => any::<bool>().prop_map(Step::Mic),
        2 => any::<bool>().prop_map(Step::Locked),
        2 => any::<bool>().prop_map(Step::Idle),
        1 => (1u64..15).prop_map(Step::Wait),
    ]
}

fn is_user_step(s: &Step) -> bool {
    matches!(
        s,
        Step::DeskSet(_) | Step::PhoneSet(_) | Step::DeskOn(_) | Step::PhoneOn(_)
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn imstatus_never_takes_its_own_writes_for_the_user_nor_overwrites_the_user(
        steps in prop::collection::vec(arb_step(), 0..60),
    ) {
        let mut w = World::new();
        let first = w.snapshot();
        let mut all = Vec::new();
        // Users who changed a member since imstatus started holding it.
        let mut touched: BTreeMap<AccountId, bool> = BTreeMap::new();
        for s in &steps {
            let before: Vec<u64> = w.person.members().iter()
                .map(|m| m.choice.as_ref().map_or(0, |c| c.order)).collect();
            let held: Vec<(AccountId, bool)> = [id("desktop"), id("alice")]
                .into_iter().map(|a| { let h = w.person.holds(&a); (a, h) }).collect();
            w.step(s);
            all.extend(w.events.clone());
            // No write lands on a member the user changed while imstatus held it.
            for x in &w.writes {
                prop_assert!(
                    !touched.get(&x.account).copied().unwrap_or(false),
                    "{:?} overwrites the user's change", x
                );
            }
            for (a, was_held) in held {
                if !w.person.holds(&a) {
                    touched.insert(a, false);
                } else if was_held && w.changed_by_user.contains(&a) {
                    touched.insert(a, true);
                }
            }
            // A choice is recorded only by the user's own steps, and is never a status only
            // imstatus writes.
            for (m, b) in w.person.members().iter().zip(before) {
                if let Some(c) = &m.choice {
                    prop_assert!(c.status != st(Availability::Away) && c.status != in_a_call(),
                        "{:?} taken for the user's", c.status);
                    if !is_user_step(s) {
                        prop_assert!(c.order <= b, "{:?} recorded a choice on {:?}", s, m.account);
                    }
                }
            }
            prop_assert!(w.person.pending_writes() <= 2);
        }
        // The person's events fold into its snapshot, under the ordering contract.
        let mut folded = first;
        for e in &all {
            if e.kind == EventKind::ClientShutdown {
                prop_assert!(!matches!(folded.session,
                    Session::SignedIn | Session::SigningIn | Session::SigningOut));
            }
            if matches!(e.kind, EventKind::SignedIn { .. } | EventKind::SigningIn) {
                prop_assert_ne!(folded.client, Client::NotRunning);
            }
            folded.apply(&e.kind, e.time);
        }
        prop_assert_eq!(folded, w.snapshot());
        for pair in all.windows(2) {
            prop_assert!(pair[0].seq < pair[1].seq);
        }
    }

    #[test]
    fn repeating_a_step_changes_nothing_for_the_person(
        steps in prop::collection::vec(arb_step(), 0..40),
        last in arb_step(),
    ) {
        let mut w = World::new();
        for s in &steps {
            w.step(s);
        }
        w.step(&last);
        // Unless imstatus wrote over what the step did (then the same step is a new change).
        if !matches!(last, Step::Wait(_)) && w.writes.is_empty() {
            w.step(&last);
            prop_assert!(w.events.is_empty(), "{:?} again gave {:?}", last, w.events);
            prop_assert!(w.writes.is_empty(), "{:?} again wrote {:?}", last, w.writes);
        }
    }
}

// ------------------------------------------------------------------ the tracker's side

fn arb_person_observation() -> impl Strategy<Value = Observation> {
    let state = (
        prop::sample::select(vec![
            Client::NotRunning,
            Client::Starting,
            Client::Running,
            Client::Unknown,
        ]),
        prop::sample::select(vec![
            Session::SignedOut,
            Session::SigningIn,
            Session::SignedIn,
            Session::SigningOut,
            Session::Unknown,
        ]),
        arb_user_status(),
        prop::sample::select(vec![
            Rule::Call,
            Rule::User,
            Rule::Away,
            Rule::MostAvailable,
        ]),
        prop::option::of(prop::sample::select(vec!["a", "b"])),
    )
        .prop_map(|(client, session, status, rule, account)| {
            Observation::Person(Box::new(imstatus_core::PersonState {
                client,
                session,
                status,
                decided_by: by(rule, account, None),
                reason: SignOutReason::User,
            }))
        });
    prop_oneof![
        8 => state,
        1 => Just(Observation::SourceDown(imstatus_core::ErrorCode::Disconnected, "x".into())),
        2 => Just(Observation::Synced),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

    #[test]
    fn any_person_state_keeps_the_ordering_contract(
        obs in prop::collection::vec(arb_person_observation(), 0..40),
    ) {
        let mut t = Tracker::new();
        t.add_person(me(), SourceKind::new_static("person"), vec![id("a"), id("b")]);
        let mut now = 1_000u64;
        let mut state = t
            .snapshot(&me(), Timestamp::from_millis(now))
            .and_then(|e| e.snapshot().cloned())
            .expect("person");
        prop_assert_eq!(&state.accounts, &vec![id("a"), id("b")]);
        let mut last: Option<Observation> = None;
        for o in obs {
            now += 10;
            t.handle_observation(Timestamp::from_millis(now), &me(), o.clone()).expect("known");
            let evs: Vec<Event> = std::iter::from_fn(|| t.poll_event()).collect();
            if last.as_ref() == Some(&o) {
                prop_assert!(evs.is_empty(), "{:?} repeated gave {:?}", o, evs);
            }
            let changes = evs
                .iter()
                .filter(|e| matches!(e.kind, EventKind::StatusChanged { .. }))
                .count();
            prop_assert!(changes <= 1, "{:?}", evs);
            for e in &evs {
                if e.kind == EventKind::ClientShutdown {
                    prop_assert!(!matches!(state.session,
                        Session::SignedIn | Session::SigningIn | Session::SigningOut));
                }
                if matches!(e.kind, EventKind::SignedIn { .. } | EventKind::SigningIn) {
                    prop_assert_ne!(state.client, Client::NotRunning);
                }
                state.apply(&e.kind, e.time);
                if let EventKind::StatusChanged { mistatus, .. } = e.kind {
                    prop_assert_eq!(mistatus, state.mistatus);
                }
            }
            last = Some(o);
        }
        let snap = t
            .snapshot(&me(), Timestamp::from_millis(now))
            .and_then(|e| e.snapshot().cloned())
            .expect("person");
        prop_assert_eq!(state, snap);
    }
}
