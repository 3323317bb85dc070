//! The coordinator's side of a reserve attestation: an [`AttestationSigner`] that asks
//! every guardian at once ([`AttestCoordinator`]), and a single-key one for a reserve
//! held by one local key ([`LocalAttestationSigner`]).
//!
//! A guardian's answer counts only once its envelope verifies under that guardian's
//! registered key, it names the request and attestation digest that were sent, its
//! approval verifies under that key over the approval digest, and its partial
//! signatures pass [`PreparedPof::check`] (exactly the inputs its key signs, each
//! valid). The round completes as soon as M guardians approved and their partials
//! complete every input; answers still on the way are dropped. Fewer than M: an error
//! naming what each guardian answered, and no attestation.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bitcoin::secp256k1::{ecdsa, Message, PublicKey, SecretKey};
use futures::stream::{FuturesUnordered, StreamExt};
use ubtc_bitcoin::attestation::{approve, AttestError, PreparedPof, VerifiedPofPartials};
use ubtc_core::attestation::{
    approval_digest, AttestationApproval, AttestationContent, ReserveAttestation,
};
use ubtc_core::Timestamp;
use uuid::Uuid;

use crate::attest::{
    AttestAnswer, AttestOutcome, AttestRequest, ATTEST_ANSWER_TAG, ATTEST_PATH, ATTEST_REQUEST_TAG,
};
use crate::coordinator::{CoordinatorError, GuardianEndpoint};
use crate::keystore::GuardianKey;
use crate::protocol::{self, Envelope, SECP};

/// What one guardian answered, when the round failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuardianVerdict {
    pub guardian: String,
    /// The guardian's refusal code, or the coordinator's: `unreachable`,
    /// `bad_answer` (an answer that did not verify), `approved` (counted).
    pub code: String,
    pub detail: String,
}

