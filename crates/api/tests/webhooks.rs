//! The webhook administration routes: operator key (401/403), registration checks
//! (400 for bad URLs, secrets and events, private URLs per the configured check), list
//! without secrets, deactivation, delivery log and redelivery over the real store.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use ubtc_api::webhooks::WebhookAdmin;
use ubtc_api::{public_router, serve, ApiState};
use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::{ChainId, PaymentRef, Timestamp, ValidationId};
use ubtc_store::{NewOutboxEvent, NewValidation, OutboxOutcome, SignedResult, SqliteStore, Store};

const KEY: &str = "operator-key-for-tests";

struct App {
    base: String,
    client: reqwest::Client,
    store: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn app(admin: bool) -> App {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&format!("sqlite:{}", dir.path().join("a.db").display()), 2)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let mut state = ApiState::new(store.clone(), Vec::new());
    if admin {
        // Stands in for the delivery worker's check: refuses loopback.
        let check = Arc::new(|url: &str| {
            if url.starts_with("https://") && !url.contains("127.0.0.1") {
                Ok(())
            } else {
                Err("not a public https URL".to_owned())
            }
        });
        state = state.with_webhook_admin(WebhookAdmin::new(KEY, check).unwrap());
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(serve(
        listener,
        public_router(state),
        CancellationToken::new(),
    ));
    App {
        base,
        client: reqwest::Client::new(),
        store,
        _dir: dir,
    }
}

impl App {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn operator_key_is_required() {
    let off = app(false).await;
    let (s, v) = off
        .call(reqwest::Method::GET, "/v1/webhooks", Some(KEY), None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));

    let on = app(true).await;
    for key in [None, Some("wrong"), Some("")] {
        let (s, v) = on
            .call(reqwest::Method::GET, "/v1/webhooks", key, None)
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{key:?}"
        );
    }
    let (s, v) = on
        .call(reqwest::Method::GET, "/v1/webhooks", Some(KEY), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["items"], json!([]));
}

#[tokio::test]
async fn register_list_deactivate_log_and_redeliver() {
    let app = app(true).await;
    let post = |body: Value| app.call(reqwest::Method::POST, "/v1/webhooks", Some(KEY), Some(body));
    for bad in [
        json!({"url": "http://127.0.0.1/x", "secret": "0123456789abcdef", "events": ["validation.signed"]}),
        json!({"url": "https://hooks.example/x", "secret": "short", "events": ["validation.signed"]}),
        json!({"url": "https://hooks.example/x", "secret": "0123456789abcdef", "events": []}),
        json!({"url": "https://hooks.example/x", "secret": "0123456789abcdef", "events": ["validation.bogus"]}),
    ] {
        let (s, v) = post(bad.clone()).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_parameter"),
            "{bad}"
        );
    }
    let (s, v) =
        post(json!({"url": "https://hooks.example/x", "events": ["validation.signed"]})).await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_body"));

    let (s, created) = post(json!({
        "url": "https://hooks.example/x",
        "secret": "0123456789abcdef",
        "events": ["validation.signed", "validation.delayed", "validation.signed"],
    }))
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["events"],
        json!(["validation.signed", "validation.delayed"])
    );
    assert_eq!(created["active"], json!(true));
    assert!(created.get("secret").is_none());
    let id = created["id"].as_str().unwrap().to_owned();

    let (_, list) = app
        .call(reqwest::Method::GET, "/v1/webhooks", Some(KEY), None)
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert!(
        !list.to_string().contains("0123456789abcdef"),
        "secret never returned"
    );

    // A signed validation whose event is fanned out to the consumer and to a callback.
    let s_ = &*app.store;
    let now = Timestamp::now();
    let vid = ValidationId::new();
    s_.record_detected(
        &NewValidation {
            id: vid,
            payment: PaymentRef {
                chain: ChainId::parse("dev").unwrap(),
                tx_hash: TxHash::parse("0x01").unwrap(),
                index: 0,
            },
            payer: Payer::parse("0xpayer").unwrap(),
            amount_base_units: 1,
            message: b"m".to_vec(),
            block: ChainBlock {
                number: 1,
                hash: "0xb".into(),
            },
            callback_url: Some("https://callback.example/h".into()),
            rejection: None,
        },
        now,
    )
    .await
    .unwrap();
    s_.confirm_and_enqueue(vid, 1, None, now).await.unwrap();
    let claim = s_.claim_next("w", 30_000, now).await.unwrap().unwrap();
    let event = uuid::Uuid::now_v7();
    s_.complete_signed(
        &claim,
        &SignedResult {
            statement_text: "s".into(),
            bundle_json: "{}".into(),
            outbox: vec![NewOutboxEvent {
                event_id: event,
                event_type: "validation.signed".into(),
                payload_json: "{}".into(),
                target_url: Some("https://callback.example/h".into()),
            }],
            processing_ms: 1,
        },
        now,
    )
    .await
    .unwrap();
    assert_eq!(s_.fan_out_event(event, now).await.unwrap(), 1);
    s_.record_outbox_attempt(event, &OutboxOutcome::Delivered, now)
        .await
        .unwrap();

    let (s, log) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/webhooks/deliveries?validation={vid}"),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{log}");
    let items = log["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{log}");
    assert_eq!(items[0]["consumer_id"], Value::Null);
    assert_eq!(items[0]["state"], "delivered");
    assert_eq!(items[1]["consumer_id"], json!(id));
    assert_eq!(items[1]["state"], "pending");
    assert_eq!(items[1]["event_id"], json!(event.to_string()));
    let (_, by_consumer) = app
        .call(
            reqwest::Method::GET,
            &format!("/v1/webhooks/deliveries?consumer={id}"),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(by_consumer["items"].as_array().unwrap().len(), 1);
    let (s, v) = app
        .call(
            reqwest::Method::GET,
            "/v1/webhooks/deliveries?validation=nope",
            Some(KEY),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "invalid_id"));

    let (s, v) = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/webhooks/deliveries/{event}/redeliver"),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{v}");
    assert_eq!(v["deliveries"], json!(2));
    let (s, v) = app
        .call(
            reqwest::Method::POST,
            &format!("/v1/webhooks/deliveries/{}/redeliver", uuid::Uuid::now_v7()),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "event_not_found"));

    let (s, v) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{id}"),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["active"], json!(false));
    let (s, v) = app
        .call(
            reqwest::Method::DELETE,
            &format!("/v1/webhooks/{}", uuid::Uuid::now_v7()),
            Some(KEY),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "webhook_not_found"));
}
