//! The chain monitor: scan → record → confirm (or drop) → limit → enqueue. A dropped
//! payment that a later scan finds again (re-mined after the reorg) is recorded again
//! by the store as the same validation, back to `detected` (`core::validation`).

use std::sync::Arc;

use ubtc_chains::{ChainAdapter, PaymentDepth, ScanCursor, ScanOutcome};
use ubtc_core::validation::Reason;
use ubtc_core::{ChainId, Payment, Timestamp, ValidationId, ValidationStatus};
use ubtc_store::{
    ChainCursor, NewOutboxEvent, NewValidation, Recorded, Store, StoreError, ValidationRecord,
};

use crate::limiter::PaymentLimiter;
use crate::{PipelineError, StepOutcome};

/// Most validations re-checked for depth per tick.
const DEPTH_CHECK_BATCH: u32 = 500;

/// What the pipeline requires of a payment on one chain.
#[derive(Clone, Debug)]
pub struct ChainPolicy {
    /// Smallest accepted payment, in the chain's smallest native unit.
    pub min_payment_base_units: u128,
    /// Most blocks read per scan step.
    pub scan_max_blocks: u64,
}

/// What one monitor tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorTick {
    pub detected: usize,
    pub already_known: usize,
    /// Dropped payments seen again in the canonical chain, back to `detected`.
    pub remined: usize,
    pub queued: usize,
    pub delayed: usize,
    pub rejected: usize,
    pub dropped: usize,
    pub reorg: bool,
    pub blocks_advanced: bool,
}

impl StepOutcome for MonitorTick {
    fn is_idle(&self) -> bool {
        self.detected == 0
            && self.remined == 0
            && self.queued == 0
            && self.delayed == 0
            && self.rejected == 0
            && self.dropped == 0
            && !self.reorg
            && !self.blocks_advanced
    }
}

/// Watches one chain. Exactly one monitor per chain should run at a time; running two
/// is safe (recording is idempotent, transitions are checked) but wasteful.
pub struct Monitor {
    adapter: Arc<dyn ChainAdapter>,
    store: Arc<dyn Store>,
    limiter: Arc<dyn PaymentLimiter>,
    policy: ChainPolicy,
}

impl Monitor {
    pub fn new(
        adapter: Arc<dyn ChainAdapter>,
        store: Arc<dyn Store>,
        limiter: Arc<dyn PaymentLimiter>,
        policy: ChainPolicy,
    ) -> Self {
        Self {
            adapter,
            store,
            limiter,
            policy,
        }
    }

    pub fn chain(&self) -> &ChainId {
        self.adapter.chain()
    }

    /// Scans once, records what it found, then re-checks the depth of every payment
    /// still `detected`.
    ///
    /// Payments are recorded before the cursor moves, so a crash in between only
    /// causes a rescan (recording is idempotent): no gap, no duplicate.
    pub async fn tick(&self) -> Result<MonitorTick, PipelineError> {
        let mut out = MonitorTick::default();
        let chain = self.adapter.chain().clone();
        let cursor = self.store.get_cursor(&chain).await?.map(|c| ScanCursor {
            block: ubtc_core::payment::ChainBlock {
                number: c.block_number,
                hash: c.block_hash,
            },
        });
        let now = Timestamp::now();
        match self
            .adapter
            .scan(cursor.as_ref(), self.policy.scan_max_blocks)
            .await?
        {
            ScanOutcome::Reorg { rewind_to } => {
                tracing::warn!(chain = %chain, from = ?cursor.as_ref().map(|c| c.block.number),
                    to = rewind_to.block.number, "reorg: rewinding the scan cursor");
                self.save_cursor(&chain, &rewind_to, now).await?;
                out.reorg = true;
            }
            ScanOutcome::Blocks {
                payments,
                cursor: next,
            } => {
                if !payments.is_empty() {
                    // One transaction for the whole scan.
                    let new: Vec<NewValidation> = payments
                        .into_iter()
                        .map(|p| self.new_validation(p))
                        .collect();
                    for recorded in self.store.record_detected_batch(&new, now).await? {
                        match recorded {
                            Recorded::Inserted(_) => out.detected += 1,
                            Recorded::AlreadyKnown(_) => out.already_known += 1,
                            Recorded::Revived(id) => {
                                tracing::info!(validation = %id, chain = %chain,
                                    "a dropped payment was mined again; detected again");
                                out.remined += 1;
                            }
                        }
                    }
                }
                if cursor.as_ref() != Some(&next) {
                    self.save_cursor(&chain, &next, now).await?;
                    out.blocks_advanced = true;
                }
            }
        }
        self.check_depths(&chain, &mut out).await?;
        count_metrics(&chain, &out);
        Ok(out)
    }

    async fn save_cursor(
        &self,
        chain: &ChainId,
        c: &ScanCursor,
        now: Timestamp,
    ) -> Result<(), PipelineError> {
        let cursor = ChainCursor {
            chain: chain.clone(),
            block_number: c.block.number,
            block_hash: c.block.hash.clone(),
        };
        self.store.set_cursor(&cursor, now).await?;
        Ok(())
    }

