//! Where chain data comes from.
//!
//! [`ChainAdapter`] is what the pipeline and the guardians know of a payment chain:
//! scan new blocks for payments, tell how deep a payment is (or that a reorg removed
//! it), and re-read one payment by reference. [`BitcoinBackend`] is what they know of
//! Bitcoin: the tip (for the statement's block stamp) and the reserve UTXOs.
//!
//! Implementations plug in from outside the core: the in-process [`dev`] chain here;
//! EVM, Solana, Esplora and Bitcoin Core backends alongside it. Adapters parse chain
//! data at the edge into `ubtc-core` types and report what they saw; they never decide
//! policy (fees, limits, who signs).

pub mod bitcoind;
pub mod dev;
pub mod esplora;
pub mod evm;
pub mod solana;

use async_trait::async_trait;
use ubtc_core::bundle::{SupplyEntry, Utxo};
use ubtc_core::payment::ChainBlock;
use ubtc_core::{BlockStamp, ChainId, ChainKind, Payment, PaymentRef};

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// The node could not be reached, timed out or rate limited us. Retry later.
    #[error("chain node unavailable: {0}")]
    Unavailable(String),
    /// The node answered something we cannot use (malformed, inconsistent).
    #[error("chain node gave a bad answer: {0}")]
    BadResponse(String),
    /// Configuration does not match the node (wrong chain id, unknown contract).
    #[error("chain misconfigured: {0}")]
    Misconfigured(String),
}

impl ChainError {
    pub fn is_transient(&self) -> bool {
        matches!(self, ChainError::Unavailable(_))
    }
}

/// Where a monitor has read up to: the last block it processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanCursor {
    pub block: ChainBlock,
}

/// What one scan step found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScanOutcome {
    /// Blocks after the cursor, in order, with the payments they hold; `cursor` is the
    /// last block read (unchanged when there was nothing new).
    Blocks {
        payments: Vec<Payment>,
        cursor: ScanCursor,
    },
    /// The cursor's block is no longer on the canonical chain. The monitor rescans
    /// from `rewind_to`, a block on the canonical chain at or below the fork point.
    Reorg { rewind_to: ScanCursor },
}

/// How a known payment stands on the chain now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaymentDepth {
    /// In the canonical chain, not yet final by the chain's rule.
    Pending { confirmations: u64 },
    /// Final by the chain's rule (EVM: configured depth; Solana: `finalized`).
    Confirmed { confirmations: u64 },
    /// Not in the canonical chain any more (reorged out), or never was.
    Gone,
}

/// A payment chain, as the pipeline and the guardians see it.
#[async_trait]
pub trait ChainAdapter: Send + Sync + 'static {
    fn chain(&self) -> &ChainId;
    fn kind(&self) -> ChainKind;

    /// The newest block.
    async fn head(&self) -> Result<ChainBlock, ChainError>;

    /// Reads up to `max_blocks` blocks after `cursor` (from the configured start when
    /// `None`) and returns the payments to the payment address or contract, in chain
    /// order. Detects that the cursor block was reorged out. Idempotent: the caller may
    /// scan the same range twice; it deduplicates payments by reference.
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        max_blocks: u64,
    ) -> Result<ScanOutcome, ChainError>;

    /// How deep the payment first seen in `seen_in` is now.
    async fn depth(
        &self,
        payment: &PaymentRef,
        seen_in: &ChainBlock,
    ) -> Result<PaymentDepth, ChainError>;

    /// Re-reads one payment from this adapter's own view of the chain (guardians use
    /// this to check a signing request independently). `None` when unknown.
    async fn payment(
        &self,
        payment: &PaymentRef,
    ) -> Result<Option<(Payment, PaymentDepth)>, ChainError>;
}

/// Bitcoin, as the pipeline and the reserve accounting see it.
#[async_trait]
pub trait BitcoinBackend: Send + Sync + 'static {
    /// Height and hash of the best block.
    async fn tip(&self) -> Result<BlockStamp, ChainError>;
    /// Hash of the block at `height` on the best chain.
    async fn block_hash(&self, height: u32) -> Result<String, ChainError>;
    /// Unspent outputs paying to `address` as of the tip.
    async fn address_utxos(&self, address: &str) -> Result<Vec<Utxo>, ChainError>;

    /// Sends a signed transaction (hex) to the network; returns its txid. Sending the
    /// same transaction again is harmless (a node that already has it says so, and
    /// that counts as sent), so a resumed release may resend.
    async fn broadcast(&self, tx_hex: &str) -> Result<String, ChainError> {
        let _ = tx_hex;
        Err(ChainError::Misconfigured(
            "this Bitcoin backend cannot broadcast".into(),
        ))
    }

    /// How many blocks hold `txid` and build on it: 0 while it is unconfirmed (in the
    /// mempool), `None` when the backend does not know the transaction.
    async fn tx_confirmations(&self, txid: &str) -> Result<Option<u32>, ChainError> {
        let _ = txid;
        Err(ChainError::Misconfigured(
            "this Bitcoin backend cannot look transactions up".into(),
        ))
    }
}

/// Token supply on one chain, read at a named block (for reserve snapshots and bundles).
#[async_trait]
pub trait SupplySource: Send + Sync + 'static {
    fn chain(&self) -> &ChainId;
    /// Total supply of the wrapped token at block `block`, or, when `None`, at the
    /// newest block that is final by the chain's rule. The entry names the block (number
    /// and hash) and carries that block's time as `as_of`.
    async fn supply_at(&self, block: Option<u64>) -> Result<SupplyEntry, ChainError>;
}
