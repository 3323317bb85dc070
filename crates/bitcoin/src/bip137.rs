//! BIP-137 ("legacy", Bitcoin Core `signmessage`) compact signatures.
//!
//! The first byte (header) is `27 + recovery id` plus a type offset: +0 uncompressed
//! P2PKH, +4 compressed P2PKH, +8 P2SH-P2WPKH, +12 P2WPKH. `bitcoin::sign_message`
//! only knows 27–34, so the header is handled here.
//!
//! **The Electrum case.** Electrum (and Sparrow, and Trezor's firmware before it set
//! segwit headers) signs for P2WPKH and P2SH-P2WPKH addresses with a compressed-P2PKH
//! header (31–34). [`verify`] accepts that, and says so in
//! [`Bip137Verified::header_matches_address`]: the recovered key is exactly the key
//! the address commits to, so this admits no signature the key holder did not make.
//! The reverse (a segwit header 35–42 for a P2PKH address) is refused: no wallet
//! produces it. Note that BIP-322 2.0 restricts legacy signatures to P2PKH, so
//! [`crate::bip322::verify`] uses this only for P2PKH addresses.

use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::base64::Engine as _;
use bitcoin::hashes::{hash160, sha256d, Hash, HashEngine};
use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use bitcoin::secp256k1::{Message, PublicKey, SecretKey};
use bitcoin::{Address, CompressedPublicKey, ScriptBuf};
use serde::Serialize;

use crate::SECP;

/// Prefix of the signed hash (`\x18Bitcoin Signed Message:\n`).
const MAGIC: &[u8] = b"\x18Bitcoin Signed Message:\n";
/// Base64 of 65 bytes is 88 characters; anything longer is refused before decoding.
const MAX_CHARS: usize = 100;

/// The address type a BIP-137 header announces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeaderKind {
    P2pkhUncompressed,
    P2pkhCompressed,
    P2shP2wpkh,
    P2wpkh,
}

impl HeaderKind {
    fn base(self) -> u8 {
        match self {
            HeaderKind::P2pkhUncompressed => 27,
            HeaderKind::P2pkhCompressed => 31,
            HeaderKind::P2shP2wpkh => 35,
            HeaderKind::P2wpkh => 39,
        }
    }
}

/// A BIP-137 signature that verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bip137Verified {
    pub header: u8,
    pub kind: HeaderKind,
    /// False in the Electrum case: a compressed-P2PKH header for a segwit address.
    pub header_matches_address: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Bip137Error {
    #[error("signature too long for BIP-137 ({0} characters)")]
    TooLong(usize),
    #[error("error decoding signature as base64: {0}")]
    Base64(String),
    #[error("BIP-137 signature must be 65 bytes, got {0}")]
    Length(usize),
    #[error("invalid signature: header byte {0} is not a BIP-137 header (27-42)")]
    Header(u8),
    #[error("invalid signature: not a valid recoverable signature")]
    Malformed,
    #[error("invalid signature: recovered key does not match the address")]
    Mismatch,
    #[error("BIP-137 signatures are not defined for address {0}")]
    UnsupportedAddress(String),
}

/// `sha256d(magic || varint(len) || message)`: the hash Bitcoin Core's `signmessage`
/// signs. Takes bytes (not `&str`) so that every message can be signed exactly.
pub fn signed_message_hash(message: &[u8]) -> [u8; 32] {
    let mut engine = sha256d::Hash::engine();
    engine.input(MAGIC);
    let mut len = Vec::with_capacity(9);
    bitcoin::consensus::Encodable::consensus_encode(
        &bitcoin::VarInt(message.len() as u64),
        &mut len,
    )
    .unwrap_or_default();
    engine.input(&len);
    engine.input(message);
    sha256d::Hash::from_engine(engine).to_byte_array()
}

/// Signs with a P2PKH header: 31–34 when `compressed`, else 27–30.
pub fn sign(secret: &SecretKey, message: &[u8], compressed: bool) -> String {
    let kind = if compressed {
        HeaderKind::P2pkhCompressed
    } else {
        HeaderKind::P2pkhUncompressed
    };
    sign_with_header(secret, message, kind)
}

