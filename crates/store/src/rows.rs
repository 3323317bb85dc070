//! Rows as the database returns them, and their parsing into domain records.
//!
//! The `FromRow` derives are generic over the row type, so one struct decodes rows of
//! both backends. Parsing happens here, once: a stored value that does not parse back
//! is `StoreError::Corrupt`, never a panic.

use ubtc_core::amount::Sats;
use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::validation::Reason;
use ubtc_core::{ChainId, PaymentRef, Timestamp, ValidationId, ValidationStatus};
use uuid::Uuid;

use crate::types::*;
use crate::{StoreError, StoreResult};

/// Columns of `validations` every read returns (everything but the bundle, which can be
/// large and is read alone by `get_bundle`). Used by `concat!` in the SQL texts.
macro_rules! validation_columns {
    () => {
        "id, chain, tx_hash, tx_index, payer, amount_base_units, message, block_number, \
         block_hash, confirmations, status, reason_code, reason_detail, pending_reject_code, \
         pending_reject_detail, callback_url, attempts, not_before, lease_owner, lease_expires, \
         statement_json, statement_text, created_at, updated_at, confirmed_at, signed_at"
    };
}
pub(crate) use validation_columns;

macro_rules! outbox_columns {
    () => {
        "event_id, validation_id, event_type, payload, target_url, attempts, next_attempt_at, \
         delivered_at, dead_at, last_error, created_at"
    };
}
pub(crate) use outbox_columns;

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{what}: {e}"))
}

/// Numbers are BIGINT in both dialects; Rust's unsigned types are converted at the edge.
pub(crate) fn to_i64<T: TryInto<i64>>(v: T, what: &str) -> StoreResult<i64> {
    v.try_into().map_err(|_| {
        StoreError::InvalidInput(format!("{what} does not fit in a signed 64-bit column"))
    })
}

fn from_i64<T: TryFrom<i64>>(v: i64, what: &str) -> StoreResult<T> {
    T::try_from(v).map_err(|_| corrupt(what, format!("{v} out of range")))
}

fn reason(code: Option<String>, detail: Option<String>) -> Option<Reason> {
    code.map(|code| Reason {
        code,
        detail: detail.unwrap_or_default(),
    })
}

pub(crate) fn parse_status(s: &str) -> StoreResult<ValidationStatus> {
    s.parse().map_err(|e| corrupt("status", e))
}

#[derive(sqlx::FromRow)]
pub(crate) struct ValidationRow {
    id: Uuid,
    chain: String,
    tx_hash: String,
    tx_index: i64,
    payer: String,
    amount_base_units: String,
    message: Vec<u8>,
    block_number: i64,
    block_hash: String,
    confirmations: i64,
    status: String,
    reason_code: Option<String>,
    reason_detail: Option<String>,
    pending_reject_code: Option<String>,
    pending_reject_detail: Option<String>,
    callback_url: Option<String>,
    attempts: i64,
    not_before: Option<i64>,
    lease_owner: Option<String>,
    lease_expires: Option<i64>,
    statement_json: Option<String>,
    statement_text: Option<String>,
    created_at: i64,
    updated_at: i64,
    confirmed_at: Option<i64>,
    signed_at: Option<i64>,
}

impl TryFrom<ValidationRow> for ValidationRecord {
    type Error = StoreError;

    fn try_from(r: ValidationRow) -> StoreResult<Self> {
        let amount_base_units = r
            .amount_base_units
            .parse::<u128>()
            .map_err(|e| corrupt("amount_base_units", e))?;
        Ok(ValidationRecord {
            id: ValidationId(r.id),
            payment: PaymentRef {
                chain: ChainId::parse(&r.chain).map_err(|e| corrupt("chain", e))?,
                tx_hash: TxHash::parse(&r.tx_hash).map_err(|e| corrupt("tx_hash", e))?,
                index: from_i64(r.tx_index, "tx_index")?,
            },
            payer: Payer::parse(&r.payer).map_err(|e| corrupt("payer", e))?,
            amount_base_units,
            message_hex: hex::encode(&r.message),
            block: ChainBlock {
                number: from_i64(r.block_number, "block_number")?,
                hash: r.block_hash,
            },
            confirmations: from_i64(r.confirmations, "confirmations")?,
            status: parse_status(&r.status)?,
            reason: reason(r.reason_code, r.reason_detail),
            pending_rejection: reason(r.pending_reject_code, r.pending_reject_detail),
            callback_url: r.callback_url,
            attempts: from_i64(r.attempts, "attempts")?,
            not_before: r.not_before.map(Timestamp),
            lease_owner: r.lease_owner,
            lease_expires: r.lease_expires.map(Timestamp),
            statement_json: r.statement_json,
            statement_text: r.statement_text,
            created_at: Timestamp(r.created_at),
            updated_at: Timestamp(r.updated_at),
            confirmed_at: r.confirmed_at.map(Timestamp),
            signed_at: r.signed_at.map(Timestamp),
        })
    }
}

