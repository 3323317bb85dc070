//! One adapter for every EVM chain (Ethereum, Polygon, Arbitrum, BSC, anvil): they
//! differ only by [`EvmConfig`].
//!
//! Two ways to pay, either or both per chain:
//! - **contract**: `PaymentRouter.requestValidation(string)` (see `contracts/`), read as
//!   `ValidationRequested` logs with `eth_getLogs` over block ranges. The payment's
//!   index is the event's position among this contract's `ValidationRequested` events
//!   in the same transaction (0 for the first), so it can be found again in the
//!   receipt.
//! - **plain transfer**: a top-level transaction to the payment address whose calldata
//!   is the message as UTF-8, found by reading whole blocks. Index 0. Value moved by
//!   internal calls is not seen (it carries no message).
//!
//! Plain JSON-RPC over HTTP with hand-written ABI code: the full alloy stack costs more
//! build time than the few calls here are worth.

pub mod abi;
#[cfg(feature = "bench")]
pub mod bench;
pub mod feed;
pub mod minter;
pub mod rpc;

use async_trait::async_trait;
use futures::stream::{self, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};
use ubtc_core::bundle::SupplyEntry;
use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::{
    ChainId, ChainKind, Payment, PaymentRef, StatementMessage, Timestamp, TokenAmount,
};

pub use rpc::{RetryPolicy, RpcClient};

use crate::{ChainAdapter, ChainError, PaymentDepth, ScanCursor, ScanOutcome, SupplySource};
use abi::{AbiError, VALIDATION_REQUESTED_SIGNATURE};

/// Decimals of the wrapped token (`WrappedBTC.decimals()`): one token unit is a satoshi.
pub const TOKEN_DECIMALS: u8 = 8;

/// How far back the scan restarts after a reorg is noticed. Deeper than any reorg seen
/// on the supported chains' unfinalised tips; rescanning is idempotent, so being
/// generous only costs reads.
pub const REORG_REWIND_BLOCKS_DEFAULT: u64 = 64;

/// Whole blocks requested at once when scanning for plain transfers.
pub const FULL_BLOCK_FETCH_CONCURRENCY: usize = 4;

/// Most blocks asked of `eth_getLogs` at once (public providers refuse wider ranges).
pub const LOG_RANGE_MAX_BLOCKS_DEFAULT: u64 = 2_000;

/// One EVM chain's settings.
#[derive(Clone, Debug)]
pub struct EvmConfig {
    pub chain: ChainId,
    /// EIP-155 chain id the node must report (`eth_chainId`).
    pub chain_id: u64,
    pub rpc_url: String,
    /// `PaymentRouter` address: contract payments.
    pub payment_contract: Option<String>,
    /// Address receiving plain transfers with the message as calldata.
    pub payment_address: Option<String>,
    /// `WrappedBTC` address, for the supply.
    pub token_contract: Option<String>,
    /// Depth at which a payment counts (the block holding it counts as one).
    pub confirmations: u64,
    /// First block scanned when there is no cursor yet (the router's deployment).
    pub start_block: u64,
    pub reorg_rewind_blocks: u64,
    pub log_range_max_blocks: u64,
    pub retry: RetryPolicy,
}

impl EvmConfig {
    pub fn new(chain: ChainId, chain_id: u64, rpc_url: &str) -> Self {
        Self {
            chain,
            chain_id,
            rpc_url: rpc_url.to_owned(),
            payment_contract: None,
            payment_address: None,
            token_contract: None,
            confirmations: 12,
            start_block: 0,
            reorg_rewind_blocks: REORG_REWIND_BLOCKS_DEFAULT,
            log_range_max_blocks: LOG_RANGE_MAX_BLOCKS_DEFAULT,
            retry: RetryPolicy::default(),
        }
    }
}

