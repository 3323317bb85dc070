//! Mint and burn of the wrapped token's SPL mint, for the reserve-management flow:
//! a legacy transaction message built by hand, signed with the minter's ed25519 key,
//! sent with `sendTransaction` (base64), and followed with `getSignatureStatuses` and
//! `getBlockHeight` until it is final, failed, or expired.
//!
//! The minter key is the mint authority (for `MintTo`) and the owner of the token
//! account burned from (for `Burn`); it also pays the fee. It lives only inside
//! [`MinterKey`], whose `Debug` never shows it. Policy (who approved, how much, the ratio)
//! is decided before this is called; this module only builds, signs and reports.

use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use serde::Deserialize;
use serde_json::json;

use super::wire::{self, WithContext, MEMO_V2_PROGRAM_ID, TOKEN_PROGRAM_ID};
use super::{Commitment, RpcClient, SolanaConfig};
use crate::ChainError;

/// Largest serialized transaction a Solana node accepts (IPv6 MTU minus headers).
pub const PACKET_DATA_SIZE: usize = 1232;

/// SPL Token instruction tags (`TokenInstruction` in spl-token).
const TOKEN_IX_MINT_TO: u8 = 7;
const TOKEN_IX_BURN: u8 = 8;

/// The minter's ed25519 key. `Debug` prints only the public address.
pub struct MinterKey(SigningKey);

impl std::fmt::Debug for MinterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MinterKey({}, secret [redacted])", self.address())
    }
}

impl MinterKey {
    pub fn from_secret(secret: [u8; 32]) -> Self {
        Self(SigningKey::from_bytes(&secret))
    }

    /// Reads a keypair file as `solana-keygen` writes it: a JSON array of 64 numbers,
    /// the 32-byte secret then the 32-byte public key (checked against the secret).
    pub fn from_keypair_json(text: &str) -> Result<Self, ChainError> {
        let bad = |m: &str| ChainError::Misconfigured(format!("minter keypair: {m}"));
        let bytes: Vec<u8> = serde_json::from_str(text)
            .map_err(|_| bad("not a JSON array of 64 numbers from 0 to 255"))?;
        let pair: [u8; 64] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| bad("not 64 bytes"))?;
        let mut secret = [0u8; 32];
        secret.copy_from_slice(&pair[..32]);
        let key = Self::from_secret(secret);
        if key.0.verifying_key().as_bytes() != &pair[32..] {
            return Err(bad("the public half does not match the secret half"));
        }
        Ok(key)
    }

    /// The base58 address (public key).
    pub fn address(&self) -> String {
        wire::base58_encode(self.0.verifying_key().as_bytes())
    }

    fn public(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }
}

/// What to do with the wrapped token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenOp {
    /// Mint `amount` base units into the token account `destination`.
    MintTo { destination: String, amount: u64 },
    /// Burn `amount` base units from the token account `source`, owned by the minter.
    Burn { source: String, amount: u64 },
}

/// A signed transaction, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedTx {
    /// Base58 of the fee payer's signature: the transaction's id.
    pub signature: String,
    /// The serialized transaction (signatures, then the message).
    pub wire: Vec<u8>,
}

/// A transaction the node accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub signature: String,
    /// Past this block height its blockhash has expired: it can no longer land.
    pub last_valid_block_height: u64,
}

