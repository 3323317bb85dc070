//! Reserve management: deposit → mint and burn → release, under guardian approval.
//!
//! Operators call the request functions of [`ReserveOps`] (through the admin API or
//! `ubtc admin`); everything after that is the step function [`ReserveOps::tick`],
//! which moves each operation one state further from what the store says:
//!
//! ```text
//! deposit  expected ──(N confirmations at the reserve address)──► confirmed
//! mint     requested ──(M guardian approvals)──► approved ──(signed tx stored, sent)──►
//!          submitted ──(receipt at depth)──► confirmed | failed
//! burn     requested ──(signed tx stored, sent)──► submitted ──(receipt at depth)──►
//!          confirmed | failed
//! release  built ──(M partial signatures, final tx verified by the script
//!          interpreter)──► signed ──(broadcast)──► broadcast
//!          built | signed ──(refused for good by enough guardians, or an input spent
//!          by another transaction)──► failed
//! ```
//!
//! Each move is one guarded store transaction, so a worker that dies anywhere resumes
//! from the stored state: a signed EVM transaction is stored before it is sent and sent
//! again on resume (same nonce, never a second mint); guardians answer a repeated
//! request with the answer they recorded. Every move writes an audit record. Requests
//! are checked at the edge ([`parse_amount_sats`], known chain, address shape, ratio
//! after the mint, daily volume): a refused request changes nothing and says why with a
//! stable [`OpsError::code`].

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use bitcoin::Network;
use serde::{Deserialize, Serialize};
use ubtc_bitcoin::multisig::{PartialSignature, SortedMulti, Wrapping};
use ubtc_bitcoin::release::{self, Payout, ReleaseError, ReleaseRequest};
use ubtc_chains::evm::minter::{EvmMinter, EvmReceipt, SignedEvmTx};
use ubtc_chains::{BitcoinBackend, ChainError};
use ubtc_core::Timestamp;
use ubtc_store::reserve_ops::*;
use ubtc_store::{NewAuditEntry, Store, StoreError};
use uuid::Uuid;

/// Largest amount of any request: all the bitcoin there will ever be, in sats.
pub const MAX_AMOUNT_SATS: u64 = 21_000_000 * 100_000_000;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("unknown chain {0:?}")]
    UnknownChain(String),
    #[error("invalid amount {0:?}: a whole number of sats from 1 to 2100000000000000")]
    InvalidAmount(String),
    #[error("invalid address: {0}")]
    InvalidAddress(String),
    #[error("the mint would leave reserves of {reserves_sats} sats under a supply of {supply_after_sats}")]
    RatioBelowOne {
        reserves_sats: u64,
        supply_after_sats: u64,
    },
    #[error(transparent)]
    Refused(#[from] OpRefusal),
    #[error("release: {0}")]
    Release(#[from] ReleaseError),
    #[error(transparent)]
    Chain(#[from] ChainError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OpsError {
    /// Stable code (API error code, CLI exit message).
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnknownChain(_) => "unknown_chain",
            Self::InvalidAmount(_) => "invalid_amount",
            Self::InvalidAddress(_) => "invalid_address",
            Self::RatioBelowOne { .. } => "ratio_below_one",
            Self::Refused(r) => r.code(),
            Self::Release(ReleaseError::InsufficientFunds { .. }) => "insufficient_reserves",
            Self::Release(_) => "release_invalid",
            Self::Chain(_) => "chain_unavailable",
            Self::Store(_) => "internal",
        }
    }

    /// True for refusals of the request itself (HTTP 4xx), false for failures of ours.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::Chain(_) | Self::Store(_))
    }
}

/// Parses an amount as given by an operator: decimal digits only (no sign, no
/// exponent, no fraction), from 1 to [`MAX_AMOUNT_SATS`].
pub fn parse_amount_sats(s: &str) -> Result<u64, OpsError> {
    let t = s.trim();
    if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(OpsError::InvalidAmount(s.to_owned()));
    }
    match t.parse::<u64>() {
        Ok(v) if (1..=MAX_AMOUNT_SATS).contains(&v) => Ok(v),
        _ => Err(OpsError::InvalidAmount(s.to_owned())),
    }
}

/// Who asked, for the audit trail.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Actor {
    pub name: String,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl Actor {
    pub fn system() -> Self {
        Self {
            name: "system:reserve-ops".into(),
            ip: None,
            user_agent: None,
        }
    }
}

// ----- the guardians, as the workflow sees them -----

/// What guardians re-check before approving a mint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintCheck {
    pub op_id: Uuid,
    pub chain: String,
    pub to_address: String,
    pub amount_sats: u64,
    pub deposit_address: String,
    pub deposit_txid: String,
    pub deposit_vout: Option<u32>,
    pub deposit_sats: u64,
}

/// What guardians re-check before signing a release.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseCheck {
    pub op_id: Uuid,
    pub chain: String,
    pub burn_tx: String,
    pub burn_sats: u64,
    pub redeemer_address: String,
    pub release: ReleaseRequest,
}

/// One guardian's answer, already authenticated by the approver implementation
/// against that guardian's registered key (and, for a release, its partial signature
/// verified).
#[derive(Clone, Debug)]
pub struct GuardianVote {
    pub guardian_key: String,
    /// The signed answer as received, kept as the approval record.
    pub answer_json: String,
    /// `Ok(partial)` approved (a partial signature for releases), `Err((code, detail))`
    /// refused.
    pub decision: Result<Option<PartialSignature>, (String, String)>,
}

/// The M-of-N guardians (the guardian crate's client implements this over HTTP).
#[async_trait]
pub trait ReserveApprovers: Send + Sync + 'static {
    fn threshold(&self) -> usize;
    async fn ask_mint(&self, check: &MintCheck) -> Vec<GuardianVote>;
    async fn ask_release(&self, check: &ReleaseCheck) -> Vec<GuardianVote>;
}

// ----- the token chains -----

