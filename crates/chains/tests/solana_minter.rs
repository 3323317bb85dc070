//! The Solana minter against a JSON-RPC **stand-in** node (no validator can be built
//! here; see `tests/solana.rs`). The stand-in does what a node's `sendTransaction`
//! front does before execution, with its own parser written from the wire format (not
//! the minter's code): decodes the base64 transaction, parses the legacy message,
//! verifies the fee payer's ed25519 signature over the message bytes, checks the
//! blockhash is one it handed out and the size limit, and refuses otherwise with the
//! node's error codes. It then decodes the SPL Token instruction so the test can check
//! what would be minted or burned. Execution itself (balances, authority checks by the
//! Token program) is not modelled.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod solana_stand_in;

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};
use solana_stand_in::{key, stand_in, Decoded};
use ubtc_chains::evm::RetryPolicy;
use ubtc_chains::solana::minter::{
    MinterKey, SolanaBurn, SolanaMinter, SolanaTokenReader, Submitted, TokenOp, TxStatus,
};
use ubtc_chains::solana::wire::{
    base58_decode, base58_encode, MEMO_V2_PROGRAM_ID, TOKEN_PROGRAM_ID,
};
use ubtc_chains::solana::{Commitment, SolanaConfig};
use ubtc_chains::ChainError;
use ubtc_core::ChainId;

fn config(url: &str) -> SolanaConfig {
    let mut c = SolanaConfig::new(ChainId::parse("solana").unwrap(), url, &key("payment"));
    c.token_mint = Some(key("mint"));
    c.retry = RetryPolicy {
        attempts: 2,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        timeout: Duration::from_secs(5),
    };
    c
}

fn minter(url: &str) -> SolanaMinter {
    SolanaMinter::new(&config(url), MinterKey::from_secret([42u8; 32])).unwrap()
}

#[tokio::test]
async fn mint_and_burn_are_signed_legacy_transactions_the_node_verifies() {
    let (url, node) = stand_in().await;
    let m = minter(&url);
    let holder = key("holder token account");
    let reserve = key("reserve token account");

    let mint = m
        .submit(
            &TokenOp::MintTo {
                destination: holder.clone(),
                amount: 150_000_000,
            },
            Some("ubtc mint 0190f3e4"),
        )
        .await
        .unwrap();
    let burn = m
        .submit(
            &TokenOp::Burn {
                source: reserve.clone(),
                amount: u64::MAX,
            },
            None,
        )
        .await
        .unwrap();
    assert_ne!(mint.signature, burn.signature);
    assert_eq!(mint.last_valid_block_height, 350_376_150);

    let got = node.lock().unwrap().received.clone();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].signature, mint.signature);
    assert_eq!(got[0].signer, m.address());
    // Token program and memo program are the read-only unsigned accounts.
    assert_eq!(got[0].readonly_unsigned, 2);
    let mut data = vec![7u8];
    data.extend_from_slice(&150_000_000u64.to_le_bytes());
    assert_eq!(
        got[0].instructions,
        vec![
            Decoded {
                program: TOKEN_PROGRAM_ID.into(),
                accounts: vec![key("mint"), holder.clone(), m.address()],
                data,
            },
            Decoded {
                program: MEMO_V2_PROGRAM_ID.into(),
                accounts: vec![],
                data: b"ubtc mint 0190f3e4".to_vec(),
            },
        ]
    );
    let mut data = vec![8u8];
    data.extend_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(got[1].readonly_unsigned, 1);
    assert_eq!(
        got[1].instructions,
        vec![Decoded {
            program: TOKEN_PROGRAM_ID.into(),
            accounts: vec![reserve, key("mint"), m.address()],
            data,
        }]
    );
}

