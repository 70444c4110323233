//! Exactly-once apply of the mutations followers forward to the leader.
//!
//! A follower that forwarded a push and lost the leader's answer (the leader
//! crashed, or the connection broke) cannot tell whether the push was
//! committed. Sending it again could apply it twice: a DELETE repeated after
//! another client's PUT would delete an acknowledged push. So every forwarded
//! mutation carries a [`pb::RequestId`] (the forwarding process's session
//! and a sequence number), and apply remembers each session's outcomes: the
//! first copy in the log is applied, every later copy gets the first one's
//! outcome and changes nothing (Raft dissertation §6.3, client sessions).
//! The follower can then send the mutation again, to the next leader, until
//! it has an answer.
//!
//! This is replicated state: it is changed only by apply, from what the
//! entries carry (their time included), so every replica holds the same, and
//! it is part of the snapshot. Pure: no IO, no clock.
//!
//! Memory stays bounded: a request also says below which sequence number
//! its session has answered every client (`answered_below`), and those
//! outcomes are dropped; a session unused for [`SESSION_IDLE_NANOS`] of entry
//! time and [`SESSION_IDLE_ENTRIES`] log entries (its process stopped) is
//! dropped as a whole.

use std::collections::BTreeMap;

use crate::model::Outcome;
use crate::pb::pushgate::v1 as pb;

/// A session whose last mutation is older than this (entry time) is
/// forgotten. A follower sends a mutation again only while its client waits
/// (`--push.leader-wait` plus `--push.commit-timeout`, seconds), so this is
/// far beyond any retry, and sessions of stopped processes do not pile up.
pub const SESSION_IDLE_NANOS: i64 = 10 * 60 * 1_000_000_000;

/// ... and at least this many log entries have been applied since its last
/// mutation: a leader whose clock jumps forward by hours does not drop,
/// within the seconds of a retry, the outcome that the retry needs.
pub const SESSION_IDLE_ENTRIES: u64 = 100_000;

/// Most outcomes one session keeps: as many of its mutations as may be
/// unanswered at once. Beyond it the oldest is forgotten (and a copy of it
/// that comes later is not applied: see [`Admission::Forgotten`]).
pub const MAX_OUTCOMES_PER_SESSION: usize = 65_536;

/// What apply does with a forwarded mutation.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// The first copy: apply it, then [`Sessions::record`] its outcome.
    Apply,
    /// A copy of a mutation already applied at log index `index`: answer
    /// with its outcome (and that index: it took effect there).
    Repeat { outcome: Outcome, index: u64 },
    /// A copy of a mutation whose outcome is no longer kept: its client has
    /// been answered already, or the session outgrew its bound. Not applied.
    Forgotten,
}

