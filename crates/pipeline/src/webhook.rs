//! Webhook delivery over the outbox: sign → POST → record the attempt.
//!
//! Each due outbox row is POSTed as its stored JSON body to its target, with
//!
//! - `ubtc-event-id` and `idempotency-key`: the row's event id, the same on every
//!   attempt, so a receiver that saw it already can ignore a repeat;
//! - `ubtc-event-type`;
//! - `ubtc-timestamp`: Unix seconds of this attempt;
//! - `ubtc-signature: v1=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>`: receivers
//!   recompute it over the raw body and reject stale timestamps.
//!
//! A 2xx answer delivers the row. Anything else (or no answer within the timeout) is
//! retried with exponential back-off (see [`WebhookConfig::backoff_ms`]); after
//! `max_attempts` the row goes to the dead letter, where it stays (never deleted).
//!
//! Each outbox row also goes to every active registered consumer subscribed to its
//! event type: the first time a row is seen, one delivery row per such consumer is
//! created (`WebhookStore::fan_out_event`, idempotent), and those are attempted,
//! retried and dead-lettered the same way, signed with the consumer's own secret.
//!
//! Delivery is at least once: a receiver that answered 2xx but whose answer was lost
//! gets the event again, with the same event id. Targets on loopback, private,
//! link-local or otherwise non-public addresses are refused (also after DNS
//! resolution, so a public name pointing inside is refused too) unless the
//! configuration allows them; redirects are not followed, so they cannot lead there
//! either.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use ubtc_core::Timestamp;
use ubtc_store::{OutboxEvent, OutboxOutcome, Store, StoreError};

use crate::{PipelineError, StepOutcome};

/// Rows delivered per tick.
const BATCH: u32 = 32;
/// Longest error text kept with a failed attempt (a receiver's error page can be big).
const ERROR_MAX_CHARS: usize = 300;

/// How deliveries are made and retried.
#[derive(Clone)]
pub struct WebhookConfig {
    /// HMAC key of the signature header. Never logged (see the `Debug` impl).
    pub secret: Vec<u8>,
    /// Bound of one delivery attempt, connection included.
    pub timeout: Duration,
    /// Attempts before the dead letter.
    pub max_attempts: u32,
    /// Delay after the first failure; doubles after each one, up to `backoff_max_ms`.
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    /// Allow targets on loopback and private networks (tests, the demo, an
    /// operator's internal consumers). Off by default.
    pub allow_private_targets: bool,
}

/// 30 s doubling to a 12 h cap, 17 attempts: the last one is made about 3.2 days
/// after the first (docs/operations.md lists the schedule).
pub const MAX_ATTEMPTS_DEFAULT: u32 = 17;
pub const BACKOFF_BASE_MS_DEFAULT: i64 = 30_000;
pub const BACKOFF_MAX_MS_DEFAULT: i64 = 12 * 3_600_000;
pub const TIMEOUT_MS_DEFAULT: u64 = 10_000;

impl WebhookConfig {
    pub fn new(secret: Vec<u8>) -> Self {
        Self {
            secret,
            timeout: Duration::from_millis(TIMEOUT_MS_DEFAULT),
            max_attempts: MAX_ATTEMPTS_DEFAULT,
            backoff_base_ms: BACKOFF_BASE_MS_DEFAULT,
            backoff_max_ms: BACKOFF_MAX_MS_DEFAULT,
            allow_private_targets: false,
        }
    }

    /// Delay before the next attempt after attempt number `attempt` (1-based) failed.
    pub fn backoff_ms(&self, attempt: u32) -> i64 {
        let exp = attempt.saturating_sub(1).min(30);
        self.backoff_base_ms
            .saturating_mul(1i64 << exp)
            .min(self.backoff_max_ms)
    }
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("secret", &"[redacted]")
            .field("timeout", &self.timeout)
            .field("max_attempts", &self.max_attempts)
            .field("backoff_base_ms", &self.backoff_base_ms)
            .field("backoff_max_ms", &self.backoff_max_ms)
            .field("allow_private_targets", &self.allow_private_targets)
            .finish()
    }
}

