//! A guardian's side of a reserve attestation (`POST /v1/attest`).
//!
//! The coordinator proposes an unsigned [`ReserveAttestation`]. The guardian checks it
//! against its own nodes and policy before it signs anything:
//! - the reserves are exactly the ones `[policy] reserves` names (listed `active`),
//!   plus retired ones named in `[attest] retired_reserves`; anything else is
//!   `unknown_reserve`;
//! - the Bitcoin block is on its own view (`unknown_block`) and recent enough
//!   (`stale_block`);
//! - every reserve's UTXO set at that block equals its own view's: a listed UTXO it
//!   does not see unspent with that amount and script, or one it sees that is not
//!   listed, is `utxo_set_mismatch`;
//! - every supply entry equals what its own chain view reads at the named block, and
//!   every chain it watches has an entry (`supply_mismatch`; `chain_unavailable` when
//!   it cannot read);
//! - the totals, ratio and text are the ones rebuilt from the fields
//!   (`attestation_mismatch`);
//! - the registry reference is the latest version of the chain in
//!   `[attest] registry_file` (verified at load, its reserves checked against
//!   `[policy] reserves`); any other version or fingerprint is `registry_mismatch`.
//!
//! Then it rebuilds the proof of funds itself ([`PreparedPof::prepare`]: one sighash
//! per input), records its approval durably — one attestation digest per Bitcoin
//! block height: another document for the same block (another registry reference
//! included) is `conflicting_attestation`, the identical one gets the same answer again — and only
//! then answers with its partial signatures for every input its key signs and its
//! approval of the attestation digest. ECDSA nonces are deterministic (RFC 6979), so
//! the repeated answer carries the same signatures without storing them.
//!
//! What a guardian's own view can establish: its Bitcoin backend lists the unspent
//! outputs at its *tip*, so a UTXO spent after the attested block (but before the
//! guardian's tip) is refused as missing, and outputs confirmed after the block are
//! ignored. Coordinators therefore propose a recent block. Solana nodes keep no
//! historical account state: a Solana supply entry is checked against the supply the
//! guardian reads now, which must be at or after the named slot and equal to it (a
//! mint or burn since then is refused; the slot's hash is checked only when the node
//! answers at that very slot).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitcoin::secp256k1::PublicKey;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Mutex;
use ubtc_bitcoin::attestation::{approve, PofPartials, PreparedPof};
use ubtc_bitcoin::descriptor::Descriptor;
use ubtc_bitcoin::multisig::SortedMulti;
use ubtc_chains::evm::{abi, RetryPolicy, RpcClient};
use ubtc_chains::{BitcoinBackend, ChainError, SupplySource};
use ubtc_core::attestation::{AttestationApproval, ReserveAttestation, ReserveStatus};
use ubtc_core::bundle::{BitcoinNetwork, SupplyEntry, Utxo};
use ubtc_core::{ChainId, Timestamp, TokenAmount};
use uuid::Uuid;

use crate::config::ConfigError;
use crate::keystore::GuardianKey;
use crate::protocol::{self, Envelope, ProtocolError, RefusalCode};
use crate::record::{JsonLines, RecordError};

/// The route a guardian serves attestation requests on.
pub const ATTEST_PATH: &str = "/v1/attest";
/// Domain tag of a coordinator's attestation request: a statement request's signature
/// can never pass for one (nor the other way round).
pub const ATTEST_REQUEST_TAG: &[u8] = b"ubtc-guardian-attest-request-v1\n";
/// Domain tag of a guardian's attestation answer.
pub const ATTEST_ANSWER_TAG: &[u8] = b"ubtc-guardian-attest-answer-v1\n";
/// Largest request body accepted: a 10,000-UTXO attestation is about 2.5 MB of JSON.
pub const MAX_ATTEST_BODY_BYTES: usize = 16 * 1024 * 1024;
/// Default of `[attest] max_block_age_blocks`: about an hour of blocks.
pub const MAX_BLOCK_AGE_BLOCKS_DEFAULT: u32 = 6;
/// Path under the dev chain's HTTP view that serves a dev token's supply.
pub const DEV_SUPPLY_PATH: &str = "/v1/demo/chains/{chain}/supply";

/// `[attest]` of `guardian.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestConfig {
    /// Bitcoin network of the reserves (`bitcoin`, `testnet`, `signet`, `regtest`…).
    pub network: BitcoinNetwork,
    /// The durable record of attestation approvals (JSON lines, fsync'd).
    pub approvals: PathBuf,
    /// Oldest attested block accepted, in blocks below this guardian's Bitcoin tip.
    #[serde(default = "default_block_age")]
    pub max_block_age_blocks: u32,
    /// Retired reserve descriptors (with checksum) that may still hold coins: they may
    /// be attested (status `retired`), and when they hold coins they must be.
    #[serde(default)]
    pub retired_reserves: Vec<String>,
    /// This guardian's own view of every token chain's supply. An attestation must
    /// carry exactly these chains.
    #[serde(default)]
    pub supply: Vec<SupplyViewConfig>,
    /// The registry chain this guardian serves, as `ubtc keys registry-export` writes
    /// it; required: a guardian that does not know its registry would sign any
    /// reference.
    pub registry_file: PathBuf,
}

fn default_block_age() -> u32 {
    MAX_BLOCK_AGE_BLOCKS_DEFAULT
}

/// One `[[attest.supply]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupplyViewConfig {
    pub chain: ChainId,
    pub kind: SupplyViewKind,
    /// This guardian's own node (`evm`, `solana`) or the dev chain's HTTP view.
    pub url: String,
    /// The token contract (`evm`) or SPL mint (`solana`); unused for `dev_http`.
    #[serde(default)]
    pub token: Option<String>,
    /// `solana`: `finalized` (default) or `confirmed`.
    #[serde(default)]
    pub commitment: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SupplyViewKind {
    /// `totalSupply()` by `eth_call` at the named block.
    Evm,
    /// `getTokenSupply` now (see the module docs for what that proves).
    Solana,
    /// The demo's dev chain, over its HTTP view ([`dev_supply_router`]).
    DevHttp,
}

