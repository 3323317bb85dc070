//! Records the store reads and writes.

use serde::{Deserialize, Serialize};
use ubtc_core::amount::Sats;
use ubtc_core::payment::{ChainBlock, Payer};
use ubtc_core::validation::Reason;
use ubtc_core::{ChainId, PaymentRef, Timestamp, ValidationId, ValidationStatus};

/// A payment as the monitor hands it to the store.
#[derive(Clone, Debug)]
pub struct NewValidation {
    pub id: ValidationId,
    pub payment: PaymentRef,
    pub payer: Payer,
    pub amount_base_units: u128,
    /// Raw message bytes exactly as paid.
    pub message: Vec<u8>,
    pub block: ChainBlock,
    pub callback_url: Option<String>,
    /// Set when the payment is unacceptable whatever its depth (below the minimum,
    /// bad message). It is still recorded as `detected` and rejected once confirmed,
    /// so a reorg can still drop it.
    pub rejection: Option<Reason>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Recorded {
    Inserted(ValidationId),
    AlreadyKnown(ValidationId),
    /// The payment was `dropped` (reorged out) and is in the canonical chain again:
    /// the same validation went back to `detected`, with the new block.
    Revived(ValidationId),
}

impl Recorded {
    pub fn id(self) -> ValidationId {
        match self {
            Recorded::Inserted(id) | Recorded::AlreadyKnown(id) | Recorded::Revived(id) => id,
        }
    }
}

/// A validation as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationRecord {
    pub id: ValidationId,
    pub payment: PaymentRef,
    pub payer: Payer,
    #[serde(with = "ubtc_core::amount::u128_string")]
    pub amount_base_units: u128,
    /// Raw message bytes, hex.
    pub message_hex: String,
    pub block: ChainBlock,
    pub confirmations: u64,
    pub status: ValidationStatus,
    /// Why it was rejected, dropped, failed, delayed or last retried.
    pub reason: Option<Reason>,
    /// Pending rejection decided at detection (applied at confirmation).
    pub pending_rejection: Option<Reason>,
    pub callback_url: Option<String>,
    pub attempts: u32,
    /// Not before this time will a worker claim it (delays and back-off).
    pub not_before: Option<Timestamp>,
    pub lease_owner: Option<String>,
    pub lease_expires: Option<Timestamp>,
    /// The statement's inputs (JSON of `ubtc_core::Statement`), fixed before the first
    /// signature is asked for and reused by every retry.
    pub statement_json: Option<String>,
    pub statement_text: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub confirmed_at: Option<Timestamp>,
    pub signed_at: Option<Timestamp>,
}

/// A row claimed by one worker until `lease_expires`. Only the holder can complete,
/// retry or fail it; the store checks `(id, lease_owner, attempts)` on every write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Claimed {
    pub record: ValidationRecord,
    pub worker: String,
    pub attempt: u32,
    pub lease_expires: Timestamp,
}

