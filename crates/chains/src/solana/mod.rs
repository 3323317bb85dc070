//! The Solana adapter: memo payments in SOL, confirmation by commitment level, and the
//! supply of the wrapped token's SPL mint.
//!
//! **Payment.** A transaction with a top-level System `transfer` (or
//! `transferWithSeed`) to the payment address and exactly one Memo instruction (Memo
//! v1 or v2) holding the message. The payment's index is the instruction index of the
//! first such transfer; its amount is the sum of the transaction's top-level transfers
//! to the payment address, in lamports; the payer is that first transfer's source.
//! Transfers made by other programs (inner instructions) are not seen: they carry no
//! memo of their own. A transaction with such a transfer but no memo, several memos, a
//! memo that is not UTF-8, or that failed on chain (`meta.err`) is still reported, with
//! the message set to the [`MessageError`] it is rejected for (for a failed one, the
//! amount is what the transfer asked to move: nothing moved, and it is never signed).
//!
//! **Scan and cursor.** Signatures come from `getSignaturesForAddress` at `confirmed`
//! commitment (newest first, paged with `before`, stopped with `until`), transactions
//! from `getTransaction` (`jsonParsed`, `maxSupportedTransactionVersion: 0`). The
//! cursor is `ChainBlock { number: slot, hash: signature }` of the last transaction
//! processed; a scan lists what is newer than that signature and processes it oldest
//! first, so a restart from a saved cursor has no gap and no duplicate. A cursor whose
//! `hash` is empty has processed nothing yet. Paging also stops at signatures older than
//! the cursor's slot, so a cursor transaction that vanished (a `confirmed` fork that
//! died) costs a re-read of its slot, never a walk through the whole history.
//!
//! **Depth.** A payment is `Confirmed` once `getTransaction` finds it at the configured
//! commitment (`finalized` by default: the slot is rooted, about 32 slots behind the
//! tip), `Pending` while it is only `confirmed`. One that neither level shows any more
//! is `Gone` once the finalized slot is [`SolanaConfig::expiry_slots`] past the slot it
//! was seen in: its recent blockhash (valid for 150 blocks) has expired by then, so it
//! can never land.
//!
//! Plain JSON-RPC over the workspace's HTTP client: the official `solana-client`
//! crates pull in several hundred crates for the handful of calls made here.

pub mod minter;
pub mod wire;

use std::collections::{HashMap, VecDeque};

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use ubtc_core::bundle::SupplyEntry;
use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::statement::MessageError;
use ubtc_core::{
    ChainId, ChainKind, Payment, PaymentRef, StatementMessage, Timestamp, TokenAmount,
};

pub use crate::evm::rpc::{RetryPolicy, RpcClient};
use crate::{ChainAdapter, ChainError, PaymentDepth, ScanCursor, ScanOutcome, SupplySource};
use wire::{
    BlockHeader, Instruction, ParsedSystem, SignatureInfo, TokenSupply, Transaction, TransferInfo,
    WithContext, MEMO_V1_PROGRAM_ID, MEMO_V2_PROGRAM_ID, SYSTEM_PROGRAM_ID,
};

/// Minimum payment when none is configured: 0.01 SOL.
pub const MIN_PAYMENT_LAMPORTS_DEFAULT: u64 = 10_000_000;

/// Slots after which a payment no longer visible at any commitment is dropped. A
/// blockhash is valid for 150 blocks and a block takes at least one slot; twice that
/// leaves room for skipped slots (a few percent on mainnet).
pub const EXPIRY_SLOTS_DEFAULT: u64 = 300;

/// Most signatures a node returns per `getSignaturesForAddress` call.
pub const SIGNATURE_PAGE_LIMIT: usize = 1_000;

/// Transactions fetched at once while scanning.
pub const TX_FETCH_CONCURRENCY: usize = 4;

/// How final a transaction must be to count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Commitment {
    /// Voted on by a supermajority: in practice never rolled back, but can be.
    Confirmed,
    /// Rooted by a supermajority: cannot be rolled back.
    Finalized,
}

impl Commitment {
    pub fn as_str(self) -> &'static str {
        match self {
            Commitment::Confirmed => "confirmed",
            Commitment::Finalized => "finalized",
        }
    }

    /// `confirmed` or `finalized`; `processed` is refused (it can be rolled back, and
    /// `getTransaction` does not serve it).
    pub fn parse(s: &str) -> Result<Self, ChainError> {
        match s {
            "confirmed" => Ok(Commitment::Confirmed),
            "finalized" => Ok(Commitment::Finalized),
            other => Err(ChainError::Misconfigured(format!(
                "commitment must be confirmed or finalized, not {other:?}"
            ))),
        }
    }
}

