//! The public edge over real sockets: bounded `/metrics` under invented methods and
//! paths, header-read and idle timeouts and the connection cap, 413 at once for a
//! declared oversized body, malformed HTTP, and the webhook target check at
//! registration (the pipeline's real check, not a stand-in).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use ubtc_api::webhooks::WebhookAdmin;
use ubtc_api::{public_router, serve_with, ApiState, ServeLimits};
use ubtc_store::{SqliteStore, Store};

const OPERATOR_KEY: &str = "operator-key-for-edge-tests";

struct App {
    base: String,
    addr: std::net::SocketAddr,
    store: Arc<dyn Store>,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn(limits: ServeLimits) -> Result<App> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let store =
        SqliteStore::connect(&format!("sqlite:{}", dir.path().join("a.db").display()), 2).await?;
    store.migrate().await?;
    let store: Arc<dyn Store> = Arc::new(store);
    // The check the binary wires in: the delivery worker's, private targets refused.
    let check: ubtc_api::webhooks::TargetCheck =
        Arc::new(|url: &str| ubtc_pipeline::webhook::check_target(url, false));
    let state = ApiState::new(store.clone(), vec![])
        .with_metrics(ubtc_api::metrics::install_recorder()?)
        .with_webhook_admin(WebhookAdmin::new(OPERATOR_KEY, check).context("admin")?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(serve_with(
        listener,
        public_router(state),
        limits,
        shutdown.clone(),
    ));
    Ok(App {
        base: format!("http://{addr}"),
        addr,
        store,
        shutdown,
        _dir: dir,
    })
}

/// Series (sample lines) and bytes of one `/metrics` scrape.
async fn scrape(client: &reqwest::Client, app: &App) -> Result<(usize, usize, String)> {
    let text = client
        .get(format!("{}/metrics", app.base))
        .send()
        .await?
        .text()
        .await?;
    let series = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    Ok((series, text.len(), text))
}

fn random_token(rng: &mut impl Rng, len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.!~*";
    (0..len)
        .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
        .collect()
}

/// One request of the flood: `kind` picks the (method kind, path family) so that a
/// warm-up can visit every combination once.
fn flood_request(rng: &mut impl Rng, kind: usize) -> (reqwest::Method, String) {
    let method = match kind % 3 {
        0 => reqwest::Method::GET,
        1 => reqwest::Method::POST,
        _ => {
            let token = format!("X{}", random_token(rng, 10)).replace(['!', '~', '*', '.'], "Q");
            reqwest::Method::from_bytes(token.as_bytes()).expect("token")
        }
    };
    let path = match (kind / 3) % 4 {
        0 => format!("/v1/validations/{}", random_token(rng, 12)),
        1 => format!("/v1/proofs/{}", random_token(rng, 20)),
        2 => format!("/{}/{}", random_token(rng, 8), random_token(rng, 8)),
        _ => format!("/v1/{}", random_token(rng, 16)),
    };
    (method, path)
}

const FLOOD_KINDS: usize = 12;

async fn flood(app: &App, client: &reqwest::Client, seed: u64, n: usize) -> Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let requests: Vec<(reqwest::Method, String)> = (0..n)
        .map(|i| {
            let kind = if n == FLOOD_KINDS {
                i
            } else {
                rng.gen_range(0..FLOOD_KINDS)
            };
            flood_request(&mut rng, kind)
        })
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for chunk in requests.chunks(n.div_ceil(16)) {
        let chunk = chunk.to_vec();
        let client = client.clone();
        let base = app.base.clone();
        tasks.spawn(async move {
            for (method, path) in chunk {
                let resp = client
                    .request(method.clone(), format!("{base}{path}"))
                    .send()
                    .await?;
                // Never a server error, whatever was invented.
                anyhow::ensure!(
                    !resp.status().is_server_error(),
                    "{method} {path}: {}",
                    resp.status()
                );
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

#[tokio::test]
async fn metrics_series_do_not_grow_with_invented_methods_and_paths() -> Result<()> {
    let app = spawn(ServeLimits::default()).await?;
    let client = reqwest::Client::new();
    // Every (method kind, path family) once, so each label set exists before counting.
    flood(&app, &client, 1, FLOOD_KINDS).await?;
    let _ = scrape(&client, &app).await?;
    let (series_before, bytes_before, _) = scrape(&client, &app).await?;
    flood(&app, &client, 2, 10_000).await?;
    let (series_after, bytes_after, text) = scrape(&client, &app).await?;
    println!(
        "/metrics after warm-up: {series_before} series, {bytes_before} bytes; \
         after 10000 requests with random methods and paths: {series_after} series, {bytes_after} bytes"
    );
    assert_eq!(series_before, series_after, "{text}");
    // Only counter values and histogram sums grow (a few digits each).
    assert!(
        bytes_after.abs_diff(bytes_before) < 1_000,
        "{bytes_before} -> {bytes_after}"
    );
    assert!(text.contains("method=\"other\""), "{text}");
    assert!(text.contains("route=\"unmatched\""), "{text}");
    assert!(text.contains("status=\"4xx\""), "{text}");
    // No invented method or path reached a label.
    for line in text.lines().filter(|l| l.starts_with("ubtc_http_")) {
        assert!(
            !line.contains("method=\"X") && !line.contains("route=\"/v1/validations/")
                || line.contains("route=\"/v1/validations/{id}\""),
            "{line}"
        );
    }
    Ok(())
}

/// Writes `request` on a fresh connection and reads until the server closes it (or
/// `limit` passes): what came back and when the connection ended.
async fn raw_exchange(app: &App, request: &[u8], limit: Duration) -> Result<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await?;
    stream.write_all(request).await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout_at((started + limit).into(), stream.read(&mut buf)).await {
            Err(_) => anyhow::bail!("connection still open after {limit:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    Ok((out, started.elapsed()))
}

/// Status, lower-cased headers and body of a raw HTTP/1.1 response.
type RawResponse = (u16, Vec<(String, String)>, Vec<u8>);

fn parse_response(raw: &[u8]) -> Result<RawResponse> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of head")?;
    let head = std::str::from_utf8(&raw[..end])?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .context("status line")?
        .parse()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Ok((status, headers, raw[end + 4..].to_vec()))
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_declared_oversized_body_gets_413_at_once() -> Result<()> {
    let app = spawn(ServeLimits::default()).await?;
    for path in ["/v1/webhooks", "/v1/demo/payments", "/nowhere"] {
        // Headers only: the 10 MB body is never sent, so an answer must not wait for it.
        let request = format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
             content-length: 10000000\r\n\r\n"
        );
        let (raw, took) = raw_exchange(&app, request.as_bytes(), Duration::from_secs(5)).await?;
        let (status, headers, body) = parse_response(&raw)?;
        assert_eq!(status, 413, "{path}: {}", String::from_utf8_lossy(&raw));
        let body: Value = serde_json::from_slice(&body)?;
        assert_eq!(body["error"]["code"], "payload_too_large", "{path}");
        assert!(header(&headers, "x-request-id").is_some(), "{path}");
        assert!(took < Duration::from_secs(2), "{path}: {took:?}");
    }
    // At the limit it goes through to the handler (401: no credentials).
    let client = reqwest::Client::new();
    let resp = client
        .post(format!("{}/v1/webhooks", app.base))
        .header("content-type", "application/json")
        .body(vec![b' '; ubtc_api::BODY_LIMIT_BYTES_DEFAULT])
        .send()
        .await?;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    Ok(())
}

/// Holds a connection that sends nothing; returns when the server closed it.
async fn silent(app: &App) -> Result<Duration> {
    let (raw, took) = raw_exchange(app, b"", Duration::from_secs(30)).await?;
    anyhow::ensure!(raw.is_empty(), "answered a silent connection");
    Ok(took)
}

/// Sends a request head one byte every `every`, never finishing it; returns what came
/// back and when the server closed the connection.
async fn slow_header(app: &App, every: Duration) -> Result<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(app.addr).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nx-slow: ")
        .await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            },
            _ = tokio::time::sleep(every) => {
                if stream.write_all(b"a").await.is_err() {
                    break;
                }
            }
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(30),
            "slow header still open after 30 s"
        );
    }
    Ok((out, started.elapsed()))
}

#[tokio::test]
async fn slow_and_silent_connections_are_closed_in_time_while_requests_are_served() -> Result<()> {
    // The documented defaults: header read 10 s, idle 5 s.
    let limits = ServeLimits::default();
    let app = Arc::new(spawn(limits).await?);
    let mut holders = tokio::task::JoinSet::new();
    for i in 0..40 {
        let app = app.clone();
        holders.spawn(async move {
            if i % 2 == 0 {
                silent(&app).await.map(|t| ("silent", t, Vec::new()))
            } else {
                slow_header(&app, Duration::from_millis(500))
                    .await
                    .map(|(raw, t)| ("slow header", t, raw))
            }
        });
    }
    // Meanwhile normal requests are answered at their normal speed.
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    let probing = Instant::now();
    while probing.elapsed() < Duration::from_secs(8) {
        let started = Instant::now();
        let resp = client.get(format!("{}/healthz", app.base)).send().await?;
        assert_eq!(resp.status(), StatusCode::OK);
        slowest = slowest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(slowest < Duration::from_millis(500), "slowest {slowest:?}");
    let margin = Duration::from_millis(1_500);
    let mut closed: std::collections::BTreeMap<&str, (Duration, Duration)> = Default::default();
    while let Some(held) = holders.join_next().await {
        let (kind, took, raw) = held??;
        let range = closed.entry(kind).or_insert((took, took));
        range.0 = range.0.min(took);
        range.1 = range.1.max(took);
        let limit = if kind == "silent" {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        };
        assert!(
            took >= limit - Duration::from_millis(100),
            "{kind} closed early: {took:?}"
        );
        assert!(took <= limit + margin, "{kind} closed late: {took:?}");
        // The head never completed: nothing was answered.
        assert!(raw.is_empty(), "{kind}: {}", String::from_utf8_lossy(&raw));
    }
    println!("closed after (first, last): {closed:?}; normal requests during the hold: slowest {slowest:?}");
    Ok(())
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_until_one_closes() -> Result<()> {
    let limits = ServeLimits {
        max_connections: 4,
        idle_timeout: Duration::from_millis(1_500),
        ..ServeLimits::default()
    };
    let app = Arc::new(spawn(limits).await?);
    let mut held = Vec::new();
    for _ in 0..4 {
        let s = TcpStream::connect(app.addr).await?;
        held.push(s);
    }
    // Give the server time to accept all four.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let resp = reqwest::Client::new()
        .get(format!("{}/healthz", app.base))
        .send()
        .await?;
    let waited = started.elapsed();
    assert_eq!(resp.status(), StatusCode::OK);
    // Served only once the idle timeout freed a slot.
    assert!(waited >= Duration::from_millis(1_000), "waited {waited:?}");
    assert!(waited < Duration::from_millis(3_500), "waited {waited:?}");
    drop(held);
    Ok(())
}

/// What the server may answer to malformed HTTP: our JSON error with a request id
/// when the request reached the application, or hyper's connection-level rejection
/// (a bare status, `content-length: 0`, then the connection closed) as docs/api.md
/// describes.
fn assert_documented_rejection(what: &str, raw: &[u8]) -> Result<&'static str> {
    let (status, headers, body) = parse_response(raw)?;
    if header(&headers, "x-request-id").is_some() {
        assert!((400..500).contains(&status), "{what}: {status}");
        let body: Value = serde_json::from_slice(&body).with_context(|| what.to_owned())?;
        assert!(body["error"]["code"].is_string(), "{what}: {body}");
        assert!(body["error"]["request_id"].is_string(), "{what}: {body}");
        Ok("application")
    } else {
        assert!(
            [400, 414, 431].contains(&status),
            "{what}: undocumented {status}"
        );
        assert_eq!(header(&headers, "content-length"), Some("0"), "{what}");
        assert!(body.is_empty(), "{what}");
        Ok("connection")
    }
}

#[tokio::test]
async fn malformed_http_gets_the_json_error_or_the_documented_connection_rejection() -> Result<()> {
    let app = spawn(ServeLimits::default()).await?;
    let limit = Duration::from_secs(5);
    let mut huge = b"GET /healthz HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..1024 {
        huge.extend_from_slice(format!("x-h{i}: {}\r\n", "a".repeat(1000)).as_bytes());
    }
    huge.extend_from_slice(b"\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("raw 0xFF in the path", b"GET /v1/\xff HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        (
            "NUL in a header",
            b"GET /healthz HTTP/1.1\r\nhost: x\r\nx-a: a\x00b\r\n\r\n".to_vec(),
        ),
        (
            "two content-lengths",
            b"POST /v1/webhooks HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}"
                .to_vec(),
        ),
        ("1 MB of headers", huge),
        ("an invalid method", b"G(T /healthz HTTP/1.1\r\nhost: x\r\n\r\n".to_vec()),
        (
            "a percent-encoded 0xFF",
            b"GET /v1/validations/%FF HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".to_vec(),
        ),
        (
            "0xFF in a header value",
            b"GET /v1/x HTTP/1.1\r\nhost: x\r\nx-request-id: \xff\xfe\r\nconnection: close\r\n\r\n"
                .to_vec(),
        ),
        (
            "a bad query",
            b"GET /v1/validations?limit=%FF%FE HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
                .to_vec(),
        ),
    ];
    let mut seen = Vec::new();
    for (what, request) in &cases {
        let (raw, _) = raw_exchange(&app, request, limit)
            .await
            .with_context(|| what.to_string())?;
        let level = assert_documented_rejection(what, &raw)?;
        seen.push(format!("{what}: {level}"));
    }
    println!("{}", seen.join("\n"));
    // The ones that reach the application do get the JSON body.
    for what in [
        "a percent-encoded 0xFF",
        "0xFF in a header value",
        "a bad query",
    ] {
        assert!(seen.contains(&format!("{what}: application")), "{seen:?}");
    }
    // The server still serves after all of that.
    let resp = reqwest::get(format!("{}/healthz", app.base)).await?;
    assert_eq!(resp.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn registration_refuses_every_special_purpose_target_and_stores_nothing() -> Result<()> {
    let app = spawn(ServeLimits::default()).await?;
    let client = reqwest::Client::new();
    let register = |url: &str| {
        client
            .post(format!("{}/v1/webhooks", app.base))
            .bearer_auth(OPERATOR_KEY)
            .json(
                &json!({"url": url, "secret": "0123456789abcdef", "events": ["validation.signed"]}),
            )
            .send()
    };
    for url in [
        "http://localhost.:8080/",
        "http://LOCALHOST./x",
        "http://api.localhost/",
        "http://[::127.0.0.1]:9/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b:1::1]/",
        "http://[2002:7f00:1::1]/",
        "http://[fec0::1]/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        "http://[ff02::1]/",
        "http://[2001:db8::1]/",
        "http://198.18.0.1/",
        "http://198.19.255.255/",
        "http://192.0.0.170/",
        "http://100.64.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://0.0.0.0/",
        "http://2130706433/",
        "http://0x7f.0.0.1/",
        "http://printer.local/",
        "http://metadata.google.internal/",
    ] {
        let resp = register(url).await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{url}: {body}");
        assert_eq!(body["error"]["code"], "invalid_parameter", "{url}");
    }
    assert!(app.store.list_webhook_consumers().await?.is_empty());
    // A public target is accepted (nothing is contacted at registration).
    let resp = register("https://hooks.example.com/ubtc").await?;
    assert_eq!(resp.status(), StatusCode::CREATED);
    Ok(())
}
