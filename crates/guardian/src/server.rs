//! The guardian daemon: checks each signing request against its own chain view and
//! policy, records its approval durably, and answers with a signed partial signature
//! or a signed refusal with a reason code.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bitcoin::secp256k1::PublicKey;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;
use ubtc_bitcoin::bip322::ToSignParams;
use ubtc_bitcoin::multisig::{DescriptorCache, Form, PartialSignature};
use ubtc_chains::{BitcoinBackend, PaymentDepth};
use ubtc_core::{BlockStamp, ChainId, Payment, PaymentRef, Statement, Timestamp};
use uuid::Uuid;

use crate::config::{ChainViewKind, GuardianConfig};
use crate::devchain::{DevChainHttpAdapter, PaymentSource};
use crate::keystore::{self, GuardianKey};
use crate::protocol::{
    self, BatchAnswer, Envelope, Outcome, ProtocolError, RefusalCode, SignAnswer, SignBatch,
    SignRequest, ANSWER_TAG, BATCH_ANSWER_TAG, REQUEST_TAG,
};
use crate::record::{Approval, ApprovalLog};
use crate::GuardianError;

/// Test hook: when this variable is `1`, the guardian exits (status 75) right after
/// it has recorded an approval and before it answers, to show that a crash there
/// loses nothing. Never set in production.
pub const TEST_EXIT_AFTER_RECORD_ENV: &str = "UBTC_GUARDIAN_TEST_EXIT_AFTER_RECORD";

/// One watched chain: its view and its rate policy.
pub struct WatchedChain {
    /// This guardian's view of the chain (wrap any `ChainAdapter` in
    /// [`crate::devchain::EachPayment`]).
    pub adapter: Arc<dyn PaymentSource>,
    pub max_signatures_per_minute: u32,
}

/// Everything a guardian decides with.
pub struct GuardianPolicy {
    pub coordinators: Vec<PublicKey>,
    pub statement_versions: Vec<u32>,
    pub max_request_ttl_ms: i64,
    /// Oldest Bitcoin block stamp accepted, in blocks below this guardian's tip.
    pub max_stamp_age_blocks: u32,
    /// The reserve descriptors this guardian signs for, in the canonical text the
    /// coordinator sends (`SortedMulti::descriptor`; `[policy] reserves`, normalised
    /// by [`crate::config::PolicyConfig::reserves`]). Any other descriptor is refused,
    /// however many of its keys are this guardian's.
    pub reserves: Vec<String>,
    /// The BIP-322 forms statements are signed in (`[policy] forms`).
    pub forms: Vec<Form>,
}

struct Decisions {
    log: ApprovalLog,
    /// request id → (body digest, expiry, the answer sent): the same request gets the
    /// same answer; another body under a known id is a replay.
    answered: HashMap<Uuid, (String, Timestamp, SignAnswer)>,
    /// Approval times per chain in the last minute, for the rate policy.
    recent: HashMap<ChainId, VecDeque<Timestamp>>,
    /// batch id → (envelope body digest, expiry): another body under a known batch id
    /// is a replay.
    batches: HashMap<Uuid, (String, Timestamp)>,
}

pub struct Guardian {
    key: GuardianKey,
    chains: HashMap<ChainId, WatchedChain>,
    /// This guardian's own Bitcoin view, for the statements' block stamps.
    bitcoin: Arc<dyn BitcoinBackend>,
    policy: GuardianPolicy,
    /// One lock around check-record-answer: it makes "never two statements for one
    /// payment" hold under concurrent requests. Chain reads happen before it is taken.
    decisions: Mutex<Decisions>,
    /// The reserve descriptors seen in requests, parsed once.
    descriptors: DescriptorCache,
    exit_after_record: bool,
}

