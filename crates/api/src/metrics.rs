//! `/metrics` in the Prometheus text format, and the middleware that times requests.
//!
//! Counters and histograms are recorded anywhere in the process through the `metrics`
//! facade (the pipeline, the rate limiter, the webhook worker); this module installs
//! the one Prometheus recorder and renders it. Figures that live in the database
//! (validations by chain and status, queue depth, reserve ratio) are read from the
//! store on each scrape and set as gauges, so every `serve` process reports the same
//! numbers without a worker having to push them.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use ubtc_core::{Timestamp, ValidationStatus};

use crate::error::ApiError;
use crate::state::ApiState;

/// Histogram buckets in seconds, from a cached read to a slow signing round.
const LATENCY_BUCKETS_SECS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Window of the processing-time percentiles shown on `/metrics`.
const PROCESSING_WINDOW_MS: i64 = 3_600_000;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

#[derive(Debug, thiserror::Error)]
#[error("cannot install the metrics recorder: {0}")]
pub struct MetricsError(String);

/// Installs the process-wide Prometheus recorder (once; later calls return the same
/// handle, so tests that start several apps in one process can all call it).
pub fn install_recorder() -> Result<PrometheusHandle, MetricsError> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets(&LATENCY_BUCKETS_SECS)
        .map_err(|e| MetricsError(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    // Two racing callers: one installs, the other gets an error and uses the winner's
    // handle below.
    let _ = metrics::set_global_recorder(recorder);
    Ok(HANDLE.get_or_init(|| handle).clone())
}

/// Label of a request's method: the methods HTTP defines, else `other`. Clients may
/// send any token as a method; each one kept as a label would be new series.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// Label of a status: its class. The exact code of an error is in its JSON body and
/// the log; the class is what latency and error-rate alerts need.
pub fn status_label(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Label of the route: the template axum matched (a finite set fixed by the router),
/// never the raw path.
const UNMATCHED: &str = "unmatched";

/// (method, status class, latency histogram, request counter) of one route.
type RouteHandles = (&'static str, &'static str, Histogram, Counter);

/// The latency histogram and request counter of one (route, method, status class),
/// made once: building a labelled handle allocates and hashes its labels, which would
/// otherwise cost every request. Every key is from a fixed set, so this map is bounded
/// by routes × methods × classes whatever clients send.
#[derive(Default)]
pub struct HttpMetrics {
    by_route: std::sync::RwLock<HashMap<String, Vec<RouteHandles>>>,
}

fn http_handles(route: &str, method: &'static str, status: &'static str) -> (Histogram, Counter) {
    let labels = [
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_owned()),
    ];
    (
        metrics::histogram!("ubtc_http_request_duration_seconds", &labels),
        metrics::counter!("ubtc_http_requests_total", &labels),
    )
}

impl HttpMetrics {
    fn handles(
        &self,
        route: &str,
        method: &'static str,
        status: &'static str,
    ) -> (Histogram, Counter) {
        {
            let map = self.by_route.read().unwrap_or_else(|e| e.into_inner());
            if let Some(found) = map.get(route).and_then(|v| {
                v.iter()
                    .find(|(m, s, _, _)| *m == method && *s == status)
                    .map(|(_, _, h, c)| (h.clone(), c.clone()))
            }) {
                return found;
            }
        }
        let (histogram, counter) = http_handles(route, method, status);
        let mut map = self.by_route.write().unwrap_or_else(|e| e.into_inner());
        map.entry(route.to_owned()).or_default().push((
            method,
            status,
            histogram.clone(),
            counter.clone(),
        ));
        (histogram, counter)
    }
}

/// Times every request by method, route template and status class: labels from fixed
/// sets only, so no client can add series (`/metrics` stays the same size under a
/// flood of invented methods and paths).
pub(crate) async fn track_latency(
    State(cached): State<Option<std::sync::Arc<HttpMetrics>>>,
    req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = method_label(req.method());
    // An `Arc` inside: cloning it allocates nothing.
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    let status = status_label(response.status().as_u16());
    let (histogram, counter) = match &cached {
        Some(cached) => cached.handles(route, method, status),
        // No recorder of ours: whatever the global one is, without caching.
        None => http_handles(route, method, status),
    };
    histogram.record(started.elapsed().as_secs_f64());
    counter.increment(1);
    response
}

/// `GET /metrics`: refreshes the database gauges, then renders everything.
pub(crate) async fn metrics_handler(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let Some(handle) = state.metrics.as_ref() else {
        return Err(ApiError::new(
            crate::ErrorCode::NotFound,
            "metrics are not enabled in this process",
        ));
    };
    refresh_store_gauges(&state).await?;
    handle.run_upkeep();
    let mut text = handle.render();
    render_processing_window(&state, &mut text).await?;
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    Ok(response)
}

async fn refresh_store_gauges(state: &ApiState) -> Result<(), ApiError> {
    let now = Timestamp::now();
    let stats = state
        .store
        .stats(now.plus_millis(-PROCESSING_WINDOW_MS))
        .await?;
    let mut depth = 0u64;
    for c in &stats.counts {
        metrics::gauge!("ubtc_validations", "chain" => c.chain.to_string(), "status" => c.status.as_str())
            .set(c.count as f64);
        if matches!(
            c.status,
            ValidationStatus::Queued | ValidationStatus::Delayed | ValidationStatus::Signing
        ) {
            depth += c.count;
        }
    }
    metrics::gauge!("ubtc_queue_depth").set(depth as f64);
    let oldest = state.store.queue_oldest_due(now).await?;
    // Zero when nothing waits, so an alert on age clears with the queue.
    let age_ms = oldest.map_or(0, |t| (now.as_millis() - t.as_millis()).max(0));
    metrics::gauge!("ubtc_queue_oldest_age_seconds").set(age_ms as f64 / 1000.0);
    crate::ops_metrics::refresh(state, now).await?;
    for (quantile, value) in [
        ("0.5", stats.processing_ms_p50),
        ("0.9", stats.processing_ms_p90),
        ("0.99", stats.processing_ms_p99),
    ] {
        if let Some(ms) = value {
            metrics::gauge!("ubtc_processing_seconds", "quantile" => quantile)
                .set(ms as f64 / 1000.0);
        }
    }
    if let Some(snapshot) = state.store.latest_reserve_snapshot().await? {
        if let Some(ppm) = snapshot.ratio_ppm {
            metrics::gauge!("ubtc_reserve_ratio").set(ppm as f64 / 1_000_000.0);
        }
        metrics::gauge!("ubtc_reserve_healthy").set(if snapshot.healthy { 1.0 } else { 0.0 });
        metrics::gauge!("ubtc_reserve_snapshot_age_seconds")
            .set((now.as_millis() - snapshot.taken_at.as_millis()) as f64 / 1000.0);
        for entry in &snapshot.supply {
            // Base units of the token on that chain; dashboards divide by its decimals.
            metrics::gauge!("ubtc_token_supply_base_units", "chain" => entry.chain.to_string())
                .set(entry.supply.base_units as f64);
        }
    }
    Ok(())
}

/// Most signing times read for the processing histogram at one scrape.
const PROCESSING_SAMPLES_MAX: u32 = 100_000;

/// Appends `ubtc_processing_window_seconds`: the detection-to-signature times of the
/// validations signed in the last hour, as cumulative buckets (`le`), a sum and a
/// count. Read from the database, so every `serve` process shows the same figures
/// whichever worker signed. A sliding window is not a counter: the series are gauges
/// (`histogram_quantile()` works on them as on any `le` series; `rate()` does not).
async fn render_processing_window(state: &ApiState, out: &mut String) -> Result<(), ApiError> {
    use std::fmt::Write as _;
    let since = Timestamp::now().plus_millis(-PROCESSING_WINDOW_MS);
    let times = state
        .store
        .processing_times_ms(since, PROCESSING_SAMPLES_MAX)
        .await?;
    let name = "ubtc_processing_window_seconds";
    let _ = writeln!(
        out,
        "# HELP {name}_bucket Detection to signature, validations signed in the last hour."
    );
    let _ = writeln!(out, "# TYPE {name}_bucket gauge");
    for le in LATENCY_BUCKETS_SECS {
        let le_ms = (le * 1000.0) as i64;
        let n = times.iter().filter(|t| **t <= le_ms).count();
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", times.len());
    let sum_secs = times.iter().map(|t| *t as f64).sum::<f64>() / 1000.0;
    let _ = writeln!(out, "# TYPE {name}_sum gauge");
    let _ = writeln!(out, "{name}_sum {sum_secs}");
    let _ = writeln!(out, "# TYPE {name}_count gauge");
    let _ = writeln!(out, "{name}_count {}", times.len());
    Ok(())
}

/// A router with `/metrics` only, without the database gauges, for processes that
/// serve no API (`ubtc worker`): their own counters (monitors, webhook deliveries,
/// payment limits) are visible only there.
pub fn metrics_only_router(handle: PrometheusHandle) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move {
                handle.run_upkeep();
                let mut response = handle.render().into_response();
                response.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
                );
                response
            }
        }),
    )
}
