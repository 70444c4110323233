//! Parser for the Prometheus text exposition format 0.0.4, as pushed by clients.
//!
//! A byte-level state machine that follows Go's `expfmt.TextParser` (the
//! reference's parser) closely, so that what the reference accepts is accepted
//! here and its error texts carry over: every line ends in `\n`; HELP/TYPE
//! comments; `_sum`/`_count`/`_bucket`/`quantile` lines are folded into
//! summaries and histograms; families left without samples are dropped.
//! Two deliberate differences: invalid UTF-8 anywhere (label values, HELP) is a
//! parse error, and `gauge_histogram` is an unknown type.

use std::collections::HashMap;

use thiserror::Error;

use super::go_quote::{go_quote, go_quote_byte};
use super::names::{
    is_label_name_continuation, is_label_name_start, is_metric_name_continuation, is_metric_name_start,
};
use crate::pb::io::prometheus::client as pm;

/// A text body that is not valid exposition format.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("text format parsing error in line {line}: {message}")]
pub struct TextParseError {
    pub line: usize,
    pub message: String,
}

/// Parses a whole body into metric families (in order of first appearance).
pub fn parse_text(input: &[u8]) -> Result<Vec<pm::MetricFamily>, TextParseError> {
    let mut parser = Parser {
        input,
        pos: 0,
        line: 0,
        families: Vec::new(),
        by_name: HashMap::new(),
        compound: HashMap::new(),
    };
    parser.run()?;
    let mut families = parser.families;
    families.retain(|f| !f.metric.is_empty());
    Ok(families)
}

/// Where the current sample line goes inside its family.
#[derive(Clone, Copy, PartialEq)]
enum Part {
    Plain,
    Count,
    Sum,
}

struct Parser<'a> {
    input: &'a [u8],
    pos: usize,
    line: usize,
    families: Vec<pm::MetricFamily>,
    by_name: HashMap<String, usize>,
    /// (family index, label signature) -> metric index, for summaries/histograms.
    compound: HashMap<(usize, Vec<(String, String)>), usize>,
}

type Step<T> = Result<T, TextParseError>;

impl<'a> Parser<'a> {
    fn err<T>(&self, message: impl Into<String>) -> Step<T> {
        Err(TextParseError {
            line: self.line,
            message: message.into(),
        })
    }

    fn eof<T>(&self) -> Step<T> {
        self.err("unexpected end of input stream")
    }

    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// The current byte; end of input inside a line is an error.
    fn cur(&self) -> Step<u8> {
        match self.peek() {
            Some(b) => Ok(b),
            None => self.eof(),
        }
    }

    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn run(&mut self) -> Step<()> {
        loop {
            self.line += 1;
            self.skip_blank();
            match self.peek() {
                None => return Ok(()),
                Some(b'\n') => self.pos += 1,
                Some(b'#') => {
                    self.pos += 1;
                    self.comment()?;
                }
                Some(_) => self.sample()?,
            }
        }
    }

    fn read_while(&mut self, start: fn(u8) -> bool, cont: fn(u8) -> bool) -> &str {
        let begin = self.pos;
        if self.peek().is_some_and(start) {
            self.pos += 1;
            while self.peek().is_some_and(cont) {
                self.pos += 1;
            }
        }
        // Only ASCII name bytes were consumed.
        std::str::from_utf8(&self.input[begin..self.pos]).unwrap_or_default()
    }

