//! Which format a push body is in and which format a scrape answers in,
//! decided from the request's headers the way the reference's Go libraries
//! decide it, quirks included, so that a client that worked against the
//! Pushgateway gets the same format here:
//!
//! * a push body is delimited protobuf when `Content-Type` parses (Go 1.19's
//!   `mime.ParseMediaType`: any case in the type and parameter names, quoted
//!   values, RFC 2231 continuations, one trailing `;`) as
//!   `application/vnd.google.protobuf` with `proto=io.prometheus.client.MetricFamily`
//!   and `encoding=delimited`; anything else, unparsable headers included,
//!   is the text format;
//! * a scrape answers in the first format of `Accept` that
//!   `expfmt.Negotiate` knows, the media ranges ranked as its bundled
//!   `goautoneg` ranks them (by `q`, parsed as `strconv.ParseFloat(q, 32)`
//!   parses it, a `q` that does not parse counting as 0; a concrete type
//!   before a wildcard; types and parameters compared case-sensitively).
//!
//! As Go's `Header.Get`, only the first header of each name counts.
//!
//! `Accept-Encoding` is the exception: it is read as RFC 9110 says (codings
//! in any case, `gzip;q=0` refuses gzip) where the reference gzips whenever
//! its first header lists a lower-case `gzip`, `q=0` or not (README,
//! "Differences").

use std::collections::HashMap;

use axum::http::{header, HeaderMap};

use crate::model::protobuf::PROTOBUF_CONTENT_TYPE;

/// The body format of a scrape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScrapeFormat {
    /// Text format 0.0.4, the default.
    Text,
    /// Length-delimited `io.prometheus.client.MetricFamily` messages.
    ProtobufDelimited,
    /// The protobuf text format, one family per paragraph (a debug format).
    ProtobufText,
    /// The protobuf text format, one family per line (a debug format).
    ProtobufCompactText,
}

impl ScrapeFormat {
    /// The `Content-Type` of a scrape answered in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            ScrapeFormat::Text => "text/plain; version=0.0.4; charset=utf-8",
            ScrapeFormat::ProtobufDelimited => PROTOBUF_CONTENT_TYPE,
            ScrapeFormat::ProtobufText => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=text"
            }
            ScrapeFormat::ProtobufCompactText => {
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=compact-text"
            }
        }
    }
}

const PROTOBUF_MEDIA_TYPE: &str = "application/vnd.google.protobuf";
const METRIC_FAMILY_PROTO: &str = "io.prometheus.client.MetricFamily";

/// Whether a push body is delimited protobuf, by its `Content-Type`.
pub fn push_is_protobuf(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok((media_type, params)) = parse_media_type(&String::from_utf8_lossy(value.as_bytes())) else {
        return false;
    };
    media_type == PROTOBUF_MEDIA_TYPE
        && params.get("encoding").map(String::as_str) == Some("delimited")
        && params.get("proto").map(String::as_str) == Some(METRIC_FAMILY_PROTO)
}

/// The format a scrape answers in, by its `Accept` header.
pub fn scrape_format(headers: &HeaderMap) -> ScrapeFormat {
    let Some(value) = headers.get(header::ACCEPT) else {
        return ScrapeFormat::Text;
    };
    let accept = String::from_utf8_lossy(value.as_bytes());
    for range in ranked_media_ranges(&accept) {
        let protobuf = range.kind == "application" && range.subtype == "vnd.google.protobuf";
        if protobuf && range.param("proto") == Some(METRIC_FAMILY_PROTO) {
            match range.param("encoding") {
                Some("delimited") => return ScrapeFormat::ProtobufDelimited,
                Some("text") => return ScrapeFormat::ProtobufText,
                Some("compact-text") => return ScrapeFormat::ProtobufCompactText,
                _ => {}
            }
        }
        let version = range.param("version").unwrap_or_default();
        if range.kind == "text" && range.subtype == "plain" && (version.is_empty() || version == "0.0.4") {
            return ScrapeFormat::Text;
        }
    }
    ScrapeFormat::Text
}

