//! The reserve registry and what a verifier accepts against it: the signed chain of
//! versions, the attacker's forged threshold-1 reserve, and the bundle fields no
//! signature covers. Every signature here comes from the real signing code.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{CompressedPublicKey, Network};
use ubtc_bitcoin::bundle::{verify_bundle, verify_bundle_pinned, RegistryPin};
use ubtc_bitcoin::multisig::{Form, SigningRequest, SortedMulti, Wrapping};
use ubtc_bitcoin::registry::{self as reg, ProposedReserve, RegistryError};
use ubtc_core::bundle::{
    ApprovalDecision, BitcoinNetwork, GuardianApproval, ProofBundle, ProofOfFunds,
    ReserveSignature, Utxo, BUNDLE_VERSION,
};
use ubtc_core::registry::RegistryVersion;
use ubtc_core::Sats;

const TEMPLATE: &str = include_str!("data/review-bundle-template.json");

fn key(b: u8) -> SecretKey {
    SecretKey::from_slice(&[b; 32]).unwrap()
}

fn cpk(k: &SecretKey) -> CompressedPublicKey {
    CompressedPublicKey(k.public_key(&Secp256k1::new()))
}

fn hexkey(k: &SecretKey) -> String {
    cpk(k).to_string()
}

struct Fixture {
    guardians: [SecretKey; 3],
    attacker: SecretKey,
    reserve: SortedMulti,
}

fn fixture() -> Fixture {
    let guardians = [key(0x31), key(0x32), key(0x33)];
    let reserve = SortedMulti::new(2, guardians.iter().map(cpk).collect()).unwrap();
    Fixture {
        guardians,
        attacker: key(0x66),
        reserve,
    }
}

fn proposed(policy: &SortedMulti, active: bool) -> ProposedReserve {
    ProposedReserve {
        address: policy.address(Network::Bitcoin, Wrapping::Wsh).to_string(),
        descriptor: policy.descriptor(Wrapping::Wsh),
        active,
    }
}

fn signed(mut v: RegistryVersion, by: &[&SecretKey]) -> RegistryVersion {
    let unsigned = v.clone();
    for k in by {
        reg::add_signature(&mut v, reg::sign(&unsigned, k));
    }
    v
}

fn v1(fx: &Fixture) -> RegistryVersion {
    let guardians = fx.guardians.iter().map(hexkey).collect();
    let v = reg::propose(
        None,
        BitcoinNetwork::Bitcoin,
        guardians,
        2,
        &[proposed(&fx.reserve, true)],
    )
    .unwrap();
    signed(v, &[&fx.guardians[0], &fx.guardians[1]])
}

/// v1 → v2 (a second reserve) → v3 (the first retired).
fn chain(fx: &Fixture) -> Vec<RegistryVersion> {
    let first = v1(fx);
    let guardians: Vec<String> = fx.guardians.iter().map(hexkey).collect();
    let second_reserve = SortedMulti::new(3, fx.guardians.iter().map(cpk).collect()).unwrap();
    let v2 = reg::propose(
        Some(&first),
        BitcoinNetwork::Bitcoin,
        guardians.clone(),
        2,
        &[proposed(&fx.reserve, true), proposed(&second_reserve, true)],
    )
    .unwrap();
    let v2 = signed(v2, &[&fx.guardians[1], &fx.guardians[2]]);
    let v3 = reg::propose(
        Some(&v2),
        BitcoinNetwork::Bitcoin,
        guardians,
        2,
        &[
            proposed(&fx.reserve, false),
            proposed(&second_reserve, true),
        ],
    )
    .unwrap();
    let v3 = signed(v3, &[&fx.guardians[0], &fx.guardians[2]]);
    vec![first, v2, v3]
}

fn next_of(fx: &Fixture, prev: &RegistryVersion) -> RegistryVersion {
    let extra = SortedMulti::new(1, fx.guardians.iter().map(cpk).collect()).unwrap();
    reg::propose(
        Some(prev),
        BitcoinNetwork::Bitcoin,
        prev.guardians.clone(),
        2,
        &[proposed(&fx.reserve, true), proposed(&extra, true)],
    )
    .unwrap()
}

