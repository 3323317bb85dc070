//! Reserve management (migration 0008): expected BTC deposits and the mints they back,
//! burns and the BTC releases they allow, the guardians' approvals of both, and the
//! per-chain per-day volume governor.
//!
//! Every method that changes state is ONE transaction with a guarded write
//! (`UPDATE … WHERE id = $1 AND state = $from`), so a step either happens once or not
//! at all, and a worker that dies between steps resumes from the stored state. Creating
//! an operation is idempotent: the same request again (same deposit outpoint, same
//! deposit for a mint, same burn for a release) returns the stored row unchanged when
//! it matches and a [`OpRefusal::Conflict`] when it does not.
//!
//! Business refusals (over the daily limit, a release larger than its burn, …) come
//! back as `Ok(Err(OpRefusal))` with a stable code; the transaction is rolled back, so
//! nothing changed. `Err(StoreError)` is a database failure. The store does not decide
//! limits or confirmations: callers pass them in.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use ubtc_core::Timestamp;
use uuid::Uuid;

use crate::{StoreError, StoreResult};

/// A named state of an operation, stored as text.
macro_rules! state_enum {
    ($name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
            pub fn parse(s: &str) -> StoreResult<Self> {
                match s {
                    $($text => Ok(Self::$variant),)+
                    other => Err(StoreError::Corrupt(format!(
                        concat!(stringify!($name), " {:?}"), other
                    ))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

state_enum!(DepositState { Expected => "expected", Confirmed => "confirmed" });
state_enum!(MintState {
    Requested => "requested",
    Approved => "approved",
    Submitted => "submitted",
    Confirmed => "confirmed",
    Failed => "failed",
});
state_enum!(BurnState {
    Requested => "requested",
    Submitted => "submitted",
    Confirmed => "confirmed",
    Failed => "failed",
});
state_enum!(ReleaseState {
    Built => "built",
    Signed => "signed",
    Broadcast => "broadcast",
    // Terminal: the release can never be signed or confirmed (guardians refused it for
    // good, or its inputs were spent by another transaction); `last_error` says why.
    Failed => "failed",
});
state_enum!(OpKind { Mint => "mint", Release => "release" });

/// Why an operation was refused. Nothing was written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum OpRefusal {
    #[error("no such {what} {id}")]
    NotFound { what: String, id: String },
    #[error("the deposit is not confirmed yet")]
    DepositNotConfirmed,
    #[error("the mint of {amount_sats} sats exceeds its deposit of {deposit_sats} sats")]
    ExceedsDeposit { amount_sats: u64, deposit_sats: u64 },
    #[error("the burn is not confirmed yet")]
    BurnNotConfirmed,
    #[error(
        "the release of {release_sats} sats (fee included) exceeds the burn of {burn_sats} sats"
    )]
    ExceedsBurn { release_sats: u64, burn_sats: u64 },
    #[error("{kind} volume on {chain} today would reach {would_be_sats} sats, over the daily limit of {limit_sats}")]
    DailyLimit {
        chain: String,
        kind: OpKind,
        would_be_sats: u64,
        limit_sats: u64,
    },
    #[error("an operation with the same key exists with different values: {0}")]
    Conflict(String),
    #[error("{what} is {state}, not {expected}")]
    WrongState {
        what: String,
        state: String,
        expected: String,
    },
}

impl OpRefusal {
    /// Stable error code for the API and the CLI.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::DepositNotConfirmed => "deposit_not_confirmed",
            Self::ExceedsDeposit { .. } => "exceeds_deposit",
            Self::BurnNotConfirmed => "burn_not_confirmed",
            Self::ExceedsBurn { .. } => "release_exceeds_burn",
            Self::DailyLimit { .. } => "daily_limit_exceeded",
            Self::Conflict(_) => "conflict",
            Self::WrongState { .. } => "wrong_state",
        }
    }
}

/// `Ok(Err(refusal))`: refused, nothing written; `Err`: the database failed.
pub type OpResult<T> = StoreResult<Result<T, OpRefusal>>;

