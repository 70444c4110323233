//! The Raft state machine: the group store in memory, snapshots on disk.
//!
//! The store is rebuilt on start-up from the latest snapshot plus the log
//! entries committed after it (openraft re-applies them because the log
//! store persists the commit marker). Snapshots are built from a cheap shared
//! copy of the groups taken under a short read lock, then encoded and written
//! without holding up `apply`.

use std::fs::File;
use std::io::{BufWriter, Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder, Snapshot, StorageIOError};
use parking_lot::RwLock;
use prost::Message;

use super::bugs::{self, Bug};
use super::codec::{
    self, NewerFormat, BASE_ENTRY_FORMAT, ENTRY_FORMAT_VERSION, FORMAT_VERSION, REQUEST_IDS_FORMAT,
    SNAPSHOT_FORMAT_VERSION,
};
use super::recent_entries::RecentEntries;
use super::sessions::{self, Admission, Sessions};
use super::stats::ClusterStats;
use super::types::{
    Applied, BatchOutcome, Entry, LogId, LogPayload, NodeId, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::model::store::StoreView;
use crate::model::Store;
use crate::pb::pushgate::v1 as pb;

/// Everything `apply` changes, behind one lock so that a snapshot copies a
/// consistent (store, sessions, last applied, membership) state.
pub struct AppliedState {
    pub store: Store,
    /// The outcomes of forwarded mutations, for exactly-once apply.
    pub sessions: Sessions,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// The newest entry format applied so far: the format the log has
    /// reached (`codec::ENTRY_FORMAT_VERSION`).
    pub entry_format: u32,
}

/// State shared between the state machine (writer) and readers (scrapes).
pub struct SharedState {
    pub state: Arc<RwLock<AppliedState>>,
    /// Index of the last applied entry (0 before any).
    pub applied_index: AtomicU64,
    /// A digest of every entry this process applied (index, term and
    /// payload, in order; chained XXH3). Two runs that apply the same entries from
    /// the same start agree on it: the fault simulation puts it in a run's
    /// trace.
    pub applied_digest: AtomicU64,
    /// `AppliedState::entry_format`, readable without its lock (from
    /// `codec::REQUEST_IDS_FORMAT` on, a forwarded mutation carries a
    /// request id).
    pub log_entry_format: AtomicU32,
}

/// The digest before any entry.
const DIGEST_START: u64 = 0xcbf2_9ce4_8422_2325;

/// `digest` followed by `bytes`: XXH3 of `bytes` seeded with the digest so
/// far (a specified algorithm, stable across versions; fast enough to run
/// over every applied byte, unlike a byte-at-a-time hash).
fn fold_digest(digest: u64, bytes: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(bytes, digest)
}

pub struct StateMachine {
    /// The node this state machine belongs to (for `bugs::Bug::DivergentApply`).
    node_id: NodeId,
    shared: Arc<SharedState>,
    snapshot_dir: PathBuf,
    stats: Arc<ClusterStats>,
    snapshot_seq: Arc<AtomicU64>,
    /// The log's in-memory run of appended entries: released once applied.
    recent: Option<Arc<RecentEntries>>,
}

fn sm_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(ErrorSubject::StateMachine, verb, AnyError::error(e.to_string())).into()
}

fn snapshot_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageIOError::new(ErrorSubject::Snapshot(None), verb, AnyError::error(e.to_string())).into()
}

const SNAPSHOT_FILE: &str = "current.snapshot";
/// Field number of `groups` in `pb::Snapshot` (proto/pushgate/v1/log.proto).
const SNAPSHOT_GROUPS_TAG: u32 = 7;

impl StateMachine {
    /// Opens the state machine, restoring the latest snapshot in `snapshot_dir`.
    /// Releases applied entries from the log's in-memory run (see
    /// `recent_entries`).
    pub fn releasing(mut self, recent: Arc<RecentEntries>) -> Self {
        self.recent = Some(recent);
        self
    }

