//! Membership changes: add a node (learner first, voter once it caught up)
//! and remove a node. Executed by the leader; other nodes forward them.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use super::node::CAUGHT_UP_ENTRIES;
use super::types::{NodeId, Raft};
use crate::pb::pushgate::v1 as pb;

/// Why a membership change was not carried out. Each kind keeps its meaning
/// when a follower forwards the change to the leader (see `to_status` and
/// `from_status`).
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    /// Not made: this node is not the leader (a forwarding node retries).
    #[error("this node is not the leader; the change was not made")]
    NotLeader,
    /// Not made: the node to remove is not a member.
    #[error("{0}")]
    NotFound(String),
    /// Not made: the change contradicts the membership (already a voter,
    /// the last voter).
    #[error("{0}")]
    Conflict(String),
    /// Not made: no leader, or a leader cut off from its quorum; retry.
    #[error("{0}")]
    Unavailable(String),
    /// Started, but not confirmed: it may or may not have been made.
    #[error("{0}")]
    Raft(String),
}

impl MembershipError {
    /// The gRPC status a leader answers a forwarded change with.
    pub fn to_status(&self) -> tonic::Status {
        let message = self.to_string();
        match self {
            MembershipError::NotLeader => tonic::Status::failed_precondition(message),
            MembershipError::NotFound(_) => tonic::Status::not_found(message),
            MembershipError::Conflict(_) => tonic::Status::already_exists(message),
            MembershipError::Unavailable(_) => tonic::Status::unavailable(message),
            MembershipError::Raft(_) => tonic::Status::internal(message),
        }
    }

    /// The error a forwarding node reports for the leader's `status`.
    /// Transport failures that may have reached the leader are `Raft`
    /// (outcome unknown); a connection never made is `Unavailable`.
    pub fn from_status(leader: NodeId, status: &tonic::Status) -> MembershipError {
        let message = status.message().to_string();
        match status.code() {
            tonic::Code::FailedPrecondition => MembershipError::NotLeader,
            tonic::Code::NotFound => MembershipError::NotFound(message),
            tonic::Code::AlreadyExists => MembershipError::Conflict(message),
            tonic::Code::Unavailable if message.contains("connect") => MembershipError::Unavailable(format!(
                "the leader (node {leader}) is unreachable ({message}); the change was not made"
            )),
            tonic::Code::Unavailable if message.contains("the change was not made") => {
                MembershipError::Unavailable(message)
            }
            _ => MembershipError::Raft(format!(
                "forwarding the change to the leader (node {leader}) failed: {message}; it may or may not \
                 have been made: see `pushgate cluster status`"
            )),
        }
    }

    /// Whether asking again (once a leader is known) may succeed and cannot
    /// repeat a change that was made.
    pub fn retryable(&self) -> bool {
        matches!(self, MembershipError::NotLeader | MembershipError::Unavailable(_))
    }
}

fn map_err(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MembershipError::NotLeader,
        other => MembershipError::Raft(other.to_string()),
    }
}

/// How long adding a node waits for it to catch up as a learner: a large
/// store's snapshot takes a while to stream, and the answer must still reach
/// a follower that forwarded the change (120 s deadline).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(100);

/// Waits until learner `id` is within `CAUGHT_UP_ENTRIES` of this leader's
/// log. (openraft's own wait in `add_learner` has no deadline.) A learner
/// that does not catch up in time stays a learner, outside the quorum.
async fn wait_caught_up(raft: &Raft, id: NodeId, timeout: Duration) -> Result<(), MembershipError> {
    let lag = |m: &openraft::RaftMetrics<NodeId, BasicNode>| {
        let matched = m.replication.as_ref()?.get(&id)?.map_or(0, |l| l.index);
        Some(m.last_log_index.unwrap_or(0).saturating_sub(matched))
    };
    let waited = raft
        .wait(Some(timeout))
        .metrics(
            |m| lag(m).is_some_and(|l| l <= CAUGHT_UP_ENTRIES),
            "the new learner to catch up",
        )
        .await;
    match waited {
        Ok(_) => Ok(()),
        Err(e) => {
            let behind = lag(&raft.metrics().borrow()).map_or("an unknown number of".to_string(), |l| l.to_string());
            tracing::warn!(node_id = id, error = %e, behind, "the new learner did not catch up in time");
            Err(MembershipError::Unavailable(format!(
                "node {id} was added as a learner, but after {timeout:?} it is still {behind} log entries behind \
                 the leader (is it running, and can the leader reach it?); it stays a learner, which does not count \
                 towards the quorum: run the same add again to keep waiting, or remove it"
            )))
        }
    }
}

