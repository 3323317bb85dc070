//! The coordinator ⇄ guardian signing protocol (over HTTP, JSON).
//!
//! Both directions travel in an [`Envelope`]: the body as a JSON *string*, the
//! signer's public key and an ECDSA signature over
//! `SHA-256(domain tag || body bytes)`. Signing the exact bytes sent, rather than a
//! re-serialisation, means nobody has to agree on a canonical JSON form; the domain
//! tag keeps a request signature from ever passing as an answer signature. Bodies are
//! parsed only after the signature checks out.

use std::sync::LazyLock;

use bitcoin::secp256k1::{ecdsa, All, Message, PublicKey, Secp256k1};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ubtc_bitcoin::multisig::{PartialSignature, SigningRequest};
use ubtc_core::{PaymentRef, Statement, Timestamp};
use uuid::Uuid;

use crate::keystore::GuardianKey;

/// One context for the process: creating one per call costs as much as a signature
/// (it is randomised against side channels).
pub(crate) static SECP: LazyLock<Secp256k1<All>> = LazyLock::new(Secp256k1::new);

/// Domain tag of a coordinator's request signature.
pub const REQUEST_TAG: &[u8] = b"ubtc-guardian-request-v1\n";
/// Domain tag of a guardian's answer signature.
pub const ANSWER_TAG: &[u8] = b"ubtc-guardian-answer-v1\n";
/// Domain tag of a guardian's batch answer signature.
pub const BATCH_ANSWER_TAG: &[u8] = b"ubtc-guardian-batch-answer-v1\n";
/// Largest envelope body accepted, in bytes (a simple-form request is a few KiB).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// Most requests in one batch (the pipeline claims 64 jobs at a time).
pub const MAX_BATCH_ITEMS: usize = 256;
/// Largest batch envelope body accepted, in bytes.
pub const MAX_BATCH_BODY_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("signer key is not accepted here")]
    UnknownSigner,
    #[error("signature does not verify")]
    BadSignature,
    #[error("malformed envelope: {0}")]
    Malformed(String),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The body, JSON text, exactly as signed.
    pub body: String,
    /// Compressed public key of the signer, hex.
    pub signer: String,
    /// DER ECDSA signature, hex.
    pub signature: String,
}

/// What the coordinator asks of one guardian.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignRequest {
    /// Fresh for every request (a retry gets a new one); a guardian refuses a request id
    /// it has already answered with a different body.
    pub request_id: Uuid,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub payment: PaymentRef,
    pub statement: Statement,
    /// The BIP-322 multisig request whose message must be `statement.text()`.
    pub signing: SigningRequest,
}

/// Several requests under one coordinator signature (`POST /v1/sign_batch`): one
/// envelope to serialise, sign and verify per round instead of one per statement.
///
/// The batch has its own id and lifetime (a batch id seen with another body is a
/// replay, and a batch is refused whole once expired); every item is still a full
/// [`SignRequest`], checked, recorded and answered on its own, exactly as if it had
/// come alone.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignBatch {
    pub batch_id: Uuid,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub items: Vec<SignRequest>,
}

/// A guardian's answer to a batch, sealed once with [`BATCH_ANSWER_TAG`]: one
/// [`SignAnswer`] per item, in item order — the answer `/v1/sign` would have sealed
/// for that item alone. One signature covers them all; each names its request id,
/// payment and statement digest, so none can be moved to another request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchAnswer {
    pub batch_id: Uuid,
    pub guardian_key: String,
    pub answers: Vec<SignAnswer>,
}

