//! The public API over real HTTP, against a real SQLite store in a temp dir.
//!
//! Each test spawns its own server on 127.0.0.1:0 with `serve` (exactly as the
//! binary does), seeds data through the `Store` methods, and calls it with reqwest.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use async_trait::async_trait;
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use ubtc_api::{
    public_router, public_routes, serve, ApiLimits, ApiState, ChainInfo, DemoPaymentError,
    DemoPaymentReceipt, DemoPaymentRequest, DemoPayments, ErrorCode, TokenInfo,
};
use ubtc_core::amount::Sats;
use ubtc_core::bundle::SupplyEntry;
use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::validation::Reason;
use ubtc_core::{ChainId, ChainKind, PaymentRef, Timestamp, TokenAmount, ValidationId};
use ubtc_store::{
    NewReserveAddress, NewValidation, ReserveSnapshot, SignedResult, SqliteStore, Store,
};

struct TestApp {
    base: String,
    client: reqwest::Client,
    store: Arc<SqliteStore>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

fn chains() -> Result<Vec<ChainInfo>> {
    Ok(vec![
        ChainInfo {
            name: ChainId::parse("dev")?,
            kind: ChainKind::Dev,
            native_unit: ChainKind::Dev.native_unit().to_owned(),
            min_payment_base_units: 1_000,
            confirmations: 2,
            payment_address: Some("devpayee".to_owned()),
            payment_contract: None,
            token: None,
        },
        ChainInfo {
            name: ChainId::parse("ethereum")?,
            kind: ChainKind::Evm,
            native_unit: "wei".to_owned(),
            min_payment_base_units: 340_282_366_920_938_463_463_374_607_431_768_211_455,
            confirmations: 12,
            payment_address: None,
            payment_contract: Some("0x00000000000000000000000000000000000000aa".to_owned()),
            token: Some(TokenInfo {
                address: "0x00000000000000000000000000000000000000bb".to_owned(),
                symbol: "uBTC".to_owned(),
                decimals: 8,
            }),
        },
    ])
}

async fn spawn_app(demo: Option<Arc<dyn DemoPayments>>) -> Result<TestApp> {
    spawn_app_with(demo, ApiLimits::default()).await
}

async fn spawn_app_with(demo: Option<Arc<dyn DemoPayments>>, limits: ApiLimits) -> Result<TestApp> {
    // reqwest is built without a default TLS provider; install ring once per process.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("api.db").display());
    let store = Arc::new(SqliteStore::connect(&url, 4).await?);
    store.migrate().await?;
    let mut state = ApiState::new(store.clone(), chains()?).with_limits(limits);
    if let Some(demo) = demo {
        state = state.with_demo(demo);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(listener, public_router(state), shutdown.clone()));
    Ok(TestApp {
        base,
        client: reqwest::Client::builder().build()?,
        store,
        shutdown,
        server,
        _dir: dir,
    })
}

impl TestApp {
    async fn get(&self, path: &str) -> Result<(StatusCode, Value)> {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await?;
        let status = resp.status();
        let body = resp.text().await?;
        let value = serde_json::from_str(&body)
            .with_context(|| format!("GET {path} answered non-JSON: {body:?}"))?;
        Ok((status, value))
    }

