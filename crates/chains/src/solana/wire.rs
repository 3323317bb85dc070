//! What the Solana JSON-RPC API answers, as typed structs (only the fields we read),
//! and base58, the encoding of every key and signature on Solana.
//!
//! Shapes follow the node's `jsonParsed` encoding: a top-level instruction of a
//! program the node knows (System, Memo, SPL Token) arrives as
//! `{"program", "programId", "parsed", "stackHeight"}`; one it cannot parse (a memo
//! whose bytes are not UTF-8, for example) as `{"programId", "accounts", "data"}` with
//! `data` in base58.

use serde::Deserialize;
use serde_json::Value;

/// The System program (SOL transfers).
pub const SYSTEM_PROGRAM_ID: &str = "11111111111111111111111111111111";
/// Memo program v1 (the original deployment; still used by some wallets).
pub const MEMO_V1_PROGRAM_ID: &str = "Memo1UhkJRfHyvLMcVucJwxXeuD728EqVDDwQDxFMNo";
/// Memo program v2 (`spl-memo` 2.0 onwards).
pub const MEMO_V2_PROGRAM_ID: &str = "MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr";
/// SPL Token program (the wrapped token's mint).
pub const TOKEN_PROGRAM_ID: &str = "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA";

/// One entry of `getSignaturesForAddress` (newest first).
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub struct SignatureInfo {
    pub signature: String,
    pub slot: u64,
    #[serde(default)]
    pub err: Option<Value>,
    #[serde(default)]
    pub block_time: Option<i64>,
    #[serde(default)]
    pub confirmation_status: Option<String>,
}

/// `getTransaction` with `jsonParsed`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    pub slot: u64,
    #[serde(default)]
    pub block_time: Option<i64>,
    /// Absent only on nodes that lost the status; we cannot judge such a transaction.
    #[serde(default)]
    pub meta: Option<TransactionMeta>,
    pub transaction: TransactionBody,
}

#[derive(Deserialize, Debug)]
pub struct TransactionMeta {
    /// `null` when the transaction succeeded, else the error object or string.
    #[serde(default)]
    pub err: Option<Value>,
}

#[derive(Deserialize, Debug)]
pub struct TransactionBody {
    pub signatures: Vec<String>,
    pub message: Message,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub instructions: Vec<Instruction>,
    #[serde(default)]
    pub recent_blockhash: Option<String>,
}

/// A top-level instruction, parsed by the node or not.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct Instruction {
    pub program_id: String,
    #[serde(default)]
    pub parsed: Option<Value>,
    /// Raw instruction data, base58, when the node could not parse it.
    #[serde(default)]
    pub data: Option<String>,
}

/// `parsed` of a System program instruction.
#[derive(Deserialize, Debug)]
pub struct ParsedSystem {
    #[serde(rename = "type")]
    pub kind: String,
    pub info: Value,
}

/// `info` of a System `transfer` (and `transferWithSeed`, whose `source` is the
/// derived account that pays).
#[derive(Deserialize, Debug)]
pub struct TransferInfo {
    pub source: String,
    pub destination: String,
    pub lamports: u64,
}

/// `getBlock` with `transactionDetails: "none"`.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
pub struct BlockHeader {
    pub blockhash: String,
    #[serde(default)]
    pub block_time: Option<i64>,
    #[serde(default)]
    pub block_height: Option<u64>,
}

/// An RPC answer wrapped in `{"context": {"slot"}, "value"}`.
#[derive(Deserialize, Debug)]
pub struct WithContext<T> {
    pub context: Context,
    pub value: T,
}

#[derive(Deserialize, Debug)]
pub struct Context {
    pub slot: u64,
}

/// `getTokenSupply`: the amount is a decimal string of base units (a u64 on chain).
#[derive(Deserialize, Debug)]
pub struct TokenSupply {
    pub amount: String,
    pub decimals: u8,
}

const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Base58Error {
    #[error("character {0:?} is not base58")]
    BadCharacter(char),
    #[error("decodes to {got} bytes, expected {expected}")]
    WrongLength { got: usize, expected: usize },
}

/// Decodes base58 (Bitcoin alphabet, no checksum), as Solana writes keys and data.
pub fn base58_decode(s: &str) -> Result<Vec<u8>, Base58Error> {
    // Little-endian base-256 digits of the number read so far.
    let mut bytes: Vec<u8> = Vec::with_capacity(s.len());
    for c in s.chars() {
        let digit = ALPHABET
            .iter()
            .position(|&a| char::from(a) == c)
            .ok_or(Base58Error::BadCharacter(c))?;
        let mut carry = digit as u32;
        for b in bytes.iter_mut() {
            carry += u32::from(*b) * 58;
            *b = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    // Each leading '1' stands for a leading zero byte.
    let zeros = s.chars().take_while(|&c| c == '1').count();
    bytes.extend(std::iter::repeat_n(0, zeros));
    bytes.reverse();
    Ok(bytes)
}

/// Encodes bytes as base58.
pub fn base58_encode(data: &[u8]) -> String {
    let mut digits: Vec<u8> = Vec::with_capacity(data.len() * 138 / 100 + 1);
    for &byte in data {
        let mut carry = u32::from(byte);
        for d in digits.iter_mut() {
            carry += u32::from(*d) << 8;
            *d = (carry % 58) as u8;
            carry /= 58;
        }
        while carry > 0 {
            digits.push((carry % 58) as u8);
            carry /= 58;
        }
    }
    let zeros = data.iter().take_while(|&&b| b == 0).count();
    let mut out = String::with_capacity(zeros + digits.len());
    out.extend(std::iter::repeat_n('1', zeros));
    out.extend(
        digits
            .iter()
            .rev()
            .map(|&d| char::from(ALPHABET[d as usize])),
    );
    out
}

/// Decodes a 32-byte public key (an account address).
pub fn decode_pubkey(s: &str) -> Result<[u8; 32], Base58Error> {
    let bytes = base58_decode(s)?;
    <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| Base58Error::WrongLength {
        got: bytes.len(),
        expected: 32,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base58_round_trips_and_keeps_leading_zeros() {
        assert_eq!(base58_encode(&[0u8; 32]), SYSTEM_PROGRAM_ID);
        assert_eq!(decode_pubkey(SYSTEM_PROGRAM_ID), Ok([0u8; 32]));
        for s in [MEMO_V1_PROGRAM_ID, MEMO_V2_PROGRAM_ID, TOKEN_PROGRAM_ID] {
            let key = decode_pubkey(s).expect("a program id is 32 bytes");
            assert_eq!(base58_encode(&key), s);
        }
        assert_eq!(
            base58_decode("2NEpo7TZRRrLZSi2U"),
            Ok(b"Hello World!".to_vec())
        );
        assert_eq!(base58_encode(b"Hello World!"), "2NEpo7TZRRrLZSi2U");
        assert_eq!(base58_encode(&[0, 0, 1]), "112");
        assert_eq!(base58_decode(""), Ok(vec![]));
        assert_eq!(base58_decode("0OIl"), Err(Base58Error::BadCharacter('0')));
        assert!(matches!(
            decode_pubkey("2NEpo7TZRRrLZSi2U"),
            Err(Base58Error::WrongLength { got: 12, .. })
        ));
    }
}
