//! The Solana adapter against a JSON-RPC **stand-in** node, and through the real
//! pipeline monitor with a real SQLite store.
//!
//! Why a stand-in: no Solana validator can be built or installed on this machine (the
//! validator crates take over an hour to build on two cores and need a newer compiler),
//! so the node is a small axum server inside this test. Its answers are copies of the
//! recorded response shapes in `tests/data/solana/` (see the README there) with
//! signatures, slots, instructions and errors changed; the fault injection (HTTP 429
//! with a provider's body, an answer slower than the client's timeout) is the
//! stand-in's too. What it cannot show: a real node's timing and its treatment of
//! forks; the commitment levels are modelled as two flags per transaction.
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use ubtc_chains::evm::RetryPolicy;
use ubtc_chains::solana::wire::{base58_encode, MEMO_V1_PROGRAM_ID, MEMO_V2_PROGRAM_ID};
use ubtc_chains::solana::{Commitment, SolanaAdapter, SolanaConfig};
use ubtc_chains::{ChainAdapter, ChainError, PaymentDepth, ScanCursor, ScanOutcome, SupplySource};
use ubtc_core::payment::{ChainBlock, TxHash};
use ubtc_core::statement::MessageError;
use ubtc_core::{ChainId, Payment, PaymentRef, ValidationStatus};
use ubtc_pipeline::{ChainPolicy, Monitor, Unlimited};

const MIN_LAMPORTS: u64 = 10_000_000;

