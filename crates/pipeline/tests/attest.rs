//! The attestation step against a real store (SQLite), the dev Bitcoin backend and
//! dev supply, and a maker that signs with real 2-of-3 reserve keys (the guardians'
//! HTTP round is tested with real guardian processes in `ubtc`'s process tests). The
//! maker can be told to refuse, as a guardian whose view differs would.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use ubtc_bitcoin::attestation::{approve, verify_attestation, PreparedPof, VerifyOptions};
use ubtc_bitcoin::multisig::{SortedMulti, Wrapping};
use ubtc_chains::dev::{DevBitcoin, DevChain, DevSupply};
use ubtc_chains::{BitcoinBackend, ChainError, SupplySource};
use ubtc_core::attestation::{AttestationContent, ReserveAttestation};
use ubtc_core::bundle::Utxo;
use ubtc_core::{BlockStamp, ChainId, Timestamp};
use ubtc_pipeline::attest::{AttestConfig, AttestRefusal, AttestTick, AttestationMaker, Attester};
use ubtc_store::Store;

mod common;
use common::sqlite_store;

fn secret(b: u8) -> SecretKey {
    SecretKey::from_slice(&[b; 32]).unwrap()
}

fn policy() -> SortedMulti {
    let secp = Secp256k1::new();
    let keys = (1..=3)
        .map(|b| bitcoin::CompressedPublicKey(secret(b).public_key(&secp)))
        .collect();
    SortedMulti::new(2, keys).unwrap()
}

/// Signs with reserve keys 1 and 2 of the 2-of-3, unless told to refuse.
struct TwoOfThree {
    refuse: AtomicBool,
}

#[async_trait]
impl AttestationMaker for TwoOfThree {
    async fn make(
        &self,
        proposal: AttestationContent,
    ) -> Result<ReserveAttestation, AttestRefusal> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(AttestRefusal {
                codes: vec![
                    ("guardian-1".into(), "utxo_set_mismatch".into()),
                    ("guardian-2".into(), "utxo_set_mismatch".into()),
                ],
                detail: "two guardians see another UTXO set".into(),
            });
        }
        let mut att = ReserveAttestation::unsigned(proposal).unwrap();
        let prepared = PreparedPof::prepare(&att).unwrap();
        let partials: Vec<_> = [1, 2]
            .iter()
            .map(|b| prepared.check(prepared.sign(&secret(*b)).unwrap()).unwrap())
            .collect();
        att.pof = prepared.combine(&partials).unwrap();
        att.approvals = vec![approve(&att, &secret(1)), approve(&att, &secret(2))];
        Ok(att)
    }
}

/// The dev Bitcoin backend whose block hashes can be replaced (a reorg): the dev
/// backend's own hashes are fixed by height.
struct Reorgable {
    dev: DevBitcoin,
    replaced: Mutex<HashMap<u32, String>>,
}

impl Reorgable {
    fn hash(&self, height: u32) -> String {
        self.replaced
            .lock()
            .unwrap()
            .get(&height)
            .cloned()
            .unwrap_or_else(|| DevBitcoin::hash_at(height))
    }
}

#[async_trait]
impl BitcoinBackend for Reorgable {
    async fn tip(&self) -> Result<BlockStamp, ChainError> {
        let tip = self.dev.tip().await?;
        Ok(BlockStamp {
            hash: self.hash(tip.height),
            height: tip.height,
        })
    }
    async fn block_hash(&self, height: u32) -> Result<String, ChainError> {
        self.dev.block_hash(height).await?;
        Ok(self.hash(height))
    }
    async fn address_utxos(&self, address: &str) -> Result<Vec<Utxo>, ChainError> {
        self.dev.address_utxos(address).await
    }
}

struct Setup {
    store: Arc<dyn Store>,
    bitcoin: Arc<Reorgable>,
    maker: Arc<TwoOfThree>,
    attester: Attester,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (store, dir) = sqlite_store(2).await;
    use ubtc_bitcoin::registry as reg;
    let p = policy();
    let address = p.address(bitcoin::Network::Regtest, Wrapping::Wsh);
    let v = reg::propose(
        None,
        ubtc_core::bundle::BitcoinNetwork::Regtest,
        (1..=3)
            .map(|b| {
                bitcoin::CompressedPublicKey(secret(b).public_key(&Secp256k1::new())).to_string()
            })
            .collect(),
        2,
        &[reg::ProposedReserve {
            address: address.to_string(),
            descriptor: p.descriptor(Wrapping::Wsh),
            active: true,
        }],
    )
    .unwrap();
    let mut signed = v.clone();
    for b in [1, 2] {
        reg::add_signature(&mut signed, reg::sign(&v, &secret(b)));
    }
    store
        .publish_registry_version(&signed, Timestamp(1))
        .await
        .unwrap();