/// Where a submitted transaction stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxStatus {
    /// Not yet at the configured commitment (or not seen yet, and still valid).
    Pending,
    /// Final by the configured commitment, and succeeded.
    Confirmed { slot: u64 },
    /// Executed and failed: nothing was minted or burned.
    Failed { error: String },
    /// Never landed and its blockhash expired: safe to build and send a new one.
    Expired,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LatestBlockhash {
    blockhash: String,
    last_valid_block_height: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SignatureStatus {
    slot: u64,
    #[serde(default)]
    err: Option<serde_json::Value>,
    #[serde(default)]
    confirmation_status: Option<String>,
}

/// Signs and sends mint and burn transactions for one Solana chain's mint.
pub struct SolanaMinter {
    rpc: RpcClient,
    mint: [u8; 32],
    commitment: Commitment,
    key: MinterKey,
}

impl std::fmt::Debug for SolanaMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SolanaMinter")
            .field("mint", &wire::base58_encode(&self.mint))
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

fn misconfigured(what: impl std::fmt::Display) -> ChainError {
    ChainError::Misconfigured(what.to_string())
}

fn pubkey(s: &str, what: &str) -> Result<[u8; 32], ChainError> {
    wire::decode_pubkey(s).map_err(|e| misconfigured(format!("{what} {s:?}: {e}")))
}

/// Solana's "compact-u16" length prefix: 7 bits per byte, low bits first.
fn push_compact_u16(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

impl SolanaMinter {
    /// The chain's RPC settings and token mint come from its [`SolanaConfig`].
    pub fn new(config: &SolanaConfig, key: MinterKey) -> Result<Self, ChainError> {
        let mint = config
            .token_mint
            .as_deref()
            .ok_or_else(|| misconfigured(format!("{}: no token mint configured", config.chain)))?;
        Ok(Self {
            rpc: RpcClient::new(&config.rpc_url, config.retry.clone())?,
            mint: pubkey(mint, "token mint")?,
            commitment: config.commitment,
            key,
        })
    }

    pub fn address(&self) -> String {
        self.key.address()
    }

    /// Builds and signs the legacy transaction for `op` (plus a Memo v2 instruction
    /// with `memo`, naming the operation on chain, when given). Pure: no request.
    pub fn build(
        &self,
        op: &TokenOp,
        memo: Option<&str>,
        recent_blockhash: &str,
    ) -> Result<SignedTx, ChainError> {
        let signer = self.key.public();
        let (tag, amount, writable) = match op {
            TokenOp::MintTo {
                destination,
                amount,
            } => (
                TOKEN_IX_MINT_TO,
                *amount,
                // MintTo: [mint (w), destination (w), authority (s)].
                [self.mint, pubkey(destination, "destination token account")?],
            ),
            TokenOp::Burn { source, amount } => (
                TOKEN_IX_BURN,
                *amount,
                // Burn: [source (w), mint (w), owner (s)].
                [pubkey(source, "source token account")?, self.mint],
            ),
        };
        if amount == 0 {
            return Err(misconfigured("a mint or burn of 0 base units"));
        }
        if writable[0] == writable[1] || writable.contains(&signer) {
            return Err(misconfigured(
                "the token account, the mint and the minter must be distinct accounts",
            ));
        }
        let token_program = pubkey(TOKEN_PROGRAM_ID, "token program")?;
        let memo_program = pubkey(MEMO_V2_PROGRAM_ID, "memo program")?;
        let blockhash = pubkey(recent_blockhash, "recent blockhash")?;

        // Account order fixed by the message format: writable signers, read-only
        // signers (none), writable non-signers, read-only non-signers.
        let mut keys: Vec<[u8; 32]> = vec![signer, writable[0], writable[1], token_program];
        if memo.is_some() {
            keys.push(memo_program);
        }
        let readonly_unsigned = (keys.len() - 3) as u8;

        let mut message = vec![1u8, 0, readonly_unsigned];
        push_compact_u16(&mut message, keys.len());
        for k in &keys {
            message.extend_from_slice(k);
        }
        message.extend_from_slice(&blockhash);
        push_compact_u16(&mut message, if memo.is_some() { 2 } else { 1 });
        // The token instruction: program index 3, accounts 1, 2, 0 in the orders noted
        // above (both are "first writable, second writable, signer").
        message.push(3);
        push_compact_u16(&mut message, 3);
        message.extend_from_slice(&[1, 2, 0]);
        let mut data = vec![tag];
        data.extend_from_slice(&amount.to_le_bytes());
        push_compact_u16(&mut message, data.len());
        message.extend_from_slice(&data);
        if let Some(text) = memo {
            message.push(4);
            push_compact_u16(&mut message, 0);
            push_compact_u16(&mut message, text.len());
            message.extend_from_slice(text.as_bytes());
        }

        let signature = self.key.0.sign(&message).to_bytes();
        let mut tx = Vec::with_capacity(1 + 64 + message.len());
        push_compact_u16(&mut tx, 1);
        tx.extend_from_slice(&signature);
        tx.extend_from_slice(&message);
        if tx.len() > PACKET_DATA_SIZE {
            return Err(misconfigured(format!(
                "the transaction is {} bytes; a node accepts at most {PACKET_DATA_SIZE} (shorten the memo)",
                tx.len()
            )));
        }
        Ok(SignedTx {
            signature: wire::base58_encode(&signature),
            wire: tx,
        })
    }

    /// Fetches a recent blockhash and builds and signs `op` with it. Nothing is sent:
    /// the caller may store the transaction first (see [`SolanaMinter::send_wire`]).
    pub async fn sign(&self, op: &TokenOp, memo: Option<&str>) -> Result<Signed, ChainError> {
        let latest: WithContext<LatestBlockhash> = self
            .rpc
            .call(
                "getLatestBlockhash",
                json!([{"commitment": self.commitment.as_str()}]),
            )
            .await?;
        let tx = self.build(op, memo, &latest.value.blockhash)?;
        Ok(Signed {
            tx,
            last_valid_block_height: latest.value.last_valid_block_height,
        })
    }

    /// Sends a signed transaction (`sendTransaction`, base64, with preflight): a
    /// transaction that would fail is refused as `BadResponse`. Sending the same bytes
    /// again is harmless: the cluster deduplicates by signature.
    pub async fn send_wire(&self, wire: &[u8], signature: &str) -> Result<(), ChainError> {
        let encoded = base64::engine::general_purpose::STANDARD.encode(wire);
        let answered: String = self
            .rpc
            .call(
                "sendTransaction",
                json!([encoded, {
                    "encoding": "base64",
                    "skipPreflight": false,
                    "preflightCommitment": self.commitment.as_str(),
                }]),
            )
            .await?;
        if answered != signature {
            return Err(ChainError::BadResponse(format!(
                "sendTransaction answered signature {answered}, the transaction's is {signature}"
            )));
        }
        Ok(())
    }

    /// Fetches a recent blockhash, builds, signs and sends `op` (see
    /// [`SolanaMinter::send_wire`]).
    ///
    /// The client's retries on timeouts cannot mint twice (same signature); a *new*
    /// transaction for the same operation must wait until [`TxStatus::Expired`].
    pub async fn submit(&self, op: &TokenOp, memo: Option<&str>) -> Result<Submitted, ChainError> {
        let signed = self.sign(op, memo).await?;
        self.send_wire(&signed.tx.wire, &signed.tx.signature)
            .await?;
        Ok(Submitted {
            signature: signed.tx.signature,
            last_valid_block_height: signed.last_valid_block_height,
        })
    }

    /// What the cluster knows of `signature`: `None` when no node status has it (not
    /// landed yet, or never will).
    pub async fn landed(&self, signature: &str) -> Result<Option<Landed>, ChainError> {
        let statuses: WithContext<Vec<Option<SignatureStatus>>> = self
            .rpc
            .call(
                "getSignatureStatuses",
                json!([[signature], {"searchTransactionHistory": true}]),
            )
            .await?;
        let status = statuses.value.into_iter().next().ok_or_else(|| {
            ChainError::BadResponse("getSignatureStatuses answered no entry".into())
        })?;
        Ok(status.map(|s| Landed {
            slot: s.slot,
            error: s.err.map(|e| e.to_string()),
            final_: matches!(
                (self.commitment, s.confirmation_status.as_deref()),
                (_, Some("finalized")) | (Commitment::Confirmed, Some("confirmed"))
            ),
        }))
    }

    /// True once the finalized block height is past `last_valid_block_height`: a
    /// transaction with that blockhash that has not landed never will, on any fork.
    pub async fn expired(&self, last_valid_block_height: u64) -> Result<bool, ChainError> {
        let height: u64 = self
            .rpc
            .call("getBlockHeight", json!([{"commitment": "finalized"}]))
            .await?;
        Ok(height > last_valid_block_height)
    }

    /// Where `submitted` stands. `Expired` only once the finalized block height is past
    /// its last valid height: from then on no fork can include it.
    pub async fn status(&self, submitted: &Submitted) -> Result<TxStatus, ChainError> {
        if let Some(l) = self.landed(&submitted.signature).await? {
            return Ok(match l.error {
                Some(error) => TxStatus::Failed { error },
                None if l.final_ => TxStatus::Confirmed { slot: l.slot },
                None => TxStatus::Pending,
            });
        }
        Ok(if self.expired(submitted.last_valid_block_height).await? {
            TxStatus::Expired
        } else {
            TxStatus::Pending
        })
    }

    /// The mint's supply in base units and its decimals, at the configured commitment.
    pub async fn supply(&self) -> Result<(u64, u8), ChainError> {
        let supply: WithContext<wire::TokenSupply> = self
            .rpc
            .call(
                "getTokenSupply",
                json!([wire::base58_encode(&self.mint), {"commitment": self.commitment.as_str()}]),
            )
            .await?;
        let amount: u64 = supply.value.amount.parse().map_err(|e| {
            ChainError::BadResponse(format!(
                "getTokenSupply amount {:?}: {e}",
                supply.value.amount
            ))
        })?;
        Ok((amount, supply.value.decimals))
    }

    /// The token account of this mint that `to` names: `to` itself when it is one (an
    /// SPL token account of this mint), else the token account of this mint owned by
    /// `to` (a wallet). Several such accounts: the lowest address, so the choice is the
    /// same on every call. None: refused — the holder must create one first (minting
    /// to a wallet address directly would fail on chain).
    pub async fn token_account_for(&self, to: &str) -> Result<String, ChainError> {
        let to_key = wire::decode_pubkey(to)
            .map_err(|e| ChainError::Misconfigured(format!("recipient {to:?}: {e}")))?;
        let mint = wire::base58_encode(&self.mint);
        let info: WithContext<Option<AccountInfo>> = self
            .rpc
            .call(
                "getAccountInfo",
                json!([to, {"encoding": "jsonParsed", "commitment": self.commitment.as_str()}]),
            )
            .await?;
        if let Some(a) = info.value {
            if a.owner == TOKEN_PROGRAM_ID {
                let of_mint = a.data["parsed"]["type"] == "account"
                    && a.data["parsed"]["info"]["mint"] == mint.as_str();
                return if of_mint {
                    Ok(wire::base58_encode(&to_key))
                } else {
                    Err(ChainError::Misconfigured(format!(
                        "{to} is a token program account but not a token account of mint {mint}"
                    )))
                };
            }
        }
        let owned: WithContext<Vec<KeyedAccount>> = self
            .rpc
            .call(
                "getTokenAccountsByOwner",
                json!([to, {"mint": mint}, {"encoding": "jsonParsed", "commitment": self.commitment.as_str()}]),
            )
            .await?;
        owned
            .value
            .into_iter()
            .map(|k| k.pubkey)
            .min()
            .ok_or_else(|| {
                ChainError::Misconfigured(format!(
                    "{to} has no token account of mint {mint}: create one (e.g. its associated token account) first"
                ))
            })
    }
}

/// A burn of the wrapped token read back from the chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SolanaBurn {
    /// The owner (or delegate) that signed the burn.
    pub authority: String,
    /// Base units burned by the transaction's top-level burns of the mint.
    pub amount: u64,
    pub slot: u64,
}

/// Read-only view of the wrapped token's SPL mint (a guardian's own node): supply and
/// burns, at the configured commitment. No key.
pub struct SolanaTokenReader {
    rpc: RpcClient,
    mint: String,
    commitment: Commitment,
}

impl std::fmt::Debug for SolanaTokenReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SolanaTokenReader")
            .field("mint", &self.mint)
            .finish_non_exhaustive()
    }
}

