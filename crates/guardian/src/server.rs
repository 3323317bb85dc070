//! The guardian daemon: checks each signing request against its own chain view and
//! policy, records its approval durably, and answers with a signed partial signature
//! or a signed refusal with a reason code.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitcoin::secp256k1::PublicKey;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use ubtc_chains::{ChainAdapter, PaymentDepth};
use ubtc_core::{ChainId, PaymentRef, Statement, Timestamp};
use uuid::Uuid;

use crate::config::{ChainViewKind, GuardianConfig};
use crate::devchain::DevChainHttpAdapter;
use crate::keystore::{self, GuardianKey};
use crate::protocol::{
    self, Envelope, Outcome, ProtocolError, RefusalCode, SignAnswer, SignRequest, ANSWER_TAG,
    REQUEST_TAG,
};
use crate::record::{Approval, ApprovalLog};
use crate::GuardianError;

/// Test hook: when this variable is `1`, the guardian exits (status 75) right after
/// it has recorded an approval and before it answers, to show that a crash there
/// loses nothing. Never set in production.
pub const TEST_EXIT_AFTER_RECORD_ENV: &str = "UBTC_GUARDIAN_TEST_EXIT_AFTER_RECORD";

/// One watched chain: its view and its rate policy.
pub struct WatchedChain {
    pub adapter: Arc<dyn ChainAdapter>,
    pub max_signatures_per_minute: u32,
}

/// Everything a guardian decides with.
pub struct GuardianPolicy {
    pub coordinators: Vec<PublicKey>,
    pub statement_versions: Vec<u32>,
    pub max_request_ttl_ms: i64,
}

struct Decisions {
    log: ApprovalLog,
    /// request id → (body digest, expiry, the answer sent): the same request gets the
    /// same answer; another body under a known id is a replay.
    answered: HashMap<Uuid, (String, Timestamp, Envelope)>,
    /// Approval times per chain in the last minute, for the rate policy.
    recent: HashMap<ChainId, VecDeque<Timestamp>>,
}

pub struct Guardian {
    key: GuardianKey,
    chains: HashMap<ChainId, WatchedChain>,
    policy: GuardianPolicy,
    /// One lock around check-record-answer: it makes "never two statements for one
    /// payment" hold under concurrent requests. Chain reads happen before it is taken.
    decisions: Mutex<Decisions>,
    exit_after_record: bool,
}

impl std::fmt::Debug for Guardian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guardian")
            .field("key", &self.key)
            .field("chains", &self.chains.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What `/v1/identity` answers.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub public_key: String,
    pub fingerprint: String,
    pub chains: Vec<ChainId>,
}

impl Guardian {
    pub fn new(
        key: GuardianKey,
        chains: HashMap<ChainId, WatchedChain>,
        policy: GuardianPolicy,
        log: ApprovalLog,
    ) -> Self {
        Self {
            key,
            chains,
            policy,
            decisions: Mutex::new(Decisions {
                log,
                answered: HashMap::new(),
                recent: HashMap::new(),
            }),
            exit_after_record: std::env::var(TEST_EXIT_AFTER_RECORD_ENV).as_deref() == Ok("1"),
        }
    }

