//! The EVM adapter and the real pipeline monitor against a real anvil node and a real
//! SQLite store, with the contracts of `contracts/` deployed.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use common::*;
use serde_json::json;
use ubtc_chains::evm::abi::Encoder;
use ubtc_chains::evm::{EvmAdapter, EvmConfig};
use ubtc_chains::{ChainAdapter, ChainError, PaymentDepth, ScanOutcome, SupplySource};
use ubtc_core::payment::TxHash;
use ubtc_core::{PaymentRef, ValidationStatus};
use ubtc_store::{Store, ValidationFilter};

const MIN_WEI: u128 = 1_000;

fn reference(tx: &str, index: u32) -> PaymentRef {
    PaymentRef {
        chain: chain(),
        tx_hash: TxHash::parse(tx).unwrap(),
        index,
    }
}

async fn status(store: &Arc<dyn Store>, tx: &str, index: u32) -> ValidationStatus {
    store
        .get_by_payment_ref(&reference(tx, index))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{tx}:{index} not recorded"))
        .status
}

async fn all(store: &Arc<dyn Store>) -> Vec<ubtc_store::ValidationRecord> {
    store
        .list_validations(&ValidationFilter {
            chain: Some(chain()),
            limit: 10_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn start_up_checks_chain_id_and_contract_code() -> Result<()> {
    let d = Deployed::start().await?;
    let mut wrong = d.config(1);
    wrong.chain_id = 1;
    let err = EvmAdapter::connect(wrong).await.unwrap_err();
    assert!(
        matches!(&err, ChainError::Misconfigured(m) if m.contains("31337")),
        "{err}"
    );
    let mut no_code = d.config(1);
    no_code.payment_contract = Some(d.accounts[7].clone());
    let err = EvmAdapter::connect(no_code).await.unwrap_err();
    assert!(
        matches!(&err, ChainError::Misconfigured(m) if m.contains("no contract code")),
        "{err}"
    );
    let mut nothing = EvmConfig::new(chain(), 31337, &d.anvil.url);
    nothing.retry = fast_retry();
    assert!(matches!(
        EvmAdapter::connect(nothing).await,
        Err(ChainError::Misconfigured(_))
    ));
    let mut away = d.config(1);
    away.rpc_url = format!("http://127.0.0.1:{}", free_port());
    assert!(matches!(
        EvmAdapter::connect(away).await,
        Err(ChainError::Unavailable(_))
    ));
    Ok(())
}

#[tokio::test]
async fn both_kinds_of_payment_through_the_monitor() -> Result<()> {
    let d = Deployed::start().await?;
    let dir = tempfile::tempdir()?;
    let store = sqlite_store(dir.path()).await?;
    let adapter = Arc::new(EvmAdapter::connect(d.config(3)).await?);
    let m = monitor(adapter.clone(), store.clone(), MIN_WEI, 50);

    let contract = d.pay_contract(1, 5_000, b"hello from the router").await?;
    let plain = d.pay_plain(2, 7_000, b"hello by transfer").await?;
    let below = d.pay_contract(3, MIN_WEI - 1, b"too cheap").await?;
    let not_utf8 = d.pay_contract(4, 5_000, &[0xff, 0xfe, 0x41]).await?;
    let oversized = d.pay_plain(5, 5_000, &[b'a'; 300]).await?;
    // A transfer elsewhere and a plain transfer with no value are not ours / below.
    d.anvil
        .send(&d.accounts[1], Some(&d.accounts[6]), 9_999, b"not ours")
        .await?;
    // Many payments in one block.
    d.anvil.automine(false).await?;
    let mut batch = Vec::new();
    for i in 0..40u32 {
        let msg = format!("batch {i}");
        batch.push(if i % 4 == 0 {
            d.pay_plain(1 + (i % 5) as usize, 2_000, msg.as_bytes())
                .await?
        } else {
            d.pay_contract(1 + (i % 5) as usize, 2_000, msg.as_bytes())
                .await?
        });
    }
    d.anvil.mine(1).await?;
    d.anvil.automine(true).await?;
    let batch_block: u64 = d.anvil.block_number().await?;

    let t = tick_until_idle(&m).await?;
    assert_eq!(t.detected, 45);
    // The first five are deep enough already: queued or rejected at once.
    assert_eq!((t.queued, t.rejected), (2, 3));
    assert_eq!(all(&store).await.len(), 45);
    // The batch sits in one block, which is not yet 3 deep.
    for tx in &batch {
        let r = store.get_by_payment_ref(&reference(tx, 0)).await?.unwrap();
        assert_eq!(r.block.number, batch_block);
        assert_eq!(r.status, ValidationStatus::Detected);
    }
    let r = store
        .get_by_payment_ref(&reference(&contract, 0))
        .await?
        .unwrap();
    assert_eq!(r.payer.as_str(), d.accounts[1].to_ascii_lowercase());
    assert_eq!(r.amount_base_units, 5_000);
    assert_eq!(r.message_hex, hex::encode(b"hello from the router"));
    let r = store
        .get_by_payment_ref(&reference(&plain, 0))
        .await?
        .unwrap();
    assert_eq!(r.amount_base_units, 7_000);
    assert_eq!(r.message_hex, hex::encode(b"hello by transfer"));

    d.anvil.mine(2).await?;
    let t = tick_until_idle(&m).await?;
    assert_eq!(t.detected, 0);
    assert_eq!((t.queued, t.rejected), (40, 0));
    assert_eq!(status(&store, &contract, 0).await, ValidationStatus::Queued);
    assert_eq!(status(&store, &plain, 0).await, ValidationStatus::Queued);
    for (tx, code) in [
        (&below, "below_minimum"),
        (&not_utf8, "message_not_utf8"),
        (&oversized, "message_too_long"),
    ] {
        let r = store.get_by_payment_ref(&reference(tx, 0)).await?.unwrap();
        assert_eq!(r.status, ValidationStatus::Rejected);
        assert_eq!(r.reason.unwrap().code, code);
    }

    // A guardian re-reads each payment from its own view of the chain.
    let (p, depth) = adapter.payment(&reference(&contract, 0)).await?.unwrap();
    assert_eq!(p.message.unwrap().as_str(), "hello from the router");
    assert!(matches!(depth, PaymentDepth::Confirmed { .. }));
    let (p, _) = adapter.payment(&reference(&plain, 0)).await?.unwrap();
    assert_eq!(p.raw_message, b"hello by transfer");
    assert!(adapter.payment(&reference(&contract, 1)).await?.is_none());
    let unknown = format!("0x{}", "ab".repeat(32));
    assert!(adapter.payment(&reference(&unknown, 0)).await?.is_none());
    // Not mined in a block that left the chain: gone. Not mined although the block it
    // was seen in is still canonical: the node is inconsistent, ask again later.
    let elsewhere = ubtc_core::payment::ChainBlock {
        number: p.block.number,
        hash: format!("0x{}", "cd".repeat(32)),
    };
    assert_eq!(
        adapter.depth(&reference(&unknown, 0), &elsewhere).await?,
        PaymentDepth::Gone
    );
    assert!(matches!(
        adapter.depth(&reference(&unknown, 0), &p.block).await,
        Err(ChainError::Unavailable(_))
    ));
    // Mined, but no payment at that index.
    assert_eq!(
        adapter.depth(&reference(&contract, 5), &p.block).await?,
        PaymentDepth::Gone
    );
    Ok(())
}

#[tokio::test]
async fn reorg_before_confirmation_drops_after_confirmation_keeps() -> Result<()> {
    let d = Deployed::start().await?;
    let dir = tempfile::tempdir()?;
    let store = sqlite_store(dir.path()).await?;
    let adapter = Arc::new(EvmAdapter::connect(d.config(3)).await?);
    let m = monitor(adapter.clone(), store.clone(), MIN_WEI, 50);

    // Confirmed, then the chain reorgs below it: it stays queued, nothing duplicates.
    let kept = d.pay_contract(1, 5_000, b"confirmed first").await?;
    d.anvil.mine(3).await?;
    let snap = d.anvil.snapshot().await?;
    assert_eq!(tick_until_idle(&m).await?.queued, 1);

    // Seen but not confirmed, then reorged out (snapshot/revert, then a longer chain).
    let doomed = d.pay_contract(2, 5_000, b"reorged away").await?;
    let doomed_plain = d.pay_plain(2, 5_000, b"reorged away too").await?;
    assert_eq!(tick_until_idle(&m).await?.detected, 2);
    assert_eq!(status(&store, &doomed, 0).await, ValidationStatus::Detected);
    d.anvil.revert(&snap).await?;
    d.anvil.mine(4).await?;
    let t = tick_until_idle(&m).await?;
    assert!(t.reorg);
    assert_eq!(t.dropped, 2);
    assert_eq!(t.detected, 0);
    assert_eq!(status(&store, &doomed, 0).await, ValidationStatus::Dropped);
    assert_eq!(
        status(&store, &doomed_plain, 0).await,
        ValidationStatus::Dropped
    );
    assert_eq!(status(&store, &kept, 0).await, ValidationStatus::Queued);

    // A reorg that replaces the confirmed payment's block keeps it queued (it is past
    // the confirmation rule) and the rescan does not record it twice.
    let kept_block = ubtc_chains::evm::abi::quantity_u64(
        d.anvil.receipt(&kept).await?["blockNumber"]
            .as_str()
            .unwrap(),
    )?;
    let depth = d.anvil.block_number().await? - kept_block + 1;
    d.anvil.call("anvil_reorg", json!([depth, []])).await?;
    let t = tick_until_idle(&m).await?;
    assert!(t.reorg);
    assert_eq!(t.detected, 0);
    assert_eq!(status(&store, &kept, 0).await, ValidationStatus::Queued);
    assert_eq!(all(&store).await.len(), 3);

    // The monitor keeps going on the new chain.
    let after = d.pay_contract(3, 5_000, b"after the reorg").await?;
    d.anvil.mine(2).await?;
    let t = tick_until_idle(&m).await?;
    assert_eq!((t.detected, t.queued), (1, 1));
    assert_eq!(status(&store, &after, 0).await, ValidationStatus::Queued);
    Ok(())
}

/// A payment reorged out before confirmation is dropped; when the same signed
/// transaction is mined again (broadcast once more, as wallets and mempools do), the
/// same validation goes back to `detected` in its new block and is confirmed and
/// queued from there.
#[tokio::test]
async fn a_reorged_payment_mined_again_is_detected_and_queued_again() -> Result<()> {
    let d = Deployed::start().await?;
    let dir = tempfile::tempdir()?;
    let store = sqlite_store(dir.path()).await?;
    let adapter = Arc::new(EvmAdapter::connect(d.config(3)).await?);
    let m = monitor(adapter.clone(), store.clone(), MIN_WEI, 50);
    tick_until_idle(&m).await?;

    let snap = d.anvil.snapshot().await?;
    let raw = d.sign_contract_payment(2, 5_000, b"mined twice").await?;
    let tx = d.anvil.send_raw(&raw).await?;
    assert_eq!(tick_until_idle(&m).await?.detected, 1);
    let first = store.get_by_payment_ref(&reference(&tx, 0)).await?.unwrap();
    assert_eq!(first.status, ValidationStatus::Detected);

    d.anvil.revert(&snap).await?;
    d.anvil.mine(4).await?;
    let t = tick_until_idle(&m).await?;
    assert_eq!((t.dropped, t.remined), (1, 0));
    assert_eq!(status(&store, &tx, 0).await, ValidationStatus::Dropped);
    assert!(adapter.payment(&reference(&tx, 0)).await?.is_none());

    // The same bytes again: the same transaction hash, in a later block.
    assert_eq!(d.anvil.send_raw(&raw).await?, tx);
    let t = tick_until_idle(&m).await?;
    assert_eq!((t.remined, t.detected, t.queued), (1, 0, 0));
    let again = store.get_by_payment_ref(&reference(&tx, 0)).await?.unwrap();
    assert_eq!(again.id, first.id, "the same validation, not a new one");
    assert_eq!(again.status, ValidationStatus::Detected);
    assert!(again.block.number > first.block.number);
    assert_ne!(again.block.hash, first.block.hash);
    let receipt = d.anvil.receipt(&tx).await?;
    assert_eq!(
        Some(again.block.hash.as_str()),
        receipt["blockHash"].as_str()
    );
    assert_eq!(
        again.reason.as_ref().map(|r| r.code.as_str()),
        Some("remined")
    );

    d.anvil.mine(2).await?;
    let t = tick_until_idle(&m).await?;
    assert_eq!((t.queued, t.remined, t.detected), (1, 0, 0));
    assert_eq!(status(&store, &tx, 0).await, ValidationStatus::Queued);
    assert_eq!(all(&store).await.len(), 1);
    Ok(())
}

#[tokio::test]
async fn restarted_monitor_continues_without_gap_or_duplicate() -> Result<()> {
    let d = Deployed::start().await?;
    let dir = tempfile::tempdir()?;
    let mut txs = Vec::new();
    for i in 0..12u32 {
        let msg = format!("payment {i}");
        txs.push(if i % 3 == 0 {
            d.pay_plain(1, 2_000, msg.as_bytes()).await?
        } else {
            d.pay_contract(1, 2_000, msg.as_bytes()).await?
        });
    }
    {
        let store = sqlite_store(dir.path()).await?;
        let adapter = Arc::new(EvmAdapter::connect(d.config(1)).await?);
        let m = monitor(adapter, store.clone(), MIN_WEI, 3);
        m.tick().await?;
        m.tick().await?;
        let seen = all(&store).await.len();
        assert!(seen > 0 && seen < 12, "{seen}");
        // Dropped here: the process "dies" between ticks.
    }
    for i in 12..15u32 {
        d.pay_contract(2, 2_000, format!("late {i}").as_bytes())
            .await?;
    }
    let store = sqlite_store(dir.path()).await?;
    let adapter = Arc::new(EvmAdapter::connect(d.config(1)).await?);
    let m = monitor(adapter, store.clone(), MIN_WEI, 3);
    let t = tick_until_idle(&m).await?;
    assert_eq!(
        t.already_known, 0,
        "a restart must not rescan what it recorded"
    );
    let records = all(&store).await;
    assert_eq!(records.len(), 15);
    for tx in &txs {
        assert_eq!(status(&store, tx, 0).await, ValidationStatus::Queued);
    }
    Ok(())
}

#[tokio::test]
async fn token_supply_at_named_blocks() -> Result<()> {
    let d = Deployed::start().await?;
    let (admin, minter, holder) = (&d.accounts[0], &d.accounts[1], &d.accounts[2]);
    let token = d
        .anvil
        .deploy(
            admin,
            "WrappedBTC",
            Encoder::new().address(admin)?.address(minter)?.finish(),
        )
        .await?;
    let mut config = d.config(2);
    config.token_contract = Some(token.clone());
    let adapter = EvmAdapter::connect(config).await?;
    let start = d.anvil.block_number().await?;

    let mint = Encoder::new()
        .address(holder)?
        .uint(5_0000_0000)
        .call("mint(address,uint256)");
    // Only the minter may mint.
    let refused = d.anvil.send(holder, Some(&token), 0, &mint).await?;
    assert_eq!(d.anvil.receipt(&refused).await?["status"], "0x0");
    d.anvil.send(minter, Some(&token), 0, &mint).await?;
    let minted_at = d.anvil.block_number().await?;
    let give_back = Encoder::new()
        .address(minter)?
        .uint(2_0000_0000)
        .call("transfer(address,uint256)");
    d.anvil.send(holder, Some(&token), 0, &give_back).await?;
    let burn = Encoder::new().uint(2_0000_0000).call("burn(uint256)");
    d.anvil.send(minter, Some(&token), 0, &burn).await?;
    let burned_at = d.anvil.block_number().await?;

    assert_eq!(adapter.supply_at(Some(start)).await?.supply.base_units, 0);
    let at_mint = adapter.supply_at(Some(minted_at)).await?;
    assert_eq!(at_mint.supply.base_units, 5_0000_0000);
    assert_eq!(at_mint.block_number, minted_at);
    assert_eq!(at_mint.token, token.to_ascii_lowercase());
    assert_eq!(at_mint.supply.decimals, 8);
    assert_eq!(
        adapter.supply_at(Some(burned_at)).await?.supply.base_units,
        3_0000_0000
    );
    // Unnamed: the newest block final by the rule (2 deep: one below the head).
    let latest = adapter.supply_at(None).await?;
    assert_eq!(latest.block_number, burned_at - 1);
    assert_eq!(latest.supply.base_units, 5_0000_0000);
    assert!(latest.as_of.as_millis() > 0);
    Ok(())
}

#[tokio::test]
async fn scan_reports_reorg_with_a_canonical_rewind_point() -> Result<()> {
    let d = Deployed::start().await?;
    let adapter = EvmAdapter::connect(d.config(1)).await?;
    d.anvil.mine(5).await?;
    let ScanOutcome::Blocks { cursor, .. } = adapter.scan(None, 100).await? else {
        panic!("first scan")
    };
    d.anvil.call("anvil_reorg", json!([2, []])).await?;
    let ScanOutcome::Reorg { rewind_to } = adapter.scan(Some(&cursor), 100).await? else {
        panic!("expected a reorg")
    };
    assert!(rewind_to.block.number < cursor.block.number);
    assert!(matches!(
        adapter.scan(Some(&rewind_to), 100).await?,
        ScanOutcome::Blocks { .. }
    ));
    Ok(())
}

#[tokio::test]
async fn faulty_rpc_backs_off_and_loses_nothing() -> Result<()> {
    let d = Deployed::start().await?;
    let dir = tempfile::tempdir()?;
    let store = sqlite_store(dir.path()).await?;
    let mut txs = Vec::new();
    for i in 0..10u32 {
        let msg = format!("through a bad proxy {i}");
        txs.push(if i % 2 == 0 {
            d.pay_contract(1, 2_000, msg.as_bytes()).await?
        } else {
            d.pay_plain(2, 2_000, msg.as_bytes()).await?
        });
    }
    d.anvil.mine(2).await?;
    let proxy = FaultyProxy::start(&d.anvil.url, Duration::from_millis(600)).await?;
    let mut config = d.config(2);
    config.rpc_url = proxy.url.clone();
    config.retry = ubtc_chains::evm::RetryPolicy {
        attempts: 2,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        timeout: Duration::from_millis(300),
    };
    // Start-up itself may fail on a bad node: the caller retries it like anything else.
    let adapter = loop {
        match EvmAdapter::connect(config.clone()).await {
            Ok(a) => break Arc::new(a),
            Err(e) => assert!(e.is_transient(), "{e}"),
        }
    };
    let m = monitor(adapter, store.clone(), MIN_WEI, 3);
    let (mut failures, mut idle, mut backoff) = (0u32, 0u32, Duration::from_millis(5));
    while idle < 3 {
        match m.tick().await {
            Ok(t) if ubtc_pipeline::StepOutcome::is_idle(&t) => idle += 1,
            Ok(_) => idle = 0,
            Err(e) => {
                assert!(e.is_transient(), "{e}");
                failures += 1;
                idle = 0;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(40));
            }
        }
        assert!(failures < 100, "never got through");
    }
    assert!(failures > 0, "the proxy should have made some ticks fail");
    assert_eq!(all(&store).await.len(), 10);
    for tx in &txs {
        assert_eq!(status(&store, tx, 0).await, ValidationStatus::Queued);
    }
    eprintln!(
        "faulty proxy: {failures} failed ticks over {} requests",
        proxy.requests.load(std::sync::atomic::Ordering::SeqCst)
    );
    Ok(())
}

#[tokio::test]
async fn snapshots_follow_mint_and_burn() -> Result<()> {
    use ubtc_chains::dev::DevBitcoin;
    use ubtc_pipeline::snapshot::{ReserveSnapshotter, SnapshotConfig, SnapshotTick};

    let d = Deployed::start().await?;
    let (admin, minter) = (&d.accounts[0], &d.accounts[1]);
    let token = d
        .anvil
        .deploy(
            admin,
            "WrappedBTC",
            Encoder::new().address(admin)?.address(minter)?.finish(),
        )
        .await?;
    let mut config = d.config(1);
    config.token_contract = Some(token.clone());
    let adapter = Arc::new(EvmAdapter::connect(config).await?);
    let dir = tempfile::tempdir()?;
    let store = sqlite_store(dir.path()).await?;
    let bitcoin = DevBitcoin::new(800_000);
    let reserve = "bcrt1qreserve0";
    store
        .add_reserve_address(
            &ubtc_store::NewReserveAddress {
                address: reserve.into(),
                descriptor: "addr(bcrt1qreserve0)".into(),
                kind: "p2wsh".into(),
                label: None,
            },
            ubtc_core::Timestamp::now(),
        )
        .await?;
    bitcoin.fund(reserve, "0014aa", 3_0000_0000);
    let snapshots = ReserveSnapshotter::new(
        Arc::new(bitcoin.clone()),
        vec![adapter.clone()],
        store.clone(),
        SnapshotConfig {
            tolerance_ppm: 0,
            max_age_ms: 3_600_000,
            interval_ms: 3_600_000,
        },
    );
    let take = || async {
        bitcoin.advance(1);
        match snapshots.tick(ubtc_core::Timestamp::now()).await.unwrap() {
            SnapshotTick::Taken(s) => *s,
            SnapshotTick::Skipped => panic!("a new Bitcoin block must give a snapshot"),
        }
    };
    let s = take().await;
    assert_eq!(
        (s.reserve_sats.0, s.supply_sats.0, s.ratio_ppm),
        (3_0000_0000, 0, None)
    );
    assert!(s.healthy);

    let mint = Encoder::new()
        .address(minter)?
        .uint(2_0000_0000)
        .call("mint(address,uint256)");
    d.anvil.send(minter, Some(&token), 0, &mint).await?;
    let s = take().await;
    assert_eq!(
        (s.supply_sats.0, s.ratio_ppm),
        (2_0000_0000, Some(1_500_000))
    );
    assert_eq!(s.supply[0].block_number, d.anvil.block_number().await?);
    assert!(s.healthy);

    let mint_more = Encoder::new()
        .address(minter)?
        .uint(2_0000_0000)
        .call("mint(address,uint256)");
    d.anvil.send(minter, Some(&token), 0, &mint_more).await?;
    let s = take().await;
    assert_eq!((s.supply_sats.0, s.ratio_ppm), (4_0000_0000, Some(750_000)));
    assert!(!s.healthy && !s.stale);

    let burn = Encoder::new().uint(1_0000_0000).call("burn(uint256)");
    d.anvil.send(minter, Some(&token), 0, &burn).await?;
    let s = take().await;
    assert_eq!(
        (s.supply_sats.0, s.ratio_ppm),
        (3_0000_0000, Some(1_000_000))
    );
    assert!(s.healthy);
    // Same tip within the interval: nothing new.
    assert!(matches!(
        snapshots.tick(ubtc_core::Timestamp::now()).await?,
        SnapshotTick::Skipped
    ));
    let latest = store.latest_reserve_snapshot().await?.unwrap();
    assert_eq!(latest.supply_sats.0, 3_0000_0000);
    assert_eq!(latest.supply, s.supply);
    Ok(())
}

/// ABI encoding of `payMany(address,string[])` (the `Encoder` has no arrays).
fn pay_many_call(router: &str, messages: &[&[u8]]) -> Vec<u8> {
    let word = |n: usize| {
        let mut w = [0u8; 32];
        w[24..].copy_from_slice(&(n as u64).to_be_bytes());
        w
    };
    let mut strings: Vec<Vec<u8>> = Vec::new();
    for m in messages {
        let mut s = word(m.len()).to_vec();
        s.extend_from_slice(m);
        s.resize(32 + m.len().div_ceil(32) * 32, 0);
        strings.push(s);
    }
    let mut array = word(messages.len()).to_vec();
    let mut offset = 32 * messages.len();
    for s in &strings {
        array.extend_from_slice(&word(offset));
        offset += s.len();
    }
    for s in &strings {
        array.extend_from_slice(s);
    }
    let mut call = ubtc_chains::evm::abi::selector("payMany(address,string[])").to_vec();
    call.extend(Encoder::new().address(router).unwrap().finish());
    call.extend_from_slice(&word(64));
    call.extend(array);
    call
}

#[tokio::test]
async fn several_payments_in_one_transaction_get_their_own_index() -> Result<()> {
    let d = Deployed::start().await?;
    let batcher = d
        .anvil
        .deploy(&d.accounts[0], "BatchPayer", Vec::new())
        .await?;
    let dir = tempfile::tempdir()?;
    let store = sqlite_store(dir.path()).await?;
    let adapter = Arc::new(EvmAdapter::connect(d.config(1)).await?);
    let m = monitor(adapter.clone(), store.clone(), MIN_WEI, 50);
    let call = pay_many_call(&d.router, &[b"one", b"two", &[0xc3, 0x28]]);
    let tx = d
        .anvil
        .send(&d.accounts[3], Some(&batcher), 9_000, &call)
        .await?;
    assert_eq!(d.anvil.receipt(&tx).await?["status"], "0x1");
    let t = tick_until_idle(&m).await?;
    assert_eq!((t.detected, t.queued, t.rejected), (3, 2, 1));
    for (index, hex_message) in [
        (0, hex::encode(b"one")),
        (1, hex::encode(b"two")),
        (2, "c328".into()),
    ] {
        let r = store
            .get_by_payment_ref(&reference(&tx, index))
            .await?
            .unwrap();
        assert_eq!(r.message_hex, hex_message);
        assert_eq!(r.amount_base_units, 3_000);
        // The router sees the contract that called it as the payer.
        assert_eq!(r.payer.as_str(), batcher.to_ascii_lowercase());
    }
    assert_eq!(status(&store, &tx, 2).await, ValidationStatus::Rejected);
    let (p, _) = adapter.payment(&reference(&tx, 1)).await?.unwrap();
    assert_eq!(p.raw_message, b"two");
    assert!(adapter.payment(&reference(&tx, 3)).await?.is_none());
    Ok(())
}