#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
struct RpcHeader {
    number: String,
    hash: String,
    parent_hash: String,
    timestamp: String,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct RpcFullBlock {
    #[serde(flatten)]
    header: RpcHeader,
    transactions: Vec<RpcTx>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct RpcTx {
    hash: String,
    from: String,
    #[serde(default)]
    to: Option<String>,
    value: String,
    input: String,
    #[serde(default)]
    block_number: Option<String>,
    #[serde(default)]
    block_hash: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct RpcLog {
    address: String,
    topics: Vec<String>,
    data: String,
    block_number: String,
    block_hash: String,
    transaction_hash: String,
    log_index: String,
    #[serde(default)]
    removed: bool,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct RpcReceipt {
    block_number: String,
    block_hash: String,
    #[serde(default)]
    status: Option<String>,
    logs: Vec<RpcLog>,
}

fn bad(what: impl std::fmt::Display) -> ChainError {
    ChainError::BadResponse(what.to_string())
}

fn abi_err(context: &str) -> impl Fn(AbiError) -> ChainError + '_ {
    move |e| ChainError::BadResponse(format!("{context}: {e}"))
}

impl RpcHeader {
    fn number(&self) -> Result<u64, ChainError> {
        abi::quantity_u64(&self.number).map_err(abi_err("block number"))
    }
    fn block(&self) -> Result<ChainBlock, ChainError> {
        Ok(ChainBlock {
            number: self.number()?,
            hash: self.hash.to_ascii_lowercase(),
        })
    }
    fn time(&self) -> Result<Timestamp, ChainError> {
        let secs = abi::quantity_u64(&self.timestamp).map_err(abi_err("block timestamp"))?;
        let ms = i64::try_from(secs.saturating_mul(1000)).map_err(|_| bad("block timestamp"))?;
        Ok(Timestamp::from_millis(ms))
    }
}

/// The EVM adapter. See the module docs.
pub struct EvmAdapter {
    config: EvmConfig,
    rpc: RpcClient,
    payment_contract: Option<String>,
    payment_address: Option<String>,
    token_contract: Option<String>,
    event_topic: String,
}

impl std::fmt::Debug for EvmAdapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The RPC URL may hold a provider API key: keep it out of logs.
        f.debug_struct("EvmAdapter")
            .field("chain", &self.config.chain)
            .field("chain_id", &self.config.chain_id)
            .field("payment_contract", &self.payment_contract)
            .field("payment_address", &self.payment_address)
            .finish_non_exhaustive()
    }
}

impl EvmAdapter {
    /// Builds the adapter and checks it against the node ([`EvmAdapter::check`]).
    pub async fn connect(config: EvmConfig) -> Result<Self, ChainError> {
        let adapter = Self::new(config)?;
        adapter.check().await?;
        Ok(adapter)
    }

    /// Builds the adapter without asking the node anything (for start-up code that
    /// cannot wait; call [`EvmAdapter::check`] before the first scan).
    pub fn new(config: EvmConfig) -> Result<Self, ChainError> {
        let norm = |a: &Option<String>, what: &str| -> Result<Option<String>, ChainError> {
            a.as_deref()
                .map(abi::normalize_address)
                .transpose()
                .map_err(|e| ChainError::Misconfigured(format!("{what}: {e}")))
        };
        let payment_contract = norm(&config.payment_contract, "payment contract")?;
        let payment_address = norm(&config.payment_address, "payment address")?;
        let token_contract = norm(&config.token_contract, "token contract")?;
        if payment_contract.is_none() && payment_address.is_none() {
            return Err(ChainError::Misconfigured(format!(
                "{}: neither a payment contract nor a payment address is configured",
                config.chain
            )));
        }
        let rpc = RpcClient::new(&config.rpc_url, config.retry.clone())?;
        Ok(Self {
            config,
            rpc,
            payment_contract,
            payment_address,
            token_contract,
            event_topic: abi::event_topic(VALIDATION_REQUESTED_SIGNATURE),
        })
    }