/// One Solana cluster's settings.
#[derive(Clone, Debug)]
pub struct SolanaConfig {
    pub chain: ChainId,
    pub rpc_url: String,
    /// Account (base58) that receives SOL payments.
    pub payment_address: String,
    /// SPL mint (base58) of the wrapped token, for the supply.
    pub token_mint: Option<String>,
    /// Level at which a payment counts ([`Commitment::Finalized`] by default).
    pub commitment: Commitment,
    /// With no cursor yet, signatures older than this slot are not read.
    pub start_slot: u64,
    pub expiry_slots: u64,
    /// Signatures per `getSignaturesForAddress` page (1..=1000).
    pub page_limit: usize,
    pub retry: RetryPolicy,
}

impl SolanaConfig {
    pub fn new(chain: ChainId, rpc_url: &str, payment_address: &str) -> Self {
        Self {
            chain,
            rpc_url: rpc_url.to_owned(),
            payment_address: payment_address.to_owned(),
            token_mint: None,
            commitment: Commitment::Finalized,
            start_slot: 0,
            expiry_slots: EXPIRY_SLOTS_DEFAULT,
            page_limit: SIGNATURE_PAGE_LIMIT,
            retry: RetryPolicy::default(),
        }
    }
}

fn bad(what: impl std::fmt::Display) -> ChainError {
    ChainError::BadResponse(what.to_string())
}

/// The Solana adapter. See the module docs.
pub struct SolanaAdapter {
    config: SolanaConfig,
    rpc: RpcClient,
}

impl std::fmt::Debug for SolanaAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The RPC URL may hold a provider API key: keep it out of logs.
        f.debug_struct("SolanaAdapter")
            .field("chain", &self.config.chain)
            .field("payment_address", &self.config.payment_address)
            .field("token_mint", &self.config.token_mint)
            .field("commitment", &self.config.commitment)
            .finish_non_exhaustive()
    }
}

/// What one transaction holds for us, before it becomes a [`Payment`].
struct Found {
    index: u32,
    payer: String,
    amount_lamports: u128,
    message: Result<StatementMessage, MessageError>,
    raw_message: Vec<u8>,
}

impl SolanaAdapter {
    /// Checks the addresses (base58, 32 bytes) and builds the client; asks the node
    /// nothing.
    pub fn new(config: SolanaConfig) -> Result<Self, ChainError> {
        wire::decode_pubkey(&config.payment_address).map_err(|e| {
            ChainError::Misconfigured(format!(
                "{}: payment address {:?}: {e}",
                config.chain, config.payment_address
            ))
        })?;
        if let Some(mint) = &config.token_mint {
            wire::decode_pubkey(mint).map_err(|e| {
                ChainError::Misconfigured(format!("{}: token mint {mint:?}: {e}", config.chain))
            })?;
        }
        if config.page_limit == 0 || config.page_limit > SIGNATURE_PAGE_LIMIT {
            return Err(ChainError::Misconfigured(format!(
                "{}: page limit must be between 1 and {SIGNATURE_PAGE_LIMIT}",
                config.chain
            )));
        }
        let rpc = RpcClient::new(&config.rpc_url, config.retry.clone())?;
        Ok(Self { config, rpc })
    }

    pub fn config(&self) -> &SolanaConfig {
        &self.config
    }

    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    async fn slot(&self, commitment: Commitment) -> Result<u64, ChainError> {
        self.rpc
            .call("getSlot", json!([{"commitment": commitment.as_str()}]))
            .await
    }

    /// Current block height at the configured commitment.
    pub async fn block_height(&self) -> Result<u64, ChainError> {
        self.rpc
            .call(
                "getBlockHeight",
                json!([{"commitment": self.config.commitment.as_str()}]),
            )
            .await
    }

    /// The block at `slot` without its transactions (hash and time).
    async fn block(&self, slot: u64, commitment: Commitment) -> Result<BlockHeader, ChainError> {
        let block: Option<BlockHeader> = self
            .rpc
            .call(
                "getBlock",
                json!([slot, {
                    "commitment": commitment.as_str(),
                    "encoding": "json",
                    "transactionDetails": "none",
                    "rewards": false,
                    "maxSupportedTransactionVersion": 0,
                }]),
            )
            .await?;
        block.ok_or_else(|| bad(format!("no block at slot {slot}")))
    }

