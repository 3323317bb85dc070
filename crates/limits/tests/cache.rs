//! The response cache against the real Redis on 127.0.0.1:6379 (a key prefix per
//! test): shared between "processes" (two caches on one prefix), invalidation,
//! size bound, and Redis away (a closed port) meaning a miss, never an error.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::time::Duration;

use ubtc_limits::ResponseCache;

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
async fn shared_between_processes_and_invalidated() {
    require_redis().await;
    let prefix = format!("ubtc-test:{}:", uuid::Uuid::new_v4().simple());
    let local_ttl = Duration::from_millis(100);
    let a = ResponseCache::with_redis(&redis_url(), prefix.clone(), Duration::from_millis(250))
        .unwrap()
        .with_local_ttl(local_ttl);
    let b = ResponseCache::with_redis(&redis_url(), prefix, Duration::from_millis(250))
        .unwrap()
        .with_local_ttl(local_ttl);
    assert!(b.get("r").await.is_none());
    a.put("r", b"reserves v1".to_vec(), Duration::from_secs(30))
        .await;
    assert_eq!(
        b.get("r").await.unwrap().as_slice(),
        b"reserves v1",
        "seen through Redis"
    );
    a.invalidate("r").await;
    assert!(a.get("r").await.is_none());
    tokio::time::sleep(local_ttl + Duration::from_millis(20)).await;
    assert!(
        b.get("r").await.is_none(),
        "gone everywhere within the local time to live"
    );
    // Entries expire with their time to live.
    a.put("short", b"x".to_vec(), Duration::from_millis(50))
        .await;
    tokio::time::sleep(Duration::from_millis(160)).await;
    assert!(b.get("short").await.is_none());
    // Values over the size bound are not cached.
    a.put(
        "big",
        vec![0; a.entry_max_bytes() + 1],
        Duration::from_secs(30),
    )
    .await;
    assert!(b.get("big").await.is_none());
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
    assert!(cache.get("k").await.is_none());
    cache.put("k", b"v".to_vec(), Duration::from_secs(5)).await;
    assert_eq!(cache.get("k").await.unwrap().as_slice(), b"v");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}