    /// Checks the configuration against the node: the chain id must match and the
    /// configured contracts must have code. A mismatch is [`ChainError::Misconfigured`]
    /// (never retried); an unreachable node is [`ChainError::Unavailable`].
    pub async fn check(&self) -> Result<(), ChainError> {
        let config = &self.config;
        let reported: String = self.rpc.call("eth_chainId", json!([])).await?;
        let reported = abi::quantity_u64(&reported).map_err(abi_err("eth_chainId"))?;
        if reported != config.chain_id {
            return Err(ChainError::Misconfigured(format!(
                "{}: the node at the configured RPC URL serves chain id {reported}, the configuration says {}",
                config.chain, config.chain_id
            )));
        }
        for (addr, what) in [
            (&self.payment_contract, "payment contract"),
            (&self.token_contract, "token contract"),
        ] {
            if let Some(addr) = addr {
                let code: String = self
                    .rpc
                    .call("eth_getCode", json!([addr, "latest"]))
                    .await?;
                if code.len() <= 2 {
                    return Err(ChainError::Misconfigured(format!(
                        "{}: no contract code at the {what} {addr}",
                        config.chain
                    )));
                }
            }
        }
        Ok(())
    }

    pub fn config(&self) -> &EvmConfig {
        &self.config
    }

    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    async fn block_number(&self) -> Result<u64, ChainError> {
        let n: String = self.rpc.call("eth_blockNumber", json!([])).await?;
        abi::quantity_u64(&n).map_err(abi_err("eth_blockNumber"))
    }

    async fn header(&self, number: u64) -> Result<Option<RpcHeader>, ChainError> {
        self.rpc
            .call(
                "eth_getBlockByNumber",
                json!([abi::to_quantity(number), false]),
            )
            .await
    }

    async fn header_required(&self, number: u64) -> Result<RpcHeader, ChainError> {
        self.header(number)
            .await?
            .ok_or_else(|| bad(format!("block {number} missing below the head")))
    }

    async fn full_block(&self, number: u64) -> Result<RpcFullBlock, ChainError> {
        let block: Option<RpcFullBlock> = self
            .rpc
            .call(
                "eth_getBlockByNumber",
                json!([abi::to_quantity(number), true]),
            )
            .await?;
        block.ok_or_else(|| bad(format!("block {number} missing below the head")))
    }

    async fn receipt(&self, tx: &str) -> Result<Option<RpcReceipt>, ChainError> {
        self.rpc
            .call("eth_getTransactionReceipt", json!([tx]))
            .await
    }

    /// `ValidationRequested` logs of the router in `[from, to]`, oldest first.
    async fn router_logs(
        &self,
        router: &str,
        from: u64,
        to: u64,
    ) -> Result<Vec<RpcLog>, ChainError> {
        let filter = json!([{
            "address": router,
            "topics": [self.event_topic],
            "fromBlock": abi::to_quantity(from),
            "toBlock": abi::to_quantity(to),
        }]);
        let mut logs: Vec<RpcLog> = self.rpc.call("eth_getLogs", filter).await?;
        logs.retain(|l| !l.removed);
        let mut keyed = Vec::with_capacity(logs.len());
        for l in logs {
            let block = abi::quantity_u64(&l.block_number).map_err(abi_err("log block"))?;
            let index = abi::quantity_u64(&l.log_index).map_err(abi_err("log index"))?;
            keyed.push(((block, index), l));
        }
        keyed.sort_by_key(|(k, _)| *k);
        Ok(keyed.into_iter().map(|(_, l)| l).collect())
    }

    fn is_router_event(&self, log: &RpcLog) -> bool {
        self.payment_contract
            .as_deref()
            .is_some_and(|r| log.address.eq_ignore_ascii_case(r))
            && log
                .topics
                .first()
                .is_some_and(|t| t.eq_ignore_ascii_case(&self.event_topic))
    }