    /// Classifies a payment at the edge: below the minimum or with an unusable message
    /// it is still recorded (it was paid) with the reason it will be rejected for once
    /// confirmed.
    fn new_validation(&self, payment: Payment) -> NewValidation {
        let rejection = if payment.amount_base_units < self.policy.min_payment_base_units {
            Some(Reason::new(
                "below_minimum",
                format!(
                    "paid {} {}, the minimum is {}",
                    payment.amount_base_units,
                    self.adapter.kind().native_unit(),
                    self.policy.min_payment_base_units
                ),
            ))
        } else {
            payment
                .message
                .as_ref()
                .err()
                .map(|e| Reason::new(e.code(), e.to_string()))
        };
        NewValidation {
            id: ValidationId::new(),
            payment: payment.reference,
            payer: payment.payer,
            amount_base_units: payment.amount_base_units,
            message: payment.raw_message,
            block: payment.block,
            callback_url: payment.callback_url,
            rejection,
        }
    }

    async fn check_depths(
        &self,
        chain: &ChainId,
        out: &mut MonitorTick,
    ) -> Result<(), PipelineError> {
        let mut to_enqueue = Vec::new();
        // The `validation.delayed` outbox row of each delayed item, written in the same
        // transaction as the status (only if the status moved).
        let mut events = Vec::new();
        for record in self.store.list_detected(chain, DEPTH_CHECK_BATCH).await? {
            let depth = self.adapter.depth(&record.payment, &record.block).await?;
            let now = Timestamp::now();
            match depth {
                PaymentDepth::Pending { .. } => {}
                PaymentDepth::Gone => {
                    let reason = Reason::new(
                        "reorged",
                        format!(
                            "block {} {} left the canonical chain",
                            record.block.number, record.block.hash
                        ),
                    );
                    self.store.drop_reorged(record.id, &reason, now).await?;
                    tracing::info!(validation = %record.id, chain = %chain, "payment reorged out; dropped");
                    out.dropped += 1;
                }
                PaymentDepth::Confirmed { confirmations } => {
                    if let Some(reason) = &record.pending_rejection {
                        let event = rejected_event(&record, reason);
                        self.store
                            .confirm_and_reject_notify(
                                record.id,
                                confirmations,
                                reason,
                                &event,
                                now,
                            )
                            .await?;
                        out.rejected += 1;
                        continue;
                    }
                    let delay = self.limiter.admit(chain, &record.payer, now).await;
                    to_enqueue.push((record.id, confirmations, delay));
                    events.push(delay.map(|until| delayed_event(&record, until)));
                }
            }
        }
        if to_enqueue.is_empty() {
            return Ok(());
        }
        // One transaction for every payment that became final in this step.
        let results = self
            .store
            .confirm_and_enqueue_batch_notify(&to_enqueue, &events, Timestamp::now())
            .await?;
        for ((id, _, _), result) in to_enqueue.iter().zip(results) {
            match result {
                Ok(ValidationStatus::Delayed) => out.delayed += 1,
                Ok(_) => out.queued += 1,
                // Another monitor moved it first (two monitors on one chain is safe,
                // only wasteful): nothing left to do.
                Err(StoreError::Transition(e)) => {
                    tracing::debug!(validation = %id, error = %e, "already moved on")
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

/// The `validation.delayed` webhook event: the validation waits for the rate limit
/// and will be processed from `not_before` on.
fn delayed_event(record: &ValidationRecord, not_before: Timestamp) -> NewOutboxEvent {
    NewOutboxEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "validation.delayed".to_owned(),
        payload_json: serde_json::json!({
            "type": "validation.delayed",
            "validation_id": record.id,
            "chain": record.payment.chain,
            "tx_hash": record.payment.tx_hash,
            "index": record.payment.index,
            "not_before": not_before,
        })
        .to_string(),
        target_url: record.callback_url.clone(),
    }
}

/// The `validation.rejected` webhook event, with the reason.
fn rejected_event(record: &ValidationRecord, reason: &Reason) -> NewOutboxEvent {
    NewOutboxEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "validation.rejected".to_owned(),
        payload_json: serde_json::json!({
            "type": "validation.rejected",
            "validation_id": record.id,
            "chain": record.payment.chain,
            "tx_hash": record.payment.tx_hash,
            "index": record.payment.index,
            "reason": reason,
        })
        .to_string(),
        target_url: record.callback_url.clone(),
    }
}

/// Counts what a tick did, by chain (`ubtc_monitor_validations_total{chain, event}`).
fn count_metrics(chain: &ChainId, out: &MonitorTick) {
    for (event, n) in [
        ("detected", out.detected),
        ("remined", out.remined),
        ("queued", out.queued),
        ("delayed", out.delayed),
        ("rejected", out.rejected),
        ("dropped", out.dropped),
    ] {
        if n > 0 {
            metrics::counter!("ubtc_monitor_validations_total", "chain" => chain.to_string(), "event" => event)
                .increment(n as u64);
        }
    }
    if out.reorg {
        metrics::counter!("ubtc_monitor_reorgs_total", "chain" => chain.to_string()).increment(1);
    }
}
