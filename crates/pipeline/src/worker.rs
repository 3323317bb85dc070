//! The queue worker: claim → statement → sign → store (with outbox) in one step.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ubtc_chains::BitcoinBackend;
use ubtc_core::bundle::BitcoinNetwork;
use ubtc_core::registry::RegistryVersion;
use ubtc_core::validation::Reason;
use ubtc_core::{ChainId, Statement, StatementMessage, Timestamp, ValidationId};
use ubtc_store::{Claimed, NewOutboxEvent, ReserveSnapshot, SignedResult, Store, StoreError};

use crate::bundle::{build_bundle, Published};
use crate::signer::{ReserveSigner, SignFailure};
use crate::{PipelineError, StepOutcome};

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Names this worker in leases (host and process, so an operator can find it).
    pub worker_id: String,
    /// How long a claim is held before another worker may take the job over.
    pub lease_ms: i64,
    /// Attempts before a job goes to the dead letter (`failed`).
    pub max_attempts: u32,
    /// First retry delay; doubles each attempt up to `backoff_max_ms`.
    pub backoff_base_ms: i64,
    pub backoff_max_ms: i64,
    pub network: BitcoinNetwork,
    /// Native unit name per chain, for the bundle (`wei`, `lamports`, …).
    pub native_units: HashMap<ChainId, String>,
}

impl WorkerConfig {
    /// Delay before attempt `attempt + 1`, after `attempt` failed.
    pub fn backoff_ms(&self, attempt: u32) -> i64 {
        let exp = attempt.saturating_sub(1).min(30);
        self.backoff_base_ms
            .saturating_mul(1i64 << exp)
            .min(self.backoff_max_ms)
    }
}

/// What one worker tick did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WorkerTick {
    /// Nothing was due.
    Idle,
    Signed(ValidationId),
    /// Given back with back-off.
    Retrying(ValidationId, Reason),
    /// Dead-lettered.
    Failed(ValidationId, Reason),
    /// Another worker took the job over (our lease expired); nothing was written.
    LostClaim(ValidationId),
}

impl StepOutcome for WorkerTick {
    fn is_idle(&self) -> bool {
        matches!(self, WorkerTick::Idle)
    }
}

/// What one batched worker step did: one entry per job claimed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerBatch(pub Vec<WorkerTick>);

impl StepOutcome for WorkerBatch {
    fn is_idle(&self) -> bool {
        self.0.is_empty()
    }
}

/// How long a worker reuses the latest reserve snapshot it read for its bundles:
/// snapshots come minutes apart, jobs milliseconds apart.
pub const SNAPSHOT_CACHE: Duration = Duration::from_secs(5);

