//! The attestation round against a real EVM node: guardians read the token supply at
//! the attested block with a historical `eth_call` on anvil (WrappedBTC compiled from
//! the repository), and refuse a supply figure that is the token's *current* one but
//! not the named block's. Also the single-key signer of the demo's `--local-key` mode.
//!
//! Stand-in, said plainly: no Bitcoin node runs here; each guardian gets its own
//! in-memory `DevBitcoin` holding the reserve's UTXOs.

#![allow(clippy::unwrap_used)]

#[path = "../../chains/tests/common/mod.rs"]
mod evm_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::SecretKey;
use bitcoin::CompressedPublicKey;
use evm_common::{fast_retry, Anvil, ANVIL_CHAIN_ID};
use tokio_util::sync::CancellationToken;
use ubtc_bitcoin::attestation::{verify_attestation, GuardianSet, VerifyOptions};
use ubtc_bitcoin::multisig::{SortedMulti, Wrapping};
use ubtc_chains::dev::DevBitcoin;
use ubtc_chains::evm::abi::Encoder;
use ubtc_chains::evm::minter::{address_of, EvmMinter};
use ubtc_chains::SupplySource;
use ubtc_core::attestation::{
    AttestationContent, AttestedBlock, AttestedReserve, AttestedSupply, RegistryRef, ReserveStatus,
};
use ubtc_core::bundle::{BitcoinNetwork, Utxo};
use ubtc_core::{ChainId, Timestamp, TokenAmount};
use ubtc_guardian::attest::{AttestGuardian, AttestPolicy, EvmSupplyView, SupplyView};
use ubtc_guardian::coordinator_attest::{
    AttestCoordinator, AttestRoundError, AttestationSigner, LocalAttestationSigner,
};
use ubtc_guardian::{GuardianEndpoint, GuardianKey};

const TIP: u32 = 800_000;

fn utxos(script: &str, n: u32) -> Vec<Utxo> {
    (0..n)
        .map(|i| Utxo {
            txid: format!("{:064x}", 0xabc0 + i),
            vout: i,
            amount_sats: 10_000_000 * u64::from(i + 1),
            script_pubkey_hex: script.to_owned(),
        })
        .collect()
}

async fn mint(minter: &EvmMinter, to: &str, amount: u128) -> u64 {
    let tx = minter.sign_mint(to, amount).await.unwrap();
    minter.send(&tx).await.unwrap();
    for _ in 0..100 {
        if let Some(r) = minter.receipt(&tx.hash).await.unwrap() {
            assert!(r.success);
            return r.block;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("mint not mined");
}

#[tokio::test]
async fn guardians_read_the_evm_supply_at_the_attested_block() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let anvil = Anvil::start().await.unwrap();
    let accounts = anvil.accounts().await.unwrap();
    let minter_secret = SecretKey::new(&mut rand::thread_rng());
    let minter_address =
        address_of(&minter_secret.public_key(&bitcoin::secp256k1::Secp256k1::new()));
    anvil
        .send(&accounts[0], Some(&minter_address), 10u128.pow(19), &[])
        .await
        .unwrap();
    let token = anvil
        .deploy(
            &accounts[0],
            "WrappedBTC",
            Encoder::new()
                .address(&accounts[0])
                .unwrap()
                .address(&minter_address)
                .unwrap()
                .finish(),
        )
        .await
        .unwrap();
    let minter = EvmMinter::new(
        &anvil.url,
        ANVIL_CHAIN_ID,
        &token,
        minter_secret,
        fast_retry(),
    )
    .unwrap();
    let attested_block = mint(&minter, &accounts[1], 100_000_000).await;
    // Minted after the attested block: must not count for it.
    let later = mint(&minter, &accounts[1], 50_000_000).await;
    assert!(later > attested_block);

    let chain = ChainId::parse("anvil").unwrap();
    let view = EvmSupplyView::new(chain.clone(), &anvil.url, &token).unwrap();
    let past = view.supply_at(Some(attested_block)).await.unwrap();
    assert_eq!(past.supply, TokenAmount::new(100_000_000, 8));
    let header = anvil
        .call(
            "eth_getBlockByNumber",
            serde_json::json!([format!("0x{attested_block:x}"), false]),
        )
        .await
        .unwrap();
    assert_eq!(past.block_hash, header["hash"].as_str().unwrap());
    let now = view.supply_at(Some(later)).await.unwrap();
    assert_eq!(now.supply, TokenAmount::new(150_000_000, 8));

    // Three guardians over loopback, each with its own Bitcoin view and its own
    // reading of anvil.
    let keys: Vec<GuardianKey> = (0..3).map(|_| GuardianKey::generate()).collect();
    let policy = SortedMulti::new(
        2,
        keys.iter()
            .map(|k| CompressedPublicKey(k.public()))
            .collect(),
    )
    .unwrap();
    let descriptor = policy.descriptor(Wrapping::Wsh);
    let address = policy
        .address(bitcoin::Network::Regtest, Wrapping::Wsh)
        .to_string();
    let listed = utxos(&policy.script_pubkey(Wrapping::Wsh).to_hex_string(), 3);
    let coordinator_key = GuardianKey::generate();
    let cancel = CancellationToken::new();
    let _stop = cancel.clone().drop_guard();
    let dir = tempfile::tempdir().unwrap();
    let mut endpoints = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let bitcoin = DevBitcoin::new(TIP);
        for u in &listed {
            bitcoin.insert_utxo(&address, u.clone(), TIP - 2);
        }
        let supply: Arc<dyn SupplySource> =
            Arc::new(EvmSupplyView::new(chain.clone(), &anvil.url, &token).unwrap());
        let g = AttestGuardian::new(
            key.clone(),
            Arc::new(bitcoin),
            AttestPolicy {
                coordinators: vec![coordinator_key.public()],
                network: BitcoinNetwork::Regtest,
                active: vec![descriptor.clone()],
                retired: Vec::new(),
                supply: HashMap::from([(
                    chain.clone(),
                    SupplyView {
                        source: supply,
                        latest_only: false,
                    },
                )]),
                max_block_age_blocks: 6,
                max_request_ttl_ms: 60_000,
                registry: Some(RegistryRef {
                    version: 1,
                    fingerprint: "7f".repeat(32),
                }),
            },
            &dir.path().join(format!("g{i}.jsonl")),
        )
        .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(ubtc_guardian::server::serve(
            listener,
            ubtc_guardian::attest::router(Arc::new(g)),
            cancel.clone(),
        ));
        endpoints.push(GuardianEndpoint {
            name: format!("g{}", i + 1),
            url,
            key: key.public(),
        });
    }
    let coordinator = AttestCoordinator::new(
        coordinator_key,
        endpoints,
        2,
        Duration::from_secs(10),
        Duration::from_secs(30),
    )
    .unwrap();
    let proposal =
        |supply: &ubtc_core::bundle::SupplyEntry, fingerprint: &str| AttestationContent {
            network: BitcoinNetwork::Regtest,
            bitcoin_block: AttestedBlock {
                height: TIP,
                hash: DevBitcoin::hash_at(TIP),
            },
            reserves: vec![AttestedReserve {
                address: address.clone(),
                descriptor: descriptor.clone(),
                status: ReserveStatus::Active,
                utxos: listed.clone(),
            }],
            supply: vec![AttestedSupply {
                chain: chain.clone(),
                token: supply.token.clone(),
                block_number: attested_block,
                block_hash: past.block_hash.clone(),
                supply: supply.supply,
            }],
            registry: RegistryRef {
                version: 1,
                fingerprint: fingerprint.repeat(32),
            },
            audit_head: "a1".repeat(32),
            created_at: Timestamp::from_millis(1_796_670_000_000),
        };
    // Today's supply stated for the past block: refused by every guardian.
    let e = coordinator
        .sign_attestation(proposal(&now, "7f"))
        .await
        .unwrap_err();
    let codes: HashMap<String, String> = e.codes().into_iter().collect();
    assert_eq!(codes.len(), 3, "{e}");
    assert!(codes.values().all(|c| c == "supply_mismatch"), "{e}");
    // The block's own supply: attested, and it verifies.
    let att = coordinator
        .sign_attestation(proposal(&past, "7f"))
        .await
        .unwrap();
    assert_eq!(att.totals.supply_sats, 100_000_000);
    assert_eq!(att.totals.reserve_sats, 60_000_000);
    let report = verify_attestation(
        &att,
        &VerifyOptions {
            guardians: Some(GuardianSet {
                keys: keys.iter().map(GuardianKey::public).collect(),
                threshold: 2,
            }),
        },
    );
    assert!(report.is_valid(), "{report}");
}