impl std::fmt::Debug for Guardian {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guardian")
            .field("key", &self.key)
            .field("chains", &self.chains.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What `/v1/identity` answers.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub public_key: String,
    pub fingerprint: String,
    pub chains: Vec<ChainId>,
}

impl Guardian {
    pub fn new(
        key: GuardianKey,
        chains: HashMap<ChainId, WatchedChain>,
        bitcoin: Arc<dyn BitcoinBackend>,
        policy: GuardianPolicy,
        log: ApprovalLog,
    ) -> Self {
        Self {
            key,
            chains,
            bitcoin,
            policy,
            decisions: Mutex::new(Decisions {
                log,
                answered: HashMap::new(),
                recent: HashMap::new(),
                batches: HashMap::new(),
            }),
            descriptors: DescriptorCache::new(),
            exit_after_record: std::env::var(TEST_EXIT_AFTER_RECORD_ENV).as_deref() == Ok("1"),
        }
    }

    /// Builds a guardian from its configuration: decrypts the keystore, opens the
    /// approval record and the chain views.
    pub fn from_config(config: &GuardianConfig) -> Result<Self, GuardianError> {
        let pass = keystore::passphrase_from(
            config.passphrase_file.as_deref(),
            Some(&config.passphrase_env),
        )?;
        let key = keystore::load(&config.keystore, &pass)?;
        let log = ApprovalLog::open(&config.approvals)?;
        let mut chains = HashMap::new();
        for c in &config.chains {
            let adapter: Arc<dyn PaymentSource> = match c.kind {
                ChainViewKind::DevHttp => {
                    Arc::new(DevChainHttpAdapter::new(c.name.clone(), &c.url)?)
                }
                ChainViewKind::Solana => Arc::new(crate::devchain::EachPayment(Arc::new(
                    ubtc_chains::solana::SolanaAdapter::new(c.solana_config()?)?,
                ))),
                ChainViewKind::Evm => Arc::new(crate::devchain::EachPayment(Arc::new(
                    ubtc_chains::evm::EvmAdapter::new(c.evm_config()?)?,
                ))),
            };
            chains.insert(
                c.name.clone(),
                WatchedChain {
                    adapter,
                    max_signatures_per_minute: c.max_signatures_per_minute,
                },
            );
        }
        let own = bitcoin::CompressedPublicKey(key.public());
        let mut reserves = Vec::new();
        for (descriptor, policy) in config.policy.reserves()? {
            // A reserve without this guardian's key would be refused by every signing
            // attempt anyway: say so at start.
            if !policy.keys().contains(&own) {
                return Err(crate::config::ConfigError::Invalid(format!(
                    "policy.reserves: {descriptor} does not hold this guardian's key {}",
                    key.public_hex()
                ))
                .into());
            }
            reserves.push(descriptor);
        }
        let policy = GuardianPolicy {
            coordinators: config.coordinator_keys()?,
            statement_versions: config.statement_versions.clone(),
            max_request_ttl_ms: (config.max_request_ttl_secs as i64).saturating_mul(1000),
            max_stamp_age_blocks: config.bitcoin.max_stamp_age_blocks,
            reserves,
            forms: config.policy.forms.clone(),
        };
        let bitcoin = config.bitcoin.backend()?;
        Ok(Self::new(key, chains, bitcoin, policy, log))
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public()
    }

    pub fn identity(&self) -> Identity {
        let mut chains: Vec<ChainId> = self.chains.keys().cloned().collect();
        chains.sort();
        Identity {
            public_key: self.key.public_hex(),
            fingerprint: keystore::fingerprint(&self.key.public()),
            chains,
        }
    }

    fn answer(
        &self,
        request_id: Uuid,
        payment: PaymentRef,
        statement_digest: String,
        outcome: Outcome,
    ) -> SignAnswer {
        crate::metrics::record_answer(&outcome);
        SignAnswer {
            request_id,
            guardian_key: self.key.public_hex(),
            payment,
            statement_digest,
            outcome,
            at: Timestamp::now(),
        }
    }

    /// Seals a batch answer. ECDSA nonces are deterministic (RFC 6979), so the same
    /// answers sealed again give the same envelope, byte for byte.
    fn seal_batch(
        &self,
        batch_id: Uuid,
        answers: Vec<SignAnswer>,
    ) -> Result<Envelope, ProtocolError> {
        protocol::seal(
            BATCH_ANSWER_TAG,
            &BatchAnswer {
                batch_id,
                guardian_key: self.key.public_hex(),
                answers,
            },
            &self.key,
        )
    }

