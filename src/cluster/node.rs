//! One pushgate node: openraft wired to the sled log, the in-memory state
//! machine, the gRPC network and the batcher. A single node is a cluster of
//! one; a cluster only adds peers, the network and forwarding.
//!
//! Writes go to the leader's batcher: locally when this node leads, else
//! forwarded over gRPC (once: the receiver never forwards again). Reads are
//! linearizable: the leader confirms its leadership (read index), this node
//! waits until it has applied up to that index, then the caller renders its
//! local state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{BasicNode, ServerState};
use parking_lot::RwLock;
use tokio::sync::watch;

use super::batcher::{Batcher, Clock, Committed};
use super::bugs::{self, Bug};
use super::contact;
use super::entry_format;
use super::error::{ReadError, StartError, WriteError};
use super::forwarding::{self, ForwardingSession};
use super::hand_over::{hand_over, Admitted, Leaving};
use super::identity::Identity;
use super::log_store::LogStore;
use super::membership::{self, MembershipError};
use super::network::{self, Network, Peers, MAX_MESSAGE_BYTES};
use super::rpc_codec;
use super::service::ReplicaService;
use super::stall::StallWatch;
use super::state_machine::{AppliedState, SharedState, StateMachine};
use super::stats::ClusterStats;
use super::status::{describe_failure, ClusterStatus, NodeStatus, StatusSource};
use super::types::{NodeId, Raft};
use crate::pb::pushgate::v1 as pb;
use crate::transport::{incoming, Os, Transport};

/// Everything a node needs to start.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// The address other nodes reach this node's cluster (gRPC) port at.
    pub advertise_addr: String,
    /// Where the cluster (gRPC) server listens; used only with peers.
    pub listen_addr: String,
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
    /// How long a write waits for a leader to be elected before 503.
    pub leader_wait: Duration,
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_every: u64,
    /// sled page cache size.
    pub cache_bytes: u64,
    /// Exit the process when a log write or sync has not finished after this
    /// long (`cluster::stall`); `None`: never.
    pub stall_timeout: Option<Duration>,
}

#[cfg(test)]
impl NodeConfig {
    /// A single node with small queues and cache, its data in `data_dir`, for unit tests.
    pub(crate) fn single_for_tests(data_dir: &std::path::Path) -> NodeConfig {
        NodeConfig {
            node_id: 1,
            advertise_addr: "127.0.0.1:0".into(),
            listen_addr: "127.0.0.1:0".into(),
            data_dir: data_dir.to_path_buf(),
            peers: Default::default(),
            queue_capacity: 16,
            queue_bytes: 1 << 20,
            write_timeout: Duration::from_secs(5),
            read_timeout: Duration::from_secs(2),
            leader_wait: Duration::from_secs(3),
            snapshot_every: 1000,
            cache_bytes: 1 << 20,
            stall_timeout: None,
        }
    }
}

/// A leader that has not heard from a quorum for a while answers 503 at
/// once: openraft 0.9 keeps a partitioned leader in the leader state.
#[derive(Clone)]
pub struct QuorumCheck {
    raft: Raft,
    max_silence: Duration,
    /// The log's storage calls in progress, and how long one may run before
    /// a leader of others hands leadership over (`None`: never).
    stalls: Arc<StallWatch>,
    hand_over_after: Option<Duration>,
    /// Set when the node is stopping (`cluster::hand_over`).
    leaving: Arc<Leaving>,
}

impl QuorumCheck {
    /// `check` for a proposal, counted until the returned guard is dropped,
    /// so that a leader that stops lets it commit first.
    pub fn admit(&self) -> Result<Admitted, WriteError> {
        let admitted = Admitted::count(&self.leaving);
        self.check()?;
        Ok(admitted)
    }

    fn leaving(&self) -> bool {
        self.leaving.requested()
    }

    /// Whether this node may propose now: its Raft core runs and, if it
    /// leads others, has heard from a quorum lately. Checked on every path
    /// into the batcher (local pushes and forwarded ones).
    pub fn check(&self) -> Result<(), WriteError> {
        let m = self.raft.metrics();
        let m = m.borrow();
        if let Some(failure) = describe_failure(&m.running_state) {
            return Err(WriteError::Failed(failure));
        }
        let membership = m.membership_config.membership();
        let others = membership.voter_ids().count() > 1;
        if self.leaving() && others {
            // Whatever its role now: the change was not made, and the node
            // asking retries with the next leader (named once known).
            let leader_id = m.current_leader.filter(|l| *l != m.id);
            return Err(WriteError::NotLeader {
                leader_id,
                leader_addr: leader_id.and_then(|l| membership.get_node(&l)).map(|n| n.addr.clone()),
            });
        }
        if m.state != ServerState::Leader || !others {
            return Ok(());
        }
        if let Some(stuck) = self.storage_stuck() {
            return Err(WriteError::NoQuorum(format!(
                "this node leads, but a write or sync of its Raft log has not finished for {:.1} s (its disk is \
                 stuck or very slow): it hands leadership over to another replica",
                stuck.as_secs_f64()
            )));
        }
        match m.millis_since_quorum_ack {
            Some(ms) if ms > self.max_silence.as_millis() as u64 => Err(WriteError::NoQuorum(format!(
                "this node leads but has not heard from a quorum for {ms} ms (it is cut off from the other replicas)"
            ))),
            _ => Ok(()),
        }
    }

    /// How long the oldest storage call has run, if that is past the point
    /// where a leader hands over: a leader whose log cannot be written commits
    /// nothing, but it may still heartbeat, and the others would follow it
    /// until `--storage.stall-timeout` stops the process.
    fn storage_stuck(&self) -> Option<Duration> {
        let bound = self.hand_over_after?;
        let running = self.stalls.oldest(std::time::Instant::now());
        (running >= bound).then_some(running)
    }
}

/// How long a storage call may run before a leader of others hands over:
/// a tenth of the stall timeout, at least a second (a sync that slow is no
/// longer a busy disk).
fn hand_over_after(stall_timeout: Option<Duration>) -> Option<Duration> {
    stall_timeout.map(|t| (t / 10).max(Duration::from_secs(1)))
}

/// What a leader that restarted without losing its leadership must have
/// applied before it serves a consistent read.
///
/// openraft 0.9 restores a node whose stored vote made it the leader as the
/// leader of the same term at start-up, without a new no-op entry, and with
/// the commit index it last stored (which is not synced on its own). Its
/// read index (`max(first entry of its term, committed)`) can then be below
/// entries that were committed, and acknowledged, before the restart, and a
/// read would miss them. Every entry in that leader's log at start-up is its
/// own (no other leader exists in its term) and will be committed, so reads
/// wait until those are applied. Once the term changes, a new leader's no-op
/// entry covers everything before it and the floor no longer applies.
#[derive(Clone, Copy, Debug)]
pub struct RestartFloor {
    /// The term of the vote stored at start-up.
    pub term: u64,
    /// The last log index at start-up.
    pub index: u64,
}

