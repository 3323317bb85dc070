//! Limits on paid validations: per payer per chain, and per chain overall.

use std::sync::Arc;

use async_trait::async_trait;
use ubtc_core::payment::Payer;
use ubtc_core::{ChainId, Timestamp};
use ubtc_pipeline::PaymentLimiter;

use crate::{metric, Bucket, Limiter, Mode, Rate};

/// The pipeline's limiter: each confirmed payment reserves one unit in its payer's
/// bucket and in its chain's bucket; when either is exhausted the validation is
/// delayed until both allow it (never refused: it was paid for).
pub struct PaymentLimits {
    limiter: Arc<dyn Limiter>,
    per_payer: Rate,
    per_chain: Rate,
}

impl PaymentLimits {
    pub fn new(limiter: Arc<dyn Limiter>, per_payer: Rate, per_chain: Rate) -> Self {
        Self {
            limiter,
            per_payer,
            per_chain,
        }
    }

    fn buckets(&self, chain: &ChainId, payer: &Payer) -> [Bucket; 2] {
        [
            Bucket::new(format!("pay:{chain}:{payer}"), self.per_payer),
            Bucket::new(format!("chain:{chain}"), self.per_chain),
        ]
    }
}

#[async_trait]
impl PaymentLimiter for PaymentLimits {
    async fn admit(&self, chain: &ChainId, payer: &Payer, now: Timestamp) -> Option<Timestamp> {
        let now_ms = now.as_millis();
        match self
            .limiter
            .acquire(&self.buckets(chain, payer), now_ms, Mode::Reserve)
            .await
        {
            Ok(d) if d.at_ms > now_ms => {
                metrics::counter!(metric::HITS_TOTAL, "scope" => "payment").increment(1);
                Some(Timestamp::from_millis(d.at_ms))
            }
            Ok(_) => None,
            Err(err) => {
                // Only a bare Redis limiter (no fallback) gets here. A paid validation
                // is never held back for our own outage.
                tracing::warn!(chain = %chain, error = %err, "rate limiter failed; validation not delayed");
                None
            }
        }
    }
}
