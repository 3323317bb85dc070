//! `ubtc bench guardians`: signed statements per second with 2-of-3 guardians over
//! loopback HTTP, beside the single-key local signer measured in the same run.
//!
//! Both sides sign the same kind of statements for confirmed dev-chain payments with
//! the same concurrency. The guardians run in this process (each on its own loopback
//! port, with its own approval record fsync'd to a temporary directory), so the
//! figure includes HTTP, both envelope signatures, the chain re-read, the durable
//! record and the coordinator's checks — everything but process scheduling.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::SecretKey;
use bitcoin::Network;
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use ubtc_chains::dev::{DevBitcoin, DevChain};
use ubtc_chains::ChainAdapter;
use ubtc_core::payment::Payer;
use ubtc_core::{BlockStamp, ChainId, Statement};
use ubtc_pipeline::{LocalKeySigner, ReserveSigner};

use crate::coordinator::{Coordinator, CoordinatorSettings, GuardianEndpoint};
use crate::record::ApprovalLog;
use crate::server::{self, Guardian, GuardianPolicy, WatchedChain};
use crate::{DevChainHttpAdapter, GuardianKey};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bench setup: {0}")]
    Setup(String),
    #[error("a signing round failed: {0}")]
    Sign(String),
}

#[derive(Clone, Debug, Serialize)]
pub struct GuardianBenchReport {
    pub validations: usize,
    /// Whole pipeline (monitor → SQLite queue → workers → bundle), validations/s.
    pub pipeline_local_per_sec: f64,
    pub pipeline_guardians_per_sec: f64,
    /// Median over the repetitions of pipeline_guardians / pipeline_local (the
    /// issue's target: at least 0.5); the rates above are medians too.
    pub pipeline_ratio: f64,
    /// The ratio of each repetition, in run order.
    pub pipeline_ratios: Vec<f64>,
    pub concurrency: usize,
    pub local_per_sec: f64,
    pub guardians_per_sec: f64,
    /// guardians / local.
    pub ratio: f64,
    pub round_p50_ms: f64,
    pub round_p99_ms: f64,
    pub local_p50_ms: f64,
}

impl std::fmt::Display for GuardianBenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "signed validations: {} per side, {} concurrent",
            self.validations, self.concurrency
        )?;
        writeln!(
            f,
            "  single-key local signer  {:>10.1} /s   p50 {:.2} ms",
            self.local_per_sec, self.local_p50_ms
        )?;
        writeln!(
            f,
            "  2-of-3 guardians (HTTP)  {:>10.1} /s   p50 {:.2} ms  p99 {:.2} ms",
            self.guardians_per_sec, self.round_p50_ms, self.round_p99_ms
        )?;
        writeln!(
            f,
            "  guardians / local       {:>10.1} %",
            self.ratio * 100.0
        )?;
        writeln!(
            f,
            "whole pipeline (SQLite queue, {} workers, proof bundles):",
            self.concurrency
        )?;
        writeln!(
            f,
            "  single-key pipeline      {:>10.1} /s",
            self.pipeline_local_per_sec
        )?;
        writeln!(
            f,
            "  2-of-3 guardian pipeline {:>10.1} /s",
            self.pipeline_guardians_per_sec
        )?;
        let runs: Vec<String> = self
            .pipeline_ratios
            .iter()
            .map(|r| format!("{:.1}", r * 100.0))
            .collect();
        writeln!(
            f,
            "  guardians / single key  {:>10.1} %   (median of {} interleaved runs: {} %)",
            self.pipeline_ratio * 100.0,
            self.pipeline_ratios.len(),
            runs.join(", ")
        )
    }
}

/// Jobs a pipeline worker claims at once: the default of `ubtc worker`
/// (`pipeline.batch_size`), so both sides run the way the worker runs them.
const PIPELINE_BATCH: u32 = 64;

/// Height of the dev Bitcoin tip of the workers and of every guardian.
const BENCH_BITCOIN_HEIGHT: u32 = 900_000;

/// Interleaved repetitions of the two pipeline sides.
const PIPELINE_REPEATS: usize = 3;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

async fn run_side(
    signer: Arc<dyn ReserveSigner>,
    statements: &[Statement],
    concurrency: usize,
) -> Result<(f64, Vec<Duration>), BenchError> {
    let queue = Arc::new(std::sync::Mutex::new(statements.to_vec()));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let queue = queue.clone();
        let signer = signer.clone();
        tasks.spawn(async move {
            let mut times = Vec::new();
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                let Some(statement) = next else { break };
                let t = Instant::now();
                signer
                    .sign(&statement)
                    .await
                    .map_err(|e| BenchError::Sign(format!("{e:?}")))?;
                times.push(t.elapsed());
            }
            Ok::<_, BenchError>(times)
        });
    }
    let mut times = Vec::new();
    while let Some(r) = tasks.join_next().await {
        times.extend(r.map_err(|e| BenchError::Sign(e.to_string()))??);
    }
    let rate = statements.len() as f64 / start.elapsed().as_secs_f64();
    times.sort();
    Ok((rate, times))
}

