//! Request ids and the outermost middleware: id, timeout, JSON-only errors.
//!
//! The id lives in a task-local for the duration of the request so that any error
//! rendered anywhere below (handlers, extractor rejections, fallbacks) can carry it
//! without threading it through every signature.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::{error_response, ApiError, ErrorCode};

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client-supplied id we adopt; longer ones are replaced, not truncated, so
/// a logged id always matches what the client sent or what we returned.
const REQUEST_ID_MAX_LEN: usize = 64;

tokio::task_local! {
    static REQUEST_ID: String;
}

/// The id of the request being served, or `-` outside a request.
pub(crate) fn current() -> String {
    REQUEST_ID
        .try_with(|id| id.clone())
        .unwrap_or_else(|_| "-".to_owned())
}

/// A request id, available to handlers and to the trace span as an extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

/// Adopts the client's `x-request-id` only when it is short and plain (it ends up in
/// logs and headers), else makes a new one.
fn pick_request_id(req: &Request) -> String {
    req.headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= REQUEST_ID_MAX_LEN
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"))
}

/// Outermost per-request middleware (inside the trace layer's span):
/// assigns the request id, bounds the handling time, and guarantees that every
/// error response is our JSON shape even when axum or a layer produced it.
pub(crate) async fn request_context(
    State(timeout): State<Duration>,
    mut req: Request,
    next: Next,
) -> Response {
    let id = pick_request_id(&req);
    req.extensions_mut().insert(RequestId(id.clone()));
    let scoped_id = id.clone();
    let mut response = REQUEST_ID
        .scope(id.clone(), async move {
            let response = match tokio::time::timeout(timeout, next.run(req)).await {
                Ok(response) => response,
                Err(_) => ApiError::new(
                    ErrorCode::Timeout,
                    format!(
                        "the request took longer than {} ms and was abandoned",
                        timeout.as_millis()
                    ),
                )
                .into_response(),
            };
            let status = response.status();
            if (status.is_client_error() || status.is_server_error()) && !is_json(&response) {
                let code = ErrorCode::for_status(status);
                let message = status.canonical_reason().unwrap_or("error").to_lowercase();
                let mut rewritten = error_response(code, &message, &scoped_id);
                // Keep the status axum chose (e.g. 405 with its `allow` header).
                *rewritten.status_mut() = status;
                if let Some(allow) = response.headers().get(header::ALLOW) {
                    rewritten.headers_mut().insert(header::ALLOW, allow.clone());
                }
                rewritten
            } else {
                response
            }
        })
        .await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}
