//! Fault tests with real `ubtc` processes on the real PostgreSQL server.
//!
//! Each test gets its own database (created here, dropped at the end). Jobs are put in
//! the queue through the store, as a chain monitor would, so that the processes under
//! test only have to claim, sign and store.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::{ChainId, PaymentRef, ProofBundle, Timestamp, ValidationId, ValidationStatus};
use ubtc_store::{NewValidation, PgStore, Store};

mod common;
use common::{http_status, spawn_ubtc, wait_for_status, TestDb};

fn init_key(dir: &Path, db_url: &str) {
    let status = spawn_ubtc(dir, db_url, &["keys", "local-init"], &[])
        .wait()
        .unwrap();
    assert!(status.success());
}

/// Puts `n` confirmed payments in the queue, as a monitor would.
async fn enqueue(store: &dyn Store, n: usize, tag: &str) -> Vec<ValidationId> {
    let chain = ChainId::parse("dev").unwrap();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let new = NewValidation {
            id: ValidationId::new(),
            payment: PaymentRef {
                chain: chain.clone(),
                tx_hash: TxHash::parse(&format!("0x{tag}{i:060x}")).unwrap(),
                index: 0,
            },
            payer: Payer::parse("0xpayer").unwrap(),
            amount_base_units: 5_000,
            message: format!("{tag} message {i}").into_bytes(),
            block: ChainBlock {
                number: 1,
                hash: format!("0x{:064x}", 1),
            },
            callback_url: None,
            rejection: None,
        };
        let id = store
            .record_detected(&new, Timestamp::now())
            .await
            .unwrap()
            .id();
        store
            .confirm_and_enqueue(id, 3, None, Timestamp::now())
            .await
            .unwrap();
        ids.push(id);
    }
    ids
}

async fn count(store: &dyn Store, ids: &[ValidationId], status: ValidationStatus) -> usize {
    let mut n = 0;
    for id in ids {
        if store.get_validation(*id).await.unwrap().unwrap().status == status {
            n += 1;
        }
    }
    n
}

/// `(signed, signing)` counts over the whole (fresh) database, in one query.
async fn signed_and_signing(store: &dyn Store) -> (usize, usize) {
    let stats = store.stats(Timestamp::from_millis(0)).await.unwrap();
    let of = |status| {
        stats
            .counts
            .iter()
            .filter(|c| c.status == status)
            .map(|c| c.count as usize)
            .sum::<usize>()
    };
    (of(ValidationStatus::Signed), of(ValidationStatus::Signing))
}

async fn wait_until_signed(store: &dyn Store, ids: &[ValidationId], within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let signed = count(store, ids, ValidationStatus::Signed).await;
        if signed == ids.len() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "only {signed} of {} signed in time",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every validation is signed exactly once: one signed event, a bundle that verifies.
async fn assert_signed_exactly_once(store: &dyn Store, ids: &[ValidationId]) {
    for id in ids {
        let v = store.get_validation(*id).await.unwrap().unwrap();
        assert_eq!(v.status, ValidationStatus::Signed);
        let events = store.list_outbox_for(*id).await.unwrap();
        assert_eq!(
            events.len(),
            1,
            "validation {id} has {} signed events",
            events.len()
        );
        let bundle =
            ProofBundle::from_json(store.get_bundle(*id).await.unwrap().unwrap().as_bytes())
                .unwrap();
        assert_eq!(bundle.statement_text, v.statement_text.unwrap());
        assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle).is_valid());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_worker_loses_nothing_and_signs_nothing_twice() {
    let db = TestDb::create("ubtc_proc").await;
    let dir = tempfile::tempdir().unwrap();
    init_key(dir.path(), &db.url);
    let store = PgStore::connect(&db.url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let ids = enqueue(store.as_ref(), 2000, "a").await;

    let env = [
        ("UBTC_PIPELINE_LEASE_SECS", "2"),
        ("UBTC_PIPELINE_WORKERS", "8"),
    ];
    let mut in_flight_seen = 0;
    // Kill the worker mid-stream (again if a kill happens to land between batches),
    // then let a fresh one finish the queue.
    for _round in 0..5 {
        let (signed_before, _) = signed_and_signing(store.as_ref()).await;
        let mut worker = spawn_ubtc(dir.path(), &db.url, &["worker"], &env);
        let deadline = Instant::now() + Duration::from_secs(60);
        while signed_and_signing(store.as_ref()).await.0 < signed_before + 50 {
            assert!(Instant::now() < deadline, "worker made no progress");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        worker.kill().unwrap(); // SIGKILL
        worker.wait().unwrap();
        in_flight_seen += signed_and_signing(store.as_ref()).await.1;
        if in_flight_seen > 0 {
            break;
        }
    }
    assert!(in_flight_seen > 0, "the kill never caught a job in flight");

    let mut worker = spawn_ubtc(dir.path(), &db.url, &["worker"], &env);
    wait_until_signed(store.as_ref(), &ids, Duration::from_secs(120)).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_signed_exactly_once(store.as_ref(), &ids).await;
}

/// A TCP proxy to PostgreSQL that the test can cut (closing every connection and the
/// listener) and restore on the same port: the database "going away" as the
/// processes see it, without stopping the server other tests share.
struct Proxy {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Proxy {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = Self {
            addr,
            up: Arc::new(AtomicBool::new(true)),
            cut: Arc::new(tokio::sync::Notify::new()),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let cut = self.cut.clone();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = cut.notified() => return,
                };
                let Ok((mut inbound, _)) = accepted else {
                    return;
                };
                let cut = cut.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect("127.0.0.1:5432").await
                    else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut.notified() => {}
                    }
                });
            }
        });
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        // notify_waiters reaches the listener and every live connection.
        self.cut.notify_waiters();
    }

    async fn restore(&self) {
        let listener = tokio::net::TcpListener::bind(self.addr).await.unwrap();
        self.up.store(true, Ordering::SeqCst);
        self.serve(listener);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_away_fails_readiness_and_work_resumes() {
    let db = TestDb::create("ubtc_proc").await;
    let dir = tempfile::tempdir().unwrap();
    init_key(dir.path(), &db.url);
    let store = PgStore::connect(&db.url, 4).await.unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let proxy = Proxy::start().await;
    let via_proxy = db.url_via(proxy.addr);

    let api_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let listen = api_port.to_string();
    let mut serve = spawn_ubtc(
        dir.path(),
        &via_proxy,
        &["serve"],
        &[("UBTC_SERVER_LISTEN", &listen)],
    );
    let mut worker = spawn_ubtc(
        dir.path(),
        &via_proxy,
        &["worker"],
        &[("UBTC_PIPELINE_LEASE_SECS", "3")],
    );
    wait_for_status(api_port, "/readyz", 200, Duration::from_secs(30)).await;

    let before = enqueue(store.as_ref(), 20, "b").await;
    wait_until_signed(store.as_ref(), &before, Duration::from_secs(60)).await;

    proxy.cut();
    wait_for_status(api_port, "/readyz", 503, Duration::from_secs(45)).await;
    assert_eq!(
        http_status(api_port, "/healthz").await,
        Some(200),
        "the process itself is alive"
    );
    // Work arrives while the database is unreachable for the processes.
    let during = enqueue(store.as_ref(), 20, "c").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        count(store.as_ref(), &during, ValidationStatus::Signed).await,
        0
    );
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker backs off instead of exiting"
    );

    proxy.restore().await;
    wait_for_status(api_port, "/readyz", 200, Duration::from_secs(45)).await;
    wait_until_signed(store.as_ref(), &during, Duration::from_secs(90)).await;
    assert_signed_exactly_once(store.as_ref(), &before).await;
    assert_signed_exactly_once(store.as_ref(), &during).await;

    for child in [&mut serve, &mut worker] {
        // SIGTERM: a clean shutdown exits 0.
        common::sigterm(child);
        let status = child.wait().unwrap();
        assert!(status.success(), "clean shutdown on SIGTERM, got {status}");
    }
}