/// Stable refusal codes, listed in docs/guardians.md.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalCode {
    PaymentUnknown,
    PaymentUnconfirmed,
    StatementMismatch,
    StatementVersion,
    RateLimited,
    /// This guardian already approved something else for this payment: another
    /// statement, or the same statement under another reserve or in another form.
    /// Guardians before this name answered `already_signed_other`.
    #[serde(alias = "already_signed_other")]
    ConflictingStatement,
    RequestExpired,
    RequestReplayed,
    BadRequestSignature,
    /// The guardian's chain view could not be read (its node is down).
    ChainUnavailable,
    /// The request is well signed but unusable (key not in the policy, bad PSBT).
    BadRequest,
    /// The guardian could not record its approval durably, so it does not sign.
    Internal,
    /// The statement's Bitcoin block is older than this guardian accepts.
    StaleBlockStamp,
    /// The statement's Bitcoin block is not on this guardian's Bitcoin view (above
    /// its tip, or another hash at that height).
    UnknownBlockStamp,
    /// The request's descriptor is not one of the reserves this guardian signs for
    /// (`[policy] reserves`): another threshold, other keys, or another wrapping.
    UnknownReserve,
    /// The BIP-322 form (or a lock time, sequence or version) is not one this guardian
    /// signs statements in (`[policy] forms`).
    FormNotAllowed,
    /// A proof of funds lists a UTXO that this guardian's Bitcoin view does not have
    /// unspent and confirmed, with that amount and script.
    UtxoSetMismatch,
    /// An attestation's Bitcoin block is not on this guardian's Bitcoin view (above
    /// its tip, or another hash at that height).
    UnknownBlock,
    /// An attestation's Bitcoin block is older than this guardian accepts
    /// (`[attest] max_block_age_blocks`).
    StaleBlock,
    /// An attestation's supply entry differs from this guardian's own chain view at
    /// that block, or a chain it watches has no entry.
    SupplyMismatch,
    /// An attestation's totals, ratio or text are not the ones rebuilt from its
    /// fields, or its proof of funds cannot be built from them.
    AttestationMismatch,
    /// This guardian already approved another attestation for this Bitcoin block.
    ConflictingAttestation,
    /// An attestation names a registry version or fingerprint other than the one this
    /// guardian serves (`[attest] registry_file`).
    RegistryMismatch,
}

impl RefusalCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PaymentUnknown => "payment_unknown",
            Self::PaymentUnconfirmed => "payment_unconfirmed",
            Self::StatementMismatch => "statement_mismatch",
            Self::StatementVersion => "statement_version",
            Self::RateLimited => "rate_limited",
            Self::ConflictingStatement => "conflicting_statement",
            Self::RequestExpired => "request_expired",
            Self::RequestReplayed => "request_replayed",
            Self::BadRequestSignature => "bad_request_signature",
            Self::ChainUnavailable => "chain_unavailable",
            Self::BadRequest => "bad_request",
            Self::Internal => "internal",
            Self::StaleBlockStamp => "stale_block_stamp",
            Self::UnknownBlockStamp => "unknown_block_stamp",
            Self::UnknownReserve => "unknown_reserve",
            Self::FormNotAllowed => "form_not_allowed",
            Self::UtxoSetMismatch => "utxo_set_mismatch",
            Self::UnknownBlock => "unknown_block",
            Self::StaleBlock => "stale_block",
            Self::SupplyMismatch => "supply_mismatch",
            Self::AttestationMismatch => "attestation_mismatch",
            Self::ConflictingAttestation => "conflicting_attestation",
            Self::RegistryMismatch => "registry_mismatch",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case", deny_unknown_fields)]
pub enum Outcome {
    Approved {
        partial: PartialSignature,
        /// When the guardian first recorded this approval (earlier than `at` for a
        /// repeated request).
        recorded_at: Timestamp,
    },
    Refused {
        code: RefusalCode,
        detail: String,
    },
}

/// A guardian's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignAnswer {
    pub request_id: Uuid,
    pub guardian_key: String,
    pub payment: PaymentRef,
    /// SHA-256 of the statement text the guardian was sent, hex.
    pub statement_digest: String,
    pub outcome: Outcome,
    pub at: Timestamp,
}

fn digest(tag: &[u8], body: &[u8]) -> Message {
    let mut h = Sha256::new();
    h.update(tag);
    h.update(body);
    Message::from_digest(h.finalize().into())
}

/// Serialises `body` and signs it with `key` under `tag`.
pub fn seal<T: Serialize>(
    tag: &[u8],
    body: &T,
    key: &GuardianKey,
) -> Result<Envelope, ProtocolError> {
    let body = serde_json::to_string(body).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    let sig = SECP.sign_ecdsa(&digest(tag, body.as_bytes()), key.secret());
    Ok(Envelope {
        body,
        signer: key.public_hex(),
        signature: hex::encode(sig.serialize_der()),
    })
}

