//! Benchmark: `GET /v1/reserves` through the full public router with the response
//! cache and rate limiting on (both in the real Redis on 127.0.0.1:6379, or
//! `UBTC_TEST_REDIS_URL`), beside a bare axum handler that returns the same bytes,
//! in one run, loaded by `wrk` on loopback (install it: `apt-get install wrk`).
//!
//! `cargo run -p ubtc-api --example reserves_bench [-- SECONDS CONNECTIONS]`
//!
//! The rate limit is set high enough that no request is refused, in Redis as
//! `ubtc serve` runs it: each process leases units from Redis in batches (up to
//! `LEASE_MAX_UNITS_DEFAULT` per round trip) and spends them locally, and cached
//! answers come from the in-process layer. The metrics recorder is on, as in
//! production. The ratio printed last is the median of back-to-back pairs.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;
use ubtc_api::cache::CacheLookup;
use ubtc_api::{public_router, serve, ApiState, ClientKey, RequestLimiter, ResponseCache};
use ubtc_core::bundle::SupplyEntry;
use ubtc_core::{ChainId, Sats, Timestamp, TokenAmount};
use ubtc_limits::{Client, ClientLimits, FallbackLimiter, Rate, RedisLimiter};
use ubtc_store::{ReserveSnapshot, SqliteStore, Store};

struct Limits(ClientLimits);

#[async_trait]
impl RequestLimiter for Limits {
    async fn try_acquire(&self, clients: &[ClientKey]) -> Result<(), Duration> {
        // At most an IP and a key: a fixed array, no allocation per request.
        let mut mapped = [Client::Ip(std::net::Ipv4Addr::UNSPECIFIED.into()); 2];
        let n = clients.len().min(2);
        for (slot, c) in mapped.iter_mut().zip(clients) {
            *slot = match c {
                ClientKey::Ip(ip) => Client::Ip(*ip),
                ClientKey::ApiKey(d) => Client::KeyDigest(d),
            };
        }
        self.0
            .try_acquire(&mapped[..n], Timestamp::now().as_millis())
            .await
    }
}

struct Cache(ubtc_limits::ResponseCache);

#[async_trait]
impl ResponseCache for Cache {
    async fn get(&self, tag: &'static str, key: &str) -> CacheLookup {
        match self.0.get(tag, key).await {
            ubtc_limits::Lookup::Hit(b) => CacheLookup::Hit(b),
            ubtc_limits::Lookup::Miss(g) => CacheLookup::Miss(g.value()),
        }
    }
    async fn put(&self, key: &str, generation: u64, value: bytes::Bytes, ttl: Duration) {
        self.0.put(key, generation.into(), value, ttl).await
    }
}

/// Back-to-back (bare, full) measurements the ratio is the median of.
const PAIRS: usize = 5;

struct Figures {
    rps: f64,
    p50: String,
    p99: String,
}

