//! Reserve attestations: building the mixed-kind proof of funds with split M-of-N
//! signing, verifying it offline, and the verifier refusing every lie an attacker
//! with the document (and at most one guardian key) can tell.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;
use std::str::FromStr;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{CompressedPublicKey, Network};
use ubtc_bitcoin::attestation::{
    approve, verify_attestation, verify_attestation_pinned, AttestError, AttestationReport,
    GuardianSet, PreparedPof, UtxoState, VerifyOptions,
};
use ubtc_bitcoin::bundle::RegistryPin;
use ubtc_bitcoin::descriptor::{self, Descriptor};
use ubtc_bitcoin::multisig::{SortedMulti, Wrapping};
use ubtc_bitcoin::registry::{self as reg, ProposedReserve};
use ubtc_core::attestation::{
    AttestationContent, AttestedBlock, AttestedReserve, AttestedSupply, RegistryRef,
    ReserveAttestation, ReserveStatus, ATTESTATION_MAX_UTXOS,
};
use ubtc_core::bundle::{BitcoinNetwork, Utxo};
use ubtc_core::registry::RegistryVersion;
use ubtc_core::{ChainId, Timestamp, TokenAmount};

fn secret(b: u8) -> SecretKey {
    SecretKey::from_slice(&[b; 32]).unwrap()
}

fn pubkey(s: &SecretKey) -> CompressedPublicKey {
    CompressedPublicKey(s.public_key(&Secp256k1::new()))
}

/// The three guardians of the 2-of-3 reserves, and the key of a single-key reserve.
struct Keys {
    guardians: [SecretKey; 3],
    single: SecretKey,
}

fn keys() -> Keys {
    Keys {
        guardians: [secret(0x11), secret(0x22), secret(0x33)],
        single: secret(0x44),
    }
}

fn multi_descriptor(k: &Keys, wrapping: Wrapping) -> String {
    SortedMulti::new(2, k.guardians.iter().map(pubkey).collect())
        .unwrap()
        .descriptor(wrapping)
}

fn single_descriptor(k: &Keys) -> String {
    descriptor::with_checksum(&format!("wpkh({})", pubkey(&k.single))).unwrap()
}

fn reserve(descriptor: String, status: ReserveStatus, amounts: &[(u8, u64)]) -> AttestedReserve {
    let parsed = Descriptor::parse(&descriptor).unwrap();
    let script = hex::encode(parsed.script_pubkey().as_bytes());
    AttestedReserve {
        address: parsed.address(Network::Bitcoin).to_string(),
        descriptor,
        status,
        utxos: amounts
            .iter()
            .map(|(seed, amount_sats)| Utxo {
                txid: sha256::Hash::hash(&[*seed]).to_string(),
                vout: u32::from(*seed % 3),
                amount_sats: *amount_sats,
                script_pubkey_hex: script.clone(),
            })
            .collect(),
    }
}

/// Three reserves of three kinds: an active 2-of-3 `wsh(sortedmulti)`, an active
/// single-key `wpkh`, and a retired `sh(wsh(sortedmulti))` that still holds coins.
fn content(k: &Keys) -> AttestationContent {
    AttestationContent {
        network: BitcoinNetwork::Bitcoin,
        bitcoin_block: AttestedBlock {
            height: 871_234,
            hash: "00000000000000000001a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7".into(),
        },
        reserves: vec![
            reserve(
                multi_descriptor(k, Wrapping::Wsh),
                ReserveStatus::Active,
                &[(1, 150_000_000), (2, 50_000_000)],
            ),
            reserve(
                single_descriptor(k),
                ReserveStatus::Active,
                &[(3, 25_000_000)],
            ),
            reserve(
                multi_descriptor(k, Wrapping::ShWsh),
                ReserveStatus::Retired,
                &[(4, 10_000)],
            ),
        ],
        supply: vec![
            AttestedSupply {
                chain: ChainId::parse("ethereum").unwrap(),
                token: "0x5fbdb2315678afecb367f032d93f642f64180aa3".into(),
                block_number: 19_000_000,
                block_hash: "0x8d0f7c9e1b2a3d4c5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5"
                    .into(),
                supply: TokenAmount::new(1_500_000_000_000_000_000, 18),
            },
            AttestedSupply {
                chain: ChainId::parse("solana").unwrap(),
                token: "So1anaMintUbtc1111111111111111111111111111".into(),
                block_number: 300_000_000,
                block_hash: "5eykt4UsFv8P8NJdTREpY1vzqKqZKvdpKuc147dw2N9d".into(),
                supply: TokenAmount::new(50_000_000, 8),
            },
        ],
        registry: RegistryRef {
            version: 3,
            fingerprint: "7f".repeat(32),
        },
        audit_head: "a1".repeat(32),
        created_at: Timestamp::parse_rfc3339("2026-12-07T19:00:00Z").unwrap(),
    }
}