    fn payment_from_log(&self, log: &RpcLog, index: u32) -> Result<Payment, ChainError> {
        let topic = log
            .topics
            .get(1)
            .ok_or_else(|| bad("ValidationRequested without a payer topic"))?;
        let payer_word = abi::decode_hex(topic).map_err(abi_err("payer topic"))?;
        let payer = abi::word_address(&payer_word).map_err(abi_err("payer topic"))?;
        let data = abi::decode_hex(&log.data).map_err(abi_err("log data"))?;
        let (amount_wei, raw_message) =
            abi::decode_validation_requested(&data).map_err(abi_err("ValidationRequested data"))?;
        Ok(Payment {
            reference: self.reference(&log.transaction_hash, index)?,
            payer: Payer::parse(&payer).map_err(bad)?,
            amount_base_units: amount_wei,
            message: StatementMessage::parse(&raw_message),
            raw_message,
            block: ChainBlock {
                number: abi::quantity_u64(&log.block_number).map_err(abi_err("log block"))?,
                hash: log.block_hash.to_ascii_lowercase(),
            },
            callback_url: None,
        })
    }

    fn is_plain_payment(&self, tx: &RpcTx) -> bool {
        matches!((&self.payment_address, &tx.to), (Some(ours), Some(to)) if to.eq_ignore_ascii_case(ours))
    }

    fn payment_from_tx(&self, tx: &RpcTx, block: ChainBlock) -> Result<Payment, ChainError> {
        let raw_message = abi::decode_hex(&tx.input).map_err(abi_err("tx input"))?;
        let from = abi::normalize_address(&tx.from).map_err(abi_err("tx sender"))?;
        Ok(Payment {
            reference: self.reference(&tx.hash, 0)?,
            payer: Payer::parse(&from).map_err(bad)?,
            amount_base_units: abi::quantity_u128(&tx.value).map_err(abi_err("tx value"))?,
            message: StatementMessage::parse(&raw_message),
            raw_message,
            block,
            callback_url: None,
        })
    }

    fn reference(&self, tx_hash: &str, index: u32) -> Result<PaymentRef, ChainError> {
        Ok(PaymentRef {
            chain: self.config.chain.clone(),
            tx_hash: TxHash::parse(&tx_hash.to_ascii_lowercase()).map_err(bad)?,
            index,
        })
    }

    /// Numbers each log by its position among the router events of its transaction.
    fn payments_from_logs(&self, logs: &[RpcLog]) -> Result<Vec<Payment>, ChainError> {
        let mut out = Vec::with_capacity(logs.len());
        let mut prev_tx: Option<&str> = None;
        let mut index = 0u32;
        for log in logs {
            if prev_tx.is_some_and(|t| t.eq_ignore_ascii_case(&log.transaction_hash)) {
                index += 1;
            } else {
                index = 0;
            }
            prev_tx = Some(&log.transaction_hash);
            out.push(self.payment_from_log(log, index)?);
        }
        Ok(out)
    }

    /// A plain transfer counts only when it succeeded: a reverted transaction moved no
    /// value. Receipts are fetched only for transactions to the payment address.
    async fn tx_succeeded(&self, tx_hash: &str) -> Result<bool, ChainError> {
        let receipt = self
            .receipt(tx_hash)
            .await?
            .ok_or_else(|| bad(format!("no receipt for mined transaction {tx_hash}")))?;
        Ok(receipt.status.as_deref().map(abi::quantity_u64) != Some(Ok(0)))
    }

    fn depth_at(&self, head: u64, block_number: u64) -> PaymentDepth {
        let confirmations = (head + 1).saturating_sub(block_number);
        if confirmations == 0 {
            // The node's head is behind the block that holds the payment (a lagging
            // load-balanced node): treat it as not yet seen rather than gone.
            PaymentDepth::Pending { confirmations: 0 }
        } else if confirmations >= self.config.confirmations.max(1) {
            PaymentDepth::Confirmed { confirmations }
        } else {
            PaymentDepth::Pending { confirmations }
        }
    }