fn data(name: &str) -> Value {
    let path = format!("{}/tests/data/solana/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn chain() -> ChainId {
    ChainId::parse("solana").unwrap()
}

/// A deterministic 32-byte account address.
fn key(seed: &str) -> String {
    base58_encode(&Sha256::digest(seed.as_bytes()))
}

/// A deterministic 64-byte transaction signature.
fn signature(seed: &str) -> String {
    let mut bytes = Sha256::digest(seed.as_bytes()).to_vec();
    bytes.extend_from_slice(&Sha256::digest(format!("{seed}/2").as_bytes()));
    base58_encode(&bytes)
}

fn blockhash(slot: u64) -> String {
    key(&format!("block {slot}"))
}

fn pay_to() -> String {
    key("payment address")
}

fn transfer(from: &str, to: &str, lamports: u64) -> Value {
    let mut ix = data("get_transaction_transfer_memo.json")["transaction"]["message"]
        ["instructions"][0]
        .clone();
    ix["parsed"]["info"] = json!({"destination": to, "lamports": lamports, "source": from});
    ix
}

fn memo(text: &str) -> Value {
    json!({"parsed": text, "program": "spl-memo", "programId": MEMO_V2_PROGRAM_ID, "stackHeight": null})
}

fn memo_v1(text: &str) -> Value {
    json!({"parsed": text, "program": "spl-memo", "programId": MEMO_V1_PROGRAM_ID, "stackHeight": null})
}

/// A memo the node cannot render as text: raw base58 data, as `jsonParsed` falls back.
fn raw_memo(bytes: &[u8]) -> Value {
    json!({"accounts": [], "data": base58_encode(bytes), "programId": MEMO_V2_PROGRAM_ID, "stackHeight": null})
}

/// A `getTransaction` answer from the recorded template.
fn transaction(sig: &str, slot: u64, instructions: Vec<Value>, err: Option<Value>) -> Value {
    let mut t = data("get_transaction_transfer_memo.json");
    t["slot"] = json!(slot);
    t["blockTime"] = json!(1_763_942_400 + slot as i64 / 2);
    t["transaction"]["signatures"] = json!([sig]);
    t["transaction"]["message"]["instructions"] = json!(instructions);
    t["transaction"]["message"]["recentBlockhash"] = json!(blockhash(slot.saturating_sub(2)));
    if let Some(e) = err {
        t["meta"]["status"] = json!({"Err": e.clone()});
        t["meta"]["err"] = e;
    }
    t
}

/// A plain valid payment of `lamports` with `text` as memo.
fn paid(seed: &str, slot: u64, lamports: u64, text: &str) -> Value {
    transaction(
        &signature(seed),
        slot,
        vec![transfer(&key("payer"), &pay_to(), lamports), memo(text)],
        None,
    )
}

struct Entry {
    signature: String,
    slot: u64,
    tx: Value,
    finalized: bool,
    /// Its fork died: the node no longer serves it at any level.
    dropped: bool,
}

#[derive(Default)]
struct Node {
    /// Transactions touching the payment address, in chain order (oldest first).
    entries: Vec<Entry>,
    confirmed_slot: u64,
    finalized_slot: u64,
    /// The next this many requests get HTTP 429.
    throttle: usize,
    /// The next this many requests are answered after `STALL`, past the client's timeout.
    stall: usize,
    calls: HashMap<String, usize>,
    supply: Option<Value>,
}

const STALL: Duration = Duration::from_millis(1_500);

impl Node {
    fn push(&mut self, tx: Value, finalized: bool) -> String {
        let sig = tx["transaction"]["signatures"][0]
            .as_str()
            .unwrap()
            .to_owned();
        let slot = tx["slot"].as_u64().unwrap();
        self.confirmed_slot = self.confirmed_slot.max(slot);
        if finalized {
            self.finalized_slot = self.finalized_slot.max(slot);
        }
        self.entries.push(Entry {
            signature: sig.clone(),
            slot,
            tx,
            finalized,
            dropped: false,
        });
        sig
    }

    fn entry(&mut self, sig: &str) -> &mut Entry {
        self.entries
            .iter_mut()
            .find(|e| e.signature == sig)
            .unwrap()
    }

    fn visible(e: &Entry, commitment: &str) -> bool {
        !e.dropped && (commitment == "confirmed" || e.finalized)
    }

    fn answer(&mut self, method: &str, params: &Value) -> Result<Value, (i64, String)> {
        *self.calls.entry(method.to_owned()).or_default() += 1;
        let options = |i: usize| params.get(i).cloned().unwrap_or(json!({}));
        let commitment = |o: &Value| o["commitment"].as_str().unwrap_or("finalized").to_owned();
        match method {
            "getSlot" => Ok(json!(match commitment(&options(0)).as_str() {
                "finalized" => self.finalized_slot,
                _ => self.confirmed_slot,
            })),
            "getBlockHeight" => Ok(json!(self.finalized_slot - 20_000)),
            "getBlock" => {
                let slot = params[0].as_u64().ok_or((-32602, "bad slot".into()))?;
                let o = options(1);
                if o["transactionDetails"] != "none" {
                    return Err((-32602, "the stand-in serves blocks without details".into()));
                }
                let mut b = data("get_block_no_details.json");
                b["blockhash"] = json!(blockhash(slot));
                b["previousBlockhash"] = json!(blockhash(slot - 1));
                b["parentSlot"] = json!(slot - 1);
                b["blockTime"] = json!(1_763_942_400 + slot as i64 / 2);
                Ok(b)
            }
            "getSignaturesForAddress" => {
                if params[0] != json!(pay_to()) {
                    return Ok(json!([]));
                }
                let o = options(1);
                let limit = o["limit"].as_u64().unwrap_or(1000) as usize;
                if limit == 0 || limit > 1000 {
                    return Err((-32602, "Invalid limit; max 1000".into()));
                }
                let c = commitment(&o);
                if c == "processed" {
                    return Err((
                        -32602,
                        "Method does not support commitment below `confirmed`".into(),
                    ));
                }
                let mut newest_first = self.entries.iter().rev().filter(|e| Node::visible(e, &c));
                if let Some(before) = o["before"].as_str() {
                    if !newest_first.any(|e| e.signature == before) {
                        return Ok(json!([]));
                    }
                }
                let until = o["until"].as_str();
                let page: Vec<Value> = newest_first
                    .take_while(|e| Some(e.signature.as_str()) != until)
                    .take(limit)
                    .map(|e| {
                        let mut s = data("get_signatures_for_address_entry.json");
                        s["signature"] = json!(e.signature);
                        s["slot"] = json!(e.slot);
                        s["err"] = e.tx["meta"]["err"].clone();
                        s["confirmationStatus"] = json!(if e.finalized {
                            "finalized"
                        } else {
                            "confirmed"
                        });
                        s
                    })
                    .collect();
                Ok(json!(page))
            }
            "getTransaction" => {
                let o = options(1);
                if o["encoding"] != "jsonParsed" {
                    return Err((-32602, "the stand-in serves jsonParsed only".into()));
                }
                if o["maxSupportedTransactionVersion"] != 0 {
                    return Err((
                        -32015,
                        "Transaction version (0) is not supported by the requesting client. Please try the request again with the following configuration parameter: \"maxSupportedTransactionVersion\": 0".into(),
                    ));
                }
                let c = commitment(&o);
                let sig = params[0].as_str().unwrap_or_default();
                Ok(self
                    .entries
                    .iter()
                    .find(|e| e.signature == sig && Node::visible(e, &c))
                    .map(|e| e.tx.clone())
                    .unwrap_or(Value::Null))
            }
            "getTokenSupply" => {
                if params[0] != json!(key("mint")) {
                    return Err((-32602, "Invalid param: not a Token mint".into()));
                }
                let mut s = self
                    .supply
                    .clone()
                    .unwrap_or_else(|| data("get_token_supply.json"));
                s["context"]["slot"] = json!(self.finalized_slot);
                Ok(s)
            }
            other => Err((-32601, format!("Method not found: {other}"))),
        }
    }
}

struct StandIn {
    url: String,
    node: Arc<Mutex<Node>>,
}

async fn handle(State(node): State<Arc<Mutex<Node>>>, Json(body): Json<Value>) -> Response {
    let (throttled, stalled) = {
        let mut n = node.lock().unwrap();
        let t = n.throttle > 0;
        if t {
            n.throttle -= 1;
        }
        let s = !t && n.stall > 0;
        if s {
            n.stall -= 1;
        }
        (t, s)
    };
    if throttled {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            Json(data("rate_limited_429.json")),
        )
            .into_response();
    }
    if stalled {
        tokio::time::sleep(STALL).await;
    }
    let method = body["method"].as_str().unwrap_or_default().to_owned();
    let answer = node.lock().unwrap().answer(&method, &body["params"]);
    let id = body["id"].clone();
    Json(match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": id}),
        Err((code, message)) => {
            json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": id})
        }
    })
    .into_response()
}

