//! `ubtc bench pipeline`: the real pipeline (store trait, statement, BIP-322 signing,
//! proof bundle, outbox) against the raw-SQL baseline of `ubtc_store::baseline`, in
//! the same run, on the same database server.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bitcoin::secp256k1::SecretKey;
use serde::Serialize;
use ubtc_chains::dev::DevBitcoin;
use ubtc_core::bundle::BitcoinNetwork;
use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::{ChainId, PaymentRef, Timestamp, ValidationId};
use ubtc_pipeline::{LocalKeySigner, Worker, WorkerConfig, WorkerTick};
use ubtc_store::{baseline, NewValidation, PgStore, SqliteStore, Store};

#[derive(Debug, Serialize)]
pub struct Case {
    pub backend: &'static str,
    pub workers: usize,
    pub validations: u64,
    pub pipeline_per_sec: f64,
    pub baseline_per_sec: f64,
    /// pipeline / baseline (target ≥ 0.70).
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub cases: Vec<Case>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "pipeline: intake → claim → sign (BIP-322) → store with outbox, durable"
        )?;
        writeln!(
            f,
            "{:<10} {:>7} {:>8} {:>14} {:>14} {:>7}",
            "backend", "workers", "count", "pipeline/s", "baseline/s", "ratio"
        )?;
        for c in &self.cases {
            writeln!(
                f,
                "{:<10} {:>7} {:>8} {:>14.0} {:>14.0} {:>7.2}",
                c.backend,
                c.workers,
                c.validations,
                c.pipeline_per_sec,
                c.baseline_per_sec,
                c.ratio
            )?;
        }
        writeln!(
            f,
            "targets: PostgreSQL with 16 workers ≥ 2000/s; ratio ≥ 0.70"
        )
    }
}

pub async fn run(pg_url: &str, count: u64) -> anyhow::Result<Report> {
    let mut cases = Vec::new();
    for workers in [1usize, 16] {
        let schema = format!("ubtc_bench_{}", uuid::Uuid::new_v4().simple());
        let store = PgStore::connect_in_schema_with(pg_url, &schema, workers as u32 + 2)
            .await
            .with_context(|| format!("cannot reach PostgreSQL at {pg_url}"))?;
        store.migrate().await?;
        let pool = store.pool().clone();
        let store: Arc<dyn Store> = Arc::new(store);
        // Interleave baseline and pipeline halves so drift on a shared machine hits both.
        let half = count / 2;
        let b1 = baseline::run_postgres_batched(&pool, half, workers, BATCH).await?;
        let p1 = run_pipeline(store.clone(), half, workers).await?;
        let b2 = baseline::run_postgres_batched(&pool, count - half, workers, BATCH).await?;
        let p2 = run_pipeline(store.clone(), count - half, workers).await?;
        cases.push(case("postgres", workers, count, p1 + p2, b1 + b2));
        let admin = PgStore::connect(pg_url, 1).await?;
        admin.drop_schema(&schema).await?;
    }
    let dir = tempfile_dir()?;
    let url = format!("sqlite:{}", dir.join("bench.db").display());
    let store = SqliteStore::connect(&url, 4).await?;
    store.migrate().await?;
    let pool = store.pool().clone();
    let store: Arc<dyn Store> = Arc::new(store);
    let workers = 4;
    let half = count / 2;
    let b1 = baseline::run_sqlite_batched(&pool, half, workers, BATCH).await?;
    let p1 = run_pipeline(store.clone(), half, workers).await?;
    let b2 = baseline::run_sqlite_batched(&pool, count - half, workers, BATCH).await?;
    let p2 = run_pipeline(store.clone(), count - half, workers).await?;
    cases.push(case("sqlite", workers, count, p1 + p2, b1 + b2));
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report { cases })
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("ubtc-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn case(
    backend: &'static str,
    workers: usize,
    n: u64,
    pipeline: Duration,
    baseline: Duration,
) -> Case {
    let p = n as f64 / pipeline.as_secs_f64();
    let b = n as f64 / baseline.as_secs_f64();
    Case {
        backend,
        workers,
        validations: n,
        pipeline_per_sec: p,
        baseline_per_sec: b,
        ratio: p / b,
    }
}

/// Validations per batch: one scan's payments recorded together, and one worker step's
/// claims signed and stored together.
pub const BATCH: usize = 64;

/// `workers` tasks, each looping: intake a batch of payments as the monitor does (one
/// transaction to record them, one to confirm and enqueue them), then worker steps
/// (claim → statements → BIP-322 signatures → bundles and outbox rows) until as many
/// jobs as it enqueued are signed.
async fn run_pipeline(store: Arc<dyn Store>, n: u64, workers: usize) -> anyhow::Result<Duration> {
    let chain = ChainId::parse("bench")?;
    let signer = Arc::new(LocalKeySigner::new(
        SecretKey::new(&mut rand::thread_rng()),
        bitcoin::Network::Regtest,
    ));
    let bitcoin = Arc::new(DevBitcoin::new(850_000));
    let remaining = Arc::new(AtomicU64::new(n));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..workers {
        let worker = Worker::new(
            store.clone(),
            signer.clone(),
            bitcoin.clone(),
            WorkerConfig {
                worker_id: format!("bench-{t}"),
                lease_ms: 60_000,
                max_attempts: 3,
                backoff_base_ms: 100,
                backoff_max_ms: 1000,
                network: BitcoinNetwork::Regtest,
                native_units: [(chain.clone(), "dev-units".to_owned())].into(),
            },
        );
        let (store, remaining, chain) = (store.clone(), remaining.clone(), chain.clone());
        tasks.push(tokio::spawn(async move {
            let payer = Payer::parse("0xpayer")?;
            loop {
                let mut batch = Vec::with_capacity(BATCH);
                while batch.len() < BATCH
                    && remaining
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                {
                    batch.push(NewValidation {
                        id: ValidationId::new(),
                        payment: PaymentRef {
                            chain: chain.clone(),
                            tx_hash: TxHash::parse(&format!(
                                "0x{}",
                                uuid::Uuid::new_v4().simple()
                            ))?,
                            index: 0,
                        },
                        payer: payer.clone(),
                        amount_base_units: 1_000,
                        message: b"bench message".to_vec(),
                        block: ChainBlock {
                            number: 1,
                            hash: "0xblock".into(),
                        },
                        callback_url: None,
                        rejection: None,
                    });
                }
                if batch.is_empty() {
                    return Ok::<(), anyhow::Error>(());
                }
                let now = Timestamp::now();
                let recorded = store.record_detected_batch(&batch, now).await?;
                let confirm: Vec<_> = recorded.iter().map(|r| (r.id(), 12, None)).collect();
                for r in store.confirm_and_enqueue_batch(&confirm, now).await? {
                    r?;
                }
                let mut left = batch.len();
                while left > 0 {
                    let step = worker.tick_batch(left as u32).await?;
                    if step.0.is_empty() {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    for tick in step.0 {
                        match tick {
                            WorkerTick::Signed(_) => left -= 1,
                            other => {
                                anyhow::bail!("unexpected worker step in the benchmark: {other:?}")
                            }
                        }
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}
