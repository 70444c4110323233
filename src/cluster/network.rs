//! The Raft network between replicas: openraft's RPCs over tonic gRPC.
//!
//! One lazily connected HTTP/2 channel per peer address, shared by Raft
//! traffic and by client forwarding (`Peers`). HTTP/2 keepalive is on so a
//! connection that died in a partition is noticed and replaced instead of
//! wedging (research/raft-stack.md §3.7), and every call has a deadline.
//! Every request carries the sender's cluster id, so a node never takes Raft
//! traffic from another cluster, and its node id, so a leader can tell a node
//! that was removed from the cluster (or never added) that it is not a member.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{Fatal, NetworkError, RPCError, RaftError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};
use openraft::{BasicNode, Snapshot};
use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};

use super::contact::Contact;
use super::identity::Identity;
use super::rpc_codec;
use super::types::{NodeId, TypeConfig, Vote};
use crate::pb::pushgate::v1 as pb;
use crate::pb::pushgate::v1::replica_client::ReplicaClient;
use crate::transport::Transport;

/// Metadata key carrying the sender's cluster id.
pub const CLUSTER_ID_HEADER: &str = "x-pushgate-cluster-id";
/// Metadata key carrying the sender's node id.
pub const NODE_ID_HEADER: &str = "x-pushgate-node-id";
/// Largest gRPC message (a batch entry or a snapshot chunk is far smaller).
pub const MAX_MESSAGE_BYTES: usize = 512 << 20;
const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;
/// How long making a connection to a peer (TCP and, with
/// `--cluster.tls.*`, the TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// A failed call's status with the causes tonic keeps in its source chain
/// (its message alone is often just "transport error").
pub fn describe_status(s: &tonic::Status) -> String {
    let mut why = s.message().to_string();
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        let part = e.to_string();
        if !why.ends_with(&part) {
            why.push_str(&format!(": {part}"));
        }
        source = e.source();
    }
    why
}

/// Whether a call failed before anything was sent: no connection to the
/// peer could be made (refused, the connect timed out, the name did not
/// resolve). Such a call did nothing there and may be retried; any other
/// failure may have been processed.
///
/// tonic wraps every failure of its connector, the phase before a request
/// can be written, in [`tonic::ConnectError`]; a refused connection is also
/// recognised by its `io::Error` kind, for a connector that does not.
pub fn never_sent(s: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        if e.downcast_ref::<tonic::ConnectError>().is_some() {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = e.source();
    }
    false
}

/// Channels to peers, by address, plus this node's identity for request
/// metadata and its record of when each peer was last heard from.
#[derive(Clone)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    identity: Arc<Identity>,
    transport: Arc<dyn Transport>,
    contact: Arc<Contact>,
}

impl Peers {
    pub fn new(identity: Arc<Identity>, transport: Arc<dyn Transport>) -> Self {
        Peers {
            channels: Arc::new(Mutex::new(HashMap::new())),
            identity,
            transport,
            contact: Arc::new(Contact::default()),
        }
    }

    /// When each peer was last heard from (calls in both directions).
    pub fn contact(&self) -> &Contact {
        &self.contact
    }

    /// The same record, to keep (the node's status reads it).
    pub fn shared_contact(&self) -> Arc<Contact> {
        self.contact.clone()
    }

    /// The id of the cluster this node belongs to (empty before it joins one).
    pub fn cluster_id(&self) -> String {
        self.identity.cluster_id()
    }

    /// A client for `addr` (HOST:PORT; DNS names are resolved on every (re)connect).
    pub fn client(&self, addr: &str) -> Result<ReplicaClient<Channel>, tonic::Status> {
        let mut channels = self.channels.lock();
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| tonic::Status::invalid_argument(format!("bad peer address {addr:?}: {e}")))?
                    .http2_keep_alive_interval(Duration::from_millis(500))
                    .keep_alive_timeout(Duration::from_secs(1))
                    .keep_alive_while_idle(true);
                let channel = crate::transport::channel(self.transport.clone(), endpoint, CONNECT_TIMEOUT);
                channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(ReplicaClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES))
    }

    /// A request with a deadline and this node's cluster and node ids attached.
    pub fn request<T>(&self, message: T, timeout: Duration) -> tonic::Request<T> {
        let mut req = tonic::Request::new(message);
        req.set_timeout(timeout);
        if let Ok(v) = self.identity.cluster_id().parse() {
            req.metadata_mut().insert(CLUSTER_ID_HEADER, v);
        }
        req.metadata_mut().insert(NODE_ID_HEADER, self.identity.node_id.into());
        req
    }
}

/// openraft's network factory: one `PeerClient` per target.
#[derive(Clone)]
pub struct Network {
    peers: Peers,
}

