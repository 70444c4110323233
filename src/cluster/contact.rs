//! When this node last heard from each peer, and whether it is cut off.
//!
//! openraft 0.9 tells a leader how long ago a quorum acknowledged it
//! (`millis_since_quorum_ack`, see `node::QuorumCheck`), but a follower only
//! learns that it lost its leader from its election timer, and then stands
//! for election again and again. Without a record of its own, a follower cut
//! off from the others could not tell that from an election in progress, and
//! made every push and consistent read wait for a leader
//! (`--push.leader-wait`, `--read.timeout`) before answering `503`.
//!
//! A peer counts as heard from when a call from it arrives (heartbeats and
//! entries from the leader, vote requests from candidates, forwarded pushes)
//! or when it answers a call of this node's. A node that does not lead is cut
//! off when, for [`WINDOW`], it has heard neither from the leader it follows
//! nor from enough voters to make a quorum with itself.
//!
//! After a leader's crash openraft's followers stay silent for a while: a
//! follower stands for election only once the leader's lease and its own
//! election timeout have passed (up to 1.6 s here). So that the survivors do
//! not take that silence for a partition, a node that has not heard from its
//! leader for [`ASK_AFTER`] asks every voter whether it is there
//! ([`ask_voters_while_leaderless`], the `Status` call, which a node answers
//! from what it has at hand, without its Raft core); the nodes on the
//! majority side answer each other and go on waiting for the new leader.

use std::collections::HashMap;
use std::time::Duration;

use openraft::{BasicNode, RaftMetrics, ServerState};
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use super::network::Peers;
use super::types::{NodeId, Raft};
use crate::pb::pushgate::v1 as pb;

/// How long a node that does not lead goes without a call from its leader
/// before it asks the voters whether they are there: three heartbeats.
const ASK_AFTER: Duration = Duration::from_millis(300);

/// How often it asks them while it has no leader to hear from.
const ASK_EVERY: Duration = Duration::from_millis(250);

/// How long one such question may take (a peer that is down or cut off
/// does not answer).
const ASK_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a node that does not lead may hear from neither its leader nor a
/// quorum before it counts as cut off: ten of the leader's heartbeats. While
/// a lost leader is being replaced the voters keep hearing from each other
/// (their questions, then the candidates' vote requests), so only a node that
/// reaches too few of them goes this long without. The same bound as a
/// leader's own quorum check (`node::QuorumCheck`).
pub const WINDOW: Duration = Duration::from_millis(1000);

/// When each peer was last heard from.
#[derive(Debug)]
pub struct Contact {
    /// Silence is counted from here for a peer not heard from yet, so that a
    /// node that just started waits for its peers like one that was running.
    started: Instant,
    last: Mutex<HashMap<NodeId, Instant>>,
}

impl Default for Contact {
    fn default() -> Self {
        Contact {
            started: Instant::now(),
            last: Mutex::new(HashMap::new()),
        }
    }
}

/// What a node knows of the cluster when it asks whether it is cut off.
#[derive(Clone, Copy, Debug)]
pub struct View<'a> {
    pub me: NodeId,
    /// Whether this node is the leader (a leader has its own check).
    pub leads: bool,
    /// The voters of the membership this node knows.
    pub voters: &'a [NodeId],
    /// The leader this node follows, if it knows one.
    pub leader: Option<NodeId>,
}

impl Contact {
    /// Notes that `peer` was heard from now.
    pub fn heard_from(&self, peer: NodeId) {
        self.last.lock().insert(peer, Instant::now());
    }

    /// How long ago `peer` was last heard from (or this node started).
    fn silence(&self, peer: NodeId) -> Duration {
        self.silence_in(&self.last.lock(), peer, Instant::now())
    }

    /// [`Contact::silence`] at `now`, from the record `last` (held locked).
    fn silence_in(&self, last: &HashMap<NodeId, Instant>, peer: NodeId, now: Instant) -> Duration {
        let heard = last.get(&peer).copied().unwrap_or(self.started);
        now.saturating_duration_since(heard.max(self.started))
    }

    /// Why this node is cut off from the cluster, if it is (see the module
    /// documentation); `None` also for a leader, a node that is not a voter
    /// (a learner, a node waiting to be added) and a cluster of one.
    pub fn cut_off(&self, view: View<'_>) -> Option<String> {
        let now = Instant::now();
        let last = self.last.lock();
        let recent = |peer: &NodeId| self.silence_in(&last, *peer, now) < WINDOW;
        is_cut_off(view, recent).then(|| {
            format!(
                "this node has heard from neither a leader nor a quorum of the replicas for over {} ms (it is cut \
                 off from them, or most of them are down)",
                WINDOW.as_millis()
            )
        })
    }
}

/// [`Contact::cut_off`] for the node whose Raft metrics are `m`.
pub fn cut_off(contact: &Contact, m: &RaftMetrics<NodeId, BasicNode>) -> Option<String> {
    let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
    contact.cut_off(View {
        me: m.id,
        leads: m.state == ServerState::Leader,
        voters: &voters,
        leader: m.current_leader,
    })
}

