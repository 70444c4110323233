//! Deliberate bugs, to show that the fault simulation's checker catches them.
//!
//! Compiled in only with the cargo feature `bug-injection`, which no release
//! build enables (the simulation's tests turn it on); without it [`active`]
//! is a constant `false` and the branches that test it vanish.

/// A bug that can be switched on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The leader acknowledges a push as soon as it is queued, before it is
    /// committed.
    AckBeforeCommit = 1,
    /// A follower serves "consistent" reads from its own state, without a
    /// read index from the leader.
    StaleFollowerReads = 2,
    /// Node 2 skips every tenth log entry when applying.
    DivergentApply = 3,
    /// A copy of a forwarded mutation (a follower sent it again after losing
    /// the leader's answer) is applied a second time, although its answer
    /// still names the first copy's outcome and index.
    RepeatedForwards = 4,
}

impl Bug {
    pub const ALL: [Bug; 4] = [
        Bug::AckBeforeCommit,
        Bug::StaleFollowerReads,
        Bug::DivergentApply,
        Bug::RepeatedForwards,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeCommit => "ack-before-commit",
            Bug::StaleFollowerReads => "stale-follower-reads",
            Bug::DivergentApply => "divergent-apply",
            Bug::RepeatedForwards => "repeated-forwards",
        }
    }
}

#[cfg(feature = "bug-injection")]
static ACTIVE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);

/// Switches `bug` on (and any other off), or all off with `None`.
#[cfg(feature = "bug-injection")]
pub fn inject(bug: Option<Bug>) {
    ACTIVE.store(bug.map_or(0, |b| b as u8), std::sync::atomic::Ordering::SeqCst);
}

/// The bug switched on, if any.
#[cfg(feature = "bug-injection")]
pub fn injected() -> Option<Bug> {
    let active = ACTIVE.load(std::sync::atomic::Ordering::SeqCst);
    Bug::ALL.into_iter().find(|b| *b as u8 == active)
}

/// Whether `bug` is switched on.
#[cfg(feature = "bug-injection")]
pub fn active(bug: Bug) -> bool {
    ACTIVE.load(std::sync::atomic::Ordering::SeqCst) == bug as u8
}

/// Whether `bug` is switched on: never, in this build.
#[cfg(not(feature = "bug-injection"))]
#[inline(always)]
pub fn active(_bug: Bug) -> bool {
    false
}