/// `ubtc demo` on its embedded defaults: the start-up payments end signed (or, for the
/// one paying too little, rejected), and each proof verifies with `ubtc verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_signs_its_payments_and_proofs_verify() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .args([
            "demo",
            "--port",
            "0",
            "--payments",
            "5",
            "--exit-after-payments",
            "--data-dir",
        ])
        .arg(&data)
        .env_remove("UBTC_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "demo failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("below_minimum"), "{stdout}");
    assert!(stdout.contains("ubtc verify proof.json"), "{stdout}");

    let store =
        ubtc_store::SqliteStore::connect(&format!("sqlite:{}", data.join("ubtc.db").display()), 1)
            .await
            .unwrap();
    let signed = store
        .list_validations(&ubtc_store::ValidationFilter {
            status: Some(ValidationStatus::Signed),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(signed.len(), 4, "four payments pay enough");
    // The demo published registry version 1 and wrote the chain to pin it with.
    let registry_file = data.join("registry.json");
    let registry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&registry_file).unwrap()).unwrap();
    let fingerprint = registry["current_fingerprint"].as_str().unwrap().to_owned();
    assert!(stdout.contains(&fingerprint), "{stdout}");
    for v in &signed {
        let path = dir.path().join(format!("{}.json", v.id));
        std::fs::write(&path, store.get_bundle(v.id).await.unwrap().unwrap()).unwrap();
        let verify = Command::new(env!("CARGO_BIN_EXE_ubtc"))
            .arg("verify")
            .arg(&path)
            .arg("--registry")
            .arg(&registry_file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&verify.stdout);
        assert_eq!(verify.status.code(), Some(0), "{text}");
        assert!(text.starts_with("proof bundle: VALID"), "{text}");
        assert!(text.contains("2-of-3 keys:"), "{text}");
        // Pinned by fingerprint, as JSON.
        let verify = Command::new(env!("CARGO_BIN_EXE_ubtc"))
            .args(["verify", "--json", "--registry-fingerprint", &fingerprint])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(verify.status.code(), Some(0));
        let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
        assert_eq!(report["pinned"], true);
        assert_eq!(report["bundle_version"], 2);
        assert_eq!(
            report["registry"]["current_fingerprint"],
            fingerprint.as_str()
        );
        // Without a pin: the same signatures, reported as unpinned.
        let verify = Command::new(env!("CARGO_BIN_EXE_ubtc"))
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&verify.stdout);
        assert_eq!(verify.status.code(), Some(0), "{text}");
        assert!(text.starts_with("proof bundle: UNPINNED"), "{text}");
        assert!(text.contains(&fingerprint), "{text}");
        // A tampered bundle is refused with exit 1.
        let tampered = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"index\":0", "\"index\":1");
        std::fs::write(&path, tampered).unwrap();
        let verify = Command::new(env!("CARGO_BIN_EXE_ubtc"))
            .arg("verify")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(verify.status.code(), Some(1));
    }
    // Unreadable input exits 2.
    let garbage = dir.path().join("garbage.json");
    std::fs::write(&garbage, "{not json").unwrap();
    let verify = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("verify")
        .arg(&garbage)
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(2));
}
