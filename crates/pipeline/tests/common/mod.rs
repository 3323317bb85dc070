//! What the webhook tests share: a real HTTP receiver inside the test (axum on a
//! loopback port) that checks each delivery's signature and records what it
//! accepted, and a migrated SQLite store in a temporary directory.

// Every test file is its own crate and compiles this whole module, but uses only part
// of it (not every file fails requests or reads the counts); without this each test
// binary would warn about the parts it leaves unused.
#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use ubtc_pipeline::webhook::verify;
use ubtc_store::{SqliteStore, Store};

/// One delivery the receiver accepted.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `name` of `/hook/{name}`; empty for `/hook`.
    pub path: String,
    pub event_id: String,
    pub event_type: String,
    pub payload: serde_json::Value,
}

#[derive(Default)]
pub struct Receiver {
    /// Requests still to answer with 500.
    pub fail_next: usize,
    /// How long each answer takes (e.g. so that workers' batches overlap in time).
    pub delay: Duration,
    /// The secret deliveries to each path (see `Delivery::path`) are signed with; a
    /// path not listed expects the empty secret.
    pub secrets: HashMap<String, Vec<u8>>,
    /// Requests seen (any answer, any path).
    pub requests: usize,
    /// Deliveries refused with 401: bad signature, or an `Idempotency-Key` other than
    /// the event id.
    pub bad_signatures: usize,
    /// Deliveries accepted (answered 200), in arrival order.
    pub accepted: Vec<Delivery>,
}

impl Receiver {
    /// How many times the event was accepted on the path.
    pub fn times(&self, path: &str, event_id: &str) -> usize {
        self.accepted
            .iter()
            .filter(|d| d.path == path && d.event_id == event_id)
            .count()
    }

    /// (path, event id) → times accepted.
    pub fn counts(&self) -> HashMap<(String, String), usize> {
        let mut counts = HashMap::new();
        for d in &self.accepted {
            *counts
                .entry((d.path.clone(), d.event_id.clone()))
                .or_default() += 1;
        }
        counts
    }
}

pub type SharedReceiver = Arc<Mutex<Receiver>>;

async fn accept(rx: SharedReceiver, path: String, headers: HeaderMap, body: Bytes) -> StatusCode {
    let delay = {
        let mut rx = rx.lock().unwrap();
        rx.requests += 1;
        rx.delay
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut rx = rx.lock().unwrap();
    if rx.fail_next > 0 {
        rx.fail_next -= 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let ts: i64 = h("ubtc-timestamp").parse().unwrap_or(0);
    let secret = rx.secrets.get(&path).cloned().unwrap_or_default();
    if !verify(&secret, ts, &body, &h("ubtc-signature"))
        || h("idempotency-key") != h("ubtc-event-id")
    {
        rx.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    rx.accepted.push(Delivery {
        path,
        event_id: h("ubtc-event-id"),
        event_type: h("ubtc-event-type"),
        payload: serde_json::from_slice(&body).unwrap(),
    });
    StatusCode::OK
}

async fn hook(State(rx): State<SharedReceiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    accept(rx, String::new(), headers, body).await
}

async fn named_hook(
    State(rx): State<SharedReceiver>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    accept(rx, name, headers, body).await
}

async fn never(State(rx): State<SharedReceiver>) -> StatusCode {
    rx.lock().unwrap().requests += 1;
    StatusCode::SERVICE_UNAVAILABLE
}

/// Starts the receiver with `rx` as its state and returns its base URL
/// (`http://127.0.0.1:port`). Routes: `POST /hook`, `POST /hook/{name}` (checked and
/// recorded), `POST /never` (always 503).
pub async fn start_receiver(rx: Receiver) -> (String, SharedReceiver) {
    let state = Arc::new(Mutex::new(rx));
    let app = Router::new()
        .route("/hook", post(hook))
        .route("/hook/{name}", post(named_hook))
        .route("/never", post(never))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, state)
}

/// A migrated SQLite store in a temporary directory (removed when the directory is
/// dropped).
pub async fn sqlite_store(max_readers: u32) -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::connect(
        &format!("sqlite:{}", dir.path().join("w.db").display()),
        max_readers,
    )
    .await
    .unwrap();
    s.migrate().await.unwrap();
    (Arc::new(s), dir)
}