    /// Finds the payment in its receipt: `None` when the transaction is not in the
    /// canonical chain or holds no such payment.
    async fn locate(&self, payment: &PaymentRef) -> Result<Option<(Payment, u64)>, ChainError> {
        if payment.chain != self.config.chain {
            return Ok(None);
        }
        let Some(receipt) = self.receipt(payment.tx_hash.as_str()).await? else {
            return Ok(None);
        };
        let block = ChainBlock {
            number: abi::quantity_u64(&receipt.block_number).map_err(abi_err("receipt block"))?,
            hash: receipt.block_hash.to_ascii_lowercase(),
        };
        let events: Vec<&RpcLog> = receipt
            .logs
            .iter()
            .filter(|l| self.is_router_event(l) && !l.removed)
            .collect();
        if let Some(log) = events.get(payment.index as usize) {
            return Ok(Some((
                self.payment_from_log(log, payment.index)?,
                block.number,
            )));
        }
        let succeeded = receipt.status.as_deref().map(abi::quantity_u64) != Some(Ok(0));
        if payment.index == 0 && events.is_empty() && succeeded && self.payment_address.is_some() {
            let tx: Option<RpcTx> = self
                .rpc
                .call(
                    "eth_getTransactionByHash",
                    json!([payment.tx_hash.as_str()]),
                )
                .await?;
            if let Some(tx) = tx.filter(|t| self.is_plain_payment(t)) {
                let number = block.number;
                return Ok(Some((self.payment_from_tx(&tx, block)?, number)));
            }
        }
        Ok(None)
    }

    /// Reads blocks `[from, to]` as one consistent piece of the chain linked to
    /// `parent` (the cursor's hash, when there is one): `None` when the chain moved
    /// under us while reading (the caller reports a reorg or retries).
    async fn read_range(
        &self,
        parent: Option<&str>,
        from: u64,
        to: u64,
    ) -> Result<Option<(Vec<Payment>, ChainBlock)>, ChainError> {
        let mut payments = Vec::new();
        // Plain transfers: whole blocks, whose parent links prove the range is one chain.
        let mut hashes: Vec<(u64, String)> = Vec::new();
        if self.payment_address.is_some() {
            let mut expected_parent = parent.map(str::to_ascii_lowercase);
            // Fetched a few at a time, in order, and checked link by link as they
            // arrive: a node's latency, not its work, usually bounds a catch-up, and at
            // most a few whole blocks are held in memory.
            let mut blocks = stream::iter(from..=to)
                .map(|n| self.full_block(n))
                .buffered(FULL_BLOCK_FETCH_CONCURRENCY);
            while let Some(block) = blocks.next().await {
                let block = block?;
                if let Some(p) = &expected_parent {
                    if !block.header.parent_hash.eq_ignore_ascii_case(p) {
                        return Ok(None);
                    }
                }
                let b = block.header.block()?;
                for tx in block
                    .transactions
                    .iter()
                    .filter(|t| self.is_plain_payment(t))
                {
                    if tx
                        .block_hash
                        .as_deref()
                        .is_some_and(|h| !h.eq_ignore_ascii_case(&b.hash))
                        || tx.block_number.is_none()
                    {
                        return Ok(None);
                    }
                    if self.tx_succeeded(&tx.hash).await? {
                        payments.push(self.payment_from_tx(tx, b.clone())?);
                    }
                }
                expected_parent = Some(b.hash.clone());
                hashes.push((b.number, b.hash));
            }
        }
        let Some(router) = self.payment_contract.as_deref() else {
            let last = hashes.last().cloned().ok_or_else(|| bad("empty range"))?;
            return Ok(Some((
                payments,
                ChainBlock {
                    number: last.0,
                    hash: last.1,
                },
            )));
        };
        // Contract payments: the last block before and after the logs, and the first
        // block's parent after them, so that logs from a chain that changed meanwhile
        // are never paired with a cursor on another chain.
        let last_before = self.header_required(to).await?;
        let logs = self.router_logs(router, from, to).await?;
        let last_after = self.header_required(to).await?;
        if !last_after.hash.eq_ignore_ascii_case(&last_before.hash) {
            return Ok(None);
        }
        if let Some(p) = parent {
            let first = self.header_required(from).await?;
            if !first.parent_hash.eq_ignore_ascii_case(p) {
                return Ok(None);
            }
        }
        if let Some((_, h)) = hashes.last() {
            if !h.eq_ignore_ascii_case(&last_after.hash) {
                return Ok(None);
            }
        }
        for log in &logs {
            let n = abi::quantity_u64(&log.block_number).map_err(abi_err("log block"))?;
            let known = hashes.iter().find(|(m, _)| *m == n);
            if n < from
                || n > to
                || known.is_some_and(|(_, h)| !h.eq_ignore_ascii_case(&log.block_hash))
            {
                return Ok(None);
            }
        }
        payments.extend(self.payments_from_logs(&logs)?);
        // Chain order: by block, contract events by log order, plain transfers first
        // within a block (their order does not matter to the pipeline).
        payments.sort_by_key(|p| p.block.number);
        Ok(Some((payments, last_after.block()?)))
    }

