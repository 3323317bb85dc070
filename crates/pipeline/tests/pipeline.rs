//! The pipeline end to end — dev chain → monitor → queue → worker → store — on both
//! storage backends: SQLite (a temporary file) and the real PostgreSQL server
//! (a fresh schema per test, dropped afterwards).
//!
//! The chain is the in-process dev chain (no real chain is involved here; the EVM and
//! Solana adapters have their own tests). The signers are the real local key signer,
//! or, where a test needs a signer that fails on purpose, a wrapper around it that is
//! a test double and says so.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bitcoin::secp256k1::SecretKey;
use ubtc_chains::dev::{DevBitcoin, DevChain};
use ubtc_core::bundle::BitcoinNetwork;
use ubtc_core::payment::Payer;
use ubtc_core::validation::Reason;
use ubtc_core::{ChainId, ProofBundle, Statement, Timestamp, ValidationStatus};
use ubtc_pipeline::StepOutcome;
use ubtc_pipeline::{
    ChainPolicy, LocalKeySigner, Monitor, ReserveSigner, SignFailure, SignedStatement, Unlimited,
    Worker, WorkerConfig, WorkerTick,
};
use ubtc_store::{PgStore, SqliteStore, Store};

const MIN_PAYMENT: u128 = 1_000;
const CONFIRMATIONS: u64 = 3;

struct Harness {
    store: Arc<dyn Store>,
    chain: DevChain,
    bitcoin: Arc<DevBitcoin>,
    cleanup: Option<(PgStore, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Harness {
    async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store =
            SqliteStore::connect(&format!("sqlite:{}", dir.path().join("p.db").display()), 4)
                .await
                .unwrap();
        store.migrate().await.unwrap();
        Self::with(Arc::new(store), None, Some(dir))
    }

    async fn postgres() -> Self {
        let url = std::env::var("UBTC_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into());
        let schema = format!("ubtc_pipeline_{}", uuid::Uuid::new_v4().simple());
        let store = PgStore::connect_in_schema_with(&url, &schema, 8)
            .await
            .unwrap_or_else(|e| {
                panic!("PostgreSQL is required at {url} (set UBTC_TEST_DATABASE_URL): {e}")
            });
        store.migrate().await.unwrap();
        let cleanup = PgStore::connect(&url, 1).await.unwrap();
        Self::with(Arc::new(store), Some((cleanup, schema)), None)
    }

    fn with(
        store: Arc<dyn Store>,
        cleanup: Option<(PgStore, String)>,
        dir: Option<tempfile::TempDir>,
    ) -> Self {
        let chain = DevChain::new(ChainId::parse("dev").unwrap(), "0xpay", CONFIRMATIONS);
        Self {
            store,
            chain,
            bitcoin: Arc::new(DevBitcoin::new(850_000)),
            cleanup,
            _dir: dir,
        }
    }

    fn monitor(&self) -> Monitor {
        Monitor::new(
            Arc::new(self.chain.clone()),
            self.store.clone(),
            Arc::new(Unlimited),
            ChainPolicy {
                min_payment_base_units: MIN_PAYMENT,
                scan_max_blocks: 100,
            },
        )
    }

    fn worker(&self, id: &str, signer: Arc<dyn ReserveSigner>, max_attempts: u32) -> Worker {
        Worker::new(
            self.store.clone(),
            signer,
            self.bitcoin.clone(),
            WorkerConfig {
                worker_id: id.into(),
                lease_ms: 30_000,
                max_attempts,
                backoff_base_ms: 0,
                backoff_max_ms: 0,
                network: BitcoinNetwork::Regtest,
                native_units: [(ChainId::parse("dev").unwrap(), "dev-units".to_owned())].into(),
            },
        )
    }

    async fn status_of(&self, tx: &ubtc_core::payment::TxHash) -> ValidationStatus {
        let found = self.store.find_by_payment(None, tx.as_str()).await.unwrap();
        assert_eq!(found.len(), 1, "exactly one validation per payment");
        found[0].status
    }

    async fn finish(self) {
        if let Some((admin, schema)) = self.cleanup {
            admin.drop_schema(&schema).await.unwrap();
        }
    }
}

fn signer() -> Arc<LocalKeySigner> {
    Arc::new(LocalKeySigner::new(
        SecretKey::new(&mut rand::thread_rng()),
        bitcoin::Network::Regtest,
    ))
}

fn payer(n: u32) -> Payer {
    Payer::parse(&format!("0xpayer{n}")).unwrap()
}

/// Runs the worker until it reports idle; returns what it did.
async fn drain(worker: &Worker) -> Vec<WorkerTick> {
    let mut ticks = Vec::new();
    loop {
        match worker.tick().await.unwrap() {
            WorkerTick::Idle => return ticks,
            t => ticks.push(t),
        }
    }
}

macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let h = super::Harness::sqlite().await; super::$name(&h).await; h.finish().await; })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { let h = super::Harness::postgres().await; super::$name(&h).await; h.finish().await; })*
        }
    };
}