    /// The next token: a slice of the input, not of the parser, so the
    /// parser can be used (for an error) while the token is held.
    fn read_until_whitespace(&mut self) -> Step<&'a [u8]> {
        let input = self.input;
        let begin = self.pos;
        loop {
            match self.peek() {
                None => return self.eof(),
                Some(b' ' | b'\t' | b'\n') => return Ok(&input[begin..self.pos]),
                Some(_) => self.pos += 1,
            }
        }
    }

    /// Rest of the line (the `\n` is consumed). HELP text recognises `\\` and `\n`.
    fn read_until_newline(&mut self, escapes: bool) -> Step<Vec<u8>> {
        let mut out = Vec::new();
        loop {
            let b = self.cur()?;
            self.pos += 1;
            match b {
                b'\n' => return Ok(out),
                b'\\' if escapes => {
                    let e = self.cur()?;
                    self.pos += 1;
                    match e {
                        b'\\' => out.push(b'\\'),
                        b'n' => out.push(b'\n'),
                        other => return self.err(format!("invalid escape sequence '\\{}'", other as char)),
                    }
                }
                _ => out.push(b),
            }
        }
    }

    fn comment(&mut self) -> Step<()> {
        self.skip_blank();
        if self.cur()? == b'\n' {
            self.pos += 1;
            return Ok(());
        }
        let keyword = self.read_until_whitespace()?;
        if keyword != b"HELP" && keyword != b"TYPE" {
            return self.skip_line();
        }
        if self.cur()? == b'\n' {
            self.pos += 1;
            return Ok(());
        }
        self.skip_blank();
        let name = self
            .read_while(is_metric_name_start, is_metric_name_continuation)
            .to_string();
        match self.cur()? {
            b'\n' => {
                self.pos += 1;
                return Ok(());
            }
            b' ' | b'\t' => {}
            _ => return self.err("invalid metric name in comment"),
        }
        let (family, _) = self.family_for(&name);
        // Errors name the family the line went to, as the reference's parser
        // does: `# TYPE s_count gauge` after a summary `s` is about `s`.
        let family_name = self.families[family].name.clone().unwrap_or_default();
        self.skip_blank();
        if self.cur()? == b'\n' {
            self.pos += 1;
            return Ok(());
        }
        if keyword == b"HELP" {
            if self.families[family].help.is_some() {
                return self.err(format!("second HELP line for metric name {family_name:?}"));
            }
            let help = self.read_until_newline(true)?;
            match String::from_utf8(help) {
                Ok(help) => self.families[family].help = Some(help),
                Err(_) => return self.err(format!("HELP text of metric name {name:?} is not valid UTF-8")),
            }
        } else {
            if self.families[family].r#type.is_some() {
                return self.err(format!(
                    "second TYPE line for metric name {family_name:?}, or TYPE reported after samples"
                ));
            }
            let word = self.read_until_newline(false)?;
            let kind = match word.to_ascii_uppercase().as_slice() {
                b"COUNTER" => pm::MetricType::Counter,
                b"GAUGE" => pm::MetricType::Gauge,
                b"SUMMARY" => pm::MetricType::Summary,
                b"UNTYPED" => pm::MetricType::Untyped,
                b"HISTOGRAM" => pm::MetricType::Histogram,
                _ => return self.err(format!("unknown metric type {}", go_quote(&word))),
            };
            self.families[family].r#type = Some(kind as i32);
        }
        Ok(())
    }

    fn skip_line(&mut self) -> Step<()> {
        loop {
            let b = self.cur()?;
            self.pos += 1;
            if b == b'\n' {
                return Ok(());
            }
        }
    }

    /// The family a name belongs to: its own, or the summary/histogram whose
    /// `_count`/`_sum`/`_bucket` it is. Creates a family when there is none.
    fn family_for(&mut self, name: &str) -> (usize, Part) {
        if let Some(&i) = self.by_name.get(name) {
            return (i, Part::Plain);
        }
        let stripped = [("_count", Part::Count), ("_sum", Part::Sum), ("_bucket", Part::Plain)];
        for (suffix, part) in stripped {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some(&i) = self.by_name.get(base) {
                    let kind = self.families[i].r#type;
                    let is_summary = kind == Some(pm::MetricType::Summary as i32);
                    let is_histogram = kind == Some(pm::MetricType::Histogram as i32);
                    if (is_summary && suffix != "_bucket") || is_histogram {
                        return (i, part);
                    }
                }
            }
        }
        let i = self.families.len();
        self.families.push(pm::MetricFamily {
            name: Some(name.to_string()),
            ..Default::default()
        });
        self.by_name.insert(name.to_string(), i);
        (i, Part::Plain)
    }

    fn sample(&mut self) -> Step<()> {
        let name = self
            .read_while(is_metric_name_start, is_metric_name_continuation)
            .to_string();
        if name.is_empty() {
            return self.err("invalid metric name");
        }
        let (family, part) = self.family_for(&name);
        let kind = *self.families[family]
            .r#type
            .get_or_insert(pm::MetricType::Untyped as i32);
        let is_summary = kind == pm::MetricType::Summary as i32;
        let is_histogram = kind == pm::MetricType::Histogram as i32;
        let family_name = self.families[family].name.clone().unwrap_or_default();
        self.skip_blank();

        let mut labels: Vec<pm::LabelPair> = Vec::new();
        let mut signature: Vec<(String, String)> = Vec::new();
        let mut special: Option<f64> = None; // quantile or le
        if self.cur()? == b'{' {
            self.pos += 1;
            loop {
                self.skip_blank();
                if self.cur()? == b'}' {
                    self.pos += 1;
                    break;
                }
                let label = self
                    .read_while(is_label_name_start, is_label_name_continuation)
                    .to_string();
                if label.is_empty() {
                    return self.err(format!("invalid label name for metric {family_name:?}"));
                }
                if label == "__name__" {
                    return self.err("label name \"__name__\" is reserved");
                }
                let is_special = (is_summary && label == "quantile") || (is_histogram && label == "le");
                if !is_special && labels.iter().any(|l| l.name.as_deref() == Some(label.as_str())) {
                    return self.err(format!("duplicate label names for metric {family_name:?}"));
                }
                self.skip_blank();
                let b = self.cur()?;
                if b != b'=' {
                    return self.err(format!("expected '=' after label name, found {}", go_quote_byte(b)));
                }
                self.pos += 1;
                self.skip_blank();
                let b = self.cur()?;
                if b != b'"' {
                    return self.err(format!(
                        "expected '\"' at start of label value, found {}",
                        go_quote_byte(b)
                    ));
                }
                self.pos += 1;
                let value = self.label_value()?;
                if is_special {
                    match parse_float(&value) {
                        Some(v) => special = Some(v),
                        None => {
                            return self.err(format!(
                                "expected float as value for '{label}' label, got {}",
                                go_quote(value.as_bytes())
                            ))
                        }
                    }
                } else {
                    if is_summary || is_histogram {
                        signature.push((label.clone(), value.clone()));
                    }
                    labels.push(pm::LabelPair {
                        name: Some(label),
                        value: Some(value),
                    });
                }
                self.skip_blank();
                match self.cur()? {
                    b',' => self.pos += 1,
                    b'}' => {
                        self.pos += 1;
                        break;
                    }
                    _ => {
                        let last = labels.last().and_then(|l| l.value.clone()).unwrap_or_default();
                        return self.err(format!("unexpected end of label value {}", go_quote(last.as_bytes())));
                    }
                }
            }
            self.skip_blank();
        }

        let token = self.read_until_whitespace()?;
        let value = match std::str::from_utf8(token).ok().and_then(parse_float) {
            Some(v) => v,
            None => return self.err(format!("expected float as value, got {}", go_quote(token))),
        };

        // The reference's parser uses NaN as "no quantile" / "no bucket": a
        // `quantile="NaN"` or `le="NaN"` line is dropped there, so it is here.
        let special = special.filter(|v| !v.is_nan());
        // Counts are whole numbers from 0; fractions are truncated as Go's
        // `uint64(v)` does, but what Go would turn into garbage there (-1 into
        // 2^64-1, NaN into 2^63 on amd64) is refused.
        // (`Part::Count` only comes from a summary's or histogram's `_count`.)
        let is_count = part == Part::Count || (is_histogram && part == Part::Plain && special.is_some());
        let count = if is_count {
            match count_of(value) {
                Some(c) => Some(c),
                None => {
                    return self.err(format!(
                        "expected a count (a number from 0) as value, got {}",
                        go_quote(token)
                    ))
                }
            }
        } else {
            None
        };

        let metric_index = if is_summary || is_histogram {
            signature.sort();
            let metrics = &mut self.families[family].metric;
            *self.compound.entry((family, signature)).or_insert_with(|| {
                metrics.push(pm::Metric {
                    label: labels,
                    ..Default::default()
                });
                metrics.len() - 1
            })
        } else {
            let metrics = &mut self.families[family].metric;
            metrics.push(pm::Metric {
                label: labels,
                ..Default::default()
            });
            metrics.len() - 1
        };
        let metric = &mut self.families[family].metric[metric_index];
        if kind == pm::MetricType::Counter as i32 {
            metric.counter = Some(pm::Counter {
                value: Some(value),
                ..Default::default()
            });
        } else if kind == pm::MetricType::Gauge as i32 {
            metric.gauge = Some(pm::Gauge { value: Some(value) });
        } else if kind == pm::MetricType::Untyped as i32 {
            metric.untyped = Some(pm::Untyped { value: Some(value) });
        } else if is_summary {
            let summary = metric.summary.get_or_insert_with(Default::default);
            match (part, special) {
                (Part::Count, _) => summary.sample_count = count,
                (Part::Sum, _) => summary.sample_sum = Some(value),
                (Part::Plain, Some(q)) => summary.quantile.push(pm::Quantile {
                    quantile: Some(q),
                    value: Some(value),
                }),
                (Part::Plain, None) => {}
            }
        } else {
            let histogram = metric.histogram.get_or_insert_with(Default::default);
            match (part, special) {
                (Part::Count, _) => histogram.sample_count = count,
                (Part::Sum, _) => histogram.sample_sum = Some(value),
                (Part::Plain, Some(le)) => histogram.bucket.push(pm::Bucket {
                    upper_bound: Some(le),
                    cumulative_count: count,
                    ..Default::default()
                }),
                (Part::Plain, None) => {}
            }
        }

        // Optional timestamp, then the end of the line.
        if self.cur()? == b'\n' {
            self.pos += 1;
            return Ok(());
        }
        self.skip_blank();
        let token = self.read_until_whitespace()?;
        let timestamp: i64 = match std::str::from_utf8(token).ok().and_then(|t| t.parse().ok()) {
            Some(t) => t,
            None => return self.err(format!("expected integer as timestamp, got {}", go_quote(token))),
        };
        self.families[family].metric[metric_index].timestamp_ms = Some(timestamp);
        let rest = self.read_until_newline(false)?;
        if !rest.is_empty() {
            return self.err(format!("spurious string after timestamp: {}", go_quote(&rest)));
        }
        Ok(())
    }

    /// A quoted label value after its opening `"`; consumes the closing `"`.
    fn label_value(&mut self) -> Step<String> {
        let mut out = Vec::new();
        loop {
            let b = self.cur()?;
            self.pos += 1;
            match b {
                b'"' => break,
                b'\n' => return self.err(format!("label value {} contains unescaped new-line", go_quote(&out))),
                b'\\' => {
                    let e = self.cur()?;
                    self.pos += 1;
                    match e {
                        b'"' | b'\\' => out.push(e),
                        b'n' => out.push(b'\n'),
                        other => return self.err(format!("invalid escape sequence '\\{}'", other as char)),
                    }
                }
                _ => out.push(b),
            }
        }
        match String::from_utf8(out) {
            Ok(s) => Ok(s),
            Err(e) => self.err(format!("invalid label value {}", go_quote(e.as_bytes()))),
        }
    }
}

