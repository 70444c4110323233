//! Membership changes: add a node (learner first, voter once it caught up)
//! and remove a node. Executed by the leader; other nodes forward them.

use std::collections::BTreeSet;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};

use super::types::{NodeId, Raft};
use crate::pb::pushgate::v1 as pb;

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("this node is not the leader")]
    NotLeader,
    #[error("node {0} is not a member")]
    NoSuchNode(NodeId),
    #[error("node {0} is already a voter")]
    AlreadyVoter(NodeId),
    #[error("removing node {0} would leave no voter")]
    LastVoter(NodeId),
    #[error("{0}")]
    Raft(String),
}

fn map_err(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> MembershipError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => MembershipError::NotLeader,
        other => MembershipError::Raft(other.to_string()),
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
        let membership = m.membership_config.membership();
        (membership.voter_ids().collect(), membership.learner_ids().collect())
    };
    match change {
        pb::change_members_request::Change::Add(node) => {
            if voters.contains(&node.id) {
                return Err(MembershipError::AlreadyVoter(node.id));
            }
            // The new node must belong to this cluster before it takes Raft traffic.
            let mut client = peers
                .client(&node.addr)
                .map_err(|e| MembershipError::Raft(e.to_string()))?;
            let req = peers.request(
                pb::AdoptRequest {
                    cluster_id: identity.cluster_id(),
                },
                std::time::Duration::from_secs(5),
            );
            client.adopt(req).await.map_err(|e| {
                MembershipError::Raft(format!(
                    "node {} at {} refused to join: {}",
                    node.id,
                    node.addr,
                    e.message()
                ))
            })?;
            tracing::info!(node_id = node.id, addr = %node.addr, "adding node as learner; waiting for it to catch up");
            raft.add_learner(
                node.id,
                BasicNode {
                    addr: node.addr.clone(),
                },
                true,
            )
            .await
            .map_err(map_err)?;
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
                    return Err(MembershipError::LastVoter(id));
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
                Err(MembershipError::NoSuchNode(id))
            }
        }
    }
}