/// Mints and burns on one token chain.
#[async_trait]
pub trait TokenMinter: Send + Sync + 'static {
    /// Checks a recipient address's shape for this chain.
    fn check_address(&self, to: &str) -> Result<(), String>;
    async fn sign_mint(&self, to: &str, amount_sats: u64) -> Result<SignedEvmTx, ChainError>;
    async fn sign_burn(&self, amount_sats: u64) -> Result<SignedEvmTx, ChainError>;
    async fn send(&self, tx: &SignedEvmTx) -> Result<(), ChainError>;
    async fn receipt(&self, hash: &str) -> Result<Option<EvmReceipt>, ChainError>;
    async fn total_supply_sats(&self) -> Result<u64, ChainError>;
}

#[async_trait]
impl TokenMinter for EvmMinter {
    fn check_address(&self, to: &str) -> Result<(), String> {
        let ok = to.len() == 42
            && to.starts_with("0x")
            && to[2..].bytes().all(|b| b.is_ascii_hexdigit())
            && to[2..].bytes().any(|b| b != b'0');
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{to:?} is not a non-zero 0x-prefixed 20-byte address"
            ))
        }
    }
    async fn sign_mint(&self, to: &str, amount_sats: u64) -> Result<SignedEvmTx, ChainError> {
        EvmMinter::sign_mint(self, to, amount_sats.into()).await
    }
    async fn sign_burn(&self, amount_sats: u64) -> Result<SignedEvmTx, ChainError> {
        EvmMinter::sign_burn(self, amount_sats.into()).await
    }
    async fn send(&self, tx: &SignedEvmTx) -> Result<(), ChainError> {
        EvmMinter::send(self, tx).await
    }
    async fn receipt(&self, hash: &str) -> Result<Option<EvmReceipt>, ChainError> {
        EvmMinter::receipt(self, hash).await
    }
    async fn total_supply_sats(&self) -> Result<u64, ChainError> {
        let s = self.total_supply().await?;
        u64::try_from(s).map_err(|_| ChainError::BadResponse(format!("supply {s} overflows")))
    }
}

// ----- settings and the workflow -----

#[derive(Clone, Debug)]
pub struct ReserveOpsSettings {
    pub network: Network,
    /// The guardians' reserve policy; its P2WSH address receives deposits and change.
    pub reserve: SortedMulti,
    /// Depth a deposit needs before a mint may use it (at least 1).
    pub deposit_confirmations: u32,
    /// Depth a mint or burn receipt needs on its chain.
    pub token_confirmations: u64,
    /// Per chain per UTC day.
    pub mint_daily_limit_sats: u64,
    pub release_daily_limit_sats: u64,
    pub fee_rate_sat_vb: u64,
    /// Operations handled per state per tick.
    pub batch: u32,
}

impl ReserveOpsSettings {
    pub fn reserve_address(&self) -> String {
        self.reserve
            .address(self.network, Wrapping::Wsh)
            .to_string()
    }
}

/// What one tick did (counts of moves).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ReserveOpsTick {
    pub deposits_confirmed: u32,
    pub mints_approved: u32,
    pub mints_submitted: u32,
    pub mints_finished: u32,
    pub burns_submitted: u32,
    pub burns_finished: u32,
    pub releases_signed: u32,
    pub releases_broadcast: u32,
    pub releases_failed: u32,
    /// Operations that could not move yet (not enough approvals, not deep enough).
    pub waiting: u32,
}

impl crate::StepOutcome for ReserveOpsTick {
    fn is_idle(&self) -> bool {
        self.deposits_confirmed
            + self.mints_approved
            + self.mints_submitted
            + self.mints_finished
            + self.burns_submitted
            + self.burns_finished
            + self.releases_signed
            + self.releases_broadcast
            + self.releases_failed
            == 0
    }
}

pub struct ReserveOps {
    store: Arc<dyn Store>,
    bitcoin: Arc<dyn BitcoinBackend>,
    minters: HashMap<String, Arc<dyn TokenMinter>>,
    approvers: Arc<dyn ReserveApprovers>,
    settings: ReserveOpsSettings,
}

/// A deposit as the operator states it.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DepositRequest {
    pub txid: String,
    #[serde(default)]
    pub vout: Option<u32>,
    /// Decimal string or number of sats.
    pub expected_sats: serde_json::Value,
    /// Defaults to the reserve address.
    #[serde(default)]
    pub reserve_address: Option<String>,
    #[serde(default)]
    pub confirmations: Option<u32>,
}

/// Reads an amount given as a JSON number or a decimal string.
pub fn amount_from_json(v: &serde_json::Value) -> Result<u64, OpsError> {
    match v {
        serde_json::Value::String(s) => parse_amount_sats(s),
        serde_json::Value::Number(n) => parse_amount_sats(&n.to_string()),
        other => Err(OpsError::InvalidAmount(other.to_string())),
    }
}

impl ReserveOps {
    pub fn new(
        store: Arc<dyn Store>,
        bitcoin: Arc<dyn BitcoinBackend>,
        minters: HashMap<String, Arc<dyn TokenMinter>>,
        approvers: Arc<dyn ReserveApprovers>,
        settings: ReserveOpsSettings,
    ) -> Self {
        Self {
            store,
            bitcoin,
            minters,
            approvers,
            settings,
        }
    }

    pub fn settings(&self) -> &ReserveOpsSettings {
        &self.settings
    }

    async fn audit<T: Serialize>(
        &self,
        actor: &Actor,
        action: &str,
        target: Uuid,
        old: Option<&str>,
        new: &T,
    ) -> Result<(), OpsError> {
        self.store
            .append_audit(
                &NewAuditEntry {
                    actor: actor.name.clone(),
                    action: action.to_owned(),
                    target: Some(target.to_string()),
                    old_value: old.map(str::to_owned),
                    new_value: serde_json::to_string(new).ok(),
                    ip: actor.ip.clone(),
                    user_agent: actor.user_agent.clone(),
                },
                Timestamp::now(),
            )
            .await?;
        Ok(())
    }

