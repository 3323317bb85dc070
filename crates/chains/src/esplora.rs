//! Bitcoin through an Esplora HTTP API (Blockstream's `esplora`, mempool.space).
//!
//! Endpoints used, as documented in Esplora's `API.md`: `GET /blocks/tip/height`,
//! `GET /blocks/tip/hash`, `GET /block-height/:height`, `GET /address/:address/utxo`
//! and, once per address, `GET /tx/:txid` for the output script (the UTXO listing
//! does not carry it; every output to one address has the same script).

use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use ubtc_core::bundle::Utxo;
use ubtc_core::BlockStamp;

use crate::evm::rpc::{backoff_for, http_client, status_is_transient, RetryPolicy};
use crate::{BitcoinBackend, ChainError};

/// An Esplora server. Only confirmed outputs count as reserves: an unconfirmed one
/// can still be replaced.
pub struct EsploraBackend {
    http: reqwest::Client,
    base_url: String,
    retry: RetryPolicy,
}

#[derive(Deserialize)]
struct EsploraUtxo {
    txid: String,
    vout: u32,
    value: u64,
    status: EsploraStatus,
}

#[derive(Deserialize)]
struct EsploraStatus {
    confirmed: bool,
}

#[derive(Deserialize)]
struct EsploraTxStatus {
    confirmed: bool,
    #[serde(default)]
    block_height: Option<u32>,
}

#[derive(Deserialize)]
struct EsploraTx {
    vout: Vec<EsploraTxOut>,
}

#[derive(Deserialize)]
struct EsploraTxOut {
    scriptpubkey: String,
}

impl EsploraBackend {
    /// `base_url` such as `https://blockstream.info/api` (no trailing slash needed).
    pub fn new(base_url: &str, retry: RetryPolicy) -> Result<Self, ChainError> {
        Ok(Self {
            http: http_client(retry.timeout)?,
            base_url: base_url.trim_end_matches('/').to_owned(),
            retry,
        })
    }

    async fn get_text(&self, path: &str) -> Result<String, ChainError> {
        let bytes = self.get(path).await?;
        let text = String::from_utf8(bytes)
            .map_err(|_| ChainError::BadResponse(format!("{path}: not UTF-8")))?;
        Ok(text.trim().to_owned())
    }

    async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, ChainError> {
        let bytes = self.get(path).await?;
        serde_json::from_slice(&bytes)
            .map_err(|e| ChainError::BadResponse(format!("{path}: unexpected shape: {e}")))
    }

    /// `POST /tx` with the raw hex; Esplora answers the txid as text. Retried only on
    /// transient failures: resending the same transaction is harmless.
    async fn post_tx(&self, tx_hex: &str) -> Result<String, ChainError> {
        let url = format!("{}/tx", self.base_url);
        let mut last = String::new();
        for attempt in 0..self.retry.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(backoff_for(&self.retry, attempt - 1)).await;
            }
            let response = match self.http.post(&url).body(tx_hex.to_owned()).send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("request failed: {e}");
                    continue;
                }
            };
            let status = response.status();
            if status_is_transient(status) {
                last = format!("HTTP {status}");
                continue;
            }
            let text = response.text().await.unwrap_or_default();
            if !status.is_success() {
                return Err(ChainError::BadResponse(format!(
                    "POST /tx: HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                )));
            }
            return Ok(text.trim().to_ascii_lowercase());
        }
        Err(ChainError::Unavailable(format!("esplora POST /tx: {last}")))
    }

    async fn get(&self, path: &str) -> Result<Vec<u8>, ChainError> {
        let url = format!("{}{path}", self.base_url);
        let mut last = String::new();
        for attempt in 0..self.retry.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(backoff_for(&self.retry, attempt - 1)).await;
            }
            let response = match self.http.get(&url).send().await {
                Ok(r) => r,
                Err(e) => {
                    last = format!("request failed: {e}");
                    continue;
                }
            };
            let status = response.status();
            if status_is_transient(status) {
                last = format!("HTTP {status}");
                continue;
            }
            if !status.is_success() {
                return Err(ChainError::BadResponse(format!("{path}: HTTP {status}")));
            }
            match response.bytes().await {
                Ok(b) => return Ok(b.to_vec()),
                Err(e) => last = format!("reading the answer failed: {e}"),
            }
        }
        Err(ChainError::Unavailable(format!("esplora {path}: {last}")))
    }
}