/// Checks the envelope's signer is one of `accepted`, its signature, then parses the
/// body. Returns the body and the signer.
pub fn open<T: DeserializeOwned>(
    tag: &[u8],
    envelope: &Envelope,
    accepted: &[PublicKey],
) -> Result<(T, PublicKey), ProtocolError> {
    open_limited(tag, envelope, accepted, MAX_BODY_BYTES)
}

/// [`open`] with another body size limit (batches are larger).
pub fn open_limited<T: DeserializeOwned>(
    tag: &[u8],
    envelope: &Envelope,
    accepted: &[PublicKey],
    max_body_bytes: usize,
) -> Result<(T, PublicKey), ProtocolError> {
    if envelope.body.len() > max_body_bytes {
        return Err(ProtocolError::Malformed("body too large".into()));
    }
    let signer: PublicKey = envelope
        .signer
        .parse()
        .map_err(|_| ProtocolError::Malformed("signer is not a public key".into()))?;
    if !accepted.contains(&signer) {
        return Err(ProtocolError::UnknownSigner);
    }
    let sig_bytes = hex::decode(&envelope.signature).map_err(|_| ProtocolError::BadSignature)?;
    let sig = ecdsa::Signature::from_der(&sig_bytes).map_err(|_| ProtocolError::BadSignature)?;
    SECP.verify_ecdsa(&digest(tag, envelope.body.as_bytes()), &sig, &signer)
        .map_err(|_| ProtocolError::BadSignature)?;
    let body = serde_json::from_str(&envelope.body)
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    Ok((body, signer))
}

/// SHA-256 of an envelope body, hex: tells a repeated batch from a replayed one.
pub fn body_digest(envelope: &Envelope) -> String {
    hex::encode(Sha256::digest(envelope.body.as_bytes()))
}

/// SHA-256 of a request's JSON, hex: tells a repeated request from a replayed one,
/// whether it came alone or inside a batch (both are parsed, then digested the same
/// way, so the same request gets the same answer either way).
pub fn request_digest(request: &SignRequest) -> Result<String, ProtocolError> {
    let bytes = serde_json::to_vec(request).map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_codes_read_the_old_name_and_write_the_new_one() {
        let old: RefusalCode = serde_json::from_str("\"already_signed_other\"").unwrap();
        assert_eq!(old, RefusalCode::ConflictingStatement);
        assert_eq!(
            serde_json::to_string(&old).unwrap(),
            format!("\"{}\"", old.as_str())
        );
        for code in [
            RefusalCode::UnknownReserve,
            RefusalCode::FormNotAllowed,
            RefusalCode::UtxoSetMismatch,
            RefusalCode::UnknownBlock,
            RefusalCode::StaleBlock,
            RefusalCode::SupplyMismatch,
            RefusalCode::AttestationMismatch,
            RefusalCode::ConflictingAttestation,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn seal_open_and_domain_separation() {
        let key = GuardianKey::generate();
        let env = seal(REQUEST_TAG, &serde_json::json!({"a": 1}), &key).unwrap();
        let (v, who): (serde_json::Value, _) = open(REQUEST_TAG, &env, &[key.public()]).unwrap();
        assert_eq!(v["a"], 1);
        assert_eq!(who, key.public());
        assert!(matches!(
            open::<serde_json::Value>(ANSWER_TAG, &env, &[key.public()]),
            Err(ProtocolError::BadSignature)
        ));
        let other = GuardianKey::generate();
        assert!(matches!(
            open::<serde_json::Value>(REQUEST_TAG, &env, &[other.public()]),
            Err(ProtocolError::UnknownSigner)
        ));
        let mut tampered = env.clone();
        tampered.body = r#"{"a":2}"#.into();
        assert!(matches!(
            open::<serde_json::Value>(REQUEST_TAG, &tampered, &[key.public()]),
            Err(ProtocolError::BadSignature)
        ));
    }
}
