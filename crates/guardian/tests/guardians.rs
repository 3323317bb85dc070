//! Guardian checks and coordinator behaviour, with in-process guardians on loopback
//! ports (the real-process tests are in crates/ubtc/tests/guardian_processes.rs).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use common::{GuardianSpec, Harness};
use ubtc_bitcoin::bip322::ToSignParams;
use ubtc_bitcoin::multisig::{Form, SigningRequest, SortedMulti, Wrapping};
use ubtc_core::bundle::{
    ApprovalDecision, BitcoinNetwork, PaymentInfo, ProofBundle, BUNDLE_FORMAT,
    BUNDLE_VERSION_LEGACY,
};
use ubtc_core::{Statement, Timestamp};
use ubtc_guardian::protocol::{
    self, BatchAnswer, Envelope, Outcome, RefusalCode, SignAnswer, SignBatch, SignRequest,
    ANSWER_TAG,
};
use ubtc_guardian::{Coordinator, GuardianKey};
use ubtc_pipeline::{ReserveSigner, SignFailure, SignedStatement};

fn bundle(statement: &Statement, signed: SignedStatement) -> ProofBundle {
    ProofBundle {
        format: BUNDLE_FORMAT.into(),
        version: BUNDLE_VERSION_LEGACY,
        network: BitcoinNetwork::Regtest,
        statement: statement.clone(),
        statement_text: statement.text(),
        payment: PaymentInfo {
            amount_base_units: 1000,
            unit: "wei".into(),
            block_number: 1,
            block_hash: "00".into(),
        },
        reserves: signed.reserves,
        proof_of_funds: None,
        supply: Vec::new(),
        reserve_figures: None,
        approvals: signed.approvals,
        created_at: Timestamp::now(),
        registry: Vec::new(),
    }
}

fn request(c: &Coordinator, statement: &Statement, ttl_ms: i64) -> SignRequest {
    let now = Timestamp::now();
    SignRequest {
        request_id: uuid::Uuid::new_v4(),
        issued_at: now,
        expires_at: now.plus_millis(ttl_ms),
        payment: statement.payment.clone(),
        statement: statement.clone(),
        signing: c.signing_request(statement).unwrap(),
    }
}

async fn send(url: &str, envelope: &Envelope, guardian: &GuardianKey) -> (SignAnswer, Envelope) {
    let answer: Envelope = reqwest::Client::new()
        .post(format!("{url}/v1/sign"))
        .json(envelope)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (body, _) = protocol::open(ANSWER_TAG, &answer, &[guardian.public()]).unwrap();
    (body, answer)
}

async fn send_batch(url: &str, envelope: &Envelope) -> Envelope {
    let resp = reqwest::Client::new()
        .post(format!("{url}/v1/sign_batch"))
        .json(envelope)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.unwrap()
}

/// Opens a batch answer with the guardian's key (and no other tag).
fn open_batch(sealed: &Envelope, guardian: &GuardianKey) -> BatchAnswer {
    assert!(protocol::open::<BatchAnswer>(ANSWER_TAG, sealed, &[guardian.public()]).is_err());
    protocol::open_limited(
        protocol::BATCH_ANSWER_TAG,
        sealed,
        &[guardian.public()],
        protocol::MAX_BATCH_BODY_BYTES,
    )
    .unwrap()
    .0
}

/// The answers of a batch, opened with the guardian's key.
fn bodies(sealed: &Envelope, guardian: &GuardianKey) -> Vec<SignAnswer> {
    let batch = open_batch(sealed, guardian);
    assert_eq!(batch.guardian_key, guardian.public_hex());
    batch.answers
}

fn batch_of(items: Vec<SignRequest>, ttl_ms: i64) -> SignBatch {
    let now = Timestamp::now();
    SignBatch {
        batch_id: uuid::Uuid::new_v4(),
        issued_at: now,
        expires_at: now.plus_millis(ttl_ms),
        items,
    }
}

fn refusal(a: &SignAnswer) -> Option<RefusalCode> {
    match &a.outcome {
        Outcome::Refused { code, .. } => Some(*code),
        Outcome::Approved { .. } => None,
    }
}

fn three() -> Vec<GuardianSpec> {
    (0..3).map(|_| GuardianSpec::default()).collect()
}

#[tokio::test]
async fn two_of_three_in_process_verifies() {
    let h = Harness::new(three()).await;
    let c = h.coordinator(2);
    let p = h.pay("hello guardians", 3);
    let s = h.statement(&p).await;
    let signed = c.sign(&s).await.unwrap();
    let approved = signed
        .approvals
        .iter()
        .filter(|a| a.decision == ApprovalDecision::Approved)
        .count();
    assert!(approved >= 2, "{:?}", signed.approvals);
    assert_eq!(signed.approvals.len(), 3);
    let report = ubtc_bitcoin::bundle::verify_bundle(&bundle(&s, signed));
    assert!(report.is_valid(), "{report}");
}

#[tokio::test]
async fn three_of_five_verifies() {
    let h = Harness::new((0..5).map(|_| GuardianSpec::default()).collect()).await;
    let c = h.coordinator(3);
    let p = h.pay("three of five", 3);
    let s = h.statement(&p).await;
    let signed = c.sign(&s).await.unwrap();
    let report = ubtc_bitcoin::bundle::verify_bundle(&bundle(&s, signed));
    assert!(report.is_valid(), "{report}");
}

