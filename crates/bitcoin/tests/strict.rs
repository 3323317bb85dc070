//! The strict rules, one by one, with hand-made signatures that a lax verifier would
//! accept.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::base64::Engine as _;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{ecdsa, Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{Address, Amount, CompressedPublicKey, Network, ScriptBuf, Transaction, Witness};
use ubtc_bitcoin::bip322::{self, encode_full, encode_simple, ToSignParams, VerifyError};

fn key(b: u8) -> SecretKey {
    SecretKey::from_slice(&[b; 32]).unwrap()
}

fn cpk(k: &SecretKey) -> CompressedPublicKey {
    CompressedPublicKey(k.public_key(&Secp256k1::new()))
}

/// `to_sign` for `address` and `message`, and the P2WPKH sighash of its input as if
/// the script code were that of `code_key`'s P2PKH.
fn p2wpkh_sighash(
    address: &Address,
    message: &[u8],
    code_key: &SecretKey,
) -> (Transaction, Message) {
    let spend = bip322::to_spend(&address.script_pubkey(), message);
    let tx = bip322::to_sign(spend.compute_txid(), ToSignParams::default());
    let spk = ScriptBuf::new_p2wpkh(&cpk(code_key).wpubkey_hash());
    let h = SighashCache::new(&tx)
        .p2wpkh_signature_hash(0, &spk, Amount::ZERO, EcdsaSighashType::All)
        .unwrap();
    (tx, Message::from_digest(h.to_byte_array()))
}

fn der_all(sig: &ecdsa::Signature, hash_type: u8) -> Vec<u8> {
    let mut v = sig.serialize_der().to_vec();
    v.push(hash_type);
    v
}

#[test]
fn public_key_must_match_the_address() {
    // RUSTSEC-2026-0334: a valid signature by key A, presented with A's public key,
    // for B's address. Only the public-key-hash check stops it.
    let (a, b) = (key(1), key(2));
    let address_b = Address::p2wpkh(&cpk(&b), Network::Bitcoin);
    let (_, msg) = p2wpkh_sighash(&address_b, b"m", &a);
    let sig = Secp256k1::new().sign_ecdsa(&msg, &a);
    let witness = Witness::from_slice(&[der_all(&sig, 1), cpk(&a).to_bytes().to_vec()]);
    let err = bip322::verify(&address_b, b"m", &encode_simple(&witness)).unwrap_err();
    assert!(
        err.to_string()
            .contains("public key does not match the address"),
        "{err}"
    );
}

#[test]
fn high_s_and_other_sighash_types_are_refused() {
    let k = key(3);
    let address = Address::p2wpkh(&cpk(&k), Network::Bitcoin);
    let (_, msg) = p2wpkh_sighash(&address, b"m", &k);
    let secp = Secp256k1::new();
    let sig = secp.sign_ecdsa(&msg, &k);
    let pk = cpk(&k).to_bytes().to_vec();
    // Sanity: the honest one verifies.
    let ok = Witness::from_slice(&[der_all(&sig, 1), pk.clone()]);
    bip322::verify(&address, b"m", &encode_simple(&ok)).unwrap();

    // High S: s' = n - s is an equally valid ECDSA signature.
    let compact = sig.serialize_compact();
    let order: [u8; 32] = bitcoin::secp256k1::constants::CURVE_ORDER;
    let mut s = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = i16::from(order[i]) - i16::from(compact[32 + i]) - borrow;
        s[i] = d.rem_euclid(256) as u8;
        borrow = i16::from(d < 0);
    }
    let mut high = compact;
    high[32..].copy_from_slice(&s);
    let high = ecdsa::Signature::from_compact(&high).unwrap();
    let w = Witness::from_slice(&[der_all(&high, 1), pk.clone()]);
    let err = bip322::verify(&address, b"m", &encode_simple(&w)).unwrap_err();
    assert!(err.to_string().contains("high S"), "{err}");

    for ty in [0x00, 0x02, 0x03, 0x81] {
        let w = Witness::from_slice(&[der_all(&sig, ty), pk.clone()]);
        let err = bip322::verify(&address, b"m", &encode_simple(&w)).unwrap_err();
        assert!(err.to_string().contains("sighash type"), "{ty}: {err}");
    }
}