    pub fn open(snapshot_dir: &Path, node_id: NodeId, stats: Arc<ClusterStats>) -> Result<Self, String> {
        super::durable_dir::create_dir_all(snapshot_dir)
            .map_err(|e| format!("cannot create {}: {e}", snapshot_dir.display()))?;
        let sm = StateMachine {
            node_id,
            shared: Arc::new(SharedState {
                state: Arc::new(RwLock::new(AppliedState {
                    store: Store::new(),
                    sessions: Sessions::default(),
                    last_applied: None,
                    membership: StoredMembership::default(),
                    entry_format: BASE_ENTRY_FORMAT,
                })),
                applied_index: AtomicU64::new(0),
                applied_digest: AtomicU64::new(DIGEST_START),
                log_entry_format: AtomicU32::new(BASE_ENTRY_FORMAT),
            }),
            snapshot_dir: snapshot_dir.to_path_buf(),
            stats,
            snapshot_seq: Arc::new(AtomicU64::new(0)),
            recent: None,
        };
        let path = snapshot_dir.join(SNAPSHOT_FILE);
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let snapshot = decode_snapshot(&bytes).map_err(|e| format!("snapshot {}: {e}", path.display()))?;
            sm.load(&snapshot)?;
            sm.stats.record_snapshot(bytes.len() as u64, 0);
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
        let entry_format = entry_format_of(snapshot);
        let store = Store::restore(
            snapshot.clock_unix_nanos,
            &snapshot.groups,
            codec::apply_rules(entry_format),
        )?;
        let meta = Self::meta_of(snapshot);
        let mut state = self.shared.state.write();
        self.shared.log_entry_format.store(entry_format, Ordering::Release);
        *state = AppliedState {
            store,
            sessions: Sessions::from_pb(snapshot.request_ids, &snapshot.sessions),
            last_applied: meta.last_log_id,
            membership: meta.last_membership,
            entry_format,
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

/// Why this release cannot apply `batch`, the payload of entry `index`: a
/// newer release wrote it (see `codec::ENTRY_FORMAT_VERSION`). A mutation of
/// no kind this release knows counts too, since a newer release that forgot
/// to raise the format would otherwise have it rejected here and applied
/// there.
fn newer_format(batch: &pb::Batch, index: u64) -> Option<NewerFormat> {
    let detail = if !(1..=ENTRY_FORMAT_VERSION).contains(&batch.format_version) {
        format!("format {}", batch.format_version)
    } else if batch.mutations.iter().any(|m| m.op.is_none()) {
        "a mutation of a kind this release does not know".to_string()
    } else {
        return None;
    };
    Some(NewerFormat {
        what: format!("log entry {index}"),
        detail,
    })
}

/// The first of `entries`, read back from the log, that this release cannot
/// apply: the entry [`StateMachine`]'s `apply` would stop at.
/// `ClusterNode::start` checks the log tail with it before Raft starts, so a
/// node started on a log that a newer release wrote refuses to start every
/// time. Otherwise it would exit or stay up stopped depending on whether its
/// Raft core reached the entry before start-up was over.
pub fn first_entry_of_a_newer_format(entries: &[Entry]) -> Option<NewerFormat> {
    entries.iter().find_map(|entry| match &entry.payload {
        EntryPayload::Normal(LogPayload { bytes, .. }) => pb::Batch::decode(bytes.as_ref())
            .ok()
            .and_then(|batch| newer_format(&batch, entry.log_id.index)),
        _ => None,
    })
}

/// The entry format the log had reached when `snapshot` was built.
fn entry_format_of(snapshot: &pb::Snapshot) -> u32 {
    let sessions = if snapshot.request_ids {
        REQUEST_IDS_FORMAT
    } else {
        BASE_ENTRY_FORMAT
    };
    snapshot.format_version.max(sessions)
}

/// The format of a snapshot built when the log had reached `entry_format`
/// (see `codec::SNAPSHOT_FORMAT_VERSION`).
fn snapshot_format(entry_format: u32) -> u32 {
    if entry_format >= REQUEST_IDS_FORMAT {
        entry_format
    } else {
        FORMAT_VERSION
    }
}

fn decode_snapshot(bytes: &[u8]) -> Result<pb::Snapshot, String> {
    let snapshot = pb::Snapshot::decode(bytes).map_err(|e| format!("does not decode: {e}"))?;
    check_snapshot_version(snapshot.format_version).map_err(|e| e.to_string())?;
    Ok(snapshot)
}

/// Snapshot records have their own format (`codec::SNAPSHOT_FORMAT_VERSION`).
fn check_snapshot_version(v: u32) -> Result<(), codec::CodecError> {
    if (FORMAT_VERSION..=SNAPSHOT_FORMAT_VERSION).contains(&v) {
        Ok(())
    } else {
        Err(codec::CodecError::UnknownVersion(v))
    }
}

/// Applies the mutations of entry `index`, stamped `time`, in order. A
/// forwarded mutation that is a copy of one already applied gets the first
/// copy's outcome and index and changes nothing (see `sessions`).
fn apply_batch<'a>(
    state: &mut AppliedState,
    index: u64,
    format_version: u32,
    time: i64,
    mutations: impl IntoIterator<Item = &'a pb::Mutation>,
) -> Vec<Applied> {
    if format_version >= REQUEST_IDS_FORMAT {
        state.sessions.enable_request_ids();
    }
    state.entry_format = state.entry_format.max(format_version);
    let rules = codec::apply_rules(format_version);
    state.sessions.expire(time, index);
    mutations
        .into_iter()
        .map(|m| {
            let here = |outcome| Applied {
                outcome,
                earlier_index: None,
            };
            match &m.request {
                None => here(state.store.apply_one(time, rules, m)),
                Some(id) => match state.sessions.admit(id, time, index) {
                    Admission::Apply => {
                        let outcome = state.store.apply_one(time, rules, m);
                        state.sessions.record(id, &outcome, index);
                        here(outcome)
                    }
                    Admission::Repeat { outcome, index } => {
                        if bugs::active(Bug::RepeatedForwards) {
                            state.store.apply_one(time, rules, m);
                        }
                        Applied {
                            outcome,
                            earlier_index: Some(index),
                        }
                    }
                    Admission::Forgotten => here(sessions::forgotten_outcome()),
                },
            }
        })
        .collect()
}

/// Writes `bytes` to `dir/name` atomically and durably (temp file, fsync, rename, fsync dir).
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    write_atomically_with(dir, name, |out| out.write_all(bytes)).map(|_| ())
}

/// Writes `name` in `dir` through `write`, durably and atomically: a temporary
/// file is filled, synced and renamed over the old one, then the directory is
/// synced. Returns the number of bytes written.
fn write_atomically_with(
    dir: &Path,
    name: &str,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> std::io::Result<u64> {
    let tmp = dir.join(format!("{name}.tmp"));
    // An operator reads these errors in a node's failure: name the file.
    fn at(path: &Path) -> impl Fn(std::io::Error) -> std::io::Error + '_ {
        move |e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    }
    let written = {
        let mut out = BufWriter::with_capacity(256 << 10, File::create(&tmp).map_err(at(&tmp))?);
        write(&mut out).map_err(at(&tmp))?;
        let file = out.into_inner().map_err(|e| at(&tmp)(e.into_error()))?;
        file.sync_all().map_err(at(&tmp))?;
        file.metadata().map_err(at(&tmp))?.len()
    };
    std::fs::rename(&tmp, dir.join(name)).map_err(at(&tmp))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))?;
    Ok(written)
}

