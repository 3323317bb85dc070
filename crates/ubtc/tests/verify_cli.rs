//! `ubtc verify` through the real binary: a forged reserve against a pinned registry,
//! the same forgery unpinned, a registry that is not one, and a closed stdout.
//! Bundles are built with the real signing code.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::{Command, Output, Stdio};

use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{CompressedPublicKey, Network};
use ubtc_bitcoin::multisig::{Form, SigningRequest, SortedMulti, Wrapping};
use ubtc_bitcoin::registry::{self as reg, ProposedReserve};
use ubtc_core::bundle::{
    BitcoinNetwork, PaymentInfo, ProofBundle, ProofOfFunds, ReserveSignature, Utxo, BUNDLE_FORMAT,
    BUNDLE_VERSION,
};
use ubtc_core::payment::{Payer, TxHash};
use ubtc_core::registry::RegistryVersion;
use ubtc_core::{BlockStamp, ChainId, PaymentRef, Statement, StatementMessage, Timestamp};

fn secret(b: u8) -> SecretKey {
    SecretKey::from_slice(&[b; 32]).unwrap()
}

fn cpk(k: &SecretKey) -> CompressedPublicKey {
    CompressedPublicKey(k.public_key(&Secp256k1::new()))
}

fn statement() -> Statement {
    Statement::new(
        PaymentRef {
            chain: ChainId::parse("dev").unwrap(),
            tx_hash: TxHash::parse(&format!("0x{:064x}", 7)).unwrap(),
            index: 0,
        },
        Payer::parse("0xpayer").unwrap(),
        StatementMessage::parse(b"is it all there?").unwrap(),
        BlockStamp::new(100, &"11".repeat(32)).unwrap(),
        uuid::Uuid::now_v7(),
    )
}

fn sign(policy: &SortedMulti, text: &str, utxos: &[Utxo], signers: &[&SecretKey]) -> String {
    let request = if utxos.is_empty() {
        SigningRequest::new(
            policy,
            Wrapping::Wsh,
            Network::Regtest,
            text.as_bytes(),
            Form::Simple,
        )
    } else {
        SigningRequest::proof_of_funds(
            policy,
            Wrapping::Wsh,
            Network::Regtest,
            text.as_bytes(),
            utxos,
        )
    }
    .unwrap()
    .prepare()
    .unwrap();
    let partials: Vec<_> = signers
        .iter()
        .map(|k| {
            request
                .verify_partial(request.sign_partial(k).unwrap())
                .unwrap()
        })
        .collect();
    request.combine(&partials).unwrap()
}

/// `policy`'s signature and a proof of funds over one invented UTXO of `sats`.
fn bundle(
    policy: &SortedMulti,
    signers: &[&SecretKey],
    sats: u64,
    registry: Vec<RegistryVersion>,
) -> ProofBundle {
    let st = statement();
    let text = st.text();
    let address = policy.address(Network::Regtest, Wrapping::Wsh).to_string();
    let utxos = vec![Utxo {
        txid: "ee".repeat(32),
        vout: 0,
        amount_sats: sats,
        script_pubkey_hex: hex::encode(policy.script_pubkey(Wrapping::Wsh).as_bytes()),
    }];
    ProofBundle {
        format: BUNDLE_FORMAT.into(),
        version: BUNDLE_VERSION,
        network: BitcoinNetwork::Regtest,
        statement_text: text.clone(),
        payment: PaymentInfo {
            amount_base_units: 1000,
            unit: "wei".into(),
            block_number: 1,
            block_hash: "00".into(),
        },
        reserves: vec![ReserveSignature {
            address: address.clone(),
            descriptor: policy.descriptor(Wrapping::Wsh),
            signature: sign(policy, &text, &[], signers),
        }],
        proof_of_funds: Some(ProofOfFunds {
            address,
            signature: sign(policy, &text, &utxos, signers),
            utxos,
            bitcoin_height: 100,
        }),
        supply: Vec::new(),
        reserve_figures: None,
        approvals: Vec::new(),
        created_at: Timestamp::now(),
        registry,
        statement: st,
    }
}

fn registry_v1(guardians: &[SecretKey], policy: &SortedMulti) -> RegistryVersion {
    let v = reg::propose(
        None,
        BitcoinNetwork::Regtest,
        guardians.iter().map(|k| cpk(k).to_string()).collect(),
        2,
        &[ProposedReserve {
            address: policy.address(Network::Regtest, Wrapping::Wsh).to_string(),
            descriptor: policy.descriptor(Wrapping::Wsh),
            active: true,
        }],
    )
    .unwrap();
    let mut signed = v.clone();
    for k in &guardians[..2] {
        reg::add_signature(&mut signed, reg::sign(&v, k));
    }
    signed
}

