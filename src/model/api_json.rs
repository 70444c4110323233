//! The JSON of `GET /api/v1/metrics`, shaped like the reference's: one object
//! per group, keys sorted, numbers as strings in Go's float formatting.

use serde_json::{json, Map, Value};

use super::render::format_float_api;
use super::reserved::{PUSH_FAILURE_TIME, PUSH_FAILURE_TIME_HELP, PUSH_TIME, PUSH_TIME_HELP};
use super::store::{timestamp_metric, Group};
use crate::pb::io::prometheus::client as pm;

/// RFC 3339 with nanoseconds, trailing zeros trimmed (Go's `RFC3339Nano`), UTC.
pub fn rfc3339_nanos(unix_nanos: i64) -> String {
    let ts = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_nanos))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        ts.year(),
        u8::from(ts.month()),
        ts.day(),
        ts.hour(),
        ts.minute(),
        ts.second()
    );
    let nanos = ts.nanosecond();
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

fn labels_object(labels: &[pm::LabelPair]) -> Value {
    let mut sorted: Vec<&pm::LabelPair> = labels.iter().collect();
    sorted.sort_by(|a, b| a.name().cmp(b.name()));
    let mut map = Map::new();
    for l in sorted {
        map.insert(l.name().to_string(), Value::String(l.value().to_string()));
    }
    Value::Object(map)
}

fn metric_object(kind: pm::MetricType, m: &pm::Metric) -> Value {
    let labels = labels_object(&m.label);
    match kind {
        pm::MetricType::Summary => {
            let s = m.summary.clone().unwrap_or_default();
            let mut quantiles = Map::new();
            for q in &s.quantile {
                quantiles.insert(
                    format_float_api(q.quantile()),
                    Value::String(format_float_api(q.value())),
                );
            }
            json!({
                "count": s.sample_count().to_string(),
                "labels": labels,
                "quantiles": quantiles,
                "sum": format_float_api(s.sample_sum()),
            })
        }
        pm::MetricType::Histogram | pm::MetricType::GaugeHistogram => {
            let h = m.histogram.clone().unwrap_or_default();
            let mut buckets = Map::new();
            let mut keyed: Vec<(f64, String)> = h
                .bucket
                .iter()
                .map(|b| {
                    let count = if b.cumulative_count.is_none() && b.cumulative_count_float.is_some() {
                        format_float_api(b.cumulative_count_float())
                    } else {
                        b.cumulative_count().to_string()
                    };
                    (b.upper_bound(), count)
                })
                .collect();
            keyed.sort_by_key(|a| format_float_api(a.0));
            for (ub, count) in keyed {
                buckets.insert(format_float_api(ub), Value::String(count));
            }
            let count = if h.sample_count.is_none() && h.sample_count_float.is_some() {
                format_float_api(h.sample_count_float())
            } else {
                h.sample_count().to_string()
            };
            json!({
                "buckets": buckets,
                "count": count,
                "labels": labels,
                "sum": format_float_api(h.sample_sum()),
            })
        }
        _ => {
            let v = match kind {
                pm::MetricType::Counter => m.counter.as_ref().map(|c| c.value()),
                pm::MetricType::Gauge => m.gauge.as_ref().map(|g| g.value()),
                _ => m.untyped.as_ref().map(|u| u.value()),
            };
            json!({ "labels": labels, "value": format_float_api(v.unwrap_or(0.0)) })
        }
    }
}

fn family_object(time: i64, kind: pm::MetricType, help: &str, metrics: Vec<Value>) -> Value {
    let mut map = Map::new();
    map.insert("time_stamp".into(), Value::String(rfc3339_nanos(time)));
    map.insert("type".into(), Value::String(kind.as_str_name().to_string()));
    if !help.is_empty() {
        map.insert("help".into(), Value::String(help.to_string()));
    }
    map.insert("metrics".into(), Value::Array(metrics));
    Value::Object(map)
}

/// One group's object. Family names share the key space with `labels` and
/// `last_push_successful`, exactly like the reference (a family named
/// `labels` replaces the label map).
pub fn group_object(group: &Group) -> Value {
    let mut entries: Vec<(String, Value)> = Vec::new();
    let mut key_labels = Map::new();
    for l in group.key.labels() {
        key_labels.insert(l.name.clone(), Value::String(l.value.clone()));
    }
    entries.push(("labels".into(), Value::Object(key_labels)));
    entries.push(("last_push_successful".into(), Value::Bool(group.last_push_successful())));
    for (name, family) in &group.families {
        let decoded = family.decode();
        let metrics = decoded.metric.iter().map(|m| metric_object(family.kind, m)).collect();
        entries.push((
            name.to_string(),
            family_object(
                family.pushed_at,
                family.kind,
                family.help.as_deref().unwrap_or(""),
                metrics,
            ),
        ));
    }
    let changed = group.push_time.max(group.failure_time);
    for (name, help, value) in [
        (PUSH_TIME, PUSH_TIME_HELP, group.push_time),
        (PUSH_FAILURE_TIME, PUSH_FAILURE_TIME_HELP, group.failure_time),
    ] {
        let stamp = if value > 0 { value } else { changed };
        let metric = metric_object(pm::MetricType::Gauge, &timestamp_metric(&group.key, value));
        entries.push((
            name.to_string(),
            family_object(stamp, pm::MetricType::Gauge, help, vec![metric]),
        ));
    }
    // Later entries win on equal keys; then sort by key like a Go map.
    let mut map = std::collections::BTreeMap::new();
    for (k, v) in entries {
        map.insert(k, v);
    }
    Value::Object(map.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_zero_is_minus_zero_in_the_api_as_in_go() {
        assert_eq!(format_float_api(-0.0), "-0");
        assert_eq!(format_float_api(0.0), "0");
        assert_eq!(format_float_api(1e6), "1e+06");
        let mut text = Vec::new();
        super::super::render::write_float(&mut text, -0.0);
        assert_eq!(text, b"0", "the text exposition writes every zero as 0");
    }

    #[test]
    fn rfc3339_like_go() {
        assert_eq!(rfc3339_nanos(1_583_781_848_025_745_000), "2020-03-09T19:24:08.025745Z");
        assert_eq!(rfc3339_nanos(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nanos(1_000_000_001), "1970-01-01T00:00:01.000000001Z");
    }
}