    async fn transaction(
        &self,
        signature: &str,
        commitment: Commitment,
    ) -> Result<Option<Transaction>, ChainError> {
        let tx: Option<Transaction> = self
            .rpc
            .call(
                "getTransaction",
                json!([signature, {
                    "commitment": commitment.as_str(),
                    "encoding": "jsonParsed",
                    "maxSupportedTransactionVersion": 0,
                }]),
            )
            .await?;
        if let Some(t) = &tx {
            if t.transaction.signatures.first().map(String::as_str) != Some(signature) {
                return Err(bad(format!(
                    "getTransaction({signature}) answered another transaction"
                )));
            }
        }
        Ok(tx)
    }

    /// Signatures newer than `cursor` (everything from the start slot when there is
    /// none), oldest first, at most `max` of them: the oldest ones, so the scan advances
    /// in order. Only the kept window is held in memory however long the backlog.
    async fn signatures_after(
        &self,
        cursor: Option<&ScanCursor>,
        max: usize,
    ) -> Result<Vec<SignatureInfo>, ChainError> {
        let (until, min_slot) = match cursor {
            Some(c) if !c.block.hash.is_empty() => (Some(c.block.hash.as_str()), c.block.number),
            Some(c) => (None, c.block.number.max(self.config.start_slot)),
            None => (None, self.config.start_slot),
        };
        let mut kept: VecDeque<SignatureInfo> = VecDeque::new();
        let mut before: Option<String> = None;
        loop {
            let mut options = json!({
                "commitment": "confirmed",
                "limit": self.config.page_limit,
            });
            if let Some(b) = &before {
                options["before"] = json!(b);
            }
            if let Some(u) = until {
                options["until"] = json!(u);
            }
            let page: Vec<SignatureInfo> = self
                .rpc
                .call(
                    "getSignaturesForAddress",
                    json!([self.config.payment_address, options]),
                )
                .await?;
            let full = page.len() >= self.config.page_limit;
            let mut reached_floor = false;
            for info in page {
                if info.slot < min_slot || until == Some(info.signature.as_str()) {
                    reached_floor = true;
                    break;
                }
                before = Some(info.signature.clone());
                kept.push_back(info);
                if kept.len() > max {
                    // Newest first: what falls off the front is read by a later scan.
                    kept.pop_front();
                }
            }
            if reached_floor || !full {
                break;
            }
        }
        let mut out: Vec<SignatureInfo> = kept.into();
        out.reverse();
        Ok(out)
    }

    /// A transaction the address listing named. Listed at `confirmed` but not served
    /// means a lagging node behind a load balancer: the scan is retried later rather
    /// than the transaction skipped.
    async fn listed_transaction(
        &self,
        signature: String,
    ) -> Result<(String, Transaction), ChainError> {
        let tx = self
            .transaction(&signature, Commitment::Confirmed)
            .await?
            .ok_or_else(|| {
                ChainError::Unavailable(format!(
                    "transaction {signature} listed but not served yet"
                ))
            })?;
        Ok((signature, tx))
    }

    /// What `tx` holds for the payment address: `None` when it holds no transfer to it.
    fn inspect(&self, tx: &Transaction) -> Result<Option<Found>, ChainError> {
        let meta = tx
            .meta
            .as_ref()
            .ok_or_else(|| bad("transaction without meta: its outcome is unknown"))?;
        let mut first: Option<(u32, String)> = None;
        let mut amount_lamports: u128 = 0;
        let mut memos: Vec<&Instruction> = Vec::new();
        for (i, ix) in tx.transaction.message.instructions.iter().enumerate() {
            if ix.program_id == MEMO_V1_PROGRAM_ID || ix.program_id == MEMO_V2_PROGRAM_ID {
                memos.push(ix);
                continue;
            }
            if ix.program_id != SYSTEM_PROGRAM_ID {
                continue;
            }
            let Some(parsed) = &ix.parsed else { continue };
            let Ok(system) = serde_json::from_value::<ParsedSystem>(parsed.clone()) else {
                continue;
            };
            if system.kind != "transfer" && system.kind != "transferWithSeed" {
                continue;
            }
            let info: TransferInfo = serde_json::from_value(system.info)
                .map_err(|e| bad(format!("system transfer info: {e}")))?;
            if info.destination != self.config.payment_address {
                continue;
            }
            amount_lamports += u128::from(info.lamports);
            if first.is_none() {
                let index = u32::try_from(i).map_err(|_| bad("instruction index"))?;
                first = Some((index, info.source));
            }
        }
        let Some((index, payer)) = first else {
            return Ok(None);
        };
        let (message, raw_message) = if meta.err.is_some() {
            (Err(MessageError::TransactionFailed), Vec::new())
        } else {
            match memos.as_slice() {
                [] => (Err(MessageError::Missing), Vec::new()),
                [memo] => {
                    let raw = memo_bytes(memo)?;
                    (StatementMessage::parse(&raw), raw)
                }
                several => (
                    Err(MessageError::Several {
                        count: several.len(),
                    }),
                    Vec::new(),
                ),
            }
        };
        Ok(Some(Found {
            index,
            payer,
            amount_lamports,
            message,
            raw_message,
        }))
    }