    /// Decides one request. Every answer is signed, refusals included; `Err` only when
    /// the envelope cannot even be read (no request id or payment to answer about).
    pub async fn handle(&self, envelope: &Envelope) -> Result<Envelope, ProtocolError> {
        let request: SignRequest =
            match protocol::open(REQUEST_TAG, envelope, &self.policy.coordinators) {
                Ok((r, _)) => r,
                Err(e) => {
                    // Answer about what the unauthenticated body claims, so the sender can
                    // tell which of its requests failed; nothing in it is acted on.
                    let claimed: SignRequest = serde_json::from_str(&envelope.body)
                        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
                    let digest = claimed.statement.digest_hex();
                    let answer = self.answer(
                        claimed.request_id,
                        claimed.payment,
                        digest,
                        refused(RefusalCode::BadRequestSignature, &e.to_string()),
                    );
                    return protocol::seal(ANSWER_TAG, &answer, &self.key);
                }
            };
        let answer = self
            .decide_and_answer(std::slice::from_ref(&request))
            .await?
            .pop()
            .ok_or_else(|| ProtocolError::Malformed("no answer".into()))?;
        // Deterministic nonces: the same answer sealed again is the same envelope.
        protocol::seal(ANSWER_TAG, &answer, &self.key)
    }

    /// Decides a batch: one signature check for the batch, then every item checked,
    /// recorded (one disk flush for the batch) and answered on its own, as
    /// [`Guardian::handle`] would; the answers go back under one guardian signature
    /// ([`BatchAnswer`]). `Err` only when the envelope cannot be read at all or the
    /// batch is empty or too large.
    pub async fn handle_batch(&self, envelope: &Envelope) -> Result<Envelope, ProtocolError> {
        let batch: SignBatch = match protocol::open_limited(
            REQUEST_TAG,
            envelope,
            &self.policy.coordinators,
            protocol::MAX_BATCH_BODY_BYTES,
        ) {
            Ok((b, _)) => b,
            Err(ProtocolError::Malformed(m)) => return Err(ProtocolError::Malformed(m)),
            Err(e) => {
                let claimed: SignBatch = serde_json::from_str(&envelope.body)
                    .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
                check_batch_size(&claimed)?;
                let answers = self.refuse_all(
                    &claimed.items,
                    RefusalCode::BadRequestSignature,
                    &e.to_string(),
                );
                return self.seal_batch(claimed.batch_id, answers);
            }
        };
        check_batch_size(&batch)?;
        let now = Timestamp::now();
        let batch_refusal = if batch.expires_at < now {
            Some((RefusalCode::RequestExpired, "the batch has expired"))
        } else if batch.expires_at.as_millis() - now.as_millis() > self.policy.max_request_ttl_ms {
            Some((
                RefusalCode::BadRequest,
                "the batch's lifetime is longer than this guardian accepts",
            ))
        } else {
            let body_digest = protocol::body_digest(envelope);
            let mut d = self.decisions.lock().await;
            if d.batches.len() > 4096 {
                d.batches.retain(|_, (_, exp)| *exp >= now);
            }
            match d.batches.get(&batch.batch_id) {
                Some((seen, _)) if *seen != body_digest => Some((
                    RefusalCode::RequestReplayed,
                    "this batch id was already used for another batch",
                )),
                // The same batch again: every item is a repeat and gets its answer.
                Some(_) => None,
                None => {
                    d.batches
                        .insert(batch.batch_id, (body_digest, batch.expires_at));
                    None
                }
            }
        };
        let answers = match batch_refusal {
            Some((code, detail)) => self.refuse_all(&batch.items, code, detail),
            None => self.decide_and_answer(&batch.items).await?,
        };
        self.seal_batch(batch.batch_id, answers)
    }

    /// Refusals for every request, remembered nowhere (nothing was decided).
    fn refuse_all(
        &self,
        requests: &[SignRequest],
        code: RefusalCode,
        detail: &str,
    ) -> Vec<SignAnswer> {
        requests
            .iter()
            .map(|r| {
                self.answer(
                    r.request_id,
                    r.payment.clone(),
                    r.statement.digest_hex(),
                    refused(code, detail),
                )
            })
            .collect()
    }

