//! Registered webhook consumers, against a real HTTP receiver inside the test, over the
//! real outbox on SQLite: a subscribed consumer gets `validation.signed` exactly once
//! per event id, signed with its own secret (also after failures); an unsubscribed or
//! deactivated one gets nothing; a rate-limited payment produces `validation.delayed`
//! (and a payment below the minimum `validation.rejected`) from the monitor; a
//! redelivery sends the same event id again.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use ubtc_chains::dev::DevChain;
use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::{ChainId, PaymentRef, Timestamp, ValidationId, ValidationStatus};
use ubtc_pipeline::webhook::{WebhookConfig, WebhookWorker};
use ubtc_pipeline::{ChainPolicy, Monitor, PaymentLimiter};
use ubtc_store::{
    DeliveryFilter, NewOutboxEvent, NewValidation, NewWebhookConsumer, SignedResult, Store,
};

mod common;
use common::{sqlite_store, start_receiver, Receiver, SharedReceiver};

/// The callback (outbox) secret; consumers have their own.
const SECRET: &[u8] = b"callback-secret";

async fn receiver(fail_next: usize) -> (String, SharedReceiver) {
    start_receiver(Receiver {
        fail_next,
        ..Default::default()
    })
    .await
}

async fn consumer(
    store: &dyn Store,
    rx: &SharedReceiver,
    base: &str,
    name: &str,
    events: &[&str],
) -> uuid::Uuid {
    let secret = format!("secret-of-{name}");
    rx.lock()
        .unwrap()
        .secrets
        .insert(name.to_owned(), secret.clone().into_bytes());
    store
        .add_webhook_consumer(
            &NewWebhookConsumer {
                url: format!("{base}/hook/{name}"),
                secret,
                events: events.iter().map(|e| (*e).to_owned()).collect(),
            },
            Timestamp::now(),
        )
        .await
        .unwrap()
        .id
}

/// A signed validation without a callback URL; its `validation.signed` event id.
async fn signed_validation(store: &dyn Store) -> (ValidationId, uuid::Uuid) {
    let now = Timestamp::now();
    let id = ValidationId::new();
    let new = NewValidation {
        id,
        payment: PaymentRef {
            chain: ChainId::parse("dev").unwrap(),
            tx_hash: TxHash::parse(&format!("0x{}", uuid::Uuid::new_v4().simple())).unwrap(),
            index: 0,
        },
        payer: Payer::parse("0xpayer").unwrap(),
        amount_base_units: 1_000,
        message: b"hello".to_vec(),
        block: ChainBlock {
            number: 1,
            hash: "0xb1".into(),
        },
        callback_url: None,
        rejection: None,
    };
    store.record_detected(&new, now).await.unwrap();
    store.confirm_and_enqueue(id, 1, None, now).await.unwrap();
    let claim = store.claim_next("w", 30_000, now).await.unwrap().unwrap();
    let event_id = uuid::Uuid::now_v7();
    let result = SignedResult {
        statement_text: "statement".into(),
        bundle_json: "{}".into(),
        outbox: vec![NewOutboxEvent {
            event_id,
            event_type: "validation.signed".into(),
            payload_json: format!(
                "{{\"type\":\"validation.signed\",\"validation_id\":\"{}\"}}",
                id.0
            ),
            target_url: None,
        }],
        processing_ms: 1,
    };
    store.complete_signed(&claim, &result, now).await.unwrap();
    (id, event_id)
}

fn fast_config() -> WebhookConfig {
    WebhookConfig {
        timeout: Duration::from_secs(2),
        max_attempts: 10,
        backoff_base_ms: 20,
        backoff_max_ms: 80,
        allow_private_targets: true,
        ..WebhookConfig::new(SECRET.to_vec())
    }
}

/// Ticks until no outbox row and no consumer delivery is pending.
async fn settle(worker: &WebhookWorker, store: &dyn Store, ids: &[ValidationId]) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        worker.tick().await.unwrap();
        let mut pending = 0;
        for id in ids {
            for e in store.list_outbox_for(*id).await.unwrap() {
                if e.delivered_at.is_none() && e.dead_at.is_none() {
                    pending += 1;
                }
            }
            let log = store
                .list_webhook_deliveries(&DeliveryFilter {
                    validation: Some(*id),
                    consumer: None,
                    limit: 100,
                })
                .await
                .unwrap();
            pending += log
                .iter()
                .filter(|d| d.delivered_at.is_none() && d.dead_at.is_none())
                .count();
        }
        if pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{pending} still pending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn consumer_gets_each_signed_event_once_then_again_on_redelivery() {
    let (store, _dir) = sqlite_store(2).await;
    consumer_once_then_redelivery(store).await;
}