pub(crate) fn validations(rows: Vec<ValidationRow>) -> StoreResult<Vec<ValidationRecord>> {
    rows.into_iter().map(ValidationRecord::try_from).collect()
}

/// A freshly claimed row becomes a [`Claimed`]: the holder is the row's lease owner
/// and the attempt its (already incremented) attempts counter.
pub(crate) fn claimed(row: ValidationRow) -> StoreResult<Claimed> {
    let record = ValidationRecord::try_from(row)?;
    let (Some(worker), Some(lease_expires)) = (record.lease_owner.clone(), record.lease_expires)
    else {
        return Err(StoreError::Corrupt(format!(
            "claimed validation {} has no lease",
            record.id
        )));
    };
    Ok(Claimed {
        attempt: record.attempts,
        worker,
        lease_expires,
        record,
    })
}

#[derive(sqlx::FromRow)]
pub(crate) struct OutboxRow {
    event_id: Uuid,
    validation_id: Option<Uuid>,
    event_type: String,
    payload: String,
    target_url: Option<String>,
    attempts: i64,
    next_attempt_at: i64,
    delivered_at: Option<i64>,
    dead_at: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
}

pub(crate) fn outbox(rows: Vec<OutboxRow>) -> StoreResult<Vec<OutboxEvent>> {
    rows.into_iter()
        .map(|r| {
            Ok(OutboxEvent {
                event_id: r.event_id,
                validation_id: r.validation_id.map(ValidationId),
                event_type: r.event_type,
                payload_json: r.payload,
                target_url: r.target_url,
                attempts: from_i64(r.attempts, "outbox attempts")?,
                next_attempt_at: Timestamp(r.next_attempt_at),
                delivered_at: r.delivered_at.map(Timestamp),
                dead_at: r.dead_at.map(Timestamp),
                last_error: r.last_error,
                created_at: Timestamp(r.created_at),
            })
        })
        .collect()
}

#[derive(sqlx::FromRow)]
pub(crate) struct ReserveAddressRow {
    id: i64,
    address: String,
    descriptor: String,
    kind: String,
    label: Option<String>,
    created_at: i64,
    retired_at: Option<i64>,
}

