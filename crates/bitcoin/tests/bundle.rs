//! Proof bundles end to end: build one with every reserve type (signing with the
//! crate's own API, multisig through split signing), verify it, tamper with it, and
//! check that `docs/proof-bundle.md` shows exactly the bundle this test produces.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;

use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Address, CompressedPublicKey, Network};
use serde_json::json;
use ubtc_bitcoin::bip322::{sign_simple, Format};
use ubtc_bitcoin::bundle::{verify_bundle, verify_message_report, UnreadableInput};
use ubtc_bitcoin::descriptor;
use ubtc_bitcoin::multisig::{combine, sign_partial, Form, SigningRequest, SortedMulti, Wrapping};
use ubtc_bitcoin::{bip137, bip322};
use ubtc_core::bundle::Utxo;
use ubtc_core::ProofBundle;

fn key(b: u8) -> SecretKey {
    SecretKey::from_slice(&[b; 32]).unwrap()
}

fn cpk(k: &SecretKey) -> CompressedPublicKey {
    CompressedPublicKey(k.public_key(&Secp256k1::new()))
}

/// The example bundle: deterministic (RFC 6979 ECDSA, BIP-340 without aux randomness).
fn example() -> ProofBundle {
    let guardians = [key(0x11), key(0x12), key(0x13)];
    let policy = SortedMulti::new(2, guardians.iter().map(cpk).collect()).unwrap();
    let multisig_address = policy.address(Network::Bitcoin, Wrapping::Wsh);
    let multisig_spk = hex::encode(multisig_address.script_pubkey().as_bytes());
    let utxos = vec![
        Utxo {
            txid: "a1".repeat(32),
            vout: 0,
            amount_sats: 150_000_000,
            script_pubkey_hex: multisig_spk.clone(),
        },
        Utxo {
            txid: "b2".repeat(32),
            vout: 3,
            amount_sats: 50_000_000,
            script_pubkey_hex: multisig_spk,
        },
    ];
    let single = key(0x21);
    let wpkh = Address::p2wpkh(&cpk(&single), Network::Bitcoin);
    let legacy = key(0x22);
    let pkh = Address::p2pkh(cpk(&legacy), Network::Bitcoin);
    let taproot = key(0x23);
    let (xonly, _) = taproot.x_only_public_key(&Secp256k1::new());
    let tr = Address::p2tr(&Secp256k1::new(), xonly, None, Network::Bitcoin);

    let mut value = json!({
        "format": "ubtc-proof-bundle",
        "version": 1,
        "network": "bitcoin",
        "statement": {
            "version": 1,
            "payment": {
                "chain": "ethereum",
                "tx_hash": "0x5c1b2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0be1",
                "index": 0
            },
            "payer": "0x8a5f3c1e2d4b6a7988776655443322110099aa41",
            "message": "hello from alice",
            "bitcoin_block": {
                "height": 871234,
                "hash": "00000000000000000001a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7"
            },
            "request_id": "0190f3e4-5a6b-7c8d-9e0f-1a2b3c4d5e6f"
        },
        "statement_text": "",
        "payment": {
            "amount_base_units": "2000000000000000",
            "unit": "wei",
            "block_number": 20512345,
            "block_hash": "0x7d3e9a1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7"
        },
        "reserves": [],
        "supply": [{
            "chain": "ethereum",
            "token": "0x1111111111111111111111111111111111111111",
            "block_number": 20512345,
            "block_hash": "0x7d3e9a1b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7",
            "supply": {"base_units": "150000000", "decimals": 8},
            "as_of": "2026-11-23T12:00:00Z"
        }],
        "reserve_figures": {
            "bitcoin_height": 871234,
            "bitcoin_block_hash": "00000000000000000001a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7",
            "reserve_sats": 200000000,
            "supply_sats": 150000000,
            "ratio_ppm": 1333333,
            "healthy": true,
            "stale": false,
            "as_of": "2026-11-23T12:00:00Z"
        },
        "approvals": [],
        "created_at": "2026-11-23T12:00:05Z"
    });
    let bundle: ProofBundle = serde_json::from_value(value.clone()).unwrap();
    let text = bundle.statement.text();
    let digest = bundle.statement.digest_hex();
    let msg = text.as_bytes();

    // Multisig: each guardian signs alone; the coordinator combines.
    let req =
        SigningRequest::new(&policy, Wrapping::Wsh, Network::Bitcoin, msg, Form::Simple).unwrap();
    let partials = [
        sign_partial(&req, &guardians[0]).unwrap(),
        sign_partial(&req, &guardians[2]).unwrap(),
    ];
    let multisig_sig = combine(&req, &partials).unwrap();
    let pof_req =
        SigningRequest::proof_of_funds(&policy, Wrapping::Wsh, Network::Bitcoin, msg, &utxos)
            .unwrap();
    let pof_partials = [
        sign_partial(&pof_req, &guardians[1]).unwrap(),
        sign_partial(&pof_req, &guardians[0]).unwrap(),
    ];
    let pof_sig = combine(&pof_req, &pof_partials).unwrap();

    let d = |s: String| descriptor::with_checksum(&s).unwrap();
    value["statement_text"] = json!(text);
    value["reserves"] = json!([
        {
            "address": multisig_address.to_string(),
            "descriptor": policy.descriptor_wsh(),
            "signature": multisig_sig,
        },
        {
            "address": wpkh.to_string(),
            "descriptor": d(format!("wpkh({})", cpk(&single))),
            "signature": sign_simple(&single, &wpkh, msg).unwrap(),
        },
        {
            "address": tr.to_string(),
            "descriptor": d(format!("tr({xonly})")),
            "signature": sign_simple(&taproot, &tr, msg).unwrap(),
        },
        {
            "address": pkh.to_string(),
            "descriptor": d(format!("pkh({})", cpk(&legacy))),
            "signature": bip137::sign(&legacy, msg, true),
        },
    ]);
    value["proof_of_funds"] = json!({
        "address": multisig_address.to_string(),
        "signature": pof_sig,
        "utxos": utxos,
        "bitcoin_height": 871234,
    });
    value["approvals"] = json!(guardians
        .iter()
        .map(|g| json!({
            "guardian_key": cpk(g).to_string(),
            "decision": "approved",
            "statement_digest": digest,
            "at": "2026-11-23T12:00:03Z",
        }))
        .collect::<Vec<_>>());
    let json = serde_json::to_vec(&value).unwrap();
    ProofBundle::from_json(&json).unwrap()
}

