//! Operator routes of webhook consumers: register, list, deactivate, read the delivery
//! log, ask for a redelivery. Every one needs `authorization: Bearer <key>` with the
//! configured operator key (`webhooks.admin_api_key`), compared in constant time.
//! Without a configured key the routes answer `forbidden`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ubtc_core::{Timestamp, ValidationId};
use ubtc_store::{DeliveryFilter, NewWebhookConsumer, WebhookConsumer, WEBHOOK_EVENT_TYPES};

use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::ApiState;

/// Checks a consumer URL before it is stored (the binary passes the delivery
/// worker's own check: scheme, loopback/private hosts unless allowed).
pub type TargetCheck = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the webhook administration routes need.
#[derive(Clone)]
pub struct WebhookAdmin {
    /// SHA-256 of the operator key: compared in constant time, never kept in clear.
    key_hash: [u8; 32],
    check_target: TargetCheck,
}

impl WebhookAdmin {
    /// `None` for an empty key (administration stays off).
    pub fn new(api_key: &str, check_target: TargetCheck) -> Option<Self> {
        if api_key.is_empty() {
            return None;
        }
        Some(Self {
            key_hash: Sha256::digest(api_key.as_bytes()).into(),
            check_target,
        })
    }
}

impl std::fmt::Debug for WebhookAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookAdmin([redacted])")
    }
}

/// Shortest consumer secret accepted.
pub const SECRET_MIN_CHARS: usize = 16;
const SECRET_MAX_CHARS: usize = 256;
const URL_MAX_CHARS: usize = 2_048;

fn authorize<'a>(state: &'a ApiState, headers: &HeaderMap) -> Result<&'a WebhookAdmin, ApiError> {
    let Some(admin) = state.webhook_admin.as_ref() else {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "webhook administration is not configured (webhooks.admin_api_key)",
        ));
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    // Constant time over fixed-length digests: no early exit on the first difference.
    let diff = hash
        .iter()
        .zip(admin.key_hash.iter())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    if presented.is_empty() || diff != 0 {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "an operator key is required: authorization: Bearer <key>",
        ));
    }
    Ok(admin)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    url: String,
    secret: String,
    events: Vec<String>,
}

#[derive(Serialize)]
pub struct ConsumerView {
    id: uuid::Uuid,
    url: String,
    events: Vec<String>,
    active: bool,
    created_at: Timestamp,
    deactivated_at: Option<Timestamp>,
}

impl From<WebhookConsumer> for ConsumerView {
    // The secret is not copied: it is never returned.
    fn from(c: WebhookConsumer) -> Self {
        Self {
            id: c.id,
            url: c.url,
            events: c.events,
            active: c.active,
            created_at: c.created_at,
            deactivated_at: c.deactivated_at,
        }
    }
}

#[derive(Serialize)]
pub struct ConsumerList {
    items: Vec<ConsumerView>,
}

pub async fn register(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<(StatusCode, Json<ConsumerView>), ApiError> {
    let admin = authorize(&state, &headers)?;
    if body.url.len() > URL_MAX_CHARS {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "url is too long",
        ));
    }
    (admin.check_target)(&body.url)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, format!("url refused: {e}")))?;
    let n = body.secret.chars().count();
    if !(SECRET_MIN_CHARS..=SECRET_MAX_CHARS).contains(&n) {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("secret must have {SECRET_MIN_CHARS} to {SECRET_MAX_CHARS} characters"),
        ));
    }
    if body.events.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "events must name at least one event type",
        ));
    }
    let mut events: Vec<String> = Vec::new();
    for e in body.events {
        if !WEBHOOK_EVENT_TYPES.contains(&e.as_str()) {
            return Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "unknown event type {e:?} (one of {})",
                    WEBHOOK_EVENT_TYPES.join(", ")
                ),
            ));
        }
        if !events.contains(&e) {
            events.push(e);
        }
    }
    let consumer = state
        .store
        .add_webhook_consumer(
            &NewWebhookConsumer {
                url: body.url,
                secret: body.secret,
                events,
            },
            Timestamp::now(),
        )
        .await?;
    tracing::info!(consumer = %consumer.id, url = %consumer.url, "webhook consumer registered");
    Ok((StatusCode::CREATED, Json(consumer.into())))
}

pub async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<ConsumerList>, ApiError> {
    authorize(&state, &headers)?;
    let items = state
        .store
        .list_webhook_consumers()
        .await?
        .into_iter()
        .map(ConsumerView::from)
        .collect();
    Ok(Json(ConsumerList { items }))
}

