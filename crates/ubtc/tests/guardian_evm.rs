//! Guardians watching an EVM chain through their own nodes: real `ubtc guardian`
//! processes with `kind = "evm"` chain views, each pointed at a real anvil node
//! (`npm ci --prefix tools/anvil`) with the `PaymentRouter` of `contracts/` deployed.
//!
//! Guardians g1 and g2 read the anvil the payments are made on; g3 reads another anvil
//! (the same contract at the same address, but none of the payments), as a guardian
//! whose node has not seen a payment would. What this shows: a payment on the watched
//! chain is signed 2-of-3 and the bundle verifies; g3 refuses it as `payment_unknown`;
//! a payment too shallow for the guardians' own confirmation rule is refused as
//! `payment_unconfirmed`; a payment reorganised away is refused as `payment_unknown`,
//! and once the same transaction is mined again the monitor takes the dropped
//! validation back and the worker gets it signed through the guardians.
//! The anvil harness is the chains crate's test harness, included by path.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

#[path = "../../chains/tests/common/mod.rs"]
mod anvil;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::PublicKey;
use ubtc_chains::dev::DevBitcoin;
use ubtc_chains::evm::EvmAdapter;
use ubtc_chains::ChainAdapter;
use ubtc_core::bundle::{
    ApprovalDecision, BitcoinNetwork, PaymentInfo, ProofBundle, BUNDLE_FORMAT,
    BUNDLE_VERSION_LEGACY,
};
use ubtc_core::payment::TxHash;
use ubtc_core::{BlockStamp, PaymentRef, Statement, Timestamp, ValidationStatus};
use ubtc_guardian::{keystore, Coordinator, CoordinatorSettings, GuardianEndpoint, GuardianKey};
use ubtc_pipeline::{ReserveSigner, SignFailure, Worker, WorkerConfig, WorkerTick};
use ubtc_store::Store;

const PASSPHRASE: &str = "test passphrase for evm guardians";
/// The dev Bitcoin tip of the worker and of every guardian's own Bitcoin view.
const BTC_TIP: u32 = 850_000;
/// The depth every guardian (and the monitor) requires on the EVM chain.
const CONFIRMATIONS: u64 = 3;

struct Guardian {
    child: Child,
    url: String,
    key: PublicKey,
}

impl Drop for Guardian {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `evm` chain view of `guardian.toml`.
struct View<'a> {
    url: &'a str,
    chain_id: u64,
    router: &'a str,
}

impl<'a> View<'a> {
    fn of(node: &'a anvil::Deployed) -> Self {
        Self {
            url: &node.anvil.url,
            chain_id: anvil::ANVIL_CHAIN_ID,
            router: &node.router,
        }
    }
}

/// The `wsh(sortedmulti(M, …))` reserve of `keys`, as the coordinator sends it and a
/// guardian's `[policy]` names it.
fn reserve_of(threshold: usize, keys: &[&GuardianKey]) -> String {
    let keys = keys
        .iter()
        .map(|k| bitcoin::CompressedPublicKey(k.public()))
        .collect();
    ubtc_bitcoin::multisig::SortedMulti::new(threshold, keys)
        .unwrap()
        .descriptor(ubtc_bitcoin::multisig::Wrapping::Wsh)
}

