//! Reserve management on a Solana chain: a mint goes through the pipeline's
//! `ReserveOps` — deposit confirmed on the dev Bitcoin backend, approved by 2 of 2
//! guardians serving `POST /v1/reserve-ops` over HTTP (each reading the SPL mint's
//! supply through `SolanaTokenView`), signed by the Solana minter whose ed25519 seed is
//! held in the guardian keystore format, stored, sent, and followed to its final status.
//!
//! Stand-ins, said plainly: no Solana validator can be built here, so the Solana node
//! is the JSON-RPC stand-in of `crates/chains/tests/solana_stand_in` (it parses the
//! transaction with its own parser and verifies the ed25519 signature over the message,
//! refusing otherwise; it does not execute the Token program), and no Bitcoin node
//! runs, so guardians and coordinator share one in-memory `DevBitcoin`.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

#[path = "../../chains/tests/solana_stand_in/mod.rs"]
mod solana_stand_in;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::secp256k1::SecretKey;
use bitcoin::{CompressedPublicKey, Network};
use serde_json::json;
use solana_stand_in::{key, stand_in, Decoded};
use tokio_util::sync::CancellationToken;
use ubtc_bitcoin::multisig::{SortedMulti, Wrapping};
use ubtc_chains::dev::DevBitcoin;
use ubtc_chains::evm::RetryPolicy;
use ubtc_chains::solana::minter::{MinterKey, SolanaMinter};
use ubtc_chains::solana::wire::TOKEN_PROGRAM_ID;
use ubtc_chains::solana::SolanaConfig;
use ubtc_core::ChainId;
use ubtc_guardian::keystore::{GuardianKey, Passphrase};
use ubtc_guardian::reserve_ops::{
    load_minter_key, store_minter_key, ReserveEndpoint, ReserveGuardian, ReserveOpsClient,
    ReservePolicy, TokenView,
};
use ubtc_guardian::solana_view::SolanaTokenView;
use ubtc_pipeline::reserve_ops::*;
use ubtc_pipeline::solana_minter::SolanaTokenMinter;
use ubtc_store::reserve_ops::*;

const CHAIN: &str = "solana";

