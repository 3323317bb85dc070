//! Several webhook workers on one store (as several `ubtc worker` processes): against
//! a real HTTP receiver inside the test that answers slowly, so that the workers'
//! batches overlap in time, every callback row and every consumer delivery is sent
//! exactly once (the claims of migration 0006), with a valid signature.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::time::Duration;

use ubtc_core::{Sats, Timestamp};
use ubtc_pipeline::webhook::{WebhookConfig, WebhookWorker};
use ubtc_store::{NewOutboxEvent, NewWebhookConsumer, ReserveSnapshot};

mod common;
use common::{sqlite_store, start_receiver, Receiver};

const CALLBACK_SECRET: &[u8] = b"callback-secret";
const CONSUMER_SECRET: &str = "consumer-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_send_every_delivery_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (base, rx) = start_receiver(Receiver {
        // Slow enough that a second worker ticks while the first is mid-batch.
        delay: Duration::from_millis(5),
        secrets: [
            ("callback".to_owned(), CALLBACK_SECRET.to_vec()),
            ("consumer".to_owned(), CONSUMER_SECRET.as_bytes().to_vec()),
        ]
        .into(),
        ..Default::default()
    })
    .await;

    let (store, _dir) = sqlite_store(4).await;
    store
        .add_webhook_consumer(
            &NewWebhookConsumer {
                url: format!("{base}/hook/consumer"),
                secret: CONSUMER_SECRET.into(),
                events: vec!["reserves.unhealthy".into()],
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
    // 40 events, each with a callback URL and one consumer delivery.
    let now = Timestamp::now();
    let mut ids = Vec::new();
    for i in 0..40 {
        let event = NewOutboxEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "reserves.unhealthy".into(),
            payload_json: format!("{{\"n\":{i}}}"),
            target_url: Some(format!("{base}/hook/callback")),
        };
        let snapshot = ReserveSnapshot {
            taken_at: now,
            bitcoin_height: 1,
            bitcoin_block_hash: "00".repeat(32),
            reserve_sats: Sats(0),
            supply_sats: Sats(1),
            ratio_ppm: Some(0),
            healthy: false,
            stale: false,
            supply: vec![],
        };
        store
            .record_reserve_snapshot_notify(&snapshot, Some(&event), now)
            .await
            .unwrap();
        ids.push(event.event_id.to_string());
    }

    let config = WebhookConfig {
        allow_private_targets: true,
        timeout: Duration::from_secs(5),
        ..WebhookConfig::new(CALLBACK_SECRET.to_vec())
    };
    let mut workers = Vec::new();
    for _ in 0..3 {
        let worker = WebhookWorker::new(store.clone(), config.clone()).unwrap();
        workers.push(tokio::spawn(async move {
            for _ in 0..20 {
                worker.tick().await.unwrap();
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }

    let rx = rx.lock().unwrap();
    assert_eq!(rx.bad_signatures, 0);
    for id in &ids {
        for path in ["callback", "consumer"] {
            assert_eq!(rx.times(path, id), 1, "{path} {id}");
        }
    }
    assert_eq!(rx.counts().len(), 80);
}
