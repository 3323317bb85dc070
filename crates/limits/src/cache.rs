//! A response cache: Redis shared by every process, with an in-process first layer in
//! front of it, and invalidation by *tag* across processes.
//!
//! Values are opaque bytes with a time to live, each stored under a tag (`reserves`,
//! …). Invalidating a tag increments its generation, a counter in Redis
//! (`{prefix}gen:{tag}`); every entry records the generation it was computed under,
//! and only entries of the current generation are served. Each process re-reads a
//! tag's generation at most every `gen_check_ms` (250 ms by default) while it serves
//! that tag, in the same round trip as the entry when it has to go to Redis anyway.
//! So an invalidation is seen at once by the process that made it and within
//! `gen_check_ms` by every other process, while a hit in the local layer costs no
//! Redis call at all.
//!
//! Chosen over pub/sub: no connection to keep subscribed (a lost subscription would
//! silently serve stale data until the TTL), a bounded delay after Redis comes back,
//! and one `INCR` per invalidation whatever the number of entries under the tag.
//!
//! Redis trouble is a miss, never an error: the cache can only make answers faster,
//! not make them fail. While Redis is skipped after a failure, the local layer still
//! serves its entries (each at most `local_ttl`), with the last generation it knew.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use crate::redis_backend::LazyConnection;

/// Largest value cached; bigger ones are served uncached.
pub const ENTRY_MAX_BYTES_DEFAULT: usize = 256 * 1024;
/// Entries kept in the local layer.
pub const LOCAL_MAX_ENTRIES_DEFAULT: usize = 10_000;
/// Longest an entry lives in the local layer (invalidation does not depend on it: it
/// bounds how long a Redis outage can hide another process's invalidation).
pub const LOCAL_TTL_MS_DEFAULT: u64 = 5_000;
/// How often a process re-reads a tag's generation from Redis while serving it: the
/// longest another process's invalidation stays unseen.
pub const GEN_CHECK_MS_DEFAULT: u64 = 250;

/// The generation of a tag observed by a lookup that missed. Pass it back to
/// [`ResponseCache::put`]: an answer computed after an invalidation it did not see is
/// then stored under the old generation, where nobody serves it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation(u64);

impl Generation {
    /// The number, for callers that carry it through their own types.
    pub fn value(self) -> u64 {
        self.0
    }
}

impl From<u64> for Generation {
    fn from(n: u64) -> Self {
        Self(n)
    }
}

/// The answer of [`ResponseCache::get`].
#[derive(Clone, Debug)]
pub enum Lookup {
    Hit(Bytes),
    Miss(Generation),
}

struct Entry {
    expires_ms: i64,
    generation: u64,
    value: Bytes,
}

struct TagGen {
    generation: u64,
    checked_ms: i64,
}

#[derive(Default)]
struct Local {
    entries: HashMap<String, Entry>,
    /// Insertion order, for eviction when full (oldest first).
    order: VecDeque<String>,
    tags: HashMap<String, TagGen>,
}

pub struct ResponseCache {
    redis: Option<(LazyConnection, String)>,
    local: Mutex<Local>,
    local_ttl_ms: i64,
    local_max_entries: usize,
    entry_max_bytes: usize,
    gen_check_ms: i64,
    /// After a Redis failure, Redis is skipped until this time (ms), so an outage
    /// costs one timeout a second, not one per request.
    redis_skip_until_ms: AtomicI64,
}

/// How long Redis is skipped after a failure.
const REDIS_RETRY_MS: i64 = 1_000;

