//! Families that the gateway exports about itself.
//!
//! The consistency check must treat these like any stored family (a pushed
//! `process_open_fds` counter would clash with the gateway's gauge), and it
//! must decide the same on every replica. So the list is a compile-time table,
//! not whatever the local registry happens to hold.

use crate::pb::io::prometheus::client::MetricType;

/// `push_time_seconds`: the synthetic per-group gauge of the last successful change.
pub const PUSH_TIME: &str = "push_time_seconds";
/// `push_failure_time_seconds`: the synthetic per-group gauge of the last failed change.
pub const PUSH_FAILURE_TIME: &str = "push_failure_time_seconds";
pub const PUSH_TIME_HELP: &str = "Last Unix time when changing this group in the Pushgateway succeeded.";
pub const PUSH_FAILURE_TIME_HELP: &str = "Last Unix time when changing this group in the Pushgateway failed.";

/// Every family the process exports itself, sorted by name.
pub const SELF_FAMILIES: &[(&str, MetricType)] = &[
    ("process_cpu_seconds_total", MetricType::Counter),
    ("process_max_fds", MetricType::Gauge),
    ("process_open_fds", MetricType::Gauge),
    ("process_resident_memory_bytes", MetricType::Gauge),
    ("process_start_time_seconds", MetricType::Gauge),
    ("process_threads", MetricType::Gauge),
    ("process_virtual_memory_bytes", MetricType::Gauge),
    ("process_virtual_memory_max_bytes", MetricType::Gauge),
    ("pushgate_batch_mutations", MetricType::Histogram),
    ("pushgate_build_info", MetricType::Gauge),
    ("pushgate_groups", MetricType::Gauge),
    ("pushgate_http_push_duration_seconds", MetricType::Histogram),
    ("pushgate_http_push_size_bytes", MetricType::Histogram),
    ("pushgate_http_requests_total", MetricType::Counter),
    ("pushgate_log_entries_appended_total", MetricType::Counter),
    ("pushgate_log_entries_read_total", MetricType::Counter),
    ("pushgate_log_fsyncs_total", MetricType::Counter),
    ("pushgate_mutation_queue_length", MetricType::Gauge),
    ("pushgate_mutation_queue_rejected_total", MetricType::Counter),
    ("pushgate_mutations_applied_total", MetricType::Counter),
    ("pushgate_raft_applied_index", MetricType::Gauge),
    ("pushgate_raft_commit_index", MetricType::Gauge),
    ("pushgate_raft_is_leader", MetricType::Gauge),
    ("pushgate_raft_last_log_index", MetricType::Gauge),
    ("pushgate_raft_leader_id", MetricType::Gauge),
    ("pushgate_raft_term", MetricType::Gauge),
    ("pushgate_series", MetricType::Gauge),
    ("pushgate_snapshots_built_total", MetricType::Counter),
    ("pushgate_snapshots_installed_total", MetricType::Counter),
    ("pushgateway_build_info", MetricType::Gauge),
    ("pushgateway_http_requests_total", MetricType::Counter),
];

/// The type of a family the gateway exports itself, if `name` is one.
pub fn self_family_type(name: &str) -> Option<MetricType> {
    SELF_FAMILIES
        .binary_search_by(|(n, _)| (*n).cmp(name))
        .ok()
        .map(|i| SELF_FAMILIES[i].1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_for_binary_search() {
        assert!(SELF_FAMILIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(self_family_type("process_open_fds"), Some(MetricType::Gauge));
        assert_eq!(self_family_type("nope"), None);
    }
}
