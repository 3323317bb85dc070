//! Reserve operations in the admin API (see docs/reserve-ops.md): operators record
//! deposits and request mints, burns and releases; operators and auditors list them.
//! Requests go through the pipeline's [`ReserveOps`] (edge checks, ratio, governor,
//! audit); lists read the store. Every refusal has its own code in the error table.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use ubtc_bitcoin::release::ReleaseError;
use ubtc_core::Timestamp;
use ubtc_pipeline::reserve_ops::{Actor, DepositRequest, OpsError, ReserveOps};
use ubtc_store::reserve_ops::{
    Burn, BurnState, Deposit, DepositState, Mint, MintState, OpApproval, OpKind, OpRefusal,
    Release, ReleaseState,
};

use super::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiQuery};
use crate::state::ApiState;

const LIST_LIMIT_DEFAULT: u32 = 100;
const LIST_LIMIT_MAX: u32 = 1000;

fn ops(state: &ApiState) -> Result<&ReserveOps, ApiError> {
    state.reserve_ops.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::ReserveOpsDisabled,
            "reserve operations are not configured on this server",
        )
    })
}

fn actor(p: &Principal) -> Actor {
    Actor {
        name: p.subject.clone(),
        ip: p.ip.map(|ip| ip.to_string()),
        user_agent: p.user_agent.clone(),
    }
}

/// The one mapping from the workflow's refusals to the API's code table.
fn api_error(e: OpsError) -> ApiError {
    let code = match &e {
        OpsError::UnknownChain(_) => ErrorCode::UnknownChain,
        OpsError::InvalidAmount(_) => ErrorCode::InvalidAmount,
        OpsError::InvalidAddress(_) => ErrorCode::InvalidAddress,
        OpsError::RatioBelowOne { .. } => ErrorCode::RatioBelowOne,
        OpsError::Refused(r) => match r {
            OpRefusal::NotFound { .. } => ErrorCode::OperationNotFound,
            OpRefusal::DepositNotConfirmed => ErrorCode::DepositNotConfirmed,
            OpRefusal::ExceedsDeposit { .. } => ErrorCode::ExceedsDeposit,
            OpRefusal::BurnNotConfirmed => ErrorCode::BurnNotConfirmed,
            OpRefusal::ExceedsBurn { .. } => ErrorCode::ReleaseExceedsBurn,
            OpRefusal::DailyLimit { .. } => ErrorCode::DailyLimitExceeded,
            OpRefusal::Conflict(_) => ErrorCode::OperationConflict,
            OpRefusal::WrongState { .. } => ErrorCode::WrongState,
        },
        OpsError::Release(ReleaseError::InsufficientFunds { .. }) => {
            ErrorCode::InsufficientReserves
        }
        OpsError::Release(_) => ErrorCode::ReleaseInvalid,
        OpsError::Chain(c) => {
            // The node's answer may name internal hosts: logged, not shown.
            tracing::warn!(error = %c, "reserve operation: chain unavailable");
            return ApiError::new(
                ErrorCode::ChainUnavailable,
                "a chain node could not be read; try again later",
            );
        }
        OpsError::Store(_) => {
            return match e {
                OpsError::Store(s) => s.into(),
                other => ApiError::internal(other),
            }
        }
    };
    ApiError::new(code, e.to_string())
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    limit: Option<u32>,
}

impl ListQuery {
    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(LIST_LIMIT_DEFAULT),
            Some(n) if (1..=LIST_LIMIT_MAX).contains(&n) => Ok(n),
            Some(_) => Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!("limit must be 1 to {LIST_LIMIT_MAX}"),
            )),
        }
    }
}

fn bad_state(s: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidStatus, format!("unknown state {s:?}"))
}

#[derive(Serialize)]
pub struct List<T> {
    items: Vec<T>,
}

// ----- guardian approvals -----

/// One guardian's recorded answer to a mint or release, as the admin lists show it.
/// The store keeps the answers that approved (a refusal is logged, not stored), so
/// `decision` is `approved` unless the stored answer says otherwise.
#[derive(Debug, Serialize)]
pub struct ApprovalView {
    /// The guardian's compressed public key, hex.
    pub guardian_key: String,
    /// First 8 bytes of SHA-256 of that key, hex (as `ubtc keys` prints it).
    pub fingerprint: Option<String>,
    /// `approved` or `refused`, read from the guardian's signed answer.
    pub decision: String,
    /// The guardian's refusal code, when it refused.
    pub reason_code: Option<String>,
    /// When the guardian answered (its own clock, from the signed answer).
    pub answered_at: Option<Timestamp>,
    /// When the coordinator recorded the answer.
    pub recorded_at: Timestamp,
}

impl From<&OpApproval> for ApprovalView {
    fn from(a: &OpApproval) -> Self {
        use sha2::Digest;
        let fingerprint = hex::decode(&a.guardian_key)
            .ok()
            .map(|k| hex::encode(&sha2::Sha256::digest(k)[..8]));
        // The stored answer is the signed envelope `{body, signer, signature}` whose
        // body is the answer's JSON text; it was verified before it was recorded.
        let body: Option<serde_json::Value> = serde_json::from_str::<serde_json::Value>(&a.answer)
            .ok()
            .and_then(|env| {
                env.get("body")
                    .and_then(|b| b.as_str())
                    .and_then(|b| serde_json::from_str(b).ok())
            });
        let outcome = body.as_ref().and_then(|b| b.get("outcome"));
        let text = |v: Option<&serde_json::Value>, k: &str| {
            v.and_then(|v| v.get(k))
                .and_then(|x| x.as_str())
                .map(str::to_owned)
        };
        Self {
            guardian_key: a.guardian_key.clone(),
            fingerprint,
            decision: text(outcome, "decision").unwrap_or_else(|| "approved".into()),
            reason_code: text(outcome, "code"),
            answered_at: body
                .as_ref()
                .and_then(|b| b.get("at"))
                .and_then(|t| serde_json::from_value(t.clone()).ok()),
            recorded_at: a.created_at,
        }
    }
}