#[test]
fn a_valid_chain_is_followed_from_a_pinned_first_version() {
    let fx = fixture();
    let chain = chain(&fx);
    reg::check_genesis(&chain[0]).unwrap();
    let accepted = reg::follow(&chain[0], &chain).unwrap();
    assert_eq!(
        accepted.iter().map(|v| v.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(reg::verify_chain(&chain).unwrap().len(), 3);
    // Pinning v2 accepts v2 and v3 only.
    let accepted = reg::follow(&chain[1], &chain).unwrap();
    assert_eq!(
        accepted.iter().map(|v| v.version).collect::<Vec<_>>(),
        [2, 3]
    );
    // The fingerprint does not depend on signatures or list order.
    let mut reordered = chain[1].clone();
    reordered.guardians.reverse();
    reordered.signatures.clear();
    assert_eq!(reordered.fingerprint(), chain[1].fingerprint());
    assert_ne!(chain[0].fingerprint(), chain[1].fingerprint());
}

fn refused(prev: &RegistryVersion, next: &RegistryVersion) -> RegistryError {
    let err = reg::check_next(prev, next).unwrap_err();
    // The same refusal through the whole-chain check.
    let chain = vec![prev.clone(), next.clone()];
    assert_eq!(reg::follow(prev, &chain).unwrap_err(), err);
    err
}

#[test]
fn a_forged_next_version_is_refused_each_with_its_own_error() {
    let fx = fixture();
    let first = v1(&fx);
    let next = next_of(&fx, &first);
    let [g1, g2, g3] = &fx.guardians;

    // Two guardians of v1: accepted.
    reg::check_next(&first, &signed(next.clone(), &[g1, g3])).unwrap();

    let one = signed(next.clone(), &[g1]);
    let e = refused(&first, &one);
    assert_eq!(e.code(), "registry_not_enough_signatures", "{e}");
    assert!(matches!(
        e,
        RegistryError::NotEnoughSignatures {
            found: 1,
            needed: 2,
            ..
        }
    ));

    let stranger = signed(next.clone(), &[g1, &fx.attacker]);
    let e = refused(&first, &stranger);
    assert_eq!(e.code(), "registry_not_a_guardian", "{e}");
    assert!(e.to_string().contains(&hexkey(&fx.attacker)));

    let mut duplicated = signed(next.clone(), &[g1]);
    duplicated.signatures.push(duplicated.signatures[0].clone());
    let e = refused(&first, &duplicated);
    assert_eq!(e.code(), "registry_duplicate_signer", "{e}");

    let mut broken = next.clone();
    broken.previous = Some("00".repeat(32));
    let broken = signed(broken, &[g1, g2]);
    let e = refused(&first, &broken);
    assert_eq!(e.code(), "registry_broken_link", "{e}");

    let mut same_number = next.clone();
    same_number.version = 1;
    same_number.previous = None;
    let e = reg::check_next(&first, &signed(same_number, &[g1, g2])).unwrap_err();
    assert_eq!(e.code(), "registry_version_not_increasing", "{e}");

    // A reserve whose stated threshold is not its descriptor's.
    let mut lying = next.clone();
    let two_of_three = lying
        .reserves
        .iter()
        .position(|r| r.threshold == 2)
        .unwrap();
    lying.reserves[two_of_three].threshold = 1;
    let e = refused(&first, &signed(lying, &[g1, g2]));
    assert_eq!(e.code(), "registry_descriptor_mismatch", "{e}");

    // A reserve whose stated keys are not its descriptor's.
    let mut lying = next.clone();
    lying.reserves[0].keys[0] = hexkey(&fx.attacker);
    let e = refused(&first, &signed(lying, &[g1, g2]));
    assert_eq!(e.code(), "registry_descriptor_mismatch", "{e}");

    let mut twice = next.clone();
    twice.reserves.push(twice.reserves[0].clone());
    let e = refused(&first, &signed(twice, &[g1, g2]));
    assert_eq!(e.code(), "registry_duplicate_reserve", "{e}");

    // Changed after it was signed.
    let mut tampered = signed(next.clone(), &[g1, g2]);
    tampered.guardian_threshold = 1;
    let e = refused(&first, &tampered);
    assert_eq!(e.code(), "registry_bad_signature", "{e}");

    // Version 1 signed by one of its own guardians only.
    let lone = signed(first.unsigned(), &[g1]);
    assert_eq!(
        reg::check_genesis(&lone).unwrap_err().code(),
        "registry_not_enough_signatures"
    );
}

// ---------------------------------------------------------------- bundles

fn template() -> ProofBundle {
    let mut b: ProofBundle = serde_json::from_str(TEMPLATE).unwrap();
    b.statement_text = b.statement.text();
    b
}

fn utxo(policy: &SortedMulti, txid_byte: &str, sats: u64) -> Utxo {
    let spk = policy.script_pubkey(Wrapping::Wsh);
    Utxo {
        txid: txid_byte.repeat(32),
        vout: 0,
        amount_sats: sats,
        script_pubkey_hex: hex::encode(spk.as_bytes()),
    }
}

/// The real code path: a signing request, partials by `signers`, combined.
fn multisig_sign(
    policy: &SortedMulti,
    text: &str,
    form: Form,
    utxos: &[Utxo],
    signers: &[&SecretKey],
) -> String {
    let request = match form {
        Form::ProofOfFunds => SigningRequest::proof_of_funds(
            policy,
            Wrapping::Wsh,
            Network::Bitcoin,
            text.as_bytes(),
            utxos,
        ),
        form => SigningRequest::new(
            policy,
            Wrapping::Wsh,
            Network::Bitcoin,
            text.as_bytes(),
            form,
        ),
    }
    .unwrap();
    let prepared = request.prepare().unwrap();
    let partials: Vec<_> = signers
        .iter()
        .map(|k| {
            let p = prepared.sign_partial(k).unwrap();
            prepared.verify_partial(p).unwrap()
        })
        .collect();
    prepared.combine(&partials).unwrap()
}

fn approval(k: &SecretKey, decision: ApprovalDecision, digest: &str) -> GuardianApproval {
    GuardianApproval {
        guardian_key: hexkey(k),
        decision,
        reason_code: (decision == ApprovalDecision::Refused).then(|| "payment_unknown".into()),
        statement_digest: digest.to_string(),
        signature: None,
        at: ubtc_core::Timestamp(1_700_000_000_000),
    }
}

/// A bundle like the pipeline writes: the 2-of-3 reserve signed by g1 and g2, a proof
/// of funds over two UTXOs, g3's refusal, and the registry chain.
fn real_bundle(fx: &Fixture, registry: Vec<RegistryVersion>) -> ProofBundle {
    let mut b = template();
    let text = b.statement_text.clone();
    let [g1, g2, g3] = &fx.guardians;
    let address = fx
        .reserve
        .address(Network::Bitcoin, Wrapping::Wsh)
        .to_string();
    b.reserves = vec![ReserveSignature {
        address: address.clone(),
        descriptor: fx.reserve.descriptor(Wrapping::Wsh),
        signature: multisig_sign(&fx.reserve, &text, Form::Simple, &[], &[g1, g2]),
    }];
    let utxos = vec![
        utxo(&fx.reserve, "a1", 150_000_000),
        utxo(&fx.reserve, "b2", 50_000_000),
    ];
    b.proof_of_funds = Some(ProofOfFunds {
        address,
        signature: multisig_sign(&fx.reserve, &text, Form::ProofOfFunds, &utxos, &[g1, g2]),
        utxos,
        bitcoin_height: 871234,
    });
    let digest = b.statement.digest_hex();
    b.approvals = vec![
        approval(g1, ApprovalDecision::Approved, &digest),
        approval(g2, ApprovalDecision::Approved, &digest),
        approval(g3, ApprovalDecision::Refused, &digest),
    ];
    b.version = BUNDLE_VERSION;
    b.registry = registry;
    b
}

/// The attacker's bundle: `wsh(sortedmulti(1, G1, G2, G3, ATTACKER))`, a proof of
/// funds over an invented 20,000,000 BTC UTXO, everything signed by the attacker alone.
fn forged_bundle(fx: &Fixture, registry: Vec<RegistryVersion>) -> ProofBundle {
    let mut keys: Vec<CompressedPublicKey> = fx.guardians.iter().map(cpk).collect();
    keys.push(cpk(&fx.attacker));
    let forged = SortedMulti::new(1, keys).unwrap();
    let mut b = template();
    let text = b.statement_text.clone();
    let address = forged.address(Network::Bitcoin, Wrapping::Wsh).to_string();
    b.reserves = vec![ReserveSignature {
        address: address.clone(),
        descriptor: forged.descriptor(Wrapping::Wsh),
        signature: multisig_sign(&forged, &text, Form::Simple, &[], &[&fx.attacker]),
    }];
    let utxos = vec![utxo(&forged, "ee", 2_000_000_000_000_000)];
    b.proof_of_funds = Some(ProofOfFunds {
        address,
        signature: multisig_sign(&forged, &text, Form::ProofOfFunds, &utxos, &[&fx.attacker]),
        utxos,
        bitcoin_height: 871234,
    });
    b.approvals.clear();
    b.version = BUNDLE_VERSION;
    b.registry = registry;
    b
}

fn json(r: &ubtc_bitcoin::bundle::BundleReport) -> serde_json::Value {
    serde_json::to_value(r).unwrap()
}

#[test]
fn the_real_bundle_is_valid_against_the_pinned_registry_and_shows_its_keys() {
    let fx = fixture();
    let chain = chain(&fx);
    // Signed under v1 (its reserve is retired in v3, which the bundle does not carry).
    let b = real_bundle(&fx, vec![chain[0].clone()]);
    let pin = RegistryPin::Versions(vec![chain[0].clone()]);
    let r = verify_bundle_pinned(&b, Some(&pin));
    assert!(r.is_valid(), "{r}");
    assert!(r.pinned);
    assert_eq!(r.verdict, "valid");
    assert_eq!(r.proven_sats, 200_000_000);
    let text = r.to_string();
    assert!(text.starts_with("proof bundle: VALID"), "{text}");
    assert!(text.contains(&chain[0].fingerprint()), "{text}");
    assert!(text.contains("2-of-3 keys:"), "{text}");
    for g in &fx.guardians {
        assert!(text.contains(&hexkey(g)), "{text}");
    }
    let j = json(&r);
    assert_eq!(j["pinned"], true);
    assert_eq!(j["reserves"][0]["threshold"], 2);
    assert_eq!(j["reserves"][0]["keys"].as_array().unwrap().len(), 3);
    assert_eq!(j["reserves"][0]["registry_version"], 1);
    let mut signers: Vec<String> = j["reserves"][0]["signed_by"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    signers.sort();
    let mut expected = vec![hexkey(&fx.guardians[0]), hexkey(&fx.guardians[1])];
    expected.sort();
    assert_eq!(signers, expected);

    // Pinned by fingerprint: the same.
    let pin = RegistryPin::Fingerprint(chain[0].fingerprint());
    assert_eq!(verify_bundle_pinned(&b, Some(&pin)).verdict, "valid");

    // The reserve is active in the newest version the verifier reaches (v1): it is
    // judged against v1 and says so.
    assert_eq!(j["registry"]["current_version"], 1);

    // Unpinned: valid signatures, but the verdict says nobody pinned anything.
    let r = verify_bundle(&b);
    assert!(!r.pinned);
    assert_eq!(r.verdict, "unpinned");
    assert!(r.to_string().starts_with("proof bundle: UNPINNED"), "{r}");
    assert!(r.to_string().contains(&chain[0].fingerprint()), "{r}");
    assert_eq!(json(&r)["verdict"], "unpinned");
}

/// The guardians retire a reserve (its keys leaked, say) in version 3. A bundle its
/// two leaked keys sign, carrying that very version, is judged against the newest
/// version the verifier accepts (v3), never an older one that still listed the
/// reserve: INVALID, whatever the pin, and unpinned too.
#[test]
fn a_reserve_retired_in_the_newest_accepted_registry_version_makes_a_bundle_invalid() {
    let fx = fixture();
    let chain = chain(&fx);
    let b = real_bundle(&fx, chain.clone());
    let pins = [
        RegistryPin::Versions(vec![chain[0].clone()]),
        RegistryPin::Fingerprint(chain[0].fingerprint()),
        RegistryPin::Versions(chain.clone()),
    ];
    for pin in &pins {
        let r = verify_bundle_pinned(&b, Some(pin));
        assert_eq!(r.registry.current_version, Some(3), "{r}");
        assert!(
            !r.is_valid(),
            "a reserve retired in v3 verifies against v3:\n{r}"
        );
        assert_eq!(r.verdict, "invalid");
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("is retired in registry version 3")),
            "{r}"
        );
        assert_eq!(
            json(&r)["reserves"][0]["registry_version"],
            serde_json::Value::Null
        );
        assert!(r.to_string().starts_with("proof bundle: INVALID"), "{r}");
    }
    let r = verify_bundle(&b);
    assert_eq!(r.verdict, "invalid", "{r}");

    // A bundle made while v2 was current carries v1..v2: the reserve is active in
    // v2, the newest version it reaches, so it is valid against a v1 pin...
    let before = real_bundle(&fx, chain[..2].to_vec());
    let r = verify_bundle_pinned(&before, Some(&pins[0]));
    assert!(r.is_valid(), "{r}");
    assert_eq!(r.registry.current_version, Some(2));
    assert_eq!(json(&r)["reserves"][0]["registry_version"], 2);
    // ...and invalid for a verifier who already trusts v3.
    let r = verify_bundle_pinned(&before, Some(&RegistryPin::Versions(chain.clone())));
    assert!(!r.is_valid(), "{r}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("is retired in registry version 3")),
        "{r}"
    );

    // Dropped rather than retired: the same, with its own message.
    let v4 = reg::propose(
        Some(&chain[2]),
        BitcoinNetwork::Bitcoin,
        chain[2].guardians.clone(),
        2,
        &[proposed(
            &SortedMulti::new(3, fx.guardians.iter().map(cpk).collect()).unwrap(),
            true,
        )],
    )
    .unwrap();
    let v4 = signed(v4, &[&fx.guardians[0], &fx.guardians[1]]);
    let mut four = chain.clone();
    four.push(v4);
    let r = verify_bundle_pinned(&real_bundle(&fx, four), Some(&pins[0]));
    assert!(!r.is_valid(), "{r}");
    assert!(
        r.errors
            .iter()
            .any(|e| e.contains("is not an active reserve of registry version 4")),
        "{r}"
    );
}

#[test]
fn two_versions_with_one_number_in_a_chain_are_a_fork() {
    let fx = fixture();
    let chain = chain(&fx);
    // Another version 2, signed by the same guardians: a second history.
    let other_v2 = signed(
        next_of(&fx, &chain[0]),
        &[&fx.guardians[0], &fx.guardians[1]],
    );
    let forked = vec![chain[0].clone(), chain[1].clone(), other_v2];
    let e = reg::follow(&chain[0], &forked).unwrap_err();
    assert_eq!(e, RegistryError::Fork(2));
    assert_eq!(e.code(), "registry_fork");
    // The same version twice is no fork.
    let repeated = vec![chain[0].clone(), chain[1].clone(), chain[1].clone()];
    assert_eq!(reg::follow(&chain[0], &repeated).unwrap().len(), 2);
}

#[test]
fn the_attackers_threshold_one_reserve_is_invalid_when_pinned_and_unpinned_without_a_pin() {
    let fx = fixture();
    let genuine = v1(&fx);
    let pins = [
        RegistryPin::Versions(vec![genuine.clone()]),
        RegistryPin::Fingerprint(genuine.fingerprint()),
    ];

    // With the genuine registry copied into the bundle.
    let b = forged_bundle(&fx, vec![genuine.clone()]);
    // The signatures themselves are fine: that is the point of the forgery.
    assert!(verify_bundle(&b).reserves[0].valid);
    for pin in &pins {
        let r = verify_bundle_pinned(&b, Some(pin));
        assert!(!r.is_valid(), "{r}");
        assert_eq!(r.verdict, "invalid");
        assert!(
            r.errors
                .iter()
                .any(|e| e.contains("is not an active reserve")),
            "{r}"
        );
        assert!(r.to_string().contains("NOT in the registry"), "{r}");
        assert!(r.to_string().contains("1-of-4 keys:"), "{r}");
    }
    // Even unpinned, the bundle's own (genuine) registry does not list it.
    assert!(!verify_bundle(&b).is_valid());

    // With a registry of the attacker's own making, self-signed.
    let own = signed(
        reg::propose(
            None,
            BitcoinNetwork::Bitcoin,
            vec![hexkey(&fx.attacker)],
            1,
            &[ProposedReserve {
                address: b.reserves[0].address.clone(),
                descriptor: b.reserves[0].descriptor.clone(),
                active: true,
            }],
        )
        .unwrap(),
        &[&fx.attacker],
    );
    let b = forged_bundle(&fx, vec![own.clone()]);
    for pin in &pins {
        let r = verify_bundle_pinned(&b, Some(pin));
        assert!(!r.is_valid(), "{r}");
        let code = r.registry.error_code.as_deref().unwrap();
        assert!(
            code == "registry_fork" || code == "registry_pin_not_found",
            "{code}"
        );
    }
    // Unpinned it checks out against its own registry, and says so loudly.
    let r = verify_bundle(&b);
    assert!(!r.pinned);
    assert_eq!(r.verdict, "unpinned");
    let text = r.to_string();
    assert!(text.starts_with("proof bundle: UNPINNED"), "{text}");
    assert!(!text.starts_with("proof bundle: VALID"), "{text}");
    assert!(text.contains("NOTHING PINS THE REGISTRY"), "{text}");
    assert!(text.contains(&own.fingerprint()), "{text}");
    assert_ne!(own.fingerprint(), genuine.fingerprint());
    let j = json(&r);
    assert_eq!(j["pinned"], false);
    assert_eq!(j["verdict"], "unpinned");
    assert_eq!(j["registry"]["current_fingerprint"], own.fingerprint());
}

#[test]
fn unsigned_fields_are_invalid_or_labelled_unsigned() {
    let fx = fixture();
    let registry = vec![v1(&fx)];
    let pin = RegistryPin::Versions(registry.clone());
    let good = real_bundle(&fx, registry);
    let r = verify_bundle_pinned(&good, Some(&pin));
    assert!(r.is_valid(), "{r}");
    assert!(r.funds_proven);

    // No proof of funds: still signed, but nothing proven, and it says so.
    let mut b = good.clone();
    b.proof_of_funds = None;
    let r = verify_bundle_pinned(&b, Some(&pin));
    assert!(!r.funds_proven);
    assert_eq!(r.proven_sats, 0);
    assert!(r.to_string().contains("no reserves are proven"), "{r}");
    assert_eq!(json(&r)["funds_proven"], false);
    // ...and the figures that still claim 2 BTC are flagged against the proof.
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("unsigned reserve figures claim")),
        "{r}"
    );

    // Healthy figures with any ratio: valid (nothing signed changed), shown unsigned.
    let mut b = good.clone();
    let f = b.reserve_figures.as_mut().unwrap();
    f.healthy = true;
    f.ratio_ppm = Some(99_000_000);
    f.reserve_sats = Sats(9_900_000_000);
    let r = verify_bundle_pinned(&b, Some(&pin));
    let figures = r
        .unsigned
        .iter()
        .find(|u| u.field == "reserve_figures")
        .unwrap();
    assert!(figures.value.contains("ratio 99.000000"), "{figures:?}");
    assert!(
        r.to_string().contains("unsigned (claimed by the operator"),
        "{r}"
    );
    assert!(r.to_string().contains("ratio 99.000000"), "{r}");
    assert!(json(&r)["unsigned"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["field"] == "reserve_figures"
            && u["value"].as_str().unwrap().contains("ratio 99.000000")));
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("claim 99.00000000 BTC")),
        "{r}"
    );

    // An inflated payment amount: shown, labelled unsigned, in both forms.
    let mut b = good.clone();
    b.payment.amount_base_units = 999_999_999_999_999_999_999;
    let r = verify_bundle_pinned(&b, Some(&pin));
    assert!(r
        .to_string()
        .contains("payment.amount_base_units: 999999999999999999999 wei"));
    assert!(json(&r)["unsigned"]
        .as_array()
        .unwrap()
        .iter()
        .any(|u| u["field"] == "payment.amount_base_units"
            && u["value"] == "999999999999999999999 wei"));
    for field in [
        "payment.block_number",
        "payment.block_hash",
        "supply",
        "approvals",
    ] {
        assert!(r.unsigned.iter().any(|u| u.field == field), "{field}");
    }

    // Every approval marked refused: the two whose signatures are in the witness
    // contradict the reserve signature: INVALID, in both forms.
    let mut b = good.clone();
    for a in &mut b.approvals {
        a.decision = ApprovalDecision::Refused;
        a.reason_code = Some("payment_unknown".into());
    }
    let r = verify_bundle_pinned(&b, Some(&pin));
    assert!(!r.is_valid(), "{r}");
    assert_eq!(
        r.errors
            .iter()
            .filter(|e| e.contains("but its signature is in the reserve signature"))
            .count(),
        2,
        "{r}"
    );
    assert!(r.to_string().starts_with("proof bundle: INVALID"));
    let j = json(&r);
    assert_eq!(j["valid"], false);
    assert!(j["approvals"][0]["key_signed_reserve"].is_boolean());
    // The guardian that did refuse is not an error.
    let g3 = hexkey(&fx.guardians[2]);
    let g3_report = r.approvals.iter().find(|a| a.guardian_key == g3).unwrap();
    assert_eq!(g3_report.key_signed_reserve, Some(false));
    assert!(g3_report.error.is_none());
}