/// Runs until `stop`: while this node is a voter that does not lead and has
/// not heard from its leader for [`ASK_AFTER`], asks every other voter
/// whether it is there, every [`ASK_EVERY`]; an answer counts as hearing from
/// that voter (see the module documentation).
pub async fn ask_voters_while_leaderless(raft: Raft, peers: Peers, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(ASK_EVERY) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (me, others, leader) = {
            let m = raft.metrics();
            let m = m.borrow();
            if m.state == ServerState::Leader {
                continue;
            }
            let membership = m.membership_config.membership();
            let voters: Vec<NodeId> = membership.voter_ids().collect();
            if voters.len() < 2 || !voters.contains(&m.id) {
                continue;
            }
            let others: Vec<(NodeId, String)> = voters
                .iter()
                .filter(|v| **v != m.id)
                .filter_map(|v| membership.get_node(v).map(|n| (*v, n.addr.clone())))
                .collect();
            (m.id, others, m.current_leader)
        };
        if leader.is_some_and(|l| l != me && peers.contact().silence(l) < ASK_AFTER) {
            continue;
        }
        for (id, addr) in others {
            let peers = peers.clone();
            tokio::spawn(async move {
                let Ok(mut client) = peers.client(&addr) else { return };
                let request = peers.request(pb::StatusRequest {}, ASK_TIMEOUT);
                // A node of another cluster at that address is no contact.
                if let Ok(answer) = client.status(request).await {
                    if answer.get_ref().cluster_id == peers.cluster_id() {
                        peers.contact().heard_from(id);
                    }
                }
            });
        }
    }
}

/// The rule of [`Contact::cut_off`], given whether each peer was heard from
/// within the window.
fn is_cut_off(view: View<'_>, recent: impl Fn(&NodeId) -> bool) -> bool {
    if view.leads || view.voters.len() < 2 || !view.voters.contains(&view.me) {
        return false;
    }
    if view.leader.is_some_and(|l| l != view.me && recent(&l)) {
        return false;
    }
    let heard = view.voters.iter().filter(|v| **v != view.me && recent(v)).count();
    heard + 1 < view.voters.len() / 2 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(voters: &[NodeId], leader: Option<NodeId>) -> View<'_> {
        View {
            me: 1,
            leads: false,
            voters,
            leader,
        }
    }

    #[test]
    fn a_follower_that_hears_its_leader_is_not_cut_off() {
        // In a cluster of five a follower hears only from the leader.
        assert!(!is_cut_off(view(&[1, 2, 3, 4, 5], Some(2)), |p| *p == 2));
    }

    #[test]
    fn a_follower_that_hears_from_nobody_is_cut_off() {
        assert!(is_cut_off(view(&[1, 2, 3], Some(2)), |_| false));
        assert!(is_cut_off(view(&[1, 2, 3], None), |_| false));
    }

    #[test]
    fn hearing_from_a_quorum_during_an_election_is_not_cut_off() {
        // The leader is gone; the other survivor asked for (or gave) a vote.
        assert!(!is_cut_off(view(&[1, 2, 3], None), |p| *p == 3));
        assert!(!is_cut_off(view(&[1, 2, 3], Some(2)), |p| *p == 3));
        assert!(!is_cut_off(view(&[1, 2, 3, 4, 5], None), |p| *p == 3 || *p == 4));
    }

    #[test]
    fn a_minority_that_hears_only_itself_is_cut_off() {
        // Nodes 1 and 2 of five, on their own side of a partition.
        assert!(is_cut_off(view(&[1, 2, 3, 4, 5], None), |p| *p == 2));
    }

    #[test]
    fn leaders_learners_and_single_nodes_are_never_cut_off_here() {
        let leader = View {
            leads: true,
            ..view(&[1, 2, 3], Some(1))
        };
        assert!(!is_cut_off(leader, |_| false));
        assert!(!is_cut_off(view(&[2, 3, 4], Some(2)), |_| false), "not a voter");
        assert!(!is_cut_off(view(&[1], None), |_| false), "a cluster of one");
    }

    #[tokio::test(start_paused = true)]
    async fn silence_counts_from_the_start_and_from_the_last_call() {
        let contact = Contact::default();
        let voters = [1, 2, 3];
        assert_eq!(contact.cut_off(view(&voters, None)), None, "just started");
        tokio::time::advance(WINDOW).await;
        assert!(contact.cut_off(view(&voters, None)).is_some());
        contact.heard_from(2);
        assert_eq!(contact.cut_off(view(&voters, Some(2))), None);
        tokio::time::advance(WINDOW / 2).await;
        assert_eq!(contact.cut_off(view(&voters, Some(2))), None);
        tokio::time::advance(WINDOW / 2).await;
        let why = contact.cut_off(view(&voters, Some(2))).expect("silent for the window");
        assert!(why.contains("cut off"), "{why}");
    }
}
