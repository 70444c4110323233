//! The HTTP layer: the reference Pushgateway's routes, quirks and status
//! codes, on axum.
//!
//! Routing is done by hand in `dispatch` rather than with axum's router,
//! because compatibility depends on details a generic router does not give:
//! Go's path cleaning (301 for `//` and dot segments, on the decoded path),
//! trailing-slash redirects (301 for GET, 307 otherwise, and only for a
//! method that has the route without the slash), `405` with an `Allow` list
//! that includes `OPTIONS`, automatic `OPTIONS`, and the route prefix applying
//! to every route.

pub mod error;
pub mod negotiation;
pub mod push;
pub mod read;
pub mod self_metrics;
pub mod tls;
pub mod ui;
pub mod web_config;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use percent_encoding::{percent_decode, percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::sync::watch;
use tracing::Instrument;

use self::error::{plain, HttpError};
use self::self_metrics::SelfMetrics;
use self::web_config::{Verdict, WebAuth};
use crate::gateway::{Gateway, ReadConsistency};
use crate::model::GroupingKey;

/// Response header carrying the Raft log index a response reflects.
pub const LOG_INDEX_HEADER: &str = "x-pushgate-log-index";

/// HTTP settings, from the command line.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// `""` or `/something` (normalised).
    pub route_prefix: String,
    /// Path of the scrape endpoint under the prefix, e.g. `/metrics`.
    pub telemetry_path: String,
    pub enable_admin_api: bool,
    pub enable_lifecycle: bool,
    pub max_body_bytes: usize,
    pub max_series: usize,
    pub default_read: ReadConsistency,
    /// Every flag and its value, for `/api/v1/status`.
    pub flags: BTreeMap<String, String>,
}

/// Shared by every request.
#[derive(Clone)]
pub struct AppState {
    pub gateway: Arc<Gateway>,
    pub config: Arc<HttpConfig>,
    pub metrics: Arc<SelfMetrics>,
    pub start_time: Arc<str>,
    /// Set to true to ask the process to shut down (`/-/quit`).
    pub quit: watch::Sender<bool>,
    /// `--web.config.file`: basic authentication and extra headers.
    pub web_auth: Option<Arc<WebAuth>>,
}

/// The axum app: every request goes through `dispatch`.
pub fn app(state: AppState) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(state)
}

async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let method = req.method().clone();
    let span = tracing::debug_span!("http", method = %method, path = %req.uri().path());
    async move {
        if let Some(answer) = go_server_answer(&req) {
            return answer;
        }
        // As in the reference, the web configuration guards every route and
        // its refusals are not counted per handler.
        let mut extra_headers = None;
        if let Some(auth) = &state.web_auth {
            let (verdict, headers) = auth.check(req.headers()).await;
            let refusal = match verdict {
                Verdict::Allowed => None,
                Verdict::Unauthorized => {
                    let mut r = plain(StatusCode::UNAUTHORIZED, "Unauthorized\n");
                    r.headers_mut()
                        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
                    Some(r)
                }
                Verdict::Broken => Some(plain(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error\n")),
            };
            if let Some(mut r) = refusal {
                r.headers_mut().extend(headers);
                return r;
            }
            extra_headers = Some(headers);
        }
        let (handler, result) = dispatch(&state, req).await;
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                if let HttpError::Gateway(g) = &e {
                    tracing::warn!(handler, error = %g, "request failed");
                }
                e.into_response()
            }
        };
        if let Some(handler) = handler {
            state
                .metrics
                .count_request(response.status().as_u16(), handler, method.as_str());
        }
        let mut response = response;
        if let Some(headers) = extra_headers {
            response.headers_mut().extend(headers);
        }
        response
    }
    .instrument(span)
    .await
}

