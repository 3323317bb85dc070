//! Route handlers. Each one parses its input into domain types first (errors name
//! the parameter), then asks the store, then maps records to DTOs.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use ubtc_core::payment::{Payer, TxHash};
use ubtc_core::{ChainId, ChainKind, Timestamp, ValidationId, ValidationStatus};
use ubtc_store::{HistoryBucket, ValidationFilter};

use crate::dto::{
    ChainList, DemoPaymentView, HistoryPointView, ReserveAddressView, ReserveHistoryView,
    ReservesView, SnapshotView, StatsView, ValidationList, ValidationView,
};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::{ApiState, DemoPaymentError, DemoPaymentRequest};

pub const LIST_LIMIT_DEFAULT: u32 = 50;
pub const LIST_LIMIT_MAX: u32 = 500;
/// Window of the processing-time percentiles in `/v1/stats`.
pub const STATS_WINDOW_SECS: i64 = 24 * 60 * 60;

/// Raw query of `GET /v1/validations`: strings, parsed below so each bad value gets
/// its own error code. Unknown parameters are refused rather than ignored, so a typo
/// (`?staus=`) does not silently return everything.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    chain: Option<String>,
    tx: Option<String>,
    before: Option<String>,
    limit: Option<String>,
}

fn parse_chain(state: &ApiState, name: &str) -> Result<ChainId, ApiError> {
    let chain = ChainId::parse(name)
        .map_err(|e| ApiError::new(ErrorCode::InvalidChain, format!("chain {name:?}: {e}")))?;
    if state.chain(&chain).is_none() {
        return Err(ApiError::new(
            ErrorCode::InvalidChain,
            format!("chain {name:?} is not configured (see /v1/chains)"),
        ));
    }
    Ok(chain)
}

fn parse_id(raw: &str) -> Result<ValidationId, ApiError> {
    raw.parse::<ValidationId>().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("{raw:?} is not a validation id (a UUID)"),
        )
    })
}

pub(crate) fn parse_limit(raw: Option<&str>) -> Result<u32, ApiError> {
    let Some(raw) = raw else {
        return Ok(LIST_LIMIT_DEFAULT);
    };
    match raw.parse::<u32>() {
        Ok(n) if (1..=LIST_LIMIT_MAX).contains(&n) => Ok(n),
        _ => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("limit must be a whole number from 1 to {LIST_LIMIT_MAX}, got {raw:?}"),
        )),
    }
}

pub async fn list_validations(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ValidationList>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(|s| {
            s.parse::<ValidationStatus>()
                .map_err(|e| ApiError::new(ErrorCode::InvalidStatus, e.to_string()))
        })
        .transpose()?;
    let chain = q
        .chain
        .as_deref()
        .map(|c| parse_chain(&state, c))
        .transpose()?;
    let before = q.before.as_deref().map(parse_id).transpose()?;
    let limit = parse_limit(q.limit.as_deref())?;
    let now = Timestamp::now();

    if let Some(tx) = q.tx.as_deref() {
        let tx = TxHash::parse(tx)
            .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, format!("tx: {e}")))?;
        if before.is_some() {
            // The validations of one transaction are a handful: never paginated.
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                "before cannot be combined with tx",
            ));
        }
        let mut records = state
            .store
            .find_by_payment(chain.as_ref(), tx.as_str())
            .await?;
        records.retain(|r| status.is_none_or(|s| r.status == s));
        records.sort_by_key(|r| std::cmp::Reverse(r.id));
        records.truncate(limit as usize);
        let items = records
            .iter()
            .map(|r| ValidationView::new(r, &state.chains, now))
            .collect();
        return Ok(Json(ValidationList {
            items,
            next_before: None,
        }));
    }

    // One extra row tells whether an older page exists without a count query.
    let filter = ValidationFilter {
        status,
        chain,
        before,
        limit: limit + 1,
    };
    let mut records = state.store.list_validations(&filter).await?;
    let has_more = records.len() > limit as usize;
    records.truncate(limit as usize);
    let next_before = has_more
        .then(|| records.last().map(|r| r.id.to_string()))
        .flatten();
    let items = records
        .iter()
        .map(|r| ValidationView::new(r, &state.chains, now))
        .collect();
    Ok(Json(ValidationList { items, next_before }))
}

