//! A guardian's view of the in-process dev chain, over HTTP.
//!
//! The dev chain lives inside the demo (or worker) process. [`dev_chain_router`] is
//! mounted there and exposes, read-only, one payment and its depth; a guardian process
//! reads it with [`DevChainHttpAdapter`]. On real chains each guardian reads its own
//! node instead (`kind = "evm"` or `"solana"`, any [`ChainAdapter`] wrapped in
//! [`EachPayment`]); this keeps the demo honest in the same way: guardians re-read
//! payments from a source, never trust the coordinator's copy.

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

/// `GET /v1/demo/chains/{chain}/payments/{tx}/{index}` and, for a guardian's batch,
/// `POST /v1/demo/chains/{chain}/payments` (`{"payments": [{tx_hash, index}…]}` →
/// `{"payments": [view or null…]}` in the same order) over the given dev chains.
pub fn dev_chain_router(chains: HashMap<ChainId, DevChain>) -> Router {
    Router::new()
        .route(
            "/v1/demo/chains/{chain}/payments/{tx}/{index}",
            get(payment_handler),
        )
        .route(
            "/v1/demo/chains/{chain}/payments",
            axum::routing::post(payments_handler),
        )
        .with_state(Arc::new(chains))
}

/// Most payments one batch read may ask for.
pub const MAX_BATCH_READ: usize = crate::protocol::MAX_BATCH_ITEMS;

/// One payment asked for in a batch read.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentKey {
    pub tx_hash: TxHash,
    pub index: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsQuery {
    pub payments: Vec<PaymentKey>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsView {
    /// In query order; `null` for a payment the chain does not have.
    pub payments: Vec<Option<PaymentView>>,
}

fn view_of(payment: Payment, depth: PaymentDepth) -> PaymentView {
    let (depth, confirmations) = match depth {
        PaymentDepth::Pending { confirmations } => ("pending", confirmations),
        PaymentDepth::Confirmed { confirmations } => ("confirmed", confirmations),
        PaymentDepth::Gone => ("gone", 0),
    };
    PaymentView {
        reference: payment.reference,
        payer: payment.payer,
        amount_base_units: payment.amount_base_units.to_string(),
        raw_message_hex: hex::encode(&payment.raw_message),
        block: payment.block,
        depth: depth.into(),
        confirmations,
    }
}

async fn payments_handler(
    State(chains): State<Arc<HashMap<ChainId, DevChain>>>,
    Path(chain): Path<String>,
    Json(query): Json<PaymentsQuery>,
) -> Response {
    let error = |status: StatusCode, code: &str, what: &str| {
        (
            status,
            Json(serde_json::json!({ "code": code, "message": what })),
        )
            .into_response()
    };
    let Some((chain, dev)) = ChainId::parse(&chain)
        .ok()
        .and_then(|c| chains.get(&c).map(|d| (c, d)))
    else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such dev chain");
    };
    if query.payments.len() > MAX_BATCH_READ {
        return error(
            StatusCode::BAD_REQUEST,
            "too_many_payments",
            "too many payments in one read",
        );
    }
    let mut out = Vec::with_capacity(query.payments.len());
    for key in query.payments {
        let reference = PaymentRef {
            chain: chain.clone(),
            tx_hash: key.tx_hash,
            index: key.index,
        };
        match dev.payment(&reference).await {
            Ok(found) => out.push(found.map(|(p, d)| view_of(p, d))),
            Err(e) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    &e.to_string(),
                )
            }
        }
    }
    Json(PaymentsView { payments: out }).into_response()
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
        Ok(Some((payment, depth))) => Json(view_of(payment, depth)).into_response(),
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
        from_view(view, payment).map(Some)
    }
}

/// Checks a view is for `payment` and turns it back into the domain type.
fn from_view(
    view: PaymentView,
    payment: &PaymentRef,
) -> Result<(Payment, PaymentDepth), ChainError> {
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
    Ok((
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
    ))
}

/// What a guardian reads payments from: its view of one chain, asked for a whole
/// batch at once (one round trip to the node instead of one per payment where the
/// source can do that).
#[async_trait]
pub trait PaymentSource: Send + Sync + 'static {
    /// Each payment as [`ChainAdapter::payment`] would return it, in order.
    async fn payments(
        &self,
        payments: &[&PaymentRef],
    ) -> Vec<Result<Option<(Payment, PaymentDepth)>, ChainError>>;
}

/// Any [`ChainAdapter`] as a [`PaymentSource`]: the payments are read concurrently,
/// one `payment` call each.
pub struct EachPayment(pub Arc<dyn ChainAdapter>);

#[async_trait]
impl PaymentSource for EachPayment {
    async fn payments(
        &self,
        payments: &[&PaymentRef],
    ) -> Vec<Result<Option<(Payment, PaymentDepth)>, ChainError>> {
        futures::future::join_all(payments.iter().map(|p| self.0.payment(p))).await
    }
}

#[async_trait]
impl PaymentSource for DevChainHttpAdapter {
    async fn payments(
        &self,
        payments: &[&PaymentRef],
    ) -> Vec<Result<Option<(Payment, PaymentDepth)>, ChainError>> {
        // ChainError is not Clone: every payment gets its own copy of the failure.
        let all = |e: ChainError| {
            let (unavailable, text) = match e {
                ChainError::Unavailable(m) => (true, m),
                ChainError::BadResponse(m) => (false, m),
                other => (false, other.to_string()),
            };
            payments
                .iter()
                .map(|_| {
                    Err(if unavailable {
                        ChainError::Unavailable(text.clone())
                    } else {
                        ChainError::BadResponse(text.clone())
                    })
                })
                .collect()
        };
        let mut out: Vec<Result<Option<(Payment, PaymentDepth)>, ChainError>> =
            Vec::with_capacity(payments.len());
        for chunk in payments.chunks(MAX_BATCH_READ) {
            let query = PaymentsQuery {
                payments: chunk
                    .iter()
                    .map(|p| PaymentKey {
                        tx_hash: p.tx_hash.clone(),
                        index: p.index,
                    })
                    .collect(),
            };
            let url = format!("{}/v1/demo/chains/{}/payments", self.base_url, self.chain);
            let resp = match self.client.post(&url).json(&query).send().await {
                Ok(r) => r,
                Err(e) => return all(ChainError::Unavailable(e.to_string())),
            };
            if !resp.status().is_success() {
                return all(ChainError::Unavailable(format!(
                    "dev chain endpoint answered {}",
                    resp.status()
                )));
            }
            let view: PaymentsView = match resp.json().await {
                Ok(v) => v,
                Err(e) => return all(ChainError::BadResponse(e.to_string())),
            };
            if view.payments.len() != chunk.len() {
                return all(ChainError::BadResponse(
                    "the endpoint answered for other payments".into(),
                ));
            }
            for (found, payment) in view.payments.into_iter().zip(chunk) {
                out.push(if payment.chain != self.chain {
                    Ok(None)
                } else {
                    found.map(|v| from_view(v, payment)).transpose()
                });
            }
        }
        out
    }
}