/// Encodes a snapshot record group by group into `out`: the same bytes a
/// decoder of `pb::Snapshot` reads, without holding a second copy of the store
/// (issue: building a snapshot must not double memory).
fn encode_snapshot(header: &pb::Snapshot, view: &StoreView, out: &mut impl Write) -> std::io::Result<()> {
    out.write_all(&header.encode_to_vec())?;
    let mut buf = Vec::new();
    for group in view.groups_pb() {
        buf.clear();
        prost::encoding::message::encode(SNAPSHOT_GROUPS_TAG, &group, &mut buf);
        out.write_all(&buf)?;
    }
    Ok(())
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
        let (view, sessions, last_log_id, membership, entry_format) = {
            let state = self.shared.state.read();
            (
                state.store.snapshot_view(),
                state.sessions.clone(),
                state.last_applied,
                state.membership.clone(),
                state.entry_format,
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
        let log_bytes_at_start = ClusterStats::get(&self.stats.log_bytes_appended);
        let bytes = crate::blocking::run(move || -> std::io::Result<u64> {
            let header = pb::Snapshot {
                // An older release that read a snapshot with sessions, or
                // with groups stored by newer rules, would misread it: it
                // must refuse it instead.
                format_version: snapshot_format(entry_format),
                last_log_id: last_log_id.as_ref().map(codec::log_id_to_pb),
                last_membership_log_id: membership.log_id().as_ref().map(codec::log_id_to_pb),
                last_membership: Some(codec::membership_to_pb(membership.membership())),
                snapshot_id: id,
                clock_unix_nanos: view.clock,
                groups: Vec::new(),
                request_ids: sessions.request_ids(),
                sessions: sessions.to_pb(),
            };
            write_atomically_with(&dir, SNAPSHOT_FILE, |out| encode_snapshot(&header, &view, out))
        })
        .await
        .map_err(|e| snapshot_err(ErrorVerb::Write, e))?
        .map_err(|e| snapshot_err(ErrorVerb::Write, e))?;
        ClusterStats::add(&self.stats.snapshots_built, 1);
        self.stats.record_snapshot(bytes, log_bytes_at_start);
        tracing::info!(index = last_log_id.map(|l| l.index), bytes, "built snapshot");
        Ok(Snapshot {
            meta: SnapshotMeta {
                last_log_id,
                last_membership: meta_membership,
                snapshot_id,
            },
            // openraft 0.9 keeps only the meta of a snapshot it asked to build
            // (sm/worker.rs); followers are sent the file via get_current_snapshot.
            // Not reading it back keeps a second copy of the store out of memory.
            snapshot: Box::new(Cursor::new(Vec::new())),
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
        let mut digest = self.shared.applied_digest.load(Ordering::Relaxed);
        let mut state = self.shared.state.write();
        let mut refused = None;
        for entry in entries {
            // Decoded and checked before anything changes: an entry this
            // release cannot apply leaves the state at the one before it.
            let batch = match &entry.payload {
                EntryPayload::Normal(LogPayload { bytes, decoded: None }) => match pb::Batch::decode(bytes.as_ref()) {
                    Ok(batch) => match newer_format(&batch, entry.log_id.index) {
                        Some(e) => {
                            refused = Some(StorageIOError::apply(entry.log_id, e.into_any_error()).into());
                            break;
                        }
                        None => Some(batch),
                    },
                    Err(e) => {
                        // Every replica has these bytes, so every replica skips them.
                        tracing::error!(index = entry.log_id.index, error = %e, "log entry does not decode; skipped");
                        None
                    }
                },
                _ => None,
            };
            state.last_applied = Some(entry.log_id);
            let mut position = [0u8; 16];
            position[..8].copy_from_slice(&entry.log_id.index.to_be_bytes());
            position[8..].copy_from_slice(&entry.log_id.leader_id.term.to_be_bytes());
            digest = fold_digest(digest, &position);
            if let EntryPayload::Normal(payload) = &entry.payload {
                digest = fold_digest(digest, &payload.bytes);
            }
            let outcome = match entry.payload {
                EntryPayload::Blank => BatchOutcome::default(),
                EntryPayload::Membership(m) => {
                    state.membership = StoredMembership::new(Some(entry.log_id), m);
                    BatchOutcome::default()
                }
                EntryPayload::Normal(_)
                    if bugs::active(Bug::DivergentApply) && self.node_id == 2 && entry.log_id.index % 10 == 0 =>
                {
                    BatchOutcome::default()
                }
                EntryPayload::Normal(LogPayload {
                    decoded: Some(batch), ..
                }) => {
                    let outcomes = apply_batch(
                        &mut state,
                        entry.log_id.index,
                        batch.format_version,
                        batch.time_unix_nanos,
                        batch.mutations.iter().map(|m| &**m),
                    );
                    ClusterStats::add(&self.stats.mutations_applied, outcomes.len() as u64);
                    BatchOutcome { outcomes }
                }
                EntryPayload::Normal(LogPayload { decoded: None, .. }) => match batch {
                    Some(batch) => {
                        let outcomes = apply_batch(
                            &mut state,
                            entry.log_id.index,
                            batch.format_version,
                            batch.time_unix_nanos,
                            batch.mutations.iter(),
                        );
                        ClusterStats::add(&self.stats.mutations_applied, outcomes.len() as u64);
                        BatchOutcome { outcomes }
                    }
                    None => BatchOutcome::default(),
                },
            };
            results.push(outcome);
        }
        let applied = state.last_applied.map_or(0, |l| l.index);
        self.shared
            .log_entry_format
            .store(state.entry_format, Ordering::Release);
        drop(state);
        self.shared.applied_digest.store(digest, Ordering::Relaxed);
        self.shared.applied_index.store(applied, Ordering::Release);
        if let Some(recent) = &self.recent {
            recent.applied(applied);
        }
        match refused {
            Some(e) => Err(e),
            None => Ok(results),
        }
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
        let record = pb::Snapshot::decode(bytes.as_slice())
            .map_err(|e| snapshot_err(ErrorVerb::Read, format!("does not decode: {e}")))?;
        if record.format_version > SNAPSHOT_FORMAT_VERSION {
            let e = NewerFormat {
                what: "the snapshot the leader sent".into(),
                detail: format!("snapshot format {}", record.format_version),
            };
            return Err(StorageIOError::new(ErrorSubject::Snapshot(None), ErrorVerb::Read, e.into_any_error()).into());
        }
        check_snapshot_version(record.format_version).map_err(|e| snapshot_err(ErrorVerb::Read, e))?;
        let dir = self.snapshot_dir.clone();
        let sessions = Sessions::from_pb(record.request_ids, &record.sessions);
        let entry_format = entry_format_of(&record);
        let store = crate::blocking::run(move || -> Result<(Store, Vec<u8>), String> {
            write_atomically(&dir, SNAPSHOT_FILE, &bytes).map_err(|e| e.to_string())?;
            let rules = codec::apply_rules(entry_format);
            Ok((Store::restore(record.clock_unix_nanos, &record.groups, rules)?, bytes))
        })
        .await
        .map_err(|e| sm_err(ErrorVerb::Write, e))?
        .map_err(|e| sm_err(ErrorVerb::Write, e))?;
        self.shared.log_entry_format.store(entry_format, Ordering::Release);
        *self.shared.state.write() = AppliedState {
            store: store.0,
            sessions,
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            entry_format,
        };
        self.shared
            .applied_index
            .store(meta.last_log_id.map_or(0, |l| l.index), Ordering::Release);
        ClusterStats::add(&self.stats.snapshots_installed, 1);
        let appended = ClusterStats::get(&self.stats.log_bytes_appended);
        self.stats.record_snapshot(store.1.len() as u64, appended);
        tracing::info!(
            index = meta.last_log_id.map(|l| l.index),
            "installed snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError> {
        let path = self.snapshot_dir.join(SNAPSHOT_FILE);
        let read = crate::blocking::run(move || std::fs::read(path))
            .await
            .map_err(|e| snapshot_err(ErrorVerb::Read, e))?;
        let bytes = match read {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    use openraft::storage::RaftStateMachine;
    use openraft::{CommittedLeaderId, EntryPayload};
    use prost::Message;

    use super::{encode_snapshot, pb, Applied, StateMachine};
    use crate::cluster::status::describe_failure;
    use crate::cluster::types::{Entry, LogId, LogPayload};
    use crate::model::store::key_to_pb;
    use crate::model::text_parse::parse_text;
    use crate::model::{GroupingKey, Store};

    /// The group-by-group encoder writes exactly what a one-shot encode of the
    /// whole record writes, so old and new snapshots read the same way.
    #[test]
    fn streamed_snapshot_equals_one_shot_encoding() {
        let mut store = Store::new();
        for job in ["a", "b", "c"] {
            let key = GroupingKey::from_labels([("job".to_string(), job.to_string())]).unwrap();
            let push = pb::Mutation {
                op: Some(pb::mutation::Op::Push(pb::Push {
                    grouping_key: key_to_pb(&key),
                    replace: true,
                    families: parse_text(b"# TYPE g gauge\ng{x=\"1\"} 1\ng{x=\"2\"} 2\n").unwrap(),
                    consistency_check: true,
                })),
                request: None,
            };
            store.apply_batch(1_700_000_000_000_000_000, crate::model::ApplyRules::NEWEST, &[push]);
        }
        let view = store.snapshot_view();
        let header = pb::Snapshot {
            format_version: 1,
            snapshot_id: "1-2-3".into(),
            clock_unix_nanos: view.clock,
            ..Default::default()
        };
        let mut streamed = Vec::new();
        encode_snapshot(&header, &view, &mut streamed).unwrap();
        let whole = pb::Snapshot {
            groups: view.groups_pb().collect(),
            ..header
        };
        assert_eq!(streamed, whole.encode_to_vec());
        assert_eq!(pb::Snapshot::decode(&streamed[..]).unwrap().groups.len(), 3);
    }

    fn push_of(job: &str) -> pb::Mutation {
        let key = GroupingKey::from_labels([("job".to_string(), job.to_string())]).unwrap();
        pb::Mutation {
            op: Some(pb::mutation::Op::Push(pb::Push {
                grouping_key: key_to_pb(&key),
                replace: true,
                families: parse_text(b"g 1\n").unwrap(),
                consistency_check: true,
            })),
            request: None,
        }
    }

    /// Builds a snapshot of `sm` (data in `dir`) and reads back the record
    /// it wrote.
    async fn snapshot_written(sm: &mut StateMachine, dir: &std::path::Path) -> pb::Snapshot {
        use openraft::RaftSnapshotBuilder;
        sm.get_snapshot_builder()
            .await
            .build_snapshot()
            .await
            .expect("snapshot");
        let bytes = std::fs::read(dir.join(super::SNAPSHOT_FILE)).expect("snapshot file");
        pb::Snapshot::decode(&bytes[..]).expect("a snapshot record")
    }

    /// A log entry as a follower receives it: encoded bytes only.
    fn entry(index: u64, format_version: u32, mutations: Vec<pb::Mutation>) -> Entry {
        let batch = pb::Batch {
            format_version,
            time_unix_nanos: 1_700_000_000_000_000_000,
            mutations,
        };
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(LogPayload::from_bytes(batch.encode_to_vec().into())),
        }
    }

    /// An entry a newer release wrote stops the state machine at the entry
    /// before it (skipping it would leave this replica's groups different
    /// from the newer replicas'), and the node's failure says to upgrade.
    #[tokio::test]
    async fn an_entry_of_a_newer_format_stops_apply_before_it() {
        let dir = tempfile::tempdir().expect("temp dir");
        let newer_kind = pb::Mutation {
            op: None,
            request: None,
        };
        for (newer, what) in [
            (
                entry(2, super::ENTRY_FORMAT_VERSION + 1, vec![push_of("b")]),
                "format 4",
            ),
            (entry(2, 1, vec![push_of("b"), newer_kind]), "a mutation of a kind"),
        ] {
            let mut sm = StateMachine::open(dir.path(), 1, Arc::default()).expect("state machine");
            let result = sm
                .apply(vec![
                    entry(1, 1, vec![push_of("a")]),
                    newer,
                    entry(3, 1, vec![push_of("c")]),
                ])
                .await;
            let Err(e) = result else {
                panic!("an entry with {what} was applied");
            };
            let state = sm.shared.state.read();
            assert_eq!(state.last_applied.map(|l| l.index), Some(1), "{what}");
            assert_eq!(
                state.store.group_count(),
                1,
                "{what}: only the entry before it is applied"
            );
            assert_eq!(sm.shared.applied_index.load(Ordering::Acquire), 1, "{what}");
            let failure = describe_failure(&Err(openraft::error::Fatal::StorageError(e))).expect("a failure");
            assert!(
                failure.starts_with("it cannot apply what the leader sent")
                    && failure.contains("log entry 2 was written by a newer pushgate")
                    && failure.contains(what)
                    && failure.contains("run the leader's release on it"),
                "{failure}"
            );
        }
    }

    /// Bytes that do not decode as a batch are skipped, as before: every
    /// replica has the same bytes, so every replica skips them.
    #[tokio::test]
    async fn an_entry_that_does_not_decode_is_skipped_on_every_replica() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sm = StateMachine::open(dir.path(), 1, Arc::default()).expect("state machine");
        let garbage = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
            payload: EntryPayload::Normal(LogPayload::from_bytes(bytes::Bytes::from_static(b"\xff\xff"))),
        };
        let results = sm
            .apply(vec![
                entry(1, 1, vec![push_of("a")]),
                garbage,
                entry(3, 1, vec![push_of("c")]),
            ])
            .await
            .expect("applied");
        assert_eq!(results.len(), 3);
        assert_eq!(sm.shared.state.read().store.group_count(), 2);
        assert_eq!(sm.shared.applied_index.load(Ordering::Acquire), 3);
    }

    fn forwarded(mut m: pb::Mutation, seq: u64) -> pb::Mutation {
        m.request = Some(pb::RequestId {
            node_id: 2,
            incarnation: 5,
            seq,
            answered_below: 1,
        });
        m
    }

    fn delete_of(job: &str) -> pb::Mutation {
        let key = GroupingKey::from_labels([("job".to_string(), job.to_string())]).unwrap();
        pb::Mutation {
            op: Some(pb::mutation::Op::Delete(pb::Delete {
                grouping_key: key_to_pb(&key),
            })),
            request: None,
        }
    }

    /// A forwarded DELETE sent again after the leader's answer was lost is
    /// applied once: its second copy in the log does not delete the push
    /// another client made in between, and answers like the first. The
    /// sessions are in the snapshot, so a replica restored from it
    /// recognises a later copy too.
    #[tokio::test]
    async fn a_forwarded_mutation_sent_again_is_applied_once() {
        let dir = tempfile::tempdir().expect("temp dir");
        let delete = forwarded(delete_of("a"), 1);
        let mut sm = StateMachine::open(dir.path(), 1, Arc::default()).expect("state machine");
        let results = sm
            .apply(vec![
                entry(1, 1, vec![push_of("a")]),
                entry(2, 2, vec![delete.clone()]),
                entry(3, 2, vec![push_of("a")]),
                entry(4, 2, vec![delete.clone()]),
            ])
            .await
            .expect("applied");
        let existed = crate::model::Outcome::Deleted { existed: true };
        let first = Applied {
            outcome: existed,
            earlier_index: None,
        };
        assert_eq!(results[1].outcomes, vec![first.clone()]);
        let copy = Applied {
            earlier_index: Some(2),
            ..first
        };
        assert_eq!(
            results[3].outcomes,
            vec![copy.clone()],
            "the copy answers like the first, at its index"
        );
        assert_eq!(
            sm.shared.state.read().store.group_count(),
            1,
            "the push after the first copy stays"
        );
        assert_eq!(sm.shared.log_entry_format.load(Ordering::Acquire), 2);

        assert_eq!(snapshot_written(&mut sm, dir.path()).await.format_version, 2);
        let mut restored = StateMachine::open(dir.path(), 1, Arc::default()).expect("restored");
        assert_eq!(restored.shared.log_entry_format.load(Ordering::Acquire), 2);
        let results = restored.apply(vec![entry(5, 2, vec![delete])]).await.expect("applied");
        assert_eq!(results[0].outcomes, vec![copy]);
        assert_eq!(restored.shared.state.read().store.group_count(), 1);
    }

    /// A protobuf push of a family whose HELP is present but empty: formats
    /// 1 and 2 drop that HELP, format 3 keeps it (`# HELP e `, as the
    /// reference writes it), and a snapshot of a log that reached format 3
    /// is format 3 and restores it so.
    #[tokio::test]
    async fn an_empty_help_is_kept_from_entry_format_3_on() {
        let empty_help = |job: &str| {
            let mut m = push_of(job);
            if let Some(pb::mutation::Op::Push(p)) = &mut m.op {
                p.families[0].name = Some("e".into());
                p.families[0].help = Some(String::new());
            }
            m
        };
        let text = |sm: &StateMachine| {
            let mut out = Vec::new();
            sm.shared.state.read().store.render_text(&mut out, &[], |_, _| {});
            String::from_utf8(out).expect("utf-8")
        };
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sm = StateMachine::open(dir.path(), 1, Arc::default()).expect("state machine");
        sm.apply(vec![
            entry(1, 1, vec![empty_help("a")]),
            entry(2, 2, vec![empty_help("b")]),
        ])
        .await
        .expect("applied");
        assert!(!text(&sm).contains("# HELP e"), "{}", text(&sm));
        sm.apply(vec![entry(3, 3, vec![empty_help("c")])])
            .await
            .expect("applied");
        let kept = text(&sm);
        assert!(kept.contains("# HELP e \n# TYPE e untyped\n"), "{kept}");
        assert_eq!(sm.shared.log_entry_format.load(Ordering::Acquire), 3);

        assert_eq!(snapshot_written(&mut sm, dir.path()).await.format_version, 3);
        let restored = StateMachine::open(dir.path(), 1, Arc::default()).expect("restored");
        assert_eq!(text(&restored), kept);
        assert_eq!(restored.shared.log_entry_format.load(Ordering::Acquire), 3);
    }

    /// Until the log holds a format-2 entry, snapshots stay format 1, which
    /// the release before reads.
    #[tokio::test]
    async fn a_snapshot_without_request_ids_keeps_the_base_format() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sm = StateMachine::open(dir.path(), 1, Arc::default()).expect("state machine");
        sm.apply(vec![entry(1, 1, vec![push_of("a")])]).await.expect("applied");
        let record = snapshot_written(&mut sm, dir.path()).await;
        assert_eq!((record.format_version, record.request_ids), (1, false));
    }
}
