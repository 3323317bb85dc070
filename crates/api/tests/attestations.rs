//! The published attestations over real HTTP, against a real SQLite store: paging,
//! the document as stored (downloadable), 404 and bad ids, and `/v1/reserves`
//! carrying the latest attestation's proven figures (a reorged one is not shown).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use anyhow::Result;
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use ubtc_api::{public_router, serve, ApiState};
use ubtc_core::attestation::*;
use ubtc_core::bundle::{BitcoinNetwork, Utxo};
use ubtc_core::{ChainId, Timestamp, TokenAmount};
use ubtc_store::{SqliteStore, Store};

fn attestation(height: u32, sats: u64) -> ReserveAttestation {
    ReserveAttestation::unsigned(AttestationContent {
        network: BitcoinNetwork::Regtest,
        bitcoin_block: AttestedBlock {
            height,
            hash: format!("{height:064x}"),
        },
        reserves: vec![AttestedReserve {
            address: "bcrt1qreserve".into(),
            descriptor: "wpkh(02aa)#abcdefgh".into(),
            status: ReserveStatus::Active,
            utxos: vec![Utxo {
                txid: format!("{:064x}", u64::from(height) + 1),
                vout: 0,
                amount_sats: sats,
                script_pubkey_hex: "0014".to_owned() + &"ab".repeat(20),
            }],
        }],
        supply: vec![AttestedSupply {
            chain: ChainId::parse("ethereum").unwrap(),
            token: "0xtoken".into(),
            block_number: 100,
            block_hash: "0xblock".into(),
            supply: TokenAmount::new(100_000_000, 8),
        }],
        registry: RegistryRef {
            version: 1,
            fingerprint: "ab".repeat(32),
        },
        audit_head: "cd".repeat(32),
        created_at: Timestamp::now(),
    })
    .unwrap()
}

async fn get(base: &str, path: &str) -> Result<(StatusCode, reqwest::header::HeaderMap, String)> {
    let resp = reqwest::get(format!("{base}{path}")).await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    Ok((status, headers, resp.text().await?))
}

#[tokio::test]
async fn attestations_are_published() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite:{}", dir.path().join("api.db").display());
    let store = Arc::new(SqliteStore::connect(&url, 4).await?);
    store.migrate().await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve(
        listener,
        public_router(ApiState::new(store.clone(), Vec::new())),
        shutdown.clone(),
    ));

    // Nothing yet: 404 with a code, an empty list, no attestation in /v1/reserves.
    let (status, _, body) = get(&base, "/v1/attestations/latest").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        serde_json::from_str::<Value>(&body)?["error"]["code"],
        "attestation_not_found"
    );
    let (_, _, body) = get(&base, "/v1/attestations").await?;
    let list: Value = serde_json::from_str(&body)?;
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
    assert_eq!(list["next_before"], Value::Null);
    let (_, _, body) = get(&base, "/v1/reserves").await?;
    assert_eq!(
        serde_json::from_str::<Value>(&body)?["attestation"],
        Value::Null
    );

    let mut docs = Vec::new();
    for (i, h) in [100_u32, 103, 106].into_iter().enumerate() {
        let att = attestation(h, 200_000_000 + i as u64);
        let sum = store.record_attestation(&att, Timestamp::now()).await?;
        docs.push((sum, att));
    }

    // Paged, newest first.
    let (status, _, body) = get(&base, "/v1/attestations?limit=2").await?;
    assert_eq!(status, StatusCode::OK);
    let page: Value = serde_json::from_str(&body)?;
    let ids: Vec<i64> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![docs[2].0.id, docs[1].0.id]);
    assert_eq!(page["next_before"], docs[1].0.id);
    assert_eq!(page["items"][0]["reserve_sats"], 200_000_002_u64);
    assert_eq!(page["items"][0]["proven"], true);
    let (_, _, body) = get(
        &base,
        &format!("/v1/attestations?limit=2&before={}", docs[1].0.id),
    )
    .await?;
    let page: Value = serde_json::from_str(&body)?;
    assert_eq!(page["items"][0]["id"], docs[0].0.id);
    assert_eq!(page["next_before"], Value::Null);

    // The document, byte for byte as the signers made it, as a download.
    let (status, headers, body) = get(&base, &format!("/v1/attestations/{}", docs[0].0.id)).await?;
    assert_eq!(status, StatusCode::OK);
    assert!(headers["content-disposition"]
        .to_str()?
        .starts_with("attachment; filename=\"ubtc-attestation-"));
    assert_eq!(ReserveAttestation::from_json(body.as_bytes())?, docs[0].1);
    let (_, headers, body) = get(&base, "/v1/attestations/latest").await?;
    assert_eq!(
        headers["x-attestation-id"].to_str()?,
        docs[2].0.id.to_string()
    );
    assert_eq!(ReserveAttestation::from_json(body.as_bytes())?, docs[2].1);

    // /v1/reserves shows the latest attestation's figures, marked proven.
    let (_, _, body) = get(&base, "/v1/reserves").await?;
    let reserves: Value = serde_json::from_str(&body)?;
    assert_eq!(reserves["attestation"]["id"], docs[2].0.id);
    assert_eq!(reserves["attestation"]["reserve_sats"], 200_000_002_u64);
    assert_eq!(reserves["attestation"]["bitcoin_height"], 106);
    assert_eq!(reserves["attestation"]["proven"], true);

    // Reorged: no longer the latest, still listed and marked not proven.
    store
        .mark_attestation_reorged(docs[2].0.id, Timestamp::now())
        .await?;
    let (_, headers, _) = get(&base, "/v1/attestations/latest").await?;
    assert_eq!(
        headers["x-attestation-id"].to_str()?,
        docs[1].0.id.to_string()
    );
    let (_, _, body) = get(&base, "/v1/reserves").await?;
    assert_eq!(
        serde_json::from_str::<Value>(&body)?["attestation"]["id"],
        docs[1].0.id
    );
    let (_, _, body) = get(&base, "/v1/attestations?limit=1").await?;
    assert_eq!(
        serde_json::from_str::<Value>(&body)?["items"][0]["proven"],
        false
    );

    // Unknown and malformed ids, bad paging.
    for (path, code, status) in [
        (
            "/v1/attestations/999",
            "attestation_not_found",
            StatusCode::NOT_FOUND,
        ),
        ("/v1/attestations/0", "invalid_id", StatusCode::BAD_REQUEST),
        (
            "/v1/attestations/abc",
            "invalid_id",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/attestations?limit=0",
            "invalid_parameter",
            StatusCode::BAD_REQUEST,
        ),
        (
            "/v1/attestations?before=x",
            "invalid_parameter",
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (got, _, body) = get(&base, path).await?;
        assert_eq!(got, status, "{path}: {body}");
        assert_eq!(
            serde_json::from_str::<Value>(&body)?["error"]["code"],
            code,
            "{path}"
        );
    }

    shutdown.cancel();
    server.await??;
    Ok(())
}
