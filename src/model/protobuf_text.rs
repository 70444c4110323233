//! The protobuf text format of metric families: the two debug formats a
//! scrape answers in when `Accept` asks for `encoding=text` or
//! `encoding=compact-text`, written as the reference writes them (Go's
//! `expfmt` with golang/protobuf's `MarshalTextString` and
//! `CompactTextString`, each family followed by a newline).
//!
//! Fields are written in their declaration order, nested messages in
//! `< >`; strings are quoted with `\n`, `\r`, `\t`, `\"` and `\\` escapes and
//! every other byte outside printable ASCII in octal (`\303\274` for `ü`);
//! doubles as Go's `%v` writes them, with `inf`, `-inf` and `nan`. Fields the
//! reference's client_model (v0.3.0) does not know (created timestamps, a
//! histogram's `exemplars`, a family's `unit`) are written as it writes
//! unknown fields: after the known ones, by number, the message in a
//! quoted string, below a `/* N unknown bytes */` comment in the long form.

use prost::Message;

use super::render::format_float_api;
use crate::pb::io::prometheus::client as pm;

/// Appends `families` in the long (`compact == false`) or compact form.
pub fn write_families(out: &mut Vec<u8>, families: &[pm::MetricFamily], compact: bool) {
    for family in families {
        let mut w = TextWriter {
            out: &mut *out,
            compact,
            indent: 0,
            line_complete: false,
        };
        w.family(family);
        out.push(b'\n');
    }
}

/// golang/protobuf's `textWriter`: indentation at the start of each line of
/// the long form; in the compact form each newline is a space.
struct TextWriter<'a> {
    out: &'a mut Vec<u8>,
    compact: bool,
    indent: usize,
    line_complete: bool,
}