/// Whether every `%` in a request path starts a two-hex-digit escape, which
/// Go's `url.ParseRequestURI` requires of the path (not of the query).
fn percent_escapes_are_valid(path: &[u8]) -> bool {
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' {
            let hex = |at: usize| path.get(at).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

/// What Go's HTTP server answers itself, before any handler or the
/// authentication of `--web.config.file` sees the request:
/// - a path that does not unescape (`%2`, `%zz`): `400 Bad Request`, rather
///   than taking `%2` literally as part of a job name;
/// - an HTTP/1.1 request without a `Host` header, any request with two or
///   with one holding a byte no host name has: `400`, as RFC 9112 asks;
/// - an HTTP/1.1 `Transfer-Encoding` other than one `chunked`: `501`, as
///   RFC 9112 advises (the HTTP library would decode the chunks and leave a
///   `gzip, chunked` body gzipped, to be misread as a push);
/// - the request target `*`: `200` to `OPTIONS` (the server's own options),
///   `400` to anything else.
fn go_server_answer(req: &Request) -> Option<Response> {
    let close = |status: StatusCode, body: &'static str| {
        let mut r = if body.is_empty() {
            status.into_response()
        } else {
            let mut r = (status, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            r
        };
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    if !percent_escapes_are_valid(req.uri().path().as_bytes()) {
        return Some(close(StatusCode::BAD_REQUEST, "400 Bad Request"));
    }
    let headers = req.headers();
    let http_11 = req.version() == axum::http::Version::HTTP_11;
    if headers.get_all(header::HOST).iter().count() > 1 {
        return Some(close(StatusCode::BAD_REQUEST, "400 Bad Request"));
    }
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    if let (true, Some(first)) = (http_11, codings.next()) {
        let chunked = first
            .to_str()
            .is_ok_and(|v| v.trim_matches([' ', '\t']).eq_ignore_ascii_case("chunked"));
        if !chunked || codings.next().is_some() {
            return Some(close(StatusCode::NOT_IMPLEMENTED, "Unsupported transfer encoding"));
        }
    }
    match headers.get(header::HOST) {
        None if http_11 => {
            return Some(close(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: missing required Host header",
            ))
        }
        Some(host) if !host.as_bytes().iter().all(|&b| is_host_byte(b)) => {
            return Some(close(StatusCode::BAD_REQUEST, "400 Bad Request: malformed Host header"))
        }
        _ => {}
    }
    if req.uri().path() == "*" {
        return Some(if req.method() == Method::OPTIONS {
            StatusCode::OK.into_response()
        } else {
            close(StatusCode::BAD_REQUEST, "")
        });
    }
    None
}

/// A byte Go's `httpguts.ValidHostHeader` allows in `Host`: letters, digits
/// and `!$%&'()*+,-.:;=[]_~`.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!$%&'()*+,-.:;=[]_~".contains(&b)
}

/// Bytes percent-encoded when a cleaned path is sent back in `Location`: Go's
/// `URL.EscapedPath` keeps letters, digits, `-_.~` and `$&+,/:;=@`, and
/// escapes every other byte, each byte of a multi-byte (or invalid) UTF-8
/// sequence on its own.
const PATH_ENCODE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~')
    .remove(b'$')
    .remove(b'&')
    .remove(b'+')
    .remove(b',')
    .remove(b'/')
    .remove(b':')
    .remove(b';')
    .remove(b'=')
    .remove(b'@');

/// Go's `path.Clean`, keeping a trailing slash like `http.ServeMux` does.
fn clean_path(p: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for seg in p.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut out = Vec::with_capacity(p.len());
    for s in &parts {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || p.ends_with(b"/") {
        out.push(b'/');
    }
    out
}

/// A redirect as Go's `http.Redirect` writes it: `Location`, and for GET and
/// HEAD a short HTML body naming the target.
fn redirect(method: &Method, status: StatusCode, path: &[u8], query: Option<&str>) -> Response {
    let mut location: String = percent_encode(path, PATH_ENCODE).to_string();
    if let Some(q) = query {
        location.push('?');
        location.push_str(q);
    }
    let mut r = if *method == Method::GET || *method == Method::HEAD {
        let body = format!(
            "<a href=\"{}\">{}</a>.\n\n",
            html_escape(&location),
            status.canonical_reason().unwrap_or_default()
        );
        let mut r = (status, body).into_response();
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        r
    } else {
        status.into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

/// Go's `html.EscapeString`.
fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&#34;"),
            c => out.push(c),
        }
    }
    out
}

fn options(allow: &'static str) -> Response {
    let mut r = StatusCode::OK.into_response();
    r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

/// The reference's router (httprouter) redirects a path with a trailing
/// slash to the one without only for a method that has a route there (`GET
/// /metrics/` goes to the scrape, `PUT /metrics/` is a 404): `routed` lists
/// those methods. 301 for GET, 307 otherwise (which keeps the method).
fn trailing_slash_redirect(
    method: &Method,
    routed: &[Method],
    path: &[u8],
    query: Option<&str>,
) -> Result<Response, HttpError> {
    if !routed.contains(method) {
        return Err(HttpError::NotFound);
    }
    let status = if method == Method::GET {
        StatusCode::MOVED_PERMANENTLY
    } else {
        StatusCode::TEMPORARY_REDIRECT
    };
    Ok(redirect(method, status, path, query))
}

type Dispatched = (Option<&'static str>, Result<Response, HttpError>);

/// Routes one request. Returns the handler name for the request counter.
async fn dispatch(state: &AppState, req: Request) -> Dispatched {
    let (parts, body) = req.into_parts();
    let method = parts.method;
    let query = parts.uri.query();
    let decoded: Vec<u8> = percent_decode(parts.uri.path().as_bytes()).collect();
    let cleaned = clean_path(&decoded);
    if cleaned != decoded {
        return (
            None,
            Ok(redirect(&method, StatusCode::MOVED_PERMANENTLY, &cleaned, query)),
        );
    }
    let prefix = state.config.route_prefix.as_bytes();
    if !prefix.is_empty() && decoded == prefix {
        // The reference redirects only GET from the prefix to its UI.
        if method != Method::GET {
            return (None, Err(HttpError::NotFound));
        }
        let mut to = decoded.clone();
        to.push(b'/');
        return (None, Ok(redirect(&method, StatusCode::MOVED_PERMANENTLY, &to, query)));
    }
    // The reference registers `GET /-/quit` without the prefix (and its
    // router then lists GET among the methods of that path).
    if decoded == b"/-/quit" {
        if method == Method::GET {
            return (
                None,
                Ok(plain(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "Only POST or PUT requests allowed.",
                )),
            );
        }
        if !prefix.is_empty() {
            return match method {
                Method::OPTIONS => (None, Ok(options("GET, OPTIONS"))),
                _ => (None, Err(HttpError::MethodNotAllowed("GET, OPTIONS"))),
            };
        }
    }
    if decoded == b"/-/quit/" && !prefix.is_empty() {
        return (
            None,
            trailing_slash_redirect(&method, &[Method::GET], b"/-/quit", query),
        );
    }
    let Some(rest) = decoded.strip_prefix(prefix) else {
        return (None, Err(HttpError::NotFound));
    };
    let rest = rest.to_vec();

    if let Some(push_path) = rest
        .strip_prefix(b"/metrics/")
        .filter(|p| p.starts_with(b"job/") || p.starts_with(b"job@base64/"))
    {
        return push_route(state, &method, push_path, &decoded, query, &parts.headers, body).await;
    }
    let telemetry = state.config.telemetry_path.as_bytes();
    if rest == telemetry {
        return match method {
            Method::GET => (None, read::scrape(state, &parts.headers, query).await),
            Method::OPTIONS => (None, Ok(options("GET, OPTIONS"))),
            _ => (None, Err(HttpError::MethodNotAllowed("GET, OPTIONS"))),
        };
    }
    if rest.strip_suffix(b"/") == Some(telemetry) {
        return (
            None,
            trailing_slash_redirect(&method, &[Method::GET], &[prefix, telemetry].concat(), query),
        );
    }
    if let Some(api) = rest.strip_prefix(b"/api/v1/") {
        return api_route(state, &method, api, query, body).await;
    }
    match rest.as_slice() {
        b"/-/healthy" | b"/-/ready" => {
            let handler = if rest == b"/-/healthy" { "healthy" } else { "ready" };
            let r = match method {
                Method::GET if handler == "healthy" => match state.gateway.failure() {
                    None => Ok(ok_text()),
                    // Only a restart brings the node back: let a supervisor
                    // (a Kubernetes liveness probe) do it.
                    Some(f) => Ok(plain(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("unhealthy: this node stopped working ({f}) and must be restarted"),
                    )),
                },
                Method::GET => match state.gateway.ready().await {
                    Ok(()) => Ok(ok_text()),
                    Err(e) => Ok(plain(StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {e}"))),
                },
                Method::OPTIONS => Ok(options("GET, OPTIONS")),
                _ => Err(HttpError::MethodNotAllowed("GET, OPTIONS")),
            };
            // Only GET reaches the reference's handler (and its request counter).
            (Some(handler).filter(|_| method == Method::GET), r)
        }
        b"/-/healthy/" | b"/-/ready/" | b"/status/" => (
            None,
            trailing_slash_redirect(&method, &[Method::GET], &decoded[..decoded.len() - 1], query),
        ),
        b"/-/quit/" => {
            // Unprefixed, GET has the route too.
            let routed: &[Method] = if prefix.is_empty() {
                &[Method::GET, Method::POST, Method::PUT]
            } else {
                &[Method::POST, Method::PUT]
            };
            (
                None,
                trailing_slash_redirect(&method, routed, &decoded[..decoded.len() - 1], query),
            )
        }
        b"/-/quit" => (None, quit(state, &method)),
        // The API is mounted on a Go `ServeMux` subtree, which redirects
        // every method with 301.
        b"/api/v1" => (
            None,
            Ok(redirect(
                &method,
                StatusCode::MOVED_PERMANENTLY,
                &[prefix, b"/api/v1/"].concat(),
                query,
            )),
        ),
        b"/" | b"/status" => match method {
            Method::GET => (Some("status"), ui_page(state).await),
            Method::OPTIONS => (None, Ok(options("GET, OPTIONS"))),
            _ => (None, Err(HttpError::MethodNotAllowed("GET, OPTIONS"))),
        },
        _ => (None, Err(HttpError::NotFound)),
    }
}

fn ok_text() -> Response {
    let mut r = (StatusCode::OK, "OK").into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// `/metrics/job/<job>[/labels]` and `/metrics/job@base64/<job>[/labels]`.
async fn push_route(
    state: &AppState,
    method: &Method,
    push_path: &[u8],
    full: &[u8],
    query: Option<&str>,
    headers: &axum::http::HeaderMap,
    body: Body,
) -> Dispatched {
    let (after, is_base64) = match push_path.strip_prefix(b"job/") {
        Some(a) => (a, false),
        None => (push_path.strip_prefix(b"job@base64/").unwrap_or_default(), true),
    };
    let (job, labels) = match after.iter().position(|&b| b == b'/') {
        Some(i) => (&after[..i], &after[i..]),
        None => (after, &b""[..]),
    };
    if job.is_empty() {
        // The reference's router redirects `/metrics/job/` (a quirk of its
        // tree: the target is a 404), but not `/metrics/job@base64/`.
        if is_base64 {
            return (None, Err(HttpError::NotFound));
        }
        let routed = [Method::DELETE, Method::POST, Method::PUT];
        return (
            None,
            trailing_slash_redirect(method, &routed, &full[..full.len() - 1], query),
        );
    }
    // Like the reference, only requests that reach a handler are counted:
    // not OPTIONS or 405 answers, which its router gives.
    let handler = match *method {
        Method::DELETE => Some("delete"),
        Method::PUT | Method::POST => Some("push"),
        _ => None,
    };
    const ALLOW: &str = "DELETE, OPTIONS, POST, PUT";
    let result = match *method {
        Method::PUT | Method::POST | Method::DELETE => match GroupingKey::from_path(job, is_base64, labels) {
            Err(e) => Err(HttpError::BadRequest(e.to_string())),
            Ok(key) if *method == Method::DELETE => push::delete(state, key).await,
            Ok(key) => push::push(state, method, key, headers, body).await,
        },
        Method::OPTIONS => Ok(options(ALLOW)),
        _ => Err(HttpError::MethodNotAllowed(ALLOW)),
    };
    (handler, result)
}

async fn api_route(state: &AppState, method: &Method, api: &[u8], query: Option<&str>, body: Body) -> Dispatched {
    if *method == Method::OPTIONS {
        let mut r = StatusCode::OK.into_response();
        read::cors(&mut r);
        return (Some("api/v1/options"), Ok(r));
    }
    match api {
        b"status" => match *method {
            Method::GET => (Some("api/v1/status"), Ok(read::api_status(state))),
            _ => (None, Err(HttpError::MethodNotAllowed("GET, OPTIONS"))),
        },
        b"metrics" => match *method {
            Method::GET => (Some("api/v1/metrics"), read::api_metrics(state, query).await),
            _ => (None, Err(HttpError::MethodNotAllowed("GET, OPTIONS"))),
        },
        b"cluster/status" => match *method {
            Method::GET => (
                Some("api/v1/cluster/status"),
                Ok(read::cluster_status(state, query).await),
            ),
            _ => (None, Err(HttpError::MethodNotAllowed("GET, OPTIONS"))),
        },
        b"cluster/members" if state.config.enable_admin_api => match *method {
            Method::POST => (Some("api/v1/cluster/members"), read::add_member(state, body).await),
            _ => (None, Err(HttpError::MethodNotAllowed("OPTIONS, POST"))),
        },
        _ if api.starts_with(b"cluster/members/") && state.config.enable_admin_api => match *method {
            Method::DELETE => {
                let id = std::str::from_utf8(&api[b"cluster/members/".len()..])
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok());
                match id {
                    Some(id) => (Some("api/v1/cluster/members"), read::remove_member(state, id).await),
                    None => (
                        None,
                        Err(HttpError::BadRequest("node id must be a positive integer".into())),
                    ),
                }
            }
            _ => (None, Err(HttpError::MethodNotAllowed("DELETE, OPTIONS"))),
        },
        b"admin/wipe" if state.config.enable_admin_api => match *method {
            Method::PUT => (Some("wipe"), push::wipe(state).await),
            _ => (None, Err(HttpError::MethodNotAllowed("OPTIONS, PUT"))),
        },
        _ => (None, Err(HttpError::NotFound)),
    }
}

fn quit(state: &AppState, method: &Method) -> Result<Response, HttpError> {
    match *method {
        Method::PUT | Method::POST => {
            if !state.config.enable_lifecycle {
                return Err(HttpError::Forbidden("Lifecycle API is not enabled."));
            }
            tracing::warn!("received termination request via web service, exiting gracefully...");
            let _ = state.quit.send(true);
            let mut r = (StatusCode::OK, "Requesting termination... Goodbye!").into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            Ok(r)
        }
        // Unprefixed, the path also has the reference's `GET /-/quit` route.
        _ => {
            let allow = if state.config.route_prefix.is_empty() {
                "GET, OPTIONS, POST, PUT"
            } else {
                "OPTIONS, POST, PUT"
            };
            if *method == Method::OPTIONS {
                Ok(options(allow))
            } else {
                Err(HttpError::MethodNotAllowed(allow))
            }
        }
    }
}

async fn ui_page(state: &AppState) -> Result<Response, HttpError> {
    let view = state.gateway.read(ReadConsistency::Stale).await?;
    let html = ui::page(&view, &state.gateway.status(), state.config.enable_admin_api);
    drop(view);
    let mut r = (StatusCode::OK, html).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::{clean_path, percent_encode, percent_escapes_are_valid, PATH_ENCODE};

    #[test]
    fn path_cleaning_like_go() {
        assert_eq!(
            clean_path(b"/metrics/job/j/first//second/x"),
            b"/metrics/job/j/first/second/x"
        );
        assert_eq!(
            clean_path(b"/metrics/job/j/path//var/tmp"),
            b"/metrics/job/j/path/var/tmp"
        );
        assert_eq!(clean_path(b"/a/./b/../c/"), b"/a/c/");
        assert_eq!(clean_path(b"/metrics/job/trail/"), b"/metrics/job/trail/");
        assert_eq!(clean_path(b"/"), b"/");
    }

    #[test]
    fn a_percent_without_two_hex_digits_is_a_malformed_path() {
        for good in ["/metrics/job/a%20b", "/metrics/job/%C3%BC", "/a%2f", "/"] {
            assert!(percent_escapes_are_valid(good.as_bytes()), "{good}");
        }
        for bad in ["/metrics/job/a%2", "/%", "/a%zz", "/a%%20", "/a%g0"] {
            assert!(!percent_escapes_are_valid(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn redirect_targets_are_escaped_like_go_escaped_path() {
        let escaped = |p: &[u8]| percent_encode(p, PATH_ENCODE).to_string();
        assert_eq!(
            escaped(b"/a(b)*!'[x]^|\\/c\xc3\xbc\x7f\x01~$&+,:;=@"),
            "/a%28b%29%2A%21%27%5Bx%5D%5E%7C%5C/c%C3%BC%7F%01~$&+,:;=@"
        );
        assert_eq!(escaped(b"/metrics/job/\xff/a b?#%"), "/metrics/job/%FF/a%20b%3F%23%25");
    }
}