impl From<ReserveAddressRow> for ReserveAddress {
    fn from(r: ReserveAddressRow) -> Self {
        ReserveAddress {
            id: r.id,
            address: r.address,
            descriptor: r.descriptor,
            kind: r.kind,
            label: r.label,
            created_at: Timestamp(r.created_at),
            retired_at: r.retired_at.map(Timestamp),
        }
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ChainTokenRow {
    chain: String,
    token_address: String,
    decimals: i64,
    symbol: String,
}

impl TryFrom<ChainTokenRow> for ChainToken {
    type Error = StoreError;
    fn try_from(r: ChainTokenRow) -> StoreResult<Self> {
        Ok(ChainToken {
            chain: ChainId::parse(&r.chain).map_err(|e| corrupt("chain", e))?,
            token_address: r.token_address,
            decimals: from_i64(r.decimals, "decimals")?,
            symbol: r.symbol,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ReserveSnapshotRow {
    taken_at: i64,
    bitcoin_height: i64,
    bitcoin_block_hash: String,
    reserve_sats: i64,
    supply_sats: i64,
    ratio_ppm: Option<i64>,
    healthy: bool,
    stale: bool,
    supply_json: String,
}

#[derive(sqlx::FromRow)]
pub(crate) struct AddressBalanceRow {
    address: String,
    descriptor: Option<String>,
    balance_sats: i64,
    utxos: i64,
}

impl TryFrom<AddressBalanceRow> for ReserveAddressBalance {
    type Error = StoreError;
    fn try_from(r: AddressBalanceRow) -> StoreResult<Self> {
        Ok(ReserveAddressBalance {
            address: r.address,
            descriptor: r.descriptor,
            balance_sats: Sats(from_i64(r.balance_sats, "balance_sats")?),
            utxos: from_i64(r.utxos, "utxos")?,
        })
    }
}

impl TryFrom<ReserveSnapshotRow> for ReserveSnapshot {
    type Error = StoreError;
    fn try_from(r: ReserveSnapshotRow) -> StoreResult<Self> {
        Ok(ReserveSnapshot {
            taken_at: Timestamp(r.taken_at),
            bitcoin_height: from_i64(r.bitcoin_height, "bitcoin_height")?,
            bitcoin_block_hash: r.bitcoin_block_hash,
            reserve_sats: Sats(from_i64(r.reserve_sats, "reserve_sats")?),
            supply_sats: Sats(from_i64(r.supply_sats, "supply_sats")?),
            ratio_ppm: r.ratio_ppm.map(|v| from_i64(v, "ratio_ppm")).transpose()?,
            healthy: r.healthy,
            stale: r.stale,
            supply: serde_json::from_str(&r.supply_json).map_err(|e| corrupt("supply_json", e))?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ReserveHistoryRow {
    #[sqlx(flatten)]
    last: ReserveSnapshotRow,
    bucket: i64,
    samples: i64,
    min_ratio_ppm: Option<i64>,
    max_ratio_ppm: Option<i64>,
}

impl ReserveHistoryRow {
    pub(crate) fn into_point(self, bucket: HistoryBucket) -> StoreResult<ReserveHistoryPoint> {
        Ok(ReserveHistoryPoint {
            bucket_start: Timestamp(self.bucket.saturating_mul(bucket.millis())),
            samples: from_i64(self.samples, "samples")?,
            min_ratio_ppm: self
                .min_ratio_ppm
                .map(|v| from_i64(v, "ratio_ppm"))
                .transpose()?,
            max_ratio_ppm: self
                .max_ratio_ppm
                .map(|v| from_i64(v, "ratio_ppm"))
                .transpose()?,
            last: ReserveSnapshot::try_from(self.last)?,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct CursorRow {
    chain: String,
    block_number: i64,
    block_hash: String,
}

impl TryFrom<CursorRow> for ChainCursor {
    type Error = StoreError;
    fn try_from(r: CursorRow) -> StoreResult<Self> {
        Ok(ChainCursor {
            chain: ChainId::parse(&r.chain).map_err(|e| corrupt("chain", e))?,
            block_number: from_i64(r.block_number, "block_number")?,
            block_hash: r.block_hash,
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct StatusCountRow {
    chain: String,
    status: String,
    n: i64,
}

impl TryFrom<StatusCountRow> for StatusCount {
    type Error = StoreError;
    fn try_from(r: StatusCountRow) -> StoreResult<Self> {
        Ok(StatusCount {
            chain: ChainId::parse(&r.chain).map_err(|e| corrupt("chain", e))?,
            status: parse_status(&r.status)?,
            count: from_i64(r.n, "count")?,
        })
    }
}

macro_rules! audit_columns {
    () => {
        "id, at, actor, action, target, old_value, new_value, ip, user_agent, prev_hash, hash"
    };
}
pub(crate) use audit_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    target: Option<String>,
    old_value: Option<String>,
    new_value: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    prev_hash: String,
    hash: String,
}

impl From<AuditRow> for AuditEntry {
    fn from(r: AuditRow) -> Self {
        AuditEntry {
            id: r.id,
            at: Timestamp(r.at),
            actor: r.actor,
            action: r.action,
            target: r.target,
            old_value: r.old_value,
            new_value: r.new_value,
            ip: r.ip,
            user_agent: r.user_agent,
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
    }
}

/// Columns of `attestations` without the document. Used by `concat!` in the SQL texts.
macro_rules! attestation_columns {
    () => {
        "id, digest, bitcoin_height, bitcoin_hash, reserve_sats, supply_sats, ratio_ppm, \
         registry_version, utxo_count, created_at, stored_at, reorged_at"
    };
}
pub(crate) use attestation_columns;

#[derive(sqlx::FromRow)]
pub(crate) struct AttestationRow {
    id: i64,
    digest: String,
    bitcoin_height: i64,
    bitcoin_hash: String,
    reserve_sats: i64,
    supply_sats: i64,
    ratio_ppm: Option<i64>,
    registry_version: i64,
    utxo_count: i64,
    created_at: i64,
    stored_at: i64,
    reorged_at: Option<i64>,
}

impl TryFrom<AttestationRow> for AttestationSummary {
    type Error = StoreError;
    fn try_from(r: AttestationRow) -> StoreResult<Self> {
        Ok(AttestationSummary {
            id: r.id,
            digest: r.digest,
            bitcoin_height: from_i64(r.bitcoin_height, "bitcoin_height")?,
            bitcoin_hash: r.bitcoin_hash,
            reserve_sats: from_i64(r.reserve_sats, "reserve_sats")?,
            supply_sats: from_i64(r.supply_sats, "supply_sats")?,
            ratio_ppm: r.ratio_ppm.map(|v| from_i64(v, "ratio_ppm")).transpose()?,
            registry_version: from_i64(r.registry_version, "registry_version")?,
            utxo_count: from_i64(r.utxo_count, "utxo_count")?,
            created_at: Timestamp(r.created_at),
            stored_at: Timestamp(r.stored_at),
            reorged_at: r.reorged_at.map(Timestamp),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct AttestationBodyRow {
    #[sqlx(flatten)]
    summary: AttestationRow,
    body: String,
}

impl TryFrom<AttestationBodyRow> for StoredAttestation {
    type Error = StoreError;
    fn try_from(r: AttestationBodyRow) -> StoreResult<Self> {
        Ok(StoredAttestation {
            summary: r.summary.try_into()?,
            body: r.body,
        })
    }
}
