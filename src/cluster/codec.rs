//! Conversions between openraft's types and pushgate's own versioned protobuf
//! records. Nothing of openraft's serde form ever reaches the disk, so a later
//! openraft upgrade can still read old data directories.

use std::collections::{BTreeMap, BTreeSet};

use openraft::{BasicNode, CommittedLeaderId, EntryPayload};

use super::types::{Entry, LogId, LogPayload, Membership, Vote};
use crate::model::ApplyRules;
use crate::pb::pushgate::v1 as pb;

/// The only format version of the records this build keeps on its own disk
/// (vote, log records, identity, snapshot files) and reads back.
pub const FORMAT_VERSION: u32 = 1;

/// The format of a replicated entry's payload (`pb::Batch`), together with
/// the rules apply follows for it.
///
/// Unlike the records above, an entry is written by the leader and applied by
/// every member, and during a rolling upgrade the members run different
/// releases. Rules for a release that changes entries:
///
/// * adding a mutation kind, a field that apply must not ignore, or changing
///   what apply does with an entry raises this version (an older release that
///   applied the entry by its old rules would end up with other groups than
///   the rest at the same index);
/// * it writes the new version only once every member reports, in the
///   `Status` call's `entry_format`, that it applies it, and keeps applying
///   the versions before it;
/// * a member that meets an entry of a version it does not know stops
///   instead of skipping it ([`NewerFormat`], `StateMachine::apply`), and
///   applies the entry once it runs a release that knows it.
///
/// The same rules hold for the snapshot a leader sends a follower
/// (`pb::Snapshot::format_version`, [`SNAPSHOT_FORMAT_VERSION`]): a
/// release that changes it sends the new form only to members that read it.
///
/// Versions:
///
/// 1. the first;
/// 2. a forwarded mutation carries a `RequestId`, and apply applies only the
///    first copy of each (`sessions`). The first format-2 entry in the log
///    also tells every follower that it may send a forwarded mutation again
///    when the leader's answer was lost;
/// 3. apply keeps a pushed family's HELP that is present but empty
///    (`model::ApplyRules::keep_empty_help`: a Go client's protobuf push of a
///    metric made without help, shown as `# HELP name ` as the reference
///    shows it); before, it dropped it.
///
/// Each version keeps the rules of the ones before it.
pub const ENTRY_FORMAT_VERSION: u32 = 3;

/// The first entry format whose forwarded mutations carry a request id.
pub const REQUEST_IDS_FORMAT: u32 = 2;

/// The first entry format whose apply keeps an empty HELP.
pub const EMPTY_HELP_FORMAT: u32 = 3;

/// The entry format a leader writes until every member applies
/// [`ENTRY_FORMAT_VERSION`]. A single node writes it too unless a batch
/// needs more ([`format_needed`]): its data directory then stays readable by
/// the releases before until a push needs the newest rules.
pub const BASE_ENTRY_FORMAT: u32 = 1;

/// The newest snapshot record format (`pb::Snapshot::format_version`): a
/// snapshot has the entry format the log had reached when it was built (2
/// holds the forwarded mutations' sessions, 3 groups stored by format 3's
/// rules, both of which an older release would misread), and
/// [`FORMAT_VERSION`] before format 2.
pub const SNAPSHOT_FORMAT_VERSION: u32 = ENTRY_FORMAT_VERSION;

/// How apply treats the mutations of an entry in `format` (or the groups of
/// a snapshot built from a log that had reached it).
pub fn apply_rules(format: u32) -> ApplyRules {
    ApplyRules {
        keep_empty_help: format >= EMPTY_HELP_FORMAT,
    }
}

/// The oldest entry format that applies `mutation` as this release means
/// it: [`REQUEST_IDS_FORMAT`] for a forwarded one (its request id),
/// [`EMPTY_HELP_FORMAT`] for a push with an empty HELP, else the base.
pub fn format_needed(mutation: &pb::Mutation) -> u32 {
    if let Some(pb::mutation::Op::Push(push)) = &mutation.op {
        if push.families.iter().any(|f| f.help.as_deref() == Some("")) {
            return EMPTY_HELP_FORMAT;
        }
    }
    if mutation.request.is_some() {
        REQUEST_IDS_FORMAT
    } else {
        BASE_ENTRY_FORMAT
    }
}

/// The type `NewerFormat` errors carry through openraft's `StorageError`, so
/// that a node's failure can say "upgrade this node" rather than "its
/// storage failed" (see `status::describe_failure`).
pub const NEWER_FORMAT: &str = "incompatible release";

/// A committed entry or a snapshot from the leader that this release cannot
/// apply because a newer one wrote it. Never skipped, see
/// [`ENTRY_FORMAT_VERSION`].
#[derive(Debug, thiserror::Error)]
#[error(
    "{what} was written by a newer pushgate ({detail}; pushgate {release} applies entry format \
     {ENTRY_FORMAT_VERSION}). This node stopped before applying it, so that its groups do not differ from the \
     other members': run the leader's release on it (see pushgate cluster status) and restart it, and it \
     catches up",
    release = crate::build_info::BUILD_VERSION
)]
pub struct NewerFormat {
    /// What could not be applied, e.g. "log entry 120".
    pub what: String,
    /// What about it is unknown, e.g. "format 2".
    pub detail: String,
}

