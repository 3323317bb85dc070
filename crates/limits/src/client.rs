//! Limits on API clients: per IP address and per API key. Refuse, never queue.
//!
//! Asking Redis once per request would cost every request a round trip. Instead each
//! process *leases* units of a client's bucket from the shared limiter (one atomic
//! script call charges a small batch) and spends them locally, asking again when they
//! run out. Leases grow with use: a client's first lease is one unit, and each lease
//! spent before it expires doubles the next one, up to `lease_max_units`. So a client
//! seen once costs one unit, exactly as without leasing, and a busy client costs one
//! round trip per `lease_max_units` requests.
//!
//! What leasing changes, per bucket and per process:
//! - never more passes than the shared bucket allows at the time of leasing (units
//!   are only leased when free now);
//! - but leased units are spent later than they were charged: a process can pass up
//!   to `lease_max_units - 1` units above the burst, at most once per lease lifetime
//!   (`lease_ttl_ms`, default 1 s), after which an unspent lease is dropped;
//! - a dropped lease is lost, not returned, and units leased by one process cannot be
//!   spent by another: a client spread over several processes close to its limit may
//!   be refused up to `lease_max_units - 1` units early in each.
//!
//! With `lease_max_units = 1` every request asks the shared limiter: exact limits.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{Bucket, Limiter, Mode, Rate};

/// Largest lease (units) a process takes of one client's bucket.
pub const LEASE_MAX_UNITS_DEFAULT: u32 = 32;
/// An unspent lease is dropped after this long, which bounds how late a leased unit
/// can be spent.
pub const LEASE_TTL_MS_DEFAULT: i64 = 1_000;
/// Local leases kept before expired ones are swept (a flood of distinct client IPs).
const SWEEP_AT_ENTRIES: usize = 100_000;
/// Rounds of "lease what is missing, then take" before giving up on a request whose
/// fresh units concurrent requests of the same client keep taking first.
const LEASE_ROUNDS_MAX: usize = 4;

/// Who an API request is charged to.
#[derive(Clone, Copy, Debug)]
pub enum Client<'a> {
    Ip(IpAddr),
    /// A digest of the API key (never the key itself: it would sit in Redis).
    KeyDigest(&'a str),
}

/// Units of one bucket this process holds.
#[derive(Clone, Copy, Debug)]
struct Lease {
    units: u32,
    expires_ms: i64,
    /// Size of the next lease: doubles when a lease is spent in time, back to 1 when
    /// one expires unspent.
    next_units: u32,
}

#[derive(Default)]
struct Leases {
    ips: HashMap<IpAddr, Lease>,
    keys: HashMap<String, Lease>,
}

impl Leases {
    fn get_mut(&mut self, client: &Client<'_>) -> Option<&mut Lease> {
        match client {
            Client::Ip(ip) => self.ips.get_mut(ip),
            Client::KeyDigest(d) => self.keys.get_mut(*d),
        }
    }

    /// Units in hand now (an expired lease holds none).
    fn available(&self, client: &Client<'_>, now_ms: i64) -> u32 {
        let lease = match client {
            Client::Ip(ip) => self.ips.get(ip),
            Client::KeyDigest(d) => self.keys.get(*d),
        };
        lease.map_or(0, |l| if l.expires_ms > now_ms { l.units } else { 0 })
    }

    /// How many units to ask for when `client` has none in hand.
    fn want(&self, client: &Client<'_>, now_ms: i64, max_units: u32) -> u32 {
        let lease = match client {
            Client::Ip(ip) => self.ips.get(ip),
            Client::KeyDigest(d) => self.keys.get(*d),
        };
        match lease {
            // Spent before it expired: the client is busy, lease more.
            Some(l) if l.expires_ms > now_ms => l.next_units,
            Some(l) if l.units == 0 => l.next_units,
            _ => 1,
        }
        .clamp(1, max_units)
    }

    fn add(&mut self, client: &Client<'_>, units: u32, asked: u32, now_ms: i64, ttl_ms: i64) {
        fn put<K: Eq + Hash>(map: &mut HashMap<K, Lease>, key: K, lease: Lease) {
            map.insert(key, lease);
        }
        let held = self.available(client, now_ms);
        let lease = Lease {
            units: held + units,
            expires_ms: now_ms + ttl_ms,
            next_units: asked.saturating_mul(2),
        };
        match client {
            Client::Ip(ip) => put(&mut self.ips, *ip, lease),
            Client::KeyDigest(d) => put(&mut self.keys, (*d).to_owned(), lease),
        }
    }

    fn sweep(&mut self, now_ms: i64) {
        if self.ips.len() + self.keys.len() >= SWEEP_AT_ENTRIES {
            self.ips.retain(|_, l| l.expires_ms > now_ms);
            self.keys.retain(|_, l| l.expires_ms > now_ms);
        }
    }

    /// Takes one unit from every client if each has one in hand; else takes nothing.
    fn take_all(&mut self, clients: &[Client<'_>], now_ms: i64) -> bool {
        if clients.iter().any(|c| self.available(c, now_ms) == 0) {
            return false;
        }
        for c in clients {
            if let Some(l) = self.get_mut(c) {
                l.units -= 1;
            }
        }
        true
    }
}

/// Limits per client IP and per API key, refusing (never queueing). Units are leased
/// from the shared limiter in batches that grow with use (1, 2, 4, … up to
/// `lease_max_units`) and live `lease_ttl_ms`: per bucket and process, at most
/// `lease_max_units - 1` units above the burst within a lease's lifetime, and up to as
/// many refused early when a client is spread over processes near its limit.
pub struct ClientLimits {
    limiter: Arc<dyn Limiter>,
    per_ip: Rate,
    per_key: Rate,
    lease_max_units: u32,
    lease_ttl_ms: i64,
    leases: Mutex<Leases>,
}

impl ClientLimits {
    pub fn new(limiter: Arc<dyn Limiter>, per_ip: Rate, per_key: Rate) -> Self {
        Self {
            limiter,
            per_ip,
            per_key,
            lease_max_units: LEASE_MAX_UNITS_DEFAULT,
            lease_ttl_ms: LEASE_TTL_MS_DEFAULT,
            leases: Mutex::new(Leases::default()),
        }
    }

