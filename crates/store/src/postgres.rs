//! PostgreSQL backend: the source of truth in production.
//!
//! Same SQL as SQLite except three operations done here in ONE statement each: the
//! claim (`FOR UPDATE SKIP LOCKED`, so concurrent workers skip each other's rows
//! instead of waiting), and `complete_signed` / `fail`, whose status change, metrics
//! row and outbox rows are data-modifying CTEs of one statement (atomic, and one round
//! trip instead of BEGIN / UPDATE / INSERT… / COMMIT).

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool, Postgres};
use ubtc_core::validation::{Reason, TransitionError};
use ubtc_core::{ChainId, PaymentRef, Timestamp, ValidationId, ValidationStatus};

use crate::rows::{self, validation_columns};
use crate::sql::{self, claim_select, claim_set, fail_update, impl_store, sign_update};
use crate::types::*;
use crate::{Store, StoreError, StoreResult};

/// How long an operation waits for a pooled connection (or for the server to accept a
/// new one) before failing with `StoreError::Unavailable`. Shorter than sqlx's 30 s so
/// that health checks and workers notice an outage quickly.
pub const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Pool size of [`PgStore::connect_in_schema`].
pub const SCHEMA_POOL_CONNECTIONS_DEFAULT: u32 = 32;

/// The claimable ids are locked in a materialised CTE so the `LIMIT` is applied once;
/// rows locked by another claimer are skipped, never waited for.
pub(crate) const CLAIM_BATCH: &str = concat!(
    "WITH due AS MATERIALIZED (",
    claim_select!("validations"),
    " FOR UPDATE SKIP LOCKED) ",
    claim_set!(),
    "WHERE id IN (SELECT id FROM due) RETURNING ",
    validation_columns!()
);

/// `$6` now, `$7` processing time, `$8..$11` the outbox events as parallel arrays.
/// The metrics and outbox inserts read `v`, so they insert nothing when the guarded
/// update matched nothing (claim lost).
pub(crate) const COMPLETE_SIGNED: &str = concat!(
    "WITH v AS (",
    sign_update!(),
    "), m AS (INSERT INTO validation_metrics (validation_id, chain, signed_at, processing_ms) \
     SELECT id, chain, $6, $7 FROM v), \
     o AS (INSERT INTO webhook_outbox (event_id, validation_id, event_type, payload, target_url, \
     attempts, next_attempt_at, created_at) \
     SELECT e.event_id, v.id, e.event_type, e.payload, e.target_url, 0, $6, $6 \
     FROM v CROSS JOIN unnest($8::uuid[], $9::text[], $10::text[], $11::text[]) \
     AS e(event_id, event_type, payload, target_url)) \
     SELECT id FROM v"
);

/// `$6` now, `$7..$10` the outbox events.
const FAIL: &str = concat!(
    "WITH v AS (",
    fail_update!(),
    "), o AS (INSERT INTO webhook_outbox (event_id, validation_id, event_type, payload, \
     target_url, attempts, next_attempt_at, created_at) \
     SELECT e.event_id, v.id, e.event_type, e.payload, e.target_url, 0, $6, $6 \
     FROM v CROSS JOIN unnest($7::uuid[], $8::text[], $9::text[], $10::text[]) \
     AS e(event_id, event_type, payload, target_url)) \
     SELECT id FROM v"
);

#[derive(Clone, Debug)]
pub struct PgStore {
    pool: PgPool,
}

/// Outbox events as parallel arrays for `unnest`.
struct OutboxArrays {
    ids: Vec<uuid::Uuid>,
    types: Vec<String>,
    payloads: Vec<String>,
    targets: Vec<Option<String>>,
}

impl OutboxArrays {
    fn new(events: &[NewOutboxEvent]) -> Self {
        Self {
            ids: events.iter().map(|e| e.event_id).collect(),
            types: events.iter().map(|e| e.event_type.clone()).collect(),
            payloads: events.iter().map(|e| e.payload_json.clone()).collect(),
            targets: events.iter().map(|e| e.target_url.clone()).collect(),
        }
    }
}

impl PgStore {
    const BEGIN_WRITE: &'static str = "BEGIN";
    /// Serialises audit appends (released at commit or rollback). The key is arbitrary
    /// but fixed: the ASCII bytes of "ubtcaudt".
    const AUDIT_LOCK: Option<&'static str> =
        Some("SELECT pg_advisory_xact_lock(8458451020340880500)");