fn single_key_proposal(descriptor: String, address: String, script: &str) -> AttestationContent {
    AttestationContent {
        network: BitcoinNetwork::Regtest,
        bitcoin_block: AttestedBlock {
            height: TIP,
            hash: DevBitcoin::hash_at(TIP),
        },
        reserves: vec![AttestedReserve {
            address,
            descriptor,
            status: ReserveStatus::Active,
            utxos: utxos(script, 2),
        }],
        supply: Vec::new(),
        registry: RegistryRef {
            version: 1,
            fingerprint: "7f".repeat(32),
        },
        audit_head: "a1".repeat(32),
        created_at: Timestamp::from_millis(1_796_670_000_000),
    }
}

#[tokio::test]
async fn local_key_signer_attests_a_single_key_reserve_and_nothing_it_cannot_complete() {
    let secret = SecretKey::new(&mut rand::thread_rng());
    let key = CompressedPublicKey(secret.public_key(&bitcoin::secp256k1::Secp256k1::new()));
    let descriptor = ubtc_bitcoin::descriptor::with_checksum(&format!("wpkh({key})")).unwrap();
    let script = bitcoin::ScriptBuf::new_p2wpkh(&key.wpubkey_hash());
    let address = bitcoin::Address::from_script(&script, bitcoin::Network::Regtest)
        .unwrap()
        .to_string();
    let signer = LocalAttestationSigner::new(secret);
    let att = signer
        .sign_attestation(single_key_proposal(
            descriptor,
            address,
            &script.to_hex_string(),
        ))
        .await
        .unwrap();
    let report = verify_attestation(&att, &VerifyOptions::default());
    assert!(report.is_valid(), "{report}");
    assert_eq!(att.approvals.len(), 1);

    // A 2-of-2 reserve holding this key: one key cannot complete it, so nothing is made.
    let other = CompressedPublicKey(GuardianKey::generate().public());
    let multi = SortedMulti::new(2, vec![key, other]).unwrap();
    let e = signer
        .sign_attestation(single_key_proposal(
            multi.descriptor(Wrapping::Wsh),
            multi
                .address(bitcoin::Network::Regtest, Wrapping::Wsh)
                .to_string(),
            &multi.script_pubkey(Wrapping::Wsh).to_hex_string(),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, AttestRoundError::Proposal(inner) if inner.code() == "not_enough_signatures"),
        "{e}"
    );
}