impl StandIn {
    async fn start() -> Self {
        let node = Arc::new(Mutex::new(Node {
            confirmed_slot: 372_160_000,
            finalized_slot: 372_160_000,
            ..Node::default()
        }));
        let app = Router::new()
            .route("/", post(handle))
            .with_state(node.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, node }
    }

    fn node(&self) -> std::sync::MutexGuard<'_, Node> {
        self.node.lock().unwrap()
    }

    fn calls(&self, method: &str) -> usize {
        self.node().calls.get(method).copied().unwrap_or(0)
    }

    fn config(&self) -> SolanaConfig {
        let mut c = SolanaConfig::new(chain(), &self.url, &pay_to());
        c.token_mint = Some(key("mint"));
        c.retry = RetryPolicy {
            attempts: 3,
            first_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            timeout: Duration::from_millis(400),
        };
        c
    }

    fn adapter(&self) -> SolanaAdapter {
        SolanaAdapter::new(self.config()).unwrap()
    }
}

fn reference(sig: &str, index: u32) -> PaymentRef {
    PaymentRef {
        chain: chain(),
        tx_hash: TxHash::parse(sig).unwrap(),
        index,
    }
}

/// Scans until nothing new, `max` transactions per scan; returns every payment and the
/// final cursor.
async fn scan_all(
    a: &SolanaAdapter,
    mut cursor: Option<ScanCursor>,
    max: u64,
) -> Result<(Vec<Payment>, Option<ScanCursor>)> {
    let mut out = Vec::new();
    for _ in 0..10_000 {
        match a.scan(cursor.as_ref(), max).await? {
            ScanOutcome::Blocks {
                payments,
                cursor: next,
            } => {
                out.extend(payments);
                if cursor.as_ref() == Some(&next) {
                    return Ok((out, cursor));
                }
                cursor = Some(next);
            }
            ScanOutcome::Reorg { .. } => panic!("the Solana adapter never reports a reorg"),
        }
    }
    panic!("scan never settled")
}

