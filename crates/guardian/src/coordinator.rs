//! The coordinator: a [`ReserveSigner`] that asks M-of-N guardians over HTTP.
//!
//! Every guardian is asked at once, each with a fresh request id and the same
//! statement. An answer counts only after its envelope verifies under that guardian's
//! registered key, it names the request and statement that were sent, and its partial
//! signature passes [`verify_partial`] for that key. M such answers complete the
//! signature with [`combine`] at once (partials that come in after that are not
//! verified and never count); fewer leave the job to the pipeline's retry.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use bitcoin::secp256k1::PublicKey;
use bitcoin::{CompressedPublicKey, Network};
use futures::stream::{FuturesUnordered, StreamExt};
use serde::Serialize;
use ubtc_bitcoin::multisig::{
    Form, PreparedRequest, SigningRequest, SortedMulti, VerifiedPartial, Wrapping,
};
use ubtc_core::bundle::{ApprovalDecision, GuardianApproval, ReserveSignature};
use ubtc_core::validation::Reason;
use ubtc_core::{Statement, Timestamp};
use ubtc_pipeline::{ReserveSigner, SignFailure, SignedStatement};
use uuid::Uuid;

use crate::keystore::{self, GuardianKey};
use crate::protocol::{
    self, BatchAnswer, Envelope, Outcome, SignAnswer, SignBatch, SignRequest, BATCH_ANSWER_TAG,
    MAX_BATCH_ITEMS, REQUEST_TAG,
};

/// Answers kept per guardian for `/v1/guardians`.
const RECENT_ANSWERS: usize = 20;
/// How long the coordinator still listens to the other guardians once every statement
/// of the round has M verified partials. Zero: the round completes at M, taking only
/// answers already in (they are judged; an approval not needed is recorded `late`,
/// unverified and uncounted); a guardian still working is dropped (`no_answer_needed`).
/// Waiting for it held the worker's batch and cost a third verification per statement
/// (≈ 35 % → ≈ 60 % of the single-key pipeline in `ubtc bench guardians`).
const AFTER_QUORUM_GRACE: Duration = Duration::ZERO;

#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error("guardian {0}: {1}")]
    Guardian(String, String),
    #[error("reserve policy: {0}")]
    Policy(#[from] ubtc_bitcoin::multisig::MultisigError),
    #[error("http client: {0}")]
    Client(String),
}

/// A guardian as the coordinator knows it: where it is and its registered key.
#[derive(Clone, Debug)]
pub struct GuardianEndpoint {
    pub name: String,
    pub url: String,
    pub key: PublicKey,
}

#[derive(Clone, Debug)]
pub struct CoordinatorSettings {
    pub network: Network,
    /// Per guardian, per request.
    pub timeout: Duration,
    /// Lifetime of a request (`expires_at - issued_at`).
    pub request_ttl: Duration,
}

/// What one guardian answered, as the coordinator judged it.
#[derive(Clone, Debug)]
enum Judged {
    Approved {
        partial: VerifiedPartial,
        signature: String,
    },
    Refused {
        code: String,
        detail: String,
        signature: Option<String>,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct RecentAnswer {
    pub at: Timestamp,
    pub payment: String,
    pub decision: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
}

/// One guardian on the public board (`GET /v1/guardians`). Its address is NOT here:
/// guardians' signing endpoints are internal, and publishing them would show an
/// attacker where to aim.
#[derive(Clone, Debug, Serialize)]
pub struct GuardianStatus {
    pub name: String,
    pub public_key: String,
    pub fingerprint: String,
    /// Last time the guardian gave an answer whose signature verified.
    pub last_seen: Option<Timestamp>,
    pub recent: VecDeque<RecentAnswer>,
}

#[derive(Clone, Debug, Serialize)]
pub struct GuardiansView {
    pub threshold: usize,
    pub reserve_address: String,
    pub descriptor: String,
    pub guardians: Vec<GuardianStatus>,
}

pub struct Coordinator {
    key: GuardianKey,
    guardians: Vec<GuardianEndpoint>,
    policy: SortedMulti,
    address: String,
    descriptor: String,
    settings: CoordinatorSettings,
    client: reqwest::Client,
    board: Mutex<Vec<GuardianStatus>>,
    queue: Mutex<Vec<Waiting>>,
}

impl std::fmt::Debug for Coordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinator")
            .field("key", &self.key)
            .field("descriptor", &self.descriptor)
            .finish()
    }
}

