//! The in-process development chain and development Bitcoin backend.
//!
//! `ubtc demo` and the tests drive these by hand: submit a payment, mine blocks,
//! reorg the last few blocks away, advance the Bitcoin tip, fund a reserve address.
//! They behave like real chains where the pipeline can tell the difference: blocks
//! have parent hashes, payments gain depth one block at a time, and a reorg removes
//! transactions (they do not come back, as when a double spend replaces them).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use ubtc_core::bundle::{SupplyEntry, Utxo};
use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::{
    BlockStamp, ChainId, ChainKind, Payment, PaymentRef, StatementMessage, Timestamp, TokenAmount,
};

use crate::{
    BitcoinBackend, ChainAdapter, ChainError, PaymentDepth, ScanCursor, ScanOutcome, SupplySource,
};

/// How far back a monitor rescans after the dev chain reports a reorg.
pub const DEV_REORG_REWIND_BLOCKS: u64 = 64;

#[derive(Clone, Debug)]
pub struct DevTx {
    pub hash: TxHash,
    pub from: Payer,
    pub to: String,
    pub amount: u128,
    pub data: Vec<u8>,
}

#[derive(Clone, Debug)]
struct DevBlock {
    number: u64,
    hash: String,
    parent: String,
    txs: Vec<DevTx>,
}

struct Inner {
    blocks: Vec<DevBlock>,
    mempool: Vec<DevTx>,
    nonce: u64,
}

/// A chain in memory. Cheap to clone (shared state).
#[derive(Clone)]
pub struct DevChain {
    chain: ChainId,
    payment_address: String,
    confirmations: u64,
    inner: Arc<Mutex<Inner>>,
}

fn sha256_hex(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_le_bytes());
        h.update(p);
    }
    hex::encode(h.finalize())
}

impl DevChain {
    /// A new chain holding only its genesis block. Payments count once they are
    /// `confirmations` deep (the block that holds them counts as one).
    pub fn new(chain: ChainId, payment_address: &str, confirmations: u64) -> Self {
        let genesis = DevBlock {
            number: 0,
            hash: format!(
                "0x{}",
                sha256_hex(&[b"ubtc-dev-genesis", chain.as_str().as_bytes()])
            ),
            parent: format!("0x{}", "0".repeat(64)),
            txs: Vec::new(),
        };
        Self {
            chain,
            payment_address: payment_address.to_owned(),
            confirmations: confirmations.max(1),
            inner: Arc::new(Mutex::new(Inner {
                blocks: vec![genesis],
                mempool: Vec::new(),
                nonce: 0,
            })),
        }
    }

    pub fn chain_id(&self) -> &ChainId {
        &self.chain
    }

    pub fn payment_address(&self) -> &str {
        &self.payment_address
    }

