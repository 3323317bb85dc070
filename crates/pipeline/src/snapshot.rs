//! Reserve snapshots: BTC held in the reserve addresses at a Bitcoin height, token
//! supply on each chain at a named block, the ratio between them, and whether the
//! figures are healthy and fresh. Stored as a time series through
//! [`Store::record_reserve_snapshot`].
//!
//! [`ReserveSnapshotter::tick`] is the step: it takes a snapshot when the Bitcoin tip
//! moved or the interval passed, and otherwise does nothing.

use std::sync::{Arc, Mutex};

use ubtc_chains::{BitcoinBackend, ChainError, SupplySource};
use ubtc_core::bundle::{ReserveFigures, SupplyEntry};
use ubtc_core::{BlockStamp, Sats, Timestamp};
use ubtc_store::{NewOutboxEvent, ReserveAddressBalance, ReserveSnapshot, Store};

use crate::{PipelineError, StepOutcome};

/// A ratio of exactly 1, in parts per million.
pub const RATIO_ONE_PPM: u64 = 1_000_000;

#[derive(Clone, Debug)]
pub struct SnapshotConfig {
    /// Healthy while `ratio_ppm >= 1_000_000 - tolerance_ppm`.
    pub tolerance_ppm: u64,
    /// A snapshot whose oldest input is older than this is stale (and so not healthy).
    pub max_age_ms: i64,
    /// Take a snapshot at least this often, even when the Bitcoin tip did not move.
    pub interval_ms: i64,
}

impl Default for SnapshotConfig {
    fn default() -> Self {
        Self {
            tolerance_ppm: 0,
            // Two hours: Bitcoin blocks an hour apart are common; beyond that either
            // the backend or a chain node is stuck.
            max_age_ms: 2 * 60 * 60 * 1000,
            interval_ms: 5 * 60 * 1000,
        }
    }
}

/// What one tick did.
#[derive(Clone, Debug)]
pub enum SnapshotTick {
    Taken(Box<ReserveSnapshot>),
    /// Same Bitcoin tip and the interval has not passed.
    Skipped,
}

impl StepOutcome for SnapshotTick {
    fn is_idle(&self) -> bool {
        matches!(self, SnapshotTick::Skipped)
    }
}

/// The figures of a snapshot from its inputs. Pure, so the rules are tested alone.
///
/// `bitcoin_as_of` is when the Bitcoin tip `tip` was first seen; each supply entry
/// carries its block's time. Supply converts to satoshis rounding down, which is
/// exact for the 8-decimal token.
pub fn compute_figures(
    tip: &BlockStamp,
    bitcoin_as_of: Timestamp,
    reserve_sats: Sats,
    supply: &[SupplyEntry],
    config: &SnapshotConfig,
    now: Timestamp,
) -> Result<ReserveFigures, ChainError> {
    let mut supply_sats: u64 = 0;
    let mut oldest = bitcoin_as_of;
    for entry in supply {
        let sats = entry.supply.to_sats_floor().ok_or_else(|| {
            ChainError::BadResponse(format!("{} supply does not fit in satoshis", entry.chain))
        })?;
        supply_sats = supply_sats
            .checked_add(sats.0)
            .ok_or_else(|| ChainError::BadResponse("total supply overflows".into()))?;
        oldest = oldest.min(entry.as_of);
    }
    let ratio_ppm = (supply_sats > 0).then(|| {
        let ppm = u128::from(reserve_sats.0) * u128::from(RATIO_ONE_PPM) / u128::from(supply_sats);
        u64::try_from(ppm).unwrap_or(u64::MAX)
    });
    let stale = now.as_millis().saturating_sub(oldest.as_millis()) > config.max_age_ms;
    let backed = match ratio_ppm {
        Some(ppm) => ppm >= RATIO_ONE_PPM.saturating_sub(config.tolerance_ppm),
        None => true, // nothing issued: trivially backed
    };
    Ok(ReserveFigures {
        bitcoin_height: tip.height,
        bitcoin_block_hash: tip.hash.clone(),
        reserve_sats,
        supply_sats: Sats(supply_sats),
        ratio_ppm,
        healthy: backed && !stale,
        stale,
        as_of: oldest,
    })
}

/// Told after each stored snapshot, so cached reserve answers are dropped at once
/// rather than at the end of their time to live. Must not fail (a cache that cannot
/// be reached only serves until its time to live).
#[async_trait::async_trait]
pub trait ReserveCacheInvalidator: Send + Sync + 'static {
    async fn reserves_changed(&self);
}

/// The cache tag of the reserve answers (`GET /v1/reserves`, `/v1/reserves/history`).
pub const RESERVES_CACHE_TAG: &str = "reserves";

