//! Two monitors of one chain under the lease `monitor:dev`, on both storage backends
//! (SQLite in a temporary file, the real PostgreSQL server in a fresh schema).
//!
//! What this shows: two `LeasedMonitor`s sharing ONE chain adapter (the in-process dev
//! chain, so both really see the same payments) and one store; while both run, only
//! the lease holder does any monitor work; when the holder's task is aborted mid-run
//! without releasing (standing in for a killed process: its lease is left to expire),
//! the other takes over within the lease time plus one retry interval with a larger
//! fencing token; and every payment submitted before, during and after the handover is
//! recorded exactly once and queued exactly once (the sums of what the two monitors
//! report, and the rows in the store). Killing a real process is shown in
//! `crates/ubtc/tests/monitor_lease.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use ubtc_chains::dev::DevChain;
use ubtc_core::payment::Payer;
use ubtc_core::{ChainId, Timestamp, ValidationStatus};
use ubtc_pipeline::{ChainPolicy, LeasedMonitor, Monitor, StepOutcome, Unlimited};
use ubtc_store::{PgStore, SqliteStore, Store, ValidationFilter};

const CONFIRMATIONS: u64 = 2;
const LEASE: Duration = Duration::from_millis(900);
const PAYMENTS: usize = 60;

/// What one monitor did, summed over its ticks.
#[derive(Default)]
struct Counts {
    detected: AtomicUsize,
    queued: AtomicUsize,
    /// Ticks that did any work.
    busy: AtomicUsize,
}

fn spawn_monitor(
    monitor: Arc<LeasedMonitor>,
    counts: Arc<Counts>,
    cancel: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        ubtc_pipeline::run_loop(
            "monitor:dev",
            cancel,
            Duration::from_millis(10),
            Duration::from_millis(200),
            || {
                let (monitor, counts) = (monitor.clone(), counts.clone());
                async move {
                    let t = monitor.tick().await?;
                    counts.detected.fetch_add(t.detected, Ordering::SeqCst);
                    counts
                        .queued
                        .fetch_add(t.queued + t.delayed, Ordering::SeqCst);
                    if !t.is_idle() {
                        counts.busy.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(t)
                }
            },
        )
        .await;
    })
}

async fn two_monitors_one_leader_each_payment_once(store: Arc<dyn Store>) {
    let chain = DevChain::new(ChainId::parse("dev").unwrap(), "0xpay", CONFIRMATIONS);
    let monitor = Arc::new(Monitor::new(
        Arc::new(chain.clone()),
        store.clone(),
        Arc::new(Unlimited),
        ChainPolicy {
            min_payment_base_units: 1_000,
            scan_max_blocks: 100,
        },
    ));
    let holders = ["proc-a", "proc-b"];
    let leased: Vec<Arc<LeasedMonitor>> = holders
        .iter()
        .map(|h| {
            Arc::new(LeasedMonitor::new(
                monitor.clone(),
                store.clone(),
                (*h).to_owned(),
                LEASE,
            ))
        })
        .collect();
    let counts: Vec<Arc<Counts>> = holders.iter().map(|_| Arc::default()).collect();
    let cancel = CancellationToken::new();
    let mut tasks: Vec<Option<tokio::task::JoinHandle<()>>> = leased
        .iter()
        .zip(&counts)
        .map(|(m, c)| Some(spawn_monitor(m.clone(), c.clone(), cancel.clone())))
        .collect();

    // First third of the payments with both monitors running.
    let mut sent = 0;
    let pay = |sent: &mut usize, n: usize| {
        for _ in 0..n {
            chain.submit_payment(
                &Payer::parse(&format!("0xpayer{sent}")).unwrap(),
                5_000,
                format!("message {sent}").as_bytes(),
            );
            chain.mine(1);
            *sent += 1;
        }
    };
    for _ in 0..PAYMENTS / 3 {
        pay(&mut sent, 1);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let lease = store.get_lease("monitor:dev").await.unwrap().unwrap();
    let leader = holders.iter().position(|h| *h == lease.holder).unwrap();
    let standby = 1 - leader;
    assert!(
        lease.expires_at.0 >= Timestamp::now().0,
        "the lease is live"
    );
    assert!(counts[leader].busy.load(Ordering::SeqCst) > 0);
    assert_eq!(
        counts[standby].busy.load(Ordering::SeqCst),
        0,
        "the standby did no monitor work while the leader held the lease"
    );

    // The leader "dies": its task is aborted (possibly mid-tick) and its lease is not
    // released, so the standby must wait for it to expire.
    tasks[leader].take().unwrap().abort();
    let killed_at = Instant::now();
    for _ in 0..PAYMENTS / 3 {
        pay(&mut sent, 1);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let deadline = LEASE + LEASE / 3 + Duration::from_millis(500);
    let taken = loop {
        let l = store.get_lease("monitor:dev").await.unwrap().unwrap();
        if l.holder == holders[standby] {
            break l;
        }
        assert!(
            killed_at.elapsed() < deadline,
            "no takeover within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        taken.token > lease.token,
        "the fencing token grew on takeover"
    );

    // The rest of the payments, then enough blocks to confirm them all.
    let rest = PAYMENTS - sent;
    pay(&mut sent, rest);
    chain.mine(CONFIRMATIONS);
    let done = Instant::now();
    loop {
        let q = counts[0].queued.load(Ordering::SeqCst) + counts[1].queued.load(Ordering::SeqCst);
        if q >= PAYMENTS {
            break;
        }
        assert!(
            done.elapsed() < Duration::from_secs(20),
            "only {q} of {PAYMENTS} queued"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let a few more ticks run: nothing may be recorded or queued a second time.
    tokio::time::sleep(Duration::from_millis(300)).await;
    cancel.cancel();
    for t in tasks.into_iter().flatten() {
        t.await.unwrap();
    }
    leased[standby].release().await;

    let detected: usize = counts
        .iter()
        .map(|c| c.detected.load(Ordering::SeqCst))
        .sum();
    let queued: usize = counts.iter().map(|c| c.queued.load(Ordering::SeqCst)).sum();
    assert_eq!(detected, PAYMENTS, "each payment recorded exactly once");
    assert_eq!(queued, PAYMENTS, "each payment queued exactly once");
    let rows = store
        .list_validations(&ValidationFilter {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), PAYMENTS, "one row per payment, none missed");
    assert!(rows.iter().all(|r| r.status == ValidationStatus::Queued));
    // Released on shutdown: free for the next process at once.
    let after = store.get_lease("monitor:dev").await.unwrap().unwrap();
    assert!(after.expires_at.0 < Timestamp::now().0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_two_monitors_one_leader_each_payment_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::connect(&format!("sqlite:{}", dir.path().join("l.db").display()), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    two_monitors_one_leader_each_payment_once(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_two_monitors_one_leader_each_payment_once() {
    let url = std::env::var("UBTC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
    let schema = format!("ubtc_leader_{}", uuid::Uuid::new_v4().simple());
    let store = PgStore::connect_in_schema_with(&url, &schema, 8)
        .await
        .unwrap_or_else(|e| {
            panic!("PostgreSQL is required at {url} (set UBTC_TEST_DATABASE_URL): {e}")
        });
    store.migrate().await.unwrap();
    let admin = PgStore::connect(&url, 1).await.unwrap();
    two_monitors_one_leader_each_payment_once(Arc::new(store)).await;
    admin.drop_schema(&schema).await.unwrap();
}