impl Coordinator {
    /// `key` signs requests. The reserve address is `wsh(sortedmulti(threshold, keys of
    /// guardians))`. Install a rustls crypto provider before calling (see `main`).
    pub fn new(
        key: GuardianKey,
        guardians: Vec<GuardianEndpoint>,
        threshold: usize,
        settings: CoordinatorSettings,
    ) -> Result<Self, CoordinatorError> {
        let keys = guardians
            .iter()
            .map(|g| CompressedPublicKey(g.key))
            .collect();
        let policy = SortedMulti::new(threshold, keys)?;
        let address = policy.address(settings.network, Wrapping::Wsh).to_string();
        let descriptor = policy.descriptor(Wrapping::Wsh);
        let client = reqwest::Client::builder()
            .timeout(settings.timeout)
            .build()
            .map_err(|e| CoordinatorError::Client(e.to_string()))?;
        let board = guardians
            .iter()
            .map(|g| GuardianStatus {
                name: g.name.clone(),
                public_key: g.key.to_string(),
                fingerprint: keystore::fingerprint(&g.key),
                last_seen: None,
                recent: VecDeque::new(),
            })
            .collect();
        Ok(Self {
            key,
            guardians,
            policy,
            address,
            descriptor,
            settings,
            client,
            board: Mutex::new(board),
            queue: Mutex::new(Vec::new()),
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn descriptor(&self) -> &str {
        &self.descriptor
    }

    pub fn threshold(&self) -> usize {
        self.policy.threshold()
    }

    pub fn coordinator_key(&self) -> PublicKey {
        self.key.public()
    }

    /// Liveness and recent answers of every guardian.
    pub fn view(&self) -> GuardiansView {
        let guardians = self.board.lock().unwrap_or_else(|e| e.into_inner()).clone();
        GuardiansView {
            threshold: self.threshold(),
            reserve_address: self.address.clone(),
            descriptor: self.descriptor.clone(),
            guardians,
        }
    }

    /// Records one guardian's answers to a round on the board, under one lock. Only
    /// the last [`RECENT_ANSWERS`] items can stay in `recent`, so only those are noted
    /// (the same board as noting each item in turn, without formatting every payment).
    fn note_row(&self, index: usize, statements: &[&Statement], row: &[(Judged, bool)]) {
        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        let Some(status) = board.get_mut(index) else {
            return;
        };
        let now = Timestamp::now();
        if row.iter().any(|(_, answered)| *answered) {
            status.last_seen = Some(now);
        }
        let skip = row.len().saturating_sub(RECENT_ANSWERS);
        for (statement, (judged, _)) in statements.iter().zip(row).skip(skip) {
            // Liveness is what this board is for: a guardian that approved after the
            // quorum was complete (`late`) did approve, and one dropped because the
            // quorum was already complete (`no_answer_needed`) gave no answer at all;
            // neither is a refusal.
            let (decision, reason_code) = match judged {
                Judged::Approved { .. } => ("approved".to_owned(), None),
                Judged::Refused { code, .. } if code == "no_answer_needed" => continue,
                Judged::Refused { code, .. } if code == "late" => {
                    ("approved".to_owned(), Some(code.clone()))
                }
                Judged::Refused { code, .. } => ("refused".to_owned(), Some(code.clone())),
            };
            status.recent.push_front(RecentAnswer {
                at: now,
                payment: statement.payment.to_string(),
                decision,
                reason_code,
            });
        }
        status.recent.truncate(RECENT_ANSWERS);
    }

    /// Builds the BIP-322 request every guardian is asked to sign.
    pub fn signing_request(
        &self,
        statement: &Statement,
    ) -> Result<SigningRequest, CoordinatorError> {
        Ok(SigningRequest::new(
            &self.policy,
            Wrapping::Wsh,
            self.settings.network,
            statement.text().as_bytes(),
            Form::Simple,
        )?)
    }

    /// Seals a request for one guardian (public for tests of the guardian's checks).
    pub fn seal_request(&self, request: &SignRequest) -> Result<Envelope, CoordinatorError> {
        protocol::seal(REQUEST_TAG, request, &self.key)
            .map_err(|e| CoordinatorError::Client(e.to_string()))
    }

    /// Seals a batch (public for tests of the guardian's checks).
    pub fn seal_batch(&self, batch: &SignBatch) -> Result<Envelope, CoordinatorError> {
        protocol::seal(REQUEST_TAG, batch, &self.key)
            .map_err(|e| CoordinatorError::Client(e.to_string()))
    }

    /// Sends the batch (already serialised: the same bytes go to every guardian) to
    /// one guardian and opens its answer: the batch answer's signature verifies under
    /// this guardian's registered key and it names the batch that was sent. The items
    /// are judged by the caller, which verifies a partial only while that statement
    /// still needs one. `Err((code, detail))` applies to every item.
    async fn ask_batch(
        &self,
        guardian: &GuardianEndpoint,
        body: &[u8],
        batch: &SignBatch,
    ) -> Result<(BatchAnswer, String), (&'static str, String)> {
        let url = format!("{}/v1/sign_batch", guardian.url.trim_end_matches('/'));
        let resp = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_vec())
            .send()
            .await
            .map_err(|e| ("unreachable", format!("{e}")))?;
        if !resp.status().is_success() {
            return Err(("unreachable", format!("answered HTTP {}", resp.status())));
        }
        let sealed: Envelope = resp
            .json()
            .await
            .map_err(|e| ("unreachable", format!("unreadable answer: {e}")))?;
        // One verification for the whole answer, under this guardian's registered key.
        let (answer, _): (BatchAnswer, _) = protocol::open_limited(
            BATCH_ANSWER_TAG,
            &sealed,
            &[guardian.key],
            protocol::MAX_BATCH_BODY_BYTES,
        )
        .map_err(|e| ("invalid_answer", format!("answer signature: {e}")))?;
        if answer.batch_id != batch.batch_id
            || answer.answers.len() != batch.items.len()
            || answer.guardian_key != guardian.key.to_string()
        {
            return Err((
                "invalid_answer",
                "the answer is about another batch".to_owned(),
            ));
        }
        Ok((answer, sealed.signature))
    }

    /// Signs several statements in one round: one batch per guardian (all at once),
    /// each statement judged and combined on its own. Results are in statement order.
    pub async fn sign_batch(
        &self,
        statements: &[Statement],
    ) -> Vec<Result<SignedStatement, SignFailure>> {
        let mut results: Vec<Option<Result<SignedStatement, SignFailure>>> =
            statements.iter().map(|_| None).collect();
        let mut prepared = Vec::with_capacity(statements.len());
        let mut index = Vec::with_capacity(statements.len());
        for (i, statement) in statements.iter().enumerate() {
            match PreparedRequest::new(
                &self.policy,
                Wrapping::Wsh,
                self.settings.network,
                statement.text().as_bytes(),
                Form::Simple,
            ) {
                Ok(p) => {
                    prepared.push(p);
                    index.push(i);
                }
                Err(e) => {
                    results[i] = Some(Err(SignFailure::Fatal(Reason::new(
                        "signing_request",
                        e.to_string(),
                    ))))
                }
            }
        }
        // More than a batch holds: several rounds, concurrently.
        let starts: Vec<usize> = (0..index.len()).step_by(MAX_BATCH_ITEMS).collect();
        let rounds = futures::future::join_all(starts.iter().map(|&start| {
            let end = (start + MAX_BATCH_ITEMS).min(index.len());
            let chunk: Vec<&Statement> =
                index[start..end].iter().map(|&i| &statements[i]).collect();
            let prepared = &prepared[start..end];
            async move { self.round(&chunk, prepared).await }
        }))
        .await;
        for (&start, signed) in starts.iter().zip(rounds) {
            for (&i, r) in index[start..].iter().zip(signed) {
                results[i] = Some(r);
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(SignFailure::Retry(Reason::new(
                        "internal",
                        "statement left unsigned",
                    )))
                })
            })
            .collect()
    }