#[derive(Debug, thiserror::Error)]
pub enum AttestRoundError {
    /// The proposal itself cannot be attested (shape, descriptors, scripts).
    #[error("the proposal cannot be attested ({code}): {source}", code = .0.code(), source = .0)]
    Proposal(#[from] AttestError),
    /// Fewer than M guardians approved; nothing was made.
    #[error("{approved} of the {needed} guardian approvals needed: {}", summary(.verdicts))]
    NotEnough {
        approved: usize,
        needed: usize,
        verdicts: Vec<GuardianVerdict>,
    },
    #[error("internal: {0}")]
    Internal(String),
}

fn summary(verdicts: &[GuardianVerdict]) -> String {
    verdicts
        .iter()
        .map(|v| format!("{} {} ({})", v.guardian, v.code, v.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

impl AttestRoundError {
    /// Each guardian's code, when the round failed for want of approvals.
    pub fn codes(&self) -> Vec<(String, String)> {
        match self {
            Self::NotEnough { verdicts, .. } => verdicts
                .iter()
                .map(|v| (v.guardian.clone(), v.code.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// Makes a signed attestation from a proposal. The pipeline stores, schedules and
/// publishes what this returns; it is complete (proof of funds finalised, approvals
/// attached) and verifies with `ubtc_bitcoin::attestation::verify_attestation`.
/// Not idempotent across proposals: guardians approve one attestation per Bitcoin
/// block and registry, so a retry for the same block must send the same proposal
/// (same `created_at`), or wait for the next block.
#[async_trait]
pub trait AttestationSigner: Send + Sync {
    async fn sign_attestation(
        &self,
        proposal: AttestationContent,
    ) -> Result<ReserveAttestation, AttestRoundError>;
}

fn unsigned(proposal: AttestationContent) -> Result<ReserveAttestation, AttestRoundError> {
    ReserveAttestation::unsigned(proposal).map_err(|e| AttestRoundError::Proposal(e.into()))
}

async fn prepare(
    att: ReserveAttestation,
) -> Result<(ReserveAttestation, Arc<PreparedPof>), AttestRoundError> {
    tokio::task::spawn_blocking(move || {
        let prepared = PreparedPof::prepare(&att)?;
        Ok((att, Arc::new(prepared)))
    })
    .await
    .map_err(|e| AttestRoundError::Internal(e.to_string()))?
}

/// Asks M-of-N guardians over HTTP (`POST /v1/attest`).
pub struct AttestCoordinator {
    key: GuardianKey,
    guardians: Vec<GuardianEndpoint>,
    threshold: usize,
    request_ttl: Duration,
    client: reqwest::Client,
}

impl std::fmt::Debug for AttestCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestCoordinator")
            .field("guardians", &self.guardians.len())
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl AttestCoordinator {
    /// `key` signs requests; `threshold` approvals (and the partials they carry) make
    /// an attestation. `timeout` is per guardian: a 10,000-UTXO round takes each
    /// guardian seconds.
    pub fn new(
        key: GuardianKey,
        guardians: Vec<GuardianEndpoint>,
        threshold: usize,
        timeout: Duration,
        request_ttl: Duration,
    ) -> Result<Self, CoordinatorError> {
        if threshold == 0 || threshold > guardians.len() {
            return Err(CoordinatorError::Guardian(
                "threshold".into(),
                format!("{threshold} of {} guardians", guardians.len()),
            ));
        }
        // Approvals are counted per answer: one key listed twice would count twice
        // toward M, which the verifier (distinct keys) then refuses.
        let mut keys = std::collections::HashSet::new();
        if let Some(g) = guardians.iter().find(|g| !keys.insert(g.key)) {
            return Err(CoordinatorError::Guardian(
                g.name.clone(),
                "its key is listed for another guardian too".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| CoordinatorError::Client(e.to_string()))?;
        Ok(Self {
            key,
            guardians,
            threshold,
            request_ttl,
            client,
        })
    }

    async fn ask(
        &self,
        guardian: &GuardianEndpoint,
        body: Arc<Vec<u8>>,
    ) -> Result<AttestAnswer, (&'static str, String)> {
        let url = format!("{}{ATTEST_PATH}", guardian.url.trim_end_matches('/'));
        let resp = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.as_ref().clone())
            .send()
            .await
            .map_err(|e| ("unreachable", e.to_string()))?;
        if !resp.status().is_success() {
            return Err(("unreachable", format!("answered HTTP {}", resp.status())));
        }
        let sealed: Envelope = resp
            .json()
            .await
            .map_err(|e| ("unreachable", format!("unreadable answer: {e}")))?;
        let (answer, _) = protocol::open_limited::<AttestAnswer>(
            ATTEST_ANSWER_TAG,
            &sealed,
            &[guardian.key],
            crate::attest::MAX_ATTEST_BODY_BYTES,
        )
        .map_err(|e| ("bad_answer", e.to_string()))?;
        Ok(answer)
    }
}

/// Checks an approval's key and signature over `att`'s approval digest.
fn check_approval(
    att: &ReserveAttestation,
    approval: &AttestationApproval,
    key: &PublicKey,
) -> Result<(), String> {
    if approval.guardian_key != hex::encode(key.serialize()) {
        return Err("the approval names another key".into());
    }
    let der = hex::decode(&approval.signature).map_err(|_| "approval is not hex".to_owned())?;
    let sig = ecdsa::Signature::from_der(&der).map_err(|_| "approval is not DER".to_owned())?;
    let msg = Message::from_digest(approval_digest(&att.digest()));
    SECP.verify_ecdsa(&msg, &sig, key)
        .map_err(|_| "approval signature does not verify".to_owned())
}

#[async_trait]
impl AttestationSigner for AttestCoordinator {
    async fn sign_attestation(
        &self,
        proposal: AttestationContent,
    ) -> Result<ReserveAttestation, AttestRoundError> {
        let (mut att, prepared) = prepare(unsigned(proposal)?).await?;
        let digest = hex::encode(att.digest());
        let now = Timestamp::now();
        let request = AttestRequest {
            request_id: Uuid::new_v4(),
            issued_at: now,
            expires_at: now.plus_millis(self.request_ttl.as_millis() as i64),
            attestation: att.clone(),
        };
        let envelope = protocol::seal(ATTEST_REQUEST_TAG, &request, &self.key)
            .map_err(|e| AttestRoundError::Internal(e.to_string()))?;
        let body = Arc::new(
            serde_json::to_vec(&envelope).map_err(|e| AttestRoundError::Internal(e.to_string()))?,
        );
        let mut pending: FuturesUnordered<_> = self
            .guardians
            .iter()
            .map(|g| {
                let body = body.clone();
                async move { (g, self.ask(g, body).await) }
            })
            .collect();
        let mut verdicts = Vec::new();
        let mut approvals: Vec<AttestationApproval> = Vec::new();
        let mut verified: Vec<VerifiedPofPartials> = Vec::new();
        while let Some((g, answer)) = pending.next().await {
            let verdict = |code: &str, detail: String| GuardianVerdict {
                guardian: g.name.clone(),
                code: code.to_owned(),
                detail,
            };
            let answer = match answer {
                Ok(a) => a,
                Err((code, detail)) => {
                    tracing::warn!(guardian = %g.name, code, %detail, "attestation: no usable answer");
                    verdicts.push(verdict(code, detail));
                    continue;
                }
            };
            if answer.request_id != request.request_id || answer.attestation_digest != digest {
                verdicts.push(verdict(
                    "bad_answer",
                    "the answer is about another request or attestation".into(),
                ));
                continue;
            }
            let (partials, approval) = match answer.outcome {
                AttestOutcome::Refused { code, detail } => {
                    tracing::info!(guardian = %g.name, code = code.as_str(), %detail, "attestation refused");
                    verdicts.push(verdict(code.as_str(), detail));
                    continue;
                }
                AttestOutcome::Approved {
                    partials, approval, ..
                } => (partials, approval),
            };
            if partials.pubkey.0 != g.key {
                verdicts.push(verdict("bad_answer", "partials under another key".into()));
                continue;
            }
            if let Err(detail) = check_approval(&att, &approval, &g.key) {
                verdicts.push(verdict("bad_answer", detail));
                continue;
            }
            let p = prepared.clone();
            let checked = tokio::task::spawn_blocking(move || p.check(partials))
                .await
                .map_err(|e| AttestRoundError::Internal(e.to_string()))?;
            match checked {
                Ok(v) => verified.push(v),
                Err(e) => {
                    verdicts.push(verdict("bad_answer", e.to_string()));
                    continue;
                }
            }
            approvals.push(approval);
            verdicts.push(verdict("approved", String::new()));
            if approvals.len() >= self.threshold {
                match prepared.combine(&verified) {
                    Ok(pof) => {
                        att.pof = pof;
                        att.approvals = approvals;
                        return Ok(att);
                    }
                    // Some input (a reserve whose keys differ) still lacks signatures.
                    Err(AttestError::NotEnoughSignatures { .. }) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Err(AttestRoundError::NotEnough {
            approved: approvals.len(),
            needed: self.threshold,
            verdicts,
        })
    }
}

/// One local key makes the whole attestation: for reserves that one key spends alone
/// (a single-key `wpkh`/`sh(wpkh)` reserve, or a 1-of-N multisig holding it), as in
/// the demo's `--local-key` mode. Any reserve that needs another key is refused
/// (`not_enough_signatures`), so it never produces a partial proof.
pub struct LocalAttestationSigner {
    secret: SecretKey,
}

impl std::fmt::Debug for LocalAttestationSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LocalAttestationSigner([redacted])")
    }
}

impl LocalAttestationSigner {
    pub fn new(secret: SecretKey) -> Self {
        Self { secret }
    }
}

#[async_trait]
impl AttestationSigner for LocalAttestationSigner {
    async fn sign_attestation(
        &self,
        proposal: AttestationContent,
    ) -> Result<ReserveAttestation, AttestRoundError> {
        let secret = self.secret;
        let att = unsigned(proposal)?;
        tokio::task::spawn_blocking(move || {
            let mut att = att;
            let prepared = PreparedPof::prepare(&att)?;
            let partials = prepared.check(prepared.sign(&secret)?)?;
            att.pof = prepared.combine(&[partials])?;
            att.approvals = vec![approve(&att, &secret)];
            Ok(att)
        })
        .await
        .map_err(|e| AttestRoundError::Internal(e.to_string()))?
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// One guardian listed twice would answer twice and reach M alone.
    #[test]
    fn a_key_listed_for_two_guardians_is_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let one = GuardianKey::generate();
        let other = GuardianKey::generate();
        let endpoint = |name: &str, key: &GuardianKey| GuardianEndpoint {
            name: name.into(),
            url: "http://127.0.0.1:1".into(),
            key: key.public(),
        };
        let new = |guardians| {
            AttestCoordinator::new(
                GuardianKey::generate(),
                guardians,
                2,
                Duration::from_secs(1),
                Duration::from_secs(60),
            )
        };
        let err = new(vec![endpoint("g1", &one), endpoint("g2", &one)]).unwrap_err();
        assert!(err.to_string().contains("g2"), "{err}");
        assert!(new(vec![endpoint("g1", &one), endpoint("g2", &other)]).is_ok());
    }
}
