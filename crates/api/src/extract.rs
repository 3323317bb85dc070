//! Extractors whose rejections are [`ApiError`]s, so axum's plain-text rejections
//! never reach a client.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ErrorCode};

/// `axum::Json` with JSON errors: 413 `payload_too_large`, 415
/// `unsupported_media_type`, else 400 `invalid_body`.
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the request body is larger than the limit",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::new(
            ErrorCode::UnsupportedMediaType,
            "expected a body with content-type application/json",
        ),
        _ => ApiError::new(ErrorCode::InvalidBody, rejection.body_text()),
    }
}

/// `axum::extract::Query` with a JSON 400 `invalid_parameter` on failure.
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| ApiQuery(q.0))
            .map_err(|r: QueryRejection| ApiError::new(ErrorCode::InvalidParameter, r.body_text()))
    }
}

/// `axum::extract::Path` with a JSON 400 `invalid_parameter` on failure. Handlers
/// take path segments as `String` and parse them into domain types themselves so the
/// error can name the right code (`invalid_id`, …).
pub struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r: PathRejection| ApiError::new(ErrorCode::InvalidParameter, r.body_text()))
    }
}

/// Answers `413 payload_too_large` at once when the declared `content-length` is over
/// the body limit. Without this the limit is only met while reading the body, so a
/// client that declares a large body and sends it slowly (or never) holds the request
/// until the request deadline and gets `503 timeout`: a client error answered late as
/// a server error. Chunked bodies have no declared length and are cut while read.
pub(crate) async fn refuse_declared_oversize(
    axum::extract::State(limit_bytes): axum::extract::State<usize>,
    req: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > limit_bytes as u64 => ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("the request body declares {n} bytes; the limit is {limit_bytes}"),
        )
        .into_response(),
        _ => next.run(req).await,
    }
}
