//! One pushgate node: openraft wired to the sled log, the in-memory state
//! machine, the network and the batcher. A single node is a cluster of one;
//! a cluster only adds peers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, ServerState};
use parking_lot::RwLock;

use super::batcher::{Batcher, Clock, Committed};
use super::codec::FORMAT_VERSION;
use super::error::{ReadError, StartError, WriteError};
use super::log_store::LogStore;
use super::network::Network;
use super::state_machine::{AppliedState, SharedState, StateMachine};
use super::stats::ClusterStats;
use super::types::{NodeId, Raft};
use crate::pb::pushgate::v1 as pb;

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// The address other nodes reach this node's cluster (gRPC) port at.
    pub advertise_addr: String,
    pub data_dir: PathBuf,
    /// All voters including this node; empty for a single node.
    pub peers: BTreeMap<NodeId, String>,
    /// Pending mutations the queue holds before answering 503.
    pub queue_capacity: usize,
    /// Bytes of pending mutations the queue holds before answering 503.
    pub queue_bytes: usize,
    /// How long a write may wait for its commit before 503 (outcome unknown).
    pub write_timeout: Duration,
    /// How long a consistent read may wait before 503.
    pub read_timeout: Duration,
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_every: u64,
    /// sled page cache size.
    pub cache_bytes: u64,
}

/// A point-in-time view of the node's Raft state, for status and metrics.
#[derive(Clone, Debug, serde::Serialize)]
pub struct NodeStatus {
    pub node_id: NodeId,
    pub state: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub last_log_index: u64,
    pub committed_index: u64,
    pub applied_index: u64,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    pub millis_since_quorum_ack: Option<u64>,
    pub members: BTreeMap<NodeId, String>,
    pub voters: Vec<NodeId>,
}

pub struct ClusterNode {
    pub id: NodeId,
    raft: Raft,
    shared: Arc<SharedState>,
    stats: Arc<ClusterStats>,
    batcher: Batcher,
    log_store: LogStore,
    config: NodeConfig,
}

fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    })
}

impl ClusterNode {
    /// Opens the data directory and starts Raft (initialising a new single-node
    /// cluster on first start).
    pub async fn start(config: NodeConfig) -> Result<Arc<Self>, StartError> {
        Self::start_with_clock(config, system_clock()).await
    }

    pub async fn start_with_clock(
        config: NodeConfig,
        clock: Clock,
    ) -> Result<Arc<Self>, StartError> {
        let stats = Arc::new(ClusterStats::default());
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            StartError::Storage(format!("cannot create {}: {e}", config.data_dir.display()))
        })?;
        let log_store = LogStore::open(
            &config.data_dir.join("raft-log"),
            config.cache_bytes,
            stats.clone(),
        )
        .map_err(|e| StartError::Storage(e.to_string()))?;
        check_identity(&log_store, &config)?;
        let state_machine = StateMachine::open(&config.data_dir.join("snapshots"), stats.clone())
            .map_err(StartError::Storage)?;
        let shared = state_machine.shared();

        let raft_config = openraft::Config {
            cluster_name: "pushgate".into(),
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: 800,
            install_snapshot_timeout: 30_000,
            max_payload_entries: 64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: 100,
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let network = Network::new();
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            network,
            log_store.clone(),
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if !initialized && config.peers.is_empty() {
            let mut members = BTreeMap::new();
            members.insert(
                config.node_id,
                BasicNode {
                    addr: config.advertise_addr.clone(),
                },
            );
            raft.initialize(members)
                .await
                .map_err(|e| StartError::Raft(e.to_string()))?;
            tracing::info!(
                node_id = config.node_id,
                "initialised a new single-node cluster"
            );
        }

        let batcher = Batcher::start(
            raft.clone(),
            config.queue_capacity,
            config.queue_bytes,
            config.write_timeout,
            clock,
            stats.clone(),
        );
        Ok(Arc::new(ClusterNode {
            id: config.node_id,
            raft,
            shared,
            stats,
            batcher,
            log_store,
            config,
        }))
    }

    /// Proposes a mutation through this node's batcher and waits for its outcome.
    pub async fn write(&self, mutation: pb::Mutation) -> Result<Committed, WriteError> {
        self.batcher.submit(mutation).await
    }

    /// Waits until this node can serve a linearizable read; returns the log
    /// index the read reflects (everything committed before the call).
    pub async fn linearizable_read(&self) -> Result<u64, ReadError> {
        let timeout = self.config.read_timeout;
        let read = tokio::time::timeout(timeout, self.raft.ensure_linearizable()).await;
        match read {
            Err(_) => Err(ReadError::Timeout(timeout)),
            Ok(Ok(_)) => Ok(self.applied_index()),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                match f.leader_id {
                    Some(id) => Err(ReadError::NotLeader {
                        leader_id: Some(id),
                        leader_addr: f.leader_node.map(|n| n.addr),
                    }),
                    None => Err(ReadError::NoLeader),
                }
            }
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                Err(ReadError::NoQuorum)
            }
            Ok(Err(RaftError::Fatal(f))) => Err(ReadError::Stopped(f.to_string())),
        }
    }

    /// The applied state (store, applied log id, membership), for rendering.
    pub fn applied_state(&self) -> Arc<RwLock<AppliedState>> {
        self.shared.state.clone()
    }

    pub fn applied_index(&self) -> u64 {
        self.shared
            .applied_index
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn log_size_on_disk(&self) -> u64 {
        self.log_store.size_on_disk()
    }

    pub fn status(&self) -> NodeStatus {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        NodeStatus {
            node_id: self.id,
            state: format!("{:?}", m.state),
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index.unwrap_or(0),
            committed_index: ClusterStats::get(&self.stats.committed_index),
            applied_index: m.last_applied.map_or(0, |l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            members: membership
                .nodes()
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect(),
            voters: membership.voter_ids().collect(),
        }
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().state == ServerState::Leader
    }

    /// Stops Raft (in-flight writes get an error; the log stays consistent).
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}

/// A data directory belongs to one node of one cluster, forever: a node
/// started with another id on it would reuse someone else's Raft identity.
fn check_identity(log: &LogStore, config: &NodeConfig) -> Result<(), StartError> {
    match log
        .identity()
        .map_err(|e| StartError::Storage(e.to_string()))?
    {
        Some(identity) => {
            crate::cluster::codec::check_version(identity.format_version)
                .map_err(|e| StartError::Identity(e.to_string()))?;
            if identity.node_id != config.node_id {
                return Err(StartError::Identity(format!(
                    "the data directory {} belongs to node {} (cluster {}), but this process was started as node {}; \
                     start it with --cluster.node-id={} or give it its own --storage.path",
                    config.data_dir.display(),
                    identity.node_id,
                    identity.cluster_id,
                    config.node_id,
                    identity.node_id
                )));
            }
            Ok(())
        }
        None => {
            let identity = pb::NodeIdentity {
                format_version: FORMAT_VERSION,
                node_id: config.node_id,
                cluster_id: format!("{:032x}", rand::random::<u128>()),
            };
            log.save_identity(&identity)
                .map_err(|e| StartError::Storage(e.to_string()))
        }
    }
}