/// A mint or release with its guardians' answers.
#[derive(Serialize)]
pub struct WithApprovals<T> {
    #[serde(flatten)]
    op: T,
    approvals: Vec<ApprovalView>,
}

async fn approvals(
    state: &ApiState,
    kind: OpKind,
    id: uuid::Uuid,
) -> Result<Vec<ApprovalView>, ApiError> {
    Ok(state
        .store
        .list_op_approvals(kind, id)
        .await?
        .iter()
        .map(ApprovalView::from)
        .collect())
}

// ----- deposits -----

pub async fn record_deposit(
    State(state): State<ApiState>,
    principal: Principal,
    ApiJson(body): ApiJson<DepositRequest>,
) -> Result<(StatusCode, Json<Deposit>), ApiError> {
    let d = ops(&state)?
        .record_deposit(&actor(&principal), &body)
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(d)))
}

pub async fn list_deposits(
    State(state): State<ApiState>,
    _principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List<Deposit>>, ApiError> {
    let s = q
        .state
        .as_deref()
        .map(|s| DepositState::parse(s).map_err(|_| bad_state(s)))
        .transpose()?;
    let items = state.store.list_deposits(s, q.limit()?).await?;
    Ok(Json(List { items }))
}

// ----- mints -----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintBody {
    chain: String,
    to: String,
    /// Sats (token base units), as a decimal string or a JSON integer.
    amount: serde_json::Value,
    deposit_id: uuid::Uuid,
}

pub async fn request_mint(
    State(state): State<ApiState>,
    principal: Principal,
    ApiJson(body): ApiJson<MintBody>,
) -> Result<(StatusCode, Json<Mint>), ApiError> {
    let m = ops(&state)?
        .request_mint(
            &actor(&principal),
            &body.chain,
            &body.to,
            &body.amount,
            body.deposit_id,
        )
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(m)))
}

pub async fn list_mints(
    State(state): State<ApiState>,
    _principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List<WithApprovals<Mint>>>, ApiError> {
    let s = q
        .state
        .as_deref()
        .map(|s| MintState::parse(s).map_err(|_| bad_state(s)))
        .transpose()?;
    let mints = state.store.list_mints(s, q.limit()?).await?;
    // One read per listed mint: lists are bounded by `limit` and read by people.
    let mut items = Vec::with_capacity(mints.len());
    for m in mints {
        let approvals = approvals(&state, OpKind::Mint, m.id).await?;
        items.push(WithApprovals { op: m, approvals });
    }
    Ok(Json(List { items }))
}

// ----- burns -----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnBody {
    chain: String,
    amount: serde_json::Value,
    /// The Bitcoin address the released BTC goes to.
    redeemer: String,
}

pub async fn request_burn(
    State(state): State<ApiState>,
    principal: Principal,
    ApiJson(body): ApiJson<BurnBody>,
) -> Result<(StatusCode, Json<Burn>), ApiError> {
    let b = ops(&state)?
        .request_burn(
            &actor(&principal),
            &body.chain,
            &body.amount,
            &body.redeemer,
        )
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(b)))
}

pub async fn list_burns(
    State(state): State<ApiState>,
    _principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List<Burn>>, ApiError> {
    let s = q
        .state
        .as_deref()
        .map(|s| BurnState::parse(s).map_err(|_| bad_state(s)))
        .transpose()?;
    let items = state.store.list_burns(s, q.limit()?).await?;
    Ok(Json(List { items }))
}

// ----- releases -----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseBody {
    burn_id: uuid::Uuid,
    /// Paid to the redeemer, fee on top; absent: the burn's amount, fee included.
    #[serde(default)]
    amount: Option<serde_json::Value>,
}

pub async fn request_release(
    State(state): State<ApiState>,
    principal: Principal,
    ApiJson(body): ApiJson<ReleaseBody>,
) -> Result<(StatusCode, Json<Release>), ApiError> {
    let r = ops(&state)?
        .request_release(&actor(&principal), body.burn_id, body.amount.as_ref())
        .await
        .map_err(api_error)?;
    Ok((StatusCode::CREATED, Json(r)))
}

pub async fn list_releases(
    State(state): State<ApiState>,
    _principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<List<WithApprovals<Release>>>, ApiError> {
    let s = q
        .state
        .as_deref()
        .map(|s| ReleaseState::parse(s).map_err(|_| bad_state(s)))
        .transpose()?;
    let releases = state.store.list_releases(s, q.limit()?).await?;
    let mut items = Vec::with_capacity(releases.len());
    for r in releases {
        let approvals = approvals(&state, OpKind::Release, r.id).await?;
        items.push(WithApprovals { op: r, approvals });
    }
    Ok(Json(List { items }))
}