    /// Where a sent mint or burn transaction stands: `None` while it waits (sent again
    /// when the node does not know it, or not yet at the configured depth), `Some(success)`
    /// once it is final. A row without its stored transaction waits: it cannot be sent.
    async fn settle(
        &self,
        minter: &Arc<dyn TokenMinter>,
        tx_hash: &Option<String>,
        raw_tx: &Option<String>,
    ) -> Result<Option<bool>, OpsError> {
        let (Some(hash), Some(raw)) = (tx_hash, raw_tx) else {
            return Ok(None);
        };
        match minter.receipt(hash).await? {
            None => {
                let tx = SignedEvmTx {
                    hash: hash.clone(),
                    raw: raw.clone(),
                    nonce: 0,
                };
                minter.send(&tx).await?;
                Ok(None)
            }
            Some(r) if r.confirmations < self.settings.token_confirmations => Ok(None),
            Some(r) => Ok(Some(r.success)),
        }
    }

    fn minter(&self, chain: &str) -> Result<&Arc<dyn TokenMinter>, OpsError> {
        self.minters
            .get(chain)
            .ok_or_else(|| OpsError::UnknownChain(chain.to_owned()))
    }

    fn check_btc_address(&self, a: &str) -> Result<(), OpsError> {
        a.parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
            .ok()
            .and_then(|x| x.require_network(self.settings.network).ok())
            .map(|_| ())
            .ok_or_else(|| {
                OpsError::InvalidAddress(format!(
                    "{a:?} is not a Bitcoin address of {}",
                    self.settings.network
                ))
            })
    }

