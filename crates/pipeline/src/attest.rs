//! Reserve attestations on a schedule: the pipeline proposes one from the reserve
//! registry, the Bitcoin backend's UTXO set at its tip, each chain's supply at a named
//! block, the audit log's head and the registry's latest version; an
//! [`AttestationMaker`] (the guardians' round, or a local key) signs it; the store
//! keeps it.
//!
//! [`Attester::tick`] is the step: it attests after every `every_blocks` new Bitcoin
//! blocks, at least every `max_interval_ms`, and when asked ([`Attester::request`]).
//! When no attestation can be made (a guardian refuses, a backend is down) nothing is
//! stored: the last attestation stands, older, and is never replaced by figures
//! nobody proved. Each tick also marks stored attestations whose block left the best
//! chain.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use ubtc_chains::{BitcoinBackend, ChainError, SupplySource};
use ubtc_core::attestation::{
    AttestationContent, AttestedBlock, AttestedReserve, AttestedSupply, RegistryRef,
    ReserveAttestation, ReserveStatus,
};
use ubtc_core::registry::RegistryVersion;
use ubtc_core::{BlockStamp, Timestamp};
use ubtc_store::{AttestationSummary, Store};

use crate::{PipelineError, StepOutcome};

/// When to attest. Defaults: after every 6 new Bitcoin blocks (about an hour on
/// mainnet), and at least every 60 minutes, so a quiet chain still gets fresh supply
/// figures and a fresh audit head signed.
#[derive(Clone, Debug)]
pub struct AttestConfig {
    pub every_blocks: u32,
    pub max_interval_ms: i64,
    /// How many of the newest stored attestations are checked for reorgs each tick.
    pub reorg_check_depth: u32,
}

impl Default for AttestConfig {
    fn default() -> Self {
        Self {
            every_blocks: 6,
            max_interval_ms: 60 * 60 * 1000,
            reorg_check_depth: 16,
        }
    }
}

/// Why the signers made no attestation: one code per guardian (or the signer's own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestRefusal {
    /// `(who, code)` pairs, e.g. `("guardian-2", "utxo_set_mismatch")`.
    pub codes: Vec<(String, String)>,
    pub detail: String,
}

/// Signs a proposed attestation: the seam between the pipeline and the keys. The
/// guardian crate implements it for its coordinator (M-of-N guardians) and for a
/// single local key; the binary wires one in. What it returns must be complete (proof
/// of funds and approvals); the pipeline checks that it attests what was proposed.
#[async_trait]
pub trait AttestationMaker: Send + Sync + 'static {
    async fn make(&self, proposal: AttestationContent)
        -> Result<ReserveAttestation, AttestRefusal>;
}

/// What one tick did.
#[derive(Clone, Debug)]
pub enum AttestTick {
    Made(Box<AttestationSummary>),
    /// Not due yet.
    Skipped,
    /// Due, but the signers refused: the last attestation stands.
    Refused(AttestRefusal),
}

impl StepOutcome for AttestTick {
    fn is_idle(&self) -> bool {
        // A refusal is not retried at once: the next tick (or block) tries again.
        !matches!(self, AttestTick::Made(_))
    }
}

struct Last {
    height: u32,
    at: Timestamp,
}

/// Makes, stores and watches reserve attestations. One per deployment is enough (the
/// guardians approve one attestation per block and registry; a second attester only
/// gets refusals).
pub struct Attester {
    bitcoin: Arc<dyn BitcoinBackend>,
    supplies: Vec<Arc<dyn SupplySource>>,
    store: Arc<dyn Store>,
    maker: Arc<dyn AttestationMaker>,
    config: AttestConfig,
    last: Mutex<Option<Last>>,
    requested: AtomicBool,
}

impl Attester {
    pub fn new(
        bitcoin: Arc<dyn BitcoinBackend>,
        supplies: Vec<Arc<dyn SupplySource>>,
        store: Arc<dyn Store>,
        maker: Arc<dyn AttestationMaker>,
        config: AttestConfig,
    ) -> Self {
        Self {
            bitcoin,
            supplies,
            store,
            maker,
            config,
            last: Mutex::new(None),
            requested: AtomicBool::new(false),
        }
    }

