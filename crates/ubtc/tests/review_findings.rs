//! Adversarial review (h/review), through the real binary: `ubtc verify --registry`
//! on a reserve attestation. Fails today; `#[ignore]`d so the suite stays green.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::process::Command;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{CompressedPublicKey, Network};
use ubtc_bitcoin::attestation::{approve, PreparedPof};
use ubtc_bitcoin::descriptor::{self, Descriptor};
use ubtc_bitcoin::multisig::{SortedMulti, Wrapping};
use ubtc_bitcoin::registry::{self as reg, ProposedReserve};
use ubtc_core::attestation::{
    AttestationContent, AttestedBlock, AttestedReserve, AttestedSupply, RegistryRef,
    ReserveAttestation, ReserveStatus,
};
use ubtc_core::bundle::{BitcoinNetwork, Utxo};
use ubtc_core::registry::RegistryVersion;
use ubtc_core::{ChainId, Timestamp, TokenAmount};

fn key(b: u8) -> SecretKey {
    SecretKey::from_slice(&[b; 32]).unwrap()
}

fn cpk(k: &SecretKey) -> CompressedPublicKey {
    CompressedPublicKey(k.public_key(&Secp256k1::new()))
}

/// The registry the holder pins: one 2-of-3 reserve of the three guardians, signed
/// by two of them.
fn real_v1() -> RegistryVersion {
    let g = [key(0x31), key(0x32), key(0x33)];
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
    let attacker = key(0x66);
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

/// `verify_bundle` (main.rs) reads the pin, then hands attestations to
/// `verify_attestation::dispatch`, which never receives it: the pin is dropped, the
/// document's own key approves itself, and the exit code is 0.
#[test]
#[ignore = "demonstrates: `ubtc verify --registry FILE` ignores the pin for attestations; a forger's 20,000,000 BTC attestation exits 0"]
fn a_pinned_registry_applies_to_attestations() {
    let dir = tempfile::tempdir().unwrap();
    let registry = real_v1();
    let reg_path = dir.path().join("registry.json");
    std::fs::write(&reg_path, registry.to_json_pretty()).unwrap();
    let att_path = dir.path().join("attestation.json");
    std::fs::write(&att_path, self_made_attestation(&registry).to_json_pretty()).unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("verify")
        .arg(&att_path)
        .arg("--registry")
        .arg(&reg_path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a reserve outside the pinned registry, approved by a non-guardian, verifies:\n{stdout}"
    );

    // The same with a fingerprint pin.
    let out = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("verify")
        .arg(&att_path)
        .arg("--registry-fingerprint")
        .arg(registry.fingerprint())
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