/// Appends `count` valid payments, several per slot, all finalized.
fn fill(node: &mut Node, prefix: &str, first_slot: u64, count: usize) -> Vec<String> {
    (0..count)
        .map(|i| {
            let slot = first_slot + (i / 3) as u64;
            let tx = paid(
                &format!("{prefix} {i}"),
                slot,
                MIN_LAMPORTS + i as u64,
                &format!("{prefix} {i}"),
            );
            node.push(tx, true)
        })
        .collect()
}

#[tokio::test]
async fn pages_through_thousands_of_signatures_in_chain_order() -> Result<()> {
    let s = StandIn::start().await;
    let sigs = fill(&mut s.node(), "bulk", 372_161_000, 2_500);
    let a = s.adapter();

    let ScanOutcome::Blocks { payments, cursor } = a.scan(None, 10_000).await? else {
        panic!("no reorg expected")
    };
    assert_eq!(payments.len(), 2_500);
    // 1000 + 1000 + 500: the short last page ends the listing.
    assert_eq!(s.calls("getSignaturesForAddress"), 3);
    assert_eq!(s.calls("getTransaction"), 2_500);
    for (i, (p, sig)) in payments.iter().zip(&sigs).enumerate() {
        assert_eq!(p.reference, reference(sig, 0));
        assert_eq!(p.amount_base_units, u128::from(MIN_LAMPORTS) + i as u128);
        assert_eq!(p.message.as_ref().unwrap().as_str(), format!("bulk {i}"));
        assert_eq!(p.payer.as_str(), key("payer"));
        assert_eq!(p.block.number, 372_161_000 + (i / 3) as u64);
        assert_eq!(p.block.hash, blockhash(p.block.number));
    }
    // The cursor names the newest transaction; nothing after it, nothing read again.
    assert_eq!(cursor.block.hash, sigs[2_499]);
    assert_eq!(cursor.block.number, 372_161_000 + 2_499 / 3);
    let before = s.calls("getTransaction");
    let ScanOutcome::Blocks {
        payments,
        cursor: again,
    } = a.scan(Some(&cursor), 10_000).await?
    else {
        panic!()
    };
    assert!(payments.is_empty());
    assert_eq!(again, cursor);
    assert_eq!(s.calls("getTransaction"), before);
    Ok(())
}

#[tokio::test]
async fn restart_from_a_saved_cursor_has_no_gap_and_no_duplicate() -> Result<()> {
    let s = StandIn::start().await;
    let mut expected = fill(&mut s.node(), "old", 372_161_000, 2_500);

    // 700 per scan: the oldest 700 of the backlog each time, from a fresh adapter (a
    // restarted process) every other scan.
    let mut seen: Vec<PaymentRef> = Vec::new();
    let mut cursor: Option<ScanCursor> = None;
    for round in 0..3 {
        let a = s.adapter();
        let ScanOutcome::Blocks {
            payments,
            cursor: next,
        } = a.scan(cursor.as_ref(), 700).await?
        else {
            panic!()
        };
        assert_eq!(payments.len(), 700, "round {round}");
        seen.extend(payments.into_iter().map(|p| p.reference));
        cursor = Some(next);
    }
    // New payments arrive meanwhile, the first in the very slot of the cursor.
    let cursor_slot = cursor.as_ref().unwrap().block.number;
    let late = paid(
        "late in the cursor's slot",
        cursor_slot,
        MIN_LAMPORTS,
        "late",
    );
    let late_sig = s.node().push(late, true);
    // It is the newest in chain order: it comes after everything listed so far.
    expected.push(late_sig);
    expected.extend(fill(&mut s.node(), "new", 372_162_000, 1_200));

    let (rest, last) = scan_all(&s.adapter(), cursor, 700).await?;
    seen.extend(rest.into_iter().map(|p| p.reference));
    let want: Vec<PaymentRef> = expected.iter().map(|sig| reference(sig, 0)).collect();
    assert_eq!(seen.len(), want.len());
    assert_eq!(
        seen.iter().collect::<HashSet<_>>().len(),
        want.len(),
        "duplicates"
    );
    assert_eq!(seen, want);
    assert_eq!(last.unwrap().block.hash, *expected.last().unwrap());

    // A cursor transaction that vanished (its confirmed fork died): the scan stops at
    // the cursor's slot instead of walking the whole history, and re-reads only that
    // slot (duplicates are harmless: the pipeline records by reference).
    let s2 = StandIn::start().await;
    let sigs = fill(&mut s2.node(), "fork", 372_161_000, 30);
    let a = s2.adapter();
    let (_, Some(cursor)) = scan_all(&a, None, 100).await? else {
        panic!()
    };
    s2.node().entry(&sigs[29]).dropped = true;
    let more = fill(&mut s2.node(), "after", 372_161_100, 5);
    let ScanOutcome::Blocks { payments, .. } = a.scan(Some(&cursor), 100).await? else {
        panic!()
    };
    let got: Vec<_> = payments
        .iter()
        .map(|p| p.reference.tx_hash.to_string())
        .collect();
    // Slot of the vanished cursor (27, 28), then the 5 new ones.
    assert_eq!(got, [&sigs[27..29], &more[..]].concat());
    Ok(())
}

