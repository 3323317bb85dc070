//! The life of a validation (DESIGN.md §4), with every transition checked here.
//!
//! ```text
//! detected ──► confirmed ──► queued ──► signing ──► signed ──► delivered
//!     │            │            │          │
//!     └► dropped   └► rejected  └► delayed └► failed (dead letter, after retries)
//! ```
//!
//! Besides the arrows drawn above: a `delayed` validation is claimed for signing
//! once its not-before time has passed; a `signing` one whose attempt failed (or
//! whose worker's lease expired) goes back to `queued` with back-off; a `failed`
//! one may be re-queued by an operator; a `dropped` one whose transaction is mined
//! again goes back to `detected` (below). `rejected` and `delivered` are final.
//!
//! **Re-mined payments.** A payment dropped in a reorg is often mined again (the same
//! signed transaction, re-broadcast or still in mempools). It is the same payment —
//! same `(chain, tx hash, index)`, same payer, amount and message — so it takes back
//! the same validation (`dropped → detected`, with its new block) instead of a new
//! validation linked to the old one: the payment stays unique by that key, the
//! requester's status URL and webhook target keep working, and nothing could have been
//! signed meanwhile (a dropped validation was never confirmed). It then needs its
//! confirmations again, like any detected payment.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Identifier of a validation (a UUIDv7, so ids sort by creation time).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ValidationId(pub Uuid);

impl ValidationId {
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }
}

impl Default for ValidationId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ValidationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

impl FromStr for ValidationId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValidationStatus {
    /// Seen on chain, not yet deep enough.
    Detected,
    /// Deep enough by the chain's rule; about to be checked and queued.
    Confirmed,
    /// Waiting for a worker.
    Queued,
    /// Rate limited: waits until its not-before time (the "delay warning").
    Delayed,
    /// Claimed by a worker holding a lease.
    Signing,
    /// Signed; the proof bundle is stored.
    Signed,
    /// The requester has been told (webhook delivered or no webhook wanted).
    Delivered,
    /// Disappeared in a reorg before confirmation. Never signed while dropped; goes
    /// back to `detected` if its transaction is mined again.
    Dropped,
    /// Confirmed but not acceptable (below the fee, bad message). Never signed.
    Rejected,
    /// Dead letter: signing did not succeed after the last retry.
    Failed,
}

pub const ALL_STATUSES: [ValidationStatus; 10] = [
    ValidationStatus::Detected,
    ValidationStatus::Confirmed,
    ValidationStatus::Queued,
    ValidationStatus::Delayed,
    ValidationStatus::Signing,
    ValidationStatus::Signed,
    ValidationStatus::Delivered,
    ValidationStatus::Dropped,
    ValidationStatus::Rejected,
    ValidationStatus::Failed,
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a validation cannot go from {from} to {to}")]
pub struct TransitionError {
    pub from: ValidationStatus,
    pub to: ValidationStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown validation status {0:?}")]
pub struct UnknownStatus(pub String);

impl ValidationStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Detected => "detected",
            Self::Confirmed => "confirmed",
            Self::Queued => "queued",
            Self::Delayed => "delayed",
            Self::Signing => "signing",
            Self::Signed => "signed",
            Self::Delivered => "delivered",
            Self::Dropped => "dropped",
            Self::Rejected => "rejected",
            Self::Failed => "failed",
        }
    }

    /// True for states no transition leaves.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Delivered | Self::Rejected)
    }

    /// True once a proof exists.
    pub fn is_signed(self) -> bool {
        matches!(self, Self::Signed | Self::Delivered)
    }

    pub fn can_transition_to(self, to: ValidationStatus) -> bool {
        use ValidationStatus::*;
        matches!(
            (self, to),
            (Detected, Confirmed)
                | (Detected, Dropped)
                | (Dropped, Detected)
                | (Confirmed, Queued)
                | (Confirmed, Rejected)
                | (Queued, Delayed)
                | (Queued, Signing)
                | (Delayed, Signing)
                | (Delayed, Queued)
                | (Signing, Signed)
                | (Signing, Queued)
                | (Signing, Failed)
                | (Signed, Delivered)
                | (Failed, Queued)
        )
    }

    /// Returns `to` when the move is allowed, else an error naming both states.
    pub fn transition(self, to: ValidationStatus) -> Result<ValidationStatus, TransitionError> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(TransitionError { from: self, to })
        }
    }
}

impl fmt::Display for ValidationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ValidationStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL_STATUSES
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why a validation was rejected or failed: a stable code and a human sentence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: String,
    pub detail: String,
}

impl Reason {
    pub fn new(code: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            detail: detail.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ValidationStatus::*;
    use super::*;

    #[test]
    fn happy_path_is_allowed() {
        let mut s = Detected;
        for next in [
            Confirmed, Queued, Delayed, Signing, Queued, Signing, Signed, Delivered,
        ] {
            s = s.transition(next).unwrap();
        }
        assert_eq!(s, Delivered);
    }

    #[test]
    fn final_states_go_nowhere() {
        for from in ALL_STATUSES.into_iter().filter(|s| s.is_final()) {
            for to in ALL_STATUSES {
                assert!(from.transition(to).is_err(), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_dropped_payment_only_comes_back_as_detected() {
        for to in ALL_STATUSES {
            assert_eq!(
                Dropped.can_transition_to(to),
                to == Detected,
                "dropped -> {to}"
            );
        }
        // Back to detected, it needs its confirmations again before anything else.
        let s = Dropped.transition(Detected).unwrap();
        assert!(s.transition(Signing).is_err() && s.transition(Queued).is_err());
    }

    #[test]
    fn no_signing_without_confirmation() {
        for from in [Detected, Dropped, Rejected] {
            assert_eq!(
                from.transition(Signing),
                Err(TransitionError { from, to: Signing })
            );
            assert!(from.transition(Signed).is_err());
        }
        // A signed validation is never signed again nor re-queued.
        assert!(Signed.transition(Signing).is_err());
        assert!(Signed.transition(Queued).is_err());
        assert!(Delivered.transition(Signed).is_err());
    }

    #[test]
    fn status_names_round_trip() {
        for s in ALL_STATUSES {
            assert_eq!(s.as_str().parse::<ValidationStatus>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        assert!("signedx".parse::<ValidationStatus>().is_err());
    }
}
