//! The one error type of the API and the table of its codes.
//!
//! Clients see `{"error": {"code", "message", "request_id"}}`. The `code` is stable
//! (clients branch on it); the message is for humans and may change. Internal
//! failures get a generic message: their cause goes to the log, tied to the request
//! id, and never to the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use ubtc_store::StoreError;

use crate::request_id;

/// Every error code the API returns, with its HTTP status. `docs/api.md` lists the
/// same table; a unit test keeps the codes unique.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    InvalidParameter,
    InvalidChain,
    InvalidStatus,
    InvalidId,
    InvalidBody,
    NotFound,
    MethodNotAllowed,
    ValidationNotFound,
    ProofNotFound,
    AttestationNotFound,
    WebhookNotFound,
    EventNotFound,
    Unauthorized,
    Forbidden,
    TokenExpired,
    InvalidCredentials,
    TotpRequired,
    InvalidTotp,
    RefreshTokenReused,
    LoginLocked,
    IpNotAllowed,
    UserExists,
    UserNotFound,
    ApiKeyNotFound,
    DemoDisabled,
    DemoPaymentRefused,
    PayloadTooLarge,
    UnsupportedMediaType,
    RateLimited,
    DatabaseUnavailable,
    DemoUnavailable,
    Timeout,
    Internal,
    // Reserve operations (admin/reserve.rs).
    UnknownChain,
    InvalidAmount,
    InvalidAddress,
    RatioBelowOne,
    DepositNotConfirmed,
    ExceedsDeposit,
    BurnNotConfirmed,
    ReleaseExceedsBurn,
    DailyLimitExceeded,
    OperationConflict,
    WrongState,
    OperationNotFound,
    InsufficientReserves,
    ReleaseInvalid,
    ReserveOpsDisabled,
    ChainUnavailable,
    // Accounts and keys (admin/handlers.rs).
    InvalidEnrolment,
    AlreadyEnrolled,
    CannotDisableSelf,
    LastAdmin,
    RoleNotGrantable,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 55] = [
        ErrorCode::BadRequest,
        ErrorCode::InvalidParameter,
        ErrorCode::InvalidChain,
        ErrorCode::InvalidStatus,
        ErrorCode::InvalidId,
        ErrorCode::InvalidBody,
        ErrorCode::NotFound,
        ErrorCode::MethodNotAllowed,
        ErrorCode::ValidationNotFound,
        ErrorCode::ProofNotFound,
        ErrorCode::AttestationNotFound,
        ErrorCode::WebhookNotFound,
        ErrorCode::EventNotFound,
        ErrorCode::Unauthorized,
        ErrorCode::Forbidden,
        ErrorCode::TokenExpired,
        ErrorCode::InvalidCredentials,
        ErrorCode::TotpRequired,
        ErrorCode::InvalidTotp,
        ErrorCode::RefreshTokenReused,
        ErrorCode::LoginLocked,
        ErrorCode::IpNotAllowed,
        ErrorCode::UserExists,
        ErrorCode::UserNotFound,
        ErrorCode::ApiKeyNotFound,
        ErrorCode::DemoDisabled,
        ErrorCode::DemoPaymentRefused,
        ErrorCode::PayloadTooLarge,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::RateLimited,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::DemoUnavailable,
        ErrorCode::Timeout,
        ErrorCode::Internal,
        ErrorCode::UnknownChain,
        ErrorCode::InvalidAmount,
        ErrorCode::InvalidAddress,
        ErrorCode::RatioBelowOne,
        ErrorCode::DepositNotConfirmed,
        ErrorCode::ExceedsDeposit,
        ErrorCode::BurnNotConfirmed,
        ErrorCode::ReleaseExceedsBurn,
        ErrorCode::DailyLimitExceeded,
        ErrorCode::OperationConflict,
        ErrorCode::WrongState,
        ErrorCode::OperationNotFound,
        ErrorCode::InsufficientReserves,
        ErrorCode::ReleaseInvalid,
        ErrorCode::ReserveOpsDisabled,
        ErrorCode::ChainUnavailable,
        ErrorCode::InvalidEnrolment,
        ErrorCode::AlreadyEnrolled,
        ErrorCode::CannotDisableSelf,
        ErrorCode::LastAdmin,
        ErrorCode::RoleNotGrantable,
    ];

    /// The table: stable code string and HTTP status of each error.
    pub fn info(self) -> (&'static str, StatusCode) {
        use ErrorCode::*;
        match self {
            BadRequest => ("bad_request", StatusCode::BAD_REQUEST),
            InvalidParameter => ("invalid_parameter", StatusCode::BAD_REQUEST),
            InvalidChain => ("invalid_chain", StatusCode::BAD_REQUEST),
            InvalidStatus => ("invalid_status", StatusCode::BAD_REQUEST),
            InvalidId => ("invalid_id", StatusCode::BAD_REQUEST),
            InvalidBody => ("invalid_body", StatusCode::BAD_REQUEST),
            NotFound => ("not_found", StatusCode::NOT_FOUND),
            MethodNotAllowed => ("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED),
            ValidationNotFound => ("validation_not_found", StatusCode::NOT_FOUND),
            ProofNotFound => ("proof_not_found", StatusCode::NOT_FOUND),
            AttestationNotFound => ("attestation_not_found", StatusCode::NOT_FOUND),
            WebhookNotFound => ("webhook_not_found", StatusCode::NOT_FOUND),
            EventNotFound => ("event_not_found", StatusCode::NOT_FOUND),
            Unauthorized => ("unauthorized", StatusCode::UNAUTHORIZED),
            Forbidden => ("forbidden", StatusCode::FORBIDDEN),
            TokenExpired => ("token_expired", StatusCode::UNAUTHORIZED),
            InvalidCredentials => ("invalid_credentials", StatusCode::UNAUTHORIZED),
            TotpRequired => ("totp_required", StatusCode::UNAUTHORIZED),
            InvalidTotp => ("invalid_totp", StatusCode::UNAUTHORIZED),
            RefreshTokenReused => ("refresh_token_reused", StatusCode::UNAUTHORIZED),
            LoginLocked => ("login_locked", StatusCode::TOO_MANY_REQUESTS),
            IpNotAllowed => ("ip_not_allowed", StatusCode::FORBIDDEN),
            UserExists => ("user_exists", StatusCode::CONFLICT),
            UserNotFound => ("user_not_found", StatusCode::NOT_FOUND),
            ApiKeyNotFound => ("api_key_not_found", StatusCode::NOT_FOUND),
            DemoDisabled => ("demo_disabled", StatusCode::NOT_FOUND),
            DemoPaymentRefused => ("demo_payment_refused", StatusCode::UNPROCESSABLE_ENTITY),
            PayloadTooLarge => ("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE),
            UnsupportedMediaType => ("unsupported_media_type", StatusCode::UNSUPPORTED_MEDIA_TYPE),
            RateLimited => ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
            DatabaseUnavailable => ("database_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            DemoUnavailable => ("demo_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            Timeout => ("timeout", StatusCode::SERVICE_UNAVAILABLE),
            Internal => ("internal", StatusCode::INTERNAL_SERVER_ERROR),
            UnknownChain => ("unknown_chain", StatusCode::BAD_REQUEST),
            InvalidAmount => ("invalid_amount", StatusCode::BAD_REQUEST),
            InvalidAddress => ("invalid_address", StatusCode::BAD_REQUEST),
            RatioBelowOne => ("ratio_below_one", StatusCode::UNPROCESSABLE_ENTITY),
            DepositNotConfirmed => ("deposit_not_confirmed", StatusCode::CONFLICT),
            ExceedsDeposit => ("exceeds_deposit", StatusCode::UNPROCESSABLE_ENTITY),
            BurnNotConfirmed => ("burn_not_confirmed", StatusCode::CONFLICT),
            ReleaseExceedsBurn => ("release_exceeds_burn", StatusCode::UNPROCESSABLE_ENTITY),
            DailyLimitExceeded => ("daily_limit_exceeded", StatusCode::UNPROCESSABLE_ENTITY),
            OperationConflict => ("conflict", StatusCode::CONFLICT),
            WrongState => ("wrong_state", StatusCode::CONFLICT),
            OperationNotFound => ("operation_not_found", StatusCode::NOT_FOUND),
            InsufficientReserves => ("insufficient_reserves", StatusCode::UNPROCESSABLE_ENTITY),
            ReleaseInvalid => ("release_invalid", StatusCode::UNPROCESSABLE_ENTITY),
            ReserveOpsDisabled => ("reserve_ops_disabled", StatusCode::NOT_FOUND),
            ChainUnavailable => ("chain_unavailable", StatusCode::SERVICE_UNAVAILABLE),
            InvalidEnrolment => ("invalid_enrolment", StatusCode::UNAUTHORIZED),
            AlreadyEnrolled => ("already_enrolled", StatusCode::CONFLICT),
            CannotDisableSelf => ("cannot_disable_self", StatusCode::CONFLICT),
            LastAdmin => ("last_admin", StatusCode::CONFLICT),
            RoleNotGrantable => ("role_not_grantable", StatusCode::FORBIDDEN),
        }
    }

    pub fn as_str(self) -> &'static str {
        self.info().0
    }

    pub fn status(self) -> StatusCode {
        self.info().1
    }

    /// The code for an error response produced outside our handlers (axum's own
    /// 405, a layer's 413, …), so it can be rewritten as JSON. The response keeps its
    /// status, so an unexpected 4xx shows as `bad_request` and 5xx as `internal`.
    pub fn for_status(status: StatusCode) -> ErrorCode {
        match status {
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            s if s.is_client_error() => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        }
    }
}

/// An error answered to a client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A client error with a message safe to show.
    #[error("{message}")]
    Client { code: ErrorCode, message: String },
    /// The database could not be reached; retrying later may work.
    #[error("database unavailable")]
    DatabaseUnavailable(#[source] StoreError),
    /// Anything else that went wrong on our side. Logged, never shown.
    #[error("internal error: {0}")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Client {
            code,
            message: message.into(),
        }
    }

    pub fn internal(err: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        ApiError::Internal(err.into())
    }

    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::Client { code, .. } => *code,
            ApiError::DatabaseUnavailable(_) => ErrorCode::DatabaseUnavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    fn public_message(&self) -> String {
        match self {
            ApiError::Client { message, .. } => message.clone(),
            ApiError::DatabaseUnavailable(_) => {
                "the database is unavailable, try again later".to_owned()
            }
            ApiError::Internal(_) => {
                "internal error; quote the request id when reporting it".to_owned()
            }
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        if err.is_transient() {
            ApiError::DatabaseUnavailable(err)
        } else {
            ApiError::Internal(Box::new(err))
        }
    }
}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
    request_id: &'a str,
}