#[tokio::test]
async fn rejected_payments_carry_their_reason_through_the_monitor() -> Result<()> {
    let s = StandIn::start().await;
    let payer = key("payer");
    let other = key("someone else");
    let (ok, ok_v1, failed, no_memo, two_memos, not_utf8, below, split, outgoing, elsewhere);
    {
        let mut n = s.node();
        let slot = 372_161_000;
        ok = n.push(paid("ok", slot, MIN_LAMPORTS, "hello from alice"), true);
        ok_v1 = n.push(
            transaction(
                &signature("ok v1"),
                slot,
                vec![
                    memo_v1("memo v1 works too"),
                    transfer(&payer, &pay_to(), MIN_LAMPORTS),
                ],
                None,
            ),
            true,
        );
        failed = n.push(
            transaction(
                &signature("failed"),
                slot + 1,
                vec![transfer(&payer, &pay_to(), MIN_LAMPORTS), memo("failed")],
                Some(json!({"InstructionError": [0, {"Custom": 1}]})),
            ),
            true,
        );
        no_memo = n.push(
            transaction(
                &signature("no memo"),
                slot + 1,
                vec![transfer(&payer, &pay_to(), MIN_LAMPORTS)],
                None,
            ),
            true,
        );
        two_memos = n.push(
            transaction(
                &signature("two memos"),
                slot + 2,
                vec![
                    transfer(&payer, &pay_to(), MIN_LAMPORTS),
                    memo("one"),
                    memo_v1("two"),
                ],
                None,
            ),
            true,
        );
        not_utf8 = n.push(
            transaction(
                &signature("not utf8"),
                slot + 2,
                vec![
                    transfer(&payer, &pay_to(), MIN_LAMPORTS),
                    raw_memo(&[0xff, 0xfe, 0x41]),
                ],
                None,
            ),
            true,
        );
        below = n.push(paid("below", slot + 3, MIN_LAMPORTS - 1, "too cheap"), true);
        // Two transfers to us in one transaction: one payment, the sum, index of the first.
        split = n.push(
            transaction(
                &signature("split"),
                slot + 3,
                vec![
                    memo("split in two"),
                    transfer(&payer, &pay_to(), MIN_LAMPORTS / 2),
                    transfer(&other, &pay_to(), MIN_LAMPORTS / 2),
                ],
                None,
            ),
            true,
        );
        // Money leaving the payment address, and a memo with a transfer elsewhere that
        // merely mentions our address: no payment.
        outgoing = n.push(
            transaction(
                &signature("outgoing"),
                slot + 4,
                vec![transfer(&pay_to(), &other, MIN_LAMPORTS), memo("refund")],
                None,
            ),
            true,
        );
        elsewhere = n.push(
            transaction(
                &signature("elsewhere"),
                slot + 4,
                vec![transfer(&payer, &other, MIN_LAMPORTS), memo("not ours")],
                None,
            ),
            true,
        );
    }
    let a = Arc::new(s.adapter());
    let (payments, _) = scan_all(&a, None, 100).await?;
    let by_sig: HashMap<String, &Payment> = payments
        .iter()
        .map(|p| (p.reference.tx_hash.to_string(), p))
        .collect();
    assert_eq!(payments.len(), 8);
    assert!(!by_sig.contains_key(&outgoing) && !by_sig.contains_key(&elsewhere));
    assert_eq!(by_sig[&ok_v1].reference.index, 1);
    assert_eq!(
        by_sig[&ok_v1].message.as_ref().unwrap().as_str(),
        "memo v1 works too"
    );
    assert_eq!(
        by_sig[&failed].message,
        Err(MessageError::TransactionFailed)
    );
    assert_eq!(by_sig[&no_memo].message, Err(MessageError::Missing));
    assert_eq!(
        by_sig[&two_memos].message,
        Err(MessageError::Several { count: 2 })
    );
    assert_eq!(by_sig[&not_utf8].message, Err(MessageError::NotUtf8));
    assert_eq!(by_sig[&not_utf8].raw_message, vec![0xff, 0xfe, 0x41]);
    assert_eq!(by_sig[&split].reference.index, 1);
    assert_eq!(by_sig[&split].amount_base_units, u128::from(MIN_LAMPORTS));

    // The real monitor records each and rejects the bad ones with a stable code.
    let dir = tempfile::tempdir()?;
    let store = common::sqlite_store(dir.path()).await?;
    let m = Monitor::new(
        a.clone(),
        store.clone(),
        Arc::new(Unlimited),
        ChainPolicy {
            min_payment_base_units: u128::from(MIN_LAMPORTS),
            scan_max_blocks: 3,
        },
    );
    let t = common::tick_until_idle(&m).await?;
    assert_eq!((t.detected, t.queued, t.rejected), (8, 3, 5));
    for (sig, code) in [
        (&failed, "transaction_failed"),
        (&no_memo, "message_missing"),
        (&two_memos, "message_several"),
        (&not_utf8, "message_not_utf8"),
        (&below, "below_minimum"),
    ] {
        let r = store
            .get_by_payment_ref(&by_sig[sig].reference)
            .await?
            .unwrap();
        assert_eq!(r.status, ValidationStatus::Rejected, "{code}");
        assert_eq!(r.reason.unwrap().code, code);
    }
    for sig in [&ok, &ok_v1, &split] {
        let r = store
            .get_by_payment_ref(&by_sig[sig].reference)
            .await?
            .unwrap();
        assert_eq!(r.status, ValidationStatus::Queued);
    }
    let r = store
        .get_by_payment_ref(&by_sig[&ok].reference)
        .await?
        .unwrap();
    assert_eq!(r.message_hex, hex::encode(b"hello from alice"));
    // A second pass over the same chain records nothing twice.
    assert!(scan_all(&a, None, 100).await?.0.len() == 8);
    assert_eq!(common::tick_until_idle(&m).await?.detected, 0);
    Ok(())
}

