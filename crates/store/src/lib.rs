//! Storage for Universal Bitcoin.
//!
//! The [`Store`] trait speaks domain operations (`record_detected`, `claim_next`,
//! `complete_signed`, …), never SQL. Two backends implement it on sqlx with one SQL
//! text per operation where the dialects agree: SQLite (the embedded default) and
//! PostgreSQL (production). Migrations live per dialect under `migrations/`. One
//! conformance suite (`tests/conformance.rs`) runs against both.
//!
//! Every method that changes more than one row does so in one transaction and says so.
//! Every status change goes through [`ubtc_core::ValidationStatus::transition`]; a
//! forbidden move is an error and changes nothing.
//!
//! This crate holds no business rules (fees, limits, who may sign): callers decide,
//! the store records atomically.

pub mod admin;
pub mod audit;
pub mod baseline;
mod error;
mod postgres;
pub mod registry;
pub mod reserve_ops;
mod rows;
mod sql;
mod sqlite;
pub mod types;
pub mod webhooks;

pub use admin::{
    AdminStore, AdminUser, ApiKey, DisableOutcome, LockoutPolicy, LoginAttempt, LoginFailures,
    NewAdminUser, NewApiKey, RefreshOutcome,
};
pub use postgres::PgStore;
pub use reserve_ops::ReserveOpsStore;
pub use sqlite::SqliteStore;
pub use types::*;
pub use webhooks::{
    DeadLetterCounts, DeliveryFilter, NewWebhookConsumer, WebhookConsumer, WebhookDelivery,
    WebhookStore, WEBHOOK_EVENT_TYPES,
};

