//! Assembling the proof bundle of a signed validation.

use ubtc_core::bundle::{
    BitcoinNetwork, PaymentInfo, ProofBundle, ReserveFigures, BUNDLE_FORMAT, BUNDLE_VERSION,
    BUNDLE_VERSION_LEGACY,
};
use ubtc_core::registry::RegistryVersion;
use ubtc_core::{Statement, Timestamp};
use ubtc_store::{ReserveSnapshot, ValidationRecord};

use crate::signer::SignedStatement;

/// The figures of `snapshot` as a bundle shows them. `as_of` is the oldest time the
/// snapshot records: its supply entries' block times, or when it was taken (the time
/// its Bitcoin tip was first seen is not stored, and is no later than that).
pub fn reserve_figures(snapshot: &ReserveSnapshot) -> ReserveFigures {
    let as_of = snapshot
        .supply
        .iter()
        .map(|e| e.as_of)
        .fold(snapshot.taken_at, Timestamp::min);
    ReserveFigures {
        bitcoin_height: snapshot.bitcoin_height,
        bitcoin_block_hash: snapshot.bitcoin_block_hash.clone(),
        reserve_sats: snapshot.reserve_sats,
        supply_sats: snapshot.supply_sats,
        ratio_ppm: snapshot.ratio_ppm,
        healthy: snapshot.healthy,
        stale: snapshot.stale,
        as_of,
    }
}

/// What was published when a statement was signed, for its bundle.
#[derive(Clone, Copy, Debug)]
pub struct Published<'a> {
    /// The latest reserve snapshot; its supply entries and figures go into the bundle
    /// (none before the first snapshot).
    pub snapshot: Option<&'a ReserveSnapshot>,
    /// The published registry versions, oldest first. Before the first one is
    /// published the bundle is written as version 1 (no registry), which verifiers
    /// report as unpinned: there is nothing to pin yet.
    pub registry: &'a [RegistryVersion],
}

pub fn build_bundle(
    record: &ValidationRecord,
    statement: &Statement,
    signed: SignedStatement,
    network: BitcoinNetwork,
    native_unit: &str,
    published: Published<'_>,
    now: Timestamp,
) -> ProofBundle {
    let Published { snapshot, registry } = published;
    ProofBundle {
        format: BUNDLE_FORMAT.to_owned(),
        version: if registry.is_empty() {
            BUNDLE_VERSION_LEGACY
        } else {
            BUNDLE_VERSION
        },
        network,
        statement: statement.clone(),
        statement_text: statement.text(),
        payment: PaymentInfo {
            amount_base_units: record.amount_base_units,
            unit: native_unit.to_owned(),
            block_number: record.block.number,
            block_hash: record.block.hash.clone(),
        },
        reserves: signed.reserves,
        proof_of_funds: signed.proof_of_funds,
        supply: snapshot.map(|s| s.supply.clone()).unwrap_or_default(),
        reserve_figures: snapshot.map(reserve_figures),
        approvals: signed.approvals,
        created_at: now,
        registry: registry.to_vec(),
    }
}
