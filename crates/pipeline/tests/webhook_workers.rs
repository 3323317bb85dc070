//! Several webhook workers on one store (as several `ubtc worker` processes): against
//! a real HTTP receiver inside the test that answers slowly, so that the workers'
//! batches overlap in time, every callback row and every consumer delivery is sent
//! exactly once (the claims of migration 0006), with a valid signature.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use ubtc_core::{Sats, Timestamp};
use ubtc_pipeline::webhook::{verify, WebhookConfig, WebhookWorker};
use ubtc_store::{NewOutboxEvent, NewWebhookConsumer, ReserveSnapshot, SqliteStore, Store};

const CALLBACK_SECRET: &[u8] = b"callback-secret";
const CONSUMER_SECRET: &str = "consumer-secret";

#[derive(Default)]
struct Received {
    /// (path, event id) → times received.
    times: HashMap<(String, String), usize>,
    bad_signatures: usize,
}

async fn hook(
    State(rx): State<Arc<Mutex<Received>>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    // Slow enough that a second worker ticks while the first is mid-batch.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let secret = if name == "callback" {
        CALLBACK_SECRET
    } else {
        CONSUMER_SECRET.as_bytes()
    };
    let ts: i64 = h("ubtc-timestamp").parse().unwrap_or(0);
    let mut rx = rx.lock().unwrap();
    if !verify(secret, ts, &body, &h("ubtc-signature")) {
        rx.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    *rx.times.entry((name, h("ubtc-event-id"))).or_default() += 1;
    StatusCode::OK
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_send_every_delivery_once() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rx = Arc::new(Mutex::new(Received::default()));
    let app = Router::new()
        .route("/hook/{name}", post(hook))
        .with_state(rx.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::connect(&format!("sqlite:{}", dir.path().join("w.db").display()), 4)
        .await
        .unwrap();
    s.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(s);
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
            assert_eq!(
                rx.times.get(&(path.to_owned(), id.clone())),
                Some(&1),
                "{path} {id}"
            );
        }
    }
    assert_eq!(rx.times.len(), 80);
}
