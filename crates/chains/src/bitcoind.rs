//! Bitcoin through Bitcoin Core's JSON-RPC: `getblockcount`, `getblockhash`, and
//! `scantxoutset` with `addr(…)` descriptors for reserve UTXOs (no wallet, no index
//! needed; the scan reads the whole UTXO set, so it is slow: seconds to minutes).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use ubtc_core::bundle::Utxo;
use ubtc_core::BlockStamp;

use crate::evm::rpc::{backoff_for, http_client, RetryPolicy};
use crate::{BitcoinBackend, ChainError};

/// `RPC_IN_WARMUP`: the node is starting.
const RPC_IN_WARMUP: i64 = -28;
/// `RPC_INVALID_PARAMETER`, which `scantxoutset` also returns for "scan already in
/// progress" (another client's scan): worth retrying.
const RPC_INVALID_PARAMETER: i64 = -8;

/// Credentials for the node's RPC (`rpcuser`/`rpcpassword` or the cookie's contents).
#[derive(Clone)]
pub struct RpcAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for RpcAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpcAuth")
            .field("user", &self.user)
            .field("password", &"[redacted]")
            .finish()
    }
}

pub struct BitcoinCoreBackend {
    http: reqwest::Client,
    url: String,
    auth: Option<RpcAuth>,
    retry: RetryPolicy,
    next_id: AtomicU64,
}

#[derive(Deserialize)]
struct CoreResponse {
    #[serde(default)]
    result: Option<Value>,
    #[serde(default)]
    error: Option<CoreError>,
}

#[derive(Deserialize)]
struct CoreError {
    code: i64,
    message: String,
}

#[derive(Deserialize)]
struct ScanResult {
    success: bool,
    unspents: Vec<ScanUnspent>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ScanUnspent {
    txid: String,
    vout: u32,
    script_pub_key: String,
    /// BTC, as a JSON number with up to 8 decimals.
    amount: f64,
}

/// Converts Core's BTC amount to satoshis. An f64 holds every multiple of 1e-8 BTC up
/// to 21 million BTC within half a satoshi (2.1e15 < 2^53), so rounding is exact.
fn btc_to_sats(btc: f64) -> Result<u64, ChainError> {
    if !(0.0..=21_000_000.0).contains(&btc) {
        return Err(ChainError::BadResponse(format!(
            "amount {btc} BTC out of range"
        )));
    }
    Ok((btc * 100_000_000.0).round() as u64)
}

impl BitcoinCoreBackend {
    /// `timeout` must cover a full `scantxoutset` (minutes on mainnet).
    pub fn new(url: &str, auth: Option<RpcAuth>, retry: RetryPolicy) -> Result<Self, ChainError> {
        Ok(Self {
            http: http_client(retry.timeout)?,
            url: url.to_owned(),
            auth,
            retry,
            next_id: AtomicU64::new(1),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: Value,
    ) -> Result<T, ChainError> {
        let mut last = String::new();
        for attempt in 0..self.retry.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(backoff_for(&self.retry, attempt - 1)).await;
            }
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .http
                .post(&self.url)
                .json(&json!({"jsonrpc": "1.0", "id": id, "method": method, "params": params}));
            if let Some(auth) = &self.auth {
                request = request.basic_auth(&auth.user, Some(&auth.password));
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("request failed: {e}");
                    continue;
                }
            };
            let status = response.status();
            if status == reqwest::StatusCode::UNAUTHORIZED
                || status == reqwest::StatusCode::FORBIDDEN
            {
                return Err(ChainError::Misconfigured(format!(
                    "bitcoind refused the RPC credentials (HTTP {status})"
                )));
            }
            let bytes = match response.bytes().await {
                Ok(b) => b,
                Err(e) => {
                    last = format!("reading the answer failed: {e}");
                    continue;
                }
            };
            // Core answers RPC errors with HTTP 500 (or 404 for unknown methods) and a
            // JSON body: read the body before judging the status.
            let parsed: Option<CoreResponse> = serde_json::from_slice(&bytes).ok();
            match parsed {
                Some(CoreResponse {
                    error: Some(err), ..
                }) => {
                    if err.code == RPC_IN_WARMUP
                        || err.code == RPC_INVALID_PARAMETER && err.message.contains("in progress")
                    {
                        last = format!("error {}: {}", err.code, err.message);
                        continue;
                    }
                    return Err(ChainError::BadResponse(format!(
                        "{method}: error {}: {}",
                        err.code, err.message
                    )));
                }
                Some(CoreResponse { result, .. }) if status.is_success() => {
                    return serde_json::from_value(result.unwrap_or(Value::Null)).map_err(|e| {
                        ChainError::BadResponse(format!("{method}: unexpected result shape: {e}"))
                    });
                }
                _ if status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS =>
                {
                    last = format!("HTTP {status}");
                }
                _ => {
                    return Err(ChainError::BadResponse(format!(
                        "{method}: HTTP {status} without a JSON-RPC answer"
                    )))
                }
            }
        }
        Err(ChainError::Unavailable(format!(
            "bitcoind {method}: {last}"
        )))
    }
}

