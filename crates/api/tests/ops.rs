//! Operations endpoints of the public API over a real socket: `/metrics` in the
//! Prometheus format, and rate limits per client IP and per API key (429 with
//! Retry-After) backed by the real Redis on 127.0.0.1:6379 (its own key prefix).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use async_trait::async_trait;
use reqwest::StatusCode;
use tokio_util::sync::CancellationToken;
use ubtc_api::{public_router, serve, ApiState, ClientKey, RequestLimiter};
use ubtc_core::Timestamp;
use ubtc_limits::{Client, ClientLimits, FallbackLimiter, Rate, RedisLimiter};
use ubtc_store::{SqliteStore, Store};

/// The same glue the binary uses: API client keys onto the limits crate.
struct Glue(ClientLimits);

#[async_trait]
impl RequestLimiter for Glue {
    async fn try_acquire(&self, clients: &[ClientKey]) -> Result<(), Duration> {
        let clients: Vec<Client<'_>> = clients
            .iter()
            .map(|c| match c {
                ClientKey::Ip(ip) => Client::Ip(*ip),
                ClientKey::ApiKey(d) => Client::KeyDigest(d),
            })
            .collect();
        self.0
            .try_acquire(&clients, Timestamp::now().as_millis())
            .await
    }
}

struct App {
    base: String,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

async fn spawn(limiter: Option<Arc<dyn RequestLimiter>>) -> Result<App> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let store =
        SqliteStore::connect(&format!("sqlite:{}", dir.path().join("a.db").display()), 2).await?;
    store.migrate().await?;
    let mut state =
        ApiState::new(Arc::new(store), vec![]).with_metrics(ubtc_api::metrics::install_recorder()?);
    if let Some(l) = limiter {
        state = state.with_rate_limiter(l);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, public_router(state), shutdown.clone()));
    Ok(App {
        base,
        shutdown,
        _dir: dir,
    })
}

fn redis_limits(per_ip: Rate, per_key: Rate) -> Arc<dyn RequestLimiter> {
    let url =
        std::env::var("UBTC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("ubtc-test:{}:", uuid::Uuid::new_v4().simple());
    let redis = RedisLimiter::new(&url, prefix, Duration::from_millis(250)).unwrap();
    Arc::new(Glue(ClientLimits::new(
        Arc::new(FallbackLimiter::new(Arc::new(redis))),
        per_ip,
        per_key,
    )))
}

async fn require_redis() {
    let addr = std::env::var("UBTC_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
        .trim_start_matches("redis://")
        .to_owned();
    if let Err(e) = tokio::net::TcpStream::connect(&addr).await {
        panic!("this test needs Redis at {addr} (set UBTC_TEST_REDIS_URL): {e}");
    }
}

#[tokio::test]
async fn metrics_show_route_latency_and_database_gauges() -> Result<()> {
    let app = spawn(None).await?;
    let client = reqwest::Client::new();
    for _ in 0..3 {
        client.get(format!("{}/v1/stats", app.base)).send().await?;
    }
    client
        .get(format!("{}/v1/validations/not-a-uuid", app.base))
        .send()
        .await?;
    let resp = client.get(format!("{}/metrics", app.base)).send().await?;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers()["content-type"]
        .to_str()?
        .starts_with("text/plain"));
    let text = resp.text().await?;
    assert!(text.contains("ubtc_http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/stats\",status=\"2xx\""), "{text}");
    // The route template, not the raw path.
    assert!(
        text.contains("route=\"/v1/validations/{id}\",status=\"4xx\""),
        "{text}"
    );
    assert!(!text.contains("not-a-uuid"));
    assert!(text.contains("ubtc_queue_depth 0"), "{text}");
    app.shutdown.cancel();
    Ok(())
}

#[tokio::test]
async fn clients_beyond_their_rate_get_429_with_retry_after() -> Result<()> {
    require_redis().await;
    let app = spawn(Some(redis_limits(
        Rate::per_minute(6, 3),
        Rate::per_minute(60, 5),
    )))
    .await?;
    let client = reqwest::Client::new();
    let get = |path: &str, key: Option<&str>| {
        let mut req = client.get(format!("{}{path}", app.base));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        req.send()
    };
    for _ in 0..3 {
        assert_eq!(get("/v1/stats", None).await?.status(), StatusCode::OK);
    }
    let refused = get("/v1/stats", None).await?;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = refused.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=10).contains(&retry), "retry-after {retry}");
    let body: serde_json::Value = refused.json().await?;
    assert_eq!(body["error"]["code"], "rate_limited");
    assert!(body["error"]["request_id"].is_string());
    // Probes are never limited.
    assert_eq!(get("/healthz", None).await?.status(), StatusCode::OK);
    // The IP bucket still applies to a request with an API key (both are charged),
    // and a refusal charged nothing.
    assert_eq!(
        get("/v1/stats", Some("k1")).await?.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    let text = client
        .get(format!("{}/metrics", app.base))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        text.contains("ubtc_ratelimit_hits_total{scope=\"api\"}"),
        "{text}"
    );
    app.shutdown.cancel();
    Ok(())
}