fn setup(e: &dyn std::fmt::Display) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// A dev chain served over loopback HTTP, three in-process guardians on their own
/// loopback ports, and a 2-of-3 coordinator.
struct Rig {
    chain_id: ChainId,
    dev: DevChain,
    coordinator: Arc<Coordinator>,
    cancel: CancellationToken,
    dir: std::path::PathBuf,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.cancel.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn rig() -> Result<Rig, BenchError> {
    let chain_id = ChainId::parse("dev").map_err(|e| setup(&e))?;
    let dev = DevChain::new(chain_id.clone(), "0xbe0c4", 1);
    let cancel = CancellationToken::new();

    let chain_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| setup(&e))?;
    let chain_url = format!(
        "http://{}",
        chain_listener.local_addr().map_err(|e| setup(&e))?
    );
    let router = crate::dev_chain_router(HashMap::from([(chain_id.clone(), dev.clone())]));
    tokio::spawn(server::serve(chain_listener, router, cancel.clone()));

    let dir = std::env::temp_dir().join(format!("ubtc-bench-guardians-{}", uuid::Uuid::new_v4()));
    let coordinator_key = GuardianKey::generate();
    let mut endpoints = Vec::new();
    let keys: Vec<GuardianKey> = (0..3).map(|_| GuardianKey::generate()).collect();
    // The 2-of-3 reserve the coordinator signs for: the one reserve each guardian names.
    let reserve = ubtc_bitcoin::multisig::SortedMulti::new(
        2,
        keys.iter()
            .map(|k| bitcoin::CompressedPublicKey(k.public()))
            .collect(),
    )
    .map_err(|e| setup(&e))?
    .descriptor_wsh();
    for (i, key) in keys.into_iter().enumerate() {
        let log = ApprovalLog::open(&dir.join(format!("g{i}.jsonl"))).map_err(|e| setup(&e))?;
        let adapter: Arc<dyn crate::devchain::PaymentSource> = Arc::new(
            DevChainHttpAdapter::new(chain_id.clone(), &chain_url).map_err(|e| setup(&e))?,
        );
        let guardian = Guardian::new(
            key.clone(),
            HashMap::from([(
                chain_id.clone(),
                WatchedChain {
                    adapter,
                    max_signatures_per_minute: u32::MAX,
                },
            )]),
            // Each guardian's own Bitcoin view, at the height the workers stamp with.
            Arc::new(DevBitcoin::new(BENCH_BITCOIN_HEIGHT)),
            GuardianPolicy {
                coordinators: vec![coordinator_key.public()],
                statement_versions: vec![ubtc_core::statement::STATEMENT_VERSION],
                max_request_ttl_ms: 120_000,
                max_stamp_age_blocks: crate::config::MAX_STAMP_AGE_BLOCKS_DEFAULT,
                reserves: vec![reserve.clone()],
                forms: vec![ubtc_bitcoin::multisig::Form::Simple],
            },
            log,
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| setup(&e))?;
        let url = format!("http://{}", listener.local_addr().map_err(|e| setup(&e))?);
        tokio::spawn(server::serve(
            listener,
            server::router(Arc::new(guardian)),
            cancel.clone(),
        ));
        endpoints.push(GuardianEndpoint {
            name: format!("g{}", i + 1),
            url,
            key: key.public(),
        });
    }
    let coordinator = Arc::new(
        Coordinator::new(
            coordinator_key,
            endpoints,
            2,
            CoordinatorSettings {
                network: Network::Regtest,
                timeout: Duration::from_secs(10),
                request_ttl: Duration::from_secs(60),
            },
        )
        .map_err(|e| setup(&e))?,
    );
    Ok(Rig {
        chain_id,
        dev,
        coordinator,
        cancel,
        dir,
    })
}