/// Writes `guardian.toml` with one `evm` chain view and a `[policy]` naming `reserve`,
/// and starts `ubtc guardian --config` on a free port with `key`. `Err` with its
/// standard error when it exits instead.
fn start_guardian(
    dir: &Path,
    coordinator: &GuardianKey,
    view: View<'_>,
    key: &GuardianKey,
    reserve: &str,
) -> Result<Guardian, String> {
    std::fs::create_dir_all(dir).unwrap();
    let ks = dir.join("keystore.json");
    let json = keystore::encrypt(key, &keystore::Passphrase::new(PASSPHRASE).unwrap()).unwrap();
    std::fs::write(&ks, json).unwrap();
    let config = dir.join("guardian.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nkeystore = {:?}\napprovals = {:?}\ncoordinators = [\"{}\"]\n\
             [bitcoin]\nbackend = \"dev\"\ndev_height = {BTC_TIP}\n\
             [policy]\nreserves = [\"{reserve}\"]\n\
             [[chains]]\nname = \"anvil\"\nkind = \"evm\"\nurl = \"{}\"\nchain_id = {}\n\
             payment_contract = \"{}\"\nconfirmations = {CONFIRMATIONS}\n",
            ks.display().to_string(),
            dir.join("approvals.jsonl").display().to_string(),
            coordinator.public_hex(),
            view.url,
            view.chain_id,
            view.router,
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("guardian")
        .arg("--config")
        .arg(&config)
        .env("UBTC_GUARDIAN_PASSPHRASE", PASSPHRASE)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let addr = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(a) = line.strip_prefix("guardian listening on ") {
                    break a.to_owned();
                }
            }
            _ => {
                let mut err = String::new();
                let _ = child.stderr.take().unwrap().read_to_string(&mut err);
                let _ = child.wait();
                return Err(err);
            }
        }
    };
    std::thread::spawn(move || for _ in lines {});
    // Its log goes to standard error: drained so that a chatty guardian never blocks.
    let mut stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    Ok(Guardian {
        child,
        url: format!("http://{addr}"),
        key: key.public(),
    })
}

struct Net {
    /// The chain the payments are made on (g1 and g2 watch it).
    paid: anvil::Deployed,
    /// Another node: same contract, same address, none of the payments (g3 watches it).
    _other: anvil::Deployed,
    coordinator_key: GuardianKey,
    guardians: Vec<Guardian>,
    tmp: tempfile::TempDir,
}

impl Net {
    async fn start() -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let paid = anvil::Deployed::start().await.unwrap();
        let other = anvil::Deployed::start().await.unwrap();
        // Deployed by the same account with the same nonce: the same address on both,
        // so g3's configuration is as valid as the others'.
        assert_eq!(paid.router, other.router);
        let tmp = tempfile::tempdir().unwrap();
        let coordinator_key = GuardianKey::generate();
        let keys: Vec<GuardianKey> = (0..3).map(|_| GuardianKey::generate()).collect();
        let reserve = reserve_of(2, &keys.iter().collect::<Vec<_>>());
        let guardians = [&paid, &paid, &other]
            .iter()
            .zip(&keys)
            .enumerate()
            .map(|(i, (node, key))| {
                start_guardian(
                    &tmp.path().join(format!("g{}", i + 1)),
                    &coordinator_key,
                    View::of(node),
                    key,
                    &reserve,
                )
                .unwrap()
            })
            .collect();
        Self {
            paid,
            _other: other,
            coordinator_key,
            guardians,
            tmp,
        }
    }

    /// A coordinator of the guardians' 2-of-3 reserve that reaches only the guardians
    /// in `which`: the others stand behind an address where nothing listens, so they
    /// count as down. Every guardian names that one reserve in its `[policy]`, so a
    /// coordinator of any other set of keys would be refused as `unknown_reserve`.
    fn coordinator_of(&self, which: &[usize]) -> Coordinator {
        let endpoints = (0..self.guardians.len())
            .map(|i| GuardianEndpoint {
                name: format!("g{}", i + 1),
                url: if which.contains(&i) {
                    self.guardians[i].url.clone()
                } else {
                    format!("http://127.0.0.1:{}", anvil::free_port())
                },
                key: self.guardians[i].key,
            })
            .collect();
        Coordinator::new(
            self.coordinator_key.clone(),
            endpoints,
            2,
            CoordinatorSettings {
                network: bitcoin::Network::Regtest,
                timeout: Duration::from_secs(10),
                request_ttl: Duration::from_secs(60),
            },
        )
        .unwrap()
    }

    fn adapter(&self) -> EvmAdapter {
        EvmAdapter::new(self.paid.config(CONFIRMATIONS)).unwrap()
    }

    /// The statement for a contract payment, built from the paid chain as the
    /// coordinator's monitor reads it.
    async fn statement(&self, tx: &str) -> Statement {
        let reference = PaymentRef {
            chain: anvil::chain(),
            tx_hash: TxHash::parse(&tx.to_lowercase()).unwrap(),
            index: 0,
        };
        let (p, _) = self.adapter().payment(&reference).await.unwrap().unwrap();
        Statement::new(
            reference,
            p.payer,
            p.message.unwrap(),
            BlockStamp::new(BTC_TIP, &DevBitcoin::hash_at(BTC_TIP)).unwrap(),
            uuid::Uuid::new_v4(),
        )
    }
}

