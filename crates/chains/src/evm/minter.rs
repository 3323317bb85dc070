//! The minter: signs EIP-155 transactions locally with the minter key and sends them
//! with `eth_sendRawTransaction` (`WrappedBTC.mint(to, amount)` and
//! `WrappedBTC.burn(amount)`, both `onlyMinter`), waits for receipts, and reads burns
//! back from the chain (`Transfer(from, 0x0, amount)` logs of the token contract).
//!
//! Signing and sending are separate steps on purpose: the workflow stores the signed
//! transaction and its hash BEFORE sending it, and a worker that died in between sends
//! the same bytes again (same nonce), so a mint is never made twice. The key is given
//! to [`EvmMinter::new`] already decrypted (the caller keeps it encrypted at rest with
//! the guardian keystore) and never leaves this struct: `Debug` shows only the address.

use bitcoin::secp256k1::{Message, PublicKey, SecretKey};
use serde::Deserialize;
use serde_json::{json, Value};

use super::abi::{self, Encoder};
use super::rpc::{RetryPolicy, RpcClient};
use crate::ChainError;

/// `keccak256("Transfer(address,address,uint256)")`.
pub const TRANSFER_SIGNATURE: &str = "Transfer(address,address,uint256)";
/// Gas limit of a mint or burn (the contract's own cost is about 50k).
pub const MINTER_GAS_LIMIT: u64 = 150_000;

static SECP: std::sync::LazyLock<bitcoin::secp256k1::Secp256k1<bitcoin::secp256k1::All>> =
    std::sync::LazyLock::new(bitcoin::secp256k1::Secp256k1::new);

/// A signed transaction, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedEvmTx {
    /// `0x…` keccak of the raw bytes.
    pub hash: String,
    /// `0x…` raw RLP bytes.
    pub raw: String,
    pub nonce: u64,
}

/// What a mined transaction did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvmReceipt {
    pub block: u64,
    pub success: bool,
    /// Blocks holding the transaction and on top of it.
    pub confirmations: u64,
}

/// A burn read from the chain: tokens sent from `from` to the zero address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BurnSeen {
    pub from: String,
    pub amount: u128,
    pub block: u64,
    pub confirmations: u64,
}

/// The Ethereum address (`0x…`, lowercase) of a secp256k1 key.
pub fn address_of(public: &PublicKey) -> String {
    let uncompressed = public.serialize_uncompressed();
    let hash = abi::keccak256(&uncompressed[1..]);
    format!("0x{}", hex::encode(&hash[12..]))
}

// ----- RLP (only what a legacy transaction needs) -----

fn rlp_bytes(out: &mut Vec<u8>, b: &[u8]) {
    if b.len() == 1 && b[0] < 0x80 {
        out.push(b[0]);
    } else {
        rlp_len(out, b.len(), 0x80);
        out.extend_from_slice(b);
    }
}