/// Signs `validations` statements with each signer, `concurrency` at a time, then
/// runs `validations` payments through the whole pipeline (monitor, SQLite queue,
/// `concurrency` workers, bundle) with each signer, and reports the rates and the
/// guardian round latency. Needs a rustls provider installed (the coordinator builds
/// an HTTP client).
pub async fn bench_guardians(
    validations: usize,
    concurrency: usize,
) -> Result<GuardianBenchReport, BenchError> {
    let rig1 = rig().await?;
    let (chain_id, dev) = (rig1.chain_id.clone(), rig1.dev.clone());
    let local = Arc::new(LocalKeySigner::new(
        SecretKey::new(&mut rand::thread_rng()),
        Network::Regtest,
    ));

    let payer = Payer::parse("0xbe0001").map_err(|e| setup(&e))?;
    let mut refs = Vec::new();
    for i in 0..validations {
        refs.push(dev.submit_payment(&payer, 1_000, format!("bench {i}").as_bytes()));
    }
    dev.mine(3);
    let stamp = BlockStamp::new(
        BENCH_BITCOIN_HEIGHT,
        &DevBitcoin::hash_at(BENCH_BITCOIN_HEIGHT),
    )
    .map_err(|e| setup(&e))?;
    let mut statements = Vec::new();
    for tx in refs {
        let reference = ubtc_core::PaymentRef {
            chain: chain_id.clone(),
            tx_hash: tx,
            index: 0,
        };
        let (payment, _) = dev
            .payment(&reference)
            .await
            .map_err(|e| setup(&e))?
            .ok_or_else(|| BenchError::Setup("bench payment not found".into()))?;
        let message = payment.message.map_err(|e| setup(&e))?;
        statements.push(Statement::new(
            reference,
            payment.payer,
            message,
            stamp.clone(),
            uuid::Uuid::new_v4(),
        ));
    }

    let (local_rate, local_times) = run_side(local.clone(), &statements, concurrency).await?;
    let (guardian_rate, times) =
        run_side(rig1.coordinator.clone(), &statements, concurrency).await?;
    drop(rig1);

    // Interleaved repetitions, each on a fresh chain and fresh guardians (a guardian
    // never signs a second statement for a payment): on a shared machine one run of a
    // few hundred milliseconds per side is mostly noise; the median ratio is not.
    let mut locals = Vec::new();
    let mut guardians = Vec::new();
    let mut ratios = Vec::new();
    for _ in 0..PIPELINE_REPEATS {
        let rig2 = rig().await?;
        for i in 0..validations {
            rig2.dev
                .submit_payment(&payer, 1_000, format!("pipeline {i}").as_bytes());
        }
        rig2.dev.mine(3);
        let l = pipeline_side(&rig2, local.clone(), validations, concurrency).await?;
        let g = pipeline_side(&rig2, rig2.coordinator.clone(), validations, concurrency).await?;
        locals.push(l);
        guardians.push(g);
        ratios.push(g / l);
    }
    Ok(GuardianBenchReport {
        pipeline_local_per_sec: median(&mut locals),
        pipeline_guardians_per_sec: median(&mut guardians),
        pipeline_ratio: median(&mut ratios.clone()),
        pipeline_ratios: ratios,
        validations,
        concurrency,
        local_per_sec: local_rate,
        guardians_per_sec: guardian_rate,
        ratio: guardian_rate / local_rate,
        round_p50_ms: percentile(&times, 0.50),
        round_p99_ms: percentile(&times, 0.99),
        local_p50_ms: percentile(&local_times, 0.50),
    })
}

/// Runs every payment on the rig's chain through a fresh SQLite-backed pipeline signed
/// by `signer`; returns validations signed per second (workers only, after intake).
async fn pipeline_side(
    rig: &Rig,
    signer: Arc<dyn ReserveSigner>,
    expected: usize,
    workers: usize,
) -> Result<f64, BenchError> {
    use ubtc_pipeline::{ChainPolicy, Monitor, StepOutcome, Unlimited, Worker, WorkerConfig};
    use ubtc_store::Store;

    let db = rig
        .dir
        .join(format!("pipeline-{}.db", uuid::Uuid::new_v4()));
    let store = ubtc_store::SqliteStore::connect(&format!("sqlite:{}", db.display()), 4)
        .await
        .map_err(|e| setup(&e))?;
    store.migrate().await.map_err(|e| setup(&e))?;
    let store: Arc<dyn Store> = Arc::new(store);
    let monitor = Monitor::new(
        Arc::new(rig.dev.clone()),
        store.clone(),
        Arc::new(Unlimited),
        ChainPolicy {
            min_payment_base_units: 1,
            scan_max_blocks: 1000,
        },
    );
    loop {
        let tick = monitor.tick().await.map_err(|e| setup(&e))?;
        if tick.is_idle() {
            break;
        }
    }
    let bitcoin = Arc::new(DevBitcoin::new(BENCH_BITCOIN_HEIGHT));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..workers.max(1) {
        let worker = Worker::new(
            store.clone(),
            signer.clone(),
            bitcoin.clone(),
            WorkerConfig {
                worker_id: format!("bench-{n}"),
                lease_ms: 60_000,
                max_attempts: 3,
                backoff_base_ms: 0,
                backoff_max_ms: 0,
                network: ubtc_core::bundle::BitcoinNetwork::Regtest,
                native_units: [(rig.chain_id.clone(), "wei".to_owned())].into(),
            },
        );
        tasks.spawn(async move {
            let mut signed = 0usize;
            loop {
                // As `ubtc worker` runs them: claimed in batches, signed concurrently.
                let batch = worker
                    .tick_batch(PIPELINE_BATCH)
                    .await
                    .map_err(|e| BenchError::Sign(e.to_string()))?;
                if batch.is_idle() {
                    return Ok(signed);
                }
                for tick in batch.0 {
                    match tick {
                        ubtc_pipeline::WorkerTick::Signed(_) => signed += 1,
                        other => return Err(BenchError::Sign(format!("worker: {other:?}"))),
                    }
                }
            }
        });
    }
    let mut signed = 0;
    while let Some(r) = tasks.join_next().await {
        signed += r.map_err(|e| BenchError::Sign(e.to_string()))??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    if signed != expected {
        return Err(BenchError::Sign(format!(
            "{signed} of {expected} validations signed"
        )));
    }
    Ok(signed as f64 / elapsed)
}
