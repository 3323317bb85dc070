//! A small JSON-RPC 2.0 client over HTTP with timeouts and retry with back-off.
//!
//! Transport failures, timeouts, HTTP 429/5xx and the JSON-RPC "limit exceeded" code
//! are transient: retried here a few times, then reported as
//! [`ChainError::Unavailable`] so the caller's loop backs off further. Any other
//! JSON-RPC error or a malformed answer is [`ChainError::BadResponse`] at once:
//! asking again would get the same answer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use crate::ChainError;

/// JSON-RPC error code that providers use for rate and range limits (EIP-1474).
const RPC_LIMIT_EXCEEDED: i64 = -32005;

/// How the client retries transient failures.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Tries per call, the first included.
    pub attempts: u32,
    pub first_backoff: Duration,
    pub max_backoff: Duration,
    /// Per HTTP request, connection included.
    pub timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 4,
            first_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
        }
    }
}

/// Builds an HTTP client on the ring TLS provider, installed once per process
/// (reqwest panics at client construction when no provider is installed).
pub(crate) fn http_client(timeout: Duration) -> Result<reqwest::Client, ChainError> {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // Err means another part of the process installed a provider first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .build()
        .map_err(|e| ChainError::Misconfigured(format!("cannot build HTTP client: {e}")))
}

/// True for HTTP statuses worth retrying.
pub(crate) fn status_is_transient(status: reqwest::StatusCode) -> bool {
    status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

pub(crate) fn backoff_for(policy: &RetryPolicy, attempt: u32) -> Duration {
    let factor = 1u32 << attempt.min(16);
    policy
        .first_backoff
        .saturating_mul(factor)
        .min(policy.max_backoff)
}

#[derive(Deserialize)]
struct RpcResponse {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<RpcErrorObject>,
}

#[derive(Deserialize, Debug)]
struct RpcErrorObject {
    code: i64,
    message: String,
}

enum Attempt {
    Retry(String),
    Fail(ChainError),
}

/// A JSON-RPC endpoint. Cheap to share behind an `Arc`; requests may run concurrently.
pub struct RpcClient {
    http: reqwest::Client,
    url: String,
    policy: RetryPolicy,
    next_id: AtomicU64,
}

impl RpcClient {
    pub fn new(url: &str, policy: RetryPolicy) -> Result<Self, ChainError> {
        Ok(Self {
            http: http_client(policy.timeout)?,
            url: url.to_owned(),
            policy,
            next_id: AtomicU64::new(1),
        })
    }

    /// Calls `method` and decodes its result (JSON `null` decodes into `Option::None`).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, ChainError> {
        let mut last = String::new();
        for attempt in 0..self.policy.attempts.max(1) {
            if attempt > 0 {
                let wait = backoff_for(&self.policy, attempt - 1);
                tracing::debug!(method, attempt, wait_ms = wait.as_millis() as u64, error = %last, "retrying RPC call");
                tokio::time::sleep(wait).await;
            }
            match self.attempt(method, &params).await {
                Ok(value) => {
                    return serde_json::from_value(value).map_err(|e| {
                        ChainError::BadResponse(format!("{method}: unexpected result shape: {e}"))
                    })
                }
                Err(Attempt::Fail(e)) => return Err(e),
                Err(Attempt::Retry(why)) => last = why,
            }
        }
        Err(ChainError::Unavailable(format!(
            "{method}: {last} (after {} tries)",
            self.policy.attempts.max(1)
        )))
    }

    async fn attempt(&self, method: &str, params: &Value) -> Result<Value, Attempt> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let body =
            serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let response = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| Attempt::Retry(format!("request failed: {e}")))?;
        let status = response.status();
        if status_is_transient(status) {
            return Err(Attempt::Retry(format!("HTTP {status}")));
        }
        let bytes = response
            .bytes()
            .await
            .map_err(|e| Attempt::Retry(format!("reading the answer failed: {e}")))?;
        if !status.is_success() {
            return Err(Attempt::Fail(ChainError::BadResponse(format!(
                "{method}: HTTP {status}"
            ))));
        }
        let parsed: RpcResponse = serde_json::from_slice(&bytes).map_err(|e| {
            Attempt::Fail(ChainError::BadResponse(format!(
                "{method}: not a JSON-RPC answer: {e}"
            )))
        })?;
        if let Some(err) = parsed.error {
            if err.code == RPC_LIMIT_EXCEEDED {
                return Err(Attempt::Retry(format!("limit exceeded: {}", err.message)));
            }
            return Err(Attempt::Fail(ChainError::BadResponse(format!(
                "{method}: error {}: {}",
                err.code, err.message
            ))));
        }
        Ok(parsed.result.unwrap_or(Value::Null))
    }
}
