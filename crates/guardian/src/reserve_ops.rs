//! Reserve operations at the guardian: approving mints and signing releases.
//!
//! The coordinator (the `ubtc worker`'s reserve-ops step) sends a signed
//! [`ReserveOpRequest`] to `POST /v1/reserve-ops`; the guardian re-checks it on its
//! OWN views and answers a signed [`ReserveOpAnswer`]:
//!
//! - a **mint** is approved only if the deposit pays at least the minted amount to
//!   the guardian's reserve address with the guardian's minimum confirmations, that
//!   deposit backs no other mint this guardian approved, and reserves (its Bitcoin
//!   view) stay at or above the token supply (its chain views) plus the mint. One
//!   deposit per mint and mint <= deposit mean that the approved mints never exceed
//!   the deposits, even before they show in the supply;
//! - a **release** is signed only if the burn transaction burned, on its chain view and
//!   at the guardian's depth, at least what the release takes from the reserve (paid
//!   to the redeemer plus the fee), the fee is within policy, every other output goes
//!   back to the reserve, and no other release used that burn. Every input must be an
//!   unspent, confirmed output of the reserve in the guardian's OWN Bitcoin view with
//!   exactly the stated amount and script (BIP-143 signs each input's amount alone: a
//!   coordinator stating other amounts in two requests over one transaction could
//!   otherwise combine their signatures into a transaction with a huge fee), and no
//!   input may have been signed for another release. The redeemer address is taken
//!   from the coordinator (docs/reserve-ops.md, trust assumptions): the guardian only
//!   checks that it is an address of its network and not the reserve's.
//!
//! Approvals are appended to a file and fsynced before the answer leaves, so the same
//! operation always gets the same answer (also after a restart), and an operation id
//! or a deposit or burn reused for something else is refused. Refusals are not
//! recorded: a deposit too shallow now may be deep enough later.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use bitcoin::secp256k1::{PublicKey, SecretKey};
use bitcoin::{CompressedPublicKey, Network};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use ubtc_bitcoin::multisig::{PartialSignature, SortedMulti, Wrapping};
use ubtc_bitcoin::release;
use ubtc_chains::evm::minter::{read_burn, token_supply, BurnSeen};
use ubtc_chains::evm::rpc::{RetryPolicy, RpcClient};
use ubtc_chains::{BitcoinBackend, ChainError};
use ubtc_core::Timestamp;
use ubtc_pipeline::reserve_ops::{GuardianVote, MintCheck, ReleaseCheck, ReserveApprovers};
use uuid::Uuid;

use crate::keystore::{self, GuardianKey, KeystoreError, Passphrase};
use crate::protocol::{self, Envelope, ANSWER_TAG, REQUEST_TAG};
use crate::record::{JsonLines, RecordError};

/// Domain tags are the signing protocol's; the body type keeps a reserve request from
/// parsing as a statement request and back (`deny_unknown_fields` on both).
pub const RESERVE_OPS_PATH: &str = "/v1/reserve-ops";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ReserveOp {
    Mint(MintCheck),
    Release(ReleaseCheck),
}

impl ReserveOp {
    pub fn op_id(&self) -> Uuid {
        match self {
            Self::Mint(m) => m.op_id,
            Self::Release(r) => r.op_id,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Self::Mint(_) => "mint",
            Self::Release(_) => "release",
        }
    }
    /// What one operation may use once, before the chain reads: the burn transaction
    /// of a release, the stated deposit of a mint. A mint's outpoints actually counted
    /// and a release's inputs are added after the reads (`check_*`).
    fn resource(&self) -> String {
        match self {
            Self::Mint(m) => format!(
                "deposit:{}:{}",
                m.deposit_txid.to_ascii_lowercase(),
                m.deposit_vout.map(|v| v.to_string()).unwrap_or_default()
            ),
            Self::Release(r) => format!("burn:{}:{}", r.chain, r.burn_tx.to_ascii_lowercase()),
        }
    }
}