/// The `reserves.healthy` / `reserves.unhealthy` event for `snapshot`, which follows
/// the snapshot `previous_id` (None: the first). Its id is derived from
/// `previous_id`: two snapshotters that both see the same transition from it write
/// one event.
pub fn transition_event(previous_id: Option<i64>, snapshot: &ReserveSnapshot) -> NewOutboxEvent {
    let event_type = if snapshot.healthy {
        "reserves.healthy"
    } else {
        "reserves.unhealthy"
    };
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(b"ubtc-rsv");
    id[8..].copy_from_slice(&previous_id.unwrap_or(-1).to_be_bytes());
    let event_id = uuid::Builder::from_random_bytes(id).into_uuid();
    NewOutboxEvent {
        event_id,
        event_type: event_type.to_owned(),
        payload_json: serde_json::json!({
            "type": event_type,
            "healthy": snapshot.healthy,
            "stale": snapshot.stale,
            "ratio_ppm": snapshot.ratio_ppm,
            "reserve_sats": snapshot.reserve_sats.0,
            "supply_sats": snapshot.supply_sats.0,
            "bitcoin_height": snapshot.bitcoin_height,
            "bitcoin_block_hash": snapshot.bitcoin_block_hash,
            "taken_at": snapshot.taken_at,
        })
        .to_string(),
        target_url: None,
    }
}

struct Seen {
    tip: BlockStamp,
    first_seen: Timestamp,
    last_snapshot: Option<Timestamp>,
}

/// Takes reserve snapshots. One per process is enough; two only write more rows.
pub struct ReserveSnapshotter {
    bitcoin: Arc<dyn BitcoinBackend>,
    supplies: Vec<Arc<dyn SupplySource>>,
    store: Arc<dyn Store>,
    config: SnapshotConfig,
    seen: Mutex<Option<Seen>>,
    cache: Option<Arc<dyn ReserveCacheInvalidator>>,
}

impl ReserveSnapshotter {
    pub fn new(
        bitcoin: Arc<dyn BitcoinBackend>,
        supplies: Vec<Arc<dyn SupplySource>>,
        store: Arc<dyn Store>,
        config: SnapshotConfig,
    ) -> Self {
        Self {
            bitcoin,
            supplies,
            store,
            config,
            seen: Mutex::new(None),
            cache: None,
        }
    }

