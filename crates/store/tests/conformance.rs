//! The store conformance suite: every test is written once against `&dyn Store` and
//! run on SQLite (a fresh temporary file) and on PostgreSQL (a fresh schema on the
//! server at `UBTC_TEST_DATABASE_URL`, default `postgres://root@127.0.0.1:5432/test`,
//! dropped afterwards). An unreachable PostgreSQL fails the PostgreSQL tests.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::sync::Arc;

use ubtc_core::amount::{Sats, TokenAmount};
use ubtc_core::bundle::SupplyEntry;
use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::validation::{Reason, TransitionError};
use ubtc_core::{ChainId, PaymentRef, Timestamp, ValidationId, ValidationStatus};
use ubtc_store::*;

mod common;
use common::{on_both_backends, pg_store, pg_url, sqlite_store};

const T0: Timestamp = Timestamp(1_700_000_000_000);
const LEASE_MS: i64 = 30_000;

on_both_backends!(
    migrate_is_idempotent,
    payment_is_unique,
    record_round_trips,
    allowed_transitions,
    record_confirmed_matches_two_steps,
    forbidden_transitions_change_nothing,
    claims_are_exclusive_under_concurrency,
    not_before_is_respected,
    expired_lease_is_reclaimed,
    renew_lease_extends_and_guards,
    complete_signed_is_atomic,
    retry_fail_and_requeue,
    list_validations_filters_and_pages,
    list_detected_oldest_first,
    stats_counts_and_percentiles,
    reserve_addresses,
    chain_tokens,
    reserve_snapshots,
    chain_cursors,
    outbox_due_and_attempts,
    audit_chain,
    prepare_statement_fixes_once,
    batches_match_single_calls,
    reserve_history_buckets,
    leases_are_exclusive_under_concurrency,
    lease_expiry_takeover_and_renewal,
    lease_release,
    webhook_consumers_and_deliveries,
    notify_writes_outbox_atomically,
    registry_versions_are_checked_and_immutable,
    a_dropped_payment_mined_again_is_detected_again,
    attestations_are_kept_paged_and_marked,
);

// ---------------------------------------------------------------- helpers

fn chain(name: &str) -> ChainId {
    ChainId::parse(name).unwrap()
}

fn new_validation(chain_name: &str, tx: &str, index: u32) -> NewValidation {
    NewValidation {
        id: ValidationId::new(),
        payment: PaymentRef {
            chain: chain(chain_name),
            tx_hash: TxHash::parse(tx).unwrap(),
            index,
        },
        payer: Payer::parse("0xpayer").unwrap(),
        amount_base_units: 1_000,
        message: b"hello".to_vec(),
        block: ChainBlock {
            number: 100,
            hash: "0xblock".into(),
        },
        callback_url: None,
        rejection: None,
    }
}

async fn detected(store: &dyn Store, chain_name: &str, tx: &str) -> ValidationId {
    store
        .record_detected(&new_validation(chain_name, tx, 0), T0)
        .await
        .unwrap()
        .id()
}

async fn queued(store: &dyn Store, chain_name: &str, tx: &str) -> ValidationId {
    let id = detected(store, chain_name, tx).await;
    store.confirm_and_enqueue(id, 12, None, T0).await.unwrap();
    id
}

async fn get(store: &dyn Store, id: ValidationId) -> ValidationRecord {
    store.get_validation(id).await.unwrap().unwrap()
}

fn signed_result(tag: &str, events: usize) -> SignedResult {
    SignedResult {
        statement_text: format!("statement {tag}"),
        bundle_json: format!("{{\"bundle\":\"{tag}\"}}"),
        outbox: (0..events)
            .map(|i| NewOutboxEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "validation.signed".into(),
                payload_json: format!("{{\"n\":{i}}}"),
                target_url: (i % 2 == 0).then(|| "https://example.com/hook".to_owned()),
            })
            .collect(),
        processing_ms: 42,
    }
}

async fn claim_one(store: &dyn Store, worker: &str, now: Timestamp) -> Claimed {
    store
        .claim_next(worker, LEASE_MS, now)
        .await
        .unwrap()
        .expect("a job to claim")
}

fn assert_transition_error<T: std::fmt::Debug>(
    r: StoreResult<T>,
    from: ValidationStatus,
    to: ValidationStatus,
) {
    match r {
        Err(StoreError::Transition(e)) => assert_eq!(e, TransitionError { from, to }),
        other => panic!("expected a transition error {from} -> {to}, got {other:?}"),
    }
}

fn assert_lost<T: std::fmt::Debug>(r: StoreResult<T>) {
    assert!(
        matches!(r, Err(StoreError::LostClaim { .. })),
        "expected LostClaim, got {r:?}"
    );
}

// ---------------------------------------------------------------- tests

async fn migrate_is_idempotent(store: Arc<dyn Store>) {
    store.migrate().await.unwrap();
    store.ping().await.unwrap();
}

async fn payment_is_unique(store: Arc<dyn Store>) {
    let s = &*store;
    let first = new_validation("ethereum", "0xaaa", 0);
    let first_id = first.id;
    assert_eq!(
        s.record_detected(&first, T0).await.unwrap(),
        Recorded::Inserted(first_id)
    );
    // Same payment under another id: a no-op naming the existing row.
    let again = new_validation("ethereum", "0xaaa", 0);
    assert_eq!(
        s.record_detected(&again, T0.plus_millis(5)).await.unwrap(),
        Recorded::AlreadyKnown(first_id)
    );
    assert!(s.get_validation(again.id).await.unwrap().is_none());
    // Another index, or the same hash on another chain, is another payment.
    let other_index = s
        .record_detected(&new_validation("ethereum", "0xaaa", 1), T0)
        .await
        .unwrap();
    let other_chain = s
        .record_detected(&new_validation("polygon", "0xaaa", 0), T0)
        .await
        .unwrap();
    assert!(matches!(other_index, Recorded::Inserted(_)));
    assert!(matches!(other_chain, Recorded::Inserted(_)));

    let all = s.find_by_payment(None, "0xaaa").await.unwrap();
    assert_eq!(all.len(), 3);
    let on_eth = s
        .find_by_payment(Some(&chain("ethereum")), "0xaaa")
        .await
        .unwrap();
    assert_eq!(on_eth.len(), 2);
    assert!(s.find_by_payment(None, "0xnone").await.unwrap().is_empty());
    let by_ref = s.get_by_payment_ref(&first.payment).await.unwrap().unwrap();
    assert_eq!(by_ref.id, first_id);
    assert_eq!(by_ref.updated_at, T0, "the second sighting changed nothing");
}

async fn record_round_trips(store: Arc<dyn Store>) {
    let s = &*store;
    let mut new = new_validation(
        "solana",
        "5VERv8NMvzbJMEkV8xnrLkEaWRtSz9CosKDYjCJjBRnbJLgp8uirBgmQpjKhoR4tjF3Z",
        3,
    );
    new.amount_base_units = u128::MAX;
    new.message = vec![0, 159, 146, 150, b'\n'];
    new.block = ChainBlock {
        number: u64::from(u32::MAX) + 7,
        hash: "blockhash".into(),
    };
    new.callback_url = Some("https://example.com/cb".into());
    new.rejection = Some(Reason::new("below_fee", "paid 1, fee is 2"));
    s.record_detected(&new, T0).await.unwrap();
    let r = get(s, new.id).await;
    assert_eq!(r.id, new.id);
    assert_eq!(r.payment, new.payment);
    assert_eq!(r.payer, new.payer);
    assert_eq!(r.amount_base_units, u128::MAX);
    assert_eq!(r.message_hex, "009f92960a");
    assert_eq!(r.block, new.block);
    assert_eq!(r.status, ValidationStatus::Detected);
    assert_eq!(r.pending_rejection, new.rejection);
    assert_eq!(r.reason, None);
    assert_eq!(r.callback_url, new.callback_url);
    assert_eq!((r.attempts, r.confirmations), (0, 0));
    assert_eq!((r.created_at, r.updated_at), (T0, T0));
    assert_eq!(
        (r.not_before, r.lease_owner.clone(), r.lease_expires),
        (None, None, None)
    );
    assert_eq!(
        (r.statement_text.clone(), r.confirmed_at, r.signed_at),
        (None, None, None)
    );
    assert!(s
        .get_validation(ValidationId::new())
        .await
        .unwrap()
        .is_none());
    assert!(s.get_bundle(new.id).await.unwrap().is_none());
}

