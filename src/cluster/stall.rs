//! Notices storage calls that never return, and stops the process.
//!
//! A write to the Raft log that hangs does not fail: Raft waits for it, every
//! push through this node times out as "outcome unknown", and nothing tells a
//! supervisor to act. Disks do hang (a stuck controller, a network volume
//! whose server went away), and so can sled 0.34 itself: its segment
//! accountant can wait, holding its lock, for a file truncation queued on its
//! own IO thread pool while every pool thread waits for that lock. A node in
//! that state never recovers by itself; a restart does, as sled recovers its
//! log on open.
//!
//! So every storage call that must finish for Raft to go on (log appends,
//! syncs, truncations, purges) is registered here while it runs, and a
//! watchdog thread compares the oldest one with a bound. Past half of it, it
//! warns once per call; past the bound it logs an error naming the call and
//! exits the process, so that any supervisor (Kubernetes, systemd, Docker's
//! restart policy) starts it again. Nothing acknowledged is lost by exiting:
//! a push is acknowledged only after its entry is durable on a majority, and
//! the call that hangs is one not yet finished. CockroachDB does the same on
//! a stalled disk (`storage.max_sync_duration`).
//!
//! The registry is always kept (it is one short lock per call, and the age of
//! the oldest call is exported as a metric); the watchdog thread runs only
//! when a node is started with a bound. The watchdog is an OS thread of its
//! own because a hung sled call may hold an async worker thread with it.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The storage calls in progress, oldest first.
#[derive(Default)]
pub struct StallWatch {
    calls: Mutex<Calls>,
}

#[derive(Default)]
struct Calls {
    next_id: u64,
    /// Started calls by id; ids grow with their start times, so the first
    /// entry is the oldest call.
    running: BTreeMap<u64, Running>,
}

struct Running {
    what: &'static str,
    since: Instant,
    warned: bool,
}

/// A storage call in progress; dropping it marks the call finished.
#[must_use = "the call counts as running only while the guard lives"]
pub struct Watched<'a> {
    watch: &'a StallWatch,
    id: u64,
}

impl Drop for Watched<'_> {
    fn drop(&mut self) {
        self.watch.calls.lock().running.remove(&self.id);
    }
}

