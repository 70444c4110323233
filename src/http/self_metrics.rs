//! The gateway's own metrics (`pushgate_*` and `process_*`), kept as plain
//! counters and rendered as `io.prometheus.client` families so they share the
//! exposition code with pushed metrics. The names and types must match
//! `model::reserved::SELF_FAMILIES`, which the consistency check relies on.

use std::collections::BTreeMap;

use parking_lot::Mutex;

use crate::cluster::stats::{ClusterStats, Histogram};
use crate::gateway::Gateway;
use crate::pb::io::prometheus::client as pm;

const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const SIZE_BUCKETS: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
];

/// Counters owned by the HTTP layer, plus readers of everything else.
pub struct SelfMetrics {
    requests: Mutex<BTreeMap<(String, &'static str, String), u64>>,
    push_duration: [Histogram; 2],
    push_size: [Histogram; 2],
    start_time: f64,
}

/// Index into the per-method histograms: 0 for PUT, 1 for POST. HTTP
/// methods arrive upper case (`Method::as_str`), the labels are lower case.
fn method_index(method: &str) -> usize {
    usize::from(!method.eq_ignore_ascii_case("put"))
}

impl Default for SelfMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl SelfMetrics {
    pub fn new() -> Self {
        SelfMetrics {
            requests: Mutex::new(BTreeMap::new()),
            push_duration: [
                Histogram::new(DURATION_BUCKETS, 1e6),
                Histogram::new(DURATION_BUCKETS, 1e6),
            ],
            push_size: [Histogram::new(SIZE_BUCKETS, 1.0), Histogram::new(SIZE_BUCKETS, 1.0)],
            start_time: process_start_time().unwrap_or(0.0),
        }
    }

    pub fn count_request(&self, code: u16, handler: &'static str, method: &str) {
        let key = (code.to_string(), handler, method.to_ascii_lowercase());
        *self.requests.lock().entry(key).or_default() += 1;
    }

    pub fn observe_push(&self, method: &str, seconds: f64, bytes: usize) {
        let i = method_index(method);
        self.push_duration[i].observe(seconds);
        self.push_size[i].observe(bytes as f64);
    }