impl AttestConfig {
    /// The retired reserves in the canonical text the coordinator writes.
    fn retired(&self) -> Result<Vec<String>, ConfigError> {
        self.retired_reserves
            .iter()
            .map(|d| {
                Descriptor::parse(d).map_err(|e| {
                    ConfigError::Invalid(format!("attest.retired_reserves: {d:?}: {e}"))
                })?;
                Ok(canonical(d))
            })
            .collect()
    }

    pub fn check(&self) -> Result<(), ConfigError> {
        self.retired()?;
        let mut seen = HashSet::new();
        for s in &self.supply {
            if !seen.insert(s.chain.clone()) {
                return Err(ConfigError::Invalid(format!(
                    "attest.supply: chain {} is listed twice",
                    s.chain
                )));
            }
            if !(s.url.starts_with("http://") || s.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "attest.supply {}: url must be http(s)",
                    s.chain
                )));
            }
            if s.kind != SupplyViewKind::DevHttp && s.token.is_none() {
                return Err(ConfigError::Invalid(format!(
                    "attest.supply {}: kind {:?} needs token",
                    s.chain, s.kind
                )));
            }
            if s.kind != SupplyViewKind::Solana && s.commitment.is_some() {
                return Err(ConfigError::Invalid(format!(
                    "attest.supply {}: commitment is for kind \"solana\"",
                    s.chain
                )));
            }
        }
        Ok(())
    }

    fn views(&self) -> Result<HashMap<ChainId, SupplyView>, ConfigError> {
        let mut out = HashMap::new();
        for s in &self.supply {
            let err =
                |e: ChainError| ConfigError::Invalid(format!("attest.supply {}: {e}", s.chain));
            let token = s.token.clone().unwrap_or_default();
            let view = match s.kind {
                SupplyViewKind::Evm => SupplyView {
                    source: Arc::new(
                        EvmSupplyView::new(s.chain.clone(), &s.url, &token).map_err(err)?,
                    ),
                    latest_only: false,
                },
                SupplyViewKind::DevHttp => SupplyView {
                    source: Arc::new(DevSupplyHttp::new(s.chain.clone(), &s.url).map_err(err)?),
                    latest_only: false,
                },
                SupplyViewKind::Solana => {
                    let mut c =
                        ubtc_chains::solana::SolanaConfig::new(s.chain.clone(), &s.url, &token);
                    c.token_mint = Some(token.clone());
                    if let Some(level) = &s.commitment {
                        c.commitment =
                            ubtc_chains::solana::Commitment::parse(level).map_err(err)?;
                    }
                    SupplyView {
                        source: Arc::new(ubtc_chains::solana::SolanaAdapter::new(c).map_err(err)?),
                        latest_only: true,
                    }
                }
            };
            out.insert(s.chain.clone(), view);
        }
        Ok(out)
    }
}

/// Reads and verifies the exported registry chain at `path` and returns a reference
/// to its latest version, whose active reserves must be exactly `active`.
pub fn load_registry(
    path: &std::path::Path,
    active: &[String],
) -> Result<ubtc_core::attestation::RegistryRef, ConfigError> {
    #[derive(Deserialize)]
    struct Exported {
        versions: Vec<ubtc_core::registry::RegistryVersion>,
    }
    let bad = |why: String| {
        ConfigError::Invalid(format!("attest.registry_file {}: {why}", path.display()))
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let exported: Exported = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let accepted =
        ubtc_bitcoin::registry::verify_chain(&exported.versions).map_err(|e| bad(e.to_string()))?;
    let latest = accepted
        .last()
        .ok_or_else(|| bad("no version".to_owned()))?;
    let mut listed: Vec<String> = latest
        .reserves
        .iter()
        .filter(|r| r.status == ubtc_core::registry::ReserveStatus::Active)
        .map(|r| canonical(&r.descriptor))
        .collect();
    let mut policy: Vec<String> = active.iter().map(|d| canonical(d)).collect();
    listed.sort();
    policy.sort();
    if listed != policy {
        return Err(bad(format!(
            "the active reserves of version {} are not [policy] reserves",
            latest.version
        )));
    }
    Ok(ubtc_core::attestation::RegistryRef {
        version: latest.version,
        fingerprint: latest.fingerprint(),
    })
}

/// A descriptor in the text the coordinator sends: `SortedMulti::descriptor` for a
/// sorted multisig (sorted keys, checksum), as written for any other kind.
fn canonical(descriptor: &str) -> String {
    SortedMulti::parse_descriptor(descriptor)
        .map(|(p, w)| p.descriptor(w))
        .unwrap_or_else(|_| descriptor.to_owned())
}

/// One chain's supply as this guardian reads it.
#[derive(Clone)]
pub struct SupplyView {
    pub source: Arc<dyn SupplySource>,
    /// The node serves the supply only now (Solana), not at a chosen block.
    pub latest_only: bool,
}

/// `totalSupply()` of an EVM token at a named block through this guardian's own node:
/// the block's hash from `eth_getBlockByNumber`, the call pinned to that hash
/// (EIP-1898) so a reorg meanwhile cannot mix two blocks.
pub struct EvmSupplyView {
    chain: ChainId,
    rpc: RpcClient,
    token: String,
}

impl EvmSupplyView {
    pub fn new(chain: ChainId, url: &str, token: &str) -> Result<Self, ChainError> {
        let token =
            abi::normalize_address(token).map_err(|e| ChainError::Misconfigured(e.to_string()))?;
        Ok(Self {
            chain,
            rpc: RpcClient::new(url, RetryPolicy::default())?,
            token,
        })
    }

    async fn call_word(&self, signature: &str, block_hash: &str) -> Result<u128, ChainError> {
        let data = format!("0x{}", hex::encode(abi::selector(signature)));
        let out: String = self
            .rpc
            .call(
                "eth_call",
                json!([{"to": self.token, "data": data}, {"blockHash": block_hash}]),
            )
            .await?;
        let bytes = abi::decode_hex(&out)
            .map_err(|e| ChainError::BadResponse(format!("{signature}: {e}")))?;
        abi::word_u128(&bytes).map_err(|e| ChainError::BadResponse(format!("{signature}: {e}")))
    }
}

#[derive(Deserialize)]
struct EvmHeader {
    hash: String,
    timestamp: String,
}

#[async_trait]
impl SupplySource for EvmSupplyView {
    fn chain(&self) -> &ChainId {
        &self.chain
    }

    async fn supply_at(&self, block: Option<u64>) -> Result<SupplyEntry, ChainError> {
        let tag = block.map_or_else(|| "latest".to_owned(), abi::to_quantity);
        let header: Option<EvmHeader> = self
            .rpc
            .call("eth_getBlockByNumber", json!([tag, false]))
            .await?;
        let Some(header) = header else {
            return Err(ChainError::BadResponse(format!(
                "no block {tag} on this node"
            )));
        };
        let number = match block {
            Some(n) => n,
            None => {
                let h: serde_json::Value = self.rpc.call("eth_blockNumber", json!([])).await?;
                abi::quantity_u64(h.as_str().unwrap_or_default())
                    .map_err(|e| ChainError::BadResponse(e.to_string()))?
            }
        };
        let supply = self.call_word("totalSupply()", &header.hash).await?;
        let decimals = self.call_word("decimals()", &header.hash).await?;
        let decimals = u8::try_from(decimals)
            .map_err(|_| ChainError::BadResponse(format!("decimals {decimals}")))?;
        let secs = abi::quantity_u64(&header.timestamp).unwrap_or_default();
        Ok(SupplyEntry {
            chain: self.chain.clone(),
            token: self.token.clone(),
            block_number: number,
            block_hash: header.hash.to_ascii_lowercase(),
            supply: TokenAmount::new(supply, decimals),
            as_of: Timestamp::from_millis(i64::try_from(secs.saturating_mul(1000)).unwrap_or(0)),
        })
    }
}

/// A dev chain's token supply over its HTTP view ([`dev_supply_router`]).
pub struct DevSupplyHttp {
    chain: ChainId,
    base: String,
    client: reqwest::Client,
}

impl DevSupplyHttp {
    pub fn new(chain: ChainId, base_url: &str) -> Result<Self, ChainError> {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ChainError::Misconfigured(e.to_string()))?;
        Ok(Self {
            chain,
            base: base_url.trim_end_matches('/').to_owned(),
            client,
        })
    }
}