impl Network {
    pub fn new(peers: Peers) -> Self {
        Network { peers }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

fn rpc_error<E: std::error::Error>(status: tonic::Status) -> RPCError<NodeId, BasicNode, E> {
    match status.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
        _ => RPCError::Network(NetworkError::new(&status)),
    }
}

fn decode_error<E: std::error::Error>(e: super::codec::CodecError) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(&e))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let mut client = self.peers.client(&self.addr).map_err(rpc_error)?;
        let req = self
            .peers
            .request(rpc_codec::append_request_to_pb(&rpc), option.hard_ttl());
        let resp = client.append_entries(req).await.map_err(rpc_error)?;
        self.peers.contact.heard_from(self.target);
        rpc_codec::append_response_from_pb(resp.into_inner()).map_err(decode_error)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let mut client = self.peers.client(&self.addr).map_err(rpc_error)?;
        let req = self
            .peers
            .request(rpc_codec::vote_request_to_pb(&rpc), option.hard_ttl());
        let resp = client.request_vote(req).await.map_err(rpc_error)?;
        self.peers.contact.heard_from(self.target);
        rpc_codec::vote_response_from_pb(resp.into_inner()).map_err(decode_error)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl std::future::Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let stream_err = |s: tonic::Status| -> StreamingError<TypeConfig, Fatal<NodeId>> {
            match s.code() {
                tonic::Code::Unavailable => StreamingError::Unreachable(Unreachable::new(&s)),
                _ => StreamingError::Network(NetworkError::new(&s)),
            }
        };
        let mut client = self.peers.client(&self.addr).map_err(stream_err)?;
        let meta = rpc_codec::snapshot_meta_to_pb(&snapshot.meta);
        let data = snapshot.snapshot.into_inner();
        let mut chunks = Vec::with_capacity(data.len() / SNAPSHOT_CHUNK_BYTES + 1);
        let mut first = Some((super::codec::vote_to_pb(&vote), meta));
        let mut pieces = data.chunks(SNAPSHOT_CHUNK_BYTES).peekable();
        if pieces.peek().is_none() {
            let (v, m) = first.take().unwrap_or_default();
            chunks.push(pb::SnapshotChunk {
                vote: Some(v),
                meta: Some(m),
                data: Default::default(),
            });
        }
        for piece in pieces {
            let (v, m) = match first.take() {
                Some((v, m)) => (Some(v), Some(m)),
                None => (None, None),
            };
            chunks.push(pb::SnapshotChunk {
                vote: v,
                meta: m,
                data: bytes::Bytes::copy_from_slice(piece),
            });
        }
        tracing::info!(target_node = self.target, bytes = data.len(), "sending snapshot");
        let req = self.peers.request(
            futures::stream::iter(chunks),
            option.hard_ttl().max(Duration::from_secs(30)),
        );
        let call = client.install_snapshot(req);
        tokio::select! {
            resp = call => {
                let resp = resp.map_err(stream_err)?;
                self.peers.contact.heard_from(self.target);
                rpc_codec::snapshot_response_from_pb(resp.into_inner())
                    .map_err(|e| StreamingError::Network(NetworkError::new(&e)))
            }
            closed = cancel => Err(StreamingError::Closed(closed)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use tonic::transport::Endpoint;

    use super::{describe_status, never_sent};
    use crate::pb::pushgate::v1 as pb;
    use crate::pb::pushgate::v1::replica_client::ReplicaClient;
    use crate::transport::Os;

    async fn call(port: u16) -> tonic::Status {
        let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .expect("endpoint")
            .timeout(Duration::from_secs(2));
        let channel = crate::transport::channel(Arc::new(Os::default()), endpoint, Duration::from_millis(500));
        let mut client = ReplicaClient::new(channel);
        client
            .status(pb::StatusRequest {})
            .await
            .expect_err("no server answers")
    }

    /// `status` failed before anything was sent, and its description names `cause`.
    fn assert_never_sent(status: &tonic::Status, cause: &str) {
        let described = describe_status(status);
        assert!(never_sent(status), "{described}");
        assert!(described.contains(cause), "{described}");
    }

    /// A call to a port nobody listens on never left this node, so a
    /// forwarded push can wait for the next leader instead of answering 503
    /// (tonic's message alone only says "transport error").
    #[tokio::test]
    async fn a_refused_connection_is_known_not_to_have_sent_anything() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("address").port()
        };
        assert_never_sent(&call(port).await, "refused");
    }

    /// A connection that could not be made in time carried nothing: a
    /// listener whose accept queue is full drops the SYN, as a peer behind a
    /// firewall that drops packets does.
    #[tokio::test]
    async fn a_connection_that_timed_out_is_known_not_to_have_sent_anything() {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind("127.0.0.1:0".parse().expect("address")).expect("bind");
        let port = socket.local_addr().expect("address").port();
        let _listener = socket.listen(0).expect("listen");
        // Fill the accept queue (never accepted), so further SYNs are dropped.
        let mut queued = Vec::new();
        for _ in 0..4 {
            match tokio::time::timeout(
                Duration::from_millis(200),
                tokio::net::TcpStream::connect(("127.0.0.1", port)),
            )
            .await
            {
                Ok(Ok(stream)) => queued.push(stream),
                _ => break,
            }
        }
        assert_never_sent(&call(port).await, "no connection within 500ms");
    }

    /// A connection that was made and then dropped may have carried the call.
    #[tokio::test]
    async fn a_connection_dropped_after_it_was_made_may_have_sent_the_call() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("address").port();
        tokio::spawn(async move {
            for _ in 0..4 {
                if let Ok((socket, _)) = listener.accept().await {
                    drop(socket);
                }
            }
        });
        let status = call(port).await;
        assert!(!never_sent(&status), "{}", describe_status(&status));
    }
}
