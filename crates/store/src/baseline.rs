//! Baseline for the pipeline benchmark: the same SQL statements the stores issue for
//! one validation (record, confirm and enqueue, claim, complete with one outbox event
//! and a metrics row), sent straight to a pool with no trait, no domain parsing and no
//! pipeline. The benchmark runs both side by side on one machine; the ratio is the cost
//! of everything above the database.
//!
//! Synthetic validations use the chain name `bench` and random transaction hashes, so
//! runs can repeat on the same database.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::{PgPool, Row, SqlitePool};
use uuid::Uuid;

use crate::{postgres, sql, sqlite, StoreError, StoreResult};

const LEASE_MS: i64 = 60_000;
const STATEMENT: &str = "Universal Bitcoin proof of reserves (baseline)";
const BUNDLE: &str = "{\"version\":1,\"baseline\":true}";
const STATEMENT_JSON: &str = "{\"version\":1,\"baseline\":true}";
const PAYLOAD: &str = "{\"event\":\"validation.signed\"}";

fn now_ms() -> i64 {
    ubtc_core::Timestamp::now().as_millis()
}

/// Runs `validations` synthetic validations through PostgreSQL with `concurrency`
/// tasks, each looping record → confirm/enqueue → claim one → complete. Returns the
/// wall time.
pub async fn run_postgres(
    pool: &PgPool,
    validations: u64,
    concurrency: usize,
) -> StoreResult<Duration> {
    let remaining = Arc::new(AtomicU64::new(validations));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency.max(1) {
        let pool = pool.clone();
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("baseline-{t}");
            while take(&remaining) {
                let now = now_ms();
                insert_and_enqueue_pg(&pool, now).await?;
                // Claim whatever is due (maybe another task's row) and complete it.
                loop {
                    // Fresh clock: rows enqueued by other tasks after our `now` are due
                    // only from their own enqueue time.
                    let now = now_ms();
                    let rows = sqlx::query(postgres::CLAIM_BATCH)
                        .bind(worker.as_str())
                        .bind(now + LEASE_MS)
                        .bind(now)
                        .bind(1_i64)
                        .fetch_all(&pool)
                        .await?;
                    let Some(row) = rows.first() else {
                        tokio::task::yield_now().await;
                        continue;
                    };
                    let claimed: Uuid = row.try_get("id")?;
                    let attempts: i64 = row.try_get("attempts")?;
                    sqlx::query(postgres::COMPLETE_SIGNED)
                        .bind(claimed)
                        .bind(worker.as_str())
                        .bind(attempts)
                        .bind(STATEMENT)
                        .bind(BUNDLE)
                        .bind(now)
                        .bind(5_i64)
                        .bind(vec![Uuid::now_v7()])
                        .bind(vec!["validation.signed"])
                        .bind(vec![PAYLOAD])
                        .bind(vec![None::<String>])
                        .fetch_optional(&pool)
                        .await?;
                    break;
                }
            }
            Ok::<(), StoreError>(())
        }));
    }
    join(tasks).await?;
    Ok(started.elapsed())
}

async fn insert_and_enqueue_pg(pool: &PgPool, now: i64) -> StoreResult<()> {
    let id = Uuid::now_v7();
    let tx_hash = format!("0x{}", Uuid::new_v4().simple());
    sqlx::query(sql::INSERT_VALIDATION)
        .bind(id)
        .bind("bench")
        .bind(tx_hash.as_str())
        .bind(0_i64)
        .bind("0xpayer")
        .bind("1000")
        .bind(&b"baseline"[..])
        .bind(1_i64)
        .bind("0xblock")
        .bind(None::<&str>)
        .bind(None::<&str>)
        .bind(None::<&str>)
        .bind(now)
        .fetch_optional(pool)
        .await?;
    sqlx::query(sql::CONFIRM_AND_ENQUEUE)
        .bind(id)
        .bind("queued")
        .bind(12_i64)
        .bind(now)
        .bind(now)
        .execute(pool)
        .await?;
    Ok(())
}