/// The resource of one reserve outpoint: `deposit:` when a mint counted it (it backs
/// one mint), `spend:` when a release spends it (one release may spend it). A deposit
/// output is later spent by a release: the two kinds do not collide.
fn outpoint_resource(kind: &str, txid: &str, vout: u32) -> String {
    format!("{kind}:{}:{vout}", txid.to_ascii_lowercase())
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveOpRequest {
    pub request_id: Uuid,
    pub issued_at: Timestamp,
    pub expires_at: Timestamp,
    pub op: ReserveOp,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpOutcome {
    Approved {
        /// Releases: this guardian's signatures of every input.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partial: Option<PartialSignature>,
        recorded_at: Timestamp,
    },
    Refused {
        code: String,
        detail: String,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveOpAnswer {
    pub request_id: Uuid,
    pub op_id: Uuid,
    pub kind: String,
    pub guardian_key: String,
    /// SHA-256 of the operation's JSON as the guardian judged it.
    pub op_digest: String,
    pub outcome: OpOutcome,
    pub at: Timestamp,
}

// ----- the guardian's views -----

/// A token chain as this guardian reads it (its own RPC endpoint).
#[async_trait]
pub trait TokenView: Send + Sync + 'static {
    async fn supply_sats(&self) -> Result<u64, ChainError>;
    async fn burn(&self, tx_hash: &str) -> Result<Option<BurnSeen>, ChainError>;
}

/// An EVM chain's WrappedBTC through JSON-RPC.
pub struct EvmTokenView {
    rpc: RpcClient,
    token: String,
}

impl EvmTokenView {
    pub fn new(rpc_url: &str, token: &str, retry: RetryPolicy) -> Result<Self, ChainError> {
        Ok(Self {
            rpc: RpcClient::new(rpc_url, retry)?,
            token: token.to_owned(),
        })
    }
}

#[async_trait]
impl TokenView for EvmTokenView {
    async fn supply_sats(&self) -> Result<u64, ChainError> {
        let s = token_supply(&self.rpc, &self.token).await?;
        u64::try_from(s).map_err(|_| ChainError::BadResponse(format!("supply {s} overflows")))
    }
    async fn burn(&self, tx_hash: &str) -> Result<Option<BurnSeen>, ChainError> {
        read_burn(&self.rpc, &self.token, tx_hash).await
    }
}

#[derive(Clone, Debug)]
pub struct ReservePolicy {
    pub min_deposit_confirmations: u32,
    pub min_burn_confirmations: u64,
    pub max_release_fee_sats: u64,
    pub max_request_ttl_ms: i64,
}

#[derive(Serialize, Deserialize)]
struct LogLine {
    op_key: String,
    resource: String,
    /// Further resources the operation used (counted deposit outpoints, release inputs);
    /// absent in lines written before they were recorded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    uses: Vec<String>,
    op_digest: String,
    answer: Envelope,
}

struct OpLog {
    /// The durable record (`None`: in memory only, for tests that say so).
    file: Option<JsonLines<LogLine>>,
    /// op key ("mint:<id>") → (op digest, the answer sent).
    answered: HashMap<String, (String, Envelope)>,
    /// resource → op key that used it.
    used: HashMap<String, String>,
}

impl OpLog {
    /// Reads the record under the approval records' damage rule
    /// ([`crate::record::JsonLines::open`]): a torn last line is cut off, any other
    /// unparsable line is an error, since dropping it could let a burn, a deposit or
    /// an input be used a second time.
    fn open(path: Option<&Path>) -> Result<Self, RecordError> {
        let mut log = Self {
            file: None,
            answered: HashMap::new(),
            used: HashMap::new(),
        };
        if let Some(p) = path {
            let (file, lines) = JsonLines::<LogLine>::open(p)?;
            for line in lines {
                log.remember(line);
            }
            log.file = Some(file);
        }
        Ok(log)
    }

    /// Records the line on disk (fsync'd) before it counts.
    fn append(&mut self, line: LogLine) -> Result<(), RecordError> {
        if let Some(file) = &self.file {
            file.append_synced(&line)?;
        }
        self.remember(line);
        Ok(())
    }

    fn remember(&mut self, line: LogLine) {
        for r in line.uses {
            self.used.insert(r, line.op_key.clone());
        }
        self.used.insert(line.resource, line.op_key.clone());
        self.answered
            .insert(line.op_key, (line.op_digest, line.answer));
    }
}

/// One guardian's reserve-operations service.
pub struct ReserveGuardian {
    key: GuardianKey,
    coordinators: Vec<PublicKey>,
    bitcoin: Arc<dyn BitcoinBackend>,
    reserve: SortedMulti,
    network: Network,
    tokens: HashMap<String, Arc<dyn TokenView>>,
    policy: ReservePolicy,
    log: Mutex<OpLog>,
}

impl std::fmt::Debug for ReserveGuardian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReserveGuardian")
            .field("key", &self.key)
            .field("tokens", &self.tokens.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

struct Refusal(&'static str, String);

fn refuse<T>(code: &'static str, detail: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(code, detail.into()))
}

impl From<ChainError> for Refusal {
    fn from(e: ChainError) -> Self {
        Refusal("chain_unavailable", e.to_string())
    }
}

impl ReserveGuardian {
    /// `log_path`: where approvals are recorded (`None` keeps them in memory only, for
    /// tests that say so).
    #[allow(clippy::too_many_arguments)] // every view and policy a guardian decides with
    pub fn new(
        key: GuardianKey,
        coordinators: Vec<PublicKey>,
        bitcoin: Arc<dyn BitcoinBackend>,
        reserve: SortedMulti,
        network: Network,
        tokens: HashMap<String, Arc<dyn TokenView>>,
        policy: ReservePolicy,
        log_path: Option<&Path>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            key,
            coordinators,
            bitcoin,
            reserve,
            network,
            tokens,
            policy,
            // The io error keeps this constructor's signature; its text names the file
            // and the damaged line.
            log: Mutex::new(OpLog::open(log_path).map_err(std::io::Error::other)?),
        })
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    fn reserve_address(&self) -> String {
        self.reserve
            .address(self.network, Wrapping::Wsh)
            .to_string()
    }

    fn seal(
        &self,
        request_id: Uuid,
        op: &ReserveOp,
        op_digest: String,
        outcome: OpOutcome,
    ) -> Result<Envelope, protocol::ProtocolError> {
        protocol::seal(
            ANSWER_TAG,
            &ReserveOpAnswer {
                request_id,
                op_id: op.op_id(),
                kind: op.kind().to_owned(),
                guardian_key: self.key.public_hex(),
                op_digest,
                outcome,
                at: Timestamp::now(),
            },
            &self.key,
        )
    }

    /// Decides one request; every answer is signed. `Err` only for an envelope that
    /// cannot be read at all.
    pub async fn handle(&self, envelope: &Envelope) -> Result<Envelope, protocol::ProtocolError> {
        let (request, _) =
            protocol::open::<ReserveOpRequest>(REQUEST_TAG, envelope, &self.coordinators)?;
        let op_json = serde_json::to_string(&request.op)
            .map_err(|e| protocol::ProtocolError::Malformed(e.to_string()))?;
        let op_digest = hex::encode(Sha256::digest(op_json.as_bytes()));
        let op_key = format!("{}:{}", request.op.kind(), request.op.op_id());
        let now = Timestamp::now();
        if request.expires_at < now
            || request.issued_at > now.plus_millis(60_000)
            || request.expires_at.0.saturating_sub(request.issued_at.0)
                > self.policy.max_request_ttl_ms
        {
            return self.seal(
                request.request_id,
                &request.op,
                op_digest,
                OpOutcome::Refused {
                    code: "request_expired".into(),
                    detail: "outside its validity window or valid for too long".into(),
                },
            );
        }
        {
            let log = self.log.lock().await;
            if let Some((digest, answer)) = log.answered.get(&op_key) {
                if *digest == op_digest {
                    return Ok(answer.clone());
                }
                return self.seal(
                    request.request_id,
                    &request.op,
                    op_digest,
                    OpOutcome::Refused {
                        code: "already_decided_other".into(),
                        detail: format!("{op_key} was approved with other contents"),
                    },
                );
            }
            // A burn or deposit another operation used: no chain read can change that.
            let resource = request.op.resource();
            if let Some(other) = log.used.get(&resource) {
                return self.seal(
                    request.request_id,
                    &request.op,
                    op_digest,
                    OpOutcome::Refused {
                        code: "already_used".into(),
                        detail: format!("{resource} is used by {other}"),
                    },
                );
            }
        }
        // Chain reads happen outside the lock; the decision is re-checked under it.
        let decided = match &request.op {
            ReserveOp::Mint(m) => self.check_mint(m).await.map(|uses| (None, uses)),
            ReserveOp::Release(r) => self.check_release(r).await.map(|(p, uses)| (Some(p), uses)),
        };
        let (partial, uses) = match decided {
            Ok(p) => p,
            Err(Refusal(code, detail)) => {
                return self.seal(
                    request.request_id,
                    &request.op,
                    op_digest,
                    OpOutcome::Refused {
                        code: code.into(),
                        detail,
                    },
                )
            }
        };
        let mut log = self.log.lock().await;
        if let Some((digest, answer)) = log.answered.get(&op_key) {
            if *digest == op_digest {
                return Ok(answer.clone());
            }
            // Another request for this operation id, with other contents, was approved
            // while this one read the chains: one approval per operation id.
            return self.seal(
                request.request_id,
                &request.op,
                op_digest,
                OpOutcome::Refused {
                    code: "already_decided_other".into(),
                    detail: format!("{op_key} was approved with other contents"),
                },
            );
        }
        let resource = request.op.resource();
        for r in std::iter::once(&resource).chain(&uses) {
            let Some(other) = log.used.get(r) else {
                continue;
            };
            if *other != op_key {
                let resource = r;
                return self.seal(
                    request.request_id,
                    &request.op,
                    op_digest,
                    OpOutcome::Refused {
                        code: "already_used".into(),
                        detail: format!("{resource} is used by {other}"),
                    },
                );
            }
        }
        let answer = self.seal(
            request.request_id,
            &request.op,
            op_digest.clone(),
            OpOutcome::Approved {
                partial,
                recorded_at: now,
            },
        )?;
        if let Err(e) = log.append(LogLine {
            op_key,
            resource,
            uses,
            op_digest: op_digest.clone(),
            answer: answer.clone(),
        }) {
            tracing::error!(error = %e, "cannot record a reserve-op approval; refusing");
            return self.seal(
                request.request_id,
                &request.op,
                op_digest,
                OpOutcome::Refused {
                    code: "internal".into(),
                    detail: "approval could not be recorded".into(),
                },
            );
        }
        Ok(answer)
    }

    async fn reserves_sats(&self) -> Result<u64, Refusal> {
        Ok(self
            .bitcoin
            .address_utxos(&self.reserve_address())
            .await?
            .iter()
            .fold(0u64, |a, u| a.saturating_add(u.amount_sats)))
    }

    /// `Ok`: the deposit outpoints the mint counted (each backs one mint only).
    async fn check_mint(&self, m: &MintCheck) -> Result<Vec<String>, Refusal> {
        if !self.tokens.contains_key(&m.chain) {
            return refuse(
                "unknown_chain",
                format!("this guardian does not watch {}", m.chain),
            );
        }
        if m.amount_sats == 0 || m.amount_sats > m.deposit_sats {
            return refuse(
                "exceeds_deposit",
                "the mint must be positive and at most the deposit",
            );
        }
        if m.deposit_address != self.reserve_address() {
            return refuse(
                "not_reserve_address",
                "the deposit is not to this guardian's reserve address",
            );
        }
        let confs = self.bitcoin.tx_confirmations(&m.deposit_txid).await?;
        let Some(confs) = confs else {
            return refuse(
                "deposit_unknown",
                "the deposit transaction is unknown to this guardian",
            );
        };
        if confs < self.policy.min_deposit_confirmations {
            return refuse(
                "deposit_unconfirmed",
                format!(
                    "{confs} confirmations, {} needed",
                    self.policy.min_deposit_confirmations
                ),
            );
        }
        let utxos = self.bitcoin.address_utxos(&m.deposit_address).await?;
        let counted: Vec<_> = utxos
            .iter()
            .filter(|u| u.txid == m.deposit_txid && m.deposit_vout.is_none_or(|v| v == u.vout))
            .collect();
        let paid: u64 = counted
            .iter()
            .fold(0, |a, u| a.saturating_add(u.amount_sats));
        // Keyed by each outpoint counted, so "any output of the tx" (no vout) and "output
        // 0" of one deposit cannot back two mints.
        let uses = counted
            .iter()
            .map(|u| outpoint_resource("deposit", &u.txid, u.vout))
            .collect();
        if paid < m.deposit_sats || paid < m.amount_sats {
            return refuse(
                "deposit_mismatch",
                format!("the deposit pays {paid} sats unspent to the reserve"),
            );
        }
        let reserves = self.reserves_sats().await?;
        let mut supply = 0u64;
        for view in self.tokens.values() {
            supply = supply.saturating_add(view.supply_sats().await?);
        }
        let after = supply.saturating_add(m.amount_sats);
        if after > reserves {
            return refuse(
                "ratio_below_one",
                format!("supply after the mint {after} sats > reserves {reserves} sats"),
            );
        }
        Ok(uses)
    }

    /// `Ok`: this guardian's signatures and the outpoints they spend.
    async fn check_release(
        &self,
        r: &ReleaseCheck,
    ) -> Result<(PartialSignature, Vec<String>), Refusal> {
        let Some(view) = self.tokens.get(&r.chain) else {
            return refuse(
                "unknown_chain",
                format!("this guardian does not watch {}", r.chain),
            );
        };
        if r.release.descriptor != self.reserve.descriptor_wsh()
            || r.release.network != self.network
        {
            return refuse(
                "not_reserve",
                "the release does not spend this guardian's reserve",
            );
        }
        let Some(burn) = view.burn(&r.burn_tx).await? else {
            return refuse(
                "burn_unknown",
                "no successful burn in that transaction on this guardian's view",
            );
        };
        if burn.confirmations < self.policy.min_burn_confirmations {
            return refuse(
                "burn_unconfirmed",
                format!(
                    "{} confirmations, {} needed",
                    burn.confirmations, self.policy.min_burn_confirmations
                ),
            );
        }
        let summary = r
            .release
            .summary()
            .map_err(|e| Refusal("bad_request", e.to_string()))?;
        let redeemer = r
            .redeemer_address
            .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()
            .ok()
            .and_then(|a| a.require_network(self.network).ok())
            .map(|a| a.script_pubkey().to_hex_string());
        let Some(redeemer) = redeemer else {
            return refuse("bad_request", "the redeemer address is not valid here");
        };
        let reserve = self.reserve.script_pubkey(Wrapping::Wsh).to_hex_string();
        if redeemer == reserve {
            return refuse("bad_request", "the redeemer address is the reserve's");
        }
        if let Some((spk, _)) = summary
            .outputs
            .iter()
            .find(|(s, _)| *s != redeemer && *s != reserve)
        {
            return refuse(
                "bad_request",
                format!("an output pays someone else ({spk})"),
            );
        }
        let paid: u64 = summary
            .outputs
            .iter()
            .filter(|(s, _)| *s == redeemer)
            .fold(0, |a, (_, v)| a.saturating_add(*v));
        if summary.fee_sats > self.policy.max_release_fee_sats {
            return refuse(
                "fee_too_high",
                format!(
                    "fee {} sats > policy {}",
                    summary.fee_sats, self.policy.max_release_fee_sats
                ),
            );
        }
        let out_of_reserve = paid.saturating_add(summary.fee_sats);
        if u128::from(out_of_reserve) > burn.amount {
            return refuse(
                "release_exceeds_burn",
                format!(
                    "the release takes {out_of_reserve} sats, the burn was {}",
                    burn.amount
                ),
            );
        }
        let uses = self.check_inputs(&r.release).await?;
        let partial = release::sign_release(&r.release, self.key.secret())
            .map_err(|e| Refusal("bad_request", e.to_string()))?;
        Ok((partial, uses))
    }

    /// Every input against this guardian's own view: an unspent output of the reserve
    /// address, in a confirmed transaction, with exactly the stated amount and script.
    async fn check_inputs(
        &self,
        release: &release::ReleaseRequest,
    ) -> Result<Vec<String>, Refusal> {
        let own = self.bitcoin.address_utxos(&self.reserve_address()).await?;
        let mut uses = Vec::with_capacity(release.utxos.len());
        let mut confirmed: HashMap<&str, bool> = HashMap::new();
        for u in &release.utxos {
            if let Some(why) = crate::utxo_check::mismatch(&own, u) {
                return refuse("utxo_mismatch", why);
            }
            if !confirmed.contains_key(u.txid.as_str()) {
                let depth = self.bitcoin.tx_confirmations(&u.txid).await?;
                confirmed.insert(&u.txid, depth.is_some_and(|d| d >= 1));
            }
            if confirmed.get(u.txid.as_str()) != Some(&true) {
                return refuse(
                    "utxo_mismatch",
                    format!("{}:{} is not confirmed here", u.txid, u.vout),
                );
            }
            uses.push(outpoint_resource("spend", &u.txid, u.vout));
        }
        Ok(uses)
    }
}

/// `POST /v1/reserve-ops`: merge into the guardian's router (see `server::router`).
pub fn router(guardian: Arc<ReserveGuardian>) -> Router {
    Router::new()
        .route(RESERVE_OPS_PATH, post(handler))
        .layer(axum::extract::DefaultBodyLimit::max(
            protocol::MAX_BODY_BYTES * 2,
        ))
        .with_state(guardian)
}

async fn handler(
    State(g): State<Arc<ReserveGuardian>>,
    Json(envelope): Json<Envelope>,
) -> Response {
    match g.handle(&envelope).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => {
            let status = match e {
                protocol::ProtocolError::UnknownSigner | protocol::ProtocolError::BadSignature => {
                    StatusCode::UNAUTHORIZED
                }
                protocol::ProtocolError::Malformed(_) => StatusCode::BAD_REQUEST,
            };
            (
                status,
                Json(serde_json::json!({ "code": "bad_request_signature", "message": e.to_string() })),
            )
                .into_response()
        }
    }
}

// ----- the coordinator's side -----

/// One guardian as the coordinator knows it.
#[derive(Clone, Debug)]
pub struct ReserveEndpoint {
    /// Base URL, e.g. `http://127.0.0.1:7001`.
    pub url: String,
    /// Its registered key: answers signed by any other key do not count.
    pub key: PublicKey,
}

/// Asks every guardian at once and authenticates each answer; implements the
/// pipeline's [`ReserveApprovers`].
pub struct ReserveOpsClient {
    endpoints: Vec<ReserveEndpoint>,
    key: GuardianKey,
    threshold: usize,
    http: reqwest::Client,
    ttl_ms: i64,
}

impl ReserveOpsClient {
    pub fn new(
        endpoints: Vec<ReserveEndpoint>,
        coordinator_key: GuardianKey,
        threshold: usize,
        timeout: std::time::Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            endpoints,
            key: coordinator_key,
            threshold,
            http: reqwest::Client::builder().timeout(timeout).build()?,
            ttl_ms: 60_000,
        })
    }

    async fn ask(&self, op: ReserveOp) -> Vec<GuardianVote> {
        let now = Timestamp::now();
        let request = ReserveOpRequest {
            request_id: Uuid::now_v7(),
            issued_at: now,
            expires_at: now.plus_millis(self.ttl_ms),
            op: op.clone(),
        };
        let Ok(envelope) = protocol::seal(REQUEST_TAG, &request, &self.key) else {
            return Vec::new();
        };
        let asks = self.endpoints.iter().map(|ep| {
            let envelope = envelope.clone();
            let op = op.clone();
            async move { self.ask_one(ep, &envelope, &op).await }
        });
        futures::future::join_all(asks)
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn ask_one(
        &self,
        ep: &ReserveEndpoint,
        envelope: &Envelope,
        op: &ReserveOp,
    ) -> Option<GuardianVote> {
        let url = format!("{}{RESERVE_OPS_PATH}", ep.url.trim_end_matches('/'));
        let answer: Envelope = match self.http.post(&url).json(envelope).send().await {
            Ok(r) if r.status().is_success() => r.json().await.ok()?,
            Ok(r) => {
                tracing::warn!(guardian = %ep.key, status = %r.status(), "guardian refused the envelope");
                return None;
            }
            Err(e) => {
                tracing::warn!(guardian = %ep.key, error = %e, "guardian unreachable");
                return None;
            }
        };
        let (body, _) = match protocol::open::<ReserveOpAnswer>(ANSWER_TAG, &answer, &[ep.key]) {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(guardian = %ep.key, error = %e, "answer not signed by the registered key");
                return None;
            }
        };
        if body.op_id != op.op_id() || body.kind != op.kind() {
            return None;
        }
        let answer_json = serde_json::to_string(&answer).ok()?;
        let decision = match body.outcome {
            OpOutcome::Refused { code, detail } => Err((code, detail)),
            OpOutcome::Approved { partial, .. } => match (op, partial) {
                (ReserveOp::Mint(_), _) => Ok(None),
                (ReserveOp::Release(r), Some(p)) => {
                    // Counted only if it is this guardian's key and signs this release.
                    let own = p.pubkey == CompressedPublicKey(ep.key);
                    match release::verify_release_partial(&r.release, &p) {
                        Ok(()) if own => Ok(Some(p)),
                        Ok(()) => Err(("bad_partial".into(), "partial of another key".into())),
                        Err(e) => Err(("bad_partial".into(), e.to_string())),
                    }
                }
                (ReserveOp::Release(_), None) => {
                    Err(("bad_partial".into(), "no partial signature".into()))
                }
            },
        };
        Some(GuardianVote {
            guardian_key: ep.key.to_string(),
            answer_json,
            decision,
        })
    }
}

#[async_trait]
impl ReserveApprovers for ReserveOpsClient {
    fn threshold(&self) -> usize {
        self.threshold
    }
    async fn ask_mint(&self, check: &MintCheck) -> Vec<GuardianVote> {
        self.ask(ReserveOp::Mint(check.clone())).await
    }
    async fn ask_release(&self, check: &ReleaseCheck) -> Vec<GuardianVote> {
        self.ask(ReserveOp::Release(check.clone())).await
    }
}

/// The minter's key, held encrypted at rest in the same keystore format as guardian
/// keys (Argon2id + AES-256-GCM); only the minter ever sees the secret.
pub fn load_minter_key(path: &Path, passphrase: &Passphrase) -> Result<SecretKey, KeystoreError> {
    Ok(*keystore::load(path, passphrase)?.secret())
}

/// Encrypts a minter key into a keystore file (`ubtc admin` key ceremony, tests).
pub fn store_minter_key(
    path: &Path,
    secret: SecretKey,
    passphrase: &Passphrase,
) -> Result<(), KeystoreError> {
    let json = keystore::encrypt(&GuardianKey::from_secret(secret), passphrase)?;
    if path.exists() {
        return Err(KeystoreError::Exists(path.display().to_string()));
    }
    std::fs::write(path, json).map_err(|source| KeystoreError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// `[reserve_ops]` of `guardian.toml`: this guardian also approves mints and signs
/// releases (docs/reserve-ops.md). Its Bitcoin view is the file's `[bitcoin]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianReserveOpsConfig {
    /// The reserve policy: M and every guardian's key (compressed hex); this
    /// guardian's own key must be one of them.
    pub threshold: usize,
    pub keys: Vec<String>,
    /// `bitcoin`, `testnet`, `signet` or `regtest`.
    pub network: Network,
    /// The durable record of reserve-op approvals (JSON lines, fsync'd).
    pub approvals: PathBuf,
    pub min_deposit_confirmations: u32,
    pub min_burn_confirmations: u64,
    pub max_release_fee_sats: u64,
    /// This guardian's own endpoint for each token chain.
    pub tokens: Vec<GuardianTokenConfig>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianTokenConfig {
    pub chain: String,
    /// `evm` (default) or `solana`.
    #[serde(default)]
    pub kind: TokenChainKind,
    pub rpc_url: String,
    /// The WrappedBTC contract (`evm`) or the wrapped token's SPL mint (`solana`).
    pub token: String,
    /// `solana`: `finalized` (default) or `confirmed`.
    #[serde(default)]
    pub commitment: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenChainKind {
    #[default]
    Evm,
    Solana,
}

impl ReserveGuardian {
    /// Builds the reserve-ops service of a guardian from its configuration; `None`
    /// when the file has no `[reserve_ops]`.
    pub fn from_config(
        config: &crate::GuardianConfig,
        key: GuardianKey,
    ) -> Result<Option<Self>, crate::config::ConfigError> {
        use crate::config::ConfigError;
        let Some(r) = &config.reserve_ops else {
            return Ok(None);
        };
        let invalid = |m: String| ConfigError::Invalid(format!("reserve_ops: {m}"));
        let keys = r
            .keys
            .iter()
            .map(|k| {
                k.parse::<PublicKey>()
                    .map(CompressedPublicKey)
                    .map_err(|_| invalid(format!("{k:?} is not a compressed public key")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let reserve = SortedMulti::new(r.threshold, keys).map_err(|e| invalid(e.to_string()))?;
        if !reserve.keys().contains(&CompressedPublicKey(key.public())) {
            return Err(invalid(
                "this guardian's key is not one of the reserve keys".into(),
            ));
        }
        let mut tokens: HashMap<String, Arc<dyn TokenView>> = HashMap::new();
        for t in &r.tokens {
            let err = |e: ChainError| invalid(format!("{}: {e}", t.chain));
            let view: Arc<dyn TokenView> = match t.kind {
                TokenChainKind::Evm => Arc::new(
                    EvmTokenView::new(&t.rpc_url, &t.token, RetryPolicy::default()).map_err(err)?,
                ),
                TokenChainKind::Solana => {
                    let chain = ubtc_core::ChainId::parse(&t.chain)
                        .map_err(|e| invalid(format!("{}: {e}", t.chain)))?;
                    // The payment address is not used by the token view.
                    let mut c = ubtc_chains::solana::SolanaConfig::new(chain, &t.rpc_url, &t.token);
                    c.token_mint = Some(t.token.clone());
                    if let Some(level) = &t.commitment {
                        c.commitment =
                            ubtc_chains::solana::Commitment::parse(level).map_err(err)?;
                    }
                    Arc::new(crate::solana_view::SolanaTokenView::new(&c).map_err(err)?)
                }
            };
            if t.kind == TokenChainKind::Evm && t.commitment.is_some() {
                return Err(invalid(format!(
                    "{}: commitment is for kind \"solana\"",
                    t.chain
                )));
            }
            tokens.insert(t.chain.clone(), view);
        }
        // An `evm` chain view with a token contract is also this chain's token view:
        // the same node and contract serve payments and reserve operations, so they
        // are written once. Named in both places, the two could disagree: refused.
        for c in &config.chains {
            let Some(token) = c.token_contract.as_deref() else {
                continue;
            };
            if tokens.contains_key(c.name.as_str()) {
                return Err(invalid(format!(
                    "{}: the token is set both in [[chains]] (token_contract) and in \
                     [[reserve_ops.tokens]]; keep one",
                    c.name
                )));
            }
            let err = |e: ChainError| invalid(format!("{}: {e}", c.name));
            let evm = c.evm_config()?;
            let view = EvmTokenView::new(&evm.rpc_url, token, evm.retry).map_err(err)?;
            tokens.insert(c.name.to_string(), Arc::new(view));
        }
        let coordinators = config.coordinator_keys()?;
        let policy = ReservePolicy {
            min_deposit_confirmations: r.min_deposit_confirmations.max(1),
            min_burn_confirmations: r.min_burn_confirmations.max(1),
            max_release_fee_sats: r.max_release_fee_sats,
            max_request_ttl_ms: (config.max_request_ttl_secs as i64).saturating_mul(1000),
        };
        Self::new(
            key,
            coordinators,
            config.bitcoin.backend()?,
            reserve,
            r.network,
            tokens,
            policy,
            Some(&r.approvals),
        )
        .map(Some)
        .map_err(|source| ConfigError::Read {
            path: r.approvals.display().to_string(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config_text(keys: &[String], approvals: &Path) -> String {
        let coordinator = GuardianKey::generate().public_hex();
        let reserve = SortedMulti::new(2, keys.iter().map(|k| k.parse().unwrap()).collect())
            .unwrap()
            .descriptor_wsh();
        let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        format!(
            "listen = \"127.0.0.1:0\"\nkeystore = \"k.json\"\napprovals = \"a.jsonl\"\n\
             coordinators = [\"{coordinator}\"]\nchains = []\n\
             [bitcoin]\nbackend = \"dev\"\ndev_height = 100\n\
             [policy]\nreserves = [\"{reserve}\"]\n\
             [reserve_ops]\nthreshold = 2\nkeys = [{}]\nnetwork = \"regtest\"\n\
             approvals = \"{}\"\nmin_deposit_confirmations = 6\nmin_burn_confirmations = 12\n\
             max_release_fee_sats = 50000\n\
             [[reserve_ops.tokens]]\nchain = \"ethereum\"\nrpc_url = \"http://127.0.0.1:1\"\n\
             token = \"0x00000000000000000000000000000000000000aa\"\n",
            keys.join(", "),
            approvals.display()
        )
    }

    fn line(op: &str, resource: &str, answer: &Envelope) -> LogLine {
        LogLine {
            op_key: op.into(),
            resource: resource.into(),
            uses: vec![format!("{resource}:used")],
            op_digest: format!("digest of {op}"),
            answer: answer.clone(),
        }
    }

    /// The approval records' damage rule, on the reserve-ops record: a torn tail is cut
    /// on open, two more approvals and another open keep every complete line, and an
    /// unparsable line elsewhere is an error (it used to be dropped silently, so the
    /// burn or input it recorded could be used again).
    #[test]
    fn torn_tail_is_cut_later_approvals_survive_other_damage_stops() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("reserve.jsonl");
        let key = GuardianKey::generate();
        let answer = protocol::seal(ANSWER_TAG, &serde_json::json!({"x": 1}), &key).unwrap();
        let mut log = OpLog::open(Some(&path)).unwrap();
        log.append(line("mint:1", "deposit:aa:0", &answer)).unwrap();
        drop(log);
        // A crash in the middle of the next write leaves half a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(br#"{"op_key":"mint:2","resou"#).unwrap();
        drop(f);
        let mut log = OpLog::open(Some(&path)).unwrap();
        assert_eq!(
            log.file.as_ref().unwrap().torn_tail().map(|t| t.line),
            Some(2)
        );
        let (digest, env) = log.answered.get("mint:1").unwrap();
        assert_eq!(digest, "digest of mint:1");
        assert_eq!(env.body, answer.body);
        assert_eq!(env.signature, answer.signature);
        assert_eq!(
            log.used.get("deposit:aa:0:used").map(String::as_str),
            Some("mint:1")
        );
        assert!(!log.answered.contains_key("mint:2"));
        log.append(line("mint:3", "deposit:bb:0", &answer)).unwrap();
        log.append(line("release:4", "burn:x:0x04", &answer))
            .unwrap();
        drop(log);
        let log = OpLog::open(Some(&path)).unwrap();
        assert!(log.file.as_ref().unwrap().torn_tail().is_none());
        for op in ["mint:1", "mint:3", "release:4"] {
            assert!(log.answered.contains_key(op), "{op}");
        }
        assert_eq!(
            log.used.get("burn:x:0x04").map(String::as_str),
            Some("release:4")
        );
        drop(log);
        // An unparsable line in the middle: an error naming the file and the line.
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let damaged = format!(
            "{}\n{{\"op_key\":\"mint:2\",\"reso\n{}\n",
            lines[0], lines[1]
        );
        std::fs::write(&path, &damaged).unwrap();
        let Err(e) = OpLog::open(Some(&path)) else {
            panic!("a damaged record opened")
        };
        assert!(matches!(e, RecordError::Damaged { line: 2, .. }), "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), damaged);
    }

    #[test]
    fn guardian_toml_reserve_ops_section() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<GuardianKey> = (0..3).map(|_| GuardianKey::generate()).collect();
        let hex: Vec<String> = keys.iter().map(GuardianKey::public_hex).collect();
        let path = dir.path().join("reserve.jsonl");
        let config = crate::GuardianConfig::parse(&config_text(&hex, &path)).unwrap();
        let r = config.reserve_ops.as_ref().unwrap();
        assert_eq!((r.threshold, r.network), (2, Network::Regtest));
        let g = ReserveGuardian::from_config(&config, keys[1].clone())
            .unwrap()
            .unwrap();
        assert_eq!(g.public_key(), keys[1].public());
        assert_eq!(g.policy.min_burn_confirmations, 12);
        assert!(g.tokens.contains_key("ethereum"));
        // A key outside the reserve policy is refused.
        let outsider = GuardianKey::generate();
        assert!(ReserveGuardian::from_config(&config, outsider).is_err());
        // Without the section: no reserve-ops service.
        let text = config_text(&hex, &path);
        let without = &text[..text.find("[reserve_ops]").unwrap()];
        let c = crate::GuardianConfig::parse(without).unwrap();
        assert!(ReserveGuardian::from_config(&c, keys[0].clone())
            .unwrap()
            .is_none());
    }

    #[test]
    fn guardian_toml_solana_token_chain() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<GuardianKey> = (0..3).map(|_| GuardianKey::generate()).collect();
        let hex: Vec<String> = keys.iter().map(GuardianKey::public_hex).collect();
        let path = dir.path().join("reserve.jsonl");
        let mint = "So11111111111111111111111111111111111111112";
        let solana = format!(
            "[[reserve_ops.tokens]]\nchain = \"solana\"\nkind = \"solana\"\n\
             rpc_url = \"http://127.0.0.1:1\"\ntoken = \"{mint}\"\ncommitment = \"confirmed\"\n"
        );
        let build = |extra: &str| {
            let text = format!("{}{extra}", config_text(&hex, &path));
            let config = crate::GuardianConfig::parse(&text).unwrap();
            ReserveGuardian::from_config(&config, keys[0].clone())
        };
        let g = build(&solana).unwrap().unwrap();
        assert!(g.tokens.contains_key("solana") && g.tokens.contains_key("ethereum"));
        // A mint that is not a base58 key, an unknown commitment, or a commitment on
        // an EVM token chain: refused.
        for bad in [
            solana.replace(mint, "0x00000000000000000000000000000000000000aa"),
            solana.replace("\"confirmed\"", "\"processed\""),
        ] {
            assert!(build(&bad).is_err(), "{bad}");
        }
        let evm_with_commitment = solana
            .replace("kind = \"solana\"\n", "")
            .replace("chain = \"solana\"", "chain = \"base\"")
            .replace(mint, "0x00000000000000000000000000000000000000bb");
        assert!(build(&evm_with_commitment.replace("commitment = \"confirmed\"\n", "")).is_ok());
        assert!(build(&evm_with_commitment).is_err());
    }

    #[test]
    fn an_evm_chain_view_with_a_token_is_the_token_view() {
        let dir = tempfile::tempdir().unwrap();
        let keys: Vec<GuardianKey> = (0..3).map(|_| GuardianKey::generate()).collect();
        let hex: Vec<String> = keys.iter().map(GuardianKey::public_hex).collect();
        let path = dir.path().join("reserve.jsonl");
        let chain = |name: &str| {
            format!(
                "[[chains]]\nname = \"{name}\"\nkind = \"evm\"\nurl = \"http://127.0.0.1:1\"\n\
                 chain_id = 8453\npayment_contract = \"0x00000000000000000000000000000000000000cc\"\n\
                 token_contract = \"0x00000000000000000000000000000000000000dd\"\nconfirmations = 6\n"
            )
        };
        let build = |chains: &str| {
            let text = format!(
                "{}{chains}",
                config_text(&hex, &path).replace("chains = []\n", "")
            );
            let config = crate::GuardianConfig::parse(&text).unwrap();
            ReserveGuardian::from_config(&config, keys[0].clone())
        };
        let g = build(&chain("base")).unwrap().unwrap();
        assert!(g.tokens.contains_key("base") && g.tokens.contains_key("ethereum"));
        // The same chain's token in both places could disagree: refused.
        match build(&chain("ethereum")) {
            Err(crate::config::ConfigError::Invalid(m)) => {
                assert!(m.contains("ethereum") && m.contains("both"), "{m}")
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
        // Without token_contract the chain is no token view.
        let g = build(&chain("base").replace(
            "token_contract = \"0x00000000000000000000000000000000000000dd\"\n",
            "",
        ))
        .unwrap()
        .unwrap();
        assert!(!g.tokens.contains_key("base"));
    }
}
