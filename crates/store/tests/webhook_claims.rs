//! Conformance of webhook claims (migration 0006): written once against `&dyn Store`
//! and run on SQLite (a fresh temporary file) and on PostgreSQL (a fresh schema on the
//! server at `UBTC_TEST_DATABASE_URL`, default `postgres://root@127.0.0.1:5432/test`,
//! dropped afterwards). Two workers never hold the same outbox row or consumer
//! delivery; recording an attempt ends a claim; a claim that is not ended expires;
//! concurrent claimers split the due rows without overlap. Also the reserve
//! transition event: written once per event id.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use ubtc_core::{Sats, Timestamp};
use ubtc_store::*;

mod common;
use common::on_both_backends;

const T0: Timestamp = Timestamp(1_700_000_000_000);

on_both_backends!(
    a_claimed_row_is_not_claimed_again_until_recorded_or_expired,
    concurrent_claimers_split_the_rows,
    consumer_deliveries_are_claimed_once,
    a_transition_event_is_written_once,
);

fn snapshot(at: Timestamp) -> ReserveSnapshot {
    ReserveSnapshot {
        taken_at: at,
        bitcoin_height: 800_000,
        bitcoin_block_hash: "00".repeat(32),
        reserve_sats: Sats(1),
        supply_sats: Sats(2),
        ratio_ppm: Some(500_000),
        healthy: false,
        stale: false,
        supply: vec![],
    }
}

/// `n` outbox rows of no validation, due at `T0`, through the only writer of such
/// rows (a snapshot with its transition event).
async fn events(store: &dyn Store, n: usize) -> Vec<uuid::Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = uuid::Uuid::now_v7();
        let event = NewOutboxEvent {
            event_id: id,
            event_type: "reserves.unhealthy".into(),
            payload_json: format!("{{\"n\":{i}}}"),
            target_url: Some("http://receiver.example/hook".into()),
        };
        let (_, written) = store
            .record_reserve_snapshot_notify(&snapshot(T0), Some(&event), T0)
            .await
            .unwrap();
        assert!(written);
        ids.push(id);
    }
    ids
}

async fn a_claimed_row_is_not_claimed_again_until_recorded_or_expired(store: Arc<dyn Store>) {
    let ids = events(&*store, 3).await;
    let a = store
        .claim_due_outbox(T0, T0.plus_millis(1_000), 10)
        .await
        .unwrap();
    assert_eq!(a.iter().map(|e| e.event_id).collect::<Vec<_>>(), ids);
    let b = store
        .claim_due_outbox(T0, T0.plus_millis(1_000), 10)
        .await
        .unwrap();
    assert!(b.is_empty(), "claimed by a: {b:?}");
    // A retry recorded by a ends its claim: due again at its next attempt, while the
    // others stay claimed.
    let retry_at = T0.plus_millis(10);
    assert!(store
        .record_outbox_attempt(
            ids[0],
            &OutboxOutcome::Retry {
                next_attempt_at: retry_at,
                error: "503".into()
            },
            T0
        )
        .await
        .unwrap());
    let b = store
        .claim_due_outbox(retry_at, retry_at.plus_millis(1_000), 10)
        .await
        .unwrap();
    assert_eq!(b.iter().map(|e| e.event_id).collect::<Vec<_>>(), [ids[0]]);
    assert_eq!(b[0].attempts, 1);
    // a died without recording the other two: they come back when its claim runs out,
    // not before.
    let before = store
        .claim_due_outbox(T0.plus_millis(999), T0.plus_millis(5_000), 10)
        .await
        .unwrap();
    assert!(before.is_empty(), "{before:?}");
    let after = store
        .claim_due_outbox(T0.plus_millis(1_000), T0.plus_millis(5_000), 10)
        .await
        .unwrap();
    assert_eq!(
        after.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        ids[1..]
    );
    // Delivered and dead rows are never claimed.
    for id in &ids[1..] {
        store
            .record_outbox_attempt(*id, &OutboxOutcome::Delivered, T0)
            .await
            .unwrap();
    }
    let later = T0.plus_millis(60_000);
    let rest = store
        .claim_due_outbox(later, later.plus_millis(1), 10)
        .await
        .unwrap();
    assert_eq!(
        rest.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        [ids[0]]
    );
}

async fn concurrent_claimers_split_the_rows(store: Arc<dyn Store>) {
    let ids: HashSet<uuid::Uuid> = events(&*store, 40).await.into_iter().collect();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_due_outbox(T0, T0.plus_millis(60_000), 3)
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                mine.extend(batch.into_iter().map(|e| e.event_id));
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut total = 0;
    for t in tasks {
        for id in t.await.unwrap() {
            total += 1;
            assert!(seen.insert(id), "{id} claimed twice");
        }
    }
    assert_eq!(total, 40);
    assert_eq!(seen, ids);
}

async fn consumer_deliveries_are_claimed_once(store: Arc<dyn Store>) {
    let consumer = store
        .add_webhook_consumer(
            &NewWebhookConsumer {
                url: "http://consumer.example/hook".into(),
                secret: "s".into(),
                events: vec!["reserves.unhealthy".into()],
            },
            T0,
        )
        .await
        .unwrap();
    let ids = events(&*store, 2).await;
    for id in &ids {
        assert_eq!(store.fan_out_event(*id, T0).await.unwrap(), 1);
    }
    let a = store
        .claim_due_deliveries(T0, T0.plus_millis(1_000), 10)
        .await
        .unwrap();
    assert_eq!(a.len(), 2);
    assert!(store
        .claim_due_deliveries(T0, T0.plus_millis(1_000), 10)
        .await
        .unwrap()
        .is_empty());
    // Recorded: the claim ends with the attempt.
    let retry_at = T0.plus_millis(5);
    store
        .record_delivery_attempt(
            ids[0],
            consumer.id,
            &OutboxOutcome::Retry {
                next_attempt_at: retry_at,
                error: "timeout".into(),
            },
            T0,
        )
        .await
        .unwrap();
    let b = store
        .claim_due_deliveries(retry_at, retry_at.plus_millis(1_000), 10)
        .await
        .unwrap();
    assert_eq!(b.iter().map(|d| d.event_id).collect::<Vec<_>>(), [ids[0]]);
    // A deactivated consumer's deliveries are not claimed, even when due.
    store
        .deactivate_webhook_consumer(consumer.id, T0)
        .await
        .unwrap();
    let later = T0.plus_millis(60_000);
    assert!(store
        .claim_due_deliveries(later, later.plus_millis(1), 10)
        .await
        .unwrap()
        .is_empty());
}

async fn a_transition_event_is_written_once(store: Arc<dyn Store>) {
    assert_eq!(store.latest_reserve_health().await.unwrap(), None);
    let event = NewOutboxEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "reserves.unhealthy".into(),
        payload_json: "{}".into(),
        target_url: None,
    };
    let (first, written) = store
        .record_reserve_snapshot_notify(&snapshot(T0), Some(&event), T0)
        .await
        .unwrap();
    assert!(written);
    let (second, again) = store
        .record_reserve_snapshot_notify(&snapshot(T0.plus_millis(1)), Some(&event), T0)
        .await
        .unwrap();
    assert!(
        !again && second > first,
        "the snapshot is stored, the event is not"
    );
    assert_eq!(
        store.latest_reserve_health().await.unwrap(),
        Some((second, false))
    );
    let stored = store
        .get_outbox_event(event.event_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.validation_id, None);
}