pub struct Worker {
    store: Arc<dyn Store>,
    signer: Arc<dyn ReserveSigner>,
    bitcoin: Arc<dyn BitcoinBackend>,
    config: WorkerConfig,
    /// The latest reserve snapshot and when it was read.
    snapshot: Mutex<Option<(Instant, Option<Arc<ReserveSnapshot>>)>>,
    /// The published reserve registry versions and when they were read.
    registry: Mutex<Option<(Instant, Arc<Vec<RegistryVersion>>)>>,
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        signer: Arc<dyn ReserveSigner>,
        bitcoin: Arc<dyn BitcoinBackend>,
        config: WorkerConfig,
    ) -> Self {
        Self {
            store,
            signer,
            bitcoin,
            config,
            snapshot: Mutex::new(None),
            registry: Mutex::new(None),
        }
    }

    /// The published registry versions (oldest first) that bundles carry, read at most
    /// once per [`SNAPSHOT_CACHE`]: a new version is published by a key ceremony, rarely.
    async fn registry(&self) -> Result<Arc<Vec<RegistryVersion>>, PipelineError> {
        {
            let cached = self.registry.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((read_at, versions)) = cached.as_ref() {
                if read_at.elapsed() < SNAPSHOT_CACHE {
                    return Ok(versions.clone());
                }
            }
        }
        let versions = Arc::new(self.store.list_registry_versions().await?);
        *self.registry.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), versions.clone()));
        Ok(versions)
    }

    /// The latest reserve snapshot, read at most once per [`SNAPSHOT_CACHE`].
    async fn latest_snapshot(&self) -> Result<Option<Arc<ReserveSnapshot>>, PipelineError> {
        {
            // Plain data behind the lock: a panic elsewhere leaves it usable.
            let cached = self.snapshot.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((read_at, snapshot)) = cached.as_ref() {
                if read_at.elapsed() < SNAPSHOT_CACHE {
                    return Ok(snapshot.clone());
                }
            }
        }
        let snapshot = self.store.latest_reserve_snapshot().await?.map(Arc::new);
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((Instant::now(), snapshot.clone()));
        Ok(snapshot)
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.config
    }

    /// Claims one due job and carries it as far as it goes.
    pub async fn tick(&self) -> Result<WorkerTick, PipelineError> {
        let now = Timestamp::now();
        let Some(claim) = self
            .store
            .claim_next(&self.config.worker_id, self.config.lease_ms, now)
            .await?
        else {
            return Ok(WorkerTick::Idle);
        };
        self.process(claim).await
    }

    /// Claims up to `max` due jobs and carries them together: their statements are
    /// fixed in one transaction, signed concurrently, and their results stored in one
    /// transaction. Same guarantees as [`Worker::tick`] per job, far fewer commits.
    pub async fn tick_batch(&self, max: u32) -> Result<WorkerBatch, PipelineError> {
        let now = Timestamp::now();
        let claims = self
            .store
            .claim_batch(
                &self.config.worker_id,
                max.max(1),
                self.config.lease_ms,
                now,
            )
            .await?;
        if claims.is_empty() {
            return Ok(WorkerBatch::default());
        }
        let mut ticks = Vec::with_capacity(claims.len());

        // 1. Statements: reuse stored ones; build and fix the rest in one transaction.
        let mut ready: Vec<(Claimed, Statement)> = Vec::with_capacity(claims.len());
        let mut fresh: Vec<(Claimed, Statement, String)> = Vec::new();
        let mut stamp = None;
        for claim in claims {
            match self.statement_parts(&claim, &mut stamp).await {
                Ok((statement, None)) => ready.push((claim, statement)),
                Ok((statement, Some(json))) => fresh.push((claim, statement, json)),
                Err(failure) => ticks.push(self.give_back(&claim, failure).await?),
            }
        }
        if !fresh.is_empty() {
            let items: Vec<(&Claimed, &str)> =
                fresh.iter().map(|(c, _, j)| (c, j.as_str())).collect();
            let fixed = self
                .store
                .prepare_statements(&items, Timestamp::now())
                .await?;
            for ((claim, statement, _), ok) in fresh.into_iter().zip(fixed) {
                if ok {
                    ready.push((claim, statement));
                } else {
                    ticks.push(WorkerTick::LostClaim(claim.record.id));
                }
            }
        }

        // 2. Signatures, concurrently (a guardian round is network-bound).
        let signed =
            futures::future::join_all(ready.iter().map(|(_, s)| self.signer.sign(s))).await;

        // 3. Results, in one transaction.
        let snapshot = self.latest_snapshot().await?;
        let registry = self.registry().await?;
        let now = Timestamp::now();
        let mut results = Vec::with_capacity(ready.len());
        for ((claim, statement), outcome) in ready.iter().zip(signed) {
            match outcome {
                Ok(signed) => results.push((
                    claim,
                    self.signed_result(
                        claim,
                        statement,
                        signed,
                        snapshot.as_deref(),
                        &registry,
                        now,
                    )?,
                )),
                Err(failure) => ticks.push(self.give_back(claim, failure).await?),
            }
        }
        if !results.is_empty() {
            let items: Vec<(&Claimed, &SignedResult)> =
                results.iter().map(|(c, r)| (*c, r)).collect();
            let written = self.store.complete_signed_batch(&items, now).await?;
            for ((claim, _), ok) in results.iter().zip(written) {
                let id = claim.record.id;
                if ok {
                    tracing::debug!(validation = %id, attempt = claim.attempt, "signed");
                    ticks.push(WorkerTick::Signed(id));
                } else {
                    tracing::warn!(validation = %id, "lease lost before the result was stored; another worker has it");
                    ticks.push(WorkerTick::LostClaim(id));
                }
            }
        }
        Ok(WorkerBatch(ticks))
    }

    /// The statement of a claim, and its JSON when it still has to be stored. The
    /// Bitcoin block stamp is read once per batch.
    async fn statement_parts(
        &self,
        claim: &Claimed,
        stamp: &mut Option<ubtc_core::BlockStamp>,
    ) -> Result<(Statement, Option<String>), SignFailure> {
        let record = &claim.record;
        if let Some(json) = &record.statement_json {
            let statement = serde_json::from_str(json).map_err(|e| {
                SignFailure::Fatal(Reason::new(
                    "statement_corrupt",
                    format!("stored statement does not parse: {e}"),
                ))
            })?;
            return Ok((statement, None));
        }
        let bytes = hex::decode(&record.message_hex).map_err(|_| {
            SignFailure::Fatal(Reason::new("message_corrupt", "stored message is not hex"))
        })?;
        let message = StatementMessage::parse(&bytes)
            .map_err(|e| SignFailure::Fatal(Reason::new(e.code(), e.to_string())))?;
        let block = match stamp {
            Some(s) => s.clone(),
            None => {
                let tip = self.bitcoin.tip().await.map_err(|e| {
                    SignFailure::Retry(Reason::new("bitcoin_unavailable", e.to_string()))
                })?;
                *stamp = Some(tip.clone());
                tip
            }
        };
        let statement = Statement::new(
            record.payment.clone(),
            record.payer.clone(),
            message,
            block,
            record.id.0,
        );
        let json = serde_json::to_string(&statement)
            .map_err(|e| SignFailure::Fatal(Reason::new("statement_corrupt", e.to_string())))?;
        Ok((statement, Some(json)))
    }

    /// Carries one claimed job: fixes its statement (once, durably), signs, stores.
    pub async fn process(&self, claim: Claimed) -> Result<WorkerTick, PipelineError> {
        let id = claim.record.id;
        let statement = match self.statement_for(&claim).await {
            Ok(statement) => statement,
            Err(StatementStep::Store(StoreError::LostClaim { .. })) => {
                return Ok(WorkerTick::LostClaim(id))
            }
            Err(StatementStep::Store(e)) => return Err(e.into()),
            Err(StatementStep::Failure(failure)) => return self.give_back(&claim, failure).await,
        };
        let signed = match self.signer.sign(&statement).await {
            Ok(signed) => signed,
            Err(failure) => return self.give_back(&claim, failure).await,
        };
        let snapshot = self.latest_snapshot().await?;
        let registry = self.registry().await?;
        let now = Timestamp::now();
        let result = self.signed_result(
            &claim,
            &statement,
            signed,
            snapshot.as_deref(),
            &registry,
            now,
        )?;
        match self.store.complete_signed(&claim, &result, now).await {
            Ok(()) => {
                tracing::info!(validation = %id, chain = %claim.record.payment.chain, attempt = claim.attempt, "signed");
                Ok(WorkerTick::Signed(id))
            }
            Err(StoreError::LostClaim { .. }) => {
                tracing::warn!(validation = %id, "lease lost before the result was stored; another worker has it");
                Ok(WorkerTick::LostClaim(id))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The statement of this validation. Built on the first attempt with a fresh
    /// Bitcoin block stamp and stored before anything is signed; later attempts reuse
    /// it, so a retried job never asks for a signature over a different statement.
    async fn statement_for(&self, claim: &Claimed) -> Result<Statement, StatementStep> {
        let (statement, json) = self
            .statement_parts(claim, &mut None)
            .await
            .map_err(StatementStep::Failure)?;
        if let Some(json) = json {
            self.store
                .prepare_statement(claim, &json, Timestamp::now())
                .await
                .map_err(StatementStep::Store)?;
        }
        Ok(statement)
    }

    /// The bundle, its `validation.signed` outbox event and the metrics of one job.
    fn signed_result(
        &self,
        claim: &Claimed,
        statement: &Statement,
        signed: crate::signer::SignedStatement,
        snapshot: Option<&ReserveSnapshot>,
        registry: &[RegistryVersion],
        now: Timestamp,
    ) -> Result<SignedResult, PipelineError> {
        let id = claim.record.id;
        let unit = self
            .config
            .native_units
            .get(&claim.record.payment.chain)
            .map(String::as_str)
            .unwrap_or("base-units");
        let bundle = build_bundle(
            &claim.record,
            statement,
            signed,
            self.config.network,
            unit,
            Published { snapshot, registry },
            now,
        );
        let bundle_json = serde_json::to_string(&bundle).map_err(|e| {
            PipelineError::Store(StoreError::Corrupt(format!(
                "bundle does not serialize: {e}"
            )))
        })?;
        let event = NewOutboxEvent {
            event_id: uuid::Uuid::now_v7(),
            event_type: "validation.signed".to_owned(),
            // The bundle is already JSON: splice it in rather than serialize it twice
            // (this runs once per validation). The other fields are a UUID, a number
            // and the narrow chain/tx alphabets, so no escaping is needed.
            payload_json: format!(
                "{{\"type\":\"validation.signed\",\"validation_id\":\"{id}\",\"chain\":\"{}\",\
                 \"tx_hash\":\"{}\",\"index\":{},\"proof\":{bundle_json}}}",
                claim.record.payment.chain,
                claim.record.payment.tx_hash,
                claim.record.payment.index,
            ),
            target_url: claim.record.callback_url.clone(),
        };
        Ok(SignedResult {
            statement_text: bundle.statement_text,
            bundle_json,
            outbox: vec![event],
            processing_ms: now.as_millis() - claim.record.created_at.as_millis(),
        })
    }

    async fn give_back(
        &self,
        claim: &Claimed,
        failure: SignFailure,
    ) -> Result<WorkerTick, PipelineError> {
        let id = claim.record.id;
        let now = Timestamp::now();
        let (reason, fatal) = match failure {
            SignFailure::Retry(r) => (r, false),
            SignFailure::Fatal(r) => (r, true),
        };
        let outcome = if fatal || claim.attempt >= self.config.max_attempts {
            let event = NewOutboxEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "validation.failed".to_owned(),
                payload_json: serde_json::json!({
                    "type": "validation.failed",
                    "validation_id": id,
                    "chain": claim.record.payment.chain,
                    "tx_hash": claim.record.payment.tx_hash,
                    "index": claim.record.payment.index,
                    "reason": reason,
                    "attempts": claim.attempt,
                })
                .to_string(),
                target_url: claim.record.callback_url.clone(),
            };
            self.store.fail(claim, &reason, &[event], now).await.map(|()| {
                tracing::warn!(validation = %id, code = %reason.code, attempts = claim.attempt, "failed: dead letter");
                WorkerTick::Failed(id, reason.clone())
            })
        } else {
            let not_before = now.plus_millis(self.config.backoff_ms(claim.attempt));
            self.store.retry_later(claim, &reason, not_before, now).await.map(|()| {
                tracing::info!(validation = %id, code = %reason.code, attempt = claim.attempt, retry_at = %not_before, "will retry");
                WorkerTick::Retrying(id, reason.clone())
            })
        };
        match outcome {
            Ok(tick) => Ok(tick),
            Err(StoreError::LostClaim { .. }) => Ok(WorkerTick::LostClaim(id)),
            Err(e) => Err(e.into()),
        }
    }
}

enum StatementStep {
    Store(StoreError),
    Failure(SignFailure),
}