/// Whether a scrape may be answered gzipped, by `Accept-Encoding` (every
/// such header): `gzip` listed in any case, without a zero weight.
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or_default().trim();
            let refused = it.any(|p| {
                let p = p.trim();
                let weight = p.strip_prefix("q=").or_else(|| p.strip_prefix("Q="));
                weight.is_some_and(|w| w.trim().parse::<f64>() == Ok(0.0))
            });
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// One media range of an `Accept` header, as `goautoneg` reads it.
#[derive(Debug)]
struct MediaRange<'a> {
    kind: &'a str,
    subtype: &'a str,
    q: f64,
    /// In header order; a later duplicate wins (a Go map's assignment).
    params: Vec<(&'a str, &'a str)>,
}

impl MediaRange<'_> {
    fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().rev().find(|(k, _)| *k == name).map(|(_, v)| *v)
    }

    /// `goautoneg`'s `Less`: a higher `q` first, else a concrete type or
    /// subtype before a wildcard (whatever the `q`s, so not an order).
    fn goes_before(&self, other: &MediaRange) -> bool {
        self.q > other.q || (self.kind != "*" && other.kind == "*") || (self.subtype != "*" && other.subtype == "*")
    }
}

/// `goautoneg.ParseAccept`: the media ranges of `header`, ranked. Ranked by
/// insertion sort, which is what Go 1.19's `sort.Sort` does for up to 12
/// elements; for longer headers its pattern-defeating quicksort can order
/// equal ranks differently (no client sends 13 media ranges).
fn ranked_media_ranges(header: &str) -> Vec<MediaRange<'_>> {
    let mut ranges = Vec::new();
    for part in header.split(',') {
        let part = part.trim_matches(' ');
        let mut pieces = part.split(';');
        let media_range = pieces.next().unwrap_or_default();
        let halves: Vec<&str> = media_range.split('/').collect();
        let kind = halves[0].trim_matches(' ');
        let subtype = match halves.len() {
            1 if kind == "*" => "*",
            2 => halves[1].trim_matches(' '),
            _ => continue,
        };
        let mut range = MediaRange {
            kind,
            subtype,
            q: 1.0,
            params: Vec::new(),
        };
        for param in pieces {
            let Some((token, value)) = param.split_once('=') else {
                continue;
            };
            let token = token.trim_matches(' ');
            if token == "q" {
                range.q = go_parse_float32(value);
            } else {
                range.params.push((token, value.trim_matches(' ')));
            }
        }
        ranges.push(range);
    }
    for i in 1..ranges.len() {
        let mut j = i;
        while j > 0 && ranges[j].goes_before(&ranges[j - 1]) {
            ranges.swap(j, j - 1);
            j -= 1;
        }
    }
    ranges
}

/// What `q, _ = strconv.ParseFloat(s, 32)` leaves in `q`: the number
/// rounded to 32 bits; 0 where `s` is not Go float syntax; ±Inf past the
/// 32-bit range. Go's syntax: decimal or hexadecimal (`0x1p-2`, exponent
/// required) mantissa, `_` between digits, `Inf`/`Infinity` in any case
/// with an optional sign, `NaN` in any case without one. A hexadecimal
/// mantissa of more than 13 digits may round differently from Go.
fn go_parse_float32(s: &str) -> f64 {
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'+') => (false, &s[1..]),
        Some(b'-') => (true, &s[1..]),
        _ => (false, s),
    };
    if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
        return if negative { f64::NEG_INFINITY } else { f64::INFINITY };
    }
    if s.eq_ignore_ascii_case("nan") {
        return f64::NAN;
    }
    let Some(hex) = go_float_syntax(s) else {
        return 0.0;
    };
    let digits: String = unsigned.chars().filter(|&c| c != '_').collect();
    let magnitude = if hex {
        hex_float(&digits[2..])
    } else {
        digits.parse::<f32>().map(f64::from).unwrap_or(0.0)
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// Go's `readFloat` syntax check over the whole of `s`: `Some(hex)` when
/// `s` is a float literal, hexadecimal or not.
fn go_float_syntax(s: &str) -> Option<bool> {
    let b = s.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let hex = i + 2 < b.len() && b[i] == b'0' && b[i + 1].eq_ignore_ascii_case(&b'x');
    if hex {
        i += 2;
    }
    let (mut underscores, mut saw_dot, mut saw_digits) = (false, false, false);
    while i < b.len() {
        match b[i] {
            b'_' => underscores = true,
            b'.' if !saw_dot => saw_dot = true,
            c if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) => saw_digits = true,
            _ => break,
        }
        i += 1;
    }
    if !saw_digits {
        return None;
    }
    let exponent = if hex { b'p' } else { b'e' };
    if i < b.len() && b[i].eq_ignore_ascii_case(&exponent) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if !b.get(i).is_some_and(u8::is_ascii_digit) {
            return None;
        }
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'_') {
            underscores |= b[i] == b'_';
            i += 1;
        }
    } else if hex {
        return None;
    }
    (i == b.len() && (!underscores || go_underscores_ok(s))).then_some(hex)
}

