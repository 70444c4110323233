//! PUT/POST/DELETE on `/metrics/job/...`: decode, propose, answer from the
//! applied outcome.

use std::io::Read;
use tokio::time::Instant;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{plain, HttpError};
use super::negotiation::push_is_protobuf;
use super::{AppState, LOG_INDEX_HEADER};
use crate::model::protobuf::decode_delimited;
use crate::model::text_parse::parse_text;
use crate::model::{GroupingKey, Outcome};
use crate::pb::io::prometheus::client::MetricFamily;

/// Reads at most `limit` bytes of the decoded body.
fn read_limited(reader: impl Read, limit: usize) -> Result<Vec<u8>, std::io::Error> {
    let mut out = Vec::new();
    reader.take(limit as u64 + 1).read_to_end(&mut out)?;
    Ok(out)
}

fn too_large(limit: usize) -> HttpError {
    HttpError::PayloadTooLarge(format!(
        "push body exceeds the limit of {limit} bytes (after decompression); split the push or raise --push.max-body-bytes"
    ))
}

/// Undoes `Content-Encoding` (gzip or snappy framed, any case). Other
/// encodings are ignored and the body parsed as it is, like the reference.
fn decode_body(headers: &HeaderMap, raw: bytes::Bytes, limit: usize) -> Result<Vec<u8>, HttpError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let decoded = match encoding.as_str() {
        "gzip" | "x-gzip" => read_limited(flate2::read::GzDecoder::new(raw.as_ref()), limit)
            .map_err(|e| HttpError::BadRequest(format!("gzip body does not decompress: {e}")))?,
        "snappy" => read_limited(snap::read::FrameDecoder::new(raw.as_ref()), limit).map_err(|e| {
            HttpError::BadRequest(format!("snappy body does not decompress (framed format expected): {e}"))
        })?,
        _ => raw.to_vec(),
    };
    if decoded.len() > limit {
        return Err(too_large(limit));
    }
    Ok(decoded)
}

/// Body bytes -> families, by Content-Type (protobuf only when fully selected).
fn parse_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<MetricFamily>, HttpError> {
    if push_is_protobuf(headers) {
        decode_delimited(body).map_err(|e| HttpError::BadRequest(e.to_string()))
    } else {
        parse_text(body).map_err(|e| HttpError::BadRequest(e.to_string()))
    }
}

fn count_series(families: &[MetricFamily]) -> usize {
    families.iter().map(|f| f.metric.len()).sum()
}

fn with_index(mut r: Response, index: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&index.to_string()) {
        r.headers_mut().insert(LOG_INDEX_HEADER, v);
    }
    r
}

fn empty(status: StatusCode) -> Response {
    (status, Body::empty()).into_response()
}

/// PUT (replace) or POST (merge) of a body to `key`.
pub async fn push(
    state: &AppState,
    method: &Method,
    key: GroupingKey,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    let started = Instant::now();
    let limit = state.config.max_body_bytes;
    let raw = axum::body::to_bytes(body, limit).await.map_err(|_| too_large(limit))?;
    let raw_len = raw.len();
    let decoded = decode_body(headers, raw, limit)?;
    let families = parse_body(headers, &decoded)?;
    let series = count_series(&families);
    if series > state.config.max_series {
        return Err(HttpError::PayloadTooLarge(format!(
            "push has {series} series; the limit is {} per push (--push.max-series)",
            state.config.max_series
        )));
    }
    let replace = method == Method::PUT;
    let receipt = state.gateway.push(&key, replace, families).await?;
    let check = state.gateway.consistency_check();
    let response = match receipt.outcome {
        Outcome::Pushed if check => empty(StatusCode::OK),
        Outcome::Pushed => empty(StatusCode::ACCEPTED),
        Outcome::Rejected { message } if check => {
            tracing::info!(%key, %message, method = %method, "push rejected");
            plain(StatusCode::BAD_REQUEST, message)
        }
        Outcome::Rejected { message } => {
            // With the check disabled the reference answers 202 before applying;
            // a rejected push is only recorded as a failure, and logged.
            tracing::warn!(%key, %message, "push rejected (consistency check disabled: answered 202)");
            empty(StatusCode::ACCEPTED)
        }
        Outcome::KeyConflict { message } => plain(StatusCode::BAD_REQUEST, message),
        other => {
            return Err(HttpError::Gateway(crate::gateway::GatewayError::Internal(format!(
                "unexpected outcome {other:?}"
            ))))
        }
    };
    state
        .metrics
        .observe_push(method.as_str(), started.elapsed().as_secs_f64(), raw_len);
    Ok(with_index(response, receipt.index))
}

/// DELETE of the exact group `key`.
pub async fn delete(state: &AppState, key: GroupingKey) -> Result<Response, HttpError> {
    let receipt = state.gateway.delete(&key).await?;
    Ok(with_index(empty(StatusCode::ACCEPTED), receipt.index))
}

/// Admin wipe: every group.
pub async fn wipe(state: &AppState) -> Result<Response, HttpError> {
    let receipt = state.gateway.wipe().await?;
    Ok(with_index(empty(StatusCode::ACCEPTED), receipt.index))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn gzip_and_snappy_bodies_decode_within_limits() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"m 1\n").unwrap();
        let body = bytes::Bytes::from(gz.finish().unwrap());
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("GZIP"));
        assert_eq!(decode_body(&headers, body.clone(), 100).unwrap(), b"m 1\n");
        assert!(matches!(
            decode_body(&headers, body, 2),
            Err(HttpError::PayloadTooLarge(_))
        ));
        assert!(matches!(
            decode_body(&headers, bytes::Bytes::from_static(b"x 1\n"), 100),
            Err(HttpError::BadRequest(_))
        ));

        let mut sn = snap::write::FrameEncoder::new(Vec::new());
        sn.write_all(b"m 2\n").unwrap();
        let body = bytes::Bytes::from(sn.into_inner().unwrap());
        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("snappy"));
        assert_eq!(decode_body(&headers, body, 100).unwrap(), b"m 2\n");

        headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("deflate"));
        assert_eq!(
            decode_body(&headers, bytes::Bytes::from_static(b"m 3\n"), 100).unwrap(),
            b"m 3\n"
        );
    }
}
