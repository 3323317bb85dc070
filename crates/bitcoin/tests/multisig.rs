//! Split signing: each guardian signs alone; the coordinator checks and combines.
//! Results are also checked by the crates.io `bip322` verifier.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{CompressedPublicKey, Network};
use ubtc_bitcoin::bip322::{self, Format};
use ubtc_bitcoin::multisig::{
    combine, sign_partial, verify_partial, DescriptorCache, Form, MultisigError, PreparedRequest,
    SigningRequest, SortedMulti, Wrapping,
};
use ubtc_bitcoin::pof;
use ubtc_core::bundle::Utxo;

fn keys() -> (Vec<SecretKey>, SortedMulti) {
    let secp = Secp256k1::new();
    let secrets: Vec<SecretKey> = (1u8..=3)
        .map(|i| SecretKey::from_slice(&[i; 32]).unwrap())
        .collect();
    let pubs = secrets
        .iter()
        .map(|s| CompressedPublicKey(s.public_key(&secp)))
        .collect();
    (secrets, SortedMulti::new(2, pubs).unwrap())
}

/// Checks with the crates.io `bip322` crate (a verifier written by others).
fn bip322_crate_accepts(address: &str, message: &str, sig: &str) -> bool {
    let stripped = &sig[3..];
    let result = if sig.starts_with("smp") {
        ::bip322::verify_simple_encoded(address, message, stripped)
    } else if sig.starts_with("ful") {
        ::bip322::verify_full_encoded(address, message, stripped)
    } else {
        ::bip322::verify_pof_encoded(address, message, sig)
    };
    matches!(result, Ok(::bip322::Verification::Valid { .. }))
}

#[test]
fn two_of_three_every_form_and_wrapping() {
    let (secrets, policy) = keys();
    let message = "Universal Bitcoin proof of reserves\nmessage: hi\n";
    for (wrapping, form) in [
        (Wrapping::Wsh, Form::Simple),
        (Wrapping::Wsh, Form::Full),
        (Wrapping::ShWsh, Form::Full),
    ] {
        let req = SigningRequest::new(
            &policy,
            wrapping,
            Network::Bitcoin,
            message.as_bytes(),
            form,
        )
        .unwrap();
        // The request survives a JSON round trip (it travels to the guardians).
        let req: SigningRequest =
            serde_json::from_str(&serde_json::to_string(&req).unwrap()).unwrap();
        let address = policy.address(Network::Bitcoin, wrapping);
        assert_eq!(req.address().unwrap(), address);
        // Partials from keys 3 and 1, in "wrong" order: combine sorts them.
        let partials: Vec<_> = [2, 0]
            .iter()
            .map(|&i| sign_partial(&req, &secrets[i]).unwrap())
            .collect();
        for p in &partials {
            verify_partial(&req, p).unwrap();
        }
        let sig = combine(&req, &partials).unwrap();
        let expected_prefix = if form == Form::Simple { "smp" } else { "ful" };
        assert!(sig.starts_with(expected_prefix));
        let v = bip322::verify(&address, message.as_bytes(), &sig).unwrap();
        assert_eq!(
            v.format,
            if form == Form::Simple {
                Format::Simple
            } else {
                Format::Full
            }
        );
        assert!(bip322::verify(&address, b"other", &sig).is_err());
        assert!(
            bip322_crate_accepts(&address.to_string(), message, &sig),
            "bip322 crate rejects {wrapping:?} {form:?}"
        );
        assert!(!bip322_crate_accepts(&address.to_string(), "other", &sig));
    }
}

