//! Conformance of the reserve-operations store (migration 0008) on SQLite and on
//! PostgreSQL (a fresh schema at `UBTC_TEST_DATABASE_URL`, default
//! `postgres://root@127.0.0.1:5432/test`, dropped afterwards).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ubtc_core::Timestamp;
use ubtc_store::reserve_ops::*;
use ubtc_store::*;

mod common;
use common::on_both_backends;

const T0: Timestamp = Timestamp(1_700_000_000_000);
const DAY_MS: i64 = 86_400_000;

on_both_backends!(
    deposit_is_idempotent_and_conflicts,
    mint_lifecycle_and_refusals,
    burn_and_release_lifecycle_and_refusals,
    approvals_recorded_once,
    governor_holds_under_concurrency,
    a_release_that_cannot_be_signed_fails_for_good,
);

fn deposit(txid: &str, sats: u64) -> NewDeposit {
    NewDeposit {
        reserve_address: "bcrt1qreserve".into(),
        txid: txid.into(),
        vout: Some(0),
        expected_sats: sats,
        confirmations_needed: 3,
        created_by: "op".into(),
    }
}

async fn confirmed_deposit(s: &Arc<dyn Store>, txid: &str, sats: u64) -> Deposit {
    let d = s
        .record_deposit(&deposit(txid, sats), T0)
        .await
        .unwrap()
        .unwrap();
    s.observe_deposit(d.id, 3, true, T0).await.unwrap().unwrap()
}

fn mint(deposit_id: uuid::Uuid, sats: u64) -> NewMint {
    NewMint {
        chain: "ethereum".into(),
        to_address: "0x00000000000000000000000000000000000000aa".into(),
        amount_sats: sats,
        deposit_id,
        created_by: "op".into(),
    }
}

