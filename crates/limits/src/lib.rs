//! Rate limiting and the response cache of Universal Bitcoin.
//!
//! One algorithm, GCRA (the generic cell rate algorithm: a token bucket kept as one
//! "theoretical arrival time" per key), behind one trait, [`Limiter`], with three
//! implementations:
//!
//! - [`RedisLimiter`]: shared by every process, one atomic Lua script per decision
//!   (all buckets of a request are checked and charged together, or not at all);
//! - [`MemoryLimiter`]: one process (`ubtc demo`, tests), same arithmetic;
//! - [`FallbackLimiter`]: Redis first, the local limiter while Redis is unreachable,
//!   saying so once in the log and continuously in metrics.
//!
//! [`PaymentLimits`] applies them to paid validations (per payer per chain and per
//! chain overall), where a limited request is *delayed*, never refused;
//! [`ClientLimits`] to API requests (per IP and per API key), which are refused with
//! the time to wait, and which lease units in batches ([`Limiter::lease`]) so that a
//! busy client costs one Redis round trip per batch, not per request (the bound this
//! puts on the limit is on [`ClientLimits`]).
//!
//! [`ResponseCache`] is the API's response cache: Redis behind an in-process layer,
//! invalidated by tag generation across processes.
//!
//! This crate decides how much may pass and when; it never decides what a request is
//! for, and never logs keys' secrets (keys here are chain names, payer addresses and
//! hashed API keys).

mod cache;
mod client;
mod fallback;
mod gcra;
mod memory;
mod payment;
mod redis_backend;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use cache::ResponseCache;
pub use cache::{Generation, Lookup};
pub use client::{Client, ClientLimits, LEASE_MAX_UNITS_DEFAULT, LEASE_TTL_MS_DEFAULT};
pub use fallback::FallbackLimiter;
pub use gcra::Tat;
pub use memory::MemoryLimiter;
pub use payment::PaymentLimits;
pub use redis_backend::{RedisLimiter, REDIS_TIMEOUT_MS_DEFAULT};
/// Implemented by [`ResponseCache`]: the snapshotter drops cached reserve answers.
pub use ubtc_pipeline::snapshot::ReserveCacheInvalidator;

/// A sustained rate with a burst allowance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rate {
    /// Time one unit "costs": the sustained rate is one unit per `emission_ms`.
    pub emission_ms: i64,
    /// Units that may pass at once after a quiet period (at least 1).
    pub burst: u32,
}

impl Rate {
    /// `per_minute` units a minute on average, `burst` at once.
    pub fn per_minute(per_minute: u32, burst: u32) -> Self {
        Self {
            emission_ms: (60_000 / i64::from(per_minute.max(1))).max(1),
            burst: burst.max(1),
        }
    }

    /// `per_second` units a second on average, `burst` at once.
    pub fn per_second(per_second: u32, burst: u32) -> Self {
        Self {
            emission_ms: (1_000 / i64::from(per_second.max(1))).max(1),
            burst: burst.max(1),
        }
    }

    /// GCRA's tolerance: how far ahead of `now` the arrival time may run before a
    /// unit has to wait.
    pub(crate) fn tolerance_ms(self) -> i64 {
        self.emission_ms
            .saturating_mul(i64::from(self.burst.max(1)) - 1)
    }
}

/// One bucket a request is charged to: a key (without the backend's prefix) and its
/// rate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bucket {
    pub key: String,
    pub rate: Rate,
}

impl Bucket {
    pub fn new(key: impl Into<String>, rate: Rate) -> Self {
        Self {
            key: key.into(),
            rate,
        }
    }
}

/// What to do when a unit is not available now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Reserve the next free unit even if it lies in the future (delay, never
    /// refuse): validations.
    Reserve,
    /// Take a unit only if one is free now; otherwise charge nothing (refuse with
    /// Retry-After): API requests.
    TryNow,
}

/// The answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Earliest time (ms since the epoch) the request may proceed: `<= now` means
    /// now.
    pub at_ms: i64,
    /// Whether a unit was charged (always in `Reserve` mode; in `TryNow` mode only
    /// when `at_ms <= now`).
    pub charged: bool,
}

impl Decision {
    /// How long the caller must wait, zero when it may go now.
    pub fn wait_ms(&self, now_ms: i64) -> i64 {
        (self.at_ms - now_ms).max(0)
    }
}

/// Units leased from one bucket at once (see [`Limiter::lease`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Units charged to the bucket and handed to the caller (0: none free now).
    pub units: u32,
    /// When `units` is 0, the time (ms) the next unit frees up; otherwise `now`.
    pub at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    /// Redis could not be reached or did not answer in time.
    #[error("redis unavailable: {0}")]
    Unavailable(#[source] redis::RedisError),
    #[error("redis did not answer within {0} ms")]
    Timeout(u64),
    /// Redis answered something the script cannot have returned.
    #[error("unexpected answer from the rate-limit script: {0}")]
    Protocol(String),
    #[error("a request must be charged to at least one bucket")]
    NoBuckets,
}

/// A rate limiter. Every implementation charges all `buckets` of one call together
/// (atomically), and waits its turn behind earlier reservations.
#[async_trait]
pub trait Limiter: Send + Sync + 'static {
    async fn acquire(
        &self,
        buckets: &[Bucket],
        now_ms: i64,
        mode: Mode,
    ) -> Result<Decision, LimitError>;

    /// Takes up to `want` units of one bucket that are free now, all charged at once,
    /// so a caller can spend them locally without asking again for each request
    /// ([`ClientLimits`] does, for API requests). Never reserves a future unit.
    async fn lease(&self, bucket: &Bucket, now_ms: i64, want: u32) -> Result<Grant, LimitError>;
}

/// Metric names, in one place so the docs and dashboards can rely on them.
pub mod metric {
    /// Counter: decisions taken by the local limiter because Redis was unreachable.
    pub const FALLBACK_TOTAL: &str = "ubtc_ratelimit_fallback_total";
    /// Gauge: 1 while Redis answers, 0 while the local fallback is in use.
    pub const REDIS_UP: &str = "ubtc_ratelimit_redis_up";
    /// Counter by `scope`: requests delayed (validations) or refused (API).
    pub const HITS_TOTAL: &str = "ubtc_ratelimit_hits_total";
}
