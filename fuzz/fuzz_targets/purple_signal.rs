//! D-Bus signals of any shape from any sender: never a panic; a stranger changes nothing.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    imstatus_purple::fuzzing::signals(data);
});