pub async fn get_validation(
    State(state): State<ApiState>,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<Json<ValidationView>, ApiError> {
    let id = parse_id(&raw_id)?;
    let record = state.store.get_validation(id).await?.ok_or_else(|| {
        ApiError::new(
            ErrorCode::ValidationNotFound,
            format!("no validation with id {id}"),
        )
    })?;
    Ok(Json(ValidationView::new(
        &record,
        &state.chains,
        Timestamp::now(),
    )))
}

/// The bundle exactly as stored: its bytes are what signatures and hashes in it
/// refer to, so it is never re-serialised.
pub async fn get_proof(
    State(state): State<ApiState>,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&raw_id)?;
    if let Some(bundle) = state.store.get_bundle(id).await? {
        let mut response = (StatusCode::OK, bundle).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        // A validation is never signed twice: its bundle never changes once stored.
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("public, max-age=31536000, immutable"),
        );
        return Ok(response);
    }
    match state.store.get_validation(id).await? {
        None => Err(ApiError::new(
            ErrorCode::ValidationNotFound,
            format!("no validation with id {id}"),
        )),
        Some(record) => Err(ApiError::new(
            ErrorCode::ProofNotFound,
            format!(
                "validation {id} has no proof yet: its status is {}",
                record.status
            ),
        )),
    }
}

pub async fn list_chains(State(state): State<ApiState>) -> Response {
    Json(ChainList {
        items: &state.chains,
    })
    .into_response()
}

pub async fn reserves(State(state): State<ApiState>) -> Result<Json<ReservesView>, ApiError> {
    let addresses = state.store.list_reserve_addresses().await?;
    let snapshot = state.store.latest_reserve_snapshot().await?;
    let balances = match &snapshot {
        Some(s) => {
            state
                .store
                .reserve_address_balances(&s.bitcoin_block_hash)
                .await?
        }
        None => Vec::new(),
    };
    let attestation = state.store.latest_attestation().await?;
    let now = Timestamp::now();
    Ok(Json(ReservesView {
        attestation: attestation
            .as_ref()
            .map(|a| crate::attestations::AttestationView::new(&a.summary, now)),
        addresses: addresses
            .iter()
            .map(|a| ReserveAddressView::from(a).with_balance(&balances))
            .collect(),
        snapshot: snapshot
            .as_ref()
            .map(|s| SnapshotView::new(s, now, state.reserve_max_age_ms).with_balances(&balances)),
    }))
}

/// `GET /v1/reserves/registry`: every published reserve registry version, oldest
/// first, with each fingerprint (the same list `ubtc keys registry-export` writes, and
/// a file `ubtc verify --registry` reads).
pub async fn reserve_registry(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let versions = state.store.list_registry_versions().await?;
    let fingerprints: Vec<String> = versions.iter().map(|v| v.fingerprint()).collect();
    Ok(Json(serde_json::json!({
        "current_version": versions.last().map(|v| v.version),
        "current_fingerprint": fingerprints.last(),
        "fingerprints": fingerprints,
        "versions": versions,
    }))
    .into_response())
}

/// Most points one `GET /v1/reserves/history` answers: a day by minute, two months by
/// hour, four years by day. A wider range must use a coarser bucket.
pub const HISTORY_POINTS_MAX: i64 = 1_500;

/// Raw query of `GET /v1/reserves/history`, parsed in the handler.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    chain: Option<String>,
    from: Option<String>,
    to: Option<String>,
    bucket: Option<String>,
}

fn parse_bucket(raw: Option<&str>) -> Result<HistoryBucket, ApiError> {
    match raw {
        None | Some("hour") => Ok(HistoryBucket::Hour),
        Some("minute") => Ok(HistoryBucket::Minute),
        Some("day") => Ok(HistoryBucket::Day),
        Some(other) => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("bucket must be minute, hour or day, got {other:?}"),
        )),
    }
}

fn parse_time(name: &str, raw: &str) -> Result<Timestamp, ApiError> {
    Timestamp::parse_rfc3339(raw).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            format!("{name} must be an RFC 3339 time, got {raw:?}: {e}"),
        )
    })
}

fn bucket_name(bucket: HistoryBucket) -> &'static str {
    match bucket {
        HistoryBucket::Minute => "minute",
        HistoryBucket::Hour => "hour",
        HistoryBucket::Day => "day",
    }
}

/// The window shown when `from` is absent: an hour by minute, a day by hour, thirty
/// days by day.
fn default_window_ms(bucket: HistoryBucket) -> i64 {
    match bucket {
        HistoryBucket::Minute => 60 * 60_000,
        HistoryBucket::Hour => 24 * 3_600_000,
        HistoryBucket::Day => 30 * 86_400_000,
    }
}