#[tokio::test]
async fn finalized_confirms_confirmed_waits_and_a_dead_fork_is_dropped_after_expiry() -> Result<()>
{
    let s = StandIn::start().await;
    let a = s.adapter();
    let slot = 372_161_000;
    let (final_sig, pending_sig, dying_sig) = {
        let mut n = s.node();
        let f = n.push(paid("final", slot, MIN_LAMPORTS, "final"), true);
        let p = n.push(paid("pending", slot + 40, MIN_LAMPORTS, "pending"), false);
        let d = n.push(paid("dying", slot + 41, MIN_LAMPORTS, "dying"), false);
        (f, p, d)
    };
    let (payments, _) = scan_all(&a, None, 100).await?;
    assert_eq!(
        payments.len(),
        3,
        "confirmed transactions are detected early"
    );
    let seen = |sig: &str| {
        payments
            .iter()
            .find(|p| p.reference.tx_hash.as_str() == sig)
            .unwrap()
            .block
            .clone()
    };

    assert!(matches!(
        a.depth(&reference(&final_sig, 0), &seen(&final_sig)).await?,
        PaymentDepth::Confirmed { confirmations } if confirmations == 42
    ));
    assert!(matches!(
        a.depth(&reference(&pending_sig, 0), &seen(&pending_sig))
            .await?,
        PaymentDepth::Pending { confirmations: 2 }
    ));
    // No payment at another index of a real transaction: never was one.
    assert_eq!(
        a.depth(&reference(&final_sig, 1), &seen(&final_sig))
            .await?,
        PaymentDepth::Gone
    );
    // The same adapter at `confirmed` commitment counts it at once.
    let mut c = s.config();
    c.commitment = Commitment::Confirmed;
    let fast = SolanaAdapter::new(c)?;
    assert!(matches!(
        fast.depth(&reference(&pending_sig, 0), &seen(&pending_sig))
            .await?,
        PaymentDepth::Confirmed { .. }
    ));

    // The dying one's fork is abandoned: pending while its blockhash may still land
    // it, gone once the finalized slot is past the expiry window.
    s.node().entry(&dying_sig).dropped = true;
    s.node().finalized_slot = slot + 41 + 300;
    assert_eq!(
        a.depth(&reference(&dying_sig, 0), &seen(&dying_sig))
            .await?,
        PaymentDepth::Pending { confirmations: 0 }
    );
    s.node().finalized_slot += 1;
    assert_eq!(
        a.depth(&reference(&dying_sig, 0), &seen(&dying_sig))
            .await?,
        PaymentDepth::Gone
    );
    // The pending one finalizes.
    s.node().entry(&pending_sig).finalized = true;
    assert!(matches!(
        a.depth(&reference(&pending_sig, 0), &seen(&pending_sig))
            .await?,
        PaymentDepth::Confirmed { .. }
    ));

    // A guardian's re-read: the same payment, and its depth.
    let (p, depth) = a.payment(&reference(&final_sig, 0)).await?.unwrap();
    assert_eq!(
        p,
        *payments
            .iter()
            .find(|p| p.reference.tx_hash.as_str() == final_sig)
            .unwrap()
    );
    assert!(matches!(depth, PaymentDepth::Confirmed { .. }));
    assert!(a.payment(&reference(&final_sig, 1)).await?.is_none());
    assert!(a.payment(&reference(&dying_sig, 0)).await?.is_none());
    assert!(a
        .payment(&reference(&signature("unknown"), 0))
        .await?
        .is_none());

    // Through the monitor: the dropped one ends `dropped`, the others queued.
    let dir = tempfile::tempdir()?;
    let store = common::sqlite_store(dir.path()).await?;
    let m = Monitor::new(
        Arc::new(s.adapter()),
        store.clone(),
        Arc::new(Unlimited),
        ChainPolicy {
            min_payment_base_units: u128::from(MIN_LAMPORTS),
            scan_max_blocks: 100,
        },
    );
    s.node().entry(&dying_sig).dropped = false;
    let t = common::tick_until_idle(&m).await?;
    assert_eq!((t.detected, t.queued), (3, 2));
    s.node().entry(&dying_sig).dropped = true;
    s.node().finalized_slot += 400;
    let t = common::tick_until_idle(&m).await?;
    assert_eq!(t.dropped, 1);
    let r = store
        .get_by_payment_ref(&reference(&dying_sig, 0))
        .await?
        .unwrap();
    assert_eq!(r.status, ValidationStatus::Dropped);
    Ok(())
}

