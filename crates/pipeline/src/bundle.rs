//! Assembling the proof bundle of a signed validation.

use ubtc_core::bundle::{BitcoinNetwork, PaymentInfo, ProofBundle, BUNDLE_FORMAT, BUNDLE_VERSION};
use ubtc_core::{Statement, Timestamp};
use ubtc_store::ValidationRecord;

use crate::signer::SignedStatement;

pub fn build_bundle(
    record: &ValidationRecord,
    statement: &Statement,
    signed: SignedStatement,
    network: BitcoinNetwork,
    native_unit: &str,
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
        supply: Vec::new(),
        reserve_figures: None,
        approvals: signed.approvals,
        created_at: now,
    }
}
