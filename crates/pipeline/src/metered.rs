//! Metrics of signing rounds, around any [`ReserveSigner`] (the local key or the
//! guardians' coordinator) without touching either.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use ubtc_core::Statement;

use crate::signer::{ReserveSigner, SignFailure, SignedStatement};

/// Histogram by `outcome` (`signed`, `retry`, `refused`): seconds of one signing round
/// (a guardian round under `signer.kind = "guardians"`).
pub const ROUND_SECONDS: &str = "ubtc_signing_round_seconds";
/// Counter by `outcome` (`retry`, `refused`) and `code` (the reason's stable code,
/// e.g. a quorum not reached or a guardian's refusal).
pub const FAILURES_TOTAL: &str = "ubtc_signing_failures_total";
/// Histogram: guardian approvals gathered per successful round.
pub const APPROVALS: &str = "ubtc_signing_round_approvals";

/// Times each round and counts its outcome; signs exactly as the inner signer does.
pub struct MeteredSigner {
    inner: Arc<dyn ReserveSigner>,
}

impl MeteredSigner {
    pub fn new(inner: Arc<dyn ReserveSigner>) -> Self {
        Self { inner }
    }
}

#[async_trait]
impl ReserveSigner for MeteredSigner {
    async fn sign(&self, statement: &Statement) -> Result<SignedStatement, SignFailure> {
        let started = Instant::now();
        let result = self.inner.sign(statement).await;
        let seconds = started.elapsed().as_secs_f64();
        match &result {
            Ok(signed) => {
                metrics::histogram!(ROUND_SECONDS, "outcome" => "signed").record(seconds);
                metrics::histogram!(APPROVALS).record(signed.approvals.len() as f64);
            }
            Err(failure) => {
                let (outcome, reason) = match failure {
                    SignFailure::Retry(r) => ("retry", r),
                    SignFailure::Fatal(r) => ("refused", r),
                };
                metrics::histogram!(ROUND_SECONDS, "outcome" => outcome).record(seconds);
                metrics::counter!(FAILURES_TOTAL, "outcome" => outcome, "code" => reason.code.clone())
                    .increment(1);
            }
        }
        result
    }

    fn reserves(&self) -> Vec<(String, String)> {
        self.inner.reserves()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ubtc_core::payment::{Payer, TxHash};
    use ubtc_core::validation::Reason;
    use ubtc_core::{BlockStamp, ChainId, PaymentRef, StatementMessage};

    /// A signer that refuses: the round's outcome is what is measured here, and the
    /// real signers are tested in their own crates.
    struct Refusing(SignFailure);

    #[async_trait]
    impl ReserveSigner for Refusing {
        async fn sign(&self, _: &Statement) -> Result<SignedStatement, SignFailure> {
            Err(self.0.clone())
        }
        fn reserves(&self) -> Vec<(String, String)> {
            vec![]
        }
    }

    #[test]
    fn rounds_are_timed_and_failures_counted_by_reason() {
        let statement = Statement::new(
            PaymentRef {
                chain: ChainId::parse("dev").unwrap(),
                tx_hash: TxHash::parse(&format!("0x{:064x}", 1)).unwrap(),
                index: 0,
            },
            Payer::parse("0xpayer").unwrap(),
            StatementMessage::parse(b"hi").unwrap(),
            BlockStamp::new(1, &"00".repeat(32)).unwrap(),
            uuid::Uuid::new_v4(),
        );
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            for failure in [
                SignFailure::Retry(Reason::new("quorum_not_reached", "1 of 2")),
                SignFailure::Retry(Reason::new("quorum_not_reached", "0 of 2")),
                SignFailure::Fatal(Reason::new("guardian_refused", "policy")),
            ] {
                let signer = MeteredSigner::new(Arc::new(Refusing(failure)));
                assert!(rt.block_on(signer.sign(&statement)).is_err());
            }
        });
        let text = handle.render();
        assert!(
            text.contains(
                "ubtc_signing_failures_total{outcome=\"retry\",code=\"quorum_not_reached\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ubtc_signing_failures_total{outcome=\"refused\",code=\"guardian_refused\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains("ubtc_signing_round_seconds_count{outcome=\"retry\"} 2"),
            "{text}"
        );
    }
}