    async fn post_raw(
        &self,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(StatusCode, Value)> {
        let mut req = self.client.post(format!("{}{path}", self.base)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        let value = serde_json::from_str(&body)
            .with_context(|| format!("POST {path} answered non-JSON: {body:?}"))?;
        Ok((status, value))
    }

    async fn post_json(&self, path: &str, body: &Value) -> Result<(StatusCode, Value)> {
        self.post_raw(path, Some("application/json"), serde_json::to_vec(body)?)
            .await
    }

    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        self.server.await??;
        Ok(())
    }

    /// One reserve address and one snapshot taken 90 s ago; returns its time.
    async fn seed_reserves(&self) -> Result<Timestamp> {
        let now = Timestamp::now();
        self.store
            .add_reserve_address(
                &NewReserveAddress {
                    address: "bc1qreserve".to_owned(),
                    descriptor: "wsh(sortedmulti(2,...))".to_owned(),
                    kind: "p2wsh-sortedmulti".to_owned(),
                    label: Some("cold".to_owned()),
                },
                now,
            )
            .await?;
        let taken_at = now.plus_millis(-90_000);
        self.store
            .record_reserve_snapshot(&ReserveSnapshot {
                taken_at,
                bitcoin_height: 871_234,
                bitcoin_block_hash: "00000000000000000001a2".to_owned(),
                reserve_sats: Sats(150_000_000),
                supply_sats: Sats(100_000_000),
                ratio_ppm: Some(1_500_000),
                healthy: true,
                stale: false,
                supply: vec![SupplyEntry {
                    chain: ChainId::parse("ethereum")?,
                    token: "0x00000000000000000000000000000000000000bb".to_owned(),
                    block_number: 19_000_000,
                    block_hash: "0xeth".to_owned(),
                    supply: TokenAmount::new(100_000_000, 8),
                    as_of: taken_at,
                }],
            })
            .await?;
        Ok(taken_at)
    }

    /// Records a detected payment and returns its id.
    async fn detect(
        &self,
        chain: &str,
        tx: &str,
        index: u32,
        message: &[u8],
    ) -> Result<ValidationId> {
        let new = NewValidation {
            id: ValidationId::new(),
            payment: PaymentRef {
                chain: ChainId::parse(chain)?,
                tx_hash: TxHash::parse(tx)?,
                index,
            },
            payer: Payer::parse("0xpayer1")?,
            amount_base_units: 123_456_789_012_345_678_901_234_567,
            message: message.to_vec(),
            block: ChainBlock {
                number: 42,
                hash: "0xblock42".to_owned(),
            },
            callback_url: Some("https://secret.example/hook?token=s3cret".to_owned()),
            rejection: None,
        };
        Ok(self
            .store
            .record_detected(&new, Timestamp::now())
            .await?
            .id())
    }

    /// Takes a detected validation through queue and claim to `signed`.
    async fn sign(&self, id: ValidationId, bundle_json: &str) -> Result<()> {
        let now = Timestamp::now();
        self.store.confirm_and_enqueue(id, 3, None, now).await?;
        let claim = self
            .store
            .claim_next("test-worker", 60_000, now)
            .await?
            .context("nothing to claim")?;
        anyhow::ensure!(claim.record.id == id, "claimed another validation");
        let result = SignedResult {
            statement_text: "Universal Bitcoin proof of reserves\nchain: dev\n".to_owned(),
            bundle_json: bundle_json.to_owned(),
            outbox: vec![],
            processing_ms: 1_500,
        };
        self.store.complete_signed(&claim, &result, now).await?;
        Ok(())
    }
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test]
async fn health_and_readiness() -> Result<()> {
    let app = spawn_app(None).await?;
    let (status, body) = app.get("/healthz").await?;
    assert_eq!((status, body), (StatusCode::OK, json!({"status": "ok"})));
    let (status, _) = app.get("/readyz").await?;
    assert_eq!(status, StatusCode::OK);

    // Closing the pools is what a lost database looks like to the API.
    app.store.pool().close().await;
    app.store.reader_pool().close().await;
    let (status, body) = app.get("/readyz").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "database_unavailable");
    // The process itself is still up.
    let (status, _) = app.get("/healthz").await?;
    assert_eq!(status, StatusCode::OK);
    // Reads fail with the same code, not a 500.
    let (status, body) = app.get("/v1/validations").await?;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "database_unavailable");
    app.stop().await
}

#[tokio::test]
async fn list_is_newest_first_paginated_and_filtered() -> Result<()> {
    let app = spawn_app(None).await?;
    let mut ids = Vec::new();
    for i in 0..5u32 {
        let chain = if i % 2 == 0 { "dev" } else { "ethereum" };
        ids.push(app.detect(chain, &format!("0xtx{i}"), 0, b"hi").await?);
    }
    // The first one becomes queued, so the status filter has something to split.
    app.store
        .confirm_and_enqueue(ids[0], 2, None, Timestamp::now())
        .await?;
    let mut newest_first = ids.clone();
    newest_first.sort();
    newest_first.reverse();

    let mut seen = Vec::new();
    let mut path = "/v1/validations?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (status, body) = app.get(&path).await?;
        assert_eq!(status, StatusCode::OK, "{body}");
        pages += 1;
        let items = body["items"].as_array().context("items")?;
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|v| v["id"].as_str().unwrap_or("").to_owned()),
        );
        match body["next_before"].as_str() {
            Some(cursor) => path = format!("/v1/validations?limit=2&before={cursor}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = newest_first.iter().map(|id| id.to_string()).collect();
    assert_eq!(seen, expected);

    let (_, body) = app.get("/v1/validations").await?;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(5));
    assert_eq!(body["next_before"], Value::Null);

    let (_, body) = app.get("/v1/validations?chain=ethereum").await?;
    let items = body["items"].as_array().context("items")?;
    assert_eq!(items.len(), 2);
    assert!(items.iter().all(|v| v["payment"]["chain"] == "ethereum"));
    assert!(items
        .iter()
        .all(|v| v["payment"]["amount"]["unit"] == "wei"));

    let (_, body) = app.get("/v1/validations?status=queued").await?;
    let items = body["items"].as_array().context("items")?;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], ids[0].to_string());

    // Dev has ids 0, 2 and 4; 0 is queued.
    let (_, body) = app.get("/v1/validations?status=detected&chain=dev").await?;
    let got: Vec<&str> = body["items"]
        .as_array()
        .context("items")?
        .iter()
        .filter_map(|v| v["id"].as_str())
        .collect();
    assert_eq!(got, [ids[4].to_string(), ids[2].to_string()]);
    app.stop().await
}