/// What the coordinator and the guardians do, each guardian with its own key only:
/// every signer prepares the proof from the document itself, signs its inputs; the
/// coordinator checks each answer and combines; two guardians approve.
fn make(
    content: AttestationContent,
    signers: &[SecretKey],
    approvers: &[SecretKey],
) -> ReserveAttestation {
    let mut att = ReserveAttestation::unsigned(content).unwrap();
    let coordinator = PreparedPof::prepare(&att).unwrap();
    let verified: Vec<_> = signers
        .iter()
        .map(|s| {
            // Each signer rebuilds the proof on its own side.
            let own = PreparedPof::prepare(&att).unwrap();
            let partials = own.sign(s).unwrap();
            // Over the wire and back.
            let json = serde_json::to_string(&partials).unwrap();
            coordinator
                .check(serde_json::from_str(&json).unwrap())
                .unwrap()
        })
        .collect();
    att.pof = coordinator.combine(&verified).unwrap();
    att.approvals = approvers.iter().map(|s| approve(&att, s)).collect();
    att
}

fn valid_attestation() -> ReserveAttestation {
    let k = keys();
    make(
        content(&k),
        &[k.guardians[0], k.guardians[2], k.single],
        &[k.guardians[0], k.guardians[2]],
    )
}

fn codes(att: &ReserveAttestation) -> Vec<&'static str> {
    verify_attestation(att, &VerifyOptions::default())
        .errors
        .iter()
        .map(|e| e.code)
        .collect()
}

/// What an attacker editing the document does to keep it self-consistent: recompute
/// the totals and the text from the edited fields.
fn relabel(att: &mut ReserveAttestation) {
    att.totals = att.computed_totals().unwrap();
    att.text = att.rebuild_text();
}

#[test]
fn mixed_attestation_verifies_offline() {
    let att = valid_attestation();
    let report = verify_attestation(&att, &VerifyOptions::default());
    assert!(report.valid, "{report}");
    assert_eq!(report.utxos.len(), 4);
    assert!(report.utxos.iter().all(|u| u.verdict == UtxoState::Proven));
    assert_eq!(report.totals.proven_reserve_sats, 225_010_000);
    // 1.5 tokens of 18 decimals + 0.5 of 8 decimals = 2 BTC of supply.
    assert_eq!(report.totals.computed_supply_sats, 200_000_000);
    assert_eq!(report.totals.computed_ratio_ppm, Some(1_125_050));
    assert_eq!(report.approvals_valid, 2);
    assert_eq!(report.approvals_needed, 2);
    assert_eq!(report.reserves[0].kind, Some("wsh(sortedmulti)"));
    assert_eq!(report.reserves[1].kind, Some("wpkh"));
    assert_eq!(report.reserves[2].kind, Some("sh(wsh(sortedmulti))"));
    assert!(report.supply.iter().all(|s| matches!(
        s.verdict,
        ubtc_bitcoin::attestation::SupplyState::ClaimedSigned
    )));
    // The document survives JSON.
    let back = ReserveAttestation::from_json(att.to_json_pretty().as_bytes()).unwrap();
    assert_eq!(back, att);
    let text = report.to_string();
    // Nothing pinned: consistent, but only the document vouches for its reserves.
    assert!(text.starts_with("reserve attestation: UNPINNED"), "{text}");
    assert_eq!(report.verdict, "unpinned");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["valid"], true);
    assert_eq!(json["utxos"][0]["verdict"], "proven");
    assert_eq!(json["supply"][0]["verdict"], "claimed_signed");
}

#[test]
fn any_two_of_three_guardians_make_the_same_valid_proof_shape() {
    let k = keys();
    for pair in [[0, 1], [0, 2], [1, 2]] {
        let signers = [k.guardians[pair[0]], k.guardians[pair[1]], k.single];
        let approvers = [k.guardians[pair[0]], k.guardians[pair[1]]];
        let att = make(content(&k), &signers, &approvers);
        let report = verify_attestation(&att, &VerifyOptions::default());
        assert!(report.valid, "{pair:?}: {report}");
    }
}

#[test]
fn the_repository_interpreter_and_the_bip322_crate_accept_the_proof() {
    let att = valid_attestation();
    let challenge = att.challenge().unwrap().address.clone();
    let all: Vec<Utxo> = att.reserves.iter().flat_map(|r| r.utxos.clone()).collect();
    // Our generic script interpreter, which knows nothing of attestations.
    let address = bitcoin::Address::from_str(&challenge)
        .unwrap()
        .assume_checked();
    let funds =
        ubtc_bitcoin::pof::verify_pof(&address, att.text.as_bytes(), &att.pof, &all).unwrap();
    assert_eq!(funds.total_sats, att.totals.reserve_sats);
    assert!(!funds.is_time_locked());
    // A verifier written by others (crates.io `bip322`, which reads the `pof` prefix):
    // it checks every input's script and signature, mixed kinds included.
    let theirs = ::bip322::verify_pof_encoded(&challenge, &att.text, &att.pof).unwrap();
    assert!(
        matches!(theirs, ::bip322::Verification::Valid { .. }),
        "{theirs:?}"
    );
    // And it refuses the proof for another text.
    let other = att
        .text
        .replace("reserve-sats: 225010000", "reserve-sats: 925010000");
    assert!(!matches!(
        ::bip322::verify_pof_encoded(&challenge, &other, &att.pof),
        Ok(::bip322::Verification::Valid { .. })
    ));
}

