//! Webhook delivery against a real HTTP receiver inside the test, over the real
//! outbox on SQLite: a receiver that fails then recovers gets every event exactly
//! once per event id with a valid signature; one that never recovers leaves
//! dead-lettered rows; private targets are refused unless allowed.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::time::{Duration, Instant};

use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::{ChainId, PaymentRef, Timestamp, ValidationId, ValidationStatus};
use ubtc_pipeline::webhook::{WebhookConfig, WebhookWorker};
use ubtc_store::{NewOutboxEvent, NewValidation, SignedResult, Store};

mod common;
use common::{sqlite_store, start_receiver, Receiver, SharedReceiver};

const SECRET: &[u8] = b"test-webhook-secret";

async fn receiver(fail_next: usize) -> (String, SharedReceiver) {
    start_receiver(Receiver {
        fail_next,
        secrets: [(String::new(), SECRET.to_vec())].into(),
        ..Default::default()
    })
    .await
}

/// A signed validation whose `validation.signed` event goes to `target`.
async fn signed_validation(store: &dyn Store, target: &str) -> (ValidationId, uuid::Uuid) {
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
        callback_url: Some(target.to_owned()),
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
            target_url: Some(target.to_owned()),
        }],
        processing_ms: 1,
    };
    store.complete_signed(&claim, &result, now).await.unwrap();
    (id, event_id)
}

fn fast_config(max_attempts: u32, allow_private: bool) -> WebhookConfig {
    WebhookConfig {
        timeout: Duration::from_secs(2),
        max_attempts,
        backoff_base_ms: 20,
        backoff_max_ms: 80,
        allow_private_targets: allow_private,
        ..WebhookConfig::new(SECRET.to_vec())
    }
}

/// Ticks until no row is pending (delivered or dead) or the deadline passes.
async fn run_until_settled(worker: &WebhookWorker, store: &dyn Store, ids: &[ValidationId]) {
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
        }
        if pending == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "{pending} rows still pending");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn failing_then_recovering_receiver_gets_each_event_once_signed() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (store, _dir) = sqlite_store(2).await;
    let (base, rx) = receiver(5).await;
    let mut ids = Vec::new();
    let mut events = Vec::new();
    for _ in 0..3 {
        let (id, event) = signed_validation(store.as_ref(), &format!("{base}/hook")).await;
        ids.push(id);
        events.push(event.to_string());
    }
    let worker = WebhookWorker::new(store.clone(), fast_config(10, true)).unwrap();
    run_until_settled(&worker, store.as_ref(), &ids).await;

    {
        let rx = rx.lock().unwrap();
        assert_eq!(rx.bad_signatures, 0);
        assert!(
            rx.requests >= 3 + 5,
            "the failures were retried: {}",
            rx.requests
        );
        let accepted = rx.counts();
        assert_eq!(accepted.len(), 3, "{accepted:?}");
        for e in &events {
            assert_eq!(rx.times("", e), 1, "event {e} accepted exactly once");
        }
    }
    for id in &ids {
        let row = &store.list_outbox_for(*id).await.unwrap()[0];
        assert!(row.delivered_at.is_some() && row.dead_at.is_none());
        let v = store.get_validation(*id).await.unwrap().unwrap();
        assert_eq!(v.status, ValidationStatus::Delivered);
    }
    // Nothing is due any more: a further tick sends nothing.
    assert!(worker.tick().await.unwrap() == Default::default());
}

#[tokio::test]
async fn receiver_that_never_recovers_leaves_dead_letters() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (store, _dir) = sqlite_store(2).await;
    let (base, rx) = receiver(0).await;
    let (id, _) = signed_validation(store.as_ref(), &format!("{base}/never")).await;
    let worker = WebhookWorker::new(store.clone(), fast_config(3, true)).unwrap();
    run_until_settled(&worker, store.as_ref(), &[id]).await;
    let row = &store.list_outbox_for(id).await.unwrap()[0];
    assert!(row.dead_at.is_some() && row.delivered_at.is_none());
    assert_eq!(row.attempts, 3);
    assert!(
        row.last_error.as_deref().unwrap_or("").contains("503"),
        "{row:?}"
    );
    assert_eq!(rx.lock().unwrap().requests, 3);
    let v = store.get_validation(id).await.unwrap().unwrap();
    assert_eq!(v.status, ValidationStatus::Signed, "not delivered");
}

#[tokio::test]
async fn private_targets_are_refused_unless_configured() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (store, _dir) = sqlite_store(2).await;
    let (base, rx) = receiver(0).await;
    let (id, _) = signed_validation(store.as_ref(), &format!("{base}/hook")).await;
    let worker = WebhookWorker::new(store.clone(), fast_config(3, false)).unwrap();
    run_until_settled(&worker, store.as_ref(), &[id]).await;
    let row = &store.list_outbox_for(id).await.unwrap()[0];
    assert!(row.dead_at.is_some());
    assert!(
        row.last_error
            .as_deref()
            .unwrap_or("")
            .contains("target refused"),
        "{row:?}"
    );
    assert_eq!(rx.lock().unwrap().requests, 0, "no connection was made");
}