#[async_trait]
impl SupplySource for DevSupplyHttp {
    fn chain(&self) -> &ChainId {
        &self.chain
    }

    async fn supply_at(&self, block: Option<u64>) -> Result<SupplyEntry, ChainError> {
        let mut url = format!(
            "{}{}",
            self.base,
            DEV_SUPPLY_PATH.replace("{chain}", self.chain.as_str())
        );
        if let Some(n) = block {
            url.push_str(&format!("?block={n}"));
        }
        let resp = self
            .client
            .get(&url)
            .send()
            .await
            .map_err(|e| ChainError::Unavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(ChainError::Unavailable(format!(
                "dev supply view answered HTTP {}",
                resp.status()
            )));
        }
        resp.json()
            .await
            .map_err(|e| ChainError::BadResponse(e.to_string()))
    }
}

#[derive(Deserialize)]
struct SupplyQuery {
    block: Option<u64>,
}

/// `GET /v1/demo/chains/{chain}/supply[?block=N]`: the dev chains' token supply, for
/// guardians' `dev_http` supply views (served beside [`crate::dev_chain_router`]).
pub fn dev_supply_router(sources: HashMap<ChainId, Arc<dyn SupplySource>>) -> Router {
    Router::new()
        .route(DEV_SUPPLY_PATH, get(dev_supply_handler))
        .with_state(Arc::new(sources))
}

async fn dev_supply_handler(
    State(sources): State<Arc<HashMap<ChainId, Arc<dyn SupplySource>>>>,
    UrlPath(chain): UrlPath<String>,
    Query(q): Query<SupplyQuery>,
) -> Response {
    let Some(source) = ChainId::parse(&chain).ok().and_then(|c| sources.get(&c)) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"code": "not_found", "message": "no such dev chain"})),
        )
            .into_response();
    };
    match source.supply_at(q.block).await {
        Ok(entry) => Json(entry).into_response(),
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            Json(json!({"code": "chain_unavailable", "message": e.to_string()})),
        )
            .into_response(),
    }
}

/// What the coordinator asks: approve and sign `attestation` (unsigned: no `pof`, no
/// approvals).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRequest {
    pub request_id: Uuid,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub attestation: ReserveAttestation,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case", deny_unknown_fields)]
pub enum AttestOutcome {
    Approved {
        /// One signature per proof-of-funds input its key signs.
        partials: PofPartials,
        approval: AttestationApproval,
        /// When the guardian first recorded this approval.
        recorded_at: Timestamp,
    },
    Refused {
        code: RefusalCode,
        detail: String,
    },
}

/// A guardian's answer, sealed with [`ATTEST_ANSWER_TAG`].
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestAnswer {
    pub request_id: Uuid,
    pub guardian_key: String,
    /// SHA-256 of the text of the attestation it was sent, hex.
    pub attestation_digest: String,
    pub outcome: AttestOutcome,
    pub at: Timestamp,
}

/// One recorded approval: the guardian approves one attestation per Bitcoin block.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestRecord {
    pub block_height: u32,
    pub block_hash: String,
    pub registry_version: u64,
    pub registry_fingerprint: String,
    pub attestation_digest: String,
    pub request_id: Uuid,
    pub recorded_at: Timestamp,
}

struct AttestLog {
    file: JsonLines<AttestRecord>,
    by_block: HashMap<u32, AttestRecord>,
}

/// The guardian's attestation service.
pub struct AttestGuardian {
    key: GuardianKey,
    coordinators: Vec<PublicKey>,
    bitcoin: Arc<dyn BitcoinBackend>,
    network: BitcoinNetwork,
    /// `[policy] reserves`, canonical: each must be attested, as `active`.
    active: Vec<String>,
    /// `[attest] retired_reserves`, canonical.
    retired: Vec<String>,
    supply: HashMap<ChainId, SupplyView>,
    max_block_age_blocks: u32,
    max_request_ttl_ms: i64,
    registry: Option<ubtc_core::attestation::RegistryRef>,
    /// One lock around check-record-answer: one digest per block, even under
    /// concurrent requests.
    log: Mutex<AttestLog>,
}

