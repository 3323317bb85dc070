//! A `serve` that listens before its database answers.
//!
//! Behind a load balancer a process must be reachable at once: `/healthz` says the
//! process lives, `/readyz` says whether to send it traffic. So `serve` binds its port
//! first and answers from [`StartingRouter`] (`/healthz` 200, everything else 503
//! `database_unavailable`) while the database is connected and migrated in the
//! background; once that succeeds the full API takes over, with its own `/readyz`
//! that pings the database on every call.
//!
//! It is also the one place where a request from a trusted reverse proxy gets its
//! client's address as its peer, so the per-IP rate limit counts clients, not the
//! proxy ([`client_behind_proxy`]).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use ubtc_api::admin::auth::client_ip;
use ubtc_api::admin::IpAllowlist;
use ubtc_api::{ApiError, ErrorCode};
use ubtc_store::Store;

use crate::config::Config;

/// First wait between two attempts to open the database; doubled up to the maximum.
const RETRY_FIRST_MS: u64 = 250;
/// Longest wait between two attempts: a database that returns is noticed within this.
const RETRY_MAX_MS: u64 = 5_000;

/// The router `serve` listens with: answers as "starting" until [`Self::install`]
/// hands it the full API, then forwards every request there.
#[derive(Clone)]
pub struct StartingRouter {
    api: Arc<OnceLock<Router>>,
    trusted_proxies: Arc<IpAllowlist>,
}

impl StartingRouter {
    /// `trusted_proxies` (`admin.trusted_proxies`): reverse proxies whose
    /// `X-Forwarded-For` names the client, see [`client_behind_proxy`].
    pub fn new(trusted_proxies: IpAllowlist) -> Self {
        Self {
            api: Arc::default(),
            trusted_proxies: Arc::new(trusted_proxies),
        }
    }

    /// The router to give the listener. Requests keep their extensions (the peer
    /// address the rate limiter reads among them) when forwarded.
    pub fn router(&self) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone())
    }

    /// Switches to the full API. Only the first call counts.
    pub fn install(&self, api: Router) {
        if self.api.set(api).is_err() {
            tracing::warn!("the API router was installed twice; the first one stays");
        }
    }
}

async fn dispatch(State(this): State<StartingRouter>, mut req: Request) -> Response {
    if let Some(router) = this.api.get() {
        client_behind_proxy(&mut req, &this.trusted_proxies);
        return match router.clone().oneshot(req).await {
            Ok(response) => response,
            Err(never) => match never {},
        };
    }
    match req.uri().path() {
        "/healthz" => axum::Json(serde_json::json!({ "status": "ok" })).into_response(),
        _ => ApiError::new(
            ErrorCode::DatabaseUnavailable,
            "this process is starting: the database is not reachable yet",
        )
        .into_response(),
    }
}

/// Behind a trusted reverse proxy, the TCP peer is the proxy: every client would
/// share its per-IP rate limit. When the peer is one of `trusted` this puts the
/// client's address in its place, as the admin API reads it (the right-most
/// `X-Forwarded-For` entry that is not a trusted proxy, so whatever a client wrote
/// further left is never believed). Requests from anyone else keep their peer, and
/// their `X-Forwarded-For` is ignored.
fn client_behind_proxy(req: &mut Request, trusted: &IpAllowlist) {
    if trusted.is_empty() {
        return;
    }
    let Some(ConnectInfo(peer)) = req.extensions().get::<ConnectInfo<SocketAddr>>().copied() else {
        return;
    };
    if !trusted.contains(Some(peer.ip())) {
        return;
    }
    let forwarded: Vec<&str> = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    if let Some(client) = client_ip(Some(peer.ip()), &forwarded, trusted) {
        if client != peer.ip() {
            // The client's port is not known: 0 says so.
            req.extensions_mut()
                .insert(ConnectInfo(SocketAddr::new(client, 0)));
        }
    }
}

/// `admin.trusted_proxies` as the admin API parses it.
pub fn trusted_proxies(config: &Config) -> anyhow::Result<IpAllowlist> {
    let entries: Vec<&str> = config
        .admin
        .trusted_proxies
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    IpAllowlist::parse_setting("admin.trusted_proxies", &entries).map_err(anyhow::Error::msg)
}

/// Opens (and migrates) the database, retrying with backoff until it succeeds or
/// `cancel` fires (`None`). Every failed attempt is logged with its cause, so a
/// database that never comes back (or a migration that cannot apply) is visible in
/// the log and on `/readyz`, not hidden.
pub async fn open_store_retrying(
    config: &Config,
    cancel: &CancellationToken,
) -> Option<Arc<dyn Store>> {
    let mut wait_ms = RETRY_FIRST_MS;
    let mut attempt = 1u32;
    loop {
        // A connection attempt can hang (a firewall dropping packets): shutdown must
        // not wait for it.
        let opened = tokio::select! {
            _ = cancel.cancelled() => return None,
            opened = crate::app::open_store(config) => opened,
        };
        match opened {
            Ok(store) => {
                if attempt > 1 {
                    tracing::info!(attempt, "database reachable; serving the API");
                }
                return Some(store);
            }
            Err(e) => {
                tracing::warn!(
                    attempt,
                    retry_in_ms = wait_ms,
                    error = %format!("{e:#}"),
                    "database not reachable at start; /readyz answers 503 until it is"
                );
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(Duration::from_millis(wait_ms)) => {}
        }
        wait_ms = (wait_ms * 2).min(RETRY_MAX_MS);
        attempt += 1;
    }
}
