//! Guardians as real `ubtc guardian` processes on loopback ports: 2-of-3 end to end,
//! guardians going down and coming back, and a crash between recording an approval
//! and answering. The dev chain is served from this test process, as the demo serves
//! it.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use tokio_util::sync::CancellationToken;
use ubtc_bitcoin::bip322::ToSignParams;
use ubtc_bitcoin::multisig::{Form, SigningRequest, SortedMulti, Wrapping};
use ubtc_chains::dev::{DevBitcoin, DevChain};
use ubtc_chains::ChainAdapter;
use ubtc_core::bundle::{
    ApprovalDecision, BitcoinNetwork, PaymentInfo, ProofBundle, BUNDLE_FORMAT,
    BUNDLE_VERSION_LEGACY,
};
use ubtc_core::payment::Payer;
use ubtc_core::{BlockStamp, ChainId, PaymentRef, Statement, Timestamp};
use ubtc_guardian::protocol::{
    self, Envelope, Outcome, RefusalCode, SignAnswer, SignRequest, ANSWER_TAG,
};
use ubtc_guardian::record::Approval;
use ubtc_guardian::{keystore, Coordinator, CoordinatorSettings, GuardianEndpoint, GuardianKey};
use ubtc_pipeline::{ReserveSigner, SignFailure, SignedStatement};
use ubtc_store::Store;

const PASSPHRASE: &str = "test passphrase for guardian processes";
/// The dev Bitcoin tip of the workers (`bitcoin.dev_start_height`) and, unless a test
/// says otherwise, of every guardian's own Bitcoin view.
const BTC_TIP: u32 = 850_000;

