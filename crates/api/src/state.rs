//! What the handlers share: the store, the configured chains, the optional demo hook.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use ubtc_core::payment::{Payer, TxHash};
use ubtc_core::{ChainId, ChainKind};
use ubtc_store::Store;

/// Largest request body accepted by default. The only body the public API reads is a
/// demo payment (a short message), so this is generous.
pub const BODY_LIMIT_BYTES_DEFAULT: usize = 16 * 1024;
/// How long a request may take before it is abandoned with `timeout`.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;

/// The state of the public router. Cheap to clone (all `Arc`s).
#[derive(Clone)]
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub chains: Arc<Vec<ChainInfo>>,
    /// Set only by `ubtc demo`: mounts `POST /v1/demo/payments`.
    pub demo: Option<Arc<dyn DemoPayments>>,
    pub limits: ApiLimits,
    /// Renders `/metrics`; `None` answers it with 404.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Per-route metric handles, made once (set with `metrics`: only handles of our
    /// own recorder are worth keeping).
    pub(crate) http_metrics: Option<Arc<crate::metrics::HttpMetrics>>,
    /// Per-IP and per-API-key limits; `None`: unlimited.
    pub rate_limiter: Option<Arc<dyn crate::ratelimit::RequestLimiter>>,
    /// Caches answers of a few read routes; `None`: no cache.
    pub response_cache: Option<Arc<dyn crate::cache::ResponseCache>>,
    /// A reserve snapshot older than this is shown stale (and not healthy) even if it
    /// was fresh when taken: the snapshotter may have stopped. `None`: the stored flag.
    pub reserve_max_age_ms: Option<i64>,
    /// Operator key and URL check of the webhook administration routes; `None`:
    /// those routes answer `forbidden`.
    pub webhook_admin: Option<crate::webhooks::WebhookAdmin>,
    /// Accounts and access tokens of the admin API (`[admin]`); `None`: only the
    /// bootstrap operator key (if any) works.
    pub admin: Option<std::sync::Arc<crate::admin::AdminAuth>>,
    /// Block-explorer link of reserve addresses on the dashboard (`{address}` is
    /// replaced, else the address is appended); `None`: no link.
    pub explorer_url: Option<String>,
    /// Deposits, mints, burns and releases (`/v1/admin/{deposits,mints,burns,releases}`);
    /// `None`: the requests answer `reserve_ops_disabled` (lists still read the store).
    pub reserve_ops: Option<Arc<ubtc_pipeline::reserve_ops::ReserveOps>>,
}

impl ApiState {
    pub fn new(store: Arc<dyn Store>, chains: Vec<ChainInfo>) -> Self {
        Self {
            store,
            chains: Arc::new(chains),
            demo: None,
            limits: ApiLimits::default(),
            metrics: None,
            http_metrics: None,
            rate_limiter: None,
            response_cache: None,
            reserve_max_age_ms: None,
            webhook_admin: None,
            admin: None,
            explorer_url: None,
            reserve_ops: None,
        }
    }

    pub fn with_reserve_ops(mut self, ops: Arc<ubtc_pipeline::reserve_ops::ReserveOps>) -> Self {
        self.reserve_ops = Some(ops);
        self
    }

    pub fn with_admin(mut self, admin: crate::admin::AdminAuth) -> Self {
        self.admin = Some(std::sync::Arc::new(admin));
        self
    }

    pub fn with_webhook_admin(mut self, admin: crate::webhooks::WebhookAdmin) -> Self {
        self.webhook_admin = Some(admin);
        self
    }

    pub fn with_explorer_url(mut self, url: String) -> Self {
        self.explorer_url = Some(url);
        self
    }

    pub fn with_reserve_max_age_ms(mut self, max_age_ms: i64) -> Self {
        self.reserve_max_age_ms = Some(max_age_ms);
        self
    }