pub async fn reserve_history(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<ReserveHistoryView>, ApiError> {
    let chain = q
        .chain
        .as_deref()
        .map(|c| parse_chain(&state, c))
        .transpose()?;
    let bucket = parse_bucket(q.bucket.as_deref())?;
    let to = match q.to.as_deref() {
        Some(raw) => parse_time("to", raw)?,
        None => Timestamp::now(),
    };
    let from = match q.from.as_deref() {
        Some(raw) => parse_time("from", raw)?,
        None => to.plus_millis(-default_window_ms(bucket)),
    };
    if from >= to {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("from ({from}) must be before to ({to})"),
        ));
    }
    // Buckets touched by [from, to), counting partial ones at both ends.
    let width = bucket.millis();
    let points =
        to.as_millis().saturating_sub(1).div_euclid(width) - from.as_millis().div_euclid(width) + 1;
    if points > HISTORY_POINTS_MAX {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!(
                "from..to spans {points} {} buckets, more than {HISTORY_POINTS_MAX}: \
                 narrow the range or use a larger bucket",
                bucket_name(bucket)
            ),
        ));
    }
    let limit = u32::try_from(points).unwrap_or(u32::MAX);
    let history = state.store.reserve_history(from, to, bucket, limit).await?;
    Ok(Json(ReserveHistoryView {
        chain: chain.as_ref().map(ToString::to_string),
        bucket: bucket_name(bucket),
        from,
        to,
        points: history
            .iter()
            .map(|p| HistoryPointView::new(p, chain.as_ref()))
            .collect(),
    }))
}

pub async fn stats(State(state): State<ApiState>) -> Result<Json<StatsView>, ApiError> {
    let since = Timestamp::now().plus_millis(-STATS_WINDOW_SECS * 1000);
    let stats = state.store.stats(since).await?;
    Ok(Json(StatsView::new(&stats, since, STATS_WINDOW_SECS)))
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    // Any failure means "not ready", whatever its kind: a load balancer only needs
    // to know whether to send traffic here.
    state
        .store
        .ping()
        .await
        .map_err(ApiError::DatabaseUnavailable)?;
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

pub async fn openapi() -> Response {
    let mut response = (StatusCode::OK, crate::openapi::document()).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DemoPaymentBody {
    chain: String,
    message: String,
    payer: Option<String>,
    amount: Option<String>,
}

pub async fn demo_payment(
    State(state): State<ApiState>,
    ApiJson(body): ApiJson<DemoPaymentBody>,
) -> Result<(StatusCode, Json<DemoPaymentView>), ApiError> {
    let Some(demo) = state.demo.clone() else {
        return Err(demo_disabled());
    };
    let chain = parse_chain(&state, &body.chain)?;
    if state.chain(&chain).map(|c| c.kind) != Some(ChainKind::Dev) {
        return Err(ApiError::new(
            ErrorCode::InvalidChain,
            format!("demo payments go to a dev chain only; {chain} is not one"),
        ));
    }
    let payer = body
        .payer
        .as_deref()
        .map(|p| {
            Payer::parse(p)
                .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, format!("payer: {e}")))
        })
        .transpose()?;
    let amount_base_units = body
        .amount
        .as_deref()
        .map(|a| {
            ubtc_core::TokenAmount::parse_base_units(a, 0)
                .map(|t| t.base_units)
                .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, format!("amount: {e}")))
        })
        .transpose()?;
    let request = DemoPaymentRequest {
        chain,
        message: body.message.into_bytes(),
        payer,
        amount_base_units,
    };
    let receipt = demo.submit(request).await.map_err(|e| match e {
        DemoPaymentError::Refused(msg) => ApiError::new(ErrorCode::DemoPaymentRefused, msg),
        DemoPaymentError::Unavailable(msg) => ApiError::new(
            ErrorCode::DemoUnavailable,
            format!("the dev chain is unavailable: {msg}"),
        ),
        DemoPaymentError::Other(err) => ApiError::Internal(err),
    })?;
    let view = DemoPaymentView {
        validations_url: format!(
            "/v1/validations?chain={}&tx={}",
            receipt.chain, receipt.tx_hash
        ),
        chain: receipt.chain.to_string(),
        tx_hash: receipt.tx_hash.to_string(),
        index: receipt.index,
    };
    Ok((StatusCode::ACCEPTED, Json(view)))
}

pub(crate) fn demo_disabled() -> ApiError {
    ApiError::new(
        ErrorCode::DemoDisabled,
        "demo routes exist only under `ubtc demo`",
    )
}

/// Unmatched paths: `demo_disabled` under `/v1/demo/` (the demo routes are not
/// mounted outside `ubtc demo`), else `not_found`.
pub async fn fallback(uri: axum::http::Uri) -> ApiError {
    if uri.path().starts_with("/v1/demo/") {
        return demo_disabled();
    }
    ApiError::new(ErrorCode::NotFound, format!("no route {}", uri.path()))
}
