//! The reference's order of series inside a merged family at `/metrics`.
//!
//! The reference gathers every group's series of a family into one list and
//! sorts it: fewer labels first, then label values position by position
//! (labels already sorted by name; names themselves are not compared). So
//! `x{instance="",job="trail"}` comes before `x{a="2",instance="",job="j3"}`
//! although the second group's key sorts first.
//!
//! Each group keeps its family pre-rendered and sorted (see `store`), so a
//! scrape orders whole groups by the key of their first series instead of
//! sorting every series again. That is the reference's order whenever the
//! groups' series do not interleave (every group's series sort together),
//! which includes every family whose series have one label set per group;
//! where two groups' series interleave in the reference (the same body label
//! values in several groups), a group's series stay together here.

use std::borrow::Cow;
use std::cmp::Ordering;

use crate::pb::io::prometheus::client as pm;

/// The reference's order of two series given their label counts and their
/// label values in label-name order: fewer labels first, then the values.
pub fn cmp_series<T: Ord>(
    a_count: usize,
    a_values: impl Iterator<Item = T>,
    b_count: usize,
    b_values: impl Iterator<Item = T>,
) -> Ordering {
    a_count.cmp(&b_count).then_with(|| a_values.cmp(b_values))
}

/// The sort keys of several series, in one buffer: a scrape orders thousands
/// of groups per family, and a key per group on the heap was measurable.
#[derive(Default)]
pub struct SeriesKeys<'a> {
    values: Vec<Cow<'a, [u8]>>,
    /// Per key: where its values start in `values`, and how many there are.
    keys: Vec<(usize, usize)>,
}

impl<'a> SeriesKeys<'a> {
    /// Adds the key of the first series in `text`, a family's sample lines as
    /// `render::write_metric` writes them. The `le` label of a histogram's
    /// bucket line and the `quantile` label of a summary's quantile line are
    /// written last and are not labels of the series, so they are left out.
    pub fn push_first_series(&mut self, text: &'a [u8], family: &str, kind: pm::MetricType) {
        let start = self.values.len();
        // Every sample line has labels (at least `instance` and `job`).
        if let Some(open) = memchr::memchr2(b'{', b'\n', text).filter(|&i| text[i] == b'{') {
            let sample_name = &text[..open];
            let extra_label = match kind {
                pm::MetricType::Histogram => sample_name.strip_prefix(family.as_bytes()) == Some(&b"_bucket"[..]),
                pm::MetricType::Summary => sample_name == family.as_bytes(),
                _ => false,
            };
            push_label_values(&mut self.values, &text[open + 1..]);
            if extra_label && self.values.len() > start {
                self.values.pop();
            }
        }
        self.keys.push((start, self.values.len() - start));
    }

    fn values(&self, key: usize) -> &[Cow<'a, [u8]>] {
        let (start, len) = self.keys[key];
        &self.values[start..start + len]
    }

    /// Compares keys `a` and `b`: fewer labels first, then the values.
    fn cmp(&self, a: usize, b: usize) -> Ordering {
        let (va, vb) = (self.values(a), self.values(b));
        cmp_series(va.len(), va.iter(), vb.len(), vb.iter())
    }

    /// The positions of the keys in sorted order (stable: equal keys keep
    /// the order they were pushed in). Keys that come already ordered, the
    /// usual case, cost one comparison each: the sort finds the run.
    pub fn sorted_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.keys.len()).collect();
        order.sort_by(|&a, &b| self.cmp(a, b));
        order
    }
}

/// Appends the values of `name="value",...}` (the text after `{`), unescaped.
fn push_label_values<'a>(values: &mut Vec<Cow<'a, [u8]>>, mut rest: &'a [u8]) {
    loop {
        // name="
        let Some(quote) = memchr::memchr(b'"', rest) else {
            return;
        };
        rest = &rest[quote + 1..];
        // the value, up to the closing unescaped quote
        let mut end = 0;
        let mut escaped = false;
        while let Some(at) = memchr::memchr2(b'"', b'\\', &rest[end.min(rest.len())..]) {
            end += at;
            if rest[end] == b'"' {
                break;
            }
            escaped = true;
            end += 2;
        }
        let raw = &rest[..end.min(rest.len())];
        values.push(if escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        });
        rest = rest.get(end + 1..).unwrap_or_default();
        // `,` before the next label, `}` at the end
        match rest.first() {
            Some(b',') => rest = &rest[1..],
            _ => return,
        }
    }
}