#[test]
fn example_bundle_verifies() {
    let bundle = example();
    let report = verify_bundle(&bundle);
    assert!(report.is_valid(), "{report}");
    assert_eq!(report.proven_sats, 200_000_000);
    let formats: Vec<_> = report.reserves.iter().map(|r| r.format.unwrap()).collect();
    assert_eq!(
        formats,
        [
            Format::Simple,
            Format::Simple,
            Format::Simple,
            Format::Legacy
        ]
    );
    let text = report.to_string();
    assert!(text.starts_with("proof bundle: UNPINNED"), "{text}");
    assert!(text.contains("total proven: 2.00000000 BTC"), "{text}");
    let json: serde_json::Value = serde_json::to_value(&report).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["reserves"].as_array().unwrap().len(), 4);
}

#[test]
fn tampered_bundles_fail() {
    let good = example();

    let mut b = good.clone();
    b.statement.message = ubtc_core::StatementMessage::parse(b"hello from mallory").unwrap();
    let r = verify_bundle(&b);
    assert!(!r.is_valid());
    assert!(r.errors[0].contains("statement_text differs"), "{r}");
    // Every signature is over the rebuilt text, so they fail too.
    assert!(r.reserves.iter().all(|x| !x.valid));

    let mut b = good.clone();
    b.statement_text.push('x');
    assert!(!verify_bundle(&b).is_valid());

    let mut b = good.clone();
    b.reserves[1].signature = b.reserves[2].signature.clone();
    let r = verify_bundle(&b);
    assert!(!r.is_valid());
    assert!(!r.reserves[1].valid && r.reserves[0].valid);
    assert!(r.to_string().contains("INVALID  bc1q"), "{r}");

    let mut b = good.clone();
    b.reserves[1].descriptor = b.reserves[3].descriptor.clone();
    let r = verify_bundle(&b);
    assert_eq!(
        r.reserves[1].error.as_deref(),
        Some("descriptor does not describe this address")
    );

    let mut b = good.clone();
    b.proof_of_funds.as_mut().unwrap().utxos[0].amount_sats += 1;
    let r = verify_bundle(&b);
    assert!(!r.is_valid());
    assert_eq!(r.proven_sats, 0);

    let mut b = good.clone();
    b.proof_of_funds.as_mut().unwrap().utxos.pop();
    assert!(!verify_bundle(&b).is_valid());

    // Claimed reserves above what the proof covers: still valid, but said.
    let mut b = good.clone();
    b.reserve_figures.as_mut().unwrap().reserve_sats = ubtc_core::Sats(300_000_000);
    let r = verify_bundle(&b);
    assert!(r.is_valid());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("claim 3.00000000 BTC")),
        "{r}"
    );

    let mut b = good.clone();
    b.network = ubtc_core::bundle::BitcoinNetwork::Testnet;
    let r = verify_bundle(&b);
    assert!(!r.is_valid());
    assert!(r.reserves[0]
        .error
        .as_deref()
        .unwrap()
        .contains("not valid on testnet"));
}

