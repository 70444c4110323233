//! The gateway facade: the one interface the HTTP layer talks to.
//!
//! It turns requests into replicated mutations (`push`, `delete`, `wipe`) and
//! hands out consistent read views (`read`). Everything below it (Raft, sled,
//! forwarding to the leader) stays hidden: callers see grouping keys, metric
//! families, outcomes and a `GatewayError` that says whether a change was
//! made.

use std::sync::Arc;

use parking_lot::lock_api::ArcRwLockReadGuard;
use parking_lot::RawRwLock;
use thiserror::Error;

use crate::cluster::state_machine::AppliedState;
use crate::cluster::{ClusterNode, ClusterStatus, MembershipError, NodeStatus, ReadError, WriteError};
use crate::model::store::key_to_pb;
use crate::model::{GroupingKey, Outcome, Store};
use crate::pb::io::prometheus::client::MetricFamily;
use crate::pb::pushgate::v1 as pb;

/// Why the gateway could not do what was asked.
#[derive(Debug, Error, Clone)]
pub enum GatewayError {
    /// Refused before anything was proposed: the node is overloaded.
    #[error("{0}")]
    Overloaded(String),
    /// Refused before anything was proposed: no leader or no quorum now.
    #[error("{0}")]
    Unavailable(String),
    /// Proposed but not confirmed: the change may or may not have been made.
    #[error("{0}")]
    OutcomeUnknown(String),
    /// A membership change names a node that is not a member.
    #[error("{0}")]
    NotFound(String),
    /// A membership change that contradicts the membership (already a
    /// voter, the last voter, a node that refuses to join).
    #[error("{0}")]
    Conflict(String),
    /// A bug or a broken node.
    #[error("{0}")]
    Internal(String),
}

impl From<MembershipError> for GatewayError {
    fn from(e: MembershipError) -> Self {
        match e {
            MembershipError::NotFound(m) => GatewayError::NotFound(m),
            MembershipError::Conflict(m) => GatewayError::Conflict(m),
            MembershipError::NotLeader | MembershipError::Unavailable(_) => GatewayError::Unavailable(e.to_string()),
            MembershipError::Raft(m) => GatewayError::OutcomeUnknown(m),
        }
    }
}

impl From<WriteError> for GatewayError {
    fn from(e: WriteError) -> Self {
        match &e {
            WriteError::QueueFull { .. } | WriteError::RefusedByLeader(_) => GatewayError::Overloaded(e.to_string()),
            WriteError::NotLeader { .. }
            | WriteError::NoLeader
            | WriteError::NoQuorum(_)
            | WriteError::NotMember(_)
            | WriteError::Failed(_) => GatewayError::Unavailable(e.to_string()),
            WriteError::Timeout(_) | WriteError::Uncertain(_) | WriteError::Stopped(_) => {
                GatewayError::OutcomeUnknown(e.to_string())
            }
        }
    }
}

impl From<ReadError> for GatewayError {
    fn from(e: ReadError) -> Self {
        GatewayError::Unavailable(format!("cannot serve a consistent read: {e}"))
    }
}

/// How fresh a read must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadConsistency {
    /// Everything committed before the read started is visible (default).
    Linearizable,
    /// Whatever this replica has applied; may lag the leader.
    Stale,
}

/// The result of a committed mutation.
#[derive(Clone, Debug)]
pub struct Receipt {
    pub outcome: Outcome,
    /// Log index the mutation was applied at.
    pub index: u64,
}

/// A consistent view of the store, held while rendering.
pub struct ReadView {
    state: ArcRwLockReadGuard<RawRwLock, AppliedState>,
}

impl ReadView {
    pub fn store(&self) -> &Store {
        &self.state.store
    }

    /// Log index this view reflects.
    pub fn index(&self) -> u64 {
        self.state.last_applied.map_or(0, |l| l.index)
    }
}

/// Settings that shape the mutations this node proposes.
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    pub consistency_check: bool,
}

pub struct Gateway {
    node: Arc<ClusterNode>,
    config: GatewayConfig,
}

impl Gateway {
    pub fn new(node: Arc<ClusterNode>, config: GatewayConfig) -> Self {
        Gateway { node, config }
    }

    pub fn consistency_check(&self) -> bool {
        self.config.consistency_check
    }

    /// PUT (`replace`) or POST of families to a group.
    pub async fn push(
        &self,
        key: &GroupingKey,
        replace: bool,
        families: Vec<MetricFamily>,
    ) -> Result<Receipt, GatewayError> {
        let push = pb::Push {
            grouping_key: key_to_pb(key),
            replace,
            families,
            consistency_check: self.config.consistency_check,
        };
        self.mutate(pb::mutation::Op::Push(push)).await
    }

    pub async fn delete(&self, key: &GroupingKey) -> Result<Receipt, GatewayError> {
        self.mutate(pb::mutation::Op::Delete(pb::Delete {
            grouping_key: key_to_pb(key),
        }))
        .await
    }

    pub async fn wipe(&self) -> Result<Receipt, GatewayError> {
        self.mutate(pb::mutation::Op::Wipe(pb::Wipe {})).await
    }

    async fn mutate(&self, op: pb::mutation::Op) -> Result<Receipt, GatewayError> {
        let committed = self
            .node
            .write(pb::Mutation {
                op: Some(op),
                request: None,
            })
            .await?;
        Ok(Receipt {
            outcome: committed.outcome,
            index: committed.index,
        })
    }

    /// A view of the store at least as new as `consistency` demands.
    pub async fn read(&self, consistency: ReadConsistency) -> Result<ReadView, GatewayError> {
        if consistency == ReadConsistency::Linearizable {
            self.node.linearizable_read().await?;
        }
        Ok(ReadView {
            state: self.node.applied_state().read_arc(),
        })
    }

    /// Whether this node can serve consistent reads and take writes now.
    pub async fn ready(&self) -> Result<(), GatewayError> {
        self.node.linearizable_read().await?;
        Ok(())
    }

    /// Why this node stopped working for good (its storage failed), if it
    /// did: only a restart brings it back.
    pub fn failure(&self) -> Option<String> {
        self.node.failure()
    }

    pub fn status(&self) -> NodeStatus {
        self.node.status()
    }

    /// This node's status and every member's.
    pub async fn cluster_status(&self) -> ClusterStatus {
        self.node.cluster_status().await
    }

    pub fn stats(&self) -> &crate::cluster::stats::ClusterStats {
        self.node.stats()
    }

    /// Adds a node (learner, catch up, voter); returns the voters after.
    pub async fn add_member(&self, node_id: u64, address: String) -> Result<Vec<u64>, GatewayError> {
        let change = pb::change_members_request::Change::Add(pb::Node {
            id: node_id,
            addr: address,
        });
        self.node.change_members(change).await.map_err(GatewayError::from)
    }

    /// Removes a node from the cluster; returns the voters after.
    pub async fn remove_member(&self, node_id: u64) -> Result<Vec<u64>, GatewayError> {
        let change = pb::change_members_request::Change::Remove(node_id);
        self.node.change_members(change).await.map_err(GatewayError::from)
    }

    pub async fn shutdown(&self) {
        self.node.shutdown().await
    }
}