struct Proc {
    child: Child,
    config: PathBuf,
    dir: PathBuf,
    url: String,
    key: PublicKey,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn approvals(&self) -> Vec<Approval> {
        std::fs::read_to_string(self.dir.join("approvals.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Starts `ubtc guardian --config` and waits for its address.
fn start(config: &Path, env: &[(&str, &str)]) -> (Child, String, PublicKey) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ubtc"));
    cmd.arg("guardian")
        .arg("--config")
        .arg(config)
        .env("UBTC_GUARDIAN_PASSPHRASE", PASSPHRASE)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut key = None;
    let addr = loop {
        let line = lines
            .next()
            .expect("guardian exited before listening")
            .unwrap();
        if let Some(k) = line.strip_prefix("guardian key ") {
            key = Some(k.parse().unwrap());
        }
        if let Some(a) = line.strip_prefix("guardian listening on ") {
            break a.to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, format!("http://{addr}"), key.unwrap())
}

struct Net {
    dev: DevChain,
    chain: ChainId,
    coordinator_key: GuardianKey,
    /// The reserve every guardian names in `[policy] reserves`.
    reserve: String,
    procs: Vec<Proc>,
    _tmp: tempfile::TempDir,
    cancel: CancellationToken,
}

impl Drop for Net {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl Net {
    async fn new(n: usize, hook_on: Option<usize>) -> Self {
        Self::with_bitcoin_tips(&vec![BTC_TIP; n], hook_on).await
    }

    /// One guardian per entry, each with its own dev Bitcoin view at that tip.
    async fn with_bitcoin_tips(tips: &[u32], hook_on: Option<usize>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chain = ChainId::parse("dev").unwrap();
        let dev = DevChain::new(chain.clone(), "0xc0ffee", 2);
        let cancel = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let chain_url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(ubtc_guardian::server::serve(
            listener,
            ubtc_guardian::dev_chain_router(HashMap::from([(chain.clone(), dev.clone())])),
            cancel.clone(),
        ));
        let tmp = tempfile::tempdir().unwrap();
        let coordinator_key = GuardianKey::generate();
        // Every key first: each guardian names the majority-of-N reserve over them all.
        let mut keys = Vec::new();
        for i in 0..tips.len() {
            let dir = tmp.path().join(format!("g{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let ks = dir.join("keystore.json");
            let key =
                keystore::create(&ks, &keystore::Passphrase::new(PASSPHRASE).unwrap()).unwrap();
            // The keystore holds no plaintext key: neither the hex nor the raw bytes.
            let file = std::fs::read(&ks).unwrap();
            let text = String::from_utf8_lossy(&file).to_lowercase();
            assert!(text.contains(&key.public_hex()));
            assert!(!text.contains("secret"));
            keys.push(key);
        }
        let reserve = SortedMulti::new(
            tips.len() / 2 + 1,
            keys.iter()
                .map(|k| bitcoin::CompressedPublicKey(k.public()))
                .collect(),
        )
        .unwrap()
        .descriptor(Wrapping::Wsh);
        let mut procs = Vec::new();
        for ((i, &tip), key) in tips.iter().enumerate().zip(keys) {
            let dir = tmp.path().join(format!("g{i}"));
            let config = dir.join("guardian.toml");
            let setup = GuardianSetup {
                dir: dir.clone(),
                coordinator: coordinator_key.public_hex(),
                chain_url: chain_url.clone(),
                bitcoin_tip: tip,
                reserve: reserve.clone(),
                // The last guardian also signs proofs of funds (against its own view).
                forms: if i + 1 == tips.len() {
                    "\"simple\", \"proof_of_funds\""
                } else {
                    "\"simple\""
                },
            };
            setup.write(&config, 0);
            let env: Vec<(&str, &str)> = if hook_on == Some(i) {
                vec![(ubtc_guardian::server::TEST_EXIT_AFTER_RECORD_ENV, "1")]
            } else {
                vec![]
            };
            let (child, url, k) = start(&config, &env);
            assert_eq!(k, key.public());
            // Pin the port so a restart comes back where the coordinator looks.
            let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
            setup.write(&config, port);
            procs.push(Proc {
                child,
                config,
                dir,
                url,
                key: k,
            });
        }
        Self {
            dev,
            chain,
            coordinator_key,
            reserve,
            procs,
            _tmp: tmp,
            cancel,
        }
    }

    fn coordinator(&self, m: usize) -> Coordinator {
        let endpoints = self
            .procs
            .iter()
            .enumerate()
            .map(|(i, p)| GuardianEndpoint {
                name: format!("g{}", i + 1),
                url: p.url.clone(),
                key: p.key,
            })
            .collect();
        Coordinator::new(
            self.coordinator_key.clone(),
            endpoints,
            m,
            CoordinatorSettings {
                network: bitcoin::Network::Regtest,
                timeout: Duration::from_secs(5),
                request_ttl: Duration::from_secs(60),
            },
        )
        .unwrap()
    }

    fn restart(&mut self, i: usize) {
        let p = &mut self.procs[i];
        p.kill();
        let (child, url, _) = start(&p.config, &[]);
        assert_eq!(url, p.url);
        p.child = child;
    }

    async fn statement(&self, message: &str) -> Statement {
        let tx =
            self.dev
                .submit_payment(&Payer::parse("0xa11ce").unwrap(), 1000, message.as_bytes());
        self.dev.mine(3);
        let reference = PaymentRef {
            chain: self.chain.clone(),
            tx_hash: tx,
            index: 0,
        };
        let (p, _) = self.dev.payment(&reference).await.unwrap().unwrap();
        Statement::new(
            reference,
            p.payer,
            p.message.unwrap(),
            BlockStamp::new(BTC_TIP, &DevBitcoin::hash_at(BTC_TIP)).unwrap(),
            uuid::Uuid::new_v4(),
        )
    }
}

/// What a test guardian's `guardian.toml` says.
struct GuardianSetup {
    dir: PathBuf,
    coordinator: String,
    chain_url: String,
    bitcoin_tip: u32,
    reserve: String,
    /// `[policy] forms`, as TOML array items.
    forms: &'static str,
}

impl GuardianSetup {
    fn write(&self, path: &Path, port: u16) {
        let toml = format!(
            "listen = \"127.0.0.1:{port}\"\nkeystore = {:?}\napprovals = {:?}\ncoordinators = [\"{}\"]\n\
             [bitcoin]\nbackend = \"dev\"\ndev_height = {}\n\
             [policy]\nreserves = [\"{}\"]\nforms = [{}]\n\
             [[chains]]\nname = \"dev\"\nkind = \"dev_http\"\nurl = \"{}\"\n",
            self.dir.join("keystore.json").display().to_string(),
            self.dir.join("approvals.jsonl").display().to_string(),
            self.coordinator,
            self.bitcoin_tip,
            self.reserve,
            self.forms,
            self.chain_url,
        );
        std::fs::write(path, toml).unwrap();
    }
}

fn bundle(statement: &Statement, signed: SignedStatement) -> ProofBundle {
    ProofBundle {
        format: BUNDLE_FORMAT.into(),
        version: BUNDLE_VERSION_LEGACY,
        network: BitcoinNetwork::Regtest,
        statement: statement.clone(),
        statement_text: statement.text(),
        payment: PaymentInfo {
            amount_base_units: 1000,
            unit: "wei".into(),
            block_number: 1,
            block_hash: "00".into(),
        },
        reserves: signed.reserves,
        proof_of_funds: None,
        supply: Vec::new(),
        reserve_figures: None,
        approvals: signed.approvals,
        created_at: Timestamp::now(),
        registry: Vec::new(),
    }
}

/// Writes the bundle and checks it with `ubtc verify`, the command users run.
fn ubtc_verify(b: &ProofBundle) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proof.json");
    std::fs::write(&path, b.to_json_pretty()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ubtc verify failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn two_of_three_processes_end_to_end() {
    let net = Net::new(3, None).await;
    let c = net.coordinator(2);
    let s = net.statement("hello from three processes").await;
    let signed = c.sign(&s).await.unwrap();
    assert_eq!(signed.approvals.len(), 3);
    assert!(
        signed
            .approvals
            .iter()
            .filter(|a| a.decision == ApprovalDecision::Approved)
            .count()
            >= 2
    );
    let b = bundle(&s, signed);
    assert!(ubtc_bitcoin::bundle::verify_bundle(&b).is_valid());
    ubtc_verify(&b);
}

#[tokio::test]
async fn one_down_still_signs_two_down_retries_until_back() {
    let mut net = Net::new(3, None).await;
    let c = net.coordinator(2);
    net.procs[2].kill();
    let s = net.statement("one guardian down").await;
    let signed = c.sign(&s).await.unwrap();
    let g3 = &signed.approvals[2];
    assert_eq!(g3.decision, ApprovalDecision::Refused);
    assert_eq!(g3.reason_code.as_deref(), Some("unreachable"));
    assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle(&s, signed)).is_valid());

    net.procs[1].kill();
    let s = net.statement("two guardians down").await;
    match c.sign(&s).await {
        Err(SignFailure::Retry(r)) => {
            assert_eq!(r.code, "quorum_not_reached");
            assert!(r.detail.contains("g1: approved"), "{}", r.detail);
            assert!(r.detail.contains("g2: unreachable"), "{}", r.detail);
            assert!(r.detail.contains("g3: unreachable"), "{}", r.detail);
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    // g2 comes back; the retried job (same statement) completes.
    net.restart(1);
    let signed = c.sign(&s).await.unwrap();
    assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle(&s, signed)).is_valid());
}

#[tokio::test]
async fn killed_after_recording_answers_retry_with_same_signature() {
    let mut net = Net::new(3, Some(0)).await;
    let c = net.coordinator(2);
    let s = net.statement("crash after record").await;
    // g1 records its approval and exits before answering; g2 and g3 carry the quorum.
    let signed = c.sign(&s).await.unwrap();
    assert_eq!(signed.approvals[0].decision, ApprovalDecision::Refused);
    // The coordinator may finish on g2 and g3 before g1 is gone: wait for its exit.
    let mut status = None;
    for _ in 0..100 {
        status = net.procs[0].child.try_wait().unwrap();
        if status.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(75),
        "g1 exited by the hook"
    );
    let recorded = net.procs[0].approvals();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].statement_digest, s.digest_hex());

    net.restart(0);
    // The coordinator's retry: a fresh request id, the same statement.
    let now = Timestamp::now();
    let req = SignRequest {
        request_id: uuid::Uuid::new_v4(),
        issued_at: now,
        expires_at: now.plus_millis(30_000),
        payment: s.payment.clone(),
        statement: s.clone(),
        signing: c.signing_request(&s).unwrap(),
    };
    let answer: Envelope = reqwest::Client::new()
        .post(format!("{}/v1/sign", net.procs[0].url))
        .json(&c.seal_request(&req).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (body, _): (SignAnswer, _) =
        protocol::open(ANSWER_TAG, &answer, &[net.procs[0].key]).unwrap();
    match body.outcome {
        Outcome::Approved {
            partial,
            recorded_at,
        } => {
            assert_eq!(partial, recorded[0].partial);
            assert_eq!(recorded_at, recorded[0].recorded_at);
        }
        other => panic!("expected the recorded approval, got {other:?}"),
    }
    assert_eq!(net.procs[0].approvals().len(), 1, "nothing new recorded");
    // And the whole round now completes with g1 counted.
    let signed = c.sign(&s).await.unwrap();
    // g1 approves again (unless g2 and g3 were both faster: then its answer was not
    // waited for, or came in after the quorum and was neither verified nor counted).
    let g1 = &signed.approvals[0];
    assert!(
        g1.decision == ApprovalDecision::Approved
            || matches!(g1.reason_code.as_deref(), Some("no_answer_needed" | "late")),
        "{g1:?}"
    );
    assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle(&s, signed)).is_valid());
}

/// Guardians whose own Bitcoin view differs from the coordinator's: one is 100 blocks
/// ahead (the stamp is stale for it), one is behind (the stamp is above its tip); the
/// third agrees. No quorum, and each refusal carries its reason. A stamp with a hash
/// that is not the block at that height is refused by every guardian.
#[tokio::test]
async fn guardians_check_the_bitcoin_block_stamp_against_their_own_view() {
    let net = Net::with_bitcoin_tips(&[BTC_TIP, BTC_TIP + 100, BTC_TIP - 1_000], None).await;
    let c = net.coordinator(2);
    let s = net.statement("stamped by another view").await;
    match c.sign(&s).await {
        Err(SignFailure::Retry(r)) => {
            assert_eq!(r.code, "quorum_not_reached");
            assert!(r.detail.contains("g1: approved"), "{}", r.detail);
            assert!(r.detail.contains("g2: stale_block_stamp"), "{}", r.detail);
            assert!(r.detail.contains("g3: unknown_block_stamp"), "{}", r.detail);
        }
        other => panic!("expected no quorum, got {other:?}"),
    }
    // Within the allowed age (6 blocks by default) the stamp is accepted.
    // (g1 alone: the others' views are off, so no quorum either way.)
    let mut s = net.statement("six blocks old").await;
    s.bitcoin_block = BlockStamp::new(BTC_TIP - 6, &DevBitcoin::hash_at(BTC_TIP - 6)).unwrap();
    match c.sign(&s).await {
        Err(SignFailure::Retry(r)) => assert!(r.detail.contains("g1: approved"), "{}", r.detail),
        other => panic!("expected g1 alone to approve, got {other:?}"),
    }
    let mut s = net.statement("seven blocks old").await;
    s.bitcoin_block = BlockStamp::new(BTC_TIP - 7, &DevBitcoin::hash_at(BTC_TIP - 7)).unwrap();
    match c.sign(&s).await {
        Err(SignFailure::Retry(r)) => {
            assert!(r.detail.contains("g1: stale_block_stamp"), "{}", r.detail)
        }
        other => panic!("expected a stale stamp, got {other:?}"),
    }
    // The right height with a made-up hash: not a block of anybody's view.
    let mut s = net.statement("invented block").await;
    s.bitcoin_block = BlockStamp::new(BTC_TIP, &format!("{:064x}", 0xabcdefu64)).unwrap();
    match c.sign(&s).await {
        Err(SignFailure::Retry(r)) => {
            assert!(r.detail.contains("g1: unknown_block_stamp"), "{}", r.detail);
            assert!(r.detail.contains("g2: unknown_block_stamp"), "{}", r.detail);
        }
        other => panic!("expected an unknown stamp, got {other:?}"),
    }
    // Nothing was recorded for the refused statements.
    assert_eq!(net.procs[1].approvals().len(), 0);
    assert_eq!(net.procs[2].approvals().len(), 0);
}

#[test]
fn guardian_init_prints_key_and_refuses_wrong_passphrase() {
    let dir = tempfile::tempdir().unwrap();
    let ks = dir.path().join("ks.json");
    let out = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .args(["keys", "guardian-init", "--keystore"])
        .arg(&ks)
        .env("UBTC_GUARDIAN_PASSPHRASE", "pw one")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("public key:") && stdout.contains("fingerprint:"));
    assert!(matches!(
        keystore::load(&ks, &keystore::Passphrase::new("pw two").unwrap()),
        Err(keystore::KeystoreError::Decrypt)
    ));
    assert!(keystore::load(&ks, &keystore::Passphrase::new("pw one").unwrap()).is_ok());
}

/// `ubtc demo` signs through its three guardian processes: every proof carries the
/// 2-of-3 reserve signature and an approval per guardian, and verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_signs_through_three_guardian_processes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .args([
            "demo",
            "--port",
            "0",
            "--payments",
            "3",
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
    assert!(stdout.contains("guardians       2-of-3"), "{stdout}");
    let store =
        ubtc_store::SqliteStore::connect(&format!("sqlite:{}", data.join("ubtc.db").display()), 1)
            .await
            .unwrap();
    let signed = store
        .list_validations(&ubtc_store::ValidationFilter {
            status: Some(ubtc_core::ValidationStatus::Signed),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(signed.len(), 3, "{stdout}");
    for v in &signed {
        let json = store.get_bundle(v.id).await.unwrap().unwrap();
        let b = ProofBundle::from_json(json.as_bytes()).unwrap();
        assert!(b.reserves[0].descriptor.starts_with("wsh(sortedmulti(2,"));
        assert_eq!(b.approvals.len(), 3);
        assert!(
            b.approvals
                .iter()
                .filter(|a| a.decision == ApprovalDecision::Approved)
                .count()
                >= 2
        );
        ubtc_verify(&b);
    }
    // The demo's guardian processes went away with it.
    let approvals = std::fs::read_to_string(data.join("guardians/g1/approvals.jsonl")).unwrap();
    assert!(approvals.lines().count() >= 1);
}

/// The real worker with the coordinator as its signer: two of three guardians down →
/// retries, then the dead letter with each guardian's reason; an operator re-queues
/// it once they are back and the job completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_dead_letters_without_quorum_then_completes_when_back() {
    use std::sync::Arc;
    use ubtc_pipeline::{ChainPolicy, Monitor, Unlimited, Worker, WorkerConfig, WorkerTick};

    let mut net = Net::new(3, None).await;
    let db = tempfile::tempdir().unwrap();
    let store = ubtc_store::SqliteStore::connect(
        &format!("sqlite:{}", db.path().join("w.db").display()),
        4,
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    let monitor = Monitor::new(
        Arc::new(net.dev.clone()),
        store.clone(),
        Arc::new(Unlimited),
        ChainPolicy {
            min_payment_base_units: 1000,
            scan_max_blocks: 100,
        },
    );
    let worker = Worker::new(
        store.clone(),
        Arc::new(net.coordinator(2)),
        Arc::new(DevBitcoin::new(BTC_TIP)),
        WorkerConfig {
            worker_id: "w1".into(),
            lease_ms: 30_000,
            max_attempts: 2,
            backoff_base_ms: 0,
            backoff_max_ms: 0,
            network: BitcoinNetwork::Regtest,
            native_units: [(net.chain.clone(), "wei".to_owned())].into(),
        },
    );
    net.procs[1].kill();
    net.procs[2].kill();
    let tx = net.dev.submit_payment(
        &Payer::parse("0xb0b").unwrap(),
        1000,
        b"worker via guardians",
    );
    net.dev.mine(3);
    monitor.tick().await.unwrap();
    assert!(matches!(
        worker.tick().await.unwrap(),
        WorkerTick::Retrying(..)
    ));
    match worker.tick().await.unwrap() {
        WorkerTick::Failed(_, r) => {
            assert_eq!(r.code, "quorum_not_reached");
            assert!(r.detail.contains("g2: unreachable"), "{}", r.detail);
        }
        other => panic!("expected the dead letter, got {other:?}"),
    }
    let v = store.find_by_payment(None, tx.as_str()).await.unwrap()[0].clone();
    assert_eq!(v.status, ubtc_core::ValidationStatus::Failed);
    assert!(v.reason.unwrap().detail.contains("g3: unreachable"));

    net.restart(1);
    net.restart(2);
    store.requeue_failed(v.id, Timestamp::now()).await.unwrap();
    assert!(matches!(
        worker.tick().await.unwrap(),
        WorkerTick::Signed(_)
    ));
    let json = store.get_bundle(v.id).await.unwrap().unwrap();
    let b = ProofBundle::from_json(json.as_bytes()).unwrap();
    assert_eq!(b.approvals.len(), 3);
    ubtc_verify(&b);
}

/// `keys reserve-create` registers the 2-of-3 address in the configured database;
/// `keys reserve-retire` retires it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserve_create_and_retire() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<String> = (0..3)
        .map(|_| GuardianKey::generate().public_hex())
        .collect();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_ubtc"))
            .args(args)
            .env("UBTC_DATA_DIR", dir.path())
            .env_remove("UBTC_DATABASE_URL")
            .output()
            .unwrap()
    };
    let out = run(&[
        "keys",
        "reserve-create",
        "--threshold",
        "2",
        "--guardian",
        &keys[0],
        "--guardian",
        &keys[1],
        "--guardian",
        &keys[2],
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let address = stdout
        .lines()
        .find_map(|l| l.strip_prefix("address:"))
        .unwrap()
        .trim()
        .to_owned();
    assert!(stdout.contains("wsh(sortedmulti(2,"), "{stdout}");
    let store = ubtc_store::SqliteStore::connect(
        &format!("sqlite:{}", dir.path().join("ubtc.db").display()),
        1,
    )
    .await
    .unwrap();
    let active = store.list_reserve_addresses().await.unwrap();
    assert!(active.iter().any(|r| r.address == address));
    let out = run(&["keys", "reserve-retire", &address]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let active = store.list_reserve_addresses().await.unwrap();
    assert!(!active.iter().any(|r| r.address == address));
    // Retiring again is an error, not a silent success.
    assert!(!run(&["keys", "reserve-retire", &address]).status.success());
    // A bad key is refused.
    assert!(!run(&[
        "keys",
        "reserve-create",
        "--threshold",
        "1",
        "--guardian",
        "02zz"
    ])
    .status
    .success());
}

/// `ubtc worker` configured with `signer.kind = "guardians"` (2-of-3): a real worker
/// process signs queued validations through the three guardian processes, registers
/// the 2-of-3 reserve address at start, and every bundle verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_signs_through_guardians() {
    let net = Net::new(3, None).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The coordinator's key, in its own keystore; the passphrase in a file.
    let keystore_path = dir.path().join("coordinator.json");
    let pass_path = dir.path().join("coordinator.passphrase");
    std::fs::write(&pass_path, "coordinator pass\n").unwrap();
    let json = keystore::encrypt(
        &net.coordinator_key,
        &keystore::Passphrase::new("coordinator pass").unwrap(),
    )
    .unwrap();
    std::fs::write(&keystore_path, json).unwrap();

    // Confirmed payments on the chain the guardians read, queued through the store as
    // a monitor would queue them.
    let store =
        ubtc_store::SqliteStore::connect(&format!("sqlite:{}", data.join("ubtc.db").display()), 2)
            .await
            .unwrap();
    store.migrate().await.unwrap();
    let mut ids = Vec::new();
    for i in 0..3 {
        let tx = net.dev.submit_payment(
            &Payer::parse("0xa11ce").unwrap(),
            5_000,
            format!("worker through guardians {i}").as_bytes(),
        );
        net.dev.mine(3);
        let reference = PaymentRef {
            chain: net.chain.clone(),
            tx_hash: tx,
            index: 0,
        };
        let (p, _) = net.dev.payment(&reference).await.unwrap().unwrap();
        let id = store
            .record_detected(
                &ubtc_store::NewValidation {
                    id: ubtc_core::ValidationId::new(),
                    payment: reference,
                    payer: p.payer,
                    amount_base_units: p.amount_base_units,
                    message: p.raw_message,
                    block: p.block,
                    callback_url: None,
                    rejection: None,
                },
                Timestamp::now(),
            )
            .await
            .unwrap()
            .id();
        store
            .confirm_and_enqueue(id, 3, None, Timestamp::now())
            .await
            .unwrap();
        ids.push(id);
    }

    let guardians: String = net
        .procs
        .iter()
        .enumerate()
        .map(|(i, p)| {
            format!(
                "[[signer.guardians]]\nname = \"g{}\"\nurl = \"{}\"\npublic_key = \"{}\"\n",
                i + 1,
                p.url,
                p.key
            )
        })
        .collect();
    let config = dir.path().join("ubtc.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\npoll_ms = 100\nworkers = 2\n\
             [signer]\nkind = \"guardians\"\nthreshold = 2\ncoordinator_keystore = {:?}\n\
             coordinator_passphrase_file = {:?}\ntimeout_ms = 5000\n{guardians}",
            keystore_path.display().to_string(),
            pass_path.display().to_string(),
        ),
    )
    .unwrap();
    // A free port for the worker's metrics address, which also serves /v1/guardians.
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let worker_cmd = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ubtc"));
        cmd.arg("--config")
            .arg(&config)
            .arg("worker")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("UBTC_DATA_DIR", &data)
            .env("UBTC_SERVER_METRICS_LISTEN", metrics_addr.to_string())
            .env("UBTC_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        cmd
    };
    let worker = worker_cmd().stderr(Stdio::inherit()).spawn().unwrap();
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut worker = KillOnDrop(worker);

    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let mut signed = 0;
        for id in &ids {
            if store.get_validation(*id).await.unwrap().unwrap().status
                == ubtc_core::ValidationStatus::Signed
            {
                signed += 1;
            }
        }
        if signed == ids.len() {
            break;
        }
        if let Some(status) = worker.0.try_wait().unwrap() {
            panic!("the worker exited early: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {signed} of {} signed in time",
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The 2-of-3 address was registered at start, and it is what the bundles carry.
    let expected = net.coordinator(2);
    let reserves = store.list_reserve_addresses().await.unwrap();
    assert!(
        reserves
            .iter()
            .any(|r| r.address == expected.address() && r.descriptor == expected.descriptor()),
        "{reserves:?}"
    );
    for id in &ids {
        let json = store.get_bundle(*id).await.unwrap().unwrap();
        let b = ProofBundle::from_json(json.as_bytes()).unwrap();
        assert_eq!(b.reserves.len(), 1);
        assert_eq!(b.reserves[0].address, expected.address());
        assert!(b.reserves[0].descriptor.starts_with("wsh(sortedmulti(2,"));
        assert_eq!(b.approvals.len(), 3);
        assert!(
            b.approvals
                .iter()
                .filter(|a| a.decision == ApprovalDecision::Approved)
                .count()
                >= 2,
            "{:?}",
            b.approvals
        );
        assert!(ubtc_bitcoin::bundle::verify_bundle(&b).is_valid());
    }
    // Liveness as token holders see it: every guardian that answered was seen.
    let view: serde_json::Value = reqwest::get(format!("http://{metrics_addr}/v1/guardians"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(view["threshold"], 2);
    assert_eq!(view["reserve_address"], expected.address());
    // Public: the guardians' signing endpoints are not on it.
    assert!(!view.to_string().contains("http://"), "{view}");
    let guardians = view["guardians"].as_array().unwrap();
    assert_eq!(guardians.len(), 3);
    assert!(
        guardians
            .iter()
            .filter(|g| !g["last_seen"].is_null())
            .count()
            >= 2,
        "{view}"
    );
    // Each guardian recorded its own approvals (at least two of three per payment).
    let recorded: usize = net.procs.iter().map(|p| p.approvals().len()).sum();
    assert!(recorded >= 2 * ids.len(), "{recorded} approvals recorded");
    drop(worker);

    // A wrong coordinator passphrase stops the start with the keystore's error.
    std::fs::write(&pass_path, "not the passphrase\n").unwrap();
    let out = worker_cmd().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("wrong passphrase"), "{stderr}");
    // A retired reserve address is not signed for again: the worker refuses to start.
    std::fs::write(&pass_path, "coordinator pass\n").unwrap();
    assert!(store
        .retire_reserve_address(expected.address(), Timestamp::now())
        .await
        .unwrap());
    let out = worker_cmd().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("was retired"), "{stderr}");
}

/// Sends `signing` for `statement` to guardian `i` as `/v1/sign`, sealed with the
/// coordinator's key, and opens the answer with that guardian's key.
async fn ask(net: &Net, i: usize, statement: &Statement, signing: SigningRequest) -> SignAnswer {
    let c = net.coordinator(2);
    let now = Timestamp::now();
    let req = SignRequest {
        request_id: uuid::Uuid::new_v4(),
        issued_at: now,
        expires_at: now.plus_millis(30_000),
        payment: statement.payment.clone(),
        statement: statement.clone(),
        signing,
    };
    let answer: Envelope = reqwest::Client::new()
        .post(format!("{}/v1/sign", net.procs[i].url))
        .json(&c.seal_request(&req).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    protocol::open(ANSWER_TAG, &answer, &[net.procs[i].key])
        .unwrap()
        .0
}

fn code(a: &SignAnswer) -> Option<RefusalCode> {
    match &a.outcome {
        Outcome::Refused { code, .. } => Some(*code),
        Outcome::Approved { .. } => None,
    }
}

/// The one-guardian-plus-coordinator forgery against real `ubtc guardian`
/// processes: the attacker holds the coordinator's key and asks honest guardians to
/// sign for a threshold-1 reserve holding their keys and its own, for keys they do not
/// know, in the `full` form with a lock time, and a proof of funds over a UTXO nobody's
/// Bitcoin view has. Every one is refused with its code and nothing is recorded.
#[tokio::test]
async fn guardian_processes_refuse_the_coordinator_key_forgery() {
    let net = Net::new(3, None).await;
    let s = net.statement("twenty million BTC").await;
    let text = s.text();
    let keys: Vec<bitcoin::CompressedPublicKey> = net
        .procs
        .iter()
        .map(|p| bitcoin::CompressedPublicKey(p.key))
        .collect();
    let attacker = bitcoin::CompressedPublicKey(GuardianKey::generate().public());
    let simple = |policy: &SortedMulti| {
        SigningRequest::new(
            policy,
            Wrapping::Wsh,
            bitcoin::Network::Regtest,
            text.as_bytes(),
            Form::Simple,
        )
        .unwrap()
    };
    let mut with_attacker = keys.clone();
    with_attacker.push(attacker);
    let forged = SortedMulti::new(1, with_attacker).unwrap();
    let unknown = SortedMulti::new(2, vec![keys[0], attacker]).unwrap();
    for i in 0..3 {
        assert_eq!(
            code(&ask(&net, i, &s, simple(&forged)).await),
            Some(RefusalCode::UnknownReserve)
        );
        assert_eq!(
            code(&ask(&net, i, &s, simple(&unknown)).await),
            Some(RefusalCode::UnknownReserve)
        );
    }
    let (reserve, wrapping) = SortedMulti::parse_descriptor(&net.reserve).unwrap();
    let locked = SigningRequest::with_params(
        &reserve,
        wrapping,
        bitcoin::Network::Regtest,
        text.as_bytes(),
        Form::Full,
        ToSignParams {
            version: 2,
            lock_time: 900_000,
            sequence: 0xffff_fffe,
        },
        &[],
    )
    .unwrap();
    assert_eq!(
        code(&ask(&net, 0, &s, locked).await),
        Some(RefusalCode::FormNotAllowed)
    );
    let invented = ubtc_core::bundle::Utxo {
        txid: "ab".repeat(32),
        vout: 0,
        amount_sats: 2_000_000_000_000_000,
        script_pubkey_hex: reserve.script_pubkey(wrapping).to_hex_string(),
    };
    let pof = SigningRequest::proof_of_funds(
        &reserve,
        wrapping,
        bitcoin::Network::Regtest,
        text.as_bytes(),
        &[invented],
    )
    .unwrap();
    // g1 does not sign proofs of funds at all; g3 does, over UTXOs it sees.
    assert_eq!(
        code(&ask(&net, 0, &s, pof.clone()).await),
        Some(RefusalCode::FormNotAllowed)
    );
    assert_eq!(
        code(&ask(&net, 2, &s, pof).await),
        Some(RefusalCode::UtxoSetMismatch)
    );
    for p in &net.procs {
        assert!(p.approvals().is_empty(), "a refused request was recorded");
    }
    // The honest request for the same statement is still signed 2-of-3.
    let signed = net.coordinator(2).sign(&s).await.unwrap();
    assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle(&s, signed)).is_valid());
}

/// Starts a guardian with its stderr in `log`; `Err` with that log when it exits
/// before listening.
fn start_logged(config: &Path, log: &Path) -> Result<(Child, String), String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("guardian")
        .arg("--config")
        .arg(config)
        .env("UBTC_GUARDIAN_PASSPHRASE", PASSPHRASE)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for line in lines.by_ref() {
        if let Some(a) = line.unwrap().strip_prefix("guardian listening on ") {
            let url = format!("http://{a}");
            std::thread::spawn(move || for _ in lines {});
            return Ok((child, url));
        }
    }
    let _ = child.wait();
    Err(std::fs::read_to_string(log).unwrap())
}

/// A guardian process whose approval record ends in a torn line (a crash mid-write):
/// the restart cuts the fragment and says so, two more approvals are appended after
/// it, and the next restart finds all three: it answers the first payment's statement
/// with its recorded signature and refuses another statement for it. A damaged line in
/// the middle stops the guardian with the file and line named.
#[tokio::test]
async fn torn_approval_record_is_cut_and_no_approval_is_forgotten() {
    let mut net = Net::new(3, None).await;
    let c = net.coordinator(2);
    let s1 = net.statement("before the crash").await;
    let first = ask(&net, 0, &s1, c.signing_request(&s1).unwrap()).await;
    let Outcome::Approved { partial: p1, .. } = first.outcome.clone() else {
        panic!("{first:?}")
    };
    net.procs[0].kill();
    let record = net.procs[0].dir.join("approvals.jsonl");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&record)
        .unwrap();
    std::io::Write::write_all(&mut f, b"{\"payment\":{\"chain\":\"dev\",\"tx_ha").unwrap();
    drop(f);

    let log = net.procs[0].dir.join("stderr.log");
    let (child, url) = start_logged(&net.procs[0].config, &log).unwrap();
    net.procs[0].child = child;
    assert_eq!(url, net.procs[0].url);
    let stderr = std::fs::read_to_string(&log).unwrap();
    assert!(stderr.contains("torn last line"), "{stderr}");
    assert!(std::fs::read_to_string(&record).unwrap().ends_with("}\n"));
    let s2 = net.statement("after the crash, one").await;
    let s3 = net.statement("after the crash, two").await;
    for s in [&s2, &s3] {
        assert_eq!(
            code(&ask(&net, 0, s, c.signing_request(s).unwrap()).await),
            None
        );
    }

    net.procs[0].kill();
    let (child, _) = start_logged(&net.procs[0].config, &log).unwrap();
    net.procs[0].child = child;
    let recorded = net.procs[0].approvals();
    let digests: Vec<&str> = recorded
        .iter()
        .map(|a| a.statement_digest.as_str())
        .collect();
    assert_eq!(
        digests,
        vec![
            s1.digest_hex().as_str(),
            s2.digest_hex().as_str(),
            s3.digest_hex().as_str()
        ]
    );
    // Nothing forgotten: the first approval is answered again, and no other statement
    // for its payment is signed.
    match ask(&net, 0, &s1, c.signing_request(&s1).unwrap())
        .await
        .outcome
    {
        Outcome::Approved { partial, .. } => assert_eq!(partial, p1),
        other => panic!("{other:?}"),
    }
    let mut other = s1.clone();
    other.request_id = uuid::Uuid::new_v4();
    assert_eq!(
        code(&ask(&net, 0, &other, c.signing_request(&other).unwrap()).await),
        Some(RefusalCode::ConflictingStatement)
    );

    // A damaged line in the middle (an approval glued to a fragment): no start.
    net.procs[0].kill();
    let text = std::fs::read_to_string(&record).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    std::fs::write(
        &record,
        format!(
            "{}\n{{\"payment\":{{\"cha{}\n{}\n",
            lines[0], lines[1], lines[2]
        ),
    )
    .unwrap();
    let err = start_logged(&net.procs[0].config, &log).unwrap_err();
    assert!(err.contains("approvals.jsonl"), "{err}");
    assert!(err.contains("damaged at line 2"), "{err}");
}