    /// One batch round over every guardian.
    async fn round(
        &self,
        statements: &[&Statement],
        prepared: &[PreparedRequest],
    ) -> Vec<Result<SignedStatement, SignFailure>> {
        let n = statements.len();
        let now = Timestamp::now();
        let expires_at = now.plus_millis(self.settings.request_ttl.as_millis() as i64);
        let batch = SignBatch {
            batch_id: Uuid::new_v4(),
            issued_at: now,
            expires_at,
            items: statements
                .iter()
                .zip(prepared)
                .map(|(s, p)| SignRequest {
                    request_id: Uuid::new_v4(),
                    issued_at: now,
                    expires_at,
                    payment: s.payment.clone(),
                    statement: (*s).clone(),
                    signing: p.request().clone(),
                })
                .collect(),
        };
        let digests: Vec<String> = statements.iter().map(|s| s.digest_hex()).collect();
        let body = match self.seal_batch(&batch).and_then(|e| {
            serde_json::to_vec(&e).map_err(|e| CoordinatorError::Client(e.to_string()))
        }) {
            Ok(b) => b,
            Err(e) => {
                return (0..n)
                    .map(|_| {
                        Err(SignFailure::Retry(Reason::new(
                            "request_seal",
                            e.to_string(),
                        )))
                    })
                    .collect()
            }
        };
        let mut pending: FuturesUnordered<_> = self
            .guardians
            .iter()
            .enumerate()
            .map(|(g, endpoint)| {
                let (body, batch) = (&body, &batch);
                async move { (g, self.ask_batch(endpoint, body, batch).await) }
            })
            .collect();
        // judged[guardian][item]
        let mut judged: Vec<Option<Vec<Judged>>> = vec![None; self.guardians.len()];
        let m = self.threshold();
        let mut approvals = vec![0usize; n];
        let mut grace_until: Option<tokio::time::Instant> = None;
        loop {
            let next = match grace_until {
                None => pending.next().await,
                Some(deadline) => tokio::time::timeout_at(deadline, pending.next())
                    .await
                    .unwrap_or(None),
            };
            let Some((g, fetched)) = next else {
                break;
            };
            let guardian = &self.guardians[g];
            let row: Vec<(Judged, bool)> = match fetched {
                Err((code, detail)) => (0..n)
                    .map(|_| {
                        let j = Judged::Refused {
                            code: code.to_owned(),
                            detail: detail.clone(),
                            signature: None,
                        };
                        (j, false)
                    })
                    .collect(),
                Ok((answer, signature)) => {
                    let guardian_hex = guardian.key.to_string();
                    answer
                        .answers
                        .into_iter()
                        .enumerate()
                        .map(|(i, item)| {
                            // A statement that already has M verified partials does
                            // not need this one: it is not verified, so it must not
                            // count.
                            let needed = approvals[i] < m;
                            let judged = judge(
                                guardian,
                                &guardian_hex,
                                item,
                                &signature,
                                &batch.items[i],
                                &prepared[i],
                                &digests[i],
                                needed,
                            );
                            if matches!(judged.0, Judged::Approved { .. }) {
                                approvals[i] += 1;
                            }
                            judged
                        })
                        .collect()
                }
            };
            self.note_row(g, statements, &row);
            let row = row.into_iter().map(|(j, _)| j).collect();
            judged[g] = Some(row);
            if grace_until.is_none() && approvals.iter().all(|a| *a >= m) {
                grace_until = Some(tokio::time::Instant::now() + AFTER_QUORUM_GRACE);
            }
        }
        drop(pending);
        let now = Timestamp::now();
        let mut columns: Vec<Vec<Option<Judged>>> = (0..n).map(|_| Vec::new()).collect();
        for row in judged {
            match row {
                Some(row) => {
                    for (i, j) in row.into_iter().enumerate() {
                        columns[i].push(Some(j));
                    }
                }
                None => columns.iter_mut().for_each(|c| c.push(None)),
            }
        }
        columns
            .into_iter()
            .zip(prepared)
            .zip(digests)
            .map(|((column, prepared), digest)| self.complete(column, prepared, digest, now))
            .collect()
    }

