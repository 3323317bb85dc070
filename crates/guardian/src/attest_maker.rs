//! The guardians' attestation signers seen from the pipeline: every
//! [`AttestationSigner`] is an [`AttestationMaker`], so the pipeline's attester can
//! be given the M-of-N coordinator or the local single-key signer without depending on
//! this crate.

use async_trait::async_trait;
use ubtc_core::attestation::{AttestationContent, ReserveAttestation};
use ubtc_pipeline::attest::{AttestRefusal, AttestationMaker};

use crate::coordinator_attest::{AttestRoundError, AttestationSigner};

/// Wraps any [`AttestationSigner`] for the pipeline.
pub struct SignerMaker<S>(pub S);

fn refusal(e: AttestRoundError) -> AttestRefusal {
    let mut codes = e.codes();
    if codes.is_empty() {
        let code = match &e {
            AttestRoundError::Proposal(p) => p.code().to_owned(),
            AttestRoundError::NotEnough { .. } => "not_enough_approvals".to_owned(),
            AttestRoundError::Internal(_) => "internal".to_owned(),
        };
        codes.push(("coordinator".to_owned(), code));
    }
    AttestRefusal {
        codes,
        detail: e.to_string(),
    }
}

#[async_trait]
impl<S: AttestationSigner + 'static> AttestationMaker for SignerMaker<S> {
    async fn make(
        &self,
        proposal: AttestationContent,
    ) -> Result<ReserveAttestation, AttestRefusal> {
        self.0.sign_attestation(proposal).await.map_err(refusal)
    }
}