async fn allowed_transitions(store: Arc<dyn Store>) {
    use ValidationStatus::*;
    let s = &*store;
    // detected → confirmed → queued → signing → queued (retry) → signing → signed → delivered
    let id = detected(s, "ethereum", "0x1").await;
    assert_eq!(
        s.confirm_and_enqueue(id, 12, None, T0.plus_millis(1))
            .await
            .unwrap(),
        Queued
    );
    let r = get(s, id).await;
    assert_eq!(
        (r.status, r.confirmations, r.confirmed_at),
        (Queued, 12, Some(T0.plus_millis(1)))
    );
    let c = claim_one(s, "w1", T0.plus_millis(2)).await;
    assert_eq!(c.record.status, Signing);
    assert_eq!((c.attempt, c.worker.as_str()), (1, "w1"));
    assert_eq!(c.lease_expires, T0.plus_millis(2 + LEASE_MS));
    s.retry_later(
        &c,
        &Reason::new("quorum", "1 of 2"),
        T0.plus_millis(3),
        T0.plus_millis(2),
    )
    .await
    .unwrap();
    assert_eq!(get(s, id).await.status, Queued);
    let c = claim_one(s, "w1", T0.plus_millis(3)).await;
    assert_eq!(c.attempt, 2);
    s.complete_signed(&c, &signed_result("a", 0), T0.plus_millis(4))
        .await
        .unwrap();
    assert_eq!(get(s, id).await.status, Signed);
    s.mark_delivered(id, T0.plus_millis(5)).await.unwrap();
    assert_eq!(get(s, id).await.status, Delivered);

    // queued → delayed → signing → failed → queued
    let id = detected(s, "ethereum", "0x2").await;
    assert_eq!(
        s.confirm_and_enqueue(id, 1, Some(T0.plus_millis(100)), T0)
            .await
            .unwrap(),
        Delayed
    );
    let r = get(s, id).await;
    assert_eq!(
        (r.status, r.not_before),
        (Delayed, Some(T0.plus_millis(100)))
    );
    let c = claim_one(s, "w1", T0.plus_millis(100)).await;
    assert_eq!(c.record.id, id);
    s.fail(
        &c,
        &Reason::new("quorum", "no quorum"),
        &[],
        T0.plus_millis(101),
    )
    .await
    .unwrap();
    assert_eq!(get(s, id).await.status, Failed);
    s.requeue_failed(id, T0.plus_millis(102)).await.unwrap();
    assert_eq!(get(s, id).await.status, Queued);

    // detected → confirmed → rejected; detected → dropped
    let id = detected(s, "ethereum", "0x3").await;
    let reason = Reason::new("below_fee", "too little");
    s.confirm_and_reject(id, 12, &reason, T0.plus_millis(1))
        .await
        .unwrap();
    let r = get(s, id).await;
    assert_eq!(
        (r.status, r.reason, r.confirmations),
        (Rejected, Some(reason), 12)
    );
    let id = detected(s, "ethereum", "0x4").await;
    let reason = Reason::new("reorg", "block replaced");
    s.drop_reorged(id, &reason, T0.plus_millis(1))
        .await
        .unwrap();
    let r = get(s, id).await;
    assert_eq!((r.status, r.reason), (Dropped, Some(reason)));
}

async fn record_confirmed_matches_two_steps(store: Arc<dyn Store>) {
    use ValidationStatus::*;
    let s = &*store;
    let at = T0.plus_millis(7);
    // Each case: one-step record, and the two-step path on a twin payment.
    for (tx, rejection, delay) in [
        ("0x1", None, None),
        ("0x2", None, Some(T0.plus_millis(500))),
        ("0x3", Some(Reason::new("below_fee", "paid 1")), None),
    ] {
        let mut one = new_validation("ethereum", tx, 0);
        one.rejection = rejection.clone();
        let id = s.record_confirmed(&one, 6, delay, at).await.unwrap();
        assert_eq!(id, Recorded::Inserted(one.id));

        let mut two = new_validation("ethereum", tx, 1);
        two.rejection = rejection.clone();
        s.record_detected(&two, at).await.unwrap();
        match &rejection {
            Some(r) => s.confirm_and_reject(two.id, 6, r, at).await.unwrap(),
            None => {
                s.confirm_and_enqueue(two.id, 6, delay, at).await.unwrap();
            }
        }
        let (a, mut b) = (get(s, one.id).await, get(s, two.id).await);
        b.id = a.id;
        b.payment.index = 0;
        assert_eq!(a, b, "{tx}");
        let expected = match (&rejection, delay) {
            (Some(_), _) => Rejected,
            (None, Some(_)) => Delayed,
            (None, None) => Queued,
        };
        assert_eq!(a.status, expected);
        // Seen again: nothing changes.
        let again = s
            .record_confirmed(
                &new_validation("ethereum", tx, 0),
                9,
                None,
                at.plus_millis(1),
            )
            .await;
        assert_eq!(again.unwrap(), Recorded::AlreadyKnown(one.id));
        assert_eq!(get(s, one.id).await, a);
    }
    let c = claim_one(s, "w", T0.plus_millis(7)).await;
    assert_eq!(c.record.payment.tx_hash.as_str(), "0x1");
}

async fn forbidden_transitions_change_nothing(store: Arc<dyn Store>) {
    use ValidationStatus::*;
    let s = &*store;
    let reason = Reason::new("x", "y");
    let later = T0.plus_millis(1_000);

    let q = queued(s, "ethereum", "0x1").await;
    let before = get(s, q).await;
    assert_transition_error(
        s.confirm_and_enqueue(q, 1, None, later).await,
        Queued,
        Confirmed,
    );
    assert_transition_error(
        s.confirm_and_reject(q, 1, &reason, later).await,
        Queued,
        Confirmed,
    );
    assert_transition_error(s.drop_reorged(q, &reason, later).await, Queued, Dropped);
    assert_transition_error(s.mark_delivered(q, later).await, Queued, Delivered);
    assert_transition_error(s.requeue_failed(q, later).await, Queued, Queued);
    assert_eq!(get(s, q).await, before);

    let d = detected(s, "ethereum", "0x2").await;
    let before = get(s, d).await;
    assert_transition_error(s.mark_delivered(d, later).await, Detected, Delivered);
    assert_transition_error(s.requeue_failed(d, later).await, Detected, Queued);
    assert_eq!(get(s, d).await, before);

    let dropped = detected(s, "ethereum", "0x3").await;
    s.drop_reorged(dropped, &reason, T0).await.unwrap();
    let before = get(s, dropped).await;
    assert_transition_error(
        s.confirm_and_enqueue(dropped, 1, None, later).await,
        Dropped,
        Confirmed,
    );
    assert_transition_error(
        s.drop_reorged(dropped, &reason, later).await,
        Dropped,
        Dropped,
    );
    assert_eq!(get(s, dropped).await, before);

    // A signed validation is never re-queued nor re-signed; a delivered one is final.
    let c = claim_one(s, "w", T0).await;
    s.complete_signed(&c, &signed_result("a", 0), T0)
        .await
        .unwrap();
    let before = get(s, c.record.id).await;
    assert_transition_error(s.requeue_failed(c.record.id, later).await, Signed, Queued);
    assert_lost(s.complete_signed(&c, &signed_result("b", 1), later).await);
    assert_eq!(get(s, c.record.id).await, before);
    assert_eq!(
        s.get_bundle(c.record.id).await.unwrap().unwrap(),
        "{\"bundle\":\"a\"}"
    );
    s.mark_delivered(c.record.id, T0).await.unwrap();
    assert_transition_error(
        s.mark_delivered(c.record.id, later).await,
        Delivered,
        Delivered,
    );

    let missing = ValidationId::new();
    assert!(matches!(
        s.confirm_and_enqueue(missing, 1, None, T0).await,
        Err(StoreError::NotFound(id)) if id == missing
    ));
    assert!(matches!(
        s.mark_delivered(missing, T0).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn claims_are_exclusive_under_concurrency(store: Arc<dyn Store>) {
    const JOBS: usize = 200;
    const WORKERS: usize = 8;
    let mut ids = HashSet::new();
    for i in 0..JOBS {
        ids.insert(queued(&*store, "ethereum", &format!("0x{i:04x}")).await);
    }
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let batch = store
                    .claim_batch(&worker, 3, LEASE_MS, T0.plus_millis(1))
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return mine;
                }
                for c in batch {
                    assert_eq!(c.worker, worker);
                    store
                        .complete_signed(&c, &signed_result(&worker, 1), T0.plus_millis(2))
                        .await
                        .unwrap();
                    mine.push(c.record.id);
                }
            }
        }));
    }
    let mut claimed = Vec::new();
    for t in tasks {
        claimed.extend(t.await.unwrap());
    }
    assert_eq!(claimed.len(), JOBS, "every job claimed exactly once");
    assert_eq!(claimed.iter().copied().collect::<HashSet<_>>(), ids);
    let stats = store.stats(T0).await.unwrap();
    assert_eq!(stats.signed_since, JOBS as u64);
}

async fn not_before_is_respected(store: Arc<dyn Store>) {
    let s = &*store;
    let late = detected(s, "ethereum", "0x1").await;
    s.confirm_and_enqueue(late, 1, Some(T0.plus_millis(5_000)), T0)
        .await
        .unwrap();
    let early = detected(s, "ethereum", "0x2").await;
    s.confirm_and_enqueue(early, 1, Some(T0.plus_millis(1_000)), T0)
        .await
        .unwrap();
    let now = queued(s, "ethereum", "0x3").await; // not before T0

    assert!(s
        .claim_next("w", LEASE_MS, T0.plus_millis(-1))
        .await
        .unwrap()
        .is_none());
    let batch = s
        .claim_batch("w", 10, LEASE_MS, T0.plus_millis(999))
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(|c| c.record.id).collect::<Vec<_>>(),
        vec![now]
    );
    assert!(s
        .claim_next("w", LEASE_MS, T0.plus_millis(999))
        .await
        .unwrap()
        .is_none());
    // Both due: the earlier not-before comes first.
    let batch = s
        .claim_batch("w", 10, LEASE_MS, T0.plus_millis(5_000))
        .await
        .unwrap();
    assert_eq!(
        batch.iter().map(|c| c.record.id).collect::<Vec<_>>(),
        vec![early, late]
    );
    assert!(s
        .claim_batch("w", 0, LEASE_MS, T0.plus_millis(9_000))
        .await
        .unwrap()
        .is_empty());
}

async fn expired_lease_is_reclaimed(store: Arc<dyn Store>) {
    let s = &*store;
    let id = queued(s, "ethereum", "0x1").await;
    let old = s.claim_next("old", 1_000, T0).await.unwrap().unwrap();
    // Still held: nobody else gets it, even at the expiry instant.
    assert!(s
        .claim_next("new", 1_000, T0.plus_millis(1_000))
        .await
        .unwrap()
        .is_none());
    let new = s
        .claim_next("new", 1_000, T0.plus_millis(1_001))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (new.record.id, new.attempt, new.worker.as_str()),
        (id, 2, "new")
    );

    let before = get(s, id).await;
    let late = T0.plus_millis(1_500);
    assert_lost(
        s.complete_signed(&old, &signed_result("old", 2), late)
            .await,
    );
    assert_lost(s.renew_lease(&old, 1_000, late).await);
    assert_lost(
        s.retry_later(&old, &Reason::new("x", "y"), late, late)
            .await,
    );
    assert_lost(
        s.fail(
            &old,
            &Reason::new("x", "y"),
            &signed_result("f", 1).outbox,
            late,
        )
        .await,
    );
    // The old holder wrote nothing: no status change, bundle, outbox row or metric.
    assert_eq!(get(s, id).await, before);
    assert!(s.get_bundle(id).await.unwrap().is_none());
    assert!(s.list_outbox_for(id).await.unwrap().is_empty());
    assert_eq!(s.stats(T0).await.unwrap().signed_since, 0);

    s.complete_signed(&new, &signed_result("new", 1), late)
        .await
        .unwrap();
    assert_eq!(
        s.get_bundle(id).await.unwrap().unwrap(),
        "{\"bundle\":\"new\"}"
    );
}