    /// One statement's outcome from every guardian's answer to it.
    fn complete(
        &self,
        judged: Vec<Option<Judged>>,
        prepared: &PreparedRequest,
        digest: String,
        now: Timestamp,
    ) -> Result<SignedStatement, SignFailure> {
        let m = self.threshold();
        let mut partials = Vec::new();
        let mut records = Vec::new();
        let mut summary = Vec::new();
        for (g, j) in self.guardians.iter().zip(judged) {
            let j = j.unwrap_or(Judged::Refused {
                code: "no_answer_needed".into(),
                detail: "quorum reached before this guardian answered".into(),
                signature: None,
            });
            let (decision, reason_code, signature) = match j {
                Judged::Approved { partial, signature } => {
                    partials.push(partial);
                    summary.push(format!("{}: approved", g.name));
                    (ApprovalDecision::Approved, None, Some(signature))
                }
                Judged::Refused {
                    code,
                    detail,
                    signature,
                } => {
                    summary.push(format!("{}: {code} ({detail})", g.name));
                    (ApprovalDecision::Refused, Some(code), signature)
                }
            };
            records.push(GuardianApproval {
                guardian_key: g.key.to_string(),
                decision,
                reason_code,
                statement_digest: digest.clone(),
                signature,
                at: now,
            });
        }
        if partials.len() < m {
            return Err(SignFailure::Retry(Reason::new(
                "quorum_not_reached",
                format!(
                    "{} of {m} guardian signatures; {}",
                    partials.len(),
                    summary.join("; ")
                ),
            )));
        }
        let signature = prepared
            .combine(&partials)
            .map_err(|e| SignFailure::Retry(Reason::new("combine_failed", e.to_string())))?;
        Ok(SignedStatement {
            reserves: vec![ReserveSignature {
                address: self.address.clone(),
                descriptor: self.descriptor.clone(),
                signature,
            }],
            approvals: records,
            proof_of_funds: None,
        })
    }
}