    /// Decides every request and answers it, in order; remembers each new answer
    /// under its request id so the same request gets it again.
    async fn decide_and_answer(
        &self,
        requests: &[SignRequest],
    ) -> Result<Vec<SignAnswer>, ProtocolError> {
        let items: Vec<Item<'_>> = requests
            .iter()
            .map(|req| {
                let text = req.statement.text();
                Ok(Item {
                    req,
                    digest: hex::encode(Sha256::digest(text.as_bytes())),
                    text,
                    request_digest: protocol::request_digest(req)?,
                })
            })
            .collect::<Result<_, ProtocolError>>()?;
        let decided = self.decide_all(&items).await;
        let mut answers = Vec::with_capacity(items.len());
        let mut fresh = Vec::new();
        for (item, decided) in items.into_iter().zip(decided) {
            match decided {
                Decided::Repeat(sealed) => answers.push(*sealed),
                Decided::Answer(outcome) => {
                    // A replay refusal must not take the place of the answer to the
                    // request whose id it reused.
                    let remember = !matches!(
                        outcome,
                        Outcome::Refused {
                            code: RefusalCode::RequestReplayed,
                            ..
                        }
                    );
                    let sealed = self.answer(
                        item.req.request_id,
                        item.req.payment.clone(),
                        item.digest,
                        outcome,
                    );
                    if remember {
                        fresh.push((
                            item.req.request_id,
                            item.request_digest,
                            item.req.expires_at,
                            sealed.clone(),
                        ));
                    }
                    answers.push(sealed);
                }
            }
        }
        if !fresh.is_empty() {
            let mut d = self.decisions.lock().await;
            let now = Timestamp::now();
            if d.answered.len() > 4096 {
                d.answered.retain(|_, (_, exp, _)| *exp >= now);
            }
            for (id, digest, expires_at, sealed) in fresh {
                d.answered.insert(id, (digest, expires_at, sealed));
            }
        }
        Ok(answers)
    }

