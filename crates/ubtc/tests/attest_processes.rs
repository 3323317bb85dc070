//! Reserve attestations made by real `ubtc guardian` processes on loopback ports, each
//! with its own dev Bitcoin view (`[[bitcoin.dev_utxos]]`) and its own view of the dev
//! chain's token supply (served from this test process, as the demo serves its dev
//! chain). No Bitcoin node can run here: the dev Bitcoin backend stands in for each
//! guardian's node.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::PublicKey;
use tokio_util::sync::CancellationToken;
use ubtc_bitcoin::attestation::{verify_attestation, GuardianSet, VerifyOptions};
use ubtc_bitcoin::multisig::{SortedMulti, Wrapping};
use ubtc_chains::dev::{DevBitcoin, DevChain, DevSupply};
use ubtc_chains::SupplySource;
use ubtc_core::attestation::{
    AttestationContent, AttestedBlock, AttestedReserve, AttestedSupply, RegistryRef,
    ReserveAttestation, ReserveStatus,
};
use ubtc_core::bundle::{BitcoinNetwork, Utxo};
use ubtc_core::{ChainId, Timestamp};
use ubtc_guardian::coordinator_attest::{AttestCoordinator, AttestRoundError, AttestationSigner};
use ubtc_guardian::record::JsonLines;
use ubtc_guardian::{keystore, GuardianEndpoint, GuardianKey};

const PASSPHRASE: &str = "test passphrase for attesting guardians";
const BTC_TIP: u32 = 850_000;
const SUPPLY_SATS: u64 = 200_000_000;

struct Proc {
    child: Child,
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

    fn records(&self) -> Vec<ubtc_guardian::attest::AttestRecord> {
        let (_, records) = JsonLines::<ubtc_guardian::attest::AttestRecord>::open(
            &self.dir.join("attestations.jsonl"),
        )
        .unwrap();
        records
    }
}

fn start(config: &Path) -> (Child, String, PublicKey) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("guardian")
        .arg("--config")
        .arg(config)
        .env("UBTC_GUARDIAN_PASSPHRASE", PASSPHRASE)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
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

/// A UTXO of the reserve, with a txid made from `n`.
fn utxo(n: u32, amount_sats: u64, script_hex: &str) -> Utxo {
    Utxo {
        txid: sha256::Hash::hash(format!("reserve funding {n}").as_bytes()).to_string(),
        vout: n % 3,
        amount_sats,
        script_pubkey_hex: script_hex.to_owned(),
    }
}

/// A guardian's Bitcoin view of the reserve, from the true UTXOs and their script.
type View = fn(&[Utxo], &str) -> Vec<Utxo>;