/// Judges one guardian's answer to one request, from a batch answer whose signature
/// verified under that guardian's registered key (`signature`, recorded in the
/// bundle): it counts only if it names the request, payment and statement that were
/// sent, and its partial signature verifies for that key. When the statement already
/// has M verified partials (`needed` false) an approval is recorded as `late`: not
/// verified, never counted.
#[allow(clippy::too_many_arguments)]
fn judge(
    guardian: &GuardianEndpoint,
    guardian_hex: &str,
    body: SignAnswer,
    signature: &str,
    request: &SignRequest,
    prepared: &PreparedRequest,
    digest: &str,
    needed: bool,
) -> (Judged, bool) {
    let invalid = |detail: String| {
        (
            Judged::Refused {
                code: "invalid_answer".into(),
                detail,
                signature: None,
            },
            false,
        )
    };
    if body.request_id != request.request_id
        || body.statement_digest != digest
        || body.payment != request.payment
        || body.guardian_key != guardian_hex
    {
        return invalid("the answer is about another request".into());
    }
    match body.outcome {
        Outcome::Refused { code, detail } => (
            Judged::Refused {
                code: code.as_str().to_owned(),
                detail,
                signature: Some(signature.to_owned()),
            },
            true,
        ),
        Outcome::Approved { .. } if !needed => (
            Judged::Refused {
                code: "late".into(),
                detail: "approved after the quorum was reached; not verified, not counted".into(),
                signature: Some(signature.to_owned()),
            },
            true,
        ),
        Outcome::Approved { partial, .. } => {
            if partial.pubkey != CompressedPublicKey(guardian.key) {
                return invalid("partial signature from another key".into());
            }
            match prepared.verify_partial(partial) {
                Ok(partial) => (
                    Judged::Approved {
                        partial,
                        signature: signature.to_owned(),
                    },
                    true,
                ),
                Err(e) => (
                    Judged::Refused {
                        code: "bad_partial".into(),
                        detail: e.to_string(),
                        signature: Some(signature.to_owned()),
                    },
                    true,
                ),
            }
        }
    }
}

/// Statements waiting to join a batch round.
struct Waiting {
    statement: Statement,
    reply: tokio::sync::oneshot::Sender<Result<SignedStatement, SignFailure>>,
}

#[async_trait]
impl ReserveSigner for Coordinator {
    /// Statements signed concurrently share rounds: the first to arrive while no
    /// round is being gathered leads; it yields once, so that the other statements of
    /// the same claimed batch (the worker polls them together with `join_all`) queue
    /// behind it, then takes the whole queue into one batch round per guardian and
    /// hands every caller its own result. A caller arriving meanwhile leads the next
    /// round. Nothing is weakened by sharing: every item is checked, recorded and
    /// answered on its own.
    async fn sign(&self, statement: &Statement) -> Result<SignedStatement, SignFailure> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let leads = {
            let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            queue.push(Waiting {
                statement: statement.clone(),
                reply,
            });
            queue.len() == 1
        };
        if leads {
            tokio::task::yield_now().await;
            let waiting: Vec<Waiting> =
                std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()));
            let statements: Vec<Statement> = waiting.iter().map(|w| w.statement.clone()).collect();
            let results = self.sign_batch(&statements).await;
            for (w, r) in waiting.into_iter().zip(results) {
                // A caller that went away does not need its result.
                let _ = w.reply.send(r);
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(SignFailure::Retry(Reason::new(
                "signing_abandoned",
                "the signing round this statement joined was cancelled",
            )))
        })
    }

    fn reserves(&self) -> Vec<(String, String)> {
        vec![(self.address.clone(), self.descriptor.clone())]
    }
}

/// `GET /v1/guardians`: public liveness of the guardians, for the binary to merge
/// into its API router.
pub fn guardians_router(coordinator: Arc<Coordinator>) -> Router {
    Router::new()
        .route("/v1/guardians", get(guardians_handler))
        .with_state(coordinator)
}

async fn guardians_handler(State(c): State<Arc<Coordinator>>) -> Json<GuardiansView> {
    Json(c.view())
}