    let dev = DevBitcoin::new(100);
    let script = hex::encode(address.script_pubkey().as_bytes());
    dev.fund(&address.to_string(), &script, 150_000_000);
    dev.fund(&address.to_string(), &script, 50_000_000);
    let bitcoin = Arc::new(Reorgable {
        dev,
        replaced: Mutex::new(HashMap::new()),
    });
    let chain = DevChain::new(ChainId::parse("devchain").unwrap(), "0xpay", 1);
    let supply: Arc<dyn SupplySource> = Arc::new(DevSupply::new(chain, 100_000_000));
    let maker = Arc::new(TwoOfThree {
        refuse: AtomicBool::new(false),
    });
    let attester = Attester::new(
        bitcoin.clone(),
        vec![supply],
        store.clone(),
        maker.clone(),
        AttestConfig {
            every_blocks: 3,
            max_interval_ms: 60_000,
            reorg_check_depth: 8,
        },
    );
    Setup {
        store,
        bitcoin,
        maker,
        attester,
        _dir: dir,
    }
}

fn made(tick: AttestTick) -> ubtc_store::AttestationSummary {
    match tick {
        AttestTick::Made(s) => *s,
        other => panic!("expected an attestation, got {other:?}"),
    }
}

#[tokio::test]
async fn attests_on_schedule_and_what_it_stores_verifies() {
    let s = setup().await;
    let t = |ms: i64| Timestamp(1_700_000_000_000 + ms);
    // The first tick attests at once.
    let first = made(s.attester.tick(t(0)).await.unwrap());
    assert_eq!(
        (first.bitcoin_height, first.reserve_sats, first.supply_sats),
        (100, 200_000_000, 100_000_000)
    );
    assert_eq!(first.ratio_ppm, Some(2_000_000));
    let stored = s.store.get_attestation(first.id).await.unwrap().unwrap();
    let att = ReserveAttestation::from_json(stored.body.as_bytes()).unwrap();
    let report = verify_attestation(&att, &VerifyOptions::default());
    assert!(report.valid, "{report:?}");
    assert_eq!(att.audit_head, ubtc_store::audit::AUDIT_GENESIS_HASH);

    // Two new blocks and a minute not yet passed: nothing. The third block: due.
    s.bitcoin.dev.advance(2);
    assert!(matches!(
        s.attester.tick(t(1_000)).await.unwrap(),
        AttestTick::Skipped
    ));
    s.bitcoin.dev.advance(1);
    let second = made(s.attester.tick(t(2_000)).await.unwrap());
    assert_eq!(second.bitcoin_height, 103);
    // No new block but the interval passed: due.
    assert!(matches!(
        s.attester.tick(t(30_000)).await.unwrap(),
        AttestTick::Skipped
    ));
    let third = made(s.attester.tick(t(62_000)).await.unwrap());
    assert_eq!(third.bitcoin_height, 103);
    assert_ne!(third.digest, second.digest);
    // On demand, at once.
    s.attester.request();
    let fourth = made(s.attester.tick(t(63_000)).await.unwrap());
    assert!(fourth.id > third.id);
    assert_eq!(s.store.list_attestations(None, 10).await.unwrap().len(), 4);
}