    /// The checks of docs/guardians.md, in that order, for every item at once: chain
    /// and Bitcoin reads run concurrently, signatures are made outside the lock, and
    /// the approvals of the whole batch are recorded under one lock and flushed to disk
    /// once before any of them is returned.
    async fn decide_all(&self, items: &[Item<'_>]) -> Vec<Decided> {
        let now = Timestamp::now();
        let mut out: Vec<Option<Decided>> = items.iter().map(|_| None).collect();
        // A request already answered gets that answer again, byte for byte, whatever
        // else changed since (even if it has expired meanwhile: it says nothing new).
        {
            let d = self.decisions.lock().await;
            for (i, item) in items.iter().enumerate() {
                if let Some((seen_digest, _, answer)) = d.answered.get(&item.req.request_id) {
                    out[i] = Some(if *seen_digest == item.request_digest {
                        Decided::Repeat(Box::new(answer.clone()))
                    } else {
                        refuse(
                            RefusalCode::RequestReplayed,
                            "this request id was already used for another request",
                        )
                    });
                }
            }
        }
        for (i, item) in items.iter().enumerate() {
            let req = item.req;
            if out[i].is_some() {
                continue;
            }
            if req.expires_at < now {
                out[i] = Some(refuse(
                    RefusalCode::RequestExpired,
                    "the request has expired",
                ));
            } else if req.expires_at.as_millis() - now.as_millis() > self.policy.max_request_ttl_ms
            {
                out[i] = Some(refuse(
                    RefusalCode::BadRequest,
                    "the request's lifetime is longer than this guardian accepts",
                ));
            } else if items[..i]
                .iter()
                .any(|other| other.req.request_id == req.request_id)
            {
                out[i] = Some(refuse(
                    RefusalCode::RequestReplayed,
                    "this request id appears twice in the batch",
                ));
            }
        }
        for (i, item) in items.iter().enumerate() {
            if out[i].is_none() {
                out[i] = self.check_request(item).err();
            }
        }

        // The payments, re-read from this guardian's own views: one batch read per
        // chain.
        let mut by_chain: HashMap<&ChainId, Vec<usize>> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            if out[i].is_none() {
                by_chain.entry(&item.req.payment.chain).or_default().push(i);
            }
        }
        for (chain, indices) in by_chain {
            let Some(watched) = self.chains.get(chain) else {
                continue;
            };
            let refs: Vec<&PaymentRef> = indices.iter().map(|&i| &items[i].req.payment).collect();
            let read = watched.adapter.payments(&refs).await;
            if read.len() != indices.len() {
                // Answers are positional: with one missing (or one too many) none of
                // them can be matched to its payment, so no payment of this chain was
                // read. Zipping would have skipped the check of the unanswered ones.
                let detail = format!(
                    "the {chain} view answered for {} of {} payments",
                    read.len(),
                    indices.len()
                );
                for &i in &indices {
                    out[i] = Some(refuse(RefusalCode::ChainUnavailable, &detail));
                }
                continue;
            }
            for (&i, found) in indices.iter().zip(read) {
                if let Err(refusal) = check_payment(&items[i], found) {
                    out[i] = Some(refusal);
                }
            }
        }
        for (i, o) in out.iter_mut().enumerate() {
            // Every open item was read above; this only guards the invariant.
            if o.is_none() && !self.chains.contains_key(&items[i].req.payment.chain) {
                *o = Some(refuse(RefusalCode::PaymentUnknown, "chain not watched"));
            }
        }

        // The Bitcoin block stamps, against this guardian's Bitcoin view: the tip is
        // read once per batch (statements of one batch share their stamp).
        let open: Vec<usize> = (0..items.len()).filter(|i| out[*i].is_none()).collect();
        if !open.is_empty() {
            let mut judged: HashMap<&BlockStamp, Option<Decided>> = HashMap::new();
            let tip = self.bitcoin.tip().await;
            for &i in &open {
                let stamp = &items[i].req.statement.bitcoin_block;
                if !judged.contains_key(stamp) {
                    let verdict = self.check_stamp(stamp, &tip).await.err();
                    judged.insert(stamp, verdict);
                }
                if let Some(Some(refusal)) = judged.get(stamp) {
                    out[i] = Some(refusal.clone());
                }
            }
        }

        // A proof of funds claims the UTXOs it spends: each one must be on this
        // guardian's own Bitcoin view, or the signature would prove reserves that do
        // not exist.
        let pofs: Vec<usize> = (0..items.len())
            .filter(|i| out[*i].is_none() && items[*i].req.signing.form == Form::ProofOfFunds)
            .collect();
        if !pofs.is_empty() {
            let mut seen = crate::utxo_check::UtxoView::new(self.bitcoin.as_ref());
            for i in pofs {
                if let Err((code, detail)) = seen.check(&items[i].req.signing).await {
                    out[i] = Some(refuse(code, &detail));
                }
            }
        }

        // Signed before the lock so guardians' CPU work runs in parallel; a signature
        // leaves this function only if the checks below pass and it is recorded.
        let mut partials: Vec<Option<PartialSignature>> = items.iter().map(|_| None).collect();
        for (i, item) in items.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            let signed = item
                .req
                .signing
                .clone()
                .prepare_cached(&self.descriptors)
                .and_then(|prepared| {
                    prepared.sign_partial_as(
                        self.key.secret(),
                        bitcoin::CompressedPublicKey(self.key.public()),
                    )
                });
            match signed {
                Ok(p) => partials[i] = Some(p),
                Err(e) => out[i] = Some(refuse(RefusalCode::BadRequest, &e.to_string())),
            }
        }

