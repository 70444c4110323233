//! What a node says about its Raft state, and the view of the whole cluster
//! that `pushgate cluster status` shows.
//!
//! A node knows its own term, indexes and health; only the leader knows how
//! far behind each follower is. So the cluster view asks every member for its
//! own status over the `Status` RPC (in parallel, with a short deadline: a
//! member that is down must not hold the answer up) and takes the lag from
//! whichever member leads. Like `etcdctl endpoint status --cluster`, it shows
//! a down or cut-off member as unreachable rather than leaving it out.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::Fatal;

use super::codec::{ENTRY_FORMAT_VERSION, NEWER_FORMAT};
use super::identity::Identity;
use super::network::Peers;
use super::stall::StallWatch;
use super::state_machine::SharedState;
use super::stats::ClusterStats;
use super::types::{NodeId, Raft};
use crate::pb::pushgate::v1 as pb;

/// How long the cluster view waits for each member's answer.
const MEMBER_TIMEOUT: Duration = Duration::from_millis(1000);

/// A point-in-time view of the node's Raft state, for status and metrics.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    /// The cluster (gRPC) address this node advertises to the others: what
    /// `pushgate cluster add` run against a node waiting to be added uses.
    pub advertise_address: String,
    pub cluster_id: String,
    pub state: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    /// Digest of the entries this process applied, in hex (see
    /// `SharedState::applied_digest`).
    pub applied_digest: String,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub millis_since_quorum_ack: Option<u64>,
    pub members: BTreeMap<NodeId, String>,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    /// On the leader: log entries each follower is behind.
    pub replication_lag: Option<BTreeMap<NodeId, u64>>,
    /// Why this node stopped working for good (see `ClusterNode::failure`).
    pub failure: Option<String>,
    /// How long the oldest Raft log write, sync, truncation or purge in
    /// progress has been running, in seconds (0: none); the node stops itself
    /// at `--storage.stall-timeout` (`cluster::stall`).
    pub oldest_storage_call_seconds: f64,
    /// Set when a majority of the other members say this node was removed
    /// (see `watch_for_removal`).
    pub removed: Option<String>,
    /// Set while this node, which does not lead, has heard from neither its
    /// leader nor a quorum for a while (see `contact`): it answers pushes and
    /// consistent reads with 503.
    pub cut_off: Option<String>,
    /// The log entry format in use, as far as this node applied the log: the
    /// newest format of an entry it applied (`codec::ENTRY_FORMAT_VERSION`;
    /// from 2 on a push forwarded to the leader is sent again when its
    /// answer is lost, and applied once; from 3 on a pushed empty HELP is
    /// kept). A release that does not apply it cannot join.
    pub log_entry_format: u32,
    /// Pushes this node forwarded to the leader and sent again, since it
    /// started, because the leader's answer was lost (each is applied once).
    /// Not a self metric: the self metric names are fixed (see
    /// `model::reserved`).
    pub forwards_repeated: u64,
}

/// This node's status together with every member's, as this node sees them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ClusterStatus {
    #[serde(flatten)]
    pub this_node: NodeStatus,
    /// Every member of the cluster (this node included), by id.
    pub nodes: BTreeMap<NodeId, MemberStatus>,
}

/// One member of the cluster, as reported by itself.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberStatus {
    /// Its cluster (gRPC) address, from the membership.
    pub address: String,
    /// `voter` or `learner`.
    pub role: &'static str,
    /// Entries its log is behind the leader's, as the leader counts them
    /// (0 for the leader itself; absent when no leader answered).
    pub lag: Option<u64>,
    /// What it said about itself; absent when it did not answer.
    #[serde(flatten)]
    pub report: Option<MemberReport>,
    /// Why there is no report (it is down, cut off, or runs a release
    /// without the `Status` call), or why its report is suspect.
    pub error: Option<String>,
}

