//! The statement the reserve keys sign.
//!
//! The reserve keys never sign raw user bytes: they sign this deterministic ASCII text,
//! built from the payment, the message and a recent Bitcoin block. Anybody can rebuild
//! it from a proof bundle; `Statement::text` is the only place its wording lives.
//!
//! ```text
//! Universal Bitcoin proof of reserves
//! version: 1
//! chain: ethereum
//! payment: 0x5c…e1:0
//! payer: 0x8a…41
//! message: hello from alice
//! bitcoin-block: 871234 00000000000000000001a2…
//! request: 0190f3e4-…
//! ```
//!
//! The message line is `message: <text>` when every byte is printable ASCII
//! (0x20–0x7e), and `message-hex: <lowercase hex>` otherwise, so the signature always
//! commits to the exact bytes and the two forms cannot be confused.

use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::chain::ChainId;
use crate::payment::{Payer, PaymentRef};

/// Longest message, in bytes, that a payment may carry.
pub const MESSAGE_MAX_BYTES: usize = 280;

/// The statement format version this build writes and accepts.
pub const STATEMENT_VERSION: u32 = 1;

/// First line of every statement.
pub const STATEMENT_HEADER: &str = "Universal Bitcoin proof of reserves";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error("message is {len} bytes; the maximum is {MESSAGE_MAX_BYTES}")]
    TooLong { len: usize },
    #[error("message is not valid UTF-8")]
    NotUtf8,
    /// The payment carries no message (Solana: no Memo instruction in the transaction).
    #[error("the payment carries no message")]
    Missing,
    /// The payment carries more than one message and none can be chosen (Solana: several
    /// Memo instructions in one transaction).
    #[error("the payment carries {count} messages; exactly one is required")]
    Several { count: usize },
    /// The transaction carrying the message failed on chain: nothing was paid with it.
    #[error("the transaction carrying the payment failed on chain")]
    TransactionFailed,
}

impl MessageError {
    /// Stable reason code stored with a rejected validation.
    pub fn code(&self) -> &'static str {
        match self {
            MessageError::TooLong { .. } => "message_too_long",
            MessageError::NotUtf8 => "message_not_utf8",
            MessageError::Missing => "message_missing",
            MessageError::Several { .. } => "message_several",
            MessageError::TransactionFailed => "transaction_failed",
        }
    }
}

/// A payment's message, checked: at most [`MESSAGE_MAX_BYTES`] bytes of UTF-8.
///
/// UTF-8 is required because every chain we serve carries messages as text (EVM
/// calldata and events, Solana memos); a payment whose bytes are not UTF-8 is
/// rejected with [`MessageError::NotUtf8`]. Non-ASCII text is still signed exactly:
/// the statement shows it as hex.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StatementMessage(String);

impl StatementMessage {
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        if bytes.len() > MESSAGE_MAX_BYTES {
            return Err(MessageError::TooLong { len: bytes.len() });
        }
        let s = std::str::from_utf8(bytes).map_err(|_| MessageError::NotUtf8)?;
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }

    /// True when the statement shows the message verbatim.
    pub fn is_printable_ascii(&self) -> bool {
        self.0.bytes().all(|b| (0x20..=0x7e).contains(&b))
    }
}

impl fmt::Debug for StatementMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StatementMessage({:?})", self.0)
    }
}

impl TryFrom<String> for StatementMessage {
    type Error = MessageError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(s.as_bytes())
    }
}

impl From<StatementMessage> for String {
    fn from(m: StatementMessage) -> Self {
        m.0
    }
}

/// Height and hash of a recent Bitcoin block: proves the statement was signed after it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BlockStamp {
    pub height: u32,
    /// Block hash in the usual (reversed, big-endian) hex, 64 lowercase characters.
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockStampError {
    #[error("block hash must be 64 lowercase hex characters")]
    BadHash,
}

impl BlockStamp {
    pub fn new(height: u32, hash: &str) -> Result<Self, BlockStampError> {
        if hash.len() != 64
            || !hash
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(BlockStampError::BadHash);
        }
        Ok(Self {
            height,
            hash: hash.to_owned(),
        })
    }
}

/// Everything a statement is built from. Serialized as the `statement` object of a
/// proof bundle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statement {
    pub version: u32,
    pub payment: PaymentRef,
    pub payer: Payer,
    pub message: StatementMessage,
    pub bitcoin_block: BlockStamp,
    pub request_id: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatementError {
    #[error(
        "statement version {0} is not supported (this build knows version {STATEMENT_VERSION})"
    )]
    UnsupportedVersion(u32),
    #[error("block hash must be 64 lowercase hex characters")]
    BadBlockHash,
}

impl Statement {
    pub fn new(
        payment: PaymentRef,
        payer: Payer,
        message: StatementMessage,
        bitcoin_block: BlockStamp,
        request_id: Uuid,
    ) -> Self {
        Self {
            version: STATEMENT_VERSION,
            payment,
            payer,
            message,
            bitcoin_block,
            request_id,
        }
    }

