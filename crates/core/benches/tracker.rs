//! Tracker throughput: observations per second on one core (`cargo bench -p imstatus-core`).
//!
//! A plain harness (no criterion) keeps the build light: it runs a fixed, realistic mix of
//! observations several times and prints the best and median rate.

use std::hint::black_box;
use std::time::Instant;

use imstatus_core::{
    AccountId, Availability, ContactId, Observation, PartId, SourceKind, Status, Timestamp, Tracker,
};

const ROUNDS: usize = 7;
const OBSERVATIONS: usize = 2_000_000;

fn workload() -> Vec<(usize, Observation)> {
    let shows = [
        Availability::Available,
        Availability::Away,
        Availability::Busy,
        Availability::ExtendedAway,
    ];
    let parts: Vec<PartId> = (0..3).map(|i| PartId::new(format!("res{i}"))).collect();
    let contacts: Vec<ContactId> = (0..5000)
        .map(|i| ContactId::new(format!("c{i}@example.test")))
        .collect();
    (0..OBSERVATIONS)
        .map(|i| {
            let account = i % 4;
            let show = shows[(i / 7) % shows.len()];
            let obs = match i % 10 {
                0..=5 => Observation::Contact(
                    contacts[(i * 31) % contacts.len()].clone(),
                    Status::new(show),
                ),
                6 | 7 => Observation::Presence {
                    part: parts[i % parts.len()].clone(),
                    status: Status::new(show),
                    priority: Some((i % 3) as i32),
                },
                8 => Observation::Absent(
                    parts[i % parts.len()].clone(),
                    imstatus_core::SignOutReason::User,
                ),
                _ => Observation::Presence {
                    part: parts[0].clone(),
                    status: Status::new(show),
                    priority: Some(0),
                },
            };
            (account, obs)
        })
        .collect()
}

fn main() {
    let accounts: Vec<AccountId> = (0..4).map(|i| AccountId::new(format!("a{i}"))).collect();
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        let work = workload();
        let mut tracker = Tracker::new();
        for a in &accounts {
            tracker.add_account(a.clone(), SourceKind::new_static("xmpp"));
            tracker
                .handle_observation(Timestamp::from_millis(0), a, Observation::Synced)
                .expect("known account");
        }
        let mut events = 0u64;
        let start = Instant::now();
        for (i, (account, obs)) in work.into_iter().enumerate() {
            let now = Timestamp::from_millis(i as u64);
            tracker
                .handle_observation(now, &accounts[account], obs)
                .expect("known account");
            while let Some(e) = tracker.poll_event() {
                events += black_box(e).seq & 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        black_box(events);
        rates.push(OBSERVATIONS as f64 / secs);
    }
    rates.sort_by(|a, b| a.total_cmp(b));
    println!(
        "tracker: {OBSERVATIONS} observations x {ROUNDS} rounds, 4 accounts, 3 resources, 5000 contacts"
    );
    println!(
        "tracker: median {:.2} M observations/s, best {:.2} M/s, {:.0} ns/observation (median)",
        rates[ROUNDS / 2] / 1e6,
        rates[ROUNDS - 1] / 1e6,
        1e9 / rates[ROUNDS / 2]
    );
}
