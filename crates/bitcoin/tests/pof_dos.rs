//! Security review F3: hostile proofs of funds are refused before expensive work.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod review_common;

use review_common::*;
use ubtc_bitcoin::pof;

/// F3: 10 000 inputs sharing one 3.6 MB previous transaction: refused by the
/// non-witness UTXO byte limit before anything is hashed.
#[test]
fn hostile_shared_non_witness_utxo_is_refused_by_size() {
    let k = key();
    let addr = wpkh_address(&k);
    let sig = hostile(&k, b"dos", 10_000, 3_400_000, false);
    let e = pof::verify_pof_claimed(&addr, b"dos", &sig).unwrap_err();
    assert!(e.to_string().contains("non-witness UTXO bytes"), "{e}");
}

/// F3: under the byte limit, the shared transaction is hashed once, not per input
/// (before the fix this took minutes in a debug build).
#[test]
fn shared_non_witness_utxo_is_hashed_once() {
    let k = key();
    let addr = wpkh_address(&k);
    let sig = hostile(&k, b"dos", 10_000, 500_000, false);
    let e = pof::verify_pof_claimed(&addr, b"dos", &sig).unwrap_err();
    // The first check that fails is a script's, not the hashing of 10 000 copies.
    assert!(
        e.to_string().starts_with("invalid signature: input "),
        "{e}"
    );
}

/// F3: the legacy-input limit applies before any previous transaction is hashed.
#[test]
fn legacy_input_limit_applies_first() {
    let k = key();
    let addr = wpkh_address(&k);
    let sig = hostile(&k, b"dos", 300, 500_000, true);
    let e = pof::verify_pof_claimed(&addr, b"dos", &sig).unwrap_err();
    assert!(e.to_string().contains("with legacy spends"), "{e}");
}

/// F3: against a UTXO list, the outpoints are matched before any hashing or script.
#[test]
fn verify_pof_matches_outpoints_first() {
    let k = key();
    let addr = wpkh_address(&k);
    let sig = hostile(&k, b"dos", 10_000, 500_000, false);
    let e = pof::verify_pof(&addr, b"dos", &sig, &[]).unwrap_err();
    assert!(e.to_string().contains("not in the UTXO list"), "{e}");
}
