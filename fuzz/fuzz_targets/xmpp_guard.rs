//! Bytes from a server through the guard: nothing it lets through may break the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The first bytes choose the read sizes, the rest is the stream.
    let split = data.len().min(4);
    let (sizes, stream) = data.split_at(split);
    imstatus_xmpp::fuzzing::guard(stream, sizes);
});