#[tokio::test]
async fn guardian_lacking_the_payment_refuses_and_it_is_recorded() {
    let mut specs = three();
    specs[2].empty_view = true;
    let h = Harness::new(specs).await;
    let c = h.coordinator(2);
    let p = h.pay("only two see me", 3);
    let s = h.statement(&p).await;
    let signed = c.sign(&s).await.unwrap();
    let g3 = h.keys[2].public_hex();
    let a = signed
        .approvals
        .iter()
        .find(|a| a.guardian_key == g3)
        .unwrap();
    assert_eq!(a.decision, ApprovalDecision::Refused);
    assert_eq!(a.reason_code.as_deref(), Some("payment_unknown"));
    assert!(a.signature.is_some(), "refusals are signed too");
    let view = c.view();
    assert!(view.guardians[2].last_seen.is_some());
    assert_eq!(
        view.guardians[2].recent[0].reason_code.as_deref(),
        Some("payment_unknown")
    );
}

/// `GET /v1/guardians` is public: it names each guardian, its key and liveness, and
/// never where the guardian listens (no URL, host or port of a signing endpoint).
#[tokio::test]
async fn the_public_board_publishes_no_guardian_address() {
    let h = Harness::new(three()).await;
    let c = Arc::new(h.coordinator(2));
    let p = h.pay("board", 3);
    let s = h.statement(&p).await;
    c.sign(&s).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = ubtc_guardian::coordinator::guardians_router(c.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let body = reqwest::get(format!("http://{addr}/v1/guardians"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let view: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["guardians"].as_array().unwrap().len(), 3, "{body}");
    assert_eq!(view["guardians"][0]["public_key"], h.keys[0].public_hex());
    // The round completes at M, so the guardian that answered last may have been
    // dropped; at least M of them were seen.
    let seen = view["guardians"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["last_seen"].is_string() || g["last_seen"].is_number())
        .count();
    assert!(seen >= 2, "{body}");
    for url in &h.urls {
        let hostport = url.trim_start_matches("http://").trim_end_matches('/');
        assert!(!body.contains(hostport), "{hostport} published: {body}");
        let port = hostport.rsplit(':').next().unwrap();
        assert!(
            !body.contains(&format!(":{port}")),
            "port {port} published: {body}"
        );
    }
    for needle in ["http://", "https://", "127.0.0.1", "localhost", "\"url\""] {
        assert!(!body.contains(needle), "{needle} in {body}");
    }
}

#[tokio::test]
async fn unconfirmed_payment_refused_then_signed() {
    let h = Harness::new(three()).await;
    let c = h.coordinator(2);
    let p = h.pay("too early", 1);
    let s = h.statement(&p).await;
    match c.sign(&s).await {
        Err(SignFailure::Retry(r)) => {
            assert_eq!(r.code, "quorum_not_reached");
            assert!(r.detail.contains("payment_unconfirmed"), "{}", r.detail);
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    h.dev.mine(2);
    assert!(c.sign(&s).await.is_ok());
}

#[tokio::test]
async fn mismatching_statement_and_version_refused() {
    let h = Harness::new(three()).await;
    let c = h.coordinator(2);
    let p = h.pay("the real message", 3);
    let mut s = h.statement(&p).await;
    s.message = ubtc_core::StatementMessage::parse(b"a forged message").unwrap();
    match c.sign(&s).await {
        Err(SignFailure::Retry(r)) => {
            assert_eq!(
                r.detail.matches("statement_mismatch").count(),
                3,
                "{}",
                r.detail
            )
        }
        other => panic!("expected a retry, got {other:?}"),
    }
    let mut s = h.statement(&p).await;
    s.version = 2;
    let (a, _) = send(
        &h.urls[0],
        &c.seal_request(&request(&c, &s, 30_000)).unwrap(),
        &h.keys[0],
    )
    .await;
    assert_eq!(refusal(&a), Some(RefusalCode::StatementVersion));
}

#[tokio::test]
async fn never_two_statements_for_one_payment_and_same_answer_again() {
    let h = Harness::new(three()).await;
    let c = h.coordinator(2);
    let p = h.pay("once only", 3);
    let s1 = h.statement(&p).await;
    let (a1, _) = send(
        &h.urls[0],
        &c.seal_request(&request(&c, &s1, 30_000)).unwrap(),
        &h.keys[0],
    )
    .await;
    let Outcome::Approved { partial: p1, .. } = &a1.outcome else {
        panic!("{a1:?}")
    };
    // A retry: fresh request id, same statement → the recorded signature.
    let (a2, _) = send(
        &h.urls[0],
        &c.seal_request(&request(&c, &s1, 30_000)).unwrap(),
        &h.keys[0],
    )
    .await;
    let Outcome::Approved { partial: p2, .. } = &a2.outcome else {
        panic!("{a2:?}")
    };
    assert_eq!(p1, p2);
    // Another statement (new request id in the text) for the same payment.
    let s2 = h.statement(&p).await;
    let (a3, _) = send(
        &h.urls[0],
        &c.seal_request(&request(&c, &s2, 30_000)).unwrap(),
        &h.keys[0],
    )
    .await;
    assert_eq!(refusal(&a3), Some(RefusalCode::ConflictingStatement));
}

#[tokio::test]
async fn replayed_expired_and_badly_signed_requests_refused() {
    let h = Harness::new(three()).await;
    let c = h.coordinator(2);
    let p = h.pay("replay me", 3);
    let s = h.statement(&p).await;
    let req = request(&c, &s, 30_000);
    let env = c.seal_request(&req).unwrap();
    let (first, first_env) = send(&h.urls[0], &env, &h.keys[0]).await;
    assert!(refusal(&first).is_none());
    // The same request again: the same answer, byte for byte.
    let (_, again_env) = send(&h.urls[0], &env, &h.keys[0]).await;
    assert_eq!(first_env.body, again_env.body);
    // The same request id with another body: a replay.
    let mut other = req.clone();
    other.expires_at = other.expires_at.plus_millis(1);
    let (replayed, _) = send(&h.urls[0], &c.seal_request(&other).unwrap(), &h.keys[0]).await;
    assert_eq!(refusal(&replayed), Some(RefusalCode::RequestReplayed));
    // Expired.
    let (expired, _) = send(
        &h.urls[1],
        &c.seal_request(&request(&c, &s, -1)).unwrap(),
        &h.keys[1],
    )
    .await;
    assert_eq!(refusal(&expired), Some(RefusalCode::RequestExpired));
    // Signed by a key the guardian does not accept.
    let stranger = GuardianKey::generate();
    let forged =
        protocol::seal(protocol::REQUEST_TAG, &request(&c, &s, 30_000), &stranger).unwrap();
    let (bad, _) = send(&h.urls[1], &forged, &h.keys[1]).await;
    assert_eq!(refusal(&bad), Some(RefusalCode::BadRequestSignature));
}

#[tokio::test]
async fn rate_limited_per_chain() {
    let specs = (0..3)
        .map(|_| GuardianSpec {
            rate: 1,
            ..GuardianSpec::default()
        })
        .collect();
    let h = Harness::new(specs).await;
    let c = h.coordinator(2);
    let s1 = h.statement(&h.pay("first", 3)).await;
    let s2 = h.statement(&h.pay("second", 3)).await;
    assert!(c.sign(&s1).await.is_ok());
    match c.sign(&s2).await {
        Err(SignFailure::Retry(r)) => assert!(r.detail.contains("rate_limited"), "{}", r.detail),
        other => panic!("expected a retry, got {other:?}"),
    }
}

/// A proxy in front of a guardian that waits `delay_ms`, then flips one bit of the
/// partial signature of item `item` of every batch answer and re-signs the answer
/// with the guardian's own identity key (the envelope verifies, that partial must not).
#[derive(Clone)]
struct Tamperer {
    upstream: String,
    key: GuardianKey,
    item: usize,
    delay_ms: u64,
}

async fn tamper_item(State(p): State<Arc<Tamperer>>, Json(env): Json<Envelope>) -> Json<Envelope> {
    let sealed = send_batch(&p.upstream, &env).await;
    tokio::time::sleep(std::time::Duration::from_millis(p.delay_ms)).await;
    let mut batch = open_batch(&sealed, &p.key);
    if let Outcome::Approved { partial, .. } = &mut batch.answers[p.item].outcome {
        let sig = &mut partial.signatures[0];
        let i = sig.len() - 10;
        sig[i] ^= 1;
    }
    Json(protocol::seal(protocol::BATCH_ANSWER_TAG, &batch, &p.key).unwrap())
}

async fn tamper_proxy(h: &Harness, guardian: usize, item: usize, delay_ms: u64) -> String {
    let proxy = Arc::new(Tamperer {
        upstream: h.urls[guardian].clone(),
        key: h.keys[guardian].clone(),
        item,
        delay_ms,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/v1/sign_batch", post(tamper_item))
        .with_state(proxy);
    tokio::spawn(ubtc_guardian::server::serve(
        listener,
        router,
        h.cancel.clone(),
    ));
    url
}

/// Completion at M, in one round of two statements A and B: g2 answers both, g3
/// answers with a bad partial for B, then g1 (delayed) answers with a bad partial for
/// A. A already has g2 and g3 when g1's answer comes in, so g1's partial for A is not
/// verified and is recorded as `late`, never counted; B still needs g1, so its partial
/// is verified and counts. Both bundles verify.
#[tokio::test]
async fn completes_at_m_late_partials_are_not_verified_and_never_count() {
    let h = Harness::new(three()).await;
    let mut endpoints = h.endpoints();
    endpoints[0].url = tamper_proxy(&h, 0, 0, 400).await;
    endpoints[2].url = tamper_proxy(&h, 2, 1, 0).await;
    let c = h.coordinator_with(endpoints, 2);
    let a = h.statement(&h.pay("statement A", 3)).await;
    let b = h.statement(&h.pay("statement B", 3)).await;
    let mut results = c.sign_batch(&[a.clone(), b.clone()]).await.into_iter();
    let signed_a = results.next().unwrap().unwrap();
    let signed_b = results.next().unwrap().unwrap();
    let decisions = |s: &SignedStatement| -> Vec<(ApprovalDecision, Option<String>)> {
        s.approvals
            .iter()
            .map(|a| (a.decision, a.reason_code.clone()))
            .collect()
    };
    assert_eq!(
        decisions(&signed_a),
        vec![
            (ApprovalDecision::Refused, Some("late".to_owned())),
            (ApprovalDecision::Approved, None),
            (ApprovalDecision::Approved, None),
        ]
    );
    assert!(
        signed_a.approvals[0].signature.is_some(),
        "the late answer's batch signature verified"
    );
    assert_eq!(
        decisions(&signed_b),
        vec![
            (ApprovalDecision::Approved, None),
            (ApprovalDecision::Approved, None),
            (ApprovalDecision::Refused, Some("bad_partial".to_owned())),
        ]
    );
    assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle(&a, signed_a)).is_valid());
    assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle(&b, signed_b)).is_valid());
}

/// A guardian that flips one bit of its partial signature and re-signs the answer with
/// its own identity key: the envelope verifies, the partial must not.
#[tokio::test]
async fn tampered_partial_rejected_by_coordinator() {
    let h = Harness::new(three()).await;
    #[derive(Clone)]
    struct Proxy {
        upstream: String,
        key: GuardianKey,
    }
    async fn tamper(State(p): State<Arc<Proxy>>, Json(env): Json<Envelope>) -> Json<Envelope> {
        let sealed = send_batch(&p.upstream, &env).await;
        let mut batch = open_batch(&sealed, &p.key);
        for body in &mut batch.answers {
            if let Outcome::Approved { partial, .. } = &mut body.outcome {
                let sig = &mut partial.signatures[0];
                let i = sig.len() - 10;
                sig[i] ^= 1;
            }
        }
        Json(protocol::seal(protocol::BATCH_ANSWER_TAG, &batch, &p.key).unwrap())
    }
    let proxy = Arc::new(Proxy {
        upstream: h.urls[0].clone(),
        key: h.keys[0].clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/v1/sign_batch", post(tamper))
        .with_state(proxy);
    tokio::spawn(ubtc_guardian::server::serve(
        listener,
        router,
        h.cancel.clone(),
    ));
    let mut endpoints = h.endpoints();
    endpoints[0].url = proxy_url;
    let c = h.coordinator_with(endpoints.clone(), 2);
    let s = h.statement(&h.pay("tamper", 3)).await;
    let signed = c.sign(&s).await.unwrap();
    // The round completes at M: g1's answer is verified and rejected if it came in
    // while it was needed, or recorded unverified and uncounted if g2 and g3 were
    // faster; it never counts.
    let g1 = &signed.approvals[0];
    assert_eq!(g1.decision, ApprovalDecision::Refused);
    assert!(
        matches!(
            g1.reason_code.as_deref(),
            Some("bad_partial" | "late" | "no_answer_needed")
        ),
        "{g1:?}"
    );
    assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle(&s, signed)).is_valid());
    // With g3 gone, g1's partial is needed, so it is verified, and the tampered
    // partial cannot make up the quorum.
    endpoints[2].url = "http://127.0.0.1:9".into();
    let c = h.coordinator_with(endpoints, 2);
    let s = h.statement(&h.pay("tamper again", 3)).await;
    match c.sign(&s).await {
        Err(SignFailure::Retry(r)) => {
            assert!(r.detail.contains("1 of 2"), "{}", r.detail);
            assert!(r.detail.contains("g1: bad_partial"), "{}", r.detail);
        }
        other => panic!("expected a retry, got {other:?}"),
    }
}

/// One batch, one coordinator signature: every item is checked, recorded and answered
/// on its own, with its own refusal reason; the approvals are on disk before the
/// answer; the same batch again gets the same answers; a batch id reused for another
/// body, an expired batch and a forged batch are refused item by item.
#[tokio::test]
async fn batch_items_are_decided_and_answered_individually() {
    let h = Harness::new(three()).await;
    let c = h.coordinator(2);
    let good = h.statement(&h.pay("batch good", 3)).await;
    let twice = h.pay("batch twice", 3);
    let first = h.statement(&twice).await;
    let second = h.statement(&twice).await;
    let mut forged = h.statement(&h.pay("batch forged", 3)).await;
    forged.message = ubtc_core::StatementMessage::parse(b"not what was paid").unwrap();
    let unconfirmed = h.statement(&h.pay("batch young", 1)).await;
    let items = vec![
        request(&c, &good, 30_000),
        request(&c, &first, 30_000),
        request(&c, &second, 30_000),
        request(&c, &forged, 30_000),
        request(&c, &unconfirmed, 30_000),
        request(&c, &good, -1),
    ];
    let batch = batch_of(items.clone(), 30_000);
    let env = c.seal_batch(&batch).unwrap();
    let answer = send_batch(&h.urls[0], &env).await;
    assert_eq!(open_batch(&answer, &h.keys[0]).batch_id, batch.batch_id);
    let got = bodies(&answer, &h.keys[0]);
    let codes: Vec<Option<RefusalCode>> = got.iter().map(refusal).collect();
    assert_eq!(
        codes,
        vec![
            None,
            None,
            Some(RefusalCode::ConflictingStatement),
            Some(RefusalCode::StatementMismatch),
            Some(RefusalCode::PaymentUnconfirmed),
            Some(RefusalCode::RequestExpired),
        ]
    );
    for (a, item) in got.iter().zip(&items) {
        assert_eq!(a.request_id, item.request_id);
        assert_eq!(a.statement_digest, item.statement.digest_hex());
    }
    // The two approvals were recorded (and flushed) before the answer came back.
    let record = std::fs::read_to_string(h.dir.path().join("g0.jsonl")).unwrap();
    assert_eq!(record.lines().count(), 2);
    let signing =
        ubtc_bitcoin::multisig::SigningRequest::prepare(items[0].signing.clone()).unwrap();
    let Outcome::Approved { partial, .. } = got[0].outcome.clone() else {
        panic!("{:?}", got[0])
    };
    signing.verify_partial(partial).unwrap();

    // The same batch again: the same answers, byte for byte, nothing new recorded.
    let again = send_batch(&h.urls[0], &env).await;
    assert_eq!(again.body, answer.body);
    assert_eq!(again.signature, answer.signature);
    let record = std::fs::read_to_string(h.dir.path().join("g0.jsonl")).unwrap();
    assert_eq!(record.lines().count(), 2);
    // One of its requests alone, as /v1/sign: the same answer too.
    let (alone, _) = send(&h.urls[0], &c.seal_request(&items[0]).unwrap(), &h.keys[0]).await;
    assert_eq!(
        serde_json::to_string(&alone).unwrap(),
        serde_json::to_string(&got[0]).unwrap()
    );

    // The batch id again with another body: every item is a replay.
    let mut other = batch.clone();
    other.expires_at = other.expires_at.plus_millis(1);
    let replay = send_batch(&h.urls[0], &c.seal_batch(&other).unwrap()).await;
    assert!(bodies(&replay, &h.keys[0])
        .iter()
        .all(|a| refusal(a) == Some(RefusalCode::RequestReplayed)));
    // A known request id inside a new batch with another body: that item is a replay.
    let mut reused = items[0].clone();
    reused.expires_at = reused.expires_at.plus_millis(1);
    let fresh = request(&c, &h.statement(&h.pay("batch fresh", 3)).await, 30_000);
    let mixed = send_batch(
        &h.urls[0],
        &c.seal_batch(&batch_of(vec![reused, fresh], 30_000))
            .unwrap(),
    )
    .await;
    let mixed = bodies(&mixed, &h.keys[0]);
    assert_eq!(refusal(&mixed[0]), Some(RefusalCode::RequestReplayed));
    assert_eq!(refusal(&mixed[1]), None);

    // An expired batch, and a batch signed by a stranger: refused item by item.
    let s = h.statement(&h.pay("batch late", 3)).await;
    let expired = send_batch(
        &h.urls[1],
        &c.seal_batch(&batch_of(vec![request(&c, &s, 30_000)], -1))
            .unwrap(),
    )
    .await;
    assert_eq!(
        refusal(&bodies(&expired, &h.keys[1])[0]),
        Some(RefusalCode::RequestExpired)
    );
    let stranger = GuardianKey::generate();
    let forged_batch = protocol::seal(
        protocol::REQUEST_TAG,
        &batch_of(vec![request(&c, &s, 30_000)], 30_000),
        &stranger,
    )
    .unwrap();
    let bad = send_batch(&h.urls[1], &forged_batch).await;
    assert_eq!(
        refusal(&bodies(&bad, &h.keys[1])[0]),
        Some(RefusalCode::BadRequestSignature)
    );
    let record = std::fs::read_to_string(h.dir.path().join("g1.jsonl")).unwrap_or_default();
    assert_eq!(
        record.lines().count(),
        0,
        "nothing recorded for refused batches"
    );
    // An empty batch cannot be answered at all.
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sign_batch", h.urls[1]))
        .json(&c.seal_batch(&batch_of(vec![], 30_000)).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::BAD_REQUEST);
}

/// Statements signed concurrently (as the worker signs a claimed batch) share batch
/// rounds, and every one of them gets its own valid signature and approvals.
#[tokio::test]
async fn concurrent_statements_share_rounds_and_each_verifies() {
    let h = Harness::new(three()).await;
    let c = h.coordinator(2);
    let mut statements = Vec::new();
    for i in 0..12 {
        statements.push(h.statement(&h.pay(&format!("together {i}"), 3)).await);
    }
    let mut forged = h.statement(&h.pay("together forged", 3)).await;
    forged.message = ubtc_core::StatementMessage::parse(b"forged").unwrap();
    statements.push(forged);
    let results = futures::future::join_all(statements.iter().map(|s| c.sign(s))).await;
    for (s, r) in statements.iter().zip(results).take(12) {
        let signed = r.unwrap();
        assert_eq!(signed.approvals.len(), 3);
        assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle(s, signed)).is_valid());
    }
    match c.sign(&statements[12]).await {
        Err(SignFailure::Retry(r)) => assert!(r.detail.contains("statement_mismatch")),
        other => panic!("expected a retry, got {other:?}"),
    }
    // sign_batch directly: results in statement order.
    let more = vec![
        h.statement(&h.pay("batch a", 3)).await,
        h.statement(&h.pay("batch b", 1)).await,
    ];
    let results = c.sign_batch(&more).await;
    assert!(results[0].is_ok());
    match &results[1] {
        Err(SignFailure::Retry(r)) => assert!(r.detail.contains("payment_unconfirmed")),
        other => panic!("expected a retry, got {other:?}"),
    }
}

