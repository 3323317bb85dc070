//! The one SQL implementation of [`Store`](crate::Store), shared by both backends.
//!
//! Both sqlx drivers accept `$N` placeholders (SQLite reads `$N` as "argument N", so a
//! number may be repeated), integers are BIGINT in both schemas and ids decode as
//! `Uuid` from a PostgreSQL `UUID` or a SQLite 16-byte `BLOB`. So almost every
//! statement is the same text on both. `impl_store!` writes the `Store` impl once for a
//! backend type; the backend supplies the three operations whose SQL differs
//! (`claim_batch_dialect`, `complete_signed_dialect`, `fail_dialect`: PostgreSQL does
//! them as one statement with `SKIP LOCKED` / data-modifying CTEs, which SQLite lacks)
//! and its migrator.
//!
//! The statement texts are `pub(crate)` constants so that [`crate::baseline`] issues
//! exactly the same SQL.

use crate::rows::{attestation_columns, audit_columns, outbox_columns, validation_columns};

pub(crate) const LIST_REGISTRY: &str = "SELECT body FROM reserve_registry ORDER BY version";
pub(crate) const LAST_REGISTRY: &str =
    "SELECT body FROM reserve_registry ORDER BY version DESC LIMIT 1";
pub(crate) const INSERT_REGISTRY: &str = "INSERT INTO reserve_registry (version, fingerprint, \
     body, published_at) VALUES ($1, $2, $3, $4)";

/// `ON CONFLICT DO NOTHING`: storing the same signed document twice is harmless and
/// keeps the first row (the caller then reads it back by digest).
pub(crate) const INSERT_ATTESTATION: &str = "INSERT INTO attestations (digest, bitcoin_height, \
     bitcoin_hash, reserve_sats, supply_sats, ratio_ppm, registry_version, utxo_count, \
     created_at, stored_at, body) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     ON CONFLICT (digest) DO NOTHING";
pub(crate) const ATTESTATION_BY_DIGEST: &str = concat!(
    "SELECT ",
    attestation_columns!(),
    " FROM attestations WHERE digest = $1"
);
pub(crate) const ATTESTATION_BY_ID: &str = concat!(
    "SELECT ",
    attestation_columns!(),
    ", body FROM attestations WHERE id = $1"
);
pub(crate) const LATEST_ATTESTATION: &str = concat!(
    "SELECT ",
    attestation_columns!(),
    ", body FROM attestations WHERE reorged_at IS NULL ORDER BY id DESC LIMIT 1"
);
pub(crate) const LIST_ATTESTATIONS: &str = concat!(
    "SELECT ",
    attestation_columns!(),
    " FROM attestations WHERE id < $1 ORDER BY id DESC LIMIT $2"
);
pub(crate) const MARK_ATTESTATION_REORGED: &str =
    "UPDATE attestations SET reorged_at = $2 WHERE id = $1 AND reorged_at IS NULL";

pub(crate) const INSERT_VALIDATION: &str = "INSERT INTO validations (id, chain, tx_hash, \
     tx_index, payer, amount_base_units, message, block_number, block_hash, status, \
     pending_reject_code, pending_reject_detail, callback_url, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'detected', $10, $11, $12, $13, $13) \
     ON CONFLICT (tx_hash, chain, tx_index) DO NOTHING RETURNING id";

/// `record_confirmed`: the same insert, landing directly in its post-confirmation
/// state. `$10` status, `$11`/`$12` reason, `$14` now, `$15` confirmations, `$16`
/// not_before.
pub(crate) const INSERT_CONFIRMED: &str = "INSERT INTO validations (id, chain, tx_hash, \
     tx_index, payer, amount_base_units, message, block_number, block_hash, status, \
     reason_code, reason_detail, pending_reject_code, pending_reject_detail, callback_url, \
     created_at, updated_at, confirmations, not_before, confirmed_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $11, $12, $13, $14, $14, $15, \
     $16, $14) \
     ON CONFLICT (tx_hash, chain, tx_index) DO NOTHING RETURNING id";

/// A dropped payment seen again in the canonical chain goes back to `detected`, in its
/// new block, only if it is the same payment (payer, amount and message as recorded):
/// `$1`–`$3` the payment, `$4` payer, `$5` amount, `$6` message, `$7`/`$8` the new
/// block, `$9` the reason detail, `$10` now.
pub(crate) const REVIVE_DROPPED: &str = "UPDATE validations SET status = 'detected', \
     block_number = $7, block_hash = $8, reason_code = 'remined', reason_detail = $9, \
     updated_at = $10 WHERE tx_hash = $1 AND chain = $2 AND tx_index = $3 \
     AND status = 'dropped' AND payer = $4 AND amount_base_units = $5 AND message = $6 \
     RETURNING id";

/// The id and status of a payment already recorded (the status tells whether it was
/// dropped and may come back).
pub(crate) const KNOWN_BY_PAYMENT: &str =
    "SELECT id, status FROM validations WHERE tx_hash = $1 AND chain = $2 AND tx_index = $3";

pub(crate) const STATUS_OF: &str = "SELECT status FROM validations WHERE id = $1";

/// `$2` is `queued` or `delayed`.
pub(crate) const CONFIRM_AND_ENQUEUE: &str = "UPDATE validations SET status = $2, \
     confirmations = $3, not_before = $4, confirmed_at = $5, updated_at = $5 \
     WHERE id = $1 AND status = 'detected'";

pub(crate) const CONFIRM_AND_REJECT: &str = "UPDATE validations SET status = 'rejected', \
     confirmations = $2, reason_code = $3, reason_detail = $4, confirmed_at = $5, \
     updated_at = $5 WHERE id = $1 AND status = 'detected'";

pub(crate) const DROP_REORGED: &str = "UPDATE validations SET status = 'dropped', \
     reason_code = $2, reason_detail = $3, updated_at = $4 WHERE id = $1 AND status = 'detected'";

/// Guard shared by every write on a claim: `$1` id, `$2` lease owner, `$3` attempt.
macro_rules! claim_guard {
    () => {
        " WHERE id = $1 AND status = 'signing' AND lease_owner = $2 AND attempts = $3"
    };
}
pub(crate) use claim_guard;

pub(crate) const RENEW_LEASE: &str = concat!(
    "UPDATE validations SET lease_expires = $4, updated_at = $5",
    claim_guard!()
);

pub(crate) const PREPARE_STATEMENT: &str = concat!(
    "UPDATE validations SET statement_json = $4, updated_at = $5",
    claim_guard!(),
    " AND statement_json IS NULL"
);

pub(crate) const RETRY_LATER: &str = concat!(
    "UPDATE validations SET status = 'queued', not_before = $4, reason_code = $5, \
     reason_detail = $6, lease_owner = NULL, lease_expires = NULL, updated_at = $7",
    claim_guard!()
);

/// The validation half of `complete_signed` (SQLite runs it in a transaction with the
/// inserts below; PostgreSQL inlines the same text in one CTE statement).
macro_rules! sign_update {
    () => {
        concat!(
            "UPDATE validations SET status = 'signed', statement_text = $4, bundle_json = $5, \
             signed_at = $6, updated_at = $6, lease_owner = NULL, lease_expires = NULL",
            $crate::sql::claim_guard!(),
            " RETURNING id, chain"
        )
    };
}
pub(crate) use sign_update;