struct Net {
    chain: ChainId,
    dev: DevChain,
    coordinator_key: GuardianKey,
    descriptor: String,
    address: String,
    utxos: Vec<Utxo>,
    /// The registry version every guardian serves (`[attest] registry_file`).
    registry: RegistryRef,
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
    /// Three guardians of a 2-of-3 reserve; `views[i]` edits guardian i's Bitcoin view
    /// of the reserve's UTXOs (the true set by default).
    async fn new(views: [View; 3]) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chain = ChainId::parse("dev").unwrap();
        let dev = DevChain::new(chain.clone(), "0xc0ffee", 2);
        let cancel = CancellationToken::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let supply_url = format!("http://{}", listener.local_addr().unwrap());
        let source: Arc<dyn SupplySource> = Arc::new(DevSupply::new(dev.clone(), SUPPLY_SATS));
        tokio::spawn(ubtc_guardian::server::serve(
            listener,
            ubtc_guardian::attest::dev_supply_router(HashMap::from([(chain.clone(), source)])),
            cancel.clone(),
        ));
        let tmp = tempfile::tempdir().unwrap();
        let coordinator_key = GuardianKey::generate();
        let mut keys = Vec::new();
        for i in 0..3 {
            let dir = tmp.path().join(format!("g{i}"));
            std::fs::create_dir_all(&dir).unwrap();
            let pass = keystore::Passphrase::new(PASSPHRASE).unwrap();
            keys.push(keystore::create(&dir.join("keystore.json"), &pass).unwrap());
        }
        let policy = SortedMulti::new(
            2,
            keys.iter()
                .map(|k| bitcoin::CompressedPublicKey(k.public()))
                .collect(),
        )
        .unwrap();
        let descriptor = policy.descriptor(Wrapping::Wsh);
        let address = policy
            .address(bitcoin::Network::Regtest, Wrapping::Wsh)
            .to_string();
        let script = policy.script_pubkey(Wrapping::Wsh).to_hex_string();
        let utxos: Vec<Utxo> = [150_000_000, 75_000_000, 25_000_000]
            .iter()
            .enumerate()
            .map(|(i, a)| utxo(i as u32, *a, &script))
            .collect();
        // Registry version 1 of this reserve, signed 2-of-3, exported as the guardians
        // read it.
        let mut v1 = ubtc_bitcoin::registry::propose(
            None,
            ubtc_core::bundle::BitcoinNetwork::Regtest,
            keys.iter().map(GuardianKey::public_hex).collect(),
            2,
            &[ubtc_bitcoin::registry::ProposedReserve {
                address: address.clone(),
                descriptor: descriptor.clone(),
                active: true,
            }],
        )
        .unwrap();
        for k in &keys[..2] {
            let signature = k.sign_registry(&v1);
            ubtc_bitcoin::registry::add_signature(&mut v1, signature);
        }
        let registry_file = tmp.path().join("registry.json");
        std::fs::write(
            &registry_file,
            serde_json::to_vec(&serde_json::json!({ "versions": [&v1] })).unwrap(),
        )
        .unwrap();
        let registry = RegistryRef {
            version: 1,
            fingerprint: v1.fingerprint(),
        };
        let mut procs = Vec::new();
        for (i, view) in views.iter().enumerate() {
            let dir = tmp.path().join(format!("g{i}"));
            let mut toml = format!(
                "listen = \"127.0.0.1:0\"\nkeystore = {:?}\napprovals = {:?}\ncoordinators = [\"{}\"]\n\
                 chains = []\n\
                 [policy]\nreserves = [\"{descriptor}\"]\n\
                 [attest]\nnetwork = \"regtest\"\napprovals = {:?}\nregistry_file = {:?}\n\
                 [[attest.supply]]\nchain = \"dev\"\nkind = \"dev_http\"\nurl = \"{supply_url}\"\n\
                 [bitcoin]\nbackend = \"dev\"\ndev_height = {BTC_TIP}\n",
                dir.join("keystore.json").display().to_string(),
                dir.join("approvals.jsonl").display().to_string(),
                coordinator_key.public_hex(),
                dir.join("attestations.jsonl").display().to_string(),
                registry_file.display().to_string(),
            );
            for u in view(&utxos, &script) {
                toml.push_str(&format!(
                    "[[bitcoin.dev_utxos]]\naddress = \"{address}\"\ntxid = \"{}\"\nvout = {}\n\
                     amount_sats = {}\nscript_pubkey_hex = \"{}\"\n",
                    u.txid, u.vout, u.amount_sats, u.script_pubkey_hex
                ));
            }
            let config = dir.join("guardian.toml");
            std::fs::write(&config, toml).unwrap();
            let (child, url, key) = start(&config);
            assert_eq!(key, keys[i].public());
            procs.push(Proc {
                child,
                dir,
                url,
                key,
            });
        }
        Self {
            chain,
            dev,
            coordinator_key,
            descriptor,
            address,
            utxos,
            registry,
            procs,
            _tmp: tmp,
            cancel,
        }
    }

    fn coordinator(&self) -> AttestCoordinator {
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
        AttestCoordinator::new(
            self.coordinator_key.clone(),
            endpoints,
            2,
            Duration::from_secs(30),
            Duration::from_secs(60),
        )
        .unwrap()
    }

    fn guardian_set(&self) -> GuardianSet {
        GuardianSet {
            keys: self.procs.iter().map(|p| p.key).collect(),
            threshold: 2,
        }
    }

    /// The true attestation at the tip: the reserve's UTXOs and the dev supply.
    async fn proposal(&self) -> AttestationContent {
        let supply = DevSupply::new(self.dev.clone(), SUPPLY_SATS)
            .supply_at(None)
            .await
            .unwrap();
        AttestationContent {
            network: BitcoinNetwork::Regtest,
            bitcoin_block: AttestedBlock {
                height: BTC_TIP,
                hash: DevBitcoin::hash_at(BTC_TIP),
            },
            reserves: vec![AttestedReserve {
                address: self.address.clone(),
                descriptor: self.descriptor.clone(),
                status: ReserveStatus::Active,
                utxos: self.utxos.clone(),
            }],
            supply: vec![AttestedSupply {
                chain: self.chain.clone(),
                token: supply.token,
                block_number: supply.block_number,
                block_hash: supply.block_hash,
                supply: supply.supply,
            }],
            registry: self.registry.clone(),
            audit_head: "a1".repeat(32),
            created_at: Timestamp::from_millis(1_796_670_000_000),
        }
    }
}

