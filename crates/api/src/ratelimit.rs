//! Rate limits on the public API: per client IP, and per API key when one is sent.
//!
//! The limiter itself is behind a small trait, [`RequestLimiter`], so this crate does
//! not depend on Redis: the binary plugs in the shared (Redis, with local fallback)
//! or in-memory implementation. A refused request gets `429 rate_limited` with
//! `Retry-After` in whole seconds, and is charged nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ErrorCode};

pub static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// Who a request is charged to.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    Ip(IpAddr),
    /// SHA-256 of the API key, hex: the key itself never reaches the limiter's store
    /// or the logs.
    ApiKey(String),
}

impl ClientKey {
    pub fn api_key(raw: &str) -> Self {
        ClientKey::ApiKey(hex::encode(Sha256::digest(raw.as_bytes())))
    }
}

/// Decides whether a client may be served now.
#[async_trait]
pub trait RequestLimiter: Send + Sync + 'static {
    /// Takes one unit from every bucket of `clients` if all have one now (and then
    /// returns `Ok`); otherwise charges nothing and returns how long to wait.
    /// Implementations must not fail: when their store is away they decide locally.
    async fn try_acquire(&self, clients: &[ClientKey]) -> Result<(), Duration>;
}

/// Routes that are never limited: probes and scrapes come from the operator's own
/// infrastructure, and a limited health check would report a false outage.
fn exempt(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// Whether requests to `path` are rate limited (when a limiter is configured): the
/// OpenAPI document documents `429` from this.
pub(crate) fn is_limited(path: &str) -> bool {
    !exempt(path)
}

pub(crate) async fn limit_requests(
    State(limiter): State<Option<Arc<dyn RequestLimiter>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(limiter) = limiter.as_ref() else {
        return next.run(req).await;
    };
    if exempt(req.uri().path()) {
        return next.run(req).await;
    }
    let mut clients = Vec::with_capacity(2);
    // The peer address of the TCP connection. Behind a reverse proxy listed in
    // `admin.trusted_proxies`, `ubtc serve` has already put the client's address
    // there (from X-Forwarded-For); X-Forwarded-For is never read here, since
    // trusting it from anyone would let them pick their own bucket.
    if let Some(ConnectInfo(addr)) = req.extensions().get::<ConnectInfo<SocketAddr>>() {
        clients.push(ClientKey::Ip(addr.ip()));
    }
    if let Some(key) = req.headers().get(&X_API_KEY).and_then(|v| v.to_str().ok()) {
        clients.push(ClientKey::api_key(key));
    }
    if clients.is_empty() {
        return next.run(req).await;
    }
    match limiter.try_acquire(&clients).await {
        Ok(()) => next.run(req).await,
        Err(wait) => {
            metrics::counter!("ubtc_ratelimit_hits_total", "scope" => "api").increment(1);
            let secs = wait.as_millis().div_ceil(1000).max(1);
            let mut response = ApiError::new(
                ErrorCode::RateLimited,
                format!("too many requests; retry after {secs} s"),
            )
            .into_response();
            if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    }
}
