//! Reserve management end to end: a real anvil chain with WrappedBTC compiled from
//! `contracts/`, three guardians serving `POST /v1/reserve-ops` over HTTP (2-of-3), the
//! pipeline's `ReserveOps` on a SQLite store, and the in-process dev Bitcoin backend.
//!
//! Deposit confirmed on the dev backend → mint approved by 2 guardians (the third is
//! down) → mint transaction on anvil → supply increased; burn on anvil → release PSBT
//! signed by 2 guardians → final transaction verified by the strict script interpreter
//! → broadcast to the dev backend. Bad input is refused with a stable code and leaves
//! the database as it was.
//!
//! Stand-in, said plainly: no Bitcoin node runs here, so the guardians and the
//! coordinator share one in-memory `DevBitcoin` (in production each guardian reads its
//! own node). The EVM side is a real node.

#![allow(clippy::unwrap_used)]

#[path = "../../chains/tests/common/mod.rs"]
mod evm_common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::SecretKey;
use bitcoin::{Address, CompressedPublicKey, Network};
use evm_common::{fast_retry, Anvil, ANVIL_CHAIN_ID};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use ubtc_bitcoin::multisig::{SortedMulti, Wrapping};
use ubtc_bitcoin::release::{self, Payout};
use ubtc_chains::dev::DevBitcoin;
use ubtc_chains::evm::abi::Encoder;
use ubtc_chains::evm::minter::{address_of, EvmMinter};
use ubtc_chains::BitcoinBackend;
use ubtc_guardian::keystore::{GuardianKey, Passphrase};
use ubtc_guardian::reserve_ops::{
    load_minter_key, store_minter_key, EvmTokenView, ReserveEndpoint, ReserveGuardian,
    ReserveOpsClient, ReservePolicy, TokenView,
};
use ubtc_pipeline::reserve_ops::*;
use ubtc_store::reserve_ops::*;
use ubtc_store::Store;

const CHAIN: &str = "anvil";

/// Everything the database holds about reserve operations, to show a refused request
/// changed nothing.
async fn db_state(store: &Arc<dyn Store>) -> String {
    let day = governor_day(ubtc_core::Timestamp::now());
    format!(
        "{:?}|{:?}|{:?}|{:?}|{}|{}|{}",
        store.list_deposits(None, 1000).await.unwrap(),
        store.list_mints(None, 1000).await.unwrap(),
        store.list_burns(None, 1000).await.unwrap(),
        store.list_releases(None, 1000).await.unwrap(),
        store.list_audit(None, 1000).await.unwrap().len(),
        store.daily_volume(CHAIN, OpKind::Mint, day).await.unwrap(),
        store
            .daily_volume(CHAIN, OpKind::Release, day)
            .await
            .unwrap(),
    )
}

async fn tick(ops: &ReserveOps) -> ReserveOpsTick {
    ops.tick().await.unwrap()
}

struct World {
    anvil: Anvil,
    accounts: Vec<String>,
    token: String,
    minter: Arc<EvmMinter>,
    bitcoin: DevBitcoin,
    reserve: SortedMulti,
    store: Arc<dyn Store>,
    client: Arc<ReserveOpsClient>,
    guardian_cancel: Vec<CancellationToken>,
    _pg: Option<PgSchema>,
    _dir: tempfile::TempDir,
}

/// Drops a test's PostgreSQL schema when the test ends, also when it panicked.
struct PgSchema {
    url: String,
    schema: String,
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(store) = ubtc_store::PgStore::connect(&url, 1).await {
                    let _ = store.drop_schema(&schema).await;
                }
            })
        })
        .join();
    }
}

impl World {
    fn settings(&self, mint_limit: u64) -> ReserveOpsSettings {
        ReserveOpsSettings {
            network: Network::Regtest,
            reserve: self.reserve.clone(),
            deposit_confirmations: 3,
            token_confirmations: 1,
            mint_daily_limit_sats: mint_limit,
            release_daily_limit_sats: 10_000_000,
            fee_rate_sat_vb: 5,
            batch: 16,
        }
    }

    fn ops(&self, mint_limit: u64) -> ReserveOps {
        let mut minters: HashMap<String, Arc<dyn TokenMinter>> = HashMap::new();
        minters.insert(CHAIN.into(), self.minter.clone());
        ReserveOps::new(
            self.store.clone(),
            Arc::new(self.bitcoin.clone()),
            minters,
            self.client.clone(),
            self.settings(mint_limit),
        )
    }

    async fn balance(&self, who: &str) -> u128 {
        let data = Encoder::new()
            .address(who)
            .unwrap()
            .call("balanceOf(address)");
        let out: String = self
            .anvil
            .rpc
            .call(
                "eth_call",
                json!([{"to": self.token, "data": format!("0x{}", hex::encode(data))}, "latest"]),
            )
            .await
            .unwrap();
        u128::from_str_radix(out.trim_start_matches("0x"), 16).unwrap()
    }
}

async fn world() -> World {
    world_on(false).await
}