/// Everything written when a validation is signed.
#[derive(Clone, Debug)]
pub struct SignedResult {
    pub statement_text: String,
    pub bundle_json: String,
    pub outbox: Vec<NewOutboxEvent>,
    /// Time from detection to signature, for the processing-time metrics.
    pub processing_ms: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOutboxEvent {
    /// Stable event id (also the webhook idempotency key).
    pub event_id: uuid::Uuid,
    /// `validation.signed`, `validation.failed`, …
    pub event_type: String,
    pub payload_json: String,
    /// Per-payment callback URL, when the event goes to one.
    pub target_url: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEvent {
    pub event_id: uuid::Uuid,
    pub validation_id: Option<ValidationId>,
    pub event_type: String,
    pub payload_json: String,
    pub target_url: Option<String>,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
    pub dead_at: Option<Timestamp>,
    /// Error of the last failed delivery attempt.
    pub last_error: Option<String>,
    pub created_at: Timestamp,
}

/// Outcome of one delivery attempt of an outbox row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutboxOutcome {
    Delivered,
    /// Try again at `next_attempt_at` (the caller's back-off).
    Retry {
        next_attempt_at: Timestamp,
        error: String,
    },
    /// Last attempt failed: dead letter. The row is kept, never deleted.
    Dead {
        error: String,
    },
}

#[derive(Clone, Debug, Default)]
pub struct ValidationFilter {
    pub status: Option<ValidationStatus>,
    pub chain: Option<ChainId>,
    /// Keyset pagination: only ids older than this one.
    pub before: Option<ValidationId>,
    pub limit: u32,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    /// `(chain, status, count)` over all validations.
    pub counts: Vec<StatusCount>,
    /// Detection-to-signature times of validations signed since the `since` time.
    pub processing_ms_p50: Option<i64>,
    pub processing_ms_p90: Option<i64>,
    pub processing_ms_p99: Option<i64>,
    pub signed_since: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusCount {
    pub chain: ChainId,
    pub status: ValidationStatus,
    pub count: u64,
}

#[derive(Clone, Debug)]
pub struct NewReserveAddress {
    pub address: String,
    pub descriptor: String,
    /// `p2wpkh`, `p2wsh-sortedmulti`, …
    pub kind: String,
    pub label: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveAddress {
    pub id: i64,
    pub address: String,
    pub descriptor: String,
    pub kind: String,
    pub label: Option<String>,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

/// The wrapped token on one chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainToken {
    pub chain: ChainId,
    /// Token contract (EVM) or mint (Solana) address.
    pub token_address: String,
    pub decimals: u8,
    pub symbol: String,
}

/// One reserve snapshot: BTC held at a Bitcoin height against token supply per chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveSnapshot {
    pub taken_at: Timestamp,
    pub bitcoin_height: u32,
    pub bitcoin_block_hash: String,
    pub reserve_sats: Sats,
    pub supply_sats: Sats,
    pub ratio_ppm: Option<u64>,
    pub healthy: bool,
    pub stale: bool,
    /// Per-chain supply entries, as in the proof bundle.
    pub supply: Vec<ubtc_core::bundle::SupplyEntry>,
}

/// One reserve address's balance at a Bitcoin block (recorded with each snapshot).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveAddressBalance {
    pub address: String,
    /// The address's output descriptor, when it has one.
    pub descriptor: Option<String>,
    pub balance_sats: Sats,
    /// How many unspent outputs make up the balance.
    pub utxos: u64,
}

/// Width of one point of downsampled reserve history.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HistoryBucket {
    Minute,
    Hour,
    Day,
}

impl HistoryBucket {
    pub fn millis(self) -> i64 {
        match self {
            HistoryBucket::Minute => 60_000,
            HistoryBucket::Hour => 3_600_000,
            HistoryBucket::Day => 86_400_000,
        }
    }
}

/// One bucket of reserve history: the last snapshot taken in it, with the lowest and
/// highest ratio seen in it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReserveHistoryPoint {
    /// Start of the bucket (aligned to the Unix epoch).
    pub bucket_start: Timestamp,
    pub samples: u64,
    pub min_ratio_ppm: Option<u64>,
    pub max_ratio_ppm: Option<u64>,
    pub last: ReserveSnapshot,
}

/// How far a chain monitor has read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainCursor {
    pub chain: ChainId,
    pub block_number: u64,
    pub block_hash: String,
}

/// A named lease this caller now holds ([`crate::Store::acquire_lease`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Fencing token: grows by one on every acquisition that is not a renewal by the
    /// current, unexpired holder, so a later holder always has a larger token.
    pub token: i64,
    /// Held until this time (inclusive); free strictly after it.
    pub expires_at: Timestamp,
}

/// The stored state of a named lease, whoever holds it ([`crate::Store::get_lease`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseState {
    pub name: String,
    /// The last holder; the lease is free when `expires_at` has passed.
    pub holder: String,
    pub token: i64,
    pub expires_at: Timestamp,
}

/// One admin action, as the API hands it to the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewAuditEntry {
    pub actor: String,
    /// `reserve.add`, `validation.requeue`, …
    pub action: String,
    pub target: Option<String>,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

/// A stored audit record, hash-chained to its predecessor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

/// Result of re-checking the whole audit chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCheck {
    pub entries: u64,
    /// Id of the first record whose hash or link does not match, if any.
    pub first_broken: Option<i64>,
}

/// A stored reserve attestation's figures, without its document (which can be several
/// megabytes): what lists and pages show.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttestationSummary {
    /// Storage order: a later attestation has a larger id.
    pub id: i64,
    /// The attestation digest, 64 lowercase hex characters.
    pub digest: String,
    pub bitcoin_height: u32,
    pub bitcoin_hash: String,
    pub reserve_sats: u64,
    pub supply_sats: u64,
    pub ratio_ppm: Option<u64>,
    pub registry_version: u64,
    pub utxo_count: u64,
    /// The document's own `created_at`.
    pub created_at: Timestamp,
    pub stored_at: Timestamp,
    /// Set when the attested Bitcoin block was reorganised away.
    pub reorged_at: Option<Timestamp>,
}

/// A stored reserve attestation: its figures and the signed document exactly as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredAttestation {
    pub summary: AttestationSummary,
    /// The document's JSON.
    pub body: String,
}