fn verify(args: &[&str], bundle: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("verify")
        .args(args)
        .arg(bundle)
        .output()
        .unwrap()
}

#[test]
fn the_forged_reserve_is_invalid_against_a_pinned_registry_and_unpinned_without() {
    let dir = tempfile::tempdir().unwrap();
    let guardians = [secret(1), secret(2), secret(3)];
    let attacker = secret(9);
    let real = SortedMulti::new(2, guardians.iter().map(cpk).collect()).unwrap();
    let genuine = registry_v1(&guardians, &real);
    let registry_file = dir.path().join("registry.json");
    std::fs::write(&registry_file, genuine.to_json_pretty()).unwrap();

    // wsh(sortedmulti(1, G1, G2, G3, ATTACKER)), signed by the attacker alone, over an
    // invented 20,000,000 BTC UTXO, carrying a registry the attacker signed.
    let mut keys: Vec<CompressedPublicKey> = guardians.iter().map(cpk).collect();
    keys.push(cpk(&attacker));
    let forged = SortedMulti::new(1, keys).unwrap();
    let own = {
        let v = reg::propose(
            None,
            BitcoinNetwork::Regtest,
            vec![cpk(&attacker).to_string()],
            1,
            &[ProposedReserve {
                address: forged.address(Network::Regtest, Wrapping::Wsh).to_string(),
                descriptor: forged.descriptor(Wrapping::Wsh),
                active: true,
            }],
        )
        .unwrap();
        let mut s = v.clone();
        reg::add_signature(&mut s, reg::sign(&v, &attacker));
        s
    };
    let path = dir.path().join("forged.json");
    std::fs::write(
        &path,
        bundle(
            &forged,
            &[&attacker],
            2_000_000_000_000_000,
            vec![own.clone()],
        )
        .to_json_pretty(),
    )
    .unwrap();

    let pinned = verify(&["--registry", registry_file.to_str().unwrap()], &path);
    let text = String::from_utf8_lossy(&pinned.stdout);
    assert_eq!(pinned.status.code(), Some(1), "{text}");
    assert!(text.starts_with("proof bundle: INVALID"), "{text}");
    let by_fp = verify(&["--registry-fingerprint", &genuine.fingerprint()], &path);
    assert_eq!(by_fp.status.code(), Some(1));

    let unpinned = verify(&[], &path);
    let text = String::from_utf8_lossy(&unpinned.stdout);
    assert!(text.starts_with("proof bundle: UNPINNED"), "{text}");
    assert!(text.contains("NOTHING PINS THE REGISTRY"), "{text}");
    assert!(text.contains(&own.fingerprint()), "{text}");
    assert!(text.contains("1-of-4 keys:"), "{text}");
    let json = verify(&["--json"], &path);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["pinned"], false);
    assert_eq!(report["verdict"], "unpinned");
    assert_eq!(report["reserves"][0]["threshold"], 1);

    // The genuine 2-of-3 reserve, signed by two guardians: valid when pinned.
    let good = dir.path().join("good.json");
    std::fs::write(
        &good,
        bundle(
            &real,
            &[&guardians[0], &guardians[2]],
            100_000_000,
            vec![genuine.clone()],
        )
        .to_json_pretty(),
    )
    .unwrap();
    let out = verify(&["--registry", registry_file.to_str().unwrap()], &good);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.starts_with("proof bundle: VALID"), "{text}");

    // A registry file that is not one, or a malformed fingerprint: unreadable (2).
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{\"format\":\"nope\"}").unwrap();
    assert_eq!(
        verify(&["--registry", junk.to_str().unwrap()], &good)
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        verify(&["--registry-fingerprint", "abc"], &good)
            .status
            .code(),
        Some(2)
    );
}

#[test]
fn a_closed_stdout_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let guardians = [secret(1), secret(2), secret(3)];
    let real = SortedMulti::new(2, guardians.iter().map(cpk).collect()).unwrap();
    let genuine = registry_v1(&guardians, &real);
    let path = dir.path().join("good.json");
    std::fs::write(
        &path,
        bundle(&real, &[&guardians[0], &guardians[1]], 1, vec![genuine]).to_json_pretty(),
    )
    .unwrap();
    // `ubtc verify FILE | head -1`, with the reader gone before the writer writes.
    for args in [vec![], vec!["--json"]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ubtc"))
            .arg("verify")
            .args(&args)
            .arg(&path)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    // Through a real shell pipe as well.
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "set -o pipefail; {} verify {} | head -1",
            env!("CARGO_BIN_EXE_ubtc"),
            path.display()
        ))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}