/// `postgres`: a fresh schema on `UBTC_TEST_DATABASE_URL` (default
/// `postgres://root@127.0.0.1:5432/test`), dropped when the world is; else SQLite.
async fn world_on(postgres: bool) -> World {
    let dir = tempfile::tempdir().unwrap();
    let anvil = Anvil::start().await.unwrap();
    let accounts = anvil.accounts().await.unwrap();

    // The minter key, kept encrypted at rest like a guardian key.
    let minter_secret = SecretKey::new(&mut rand::thread_rng());
    let pass = Passphrase::new("minter passphrase").unwrap();
    let key_path = dir.path().join("minter.json");
    store_minter_key(&key_path, minter_secret, &pass).unwrap();
    assert!(!std::fs::read_to_string(&key_path)
        .unwrap()
        .contains(&hex::encode(minter_secret.secret_bytes())));
    let minter_secret = load_minter_key(&key_path, &pass).unwrap();
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
    let minter = Arc::new(
        EvmMinter::new(
            &anvil.url,
            ANVIL_CHAIN_ID,
            &token,
            minter_secret,
            fast_retry(),
        )
        .unwrap(),
    );
    assert_eq!(minter.address(), minter_address);

    let keys: Vec<GuardianKey> = (0..3).map(|_| GuardianKey::generate()).collect();
    let reserve = SortedMulti::new(
        2,
        keys.iter()
            .map(|k| CompressedPublicKey(k.public()))
            .collect(),
    )
    .unwrap();
    let coordinator = GuardianKey::generate();
    let bitcoin = DevBitcoin::new(100);
    let mut endpoints = Vec::new();
    let mut guardian_cancel = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let mut tokens: HashMap<String, Arc<dyn TokenView>> = HashMap::new();
        tokens.insert(
            CHAIN.into(),
            Arc::new(EvmTokenView::new(&anvil.url, &token, fast_retry()).unwrap()),
        );
        let g = Arc::new(
            ReserveGuardian::new(
                key.clone(),
                vec![coordinator.public()],
                Arc::new(bitcoin.clone()),
                reserve.clone(),
                Network::Regtest,
                tokens,
                ReservePolicy {
                    min_deposit_confirmations: 3,
                    min_burn_confirmations: 1,
                    max_release_fee_sats: 50_000,
                    max_request_ttl_ms: 120_000,
                },
                Some(&dir.path().join(format!("guardian{i}.jsonl"))),
            )
            .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            ubtc_guardian::server::serve(listener, ubtc_guardian::reserve_ops::router(g), c).await
        });
        endpoints.push(ReserveEndpoint {
            url,
            key: key.public(),
        });
        guardian_cancel.push(cancel);
    }
    let client = Arc::new(
        ReserveOpsClient::new(endpoints, coordinator, 2, Duration::from_secs(10)).unwrap(),
    );
    let mut pg = None;
    let store: Arc<dyn Store> = if postgres {
        let url = std::env::var("UBTC_TEST_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".to_owned());
        let schema = format!("ubtc_test_{}", uuid::Uuid::new_v4().simple());
        pg = Some(PgSchema {
            url: url.clone(),
            schema: schema.clone(),
        });
        Arc::new(
            ubtc_store::PgStore::connect_in_schema_with(&url, &schema, 8)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL is required at {url}: {e}")),
        )
    } else {
        ubtc_store::connect(
            &format!("sqlite:{}", dir.path().join("ubtc.db").display()),
            4,
        )
        .await
        .unwrap()
    };
    store.migrate().await.unwrap();
    World {
        anvil,
        accounts,
        token,
        minter,
        bitcoin,
        reserve,
        store,
        client,
        guardian_cancel,
        _pg: pg,
        _dir: dir,
    }
}

