//! Benchmark, not a timed test: payments detected per second by the adapter's scan over
//! a backlog of blocks full of `ValidationRequested` events, beside a raw `eth_getLogs`
//! fetch of the same range in the same run. Run with
//! `cargo test -p ubtc-chains --test evm_bench -- --ignored --nocapture`
//! (`UBTC_BENCH_PAYMENTS` sets the backlog size, default 6000).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use common::*;
use ubtc_chains::evm::bench::scan_throughput;
use ubtc_chains::evm::EvmAdapter;
use ubtc_core::payment::ChainBlock;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored --nocapture"]
async fn scan_backlog_throughput() -> Result<()> {
    let payments: usize = std::env::var("UBTC_BENCH_PAYMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6_000);
    let per_block = 500;
    let d = Arc::new(Deployed::start().await?);
    let first = d.anvil.block_number().await? + 1;
    d.anvil.automine(false).await?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < payments {
        let n = per_block.min(payments - sent);
        // Ten senders in parallel, each with its own account (so its own nonces).
        let mut tasks = Vec::new();
        for sender in 0..8usize {
            let d = d.clone();
            let count = n / 8 + usize::from(sender < n % 8);
            tasks.push(tokio::spawn(async move {
                for i in 0..count {
                    d.pay_contract(
                        sender,
                        1_000,
                        format!("bench payment {sender}/{i}").as_bytes(),
                    )
                    .await?;
                }
                anyhow::Ok(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        d.anvil.mine(1).await?;
        sent += n;
    }
    let last = d.anvil.block_number().await?;
    eprintln!(
        "backlog: {payments} payments in blocks {first}..={last}, built in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let both = EvmAdapter::connect(d.config(1)).await?;
    let mut contract_only = d.config(1);
    contract_only.payment_address = None;
    let contract_only = EvmAdapter::connect(contract_only).await?;
    let after = ChainBlock {
        number: first - 1,
        hash: String::new(),
    };
    // The cursor's hash must be the real one: the scan checks the parent link.
    let header: serde_json::Value = d
        .anvil
        .call(
            "eth_getBlockByNumber",
            serde_json::json!([format!("0x{:x}", first - 1), false]),
        )
        .await?;
    let after = ChainBlock {
        hash: header["hash"].as_str().unwrap().to_owned(),
        ..after
    };
    for (label, adapter) in [
        ("contract only", &contract_only),
        ("contract + plain", &both),
    ] {
        for max_blocks in [1u64, 100] {
            let report = scan_throughput(adapter, after.clone(), last, max_blocks).await?;
            assert_eq!(report.payments, payments);
            assert_eq!(report.raw_logs, payments);
            println!("evm scan bench ({label}, max_blocks {max_blocks}): {report}");
        }
    }
    Ok(())
}