async fn renew_lease_extends_and_guards(store: Arc<dyn Store>) {
    let s = &*store;
    let id = queued(s, "ethereum", "0x1").await;
    let c = s.claim_next("w", 1_000, T0).await.unwrap().unwrap();
    s.renew_lease(&c, 5_000, T0.plus_millis(900)).await.unwrap();
    assert_eq!(get(s, id).await.lease_expires, Some(T0.plus_millis(5_900)));
    assert!(s
        .claim_next("x", 1_000, T0.plus_millis(2_000))
        .await
        .unwrap()
        .is_none());
    let mut impostor = c.clone();
    impostor.worker = "x".into();
    assert_lost(s.renew_lease(&impostor, 5_000, T0.plus_millis(1_000)).await);
    let mut stale = c.clone();
    stale.attempt += 1;
    assert_lost(s.complete_signed(&stale, &signed_result("s", 0), T0).await);
    s.complete_signed(&c, &signed_result("ok", 0), T0.plus_millis(3_000))
        .await
        .unwrap();
}

async fn complete_signed_is_atomic(store: Arc<dyn Store>) {
    let s = &*store;
    let id = queued(s, "polygon", "0x1").await;
    let c = claim_one(s, "w", T0).await;
    let result = signed_result("one", 2);
    let at = T0.plus_millis(10);
    s.complete_signed(&c, &result, at).await.unwrap();
    let r = get(s, id).await;
    assert_eq!(r.status, ValidationStatus::Signed);
    assert_eq!(r.statement_text.as_deref(), Some("statement one"));
    assert_eq!(
        (r.signed_at, r.lease_owner.clone(), r.lease_expires),
        (Some(at), None, None)
    );
    assert_eq!(s.get_bundle(id).await.unwrap().unwrap(), result.bundle_json);
    let outbox = s.list_outbox_for(id).await.unwrap();
    assert_eq!(outbox.len(), 2);
    for (row, event) in outbox.iter().zip(&result.outbox) {
        assert_eq!(row.event_id, event.event_id);
        assert_eq!(row.validation_id, Some(id));
        assert_eq!(row.event_type, event.event_type);
        assert_eq!(row.payload_json, event.payload_json);
        assert_eq!(row.target_url, event.target_url);
        assert_eq!(
            (row.attempts, row.next_attempt_at, row.created_at),
            (0, at, at)
        );
        assert_eq!((row.delivered_at, row.dead_at), (None, None));
    }
    let stats = s.stats(T0).await.unwrap();
    assert_eq!((stats.signed_since, stats.processing_ms_p50), (1, Some(42)));

    // A failure inside the transaction (an outbox event id that already exists) rolls
    // the whole completion back: still signing, no bundle, no metric.
    let id2 = queued(s, "polygon", "0x2").await;
    let c2 = claim_one(s, "w", T0).await;
    let before = get(s, id2).await;
    let mut clash = signed_result("two", 1);
    clash.outbox.push(result.outbox[0].clone());
    let err = s.complete_signed(&c2, &clash, at).await.unwrap_err();
    assert!(matches!(err, StoreError::Database(_)), "{err:?}");
    assert_eq!(get(s, id2).await, before);
    assert!(s.get_bundle(id2).await.unwrap().is_none());
    assert!(s.list_outbox_for(id2).await.unwrap().is_empty());
    assert_eq!(s.stats(T0).await.unwrap().signed_since, 1);
    // The claim still holds and completes normally.
    s.complete_signed(&c2, &signed_result("two", 1), at)
        .await
        .unwrap();
}

async fn retry_fail_and_requeue(store: Arc<dyn Store>) {
    let s = &*store;
    let id = queued(s, "ethereum", "0x1").await;
    let c = claim_one(s, "w", T0).await;
    let reason = Reason::new("guardian_down", "2 of 3 unreachable");
    s.retry_later(&c, &reason, T0.plus_millis(500), T0.plus_millis(1))
        .await
        .unwrap();
    let r = get(s, id).await;
    assert_eq!(r.status, ValidationStatus::Queued);
    assert_eq!(
        (r.not_before, r.reason.clone(), r.attempts),
        (Some(T0.plus_millis(500)), Some(reason), 1)
    );
    assert_eq!((r.lease_owner, r.lease_expires), (None, None));
    assert!(s
        .claim_next("w", LEASE_MS, T0.plus_millis(499))
        .await
        .unwrap()
        .is_none());

    let c = claim_one(s, "w", T0.plus_millis(500)).await;
    assert_eq!(c.attempt, 2);
    let dead = Reason::new("no_quorum", "gave up");
    let event = NewOutboxEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: "validation.failed".into(),
        payload_json: "{}".into(),
        target_url: None,
    };
    s.fail(&c, &dead, std::slice::from_ref(&event), T0.plus_millis(600))
        .await
        .unwrap();
    let r = get(s, id).await;
    assert_eq!(
        (r.status, r.reason.clone()),
        (ValidationStatus::Failed, Some(dead))
    );
    let outbox = s.list_outbox_for(id).await.unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(
        (outbox[0].event_id, outbox[0].event_type.as_str()),
        (event.event_id, "validation.failed")
    );
    assert!(s
        .claim_next("w", LEASE_MS, T0.plus_millis(10_000))
        .await
        .unwrap()
        .is_none());

    s.requeue_failed(id, T0.plus_millis(700)).await.unwrap();
    let r = get(s, id).await;
    assert_eq!(
        (r.status, r.attempts, r.not_before),
        (ValidationStatus::Queued, 0, Some(T0.plus_millis(700)))
    );
    let c = claim_one(s, "w", T0.plus_millis(700)).await;
    assert_eq!(c.attempt, 1);
}

async fn list_validations_filters_and_pages(store: Arc<dyn Store>) {
    let s = &*store;
    let mut all = Vec::new();
    for i in 0..8 {
        let chain_name = if i % 3 == 0 { "solana" } else { "ethereum" };
        let id = detected(s, chain_name, &format!("0x{i}")).await;
        if i % 2 == 0 {
            s.confirm_and_enqueue(id, 1, None, T0).await.unwrap();
        }
        all.push(id);
    }
    all.sort();
    all.reverse(); // newest first
    let list = |filter: ValidationFilter| async move { s.list_validations(&filter).await.unwrap() };
    let ids = |rows: Vec<ValidationRecord>| rows.into_iter().map(|r| r.id).collect::<Vec<_>>();

    assert_eq!(
        ids(list(ValidationFilter {
            limit: 100,
            ..Default::default()
        })
        .await),
        all
    );
    let queued = list(ValidationFilter {
        status: Some(ValidationStatus::Queued),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(queued.len(), 4);
    assert!(queued.iter().all(|r| r.status == ValidationStatus::Queued));
    assert!(queued.windows(2).all(|w| w[0].id > w[1].id));
    let solana = list(ValidationFilter {
        chain: Some(chain("solana")),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(solana.len(), 3);
    let both = list(ValidationFilter {
        chain: Some(chain("solana")),
        status: Some(ValidationStatus::Detected),
        limit: 100,
        ..Default::default()
    })
    .await;
    assert_eq!(both.len(), 1); // i = 3

    // Keyset pagination: pages of 3 cover the list once, in order.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = ids(list(ValidationFilter {
            before,
            limit: 3,
            ..Default::default()
        })
        .await);
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 3);
        before = page.last().copied();
        paged.extend(page);
    }
    assert_eq!(paged, all);
    let page = ids(list(ValidationFilter {
        status: Some(ValidationStatus::Detected),
        before: Some(all[0]),
        limit: 2,
        ..Default::default()
    })
    .await);
    assert_eq!(page.len(), 2);
    assert!(page.iter().all(|id| *id < all[0]));
}

async fn list_detected_oldest_first(store: Arc<dyn Store>) {
    let s = &*store;
    let a = detected(s, "ethereum", "0x1").await;
    let b = detected(s, "ethereum", "0x2").await;
    let c = detected(s, "ethereum", "0x3").await;
    detected(s, "polygon", "0x4").await;
    s.confirm_and_enqueue(b, 1, None, T0).await.unwrap();
    let rows = s.list_detected(&chain("ethereum"), 10).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a, c]);
    assert_eq!(
        s.list_detected(&chain("ethereum"), 1).await.unwrap().len(),
        1
    );
    assert!(s.list_detected(&chain("bsc"), 10).await.unwrap().is_empty());
}