#[test]
fn an_amount_raised_by_one_satoshi_is_refused() {
    let mut att = valid_attestation();
    att.reserves[0].utxos[0].amount_sats += 1;
    // Left as it is, the text and total no longer match.
    let c = codes(&att);
    assert!(
        c.contains(&"text_mismatch") && c.contains(&"reserve_total_mismatch"),
        "{c:?}"
    );
    // Made self-consistent, the signatures no longer cover the text.
    relabel(&mut att);
    let report = verify_attestation(&att, &VerifyOptions::default());
    assert!(!report.valid);
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.code == "pof_message_mismatch"),
        "{report}"
    );
    assert!(report
        .utxos
        .iter()
        .all(|u| u.verdict == UtxoState::NotProven));
    assert_eq!(report.totals.proven_reserve_sats, 0);
}

#[test]
fn an_amount_changed_inside_the_proof_is_refused_per_utxo() {
    // The attacker rebuilds the proof's PSBT with a larger witness UTXO amount for one
    // input, keeping the text: that input's claim no longer matches the list.
    use bitcoin::base64::Engine as _;
    let att = valid_attestation();
    let engine = bitcoin::base64::engine::general_purpose::STANDARD;
    let mut psbt =
        bitcoin::psbt::Psbt::deserialize(&engine.decode(&att.pof[3..]).unwrap()).unwrap();
    let w = psbt.inputs[2].witness_utxo.as_mut().unwrap();
    w.value = bitcoin::Amount::from_sat(w.value.to_sat() + 1);
    let mut forged = att.clone();
    forged.pof = format!("pof{}", engine.encode(psbt.serialize()));
    let report = verify_attestation(&forged, &VerifyOptions::default());
    assert!(!report.valid);
    let not_proven: Vec<_> = report
        .utxos
        .iter()
        .filter(|u| u.verdict == UtxoState::NotProven)
        .collect();
    assert_eq!(not_proven.len(), 1, "{report}");
    assert!(report.errors.iter().any(|e| e.code == "pof_invalid"));
    assert!(report
        .errors
        .iter()
        .any(|e| e.code == "reserve_total_mismatch"));
}

#[test]
fn a_utxo_added_or_removed_is_refused() {
    let k = keys();
    let base = valid_attestation();

    let mut added = base.clone();
    let mut extra = added.reserves[0].utxos[0].clone();
    extra.txid = sha256::Hash::hash(b"invented").to_string();
    added.reserves[0].utxos.push(extra);
    relabel(&mut added);
    let c = codes(&added);
    assert!(c.contains(&"pof_message_mismatch"), "{c:?}");

    let mut removed = base.clone();
    removed.reserves[0].utxos.pop();
    relabel(&mut removed);
    assert!(codes(&removed).contains(&"pof_message_mismatch"));

    // The same removal with the proof re-made by a signer whose text lists fewer
    // UTXOs but whose proof is spliced from the honest one: the transaction differs.
    let mut c2 = content(&k);
    c2.reserves[0].utxos.pop();
    let fewer = make(
        c2,
        &[k.guardians[0], k.guardians[1], k.single],
        &[k.guardians[0], k.guardians[1]],
    );
    let mut spliced = fewer.clone();
    spliced.pof = base.pof.clone();
    let c = codes(&spliced);
    assert!(c.contains(&"pof_message_mismatch"), "{c:?}");
}

#[test]
fn a_lowered_supply_or_an_edited_ratio_is_refused() {
    let mut att = valid_attestation();
    att.supply[0].supply.base_units /= 2;
    assert!(codes(&att).contains(&"supply_total_mismatch"));
    relabel(&mut att);
    assert!(codes(&att).contains(&"pof_message_mismatch"));
    // Approvals sign the old text's digest.
    assert!(codes(&att).contains(&"approval_invalid"));

    let mut att = valid_attestation();
    att.totals.ratio_ppm = Some(9_999_999);
    let c = codes(&att);
    assert!(
        c.contains(&"ratio_mismatch") && c.contains(&"text_mismatch"),
        "{c:?}"
    );
}

#[test]
fn a_utxo_paying_another_script_is_refused() {
    let mut att = valid_attestation();
    // A UTXO of the wpkh reserve listed under the multisig reserve.
    let moved = att.reserves[1].utxos.remove(0);
    att.reserves[0].utxos.push(moved);
    relabel(&mut att);
    let c = codes(&att);
    assert!(c.contains(&"utxo_script_not_reserve"), "{c:?}");
    let err = PreparedPof::prepare(&att).unwrap_err();
    assert!(matches!(err, AttestError::ScriptNotReserve { .. }), "{err}");
}

