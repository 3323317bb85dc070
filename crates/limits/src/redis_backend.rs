//! GCRA in Redis: one Lua script per decision, so that concurrent processes never
//! both take the last unit, and a request charged to several buckets is charged to
//! all of them or to none.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::{Bucket, Decision, Grant, LimitError, Limiter, Mode};

/// How long one Redis round trip (or connection attempt) may take before the call
/// fails and the caller falls back: rate limiting must never stall the service.
pub const REDIS_TIMEOUT_MS_DEFAULT: u64 = 250;

/// KEYS: the buckets' keys. ARGV: now (ms), mode (1 reserve, 0 try now), then per
/// key its emission interval and tolerance (ms). Returns {charged (0/1), at (ms)}.
/// Mirrors `gcra::decide`; the caller's clock is used (not Redis' TIME) so that
/// decisions are reproducible and every backend agrees on the same `now`.
const GCRA_LUA: &str = r#"
local now = tonumber(ARGV[1])
local reserve = ARGV[2] == '1'
local tats = {}
local at = now
for i = 1, #KEYS do
  local tat = tonumber(redis.call('GET', KEYS[i]) or now) or now
  if tat < now then tat = now end
  tats[i] = tat
  local allow = tat - tonumber(ARGV[2 + 2 * i])
  if allow > at then at = allow end
end
if at > now and not reserve then
  return {'0', string.format('%d', at)}
end
for i = 1, #KEYS do
  local nxt = tats[i] + tonumber(ARGV[1 + 2 * i])
  -- The key means nothing once its TAT has passed: let Redis forget it then.
  redis.call('SET', KEYS[i], string.format('%d', nxt), 'PX', string.format('%d', nxt - now + 1000))
end
return {'1', string.format('%d', at)}
"#;

/// KEYS: one bucket. ARGV: now (ms), emission interval, tolerance (ms), units wanted.
/// Returns {units granted, at (ms)}: the units free now (at most the wanted number),
/// charged together, or {0, when the next unit frees}. Mirrors `gcra::lease`.
const LEASE_LUA: &str = r#"
local now = tonumber(ARGV[1])
local emission = tonumber(ARGV[2])
local tol = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]) or now) or now
if tat < now then tat = now end
local n = math.floor((now + tol - tat) / emission) + 1
if n > want then n = want end
if n < 1 then
  return {'0', string.format('%d', tat - tol)}
end
local nxt = tat + n * emission
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', string.format('%d', nxt - now + 1000))
return {string.format('%d', n), string.format('%d', now)}
"#;

/// Rate limits shared by every process through one Redis.
///
/// Connects lazily (and reconnects by itself), so a process starts even when Redis
/// is away; calls then fail with [`LimitError::Unavailable`] within the timeout.
pub struct RedisLimiter {
    conn: LazyConnection,
    prefix: String,
    timeout: Duration,
    script: redis::Script,
    lease_script: redis::Script,
}

/// A Redis connection made on first use and then kept (the manager reconnects by
/// itself). A failed first connection is retried by the next call.
pub(crate) struct LazyConnection {
    client: redis::Client,
    timeout: Duration,
    conn: OnceCell<ConnectionManager>,
}

impl LazyConnection {
    pub(crate) fn new(url: &str, timeout: Duration) -> Result<Self, LimitError> {
        Ok(Self {
            client: redis::Client::open(url).map_err(LimitError::Unavailable)?,
            timeout,
            conn: OnceCell::new(),
        })
    }

    pub(crate) async fn get(&self) -> Result<ConnectionManager, LimitError> {
        let conn = self
            .conn
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .map_err(LimitError::Unavailable)?;
        Ok(conn.clone())
    }
}

impl RedisLimiter {
    /// `url`: `redis://host:port/db`. `prefix` is put before every key, so several
    /// deployments (or tests) can share one Redis.
    pub fn new(
        url: &str,
        prefix: impl Into<String>,
        timeout: Duration,
    ) -> Result<Self, LimitError> {
        Ok(Self {
            conn: LazyConnection::new(url, timeout)?,
            prefix: prefix.into(),
            timeout,
            script: redis::Script::new(GCRA_LUA),
            lease_script: redis::Script::new(LEASE_LUA),
        })
    }
}

#[async_trait]
impl Limiter for RedisLimiter {
    async fn acquire(
        &self,
        buckets: &[Bucket],
        now_ms: i64,
        mode: Mode,
    ) -> Result<Decision, LimitError> {
        if buckets.is_empty() {
            return Err(LimitError::NoBuckets);
        }
        let mut conn = self.conn.get().await?;
        let mut call = self.script.prepare_invoke();
        for b in buckets {
            call.key(format!("{}{}", self.prefix, b.key));
        }
        call.arg(now_ms)
            .arg(if mode == Mode::Reserve { 1 } else { 0 });
        for b in buckets {
            call.arg(b.rate.emission_ms).arg(b.rate.tolerance_ms());
        }
        // The manager's response timeout bounds each command; this bounds the
        // EVALSHA-then-SCRIPT LOAD pair as a whole.
        let answer: Vec<String> =
            tokio::time::timeout(self.timeout * 3, call.invoke_async(&mut conn))
                .await
                .map_err(|_| LimitError::Timeout(self.timeout.as_millis() as u64 * 3))?
                .map_err(LimitError::Unavailable)?;
        let [charged, at] = answer.as_slice() else {
            return Err(LimitError::Protocol(format!("{answer:?}")));
        };
        let at_ms = at
            .parse::<i64>()
            .map_err(|_| LimitError::Protocol(format!("at = {at:?}")))?;
        Ok(Decision {
            at_ms,
            charged: charged == "1",
        })
    }

    async fn lease(&self, bucket: &Bucket, now_ms: i64, want: u32) -> Result<Grant, LimitError> {
        let mut conn = self.conn.get().await?;
        let mut call = self.lease_script.prepare_invoke();
        call.key(format!("{}{}", self.prefix, bucket.key))
            .arg(now_ms)
            .arg(bucket.rate.emission_ms.max(1))
            .arg(bucket.rate.tolerance_ms())
            .arg(want.max(1));
        let answer: Vec<String> =
            tokio::time::timeout(self.timeout * 3, call.invoke_async(&mut conn))
                .await
                .map_err(|_| LimitError::Timeout(self.timeout.as_millis() as u64 * 3))?
                .map_err(LimitError::Unavailable)?;
        let [units, at] = answer.as_slice() else {
            return Err(LimitError::Protocol(format!("{answer:?}")));
        };
        Ok(Grant {
            units: units
                .parse()
                .map_err(|_| LimitError::Protocol(format!("units = {units:?}")))?,
            at_ms: at
                .parse()
                .map_err(|_| LimitError::Protocol(format!("at = {at:?}")))?,
        })
    }
}