fn run_wrk(url: &str, secs: u32, connections: u32) -> Result<Figures> {
    let out = std::process::Command::new("wrk")
        .args([
            "-t2",
            &format!("-c{connections}"),
            &format!("-d{secs}s"),
            "--latency",
            url,
        ])
        .output()
        .context("cannot run wrk (apt-get install wrk)")?;
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if text.contains("Non-2xx") {
        bail!("some answers were not 2xx:\n{text}");
    }
    let field = |prefix: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_owned)
            .unwrap_or_else(|| "?".into())
    };
    Ok(Figures {
        rps: field("Requests/sec:").parse().unwrap_or(0.0),
        p50: field("50%"),
        p99: field("99%"),
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let secs: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5);
    let connections: u32 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(32);
    let redis_url =
        std::env::var("UBTC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let prefix = format!("ubtc-bench:{}:", uuid::Uuid::new_v4().simple());

    let dir = tempfile::tempdir()?;
    let store = Arc::new(
        SqliteStore::connect(&format!("sqlite:{}", dir.path().join("b.db").display()), 4).await?,
    );
    store.migrate().await?;
    // A realistic answer: one snapshot with the supply on three chains.
    let now = Timestamp::now();
    let supply: Vec<SupplyEntry> = ["ethereum", "polygon", "arbitrum"]
        .iter()
        .enumerate()
        .map(|(i, chain)| -> Result<SupplyEntry> {
            Ok(SupplyEntry {
                chain: ChainId::parse(chain)?,
                token: format!("0x{:040x}", i + 1),
                block_number: 19_000_000 + i as u64,
                block_hash: format!("0x{:064x}", i + 7),
                supply: TokenAmount::new(40_000_000_000 + i as u128, 8),
                as_of: now,
            })
        })
        .collect::<Result<_>>()?;
    store
        .record_reserve_snapshot(&ReserveSnapshot {
            taken_at: now,
            bitcoin_height: 871_234,
            bitcoin_block_hash: "00".repeat(32),
            reserve_sats: Sats(120_000_000_010),
            supply_sats: Sats(120_000_000_003),
            ratio_ppm: Some(1_000_000),
            healthy: true,
            stale: false,
            supply,
        })
        .await?;
    let shutdown = CancellationToken::new();
    let metrics = ubtc_api::metrics::install_recorder()?;
    let mut urls = Vec::new();
    for (cache_on, limit_on) in [(false, false), (true, false), (false, true), (true, true)] {
        // As `ubtc serve` runs it: with the Prometheus recorder (API latency by route).
        let mut state = ApiState::new(store.clone(), vec![]).with_metrics(metrics.clone());
        if limit_on {
            let limiter = Arc::new(FallbackLimiter::new(Arc::new(RedisLimiter::new(
                &redis_url,
                format!("{prefix}rl:"),
                Duration::from_millis(250),
            )?)));
            // The smallest emission interval is 1 ms (1,000/s sustained), so the burst
            // must cover every request of the run: 2^32 units, about 50 days of
            // arrival time. Every request is still charged (leased) in Redis.
            let unlimited = Rate {
                emission_ms: 1,
                burst: u32::MAX,
            };
            state = state.with_rate_limiter(Arc::new(Limits(ClientLimits::new(
                limiter, unlimited, unlimited,
            ))));
        }
        if cache_on {
            let cache = ubtc_limits::ResponseCache::with_redis(
                &redis_url,
                format!("{prefix}cache:"),
                Duration::from_millis(250),
            )?;
            state = state.with_response_cache(Arc::new(Cache(cache)));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let name = format!(
            "router, cache {}, rate limit {}",
            if cache_on { "on" } else { "off" },
            if limit_on { "on" } else { "off" }
        );
        urls.push((
            name,
            format!("http://{}/v1/reserves", listener.local_addr()?),
        ));
        tokio::spawn(serve(listener, public_router(state), shutdown.clone()));
    }

    let body = reqwest_less_get(&urls[0].1).await?;
    // Shared bytes, so the bare side copies nothing per request either.
    let bare_body = bytes::Bytes::from(body.clone());
    let bare = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let bare_url = format!("http://{}/v1/reserves", bare.local_addr()?);
    let bare_router = axum::Router::new().route(
        "/v1/reserves",
        axum::routing::get(move || {
            let b = bare_body.clone();
            async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], b) }
        }),
    );
    tokio::spawn(async move { axum::serve(bare, bare_router).await });

    println!(
        "GET /v1/reserves ({} bytes), wrk -t2 -c{connections} -d{secs}s on loopback",
        body.len()
    );
    println!("{:<40} {:>10} {:>10} {:>10}", "", "req/s", "p50", "p99");
    let row = |name: &str, f: &Figures| {
        println!("{:<40} {:>10.0} {:>10} {:>10}", name, f.rps, f.p50, f.p99);
    };
    row(
        "bare handler (same bytes)",
        &run_wrk(&bare_url, secs, connections)?,
    );
    for (name, url) in &urls {
        row(name, &run_wrk(url, secs, connections)?);
    }
    // The machine is shared (wrk, Redis and the server on the same cores, other
    // work besides): the ratio is taken from back-to-back pairs, and the median
    // pair is the figure.
    println!("\nbare vs cache + rate limit, back to back, {PAIRS} pairs:");
    let full_url = &urls[urls.len() - 1].1;
    let mut ratios = Vec::new();
    for pair in 1..=PAIRS {
        let bare = run_wrk(&bare_url, secs, connections)?;
        let full = run_wrk(full_url, secs, connections)?;
        let ratio = 100.0 * full.rps / bare.rps.max(1.0);
        println!(
            "pair {pair}: bare {:.0} req/s (p50 {}, p99 {}), cache + rate limit {:.0} req/s (p50 {}, p99 {}): {ratio:.0}%",
            bare.rps, bare.p50, bare.p99, full.rps, full.p50, full.p99
        );
        ratios.push(ratio);
    }
    ratios.sort_by(f64::total_cmp);
    println!(
        "cache + rate limit: {:.0}% of the bare handler (median of {PAIRS} pairs; target 50%)",
        ratios[ratios.len() / 2]
    );
    shutdown.cancel();
    Ok(())
}

/// One GET over a raw socket (the example needs no HTTP client crate).
async fn reqwest_less_get(url: &str) -> Result<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = tokio::net::TcpStream::connect(host).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let split = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no header end")?
        + 4;
    Ok(buf[split..].to_vec())
}
