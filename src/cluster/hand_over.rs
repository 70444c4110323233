//! A leader that is asked to stop (SIGTERM, `/-/quit`) hands its leadership
//! over first, so that a rolling restart refuses no push and no read.
//!
//! openraft 0.9 has no leadership transfer, and a leader that simply exits
//! cuts the calls that followers forwarded to it mid-way (their outcome is
//! then unknown: 503) and leaves the others to notice its silence. Instead
//! the stopping leader:
//!
//! 1. takes no new proposal: followers that forward get "not the leader" and
//!    wait for the next one, as during an election (`QuorumCheck`), and
//!    read-index calls get the same;
//! 2. lets the proposals already admitted commit;
//! 3. stops heartbeating, and once every member's leader lease has run out
//!    (until then they reject votes) asks the voter with the most of the log
//!    to stand for election at once (`TimeoutNow`, Raft's leadership
//!    transfer message);
//! 4. keeps answering for a moment after it sees the new leader, so that a
//!    member that has not heard from it yet is told "not the leader" instead
//!    of finding the port closed mid-call.
//!
//! The whole takes about 0.9 s, inside the time pushes wait for a leader
//! (`--push.leader-wait`) and reads for their index (`--read.timeout`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::time::Instant;

use super::network::{self, Peers};
use super::node::ELECTION_TIMEOUT_MAX;
use super::types::{NodeId, Raft};
use crate::pb::pushgate::v1 as pb;

/// How long a stopping leader waits for the others to elect a leader: a few
/// election timeouts.
const HAND_OVER_WAIT: Duration = Duration::from_secs(3);

/// How long a member rejects votes after it last heard from the leader:
/// openraft's leader lease, the maximum election timeout.
const LEADER_LEASE: Duration = Duration::from_millis(ELECTION_TIMEOUT_MAX);

/// How long a node that handed over keeps answering after it saw the new
/// leader: a few heartbeat intervals, by which every member has heard from it.
const LINGER: Duration = Duration::from_millis(300);

/// Whether the node is stopping, and the proposals it admitted and has not
/// answered yet. Shared by every path into the batcher (`QuorumCheck`).
#[derive(Default)]
pub struct Leaving {
    requested: AtomicBool,
    in_flight: AtomicUsize,
}

impl Leaving {
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }
}

/// An admitted proposal; counted until dropped.
pub struct Admitted(Arc<Leaving>);

impl Admitted {
    /// Counts a proposal about to be checked and admitted. Counted before
    /// the check: a stop requested after the check sees it in flight.
    pub fn count(leaving: &Arc<Leaving>) -> Admitted {
        leaving.in_flight.fetch_add(1, Ordering::SeqCst);
        Admitted(leaving.clone())
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Marks the node as stopping and, if it leads others, hands over (see the
/// module). Bounded: the proposals in flight get `drain_timeout`, the
/// election `HAND_OVER_WAIT`; a node that is not a leader of others returns
/// at once.
pub async fn hand_over(raft: &Raft, me: NodeId, leaving: &Leaving, peers: &Peers, drain_timeout: Duration) {
    leaving.requested.store(true, Ordering::SeqCst);
    let leads_others = {
        let m = raft.metrics();
        let m = m.borrow();
        m.state == ServerState::Leader
            && m.running_state.is_ok()
            && m.membership_config.membership().voter_ids().count() > 1
    };
    if !leads_others {
        return;
    }
    let started = Instant::now();
    let drained_by = started + drain_timeout;
    while leaving.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < drained_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!("stopping: this node leads; it stops heartbeating so that the others elect a leader first");
    raft.runtime_config().heartbeat(false);
    let quiet_since = Instant::now();
    if let Some((successor, addr)) = successor(raft, me) {
        let peers = peers.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(quiet_since + LEADER_LEASE + Duration::from_millis(50)).await;
            let Ok(mut client) = peers.client(&addr) else { return };
            let request = peers.request(pb::TimeoutNowRequest {}, Duration::from_millis(500));
            match client.timeout_now(request).await {
                Ok(_) => tracing::info!(successor, "asked node {successor} to start an election"),
                Err(e) => tracing::info!(
                    successor,
                    error = %network::describe_status(&e),
                    "node {successor} did not start an election; the election timers will"
                ),
            }
        });
    }
    let deadline = quiet_since + HAND_OVER_WAIT;
    let mut metrics = raft.metrics();
    loop {
        let next = {
            let m = metrics.borrow();
            m.current_leader.filter(|l| *l != me && m.state != ServerState::Leader)
        };
        if let Some(next) = next {
            tracing::info!(next, after = ?started.elapsed(), "leadership handed over");
            tokio::time::sleep(LINGER).await;
            return;
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            tracing::warn!(
                "no other leader was elected within {HAND_OVER_WAIT:?}; stopping anyway (pushes wait for the \
                 election that follows)"
            );
            return;
        }
        if tokio::time::timeout(remaining, metrics.changed())
            .await
            .is_ok_and(|r| r.is_err())
        {
            return;
        }
    }
}

/// The voter other than `me` that has the most of the log, and its address
/// (a learner cannot be elected).
fn successor(raft: &Raft, me: NodeId) -> Option<(NodeId, String)> {
    let m = raft.metrics();
    let m = m.borrow();
    let membership = m.membership_config.membership();
    let voters: Vec<NodeId> = membership.voter_ids().filter(|id| *id != me).collect();
    let (id, _) = m
        .replication
        .as_ref()?
        .iter()
        .filter(|(id, _)| voters.contains(id))
        .max_by_key(|(_, matched)| **matched)?;
    Some((*id, membership.get_node(id)?.addr.clone()))
}
