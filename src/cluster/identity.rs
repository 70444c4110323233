//! Which node this is and which cluster it belongs to, persisted in the log
//! store so that a node whose disk was lost can never rejoin under its old
//! Raft identity, nor two clusters be bootstrapped over one another.

use parking_lot::RwLock;

use super::codec::FORMAT_VERSION;
use super::log_store::LogStore;
use super::types::NodeId;
use crate::pb::pushgate::v1 as pb;

pub struct Identity {
    pub node_id: NodeId,
    /// Empty until the node belongs to a cluster.
    cluster_id: RwLock<String>,
    store: LogStore,
}

impl Identity {
    /// Loads (or creates, with no cluster yet) the identity of this data directory.
    pub fn load(store: LogStore, node_id: NodeId, data_dir: &std::path::Path) -> Result<Identity, String> {
        match store.identity().map_err(|e| e.to_string())? {
            Some(identity) => {
                super::codec::check_version(identity.format_version).map_err(|e| e.to_string())?;
                if identity.node_id != node_id {
                    return Err(format!(
                        "the data directory {} belongs to node {} (cluster {}), but this process was started as node {}; \
                         start it with --cluster.node-id={} or give it its own --storage.path",
                        data_dir.display(),
                        identity.node_id,
                        if identity.cluster_id.is_empty() { "not yet joined" } else { identity.cluster_id.as_str() },
                        node_id,
                        identity.node_id
                    ));
                }
                Ok(Identity {
                    node_id,
                    cluster_id: RwLock::new(identity.cluster_id),
                    store,
                })
            }
            None => {
                let id = Identity {
                    node_id,
                    cluster_id: RwLock::new(String::new()),
                    store,
                };
                id.persist(String::new())?;
                Ok(id)
            }
        }
    }

    pub fn cluster_id(&self) -> String {
        self.cluster_id.read().clone()
    }

    pub fn has_cluster(&self) -> bool {
        !self.cluster_id.read().is_empty()
    }

    /// Records (durably) that this node belongs to `cluster_id`. Once set it never changes.
    pub fn join(&self, cluster_id: &str) -> Result<(), String> {
        let mut current = self.cluster_id.write();
        if !current.is_empty() {
            return if *current == cluster_id {
                Ok(())
            } else {
                Err(format!("this node belongs to cluster {current}, not {cluster_id}"))
            };
        }
        self.persist(cluster_id.to_string())?;
        *current = cluster_id.to_string();
        tracing::info!(cluster_id, node_id = self.node_id, "joined cluster");
        Ok(())
    }

    fn persist(&self, cluster_id: String) -> Result<(), String> {
        let record = pb::NodeIdentity {
            format_version: FORMAT_VERSION,
            node_id: self.node_id,
            cluster_id,
        };
        self.store.save_identity(&record).map_err(|e| e.to_string())
    }

    /// A fresh random cluster id.
    pub fn new_cluster_id() -> String {
        format!("{:032x}", super::runtime::random_u128())
    }
}
