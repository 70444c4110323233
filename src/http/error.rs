//! The one place where errors become HTTP status codes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::gateway::GatewayError;

/// Everything a handler can fail with.
#[derive(Debug)]
pub enum HttpError {
    /// Malformed request (grouping key, body, parameters): 400, nothing changed.
    BadRequest(String),
    /// A body or push over a configured limit: 413, nothing changed.
    PayloadTooLarge(String),
    NotFound,
    /// 405 with the allowed methods.
    MethodNotAllowed(&'static str),
    Forbidden(&'static str),
    Gateway(GatewayError),
}

impl From<GatewayError> for HttpError {
    fn from(e: GatewayError) -> Self {
        HttpError::Gateway(e)
    }
}

/// A plain-text response like Go's `http.Error`.
pub fn plain(status: StatusCode, body: impl Into<String>) -> Response {
    let mut body = body.into();
    if !body.ends_with('\n') {
        body.push('\n');
    }
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        match self {
            HttpError::BadRequest(m) => plain(StatusCode::BAD_REQUEST, m),
            HttpError::PayloadTooLarge(m) => plain(StatusCode::PAYLOAD_TOO_LARGE, m),
            HttpError::NotFound => plain(StatusCode::NOT_FOUND, "404 page not found"),
            HttpError::MethodNotAllowed(allow) => {
                let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
                r.headers_mut().insert(header::ALLOW, HeaderValue::from_static(allow));
                r
            }
            HttpError::Forbidden(m) => {
                let mut r = (StatusCode::FORBIDDEN, m).into_response();
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
                r
            }
            HttpError::Gateway(e) => {
                let status = match e {
                    GatewayError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                    GatewayError::NotFound(_) => StatusCode::NOT_FOUND,
                    GatewayError::Conflict(_) => StatusCode::CONFLICT,
                    GatewayError::Overloaded(_) | GatewayError::Unavailable(_) | GatewayError::OutcomeUnknown(_) => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                };
                let mut r = plain(status, e.to_string());
                if status == StatusCode::SERVICE_UNAVAILABLE {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                }
                r
            }
        }
    }
}