impl SolanaTokenReader {
    pub fn new(config: &SolanaConfig) -> Result<Self, ChainError> {
        let mint = config
            .token_mint
            .clone()
            .ok_or_else(|| misconfigured(format!("{}: no token mint configured", config.chain)))?;
        pubkey(&mint, "token mint")?;
        Ok(Self {
            rpc: RpcClient::new(&config.rpc_url, config.retry.clone())?,
            mint,
            commitment: config.commitment,
        })
    }

    /// The mint's supply in base units and its decimals.
    pub async fn supply(&self) -> Result<(u64, u8), ChainError> {
        let supply: WithContext<wire::TokenSupply> = self
            .rpc
            .call(
                "getTokenSupply",
                json!([self.mint, {"commitment": self.commitment.as_str()}]),
            )
            .await?;
        let amount: u64 = supply.value.amount.parse().map_err(|e| {
            ChainError::BadResponse(format!(
                "getTokenSupply amount {:?}: {e}",
                supply.value.amount
            ))
        })?;
        Ok((amount, supply.value.decimals))
    }

    /// The burns of this mint in transaction `signature` (top-level `burn` and
    /// `burnChecked` instructions, summed), once the transaction is at the configured
    /// commitment and succeeded. `None`: not found at that commitment, failed, or no
    /// burn of this mint in it. Several burn authorities in one transaction: refused.
    pub async fn burn(&self, signature: &str) -> Result<Option<SolanaBurn>, ChainError> {
        let tx: Option<wire::Transaction> = self
            .rpc
            .call(
                "getTransaction",
                json!([signature, {
                    "commitment": self.commitment.as_str(),
                    "encoding": "jsonParsed",
                    "maxSupportedTransactionVersion": 0,
                }]),
            )
            .await?;
        let Some(tx) = tx else { return Ok(None) };
        if tx.transaction.signatures.first().map(String::as_str) != Some(signature) {
            return Err(ChainError::BadResponse(format!(
                "getTransaction({signature}) answered another transaction"
            )));
        }
        match &tx.meta {
            Some(m) if m.err.is_none() => {}
            _ => return Ok(None),
        }
        let mut found: Option<SolanaBurn> = None;
        for ix in &tx.transaction.message.instructions {
            let Some(p) = ix
                .parsed
                .as_ref()
                .filter(|_| ix.program_id == TOKEN_PROGRAM_ID)
            else {
                continue;
            };
            if !matches!(p["type"].as_str(), Some("burn" | "burnChecked"))
                || p["info"]["mint"] != self.mint.as_str()
            {
                continue;
            }
            let info = &p["info"];
            let text = info["amount"]
                .as_str()
                .or_else(|| info["tokenAmount"]["amount"].as_str())
                .unwrap_or_default();
            let amount: u64 = text
                .parse()
                .map_err(|_| ChainError::BadResponse(format!("burn amount {text:?}")))?;
            let authority = info["authority"]
                .as_str()
                .or_else(|| info["multisigAuthority"].as_str())
                .unwrap_or_default()
                .to_owned();
            match &mut found {
                None => {
                    found = Some(SolanaBurn {
                        authority,
                        amount,
                        slot: tx.slot,
                    })
                }
                Some(b) if b.authority == authority => {
                    b.amount = b
                        .amount
                        .checked_add(amount)
                        .ok_or_else(|| ChainError::BadResponse("burn amounts overflow".into()))?
                }
                Some(_) => {
                    return Err(ChainError::BadResponse(format!(
                        "{signature}: burns by several authorities in one transaction"
                    )))
                }
            }
        }
        Ok(found)
    }
}