async fn stats_counts_and_percentiles(store: Arc<dyn Store>) {
    let s = &*store;
    assert_eq!(s.stats(T0).await.unwrap(), Stats::default());
    for i in 1..=100 {
        let id = queued(s, "ethereum", &format!("0x{i}")).await;
        let c = s.claim_next("w", LEASE_MS, T0).await.unwrap().unwrap();
        assert_eq!(c.record.id, id);
        let mut result = signed_result("x", 0);
        result.processing_ms = i;
        // The first ten are signed before `since` and do not count.
        let at = if i <= 10 {
            T0.plus_millis(-1)
        } else {
            T0.plus_millis(i)
        };
        s.complete_signed(&c, &result, at).await.unwrap();
    }
    detected(s, "ethereum", "0xd1").await;
    detected(s, "solana", "0xd2").await;
    let stats = s.stats(T0).await.unwrap();
    assert_eq!(stats.signed_since, 90);
    // Nearest rank over 11..=100.
    assert_eq!(stats.processing_ms_p50, Some(55));
    assert_eq!(stats.processing_ms_p90, Some(91));
    assert_eq!(stats.processing_ms_p99, Some(100));
    let count = |c: &str, st: ValidationStatus| {
        stats
            .counts
            .iter()
            .find(|x| x.chain.as_str() == c && x.status == st)
            .map(|x| x.count)
    };
    assert_eq!(count("ethereum", ValidationStatus::Signed), Some(100));
    assert_eq!(count("ethereum", ValidationStatus::Detected), Some(1));
    assert_eq!(count("solana", ValidationStatus::Detected), Some(1));
    assert_eq!(stats.counts.len(), 3);
}

async fn reserve_addresses(store: Arc<dyn Store>) {
    let s = &*store;
    let new = |address: &str| NewReserveAddress {
        address: address.into(),
        descriptor: format!("wpkh({address})"),
        kind: "p2wpkh".into(),
        label: Some("cold".into()),
    };
    let a = s.add_reserve_address(&new("bc1qa"), T0).await.unwrap();
    assert_eq!(
        (
            a.address.as_str(),
            a.kind.as_str(),
            a.created_at,
            a.retired_at
        ),
        ("bc1qa", "p2wpkh", T0, None)
    );
    assert_eq!(a.descriptor, "wpkh(bc1qa)");
    assert_eq!(a.label.as_deref(), Some("cold"));
    let again = s
        .add_reserve_address(&new("bc1qa"), T0.plus_millis(5))
        .await
        .unwrap();
    assert_eq!(again, a);
    let b = s
        .add_reserve_address(&new("bc1qb"), T0.plus_millis(1))
        .await
        .unwrap();
    assert_eq!(
        s.list_reserve_addresses().await.unwrap(),
        vec![a.clone(), b.clone()]
    );
    assert!(s
        .retire_reserve_address("bc1qa", T0.plus_millis(2))
        .await
        .unwrap());
    assert!(!s
        .retire_reserve_address("bc1qa", T0.plus_millis(3))
        .await
        .unwrap());
    assert!(!s.retire_reserve_address("bc1qzz", T0).await.unwrap());
    assert_eq!(s.list_reserve_addresses().await.unwrap(), vec![b.clone()]);
    // The full registry keeps the retired address, with the time of its first
    // retirement (the refused second one changed nothing).
    let retired = ReserveAddress {
        retired_at: Some(T0.plus_millis(2)),
        ..a
    };
    assert_eq!(
        s.list_all_reserve_addresses().await.unwrap(),
        vec![retired, b]
    );
}

/// Three guardians, a 2-of-3 reserve, and a registry version signed by `signers`.
fn registry_version(
    previous: Option<&ubtc_core::registry::RegistryVersion>,
    signers: &[u8],
    threshold: u32,
) -> ubtc_core::registry::RegistryVersion {
    use bitcoin::secp256k1::{Secp256k1, SecretKey};
    use ubtc_bitcoin::multisig::{SortedMulti, Wrapping};
    use ubtc_bitcoin::registry as reg;
    let secp = Secp256k1::new();
    let secret = |b: u8| SecretKey::from_slice(&[b; 32]).unwrap();
    let keys: Vec<bitcoin::CompressedPublicKey> = (1..=3)
        .map(|b| bitcoin::CompressedPublicKey(secret(b).public_key(&secp)))
        .collect();
    let policy = SortedMulti::new(threshold as usize, keys.clone()).unwrap();
    let reserve = reg::ProposedReserve {
        address: policy
            .address(bitcoin::Network::Regtest, Wrapping::Wsh)
            .to_string(),
        descriptor: policy.descriptor(Wrapping::Wsh),
        active: true,
    };
    let v = reg::propose(
        previous,
        ubtc_core::bundle::BitcoinNetwork::Regtest,
        keys.iter().map(ToString::to_string).collect(),
        2,
        &[reserve],
    )
    .unwrap();
    let mut signed = v.clone();
    for b in signers {
        reg::add_signature(&mut signed, reg::sign(&v, &secret(*b)));
    }
    signed
}

async fn registry_versions_are_checked_and_immutable(store: Arc<dyn Store>) {
    let s = &*store;
    assert!(s.list_registry_versions().await.unwrap().is_empty());
    let invalid = |e: StoreError, code: &str| match e {
        StoreError::InvalidInput(m) => assert!(m.starts_with(code), "{m}"),
        other => panic!("expected {code}, got {other}"),
    };
    // Version 1 signed by one guardian of two needed: refused, nothing stored.
    let lone = registry_version(None, &[1], 2);
    invalid(
        s.publish_registry_version(&lone, T0).await.unwrap_err(),
        "registry_not_enough_signatures",
    );
    assert!(s.list_registry_versions().await.unwrap().is_empty());
    // A version 2 cannot start the chain.
    let v1 = registry_version(None, &[1, 2], 2);
    let orphan = registry_version(Some(&v1), &[1, 2], 3);
    invalid(
        s.publish_registry_version(&orphan, T0).await.unwrap_err(),
        "registry_not_genesis",
    );
    s.publish_registry_version(&v1, T0).await.unwrap();
    // The same number again (even the same version): refused, v1 unchanged.
    invalid(
        s.publish_registry_version(&v1, T0).await.unwrap_err(),
        "registry_version_not_increasing",
    );
    // A next version signed by one guardian, or linked to another previous version.
    let weak = registry_version(Some(&v1), &[3], 3);
    invalid(
        s.publish_registry_version(&weak, T0).await.unwrap_err(),
        "registry_not_enough_signatures",
    );
    let mut unlinked = registry_version(Some(&v1), &[], 3);
    unlinked.previous = Some("ab".repeat(32));
    let unlinked = {
        let mut signed = unlinked.clone();
        for b in [1u8, 2] {
            let k = bitcoin::secp256k1::SecretKey::from_slice(&[b; 32]).unwrap();
            ubtc_bitcoin::registry::add_signature(
                &mut signed,
                ubtc_bitcoin::registry::sign(&unlinked, &k),
            );
        }
        signed
    };
    invalid(
        s.publish_registry_version(&unlinked, T0).await.unwrap_err(),
        "registry_broken_link",
    );
    let v2 = registry_version(Some(&v1), &[2, 3], 3);
    s.publish_registry_version(&v2, T0.plus_millis(1))
        .await
        .unwrap();
    let stored = s.list_registry_versions().await.unwrap();
    assert_eq!(stored, vec![v1.clone(), v2.clone()]);
    assert_eq!(
        stored[1].previous.as_deref(),
        Some(v1.fingerprint().as_str())
    );
    // What is stored is what was signed: the chain verifies as read back.
    assert_eq!(
        ubtc_bitcoin::registry::verify_chain(&stored).unwrap().len(),
        2
    );
}

async fn chain_tokens(store: Arc<dyn Store>) {
    let s = &*store;
    assert!(s.list_chain_tokens().await.unwrap().is_empty());
    let mut eth = ChainToken {
        chain: chain("ethereum"),
        token_address: "0xtoken".into(),
        decimals: 8,
        symbol: "uBTC".into(),
    };
    let sol = ChainToken {
        chain: chain("solana"),
        token_address: "Mint111".into(),
        decimals: 9,
        symbol: "uBTC".into(),
    };
    s.upsert_chain_token(&sol).await.unwrap();
    s.upsert_chain_token(&eth).await.unwrap();
    eth.token_address = "0xnew".into();
    eth.decimals = 18;
    s.upsert_chain_token(&eth).await.unwrap();
    assert_eq!(s.list_chain_tokens().await.unwrap(), vec![eth, sol]);
}

async fn reserve_snapshots(store: Arc<dyn Store>) {
    let s = &*store;
    assert!(s.latest_reserve_snapshot().await.unwrap().is_none());
    let snap = |taken_at: Timestamp, height: u32| ReserveSnapshot {
        taken_at,
        bitcoin_height: height,
        bitcoin_block_hash: format!("hash{height}"),
        reserve_sats: Sats(2_100_000_000_000_000),
        supply_sats: Sats(150_000_000),
        ratio_ppm: Some(1_333_333),
        healthy: true,
        stale: height % 2 == 1,
        supply: vec![SupplyEntry {
            chain: chain("ethereum"),
            token: "0xtoken".into(),
            block_number: 19_000_000,
            block_hash: "0xb".into(),
            supply: TokenAmount::new(150_000_000, 8),
            as_of: taken_at,
        }],
    };
    let newer = snap(T0.plus_millis(60_000), 871_235);
    let older = snap(T0, 871_234);
    let id1 = s.record_reserve_snapshot(&newer).await.unwrap();
    let id2 = s.record_reserve_snapshot(&older).await.unwrap();
    assert_ne!(id1, id2);
    assert_eq!(s.latest_reserve_snapshot().await.unwrap(), Some(newer));
    let mut empty = snap(T0.plus_millis(120_000), 871_236);
    empty.ratio_ppm = None;
    empty.supply.clear();
    s.record_reserve_snapshot(&empty).await.unwrap();
    assert_eq!(s.latest_reserve_snapshot().await.unwrap(), Some(empty));
}

async fn chain_cursors(store: Arc<dyn Store>) {
    let s = &*store;
    let eth = chain("ethereum");
    assert!(s.get_cursor(&eth).await.unwrap().is_none());
    let mut cursor = ChainCursor {
        chain: eth.clone(),
        block_number: 19_000_000,
        block_hash: "0xa".into(),
    };
    s.set_cursor(&cursor, T0).await.unwrap();
    assert_eq!(s.get_cursor(&eth).await.unwrap().as_ref(), Some(&cursor));
    cursor.block_number += 1;
    cursor.block_hash = "0xb".into();
    s.set_cursor(&cursor, T0.plus_millis(1)).await.unwrap();
    assert_eq!(s.get_cursor(&eth).await.unwrap(), Some(cursor));
    assert!(s.get_cursor(&chain("solana")).await.unwrap().is_none());
}

