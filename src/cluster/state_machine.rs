//! The Raft state machine: the group store in memory, snapshots on disk.
//!
//! The store is rebuilt on start-up from the latest snapshot plus the log
//! entries committed after it (openraft re-applies them because the log
//! store persists the commit marker). Snapshots are built from a cheap shared
//! copy of the groups taken under a short read lock, then encoded and written
//! without holding up `apply`.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, StorageIOError};
use parking_lot::RwLock;
use prost::Message;

use super::codec::{self, FORMAT_VERSION};
use super::stats::ClusterStats;
use super::types::{BatchOutcome, Entry, LogId, LogPayload, SnapshotMeta, StorageError, StoredMembership, TypeConfig};
use crate::model::Store;
use crate::pb::pushgate::v1 as pb;

/// Everything `apply` changes, behind one lock so that a snapshot copies a
/// consistent (store, last applied, membership) triple.
pub struct AppliedState {
    pub store: Store,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
}

/// State shared between the state machine (writer) and readers (scrapes).
pub struct SharedState {
    pub state: Arc<RwLock<AppliedState>>,
    /// Index of the last applied entry (0 before any).
    pub applied_index: AtomicU64,
}

pub struct StateMachine {
    shared: Arc<SharedState>,
    snapshot_dir: PathBuf,
    stats: Arc<ClusterStats>,
    snapshot_seq: Arc<AtomicU64>,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::error(e.to_string())).into()
}

fn snapshot_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(ErrorSubject::Snapshot(None), verb, AnyError::error(e.to_string())).into()
}

const SNAPSHOT_FILE: &str = "current.snapshot";

impl StateMachine {
    /// Opens the state machine, restoring the latest snapshot in `snapshot_dir`.
    pub fn open(snapshot_dir: &Path, stats: Arc<ClusterStats>) -> Result<Self, String> {
        std::fs::create_dir_all(snapshot_dir).map_err(|e| format!("cannot create {}: {e}", snapshot_dir.display()))?;
        let sm = StateMachine {
            shared: Arc::new(SharedState {
                state: Arc::new(RwLock::new(AppliedState {
                    store: Store::new(),
                    last_applied: None,
                    membership: StoredMembership::default(),
                })),
                applied_index: AtomicU64::new(0),
            }),
            snapshot_dir: snapshot_dir.to_path_buf(),
            stats,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
        };
        let path = snapshot_dir.join(SNAPSHOT_FILE);
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let snapshot = decode_snapshot(&bytes).map_err(|e| format!("snapshot {}: {e}", path.display()))?;
            sm.load(&snapshot)?;
            let state = sm.shared.state.read();
            tracing::info!(
                index = state.last_applied.map(|l| l.index),
                groups = state.store.group_count(),
                "restored state from snapshot"
            );
        }
        Ok(sm)
    }

    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }

    fn load(&self, snapshot: &pb::Snapshot) -> Result<(), String> {
        let store = Store::restore(snapshot.clock_unix_nanos, &snapshot.groups)?;
        let meta = Self::meta_of(snapshot);
        let mut state = self.shared.state.write();
        *state = AppliedState {
            store,
            last_applied: meta.last_log_id,
            membership: meta.last_membership,
        };
        self.shared
            .applied_index
            .store(meta.last_log_id.map_or(0, |l| l.index), Ordering::Release);
        Ok(())
    }

    fn meta_of(snapshot: &pb::Snapshot) -> SnapshotMeta {
        SnapshotMeta {
            last_log_id: snapshot.last_log_id.as_ref().map(codec::log_id_from_pb),
            last_membership: StoredMembership::new(
                snapshot.last_membership_log_id.as_ref().map(codec::log_id_from_pb),
                snapshot
                    .last_membership
                    .as_ref()
                    .map(codec::membership_from_pb)
                    .unwrap_or_default(),
            ),
            snapshot_id: snapshot.snapshot_id.clone(),
        }
    }
}

fn decode_snapshot(bytes: &[u8]) -> Result<pb::Snapshot, String> {
    let snapshot = pb::Snapshot::decode(bytes).map_err(|e| format!("does not decode: {e}"))?;
    codec::check_version(snapshot.format_version).map_err(|e| e.to_string())?;
    Ok(snapshot)
}

