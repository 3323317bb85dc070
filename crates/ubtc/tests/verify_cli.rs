//! `ubtc verify` through the real binary: a forged reserve against a pinned registry,
//! the same forgery unpinned, a registry that is not one, `--require-pin`, a forged
//! reserve attestation against a pinned registry, and a closed stdout. Bundles and
//! attestations are built with the real signing code.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::{Command, Output, Stdio};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{CompressedPublicKey, Network};
use ubtc_bitcoin::attestation::{approve, PreparedPof};
use ubtc_bitcoin::descriptor::{self, Descriptor};
use ubtc_bitcoin::multisig::{Form, SigningRequest, SortedMulti, Wrapping};
use ubtc_bitcoin::registry::{self as reg, ProposedReserve};
use ubtc_core::attestation::{
    AttestationContent, AttestedBlock, AttestedReserve, AttestedSupply, RegistryRef,
    ReserveAttestation, ReserveStatus,
};
use ubtc_core::bundle::{
    BitcoinNetwork, PaymentInfo, ProofBundle, ProofOfFunds, ReserveSignature, Utxo, BUNDLE_FORMAT,
    BUNDLE_VERSION,
};
use ubtc_core::payment::{Payer, TxHash};
use ubtc_core::registry::RegistryVersion;
use ubtc_core::{
    BlockStamp, ChainId, PaymentRef, Statement, StatementMessage, Timestamp, TokenAmount,
};

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
    // Unpinned exits 0 (the report says UNPINNED); --require-pin makes it a failure.
    assert_eq!(unpinned.status.code(), Some(0));
    assert_eq!(verify(&["--require-pin"], &path).status.code(), Some(1));

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
    // A pinned, valid bundle passes --require-pin.
    let out = verify(
        &[
            "--require-pin",
            "--registry",
            registry_file.to_str().unwrap(),
        ],
        &good,
    );
    assert_eq!(out.status.code(), Some(0));

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

/// The registry the holder pins: one 2-of-3 reserve of the three guardians, signed
/// by two of them.
fn att_registry_v1() -> RegistryVersion {
    let g = [secret(0x31), secret(0x32), secret(0x33)];
    let policy = SortedMulti::new(2, g.iter().map(cpk).collect()).unwrap();
    let mut v = reg::propose(
        None,
        BitcoinNetwork::Bitcoin,
        g.iter().map(|k| cpk(k).to_string()).collect(),
        2,
        &[ProposedReserve {
            address: policy.address(Network::Bitcoin, Wrapping::Wsh).to_string(),
            descriptor: policy.descriptor(Wrapping::Wsh),
            active: true,
        }],
    )
    .unwrap();
    let unsigned = v.clone();
    for k in &g[..2] {
        reg::add_signature(&mut v, reg::sign(&unsigned, k));
    }
    v
}

/// Made with one key that is no guardian's: `wpkh(ATTACKER)` holding an invented
/// 20,000,000 BTC UTXO, the pinned registry's fingerprint in its `registry` field.
fn self_made_attestation(registry: &RegistryVersion) -> ReserveAttestation {
    let attacker = secret(0x66);
    let desc = descriptor::with_checksum(&format!("wpkh({})", cpk(&attacker))).unwrap();
    let parsed = Descriptor::parse(&desc).unwrap();
    let content = AttestationContent {
        network: BitcoinNetwork::Bitcoin,
        bitcoin_block: AttestedBlock {
            height: 871_234,
            hash: "00000000000000000001a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7".into(),
        },
        reserves: vec![AttestedReserve {
            address: parsed.address(Network::Bitcoin).to_string(),
            descriptor: desc,
            status: ReserveStatus::Active,
            utxos: vec![Utxo {
                txid: sha256::Hash::hash(b"invented").to_string(),
                vout: 0,
                amount_sats: 2_000_000_000_000_000,
                script_pubkey_hex: hex::encode(parsed.script_pubkey().as_bytes()),
            }],
        }],
        supply: vec![AttestedSupply {
            chain: ChainId::parse("ethereum").unwrap(),
            token: "0x5fbdb2315678afecb367f032d93f642f64180aa3".into(),
            block_number: 19_000_000,
            block_hash: "0x8d0f7c9e1b2a3d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5".into(),
            supply: TokenAmount::new(1_000_000_000_000_000_000, 18),
        }],
        registry: RegistryRef {
            version: registry.version,
            fingerprint: registry.fingerprint(),
        },
        audit_head: "a1".repeat(32),
        created_at: Timestamp::parse_rfc3339("2026-12-07T19:00:00Z").unwrap(),
    };
    let mut att = ReserveAttestation::unsigned(content).unwrap();
    let prepared = PreparedPof::prepare(&att).unwrap();
    let partials = prepared.check(prepared.sign(&attacker).unwrap()).unwrap();
    att.pof = prepared.combine(&[partials]).unwrap();
    att.approvals = vec![approve(&att, &attacker)];
    att
}

/// The pin applies to attestations: a forger's 20,000,000 BTC attestation naming the
/// real registry exits 1 with `--registry` (its reserve is not in it, its approver is
/// no guardian) and with `--registry-fingerprint` (a fingerprint cannot check an
/// attestation, which carries no chain); unpinned it says UNPINNED, exit 0, and
/// `--require-pin` turns that into exit 1.
#[test]
fn a_pinned_registry_applies_to_attestations_and_require_pin_refuses_unpinned() {
    let dir = tempfile::tempdir().unwrap();
    let registry = att_registry_v1();
    let reg_path = dir.path().join("registry.json");
    std::fs::write(&reg_path, registry.to_json_pretty()).unwrap();
    let att_path = dir.path().join("attestation.json");
    std::fs::write(&att_path, self_made_attestation(&registry).to_json_pretty()).unwrap();

    let out = verify(&["--registry", reg_path.to_str().unwrap()], &att_path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a reserve outside the pinned registry, approved by a non-guardian, must be invalid:\n{stdout}"
    );
    assert!(
        stdout.starts_with("reserve attestation: INVALID"),
        "{stdout}"
    );
    assert!(stdout.contains("reserve_not_in_registry"), "{stdout}");

    // The same with a fingerprint pin.
    let out = verify(
        &["--registry-fingerprint", &registry.fingerprint()],
        &att_path,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("registry_chain_needed"), "{stdout}");

    // Unpinned: exit 0 (documented), but the first line says UNPINNED...
    let out = verify(&[], &att_path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.starts_with("reserve attestation: UNPINNED"),
        "{stdout}"
    );
    let json = verify(&["--json"], &att_path);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["verdict"], "unpinned");
    assert_eq!(report["pinned"], false);
    // ...and a holder who requires a pin gets exit 1.
    assert_eq!(verify(&["--require-pin"], &att_path).status.code(), Some(1));
}
