//! Counters the cluster layer keeps so batching and durability can be seen
//! from outside (exported as `pushgate_*` self metrics).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::pb::io::prometheus::client as pm;

const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];
/// 1 ms doubling to 8.192 s: the buckets of etcd's
/// `etcd_disk_wal_fsync_duration_seconds`, so that the thresholds operators
/// know from etcd (a p99 above 10 ms is a slow disk) read the same here.
const FSYNC_BUCKETS: &[f64] = &[
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096, 8.192,
];

pub struct ClusterStats {
    /// Mutations per proposed batch.
    pub batch_mutations: Histogram,
    /// Raft log entries written to the log store.
    pub entries_appended: AtomicU64,
    /// Bytes of the log entries written to the log store.
    pub log_bytes_appended: AtomicU64,
    /// fsync/fdatasync rounds that made appended entries durable.
    pub fsyncs: AtomicU64,
    /// How long each successful round took, in seconds.
    pub fsync_duration: Histogram,
    /// Times this node saw the leader change, the first leader it learned
    /// of included (as etcd's `leader_changes_seen_total` counts).
    pub leader_changes: AtomicU64,
    /// Log entries read back (to replicate or apply) from the in-memory run
    /// of appended entries, and from disk.
    pub entries_read_memory: AtomicU64,
    pub entries_read_disk: AtomicU64,
    /// Client mutations applied to the state machine.
    pub mutations_applied: AtomicU64,
    /// Batches (log entries) proposed by this node's batcher.
    pub batches_proposed: AtomicU64,
    /// Mutations refused because the queue was full.
    pub queue_rejected: AtomicU64,
    /// Mutations waiting to be proposed.
    pub queue_length: AtomicU64,
    /// Forwarded mutations sent again after the leader's answer was lost.
    pub forwards_repeated: AtomicU64,
    /// Last committed log index this node knows of.
    pub committed_index: AtomicU64,
    /// Snapshots built locally / installed from a leader.
    pub snapshots_built: AtomicU64,
    pub snapshots_installed: AtomicU64,
    /// Size of the newest snapshot, and `log_bytes_appended` when it was begun
    /// (the size-based snapshot trigger compares the two).
    pub snapshot_bytes: AtomicU64,
    pub log_bytes_at_snapshot: AtomicU64,
}

impl Default for ClusterStats {
    fn default() -> Self {
        ClusterStats {
            batch_mutations: Histogram::new(BATCH_BUCKETS, 1.0),
            entries_appended: AtomicU64::new(0),
            log_bytes_appended: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            fsync_duration: Histogram::new(FSYNC_BUCKETS, 1e6),
            leader_changes: AtomicU64::new(0),
            entries_read_memory: AtomicU64::new(0),
            entries_read_disk: AtomicU64::new(0),
            mutations_applied: AtomicU64::new(0),
            batches_proposed: AtomicU64::new(0),
            queue_rejected: AtomicU64::new(0),
            queue_length: AtomicU64::new(0),
            forwards_repeated: AtomicU64::new(0),
            committed_index: AtomicU64::new(0),
            snapshots_built: AtomicU64::new(0),
            snapshots_installed: AtomicU64::new(0),
            snapshot_bytes: AtomicU64::new(0),
            log_bytes_at_snapshot: AtomicU64::new(0),
        }
    }
}

impl ClusterStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// A snapshot of `bytes` now stands for the log up to `log_bytes_at`
    /// (`log_bytes_appended` when it was begun).
    pub fn record_snapshot(&self, bytes: u64, log_bytes_at: u64) {
        self.snapshot_bytes.store(bytes, Ordering::Relaxed);
        self.log_bytes_at_snapshot.store(log_bytes_at, Ordering::Relaxed);
    }

    /// Bytes of log appended since the newest snapshot was begun.
    pub fn log_bytes_since_snapshot(&self) -> u64 {
        Self::get(&self.log_bytes_appended).saturating_sub(Self::get(&self.log_bytes_at_snapshot))
    }
}

/// A fixed-bucket histogram with atomic counters.
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
    scale: f64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64], scale: f64) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            scale,
        }
    }

    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add((v * self.scale) as u64, Ordering::Relaxed);
    }

    pub fn to_pb(&self) -> pm::Histogram {
        let mut cumulative = 0;
        let bucket = self
            .bounds
            .iter()
            .zip(&self.counts)
            .map(|(b, c)| {
                cumulative += c.load(Ordering::Relaxed);
                pm::Bucket {
                    upper_bound: Some(*b),
                    cumulative_count: Some(cumulative),
                    ..Default::default()
                }
            })
            .collect();
        pm::Histogram {
            sample_count: Some(self.count.load(Ordering::Relaxed)),
            sample_sum: Some(self.sum_micros.load(Ordering::Relaxed) as f64 / self.scale),
            bucket,
            ..Default::default()
        }
    }
}
