//! Webhook consumers and their deliveries (migration 0005).
//!
//! An outbox row (written in the same transaction as the change it reports) is
//! delivered to its payment's callback URL, if any, through the row itself, and to every
//! registered consumer subscribed to its event type through one `webhook_deliveries`
//! row per (event id, consumer). The delivery worker creates those rows from the due
//! outbox row ([`WebhookStore::fan_out_event`]); the unique key (event id, consumer)
//! makes that idempotent, so every consumer gets each event id once (at least once on
//! the wire, with the same event id) unless an operator asks for a redelivery.
//! Nothing here is ever deleted: consumers are deactivated, deliveries end delivered
//! or dead and stay for the delivery log.
//!
//! [`WebhookStore`] is a supertrait of [`crate::Store`], so every `dyn Store` has it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use ubtc_core::validation::Reason;
use ubtc_core::{Timestamp, ValidationId, ValidationStatus};

use crate::{NewOutboxEvent, OutboxOutcome, StoreResult};

/// The event types a consumer may subscribe to.
pub const WEBHOOK_EVENT_TYPES: [&str; 6] = [
    "validation.signed",
    "validation.delayed",
    "validation.rejected",
    "validation.failed",
    "reserves.unhealthy",
    "reserves.healthy",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewWebhookConsumer {
    pub url: String,
    /// HMAC key of the `ubtc-signature` header of this consumer's deliveries.
    pub secret: String,
    /// Subscribed event types (see [`WEBHOOK_EVENT_TYPES`]); at least one.
    pub events: Vec<String>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConsumer {
    pub id: uuid::Uuid,
    pub url: String,
    /// Stored for signing; never returned by the API.
    pub secret: String,
    pub events: Vec<String>,
    pub active: bool,
    pub created_at: Timestamp,
    pub deactivated_at: Option<Timestamp>,
}

impl std::fmt::Debug for WebhookConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConsumer")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("secret", &"[redacted]")
            .field("events", &self.events)
            .field("active", &self.active)
            .finish()
    }
}

/// One delivery of one outbox event to one consumer, with what it needs to be sent.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookDelivery {
    pub event_id: uuid::Uuid,
    pub consumer_id: uuid::Uuid,
    pub validation_id: Option<ValidationId>,
    pub event_type: String,
    pub payload_json: String,
    pub url: String,
    pub secret: String,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
    pub dead_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for WebhookDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookDelivery")
            .field("event_id", &self.event_id)
            .field("consumer_id", &self.consumer_id)
            .field("event_type", &self.event_type)
            .field("url", &self.url)
            .field("attempts", &self.attempts)
            .field("delivered_at", &self.delivered_at)
            .field("dead_at", &self.dead_at)
            .field("last_error", &self.last_error)
            .finish()
    }
}

/// Dead letters outside the validation queue (failed validations are counted by
/// status in [`crate::Store::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeadLetterCounts {
    /// Per-payment callback rows of the outbox that were given up on. Rows with no
    /// callback URL that no consumer subscribed to are kept dead for a later
    /// redelivery, but nothing failed: they are not counted.
    pub webhook_callbacks: u64,
    /// Deliveries to registered consumers that were given up on.
    pub webhook_deliveries: u64,
    pub reserve_mints: u64,
    pub reserve_burns: u64,
    pub reserve_releases: u64,
}

/// Which deliveries [`WebhookStore::list_webhook_deliveries`] returns (oldest first).
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    pub validation: Option<ValidationId>,
    pub consumer: Option<uuid::Uuid>,
    pub limit: u32,
}

