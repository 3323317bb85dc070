//! The response cache of the public API: whole `200` answers of a few read routes,
//! kept for a time that suits each (the seed's figures: reserve data 30 s, API
//! configuration 300 s, proofs 3600 s, which never change once signed).
//!
//! The store behind it is a small trait, [`ResponseCache`], so this crate does not
//! depend on Redis; the binary plugs in the shared cache. Answers carry
//! `x-cache: hit` or `miss`.

use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::state::ApiState;

pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Largest body buffered: above the largest proof bundle, so no answer of a cached
/// route can exceed it (the cache itself skips entries over its own bound).
const BUFFER_MAX_BYTES: usize = 2 * ubtc_core::bundle::BUNDLE_MAX_BYTES;

/// Bytes by key, with a time to live. Must never fail: trouble is a miss.
#[async_trait]
pub trait ResponseCache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Option<Vec<u8>>;
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration);
}

/// Routes whose answers are cached, and for how long.
fn ttl_for(route: &str) -> Option<Duration> {
    match route {
        "/v1/reserves" | "/v1/reserves/history" => Some(Duration::from_secs(30)),
        "/v1/chains" => Some(Duration::from_secs(300)),
        "/v1/proofs/{id}" => Some(Duration::from_secs(3600)),
        _ => None,
    }
}

/// Entry layout: content type, `\n`, cache control (may be empty), `\n`, body.
/// Header values cannot hold a newline, so the split is unambiguous.
fn encode(content_type: &[u8], cache_control: &[u8], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content_type.len() + cache_control.len() + body.len() + 2);
    out.extend_from_slice(content_type);
    out.push(b'\n');
    out.extend_from_slice(cache_control);
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

fn decode(entry: Vec<u8>) -> Option<Response> {
    let first = entry.iter().position(|b| *b == b'\n')?;
    let second = first + 1 + entry[first + 1..].iter().position(|b| *b == b'\n')?;
    let content_type = HeaderValue::from_bytes(&entry[..first]).ok()?;
    let cache_control = &entry[first + 1..second];
    let cache_control = if cache_control.is_empty() {
        None
    } else {
        Some(HeaderValue::from_bytes(cache_control).ok()?)
    };
    let body = entry[second + 1..].to_vec();
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Some(cc) = cache_control {
        headers.insert(header::CACHE_CONTROL, cc);
    }
    headers.insert(X_CACHE.clone(), HeaderValue::from_static("hit"));
    Some(response)
}

pub(crate) async fn cache_responses(
    State(state): State<ApiState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cache) = state.response_cache.as_ref() else {
        return next.run(req).await;
    };
    let ttl = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| ttl_for(p.as_str()));
    let (Some(ttl), true) = (ttl, req.method() == Method::GET) else {
        return next.run(req).await;
    };
    let key = format!("resp:{}", req.uri());
    if let Some(response) = cache.get(&key).await.and_then(decode) {
        return response;
    }
    let response = next.run(req).await;
    if response.status() != StatusCode::OK {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, BUFFER_MAX_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) => {
            // Cannot happen for the cached routes (see `BUFFER_MAX_BYTES`); the body is
            // gone, so the client gets an error to retry.
            tracing::error!(error = %e, "response too large to buffer for the cache");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map_or(&b"application/json"[..], HeaderValue::as_bytes);
    let cache_control = parts
        .headers
        .get(header::CACHE_CONTROL)
        .map_or(&b""[..], HeaderValue::as_bytes);
    cache
        .put(&key, encode(content_type, cache_control, &bytes), ttl)
        .await;
    parts
        .headers
        .insert(X_CACHE.clone(), HeaderValue::from_static("miss"));
    Response::from_parts(parts, Body::from(bytes))
}
