//! A response cache: Redis shared by every process, with a small in-process first
//! layer in front of it.
//!
//! Values are opaque bytes with a time to live. The local layer keeps an entry at most
//! `local_ttl` (short), so an entry invalidated or replaced in Redis is seen by every
//! process within that bound. Redis trouble is a miss, never an error: the cache can
//! only make answers faster, not make them fail.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::redis_backend::LazyConnection;

/// Largest value cached; bigger ones are served uncached.
pub const ENTRY_MAX_BYTES_DEFAULT: usize = 256 * 1024;
/// Entries kept in the local layer.
pub const LOCAL_MAX_ENTRIES_DEFAULT: usize = 10_000;
/// Longest an entry lives in the local layer.
pub const LOCAL_TTL_MS_DEFAULT: u64 = 1_000;

#[derive(Default)]
struct Local {
    entries: HashMap<String, (i64, Arc<Vec<u8>>)>,
    /// Insertion order, for eviction when full (oldest first).
    order: VecDeque<String>,
}

pub struct ResponseCache {
    redis: Option<(LazyConnection, String)>,
    local: Mutex<Local>,
    local_ttl_ms: i64,
    local_max_entries: usize,
    entry_max_bytes: usize,
    /// After a Redis failure, Redis is skipped until this time (ms), so an outage
    /// costs one timeout a second, not one per request.
    redis_skip_until_ms: AtomicI64,
}

/// How long Redis is skipped after a failure.
const REDIS_RETRY_MS: i64 = 1_000;

impl ResponseCache {
    /// In-process only (`ubtc demo`, tests).
    pub fn local_only() -> Self {
        Self {
            redis: None,
            local: Mutex::new(Local::default()),
            local_ttl_ms: LOCAL_TTL_MS_DEFAULT as i64,
            local_max_entries: LOCAL_MAX_ENTRIES_DEFAULT,
            entry_max_bytes: ENTRY_MAX_BYTES_DEFAULT,
            redis_skip_until_ms: AtomicI64::new(0),
        }
    }

    /// Redis at `url` behind the local layer; keys get `prefix`.
    pub fn with_redis(
        url: &str,
        prefix: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self, crate::LimitError> {
        Ok(Self {
            redis: Some((LazyConnection::new(url, timeout)?, prefix.into())),
            ..Self::local_only()
        })
    }

    /// Bounds how long the local layer keeps an entry (and so how late another
    /// process sees an invalidation).
    pub fn with_local_ttl(mut self, ttl: Duration) -> Self {
        self.local_ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        self
    }

    pub fn entry_max_bytes(&self) -> usize {
        self.entry_max_bytes
    }

    fn now_ms() -> i64 {
        ubtc_core::Timestamp::now().as_millis()
    }

    /// The Redis connection and prefix, unless Redis failed less than
    /// `REDIS_RETRY_MS` ago.
    async fn redis(&self) -> Option<(redis::aio::ConnectionManager, &str)> {
        let (conn, prefix) = self.redis.as_ref()?;
        if Self::now_ms() < self.redis_skip_until_ms.load(Ordering::Relaxed) {
            return None;
        }
        match conn.get().await {
            Ok(c) => Some((c, prefix.as_str())),
            Err(e) => {
                self.redis_failed(&e);
                None
            }
        }
    }

    fn redis_failed(&self, e: &dyn std::fmt::Display) {
        tracing::debug!(error = %e, "response cache: Redis unavailable; local layer only for a while");
        self.redis_skip_until_ms
            .store(Self::now_ms() + REDIS_RETRY_MS, Ordering::Relaxed);
    }

    pub async fn get(&self, key: &str) -> Option<Arc<Vec<u8>>> {
        let now = Self::now_ms();
        {
            let local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((expires, value)) = local.entries.get(key) {
                if *expires > now {
                    metrics::counter!("ubtc_cache_requests_total", "layer" => "local", "result" => "hit").increment(1);
                    return Some(value.clone());
                }
            }
        }
        let (mut c, prefix) = self.redis().await?;
        let answer: redis::RedisResult<(Option<Vec<u8>>, i64)> = redis::pipe()
            .get(format!("{prefix}{key}"))
            .pttl(format!("{prefix}{key}"))
            .query_async(&mut c)
            .await;
        match answer {
            Ok((Some(value), pttl)) => {
                metrics::counter!("ubtc_cache_requests_total", "layer" => "redis", "result" => "hit").increment(1);
                let value = Arc::new(value);
                let ttl = if pttl > 0 { pttl } else { self.local_ttl_ms };
                self.put_local(key, value.clone(), ttl.min(self.local_ttl_ms), now);
                Some(value)
            }
            Ok((None, _)) => {
                metrics::counter!("ubtc_cache_requests_total", "layer" => "redis", "result" => "miss").increment(1);
                None
            }
            Err(e) => {
                self.redis_failed(&e);
                None
            }
        }
    }

    /// Stores `value` for `ttl` (values over the size bound are skipped).
    pub async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        if value.len() > self.entry_max_bytes {
            return;
        }
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        let value = Arc::new(value);
        self.put_local(
            key,
            value.clone(),
            ttl_ms.min(self.local_ttl_ms),
            Self::now_ms(),
        );
        if let Some((mut c, prefix)) = self.redis().await {
            let stored: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("{prefix}{key}"))
                .arg(value.as_slice())
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut c)
                .await;
            if let Err(e) = stored {
                self.redis_failed(&e);
            }
        }
    }

    /// Forgets `key` here and in Redis (other processes' local layers forget it
    /// within their local time to live).
    pub async fn invalidate(&self, key: &str) {
        {
            let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
            local.entries.remove(key);
        }
        // Tried even during a recent failure: a missed invalidation serves stale data.
        if let Some((conn, prefix)) = &self.redis {
            let deleted: Result<i64, String> = match conn.get().await {
                Ok(mut c) => redis::cmd("DEL")
                    .arg(format!("{prefix}{key}"))
                    .query_async(&mut c)
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = deleted {
                tracing::warn!(error = %e, key, "response cache: invalidation failed; the entry lives until its time to live");
            }
        }
    }

    fn put_local(&self, key: &str, value: Arc<Vec<u8>>, ttl_ms: i64, now: i64) {
        let mut local = self.local.lock().unwrap_or_else(|e| e.into_inner());
        if local.entries.len() >= self.local_max_entries {
            local.entries.retain(|_, (expires, _)| *expires > now);
            while local.entries.len() >= self.local_max_entries {
                let Some(oldest) = local.order.pop_front() else {
                    break;
                };
                local.entries.remove(&oldest);
            }
            let Local { entries, order } = &mut *local;
            order.retain(|k| entries.contains_key(k));
        }
        if local
            .entries
            .insert(key.to_owned(), (now + ttl_ms, value))
            .is_none()
        {
            local.order.push_back(key.to_owned());
        }
    }
}