/// [`run_postgres`] in batches, the way a pipeline that batches its store calls issues
/// them: per round of `batch` validations, one transaction of inserts, one of
/// confirmations, one claim statement for up to `batch` rows, one transaction of
/// completions. Same statements, `batch` times fewer commits.
pub async fn run_postgres_batched(
    pool: &PgPool,
    validations: u64,
    concurrency: usize,
    batch: usize,
) -> StoreResult<Duration> {
    let batch = batch.max(1);
    let remaining = Arc::new(AtomicU64::new(validations));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency.max(1) {
        let pool = pool.clone();
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("baseline-{t}");
            loop {
                let mut n = 0;
                while n < batch && take(&remaining) {
                    n += 1;
                }
                if n == 0 {
                    return Ok::<(), StoreError>(());
                }
                let now = now_ms();
                let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
                let mut tx = pool.begin().await?;
                for id in &ids {
                    let tx_hash = format!("0x{}", Uuid::new_v4().simple());
                    sqlx::query(sql::INSERT_VALIDATION)
                        .bind(id)
                        .bind("bench")
                        .bind(tx_hash.as_str())
                        .bind(0_i64)
                        .bind("0xpayer")
                        .bind("1000")
                        .bind(&b"baseline"[..])
                        .bind(1_i64)
                        .bind("0xblock")
                        .bind(None::<&str>)
                        .bind(None::<&str>)
                        .bind(None::<&str>)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                let mut tx = pool.begin().await?;
                for id in &ids {
                    sqlx::query(sql::CONFIRM_AND_ENQUEUE)
                        .bind(id)
                        .bind("queued")
                        .bind(12_i64)
                        .bind(now)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                // Claim and complete as many as this round enqueued (possibly other
                // tasks' rows).
                let mut left = n;
                while left > 0 {
                    let now = now_ms();
                    let rows = sqlx::query(postgres::CLAIM_BATCH)
                        .bind(worker.as_str())
                        .bind(now + LEASE_MS)
                        .bind(now)
                        .bind(i64::try_from(left).unwrap_or(i64::MAX))
                        .fetch_all(&pool)
                        .await?;
                    if rows.is_empty() {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    // The pipeline fixes each statement before signing: same step here.
                    let mut tx = pool.begin().await?;
                    for row in &rows {
                        let claimed: Uuid = row.try_get("id")?;
                        let attempts: i64 = row.try_get("attempts")?;
                        sqlx::query(sql::PREPARE_STATEMENT)
                            .bind(claimed)
                            .bind(worker.as_str())
                            .bind(attempts)
                            .bind(STATEMENT_JSON)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    let mut tx = pool.begin().await?;
                    for row in &rows {
                        let claimed: Uuid = row.try_get("id")?;
                        let attempts: i64 = row.try_get("attempts")?;
                        sqlx::query(postgres::COMPLETE_SIGNED)
                            .bind(claimed)
                            .bind(worker.as_str())
                            .bind(attempts)
                            .bind(STATEMENT)
                            .bind(BUNDLE)
                            .bind(now)
                            .bind(5_i64)
                            .bind(vec![Uuid::now_v7()])
                            .bind(vec!["validation.signed"])
                            .bind(vec![PAYLOAD])
                            .bind(vec![None::<String>])
                            .fetch_optional(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    left -= rows.len();
                }
            }
        }));
    }
    join(tasks).await?;
    Ok(started.elapsed())
}

/// The SQLite twin of [`run_postgres`], on the store's writer pool
/// ([`crate::SqliteStore::pool`]).
pub async fn run_sqlite(
    pool: &SqlitePool,
    validations: u64,
    concurrency: usize,
) -> StoreResult<Duration> {
    let remaining = Arc::new(AtomicU64::new(validations));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency.max(1) {
        let pool = pool.clone();
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("baseline-{t}");
            while take(&remaining) {
                let now = now_ms();
                let id = Uuid::now_v7();
                let tx_hash = format!("0x{}", Uuid::new_v4().simple());
                sqlx::query(sql::INSERT_VALIDATION)
                    .bind(id)
                    .bind("bench")
                    .bind(tx_hash.as_str())
                    .bind(0_i64)
                    .bind("0xpayer")
                    .bind("1000")
                    .bind(&b"baseline"[..])
                    .bind(1_i64)
                    .bind("0xblock")
                    .bind(None::<&str>)
                    .bind(None::<&str>)
                    .bind(None::<&str>)
                    .bind(now)
                    .fetch_optional(&pool)
                    .await?;
                sqlx::query(sql::CONFIRM_AND_ENQUEUE)
                    .bind(id)
                    .bind("queued")
                    .bind(12_i64)
                    .bind(now)
                    .bind(now)
                    .execute(&pool)
                    .await?;
                let rows = sqlx::query(sqlite::CLAIM_BATCH)
                    .bind(worker.as_str())
                    .bind(now + LEASE_MS)
                    .bind(now)
                    .bind(1_i64)
                    .fetch_all(&pool)
                    .await?;
                // One writer: the row just enqueued (or an older one) is always due.
                let Some(row) = rows.first() else { continue };
                let claimed: Uuid = row.try_get("id")?;
                let attempts: i64 = row.try_get("attempts")?;
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                let signed: Option<(Uuid, String)> = sqlx::query_as(sql::SIGN_UPDATE)
                    .bind(claimed)
                    .bind(worker.as_str())
                    .bind(attempts)
                    .bind(STATEMENT)
                    .bind(BUNDLE)
                    .bind(now)
                    .fetch_optional(&mut *tx)
                    .await?;
                if let Some((vid, chain)) = signed {
                    sqlx::query(sql::INSERT_METRIC)
                        .bind(vid)
                        .bind(chain)
                        .bind(now)
                        .bind(5_i64)
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(sql::INSERT_OUTBOX)
                        .bind(Uuid::now_v7())
                        .bind(vid)
                        .bind("validation.signed")
                        .bind(PAYLOAD)
                        .bind(None::<&str>)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Ok::<(), StoreError>(())
        }));
    }
    join(tasks).await?;
    Ok(started.elapsed())
}

/// The SQLite twin of [`run_postgres_batched`]: per round of `batch` validations,
/// one transaction of inserts, one of confirmations, one claim statement, one
/// transaction fixing the statements and one completing them.
pub async fn run_sqlite_batched(
    pool: &SqlitePool,
    validations: u64,
    concurrency: usize,
    batch: usize,
) -> StoreResult<Duration> {
    let batch = batch.max(1);
    let remaining = Arc::new(AtomicU64::new(validations));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency.max(1) {
        let pool = pool.clone();
        let remaining = remaining.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("baseline-{t}");
            loop {
                let mut n = 0;
                while n < batch && take(&remaining) {
                    n += 1;
                }
                if n == 0 {
                    return Ok::<(), StoreError>(());
                }
                let now = now_ms();
                let ids: Vec<Uuid> = (0..n).map(|_| Uuid::now_v7()).collect();
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                for id in &ids {
                    let tx_hash = format!("0x{}", Uuid::new_v4().simple());
                    sqlx::query(sql::INSERT_VALIDATION)
                        .bind(id)
                        .bind("bench")
                        .bind(tx_hash.as_str())
                        .bind(0_i64)
                        .bind("0xpayer")
                        .bind("1000")
                        .bind(&b"baseline"[..])
                        .bind(1_i64)
                        .bind("0xblock")
                        .bind(None::<&str>)
                        .bind(None::<&str>)
                        .bind(None::<&str>)
                        .bind(now)
                        .fetch_optional(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                for id in &ids {
                    sqlx::query(sql::CONFIRM_AND_ENQUEUE)
                        .bind(id)
                        .bind("queued")
                        .bind(12_i64)
                        .bind(now)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                let mut left = n;
                while left > 0 {
                    let now = now_ms();
                    let rows = sqlx::query(sqlite::CLAIM_BATCH)
                        .bind(worker.as_str())
                        .bind(now + LEASE_MS)
                        .bind(now)
                        .bind(i64::try_from(left).unwrap_or(i64::MAX))
                        .fetch_all(&pool)
                        .await?;
                    if rows.is_empty() {
                        tokio::task::yield_now().await;
                        continue;
                    }
                    let claimed: Vec<(Uuid, i64)> = rows
                        .iter()
                        .map(|r| Ok((r.try_get("id")?, r.try_get("attempts")?)))
                        .collect::<Result<_, sqlx::Error>>()?;
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    for (id, attempts) in &claimed {
                        sqlx::query(sql::PREPARE_STATEMENT)
                            .bind(id)
                            .bind(worker.as_str())
                            .bind(attempts)
                            .bind(STATEMENT_JSON)
                            .bind(now)
                            .execute(&mut *tx)
                            .await?;
                    }
                    tx.commit().await?;
                    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
                    for (id, attempts) in &claimed {
                        let signed: Option<(Uuid, String)> = sqlx::query_as(sql::SIGN_UPDATE)
                            .bind(id)
                            .bind(worker.as_str())
                            .bind(attempts)
                            .bind(STATEMENT)
                            .bind(BUNDLE)
                            .bind(now)
                            .fetch_optional(&mut *tx)
                            .await?;
                        if let Some((vid, chain)) = signed {
                            sqlx::query(sql::INSERT_METRIC)
                                .bind(vid)
                                .bind(chain)
                                .bind(now)
                                .bind(5_i64)
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query(sql::INSERT_OUTBOX)
                                .bind(Uuid::now_v7())
                                .bind(vid)
                                .bind("validation.signed")
                                .bind(PAYLOAD)
                                .bind(None::<&str>)
                                .bind(now)
                                .execute(&mut *tx)
                                .await?;
                        }
                    }
                    tx.commit().await?;
                    left -= claimed.len();
                }
            }
        }));
    }
    join(tasks).await?;
    Ok(started.elapsed())
}

/// Takes one validation from the shared budget; false when none is left.
fn take(remaining: &AtomicU64) -> bool {
    remaining
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

async fn join(tasks: Vec<tokio::task::JoinHandle<StoreResult<()>>>) -> StoreResult<()> {
    for t in tasks {
        t.await
            .map_err(|e| StoreError::InvalidInput(format!("baseline task panicked: {e}")))??;
    }
    Ok(())
}

/// Fills `reserve_ratios` with one snapshot a minute for `minutes` minutes ending at
/// `end_ms`, in one statement (for the history benchmark; a year is 525,600 rows).
pub async fn seed_minute_history_pg(pool: &PgPool, end_ms: i64, minutes: i64) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO reserve_ratios (taken_at, bitcoin_height, bitcoin_block_hash, reserve_sats, \
         supply_sats, ratio_ppm, healthy, stale, supply_json) \
         SELECT $1 - g * 60000, 850000 + g / 10, 'bench', 250000000, 200000000 + (g % 1000), \
         1250000 - (g % 1000), TRUE, FALSE, '[]' FROM generate_series(0, $2 - 1) AS g",
    )
    .bind(end_ms)
    .bind(minutes)
    .execute(pool)
    .await?;
    sqlx::query("ANALYZE reserve_ratios").execute(pool).await?;
    Ok(())
}