fn same(utxos: &[Utxo], _: &str) -> Vec<Utxo> {
    utxos.to_vec()
}

fn lacks_one(utxos: &[Utxo], _: &str) -> Vec<Utxo> {
    utxos[..utxos.len() - 1].to_vec()
}

fn one_more(utxos: &[Utxo], script: &str) -> Vec<Utxo> {
    let mut v = utxos.to_vec();
    v.push(utxo(99, 1_000, script));
    v
}

/// `ubtc verify FILE`, the command users run; its exit code.
fn ubtc_verify(att: &ReserveAttestation) -> i32 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("attestation.json");
    std::fs::write(&path, att.to_json_pretty()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    out.status.code().unwrap()
}

fn codes(e: &AttestRoundError) -> HashMap<String, String> {
    e.codes().into_iter().collect()
}

#[tokio::test]
async fn three_guardians_attest_and_ubtc_verify_accepts_it() {
    let net = Net::new([same, same, same]).await;
    let proposal = net.proposal().await;
    let att = net
        .coordinator()
        .sign_attestation(proposal.clone())
        .await
        .unwrap();
    assert_eq!(att.approvals.len(), 2);
    assert_eq!(att.totals.reserve_sats, 250_000_000);
    assert_eq!(att.totals.ratio_ppm, Some(1_250_000));
    let report = verify_attestation(
        &att,
        &VerifyOptions {
            guardians: Some(net.guardian_set()),
        },
    );
    assert!(report.is_valid(), "{report}");
    assert_eq!(ubtc_verify(&att), 0);
    // One UTXO amount raised by one satoshi after signing: refused.
    let mut edited = att.clone();
    edited.reserves[0].utxos[0].amount_sats += 1;
    assert_eq!(ubtc_verify(&edited), 1);

    // Each approving guardian recorded the approval (the third may not have been
    // needed, but it answered the same request and records it too, or was dropped).
    let recorded: usize = net.procs.iter().map(|p| p.records().len()).sum();
    assert!(recorded >= 2, "{recorded} records");
    for p in &net.procs {
        for r in p.records() {
            assert_eq!(r.attestation_digest, hex::encode(att.digest()));
        }
    }

    // The identical proposal again: the same answer (deterministic signatures).
    let again = net
        .coordinator()
        .sign_attestation(proposal.clone())
        .await
        .unwrap();
    assert_eq!(again.pof, att.pof);

    // Another document for the same block and registry: refused by every guardian
    // that approved the first.
    let mut other = proposal;
    other.created_at = Timestamp::from_millis(1_796_670_060_000);
    let e = net.coordinator().sign_attestation(other).await.unwrap_err();
    // A guardian dropped at quorum may not have recorded the first one, and approves.
    let conflicting = codes(&e)
        .values()
        .filter(|c| *c == "conflicting_attestation")
        .count();
    assert!(conflicting >= 2, "{e}");
    assert!(matches!(e, AttestRoundError::NotEnough { .. }));
}

#[tokio::test]
async fn guardians_refuse_a_utxo_set_their_view_does_not_have() {
    // g2's view lacks a listed UTXO, g3's sees one more: only g1 approves.
    let net = Net::new([same, lacks_one, one_more]).await;
    let e = net
        .coordinator()
        .sign_attestation(net.proposal().await)
        .await
        .unwrap_err();
    let first = codes(&e);
    assert_eq!(first["g1"], "approved", "{e}");
    assert_eq!(first["g2"], "utxo_set_mismatch", "{e}");
    assert_eq!(first["g3"], "utxo_set_mismatch", "{e}");
    assert!(matches!(
        e,
        AttestRoundError::NotEnough {
            approved: 1,
            needed: 2,
            ..
        }
    ));
    assert!(net.procs[1].records().is_empty());
    assert!(net.procs[2].records().is_empty());

    // The coordinator's key alone cannot raise the reserve: an invented UTXO, or one
    // amount raised by a satoshi, is refused by every guardian.
    let mut invented = net.proposal().await;
    invented.reserves[0]
        .utxos
        .push(utxo(7, 2_000_000_000_000, &net.utxos[0].script_pubkey_hex));
    let e = net
        .coordinator()
        .sign_attestation(invented)
        .await
        .unwrap_err();
    assert!(codes_all(&e, "utxo_set_mismatch"), "{e}");
    let mut raised = net.proposal().await;
    raised.reserves[0].utxos[0].amount_sats += 1;
    let e = net
        .coordinator()
        .sign_attestation(raised)
        .await
        .unwrap_err();
    assert_eq!(codes(&e)["g1"], "utxo_set_mismatch", "{e}");

    // The true reserve under another registry fingerprint or version: every guardian
    // serves version 1 with its own fingerprint and refuses the reference.
    for (version, fingerprint) in [(1, "6e".repeat(32)), (2, net.registry.fingerprint.clone())] {
        let mut other = net.proposal().await;
        other.registry = RegistryRef {
            version,
            fingerprint,
        };
        let e = net.coordinator().sign_attestation(other).await.unwrap_err();
        assert!(codes_all(&e, "registry_mismatch"), "{e}");
    }
}