#[test]
fn duplicates_ignored_and_threshold_enforced() {
    let (secrets, policy) = keys();
    let req =
        SigningRequest::new(&policy, Wrapping::Wsh, Network::Bitcoin, b"m", Form::Simple).unwrap();
    let a = sign_partial(&req, &secrets[0]).unwrap();
    let b = sign_partial(&req, &secrets[1]).unwrap();
    assert_eq!(
        combine(&req, std::slice::from_ref(&a)),
        Err(MultisigError::NotEnoughSignatures {
            valid: 1,
            needed: 2
        })
    );
    assert_eq!(
        combine(&req, &[a.clone(), a.clone()]),
        Err(MultisigError::NotEnoughSignatures {
            valid: 1,
            needed: 2
        })
    );
    let sig = combine(&req, &[a.clone(), a.clone(), b.clone()]).unwrap();
    bip322::verify(&policy.address(Network::Bitcoin, Wrapping::Wsh), b"m", &sig).unwrap();
    // All three: still a valid 2-of-3 witness (extra one left out).
    let c = sign_partial(&req, &secrets[2]).unwrap();
    let sig = combine(&req, &[c, b, a]).unwrap();
    bip322::verify(&policy.address(Network::Bitcoin, Wrapping::Wsh), b"m", &sig).unwrap();
}

#[test]
fn tampered_partials_rejected() {
    let (secrets, policy) = keys();
    let req =
        SigningRequest::new(&policy, Wrapping::Wsh, Network::Bitcoin, b"m", Form::Full).unwrap();
    let good = sign_partial(&req, &secrets[0]).unwrap();
    let other = sign_partial(&req, &secrets[1]).unwrap();

    // A flipped bit in the signature.
    let mut flipped = good.clone();
    flipped.signatures[0][10] ^= 1;
    assert!(verify_partial(&req, &flipped).is_err());
    assert!(matches!(
        combine(&req, &[flipped, other.clone()]),
        Err(MultisigError::BadPartial { .. })
    ));
    // A valid signature claimed by the wrong key.
    let mut relabelled = good.clone();
    relabelled.pubkey = other.pubkey;
    assert!(verify_partial(&req, &relabelled).is_err());
    // A signature over another message.
    let req2 =
        SigningRequest::new(&policy, Wrapping::Wsh, Network::Bitcoin, b"n", Form::Full).unwrap();
    let foreign = sign_partial(&req2, &secrets[0]).unwrap();
    assert!(verify_partial(&req, &foreign).is_err());
    // Another sighash type byte.
    let mut anyone = good.clone();
    *anyone.signatures[0].last_mut().unwrap() = 0x81;
    assert!(verify_partial(&req, &anyone).is_err());
    // A key outside the policy.
    let outsider = SecretKey::from_slice(&[9; 32]).unwrap();
    assert_eq!(
        sign_partial(&req, &outsider).unwrap_err().to_string(),
        format!(
            "key {} is not part of this policy",
            CompressedPublicKey(outsider.public_key(&Secp256k1::new()))
        )
    );
    verify_partial(&req, &good).unwrap();
}

#[test]
fn signer_refuses_a_psbt_for_another_message() {
    let (secrets, policy) = keys();
    let shown = SigningRequest::new(
        &policy,
        Wrapping::Wsh,
        Network::Bitcoin,
        b"harmless",
        Form::Full,
    )
    .unwrap();
    let evil = SigningRequest::new(
        &policy,
        Wrapping::Wsh,
        Network::Bitcoin,
        b"evil",
        Form::Full,
    )
    .unwrap();
    // The guardian is shown "harmless" but given the PSBT for "evil".
    let mut mixed = shown.clone();
    mixed.psbt = evil.psbt.clone();
    let err = sign_partial(&mixed, &secrets[0]).unwrap_err();
    assert!(matches!(err, MultisigError::RequestMismatch(_)), "{err}");
    // Same with the message field of the PSBT made to match but the tx not.
    let mut other_policy = shown.clone();
    let (_, policy3) = {
        let secp = Secp256k1::new();
        let pubs = (4u8..=6)
            .map(|i| {
                CompressedPublicKey(SecretKey::from_slice(&[i; 32]).unwrap().public_key(&secp))
            })
            .collect();
        ((), SortedMulti::new(2, pubs).unwrap())
    };
    other_policy.psbt = SigningRequest::new(
        &policy3,
        Wrapping::Wsh,
        Network::Bitcoin,
        b"harmless",
        Form::Full,
    )
    .unwrap()
    .psbt;
    assert!(matches!(
        sign_partial(&other_policy, &secrets[0]),
        Err(MultisigError::RequestMismatch(_))
    ));
    // Garbage PSBT.
    let mut garbage = shown.clone();
    garbage.psbt = "cHNidP8B".into();
    assert!(sign_partial(&garbage, &secrets[0]).is_err());
    // The honest request is signed.
    sign_partial(&shown, &secrets[0]).unwrap();
}

