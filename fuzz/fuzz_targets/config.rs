//! A config file, read with every source of the binary: a `Config` or a `file:line` error,
//! never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let factories = imstatus::sources::factories();
    if let Err(e) = imstatus_config::Config::parse(text, Path::new("fuzz.toml"), &factories) {
        assert!(e.to_string().starts_with("fuzz.toml:"), "{e}");
    }
});
