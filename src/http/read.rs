//! Read endpoints: the scrape (`GET /metrics`) and the JSON query API.

use std::io::Write;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::HttpError;
use super::negotiation::{accepts_gzip, scrape_format, ScrapeFormat};
use super::{AppState, LOG_INDEX_HEADER};
use crate::gateway::{GatewayError, ReadConsistency, ReadView};
use crate::model::api_json::group_object;
use crate::model::protobuf::encode_delimited;
use crate::model::protobuf_text::write_families;
use crate::model::render::{write_header, write_metric};
use crate::model::store::Piece;
use crate::pb::io::prometheus::client as pm;

/// `?consistency=stale` asks for this replica's local state without a read index.
pub fn consistency(state: &AppState, query: Option<&str>) -> ReadConsistency {
    let stale = query.is_some_and(|q| {
        q.split('&')
            .any(|kv| kv == "consistency=stale" || kv == "stale=true" || kv == "stale=1")
    });
    if stale {
        ReadConsistency::Stale
    } else {
        state.config.default_read
    }
}

fn index_header(r: &mut Response, index: u64) {
    if let Ok(v) = HeaderValue::from_str(&index.to_string()) {
        r.headers_mut().insert(LOG_INDEX_HEADER, v);
    }
}

/// Own families merged with every pushed family, sorted by name: what the
/// protobuf formats of a scrape hold.
fn all_families(state: &AppState, view: &ReadView) -> Vec<pm::MetricFamily> {
    let store = view.store();
    let shown = store.own_families_shown();
    let own = state
        .metrics
        .families(&state.gateway, store.group_count() as u64, store.series_count())
        .into_iter()
        .filter(|f| shown.binary_search(&f.name()).is_ok());
    let mut pushed = store.merged_families();
    let mut all: Vec<pm::MetricFamily> = Vec::with_capacity(shown.len() + pushed.len());
    for mut f in own {
        if let Some(i) = pushed.iter().position(|p| p.name == f.name) {
            f.metric.extend(pushed.remove(i).metric);
        }
        all.push(f);
    }
    all.extend(pushed);
    all.sort_by(|a, b| a.name().cmp(b.name()));
    all
}

/// A scrape body in `format`.
fn render(state: &AppState, view: ReadView, format: ScrapeFormat) -> Vec<u8> {
    let mut out = Vec::new();
    match format {
        ScrapeFormat::Text => return render_text_unlocked(state, view),
        ScrapeFormat::ProtobufDelimited => encode_delimited(&all_families(state, &view), &mut out),
        ScrapeFormat::ProtobufText => write_families(&mut out, &all_families(state, &view), false),
        ScrapeFormat::ProtobufCompactText => write_families(&mut out, &all_families(state, &view), true),
    }
    out
}