fn redeemer() -> String {
    let k = SecretKey::from_slice(&[0x5a; 32]).unwrap();
    let pk = CompressedPublicKey(k.public_key(&bitcoin::secp256k1::Secp256k1::new()));
    Address::p2wpkh(&pk, Network::Regtest).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_mint_burn_release_end_to_end() {
    end_to_end(world_on(false).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deposit_mint_burn_release_end_to_end_on_postgres() {
    end_to_end(world_on(true).await).await;
}

async fn end_to_end(w: World) {
    let ops = w.ops(10_000_000);
    let op = Actor {
        name: "operator:alice".into(),
        ip: Some("127.0.0.1".into()),
        user_agent: Some("test".into()),
    };
    let reserve_address = ops.settings().reserve_address();
    let reserve_spk = w.reserve.script_pubkey(Wrapping::Wsh).to_hex_string();

    // ---- deposit → confirmed at 3 confirmations
    let utxo = w.bitcoin.fund(&reserve_address, &reserve_spk, 1_000_000);
    let deposit = ops
        .record_deposit(
            &op,
            &DepositRequest {
                txid: utxo.txid.clone(),
                vout: Some(0),
                expected_sats: json!("1000000"),
                reserve_address: None,
                confirmations: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(deposit.state, DepositState::Expected);
    assert_eq!(
        tick(&ops).await.deposits_confirmed,
        0,
        "1 confirmation of 3"
    );

    // A mint before the deposit is confirmed is refused and changes nothing.
    let before = db_state(&w.store).await;
    let e = ops
        .request_mint(&op, CHAIN, &w.accounts[1], &json!(1_000_000), deposit.id)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "deposit_not_confirmed");
    assert_eq!(db_state(&w.store).await, before);

    w.bitcoin.advance(2);
    assert_eq!(tick(&ops).await.deposits_confirmed, 1);
    let deposit = w.store.get_deposit(deposit.id).await.unwrap().unwrap();
    assert_eq!(deposit.state, DepositState::Confirmed);

    // ---- bad mint requests: clear codes, database unchanged
    let before = db_state(&w.store).await;
    let to = w.accounts[1].clone();
    let cases: Vec<(&str, serde_json::Value, &str, &str)> = vec![
        ("solana", json!(1000), to.as_str(), "unknown_chain"),
        (CHAIN, json!(0), to.as_str(), "invalid_amount"),
        (CHAIN, json!(-5), to.as_str(), "invalid_amount"),
        (CHAIN, json!("-5"), to.as_str(), "invalid_amount"),
        (
            CHAIN,
            json!("99999999999999999999999999"),
            to.as_str(),
            "invalid_amount",
        ),
        (CHAIN, json!(1.5), to.as_str(), "invalid_amount"),
        (
            CHAIN,
            json!(1000),
            "0x0000000000000000000000000000000000000000",
            "invalid_address",
        ),
        (CHAIN, json!(1000), "not-an-address", "invalid_address"),
        // Reserves hold 1,000,000 sats and the supply is 0: one sat more is below 1.
        (CHAIN, json!(1_000_001), to.as_str(), "ratio_below_one"),
    ];
    for (chain, amount, to, code) in cases {
        let e = ops
            .request_mint(&op, chain, to, &amount, deposit.id)
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{chain} {amount} {to}: {e}");
    }
    let e = w
        .ops(500_000)
        .request_mint(&op, CHAIN, &to, &json!(600_000), deposit.id)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "daily_limit_exceeded", "{e}");
    assert_eq!(db_state(&w.store).await, before);

    // ---- mint, approved by 2 of 3 guardians while the third is down
    w.guardian_cancel[2].cancel();
    let mint = ops
        .request_mint(&op, CHAIN, &to, &json!("1000000"), deposit.id)
        .await
        .unwrap();
    assert_eq!(mint.state, MintState::Requested);
    let t = tick(&ops).await;
    assert_eq!((t.mints_approved, t.mints_submitted), (1, 1), "{t:?}");
    let approvals = w
        .store
        .list_op_approvals(OpKind::Mint, mint.id)
        .await
        .unwrap();
    assert_eq!(approvals.len(), 2);
    // With automine the receipt is there at once, maybe already in the same tick.
    let t2 = tick(&ops).await;
    assert_eq!(t.mints_finished + t2.mints_finished, 1, "{t:?} {t2:?}");
    let mint = w.store.get_mint(mint.id).await.unwrap().unwrap();
    assert_eq!(mint.state, MintState::Confirmed);
    assert_eq!(w.minter.total_supply().await.unwrap(), 1_000_000);
    assert_eq!(w.balance(&to).await, 1_000_000);
    // Nothing left to do: a further tick mints nothing twice.
    assert!(ubtc_pipeline::StepOutcome::is_idle(&tick(&ops).await));
    assert_eq!(w.minter.total_supply().await.unwrap(), 1_000_000);

    // The same question gets the same signed answer from a guardian.
    let check = MintCheck {
        op_id: mint.id,
        chain: CHAIN.into(),
        to_address: mint.to_address.clone(),
        amount_sats: mint.amount_sats,
        deposit_address: reserve_address.clone(),
        deposit_txid: utxo.txid.clone(),
        deposit_vout: Some(0),
        deposit_sats: 1_000_000,
    };
    let again = w.client.ask_mint(&check).await;
    assert_eq!(again.len(), 2);
    for v in &again {
        assert!(
            approvals.iter().any(|a| a.answer == v.answer_json),
            "same answer"
        );
    }

    // ---- burn: the holder sends 400,000 to the minter, the operator burns it
    let transfer = Encoder::new()
        .address(w.minter.address())
        .unwrap()
        .uint(400_000)
        .call("transfer(address,uint256)");
    w.anvil
        .send(&to, Some(&w.token), 0, &transfer)
        .await
        .unwrap();
    let redeemer = redeemer();
    let before = db_state(&w.store).await;
    for (chain, amount, addr, code) in [
        ("solana", json!(400_000), redeemer.as_str(), "unknown_chain"),
        (CHAIN, json!(0), redeemer.as_str(), "invalid_amount"),
        (CHAIN, json!(400_000), "bc1qnotregtest", "invalid_address"),
    ] {
        let e = ops
            .request_burn(&op, chain, &amount, addr)
            .await
            .unwrap_err();
        assert_eq!(e.code(), code);
    }
    assert_eq!(db_state(&w.store).await, before);
    let burn = ops
        .request_burn(&op, CHAIN, &json!(400_000), &redeemer)
        .await
        .unwrap();
    // A release before the burn is confirmed is refused.
    let e = ops.request_release(&op, burn.id, None).await.unwrap_err();
    assert_eq!(e.code(), "burn_not_confirmed");
    let t = tick(&ops).await;
    let t2 = tick(&ops).await;
    assert_eq!(t.burns_submitted, 1, "{t:?}");
    assert_eq!(t.burns_finished + t2.burns_finished, 1, "{t:?} {t2:?}");
    let burn = w.store.get_burn(burn.id).await.unwrap().unwrap();
    assert_eq!(burn.state, BurnState::Confirmed);
    assert_eq!(w.minter.total_supply().await.unwrap(), 600_000);

    // ---- release larger than the burn: refused, nothing written
    let before = db_state(&w.store).await;
    let e = ops
        .request_release(&op, burn.id, Some(&json!(400_001)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "release_exceeds_burn");
    // Exactly the burn to the redeemer leaves no room for the fee: also refused.
    let e = ops
        .request_release(&op, burn.id, Some(&json!(400_000)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), "release_exceeds_burn");
    assert_eq!(db_state(&w.store).await, before);

    // The guardians refuse, on their own, a release paying more than was burned.
    let utxos = w.bitcoin.address_utxos(&reserve_address).await.unwrap();
    let (greedy, _) = release::build_release(
        &w.reserve,
        Network::Regtest,
        &utxos,
        &redeemer,
        Payout::Exact(450_000),
        5,
    )
    .unwrap();
    let votes = w
        .client
        .ask_release(&ReleaseCheck {
            op_id: uuid::Uuid::now_v7(),
            chain: CHAIN.into(),
            burn_tx: burn.tx_hash.clone().unwrap(),
            burn_sats: 450_000,
            redeemer_address: redeemer.clone(),
            release: greedy,
        })
        .await;
    assert_eq!(votes.len(), 2);
    for v in &votes {
        assert_eq!(v.decision.as_ref().unwrap_err().0, "release_exceeds_burn");
    }

    // ---- the release: PSBT → 2 partial signatures → verified → broadcast
    let rel = ops.request_release(&op, burn.id, None).await.unwrap();
    assert_eq!(rel.state, ReleaseState::Built);
    assert_eq!(rel.amount_sats + rel.fee_sats, 400_000);
    let t = tick(&ops).await;
    assert_eq!((t.releases_signed, t.releases_broadcast), (1, 1), "{t:?}");
    let rel = w.store.get_release(rel.id).await.unwrap().unwrap();
    assert_eq!(rel.state, ReleaseState::Broadcast);
    // Independently: the final transaction passes the strict script interpreter of the
    // proof verifier on every input.
    let request: release::ReleaseRequest = serde_json::from_str(&rel.psbt).unwrap();
    let plan = request.plan().unwrap();
    let tx: bitcoin::Transaction =
        bitcoin::consensus::encode::deserialize_hex(rel.final_tx.as_deref().unwrap()).unwrap();
    release::verify_release_tx(&tx, &plan.prevouts).unwrap();
    // … and a tampered copy does not.
    let mut bad = tx.clone();
    bad.output[0].value = bitcoin::Amount::from_sat(bad.output[0].value.to_sat() + 1);
    assert!(release::verify_release_tx(&bad, &plan.prevouts).is_err());
    // The dev backend applied it: the redeemer holds the release, the reserve the change.
    let paid = w.bitcoin.address_utxos(&redeemer).await.unwrap();
    assert_eq!(paid.len(), 1);
    assert_eq!(paid[0].amount_sats, rel.amount_sats);
    assert_eq!(paid[0].txid, rel.txid.clone().unwrap());
    let left: u64 = w
        .bitcoin
        .address_utxos(&reserve_address)
        .await
        .unwrap()
        .iter()
        .map(|u| u.amount_sats)
        .sum();
    assert_eq!(left, 600_000);
    assert_eq!(
        w.bitcoin
            .tx_confirmations(&rel.txid.clone().unwrap())
            .await
            .unwrap(),
        Some(0)
    );

    // ---- guardians refuse reuse: the same burn for another release, and an approved
    // operation id with other contents.
    let utxos = w.bitcoin.address_utxos(&reserve_address).await.unwrap();
    let (second, _) = release::build_release(
        &w.reserve,
        Network::Regtest,
        &utxos,
        &redeemer,
        Payout::FeeIncluded(100_000),
        5,
    )
    .unwrap();
    let votes = w
        .client
        .ask_release(&ReleaseCheck {
            op_id: uuid::Uuid::now_v7(),
            chain: CHAIN.into(),
            burn_tx: burn.tx_hash.clone().unwrap(),
            burn_sats: 400_000,
            redeemer_address: redeemer.clone(),
            release: second,
        })
        .await;
    assert_eq!(votes.len(), 2);
    for v in &votes {
        assert_eq!(v.decision.as_ref().unwrap_err().0, "already_used");
    }
    let mut other = check.clone();
    other.amount_sats -= 1;
    let votes = w.client.ask_mint(&other).await;
    assert_eq!(votes.len(), 2);
    for v in &votes {
        assert_eq!(v.decision.as_ref().unwrap_err().0, "already_decided_other");
    }

    // ---- a mint that would push the ratio below 1 is refused by the pipeline AND by
    // the guardians. A rogue mint outside the workflow makes the supply exceed reserves.
    let rogue = w.minter.sign_mint(&w.accounts[2], 200_000).await.unwrap();
    w.minter.send(&rogue).await.unwrap();
    w.anvil.receipt(&rogue.hash).await.unwrap();
    let utxo2 = w.bitcoin.fund(&reserve_address, &reserve_spk, 100_000);
    w.bitcoin.advance(3);
    let d2 = ops
        .record_deposit(
            &op,
            &DepositRequest {
                txid: utxo2.txid.clone(),
                vout: Some(0),
                expected_sats: json!(100_000),
                reserve_address: None,
                confirmations: None,
            },
        )
        .await
        .unwrap();
    tick(&ops).await;
    let before = db_state(&w.store).await;
    let e = ops
        .request_mint(&op, CHAIN, &to, &json!(100_000), d2.id)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "ratio_below_one");
    assert_eq!(db_state(&w.store).await, before);
    let votes = w
        .client
        .ask_mint(&MintCheck {
            op_id: uuid::Uuid::now_v7(),
            chain: CHAIN.into(),
            to_address: to.clone(),
            amount_sats: 100_000,
            deposit_address: reserve_address.clone(),
            deposit_txid: utxo2.txid.clone(),
            deposit_vout: Some(0),
            deposit_sats: 100_000,
        })
        .await;
    assert_eq!(votes.len(), 2);
    for v in &votes {
        assert_eq!(v.decision.as_ref().unwrap_err().0, "ratio_below_one");
    }

    // Every step is in the hash-chained audit trail, and the chain verifies.
    let audit = w.store.list_audit(None, 1000).await.unwrap();
    for action in [
        "reserve.deposit.record",
        "reserve.deposit.confirmed",
        "reserve.mint.request",
        "reserve.mint.approved",
        "reserve.mint.submitted",
        "reserve.mint.finished",
        "reserve.burn.request",
        "reserve.burn.submitted",
        "reserve.burn.finished",
        "reserve.release.request",
        "reserve.release.signed",
        "reserve.release.broadcast",
    ] {
        assert!(audit.iter().any(|a| a.action == action), "{action} audited");
    }
    assert!(audit.iter().any(|a| a.actor == "operator:alice"));
    let check = w.store.verify_audit_chain().await.unwrap();
    assert_eq!(check.first_broken, None);
    assert_eq!(check.entries as usize, audit.len());
}

/// The admin routes over HTTP, as an operator (an API key with the operator role): the
/// requests reach the same workflow, refusals carry their code and change nothing,
/// lists read back what was stored. (Every route × role is walked by the admin API's
/// matrix test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_over_http() {
    let w = world().await;
    let ops = Arc::new(w.ops(10_000_000));
    // The webhook bootstrap key only makes the admin API "configured"; the caller uses
    // a stored operator API key.
    let bootstrap = "webhooks-bootstrap-key-for-this-test-0123456789";
    let key = ubtc_api::admin::auth::random_secret(ubtc_api::admin::auth::API_KEY_PREFIX);
    w.store
        .create_api_key(
            &ubtc_store::NewApiKey {
                name: "reserve test".into(),
                key_hash: ubtc_api::admin::auth::secret_hash(&key),
                roles: vec!["operator".into()],
                created_by: "test".into(),
                owner_id: None,
                // Operator keys always expire (docs/admin.md).
                expires_at: Some(ubtc_core::Timestamp(
                    ubtc_core::Timestamp::now().as_millis() + 3_600_000,
                )),
            },
            ubtc_core::Timestamp::now(),
        )
        .await
        .unwrap();
    let key = key.as_str();
    let check: ubtc_api::webhooks::TargetCheck = Arc::new(|_: &str| Ok(()));
    let state = ubtc_api::ApiState::new(w.store.clone(), Vec::new())
        .with_webhook_admin(ubtc_api::webhooks::WebhookAdmin::new(bootstrap, check).unwrap())
        .with_reserve_ops(ops.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move { ubtc_api::serve(listener, ubtc_api::public_router(state), c).await });
    let http = reqwest::Client::new();
    let call =
        |method: reqwest::Method, path: &str, body: Option<serde_json::Value>, auth: bool| {
            let mut req = http.request(method, format!("{base}{path}"));
            if auth {
                req = req.bearer_auth(key);
            }
            if let Some(b) = body {
                req = req.json(&b);
            }
            async move {
                let r = req.send().await.unwrap();
                let status = r.status().as_u16();
                let v: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
                (status, v)
            }
        };
    let code = |v: &serde_json::Value| v["error"]["code"].as_str().unwrap_or("").to_owned();
    use reqwest::Method;

    let (s, v) = call(Method::GET, "/v1/admin/deposits", None, false).await;
    assert_eq!((s, code(&v).as_str()), (401, "unauthorized"));

    let reserve_address = ops.settings().reserve_address();
    let reserve_spk = w.reserve.script_pubkey(Wrapping::Wsh).to_hex_string();
    let utxo = w.bitcoin.fund(&reserve_address, &reserve_spk, 500_000);
    let (s, dep) = call(
        Method::POST,
        "/v1/admin/deposits",
        Some(json!({"txid": utxo.txid, "vout": 0, "expected_sats": "500000"})),
        true,
    )
    .await;
    assert_eq!(s, 201, "{dep}");
    assert_eq!(dep["state"], "expected");
    let deposit_id = dep["id"].as_str().unwrap().to_owned();

    let before = db_state(&w.store).await;
    let mint = |chain: &str, amount: serde_json::Value| json!({"chain": chain, "to": w.accounts[1], "amount": amount, "deposit_id": deposit_id});
    for (body, status, expected) in [
        (mint("nope", json!(1000)), 400, "unknown_chain"),
        (mint(CHAIN, json!("-5")), 400, "invalid_amount"),
        (mint(CHAIN, json!(0)), 400, "invalid_amount"),
        (
            mint(CHAIN, json!("184467440737095516160")),
            400,
            "invalid_amount",
        ),
        (mint(CHAIN, json!(1000)), 409, "deposit_not_confirmed"),
        (json!({"chain": CHAIN}), 400, "invalid_body"),
    ] {
        let (s, v) = call(Method::POST, "/v1/admin/mints", Some(body.clone()), true).await;
        assert_eq!((s, code(&v).as_str()), (status, expected), "{body}: {v}");
    }
    assert_eq!(db_state(&w.store).await, before);

    w.bitcoin.advance(3);
    assert_eq!(ops.tick().await.unwrap().deposits_confirmed, 1);
    let (s, v) = call(
        Method::POST,
        "/v1/admin/mints",
        Some(mint(CHAIN, json!(500_001))),
        true,
    )
    .await;
    assert_eq!((s, code(&v).as_str()), (422, "ratio_below_one"), "{v}");
    // With more reserves than this deposit, the deposit itself still bounds the mint.
    w.bitcoin.fund(&reserve_address, &reserve_spk, 1_000_000);
    let (s, v) = call(
        Method::POST,
        "/v1/admin/mints",
        Some(mint(CHAIN, json!(500_001))),
        true,
    )
    .await;
    assert_eq!((s, code(&v).as_str()), (422, "exceeds_deposit"), "{v}");
    let (s, m) = call(
        Method::POST,
        "/v1/admin/mints",
        Some(mint(CHAIN, json!("500000"))),
        true,
    )
    .await;
    assert_eq!(s, 201, "{m}");
    let (s, again) = call(
        Method::POST,
        "/v1/admin/mints",
        Some(mint(CHAIN, json!(500_000))),
        true,
    )
    .await;
    assert_eq!(
        (s, &again["id"]),
        (201, &m["id"]),
        "same request, same mint"
    );

    let (s, list) = call(Method::GET, "/v1/admin/mints?state=requested", None, true).await;
    assert_eq!(s, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["approvals"], json!([]), "not asked yet");
    // Once the guardians answered, the list shows each approval: the guardian's key
    // and fingerprint, the decision, when it answered and when it was recorded.
    tick(&ops).await;
    let mint_id: uuid::Uuid = m["id"].as_str().unwrap().parse().unwrap();
    let stored = w
        .store
        .list_op_approvals(OpKind::Mint, mint_id)
        .await
        .unwrap();
    assert!(stored.len() >= 2, "{stored:?}");
    let (s, list) = call(Method::GET, "/v1/admin/mints", None, true).await;
    assert_eq!(s, 200);
    let listed = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == m["id"])
        .unwrap()["approvals"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(listed.len(), stored.len(), "{list}");
    for (a, st) in listed.iter().zip(&stored) {
        assert_eq!(a["guardian_key"], st.guardian_key.as_str());
        let key: bitcoin::secp256k1::PublicKey = st.guardian_key.parse().unwrap();
        assert_eq!(
            a["fingerprint"],
            ubtc_guardian::keystore::fingerprint(&key),
            "{a}"
        );
        assert_eq!(a["decision"], "approved", "{a}");
        assert!(
            a["reason_code"].is_null() && a["answered_at"].is_string(),
            "{a}"
        );
    }
    let (s, v) = call(Method::GET, "/v1/admin/mints?state=bogus", None, true).await;
    assert_eq!((s, code(&v).as_str()), (400, "invalid_status"));
    for path in [
        "/v1/admin/deposits",
        "/v1/admin/burns",
        "/v1/admin/releases",
    ] {
        let (s, _) = call(Method::GET, path, None, true).await;
        assert_eq!(s, 200, "{path}");
    }
    let (s, v) = call(
        Method::POST,
        "/v1/admin/releases",
        Some(json!({"burn_id": uuid::Uuid::now_v7()})),
        true,
    )
    .await;
    assert_eq!((s, code(&v).as_str()), (404, "operation_not_found"), "{v}");

    let audit = w.store.list_audit(None, 100).await.unwrap();
    assert!(audit
        .iter()
        .any(|a| a.action == "reserve.mint.request" && a.actor == "api-key:reserve test"));
    cancel.cancel();
}

/// A worker that dies after storing a signed mint and before sending it: the next
/// tick sends the very same transaction (same nonce, same hash), so the supply grows
/// once. Ticking on changes nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_storing_and_sending_a_mint_mints_once() {
    let w = world().await;
    let ops = w.ops(10_000_000);
    let op = Actor::default();
    let reserve_address = ops.settings().reserve_address();
    let reserve_spk = w.reserve.script_pubkey(Wrapping::Wsh).to_hex_string();
    let utxo = w.bitcoin.fund(&reserve_address, &reserve_spk, 300_000);
    w.bitcoin.advance(3);
    let d = ops
        .record_deposit(
            &op,
            &DepositRequest {
                txid: utxo.txid,
                vout: Some(0),
                expected_sats: json!(300_000),
                reserve_address: None,
                confirmations: None,
            },
        )
        .await
        .unwrap();
    tick(&ops).await;
    let to = w.accounts[3].clone();
    let m = ops
        .request_mint(&op, CHAIN, &to, &json!(300_000), d.id)
        .await
        .unwrap();
    // The approval round, then the first half of the send step only (as a worker
    // killed right after its store write would leave it).
    w.store
        .approve_mint(m.id, ubtc_core::Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    let signed = w.minter.sign_mint(&to, 300_000).await.unwrap();
    w.store
        .mint_submitted(m.id, &signed.hash, &signed.raw, ubtc_core::Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        w.minter.total_supply().await.unwrap(),
        0,
        "nothing sent yet"
    );

    let t = tick(&ops).await;
    assert_eq!(t.mints_finished, 0, "{t:?}");
    w.anvil.receipt(&signed.hash).await.unwrap();
    let t = tick(&ops).await;
    assert_eq!(t.mints_finished, 1, "{t:?}");
    let done = w.store.get_mint(m.id).await.unwrap().unwrap();
    assert_eq!(done.state, MintState::Confirmed);
    assert_eq!(done.tx_hash.as_deref(), Some(signed.hash.as_str()));
    assert_eq!(w.minter.total_supply().await.unwrap(), 300_000);
    // Resending the stored bytes again is harmless, and no tick mints again.
    w.minter.send(&signed).await.unwrap();
    assert!(ubtc_pipeline::StepOutcome::is_idle(&tick(&ops).await));
    assert_eq!(w.minter.total_supply().await.unwrap(), 300_000);
    assert_eq!(w.balance(&to).await, 300_000);
}

// ----- one guardian's release and mint checks, called directly (no anvil) -----

/// Stand-in token view, said plainly: the burns and the supply are what the test says
/// (the end-to-end tests above read real burns on anvil). `delay` holds every burn read
/// so that concurrent requests overlap inside the guardian.
struct StubToken {
    burns: HashMap<String, u128>,
    delay: Duration,
}

#[async_trait::async_trait]
impl TokenView for StubToken {
    async fn supply_sats(&self) -> Result<u64, ubtc_chains::ChainError> {
        Ok(0)
    }
    async fn burn(
        &self,
        tx_hash: &str,
    ) -> Result<Option<ubtc_chains::evm::minter::BurnSeen>, ubtc_chains::ChainError> {
        tokio::time::sleep(self.delay).await;
        Ok(self
            .burns
            .get(tx_hash)
            .map(|a| ubtc_chains::evm::minter::BurnSeen {
                from: "0x00000000000000000000000000000000000000bb".into(),
                amount: *a,
                block: 1,
                confirmations: 10,
            }))
    }
}

struct Lone {
    guardian: Arc<ReserveGuardian>,
    key: GuardianKey,
    coordinator: GuardianKey,
    bitcoin: DevBitcoin,
    reserve: SortedMulti,
    address: String,
    spk: String,
}

const BURN1: &str = "0x01";
const BURN2: &str = "0x02";

fn lone(delay: Duration) -> Lone {
    lone_recorded(delay, None)
}

/// A reserve guardian with its key, reserve and views; `log`: its approval record.
fn reserve_guardian(
    key: &GuardianKey,
    coordinator: &GuardianKey,
    bitcoin: &DevBitcoin,
    reserve: &SortedMulti,
    delay: Duration,
    log: Option<&std::path::Path>,
) -> std::io::Result<ReserveGuardian> {
    let mut tokens: HashMap<String, Arc<dyn TokenView>> = HashMap::new();
    let burns = [(BURN1.to_owned(), 1_000_000), (BURN2.to_owned(), 1_000_000)];
    tokens.insert(
        CHAIN.into(),
        Arc::new(StubToken {
            burns: burns.into_iter().collect(),
            delay,
        }),
    );
    ReserveGuardian::new(
        key.clone(),
        vec![coordinator.public()],
        Arc::new(bitcoin.clone()),
        reserve.clone(),
        Network::Regtest,
        tokens,
        ReservePolicy {
            min_deposit_confirmations: 1,
            min_burn_confirmations: 1,
            max_release_fee_sats: 50_000,
            max_request_ttl_ms: 120_000,
        },
        log,
    )
}

/// `log: None` keeps approvals in memory: each such test is one guardian lifetime.
fn lone_recorded(delay: Duration, log: Option<&std::path::Path>) -> Lone {
    let keys: Vec<GuardianKey> = (0..3).map(|_| GuardianKey::generate()).collect();
    let reserve = SortedMulti::new(
        2,
        keys.iter()
            .map(|k| CompressedPublicKey(k.public()))
            .collect(),
    )
    .unwrap();
    let coordinator = GuardianKey::generate();
    let bitcoin = DevBitcoin::new(100);
    let guardian =
        Arc::new(reserve_guardian(&keys[0], &coordinator, &bitcoin, &reserve, delay, log).unwrap());
    let address = reserve.address(Network::Regtest, Wrapping::Wsh).to_string();
    let spk = reserve.script_pubkey(Wrapping::Wsh).to_hex_string();
    Lone {
        guardian,
        key: keys[0].clone(),
        coordinator,
        bitcoin,
        reserve,
        address,
        spk,
    }
}

impl Lone {
    /// The guardian's decision: `Ok(())` approved, `Err(code)` refused.
    async fn ask(&self, op: ubtc_guardian::reserve_ops::ReserveOp) -> Result<(), String> {
        use ubtc_guardian::protocol;
        use ubtc_guardian::reserve_ops::{OpOutcome, ReserveOpAnswer, ReserveOpRequest};
        let now = ubtc_core::Timestamp::now();
        let request = ReserveOpRequest {
            request_id: uuid::Uuid::now_v7(),
            issued_at: now,
            expires_at: now.plus_millis(60_000),
            op,
        };
        let env = protocol::seal(protocol::REQUEST_TAG, &request, &self.coordinator).unwrap();
        let answer = self.guardian.handle(&env).await.unwrap();
        let (body, _) = protocol::open::<ReserveOpAnswer>(
            protocol::ANSWER_TAG,
            &answer,
            &[self.guardian.public_key()],
        )
        .unwrap();
        match body.outcome {
            OpOutcome::Approved { .. } => Ok(()),
            OpOutcome::Refused { code, .. } => Err(code),
        }
    }

    fn release(
        &self,
        op_id: uuid::Uuid,
        burn: &str,
        utxos: &[ubtc_core::bundle::Utxo],
        to: &str,
        payout: Payout,
    ) -> ubtc_guardian::reserve_ops::ReserveOp {
        let (request, _) =
            release::build_release(&self.reserve, Network::Regtest, utxos, to, payout, 1).unwrap();
        ubtc_guardian::reserve_ops::ReserveOp::Release(ReleaseCheck {
            op_id,
            chain: CHAIN.into(),
            burn_tx: burn.into(),
            burn_sats: 1_000_000,
            redeemer_address: to.into(),
            release: request,
        })
    }
}

/// BIP-143 signs each input's amount alone, so the guardian takes
/// amounts from its own view, and never signs one outpoint for two releases.
#[tokio::test]
async fn guardian_checks_input_amounts_and_signs_an_outpoint_once() {
    let l = lone(Duration::ZERO);
    let a = l.bitcoin.fund(&l.address, &l.spk, 200_000);
    let b = l.bitcoin.fund(&l.address, &l.spk, 150_000);
    // B stated as 1,000 sats: a consistent PSBT, but not what the chain holds.
    let mut understated = b.clone();
    understated.amount_sats = 1_000;
    let op = l.release(
        uuid::Uuid::now_v7(),
        BURN1,
        &[a.clone(), understated],
        &redeemer(),
        Payout::Exact(200_500),
    );
    assert_eq!(l.ask(op).await.unwrap_err(), "utxo_mismatch");
    // An outpoint that is not an unspent reserve output here at all.
    let mut unknown = a.clone();
    unknown.txid = "ab".repeat(32);
    let op = l.release(
        uuid::Uuid::now_v7(),
        BURN1,
        &[unknown],
        &redeemer(),
        Payout::Exact(10_000),
    );
    assert_eq!(l.ask(op).await.unwrap_err(), "utxo_mismatch");

    // The honest release of burn 1 spends A; a release of burn 2 spending A again is
    // refused, also after a restart of the decision (the record holds the outpoint).
    let op = l.release(
        uuid::Uuid::now_v7(),
        BURN1,
        &[a.clone(), b.clone()],
        &redeemer(),
        Payout::Exact(100_000),
    );
    l.ask(op).await.unwrap();
    let op = l.release(
        uuid::Uuid::now_v7(),
        BURN2,
        std::slice::from_ref(&a),
        &redeemer(),
        Payout::Exact(90_000),
    );
    assert_eq!(l.ask(op).await.unwrap_err(), "already_used");
    // B was not spent by the first release (A alone covered it): burn 2 may use it.
    let op = l.release(
        uuid::Uuid::now_v7(),
        BURN2,
        &[b],
        &redeemer(),
        Payout::Exact(90_000),
    );
    l.ask(op).await.unwrap();
}

/// Concurrent requests for one operation id with different PSBTs get
/// one approval, not one each (the decision is re-checked after the chain reads).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_for_one_release_get_one_approval() {
    let l = lone(Duration::from_millis(300));
    let utxo = l.bitcoin.fund(&l.address, &l.spk, 500_000);
    let op_id = uuid::Uuid::now_v7();
    let asks = (0..5u64).map(|i| {
        let op = l.release(
            op_id,
            BURN1,
            std::slice::from_ref(&utxo),
            &redeemer(),
            Payout::Exact(100_000 + i),
        );
        l.ask(op)
    });
    let results = futures::future::join_all(asks).await;
    let approved = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(approved, 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r, "already_decided_other");
    }
}

