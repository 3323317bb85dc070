//! Operator routes of webhook consumers: register, list, deactivate, read the delivery
//! log, ask for a redelivery. They are entries of the admin route table
//! ([`crate::admin::ADMIN_ROUTES`]): changes need the `operator` role, reads accept
//! `auditor` too, and every change is audited. The configured key
//! `webhooks.admin_api_key` stays valid as a bootstrap API key with role `operator`
//! (`authorization: Bearer <key>`, compared in constant time).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use ubtc_core::{Timestamp, ValidationId};
use ubtc_store::{DeliveryFilter, NewWebhookConsumer, WebhookConsumer, WEBHOOK_EVENT_TYPES};

use crate::admin::Principal;
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::ApiState;

/// Checks a consumer URL before it is stored (the binary passes the delivery
/// worker's own check: scheme, loopback/private hosts unless allowed).
pub type TargetCheck = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// What the webhook administration routes need: the consumer URL check, and the
/// bootstrap operator key if one is configured.
#[derive(Clone)]
pub struct WebhookAdmin {
    /// SHA-256 of the bootstrap operator key: compared in constant time, never kept
    /// in clear. `None`: no bootstrap key (accounts and API keys only).
    key_hash: Option<[u8; 32]>,
    check_target: TargetCheck,
}

impl WebhookAdmin {
    /// With a bootstrap operator key; `None` for an empty key.
    pub fn new(api_key: &str, check_target: TargetCheck) -> Option<Self> {
        if api_key.is_empty() {
            return None;
        }
        Some(Self {
            key_hash: Some(Sha256::digest(api_key.as_bytes()).into()),
            check_target,
        })
    }

    /// Without a bootstrap key: operators authenticate with accounts or API keys.
    pub fn without_key(check_target: TargetCheck) -> Self {
        Self {
            key_hash: None,
            check_target,
        }
    }

    pub fn has_key(&self) -> bool {
        self.key_hash.is_some()
    }

    /// True when `presented` is the bootstrap key.
    pub fn matches_key(&self, presented: &str) -> bool {
        let Some(expected) = self.key_hash.as_ref() else {
            return false;
        };
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Constant time over fixed-length digests: no early exit on the first difference.
        let diff = hash
            .iter()
            .zip(expected.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        !presented.is_empty() && diff == 0
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

fn url_check(state: &ApiState) -> Result<&WebhookAdmin, ApiError> {
    state.webhook_admin.as_ref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Forbidden,
            "webhook administration is not configured (no consumer URL check)",
        )
    })
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
    principal: Principal,
    ApiJson(body): ApiJson<RegisterBody>,
) -> Result<(StatusCode, Json<ConsumerView>), ApiError> {
    let admin = url_check(&state)?;
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
    principal
        .audit(
            &state,
            "webhook.register",
            Some(format!("webhook:{}", consumer.id)),
            None,
            Some(serde_json::json!({ "url": consumer.url, "events": consumer.events }).to_string()),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(consumer.into())))
}

pub async fn list(State(state): State<ApiState>) -> Result<Json<ConsumerList>, ApiError> {
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
    principal: Principal,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<Json<ConsumerView>, ApiError> {
    let id = parse_uuid(&raw_id, "webhook consumer id")?;
    let changed = state
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
    if changed {
        tracing::info!(consumer = %id, "webhook consumer deactivated");
        principal
            .audit(
                &state,
                "webhook.deactivate",
                Some(format!("webhook:{id}")),
                Some(r#"{"active":true}"#.to_owned()),
                Some(r#"{"active":false}"#.to_owned()),
            )
            .await?;
    }
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
    ApiQuery(q): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
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
    principal: Principal,
    ApiPath(raw_id): ApiPath<String>,
) -> Result<(StatusCode, Json<RedeliveryView>), ApiError> {
    let event_id = parse_uuid(&raw_id, "event id")?;
    let n = state.store.redeliver(event_id, Timestamp::now()).await?;
    if n == 0 {
        return Err(ApiError::new(
            ErrorCode::EventNotFound,
            format!("no delivery of event {event_id} (unknown, or it went to nobody)"),
        ));
    }
    tracing::info!(event = %event_id, deliveries = n, "webhook redelivery requested");
    principal
        .audit(
            &state,
            "webhook.redeliver",
            Some(format!("event:{event_id}")),
            None,
            Some(serde_json::json!({ "deliveries": n }).to_string()),
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RedeliveryView {
            event_id,
            deliveries: n,
        }),
    ))
}