#[tokio::test]
async fn consumer_gets_each_signed_event_once_then_again_on_redelivery_postgres() {
    let url = std::env::var("UBTC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let schema = format!("ubtc_hooks_{}", uuid::Uuid::new_v4().simple());
    let store = ubtc_store::PgStore::connect_in_schema_with(&url, &schema, 4)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required at {url}: {e}"));
    store.migrate().await.unwrap();
    consumer_once_then_redelivery(Arc::new(store)).await;
    let admin = ubtc_store::PgStore::connect(&url, 1).await.unwrap();
    admin.drop_schema(&schema).await.unwrap();
}

async fn consumer_once_then_redelivery(store: Arc<dyn Store>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (base, rx) = receiver(4).await;
    let a = consumer(store.as_ref(), &rx, &base, "a", &["validation.signed"]).await;
    let _b = consumer(store.as_ref(), &rx, &base, "b", &["validation.delayed"]).await;
    let c = consumer(store.as_ref(), &rx, &base, "c", &["validation.signed"]).await;
    assert!(store
        .deactivate_webhook_consumer(c, Timestamp::now())
        .await
        .unwrap());

    let mut ids = Vec::new();
    let mut events = Vec::new();
    for _ in 0..3 {
        let (id, event) = signed_validation(store.as_ref()).await;
        ids.push(id);
        events.push(event);
    }
    let worker = WebhookWorker::new(store.clone(), fast_config()).unwrap();
    settle(&worker, store.as_ref(), &ids).await;
    // A few more ticks deliver nothing more.
    for _ in 0..3 {
        worker.tick().await.unwrap();
    }
    {
        let r = rx.lock().unwrap();
        assert_eq!(r.bad_signatures, 0);
        assert!(r.requests >= 3 + 4, "failures were retried: {}", r.requests);
        assert_eq!(r.counts().len(), 3, "{:?}", r.counts());
        for e in &events {
            assert_eq!(r.times("a", &e.to_string()), 1);
        }
    }
    for (id, event) in ids.iter().zip(&events) {
        let v = store.get_validation(*id).await.unwrap().unwrap();
        assert_eq!(v.status, ValidationStatus::Delivered);
        let log = store
            .list_webhook_deliveries(&DeliveryFilter {
                validation: Some(*id),
                consumer: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(log.len(), 1, "only the active subscribed consumer");
        assert_eq!((log[0].consumer_id, log[0].event_id), (a, *event));
        assert!(log[0].delivered_at.is_some());
    }

    // Redelivery on request: the same event id, once more.
    assert_eq!(
        store.redeliver(events[0], Timestamp::now()).await.unwrap(),
        1
    );
    settle(&worker, store.as_ref(), &ids).await;
    let r = rx.lock().unwrap();
    assert_eq!(r.times("a", &events[0].to_string()), 2);
    assert_eq!(r.times("a", &events[1].to_string()), 1);
    assert_eq!(r.bad_signatures, 0);
}

/// Admits the first payment, delays every later one by a minute.
struct FirstThenDelay(AtomicU32);

#[async_trait]
impl PaymentLimiter for FirstThenDelay {
    async fn admit(&self, _chain: &ChainId, _payer: &Payer, now: Timestamp) -> Option<Timestamp> {
        (self.0.fetch_add(1, Ordering::SeqCst) > 0).then(|| now.plus_millis(60_000))
    }
}

#[tokio::test]
async fn rate_limited_payment_sends_validation_delayed_and_rejection_sends_rejected() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (store, _dir) = sqlite_store(2).await;
    let (base, rx) = receiver(0).await;
    consumer(
        store.as_ref(),
        &rx,
        &base,
        "ops",
        &["validation.delayed", "validation.rejected"],
    )
    .await;
    let chain = DevChain::new(ChainId::parse("dev").unwrap(), "0xpay", 2);
    let monitor = Monitor::new(
        Arc::new(chain.clone()),
        store.clone(),
        Arc::new(FirstThenDelay(AtomicU32::new(0))),
        ChainPolicy {
            min_payment_base_units: 1_000,
            scan_max_blocks: 100,
        },
    );
    let payer = Payer::parse("0x00000000000000000000000000000000000000aa").unwrap();
    chain.submit_payment(&payer, 1_000, b"first");
    chain.submit_payment(&payer, 1_000, b"second");
    chain.submit_payment(&payer, 1, b"too little");
    chain.mine(3);
    let mut delayed = 0;
    let mut rejected = 0;
    for _ in 0..3 {
        let t = monitor.tick().await.unwrap();
        delayed += t.delayed;
        rejected += t.rejected;
    }
    assert_eq!((delayed, rejected), (1, 1));
    let ids: Vec<ValidationId> = store
        .list_validations(&ubtc_store::ValidationFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.id)
        .collect();
    let worker = WebhookWorker::new(store.clone(), fast_config()).unwrap();
    settle(&worker, store.as_ref(), &ids).await;

    let (kinds, delayed_payload, accepted) = {
        let r = rx.lock().unwrap();
        assert_eq!(r.bad_signatures, 0);
        let mut kinds: Vec<String> = r.accepted.iter().map(|d| d.event_type.clone()).collect();
        kinds.sort();
        let delayed_payload = r
            .accepted
            .iter()
            .find(|d| d.event_type == "validation.delayed")
            .map(|d| d.payload.clone())
            .unwrap();
        (kinds, delayed_payload, r.counts())
    };
    assert_eq!(kinds, vec!["validation.delayed", "validation.rejected"]);
    let not_before = delayed_payload["not_before"].as_str().unwrap();
    let v = store
        .get_validation(ValidationId(
            delayed_payload["validation_id"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v.status, ValidationStatus::Delayed);
    assert_eq!(
        Some(not_before.to_owned()),
        v.not_before.map(|t| t.to_rfc3339())
    );
    assert_eq!(accepted.len(), 2);
    assert!(accepted.values().all(|n| *n == 1));
}