async fn outbox_due_and_attempts(store: Arc<dyn Store>) {
    let s = &*store;
    queued(s, "ethereum", "0x1").await;
    let c = claim_one(s, "w", T0).await;
    let result = signed_result("x", 3);
    s.complete_signed(&c, &result, T0.plus_millis(10))
        .await
        .unwrap();
    let [e1, e2, e3] = [0, 1, 2].map(|i| result.outbox[i].event_id);
    assert_eq!(
        s.dead_letter_counts().await.unwrap(),
        ubtc_store::DeadLetterCounts::default()
    );

    assert!(s
        .due_outbox(T0.plus_millis(9), 10)
        .await
        .unwrap()
        .is_empty());
    let due = s.due_outbox(T0.plus_millis(10), 10).await.unwrap();
    assert_eq!(
        due.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![e1, e2, e3]
    );
    assert_eq!(s.due_outbox(T0.plus_millis(10), 2).await.unwrap().len(), 2);

    let now = T0.plus_millis(20);
    assert!(s
        .record_outbox_attempt(e1, &OutboxOutcome::Delivered, now)
        .await
        .unwrap());
    let retry = OutboxOutcome::Retry {
        next_attempt_at: T0.plus_millis(1_000),
        error: "HTTP 503".into(),
    };
    assert!(s.record_outbox_attempt(e2, &retry, now).await.unwrap());
    assert!(s
        .record_outbox_attempt(
            e3,
            &OutboxOutcome::Dead {
                error: "HTTP 410".into()
            },
            now
        )
        .await
        .unwrap());
    assert!(s
        .due_outbox(T0.plus_millis(999), 10)
        .await
        .unwrap()
        .is_empty());
    let due = s.due_outbox(T0.plus_millis(1_000), 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].event_id, due[0].attempts), (e2, 1));
    assert_eq!(due[0].last_error.as_deref(), Some("HTTP 503"));

    // Finished rows take no more attempts, and are kept.
    assert!(!s
        .record_outbox_attempt(e1, &OutboxOutcome::Delivered, now)
        .await
        .unwrap());
    assert!(!s.record_outbox_attempt(e3, &retry, now).await.unwrap());
    // The dead row waits for an operator, and `/metrics` counts it.
    let dead = s.dead_letter_counts().await.unwrap();
    assert_eq!(
        dead,
        ubtc_store::DeadLetterCounts {
            webhook_callbacks: 1,
            ..Default::default()
        }
    );
    assert!(!s
        .record_outbox_attempt(uuid::Uuid::now_v7(), &OutboxOutcome::Delivered, now)
        .await
        .unwrap());
    let rows = s.list_outbox_for(c.record.id).await.unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!((rows[0].delivered_at, rows[0].attempts), (Some(now), 1));
    assert_eq!(
        (rows[2].dead_at, rows[2].last_error.as_deref()),
        (Some(now), Some("HTTP 410"))
    );
    // A row without a callback URL that nobody subscribed to is kept dead for a later
    // redelivery: not a failure, and not counted as one.
    assert!(s
        .record_outbox_attempt(
            e2,
            &OutboxOutcome::Dead {
                error: "no callback URL and no subscribed consumer".into()
            },
            now
        )
        .await
        .unwrap());
    assert_eq!(s.dead_letter_counts().await.unwrap().webhook_callbacks, 1);
}

fn audit_entry(actor: &str, n: usize) -> NewAuditEntry {
    NewAuditEntry {
        actor: actor.into(),
        action: "reserve.add".into(),
        target: Some(format!("bc1q{n}")),
        old_value: None,
        new_value: Some(format!("{{\"n\":{n}}}")),
        ip: Some("127.0.0.1".into()),
        user_agent: (n != 1).then(|| "curl".to_owned()),
    }
}

async fn audit_chain(store: Arc<dyn Store>) {
    let s = &*store;
    assert_eq!(
        s.verify_audit_chain().await.unwrap(),
        AuditCheck {
            entries: 0,
            first_broken: None
        }
    );
    let first = s.append_audit(&audit_entry("admin", 0), T0).await.unwrap();
    assert_eq!(first.prev_hash, ubtc_store::audit::AUDIT_GENESIS_HASH);
    assert_eq!(
        first.hash,
        ubtc_store::audit::audit_hash(&first.prev_hash, T0, &audit_entry("admin", 0))
    );
    let second = s
        .append_audit(&audit_entry("admin", 1), T0.plus_millis(1))
        .await
        .unwrap();
    assert_eq!(second.prev_hash, first.hash);

    // Concurrent appends still form one chain.
    let mut tasks = Vec::new();
    for w in 0..6 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0..5 {
                store
                    .append_audit(&audit_entry(&format!("op{w}"), n), T0.plus_millis(2))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        s.verify_audit_chain().await.unwrap(),
        AuditCheck {
            entries: 32,
            first_broken: None
        }
    );
    let newest = s.list_audit(None, 10).await.unwrap();
    assert_eq!(newest.len(), 10);
    assert!(newest
        .windows(2)
        .all(|w| w[0].id > w[1].id && w[1].hash == w[0].prev_hash));
    let mut all = newest.clone();
    let mut before = newest.last().map(|e| e.id);
    while let Some(b) = before {
        let page = s.list_audit(Some(b), 10).await.unwrap();
        before = page.last().map(|e| e.id);
        all.extend(page);
    }
    assert_eq!(all.len(), 32);
    assert_eq!(all.last().unwrap(), &first);
}

