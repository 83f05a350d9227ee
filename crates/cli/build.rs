//! Links the `imstatus` executable with packed relative relocations (`-z pack-relative-relocs`,
//! `DT_RELR`) on x86-64 Linux with glibc. A position-independent Rust binary carries ~22,000
//! relative relocations: 530 KB as `RELA` entries, which the loader reads — and keeps mapped —
//! at every start, against 7 KB packed. That is half a megabyte of an idle watcher's RSS (B8 in
//! docs/benchmarks.md). Needs GNU ld ≥ 2.38 (or lld ≥ 15, mold) and glibc ≥ 2.36 to load the
//! result: the flag is added only when a trivial C program linked with it runs here, so an older
//! toolchain builds as before.

use std::env;
use std::process::{Command, Stdio};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = |key: &str| env::var(key).unwrap_or_default();
    if target("CARGO_CFG_TARGET_OS") != "linux"
        || target("CARGO_CFG_TARGET_ENV") != "gnu"
        || target("CARGO_CFG_TARGET_ARCH") != "x86_64"
        || target("HOST") != target("TARGET")
    {
        return;
    }
    if packed_relocations_work() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    } else {
        println!("cargo:warning=the linker or glibc cannot pack relative relocations (DT_RELR): linking without");
    }
}

/// Links a C program that has a relative relocation with the flag, and runs it.
fn packed_relocations_work() -> bool {
    let Some(out) = env::var_os("OUT_DIR") else {
        return false;
    };
    let exe = std::path::Path::new(&out).join("relr-probe");
    let Ok(mut cc) = Command::new("cc")
        .args([
            "-x",
            "c",
            "-",
            "-pie",
            "-fPIE",
            "-Wl,-z,pack-relative-relocs",
            "-o",
        ])
        .arg(&exe)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    else {
        return false;
    };
    if let Some(mut stdin) = cc.stdin.take() {
        use std::io::Write as _;
        // A pointer in initialised data gives the probe a relative relocation to pack.
        let source = b"static int x; int *p = &x; int main(void) { return *p; }\n";
        if stdin.write_all(source).is_err() {
            return false;
        }
    }
    let linked = cc.wait().is_ok_and(|s| s.success());
    linked
        && Command::new(&exe)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}
