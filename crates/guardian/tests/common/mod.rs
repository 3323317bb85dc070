//! In-process harness: a dev chain served over loopback HTTP and guardians each on
//! their own loopback port, as `ubtc guardian` would run them.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::Network;
use tokio_util::sync::CancellationToken;
use ubtc_bitcoin::multisig::{Form, SortedMulti, Wrapping};
use ubtc_chains::dev::{DevBitcoin, DevChain};
use ubtc_chains::ChainAdapter;
use ubtc_core::payment::Payer;
use ubtc_core::{BlockStamp, ChainId, PaymentRef, Statement};
use ubtc_guardian::devchain::PaymentSource;
use ubtc_guardian::record::ApprovalLog;
use ubtc_guardian::server::{self, Guardian, GuardianPolicy, WatchedChain};
use ubtc_guardian::{
    Coordinator, CoordinatorSettings, DevChainHttpAdapter, GuardianEndpoint, GuardianKey,
};

/// Every in-process guardian's dev Bitcoin tip; statements are stamped with it.
pub const BTC_TIP: u32 = 880_000;

pub struct Harness {
    pub chain: ChainId,
    pub dev: DevChain,
    pub chain_url: String,
    /// A second dev chain with the same name but none of the payments: the view of a
    /// guardian that does not see what the others see.
    pub empty_url: String,
    pub coordinator_key: GuardianKey,
    pub keys: Vec<GuardianKey>,
    /// The reserve every guardian names in its policy: M-of-N over all the keys, M a
    /// majority (2 of 3, 3 of 5). [`Harness::coordinator`] signs for it.
    pub reserve: String,
    pub threshold: usize,
    /// Each guardian's own dev Bitcoin view (tests fund reserve outputs on it).
    pub bitcoin: Vec<DevBitcoin>,
    pub urls: Vec<String>,
    pub guardians: Vec<Arc<Guardian>>,
    pub dir: tempfile::TempDir,
    pub cancel: CancellationToken,
}

pub struct GuardianSpec {
    pub empty_view: bool,
    pub rate: u32,
    /// The BIP-322 forms the guardian signs statements in (`[policy] forms`).
    pub forms: Vec<Form>,
    /// Its chain view answers a batch read with one answer fewer than asked.
    pub short_answers: bool,
    /// It also names the `t`-of-N reserve over the same keys.
    pub also_threshold: Option<usize>,
}

impl Default for GuardianSpec {
    fn default() -> Self {
        Self {
            empty_view: false,
            rate: 1000,
            forms: vec![Form::Simple],
            short_answers: false,
            also_threshold: None,
        }
    }
}

/// A chain view that drops the last answer of every batch read of two or more
/// payments: a faulty or hostile node, which no real component here behaves like.
pub struct ShortAnswers(pub Arc<dyn PaymentSource>);

#[async_trait::async_trait]
impl PaymentSource for ShortAnswers {
    async fn payments(
        &self,
        payments: &[&PaymentRef],
    ) -> Vec<Result<Option<(ubtc_core::Payment, ubtc_chains::PaymentDepth)>, ubtc_chains::ChainError>>
    {
        let mut all = self.0.payments(payments).await;
        if all.len() > 1 {
            all.pop();
        }
        all
    }
}

async fn serve(router: axum::Router, cancel: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(server::serve(listener, router, cancel.clone()));
    url
}