    /// Records an expected deposit. Idempotent on its outpoint.
    pub async fn record_deposit(
        &self,
        actor: &Actor,
        req: &DepositRequest,
    ) -> Result<Deposit, OpsError> {
        let expected_sats = amount_from_json(&req.expected_sats)?;
        if req.txid.len() != 64 || !req.txid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(OpsError::InvalidAddress(format!(
                "txid {:?} is not 64 hex characters",
                req.txid
            )));
        }
        let address = req
            .reserve_address
            .clone()
            .unwrap_or_else(|| self.settings.reserve_address());
        if address != self.settings.reserve_address() {
            return Err(OpsError::InvalidAddress(format!(
                "{address:?} is not the reserve address"
            )));
        }
        let new = NewDeposit {
            reserve_address: address,
            txid: req.txid.to_ascii_lowercase(),
            vout: req.vout,
            expected_sats,
            confirmations_needed: req
                .confirmations
                .unwrap_or(self.settings.deposit_confirmations)
                .max(self.settings.deposit_confirmations)
                .max(1),
            created_by: actor.name.clone(),
        };
        let d = self.store.record_deposit(&new, Timestamp::now()).await??;
        self.audit(actor, "reserve.deposit.record", d.id, None, &d)
            .await?;
        Ok(d)
    }

    /// Reserves (confirmed BTC at the reserve address) and total token supply over
    /// every chain plus mints not yet confirmed.
    async fn reserves_and_supply(&self) -> Result<(u64, u64), OpsError> {
        let utxos = self
            .bitcoin
            .address_utxos(&self.settings.reserve_address())
            .await?;
        let reserves = utxos
            .iter()
            .fold(0u64, |a, u| a.saturating_add(u.amount_sats));
        let mut supply = 0u64;
        for m in self.minters.values() {
            supply = supply.saturating_add(m.total_supply_sats().await?);
        }
        for state in [
            MintState::Requested,
            MintState::Approved,
            MintState::Submitted,
        ] {
            for m in self.store.list_mints(Some(state), 10_000).await? {
                supply = supply.saturating_add(m.amount_sats);
            }
        }
        Ok((reserves, supply))
    }

    /// Requests a mint of `amount` on `chain` to `to`, backed by a confirmed deposit.
    /// Refused (nothing written) on an unknown chain, a bad amount or address, a ratio
    /// that would fall below 1, or the day's mint volume.
    pub async fn request_mint(
        &self,
        actor: &Actor,
        chain: &str,
        to: &str,
        amount: &serde_json::Value,
        deposit_id: Uuid,
    ) -> Result<Mint, OpsError> {
        let minter = self.minter(chain)?;
        let amount_sats = amount_from_json(amount)?;
        minter.check_address(to).map_err(OpsError::InvalidAddress)?;
        // EVM addresses compare lowercase; base58 (Solana) is case-sensitive.
        let to = if to.starts_with("0x") {
            to.to_ascii_lowercase()
        } else {
            to.to_owned()
        };
        // A repeat of a stored request is answered from the store, not re-judged.
        if let Some(existing) = self
            .store
            .list_mints(None, 10_000)
            .await?
            .into_iter()
            .find(|m| m.deposit_id == deposit_id)
        {
            if existing.chain == chain
                && existing.to_address == to
                && existing.amount_sats == amount_sats
            {
                return Ok(existing);
            }
        }
        let (reserves, supply) = self.reserves_and_supply().await?;
        let after = supply.saturating_add(amount_sats);
        if after > reserves {
            return Err(OpsError::RatioBelowOne {
                reserves_sats: reserves,
                supply_after_sats: after,
            });
        }
        let m = self
            .store
            .request_mint(
                &NewMint {
                    chain: chain.to_owned(),
                    to_address: to,
                    amount_sats,
                    deposit_id,
                    created_by: actor.name.clone(),
                },
                self.settings.mint_daily_limit_sats,
                Timestamp::now(),
            )
            .await??;
        self.audit(actor, "reserve.mint.request", m.id, None, &m)
            .await?;
        Ok(m)
    }

    /// Requests a burn of `amount` on `chain` from the minter's balance (the redeemer
    /// has sent the tokens to the minter), to be released to `redeemer` on Bitcoin.
    pub async fn request_burn(
        &self,
        actor: &Actor,
        chain: &str,
        amount: &serde_json::Value,
        redeemer: &str,
    ) -> Result<Burn, OpsError> {
        self.minter(chain)?;
        let amount_sats = amount_from_json(amount)?;
        self.check_btc_address(redeemer)?;
        let b = self
            .store
            .request_burn(
                &NewBurn {
                    chain: chain.to_owned(),
                    amount_sats,
                    redeemer_address: redeemer.to_owned(),
                    created_by: actor.name.clone(),
                },
                Timestamp::now(),
            )
            .await??;
        self.audit(actor, "reserve.burn.request", b.id, None, &b)
            .await?;
        Ok(b)
    }

    /// Builds the release of a confirmed burn from the reserve UTXOs. `amount`: paid to
    /// the redeemer, fee on top; `None`: the burn's amount leaves the reserve, fee
    /// included. Refused when `amount + fee` exceeds the burn, the burn is not
    /// confirmed, or the day's release volume would pass its limit.
    pub async fn request_release(
        &self,
        actor: &Actor,
        burn_id: Uuid,
        amount: Option<&serde_json::Value>,
    ) -> Result<Release, OpsError> {
        let burn = self
            .store
            .get_burn(burn_id)
            .await?
            .ok_or_else(|| OpsError::Refused(not_found_burn(burn_id)))?;
        if let Some(existing) = self
            .store
            .list_releases(None, 10_000)
            .await?
            .into_iter()
            .find(|r| r.burn_id == burn_id)
        {
            return Ok(existing);
        }
        if burn.state != BurnState::Confirmed {
            return Err(OpRefusal::BurnNotConfirmed.into());
        }
        let payout = match amount {
            Some(v) => {
                let a = amount_from_json(v)?;
                if a > burn.amount_sats {
                    return Err(OpRefusal::ExceedsBurn {
                        release_sats: a,
                        burn_sats: burn.amount_sats,
                    }
                    .into());
                }
                Payout::Exact(a)
            }
            None => Payout::FeeIncluded(burn.amount_sats),
        };
        let mut utxos = self
            .bitcoin
            .address_utxos(&self.settings.reserve_address())
            .await?;
        // Outputs another release already spends (built, signed, or broadcast and not
        // yet gone from the view) are not picked again: two releases spending one
        // output would leave one of them unconfirmable.
        let taken = self.inputs_of_live_releases().await?;
        utxos.retain(|u| !taken.contains(&(u.txid.to_ascii_lowercase(), u.vout)));
        let (request, summary) = release::build_release(
            &self.settings.reserve,
            self.settings.network,
            &utxos,
            &burn.redeemer_address,
            payout,
            self.settings.fee_rate_sat_vb,
        )?;
        let redeemer_spk = redeemer_script(&burn.redeemer_address, self.settings.network)?;
        let paid = summary.paid_to(&redeemer_spk);
        let r = self
            .store
            .request_release(
                &NewRelease {
                    burn_id,
                    amount_sats: paid,
                    fee_sats: summary.fee_sats,
                    psbt: serde_json::to_string(&request)
                        .map_err(|e| OpsError::Release(ReleaseError::Build(e.to_string())))?,
                    created_by: actor.name.clone(),
                },
                self.settings.release_daily_limit_sats,
                Timestamp::now(),
            )
            .await??;
        self.audit(actor, "reserve.release.request", r.id, None, &r)
            .await?;
        Ok(r)
    }

    /// Outpoints (txid lowercase, vout) spent by releases that have not failed.
    async fn inputs_of_live_releases(
        &self,
    ) -> Result<std::collections::HashSet<(String, u32)>, OpsError> {
        let mut taken = std::collections::HashSet::new();
        for r in self.store.list_releases(None, 100_000).await? {
            if r.state == ReleaseState::Failed {
                continue;
            }
            if let Ok(req) = serde_json::from_str::<ReleaseRequest>(&r.psbt) {
                taken.extend(
                    req.utxos
                        .into_iter()
                        .map(|u| (u.txid.to_ascii_lowercase(), u.vout)),
                );
            }
        }
        Ok(taken)
    }

    /// The first input of `r` that is no longer an unspent reserve output, while `r`'s
    /// own transaction is unknown to the backend: another transaction spent it, so `r`
    /// can never confirm.
    async fn input_spent_elsewhere(&self, r: &Release) -> Result<Option<String>, OpsError> {
        let Ok(req) = serde_json::from_str::<ReleaseRequest>(&r.psbt) else {
            return Ok(None);
        };
        if let Some(txid) = &r.txid {
            if self.bitcoin.tx_confirmations(txid).await?.is_some() {
                return Ok(None);
            }
        }
        let unspent = self
            .bitcoin
            .address_utxos(&self.settings.reserve_address())
            .await?;
        Ok(req
            .utxos
            .iter()
            .find(|u| {
                !unspent
                    .iter()
                    .any(|x| x.txid.eq_ignore_ascii_case(&u.txid) && x.vout == u.vout)
            })
            .map(|u| {
                format!(
                    "input {}:{} was spent by another transaction",
                    u.txid, u.vout
                )
            }))
    }

    async fn fail_release(
        &self,
        t: &mut ReserveOpsTick,
        r: &Release,
        reason: &str,
    ) -> Result<(), OpsError> {
        let f = self
            .store
            .release_failed(r.id, reason, Timestamp::now())
            .await??;
        t.releases_failed += 1;
        tracing::error!(release = %r.id, reason, "release failed for good");
        self.audit(
            &Actor::system(),
            "reserve.release.failed",
            r.id,
            Some(r.state.as_str()),
            &f,
        )
        .await
    }

    /// One step over every state (see the module docs). Errors of one operation are
    /// logged and left for the next tick; the others still move.
    pub async fn tick(&self) -> Result<ReserveOpsTick, OpsError> {
        let mut t = ReserveOpsTick::default();
        let sys = Actor::system();
        let n = self.settings.batch.max(1);

        for d in self
            .store
            .list_deposits(Some(DepositState::Expected), n)
            .await?
        {
            match self.check_deposit(&d).await {
                Ok(Some(confs)) => {
                    let moved = self
                        .store
                        .observe_deposit(
                            d.id,
                            confs,
                            confs >= d.confirmations_needed,
                            Timestamp::now(),
                        )
                        .await??;
                    if moved.state == DepositState::Confirmed {
                        t.deposits_confirmed += 1;
                        self.audit(
                            &sys,
                            "reserve.deposit.confirmed",
                            d.id,
                            Some("expected"),
                            &moved,
                        )
                        .await?;
                    } else {
                        t.waiting += 1;
                    }
                }
                Ok(None) => t.waiting += 1,
                Err(e) => {
                    tracing::warn!(deposit = %d.id, error = %e, "deposit check failed");
                    t.waiting += 1;
                }
            }
        }

        for m in self.store.list_mints(Some(MintState::Requested), n).await? {
            match self.collect_mint_approvals(&m).await {
                Ok(true) => {
                    let a = self.store.approve_mint(m.id, Timestamp::now()).await??;
                    t.mints_approved += 1;
                    self.audit(&sys, "reserve.mint.approved", m.id, Some("requested"), &a)
                        .await?;
                }
                Ok(false) => t.waiting += 1,
                Err(e) => {
                    tracing::warn!(mint = %m.id, error = %e, "mint approval round failed");
                    t.waiting += 1;
                }
            }
        }

        for m in self.store.list_mints(Some(MintState::Approved), n).await? {
            let r: Result<(), OpsError> = async {
                let minter = self.minter(&m.chain)?;
                let signed = minter.sign_mint(&m.to_address, m.amount_sats).await?;
                // Stored before sending: a crash after this line resends these same bytes.
                let s = self
                    .store
                    .mint_submitted(m.id, &signed.hash, &signed.raw, Timestamp::now())
                    .await??;
                minter.send(&signed).await?;
                t.mints_submitted += 1;
                self.audit(&sys, "reserve.mint.submitted", m.id, Some("approved"), &s)
                    .await?;
                Ok(())
            }
            .await;
            if let Err(e) = r {
                // One operation's trouble (a node down) does not hold up the others.
                tracing::warn!(mint = %m.id, error = %e, code = e.code(), "reserve step failed; retried next tick");
                t.waiting += 1;
            }
        }

        for m in self.store.list_mints(Some(MintState::Submitted), n).await? {
            let r: Result<(), OpsError> = async {
                let Some(success) = self
                    .settle(self.minter(&m.chain)?, &m.tx_hash, &m.raw_tx)
                    .await?
                else {
                    t.waiting += 1;
                    return Ok(());
                };
                let err = (!success).then_some("mint transaction reverted");
                let f = self
                    .store
                    .mint_finished(m.id, success, err, Timestamp::now())
                    .await??;
                t.mints_finished += 1;
                self.audit(&sys, "reserve.mint.finished", m.id, Some("submitted"), &f)
                    .await?;
                Ok(())
            }
            .await;
            if let Err(e) = r {
                // One operation's trouble (a node down) does not hold up the others.
                tracing::warn!(mint = %m.id, error = %e, code = e.code(), "reserve step failed; retried next tick");
                t.waiting += 1;
            }
        }

        for b in self.store.list_burns(Some(BurnState::Requested), n).await? {
            let r: Result<(), OpsError> = async {
                let minter = self.minter(&b.chain)?;
                let signed = minter.sign_burn(b.amount_sats).await?;
                let s = self
                    .store
                    .burn_submitted(b.id, &signed.hash, &signed.raw, Timestamp::now())
                    .await??;
                minter.send(&signed).await?;
                t.burns_submitted += 1;
                self.audit(&sys, "reserve.burn.submitted", b.id, Some("requested"), &s)
                    .await?;
                Ok(())
            }
            .await;
            if let Err(e) = r {
                // One operation's trouble (a node down) does not hold up the others.
                tracing::warn!(burn = %b.id, error = %e, code = e.code(), "reserve step failed; retried next tick");
                t.waiting += 1;
            }
        }

        for b in self.store.list_burns(Some(BurnState::Submitted), n).await? {
            let r: Result<(), OpsError> = async {
                let Some(success) = self
                    .settle(self.minter(&b.chain)?, &b.tx_hash, &b.raw_tx)
                    .await?
                else {
                    t.waiting += 1;
                    return Ok(());
                };
                let err = (!success).then_some("burn transaction reverted");
                let f = self
                    .store
                    .burn_finished(b.id, success, err, Timestamp::now())
                    .await??;
                t.burns_finished += 1;
                self.audit(&sys, "reserve.burn.finished", b.id, Some("submitted"), &f)
                    .await?;
                Ok(())
            }
            .await;
            if let Err(e) = r {
                // One operation's trouble (a node down) does not hold up the others.
                tracing::warn!(burn = %b.id, error = %e, code = e.code(), "reserve step failed; retried next tick");
                t.waiting += 1;
            }
        }

        for r in self
            .store
            .list_releases(Some(ReleaseState::Built), n)
            .await?
        {
            match self.sign_release(&r).await {
                Ok(SignRound::Refused(reason)) => {
                    if let Err(e) = self.fail_release(&mut t, &r, &reason).await {
                        tracing::warn!(release = %r.id, error = %e, "could not mark a release failed");
                    }
                }
                Ok(SignRound::Signed(tx)) => {
                    let txid = tx.compute_txid().to_string();
                    let s = self
                        .store
                        .release_signed(r.id, &release::tx_hex(&tx), &txid, Timestamp::now())
                        .await??;
                    t.releases_signed += 1;
                    self.audit(&sys, "reserve.release.signed", r.id, Some("built"), &s)
                        .await?;
                }
                Ok(SignRound::Waiting) => t.waiting += 1,
                Err(e) => {
                    tracing::warn!(release = %r.id, error = %e, "release signing round failed");
                    t.waiting += 1;
                }
            }
        }

        for r in self
            .store
            .list_releases(Some(ReleaseState::Signed), n)
            .await?
        {
            let Some(tx) = r.final_tx.as_deref() else {
                continue;
            };
            let res: Result<(), OpsError> = async {
                let txid = self.bitcoin.broadcast(tx).await?;
                if r.txid.as_deref() != Some(txid.as_str()) {
                    tracing::error!(release = %r.id, sent = %txid, stored = ?r.txid, "backend reports another txid");
                }
                let s = self
                    .store
                    .release_broadcast(r.id, Timestamp::now())
                    .await??;
                t.releases_broadcast += 1;
                self.audit(&sys, "reserve.release.broadcast", r.id, Some("signed"), &s)
                    .await?;
                Ok(())
            }
            .await;
            if let Err(e) = res {
                // The signed transaction stays stored; sending it again is harmless —
                // unless another transaction spent one of its inputs: then it never
                // will confirm and is failed, so it stops being retried.
                match self.input_spent_elsewhere(&r).await {
                    Ok(Some(reason)) => {
                        if let Err(e) = self.fail_release(&mut t, &r, &reason).await {
                            tracing::warn!(release = %r.id, error = %e, "could not mark a release failed");
                        }
                    }
                    _ => {
                        tracing::warn!(release = %r.id, error = %e, code = e.code(), "broadcast failed; retried next tick");
                        t.waiting += 1;
                    }
                }
            }
        }
        Ok(t)
    }

    /// Depth of the deposit if its output(s) pay the expected amount to the reserve
    /// address; `None` when not seen (yet).
    async fn check_deposit(&self, d: &Deposit) -> Result<Option<u32>, OpsError> {
        let Some(confs) = self.bitcoin.tx_confirmations(&d.txid).await? else {
            return Ok(None);
        };
        let utxos = self.bitcoin.address_utxos(&d.reserve_address).await?;
        let paid: u64 = utxos
            .iter()
            .filter(|u| u.txid == d.txid && d.vout.is_none_or(|v| v == u.vout))
            .map(|u| u.amount_sats)
            .sum();
        if paid < d.expected_sats {
            return Ok(None);
        }
        Ok(Some(confs))
    }

    /// Asks the guardians (again: they answer a repeat with their recorded answer),
    /// records every approval, and says whether M distinct guardians approved.
    async fn collect_mint_approvals(&self, m: &Mint) -> Result<bool, OpsError> {
        let d = self
            .store
            .get_deposit(m.deposit_id)
            .await?
            .ok_or_else(|| OpsError::Refused(OpRefusal::DepositNotConfirmed))?;
        let check = MintCheck {
            op_id: m.id,
            chain: m.chain.clone(),
            to_address: m.to_address.clone(),
            amount_sats: m.amount_sats,
            deposit_address: d.reserve_address.clone(),
            deposit_txid: d.txid.clone(),
            deposit_vout: d.vout,
            deposit_sats: d.expected_sats,
        };
        let existing = self.store.list_op_approvals(OpKind::Mint, m.id).await?;
        if existing.len() >= self.approvers.threshold() {
            return Ok(true);
        }
        for vote in self.approvers.ask_mint(&check).await {
            match &vote.decision {
                Ok(_) => {
                    self.store
                        .record_op_approval(&OpApproval {
                            op_kind: OpKind::Mint,
                            op_id: m.id,
                            guardian_key: vote.guardian_key.clone(),
                            answer: vote.answer_json.clone(),
                            created_at: Timestamp::now(),
                        })
                        .await?;
                }
                Err((code, detail)) => {
                    tracing::info!(mint = %m.id, guardian = %vote.guardian_key, code, detail, "guardian refused a mint");
                }
            }
        }
        let n = self
            .store
            .list_op_approvals(OpKind::Mint, m.id)
            .await?
            .len();
        Ok(n >= self.approvers.threshold())
    }

    /// Collects partial signatures; at M, finalises (every input checked by the strict
    /// interpreter). `Waiting` while fewer than M guardians signed; `Refused` when M can
    /// no longer be reached (enough guardians refused for good) or an input was spent
    /// by another transaction.
    async fn sign_release(&self, r: &Release) -> Result<SignRound, OpsError> {
        if let Some(reason) = self.input_spent_elsewhere(r).await? {
            return Ok(SignRound::Refused(reason));
        }
        let burn = self
            .store
            .get_burn(r.burn_id)
            .await?
            .ok_or_else(|| OpsError::Refused(not_found_burn(r.burn_id)))?;
        let request: ReleaseRequest = serde_json::from_str(&r.psbt)
            .map_err(|e| OpsError::Release(ReleaseError::Mismatch(e.to_string())))?;
        let check = ReleaseCheck {
            op_id: r.id,
            chain: burn.chain.clone(),
            burn_tx: burn.tx_hash.clone().unwrap_or_default(),
            burn_sats: burn.amount_sats,
            redeemer_address: burn.redeemer_address.clone(),
            release: request.clone(),
        };
        let mut partials = Vec::new();
        let mut final_refusals: Vec<String> = Vec::new();
        for vote in self.approvers.ask_release(&check).await {
            match vote.decision {
                Ok(Some(p)) => {
                    self.store
                        .record_op_approval(&OpApproval {
                            op_kind: OpKind::Release,
                            op_id: r.id,
                            guardian_key: vote.guardian_key.clone(),
                            answer: vote.answer_json.clone(),
                            created_at: Timestamp::now(),
                        })
                        .await?;
                    partials.push(p);
                }
                Ok(None) => {}
                Err((code, detail)) => {
                    tracing::info!(release = %r.id, guardian = %vote.guardian_key, code, detail, "guardian refused a release");
                    if refusal_is_final(&code) {
                        final_refusals.push(format!("{code}: {detail}"));
                    }
                }
            }
        }
        let n = self.settings.reserve.keys().len();
        let m = self.settings.reserve.threshold();
        if partials.len() < m && n.saturating_sub(final_refusals.len()) < m {
            return Ok(SignRound::Refused(format!(
                "{} of {n} guardians refused for good ({})",
                final_refusals.len(),
                final_refusals.join("; ")
            )));
        }
        if partials.len() < m {
            return Ok(SignRound::Waiting);
        }
        Ok(SignRound::Signed(release::finalize_release(
            &request, &partials,
        )?))
    }
}