/// A deposit stated without its vout and the same deposit with vout 0
/// are one outpoint: it backs one mint.
#[tokio::test]
async fn one_deposit_output_backs_one_mint_however_it_is_named() {
    let l = lone(Duration::ZERO);
    let d = l.bitcoin.fund(&l.address, &l.spk, 100_000);
    let mint = |vout: Option<u32>| {
        ubtc_guardian::reserve_ops::ReserveOp::Mint(MintCheck {
            op_id: uuid::Uuid::now_v7(),
            chain: CHAIN.into(),
            to_address: "0x00000000000000000000000000000000000000cc".into(),
            amount_sats: 100_000,
            deposit_address: l.address.clone(),
            deposit_txid: d.txid.clone(),
            deposit_vout: vout,
            deposit_sats: 100_000,
        })
    };
    l.ask(mint(None)).await.unwrap();
    assert_eq!(l.ask(mint(Some(0))).await.unwrap_err(), "already_used");
    assert_eq!(l.ask(mint(None)).await.unwrap_err(), "already_used");
    // A deposit output that backs a mint may still be spent by a release.
    let op = l.release(
        uuid::Uuid::now_v7(),
        BURN1,
        std::slice::from_ref(&d),
        &redeemer(),
        Payout::Exact(50_000),
    );
    l.ask(op).await.unwrap();
}