#[test]
fn an_address_that_is_not_the_descriptors_is_refused() {
    let mut att = valid_attestation();
    att.reserves[2].address = att.reserves[1].address.clone();
    assert!(codes(&att).contains(&"address_mismatch"));
}

#[test]
fn one_guardian_key_cannot_make_a_proof() {
    let k = keys();
    let att = ReserveAttestation::unsigned(content(&k)).unwrap();
    let p = PreparedPof::prepare(&att).unwrap();
    let one = p.check(p.sign(&k.guardians[0]).unwrap()).unwrap();
    let single = p.check(p.sign(&k.single).unwrap()).unwrap();
    let err = p
        .combine(&[one.clone(), single.clone(), one.clone()])
        .unwrap_err();
    assert!(
        matches!(err, AttestError::NotEnoughSignatures { needed: 2, .. }),
        "{err}"
    );

    // Hand-made witness with the one guardian's signature twice: CHECKMULTISIG uses
    // each key once, and the verifier says so for every multisig input.
    let other = p.check(p.sign(&k.guardians[1]).unwrap()).unwrap();
    let mut forged = att.clone();
    let honest = p.combine(&[one.clone(), other, single]).unwrap();
    use bitcoin::base64::Engine as _;
    let engine = bitcoin::base64::engine::general_purpose::STANDARD;
    let mut psbt = bitcoin::psbt::Psbt::deserialize(&engine.decode(&honest[3..]).unwrap()).unwrap();
    for (i, pin) in psbt.inputs.iter_mut().enumerate() {
        let w = pin.final_script_witness.as_ref().unwrap();
        if w.len() == 4 {
            let sig = one.partials().signatures[i].clone().unwrap();
            let items: Vec<Vec<u8>> = vec![vec![], sig.clone(), sig, w.last().unwrap().to_vec()];
            pin.final_script_witness = Some(bitcoin::Witness::from_slice(&items));
        }
    }
    forged.pof = format!("pof{}", engine.encode(psbt.serialize()));
    forged.approvals = vec![
        approve(&forged, &k.guardians[0]),
        approve(&forged, &k.guardians[1]),
    ];
    let report = verify_attestation(&forged, &VerifyOptions::default());
    assert!(!report.valid);
    assert!(
        report.errors.iter().any(|e| e.code == "pof_invalid"),
        "{report}"
    );
}

#[test]
fn partial_signature_checks() {
    let k = keys();
    let att = ReserveAttestation::unsigned(content(&k)).unwrap();
    let p = PreparedPof::prepare(&att).unwrap();
    // A key in no reserve.
    assert!(matches!(
        p.sign(&secret(0x55)),
        Err(AttestError::KeyNotInAnyReserve(_))
    ));
    let good = p.sign(&k.guardians[1]).unwrap();
    // A missing signature.
    let mut missing = good.clone();
    let first = missing.signatures.iter().position(Option::is_some).unwrap();
    missing.signatures[first] = None;
    assert!(matches!(
        p.check(missing),
        Err(AttestError::BadPartial { .. })
    ));
    // A signature for an input whose reserve does not hold the key (the wpkh input).
    let mut extra = good.clone();
    let foreign = extra.signatures.iter().position(Option::is_none).unwrap();
    extra.signatures[foreign] = extra.signatures[first].clone();
    assert!(matches!(
        p.check(extra),
        Err(AttestError::BadPartial { .. })
    ));
    // Signatures moved to other inputs.
    let mut swapped = good.clone();
    let signed: Vec<usize> = (0..swapped.signatures.len())
        .filter(|i| swapped.signatures[*i].is_some())
        .collect();
    swapped.signatures.swap(signed[0], signed[1]);
    assert!(matches!(
        p.check(swapped),
        Err(AttestError::BadPartial { .. })
    ));
    // Another guardian's key claimed for these signatures.
    let mut relabelled = good.clone();
    relabelled.pubkey = pubkey(&k.guardians[2]);
    assert!(matches!(
        p.check(relabelled),
        Err(AttestError::BadPartial { .. })
    ));
    // Partials for another attestation are checked again when combined, and fail.
    let mut c2 = content(&k);
    c2.audit_head = "b2".repeat(32);
    let other = PreparedPof::prepare(&ReserveAttestation::unsigned(c2).unwrap()).unwrap();
    let stale = other.check(other.sign(&k.guardians[0]).unwrap()).unwrap();
    let fresh = p.check(good).unwrap();
    assert!(matches!(
        p.combine(&[stale, fresh]),
        Err(AttestError::BadPartial { .. })
    ));
}