/// The UTC day (days since the epoch) that the governor counts `at` in.
pub fn governor_day(at: Timestamp) -> i64 {
    at.0.div_euclid(86_400_000)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewDeposit {
    pub reserve_address: String,
    pub txid: String,
    /// `None`: every output of `txid` paying the reserve address counts.
    pub vout: Option<u32>,
    pub expected_sats: u64,
    pub confirmations_needed: u32,
    pub created_by: String,
}

impl NewDeposit {
    pub fn outpoint(&self) -> String {
        match self.vout {
            Some(v) => format!("{}:{v}", self.txid),
            None => self.txid.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    pub id: Uuid,
    pub reserve_address: String,
    pub txid: String,
    pub vout: Option<u32>,
    pub expected_sats: u64,
    pub confirmations_needed: u32,
    pub confirmations: u32,
    pub state: DepositState,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMint {
    pub chain: String,
    pub to_address: String,
    /// Token base units (8 decimals: satoshis).
    pub amount_sats: u64,
    pub deposit_id: Uuid,
    pub created_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mint {
    pub id: Uuid,
    pub chain: String,
    pub to_address: String,
    pub amount_sats: u64,
    pub deposit_id: Uuid,
    pub state: MintState,
    pub tx_hash: Option<String>,
    /// The signed transaction, stored before it is sent so a resumed worker resends
    /// the same one (same nonce) instead of minting twice.
    pub raw_tx: Option<String>,
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewBurn {
    pub chain: String,
    pub amount_sats: u64,
    /// Where the released BTC goes (checked by the caller).
    pub redeemer_address: String,
    pub created_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Burn {
    pub id: Uuid,
    pub chain: String,
    pub amount_sats: u64,
    pub redeemer_address: String,
    pub state: BurnState,
    pub tx_hash: Option<String>,
    pub raw_tx: Option<String>,
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRelease {
    pub burn_id: Uuid,
    /// Paid to the redeemer.
    pub amount_sats: u64,
    /// Paid to miners, from the reserve: `amount_sats + fee_sats` must not exceed the
    /// burn.
    pub fee_sats: u64,
    /// The unsigned release (JSON of `ubtc_bitcoin::release::ReleasePsbt`).
    pub psbt: String,
    pub created_by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    pub id: Uuid,
    pub burn_id: Uuid,
    pub amount_sats: u64,
    pub fee_sats: u64,
    pub psbt: String,
    pub state: ReleaseState,
    pub final_tx: Option<String>,
    pub txid: Option<String>,
    pub last_error: Option<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// One guardian's recorded answer approving an operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpApproval {
    pub op_kind: OpKind,
    pub op_id: Uuid,
    pub guardian_key: String,
    /// The guardian's signed answer, as received (JSON).
    pub answer: String,
    pub created_at: Timestamp,
}

#[async_trait]
pub trait ReserveOpsStore: Send + Sync + 'static {
    /// Records an expected deposit (`expected`). Idempotent on the outpoint.
    async fn record_deposit(&self, new: &NewDeposit, now: Timestamp) -> OpResult<Deposit>;
    async fn get_deposit(&self, id: Uuid) -> StoreResult<Option<Deposit>>;
    /// Newest first; `state` filters.
    async fn list_deposits(
        &self,
        state: Option<DepositState>,
        limit: u32,
    ) -> StoreResult<Vec<Deposit>>;
    /// Stores the depth last seen, and moves `expected` → `confirmed` when `confirmed`.
    /// Returns the row after the write; `WrongState` when already confirmed and asked
    /// to confirm again is NOT an error (idempotent: the stored row is returned).
    async fn observe_deposit(
        &self,
        id: Uuid,
        confirmations: u32,
        confirmed: bool,
        now: Timestamp,
    ) -> OpResult<Deposit>;

    /// Creates a mint (`requested`) backed by a confirmed deposit, raising the day's
    /// mint volume of `new.chain`, in ONE transaction. Refused (nothing written) when
    /// the deposit is unknown or unconfirmed, the amount exceeds it, or the day's
    /// volume would pass `daily_limit_sats`. The same request again returns the stored
    /// mint and counts nothing twice.
    async fn request_mint(
        &self,
        new: &NewMint,
        daily_limit_sats: u64,
        now: Timestamp,
    ) -> OpResult<Mint>;
    async fn get_mint(&self, id: Uuid) -> StoreResult<Option<Mint>>;
    async fn list_mints(&self, state: Option<MintState>, limit: u32) -> StoreResult<Vec<Mint>>;
    /// `requested` → `approved`.
    async fn approve_mint(&self, id: Uuid, now: Timestamp) -> OpResult<Mint>;
    /// `approved` → `submitted`, storing the signed transaction and its hash BEFORE it
    /// is sent.
    async fn mint_submitted(
        &self,
        id: Uuid,
        tx_hash: &str,
        raw_tx: &str,
        now: Timestamp,
    ) -> OpResult<Mint>;
    /// `submitted` → `confirmed` or `failed` (reverted), with the error.
    async fn mint_finished(
        &self,
        id: Uuid,
        ok: bool,
        error: Option<&str>,
        now: Timestamp,
    ) -> OpResult<Mint>;

    /// Creates a burn (`requested`). Burns are not governed (they remove tokens); the
    /// release they allow is.
    async fn request_burn(&self, new: &NewBurn, now: Timestamp) -> OpResult<Burn>;
    async fn get_burn(&self, id: Uuid) -> StoreResult<Option<Burn>>;
    async fn list_burns(&self, state: Option<BurnState>, limit: u32) -> StoreResult<Vec<Burn>>;
    /// `requested` → `submitted` with the signed transaction, stored before sending.
    async fn burn_submitted(
        &self,
        id: Uuid,
        tx_hash: &str,
        raw_tx: &str,
        now: Timestamp,
    ) -> OpResult<Burn>;
    /// `submitted` → `confirmed` or `failed`.
    async fn burn_finished(
        &self,
        id: Uuid,
        ok: bool,
        error: Option<&str>,
        now: Timestamp,
    ) -> OpResult<Burn>;

    /// Creates the release of a confirmed burn (`built`, with its unsigned PSBT),
    /// raising the day's release volume of the burn's chain, in ONE transaction.
    /// Refused when the burn is not confirmed, `amount + fee` exceeds it, or the
    /// volume would pass `daily_limit_sats`. Idempotent on the burn.
    async fn request_release(
        &self,
        new: &NewRelease,
        daily_limit_sats: u64,
        now: Timestamp,
    ) -> OpResult<Release>;
    async fn get_release(&self, id: Uuid) -> StoreResult<Option<Release>>;
    async fn list_releases(
        &self,
        state: Option<ReleaseState>,
        limit: u32,
    ) -> StoreResult<Vec<Release>>;
    /// `built` → `signed` with the final transaction (checked by the caller).
    async fn release_signed(
        &self,
        id: Uuid,
        final_tx: &str,
        txid: &str,
        now: Timestamp,
    ) -> OpResult<Release>;
    /// `signed` → `broadcast`.
    async fn release_broadcast(&self, id: Uuid, now: Timestamp) -> OpResult<Release>;
    /// `built` or `signed` → `failed` (terminal) with the reason in `last_error`. The
    /// day's volume stays counted; the burn keeps its one release.
    async fn release_failed(&self, id: Uuid, reason: &str, now: Timestamp) -> OpResult<Release>;

    /// Records one guardian's approval. True when new, false when that guardian's
    /// approval of this operation was already recorded (the first one is kept).
    async fn record_op_approval(&self, approval: &OpApproval) -> StoreResult<bool>;
    /// Approvals of one operation, oldest first.
    async fn list_op_approvals(&self, kind: OpKind, id: Uuid) -> StoreResult<Vec<OpApproval>>;
    /// Volume committed on `chain` for `kind` on `day` ([`governor_day`]).
    async fn daily_volume(&self, chain: &str, kind: OpKind, day: i64) -> StoreResult<u64>;
}

// ----- rows -----

pub(crate) fn to_u64(v: i64, what: &str) -> StoreResult<u64> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v}")))
}

pub(crate) fn to_u32(v: i64, what: &str) -> StoreResult<u32> {
    u32::try_from(v).map_err(|_| StoreError::Corrupt(format!("{what} {v}")))
}

pub(crate) fn amount_i64(v: u64, what: &str) -> Result<i64, OpRefusal> {
    i64::try_from(v).map_err(|_| OpRefusal::Conflict(format!("{what} {v} out of range")))
}

#[derive(sqlx::FromRow)]
pub(crate) struct DepositRow {
    id: Uuid,
    reserve_address: String,
    txid: String,
    vout: Option<i64>,
    expected_sats: i64,
    confirmations_needed: i64,
    confirmations: i64,
    state: String,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

impl DepositRow {
    pub(crate) fn parse(self) -> StoreResult<Deposit> {
        Ok(Deposit {
            id: self.id,
            reserve_address: self.reserve_address,
            txid: self.txid,
            vout: self.vout.map(|v| to_u32(v, "vout")).transpose()?,
            expected_sats: to_u64(self.expected_sats, "expected_sats")?,
            confirmations_needed: to_u32(self.confirmations_needed, "confirmations_needed")?,
            confirmations: to_u32(self.confirmations, "confirmations")?,
            state: DepositState::parse(&self.state)?,
            created_by: self.created_by,
            created_at: Timestamp(self.created_at),
            updated_at: Timestamp(self.updated_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct MintRow {
    id: Uuid,
    chain: String,
    to_address: String,
    amount_sats: i64,
    deposit_id: Uuid,
    state: String,
    tx_hash: Option<String>,
    raw_tx: Option<String>,
    last_error: Option<String>,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

impl MintRow {
    pub(crate) fn parse(self) -> StoreResult<Mint> {
        Ok(Mint {
            id: self.id,
            chain: self.chain,
            to_address: self.to_address,
            amount_sats: to_u64(self.amount_sats, "amount_sats")?,
            deposit_id: self.deposit_id,
            state: MintState::parse(&self.state)?,
            tx_hash: self.tx_hash,
            raw_tx: self.raw_tx,
            last_error: self.last_error,
            created_by: self.created_by,
            created_at: Timestamp(self.created_at),
            updated_at: Timestamp(self.updated_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct BurnRow {
    id: Uuid,
    chain: String,
    amount_sats: i64,
    redeemer_address: String,
    state: String,
    tx_hash: Option<String>,
    raw_tx: Option<String>,
    last_error: Option<String>,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

impl BurnRow {
    pub(crate) fn parse(self) -> StoreResult<Burn> {
        Ok(Burn {
            id: self.id,
            chain: self.chain,
            amount_sats: to_u64(self.amount_sats, "amount_sats")?,
            redeemer_address: self.redeemer_address,
            state: BurnState::parse(&self.state)?,
            tx_hash: self.tx_hash,
            raw_tx: self.raw_tx,
            last_error: self.last_error,
            created_by: self.created_by,
            created_at: Timestamp(self.created_at),
            updated_at: Timestamp(self.updated_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ReleaseRow {
    id: Uuid,
    burn_id: Uuid,
    amount_sats: i64,
    fee_sats: i64,
    psbt: String,
    state: String,
    final_tx: Option<String>,
    txid: Option<String>,
    last_error: Option<String>,
    created_by: String,
    created_at: i64,
    updated_at: i64,
}

impl ReleaseRow {
    pub(crate) fn parse(self) -> StoreResult<Release> {
        Ok(Release {
            id: self.id,
            burn_id: self.burn_id,
            amount_sats: to_u64(self.amount_sats, "amount_sats")?,
            fee_sats: to_u64(self.fee_sats, "fee_sats")?,
            psbt: self.psbt,
            state: ReleaseState::parse(&self.state)?,
            final_tx: self.final_tx,
            txid: self.txid,
            last_error: self.last_error,
            created_by: self.created_by,
            created_at: Timestamp(self.created_at),
            updated_at: Timestamp(self.updated_at),
        })
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct ApprovalRow {
    op_kind: String,
    op_id: Uuid,
    guardian_key: String,
    answer: String,
    created_at: i64,
}

impl ApprovalRow {
    pub(crate) fn parse(self) -> StoreResult<OpApproval> {
        Ok(OpApproval {
            op_kind: OpKind::parse(&self.op_kind)?,
            op_id: self.op_id,
            guardian_key: self.guardian_key,
            answer: self.answer,
            created_at: Timestamp(self.created_at),
        })
    }
}

pub(crate) fn wrong_state(what: &str, state: &str, expected: &str) -> OpRefusal {
    OpRefusal::WrongState {
        what: what.to_owned(),
        state: state.to_owned(),
        expected: expected.to_owned(),
    }
}

pub(crate) fn not_found(what: &str, id: Uuid) -> OpRefusal {
    OpRefusal::NotFound {
        what: what.to_owned(),
        id: id.to_string(),
    }
}

// ----- SQL (one text for both dialects) -----

pub(crate) const DEPOSIT_COLS: &str = "id, reserve_address, txid, vout, expected_sats, \
     confirmations_needed, confirmations, state, created_by, created_at, updated_at";
pub(crate) const MINT_COLS: &str = "id, chain, to_address, amount_sats, deposit_id, state, \
     tx_hash, raw_tx, last_error, created_by, created_at, updated_at";
pub(crate) const BURN_COLS: &str = "id, chain, amount_sats, redeemer_address, state, tx_hash, \
     raw_tx, last_error, created_by, created_at, updated_at";
pub(crate) const RELEASE_COLS: &str = "id, burn_id, amount_sats, fee_sats, psbt, state, \
     final_tx, txid, last_error, created_by, created_at, updated_at";

pub(crate) const INSERT_DEPOSIT: &str = "INSERT INTO reserve_deposits (id, reserve_address, \
     txid, vout, outpoint, expected_sats, confirmations_needed, confirmations, state, \
     created_by, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 0, 'expected', \
     $8, $9, $9) ON CONFLICT (outpoint) DO NOTHING";
pub(crate) const INSERT_MINT: &str = "INSERT INTO reserve_mints (id, chain, to_address, \
     amount_sats, deposit_id, state, created_by, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, 'requested', $6, $7, $7) ON CONFLICT (deposit_id) DO NOTHING";
pub(crate) const INSERT_BURN: &str = "INSERT INTO reserve_burns (id, chain, amount_sats, \
     redeemer_address, state, created_by, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, 'requested', $5, $6, $6)";
pub(crate) const INSERT_RELEASE: &str = "INSERT INTO reserve_releases (id, burn_id, \
     amount_sats, fee_sats, psbt, state, created_by, created_at, updated_at) \
     VALUES ($1, $2, $3, $4, $5, 'built', $6, $7, $7) ON CONFLICT (burn_id) DO NOTHING";
/// Raises the day's volume unless it would pass the limit (`$5`); no row changes
/// when it would. The caller checked `$4 <= $5` for the first row of the day.
pub(crate) const RAISE_VOLUME: &str = "INSERT INTO reserve_volume (chain, day, kind, \
     used_sats) VALUES ($1, $2, $3, $4) ON CONFLICT (chain, day, kind) DO UPDATE \
     SET used_sats = reserve_volume.used_sats + excluded.used_sats \
     WHERE reserve_volume.used_sats + excluded.used_sats <= $5";
pub(crate) const VOLUME: &str =
    "SELECT used_sats FROM reserve_volume WHERE chain = $1 AND kind = $2 AND day = $3";
pub(crate) const OBSERVE_DEPOSIT: &str = "UPDATE reserve_deposits SET confirmations = $2, \
     state = CASE WHEN $3 THEN 'confirmed' ELSE state END, updated_at = $4 \
     WHERE id = $1 AND state = 'expected'";
pub(crate) const INSERT_APPROVAL: &str = "INSERT INTO reserve_approvals (op_kind, op_id, \
     guardian_key, answer, created_at) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (op_kind, op_id, guardian_key) DO NOTHING";
pub(crate) const LIST_APPROVALS: &str = "SELECT op_kind, op_id, guardian_key, answer, \
     created_at FROM reserve_approvals WHERE op_kind = $1 AND op_id = $2 \
     ORDER BY created_at, guardian_key";

/// `UPDATE $table SET state = $2, <extra> updated_at = $3 WHERE id = $1 AND state = $from`.
pub(crate) fn transition_sql(table: &str, from: &str, extra: &str) -> String {
    format!(
        "UPDATE {table} SET state = $2, {extra} updated_at = $3 WHERE id = $1 AND state = '{from}'"
    )
}

pub(crate) fn select_by_id(table: &str, cols: &str) -> String {
    format!("SELECT {cols} FROM {table} WHERE id = $1")
}

pub(crate) fn select_list(table: &str, cols: &str) -> String {
    format!(
        "SELECT {cols} FROM {table} WHERE ($1 IS NULL OR state = $1) \
         ORDER BY created_at DESC, id DESC LIMIT $2"
    )
}

/// Writes `impl ReserveOpsStore for $store` (next to `impl_store!`).
macro_rules! impl_reserve_ops_store {
    ($store:ty, $db:ty) => {
        impl $store {
            async fn ro_get<R>(
                &self,
                table: &str,
                cols: &str,
                id: uuid::Uuid,
            ) -> StoreResult<Option<R>>
            where
                R: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
            {
                Ok(
                    sqlx::query_as::<_, R>(&$crate::reserve_ops::select_by_id(table, cols))
                        .bind(id)
                        .fetch_optional(self.reader())
                        .await?,
                )
            }

            async fn ro_list<R>(
                &self,
                table: &str,
                cols: &str,
                state: Option<&str>,
                limit: u32,
            ) -> StoreResult<Vec<R>>
            where
                R: for<'r> sqlx::FromRow<'r, <$db as sqlx::Database>::Row> + Send + Unpin,
            {
                Ok(
                    sqlx::query_as::<_, R>(&$crate::reserve_ops::select_list(table, cols))
                        .bind(state)
                        .bind(i64::from(limit))
                        .fetch_all(self.reader())
                        .await?,
                )
            }

            /// Guarded one-row transition; `Ok(false)` when the row is not in `from`.
            // The SQL pieces are separate arguments so every caller reads as one line.
            #[allow(clippy::too_many_arguments)]
            async fn ro_move(
                &self,
                table: &str,
                from: &str,
                to: &str,
                extra: &str,
                id: uuid::Uuid,
                binds: &[Option<&str>],
                now: Timestamp,
            ) -> StoreResult<bool> {
                let sql = $crate::reserve_ops::transition_sql(table, from, extra);
                let mut q = sqlx::query(&sql).bind(id).bind(to).bind(now.0);
                for b in binds {
                    q = q.bind(*b);
                }
                Ok(q.execute(self.writer()).await?.rows_affected() == 1)
            }

            /// Inside `tx`: raises the volume, or says the limit refuses it.
            async fn ro_raise_volume(
                tx: &mut sqlx::Transaction<'_, $db>,
                chain: &str,
                kind: $crate::reserve_ops::OpKind,
                amount_sats: u64,
                limit_sats: u64,
                now: Timestamp,
            ) -> StoreResult<Result<(), $crate::reserve_ops::OpRefusal>> {
                let day = $crate::reserve_ops::governor_day(now);
                let used: Option<i64> = sqlx::query_scalar($crate::reserve_ops::VOLUME)
                    .bind(chain)
                    .bind(kind.as_str())
                    .bind(day)
                    .fetch_optional(&mut **tx)
                    .await?;
                let used = used.map(|u| u.max(0) as u64).unwrap_or(0);
                let would_be = used.saturating_add(amount_sats);
                let refusal = $crate::reserve_ops::OpRefusal::DailyLimit {
                    chain: chain.to_owned(),
                    kind,
                    would_be_sats: would_be,
                    limit_sats,
                };
                let (Ok(amount), Ok(limit)) =
                    (i64::try_from(amount_sats), i64::try_from(limit_sats))
                else {
                    return Ok(Err(refusal));
                };
                if would_be > limit_sats {
                    return Ok(Err(refusal));
                }
                let done = sqlx::query($crate::reserve_ops::RAISE_VOLUME)
                    .bind(chain)
                    .bind(day)
                    .bind(kind.as_str())
                    .bind(amount)
                    .bind(limit)
                    .execute(&mut **tx)
                    .await?;
                Ok(if done.rows_affected() == 1 {
                    Ok(())
                } else {
                    Err(refusal)
                })
            }
        }

        #[async_trait::async_trait]
        impl $crate::reserve_ops::ReserveOpsStore for $store {
            async fn record_deposit(
                &self,
                new: &$crate::reserve_ops::NewDeposit,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Deposit> {
                use $crate::reserve_ops::*;
                let expected = match amount_i64(new.expected_sats, "expected_sats") {
                    Ok(v) => v,
                    Err(r) => return Ok(Err(r)),
                };
                let id = uuid::Uuid::now_v7();
                let outpoint = new.outpoint();
                sqlx::query(INSERT_DEPOSIT)
                    .bind(id)
                    .bind(new.reserve_address.as_str())
                    .bind(new.txid.as_str())
                    .bind(new.vout.map(i64::from))
                    .bind(outpoint.as_str())
                    .bind(expected)
                    .bind(i64::from(new.confirmations_needed))
                    .bind(new.created_by.as_str())
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                let row: DepositRow = sqlx::query_as(&format!(
                    "SELECT {DEPOSIT_COLS} FROM reserve_deposits WHERE outpoint = $1"
                ))
                .bind(outpoint.as_str())
                .fetch_one(self.writer())
                .await?;
                let stored = row.parse()?;
                if stored.reserve_address != new.reserve_address
                    || stored.expected_sats != new.expected_sats
                    || stored.confirmations_needed != new.confirmations_needed
                {
                    return Ok(Err(OpRefusal::Conflict(format!(
                        "deposit {outpoint} is already recorded with other values"
                    ))));
                }
                Ok(Ok(stored))
            }

            async fn get_deposit(
                &self,
                id: uuid::Uuid,
            ) -> StoreResult<Option<$crate::reserve_ops::Deposit>> {
                use $crate::reserve_ops::*;
                self.ro_get::<DepositRow>("reserve_deposits", DEPOSIT_COLS, id)
                    .await?
                    .map(DepositRow::parse)
                    .transpose()
            }

            async fn list_deposits(
                &self,
                state: Option<$crate::reserve_ops::DepositState>,
                limit: u32,
            ) -> StoreResult<Vec<$crate::reserve_ops::Deposit>> {
                use $crate::reserve_ops::*;
                self.ro_list::<DepositRow>(
                    "reserve_deposits",
                    DEPOSIT_COLS,
                    state.map(|s| s.as_str()),
                    limit,
                )
                .await?
                .into_iter()
                .map(DepositRow::parse)
                .collect()
            }

            async fn observe_deposit(
                &self,
                id: uuid::Uuid,
                confirmations: u32,
                confirmed: bool,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Deposit> {
                use $crate::reserve_ops::*;
                sqlx::query(OBSERVE_DEPOSIT)
                    .bind(id)
                    .bind(i64::from(confirmations))
                    .bind(confirmed)
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                let row: Option<DepositRow> =
                    sqlx::query_as(&select_by_id("reserve_deposits", DEPOSIT_COLS))
                        .bind(id)
                        .fetch_optional(self.writer())
                        .await?;
                match row {
                    None => Ok(Err(not_found("deposit", id))),
                    Some(r) => Ok(Ok(r.parse()?)),
                }
            }

            async fn request_mint(
                &self,
                new: &$crate::reserve_ops::NewMint,
                daily_limit_sats: u64,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Mint> {
                use $crate::reserve_ops::*;
                let amount = match amount_i64(new.amount_sats, "amount_sats") {
                    Ok(v) => v,
                    Err(r) => return Ok(Err(r)),
                };
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let deposit: Option<DepositRow> =
                    sqlx::query_as(&select_by_id("reserve_deposits", DEPOSIT_COLS))
                        .bind(new.deposit_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(deposit) = deposit else {
                    return Ok(Err(not_found("deposit", new.deposit_id)));
                };
                let deposit = deposit.parse()?;
                if deposit.state != DepositState::Confirmed {
                    return Ok(Err(OpRefusal::DepositNotConfirmed));
                }
                if new.amount_sats > deposit.expected_sats {
                    return Ok(Err(OpRefusal::ExceedsDeposit {
                        amount_sats: new.amount_sats,
                        deposit_sats: deposit.expected_sats,
                    }));
                }
                let id = uuid::Uuid::now_v7();
                let inserted = sqlx::query(INSERT_MINT)
                    .bind(id)
                    .bind(new.chain.as_str())
                    .bind(new.to_address.as_str())
                    .bind(amount)
                    .bind(new.deposit_id)
                    .bind(new.created_by.as_str())
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if inserted {
                    if let Err(r) = Self::ro_raise_volume(
                        &mut tx,
                        &new.chain,
                        OpKind::Mint,
                        new.amount_sats,
                        daily_limit_sats,
                        now,
                    )
                    .await?
                    {
                        tx.rollback().await?;
                        return Ok(Err(r));
                    }
                }
                let row: MintRow = sqlx::query_as(&format!(
                    "SELECT {MINT_COLS} FROM reserve_mints WHERE deposit_id = $1"
                ))
                .bind(new.deposit_id)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                let stored = row.parse()?;
                if stored.chain != new.chain
                    || stored.to_address != new.to_address
                    || stored.amount_sats != new.amount_sats
                {
                    return Ok(Err(OpRefusal::Conflict(format!(
                        "deposit {} already backs mint {}",
                        new.deposit_id, stored.id
                    ))));
                }
                Ok(Ok(stored))
            }

            async fn get_mint(
                &self,
                id: uuid::Uuid,
            ) -> StoreResult<Option<$crate::reserve_ops::Mint>> {
                use $crate::reserve_ops::*;
                self.ro_get::<MintRow>("reserve_mints", MINT_COLS, id)
                    .await?
                    .map(MintRow::parse)
                    .transpose()
            }

            async fn list_mints(
                &self,
                state: Option<$crate::reserve_ops::MintState>,
                limit: u32,
            ) -> StoreResult<Vec<$crate::reserve_ops::Mint>> {
                use $crate::reserve_ops::*;
                self.ro_list::<MintRow>(
                    "reserve_mints",
                    MINT_COLS,
                    state.map(|s| s.as_str()),
                    limit,
                )
                .await?
                .into_iter()
                .map(MintRow::parse)
                .collect()
            }

            async fn approve_mint(
                &self,
                id: uuid::Uuid,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Mint> {
                use $crate::reserve_ops::*;
                let moved = self
                    .ro_move("reserve_mints", "requested", "approved", "", id, &[], now)
                    .await?;
                self.ro_mint_after(id, moved, MintState::Approved, "requested")
                    .await
            }

            async fn mint_submitted(
                &self,
                id: uuid::Uuid,
                tx_hash: &str,
                raw_tx: &str,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Mint> {
                use $crate::reserve_ops::*;
                let moved = self
                    .ro_move(
                        "reserve_mints",
                        "approved",
                        "submitted",
                        "tx_hash = $4, raw_tx = $5,",
                        id,
                        &[Some(tx_hash), Some(raw_tx)],
                        now,
                    )
                    .await?;
                self.ro_mint_after(id, moved, MintState::Submitted, "approved")
                    .await
            }

            async fn mint_finished(
                &self,
                id: uuid::Uuid,
                ok: bool,
                error: Option<&str>,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Mint> {
                use $crate::reserve_ops::*;
                let to = if ok {
                    MintState::Confirmed
                } else {
                    MintState::Failed
                };
                let moved = self
                    .ro_move(
                        "reserve_mints",
                        "submitted",
                        to.as_str(),
                        "last_error = $4,",
                        id,
                        &[error],
                        now,
                    )
                    .await?;
                self.ro_mint_after(id, moved, to, "submitted").await
            }

            async fn request_burn(
                &self,
                new: &$crate::reserve_ops::NewBurn,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Burn> {
                use $crate::reserve_ops::*;
                let amount = match amount_i64(new.amount_sats, "amount_sats") {
                    Ok(v) => v,
                    Err(r) => return Ok(Err(r)),
                };
                let id = uuid::Uuid::now_v7();
                sqlx::query(INSERT_BURN)
                    .bind(id)
                    .bind(new.chain.as_str())
                    .bind(amount)
                    .bind(new.redeemer_address.as_str())
                    .bind(new.created_by.as_str())
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                let row: BurnRow = sqlx::query_as(&select_by_id("reserve_burns", BURN_COLS))
                    .bind(id)
                    .fetch_one(self.writer())
                    .await?;
                Ok(Ok(row.parse()?))
            }

            async fn get_burn(
                &self,
                id: uuid::Uuid,
            ) -> StoreResult<Option<$crate::reserve_ops::Burn>> {
                use $crate::reserve_ops::*;
                self.ro_get::<BurnRow>("reserve_burns", BURN_COLS, id)
                    .await?
                    .map(BurnRow::parse)
                    .transpose()
            }

            async fn list_burns(
                &self,
                state: Option<$crate::reserve_ops::BurnState>,
                limit: u32,
            ) -> StoreResult<Vec<$crate::reserve_ops::Burn>> {
                use $crate::reserve_ops::*;
                self.ro_list::<BurnRow>(
                    "reserve_burns",
                    BURN_COLS,
                    state.map(|s| s.as_str()),
                    limit,
                )
                .await?
                .into_iter()
                .map(BurnRow::parse)
                .collect()
            }

            async fn burn_submitted(
                &self,
                id: uuid::Uuid,
                tx_hash: &str,
                raw_tx: &str,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Burn> {
                use $crate::reserve_ops::*;
                let moved = self
                    .ro_move(
                        "reserve_burns",
                        "requested",
                        "submitted",
                        "tx_hash = $4, raw_tx = $5,",
                        id,
                        &[Some(tx_hash), Some(raw_tx)],
                        now,
                    )
                    .await?;
                self.ro_burn_after(id, moved, BurnState::Submitted, "requested")
                    .await
            }

            async fn burn_finished(
                &self,
                id: uuid::Uuid,
                ok: bool,
                error: Option<&str>,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Burn> {
                use $crate::reserve_ops::*;
                let to = if ok {
                    BurnState::Confirmed
                } else {
                    BurnState::Failed
                };
                let moved = self
                    .ro_move(
                        "reserve_burns",
                        "submitted",
                        to.as_str(),
                        "last_error = $4,",
                        id,
                        &[error],
                        now,
                    )
                    .await?;
                self.ro_burn_after(id, moved, to, "submitted").await
            }

            async fn request_release(
                &self,
                new: &$crate::reserve_ops::NewRelease,
                daily_limit_sats: u64,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Release> {
                use $crate::reserve_ops::*;
                let (amount, fee) = match (
                    amount_i64(new.amount_sats, "amount_sats"),
                    amount_i64(new.fee_sats, "fee_sats"),
                ) {
                    (Ok(a), Ok(f)) => (a, f),
                    (Err(r), _) | (_, Err(r)) => return Ok(Err(r)),
                };
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let burn: Option<BurnRow> =
                    sqlx::query_as(&select_by_id("reserve_burns", BURN_COLS))
                        .bind(new.burn_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some(burn) = burn else {
                    return Ok(Err(not_found("burn", new.burn_id)));
                };
                let burn = burn.parse()?;
                if burn.state != BurnState::Confirmed {
                    return Ok(Err(OpRefusal::BurnNotConfirmed));
                }
                let total = new.amount_sats.saturating_add(new.fee_sats);
                if total > burn.amount_sats {
                    return Ok(Err(OpRefusal::ExceedsBurn {
                        release_sats: total,
                        burn_sats: burn.amount_sats,
                    }));
                }
                let id = uuid::Uuid::now_v7();
                let inserted = sqlx::query(INSERT_RELEASE)
                    .bind(id)
                    .bind(new.burn_id)
                    .bind(amount)
                    .bind(fee)
                    .bind(new.psbt.as_str())
                    .bind(new.created_by.as_str())
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                    == 1;
                if inserted {
                    if let Err(r) = Self::ro_raise_volume(
                        &mut tx,
                        &burn.chain,
                        OpKind::Release,
                        total,
                        daily_limit_sats,
                        now,
                    )
                    .await?
                    {
                        tx.rollback().await?;
                        return Ok(Err(r));
                    }
                }
                let row: ReleaseRow = sqlx::query_as(&format!(
                    "SELECT {RELEASE_COLS} FROM reserve_releases WHERE burn_id = $1"
                ))
                .bind(new.burn_id)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                let stored = row.parse()?;
                if stored.amount_sats != new.amount_sats || stored.fee_sats != new.fee_sats {
                    return Ok(Err(OpRefusal::Conflict(format!(
                        "burn {} already has release {}",
                        new.burn_id, stored.id
                    ))));
                }
                Ok(Ok(stored))
            }

            async fn get_release(
                &self,
                id: uuid::Uuid,
            ) -> StoreResult<Option<$crate::reserve_ops::Release>> {
                use $crate::reserve_ops::*;
                self.ro_get::<ReleaseRow>("reserve_releases", RELEASE_COLS, id)
                    .await?
                    .map(ReleaseRow::parse)
                    .transpose()
            }

            async fn list_releases(
                &self,
                state: Option<$crate::reserve_ops::ReleaseState>,
                limit: u32,
            ) -> StoreResult<Vec<$crate::reserve_ops::Release>> {
                use $crate::reserve_ops::*;
                self.ro_list::<ReleaseRow>(
                    "reserve_releases",
                    RELEASE_COLS,
                    state.map(|s| s.as_str()),
                    limit,
                )
                .await?
                .into_iter()
                .map(ReleaseRow::parse)
                .collect()
            }

            async fn release_signed(
                &self,
                id: uuid::Uuid,
                final_tx: &str,
                txid: &str,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Release> {
                use $crate::reserve_ops::*;
                let moved = self
                    .ro_move(
                        "reserve_releases",
                        "built",
                        "signed",
                        "final_tx = $4, txid = $5,",
                        id,
                        &[Some(final_tx), Some(txid)],
                        now,
                    )
                    .await?;
                self.ro_release_after(id, moved, ReleaseState::Signed, "built")
                    .await
            }

            async fn release_broadcast(
                &self,
                id: uuid::Uuid,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Release> {
                use $crate::reserve_ops::*;
                let moved = self
                    .ro_move("reserve_releases", "signed", "broadcast", "", id, &[], now)
                    .await?;
                self.ro_release_after(id, moved, ReleaseState::Broadcast, "signed")
                    .await
            }

            async fn release_failed(
                &self,
                id: uuid::Uuid,
                reason: &str,
                now: Timestamp,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Release> {
                use $crate::reserve_ops::*;
                let mut moved = false;
                for from in ["built", "signed"] {
                    moved = self
                        .ro_move(
                            "reserve_releases",
                            from,
                            "failed",
                            "last_error = $4,",
                            id,
                            &[Some(reason)],
                            now,
                        )
                        .await?;
                    if moved {
                        break;
                    }
                }
                self.ro_release_after(id, moved, ReleaseState::Failed, "built or signed")
                    .await
            }

            async fn record_op_approval(
                &self,
                a: &$crate::reserve_ops::OpApproval,
            ) -> StoreResult<bool> {
                use $crate::reserve_ops::*;
                let done = sqlx::query(INSERT_APPROVAL)
                    .bind(a.op_kind.as_str())
                    .bind(a.op_id)
                    .bind(a.guardian_key.as_str())
                    .bind(a.answer.as_str())
                    .bind(a.created_at.0)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn list_op_approvals(
                &self,
                kind: $crate::reserve_ops::OpKind,
                id: uuid::Uuid,
            ) -> StoreResult<Vec<$crate::reserve_ops::OpApproval>> {
                use $crate::reserve_ops::*;
                let rows: Vec<ApprovalRow> = sqlx::query_as(LIST_APPROVALS)
                    .bind(kind.as_str())
                    .bind(id)
                    .fetch_all(self.reader())
                    .await?;
                rows.into_iter().map(ApprovalRow::parse).collect()
            }

            async fn daily_volume(
                &self,
                chain: &str,
                kind: $crate::reserve_ops::OpKind,
                day: i64,
            ) -> StoreResult<u64> {
                let used: Option<i64> = sqlx::query_scalar($crate::reserve_ops::VOLUME)
                    .bind(chain)
                    .bind(kind.as_str())
                    .bind(day)
                    .fetch_optional(self.reader())
                    .await?;
                $crate::reserve_ops::to_u64(used.unwrap_or(0), "used_sats")
            }
        }

        impl $store {
            /// The row after a guarded move: the new state when it moved, the state
            /// that refused the move when it did not (a repeat of a move already made
            /// returns the row: idempotent).
            async fn ro_mint_after(
                &self,
                id: uuid::Uuid,
                moved: bool,
                to: $crate::reserve_ops::MintState,
                from: &str,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Mint> {
                use $crate::reserve_ops::*;
                let row: Option<MintRow> =
                    sqlx::query_as(&select_by_id("reserve_mints", MINT_COLS))
                        .bind(id)
                        .fetch_optional(self.writer())
                        .await?;
                let Some(row) = row else {
                    return Ok(Err(not_found("mint", id)));
                };
                let m = row.parse()?;
                if moved || m.state == to {
                    Ok(Ok(m))
                } else {
                    Ok(Err(wrong_state("mint", m.state.as_str(), from)))
                }
            }

            async fn ro_burn_after(
                &self,
                id: uuid::Uuid,
                moved: bool,
                to: $crate::reserve_ops::BurnState,
                from: &str,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Burn> {
                use $crate::reserve_ops::*;
                let row: Option<BurnRow> =
                    sqlx::query_as(&select_by_id("reserve_burns", BURN_COLS))
                        .bind(id)
                        .fetch_optional(self.writer())
                        .await?;
                let Some(row) = row else {
                    return Ok(Err(not_found("burn", id)));
                };
                let b = row.parse()?;
                if moved || b.state == to {
                    Ok(Ok(b))
                } else {
                    Ok(Err(wrong_state("burn", b.state.as_str(), from)))
                }
            }

            async fn ro_release_after(
                &self,
                id: uuid::Uuid,
                moved: bool,
                to: $crate::reserve_ops::ReleaseState,
                from: &str,
            ) -> $crate::reserve_ops::OpResult<$crate::reserve_ops::Release> {
                use $crate::reserve_ops::*;
                let row: Option<ReleaseRow> =
                    sqlx::query_as(&select_by_id("reserve_releases", RELEASE_COLS))
                        .bind(id)
                        .fetch_optional(self.writer())
                        .await?;
                let Some(row) = row else {
                    return Ok(Err(not_found("release", id)));
                };
                let r = row.parse()?;
                if moved || r.state == to {
                    Ok(Ok(r))
                } else {
                    Ok(Err(wrong_state("release", r.state.as_str(), from)))
                }
            }
        }
    };
}
pub(crate) use impl_reserve_ops_store;