/// The redeemer comes from the coordinator (docs/reserve-ops.md, trust
/// assumptions); the guardian at least refuses the reserve's own address, where
/// "paid to the redeemer" and "change" cannot be told apart.
#[tokio::test]
async fn a_release_to_the_reserve_itself_is_refused() {
    let l = lone(Duration::ZERO);
    let utxo = l.bitcoin.fund(&l.address, &l.spk, 500_000);
    let op = l.release(
        uuid::Uuid::now_v7(),
        BURN1,
        std::slice::from_ref(&utxo),
        &l.address.clone(),
        Payout::Exact(100_000),
    );
    assert_eq!(l.ask(op).await.unwrap_err(), "bad_request");
}

/// The approval records' damage rule on a real reserve guardian's record: a torn last
/// line (a crash mid-write) is cut at the restart, two more approvals go after it, and
/// the next restart remembers all three (the same operation gets its answer again, its
/// deposit backs no other mint, its id no other contents). A damaged line in the
/// middle stops the guardian, naming the file and the line, where it used to be
/// dropped silently.
#[tokio::test]
async fn reserve_ops_record_torn_tail_is_cut_and_nothing_is_forgotten() {
    use ubtc_guardian::reserve_ops::ReserveOp;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reserve-ops.jsonl");
    let mut l = lone_recorded(Duration::ZERO, Some(&path));
    let restart = |l: &Lone| {
        reserve_guardian(
            &l.key,
            &l.coordinator,
            &l.bitcoin,
            &l.reserve,
            Duration::ZERO,
            Some(&path),
        )
    };
    let mint = |l: &Lone, op_id: uuid::Uuid, deposit: &ubtc_core::bundle::Utxo, amount: u64| {
        ReserveOp::Mint(MintCheck {
            op_id,
            chain: CHAIN.into(),
            to_address: "0x00000000000000000000000000000000000000cc".into(),
            amount_sats: amount,
            deposit_address: l.address.clone(),
            deposit_txid: deposit.txid.clone(),
            deposit_vout: Some(deposit.vout),
            deposit_sats: deposit.amount_sats,
        })
    };
    let d1 = l.bitcoin.fund(&l.address, &l.spk, 100_000);
    let m1 = uuid::Uuid::now_v7();
    l.ask(mint(&l, m1, &d1, 100_000)).await.unwrap();
    // A crash in the middle of the next write.
    {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"op_key":"mint:0190","resource":"depo"#)
            .unwrap();
    }
    l.guardian = Arc::new(restart(&l).unwrap());
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.ends_with("}\n"), "the fragment is cut: {text}");
    let d2 = l.bitcoin.fund(&l.address, &l.spk, 200_000);
    let d3 = l.bitcoin.fund(&l.address, &l.spk, 300_000);
    let (m2, m3) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    l.ask(mint(&l, m2, &d2, 200_000)).await.unwrap();
    l.ask(mint(&l, m3, &d3, 300_000)).await.unwrap();

    l.guardian = Arc::new(restart(&l).unwrap());
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 3);
    for (op, d, amount) in [(m1, &d1, 100_000), (m2, &d2, 200_000), (m3, &d3, 300_000)] {
        // The same operation: its recorded answer.
        l.ask(mint(&l, op, d, amount)).await.unwrap();
        // Its deposit for another mint, and its id with other contents: refused.
        assert_eq!(
            l.ask(mint(&l, uuid::Uuid::now_v7(), d, amount))
                .await
                .unwrap_err(),
            "already_used"
        );
        assert_eq!(
            l.ask(mint(&l, op, d, amount - 1)).await.unwrap_err(),
            "already_decided_other"
        );
    }

    // A damaged line in the middle: the guardian does not start.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let damaged = format!(
        "{}\n{}\n{}\n",
        lines[0],
        &lines[1][..lines[1].len() / 2],
        lines[2]
    );
    std::fs::write(&path, &damaged).unwrap();
    let err = restart(&l).unwrap_err().to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("damaged at line 2"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), damaged);
}
