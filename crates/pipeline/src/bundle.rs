//! Assembling the proof bundle of a signed validation.

use ubtc_core::bundle::{
    BitcoinNetwork, PaymentInfo, ProofBundle, ReserveFigures, BUNDLE_FORMAT, BUNDLE_VERSION,
};
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

/// `snapshot`: the latest reserve snapshot when the statement was signed; its supply
/// entries and figures go into the bundle (none before the first snapshot).
pub fn build_bundle(
    record: &ValidationRecord,
    statement: &Statement,
    signed: SignedStatement,
    network: BitcoinNetwork,
    native_unit: &str,
    snapshot: Option<&ReserveSnapshot>,
    now: Timestamp,
) -> ProofBundle {
    ProofBundle {
        format: BUNDLE_FORMAT.to_owned(),
        version: BUNDLE_VERSION,
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
    }
}
