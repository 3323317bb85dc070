//! Three real `ubtc worker` processes watching ONE shared chain — a real anvil node
//! (`npm ci --prefix tools/anvil`) with the `PaymentRouter` deployed — on one fresh
//! PostgreSQL database. Payments are sent before, during and after the monitor's
//! leader is killed with SIGKILL.
//!
//! What this shows: another worker takes the lease `monitor:anvil` over (larger
//! fencing token); every payment sent ends up as exactly one validation, signed
//! exactly once (one `validation.signed` event, a bundle that verifies): none missed,
//! none processed twice. Uniqueness itself is enforced by the database (one row per
//! `(chain, tx_hash, index)`, guarded transitions, guarded claims); what this adds is
//! that the monitor keeps going in another process after its leader dies, so nothing
//! sent after the kill is missed. The anvil harness is the chains crate's test
//! harness, included by path.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

#[path = "../../chains/tests/common/mod.rs"]
mod anvil;
mod common;

use std::collections::HashSet;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use ubtc_core::{ProofBundle, Timestamp, ValidationStatus};
use ubtc_store::{PgStore, Store, ValidationFilter};

use common::{pid_of, TestDb};

const LEASE_SECS: u64 = 3;
const PAYMENTS: usize = 30;

fn ubtc(dir: &Path, db_url: &str, args: &[&str]) -> Child {
    let config = dir.join("ubtc.toml");
    let lease_secs = LEASE_SECS.to_string();
    common::spawn_ubtc(
        dir,
        db_url,
        args,
        &[
            ("UBTC_CONFIG", config.to_str().unwrap()),
            ("UBTC_PIPELINE_WORKERS", "2"),
            // Signing jobs the killed worker held come back after this.
            ("UBTC_PIPELINE_LEASE_SECS", "5"),
            ("UBTC_PIPELINE_MONITOR_LEASE_SECS", &lease_secs),
        ],
    )
}

async fn validations(store: &dyn Store) -> Vec<ubtc_store::ValidationRecord> {
    store
        .list_validations(&ValidationFilter {
            limit: 1_000,
            ..Default::default()
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_one_anvil_leader_killed_no_payment_missed_or_twice() {
    let chain = anvil::Deployed::start().await.unwrap();
    let db = TestDb::create("ubtc_lease_evm").await;
    let db_url = &db.url;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ubtc.toml"),
        format!(
            "[[chains]]\nname = \"anvil\"\nkind = \"evm\"\nrpc_url = \"{}\"\nchain_id = {}\n\
             payment_contract = \"{}\"\npayment_address = \"{}\"\nmin_payment = \"1000\"\n\
             confirmations = 2\nstart_block = {}\npoll_ms = 100\n",
            chain.anvil.url,
            anvil::ANVIL_CHAIN_ID,
            chain.router,
            chain.payment_address,
            chain.deployed_at
        ),
    )
    .unwrap();
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

    let mut sent = HashSet::new();
    let pay = |start: usize, n: usize| {
        let chain = &chain;
        async move {
            let mut out = Vec::new();
            for i in start..start + n {
                let tx = chain
                    .pay_contract(1 + i % 7, 5_000, format!("payment {i}").as_bytes())
                    .await
                    .unwrap();
                out.push(tx.to_lowercase());
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            out
        }
    };
    sent.extend(pay(sent.len(), PAYMENTS / 3).await);

    // Wait for a leader that has recorded some of them.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        let lease = store.get_lease("monitor:anvil").await.unwrap();
        if let Some(l) = lease.filter(|l| l.expires_at.0 >= Timestamp::now().0) {
            if validations(&store).await.len() >= 3 {
                break l;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no worker is monitoring the chain"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let leader = pids
        .iter()
        .position(|p| *p == pid_of(&first.holder))
        .expect("the holder is one of the workers");
    workers[leader].kill().unwrap(); // SIGKILL: no release, the lease must expire
    workers[leader].wait().unwrap();
    let killed_at = Instant::now();
    sent.extend(pay(sent.len(), PAYMENTS / 3).await);

    let within = Duration::from_secs(LEASE_SECS) * 4 / 3 + Duration::from_secs(3);
    let next = loop {
        let lease = store.get_lease("monitor:anvil").await.unwrap().unwrap();
        if lease.holder != first.holder && lease.expires_at.0 >= Timestamp::now().0 {
            break lease;
        }
        assert!(
            killed_at.elapsed() < within,
            "no takeover within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(next.token > first.token);
    assert_ne!(pid_of(&next.holder), pids[leader]);
    let rest = PAYMENTS - sent.len();
    sent.extend(pay(sent.len(), rest).await);
    chain.anvil.mine(3).await.unwrap();
    assert_eq!(sent.len(), PAYMENTS);

    // Every payment becomes one signed validation.
    let deadline = Instant::now() + Duration::from_secs(90);
    let rows = loop {
        let rows = validations(&store).await;
        let signed = rows
            .iter()
            .filter(|r| r.status == ValidationStatus::Signed)
            .count();
        if signed >= PAYMENTS {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "only {signed} of {PAYMENTS} signed ({} rows)",
            rows.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows.len(), PAYMENTS, "one validation per payment");
    let seen: HashSet<String> = rows
        .iter()
        .map(|r| r.payment.tx_hash.as_str().to_lowercase())
        .collect();
    assert_eq!(seen, sent, "no payment missed, none recorded twice");
    for r in &rows {
        let signed_events = store
            .list_outbox_for(r.id)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.event_type == "validation.signed")
            .count();
        assert_eq!(signed_events, 1, "validation {} signed once", r.id);
        let bundle =
            ProofBundle::from_json(store.get_bundle(r.id).await.unwrap().unwrap().as_bytes())
                .unwrap();
        assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle).is_valid());
    }
    eprintln!(
        "monitor:anvil moved from pid {} (token {}) to {} (token {}); {PAYMENTS} payments, each signed once",
        pids[leader], first.token, next.holder, next.token
    );

    for (i, w) in workers.iter_mut().enumerate() {
        if i != leader {
            w.kill().unwrap();
            w.wait().unwrap();
        }
    }
}