#[test]
fn version_1_bundles_still_read_and_are_reported_unpinned() {
    let fx = fixture();
    let mut b = real_bundle(&fx, Vec::new());
    b.version = 1;
    let r = verify_bundle(&b);
    assert!(r.is_valid(), "{r}");
    assert_eq!(r.verdict, "unpinned");
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("carries no reserve registry")),
        "{r}"
    );
    // A pinned registry still applies to the reserves it lists.
    let pin = RegistryPin::Versions(vec![v1(&fx)]);
    assert_eq!(verify_bundle_pinned(&b, Some(&pin)).verdict, "valid");
    // A version 2 bundle must carry its registry.
    b.version = BUNDLE_VERSION;
    assert!(b.check_shape().is_err());
}

#[test]
fn hostile_registries_do_not_panic() {
    let fx = fixture();
    let mut b = real_bundle(&fx, vec![v1(&fx)]);
    b.registry[0]
        .signatures
        .push(ubtc_core::registry::RegistrySignature {
            key: "zz".into(),
            signature: "not hex".into(),
        });
    b.registry[0].reserves[0].descriptor = "wsh(garbage)#aaaaaaaa".into();
    let r = verify_bundle(&b);
    assert!(!r.is_valid());
    let pin = RegistryPin::Fingerprint("00".repeat(32));
    assert!(!verify_bundle_pinned(&b, Some(&pin)).is_valid());
    let pin = RegistryPin::Versions(Vec::new());
    assert!(!verify_bundle_pinned(&b, Some(&pin)).is_valid());
}
