//! `reserves.healthy` / `reserves.unhealthy` through the outbox, against a real HTTP
//! receiver inside the test, over the real store on SQLite, with the dev Bitcoin
//! backend and the dev supply: an event once per transition (ratio crossing 1, or
//! figures going stale), never per snapshot; two snapshotters seeing the same
//! transition write one event; each snapshot drops the cached reserve answers.
//!
//! The webhook worker runs with no callback secret (`webhooks.secret` empty):
//! consumers have their own secrets and are delivered all the same.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ubtc_chains::dev::{DevBitcoin, DevChain, DevSupply};
use ubtc_core::{ChainId, Timestamp};
use ubtc_pipeline::snapshot::{
    transition_event, ReserveCacheInvalidator, ReserveSnapshotter, SnapshotConfig,
};
use ubtc_pipeline::webhook::{WebhookConfig, WebhookWorker};
use ubtc_store::{NewReserveAddress, NewWebhookConsumer};

mod common;
use common::{sqlite_store, start_receiver, Receiver};

const CONSUMER_SECRET: &str = "reserves-consumer-secret";
const RESERVE: &str = "bcrt1qreserve";

/// Counts invalidations (the real Redis-backed one is tested in the API's ops tests;
/// this crate cannot depend on `ubtc-limits`, which depends on it).
#[derive(Default)]
struct CountingCache(AtomicU32);

#[async_trait::async_trait]
impl ReserveCacheInvalidator for CountingCache {
    async fn reserves_changed(&self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn health_transitions_are_told_once_each() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (base, rx) = start_receiver(Receiver {
        secrets: [(String::new(), CONSUMER_SECRET.as_bytes().to_vec())].into(),
        ..Default::default()
    })
    .await;
    let url = format!("{base}/hook");

    let (store, _dir) = sqlite_store(2).await;
    store
        .add_webhook_consumer(
            &NewWebhookConsumer {
                url,
                secret: CONSUMER_SECRET.into(),
                events: vec!["reserves.healthy".into(), "reserves.unhealthy".into()],
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
    store
        .add_reserve_address(
            &NewReserveAddress {
                address: RESERVE.into(),
                descriptor: "addr(bcrt1qreserve)".into(),
                kind: "p2wpkh".into(),
                label: None,
            },
            Timestamp::now(),
        )
        .await
        .unwrap();

    let bitcoin = DevBitcoin::new(800_000);
    let dev = DevChain::new(ChainId::parse("dev").unwrap(), "0xpay", 1);
    // 1,000 sats issued, none held yet: under-backed.
    let supply = Arc::new(DevSupply::new(dev, 1_000));
    let cache = Arc::new(CountingCache::default());
    let config = SnapshotConfig {
        tolerance_ppm: 0,
        max_age_ms: 60_000,
        interval_ms: 0,
    };
    let snapshotter = ReserveSnapshotter::new(
        Arc::new(bitcoin.clone()),
        vec![supply.clone()],
        store.clone(),
        config.clone(),
    )
    .with_cache_invalidator(cache.clone());

    // Unhealthy from the first snapshot (none before counts as healthy): told once,
    // however many snapshots repeat it.
    for _ in 0..3 {
        snapshotter.tick(Timestamp::now()).await.unwrap();
    }
    // Backed: told once.
    bitcoin.fund(RESERVE, "0014aa", 1_000);
    for _ in 0..3 {
        snapshotter.tick(Timestamp::now()).await.unwrap();
    }
    // Figures go stale (the tip has not moved for longer than the maximum age): told
    // once as unhealthy, although the ratio is fine.
    let strict = ReserveSnapshotter::new(
        Arc::new(bitcoin.clone()),
        vec![supply.clone()],
        store.clone(),
        SnapshotConfig {
            max_age_ms: 20,
            ..config.clone()
        },
    );
    strict.tick(Timestamp::now()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    for _ in 0..2 {
        let t = strict.tick(Timestamp::now()).await.unwrap();
        assert!(matches!(t, ubtc_pipeline::snapshot::SnapshotTick::Taken(_)));
    }
    let latest = store.latest_reserve_snapshot().await.unwrap().unwrap();
    assert!(latest.stale && !latest.healthy);
    assert_eq!(
        cache.0.load(Ordering::SeqCst),
        6,
        "one invalidation per snapshot"
    );

    // Two snapshotters that both saw the same previous snapshot report the same
    // transition: one event (the second write is a no-op), both snapshots stored.
    let (prev_id, _) = store.latest_reserve_health().await.unwrap().unwrap();
    let mut healthy = latest.clone();
    healthy.healthy = true;
    healthy.stale = false;
    let event = transition_event(Some(prev_id), &healthy);
    let (_, first) = store
        .record_reserve_snapshot_notify(&healthy, Some(&event), Timestamp::now())
        .await
        .unwrap();
    let (_, second) = store
        .record_reserve_snapshot_notify(&healthy, Some(&event), Timestamp::now())
        .await
        .unwrap();
    assert!(first && !second);

    // Delivery with no callback secret configured: consumers sign with their own.
    let worker = WebhookWorker::new(
        store.clone(),
        WebhookConfig {
            allow_private_targets: true,
            timeout: Duration::from_secs(2),
            ..WebhookConfig::new(Vec::new())
        },
    )
    .unwrap();
    for _ in 0..5 {
        worker.tick().await.unwrap();
    }
    let rx = rx.lock().unwrap();
    assert_eq!(rx.bad_signatures, 0);
    let kinds: Vec<&str> = rx.accepted.iter().map(|d| d.event_type.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "reserves.unhealthy",
            "reserves.healthy",
            "reserves.unhealthy",
            "reserves.healthy"
        ]
    );
    let mut ids: Vec<&str> = rx.accepted.iter().map(|d| d.event_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 4, "distinct event ids");
    let stale = &rx.accepted[2].payload;
    assert_eq!(stale["stale"], true);
    assert_eq!(stale["ratio_ppm"], 1_000_000);
    let first = &rx.accepted[0].payload;
    assert_eq!(first["healthy"], false);
    assert_eq!(first["reserve_sats"], 0);
    assert_eq!(first["supply_sats"], 1_000);
}