    /// Largest lease and its lifetime (see the module docs for what they bound).
    /// `max_units = 1` asks the shared limiter for every request.
    pub fn with_leases(mut self, max_units: u32, ttl: Duration) -> Self {
        self.lease_max_units = max_units.max(1);
        self.lease_ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
        self
    }

    fn bucket(&self, client: &Client<'_>) -> Bucket {
        match client {
            Client::Ip(ip) => Bucket::new(format!("api:ip:{ip}"), self.per_ip),
            Client::KeyDigest(d) => Bucket::new(format!("api:key:{d}"), self.per_key),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Leases> {
        // A poisoned lock only means a panic mid-update of plain integers.
        self.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one unit from each client's bucket if all have one now; otherwise
    /// charges nothing (units already leased stay in this process) and says how long
    /// to wait. A limiter error lets the request through (logged): only a bare Redis
    /// limiter without fallback can fail, and the API must not go down with it.
    pub async fn try_acquire(&self, clients: &[Client<'_>], now_ms: i64) -> Result<(), Duration> {
        if clients.is_empty() {
            return Ok(());
        }
        if self.lease_max_units <= 1 {
            return self.acquire_exact(clients, now_ms).await;
        }
        for _ in 0..LEASE_ROUNDS_MAX {
            let missing: Vec<(Client<'_>, u32)> = {
                let mut leases = self.lock();
                if leases.take_all(clients, now_ms) {
                    return Ok(());
                }
                leases.sweep(now_ms);
                clients
                    .iter()
                    .filter(|c| leases.available(c, now_ms) == 0)
                    .map(|c| (*c, leases.want(c, now_ms, self.lease_max_units)))
                    .collect()
            };
            for (client, want) in missing {
                let grant = match self
                    .limiter
                    .lease(&self.bucket(&client), now_ms, want)
                    .await
                {
                    Ok(grant) => grant,
                    Err(err) => {
                        tracing::warn!(error = %err, "API rate limiter failed; request let through");
                        return Ok(());
                    }
                };
                if grant.units == 0 {
                    return Err(Duration::from_millis(
                        (grant.at_ms - now_ms).max(1).unsigned_abs(),
                    ));
                }
                self.lock()
                    .add(&client, grant.units, want, now_ms, self.lease_ttl_ms);
            }
        }
        // Concurrent requests of the same client took every fresh unit first: that
        // client is as busy as its leases, so wait for the next one.
        Err(Duration::from_millis(1))
    }

    async fn acquire_exact(&self, clients: &[Client<'_>], now_ms: i64) -> Result<(), Duration> {
        let buckets: Vec<Bucket> = clients.iter().map(|c| self.bucket(c)).collect();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryLimiter;

    fn limits(max_units: u32) -> ClientLimits {
        ClientLimits::new(
            Arc::new(MemoryLimiter::new()),
            Rate {
                emission_ms: 100,
                burst: 10,
            },
            Rate {
                emission_ms: 100,
                burst: 4,
            },
        )
        .with_leases(max_units, Duration::from_millis(1_000))
    }

    #[tokio::test]
    async fn one_process_passes_exactly_the_burst_with_leases() {
        let ip = Client::Ip([10, 0, 0, 1].into());
        for max_units in [1, 2, 8, 32] {
            let l = limits(max_units);
            let mut passed = 0;
            while l.try_acquire(&[ip], 5_000).await.is_ok() {
                passed += 1;
                assert!(passed <= 10, "max_units {max_units}: more than the burst");
            }
            assert_eq!(passed, 10, "max_units {max_units}");
            // 250 ms later, 2.5 units came back: two pass.
            let mut later = 0;
            while l.try_acquire(&[ip], 5_250).await.is_ok() {
                later += 1;
            }
            assert_eq!(later, 2, "max_units {max_units}");
        }
    }

    #[tokio::test]
    async fn a_refusal_charges_no_other_bucket() {
        let l = limits(32);
        let ip = Client::Ip([10, 0, 0, 2].into());
        let key = Client::KeyDigest("abc");
        let mut passed = 0;
        while l.try_acquire(&[ip, key], 0).await.is_ok() {
            passed += 1;
        }
        // The key's burst (4) stopped it; the IP alone still has its other 6.
        assert_eq!(passed, 4);
        let mut ip_only = 0;
        while l.try_acquire(&[ip], 0).await.is_ok() {
            ip_only += 1;
        }
        assert_eq!(ip_only, 6);
        let wait = l.try_acquire(&[ip], 0).await.err();
        assert_eq!(wait, Some(Duration::from_millis(100)));
    }

    #[tokio::test]
    async fn leases_grow_with_use_and_expire() {
        let l = limits(8);
        let ip = Client::Ip([10, 0, 0, 3].into());
        // First request leases one unit, the next two, then four.
        assert!(l.try_acquire(&[ip], 0).await.is_ok());
        assert_eq!(l.lock().available(&ip, 0), 0);
        assert!(l.try_acquire(&[ip], 0).await.is_ok());
        assert_eq!(l.lock().available(&ip, 0), 1);
        // After its lifetime the unspent unit is gone.
        assert_eq!(l.lock().available(&ip, 1_001), 0);
    }
}