/// More statements than one batch holds are split into rounds; every one is signed.
#[tokio::test]
async fn more_than_a_batch_is_split_into_rounds() {
    let h = Harness::new(three()).await;
    let c = h.coordinator(2);
    let n = ubtc_guardian::protocol::MAX_BATCH_ITEMS + 4;
    let mut refs = Vec::new();
    for i in 0..n {
        refs.push(h.pay(&format!("many {i}"), 0));
    }
    h.dev.mine(3);
    let mut statements = Vec::new();
    for p in &refs {
        statements.push(h.statement(p).await);
    }
    let results = c.sign_batch(&statements).await;
    assert_eq!(results.len(), n);
    for (s, r) in statements.iter().zip(results) {
        let signed = r.unwrap();
        assert_eq!(signed.approvals[0].statement_digest, s.digest_hex());
    }
    let b = bundle(
        &statements[n - 1],
        c.sign(&statements[n - 1]).await.unwrap(),
    );
    assert!(ubtc_bitcoin::bundle::verify_bundle(&b).is_valid());
}

/// A request for the payment and statement of `statement`, signing `signing`.
fn request_for(statement: &Statement, signing: SigningRequest) -> SignRequest {
    let now = Timestamp::now();
    SignRequest {
        request_id: uuid::Uuid::new_v4(),
        issued_at: now,
        expires_at: now.plus_millis(30_000),
        payment: statement.payment.clone(),
        statement: statement.clone(),
        signing,
    }
}