async fn deposit_is_idempotent_and_conflicts(s: Arc<dyn Store>) {
    let a = s
        .record_deposit(&deposit("aa", 1000), T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.state, DepositState::Expected);
    let again = s
        .record_deposit(&deposit("aa", 1000), T0.plus_millis(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a, again);
    let other = s.record_deposit(&deposit("aa", 999), T0).await.unwrap();
    assert_eq!(other.unwrap_err().code(), "conflict");
    assert_eq!(s.list_deposits(None, 10).await.unwrap().len(), 1);

    // Depth is recorded; confirmation happens once and is then idempotent.
    let seen = s
        .observe_deposit(a.id, 1, false, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (seen.confirmations, seen.state),
        (1, DepositState::Expected)
    );
    let c = s.observe_deposit(a.id, 3, true, T0).await.unwrap().unwrap();
    assert_eq!(c.state, DepositState::Confirmed);
    let c2 = s.observe_deposit(a.id, 9, true, T0).await.unwrap().unwrap();
    assert_eq!(c2.confirmations, 3, "a confirmed deposit no longer changes");
    let missing = s
        .observe_deposit(uuid::Uuid::now_v7(), 1, true, T0)
        .await
        .unwrap();
    assert_eq!(missing.unwrap_err().code(), "not_found");
    assert_eq!(
        s.list_deposits(Some(DepositState::Confirmed), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn mint_lifecycle_and_refusals(s: Arc<dyn Store>) {
    let day = governor_day(T0);
    let pending = s
        .record_deposit(&deposit("p1", 500), T0)
        .await
        .unwrap()
        .unwrap();
    let r = s
        .request_mint(&mint(pending.id, 500), 10_000, T0)
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().code(), "deposit_not_confirmed");

    let d = confirmed_deposit(&s, "d1", 1_000).await;
    let r = s
        .request_mint(&mint(d.id, 1_001), 10_000, T0)
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().code(), "exceeds_deposit");
    let r = s.request_mint(&mint(d.id, 1_000), 999, T0).await.unwrap();
    assert_eq!(r.unwrap_err().code(), "daily_limit_exceeded");
    let r = s
        .request_mint(&mint(d.id, u64::MAX), u64::MAX, T0)
        .await
        .unwrap();
    assert!(r.is_err());
    // Refusals wrote nothing.
    assert!(s.list_mints(None, 10).await.unwrap().is_empty());
    assert_eq!(
        s.daily_volume("ethereum", OpKind::Mint, day).await.unwrap(),
        0
    );

    let m = s
        .request_mint(&mint(d.id, 1_000), 1_500, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.state, MintState::Requested);
    assert_eq!(
        s.daily_volume("ethereum", OpKind::Mint, day).await.unwrap(),
        1_000
    );
    // Same request again: same mint, volume counted once.
    let again = s
        .request_mint(&mint(d.id, 1_000), 1_500, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, m.id);
    assert_eq!(
        s.daily_volume("ethereum", OpKind::Mint, day).await.unwrap(),
        1_000
    );
    let mut other = mint(d.id, 1_000);
    other.to_address = "0x00000000000000000000000000000000000000bb".into();
    assert_eq!(
        s.request_mint(&other, 1_500, T0)
            .await
            .unwrap()
            .unwrap_err()
            .code(),
        "conflict"
    );
    // A second deposit the same day is held by the governor; the next day is not.
    let d2 = confirmed_deposit(&s, "d2", 600).await;
    let r = s.request_mint(&mint(d2.id, 600), 1_500, T0).await.unwrap();
    assert_eq!(r.unwrap_err().code(), "daily_limit_exceeded");
    assert_eq!(s.list_mints(None, 10).await.unwrap().len(), 1);
    let next_day = T0.plus_millis(DAY_MS);
    s.request_mint(&mint(d2.id, 600), 1_500, next_day)
        .await
        .unwrap()
        .unwrap();

    // Transitions in order, each repeatable, none skippable.
    let r = s.mint_submitted(m.id, "0xh", "0xraw", T0).await.unwrap();
    assert_eq!(r.unwrap_err().code(), "wrong_state");
    let a = s.approve_mint(m.id, T0).await.unwrap().unwrap();
    assert_eq!(a.state, MintState::Approved);
    assert_eq!(
        s.approve_mint(m.id, T0).await.unwrap().unwrap().state,
        MintState::Approved
    );
    let sub = s
        .mint_submitted(m.id, "0xh", "0xraw", T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (sub.state, sub.tx_hash.as_deref(), sub.raw_tx.as_deref()),
        (MintState::Submitted, Some("0xh"), Some("0xraw"))
    );
    let done = s
        .mint_finished(m.id, true, None, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(done.state, MintState::Confirmed);
    let r = s.approve_mint(m.id, T0).await.unwrap();
    assert_eq!(r.unwrap_err().code(), "wrong_state");
    assert_eq!(
        s.get_mint(m.id).await.unwrap().unwrap().state,
        MintState::Confirmed
    );
    assert_eq!(
        s.list_mints(Some(MintState::Confirmed), 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn burn_and_release_lifecycle_and_refusals(s: Arc<dyn Store>) {
    let day = governor_day(T0);
    let b = s
        .request_burn(
            &NewBurn {
                chain: "ethereum".into(),
                amount_sats: 10_000,
                redeemer_address: "bcrt1qredeemer".into(),
                created_by: "op".into(),
            },
            T0,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.state, BurnState::Requested);
    let release = |amount, fee| NewRelease {
        burn_id: b.id,
        amount_sats: amount,
        fee_sats: fee,
        psbt: "{}".into(),
        created_by: "op".into(),
    };
    let r = s
        .request_release(&release(9_000, 500), 100_000, T0)
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().code(), "burn_not_confirmed");
    s.burn_submitted(b.id, "0xb", "0xraw", T0)
        .await
        .unwrap()
        .unwrap();
    let c = s
        .burn_finished(b.id, true, None, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c.state, BurnState::Confirmed);

    let r = s
        .request_release(&release(9_600, 500), 100_000, T0)
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().code(), "release_exceeds_burn");
    let r = s
        .request_release(&release(9_000, 500), 9_499, T0)
        .await
        .unwrap();
    assert_eq!(r.unwrap_err().code(), "daily_limit_exceeded");
    let r = s
        .request_release(&release(u64::MAX, 0), u64::MAX, T0)
        .await
        .unwrap();
    assert!(r.is_err());
    assert!(s.list_releases(None, 10).await.unwrap().is_empty());
    assert_eq!(
        s.daily_volume("ethereum", OpKind::Release, day)
            .await
            .unwrap(),
        0
    );

    let rel = s
        .request_release(&release(9_000, 500), 100_000, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rel.state, ReleaseState::Built);
    assert_eq!(
        s.daily_volume("ethereum", OpKind::Release, day)
            .await
            .unwrap(),
        9_500
    );
    let again = s
        .request_release(&release(9_000, 500), 100_000, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, rel.id);
    assert_eq!(
        s.daily_volume("ethereum", OpKind::Release, day)
            .await
            .unwrap(),
        9_500
    );

    let r = s.release_broadcast(rel.id, T0).await.unwrap();
    assert_eq!(r.unwrap_err().code(), "wrong_state");
    let signed = s
        .release_signed(rel.id, "02000000", "ab", T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(signed.final_tx.as_deref(), Some("02000000"));
    let sent = s.release_broadcast(rel.id, T0).await.unwrap().unwrap();
    assert_eq!(sent.state, ReleaseState::Broadcast);
    assert_eq!(s.get_release(rel.id).await.unwrap().unwrap(), sent);
    assert_eq!(
        s.get_burn(b.id).await.unwrap().unwrap().state,
        BurnState::Confirmed
    );
}

async fn approvals_recorded_once(s: Arc<dyn Store>) {
    let id = uuid::Uuid::now_v7();
    let a = |key: &str, answer: &str| OpApproval {
        op_kind: OpKind::Mint,
        op_id: id,
        guardian_key: key.into(),
        answer: answer.into(),
        created_at: T0,
    };
    assert!(s.record_op_approval(&a("k1", "first")).await.unwrap());
    assert!(!s.record_op_approval(&a("k1", "second")).await.unwrap());
    assert!(s.record_op_approval(&a("k2", "x")).await.unwrap());
    let list = s.list_op_approvals(OpKind::Mint, id).await.unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].answer, "first");
    assert!(s
        .list_op_approvals(OpKind::Release, id)
        .await
        .unwrap()
        .is_empty());
}

/// Two mints racing for one day's limit: exactly one fits.
async fn governor_holds_under_concurrency(s: Arc<dyn Store>) {
    let mut deposits = Vec::new();
    for i in 0..6 {
        deposits.push(confirmed_deposit(&s, &format!("c{i}"), 60).await);
    }
    let tasks: Vec<_> = deposits
        .iter()
        .map(|d| {
            let s = s.clone();
            let id = d.id;
            tokio::spawn(async move { s.request_mint(&mint(id, 60), 100, T0).await.unwrap() })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap().is_ok() {
            ok += 1;
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(
        s.daily_volume("ethereum", OpKind::Mint, governor_day(T0))
            .await
            .unwrap(),
        60
    );
    assert_eq!(s.list_mints(None, 10).await.unwrap().len(), 1);
}

/// A release the guardians refuse for good gets a terminal `failed`
/// with its reason instead of sitting `built` forever; a broadcast one cannot fail.
async fn a_release_that_cannot_be_signed_fails_for_good(s: Arc<dyn Store>) {
    let mut rels = Vec::new();
    for _ in 0..2 {
        let b = s
            .request_burn(
                &NewBurn {
                    chain: "ethereum".into(),
                    amount_sats: 10_000,
                    redeemer_address: "bcrt1qredeemer".into(),
                    created_by: "op".into(),
                },
                T0,
            )
            .await
            .unwrap()
            .unwrap();
        s.burn_submitted(b.id, "0xb", "0xraw", T0)
            .await
            .unwrap()
            .unwrap();
        s.burn_finished(b.id, true, None, T0)
            .await
            .unwrap()
            .unwrap();
        let new = NewRelease {
            burn_id: b.id,
            amount_sats: 9_000,
            fee_sats: 500,
            psbt: "{}".into(),
            created_by: "op".into(),
        };
        rels.push(s.request_release(&new, 100_000, T0).await.unwrap().unwrap());
    }
    let failed = s
        .release_failed(rels[0].id, "fee_too_high at 2 of 3 guardians", T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(failed.state, ReleaseState::Failed);
    assert_eq!(
        failed.last_error.as_deref(),
        Some("fee_too_high at 2 of 3 guardians")
    );
    assert_eq!(
        s.list_releases(Some(ReleaseState::Failed), 10)
            .await
            .unwrap()
            .len(),
        1
    );
    // Terminal: it cannot be signed any more; failing it again returns the row.
    let r = s.release_signed(rels[0].id, "02", "ab", T0).await.unwrap();
    assert_eq!(r.unwrap_err().code(), "wrong_state");
    let again = s
        .release_failed(rels[0].id, "x", T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.last_error.as_deref(),
        Some("fee_too_high at 2 of 3 guardians")
    );
    // A signed release may fail (its inputs were spent elsewhere); a broadcast one not.
    s.release_signed(rels[1].id, "02", "ab", T0)
        .await
        .unwrap()
        .unwrap();
    s.release_broadcast(rels[1].id, T0).await.unwrap().unwrap();
    let r = s.release_failed(rels[1].id, "x", T0).await.unwrap();
    assert_eq!(r.unwrap_err().code(), "wrong_state");
}