#[test]
fn approvals_are_checked_against_the_guardian_keys() {
    let k = keys();
    let att = valid_attestation();
    let guardians = GuardianSet {
        keys: k.guardians.iter().map(|s| pubkey(s).0).collect(),
        threshold: 2,
    };
    let pinned = VerifyOptions {
        guardians: Some(guardians.clone()),
    };
    assert!(verify_attestation(&att, &pinned).valid);

    // An approval replayed from another attestation does not verify.
    let mut c2 = content(&k);
    c2.bitcoin_block.height += 1;
    let other = ReserveAttestation::unsigned(c2).unwrap();
    let mut replayed = att.clone();
    replayed.approvals[1] = approve(&other, &k.guardians[2]);
    let report = verify_attestation(&replayed, &pinned);
    assert!(report.errors.iter().any(|e| e.code == "approval_invalid"));
    assert!(report
        .errors
        .iter()
        .any(|e| e.code == "approvals_insufficient"));

    // One approval is not enough.
    let mut one = att.clone();
    one.approvals.truncate(1);
    assert!(codes(&one).contains(&"approvals_insufficient"));

    // An attestation wholly made by an attacker's own keys proves its own reserves,
    // but its approvals count for nothing against the real guardians.
    let attacker = Keys {
        guardians: [secret(0x61), secret(0x62), secret(0x63)],
        single: secret(0x64),
    };
    let fake = make(
        content(&attacker),
        &[
            attacker.guardians[0],
            attacker.guardians[1],
            attacker.single,
        ],
        &[attacker.guardians[0], attacker.guardians[1]],
    );
    let unpinned = verify_attestation(&fake, &VerifyOptions::default());
    assert_eq!(unpinned.guardians_from, "challenge_reserve");
    let report = verify_attestation(&fake, &pinned);
    assert!(!report.valid);
    assert_eq!(report.approvals_valid, 0);
    assert!(report
        .errors
        .iter()
        .any(|e| e.code == "approvals_insufficient"));
}

#[test]
fn bad_documents_are_refused_before_any_signature_is_checked() {
    let att = valid_attestation();
    let json = att.to_json_pretty();
    let parse = |s: &str| {
        ReserveAttestation::from_json(s.as_bytes())
            .map(|_| ())
            .map_err(|e| e.code())
    };

    assert_eq!(parse(&json[..json.len() / 2]), Err("malformed"));
    assert_eq!(parse(""), Err("malformed"));

    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["unexpected"] = serde_json::json!(1);
    assert_eq!(parse(&v.to_string()), Err("malformed"));

    let mut dup = att.clone();
    let again = dup.reserves[0].utxos[0].clone();
    dup.reserves[2].utxos.push(again);
    assert_eq!(parse(&dup.to_json_pretty()), Err("duplicate_utxo"));

    let mut huge = att.clone();
    huge.reserves[0].utxos[0].amount_sats = 21_000_000 * 100_000_000 + 1;
    assert_eq!(parse(&huge.to_json_pretty()), Err("amount_too_large"));
    let mut sum = att.clone();
    sum.reserves[0].utxos[0].amount_sats = 21_000_000 * 100_000_000;
    assert_eq!(parse(&sum.to_json_pretty()), Err("amount_too_large"));

    let mut many = att.clone();
    let template = many.reserves[0].utxos[0].clone();
    many.reserves[0].utxos = (0..=ATTESTATION_MAX_UTXOS as u32)
        .map(|vout| Utxo {
            vout,
            ..template.clone()
        })
        .collect();
    assert_eq!(parse(&many.to_json_pretty()), Err("too_many_utxos"));

    for bad_hash in ["00", "G".repeat(64).as_str(), &"AB".repeat(32)] {
        let mut h = att.clone();
        h.bitcoin_block.hash = bad_hash.to_string();
        assert_eq!(parse(&h.to_json_pretty()), Err("bad_field"), "{bad_hash}");
    }
    let mut token = att.clone();
    token.supply[0].token = "0xabc\nsupply: fake".into();
    assert_eq!(parse(&token.to_json_pretty()), Err("bad_field"));

    let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["format"] = serde_json::json!("ubtc-proof-bundle");
    assert_eq!(parse(&v.to_string()), Err("wrong_format"));
    v["format"] = serde_json::json!("ubtc-reserve-attestation");
    v["version"] = serde_json::json!(2);
    assert_eq!(parse(&v.to_string()), Err("unsupported_version"));

    let mut retired = att.clone();
    for r in &mut retired.reserves {
        r.status = ReserveStatus::Retired;
    }
    assert_eq!(parse(&retired.to_json_pretty()), Err("no_active_reserve"));

    // A hostile document given to the verifier directly (not through from_json):
    // the same refusal, as a report.
    let report = verify_attestation(&dup, &VerifyOptions::default());
    assert!(!report.valid);
    assert!(report.errors.iter().any(|e| e.code == "duplicate_utxo"));
}

#[test]
fn garbage_proofs_are_refused_without_panic() {
    let att = valid_attestation();
    for pof in [
        "",
        "pof",
        "pofAAAA",
        "smpAAAA",
        "pof!!!",
        &att.pof[..att.pof.len() / 2],
    ] {
        let mut a = att.clone();
        a.pof = pof.to_string();
        let report = verify_attestation(&a, &VerifyOptions::default());
        assert!(!report.valid, "{pof}");
        assert!(
            report.errors.iter().any(|e| e.code == "pof_unreadable"),
            "{pof}: {report}"
        );
    }
}

