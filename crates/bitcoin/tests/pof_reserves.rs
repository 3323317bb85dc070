//! Security review F1: a proof of funds counts only UTXOs paying to verified reserve
//! scripts, never anyone-can-spend or foreign outputs, and no more than 21M BTC.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod review_common;

use review_common::*;
use ubtc_bitcoin::bundle::verify_bundle;
use ubtc_bitcoin::{bip322, pof};

#[test]
fn honest_pof_over_reserve_utxos_is_valid() {
    let k = key();
    let text = statement_text();
    let extra = vec![
        reserve_input(&k, "c3", 0, 70_000_000, 0),
        reserve_input(&k, "d4", 2, 30_000_000, 0),
    ];
    let utxos = utxos_of(&extra);
    let sig = build_pof(&k, text.as_bytes(), 0, extra);
    let r = verify_bundle(&bundle_with_pof(&k, &sig, &utxos));
    assert!(r.is_valid(), "{r}");
    assert_eq!(r.proven_sats, 100_000_000);
    assert!(r.proof_of_funds.as_ref().unwrap().valid);
}

/// F1: an anyone-can-spend P2WSH(OP_1) input with a made-up 21M BTC amount.
#[test]
fn pof_with_anyone_can_spend_input_is_refused() {
    let k = key();
    let text = statement_text();
    let extra = vec![acs_input(2_100_000_000_000_000)];
    let utxos = utxos_of(&extra);
    let sig = build_pof(&k, text.as_bytes(), 0, extra);
    let r = verify_bundle(&bundle_with_pof(&k, &sig, &utxos));
    assert!(!r.is_valid(), "{r}");
    assert_eq!(r.proven_sats, 0);
    let p = r.proof_of_funds.as_ref().unwrap();
    assert!(!p.valid);
    assert!(
        p.error
            .as_deref()
            .unwrap()
            .contains("not the script of a verified reserve"),
        "{r}"
    );
}

/// F1: a reserve UTXO next to a foreign one is refused as a whole.
#[test]
fn pof_mixing_reserve_and_foreign_inputs_is_refused() {
    let k = key();
    let text = statement_text();
    let extra = vec![reserve_input(&k, "c3", 0, 70_000_000, 0), acs_input(5)];
    let utxos = utxos_of(&extra);
    let sig = build_pof(&k, text.as_bytes(), 0, extra);
    let r = verify_bundle(&bundle_with_pof(&k, &sig, &utxos));
    assert!(!r.is_valid(), "{r}");
    assert_eq!(r.proven_sats, 0);
}

/// F1: the proof of funds' address must be a reserve whose own signature verified.
#[test]
fn pof_address_must_be_a_verified_reserve() {
    let k = key();
    let text = statement_text();
    let extra = vec![reserve_input(&k, "c3", 0, 70_000_000, 0)];
    let utxos = utxos_of(&extra);
    let sig = build_pof(&k, text.as_bytes(), 0, extra);
    let mut b = bundle_with_pof(&k, &sig, &utxos);
    b.reserves[0].signature = bip322::sign_simple(&k, &wpkh_address(&k), b"other").unwrap();
    let r = verify_bundle(&b);
    assert!(!r.is_valid());
    assert_eq!(r.proven_sats, 0);
    let p = r.proof_of_funds.as_ref().unwrap();
    assert!(
        p.error.as_deref().unwrap().contains("verified reserve"),
        "{r}"
    );
}

/// F1: no input, and no total, may exceed the 21 million BTC supply.
#[test]
fn pof_amounts_above_max_money_are_refused() {
    let k = key();
    let addr = wpkh_address(&k);
    let sig = build_pof(&k, b"m", 0, vec![acs_input(2_100_000_000_000_001)]);
    let e = pof::verify_pof_claimed(&addr, b"m", &sig).unwrap_err();
    assert!(e.to_string().contains("more than 21 million BTC"), "{e}");

    let sig = build_pof(
        &k,
        b"m",
        0,
        vec![
            reserve_input(&k, "c3", 0, 2_000_000_000_000_000, 0),
            reserve_input(&k, "d4", 0, 2_000_000_000_000_000, 0),
        ],
    );
    let e = pof::verify_pof_claimed(&addr, b"m", &sig).unwrap_err();
    assert!(e.to_string().contains("more than 21 million BTC"), "{e}");
}