async fn prepare_statement_fixes_once(store: Arc<dyn Store>) {
    let s = &*store;
    let id = queued(s, "ethereum", "0x1").await;
    let c = s.claim_next("w1", 1_000, T0).await.unwrap().unwrap();
    s.prepare_statement(&c, "{\"v\":1}", T0.plus_millis(1))
        .await
        .unwrap();
    assert_eq!(
        get(s, id).await.statement_json.as_deref(),
        Some("{\"v\":1}")
    );
    // Fixed once: a second preparation (same or later claim) writes nothing.
    let before = get(s, id).await;
    assert_lost(
        s.prepare_statement(&c, "{\"v\":2}", T0.plus_millis(2))
            .await,
    );
    assert_eq!(get(s, id).await, before);
    s.retry_later(
        &c,
        &Reason::new("x", "y"),
        T0.plus_millis(10),
        T0.plus_millis(3),
    )
    .await
    .unwrap();
    let c2 = s
        .claim_next("w2", 1_000, T0.plus_millis(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(c2.record.statement_json.as_deref(), Some("{\"v\":1}"));
    assert_lost(
        s.prepare_statement(&c2, "{\"v\":3}", T0.plus_millis(11))
            .await,
    );
    s.complete_signed(&c2, &signed_result("a", 0), T0.plus_millis(12))
        .await
        .unwrap();
    // A lost claim cannot prepare either.
    let other = queued(s, "ethereum", "0x2").await;
    let old = s
        .claim_next("old", 1_000, T0.plus_millis(20))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(old.record.id, other);
    let new = s
        .claim_next("new", 1_000, T0.plus_millis(1_021))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(new.record.id, other);
    assert_lost(s.prepare_statement(&old, "{}", T0.plus_millis(1_022)).await);
    assert_eq!(get(s, other).await.statement_json, None);
}

async fn batches_match_single_calls(store: Arc<dyn Store>) {
    use ValidationStatus::*;
    let s = &*store;
    assert!(s.record_detected_batch(&[], T0).await.unwrap().is_empty());
    assert!(s
        .confirm_and_enqueue_batch(&[], T0)
        .await
        .unwrap()
        .is_empty());
    assert!(s.prepare_statements(&[], T0).await.unwrap().is_empty());
    assert!(s.complete_signed_batch(&[], T0).await.unwrap().is_empty());

    // Record: new, new, the first again under another id, one known before.
    let known = detected(s, "ethereum", "0xk").await;
    let a = new_validation("ethereum", "0xa", 0);
    let b = new_validation("ethereum", "0xb", 0);
    let a_again = new_validation("ethereum", "0xa", 0);
    let k_again = new_validation("ethereum", "0xk", 0);
    let recorded = s
        .record_detected_batch(&[a.clone(), b.clone(), a_again, k_again], T0)
        .await
        .unwrap();
    assert_eq!(
        recorded,
        vec![
            Recorded::Inserted(a.id),
            Recorded::Inserted(b.id),
            Recorded::AlreadyKnown(a.id),
            Recorded::AlreadyKnown(known),
        ]
    );

    // Confirm: per-item outcome; a refused item changes nothing, the others are written.
    let q = queued(s, "ethereum", "0xq").await;
    let q_before = get(s, q).await;
    let missing = ValidationId::new();
    let out = s
        .confirm_and_enqueue_batch(
            &[
                (a.id, 3, None),
                (b.id, 3, Some(T0.plus_millis(50))),
                (q, 1, None),
                (missing, 1, None),
            ],
            T0.plus_millis(1),
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].as_ref().unwrap(), &Queued);
    assert_eq!(out[1].as_ref().unwrap(), &Delayed);
    assert!(
        matches!(&out[2], Err(StoreError::Transition(e)) if e.from == Queued && e.to == Confirmed)
    );
    assert!(matches!(&out[3], Err(StoreError::NotFound(id)) if *id == missing));
    assert_eq!(get(s, q).await, q_before);
    let ra = get(s, a.id).await;
    assert_eq!(
        (ra.status, ra.confirmations, ra.not_before),
        (Queued, 3, Some(T0.plus_millis(1)))
    );
    assert_eq!(get(s, b.id).await.not_before, Some(T0.plus_millis(50)));

    // Claim three (q, a, then b once due); take b's claim over to make it lost.
    let claims = s
        .claim_batch("w", 10, 1_000, T0.plus_millis(50))
        .await
        .unwrap();
    assert_eq!(
        claims.iter().map(|c| c.record.id).collect::<HashSet<_>>(),
        HashSet::from([q, a.id, b.id])
    );
    let lost = claims.iter().find(|c| c.record.id == b.id).unwrap().clone();
    for c in claims.iter().filter(|c| c.record.id != b.id) {
        s.renew_lease(c, 60_000, T0.plus_millis(1_000))
            .await
            .unwrap();
    }
    let taken = s
        .claim_next("x", 1_000, T0.plus_millis(1_051))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(taken.record.id, b.id);
    let held: Vec<&Claimed> = claims.iter().filter(|c| c.record.id != b.id).collect();

    let prepared = s
        .prepare_statements(
            &[
                (held[0], "{\"s\":0}"),
                (&lost, "{\"s\":1}"),
                (held[1], "{\"s\":2}"),
            ],
            T0,
        )
        .await
        .unwrap();
    assert_eq!(prepared, vec![true, false, true]);
    assert_eq!(
        get(s, held[0].record.id).await.statement_json.as_deref(),
        Some("{\"s\":0}")
    );
    assert_eq!(get(s, b.id).await.statement_json, None);
    assert_eq!(
        s.prepare_statements(&[(held[0], "{}")], T0).await.unwrap(),
        vec![false]
    );

    let results = [
        signed_result("0", 1),
        signed_result("1", 1),
        signed_result("2", 2),
    ];
    let b_before = get(s, b.id).await;
    let done = s
        .complete_signed_batch(
            &[
                (held[0], &results[0]),
                (&lost, &results[1]),
                (held[1], &results[2]),
            ],
            T0.plus_millis(2_000),
        )
        .await
        .unwrap();
    assert_eq!(done, vec![true, false, true]);
    assert_eq!(get(s, b.id).await, b_before);
    assert!(s.list_outbox_for(b.id).await.unwrap().is_empty());
    assert_eq!(
        s.get_bundle(held[1].record.id).await.unwrap().unwrap(),
        results[2].bundle_json
    );
    assert_eq!(s.list_outbox_for(held[1].record.id).await.unwrap().len(), 2);
    assert_eq!(get(s, held[0].record.id).await.status, Signed);
    assert_eq!(s.stats(T0).await.unwrap().signed_since, 2);
    s.complete_signed(&taken, &results[1], T0.plus_millis(2_001))
        .await
        .unwrap();
}

async fn reserve_history_buckets(store: Arc<dyn Store>) {
    let s = &*store;
    let snap = |taken_at: Timestamp, ratio_ppm: Option<u64>| ReserveSnapshot {
        taken_at,
        bitcoin_height: 871_000,
        bitcoin_block_hash: "hash".into(),
        reserve_sats: Sats(100),
        supply_sats: Sats(90),
        ratio_ppm,
        healthy: true,
        stale: false,
        supply: Vec::new(),
    };
    let far = T0.plus_millis(86_400_000);
    assert!(s
        .reserve_history(T0, far, HistoryBucket::Minute, 10)
        .await
        .unwrap()
        .is_empty());
    // T0 and T0 + 10 s share a minute (starting 20 s before T0); T0 + 70 s is the next.
    let first = snap(T0, Some(1_100_000));
    let second = snap(T0.plus_millis(10_000), Some(900_000));
    let third = snap(T0.plus_millis(70_000), Some(1_200_000));
    let unknown = snap(T0.plus_millis(75_000), None);
    for x in [&first, &second, &third, &unknown] {
        s.record_reserve_snapshot(x).await.unwrap();
    }
    let minutes = s
        .reserve_history(T0, far, HistoryBucket::Minute, 10)
        .await
        .unwrap();
    assert_eq!(minutes.len(), 2);
    assert_eq!(minutes[0].bucket_start, T0.plus_millis(-20_000));
    assert_eq!(minutes[0].samples, 2);
    assert_eq!(
        (minutes[0].min_ratio_ppm, minutes[0].max_ratio_ppm),
        (Some(900_000), Some(1_100_000))
    );
    assert_eq!(minutes[0].last, second);
    assert_eq!(minutes[1].bucket_start, T0.plus_millis(40_000));
    assert_eq!(minutes[1].samples, 2);
    assert_eq!(
        (minutes[1].min_ratio_ppm, minutes[1].max_ratio_ppm),
        (Some(1_200_000), Some(1_200_000))
    );
    assert_eq!(minutes[1].last, unknown);

    let hours = s
        .reserve_history(T0, far, HistoryBucket::Hour, 10)
        .await
        .unwrap();
    assert_eq!(hours.len(), 1);
    assert_eq!(
        (
            hours[0].samples,
            hours[0].min_ratio_ppm,
            hours[0].max_ratio_ppm
        ),
        (4, Some(900_000), Some(1_200_000))
    );
    // `from` is inclusive, `to` exclusive; `limit` keeps the oldest points.
    let window = s
        .reserve_history(
            T0.plus_millis(10_000),
            T0.plus_millis(70_000),
            HistoryBucket::Minute,
            10,
        )
        .await
        .unwrap();
    assert_eq!(window.len(), 1);
    assert_eq!((window[0].samples, window[0].last.clone()), (1, second));
    let limited = s
        .reserve_history(T0, far, HistoryBucket::Minute, 1)
        .await
        .unwrap();
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].bucket_start, T0.plus_millis(-20_000));
}

// ---------------------------------------------------------------- backend-specific

#[tokio::test]
async fn unreachable_postgres_is_unavailable() {
    let err = PgStore::connect("postgres://root@127.0.0.1:1/test", 1)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
}

#[tokio::test]
async fn closed_pools_are_unavailable() {
    let sqlite = SqliteStore::connect("sqlite::memory:", 1).await.unwrap();
    sqlite.pool().close().await;
    assert!(sqlite.ping().await.unwrap_err().is_transient());
    let pg = PgStore::connect(&pg_url(), 1).await.unwrap();
    pg.ping().await.unwrap();
    pg.pool().close().await;
    let err = pg.get_validation(ValidationId::new()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn connect_dispatches_on_url() {
    let store = connect("sqlite::memory:", 4).await.unwrap();
    store.migrate().await.unwrap();
    let id = queued(&*store, "ethereum", "0x1").await;
    assert_eq!(get(&*store, id).await.status, ValidationStatus::Queued);
    assert!(matches!(
        connect("mysql://user:secret@host/db", 1).await,
        Err(StoreError::UnsupportedUrl(u)) if !u.contains("secret")
    ));
    let pg = connect(&pg_url(), 1).await.unwrap();
    pg.ping().await.unwrap();
}

#[tokio::test]
async fn postgres_audit_log_is_append_only() {
    let (store, _cleanup) = pg_store(2).await;
    let insert = "INSERT INTO audit_logs (at, actor, action, prev_hash, hash) VALUES (1, 'admin', 'x', '', 'h1')";
    sqlx::query(insert).execute(store.pool()).await.unwrap();
    for refused in [
        "UPDATE audit_logs SET actor = 'eve'",
        "DELETE FROM audit_logs",
        "TRUNCATE audit_logs",
    ] {
        let err = sqlx::query(refused)
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{refused}: {err}");
    }
}

#[tokio::test]
async fn tampering_is_detected_and_sqlite_audit_is_append_only() {
    let (store, _cleanup) = sqlite_store(1).await;
    let good = store
        .append_audit(&audit_entry("admin", 0), T0)
        .await
        .unwrap();
    for refused in [
        "UPDATE audit_logs SET actor = 'eve'",
        "DELETE FROM audit_logs",
    ] {
        let err = sqlx::query(refused)
            .execute(store.pool())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("append-only"), "{refused}: {err}");
    }
    // A row inserted behind the store's back, with a forged hash, is found.
    sqlx::query("INSERT INTO audit_logs (at, actor, action, prev_hash, hash) VALUES (5, 'eve', 'x', $1, 'forged')")
        .bind(good.hash.as_str())
        .execute(store.pool())
        .await
        .unwrap();
    let check = store.verify_audit_chain().await.unwrap();
    assert_eq!((check.entries, check.first_broken), (2, Some(good.id + 1)));
}

// ---------------------------------------------------------------- named leases

async fn leases_are_exclusive_under_concurrency(store: Arc<dyn Store>) {
    // 16 callers race for one free lease at the same instant, several rounds: exactly
    // one wins each round (the round's `now` is past the previous expiry, so the lease
    // is free again), and every winner's token is larger than the last.
    const CALLERS: usize = 16;
    let mut last_token = 0;
    for round in 0..5i64 {
        let now = T0.plus_millis(round * 10_000);
        let mut tasks = Vec::new();
        for c in 0..CALLERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let holder = format!("p{round}-{c}");
                store
                    .acquire_lease("monitor:ethereum", &holder, 5_000, now)
                    .await
                    .unwrap()
                    .map(|l| (holder, l))
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            if let Some(w) = t.await.unwrap() {
                winners.push(w);
            }
        }
        assert_eq!(
            winners.len(),
            1,
            "round {round}: exactly one holder, got {winners:?}"
        );
        let (holder, lease) = &winners[0];
        assert!(
            lease.token > last_token,
            "the fencing token grows on takeover"
        );
        assert_eq!(lease.expires_at, now.plus_millis(5_000));
        last_token = lease.token;
        let state = store.get_lease("monitor:ethereum").await.unwrap().unwrap();
        assert_eq!(&state.holder, holder);
        assert_eq!(state.token, lease.token);
    }
    // Another name is independent.
    assert!(store
        .acquire_lease("monitor:polygon", "x", 5_000, T0)
        .await
        .unwrap()
        .is_some());
}