    /// Builds a guardian from its configuration: decrypts the keystore, opens the
    /// approval record and the chain views.
    pub fn from_config(config: &GuardianConfig) -> Result<Self, GuardianError> {
        let pass = keystore::passphrase_from(
            config.passphrase_file.as_deref(),
            Some(&config.passphrase_env),
        )?;
        let key = keystore::load(&config.keystore, &pass)?;
        let log = ApprovalLog::open(&config.approvals)?;
        let mut chains = HashMap::new();
        for c in &config.chains {
            let adapter: Arc<dyn ChainAdapter> = match c.kind {
                ChainViewKind::DevHttp => {
                    Arc::new(DevChainHttpAdapter::new(c.name.clone(), &c.url)?)
                }
            };
            chains.insert(
                c.name.clone(),
                WatchedChain {
                    adapter,
                    max_signatures_per_minute: c.max_signatures_per_minute,
                },
            );
        }
        let policy = GuardianPolicy {
            coordinators: config.coordinator_keys()?,
            statement_versions: config.statement_versions.clone(),
            max_request_ttl_ms: (config.max_request_ttl_secs as i64).saturating_mul(1000),
        };
        Ok(Self::new(key, chains, policy, log))
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    pub fn identity(&self) -> Identity {
        let mut chains: Vec<ChainId> = self.chains.keys().cloned().collect();
        chains.sort();
        Identity {
            public_key: self.key.public_hex(),
            fingerprint: keystore::fingerprint(&self.key.public()),
            chains,
        }
    }

    fn answer(
        &self,
        request_id: Uuid,
        payment: PaymentRef,
        statement_digest: String,
        outcome: Outcome,
    ) -> Result<Envelope, ProtocolError> {
        protocol::seal(
            ANSWER_TAG,
            &SignAnswer {
                request_id,
                guardian_key: self.key.public_hex(),
                payment,
                statement_digest,
                outcome,
                at: Timestamp::now(),
            },
            &self.key,
        )
    }

    /// Decides one request. Every answer is signed, refusals included; `Err` only when
    /// the envelope cannot even be read (no request id or payment to answer about).
    pub async fn handle(&self, envelope: &Envelope) -> Result<Envelope, ProtocolError> {
        let request: SignRequest =
            match protocol::open(REQUEST_TAG, envelope, &self.policy.coordinators) {
                Ok((r, _)) => r,
                Err(e) => {
                    // Answer about what the unauthenticated body claims, so the sender can
                    // tell which of its requests failed; nothing in it is acted on.
                    let claimed: SignRequest = serde_json::from_str(&envelope.body)
                        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
                    let digest = claimed.statement.digest_hex();
                    return self.answer(
                        claimed.request_id,
                        claimed.payment,
                        digest,
                        refused(RefusalCode::BadRequestSignature, &e.to_string()),
                    );
                }
            };
        let digest = request.statement.digest_hex();
        let body_digest = protocol::body_digest(envelope);
        let outcome = self.decide(&request, &digest, &body_digest).await;
        match outcome {
            Decided::Answer(outcome) => {
                let sealed =
                    self.answer(request.request_id, request.payment.clone(), digest, outcome)?;
                let mut d = self.decisions.lock().await;
                let now = Timestamp::now();
                if d.answered.len() > 4096 {
                    d.answered.retain(|_, (_, exp, _)| *exp >= now);
                }
                d.answered.insert(
                    request.request_id,
                    (body_digest, request.expires_at, sealed.clone()),
                );
                Ok(sealed)
            }
            Decided::Repeat(sealed) => Ok(sealed),
        }
    }

    async fn decide(&self, req: &SignRequest, digest: &str, body_digest: &str) -> Decided {
        let now = Timestamp::now();
        if req.expires_at < now {
            return refuse(RefusalCode::RequestExpired, "the request has expired");
        }
        if req.expires_at.as_millis() - now.as_millis() > self.policy.max_request_ttl_ms {
            return refuse(
                RefusalCode::BadRequest,
                "the request's lifetime is longer than this guardian accepts",
            );
        }
        {
            let d = self.decisions.lock().await;
            if let Some((seen_digest, _, answer)) = d.answered.get(&req.request_id) {
                if seen_digest == body_digest {
                    return Decided::Repeat(answer.clone());
                }
                return refuse(
                    RefusalCode::RequestReplayed,
                    "this request id was already used for another request",
                );
            }
        }
        if !self
            .policy
            .statement_versions
            .contains(&req.statement.version)
        {
            return refuse(
                RefusalCode::StatementVersion,
                &format!(
                    "statement version {} is not accepted",
                    req.statement.version
                ),
            );
        }
        let text = req.statement.text();
        if req.statement.payment != req.payment || req.signing.message != text.as_bytes() {
            return refuse(
                RefusalCode::StatementMismatch,
                "the BIP-322 message or payment is not the statement's",
            );
        }
        let Some(watched) = self.chains.get(&req.payment.chain) else {
            return refuse(
                RefusalCode::PaymentUnknown,
                &format!("this guardian does not watch {}", req.payment.chain),
            );
        };
        let payment = match watched.adapter.payment(&req.payment).await {
            Ok(Some((payment, PaymentDepth::Confirmed { .. }))) => payment,
            Ok(Some((_, PaymentDepth::Pending { confirmations }))) => {
                return refuse(
                    RefusalCode::PaymentUnconfirmed,
                    &format!("{confirmations} confirmations on this guardian's view"),
                )
            }
            Ok(Some((_, PaymentDepth::Gone))) => {
                return refuse(
                    RefusalCode::PaymentUnknown,
                    "the payment is not on the canonical chain of this guardian's view",
                )
            }
            Ok(None) => {
                return refuse(
                    RefusalCode::PaymentUnknown,
                    "no such payment on this guardian's view",
                )
            }
            Err(e) => return refuse(RefusalCode::ChainUnavailable, &e.to_string()),
        };
        let Ok(message) = payment.message.clone() else {
            return refuse(
                RefusalCode::StatementMismatch,
                "the payment's message cannot be signed",
            );
        };
        // Rebuild from what this guardian saw; only the block stamp and request id
        // come from the coordinator (they are not chain data), and the version was
        // checked above.
        let mut rebuilt = Statement::new(
            payment.reference.clone(),
            payment.payer.clone(),
            message,
            req.statement.bitcoin_block.clone(),
            req.statement.request_id,
        );
        rebuilt.version = req.statement.version;
        if rebuilt.text().as_bytes() != text.as_bytes() {
            return refuse(
                RefusalCode::StatementMismatch,
                "the statement differs from the one rebuilt from this guardian's view",
            );
        }

        // Signed before the lock so guardians' CPU work runs in parallel; the signature
        // leaves this function only if the checks below pass and it is recorded.
        let partial = match ubtc_bitcoin::multisig::sign_partial(&req.signing, self.key.secret()) {
            Ok(p) => p,
            Err(e) => return refuse(RefusalCode::BadRequest, &e.to_string()),
        };
        let mut d = self.decisions.lock().await;
        let previous = d.log.for_payment(&req.payment);
        if let Some(other) = previous.iter().find(|a| a.statement_digest != digest) {
            return refuse(
                RefusalCode::AlreadySignedOther,
                &format!(
                    "already approved statement {} for this payment",
                    other.statement_digest
                ),
            );
        }
        if let Some(same) = previous
            .iter()
            .find(|a| a.descriptor == req.signing.descriptor)
        {
            let outcome = Outcome::Approved {
                partial: same.partial.clone(),
                recorded_at: same.recorded_at,
            };
            // The record may have been written by a request still waiting for its
            // fsync: make sure it is on disk before this answer carries it out.
            let syncer = d.log.syncer();
            drop(d);
            return self.synced(syncer, outcome).await;
        }
        let limit = watched.max_signatures_per_minute as usize;
        let window_start = now.plus_millis(-60_000);
        let recent = d.recent.entry(req.payment.chain.clone()).or_default();
        while recent.front().is_some_and(|t| *t < window_start) {
            recent.pop_front();
        }
        if recent.len() >= limit {
            return refuse(
                RefusalCode::RateLimited,
                &format!("more than {limit} approvals per minute on this chain"),
            );
        }
        let recorded_at = Timestamp::now();
        let approval = Approval {
            payment: req.payment.clone(),
            statement_digest: digest.to_owned(),
            descriptor: req.signing.descriptor.clone(),
            partial: partial.clone(),
            request_id: req.request_id,
            recorded_at,
        };
        if let Err(e) = d.log.append(approval) {
            tracing::error!(error = %e, "cannot record an approval; refusing to sign");
            return refuse(RefusalCode::Internal, "the approval could not be recorded");
        }
        d.recent
            .entry(req.payment.chain.clone())
            .or_default()
            .push_back(recorded_at);
        let syncer = d.log.syncer();
        drop(d);
        let decided = self
            .synced(
                syncer,
                Outcome::Approved {
                    partial,
                    recorded_at,
                },
            )
            .await;
        if self.exit_after_record {
            tracing::warn!("test hook: exiting after recording the approval");
            std::process::exit(75);
        }
        decided
    }

    /// Returns `outcome` once the approval record is on disk, or refuses when it
    /// cannot be flushed.
    async fn synced(&self, syncer: crate::record::Syncer, outcome: Outcome) -> Decided {
        let flushed = tokio::task::spawn_blocking(move || syncer.sync()).await;
        match flushed {
            Ok(Ok(())) => Decided::Answer(outcome),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot flush the approval record; refusing to sign");
                refuse(RefusalCode::Internal, "the approval could not be recorded")
            }
            Err(e) => {
                tracing::error!(error = %e, "approval record flush task failed");
                refuse(RefusalCode::Internal, "the approval could not be recorded")
            }
        }
    }
}

enum Decided {
    Answer(Outcome),
    /// The exact answer already sent for this request.
    Repeat(Envelope),
}

fn refused(code: RefusalCode, detail: &str) -> Outcome {
    Outcome::Refused {
        code,
        detail: detail.to_owned(),
    }
}

fn refuse(code: RefusalCode, detail: &str) -> Decided {
    Decided::Answer(refused(code, detail))
}

/// `POST /v1/sign` and `GET /v1/identity`.
pub fn router(guardian: Arc<Guardian>) -> Router {
    Router::new()
        .route("/v1/sign", post(sign_handler))
        .route("/v1/identity", get(identity_handler))
        .layer(axum::extract::DefaultBodyLimit::max(
            protocol::MAX_BODY_BYTES * 2,
        ))
        .with_state(guardian)
}

async fn sign_handler(
    State(guardian): State<Arc<Guardian>>,
    Json(envelope): Json<Envelope>,
) -> Response {
    match guardian.handle(&envelope).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "code": "malformed_request", "message": e.to_string() })),
        )
            .into_response(),
    }
}

async fn identity_handler(State(guardian): State<Arc<Guardian>>) -> Json<Identity> {
    Json(guardian.identity())
}

/// Serves `router` on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