#[tokio::test]
async fn lookup_by_transaction() -> Result<()> {
    let app = spawn_app(None).await?;
    let a = app.detect("dev", "0xshared", 0, b"one").await?;
    let b = app.detect("dev", "0xshared", 1, b"two").await?;
    let c = app.detect("ethereum", "0xshared", 0, b"three").await?;
    app.detect("dev", "0xother", 0, b"four").await?;

    let ids = |body: &Value| -> BTreeSet<String> {
        body["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|v| v["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let (status, body) = app.get("/v1/validations?tx=0xshared").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        ids(&body),
        [a, b, c].iter().map(|i| i.to_string()).collect()
    );
    let (_, body) = app.get("/v1/validations?chain=dev&tx=0xshared").await?;
    assert_eq!(ids(&body), [a, b].iter().map(|i| i.to_string()).collect());
    let (status, body) = app.get("/v1/validations?tx=0xnothing").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"], json!([]));
    app.stop().await
}

#[tokio::test]
async fn one_validation_and_its_proof() -> Result<()> {
    let app = spawn_app(None).await?;
    let pending = app.detect("dev", "0xpending", 0, b"hello alice").await?;
    let binary = app
        .detect("dev", "0xbinary", 0, &[0xff, 0x00, 0x01])
        .await?;
    let signed = app.detect("dev", "0xsigned", 0, b"sign me").await?;
    // Odd spacing and a non-ASCII character: the proof must come back byte for byte.
    let bundle = "{\"version\":1,  \"note\": \"r\u{e9}serve\",\n \"n\": 1.50}";
    app.sign(signed, bundle).await?;

    let (status, v) = app.get(&format!("/v1/validations/{pending}")).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["status"], "detected");
    assert_eq!(v["payment"]["tx_hash"], "0xpending");
    assert_eq!(v["payment"]["index"], 0);
    assert_eq!(v["payment"]["payer"], "0xpayer1");
    assert_eq!(
        v["payment"]["amount"],
        json!({"base_units": "123456789012345678901234567", "unit": "dev-units"})
    );
    assert_eq!(
        v["payment"]["block"],
        json!({"number": 42, "hash": "0xblock42"})
    );
    assert_eq!(v["message"]["hex"], hex::encode("hello alice"));
    assert_eq!(v["message"]["text"], "hello alice");
    assert_eq!(v["proof_url"], Value::Null);
    assert_eq!(v["statement"], Value::Null);
    // Store internals stay private.
    let text = v.to_string();
    assert!(
        !text.contains("s3cret") && !text.contains("lease"),
        "{text}"
    );
    assert!(Timestamp::parse_rfc3339(v["created_at"].as_str().unwrap_or("")).is_ok());

    let (_, v) = app.get(&format!("/v1/validations/{binary}")).await?;
    assert_eq!(v["message"], json!({"hex": "ff0001", "text": null}));

    let (_, v) = app.get(&format!("/v1/validations/{signed}")).await?;
    assert_eq!(v["status"], "signed");
    assert_eq!(v["confirmations"], 3);
    assert_eq!(v["attempts"], 1);
    assert_eq!(v["proof_url"], format!("/v1/proofs/{signed}"));
    assert!(v["statement"]
        .as_str()
        .is_some_and(|s| s.starts_with("Universal Bitcoin")));
    assert!(v["signed_at"].is_string());

    let resp = app
        .client
        .get(format!("{}/v1/proofs/{signed}", app.base))
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    assert!(resp
        .headers()
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("immutable")));
    assert_eq!(resp.bytes().await?.as_ref(), bundle.as_bytes());

    let (status, body) = app.get(&format!("/v1/proofs/{pending}")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "proof_not_found");
    assert!(body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("detected")));

    let unknown = ValidationId::new();
    let (status, body) = app.get(&format!("/v1/validations/{unknown}")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "validation_not_found");
    let (status, body) = app.get(&format!("/v1/proofs/{unknown}")).await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_code(&body), "validation_not_found");
    app.stop().await
}

#[tokio::test]
async fn delayed_and_rejected_show_why() -> Result<()> {
    let app = spawn_app(None).await?;
    let delayed = app.detect("dev", "0xdelayed", 0, b"later").await?;
    let rejected = app.detect("dev", "0xrejected", 0, b"cheap").await?;
    let now = Timestamp::now();
    let until = now.plus_millis(3_600_000);
    app.store
        .confirm_and_enqueue(delayed, 2, Some(until), now)
        .await?;
    app.store
        .confirm_and_reject(
            rejected,
            2,
            &Reason::new("below_fee", "paid 1, minimum 1000"),
            now,
        )
        .await?;

    let (_, v) = app.get(&format!("/v1/validations/{delayed}")).await?;
    assert_eq!(v["status"], "delayed");
    assert_eq!(v["not_before"], until.to_rfc3339());
    assert_eq!(v["delay"]["until"], until.to_rfc3339());
    let remaining = v["delay"]["remaining_secs"].as_i64().unwrap_or(-1);
    assert!((3_500..=3_600).contains(&remaining), "{remaining}");

    let (_, v) = app.get(&format!("/v1/validations/{rejected}")).await?;
    assert_eq!(v["status"], "rejected");
    assert_eq!(
        v["reason"],
        json!({"code": "below_fee", "detail": "paid 1, minimum 1000"})
    );
    assert_eq!(v["delay"], Value::Null);
    app.stop().await
}