async fn lease_expiry_takeover_and_renewal(store: Arc<dyn Store>) {
    let name = "monitor:dev";
    assert_eq!(store.get_lease(name).await.unwrap(), None);
    let a = store
        .acquire_lease(name, "a", 1_000, T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(a.expires_at, T0.plus_millis(1_000));
    // Held: another holder is refused, up to and including the expiry instant.
    for t in [0, 500, 1_000] {
        assert_eq!(
            store
                .acquire_lease(name, "b", 1_000, T0.plus_millis(t))
                .await
                .unwrap(),
            None
        );
    }
    // The holder renews: same token, later expiry.
    let renewed = store
        .acquire_lease(name, "a", 1_000, T0.plus_millis(900))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(renewed.token, a.token);
    assert_eq!(renewed.expires_at, T0.plus_millis(1_900));
    assert_eq!(
        store
            .acquire_lease(name, "b", 1_000, T0.plus_millis(1_500))
            .await
            .unwrap(),
        None
    );
    // Expired (strictly after 1_900): b takes over with a larger token.
    let b = store
        .acquire_lease(name, "b", 1_000, T0.plus_millis(1_901))
        .await
        .unwrap()
        .unwrap();
    assert!(b.token > a.token);
    // The old holder cannot renew any more.
    assert_eq!(
        store
            .acquire_lease(name, "a", 1_000, T0.plus_millis(1_950))
            .await
            .unwrap(),
        None
    );
    let state = store.get_lease(name).await.unwrap().unwrap();
    assert_eq!((state.holder.as_str(), state.token), ("b", b.token));
    assert_eq!(state.expires_at, T0.plus_millis(2_901));
    // A holder taking its own lease back after it expired is a new term: new token.
    let b2 = store
        .acquire_lease(name, "b", 1_000, T0.plus_millis(5_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b2.token, b.token + 1);
    assert!(matches!(
        store.acquire_lease(name, "b", 0, T0).await,
        Err(StoreError::InvalidInput(_))
    ));
}

async fn lease_release(store: Arc<dyn Store>) {
    let name = "monitor:dev";
    let a = store
        .acquire_lease(name, "a", 60_000, T0)
        .await
        .unwrap()
        .unwrap();
    // Only the holder can release.
    assert!(!store.release_lease(name, "b").await.unwrap());
    assert!(!store.release_lease("monitor:other", "a").await.unwrap());
    assert_eq!(
        store
            .acquire_lease(name, "b", 60_000, T0.plus_millis(1))
            .await
            .unwrap(),
        None
    );
    assert!(store.release_lease(name, "a").await.unwrap());
    assert!(
        !store.release_lease(name, "a").await.unwrap(),
        "already released"
    );
    // Free at once, long before the expiry it had.
    let b = store
        .acquire_lease(name, "b", 60_000, T0.plus_millis(2))
        .await
        .unwrap()
        .unwrap();
    assert!(b.token > a.token);
    assert!(!store.release_lease(name, "a").await.unwrap());
    assert_eq!(store.get_lease(name).await.unwrap().unwrap().holder, "b");
}

// ---------------------------------------------------------------- webhook consumers

fn consumer_new(url: &str, events: &[&str]) -> NewWebhookConsumer {
    NewWebhookConsumer {
        url: url.into(),
        secret: format!("secret-{url}"),
        events: events.iter().map(|e| (*e).to_owned()).collect(),
    }
}

async fn webhook_consumers_and_deliveries(store: Arc<dyn Store>) {
    let s = &*store;
    let a = s
        .add_webhook_consumer(
            &consumer_new(
                "https://a.example/h",
                &["validation.signed", "validation.failed"],
            ),
            T0,
        )
        .await
        .unwrap();
    let b = s
        .add_webhook_consumer(
            &consumer_new("https://b.example/h", &["validation.delayed"]),
            T0,
        )
        .await
        .unwrap();
    let c = s
        .add_webhook_consumer(
            &consumer_new("https://c.example/h", &["validation.signed"]),
            T0,
        )
        .await
        .unwrap();
    assert!(s.deactivate_webhook_consumer(c.id, T0).await.unwrap());
    assert!(!s.deactivate_webhook_consumer(c.id, T0).await.unwrap());
    let listed = s.list_webhook_consumers().await.unwrap();
    assert_eq!(listed.len(), 3);
    let la = listed.iter().find(|x| x.id == a.id).unwrap();
    assert_eq!(la, &a);
    assert!(la.active);
    assert!(!listed.iter().find(|x| x.id == c.id).unwrap().active);
    assert!(listed.iter().find(|x| x.id == b.id).unwrap().active);

    let id = queued(s, "ethereum", "0x1").await;
    let cl = claim_one(s, "w", T0).await;
    let result = signed_result("x", 1);
    let event = result.outbox[0].event_id;
    s.complete_signed(&cl, &result, T0).await.unwrap();

    // Only the active consumer subscribed to the type gets a delivery, once.
    assert_eq!(s.fan_out_event(event, T0).await.unwrap(), 1);
    assert_eq!(s.fan_out_event(event, T0).await.unwrap(), 1);
    let due = s.due_webhook_deliveries(T0, 10).await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].event_id, due[0].consumer_id), (event, a.id));
    assert_eq!(due[0].secret, a.secret);
    assert_eq!(due[0].url, a.url);
    assert_eq!(due[0].validation_id, Some(id));
    assert_eq!(due[0].payload_json, result.outbox[0].payload_json);

    let retry = OutboxOutcome::Retry {
        next_attempt_at: T0.plus_millis(1_000),
        error: "HTTP 503".into(),
    };
    assert!(s
        .record_delivery_attempt(event, a.id, &retry, T0)
        .await
        .unwrap());
    assert!(s
        .due_webhook_deliveries(T0.plus_millis(999), 10)
        .await
        .unwrap()
        .is_empty());
    let now = T0.plus_millis(1_000);
    assert_eq!(
        s.due_webhook_deliveries(now, 10).await.unwrap()[0].attempts,
        1
    );
    assert!(s
        .record_delivery_attempt(event, a.id, &OutboxOutcome::Delivered, now)
        .await
        .unwrap());
    assert!(!s
        .record_delivery_attempt(event, a.id, &OutboxOutcome::Delivered, now)
        .await
        .unwrap());
    assert!(s.due_webhook_deliveries(now, 10).await.unwrap().is_empty());

    // The log, per validation and per consumer; rows are kept.
    let by_validation = s
        .list_webhook_deliveries(&DeliveryFilter {
            validation: Some(id),
            consumer: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(by_validation.len(), 1);
    assert_eq!(by_validation[0].delivered_at, Some(now));
    assert_eq!(by_validation[0].attempts, 2);
    assert_eq!(by_validation[0].last_error.as_deref(), Some("HTTP 503"));
    for (consumer, n) in [(a.id, 1), (b.id, 0)] {
        let log = s
            .list_webhook_deliveries(&DeliveryFilter {
                validation: None,
                consumer: Some(consumer),
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(log.len(), n);
    }

    // Redelivery: the consumer delivery and the callback outbox row are due again.
    s.record_outbox_attempt(event, &OutboxOutcome::Delivered, now)
        .await
        .unwrap();
    let later = T0.plus_millis(5_000);
    assert_eq!(s.redeliver(event, later).await.unwrap(), 2);
    let due = s.due_webhook_deliveries(later, 10).await.unwrap();
    assert_eq!((due.len(), due[0].event_id, due[0].attempts), (1, event, 0));
    let due = s.due_outbox(later, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        vec![event]
    );
    assert_eq!(
        s.get_outbox_event(event).await.unwrap().unwrap().event_id,
        event
    );
    assert!(s
        .get_outbox_event(uuid::Uuid::now_v7())
        .await
        .unwrap()
        .is_none());
    assert_eq!(s.redeliver(uuid::Uuid::now_v7(), later).await.unwrap(), 0);

    // A deactivated consumer's pending deliveries are not attempted.
    assert!(s.deactivate_webhook_consumer(a.id, later).await.unwrap());
    assert!(s
        .due_webhook_deliveries(later, 10)
        .await
        .unwrap()
        .is_empty());
}

async fn notify_writes_outbox_atomically(store: Arc<dyn Store>) {
    let s = &*store;
    let d1 = detected(s, "ethereum", "0x1").await;
    let d2 = detected(s, "ethereum", "0x2").await;
    let event = |t: &str| NewOutboxEvent {
        event_id: uuid::Uuid::now_v7(),
        event_type: t.into(),
        payload_json: "{}".into(),
        target_url: None,
    };
    let e1 = event("validation.delayed");
    let until = T0.plus_millis(60_000);
    let items = [(d1, 12, Some(until)), (d2, 12, None)];
    let out = s
        .confirm_and_enqueue_batch_notify(&items, &[Some(e1.clone()), None], T0)
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap(), &ValidationStatus::Delayed);
    assert_eq!(out[1].as_ref().unwrap(), &ValidationStatus::Queued);
    let rows = s.list_outbox_for(d1).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].event_id, rows[0].event_type.as_str()),
        (e1.event_id, "validation.delayed")
    );
    assert!(s.list_outbox_for(d2).await.unwrap().is_empty());
    // Again: nothing moves, so no event is written.
    let again = s
        .confirm_and_enqueue_batch_notify(&items[..1], &[Some(event("validation.delayed"))], T0)
        .await
        .unwrap();
    assert!(again[0].is_err());
    assert_eq!(s.list_outbox_for(d1).await.unwrap().len(), 1);

    let d3 = detected(s, "ethereum", "0x3").await;
    let reason = Reason::new("below_minimum", "too little");
    let e3 = event("validation.rejected");
    s.confirm_and_reject_notify(d3, 12, &reason, &e3, T0)
        .await
        .unwrap();
    assert_eq!(get(s, d3).await.status, ValidationStatus::Rejected);
    assert_eq!(
        s.list_outbox_for(d3).await.unwrap()[0].event_id,
        e3.event_id
    );
    assert!(s
        .confirm_and_reject_notify(d3, 12, &reason, &event("validation.rejected"), T0)
        .await
        .is_err());
    assert_eq!(s.list_outbox_for(d3).await.unwrap().len(), 1);
}