/// The signature header value for `body` sent at `timestamp_secs`.
pub fn sign(secret: &[u8], timestamp_secs: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signature header in constant time (for receivers, and our tests).
pub fn verify(secret: &[u8], timestamp_secs: i64, body: &[u8], header: &str) -> bool {
    let Some(hex_sig) = header.strip_prefix("v1=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(timestamp_secs.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("cannot build the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// What one tick did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WebhookTick {
    pub delivered: usize,
    pub retrying: usize,
    pub dead: usize,
}

impl StepOutcome for WebhookTick {
    fn is_idle(&self) -> bool {
        self.delivered == 0 && self.retrying == 0 && self.dead == 0
    }
}

/// Resolves names like the system does, then refuses the name if any address it
/// resolves to is not public, so the check holds for the address actually connected
/// to (no DNS rebinding between a check and the connection). A name with a mix of
/// public and internal answers is refused whole: it is a rebinding setup, not a
/// consumer.
struct PublicOnlyResolver;

impl reqwest::dns::Resolve for PublicOnlyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            if let Some(why) = crate::address::special_host_name(&host) {
                return Err(format!("{host} is a {why}").into());
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if let Some(reason) = refuse_resolved(&host, &addrs) {
                return Err(reason.into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Why the addresses `host` resolved to may not be connected to, if so: none, or any
/// one of them special-purpose.
fn refuse_resolved(host: &str, addrs: &[SocketAddr]) -> Option<String> {
    if let Some((ip, why)) = addrs
        .iter()
        .find_map(|a| crate::address::special_purpose(a.ip()).map(|w| (a.ip(), w)))
    {
        return Some(format!("{host} resolves to {ip} ({why})"));
    }
    if addrs.is_empty() {
        return Some(format!("{host} resolves to no address"));
    }
    None
}

/// Checks a webhook target URL as the delivery worker will: an `http(s)` URL whose
/// host is not loopback/private unless `allow_private`. For registration (the API).
/// A public name that resolves inside is still refused at delivery time.
pub fn check_target(target: &str, allow_private: bool) -> Result<(), String> {
    let url = reqwest::Url::parse(target).map_err(|e| format!("invalid URL: {e}"))?;
    match refuse_target(&url, allow_private) {
        Some(reason) => Err(reason),
        None => Ok(()),
    }
}

/// Why a target is refused before any connection, if it is.
fn refuse_target(url: &reqwest::Url, allow_private: bool) -> Option<String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Some(format!("scheme {} is not http(s)", url.scheme()));
    }
    if allow_private {
        return None;
    }
    match url.host() {
        None => Some("no host".into()),
        Some(url::Host::Ipv4(ip)) => crate::address::special_purpose(IpAddr::V4(ip))
            .map(|why| format!("{ip} is not a public address ({why})")),
        Some(url::Host::Ipv6(ip)) => crate::address::special_purpose(IpAddr::V6(ip))
            .map(|why| format!("{ip} is not a public address ({why})")),
        Some(url::Host::Domain(d)) => {
            crate::address::special_host_name(d).map(|why| format!("{d} is a {why}"))
        }
    }
}

/// Delivers due outbox rows. Several may run (each process, or a few per process):
/// each claims the rows it delivers, so two workers do not send the same row; only a
/// worker stalled past its claim (see `claim_until`) can repeat one, and the event id
/// makes that harmless.
pub struct WebhookWorker {
    store: Arc<dyn Store>,
    http: reqwest::Client,
    config: WebhookConfig,
}

impl WebhookWorker {
    pub fn new(store: Arc<dyn Store>, config: WebhookConfig) -> Result<Self, WebhookError> {
        let mut builder = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            // A system proxy would hide the real target from the address checks.
            .no_proxy()
            .user_agent(concat!("ubtc-webhooks/", env!("CARGO_PKG_VERSION")));
        if !config.allow_private_targets {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        Ok(Self {
            store,
            http: builder.build().map_err(WebhookError::Client)?,
            config,
        })
    }

    /// End of a claim taken now on a batch: long enough for every row of the batch to
    /// time out one after the other, plus one timeout of slack. A worker that dies
    /// mid-batch leaves its rows to another worker after this.
    fn claim_until(&self, now: Timestamp) -> Timestamp {
        let timeout_ms = i64::try_from(self.config.timeout.as_millis()).unwrap_or(i64::MAX);
        now.plus_millis(timeout_ms.saturating_mul(i64::from(BATCH) + 1))
    }

    /// Attempts every due row once (up to a batch), recording each outcome.
    pub async fn tick(&self) -> Result<WebhookTick, PipelineError> {
        let now = Timestamp::now();
        // Claimed, not only read: another worker does not get these rows while this
        // one works through them (one after the other, each within the timeout).
        let due = self
            .store
            .claim_due_outbox(now, self.claim_until(now), BATCH)
            .await?;
        let mut out = WebhookTick::default();
        for event in due {
            // An event nobody asked for (no callback URL, no subscribed consumer) is
            // kept as a dead letter, so that a consumer registered later can have it
            // redelivered; it is not a failure worth a warning.
            let mut unaddressed = false;
            let outcome = if event.attempts == 0 {
                // First sight of the event: one delivery row per subscribed consumer
                // (idempotent, so a crash before the outcome below is recorded, or a
                // redelivery, creates none twice).
                let consumers = self.store.fan_out_event(event.event_id, now).await?;
                match (&event.target_url, consumers) {
                    (Some(_), _) => self.attempt(&event).await,
                    // No callback URL: the outbox row's job is done once the consumer
                    // deliveries exist; they carry the attempts from here.
                    (None, n) if n > 0 => OutboxOutcome::Delivered,
                    (None, _) => {
                        unaddressed = true;
                        OutboxOutcome::Dead {
                            error: "no callback URL and no subscribed consumer".into(),
                        }
                    }
                }
            } else {
                self.attempt(&event).await
            };
            let label = match &outcome {
                OutboxOutcome::Delivered => {
                    out.delivered += 1;
                    "delivered"
                }
                OutboxOutcome::Retry { .. } => {
                    out.retrying += 1;
                    "retry"
                }
                OutboxOutcome::Dead { .. } if unaddressed => {
                    out.dead += 1;
                    "unaddressed"
                }
                OutboxOutcome::Dead { .. } => {
                    out.dead += 1;
                    "dead"
                }
            };
            metrics::counter!("ubtc_webhook_deliveries_total", "event" => event.event_type.clone(), "outcome" => label)
                .increment(1);
            let recorded = self
                .store
                .record_outbox_attempt(event.event_id, &outcome, Timestamp::now())
                .await?;
            if !recorded {
                // Another worker recorded this row first; its outcome stands.
                continue;
            }
            match &outcome {
                OutboxOutcome::Delivered if event.target_url.is_none() => {
                    tracing::debug!(event = %event.event_id, kind = %event.event_type, "webhook event handed to its consumers");
                }
                OutboxOutcome::Delivered => {
                    tracing::info!(event = %event.event_id, kind = %event.event_type, attempt = event.attempts + 1, "webhook delivered");
                    self.mark_validation_delivered(event.validation_id, &event.event_type)
                        .await?;
                }
                OutboxOutcome::Retry {
                    next_attempt_at,
                    error,
                } => {
                    tracing::info!(event = %event.event_id, attempt = event.attempts + 1, retry_at = %next_attempt_at, error = %error, "webhook failed; will retry");
                }
                OutboxOutcome::Dead { .. } if unaddressed => {
                    tracing::debug!(event = %event.event_id, kind = %event.event_type, "webhook event has no recipient; kept for redelivery");
                }
                OutboxOutcome::Dead { error } => {
                    tracing::warn!(event = %event.event_id, kind = %event.event_type, attempts = event.attempts + 1, error = %error, "webhook dead-lettered");
                }
            }
        }
        self.deliver_to_consumers(&mut out).await?;
        Ok(out)
    }

    /// Attempts every due delivery to a registered consumer once (up to a batch),
    /// signed with that consumer's secret, recording each outcome.
    async fn deliver_to_consumers(&self, out: &mut WebhookTick) -> Result<(), PipelineError> {
        let due = self
            .store
            .claim_due_deliveries(Timestamp::now(), self.claim_until(Timestamp::now()), BATCH)
            .await?;
        for d in due {
            let outcome = self
                .attempt_to(
                    Some(&d.url),
                    d.secret.as_bytes(),
                    d.event_id,
                    &d.event_type,
                    &d.payload_json,
                    d.attempts,
                )
                .await;
            let label = match &outcome {
                OutboxOutcome::Delivered => {
                    out.delivered += 1;
                    "delivered"
                }
                OutboxOutcome::Retry { .. } => {
                    out.retrying += 1;
                    "retry"
                }
                OutboxOutcome::Dead { .. } => {
                    out.dead += 1;
                    "dead"
                }
            };
            metrics::counter!("ubtc_webhook_deliveries_total", "event" => d.event_type.clone(), "outcome" => label)
                .increment(1);
            let recorded = self
                .store
                .record_delivery_attempt(d.event_id, d.consumer_id, &outcome, Timestamp::now())
                .await?;
            if !recorded {
                continue;
            }
            match &outcome {
                OutboxOutcome::Delivered => {
                    tracing::info!(event = %d.event_id, consumer = %d.consumer_id, kind = %d.event_type, attempt = d.attempts + 1, "webhook delivered to consumer");
                    self.mark_validation_delivered(d.validation_id, &d.event_type)
                        .await?;
                }
                OutboxOutcome::Retry {
                    next_attempt_at,
                    error,
                } => {
                    tracing::info!(event = %d.event_id, consumer = %d.consumer_id, attempt = d.attempts + 1, retry_at = %next_attempt_at, error = %error, "webhook to consumer failed; will retry");
                }
                OutboxOutcome::Dead { error } => {
                    tracing::warn!(event = %d.event_id, consumer = %d.consumer_id, kind = %d.event_type, attempts = d.attempts + 1, error = %error, "webhook to consumer dead-lettered");
                }
            }
        }
        Ok(())
    }

    /// A signed validation whose result reached a requester or consumer becomes
    /// `delivered`.
    async fn mark_validation_delivered(
        &self,
        validation: Option<ubtc_core::ValidationId>,
        event_type: &str,
    ) -> Result<(), PipelineError> {
        let (Some(id), "validation.signed") = (validation, event_type) else {
            return Ok(());
        };
        match self.store.mark_delivered(id, Timestamp::now()).await {
            Ok(()) => Ok(()),
            // Already delivered (a repeat): nothing to change.
            Err(StoreError::Transition(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn attempt(&self, event: &OutboxEvent) -> OutboxOutcome {
        if self.config.secret.is_empty() {
            // Nothing to sign a callback with (consumers have their own secrets). Dead
            // with the reason, kept: a redelivery sends it once a secret is set.
            return OutboxOutcome::Dead {
                error: "callback not sent: webhooks.secret is not set".into(),
            };
        }
        self.attempt_to(
            event.target_url.as_deref(),
            &self.config.secret,
            event.event_id,
            &event.event_type,
            &event.payload_json,
            event.attempts,
        )
        .await
    }

    async fn attempt_to(
        &self,
        target: Option<&str>,
        secret: &[u8],
        event_id: uuid::Uuid,
        event_type: &str,
        payload_json: &str,
        attempts: u32,
    ) -> OutboxOutcome {
        let attempt = attempts + 1;
        let Some(target) = target else {
            return OutboxOutcome::Dead {
                error: "no callback URL and no subscribed consumer".into(),
            };
        };
        let url = match reqwest::Url::parse(target) {
            Ok(url) => url,
            Err(e) => {
                return OutboxOutcome::Dead {
                    error: format!("invalid target URL: {e}"),
                }
            }
        };
        if let Some(reason) = refuse_target(&url, self.config.allow_private_targets) {
            return OutboxOutcome::Dead {
                error: format!("target refused: {reason}"),
            };
        }
        let started = std::time::Instant::now();
        let posted = self
            .post(url, secret, event_id, event_type, payload_json)
            .await;
        metrics::histogram!("ubtc_webhook_delivery_seconds")
            .record(started.elapsed().as_secs_f64());
        let error = match posted {
            Ok(()) => return OutboxOutcome::Delivered,
            Err(e) => e,
        };
        if attempt >= self.config.max_attempts {
            OutboxOutcome::Dead { error }
        } else {
            OutboxOutcome::Retry {
                next_attempt_at: Timestamp::now().plus_millis(self.config.backoff_ms(attempt)),
                error,
            }
        }
    }

    async fn post(
        &self,
        url: reqwest::Url,
        secret: &[u8],
        event_id: uuid::Uuid,
        event_type: &str,
        payload_json: &str,
    ) -> Result<(), String> {
        let timestamp_secs = Timestamp::now().as_millis() / 1000;
        let body = payload_json.as_bytes().to_vec();
        let signature = sign(secret, timestamp_secs, &body);
        let response = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("ubtc-event-id", event_id.to_string())
            .header("idempotency-key", event_id.to_string())
            .header("ubtc-event-type", event_type)
            .header("ubtc-timestamp", timestamp_secs.to_string())
            .header("ubtc-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| truncate(&format!("request failed: {e}")))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else {
            let text = response.text().await.unwrap_or_default();
            Err(truncate(&format!("HTTP {status}: {text}")))
        }
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(ERROR_MAX_CHARS).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_and_bind_timestamp_and_body() {
        let sig = sign(b"k", 1_700_000_000, b"{\"a\":1}");
        assert!(verify(b"k", 1_700_000_000, b"{\"a\":1}", &sig));
        assert!(!verify(b"k", 1_700_000_001, b"{\"a\":1}", &sig));
        assert!(!verify(b"k", 1_700_000_000, b"{\"a\":2}", &sig));
        assert!(!verify(b"other", 1_700_000_000, b"{\"a\":1}", &sig));
    }

    #[test]
    fn schedule_lasts_about_three_days() {
        let c = WebhookConfig::new(vec![]);
        let total_ms: i64 = (1..c.max_attempts).map(|a| c.backoff_ms(a)).sum();
        let days = total_ms as f64 / 86_400_000.0;
        assert!((3.0..3.5).contains(&days), "{days} days");
        assert_eq!(c.backoff_ms(1), 30_000);
        assert_eq!(c.backoff_ms(16), 12 * 3_600_000);
    }

    #[test]
    fn private_targets_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1/x",
            "http://10.1.2.3/",
            "http://[::1]/",
            "http://localhost:8080/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::ffff:192.168.0.1]/",
            "http://localhost.:8080/",
            "http://[::127.0.0.1]:9/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[fec0::1]/",
            "http://198.18.0.1/",
            "http://192.0.0.170/",
            "http://0x7f.1/",
            "ftp://example.com/",
        ] {
            let u = reqwest::Url::parse(url).unwrap();
            assert!(refuse_target(&u, false).is_some(), "{url}");
        }
        let public = reqwest::Url::parse("https://hooks.example.com/ubtc").unwrap();
        assert!(refuse_target(&public, false).is_none());
        let local = reqwest::Url::parse("http://127.0.0.1:9/").unwrap();
        assert!(refuse_target(&local, true).is_none());
    }

    #[test]
    fn a_name_is_refused_when_any_of_its_addresses_is_special() {
        let public: SocketAddr = "93.184.215.14:0".parse().unwrap();
        let public6: SocketAddr = "[2606:2800:21f:cb07::1]:0".parse().unwrap();
        assert_eq!(refuse_resolved("hooks.example", &[public, public6]), None);
        for inside in [
            "127.0.0.1:0",
            "10.0.0.7:0",
            "169.254.169.254:0",
            "[::1]:0",
            "[::ffff:127.0.0.1]:0",
            "[64:ff9b::a00:1]:0",
            "[2002:a00:1::1]:0",
            "[fec0::1]:0",
        ] {
            let inside: SocketAddr = inside.parse().unwrap();
            // Alone, or hidden behind a public answer (DNS rebinding).
            assert!(
                refuse_resolved("evil.example", &[inside]).is_some(),
                "{inside}"
            );
            assert!(
                refuse_resolved("evil.example", &[public, inside]).is_some(),
                "{inside}"
            );
        }
        assert!(refuse_resolved("empty.example", &[]).is_some());
    }

    #[tokio::test]
    async fn the_resolver_refuses_local_names_before_looking_them_up() {
        use reqwest::dns::Resolve as _;
        for name in ["localhost", "localhost.", "x.localhost"] {
            let name: reqwest::dns::Name = name.parse().unwrap();
            assert!(PublicOnlyResolver.resolve(name).await.is_err());
        }
    }
}