/// A signed transaction and the block height after which it can no longer land.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signed {
    pub tx: SignedTx,
    pub last_valid_block_height: u64,
}

/// A transaction the cluster has a status for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Landed {
    pub slot: u64,
    /// The execution error: nothing was minted or burned.
    pub error: Option<String>,
    /// At the configured commitment (or deeper).
    pub final_: bool,
}

#[derive(Deserialize)]
struct AccountInfo {
    owner: String,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct KeyedAccount {
    pubkey: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn compact_u16_matches_the_format() {
        for (n, bytes) in [
            (0usize, vec![0u8]),
            (0x7f, vec![0x7f]),
            (0x80, vec![0x80, 0x01]),
            (0x3fff, vec![0xff, 0x7f]),
            (0x4000, vec![0x80, 0x80, 0x01]),
        ] {
            let mut out = Vec::new();
            push_compact_u16(&mut out, n);
            assert_eq!(out, bytes, "{n}");
        }
    }

    #[test]
    fn keypair_file_is_checked_and_never_printed() {
        let key = MinterKey::from_secret([9u8; 32]);
        let mut pair = vec![9u8; 32];
        pair.extend_from_slice(&key.public());
        let json = serde_json::to_string(&pair).unwrap();
        let loaded = MinterKey::from_keypair_json(&json).unwrap();
        assert_eq!(loaded.address(), key.address());
        let shown = format!("{loaded:?}");
        assert!(shown.contains("[redacted]") && !shown.contains("9, 9"));
        pair[40] ^= 1;
        let json = serde_json::to_string(&pair).unwrap();
        assert!(MinterKey::from_keypair_json(&json).is_err());
        assert!(MinterKey::from_keypair_json("[1, 2, 3]").is_err());
    }
}