#[async_trait]
impl BitcoinBackend for BitcoinCoreBackend {
    async fn tip(&self) -> Result<BlockStamp, ChainError> {
        let height: u32 = self.call("getblockcount", json!([])).await?;
        let hash = self.block_hash(height).await?;
        Ok(BlockStamp { height, hash })
    }

    async fn block_hash(&self, height: u32) -> Result<String, ChainError> {
        let hash: String = self.call("getblockhash", json!([height])).await?;
        if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(hash.to_ascii_lowercase())
        } else {
            Err(ChainError::BadResponse(format!("getblockhash: {hash:?}")))
        }
    }

    async fn address_utxos(&self, address: &str) -> Result<Vec<Utxo>, ChainError> {
        // The address goes inside a descriptor: refuse anything that could change it.
        if address.is_empty() || !address.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ChainError::Misconfigured(format!(
                "not a Bitcoin address: {address:?}"
            )));
        }
        let scan: ScanResult = self
            .call(
                "scantxoutset",
                json!(["start", [format!("addr({address})")]]),
            )
            .await?;
        if !scan.success {
            return Err(ChainError::Unavailable(
                "scantxoutset did not complete".into(),
            ));
        }
        let mut utxos = scan
            .unspents
            .into_iter()
            .map(|u| {
                Ok(Utxo {
                    txid: u.txid,
                    vout: u.vout,
                    amount_sats: btc_to_sats(u.amount)?,
                    script_pubkey_hex: u.script_pub_key.to_ascii_lowercase(),
                })
            })
            .collect::<Result<Vec<_>, ChainError>>()?;
        utxos.sort_by(|a, b| (&a.txid, a.vout).cmp(&(&b.txid, b.vout)));
        Ok(utxos)
    }

    async fn broadcast(&self, tx_hex: &str) -> Result<String, ChainError> {
        if tx_hex.is_empty() || !tx_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChainError::Misconfigured("transaction is not hex".into()));
        }
        match self
            .call::<String>("sendrawtransaction", json!([tx_hex]))
            .await
        {
            Ok(txid) => Ok(txid.to_ascii_lowercase()),
            // Resending a transaction the node already has (mempool or chain): sent.
            Err(ChainError::BadResponse(m))
                if m.contains("already in block chain") || m.contains("txn-already-known") =>
            {
                use bitcoin::consensus::encode::deserialize_hex;
                let tx: bitcoin::Transaction = deserialize_hex(tx_hex)
                    .map_err(|e| ChainError::BadResponse(format!("not a transaction: {e}")))?;
                Ok(tx.compute_txid().to_string())
            }
            Err(e) => Err(e),
        }
    }

    async fn tx_confirmations(&self, txid: &str) -> Result<Option<u32>, ChainError> {
        if txid.len() != 64 || !txid.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChainError::Misconfigured(format!("not a txid: {txid:?}")));
        }
        // Needs -txindex for confirmed transactions not in the wallet; the mempool is
        // always searched.
        match self
            .call::<Value>("getrawtransaction", json!([txid, true]))
            .await
        {
            Ok(v) => Ok(Some(
                v.get("confirmations")
                    .and_then(Value::as_u64)
                    .map(|c| u32::try_from(c).unwrap_or(u32::MAX))
                    .unwrap_or(0),
            )),
            Err(ChainError::BadResponse(m)) if m.contains("error -5:") => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Default per-request timeout: long enough for `scantxoutset` on mainnet.
pub const BITCOIND_TIMEOUT: Duration = Duration::from_secs(300);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn btc_amounts_convert_exactly() {
        assert_eq!(btc_to_sats(0.00000001).unwrap(), 1);
        assert_eq!(
            btc_to_sats(20_999_999.976_9).unwrap(),
            2_099_999_997_690_000
        );
        assert_eq!(btc_to_sats(1.23456789).unwrap(), 123_456_789);
        assert!(btc_to_sats(-1.0).is_err());
        assert!(btc_to_sats(f64::NAN).is_err());
    }
}
