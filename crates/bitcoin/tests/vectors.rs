//! The BIP-322 and BIP-137 test vectors, read from `tests/data` (copies of
//! `../shared/vectors`).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::str::FromStr;

use bitcoin::{Address, PrivateKey};
use serde_json::Value;
use ubtc_bitcoin::bip322::{self, Format, ToSignParams};
use ubtc_bitcoin::{bip137, pof};

fn data(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("vector file is JSON")
}

fn addr(s: &str) -> Address {
    Address::from_str(s)
        .expect("vector address")
        .assume_checked()
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("field {k} in {v}"))
}

#[test]
fn repo_copy_matches_shared_vectors() {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors");
    if !shared.exists() {
        // A fresh clone without the shared folder: the repo copy is the reference.
        return;
    }
    for (repo, shared_rel) in [
        (
            "bip322-basic-test-vectors.json",
            "bip322/bip322-basic-test-vectors.json",
        ),
        (
            "bip322-generated-test-vectors.json",
            "bip322/bip322-generated-test-vectors.json",
        ),
        ("legacy-vectors.json", "legacy-vectors.json"),
    ] {
        let a = std::fs::read(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("tests/data")
                .join(repo),
        )
        .unwrap();
        let b = std::fs::read(shared.join(shared_rel)).unwrap();
        assert_eq!(a, b, "{repo} differs from the shared copy");
    }
}

#[test]
fn tx_hashes() {
    let v = data("bip322-basic-test-vectors.json");
    for case in v["tx_hashes"].as_array().unwrap() {
        let a = addr(s(case, "address"));
        let msg = s(case, "message").as_bytes();
        assert_eq!(
            hex::encode(bip322::message_hash(msg)),
            s(case, "message_hash")
        );
        let spend = bip322::to_spend(&a.script_pubkey(), msg);
        assert_eq!(
            spend.compute_txid().to_string(),
            s(case, "to_spend_tx_hash")
        );
        let sign = bip322::to_sign(spend.compute_txid(), ToSignParams::default());
        assert_eq!(sign.compute_txid().to_string(), s(case, "to_sign_tx_hash"));
    }
}

fn check_valid(file: &str, section: &str, format: Format) -> usize {
    let v = data(file);
    let mut n = 0;
    for case in v[section].as_array().unwrap() {
        let a = addr(s(case, "address"));
        let msg = s(case, "message").as_bytes();
        for sig in case["bip322_signatures"].as_array().unwrap() {
            let sig = sig.as_str().unwrap();
            let got = bip322::verify(&a, msg, sig)
                .unwrap_or_else(|e| panic!("{section} {} {}: {e}", s(case, "type"), a));
            assert_eq!(got.format, format, "{section} {}", s(case, "type"));
            if let Some(lt) = case.get("lock_time").and_then(Value::as_u64) {
                assert_eq!(u64::from(got.lock_time), lt);
                assert_eq!(u64::from(got.sequence), case["sequence"].as_u64().unwrap());
            }
            // A different message must fail.
            let mut other = msg.to_vec();
            other.push(b'!');
            assert!(
                bip322::verify(&a, &other, sig).is_err(),
                "{section} {} tampered",
                s(case, "type")
            );
            n += 1;
        }
    }
    n
}

#[test]
fn simple_vectors_verify() {
    assert_eq!(
        check_valid("bip322-basic-test-vectors.json", "simple", Format::Simple),
        6
    );
    assert_eq!(
        check_valid(
            "bip322-generated-test-vectors.json",
            "simple",
            Format::Simple
        ),
        4
    );
}

#[test]
fn full_vectors_verify() {
    assert_eq!(
        check_valid("bip322-generated-test-vectors.json", "full", Format::Full),
        10
    );
}

#[test]
fn pof_vectors_verify_with_claimed_utxos() {
    assert_eq!(
        check_valid(
            "bip322-generated-test-vectors.json",
            "proof_of_funds",
            Format::ProofOfFunds
        ),
        3
    );
    let v = data("bip322-generated-test-vectors.json");
    for case in v["proof_of_funds"].as_array().unwrap() {
        let a = addr(s(case, "address"));
        let msg = s(case, "message").as_bytes();
        let sig = case["bip322_signatures"][0].as_str().unwrap();
        let claimed = pof::verify_pof_claimed(&a, msg, sig).unwrap();
        assert!(!claimed.inputs.is_empty());
        // Strict mode against exactly the claimed UTXOs passes ...
        let strict = pof::verify_pof(&a, msg, sig, &claimed.inputs).unwrap();
        assert_eq!(strict.total_sats, claimed.total_sats);
        // ... and fails with one missing, one extra, or a changed amount.
        let fewer = &claimed.inputs[1..];
        let e = pof::verify_pof(&a, msg, sig, fewer).unwrap_err();
        assert!(e.to_string().contains("not in the UTXO list"), "{e}");
        let mut more = claimed.inputs.clone();
        more.push(ubtc_core::bundle::Utxo {
            txid: "11".repeat(32),
            vout: 7,
            amount_sats: 1,
            script_pubkey_hex: "51".into(),
        });
        let e = pof::verify_pof(&a, msg, sig, &more).unwrap_err();
        assert!(e.to_string().contains("not spent by the proof"), "{e}");
        let mut changed = claimed.inputs.clone();
        changed[0].amount_sats += 1;
        let e = pof::verify_pof(&a, msg, sig, &changed).unwrap_err();
        assert!(e.to_string().contains("the list says"), "{e}");
    }
}

