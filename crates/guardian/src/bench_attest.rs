//! `ubtc bench attest`, the "make" half: the real 2-of-3 attestation round over
//! loopback HTTP. Three guardian services ([`AttestGuardian`]) on 127.0.0.1 in this
//! process, each with its own key, its own dev Bitcoin view holding the reserve's
//! UTXOs, its own approval record and the dev supply; the [`AttestCoordinator`] asks
//! them all and completes at two. Everything a real round does is timed: the request
//! (the whole document) over HTTP, each guardian's block, UTXO-set and supply checks,
//! its rebuild and partial signing, the durable record, and the coordinator's checks of
//! each answer and the combine.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bitcoin::hashes::{sha256, Hash};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use ubtc_bitcoin::attestation::{verify_attestation, GuardianSet, VerifyOptions};
use ubtc_bitcoin::multisig::{SortedMulti, Wrapping};
use ubtc_chains::dev::{DevBitcoin, DevChain, DevSupply};
use ubtc_chains::{BitcoinBackend, SupplySource};
use ubtc_core::attestation::{
    AttestationContent, AttestedBlock, AttestedReserve, AttestedSupply, RegistryRef, ReserveStatus,
};
use ubtc_core::bundle::{BitcoinNetwork, Utxo};
use ubtc_core::{ChainId, Timestamp};

use crate::attest::{self, AttestGuardian, AttestPolicy, SupplyView};
use crate::coordinator::GuardianEndpoint;
use crate::coordinator_attest::{AttestCoordinator, AttestationSigner};
use crate::keystore::GuardianKey;

/// Target of the issue: making a 10,000-UTXO attestation takes under 10 s here.
pub const ROUND_TARGET_SECS: f64 = 10.0;
const TIP: u32 = 900_000;

#[derive(Debug, Clone, Serialize)]
pub struct RoundCase {
    pub utxos: usize,
    /// `sign_attestation` of the proposal, until the finished attestation.
    pub make_secs: f64,
    /// The finished document verifies (offline, against the three guardian keys).
    pub valid: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    pub cases: Vec<RoundCase>,
    pub target_make_secs: f64,
    pub target_met: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl fmt::Display for RoundReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "attestation round: 2-of-3 guardians over loopback HTTP, each checking its own Bitcoin view and supply"
        )?;
        writeln!(f, "  {:>6}  {:>8}", "utxos", "make s")?;
        for c in &self.cases {
            writeln!(
                f,
                "  {:>6}  {:>8.3}{}",
                c.utxos,
                c.make_secs,
                if c.valid { "" } else { "  INVALID" }
            )?;
        }
        for failure in &self.failures {
            writeln!(f, "  FAILURE: {failure}")?;
        }
        writeln!(
            f,
            "target: make < {:.0} s at the largest size: {}",
            self.target_make_secs,
            if self.target_met { "met" } else { "NOT met" }
        )
    }
}

/// Runs one round per size in `sizes`.
pub async fn bench_attest_round(sizes: &[usize]) -> RoundReport {
    let mut cases = Vec::new();
    let mut failures = Vec::new();
    for &n in sizes {
        match round_case(n).await {
            Ok(c) => cases.push(c),
            Err(e) => failures.push(format!("{n} UTXOs: {e}")),
        }
    }
    let target_met = failures.is_empty()
        && cases.iter().all(|c| c.valid)
        && cases
            .iter()
            .max_by_key(|c| c.utxos)
            .is_some_and(|c| c.make_secs < ROUND_TARGET_SECS);
    RoundReport {
        cases,
        target_make_secs: ROUND_TARGET_SECS,
        target_met,
        failures,
    }
}

