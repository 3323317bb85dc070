//! The validation pipeline: monitor → intake → limit → queue → sign → store → outbox.
//!
//! Each stage is a step function (`tick`) that does one unit of work and says what it
//! did; [`run_loop`] drives a step in production, tests call `tick` until idle. The
//! queue is the database ([`ubtc_store::Store`]): workers claim rows with a lease, so a
//! worker that dies loses nothing — its lease expires and another takes the job.
//!
//! This crate decides *what happens* to a validation; it never routes HTTP and never
//! writes SQL.

pub mod address;
pub mod attest;
pub mod bundle;
pub mod leader;
pub mod limiter;
pub mod metered;
pub mod monitor;
pub mod reserve_ops;
pub mod signer;
pub mod snapshot;
pub mod solana_minter;
pub mod webhook;
pub mod worker;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use leader::{Leadership, LeasedMonitor};
pub use limiter::{PaymentLimiter, Unlimited};
pub use monitor::{ChainPolicy, Monitor, MonitorTick};
pub use signer::{LocalKeySigner, ReserveSigner, SignFailure, SignedStatement};
pub use webhook::{WebhookConfig, WebhookTick, WebhookWorker};
pub use worker::{Worker, WorkerBatch, WorkerConfig, WorkerTick};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] ubtc_store::StoreError),
    #[error(transparent)]
    Chain(#[from] ubtc_chains::ChainError),
}

impl PipelineError {
    /// True when the step may succeed if tried again later (a database or node that is
    /// away), as opposed to a bug or misconfiguration.
    pub fn is_transient(&self) -> bool {
        match self {
            PipelineError::Store(e) => e.is_transient(),
            PipelineError::Chain(e) => e.is_transient(),
        }
    }
}

/// What a step reports after one call.
pub trait StepOutcome {
    /// True when the step found nothing to do (the loop may sleep).
    fn is_idle(&self) -> bool;
}

/// Drives `step` until `cancel` fires: immediately again after work, after `idle`
/// when there was none, and with exponential back-off (up to `max_backoff`) while it
/// fails. A failure is logged once per streak, where it is handled.
pub async fn run_loop<F, Fut, T>(
    name: &str,
    cancel: CancellationToken,
    idle: Duration,
    max_backoff: Duration,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PipelineError>>,
    T: StepOutcome,
{
    let mut backoff = Duration::ZERO;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let wait = match step().await {
            Ok(outcome) => {
                if !backoff.is_zero() {
                    tracing::info!(loop = name, "recovered");
                    backoff = Duration::ZERO;
                }
                if outcome.is_idle() {
                    idle
                } else {
                    continue;
                }
            }
            Err(err) => {
                let first = backoff.is_zero();
                backoff = if first {
                    Duration::from_millis(200)
                } else {
                    (backoff * 2).min(max_backoff)
                };
                if first {
                    tracing::warn!(loop = name, error = %err, transient = err.is_transient(), "step failed; backing off");
                } else {
                    tracing::debug!(loop = name, error = %err, backoff_ms = backoff.as_millis() as u64, "still failing");
                }
                backoff
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