on_both_backends!(
    payments_become_verifiable_proofs,
    bad_payments_are_rejected_with_reasons,
    reorg_before_confirmation_drops_and_never_signs,
    retries_reuse_one_statement_then_sign,
    exhausted_retries_go_to_the_dead_letter,
    expired_lease_is_taken_over_and_signed_once,
    batched_worker_signs_each_once_and_skips_lost_claims,
    bundles_carry_the_latest_reserve_snapshot,
);

async fn payments_become_verifiable_proofs(h: &Harness) {
    let monitor = h.monitor();
    let worker = h.worker("w1", signer(), 5);
    let mut txs = Vec::new();
    for i in 0..12 {
        txs.push(h.chain.submit_payment(
            &payer(i),
            MIN_PAYMENT + u128::from(i),
            format!("message {i}").as_bytes(),
        ));
    }
    h.chain.mine(1);
    let first = monitor.tick().await.unwrap();
    assert_eq!(first.detected, 12);
    assert_eq!(first.queued, 0, "one block deep is not confirmed yet");
    // Scanning again finds the same payments: nothing new is recorded.
    let again = monitor.tick().await.unwrap();
    assert_eq!(again.detected, 0);
    assert!(
        drain(&worker).await.is_empty(),
        "nothing is queued before confirmation"
    );

    h.chain.mine(CONFIRMATIONS - 1);
    let confirmed = monitor.tick().await.unwrap();
    assert_eq!(confirmed.queued, 12);
    let ticks = drain(&worker).await;
    assert_eq!(ticks.len(), 12);
    assert!(
        ticks.iter().all(|t| matches!(t, WorkerTick::Signed(_))),
        "{ticks:?}"
    );

    for (i, tx) in txs.iter().enumerate() {
        let v = &h.store.find_by_payment(None, tx.as_str()).await.unwrap()[0];
        assert_eq!(v.status, ValidationStatus::Signed);
        let json = h
            .store
            .get_bundle(v.id)
            .await
            .unwrap()
            .expect("a signed validation has a bundle");
        let bundle = ProofBundle::from_json(json.as_bytes()).unwrap();
        assert_eq!(bundle.statement.message.as_str(), format!("message {i}"));
        assert_eq!(bundle.statement.request_id, v.id.0);
        assert_eq!(bundle.payment.amount_base_units, MIN_PAYMENT + i as u128);
        let report = ubtc_bitcoin::bundle::verify_bundle(&bundle);
        assert!(report.is_valid(), "{report}");
        // The signed-event outbox row was written with the result.
        let events = h.store.list_outbox_for(v.id).await.unwrap();
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].event_type, "validation.signed");
        // The webhook payload is JSON carrying the stored proof and the payment.
        let payload: serde_json::Value = serde_json::from_str(&events[0].payload_json).unwrap();
        assert_eq!(
            payload["proof"],
            serde_json::from_str::<serde_json::Value>(&json).unwrap()
        );
        assert_eq!(payload["validation_id"], v.id.to_string());
        assert_eq!(payload["tx_hash"], tx.as_str());
        assert_eq!(payload["index"], 0);
    }
    let stats = h.store.stats(Timestamp::from_millis(0)).await.unwrap();
    assert_eq!(stats.signed_since, 12);
}