    /// Every own family (in no particular order; rendering sorts).
    pub fn families(&self, gateway: &Gateway, groups: u64, series: u64) -> Vec<pm::MetricFamily> {
        let stats = gateway.stats();
        let status = gateway.status();
        let mut out = Vec::new();
        let process = ProcessStats::read();
        out.push(counter(
            "process_cpu_seconds_total",
            "Total user and system CPU time spent in seconds.",
            process.cpu_seconds,
        ));
        out.push(gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            process.max_fds,
        ));
        out.push(gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            process.open_fds,
        ));
        out.push(gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            process.rss_bytes,
        ));
        out.push(gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            self.start_time,
        ));
        out.push(gauge(
            "process_threads",
            "Number of OS threads in the process.",
            process.threads,
        ));
        out.push(gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            process.vsize_bytes,
        ));
        out.push(gauge(
            "process_virtual_memory_max_bytes",
            "Maximum amount of virtual memory available in bytes.",
            process.max_vsize_bytes,
        ));
        out.push(histogram(
            "pushgate_batch_mutations",
            "Mutations per proposed log entry (group commit batch size).",
            vec![],
            stats.batch_mutations.to_pb(),
        ));
        out.push(labeled_gauge(
            "pushgate_build_info",
            "Build information of pushgate.",
            vec![
                ("version", crate::build_info::VERSION),
                ("revision", crate::build_info::REVISION),
            ],
            1.0,
        ));
        out.push(labeled_gauge(
            "pushgateway_build_info",
            "A metric with a constant '1' value labeled by version, revision, branch, and goversion from which pushgateway was built.",
            vec![("version", crate::build_info::VERSION), ("revision", crate::build_info::REVISION)],
            1.0,
        ));
        out.push(gauge("pushgate_groups", "Groups currently stored.", groups as f64));
        let mut durations = Vec::new();
        let mut sizes = Vec::new();
        for (i, method) in ["put", "post"].iter().enumerate() {
            durations.push(metric_with(vec![("method", method)], |m| {
                m.histogram = Some(self.push_duration[i].to_pb())
            }));
            sizes.push(metric_with(vec![("method", method)], |m| {
                m.histogram = Some(self.push_size[i].to_pb())
            }));
        }
        out.push(family(
            "pushgate_http_push_duration_seconds",
            "HTTP request duration of pushes, from request to durable answer.",
            pm::MetricType::Histogram,
            durations,
        ));
        out.push(family(
            "pushgate_http_push_size_bytes",
            "HTTP request size of pushes (as received, before decompression).",
            pm::MetricType::Histogram,
            sizes,
        ));
        let requests: Vec<pm::Metric> = self
            .requests
            .lock()
            .iter()
            .map(|((code, handler, method), n)| {
                metric_with(vec![("code", code), ("handler", handler), ("method", method)], |m| {
                    m.counter = Some(pm::Counter {
                        value: Some(*n as f64),
                        ..Default::default()
                    })
                })
            })
            .collect();
        // The reference's names too, so existing dashboards and the documented
        // alert on pushgateway_http_requests_total{code="400",handler="push"} keep working.
        out.push(family(
            "pushgateway_http_requests_total",
            "Total HTTP requests processed by the Pushgateway, excluding scrapes.",
            pm::MetricType::Counter,
            requests.clone(),
        ));
        out.push(family(
            "pushgate_http_requests_total",
            "Total HTTP requests processed, by handler, code and method.",
            pm::MetricType::Counter,
            requests,
        ));
        out.push(counter(
            "pushgate_log_entries_appended_total",
            "Raft log entries written to this node's log.",
            ClusterStats::get(&stats.entries_appended) as f64,
        ));
        out.push(histogram(
            "pushgate_log_fsync_duration_seconds",
            "Time each round that made appended Raft log entries durable took (write out and fdatasync).",
            vec![],
            stats.fsync_duration.to_pb(),
        ));
        out.push(counter(
            "pushgate_log_fsyncs_total",
            "fsync rounds that made Raft log entries durable on this node.",
            ClusterStats::get(&stats.fsyncs) as f64,
        ));
        let read = |from: &str, n: &std::sync::atomic::AtomicU64| {
            metric_with(vec![("from", from)], |m| {
                m.counter = Some(pm::Counter {
                    value: Some(ClusterStats::get(n) as f64),
                    ..Default::default()
                })
            })
        };
        out.push(family(
            "pushgate_log_entries_read_total",
            "Raft log entries read back to replicate or apply them, from memory (appended, not yet applied) or from disk.",
            pm::MetricType::Counter,
            vec![
                read("disk", &stats.entries_read_disk),
                read("memory", &stats.entries_read_memory),
            ],
        ));
        out.push(gauge(
            "pushgate_mutation_queue_length",
            "Mutations waiting to be proposed by this node.",
            ClusterStats::get(&stats.queue_length) as f64,
        ));
        out.push(counter(
            "pushgate_mutation_queue_rejected_total",
            "Mutations refused with 503 because the queue was full.",
            ClusterStats::get(&stats.queue_rejected) as f64,
        ));
        out.push(counter(
            "pushgate_mutations_applied_total",
            "Mutations (pushes, deletes, wipes) applied to this node's state machine.",
            ClusterStats::get(&stats.mutations_applied) as f64,
        ));
        out.push(gauge(
            "pushgate_raft_applied_index",
            "Index of the last log entry applied on this node.",
            status.applied_index as f64,
        ));
        out.push(gauge(
            "pushgate_raft_commit_index",
            "Index of the last log entry known committed on this node.",
            status.committed_index as f64,
        ));
        out.push(gauge(
            "pushgate_raft_is_leader",
            "1 if this node is the Raft leader.",
            if status.state == "Leader" { 1.0 } else { 0.0 },
        ));
        out.push(gauge(
            "pushgate_raft_last_log_index",
            "Index of the last entry in this node's log.",
            status.last_log_index as f64,
        ));
        out.push(gauge(
            "pushgate_raft_leader_id",
            "Node id of the leader this node knows of (0 if none).",
            status.leader_id.unwrap_or(0) as f64,
        ));
        out.push(counter(
            "pushgate_raft_leader_changes_seen_total",
            "Times this node learned of a leader for a new term (the first leader it saw included).",
            ClusterStats::get(&stats.leader_changes) as f64,
        ));
        // Only a leader knows how far each member has replicated; elsewhere
        // the family has no series and is left out, as client libraries
        // leave out a labelled family with no children.
        let lag: Vec<pm::Metric> = status
            .replication_lag
            .iter()
            .flatten()
            .filter(|(id, _)| **id != status.node_id)
            .map(|(id, entries)| {
                let id = id.to_string();
                metric_with(vec![("follower", &id)], |m| {
                    m.gauge = Some(pm::Gauge {
                        value: Some(*entries as f64),
                    })
                })
            })
            .collect();
        if !lag.is_empty() {
            out.push(family(
                "pushgate_raft_replication_lag_entries",
                "Entries in the leader's log that a member (voter or learner) has not confirmed yet; exported by the leader only.",
                pm::MetricType::Gauge,
                lag,
            ));
        }
        out.push(gauge(
            "pushgate_raft_term",
            "Current Raft term of this node.",
            status.term as f64,
        ));
        out.push(gauge(
            "pushgate_series",
            "Series currently stored (a summary or histogram counts once).",
            series as f64,
        ));
        out.push(counter(
            "pushgate_snapshots_built_total",
            "Snapshots of the state machine built on this node.",
            ClusterStats::get(&stats.snapshots_built) as f64,
        ));
        out.push(counter(
            "pushgate_snapshots_installed_total",
            "Snapshots received from a leader and installed on this node.",
            ClusterStats::get(&stats.snapshots_installed) as f64,
        ));
        out
    }
}