/// Undoes `render::write_escaped_label_value`: `\\`, `\"` and `\n`.
fn unescape(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        match bytes.next() {
            Some(b'n') => out.push(b'\n'),
            Some(&other) => out.push(other),
            None => out.push(b'\\'),
        }
    }
    out
}

/// Sorts decoded series into the reference's order (protobuf exposition).
pub fn sort_metrics(metrics: &mut [pm::Metric]) {
    metrics.sort_by(|a, b| {
        cmp_series(
            a.label.len(),
            a.label.iter().map(|l| l.value()),
            b.label.len(),
            b.label.iter().map(|l| l.value()),
        )
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of each text's first series, sorted: the input positions.
    fn order(texts: &[(&'static str, &str, pm::MetricType)]) -> Vec<usize> {
        let mut keys = SeriesKeys::default();
        for (text, family, kind) in texts {
            keys.push_first_series(text.as_bytes(), family, *kind);
        }
        keys.sorted_order()
    }

    fn values_of(text: &'static str, family: &str, kind: pm::MetricType) -> Vec<Vec<u8>> {
        let mut keys = SeriesKeys::default();
        keys.push_first_series(text.as_bytes(), family, kind);
        keys.values(0).iter().map(|v| v.to_vec()).collect()
    }

    const U: pm::MetricType = pm::MetricType::Untyped;

    #[test]
    fn fewer_labels_sort_first_whatever_the_values() {
        assert_eq!(
            order(&[
                ("x{a=\"2\",instance=\"\",job=\"j3\"} 1\n", "x", U),
                ("x{instance=\"\",job=\"trail\"} 1\n", "x", U),
            ]),
            [1, 0]
        );
    }

    #[test]
    fn values_compare_position_by_position_and_unescaped() {
        assert_eq!(
            values_of("m{a=\"x\\\\y\",job=\"j\"} 1\n", "m", U),
            [b"x\\y".to_vec(), b"j".to_vec()]
        );
        // A newline (0x0A) sorts before "A" unescaped, after it escaped.
        assert_eq!(
            order(&[
                ("m{a=\"A\",job=\"j\"} 1\n", "m", U),
                ("m{a=\"\\\"q\\\" \\n\",job=\"j\"} 1\n", "m", U),
            ]),
            [1, 0]
        );
        assert_eq!(
            values_of("m{a=\"\\\"q\\\" \\n\",job=\"j\"} 1\n", "m", U)[0],
            b"\"q\" \n".to_vec()
        );
    }

    #[test]
    fn equal_keys_keep_their_order() {
        assert_eq!(
            order(&[
                ("m{a=\"1\",job=\"j\"} 1\n", "m", U),
                ("m{b=\"1\",job=\"j\"} 1\n", "m", U),
                ("m{a=\"0\",job=\"j\"} 1\n", "m", U),
            ]),
            [2, 0, 1]
        );
    }

    #[test]
    fn bucket_and_quantile_labels_are_not_series_labels() {
        let jv = vec![b"".to_vec(), b"j".to_vec()];
        let h = pm::MetricType::Histogram;
        let s = pm::MetricType::Summary;
        assert_eq!(values_of("h_bucket{instance=\"\",job=\"j\",le=\"1\"} 1\n", "h", h), jv);
        assert_eq!(values_of("h_sum{instance=\"\",job=\"j\"} 1\n", "h", h), jv);
        assert_eq!(values_of("s{instance=\"\",job=\"j\",quantile=\"0.5\"} 1\n", "s", s), jv);
        assert_eq!(values_of("s_sum{instance=\"\",job=\"j\"} 1\n", "s", s), jv);
        // A gauge whose name ends in _bucket keeps all its labels.
        assert_eq!(
            values_of(
                "g_bucket{instance=\"\",job=\"j\"} 1\n",
                "g_bucket",
                pm::MetricType::Gauge
            ),
            jv
        );
    }

    #[test]
    fn decoded_series_sort_like_rendered_ones() {
        let metric = |labels: &[(&str, &str)]| pm::Metric {
            label: labels
                .iter()
                .map(|(n, v)| pm::LabelPair {
                    name: Some(n.to_string()),
                    value: Some(v.to_string()),
                })
                .collect(),
            ..Default::default()
        };
        let mut m = vec![
            metric(&[("a", "2"), ("instance", ""), ("job", "j3")]),
            metric(&[("instance", ""), ("job", "trail")]),
            metric(&[("a", "1"), ("instance", ""), ("job", "z")]),
        ];
        sort_metrics(&mut m);
        let jobs: Vec<&str> = m.iter().map(|m| m.label.last().map_or("", |l| l.value())).collect();
        assert_eq!(jobs, ["trail", "z", "j3"]);
    }
}
