//! The published reserve attestations: `GET /v1/attestations` (newest first, paged),
//! `/v1/attestations/latest` and `/v1/attestations/{id}` (the signed document as
//! stored, downloadable, and what `ubtc verify -` reads).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use ubtc_core::Timestamp;
use ubtc_store::{AttestationSummary, StoredAttestation};

use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiPath, ApiQuery};
use crate::handlers::parse_limit;
use crate::state::ApiState;

/// One attestation's figures, as lists and `/v1/reserves` show them.
#[derive(Serialize)]
pub struct AttestationView {
    pub id: i64,
    pub digest: String,
    pub bitcoin_height: u32,
    pub bitcoin_hash: String,
    pub reserve_sats: u64,
    pub supply_sats: u64,
    pub ratio_ppm: Option<u64>,
    pub registry_version: u64,
    pub utxo_count: u64,
    pub created_at: Timestamp,
    pub stored_at: Timestamp,
    /// Milliseconds since the document was made.
    pub age_ms: i64,
    /// Set when its Bitcoin block was reorganised away (it no longer proves anything
    /// about the best chain).
    pub reorged_at: Option<Timestamp>,
    /// True: the figures are signed by the guardians and checkable offline.
    pub proven: bool,
    /// Where the document is.
    pub url: String,
    /// The command that checks it.
    pub verify_command: String,
}

impl AttestationView {
    pub fn new(s: &AttestationSummary, now: Timestamp) -> Self {
        let url = format!("/v1/attestations/{}", s.id);
        Self {
            id: s.id,
            digest: s.digest.clone(),
            bitcoin_height: s.bitcoin_height,
            bitcoin_hash: s.bitcoin_hash.clone(),
            reserve_sats: s.reserve_sats,
            supply_sats: s.supply_sats,
            ratio_ppm: s.ratio_ppm,
            registry_version: s.registry_version,
            utxo_count: s.utxo_count,
            created_at: s.created_at,
            stored_at: s.stored_at,
            age_ms: now
                .as_millis()
                .saturating_sub(s.created_at.as_millis())
                .max(0),
            reorged_at: s.reorged_at,
            proven: s.reorged_at.is_none(),
            verify_command: format!("curl -s HOST{url} | ubtc verify -"),
            url,
        }
    }
}

#[derive(Serialize)]
pub struct AttestationList {
    pub items: Vec<AttestationView>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    pub next_before: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationListQuery {
    before: Option<String>,
    limit: Option<String>,
}

fn parse_attestation_id(raw: &str) -> Result<i64, ApiError> {
    match raw.parse::<i64>() {
        Ok(id) if id >= 1 => Ok(id),
        _ => Err(ApiError::new(
            ErrorCode::InvalidId,
            format!("{raw:?} is not an attestation id (a whole number from 1)"),
        )),
    }
}

/// `GET /v1/attestations`
pub async fn list_attestations(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<AttestationListQuery>,
) -> Result<Json<AttestationList>, ApiError> {
    let before = q
        .before
        .as_deref()
        .map(parse_attestation_id)
        .transpose()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidParameter,
                "before must be an attestation id",
            )
        })?;
    let limit = parse_limit(q.limit.as_deref())?;
    // One more than asked tells whether another page follows.
    let mut rows = state
        .store
        .list_attestations(before, limit.saturating_add(1))
        .await?;
    let more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    let now = Timestamp::now();
    Ok(Json(AttestationList {
        next_before: more.then(|| rows.last().map(|r| r.id)).flatten(),
        items: rows.iter().map(|r| AttestationView::new(r, now)).collect(),
    }))
}

fn document(stored: StoredAttestation) -> Response {
    let id = stored.summary.id;
    let mut response = (StatusCode::OK, stored.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"ubtc-attestation-{id}.json\""
    )) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        headers.insert("x-attestation-id", v);
    }
    response
}

/// `GET /v1/attestations/latest`: the newest attestation whose block is still in the
/// best chain.
pub async fn latest_attestation(State(state): State<ApiState>) -> Result<Response, ApiError> {
    match state.store.latest_attestation().await? {
        Some(stored) => Ok(document(stored)),
        None => Err(ApiError::new(
            ErrorCode::AttestationNotFound,
            "no reserve attestation has been made yet",
        )),
    }
}

/// `GET /v1/attestations/{id}`
pub async fn get_attestation(
    State(state): State<ApiState>,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<Response, ApiError> {
    let id = parse_attestation_id(&raw_id)?;
    match state.store.get_attestation(id).await? {
        Some(stored) => {
            let mut response = document(stored);
            // A stored attestation never changes but for its reorged mark, so only a
            // short cache.
            response.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=60"),
            );
            Ok(response)
        }
        None => Err(ApiError::new(
            ErrorCode::AttestationNotFound,
            format!("no attestation with id {id}"),
        )),
    }
}