    fn payment_from(
        &self,
        signature: &str,
        found: Found,
        block: ChainBlock,
    ) -> Result<Payment, ChainError> {
        Ok(Payment {
            reference: PaymentRef {
                chain: self.config.chain.clone(),
                tx_hash: TxHash::parse(signature).map_err(bad)?,
                index: found.index,
            },
            payer: Payer::parse(&found.payer).map_err(bad)?,
            amount_base_units: found.amount_lamports,
            message: found.message,
            raw_message: found.raw_message,
            block,
            callback_url: None,
        })
    }

    /// Where the configured commitment stands for a transaction in `slot`.
    async fn depth_of(&self, slot: u64, final_now: bool) -> Result<PaymentDepth, ChainError> {
        let tip = self.slot(Commitment::Confirmed).await?;
        let confirmations = (tip + 1).saturating_sub(slot);
        Ok(if final_now {
            PaymentDepth::Confirmed {
                confirmations: confirmations.max(1),
            }
        } else {
            PaymentDepth::Pending { confirmations }
        })
    }

    /// The payment `reference` names in `tx`, if it holds one at that index.
    async fn payment_in(
        &self,
        reference: &PaymentRef,
        tx: &Transaction,
    ) -> Result<Option<Payment>, ChainError> {
        match self.inspect(tx)? {
            Some(found) if found.index == reference.index => {
                let header = self.block(tx.slot, Commitment::Confirmed).await?;
                let block = ChainBlock {
                    number: tx.slot,
                    hash: header.blockhash,
                };
                Ok(Some(self.payment_from(
                    reference.tx_hash.as_str(),
                    found,
                    block,
                )?))
            }
            _ => Ok(None),
        }
    }
}

/// The message bytes of a Memo instruction: the node shows UTF-8 memos as a string and
/// leaves any other as raw base58 `data`.
fn memo_bytes(ix: &Instruction) -> Result<Vec<u8>, ChainError> {
    match (&ix.parsed, &ix.data) {
        (Some(Value::String(s)), _) => Ok(s.as_bytes().to_vec()),
        (_, Some(data)) => wire::base58_decode(data).map_err(|e| bad(format!("memo data: {e}"))),
        _ => Err(bad("memo instruction with neither parsed text nor data")),
    }
}

#[async_trait]
impl ChainAdapter for SolanaAdapter {
    fn chain(&self) -> &ChainId {
        &self.config.chain
    }

    fn kind(&self) -> ChainKind {
        ChainKind::Solana
    }

    /// The newest slot at the configured commitment, with its block hash.
    async fn head(&self) -> Result<ChainBlock, ChainError> {
        let slot = self.slot(self.config.commitment).await?;
        let header = self.block(slot, self.config.commitment).await?;
        Ok(ChainBlock {
            number: slot,
            hash: header.blockhash,
        })
    }

