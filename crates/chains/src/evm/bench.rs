//! Scan throughput: payments detected per second by [`EvmAdapter::scan`] over a
//! backlog, beside a raw `eth_getLogs` fetch of the same range in the same run (the
//! floor set by the node). Printed by the benchmark command; not a timed test.

use std::time::Instant;

use ubtc_core::payment::ChainBlock;

use super::{raw_router_logs, EvmAdapter};
use crate::{ChainAdapter, ChainError, ScanCursor, ScanOutcome};

#[derive(Clone, Debug)]
pub struct ScanBench {
    pub blocks: u64,
    pub payments: usize,
    pub scan_secs: f64,
    pub raw_logs: usize,
    pub raw_secs: f64,
}

impl ScanBench {
    pub fn payments_per_sec(&self) -> f64 {
        self.payments as f64 / self.scan_secs.max(1e-9)
    }
    pub fn raw_logs_per_sec(&self) -> f64 {
        self.raw_logs as f64 / self.raw_secs.max(1e-9)
    }
}

impl std::fmt::Display for ScanBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} blocks: adapter scan {} payments in {:.3} s ({:.0}/s); raw eth_getLogs {} logs in {:.3} s ({:.0}/s); scan/raw time ratio {:.2}",
            self.blocks,
            self.payments,
            self.scan_secs,
            self.payments_per_sec(),
            self.raw_logs,
            self.raw_secs,
            self.raw_logs_per_sec(),
            self.scan_secs / self.raw_secs.max(1e-9)
        )
    }
}

/// Scans `(after.number, to]` with `max_blocks` per step, then fetches the same range
/// raw in chunks of the adapter's log range. The chain must not reorg meanwhile.
pub async fn scan_throughput(
    adapter: &EvmAdapter,
    after: ChainBlock,
    to: u64,
    max_blocks: u64,
) -> Result<ScanBench, ChainError> {
    let first = after.number + 1;
    let mut cursor = ScanCursor { block: after };
    let mut payments = 0usize;
    let started = Instant::now();
    while cursor.block.number < to {
        match adapter.scan(Some(&cursor), max_blocks).await? {
            ScanOutcome::Blocks {
                payments: found,
                cursor: next,
            } => {
                payments += found.len();
                cursor = next;
            }
            ScanOutcome::Reorg { .. } => {
                return Err(ChainError::BadResponse("reorg during the benchmark".into()))
            }
        }
    }
    let scan_secs = started.elapsed().as_secs_f64();
    let router = adapter.payment_contract.clone().ok_or_else(|| {
        ChainError::Misconfigured("the benchmark needs a payment contract".into())
    })?;
    let chunk = max_blocks.clamp(1, adapter.config.log_range_max_blocks.max(1));
    let started = Instant::now();
    let mut raw_logs = 0usize;
    let mut from = first;
    while from <= to {
        let end = to.min(from + chunk - 1);
        raw_logs += raw_router_logs(&adapter.rpc, &router, from, end)
            .await?
            .len();
        from = end + 1;
    }
    let raw_secs = started.elapsed().as_secs_f64();
    Ok(ScanBench {
        blocks: to + 1 - first,
        payments,
        scan_secs,
        raw_logs,
        raw_secs,
    })
}
