//! The coordinator: a [`ReserveSigner`] that asks M-of-N guardians over HTTP.
//!
//! Every guardian is asked at once, each with a fresh request id and the same
//! statement. An answer counts only after its envelope verifies under that guardian's
//! registered key, it names the request and statement that were sent, and its partial
//! signature passes [`verify_partial`] for that key. M such answers complete the
//! signature with [`combine`]; fewer leave the job to the pipeline's retry.

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
    combine, verify_partial, Form, PartialSignature, SigningRequest, SortedMulti, Wrapping,
};
use ubtc_core::bundle::{ApprovalDecision, GuardianApproval, ReserveSignature};
use ubtc_core::validation::Reason;
use ubtc_core::{Statement, Timestamp};
use ubtc_pipeline::{ReserveSigner, SignFailure, SignedStatement};
use uuid::Uuid;

use crate::keystore::{self, GuardianKey};
use crate::protocol::{self, Envelope, Outcome, SignAnswer, SignRequest, ANSWER_TAG, REQUEST_TAG};

/// Answers kept per guardian for `/v1/guardians`.
const RECENT_ANSWERS: usize = 20;
/// How long the coordinator still listens to the other guardians once it has M
/// partial signatures, so their answers land in the bundle without delaying it much.
const AFTER_QUORUM_GRACE: Duration = Duration::from_millis(300);

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
        partial: PartialSignature,
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

#[derive(Clone, Debug, Serialize)]
pub struct GuardianStatus {
    pub name: String,
    pub url: String,
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
                url: g.url.clone(),
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

    fn note(&self, index: usize, payment: String, judged: &Judged, answered: bool) {
        let mut board = self.board.lock().unwrap_or_else(|e| e.into_inner());
        let Some(status) = board.get_mut(index) else {
            return;
        };
        let now = Timestamp::now();
        if answered {
            status.last_seen = Some(now);
        }
        let (decision, reason_code) = match judged {
            Judged::Approved { .. } => ("approved".to_owned(), None),
            Judged::Refused { code, .. } => ("refused".to_owned(), Some(code.clone())),
        };
        status.recent.push_front(RecentAnswer {
            at: now,
            payment,
            decision,
            reason_code,
        });
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

    async fn ask(
        &self,
        guardian: &GuardianEndpoint,
        statement: &Statement,
        signing: &SigningRequest,
        digest: &str,
    ) -> (Judged, bool) {
        let now = Timestamp::now();
        let request = SignRequest {
            request_id: Uuid::new_v4(),
            issued_at: now,
            expires_at: now.plus_millis(self.settings.request_ttl.as_millis() as i64),
            payment: statement.payment.clone(),
            statement: statement.clone(),
            signing: signing.clone(),
        };
        let unreachable = |detail: String| {
            (
                Judged::Refused {
                    code: "unreachable".into(),
                    detail,
                    signature: None,
                },
                false,
            )
        };
        let envelope = match self.seal_request(&request) {
            Ok(e) => e,
            Err(e) => return unreachable(e.to_string()),
        };
        let url = format!("{}/v1/sign", guardian.url.trim_end_matches('/'));
        let resp = match self.client.post(&url).json(&envelope).send().await {
            Ok(r) => r,
            Err(e) => return unreachable(format!("{e}")),
        };
        if !resp.status().is_success() {
            return unreachable(format!("answered HTTP {}", resp.status()));
        }
        let answer: Envelope = match resp.json().await {
            Ok(a) => a,
            Err(e) => return unreachable(format!("unreadable answer: {e}")),
        };
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
        let body: SignAnswer = match protocol::open(ANSWER_TAG, &answer, &[guardian.key]) {
            Ok((b, _)) => b,
            Err(e) => return invalid(format!("answer signature: {e}")),
        };
        if body.request_id != request.request_id
            || body.statement_digest != digest
            || body.payment != request.payment
            || body.guardian_key != guardian.key.to_string()
        {
            return invalid("the answer is about another request".into());
        }
        match body.outcome {
            Outcome::Refused { code, detail } => (
                Judged::Refused {
                    code: code.as_str().to_owned(),
                    detail,
                    signature: Some(answer.signature),
                },
                true,
            ),
            Outcome::Approved { partial, .. } => {
                if partial.pubkey != CompressedPublicKey(guardian.key) {
                    return invalid("partial signature from another key".into());
                }
                match verify_partial(signing, &partial) {
                    Ok(()) => (
                        Judged::Approved {
                            partial,
                            signature: answer.signature,
                        },
                        true,
                    ),
                    Err(e) => (
                        Judged::Refused {
                            code: "bad_partial".into(),
                            detail: e.to_string(),
                            signature: Some(answer.signature),
                        },
                        true,
                    ),
                }
            }
        }
    }
}

#[async_trait]
impl ReserveSigner for Coordinator {
    async fn sign(&self, statement: &Statement) -> Result<SignedStatement, SignFailure> {
        let signing = self
            .signing_request(statement)
            .map_err(|e| SignFailure::Fatal(Reason::new("signing_request", e.to_string())))?;
        let digest = statement.digest_hex();
        let mut pending: FuturesUnordered<_> = self
            .guardians
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let signing = &signing;
                let digest = &digest;
                async move { (i, self.ask(g, statement, signing, digest).await) }
            })
            .collect();
        let mut judged: Vec<Option<Judged>> = vec![None; self.guardians.len()];
        let m = self.threshold();
        let mut approvals = 0;
        let mut grace_until: Option<tokio::time::Instant> = None;
        loop {
            let next = match grace_until {
                None => pending.next().await,
                Some(deadline) => tokio::time::timeout_at(deadline, pending.next())
                    .await
                    .unwrap_or(None),
            };
            let Some((i, (j, answered))) = next else {
                break;
            };
            self.note(i, statement.payment.to_string(), &j, answered);
            if matches!(j, Judged::Approved { .. }) {
                approvals += 1;
                if approvals >= m && grace_until.is_none() {
                    grace_until = Some(tokio::time::Instant::now() + AFTER_QUORUM_GRACE);
                }
            }
            judged[i] = Some(j);
        }
        drop(pending);
        let now = Timestamp::now();
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
        let signature = combine(&signing, &partials)
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