fn parse_uuid(raw: &str, what: &str) -> Result<uuid::Uuid, ApiError> {
    raw.parse::<uuid::Uuid>().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("{raw:?} is not a {what} (a UUID)"),
        )
    })
}

pub async fn deactivate(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<Json<ConsumerView>, ApiError> {
    authorize(&state, &headers)?;
    let id = parse_uuid(&raw_id, "webhook consumer id")?;
    state
        .store
        .deactivate_webhook_consumer(id, Timestamp::now())
        .await?;
    let consumer = state
        .store
        .list_webhook_consumers()
        .await?
        .into_iter()
        .find(|c| c.id == id)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::WebhookNotFound,
                format!("no webhook consumer with id {id}"),
            )
        })?;
    tracing::info!(consumer = %id, "webhook consumer deactivated");
    Ok(Json(consumer.into()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    validation: Option<String>,
    consumer: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
pub struct DeliveryView {
    event_id: uuid::Uuid,
    event_type: String,
    validation_id: Option<ValidationId>,
    /// The consumer, or `null` for the payment's callback URL.
    consumer_id: Option<uuid::Uuid>,
    url: String,
    /// `pending`, `delivered` or `dead`.
    state: &'static str,
    attempts: u32,
    next_attempt_at: Timestamp,
    delivered_at: Option<Timestamp>,
    dead_at: Option<Timestamp>,
    last_error: Option<String>,
    created_at: Timestamp,
}

fn state_of(delivered: Option<Timestamp>, dead: Option<Timestamp>) -> &'static str {
    match (delivered, dead) {
        (Some(_), _) => "delivered",
        (None, Some(_)) => "dead",
        (None, None) => "pending",
    }
}

#[derive(Serialize)]
pub struct DeliveryList {
    items: Vec<DeliveryView>,
}

pub async fn deliveries(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    authorize(&state, &headers)?;
    let validation = q
        .validation
        .as_deref()
        .map(|v| parse_uuid(v, "validation id").map(ValidationId))
        .transpose()?;
    let consumer = q
        .consumer
        .as_deref()
        .map(|v| parse_uuid(v, "webhook consumer id"))
        .transpose()?;
    let limit = crate::handlers::parse_limit(q.limit.as_deref())?;
    let mut items = Vec::new();
    // The payment's callback deliveries are the outbox rows themselves.
    if let (Some(v), None) = (validation, consumer) {
        for e in state.store.list_outbox_for(v).await? {
            let Some(url) = e.target_url else { continue };
            items.push(DeliveryView {
                event_id: e.event_id,
                event_type: e.event_type,
                validation_id: e.validation_id,
                consumer_id: None,
                url,
                state: state_of(e.delivered_at, e.dead_at),
                attempts: e.attempts,
                next_attempt_at: e.next_attempt_at,
                delivered_at: e.delivered_at,
                dead_at: e.dead_at,
                last_error: e.last_error,
                created_at: e.created_at,
            });
        }
    }
    let rows = state
        .store
        .list_webhook_deliveries(&DeliveryFilter {
            validation,
            consumer,
            limit,
        })
        .await?;
    for d in rows {
        items.push(DeliveryView {
            event_id: d.event_id,
            event_type: d.event_type,
            validation_id: d.validation_id,
            consumer_id: Some(d.consumer_id),
            url: d.url,
            state: state_of(d.delivered_at, d.dead_at),
            attempts: d.attempts,
            next_attempt_at: d.next_attempt_at,
            delivered_at: d.delivered_at,
            dead_at: d.dead_at,
            last_error: d.last_error,
            created_at: d.created_at,
        });
    }
    items.truncate(limit as usize);
    Ok(Json(DeliveryList { items }))
}

#[derive(Serialize)]
pub struct RedeliveryView {
    event_id: uuid::Uuid,
    /// Deliveries made due again (callback and consumers).
    deliveries: u32,
}

pub async fn redeliver(
    State(state): State<ApiState>,
    headers: HeaderMap,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<(StatusCode, Json<RedeliveryView>), ApiError> {
    authorize(&state, &headers)?;
    let event_id = parse_uuid(&raw_id, "event id")?;
    let n = state.store.redeliver(event_id, Timestamp::now()).await?;
    if n == 0 {
        return Err(ApiError::new(
            ErrorCode::EventNotFound,
            format!("no delivery of event {event_id} (unknown, or it went to nobody)"),
        ));
    }
    tracing::info!(event = %event_id, deliveries = n, "webhook redelivery requested");
    Ok((
        StatusCode::ACCEPTED,
        Json(RedeliveryView {
            event_id,
            deliveries: n,
        }),
    ))
}