/// Go's `underscoreOK`: each `_` sits between digits, or between a base
/// prefix and a digit.
fn go_underscores_ok(s: &str) -> bool {
    let mut b = s.as_bytes();
    if matches!(b.first(), Some(b'+' | b'-')) {
        b = &b[1..];
    }
    // '^' start, '0' digit or base prefix, '_' underscore, '!' anything else.
    let mut saw = b'^';
    let mut i = 0;
    let mut hex = false;
    if b.len() >= 2 && b[0] == b'0' && matches!(b[1].to_ascii_lowercase(), b'b' | b'o' | b'x') {
        i = 2;
        saw = b'0';
        hex = b[1].eq_ignore_ascii_case(&b'x');
    }
    while i < b.len() {
        let c = b[i];
        i += 1;
        if c.is_ascii_digit() || (hex && c.is_ascii_hexdigit()) {
            saw = b'0';
        } else if c == b'_' {
            if saw != b'0' {
                return false;
            }
            saw = b'_';
        } else if saw == b'_' {
            return false;
        } else {
            saw = b'!';
        }
    }
    saw != b'_'
}

/// The value of a hexadecimal float literal after its `0x` (`_` removed,
/// syntax checked), rounded to 32 bits.
fn hex_float(s: &str) -> f64 {
    let (mantissa, exponent) = s.split_once(['p', 'P']).unwrap_or((s, "0"));
    let mut value = 0f64;
    let mut fraction_digits = 0i32;
    let mut after_dot = false;
    for c in mantissa.chars() {
        if c == '.' {
            after_dot = true;
        } else if let Some(d) = c.to_digit(16) {
            value = value * 16.0 + f64::from(d);
            fraction_digits += i32::from(after_dot);
        }
    }
    let exponent: i32 = exponent.parse().unwrap_or(if exponent.starts_with('-') {
        i32::MIN / 2
    } else {
        i32::MAX / 2
    });
    let scaled = value * 2f64.powi(exponent.saturating_sub(4 * fraction_digits));
    // As f32, then back: Go rounds to 32 bits and overflows to ±Inf.
    f64::from(scaled as f32)
}

/// Why a media type does not parse (Go's `mime` errors).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MediaTypeError {
    #[error("no media type")]
    NoMediaType,
    #[error("expected slash after first token")]
    ExpectedSlash,
    #[error("expected token after slash")]
    ExpectedSubtype,
    #[error("unexpected content after media subtype")]
    ContentAfterSubtype,
    #[error("invalid media parameter")]
    InvalidParameter,
    #[error("duplicate parameter name")]
    DuplicateParameter,
}

