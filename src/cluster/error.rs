//! Errors of the cluster layer. Each says whether the change was made, was
//! not made, or may have been made: the HTTP layer turns that into the status
//! and a message the client can act on.

use std::time::Duration;

use thiserror::Error;

/// Why a mutation did not produce an outcome.
#[derive(Debug, Error, Clone)]
pub enum WriteError {
    /// Not proposed: the node's queue of pending changes is full.
    #[error("too many changes are waiting to be committed (the queue of {capacity} changes or {bytes} bytes is full); the change was not made, retry later")]
    QueueFull { capacity: usize, bytes: usize },
    /// Not proposed: this node is not the leader (the caller forwards).
    #[error("this node is not the leader; the change was not made")]
    NotLeader {
        leader_id: Option<u64>,
        leader_addr: Option<String>,
    },
    /// Not proposed: no leader is known (election in progress or quorum lost).
    #[error("no leader is reachable (an election is in progress or this node cannot reach a quorum); the change was not made, retry later")]
    NoLeader,
    /// Not proposed: this node is cut off from the quorum (a leader without
    /// acknowledgements, or a node that hears from neither a leader nor a
    /// quorum, see `contact`).
    #[error("{0}; the change was not made")]
    NoQuorum(String),
    /// Not proposed: the leader says this node is not a member of the
    /// cluster (it was removed, or was never added).
    #[error("{0}; the change was not made, push to another replica")]
    NotMember(String),
    /// Not proposed: the leader refused it (its queue was full).
    #[error("the leader refused the change: {0}")]
    RefusedByLeader(String),
    /// Proposed, but not confirmed in time: outcome unknown.
    #[error("the change was not confirmed within {0:?} (the cluster may have lost its quorum or be electing a leader); it may or may not have been applied")]
    Timeout(Duration),
    /// Sent to the leader, but its answer was lost: outcome unknown.
    #[error("{0}; the change may or may not have been applied")]
    Uncertain(String),
    /// Not proposed: this node stopped working for good (its storage failed)
    /// before the change reached it.
    #[error("this node has stopped working ({0}) and must be restarted; the change was not made")]
    Failed(String),
    /// The node stopped (shutdown or a storage failure): outcome unknown.
    #[error("this node stopped before confirming the change ({0}); it may or may not have been applied")]
    Stopped(String),
}

/// Why a consistent read could not be served.
#[derive(Debug, Error, Clone)]
pub enum ReadError {
    #[error("no leader is reachable (an election is in progress or this node cannot reach a quorum)")]
    NoLeader,
    #[error("the leader could not confirm it still has a quorum")]
    NoQuorum,
    #[error("{0}")]
    QuorumLost(String),
    /// The leader this node follows did not answer its read-index call
    /// (unreachable, or it answered that it cannot serve one); asked again
    /// until the read timeout, so this is the last reason at that point.
    #[error("the leader (node {leader}) gave no read index within {after:?}: {why}")]
    LeaderUnreachable { leader: u64, after: Duration, why: String },
    #[error("a consistent read did not complete within {0:?}")]
    Timeout(Duration),
    #[error("this node stopped ({0})")]
    Stopped(String),
    /// The leader says this node is not a member of the cluster: it
    /// receives no more entries, so it cannot catch up to any read index.
    #[error("{0}; read from another replica")]
    NotMember(String),
}

/// Why a node could not start.
#[derive(Debug, Error)]
pub enum StartError {
    #[error("storage: {0}")]
    Storage(String),
    #[error("{0}")]
    Identity(String),
    #[error("raft: {0}")]
    Raft(String),
    /// The log holds an entry a newer release wrote (`codec::NewerFormat`).
    #[error("{0}")]
    NewerFormat(String),
    #[error("network: {0}")]
    Network(String),
}