    /// Asks for an attestation at the next tick, whatever the schedule says.
    pub fn request(&self) {
        self.requested.store(true, Ordering::SeqCst);
    }

    fn last(&self) -> std::sync::MutexGuard<'_, Option<Last>> {
        // Plain data behind the lock: a panic elsewhere leaves it usable.
        self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks reorged attestations, then attests when due.
    pub async fn tick(&self, now: Timestamp) -> Result<AttestTick, PipelineError> {
        self.mark_reorged(now).await?;
        let tip = self.bitcoin.tip().await?;
        if self.last().is_none() {
            // After a restart the schedule continues from the stored attestation.
            if let Some(stored) = self.store.latest_attestation().await? {
                *self.last() = Some(Last {
                    height: stored.summary.bitcoin_height,
                    at: stored.summary.stored_at,
                });
            }
        }
        let requested = self.requested.swap(false, Ordering::SeqCst);
        let due = requested
            || self.last().as_ref().is_none_or(|l| {
                tip.height >= l.height.saturating_add(self.config.every_blocks)
                    || now.as_millis() - l.at.as_millis() >= self.config.max_interval_ms
            });
        if !due {
            return Ok(AttestTick::Skipped);
        }
        self.attest_at(&tip, now).await
    }

    /// Makes one attestation now, at the current tip (the admin's "attest now").
    pub async fn attest_now(&self, now: Timestamp) -> Result<AttestTick, PipelineError> {
        let tip = self.bitcoin.tip().await?;
        self.attest_at(&tip, now).await
    }

    async fn attest_at(
        &self,
        tip: &BlockStamp,
        now: Timestamp,
    ) -> Result<AttestTick, PipelineError> {
        let (proposal, registry) = match self.propose(tip, now).await? {
            Ok(p) => p,
            Err(refusal) => return Ok(self.refused(refusal)),
        };
        let expected = ReserveAttestation::unsigned(proposal.clone()).map_err(|e| {
            ChainError::BadResponse(format!("proposal does not form an attestation: {e}"))
        })?;
        let made = match self.maker.make(proposal).await {
            Ok(made) => made,
            Err(refusal) => return Ok(self.refused(refusal)),
        };
        // The signers must return what was proposed, signed: never store a document
        // whose figures differ from the ones read here.
        if made.digest() != expected.digest() {
            return Ok(self.refused(AttestRefusal {
                codes: vec![("attester".into(), "attestation_mismatch".into())],
                detail: "the signed attestation is not the one proposed".into(),
            }));
        }
        // What is published as proven must verify as a holder checks it: its proof of
        // funds, and M approvals of the guardians of the registry version it names. The
        // signers are not trusted to have done that. Verification is CPU-bound (seconds
        // at 10,000 UTXOs), so it runs off the async workers.
        let checked = made.clone();
        let report = tokio::task::spawn_blocking(move || {
            ubtc_bitcoin::attestation::verify_attestation_pinned(
                &checked,
                Some(&ubtc_bitcoin::bundle::RegistryPin::Versions(registry)),
            )
        })
        .await
        .map_err(|e| ChainError::BadResponse(format!("attestation check failed to run: {e}")))?;
        if !report.is_valid() {
            let detail = report
                .errors
                .iter()
                .map(|e| format!("{}: {}", e.code, e.message))
                .collect::<Vec<_>>()
                .join("; ");
            return Ok(self.refused(AttestRefusal {
                codes: vec![("attester".into(), "attestation_unverified".into())],
                detail: format!("the signed attestation does not verify: {detail}"),
            }));
        }
        let summary = self.store.record_attestation(&made, now).await?;
        *self.last() = Some(Last {
            height: tip.height,
            at: now,
        });
        metrics::counter!("ubtc_attestations_total", "outcome" => "made").increment(1);
        metrics::gauge!("ubtc_attestation_height").set(f64::from(summary.bitcoin_height));
        tracing::info!(
            id = summary.id,
            bitcoin_height = summary.bitcoin_height,
            reserve_sats = summary.reserve_sats,
            supply_sats = summary.supply_sats,
            ratio_ppm = ?summary.ratio_ppm,
            "reserve attestation stored"
        );
        Ok(AttestTick::Made(Box::new(summary)))
    }