impl TextWriter<'_> {
    fn write(&mut self, bytes: &[u8]) {
        if !self.compact && self.line_complete {
            self.out.resize(self.out.len() + 2 * self.indent, b' ');
        }
        self.out.extend_from_slice(bytes);
        self.line_complete = false;
    }

    fn end_line(&mut self) {
        if self.compact {
            self.write(b" ");
        } else {
            self.write(b"\n");
            self.line_complete = true;
        }
    }

    fn name(&mut self, name: &str) {
        self.write(name.as_bytes());
        self.write(if self.compact { b":" } else { b": " });
    }

    fn string(&mut self, name: &str, value: &str) {
        self.name(name);
        self.quoted(value.as_bytes());
        self.end_line();
    }

    fn quoted(&mut self, bytes: &[u8]) {
        let mut q = Vec::with_capacity(bytes.len() + 2);
        q.push(b'"');
        for &b in bytes {
            match b {
                b'\n' => q.extend_from_slice(b"\\n"),
                b'\r' => q.extend_from_slice(b"\\r"),
                b'\t' => q.extend_from_slice(b"\\t"),
                b'"' => q.extend_from_slice(b"\\\""),
                b'\\' => q.extend_from_slice(b"\\\\"),
                0x20..=0x7e => q.push(b),
                _ => q.extend_from_slice(format!("\\{b:03o}").as_bytes()),
            }
        }
        q.push(b'"');
        self.write(&q);
    }

    fn double(&mut self, name: &str, v: f64) {
        self.name(name);
        let text = if v.is_nan() {
            "nan".to_string()
        } else if v.is_infinite() {
            if v > 0.0 { "inf" } else { "-inf" }.to_string()
        } else {
            format_float_api(v)
        };
        self.write(text.as_bytes());
        self.end_line();
    }

    fn integer(&mut self, name: &str, v: impl std::fmt::Display) {
        self.name(name);
        self.write(v.to_string().as_bytes());
        self.end_line();
    }

    /// An optional field: written only when set (proto2 presence).
    fn opt_double(&mut self, name: &str, v: Option<f64>) {
        if let Some(v) = v {
            self.double(name, v);
        }
    }

    fn opt_integer(&mut self, name: &str, v: Option<impl std::fmt::Display>) {
        if let Some(v) = v {
            self.integer(name, v);
        }
    }

    fn opt_string(&mut self, name: &str, v: &Option<String>) {
        if let Some(v) = v {
            self.string(name, v);
        }
    }

    fn message(&mut self, name: &str, body: impl FnOnce(&mut Self)) {
        self.name(name);
        self.write(b"<");
        if !self.compact {
            self.write(b"\n");
            self.line_complete = true;
        }
        self.indent += 1;
        body(self);
        self.indent -= 1;
        self.write(b">");
        self.end_line();
    }

    /// Fields the reference does not know, each an encoded field of the
    /// message they belong to (tag, length, message).
    fn unknown(&mut self, fields: &[(u32, Vec<u8>)]) {
        if fields.is_empty() {
            return;
        }
        if !self.compact {
            let total: usize = fields
                .iter()
                .map(|(number, payload)| {
                    prost::encoding::key_len(*number)
                        + prost::encoding::encoded_len_varint(payload.len() as u64)
                        + payload.len()
                })
                .sum();
            self.write(format!("/* {total} unknown bytes */").as_bytes());
            self.end_line();
        }
        for (number, payload) in fields {
            self.write(number.to_string().as_bytes());
            self.write(if self.compact { b":" } else { b": " });
            self.quoted(payload);
            self.end_line();
        }
    }

    fn family(&mut self, f: &pm::MetricFamily) {
        self.opt_string("name", &f.name);
        self.opt_string("help", &f.help);
        if let Some(kind) = f.r#type {
            self.name("type");
            match pm::MetricType::try_from(kind) {
                Ok(t) => self.write(t.as_str_name().as_bytes()),
                Err(_) => self.write(kind.to_string().as_bytes()),
            }
            self.end_line();
        }
        for m in &f.metric {
            self.message("metric", |w| w.metric(m));
        }
        let unknown: Vec<(u32, Vec<u8>)> = f.unit.iter().map(|u| (5, u.as_bytes().to_vec())).collect();
        self.unknown(&unknown);
    }

    fn metric(&mut self, m: &pm::Metric) {
        for l in &m.label {
            self.message("label", |w| w.label_pair(l));
        }
        if let Some(g) = &m.gauge {
            self.message("gauge", |w| w.opt_double("value", g.value));
        }
        if let Some(c) = &m.counter {
            self.message("counter", |w| {
                w.opt_double("value", c.value);
                if let Some(e) = &c.exemplar {
                    w.message("exemplar", |w| w.exemplar(e));
                }
                w.unknown(&created(3, &c.created_timestamp));
            });
        }
        if let Some(s) = &m.summary {
            self.message("summary", |w| w.summary(s));
        }
        if let Some(u) = &m.untyped {
            self.message("untyped", |w| w.opt_double("value", u.value));
        }
        if let Some(h) = &m.histogram {
            self.message("histogram", |w| w.histogram(h));
        }
        self.opt_integer("timestamp_ms", m.timestamp_ms);
    }

    fn label_pair(&mut self, l: &pm::LabelPair) {
        self.opt_string("name", &l.name);
        self.opt_string("value", &l.value);
    }

    fn summary(&mut self, s: &pm::Summary) {
        self.opt_integer("sample_count", s.sample_count);
        self.opt_double("sample_sum", s.sample_sum);
        for q in &s.quantile {
            self.message("quantile", |w| {
                w.opt_double("quantile", q.quantile);
                w.opt_double("value", q.value);
            });
        }
        self.unknown(&created(4, &s.created_timestamp));
    }

    fn histogram(&mut self, h: &pm::Histogram) {
        self.opt_integer("sample_count", h.sample_count);
        self.opt_double("sample_count_float", h.sample_count_float);
        self.opt_double("sample_sum", h.sample_sum);
        for b in &h.bucket {
            self.message("bucket", |w| {
                w.opt_integer("cumulative_count", b.cumulative_count);
                w.opt_double("cumulative_count_float", b.cumulative_count_float);
                w.opt_double("upper_bound", b.upper_bound);
                if let Some(e) = &b.exemplar {
                    w.message("exemplar", |w| w.exemplar(e));
                }
            });
        }
        self.opt_integer("schema", h.schema);
        self.opt_double("zero_threshold", h.zero_threshold);
        self.opt_integer("zero_count", h.zero_count);
        self.opt_double("zero_count_float", h.zero_count_float);
        self.spans("negative_span", &h.negative_span);
        for d in &h.negative_delta {
            self.integer("negative_delta", d);
        }
        for c in &h.negative_count {
            self.double("negative_count", *c);
        }
        self.spans("positive_span", &h.positive_span);
        for d in &h.positive_delta {
            self.integer("positive_delta", d);
        }
        for c in &h.positive_count {
            self.double("positive_count", *c);
        }
        let mut unknown = created(15, &h.created_timestamp);
        unknown.extend(h.exemplars.iter().map(|e| (16, e.encode_to_vec())));
        self.unknown(&unknown);
    }

    fn spans(&mut self, name: &str, spans: &[pm::BucketSpan]) {
        for s in spans {
            self.message(name, |w| {
                w.opt_integer("offset", s.offset);
                w.opt_integer("length", s.length);
            });
        }
    }

    fn exemplar(&mut self, e: &pm::Exemplar) {
        for l in &e.label {
            self.message("label", |w| w.label_pair(l));
        }
        self.opt_double("value", e.value);
        if let Some(t) = &e.timestamp {
            self.message("timestamp", |w| {
                if t.seconds != 0 {
                    w.integer("seconds", t.seconds);
                }
                if t.nanos != 0 {
                    w.integer("nanos", t.nanos);
                }
            });
        }
    }
}

