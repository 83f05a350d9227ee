//! The heap policy of imstatus's processes: after a peak, give the free pages back.
//!
//! A login with a big roster parses it all at once (for XMPP, tokio-xmpp builds the whole
//! roster result as a DOM before imstatus reads it: ~7.7 MB at its peak for 5,001 items),
//! then keeps only what it needs (~600 B per contact). glibc's allocator keeps the freed
//! pages of that peak mapped for the life of the process unless they sit at the very top of
//! an arena, so a watcher's RSS stayed ~1 KB per contact above its live heap
//! (`docs/benchmarks.md`, B8). [`release_free_memory`] asks glibc to return every whole free
//! page of every arena to the OS (`malloc_trim(0)`, which `madvise`s them away; the pages stay
//! reserved and come back on first use). The hub calls it once after a source reports a big
//! login; it does not run on every event.
//!
//! Elsewhere (musl, macOS, Windows) it does nothing: those allocators return memory on their
//! own terms, and imstatus's figures are measured on glibc.
#![cfg_attr(not(all(target_os = "linux", target_env = "gnu")), forbid(unsafe_code))]

/// Returns the allocator's free pages to the OS where imstatus knows how to (glibc), and
/// reports whether any were returned. Costs a walk over the free chunks of every arena (~10 ms
/// after a 100,000-contact login, whose peak is ~175 MB), so callers use it after a peak, not
/// per event.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `malloc_trim` takes each arena's lock itself and only releases pages that
        // hold no allocation; it is safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a burst of small allocations is freed, the trim gives pages back (on glibc), and
    /// allocations made afterwards still work (the pages come back on use).
    #[test]
    fn a_freed_peak_is_returned() {
        let peak: Vec<Box<[u8; 96]>> = (0..100_000).map(|i| Box::new([i as u8; 96])).collect();
        // Something allocated after the peak keeps the arena's top in use, so glibc cannot
        // shrink the heap by itself when the peak is freed.
        let keep = Box::new([7u8; 96]);
        drop(peak);
        let first = release_free_memory();
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(first, "nothing returned after freeing ~10 MB");
        } else {
            assert!(!first);
        }
        let again: Vec<Box<[u8; 96]>> = (0..1_000).map(|i| Box::new([i as u8; 96])).collect();
        assert_eq!(again[999][0], (999 % 256) as u8);
        assert_eq!(keep[0], 7);
    }
}