/// The outcome given to a [`Admission::Forgotten`] copy. Only a late copy of
/// an answered mutation (nobody waits for it) or a session with more than
/// [`MAX_OUTCOMES_PER_SESSION`] unanswered mutations gets it.
pub fn forgotten_outcome() -> Outcome {
    Outcome::Malformed {
        message: format!(
            "this forwarded change was sent again after the cluster forgot its outcome (its node had more than \
             {MAX_OUTCOMES_PER_SESSION} unanswered changes); it may or may not have been applied"
        ),
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
struct Session {
    answered_below: u64,
    last_used: i64,
    /// The log index of the entry that last used it.
    last_used_index: u64,
    /// By sequence number: the outcome and the log index it was applied at.
    outcomes: BTreeMap<u64, (Outcome, u64)>,
}

/// The forwarded mutations' sessions of a state machine.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sessions {
    /// Whether the log has moved to entry format 2, in which forwarded
    /// mutations carry request ids. Followers send a mutation again only
    /// from then on: before, a leader of an older release may still apply
    /// copies twice.
    request_ids: bool,
    /// By (node id, incarnation).
    sessions: BTreeMap<(u64, u64), Session>,
}

impl Sessions {
    /// Whether forwarded mutations carry request ids (the log reached entry
    /// format 2), so that sending one again is safe.
    pub fn request_ids(&self) -> bool {
        self.request_ids
    }

    /// Marks that the log reached entry format 2. Never undone.
    pub fn enable_request_ids(&mut self) {
        self.request_ids = true;
    }

    /// Decides what to do with the forwarded mutation `id` of entry `index`
    /// stamped `now`.
    pub fn admit(&mut self, id: &pb::RequestId, now: i64, index: u64) -> Admission {
        let session = self.sessions.entry((id.node_id, id.incarnation)).or_default();
        session.last_used = session.last_used.max(now);
        session.last_used_index = session.last_used_index.max(index);
        if id.answered_below > session.answered_below {
            session.answered_below = id.answered_below;
            session.outcomes = session.outcomes.split_off(&id.answered_below);
        }
        if id.seq < session.answered_below {
            return Admission::Forgotten;
        }
        match session.outcomes.get(&id.seq) {
            Some((outcome, index)) => Admission::Repeat {
                outcome: outcome.clone(),
                index: *index,
            },
            None => Admission::Apply,
        }
    }

    /// Keeps the outcome of the first copy of `id`, applied at log index
    /// `index` after [`Sessions::admit`] said [`Admission::Apply`].
    pub fn record(&mut self, id: &pb::RequestId, outcome: &Outcome, index: u64) {
        let session = self.sessions.entry((id.node_id, id.incarnation)).or_default();
        session.outcomes.insert(id.seq, (outcome.clone(), index));
        if session.outcomes.len() > MAX_OUTCOMES_PER_SESSION {
            if let Some((oldest, _)) = session.outcomes.pop_first() {
                // Its copies are refused from now on, not applied again.
                session.answered_below = session.answered_below.max(oldest + 1);
            }
        }
    }

    /// Forgets the sessions unused since `SESSION_IDLE_NANOS` before `now`
    /// and `SESSION_IDLE_ENTRIES` before entry `index`.
    pub fn expire(&mut self, now: i64, index: u64) {
        if self.sessions.is_empty() {
            return;
        }
        self.sessions.retain(|_, s| {
            now.saturating_sub(s.last_used) <= SESSION_IDLE_NANOS
                || index.saturating_sub(s.last_used_index) <= SESSION_IDLE_ENTRIES
        });
    }

    /// Outcomes kept, over all sessions.
    pub fn outcome_count(&self) -> usize {
        self.sessions.values().map(|s| s.outcomes.len()).sum()
    }

    /// The sessions as snapshot records.
    pub fn to_pb(&self) -> Vec<pb::Session> {
        self.sessions
            .iter()
            .map(|(&(node_id, incarnation), s)| pb::Session {
                node_id,
                incarnation,
                answered_below: s.answered_below,
                last_used_unix_nanos: s.last_used,
                last_used_index: s.last_used_index,
                outcomes: s
                    .outcomes
                    .iter()
                    .map(|(&seq, (outcome, index))| pb::SessionOutcome {
                        seq,
                        outcome: Some(super::rpc_codec::outcome_to_pb(outcome)),
                        index: *index,
                    })
                    .collect(),
            })
            .collect()
    }

    /// Sessions read back from a snapshot's records.
    pub fn from_pb(request_ids: bool, sessions: &[pb::Session]) -> Self {
        Sessions {
            request_ids,
            sessions: sessions
                .iter()
                .map(|s| {
                    let outcomes = s
                        .outcomes
                        .iter()
                        .map(|o| {
                            let outcome = o
                                .outcome
                                .clone()
                                .map_or_else(forgotten_outcome, super::rpc_codec::outcome_from_pb);
                            (o.seq, (outcome, o.index))
                        })
                        .collect();
                    (
                        (s.node_id, s.incarnation),
                        Session {
                            answered_below: s.answered_below,
                            last_used: s.last_used_unix_nanos,
                            last_used_index: s.last_used_index,
                            outcomes,
                        },
                    )
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(seq: u64, answered_below: u64) -> pb::RequestId {
        pb::RequestId {
            node_id: 2,
            incarnation: 77,
            seq,
            answered_below,
        }
    }

    fn pushed() -> Outcome {
        Outcome::Pushed
    }

    #[test]
    fn the_first_copy_is_applied_and_later_copies_get_its_outcome() {
        let mut s = Sessions::default();
        assert_eq!(s.admit(&id(1, 1), 10, 1), Admission::Apply);
        s.record(&id(1, 1), &Outcome::Deleted { existed: true }, 7);
        assert_eq!(
            s.admit(&id(1, 1), 20, 1),
            Admission::Repeat {
                outcome: Outcome::Deleted { existed: true },
                index: 7
            }
        );
    }

    #[test]
    fn sessions_of_other_processes_do_not_share_numbers() {
        let mut s = Sessions::default();
        s.admit(&id(1, 1), 10, 1);
        s.record(&id(1, 1), &pushed(), 7);
        let restarted = pb::RequestId {
            incarnation: 78,
            ..id(1, 1)
        };
        let other_node = pb::RequestId { node_id: 3, ..id(1, 1) };
        assert_eq!(s.admit(&restarted, 10, 1), Admission::Apply);
        assert_eq!(s.admit(&other_node, 10, 1), Admission::Apply);
    }

    #[test]
    fn answered_mutations_are_forgotten_and_their_late_copies_not_applied() {
        let mut s = Sessions::default();
        for seq in 1..=3 {
            assert_eq!(s.admit(&id(seq, 1), 10, 1), Admission::Apply);
            s.record(&id(seq, 1), &pushed(), 7);
        }
        assert_eq!(s.outcome_count(), 3);
        // The follower answered 1 and 2; its next mutation says so.
        assert_eq!(s.admit(&id(4, 3), 10, 1), Admission::Apply);
        s.record(&id(4, 3), &pushed(), 7);
        assert_eq!(s.outcome_count(), 2);
        assert_eq!(s.admit(&id(2, 1), 10, 1), Admission::Forgotten);
        assert_eq!(
            s.admit(&id(3, 1), 10, 1),
            Admission::Repeat {
                outcome: pushed(),
                index: 7
            }
        );
    }

    #[test]
    fn a_session_keeps_a_bounded_number_of_outcomes() {
        let mut s = Sessions::default();
        let n = MAX_OUTCOMES_PER_SESSION as u64 + 10;
        for seq in 1..=n {
            s.admit(&id(seq, 1), 10, 1);
            s.record(&id(seq, 1), &pushed(), 7);
        }
        assert_eq!(s.outcome_count(), MAX_OUTCOMES_PER_SESSION);
        // The oldest were dropped, so their copies are refused, not applied twice.
        assert_eq!(s.admit(&id(1, 1), 10, 1), Admission::Forgotten);
        assert_eq!(s.admit(&id(10, 1), 10, 1), Admission::Forgotten);
        assert_eq!(
            s.admit(&id(11, 1), 10, 1),
            Admission::Repeat {
                outcome: pushed(),
                index: 7
            }
        );
    }

    #[test]
    fn idle_sessions_expire_by_entry_time_and_entries() {
        let mut s = Sessions::default();
        s.admit(&id(1, 1), 1_000, 7);
        s.record(&id(1, 1), &pushed(), 7);
        let late = 1_001 + SESSION_IDLE_NANOS;
        s.expire(1_000 + SESSION_IDLE_NANOS, 8 + SESSION_IDLE_ENTRIES);
        assert_eq!(s.outcome_count(), 1, "not idle for long enough in time");
        // A leader's clock jumped forward: few entries later, still kept.
        s.expire(late, 8);
        assert_eq!(s.outcome_count(), 1, "not idle for enough entries");
        s.expire(late, 8 + SESSION_IDLE_ENTRIES);
        assert_eq!(s.outcome_count(), 0);
    }

    #[test]
    fn sessions_survive_a_snapshot() {
        let mut s = Sessions::default();
        s.enable_request_ids();
        for (seq, outcome) in [
            (1, pushed()),
            (2, Outcome::Rejected { message: "bad".into() }),
            (3, Outcome::Wiped { groups: 4 }),
        ] {
            s.admit(&id(seq, 1), 50, 1);
            s.record(&id(seq, 1), &outcome, 7);
        }
        s.admit(&id(4, 2), 60, 1);
        let back = Sessions::from_pb(s.request_ids(), &s.to_pb());
        assert_eq!(back, s);
    }
}