#[tokio::test]
async fn a_refusal_keeps_the_last_attestation() {
    let s = setup().await;
    let t = |ms: i64| Timestamp(1_700_000_000_000 + ms);
    let first = made(s.attester.tick(t(0)).await.unwrap());
    // Coins leave the reserve and the guardians refuse (their views differ): no new
    // attestation, the last one stands with its old figures.
    s.bitcoin.dev.advance(5);
    s.maker.refuse.store(true, Ordering::SeqCst);
    match s.attester.tick(t(1_000)).await.unwrap() {
        AttestTick::Refused(r) => {
            assert_eq!(r.codes[0].1, "utxo_set_mismatch");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    s.attester.request();
    assert!(matches!(
        s.attester.attest_now(t(2_000)).await.unwrap(),
        AttestTick::Refused(_)
    ));
    let latest = s.store.latest_attestation().await.unwrap().unwrap();
    assert_eq!(latest.summary, first);
    assert_eq!(s.store.list_attestations(None, 10).await.unwrap().len(), 1);
    // Once they agree again, the next one is made.
    s.maker.refuse.store(false, Ordering::SeqCst);
    let next = made(s.attester.tick(t(3_000)).await.unwrap());
    assert_eq!(next.bitcoin_height, 105);
}

#[tokio::test]
async fn a_maker_that_signs_other_figures_is_not_stored() {
    struct Liar(TwoOfThree);
    #[async_trait]
    impl AttestationMaker for Liar {
        async fn make(
            &self,
            mut proposal: AttestationContent,
        ) -> Result<ReserveAttestation, AttestRefusal> {
            proposal.reserves[0].utxos[0].amount_sats += 1;
            self.0.make(proposal).await
        }
    }
    let s = setup().await;
    let liar = Attester::new(
        s.bitcoin.clone(),
        Vec::new(),
        s.store.clone(),
        Arc::new(Liar(TwoOfThree {
            refuse: AtomicBool::new(false),
        })),
        AttestConfig::default(),
    );
    match liar.tick(Timestamp(1)).await.unwrap() {
        AttestTick::Refused(r) => assert_eq!(r.codes[0].1, "attestation_mismatch"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(s.store.latest_attestation().await.unwrap().is_none());
}

/// One key alone cannot get figures published as proven: a maker that returns the
/// proposed document with its approvals copied from one guardian is refused before
/// anything is stored, because the verifier counts distinct guardians of the registry.
#[tokio::test]
async fn a_maker_with_one_guardians_approval_is_not_stored() {
    struct OneKey(TwoOfThree);
    #[async_trait]
    impl AttestationMaker for OneKey {
        async fn make(
            &self,
            proposal: AttestationContent,
        ) -> Result<ReserveAttestation, AttestRefusal> {
            let mut att = self.0.make(proposal).await?;
            let first = att.approvals[0].clone();
            att.approvals = vec![first.clone(), first];
            Ok(att)
        }
    }
    let s = setup().await;
    let one = Attester::new(
        s.bitcoin.clone(),
        Vec::new(),
        s.store.clone(),
        Arc::new(OneKey(TwoOfThree {
            refuse: AtomicBool::new(false),
        })),
        AttestConfig::default(),
    );
    match one.tick(Timestamp(1)).await.unwrap() {
        AttestTick::Refused(r) => {
            assert_eq!(r.codes[0].1, "attestation_unverified", "{}", r.detail)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(s.store.latest_attestation().await.unwrap().is_none());
}

#[tokio::test]
async fn a_reorged_block_marks_its_attestation() {
    let s = setup().await;
    let t = |ms: i64| Timestamp(1_700_000_000_000 + ms);
    let first = made(s.attester.tick(t(0)).await.unwrap());
    s.bitcoin.dev.advance(3);
    let second = made(s.attester.tick(t(1_000)).await.unwrap());
    assert_eq!(second.bitcoin_height, 103);
    // Block 103 is replaced by another: the second attestation is marked, the first
    // is the latest again, and a new one is made at the new block.
    s.bitcoin
        .replaced
        .lock()
        .unwrap()
        .insert(103, "ee".repeat(32));
    s.maker.refuse.store(true, Ordering::SeqCst);
    assert!(matches!(
        s.attester.tick(t(2_000)).await.unwrap(),
        AttestTick::Refused(_)
    ));
    let marked = s.store.get_attestation(second.id).await.unwrap().unwrap();
    assert_eq!(marked.summary.reorged_at, Some(t(2_000)));
    let latest = s.store.latest_attestation().await.unwrap().unwrap();
    assert_eq!(latest.summary.id, first.id);
    assert_eq!(
        s.store
            .get_attestation(first.id)
            .await
            .unwrap()
            .unwrap()
            .summary
            .reorged_at,
        None
    );
    s.maker.refuse.store(false, Ordering::SeqCst);
    let again = made(s.attester.tick(t(3_000)).await.unwrap());
    assert_eq!(
        (again.bitcoin_height, again.bitcoin_hash.as_str()),
        (103, "ee".repeat(32).as_str())
    );
}