/// The binary's glue for the cache, as for the limiter.
struct CacheGlue(ubtc_limits::ResponseCache);

#[async_trait]
impl ubtc_api::ResponseCache for CacheGlue {
    async fn get(&self, tag: &'static str, key: &str) -> ubtc_api::cache::CacheLookup {
        match self.0.get(tag, key).await {
            ubtc_limits::Lookup::Hit(b) => ubtc_api::cache::CacheLookup::Hit(b),
            ubtc_limits::Lookup::Miss(g) => ubtc_api::cache::CacheLookup::Miss(g.value()),
        }
    }
    async fn put(&self, key: &str, generation: u64, value: bytes::Bytes, ttl: Duration) {
        self.0.put(key, generation.into(), value, ttl).await
    }
}

#[tokio::test]
async fn read_routes_are_served_from_the_cache() -> Result<()> {
    require_redis().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let store =
        SqliteStore::connect(&format!("sqlite:{}", dir.path().join("c.db").display()), 2).await?;
    store.migrate().await?;
    let url =
        std::env::var("UBTC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("ubtc-test:{}:", uuid::Uuid::new_v4().simple());
    let cache = ubtc_limits::ResponseCache::with_redis(&url, prefix, Duration::from_millis(250))?;
    let state =
        ApiState::new(Arc::new(store), vec![]).with_response_cache(Arc::new(CacheGlue(cache)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, public_router(state), shutdown.clone()));
    let client = reqwest::Client::new();
    let first = client.get(format!("{base}/v1/reserves")).send().await?;
    assert_eq!(first.headers()["x-cache"], "miss");
    let first_body = first.text().await?;
    let second = client.get(format!("{base}/v1/reserves")).send().await?;
    assert_eq!(second.status(), StatusCode::OK);
    assert_eq!(second.headers()["x-cache"], "hit");
    assert!(second.headers()["content-type"]
        .to_str()?
        .starts_with("application/json"));
    assert_eq!(second.text().await?, first_body);
    // Uncached routes and error answers pass through.
    let stats = client.get(format!("{base}/v1/stats")).send().await?;
    assert!(stats.headers().get("x-cache").is_none());
    let missing = client
        .get(format!("{base}/v1/proofs/{}", uuid::Uuid::new_v4()))
        .send()
        .await?;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert!(missing.headers().get("x-cache").is_none());
    shutdown.cancel();
    Ok(())
}

/// Two `ubtc serve` processes (two routers with their own cache instances, so their
/// own local layers) on one Redis prefix, and a worker (a third instance) that takes
/// a new reserve snapshot: both serve the new figures within the generation check.
#[tokio::test]
async fn a_new_snapshot_invalidates_reserve_answers_in_every_process() -> Result<()> {
    use ubtc_limits::ReserveCacheInvalidator;
    require_redis().await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::connect(&format!("sqlite:{}", dir.path().join("i.db").display()), 2).await?,
    );
    store.migrate().await?;
    let url =
        std::env::var("UBTC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("ubtc-test:{}:", uuid::Uuid::new_v4().simple());
    let gen_check = Duration::from_millis(100);
    let cache = || -> Result<ubtc_limits::ResponseCache> {
        Ok(ubtc_limits::ResponseCache::with_redis(
            &url,
            prefix.clone(),
            Duration::from_millis(250),
        )?
        .with_gen_check(gen_check))
    };
    let shutdown = CancellationToken::new();
    let mut bases = Vec::new();
    for _ in 0..2 {
        let state =
            ApiState::new(store.clone(), vec![]).with_response_cache(Arc::new(CacheGlue(cache()?)));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        bases.push(format!("http://{}", listener.local_addr()?));
        tokio::spawn(serve(listener, public_router(state), shutdown.clone()));
    }
    let client = reqwest::Client::new();
    let get = |base: String| {
        let client = client.clone();
        async move {
            let r = client.get(format!("{base}/v1/reserves")).send().await?;
            let hit = r.headers()["x-cache"].to_str()?.to_owned();
            anyhow::Ok((hit, r.text().await?))
        }
    };
    let (first, empty) = get(bases[0].clone()).await?;
    assert_eq!(first, "miss");
    let (second, same) = get(bases[1].clone()).await?;
    assert_eq!(
        (second.as_str(), &same),
        ("hit", &empty),
        "shared through Redis"
    );
    // Both now hold it in their local layer.
    assert_eq!(get(bases[0].clone()).await?.0, "hit");
    assert_eq!(get(bases[1].clone()).await?.0, "hit");

    // The worker stores a snapshot and invalidates, as the snapshotter does.
    store
        .record_reserve_snapshot(&ubtc_store::ReserveSnapshot {
            taken_at: Timestamp::now(),
            bitcoin_height: 871_234,
            bitcoin_block_hash: "00".repeat(32),
            reserve_sats: ubtc_core::Sats(1_000),
            supply_sats: ubtc_core::Sats(0),
            ratio_ppm: None,
            healthy: true,
            stale: false,
            supply: vec![],
        })
        .await?;
    let worker = cache()?;
    worker.reserves_changed().await;
    tokio::time::sleep(gen_check + Duration::from_millis(50)).await;
    for base in &bases {
        let (hit, body) = get(base.clone()).await?;
        assert!(body.contains("871234"), "{body}");
        assert_ne!(body, empty);
        // The first process to ask recomputes; the other may take its answer.
        let _ = hit;
    }
    // And from then on it is cached again.
    assert_eq!(get(bases[0].clone()).await?.0, "hit");
    shutdown.cancel();
    Ok(())
}

/// Queue age and the processing-time histogram, read from the database at the scrape.
#[tokio::test]
async fn metrics_show_queue_age_and_processing_histogram() -> Result<()> {
    use ubtc_core::payment::{ChainBlock, Payer, TxHash};
    use ubtc_core::{ChainId, PaymentRef, ValidationId};
    use ubtc_store::{NewValidation, SignedResult};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let store: Arc<dyn Store> = Arc::new(
        SqliteStore::connect(&format!("sqlite:{}", dir.path().join("m.db").display()), 2).await?,
    );
    store.migrate().await?;
    let now = Timestamp::now();
    let validation = |n: u32| NewValidation {
        id: ValidationId::new(),
        payment: PaymentRef {
            chain: ChainId::parse("dev").unwrap(),
            tx_hash: TxHash::parse(&format!("0x{:064x}", n)).unwrap(),
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
    // One signed 1.5 s after detection, then one waiting in the queue for 5 s.
    let signed = validation(1);
    let t0 = now.plus_millis(-10_000);
    store.record_detected(&signed, t0).await?;
    store.confirm_and_enqueue(signed.id, 1, None, t0).await?;
    let claim = store.claim_next("w", 30_000, t0).await?.unwrap();
    let result = SignedResult {
        statement_text: "statement".into(),
        bundle_json: "{}".into(),
        outbox: vec![],
        processing_ms: 1_500,
    };
    store.complete_signed(&claim, &result, now).await?;
    let waiting = validation(2);
    let queued_at = now.plus_millis(-5_000);
    store.record_detected(&waiting, queued_at).await?;
    store
        .confirm_and_enqueue(waiting.id, 1, None, queued_at)
        .await?;

    let state =
        ApiState::new(store.clone(), vec![]).with_metrics(ubtc_api::metrics::install_recorder()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, public_router(state), shutdown.clone()));
    let text = reqwest::get(format!("{base}/metrics"))
        .await?
        .text()
        .await?;
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().parse().unwrap()))
            .unwrap_or_else(|| panic!("{series} missing:\n{text}"))
    };
    let age = value("ubtc_queue_oldest_age_seconds ");
    assert!((5.0..30.0).contains(&age), "age {age}");
    assert_eq!(
        value("ubtc_processing_window_seconds_bucket{le=\"1\"} "),
        0.0
    );
    assert_eq!(
        value("ubtc_processing_window_seconds_bucket{le=\"2.5\"} "),
        1.0
    );
    assert_eq!(
        value("ubtc_processing_window_seconds_bucket{le=\"+Inf\"} "),
        1.0
    );
    assert_eq!(value("ubtc_processing_window_seconds_sum "), 1.5);
    assert_eq!(value("ubtc_processing_window_seconds_count "), 1.0);
    shutdown.cancel();
    Ok(())
}