fn check_hash(hash: &str, what: &str) -> Result<String, ChainError> {
    if hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(hash.to_ascii_lowercase())
    } else {
        Err(ChainError::BadResponse(format!(
            "{what}: not a block hash: {hash:?}"
        )))
    }
}

#[async_trait]
impl BitcoinBackend for EsploraBackend {
    async fn tip(&self) -> Result<BlockStamp, ChainError> {
        // Height first, then the hash at that height: a consistent pair even when a
        // block arrives between the two requests.
        let height: u32 = self
            .get_text("/blocks/tip/height")
            .await?
            .parse()
            .map_err(|e| ChainError::BadResponse(format!("tip height: {e}")))?;
        let hash = self.block_hash(height).await?;
        Ok(BlockStamp { height, hash })
    }

    async fn block_hash(&self, height: u32) -> Result<String, ChainError> {
        let hash = self.get_text(&format!("/block-height/{height}")).await?;
        check_hash(&hash, "block-height")
    }

    async fn address_utxos(&self, address: &str) -> Result<Vec<Utxo>, ChainError> {
        if !address.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ChainError::Misconfigured(format!(
                "not a Bitcoin address: {address:?}"
            )));
        }
        let listed: Vec<EsploraUtxo> = self.get_json(&format!("/address/{address}/utxo")).await?;
        let mut confirmed: Vec<EsploraUtxo> =
            listed.into_iter().filter(|u| u.status.confirmed).collect();
        confirmed.sort_by(|a, b| (&a.txid, a.vout).cmp(&(&b.txid, b.vout)));
        let Some(first) = confirmed.first() else {
            return Ok(Vec::new());
        };
        let tx: EsploraTx = self.get_json(&format!("/tx/{}", first.txid)).await?;
        let script = tx
            .vout
            .get(first.vout as usize)
            .map(|o| o.scriptpubkey.to_ascii_lowercase())
            .ok_or_else(|| {
                ChainError::BadResponse(format!("tx {} has no output {}", first.txid, first.vout))
            })?;
        Ok(confirmed
            .into_iter()
            .map(|u| Utxo {
                txid: u.txid,
                vout: u.vout,
                amount_sats: u.value,
                script_pubkey_hex: script.clone(),
            })
            .collect())
    }

    async fn broadcast(&self, tx_hex: &str) -> Result<String, ChainError> {
        if tx_hex.is_empty() || !tx_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ChainError::Misconfigured("transaction is not hex".into()));
        }
        let txid = self.post_tx(tx_hex).await?;
        check_hash(&txid, "POST /tx")
    }

    async fn tx_confirmations(&self, txid: &str) -> Result<Option<u32>, ChainError> {
        let txid = check_hash(txid, "txid")?;
        let url = format!("{}/tx/{txid}/status", self.base_url);
        // Esplora answers 404 for an unknown transaction: that is "unknown", not an error.
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| ChainError::Unavailable(format!("esplora tx status: {e}")))?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let status: EsploraTxStatus = self.get_json(&format!("/tx/{txid}/status")).await?;
        match (status.confirmed, status.block_height) {
            (false, _) => Ok(Some(0)),
            (true, Some(h)) => {
                let tip: u32 = self
                    .get_text("/blocks/tip/height")
                    .await?
                    .parse()
                    .map_err(|e| ChainError::BadResponse(format!("tip height: {e}")))?;
                Ok(Some(tip.saturating_add(1).saturating_sub(h)))
            }
            (true, None) => Err(ChainError::BadResponse(
                "confirmed transaction without a block height".into(),
            )),
        }
    }
}

/// Default per-request timeout for Esplora servers.
pub const ESPLORA_TIMEOUT: Duration = Duration::from_secs(20);