/// A payment dropped in a reorg and mined again (same transaction, another block) goes
/// back to `detected` in its new block, single and batch alike; the same reference
/// with other content, or a payment that was never dropped, changes nothing.
async fn a_dropped_payment_mined_again_is_detected_again(store: Arc<dyn Store>) {
    use ValidationStatus::*;
    let s = &*store;
    let reorged = Reason::new("reorged", "block 100 left the canonical chain");
    let dropped = |tx: &'static str| {
        let reorged = reorged.clone();
        async move {
            let id = detected(s, "ethereum", tx).await;
            s.drop_reorged(id, &reorged, T0.plus_millis(1))
                .await
                .unwrap();
            id
        }
    };
    let again = |tx: &str| {
        let mut n = new_validation("ethereum", tx, 0);
        n.block = ChainBlock {
            number: 103,
            hash: "0xnewblock".into(),
        };
        n
    };

    // Single call.
    let id = dropped("0xa1").await;
    let later = T0.plus_millis(5);
    assert_eq!(
        s.record_detected(&again("0xa1"), later).await.unwrap(),
        Recorded::Revived(id)
    );
    let r = get(s, id).await;
    assert_eq!(r.status, Detected);
    assert_eq!(r.block.number, 103);
    assert_eq!(r.block.hash, "0xnewblock");
    assert_eq!(r.reason.as_ref().map(|r| r.code.as_str()), Some("remined"));
    assert_eq!(r.updated_at, later);
    // Seen once more while detected: nothing changes.
    assert_eq!(
        s.record_detected(&again("0xa1"), T0.plus_millis(9))
            .await
            .unwrap(),
        Recorded::AlreadyKnown(id)
    );
    assert_eq!(get(s, id).await, r);
    // It is listed for the depth check and can be confirmed and queued like any other.
    assert!(s
        .list_detected(&chain("ethereum"), 10)
        .await
        .unwrap()
        .iter()
        .any(|d| d.id == id));
    assert_eq!(
        s.confirm_and_enqueue(id, 3, None, T0.plus_millis(10))
            .await
            .unwrap(),
        Queued
    );

    // Batch: revived, new and already known side by side.
    let b = dropped("0xa2").await;
    let fresh = new_validation("ethereum", "0xa3", 0);
    let out = s
        .record_detected_batch(&[again("0xa2"), fresh.clone(), again("0xa1")], later)
        .await
        .unwrap();
    assert_eq!(
        out,
        vec![
            Recorded::Revived(b),
            Recorded::Inserted(fresh.id),
            Recorded::AlreadyKnown(id)
        ]
    );
    assert_eq!(get(s, b).await.status, Detected);
    assert_eq!(get(s, id).await.status, Queued);

    // The same reference with another amount or message is not the same payment: it
    // stays dropped.
    let c = dropped("0xa4").await;
    let before = get(s, c).await;
    let mut other = again("0xa4");
    other.amount_base_units += 1;
    assert_eq!(
        s.record_detected(&other, later).await.unwrap(),
        Recorded::AlreadyKnown(c)
    );
    let mut other = again("0xa4");
    other.message = b"another message".to_vec();
    assert_eq!(
        s.record_detected_batch(&[other], later).await.unwrap(),
        vec![Recorded::AlreadyKnown(c)]
    );
    assert_eq!(get(s, c).await, before);
}

// ---------------------------------------------------------------- attestations

/// An unsigned attestation at `height` holding `sats` (the store keeps what it is
/// given; signatures are the pipeline's and the verifier's business).
fn attestation(height: u32, sats: u64) -> ubtc_core::attestation::ReserveAttestation {
    use ubtc_core::attestation::*;
    use ubtc_core::bundle::{BitcoinNetwork, Utxo};
    ReserveAttestation::unsigned(AttestationContent {
        network: BitcoinNetwork::Regtest,
        bitcoin_block: AttestedBlock {
            height,
            hash: format!("{height:064x}"),
        },
        reserves: vec![AttestedReserve {
            address: "bcrt1qreserve".into(),
            descriptor: "wpkh(02aa)#abcdefgh".into(),
            status: ReserveStatus::Active,
            utxos: vec![Utxo {
                txid: format!("{:064x}", u64::from(height) * 7 + 1),
                vout: 0,
                amount_sats: sats,
                script_pubkey_hex: "0014".to_owned() + &"ab".repeat(20),
            }],
        }],
        supply: vec![AttestedSupply {
            chain: chain("ethereum"),
            token: "0xtoken".into(),
            block_number: 100,
            block_hash: "0xblock".into(),
            supply: TokenAmount::new(100_000_000, 8),
        }],
        registry: RegistryRef {
            version: 3,
            fingerprint: "ab".repeat(32),
        },
        audit_head: "cd".repeat(32),
        created_at: T0,
    })
    .unwrap()
}

async fn attestations_are_kept_paged_and_marked(store: Arc<dyn Store>) {
    let s = store.as_ref();
    assert!(s.latest_attestation().await.unwrap().is_none());
    assert!(s.list_attestations(None, 10).await.unwrap().is_empty());
    assert!(s.get_attestation(1).await.unwrap().is_none());

    let mut ids = Vec::new();
    for (i, height) in [100_u32, 106, 112].into_iter().enumerate() {
        let att = attestation(height, 150_000_000 + i as u64);
        let sum = s
            .record_attestation(&att, Timestamp(T0.0 + i as i64))
            .await
            .unwrap();
        assert_eq!(sum.digest, hex::encode(att.digest()));
        assert_eq!(sum.bitcoin_height, height);
        assert_eq!(sum.reserve_sats, 150_000_000 + i as u64);
        assert_eq!(sum.supply_sats, 100_000_000);
        assert_eq!(sum.ratio_ppm, att.totals.ratio_ppm);
        assert_eq!(sum.registry_version, 3);
        assert_eq!(sum.utxo_count, 1);
        assert_eq!(sum.reorged_at, None);
        // The same document again stores nothing new.
        let again = s
            .record_attestation(&att, Timestamp(T0.0 + 99))
            .await
            .unwrap();
        assert_eq!(again, sum);
        // The document comes back byte for byte and parses to what was stored.
        let stored = s.get_attestation(sum.id).await.unwrap().unwrap();
        assert_eq!(stored.summary, sum);
        let back =
            ubtc_core::attestation::ReserveAttestation::from_json(stored.body.as_bytes()).unwrap();
        assert_eq!(back, att);
        ids.push(sum.id);
    }
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");

    let latest = s.latest_attestation().await.unwrap().unwrap();
    assert_eq!(latest.summary.id, ids[2]);

    // Newest first, paged by id.
    let page = s.list_attestations(None, 2).await.unwrap();
    assert_eq!(
        page.iter().map(|a| a.id).collect::<Vec<_>>(),
        vec![ids[2], ids[1]]
    );
    let next = s.list_attestations(Some(ids[1]), 2).await.unwrap();
    assert_eq!(next.iter().map(|a| a.id).collect::<Vec<_>>(), vec![ids[0]]);

    // A reorged attestation stays listed, marked, and is no longer the latest.
    assert!(s
        .mark_attestation_reorged(ids[2], Timestamp(T0.0 + 50))
        .await
        .unwrap());
    assert!(!s
        .mark_attestation_reorged(ids[2], Timestamp(T0.0 + 60))
        .await
        .unwrap());
    assert!(!s
        .mark_attestation_reorged(9_999, Timestamp(T0.0 + 60))
        .await
        .unwrap());
    let marked = s.get_attestation(ids[2]).await.unwrap().unwrap();
    assert_eq!(marked.summary.reorged_at, Some(Timestamp(T0.0 + 50)));
    let latest = s.latest_attestation().await.unwrap().unwrap();
    assert_eq!(latest.summary.id, ids[1]);
    let all = s.list_attestations(None, 10).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].reorged_at, Some(Timestamp(T0.0 + 50)));
}

/// The schema itself refuses to edit or delete a stored attestation: only the
/// reorged mark may be set, once. Raw SQL on the store's own pool, on both backends.
macro_rules! attestation_rows_are_immutable {
    ($name:ident, $make:expr) => {
        #[tokio::test]
        async fn $name() {
            let (store, _cleanup) = $make.await;
            let sum = store
                .record_attestation(&attestation(200, 5), T0)
                .await
                .unwrap();
            let id = sum.id;
            for edit in [
                format!("UPDATE attestations SET reserve_sats = 6 WHERE id = {id}"),
                format!("UPDATE attestations SET body = 'x' WHERE id = {id}"),
                format!("UPDATE attestations SET reorged_at = 1, reserve_sats = 6 WHERE id = {id}"),
                format!("DELETE FROM attestations WHERE id = {id}"),
            ] {
                let err = sqlx::query(&edit).execute(store.pool()).await.unwrap_err();
                assert!(err.to_string().contains("immutable"), "{edit}: {err}");
            }
            let still = store.get_attestation(id).await.unwrap().unwrap();
            assert_eq!(still.summary, sum);
            sqlx::query(&format!(
                "UPDATE attestations SET reorged_at = 7 WHERE id = {id}"
            ))
            .execute(store.pool())
            .await
            .unwrap();
            let err = sqlx::query(&format!(
                "UPDATE attestations SET reorged_at = 8 WHERE id = {id}"
            ))
            .execute(store.pool())
            .await
            .unwrap_err();
            assert!(err.to_string().contains("immutable"), "{err}");
        }
    };
}
attestation_rows_are_immutable!(sqlite_attestation_rows_are_immutable, sqlite_store(1));
attestation_rows_are_immutable!(postgres_attestation_rows_are_immutable, pg_store(2));
