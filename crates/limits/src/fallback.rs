//! Redis first; the local limiter while Redis is unreachable.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use crate::{metric, Bucket, Decision, Grant, LimitError, Limiter, MemoryLimiter, Mode};

/// While Redis is down, it is tried again at most this often; calls in between go
/// straight to the local limiter, so an outage costs no latency per request.
pub const PROBE_INTERVAL_MS_DEFAULT: i64 = 1_000;

/// Keeps the service working when Redis is away: decisions come from a local
/// in-memory limiter (per process, so the effective limit is the configured one
/// times the number of processes) until Redis answers again. The switch is logged
/// once each way, and shown by the `ubtc_ratelimit_redis_up` gauge and the
/// `ubtc_ratelimit_fallback_total` counter. Never returns an error.
pub struct FallbackLimiter {
    primary: Arc<dyn Limiter>,
    local: MemoryLimiter,
    down: AtomicBool,
    /// Wall-clock ms of the next attempt on the primary while it is down.
    next_probe_ms: AtomicI64,
    probe_interval_ms: i64,
}

impl FallbackLimiter {
    pub fn new(primary: Arc<dyn Limiter>) -> Self {
        Self::with_probe_interval(primary, PROBE_INTERVAL_MS_DEFAULT)
    }

    pub fn with_probe_interval(primary: Arc<dyn Limiter>, probe_interval_ms: i64) -> Self {
        metrics::gauge!(metric::REDIS_UP).set(1.0);
        Self {
            primary,
            local: MemoryLimiter::new(),
            down: AtomicBool::new(false),
            next_probe_ms: AtomicI64::new(0),
            probe_interval_ms,
        }
    }

    /// True while decisions come from the local limiter.
    pub fn is_degraded(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    fn wall_ms() -> i64 {
        ubtc_core::Timestamp::now().as_millis()
    }

    /// True while the primary is down and not due for another try.
    fn skip_primary(&self) -> bool {
        // The probe schedule uses the wall clock, not the caller's `now`, which may be
        // a test's fixed time.
        self.down.load(Ordering::Relaxed)
            && Self::wall_ms() < self.next_probe_ms.load(Ordering::Relaxed)
    }

    fn primary_ok(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("rate-limit store reachable again; shared limits apply");
        }
        // Set on every success (a store to an atomic), not only on recovery: the
        // recorder may have been installed after this limiter was built.
        metrics::gauge!(metric::REDIS_UP).set(1.0);
    }

    fn primary_failed(&self, err: &LimitError) {
        self.next_probe_ms
            .store(Self::wall_ms() + self.probe_interval_ms, Ordering::Relaxed);
        if !self.down.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %err, "rate-limit store unreachable; using the local limiter of this process");
            metrics::gauge!(metric::REDIS_UP).set(0.0);
        }
    }

    fn local(&self, buckets: &[Bucket], now_ms: i64, mode: Mode) -> Result<Decision, LimitError> {
        metrics::counter!(metric::FALLBACK_TOTAL).increment(1);
        self.local.acquire_now(buckets, now_ms, mode)
    }
}

#[async_trait]
impl Limiter for FallbackLimiter {
    async fn acquire(
        &self,
        buckets: &[Bucket],
        now_ms: i64,
        mode: Mode,
    ) -> Result<Decision, LimitError> {
        if self.skip_primary() {
            return self.local(buckets, now_ms, mode);
        }
        match self.primary.acquire(buckets, now_ms, mode).await {
            Ok(decision) => {
                self.primary_ok();
                Ok(decision)
            }
            Err(LimitError::NoBuckets) => Err(LimitError::NoBuckets),
            Err(err) => {
                self.primary_failed(&err);
                self.local(buckets, now_ms, mode)
            }
        }
    }

    async fn lease(&self, bucket: &Bucket, now_ms: i64, want: u32) -> Result<Grant, LimitError> {
        if self.skip_primary() {
            metrics::counter!(metric::FALLBACK_TOTAL).increment(1);
            return Ok(self.local.lease_now(bucket, now_ms, want));
        }
        match self.primary.lease(bucket, now_ms, want).await {
            Ok(grant) => {
                self.primary_ok();
                Ok(grant)
            }
            Err(err) => {
                self.primary_failed(&err);
                metrics::counter!(metric::FALLBACK_TOTAL).increment(1);
                Ok(self.local.lease_now(bucket, now_ms, want))
            }
        }
    }
}