/// Signs with the header of `kind` (35–42 for segwit, as Trezor does).
pub fn sign_with_header(secret: &SecretKey, message: &[u8], kind: HeaderKind) -> String {
    let msg = Message::from_digest(signed_message_hash(message));
    let sig = SECP.sign_ecdsa_recoverable(&msg, secret);
    let (rec_id, compact) = sig.serialize_compact();
    let mut out = [0u8; 65];
    // Recovery ids are 0..=3.
    out[0] = kind.base() + rec_id.to_i32() as u8;
    out[1..].copy_from_slice(&compact);
    BASE64.encode(out)
}

/// Verifies a BIP-137 signature for a P2PKH, P2SH-P2WPKH or P2WPKH address. See the
/// module docs for which headers are accepted for which address.
pub fn verify(
    address: &Address,
    message: &[u8],
    signature: &str,
) -> Result<Bip137Verified, Bip137Error> {
    if signature.len() > MAX_CHARS {
        return Err(Bip137Error::TooLong(signature.len()));
    }
    let bytes = BASE64
        .decode(signature)
        .map_err(|e| Bip137Error::Base64(e.to_string()))?;
    if bytes.len() != 65 {
        return Err(Bip137Error::Length(bytes.len()));
    }
    let header = bytes[0];
    if !(27..=42).contains(&header) {
        return Err(Bip137Error::Header(header));
    }
    let kind = match header {
        27..=30 => HeaderKind::P2pkhUncompressed,
        31..=34 => HeaderKind::P2pkhCompressed,
        35..=38 => HeaderKind::P2shP2wpkh,
        _ => HeaderKind::P2wpkh,
    };
    let rec_id =
        RecoveryId::from_i32(i32::from((header - 27) % 4)).map_err(|_| Bip137Error::Malformed)?;
    let sig = RecoverableSignature::from_compact(&bytes[1..], rec_id)
        .map_err(|_| Bip137Error::Malformed)?;
    let msg = Message::from_digest(signed_message_hash(message));
    let pubkey: PublicKey = SECP
        .recover_ecdsa(&msg, &sig)
        .map_err(|_| Bip137Error::Malformed)?;

    let spk = address.script_pubkey();
    let compressed = CompressedPublicKey(pubkey);
    let p2wpkh = ScriptBuf::new_p2wpkh(&compressed.wpubkey_hash());
    let matches = |expected: ScriptBuf| {
        if expected == spk {
            Ok(())
        } else {
            Err(Bip137Error::Mismatch)
        }
    };
    let header_matches_address = if spk.is_p2pkh() {
        match kind {
            HeaderKind::P2pkhUncompressed => {
                let hash = hash160::Hash::hash(&pubkey.serialize_uncompressed());
                matches(ScriptBuf::new_p2pkh(&hash.into()))?;
            }
            HeaderKind::P2pkhCompressed => {
                matches(ScriptBuf::new_p2pkh(&compressed.pubkey_hash()))?
            }
            _ => return Err(Bip137Error::Mismatch),
        }
        true
    } else if spk.is_p2wpkh() {
        match kind {
            HeaderKind::P2wpkh => {
                matches(p2wpkh)?;
                true
            }
            HeaderKind::P2pkhCompressed => {
                matches(p2wpkh)?;
                false
            }
            _ => return Err(Bip137Error::Mismatch),
        }
    } else if spk.is_p2sh() {
        let wrapped = ScriptBuf::new_p2sh(&p2wpkh.script_hash());
        match kind {
            HeaderKind::P2shP2wpkh => {
                matches(wrapped)?;
                true
            }
            HeaderKind::P2pkhCompressed => {
                matches(wrapped)?;
                false
            }
            _ => return Err(Bip137Error::Mismatch),
        }
    } else {
        return Err(Bip137Error::UnsupportedAddress(address.to_string()));
    };
    Ok(Bip137Verified {
        header,
        kind,
        header_matches_address,
    })
}
