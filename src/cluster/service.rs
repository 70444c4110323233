//! The server side of the replica protocol: Raft RPCs into openraft, client
//! mutations forwarded by followers into the leader's batcher, read index,
//! membership changes, and the handshake used for safe bootstrap.

use std::io::Cursor;
use std::sync::Arc;

use futures::StreamExt;
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::Snapshot;
use tonic::{Request, Response, Status, Streaming};

use super::batcher::Batcher;
use super::error::WriteError;
use super::identity::Identity;
use super::membership::{self, MembershipError};
use super::network::{CLUSTER_ID_HEADER, NODE_ID_HEADER};
use super::rpc_codec;
use super::types::{NodeId, Raft};
use crate::pb::pushgate::v1 as pb;
use crate::pb::pushgate::v1::replica_server::Replica;

pub struct ReplicaService {
    pub raft: Raft,
    pub batcher: Batcher,
    pub identity: Arc<Identity>,
    pub peers: super::network::Peers,
    pub quorum: super::node::QuorumCheck,
    pub restart_floor: super::node::RestartFloor,
    pub status: super::status::StatusSource,
}

impl ReplicaService {
    /// Raft traffic is only taken from this node's own cluster; a call that
    /// is counts as hearing from its sender (`contact`).
    fn check_cluster<T>(&self, req: &Request<T>) -> Result<(), Status> {
        let theirs = req
            .metadata()
            .get(CLUSTER_ID_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let mine = self.identity.cluster_id();
        if mine.is_empty() {
            return Err(Status::failed_precondition(format!(
                "node {} belongs to no cluster yet (empty data directory); see its logs",
                self.identity.node_id
            )));
        }
        if theirs != mine {
            return Err(Status::failed_precondition(format!(
                "node {} belongs to cluster {mine}, not {theirs}",
                self.identity.node_id
            )));
        }
        if let Some(from) = sender_id(req) {
            self.peers.contact().heard_from(from);
        }
        Ok(())
    }

    /// The leader takes forwarded changes and read-index calls only from
    /// members: a node that was removed (or has not been added yet) receives
    /// no entries, so it could neither show what it forwarded nor catch up to
    /// a read index; it is told so at once instead of timing out. Callers
    /// that do not send their node id (older versions) are not checked.
    fn check_member<T>(&self, req: &Request<T>) -> Result<(), String> {
        let Some(from) = sender_id(req) else {
            return Ok(());
        };
        let m = self.raft.metrics();
        let m = m.borrow();
        if m.state != openraft::ServerState::Leader {
            return Ok(());
        }
        let membership = m.membership_config.membership();
        if membership.get_node(&from).is_some() {
            return Ok(());
        }
        let members: Vec<String> = membership.nodes().map(|(id, _)| id.to_string()).collect();
        Err(format!(
            "the leader (node {}) says node {from} is not a member of the cluster (members: {}): \
             it was removed, or has not been added yet",
            self.identity.node_id,
            members.join(", ")
        ))
    }
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft stopped: {e}"))
}

/// The node id a request carries (`NODE_ID_HEADER`); older releases send none.
fn sender_id<T>(req: &Request<T>) -> Option<NodeId> {
    req.metadata()
        .get(NODE_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

fn bad(e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(e.to_string())
}

fn failure(e: &WriteError) -> pb::WriteFailure {
    use pb::write_failure::Kind;
    let (kind, leader_id, leader_addr) = match e {
        WriteError::QueueFull { .. } | WriteError::RefusedByLeader(_) => (Kind::QueueFull, 0, String::new()),
        WriteError::NotLeader { leader_id, leader_addr } => (
            Kind::NotLeader,
            leader_id.unwrap_or(0),
            leader_addr.clone().unwrap_or_default(),
        ),
        // A leader that stopped working will be replaced by an election: the
        // forwarding node waits for the new one, as for any lost leader.
        WriteError::NoLeader | WriteError::NoQuorum(_) | WriteError::Failed(_) => (Kind::NoLeader, 0, String::new()),
        WriteError::Timeout(_) | WriteError::Uncertain(_) => (Kind::Timeout, 0, String::new()),
        WriteError::Stopped(_) => (Kind::Stopped, 0, String::new()),
        WriteError::NotMember(_) => (Kind::NotMember, 0, String::new()),
    };
    pb::WriteFailure {
        kind: kind as i32,
        // The forwarding node wraps a refusal in its own `NotMember`.
        message: match e {
            WriteError::NotMember(why) => why.clone(),
            _ => e.to_string(),
        },
        leader_id,
        leader_addr,
    }
}

#[tonic::async_trait]
impl Replica for ReplicaService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        self.check_cluster(&request)?;
        let rpc = rpc_codec::append_request_from_pb(request.into_inner()).map_err(bad)?;
        let resp = self.raft.append_entries(rpc).await.map_err(fatal)?;
        Ok(Response::new(rpc_codec::append_response_to_pb(&resp)))
    }

    async fn request_vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::VoteResponse>, Status> {
        self.check_cluster(&request)?;
        let rpc = rpc_codec::vote_request_from_pb(request.into_inner()).map_err(bad)?;
        let resp = self.raft.vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(rpc_codec::vote_response_to_pb(&resp)))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<pb::SnapshotChunk>>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        self.check_cluster(&request)?;
        let mut stream = request.into_inner();
        let mut vote = None;
        let mut meta = None;
        let mut data = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if let Some(v) = chunk.vote {
                vote = Some(super::codec::vote_from_pb(&v).map_err(bad)?);
            }
            if let Some(m) = chunk.meta {
                meta = Some(rpc_codec::snapshot_meta_from_pb(&m));
            }
            data.extend_from_slice(&chunk.data);
        }
        let vote = vote.ok_or_else(|| bad("snapshot stream without a vote"))?;
        let meta = meta.ok_or_else(|| bad("snapshot stream without metadata"))?;
        tracing::info!(
            bytes = data.len(),
            index = meta.last_log_id.map(|l| l.index),
            "receiving snapshot"
        );
        let snapshot = Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        };
        let resp = self.raft.install_full_snapshot(vote, snapshot).await.map_err(fatal)?;
        Ok(Response::new(pb::InstallSnapshotResponse {
            vote: Some(super::codec::vote_to_pb(&resp.vote)),
        }))
    }

    async fn forward(&self, request: Request<pb::ForwardRequest>) -> Result<Response<pb::ForwardResponse>, Status> {
        self.check_cluster(&request)?;
        let member = self.check_member(&request).map_err(WriteError::NotMember);
        let mutation = request
            .into_inner()
            .mutation
            .ok_or_else(|| bad("forward without a mutation"))?;
        if mutation.op.is_none() {
            // Proposed, it would stop every member of this release at apply
            // (see `codec::ENTRY_FORMAT_VERSION`).
            return Err(bad(
                "forwarded mutation of a kind this node does not know: the forwarding node runs a newer pushgate; \
                 finish the upgrade (this node is the leader)",
            ));
        }
        // Served only as the leader, and never forwarded again.
        let result = match member.and_then(|()| self.quorum.admit()) {
            Err(e) => Err(e),
            Ok(_admitted) => self.batcher.submit(Arc::new(mutation)).await,
        };
        let resp = match result {
            Ok(c) => pb::ForwardResponse {
                result: Some(pb::forward_response::Result::Outcome(rpc_codec::outcome_to_pb(
                    &c.outcome,
                ))),
                index: c.index,
            },
            Err(e) => pb::ForwardResponse {
                result: Some(pb::forward_response::Result::Failure(failure(&e))),
                index: 0,
            },
        };
        Ok(Response::new(resp))
    }

    async fn read_index(
        &self,
        request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        self.check_cluster(&request)?;
        self.check_member(&request).map_err(Status::permission_denied)?;
        match self.quorum.check() {
            Ok(()) => {}
            // A leader that is stopping: the reader asks the next one.
            Err(WriteError::NotLeader { .. }) => {
                return Err(Status::failed_precondition("not the leader: it is stopping"));
            }
            Err(e) => return Err(Status::unavailable(e.to_string())),
        }
        match self.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => {
                let term = self.raft.metrics().borrow().current_term;
                let floor = self.restart_floor.pending(term).unwrap_or(0);
                Ok(Response::new(pb::ReadIndexResponse {
                    read_index: read_log_id.map_or(0, |l| l.index).max(floor),
                }))
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Err(Status::failed_precondition(
                format!("not the leader (leader: {:?})", f.leader_id),
            )),
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(e))) => Err(Status::unavailable(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(fatal(f)),
        }
    }

    async fn hello(&self, _request: Request<pb::HelloRequest>) -> Result<Response<pb::HelloResponse>, Status> {
        let initialized = self.raft.is_initialized().await.map_err(fatal)?;
        let members = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.membership_config.membership().nodes().map(|(id, _)| *id).collect()
        };
        Ok(Response::new(pb::HelloResponse {
            node_id: self.identity.node_id,
            cluster_id: self.identity.cluster_id(),
            initialized,
            members,
        }))
    }

    async fn status(&self, _request: Request<pb::StatusRequest>) -> Result<Response<pb::StatusResponse>, Status> {
        Ok(Response::new(super::status::to_pb(&self.status.status())))
    }

    async fn timeout_now(
        &self,
        request: Request<pb::TimeoutNowRequest>,
    ) -> Result<Response<pb::TimeoutNowResponse>, Status> {
        self.check_cluster(&request)?;
        let from = sender_id(&request);
        let leader = self.raft.metrics().borrow().current_leader;
        if from.is_none() || from != leader {
            return Err(Status::failed_precondition(format!(
                "only the leader this node follows ({leader:?}) may ask it to start an election"
            )));
        }
        tracing::info!(
            leader = from,
            "the leader is stopping and asks this node to start an election"
        );
        self.raft.trigger().elect().await.map_err(fatal)?;
        Ok(Response::new(pb::TimeoutNowResponse {}))
    }

    async fn change_members(
        &self,
        request: Request<pb::ChangeMembersRequest>,
    ) -> Result<Response<pb::ChangeMembersResponse>, Status> {
        self.check_cluster(&request)?;
        let change = request
            .into_inner()
            .change
            .ok_or_else(|| bad("no membership change given"))?;
        // Carried out only by a leader that still has its quorum, as pushes.
        if let Err(e) = self.quorum.check() {
            return Err(MembershipError::Unavailable(e.to_string()).to_status());
        }
        let voters = membership::apply_locally(&self.raft, &self.peers, &self.identity, change)
            .await
            .map_err(|e| e.to_status())?;
        Ok(Response::new(pb::ChangeMembersResponse { voters }))
    }

    async fn adopt(&self, request: Request<pb::AdoptRequest>) -> Result<Response<pb::HelloResponse>, Status> {
        let cluster_id = request.into_inner().cluster_id;
        if cluster_id.is_empty() {
            return Err(bad("empty cluster id"));
        }
        if self.identity.cluster_id() != cluster_id && self.raft.is_initialized().await.map_err(fatal)? {
            return Err(Status::failed_precondition(format!(
                "node {} already has Raft state of another cluster",
                self.identity.node_id
            )));
        }
        self.identity.join(&cluster_id).map_err(Status::failed_precondition)?;
        self.hello(Request::new(pb::HelloRequest { from_node_id: 0 })).await
    }
}