async fn bad_payments_are_rejected_with_reasons(h: &Harness) {
    let monitor = h.monitor();
    let worker = h.worker("w1", signer(), 5);
    let low = h
        .chain
        .submit_payment(&payer(1), MIN_PAYMENT - 1, b"too cheap");
    let not_utf8 = h
        .chain
        .submit_payment(&payer(2), MIN_PAYMENT, &[0x68, 0xff, 0xfe]);
    let long = h.chain.submit_payment(&payer(3), MIN_PAYMENT, &[b'a'; 281]);
    let fine = h
        .chain
        .submit_payment(&payer(4), MIN_PAYMENT, "déjà vu\n".as_bytes());
    h.chain.mine(CONFIRMATIONS);
    let tick = monitor.tick().await.unwrap();
    assert_eq!((tick.detected, tick.rejected, tick.queued), (4, 3, 1));
    for (tx, code) in [
        (&low, "below_minimum"),
        (&not_utf8, "message_not_utf8"),
        (&long, "message_too_long"),
    ] {
        let v = &h.store.find_by_payment(None, tx.as_str()).await.unwrap()[0];
        assert_eq!(v.status, ValidationStatus::Rejected);
        assert_eq!(v.reason.as_ref().map(|r| r.code.as_str()), Some(code));
        assert!(h.store.get_bundle(v.id).await.unwrap().is_none());
    }
    assert_eq!(drain(&worker).await.len(), 1);
    assert_eq!(h.status_of(&fine).await, ValidationStatus::Signed);
    // A non-ASCII message is signed as hex in the statement.
    let v = &h.store.find_by_payment(None, fine.as_str()).await.unwrap()[0];
    assert!(v
        .statement_text
        .as_deref()
        .unwrap()
        .contains("message-hex: 64c3a96ac3a0207675"));
}

async fn reorg_before_confirmation_drops_and_never_signs(h: &Harness) {
    let monitor = h.monitor();
    let worker = h.worker("w1", signer(), 5);
    h.chain.mine(4);
    let kept = h.chain.submit_payment(&payer(1), MIN_PAYMENT, b"early");
    h.chain.mine(CONFIRMATIONS);
    monitor.tick().await.unwrap();
    assert_eq!(h.status_of(&kept).await, ValidationStatus::Queued);
    let doomed = h
        .chain
        .submit_payment(&payer(2), MIN_PAYMENT, b"reorged away");
    h.chain.mine(1);
    monitor.tick().await.unwrap();
    assert_eq!(h.status_of(&doomed).await, ValidationStatus::Detected);

    // The block holding the payment is replaced by a longer branch without it.
    h.chain.reorg(1);
    let tick = monitor.tick().await.unwrap();
    assert!(tick.reorg || tick.dropped == 1, "{tick:?}");
    while !monitor.tick().await.unwrap().is_idle() {}
    h.chain.mine(CONFIRMATIONS);
    while !monitor.tick().await.unwrap().is_idle() {}
    assert_eq!(h.status_of(&doomed).await, ValidationStatus::Dropped);
    let ticks = drain(&worker).await;
    assert_eq!(
        ticks.len(),
        1,
        "only the confirmed payment is signed: {ticks:?}"
    );
    assert_eq!(h.status_of(&kept).await, ValidationStatus::Signed);
    let dropped = &h
        .store
        .find_by_payment(None, doomed.as_str())
        .await
        .unwrap()[0];
    assert_eq!(dropped.reason.as_ref().unwrap().code, "reorged");
    assert!(h.store.get_bundle(dropped.id).await.unwrap().is_none());
}

/// Test double: fails the first `failures` calls with a retryable reason, then signs
/// with the real local key. Records every statement it was asked to sign.
struct FlakySigner {
    inner: Arc<LocalKeySigner>,
    failures: u32,
    calls: AtomicU32,
    seen: Mutex<Vec<String>>,
}

#[async_trait]
impl ReserveSigner for FlakySigner {
    async fn sign(&self, statement: &Statement) -> Result<SignedStatement, SignFailure> {
        self.seen.lock().unwrap().push(statement.text());
        if self.calls.fetch_add(1, Ordering::SeqCst) < self.failures {
            return Err(SignFailure::Retry(Reason::new(
                "quorum_not_reached",
                "1 of 2 guardians answered",
            )));
        }
        self.inner.sign(statement).await
    }
    fn reserves(&self) -> Vec<(String, String)> {
        self.inner.reserves()
    }
}

