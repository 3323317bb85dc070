//! Cross-verification with verifiers written by others (npm `bip322-js` 3.0.0 and
//! `bitcoinjs-message` 2.2.0), through `tools/xverify/verify.js`.
//!
//! Needs `npm ci --prefix tools/xverify` (run from the repository root) once. Without
//! it this test fails on purpose: a cross-check that silently skips checks nothing.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::base64::Engine as _;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Address, CompressedPublicKey, Network, PrivateKey, Transaction};
use serde_json::{json, Value};
use ubtc_bitcoin::bip137;
use ubtc_bitcoin::bip322::{self, Format, ToSignParams};

fn tool_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tools/xverify")
}

fn run(cases: &[Value]) -> Vec<Value> {
    let dir = tool_dir();
    assert!(
        dir.join("node_modules/bip322-js").exists()
            && dir.join("node_modules/bitcoinjs-message").exists(),
        "the JavaScript cross-verifiers are not installed: run `npm ci --prefix tools/xverify` \
         from the repository root (needs Node 20 and the npm registry)"
    );
    let mut child = Command::new("node")
        .arg(dir.join("verify.js"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node (Node.js 20) must be installed to run the cross-verification");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(cases).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "verify.js failed");
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(results.len(), cases.len());
    results
}

fn bare(sig: &str) -> String {
    sig.get(3..).unwrap_or_default().to_string()
}

struct Expect {
    case: Value,
    ok: bool,
    what: String,
}

#[test]
fn javascript_verifiers_agree_with_our_signatures() {
    let secp = Secp256k1::new();
    let messages = [
        "",
        "Hello World",
        "Universal Bitcoin proof of reserves\nversion: 1\nmessage: hi\n",
        "UTF-8: öäü 测试 😄",
    ];
    let mut expect = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let secret = SecretKey::from_slice(&[0x31 + i as u8; 32]).unwrap();
        let other = SecretKey::from_slice(&[0x51 + i as u8; 32]).unwrap();
        let pk = CompressedPublicKey(secret.public_key(&secp));
        let other_pk = CompressedPublicKey(other.public_key(&secp));
        let mut add = |verifier: &str,
                       address: &Address,
                       msg: &str,
                       sig: &str,
                       ok: bool,
                       what: &str| {
            expect.push(Expect {
                case: json!({"verifier": verifier, "address": address.to_string(), "message": msg, "signature": sig}),
                ok,
                what: format!("{what} (message {i})"),
            });
        };
        let tampered = format!("{message}x");

        // P2WPKH simple.
        let a = Address::p2wpkh(&pk, Network::Bitcoin);
        let sig = bare(&bip322::sign_simple(&secret, &a, message.as_bytes()).unwrap());
        add("bip322-js", &a, message, &sig, true, "p2wpkh simple");
        add(
            "bip322-js",
            &a,
            &tampered,
            &sig,
            false,
            "p2wpkh simple, other message",
        );
        add(
            "bip322-js",
            &Address::p2wpkh(&other_pk, Network::Bitcoin),
            message,
            &sig,
            false,
            "p2wpkh simple, other address",
        );

        // P2TR key path simple.
        let (xonly, _) = secret.x_only_public_key(&secp);
        let a = Address::p2tr(&secp, xonly, None, Network::Bitcoin);
        let sig = bare(&bip322::sign_simple(&secret, &a, message.as_bytes()).unwrap());
        add("bip322-js", &a, message, &sig, true, "p2tr simple");
        add(
            "bip322-js",
            &a,
            &tampered,
            &sig,
            false,
            "p2tr simple, other message",
        );

        // P2SH-P2WPKH: we sign the full form; bip322-js reads the witness stack of it
        // (segwit sighashes do not cover the scriptSig, so the witness alone checks).
        let a = Address::p2shwpkh(&pk, Network::Bitcoin);
        let full =
            bip322::sign_full(&secret, &a, message.as_bytes(), ToSignParams::default()).unwrap();
        let tx: Transaction =
            bitcoin::consensus::deserialize(&BASE64.decode(bare(&full)).unwrap()).unwrap();
        let witness = BASE64.encode(bitcoin::consensus::serialize(&tx.input[0].witness));
        add(
            "bip322-js",
            &a,
            message,
            &witness,
            true,
            "p2sh-p2wpkh witness",
        );
        add(
            "bip322-js",
            &a,
            &tampered,
            &witness,
            false,
            "p2sh-p2wpkh witness, other message",
        );

        // P2PKH BIP-137.
        let a = Address::p2pkh(pk, Network::Bitcoin);
        let sig = bip137::sign(&secret, message.as_bytes(), true);
        add("bitcoinjs-message", &a, message, &sig, true, "p2pkh bip137");
        add(
            "bitcoinjs-message",
            &a,
            &tampered,
            &sig,
            false,
            "p2pkh bip137, other message",
        );
        add(
            "bitcoinjs-message",
            &Address::p2pkh(other_pk, Network::Bitcoin),
            message,
            &sig,
            false,
            "p2pkh bip137, other address",
        );
    }
    let cases: Vec<Value> = expect.iter().map(|e| e.case.clone()).collect();
    let results = run(&cases);
    let mut wrong = Vec::new();
    for (e, r) in expect.iter().zip(&results) {
        if r["ok"].as_bool() != Some(e.ok) {
            wrong.push(format!("{}: expected ok={}, got {r}", e.what, e.ok));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn we_verify_signatures_made_by_bip322_js() {
    let secp = Secp256k1::new();
    let mut cases = Vec::new();
    let mut addresses = Vec::new();
    for i in 0..3u8 {
        let secret = SecretKey::from_slice(&[0x71 + i; 32]).unwrap();
        let wif = PrivateKey::new(secret, Network::Bitcoin).to_wif();
        let pk = CompressedPublicKey(secret.public_key(&secp));
        let (xonly, _) = secret.x_only_public_key(&secp);
        for a in [
            Address::p2wpkh(&pk, Network::Bitcoin),
            Address::p2tr(&secp, xonly, None, Network::Bitcoin),
            Address::p2shwpkh(&pk, Network::Bitcoin),
        ] {
            let message = format!("signed by bip322-js #{i}");
            cases.push(json!({"sign": "bip322-js", "wif": wif, "address": a.to_string(), "message": message}));
            addresses.push((a, message));
        }
    }
    let results = run(&cases);
    for (r, (a, message)) in results.iter().zip(&addresses) {
        let sig = r["signature"]
            .as_str()
            .unwrap_or_else(|| panic!("bip322-js did not sign: {r}"));
        if a.script_pubkey().is_p2sh() {
            // bip322-js writes a simple signature for P2SH-P2WPKH, which BIP-322 does
            // not define: strict verification refuses it, the compatibility path and
            // `verify-message` accept it (with a note).
            assert!(bip322::verify(a, message.as_bytes(), sig).is_err());
            bip322::verify_p2sh_p2wpkh_simple_compat(a, message.as_bytes(), sig).unwrap();
            assert!(bip322::verify_p2sh_p2wpkh_simple_compat(a, b"other", sig).is_err());
            let r = ubtc_bitcoin::bundle::verify_message_report(
                &a.to_string(),
                None,
                message.as_bytes(),
                sig,
            )
            .unwrap();
            assert!(r.is_valid() && r.note.is_some(), "{r}");
            continue;
        }
        // Unprefixed = simple (the pre-2026 encoding bip322-js writes).
        let v = bip322::verify(a, message.as_bytes(), sig).unwrap_or_else(|e| panic!("{a}: {e}"));
        assert_eq!(v.format, Format::Simple);
        assert!(bip322::verify(a, b"something else", sig).is_err());
        let prefixed = format!("smp{sig}");
        bip322::verify(a, message.as_bytes(), &prefixed).unwrap();
    }
}