impl std::fmt::Debug for AttestGuardian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttestGuardian")
            .field("key", &self.key)
            .field("reserves", &self.active.len())
            .field("supply_chains", &self.supply.keys().collect::<Vec<_>>())
            .finish()
    }
}

type Refusal = (RefusalCode, String);

fn refusal<T>(code: RefusalCode, detail: impl Into<String>) -> Result<T, Refusal> {
    Err((code, detail.into()))
}

/// Everything [`AttestGuardian::new`] needs besides the key and the Bitcoin view.
pub struct AttestPolicy {
    pub coordinators: Vec<PublicKey>,
    pub network: BitcoinNetwork,
    /// Canonical active reserve descriptors (`[policy] reserves`).
    pub active: Vec<String>,
    pub retired: Vec<String>,
    pub supply: HashMap<ChainId, SupplyView>,
    pub max_block_age_blocks: u32,
    pub max_request_ttl_ms: i64,
    /// The registry version it serves (`from_config` always sets it); `None`, for
    /// in-process harnesses only, leaves the reference unchecked.
    pub registry: Option<ubtc_core::attestation::RegistryRef>,
}

impl AttestGuardian {
    /// Opens the approval record and builds the service.
    pub fn new(
        key: GuardianKey,
        bitcoin: Arc<dyn BitcoinBackend>,
        policy: AttestPolicy,
        approvals: &std::path::Path,
    ) -> Result<Self, RecordError> {
        let (file, records) = JsonLines::<AttestRecord>::open(approvals)?;
        let by_block = records.into_iter().map(|r| (r.block_height, r)).collect();
        Ok(Self {
            key,
            coordinators: policy.coordinators,
            bitcoin,
            network: policy.network,
            active: policy.active,
            retired: policy.retired.into_iter().map(|d| canonical(&d)).collect(),
            supply: policy.supply,
            max_block_age_blocks: policy.max_block_age_blocks,
            max_request_ttl_ms: policy.max_request_ttl_ms,
            registry: policy.registry,
            log: Mutex::new(AttestLog { file, by_block }),
        })
    }

    /// The service of `guardian.toml`'s `[attest]`; `None` without it. The keystore is
    /// read again (the statement guardian keeps its copy private).
    pub fn from_config(
        config: &crate::GuardianConfig,
        key: GuardianKey,
    ) -> Result<Option<Self>, crate::GuardianError> {
        let Some(a) = &config.attest else {
            return Ok(None);
        };
        a.check()?;
        let active: Vec<String> = config
            .policy
            .reserves()?
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        let registry = Some(load_registry(&a.registry_file, &active)?);
        let policy = AttestPolicy {
            registry,
            coordinators: config.coordinator_keys()?,
            network: a.network,
            active,
            retired: a.retired()?,
            supply: a.views()?,
            max_block_age_blocks: a.max_block_age_blocks,
            max_request_ttl_ms: (config.max_request_ttl_secs as i64).saturating_mul(1000),
        };
        Ok(Some(Self::new(
            key,
            config.bitcoin.backend()?,
            policy,
            &a.approvals,
        )?))
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    fn seal(
        &self,
        request_id: Uuid,
        digest: String,
        outcome: AttestOutcome,
    ) -> Result<Envelope, ProtocolError> {
        protocol::seal(
            ATTEST_ANSWER_TAG,
            &AttestAnswer {
                request_id,
                guardian_key: self.key.public_hex(),
                attestation_digest: digest,
                outcome,
                at: Timestamp::now(),
            },
            &self.key,
        )
    }

    /// Decides one request. Every answer is signed, refusals included; `Err` only when
    /// the envelope cannot be read at all.
    pub async fn handle(self: &Arc<Self>, envelope: &Envelope) -> Result<Envelope, ProtocolError> {
        let request: AttestRequest = match protocol::open_limited(
            ATTEST_REQUEST_TAG,
            envelope,
            &self.coordinators,
            MAX_ATTEST_BODY_BYTES,
        ) {
            Ok((r, _)) => r,
            Err(ProtocolError::Malformed(m)) => return Err(ProtocolError::Malformed(m)),
            Err(e) => {
                // Answer about what the unauthenticated body claims; nothing in it is
                // acted on.
                let claimed: AttestRequest = serde_json::from_str(&envelope.body)
                    .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
                let digest = hex::encode(claimed.attestation.digest());
                return self.seal(
                    claimed.request_id,
                    digest,
                    AttestOutcome::Refused {
                        code: RefusalCode::BadRequestSignature,
                        detail: e.to_string(),
                    },
                );
            }
        };
        let digest = hex::encode(request.attestation.digest());
        let request_id = request.request_id;
        let outcome = match self.decide(request).await {
            Ok(outcome) => outcome,
            Err((code, detail)) => {
                tracing::info!(code = code.as_str(), %detail, "attestation refused");
                AttestOutcome::Refused { code, detail }
            }
        };
        self.seal(request_id, digest, outcome)
    }

    async fn decide(self: &Arc<Self>, request: AttestRequest) -> Result<AttestOutcome, Refusal> {
        let now = Timestamp::now();
        if request.expires_at < now {
            return refusal(RefusalCode::RequestExpired, "the request has expired");
        }
        if request.expires_at.as_millis() - now.as_millis() > self.max_request_ttl_ms {
            return refusal(
                RefusalCode::BadRequest,
                "the request's lifetime is longer than this guardian accepts",
            );
        }
        let att = request.attestation;
        self.check_document(&att)?;
        self.check_reserves(&att)?;
        let tip = self.check_block(&att).await?;
        self.check_utxos(&att, tip).await?;
        self.check_supply(&att).await?;

        // Rebuild the proof of funds and sign it off the async threads: 10,000 inputs
        // are 10,000 sighashes and signatures.
        let key = self.key.clone();
        let att = Arc::new(att);
        let signing = att.clone();
        let signed = tokio::task::spawn_blocking(move || {
            let prepared = PreparedPof::prepare(&signing)?;
            let partials = prepared.sign(key.secret())?;
            Ok::<_, ubtc_bitcoin::attestation::AttestError>((
                partials,
                approve(&signing, key.secret()),
            ))
        })
        .await
        .map_err(|e| (RefusalCode::Internal, format!("signing task failed: {e}")))?;
        let (partials, approval) = signed.map_err(|e| match e {
            ubtc_bitcoin::attestation::AttestError::KeyNotInAnyReserve(_) => (
                RefusalCode::UnknownReserve,
                "no reserve of this attestation holds this guardian's key".to_owned(),
            ),
            other => (RefusalCode::AttestationMismatch, other.to_string()),
        })?;

        let digest = hex::encode(att.digest());
        let recorded_at = self.record(&att, &digest, request.request_id).await?;
        Ok(AttestOutcome::Approved {
            partials,
            approval,
            recorded_at,
        })
    }

    /// Records the approval, or finds the identical one; `conflicting_attestation` for
    /// another document at the same block and registry. On disk before it returns.
    async fn record(
        &self,
        att: &ReserveAttestation,
        digest: &str,
        request_id: Uuid,
    ) -> Result<Timestamp, Refusal> {
        // Keyed on the height alone: a registry reference is part of the document, so
        // varying it must not buy a second approval for the same block.
        let slot = att.bitcoin_block.height;
        let (recorded_at, syncer) = {
            let mut log = self.log.lock().await;
            if let Some(seen) = log.by_block.get(&slot) {
                if seen.attestation_digest != digest {
                    return refusal(
                        RefusalCode::ConflictingAttestation,
                        format!(
                            "already approved attestation {} for block {slot}",
                            seen.attestation_digest
                        ),
                    );
                }
                // Possibly written by a request still waiting for its flush: flushed
                // again below before this answer carries it out.
                (seen.recorded_at, log.file.syncer())
            } else {
                let record = AttestRecord {
                    block_height: att.bitcoin_block.height,
                    block_hash: att.bitcoin_block.hash.clone(),
                    registry_version: att.registry.version,
                    registry_fingerprint: att.registry.fingerprint.clone(),
                    attestation_digest: digest.to_owned(),
                    request_id,
                    recorded_at: Timestamp::now(),
                };
                if let Err(e) = log.file.append(&record) {
                    tracing::error!(error = %e, "cannot record an attestation approval; refusing to sign");
                    return refusal(RefusalCode::Internal, "the approval could not be recorded");
                }
                let at = record.recorded_at;
                log.by_block.insert(slot, record);
                (at, log.file.syncer())
            }
        };
        match tokio::task::spawn_blocking(move || syncer.sync()).await {
            Ok(Ok(())) => Ok(recorded_at),
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot flush the attestation record; refusing to sign");
                refusal(RefusalCode::Internal, "the approval could not be recorded")
            }
            Err(e) => refusal(RefusalCode::Internal, format!("flush task failed: {e}")),
        }
    }

