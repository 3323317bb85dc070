//! Monitor leadership across real `ubtc worker` processes on the real PostgreSQL
//! server (a fresh database, dropped at the end).
//!
//! What this shows: three `ubtc worker` processes on one database; exactly one holds
//! the lease `monitor:dev` and keeps it (renewing, same fencing token) while it lives;
//! after that leader is killed with SIGKILL (no chance to release) another of the
//! surviving processes holds the lease within the lease time plus one retry interval,
//! under a larger fencing token.
//!
//! What it does not show: payments. The dev chain lives inside each process, so the
//! three workers do not watch one shared chain here and a payment count across them
//! would mean nothing. Payments across a handover are shown with two monitors over one
//! shared dev chain in `crates/pipeline/tests/leader.rs`, and with three real worker
//! processes over one shared anvil node in `monitor_lease_evm.rs`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use ubtc_core::Timestamp;
use ubtc_store::{LeaseState, PgStore, Store};

mod common;
use common::{pid_of, TestDb};

const LEASE_SECS: u64 = 3;

fn ubtc(dir: &Path, db_url: &str, args: &[&str]) -> Child {
    let lease_secs = LEASE_SECS.to_string();
    common::spawn_ubtc(
        dir,
        db_url,
        args,
        &[
            ("UBTC_PIPELINE_WORKERS", "1"),
            ("UBTC_PIPELINE_MONITOR_LEASE_SECS", &lease_secs),
        ],
    )
}

/// The live holder of `monitor:dev`, if any.
async fn live_lease(store: &dyn Store) -> Option<LeaseState> {
    store
        .get_lease("monitor:dev")
        .await
        .unwrap()
        .filter(|l| l.expires_at.0 >= Timestamp::now().0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_leader_sigkilled_another_takes_over_the_monitor() {
    let db = TestDb::create("ubtc_lease").await;
    let db_url = &db.url;
    let dir = tempfile::tempdir().unwrap();
    let status = ubtc(dir.path(), db_url, &["keys", "local-init"])
        .wait()
        .unwrap();
    assert!(status.success());
    let store = PgStore::connect(db_url, 2).await.unwrap();
    store.migrate().await.unwrap();

    let mut workers: Vec<Child> = (0..3)
        .map(|_| ubtc(dir.path(), db_url, &["worker"]))
        .collect();
    let pids: Vec<u32> = workers.iter().map(Child::id).collect();

    // One of them becomes the leader.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(l) = live_lease(&store).await {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "no worker took the monitor lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let leader = pids
        .iter()
        .position(|p| *p == pid_of(&first.holder))
        .unwrap_or_else(|| panic!("holder {} is none of {pids:?}", first.holder));

    // It keeps the lease past its first expiry: renewed, same term, nobody else.
    let watch_until = Instant::now() + Duration::from_secs(LEASE_SECS + 1);
    while Instant::now() < watch_until {
        let l = live_lease(&store).await.expect("the leader keeps renewing");
        assert_eq!(
            l.holder, first.holder,
            "leadership moved while the leader lived"
        );
        assert_eq!(l.token, first.token);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let renewed = store.get_lease("monitor:dev").await.unwrap().unwrap();
    assert!(
        renewed.expires_at > first.expires_at,
        "the lease was renewed"
    );

    // SIGKILL the leader: it cannot release; the lease must expire first.
    workers[leader].kill().unwrap();
    workers[leader].wait().unwrap();
    let killed_at = Instant::now();
    // Lease time, plus one retry interval of the standbys, plus slack for slow CI.
    let within = Duration::from_secs(LEASE_SECS)
        + Duration::from_secs(LEASE_SECS) / 3
        + Duration::from_secs(3);
    let next = loop {
        if let Some(l) = live_lease(&store).await {
            if l.holder != first.holder {
                break l;
            }
        }
        assert!(
            killed_at.elapsed() < within,
            "no other worker took the monitor over within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = killed_at.elapsed();
    let new_leader = pids
        .iter()
        .position(|p| *p == pid_of(&next.holder))
        .expect("the new holder is one of the workers");
    assert_ne!(new_leader, leader);
    assert!(
        next.token > first.token,
        "the fencing token grew on takeover"
    );
    eprintln!(
        "monitor:dev moved from pid {} (token {}) to pid {} (token {}) {took:?} after SIGKILL",
        pids[leader], first.token, pids[new_leader], next.token
    );

    for (i, w) in workers.iter_mut().enumerate() {
        if i != leader {
            w.kill().unwrap();
            w.wait().unwrap();
        }
    }
}
