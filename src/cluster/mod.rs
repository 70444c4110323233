//! The cluster layer: openraft with a sled log, the group store as its state
//! machine, group commit, and the network between replicas. Nothing above
//! the gateway sees a Raft or sled type.

// openraft's StorageError (dictated by its storage traits) is large; boxing it here
// would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

pub mod batcher;
pub mod bugs;
pub mod codec;
pub mod contact;
pub mod durable_dir;
pub mod entry_format;
pub mod error;
pub mod forwarding;
pub mod hand_over;
pub mod identity;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod node;
pub mod recent_entries;
pub mod recover;
pub mod rpc_codec;
pub mod runtime;
pub mod service;
pub mod sessions;
pub mod stall;
pub mod state_machine;
pub mod stats;
pub mod status;
pub mod types;

pub use batcher::Clock;
pub use batcher::Committed;
pub use error::{ReadError, StartError, WriteError};
pub use membership::MembershipError;
pub use node::{ClusterNode, Environment, NodeConfig};
pub use status::{ClusterStatus, NodeStatus};