/// What a member says about itself over the `Status` RPC.
#[derive(Clone, Debug, serde::Serialize)]
pub struct MemberReport {
    pub version: String,
    pub cluster_id: String,
    pub state: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub applied_digest: String,
    pub failure: Option<String>,
    pub oldest_storage_call_seconds: f64,
    pub removed: Option<String>,
    pub cut_off: Option<String>,
    /// The newest log entry format it applies (`codec::ENTRY_FORMAT_VERSION`).
    pub entry_format: u32,
    #[serde(skip)]
    replication_lag: BTreeMap<NodeId, u64>,
}

/// Everything a node's status is made of; shared by the node (HTTP status,
/// self metrics) and its gRPC service (the `Status` RPC).
#[derive(Clone)]
pub struct StatusSource {
    pub raft: Raft,
    pub identity: Arc<Identity>,
    pub shared: Arc<SharedState>,
    pub stats: Arc<ClusterStats>,
    pub stalls: Arc<StallWatch>,
    /// `--cluster.advertise-address` (or this node's peer-list entry).
    pub advertise_address: String,
    /// Set while a majority of the other members say this node is not a
    /// member any more (see `watch_for_removal`).
    pub removal: Arc<parking_lot::Mutex<Option<String>>>,
    /// When this node last heard from each peer (`contact`).
    pub contact: Arc<super::contact::Contact>,
}

impl StatusSource {
    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let last = m.last_log_index.unwrap_or(0);
        NodeStatus {
            node_id: self.identity.node_id,
            advertise_address: self.advertise_address.clone(),
            cluster_id: self.identity.cluster_id(),
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: last,
            committed_index: ClusterStats::get(&self.stats.committed_index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            applied_digest: format!("{:016x}", self.shared.applied_digest.load(Ordering::Relaxed)),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            members: membership.nodes().map(|(id, n)| (*id, n.addr.clone())).collect(),
            voters: membership.voter_ids().collect(),
            learners: membership.learner_ids().collect(),
            replication_lag: m.replication.as_ref().map(|r| {
                r.iter()
                    .map(|(id, matched)| (*id, last.saturating_sub(matched.map_or(0, |l| l.index))))
                    .collect()
            }),
            failure: describe_failure(&m.running_state),
            oldest_storage_call_seconds: self.stalls.oldest(Instant::now()).as_secs_f64(),
            removed: self.removal.lock().clone(),
            cut_off: super::contact::cut_off(&self.contact, &m),
            log_entry_format: self.shared.log_entry_format.load(Ordering::Acquire),
            forwards_repeated: ClusterStats::get(&self.stats.forwards_repeated),
        }
    }

    /// This node's status and every member's: asks the others in parallel,
    /// waiting at most `MEMBER_TIMEOUT` for each.
    pub async fn cluster_status(&self, peers: &Peers) -> ClusterStatus {
        let this_node = self.status();
        let me = this_node.node_id;
        let asks = this_node
            .members
            .iter()
            .filter(|(id, _)| **id != me)
            .map(|(id, addr)| async move { (*id, ask(peers, addr).await) });
        let mut answers: BTreeMap<NodeId, Result<MemberReport, String>> =
            futures::future::join_all(asks).await.into_iter().collect();
        answers.insert(me, Ok(MemberReport::from(to_pb(&this_node))));
        let nodes = assemble(&this_node, answers);
        ClusterStatus { this_node, nodes }
    }
}

/// Asks the member at `addr` for its status.
async fn ask(peers: &Peers, addr: &str) -> Result<MemberReport, String> {
    let mut client = peers.client(addr).map_err(|e| e.message().to_string())?;
    match client.status(peers.request(pb::StatusRequest {}, MEMBER_TIMEOUT)).await {
        Ok(r) => Ok(MemberReport::from(r.into_inner())),
        Err(s) if s.code() == tonic::Code::Unimplemented => {
            Err("it runs an older pushgate that cannot report its status to other nodes".into())
        }
        // tonic says "transport error"; the cause (refused, timed out) is in the source chain.
        Err(s) => Err(format!(
            "unreachable at {addr}: {}",
            super::network::describe_status(&s)
        )),
    }
}

