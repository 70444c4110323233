//! The forwarding side of exactly-once apply (`sessions` is the applying
//! side): a node numbers the mutations it forwards to the leader, so that it
//! can send one again when the leader's answer was lost.
//!
//! Each process is one session (its node id and a random incarnation drawn
//! at start): a restarted node does not reuse the numbers of its previous
//! life. Every request also says below which number every mutation of the
//! session has been answered, which lets apply forget those outcomes.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::Mutex;

use super::types::NodeId;
use crate::pb::pushgate::v1 as pb;

/// This process's session of forwarded mutations.
pub struct ForwardingSession {
    node_id: NodeId,
    incarnation: u64,
    state: Arc<Mutex<Numbers>>,
}

#[derive(Default)]
struct Numbers {
    /// The number the next mutation gets.
    next: u64,
    /// Numbers given out whose client has no answer yet.
    unanswered: BTreeSet<u64>,
}

impl ForwardingSession {
    pub fn new(node_id: NodeId, incarnation: u64) -> Self {
        ForwardingSession {
            node_id,
            incarnation,
            state: Arc::new(Mutex::new(Numbers {
                next: 1,
                unanswered: BTreeSet::new(),
            })),
        }
    }

    /// Numbers a mutation about to be forwarded. Its number counts as
    /// unanswered until the ticket is dropped (the client has its answer).
    pub fn ticket(&self) -> Ticket {
        let mut numbers = self.state.lock();
        let seq = numbers.next;
        numbers.next += 1;
        numbers.unanswered.insert(seq);
        Ticket {
            node_id: self.node_id,
            incarnation: self.incarnation,
            seq,
            state: self.state.clone(),
        }
    }
}

/// One forwarded mutation's number, held while its client waits.
pub struct Ticket {
    node_id: NodeId,
    incarnation: u64,
    seq: u64,
    state: Arc<Mutex<Numbers>>,
}

impl Ticket {
    /// The request id to send now (the same number every time; what has been
    /// answered moves on).
    pub fn request_id(&self) -> pb::RequestId {
        let numbers = self.state.lock();
        let answered_below = numbers.unanswered.first().copied().unwrap_or(numbers.next);
        pb::RequestId {
            node_id: self.node_id,
            incarnation: self.incarnation,
            seq: self.seq,
            answered_below,
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.state.lock().unanswered.remove(&self.seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_below_the_oldest_unanswered_mutation_count_as_answered() {
        let session = ForwardingSession::new(2, 9);
        let first = session.ticket();
        let second = session.ticket();
        let third = session.ticket();
        assert_eq!((first.request_id().seq, third.request_id().seq), (1, 3));
        assert_eq!(third.request_id().answered_below, 1);
        drop(second);
        // 1 still waits: nothing below it is answered.
        assert_eq!(third.request_id().answered_below, 1);
        drop(first);
        assert_eq!(third.request_id().answered_below, 3);
        drop(third);
        assert_eq!(session.ticket().request_id().answered_below, 4);
    }

    #[test]
    fn a_ticket_names_its_session() {
        let id = ForwardingSession::new(3, 77).ticket().request_id();
        assert_eq!((id.node_id, id.incarnation), (3, 77));
    }
}
