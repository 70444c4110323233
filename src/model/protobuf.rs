//! Length-delimited `io.prometheus.client.MetricFamily` streams: the protobuf
//! push body (and scrape answer) format.

use prost::Message;
use thiserror::Error;

use crate::pb::io::prometheus::client as pm;

/// The media type (with the parameters that select it) of delimited protobuf.
pub const PROTOBUF_CONTENT_TYPE: &str =
    "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ProtobufError {
    #[error("unexpected EOF: the body ends inside a length-delimited MetricFamily (message {index})")]
    Truncated { index: usize },
    #[error("invalid protobuf MetricFamily (message {index}): {reason}")]
    Invalid { index: usize, reason: String },
}

/// Decodes every message of a delimited stream. An empty body is no families.
///
/// A later family of a name replaces an earlier one before anything else
/// sees the body, as in the reference (which decodes into a map by name): a
/// replaced family's timestamps or errors do not count. Done here, where the
/// push enters, so the replicated log holds only what survives and every
/// replica's apply rules stay as they were.
pub fn decode_delimited(body: &[u8]) -> Result<Vec<pm::MetricFamily>, ProtobufError> {
    let mut families = decode_every_message(body)?;
    let mut last_of_name: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for (i, f) in families.iter().enumerate() {
        last_of_name.insert(f.name(), i);
    }
    if last_of_name.len() < families.len() {
        let keep: Vec<bool> = (0..families.len())
            .map(|i| last_of_name.get(families[i].name()) == Some(&i))
            .collect();
        let mut keep = keep.into_iter();
        families.retain(|_| keep.next().unwrap_or(true));
    }
    Ok(families)
}

fn decode_every_message(mut body: &[u8]) -> Result<Vec<pm::MetricFamily>, ProtobufError> {
    let mut families = Vec::new();
    let mut index = 0;
    while !body.is_empty() {
        let len = match prost::encoding::decode_varint(&mut body) {
            Ok(len) => len as usize,
            Err(_) => return Err(ProtobufError::Truncated { index }),
        };
        if len > body.len() {
            return Err(ProtobufError::Truncated { index });
        }
        let (message, rest) = body.split_at(len);
        let family = pm::MetricFamily::decode(message).map_err(|e| ProtobufError::Invalid {
            index,
            reason: e.to_string(),
        })?;
        families.push(family);
        body = rest;
        index += 1;
    }
    Ok(families)
}

/// Encodes families as a delimited stream.
pub fn encode_delimited(families: &[pm::MetricFamily], out: &mut Vec<u8>) {
    for f in families {
        // Writing into a Vec cannot fail.
        let _ = f.encode_length_delimited(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn family(name: &str, v: f64) -> pm::MetricFamily {
        pm::MetricFamily {
            name: Some(name.into()),
            r#type: Some(pm::MetricType::Gauge as i32),
            metric: vec![pm::Metric {
                gauge: Some(pm::Gauge { value: Some(v) }),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn round_trip() {
        let mut body = Vec::new();
        encode_delimited(&[family("a", 1.0), family("b", 2.0)], &mut body);
        let decoded = decode_delimited(&body).unwrap();
        assert_eq!(decoded, vec![family("a", 1.0), family("b", 2.0)]);
        assert!(decode_delimited(b"").unwrap().is_empty());
    }

    #[test]
    fn a_later_family_of_a_name_replaces_an_earlier_one() {
        let mut with_timestamp = family("a", 1.0);
        with_timestamp.metric[0].timestamp_ms = Some(5);
        let mut body = Vec::new();
        encode_delimited(&[with_timestamp, family("b", 2.0), family("a", 3.0)], &mut body);
        assert_eq!(
            decode_delimited(&body).unwrap(),
            vec![family("b", 2.0), family("a", 3.0)]
        );
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(decode_delimited(b"garbage-not-protobuf").is_err());
        let mut body = Vec::new();
        encode_delimited(&[family("a", 1.0)], &mut body);
        body.pop();
        assert!(matches!(decode_delimited(&body), Err(ProtobufError::Truncated { .. })));
    }
}
