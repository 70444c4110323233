//! Recovery from the loss of a majority: `pushgate cluster recover`.
//!
//! Raft commits nothing without a quorum, not even the membership change
//! that would shrink the cluster around its survivors, so a cluster that
//! lost most of its replicas for good stays without a leader forever. This
//! is the way out that etcd calls `--force-new-cluster` and Consul
//! `peers.json`. Offline, on the data directory of one stopped survivor, it
//!
//! 1. applies every entry of that node's log after its snapshot, committed
//!    or not: the lost majority may have committed (and acknowledged) entries
//!    that this node holds but had not yet learnt were committed. An entry
//!    that was never committed was never acknowledged either (its push was
//!    answered `503`, outcome unknown), so keeping it breaks no promise;
//! 2. writes a snapshot of the result in which this node is the only voter,
//!    then empties the log behind it and records it as committed;
//! 3. gives the directory a new cluster id, so that a lost member that comes
//!    back with its old disk is refused rather than mixing two histories.
//!
//! Started again with its usual flags, the node elects itself and serves
//! every push it held; new members join through `pushgate cluster add`.
//! Each step is derived from what the directory holds, so a recovery that
//! was interrupted is finished by running it again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftSnapshotBuilder, RaftStateMachine};
use openraft::BasicNode;

use super::codec::FORMAT_VERSION;
use super::identity::Identity;
use super::log_store::LogStore;
use super::state_machine::StateMachine;
use super::stats::ClusterStats;
use super::types::{Membership, NodeId, StoredMembership};
use crate::pb::pushgate::v1 as pb;

/// Why a data directory could not be recovered. Nothing was changed unless
/// the message says a step failed part-way (then running again finishes it).
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    #[error("{0} holds no Raft log: there is nothing to recover here (check --storage.path)")]
    NoLog(PathBuf),
    #[error(
        "cannot open the Raft log in {dir}: {reason}. Is a pushgate node still running on this data directory? \
         Stop it first: recovery works on a stopped node"
    )]
    Open { dir: PathBuf, reason: String },
    #[error("{0} never joined a cluster: there is nothing to recover (start it as a new node instead)")]
    NeverJoined(PathBuf),
    #[error(
        "node {node_id} is not a voter of its cluster (voters: {voters}): only a voter's log holds what the \
         cluster acknowledged; recover a voter"
    )]
    NotAVoter { node_id: NodeId, voters: String },
    #[error(
        "the membership holds no cluster address for node {0}; pass --cluster.advertise-address=HOST:PORT \
         (the address other replicas reach it at)"
    )]
    NoAddress(NodeId),
    #[error("reading the data directory failed: {0}")]
    Read(String),
    #[error(
        "recovery stopped while {step}: {reason}. The data directory may be part-way recovered; \
         fix the cause and run the same command again to finish it"
    )]
    Write { step: &'static str, reason: String },
}

/// What a survivor's data directory holds, and what recovering it does.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    pub data_dir: PathBuf,
    pub node_id: NodeId,
    pub cluster_id: String,
    pub voters: Vec<NodeId>,
    /// Term of the node's last vote.
    pub term: u64,
    /// (term, index) of the last entry in its log (or its snapshot's).
    pub last_log: (u64, u64),
    /// The index this node knew to be committed.
    pub committed: u64,
    /// The index its snapshot covers.
    pub snapshot: u64,
    /// Entries applied on top of the snapshot, and how many of them this node
    /// had not known to be committed.
    pub entries_applied: u64,
    pub entries_past_commit: u64,
    /// Groups in the recovered store.
    pub groups: usize,
    /// The cluster address of the node, as the only voter.
    pub address: String,
    /// The new cluster id, once recovered (`None` for a dry run).
    pub new_cluster_id: Option<String>,
}

