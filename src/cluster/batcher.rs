//! Group commit: concurrent mutations share one log entry and one fsync.
//!
//! openraft 0.9 writes entries one at a time, so one entry per push would cap
//! throughput at the disk's fsync rate. Instead every mutation goes through a
//! bounded queue; a single task drains whatever is waiting into one `Batch`,
//! stamps it with the leader's clock and proposes it, with a few proposals in
//! flight at once so the queue fills while the disk syncs. Each caller gets
//! its own outcome back (the batch carries one result per mutation).
//!
//! The queue is the backpressure point: it is bounded in mutations and bytes,
//! and a mutation that does not fit is refused at once (HTTP 503) instead of
//! growing memory and latency without limit.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use prost::Message;
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::bugs::{self, Bug};
use super::codec::{self, BASE_ENTRY_FORMAT, ENTRY_FORMAT_VERSION, REQUEST_IDS_FORMAT};
use super::error::WriteError;
use super::stats::ClusterStats;
use super::types::{DecodedBatch, LogPayload, Raft};
use crate::model::Outcome;
use crate::pb::pushgate::v1 as pb;

/// Most mutations in one entry.
const MAX_BATCH_MUTATIONS: usize = 1024;
/// Most bytes of mutations in one entry (a larger single mutation goes alone).
const MAX_BATCH_BYTES: usize = 8 << 20;
/// Proposals in flight at once.
const MAX_IN_FLIGHT: usize = 1;

/// A committed mutation: what apply said, and the log index it was applied at.
#[derive(Debug, Clone)]
pub struct Committed {
    pub outcome: Outcome,
    pub index: u64,
}

pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

struct Pending {
    mutation: Arc<pb::Mutation>,
    size: usize,
    reply: oneshot::Sender<Result<Committed, WriteError>>,
    _budget: OwnedSemaphorePermit,
}

/// The submitting side of the queue.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
    capacity: usize,
    byte_budget: Arc<Semaphore>,
    budget_units: usize,
    stats: Arc<ClusterStats>,
    entry_format: Arc<AtomicU32>,
}

/// Bytes are budgeted in KiB units (the semaphore counts u32 permits).
fn units(bytes: usize) -> u32 {
    (bytes.div_ceil(1024)).clamp(1, u32::MAX as usize) as u32
}

impl Batcher {
    /// Starts the batching task for `raft`.
    pub fn start(
        raft: Raft,
        quorum: super::node::QuorumCheck,
        capacity: usize,
        max_bytes: usize,
        write_timeout: Duration,
        clock: Clock,
        stats: Arc<ClusterStats>,
    ) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let budget_units = units(max_bytes) as usize;
        let entry_format = Arc::new(AtomicU32::new(BASE_ENTRY_FORMAT));
        tokio::spawn(run(
            raft,
            quorum,
            rx,
            write_timeout,
            clock,
            stats.clone(),
            entry_format.clone(),
        ));
        Batcher {
            tx,
            capacity,
            byte_budget: Arc::new(Semaphore::new(budget_units)),
            budget_units,
            stats,
            entry_format,
        }
    }

    /// Writes entries in format [`ENTRY_FORMAT_VERSION`] from now on: every
    /// member applies it (see `codec::ENTRY_FORMAT_VERSION`).
    pub fn use_newest_entry_format(&self) {
        self.use_entry_format(ENTRY_FORMAT_VERSION);
    }

    /// Writes entries in `format` at least from now on (the format the log
    /// has reached: every member applies it, or stops at it anyway).
    pub fn use_entry_format(&self, format: u32) {
        self.entry_format.fetch_max(format, Ordering::Relaxed);
    }

    /// Queues a mutation and waits for its outcome.
    pub async fn submit(&self, mutation: Arc<pb::Mutation>) -> Result<Committed, WriteError> {
        if bugs::active(Bug::AckBeforeCommit) {
            let this = self.clone();
            tokio::spawn(async move { this.queue_and_wait(mutation).await });
            return Ok(Committed {
                outcome: Outcome::Pushed,
                index: 0,
            });
        }
        self.queue_and_wait(mutation).await
    }

    async fn queue_and_wait(&self, mutation: Arc<pb::Mutation>) -> Result<Committed, WriteError> {
        let size = mutation.encoded_len();
        let full = || WriteError::QueueFull {
            capacity: self.capacity,
            bytes: self.budget_units * 1024,
        };
        let need = units(size).min(self.budget_units as u32);
        let budget = match self.byte_budget.clone().try_acquire_many_owned(need) {
            Ok(p) => p,
            Err(_) => {
                ClusterStats::add(&self.stats.queue_rejected, 1);
                return Err(full());
            }
        };
        let (reply, rx) = oneshot::channel();
        let pending = Pending {
            mutation,
            size,
            reply,
            _budget: budget,
        };
        if self.tx.try_send(pending).is_err() {
            ClusterStats::add(&self.stats.queue_rejected, 1);
            return Err(full());
        }
        self.stats.queue_length.fetch_add(1, Ordering::Relaxed);
        rx.await
            .unwrap_or_else(|_| Err(WriteError::Stopped("the batcher stopped".into())))
    }
}

