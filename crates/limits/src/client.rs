//! Limits on API clients: per IP address and per API key. Refuse, never queue.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::{Bucket, Limiter, Mode, Rate};

/// Who an API request is charged to.
#[derive(Clone, Copy, Debug)]
pub enum Client<'a> {
    Ip(IpAddr),
    /// A digest of the API key (never the key itself: it would sit in Redis).
    KeyDigest(&'a str),
}

pub struct ClientLimits {
    limiter: Arc<dyn Limiter>,
    per_ip: Rate,
    per_key: Rate,
}

impl ClientLimits {
    pub fn new(limiter: Arc<dyn Limiter>, per_ip: Rate, per_key: Rate) -> Self {
        Self {
            limiter,
            per_ip,
            per_key,
        }
    }

    /// Takes one unit from each client's bucket if all have one now; otherwise
    /// charges nothing and says how long to wait. A limiter error lets the request
    /// through (logged): only a bare Redis limiter without fallback can fail, and the
    /// API must not go down with it.
    pub async fn try_acquire(&self, clients: &[Client<'_>], now_ms: i64) -> Result<(), Duration> {
        let buckets: Vec<Bucket> = clients
            .iter()
            .map(|c| match c {
                Client::Ip(ip) => Bucket::new(format!("api:ip:{ip}"), self.per_ip),
                Client::KeyDigest(d) => Bucket::new(format!("api:key:{d}"), self.per_key),
            })
            .collect();
        if buckets.is_empty() {
            return Ok(());
        }
        match self.limiter.acquire(&buckets, now_ms, Mode::TryNow).await {
            Ok(d) if d.charged => Ok(()),
            Ok(d) => Err(Duration::from_millis(d.wait_ms(now_ms).unsigned_abs())),
            Err(err) => {
                tracing::warn!(error = %err, "API rate limiter failed; request let through");
                Ok(())
            }
        }
    }
}