/// Recovers the stopped node whose data directory is `data_dir` as the only
/// voter of a new cluster (with `force`), or reports what that would do
/// without changing anything (without it). `address` overrides the node's
/// cluster address recorded in the membership.
pub async fn recover(data_dir: &Path, address: Option<&str>, force: bool) -> Result<Recovery, RecoverError> {
    let log_dir = data_dir.join("raft-log");
    if !log_dir.is_dir() {
        return Err(RecoverError::NoLog(data_dir.to_path_buf()));
    }
    let stats = Arc::new(ClusterStats::default());
    let mut log = LogStore::open(&log_dir, 8 << 20, stats.clone()).map_err(|e| RecoverError::Open {
        dir: log_dir.clone(),
        reason: e.to_string(),
    })?;
    let read = |e: openraft::StorageError<NodeId>| RecoverError::Read(e.to_string());
    let identity = log
        .identity()
        .map_err(read)?
        .filter(|i| !i.cluster_id.is_empty())
        .ok_or_else(|| RecoverError::NeverJoined(data_dir.to_path_buf()))?;
    let node_id = identity.node_id;
    let mut sm = StateMachine::open(&data_dir.join("snapshots"), node_id, stats).map_err(RecoverError::Read)?;
    let (snapshot_log_id, _) = sm.applied_state().await.map_err(read)?;
    let snapshot = snapshot_log_id.map_or(0, |l| l.index);
    let state = log.get_log_state().await.map_err(read)?;
    let committed = log.read_committed().await.map_err(read)?.map(|l| l.index);
    let term = log
        .read_vote()
        .await
        .map_err(read)?
        .map_or(0, |v| v.leader_id().get_term());
    let last = state.last_log_id.max(snapshot_log_id);
    let Some(last) = last else {
        return Err(RecoverError::NeverJoined(data_dir.to_path_buf()));
    };
    if state.last_purged_log_id.map_or(0, |l| l.index) > snapshot {
        return Err(RecoverError::Read(format!(
            "the log was purged up to entry {} but the snapshot covers only {snapshot}",
            state.last_purged_log_id.map_or(0, |l| l.index)
        )));
    }

    // 1. Everything in the log after the snapshot, committed or not.
    // openraft puts the first membership at index 0: with no snapshot, start there.
    let first = snapshot_log_id.map_or(0, |l| l.index + 1);
    let entries = log.try_get_log_entries(first..=last.index).await.map_err(read)?;
    let entries_applied = entries.len() as u64;
    let entries_past_commit = entries.iter().filter(|e| Some(e.log_id.index) > committed).count() as u64;
    sm.apply(entries).await.map_err(|e| {
        RecoverError::Read(format!(
            "{e} (an entry this release cannot apply: run the recovery with the release that wrote it)"
        ))
    })?;
    let shared = sm.shared();
    let (voters, recorded, groups) = {
        let state = shared.state.read();
        let membership = state.membership.membership();
        let voters: Vec<NodeId> = membership.voter_ids().collect();
        let recorded = membership.get_node(&node_id).map(|n| n.addr.clone());
        (voters, recorded, state.store.group_count())
    };
    if !voters.contains(&node_id) {
        return Err(RecoverError::NotAVoter {
            node_id,
            voters: join_ids(&voters),
        });
    }
    let address = match address.map(str::to_string).or(recorded) {
        Some(a) if !a.is_empty() => a,
        _ => return Err(RecoverError::NoAddress(node_id)),
    };
    let mut recovery = Recovery {
        data_dir: data_dir.to_path_buf(),
        node_id,
        cluster_id: identity.cluster_id,
        voters,
        term,
        last_log: (last.leader_id.term, last.index),
        committed: committed.unwrap_or(0),
        snapshot,
        entries_applied,
        entries_past_commit,
        groups,
        address: address.clone(),
        new_cluster_id: None,
    };
    if !force {
        return Ok(recovery);
    }

    // 2. This node alone, from the last entry on.
    let only_me = Membership::new(
        vec![BTreeSet::from([node_id])],
        BTreeMap::from([(node_id, BasicNode { addr: address })]),
    );
    shared.state.write().membership = StoredMembership::new(Some(last), only_me);
    let write = |step| {
        move |e: openraft::StorageError<NodeId>| RecoverError::Write {
            step,
            reason: e.to_string(),
        }
    };
    sm.get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .map_err(write("writing the snapshot"))?;
    log.purge(last).await.map_err(write("emptying the log"))?;
    log.save_committed(Some(last))
        .await
        .map_err(write("recording the commit point"))?;

    // 3. A new cluster id: the lost members' traffic is refused from now on.
    let new_cluster_id = Identity::new_cluster_id();
    log.save_identity(&pb::NodeIdentity {
        format_version: FORMAT_VERSION,
        node_id,
        cluster_id: new_cluster_id.clone(),
    })
    .map_err(write("recording the new cluster id"))?;
    tracing::info!(node_id, cluster_id = %new_cluster_id, index = last.index, "recovered as the only voter of a new cluster");
    recovery.new_cluster_id = Some(new_cluster_id);
    Ok(recovery)
}