    async fn rewind_from(&self, cursor: &ScanCursor) -> Result<ScanOutcome, ChainError> {
        let target = cursor
            .block
            .number
            .saturating_sub(self.config.reorg_rewind_blocks)
            .max(self.config.start_block.saturating_sub(1));
        let block = self.header_required(target).await?.block()?;
        Ok(ScanOutcome::Reorg {
            rewind_to: ScanCursor { block },
        })
    }
}

#[async_trait]
impl ChainAdapter for EvmAdapter {
    fn chain(&self) -> &ChainId {
        &self.config.chain
    }

    fn kind(&self) -> ChainKind {
        ChainKind::Evm
    }

    async fn head(&self) -> Result<ChainBlock, ChainError> {
        let n = self.block_number().await?;
        self.header_required(n).await?.block()
    }

    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        max_blocks: u64,
    ) -> Result<ScanOutcome, ChainError> {
        let head = self.block_number().await?;
        let from = match cursor {
            Some(c) => c.block.number + 1,
            None => self.config.start_block,
        };
        if from > head {
            // Nothing new; still make sure the cursor block is canonical.
            return match cursor {
                Some(c) => {
                    let at = self.header(c.block.number).await?;
                    if at.is_some_and(|h| h.hash.eq_ignore_ascii_case(&c.block.hash)) {
                        Ok(ScanOutcome::Blocks {
                            payments: Vec::new(),
                            cursor: c.clone(),
                        })
                    } else {
                        self.rewind_from(c).await
                    }
                }
                None => {
                    // Start block not mined yet: stand just before it.
                    let block = self.header_required(head).await?.block()?;
                    Ok(ScanOutcome::Blocks {
                        payments: Vec::new(),
                        cursor: ScanCursor { block },
                    })
                }
            };
        }
        let span = max_blocks
            .max(1)
            .min(self.config.log_range_max_blocks.max(1));
        let to = head.min(from + span - 1);
        match self
            .read_range(cursor.map(|c| c.block.hash.as_str()), from, to)
            .await?
        {
            Some((payments, block)) => Ok(ScanOutcome::Blocks {
                payments,
                cursor: ScanCursor { block },
            }),
            None => match cursor {
                Some(c) => {
                    let at = self.header(c.block.number).await?;
                    if at.is_some_and(|h| h.hash.eq_ignore_ascii_case(&c.block.hash)) {
                        // The cursor still stands: the tip moved while we read. Report
                        // no progress; the next scan reads the range again.
                        Ok(ScanOutcome::Blocks {
                            payments: Vec::new(),
                            cursor: c.clone(),
                        })
                    } else {
                        self.rewind_from(c).await
                    }
                }
                None => Err(ChainError::Unavailable(
                    "the chain changed while the first range was read".into(),
                )),
            },
        }
    }

