//! How pushgate uses its allocator (mimalloc, set as the global allocator by
//! the binary): options set at start-up, and handing freed memory back to the
//! OS when a thread goes idle.
//!
//! Why this matters: a gateway's memory is mostly long-lived stored families,
//! but each push also allocates and frees short-lived buffers (request bodies,
//! log records, sled's tree nodes and write buffers) on several threads. A
//! block freed by another thread than the one that allocated it waits on its
//! page's cross-thread free list until the owning thread collects, and an idle
//! thread never does: those pages stay resident. Measured on a 33k-series
//! store after ten rounds of overwrites (`bench/durability.py`, see
//! docs/benchmarks.md), collecting when threads go idle is part of what keeps
//! memory per series under 400 bytes.
//!
//! Without mimalloc as the global allocator (library tests, the simulation),
//! these calls only touch mimalloc's own, unused heaps: harmless and cheap.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// `mi_option_purge_delay` in mimalloc 3's `mimalloc.h` (the Rust bindings
/// have no constant for it; `tests::option_numbers_match_mimalloc` checks the
/// number against the option's documented default).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Least time between two idle collections on one thread: a busy thread parks
/// and wakes thousands of times a second, and a collection walks its pages.
const IDLE_COLLECT_INTERVAL: Duration = Duration::from_millis(100);

/// Sets mimalloc's options, unless the environment sets them: call once,
/// first thing in `main`.
///
/// * purge delay 0 (`MIMALLOC_PURGE_DELAY`; mimalloc 3's default is 1 s, its
///   header says 10 ms): freed memory goes back to the OS at once. Snapshots
///   and log batches free megabytes at a time; with the delay, RSS stayed
///   about 8 MB higher on a 33k-series store at the same push rate.
///
/// Not set, measured: `MIMALLOC_GENERIC_COLLECT=100` (a busy thread collects
/// every 1,000 slow-path allocations instead of every 10,000) saves about
/// 30 bytes per series more on that store but costs about 6% of the push
/// rate; an operator who prefers memory can set it.
pub fn tune() {
    set_unless_in_env("MIMALLOC_PURGE_DELAY", MI_OPTION_PURGE_DELAY, 0);
}

fn set_unless_in_env(var: &str, option: libmimalloc_sys::mi_option_t, value: std::os::raw::c_long) {
    if std::env::var_os(var).is_none() {
        // SAFETY: sets a plain integer option; mimalloc reads options atomically.
        unsafe { libmimalloc_sys::mi_option_set(option, value) };
    }
}

thread_local! {
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Hands this thread's freed memory back (at most every
/// `IDLE_COLLECT_INTERVAL`): call when the thread is about to wait for work.
/// Runs on tokio's workers when they park, on the log sync thread after each
/// sync, and after each blocking job.
pub fn release_idle_memory() {
    LAST_COLLECT.with(|last| {
        let now = Instant::now();
        if last
            .get()
            .is_none_or(|t| now.duration_since(t) >= IDLE_COLLECT_INTERVAL)
        {
            last.set(Some(now));
            // SAFETY: collects the calling thread's own heap; no pointers involved.
            unsafe { libmimalloc_sys::mi_collect(false) };
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hand-written option number names the option it means to: it reads
    /// back the default that mimalloc 3's `options.c` gives that option. (This test
    /// process does not call `tune`, and CI sets no `MIMALLOC_*` variable.)
    #[test]
    fn option_number_matches_mimalloc() {
        if std::env::vars().any(|(k, _)| k.starts_with("MIMALLOC_")) {
            return;
        }
        // SAFETY: reads a plain integer option.
        let purge_delay = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(purge_delay, 1000, "mi_option_purge_delay defaults to 1,000 ms");
    }

    #[test]
    fn idle_collection_is_rate_limited_per_thread() {
        release_idle_memory();
        let first = LAST_COLLECT.with(Cell::get).expect("the first call collects");
        release_idle_memory();
        assert_eq!(
            LAST_COLLECT.with(Cell::get),
            Some(first),
            "a second call at once is skipped"
        );
    }
}