    fn refused(&self, refusal: AttestRefusal) -> AttestTick {
        for (who, code) in &refusal.codes {
            metrics::counter!("ubtc_attestation_refusals_total", "code" => code.clone())
                .increment(1);
            tracing::warn!(who = %who, code = %code, "attestation refused");
        }
        metrics::counter!("ubtc_attestations_total", "outcome" => "refused").increment(1);
        tracing::warn!(detail = %refusal.detail, "no attestation made; the last one stands");
        AttestTick::Refused(refusal)
    }

    /// The proposal at `tip` with the registry chain it names (its last version), or a
    /// refusal of the attester's own (no registry, or the tip moved while the UTXO sets
    /// were read, so they are not all at `tip`).
    async fn propose(
        &self,
        tip: &BlockStamp,
        now: Timestamp,
    ) -> Result<Result<(AttestationContent, Vec<RegistryVersion>), AttestRefusal>, PipelineError>
    {
        let own = |code: &str, detail: String| {
            Ok(Err(AttestRefusal {
                codes: vec![("attester".into(), code.into())],
                detail,
            }))
        };
        let chain = self.store.list_registry_versions().await?;
        let Some(registry) = chain.last() else {
            return own("no_registry", "no reserve registry is published".into());
        };
        let mut reserves = Vec::with_capacity(registry.reserves.len());
        for r in &registry.reserves {
            let utxos = self.bitcoin.address_utxos(&r.address).await?;
            let status = match r.status.as_str() {
                "active" => ReserveStatus::Active,
                _ => ReserveStatus::Retired,
            };
            // A retired reserve is attested while it still holds coins.
            if status == ReserveStatus::Retired && utxos.is_empty() {
                continue;
            }
            reserves.push(AttestedReserve {
                address: r.address.clone(),
                descriptor: r.descriptor.clone(),
                status,
                utxos,
            });
        }
        let after = self.bitcoin.tip().await?;
        if &after != tip {
            return own(
                "tip_moved",
                format!(
                    "the Bitcoin tip moved from {} to {} while the UTXO sets were read",
                    tip.height, after.height
                ),
            );
        }
        let mut supply = Vec::with_capacity(self.supplies.len());
        for source in &self.supplies {
            let e = source.supply_at(None).await?;
            supply.push(AttestedSupply {
                chain: e.chain,
                token: e.token,
                block_number: e.block_number,
                block_hash: e.block_hash,
                supply: e.supply,
            });
        }
        let audit_head = match self.store.list_audit(None, 1).await?.pop() {
            Some(e) => e.hash,
            None => ubtc_store::audit::AUDIT_GENESIS_HASH.to_owned(),
        };
        let content = AttestationContent {
            network: registry.network,
            bitcoin_block: AttestedBlock {
                height: tip.height,
                hash: tip.hash.clone(),
            },
            reserves,
            supply,
            registry: RegistryRef {
                version: registry.version,
                fingerprint: registry.fingerprint(),
            },
            audit_head,
            created_at: now,
        };
        Ok(Ok((content, chain)))
    }

    /// Marks each recent attestation whose block hash is no longer the best chain's at
    /// its height. A height above the tip (the chain got shorter) counts as reorged.
    async fn mark_reorged(&self, now: Timestamp) -> Result<(), PipelineError> {
        let recent = self
            .store
            .list_attestations(None, self.config.reorg_check_depth)
            .await?;
        let tip = self.bitcoin.tip().await?;
        for a in recent.iter().filter(|a| a.reorged_at.is_none()) {
            let gone = if a.bitcoin_height > tip.height {
                true
            } else {
                self.bitcoin.block_hash(a.bitcoin_height).await? != a.bitcoin_hash
            };
            if gone && self.store.mark_attestation_reorged(a.id, now).await? {
                metrics::counter!("ubtc_attestations_reorged_total").increment(1);
                tracing::warn!(
                    id = a.id,
                    bitcoin_height = a.bitcoin_height,
                    "attested Bitcoin block was reorganised away"
                );
                let mut last = self.last();
                if last.as_ref().is_some_and(|l| l.height >= a.bitcoin_height) {
                    // Attest again soon: the latest proven figures are gone.
                    *last = None;
                }
            }
        }
        Ok(())
    }
}