    /// Unsigned, of this guardian's network, totals and text as rebuilt.
    fn check_document(&self, att: &ReserveAttestation) -> Result<(), Refusal> {
        att.check_shape()
            .map_err(|e| (RefusalCode::BadRequest, format!("{}: {e}", e.code())))?;
        if !att.pof.is_empty() || !att.approvals.is_empty() {
            return refusal(
                RefusalCode::BadRequest,
                "an attestation to sign carries no proof of funds and no approvals yet",
            );
        }
        if att.network != self.network {
            return refusal(
                RefusalCode::BadRequest,
                format!(
                    "the attestation is for {:?}; this guardian attests {:?}",
                    att.network, self.network
                ),
            );
        }
        let totals = att
            .computed_totals()
            .map_err(|e| (RefusalCode::AttestationMismatch, e.to_string()))?;
        if totals != att.totals {
            return refusal(
                RefusalCode::AttestationMismatch,
                format!(
                    "the stated totals {:?} are not the ones computed from the document {:?}",
                    att.totals, totals
                ),
            );
        }
        if att.rebuild_text() != att.text {
            return refusal(
                RefusalCode::AttestationMismatch,
                "the text is not the one rebuilt from the document's fields",
            );
        }
        if let Some(pinned) = &self.registry {
            if att.registry.version != pinned.version
                || att.registry.fingerprint != pinned.fingerprint
            {
                return refusal(
                    RefusalCode::RegistryMismatch,
                    format!(
                        "the attestation names registry version {} ({}); this guardian serves version {} ({})",
                        att.registry.version, att.registry.fingerprint, pinned.version, pinned.fingerprint
                    ),
                );
            }
        }
        Ok(())
    }

    /// Exactly `[policy] reserves`, each `active`, plus known retired ones.
    fn check_reserves(&self, att: &ReserveAttestation) -> Result<(), Refusal> {
        let mut listed = HashSet::new();
        for r in &att.reserves {
            let known = match r.status {
                ReserveStatus::Active => self.active.contains(&r.descriptor),
                ReserveStatus::Retired => self.retired.contains(&r.descriptor),
            };
            if !known {
                return refusal(
                    RefusalCode::UnknownReserve,
                    format!(
                        "{} ({}) is not a reserve this guardian attests as {}",
                        r.descriptor,
                        r.address,
                        r.status.as_str()
                    ),
                );
            }
            listed.insert(r.descriptor.as_str());
        }
        if let Some(missing) = self.active.iter().find(|d| !listed.contains(d.as_str())) {
            return refusal(
                RefusalCode::UnknownReserve,
                format!("the attestation leaves out the active reserve {missing}"),
            );
        }
        Ok(())
    }