fn keys_of(h: &Harness) -> Vec<bitcoin::CompressedPublicKey> {
    h.keys
        .iter()
        .map(|k| bitcoin::CompressedPublicKey(k.public()))
        .collect()
}

/// The one-guardian-plus-coordinator forgery: with the coordinator's key, ask an honest
/// guardian to sign for a reserve that holds its key but is not the reserve (threshold
/// 1 with an attacker's key added; the same keys at another threshold; other keys), in
/// a form it does not sign statements in (`full` with a lock time, a proof of funds),
/// or a proof of funds over an invented UTXO. Each is refused with its code and nothing
/// is recorded; the honest request still signs.
#[tokio::test]
async fn one_guardian_and_the_coordinator_key_cannot_forge() {
    let mut specs = three();
    specs[1].forms = vec![Form::Simple, Form::ProofOfFunds];
    let h = Harness::new(specs).await;
    let c = h.coordinator(2);
    let s = h.statement(&h.pay("forge me", 3)).await;
    let text = s.text();
    let attacker = bitcoin::CompressedPublicKey(GuardianKey::generate().public());
    let mut with_attacker = keys_of(&h);
    with_attacker.push(attacker);
    let simple = |policy: &SortedMulti| {
        SigningRequest::new(
            policy,
            Wrapping::Wsh,
            bitcoin::Network::Regtest,
            text.as_bytes(),
            Form::Simple,
        )
        .unwrap()
    };
    let ask = |i: usize, signing: SigningRequest| {
        let env = c.seal_request(&request_for(&s, signing)).unwrap();
        let url = h.urls[i].clone();
        let key = h.keys[i].clone();
        async move { send(&url, &env, &key).await.0 }
    };
    let expect = |a: &SignAnswer, code: RefusalCode| {
        assert_eq!(refusal(a), Some(code), "{a:?}");
    };

    // Threshold 1 over the three guardian keys and the attacker's.
    let one_of_four = SortedMulti::new(1, with_attacker).unwrap();
    expect(
        &ask(0, simple(&one_of_four)).await,
        RefusalCode::UnknownReserve,
    );
    // The guardians' own keys at another threshold.
    for m in [1, 3] {
        let other = SortedMulti::new(m, keys_of(&h)).unwrap();
        expect(&ask(0, simple(&other)).await, RefusalCode::UnknownReserve);
    }
    // A reserve of this guardian's key alone, and one of other keys.
    let alone = SortedMulti::new(1, vec![keys_of(&h)[0]]).unwrap();
    expect(&ask(0, simple(&alone)).await, RefusalCode::UnknownReserve);
    let strangers = SortedMulti::new(
        2,
        (0..3)
            .map(|_| bitcoin::CompressedPublicKey(GuardianKey::generate().public()))
            .collect(),
    )
    .unwrap();
    expect(
        &ask(0, simple(&strangers)).await,
        RefusalCode::UnknownReserve,
    );

    // The real reserve, in a form statements are not signed in.
    let (reserve, wrapping) = SortedMulti::parse_descriptor(&h.reserve).unwrap();
    let full = |params: ToSignParams| {
        SigningRequest::with_params(
            &reserve,
            wrapping,
            bitcoin::Network::Regtest,
            text.as_bytes(),
            Form::Full,
            params,
            &[],
        )
        .unwrap()
    };
    let locked = ToSignParams {
        version: 2,
        lock_time: 900_000,
        sequence: 0xffff_fffe,
    };
    expect(&ask(0, full(locked)).await, RefusalCode::FormNotAllowed);
    expect(
        &ask(0, full(ToSignParams::default())).await,
        RefusalCode::FormNotAllowed,
    );
    let address = reserve
        .address(bitcoin::Network::Regtest, wrapping)
        .to_string();
    let spk = reserve.script_pubkey(wrapping).to_hex_string();
    let invented = ubtc_core::bundle::Utxo {
        txid: "ab".repeat(32),
        vout: 0,
        amount_sats: 2_000_000_000_000_000,
        script_pubkey_hex: spk.clone(),
    };
    let pof = |utxos: &[ubtc_core::bundle::Utxo]| {
        SigningRequest::proof_of_funds(
            &reserve,
            wrapping,
            bitcoin::Network::Regtest,
            text.as_bytes(),
            utxos,
        )
        .unwrap()
    };
    // g0 signs statements in the simple form only: a proof of funds is refused as such.
    expect(
        &ask(0, pof(std::slice::from_ref(&invented))).await,
        RefusalCode::FormNotAllowed,
    );
    // g1 signs proofs of funds, over UTXOs its own Bitcoin view has: not this one.
    expect(
        &ask(1, pof(std::slice::from_ref(&invented))).await,
        RefusalCode::UtxoSetMismatch,
    );
    // A real UTXO stated with a larger amount, and a real one with the lock time set.
    let real = h.bitcoin[1].fund(&address, &spk, 150_000);
    let mut inflated = real.clone();
    inflated.amount_sats = 150_000_000;
    expect(
        &ask(1, pof(std::slice::from_ref(&inflated))).await,
        RefusalCode::UtxoSetMismatch,
    );
    // One real UTXO and one invented: refused whole.
    expect(
        &ask(1, pof(&[real.clone(), invented.clone()])).await,
        RefusalCode::UtxoSetMismatch,
    );
    // The real UTXO, but with a lock time: never signed, even where proofs of funds are.
    let locked_pof = SigningRequest::with_params(
        &reserve,
        wrapping,
        bitcoin::Network::Regtest,
        text.as_bytes(),
        Form::ProofOfFunds,
        locked,
        std::slice::from_ref(&real),
    )
    .unwrap();
    expect(&ask(1, locked_pof).await, RefusalCode::FormNotAllowed);
    // Nothing of the above was recorded.
    for i in 0..3 {
        let record =
            std::fs::read_to_string(h.dir.path().join(format!("g{i}.jsonl"))).unwrap_or_default();
        assert_eq!(record.lines().count(), 0, "g{i} recorded a refused request");
    }
    // The proof of funds over what g1 sees is signed, and the partial verifies.
    let honest = pof(std::slice::from_ref(&real));
    let signed = ask(1, honest.clone()).await;
    let Outcome::Approved { partial, .. } = signed.outcome.clone() else {
        panic!("{signed:?}")
    };
    SigningRequest::prepare(honest)
        .unwrap()
        .verify_partial(partial)
        .unwrap();
    // And the honest simple request for another payment signs on g0.
    let other = h.statement(&h.pay("honest", 3)).await;
    let env = c.seal_request(&request(&c, &other, 30_000)).unwrap();
    assert_eq!(refusal(&send(&h.urls[0], &env, &h.keys[0]).await.0), None);
}