/// A created timestamp as the unknown field `number` it is to the reference.
fn created(number: u32, timestamp: &Option<prost_types::Timestamp>) -> Vec<(u32, Vec<u8>)> {
    timestamp.iter().map(|t| (number, t.encode_to_vec())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family() -> pm::MetricFamily {
        let label = |n: &str, v: &str| pm::LabelPair {
            name: Some(n.into()),
            value: Some(v.into()),
        };
        pm::MetricFamily {
            name: Some("h".into()),
            help: Some("a \"help\"\n ü".into()),
            r#type: Some(pm::MetricType::Histogram as i32),
            metric: vec![pm::Metric {
                label: vec![label("instance", ""), label("job", "j")],
                histogram: Some(pm::Histogram {
                    sample_count: Some(3),
                    sample_sum: Some(1e6),
                    bucket: vec![
                        pm::Bucket {
                            cumulative_count: Some(2),
                            upper_bound: Some(0.5),
                            ..Default::default()
                        },
                        pm::Bucket {
                            cumulative_count: Some(3),
                            upper_bound: Some(f64::INFINITY),
                            ..Default::default()
                        },
                    ],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            unit: None,
        }
    }

    /// The reference 1.5.1's answer for the same family.
    #[test]
    fn the_long_form_is_the_references() {
        let mut out = Vec::new();
        write_families(&mut out, &[family()], false);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "name: \"h\"\nhelp: \"a \\\"help\\\"\\n \\303\\274\"\ntype: HISTOGRAM\nmetric: <\n  label: <\n    \
             name: \"instance\"\n    value: \"\"\n  >\n  label: <\n    name: \"job\"\n    value: \"j\"\n  >\n  \
             histogram: <\n    sample_count: 3\n    sample_sum: 1e+06\n    bucket: <\n      \
             cumulative_count: 2\n      upper_bound: 0.5\n    >\n    bucket: <\n      cumulative_count: 3\n      \
             upper_bound: inf\n    >\n  >\n>\n\n"
        );
    }

    /// The reference 1.5.1's answer for the same family.
    #[test]
    fn the_compact_form_is_the_references() {
        let mut out = Vec::new();
        write_families(&mut out, &[family()], true);
        assert_eq!(
            String::from_utf8_lossy(&out),
            "name:\"h\" help:\"a \\\"help\\\"\\n \\303\\274\" type:HISTOGRAM metric:<label:<name:\"instance\" \
             value:\"\" > label:<name:\"job\" value:\"j\" > histogram:<sample_count:3 sample_sum:1e+06 \
             bucket:<cumulative_count:2 upper_bound:0.5 > bucket:<cumulative_count:3 upper_bound:inf > > > \n"
        );
    }
}
