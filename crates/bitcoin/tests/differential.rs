//! Differential check against the crates.io `bip322` crate: over mutations of valid
//! signatures, nothing we accept may be refused by it (we are meant to be the
//! stricter of the two).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::str::FromStr;

use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::base64::Engine as _;
use bitcoin::Address;
use serde_json::Value;
use ubtc_bitcoin::bip322;

fn theirs(address: &str, message: &str, sig: &str) -> bool {
    let r = if let Some(s) = sig.strip_prefix("ful") {
        ::bip322::verify_full_encoded(address, message, s)
    } else if sig.starts_with("pof") {
        ::bip322::verify_pof_encoded(address, message, sig)
    } else {
        ::bip322::verify_simple_encoded(address, message, sig.strip_prefix("smp").unwrap_or(sig))
    };
    matches!(r, Ok(::bip322::Verification::Valid { .. }))
}

#[test]
fn we_accept_nothing_the_bip322_crate_refuses() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/bip322-generated-test-vectors.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let (mut checked, mut both, mut only_theirs) = (0, 0, 0);
    for section in ["simple", "full", "proof_of_funds"] {
        for case in v[section].as_array().unwrap() {
            let address_str = case["address"].as_str().unwrap();
            let address = Address::from_str(address_str).unwrap().assume_checked();
            let message = case["message"].as_str().unwrap();
            for sig in case["bip322_signatures"].as_array().unwrap() {
                let sig = sig.as_str().unwrap();
                let (prefix, b64) = sig.split_at(3);
                let bytes = BASE64.decode(b64).unwrap();
                let rounds = if section == "proof_of_funds" { 400 } else { 60 };
                for _ in 0..rounds {
                    let mut m = bytes.clone();
                    let i = (next() as usize) % m.len();
                    m[i] ^= 1 << (next() % 8);
                    let mutated = format!("{prefix}{}", BASE64.encode(&m));
                    let ours = bip322::verify(&address, message.as_bytes(), &mutated).is_ok();
                    let other = theirs(address_str, message, &mutated);
                    assert!(
                        !ours || other,
                        "we accept a mutation the bip322 crate refuses: {section} {address_str} byte {i}"
                    );
                    checked += 1;
                    both += usize::from(ours && other);
                    only_theirs += usize::from(other && !ours);
                }
            }
        }
    }
    assert!(checked > 500);
    eprintln!(
        "{checked} mutations: {both} accepted by both, {only_theirs} only by the bip322 crate"
    );
}