/// The worked example of `docs/attestation.md` is this attestation, byte for byte,
/// and it verifies.
#[test]
fn docs_example_is_current_and_valid() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/attestation.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find("<!-- example-begin -->").expect("example marker")
        + "<!-- example-begin -->".len();
    let end = doc
        .find("<!-- example-end -->")
        .expect("example end marker");
    let block = doc[start..end]
        .trim()
        .strip_prefix("```json")
        .and_then(|b| b.strip_suffix("```"))
        .expect("a json code block between the markers")
        .trim();
    let expected = valid_attestation().to_json_pretty();
    if std::env::var_os("UBTC_WRITE_DOC_EXAMPLE").is_some() {
        let new = format!(
            "{}\n```json\n{expected}\n```\n{}",
            &doc[..start],
            &doc[end..]
        );
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert_eq!(block, expected, "regenerate with UBTC_WRITE_DOC_EXAMPLE=1");
    let parsed = ReserveAttestation::from_json(block.as_bytes()).unwrap();
    assert!(verify_attestation(&parsed, &VerifyOptions::default()).valid);
    // The text the doc shows is the example's.
    assert!(
        doc.contains(&parsed.text),
        "docs/attestation.md must show the example's text"
    );
}

#[test]
fn one_script_under_two_descriptor_spellings_is_refused() {
    let k = keys();
    let mut c = content(&k);
    // sortedmulti sorts its keys: another key order is another string, the same script.
    let mut keys: Vec<CompressedPublicKey> = k.guardians.iter().map(pubkey).collect();
    keys.sort_by_key(|p| p.to_bytes());
    keys.swap(0, 1);
    let listed: Vec<String> = keys.iter().map(ToString::to_string).collect();
    let spelled =
        descriptor::with_checksum(&format!("wsh(sortedmulti(2,{}))", listed.join(","))).unwrap();
    assert_ne!(spelled, c.reserves[0].descriptor);
    c.reserves
        .push(reserve(spelled, ReserveStatus::Retired, &[]));
    let att = ReserveAttestation::unsigned(c).unwrap();
    assert!(matches!(
        PreparedPof::prepare(&att),
        Err(AttestError::SameScript { .. })
    ));
}

/// Deterministic xorshift, so that a failure reproduces.
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

/// Random one- and two-byte edits of a valid document: whatever still parses as a
/// different document must not verify.
#[test]
fn no_edit_of_a_valid_document_verifies() {
    use bitcoin::base64::Engine as _;
    let att = valid_attestation();
    let json = serde_json::to_string(&att).unwrap().into_bytes();
    let decode = |s: &str| {
        bitcoin::base64::engine::general_purpose::STANDARD
            .decode(s.strip_prefix("pof").unwrap_or(s))
            .ok()
    };
    let alphabet = b"0123456789abcdefABCDEF\"{}[],:xz+/=-.";
    let mut state = 0x5eed_a77e_u64;
    let (mut parsed, mut changed) = (0, 0);
    for _ in 0..4000 {
        let mut m = json.clone();
        for _ in 0..=(next(&mut state) % 2) {
            let i = (next(&mut state) as usize) % m.len();
            m[i] = alphabet[(next(&mut state) as usize) % alphabet.len()];
        }
        let Ok(edited) = ReserveAttestation::from_json(&m) else {
            continue;
        };
        parsed += 1;
        if edited == att {
            continue;
        }
        let mut same_but_pof = edited.clone();
        same_but_pof.pof = att.pof.clone();
        if same_but_pof == att && decode(&edited.pof) == decode(&att.pof) {
            continue; // another base64 spelling of the same proof
        }
        changed += 1;
        let report = verify_attestation(&edited, &VerifyOptions::default());
        assert!(
            !report.valid,
            "an edit verified: {}",
            String::from_utf8_lossy(&m)
        );
    }
    assert!(
        changed > 500,
        "too few edits parsed ({parsed} parsed, {changed} changed)"
    );
}

