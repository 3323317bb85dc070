//! The response cache against the real Redis on 127.0.0.1:6379 (a key prefix per
//! test): shared between "processes" (two caches on one prefix), invalidation,
//! size bound, and Redis away (a closed port) meaning a miss, never an error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::time::Duration;

use bytes::Bytes;
use ubtc_limits::{Lookup, ResponseCache};

/// The bytes of a hit, `None` for a miss.
async fn get(cache: &ResponseCache, tag: &str, key: &str) -> Option<Bytes> {
    match cache.get(tag, key).await {
        Lookup::Hit(b) => Some(b),
        Lookup::Miss(_) => None,
    }
}

/// Stores under the generation a lookup sees now.
async fn put(cache: &ResponseCache, tag: &str, key: &str, value: &[u8], ttl: Duration) {
    let generation = match cache.get(tag, key).await {
        Lookup::Hit(_) => panic!("{key} is already cached"),
        Lookup::Miss(g) => g,
    };
    cache
        .put(key, generation, Bytes::copy_from_slice(value), ttl)
        .await;
}

fn redis_url() -> String {
    std::env::var("UBTC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

async fn require_redis() {
    let addr = redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    if let Err(e) = tokio::net::TcpStream::connect(&addr).await {
        panic!("these tests need Redis at {addr} (set UBTC_TEST_REDIS_URL): {e}");
    }
}

#[tokio::test]
async fn shared_between_processes_and_invalidated_by_tag() {
    require_redis().await;
    let prefix = format!("ubtc-test:{}:", uuid::Uuid::new_v4().simple());
    let gen_check = Duration::from_millis(100);
    // Two "processes" on one prefix, each with its own local layer.
    let a = ResponseCache::with_redis(&redis_url(), prefix.clone(), Duration::from_millis(250))
        .unwrap()
        .with_gen_check(gen_check);
    let b = ResponseCache::with_redis(&redis_url(), prefix, Duration::from_millis(250))
        .unwrap()
        .with_gen_check(gen_check);
    assert!(get(&b, "reserves", "/v1/reserves").await.is_none());
    put(
        &a,
        "reserves",
        "/v1/reserves",
        b"reserves v1",
        Duration::from_secs(30),
    )
    .await;
    put(
        &a,
        "reserves",
        "/v1/reserves/history",
        b"history v1",
        Duration::from_secs(30),
    )
    .await;
    put(
        &a,
        "chains",
        "/v1/chains",
        b"chains",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        get(&b, "reserves", "/v1/reserves").await.unwrap().as_ref(),
        b"reserves v1",
        "seen through Redis"
    );
    assert!(get(&b, "reserves", "/v1/reserves/history").await.is_some());
    // Served from b's local layer now, then invalidated by a: at once in a, within
    // the generation check in b, for every key of the tag and no other tag.
    a.invalidate("reserves").await;
    assert!(get(&a, "reserves", "/v1/reserves").await.is_none());
    tokio::time::sleep(gen_check + Duration::from_millis(20)).await;
    assert!(
        get(&b, "reserves", "/v1/reserves").await.is_none(),
        "invalidated in b too"
    );
    assert!(get(&b, "reserves", "/v1/reserves/history").await.is_none());
    assert_eq!(
        get(&b, "chains", "/v1/chains").await.unwrap().as_ref(),
        b"chains",
        "another tag is untouched"
    );
    // A new answer after the invalidation is shared again.
    put(
        &b,
        "reserves",
        "/v1/reserves",
        b"reserves v2",
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(
        get(&a, "reserves", "/v1/reserves").await.unwrap().as_ref(),
        b"reserves v2"
    );
    // Entries expire with their time to live.
    put(&a, "chains", "short", b"x", Duration::from_millis(50)).await;
    tokio::time::sleep(Duration::from_millis(160)).await;
    assert!(get(&b, "chains", "short").await.is_none());
    // Values over the size bound are not cached.
    let big = vec![0; a.entry_max_bytes() + 1];
    put(&a, "chains", "big", &big, Duration::from_secs(30)).await;
    assert!(get(&b, "chains", "big").await.is_none());
}

#[tokio::test]
async fn an_answer_computed_across_an_invalidation_is_never_served() {
    require_redis().await;
    let prefix = format!("ubtc-test:{}:", uuid::Uuid::new_v4().simple());
    let a = ResponseCache::with_redis(&redis_url(), prefix.clone(), Duration::from_millis(250))
        .unwrap();
    let b = ResponseCache::with_redis(&redis_url(), prefix, Duration::from_millis(250)).unwrap();
    // a misses and starts computing from the old figures; meanwhile b invalidates.
    let Lookup::Miss(before) = a.get("reserves", "/v1/reserves").await else {
        panic!("empty cache hit");
    };
    b.invalidate("reserves").await;
    a.put(
        "/v1/reserves",
        before,
        Bytes::from_static(b"old"),
        Duration::from_secs(30),
    )
    .await;
    assert!(
        get(&b, "reserves", "/v1/reserves").await.is_none(),
        "b never serves it"
    );
}

#[tokio::test]
async fn local_only_invalidates_in_process() {
    let c = ResponseCache::local_only();
    put(
        &c,
        "reserves",
        "/v1/reserves",
        b"v1",
        Duration::from_secs(30),
    )
    .await;
    assert!(get(&c, "reserves", "/v1/reserves").await.is_some());
    c.invalidate("reserves").await;
    assert!(get(&c, "reserves", "/v1/reserves").await.is_none());
}

#[tokio::test]
async fn redis_away_is_a_miss_and_the_local_layer_still_serves() {
    // A port nobody listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let cache = ResponseCache::with_redis(
        &format!("redis://127.0.0.1:{port}"),
        "p:",
        Duration::from_millis(100),
    )
    .unwrap();
    let started = std::time::Instant::now();
    assert!(get(&cache, "t", "k").await.is_none());
    put(&cache, "t", "k2", b"v", Duration::from_secs(5)).await;
    assert_eq!(get(&cache, "t", "k2").await.unwrap().as_ref(), b"v");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