/// What the watchdog found when it looked.
#[derive(Debug, PartialEq, Eq)]
pub enum Finding {
    /// Every call in progress is younger than half the bound.
    Fine,
    /// A call has run longer than half the bound (reported once per call).
    Slow { what: &'static str, running: Duration },
    /// A call has run longer than the bound.
    Stalled { what: &'static str, running: Duration },
}

impl StallWatch {
    /// Registers a storage call, described by `what` ("syncing the Raft
    /// log"), until the returned guard is dropped.
    pub fn watch(&self, what: &'static str) -> Watched<'_> {
        let mut calls = self.calls.lock();
        let id = calls.next_id;
        calls.next_id += 1;
        calls.running.insert(
            id,
            Running {
                what,
                since: Instant::now(),
                warned: false,
            },
        );
        Watched { watch: self, id }
    }

    /// How long the oldest storage call in progress has been running.
    pub fn oldest(&self, now: Instant) -> Duration {
        self.calls
            .lock()
            .running
            .values()
            .next()
            .map_or(Duration::ZERO, |r| now.saturating_duration_since(r.since))
    }

    /// Compares the oldest call in progress at `now` with `bound`.
    pub fn check(&self, now: Instant, bound: Duration) -> Finding {
        let mut calls = self.calls.lock();
        let Some(oldest) = calls.running.values_mut().next() else {
            return Finding::Fine;
        };
        let running = now.saturating_duration_since(oldest.since);
        if running >= bound {
            Finding::Stalled {
                what: oldest.what,
                running,
            }
        } else if running >= bound / 2 && !oldest.warned {
            oldest.warned = true;
            Finding::Slow {
                what: oldest.what,
                running,
            }
        } else {
            Finding::Fine
        }
    }

    /// Starts the watchdog thread: it checks the calls in progress against
    /// `bound` a few times per bound and, on a stall, logs it and exits the
    /// process with status 1. The thread ends once `watch` is dropped.
    pub fn exit_process_on_stall(watch: &Arc<StallWatch>, bound: Duration) -> std::io::Result<()> {
        let weak: Weak<StallWatch> = Arc::downgrade(watch);
        let tick = (bound / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("pushgate-stall-watch".into())
            .spawn(move || loop {
                std::thread::sleep(tick);
                let Some(watch) = weak.upgrade() else { return };
                match watch.check(Instant::now(), bound) {
                    Finding::Fine => {}
                    Finding::Slow { what, running } => tracing::warn!(
                        call = what,
                        running_seconds = running.as_secs_f64(),
                        limit_seconds = bound.as_secs_f64(),
                        "a storage call is slow; at --storage.stall-timeout the node stops itself"
                    ),
                    Finding::Stalled { what, running } => {
                        let message = format!(
                            "{what} has not finished after {:.1} s (--storage.stall-timeout={:?}): the disk or the \
                             storage engine is stuck; stopping this node so that its supervisor restarts it \
                             (nothing acknowledged is lost: the stuck write was never acknowledged)",
                            running.as_secs_f64(),
                            bound,
                        );
                        tracing::error!(call = what, running_seconds = running.as_secs_f64(), "{message}");
                        eprintln!("pushgate: error: {message}");
                        std::process::exit(1);
                    }
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUND: Duration = Duration::from_secs(10);

    #[test]
    fn no_call_in_progress_is_fine() {
        let watch = StallWatch::default();
        let now = Instant::now();
        assert_eq!(watch.check(now + BOUND * 5, BOUND), Finding::Fine);
        assert_eq!(watch.oldest(now), Duration::ZERO);
    }

    #[test]
    fn a_call_past_the_bound_is_a_stall_and_names_itself() {
        let watch = StallWatch::default();
        let _call = watch.watch("syncing the Raft log");
        let later = Instant::now() + BOUND;
        assert_eq!(
            watch.check(later, BOUND),
            Finding::Stalled {
                what: "syncing the Raft log",
                running: watch.oldest(later),
            }
        );
    }

    #[test]
    fn a_slow_call_is_reported_once() {
        let watch = StallWatch::default();
        let _call = watch.watch("purging the Raft log");
        let later = Instant::now() + BOUND / 2;
        assert!(matches!(
            watch.check(later, BOUND),
            Finding::Slow {
                what: "purging the Raft log",
                ..
            }
        ));
        assert_eq!(watch.check(later, BOUND), Finding::Fine);
    }

    #[test]
    fn a_finished_call_no_longer_counts() {
        let watch = StallWatch::default();
        let old = watch.watch("writing Raft log entries");
        let _young = watch.watch("syncing the Raft log");
        drop(old);
        // Only the younger call is left; measured from its own start.
        let later = Instant::now() + BOUND;
        assert!(matches!(
            watch.check(later, BOUND),
            Finding::Stalled {
                what: "syncing the Raft log",
                ..
            }
        ));
        drop(_young);
        assert_eq!(watch.check(later, BOUND), Finding::Fine);
    }

    #[test]
    fn the_oldest_call_is_the_one_measured() {
        let watch = StallWatch::default();
        let _first = watch.watch("truncating the Raft log");
        std::thread::sleep(Duration::from_millis(5));
        let _second = watch.watch("syncing the Raft log");
        let now = Instant::now();
        assert!(watch.oldest(now) >= Duration::from_millis(5));
        assert!(matches!(
            watch.check(now + BOUND, BOUND),
            Finding::Stalled {
                what: "truncating the Raft log",
                ..
            }
        ));
    }

    #[test]
    fn the_watchdog_does_not_keep_its_watch_alive() {
        let watch = Arc::new(StallWatch::default());
        StallWatch::exit_process_on_stall(&watch, Duration::from_millis(100)).expect("spawn the watchdog");
        let weak = Arc::downgrade(&watch);
        drop(watch);
        // The thread holds only a weak reference: nothing keeps the watch alive.
        assert!(weak.upgrade().is_none());
    }
}
