//! The response cache of the public API: whole `200` answers of a few read routes,
//! kept for a time that suits each (the seed's figures: reserve data 30 s, API
//! configuration 300 s, proofs 3600 s, which never change once signed).
//!
//! The store behind it is a small trait, [`ResponseCache`], so this crate does not
//! depend on Redis; the binary plugs in the shared cache. Answers carry
//! `x-cache: hit` or `miss`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
pub use bytes::Bytes;

pub static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Largest body buffered: above the largest proof bundle, so no answer of a cached
/// route can exceed it (the cache itself skips entries over its own bound).
const BUFFER_MAX_BYTES: usize = 2 * ubtc_core::bundle::BUNDLE_MAX_BYTES;

/// Tags the cached routes are stored under: invalidating a tag drops every entry of
/// its routes, in every process (see the binary's wiring and `ubtc_limits`).
pub mod tags {
    /// `GET /v1/reserves` and `/v1/reserves/history`: a new snapshot invalidates it.
    pub const RESERVES: &str = "reserves";
    /// `GET /v1/chains`: configuration, changes only with a restart.
    pub const CHAINS: &str = "chains";
    /// `GET /v1/proofs/{id}`: a proof never changes once signed (before that the
    /// route answers 404, which is not cached).
    pub const PROOFS: &str = "proofs";
}

/// What a lookup found: the stored bytes, or a miss with the tag's generation at the
/// time of the lookup, to hand back to [`ResponseCache::put`] (so an answer computed
/// across an invalidation is stored where nobody serves it).
#[derive(Clone, Debug)]
pub enum CacheLookup {
    Hit(Bytes),
    Miss(u64),
}

/// Bytes by tag and key, with a time to live. Must never fail: trouble is a miss.
#[async_trait]
pub trait ResponseCache: Send + Sync + 'static {
    async fn get(&self, tag: &'static str, key: &str) -> CacheLookup;
    async fn put(&self, key: &str, generation: u64, value: Bytes, ttl: Duration);
}

/// Routes whose answers are cached, their tag, and for how long.
fn policy(route: &str) -> Option<(&'static str, Duration)> {
    match route {
        "/v1/reserves" | "/v1/reserves/history" | "/v1/reserves/registry" => {
            Some((tags::RESERVES, Duration::from_secs(30)))
        }
        "/v1/chains" => Some((tags::CHAINS, Duration::from_secs(300))),
        "/v1/proofs/{id}" => Some((tags::PROOFS, Duration::from_secs(3600))),
        _ => None,
    }
}

/// Entry layout: content type, `\n`, cache control (may be empty), `\n`, body.
/// Header values cannot hold a newline, so the split is unambiguous.
fn encode(content_type: &[u8], cache_control: &[u8], body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(content_type.len() + cache_control.len() + body.len() + 2);
    out.extend_from_slice(content_type);
    out.push(b'\n');
    out.extend_from_slice(cache_control);
    out.push(b'\n');
    out.extend_from_slice(body);
    Bytes::from(out)
}

/// Rebuilds the answer from an entry without copying: headers and body are slices of
/// the shared entry.
fn decode(entry: Bytes) -> Option<Response> {
    let first = entry.iter().position(|b| *b == b'\n')?;
    let second = first + 1 + entry[first + 1..].iter().position(|b| *b == b'\n')?;
    let content_type = HeaderValue::from_maybe_shared(entry.slice(..first)).ok()?;
    let cache_control = if second == first + 1 {
        None
    } else {
        Some(HeaderValue::from_maybe_shared(entry.slice(first + 1..second)).ok()?)
    };
    let mut response = Response::new(Body::from(entry.slice(second + 1..)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    if let Some(cc) = cache_control {
        headers.insert(header::CACHE_CONTROL, cc);
    }
    headers.insert(X_CACHE.clone(), HeaderValue::from_static("hit"));
    Some(response)
}

pub(crate) async fn cache_responses(
    State(cache): State<Option<Arc<dyn ResponseCache>>>,
    req: Request,
    next: Next,
) -> Response {
    let Some(cache) = cache.as_ref() else {
        return next.run(req).await;
    };
    let policy = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|p| policy(p.as_str()));
    let (Some((tag, ttl)), true) = (policy, req.method() == Method::GET) else {
        return next.run(req).await;
    };
    // Path and query, as sent: no allocation on a hit.
    let uri = req.uri().clone();
    let key = uri.path_and_query().map_or("/", |p| p.as_str());
    let generation = match cache.get(tag, key).await {
        CacheLookup::Hit(entry) => match decode(entry) {
            Some(response) => return response,
            // Not written by `encode`: recompute and overwrite it.
            None => 0,
        },
        CacheLookup::Miss(generation) => generation,
    };
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
        .put(
            key,
            generation,
            encode(content_type, cache_control, &bytes),
            ttl,
        )
        .await;
    parts
        .headers
        .insert(X_CACHE.clone(), HeaderValue::from_static("miss"));
    Response::from_parts(parts, Body::from(bytes))
}