impl Harness {
    pub async fn new(specs: Vec<GuardianSpec>) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let chain = ChainId::parse("dev").unwrap();
        let dev = DevChain::new(chain.clone(), "0xc0ffee", 2);
        let empty = DevChain::new(chain.clone(), "0xc0ffee", 2);
        let cancel = CancellationToken::new();
        let chain_url = serve(
            ubtc_guardian::dev_chain_router(HashMap::from([(chain.clone(), dev.clone())])),
            &cancel,
        )
        .await;
        let empty_url = serve(
            ubtc_guardian::dev_chain_router(HashMap::from([(chain.clone(), empty)])),
            &cancel,
        )
        .await;
        let dir = tempfile::tempdir().unwrap();
        let coordinator_key = GuardianKey::generate();
        let keys: Vec<GuardianKey> = specs.iter().map(|_| GuardianKey::generate()).collect();
        let threshold = specs.len() / 2 + 1;
        let pubkeys: Vec<bitcoin::CompressedPublicKey> = keys
            .iter()
            .map(|k| bitcoin::CompressedPublicKey(k.public()))
            .collect();
        let reserve_of = |m: usize| {
            SortedMulti::new(m, pubkeys.clone())
                .unwrap()
                .descriptor(Wrapping::Wsh)
        };
        let reserve = reserve_of(threshold);
        let mut h = Self {
            chain,
            dev,
            chain_url,
            empty_url,
            coordinator_key,
            keys: Vec::new(),
            reserve,
            threshold,
            bitcoin: Vec::new(),
            urls: Vec::new(),
            guardians: Vec::new(),
            dir,
            cancel,
        };
        for (i, (spec, key)) in specs.into_iter().zip(keys).enumerate() {
            let view = if spec.empty_view {
                h.empty_url.clone()
            } else {
                h.chain_url.clone()
            };
            let mut adapter: Arc<dyn PaymentSource> =
                Arc::new(DevChainHttpAdapter::new(h.chain.clone(), &view).unwrap());
            if spec.short_answers {
                adapter = Arc::new(ShortAnswers(adapter));
            }
            let btc = DevBitcoin::new(BTC_TIP);
            let guardian = Arc::new(Guardian::new(
                key.clone(),
                HashMap::from([(
                    h.chain.clone(),
                    WatchedChain {
                        adapter,
                        max_signatures_per_minute: spec.rate,
                    },
                )]),
                Arc::new(btc.clone()),
                GuardianPolicy {
                    coordinators: vec![h.coordinator_key.public()],
                    statement_versions: vec![1],
                    max_request_ttl_ms: 120_000,
                    max_stamp_age_blocks: 6,
                    reserves: std::iter::once(h.reserve.clone())
                        .chain(spec.also_threshold.map(&reserve_of))
                        .collect(),
                    forms: spec.forms,
                },
                ApprovalLog::open(&h.dir.path().join(format!("g{i}.jsonl"))).unwrap(),
            ));
            let url = serve(server::router(guardian.clone()), &h.cancel).await;
            h.keys.push(key);
            h.bitcoin.push(btc);
            h.urls.push(url);
            h.guardians.push(guardian);
        }
        h
    }

    pub fn endpoints(&self) -> Vec<GuardianEndpoint> {
        self.keys
            .iter()
            .zip(&self.urls)
            .enumerate()
            .map(|(i, (k, u))| GuardianEndpoint {
                name: format!("g{}", i + 1),
                url: u.clone(),
                key: k.public(),
            })
            .collect()
    }

    pub fn coordinator_with(&self, endpoints: Vec<GuardianEndpoint>, m: usize) -> Coordinator {
        Coordinator::new(
            self.coordinator_key.clone(),
            endpoints,
            m,
            CoordinatorSettings {
                network: Network::Regtest,
                timeout: Duration::from_secs(5),
                request_ttl: Duration::from_secs(60),
            },
        )
        .unwrap()
    }

    pub fn coordinator(&self, m: usize) -> Coordinator {
        self.coordinator_with(self.endpoints(), m)
    }

    /// Pays with `message` and mines `blocks` blocks on top.
    pub fn pay(&self, message: &str, blocks: u64) -> PaymentRef {
        let tx =
            self.dev
                .submit_payment(&Payer::parse("0xa11ce").unwrap(), 1000, message.as_bytes());
        self.dev.mine(blocks);
        PaymentRef {
            chain: self.chain.clone(),
            tx_hash: tx,
            index: 0,
        }
    }

    /// The statement the pipeline would build for `payment`.
    pub async fn statement(&self, payment: &PaymentRef) -> Statement {
        let (p, _) = self.dev.payment(payment).await.unwrap().unwrap();
        Statement::new(
            payment.clone(),
            p.payer,
            p.message.unwrap(),
            BlockStamp::new(BTC_TIP, &DevBitcoin::hash_at(BTC_TIP)).unwrap(),
            uuid::Uuid::new_v4(),
        )
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
