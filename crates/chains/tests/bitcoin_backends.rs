//! The Esplora and Bitcoin Core backends against a local HTTP stand-in.
//!
//! No Bitcoin node can be installed here, so an axum server plays the part. It is a
//! stand-in, not a node: its answers copy the response shapes documented in Esplora's
//! `API.md` (`/blocks/tip/height`, `/block-height/:h`, `/address/:a/utxo`, `/tx/:id`)
//! and in Bitcoin Core's RPC help (`getblockcount`, `getblockhash`, `scantxoutset`,
//! JSON-RPC 1.0 envelopes, RPC errors as HTTP 500 with an `error` object).
#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use ubtc_chains::bitcoind::{BitcoinCoreBackend, RpcAuth};
use ubtc_chains::esplora::EsploraBackend;
use ubtc_chains::evm::RetryPolicy;
use ubtc_chains::{BitcoinBackend, ChainError};

const TIP_HEIGHT: u32 = 871_234;
const TIP_HASH: &str = "00000000000000000001a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
const ADDRESS: &str = "bc1qwqdg6squsna38e46795at95yu9atm8azzmyvckulcc7kytlcckxswvvzej";
const SCRIPT: &str = "0020701a8d401c84fb13e6baf169d59684e17abd9fa216c8cc5b9fc63d622ff8c58d";

fn hash_at(height: u32) -> String {
    if height == TIP_HEIGHT {
        TIP_HASH.to_owned()
    } else {
        format!("{:064x}", height)
    }
}

fn retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
        timeout: Duration::from_secs(5),
    }
}

async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Esplora stand-in; the first request of each kind to `/blocks/tip/height` fails with
/// 503 to exercise the retry.
fn esplora_app(hits: Arc<AtomicU64>) -> Router {
    Router::new()
        .route(
            "/api/blocks/tip/height",
            get(move || {
                let hits = hits.clone();
                async move {
                    if hits.fetch_add(1, Ordering::SeqCst) == 0 {
                        return (StatusCode::SERVICE_UNAVAILABLE, "busy".to_owned());
                    }
                    (StatusCode::OK, TIP_HEIGHT.to_string())
                }
            }),
        )
        .route("/api/blocks/tip/hash", get(|| async { TIP_HASH }))
        .route(
            "/api/block-height/{height}",
            get(|Path(h): Path<u32>| async move {
                if h > TIP_HEIGHT {
                    (StatusCode::NOT_FOUND, "Block not found".to_owned())
                } else {
                    (StatusCode::OK, hash_at(h))
                }
            }),
        )
        .route(
            "/api/address/{address}/utxo",
            get(|Path(a): Path<String>| async move {
                if a != ADDRESS {
                    return Json(json!([]));
                }
                Json(json!([
                    {
                        "txid": "b3c7f9c2e1d0a4f5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3",
                        "vout": 1,
                        "status": {"confirmed": true, "block_height": 871200,
                                   "block_hash": hash_at(871_200), "block_time": 1_732_300_000},
                        "value": 150_000_000u64
                    },
                    {
                        "txid": "a1a2a3a4a5a6a7a8a9b0b1b2b3b4b5b6b7b8b9c0c1c2c3c4c5c6c7c8c9d0d1d2",
                        "vout": 0,
                        "status": {"confirmed": true, "block_height": 871100,
                                   "block_hash": hash_at(871_100), "block_time": 1_732_200_000},
                        "value": 50_000_000u64
                    },
                    {
                        "txid": "ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000",
                        "vout": 0,
                        "status": {"confirmed": false},
                        "value": 999u64
                    }
                ]))
            }),
        )
        .route(
            "/api/tx/{txid}",
            get(|Path(txid): Path<String>| async move {
                Json(json!({
                    "txid": txid, "version": 2, "locktime": 0, "size": 234, "weight": 609,
                    "fee": 1410,
                    "vin": [],
                    "vout": [
                        {"scriptpubkey": SCRIPT, "scriptpubkey_asm": "OP_0 OP_PUSHBYTES_32 701a…",
                         "scriptpubkey_type": "v0_p2wsh", "scriptpubkey_address": ADDRESS,
                         "value": 50_000_000u64},
                        {"scriptpubkey": SCRIPT, "scriptpubkey_asm": "OP_0 OP_PUSHBYTES_32 701a…",
                         "scriptpubkey_type": "v0_p2wsh", "scriptpubkey_address": ADDRESS,
                         "value": 150_000_000u64}
                    ],
                    "status": {"confirmed": true, "block_height": 871100}
                }))
            }),
        )
}