#[tokio::test]
async fn rate_limits_and_timeouts_are_transient_and_retried() -> Result<()> {
    let s = StandIn::start().await;
    let sigs = fill(&mut s.node(), "retry", 372_161_000, 5);
    let a = s.adapter();

    // Two 429s, then an answer: the client's retries absorb them.
    s.node().throttle = 2;
    let (payments, _) = scan_all(&a, None, 100).await?;
    assert_eq!(payments.len(), 5);
    assert_eq!(s.node().throttle, 0);

    // 429 on every try: Unavailable, which the monitor's loop backs off from.
    s.node().throttle = 3;
    let err = a.scan(None, 100).await.unwrap_err();
    assert!(
        matches!(&err, ChainError::Unavailable(m) if m.contains("429")),
        "{err}"
    );
    assert!(err.is_transient());
    // ... and the next call succeeds.
    assert_eq!(scan_all(&a, None, 100).await?.0.len(), 5);

    // An answer slower than the client's timeout: retried, then fine.
    s.node().stall = 1;
    let started = std::time::Instant::now();
    let (p, _) = a.payment(&reference(&sigs[0], 0)).await?.unwrap();
    assert_eq!(p.reference, reference(&sigs[0], 0));
    assert!(started.elapsed() >= Duration::from_millis(400));
    // Slow on every try: Unavailable, transient.
    s.node().stall = 3;
    let err = a.head().await.unwrap_err();
    assert!(matches!(err, ChainError::Unavailable(_)), "{err}");
    assert!(err.is_transient());
    s.node().stall = 0;
    let head = a.head().await?;
    // One lock at a time: a guard lives to the end of its statement.
    let finalized = s.node().finalized_slot;
    assert_eq!(
        head,
        ChainBlock {
            number: finalized,
            hash: blockhash(finalized)
        }
    );

    // A node that refuses the request shape is not transient.
    let bad = SolanaAdapter::new(SolanaConfig::new(
        chain(),
        &format!("{}nothing", s.url),
        &pay_to(),
    ))?;
    let err = bad.head().await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    Ok(())
}

