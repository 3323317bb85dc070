//! The reserve workflow's [`TokenMinter`] on a Solana chain: [`SolanaMinter`] behind
//! the workflow's EVM-shaped records.
//!
//! The stored "transaction" of a mint or burn is the base58 signature (its `hash`,
//! the transaction id) and `LAST_VALID_BLOCK_HEIGHT:BASE64` of the wire bytes (its
//! `raw`; the height tells when an unlanded transaction has expired), so a worker that died
//! between storing and sending sends the same bytes again: the cluster deduplicates by
//! signature, never a second mint. A "receipt" is the signature's status: reached
//! at the chain's commitment (`finalized` by default) it reports `u64::MAX`
//! confirmations — Solana's depth is the commitment level, not a block count, so
//! `reserve_ops.token_confirmations` does not apply — and before that 0.
//!
//! The SPL mint must have 8 decimals (one base unit = one sat); any other is refused
//! before anything is signed.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use base64::Engine as _;
use ubtc_chains::evm::minter::{EvmReceipt, SignedEvmTx};
use ubtc_chains::solana::minter::{SolanaMinter, TokenOp};
use ubtc_chains::solana::wire;
use ubtc_chains::ChainError;

use crate::reserve_ops::TokenMinter;

/// Decimals the SPL mint must have: base units are sats.
pub const SOLANA_TOKEN_DECIMALS: u8 = 8;

pub struct SolanaTokenMinter {
    minter: SolanaMinter,
    mint: String,
    /// Signature → last valid block height of the transactions this process signed:
    /// what tells a transaction that will never land from one not landed yet.
    valid_until: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for SolanaTokenMinter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SolanaTokenMinter")
            .field("minter", &self.minter)
            .finish_non_exhaustive()
    }
}

impl SolanaTokenMinter {
    /// `mint`: the wrapped token's SPL mint (base58), as the minter was configured.
    pub fn new(minter: SolanaMinter, mint: &str) -> Self {
        Self {
            minter,
            mint: mint.to_owned(),
            valid_until: Mutex::new(HashMap::new()),
        }
    }

    pub fn address(&self) -> String {
        self.minter.address()
    }

    async fn checked_decimals(&self) -> Result<u64, ChainError> {
        let (supply, decimals) = self.minter.supply().await?;
        if decimals != SOLANA_TOKEN_DECIMALS {
            return Err(ChainError::Misconfigured(format!(
                "SPL mint {} has {decimals} decimals; the wrapped token needs {SOLANA_TOKEN_DECIMALS} (1 base unit = 1 sat)",
                self.mint
            )));
        }
        Ok(supply)
    }

    async fn sign(&self, op: TokenOp) -> Result<SignedEvmTx, ChainError> {
        self.checked_decimals().await?;
        let signed = self.minter.sign(&op, None).await?;
        if let Ok(mut m) = self.valid_until.lock() {
            m.insert(signed.tx.signature.clone(), signed.last_valid_block_height);
        }
        Ok(SignedEvmTx {
            hash: signed.tx.signature,
            raw: format!(
                "{}:{}",
                signed.last_valid_block_height,
                base64::engine::general_purpose::STANDARD.encode(&signed.tx.wire)
            ),
            // Not a nonce on Solana: the height after which it can no longer land.
            nonce: signed.last_valid_block_height,
        })
    }
}

#[async_trait]
impl TokenMinter for SolanaTokenMinter {
    fn check_address(&self, to: &str) -> Result<(), String> {
        let key = wire::decode_pubkey(to).map_err(|e| format!("{to:?}: {e}"))?;
        if key == [0u8; 32] || to == self.mint {
            return Err(format!(
                "{to:?} is not a token account or wallet that can hold the token"
            ));
        }
        Ok(())
    }

    /// `to`: an SPL token account of the mint, or a wallet owning one.
    async fn sign_mint(&self, to: &str, amount_sats: u64) -> Result<SignedEvmTx, ChainError> {
        let destination = self.minter.token_account_for(to).await?;
        self.sign(TokenOp::MintTo {
            destination,
            amount: amount_sats,
        })
        .await
    }

    /// Burns from the minter's own token account of the mint (redeemers send the
    /// tokens there first).
    async fn sign_burn(&self, amount_sats: u64) -> Result<SignedEvmTx, ChainError> {
        let source = self
            .minter
            .token_account_for(&self.minter.address())
            .await?;
        self.sign(TokenOp::Burn {
            source,
            amount: amount_sats,
        })
        .await
    }

    /// `tx.raw` is `LAST_VALID_BLOCK_HEIGHT:BASE64`. The height is remembered before
    /// sending, so a process that did not sign it (a restart) still learns when the
    /// transaction can no longer land, even if the node refuses the resend.
    async fn send(&self, tx: &SignedEvmTx) -> Result<(), ChainError> {
        let bad = |m: String| ChainError::Misconfigured(format!("stored Solana transaction: {m}"));
        let (height, b64) = tx
            .raw
            .split_once(':')
            .ok_or_else(|| bad("not LAST_VALID_BLOCK_HEIGHT:BASE64".into()))?;
        let height: u64 = height.parse().map_err(|e| bad(format!("height: {e}")))?;
        let wire = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| bad(e.to_string()))?;
        if let Ok(mut m) = self.valid_until.lock() {
            m.insert(tx.hash.clone(), height);
        }
        self.minter.send_wire(&wire, &tx.hash).await
    }

    async fn receipt(&self, hash: &str) -> Result<Option<EvmReceipt>, ChainError> {
        match self.minter.landed(hash).await? {
            Some(l) if l.final_ => Ok(Some(EvmReceipt {
                block: l.slot,
                success: l.error.is_none(),
                confirmations: u64::MAX,
            })),
            Some(l) => Ok(Some(EvmReceipt {
                block: l.slot,
                success: l.error.is_none(),
                confirmations: 0,
            })),
            None => {
                let until = self
                    .valid_until
                    .lock()
                    .ok()
                    .and_then(|m| m.get(hash).copied());
                match until {
                    // Never landed and can no longer: final, nothing minted or burned.
                    Some(h) if self.minter.expired(h).await? => {
                        tracing::warn!(signature = %hash, "Solana transaction expired without landing");
                        Ok(Some(EvmReceipt {
                            block: 0,
                            success: false,
                            confirmations: u64::MAX,
                        }))
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    async fn total_supply_sats(&self) -> Result<u64, ChainError> {
        self.checked_decimals().await
    }
}
