//! Security review F2: time locks of a proof of funds are reported, and make a
//! bundle invalid (reserve proofs must be spendable now).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod review_common;

use review_common::*;
use ubtc_bitcoin::bundle::verify_bundle;
use ubtc_bitcoin::pof;

/// F2: a proof with a non-zero nLockTime is reported, and invalid in a bundle.
#[test]
fn time_locked_pof_is_reported_and_invalid_in_a_bundle() {
    let k = key();
    let text = statement_text();
    let t = 4_102_444_800u32; // 2100-01-01
    let extra = vec![reserve_input(&k, "c3", 0, 70_000_000, 0)];
    let utxos = utxos_of(&extra);
    let sig = build_pof(&k, text.as_bytes(), t, extra);
    let funds = pof::verify_pof(&wpkh_address(&k), text.as_bytes(), &sig, &utxos).unwrap();
    assert_eq!(funds.lock_time, t);
    assert_eq!(funds.sequences, vec![0, 0]);
    assert!(funds.is_time_locked());
    let r = verify_bundle(&bundle_with_pof(&k, &sig, &utxos));
    assert!(!r.is_valid(), "{r}");
    assert_eq!(r.proven_sats, 0);
    let p = r.proof_of_funds.as_ref().unwrap();
    assert_eq!(p.lock_time, Some(t));
    assert!(p.error.as_deref().unwrap().contains("time lock"), "{r}");
}

/// F2: a relative lock (nSequence) on a reserve input, likewise.
#[test]
fn pof_with_input_sequence_is_invalid_in_a_bundle() {
    let k = key();
    let text = statement_text();
    let extra = vec![reserve_input(&k, "c3", 0, 70_000_000, 52_560)];
    let utxos = utxos_of(&extra);
    let sig = build_pof(&k, text.as_bytes(), 0, extra);
    let funds = pof::verify_pof(&wpkh_address(&k), text.as_bytes(), &sig, &utxos).unwrap();
    assert_eq!(funds.sequences, vec![0, 52_560]);
    let r = verify_bundle(&bundle_with_pof(&k, &sig, &utxos));
    assert!(!r.is_valid(), "{r}");
    let p = r.proof_of_funds.as_ref().unwrap();
    assert_eq!(p.sequences, vec![0, 52_560]);
    assert!(p.error.as_deref().unwrap().contains("time lock"), "{r}");
}

/// F2: an honest proof reports no time lock.
#[test]
fn honest_pof_reports_no_time_lock() {
    let k = key();
    let text = statement_text();
    let extra = vec![reserve_input(&k, "c3", 0, 70_000_000, 0)];
    let utxos = utxos_of(&extra);
    let sig = build_pof(&k, text.as_bytes(), 0, extra);
    let r = verify_bundle(&bundle_with_pof(&k, &sig, &utxos));
    assert!(r.is_valid(), "{r}");
    let p = r.proof_of_funds.as_ref().unwrap();
    assert_eq!(p.lock_time, Some(0));
    assert_eq!(p.sequences, vec![0, 0]);
}
