//! `GET /metrics` of a guardian daemon, in the Prometheus text format.
//!
//! What an operator needs to see a guardian that stopped signing: its answers by
//! outcome and refusal code, and how long the approval record takes to reach the
//! disk (a slow or failing fsync refuses every request with `internal`). Nothing here
//! names a payment, a statement, a key or a coordinator: counts and durations only,
//! so the endpoint can be scraped over a network the guardian does not trust.
//!
//! The figures are process-wide statics rather than a `metrics` recorder: a guardian
//! process holds one guardian, and the counters then cost one lock per answer with
//! no recorder to install before the first request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::protocol::Outcome;

/// Upper bounds (seconds) of the fsync histogram: a local SSD flushes in about a
/// millisecond, a network disk in tens; past a second every signing round waits.
const FSYNC_BUCKETS_SECS: [f64; 10] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0,
];

struct Figures {
    /// (outcome, refusal code or "" for approvals) → answers.
    answers: BTreeMap<(&'static str, &'static str), u64>,
    fsync_buckets: [u64; FSYNC_BUCKETS_SECS.len()],
    fsync_count: u64,
    fsync_sum_secs: f64,
    fsync_failures: u64,
}

static FIGURES: Mutex<Figures> = Mutex::new(Figures {
    answers: BTreeMap::new(),
    fsync_buckets: [0; FSYNC_BUCKETS_SECS.len()],
    fsync_count: 0,
    fsync_sum_secs: 0.0,
    fsync_failures: 0,
});

fn figures() -> std::sync::MutexGuard<'static, Figures> {
    // A panic while holding the lock leaves plain counters behind: still usable.
    FIGURES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts one answer this guardian decided (a repeated request answered from
/// memory is not counted again).
pub fn record_answer(outcome: &Outcome) {
    let key = match outcome {
        Outcome::Approved { .. } => ("approved", ""),
        Outcome::Refused { code, .. } => ("refused", code.as_str()),
    };
    *figures().answers.entry(key).or_insert(0) += 1;
}

/// Records one flush of the approval record: how long it took and whether it failed.
pub fn record_fsync(took: Duration, ok: bool) {
    let secs = took.as_secs_f64();
    let mut f = figures();
    for (i, le) in FSYNC_BUCKETS_SECS.iter().enumerate() {
        if secs <= *le {
            f.fsync_buckets[i] += 1;
        }
    }
    f.fsync_count += 1;
    f.fsync_sum_secs += secs;
    if !ok {
        f.fsync_failures += 1;
    }
}

/// The figures in the Prometheus text format (version 0.0.4).
pub fn render() -> String {
    let f = figures();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP ubtc_guardian_answers_total Answers decided by this guardian, by outcome and refusal code."
    );
    let _ = writeln!(out, "# TYPE ubtc_guardian_answers_total counter");
    // Both outcomes always present, so `rate()` and alerts see a series from the first
    // scrape on instead of one that appears with the first answer.
    if !f.answers.keys().any(|(o, _)| *o == "approved") {
        let _ = writeln!(
            out,
            "ubtc_guardian_answers_total{{outcome=\"approved\",code=\"\"}} 0"
        );
    }
    if !f.answers.keys().any(|(o, _)| *o == "refused") {
        let _ = writeln!(
            out,
            "ubtc_guardian_answers_total{{outcome=\"refused\",code=\"\"}} 0"
        );
    }
    for ((outcome, code), n) in &f.answers {
        let _ = writeln!(
            out,
            "ubtc_guardian_answers_total{{outcome=\"{outcome}\",code=\"{code}\"}} {n}"
        );
    }
    let name = "ubtc_guardian_approval_fsync_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Time to flush the approval record to disk before answering."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (le, n) in FSYNC_BUCKETS_SECS.iter().zip(f.fsync_buckets) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", f.fsync_count);
    let _ = writeln!(out, "{name}_sum {}", f.fsync_sum_secs);
    let _ = writeln!(out, "{name}_count {}", f.fsync_count);
    let _ = writeln!(
        out,
        "# HELP ubtc_guardian_approval_fsync_failures_total Flushes of the approval record that failed (each refuses its batch)."
    );
    let _ = writeln!(
        out,
        "# TYPE ubtc_guardian_approval_fsync_failures_total counter"
    );
    let _ = writeln!(
        out,
        "ubtc_guardian_approval_fsync_failures_total {}",
        f.fsync_failures
    );
    out
}

/// `GET /metrics`, merged into the guardian's router.
pub fn router() -> Router {
    Router::new().route("/metrics", get(metrics_handler))
}

async fn metrics_handler() -> Response {
    let mut response = render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::RefusalCode;

    #[test]
    fn answers_and_fsyncs_are_counted_and_rendered() {
        record_answer(&Outcome::Refused {
            code: RefusalCode::PaymentUnknown,
            detail: "secret detail is not rendered".into(),
        });
        record_fsync(Duration::from_millis(3), true);
        record_fsync(Duration::from_secs(2), false);
        let text = render();
        assert!(text.contains(
            "ubtc_guardian_answers_total{outcome=\"refused\",code=\"payment_unknown\"} "
        ));
        assert!(!text.contains("secret detail"));
        assert!(text.contains("ubtc_guardian_approval_fsync_seconds_bucket{le=\"0.005\"} "));
        let count: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("ubtc_guardian_approval_fsync_seconds_count "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(count >= 2, "{text}");
        let failures: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("ubtc_guardian_approval_fsync_failures_total "))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        assert!(failures >= 1, "{text}");
    }
}