fn metric_with(labels: Vec<(&str, &str)>, set: impl FnOnce(&mut pm::Metric)) -> pm::Metric {
    let mut m = pm::Metric {
        label: labels
            .into_iter()
            .map(|(n, v)| pm::LabelPair {
                name: Some(n.to_string()),
                value: Some(v.to_string()),
            })
            .collect(),
        ..Default::default()
    };
    set(&mut m);
    m
}

fn family(name: &str, help: &str, kind: pm::MetricType, metric: Vec<pm::Metric>) -> pm::MetricFamily {
    pm::MetricFamily {
        name: Some(name.to_string()),
        help: Some(help.to_string()),
        r#type: Some(kind as i32),
        metric,
        unit: None,
    }
}

fn gauge(name: &str, help: &str, v: f64) -> pm::MetricFamily {
    labeled_gauge(name, help, vec![], v)
}

fn labeled_gauge(name: &str, help: &str, labels: Vec<(&str, &str)>, v: f64) -> pm::MetricFamily {
    family(
        name,
        help,
        pm::MetricType::Gauge,
        vec![metric_with(labels, |m| m.gauge = Some(pm::Gauge { value: Some(v) }))],
    )
}

fn counter(name: &str, help: &str, v: f64) -> pm::MetricFamily {
    family(
        name,
        help,
        pm::MetricType::Counter,
        vec![metric_with(vec![], |m| {
            m.counter = Some(pm::Counter {
                value: Some(v),
                ..Default::default()
            })
        })],
    )
}

fn histogram(name: &str, help: &str, labels: Vec<(&str, &str)>, h: pm::Histogram) -> pm::MetricFamily {
    family(
        name,
        help,
        pm::MetricType::Histogram,
        vec![metric_with(labels, |m| m.histogram = Some(h))],
    )
}