/// "One statement per payment" keys on the payment: the same statement under another
/// reserve this guardian also signs for, in another form, or another statement, is
/// `conflicting_statement`; the identical request (fresh request id) gets the recorded
/// answer, before and after a restart of the guardian's record.
#[tokio::test]
async fn one_approval_per_payment_whatever_the_descriptor() {
    let mut specs = three();
    specs[0].also_threshold = Some(3);
    specs[0].forms = vec![Form::Simple, Form::ProofOfFunds];
    let h = Harness::new(specs).await;
    let c = h.coordinator(2);
    let p = h.pay("one payment, one statement", 3);
    let s1 = h.statement(&p).await;
    let text = s1.text();
    let (a1, _) = send(
        &h.urls[0],
        &c.seal_request(&request(&c, &s1, 30_000)).unwrap(),
        &h.keys[0],
    )
    .await;
    let Outcome::Approved {
        partial: p1,
        recorded_at: r1,
    } = a1.outcome.clone()
    else {
        panic!("{a1:?}")
    };
    // The same statement under the 3-of-3 reserve, which g0 names too.
    let all = SortedMulti::new(3, keys_of(&h)).unwrap();
    let under_other = SigningRequest::new(
        &all,
        Wrapping::Wsh,
        bitcoin::Network::Regtest,
        text.as_bytes(),
        Form::Simple,
    )
    .unwrap();
    let (a2, _) = send(
        &h.urls[0],
        &c.seal_request(&request_for(&s1, under_other.clone()))
            .unwrap(),
        &h.keys[0],
    )
    .await;
    assert_eq!(
        refusal(&a2),
        Some(RefusalCode::ConflictingStatement),
        "{a2:?}"
    );
    // A 3-of-3 statement for a payment g0 has not approved yet is signed: the reserve
    // itself is accepted, only the second approval for one payment is not.
    let fresh = h.statement(&h.pay("under the 3-of-3", 3)).await;
    let fresh_signing = SigningRequest::new(
        &all,
        Wrapping::Wsh,
        bitcoin::Network::Regtest,
        fresh.text().as_bytes(),
        Form::Simple,
    )
    .unwrap();
    let (a, _) = send(
        &h.urls[0],
        &c.seal_request(&request_for(&fresh, fresh_signing)).unwrap(),
        &h.keys[0],
    )
    .await;
    assert_eq!(refusal(&a), None, "{a:?}");
    // The same statement and reserve as a proof of funds over an output g0 sees: a
    // different `to_sign`, so a second approval.
    let (reserve, wrapping) = SortedMulti::parse_descriptor(&h.reserve).unwrap();
    let address = reserve
        .address(bitcoin::Network::Regtest, wrapping)
        .to_string();
    let utxo = h.bitcoin[0].fund(
        &address,
        &reserve.script_pubkey(wrapping).to_hex_string(),
        5_000,
    );
    let pof = SigningRequest::proof_of_funds(
        &reserve,
        wrapping,
        bitcoin::Network::Regtest,
        text.as_bytes(),
        &[utxo],
    )
    .unwrap();
    let (a3, _) = send(
        &h.urls[0],
        &c.seal_request(&request_for(&s1, pof)).unwrap(),
        &h.keys[0],
    )
    .await;
    assert_eq!(
        refusal(&a3),
        Some(RefusalCode::ConflictingStatement),
        "{a3:?}"
    );
    // Another statement for the payment.
    let s2 = h.statement(&p).await;
    let (a4, _) = send(
        &h.urls[0],
        &c.seal_request(&request(&c, &s2, 30_000)).unwrap(),
        &h.keys[0],
    )
    .await;
    assert_eq!(
        refusal(&a4),
        Some(RefusalCode::ConflictingStatement),
        "{a4:?}"
    );
    // The identical request again: the recorded approval.
    let (a5, _) = send(
        &h.urls[0],
        &c.seal_request(&request(&c, &s1, 30_000)).unwrap(),
        &h.keys[0],
    )
    .await;
    match a5.outcome {
        Outcome::Approved {
            partial,
            recorded_at,
        } => {
            assert_eq!(partial, p1);
            assert_eq!(recorded_at, r1);
        }
        other => panic!("{other:?}"),
    }
    // Two approvals recorded (s1 under 2-of-3, the fresh one under 3-of-3); a record
    // reopened, as at a restart, still holds one per payment.
    let log = ubtc_guardian::record::ApprovalLog::open(&h.dir.path().join("g0.jsonl")).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log.for_payment(&p).len(), 1);
    assert_eq!(log.for_payment(&p)[0].descriptor, h.reserve);
}

