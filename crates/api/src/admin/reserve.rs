//! Reserve operations in the admin API (see docs/reserve-ops.md): operators record
//! deposits and request mints, burns and releases; operators and auditors list them.
//! Requests go through the pipeline's [`ReserveOps`] (edge checks, ratio, governor,
//! audit); lists read the store. Every refusal has its own code in the error table.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use ubtc_bitcoin::release::ReleaseError;
use ubtc_pipeline::reserve_ops::{Actor, DepositRequest, OpsError, ReserveOps};
use ubtc_store::reserve_ops::{
    Burn, BurnState, Deposit, DepositState, Mint, MintState, OpRefusal, Release, ReleaseState,
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
) -> Result<Json<List<Mint>>, ApiError> {
    let s = q
        .state
        .as_deref()
        .map(|s| MintState::parse(s).map_err(|_| bad_state(s)))
        .transpose()?;
    let items = state.store.list_mints(s, q.limit()?).await?;
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
) -> Result<Json<List<Release>>, ApiError> {
    let s = q
        .state
        .as_deref()
        .map(|s| ReleaseState::parse(s).map_err(|_| bad_state(s)))
        .transpose()?;
    let items = state.store.list_releases(s, q.limit()?).await?;
    Ok(Json(List { items }))
}