    /// `max_blocks` bounds the transactions read per scan (Solana has no block range
    /// to ask for: the address's signatures are the unit). Never reports a reorg: the
    /// cursor is a signature, and one whose fork died is handled by the slot floor.
    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        max_blocks: u64,
    ) -> Result<ScanOutcome, ChainError> {
        let max = usize::try_from(max_blocks.max(1)).unwrap_or(usize::MAX);
        let signatures = self.signatures_after(cursor, max).await?;
        let Some(last) = signatures.last() else {
            let cursor = match cursor {
                Some(c) => c.clone(),
                // Nothing processed yet: stand just before the start slot.
                None => ScanCursor {
                    block: ChainBlock {
                        number: self.config.start_slot,
                        hash: String::new(),
                    },
                },
            };
            return Ok(ScanOutcome::Blocks {
                payments: Vec::new(),
                cursor,
            });
        };
        let next = ScanCursor {
            block: ChainBlock {
                number: last.slot,
                hash: last.signature.clone(),
            },
        };
        // In order, a few at a time: a node's latency, not its work, bounds a catch-up.
        let listed: Vec<String> = signatures.iter().map(|s| s.signature.clone()).collect();
        let mut txs = stream::iter(listed)
            .map(|s| self.listed_transaction(s))
            .buffered(TX_FETCH_CONCURRENCY);
        let mut hashes: HashMap<u64, String> = HashMap::new();
        let mut payments = Vec::new();
        while let Some(item) = txs.next().await {
            let (signature, tx) = item?;
            let Some(found) = self.inspect(&tx)? else {
                continue;
            };
            let hash = match hashes.get(&tx.slot) {
                Some(h) => h.clone(),
                None => {
                    let h = self.block(tx.slot, Commitment::Confirmed).await?.blockhash;
                    hashes.insert(tx.slot, h.clone());
                    h
                }
            };
            let block = ChainBlock {
                number: tx.slot,
                hash,
            };
            payments.push(self.payment_from(&signature, found, block)?);
        }
        Ok(ScanOutcome::Blocks {
            payments,
            cursor: next,
        })
    }

    async fn depth(
        &self,
        payment: &PaymentRef,
        seen_in: &ChainBlock,
    ) -> Result<PaymentDepth, ChainError> {
        if payment.chain != self.config.chain {
            return Ok(PaymentDepth::Gone);
        }
        let signature = payment.tx_hash.as_str();
        let commitment = self.config.commitment;
        if let Some(tx) = self.transaction(signature, commitment).await? {
            return match self.inspect(&tx)? {
                Some(found) if found.index == payment.index => self.depth_of(tx.slot, true).await,
                // Final, but holds no payment at this index: never was one.
                _ => Ok(PaymentDepth::Gone),
            };
        }
        if commitment == Commitment::Finalized {
            if let Some(tx) = self.transaction(signature, Commitment::Confirmed).await? {
                return match self.inspect(&tx)? {
                    Some(found) if found.index == payment.index => {
                        self.depth_of(tx.slot, false).await
                    }
                    _ => Ok(PaymentDepth::Gone),
                };
            }
        }
        // Seen once, visible at no level now: its fork died. It may still land in
        // another block until its blockhash expires, so wait that long before giving up.
        let finalized = self.slot(Commitment::Finalized).await?;
        if finalized > seen_in.number.saturating_add(self.config.expiry_slots) {
            Ok(PaymentDepth::Gone)
        } else {
            Ok(PaymentDepth::Pending { confirmations: 0 })
        }
    }

    async fn payment(
        &self,
        payment: &PaymentRef,
    ) -> Result<Option<(Payment, PaymentDepth)>, ChainError> {
        if payment.chain != self.config.chain {
            return Ok(None);
        }
        let signature = payment.tx_hash.as_str();
        let commitment = self.config.commitment;
        let (tx, final_now) = match self.transaction(signature, commitment).await? {
            Some(tx) => (tx, true),
            None if commitment == Commitment::Finalized => {
                match self.transaction(signature, Commitment::Confirmed).await? {
                    Some(tx) => (tx, false),
                    None => return Ok(None),
                }
            }
            None => return Ok(None),
        };
        let Some(found) = self.payment_in(payment, &tx).await? else {
            return Ok(None);
        };
        let depth = self.depth_of(tx.slot, final_now).await?;
        Ok(Some((found, depth)))
    }
}

#[async_trait]
impl SupplySource for SolanaAdapter {
    fn chain(&self) -> &ChainId {
        &self.config.chain
    }

    /// The mint's supply now, at the configured commitment, named by the slot the node
    /// answered at. Solana nodes keep no historical account state, so a supply at a
    /// chosen past slot cannot be read: `Some(slot)` is refused.
    async fn supply_at(&self, block: Option<u64>) -> Result<SupplyEntry, ChainError> {
        let mint = self.config.token_mint.clone().ok_or_else(|| {
            ChainError::Misconfigured(format!("{}: no token mint configured", self.config.chain))
        })?;
        if let Some(slot) = block {
            return Err(ChainError::Misconfigured(format!(
                "{}: Solana nodes serve a mint's supply only at the current slot, not at slot {slot}",
                self.config.chain
            )));
        }
        let supply: WithContext<TokenSupply> = self
            .rpc
            .call(
                "getTokenSupply",
                json!([mint, {"commitment": self.config.commitment.as_str()}]),
            )
            .await?;
        let amount: u128 = supply.value.amount.parse().map_err(|e| {
            bad(format!(
                "getTokenSupply amount {:?}: {e}",
                supply.value.amount
            ))
        })?;
        let slot = supply.context.slot;
        let header = self.block(slot, self.config.commitment).await?;
        let secs = header
            .block_time
            .ok_or_else(|| bad(format!("block at slot {slot} has no time")))?;
        Ok(SupplyEntry {
            chain: self.config.chain.clone(),
            token: mint,
            block_number: slot,
            block_hash: header.blockhash,
            supply: TokenAmount::new(amount, supply.value.decimals),
            as_of: Timestamp::from_millis(secs.saturating_mul(1000)),
        })
    }
}
