//! One stanza through the translator: no panic, no line-forging text, statuses cut.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imstatus_xmpp::fuzzing::translate(data);
});