        // Check-and-record under one lock: "never two statements for one payment" holds
        // across concurrent batches and within this one.
        let mut to_sync: Vec<(usize, Outcome)> = Vec::new();
        let mut appended = false;
        let syncer = {
            let mut d = self.decisions.lock().await;
            for (i, item) in items.iter().enumerate() {
                let Some(partial) = partials[i].take() else {
                    continue;
                };
                let req = item.req;
                // One approval per payment, whatever the descriptor: the identical
                // request (same statement, reserve and BIP-322 form, hence the same
                // deterministic partial) is answered again; anything else is refused.
                let previous = d.log.for_payment(&req.payment);
                let identical = previous.iter().find(|a| {
                    a.statement_digest == item.digest
                        && a.descriptor == req.signing.descriptor
                        && a.partial == partial
                });
                if let (None, Some(other)) = (identical, previous.first()) {
                    let detail = if other.statement_digest != item.digest {
                        format!(
                            "already approved statement {} for this payment",
                            other.statement_digest
                        )
                    } else if other.descriptor != req.signing.descriptor {
                        format!(
                            "already approved this statement for this payment under {}",
                            other.descriptor
                        )
                    } else {
                        "already approved this statement for this payment in another form".into()
                    };
                    out[i] = Some(refuse(RefusalCode::ConflictingStatement, &detail));
                    continue;
                }
                if let Some(same) = identical {
                    // The record may have been written by a request still waiting for
                    // its fsync: it must be on disk before this answer carries it out.
                    to_sync.push((
                        i,
                        Outcome::Approved {
                            partial: same.partial.clone(),
                            recorded_at: same.recorded_at,
                        },
                    ));
                    continue;
                }
                let limit = self
                    .chains
                    .get(&req.payment.chain)
                    .map_or(0, |w| w.max_signatures_per_minute as usize);
                let window_start = now.plus_millis(-60_000);
                let recent = d.recent.entry(req.payment.chain.clone()).or_default();
                while recent.front().is_some_and(|t| *t < window_start) {
                    recent.pop_front();
                }
                if recent.len() >= limit {
                    out[i] = Some(refuse(
                        RefusalCode::RateLimited,
                        &format!("more than {limit} approvals per minute on this chain"),
                    ));
                    continue;
                }
                let recorded_at = Timestamp::now();
                let approval = Approval {
                    payment: req.payment.clone(),
                    statement_digest: item.digest.clone(),
                    descriptor: req.signing.descriptor.clone(),
                    partial: partial.clone(),
                    request_id: req.request_id,
                    recorded_at,
                };
                if let Err(e) = d.log.append(approval) {
                    tracing::error!(error = %e, "cannot record an approval; refusing to sign");
                    out[i] = Some(refuse(
                        RefusalCode::Internal,
                        "the approval could not be recorded",
                    ));
                    continue;
                }
                appended = true;
                d.recent
                    .entry(req.payment.chain.clone())
                    .or_default()
                    .push_back(recorded_at);
                to_sync.push((
                    i,
                    Outcome::Approved {
                        partial,
                        recorded_at,
                    },
                ));
            }
            d.log.syncer()
        };
        if !to_sync.is_empty() {
            let flushed = self.flush(syncer).await;
            for (i, outcome) in to_sync {
                out[i] = Some(if flushed {
                    Decided::Answer(outcome)
                } else {
                    refuse(RefusalCode::Internal, "the approval could not be recorded")
                });
            }
            if appended && self.exit_after_record {
                tracing::warn!("test hook: exiting after recording the approval");
                std::process::exit(75);
            }
        }
        out.into_iter()
            .map(|o| o.unwrap_or_else(|| refuse(RefusalCode::Internal, "no decision")))
            .collect()
    }

