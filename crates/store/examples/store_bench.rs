//! Store throughput, side by side with the raw-SQL baseline, on both backends.
//!
//! `cargo run -p ubtc-store --example store_bench -- [VALIDATIONS] [CONCURRENCY]`
//! (PostgreSQL at `UBTC_TEST_DATABASE_URL`, default `postgres://root@127.0.0.1:5432/test`,
//! in a throw-away schema; SQLite in a temporary file). One validation is
//! `record_detected`, `confirm_and_enqueue`, `claim_next` and `complete_signed` (one
//! outbox event); the `record_confirmed` line replaces the first two by one statement.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::{ChainId, PaymentRef, Timestamp, ValidationId};
use ubtc_store::{
    baseline, NewOutboxEvent, NewValidation, PgStore, SignedResult, SqliteStore, Store,
};

async fn run_store(
    store: Arc<dyn Store>,
    n: u64,
    k: usize,
    combined: bool,
) -> anyhow::Result<Duration> {
    let remaining = Arc::new(AtomicU64::new(n));
    let chain = ChainId::parse("bench")?;
    let payer = Payer::parse("0xpayer")?;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..k {
        let (store, remaining, chain, payer) = (
            store.clone(),
            remaining.clone(),
            chain.clone(),
            payer.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let worker = format!("w{t}");
            while remaining
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let now = Timestamp::now();
                let new = NewValidation {
                    id: ValidationId::new(),
                    payment: PaymentRef {
                        chain: chain.clone(),
                        tx_hash: TxHash::parse(&format!("0x{}", uuid::Uuid::new_v4().simple()))?,
                        index: 0,
                    },
                    payer: payer.clone(),
                    amount_base_units: 1_000,
                    message: b"bench".to_vec(),
                    block: ChainBlock {
                        number: 1,
                        hash: "0xblock".into(),
                    },
                    callback_url: None,
                    rejection: None,
                };
                if combined {
                    store.record_confirmed(&new, 12, None, now).await?;
                } else {
                    let id = store.record_detected(&new, now).await?.id();
                    store.confirm_and_enqueue(id, 12, None, now).await?;
                }
                let claim = loop {
                    match store.claim_next(&worker, 60_000, Timestamp::now()).await? {
                        Some(c) => break c,
                        None => tokio::task::yield_now().await,
                    }
                };
                let result = SignedResult {
                    statement_text: "Universal Bitcoin proof of reserves (bench)".into(),
                    bundle_json: "{\"version\":1}".into(),
                    outbox: vec![NewOutboxEvent {
                        event_id: uuid::Uuid::now_v7(),
                        event_type: "validation.signed".into(),
                        payload_json: "{}".into(),
                        target_url: None,
                    }],
                    processing_ms: 5,
                };
                store.complete_signed(&claim, &result, now).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(started.elapsed())
}

fn rate(n: u64, d: Duration) -> String {
    format!(
        "{:>8.0} validations/s ({:.2} s)",
        n as f64 / d.as_secs_f64(),
        d.as_secs_f64()
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(5_000);
    let k: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(16);
    let url = std::env::var("UBTC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());

    let schema = format!("ubtc_bench_{}", uuid::Uuid::new_v4().simple());
    let pg = PgStore::connect_in_schema_with(&url, &schema, k as u32 + 2)
        .await
        .context("PostgreSQL")?;
    pg.migrate().await?;
    let pg_result = async {
        if std::env::var_os("UBTC_BENCH_SKIP_PG").is_some() {
            return anyhow::Ok(());
        }
        let base = baseline::run_postgres(pg.pool(), n, k).await?;
        let store = run_store(Arc::new(pg.clone()), n, k, false).await?;
        let combined = run_store(Arc::new(pg.clone()), n, k, true).await?;
        let base2 = baseline::run_postgres(pg.pool(), n, k).await?;
        println!("postgres  baseline  {}", rate(n, base));
        println!("postgres  store     {}", rate(n, store));
        println!(
            "postgres  store     {}  (record_confirmed)",
            rate(n, combined)
        );
        println!("postgres  baseline  {}  (again)", rate(n, base2));
        for batch in [8, 32] {
            let batched = baseline::run_postgres_batched(pg.pool(), n, k, batch).await?;
            println!(
                "postgres  baseline  {}  (batches of {batch})",
                rate(n, batched)
            );
        }
        anyhow::Ok(())
    }
    .await;
    pg.drop_schema(&schema).await?;
    pg_result?;

    let path =
        std::env::temp_dir().join(format!("ubtc-bench-{}.db", uuid::Uuid::new_v4().simple()));
    let writers: u32 = std::env::var("UBTC_BENCH_SQLITE_WRITERS")
        .ok()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(1);
    let sqlite =
        SqliteStore::connect_with_writers(&format!("sqlite:{}", path.display()), 4, writers)
            .await?;
    sqlite.migrate().await?;
    let base = baseline::run_sqlite(sqlite.pool(), n, k).await?;
    let store = run_store(Arc::new(sqlite.clone()), n, k, false).await?;
    println!(
        "sqlite    baseline  {}  ({writers} writer connections)",
        rate(n, base)
    );
    println!(
        "sqlite    store     {}  ({writers} writer connections)",
        rate(n, store)
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    Ok(())
}