    /// The block is on this guardian's view and recent enough; returns the tip height.
    async fn check_block(&self, att: &ReserveAttestation) -> Result<u32, Refusal> {
        let unavailable =
            |e: ChainError| (RefusalCode::ChainUnavailable, format!("bitcoin view: {e}"));
        let tip = self.bitcoin.tip().await.map_err(unavailable)?;
        let block = &att.bitcoin_block;
        if block.height > tip.height {
            return refusal(
                RefusalCode::UnknownBlock,
                format!(
                    "block {} is above this guardian's Bitcoin tip {}",
                    block.height, tip.height
                ),
            );
        }
        let hash = if block.height == tip.height {
            tip.hash.clone()
        } else {
            self.bitcoin
                .block_hash(block.height)
                .await
                .map_err(unavailable)?
        };
        if !hash.eq_ignore_ascii_case(&block.hash) {
            return refusal(
                RefusalCode::UnknownBlock,
                format!(
                    "block {} has hash {hash} on this guardian's Bitcoin view, not {}",
                    block.height, block.hash
                ),
            );
        }
        let age = tip.height - block.height;
        if age > self.max_block_age_blocks {
            return refusal(
                RefusalCode::StaleBlock,
                format!(
                    "block {} is {age} blocks below this guardian's tip {}; at most {} accepted",
                    block.height, tip.height, self.max_block_age_blocks
                ),
            );
        }
        Ok(tip.height)
    }

    /// Every known reserve's UTXO set at the block equals the listed one: each listed
    /// UTXO is unspent here, with that amount and script, confirmed at or before the
    /// block; each UTXO here confirmed at or before the block is listed. Reads each
    /// address once and each transaction's depth once.
    async fn check_utxos(&self, att: &ReserveAttestation, tip: u32) -> Result<(), Refusal> {
        let unavailable =
            |e: ChainError| (RefusalCode::ChainUnavailable, format!("bitcoin view: {e}"));
        let network = ubtc_bitcoin::bundle::network_of(self.network);
        let block = att.bitcoin_block.height;
        let listed: HashMap<&str, &ubtc_core::attestation::AttestedReserve> = att
            .reserves
            .iter()
            .map(|r| (r.descriptor.as_str(), r))
            .collect();
        let mut depth_cache: HashMap<String, Option<u32>> = HashMap::new();
        for descriptor in self.active.iter().chain(&self.retired) {
            let address = Descriptor::parse(descriptor)
                .map_err(|e| (RefusalCode::Internal, format!("{descriptor}: {e}")))?
                .address(network)
                .to_string();
            let own = self
                .bitcoin
                .address_utxos(&address)
                .await
                .map_err(unavailable)?;
            // What the view had at the block: confirmed at a height at or below it.
            let mut at_block: HashMap<(String, u32), Utxo> = HashMap::with_capacity(own.len());
            for u in own {
                let txid = u.txid.to_ascii_lowercase();
                let depth = match depth_cache.get(&txid) {
                    Some(d) => *d,
                    None => {
                        let d = self
                            .bitcoin
                            .tx_confirmations(&txid)
                            .await
                            .map_err(unavailable)?;
                        depth_cache.insert(txid.clone(), d);
                        d
                    }
                };
                let confirmed_at = match depth {
                    Some(d) if d >= 1 => tip + 1 - d.min(tip + 1),
                    _ => continue,
                };
                if confirmed_at <= block {
                    at_block.insert((txid, u.vout), u);
                }
            }
            let claimed: &[Utxo] = listed.get(descriptor.as_str()).map_or(&[], |r| &r.utxos);
            for c in claimed {
                let key = (c.txid.to_ascii_lowercase(), c.vout);
                match at_block.remove(&key) {
                    Some(seen) => {
                        if let Some(why) = crate::utxo_check::mismatch(std::slice::from_ref(&seen), c) {
                            return refusal(RefusalCode::UtxoSetMismatch, why);
                        }
                    }
                    None => {
                        return refusal(
                            RefusalCode::UtxoSetMismatch,
                            format!(
                                "{}:{} is not an unspent output of {address} at block {block} on this guardian's view",
                                c.txid, c.vout
                            ),
                        )
                    }
                }
            }
            if let Some(((txid, vout), u)) = at_block.into_iter().next() {
                return refusal(
                    RefusalCode::UtxoSetMismatch,
                    format!(
                        "{txid}:{vout} ({} sats) is unspent at {address} on this guardian's view and not listed",
                        u.amount_sats
                    ),
                );
            }
        }
        Ok(())
    }

    /// Every supply entry equals this guardian's reading, and every chain it watches
    /// has one (leaving a chain out would lower the supply and raise the ratio).
    async fn check_supply(&self, att: &ReserveAttestation) -> Result<(), Refusal> {
        let named: HashSet<&ChainId> = att.supply.iter().map(|s| &s.chain).collect();
        if let Some(missing) = self.supply.keys().find(|c| !named.contains(c)) {
            return refusal(
                RefusalCode::SupplyMismatch,
                format!("the attestation has no supply entry for {missing}"),
            );
        }
        for entry in &att.supply {
            let Some(view) = self.supply.get(&entry.chain) else {
                return refusal(
                    RefusalCode::SupplyMismatch,
                    format!("this guardian has no view of {}'s supply", entry.chain),
                );
            };
            let block = (!view.latest_only).then_some(entry.block_number);
            let seen = view.source.supply_at(block).await.map_err(|e| {
                (
                    RefusalCode::ChainUnavailable,
                    format!("{} supply view: {e}", entry.chain),
                )
            })?;
            let mismatch = |what: String| {
                refusal(
                    RefusalCode::SupplyMismatch,
                    format!("{} at block {}: {what}", entry.chain, entry.block_number),
                )
            };
            if view.latest_only {
                if seen.block_number < entry.block_number {
                    return mismatch(format!(
                        "this guardian's view is at {}, before the named block",
                        seen.block_number
                    ));
                }
            } else if seen.block_number != entry.block_number {
                return mismatch(format!("the view answered for block {}", seen.block_number));
            }
            if seen.block_number == entry.block_number
                && !seen.block_hash.eq_ignore_ascii_case(&entry.block_hash)
            {
                return mismatch(format!(
                    "block hash here is {}, not {}",
                    seen.block_hash, entry.block_hash
                ));
            }
            if !seen.token.eq_ignore_ascii_case(&entry.token) {
                return mismatch(format!("token here is {}, not {}", seen.token, entry.token));
            }
            if seen.supply != entry.supply {
                return mismatch(format!(
                    "supply here is {} ({} decimals), the attestation says {} ({} decimals)",
                    seen.supply.base_units,
                    seen.supply.decimals,
                    entry.supply.base_units,
                    entry.supply.decimals
                ));
            }
        }
        Ok(())
    }
}

