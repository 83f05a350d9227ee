//! A /sync answer from a homeserver: an observation, an anomaly or an error, never a panic;
//! status messages cut and cleaned.
#![no_main]

use imstatus_core::Observation;
use imstatus_matrix::translate::Translator;
use imstatus_matrix::UserId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let contacts = data.first().is_some_and(|b| b % 2 == 1);
    let user = UserId::parse("@alice:example.test").expect("a valid user");
    let mut t = Translator::new(user, contacts);
    let mut out = Vec::new();
    let _ = t.handle_sync(data.get(1..).unwrap_or_default(), &mut out);
    for o in &out {
        if let Observation::Presence { status, .. } | Observation::Contact(_, status) = o {
            if let Some(m) = &status.message {
                assert!(m.chars().count() <= imstatus_core::text::MAX_STATUS_CHARS + 1);
                assert!(!m.chars().any(|c| c.is_control()), "{m:?}");
            }
        }
    }
});