#[test]
fn verify_message_outcomes() {
    let k = key(0x21);
    let a = Address::p2wpkh(&cpk(&k), Network::Bitcoin);
    let sig = sign_simple(&k, &a, b"hi").unwrap();
    let ok = verify_message_report(&a.to_string(), None, b"hi", &sig).unwrap();
    assert!(ok.is_valid());
    assert!(ok
        .to_string()
        .starts_with("valid: BIP-322 simple signature by bc1q"));
    let bad = verify_message_report(&a.to_string(), None, b"ho", &sig).unwrap();
    assert!(!bad.is_valid());
    assert!(
        bad.to_string().starts_with("invalid: invalid signature"),
        "{bad}"
    );
    assert!(matches!(
        verify_message_report("bc1qnotanaddress", None, b"hi", &sig),
        Err(UnreadableInput::Address(_))
    ));
    assert!(matches!(
        verify_message_report(&a.to_string(), Some(Network::Testnet), b"hi", &sig),
        Err(UnreadableInput::Network { .. })
    ));
    // Segwit BIP-137 headers and the Electrum form are accepted here, with a note.
    for kind in [
        bip137::HeaderKind::P2wpkh,
        bip137::HeaderKind::P2pkhCompressed,
    ] {
        let legacy = bip137::sign_with_header(&k, b"hi", kind);
        assert!(bip322::verify(&a, b"hi", &legacy).is_err());
        let r = verify_message_report(&a.to_string(), None, b"hi", &legacy).unwrap();
        assert!(r.is_valid() && r.note.is_some(), "{r}");
        assert!(
            !verify_message_report(&a.to_string(), None, b"hi!", &legacy)
                .unwrap()
                .is_valid()
        );
    }
}

#[test]
fn docs_show_the_example_bundle() {
    let doc_path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/proof-bundle.md");
    let example = example().to_json_pretty();
    let doc = std::fs::read_to_string(&doc_path).expect("docs/proof-bundle.md exists");
    let begin = "<!-- example:begin -->\n```json\n";
    let end = "\n```\n<!-- example:end -->";
    let (head, rest) = doc.split_once(begin).expect("example begin marker");
    let (current, tail) = rest.split_once(end).expect("example end marker");
    if current != example {
        if std::env::var_os("UBTC_BLESS").is_some() {
            std::fs::write(&doc_path, format!("{head}{begin}{example}{end}{tail}")).unwrap();
        } else {
            panic!(
                "docs/proof-bundle.md's example is not what the code produces; \
                 rerun with UBTC_BLESS=1 to update it"
            );
        }
    }
    // And the documented example itself verifies.
    let parsed = ProofBundle::from_json(example.as_bytes()).unwrap();
    assert!(verify_bundle(&parsed).is_valid());
}