fn join_ids(ids: &[NodeId]) -> String {
    ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

impl std::fmt::Display for Recovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (last_term, last_index) = self.last_log;
        writeln!(
            f,
            "node {} of cluster {} (voters {}), data directory {}:",
            self.node_id,
            self.cluster_id,
            join_ids(&self.voters),
            self.data_dir.display()
        )?;
        writeln!(
            f,
            "  last log entry {last_index} (term {last_term}); known committed up to {}; snapshot at {}; vote term {}",
            self.committed, self.snapshot, self.term
        )?;
        if self.voters == [self.node_id] {
            writeln!(
                f,
                "  node {} is already the only voter: it needs no recovery (start it), unless an earlier \
                 `recover --force` stopped part-way, which running it again finishes",
                self.node_id
            )?;
        }
        let kept = format!(
            "{} groups: the snapshot and the {} log entries after it, {} of them past the commit point this node knew",
            self.groups, self.entries_applied, self.entries_past_commit
        );
        match &self.new_cluster_id {
            None => {
                writeln!(
                    f,
                    "recovering would make node {} ({}) the only voter of a new cluster, keeping {kept}.",
                    self.node_id, self.address
                )?;
                writeln!(f, "Nothing was changed. Before running this again with --force:")?;
                writeln!(
                    f,
                    "  * recover only the survivor with the longest log (highest last term, then index);"
                )?;
                write!(
                    f,
                    "  * make sure the other members never come back with their data directories (stop them and delete \
                     those): two of them would still be a majority of the old cluster and go on beside the new one."
                )
            }
            Some(id) => {
                writeln!(
                    f,
                    "recovered: node {} ({}) is the only voter of the new cluster {id} at log index {last_index}, \
                     keeping {kept}.",
                    self.node_id, self.address
                )?;
                writeln!(f, "Next:")?;
                writeln!(
                    f,
                    "  1. start node {} with its usual flags: it elects itself and serves pushes and reads;",
                    self.node_id
                )?;
                write!(
                    f,
                    "  2. start each new member with an empty data directory and add it, one at a time: \
                     pushgate cluster add --node-id ID --address HOST:PORT --url http://<node {} HTTP address> \
                     (the lost members' ids may be used again: they are new to the new cluster)",
                    self.node_id
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::sync::Arc;

    use openraft::storage::{RaftLogReader, RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
    use openraft::{BasicNode, CommittedLeaderId, EntryPayload};
    use prost::Message;

    use super::{recover, RecoverError, Recovery};
    use crate::cluster::codec::FORMAT_VERSION;
    use crate::cluster::log_store::tests::{reopen as open, ONE_LOG_AT_A_TIME};
    use crate::cluster::state_machine::StateMachine;
    use crate::cluster::types::{Entry, LogId, LogPayload, Membership};
    use crate::model::store::key_to_pb;
    use crate::model::text_parse::parse_text;
    use crate::model::GroupingKey;
    use crate::pb::pushgate::v1 as pb;

    fn log_id(index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(1, 1), index)
    }

    fn members(ids: &[u64]) -> Membership {
        let nodes: BTreeMap<u64, BasicNode> = ids
            .iter()
            .map(|id| (*id, BasicNode::new(format!("10.0.0.{id}:9092"))))
            .collect();
        Membership::new(vec![ids.iter().copied().collect::<BTreeSet<_>>()], nodes)
    }

    fn push_entry(index: u64, job: &str) -> Entry {
        let key = GroupingKey::from_labels([("job".to_string(), job.to_string())]).expect("key");
        let batch = pb::Batch {
            format_version: 1,
            time_unix_nanos: 1_700_000_000_000_000_000,
            mutations: vec![pb::Mutation {
                op: Some(pb::mutation::Op::Push(pb::Push {
                    grouping_key: key_to_pb(&key),
                    replace: true,
                    families: parse_text(b"g 1\n").expect("text"),
                    consistency_check: true,
                })),
                request: None,
            }],
        };
        Entry {
            log_id: log_id(index),
            payload: EntryPayload::Normal(LogPayload::from_bytes(batch.encode_to_vec().into())),
        }
    }

    /// Node `node_id` of cluster "old" with voters `voters`: the first
    /// membership at index 0 (where openraft's `initialize` puts it), then a
    /// push of job a, b, c at 1-3 and a blank entry at 4; committed up to
    /// entry 2 only.
    async fn survivor(dir: &Path, node_id: u64, voters: &[u64]) {
        let mut log = open(&dir.join("raft-log")).await;
        log.save_identity(&pb::NodeIdentity {
            format_version: FORMAT_VERSION,
            node_id,
            cluster_id: "old".into(),
        })
        .expect("identity");
        let membership = Entry {
            log_id: LogId::new(CommittedLeaderId::new(0, 0), 0),
            payload: EntryPayload::Membership(members(voters)),
        };
        let blank = Entry {
            log_id: log_id(4),
            payload: EntryPayload::Blank,
        };
        let pushes = [push_entry(1, "a"), push_entry(2, "b"), push_entry(3, "c"), blank];
        log.blocking_append(std::iter::once(membership).chain(pushes))
            .await
            .expect("append");
        log.save_committed(Some(log_id(2))).await.expect("commit");
    }

    /// [`recover`], waiting for the test's own earlier handle to let go of the log.
    async fn recover_when_free(dir: &Path, force: bool) -> Result<Recovery, RecoverError> {
        for _ in 0..200 {
            match recover(dir, None, force).await {
                Err(RecoverError::Open { .. }) => {
                    crossbeam_epoch::pin().flush();
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
        panic!("the log at {} stayed locked", dir.display());
    }

    #[tokio::test]
    async fn a_dry_run_reports_the_survivor_and_changes_nothing() {
        let _one = ONE_LOG_AT_A_TIME.lock().await;
        crate::blocking::run_inline_on_this_thread();
        let dir = tempfile::tempdir().expect("temp dir");
        survivor(dir.path(), 1, &[1, 2, 3]).await;
        let report = recover_when_free(dir.path(), false).await.expect("dry run");
        assert_eq!(report.voters, vec![1, 2, 3]);
        assert_eq!(report.last_log, (1, 4));
        assert_eq!((report.committed, report.snapshot), (2, 0));
        assert_eq!((report.entries_applied, report.entries_past_commit), (5, 2));
        assert_eq!(report.groups, 3);
        assert_eq!(report.address, "10.0.0.1:9092");
        assert_eq!(report.new_cluster_id, None);
        assert!(report.to_string().contains("Nothing was changed"), "{report}");

        let mut log = open(&dir.path().join("raft-log")).await;
        assert_eq!(log.identity().expect("identity").expect("some").cluster_id, "old");
        let state = log.get_log_state().await.expect("log state");
        assert_eq!((state.last_purged_log_id, state.last_log_id), (None, Some(log_id(4))));
        assert!(!dir.path().join("snapshots/current.snapshot").exists());
    }

    /// Every entry of the log is kept, those past the commit point this node
    /// knew included; the node is the only voter of a new cluster; a second
    /// run finds nothing left to apply and keeps the same state.
    #[tokio::test]
    async fn a_survivor_becomes_the_only_voter_of_a_new_cluster_with_every_entry() {
        let _one = ONE_LOG_AT_A_TIME.lock().await;
        crate::blocking::run_inline_on_this_thread();
        let dir = tempfile::tempdir().expect("temp dir");
        survivor(dir.path(), 2, &[1, 2, 3]).await;
        let report = recover_when_free(dir.path(), true).await.expect("recover");
        let new_id = report.new_cluster_id.clone().expect("a new cluster id");
        assert_ne!(new_id, "old");
        assert_eq!(report.groups, 3);

        {
            let mut log = open(&dir.path().join("raft-log")).await;
            assert_eq!(log.identity().expect("identity").expect("some").cluster_id, new_id);
            let state = log.get_log_state().await.expect("log state");
            assert_eq!(
                (state.last_purged_log_id, state.last_log_id),
                (Some(log_id(4)), Some(log_id(4)))
            );
            assert_eq!(log.read_committed().await.expect("committed"), Some(log_id(4)));
            assert!(log.try_get_log_entries(0..).await.expect("entries").is_empty());
        }
        let mut sm = StateMachine::open(&dir.path().join("snapshots"), 2, Arc::default()).expect("state machine");
        let (applied, membership) = sm.applied_state().await.expect("applied state");
        assert_eq!(applied, Some(log_id(4)));
        assert_eq!(membership.membership().voter_ids().collect::<Vec<_>>(), vec![2]);
        assert_eq!(
            membership.membership().get_node(&2).map(|n| n.addr.as_str()),
            Some("10.0.0.2:9092")
        );
        assert_eq!(sm.shared().state.read().store.group_count(), 3);

        let again = recover_when_free(dir.path(), true).await.expect("recover again");
        assert_eq!(
            (again.entries_applied, again.groups, again.voters.clone()),
            (0, 3, vec![2])
        );
        assert_ne!(again.new_cluster_id, Some(new_id));
    }

    #[tokio::test]
    async fn only_a_voter_that_joined_a_cluster_can_be_recovered() {
        let _one = ONE_LOG_AT_A_TIME.lock().await;
        crate::blocking::run_inline_on_this_thread();
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(matches!(
            recover(dir.path(), None, true).await,
            Err(RecoverError::NoLog(_))
        ));

        survivor(dir.path(), 4, &[1, 2, 3]).await;
        let err = recover_when_free(dir.path(), true).await.expect_err("a learner");
        assert!(matches!(err, RecoverError::NotAVoter { node_id: 4, .. }), "{err}");

        let alone = tempfile::tempdir().expect("temp dir");
        survivor(alone.path(), 1, &[1]).await;
        let report = recover_when_free(alone.path(), false).await.expect("a single voter");
        assert!(report.to_string().contains("already the only voter"), "{report}");

        let fresh = tempfile::tempdir().expect("temp dir");
        {
            let log = open(&fresh.path().join("raft-log")).await;
            log.save_identity(&pb::NodeIdentity {
                format_version: FORMAT_VERSION,
                node_id: 1,
                cluster_id: String::new(),
            })
            .expect("identity");
        }
        let err = recover_when_free(fresh.path(), true).await.expect_err("never joined");
        assert!(matches!(err, RecoverError::NeverJoined(_)), "{err}");
    }
}