macro_rules! fail_update {
    () => {
        concat!(
            "UPDATE validations SET status = 'failed', reason_code = $4, reason_detail = $5, \
             lease_owner = NULL, lease_expires = NULL, updated_at = $6",
            $crate::sql::claim_guard!(),
            " RETURNING id"
        )
    };
}
pub(crate) use fail_update;

pub(crate) const SIGN_UPDATE: &str = sign_update!();
pub(crate) const FAIL_UPDATE: &str = fail_update!();

pub(crate) const INSERT_METRIC: &str = "INSERT INTO validation_metrics (validation_id, chain, \
     signed_at, processing_ms) VALUES ($1, $2, $3, $4)";

pub(crate) const INSERT_OUTBOX: &str = "INSERT INTO webhook_outbox (event_id, validation_id, \
     event_type, payload, target_url, attempts, next_attempt_at, created_at) \
     VALUES ($1, $2, $3, $4, $5, 0, $6, $6)";

pub(crate) const REQUEUE_FAILED: &str = "UPDATE validations SET status = 'queued', attempts = 0, \
     not_before = $2, lease_owner = NULL, lease_expires = NULL, updated_at = $2 \
     WHERE id = $1 AND status = 'failed'";

pub(crate) const MARK_DELIVERED: &str = "UPDATE validations SET status = 'delivered', \
     updated_at = $2 WHERE id = $1 AND status = 'signed'";

/// Claim predicate and order, shared by both claim statements: waiting rows whose time
/// has come, or held rows whose lease ran out (due 1 ms after `lease_expires`, so a
/// lease is taken over strictly after it expires). The expression is the key of the
/// partial index `validations_due_idx` (migration 0003), written identically so both
/// planners use it for the filter and the order. `$3` is now, `$4` the batch size.
/// `$from` names the table (SQLite adds `INDEXED BY`: without `ANALYZE` statistics its
/// planner prefers the status index and sorts every due row).
macro_rules! claim_select {
    ($from:literal) => {
        concat!(
            "SELECT id FROM ",
            $from,
            " WHERE status IN ('queued', 'delayed', 'signing') \
           AND (CASE WHEN status = 'signing' THEN lease_expires + 1 ELSE COALESCE(not_before, 0) END) <= $3 \
         ORDER BY (CASE WHEN status = 'signing' THEN lease_expires + 1 ELSE COALESCE(not_before, 0) END), id \
         LIMIT $4"
        )
    };
}
pub(crate) use claim_select;

/// `$1` worker, `$2` lease expiry, `$3` now, `$4` max rows.
macro_rules! claim_set {
    () => {
        "UPDATE validations SET status = 'signing', lease_owner = $1, lease_expires = $2, \
         attempts = attempts + 1, updated_at = $3 "
    };
}
pub(crate) use claim_set;

pub(crate) const GET_VALIDATION: &str = concat!(
    "SELECT ",
    validation_columns!(),
    " FROM validations WHERE id = $1"
);
pub(crate) const LIST_DETECTED: &str = concat!(
    "SELECT ",
    validation_columns!(),
    " FROM validations WHERE status = 'detected' AND chain = $1 ORDER BY id LIMIT $2"
);
pub(crate) const FIND_BY_TX: &str = concat!(
    "SELECT ",
    validation_columns!(),
    " FROM validations WHERE tx_hash = $1 ORDER BY id"
);
pub(crate) const FIND_BY_TX_CHAIN: &str = concat!(
    "SELECT ",
    validation_columns!(),
    " FROM validations WHERE tx_hash = $1 AND chain = $2 ORDER BY id"
);
pub(crate) const GET_BY_PAYMENT: &str = concat!(
    "SELECT ",
    validation_columns!(),
    " FROM validations WHERE tx_hash = $1 AND chain = $2 AND tx_index = $3"
);
pub(crate) const LIST_PREFIX: &str = concat!("SELECT ", validation_columns!(), " FROM validations");
pub(crate) const GET_BUNDLE: &str = "SELECT bundle_json FROM validations WHERE id = $1";
pub(crate) const STATUS_COUNTS: &str = "SELECT chain, status, COUNT(*) AS n FROM validations \
     GROUP BY chain, status ORDER BY chain, status";
pub(crate) const METRICS_COUNT: &str =
    "SELECT COUNT(*) FROM validation_metrics WHERE signed_at >= $1";
/// Nearest-rank percentile without dialect-specific aggregates: the value at a rank.
pub(crate) const METRIC_AT_RANK: &str = "SELECT processing_ms FROM validation_metrics \
     WHERE signed_at >= $1 ORDER BY processing_ms LIMIT 1 OFFSET $2";

pub(crate) const ADD_ADDRESS: &str = "INSERT INTO bitcoin_wallets (address, descriptor, kind, \
     label, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (address) DO NOTHING";
pub(crate) const GET_ADDRESS: &str = "SELECT id, address, descriptor, kind, label, created_at, \
     retired_at FROM bitcoin_wallets WHERE address = $1";
pub(crate) const LIST_ADDRESSES: &str = "SELECT id, address, descriptor, kind, label, \
     created_at, retired_at FROM bitcoin_wallets WHERE retired_at IS NULL ORDER BY id";
pub(crate) const LIST_ALL_ADDRESSES: &str = "SELECT id, address, descriptor, kind, label, \
     created_at, retired_at FROM bitcoin_wallets ORDER BY id";
pub(crate) const RETIRE_ADDRESS: &str =
    "UPDATE bitcoin_wallets SET retired_at = $2 WHERE address = $1 AND retired_at IS NULL";

pub(crate) const UPSERT_TOKEN: &str = "INSERT INTO chain_tokens (chain, token_address, \
     decimals, symbol) VALUES ($1, $2, $3, $4) ON CONFLICT (chain) DO UPDATE SET \
     token_address = excluded.token_address, decimals = excluded.decimals, \
     symbol = excluded.symbol";
pub(crate) const LIST_TOKENS: &str =
    "SELECT chain, token_address, decimals, symbol FROM chain_tokens ORDER BY chain";

pub(crate) const INSERT_SNAPSHOT: &str = "INSERT INTO reserve_ratios (taken_at, bitcoin_height, \
     bitcoin_block_hash, reserve_sats, supply_sats, ratio_ppm, healthy, stale, supply_json) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id";
pub(crate) const LATEST_SNAPSHOT: &str = "SELECT taken_at, bitcoin_height, bitcoin_block_hash, \
     reserve_sats, supply_sats, ratio_ppm, healthy, stale, supply_json FROM reserve_ratios \
     ORDER BY taken_at DESC, id DESC LIMIT 1";

pub(crate) const UPSERT_ADDRESS_BALANCE: &str = "INSERT INTO reserve_address_balances \
     (bitcoin_block_hash, bitcoin_height, address, descriptor, balance_sats, utxos, recorded_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (bitcoin_block_hash, address) DO UPDATE SET \
     descriptor = excluded.descriptor, balance_sats = excluded.balance_sats, \
     utxos = excluded.utxos, recorded_at = excluded.recorded_at";