fn write_own(own: &[pm::MetricFamily], name: &str, out: &mut Vec<u8>) {
    if let Some(f) = own.iter().find(|f| f.name() == name) {
        write_header(out, name, f.help.as_deref(), f.r#type());
        for m in &f.metric {
            write_metric(out, name, f.r#type(), m);
        }
    }
}

/// The text exposition, holding the store only while planning: the sample
/// text of every group is shared, and is copied (and compressed) after the
/// read lock is released, so scrapes do not hold up applying pushes.
fn render_text_unlocked(state: &AppState, view: ReadView) -> Vec<u8> {
    let (plan, groups, series) = {
        let store = view.store();
        (
            store.render_plan(&store.own_families_shown()),
            store.group_count() as u64,
            store.series_count(),
        )
    };
    drop(view);
    let own = state.metrics.families(&state.gateway, groups, series);
    let size: usize = plan
        .iter()
        .map(|p| if let Piece::Text(b) = p { b.len() } else { 1024 })
        .sum();
    let mut out = Vec::with_capacity(size);
    for piece in plan {
        match piece {
            Piece::Text(b) => out.extend_from_slice(&b),
            Piece::Own(name) => write_own(&own, name, &mut out),
        }
    }
    out
}

/// `GET <telemetry path>`.
pub async fn scrape(state: &AppState, headers: &HeaderMap, query: Option<&str>) -> Result<Response, HttpError> {
    let view = state.gateway.read(consistency(state, query)).await?;
    let format = scrape_format(headers);
    let gzip = accepts_gzip(headers);
    let index = view.index();
    let app = state.clone();
    let body = crate::blocking::run(move || -> std::io::Result<Vec<u8>> {
        let text = render(&app, view, format);
        if gzip {
            let mut enc =
                flate2::write::GzEncoder::new(Vec::with_capacity(text.len() / 6), flate2::Compression::fast());
            enc.write_all(&text)?;
            enc.finish()
        } else {
            Ok(text)
        }
    })
    .await
    .map_err(|e| GatewayError::Internal(format!("rendering failed: {e}")))?
    .map_err(|e| GatewayError::Internal(format!("compressing failed: {e}")))?;
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(format.content_type()));
    if gzip {
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    index_header(&mut r, index);
    Ok(r)
}

/// Headers every `/api/v1` answer carries (the reference's CORS set).
pub fn cors(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("Accept, Authorization, Content-Type, Origin"),
    );
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    h.insert("access-control-allow-origin", HeaderValue::from_static("*"));
    h.insert("access-control-expose-headers", HeaderValue::from_static("Date"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-store, must-revalidate"),
    );
}

fn json_response(value: &Value, index: Option<u64>) -> Response {
    let mut r = (StatusCode::OK, value.to_string()).into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    cors(&mut r);
    if let Some(i) = index {
        index_header(&mut r, i);
    }
    r
}

/// `GET /api/v1/metrics`.
pub async fn api_metrics(state: &AppState, query: Option<&str>) -> Result<Response, HttpError> {
    let view = state.gateway.read(consistency(state, query)).await?;
    let index = view.index();
    let body = crate::blocking::run(move || {
        let groups: Vec<Value> = view.store().groups().map(|g| group_object(g)).collect();
        json!({"status": "success", "data": groups})
    })
    .await
    .map_err(|e| GatewayError::Internal(format!("rendering failed: {e}")))?;
    Ok(json_response(&body, Some(index)))
}

/// `GET /api/v1/status`.
pub fn api_status(state: &AppState) -> Response {
    let flags: serde_json::Map<String, Value> = state
        .config
        .flags
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let body = json!({
        "status": "success",
        "data": {
            "build_information": {
                "branch": "",
                "buildDate": "",
                "buildUser": "",
                "goVersion": "",
                "revision": crate::build_info::REVISION,
                "version": crate::build_info::VERSION,
            },
            "flags": flags,
            "start_time": state.start_time,
        }
    });
    json_response(&body, None)
}

/// `POST /api/v1/cluster/members` with `{"node_id": N, "address": "HOST:PORT"}`.
pub async fn add_member(state: &AppState, body: axum::body::Body) -> Result<Response, HttpError> {
    #[derive(serde::Deserialize)]
    struct Add {
        node_id: u64,
        address: String,
    }
    let raw = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map_err(|e| HttpError::BadRequest(format!("cannot read the request body: {e}")))?;
    let add: Add = serde_json::from_slice(&raw)
        .map_err(|e| HttpError::BadRequest(format!("expected {{\"node_id\": N, \"address\": \"HOST:PORT\"}}: {e}")))?;
    if add.node_id == 0 || add.address.rsplit_once(':').is_none() {
        return Err(HttpError::BadRequest(
            "node_id must be at least 1 and address HOST:PORT".into(),
        ));
    }
    let voters = state.gateway.add_member(add.node_id, add.address).await?;
    Ok(json_response(
        &json!({"status": "success", "data": {"voters": voters}}),
        None,
    ))
}

/// `DELETE /api/v1/cluster/members/<id>`.
pub async fn remove_member(state: &AppState, node_id: u64) -> Result<Response, HttpError> {
    let voters = state.gateway.remove_member(node_id).await?;
    Ok(json_response(
        &json!({"status": "success", "data": {"voters": voters}}),
        None,
    ))
}

/// `GET /api/v1/cluster/status`: this node's Raft state; with
/// `?members=true` also every member's under `nodes`, as each reports it
/// (asked now, at most a second each; an unreachable one says why). The
/// plain form stays local and instant, for scripts and probes that poll it.
pub async fn cluster_status(state: &AppState, query: Option<&str>) -> Response {
    let members = query.is_some_and(|q| q.split('&').any(|kv| kv == "members=true" || kv == "members=1"));
    let data = if members {
        json!(state.gateway.cluster_status().await)
    } else {
        json!(state.gateway.status())
    };
    json_response(&json!({"status": "success", "data": data}), None)
}