/// Go 1.19's `mime.ParseMediaType`: the lower-cased media type and the
/// parameters (names lower-cased, values as given, RFC 2231 continuations
/// and charset-encoded values joined and decoded).
pub fn parse_media_type(v: &str) -> Result<(String, HashMap<String, String>), MediaTypeError> {
    let base = v.split(';').next().unwrap_or_default();
    let media_type = base.to_lowercase().trim().to_string();
    check_media_type(&media_type)?;
    let mut params: HashMap<String, String> = HashMap::new();
    // Base name -> parameter name -> value, for names with a `*`.
    let mut continuations: HashMap<String, HashMap<String, String>> = HashMap::new();
    let mut rest = &v[base.len()..];
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let Some((key, value, after)) = consume_media_param(rest) else {
            if rest.trim() == ";" {
                break; // One trailing semicolon is allowed.
            }
            return Err(MediaTypeError::InvalidParameter);
        };
        let map = match key.split_once('*') {
            Some((base_name, _)) => continuations.entry(base_name.to_string()).or_default(),
            None => &mut params,
        };
        if map.contains_key(&key) {
            return Err(MediaTypeError::DuplicateParameter);
        }
        map.insert(key, value);
        rest = after;
    }
    for (key, pieces) in continuations {
        if let Some(encoded) = pieces.get(&format!("{key}*")) {
            if let Some(decoded) = decode_rfc2231(encoded) {
                params.insert(key, decoded);
            }
            continue;
        }
        let mut joined = String::new();
        let mut valid = false;
        for n in 0.. {
            if let Some(plain) = pieces.get(&format!("{key}*{n}")) {
                valid = true;
                joined.push_str(plain);
                continue;
            }
            let Some(encoded) = pieces.get(&format!("{key}*{n}*")) else {
                break;
            };
            valid = true;
            let decoded = if n == 0 {
                decode_rfc2231(encoded)
            } else {
                percent_hex_unescape(encoded)
            };
            joined.push_str(&decoded.unwrap_or_default());
        }
        if valid {
            params.insert(key, joined);
        }
    }
    Ok((media_type, params))
}

fn check_media_type(s: &str) -> Result<(), MediaTypeError> {
    let (kind, rest) = consume_token(s);
    if kind.is_empty() {
        return Err(MediaTypeError::NoMediaType);
    }
    if rest.is_empty() {
        return Ok(());
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Err(MediaTypeError::ExpectedSlash);
    };
    let (subtype, rest) = consume_token(rest);
    if subtype.is_empty() {
        return Err(MediaTypeError::ExpectedSubtype);
    }
    if !rest.is_empty() {
        return Err(MediaTypeError::ContentAfterSubtype);
    }
    Ok(())
}

fn is_tspecial(c: u8) -> bool {
    b"()<>@,;:\\\"/[]?=".contains(&c)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii() && (c as u8) > 0x20 && (c as u8) < 0x7f && !is_tspecial(c as u8)
}

fn consume_token(v: &str) -> (&str, &str) {
    let end = v.find(|c| !is_token_char(c)).unwrap_or(v.len());
    v.split_at(end)
}

/// A token, or a quoted string with its escapes undone (a backslash only
/// escapes a tspecial; before anything else it is kept, as Go does for
/// Windows paths). `("", v)` where neither is there.
fn consume_value(v: &str) -> (String, &str) {
    let Some(quoted) = v.strip_prefix('"') else {
        let (token, rest) = consume_token(v);
        return (token.to_string(), rest);
    };
    let b = quoted.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => return (String::from_utf8_lossy(&out).into_owned(), &quoted[i + 1..]),
            b'\\' if i + 1 < b.len() && is_tspecial(b[i + 1]) => {
                out.push(b[i + 1]);
                i += 1;
            }
            b'\r' | b'\n' => return (String::new(), v),
            c => out.push(c),
        }
        i += 1;
    }
    (String::new(), v)
}

/// `; name = value`: the lower-cased name, the value and what follows.
fn consume_media_param(v: &str) -> Option<(String, String, &str)> {
    let rest = v.trim_start().strip_prefix(';')?.trim_start();
    let (name, rest) = consume_token(rest);
    if name.is_empty() {
        return None;
    }
    let rest = rest.trim_start().strip_prefix('=')?.trim_start();
    let (value, after) = consume_value(rest);
    if value.is_empty() && after.len() == rest.len() {
        return None;
    }
    Some((name.to_ascii_lowercase(), value, after))
}