#[test]
fn error_vectors_fail_with_their_message() {
    let mut n = 0;
    for file in [
        "bip322-basic-test-vectors.json",
        "bip322-generated-test-vectors.json",
    ] {
        let v = data(file);
        for case in v["error"].as_array().unwrap() {
            let a = addr(s(case, "address"));
            let msg = s(case, "message").as_bytes();
            let err =
                bip322::verify(&a, msg, s(case, "signature")).expect_err(s(case, "description"));
            let substr = s(case, "error_substr");
            assert!(
                err.to_string().contains(substr),
                "{}: error {err:?} does not contain {substr:?}",
                s(case, "description")
            );
            n += 1;
        }
    }
    assert_eq!(n, 36);
}

#[test]
fn single_key_vectors_sign_and_verify() {
    // Our signer, given the vectors' keys, produces signatures that verify; for
    // P2WPKH (RFC 6979, deterministic) they equal one of the published ones.
    let mut exact = 0;
    for file in [
        "bip322-basic-test-vectors.json",
        "bip322-generated-test-vectors.json",
    ] {
        let v = data(file);
        for case in v["simple"].as_array().unwrap() {
            let ty = s(case, "type");
            if ty != "p2wpkh" && ty != "p2tr" {
                continue;
            }
            let key = PrivateKey::from_wif(case["private_keys"][0].as_str().unwrap()).unwrap();
            let a = addr(s(case, "address"));
            let msg = s(case, "message").as_bytes();
            let sig = bip322::sign_simple(&key.inner, &a, msg).unwrap();
            assert!(sig.starts_with("smp"));
            bip322::verify(&a, msg, &sig).unwrap();
            if case["bip322_signatures"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x == &Value::from(sig.clone()))
            {
                exact += 1;
            }
        }
        for case in v
            .get("full")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let ty = s(case, "type");
            if !["p2wpkh", "p2tr", "p2pkh", "p2sh-p2wpkh"].contains(&ty) {
                continue;
            }
            let key = PrivateKey::from_wif(case["private_keys"][0].as_str().unwrap()).unwrap();
            let a = addr(s(case, "address"));
            let msg = s(case, "message").as_bytes();
            let params = ToSignParams {
                version: case["tx_version"].as_i64().unwrap() as i32,
                lock_time: case["lock_time"].as_u64().unwrap() as u32,
                sequence: case["sequence"].as_u64().unwrap() as u32,
            };
            let sig = bip322::sign_full(&key.inner, &a, msg, params).unwrap();
            let got = bip322::verify(&a, msg, &sig).unwrap();
            assert_eq!(
                (got.lock_time, got.sequence),
                (params.lock_time, params.sequence)
            );
            if ty != "p2tr" && case["bip322_signatures"][0] == sig.as_str() {
                exact += 1;
            }
        }
    }
    assert!(exact >= 3, "only {exact} byte-identical signatures");
}

#[test]
fn legacy_vectors() {
    let v = data("legacy-vectors.json");
    for case in v["vectors"].as_array().unwrap() {
        let name = s(case, "name");
        let a = addr(s(case, "address"));
        let msg = s(case, "message").as_bytes();
        let sig = s(case, "signature");
        let strict = bip322::verify(&a, msg, sig);
        let loose = bip137::verify(&a, msg, sig);
        match s(case, "expect") {
            "valid" => {
                assert_eq!(strict.unwrap().format, Format::Legacy, "{name}");
                assert!(loose.unwrap().header_matches_address, "{name}");
            }
            "invalid" => {
                assert!(strict.is_err(), "{name}");
                assert!(loose.is_err(), "{name}");
            }
            "bip137" => {
                // BIP-322 2.0 restricts legacy to P2PKH; BIP-137 itself accepts.
                assert!(strict.is_err(), "{name}");
                assert!(loose.unwrap().header_matches_address, "{name}");
            }
            "either" => {
                // Our documented choice: bip137::verify accepts the Electrum form and
                // flags it; the strict BIP-322 path refuses it.
                assert!(strict.is_err(), "{name}");
                assert!(!loose.unwrap().header_matches_address, "{name}");
            }
            other => panic!("unknown expectation {other}"),
        }
    }
}

#[test]
fn bip137_sign_roundtrip_and_segwit_headers() {
    let key = PrivateKey::from_wif("L3VFeEujGtevx9w18HD1fhRbCH67Az2dpCymeRE1SoPK6XQtaN2k").unwrap();
    let v = data("legacy-vectors.json");
    let case = &v["vectors"][2];
    let a = addr(s(case, "address"));
    let sig = bip137::sign(&key.inner, b"Hello World", true);
    // RFC 6979: identical to the bitcoinjs-message signature.
    assert_eq!(sig, s(case, "signature"));
    assert!(bip322::verify(&a, b"Hello World", &sig).is_ok());
    assert!(bip322::verify(&a, b"Hello World.", &sig).is_err());
    for (i, kind) in [
        (3, bip137::HeaderKind::P2shP2wpkh),
        (4, bip137::HeaderKind::P2wpkh),
    ] {
        let sig = bip137::sign_with_header(&key.inner, b"Hello World", kind);
        assert_eq!(sig, s(&v["vectors"][i], "signature"));
    }
}