#[tokio::test]
async fn bad_input_gets_a_code_and_changes_nothing() -> Result<()> {
    let app = spawn_app(None).await?;
    app.detect("dev", "0xkeep", 0, b"keep").await?;
    let cases = [
        (
            "/v1/validations/not-a-uuid",
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        ("/v1/proofs/123", StatusCode::BAD_REQUEST, "invalid_id"),
        (
            "/v1/validations?status=bogus",
            StatusCode::BAD_REQUEST,
            "invalid_status",
        ),
        (
            "/v1/validations?chain=Bad!",
            StatusCode::BAD_REQUEST,
            "invalid_chain",
        ),
        (
            "/v1/validations?chain=solana",
            StatusCode::BAD_REQUEST,
            "invalid_chain",
        ),
        (
            "/v1/validations?limit=0",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/v1/validations?limit=501",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/v1/validations?limit=ten",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/v1/validations?before=yesterday",
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            "/v1/validations?staus=signed",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/v1/validations?tx=0x%20ab",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            "/v1/validations?tx=0xkeep&before=0190f3e4-0000-7000-8000-000000000000",
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        ("/v2/nothing", StatusCode::NOT_FOUND, "not_found"),
        ("/v1/demo/payments", StatusCode::NOT_FOUND, "demo_disabled"),
    ];
    for (path, want_status, want_code) in cases {
        let resp = app.client.get(format!("{}{path}", app.base)).send().await?;
        let header_id = resp
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (status, body) = (resp.status(), resp.json::<Value>().await?);
        assert_eq!(
            (status, error_code(&body)),
            (want_status, want_code),
            "{path}: {body}"
        );
        assert!(body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        // The id in the body is the one in the header: a generated UUID.
        let body_id = body["error"]["request_id"].as_str().map(str::to_owned);
        assert_eq!(body_id, header_id, "{path}");
        assert!(uuid::Uuid::parse_str(body_id.as_deref().unwrap_or("")).is_ok());
    }
    // axum's own 405 comes back as our JSON too, with its `allow` header.
    let resp = app
        .client
        .post(format!("{}/v1/chains", app.base))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(
        resp.headers().get("allow").and_then(|v| v.to_str().ok()),
        Some("GET,HEAD")
    );
    let (status, body) = (resp.status(), resp.json::<Value>().await?);
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed")
    );
    assert!(uuid::Uuid::parse_str(body["error"]["request_id"].as_str().unwrap_or("")).is_ok());

    let (_, body) = app.get("/v1/validations").await?;
    assert_eq!(body["items"].as_array().map(Vec::len), Some(1));
    app.stop().await
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() -> Result<()> {
    let app = spawn_app(None).await?;
    let resp = app
        .client
        .get(format!("{}/v1/validations/nope", app.base))
        .header("x-request-id", "client-42.a_b")
        .send()
        .await?;
    assert_eq!(
        resp.headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok()),
        Some("client-42.a_b")
    );
    let body: Value = resp.json().await?;
    assert_eq!(body["error"]["request_id"], "client-42.a_b");

    // An unsafe id (spaces, too long) is replaced, not echoed.
    let resp = app
        .client
        .get(format!("{}/healthz", app.base))
        .header("x-request-id", "a b")
        .send()
        .await?;
    let id = resp
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok(), "{id:?}");
    app.stop().await
}

#[tokio::test]
async fn chains_reserves_and_stats() -> Result<()> {
    let app = spawn_app(None).await?;
    let (status, body) = app.get("/v1/chains").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"][0]["name"], "dev");
    assert_eq!(body["items"][0]["kind"], "dev");
    assert_eq!(body["items"][0]["payment_address"], "devpayee");
    assert_eq!(
        body["items"][1]["min_payment_base_units"],
        "340282366920938463463374607431768211455"
    );
    assert_eq!(body["items"][1]["token"]["symbol"], "uBTC");

    let (_, body) = app.get("/v1/reserves").await?;
    assert_eq!(
        body,
        json!({"addresses": [], "snapshot": null, "attestation": null})
    );

    let taken_at = app.seed_reserves().await?;
    let (status, body) = app.get("/v1/reserves").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["addresses"][0]["address"], "bc1qreserve");
    assert_eq!(body["addresses"][0]["label"], "cold");
    let snap = &body["snapshot"];
    assert_eq!(snap["bitcoin_height"], 871_234);
    assert_eq!(snap["reserve_sats"], "150000000");
    assert_eq!(snap["supply_sats"], "100000000");
    assert_eq!(snap["ratio"], "1.500000");
    assert_eq!(snap["healthy"], true);
    assert_eq!(snap["stale"], false);
    assert_eq!(snap["as_of"], taken_at.to_rfc3339());
    let age = snap["age_secs"].as_i64().unwrap_or(-1);
    assert!((90..=100).contains(&age), "{age}");
    assert_eq!(snap["supply"][0]["supply_base_units"], "100000000");

    let a = app.detect("dev", "0xs1", 0, b"a").await?;
    app.detect("dev", "0xs2", 0, b"b").await?;
    app.detect("ethereum", "0xs3", 0, b"c").await?;
    app.sign(a, "{}").await?;
    let (status, body) = app.get("/v1/stats").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["total"], 3);
    assert_eq!(body["by_status"], json!({"detected": 2, "signed": 1}));
    assert_eq!(body["by_chain"]["dev"], json!({"detected": 1, "signed": 1}));
    assert_eq!(body["signed_in_window"], 1);
    assert_eq!(body["processing_ms"]["p50"], 1_500);
    app.stop().await
}

