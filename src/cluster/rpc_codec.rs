//! Conversions between openraft's RPC messages and the `pushgate.v1` replica
//! protocol (field by field, so that the wire format is ours and versioned).

use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse};

use super::codec::{self, CodecError, FORMAT_VERSION};
use super::types::{SnapshotMeta, StoredMembership, TypeConfig, Vote};
use crate::model::Outcome;
use crate::pb::pushgate::v1 as pb;

fn vote_pb(v: &Vote) -> pb::Vote {
    codec::vote_to_pb(v)
}

fn vote_of(v: Option<&pb::Vote>) -> Result<Vote, CodecError> {
    codec::vote_from_pb(v.ok_or(CodecError::Missing("vote"))?)
}

pub fn append_request_to_pb(r: &AppendEntriesRequest<TypeConfig>) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        vote: Some(vote_pb(&r.vote)),
        prev_log_id: r.prev_log_id.as_ref().map(codec::log_id_to_pb),
        entries: r.entries.iter().map(codec::entry_to_pb).collect(),
        leader_commit: r.leader_commit.as_ref().map(codec::log_id_to_pb),
    }
}

pub fn append_request_from_pb(r: pb::AppendEntriesRequest) -> Result<AppendEntriesRequest<TypeConfig>, CodecError> {
    Ok(AppendEntriesRequest {
        vote: vote_of(r.vote.as_ref())?,
        prev_log_id: r.prev_log_id.as_ref().map(codec::log_id_from_pb),
        entries: r
            .entries
            .into_iter()
            .map(codec::entry_from_pb)
            .collect::<Result<_, _>>()?,
        leader_commit: r.leader_commit.as_ref().map(codec::log_id_from_pb),
    })
}

pub fn append_response_to_pb(r: &AppendEntriesResponse<u64>) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match r {
        AppendEntriesResponse::Success => R::Success(pb::Empty {}),
        AppendEntriesResponse::PartialSuccess(m) => R::PartialSuccess(pb::OptionalLogId {
            format_version: FORMAT_VERSION,
            log_id: m.as_ref().map(codec::log_id_to_pb),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(pb::Empty {}),
        AppendEntriesResponse::HigherVote(v) => R::HigherVote(vote_pb(v)),
    };
    pb::AppendEntriesResponse { result: Some(result) }
}

pub fn append_response_from_pb(r: pb::AppendEntriesResponse) -> Result<AppendEntriesResponse<u64>, CodecError> {
    use pb::append_entries_response::Result as R;
    Ok(match r.result.ok_or(CodecError::Missing("append entries result"))? {
        R::Success(_) => AppendEntriesResponse::Success,
        R::PartialSuccess(m) => AppendEntriesResponse::PartialSuccess(m.log_id.as_ref().map(codec::log_id_from_pb)),
        R::Conflict(_) => AppendEntriesResponse::Conflict,
        R::HigherVote(v) => AppendEntriesResponse::HigherVote(codec::vote_from_pb(&v)?),
    })
}

pub fn vote_request_to_pb(r: &VoteRequest<u64>) -> pb::VoteRequest {
    pb::VoteRequest {
        vote: Some(vote_pb(&r.vote)),
        last_log_id: r.last_log_id.as_ref().map(codec::log_id_to_pb),
    }
}

pub fn vote_request_from_pb(r: pb::VoteRequest) -> Result<VoteRequest<u64>, CodecError> {
    Ok(VoteRequest {
        vote: vote_of(r.vote.as_ref())?,
        last_log_id: r.last_log_id.as_ref().map(codec::log_id_from_pb),
    })
}

pub fn vote_response_to_pb(r: &VoteResponse<u64>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_pb(&r.vote)),
        vote_granted: r.vote_granted,
        last_log_id: r.last_log_id.as_ref().map(codec::log_id_to_pb),
    }
}

pub fn vote_response_from_pb(r: pb::VoteResponse) -> Result<VoteResponse<u64>, CodecError> {
    Ok(VoteResponse {
        vote: vote_of(r.vote.as_ref())?,
        vote_granted: r.vote_granted,
        last_log_id: r.last_log_id.as_ref().map(codec::log_id_from_pb),
    })
}

pub fn snapshot_meta_to_pb(m: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: m.last_log_id.as_ref().map(codec::log_id_to_pb),
        last_membership_log_id: m.last_membership.log_id().as_ref().map(codec::log_id_to_pb),
        last_membership: Some(codec::membership_to_pb(m.last_membership.membership())),
        snapshot_id: m.snapshot_id.clone(),
    }
}

pub fn snapshot_meta_from_pb(m: &pb::SnapshotMeta) -> SnapshotMeta {
    SnapshotMeta {
        last_log_id: m.last_log_id.as_ref().map(codec::log_id_from_pb),
        last_membership: StoredMembership::new(
            m.last_membership_log_id.as_ref().map(codec::log_id_from_pb),
            m.last_membership
                .as_ref()
                .map(codec::membership_from_pb)
                .unwrap_or_default(),
        ),
        snapshot_id: m.snapshot_id.clone(),
    }
}

pub fn snapshot_response_from_pb(r: pb::InstallSnapshotResponse) -> Result<SnapshotResponse<u64>, CodecError> {
    Ok(SnapshotResponse {
        vote: vote_of(r.vote.as_ref())?,
    })
}

pub fn outcome_to_pb(o: &Outcome) -> pb::Outcome {
    use pb::outcome::Kind;
    let kind = match o {
        Outcome::Pushed => Kind::Pushed(pb::Empty {}),
        Outcome::Rejected { message } => Kind::Rejected(message.clone()),
        Outcome::KeyConflict { message } => Kind::KeyConflict(message.clone()),
        Outcome::Deleted { existed } => Kind::DeletedExisted(*existed),
        Outcome::Wiped { groups } => Kind::WipedGroups(*groups),
        Outcome::Malformed { message } => Kind::Malformed(message.clone()),
    };
    pb::Outcome { kind: Some(kind) }
}

pub fn outcome_from_pb(o: pb::Outcome) -> Outcome {
    use pb::outcome::Kind;
    match o.kind {
        Some(Kind::Pushed(_)) => Outcome::Pushed,
        Some(Kind::Rejected(message)) => Outcome::Rejected { message },
        Some(Kind::KeyConflict(message)) => Outcome::KeyConflict { message },
        Some(Kind::DeletedExisted(existed)) => Outcome::Deleted { existed },
        Some(Kind::WipedGroups(groups)) => Outcome::Wiped { groups },
        Some(Kind::Malformed(message)) => Outcome::Malformed { message },
        None => Outcome::Malformed {
            message: "the leader sent an outcome this node does not understand".into(),
        },
    }
}
