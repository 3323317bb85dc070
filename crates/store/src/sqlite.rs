//! SQLite backend: the embedded default (`ubtc demo`, single-host installs).
//!
//! Writes go through ONE pooled connection (the writer pool has a single connection),
//! reads through a separate pool of readers that WAL mode lets run beside it. SQLite
//! admits one writer at a time anyway; queueing writers in the pool instead of in
//! SQLite's busy handler means in-process writers never see `SQLITE_BUSY`, and
//! multi-statement write transactions start with `BEGIN IMMEDIATE`, so a writer in
//! another process waits on `busy_timeout` instead of failing a lock upgrade.
//!
//! Measured with `examples/store_bench.rs` (16 tasks, 3,000 validations, on a loaded
//! 2-core machine): 1, 2, 4 and 8 writer connections all gave 830–1,200 validations/s,
//! the differences within run-to-run noise. One writer stays the default: same speed,
//! and no writer ever sleeps in the busy handler. [`SqliteStore::connect_with_writers`]
//! allows more.
//!
//! `sqlite::memory:` databases use the single writer connection for reads too (a
//! second connection would see another, empty, database).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};
use ubtc_core::validation::{Reason, TransitionError};
use ubtc_core::{ChainId, PaymentRef, Timestamp, ValidationId, ValidationStatus};

use crate::rows::{self, validation_columns};
use crate::sql::{self, claim_select, claim_set, impl_store};
use crate::types::*;
use crate::{Store, StoreError, StoreResult};

/// How long a connection waits for another process's write lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// SQLite's claim: one `UPDATE … RETURNING`, atomic under SQLite's database write lock
/// (no other writer can run between its SELECT and its UPDATE).
pub(crate) const CLAIM_BATCH: &str = concat!(
    claim_set!(),
    "WHERE id IN (",
    claim_select!("validations INDEXED BY validations_due_idx"),
    ") RETURNING ",
    validation_columns!()
);

#[derive(Clone, Debug)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

impl SqliteStore {
    /// Write transactions take the write lock at once (see the module docs).
    const BEGIN_WRITE: &'static str = "BEGIN IMMEDIATE";
    /// `BEGIN IMMEDIATE` already serialises audit appends.
    const AUDIT_LOCK: Option<&'static str> = None;

    /// Opens (creating the file if missing) the database at `url` (`sqlite:PATH`,
    /// `sqlite://PATH` or `sqlite::memory:`) with WAL, `synchronous = NORMAL`, a busy
    /// timeout and foreign keys. `max_readers` bounds the read pool. Runs no
    /// migrations.
    pub async fn connect(url: &str, max_readers: u32) -> StoreResult<Self> {
        Self::connect_with_writers(url, max_readers, 1).await
    }

    /// [`SqliteStore::connect`] with `writers` write connections instead of one (for
    /// measurements; see `WRITERS` in the module docs). Correct either way: single
    /// statements wait in SQLite's busy handler and multi-statement transactions begin
    /// `IMMEDIATE`. In-memory databases always use one connection.
    pub async fn connect_with_writers(
        url: &str,
        max_readers: u32,
        writers: u32,
    ) -> StoreResult<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|_| StoreError::UnsupportedUrl(url.to_owned()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true);
        let in_memory = url.contains(":memory:") || url.contains("mode=memory");
        // An in-memory database lives as long as its connection: never let it close.
        let writer = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { writers.max(1) })
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.clone())
            .await?;
        let reader = if in_memory {
            writer.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(max_readers.max(1))
                .connect_with(options)
                .await?
        };
        Ok(Self { writer, reader })
    }

    /// The pool every write goes through (one connection). Benchmarks and the baseline
    /// use it.
    pub fn pool(&self) -> &SqlitePool {
        &self.writer
    }

    /// The pool of read connections.
    pub fn reader_pool(&self) -> &SqlitePool {
        &self.reader
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    async fn run_migrations(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.writer)
            .await?;
        Ok(())
    }

    async fn claim_batch_dialect(
        &self,
        worker: &str,
        max: u32,
        lease_expires: Timestamp,
        now: Timestamp,
    ) -> StoreResult<Vec<rows::ValidationRow>> {
        Ok(sqlx::query_as(CLAIM_BATCH)
            .bind(worker)
            .bind(lease_expires.0)
            .bind(now.0)
            .bind(i64::from(max))
            .fetch_all(&self.writer)
            .await?)
    }

    /// One `BEGIN IMMEDIATE` transaction: the guarded status change, then the metrics
    /// row and the outbox rows. Returns false (after rolling back, so nothing is
    /// written) when the claim is no longer held.
    async fn complete_signed_dialect(
        &self,
        claim: &Claimed,
        result: &SignedResult,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
        if Self::complete_signed_in_tx(&mut tx, claim, result, now).await? {
            tx.commit().await?;
            Ok(true)
        } else {
            tx.rollback().await?;
            Ok(false)
        }
    }

    /// Same shape as `complete_signed_dialect`: guarded status change and outbox rows
    /// in one `BEGIN IMMEDIATE` transaction.
    async fn fail_dialect(
        &self,
        claim: &Claimed,
        reason: &Reason,
        outbox: &[NewOutboxEvent],
        now: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin_with(Self::BEGIN_WRITE).await?;
        let row: Option<uuid::Uuid> = sqlx::query_scalar(sql::FAIL_UPDATE)
            .bind(claim.record.id.0)
            .bind(claim.worker.as_str())
            .bind(i64::from(claim.attempt))
            .bind(reason.code.as_str())
            .bind(reason.detail.as_str())
            .bind(now.0)
            .fetch_optional(&mut *tx)
            .await?;
        if row.is_none() {
            tx.rollback().await?;
            return Ok(false);
        }
        insert_outbox(&mut tx, claim.record.id, outbox, now).await?;
        tx.commit().await?;
        Ok(true)
    }
}

impl SqliteStore {
    /// The guarded status change, metrics row and outbox rows of one claim, inside the
    /// caller's write transaction. `false` (and nothing written) when the claim is lost.
    async fn complete_signed_in_tx(
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        claim: &Claimed,
        result: &SignedResult,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let row: Option<(uuid::Uuid, String)> = sqlx::query_as(sql::SIGN_UPDATE)
            .bind(claim.record.id.0)
            .bind(claim.worker.as_str())
            .bind(i64::from(claim.attempt))
            .bind(result.statement_text.as_str())
            .bind(result.bundle_json.as_str())
            .bind(now.0)
            .fetch_optional(&mut **tx)
            .await?;
        let Some((id, chain)) = row else {
            return Ok(false);
        };
        sqlx::query(sql::INSERT_METRIC)
            .bind(id)
            .bind(chain)
            .bind(now.0)
            .bind(result.processing_ms)
            .execute(&mut **tx)
            .await?;
        insert_outbox(tx, claim.record.id, &result.outbox, now).await?;
        Ok(true)
    }
}

async fn insert_outbox(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    validation: ValidationId,
    events: &[NewOutboxEvent],
    now: Timestamp,
) -> StoreResult<()> {
    for e in events {
        sqlx::query(sql::INSERT_OUTBOX)
            .bind(e.event_id)
            .bind(validation.0)
            .bind(e.event_type.as_str())
            .bind(e.payload_json.as_str())
            .bind(e.target_url.as_deref())
            .bind(now.0)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

impl_store!(SqliteStore, Sqlite);
crate::webhooks::impl_webhook_store!(SqliteStore);
crate::admin::impl_admin_store!(SqliteStore, None::<&str>);
crate::reserve_ops::impl_reserve_ops_store!(SqliteStore, Sqlite);
