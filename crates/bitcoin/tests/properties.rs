//! Property tests: for random keys and messages, every address type signs and
//! verifies, and any change of message, signature byte or address makes it fail.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::base64::Engine as _;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Address, CompressedPublicKey, Network};
use proptest::prelude::*;
use ubtc_bitcoin::bip137;
use ubtc_bitcoin::bip322::{self, ToSignParams};
use ubtc_bitcoin::multisig::{combine, sign_partial, Form, SigningRequest, SortedMulti, Wrapping};

#[derive(Debug, Clone, Copy)]
enum Kind {
    P2wpkh,
    ShP2wpkh,
    P2tr,
    P2pkh,
    Wsh2of3,
    ShWsh2of3,
}

fn secret() -> impl Strategy<Value = SecretKey> {
    any::<[u8; 32]>().prop_filter_map("valid secret key", |b| SecretKey::from_slice(&b).ok())
}

/// Signs `message` for an address of `kind` built from `keys`; returns the address and
/// the signature string.
fn sign(kind: Kind, keys: &[SecretKey; 3], message: &[u8]) -> (Address, String) {
    let secp = Secp256k1::new();
    let pk = CompressedPublicKey(keys[0].public_key(&secp));
    match kind {
        Kind::P2wpkh => {
            let a = Address::p2wpkh(&pk, Network::Bitcoin);
            let s = bip322::sign_simple(&keys[0], &a, message).unwrap();
            (a, s)
        }
        Kind::ShP2wpkh => {
            let a = Address::p2shwpkh(&pk, Network::Bitcoin);
            let s = bip322::sign_full(&keys[0], &a, message, ToSignParams::default()).unwrap();
            (a, s)
        }
        Kind::P2tr => {
            let (x, _) = keys[0].x_only_public_key(&secp);
            let a = Address::p2tr(&secp, x, None, Network::Bitcoin);
            let s = bip322::sign_simple(&keys[0], &a, message).unwrap();
            (a, s)
        }
        Kind::P2pkh => {
            let a = Address::p2pkh(pk, Network::Bitcoin);
            (a, bip137::sign(&keys[0], message, true))
        }
        Kind::Wsh2of3 | Kind::ShWsh2of3 => {
            let pubs = keys
                .iter()
                .map(|k| CompressedPublicKey(k.public_key(&secp)))
                .collect();
            let policy = SortedMulti::new(2, pubs).unwrap();
            let (wrapping, form) = match kind {
                Kind::Wsh2of3 => (Wrapping::Wsh, Form::Simple),
                _ => (Wrapping::ShWsh, Form::Full),
            };
            let req =
                SigningRequest::new(&policy, wrapping, Network::Bitcoin, message, form).unwrap();
            let partials = [
                sign_partial(&req, &keys[2]).unwrap(),
                sign_partial(&req, &keys[1]).unwrap(),
            ];
            (
                policy.address(Network::Bitcoin, wrapping),
                combine(&req, &partials).unwrap(),
            )
        }
    }
}

/// Flips bits of one decoded byte of the signature, keeping its prefix.
fn flip(sig: &str, index: usize, mask: u8) -> String {
    let (prefix, b64) = match sig.get(..3) {
        Some(p @ ("smp" | "ful" | "pof")) => (p, &sig[3..]),
        _ => ("", sig),
    };
    let mut bytes = BASE64.decode(b64).unwrap();
    let i = index % bytes.len();
    bytes[i] ^= mask;
    format!("{prefix}{}", BASE64.encode(bytes))
}

fn kinds() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::P2wpkh),
        Just(Kind::ShP2wpkh),
        Just(Kind::P2tr),
        Just(Kind::P2pkh),
        Just(Kind::Wsh2of3),
        Just(Kind::ShWsh2of3),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn sign_verify_and_tamper(
        kind in kinds(),
        keys in [secret(), secret(), secret()],
        other in secret(),
        message in proptest::collection::vec(any::<u8>(), 0..80),
        index in any::<usize>(),
        mask in 1u8..=255,
    ) {
        prop_assume!(keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2]);
        prop_assume!(!keys.contains(&other));
        let (address, sig) = sign(kind, &keys, &message);
        prop_assert!(bip322::verify(&address, &message, &sig).is_ok(), "{:?} {}", kind, sig);

        // Another message.
        let mut changed = message.clone();
        if changed.is_empty() {
            changed.push(0);
        } else {
            let i = index % changed.len();
            changed[i] ^= mask;
        }
        prop_assert!(bip322::verify(&address, &changed, &sig).is_err());

        // One byte of the signature changed.
        let tampered = flip(&sig, index, mask);
        prop_assert!(
            bip322::verify(&address, &message, &tampered).is_err(),
            "{:?}: flipped byte {} with {:#x} still verifies", kind, index, mask
        );

        // Another key's address of the same type.
        let other_keys = [other, keys[1], keys[2]];
        let (other_address, _) = sign(kind, &other_keys, b"");
        prop_assert!(bip322::verify(&other_address, &message, &sig).is_err());
    }
}

/// Every single-bit change at every byte of one signature of each type fails.
#[test]
fn every_byte_flip_fails() {
    let keys = [
        SecretKey::from_slice(&[0x0a; 32]).unwrap(),
        SecretKey::from_slice(&[0x0b; 32]).unwrap(),
        SecretKey::from_slice(&[0x0c; 32]).unwrap(),
    ];
    let message = b"Universal Bitcoin proof of reserves\n";
    for kind in [
        Kind::P2wpkh,
        Kind::ShP2wpkh,
        Kind::P2tr,
        Kind::P2pkh,
        Kind::Wsh2of3,
        Kind::ShWsh2of3,
    ] {
        let (address, sig) = sign(kind, &keys, message);
        let len = BASE64
            .decode(sig.trim_start_matches(['s', 'm', 'p', 'f', 'u', 'l']))
            .unwrap()
            .len();
        for index in 0..len {
            for mask in [0x01, 0x80] {
                let tampered = flip(&sig, index, mask);
                assert!(
                    bip322::verify(&address, message, &tampered).is_err(),
                    "{kind:?}: byte {index} ^ {mask:#x} still verifies"
                );
            }
        }
    }
}