#[tokio::test]
async fn the_stand_in_refuses_a_tampered_or_stale_transaction() {
    let (url, node) = stand_in().await;
    let m = minter(&url);
    let op = TokenOp::MintTo {
        destination: key("holder"),
        amount: 1,
    };
    let fresh = {
        let mut n = node.lock().unwrap();
        let h = key("handed out");
        n.blockhashes.push(h.clone());
        h
    };
    let rpc = ubtc_chains::evm::RpcClient::new(&url, config(&url).retry).unwrap();
    let send = |wire: Vec<u8>| {
        let rpc = &rpc;
        async move {
            let b64 = base64::engine::general_purpose::STANDARD.encode(wire);
            rpc.call::<String>("sendTransaction", json!([b64, {"encoding": "base64"}]))
                .await
        }
    };
    // Signed correctly: accepted.
    let ok = m.build(&op, None, &fresh).unwrap();
    assert_eq!(send(ok.wire.clone()).await.unwrap(), ok.signature);
    // One byte of the amount changed after signing: the signature no longer verifies.
    let mut tampered = ok.wire.clone();
    let at = tampered.len() - 1;
    tampered[at] ^= 1;
    let err = send(tampered).await.unwrap_err();
    assert!(
        matches!(&err, ChainError::BadResponse(m) if m.contains("verification failure")),
        "{err}"
    );
    // Signed by another key but naming the minter: refused too.
    let other = SolanaMinter::new(&config(&url), MinterKey::from_secret([7u8; 32])).unwrap();
    let forged = other.build(&op, None, &fresh).unwrap();
    let mut spliced = ok.wire.clone();
    spliced[1..65].copy_from_slice(&forged.wire[1..65]);
    assert!(send(spliced).await.is_err());
    // A blockhash the node never handed out: simulation fails, not retried.
    let stale = m.build(&op, None, &key("never handed out")).unwrap();
    let err = send(stale.wire).await.unwrap_err();
    assert!(matches!(err, ChainError::BadResponse(_)) && !err.is_transient());
    assert_eq!(node.lock().unwrap().received.len(), 1);
}

#[tokio::test]
async fn status_follows_commitment_failure_and_expiry() {
    let (url, node) = stand_in().await;
    let m = minter(&url);
    let sub = m
        .submit(
            &TokenOp::Burn {
                source: key("reserve"),
                amount: 5,
            },
            None,
        )
        .await
        .unwrap();
    // Not seen yet, blockhash still valid.
    assert_eq!(m.status(&sub).await.unwrap(), TxStatus::Pending);
    let set = |v: Value| {
        node.lock()
            .unwrap()
            .statuses
            .insert(sub.signature.clone(), v);
    };
    set(
        json!({"slot": 372_161_901, "confirmations": 3, "err": null, "status": {"Ok": null}, "confirmationStatus": "confirmed"}),
    );
    assert_eq!(m.status(&sub).await.unwrap(), TxStatus::Pending);
    let mut c = config(&url);
    c.commitment = Commitment::Confirmed;
    let fast = SolanaMinter::new(&c, MinterKey::from_secret([42u8; 32])).unwrap();
    assert_eq!(
        fast.status(&sub).await.unwrap(),
        TxStatus::Confirmed { slot: 372_161_901 }
    );
    set(
        json!({"slot": 372_161_901, "confirmations": null, "err": null, "status": {"Ok": null}, "confirmationStatus": "finalized"}),
    );
    assert_eq!(
        m.status(&sub).await.unwrap(),
        TxStatus::Confirmed { slot: 372_161_901 }
    );
    set(
        json!({"slot": 372_161_901, "confirmations": null, "err": {"InstructionError": [0, {"Custom": 1}]}, "status": {"Err": {"InstructionError": [0, {"Custom": 1}]}}, "confirmationStatus": "finalized"}),
    );
    assert!(
        matches!(m.status(&sub).await.unwrap(), TxStatus::Failed { error } if error.contains("Custom"))
    );

    // Never landed: pending up to its last valid height, expired after it.
    let lost = Submitted {
        signature: base58_encode(&[3u8; 64]),
        last_valid_block_height: 350_376_150,
    };
    node.lock().unwrap().block_height = 350_376_150;
    assert_eq!(m.status(&lost).await.unwrap(), TxStatus::Pending);
    node.lock().unwrap().block_height = 350_376_151;
    assert_eq!(m.status(&lost).await.unwrap(), TxStatus::Expired);
}