    /// The checks that need no I/O: statement version, message and payment.
    fn check_request(&self, item: &Item<'_>) -> Result<(), Decided> {
        let req = item.req;
        if !self
            .policy
            .statement_versions
            .contains(&req.statement.version)
        {
            return Err(refuse(
                RefusalCode::StatementVersion,
                &format!(
                    "statement version {} is not accepted",
                    req.statement.version
                ),
            ));
        }
        if req.statement.payment != req.payment || req.signing.message != item.text.as_bytes() {
            return Err(refuse(
                RefusalCode::StatementMismatch,
                "the BIP-322 message or payment is not the statement's",
            ));
        }
        if !self.policy.reserves.contains(&req.signing.descriptor) {
            return Err(refuse(
                RefusalCode::UnknownReserve,
                &format!(
                    "{} is not one of the {} reserve(s) this guardian signs for",
                    req.signing.descriptor,
                    self.policy.reserves.len()
                ),
            ));
        }
        if !self.policy.forms.contains(&req.signing.form) {
            return Err(refuse(
                RefusalCode::FormNotAllowed,
                &format!(
                    "this guardian signs statements in the {} form(s) only, not {:?}",
                    self.policy
                        .forms
                        .iter()
                        .map(|f| format!("{f:?}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                    req.signing.form
                ),
            ));
        }
        // A lock time or sequence would make a signature that proves control only
        // from some time on, or that a wallet reads as a spend it could make: no
        // statement needs one.
        if req.signing.params != ToSignParams::default() {
            return Err(refuse(
                RefusalCode::FormNotAllowed,
                "a version, lock time or sequence other than 0 is never signed",
            ));
        }
        if !self.chains.contains_key(&req.payment.chain) {
            return Err(refuse(
                RefusalCode::PaymentUnknown,
                &format!("this guardian does not watch {}", req.payment.chain),
            ));
        }
        Ok(())
    }

    /// The stamp must be a block of this guardian's Bitcoin view (at or below its tip,
    /// same hash at that height) and at most `max_stamp_age_blocks` below the tip: a
    /// statement stamped with an old or invented block would not prove it was signed
    /// "now".
    async fn check_stamp(
        &self,
        stamp: &BlockStamp,
        tip: &Result<BlockStamp, ubtc_chains::ChainError>,
    ) -> Result<(), Decided> {
        let tip = match tip {
            Ok(t) => t,
            Err(e) => {
                return Err(refuse(
                    RefusalCode::ChainUnavailable,
                    &format!("bitcoin view: {e}"),
                ))
            }
        };
        if stamp.height > tip.height {
            return Err(refuse(
                RefusalCode::UnknownBlockStamp,
                &format!(
                    "block {} is above this guardian's Bitcoin tip {}",
                    stamp.height, tip.height
                ),
            ));
        }
        let hash = if stamp.height == tip.height {
            tip.hash.clone()
        } else {
            match self.bitcoin.block_hash(stamp.height).await {
                Ok(h) => h,
                Err(e) => {
                    return Err(refuse(
                        RefusalCode::ChainUnavailable,
                        &format!("bitcoin view: {e}"),
                    ))
                }
            }
        };
        if hash != stamp.hash {
            return Err(refuse(
                RefusalCode::UnknownBlockStamp,
                &format!(
                    "block {} has hash {hash} on this guardian's Bitcoin view, not {}",
                    stamp.height, stamp.hash
                ),
            ));
        }
        let age = tip.height - stamp.height;
        if age > self.policy.max_stamp_age_blocks {
            return Err(refuse(
                RefusalCode::StaleBlockStamp,
                &format!(
                    "block {} is {age} blocks below this guardian's tip {}; at most {} accepted",
                    stamp.height, tip.height, self.policy.max_stamp_age_blocks
                ),
            ));
        }
        Ok(())
    }

    /// True once the approval record is on disk (group commit: one flush covers every
    /// approval appended before the syncer was taken).
    async fn flush(&self, syncer: crate::record::Syncer) -> bool {
        let started = std::time::Instant::now();
        let synced = tokio::task::spawn_blocking(move || syncer.sync()).await;
        crate::metrics::record_fsync(started.elapsed(), matches!(synced, Ok(Ok(()))));
        match synced {
            Ok(Ok(())) => true,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot flush the approval record; refusing to sign");
                false
            }
            Err(e) => {
                tracing::error!(error = %e, "approval record flush task failed");
                false
            }
        }
    }
}

/// Judges the payment as this guardian's view has it, and rebuilds the statement.
fn check_payment(
    item: &Item<'_>,
    found: Result<Option<(Payment, PaymentDepth)>, ubtc_chains::ChainError>,
) -> Result<(), Decided> {
    let req = item.req;
    let payment = match found {
        Ok(Some((payment, PaymentDepth::Confirmed { .. }))) => payment,
        Ok(Some((_, PaymentDepth::Pending { confirmations }))) => {
            return Err(refuse(
                RefusalCode::PaymentUnconfirmed,
                &format!("{confirmations} confirmations on this guardian's view"),
            ))
        }
        Ok(Some((_, PaymentDepth::Gone))) => {
            return Err(refuse(
                RefusalCode::PaymentUnknown,
                "the payment is not on the canonical chain of this guardian's view",
            ))
        }
        Ok(None) => {
            return Err(refuse(
                RefusalCode::PaymentUnknown,
                "no such payment on this guardian's view",
            ))
        }
        Err(e) => return Err(refuse(RefusalCode::ChainUnavailable, &e.to_string())),
    };
    let Ok(message) = payment.message.clone() else {
        return Err(refuse(
            RefusalCode::StatementMismatch,
            "the payment's message cannot be signed",
        ));
    };
    // Rebuild from what this guardian saw; only the block stamp and request id come
    // from the coordinator (they are not chain data; the stamp is checked against
    // this guardian's Bitcoin view next), and the version was checked.
    let mut rebuilt = Statement::new(
        payment.reference.clone(),
        payment.payer.clone(),
        message,
        req.statement.bitcoin_block.clone(),
        req.statement.request_id,
    );
    rebuilt.version = req.statement.version;
    if rebuilt.text() != item.text {
        return Err(refuse(
            RefusalCode::StatementMismatch,
            "the statement differs from the one rebuilt from this guardian's view",
        ));
    }
    Ok(())
}

/// One request with the digests computed once.
struct Item<'a> {
    req: &'a SignRequest,
    /// The statement text, built once (it is compared twice and digested).
    text: String,
    /// SHA-256 of the statement text, hex.
    digest: String,
    /// [`protocol::request_digest`].
    request_digest: String,
}

