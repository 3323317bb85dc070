//! The public HTTP API of Universal Bitcoin, on axum.
//!
//! Read-only views of validations, proof bundles, configured chains, reserves and
//! statistics, plus health checks, the OpenAPI document, and (under `ubtc demo`
//! only) a route that pays the local dev chain. Every answer is JSON; every error is
//! `{"error": {"code", "message", "request_id"}}` with a stable code from
//! [`ErrorCode`].
//!
//! Handlers talk to storage only through [`ubtc_store::Store`]: this crate must
//! never contain SQL, business rules (fees, limits, signing) or chain access.
//!
//! Servers are started the same way in production and in tests: bind a listener,
//! build a router with [`public_router`], and run [`serve`] until the cancellation
//! token fires.

pub mod admin;
mod attestations;
pub mod cache;
pub mod dashboard;
mod dto;
mod error;
mod extract;
mod handlers;
pub mod metrics;
mod openapi;
mod ops_metrics;
pub mod ratelimit;
mod request_id;
mod server;
mod state;
pub mod webhooks;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{on, MethodFilter};
use axum::Router;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tower_http::LatencyUnit;
use tracing::Level;

pub use cache::ResponseCache;
pub use error::{ApiError, ErrorCode};
pub use handlers::{LIST_LIMIT_DEFAULT, LIST_LIMIT_MAX};
pub use openapi::document as openapi_document;
pub use ratelimit::{ClientKey, RequestLimiter};
pub use request_id::RequestId;
pub use server::{
    serve, serve_with, ServeLimits, HEADER_BYTES_MAX, HEADER_READ_TIMEOUT_MS_DEFAULT,
    IDLE_TIMEOUT_MS_DEFAULT, MAX_CONNECTIONS_DEFAULT,
};
pub use state::{
    ApiLimits, ApiState, ChainInfo, DemoPaymentError, DemoPaymentReceipt, DemoPaymentRequest,
    DemoPayments, TokenInfo, BODY_LIMIT_BYTES_DEFAULT, REQUEST_TIMEOUT_MS_DEFAULT,
};

/// One route the router serves: method and axum path template (`/v1/proofs/{id}`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
}

/// Mounts routes and records them, so the list of served routes (checked against
/// the OpenAPI document by a test) cannot drift from the router.
struct Routes {
    router: Router<ApiState>,
    mounted: Vec<RouteSpec>,
}

impl Routes {
    fn new() -> Self {
        Self {
            router: Router::new(),
            mounted: Vec::new(),
        }
    }

    fn add<H, T>(
        mut self,
        (filter, method): (MethodFilter, Method),
        path: &'static str,
        handler: H,
    ) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        self.router = self.router.route(path, on(filter, handler));
        self.mounted.push(RouteSpec { method, path });
        self
    }

    fn get<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        self.add((MethodFilter::GET, Method::GET), path, handler)
    }

    fn post<H, T>(self, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        self.add((MethodFilter::POST, Method::POST), path, handler)
    }

    /// Mounts every route of an admin table; [`admin::guard`] enforces its roles.
    fn admin_table(mut self, table: &'static [admin::AdminRoute]) -> Self {
        for r in table {
            self.router = self.router.route(r.path, (r.mount)());
            self.mounted.push(RouteSpec {
                method: r.method.clone(),
                path: r.path,
            });
        }
        self
    }
}

fn routes(demo: bool) -> Routes {
    use handlers::*;
    let r = Routes::new()
        .get("/healthz", healthz)
        .get("/readyz", readyz)
        .get("/openapi.json", openapi)
        .get("/v1/validations", list_validations)
        .get("/v1/validations/{id}", get_validation)
        .get("/v1/proofs/{id}", get_proof)
        .get("/v1/chains", list_chains)
        .get("/v1/reserves", reserves)
        .get("/v1/reserves/history", reserve_history)
        .get("/v1/reserves/registry", reserve_registry)
        .get("/v1/attestations", attestations::list_attestations)
        .get("/v1/attestations/latest", attestations::latest_attestation)
        .get("/v1/attestations/{id}", attestations::get_attestation)
        .get("/v1/stats", stats)
        // Admin and operator routes (webhook consumers included): one table with
        // the roles of each, see admin/mod.rs.
        .admin_table(admin::ADMIN_ROUTES);
    if demo {
        r.post("/v1/demo/payments", demo_payment)
    } else {
        r
    }
}

/// The routes [`public_router`] serves for a state with (`demo = true`) or without
/// the demo hook.
pub fn public_routes(demo: bool) -> Vec<RouteSpec> {
    routes(demo).mounted
}

/// The public router with its layers: request id, timeout and JSON errors, tracing
/// (method, route, status, latency), body limit.
pub fn public_router(state: ApiState) -> Router {
    let limits = state.limits;
    let Routes { router, .. } = routes(state.demo.is_some());
    router
        // Authentication, IP allowlist and roles of the routes in admin::ADMIN_ROUTES
        // (a route layer: it sees the matched route; other routes pass through).
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            admin::guard,
        ))
        // An operations endpoint, documented in docs/operations.md rather than in the
        // OpenAPI document of the public API.
        .route("/metrics", axum::routing::get(metrics::metrics_handler))
        // The dashboard's page and assets (docs/dashboard.md), outside the JSON API.
        .merge(dashboard::router())
        .fallback(handlers::fallback)
        // Cookie sessions of the admin page; inside the layers below, so the admin
        // guard sees the bearer token it adds (dashboard/session.rs).
        .layer(axum::middleware::from_fn_with_state(
            state.admin.clone(),
            dashboard::session::cookie_session,
        ))
        .layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        // Inside the rate limiter: a cached answer still costs the client a unit.
        // Each layer gets only what it uses: cloning the whole state per request and
        // layer showed in profiles of `reserves_bench`.
        .layer(axum::middleware::from_fn_with_state(
            state.response_cache.clone(),
            cache::cache_responses,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.rate_limiter.clone(),
            ratelimit::limit_requests,
        ))
        .layer(axum::middleware::from_fn_with_state(
            limits.body_limit_bytes,
            extract::refuse_declared_oversize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.http_metrics.clone(),
            metrics::track_latency,
        ))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    // The route template, not the raw path: ids would make every
                    // request its own log series.
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("<unmatched>", MatchedPath::as_str);
                    let request_id = req
                        .extensions()
                        .get::<RequestId>()
                        .map_or("-", |r| r.0.as_str());
                    tracing::info_span!("http", method = %req.method(), route, request_id)
                })
                // Per request at DEBUG: a log line per answer at INFO costs more than a
                // cached answer itself; latency by route is in `/metrics`.
                .on_response(
                    DefaultOnResponse::new()
                        .level(Level::DEBUG)
                        .latency_unit(LatencyUnit::Millis),
                )
                // Failures are logged once, by `ApiError`, with their cause.
                .on_failure(()),
        )
        .layer(axum::middleware::from_fn_with_state(
            limits.request_timeout,
            request_id::request_context,
        ))
        .with_state(state)
}
