//! A Solana chain's wrapped token as a guardian reads it for reserve operations
//! ([`TokenView`]): the SPL mint's supply, and burns read back from their
//! transactions, both at the chain's commitment (`finalized` by default).

use async_trait::async_trait;
use ubtc_chains::evm::minter::BurnSeen;
use ubtc_chains::solana::minter::SolanaTokenReader;
use ubtc_chains::solana::SolanaConfig;
use ubtc_chains::ChainError;

use crate::reserve_ops::TokenView;

/// Decimals the SPL mint must have: one base unit is one sat.
pub const SOLANA_TOKEN_DECIMALS: u8 = 8;

#[derive(Debug)]
pub struct SolanaTokenView(SolanaTokenReader);

impl SolanaTokenView {
    /// `config.token_mint` is required.
    pub fn new(config: &SolanaConfig) -> Result<Self, ChainError> {
        Ok(Self(SolanaTokenReader::new(config)?))
    }
}

#[async_trait]
impl TokenView for SolanaTokenView {
    async fn supply_sats(&self) -> Result<u64, ChainError> {
        let (supply, decimals) = self.0.supply().await?;
        if decimals != SOLANA_TOKEN_DECIMALS {
            // Any other scale would make the reserve comparison wrong by powers of ten.
            return Err(ChainError::Misconfigured(format!(
                "the SPL mint has {decimals} decimals; {SOLANA_TOKEN_DECIMALS} are required"
            )));
        }
        Ok(supply)
    }

    /// A burn is only returned once final at the commitment, so it reports the
    /// greatest depth: Solana's depth is the commitment level, not a block count.
    async fn burn(&self, tx_hash: &str) -> Result<Option<BurnSeen>, ChainError> {
        Ok(self.0.burn(tx_hash).await?.map(|b| BurnSeen {
            from: b.authority,
            amount: b.amount.into(),
            block: b.slot,
            confirmations: u64::MAX,
        }))
    }
}