async fn retries_reuse_one_statement_then_sign(h: &Harness) {
    let monitor = h.monitor();
    let flaky = Arc::new(FlakySigner {
        inner: signer(),
        failures: 2,
        calls: AtomicU32::new(0),
        seen: Mutex::new(vec![]),
    });
    let worker = h.worker("w1", flaky.clone(), 5);
    let tx = h.chain.submit_payment(&payer(1), MIN_PAYMENT, b"try again");
    h.chain.mine(CONFIRMATIONS);
    monitor.tick().await.unwrap();
    let first = worker.tick().await.unwrap();
    assert!(
        matches!(first, WorkerTick::Retrying(_, ref r) if r.code == "quorum_not_reached"),
        "{first:?}"
    );
    let v = &h.store.find_by_payment(None, tx.as_str()).await.unwrap()[0];
    assert_eq!(v.status, ValidationStatus::Queued);
    assert_eq!(v.attempts, 1);
    // The Bitcoin tip moves between attempts: the statement must not.
    h.bitcoin.advance(3);
    assert!(matches!(
        worker.tick().await.unwrap(),
        WorkerTick::Retrying(..)
    ));
    h.bitcoin.advance(1);
    assert!(matches!(
        worker.tick().await.unwrap(),
        WorkerTick::Signed(_)
    ));
    let seen = flaky.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter().all(|s| s == &seen[0]),
        "every attempt signs the same statement"
    );
    assert!(seen[0].contains("bitcoin-block: 850000 "));
    assert_eq!(h.status_of(&tx).await, ValidationStatus::Signed);
}

async fn exhausted_retries_go_to_the_dead_letter(h: &Harness) {
    let monitor = h.monitor();
    let never = Arc::new(FlakySigner {
        inner: signer(),
        failures: u32::MAX,
        calls: AtomicU32::new(0),
        seen: Mutex::new(vec![]),
    });
    let worker = h.worker("w1", never, 3);
    let tx = h
        .chain
        .submit_payment(&payer(1), MIN_PAYMENT, b"never signed");
    h.chain.mine(CONFIRMATIONS);
    monitor.tick().await.unwrap();
    let ticks = drain(&worker).await;
    assert_eq!(ticks.len(), 3, "{ticks:?}");
    assert!(matches!(ticks[2], WorkerTick::Failed(..)));
    let v = &h.store.find_by_payment(None, tx.as_str()).await.unwrap()[0];
    assert_eq!(v.status, ValidationStatus::Failed);
    assert_eq!(v.reason.as_ref().unwrap().code, "quorum_not_reached");
    let events = h.store.list_outbox_for(v.id).await.unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["validation.failed"]
    );
    // An operator re-queues it; with a working signer it completes.
    h.store
        .requeue_failed(v.id, Timestamp::now())
        .await
        .unwrap();
    let fixed = h.worker("w2", signer(), 3);
    assert!(matches!(fixed.tick().await.unwrap(), WorkerTick::Signed(_)));
}

async fn expired_lease_is_taken_over_and_signed_once(h: &Harness) {
    let monitor = h.monitor();
    let tx = h
        .chain
        .submit_payment(&payer(1), MIN_PAYMENT, b"orphaned claim");
    h.chain.mine(CONFIRMATIONS);
    monitor.tick().await.unwrap();
    // Worker A claims with a short lease and dies without finishing.
    let dead = h
        .store
        .claim_next("worker-a", 50, Timestamp::now())
        .await
        .unwrap()
        .expect("claimable");
    let b = h.worker("worker-b", signer(), 5);
    assert!(
        matches!(b.tick().await.unwrap(), WorkerTick::Idle),
        "the lease still holds"
    );
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;
    assert!(matches!(b.tick().await.unwrap(), WorkerTick::Signed(_)));
    // A's late result is refused and changes nothing.
    let a = h.worker("worker-a", signer(), 5);
    assert!(matches!(
        a.process(dead).await.unwrap(),
        WorkerTick::LostClaim(_)
    ));
    assert_eq!(h.status_of(&tx).await, ValidationStatus::Signed);
    let v = &h.store.find_by_payment(None, tx.as_str()).await.unwrap()[0];
    assert_eq!(
        h.store.list_outbox_for(v.id).await.unwrap().len(),
        1,
        "signed exactly once"
    );
}