impl RestartFloor {
    /// The index a read must wait for while the term is still `current_term`.
    pub fn pending(&self, current_term: u64) -> Option<u64> {
        (current_term == self.term && self.index > 0).then_some(self.index)
    }
}

/// What a node without a membership says when it cannot serve.
const NOT_A_MEMBER_YET: &str = "this node is not a member of a cluster yet (the cluster is still forming, or the node \
                                waits to be added with `pushgate cluster add`; its log says which)";

pub struct ClusterNode {
    pub id: NodeId,
    raft: Raft,
    shared: Arc<SharedState>,
    stats: Arc<ClusterStats>,
    batcher: Batcher,
    config: NodeConfig,
    peers: Peers,
    identity: Arc<Identity>,
    quorum: QuorumCheck,
    restart_floor: RestartFloor,
    /// What the node reports about itself (`cluster::status`); also holds
    /// why a majority of the other members say it was removed
    /// (`watch_for_removal`).
    status: StatusSource,
    /// Numbers the mutations this process forwards (see `sessions`).
    forwarding: ForwardingSession,
    /// The cluster this node waits to be added to, as `bootstrap` found it;
    /// a membership change asked of the node meanwhile goes there.
    joining: parking_lot::Mutex<Option<JoinTarget>>,
    stop: watch::Sender<bool>,
}

/// An existing cluster that a node without membership waits to join: its
/// id and the members that answered the node's `Hello`.
#[derive(Clone, Debug)]
struct JoinTarget {
    cluster_id: String,
    members: Vec<(NodeId, String)>,
}

fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0)
    })
}

/// What a node takes from the world around it: wall-clock time (for push
/// timestamps, stamped by the leader) and sockets. Production uses the system
/// clock and the OS's TCP; the simulation injects its own.
#[derive(Clone)]
pub struct Environment {
    pub clock: Clock,
    pub transport: Arc<dyn Transport>,
}

impl Environment {
    /// The system clock and the OS's TCP, dialling peers from `source_ip`.
    pub fn os(source_ip: Option<std::net::IpAddr>) -> Self {
        Environment {
            clock: system_clock(),
            transport: Arc::new(Os::new(source_ip)),
        }
    }
}

/// Where a request for the leader goes now.
enum Route {
    Local,
    Remote(NodeId, String),
    NoLeader,
}

