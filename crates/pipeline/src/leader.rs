//! Leadership under a named lease in the database, so that each chain's monitor runs
//! in exactly one process at a time however many `ubtc worker`s share the database.
//!
//! A [`Leadership`] acquires its lease, renews it every third of its time to live, and
//! reports whether this process may act now. A process that dies stops renewing; once
//! the lease has expired the next standby to try takes it over (with a larger fencing
//! token). So after a leader dies the monitor is idle for at most the lease time plus
//! one retry interval (a third of it).
//!
//! What this does not give: a hard guarantee that two monitors never overlap. A leader
//! that stalls (a long pause, a clock far off the database's) may finish a tick after
//! its lease expired while the next leader has started. The monitor's writes are safe
//! under that overlap — recording is idempotent on `(chain, tx_hash, index)` and every
//! status change is a guarded transition — so an overlap costs work, never a duplicate
//! or a lost payment. The fencing token is reported (logs, [`Leadership::token`]) but
//! not checked by the monitor's writes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ubtc_core::Timestamp;
use ubtc_store::{Lease, Store};

use crate::monitor::{Monitor, MonitorTick};
use crate::PipelineError;

/// Lease state as last learned from the database.
#[derive(Default)]
struct State {
    /// The lease we hold, if any.
    held: Option<Lease>,
    /// When we last asked the database (acquire or renew).
    last_try: Option<Timestamp>,
}

/// One named lease, held by one `holder` (this process) at a time.
pub struct Leadership {
    store: Arc<dyn Store>,
    name: String,
    holder: String,
    ttl_ms: i64,
    state: Mutex<State>,
}

impl Leadership {
    /// `ttl` is how long the lease lasts after each acquisition or renewal; it is
    /// renewed (or, while another holds it, tried again) every `ttl / 3`.
    pub fn new(store: Arc<dyn Store>, name: String, holder: String, ttl: Duration) -> Self {
        Self {
            store,
            name,
            holder,
            ttl_ms: i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(3),
            state: Mutex::new(State::default()),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    /// The fencing token of the lease we hold, if we hold it.
    pub fn token(&self) -> Option<i64> {
        self.lock().held.map(|l| l.token)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when this process holds the lease now. Asks the database (acquire or
    /// renew, one statement) when a third of the lease time has passed since the last
    /// try; otherwise answers from what it last learned. A lease whose expiry has
    /// passed on our clock is never reported as held, even when the database could
    /// not be reached to renew it.
    pub async fn ensure(&self) -> Result<bool, PipelineError> {
        let now = Timestamp::now();
        let due = {
            let s = self.lock();
            match (s.held, s.last_try) {
                (_, None) => true,
                (_, Some(t)) => now.0.saturating_sub(t.0) >= self.ttl_ms / 3,
            }
        };
        if !due {
            let mut s = self.lock();
            return Ok(match s.held {
                Some(l) if l.expires_at.0 >= now.0 => true,
                Some(_) => {
                    s.held = None;
                    tracing::warn!(lease = %self.name, holder = %self.holder,
                        "lease expired before it could be renewed; stepping down");
                    false
                }
                None => false,
            });
        }
        self.lock().last_try = Some(now);
        let acquired = match self
            .store
            .acquire_lease(&self.name, &self.holder, self.ttl_ms, now)
            .await
        {
            Ok(acquired) => acquired,
            Err(e) => {
                // Keep what we had until its expiry (checked above on the next call);
                // the caller backs off.
                let mut s = self.lock();
                if s.held.is_some_and(|l| l.expires_at.0 < Timestamp::now().0) {
                    s.held = None;
                    tracing::warn!(lease = %self.name, holder = %self.holder,
                        "lease could not be renewed and has expired; stepping down");
                }
                return Err(e.into());
            }
        };
        let mut s = self.lock();
        match (s.held, acquired) {
            (None, Some(l)) => {
                tracing::info!(lease = %self.name, holder = %self.holder, token = l.token,
                    "acquired the lease: now the leader");
                metrics::counter!("ubtc_lease_acquired_total", "lease" => self.name.clone())
                    .increment(1);
            }
            (Some(old), Some(l)) if old.token != l.token => {
                tracing::warn!(lease = %self.name, holder = %self.holder, old_token = old.token,
                    token = l.token, "lease lapsed and was taken back: leader again under a new token");
            }
            (Some(_), None) => {
                tracing::warn!(lease = %self.name, holder = %self.holder,
                    "lost the lease to another holder: stepping down");
            }
            _ => {}
        }
        s.held = acquired;
        metrics::gauge!("ubtc_lease_held", "lease" => self.name.clone())
            .set(if acquired.is_some() { 1.0 } else { 0.0 });
        Ok(acquired.is_some())
    }

    /// Gives the lease up (on shutdown) so a standby takes over without waiting for
    /// it to expire. Errors are logged, not returned: expiry frees it anyway.
    pub async fn release(&self) {
        let held = self.lock().held.take();
        if held.is_none() {
            return;
        }
        match self.store.release_lease(&self.name, &self.holder).await {
            Ok(true) => {
                tracing::info!(lease = %self.name, holder = %self.holder, "released the lease")
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(lease = %self.name, error = %e, "could not release the lease; it will expire")
            }
        }
    }
}

/// A chain monitor that ticks only while this process holds the lease
/// `monitor:<chain>`.
pub struct LeasedMonitor {
    monitor: Arc<Monitor>,
    leadership: Leadership,
}

impl LeasedMonitor {
    /// `holder` names this process (unique among the processes on the database).
    pub fn new(
        monitor: Arc<Monitor>,
        store: Arc<dyn Store>,
        holder: String,
        ttl: Duration,
    ) -> Self {
        let name = format!("monitor:{}", monitor.chain());
        Self {
            monitor,
            leadership: Leadership::new(store, name, holder, ttl),
        }
    }

    pub fn leadership(&self) -> &Leadership {
        &self.leadership
    }

    /// One monitor tick if this process is the leader; an idle tick otherwise.
    pub async fn tick(&self) -> Result<MonitorTick, PipelineError> {
        if self.leadership.ensure().await? {
            self.monitor.tick().await
        } else {
            Ok(MonitorTick::default())
        }
    }

    /// Gives the lease up (call on shutdown).
    pub async fn release(&self) {
        self.leadership.release().await
    }
}