    /// Connects a pool of at most `max_connections` to `url`. Runs no migrations.
    pub async fn connect(url: &str, max_connections: u32) -> StoreResult<Self> {
        let options = PgConnectOptions::from_str(url)?;
        Self::connect_with(options, max_connections).await
    }

    /// Creates `schema` if missing and connects a pool whose every connection has
    /// `search_path` set to it (a startup parameter, so no extra round trip). For
    /// tests and benchmarks that need an isolated database on a shared server. The
    /// name must be ASCII letters, digits and `_`.
    pub async fn connect_in_schema(url: &str, schema: &str) -> StoreResult<Self> {
        Self::connect_in_schema_with(url, schema, SCHEMA_POOL_CONNECTIONS_DEFAULT).await
    }

    /// [`PgStore::connect_in_schema`] with a pool size.
    pub async fn connect_in_schema_with(
        url: &str,
        schema: &str,
        max_connections: u32,
    ) -> StoreResult<Self> {
        if schema.is_empty()
            || !schema
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(StoreError::InvalidInput(format!("schema name {schema:?}")));
        }
        let options = PgConnectOptions::from_str(url)?;
        let mut conn = sqlx::PgConnection::connect_with(&options).await?;
        sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Self::connect_with(options.options([("search_path", schema)]), max_connections).await
    }

    async fn connect_with(options: PgConnectOptions, max_connections: u32) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections.max(1))
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await?;
        Ok(Self { pool })
    }

    /// Drops `schema` and everything in it (test and benchmark clean-up).
    pub async fn drop_schema(&self, schema: &str) -> StoreResult<()> {
        if schema.is_empty()
            || !schema
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(StoreError::InvalidInput(format!("schema name {schema:?}")));
        }
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }

    async fn run_migrations(&self) -> StoreResult<()> {
        sqlx::migrate!("./migrations/postgres")
            .run(&self.pool)
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
            .fetch_all(&self.pool)
            .await?)
    }

    async fn complete_signed_dialect(
        &self,
        claim: &Claimed,
        result: &SignedResult,
        now: Timestamp,
    ) -> StoreResult<bool> {
        complete_signed_on(&self.pool, claim, result, now).await
    }

    /// The same one-statement completion inside the caller's transaction (batches
    /// commit once).
    async fn complete_signed_in_tx(
        tx: &mut sqlx::Transaction<'_, Postgres>,
        claim: &Claimed,
        result: &SignedResult,
        now: Timestamp,
    ) -> StoreResult<bool> {
        complete_signed_on(&mut **tx, claim, result, now).await
    }

    async fn fail_dialect(
        &self,
        claim: &Claimed,
        reason: &Reason,
        outbox: &[NewOutboxEvent],
        now: Timestamp,
    ) -> StoreResult<bool> {
        let o = OutboxArrays::new(outbox);
        let row: Option<uuid::Uuid> = sqlx::query_scalar(FAIL)
            .bind(claim.record.id.0)
            .bind(claim.worker.as_str())
            .bind(i64::from(claim.attempt))
            .bind(reason.code.as_str())
            .bind(reason.detail.as_str())
            .bind(now.0)
            .bind(o.ids)
            .bind(o.types)
            .bind(o.payloads)
            .bind(o.targets)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}

/// `COMPLETE_SIGNED` on a pool or inside a transaction: `false` when the claim is lost.
async fn complete_signed_on<'e, E>(
    executor: E,
    claim: &Claimed,
    result: &SignedResult,
    now: Timestamp,
) -> StoreResult<bool>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let o = OutboxArrays::new(&result.outbox);
    let row: Option<uuid::Uuid> = sqlx::query_scalar(COMPLETE_SIGNED)
        .bind(claim.record.id.0)
        .bind(claim.worker.as_str())
        .bind(i64::from(claim.attempt))
        .bind(result.statement_text.as_str())
        .bind(result.bundle_json.as_str())
        .bind(now.0)
        .bind(result.processing_ms)
        .bind(o.ids)
        .bind(o.types)
        .bind(o.payloads)
        .bind(o.targets)
        .fetch_optional(executor)
        .await?;
    Ok(row.is_some())
}

impl_store!(PgStore, Postgres);
crate::webhooks::impl_webhook_store!(PgStore);
// Serialises disabling accounts (the last-admin check); a fixed key of its own, next to
// the audit lock's.
crate::admin::impl_admin_store!(
    PgStore,
    Some::<&str>("SELECT pg_advisory_xact_lock(8458451020340880501)")
);
crate::reserve_ops::impl_reserve_ops_store!(PgStore, Postgres);