#[tokio::test]
async fn esplora_tip_hashes_and_utxos() {
    let hits = Arc::new(AtomicU64::new(0));
    let url = serve(esplora_app(hits.clone())).await;
    let esplora = EsploraBackend::new(&format!("{url}/api/"), retry()).unwrap();
    let tip = esplora.tip().await.unwrap();
    assert_eq!((tip.height, tip.hash.as_str()), (TIP_HEIGHT, TIP_HASH));
    assert_eq!(hits.load(Ordering::SeqCst), 2, "one 503, then retried");
    assert_eq!(esplora.block_hash(100).await.unwrap(), hash_at(100));
    assert!(matches!(
        esplora.block_hash(TIP_HEIGHT + 1).await,
        Err(ChainError::BadResponse(_))
    ));
    let utxos = esplora.address_utxos(ADDRESS).await.unwrap();
    // Unconfirmed outputs are not reserves; the rest come back in a stable order.
    assert_eq!(utxos.len(), 2);
    assert_eq!(
        utxos.iter().map(|u| u.amount_sats).sum::<u64>(),
        200_000_000
    );
    assert!(utxos[0].txid < utxos[1].txid);
    assert!(utxos.iter().all(|u| u.script_pubkey_hex == SCRIPT));
    assert!(esplora
        .address_utxos("bc1qnothing")
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        esplora.address_utxos("bc1q/../x").await,
        Err(ChainError::Misconfigured(_))
    ));
    // A server that is not there: unavailable, after the retries.
    let away = EsploraBackend::new("http://127.0.0.1:9", retry()).unwrap();
    assert!(matches!(away.tip().await, Err(ChainError::Unavailable(_))));
}

async fn core_rpc(
    State(calls): State<Arc<AtomicU64>>,
    headers: HeaderMap,
    Json(req): Json<Value>,
) -> impl IntoResponse {
    calls.fetch_add(1, Ordering::SeqCst);
    // "user:secret" in basic auth.
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some("Basic dXNlcjpzZWNyZXQ=")
    {
        return (StatusCode::UNAUTHORIZED, Json(Value::Null));
    }
    let id = req["id"].clone();
    let ok = |result: Value| {
        (
            StatusCode::OK,
            Json(json!({"result": result, "error": null, "id": id})),
        )
    };
    let fail = |code: i64, message: &str| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(
                json!({"result": null, "error": {"code": code, "message": message}, "id": req["id"]}),
            ),
        )
    };
    match req["method"].as_str().unwrap_or("") {
        "getblockcount" => ok(json!(TIP_HEIGHT)),
        "getblockhash" => {
            let h = req["params"][0].as_u64().unwrap_or(u64::MAX);
            if h > TIP_HEIGHT as u64 {
                fail(-8, "Block height out of range")
            } else {
                ok(json!(hash_at(h as u32)))
            }
        }
        "scantxoutset" => {
            let desc = req["params"][1][0].as_str().unwrap_or("");
            let unspents = if desc == format!("addr({ADDRESS})") {
                json!([
                    {"txid": "b3c7f9c2e1d0a4f5b6c7d8e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3",
                     "vout": 1, "scriptPubKey": SCRIPT,
                     "desc": format!("addr({ADDRESS})#8rmqqh9q"), "amount": 1.5,
                     "coinbase": false, "height": 871200, "blockhash": hash_at(871_200)},
                    {"txid": "a1a2a3a4a5a6a7a8a9b0b1b2b3b4b5b6b7b8b9c0c1c2c3c4c5c6c7c8c9d0d1d2",
                     "vout": 0, "scriptPubKey": SCRIPT,
                     "desc": format!("addr({ADDRESS})#8rmqqh9q"), "amount": 0.12345678,
                     "coinbase": false, "height": 871100, "blockhash": hash_at(871_100)}
                ])
            } else {
                json!([])
            };
            ok(
                json!({"success": true, "txouts": 185_123_456u64, "height": TIP_HEIGHT,
                      "bestblock": TIP_HASH, "unspents": unspents, "total_amount": 1.62345678}),
            )
        }
        _ => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"result": null, "error": {"code": -32601, "message": "Method not found"}, "id": req["id"]}),
            ),
        ),
    }
}

#[tokio::test]
async fn bitcoin_core_tip_hashes_and_scantxoutset() {
    let calls = Arc::new(AtomicU64::new(0));
    let url = serve(
        Router::new()
            .route("/", post(core_rpc))
            .with_state(calls.clone()),
    )
    .await;
    let auth = RpcAuth {
        user: "user".into(),
        password: "secret".into(),
    };
    assert!(!format!("{auth:?}").contains("secret"));
    let core = BitcoinCoreBackend::new(&url, Some(auth), retry()).unwrap();
    let tip = core.tip().await.unwrap();
    assert_eq!((tip.height, tip.hash.as_str()), (TIP_HEIGHT, TIP_HASH));
    assert_eq!(core.block_hash(7).await.unwrap(), hash_at(7));
    match core.block_hash(TIP_HEIGHT + 1).await {
        Err(ChainError::BadResponse(m)) => assert!(m.contains("out of range"), "{m}"),
        other => panic!("{other:?}"),
    }
    let utxos = core.address_utxos(ADDRESS).await.unwrap();
    assert_eq!(utxos.len(), 2);
    assert_eq!(
        utxos.iter().map(|u| u.amount_sats).sum::<u64>(),
        150_000_000 + 12_345_678
    );
    assert!(utxos.iter().all(|u| u.script_pubkey_hex == SCRIPT));
    assert!(core.address_utxos("bc1qempty").await.unwrap().is_empty());
    assert!(matches!(
        core.address_utxos("x)#,addr(y").await,
        Err(ChainError::Misconfigured(_))
    ));
    let wrong = BitcoinCoreBackend::new(
        &url,
        Some(RpcAuth {
            user: "user".into(),
            password: "nope".into(),
        }),
        retry(),
    )
    .unwrap();
    assert!(matches!(
        wrong.tip().await,
        Err(ChainError::Misconfigured(_))
    ));
}
