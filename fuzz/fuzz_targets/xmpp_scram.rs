//! A SCRAM server-first message: never accepted beyond the iteration cap, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imstatus_xmpp::fuzzing::scram(data);
});
