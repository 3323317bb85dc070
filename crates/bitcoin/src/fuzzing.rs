//! Entry points for the fuzz targets in `fuzz/` (cargo-fuzz layout). They live here,
//! in the library, so that `cargo test` runs the same code over a seed corpus
//! (`tests/fuzz_smoke.rs`) on stable Rust; the fuzzer only adds the input generator.
//!
//! Each function must return normally for every input: a panic is a bug.

use std::str::FromStr;
use std::sync::LazyLock;

use bitcoin::Address;

use crate::{bip137, bip322, bundle, pof};

/// One address of each script type we verify, so every code path gets fuzzed.
static ADDRESSES: LazyLock<Vec<Address>> = LazyLock::new(|| {
    [
        "bc1q9vza2e8x573nczrlzms0wvx3gsqjx7vavgkx0l",
        "bc1pcquvhrqv0q68t4m0hfq6tpn006qrskyc7yrqnp2uyrf2emg3wynsdjyk38",
        "bc1qw6g0rgrpuxvj4edkwtvzpmt3c5m08mhp8nuk3mrk4erufvlczp5ssdscjd",
        "13vU5PUSuArDXJdCWZvUFEbgJ2wcmtSJWn",
        "32Utb7Seg6EXq7UesMNJXhQ1gdohYNyzQ9",
        "3Nye4j1GUFqCEBR3do2KEFZAs9oLe8NZ6X",
        "bc1p6vffkx7vcyezrjq7pg9qqdjv7vmtanfhk8ukwsn4syejwmarmhxqp0rw5x",
    ]
    .iter()
    .filter_map(|s| Address::from_str(s).ok().map(|a| a.assume_checked()))
    .collect()
});

/// Signature string parsing and verification. Input: first byte picks the address,
/// second the message length; the rest is message then signature (lossy UTF-8).
pub fn fuzz_signature(data: &[u8]) {
    let (Some(&pick), Some(&mlen)) = (data.first(), data.get(1)) else {
        return;
    };
    let rest = &data[2..];
    let split = usize::from(mlen).min(rest.len());
    let (message, sig) = rest.split_at(split);
    let sig = String::from_utf8_lossy(sig);
    let Some(address) = ADDRESSES.get(usize::from(pick) % ADDRESSES.len().max(1)) else {
        return;
    };
    let _ = bip322::verify(address, message, &sig);
    let _ = bip137::verify(address, message, &sig);
    let _ = bip322::verify_p2sh_p2wpkh_simple_compat(address, message, &sig);
    let _ = bundle::verify_message_report(&address.to_string(), None, message, &sig);
}

/// Proof-of-funds PSBT parsing and verification. Input: raw PSBT bytes.
pub fn fuzz_pof(data: &[u8]) {
    use bitcoin::base64::Engine as _;
    let sig = format!(
        "pof{}",
        bitcoin::base64::engine::general_purpose::STANDARD.encode(data)
    );
    for address in ADDRESSES.iter() {
        let _ = pof::verify_pof_claimed(address, b"", &sig);
        let _ = pof::verify_pof(address, b"", &sig, &[]);
    }
}

/// Bundle JSON parsing and verification. Input: the bundle bytes.
pub fn fuzz_bundle(data: &[u8]) {
    if let Ok(b) = ubtc_core::ProofBundle::from_json(data) {
        let report = bundle::verify_bundle(&b);
        let _ = report.to_string();
        let _ = serde_json::to_string(&report);
    }
}

/// Reserve attestation JSON parsing and offline verification. Input: the document
/// bytes.
pub fn fuzz_attestation(data: &[u8]) {
    if let Ok(att) = ubtc_core::attestation::ReserveAttestation::from_json(data) {
        let report = crate::attestation::verify_attestation(
            &att,
            &crate::attestation::VerifyOptions::default(),
        );
        let _ = report.to_string();
        let _ = serde_json::to_string(&report);
    }
}