impl ClusterNode {
    /// Opens the data directory and starts Raft (and, with peers, the
    /// cluster server and the bootstrap checks).
    pub async fn start(config: NodeConfig, env: Environment) -> Result<Arc<Self>, StartError> {
        let Environment { clock, transport } = env;
        let stats = Arc::new(ClusterStats::default());
        super::durable_dir::create_dir_all(&config.data_dir)
            .map_err(|e| StartError::Storage(format!("cannot create {}: {e}", config.data_dir.display())))?;
        let log_store = LogStore::open(&config.data_dir.join("raft-log"), config.cache_bytes, stats.clone())
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let stalls = log_store.stall_watch();
        if let Some(bound) = config.stall_timeout {
            StallWatch::exit_process_on_stall(&stalls, bound)
                .map_err(|e| StartError::Storage(format!("cannot start the storage stall watchdog: {e}")))?;
        }
        let identity = Arc::new(
            Identity::load(log_store.clone(), config.node_id, &config.data_dir).map_err(StartError::Identity)?,
        );
        let state_machine = StateMachine::open(&config.data_dir.join("snapshots"), config.node_id, stats.clone())
            .map_err(StartError::Storage)?
            .releasing(log_store.recent_entries());
        let shared = state_machine.shared();

        let raft_config = openraft::Config {
            cluster_name: "pushgate".into(),
            heartbeat_interval: 100,
            election_timeout_min: 400,
            election_timeout_max: ELECTION_TIMEOUT_MAX,
            install_snapshot_timeout: 30_000,
            max_payload_entries: 64,
            // `add_learner` calls a learner caught up (and `cluster add` makes
            // it a voter) once it is this few entries behind. openraft's
            // default, 5000 entries (tens of thousands of pushes here), let a
            // node that still had a whole snapshot to install become a voter
            // at once.
            replication_lag_threshold: CAUGHT_UP_ENTRIES,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            // Entries kept behind a snapshot let a follower that lags a little
            // catch up from the log instead of a whole snapshot; a single node
            // has no follower, and the kept entries would only cost memory.
            max_in_snapshot_log_to_keep: if config.peers.is_empty() { 0 } else { 100 },
            purge_batch_size: 256,
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Raft(e.to_string()))?;

        use openraft::storage::RaftLogStorage;
        let mut probe = log_store.clone();
        let log_state = probe
            .get_log_state()
            .await
            .map_err(|e| StartError::Storage(e.to_string()))?;
        let applied = shared.state.read().last_applied;
        refuse_a_log_of_a_newer_release(&log_store, &log_state, applied).await?;
        let restart_floor = {
            let vote = probe
                .read_vote()
                .await
                .map_err(|e| StartError::Storage(e.to_string()))?;
            RestartFloor {
                term: vote.map_or(0, |v| v.leader_id().get_term()),
                index: log_state.last_log_id.map_or(0, |l| l.index),
            }
        };
        let peers = Peers::new(identity.clone(), transport.clone());
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network::new(peers.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        let quorum = QuorumCheck {
            raft: raft.clone(),
            max_silence: Duration::from_millis(1000),
            stalls: stalls.clone(),
            hand_over_after: hand_over_after(config.stall_timeout),
            leaving: Arc::default(),
        };
        let status = StatusSource {
            raft: raft.clone(),
            identity: identity.clone(),
            shared: shared.clone(),
            stats: stats.clone(),
            stalls,
            advertise_address: config.advertise_addr.clone(),
            removal: Arc::new(parking_lot::Mutex::new(None)),
            contact: peers.shared_contact(),
        };
        let batcher = Batcher::start(
            raft.clone(),
            quorum.clone(),
            config.queue_capacity,
            config.queue_bytes,
            config.write_timeout,
            clock,
            stats.clone(),
        );
        let (stop, _) = watch::channel(false);

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        if config.peers.is_empty() {
            if !initialized {
                identity
                    .join(&Identity::new_cluster_id())
                    .map_err(StartError::Identity)?;
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
                tracing::info!(node_id = config.node_id, "initialised a new single-node cluster");
            }
        } else {
            let listener = transport
                .bind(&config.listen_addr)
                .await
                .map_err(|e| StartError::Network(format!("cannot listen on {}: {e}", config.listen_addr)))?;
            tracing::info!(address = %config.listen_addr, advertise = %config.advertise_addr, "listening for cluster traffic");
            let service = ReplicaService {
                raft: raft.clone(),
                batcher: batcher.clone(),
                identity: identity.clone(),
                peers: peers.clone(),
                quorum: quorum.clone(),
                restart_floor,
                status: status.clone(),
            };
            let server = pb::replica_server::ReplicaServer::new(service)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            let mut stop_rx = stop.subscribe();
            tokio::spawn(async move {
                let result = tonic::transport::Server::builder()
                    .http2_keepalive_interval(Some(Duration::from_secs(1)))
                    .http2_keepalive_timeout(Some(Duration::from_secs(2)))
                    .add_service(server)
                    .serve_with_incoming_shutdown(incoming(listener), async move {
                        let _ = stop_rx.wait_for(|s| *s).await;
                    })
                    .await;
                if let Err(e) = result {
                    tracing::error!(error = %e, "cluster server stopped");
                }
            });
        }

        let forwarding = ForwardingSession::new(config.node_id, super::runtime::random_u128() as u64);
        let node = Arc::new(ClusterNode {
            id: config.node_id,
            raft,
            shared,
            stats,
            batcher,
            config,
            peers,
            identity,
            quorum,
            restart_floor,
            status,
            forwarding,
            joining: parking_lot::Mutex::new(None),
            stop,
        });
        if !node.config.peers.is_empty() {
            tokio::spawn(quorum_watchdog(
                node.raft.clone(),
                node.quorum.clone(),
                node.stop.subscribe(),
            ));
            tokio::spawn(watch_for_removal(
                node.raft.clone(),
                node.peers.clone(),
                node.identity.clone(),
                node.status.removal.clone(),
                node.stop.subscribe(),
            ));
        }
        tokio::spawn(contact::ask_voters_while_leaderless(
            node.raft.clone(),
            node.peers.clone(),
            node.stop.subscribe(),
        ));
        tokio::spawn(report_failure(node.raft.clone(), node.stop.subscribe()));
        tokio::spawn(count_leader_changes(
            node.raft.clone(),
            node.status.stats.clone(),
            node.stop.subscribe(),
        ));
        tokio::spawn(entry_format::adopt_newest_when_every_member_applies_it(
            node.status.clone(),
            node.peers.clone(),
            node.batcher.clone(),
            node.shared.clone(),
            node.stop.subscribe(),
        ));
        tokio::spawn(size_based_snapshots(
            node.raft.clone(),
            node.stats.clone(),
            node.stop.subscribe(),
        ));
        let bootstrapped = initialized && node.identity.has_cluster();
        if !node.config.peers.is_empty() && !bootstrapped {
            tokio::spawn(bootstrap(node.clone()));
        }
        Ok(node)
    }

    fn route(&self) -> Route {
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.state == ServerState::Leader {
            return Route::Local;
        }
        match m.current_leader {
            Some(id) if id == self.id => Route::Local,
            Some(id) => match m.membership_config.membership().get_node(&id) {
                Some(n) => Route::Remote(id, n.addr.clone()),
                None => Route::NoLeader,
            },
            None => Route::NoLeader,
        }
    }

    /// Proposes a mutation through the leader's batcher and waits for its
    /// outcome. Waits up to the leader wait for an election.
    ///
    /// A mutation forwarded to the leader carries a request id once the
    /// cluster applies them (`sessions`): when the leader's answer is lost
    /// (it crashed, or the connection broke), the mutation is sent again, to
    /// the next leader, and is applied at most once. Without request ids
    /// (before every member runs a release that applies them), nothing whose
    /// outcome is unknown is sent again.
    pub async fn write(&self, mutation: pb::Mutation) -> Result<Committed, WriteError> {
        // A node whose core stopped neither proposes nor forwards: it fails
        // its readiness check and answers like it, whatever its role was.
        match self.quorum.check() {
            Err(WriteError::NotLeader { .. }) | Ok(()) => {}
            Err(e) => return Err(e),
        }
        let mut mutation = Arc::new(mutation);
        let mut deadline = Instant::now() + self.config.leader_wait;
        let mut last;
        // Set once the mutation is forwarded with a request id.
        let mut ticket: Option<forwarding::Ticket> = None;
        // The first failure after which the mutation may have been applied.
        let mut uncertain: Option<WriteError> = None;
        loop {
            let result = match self.route() {
                Route::Local => match self.quorum.admit() {
                    Err(e @ WriteError::NotLeader { .. }) => Err(e),
                    Err(e) => return Err(uncertain.unwrap_or(e)),
                    Ok(_admitted) => {
                        if let Some(t) = &ticket {
                            Arc::make_mut(&mut mutation).request = Some(t.request_id());
                        }
                        self.batcher.submit(mutation.clone()).await
                    }
                },
                Route::Remote(id, addr) => {
                    let log_format = self.shared.log_entry_format.load(std::sync::atomic::Ordering::Acquire);
                    if ticket.is_none() && log_format >= super::codec::REQUEST_IDS_FORMAT {
                        ticket = Some(self.forwarding.ticket());
                    }
                    let mut m = (*mutation).clone();
                    m.request = ticket.as_ref().map(forwarding::Ticket::request_id);
                    self.forward(id, &addr, m).await
                }
                Route::NoLeader => Err(WriteError::NoLeader),
            };
            match result {
                Err(e @ (WriteError::NotLeader { .. } | WriteError::NoLeader)) => last = e,
                // Sent, and the answer lost: with a request id, sent again.
                Err(e @ (WriteError::Uncertain(_) | WriteError::Timeout(_) | WriteError::Stopped(_)))
                    if ticket.is_some() && self.failure().is_none() =>
                {
                    tracing::info!(error = %e, "the leader's answer to a forwarded push was lost; it is sent again to the next leader (applied at most once)");
                    if uncertain.is_none() {
                        // Wait for the election this failure may start.
                        deadline = deadline.max(Instant::now() + self.config.leader_wait);
                    }
                    ClusterStats::add(&self.stats.forwards_repeated, 1);
                    uncertain.get_or_insert(e.clone());
                    last = e;
                }
                Ok(committed) => return Ok(committed),
                // A definite failure of a repeat does not undo the first send.
                Err(e) => return Err(uncertain.unwrap_or(e)),
            }
            // Waiting for a leader is for elections: a node cut off from the
            // others answers at once.
            let cut_off = self.cut_off();
            if Instant::now() >= deadline || cut_off.is_some() {
                if let Some(e) = uncertain {
                    return Err(e);
                }
                if let Some(why) = self.not_a_member() {
                    return Err(WriteError::NotMember(why));
                }
                if let Some(why) = cut_off {
                    return Err(WriteError::NoQuorum(why));
                }
                return Err(match last {
                    WriteError::NotLeader { .. } => WriteError::NoLeader,
                    other => other,
                });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn forward(&self, leader: NodeId, addr: &str, mutation: pb::Mutation) -> Result<Committed, WriteError> {
        let mut client = self
            .peers
            .client(addr)
            .map_err(|e| WriteError::Stopped(e.to_string()))?;
        let req = self.peers.request(
            pb::ForwardRequest {
                mutation: Some(mutation),
            },
            self.config.write_timeout,
        );
        match client.forward(req).await {
            Ok(resp) => {
                self.peers.contact().heard_from(leader);
                let resp = resp.into_inner();
                match resp.result {
                    Some(pb::forward_response::Result::Outcome(o)) => Ok(Committed {
                        outcome: rpc_codec::outcome_from_pb(o),
                        index: resp.index,
                    }),
                    Some(pb::forward_response::Result::Failure(f)) => Err(failure_from_pb(f)),
                    None => Err(WriteError::Stopped("the leader sent an empty answer".into())),
                }
            }
            // Not connected at all: nothing was sent, the change was not made.
            Err(s) if network::never_sent(&s) => {
                tracing::debug!(leader, error = %network::describe_status(&s), "leader unreachable");
                Err(WriteError::NoLeader)
            }
            Err(s) => {
                let why = network::describe_status(&s);
                tracing::warn!(leader, error = %why, "forwarding a push to the leader failed; its outcome is unknown");
                Err(WriteError::Uncertain(format!(
                    "forwarding to the leader (node {leader}) failed: {why}"
                )))
            }
        }
    }

    /// Waits until this node can serve a linearizable read; returns the log
    /// index the read reflects (everything committed before the call).
    ///
    /// A follower asks its leader for a read index. Asking changes nothing,
    /// so a call that fails (the leader crashed, or is being replaced) is
    /// made again, to the next leader once one is elected, until the read
    /// timeout: a leader's crash does not fail the scrapes of the others,
    /// and a node cut off still answers 503 within the timeout.
    pub async fn linearizable_read(&self) -> Result<u64, ReadError> {
        if let Some(failure) = self.failure() {
            return Err(ReadError::Stopped(format!("{failure}; restart it")));
        }
        let timeout = self.config.read_timeout;
        let deadline = Instant::now() + timeout;
        let mut last = ReadError::Timeout(timeout);
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                if let Some(why) = self.not_a_member() {
                    return Err(ReadError::NotMember(why));
                }
                return Err(match last {
                    e @ ReadError::LeaderUnreachable { .. } => e,
                    _ => ReadError::Timeout(timeout),
                });
            }
            if bugs::active(Bug::StaleFollowerReads) && !matches!(self.route(), Route::Local) {
                return Ok(self.applied_index());
            }
            let attempt = match self.route() {
                Route::Local => {
                    if let Err(e) = self.quorum.check() {
                        return Err(ReadError::QuorumLost(e.to_string()));
                    }
                    match tokio::time::timeout(remaining, self.raft.ensure_linearizable()).await {
                        Err(_) => return Err(ReadError::Timeout(timeout)),
                        Ok(Ok(_)) => return self.past_restart_floor(deadline, timeout).await,
                        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                            Err(ReadError::NoLeader)
                        }
                        Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                            return Err(ReadError::NoQuorum)
                        }
                        Ok(Err(RaftError::Fatal(f))) => return Err(ReadError::Stopped(f.to_string())),
                    }
                }
                Route::Remote(leader, addr) => match self.remote_read_index(leader, &addr, remaining).await {
                    Ok(index) => {
                        let wait = self.raft.wait(Some(deadline.saturating_duration_since(Instant::now())));
                        return match wait.applied_index_at_least(Some(index), "linearizable read").await {
                            Ok(_) => Ok(self.applied_index().max(index)),
                            Err(_) => Err(ReadError::Timeout(timeout)),
                        };
                    }
                    Err(e) => Err(e),
                },
                Route::NoLeader => Err(ReadError::NoLeader),
            };
            match attempt {
                Err(e @ (ReadError::NoLeader | ReadError::LeaderUnreachable { .. })) => {
                    // Asking again is for elections: a node cut off from the
                    // others answers at once.
                    if let Some(why) = self.cut_off() {
                        return Err(match self.not_a_member() {
                            Some(not_member) => ReadError::NotMember(not_member),
                            None => ReadError::QuorumLost(why),
                        });
                    }
                    last = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
                Ok(i) => return Ok(i),
            }
        }
    }

    /// On a leader that confirmed its leadership: waits until the restart
    /// floor (if it still applies) is applied too.
    async fn past_restart_floor(&self, deadline: Instant, timeout: Duration) -> Result<u64, ReadError> {
        let term = self.raft.metrics().borrow().current_term;
        if let Some(floor) = self.restart_floor.pending(term) {
            let wait = self.raft.wait(Some(deadline.saturating_duration_since(Instant::now())));
            if wait.applied_index_at_least(Some(floor), "restart floor").await.is_err() {
                return Err(ReadError::Timeout(timeout));
            }
        }
        Ok(self.applied_index())
    }

    /// One read-index call to the leader, given up after `timeout` (at most
    /// 1.5 s, so a leader that does not answer is asked again, or its
    /// successor is, within the read timeout).
    async fn remote_read_index(&self, leader: NodeId, addr: &str, timeout: Duration) -> Result<u64, ReadError> {
        let mut client = self.peers.client(addr).map_err(|e| ReadError::Stopped(e.to_string()))?;
        let timeout = timeout.min(Duration::from_millis(1500));
        match client
            .read_index(self.peers.request(pb::ReadIndexRequest {}, timeout))
            .await
        {
            Ok(r) => {
                self.peers.contact().heard_from(leader);
                Ok(r.into_inner().read_index)
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => Err(ReadError::NoLeader),
            Err(s) if s.code() == tonic::Code::PermissionDenied => Err(ReadError::NotMember(s.message().to_string())),
            Err(s) => {
                let why = network::describe_status(&s);
                tracing::debug!(leader, error = %why, "read index from the leader failed; asking again");
                Err(ReadError::LeaderUnreachable {
                    leader,
                    after: self.config.read_timeout,
                    why,
                })
            }
        }
    }

    /// Adds or removes a member (on the leader, or forwarded to it). Like a
    /// push, it waits up to the leader wait for a leader, and is never sent
    /// twice once it may have reached one.
    pub async fn change_members(
        &self,
        change: pb::change_members_request::Change,
    ) -> Result<Vec<NodeId>, MembershipError> {
        let deadline = Instant::now() + self.config.leader_wait;
        loop {
            let result = match self.route() {
                Route::Local => match self.quorum.check() {
                    Err(e) => return Err(MembershipError::Unavailable(e.to_string())),
                    Ok(()) => membership::apply_locally(&self.raft, &self.peers, &self.identity, change.clone()).await,
                },
                Route::Remote(leader, addr) => self.forward_change(leader, &addr, change.clone()).await,
                Route::NoLeader => match self.join_target() {
                    Some(target) => self.forward_change_to_cluster(&target, change.clone()).await,
                    None => Err(MembershipError::Unavailable(
                        "no leader is reachable (an election is in progress or this node cannot reach a quorum); \
                         the change was not made, retry later"
                            .into(),
                    )),
                },
            };
            match result {
                Err(e) if e.retryable() && Instant::now() < deadline => {
                    tracing::debug!(error = %e, "membership change: waiting for a leader");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(MembershipError::NotLeader) if self.join_target().is_some() => {
                    return Err(MembershipError::Unavailable(
                        "this node waits to be added to a cluster, and none of that cluster's members it reaches \
                         took the change in time (no leader: an election is in progress?); the change was not \
                         made, retry later"
                            .into(),
                    ))
                }
                // The leader's own reason (e.g. the new node is unreachable).
                Err(e) if e.retryable() && self.join_target().is_some() => return Err(e),
                Err(e) if e.retryable() => {
                    return Err(match (self.not_a_member(), e) {
                        (Some(why), _) => {
                            MembershipError::Unavailable(format!("{why}; the change was not made, ask a member"))
                        }
                        (None, MembershipError::NotLeader) => MembershipError::Unavailable(
                            "no leader took the change in time (an election is in progress or this node cannot \
                             reach a quorum); the change was not made, retry later"
                                .into(),
                        ),
                        (None, e) => e,
                    })
                }
                other => return other,
            }
        }
    }

    async fn forward_change(
        &self,
        leader: NodeId,
        addr: &str,
        change: pb::change_members_request::Change,
    ) -> Result<Vec<NodeId>, MembershipError> {
        let mut client = self
            .peers
            .client(addr)
            .map_err(|e| MembershipError::Unavailable(e.to_string()))?;
        // Adding a node waits until it has caught up: allow for a snapshot.
        let req = self.peers.request(
            pb::ChangeMembersRequest { change: Some(change) },
            Duration::from_secs(120),
        );
        client
            .change_members(req)
            .await
            .map(|r| r.into_inner().voters)
            .map_err(|s| MembershipError::from_status(leader, &s))
    }

    /// The cluster this node waits to join, while it has no membership of
    /// its own.
    fn join_target(&self) -> Option<JoinTarget> {
        let target = self.joining.lock().clone()?;
        self.has_no_membership().then_some(target)
    }

    /// Sends a membership change asked of a node that waits to be added
    /// (a StatefulSet's new pod: `kubectl exec` into it and add it) to the
    /// members of the cluster it waits for, until the leader among them
    /// carries it out. A member that is not the leader refuses it before
    /// doing anything; one that cannot be reached is skipped. Nothing is
    /// sent again once a leader may have taken it.
    async fn forward_change_to_cluster(
        &self,
        target: &JoinTarget,
        change: pb::change_members_request::Change,
    ) -> Result<Vec<NodeId>, MembershipError> {
        let Ok(cluster_id) = target.cluster_id.parse::<tonic::metadata::AsciiMetadataValue>() else {
            return Err(MembershipError::Unavailable(format!(
                "the cluster id {:?} its members gave cannot be sent; the change was not made",
                target.cluster_id
            )));
        };
        let mut last = MembershipError::NotLeader;
        for (member, addr) in &target.members {
            let mut client = match self.peers.client(addr) {
                Ok(c) => c,
                Err(_) => continue,
            };
            let mut req = self.peers.request(
                pb::ChangeMembersRequest {
                    change: Some(change.clone()),
                },
                Duration::from_secs(120),
            );
            req.metadata_mut()
                .insert(super::network::CLUSTER_ID_HEADER, cluster_id.clone());
            match client.change_members(req).await {
                Ok(r) => {
                    tracing::info!(
                        via = member,
                        "membership change made by the cluster this node waits to join"
                    );
                    return Ok(r.into_inner().voters);
                }
                Err(s) => match MembershipError::from_status(*member, &s) {
                    MembershipError::NotLeader => {}
                    e if e.retryable() => {
                        tracing::debug!(member, error = %e, "membership change: not taken by this member");
                        last = e;
                    }
                    e => return Err(e),
                },
            }
        }
        Err(last)
    }

    /// Why this node, which knows no leader, is not a member, if it is not:
    /// it has no membership at all (the cluster is still forming, or it waits
    /// to be added, or lost its disk), or a majority of the other members say
    /// it was removed (`watch_for_removal`). Said when a request times out.
    fn not_a_member(&self) -> Option<String> {
        if self.has_no_membership() {
            return Some(NOT_A_MEMBER_YET.into());
        }
        self.status.removal.lock().clone()
    }

    /// Why this node, which does not lead, is cut off from the cluster, if it
    /// is: for a while it has heard from neither its leader nor a quorum
    /// (`contact`). A leader's own check is `QuorumCheck`.
    fn cut_off(&self) -> Option<String> {
        contact::cut_off(self.peers.contact(), &self.raft.metrics().borrow())
    }

    /// Whether this node knows no membership at all: the cluster is still
    /// forming, or the node waits to be added, or it lost its disk.
    fn has_no_membership(&self) -> bool {
        let metrics = self.raft.metrics();
        let empty = metrics.borrow().membership_config.membership().nodes().next().is_none();
        empty
    }

    /// The applied state (store, applied log id, membership), for rendering.
    pub fn applied_state(&self) -> Arc<RwLock<AppliedState>> {
        self.shared.state.clone()
    }

    pub fn applied_index(&self) -> u64 {
        self.shared.applied_index.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn stats(&self) -> &ClusterStats {
        &self.stats
    }

    /// Why this node stopped working for good, if it did. openraft ends its
    /// core on a storage failure (a full or failing disk) and on a panic;
    /// nothing but a restart brings it back, so the node then refuses
    /// everything that needs the core at once, without waiting for timeouts.
    /// `None` while it runs and after a requested shutdown.
    pub fn failure(&self) -> Option<String> {
        describe_failure(&self.raft.metrics().borrow().running_state)
    }

    pub fn status(&self) -> NodeStatus {
        self.status.status()
    }

    /// This node's status and every member's (`cluster::status`).
    pub async fn cluster_status(&self) -> ClusterStatus {
        self.status.cluster_status(&self.peers).await
    }

    /// Stops Raft and the cluster server. A leader of others hands over
    /// first (`cluster::hand_over`); a proposal still in flight after that
    /// gets an error.
    pub async fn shutdown(&self) {
        hand_over(
            &self.raft,
            self.id,
            &self.quorum.leaving,
            &self.peers,
            self.config.write_timeout,
        )
        .await;
        let _ = self.stop.send(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not shut down cleanly");
        }
    }
}

/// How far behind the leader's log a learner may be when it is promoted to
/// voter: four append calls' worth.
pub const CAUGHT_UP_ENTRIES: u64 = 256;

/// openraft's maximum election timeout, in ms; also its leader lease (see
/// `hand_over`).
pub const ELECTION_TIMEOUT_MAX: u64 = 800;

fn failure_from_pb(f: pb::WriteFailure) -> WriteError {
    use pb::write_failure::Kind;
    match Kind::try_from(f.kind).unwrap_or(Kind::Unspecified) {
        Kind::QueueFull => WriteError::RefusedByLeader(f.message),
        Kind::NotLeader => WriteError::NotLeader {
            leader_id: (f.leader_id != 0).then_some(f.leader_id),
            leader_addr: (!f.leader_addr.is_empty()).then_some(f.leader_addr),
        },
        Kind::NoLeader => WriteError::NoLeader,
        Kind::NotMember => WriteError::NotMember(f.message),
        Kind::Timeout | Kind::Stopped | Kind::Unspecified => WriteError::Uncertain(f.message),
    }
}

/// Refuses to start on a log whose entries after `applied` include one this
/// release cannot apply, with the reason and what to do
/// (`codec::NewerFormat`). Without this check the Raft core would stop at
/// that entry either during start-up (the process exits) or just after (it
/// stays up, stopped), depending on timing. Reads a few hundred entries at a
/// time: the tail behind the last snapshot can be long.
async fn refuse_a_log_of_a_newer_release(
    log: &LogStore,
    state: &openraft::storage::LogState<super::types::TypeConfig>,
    applied: Option<super::types::LogId>,
) -> Result<(), StartError> {
    use openraft::storage::RaftLogReader;
    const STEP: u64 = 256;
    let Some(last) = state.last_log_id.map(|l| l.index) else {
        return Ok(());
    };
    let mut reader = log.clone();
    let mut first = applied.max(state.last_purged_log_id).map_or(0, |l| l.index + 1);
    while first <= last {
        let end = last.min(first.saturating_add(STEP - 1));
        let entries = reader
            .try_get_log_entries(first..=end)
            .await
            .map_err(|e| StartError::Storage(e.to_string()))?;
        if let Some(newer) = super::state_machine::first_entry_of_a_newer_format(&entries) {
            return Err(StartError::NewerFormat(newer.to_string()));
        }
        first = end + 1;
    }
    Ok(())
}

/// What a stopped Raft core means for an operator; `None` if it runs or was
/// shut down on request.
/// A node removed from the cluster while it was cut off gets no entry that
/// says so, and no leader answers it again. While it knows no leader, it asks
/// the other nodes of its membership (`Hello`) whether they still count it as
/// a member; when a majority of them do not, its 503s say so instead of "no
/// leader is reachable". Only messages depend on this: the node serves again
/// as soon as it has a leader.
async fn watch_for_removal(
    raft: Raft,
    peers: Peers,
    identity: Arc<Identity>,
    removal: Arc<parking_lot::Mutex<Option<String>>>,
    mut stop: watch::Receiver<bool>,
) {
    let me = identity.node_id;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (others, leader) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let others: Vec<(NodeId, String)> = m
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != me)
                .map(|(id, n)| (*id, n.addr.clone()))
                .collect();
            (others, m.current_leader)
        };
        if leader.is_some() || others.is_empty() {
            *removal.lock() = None;
            continue;
        }
        let cluster = identity.cluster_id();
        let mut without_me = Vec::new();
        let mut their_members = Vec::new();
        for (id, addr) in &others {
            let Ok(mut client) = peers.client(addr) else { continue };
            let request = peers.request(pb::HelloRequest { from_node_id: me }, Duration::from_millis(500));
            if let Ok(answer) = client.hello(request).await {
                let answer = answer.into_inner();
                if answer.cluster_id == cluster && answer.initialized && !answer.members.contains(&me) {
                    without_me.push(id.to_string());
                    their_members = answer.members;
                }
            }
        }
        let removed = (without_me.len() * 2 > others.len()).then(|| {
            let members: Vec<String> = their_members.iter().map(u64::to_string).collect();
            format!(
                "nodes {} say node {me} is no longer a member of the cluster (their members: {}): it was removed; \
                 stop it (see the README, \"Replace a node that is cut off\")",
                without_me.join(", "),
                members.join(", ")
            )
        });
        if removed.is_some() && removal.lock().is_none() {
            tracing::warn!(
                nodes = %without_me.join(","),
                "a majority of the other members say this node was removed from the cluster; stop it"
            );
        }
        *removal.lock() = removed;
    }
}

/// Logs, once, that the Raft core stopped for good and what to do about it:
/// the requests that fail afterwards only say that the node has stopped.
async fn report_failure(raft: Raft, mut stop: watch::Receiver<bool>) {
    let mut metrics = raft.metrics();
    loop {
        if let Some(failure) = describe_failure(&metrics.borrow().running_state) {
            tracing::error!(
                %failure,
                "this node stopped working: it refuses pushes and consistent reads, fails /-/ready and /-/healthy, \
                 and keeps serving stale reads; fix the cause it names (free disk space, replace a failing disk, upgrade \
                 it) and restart it"
            );
            return;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Counts the leaders this node learns of (`pushgate_raft_leader_changes_seen_total`):
/// each time it knows a leader for a term it knew none in. A leader elected
/// again in a new term counts, as etcd's counter does: writes waited for that
/// election all the same. Leaders that come and go between two looks at the
/// metrics are missed, as etcd misses leaders it never heard from.
async fn count_leader_changes(raft: Raft, stats: Arc<ClusterStats>, mut stop: watch::Receiver<bool>) {
    let mut metrics = raft.metrics();
    let mut last_seen = None;
    loop {
        let seen = {
            let m = metrics.borrow_and_update();
            m.current_leader.map(|leader| (m.current_term, leader))
        };
        if seen.is_some() && seen != last_seen {
            ClusterStats::add(&stats.leader_changes, 1);
            last_seen = seen;
        }
        tokio::select! {
            changed = metrics.changed() => if changed.is_err() { return },
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Keeps the leader's `millis_since_quorum_ack` fresh. openraft 0.9 only
/// recomputes it when its core loop wakes up, and a leader cut off from every
/// follower may sleep with a stale value; an explicit heartbeat wakes it.
/// Also silences a leader whose log is stuck, until the log answers again.
async fn quorum_watchdog(raft: Raft, quorum: QuorumCheck, mut stop: watch::Receiver<bool>) {
    // Whether this task turned openraft's heartbeats off.
    let mut paused = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (leader, others) = {
            let m = raft.metrics();
            let m = m.borrow();
            (
                m.state == ServerState::Leader,
                m.membership_config.membership().voter_ids().count() > 1,
            )
        };
        // A leader whose log is stuck goes quiet: its batcher proposes
        // nothing (QuorumCheck), and without heartbeats the followers' election
        // timers run out and they elect a leader that can write.
        // A leader that is stopping stays quiet too (`ClusterNode::hand_over`).
        if leader && others && quorum.leaving() {
            continue;
        }
        if let (true, true, Some(stuck)) = (leader, others, quorum.storage_stuck()) {
            if !paused {
                raft.runtime_config().heartbeat(false);
                paused = true;
                tracing::warn!(
                    stuck_seconds = stuck.as_secs_f64(),
                    "a write or sync of the Raft log is stuck: this leader stops heartbeating so that another replica \
                     takes over"
                );
            }
            continue;
        }
        if paused {
            raft.runtime_config().heartbeat(true);
            paused = false;
            tracing::info!("the Raft log answers again: heartbeats resumed");
        }
        // Bounded: a core blocked in a stuck storage call does not take the
        // trigger, and this loop must go on to notice that and hand over.
        if leader {
            if let Ok(Err(_)) = tokio::time::timeout(Duration::from_millis(200), raft.trigger().heartbeat()).await {
                return;
            }
        }
    }
}

/// The log may grow to the size of the newest snapshot before the next one is
/// taken, but a snapshot is never forced for less than this.
const MIN_LOG_BYTES_PER_SNAPSHOT: u64 = 1 << 20;

/// How long a requested snapshot may take before it is requested again.
const SNAPSHOT_REQUEST_PATIENCE: Duration = Duration::from_secs(30);

/// Takes a snapshot when the log since the last one outweighs the snapshot
/// itself (at least [`MIN_LOG_BYTES_PER_SNAPSHOT`]), on top of openraft's
/// count-based policy (`--storage.snapshot-every`).
///
/// Entries that are not yet behind a snapshot stay in the log store's cache
/// and are replayed on restart; counting entries alone lets a busy node (large
/// batches) hold far more than its state in log. With this rule the log costs
/// at most about one more store's worth of memory, disk and restart time, a
/// small store is snapshotted often and cheaply, and writing snapshots costs
/// at most the log's own write volume again.
async fn size_based_snapshots(raft: Raft, stats: Arc<ClusterStats>, mut stop: watch::Receiver<bool>) {
    let mut requested: Option<(u64, tokio::time::Instant)> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let done = ClusterStats::get(&stats.snapshots_built) + ClusterStats::get(&stats.snapshots_installed);
        if let Some((at, when)) = requested {
            if done == at && when.elapsed() < SNAPSHOT_REQUEST_PATIENCE {
                continue;
            }
            requested = None;
        }
        let limit = ClusterStats::get(&stats.snapshot_bytes).max(MIN_LOG_BYTES_PER_SNAPSHOT);
        let log_bytes = stats.log_bytes_since_snapshot();
        if log_bytes > limit {
            tracing::debug!(log_bytes, limit, "log outgrew the snapshot");
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
            requested = Some((done, tokio::time::Instant::now()));
        }
    }
}

/// Safe bootstrap of a cluster from a fixed peer list, in any start order.
///
/// * The node with the lowest id bootstraps, and only when every peer
///   answers and none has Raft state: it gives every peer the new cluster id
///   (`Adopt`), then initialises Raft with all peers as voters.
/// * A node with an empty data directory that finds itself listed as a
///   member of an existing cluster has lost its disk: it refuses to take
///   part (it could lose acknowledged data or elect a second leader) and says
///   how to replace it.
/// * A node not listed as a member (of the existing cluster, or of its own
///   peer list: a StatefulSet scaled up) waits to be added (`pushgate cluster
///   add`); it never bootstraps.
async fn bootstrap(node: Arc<ClusterNode>) {
    let me = node.id;
    let others: Vec<(NodeId, String)> = node
        .config
        .peers
        .iter()
        .filter(|(id, _)| **id != me)
        .map(|(id, a)| (*id, a.clone()))
        .collect();
    let lowest = node.config.peers.keys().next().copied() == Some(me);
    let mut said = String::new();
    let mut say = |msg: String, error: bool| {
        if msg != said {
            if error {
                tracing::error!("{msg}");
            } else {
                tracing::info!("{msg}");
            }
            said = msg;
        }
    };
    loop {
        if *node.stop.borrow() {
            return;
        }
        let initialized = node.raft.is_initialized().await.unwrap_or(false);
        if initialized && node.identity.has_cluster() {
            *node.joining.lock() = None;
            return;
        }
        let mut answers = Vec::new();
        for (id, addr) in &others {
            if let Ok(mut client) = node.peers.client(addr) {
                let req = node
                    .peers
                    .request(pb::HelloRequest { from_node_id: me }, Duration::from_secs(1));
                if let Ok(r) = client.hello(req).await {
                    answers.push((*id, addr.clone(), r.into_inner()));
                }
            }
        }
        let existing = answers.iter().find(|(_, _, h)| h.initialized);
        let mine = node.identity.cluster_id();
        *node.joining.lock() = existing.map(|(_, _, h)| JoinTarget {
            cluster_id: h.cluster_id.clone(),
            members: answers
                .iter()
                .filter(|(_, _, a)| a.initialized && a.cluster_id == h.cluster_id)
                .map(|(id, addr, _)| (*id, addr.clone()))
                .collect(),
        });
        match existing {
            Some((_, _, h)) if !mine.is_empty() && h.cluster_id == mine => {
                say(
                    format!("node {me} belongs to cluster {mine}; waiting for its leader"),
                    false,
                );
            }
            Some((_, _, h)) if h.members.contains(&me) => {
                say(
                    format!(
                        "node {me} is listed as a member of cluster {} but its data directory {} has no Raft state: \
                         its disk was lost or replaced. It will not rejoin as the member it was (that could lose \
                         acknowledged pushes or elect two leaders). Replace it: run `pushgate cluster remove --node-id {me}` \
                         against a healthy node; once removed, node {me} is new to the cluster and this node waits to be \
                         added: then run `pushgate cluster add --node-id {me} --address {}` (or `pushgate cluster add` \
                         against this node)",
                        h.cluster_id,
                        node.config.data_dir.display(),
                        node.config.advertise_addr
                    ),
                    true,
                );
            }
            Some((_, _, h)) => {
                say(
                    format!(
                        "node {me} is not a member of cluster {}; waiting to be added: \
                         `pushgate cluster add --node-id {me} --address {}`",
                        h.cluster_id, node.config.advertise_addr
                    ),
                    false,
                );
            }
            None if answers.len() == others.len() && lowest => {
                let cluster_id = if mine.is_empty() {
                    Identity::new_cluster_id()
                } else {
                    mine.clone()
                };
                let foreign = answers
                    .iter()
                    .any(|(_, _, h)| !h.cluster_id.is_empty() && h.cluster_id != cluster_id);
                if foreign {
                    say(
                        "peers already carry another cluster id; not bootstrapping (check --cluster.peers)".into(),
                        true,
                    );
                } else if let Err(e) = node.identity.join(&cluster_id) {
                    say(format!("cannot record the cluster id: {e}"), true);
                } else {
                    let mut adopted = true;
                    for (id, addr, _) in &answers {
                        let req = node.peers.request(
                            pb::AdoptRequest {
                                cluster_id: cluster_id.clone(),
                            },
                            Duration::from_secs(2),
                        );
                        let ok = match node.peers.client(addr) {
                            Ok(mut c) => c.adopt(req).await.is_ok(),
                            Err(_) => false,
                        };
                        if !ok {
                            say(format!("peer {id} did not take the cluster id yet; retrying"), false);
                            adopted = false;
                            break;
                        }
                    }
                    if adopted {
                        let members: BTreeMap<NodeId, BasicNode> = node
                            .config
                            .peers
                            .iter()
                            .map(|(id, a)| (*id, BasicNode { addr: a.clone() }))
                            .collect();
                        match node.raft.initialize(members).await {
                            Ok(()) => {
                                tracing::info!(cluster_id = %cluster_id, peers = ?node.config.peers, "bootstrapped a new cluster");
                                return;
                            }
                            Err(e) => say(format!("bootstrap failed: {e}"), true),
                        }
                    }
                }
            }
            None if answers.len() == others.len() => {
                say(
                    format!(
                        "all peers are up and empty; waiting for node {:?} to bootstrap the cluster",
                        node.config.peers.keys().next()
                    ),
                    false,
                );
            }
            None => {
                say(
                    format!(
                        "waiting for every peer before bootstrapping a new cluster ({} of {} answered)",
                        answers.len(),
                        others.len()
                    ),
                    false,
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leader_hands_over_after_a_tenth_of_the_stall_timeout_and_never_within_a_second() {
        assert_eq!(
            hand_over_after(Some(Duration::from_secs(30))),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            hand_over_after(Some(Duration::from_secs(5))),
            Some(Duration::from_secs(1))
        );
        assert_eq!(hand_over_after(None), None, "no stall timeout: no hand-over either");
    }

    /// A node whose log holds an entry a newer release wrote refuses to
    /// start, every time, saying which entry and what to do; it does not
    /// come up and stop later depending on when Raft reaches the entry.
    #[tokio::test]
    async fn a_log_written_by_a_newer_release_refuses_start_up_naming_the_entry() {
        use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
        use openraft::{CommittedLeaderId, EntryPayload};
        use prost::Message;

        use crate::cluster::codec::{ENTRY_FORMAT_VERSION, FORMAT_VERSION};
        use crate::cluster::log_store::tests::{reopen, ONE_LOG_AT_A_TIME};
        use crate::cluster::types::{Entry, LogId, LogPayload, Membership};

        let _one = ONE_LOG_AT_A_TIME.lock().await;
        crate::blocking::run_inline_on_this_thread();
        let dir = tempfile::tempdir().expect("temp dir");
        let batch = |index: u64, format_version: u32| Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(LogPayload::from_bytes(
                pb::Batch {
                    format_version,
                    time_unix_nanos: 1_700_000_000_000_000_000,
                    mutations: Vec::new(),
                }
                .encode_to_vec()
                .into(),
            )),
        };
        {
            let mut log = reopen(&dir.path().join("raft-log")).await;
            log.save_identity(&pb::NodeIdentity {
                format_version: FORMAT_VERSION,
                node_id: 1,
                cluster_id: "c".into(),
            })
            .expect("identity");
            let nodes = BTreeMap::from([(1, BasicNode::new("127.0.0.1:0"))]);
            let membership = Entry {
                log_id: LogId::new(CommittedLeaderId::new(0, 0), 0),
                payload: EntryPayload::Membership(Membership::new(vec![[1].into()], nodes)),
            };
            // Entry 2 comes after the commit point: a single node would commit it
            // as soon as it elected itself.
            let entries = [membership, batch(1, 1), batch(2, ENTRY_FORMAT_VERSION + 1)];
            log.blocking_append(entries).await.expect("append");
            log.save_committed(Some(LogId::new(CommittedLeaderId::new(1, 1), 1)))
                .await
                .expect("commit");
        }
        let mut refusal = None;
        for _ in 0..200 {
            match ClusterNode::start(NodeConfig::single_for_tests(dir.path()), Environment::os(None)).await {
                // The test's own handle has not let go of the log yet.
                Err(StartError::Storage(_)) => {
                    crossbeam_epoch::pin().flush();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => {
                    refusal = Some(e);
                    break;
                }
                Ok(_) => panic!("a node started on a log holding an entry of a newer format"),
            }
        }
        let refusal = refusal.expect("the log stayed locked");
        assert!(matches!(refusal, StartError::NewerFormat(_)), "{refusal:?}");
        let said = refusal.to_string();
        assert!(
            said.contains(&format!(
                "log entry 2 was written by a newer pushgate (format {};",
                ENTRY_FORMAT_VERSION + 1
            )) && said.contains("run the leader's release on it"),
            "{said}"
        );
    }
}