/// The UTXO limit is reachable: 10,000 UTXOs of a 2-of-3 `sh(wsh)` reserve (the
/// larger of our 2-of-3 witnesses) make a proof under the proof size limit, and it
/// verifies.
#[test]
fn ten_thousand_utxos_at_the_limit() {
    let k = keys();
    let mut c = content(&k);
    let descriptor = multi_descriptor(&k, Wrapping::ShWsh);
    let script = hex::encode(
        Descriptor::parse(&descriptor)
            .unwrap()
            .script_pubkey()
            .as_bytes(),
    );
    c.reserves.truncate(1);
    c.reserves[0] = AttestedReserve {
        address: Descriptor::parse(&descriptor)
            .unwrap()
            .address(Network::Bitcoin)
            .to_string(),
        descriptor,
        status: ReserveStatus::Active,
        utxos: (0..ATTESTATION_MAX_UTXOS as u32)
            .map(|i| Utxo {
                txid: sha256::Hash::hash(&i.to_le_bytes()).to_string(),
                vout: i % 5,
                amount_sats: 50_000,
                script_pubkey_hex: script.clone(),
            })
            .collect(),
    };
    let att = make(
        c,
        &[k.guardians[1], k.guardians[2]],
        &[k.guardians[1], k.guardians[2]],
    );
    assert!(att.pof.len() <= ubtc_bitcoin::bip322::MAX_POF_SIGNATURE_CHARS);
    let parsed = ReserveAttestation::from_json(att.to_json_pretty().as_bytes()).unwrap();
    let report = verify_attestation(&parsed, &VerifyOptions::default());
    assert!(report.valid, "{:?}", report.errors);
    assert_eq!(
        report.totals.proven_reserve_sats,
        50_000 * ATTESTATION_MAX_UTXOS as u64
    );
    // Keys 2 and 3 in configuration order: CHECKMULTISIG needs at most one failed
    // try per input.
    assert!(report.ecdsa_checks <= 3 * (ATTESTATION_MAX_UTXOS + 1));
    eprintln!("10,000-UTXO sh(wsh) proof: {} characters", att.pof.len());
}

// ------------------------------------------------------------ pinned registry

fn proposed(descriptor: &str, active: bool) -> ProposedReserve {
    ProposedReserve {
        address: Descriptor::parse(descriptor)
            .unwrap()
            .address(Network::Bitcoin)
            .to_string(),
        descriptor: descriptor.to_string(),
        active,
    }
}

/// The registry the holder pins: the three reserves of [`content`] as they are
/// attested (the `sh(wsh)` one retired), the three guardians, `threshold` approvals.
fn registry_v1(k: &Keys, threshold: u32) -> RegistryVersion {
    let v = reg::propose(
        None,
        BitcoinNetwork::Bitcoin,
        k.guardians.iter().map(|g| pubkey(g).to_string()).collect(),
        threshold,
        &[
            proposed(&multi_descriptor(k, Wrapping::Wsh), true),
            proposed(&single_descriptor(k), true),
            proposed(&multi_descriptor(k, Wrapping::ShWsh), false),
        ],
    )
    .unwrap();
    let unsigned = v.clone();
    let mut v = v;
    for g in &k.guardians[..2] {
        reg::add_signature(&mut v, reg::sign(&unsigned, g));
    }
    v
}

/// Version 2 retires the single-key reserve; signed by two guardians of version 1.
fn registry_v2(k: &Keys, v1: &RegistryVersion) -> RegistryVersion {
    let v = reg::propose(
        Some(v1),
        BitcoinNetwork::Bitcoin,
        v1.guardians.clone(),
        2,
        &[
            proposed(&multi_descriptor(k, Wrapping::Wsh), true),
            proposed(&single_descriptor(k), false),
            proposed(&multi_descriptor(k, Wrapping::ShWsh), false),
        ],
    )
    .unwrap();
    let unsigned = v.clone();
    let mut v = v;
    for g in &k.guardians[1..] {
        reg::add_signature(&mut v, reg::sign(&unsigned, g));
    }
    v
}

/// The honest attestation of [`valid_attestation`], naming `registry`.
fn attestation_under(k: &Keys, registry: &RegistryVersion) -> ReserveAttestation {
    let mut c = content(k);
    c.registry = RegistryRef {
        version: registry.version,
        fingerprint: registry.fingerprint(),
    };
    make(
        c,
        &[k.guardians[0], k.guardians[2], k.single],
        &[k.guardians[0], k.guardians[2]],
    )
}

fn report_codes(r: &AttestationReport) -> Vec<&'static str> {
    r.errors.iter().map(|e| e.code).collect()
}

/// An attestation made by someone holding no guardian key at all: one reserve
/// `wpkh(ATTACKER)` with an invented 20,000,000 BTC UTXO, 1 BTC of supply, the real
/// registry's fingerprint in its `registry` field, approved by the attacker.
fn self_made_attestation(real_registry: &RegistryVersion) -> ReserveAttestation {
    let attacker = secret(0x66);
    let desc = descriptor::with_checksum(&format!("wpkh({})", pubkey(&attacker))).unwrap();
    let mut c = content(&keys());
    c.reserves = vec![reserve(
        desc,
        ReserveStatus::Active,
        &[(9, 2_000_000_000_000_000)],
    )];
    c.supply.truncate(1);
    c.supply[0].supply = TokenAmount::new(1_000_000_000_000_000_000, 18);
    c.registry = RegistryRef {
        version: real_registry.version,
        fingerprint: real_registry.fingerprint(),
    };
    make(c, &[attacker], &[attacker])
}