#[test]
fn descriptors() {
    let (_, policy) = keys();
    let wsh = policy.descriptor_wsh();
    assert!(wsh.starts_with("wsh(sortedmulti(2,"));
    let (parsed, wrapping) = SortedMulti::parse_descriptor(&wsh).unwrap();
    assert_eq!((parsed, wrapping), (policy.clone(), Wrapping::Wsh));
    let sh = policy.descriptor_sh_wsh();
    assert!(sh.starts_with("sh(wsh(sortedmulti(2,"));
    assert_eq!(
        SortedMulti::parse_descriptor(&sh).unwrap().1,
        Wrapping::ShWsh
    );
    // A broken checksum is refused.
    let mut bad = wsh.clone();
    bad.pop();
    bad.push(if wsh.ends_with('q') { 'p' } else { 'q' });
    assert!(SortedMulti::parse_descriptor(&bad).is_err());
    // Bounds.
    let k = policy.keys()[0];
    assert!(SortedMulti::new(0, vec![k]).is_err());
    assert!(SortedMulti::new(2, vec![k]).is_err());
    assert!(SortedMulti::new(1, vec![k, k]).is_err());
    assert!(SortedMulti::new(1, vec![k; 16]).is_err());
}

fn fake_utxos(spk_hex: &str, n: u8) -> Vec<Utxo> {
    (0..n)
        .map(|i| Utxo {
            txid: format!("{:02x}", i + 1).repeat(32),
            vout: u32::from(i),
            amount_sats: 100_000 * (u64::from(i) + 1),
            script_pubkey_hex: spk_hex.to_string(),
        })
        .collect()
}

#[test]
fn multisig_proof_of_funds() {
    let (secrets, policy) = keys();
    let address = policy.address(Network::Bitcoin, Wrapping::Wsh);
    let spk = hex::encode(address.script_pubkey().as_bytes());
    let utxos = fake_utxos(&spk, 3);
    let req =
        SigningRequest::proof_of_funds(&policy, Wrapping::Wsh, Network::Bitcoin, b"pof", &utxos)
            .unwrap();
    let partials = [
        sign_partial(&req, &secrets[0]).unwrap(),
        sign_partial(&req, &secrets[1]).unwrap(),
    ];
    assert_eq!(partials[0].signatures.len(), 4);
    let sig = combine(&req, &partials).unwrap();
    assert!(sig.starts_with("pof"));
    let proven = pof::verify_pof(&address, b"pof", &sig, &utxos).unwrap();
    assert_eq!(proven.total_sats, 600_000);
    assert!(pof::verify_pof(&address, b"pof", &sig, &utxos[..2]).is_err());
    assert!(pof::verify_pof(&address, b"fop", &sig, &utxos).is_err());
    assert!(bip322_crate_accepts(&address.to_string(), "pof", &sig));
    // UTXOs of another script are refused when building.
    let foreign = fake_utxos("0014", 1);
    assert!(SigningRequest::proof_of_funds(
        &policy,
        Wrapping::Wsh,
        Network::Bitcoin,
        b"pof",
        &foreign
    )
    .is_err());
}

#[test]
fn single_key_proof_of_funds() {
    let secp = Secp256k1::new();
    let secret = SecretKey::from_slice(&[7; 32]).unwrap();
    let address = bitcoin::Address::p2wpkh(
        &CompressedPublicKey(secret.public_key(&secp)),
        Network::Bitcoin,
    );
    let spk = hex::encode(address.script_pubkey().as_bytes());
    let utxos = fake_utxos(&spk, 2);
    let sig = pof::sign_pof_single(&secret, &address, b"funds", &utxos).unwrap();
    let proven = pof::verify_pof(&address, b"funds", &sig, &utxos).unwrap();
    assert_eq!(proven.total_sats, 300_000);
    assert_eq!(
        bip322::verify(&address, b"funds", &sig).unwrap().format,
        Format::ProofOfFunds
    );
    assert!(bip322_crate_accepts(&address.to_string(), "funds", &sig));
    let mut wrong_amount = utxos.clone();
    wrong_amount[1].amount_sats -= 1;
    assert!(pof::verify_pof(&address, b"funds", &sig, &wrong_amount).is_err());
}