fn check_batch_size(batch: &SignBatch) -> Result<(), ProtocolError> {
    if batch.items.is_empty() || batch.items.len() > protocol::MAX_BATCH_ITEMS {
        return Err(ProtocolError::Malformed(format!(
            "a batch holds 1 to {} requests",
            protocol::MAX_BATCH_ITEMS
        )));
    }
    Ok(())
}

#[derive(Clone)]
enum Decided {
    Answer(Outcome),
    /// The exact answer already sent for this request.
    Repeat(Box<SignAnswer>),
}

fn refused(code: RefusalCode, detail: &str) -> Outcome {
    Outcome::Refused {
        code,
        detail: detail.to_owned(),
    }
}

fn refuse(code: RefusalCode, detail: &str) -> Decided {
    Decided::Answer(refused(code, detail))
}

/// `POST /v1/sign`, `POST /v1/sign_batch`, `GET /v1/identity` and `GET /metrics`.
/// Each route sets its own body limit (JSON escaping of the envelope body at most
/// doubles it).
pub fn router(guardian: Arc<Guardian>) -> Router {
    use axum::extract::DefaultBodyLimit;
    Router::new()
        .route(
            "/v1/sign",
            post(sign_handler).layer(DefaultBodyLimit::max(protocol::MAX_BODY_BYTES * 2)),
        )
        .route(
            "/v1/sign_batch",
            post(sign_batch_handler)
                .layer(DefaultBodyLimit::max(protocol::MAX_BATCH_BODY_BYTES * 2)),
        )
        .route("/v1/identity", get(identity_handler))
        .with_state(guardian)
        .merge(crate::metrics::router())
}

async fn sign_batch_handler(
    State(guardian): State<Arc<Guardian>>,
    Json(envelope): Json<Envelope>,
) -> Response {
    match guardian.handle_batch(&envelope).await {
        Ok(sealed) => Json(sealed).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "code": "malformed_request", "message": e.to_string() })),
        )
            .into_response(),
    }
}

/// [`router`] plus `POST /v1/reserve-ops` (mint approvals and release signatures,
/// [`crate::reserve_ops`]) for a guardian that also serves reserve operations.
pub fn router_with_reserve_ops(
    guardian: Arc<Guardian>,
    reserve: Arc<crate::reserve_ops::ReserveGuardian>,
) -> Router {
    router(guardian).merge(crate::reserve_ops::router(reserve))
}

async fn sign_handler(
    State(guardian): State<Arc<Guardian>>,
    Json(envelope): Json<Envelope>,
) -> Response {
    match guardian.handle(&envelope).await {
        Ok(answer) => Json(answer).into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({ "code": "malformed_request", "message": e.to_string() })),
        )
            .into_response(),
    }
}

async fn identity_handler(State(guardian): State<Arc<Guardian>>) -> Json<Identity> {
    Json(guardian.identity())
}

/// Serves `router` on `listener` until `cancel` fires.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
}
