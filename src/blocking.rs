//! Where blocking work (file IO, fsync, compressing a large scrape) runs.
//!
//! Normally on tokio's blocking pool, so it never stalls the async workers.
//! A thread can ask for it to run inline instead: the deterministic
//! simulation does, because all its hosts share one thread and work finishing
//! on OS threads would make a run's interleaving depend on the machine
//! (research/raft-stack.md §3.7).

use std::cell::Cell;

thread_local! {
    static INLINE: Cell<bool> = const { Cell::new(false) };
}

/// From now on, blocking work started on this thread runs inline.
pub fn run_inline_on_this_thread() {
    INLINE.with(|i| i.set(true));
}

/// Whether blocking work started on this thread runs inline.
pub fn inline() -> bool {
    INLINE.with(|i| i.get())
}

/// Runs `f` off the async workers (or inline, see [`run_inline_on_this_thread`]).
pub async fn run<T, F>(f: F) -> Result<T, tokio::task::JoinError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if inline() {
        Ok(f())
    } else {
        tokio::task::spawn_blocking(|| {
            let result = f();
            crate::allocator::release_idle_memory();
            result
        })
        .await
    }
}
