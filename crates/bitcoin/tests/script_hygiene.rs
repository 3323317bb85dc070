//! Security review F4: the interpreter's edges follow consensus. What consensus does
//! not forbid (large tapscripts, many witness items, OP_SUCCESSx) is inconclusive, not
//! invalid; MINIMALDATA applies to executed pushes only; public keys are checked for
//! encoding even next to an empty signature, as Core's STRICTENC does.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::taproot::{LeafVersion, TaprootBuilder};
use bitcoin::{Address, Network, ScriptBuf, Witness};
use ubtc_bitcoin::bip322::{self, encode_simple};

fn p2wsh(script: &[u8], items: &[&[u8]]) -> Result<bip322::Verified, bip322::VerifyError> {
    let script = ScriptBuf::from_bytes(script.to_vec());
    let address = Address::p2wsh(&script, Network::Bitcoin);
    let mut all: Vec<&[u8]> = items.to_vec();
    all.push(script.as_bytes());
    bip322::verify(&address, b"m", &encode_simple(&Witness::from_slice(&all)))
}

fn tapscript(script: Vec<u8>, items: &[&[u8]]) -> Result<bip322::Verified, bip322::VerifyError> {
    let secp = Secp256k1::new();
    let internal = SecretKey::from_slice(&[7; 32])
        .unwrap()
        .x_only_public_key(&secp)
        .0;
    let script = ScriptBuf::from_bytes(script);
    let info = TaprootBuilder::new()
        .add_leaf(0, script.clone())
        .unwrap()
        .finalize(&secp, internal)
        .unwrap();
    let control = info
        .control_block(&(script.clone(), LeafVersion::TapScript))
        .unwrap();
    let address = Address::p2tr_tweaked(info.output_key(), Network::Bitcoin);
    let mut all: Vec<Vec<u8>> = items.iter().map(|i| i.to_vec()).collect();
    all.push(script.to_bytes());
    all.push(control.serialize());
    bip322::verify(&address, b"m", &encode_simple(&Witness::from_slice(&all)))
}

#[test]
fn tapscripts_over_10000_bytes_are_inconclusive() {
    // OP_1 and NOPs: valid at 10 000 bytes, and no consensus limit above.
    let mut script = vec![0x51];
    script.extend(std::iter::repeat_n(0x61, 9_999));
    tapscript(script.clone(), &[]).unwrap();
    script.push(0x61);
    let e = tapscript(script, &[]).unwrap_err();
    assert!(e.is_inconclusive(), "{e}");
}

#[test]
fn more_than_64_witness_items_is_inconclusive() {
    // OP_DROP x 64, OP_1: consensus accepts it; we do not check so many items.
    let mut script = vec![0x75; 64];
    script.push(0x51);
    let items = vec![&[1u8][..]; 64];
    let e = p2wsh(&script, &items).unwrap_err();
    assert!(e.is_inconclusive(), "{e}");
    // Within the limit the same shape verifies.
    let mut script = vec![0x75; 63];
    script.push(0x51);
    p2wsh(&script, &vec![&[1u8][..]; 63]).unwrap();
}

#[test]
fn op_success_anywhere_in_a_tapscript_is_inconclusive() {
    // BIP-342: an OP_SUCCESSx anywhere makes the script succeed before execution, even
    // after an OP_VERIFY that would fail.
    for success in [0x50u8, 0x7e, 0xbb, 0xfe] {
        let e = tapscript(vec![0x00, 0x69, success], &[]).unwrap_err();
        assert!(e.is_inconclusive(), "{success:#x}: {e}");
    }
}

#[test]
fn minimaldata_only_for_executed_pushes() {
    // OP_0 OP_IF <PUSHDATA1 of one byte 0x05> OP_ENDIF OP_1: the non-minimal push is
    // never executed.
    p2wsh(&[0x00, 0x63, 0x4c, 0x01, 0x05, 0x68, 0x51], &[]).unwrap();
    // Executed, it is refused.
    let e = p2wsh(&[0x4c, 0x01, 0x05, 0x75, 0x51], &[]).unwrap_err();
    assert!(e.to_string().contains("MINIMALDATA"), "{e}");
    // Other non-minimal forms: a one-byte push of 1..16 or 0x81, an empty PUSHDATA1.
    for script in [
        vec![0x01, 0x07, 0x75, 0x51],
        vec![0x01, 0x81, 0x75, 0x51],
        vec![0x4c, 0x00, 0x75, 0x51],
        vec![0x4d, 0x01, 0x00, 0x07, 0x75, 0x51],
    ] {
        let e = p2wsh(&script, &[]).unwrap_err();
        assert!(e.to_string().contains("MINIMALDATA"), "{script:02x?}: {e}");
        let mut skipped = vec![0x00, 0x63];
        skipped.extend_from_slice(&script[..script.len() - 2]);
        skipped.extend_from_slice(&[0x68, 0x51]);
        p2wsh(&skipped, &[]).unwrap();
    }
}

#[test]
fn multisig_checks_key_encoding_with_empty_signatures() {
    // 1-of-1 CHECKMULTISIG over a malformed key, satisfied with an empty signature:
    // Core's STRICTENC refuses the key before looking at the (empty) signature.
    let mut bad = vec![0x05];
    bad.extend([0x11; 32]);
    let mut script = vec![0x51, 0x21];
    script.extend(&bad);
    script.extend([0x51, 0xae]);
    let e = p2wsh(&script, &[&[], &[]]).unwrap_err();
    assert!(
        e.to_string().contains("public key is not validly encoded"),
        "{e}"
    );
    // An uncompressed key in a witness script, likewise (WITNESS_PUBKEYTYPE).
    let secp = Secp256k1::new();
    let full = SecretKey::from_slice(&[9; 32])
        .unwrap()
        .public_key(&secp)
        .serialize_uncompressed();
    let mut script = vec![0x51, 0x41];
    script.extend(full);
    script.extend([0x51, 0xae]);
    let e = p2wsh(&script, &[&[], &[]]).unwrap_err();
    assert!(e.to_string().contains("compressed"), "{e}");
}