async fn batched_worker_signs_each_once_and_skips_lost_claims(h: &Harness) {
    let monitor = h.monitor();
    let mut txs = Vec::new();
    for i in 0..40 {
        txs.push(
            h.chain
                .submit_payment(&payer(i), MIN_PAYMENT, format!("batch {i}").as_bytes()),
        );
    }
    h.chain.mine(CONFIRMATIONS);
    let tick = monitor.tick().await.unwrap();
    assert_eq!((tick.detected, tick.queued), (40, 40));
    // A worker that claimed five jobs with a short lease and died.
    let dead = h
        .store
        .claim_batch("dead", 5, 50, Timestamp::now())
        .await
        .unwrap();
    assert_eq!(dead.len(), 5);
    tokio::time::sleep(std::time::Duration::from_millis(80)).await;

    let worker = h.worker("batcher", signer(), 5);
    let mut signed = 0;
    loop {
        let batch = worker.tick_batch(16).await.unwrap();
        if batch.0.is_empty() {
            break;
        }
        assert!(batch.0.len() <= 16);
        signed += batch
            .0
            .iter()
            .filter(|t| matches!(t, WorkerTick::Signed(_)))
            .count();
    }
    assert_eq!(signed, 40);
    // The dead worker's late results are refused.
    let late = h.worker("dead", signer(), 5);
    for claim in dead {
        assert!(matches!(
            late.process(claim).await.unwrap(),
            WorkerTick::LostClaim(_)
        ));
    }
    for tx in &txs {
        let v = &h.store.find_by_payment(None, tx.as_str()).await.unwrap()[0];
        assert_eq!(v.status, ValidationStatus::Signed);
        assert_eq!(h.store.list_outbox_for(v.id).await.unwrap().len(), 1);
        let bundle =
            ProofBundle::from_json(h.store.get_bundle(v.id).await.unwrap().unwrap().as_bytes())
                .unwrap();
        assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle).is_valid());
    }
}

async fn bundles_carry_the_latest_reserve_snapshot(h: &Harness) {
    use ubtc_pipeline::snapshot::{ReserveSnapshotter, SnapshotConfig};
    let key = signer();
    let address = key.address().to_string();
    let spk = hex::encode(key.address().script_pubkey().as_bytes());
    h.bitcoin.fund(&address, &spk, 100_000_000);
    h.store
        .add_reserve_address(
            &ubtc_store::NewReserveAddress {
                address: address.clone(),
                descriptor: key.descriptor().to_owned(),
                kind: "p2wpkh".into(),
                label: None,
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
    let snapshotter = ReserveSnapshotter::new(
        h.bitcoin.clone(),
        vec![Arc::new(ubtc_chains::dev::DevSupply::new(
            h.chain.clone(),
            50_000_000,
        ))],
        h.store.clone(),
        SnapshotConfig::default(),
    );
    snapshotter.tick(Timestamp::now()).await.unwrap();

    let monitor = h.monitor();
    let worker = h.worker("w1", key, 5);
    let tx = h
        .chain
        .submit_payment(&payer(1), MIN_PAYMENT, b"with reserves");
    h.chain.mine(CONFIRMATIONS);
    assert_eq!(monitor.tick().await.unwrap().queued, 1);
    assert!(matches!(drain(&worker).await[..], [WorkerTick::Signed(_)]));

    let v = &h.store.find_by_payment(None, tx.as_str()).await.unwrap()[0];
    let json = h.store.get_bundle(v.id).await.unwrap().unwrap();
    let bundle = ProofBundle::from_json(json.as_bytes()).unwrap();
    assert_eq!(bundle.supply.len(), 1);
    assert_eq!(bundle.supply[0].chain.as_str(), "dev");
    assert_eq!(bundle.supply[0].supply.base_units, 50_000_000);
    let figures = bundle.reserve_figures.as_ref().expect("reserve figures");
    assert_eq!(figures.reserve_sats.0, 100_000_000);
    assert_eq!(figures.supply_sats.0, 50_000_000);
    assert_eq!(figures.ratio_ppm, Some(2_000_000));
    assert!(figures.healthy && !figures.stale);
    let report = ubtc_bitcoin::bundle::verify_bundle(&bundle);
    assert!(report.is_valid(), "{report}");
    // This signer writes no proof of funds: the figures are the operator's unsigned
    // claim, and the report says that no amount is proven.
    assert!(bundle.proof_of_funds.is_none());
    assert!(!report.funds_proven);
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("unsigned reserve figures claim 1.00000000 BTC")),
        "{report}"
    );
    assert!(report.unsigned.iter().any(|u| u.field == "reserve_figures"));
}
