//! A guardian's view of the in-process dev chain, over HTTP.
//!
//! The dev chain lives inside the demo (or worker) process. [`dev_chain_router`] is
//! mounted there and exposes, read-only, one payment and its depth; a guardian process
//! reads it with [`DevChainHttpAdapter`]. Real chains give each guardian its own node
//! instead (#5); this keeps the demo honest in the meantime: guardians re-read payments
//! from a source, never trust the coordinator's copy.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use ubtc_chains::dev::DevChain;
use ubtc_chains::{ChainAdapter, ChainError, PaymentDepth, ScanCursor, ScanOutcome};
use ubtc_core::payment::{ChainBlock, Payer, TxHash};
use ubtc_core::{ChainId, ChainKind, Payment, PaymentRef, StatementMessage};

/// The JSON view of one payment.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentView {
    pub reference: PaymentRef,
    pub payer: Payer,
    /// Decimal string: JSON numbers cannot hold every u128.
    pub amount_base_units: String,
    pub raw_message_hex: String,
    pub block: ChainBlock,
    /// `pending`, `confirmed` or `gone`.
    pub depth: String,
    pub confirmations: u64,
}

/// `GET /v1/demo/chains/{chain}/payments/{tx}/{index}` over the given dev chains.
pub fn dev_chain_router(chains: HashMap<ChainId, DevChain>) -> Router {
    Router::new()
        .route(
            "/v1/demo/chains/{chain}/payments/{tx}/{index}",
            get(payment_handler),
        )
        .with_state(Arc::new(chains))
}

async fn payment_handler(
    State(chains): State<Arc<HashMap<ChainId, DevChain>>>,
    Path((chain, tx, index)): Path<(String, String, u32)>,
) -> Response {
    let not_found = |what: &str| {
        (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "code": "not_found", "message": what })),
        )
            .into_response()
    };
    let (Ok(chain), Ok(tx_hash)) = (ChainId::parse(&chain), TxHash::parse(&tx)) else {
        return not_found("no such payment");
    };
    let Some(dev) = chains.get(&chain) else {
        return not_found("no such dev chain");
    };
    let reference = PaymentRef {
        chain,
        tx_hash,
        index,
    };
    match dev.payment(&reference).await {
        Ok(Some((payment, depth))) => {
            let (depth, confirmations) = match depth {
                PaymentDepth::Pending { confirmations } => ("pending", confirmations),
                PaymentDepth::Confirmed { confirmations } => ("confirmed", confirmations),
                PaymentDepth::Gone => ("gone", 0),
            };
            Json(PaymentView {
                reference: payment.reference,
                payer: payment.payer,
                amount_base_units: payment.amount_base_units.to_string(),
                raw_message_hex: hex::encode(&payment.raw_message),
                block: payment.block,
                depth: depth.into(),
                confirmations,
            })
            .into_response()
        }
        Ok(None) => not_found("no such payment"),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "code": "unavailable", "message": e.to_string() })),
        )
            .into_response(),
    }
}

/// [`ChainAdapter::payment`] over [`dev_chain_router`]. The scanning methods are not
/// supported: a guardian only re-reads payments it is asked about.
pub struct DevChainHttpAdapter {
    chain: ChainId,
    base_url: String,
    client: reqwest::Client,
}

impl DevChainHttpAdapter {
    pub fn new(chain: ChainId, base_url: &str) -> Result<Self, ChainError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| ChainError::Misconfigured(e.to_string()))?;
        Ok(Self {
            chain,
            base_url: base_url.trim_end_matches('/').to_owned(),
            client,
        })
    }

    fn unsupported(what: &str) -> ChainError {
        ChainError::Misconfigured(format!("{what} is not supported for guardian use"))
    }
}

#[async_trait]
impl ChainAdapter for DevChainHttpAdapter {
    fn chain(&self) -> &ChainId {
        &self.chain
    }

    fn kind(&self) -> ChainKind {
        ChainKind::Dev
    }

    async fn head(&self) -> Result<ChainBlock, ChainError> {
        Err(Self::unsupported("head"))
    }

    async fn scan(
        &self,
        _cursor: Option<&ScanCursor>,
        _max_blocks: u64,
    ) -> Result<ScanOutcome, ChainError> {
        Err(Self::unsupported("scan"))
    }

    async fn depth(
        &self,
        payment: &PaymentRef,
        _seen_in: &ChainBlock,
    ) -> Result<PaymentDepth, ChainError> {
        Ok(self
            .payment(payment)
            .await?
            .map_or(PaymentDepth::Gone, |(_, d)| d))
    }

    async fn payment(
        &self,
        payment: &PaymentRef,
    ) -> Result<Option<(Payment, PaymentDepth)>, ChainError> {
        if payment.chain != self.chain {
            return Ok(None);
        }
        let url = format!(
            "{}/v1/demo/chains/{}/payments/{}/{}",
            self.base_url, payment.chain, payment.tx_hash, payment.index
        );
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| ChainError::Unavailable(e.to_string()))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(ChainError::Unavailable(format!(
                "dev chain endpoint answered {}",
                resp.status()
            )));
        }
        let view: PaymentView = resp
            .json()
            .await
            .map_err(|e| ChainError::BadResponse(e.to_string()))?;
        let bad = |why: &str| ChainError::BadResponse(why.to_owned());
        if view.reference != *payment {
            return Err(bad("the endpoint answered for another payment"));
        }
        let raw = hex::decode(&view.raw_message_hex).map_err(|_| bad("message is not hex"))?;
        let amount = view
            .amount_base_units
            .parse::<u128>()
            .map_err(|_| bad("amount is not a decimal integer"))?;
        let depth = match view.depth.as_str() {
            "pending" => PaymentDepth::Pending {
                confirmations: view.confirmations,
            },
            "confirmed" => PaymentDepth::Confirmed {
                confirmations: view.confirmations,
            },
            "gone" => PaymentDepth::Gone,
            _ => return Err(bad("unknown depth")),
        };
        Ok(Some((
            Payment {
                reference: view.reference,
                payer: view.payer,
                amount_base_units: amount,
                message: StatementMessage::parse(&raw),
                raw_message: raw,
                block: view.block,
                callback_url: None,
            },
            depth,
        )))
    }
}