fn snapshot_at(taken_at: Timestamp, reserve: u64, eth_supply: u64) -> Result<ReserveSnapshot> {
    let supply = vec![
        SupplyEntry {
            chain: ChainId::parse("ethereum")?,
            token: "0x00000000000000000000000000000000000000bb".to_owned(),
            block_number: 19_000_000,
            block_hash: "0xeth".to_owned(),
            supply: TokenAmount::new(u128::from(eth_supply), 8),
            as_of: taken_at,
        },
        SupplyEntry {
            chain: ChainId::parse("dev")?,
            token: "devtoken".to_owned(),
            block_number: 5,
            block_hash: "0xdev".to_owned(),
            supply: TokenAmount::new(1_000, 8),
            as_of: taken_at,
        },
    ];
    let supply_sats = eth_supply + 1_000;
    let ratio_ppm = u128::from(reserve) * 1_000_000 / u128::from(supply_sats);
    let ratio_ppm = u64::try_from(ratio_ppm)?;
    Ok(ReserveSnapshot {
        taken_at,
        bitcoin_height: 871_000,
        bitcoin_block_hash: "00000000000000000001a2".to_owned(),
        reserve_sats: Sats(reserve),
        supply_sats: Sats(supply_sats),
        ratio_ppm: Some(ratio_ppm),
        healthy: ratio_ppm >= 1_000_000,
        stale: false,
        supply,
    })
}

#[tokio::test]
async fn reserve_registry_serves_every_version() -> Result<()> {
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use ubtc_bitcoin::multisig::{SortedMulti, Wrapping};
    use ubtc_bitcoin::registry as reg;
    let app = spawn_app(None).await?;
    let (status, body) = app.get("/v1/reserves/registry").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["current_version"], Value::Null);
    assert_eq!(body["versions"], json!([]));

    let secp = Secp256k1::new();
    let secrets: Vec<SecretKey> = (1..=3u8)
        .map(|b| SecretKey::from_slice(&[b; 32]))
        .collect::<Result<_, _>>()?;
    let keys: Vec<bitcoin::CompressedPublicKey> = secrets
        .iter()
        .map(|s| bitcoin::CompressedPublicKey(s.public_key(&secp)))
        .collect();
    let policy = SortedMulti::new(2, keys.clone())?;
    let v1 = reg::propose(
        None,
        ubtc_core::bundle::BitcoinNetwork::Regtest,
        keys.iter().map(ToString::to_string).collect(),
        2,
        &[reg::ProposedReserve {
            address: policy
                .address(bitcoin::Network::Regtest, Wrapping::Wsh)
                .to_string(),
            descriptor: policy.descriptor(Wrapping::Wsh),
            active: true,
        }],
    )?;
    let mut signed = v1.clone();
    for s in &secrets[..2] {
        reg::add_signature(&mut signed, reg::sign(&v1, s));
    }
    app.store
        .publish_registry_version(&signed, Timestamp::now())
        .await?;
    // Another cache key: the empty answer above stays cached for 30 s, like the
    // other reserve routes.
    let (status, body) = app.get("/v1/reserves/registry?fresh=1").await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["current_version"], 1);
    assert_eq!(body["current_fingerprint"], signed.fingerprint());
    assert_eq!(body["fingerprints"], json!([signed.fingerprint()]));
    let served = ubtc_core::registry::parse_registry_file(body.to_string().as_bytes())?;
    assert_eq!(served, vec![signed]);
    Ok(())
}