    /// Drops cached reserve answers after each snapshot.
    pub fn with_cache_invalidator(mut self, cache: Arc<dyn ReserveCacheInvalidator>) -> Self {
        self.cache = Some(cache);
        self
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Option<Seen>> {
        // Plain data behind the lock: a panic elsewhere leaves it usable.
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a snapshot when the Bitcoin tip changed or `interval_ms` passed since the
    /// last one.
    pub async fn tick(&self, now: Timestamp) -> Result<SnapshotTick, PipelineError> {
        let tip = self.bitcoin.tip().await?;
        {
            let mut seen = self.seen();
            let moved = seen.as_ref().is_none_or(|s| s.tip != tip);
            if moved {
                let last_snapshot = seen.as_ref().and_then(|s| s.last_snapshot);
                *seen = Some(Seen {
                    tip: tip.clone(),
                    first_seen: now,
                    last_snapshot,
                });
            } else if seen
                .as_ref()
                .and_then(|s| s.last_snapshot)
                .is_some_and(|t| now.as_millis() - t.as_millis() < self.config.interval_ms)
            {
                return Ok(SnapshotTick::Skipped);
            }
        }
        let snapshot = self.take_at(&tip, now).await?;
        Ok(SnapshotTick::Taken(Box::new(snapshot)))
    }

    /// Takes and stores a snapshot at the Bitcoin tip `tip` now.
    async fn take_at(
        &self,
        tip: &BlockStamp,
        now: Timestamp,
    ) -> Result<ReserveSnapshot, PipelineError> {
        let mut reserve: u64 = 0;
        let mut balances = Vec::new();
        for address in self.store.list_reserve_addresses().await? {
            let utxos = self.bitcoin.address_utxos(&address.address).await?;
            let mut balance: u64 = 0;
            for utxo in &utxos {
                balance = balance
                    .checked_add(utxo.amount_sats)
                    .ok_or_else(|| ChainError::BadResponse("address balance overflows".into()))?;
            }
            reserve = reserve
                .checked_add(balance)
                .ok_or_else(|| ChainError::BadResponse("reserve total overflows".into()))?;
            balances.push(ReserveAddressBalance {
                descriptor: (!address.descriptor.is_empty()).then(|| address.descriptor.clone()),
                address: address.address,
                balance_sats: Sats(balance),
                utxos: utxos.len() as u64,
            });
        }
        let mut supply = Vec::with_capacity(self.supplies.len());
        for source in &self.supplies {
            supply.push(source.supply_at(None).await?);
        }
        let bitcoin_as_of = self
            .seen()
            .as_ref()
            .filter(|s| &s.tip == tip)
            .map_or(now, |s| s.first_seen);
        let figures = compute_figures(
            tip,
            bitcoin_as_of,
            Sats(reserve),
            &supply,
            &self.config,
            now,
        )?;
        let snapshot = ReserveSnapshot {
            taken_at: now,
            bitcoin_height: figures.bitcoin_height,
            bitcoin_block_hash: figures.bitcoin_block_hash,
            reserve_sats: figures.reserve_sats,
            supply_sats: figures.supply_sats,
            ratio_ppm: figures.ratio_ppm,
            healthy: figures.healthy,
            stale: figures.stale,
            supply,
        };
        // A change of health (ratio crossing 1 within the tolerance, or figures going
        // stale) is told once, through the outbox, in the snapshot's transaction. No
        // previous snapshot counts as healthy: a first unhealthy one is told.
        // Per-address balances first: whoever reads the newest snapshot then finds
        // its balances (they sum to `reserve_sats`).
        self.store
            .record_reserve_address_balances(
                snapshot.bitcoin_height,
                &snapshot.bitcoin_block_hash,
                &balances,
                now,
            )
            .await?;
        let previous = self.store.latest_reserve_health().await?;
        let was_healthy = previous.is_none_or(|(_, healthy)| healthy);
        let event = (was_healthy != snapshot.healthy)
            .then(|| transition_event(previous.map(|(id, _)| id), &snapshot));
        let (_, told) = self
            .store
            .record_reserve_snapshot_notify(&snapshot, event.as_ref(), now)
            .await?;
        if told {
            if let Some(e) = &event {
                tracing::warn!(event = %e.event_type, event_id = %e.event_id, "reserve health changed");
            }
        }
        if let Some(cache) = &self.cache {
            cache.reserves_changed().await;
        }
        if let Some(s) = self.seen().as_mut() {
            s.last_snapshot = Some(now);
        }
        tracing::info!(
            bitcoin_height = snapshot.bitcoin_height,
            reserve_sats = snapshot.reserve_sats.0,
            supply_sats = snapshot.supply_sats.0,
            ratio_ppm = ?snapshot.ratio_ppm,
            healthy = snapshot.healthy,
            stale = snapshot.stale,
            "reserve snapshot"
        );
        Ok(snapshot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ubtc_core::{ChainId, TokenAmount};

    fn entry(chain: &str, sats: u128, as_of_ms: i64) -> SupplyEntry {
        SupplyEntry {
            chain: ChainId::parse(chain).unwrap(),
            token: "0xtoken".into(),
            block_number: 10,
            block_hash: "0xabc".into(),
            supply: TokenAmount::new(sats, 8),
            as_of: Timestamp::from_millis(as_of_ms),
        }
    }

    fn tip() -> BlockStamp {
        BlockStamp {
            height: 800_000,
            hash: "00".repeat(32),
        }
    }

    #[test]
    fn ratio_health_and_staleness() {
        let config = SnapshotConfig {
            tolerance_ppm: 1_000,
            max_age_ms: 60_000,
            interval_ms: 1,
        };
        let now = Timestamp::from_millis(1_000_000);
        let supply = [
            entry("ethereum", 600, 990_000),
            entry("polygon", 400, 995_000),
        ];
        let f = compute_figures(&tip(), now, Sats(1_000), &supply, &config, now).unwrap();
        assert_eq!((f.supply_sats, f.ratio_ppm), (Sats(1_000), Some(1_000_000)));
        assert!(f.healthy && !f.stale);
        assert_eq!(f.as_of, Timestamp::from_millis(990_000));
        // Within tolerance (0.1 %), then below it.
        let f = compute_figures(&tip(), now, Sats(999), &supply, &config, now).unwrap();
        assert_eq!(f.ratio_ppm, Some(999_000));
        assert!(f.healthy);
        let f = compute_figures(&tip(), now, Sats(998), &supply, &config, now).unwrap();
        assert!(!f.healthy && !f.stale);
        // A supply figure older than the maximum age: stale, so not healthy.
        let old = [entry("ethereum", 600, 900_000)];
        let f = compute_figures(&tip(), now, Sats(10_000), &old, &config, now).unwrap();
        assert!(f.stale && !f.healthy);
        // Nothing issued: no ratio, backed.
        let f = compute_figures(&tip(), now, Sats(0), &[], &config, now).unwrap();
        assert_eq!(f.ratio_ppm, None);
        assert!(f.healthy);
    }
}
