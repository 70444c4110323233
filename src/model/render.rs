//! Text exposition (format 0.0.4) of stored series, byte-compatible with Go's
//! `expfmt` writer: the same float formatting, escaping and summary/histogram
//! expansion, so scrapes look exactly like the reference's.

use std::fmt::Write as _;

use crate::pb::io::prometheus::client as pm;

/// Appends `v` the way Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it
/// (shortest round-trip digits; exponent form below 1e-4 and from 1e6 on, as
/// `%g` with shortest precision does), with `+Inf`, `-Inf`, `NaN` and `-0`
/// written as `0`.
pub fn write_float(out: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        out.extend_from_slice(b"NaN");
        return;
    }
    if v.is_infinite() {
        out.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
        return;
    }
    if v == 0.0 {
        out.push(b'0');
        return;
    }
    if v.fract() == 0.0 && v.abs() < 1e6 {
        // Fast path for small integers, the common case.
        write_int(out, v as i64);
        return;
    }
    // Rust's `{:e}` gives the shortest round-trip digits: "d.ddde<exp>".
    // Formatted on the stack: this runs for every sample of every push.
    let mut sci = StackText::default();
    let _ = write!(sci, "{:e}", v.abs());
    let sci = sci.as_str();
    let (mantissa, exp) = sci.split_once('e').unwrap_or((sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let mut digit_buf = [0u8; 40];
    let mut n = 0;
    for b in mantissa.bytes().filter(|b| *b != b'.') {
        if n < digit_buf.len() {
            digit_buf[n] = b;
            n += 1;
        }
    }
    let digits = &digit_buf[..n];
    if v < 0.0 {
        out.push(b'-');
    }
    if !(-4..6).contains(&exp) {
        out.extend_from_slice(&digits[..1]);
        if digits.len() > 1 {
            out.push(b'.');
            out.extend_from_slice(&digits[1..]);
        }
        out.push(b'e');
        out.push(if exp < 0 { b'-' } else { b'+' });
        let e = exp.unsigned_abs();
        if e < 10 {
            out.push(b'0');
        }
        write_int(out, i64::from(e));
    } else if exp < 0 {
        out.extend_from_slice(b"0.");
        for _ in 0..(-exp - 1) {
            out.push(b'0');
        }
        out.extend_from_slice(digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.extend_from_slice(digits);
            for _ in digits.len()..int_len {
                out.push(b'0');
            }
        } else {
            out.extend_from_slice(&digits[..int_len]);
            out.push(b'.');
            out.extend_from_slice(&digits[int_len..]);
        }
    }
}

/// A small fixed buffer for `write!`: the shortest form of an `f64` in `{:e}`
/// notation is at most 24 bytes ("d.dddddddddddddddde-308").
#[derive(Default)]
struct StackText {
    buf: [u8; 32],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(std::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// Appends an integer in decimal.
pub fn write_int(out: &mut Vec<u8>, v: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

/// `write_float` into a new string (JSON API values, `le`/`quantile` labels).
pub fn format_float(v: f64) -> String {
    let mut out = Vec::with_capacity(24);
    write_float(&mut out, v);
    String::from_utf8(out).unwrap_or_default()
}

/// A float as the reference's JSON API writes it (Go's `%v`): like
/// `format_float`, except that negative zero stays `-0` (the text exposition
/// writes every zero as `0`).
pub fn format_float_api(v: f64) -> String {
    if v == 0.0 && v.is_sign_negative() {
        return "-0".into();
    }
    format_float(v)
}

/// Label value escaping: `\` `"` and newline.
pub fn write_escaped_label_value(out: &mut Vec<u8>, value: &str) {
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

/// HELP escaping: `\` and newline.
pub fn write_escaped_help(out: &mut Vec<u8>, help: &str) {
    for b in help.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            _ => out.push(b),
        }
    }
}

/// `# HELP` (when the family has one, even an empty one: `# HELP name `, as
/// Go's text encoder writes it) and `# TYPE` lines of a family.
pub fn write_header(out: &mut Vec<u8>, name: &str, help: Option<&str>, kind: pm::MetricType) {
    if let Some(help) = help {
        out.extend_from_slice(b"# HELP ");
        out.extend_from_slice(name.as_bytes());
        out.push(b' ');
        write_escaped_help(out, help);
        out.push(b'\n');
    }
    out.extend_from_slice(b"# TYPE ");
    out.extend_from_slice(name.as_bytes());
    out.push(b' ');
    out.extend_from_slice(type_word(kind).as_bytes());
    out.push(b'\n');
}

pub fn type_word(kind: pm::MetricType) -> &'static str {
    match kind {
        pm::MetricType::Counter => "counter",
        pm::MetricType::Gauge => "gauge",
        pm::MetricType::Summary => "summary",
        pm::MetricType::Histogram => "histogram",
        pm::MetricType::GaugeHistogram => "gaugehistogram",
        pm::MetricType::Untyped => "untyped",
    }
}

/// A label as the renderer needs it: a name and a value. Implemented for the
/// protobuf pair and for borrowed `(name, value)` tuples, so that `apply` can
/// render a sanitised label set without building protobuf messages for it.
pub trait LabelRef {
    fn label_name(&self) -> &str;
    fn label_value(&self) -> &str;
}

impl LabelRef for pm::LabelPair {
    fn label_name(&self) -> &str {
        self.name()
    }
    fn label_value(&self) -> &str {
        self.value()
    }
}

impl LabelRef for (&str, &str) {
    fn label_name(&self) -> &str {
        self.0
    }
    fn label_value(&self) -> &str {
        self.1
    }
}

/// One sample line: `name{labels[,extra]} value`.
fn write_sample<L: LabelRef>(
    out: &mut Vec<u8>,
    name: &str,
    suffix: &str,
    labels: &[L],
    extra: Option<(&str, f64)>,
    value: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(suffix.as_bytes());
    if !labels.is_empty() || extra.is_some() {
        out.push(b'{');
        let mut first = true;
        for l in labels {
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(l.label_name().as_bytes());
            out.extend_from_slice(b"=\"");
            write_escaped_label_value(out, l.label_value());
            out.push(b'"');
        }
        if let Some((extra_name, extra_value)) = extra {
            if !first {
                out.push(b',');
            }
            out.extend_from_slice(extra_name.as_bytes());
            out.extend_from_slice(b"=\"");
            write_float(out, extra_value);
            out.push(b'"');
        }
        out.push(b'}');
    }
    out.push(b' ');
    value(out);
    out.push(b'\n');
}

/// The sample lines of one metric (series) of family `name` with type `kind`.
pub fn write_metric(out: &mut Vec<u8>, name: &str, kind: pm::MetricType, m: &pm::Metric) {
    write_metric_with_labels(out, name, kind, &m.label, m)
}

/// The sample lines of `m` under `labels` instead of its own labels.
pub fn write_metric_with_labels<L: LabelRef>(
    out: &mut Vec<u8>,
    name: &str,
    kind: pm::MetricType,
    labels: &[L],
    m: &pm::Metric,
) {
    match kind {
        pm::MetricType::Counter => {
            let v = m.counter.as_ref().map_or(0.0, |c| c.value());
            write_sample(out, name, "", labels, None, |o| write_float(o, v));
        }
        pm::MetricType::Gauge => {
            let v = m.gauge.as_ref().map_or(0.0, |g| g.value());
            write_sample(out, name, "", labels, None, |o| write_float(o, v));
        }
        pm::MetricType::Untyped => {
            let v = m.untyped.as_ref().map_or(0.0, |u| u.value());
            write_sample(out, name, "", labels, None, |o| write_float(o, v));
        }
        pm::MetricType::Summary => {
            let default = pm::Summary::default();
            let s = m.summary.as_ref().unwrap_or(&default);
            for q in &s.quantile {
                write_sample(out, name, "", labels, Some(("quantile", q.quantile())), |o| {
                    write_float(o, q.value())
                });
            }
            write_sample(out, name, "_sum", labels, None, |o| write_float(o, s.sample_sum()));
            write_sample(out, name, "_count", labels, None, |o| write_int(o, s.sample_count()));
        }
        pm::MetricType::Histogram | pm::MetricType::GaugeHistogram => {
            let default = pm::Histogram::default();
            let h = m.histogram.as_ref().unwrap_or(&default);
            let is_float = h.sample_count_float.is_some() && h.sample_count.is_none();
            let mut saw_inf = false;
            for b in &h.bucket {
                if b.upper_bound() == f64::INFINITY {
                    saw_inf = true;
                }
                write_sample(out, name, "_bucket", labels, Some(("le", b.upper_bound())), |o| {
                    if b.cumulative_count_float.is_some() && b.cumulative_count.is_none() {
                        write_float(o, b.cumulative_count_float())
                    } else {
                        write_int(o, b.cumulative_count())
                    }
                });
            }
            let write_count = |o: &mut Vec<u8>| {
                if is_float {
                    write_float(o, h.sample_count_float())
                } else {
                    write_int(o, h.sample_count())
                }
            };
            if !saw_inf {
                write_sample(out, name, "_bucket", labels, Some(("le", f64::INFINITY)), write_count);
            }
            write_sample(out, name, "_sum", labels, None, |o| write_float(o, h.sample_sum()));
            write_sample(out, name, "_count", labels, None, write_count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_float_formatting() {
        let cases = [
            (1.0, "1"),
            (42.0, "42"),
            (1000000.0, "1e+06"),
            (1234567.0, "1.234567e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (123456.7, "123456.7"),
            (-1.0, "-1"),
            (1.5e300, "1.5e+300"),
            (100.0, "100"),
            (-0.5, "-0.5"),
            (-0.0, "0"),
            (0.5, "0.5"),
            (2398.283, "2398.283"),
            (1.7953056569091036e9, "1.7953056569091036e+09"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
            (3.25, "3.25"),
            (1e21, "1e+21"),
            (123456.0, "123456"),
            (0.001, "0.001"),
        ];
        for (v, want) in cases {
            assert_eq!(format_float(v), want, "{v}");
        }
    }

    #[test]
    fn escapes() {
        let mut out = Vec::new();
        write_escaped_label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, b"a\\\\b\\\"c\\nd");
        let mut out = Vec::new();
        write_escaped_help(&mut out, "a\\b\"c\nd");
        assert_eq!(out, b"a\\\\b\"c\\nd");
    }

    #[test]
    fn histogram_gets_an_inf_bucket() {
        let m = pm::Metric {
            label: vec![pm::LabelPair {
                name: Some("job".into()),
                value: Some("j".into()),
            }],
            histogram: Some(pm::Histogram {
                sample_count: Some(5),
                sample_sum: Some(10.0),
                bucket: vec![pm::Bucket {
                    upper_bound: Some(1.0),
                    cumulative_count: Some(2),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut out = Vec::new();
        write_metric(&mut out, "h", pm::MetricType::Histogram, &m);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "h_bucket{job=\"j\",le=\"1\"} 2\nh_bucket{job=\"j\",le=\"+Inf\"} 5\nh_sum{job=\"j\"} 10\nh_count{job=\"j\"} 5\n"
        );
    }
}
