//! Guardian checks and coordinator behaviour, with in-process guardians on loopback
//! ports (the real-process tests are in crates/ubtc/tests/guardian_processes.rs).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use common::{GuardianSpec, Harness};
use ubtc_core::bundle::{
    ApprovalDecision, BitcoinNetwork, PaymentInfo, ProofBundle, BUNDLE_FORMAT, BUNDLE_VERSION,
};
use ubtc_core::{Statement, Timestamp};
use ubtc_guardian::protocol::{
    self, Envelope, Outcome, RefusalCode, SignAnswer, SignRequest, ANSWER_TAG,
};
use ubtc_guardian::{Coordinator, GuardianKey};
use ubtc_pipeline::{ReserveSigner, SignFailure, SignedStatement};

fn bundle(statement: &Statement, signed: SignedStatement) -> ProofBundle {
    ProofBundle {
        format: BUNDLE_FORMAT.into(),
        version: BUNDLE_VERSION,
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
    assert_eq!(refusal(&a3), Some(RefusalCode::AlreadySignedOther));
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
            empty_view: false,
            rate: 1,
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
        let (mut answer, _) = send(&p.upstream, &env, &p.key).await;
        if let Outcome::Approved { partial, .. } = &mut answer.outcome {
            let sig = &mut partial.signatures[0];
            let i = sig.len() - 10;
            sig[i] ^= 1;
        }
        Json(protocol::seal(ANSWER_TAG, &answer, &p.key).unwrap())
    }
    let proxy = Arc::new(Proxy {
        upstream: h.urls[0].clone(),
        key: h.keys[0].clone(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_url = format!("http://{}", listener.local_addr().unwrap());
    let router = Router::new()
        .route("/v1/sign", post(tamper))
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
    let g1 = &signed.approvals[0];
    assert_eq!(g1.decision, ApprovalDecision::Refused);
    assert_eq!(g1.reason_code.as_deref(), Some("bad_partial"));
    assert!(ubtc_bitcoin::bundle::verify_bundle(&bundle(&s, signed)).is_valid());
    // With g3 gone, the tampered partial cannot make up the quorum.
    endpoints[2].url = "http://127.0.0.1:9".into();
    let c = h.coordinator_with(endpoints, 2);
    let s = h.statement(&h.pay("tamper again", 3)).await;
    assert!(matches!(c.sign(&s).await, Err(SignFailure::Retry(_))));
}