/// `charset'language'percent-encoded` (RFC 2231), US-ASCII or UTF-8 only.
fn decode_rfc2231(v: &str) -> Option<String> {
    let mut parts = v.splitn(3, '\'');
    let (charset, _language, encoded) = (parts.next()?, parts.next()?, parts.next()?);
    let charset = charset.to_lowercase();
    if charset != "us-ascii" && charset != "utf-8" {
        return None;
    }
    percent_hex_unescape(encoded)
}

fn percent_hex_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'%' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        // Go checks `i+2 >= len(s)`: a `%XY` that ends the string is refused.
        if i + 2 >= b.len() {
            return None;
        }
        let hi = (b[i + 1] as char).to_digit(16)?;
        let lo = (b[i + 2] as char).to_digit(16)?;
        out.push((hi * 16 + lo) as u8);
        i += 3;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const PROTOBUF: &str = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily";

    fn headers(name: header::HeaderName, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_str(value).expect("header value"));
        h
    }

    fn protobuf_push(content_type: &str) -> bool {
        push_is_protobuf(&headers(header::CONTENT_TYPE, content_type))
    }

    fn negotiated(accept: &str) -> ScrapeFormat {
        scrape_format(&headers(header::ACCEPT, accept))
    }

    /// Each case was sent to the reference 1.5.1 with a protobuf body.
    #[test]
    fn a_push_is_protobuf_where_go_parses_the_content_type_so() {
        for (params, protobuf) in [
            ("; encoding=delimited", true),
            (";encoding=delimited;", true),
            ("; encoding = delimited", true),
            ("; ENCODING=delimited", true),
            ("; encoding=\"delimited\"", true),
            ("; encoding=delimited; x=\"a\\\"b\"", true),
            ("; encoding*0=deli; encoding*1=mited", true),
            ("; encoding*=utf-8''delimited", true),
            ("; encoding*=UTF-8'en'deli%6Dited", true),
            ("; encoding*0*=utf-8''deli; encoding*1*=mit%65d", true),
            ("; encoding=text; encoding*0=delimited", true),
            ("; encoding=Delimited", false),
            ("; encoding=delimited; encoding=delimited", false),
            ("; encoding=delimited; encoding=text", false),
            ("; encoding=delimited;;", false),
            ("; encoding=delimited; x=@", false),
            ("; encoding=\"deli\\mited\"", false),
            (", encoding=delimited", false),
            ("; encoding*=latin-1''delimited", false),
        ] {
            assert_eq!(protobuf_push(&format!("{PROTOBUF}{params}")), protobuf, "{params}");
        }
        assert!(protobuf_push(
            "APPLICATION/VND.GOOGLE.PROTOBUF; proto=io.prometheus.client.MetricFamily; encoding=delimited"
        ));
        assert!(!protobuf_push(
            "application/vnd.google.protobuf/x; proto=io.prometheus.client.MetricFamily; encoding=delimited"
        ));
        assert!(!protobuf_push(
            "application/vnd.google.protobuf; proto=io.prometheus.client.Other; encoding=delimited"
        ));
        assert!(!protobuf_push("text/plain; version=0.0.4"));
        assert!(!push_is_protobuf(&HeaderMap::new()));
    }

    #[test]
    fn go_media_type_errors() {
        assert_eq!(parse_media_type(""), Err(MediaTypeError::NoMediaType));
        assert_eq!(parse_media_type("text plain"), Err(MediaTypeError::ExpectedSlash));
        assert_eq!(parse_media_type("text/"), Err(MediaTypeError::ExpectedSubtype));
        assert_eq!(
            parse_media_type("text/plain x"),
            Err(MediaTypeError::ContentAfterSubtype)
        );
        assert_eq!(parse_media_type("text/plain; a"), Err(MediaTypeError::InvalidParameter));
        let (media, params) = parse_media_type(" Text/Plain ; Charset=\"UTF-8\" ").expect("parses");
        assert_eq!(media, "text/plain");
        assert_eq!(params.get("charset").map(String::as_str), Some("UTF-8"));
    }

    /// Each case was sent to the reference 1.5.1.
    #[test]
    fn a_scrape_format_is_negotiated_as_by_goautoneg() {
        use ScrapeFormat::*;
        let pb = format!("{PROTOBUF};encoding=delimited");
        for (accept, format) in [
            (pb.clone(), ProtobufDelimited),
            (format!("{pb};q=0, text/plain"), Text),
            (format!("text/plain;q=0.5, {pb}"), ProtobufDelimited),
            (format!("{pb};q=0"), ProtobufDelimited),
            (format!("*/*;q=1, {pb};q=0.1"), ProtobufDelimited),
            (format!("text/*;q=1, {pb};q=0.1"), ProtobufDelimited),
            (format!("{pb};q= 0.9, text/plain;q=0.5"), Text),
            (format!("Application/vnd.google.protobuf;{}", &pb[33..]), Text),
            (format!("{PROTOBUF};encoding=text"), ProtobufText),
            (format!("{PROTOBUF};encoding=compact-text"), ProtobufCompactText),
            (format!("{PROTOBUF};encoding=\"delimited\""), Text),
            ("application/openmetrics-text; version=1.0.0".into(), Text),
            (format!("text/plain;version=0.0.5, {pb}"), ProtobufDelimited),
            (format!("text/plain;version=, {pb}"), Text),
            (format!("text/plain;version= , {pb}"), Text),
            (format!("text/plain;q=0x1p-1, {pb};q=0.4"), Text),
            (format!("{pb};q=0.9, text/plain;q=0_5"), Text),
            (format!("{pb};q=0.9, text/plain;q=1_0.0"), Text),
            (format!("{pb};q=0.9, text/plain;q=0x_1p0"), Text),
            (format!("{pb};q=-1, text/plain;q=+nan"), Text),
            (format!("{pb};q=-1, text/plain;q=nan"), ProtobufDelimited),
            (format!("{pb};q=-1, text/plain;q=bogus"), Text),
            (format!("{pb};q=0.9, text/plain;q=1e40"), Text),
            (format!("{pb};q=1, text/plain;q=1"), ProtobufDelimited),
        ] {
            assert_eq!(negotiated(&accept), format, "{accept}");
        }
        assert_eq!(scrape_format(&HeaderMap::new()), Text);
    }

    #[test]
    fn gzip_is_read_as_rfc_9110_says() {
        let gzip = |value: &str| accepts_gzip(&headers(header::ACCEPT_ENCODING, value));
        assert!(gzip("gzip"));
        assert!(gzip("deflate, GZIP;q=0.5"));
        assert!(gzip("gzip ;q=1"));
        assert!(!gzip("gzip;q=0"));
        assert!(!gzip("gzip; q=0.000"));
        assert!(!gzip("x-gzip, identity"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn only_the_first_accept_header_counts() {
        let mut h = headers(header::ACCEPT, "text/plain");
        h.append(
            header::ACCEPT,
            HeaderValue::from_static(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited",
            ),
        );
        assert_eq!(scrape_format(&h), ScrapeFormat::Text);
    }

    #[test]
    fn q_values_parse_as_go_parse_float_32() {
        for (q, value) in [
            ("1", 1.0),
            ("0.5", 0.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("1e-1", f64::from(0.1f32)),
            ("0x1p-2", 0.25),
            ("0X.8P1", 1.0),
            ("0x1_0p0", 16.0),
            ("1_0", 10.0),
            ("-Infinity", f64::NEG_INFINITY),
            ("1e40", f64::INFINITY),
            ("0x10", 0.0),
            ("1__0", 0.0),
            ("_1", 0.0),
            ("1_", 0.0),
            ("", 0.0),
            (" 1", 0.0),
            ("+nan", 0.0),
            ("infin", 0.0),
            ("1e", 0.0),
            ("1e_1", 0.0),
        ] {
            assert_eq!(go_parse_float32(q), value, "{q}");
        }
        assert!(go_parse_float32("NaN").is_nan());
    }
}
