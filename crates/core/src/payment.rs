//! Payments: what a requester paid, on which chain, with which message.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::chain::ChainId;
use crate::statement::StatementMessage;

/// Longest transaction hash or account string accepted (Solana signatures are 88
/// base58 characters; EVM hashes 66).
pub const CHAIN_STRING_MAX_LEN: usize = 128;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainStringError {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {CHAIN_STRING_MAX_LEN} characters")]
    TooLong { what: &'static str },
    #[error("{what} may hold only ASCII letters and digits (and a leading 0x)")]
    BadCharacter { what: &'static str },
}

fn check_chain_string(s: &str, what: &'static str) -> Result<(), ChainStringError> {
    if s.is_empty() {
        return Err(ChainStringError::Empty { what });
    }
    if s.len() > CHAIN_STRING_MAX_LEN {
        return Err(ChainStringError::TooLong { what });
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ChainStringError::BadCharacter { what });
    }
    Ok(())
}

/// A transaction hash as the chain writes it (`0x…` hex on EVM chains, base58 on
/// Solana). The adapter normalises case before it builds one; this type only
/// guarantees a narrow alphabet so it is safe in statements, logs and URLs.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TxHash(String);

impl TxHash {
    pub fn parse(s: &str) -> Result<Self, ChainStringError> {
        check_chain_string(s, "transaction hash")?;
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for TxHash {
    type Error = ChainStringError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<TxHash> for String {
    fn from(t: TxHash) -> Self {
        t.0
    }
}
impl fmt::Display for TxHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The paying account, as the chain writes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Payer(String);

impl Payer {
    pub fn parse(s: &str) -> Result<Self, ChainStringError> {
        check_chain_string(s, "payer")?;
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}
impl TryFrom<String> for Payer {
    type Error = ChainStringError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<Payer> for String {
    fn from(p: Payer) -> Self {
        p.0
    }
}
impl fmt::Display for Payer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The identity of a payment: `(chain, tx hash, index in the tx)`. Unique across the
/// system; seeing the same reference twice is a no-op.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PaymentRef {
    pub chain: ChainId,
    pub tx_hash: TxHash,
    /// Position of the payment within its transaction (log index within the tx on EVM
    /// contract payments, 0 for plain transfers, instruction index on Solana).
    pub index: u32,
}

impl fmt::Display for PaymentRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.tx_hash, self.index)
    }
}

/// A block on a payment chain, as seen when the payment was read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainBlock {
    pub number: u64,
    pub hash: String,
}

/// A payment as read from a chain, after parsing at the adapter's edge.
///
/// `message` is `Err` when the raw bytes are not an acceptable message: the payment
/// is still recorded (and rejected with that reason), because it was paid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Payment {
    pub reference: PaymentRef,
    pub payer: Payer,
    /// Amount paid, in the chain's smallest native unit (wei, lamports, …).
    pub amount_base_units: u128,
    pub message: Result<StatementMessage, crate::statement::MessageError>,
    /// Raw message bytes exactly as paid (kept for rejected payments too).
    pub raw_message: Vec<u8>,
    pub block: ChainBlock,
    /// Where the requester wants a webhook for this payment, when the chain allows
    /// attaching one (never on-chain data we trust for anything else).
    pub callback_url: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tx_hash_alphabet() {
        assert!(TxHash::parse("0xabc123").is_ok());
        assert!(TxHash::parse("5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3ZpRzrFmBV6UjKdiSZkQUW").is_ok());
        assert!(TxHash::parse("").is_err());
        assert!(TxHash::parse("0xab cd").is_err());
        assert!(TxHash::parse("0xab\ncd").is_err());
        assert!(TxHash::parse(&"a".repeat(129)).is_err());
    }
}