async fn run(
    raft: Raft,
    quorum: super::node::QuorumCheck,
    mut rx: mpsc::Receiver<Pending>,
    write_timeout: Duration,
    clock: Clock,
    stats: Arc<ClusterStats>,
    entry_format: Arc<AtomicU32>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        // Wait for a free proposal slot first, so that the queue keeps filling
        // while the disk is busy: the next batch is then as large as it can be.
        let Ok(slot) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else { return };
        let mut bytes = first.size;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_MUTATIONS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.size;
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        stats.queue_length.fetch_sub(batch.len() as u64, Ordering::Relaxed);
        ClusterStats::add(&stats.batches_proposed, 1);
        stats.batch_mutations.observe(batch.len() as f64);
        let raft = raft.clone();
        let quorum = quorum.clone();
        let time = clock();
        let floor = entry_format.load(Ordering::Relaxed);
        // Once every member applies the newest format (the steady state),
        // no mutation can need more: nothing to look at.
        let format = if floor >= ENTRY_FORMAT_VERSION {
            floor
        } else {
            let single_node = raft.metrics().borrow().membership_config.membership().nodes().count() == 1;
            batch_format(floor, single_node, batch.iter().map(|p| &*p.mutation))
        };
        let span = tracing::debug_span!("propose", mutations = batch.len(), bytes);
        tokio::spawn(
            async move {
                let _slot = slot;
                let (mutations, replies): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|p| (p.mutation, (p.reply, p._budget))).unzip();
                let bytes = encode_batch(format, time, &mutations);
                let decoded = Arc::new(DecodedBatch {
                    format_version: format,
                    time_unix_nanos: time,
                    mutations,
                });
                let write = raft.client_write(LogPayload { bytes, decoded: Some(decoded) });
                // Give up early (outcome unknown) if this leader loses its quorum
                // while the entry is pending, instead of holding clients for the
                // whole commit timeout. Only for that: a leader that is stopping
                // (also refused by the check) lets its pending entries commit.
                let quorum_lost = async {
                    loop {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if let Err(WriteError::NoQuorum(why)) = quorum.check() {
                            return why;
                        }
                    }
                };
                let result = tokio::select! {
                    r = tokio::time::timeout(write_timeout, write) => r.map_err(|_| WriteError::Timeout(write_timeout)),
                    why = quorum_lost => Err(WriteError::Uncertain(format!("{why} while the change was pending"))),
                };
                match result {
                    Ok(Ok(resp)) => {
                        let index = resp.log_id.index;
                        let mut outcomes = resp.data.outcomes.into_iter();
                        for (reply, _budget) in replies {
                            let r = match outcomes.next() {
                                Some(applied) => Ok(Committed {
                                    outcome: applied.outcome,
                                    index: applied.earlier_index.unwrap_or(index),
                                }),
                                None => Err(WriteError::Stopped("the committed entry could not be applied".into())),
                            };
                            let _ = reply.send(r);
                        }
                    }
                    Ok(Err(e)) => {
                        let err = map_write_error(e);
                        for (reply, _budget) in replies {
                            let _ = reply.send(Err(err.clone()));
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "a batch was not confirmed; its clients get 503 (outcome unknown)");
                        for (reply, _budget) in replies {
                            let _ = reply.send(Err(err.clone()));
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// Encodes a `pushgate.v1.Batch` from shared mutations (field by field, so
/// the mutations need not be copied into an owned `Batch`).
fn encode_batch(format: u32, time: i64, mutations: &[Arc<pb::Mutation>]) -> bytes::Bytes {
    use prost::encoding::{int64, message, uint32};
    let mut len = uint32::encoded_len(1, &format) + int64::encoded_len(2, &time);
    for m in mutations {
        len += message::encoded_len(3, &**m);
    }
    let mut buf = Vec::with_capacity(len);
    uint32::encode(1, &format, &mut buf);
    int64::encode(2, &time, &mut buf);
    for m in mutations {
        message::encode(3, &**m, &mut buf);
    }
    buf.into()
}

fn map_write_error(e: RaftError<u64, ClientWriteError<u64, openraft::BasicNode>>) -> WriteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => match f.leader_id {
            Some(id) => WriteError::NotLeader {
                leader_id: Some(id),
                leader_addr: f.leader_node.map(|n| n.addr),
            },
            None => WriteError::NoLeader,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => WriteError::Stopped(e.to_string()),
        RaftError::Fatal(f) => WriteError::Stopped(f.to_string()),
    }
}

/// The format of an entry of `mutations`, written by a leader whose members
/// all apply `floor` (see `codec::ENTRY_FORMAT_VERSION`): `floor`, or more
/// where a mutation needs it and every member applies that.
///
/// A single node is every member, and applies every format: it writes the
/// base format, so that its data directory stays readable by the releases
/// before, until a push needs more (an empty HELP). A forwarded mutation
/// carries its request id once the log has moved to format 2, which this
/// node may not know yet as a new leader: such an entry is format 2 at least
/// whatever `floor` says.
fn batch_format<'a>(floor: u32, single_node: bool, mutations: impl IntoIterator<Item = &'a pb::Mutation>) -> u32 {
    let ceiling = if single_node { ENTRY_FORMAT_VERSION } else { floor };
    mutations.into_iter().fold(floor, |format, m| {
        let needed = codec::format_needed(m);
        let format = if needed <= ceiling { format.max(needed) } else { format };
        if m.request.is_some() {
            format.max(REQUEST_IDS_FORMAT)
        } else {
            format
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::io::prometheus::client as pm;

    fn push_with_help(help: Option<&str>) -> pb::Mutation {
        pb::Mutation {
            op: Some(pb::mutation::Op::Push(pb::Push {
                families: vec![pm::MetricFamily {
                    name: Some("m".into()),
                    help: help.map(str::to_string),
                    ..Default::default()
                }],
                ..Default::default()
            })),
            request: None,
        }
    }

    #[test]
    fn an_entry_is_written_in_the_oldest_format_that_means_what_it_says() {
        let plain = push_with_help(Some("h"));
        let empty_help = push_with_help(Some(""));
        let forwarded = pb::Mutation {
            request: Some(pb::RequestId::default()),
            ..plain.clone()
        };
        let forwarded_empty_help = pb::Mutation {
            request: Some(pb::RequestId::default()),
            ..empty_help.clone()
        };
        // A single node: the base format unless a push needs more.
        assert_eq!(
            batch_format(BASE_ENTRY_FORMAT, true, [&plain, &push_with_help(None)]),
            1
        );
        assert_eq!(batch_format(BASE_ENTRY_FORMAT, true, [&plain, &empty_help]), 3);
        // A cluster before every member applies format 3: never more than
        // the floor, but a request id means the log has reached format 2.
        assert_eq!(batch_format(BASE_ENTRY_FORMAT, false, [&plain, &empty_help]), 1);
        assert_eq!(batch_format(BASE_ENTRY_FORMAT, false, [&plain, &forwarded]), 2);
        assert_eq!(batch_format(REQUEST_IDS_FORMAT, false, [&plain]), 2);
        assert_eq!(batch_format(REQUEST_IDS_FORMAT, false, [&forwarded_empty_help]), 2);
        // Once every member applies the newest, every entry is in it.
        assert_eq!(batch_format(ENTRY_FORMAT_VERSION, false, [&plain]), 3);
        assert_eq!(batch_format(ENTRY_FORMAT_VERSION, true, [&plain]), 3);
    }

    #[test]
    fn batch_encoding_matches_prost() {
        let m = pb::Mutation {
            op: Some(pb::mutation::Op::Wipe(pb::Wipe {})),
            request: None,
        };
        let d = pb::Mutation {
            op: Some(pb::mutation::Op::Delete(pb::Delete {
                grouping_key: vec![pb::Label {
                    name: "job".into(),
                    value: "x".into(),
                }],
            })),
            request: Some(pb::RequestId {
                node_id: 2,
                incarnation: 9,
                seq: 3,
                answered_below: 1,
            }),
        };
        let ours = encode_batch(ENTRY_FORMAT_VERSION, -5, &[Arc::new(m.clone()), Arc::new(d.clone())]);
        let theirs = pb::Batch {
            format_version: ENTRY_FORMAT_VERSION,
            time_unix_nanos: -5,
            mutations: vec![m, d],
        }
        .encode_to_vec();
        assert_eq!(ours.as_ref(), theirs.as_slice());
    }
}