    pub fn with_metrics(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Self {
        self.metrics = Some(handle);
        self.http_metrics = Some(Arc::new(crate::metrics::HttpMetrics::default()));
        self
    }

    pub fn with_response_cache(mut self, cache: Arc<dyn crate::cache::ResponseCache>) -> Self {
        self.response_cache = Some(cache);
        self
    }

    pub fn with_rate_limiter(mut self, limiter: Arc<dyn crate::ratelimit::RequestLimiter>) -> Self {
        self.rate_limiter = Some(limiter);
        self
    }

    pub fn with_demo(mut self, demo: Arc<dyn DemoPayments>) -> Self {
        self.demo = Some(demo);
        self
    }

    pub fn with_limits(mut self, limits: ApiLimits) -> Self {
        self.limits = limits;
        self
    }

    pub fn chain(&self, name: &ChainId) -> Option<&ChainInfo> {
        self.chains.iter().find(|c| &c.name == name)
    }
}

/// Request bounds applied by the router's layers.
#[derive(Clone, Copy, Debug)]
pub struct ApiLimits {
    pub body_limit_bytes: usize,
    pub request_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            body_limit_bytes: BODY_LIMIT_BYTES_DEFAULT,
            request_timeout: Duration::from_millis(REQUEST_TIMEOUT_MS_DEFAULT),
        }
    }
}

/// A configured payment chain as the API shows it (`GET /v1/chains`). Built by the
/// binary from its configuration; this crate only displays it and uses `name`,
/// `kind` and `native_unit` to label amounts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainInfo {
    pub name: ChainId,
    pub kind: ChainKind,
    /// Smallest native unit amounts are counted in (`wei`, `lamports`, …).
    pub native_unit: String,
    /// Minimum fee for a validation, in `native_unit`.
    #[serde(with = "ubtc_core::amount::u128_string")]
    pub min_payment_base_units: u128,
    /// Block depth (or the chain's rule) before a payment counts.
    pub confirmations: u64,
    /// Where to pay with a plain transfer, when the chain accepts that.
    pub payment_address: Option<String>,
    /// The payment contract (EVM) or program (Solana), when payments go through one.
    pub payment_contract: Option<String>,
    /// The wrapped-BTC token on this chain, when it is deployed there.
    pub token: Option<TokenInfo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Token contract (EVM) or mint (Solana) address.
    pub address: String,
    pub symbol: String,
    pub decimals: u8,
}

/// Submits payments to the in-process development chain of `ubtc demo`.
///
/// Defined here (not in `chains`) so that the API depends on a small trait, not on
/// the dev chain: the binary wires the real implementation in.
#[async_trait]
pub trait DemoPayments: Send + Sync + 'static {
    /// Sends one payment and returns where it landed. The payment then goes through
    /// the normal pipeline (detection, confirmation, signing) like any other.
    async fn submit(&self, req: DemoPaymentRequest)
        -> Result<DemoPaymentReceipt, DemoPaymentError>;
}

/// A demo payment, parsed and checked at the API's edge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DemoPaymentRequest {
    /// A configured chain of kind `dev`.
    pub chain: ChainId,
    /// The message bytes to attach, as given. Not checked here: a demo may show a
    /// rejection for a bad message.
    pub message: Vec<u8>,
    /// Paying account; the dev chain picks one when absent.
    pub payer: Option<Payer>,
    /// Amount in base units; the dev chain pays the chain's minimum when absent.
    pub amount_base_units: Option<u128>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DemoPaymentReceipt {
    pub chain: ChainId,
    pub tx_hash: TxHash,
    pub index: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum DemoPaymentError {
    /// The dev chain refused the payment (unknown payer, not enough funds, …). The
    /// message is shown to the client.
    #[error("payment refused: {0}")]
    Refused(String),
    /// The dev chain is not running or did not answer.
    #[error("dev chain unavailable: {0}")]
    Unavailable(String),
    #[error("dev chain failed")]
    Other(#[source] Box<dyn std::error::Error + Send + Sync>),
}