impl ResponseCache {
    /// In-process only (`ubtc demo`, one process, tests): invalidations are local.
    pub fn local_only() -> Self {
        Self {
            redis: None,
            local: Mutex::new(Local::default()),
            local_ttl_ms: LOCAL_TTL_MS_DEFAULT as i64,
            local_max_entries: LOCAL_MAX_ENTRIES_DEFAULT,
            entry_max_bytes: ENTRY_MAX_BYTES_DEFAULT,
            gen_check_ms: GEN_CHECK_MS_DEFAULT as i64,
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

    /// Bounds how long the local layer keeps an entry.
    pub fn with_local_ttl(mut self, ttl: Duration) -> Self {
        self.local_ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        self
    }

    /// How often a tag's generation is re-read from Redis (the delay before another
    /// process's invalidation is seen).
    pub fn with_gen_check(mut self, every: Duration) -> Self {
        self.gen_check_ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
        self
    }

    pub fn entry_max_bytes(&self) -> usize {
        self.entry_max_bytes
    }

    fn now_ms() -> i64 {
        ubtc_core::Timestamp::now().as_millis()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        // A poisoned lock only means a panic mid-update; the maps are still usable.
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn redis_skipped(&self, now: i64) -> bool {
        now < self.redis_skip_until_ms.load(Ordering::Relaxed)
    }

    /// The Redis connection and prefix, unless Redis failed less than
    /// `REDIS_RETRY_MS` ago.
    async fn redis(&self) -> Option<(redis::aio::ConnectionManager, &str)> {
        let (conn, prefix) = self.redis.as_ref()?;
        if self.redis_skipped(Self::now_ms()) {
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

    /// The entry under `key` (stored with `tag`) if it is of the tag's current
    /// generation; otherwise a miss with the generation to store the new answer under.
    pub async fn get(&self, tag: &str, key: &str) -> Lookup {
        let now = Self::now_ms();
        let known_gen = {
            let local = self.lock();
            let (generation, checked_ms) = local
                .tags
                .get(tag)
                .map_or((0, None), |g| (g.generation, Some(g.checked_ms)));
            // The generation may be trusted without asking Redis: there is none, it
            // is away (then the last one known), or it was read recently.
            let no_redis = self.redis.is_none() || self.redis_skipped(now);
            if no_redis || checked_ms.is_some_and(|c| now - c < self.gen_check_ms) {
                if let Some(entry) = local.entries.get(key) {
                    if entry.expires_ms > now && entry.generation == generation {
                        metrics::counter!("ubtc_cache_requests_total", "layer" => "local", "result" => "hit").increment(1);
                        return Lookup::Hit(entry.value.clone());
                    }
                }
                if no_redis {
                    return Lookup::Miss(Generation(generation));
                }
            }
            generation
        };
        let Some((mut c, prefix)) = self.redis().await else {
            return Lookup::Miss(Generation(known_gen));
        };
        let entry_key = format!("{prefix}resp:{key}");
        let answer: redis::RedisResult<(Option<u64>, Option<Vec<u8>>, i64)> = redis::pipe()
            .get(format!("{prefix}gen:{tag}"))
            .get(&entry_key)
            .pttl(&entry_key)
            .query_async(&mut c)
            .await;
        let (generation, stored, pttl) = match answer {
            Ok(a) => a,
            Err(e) => {
                self.redis_failed(&e);
                return Lookup::Miss(Generation(known_gen));
            }
        };
        let generation = generation.unwrap_or(0);
        self.lock().tags.insert(
            tag.to_owned(),
            TagGen {
                generation,
                checked_ms: now,
            },
        );
        // Stored as 8 bytes of generation (big-endian), then the value.
        let value = stored.and_then(|raw| {
            let (head, _) = raw.split_first_chunk::<8>()?;
            (u64::from_be_bytes(*head) == generation).then(|| Bytes::from(raw).slice(8..))
        });
        match value {
            Some(value) => {
                metrics::counter!("ubtc_cache_requests_total", "layer" => "redis", "result" => "hit").increment(1);
                let ttl = if pttl > 0 { pttl } else { self.local_ttl_ms };
                self.put_local(key, generation, value.clone(), ttl, now);
                Lookup::Hit(value)
            }
            None => {
                metrics::counter!("ubtc_cache_requests_total", "layer" => "redis", "result" => "miss").increment(1);
                Lookup::Miss(Generation(generation))
            }
        }
    }

    /// Stores `value` for `ttl` under `generation`, the one returned by the missed
    /// lookup that preceded the computation (values over the size bound are skipped).
    pub async fn put(&self, key: &str, generation: Generation, value: Bytes, ttl: Duration) {
        if value.len() > self.entry_max_bytes {
            return;
        }
        let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        self.put_local(key, generation.0, value.clone(), ttl_ms, Self::now_ms());
        if let Some((mut c, prefix)) = self.redis().await {
            let mut raw = Vec::with_capacity(8 + value.len());
            raw.extend_from_slice(&generation.0.to_be_bytes());
            raw.extend_from_slice(&value);
            let stored: redis::RedisResult<()> = redis::cmd("SET")
                .arg(format!("{prefix}resp:{key}"))
                .arg(raw)
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut c)
                .await;
            if let Err(e) = stored {
                self.redis_failed(&e);
            }
        }
    }

    /// Invalidates every entry stored under `tag`: at once in this process, within
    /// `gen_check_ms` in the others. Tried even during a recent Redis failure (a
    /// missed invalidation serves stale data); a failure is logged, and entries then
    /// live until their time to live.
    pub async fn invalidate(&self, tag: &str) {
        let local_next = {
            let mut local = self.lock();
            let next = local.tags.get(tag).map_or(1, |g| g.generation + 1);
            local.tags.insert(
                tag.to_owned(),
                TagGen {
                    generation: next,
                    checked_ms: Self::now_ms(),
                },
            );
            next
        };
        let Some((conn, prefix)) = &self.redis else {
            return;
        };
        let bumped: Result<u64, String> = match conn.get().await {
            Ok(mut c) => redis::cmd("INCR")
                .arg(format!("{prefix}gen:{tag}"))
                .query_async(&mut c)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match bumped {
            Ok(generation) => {
                let mut local = self.lock();
                // Another invalidation may have raced ahead; keep the larger.
                let current = local.tags.get(tag).map_or(0, |g| g.generation);
                local.tags.insert(
                    tag.to_owned(),
                    TagGen {
                        generation: generation.max(current).max(local_next),
                        checked_ms: Self::now_ms(),
                    },
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, tag, "response cache: invalidation failed in Redis; entries there live until their time to live");
            }
        }
    }

    fn put_local(&self, key: &str, generation: u64, value: Bytes, ttl_ms: i64, now: i64) {
        let mut local = self.lock();
        if local.entries.len() >= self.local_max_entries {
            local.entries.retain(|_, e| e.expires_ms > now);
            while local.entries.len() >= self.local_max_entries {
                let Some(oldest) = local.order.pop_front() else {
                    break;
                };
                local.entries.remove(&oldest);
            }
            let Local { entries, order, .. } = &mut *local;
            order.retain(|k| entries.contains_key(k));
        }
        let entry = Entry {
            expires_ms: now + ttl_ms.min(self.local_ttl_ms),
            generation,
            value,
        };
        if local.entries.insert(key.to_owned(), entry).is_none() {
            local.order.push_back(key.to_owned());
        }
    }
}

/// A new reserve snapshot drops the cached reserve answers, in every process.
#[async_trait::async_trait]
impl ubtc_pipeline::snapshot::ReserveCacheInvalidator for ResponseCache {
    async fn reserves_changed(&self) {
        self.invalidate(ubtc_pipeline::snapshot::RESERVES_CACHE_TAG)
            .await;
    }
}
