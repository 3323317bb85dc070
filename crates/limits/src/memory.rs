//! GCRA in one process.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::gcra::{decide, lease, Tat};
use crate::{Bucket, Decision, Grant, LimitError, Limiter, Mode};

/// Keys kept before expired ones are swept; bounds memory under a flood of distinct
/// keys (client IPs).
const SWEEP_AT_KEYS: usize = 100_000;

/// GCRA state in a map behind a mutex: correct for one process only. The lock is held
/// for a few arithmetic operations, never across an await.
#[derive(Default)]
pub struct MemoryLimiter {
    tats: Mutex<HashMap<String, Tat>>,
}

impl MemoryLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// The synchronous decision (the trait method only wraps it).
    pub fn acquire_now(
        &self,
        buckets: &[Bucket],
        now_ms: i64,
        mode: Mode,
    ) -> Result<Decision, LimitError> {
        if buckets.is_empty() {
            return Err(LimitError::NoBuckets);
        }
        // A poisoned lock only means another thread panicked mid-update of plain
        // integers; the map is still usable.
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        if tats.len() >= SWEEP_AT_KEYS {
            // A TAT in the past is the same as no entry.
            tats.retain(|_, tat| *tat > now_ms);
        }
        let current: Vec<Option<Tat>> = buckets.iter().map(|b| tats.get(&b.key).copied()).collect();
        let (decision, next) = decide(buckets, &current, now_ms, mode);
        if let Some(next) = next {
            for (b, tat) in buckets.iter().zip(next) {
                tats.insert(b.key.clone(), tat);
            }
        }
        Ok(decision)
    }

    /// The synchronous lease (the trait method only wraps it).
    pub fn lease_now(&self, bucket: &Bucket, now_ms: i64, want: u32) -> Grant {
        let mut tats = self.tats.lock().unwrap_or_else(|e| e.into_inner());
        let (grant, next) = lease(bucket.rate, tats.get(&bucket.key).copied(), now_ms, want);
        if let Some(next) = next {
            tats.insert(bucket.key.clone(), next);
        }
        grant
    }
}

#[async_trait]
impl Limiter for MemoryLimiter {
    async fn acquire(
        &self,
        buckets: &[Bucket],
        now_ms: i64,
        mode: Mode,
    ) -> Result<Decision, LimitError> {
        self.acquire_now(buckets, now_ms, mode)
    }

    async fn lease(&self, bucket: &Bucket, now_ms: i64, want: u32) -> Result<Grant, LimitError> {
        Ok(self.lease_now(bucket, now_ms, want))
    }
}