async fn round_case(n: usize) -> Result<RoundCase, String> {
    let err = |e: &dyn fmt::Display| e.to_string();
    let keys: Vec<GuardianKey> = (0..3).map(|_| GuardianKey::generate()).collect();
    let policy = SortedMulti::new(
        2,
        keys.iter()
            .map(|k| bitcoin::CompressedPublicKey(k.public()))
            .collect(),
    )
    .map_err(|e| err(&e))?;
    let descriptor = policy.descriptor(Wrapping::Wsh);
    let address = policy
        .address(bitcoin::Network::Regtest, Wrapping::Wsh)
        .to_string();
    let script = policy.script_pubkey(Wrapping::Wsh).to_hex_string();
    let utxos: Vec<Utxo> = (0..n)
        .map(|i| Utxo {
            txid: sha256::Hash::hash(&(i as u64).to_le_bytes()).to_string(),
            vout: (i % 4) as u32,
            amount_sats: 100_000 + i as u64,
            script_pubkey_hex: script.clone(),
        })
        .collect();
    let chain = ChainId::parse("dev").map_err(|e| err(&e))?;
    let dev = DevChain::new(chain.clone(), "0xbench", 1);
    let supply: Arc<dyn SupplySource> = Arc::new(DevSupply::new(dev, 1_000_000_000));
    let entry = supply.supply_at(None).await.map_err(|e| err(&e))?;

    let coordinator_key = GuardianKey::generate();
    let dir = tempfile_dir()?;
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let mut endpoints = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        // Each guardian its own Bitcoin view, holding the reserve's UTXOs.
        let view = DevBitcoin::new(TIP);
        for u in &utxos {
            view.insert_utxo(&address, u.clone(), TIP - 1);
        }
        let bitcoin: Arc<dyn BitcoinBackend> = Arc::new(view);
        let guardian = AttestGuardian::new(
            key.clone(),
            bitcoin,
            AttestPolicy {
                coordinators: vec![coordinator_key.public()],
                network: BitcoinNetwork::Regtest,
                active: vec![descriptor.clone()],
                retired: Vec::new(),
                supply: HashMap::from([(
                    chain.clone(),
                    SupplyView {
                        source: supply.clone(),
                        latest_only: false,
                    },
                )]),
                max_block_age_blocks: 6,
                max_request_ttl_ms: 120_000,
                registry: Some(RegistryRef {
                    version: 1,
                    fingerprint: "11".repeat(32),
                }),
            },
            &dir.join(format!("g{i}.jsonl")),
        )
        .map_err(|e| err(&e))?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| err(&e))?;
        let addr = listener.local_addr().map_err(|e| err(&e))?;
        tokio::spawn(crate::server::serve(
            listener,
            attest::router(Arc::new(guardian)),
            cancel.clone(),
        ));
        endpoints.push(GuardianEndpoint {
            name: format!("g{}", i + 1),
            url: format!("http://{addr}"),
            key: key.public(),
        });
    }
    let coordinator = AttestCoordinator::new(
        coordinator_key,
        endpoints,
        2,
        Duration::from_secs(120),
        Duration::from_secs(120),
    )
    .map_err(|e| err(&e))?;
    let proposal = AttestationContent {
        network: BitcoinNetwork::Regtest,
        bitcoin_block: AttestedBlock {
            height: TIP,
            hash: DevBitcoin::hash_at(TIP),
        },
        reserves: vec![AttestedReserve {
            address,
            descriptor,
            status: ReserveStatus::Active,
            utxos,
        }],
        supply: vec![AttestedSupply {
            chain,
            token: entry.token,
            block_number: entry.block_number,
            block_hash: entry.block_hash,
            supply: entry.supply,
        }],
        registry: RegistryRef {
            version: 1,
            fingerprint: "11".repeat(32),
        },
        audit_head: "22".repeat(32),
        created_at: Timestamp::now(),
    };
    let started = Instant::now();
    let att = coordinator
        .sign_attestation(proposal)
        .await
        .map_err(|e| err(&e))?;
    let make_secs = started.elapsed().as_secs_f64();
    let guardians = GuardianSet {
        keys: keys.iter().map(GuardianKey::public).collect(),
        threshold: 2,
    };
    let report = tokio::task::spawn_blocking(move || {
        verify_attestation(
            &att,
            &VerifyOptions {
                guardians: Some(guardians),
            },
        )
    })
    .await
    .map_err(|e| err(&e))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(RoundCase {
        utxos: n,
        make_secs,
        valid: report.is_valid(),
    })
}

/// A fresh directory for the guardians' approval records.
fn tempfile_dir() -> Result<std::path::PathBuf, String> {
    let dir = std::env::temp_dir().join(format!("ubtc-bench-attest-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    Ok(dir)
}