/// `POST /v1/attest`.
pub fn router(guardian: Arc<AttestGuardian>) -> Router {
    use axum::extract::DefaultBodyLimit;
    Router::new()
        .route(
            ATTEST_PATH,
            post(attest_handler).layer(DefaultBodyLimit::max(MAX_ATTEST_BODY_BYTES * 2)),
        )
        .with_state(guardian)
}

async fn attest_handler(
    State(guardian): State<Arc<AttestGuardian>>,
    Json(envelope): Json<Envelope>,
) -> Response {
    match guardian.handle(&envelope).await {
        Ok(sealed) => Json(sealed).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({ "code": "malformed_request", "message": e.to_string() })),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::protocol::REQUEST_TAG;

    fn config(extra: &str) -> Result<AttestConfig, ConfigError> {
        let c: AttestConfig = toml::from_str(&format!(
            "network = \"regtest\"\napprovals = \"a.jsonl\"\nregistry_file = \"r.json\"\n{extra}"
        ))
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        c.check().map(|_| c)
    }

    #[test]
    fn attest_section_refuses_bad_supply_views_and_retired_reserves() {
        let c = config("").unwrap();
        assert_eq!(c.max_block_age_blocks, MAX_BLOCK_AGE_BLOCKS_DEFAULT);
        let evm = "[[supply]]\nchain = \"eth\"\nkind = \"evm\"\nurl = \"http://127.0.0.1:8545\"\n\
                   token = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\"\n";
        assert!(config(evm).is_ok());
        for (bad, why) in [
            (format!("{evm}{evm}"), "twice"),
            (evm.replace("http://", "ftp://"), "http"),
            (
                evm.replace(
                    "token = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\"\n",
                    "",
                ),
                "token",
            ),
            (format!("{evm}commitment = \"finalized\"\n"), "commitment"),
            (
                "retired_reserves = [\"wpkh(02aa)\"]\n".to_owned(),
                "retired_reserves",
            ),
        ] {
            match config(&bad) {
                Err(ConfigError::Invalid(m)) => assert!(m.contains(why), "{why}: {m}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        // An unknown kind or field is refused at parse.
        assert!(config(&evm.replace("\"evm\"", "\"bitcoin\"")).is_err());
        assert!(config("max_age = 3\n").is_err());
        // No registry_file: refused at parse, never a guardian that signs any registry.
        assert!(
            toml::from_str::<AttestConfig>("network = \"regtest\"\napprovals = \"a.jsonl\"\n")
                .is_err()
        );
    }

    fn guardian(dir: &std::path::Path, coordinator: &GuardianKey) -> Arc<AttestGuardian> {
        let key = GuardianKey::generate();
        let policy = SortedMulti::new(1, vec![bitcoin::CompressedPublicKey(key.public())]).unwrap();
        Arc::new(
            AttestGuardian::new(
                key,
                Arc::new(ubtc_chains::dev::DevBitcoin::new(100)),
                AttestPolicy {
                    coordinators: vec![coordinator.public()],
                    network: BitcoinNetwork::Regtest,
                    active: vec![policy.descriptor(ubtc_bitcoin::multisig::Wrapping::Wsh)],
                    retired: Vec::new(),
                    supply: HashMap::new(),
                    max_block_age_blocks: 6,
                    max_request_ttl_ms: 60_000,
                    registry: Some(ubtc_core::attestation::RegistryRef {
                        version: 1,
                        fingerprint: "7f".repeat(32),
                    }),
                },
                &dir.join("attest.jsonl"),
            )
            .unwrap(),
        )
    }

    fn request(g: &AttestGuardian) -> AttestRequest {
        request_for(g, 1, "7f".repeat(32))
    }

    fn request_for(g: &AttestGuardian, version: u64, fingerprint: String) -> AttestRequest {
        let address = ubtc_bitcoin::descriptor::Descriptor::parse(&g.active[0])
            .unwrap()
            .address(bitcoin::Network::Regtest)
            .to_string();
        let content = ubtc_core::attestation::AttestationContent {
            network: BitcoinNetwork::Regtest,
            bitcoin_block: ubtc_core::attestation::AttestedBlock {
                height: 100,
                hash: ubtc_chains::dev::DevBitcoin::hash_at(100),
            },
            reserves: vec![ubtc_core::attestation::AttestedReserve {
                address,
                descriptor: g.active[0].clone(),
                status: ReserveStatus::Active,
                utxos: Vec::new(),
            }],
            supply: Vec::new(),
            registry: ubtc_core::attestation::RegistryRef {
                version,
                fingerprint,
            },
            audit_head: "a1".repeat(32),
            created_at: Timestamp::from_millis(1_796_670_000_000),
        };
        let now = Timestamp::now();
        AttestRequest {
            request_id: Uuid::new_v4(),
            issued_at: now,
            expires_at: now.plus_millis(30_000),
            attestation: ReserveAttestation::unsigned(content).unwrap(),
        }
    }

    fn outcome(g: &AttestGuardian, sealed: &Envelope) -> AttestOutcome {
        let (answer, _): (AttestAnswer, _) =
            protocol::open(ATTEST_ANSWER_TAG, sealed, &[g.public_key()]).unwrap();
        answer.outcome
    }

    #[tokio::test]
    async fn a_statement_signature_or_a_stranger_cannot_ask_for_an_attestation() {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = GuardianKey::generate();
        let g = guardian(dir.path(), &coordinator);
        let req = request(&g);
        // Signed by the coordinator, but under the statement protocol's tag.
        let wrong_tag = protocol::seal(REQUEST_TAG, &req, &coordinator).unwrap();
        let stranger = protocol::seal(ATTEST_REQUEST_TAG, &req, &GuardianKey::generate()).unwrap();
        for env in [wrong_tag, stranger] {
            match outcome(&g, &g.handle(&env).await.unwrap()) {
                AttestOutcome::Refused { code, .. } => {
                    assert_eq!(code, RefusalCode::BadRequestSignature)
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(std::fs::read_to_string(dir.path().join("attest.jsonl"))
            .unwrap()
            .is_empty());
        // The same request properly signed is approved (an empty reserve is a true
        // attestation of zero), recorded, and the same answer comes back on a retry.
        let good = protocol::seal(ATTEST_REQUEST_TAG, &req, &coordinator).unwrap();
        let first = outcome(&g, &g.handle(&good).await.unwrap());
        let again = outcome(&g, &g.handle(&good).await.unwrap());
        match (first, again) {
            // The reserve here holds no UTXO, so its partials are empty: the approval
            // signature and the recorded time are what show the recorded answer.
            (
                AttestOutcome::Approved {
                    partials: a,
                    approval: approval_a,
                    recorded_at: at_a,
                },
                AttestOutcome::Approved {
                    partials: b,
                    approval: approval_b,
                    recorded_at: at_b,
                },
            ) => {
                assert_eq!(a, b);
                assert_eq!(approval_a, approval_b);
                assert_eq!(at_a, at_b);
            }
            other => panic!("{other:?}"),
        }
        // A stated total that is not the computed one.
        let mut lie = request(&g);
        lie.attestation.totals.reserve_sats = 1;
        let sealed = protocol::seal(ATTEST_REQUEST_TAG, &lie, &coordinator).unwrap();
        match outcome(&g, &g.handle(&sealed).await.unwrap()) {
            AttestOutcome::Refused { code, .. } => {
                assert_eq!(code, RefusalCode::AttestationMismatch)
            }
            other => panic!("{other:?}"),
        }
    }

    fn refused_with(g: &AttestGuardian, sealed: &Envelope) -> RefusalCode {
        match outcome(g, sealed) {
            AttestOutcome::Refused { code, .. } => code,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    /// Another registry version or fingerprint than the one served is refused before
    /// anything is recorded; after one approval for a block, a document for the same
    /// block naming another fingerprint is refused too (it is another digest).
    #[tokio::test]
    async fn another_registry_or_a_second_document_for_a_block_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let coordinator = GuardianKey::generate();
        let g = guardian(dir.path(), &coordinator);
        let rebuild = |g: &AttestGuardian, version: u64, fingerprint: String| {
            let req = request_for(g, version, fingerprint);
            protocol::seal(ATTEST_REQUEST_TAG, &req, &coordinator).unwrap()
        };
        for (version, fingerprint) in [(1, "6e".repeat(32)), (2, "7f".repeat(32))] {
            let sealed = rebuild(&g, version, fingerprint);
            assert_eq!(
                refused_with(&g, &g.handle(&sealed).await.unwrap()),
                RefusalCode::RegistryMismatch
            );
        }
        assert!(std::fs::read_to_string(dir.path().join("attest.jsonl"))
            .unwrap()
            .is_empty());
        let good = protocol::seal(ATTEST_REQUEST_TAG, &request(&g), &coordinator).unwrap();
        assert!(matches!(
            outcome(&g, &g.handle(&good).await.unwrap()),
            AttestOutcome::Approved { .. }
        ));

        // A guardian that pins no registry: the same block under another fingerprint
        // is still one approval per block.
        let dir = tempfile::tempdir().unwrap();
        let mut unpinned = Arc::try_unwrap(guardian(dir.path(), &coordinator)).unwrap();
        unpinned.registry = None;
        let unpinned = Arc::new(unpinned);
        let first = rebuild(&unpinned, 1, "7f".repeat(32));
        assert!(matches!(
            outcome(&unpinned, &unpinned.handle(&first).await.unwrap()),
            AttestOutcome::Approved { .. }
        ));
        let other = rebuild(&unpinned, 1, "6e".repeat(32));
        assert_eq!(
            refused_with(&unpinned, &unpinned.handle(&other).await.unwrap()),
            RefusalCode::ConflictingAttestation
        );
        let lines = std::fs::read_to_string(dir.path().join("attest.jsonl")).unwrap();
        assert_eq!(lines.lines().count(), 1);
    }

    /// The served registry is loaded only when its chain verifies and its latest
    /// version's active reserves are exactly the policy's.
    #[test]
    fn registry_file_must_verify_and_match_the_policy() {
        use ubtc_bitcoin::registry as reg;
        let dir = tempfile::tempdir().unwrap();
        let key = GuardianKey::generate();
        let policy = SortedMulti::new(1, vec![bitcoin::CompressedPublicKey(key.public())]).unwrap();
        let descriptor = policy.descriptor(ubtc_bitcoin::multisig::Wrapping::Wsh);
        let address = Descriptor::parse(&descriptor)
            .unwrap()
            .address(bitcoin::Network::Regtest)
            .to_string();
        let mut v1 = reg::propose(
            None,
            BitcoinNetwork::Regtest,
            vec![key.public_hex()],
            1,
            &[reg::ProposedReserve {
                address,
                descriptor: descriptor.clone(),
                active: true,
            }],
        )
        .unwrap();
        let signature = key.sign_registry(&v1);
        reg::add_signature(&mut v1, signature);
        let write = |name: &str, versions: &[ubtc_core::registry::RegistryVersion]| {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                serde_json::to_vec(&json!({ "versions": versions })).unwrap(),
            )
            .unwrap();
            path
        };
        let good = write("good.json", std::slice::from_ref(&v1));
        let pinned = load_registry(&good, std::slice::from_ref(&descriptor)).unwrap();
        assert_eq!(pinned.version, 1);
        assert_eq!(pinned.fingerprint, v1.fingerprint());
        match load_registry(&good, &[]) {
            Err(ConfigError::Invalid(m)) => assert!(m.contains("[policy] reserves"), "{m}"),
            other => panic!("{other:?}"),
        }
        let mut unsigned = v1.clone();
        unsigned.signatures.clear();
        let bad = write("unsigned.json", &[unsigned]);
        assert!(load_registry(&bad, std::slice::from_ref(&descriptor)).is_err());
        assert!(load_registry(&dir.path().join("missing.json"), &[]).is_err());
    }
}