#[tokio::test]
async fn reserve_history_by_bucket() -> Result<()> {
    let app = spawn_app(None).await?;
    // Three snapshots in the hour from 10:00, one at 11:30, one the next day.
    let t0 = Timestamp::parse_rfc3339("2026-11-20T10:00:00Z")?;
    for (offset_ms, reserve) in [
        (0, 2_000_000),
        (60_000, 900_000),
        (59 * 60_000, 1_500_000),
        (90 * 60_000, 1_001_000),
        (86_400_000, 3_002_000),
    ] {
        let s = snapshot_at(t0.plus_millis(offset_ms), reserve, 1_000_000)?;
        app.store.record_reserve_snapshot(&s).await?;
    }
    let (status, body) = app
        .get("/v1/reserves/history?from=2026-11-20T00:00:00Z&to=2026-11-21T00:00:00Z&bucket=hour")
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["bucket"], "hour");
    assert_eq!(body["chain"], Value::Null);
    let points = body["points"].as_array().context("points")?;
    assert_eq!(points.len(), 2, "{body}");
    let p = &points[0];
    assert_eq!(p["time"], "2026-11-20T10:00:00Z");
    assert_eq!(p["taken_at"], t0.plus_millis(59 * 60_000).to_rfc3339());
    assert_eq!(p["samples"], 3);
    // Last snapshot of the bucket, and the bucket's range (900_000 / 1_001_000 …).
    assert_eq!(p["reserve_sats"], "1500000");
    assert_eq!(p["supply_sats"], "1001000");
    assert_eq!(p["ratio"], "1.498501");
    assert_eq!(p["min_ratio_ppm"], 899_100);
    assert_eq!(p["max_ratio_ppm"], 1_998_001);
    assert_eq!(p["chain_supply_sats"], Value::Null);
    assert_eq!(p["healthy"], true);
    assert_eq!(points[1]["time"], "2026-11-20T11:00:00Z");
    assert_eq!(points[1]["samples"], 1);

    // By day, with one chain's supply.
    let (status, body) = app
        .get("/v1/reserves/history?chain=ethereum&bucket=day&from=2026-11-01T00:00:00Z&to=2026-12-01T00:00:00Z")
        .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["chain"], "ethereum");
    let points = body["points"].as_array().context("points")?;
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["samples"], 4);
    assert_eq!(points[0]["chain_supply_sats"], "1000000");
    assert_eq!(points[1]["ratio"], "2.999000");

    // By minute over the first hour: one point per minute that has a snapshot.
    let (_, body) = app
        .get("/v1/reserves/history?bucket=minute&from=2026-11-20T10:00:00Z&to=2026-11-20T11:00:00Z")
        .await?;
    assert_eq!(body["points"].as_array().map(Vec::len), Some(3), "{body}");

    // Defaults: the last day by hour, which holds none of these.
    let (status, body) = app.get("/v1/reserves/history").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["bucket"], "hour");
    assert_eq!(body["points"], json!([]));

    for (query, code) in [
        ("bucket=week", "invalid_parameter"),
        ("from=yesterday", "invalid_parameter"),
        ("to=2026-13-01T00:00:00Z", "invalid_parameter"),
        (
            "from=2026-11-21T00:00:00Z&to=2026-11-20T00:00:00Z",
            "invalid_parameter",
        ),
        (
            "from=2026-11-20T00:00:00Z&to=2026-11-20T00:00:00Z",
            "invalid_parameter",
        ),
        // A year by minute: far more than the point cap.
        (
            "bucket=minute&from=2025-11-20T00:00:00Z&to=2026-11-20T00:00:00Z",
            "invalid_parameter",
        ),
        ("chain=solana", "invalid_chain"),
        ("chain=Not%20A%20Chain", "invalid_chain"),
        ("bukket=hour", "invalid_parameter"),
    ] {
        let (status, body) = app.get(&format!("/v1/reserves/history?{query}")).await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert_eq!(error_code(&body), code, "{query}: {body}");
    }
    // A year by day is within the cap.
    let (status, _) = app
        .get("/v1/reserves/history?bucket=day&from=2025-11-20T00:00:00Z&to=2026-11-20T00:00:00Z")
        .await?;
    assert_eq!(status, StatusCode::OK);
    app.stop().await
}

/// Test double of the dev chain (the real one lives in the `chains` crate): records
/// what it was asked and answers with made-up transaction hashes.
#[derive(Default)]
struct RecordingDevChain {
    submitted: Mutex<Vec<DemoPaymentRequest>>,
}

#[async_trait]
impl DemoPayments for RecordingDevChain {
    async fn submit(
        &self,
        req: DemoPaymentRequest,
    ) -> Result<DemoPaymentReceipt, DemoPaymentError> {
        match req.payer.as_ref().map(Payer::as_str) {
            Some("broke") => {
                return Err(DemoPaymentError::Refused(
                    "payer broke has no funds".to_owned(),
                ))
            }
            Some("offline") => {
                return Err(DemoPaymentError::Unavailable("node stopped".to_owned()))
            }
            Some("crash") => {
                return Err(DemoPaymentError::Other(
                    "dev chain state at /secret/path is corrupt".into(),
                ))
            }
            _ => {}
        }
        let mut submitted = self
            .submitted
            .lock()
            .map_err(|_| DemoPaymentError::Unavailable("poisoned".to_owned()))?;
        submitted.push(req.clone());
        let tx_hash = TxHash::parse(&format!("0xdemo{}", submitted.len()))
            .map_err(|e| DemoPaymentError::Other(Box::new(e)))?;
        Ok(DemoPaymentReceipt {
            chain: req.chain,
            tx_hash,
            index: 0,
        })
    }
}

