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

/// Families the process exports itself that came after the consistency
/// check's rules were fixed, sorted by name.
///
/// Adding a name to `SELF_FAMILIES` changes which pushes apply refuses, and
/// members of a cluster running different releases would then disagree
/// about a push. So these do not take part in the check: a push may store a
/// family that clashes with one of them (same name, or a `_count`, `_sum` or
/// `_bucket` collision), and then the pushed family wins and the own one is
/// left out of the scrape (`Store::shadows`). That depends only on the
/// stored state, so every replica decides it the same way.
pub const SOFT_SELF_FAMILIES: &[(&str, MetricType)] = &[
    ("pushgate_log_fsync_duration_seconds", MetricType::Histogram),
    ("pushgate_raft_leader_changes_seen_total", MetricType::Counter),
    ("pushgate_raft_replication_lag_entries", MetricType::Gauge),
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
        assert!(SOFT_SELF_FAMILIES.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(self_family_type("process_open_fds"), Some(MetricType::Gauge));
        assert_eq!(self_family_type("nope"), None);
    }

    /// A soft family that clashed with a checked one would be refused by
    /// nothing and shadow nothing: the two tables must not touch.
    #[test]
    fn soft_families_do_not_clash_with_checked_ones() {
        for (name, _) in SOFT_SELF_FAMILIES {
            for suffix in ["", "_count", "_sum", "_bucket"] {
                assert_eq!(self_family_type(&format!("{name}{suffix}")), None, "{name}{suffix}");
            }
            for base in ["_count", "_sum", "_bucket"]
                .iter()
                .filter_map(|s| name.strip_suffix(s))
            {
                assert_eq!(self_family_type(base), None, "{base}");
            }
        }
    }
}
