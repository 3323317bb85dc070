//! The rate-limit stage between confirmation and the queue.
//!
//! A limited validation is *delayed*, never refused: the limiter names the time until
//! which it must wait, and the validation's status says so.

use async_trait::async_trait;
use ubtc_core::payment::Payer;
use ubtc_core::{ChainId, Timestamp};

#[async_trait]
pub trait PaymentLimiter: Send + Sync + 'static {
    /// Takes one unit for this payer on this chain. `None`: go now. `Some(t)`: wait
    /// until `t` (the unit is reserved for then, so waiting callers are served in turn).
    async fn admit(&self, chain: &ChainId, payer: &Payer, now: Timestamp) -> Option<Timestamp>;
}

/// No limits (tests, benchmarks).
pub struct Unlimited;

#[async_trait]
impl PaymentLimiter for Unlimited {
    async fn admit(&self, _chain: &ChainId, _payer: &Payer, _now: Timestamp) -> Option<Timestamp> {
        None
    }
}