fn solana_config(url: &str) -> SolanaConfig {
    let mut c = SolanaConfig::new(ChainId::parse(CHAIN).unwrap(), url, &key("payment"));
    c.token_mint = Some(key("mint"));
    c.retry = RetryPolicy {
        attempts: 2,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
    };
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_solana_mint_goes_through_reserve_ops_signed_for_the_approved_amount() {
    let dir = tempfile::tempdir().unwrap();
    let (url, node) = stand_in().await;
    let (mint, wallet, holder_account) = (key("mint"), key("holder wallet"), key("holder ta"));
    {
        let mut n = node.lock().unwrap();
        n.supply = (0, 8);
        n.token_accounts
            .insert(holder_account.clone(), mint.clone());
        n.owned.insert(wallet.clone(), vec![holder_account.clone()]);
    }

    // The minter's seed, encrypted at rest in the guardian keystore format.
    let secret = SecretKey::new(&mut rand::thread_rng());
    let pass = Passphrase::new("minter passphrase").unwrap();
    let path = dir.path().join("solana-minter.json");
    store_minter_key(&path, secret, &pass).unwrap();
    assert!(!std::fs::read_to_string(&path)
        .unwrap()
        .contains(&hex::encode(secret.secret_bytes())));
    let seed = load_minter_key(&path, &pass).unwrap();
    let minter = SolanaMinter::new(
        &solana_config(&url),
        MinterKey::from_secret(seed.secret_bytes()),
    )
    .unwrap();
    let minter_address = minter.address();
    assert_eq!(
        minter_address,
        MinterKey::from_secret(secret.secret_bytes()).address()
    );
    let token_minter = Arc::new(SolanaTokenMinter::new(minter, &mint));
    assert!(!format!("{token_minter:?}").contains(&hex::encode(secret.secret_bytes())));

    // Two guardians (2-of-2), each with its own view of the SPL mint.
    let keys: Vec<GuardianKey> = (0..2).map(|_| GuardianKey::generate()).collect();
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
    let mut cancels = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let mut tokens: HashMap<String, Arc<dyn TokenView>> = HashMap::new();
        tokens.insert(
            CHAIN.into(),
            Arc::new(SolanaTokenView::new(&solana_config(&url)).unwrap()),
        );
        let g = Arc::new(
            ReserveGuardian::new(
                k.clone(),
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
        let gurl = format!("http://{}", listener.local_addr().unwrap());
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            ubtc_guardian::server::serve(listener, ubtc_guardian::reserve_ops::router(g), c).await
        });
        endpoints.push(ReserveEndpoint {
            url: gurl,
            key: k.public(),
        });
        cancels.push(cancel);
    }
    let client = Arc::new(
        ReserveOpsClient::new(endpoints, coordinator, 2, Duration::from_secs(10)).unwrap(),
    );
    let store = ubtc_store::connect(
        &format!("sqlite:{}", dir.path().join("ubtc.db").display()),
        4,
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    // One ReserveOps per "process": a restart gets a fresh minter (nothing in memory).
    let make_ops = |m: Arc<SolanaTokenMinter>| {
        let mut minters: HashMap<String, Arc<dyn TokenMinter>> = HashMap::new();
        minters.insert(CHAIN.into(), m);
        ReserveOps::new(
            store.clone(),
            Arc::new(bitcoin.clone()),
            minters,
            client.clone(),
            ReserveOpsSettings {
                network: Network::Regtest,
                reserve: reserve.clone(),
                deposit_confirmations: 3,
                token_confirmations: 12,
                mint_daily_limit_sats: 10_000_000,
                release_daily_limit_sats: 10_000_000,
                fee_rate_sat_vb: 5,
                batch: 16,
            },
        )
    };
    let ops = make_ops(token_minter.clone());
    let op = Actor {
        name: "operator:alice".into(),
        ip: None,
        user_agent: Some("test".into()),
    };

    // ---- deposit of 1,000,000 sats, confirmed at 3 confirmations
    let reserve_address = ops.settings().reserve_address();
    let spk = reserve.script_pubkey(Wrapping::Wsh).to_hex_string();
    let utxo = bitcoin.fund(&reserve_address, &spk, 1_000_000);
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
    bitcoin.advance(2);
    assert_eq!(ops.tick().await.unwrap().deposits_confirmed, 1);

    // ---- bad Solana recipients are refused before anything is stored or signed
    for bad in [
        "not base58!",
        "0x0000000000000000000000000000000000000001",
        &mint,
    ] {
        let e = ops
            .request_mint(&op, CHAIN, bad, &json!(600_000), deposit.id)
            .await
            .unwrap_err();
        assert_eq!(e.code(), "invalid_address", "{bad}: {e}");
    }
    assert!(store.list_mints(None, 10).await.unwrap().is_empty());

    // ---- the mint: approved by both guardians, signed, stored, sent
    let requested = ops
        .request_mint(&op, CHAIN, &wallet, &json!("600000"), deposit.id)
        .await
        .unwrap();
    let t = ops.tick().await.unwrap();
    assert_eq!((t.mints_approved, t.mints_submitted), (1, 1), "{t:?}");
    let m = store.get_mint(requested.id).await.unwrap().unwrap();
    assert_eq!(m.state, MintState::Submitted);
    let signature = m.tx_hash.clone().unwrap();

    let got = node.lock().unwrap().received.clone();
    // Sent after being stored, and (not landed yet) the same bytes again by the same
    // tick's submitted step: one transaction, one signature.
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].signature, got[1].signature);
    // The stand-in accepted it only after verifying the minter's ed25519 signature
    // over the message; here: signed by the minter, a MintTo of exactly the approved
    // amount into the wallet's token account of the mint.
    assert_eq!(got[0].signature, signature);
    assert_eq!(got[0].signer, minter_address);
    let mut data = vec![7u8];
    data.extend_from_slice(&600_000u64.to_le_bytes());
    assert_eq!(
        got[0].instructions,
        vec![Decoded {
            program: TOKEN_PROGRAM_ID.into(),
            accounts: vec![mint.clone(), holder_account.clone(), minter_address.clone()],
            data,
        }]
    );

    // ---- not landed yet: the same stored bytes are sent again (same signature)
    let t = ops.tick().await.unwrap();
    assert_eq!(t.mints_finished, 0);
    {
        let n = node.lock().unwrap();
        assert_eq!(n.received.len(), 3);
        assert_eq!(n.received[2].signature, signature);
    }
    // Only `confirmed` while the chain's commitment is `finalized`: still waiting.
    node.lock().unwrap().statuses.insert(
        signature.clone(),
        json!({"slot": 372_161_901, "confirmations": 3, "err": null, "status": {"Ok": null}, "confirmationStatus": "confirmed"}),
    );
    assert_eq!(ops.tick().await.unwrap().mints_finished, 0);
    assert_eq!(
        store.get_mint(m.id).await.unwrap().unwrap().state,
        MintState::Submitted
    );
    // Finalized: confirmed, whatever token_confirmations says (depth is the commitment).
    node.lock().unwrap().statuses.insert(
        signature.clone(),
        json!({"slot": 372_161_901, "confirmations": null, "err": null, "status": {"Ok": null}, "confirmationStatus": "finalized"}),
    );
    assert_eq!(ops.tick().await.unwrap().mints_finished, 1);
    assert_eq!(
        store.get_mint(m.id).await.unwrap().unwrap().state,
        MintState::Confirmed
    );
    // Nothing was sent once the node had a status for it: still the three sends.
    assert_eq!(node.lock().unwrap().received.len(), 3);

    // ---- a burn from the minter's own token account, signed for the requested amount
    let minter_account = key("minter ta");
    {
        let mut n = node.lock().unwrap();
        n.supply = (600_000, 8);
        n.owned
            .insert(minter_address.clone(), vec![minter_account.clone()]);
    }
    let redeemer = {
        let k = SecretKey::from_slice(&[0x5a; 32]).unwrap();
        let pk = CompressedPublicKey(k.public_key(&bitcoin::secp256k1::Secp256k1::new()));
        bitcoin::Address::p2wpkh(&pk, Network::Regtest).to_string()
    };
    let burn = ops
        .request_burn(&op, CHAIN, &json!("200000"), &redeemer)
        .await
        .unwrap();
    let t = ops.tick().await.unwrap();
    assert_eq!(t.burns_submitted, 1, "{t:?}");
    let b = store.get_burn(burn.id).await.unwrap().unwrap();
    assert_eq!(b.state, BurnState::Submitted);
    let burn_sig = b.tx_hash.clone().unwrap();
    let got = node.lock().unwrap().received.clone();
    let sent = got.iter().find(|r| r.signature == burn_sig).unwrap();
    assert_eq!(sent.signer, minter_address);
    let mut data = vec![8u8];
    data.extend_from_slice(&200_000u64.to_le_bytes());
    assert_eq!(
        sent.instructions,
        vec![Decoded {
            program: TOKEN_PROGRAM_ID.into(),
            accounts: vec![minter_account.clone(), mint.clone(), minter_address.clone()],
            data,
        }]
    );
    node.lock().unwrap().statuses.insert(
        burn_sig.clone(),
        json!({"slot": 372_162_000, "confirmations": null, "err": null, "status": {"Ok": null}, "confirmationStatus": "finalized"}),
    );
    assert_eq!(ops.tick().await.unwrap().burns_finished, 1);
    assert_eq!(
        store.get_burn(burn.id).await.unwrap().unwrap().state,
        BurnState::Confirmed
    );

    // ---- a burn that never lands: after a restart (fresh minter, nothing in memory) it
    // is resent, then finishes as failed once the finalized block height is past its
    // last valid height — it can no longer land, so nothing was burned.
    let lost = ops
        .request_burn(&op, CHAIN, &json!("1000"), &redeemer)
        .await
        .unwrap();
    assert_eq!(ops.tick().await.unwrap().burns_submitted, 1);
    let lost_sig = store
        .get_burn(lost.id)
        .await
        .unwrap()
        .unwrap()
        .tx_hash
        .unwrap();
    let restarted = make_ops(Arc::new(SolanaTokenMinter::new(
        SolanaMinter::new(
            &solana_config(&url),
            MinterKey::from_secret(seed.secret_bytes()),
        )
        .unwrap(),
        &mint,
    )));
    let t = restarted.tick().await.unwrap();
    assert_eq!(t.burns_finished, 0, "still valid: resent, waiting");
    let sends = |sig: &str| {
        node.lock()
            .unwrap()
            .received
            .iter()
            .filter(|r| r.signature == sig)
            .count()
    };
    let resent = sends(&lost_sig);
    assert!(resent >= 2, "{resent}");
    node.lock().unwrap().block_height += 151;
    assert_eq!(restarted.tick().await.unwrap().burns_finished, 1);
    assert_eq!(
        store.get_burn(lost.id).await.unwrap().unwrap().state,
        BurnState::Failed
    );
    assert_eq!(sends(&lost_sig), resent, "not sent again once expired");

    // ---- the supply is read through the same minter (8 decimals required)
    node.lock().unwrap().supply = (600_000, 8);
    assert_eq!(token_minter.total_supply_sats().await.unwrap(), 600_000);
    node.lock().unwrap().supply = (600_000, 6);
    assert!(token_minter.total_supply_sats().await.is_err());
    for c in cancels {
        c.cancel();
    }
}
