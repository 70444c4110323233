//! The openraft type configuration, defined once for the whole crate.

use std::io::Cursor;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::model::Outcome;

/// The application data of a normal log entry: an encoded `pushgate.v1.Batch`.
///
/// Kept encoded so that the log stores, and the network ships, exactly the
/// bytes the leader proposed. On the leader the entry also carries the
/// mutations it was encoded from, so `apply` there does not decode them
/// again; followers and restarts decode the bytes (the same content).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LogPayload {
    pub bytes: Bytes,
    #[serde(skip)]
    pub decoded: Option<Arc<DecodedBatch>>,
}

/// The mutations of a batch as proposed, with the leader's time.
#[derive(Debug)]
pub struct DecodedBatch {
    /// The entry format it was written in (`codec::ENTRY_FORMAT_VERSION`).
    pub format_version: u32,
    pub time_unix_nanos: i64,
    pub mutations: Vec<Arc<crate::pb::pushgate::v1::Mutation>>,
}

impl LogPayload {
    pub fn from_bytes(bytes: Bytes) -> Self {
        LogPayload { bytes, decoded: None }
    }
}

/// What applying one entry produced: one outcome per mutation of its batch
/// (empty for blank and membership entries).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct BatchOutcome {
    pub outcomes: Vec<Applied>,
}

/// What one mutation of an entry produced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub outcome: Outcome,
    /// Set when the mutation was a copy of a forwarded mutation applied at
    /// this earlier index (see `sessions`): that is where it took effect.
    pub earlier_index: Option<u64>,
}

openraft::declare_raft_types!(
    /// pushgate's Raft types: u64 node ids, one address per node.
    pub TypeConfig:
        D = LogPayload,
        R = BatchOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = super::runtime::Runtime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Membership = openraft::Membership<NodeId, openraft::BasicNode>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type StorageError = openraft::StorageError<NodeId>;