    pub fn confirmations(&self) -> u64 {
        self.confirmations
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts a payment to the payment address in the mempool; it is mined by the next
    /// [`DevChain::mine`]. Returns its transaction hash.
    pub fn submit_payment(&self, payer: &Payer, amount: u128, message: &[u8]) -> TxHash {
        let to = self.payment_address.clone();
        self.submit_transfer(payer, &to, amount, message)
    }

    /// Puts any transfer in the mempool (payments to other addresses are not ours).
    pub fn submit_transfer(&self, payer: &Payer, to: &str, amount: u128, data: &[u8]) -> TxHash {
        let mut inner = self.lock();
        inner.nonce += 1;
        let nonce = inner.nonce.to_le_bytes();
        let hash = format!(
            "0x{}",
            sha256_hex(&[
                b"ubtc-dev-tx",
                self.chain.as_str().as_bytes(),
                &nonce,
                payer.as_str().as_bytes(),
                to.as_bytes(),
                &amount.to_le_bytes(),
                data
            ])
        );
        // The alphabet is hex, which TxHash accepts.
        let hash = TxHash::parse(&hash).unwrap_or_else(|_| unreachable!("hex tx hash"));
        inner.mempool.push(DevTx {
            hash: hash.clone(),
            from: payer.clone(),
            to: to.to_owned(),
            amount,
            data: data.to_vec(),
        });
        hash
    }

    /// Mines `n` blocks; the first takes the whole mempool. Returns the new head.
    pub fn mine(&self, n: u64) -> ChainBlock {
        let mut inner = self.lock();
        for _ in 0..n {
            let txs = std::mem::take(&mut inner.mempool);
            Self::push_block(&mut inner, &self.chain, txs);
        }
        let head = inner.blocks.last().map(|b| ChainBlock {
            number: b.number,
            hash: b.hash.clone(),
        });
        head.unwrap_or_else(|| unreachable!("the chain always has its genesis block"))
    }

    fn push_block(inner: &mut Inner, chain: &ChainId, txs: Vec<DevTx>) {
        inner.nonce += 1;
        let parent = inner.blocks.last().map(|b| (b.number, b.hash.clone()));
        let (parent_number, parent_hash) = parent.unwrap_or_else(|| unreachable!("genesis exists"));
        let number = parent_number + 1;
        let tx_hashes: Vec<u8> = txs.iter().flat_map(|t| t.hash.as_str().bytes()).collect();
        let hash = format!(
            "0x{}",
            sha256_hex(&[
                b"ubtc-dev-block",
                chain.as_str().as_bytes(),
                parent_hash.as_bytes(),
                &number.to_le_bytes(),
                &inner.nonce.to_le_bytes(),
                &tx_hashes
            ])
        );
        inner.blocks.push(DevBlock {
            number,
            hash,
            parent: parent_hash,
            txs,
        });
    }

    /// Replaces the last `depth` blocks with `depth + 1` new empty ones (a longer
    /// competing chain). Transactions in the removed blocks are gone. Returns the new
    /// head.
    pub fn reorg(&self, depth: u64) -> ChainBlock {
        let mut inner = self.lock();
        let keep = inner.blocks.len().saturating_sub(depth as usize).max(1);
        inner.blocks.truncate(keep);
        for _ in 0..=depth {
            Self::push_block(&mut inner, &self.chain, Vec::new());
        }
        let b = inner
            .blocks
            .last()
            .unwrap_or_else(|| unreachable!("genesis exists"));
        ChainBlock {
            number: b.number,
            hash: b.hash.clone(),
        }
    }

    pub fn head_block(&self) -> ChainBlock {
        let inner = self.lock();
        let b = inner
            .blocks
            .last()
            .unwrap_or_else(|| unreachable!("genesis exists"));
        ChainBlock {
            number: b.number,
            hash: b.hash.clone(),
        }
    }

    fn to_payment(&self, tx: &DevTx, block: &DevBlock) -> Payment {
        Payment {
            reference: PaymentRef {
                chain: self.chain.clone(),
                tx_hash: tx.hash.clone(),
                index: 0,
            },
            payer: tx.from.clone(),
            amount_base_units: tx.amount,
            message: StatementMessage::parse(&tx.data),
            raw_message: tx.data.clone(),
            block: ChainBlock {
                number: block.number,
                hash: block.hash.clone(),
            },
            callback_url: None,
        }
    }

    fn depth_of(&self, inner: &Inner, block_number: u64) -> PaymentDepth {
        let head = inner.blocks.len() as u64 - 1;
        let confirmations = head.saturating_sub(block_number) + 1;
        if confirmations >= self.confirmations {
            PaymentDepth::Confirmed { confirmations }
        } else {
            PaymentDepth::Pending { confirmations }
        }
    }
}

#[async_trait]
impl ChainAdapter for DevChain {
    fn chain(&self) -> &ChainId {
        &self.chain
    }

    fn kind(&self) -> ChainKind {
        ChainKind::Dev
    }

    async fn head(&self) -> Result<ChainBlock, ChainError> {
        Ok(self.head_block())
    }

    async fn scan(
        &self,
        cursor: Option<&ScanCursor>,
        max_blocks: u64,
    ) -> Result<ScanOutcome, ChainError> {
        let inner = self.lock();
        let start = match cursor {
            None => 0,
            Some(c) => {
                // The next block must name the cursor block as its parent (at the head,
                // the head must be the cursor block itself); otherwise a reorg replaced it.
                let next = c.block.number as usize + 1;
                let still_canonical = match inner.blocks.get(next) {
                    Some(b) => b.parent == c.block.hash,
                    None => inner
                        .blocks
                        .get(next - 1)
                        .is_some_and(|b| b.hash == c.block.hash),
                };
                if !still_canonical {
                    let back = c.block.number.saturating_sub(DEV_REORG_REWIND_BLOCKS) as usize;
                    let b = &inner.blocks[back.min(inner.blocks.len() - 1)];
                    let rewind_to = ScanCursor {
                        block: ChainBlock {
                            number: b.number,
                            hash: b.hash.clone(),
                        },
                    };
                    return Ok(ScanOutcome::Reorg { rewind_to });
                }
                c.block.number + 1
            }
        };
        let mut payments = Vec::new();
        let mut last = cursor.cloned();
        for block in inner
            .blocks
            .iter()
            .skip(start as usize)
            .take(max_blocks.max(1) as usize)
        {
            for tx in block.txs.iter().filter(|t| t.to == self.payment_address) {
                payments.push(self.to_payment(tx, block));
            }
            last = Some(ScanCursor {
                block: ChainBlock {
                    number: block.number,
                    hash: block.hash.clone(),
                },
            });
        }
        let cursor = last.unwrap_or_else(|| {
            let g = &inner.blocks[0];
            ScanCursor {
                block: ChainBlock {
                    number: g.number,
                    hash: g.hash.clone(),
                },
            }
        });
        Ok(ScanOutcome::Blocks { payments, cursor })
    }