/// A pushed count (`_count`, or a histogram bucket) as a whole number:
/// fractions truncated as Go's `uint64(v)` does, `None` where that cast gives
/// no meaningful number (negative, NaN, infinite, 2^64 and above).
fn count_of(value: f64) -> Option<u64> {
    // 2^64 as an f64 is exact; everything below it converts without saturating.
    (0.0..18_446_744_073_709_551_616.0)
        .contains(&value)
        .then_some(value as u64)
}

/// The NaN Go's `strconv.ParseFloat` returns (`math.NaN()`).
const GO_NAN: f64 = f64::from_bits(0x7ff8_0000_0000_0001);

/// Go's `strconv.ParseFloat` as the exposition format uses it: decimal and
/// exponent forms, `Inf`/`Infinity` in any case with optional sign, `NaN` in
/// any case without one (Go refuses `+nan` and `-NaN`; Rust would take them);
/// no hex, no `_`. A finite number too large for an f64 (`1e400`) is an error
/// there (`ErrRange`), not infinity; one too small becomes 0, as in Go.
pub fn parse_float(s: &str) -> Option<f64> {
    if s.is_empty() || s.contains(['_', 'x', 'X', 'p', 'P']) {
        return None;
    }
    let value = s.parse::<f64>().ok()?;
    if value.is_nan() {
        if s.starts_with(['+', '-']) {
            return None;
        }
        // Go's `math.NaN()`, bit for bit: the protobuf exposition carries
        // the bits, and there the reference's NaN is this one.
        return Some(GO_NAN);
    }
    if value.is_infinite() {
        let word = s.trim_start_matches(['+', '-']);
        if !word.eq_ignore_ascii_case("inf") && !word.eq_ignore_ascii_case("infinity") {
            return None;
        }
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_numbers_are_refused_like_go_parse_float() {
        assert_eq!(
            err("m 1e400\n"),
            "text format parsing error in line 1: expected float as value, got \"1e400\""
        );
        assert_eq!(
            err("m -1e400\n"),
            "text format parsing error in line 1: expected float as value, got \"-1e400\""
        );
        assert_eq!(parse_float("1e-400"), Some(0.0));
        assert_eq!(parse_float("-Infinity"), Some(f64::NEG_INFINITY));
        assert_eq!(parse_float("+inf"), Some(f64::INFINITY));
    }

    #[test]
    fn a_nan_bucket_or_quantile_line_is_dropped_as_by_the_reference() {
        let h = one("# TYPE h histogram\nh_bucket{le=\"NaN\"} 5\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n");
        let buckets = &h.metric[0].histogram.as_ref().unwrap().bucket;
        assert_eq!(buckets.len(), 1, "{buckets:?}");
        assert_eq!(buckets[0].upper_bound, Some(f64::INFINITY));
        let s = one("# TYPE s summary\ns{quantile=\"nan\"} 1\ns{quantile=\"0.5\"} 2\n");
        let quantiles = &s.metric[0].summary.as_ref().unwrap().quantile;
        assert_eq!(quantiles.len(), 1, "{quantiles:?}");
        assert_eq!(quantiles[0].quantile, Some(0.5));
    }

    #[test]
    fn counts_must_be_numbers_from_zero() {
        for (body, got) in [
            ("# TYPE h histogram\nh_bucket{le=\"1\"} -1\n", "-1"),
            ("# TYPE h histogram\nh_count NaN\n", "NaN"),
            ("# TYPE s summary\ns_count -0.5\n", "-0.5"),
            ("# TYPE s summary\ns_count +Inf\n", "+Inf"),
            ("# TYPE h histogram\nh_count 2e19\n", "2e19"),
        ] {
            assert_eq!(
                err(body),
                format!(
                    "text format parsing error in line 2: expected a count (a number from 0) as value, got {got:?}"
                ),
                "{body}"
            );
        }
        // Fractions are truncated, as Go's uint64() does; sums and quantile
        // values are plain floats.
        let h = one("# TYPE h histogram\nh_bucket{le=\"1\"} 2.9\nh_count -0\nh_sum -3\n");
        let histogram = h.metric[0].histogram.as_ref().unwrap();
        assert_eq!(histogram.bucket[0].cumulative_count, Some(2));
        assert_eq!(histogram.sample_count, Some(0));
        assert_eq!(histogram.sample_sum, Some(-3.0));
        let s = one("# TYPE s summary\ns{quantile=\"0.5\"} -1\ns_sum NaN\n");
        assert_eq!(s.metric[0].summary.as_ref().unwrap().quantile[0].value, Some(-1.0));
    }

    #[test]
    fn a_type_or_help_line_of_a_summary_part_is_about_the_summary() {
        assert_eq!(
            err("# TYPE s summary\ns_sum 1\n# TYPE s_count gauge\n"),
            "text format parsing error in line 3: second TYPE line for metric name \"s\", or TYPE reported after samples"
        );
        assert_eq!(
            err("# TYPE h histogram\n# HELP h a\n# HELP h_bucket b\n"),
            "text format parsing error in line 3: second HELP line for metric name \"h\""
        );
    }

    #[test]
    fn nan_takes_no_sign_as_in_go_parse_float() {
        assert!(parse_float("nan").is_some_and(f64::is_nan));
        assert!(parse_float("NaN").is_some_and(f64::is_nan));
        assert_eq!(
            parse_float("NaN").map(f64::to_bits),
            Some(0x7ff8_0000_0000_0001),
            "Go's math.NaN()"
        );
        assert_eq!(
            err("m +nan\n"),
            "text format parsing error in line 1: expected float as value, got \"+nan\""
        );
        assert_eq!(parse_float("-NaN"), None);
    }

    fn err(body: &str) -> String {
        parse_text(body.as_bytes()).unwrap_err().to_string()
    }

    /// Each text is the reference's answer to the same body: what a client
    /// sent is quoted as Go's `%q` quotes it.
    #[test]
    fn errors_quote_the_input_as_go_does() {
        for (body, text) in [
            (&b"m{a=\"\xff\"} 1\n"[..], r#"line 1: invalid label value "\xff""#),
            (b"m 1\x01\n", r#"line 1: expected float as value, got "1\x01""#),
            (b"m 1 \xff\n", r#"line 1: expected integer as timestamp, got "\xff""#),
            (b"m 1 2 \x01x\n", r#"line 1: spurious string after timestamp: " \x01x""#),
            (
                "# TYPE m cü\x01\n".as_bytes(),
                r#"line 1: unknown metric type "cü\x01""#,
            ),
            (
                b"m{a=\x01} 1\n",
                r#"line 1: expected '"' at start of label value, found '\x01'"#,
            ),
            (
                b"m{a\x01} 1\n",
                r#"line 1: expected '=' after label name, found '\x01'"#,
            ),
            (
                "m \u{200b}\n".as_bytes(),
                r#"line 1: expected float as value, got "\u200b""#,
            ),
            (
                b"# TYPE h histogram\nh_bucket{le=\"x\x7f\"} 1\n",
                r#"line 2: expected float as value for 'le' label, got "x\x7f""#,
            ),
        ] {
            assert_eq!(
                parse_text(body).unwrap_err().to_string(),
                format!("text format parsing error in {text}"),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    fn one(body: &str) -> pm::MetricFamily {
        let mut families = parse_text(body.as_bytes()).unwrap();
        assert_eq!(families.len(), 1, "{families:?}");
        families.remove(0)
    }

    #[test]
    fn readme_example() {
        let body = "# TYPE some_metric counter\nsome_metric{label=\"val1\"} 42\n# TYPE another_metric gauge\n# HELP another_metric Just an example.\nanother_metric 2398.283\n";
        let families = parse_text(body.as_bytes()).unwrap();
        assert_eq!(families.len(), 2);
        assert_eq!(families[0].r#type(), pm::MetricType::Counter);
        assert_eq!(families[0].metric[0].counter.as_ref().unwrap().value, Some(42.0));
        assert_eq!(families[1].help.as_deref(), Some("Just an example."));
    }

    #[test]
    fn reference_error_texts() {
        assert_eq!(
            err("blablabla\n"),
            "text format parsing error in line 1: expected float as value, got \"\""
        );
        assert_eq!(
            err("no_newline 1"),
            "text format parsing error in line 1: unexpected end of input stream"
        );
        assert_eq!(
            err("crlf 1\r\n"),
            "text format parsing error in line 1: expected float as value, got \"1\\r\""
        );
        assert_eq!(
            err("bad-name 1\n"),
            "text format parsing error in line 1: expected float as value, got \"-name\""
        );
        assert_eq!(
            err("m{__name__=\"x\"} 1\n"),
            "text format parsing error in line 1: label name \"__name__\" is reserved"
        );
        assert_eq!(
            err("# TYPE m gauge\n# TYPE m counter\nm 1\n"),
            "text format parsing error in line 2: second TYPE line for metric name \"m\", or TYPE reported after samples"
        );
        assert_eq!(
            err("# TYPE m foo\nm 1\n"),
            "text format parsing error in line 1: unknown metric type \"foo\""
        );
        assert_eq!(
            err("m abc\n"),
            "text format parsing error in line 1: expected float as value, got \"abc\""
        );
        assert_eq!(
            err("ex 1 # {a=\"b\"} 1\n"),
            "text format parsing error in line 1: expected integer as timestamp, got \"#\""
        );
        assert_eq!(
            err("m_dup{a=\"1\",a=\"2\"} 1\n"),
            "text format parsing error in line 1: duplicate label names for metric \"m_dup\""
        );
        assert_eq!(
            err("m{a=\"\\t\"} 1\n"),
            "text format parsing error in line 1: invalid escape sequence '\\t'"
        );
        assert_eq!(
            err("m_x 1 2 3\n"),
            "text format parsing error in line 1: spurious string after timestamp: \" 3\""
        );
        assert_eq!(
            err("1m 1\n"),
            "text format parsing error in line 1: invalid metric name"
        );
        assert_eq!(
            err("m_l{1a=\"x\"} 1\n"),
            "text format parsing error in line 1: invalid label name for metric \"m_l\""
        );
        assert_eq!(
            err("f5 0x10\n"),
            "text format parsing error in line 1: expected float as value, got \"0x10\""
        );
        assert_eq!(
            err("# TYPE hh histogram\nhh_bucket{le=\"x\"} 1\n"),
            "text format parsing error in line 2: expected float as value for 'le' label, got \"x\""
        );
        assert_eq!(
            err("# TYPE gh gaugehistogram\ngh 1\n"),
            "text format parsing error in line 1: unknown metric type \"gaugehistogram\""
        );
        assert!(err("m{a=\"\u{0}\\xff\"} 1\n").contains("line 1"));
    }

    #[test]
    fn lenient_parts_are_accepted() {
        one("\n# a comment\n  lead 1\n");
        one("tab\t1\n");
        one("m{a=\"b\",} 1\n");
        one("m{} 1\n");
        one("m:colon 1\n");
        one("# TYPE m_c COUNTER\nm_c 1\n");
        assert!(parse_text(b"# TYPE om gauge\nom 1\n# EOF\n").is_ok());
        assert!(parse_text(b"").unwrap().is_empty());
    }

    #[test]
    fn families_without_samples_are_dropped() {
        assert!(parse_text(b"# TYPE nosamples counter\n# HELP nosamples x\n")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn timestamps_are_parsed_for_later_rejection() {
        assert_eq!(one("m 1 1000\n").metric[0].timestamp_ms, Some(1000));
        assert_eq!(one("m 1 0\n").metric[0].timestamp_ms, Some(0));
    }

    #[test]
    fn summaries_and_histograms_are_assembled() {
        let s = one("# TYPE s summary\ns{quantile=\"0.5\",a=\"x\"} 1\ns_sum{a=\"x\"} 3\ns_count{a=\"x\"} 2\n");
        assert_eq!(s.metric.len(), 1);
        let summary = s.metric[0].summary.as_ref().unwrap();
        assert_eq!((summary.sample_count, summary.sample_sum), (Some(2), Some(3.0)));
        assert_eq!(summary.quantile[0].quantile, Some(0.5));
        let h = one("# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 3\nh_count 2\n");
        let histogram = h.metric[0].histogram.as_ref().unwrap();
        assert_eq!(histogram.bucket.len(), 2);
        assert_eq!(histogram.bucket[1].upper_bound, Some(f64::INFINITY));
        // Without a TYPE line the suffixed names are separate untyped families.
        assert_eq!(parse_text(b"x_bucket{le=\"1\"} 1\nx_count 1\n").unwrap().len(), 2);
    }

    #[test]
    fn special_values_and_escapes() {
        let f = parse_text(b"a NaN\nb +Inf\nc -Inf\nd Inf\ne .5\ng 1e-3\n").unwrap();
        assert_eq!(f.len(), 6);
        let m = one("m{a=\"q\\\"\\\\\\n\"} 1\n");
        assert_eq!(m.metric[0].label[0].value.as_deref(), Some("q\"\\\n"));
        let h = one("# HELP h a \\\\ b \\n c\nh 1\n");
        assert_eq!(h.help.as_deref(), Some("a \\ b \n c"));
    }

    #[test]
    fn invalid_utf8_label_value_is_a_parse_error() {
        assert!(parse_text(b"m{a=\"\xff\"} 1\n").is_err());
    }
}