pub(crate) const ADDRESS_BALANCES: &str = "SELECT address, descriptor, balance_sats, utxos \
     FROM reserve_address_balances WHERE bitcoin_block_hash = $1 ORDER BY address";

/// Portable across both dialects: integer division buckets `taken_at`, and the
/// bucket's last row is the one with the highest id.
pub(crate) const RESERVE_HISTORY: &str = "SELECT r.taken_at, r.bitcoin_height, \
     r.bitcoin_block_hash, r.reserve_sats, r.supply_sats, r.ratio_ppm, r.healthy, r.stale, \
     r.supply_json, b.bucket, b.samples, b.min_ratio_ppm, b.max_ratio_ppm FROM (SELECT \
     taken_at / $3 AS bucket, COUNT(*) AS samples, MIN(ratio_ppm) AS min_ratio_ppm, \
     MAX(ratio_ppm) AS max_ratio_ppm, MAX(id) AS last_id FROM reserve_ratios \
     WHERE taken_at >= $1 AND taken_at < $2 GROUP BY bucket) b \
     JOIN reserve_ratios r ON r.id = b.last_id ORDER BY b.bucket LIMIT $4";

pub(crate) const GET_CURSOR: &str =
    "SELECT chain, block_number, block_hash FROM chain_cursors WHERE chain = $1";
pub(crate) const SET_CURSOR: &str = "INSERT INTO chain_cursors (chain, block_number, block_hash, \
     updated_at) VALUES ($1, $2, $3, $4) ON CONFLICT (chain) DO UPDATE SET \
     block_number = excluded.block_number, block_hash = excluded.block_hash, \
     updated_at = excluded.updated_at";

pub(crate) const DUE_OUTBOX: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    " FROM webhook_outbox WHERE delivered_at IS NULL AND dead_at IS NULL \
     AND next_attempt_at <= $1 ORDER BY next_attempt_at, id LIMIT $2"
);
pub(crate) const OUTBOX_FOR: &str = concat!(
    "SELECT ",
    outbox_columns!(),
    " FROM webhook_outbox WHERE validation_id = $1 ORDER BY id"
);
/// `$2` delivered_at, `$3` next attempt, `$4` dead_at, `$5` error; NULLs keep the column.
pub(crate) const OUTBOX_ATTEMPT: &str = "UPDATE webhook_outbox SET attempts = attempts + 1, \
     delivered_at = $2, next_attempt_at = COALESCE($3, next_attempt_at), dead_at = $4, \
     last_error = COALESCE($5, last_error), claim_until = NULL \
     WHERE event_id = $1 AND delivered_at IS NULL AND dead_at IS NULL";

pub(crate) const LAST_AUDIT_HASH: &str = "SELECT hash FROM audit_logs ORDER BY id DESC LIMIT 1";
pub(crate) const INSERT_AUDIT: &str = "INSERT INTO audit_logs (at, actor, action, target, \
     old_value, new_value, ip, user_agent, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id";
pub(crate) const LIST_AUDIT: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_logs ORDER BY id DESC LIMIT $1"
);
pub(crate) const LIST_AUDIT_BEFORE: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_logs WHERE id < $1 ORDER BY id DESC LIMIT $2"
);
pub(crate) const AUDIT_PAGE: &str = concat!(
    "SELECT ",
    audit_columns!(),
    " FROM audit_logs WHERE id > $1 ORDER BY id LIMIT $2"
);
/// Records read per round trip by `verify_audit_chain`.
pub(crate) const AUDIT_PAGE_ROWS: i64 = 1_000;

/// `acquire_lease`: `$1` name, `$2` holder, `$3` expires_at, `$4` now. Takes the row
/// if it is expired or already ours; the token stays for a renewal of an unexpired
/// lease by its holder and grows by one otherwise (a takeover, or a re-acquisition
/// after expiry or release). No row returned: someone else holds it.
pub(crate) const ACQUIRE_LEASE: &str = "INSERT INTO leases (name, holder, token, expires_at, \
     acquired_at) VALUES ($1, $2, 1, $3, $4) \
     ON CONFLICT (name) DO UPDATE SET \
     token = CASE WHEN leases.holder = excluded.holder AND leases.expires_at >= $4 \
     THEN leases.token ELSE leases.token + 1 END, \
     acquired_at = CASE WHEN leases.holder = excluded.holder AND leases.expires_at >= $4 \
     THEN leases.acquired_at ELSE excluded.acquired_at END, \
     holder = excluded.holder, expires_at = excluded.expires_at \
     WHERE leases.expires_at < $4 OR leases.holder = excluded.holder \
     RETURNING token, expires_at";

/// `release_lease`: expires the lease now (0 is before any `now`); the holder is kept
/// for the record.
pub(crate) const RELEASE_LEASE: &str =
    "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND expires_at > 0";

pub(crate) const GET_LEASE: &str =
    "SELECT name, holder, token, expires_at FROM leases WHERE name = $1";

/// `Ok` when a write guarded by [`claim_guard!`] changed its row; `LostClaim` when the
/// claim was taken over (the guard matched nothing, so nothing was written).
pub(crate) fn claim_held(claim: &crate::Claimed, rows_affected: u64) -> crate::StoreResult<()> {
    if rows_affected == 1 {
        Ok(())
    } else {
        Err(crate::StoreError::LostClaim {
            id: claim.record.id,
        })
    }
}