    async fn depth(
        &self,
        payment: &PaymentRef,
        _seen_in: &ChainBlock,
    ) -> Result<PaymentDepth, ChainError> {
        let inner = self.lock();
        let found = inner
            .blocks
            .iter()
            .find(|b| b.txs.iter().any(|t| t.hash == payment.tx_hash));
        Ok(match found {
            Some(block) if payment.index == 0 => self.depth_of(&inner, block.number),
            _ => PaymentDepth::Gone,
        })
    }

    async fn payment(
        &self,
        payment: &PaymentRef,
    ) -> Result<Option<(Payment, PaymentDepth)>, ChainError> {
        if payment.chain != self.chain || payment.index != 0 {
            return Ok(None);
        }
        let inner = self.lock();
        for block in &inner.blocks {
            if let Some(tx) = block
                .txs
                .iter()
                .find(|t| t.hash == payment.tx_hash && t.to == self.payment_address)
            {
                return Ok(Some((
                    self.to_payment(tx, block),
                    self.depth_of(&inner, block.number),
                )));
            }
        }
        Ok(None)
    }
}

struct BitcoinInner {
    height: u32,
    utxos: HashMap<String, Vec<Utxo>>,
    funded: u64,
    /// txid → height of the block that holds it (funding and broadcast transactions).
    txs: HashMap<String, u32>,
    /// Output script (hex) → address, learned from `fund`, so a broadcast's outputs to
    /// known scripts are listed under their address.
    scripts: HashMap<String, String>,
}

/// A Bitcoin backend in memory: a tip that advances when told to, and UTXOs that the
/// demo assigns to reserve addresses.
#[derive(Clone)]
pub struct DevBitcoin {
    inner: Arc<Mutex<BitcoinInner>>,
}

impl DevBitcoin {
    pub fn new(start_height: u32) -> Self {
        Self {
            inner: Arc::new(Mutex::new(BitcoinInner {
                height: start_height,
                utxos: HashMap::new(),
                funded: 0,
                txs: HashMap::new(),
                scripts: HashMap::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, BitcoinInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Deterministic hash of the dev block at `height`.
    pub fn hash_at(height: u32) -> String {
        sha256_hex(&[b"ubtc-dev-bitcoin-block", &height.to_le_bytes()])
    }

    pub fn advance(&self, blocks: u32) -> BlockStamp {
        let mut inner = self.lock();
        inner.height = inner.height.saturating_add(blocks);
        let height = inner.height;
        BlockStamp {
            height,
            hash: Self::hash_at(height),
        }
    }

    /// Adds an unspent output of `amount_sats` paying to `address` (whose output script
    /// is `script_pubkey_hex`). Returns it.
    pub fn fund(&self, address: &str, script_pubkey_hex: &str, amount_sats: u64) -> Utxo {
        let mut inner = self.lock();
        inner.funded += 1;
        let utxo = Utxo {
            txid: sha256_hex(&[
                b"ubtc-dev-funding",
                &inner.funded.to_le_bytes(),
                address.as_bytes(),
            ]),
            vout: 0,
            amount_sats,
            script_pubkey_hex: script_pubkey_hex.to_owned(),
        };
        inner
            .utxos
            .entry(address.to_owned())
            .or_default()
            .push(utxo.clone());
        let height = inner.height;
        inner.txs.insert(utxo.txid.clone(), height);
        inner
            .scripts
            .insert(script_pubkey_hex.to_owned(), address.to_owned());
        utxo
    }

    /// Adds `utxo` as an unspent output of `address` confirmed in the block at `height`
    /// (at most the tip). A guardian's dev Bitcoin view is given the reserve outputs
    /// this way (`[[bitcoin.dev_utxos]]` of `guardian.toml`), so that several processes
    /// can hold the same UTXO set without sharing memory.
    pub fn insert_utxo(&self, address: &str, utxo: Utxo, height: u32) {
        let mut inner = self.lock();
        let height = height.min(inner.height);
        inner.txs.insert(utxo.txid.clone(), height);
        inner
            .scripts
            .insert(utxo.script_pubkey_hex.clone(), address.to_owned());
        inner
            .utxos
            .entry(address.to_owned())
            .or_default()
            .push(utxo);
    }

    /// Every unspent output, by address (tests check what a release left behind).
    pub fn all_utxos(&self) -> HashMap<String, Vec<Utxo>> {
        self.lock().utxos.clone()
    }

    /// Applies a signed transaction: its inputs must be unspent outputs of this dev
    /// chain (they are removed), its outputs become unspent outputs in the next block
    /// (listed under their address when the script is known, else under the script
    /// hex). Scripts are NOT executed here: callers verify before broadcasting. A
    /// transaction already applied is accepted again and changes nothing.
    fn apply(&self, tx_hex: &str) -> Result<String, ChainError> {
        use bitcoin::consensus::encode::deserialize_hex;
        let tx: bitcoin::Transaction = deserialize_hex(tx_hex)
            .map_err(|e| ChainError::BadResponse(format!("not a transaction: {e}")))?;
        let txid = tx.compute_txid().to_string();
        let mut inner = self.lock();
        if inner.txs.contains_key(&txid) {
            return Ok(txid);
        }
        let mut spent = Vec::new();
        for input in &tx.input {
            let (t, v) = (
                input.previous_output.txid.to_string(),
                input.previous_output.vout,
            );
            let found = inner.utxos.iter().find_map(|(addr, list)| {
                list.iter()
                    .position(|u| u.txid == t && u.vout == v)
                    .map(|i| (addr.clone(), i))
            });
            match found {
                Some(f) if !spent.contains(&f) => spent.push(f),
                _ => {
                    return Err(ChainError::BadResponse(format!(
                        "input {t}:{v} is not an unspent output (missing or already spent)"
                    )))
                }
            }
        }
        // Remove from the back of each list so earlier indices stay valid.
        spent.sort_by_key(|s| std::cmp::Reverse(s.1));
        for (addr, i) in spent {
            if let Some(list) = inner.utxos.get_mut(&addr) {
                list.remove(i);
            }
        }
        for (vout, out) in tx.output.iter().enumerate() {
            let spk = out.script_pubkey.to_hex_string();
            let key = inner.scripts.get(&spk).cloned().unwrap_or_else(|| {
                bitcoin::Address::from_script(&out.script_pubkey, bitcoin::Network::Regtest)
                    .map(|a| a.to_string())
                    .unwrap_or_else(|_| spk.clone())
            });
            inner.utxos.entry(key).or_default().push(Utxo {
                txid: txid.clone(),
                vout: vout as u32,
                amount_sats: out.value.to_sat(),
                script_pubkey_hex: spk,
            });
        }
        let next = inner.height.saturating_add(1);
        inner.txs.insert(txid.clone(), next);
        Ok(txid)
    }
}

#[async_trait]
impl BitcoinBackend for DevBitcoin {
    async fn tip(&self) -> Result<BlockStamp, ChainError> {
        let height = self.lock().height;
        Ok(BlockStamp {
            height,
            hash: Self::hash_at(height),
        })
    }

    async fn block_hash(&self, height: u32) -> Result<String, ChainError> {
        if height > self.lock().height {
            return Err(ChainError::BadResponse(format!(
                "no block at height {height} yet"
            )));
        }
        Ok(Self::hash_at(height))
    }

    async fn address_utxos(&self, address: &str) -> Result<Vec<Utxo>, ChainError> {
        Ok(self.lock().utxos.get(address).cloned().unwrap_or_default())
    }

    async fn broadcast(&self, tx_hex: &str) -> Result<String, ChainError> {
        self.apply(tx_hex)
    }

    async fn tx_confirmations(&self, txid: &str) -> Result<Option<u32>, ChainError> {
        let inner = self.lock();
        Ok(inner
            .txs
            .get(txid)
            .map(|h| inner.height.saturating_add(1).saturating_sub(*h)))
    }
}

/// Name shown as the token of [`DevSupply`] entries: letters and digits only, as a
/// reserve attestation's supply `token` must be.
pub const DEV_TOKEN: &str = "devtoken";

/// A fixed wrapped-token supply on a dev chain, which has no token contract, so that
/// the demo's reserve snapshots show a ratio. Reported at the chain's head block.
pub struct DevSupply {
    chain: DevChain,
    supply_sats: u64,
}

impl DevSupply {
    pub fn new(chain: DevChain, supply_sats: u64) -> Self {
        Self { chain, supply_sats }
    }
}

#[async_trait]
impl SupplySource for DevSupply {
    fn chain(&self) -> &ChainId {
        self.chain.chain_id()
    }

    async fn supply_at(&self, block: Option<u64>) -> Result<SupplyEntry, ChainError> {
        let head = self.chain.head_block();
        if block.is_some_and(|n| n != head.number) {
            return Err(ChainError::Misconfigured(format!(
                "{}: the dev supply is known at the head block only",
                self.chain.chain_id()
            )));
        }
        Ok(SupplyEntry {
            chain: self.chain.chain_id().clone(),
            token: DEV_TOKEN.to_owned(),
            block_number: head.number,
            block_hash: head.hash,
            supply: TokenAmount::new(u128::from(self.supply_sats), 8),
            // The dev chain has no block times: its head is as fresh as now.
            as_of: Timestamp::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain() -> DevChain {
        DevChain::new(ChainId::parse("dev").unwrap(), "0xpay", 3)
    }

    fn payments(outcome: &ScanOutcome) -> Vec<Payment> {
        match outcome {
            ScanOutcome::Blocks { payments, .. } => payments.clone(),
            ScanOutcome::Reorg { .. } => panic!("unexpected reorg"),
        }
    }

    #[tokio::test]
    async fn payments_gain_depth_block_by_block() {
        let c = chain();
        let payer = Payer::parse("0xalice").unwrap();
        let tx = c.submit_payment(&payer, 1000, b"hello");
        c.submit_transfer(&payer, "0xelsewhere", 5, b"not ours");
        c.mine(1);
        let scan = c.scan(None, 100).await.unwrap();
        let found = payments(&scan);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].reference.tx_hash, tx);
        assert_eq!(found[0].message.as_ref().unwrap().as_str(), "hello");
        let seen = found[0].block.clone();
        assert_eq!(
            c.depth(&found[0].reference, &seen).await.unwrap(),
            PaymentDepth::Pending { confirmations: 1 }
        );
        c.mine(2);
        assert_eq!(
            c.depth(&found[0].reference, &seen).await.unwrap(),
            PaymentDepth::Confirmed { confirmations: 3 }
        );
        // Re-reading by reference gives the same payment.
        let (again, _) = c.payment(&found[0].reference).await.unwrap().unwrap();
        assert_eq!(again, found[0]);
    }

    #[tokio::test]
    async fn reorg_removes_payments_and_is_detected() {
        let c = chain();
        let payer = Payer::parse("0xbob").unwrap();
        c.mine(5);
        c.submit_payment(&payer, 1000, b"gone soon");
        c.mine(1);
        let ScanOutcome::Blocks { payments, cursor } = c.scan(None, 100).await.unwrap() else {
            panic!()
        };
        assert_eq!(payments.len(), 1);
        c.reorg(1);
        assert_eq!(
            c.depth(&payments[0].reference, &payments[0].block)
                .await
                .unwrap(),
            PaymentDepth::Gone
        );
        assert!(c.payment(&payments[0].reference).await.unwrap().is_none());
        match c.scan(Some(&cursor), 100).await.unwrap() {
            ScanOutcome::Reorg { rewind_to } => {
                // The rewind point is on the new canonical chain.
                assert!(matches!(
                    c.scan(Some(&rewind_to), 100).await.unwrap(),
                    ScanOutcome::Blocks { .. }
                ));
            }
            other => panic!("expected a reorg, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn invalid_messages_are_reported_not_hidden() {
        let c = chain();
        let payer = Payer::parse("0xcarol").unwrap();
        c.submit_payment(&payer, 1, &[0xff, 0xfe]);
        c.mine(1);
        let found = payments(&c.scan(None, 10).await.unwrap());
        assert!(found[0].message.is_err());
        assert_eq!(found[0].raw_message, vec![0xff, 0xfe]);
    }

    #[tokio::test]
    async fn dev_bitcoin_tip_and_utxos() {
        let b = DevBitcoin::new(800_000);
        let tip = b.tip().await.unwrap();
        assert_eq!(tip.height, 800_000);
        assert!(BlockStamp::new(tip.height, &tip.hash).is_ok());
        assert_eq!(b.advance(2).height, 800_002);
        assert_eq!(
            b.block_hash(800_001).await.unwrap(),
            DevBitcoin::hash_at(800_001)
        );
        assert!(b.block_hash(900_000).await.is_err());
        b.fund("bcrt1qreserve", "0014aa", 50_000);
        assert_eq!(
            b.address_utxos("bcrt1qreserve").await.unwrap()[0].amount_sats,
            50_000
        );
        assert!(b.address_utxos("other").await.unwrap().is_empty());
    }
}