#[tokio::test]
async fn supply_of_the_mint_at_the_finalized_slot() -> Result<()> {
    let s = StandIn::start().await;
    s.node().finalized_slot = 372_161_811;
    let a = s.adapter();
    let e = a.supply_at(None).await?;
    assert_eq!(e.chain, chain());
    assert_eq!(e.token, key("mint"));
    assert_eq!(e.supply.base_units, 2_100_000_000_000_000);
    assert_eq!(e.supply.decimals, 8);
    assert_eq!(e.block_number, 372_161_811);
    assert_eq!(e.block_hash, blockhash(372_161_811));
    assert_eq!(
        e.as_of.as_millis(),
        (1_763_942_400 + 372_161_811 / 2) * 1000
    );

    // u64::MAX base units (the most an SPL mint holds) survive the string.
    let mut big = data("get_token_supply.json");
    big["value"]["amount"] = json!(u64::MAX.to_string());
    s.node().supply = Some(big);
    assert_eq!(
        a.supply_at(None).await?.supply.base_units,
        u128::from(u64::MAX)
    );
    let mut broken = data("get_token_supply.json");
    broken["value"]["amount"] = json!("12.5");
    s.node().supply = Some(broken);
    assert!(matches!(
        a.supply_at(None).await,
        Err(ChainError::BadResponse(_))
    ));

    // No history on Solana nodes: a past slot is refused, not silently answered now.
    assert!(matches!(
        a.supply_at(Some(1)).await,
        Err(ChainError::Misconfigured(_))
    ));
    let mut c = s.config();
    c.token_mint = None;
    let none = SolanaAdapter::new(c)?;
    assert!(matches!(
        none.supply_at(None).await,
        Err(ChainError::Misconfigured(_))
    ));
    Ok(())
}

#[tokio::test]
async fn configuration_is_checked_before_any_request() {
    let s = StandIn::start().await;
    let mut c = s.config();
    c.payment_address = "not base58 0OIl".into();
    assert!(matches!(
        SolanaAdapter::new(c),
        Err(ChainError::Misconfigured(_))
    ));
    let mut c = s.config();
    c.payment_address = base58_encode(&[7u8; 31]);
    assert!(
        matches!(SolanaAdapter::new(c), Err(ChainError::Misconfigured(m)) if m.contains("31 bytes"))
    );
    let mut c = s.config();
    c.token_mint = Some("x".into());
    assert!(matches!(
        SolanaAdapter::new(c),
        Err(ChainError::Misconfigured(_))
    ));
    let mut c = s.config();
    c.page_limit = 1_001;
    assert!(matches!(
        SolanaAdapter::new(c),
        Err(ChainError::Misconfigured(_))
    ));
    assert!(Commitment::parse("processed").is_err());
    assert_eq!(
        Commitment::parse("confirmed").unwrap(),
        Commitment::Confirmed
    );
    assert_eq!(s.calls("getSlot") + s.calls("getSignaturesForAddress"), 0);
    // Debug never shows the RPC URL (it may hold a provider key).
    let mut c = s.config();
    c.rpc_url = "https://mainnet.example/?api-key=SECRET".into();
    assert!(!format!("{:?}", SolanaAdapter::new(c).unwrap()).contains("SECRET"));
}
