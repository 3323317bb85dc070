//! `Store::reserve_history` (downsampled reserve ratios) on SQLite and on PostgreSQL
//! (`UBTC_TEST_DATABASE_URL`, default `postgres://root@127.0.0.1:5432/test`, in a
//! schema of its own that is dropped afterwards).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::Arc;

use ubtc_core::{Sats, Timestamp};
use ubtc_store::{HistoryBucket, PgStore, ReserveSnapshot, SqliteStore, Store};

const MINUTE_MS: i64 = 60_000;

fn snapshot(taken_at_ms: i64, ratio_ppm: u64) -> ReserveSnapshot {
    ReserveSnapshot {
        taken_at: Timestamp::from_millis(taken_at_ms),
        bitcoin_height: 800_000 + (taken_at_ms / MINUTE_MS) as u32,
        bitcoin_block_hash: "00".repeat(32),
        reserve_sats: Sats(ratio_ppm),
        supply_sats: Sats(1_000_000),
        ratio_ppm: Some(ratio_ppm),
        healthy: ratio_ppm >= 1_000_000,
        stale: false,
        supply: Vec::new(),
    }
}

async fn history_on(store: Arc<dyn Store>) {
    // Three hours of minute snapshots from a whole hour on; ratio dips in hour 1.
    let start = 1_700_000_000_000 / 86_400_000 * 86_400_000 + 3_600_000;
    for m in 0..180i64 {
        let ratio = if (60..120).contains(&m) {
            990_000 + m as u64
        } else {
            1_000_000 + m as u64
        };
        store
            .record_reserve_snapshot(&snapshot(start + m * MINUTE_MS, ratio))
            .await
            .unwrap();
    }
    let from = Timestamp::from_millis(start);
    let to = Timestamp::from_millis(start + 180 * MINUTE_MS);
    let hours = store
        .reserve_history(from, to, HistoryBucket::Hour, 100)
        .await
        .unwrap();
    assert_eq!(hours.len(), 3);
    for (i, p) in hours.iter().enumerate() {
        let i = i as i64;
        assert_eq!(p.bucket_start.as_millis(), start + i * 3_600_000);
        assert_eq!(p.samples, 60);
        assert_eq!(
            p.last.taken_at.as_millis(),
            start + (i * 60 + 59) * MINUTE_MS
        );
    }
    assert_eq!(
        (hours[1].min_ratio_ppm, hours[1].max_ratio_ppm),
        (Some(990_060), Some(990_119))
    );
    assert!(!hours[1].last.healthy && hours[2].last.healthy);
    // A range cut mid-hour, minute buckets, and the limit.
    let mid = store
        .reserve_history(
            Timestamp::from_millis(start + 30 * MINUTE_MS),
            Timestamp::from_millis(start + 90 * MINUTE_MS),
            HistoryBucket::Hour,
            100,
        )
        .await
        .unwrap();
    assert_eq!(
        mid.iter().map(|p| p.samples).collect::<Vec<_>>(),
        vec![30, 30]
    );
    let minutes = store
        .reserve_history(from, to, HistoryBucket::Minute, 50)
        .await
        .unwrap();
    assert_eq!(minutes.len(), 50);
    assert!(minutes.iter().all(|p| p.samples == 1));
    let days = store
        .reserve_history(from, to, HistoryBucket::Day, 10)
        .await
        .unwrap();
    assert_eq!(days.len(), 1);
    assert_eq!(days[0].samples, 180);
    assert_eq!(days[0].min_ratio_ppm, Some(990_060));
    assert!(store
        .reserve_history(
            to,
            Timestamp::from_millis(to.as_millis() + 1),
            HistoryBucket::Day,
            10
        )
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn reserve_history_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&format!("sqlite:{}", dir.path().join("h.db").display()), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    history_on(Arc::new(store)).await;
}

#[tokio::test]
async fn reserve_history_postgres() {
    let url = std::env::var("UBTC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
    let schema = format!("ubtc_chains_hist_{}", std::process::id());
    let store = match PgStore::connect_in_schema_with(&url, &schema, 4).await {
        Ok(s) => s,
        Err(e) => panic!("PostgreSQL is required at {url} (set UBTC_TEST_DATABASE_URL): {e}"),
    };
    store.migrate().await.unwrap();
    let store = Arc::new(store);
    history_on(store.clone()).await;
    store.drop_schema(&schema).await.unwrap();
}