/// Without a pin the verifier can only count approvals against the document's own
/// keys, so a forger approves their own attestation. The report must not call that
/// VALID next to the real registry's fingerprint: it says UNPINNED.
#[test]
fn a_self_made_attestation_is_unpinned_not_valid_without_a_pin() {
    let real = registry_v1(&keys(), 2);
    let att = self_made_attestation(&real);
    let r = verify_attestation(&att, &VerifyOptions::default());
    let text = r.to_string();
    assert!(text.contains(&real.fingerprint()), "{text}");
    assert_eq!(
        r.totals.proven_reserve_sats, 2_000_000_000_000_000,
        "{text}"
    );
    assert!(
        !text.starts_with("reserve attestation: VALID"),
        "a forger's attestation is reported VALID:\n{text}"
    );
    assert!(text.starts_with("reserve attestation: UNPINNED"), "{text}");
    assert!(!r.pinned);
    assert_eq!(r.verdict, "unpinned");
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["verdict"], "unpinned");
    assert_eq!(json["pinned"], false);
    // verify_attestation_pinned with no pin is the same verdict.
    assert_eq!(verify_attestation_pinned(&att, None).verdict, "unpinned");
}

#[test]
fn a_pinned_registry_checks_an_attestations_reserves_and_guardians() {
    let k = keys();
    let v1 = registry_v1(&k, 2);
    let pin = RegistryPin::Versions(vec![v1.clone()]);
    let honest = attestation_under(&k, &v1);
    let r = verify_attestation_pinned(&honest, Some(&pin));
    assert!(r.is_valid(), "{r}");
    assert!(r.pinned);
    assert_eq!(r.verdict, "valid");
    assert_eq!(r.guardians_from, "pinned_registry");
    assert!(
        r.to_string()
            .starts_with("reserve attestation: VALID (reserves and guardians checked against the pinned registry)"),
        "{r}"
    );

    // The forger's attestation names the real registry: its reserve is not in it and
    // the forger is no guardian of it.
    let forged = self_made_attestation(&v1);
    let r = verify_attestation_pinned(&forged, Some(&pin));
    assert!(!r.is_valid(), "{r}");
    assert_eq!(r.verdict, "invalid");
    assert!(
        r.to_string().starts_with("reserve attestation: INVALID"),
        "{r}"
    );
    let codes = report_codes(&r);
    assert!(codes.contains(&"reserve_not_in_registry"), "{r}");
    assert!(codes.contains(&"approvals_insufficient"), "{r}");
    assert_eq!(r.approvals_valid, 0);

    // A fingerprint alone cannot check an attestation, which carries no chain.
    let r = verify_attestation_pinned(&honest, Some(&RegistryPin::Fingerprint(v1.fingerprint())));
    assert!(!r.is_valid());
    assert_eq!(
        report_codes(&r),
        vec!["registry_chain_needed", "approvals_insufficient"]
    );

    // The approver set and threshold are the registry's, not the challenge
    // reserve's: a registry asking for three approvals refuses two.
    let v1_three = registry_v1(&k, 3);
    let att = attestation_under(&k, &v1_three);
    let r = verify_attestation_pinned(&att, Some(&RegistryPin::Versions(vec![v1_three])));
    assert_eq!(r.approvals_needed, 3, "{r}");
    assert_eq!(report_codes(&r), vec!["approvals_insufficient"]);

    // Naming another fingerprint under the pinned version number.
    let mut other = v1.clone();
    other.guardian_threshold = 1;
    let att = attestation_under(&k, &other);
    let r = verify_attestation_pinned(&att, Some(&pin));
    assert!(
        report_codes(&r).contains(&"registry_fingerprint_mismatch"),
        "{r}"
    );

    // Version 2 retires the single-key reserve. The v1 attestation is superseded for
    // a holder who trusts v2; one who pins only v1 still checks it.
    let v2 = registry_v2(&k, &v1);
    let both = RegistryPin::Versions(vec![v1.clone(), v2.clone()]);
    let r = verify_attestation_pinned(&honest, Some(&both));
    assert!(
        report_codes(&r).contains(&"registry_version_not_current"),
        "{r}"
    );
    assert!(!r.is_valid());
    // Under v2, attesting the retired reserve as active is a lie about its status.
    let att = attestation_under(&k, &v2);
    let r = verify_attestation_pinned(&att, Some(&both));
    assert_eq!(report_codes(&r), vec!["reserve_status_mismatch"], "{r}");
    // ...and attested as retired, it verifies.
    let mut c = content(&k);
    c.reserves[1].status = ReserveStatus::Retired;
    c.registry = RegistryRef {
        version: 2,
        fingerprint: v2.fingerprint(),
    };
    let att = make(
        c,
        &[k.guardians[0], k.guardians[2], k.single],
        &[k.guardians[1], k.guardians[2]],
    );
    let r = verify_attestation_pinned(&att, Some(&both));
    assert!(r.is_valid(), "{r}");

    // A pinned chain that does not verify counts no approval at all.
    let mut broken = v2.clone();
    broken.signatures.truncate(1);
    let r = verify_attestation_pinned(&att, Some(&RegistryPin::Versions(vec![v1, broken])));
    assert!(
        report_codes(&r).contains(&"registry_not_enough_signatures"),
        "{r}"
    );
    assert_eq!(r.approvals_valid, 0);
}