#[async_trait]
pub trait WebhookStore: Send + Sync + 'static {
    /// Registers a consumer (active). The caller validated URL and events.
    async fn add_webhook_consumer(
        &self,
        new: &NewWebhookConsumer,
        now: Timestamp,
    ) -> StoreResult<WebhookConsumer>;
    /// Every consumer, active or not, oldest first.
    async fn list_webhook_consumers(&self) -> StoreResult<Vec<WebhookConsumer>>;
    /// Deactivates a consumer: it gets no new deliveries and its pending ones are not
    /// attempted. False when unknown or already inactive. The row is kept.
    async fn deactivate_webhook_consumer(
        &self,
        id: uuid::Uuid,
        now: Timestamp,
    ) -> StoreResult<bool>;

    /// Creates the deliveries of outbox event `event_id` to every active consumer
    /// subscribed to its type (none twice: `ON CONFLICT DO NOTHING` on (event,
    /// consumer)). Returns how many deliveries the event has in all.
    async fn fan_out_event(&self, event_id: uuid::Uuid, now: Timestamp) -> StoreResult<u32>;
    /// Pending deliveries to active consumers whose next attempt is due, oldest first.
    async fn due_webhook_deliveries(
        &self,
        now: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<WebhookDelivery>>;
    /// Like [`crate::Store::record_outbox_attempt`] for one delivery. False when no
    /// pending delivery (event, consumer) exists.
    async fn record_delivery_attempt(
        &self,
        event_id: uuid::Uuid,
        consumer_id: uuid::Uuid,
        outcome: &OutboxOutcome,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Operator action: sends event `event_id` again, with the same event id, to its
    /// callback URL (if it has one) and to every consumer it was delivered to (or
    /// dead-lettered for): those rows become pending, due now, attempts reset. One
    /// transaction. Returns how many rows were reset (0: unknown event).
    async fn redeliver(&self, event_id: uuid::Uuid, now: Timestamp) -> StoreResult<u32>;
    /// The consumer deliveries matching the filter, oldest first.
    async fn list_webhook_deliveries(
        &self,
        filter: &DeliveryFilter,
    ) -> StoreResult<Vec<WebhookDelivery>>;
    /// Looks an outbox event up by id.
    async fn get_outbox_event(
        &self,
        event_id: uuid::Uuid,
    ) -> StoreResult<Option<crate::OutboxEvent>>;

    /// [`crate::Store::confirm_and_enqueue_batch`] that also writes, in the same
    /// transaction, `events[i]` (when `Some`) as an outbox row of item `i` if and only
    /// if item `i` moved (the monitor's `validation.delayed`).
    async fn confirm_and_enqueue_batch_notify(
        &self,
        items: &[(ValidationId, u64, Option<Timestamp>)],
        events: &[Option<NewOutboxEvent>],
        now: Timestamp,
    ) -> StoreResult<Vec<StoreResult<ValidationStatus>>>;
    /// Claims up to `limit` outbox rows that are due (pending, next attempt passed, no
    /// live claim) until `claim_until`, oldest first, and returns them. Two callers
    /// never get the same row while its claim lives (PostgreSQL: `FOR UPDATE SKIP
    /// LOCKED` and a guarded UPDATE; SQLite: one writer, the same guarded UPDATE).
    /// Recording an attempt ends the claim; a claim not ended (the worker died) expires.
    async fn claim_due_outbox(
        &self,
        now: Timestamp,
        claim_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<crate::OutboxEvent>>;
    /// [`WebhookStore::claim_due_outbox`] for deliveries to active consumers.
    async fn claim_due_deliveries(
        &self,
        now: Timestamp,
        claim_until: Timestamp,
        limit: u32,
    ) -> StoreResult<Vec<WebhookDelivery>>;

    // Operations figures read at each `/metrics` scrape (kept here, beside the other
    // operations reads, rather than widening `Store`).

    /// The earliest time a validation now waiting in the queue (queued, or delayed and
    /// due) became due; `None` when none waits. `now - it` is the queue's age.
    async fn queue_oldest_due(&self, now: Timestamp) -> StoreResult<Option<Timestamp>>;
    /// Detection-to-signature times (ms) of the validations signed since `since`, at
    /// most `limit` of the latest.
    async fn processing_times_ms(&self, since: Timestamp, limit: u32) -> StoreResult<Vec<i64>>;

    /// The id and health of the latest stored reserve snapshot (latest by time, then
    /// id, as [`crate::Store::latest_reserve_snapshot`]).
    async fn latest_reserve_health(&self) -> StoreResult<Option<(i64, bool)>>;
    /// Rows that gave up and wait for an operator: dead webhook rows (callbacks and
    /// consumer deliveries) and failed reserve operations. One statement; no index
    /// covers dead rows, so each count scans its table: meant for a scrape every few
    /// seconds, not per request.
    async fn dead_letter_counts(&self) -> StoreResult<DeadLetterCounts>;
    /// Stores `snapshot` and, in the same transaction, `event` (when given) as an
    /// outbox row of no validation. An event whose id is already in the outbox is not
    /// written again: the caller derives the id from the transition it reports, so two
    /// snapshotters reporting the same transition write one event. Returns the
    /// snapshot's id and whether the event was written.
    async fn record_reserve_snapshot_notify(
        &self,
        snapshot: &crate::ReserveSnapshot,
        event: Option<&NewOutboxEvent>,
        now: Timestamp,
    ) -> StoreResult<(i64, bool)>;

    /// [`crate::Store::confirm_and_reject`] that also writes `event` (the
    /// `validation.rejected` outbox row) in the same transaction.
    async fn confirm_and_reject_notify(
        &self,
        id: ValidationId,
        confirmations: u64,
        reason: &Reason,
        event: &NewOutboxEvent,
        now: Timestamp,
    ) -> StoreResult<()>;
}

pub(crate) fn events_column(events: &[String]) -> String {
    format!(",{},", events.join(","))
}

pub(crate) fn parse_events(column: &str) -> Vec<String> {
    column
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

pub(crate) type ConsumerRow = (uuid::Uuid, String, String, String, i64, Option<i64>);

pub(crate) fn consumer(r: ConsumerRow) -> WebhookConsumer {
    WebhookConsumer {
        id: r.0,
        url: r.1,
        secret: r.2,
        events: parse_events(&r.3),
        active: r.5.is_none(),
        created_at: Timestamp(r.4),
        deactivated_at: r.5.map(Timestamp),
    }
}

#[derive(sqlx::FromRow)]
pub(crate) struct DeliveryRow {
    event_id: uuid::Uuid,
    consumer_id: uuid::Uuid,
    validation_id: Option<uuid::Uuid>,
    event_type: String,
    payload: String,
    url: String,
    secret: String,
    attempts: i64,
    next_attempt_at: i64,
    delivered_at: Option<i64>,
    dead_at: Option<i64>,
    last_error: Option<String>,
    created_at: i64,
}

pub(crate) fn deliveries(rows: Vec<DeliveryRow>) -> StoreResult<Vec<WebhookDelivery>> {
    rows.into_iter()
        .map(|r| {
            Ok(WebhookDelivery {
                event_id: r.event_id,
                consumer_id: r.consumer_id,
                validation_id: r.validation_id.map(ValidationId),
                event_type: r.event_type,
                payload_json: r.payload,
                url: r.url,
                secret: r.secret,
                attempts: u32::try_from(r.attempts).map_err(|_| {
                    crate::StoreError::Corrupt(format!("delivery attempts {}", r.attempts))
                })?,
                next_attempt_at: Timestamp(r.next_attempt_at),
                delivered_at: r.delivered_at.map(Timestamp),
                dead_at: r.dead_at.map(Timestamp),
                last_error: r.last_error,
                created_at: Timestamp(r.created_at),
            })
        })
        .collect()
}

pub(crate) const INSERT_CONSUMER: &str = "INSERT INTO webhook_consumers (id, url, secret, events, \
     created_at) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const LIST_CONSUMERS: &str = "SELECT id, url, secret, events, created_at, \
     deactivated_at FROM webhook_consumers ORDER BY created_at, id";
pub(crate) const DEACTIVATE_CONSUMER: &str = "UPDATE webhook_consumers SET deactivated_at = $2 \
     WHERE id = $1 AND deactivated_at IS NULL";
pub(crate) const FAN_OUT: &str = "INSERT INTO webhook_deliveries (event_id, consumer_id, \
     attempts, next_attempt_at, created_at) \
     SELECT o.event_id, c.id, 0, $2, $2 FROM webhook_outbox o JOIN webhook_consumers c \
     ON c.deactivated_at IS NULL AND c.events LIKE '%,' || o.event_type || ',%' \
     WHERE o.event_id = $1 ON CONFLICT (event_id, consumer_id) DO NOTHING";
pub(crate) const COUNT_DELIVERIES: &str =
    "SELECT COUNT(*) FROM webhook_deliveries WHERE event_id = $1";
macro_rules! delivery_select {
    () => {
        "SELECT d.event_id, d.consumer_id, o.validation_id, o.event_type, o.payload, c.url, \
         c.secret, d.attempts, d.next_attempt_at, d.delivered_at, d.dead_at, d.last_error, \
         d.created_at FROM webhook_deliveries d \
         JOIN webhook_outbox o ON o.event_id = d.event_id \
         JOIN webhook_consumers c ON c.id = d.consumer_id "
    };
}
pub(crate) const DUE_DELIVERIES: &str = concat!(
    delivery_select!(),
    "WHERE d.delivered_at IS NULL AND d.dead_at IS NULL AND d.next_attempt_at <= $1 \
     AND c.deactivated_at IS NULL ORDER BY d.next_attempt_at, d.id LIMIT $2"
);
pub(crate) const LIST_DELIVERIES: &str = concat!(
    delivery_select!(),
    "WHERE ($1 IS NULL OR o.validation_id = $1) AND ($2 IS NULL OR d.consumer_id = $2) \
     ORDER BY d.id LIMIT $3"
);
pub(crate) const DELIVERY_ATTEMPT: &str = "UPDATE webhook_deliveries SET attempts = attempts + 1, \
     delivered_at = $3, next_attempt_at = COALESCE($4, next_attempt_at), dead_at = $5, \
     last_error = COALESCE($6, last_error), claim_until = NULL \
     WHERE event_id = $1 AND consumer_id = $2 AND delivered_at IS NULL AND dead_at IS NULL";
pub(crate) const REDELIVER_DELIVERIES: &str = "UPDATE webhook_deliveries SET attempts = 0, \
     delivered_at = NULL, dead_at = NULL, next_attempt_at = $2, claim_until = NULL \
     WHERE event_id = $1";
pub(crate) const REDELIVER_OUTBOX: &str = "UPDATE webhook_outbox SET attempts = 0, \
     delivered_at = NULL, dead_at = NULL, next_attempt_at = $2, claim_until = NULL \
     WHERE event_id = $1 AND target_url IS NOT NULL";
pub(crate) const OUTBOX_BY_ID: &str = concat!(
    "SELECT ",
    crate::rows::outbox_columns!(),
    " FROM webhook_outbox WHERE event_id = $1"
);

/// Due and not claimed now: `$3` is now.
macro_rules! claimable {
    ($t:literal) => {
        concat!(
            $t,
            ".delivered_at IS NULL AND ",
            $t,
            ".dead_at IS NULL AND ",
            $t,
            ".next_attempt_at <= $3 AND (",
            $t,
            ".claim_until IS NULL OR ",
            $t,
            ".claim_until <= $3)"
        )
    };
}

/// `$1` claim token, `$2` claim until, `$3` now, `$4` batch size. The outer WHERE
/// repeats the predicate: a row claimed by a concurrent statement between the
/// subquery and the update is re-checked (PostgreSQL re-evaluates it on the locked
/// row) and left out.
macro_rules! claim_outbox {
    ($lock:literal) => {
        concat!(
            "UPDATE webhook_outbox SET claim_token = $1, claim_until = $2 WHERE id IN \
             (SELECT o.id FROM webhook_outbox o WHERE ",
            claimable!("o"),
            " ORDER BY o.next_attempt_at, o.id LIMIT $4",
            $lock,
            ") AND ",
            claimable!("webhook_outbox")
        )
    };
}

macro_rules! claim_deliveries {
    ($lock:literal) => {
        concat!(
            "UPDATE webhook_deliveries SET claim_token = $1, claim_until = $2 WHERE id IN \
             (SELECT d.id FROM webhook_deliveries d JOIN webhook_consumers c \
             ON c.id = d.consumer_id AND c.deactivated_at IS NULL WHERE ",
            claimable!("d"),
            " ORDER BY d.next_attempt_at, d.id LIMIT $4",
            $lock,
            ") AND ",
            claimable!("webhook_deliveries")
        )
    };
}

/// The claim statements of a dialect.
pub(crate) trait ClaimSql: sqlx::Database {
    const CLAIM_OUTBOX: &'static str;
    const CLAIM_DELIVERIES: &'static str;
}

impl ClaimSql for sqlx::Postgres {
    const CLAIM_OUTBOX: &'static str = claim_outbox!(" FOR UPDATE SKIP LOCKED");
    const CLAIM_DELIVERIES: &'static str = claim_deliveries!(" FOR UPDATE OF d SKIP LOCKED");
}

impl ClaimSql for sqlx::Sqlite {
    // One writer at a time (`BEGIN IMMEDIATE`): the guarded UPDATE is enough.
    const CLAIM_OUTBOX: &'static str = claim_outbox!("");
    const CLAIM_DELIVERIES: &'static str = claim_deliveries!("");
}

/// The claim statements for the dialect of `pool`.
pub(crate) fn claim_sql<DB: ClaimSql>(_pool: &sqlx::Pool<DB>) -> (&'static str, &'static str) {
    (DB::CLAIM_OUTBOX, DB::CLAIM_DELIVERIES)
}

pub(crate) const CLAIMED_OUTBOX: &str = concat!(
    "SELECT ",
    crate::rows::outbox_columns!(),
    " FROM webhook_outbox WHERE claim_token = $1 ORDER BY next_attempt_at, id"
);
pub(crate) const CLAIMED_DELIVERIES: &str = concat!(
    delivery_select!(),
    "WHERE d.claim_token = $1 ORDER BY d.next_attempt_at, d.id"
);

pub(crate) const QUEUE_OLDEST_DUE: &str = "SELECT MIN(COALESCE(not_before, updated_at)) \
     FROM validations WHERE status IN ('queued', 'delayed') \
     AND COALESCE(not_before, updated_at) <= $1";
pub(crate) const PROCESSING_TIMES: &str = "SELECT processing_ms FROM validation_metrics \
     WHERE signed_at >= $1 ORDER BY signed_at DESC LIMIT $2";

pub(crate) const DEAD_LETTER_COUNTS: &str = "SELECT \
     (SELECT COUNT(*) FROM webhook_outbox WHERE dead_at IS NOT NULL AND target_url IS NOT NULL), \
     (SELECT COUNT(*) FROM webhook_deliveries WHERE dead_at IS NOT NULL), \
     (SELECT COUNT(*) FROM reserve_mints WHERE state = 'failed'), \
     (SELECT COUNT(*) FROM reserve_burns WHERE state = 'failed'), \
     (SELECT COUNT(*) FROM reserve_releases WHERE state = 'failed')";

pub(crate) const LATEST_RESERVE_HEALTH: &str =
    "SELECT id, healthy FROM reserve_ratios ORDER BY taken_at DESC, id DESC LIMIT 1";
/// An outbox row of no validation, written once per event id.
pub(crate) const INSERT_OUTBOX_ONCE: &str = "INSERT INTO webhook_outbox (event_id, \
     validation_id, event_type, payload, target_url, attempts, next_attempt_at, created_at) \
     VALUES ($1, NULL, $2, $3, $4, 0, $5, $5) ON CONFLICT (event_id) DO NOTHING";

/// `(delivered_at, next_attempt_at, dead_at, error)` of an attempt's outcome.
pub(crate) fn outcome_columns(
    outcome: &OutboxOutcome,
    now: Timestamp,
) -> (Option<i64>, Option<i64>, Option<i64>, Option<&str>) {
    match outcome {
        OutboxOutcome::Delivered => (Some(now.0), None, None, None),
        OutboxOutcome::Retry {
            next_attempt_at,
            error,
        } => (None, Some(next_attempt_at.0), None, Some(error.as_str())),
        OutboxOutcome::Dead { error } => (None, None, Some(now.0), Some(error.as_str())),
    }
}

/// Inserts one outbox row for validation `$id` inside transaction `$tx`.
macro_rules! insert_event {
    ($tx:ident, $id:expr, $e:expr, $now:expr) => {
        sqlx::query($crate::sql::INSERT_OUTBOX)
            .bind($e.event_id)
            .bind($id.0)
            .bind($e.event_type.as_str())
            .bind($e.payload_json.as_str())
            .bind($e.target_url.as_deref())
            .bind($now.0)
            .execute(&mut *$tx)
            .await?;
    };
}
pub(crate) use insert_event;

/// Writes `impl WebhookStore for $store` (expanded next to `impl_store!`, whose
/// private helpers it uses).
macro_rules! impl_webhook_store {
    ($store:ty) => {
        #[async_trait::async_trait]
        impl $crate::webhooks::WebhookStore for $store {
            async fn add_webhook_consumer(
                &self,
                new: &$crate::webhooks::NewWebhookConsumer,
                now: Timestamp,
            ) -> StoreResult<$crate::webhooks::WebhookConsumer> {
                let id = uuid::Uuid::now_v7();
                sqlx::query($crate::webhooks::INSERT_CONSUMER)
                    .bind(id)
                    .bind(new.url.as_str())
                    .bind(new.secret.as_str())
                    .bind($crate::webhooks::events_column(&new.events))
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                Ok($crate::webhooks::WebhookConsumer {
                    id,
                    url: new.url.clone(),
                    secret: new.secret.clone(),
                    events: new.events.clone(),
                    active: true,
                    created_at: now,
                    deactivated_at: None,
                })
            }

            async fn list_webhook_consumers(
                &self,
            ) -> StoreResult<Vec<$crate::webhooks::WebhookConsumer>> {
                let rows: Vec<$crate::webhooks::ConsumerRow> =
                    sqlx::query_as($crate::webhooks::LIST_CONSUMERS)
                        .fetch_all(self.reader())
                        .await?;
                Ok(rows.into_iter().map($crate::webhooks::consumer).collect())
            }

            async fn deactivate_webhook_consumer(
                &self,
                id: uuid::Uuid,
                now: Timestamp,
            ) -> StoreResult<bool> {
                let done = sqlx::query($crate::webhooks::DEACTIVATE_CONSUMER)
                    .bind(id)
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn fan_out_event(
                &self,
                event_id: uuid::Uuid,
                now: Timestamp,
            ) -> StoreResult<u32> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                sqlx::query($crate::webhooks::FAN_OUT)
                    .bind(event_id)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                let n: i64 = sqlx::query_scalar($crate::webhooks::COUNT_DELIVERIES)
                    .bind(event_id)
                    .fetch_one(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(u32::try_from(n).unwrap_or(u32::MAX))
            }

            async fn due_webhook_deliveries(
                &self,
                now: Timestamp,
                limit: u32,
            ) -> StoreResult<Vec<$crate::webhooks::WebhookDelivery>> {
                let rows: Vec<$crate::webhooks::DeliveryRow> =
                    sqlx::query_as($crate::webhooks::DUE_DELIVERIES)
                        .bind(now.0)
                        .bind(i64::from(limit))
                        .fetch_all(self.reader())
                        .await?;
                $crate::webhooks::deliveries(rows)
            }

            async fn record_delivery_attempt(
                &self,
                event_id: uuid::Uuid,
                consumer_id: uuid::Uuid,
                outcome: &OutboxOutcome,
                now: Timestamp,
            ) -> StoreResult<bool> {
                let (delivered, next, dead, error) =
                    $crate::webhooks::outcome_columns(outcome, now);
                let done = sqlx::query($crate::webhooks::DELIVERY_ATTEMPT)
                    .bind(event_id)
                    .bind(consumer_id)
                    .bind(delivered)
                    .bind(next)
                    .bind(dead)
                    .bind(error)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn redeliver(&self, event_id: uuid::Uuid, now: Timestamp) -> StoreResult<u32> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let a = sqlx::query($crate::webhooks::REDELIVER_DELIVERIES)
                    .bind(event_id)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                let b = sqlx::query($crate::webhooks::REDELIVER_OUTBOX)
                    .bind(event_id)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                tx.commit().await?;
                Ok(u32::try_from(a + b).unwrap_or(u32::MAX))
            }

            async fn list_webhook_deliveries(
                &self,
                filter: &$crate::webhooks::DeliveryFilter,
            ) -> StoreResult<Vec<$crate::webhooks::WebhookDelivery>> {
                let rows: Vec<$crate::webhooks::DeliveryRow> =
                    sqlx::query_as($crate::webhooks::LIST_DELIVERIES)
                        .bind(filter.validation.map(|v| v.0))
                        .bind(filter.consumer)
                        .bind(i64::from(filter.limit))
                        .fetch_all(self.reader())
                        .await?;
                $crate::webhooks::deliveries(rows)
            }

            async fn get_outbox_event(
                &self,
                event_id: uuid::Uuid,
            ) -> StoreResult<Option<OutboxEvent>> {
                let rows: Vec<$crate::rows::OutboxRow> =
                    sqlx::query_as($crate::webhooks::OUTBOX_BY_ID)
                        .bind(event_id)
                        .fetch_all(self.reader())
                        .await?;
                Ok($crate::rows::outbox(rows)?.pop())
            }

            async fn confirm_and_enqueue_batch_notify(
                &self,
                items: &[(ValidationId, u64, Option<Timestamp>)],
                events: &[Option<NewOutboxEvent>],
                now: Timestamp,
            ) -> StoreResult<Vec<StoreResult<ValidationStatus>>> {
                let queued = ValidationStatus::Detected
                    .transition(ValidationStatus::Confirmed)?
                    .transition(ValidationStatus::Queued)?;
                let delayed = queued.transition(ValidationStatus::Delayed)?;
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let mut applied = Vec::with_capacity(items.len());
                for (i, (id, confirmations, delay_until)) in items.iter().enumerate() {
                    let (to, not_before) = match delay_until {
                        Some(t) => (delayed, *t),
                        None => (queued, now),
                    };
                    let done = sqlx::query($crate::sql::CONFIRM_AND_ENQUEUE)
                        .bind(id.0)
                        .bind(to.as_str())
                        .bind($crate::rows::to_i64(*confirmations, "confirmations")?)
                        .bind(not_before.0)
                        .bind(now.0)
                        .execute(&mut *tx)
                        .await?;
                    let moved = done.rows_affected() == 1;
                    if moved {
                        if let Some(Some(e)) = events.get(i) {
                            $crate::webhooks::insert_event!(tx, *id, e, now);
                        }
                    }
                    applied.push(moved.then_some(to));
                }
                tx.commit().await?;
                let mut out = Vec::with_capacity(items.len());
                for ((id, _, _), done) in items.iter().zip(applied) {
                    out.push(match done {
                        Some(to) => Ok(to),
                        None => Err(self.refused(*id, ValidationStatus::Confirmed).await),
                    });
                }
                Ok(out)
            }

            async fn claim_due_outbox(
                &self,
                now: Timestamp,
                claim_until: Timestamp,
                limit: u32,
            ) -> StoreResult<Vec<OutboxEvent>> {
                let token = uuid::Uuid::new_v4();
                let (claim, _) = $crate::webhooks::claim_sql(self.writer());
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                sqlx::query(claim)
                    .bind(token)
                    .bind(claim_until.0)
                    .bind(now.0)
                    .bind(i64::from(limit))
                    .execute(&mut *tx)
                    .await?;
                let rows: Vec<$crate::rows::OutboxRow> =
                    sqlx::query_as($crate::webhooks::CLAIMED_OUTBOX)
                        .bind(token)
                        .fetch_all(&mut *tx)
                        .await?;
                tx.commit().await?;
                $crate::rows::outbox(rows)
            }

            async fn claim_due_deliveries(
                &self,
                now: Timestamp,
                claim_until: Timestamp,
                limit: u32,
            ) -> StoreResult<Vec<$crate::webhooks::WebhookDelivery>> {
                let token = uuid::Uuid::new_v4();
                let (_, claim) = $crate::webhooks::claim_sql(self.writer());
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                sqlx::query(claim)
                    .bind(token)
                    .bind(claim_until.0)
                    .bind(now.0)
                    .bind(i64::from(limit))
                    .execute(&mut *tx)
                    .await?;
                let rows: Vec<$crate::webhooks::DeliveryRow> =
                    sqlx::query_as($crate::webhooks::CLAIMED_DELIVERIES)
                        .bind(token)
                        .fetch_all(&mut *tx)
                        .await?;
                tx.commit().await?;
                $crate::webhooks::deliveries(rows)
            }

            async fn queue_oldest_due(&self, now: Timestamp) -> StoreResult<Option<Timestamp>> {
                let oldest: Option<i64> = sqlx::query_scalar($crate::webhooks::QUEUE_OLDEST_DUE)
                    .bind(now.0)
                    .fetch_one(self.reader())
                    .await?;
                Ok(oldest.map(Timestamp))
            }

            async fn processing_times_ms(
                &self,
                since: Timestamp,
                limit: u32,
            ) -> StoreResult<Vec<i64>> {
                let times: Vec<i64> = sqlx::query_scalar($crate::webhooks::PROCESSING_TIMES)
                    .bind(since.0)
                    .bind(i64::from(limit))
                    .fetch_all(self.reader())
                    .await?;
                Ok(times)
            }

            async fn dead_letter_counts(&self) -> StoreResult<$crate::webhooks::DeadLetterCounts> {
                let (outbox, deliveries, mints, burns, releases): (i64, i64, i64, i64, i64) =
                    sqlx::query_as($crate::webhooks::DEAD_LETTER_COUNTS)
                        .fetch_one(self.reader())
                        .await?;
                let n = |v: i64| u64::try_from(v).unwrap_or(0);
                Ok($crate::webhooks::DeadLetterCounts {
                    webhook_callbacks: n(outbox),
                    webhook_deliveries: n(deliveries),
                    reserve_mints: n(mints),
                    reserve_burns: n(burns),
                    reserve_releases: n(releases),
                })
            }

            async fn latest_reserve_health(&self) -> StoreResult<Option<(i64, bool)>> {
                let row: Option<(i64, bool)> =
                    sqlx::query_as($crate::webhooks::LATEST_RESERVE_HEALTH)
                        .fetch_optional(self.reader())
                        .await?;
                Ok(row)
            }

            async fn record_reserve_snapshot_notify(
                &self,
                s: &$crate::ReserveSnapshot,
                event: Option<&NewOutboxEvent>,
                now: Timestamp,
            ) -> StoreResult<(i64, bool)> {
                let supply_json = serde_json::to_string(&s.supply).map_err(|e| {
                    $crate::StoreError::InvalidInput(format!("supply entries: {e}"))
                })?;
                let ratio = s
                    .ratio_ppm
                    .map(|r| $crate::rows::to_i64(r, "ratio_ppm"))
                    .transpose()?;
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let id: i64 = sqlx::query_scalar($crate::sql::INSERT_SNAPSHOT)
                    .bind(s.taken_at.0)
                    .bind(i64::from(s.bitcoin_height))
                    .bind(s.bitcoin_block_hash.as_str())
                    .bind($crate::rows::to_i64(s.reserve_sats.0, "reserve_sats")?)
                    .bind($crate::rows::to_i64(s.supply_sats.0, "supply_sats")?)
                    .bind(ratio)
                    .bind(s.healthy)
                    .bind(s.stale)
                    .bind(supply_json)
                    .fetch_one(&mut *tx)
                    .await?;
                let mut written = false;
                if let Some(e) = event {
                    written = sqlx::query($crate::webhooks::INSERT_OUTBOX_ONCE)
                        .bind(e.event_id)
                        .bind(e.event_type.as_str())
                        .bind(e.payload_json.as_str())
                        .bind(e.target_url.as_deref())
                        .bind(now.0)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected()
                        == 1;
                }
                tx.commit().await?;
                Ok((id, written))
            }

            async fn confirm_and_reject_notify(
                &self,
                id: ValidationId,
                confirmations: u64,
                reason: &Reason,
                event: &NewOutboxEvent,
                now: Timestamp,
            ) -> StoreResult<()> {
                ValidationStatus::Detected
                    .transition(ValidationStatus::Confirmed)?
                    .transition(ValidationStatus::Rejected)?;
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let done = sqlx::query($crate::sql::CONFIRM_AND_REJECT)
                    .bind(id.0)
                    .bind($crate::rows::to_i64(confirmations, "confirmations")?)
                    .bind(reason.code.as_str())
                    .bind(reason.detail.as_str())
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() != 1 {
                    drop(tx);
                    return Err(self.refused(id, ValidationStatus::Confirmed).await);
                }
                $crate::webhooks::insert_event!(tx, id, event, now);
                tx.commit().await?;
                Ok(())
            }
        }
    };
}
pub(crate) use impl_webhook_store;