/// Writes `bytes` to `dir/name` atomically and durably (temp file, fsync, rename, fsync dir).
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Builds snapshots from a shared copy of the store.
pub struct SnapshotBuilder {
    shared: Arc<SharedState>,
    snapshot_dir: PathBuf,
    stats: Arc<ClusterStats>,
    seq: u64,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError> {
        // A consistent copy under a short read lock: groups are shared, not cloned.
        let (view, last_log_id, membership) = {
            let state = self.shared.state.read();
            (
                state.store.snapshot_view(),
                state.last_applied,
                state.membership.clone(),
            )
        };
        let meta_membership = membership.clone();
        let snapshot_id = format!(
            "{}-{}-{}",
            last_log_id.map_or(0, |l| l.leader_id.term),
            last_log_id.map_or(0, |l| l.index),
            self.seq
        );
        let dir = self.snapshot_dir.clone();
        let id = snapshot_id.clone();
        let bytes = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
            let record = pb::Snapshot {
                format_version: FORMAT_VERSION,
                last_log_id: last_log_id.as_ref().map(codec::log_id_to_pb),
                last_membership_log_id: membership.log_id().as_ref().map(codec::log_id_to_pb),
                last_membership: Some(codec::membership_to_pb(membership.membership())),
                snapshot_id: id,
                clock_unix_nanos: view.clock,
                groups: view.to_pb(),
            };
            let bytes = record.encode_to_vec();
            write_atomically(&dir, SNAPSHOT_FILE, &bytes)?;
            Ok(bytes)
        })
        .await
        .map_err(|e| snapshot_err(ErrorVerb::Write, e))?
        .map_err(|e| snapshot_err(ErrorVerb::Write, e))?;
        ClusterStats::add(&self.stats.snapshots_built, 1);
        tracing::info!(
            index = last_log_id.map(|l| l.index),
            bytes = bytes.len(),
            "built snapshot"
        );
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id,
                last_membership: meta_membership,
                snapshot_id,
            },
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.shared.state.read();
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchOutcome>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut results = Vec::new();
        let mut state = self.shared.state.write();
        for entry in entries {
            state.last_applied = Some(entry.log_id);
            let outcome = match entry.payload {
                EntryPayload::Blank => BatchOutcome::default(),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    BatchOutcome::default()
                }
                EntryPayload::Normal(LogPayload {
                    decoded: Some(batch), ..
                }) => {
                    let outcomes = state
                        .store
                        .apply_batch(batch.time_unix_nanos, batch.mutations.iter().map(|m| &**m));
                    ClusterStats::add(&self.stats.mutations_applied, outcomes.len() as u64);
                    BatchOutcome { outcomes }
                }
                EntryPayload::Normal(LogPayload { bytes, decoded: None }) => {
                    match pb::Batch::decode(bytes.as_ref()) {
                        Ok(batch) if batch.format_version == FORMAT_VERSION => {
                            let outcomes = state.store.apply_batch(batch.time_unix_nanos, batch.mutations.iter());
                            ClusterStats::add(&self.stats.mutations_applied, outcomes.len() as u64);
                            BatchOutcome { outcomes }
                        }
                        Ok(batch) => {
                            // Every replica skips the same entry, so state stays identical.
                            tracing::error!(
                                index = entry.log_id.index,
                                version = batch.format_version,
                                "log entry has an unknown format version; skipped (upgrade this node)"
                            );
                            BatchOutcome::default()
                        }
                        Err(e) => {
                            tracing::error!(index = entry.log_id.index, error = %e, "log entry does not decode; skipped");
                            BatchOutcome::default()
                        }
                    }
                }
            };
            results.push(outcome);
        }
        let applied = state.last_applied.map_or(0, |l| l.index);
        drop(state);
        self.shared.applied_index.store(applied, Ordering::Release);
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            shared: self.shared.clone(),
            snapshot_dir: self.snapshot_dir.clone(),
            stats: self.stats.clone(),
            seq: self.snapshot_seq.fetch_add(1, Ordering::Relaxed),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let record = decode_snapshot(&bytes).map_err(|e| snapshot_err(ErrorVerb::Read, e))?;
        let dir = self.snapshot_dir.clone();
        let store = tokio::task::spawn_blocking(move || -> Result<(Store, Vec<u8>), String> {
            write_atomically(&dir, SNAPSHOT_FILE, &bytes).map_err(|e| e.to_string())?;
            Ok((Store::restore(record.clock_unix_nanos, &record.groups)?, bytes))
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Write, e))?
        .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        *self.shared.state.write() = AppliedState {
            store: store.0,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
        };
        self.shared
            .applied_index
            .store(meta.last_log_id.map_or(0, |l| l.index), Ordering::Release);
        ClusterStats::add(&self.stats.snapshots_installed, 1);
        tracing::info!(
            index = meta.last_log_id.map(|l| l.index),
            "installed snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.snapshot_dir.join(SNAPSHOT_FILE);
        let bytes = match tokio::fs::read(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snapshot_err(ErrorVerb::Read, e)),
        };
        let record = decode_snapshot(&bytes).map_err(|e| snapshot_err(ErrorVerb::Read, e))?;
        Ok(Some(Snapshot {
            meta: StateMachine::meta_of(&record),
            snapshot: Box::new(Cursor::new(bytes)),
        }))
    }
}