/// One entry per member of `this_node`'s membership, from the answers; the
/// lag comes from the member that leads in the highest term.
fn assemble(
    this_node: &NodeStatus,
    answers: BTreeMap<NodeId, Result<MemberReport, String>>,
) -> BTreeMap<NodeId, MemberStatus> {
    let leader_lag = answers
        .values()
        .filter_map(|a| a.as_ref().ok())
        .filter(|r| r.state == "Leader")
        .max_by_key(|r| r.term)
        .map(|r| r.replication_lag.clone());
    let mut answers = answers;
    this_node
        .members
        .iter()
        .map(|(id, address)| {
            let role = if this_node.learners.contains(id) {
                "learner"
            } else {
                "voter"
            };
            let (report, error) = match answers.remove(id) {
                Some(Ok(r)) if r.cluster_id != this_node.cluster_id => {
                    let why = if r.cluster_id.is_empty() {
                        "it belongs to no cluster yet (empty data directory)".to_string()
                    } else {
                        format!("it belongs to another cluster ({})", r.cluster_id)
                    };
                    (Some(r), Some(why))
                }
                Some(Ok(r)) if r.failure.is_some() => (Some(r), Some("it stopped working; see its failure".into())),
                Some(Ok(r)) => (Some(r), None),
                Some(Err(e)) => (None, Some(e)),
                None => (None, Some("not asked".into())),
            };
            let lag = leader_lag.as_ref().and_then(|lags| lags.get(id).copied());
            (
                *id,
                MemberStatus {
                    address: address.clone(),
                    role,
                    lag,
                    report,
                    error,
                },
            )
        })
        .collect()
}

/// A node's status as it sends it to another node.
pub fn to_pb(s: &NodeStatus) -> pb::StatusResponse {
    pb::StatusResponse {
        node_id: s.node_id,
        cluster_id: s.cluster_id.clone(),
        version: crate::build_info::BUILD_VERSION.into(),
        state: s.state.clone(),
        term: s.term,
        leader_id: s.leader_id.unwrap_or(0),
        last_log_index: s.last_log_index,
        committed_index: s.committed_index,
        applied_index: s.applied_index,
        applied_digest: s.applied_digest.clone(),
        failure: s.failure.clone().unwrap_or_default(),
        oldest_storage_call_seconds: s.oldest_storage_call_seconds,
        removed: s.removed.clone().unwrap_or_default(),
        cut_off: s.cut_off.clone().unwrap_or_default(),
        entry_format: ENTRY_FORMAT_VERSION,
        replication_lag: s
            .replication_lag
            .iter()
            .flatten()
            .map(|(node_id, entries)| pb::ReplicationLag {
                node_id: *node_id,
                entries: *entries,
            })
            .collect(),
    }
}

impl From<pb::StatusResponse> for MemberReport {
    fn from(r: pb::StatusResponse) -> Self {
        let some = |s: String| (!s.is_empty()).then_some(s);
        MemberReport {
            version: r.version,
            cluster_id: r.cluster_id,
            state: r.state,
            term: r.term,
            leader_id: (r.leader_id != 0).then_some(r.leader_id),
            last_log_index: r.last_log_index,
            committed_index: r.committed_index,
            applied_index: r.applied_index,
            applied_digest: r.applied_digest,
            failure: some(r.failure),
            oldest_storage_call_seconds: r.oldest_storage_call_seconds,
            removed: some(r.removed),
            cut_off: some(r.cut_off),
            // Releases before the field applied format 1 only.
            entry_format: r.entry_format.max(1),
            replication_lag: r.replication_lag.into_iter().map(|l| (l.node_id, l.entries)).collect(),
        }
    }
}

pub fn describe_failure(running: &Result<(), Fatal<NodeId>>) -> Option<String> {
    match running {
        Ok(()) | Err(Fatal::Stopped) => None,
        Err(Fatal::StorageError(e)) => match newer_format(e) {
            Some(why) => Some(format!("it cannot apply what the leader sent: {why}")),
            None => Some(format!("its storage failed {e}")),
        },
        Err(Fatal::Panicked) => Some("its Raft core panicked, a bug: please report it with this node's log".into()),
    }
}