fn rlp_len(out: &mut Vec<u8>, len: usize, offset: u8) {
    if len < 56 {
        out.push(offset + len as u8);
    } else {
        let be = (len as u64).to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        out.push(offset + 55 + (8 - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
}

/// An integer: big-endian without leading zeros (zero is the empty string).
fn rlp_uint(out: &mut Vec<u8>, v: u128) {
    let be = v.to_be_bytes();
    let skip = be.iter().take_while(|b| **b == 0).count();
    rlp_bytes(out, &be[skip..]);
}

fn rlp_list(items: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = items.concat();
    let mut out = Vec::with_capacity(body.len() + 9);
    rlp_len(&mut out, body.len(), 0xc0);
    out.extend_from_slice(&body);
    out
}

fn item(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut v = Vec::new();
    f(&mut v);
    v
}

/// Signs a legacy EIP-155 transaction. Pure: the same inputs give the same bytes
/// (RFC 6979 nonces).
#[allow(clippy::too_many_arguments)] // the fields of the transaction, in RLP order
pub fn sign_legacy_tx(
    key: &SecretKey,
    chain_id: u64,
    nonce: u64,
    gas_price_wei: u128,
    gas_limit: u64,
    to: &[u8; 20],
    value_wei: u128,
    data: &[u8],
) -> SignedEvmTx {
    let fields = |v: Vec<u8>, r: Vec<u8>, s: Vec<u8>| {
        rlp_list(&[
            item(|o| rlp_uint(o, nonce.into())),
            item(|o| rlp_uint(o, gas_price_wei)),
            item(|o| rlp_uint(o, gas_limit.into())),
            item(|o| rlp_bytes(o, to)),
            item(|o| rlp_uint(o, value_wei)),
            item(|o| rlp_bytes(o, data)),
            v,
            r,
            s,
        ])
    };
    let unsigned = fields(
        item(|o| rlp_uint(o, chain_id.into())),
        item(|o| rlp_uint(o, 0)),
        item(|o| rlp_uint(o, 0)),
    );
    let msg = Message::from_digest(abi::keccak256(&unsigned));
    let sig = SECP.sign_ecdsa_recoverable(&msg, key);
    let (rec_id, compact) = sig.serialize_compact();
    let v = u128::from(chain_id) * 2 + 35 + rec_id.to_i32() as u128;
    let r = u128_strip(&compact[..32]);
    let s = u128_strip(&compact[32..]);
    let raw = fields(
        item(|o| rlp_uint(o, v)),
        item(|o| rlp_bytes(o, &r)),
        item(|o| rlp_bytes(o, &s)),
    );
    SignedEvmTx {
        hash: format!("0x{}", hex::encode(abi::keccak256(&raw))),
        raw: format!("0x{}", hex::encode(&raw)),
        nonce,
    }
}

/// A 32-byte big-endian scalar without leading zeros (RLP integer form).
fn u128_strip(b: &[u8]) -> Vec<u8> {
    let skip = b.iter().take_while(|x| **x == 0).count();
    b[skip..].to_vec()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Receipt {
    block_number: String,
    #[serde(default)]
    status: Option<String>,
    logs: Vec<Log>,
}

#[derive(Deserialize)]
struct Log {
    address: String,
    topics: Vec<String>,
    data: String,
}

fn bad(what: impl std::fmt::Display) -> ChainError {
    ChainError::BadResponse(what.to_string())
}

/// Reads a transaction's receipt: `None` while it is not mined.
async fn receipt(rpc: &RpcClient, hash: &str) -> Result<Option<(Receipt, u64)>, ChainError> {
    let r: Option<Receipt> = rpc.call("eth_getTransactionReceipt", json!([hash])).await?;
    let Some(r) = r else { return Ok(None) };
    let head: String = rpc.call("eth_blockNumber", json!([])).await?;
    let head = abi::quantity_u64(&head).map_err(|e| bad(format!("eth_blockNumber: {e}")))?;
    let block =
        abi::quantity_u64(&r.block_number).map_err(|e| bad(format!("receipt block: {e}")))?;
    let confirmations = head.saturating_add(1).saturating_sub(block);
    Ok(Some((r, confirmations)))
}

/// The burn made by transaction `hash` on `token` as this RPC endpoint sees it: the
/// sum of its `Transfer(from, 0x0, amount)` logs from the token contract. `None` when
/// the transaction is unknown, not mined, failed or burned nothing. Guardians call this
/// with their own endpoint.
pub async fn read_burn(
    rpc: &RpcClient,
    token: &str,
    hash: &str,
) -> Result<Option<BurnSeen>, ChainError> {
    let token =
        abi::normalize_address(token).map_err(|e| ChainError::Misconfigured(e.to_string()))?;
    let Some((r, confirmations)) = receipt(rpc, hash).await? else {
        return Ok(None);
    };
    if r.status.as_deref() != Some("0x1") {
        return Ok(None);
    }
    let topic = abi::event_topic(TRANSFER_SIGNATURE);
    let zero_topic = format!("0x{}", "0".repeat(64));
    let mut total: u128 = 0;
    let mut from = None;
    for log in &r.logs {
        if !log.address.eq_ignore_ascii_case(&token)
            || log.topics.len() != 3
            || !log.topics[0].eq_ignore_ascii_case(&topic)
            || !log.topics[2].eq_ignore_ascii_case(&zero_topic)
        {
            continue;
        }
        let data = abi::decode_hex(&log.data).map_err(|e| bad(format!("Transfer data: {e}")))?;
        let amount = abi::word_u128(&data).map_err(|e| bad(format!("Transfer amount: {e}")))?;
        let sender = abi::decode_hex(&log.topics[1])
            .ok()
            .and_then(|t| abi::word_address(&t).ok())
            .ok_or_else(|| bad("Transfer from topic"))?;
        total = total
            .checked_add(amount)
            .ok_or_else(|| bad("burn amount overflows"))?;
        from = Some(sender);
    }
    let Some(from) = from else { return Ok(None) };
    Ok(Some(BurnSeen {
        from,
        amount: total,
        block: abi::quantity_u64(&r.block_number)
            .map_err(|e| bad(format!("receipt block: {e}")))?,
        confirmations,
    }))
}

/// `totalSupply()` of `token` at the newest block, as this endpoint sees it.
pub async fn token_supply(rpc: &RpcClient, token: &str) -> Result<u128, ChainError> {
    let token =
        abi::normalize_address(token).map_err(|e| ChainError::Misconfigured(e.to_string()))?;
    let data = format!("0x{}", hex::encode(abi::selector("totalSupply()")));
    let out: String = rpc
        .call("eth_call", json!([{"to": token, "data": data}, "latest"]))
        .await?;
    let bytes = abi::decode_hex(&out).map_err(|e| bad(format!("totalSupply: {e}")))?;
    abi::word_u128(&bytes).map_err(|e| bad(format!("totalSupply: {e}")))
}

/// Sends WrappedBTC mints and burns as the contract's minter.
pub struct EvmMinter {
    rpc: RpcClient,
    chain_id: u64,
    token: String,
    token_bytes: [u8; 20],
    key: SecretKey,
    address: String,
}

impl std::fmt::Debug for EvmMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvmMinter")
            .field("chain_id", &self.chain_id)
            .field("token", &self.token)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl EvmMinter {
    pub fn new(
        rpc_url: &str,
        chain_id: u64,
        token: &str,
        key: SecretKey,
        retry: RetryPolicy,
    ) -> Result<Self, ChainError> {
        let token = abi::normalize_address(token)
            .map_err(|e| ChainError::Misconfigured(format!("token contract: {e}")))?;
        let bytes =
            abi::decode_hex(&token).map_err(|e| ChainError::Misconfigured(e.to_string()))?;
        let token_bytes: [u8; 20] = bytes
            .try_into()
            .map_err(|_| ChainError::Misconfigured("token address is not 20 bytes".into()))?;
        Ok(Self {
            rpc: RpcClient::new(rpc_url, retry)?,
            chain_id,
            token,
            token_bytes,
            address: address_of(&key.public_key(&SECP)),
            key,
        })
    }

    /// The minter's Ethereum address (the contract's `minter`).
    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn rpc(&self) -> &RpcClient {
        &self.rpc
    }

    async fn sign_call(&self, data: Vec<u8>) -> Result<SignedEvmTx, ChainError> {
        let nonce: String = self
            .rpc
            .call("eth_getTransactionCount", json!([self.address, "pending"]))
            .await?;
        let nonce = abi::quantity_u64(&nonce).map_err(|e| bad(format!("nonce: {e}")))?;
        let price: String = self.rpc.call("eth_gasPrice", json!([])).await?;
        let price = abi::quantity_u128(&price).map_err(|e| bad(format!("gas price: {e}")))?;
        Ok(sign_legacy_tx(
            &self.key,
            self.chain_id,
            nonce,
            price,
            MINTER_GAS_LIMIT,
            &self.token_bytes,
            0,
            &data,
        ))
    }

    /// Signs `mint(to, amount)` with the next nonce. Not sent.
    pub async fn sign_mint(&self, to: &str, amount: u128) -> Result<SignedEvmTx, ChainError> {
        let data = Encoder::new()
            .address(to)
            .map_err(|e| ChainError::Misconfigured(format!("mint recipient: {e}")))?
            .uint(amount)
            .call("mint(address,uint256)");
        self.sign_call(data).await
    }

    /// Signs `burn(amount)` (from the minter's own balance) with the next nonce.
    pub async fn sign_burn(&self, amount: u128) -> Result<SignedEvmTx, ChainError> {
        let data = Encoder::new().uint(amount).call("burn(uint256)");
        self.sign_call(data).await
    }

    /// Sends a signed transaction. Sending one the node already has is not an error.
    pub async fn send(&self, tx: &SignedEvmTx) -> Result<(), ChainError> {
        match self
            .rpc
            .call::<Value>("eth_sendRawTransaction", json!([tx.raw]))
            .await
        {
            Ok(_) => Ok(()),
            Err(ChainError::BadResponse(m))
                if m.contains("already known")
                    || m.contains("nonce too low")
                    || m.contains("AlreadyKnown") =>
            {
                // Already sent (or mined): the receipt tells what became of it.
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The receipt of `hash`: `None` while not mined.
    pub async fn receipt(&self, hash: &str) -> Result<Option<EvmReceipt>, ChainError> {
        Ok(receipt(&self.rpc, hash)
            .await?
            .map(|(r, confirmations)| EvmReceipt {
                block: abi::quantity_u64(&r.block_number).unwrap_or(0),
                success: r.status.as_deref() == Some("0x1"),
                confirmations,
            }))
    }

    /// The token's total supply now.
    pub async fn total_supply(&self) -> Result<u128, ChainError> {
        token_supply(&self.rpc, &self.token).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn eip155_example_transaction() {
        // The example of EIP-155 itself: nonce 9, 20 gwei, 21000 gas, to 0x3535…, 1 ether,
        // chain id 1, key 0x4646…46.
        let key = SecretKey::from_slice(&[0x46; 32]).unwrap();
        let to = [0x35u8; 20];
        let tx = sign_legacy_tx(
            &key,
            1,
            9,
            20_000_000_000,
            21_000,
            &to,
            1_000_000_000_000_000_000,
            &[],
        );
        // v = 37, r and s as published in EIP-155 (RFC 6979 nonces, as libsecp256k1).
        assert_eq!(
            tx.raw,
            concat!(
                "0xf86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a7640000",
                "8025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276",
                "a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
            )
        );
        let other = sign_legacy_tx(&key, 1, 10, 20_000_000_000, 21_000, &to, 1, &[]);
        assert_ne!(other.hash, tx.hash);
        // The sender address of the EIP's key.
        assert_eq!(
            address_of(&key.public_key(&SECP)),
            "0x9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f"
        );
    }

    #[test]
    fn rlp_lengths() {
        let mut o = Vec::new();
        rlp_uint(&mut o, 0);
        assert_eq!(o, [0x80]);
        let mut o = Vec::new();
        rlp_uint(&mut o, 0x7f);
        assert_eq!(o, [0x7f]);
        let mut o = Vec::new();
        rlp_uint(&mut o, 0x80);
        assert_eq!(o, [0x81, 0x80]);
        let long = vec![0xaau8; 60];
        let mut o = Vec::new();
        rlp_bytes(&mut o, &long);
        assert_eq!(&o[..2], &[0xb8, 60]);
    }
}