    /// Follows the transaction wherever the canonical chain holds it now: a payment
    /// reorged out and mined again in another block is still the same payment (same
    /// transaction hash, same content), so it keeps its reference and counts from the
    /// new block. `Gone` only when no canonical block holds it.
    ///
    /// A missing receipt counts as `Gone` only once `seen_in` is no longer canonical: a
    /// node behind a load balancer can miss a receipt for a moment, and dropping a paid
    /// validation on that would be wrong and final.
    async fn depth(
        &self,
        payment: &PaymentRef,
        seen_in: &ChainBlock,
    ) -> Result<PaymentDepth, ChainError> {
        let Some((_, block_number)) = self.locate(payment).await? else {
            if self.receipt(payment.tx_hash.as_str()).await?.is_some() {
                // Mined, but holds no payment at this index: never was one.
                return Ok(PaymentDepth::Gone);
            }
            let still_there = self
                .header(seen_in.number)
                .await?
                .is_some_and(|h| h.hash.eq_ignore_ascii_case(&seen_in.hash));
            if still_there && payment.chain == self.config.chain {
                return Err(ChainError::Unavailable(format!(
                    "no receipt for {payment} although block {} is canonical",
                    seen_in.number
                )));
            }
            return Ok(PaymentDepth::Gone);
        };
        let head = self.block_number().await?;
        Ok(self.depth_at(head, block_number))
    }

    async fn payment(
        &self,
        payment: &PaymentRef,
    ) -> Result<Option<(Payment, PaymentDepth)>, ChainError> {
        let Some((found, block_number)) = self.locate(payment).await? else {
            return Ok(None);
        };
        let head = self.block_number().await?;
        Ok(Some((found, self.depth_at(head, block_number))))
    }
}

#[async_trait]
impl SupplySource for EvmAdapter {
    fn chain(&self) -> &ChainId {
        &self.config.chain
    }

    async fn supply_at(&self, block: Option<u64>) -> Result<SupplyEntry, ChainError> {
        let token = self.token_contract.clone().ok_or_else(|| {
            ChainError::Misconfigured(format!(
                "{}: no token contract configured",
                self.config.chain
            ))
        })?;
        let number = match block {
            Some(n) => n,
            // The newest block deep enough to be final by this chain's rule.
            None => self
                .block_number()
                .await?
                .saturating_sub(self.config.confirmations.max(1) - 1),
        };
        let header = self.header_required(number).await?;
        // EIP-1898: call at the block by hash, so the figure belongs to exactly the
        // block we name even if a reorg replaces that height meanwhile.
        let data = format!("0x{}", hex::encode(abi::selector("totalSupply()")));
        let result: String = self
            .rpc
            .call(
                "eth_call",
                json!([{"to": token, "data": data}, {"blockHash": header.hash}]),
            )
            .await?;
        let word = abi::decode_hex(&result).map_err(abi_err("totalSupply"))?;
        let supply = abi::word_u128(&word).map_err(abi_err("totalSupply"))?;
        let block = header.block()?;
        Ok(SupplyEntry {
            chain: self.config.chain.clone(),
            token,
            block_number: block.number,
            block_hash: block.hash,
            supply: TokenAmount::new(supply, TOKEN_DECIMALS),
            as_of: header.time()?,
        })
    }
}

/// Raw `eth_getLogs` for the router event over `[from, to]`, unparsed: the baseline the
/// benchmark compares the adapter's scan with.
pub async fn raw_router_logs(
    rpc: &RpcClient,
    router: &str,
    from: u64,
    to: u64,
) -> Result<Vec<Value>, ChainError> {
    rpc.call(
        "eth_getLogs",
        json!([{
            "address": router,
            "topics": [abi::event_topic(VALIDATION_REQUESTED_SIGNATURE)],
            "fromBlock": abi::to_quantity(from),
            "toBlock": abi::to_quantity(to),
        }]),
    )
    .await
}