#[tokio::test]
async fn demo_payments_only_under_demo() -> Result<()> {
    let app = spawn_app(None).await?;
    let (status, body) = app
        .post_json(
            "/v1/demo/payments",
            &json!({"chain": "dev", "message": "hi"}),
        )
        .await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "demo_disabled")
    );
    app.stop().await?;

    let dev = Arc::new(RecordingDevChain::default());
    let app = spawn_app(Some(dev.clone())).await?;
    let (status, body) = app
        .post_json(
            "/v1/demo/payments",
            &json!({"chain": "dev", "message": "hello from alice", "payer": "alice", "amount": "5000"}),
        )
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body,
        json!({"chain": "dev", "tx_hash": "0xdemo1", "index": 0,
               "validations_url": "/v1/validations?chain=dev&tx=0xdemo1"})
    );
    {
        let submitted = dev
            .submitted
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?;
        assert_eq!(
            submitted.as_slice(),
            &[DemoPaymentRequest {
                chain: ChainId::parse("dev")?,
                message: b"hello from alice".to_vec(),
                payer: Some(Payer::parse("alice")?),
                amount_base_units: Some(5000),
            }]
        );
    }

    let big = json!({"chain": "dev", "message": "x".repeat(20 * 1024)});
    let bad: Vec<(Option<&str>, Vec<u8>, StatusCode, &str)> = vec![
        (
            Some("application/json"),
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            Some("application/json"),
            br#"{"chain":"dev"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            Some("application/json"),
            br#"{"chain":"dev","message":"m","extra":1}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_body",
        ),
        (
            None,
            br#"{"chain":"dev","message":"m"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Some("text/plain"),
            br#"{"chain":"dev","message":"m"}"#.to_vec(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Some("application/json"),
            serde_json::to_vec(&big)?,
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Some("application/json"),
            br#"{"chain":"ethereum","message":"m"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_chain",
        ),
        (
            Some("application/json"),
            br#"{"chain":"nochain","message":"m"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_chain",
        ),
        (
            Some("application/json"),
            br#"{"chain":"dev","message":"m","amount":"-1"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            Some("application/json"),
            br#"{"chain":"dev","message":"m","payer":"a b"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
        ),
        (
            Some("application/json"),
            br#"{"chain":"dev","message":"m","payer":"broke"}"#.to_vec(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "demo_payment_refused",
        ),
    ];
    for (ct, body, want_status, want_code) in bad {
        let (status, resp) = app.post_raw("/v1/demo/payments", ct, body).await?;
        assert_eq!(
            (status, error_code(&resp)),
            (want_status, want_code),
            "{resp}"
        );
    }
    let (status, resp) = app
        .post_json(
            "/v1/demo/payments",
            &json!({"chain": "dev", "message": "m", "payer": "offline"}),
        )
        .await?;
    assert_eq!(
        (status, error_code(&resp)),
        (StatusCode::SERVICE_UNAVAILABLE, "demo_unavailable")
    );
    // An internal failure shows a generic message and the request id, never its cause.
    let (status, resp) = app
        .post_json(
            "/v1/demo/payments",
            &json!({"chain": "dev", "message": "m", "payer": "crash"}),
        )
        .await?;
    assert_eq!(
        (status, error_code(&resp)),
        (StatusCode::INTERNAL_SERVER_ERROR, "internal")
    );
    assert!(!resp.to_string().contains("secret"), "{resp}");
    assert!(resp["error"]["request_id"]
        .as_str()
        .is_some_and(|id| id.len() >= 32));
    // None of the refused requests reached the chain.
    assert_eq!(
        dev.submitted
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .len(),
        1
    );
    app.stop().await
}