/// Applies one change on this node, which must be the leader. Returns the voters after it.
pub async fn apply_locally(
    raft: &Raft,
    peers: &super::network::Peers,
    identity: &super::identity::Identity,
    change: pb::change_members_request::Change,
) -> Result<Vec<NodeId>, MembershipError> {
    let (voters, learners): (BTreeSet<NodeId>, BTreeSet<NodeId>) = {
        let m = raft.metrics();
        let m = m.borrow();
        // Checked before anything is done: adding a node first hands it the
        // cluster id, which only the leader may do.
        if m.state != openraft::ServerState::Leader {
            return Err(MembershipError::NotLeader);
        }
        let membership = m.membership_config.membership();
        (membership.voter_ids().collect(), membership.learner_ids().collect())
    };
    match change {
        pb::change_members_request::Change::Add(node) => {
            if voters.contains(&node.id) {
                return Err(MembershipError::Conflict(format!(
                    "node {} is already a voter",
                    node.id
                )));
            }
            // The new node must belong to this cluster before it takes Raft traffic.
            let mut client = peers
                .client(&node.addr)
                .map_err(|e| MembershipError::Conflict(e.to_string()))?;
            let req = peers.request(
                pb::AdoptRequest {
                    cluster_id: identity.cluster_id(),
                },
                std::time::Duration::from_secs(5),
            );
            client.adopt(req).await.map_err(|e| {
                let why = format!("node {} at {}", node.id, node.addr);
                if refused_to_join(e.code()) {
                    MembershipError::Conflict(format!("{why} refused to join: {}", e.message()))
                } else {
                    MembershipError::Unavailable(format!(
                        "{why} is unreachable ({}); the change was not made",
                        e.message()
                    ))
                }
            })?;
            tracing::info!(node_id = node.id, addr = %node.addr, "adding node as learner; waiting for it to catch up");
            raft.add_learner(
                node.id,
                BasicNode {
                    addr: node.addr.clone(),
                },
                false,
            )
            .await
            .map_err(map_err)?;
            wait_caught_up(raft, node.id, CATCH_UP_TIMEOUT).await?;
            tracing::info!(node_id = node.id, "learner caught up; promoting to voter");
            let resp = raft
                .change_membership(ChangeMembers::AddVoterIds([node.id].into_iter().collect()), false)
                .await
                .map_err(map_err)?;
            Ok(resp.membership.map(|m| m.voter_ids().collect()).unwrap_or_default())
        }
        pb::change_members_request::Change::Remove(id) => {
            if voters.contains(&id) {
                if voters.len() == 1 {
                    return Err(MembershipError::Conflict(format!(
                        "removing node {id} would leave no voter"
                    )));
                }
                tracing::info!(node_id = id, "removing voter");
                let resp = raft
                    .change_membership(ChangeMembers::RemoveVoters([id].into_iter().collect()), false)
                    .await
                    .map_err(map_err)?;
                Ok(resp.membership.map(|m| m.voter_ids().collect()).unwrap_or_default())
            } else if learners.contains(&id) {
                tracing::info!(node_id = id, "removing learner");
                raft.change_membership(ChangeMembers::RemoveNodes([id].into_iter().collect()), false)
                    .await
                    .map_err(map_err)?;
                Ok(voters.into_iter().collect())
            } else {
                Err(MembershipError::NotFound(format!("node {id} is not a member")))
            }
        }
    }
}

/// Whether a failed `Adopt` call is the new node's own refusal (it belongs
/// to another cluster: retrying cannot help) rather than a failure to reach
/// it. A node still starting behind a proxy or a Service resets the
/// connection (`Unknown`, "transport error"), and one that does not answer in
/// time gives `DeadlineExceeded`: both are worth a retry.
fn refused_to_join(code: tonic::Code) -> bool {
    matches!(
        code,
        tonic::Code::FailedPrecondition
            | tonic::Code::AlreadyExists
            | tonic::Code::PermissionDenied
            | tonic::Code::Unauthenticated
    )
}

#[cfg(test)]
mod tests {
    use super::refused_to_join;

    #[test]
    fn only_the_new_nodes_own_answer_counts_as_a_refusal() {
        // What `Adopt` answers for a node of another cluster.
        assert!(refused_to_join(tonic::Code::FailedPrecondition));
        for unreachable in [
            tonic::Code::Unavailable,
            tonic::Code::Unknown,
            tonic::Code::DeadlineExceeded,
            tonic::Code::Cancelled,
        ] {
            assert!(!refused_to_join(unreachable), "{unreachable:?}");
        }
    }
}
