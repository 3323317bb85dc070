//! A JSON-RPC **stand-in** for a Solana node (no validator can be built here), shared
//! by the minter tests and the reserve-ops workflow test. It does what a node's
//! `sendTransaction` front does before execution, with its own parser written from the
//! wire format (not the minter's code): decodes the base64 transaction, parses the
//! legacy message, verifies every signature over the message bytes, checks the
//! blockhash is one it handed out and the size limit, and refuses otherwise with the
//! node's error codes. It then decodes the instructions so a test can check what would
//! be minted or burned. Execution (balances, authority checks by the Token program) is
//! not modelled; token accounts, supply and statuses are what the test sets.
#![allow(dead_code)] // each test binary uses part of it

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use ubtc_chains::solana::wire::base58_encode;

pub fn key(seed: &str) -> String {
    base58_encode(&Sha256::digest(seed.as_bytes()))
}

/// One instruction as the stand-in decoded it.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub program: String,
    pub accounts: Vec<String>,
    pub data: Vec<u8>,
}

#[derive(Debug, Clone)]
pub struct Received {
    pub signature: String,
    pub signer: String,
    pub readonly_unsigned: u8,
    pub instructions: Vec<Decoded>,
}

#[derive(Default)]
pub struct Node {
    pub blockhashes: Vec<String>,
    pub block_height: u64,
    pub received: Vec<Received>,
    /// Signature → `getSignatureStatuses` entry.
    pub statuses: HashMap<String, Value>,
    /// `getTokenSupply` of any mint: (amount, decimals).
    pub supply: (u64, u8),
    /// Token account → its mint (`getAccountInfo` answers it as a parsed token account).
    pub token_accounts: HashMap<String, String>,
    /// Owner → its token accounts (`getTokenAccountsByOwner`, of any mint asked).
    pub owned: HashMap<String, Vec<String>>,
    /// Signature → `getTransaction` answer (`jsonParsed`); absent: `null`.
    pub transactions: HashMap<String, Value>,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("truncated".into());
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn compact(&mut self) -> Result<usize, String> {
        let mut n = 0usize;
        for shift in [0, 7, 14] {
            let b = self.take(1)?[0];
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("compact-u16 too long".into())
    }
}

/// A parsed legacy transaction: signatures, message bytes, header, account keys,
/// blockhash, and instructions as (program index, account indexes, data).
type Parsed = (
    Vec<[u8; 64]>,
    Vec<u8>,
    [u8; 3],
    Vec<[u8; 32]>,
    [u8; 32],
    Vec<(u8, Vec<u8>, Vec<u8>)>,
);

/// Parses a serialized legacy transaction: (signatures, message bytes, message parts).
fn parse(tx: &[u8]) -> Result<Parsed, String> {
    let mut r = Reader(tx);
    let nsig = r.compact()?;
    let mut sigs = Vec::new();
    for _ in 0..nsig {
        sigs.push(<[u8; 64]>::try_from(r.take(64)?).unwrap());
    }
    let message = r.0.to_vec();
    let mut m = Reader(&message);
    let first = m.take(1)?[0];
    if first & 0x80 != 0 {
        return Err("versioned message: the stand-in expects legacy".into());
    }
    let header = [first, m.take(1)?[0], m.take(1)?[0]];
    let nkeys = m.compact()?;
    let mut keys = Vec::new();
    for _ in 0..nkeys {
        keys.push(<[u8; 32]>::try_from(m.take(32)?).unwrap());
    }
    let blockhash = <[u8; 32]>::try_from(m.take(32)?).unwrap();
    let nix = m.compact()?;
    let mut ixs = Vec::new();
    for _ in 0..nix {
        let program = m.take(1)?[0];
        let na = m.compact()?;
        let accounts = m.take(na)?.to_vec();
        let nd = m.compact()?;
        let data = m.take(nd)?.to_vec();
        ixs.push((program, accounts, data));
    }
    if !m.0.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok((sigs, message, header, keys, blockhash, ixs))
}

impl Node {
    fn send(&mut self, encoded: &str) -> Result<Value, (i64, String)> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| {
                (
                    -32602,
                    format!("invalid transaction: failed to decode base64: {e}"),
                )
            })?;
        if bytes.len() > 1232 {
            return Err((
                -32602,
                "base64 encoded solana_sdk::transaction::Transaction too large".into(),
            ));
        }
        let (sigs, message, header, keys, blockhash, ixs) = parse(&bytes)
            .map_err(|e| (-32602, format!("failed to deserialize transaction: {e}")))?;
        if sigs.len() != usize::from(header[0]) || sigs.is_empty() {
            return Err((-32602, "signature count does not match the header".into()));
        }
        for (i, sig) in sigs.iter().enumerate() {
            let vk = VerifyingKey::from_bytes(&keys[i]).map_err(|_| (-32003, "bad key".into()))?;
            vk.verify_strict(&message, &Signature::from_bytes(sig))
                .map_err(|_| (-32003, "Transaction signature verification failure".into()))?;
        }
        if !self.blockhashes.contains(&base58_encode(&blockhash)) {
            return Err((
                -32002,
                "Transaction simulation failed: Blockhash not found".into(),
            ));
        }
        let instructions = ixs
            .into_iter()
            .map(|(p, accounts, data)| Decoded {
                program: base58_encode(&keys[usize::from(p)]),
                accounts: accounts
                    .iter()
                    .map(|a| base58_encode(&keys[usize::from(*a)]))
                    .collect(),
                data,
            })
            .collect();
        let signature = base58_encode(&sigs[0]);
        self.received.push(Received {
            signature: signature.clone(),
            signer: base58_encode(&keys[0]),
            readonly_unsigned: header[2],
            instructions,
        });
        Ok(json!(signature))
    }

    fn answer(&mut self, method: &str, params: &Value) -> Result<Value, (i64, String)> {
        match method {
            "getLatestBlockhash" => {
                let h = key(&format!("blockhash {}", self.blockhashes.len()));
                self.blockhashes.push(h.clone());
                Ok(json!({
                    "context": {"apiVersion": "2.2.7", "slot": 372_161_900},
                    "value": {"blockhash": h, "lastValidBlockHeight": self.block_height + 150},
                }))
            }
            "sendTransaction" => {
                if params[1]["encoding"] != "base64" {
                    return Err((-32602, "the stand-in takes base64".into()));
                }
                self.send(params[0].as_str().unwrap_or_default())
            }
            "getSignatureStatuses" => {
                let sig = params[0][0].as_str().unwrap_or_default();
                Ok(json!({
                    "context": {"apiVersion": "2.2.7", "slot": 372_161_950},
                    "value": [self.statuses.get(sig).cloned().unwrap_or(Value::Null)],
                }))
            }
            "getBlockHeight" => Ok(json!(self.block_height)),
            "getTransaction" => {
                let sig = params[0].as_str().unwrap_or_default();
                Ok(self.transactions.get(sig).cloned().unwrap_or(Value::Null))
            }
            "getTokenSupply" => Ok(json!({
                "context": {"apiVersion": "2.2.7", "slot": 372_161_950},
                "value": {"amount": self.supply.0.to_string(), "decimals": self.supply.1,
                          "uiAmountString": "0"},
            })),
            "getAccountInfo" => {
                let who = params[0].as_str().unwrap_or_default();
                let value = self.token_accounts.get(who).map(|mint| {
                    json!({
                        "owner": "TokenkegQfeZyiNwAJbNbGKPFXCWuBvf9Ss623VQ5DA",
                        "lamports": 2_039_280, "executable": false, "space": 165,
                        "data": {"program": "spl-token", "space": 165, "parsed": {
                            "type": "account",
                            "info": {"mint": mint, "owner": "x", "state": "initialized"},
                        }},
                    })
                });
                Ok(json!({"context": {"slot": 372_161_950}, "value": value}))
            }
            "getTokenAccountsByOwner" => {
                let who = params[0].as_str().unwrap_or_default();
                let value: Vec<Value> = self
                    .owned
                    .get(who)
                    .into_iter()
                    .flatten()
                    .map(|a| json!({"pubkey": a, "account": {}}))
                    .collect();
                Ok(json!({"context": {"slot": 372_161_950}, "value": value}))
            }
            other => Err((-32601, format!("Method not found: {other}"))),
        }
    }
}

async fn handle(State(node): State<Arc<Mutex<Node>>>, Json(body): Json<Value>) -> Json<Value> {
    let method = body["method"].as_str().unwrap_or_default().to_owned();
    let answer = node.lock().unwrap().answer(&method, &body["params"]);
    Json(match answer {
        Ok(result) => json!({"jsonrpc": "2.0", "result": result, "id": body["id"]}),
        Err((code, message)) => {
            json!({"jsonrpc": "2.0", "error": {"code": code, "message": message}, "id": body["id"]})
        }
    })
}

pub async fn stand_in() -> (String, Arc<Mutex<Node>>) {
    let node = Arc::new(Mutex::new(Node {
        block_height: 350_376_000,
        ..Node::default()
    }));
    let app = Router::new()
        .route("/", post(handle))
        .with_state(node.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, node)
}