fn refusal_detail(r: Result<ubtc_pipeline::SignedStatement, SignFailure>) -> String {
    match r {
        Err(SignFailure::Retry(r)) => {
            assert_eq!(r.code, "quorum_not_reached");
            r.detail
        }
        other => panic!("expected no quorum, got {other:?}"),
    }
}

fn bundle(statement: &Statement, signed: ubtc_pipeline::SignedStatement) -> ProofBundle {
    ProofBundle {
        format: BUNDLE_FORMAT.into(),
        // The guardians' signatures are what this test checks; a version 1 bundle
        // carries no registry (the registry's own tests pin one).
        version: BUNDLE_VERSION_LEGACY,
        network: BitcoinNetwork::Regtest,
        statement: statement.clone(),
        statement_text: statement.text(),
        payment: PaymentInfo {
            amount_base_units: 5_000,
            unit: "wei".into(),
            block_number: 1,
            block_hash: "00".into(),
        },
        reserves: signed.reserves,
        proof_of_funds: None,
        supply: Vec::new(),
        reserve_figures: None,
        approvals: signed.approvals,
        registry: Vec::new(),
        created_at: Timestamp::now(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardians_sign_evm_payments_their_own_nodes_confirm() {
    let net = Net::start().await;
    let tx = net
        .paid
        .pay_contract(1, 5_000, b"paid on the watched chain")
        .await
        .unwrap();

    // One block deep of three: both guardians of the paid chain refuse on their own
    // rule; nothing is recorded.
    let s = net.statement(&tx).await;
    let detail = refusal_detail(net.coordinator_of(&[0, 1]).sign(&s).await);
    assert!(detail.contains("g1: payment_unconfirmed"), "{detail}");
    assert!(detail.contains("g2: payment_unconfirmed"), "{detail}");

    net.paid.anvil.mine(CONFIRMATIONS).await.unwrap();
    let signed = net.coordinator_of(&[0, 1, 2]).sign(&s).await.unwrap();
    let approved: Vec<&str> = signed
        .approvals
        .iter()
        .filter(|a| a.decision == ApprovalDecision::Approved)
        .map(|a| a.guardian_key.as_str())
        .collect();
    let g1 = net.guardians[0].key.to_string();
    let g2 = net.guardians[1].key.to_string();
    assert_eq!(approved.len(), 2, "{:?}", signed.approvals);
    assert!(approved.contains(&g1.as_str()) && approved.contains(&g2.as_str()));
    let b = bundle(&s, signed);
    assert!(ubtc_bitcoin::bundle::verify_bundle(&b).is_valid());
    ubtc_verify(&b);

    // g3's node never saw the payment: it refuses, alone or with a statement that the
    // others signed.
    let detail = refusal_detail(net.coordinator_of(&[2]).sign(&s).await);
    assert!(detail.contains("g3: payment_unknown"), "{detail}");

    // A statement that lies about the payment (another message under the same
    // transaction) is refused by the guardians that have the payment.
    let mut forged = s.clone();
    forged.message = ubtc_core::StatementMessage::parse(b"not what was paid for").unwrap();
    let detail = refusal_detail(net.coordinator_of(&[0, 1]).sign(&forged).await);
    assert!(detail.contains("g1: statement_mismatch"), "{detail}");
    // A second payment claimed in a transaction that made one: nothing at that index.
    let mut invented = s.clone();
    invented.payment.index = 1;
    let detail = refusal_detail(net.coordinator_of(&[0, 1]).sign(&invented).await);
    assert!(detail.contains("g1: payment_unknown"), "{detail}");
    // Only the signed statement was recorded, by the two guardians that approved it.
    let recorded = |g: &str| {
        std::fs::read_to_string(net.tmp.path().join(g).join("approvals.jsonl"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!((recorded("g1"), recorded("g2"), recorded("g3")), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reorged_payment_is_refused_then_signed_once_mined_again() {
    let net = Net::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = anvil::sqlite_store(dir.path()).await.unwrap();
    let monitor = anvil::monitor(Arc::new(net.adapter()), store.clone(), 1_000, 50);
    let coordinator = Arc::new(net.coordinator_of(&[0, 1, 2]));
    let worker = Worker::new(
        store.clone(),
        coordinator.clone() as Arc<dyn ReserveSigner>,
        Arc::new(DevBitcoin::new(BTC_TIP)),
        WorkerConfig {
            worker_id: "w1".into(),
            lease_ms: 30_000,
            max_attempts: 3,
            backoff_base_ms: 0,
            backoff_max_ms: 0,
            network: BitcoinNetwork::Regtest,
            native_units: [(anvil::chain(), "wei".to_owned())].into(),
        },
    );
    anvil::tick_until_idle(&monitor).await.unwrap();

    let snap = net.paid.anvil.snapshot().await.unwrap();
    let raw = net
        .paid
        .sign_contract_payment(2, 5_000, b"reorged, then mined again")
        .await
        .unwrap();
    let tx = net.paid.anvil.send_raw(&raw).await.unwrap();
    assert_eq!(anvil::tick_until_idle(&monitor).await.unwrap().detected, 1);
    let s = net.statement(&tx).await;

    // The block holding it is reorganised away before it is deep enough.
    net.paid.anvil.revert(&snap).await.unwrap();
    net.paid.anvil.mine(CONFIRMATIONS + 1).await.unwrap();
    assert_eq!(anvil::tick_until_idle(&monitor).await.unwrap().dropped, 1);
    let id = store
        .find_by_payment(None, &tx.to_lowercase())
        .await
        .unwrap()[0]
        .id;
    assert_eq!(
        store.get_validation(id).await.unwrap().unwrap().status,
        ValidationStatus::Dropped
    );
    // Whoever asks (a coordinator with a stale copy, say): the guardians' nodes do not
    // have it any more.
    let detail = refusal_detail(coordinator.sign(&s).await);
    assert!(detail.contains("g1: payment_unknown"), "{detail}");
    assert!(detail.contains("g2: payment_unknown"), "{detail}");
    assert!(matches!(worker.tick().await.unwrap(), WorkerTick::Idle));

    // The same signed transaction is mined again: the same validation is detected
    // again, confirmed, and signed through the guardians.
    assert_eq!(net.paid.anvil.send_raw(&raw).await.unwrap(), tx);
    assert_eq!(anvil::tick_until_idle(&monitor).await.unwrap().remined, 1);
    assert_eq!(
        store.get_validation(id).await.unwrap().unwrap().status,
        ValidationStatus::Detected
    );
    net.paid.anvil.mine(CONFIRMATIONS).await.unwrap();
    assert_eq!(anvil::tick_until_idle(&monitor).await.unwrap().queued, 1);
    match worker.tick().await.unwrap() {
        WorkerTick::Signed(signed) => assert_eq!(signed, id),
        other => panic!("expected the re-mined payment signed, got {other:?}"),
    }
    let v = store.get_validation(id).await.unwrap().unwrap();
    assert_eq!(v.status, ValidationStatus::Signed);
    let b =
        ProofBundle::from_json(store.get_bundle(id).await.unwrap().unwrap().as_bytes()).unwrap();
    assert_eq!(
        b.payment.block_hash, v.block.hash,
        "the bundle names the new block"
    );
    assert!(
        b.approvals
            .iter()
            .filter(|a| a.decision == ApprovalDecision::Approved)
            .count()
            >= 2
    );
    ubtc_verify(&b);
    assert_eq!(
        store
            .find_by_payment(None, &tx.to_lowercase())
            .await
            .unwrap()
            .len(),
        1
    );
}

/// A guardian checks its EVM node before it serves: a node that reports another chain
/// id, or no contract at the configured router, stops the start with the reason; a
/// node that cannot be reached yet does not (requests are refused as
/// `chain_unavailable` until it answers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guardian_checks_its_node_at_start() {
    let node = anvil::Deployed::start().await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let coordinator = GuardianKey::generate();
    let key = GuardianKey::generate();
    let reserve = reserve_of(1, &[&key]);
    let mut view = View::of(&node);
    view.chain_id = 1;
    let err = start_guardian(&tmp.path().join("id"), &coordinator, view, &key, &reserve)
        .err()
        .unwrap();
    assert!(
        err.contains("chain id 31337") && err.contains("says 1"),
        "{err}"
    );

    let mut view = View::of(&node);
    let not_a_contract = node.payment_address.clone();
    view.router = &not_a_contract;
    let err = start_guardian(&tmp.path().join("code"), &coordinator, view, &key, &reserve)
        .err()
        .unwrap();
    assert!(err.contains("no contract code"), "{err}");

    let down = format!("http://127.0.0.1:{}", anvil::free_port());
    let mut view = View::of(&node);
    view.url = &down;
    let g = start_guardian(&tmp.path().join("down"), &coordinator, view, &key, &reserve).unwrap();
    let c = Coordinator::new(
        coordinator.clone(),
        vec![GuardianEndpoint {
            name: "g1".into(),
            url: g.url.clone(),
            key: g.key,
        }],
        1,
        CoordinatorSettings {
            network: bitcoin::Network::Regtest,
            timeout: Duration::from_secs(10),
            request_ttl: Duration::from_secs(60),
        },
    )
    .unwrap();
    let tx = node.pay_contract(1, 5_000, b"node down").await.unwrap();
    node.anvil.mine(CONFIRMATIONS).await.unwrap();
    let reference = PaymentRef {
        chain: anvil::chain(),
        tx_hash: TxHash::parse(&tx.to_lowercase()).unwrap(),
        index: 0,
    };
    let adapter = EvmAdapter::new(node.config(CONFIRMATIONS)).unwrap();
    let (p, _) = adapter.payment(&reference).await.unwrap().unwrap();
    let s = Statement::new(
        reference,
        p.payer,
        p.message.unwrap(),
        BlockStamp::new(BTC_TIP, &DevBitcoin::hash_at(BTC_TIP)).unwrap(),
        uuid::Uuid::new_v4(),
    );
    let detail = refusal_detail(c.sign(&s).await);
    assert!(detail.contains("g1: chain_unavailable"), "{detail}");
}

/// The whole path as deployed: a real `ubtc worker` process monitors the anvil chain
/// and signs with `[signer] kind = "guardians"` through the three guardian processes,
/// each reading its own node. Every payment ends up signed 2-of-3 by g1 and g2 (g3's
/// node never has the payments) and its bundle passes `ubtc verify`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_process_signs_evm_payments_through_guardians() {
    let net = Net::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let keystore_path = dir.path().join("coordinator.json");
    let pass_path = dir.path().join("coordinator.passphrase");
    std::fs::write(&pass_path, "coordinator pass\n").unwrap();
    let json = keystore::encrypt(
        &net.coordinator_key,
        &keystore::Passphrase::new("coordinator pass").unwrap(),
    )
    .unwrap();
    std::fs::write(&keystore_path, json).unwrap();
    let guardians: String = net
        .guardians
        .iter()
        .enumerate()
        .map(|(i, g)| {
            format!(
                "[[signer.guardians]]\nname = \"g{}\"\nurl = \"{}\"\npublic_key = \"{}\"\n",
                i + 1,
                g.url,
                g.key
            )
        })
        .collect();
    let config = dir.path().join("ubtc.toml");
    std::fs::write(
        &config,
        format!(
            "[pipeline]\npoll_ms = 100\nworkers = 1\n\
             [[chains]]\nname = \"anvil\"\nkind = \"evm\"\nrpc_url = \"{}\"\nchain_id = {}\n\
             payment_contract = \"{}\"\nmin_payment = \"1000\"\nconfirmations = {CONFIRMATIONS}\n\
             start_block = {}\npoll_ms = 100\n\
             [signer]\nkind = \"guardians\"\nthreshold = 2\ncoordinator_keystore = {:?}\n\
             coordinator_passphrase_file = {:?}\ntimeout_ms = 10000\n{guardians}",
            net.paid.anvil.url,
            anvil::ANVIL_CHAIN_ID,
            net.paid.router,
            net.paid.deployed_at,
            keystore_path.display().to_string(),
            pass_path.display().to_string(),
        ),
    )
    .unwrap();
    struct KillOnDrop(Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut worker = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_ubtc"))
            .arg("--config")
            .arg(&config)
            .arg("worker")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("UBTC_DATA_DIR", &data)
            .env("UBTC_LOG_LEVEL", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );

    let mut txs = Vec::new();
    for i in 0..3 {
        let tx = net
            .paid
            .pay_contract(1 + i, 5_000, format!("worker on anvil {i}").as_bytes())
            .await
            .unwrap();
        txs.push(tx.to_lowercase());
    }
    net.paid.anvil.mine(CONFIRMATIONS).await.unwrap();

    // The worker creates the database: wait for it, then for every payment signed.
    let db = data.join("ubtc.db");
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    let store = loop {
        if db.exists() {
            if let Ok(s) =
                ubtc_store::SqliteStore::connect(&format!("sqlite:{}", db.display()), 1).await
            {
                break s;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no database");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut ids = Vec::new();
    for tx in &txs {
        let id = loop {
            if let Some(v) = store
                .find_by_payment(None, tx)
                .await
                .ok()
                .and_then(|v| v.into_iter().next())
            {
                if v.status == ValidationStatus::Signed {
                    break v.id;
                }
                assert!(
                    !matches!(
                        v.status,
                        ValidationStatus::Failed | ValidationStatus::Rejected
                    ),
                    "{tx}: {:?} {:?}",
                    v.status,
                    v.reason
                );
            }
            if let Some(status) = worker.0.try_wait().unwrap() {
                panic!("the worker exited early: {status}");
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{tx} not signed in time"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        ids.push(id);
    }
    let g1 = net.guardians[0].key.to_string();
    let g2 = net.guardians[1].key.to_string();
    for id in ids {
        let json = store.get_bundle(id).await.unwrap().unwrap();
        let b = ProofBundle::from_json(json.as_bytes()).unwrap();
        let approved: Vec<&str> = b
            .approvals
            .iter()
            .filter(|a| a.decision == ApprovalDecision::Approved)
            .map(|a| a.guardian_key.as_str())
            .collect();
        assert_eq!(approved.len(), 2, "{:?}", b.approvals);
        assert!(approved.contains(&g1.as_str()) && approved.contains(&g2.as_str()));
        assert_eq!(b.statement.payment.chain, anvil::chain());
        ubtc_verify(&b);
    }
}