#[test]
fn unknown_scripts_are_inconclusive_not_valid() {
    // P2WSH of `OP_1 OP_1 OP_ADD OP_2 OP_EQUAL`: anyone can satisfy it, but we do not
    // interpret OP_ADD, so the answer must be "inconclusive".
    let script = ScriptBuf::from_bytes(vec![0x51, 0x51, 0x93, 0x52, 0x87]);
    let address = Address::p2wsh(&script, Network::Bitcoin);
    let w = Witness::from_slice(&[script.as_bytes()]);
    let err = bip322::verify(&address, b"m", &encode_simple(&w)).unwrap_err();
    assert!(err.is_inconclusive(), "{err}");
    assert!(err.to_string().starts_with("inconclusive:"), "{err}");

    // An upgradeable NOP.
    let script = ScriptBuf::from_bytes(vec![0xb0, 0x51]);
    let address = Address::p2wsh(&script, Network::Bitcoin);
    let w = Witness::from_slice(&[script.as_bytes()]);
    assert!(bip322::verify(&address, b"m", &encode_simple(&w))
        .unwrap_err()
        .is_inconclusive());

    // But an anyone-can-spend script we do understand is valid, as BIP-322 says.
    let script = ScriptBuf::from_bytes(vec![0x51]);
    let address = Address::p2wsh(&script, Network::Bitcoin);
    let w = Witness::from_slice(&[script.as_bytes()]);
    bip322::verify(&address, b"m", &encode_simple(&w)).unwrap();
}

#[test]
fn to_sign_shape_is_checked() {
    let k = key(4);
    let address = Address::p2wpkh(&cpk(&k), Network::Bitcoin);
    let full = bip322::sign_full(&k, &address, b"m", ToSignParams::default()).unwrap();
    let tx: Transaction =
        bitcoin::consensus::deserialize(&BASE64.decode(&full[3..]).unwrap()).unwrap();

    let mut extra_output = tx.clone();
    extra_output.output.push(extra_output.output[0].clone());
    let err = bip322::verify(&address, b"m", &encode_full(&extra_output)).unwrap_err();
    assert!(err.to_string().contains("exactly one output"), "{err}");

    let mut version1 = tx.clone();
    version1.version = Version(1);
    assert!(bip322::verify(&address, b"m", &encode_full(&version1))
        .unwrap_err()
        .is_inconclusive());

    let mut other_prevout = tx.clone();
    other_prevout.input[0].previous_output.vout = 1;
    assert!(bip322::verify(&address, b"m", &encode_full(&other_prevout)).is_err());

    let mut two_inputs = tx.clone();
    two_inputs.input.push(two_inputs.input[0].clone());
    assert!(bip322::verify(&address, b"m", &encode_full(&two_inputs)).is_err());
}

#[test]
fn multisig_null_dummy_and_order() {
    use ubtc_bitcoin::multisig::{
        combine, sign_partial, Form, SigningRequest, SortedMulti, Wrapping,
    };
    let keys = [key(5), key(6), key(7)];
    let policy = SortedMulti::new(2, keys.iter().map(cpk).collect()).unwrap();
    let address = policy.address(Network::Bitcoin, Wrapping::Wsh);
    let req =
        SigningRequest::new(&policy, Wrapping::Wsh, Network::Bitcoin, b"m", Form::Simple).unwrap();
    let good = combine(
        &req,
        &[
            sign_partial(&req, &keys[0]).unwrap(),
            sign_partial(&req, &keys[1]).unwrap(),
        ],
    )
    .unwrap();
    let witness: Witness =
        bitcoin::consensus::deserialize(&BASE64.decode(&good[3..]).unwrap()).unwrap();
    let items: Vec<Vec<u8>> = witness.iter().map(<[u8]>::to_vec).collect();

    let mut dummy = items.clone();
    dummy[0] = vec![0x01];
    let err =
        bip322::verify(&address, b"m", &encode_simple(&Witness::from_slice(&dummy))).unwrap_err();
    assert!(err.to_string().contains("NULLDUMMY"), "{err}");

    // Signatures out of key order fail CHECKMULTISIG.
    let mut swapped = items.clone();
    swapped.swap(1, 2);
    assert!(bip322::verify(
        &address,
        b"m",
        &encode_simple(&Witness::from_slice(&swapped))
    )
    .is_err());

    // One signature and an empty one: NULLFAIL-clean failure, still invalid.
    let mut one = items.clone();
    one[2] = Vec::new();
    assert!(bip322::verify(&address, b"m", &encode_simple(&Witness::from_slice(&one))).is_err());

    // Same signature twice.
    let mut twice = items.clone();
    twice[2] = twice[1].clone();
    assert!(bip322::verify(&address, b"m", &encode_simple(&Witness::from_slice(&twice))).is_err());
}

#[test]
fn limits_before_decoding() {
    let address = Address::p2wpkh(&cpk(&key(8)), Network::Bitcoin);
    let huge = format!("smp{}", "A".repeat(bip322::MAX_SIGNATURE_CHARS));
    assert!(matches!(
        bip322::verify(&address, b"m", &huge),
        Err(VerifyError::TooLong { .. })
    ));
    // Too many witness items is refused before any signature check.
    let items: Vec<Vec<u8>> = (0..65).map(|_| vec![1u8]).collect();
    let err =
        bip322::verify(&address, b"m", &encode_simple(&Witness::from_slice(&items))).unwrap_err();
    assert!(err.to_string().contains("witness items"), "{err}");
}