    /// Checks what serde cannot: the version is known and the block stamp well formed.
    /// Call on every statement read from outside (bundles, guardian requests).
    pub fn validate(&self) -> Result<(), StatementError> {
        if self.version != STATEMENT_VERSION {
            return Err(StatementError::UnsupportedVersion(self.version));
        }
        BlockStamp::new(self.bitcoin_block.height, &self.bitcoin_block.hash)
            .map_err(|_| StatementError::BadBlockHash)?;
        Ok(())
    }

    pub fn chain(&self) -> &ChainId {
        &self.payment.chain
    }

    /// The exact text the reserve keys sign. Lines end with `\n`, including the last.
    pub fn text(&self) -> String {
        let mut out = String::with_capacity(320 + 2 * self.message.as_bytes().len());
        out.push_str(STATEMENT_HEADER);
        out.push('\n');
        out.push_str(&format!("version: {}\n", self.version));
        out.push_str(&format!("chain: {}\n", self.payment.chain));
        out.push_str(&format!(
            "payment: {}:{}\n",
            self.payment.tx_hash, self.payment.index
        ));
        out.push_str(&format!("payer: {}\n", self.payer));
        if self.message.is_printable_ascii() {
            out.push_str("message: ");
            out.push_str(self.message.as_str());
        } else {
            out.push_str("message-hex: ");
            out.push_str(&hex::encode(self.message.as_bytes()));
        }
        out.push('\n');
        out.push_str(&format!(
            "bitcoin-block: {} {}\n",
            self.bitcoin_block.height, self.bitcoin_block.hash
        ));
        out.push_str(&format!("request: {}\n", self.request_id.hyphenated()));
        out
    }

    /// SHA-256 of [`Statement::text`], hex. Identifies a statement in approvals and
    /// guardian records without repeating the text.
    pub fn digest_hex(&self) -> String {
        hex::encode(Sha256::digest(self.text().as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payment::TxHash;
    use proptest::prelude::*;

    fn statement(message: &[u8]) -> Statement {
        Statement::new(
            PaymentRef {
                chain: ChainId::parse("ethereum").unwrap(),
                tx_hash: TxHash::parse("0x5c00e1").unwrap(),
                index: 0,
            },
            Payer::parse("0x8a0041").unwrap(),
            StatementMessage::parse(message).unwrap(),
            BlockStamp::new(871_234, &format!("{:0>64}", "1a2b3c")).unwrap(),
            Uuid::from_u128(0x0190f3e4_0000_7000_8000_000000000001),
        )
    }

    #[test]
    fn printable_message_is_verbatim() {
        let text = statement(b"hello from alice").text();
        assert_eq!(
            text,
            format!(
                "Universal Bitcoin proof of reserves\nversion: 1\nchain: ethereum\npayment: 0x5c00e1:0\n\
                 payer: 0x8a0041\nmessage: hello from alice\nbitcoin-block: 871234 {}\n\
                 request: 0190f3e4-0000-7000-8000-000000000001\n",
                statement(b"").bitcoin_block.hash
            )
        );
    }

    #[test]
    fn non_ascii_message_is_hex() {
        let text = statement("héllo\n".as_bytes()).text();
        assert!(text.contains("\nmessage-hex: 68c3a96c6c6f0a\n"), "{text}");
        assert!(!text.contains("\nmessage: "));
    }

    #[test]
    fn message_limits() {
        assert!(StatementMessage::parse(&[b'a'; MESSAGE_MAX_BYTES]).is_ok());
        assert_eq!(
            StatementMessage::parse(&[b'a'; MESSAGE_MAX_BYTES + 1]),
            Err(MessageError::TooLong {
                len: MESSAGE_MAX_BYTES + 1
            })
        );
        assert_eq!(
            StatementMessage::parse(&[0xff, 0xfe]),
            Err(MessageError::NotUtf8)
        );
    }

    #[test]
    fn validate_rejects_unknown_version_and_bad_hash() {
        let mut s = statement(b"x");
        assert!(s.validate().is_ok());
        s.version = 2;
        assert_eq!(s.validate(), Err(StatementError::UnsupportedVersion(2)));
        let mut s = statement(b"x");
        s.bitcoin_block.hash = "XYZ".into();
        assert_eq!(s.validate(), Err(StatementError::BadBlockHash));
    }

    proptest! {
        // Different message bytes never give the same statement text, whichever
        // form (verbatim or hex) each one takes.
        #[test]
        fn distinct_messages_distinct_text(a in "\\PC{0,40}", b in "\\PC{0,40}") {
            prop_assume!(a != b);
            prop_assume!(a.len() <= MESSAGE_MAX_BYTES && b.len() <= MESSAGE_MAX_BYTES);
            prop_assert_ne!(statement(a.as_bytes()).text(), statement(b.as_bytes()).text());
        }

        #[test]
        fn text_is_ascii(m in "\\PC{0,60}") {
            prop_assume!(m.len() <= MESSAGE_MAX_BYTES);
            let t = statement(m.as_bytes()).text();
            prop_assert!(t.is_ascii());
            prop_assert_eq!(t.lines().count(), 8);
        }
    }
}