fn codes_all(e: &AttestRoundError, code: &str) -> bool {
    let c = codes(e);
    c.len() == 3 && c.values().all(|v| v == code)
}

#[tokio::test]
async fn guardians_refuse_a_supply_block_or_reserve_their_views_do_not_confirm() {
    let net = Net::new([same, same, same]).await;
    // Supply lowered by one base unit: the ratio would look better than it is.
    let mut lowered = net.proposal().await;
    lowered.supply[0].supply.base_units -= 1;
    let e = net
        .coordinator()
        .sign_attestation(lowered)
        .await
        .unwrap_err();
    assert!(codes_all(&e, "supply_mismatch"), "{e}");
    // The supply entry left out altogether.
    let mut omitted = net.proposal().await;
    omitted.supply.clear();
    let e = net
        .coordinator()
        .sign_attestation(omitted)
        .await
        .unwrap_err();
    assert!(codes_all(&e, "supply_mismatch"), "{e}");
    // A block above the guardians' tip, another hash, a block too old.
    let mut above = net.proposal().await;
    above.bitcoin_block = AttestedBlock {
        height: BTC_TIP + 1,
        hash: DevBitcoin::hash_at(BTC_TIP + 1),
    };
    let e = net.coordinator().sign_attestation(above).await.unwrap_err();
    assert!(codes_all(&e, "unknown_block"), "{e}");
    let mut other_hash = net.proposal().await;
    other_hash.bitcoin_block.hash = "00".repeat(32);
    let e = net
        .coordinator()
        .sign_attestation(other_hash)
        .await
        .unwrap_err();
    assert!(codes_all(&e, "unknown_block"), "{e}");
    let mut old = net.proposal().await;
    old.bitcoin_block = AttestedBlock {
        height: BTC_TIP - 100,
        hash: DevBitcoin::hash_at(BTC_TIP - 100),
    };
    let e = net.coordinator().sign_attestation(old).await.unwrap_err();
    assert!(codes_all(&e, "stale_block"), "{e}");
    // A reserve the guardians do not name (another threshold of their own keys).
    let keys = net
        .procs
        .iter()
        .map(|p| bitcoin::CompressedPublicKey(p.key))
        .collect();
    let one_of_three = SortedMulti::new(1, keys).unwrap();
    let mut foreign = net.proposal().await;
    foreign.reserves[0].descriptor = one_of_three.descriptor(Wrapping::Wsh);
    foreign.reserves[0].address = one_of_three
        .address(bitcoin::Network::Regtest, Wrapping::Wsh)
        .to_string();
    let script = one_of_three.script_pubkey(Wrapping::Wsh).to_hex_string();
    for u in &mut foreign.reserves[0].utxos {
        u.script_pubkey_hex = script.clone();
    }
    let e = net
        .coordinator()
        .sign_attestation(foreign)
        .await
        .unwrap_err();
    assert!(codes_all(&e, "unknown_reserve"), "{e}");
    for p in &net.procs {
        assert!(p.records().is_empty(), "a refused attestation was recorded");
    }
    // The true one is still made.
    let att = net
        .coordinator()
        .sign_attestation(net.proposal().await)
        .await
        .unwrap();
    assert_eq!(ubtc_verify(&att), 0);
}

#[tokio::test]
async fn one_guardian_down_still_attests_two_down_make_nothing() {
    let mut net = Net::new([same, same, same]).await;
    net.procs[0].kill();
    let att = net
        .coordinator()
        .sign_attestation(net.proposal().await)
        .await
        .unwrap();
    assert_eq!(ubtc_verify(&att), 0);
    // The same document again: the one guardian left answers it as before.
    let next = net.proposal().await;
    net.procs[1].kill();
    let e = net.coordinator().sign_attestation(next).await.unwrap_err();
    let down = codes(&e);
    assert_eq!(down["g1"], "unreachable", "{e}");
    assert_eq!(down["g2"], "unreachable", "{e}");
    assert_eq!(down["g3"], "approved", "{e}");
    assert!(matches!(e, AttestRoundError::NotEnough { approved: 1, .. }));
}