/// Writes `impl Store for $store` over `$db` with the shared SQL above. The store type
/// must have `writer()` and `reader()` pool accessors, `run_migrations()`, the three
/// `*_dialect` operations, and the constants `BEGIN_WRITE` (the statement that opens a
/// write transaction) and `AUDIT_LOCK` (a statement serialising audit appends, if the
/// transaction alone does not).
macro_rules! impl_store {
    ($store:ty, $db:ty) => {
        impl $store {
            /// Explains why a guarded single-row status change matched nothing: the
            /// row is missing, or its current status forbids the move.
            async fn refused(&self, id: ValidationId, to: ValidationStatus) -> StoreError {
                let current: Result<Option<String>, sqlx::Error> =
                    sqlx::query_scalar(sql::STATUS_OF)
                        .bind(id.0)
                        .fetch_optional(self.writer())
                        .await;
                match current {
                    Err(e) => e.into(),
                    Ok(None) => StoreError::NotFound(id),
                    Ok(Some(s)) => match rows::parse_status(&s) {
                        Err(e) => e,
                        // The row moved between our guarded write and this read; report
                        // the move from the state it now has.
                        Ok(from) => StoreError::Transition(
                            from.transition(to)
                                .err()
                                .unwrap_or(TransitionError { from, to }),
                        ),
                    },
                }
            }

            /// The outcome of an `INSERT … ON CONFLICT DO NOTHING RETURNING id`: the new
            /// id, or the existing row's (rows are never deleted, so it is there).
            async fn recorded(
                &self,
                inserted: Option<uuid::Uuid>,
                new: &NewValidation,
                now: Timestamp,
            ) -> StoreResult<Recorded> {
                if let Some(id) = inserted {
                    return Ok(Recorded::Inserted(ValidationId(id)));
                }
                let p = &new.payment;
                let (existing, status): (uuid::Uuid, String) =
                    sqlx::query_as(sql::KNOWN_BY_PAYMENT)
                        .bind(p.tx_hash.as_str())
                        .bind(p.chain.as_str())
                        .bind(i64::from(p.index))
                        .fetch_one(self.writer())
                        .await?;
                // Only a dropped row costs the second statement (rare: after a reorg).
                if status == ValidationStatus::Dropped.as_str() {
                    if let Some(id) = Self::revive_dropped(new, now)?
                        .fetch_optional(self.writer())
                        .await?
                    {
                        return Ok(Recorded::Revived(ValidationId(id)));
                    }
                }
                Ok(Recorded::AlreadyKnown(ValidationId(existing)))
            }

            /// [`sql::REVIVE_DROPPED`] for `new`: the id when a dropped row of the same
            /// payment went back to `detected`.
            fn revive_dropped<'q>(
                new: &'q NewValidation,
                now: Timestamp,
            ) -> StoreResult<
                sqlx::query::QueryScalar<
                    'q,
                    $db,
                    uuid::Uuid,
                    <$db as sqlx::Database>::Arguments<'q>,
                >,
            > {
                ValidationStatus::Dropped.transition(ValidationStatus::Detected)?;
                let p = &new.payment;
                Ok(sqlx::query_scalar(sql::REVIVE_DROPPED)
                    .bind(p.tx_hash.as_str())
                    .bind(p.chain.as_str())
                    .bind(i64::from(p.index))
                    .bind(new.payer.as_str())
                    .bind(new.amount_base_units.to_string())
                    .bind(new.message.as_slice())
                    .bind(rows::to_i64(new.block.number, "block number")?)
                    .bind(new.block.hash.as_str())
                    .bind(format!(
                        "dropped in a reorg, then mined again in block {} {}",
                        new.block.number, new.block.hash
                    ))
                    .bind(now.0))
            }

            /// Runs a guarded `UPDATE … WHERE id = $1 AND status = <from>`; maps "no row"
            /// to NotFound or Transition.
            async fn guarded<'q>(
                &self,
                id: ValidationId,
                to: ValidationStatus,
                q: sqlx::query::Query<'q, $db, <$db as sqlx::Database>::Arguments<'q>>,
            ) -> StoreResult<()> {
                if q.execute(self.writer()).await?.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(self.refused(id, to).await)
                }
            }
        }

        impl $store {
            /// `INSERT_VALIDATION` with its arguments bound (single and batch intake).
            fn insert_validation<'q>(
                new: &'q NewValidation,
                now: Timestamp,
            ) -> StoreResult<
                sqlx::query::QueryScalar<
                    'q,
                    $db,
                    uuid::Uuid,
                    <$db as sqlx::Database>::Arguments<'q>,
                >,
            > {
                let p = &new.payment;
                Ok(sqlx::query_scalar(sql::INSERT_VALIDATION)
                    .bind(new.id.0)
                    .bind(p.chain.as_str())
                    .bind(p.tx_hash.as_str())
                    .bind(i64::from(p.index))
                    .bind(new.payer.as_str())
                    .bind(new.amount_base_units.to_string())
                    .bind(new.message.as_slice())
                    .bind(rows::to_i64(new.block.number, "block number")?)
                    .bind(new.block.hash.as_str())
                    .bind(new.rejection.as_ref().map(|r| r.code.as_str()))
                    .bind(new.rejection.as_ref().map(|r| r.detail.as_str()))
                    .bind(new.callback_url.as_deref())
                    .bind(now.0))
            }
        }

        #[async_trait::async_trait]
        impl Store for $store {
            async fn migrate(&self) -> StoreResult<()> {
                self.run_migrations().await
            }

            async fn ping(&self) -> StoreResult<()> {
                sqlx::query("SELECT 1").execute(self.reader()).await?;
                Ok(())
            }

            async fn record_detected(
                &self,
                new: &NewValidation,
                now: Timestamp,
            ) -> StoreResult<Recorded> {
                let inserted = Self::insert_validation(new, now)?
                    .fetch_optional(self.writer())
                    .await?;
                self.recorded(inserted, new, now).await
            }

            async fn record_confirmed(
                &self,
                new: &NewValidation,
                confirmations: u64,
                delay_until: Option<Timestamp>,
                now: Timestamp,
            ) -> StoreResult<Recorded> {
                let confirmed =
                    ValidationStatus::Detected.transition(ValidationStatus::Confirmed)?;
                let (status, reason, not_before) = match (&new.rejection, delay_until) {
                    (Some(reason), _) => (
                        confirmed.transition(ValidationStatus::Rejected)?,
                        Some(reason),
                        None,
                    ),
                    (None, None) => (
                        confirmed.transition(ValidationStatus::Queued)?,
                        None,
                        Some(now),
                    ),
                    (None, Some(t)) => (
                        confirmed
                            .transition(ValidationStatus::Queued)?
                            .transition(ValidationStatus::Delayed)?,
                        None,
                        Some(t),
                    ),
                };
                let p = &new.payment;
                let inserted: Option<uuid::Uuid> = sqlx::query_scalar(sql::INSERT_CONFIRMED)
                    .bind(new.id.0)
                    .bind(p.chain.as_str())
                    .bind(p.tx_hash.as_str())
                    .bind(i64::from(p.index))
                    .bind(new.payer.as_str())
                    .bind(new.amount_base_units.to_string())
                    .bind(new.message.as_slice())
                    .bind(rows::to_i64(new.block.number, "block number")?)
                    .bind(new.block.hash.as_str())
                    .bind(status.as_str())
                    .bind(reason.map(|r| r.code.as_str()))
                    .bind(reason.map(|r| r.detail.as_str()))
                    .bind(new.callback_url.as_deref())
                    .bind(now.0)
                    .bind(rows::to_i64(confirmations, "confirmations")?)
                    .bind(not_before.map(|t| t.0))
                    .fetch_optional(self.writer())
                    .await?;
                self.recorded(inserted, new, now).await
            }

            async fn list_detected(
                &self,
                chain: &ChainId,
                limit: u32,
            ) -> StoreResult<Vec<ValidationRecord>> {
                let rows: Vec<rows::ValidationRow> = sqlx::query_as(sql::LIST_DETECTED)
                    .bind(chain.as_str())
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                rows::validations(rows)
            }

            async fn confirm_and_enqueue(
                &self,
                id: ValidationId,
                confirmations: u64,
                delay_until: Option<Timestamp>,
                now: Timestamp,
            ) -> StoreResult<ValidationStatus> {
                let queued = ValidationStatus::Detected
                    .transition(ValidationStatus::Confirmed)?
                    .transition(ValidationStatus::Queued)?;
                let (to, not_before) = match delay_until {
                    Some(t) => (queued.transition(ValidationStatus::Delayed)?, t),
                    None => (queued, now),
                };
                let q = sqlx::query(sql::CONFIRM_AND_ENQUEUE)
                    .bind(id.0)
                    .bind(to.as_str())
                    .bind(rows::to_i64(confirmations, "confirmations")?)
                    .bind(not_before.0)
                    .bind(now.0);
                self.guarded(id, ValidationStatus::Confirmed, q).await?;
                Ok(to)
            }

            async fn confirm_and_reject(
                &self,
                id: ValidationId,
                confirmations: u64,
                reason: &Reason,
                now: Timestamp,
            ) -> StoreResult<()> {
                ValidationStatus::Detected
                    .transition(ValidationStatus::Confirmed)?
                    .transition(ValidationStatus::Rejected)?;
                let q = sqlx::query(sql::CONFIRM_AND_REJECT)
                    .bind(id.0)
                    .bind(rows::to_i64(confirmations, "confirmations")?)
                    .bind(reason.code.as_str())
                    .bind(reason.detail.as_str())
                    .bind(now.0);
                self.guarded(id, ValidationStatus::Confirmed, q).await
            }

            async fn drop_reorged(
                &self,
                id: ValidationId,
                reason: &Reason,
                now: Timestamp,
            ) -> StoreResult<()> {
                ValidationStatus::Detected.transition(ValidationStatus::Dropped)?;
                let q = sqlx::query(sql::DROP_REORGED)
                    .bind(id.0)
                    .bind(reason.code.as_str())
                    .bind(reason.detail.as_str())
                    .bind(now.0);
                self.guarded(id, ValidationStatus::Dropped, q).await
            }

            async fn claim_batch(
                &self,
                worker: &str,
                max: u32,
                lease_ms: i64,
                now: Timestamp,
            ) -> StoreResult<Vec<Claimed>> {
                if max == 0 {
                    return Ok(Vec::new());
                }
                let rows = self
                    .claim_batch_dialect(worker, max, now.plus_millis(lease_ms), now)
                    .await?;
                let mut claimed = rows
                    .into_iter()
                    .map(rows::claimed)
                    .collect::<StoreResult<Vec<Claimed>>>()?;
                // RETURNING order is unspecified: hand jobs out in queue order.
                claimed.sort_by_key(|c| (c.record.not_before.map_or(0, |t| t.0), c.record.id));
                Ok(claimed)
            }

            async fn renew_lease(
                &self,
                claim: &Claimed,
                lease_ms: i64,
                now: Timestamp,
            ) -> StoreResult<()> {
                let done = sqlx::query(sql::RENEW_LEASE)
                    .bind(claim.record.id.0)
                    .bind(claim.worker.as_str())
                    .bind(i64::from(claim.attempt))
                    .bind(now.plus_millis(lease_ms).0)
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                sql::claim_held(claim, done.rows_affected())
            }

            async fn complete_signed(
                &self,
                claim: &Claimed,
                result: &SignedResult,
                now: Timestamp,
            ) -> StoreResult<()> {
                ValidationStatus::Signing.transition(ValidationStatus::Signed)?;
                if self.complete_signed_dialect(claim, result, now).await? {
                    Ok(())
                } else {
                    Err(StoreError::LostClaim {
                        id: claim.record.id,
                    })
                }
            }

            async fn record_detected_batch(
                &self,
                new: &[NewValidation],
                now: Timestamp,
            ) -> StoreResult<Vec<Recorded>> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let mut out = Vec::with_capacity(new.len());
                for n in new {
                    let p = &n.payment;
                    let inserted = Self::insert_validation(n, now)?
                        .fetch_optional(&mut *tx)
                        .await?;
                    match inserted {
                        Some(id) => out.push(Recorded::Inserted(ValidationId(id))),
                        None => {
                            let (id, status): (uuid::Uuid, String) =
                                sqlx::query_as(sql::KNOWN_BY_PAYMENT)
                                    .bind(p.tx_hash.as_str())
                                    .bind(p.chain.as_str())
                                    .bind(i64::from(p.index))
                                    .fetch_one(&mut *tx)
                                    .await?;
                            if status == ValidationStatus::Dropped.as_str() {
                                if let Some(id) = Self::revive_dropped(n, now)?
                                    .fetch_optional(&mut *tx)
                                    .await?
                                {
                                    out.push(Recorded::Revived(ValidationId(id)));
                                    continue;
                                }
                            }
                            out.push(Recorded::AlreadyKnown(ValidationId(id)));
                        }
                    }
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn confirm_and_enqueue_batch(
                &self,
                items: &[(ValidationId, u64, Option<Timestamp>)],
                now: Timestamp,
            ) -> StoreResult<Vec<StoreResult<ValidationStatus>>> {
                let queued = ValidationStatus::Detected
                    .transition(ValidationStatus::Confirmed)?
                    .transition(ValidationStatus::Queued)?;
                let delayed = queued.transition(ValidationStatus::Delayed)?;
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let mut applied = Vec::with_capacity(items.len());
                for (id, confirmations, delay_until) in items {
                    let (to, not_before) = match delay_until {
                        Some(t) => (delayed, *t),
                        None => (queued, now),
                    };
                    let done = sqlx::query(sql::CONFIRM_AND_ENQUEUE)
                        .bind(id.0)
                        .bind(to.as_str())
                        .bind(rows::to_i64(*confirmations, "confirmations")?)
                        .bind(not_before.0)
                        .bind(now.0)
                        .execute(&mut *tx)
                        .await?;
                    applied.push((done.rows_affected() == 1).then_some(to));
                }
                tx.commit().await?;
                let mut out = Vec::with_capacity(items.len());
                for ((id, _, _), done) in items.iter().zip(applied) {
                    out.push(match done {
                        Some(to) => Ok(to),
                        None => Err(self.refused(*id, ValidationStatus::Confirmed).await),
                    });
                }
                Ok(out)
            }

            async fn prepare_statements(
                &self,
                items: &[(&Claimed, &str)],
                now: Timestamp,
            ) -> StoreResult<Vec<bool>> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let mut out = Vec::with_capacity(items.len());
                for (claim, statement_json) in items {
                    let done = sqlx::query(sql::PREPARE_STATEMENT)
                        .bind(claim.record.id.0)
                        .bind(claim.worker.as_str())
                        .bind(i64::from(claim.attempt))
                        .bind(*statement_json)
                        .bind(now.0)
                        .execute(&mut *tx)
                        .await?;
                    out.push(done.rows_affected() == 1);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn complete_signed_batch(
                &self,
                items: &[(&Claimed, &SignedResult)],
                now: Timestamp,
            ) -> StoreResult<Vec<bool>> {
                ValidationStatus::Signing.transition(ValidationStatus::Signed)?;
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let mut out = Vec::with_capacity(items.len());
                for (claim, result) in items {
                    out.push(Self::complete_signed_in_tx(&mut tx, claim, result, now).await?);
                }
                tx.commit().await?;
                Ok(out)
            }

            async fn prepare_statement(
                &self,
                claim: &Claimed,
                statement_json: &str,
                now: Timestamp,
            ) -> StoreResult<()> {
                let done = sqlx::query(sql::PREPARE_STATEMENT)
                    .bind(claim.record.id.0)
                    .bind(claim.worker.as_str())
                    .bind(i64::from(claim.attempt))
                    .bind(statement_json)
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                sql::claim_held(claim, done.rows_affected())
            }

            async fn retry_later(
                &self,
                claim: &Claimed,
                reason: &Reason,
                not_before: Timestamp,
                now: Timestamp,
            ) -> StoreResult<()> {
                ValidationStatus::Signing.transition(ValidationStatus::Queued)?;
                let done = sqlx::query(sql::RETRY_LATER)
                    .bind(claim.record.id.0)
                    .bind(claim.worker.as_str())
                    .bind(i64::from(claim.attempt))
                    .bind(not_before.0)
                    .bind(reason.code.as_str())
                    .bind(reason.detail.as_str())
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                sql::claim_held(claim, done.rows_affected())
            }

            async fn fail(
                &self,
                claim: &Claimed,
                reason: &Reason,
                outbox: &[NewOutboxEvent],
                now: Timestamp,
            ) -> StoreResult<()> {
                ValidationStatus::Signing.transition(ValidationStatus::Failed)?;
                if self.fail_dialect(claim, reason, outbox, now).await? {
                    Ok(())
                } else {
                    Err(StoreError::LostClaim {
                        id: claim.record.id,
                    })
                }
            }

            async fn requeue_failed(&self, id: ValidationId, now: Timestamp) -> StoreResult<()> {
                ValidationStatus::Failed.transition(ValidationStatus::Queued)?;
                let q = sqlx::query(sql::REQUEUE_FAILED).bind(id.0).bind(now.0);
                self.guarded(id, ValidationStatus::Queued, q).await
            }

            async fn mark_delivered(&self, id: ValidationId, now: Timestamp) -> StoreResult<()> {
                ValidationStatus::Signed.transition(ValidationStatus::Delivered)?;
                let q = sqlx::query(sql::MARK_DELIVERED).bind(id.0).bind(now.0);
                self.guarded(id, ValidationStatus::Delivered, q).await
            }

            async fn get_validation(
                &self,
                id: ValidationId,
            ) -> StoreResult<Option<ValidationRecord>> {
                let row: Option<rows::ValidationRow> = sqlx::query_as(sql::GET_VALIDATION)
                    .bind(id.0)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(ValidationRecord::try_from).transpose()
            }

            async fn find_by_payment(
                &self,
                chain: Option<&ChainId>,
                tx_hash: &str,
            ) -> StoreResult<Vec<ValidationRecord>> {
                let rows: Vec<rows::ValidationRow> = match chain {
                    Some(chain) => {
                        sqlx::query_as(sql::FIND_BY_TX_CHAIN)
                            .bind(tx_hash)
                            .bind(chain.as_str())
                            .fetch_all(self.reader())
                            .await?
                    }
                    None => {
                        sqlx::query_as(sql::FIND_BY_TX)
                            .bind(tx_hash)
                            .fetch_all(self.reader())
                            .await?
                    }
                };
                rows::validations(rows)
            }

            async fn get_by_payment_ref(
                &self,
                payment: &PaymentRef,
            ) -> StoreResult<Option<ValidationRecord>> {
                let row: Option<rows::ValidationRow> = sqlx::query_as(sql::GET_BY_PAYMENT)
                    .bind(payment.tx_hash.as_str())
                    .bind(payment.chain.as_str())
                    .bind(i64::from(payment.index))
                    .fetch_optional(self.reader())
                    .await?;
                row.map(ValidationRecord::try_from).transpose()
            }

            async fn list_validations(
                &self,
                filter: &ValidationFilter,
            ) -> StoreResult<Vec<ValidationRecord>> {
                // One text per combination of filters (at most eight, each prepared
                // once), so every combination gets its own index-friendly plan.
                let mut text = String::from(sql::LIST_PREFIX);
                let mut n = 0;
                let mut clause = |text: &mut String, cond: &str| {
                    n += 1;
                    text.push_str(if n == 1 { " WHERE " } else { " AND " });
                    text.push_str(cond);
                    text.push_str(&format!(" ${n}"));
                };
                if filter.status.is_some() {
                    clause(&mut text, "status =");
                }
                if filter.chain.is_some() {
                    clause(&mut text, "chain =");
                }
                if filter.before.is_some() {
                    clause(&mut text, "id <");
                }
                let limit_param = n + 1;
                text.push_str(&format!(" ORDER BY id DESC LIMIT ${limit_param}"));
                let mut q = sqlx::query_as::<_, rows::ValidationRow>(&text);
                if let Some(status) = filter.status {
                    q = q.bind(status.as_str());
                }
                if let Some(chain) = &filter.chain {
                    q = q.bind(chain.as_str());
                }
                if let Some(before) = filter.before {
                    q = q.bind(before.0);
                }
                let rows = q
                    .bind(i64::from(filter.limit))
                    .fetch_all(self.reader())
                    .await?;
                rows::validations(rows)
            }

            async fn get_bundle(&self, id: ValidationId) -> StoreResult<Option<String>> {
                let bundle: Option<Option<String>> = sqlx::query_scalar(sql::GET_BUNDLE)
                    .bind(id.0)
                    .fetch_optional(self.reader())
                    .await?;
                Ok(bundle.flatten())
            }

            async fn stats(&self, since: Timestamp) -> StoreResult<Stats> {
                let counts: Vec<rows::StatusCountRow> = sqlx::query_as(sql::STATUS_COUNTS)
                    .fetch_all(self.reader())
                    .await?;
                let counts = counts
                    .into_iter()
                    .map(StatusCount::try_from)
                    .collect::<StoreResult<Vec<_>>>()?;
                let signed: i64 = sqlx::query_scalar(sql::METRICS_COUNT)
                    .bind(since.0)
                    .fetch_one(self.reader())
                    .await?;
                let mut pct = [None; 3];
                if signed > 0 {
                    for (slot, p) in pct.iter_mut().zip([50, 90, 99]) {
                        // Nearest rank: the smallest value with at least p% at or below.
                        let rank = (signed * p + 99) / 100;
                        let value: i64 = sqlx::query_scalar(sql::METRIC_AT_RANK)
                            .bind(since.0)
                            .bind(rank.max(1) - 1)
                            .fetch_one(self.reader())
                            .await?;
                        *slot = Some(value);
                    }
                }
                Ok(Stats {
                    counts,
                    processing_ms_p50: pct[0],
                    processing_ms_p90: pct[1],
                    processing_ms_p99: pct[2],
                    signed_since: u64::try_from(signed).unwrap_or(0),
                })
            }

            async fn add_reserve_address(
                &self,
                new: &NewReserveAddress,
                now: Timestamp,
            ) -> StoreResult<ReserveAddress> {
                sqlx::query(sql::ADD_ADDRESS)
                    .bind(new.address.as_str())
                    .bind(new.descriptor.as_str())
                    .bind(new.kind.as_str())
                    .bind(new.label.as_deref())
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                let row: rows::ReserveAddressRow = sqlx::query_as(sql::GET_ADDRESS)
                    .bind(new.address.as_str())
                    .fetch_one(self.writer())
                    .await?;
                Ok(row.into())
            }

            async fn list_reserve_addresses(&self) -> StoreResult<Vec<ReserveAddress>> {
                let rows: Vec<rows::ReserveAddressRow> = sqlx::query_as(sql::LIST_ADDRESSES)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(ReserveAddress::from).collect())
            }

            async fn list_all_reserve_addresses(&self) -> StoreResult<Vec<ReserveAddress>> {
                let rows: Vec<rows::ReserveAddressRow> = sqlx::query_as(sql::LIST_ALL_ADDRESSES)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map(ReserveAddress::from).collect())
            }

            async fn retire_reserve_address(
                &self,
                address: &str,
                now: Timestamp,
            ) -> StoreResult<bool> {
                let done = sqlx::query(sql::RETIRE_ADDRESS)
                    .bind(address)
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn upsert_chain_token(&self, token: &ChainToken) -> StoreResult<()> {
                sqlx::query(sql::UPSERT_TOKEN)
                    .bind(token.chain.as_str())
                    .bind(token.token_address.as_str())
                    .bind(i64::from(token.decimals))
                    .bind(token.symbol.as_str())
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn list_chain_tokens(&self) -> StoreResult<Vec<ChainToken>> {
                let rows: Vec<rows::ChainTokenRow> = sqlx::query_as(sql::LIST_TOKENS)
                    .fetch_all(self.reader())
                    .await?;
                rows.into_iter().map(ChainToken::try_from).collect()
            }

            async fn record_reserve_snapshot(&self, s: &ReserveSnapshot) -> StoreResult<i64> {
                let supply_json = serde_json::to_string(&s.supply)
                    .map_err(|e| StoreError::InvalidInput(format!("supply entries: {e}")))?;
                let ratio = s
                    .ratio_ppm
                    .map(|r| rows::to_i64(r, "ratio_ppm"))
                    .transpose()?;
                let id: i64 = sqlx::query_scalar(sql::INSERT_SNAPSHOT)
                    .bind(s.taken_at.0)
                    .bind(i64::from(s.bitcoin_height))
                    .bind(s.bitcoin_block_hash.as_str())
                    .bind(rows::to_i64(s.reserve_sats.0, "reserve_sats")?)
                    .bind(rows::to_i64(s.supply_sats.0, "supply_sats")?)
                    .bind(ratio)
                    .bind(s.healthy)
                    .bind(s.stale)
                    .bind(supply_json)
                    .fetch_one(self.writer())
                    .await?;
                Ok(id)
            }

            async fn latest_reserve_snapshot(&self) -> StoreResult<Option<ReserveSnapshot>> {
                let row: Option<rows::ReserveSnapshotRow> = sqlx::query_as(sql::LATEST_SNAPSHOT)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(ReserveSnapshot::try_from).transpose()
            }

            async fn record_reserve_address_balances(
                &self,
                height: u32,
                block_hash: &str,
                balances: &[ReserveAddressBalance],
                now: Timestamp,
            ) -> StoreResult<()> {
                // One transaction: a reader sees all of a block's balances or none.
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                for b in balances {
                    sqlx::query(sql::UPSERT_ADDRESS_BALANCE)
                        .bind(block_hash)
                        .bind(i64::from(height))
                        .bind(b.address.as_str())
                        .bind(b.descriptor.as_deref())
                        .bind(rows::to_i64(b.balance_sats.0, "balance_sats")?)
                        .bind(rows::to_i64(b.utxos, "utxos")?)
                        .bind(now.0)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn reserve_address_balances(
                &self,
                block_hash: &str,
            ) -> StoreResult<Vec<ReserveAddressBalance>> {
                let rows: Vec<rows::AddressBalanceRow> = sqlx::query_as(sql::ADDRESS_BALANCES)
                    .bind(block_hash)
                    .fetch_all(self.reader())
                    .await?;
                rows.into_iter()
                    .map(ReserveAddressBalance::try_from)
                    .collect()
            }

            async fn reserve_history(
                &self,
                from: Timestamp,
                to: Timestamp,
                bucket: HistoryBucket,
                limit: u32,
            ) -> StoreResult<Vec<ReserveHistoryPoint>> {
                let rows: Vec<rows::ReserveHistoryRow> = sqlx::query_as(sql::RESERVE_HISTORY)
                    .bind(from.0)
                    .bind(to.0)
                    .bind(bucket.millis())
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                rows.into_iter().map(|r| r.into_point(bucket)).collect()
            }

            async fn get_cursor(&self, chain: &ChainId) -> StoreResult<Option<ChainCursor>> {
                let row: Option<rows::CursorRow> = sqlx::query_as(sql::GET_CURSOR)
                    .bind(chain.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                row.map(ChainCursor::try_from).transpose()
            }

            async fn set_cursor(&self, cursor: &ChainCursor, now: Timestamp) -> StoreResult<()> {
                sqlx::query(sql::SET_CURSOR)
                    .bind(cursor.chain.as_str())
                    .bind(rows::to_i64(cursor.block_number, "block number")?)
                    .bind(cursor.block_hash.as_str())
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn acquire_lease(
                &self,
                name: &str,
                holder: &str,
                ttl_ms: i64,
                now: Timestamp,
            ) -> StoreResult<Option<Lease>> {
                if ttl_ms <= 0 {
                    return Err(StoreError::InvalidInput(format!(
                        "lease ttl must be positive, got {ttl_ms} ms"
                    )));
                }
                let row: Option<(i64, i64)> = sqlx::query_as(sql::ACQUIRE_LEASE)
                    .bind(name)
                    .bind(holder)
                    .bind(now.0.saturating_add(ttl_ms))
                    .bind(now.0)
                    .fetch_optional(self.writer())
                    .await?;
                Ok(row.map(|(token, expires_at)| Lease {
                    token,
                    expires_at: Timestamp(expires_at),
                }))
            }

            async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool> {
                let done = sqlx::query(sql::RELEASE_LEASE)
                    .bind(name)
                    .bind(holder)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn get_lease(&self, name: &str) -> StoreResult<Option<LeaseState>> {
                let row: Option<(String, String, i64, i64)> = sqlx::query_as(sql::GET_LEASE)
                    .bind(name)
                    .fetch_optional(self.writer())
                    .await?;
                Ok(row.map(|(name, holder, token, expires_at)| LeaseState {
                    name,
                    holder,
                    token,
                    expires_at: Timestamp(expires_at),
                }))
            }

            async fn due_outbox(
                &self,
                now: Timestamp,
                limit: u32,
            ) -> StoreResult<Vec<OutboxEvent>> {
                let rows: Vec<rows::OutboxRow> = sqlx::query_as(sql::DUE_OUTBOX)
                    .bind(now.0)
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                rows::outbox(rows)
            }

            async fn list_outbox_for(
                &self,
                validation: ValidationId,
            ) -> StoreResult<Vec<OutboxEvent>> {
                let rows: Vec<rows::OutboxRow> = sqlx::query_as(sql::OUTBOX_FOR)
                    .bind(validation.0)
                    .fetch_all(self.reader())
                    .await?;
                rows::outbox(rows)
            }

            async fn record_outbox_attempt(
                &self,
                event_id: uuid::Uuid,
                outcome: &OutboxOutcome,
                now: Timestamp,
            ) -> StoreResult<bool> {
                let (delivered, next, dead, error) = match outcome {
                    OutboxOutcome::Delivered => (Some(now.0), None, None, None),
                    OutboxOutcome::Retry {
                        next_attempt_at,
                        error,
                    } => (None, Some(next_attempt_at.0), None, Some(error.as_str())),
                    OutboxOutcome::Dead { error } => {
                        (None, None, Some(now.0), Some(error.as_str()))
                    }
                };
                let done = sqlx::query(sql::OUTBOX_ATTEMPT)
                    .bind(event_id)
                    .bind(delivered)
                    .bind(next)
                    .bind(dead)
                    .bind(error)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn append_audit(
                &self,
                entry: &NewAuditEntry,
                now: Timestamp,
            ) -> StoreResult<AuditEntry> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                if let Some(lock) = Self::AUDIT_LOCK {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                let prev: Option<String> = sqlx::query_scalar(sql::LAST_AUDIT_HASH)
                    .fetch_optional(&mut *tx)
                    .await?;
                let prev_hash =
                    prev.unwrap_or_else(|| $crate::audit::AUDIT_GENESIS_HASH.to_owned());
                let hash = $crate::audit::audit_hash(&prev_hash, now, entry);
                let id: i64 = sqlx::query_scalar(sql::INSERT_AUDIT)
                    .bind(now.0)
                    .bind(entry.actor.as_str())
                    .bind(entry.action.as_str())
                    .bind(entry.target.as_deref())
                    .bind(entry.old_value.as_deref())
                    .bind(entry.new_value.as_deref())
                    .bind(entry.ip.as_deref())
                    .bind(entry.user_agent.as_deref())
                    .bind(prev_hash.as_str())
                    .bind(hash.as_str())
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(AuditEntry {
                    id,
                    at: now,
                    actor: entry.actor.clone(),
                    action: entry.action.clone(),
                    target: entry.target.clone(),
                    old_value: entry.old_value.clone(),
                    new_value: entry.new_value.clone(),
                    ip: entry.ip.clone(),
                    user_agent: entry.user_agent.clone(),
                    prev_hash,
                    hash,
                })
            }

            async fn record_attestation(
                &self,
                attestation: &ubtc_core::attestation::ReserveAttestation,
                now: Timestamp,
            ) -> StoreResult<AttestationSummary> {
                let digest = hex::encode(attestation.digest());
                let totals = attestation.totals;
                let body = serde_json::to_string(attestation)
                    .map_err(|e| StoreError::InvalidInput(format!("attestation: {e}")))?;
                sqlx::query(sql::INSERT_ATTESTATION)
                    .bind(digest.as_str())
                    .bind(i64::from(attestation.bitcoin_block.height))
                    .bind(attestation.bitcoin_block.hash.as_str())
                    .bind(rows::to_i64(totals.reserve_sats, "reserve_sats")?)
                    .bind(rows::to_i64(totals.supply_sats, "supply_sats")?)
                    .bind(
                        totals
                            .ratio_ppm
                            .map(|r| rows::to_i64(r, "ratio_ppm"))
                            .transpose()?,
                    )
                    .bind(rows::to_i64(
                        attestation.registry.version,
                        "registry version",
                    )?)
                    .bind(rows::to_i64(attestation.utxo_count(), "utxo count")?)
                    .bind(attestation.created_at.0)
                    .bind(now.0)
                    .bind(body)
                    .execute(self.writer())
                    .await?;
                let row: rows::AttestationRow = sqlx::query_as(sql::ATTESTATION_BY_DIGEST)
                    .bind(digest.as_str())
                    .fetch_one(self.writer())
                    .await?;
                AttestationSummary::try_from(row)
            }

            async fn latest_attestation(&self) -> StoreResult<Option<StoredAttestation>> {
                let row: Option<rows::AttestationBodyRow> = sqlx::query_as(sql::LATEST_ATTESTATION)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(StoredAttestation::try_from).transpose()
            }

            async fn get_attestation(&self, id: i64) -> StoreResult<Option<StoredAttestation>> {
                let row: Option<rows::AttestationBodyRow> = sqlx::query_as(sql::ATTESTATION_BY_ID)
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                row.map(StoredAttestation::try_from).transpose()
            }

            async fn list_attestations(
                &self,
                before: Option<i64>,
                limit: u32,
            ) -> StoreResult<Vec<AttestationSummary>> {
                let rows: Vec<rows::AttestationRow> = sqlx::query_as(sql::LIST_ATTESTATIONS)
                    .bind(before.unwrap_or(i64::MAX))
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                rows.into_iter().map(AttestationSummary::try_from).collect()
            }

            async fn mark_attestation_reorged(&self, id: i64, now: Timestamp) -> StoreResult<bool> {
                let done = sqlx::query(sql::MARK_ATTESTATION_REORGED)
                    .bind(id)
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_registry_versions(
                &self,
            ) -> StoreResult<Vec<ubtc_core::registry::RegistryVersion>> {
                let bodies: Vec<String> = sqlx::query_scalar(sql::LIST_REGISTRY)
                    .fetch_all(self.reader())
                    .await?;
                bodies.iter().map(|b| $crate::registry::decode(b)).collect()
            }

            async fn publish_registry_version(
                &self,
                version: &ubtc_core::registry::RegistryVersion,
                now: Timestamp,
            ) -> StoreResult<()> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let last: Option<String> = sqlx::query_scalar(sql::LAST_REGISTRY)
                    .fetch_optional(&mut *tx)
                    .await?;
                let last = last.map(|b| $crate::registry::decode(&b)).transpose()?;
                $crate::registry::check_append(last.as_ref(), version)?;
                let body = serde_json::to_string(version)
                    .map_err(|e| StoreError::InvalidInput(format!("registry version: {e}")))?;
                sqlx::query(sql::INSERT_REGISTRY)
                    .bind(rows::to_i64(version.version, "registry version")?)
                    .bind(version.fingerprint())
                    .bind(body)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(())
            }

            async fn list_audit(
                &self,
                before: Option<i64>,
                limit: u32,
            ) -> StoreResult<Vec<AuditEntry>> {
                let rows: Vec<rows::AuditRow> = match before {
                    Some(before) => {
                        sqlx::query_as(sql::LIST_AUDIT_BEFORE)
                            .bind(before)
                            .bind(i64::from(limit))
                            .fetch_all(self.reader())
                            .await?
                    }
                    None => {
                        sqlx::query_as(sql::LIST_AUDIT)
                            .bind(i64::from(limit))
                            .fetch_all(self.reader())
                            .await?
                    }
                };
                Ok(rows.into_iter().map(AuditEntry::from).collect())
            }

            async fn verify_audit_chain(&self) -> StoreResult<AuditCheck> {
                let mut expected_prev = $crate::audit::AUDIT_GENESIS_HASH.to_owned();
                let mut after = i64::MIN;
                let mut entries = 0_u64;
                loop {
                    let page: Vec<rows::AuditRow> = sqlx::query_as(sql::AUDIT_PAGE)
                        .bind(after)
                        .bind(sql::AUDIT_PAGE_ROWS)
                        .fetch_all(self.reader())
                        .await?;
                    if page.is_empty() {
                        return Ok(AuditCheck {
                            entries,
                            first_broken: None,
                        });
                    }
                    for row in page {
                        let e = AuditEntry::from(row);
                        entries += 1;
                        if e.prev_hash != expected_prev || $crate::audit::recompute(&e) != e.hash {
                            return Ok(AuditCheck {
                                entries,
                                first_broken: Some(e.id),
                            });
                        }
                        after = e.id;
                        expected_prev = e.hash;
                    }
                }
            }
        }
    };
}
pub(crate) use impl_store;