#[tokio::test]
async fn bad_operations_are_refused_before_signing() {
    let (url, node) = stand_in().await;
    let m = minter(&url);
    let h = key("any");
    for op in [
        TokenOp::MintTo {
            destination: key("holder"),
            amount: 0,
        },
        TokenOp::MintTo {
            destination: key("mint"),
            amount: 1,
        },
        TokenOp::MintTo {
            destination: m.address(),
            amount: 1,
        },
        TokenOp::Burn {
            source: "not base58!".into(),
            amount: 1,
        },
    ] {
        assert!(
            matches!(m.build(&op, None, &h), Err(ChainError::Misconfigured(_))),
            "{op:?}"
        );
    }
    let long = "x".repeat(1_200);
    let op = TokenOp::MintTo {
        destination: key("holder"),
        amount: 1,
    };
    assert!(
        matches!(m.build(&op, Some(&long), &h), Err(ChainError::Misconfigured(m)) if m.contains("1232"))
    );
    let mut c = config(&url);
    c.token_mint = None;
    assert!(SolanaMinter::new(&c, MinterKey::from_secret([1u8; 32])).is_err());
    assert!(format!("{m:?}").contains("[redacted]"));
    assert!(node.lock().unwrap().received.is_empty());
    // The base58 helpers agree with the stand-in's view of the token program.
    assert_eq!(base58_decode(TOKEN_PROGRAM_ID).unwrap().len(), 32);
}

/// A `getTransaction` (`jsonParsed`) answer holding the given top-level instructions.
fn parsed_tx(signature: &str, err: Value, instructions: Value) -> Value {
    json!({
        "slot": 372_161_901,
        "blockTime": 1_760_000_000,
        "meta": {"err": err, "fee": 5000},
        "transaction": {
            "signatures": [signature],
            "message": {"recentBlockhash": key("bh"), "instructions": instructions},
        },
    })
}

fn burn_ix(kind: &str, mint: &str, authority: &str, amount: u64) -> Value {
    let info = if kind == "burn" {
        json!({"account": key("ta"), "mint": mint, "authority": authority, "amount": amount.to_string()})
    } else {
        json!({"account": key("ta"), "mint": mint, "authority": authority,
               "tokenAmount": {"amount": amount.to_string(), "decimals": 8}})
    };
    json!({"programId": TOKEN_PROGRAM_ID, "program": "spl-token", "stackHeight": null,
           "parsed": {"type": kind, "info": info}})
}

#[tokio::test]
async fn burns_are_read_back_from_their_transaction() {
    let (url, node) = stand_in().await;
    let reader = SolanaTokenReader::new(&config(&url)).unwrap();
    let (mint, owner) = (key("mint"), key("minter"));
    let memo = json!({"programId": MEMO_V2_PROGRAM_ID, "parsed": "ubtc burn"});
    let set = |sig: &str, tx: Value| {
        node.lock().unwrap().transactions.insert(sig.to_owned(), tx);
    };
    // burn + burnChecked of the mint by one authority: summed.
    set(
        "ok",
        parsed_tx(
            "ok",
            Value::Null,
            json!([
                burn_ix("burn", &mint, &owner, 600),
                memo,
                burn_ix("burnChecked", &mint, &owner, 400)
            ]),
        ),
    );
    assert_eq!(
        reader.burn("ok").await.unwrap(),
        Some(SolanaBurn {
            authority: owner.clone(),
            amount: 1000,
            slot: 372_161_901
        })
    );
    // Failed on chain, another mint's burn, unknown signature: no burn.
    set(
        "failed",
        parsed_tx(
            "failed",
            json!({"InstructionError": [0, {"Custom": 1}]}),
            json!([burn_ix("burn", &mint, &owner, 5)]),
        ),
    );
    set(
        "other",
        parsed_tx(
            "other",
            Value::Null,
            json!([burn_ix("burn", &key("other mint"), &owner, 5)]),
        ),
    );
    for sig in ["failed", "other", "unknown"] {
        assert_eq!(reader.burn(sig).await.unwrap(), None, "{sig}");
    }
    // Several authorities in one transaction, or an answer for another transaction:
    // refused, not guessed.
    set(
        "two",
        parsed_tx(
            "two",
            Value::Null,
            json!([
                burn_ix("burn", &mint, &owner, 1),
                burn_ix("burn", &mint, &key("someone"), 1)
            ]),
        ),
    );
    assert!(matches!(
        reader.burn("two").await,
        Err(ChainError::BadResponse(_))
    ));
    set("swapped", parsed_tx("ok", Value::Null, json!([])));
    assert!(matches!(
        reader.burn("swapped").await,
        Err(ChainError::BadResponse(_))
    ));
    // Supply and decimals as the node reports them.
    node.lock().unwrap().supply = (123_456, 8);
    assert_eq!(reader.supply().await.unwrap(), (123_456, 8));
}