/// The prepared path (plan and sighashes computed once) gives the same partials and
/// the same final signature as the one-call functions, refuses what they refuse, and
/// never lets a partial verified for one request count for another.
#[test]
fn prepared_requests_match_the_one_call_functions() {
    let (secrets, policy) = keys();
    let secp = Secp256k1::new();
    let message = b"Universal Bitcoin proof of reserves\nmessage: prepared\n";
    let coordinator = PreparedRequest::new(
        &policy,
        Wrapping::Wsh,
        Network::Bitcoin,
        message,
        Form::Simple,
    )
    .unwrap();
    let request = coordinator.request().clone();
    assert_eq!(
        request,
        SigningRequest::new(
            &policy,
            Wrapping::Wsh,
            Network::Bitcoin,
            message,
            Form::Simple
        )
        .unwrap()
    );
    // Each guardian prepares the untrusted request itself (cached descriptor or not).
    let cache = DescriptorCache::new();
    let mut verified = Vec::new();
    for (i, secret) in secrets.iter().enumerate() {
        let guardian = if i == 0 {
            request.clone().prepare().unwrap()
        } else {
            request.clone().prepare_cached(&cache).unwrap()
        };
        let pubkey = CompressedPublicKey(secret.public_key(&secp));
        let partial = guardian.sign_partial_as(secret, pubkey).unwrap();
        assert_eq!(partial, sign_partial(&request, secret).unwrap());
        assert_eq!(partial, guardian.sign_partial(secret).unwrap());
        verify_partial(&request, &partial).unwrap();
        verified.push(coordinator.verify_partial(partial).unwrap());
    }
    let partials: Vec<_> = verified.iter().map(|v| v.partial().clone()).collect();
    let sig = coordinator.combine(&verified[..2]).unwrap();
    assert_eq!(sig, combine(&request, &partials[..2]).unwrap());
    let address = policy.address(Network::Bitcoin, Wrapping::Wsh).to_string();
    assert!(bip322_crate_accepts(
        &address,
        std::str::from_utf8(message).unwrap(),
        &sig
    ));
    assert!(matches!(
        coordinator.combine(&verified[..1]),
        Err(MultisigError::NotEnoughSignatures {
            valid: 1,
            needed: 2
        })
    ));

    // A tampered partial does not verify; a wrong public key named by the signer
    // yields a partial that does not verify either.
    let mut bad = partials[0].clone();
    let n = bad.signatures[0].len();
    bad.signatures[0][n - 10] ^= 1;
    assert!(coordinator.verify_partial(bad).is_err());
    let wrong_key = CompressedPublicKey(secrets[1].public_key(&secp));
    let lying = request
        .clone()
        .prepare()
        .unwrap()
        .sign_partial_as(&secrets[0], wrong_key)
        .unwrap();
    assert!(coordinator.verify_partial(lying).is_err());

    // Partials verified for another message are checked again by combine, and fail.
    let other = PreparedRequest::new(
        &policy,
        Wrapping::Wsh,
        Network::Bitcoin,
        b"other",
        Form::Simple,
    )
    .unwrap();
    assert!(matches!(
        other.combine(&verified[..2]),
        Err(MultisigError::BadPartial { .. })
    ));

    // The cached path refuses a PSBT for another message, as `prepare` does.
    let mut mixed = request.clone();
    mixed.psbt = other.request().psbt.clone();
    assert!(matches!(
        mixed.clone().prepare_cached(&cache),
        Err(MultisigError::RequestMismatch(_))
    ));
    assert!(matches!(
        mixed.prepare(),
        Err(MultisigError::RequestMismatch(_))
    ));
}