/// A chain view that answers a batch read with fewer answers than payments asked: no
/// item of that chain is approved (each is refused `chain_unavailable`), where zipping
/// the answers with the requests used to leave the unanswered item unchecked, and
/// signed.
#[tokio::test]
async fn a_short_answer_from_the_chain_view_approves_nothing() {
    let mut specs = three();
    specs[0].short_answers = true;
    let h = Harness::new(specs).await;
    let c = h.coordinator(2);
    let mut items = Vec::new();
    let mut statements = Vec::new();
    for i in 0..3 {
        let s = h.statement(&h.pay(&format!("short answer {i}"), 3)).await;
        items.push(request(&c, &s, 30_000));
        statements.push(s);
    }
    // An item whose payment does not exist at all: today's zip left it unread.
    let mut ghost = h.statement(&h.pay("ghost", 3)).await;
    ghost.payment.tx_hash =
        ubtc_core::payment::TxHash::parse(&format!("0x{}", "ee".repeat(32))).unwrap();
    items.push(request(&c, &ghost, 30_000));
    let batch = batch_of(items, 30_000);
    let answers = bodies(
        &send_batch(&h.urls[0], &c.seal_batch(&batch).unwrap()).await,
        &h.keys[0],
    );
    assert_eq!(answers.len(), 4);
    for a in &answers {
        assert_eq!(refusal(a), Some(RefusalCode::ChainUnavailable), "{a:?}");
        let Outcome::Refused { detail, .. } = &a.outcome else {
            unreachable!()
        };
        assert!(detail.contains("3 of 4"), "{detail}");
    }
    let record = std::fs::read_to_string(h.dir.path().join("g0.jsonl")).unwrap_or_default();
    assert_eq!(record.lines().count(), 0, "nothing approved");
    // The same guardian signs a batch of one (its view answers that one fully), and
    // the guardians with a whole view sign the batch.
    // (A fresh request id: the refused one gets its refusal again while it is valid.)
    let one = batch_of(vec![request(&c, &statements[0], 30_000)], 30_000);
    let answers = bodies(
        &send_batch(&h.urls[0], &c.seal_batch(&one).unwrap()).await,
        &h.keys[0],
    );
    assert_eq!(refusal(&answers[0]), None, "{:?}", answers[0]);
    let answers = bodies(
        &send_batch(&h.urls[1], &c.seal_batch(&batch).unwrap()).await,
        &h.keys[1],
    );
    let codes: Vec<Option<RefusalCode>> = answers.iter().map(refusal).collect();
    assert_eq!(
        codes,
        vec![None, None, None, Some(RefusalCode::PaymentUnknown)]
    );
}