/// Renders the JSON error body. Used by [`ApiError`] and by the middleware that
/// rewrites non-JSON error responses.
pub(crate) fn error_response(code: ErrorCode, message: &str, request_id: &str) -> Response {
    let body = ErrorEnvelope {
        error: ErrorBody {
            code: code.as_str(),
            message,
            request_id,
        },
    };
    // Serialising three strings cannot fail; the fallback keeps this path panic-free.
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = (code.status(), bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let request_id = request_id::current();
        // Logged here, where the error is finally handled, and nowhere else.
        match &self {
            ApiError::Internal(err) => {
                tracing::error!(request_id = %request_id, error = %err, source = ?err, "internal error");
            }
            ApiError::DatabaseUnavailable(err) => {
                tracing::warn!(request_id = %request_id, error = %err, "database unavailable");
            }
            ApiError::Client { code, message } => {
                tracing::debug!(request_id = %request_id, code = code.as_str(), %message, "client error");
            }
        }
        error_response(self.code(), &self.public_message(), &request_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_statuses_are_errors() {
        let mut seen = HashSet::new();
        for code in ErrorCode::ALL {
            let (name, status) = code.info();
            assert!(seen.insert(name), "duplicate code {name}");
            assert!(status.is_client_error() || status.is_server_error());
        }
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::internal("secret connection string");
        assert_eq!(err.code(), ErrorCode::Internal);
        assert!(!err.public_message().contains("secret"));
    }
}