use async_trait::async_trait;
use ubtc_core::validation::Reason;
use ubtc_core::{ChainId, PaymentRef, Timestamp, ValidationId, ValidationStatus};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or the connection broke. Callers back off
    /// and retry; nothing was changed.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    #[error("validation {0} not found")]
    NotFound(ValidationId),
    #[error(transparent)]
    Transition(#[from] ubtc_core::validation::TransitionError),
    /// The row changed under us (another worker, an expired lease). Nothing was written.
    #[error("validation {id} is no longer held by this claim")]
    LostClaim { id: ValidationId },
    /// A stored value did not parse back into its domain type (corruption or a newer
    /// schema).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    #[error("unsupported database URL {0:?} (expected sqlite:… or postgres://…)")]
    UnsupportedUrl(String),
    /// An argument cannot be stored (a number beyond the column's range, a schema
    /// name with unsafe characters). Nothing was written.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl StoreError {
    /// True when retrying later may succeed (connection trouble, not a logic error).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// The storage contract of the whole system.
///
/// Implementations must be safe to share between many tasks and many processes on
/// the same database: uniqueness and claims are enforced by the database, not by
/// in-process locks.
#[async_trait]
pub trait Store:
    WebhookStore + admin::AdminStore + reserve_ops::ReserveOpsStore + Send + Sync + 'static
{
    /// Applies pending migrations of this dialect. Idempotent.
    async fn migrate(&self) -> StoreResult<()>;

    /// Cheap round trip to the database (`/readyz`).
    async fn ping(&self) -> StoreResult<()>;

    // ----- intake (chain monitors) -----

    /// Records a payment seen on chain as `detected`. When `new.rejection` is set it is
    /// kept as the pending rejection (`ValidationRecord::pending_rejection`) and the
    /// caller applies it with [`Store::confirm_and_reject`] once the payment is
    /// confirmed, so that a reorg can still drop it. Unique on `(chain, tx_hash,
    /// index)`: a second call for the same payment changes nothing and returns
    /// `Recorded::AlreadyKnown` with the existing id, except that a `dropped` payment
    /// recorded again with the same payer, amount and message (mined again after the
    /// reorg) goes back to `detected` in the new block, reason `remined`, and returns
    /// `Recorded::Revived`. One statement (`INSERT … ON CONFLICT DO NOTHING`), plus a
    /// lookup when the payment was already known, and an update when it was dropped.
    async fn record_detected(&self, new: &NewValidation, now: Timestamp) -> StoreResult<Recorded>;

    /// For a payment already confirmed when first seen (a monitor catching up, a chain
    /// with instant finality): records it directly in its post-confirmation state in
    /// ONE statement, as [`Store::record_detected`] followed by
    /// [`Store::confirm_and_enqueue`] (or [`Store::confirm_and_reject`] when
    /// `new.rejection` is set) would, with the same transition checks. Saves a commit
    /// per validation. A payment already known changes nothing and returns
    /// `AlreadyKnown` (the caller may then confirm the existing row if it is still
    /// `detected`).
    async fn record_confirmed(
        &self,
        new: &NewValidation,
        confirmations: u64,
        delay_until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<Recorded>;

    /// Validations of `chain` still `detected`, oldest first, for the monitor to
    /// re-check depth and reorgs.
    async fn list_detected(
        &self,
        chain: &ChainId,
        limit: u32,
    ) -> StoreResult<Vec<ValidationRecord>>;

    /// `detected` → `confirmed` → `queued` (or `delayed` until `delay_until`) in one
    /// statement, after the caller's rate limiter decided. `confirmations` is stored
    /// for display. A queued validation gets `not_before = now`, so the queue is served
    /// in order of due time. Returns the new status (`queued` or `delayed`).
    /// The store does not look at `pending_rejection`: the caller must call
    /// [`Store::confirm_and_reject`] instead when one is set.
    async fn confirm_and_enqueue(
        &self,
        id: ValidationId,
        confirmations: u64,
        delay_until: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<ValidationStatus>;

    /// `detected` → `confirmed` → `rejected` with the reason (below the fee, bad
    /// message), in one transaction. Never signed.
    async fn confirm_and_reject(
        &self,
        id: ValidationId,
        confirmations: u64,
        reason: &Reason,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// `detected` → `dropped` (disappeared in a reorg before confirmation).
    async fn drop_reorged(
        &self,
        id: ValidationId,
        reason: &Reason,
        now: Timestamp,
    ) -> StoreResult<()>;

    // ----- queue (workers) -----

    /// Atomically claims the next job: a `queued` or `delayed` validation whose
    /// not-before time has passed, or a `signing` one whose lease expired (its worker
    /// died). Oldest not-before first. Sets `signing`, the lease holder and expiry, and
    /// increments `attempts`. Two concurrent callers never get the same row
    /// (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite: a single writer).
    async fn claim_next(
        &self,
        worker: &str,
        lease_ms: i64,
        now: Timestamp,
    ) -> StoreResult<Option<Claimed>> {
        Ok(self.claim_batch(worker, 1, lease_ms, now).await?.pop())
    }

    /// Like [`Store::claim_next`] for up to `max` jobs in one round trip.
    async fn claim_batch(
        &self,
        worker: &str,
        max: u32,
        lease_ms: i64,
        now: Timestamp,
    ) -> StoreResult<Vec<Claimed>>;

    /// Extends the lease of a claim still held. `LostClaim` if it was taken over.
    async fn renew_lease(&self, claim: &Claimed, lease_ms: i64, now: Timestamp) -> StoreResult<()>;

    /// Writes the signed result in ONE transaction: status `signed`, the statement and
    /// the proof bundle, one outbox row per event in `outbox`, and a metrics row.
    /// Fails with `LostClaim` (writing nothing) if the claim is no longer held, so a
    /// validation is never signed twice with different statements.
    async fn complete_signed(
        &self,
        claim: &Claimed,
        result: &SignedResult,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// [`Store::record_detected`] for several payments (one scan's worth) in ONE
    /// transaction: one commit instead of one per payment.
    async fn record_detected_batch(
        &self,
        new: &[NewValidation],
        now: Timestamp,
    ) -> StoreResult<Vec<Recorded>>;

    /// [`Store::confirm_and_enqueue`] for several validations in ONE transaction. Per
    /// item the new status, or the error that single call would have returned (that
    /// item changes nothing; the others are still written).
    async fn confirm_and_enqueue_batch(
        &self,
        items: &[(ValidationId, u64, Option<Timestamp>)],
        now: Timestamp,
    ) -> StoreResult<Vec<StoreResult<ValidationStatus>>>;

    /// [`Store::prepare_statement`] for several claims in ONE transaction. Per item:
    /// `true` when fixed, `false` when the claim was lost or a statement was already
    /// stored (nothing written for that item).
    async fn prepare_statements(
        &self,
        items: &[(&Claimed, &str)],
        now: Timestamp,
    ) -> StoreResult<Vec<bool>>;

    /// [`Store::complete_signed`] for several claims in ONE transaction (one commit).
    /// Per item: `true` when written (status, bundle, outbox rows, metrics row),
    /// `false` when the claim was lost (nothing written for that item).
    async fn complete_signed_batch(
        &self,
        items: &[(&Claimed, &SignedResult)],
        now: Timestamp,
    ) -> StoreResult<Vec<bool>>;

    /// Fixes the statement of a claimed validation before anything is signed, so every
    /// later attempt signs the same statement. Only when none is stored yet; otherwise
    /// (or when the claim is no longer held) `LostClaim`, writing nothing.
    async fn prepare_statement(
        &self,
        claim: &Claimed,
        statement_json: &str,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Gives a claimed job back: `signing` → `queued` with `not_before`, keeping the
    /// reason of this attempt. Used for retries with back-off.
    async fn retry_later(
        &self,
        claim: &Claimed,
        reason: &Reason,
        not_before: Timestamp,
        now: Timestamp,
    ) -> StoreResult<()>;

    /// `signing` → `failed` (dead letter) with the reason; writes the outbox rows given.
    async fn fail(
        &self,
        claim: &Claimed,
        reason: &Reason,
        outbox: &[NewOutboxEvent],
        now: Timestamp,
    ) -> StoreResult<()>;

    /// Operator action: `failed` → `queued` now, attempts reset.
    async fn requeue_failed(&self, id: ValidationId, now: Timestamp) -> StoreResult<()>;

    /// Records that the requester has been told: `signed` → `delivered`.
    async fn mark_delivered(&self, id: ValidationId, now: Timestamp) -> StoreResult<()>;

    // ----- reads (API) -----

    async fn get_validation(&self, id: ValidationId) -> StoreResult<Option<ValidationRecord>>;
    async fn find_by_payment(
        &self,
        chain: Option<&ChainId>,
        tx_hash: &str,
    ) -> StoreResult<Vec<ValidationRecord>>;
    async fn get_by_payment_ref(
        &self,
        payment: &PaymentRef,
    ) -> StoreResult<Option<ValidationRecord>>;
    /// Newest first (by id, which is a UUIDv7), keyset-paginated by `before`.
    async fn list_validations(
        &self,
        filter: &ValidationFilter,
    ) -> StoreResult<Vec<ValidationRecord>>;
    /// The stored proof bundle JSON of a signed validation.
    async fn get_bundle(&self, id: ValidationId) -> StoreResult<Option<String>>;
    async fn stats(&self, since: Timestamp) -> StoreResult<Stats>;

    // ----- reserves -----

    /// Adds a reserve address, or returns the existing one for the same address.
    async fn add_reserve_address(
        &self,
        new: &NewReserveAddress,
        now: Timestamp,
    ) -> StoreResult<ReserveAddress>;
    /// Active (not retired) reserve addresses, oldest first.
    async fn list_reserve_addresses(&self) -> StoreResult<Vec<ReserveAddress>>;
    /// Every registered reserve address, retired ones too, oldest first: the admin
    /// interface shows the whole registry, not only what the reserves count today.
    async fn list_all_reserve_addresses(&self) -> StoreResult<Vec<ReserveAddress>>;
    async fn retire_reserve_address(&self, address: &str, now: Timestamp) -> StoreResult<bool>;

    async fn upsert_chain_token(&self, token: &ChainToken) -> StoreResult<()>;
    async fn list_chain_tokens(&self) -> StoreResult<Vec<ChainToken>>;

    async fn record_reserve_snapshot(&self, snapshot: &ReserveSnapshot) -> StoreResult<i64>;
    async fn latest_reserve_snapshot(&self) -> StoreResult<Option<ReserveSnapshot>>;
    /// Records each reserve address's balance at the Bitcoin block `block_hash`
    /// (replacing what an earlier snapshot at the same block wrote), in one
    /// transaction. The snapshotter writes them before the snapshot itself.
    async fn record_reserve_address_balances(
        &self,
        height: u32,
        block_hash: &str,
        balances: &[ReserveAddressBalance],
        now: Timestamp,
    ) -> StoreResult<()>;
    /// The reserve address balances recorded at `block_hash`, by address.
    async fn reserve_address_balances(
        &self,
        block_hash: &str,
    ) -> StoreResult<Vec<ReserveAddressBalance>>;
    /// Snapshots taken in `[from, to)`, one point per `bucket` (oldest first, at most
    /// `limit`): the bucket's last snapshot (by insertion order, which is time order
    /// for this append-only series) and its lowest and highest ratio. One query.
    async fn reserve_history(
        &self,
        from: Timestamp,
        to: Timestamp,
        bucket: HistoryBucket,
        limit: u32,
    ) -> StoreResult<Vec<ReserveHistoryPoint>>;

    // ----- chain cursors (monitors) -----

    async fn get_cursor(&self, chain: &ChainId) -> StoreResult<Option<ChainCursor>>;
    async fn set_cursor(&self, cursor: &ChainCursor, now: Timestamp) -> StoreResult<()>;

    // ----- named leases (one leader per chain monitor) -----

    /// Takes or renews the lease `name` for `holder` until `now + ttl_ms`, if it is
    /// free (never held, or expired strictly before `now`) or already `holder`'s. ONE
    /// statement (`INSERT … ON CONFLICT (name) DO UPDATE … WHERE expired OR ours
    /// RETURNING …`), so two concurrent callers never both get it. `None` when another
    /// holder's lease is still running. The fencing token grows by one unless this is
    /// a renewal of an unexpired lease by its holder.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
        now: Timestamp,
    ) -> StoreResult<Option<Lease>>;

    /// Gives the lease up at once if `holder` has it (so another may take it without
    /// waiting for expiry). Returns false when it was not held by `holder`.
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<bool>;

    /// The stored state of the lease `name` (for operators and tests), if it was ever
    /// taken.
    async fn get_lease(&self, name: &str) -> StoreResult<Option<LeaseState>>;

    // ----- outbox -----

    /// Outbox rows not yet delivered whose next attempt is due, oldest first.
    async fn due_outbox(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<OutboxEvent>>;
    async fn list_outbox_for(&self, validation: ValidationId) -> StoreResult<Vec<OutboxEvent>>;
    /// Records the outcome of one delivery attempt of an outbox row: increments
    /// `attempts`, then marks it delivered, reschedules it, or marks it dead (dead
    /// letter; the row is kept). Returns false when no pending row has that event id
    /// (already delivered or dead, or unknown). One statement.
    async fn record_outbox_attempt(
        &self,
        event_id: uuid::Uuid,
        outcome: &OutboxOutcome,
        now: Timestamp,
    ) -> StoreResult<bool>;

    // ----- reserve attestations -----

    /// Stores a signed attestation and returns its figures. Storing the same document
    /// (same digest) again stores nothing and returns the first row. Rows never change
    /// afterwards except for [`Store::mark_attestation_reorged`]: both schemas refuse
    /// any other UPDATE and any DELETE with a trigger. The caller verifies the document
    /// before storing it; the store keeps what it is given.
    async fn record_attestation(
        &self,
        attestation: &ubtc_core::attestation::ReserveAttestation,
        now: Timestamp,
    ) -> StoreResult<AttestationSummary>;
    /// The newest attestation whose Bitcoin block has not been reorganised away.
    async fn latest_attestation(&self) -> StoreResult<Option<StoredAttestation>>;
    async fn get_attestation(&self, id: i64) -> StoreResult<Option<StoredAttestation>>;
    /// Newest first, reorged ones included, keyset-paginated by `before` (an id).
    async fn list_attestations(
        &self,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<AttestationSummary>>;
    /// Marks an attestation whose Bitcoin block left the best chain. False when it is
    /// unknown or already marked.
    async fn mark_attestation_reorged(&self, id: i64, now: Timestamp) -> StoreResult<bool>;

    // ----- reserve registry -----

    /// Every stored reserve registry version, oldest first.
    async fn list_registry_versions(
        &self,
    ) -> StoreResult<Vec<ubtc_core::registry::RegistryVersion>>;
    /// Stores the next registry version. Atomic: it is refused (with
    /// [`StoreError::InvalidInput`] naming a stable `registry_…` code, and nothing
    /// stored) unless it verifies against the stored latest version (or, for the first
    /// one, is a version 1 signed by its own guardians). Stored versions never change.
    async fn publish_registry_version(
        &self,
        version: &ubtc_core::registry::RegistryVersion,
        now: Timestamp,
    ) -> StoreResult<()>;

    // ----- audit trail (admin API) -----

    /// Appends a record chained to the latest one ([`audit::audit_hash`]). One
    /// transaction that holds the append lock (PostgreSQL: a transaction-level
    /// advisory lock; SQLite: `BEGIN IMMEDIATE`), so concurrent appends form one chain;
    /// a unique index on `prev_hash` refuses a fork even without the lock. The table
    /// refuses UPDATE and DELETE (triggers on both backends).
    async fn append_audit(&self, entry: &NewAuditEntry, now: Timestamp) -> StoreResult<AuditEntry>;
    /// Newest first, keyset-paginated by `before` (a record id).
    async fn list_audit(&self, before: Option<i64>, limit: u32) -> StoreResult<Vec<AuditEntry>>;
    /// Re-reads the whole chain in id order and recomputes every hash and link.
    async fn verify_audit_chain(&self) -> StoreResult<AuditCheck>;
}

/// Opens the backend named by a URL: `sqlite:PATH` / `sqlite::memory:` or
/// `postgres://…` / `postgresql://…`. Runs no migrations.
///
/// `max_connections` bounds the PostgreSQL pool, or the SQLite reader pool (SQLite
/// writes go through one connection, see [`SqliteStore`]).
pub async fn connect(url: &str, max_connections: u32) -> StoreResult<std::sync::Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(
            SqliteStore::connect(url, max_connections).await?,
        ))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(
            PgStore::connect(url, max_connections).await?,
        ))
    } else {
        Err(StoreError::UnsupportedUrl(redact_url(url)))
    }
}

/// The URL without its password, for error messages.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let creds = &url[scheme_end + 3..at];
            match creds.find(':') {
                Some(colon) => format!(
                    "{}://{}:***{}",
                    &url[..scheme_end],
                    &creds[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