/// The `codec::NewerFormat` behind a storage error, if that is what it is.
fn newer_format(e: &openraft::StorageError<NodeId>) -> Option<&openraft::AnyError> {
    let openraft::StorageError::IO { source } = e else {
        return None;
    };
    std::error::Error::source(source)
        .and_then(|s| s.downcast_ref::<openraft::AnyError>())
        .filter(|a| a.get_type() == Some(NEWER_FORMAT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: NodeId, members: &[NodeId], learners: &[NodeId]) -> NodeStatus {
        NodeStatus {
            node_id: id,
            advertise_address: format!("h{id}:9092"),
            cluster_id: "c1".into(),
            state: "Follower".into(),
            term: 3,
            leader_id: Some(1),
            last_log_index: 10,
            committed_index: 10,
            applied_index: 10,
            applied_digest: "00".into(),
            snapshot_index: None,
            purged_index: None,
            millis_since_quorum_ack: None,
            members: members.iter().map(|m| (*m, format!("h{m}:9092"))).collect(),
            voters: members.iter().filter(|m| !learners.contains(m)).copied().collect(),
            learners: learners.to_vec(),
            replication_lag: None,
            failure: None,
            oldest_storage_call_seconds: 0.0,
            removed: None,
            cut_off: None,
            log_entry_format: 1,
            forwards_repeated: 0,
        }
    }

    fn report(s: NodeStatus) -> Result<MemberReport, String> {
        Ok(MemberReport::from(to_pb(&s)))
    }

    #[test]
    fn every_member_is_listed_with_the_lag_the_leader_counts() {
        let me = node(2, &[1, 2, 3, 4], &[4]);
        let mut leader = node(1, &[1, 2, 3, 4], &[4]);
        leader.state = "Leader".into();
        leader.replication_lag = Some([(2, 0), (3, 7), (4, 40)].into());
        let answers = [
            (1, report(leader)),
            (2, report(me.clone())),
            (3, Err("unreachable at h3:9092: timeout".to_string())),
            (4, report(node(4, &[1, 2, 3, 4], &[4]))),
        ]
        .into();
        let nodes = assemble(&me, answers);
        assert_eq!(nodes.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
        assert_eq!(nodes[&1].lag, None, "not in the leader's count");
        assert_eq!(nodes[&2].lag, Some(0));
        assert_eq!(
            nodes[&3].lag,
            Some(7),
            "the leader's count, even if the member did not answer"
        );
        assert!(nodes[&3].report.is_none());
        assert_eq!(nodes[&3].error.as_deref(), Some("unreachable at h3:9092: timeout"));
        assert_eq!((nodes[&4].role, nodes[&4].lag), ("learner", Some(40)));
        assert_eq!(nodes[&1].report.as_ref().map(|r| r.state.as_str()), Some("Leader"));
    }

    #[test]
    fn a_stale_leader_does_not_supply_the_lag() {
        let me = node(2, &[1, 2, 3], &[]);
        let mut old = node(1, &[1, 2, 3], &[]);
        old.state = "Leader".into();
        old.replication_lag = Some([(2, 99), (3, 99)].into());
        let mut new = node(3, &[1, 2, 3], &[]);
        new.state = "Leader".into();
        new.term = 4;
        new.replication_lag = Some([(1, 5), (2, 0)].into());
        let nodes = assemble(
            &me,
            [(1, report(old)), (2, report(me.clone())), (3, report(new))].into(),
        );
        assert_eq!((nodes[&1].lag, nodes[&2].lag, nodes[&3].lag), (Some(5), Some(0), None));
    }

    #[test]
    fn a_member_of_another_cluster_or_none_is_flagged() {
        let me = node(1, &[1, 2, 3], &[]);
        let mut other = node(2, &[1, 2, 3], &[]);
        other.cluster_id = "c2".into();
        let mut empty = node(3, &[1, 2, 3], &[]);
        empty.cluster_id = String::new();
        let nodes = assemble(
            &me,
            [(1, report(me.clone())), (2, report(other)), (3, report(empty))].into(),
        );
        assert_eq!(nodes[&1].error, None);
        assert!(nodes[&2]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("another cluster (c2)")));
        assert!(nodes[&3].error.as_deref().is_some_and(|e| e.contains("no cluster yet")));
    }
}