impl NewerFormat {
    /// As the source of an openraft storage error, marked so that
    /// `describe_failure` recognises it.
    pub fn into_any_error(self) -> openraft::AnyError {
        openraft::AnyError::error(self.to_string()).with_type(Some(NEWER_FORMAT))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("record has format version {0}; this pushgate understands version {FORMAT_VERSION} only")]
    UnknownVersion(u32),
    #[error("record is missing its {0}")]
    Missing(&'static str),
    #[error("record does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
}

pub fn check_version(v: u32) -> Result<(), CodecError> {
    if v == FORMAT_VERSION {
        Ok(())
    } else {
        Err(CodecError::UnknownVersion(v))
    }
}

pub fn log_id_to_pb(id: &LogId) -> pb::LogId {
    pb::LogId {
        term: id.leader_id.term,
        node_id: id.leader_id.node_id,
        index: id.index,
    }
}

pub fn log_id_from_pb(id: &pb::LogId) -> LogId {
    LogId::new(CommittedLeaderId::new(id.term, id.node_id), id.index)
}

pub fn vote_to_pb(v: &Vote) -> pb::Vote {
    pb::Vote {
        format_version: FORMAT_VERSION,
        term: v.leader_id.term,
        node_id: v.leader_id.node_id,
        committed: v.committed,
    }
}

pub fn vote_from_pb(v: &pb::Vote) -> Result<Vote, CodecError> {
    check_version(v.format_version)?;
    Ok(if v.committed {
        Vote::new_committed(v.term, v.node_id)
    } else {
        Vote::new(v.term, v.node_id)
    })
}

pub fn membership_to_pb(m: &Membership) -> pb::Membership {
    pb::Membership {
        configs: m
            .get_joint_config()
            .iter()
            .map(|c| pb::VoterSet {
                ids: c.iter().copied().collect(),
            })
            .collect(),
        nodes: m
            .nodes()
            .map(|(id, n)| pb::Node {
                id: *id,
                addr: n.addr.clone(),
            })
            .collect(),
    }
}

pub fn membership_from_pb(m: &pb::Membership) -> Membership {
    let configs: Vec<BTreeSet<u64>> = m.configs.iter().map(|c| c.ids.iter().copied().collect()).collect();
    let nodes: BTreeMap<u64, BasicNode> = m
        .nodes
        .iter()
        .map(|n| (n.id, BasicNode { addr: n.addr.clone() }))
        .collect();
    Membership::new(configs, nodes)
}

pub fn entry_to_pb(e: &Entry) -> pb::LogEntry {
    let payload = match &e.payload {
        EntryPayload::Blank => pb::log_entry::Payload::Blank(pb::BlankPayload {}),
        EntryPayload::Normal(payload) => pb::log_entry::Payload::Batch(payload.bytes.clone()),
        EntryPayload::Membership(m) => pb::log_entry::Payload::Membership(membership_to_pb(m)),
    };
    pb::LogEntry {
        format_version: FORMAT_VERSION,
        log_id: Some(log_id_to_pb(&e.log_id)),
        payload: Some(payload),
    }
}

pub fn entry_from_pb(e: pb::LogEntry) -> Result<Entry, CodecError> {
    check_version(e.format_version)?;
    let log_id = log_id_from_pb(&e.log_id.ok_or(CodecError::Missing("log id"))?);
    let payload = match e.payload.ok_or(CodecError::Missing("payload"))? {
        pb::log_entry::Payload::Blank(_) => EntryPayload::Blank,
        pb::log_entry::Payload::Batch(bytes) => EntryPayload::Normal(LogPayload::from_bytes(bytes)),
        pb::log_entry::Payload::Membership(m) => EntryPayload::Membership(membership_from_pb(&m)),
    };
    Ok(Entry { log_id, payload })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip() {
        let id = LogId::new(CommittedLeaderId::new(3, 2), 17);
        let mut nodes = BTreeMap::new();
        nodes.insert(1, BasicNode { addr: "a:1".into() });
        nodes.insert(2, BasicNode { addr: "b:2".into() });
        let m = Membership::new(vec![[1u64, 2].into_iter().collect()], nodes);
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(LogPayload::from_bytes(bytes::Bytes::from_static(b"xyz"))),
            EntryPayload::Membership(m),
        ] {
            let e = Entry { log_id: id, payload };
            let back = entry_from_pb(entry_to_pb(&e)).unwrap();
            assert_eq!(format!("{e:?}"), format!("{back:?}"));
        }
    }

    #[test]
    fn unknown_versions_are_refused() {
        let v = pb::Vote {
            format_version: 99,
            ..Default::default()
        };
        assert!(matches!(vote_from_pb(&v), Err(CodecError::UnknownVersion(99))));
    }
}
