//! Rate limits against the real Redis on 127.0.0.1:6379 (override with
//! `UBTC_TEST_REDIS_URL`). Each test uses its own key prefix, so tests share the
//! server safely; Redis "going away" is a TCP proxy in front of it that the test cuts
//! and restores, never the server itself.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::SecretKey;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use ubtc_chains::dev::{DevBitcoin, DevChain};
use ubtc_core::bundle::BitcoinNetwork;
use ubtc_core::payment::Payer;
use ubtc_core::{ChainId, Timestamp, ValidationStatus};
use ubtc_limits::{Bucket, FallbackLimiter, Limiter, Mode, PaymentLimits, Rate, RedisLimiter};
use ubtc_pipeline::{
    ChainPolicy, LocalKeySigner, Monitor, PaymentLimiter, Worker, WorkerConfig, WorkerTick,
};
use ubtc_store::{SqliteStore, Store};

fn redis_url() -> String {
    std::env::var("UBTC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

fn redis_addr() -> String {
    redis_url()
        .trim_start_matches("redis://")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

fn prefix() -> String {
    format!("ubtc-test:{}:", uuid::Uuid::new_v4().simple())
}

/// Fails (never skips) when Redis is not there, saying what is missing.
async fn require_redis() {
    if let Err(e) = TcpStream::connect(redis_addr()).await {
        panic!(
            "these tests need Redis at {} (set UBTC_TEST_REDIS_URL): {e}",
            redis_addr()
        );
    }
}

async fn redis_limiter(url: &str) -> RedisLimiter {
    require_redis().await;
    RedisLimiter::new(url, prefix(), Duration::from_millis(250)).unwrap()
}

async fn raw_get(key_prefix_hint: &str) -> Vec<String> {
    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("KEYS")
        .arg(format!("{key_prefix_hint}*"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn redis_gcra_bursts_then_spaces_and_refuses_without_charging() {
    let limiter = redis_limiter(&redis_url()).await;
    let b = [Bucket::new(
        "k",
        Rate {
            emission_ms: 100,
            burst: 3,
        },
    )];
    let now = 1_000_000;
    let mut ats = Vec::new();
    for _ in 0..5 {
        ats.push(limiter.acquire(&b, now, Mode::Reserve).await.unwrap().at_ms);
    }
    assert_eq!(ats, [now, now, now, now + 100, now + 200]);
    // The bucket is booked until now + 300: trying now is refused and charges nothing.
    let d = limiter.acquire(&b, now, Mode::TryNow).await.unwrap();
    assert_eq!((d.at_ms, d.charged), (now + 300, false));
    let d = limiter.acquire(&b, now, Mode::TryNow).await.unwrap();
    assert_eq!(
        d.at_ms,
        now + 300,
        "a refusal must not push the next slot back"
    );
    let d = limiter.acquire(&b, now + 300, Mode::TryNow).await.unwrap();
    assert!(d.charged && d.at_ms == now + 300);
}

#[tokio::test]
async fn concurrent_callers_never_take_more_than_the_burst() {
    let limiter = Arc::new(redis_limiter(&redis_url()).await);
    let now = Timestamp::now().as_millis();
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let limiter = limiter.clone();
        tasks.push(tokio::spawn(async move {
            let b = [Bucket::new("shared", Rate::per_minute(1, 10))];
            limiter
                .acquire(&b, now, Mode::TryNow)
                .await
                .unwrap()
                .charged
        }));
    }
    let mut charged = 0;
    for t in tasks {
        charged += usize::from(t.await.unwrap());
    }
    assert_eq!(
        charged, 10,
        "the script is atomic: exactly the burst passes"
    );
}

#[tokio::test]
async fn payment_limits_per_payer_and_per_chain() {
    let limiter = Arc::new(redis_limiter(&redis_url()).await);
    let limits = PaymentLimits::new(
        limiter,
        Rate {
            emission_ms: 1_000,
            burst: 2,
        },
        Rate {
            emission_ms: 10,
            burst: 3,
        },
    );
    let chain = ChainId::parse("dev").unwrap();
    let other_chain = ChainId::parse("other").unwrap();
    let alice = Payer::parse("0xa11ce").unwrap();
    let bob = Payer::parse("0xb0b").unwrap();
    let now = Timestamp::from_millis(5_000_000);
    assert_eq!(limits.admit(&chain, &alice, now).await, None);
    assert_eq!(limits.admit(&chain, &alice, now).await, None);
    // Alice's own bucket is empty: her third payment waits one emission interval.
    assert_eq!(
        limits.admit(&chain, &alice, now).await,
        Some(now.plus_millis(1_000))
    );
    // Bob has his own bucket, but the chain's burst (3) is now spent.
    assert_eq!(
        limits.admit(&chain, &bob, now).await,
        Some(now.plus_millis(10))
    );
    // Another chain is limited separately.
    assert_eq!(limits.admit(&other_chain, &alice, now).await, None);
}

/// A TCP proxy to Redis that the test can cut (closing every connection and
/// refusing new ones) and restore, standing in for "Redis stopped".
struct Proxy {
    url: String,
    up: watch::Sender<bool>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let (up, rx) = watch::channel(true);
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    return;
                };
                let mut rx = rx.clone();
                if !*rx.borrow() {
                    let _ = client.shutdown().await;
                    continue;
                }
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(redis_addr()).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = rx.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { url, up }
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

#[tokio::test]
async fn redis_away_mid_test_falls_back_locally_then_shared_limits_resume() {
    require_redis().await;
    let proxy = Proxy::start().await;
    let key_prefix = prefix();
    let redis = Arc::new(
        RedisLimiter::new(&proxy.url, key_prefix.clone(), Duration::from_millis(200)).unwrap(),
    );
    let limiter = FallbackLimiter::with_probe_interval(redis, 100);
    let rate = Rate::per_minute(60, 2);
    let bucket = |k: &str| [Bucket::new(k, rate)];

    let now = Timestamp::now().as_millis();
    assert!(
        limiter
            .acquire(&bucket("before"), now, Mode::TryNow)
            .await
            .unwrap()
            .charged
    );
    assert!(!limiter.is_degraded());
    assert_eq!(
        raw_get(&key_prefix).await.len(),
        1,
        "the decision was stored in Redis"
    );

    proxy.cut();
    let started = std::time::Instant::now();
    // Requests keep being served, and limited, by the local limiter.
    let mut charged = 0;
    for _ in 0..5 {
        let d = limiter
            .acquire(&bucket("during"), now, Mode::TryNow)
            .await
            .unwrap();
        charged += usize::from(d.charged);
    }
    assert_eq!(charged, 2, "the local limiter applies the same rate");
    assert!(limiter.is_degraded());
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "an outage must not stall requests: {:?}",
        started.elapsed()
    );
    assert_eq!(
        raw_get(&key_prefix).await.len(),
        1,
        "nothing reached Redis while cut"
    );

    proxy.restore();
    // Within a probe interval (plus the manager's reconnection), Redis decides again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(150)).await;
        let now = Timestamp::now().as_millis();
        limiter
            .acquire(&bucket("after"), now, Mode::TryNow)
            .await
            .unwrap();
        if !limiter.is_degraded() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "Redis was never used again"
        );
    }
    let keys = raw_get(&key_prefix).await;
    assert!(keys.iter().any(|k| k.ends_with("after")), "{keys:?}");
}

/// Bursts beyond the limit become delayed validations that complete later; none is
/// lost. Real monitor, worker, SQLite store and Redis limits (through the fallback).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_become_delayed_validations_that_complete_later() {
    require_redis().await;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&format!("sqlite:{}", dir.path().join("l.db").display()), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let chain_id = ChainId::parse("dev").unwrap();
    let chain = DevChain::new(chain_id.clone(), "0xpay", 1);
    let redis =
        Arc::new(RedisLimiter::new(&redis_url(), prefix(), Duration::from_millis(250)).unwrap());
    let limits = PaymentLimits::new(
        Arc::new(FallbackLimiter::new(redis)),
        Rate {
            emission_ms: 300,
            burst: 2,
        },
        Rate {
            emission_ms: 1,
            burst: 1_000,
        },
    );
    let monitor = Monitor::new(
        Arc::new(chain.clone()),
        store.clone(),
        Arc::new(limits),
        ChainPolicy {
            min_payment_base_units: 1,
            scan_max_blocks: 100,
        },
    );
    let worker = Worker::new(
        store.clone(),
        Arc::new(LocalKeySigner::new(
            SecretKey::new(&mut rand::thread_rng()),
            bitcoin::Network::Regtest,
        )),
        Arc::new(DevBitcoin::new(850_000)),
        WorkerConfig {
            worker_id: "w".into(),
            lease_ms: 30_000,
            max_attempts: 3,
            backoff_base_ms: 0,
            backoff_max_ms: 0,
            network: BitcoinNetwork::Regtest,
            native_units: [(chain_id.clone(), "units".to_owned())].into(),
        },
    );
    let payer = Payer::parse("0xf100d").unwrap();
    let txs: Vec<_> = (0..6)
        .map(|i| chain.submit_payment(&payer, 10, format!("burst {i}").as_bytes()))
        .collect();
    chain.mine(1);
    let tick = monitor.tick().await.unwrap();
    assert_eq!((tick.queued, tick.delayed), (2, 4), "{tick:?}");
    for tx in &txs {
        let v = &store.find_by_payment(None, tx.as_str()).await.unwrap()[0];
        if v.status == ValidationStatus::Delayed {
            assert!(
                v.not_before.is_some(),
                "a delayed validation says until when"
            );
        }
    }
    let mut signed = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while signed < 6 {
        match worker.tick().await.unwrap() {
            WorkerTick::Signed(_) => signed += 1,
            WorkerTick::Idle => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("unexpected {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {signed} of 6 signed"
        );
    }
    for tx in &txs {
        let v = &store.find_by_payment(None, tx.as_str()).await.unwrap()[0];
        assert_eq!(v.status, ValidationStatus::Signed, "none lost");
    }
}

/// The Lua script and the in-memory limiter are two implementations of one
/// algorithm: on the same random sequence of calls they must decide alike.
#[tokio::test]
async fn redis_and_memory_decide_alike_on_random_sequences() {
    use rand::{Rng, SeedableRng};
    let redis = redis_limiter(&redis_url()).await;
    let memory = ubtc_limits::MemoryLimiter::new();
    let seed: u64 = rand::thread_rng().gen();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rates = [
        Rate {
            emission_ms: 50,
            burst: 1,
        },
        Rate {
            emission_ms: 10,
            burst: 5,
        },
        Rate {
            emission_ms: 200,
            burst: 3,
        },
    ];
    let mut now = 10_000_000i64;
    for step in 0..300 {
        now += rng.gen_range(0..40);
        let n = rng.gen_range(1..=3);
        let buckets: Vec<Bucket> = (0..n)
            .map(|_| {
                let k = rng.gen_range(0..4);
                Bucket::new(format!("k{k}"), rates[k % rates.len()])
            })
            .collect();
        // A request names each bucket once.
        let mut seen = std::collections::HashSet::new();
        let buckets: Vec<Bucket> = buckets
            .into_iter()
            .filter(|b| seen.insert(b.key.clone()))
            .collect();
        let mode = if rng.gen_bool(0.5) {
            Mode::Reserve
        } else {
            Mode::TryNow
        };
        let a = redis.acquire(&buckets, now, mode).await.unwrap();
        let b = memory.acquire(&buckets, now, mode).await.unwrap();
        assert_eq!(a, b, "seed {seed}, step {step}, {buckets:?} {mode:?}");
    }
}

#[tokio::test]
async fn redis_and_memory_lease_alike_on_random_sequences() {
    use rand::{Rng, SeedableRng};
    let redis = redis_limiter(&redis_url()).await;
    let memory = ubtc_limits::MemoryLimiter::new();
    let seed: u64 = rand::thread_rng().gen();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let rates = [
        Rate {
            emission_ms: 50,
            burst: 1,
        },
        Rate {
            emission_ms: 7,
            burst: 20,
        },
    ];
    let mut now = 10_000_000i64;
    for step in 0..300 {
        now += rng.gen_range(0..60);
        let k = rng.gen_range(0..3);
        let bucket = Bucket::new(format!("lease{k}"), rates[k % rates.len()]);
        let want = rng.gen_range(1..=16);
        let a = redis.lease(&bucket, now, want).await.unwrap();
        let b = memory.lease(&bucket, now, want).await.unwrap();
        assert_eq!(a, b, "seed {seed}, step {step}, {bucket:?} want {want}");
        assert!(a.units <= want);
    }
}

/// Two API processes on one Redis, each leasing units of the same client's bucket:
/// together they never pass more than the burst plus what the refill allows, and
/// each refusal is told when to retry.
#[tokio::test]
async fn two_processes_leasing_never_pass_more_than_the_shared_bucket() {
    use ubtc_limits::{Client, ClientLimits};
    let url = redis_url();
    require_redis().await;
    let p = prefix();
    let rate = Rate {
        emission_ms: 100,
        burst: 50,
    };
    let process = || {
        ClientLimits::new(
            Arc::new(RedisLimiter::new(&url, p.clone(), Duration::from_millis(250)).unwrap()),
            rate,
            rate,
        )
        .with_leases(16, Duration::from_secs(1))
    };
    let (a, b) = (process(), process());
    let ip = Client::Ip([192, 0, 2, 7].into());
    let now = 50_000_000i64;
    let mut passed = 0;
    for i in 0..200 {
        let l = if i % 2 == 0 { &a } else { &b };
        match l.try_acquire(&[ip], now).await {
            Ok(()) => passed += 1,
            Err(wait) => assert!(wait >= Duration::from_millis(1)),
        }
    }
    // At one instant: at most the burst, and leases held back in one process may
    // refuse the other up to a lease early.
    assert!((50 - 16..=50).contains(&passed), "passed {passed}");
}

/// Redis away: leased API limits come from the local limiter at once (no error, no
/// wait per request), and still refuse past the burst.
#[tokio::test]
async fn leased_api_limits_fall_back_locally_when_redis_is_away() {
    use ubtc_limits::{Client, ClientLimits};
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let redis = RedisLimiter::new(
        &format!("redis://127.0.0.1:{port}"),
        prefix(),
        Duration::from_millis(100),
    )
    .unwrap();
    let limits = ClientLimits::new(
        Arc::new(FallbackLimiter::new(Arc::new(redis))),
        Rate::per_minute(60, 10),
        Rate::per_minute(60, 10),
    );
    let ip = Client::Ip([198, 51, 100, 9].into());
    let started = std::time::Instant::now();
    let now = Timestamp::now().as_millis();
    let mut passed = 0;
    for _ in 0..30 {
        if limits.try_acquire(&[ip], now).await.is_ok() {
            passed += 1;
        }
    }
    assert_eq!(passed, 10, "the burst, decided locally");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}