#[tokio::test]
async fn openapi_lists_exactly_the_served_routes() -> Result<()> {
    let app = spawn_app(Some(Arc::new(RecordingDevChain::default()))).await?;
    let (status, doc) = app.get("/openapi.json").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");

    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().context("paths")? {
        for method in item.as_object().context("path item")?.keys() {
            documented.insert((method.to_uppercase(), path.clone()));
        }
    }
    let served: BTreeSet<(String, String)> = public_routes(true)
        .into_iter()
        .map(|r| (r.method.to_string(), r.path.to_owned()))
        .collect();
    assert_eq!(documented, served);
    assert!(!public_routes(false)
        .iter()
        .any(|r| r.path.starts_with("/v1/demo")));

    // The recorded list is the router's: each route answers (not with the fallback's
    // `not_found` nor a 405).
    for (method, path) in &served {
        let url = format!(
            "{}{}",
            app.base,
            path.replace("{id}", &ValidationId::new().to_string())
        );
        let req = match method.as_str() {
            "GET" => app.client.get(url),
            "POST" => app
                .client
                .post(url)
                .json(&json!({"chain": "dev", "message": "m"})),
            "DELETE" => app.client.delete(url),
            other => anyhow::bail!("unexpected method {other}"),
        };
        let resp = req.send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert_ne!(error_code(&body), "not_found", "{method} {path}");
    }

    // Every reference resolves.
    let schemas = &doc["components"]["schemas"];
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    for r in &refs {
        let pointer = r.strip_prefix('#').context("local ref")?;
        assert!(doc.pointer(pointer).is_some(), "dangling {r}");
    }

    // The documented fields are the fields actually sent.
    let id = app.detect("dev", "0xdoc", 0, b"doc").await?;
    app.sign(id, "{}").await?;
    app.seed_reserves().await?;
    let (_, list) = app.get("/v1/validations").await?;
    let (_, one) = app.get(&format!("/v1/validations/{id}")).await?;
    let (_, chains) = app.get("/v1/chains").await?;
    let (_, reserves) = app.get("/v1/reserves").await?;
    let (_, stats) = app.get("/v1/stats").await?;
    let (_, history) = app.get("/v1/reserves/history?chain=ethereum").await?;
    let (_, receipt) = app
        .post_json(
            "/v1/demo/payments",
            &json!({"chain": "dev", "message": "m"}),
        )
        .await?;
    for (schema, value) in [
        ("ValidationList", &list),
        ("Validation", &one),
        ("Chain", &chains["items"][0]),
        ("Reserves", &reserves),
        ("Snapshot", &reserves["snapshot"]),
        ("ReserveHistory", &history),
        ("ReserveHistoryPoint", &history["points"][0]),
        ("Stats", &stats),
        ("DemoPaymentReceipt", &receipt),
    ] {
        let required: BTreeSet<&str> = schemas[schema]["required"]
            .as_array()
            .context("required")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let sent: BTreeSet<&str> = value
            .as_object()
            .with_context(|| format!("{schema}: {value}"))?
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(required, sent, "{schema}");
        // And every value has the documented type and format (RFC 3339 times, …).
        let root = json!({
            "$ref": format!("#/components/schemas/{schema}"),
            "components": doc["components"],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .should_validate_formats(true)
            .build(&root)
            .map_err(|e| anyhow::anyhow!("{schema}: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{schema}: {errors:?} in {value}");
    }

    // The error-code enum in the document is the code table.
    let documented_codes: Vec<String> = doc["components"]["schemas"]["Error"]["properties"]
        ["error"]["properties"]["code"]["enum"]
        .as_array()
        .context("code enum")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let codes: Vec<String> = ErrorCode::ALL
        .iter()
        .map(|c| c.as_str().to_owned())
        .collect();
    assert_eq!(documented_codes, codes);
    app.stop().await
}

/// Test double of a dev chain that takes `delay` to answer.
struct SlowDevChain {
    delay: Duration,
    /// Signalled when a submission starts (a permit is kept if nobody waits yet).
    started: tokio::sync::Notify,
}

impl SlowDevChain {
    fn new(delay: Duration) -> Self {
        Self {
            delay,
            started: tokio::sync::Notify::new(),
        }
    }
}

#[async_trait]
impl DemoPayments for SlowDevChain {
    async fn submit(
        &self,
        req: DemoPaymentRequest,
    ) -> Result<DemoPaymentReceipt, DemoPaymentError> {
        self.started.notify_one();
        tokio::time::sleep(self.delay).await;
        Ok(DemoPaymentReceipt {
            chain: req.chain,
            tx_hash: TxHash::parse("0xslow").map_err(|e| DemoPaymentError::Other(Box::new(e)))?,
            index: 0,
        })
    }
}

#[tokio::test]
async fn slow_requests_time_out_with_a_code() -> Result<()> {
    let limits = ApiLimits {
        request_timeout: Duration::from_millis(100),
        ..ApiLimits::default()
    };
    let slow = Arc::new(SlowDevChain::new(Duration::from_secs(5)));
    let app = spawn_app_with(Some(slow), limits).await?;
    let started = Instant::now();
    let (status, body) = app
        .post_json(
            "/v1/demo/payments",
            &json!({"chain": "dev", "message": "m"}),
        )
        .await?;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "timeout")
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    app.stop().await
}

#[tokio::test]
async fn shutdown_lets_requests_in_flight_finish() -> Result<()> {
    let slow = Arc::new(SlowDevChain::new(Duration::from_millis(300)));
    let app = spawn_app(Some(slow.clone())).await?;
    let client = app.client.clone();
    let url = format!("{}/v1/demo/payments", app.base);
    let in_flight = tokio::spawn(async move {
        client
            .post(url)
            .json(&json!({"chain": "dev", "message": "m"}))
            .send()
            .await
            .map(|r| r.status())
    });
    // Shut down only once the request is inside the handler.
    tokio::time::timeout(Duration::from_secs(10), slow.started.notified()).await?;
    let base = app.base.clone();
    app.stop().await?;
    assert_eq!(in_flight.await??, StatusCode::ACCEPTED);
    // And nothing listens any more.
    assert!(reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .send()
        .await
        .is_err());
    Ok(())
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}