/// Process figures from /proc (Linux); zeros elsewhere.
#[derive(Default)]
struct ProcessStats {
    cpu_seconds: f64,
    open_fds: f64,
    max_fds: f64,
    rss_bytes: f64,
    vsize_bytes: f64,
    max_vsize_bytes: f64,
    threads: f64,
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

fn page_size() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as f64
    } else {
        4096.0
    }
}

/// Fields of /proc/self/stat after the command name (field 3 is index 0).
fn stat_fields() -> Option<Vec<String>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn process_start_time() -> Option<f64> {
    let fields = stat_fields()?;
    let start_ticks: f64 = fields.get(19)?.parse().ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime + start_ticks / clock_ticks())
}

fn limit(name: &str) -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with(name))?;
    let soft = line[name.len()..].split_whitespace().next()?;
    if soft == "unlimited" {
        Some(u64::MAX as f64)
    } else {
        soft.parse().ok()
    }
}

impl ProcessStats {
    fn read() -> Self {
        let mut s = ProcessStats::default();
        if let Some(f) = stat_fields() {
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            s.cpu_seconds = (num(11) + num(12)) / clock_ticks();
            s.threads = num(17);
            s.vsize_bytes = num(20);
            s.rss_bytes = num(21) * page_size();
        }
        s.open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as f64)
            .unwrap_or(0.0);
        s.max_fds = limit("Max open files").unwrap_or(0.0);
        s.max_vsize_bytes = limit("Max address space").unwrap_or(0.0);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_histograms_are_labelled_by_the_request_method() {
        let metrics = SelfMetrics::new();
        metrics.observe_push("PUT", 0.001, 100);
        metrics.observe_push("PUT", 0.001, 100);
        metrics.observe_push("POST", 0.001, 100);
        assert_eq!(metrics.push_duration[method_index("put")].to_pb().sample_count, Some(2));
        assert_eq!(
            metrics.push_duration[method_index("post")].to_pb().sample_count,
            Some(1)
        );
        assert_eq!(metrics.push_size[method_index("put")].to_pb().sample_count, Some(2));
    }

    /// A family missing from `SELF_FAMILIES` or `SOFT_SELF_FAMILIES` would
    /// never be rendered, and moving one into `SELF_FAMILIES` changes which
    /// pushes the consistency check refuses (an apply rule of the replicated
    /// state machine): the lists must match what is exported, and a change to
    /// either is a deliberate one. A single node has no followers, so the
    /// family of replication lag has no series there.
    #[tokio::test]
    async fn every_own_family_is_in_the_tables_rendering_uses() {
        use crate::cluster::{ClusterNode, Environment, NodeConfig};
        use crate::gateway::{Gateway, GatewayConfig};
        use crate::model::reserved::{SELF_FAMILIES, SOFT_SELF_FAMILIES};

        let dir = tempfile::tempdir().expect("temp dir");
        let config = NodeConfig::single_for_tests(dir.path());
        let node = ClusterNode::start(config, Environment::os(None)).await.expect("a node");
        let gateway = Gateway::new(
            node.clone(),
            GatewayConfig {
                consistency_check: true,
            },
        );
        let mut exported: Vec<(String, pm::MetricType)> = SelfMetrics::new()
            .families(&gateway, 0, 0)
            .iter()
            .map(|f| (f.name().to_string(), f.r#type()))
            .collect();
        exported.sort();
        let mut table: Vec<(String, pm::MetricType)> = SELF_FAMILIES
            .iter()
            .chain(SOFT_SELF_FAMILIES)
            .filter(|(n, _)| *n != "pushgate_raft_replication_lag_entries")
            .map(|(n, t)| (n.to_string(), *t))
            .collect();
        table.sort();
        assert_eq!(exported, table);
        node.shutdown().await;
    }
}