/// What one signing round of a release came to.
enum SignRound {
    Signed(bitcoin::Transaction),
    Waiting,
    /// Can never be signed: the reason.
    Refused(String),
}

/// Guardian refusals that asking again cannot change (the request's contents are
/// wrong for that guardian). Node trouble, depth, lag, expiry are asked again.
fn refusal_is_final(code: &str) -> bool {
    matches!(
        code,
        "fee_too_high"
            | "release_exceeds_burn"
            | "already_used"
            | "already_decided_other"
            | "not_reserve"
            | "unknown_chain"
            | "bad_request"
    )
}

fn not_found_burn(id: Uuid) -> OpRefusal {
    OpRefusal::NotFound {
        what: "burn".into(),
        id: id.to_string(),
    }
}

fn redeemer_script(address: &str, network: Network) -> Result<bitcoin::ScriptBuf, OpsError> {
    address
        .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
        .ok()
        .and_then(|a| a.require_network(network).ok())
        .map(|a| a.script_pubkey())
        .ok_or_else(|| OpsError::InvalidAddress(address.to_owned()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn amounts_parse_at_the_edge() {
        assert_eq!(parse_amount_sats("1").unwrap(), 1);
        assert_eq!(
            parse_amount_sats("2100000000000000").unwrap(),
            MAX_AMOUNT_SATS
        );
        for bad in [
            "0",
            "-1",
            "",
            "1.5",
            "1e3",
            "2100000000000001",
            "99999999999999999999999",
            " ",
            "+5",
        ] {
            assert_eq!(
                parse_amount_sats(bad).unwrap_err().code(),
                "invalid_amount",
                "{bad}"
            );
        }
        assert!(amount_from_json(&serde_json::json!(-5)).is_err());
        assert!(amount_from_json(&serde_json::json!(1.5)).is_err());
        assert!(amount_from_json(&serde_json::json!(1e30)).is_err());
        assert_eq!(amount_from_json(&serde_json::json!("42")).unwrap(), 42);
        assert!(amount_from_json(&serde_json::json!(null)).is_err());
    }

    // ----- releases against a SQLite store and the dev Bitcoin backend -----

    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use bitcoin::CompressedPublicKey;
    use ubtc_chains::dev::DevBitcoin;

    /// Stand-in for the guardians, said plainly: the real ones live in the guardian
    /// crate, which depends on this one (its end-to-end test runs them over HTTP). Every
    /// guardian answers with `refusal`.
    struct Refusing(&'static str);

    #[async_trait]
    impl ReserveApprovers for Refusing {
        fn threshold(&self) -> usize {
            2
        }
        async fn ask_mint(&self, _: &MintCheck) -> Vec<GuardianVote> {
            Vec::new()
        }
        async fn ask_release(&self, _: &ReleaseCheck) -> Vec<GuardianVote> {
            (0..3)
                .map(|i| GuardianVote {
                    guardian_key: format!("g{i}"),
                    answer_json: "{}".into(),
                    decision: Err((self.0.into(), "test".into())),
                })
                .collect()
        }
    }

    struct Rig {
        ops: ReserveOps,
        store: Arc<dyn Store>,
        bitcoin: DevBitcoin,
        address: String,
        spk: String,
        _dir: tempfile::TempDir,
    }

    async fn rig(refusal: &'static str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = ubtc_store::connect(
            &format!("sqlite:{}", dir.path().join("ops.db").display()),
            2,
        )
        .await
        .unwrap();
        store.migrate().await.unwrap();
        let secp = Secp256k1::new();
        let keys = (1..=3u8)
            .map(|i| {
                CompressedPublicKey(SecretKey::from_slice(&[i; 32]).unwrap().public_key(&secp))
            })
            .collect();
        let reserve = SortedMulti::new(2, keys).unwrap();
        let bitcoin = DevBitcoin::new(100);
        let settings = ReserveOpsSettings {
            network: Network::Regtest,
            reserve,
            deposit_confirmations: 1,
            token_confirmations: 1,
            mint_daily_limit_sats: 10_000_000,
            release_daily_limit_sats: 10_000_000,
            fee_rate_sat_vb: 2,
            batch: 16,
        };
        let address = settings.reserve_address();
        let spk = settings
            .reserve
            .script_pubkey(Wrapping::Wsh)
            .to_hex_string();
        let ops = ReserveOps::new(
            store.clone(),
            Arc::new(bitcoin.clone()),
            HashMap::new(),
            Arc::new(Refusing(refusal)),
            settings,
        );
        Rig {
            ops,
            store,
            bitcoin,
            address,
            spk,
            _dir: dir,
        }
    }

    fn redeemer() -> String {
        let secp = Secp256k1::new();
        let pk = CompressedPublicKey(SecretKey::from_slice(&[9; 32]).unwrap().public_key(&secp));
        bitcoin::Address::p2wpkh(&pk, Network::Regtest).to_string()
    }

    async fn confirmed_burn(s: &Arc<dyn Store>, sats: u64) -> Uuid {
        let b = s
            .request_burn(
                &NewBurn {
                    chain: "ethereum".into(),
                    amount_sats: sats,
                    redeemer_address: redeemer(),
                    created_by: "op".into(),
                },
                Timestamp::now(),
            )
            .await
            .unwrap()
            .unwrap();
        s.burn_submitted(b.id, "0xb", "0xraw", Timestamp::now())
            .await
            .unwrap()
            .unwrap();
        s.burn_finished(b.id, true, None, Timestamp::now())
            .await
            .unwrap()
            .unwrap();
        b.id
    }

    fn inputs(r: &Release) -> Vec<String> {
        let req: ReleaseRequest = serde_json::from_str(&r.psbt).unwrap();
        req.utxos.iter().map(|u| u.txid.clone()).collect()
    }

    /// Spends `txid:0` outside the workflow (the dev backend does not run scripts).
    async fn spend_elsewhere(bitcoin: &DevBitcoin, txid: &str) {
        use bitcoin::hashes::Hash;
        let tx = bitcoin::Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![bitcoin::TxIn {
                previous_output: bitcoin::OutPoint::new(txid.parse().unwrap(), 0),
                ..Default::default()
            }],
            output: vec![bitcoin::TxOut {
                value: bitcoin::Amount::from_sat(1_000),
                script_pubkey: bitcoin::ScriptBuf::new_p2wsh(
                    &bitcoin::WScriptHash::from_byte_array([7; 32]),
                ),
            }],
        };
        bitcoin.broadcast(&release::tx_hex(&tx)).await.unwrap();
    }

    /// A UTXO spent by a release that is not final is not picked
    /// for the next one.
    #[tokio::test]
    async fn releases_do_not_share_inputs() {
        let r = rig("burn_unconfirmed").await;
        let big = r.bitcoin.fund(&r.address, &r.spk, 500_000);
        let small = r.bitcoin.fund(&r.address, &r.spk, 300_000);
        let actor = Actor::system();
        let b1 = confirmed_burn(&r.store, 100_000).await;
        let b2 = confirmed_burn(&r.store, 100_000).await;
        let r1 = r.ops.request_release(&actor, b1, None).await.unwrap();
        let r2 = r.ops.request_release(&actor, b2, None).await.unwrap();
        assert_eq!(inputs(&r1), vec![big.txid]);
        assert_eq!(inputs(&r2), vec![small.txid]);
        // Both reserve outputs are taken: a third release has nothing left to spend.
        let b3 = confirmed_burn(&r.store, 100_000).await;
        let e = r.ops.request_release(&actor, b3, None).await.unwrap_err();
        assert_eq!(e.code(), "insufficient_reserves");
    }

    /// A release the guardians refuse for good fails with the reason
    /// instead of staying `built`; a refusal that may pass later leaves it waiting.
    #[tokio::test]
    async fn a_release_refused_for_good_fails() {
        let r = rig("burn_unconfirmed").await;
        r.bitcoin.fund(&r.address, &r.spk, 500_000);
        let b = confirmed_burn(&r.store, 100_000).await;
        let rel = r
            .ops
            .request_release(&Actor::system(), b, None)
            .await
            .unwrap();
        let t = r.ops.tick().await.unwrap();
        assert_eq!((t.releases_failed, t.waiting), (0, 1), "{t:?}");
        let r = Rig {
            ops: ReserveOps::new(
                r.store.clone(),
                Arc::new(r.bitcoin.clone()),
                HashMap::new(),
                Arc::new(Refusing("fee_too_high")),
                r.ops.settings.clone(),
            ),
            ..r
        };
        let t = r.ops.tick().await.unwrap();
        assert_eq!(t.releases_failed, 1, "{t:?}");
        let failed = r.store.get_release(rel.id).await.unwrap().unwrap();
        assert_eq!(failed.state, ReleaseState::Failed);
        assert!(failed.last_error.unwrap().contains("fee_too_high"));
        let audit = r.store.list_audit(None, 100).await.unwrap();
        assert!(audit.iter().any(|a| a.action == "reserve.release.failed"));
    }

    /// A release whose input another transaction spent fails (built:
    /// before asking the guardians; signed: when its broadcast is refused) instead of
    /// being retried on every tick.
    #[tokio::test]
    async fn a_release_whose_input_was_spent_elsewhere_fails() {
        let r = rig("burn_unconfirmed").await;
        let u1 = r.bitcoin.fund(&r.address, &r.spk, 500_000);
        let u2 = r.bitcoin.fund(&r.address, &r.spk, 400_000);
        let actor = Actor::system();
        let built = r
            .ops
            .request_release(&actor, confirmed_burn(&r.store, 100_000).await, None)
            .await
            .unwrap();
        let signed = r
            .ops
            .request_release(&actor, confirmed_burn(&r.store, 100_000).await, None)
            .await
            .unwrap();
        assert_eq!(inputs(&signed), vec![u2.txid.clone()]);
        // Stored as signed (the transaction's witness does not matter to the dev node).
        let req: ReleaseRequest = serde_json::from_str(&signed.psbt).unwrap();
        let tx = req.plan().unwrap().unsigned;
        r.store
            .release_signed(
                signed.id,
                &release::tx_hex(&tx),
                &tx.compute_txid().to_string(),
                Timestamp::now(),
            )
            .await
            .unwrap()
            .unwrap();
        spend_elsewhere(&r.bitcoin, &u1.txid).await;
        spend_elsewhere(&r.bitcoin, &u2.txid).await;
        let t = r.ops.tick().await.unwrap();
        assert_eq!(t.releases_failed, 2, "{t:?}");
        for id in [built.id, signed.id] {
            let f = r.store.get_release(id).await.unwrap().unwrap();
            assert_eq!(f.state, ReleaseState::Failed);
            assert!(f
                .last_error
                .unwrap()
                .contains("spent by another transaction"));
        }
        // Failed: nothing left to retry.
        let t = r.ops.tick().await.unwrap();
        assert_eq!((t.releases_failed, t.waiting), (0, 0), "{t:?}");
    }
}
