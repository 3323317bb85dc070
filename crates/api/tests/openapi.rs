//! The served OpenAPI document against the real server.
//!
//! - Every answer the document promises on every operation because of the router's
//!   layers (413, 415, 429) is really given, and every answer given is documented,
//!   with a body that validates against the documented schema (`jsonschema`).
//! - A bounded fuzz run over every operation: generated path, query and body values
//!   (valid, borderline and garbage), each answer checked against the document. It
//!   prints operations covered, examples, server errors and schema mismatches; the
//!   test fails on any server error or mismatch.
//!
//! The dev chain behind `POST /v1/demo/payments` is a stand-in (no chain runs here):
//! it accepts every payment. Admin routes are exercised without credentials (their
//! 401, 413, 415 and 429 answers); their success bodies are checked by the admin tests.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use async_trait::async_trait;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use ubtc_api::webhooks::WebhookAdmin;
use ubtc_api::{
    public_router, public_routes, serve, ApiState, ClientKey, DemoPaymentError, DemoPaymentReceipt,
    DemoPaymentRequest, DemoPayments, RequestLimiter,
};
use ubtc_core::payment::TxHash;
use ubtc_store::{SqliteStore, Store};

const OPERATOR_KEY: &str = "operator-key-for-openapi-tests";

/// Stand-in for the dev chain of `ubtc demo`: takes every payment.
struct AcceptingDevChain;

#[async_trait]
impl DemoPayments for AcceptingDevChain {
    async fn submit(
        &self,
        req: DemoPaymentRequest,
    ) -> Result<DemoPaymentReceipt, DemoPaymentError> {
        Ok(DemoPaymentReceipt {
            chain: req.chain,
            tx_hash: TxHash::parse("0xfeed").map_err(|e| DemoPaymentError::Other(Box::new(e)))?,
            index: 0,
        })
    }
}

/// Refuses every request, as a limiter whose budget is spent.
struct Exhausted;

#[async_trait]
impl RequestLimiter for Exhausted {
    async fn try_acquire(&self, _: &[ClientKey]) -> Result<(), Duration> {
        Err(Duration::from_millis(1_500))
    }
}

struct App {
    base: String,
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl Drop for App {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

async fn spawn(limiter: Option<Arc<dyn RequestLimiter>>) -> Result<App> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir()?;
    let store =
        SqliteStore::connect(&format!("sqlite:{}", dir.path().join("a.db").display()), 2).await?;
    store.migrate().await?;
    let dev = ubtc_api::ChainInfo {
        name: ubtc_core::ChainId::parse("dev")?,
        kind: ubtc_core::ChainKind::Dev,
        native_unit: "dev-units".into(),
        min_payment_base_units: 1_000,
        confirmations: 1,
        payment_address: Some("dev-reserve".into()),
        payment_contract: None,
        token: None,
    };
    let check: ubtc_api::webhooks::TargetCheck =
        Arc::new(|url: &str| ubtc_pipeline::webhook::check_target(url, false));
    let mut state = ApiState::new(Arc::new(store), vec![dev])
        .with_demo(Arc::new(AcceptingDevChain))
        .with_webhook_admin(WebhookAdmin::new(OPERATOR_KEY, check).context("admin")?);
    if let Some(l) = limiter {
        state = state.with_rate_limiter(l);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, public_router(state), shutdown.clone()));
    Ok(App {
        base: format!("http://{addr}"),
        addr,
        shutdown,
        _dir: dir,
    })
}

async fn document(app: &App) -> Result<Value> {
    Ok(reqwest::get(format!("{}/openapi.json", app.base))
        .await?
        .json()
        .await?)
}

/// Checks answers against the document: status documented for the operation, body
/// valid against that status's schema, `x-request-id` present.
struct Checker {
    doc: Value,
    validators: BTreeMap<String, jsonschema::Validator>,
}

impl Checker {
    fn new(doc: Value) -> Self {
        Self {
            doc,
            validators: BTreeMap::new(),
        }
    }

    fn operation(&self, method: &str, path: &str) -> Result<&Value> {
        let op = &self.doc["paths"][path][method.to_ascii_lowercase()];
        anyhow::ensure!(op.is_object(), "{method} {path} is not in the document");
        Ok(op)
    }

    /// `Err` describes a mismatch between the answer and the document.
    fn check(
        &mut self,
        method: &str,
        path: &str,
        status: u16,
        request_id: Option<&str>,
        body: &[u8],
    ) -> Result<()> {
        anyhow::ensure!(
            request_id.is_some(),
            "{method} {path} {status}: no x-request-id"
        );
        let op = self.operation(method, path)?.clone();
        let response = &op["responses"][status.to_string()];
        anyhow::ensure!(
            response.is_object(),
            "{method} {path}: status {status} is not documented ({})",
            String::from_utf8_lossy(body)
        );
        let Some(schema) = response.pointer("/content/application~1json/schema") else {
            anyhow::ensure!(
                body.is_empty(),
                "{method} {path} {status}: undocumented body"
            );
            return Ok(());
        };
        let instance: Value = serde_json::from_slice(body)
            .with_context(|| format!("{method} {path} {status}: body is not JSON"))?;
        let key = format!("{method} {path} {status}");
        if !self.validators.contains_key(&key) {
            let mut root = schema.clone();
            if let Some(obj) = root.as_object_mut() {
                obj.insert("components".into(), strict(&self.doc["components"]));
            }
            let validator = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&root)
                .map_err(|e| anyhow::anyhow!("{key}: schema does not compile: {e}"))?;
            self.validators.insert(key.clone(), validator);
        }
        let validator = &self.validators[&key];
        let errors: Vec<String> = validator
            .iter_errors(&instance)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        anyhow::ensure!(errors.is_empty(), "{key}: {errors:?} in {instance}");
        if status >= 400 {
            let code = instance["error"]["code"].as_str().unwrap_or_default();
            let documented = response["description"].as_str().unwrap_or_default();
            anyhow::ensure!(
                documented.contains(code),
                "{key}: code {code} not named in {documented:?}"
            );
        }
        Ok(())
    }
}

/// The components with every plain object schema closed (`additionalProperties:
/// false`), so a field the server sends but the document lacks is a mismatch. Schemas
/// that are parts of an `allOf` stay open (each part sees only its own fields).
fn strict(components: &Value) -> Value {
    let mut components = components.clone();
    let mut in_all_of = Vec::new();
    if let Some(schemas) = components["schemas"].as_object() {
        for schema in schemas.values() {
            if let Some(parts) = schema["allOf"].as_array() {
                for part in parts {
                    if let Some(r) = part["$ref"].as_str() {
                        in_all_of.push(r.trim_start_matches("#/components/schemas/").to_owned());
                    }
                }
            }
        }
    }
    if let Some(schemas) = components["schemas"].as_object_mut() {
        for (name, schema) in schemas.iter_mut() {
            if !in_all_of.contains(name) {
                close(schema);
            }
        }
    }
    components
}

fn close(schema: &mut Value) {
    match schema {
        Value::Object(obj) => {
            if obj.contains_key("allOf") {
                return;
            }
            if obj.contains_key("properties") && !obj.contains_key("additionalProperties") {
                obj.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (k, v) in obj.iter_mut() {
                if k != "example" && k != "examples" {
                    close(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close),
        _ => {}
    }
}

/// A raw HTTP/1.1 exchange (for bodies reqwest would not send as asked): status,
/// `x-request-id` and body of the answer.
async fn raw(app: &App, request: &[u8]) -> Result<(u16, Option<String>, Vec<u8>)> {
    let mut stream = tokio::net::TcpStream::connect(app.addr).await?;
    stream.write_all(request).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await??;
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no head")?;
    let head = String::from_utf8_lossy(&out[..end]).to_string();
    let status = head.split(' ').nth(1).context("status")?.parse::<u16>()?;
    let request_id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-request-id: ").map(str::to_owned));
    let mut body = out[end + 4..].to_vec();
    // Chunked answers (axum streams some bodies): one chunk is enough for errors.
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let text = String::from_utf8_lossy(&body).to_string();
        let mut parts = text.splitn(2, "\r\n");
        let len = usize::from_str_radix(parts.next().unwrap_or("0").trim(), 16).unwrap_or(0);
        body = parts.next().unwrap_or("").as_bytes()[..len].to_vec();
    }
    Ok((status, request_id, body))
}

/// A concrete path for a template (`{id}` filled with a fresh UUID).
fn concrete(path: &str) -> String {
    let mut out = String::new();
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..]
            .find('}')
            .map_or(rest.len(), |e| start + e + 1);
        out.push_str(&uuid::Uuid::new_v4().to_string());
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

fn auth_header(path: &str) -> &'static str {
    if path.starts_with("/v1/webhooks") {
        "authorization: Bearer operator-key-for-openapi-tests\r\n"
    } else {
        ""
    }
}

#[tokio::test]
async fn the_shared_answers_of_every_operation_are_given_and_documented() -> Result<()> {
    let limited = spawn(Some(Arc::new(Exhausted))).await?;
    let open = spawn(None).await?;
    let mut checker = Checker::new(document(&open).await?);
    let mut covered = 0;
    for route in public_routes(true) {
        let method = route.method.as_str();
        let path = concrete(route.path);
        let auth = auth_header(route.path);
        let op = checker.operation(method, route.path)?.clone();
        let json_body = op
            .pointer("/requestBody/content/application~1json")
            .is_some();
        let documented = |status: &str| op["responses"][status].is_object();

        // 429 exactly where the document says so.
        let (status, id, body) = raw(
            &limited,
            format!("{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        assert_eq!(
            status == 429,
            documented("429"),
            "{method} {path}: {status}"
        );
        checker.check(method, route.path, status, id.as_deref(), &body)?;

        // 413 at once for a declared oversized body, on every operation.
        let (status, id, body) = raw(
            &open,
            format!(
                "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: application/json\r\n\
                 content-length: 99999999\r\nconnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
        assert_eq!(status, 413, "{method} {path}");
        checker.check(method, route.path, status, id.as_deref(), &body)?;

        // 415 on a JSON body sent as something else, where credentials do not stop
        // the request first.
        if json_body {
            let (status, id, body) = raw(
                &open,
                format!(
                    "{method} {path} HTTP/1.1\r\nhost: x\r\n{auth}content-type: text/plain\r\n\
                     content-length: 2\r\nconnection: close\r\n\r\n{{}}"
                )
                .as_bytes(),
            )
            .await?;
            assert!(documented("415"), "{method} {path}");
            assert!(
                status == 415 || status == 401 || status == 403,
                "{method} {path}: {status}"
            );
            checker.check(method, route.path, status, id.as_deref(), &body)?;
        }
        covered += 1;
    }
    assert!(covered >= 39, "{covered} operations");
    Ok(())
}

/// A value for a parameter or field: valid, borderline or garbage.
fn fuzz_value(rng: &mut impl Rng, schema: &Value) -> Value {
    const WORDS: &[&str] = &[
        "",
        "0",
        "-1",
        "1",
        "500",
        "501",
        "99999999999999999999",
        "dev",
        "ethereum",
        "queued",
        "signed",
        "bogus",
        "0xfeed",
        "null",
        "true",
        "%FF",
        "a b",
        "\u{00e9}",
        "../..",
        "'--",
        "2026-01-01T00:00:00Z",
        "1h",
        "1d",
        "validation.signed",
    ];
    match rng.gen_range(0..10) {
        0..=3 => {
            if let Some(options) = schema["enum"].as_array() {
                return options[rng.gen_range(0..options.len())].clone();
            }
            match schema["type"].as_str() {
                Some("integer") => json!(rng.gen_range(-2..600)),
                Some("boolean") => json!(rng.gen_bool(0.5)),
                Some("array") => json!([fuzz_value(rng, &schema["items"])]),
                _ if schema["format"] == "uuid" => json!(uuid::Uuid::new_v4().to_string()),
                _ => json!(WORDS[rng.gen_range(0..WORDS.len())]),
            }
        }
        4..=7 => json!(WORDS[rng.gen_range(0..WORDS.len())]),
        8 => json!(rng.gen_range(i64::MIN..i64::MAX)),
        _ => {
            let len = rng.gen_range(1..40);
            json!((0..len)
                .map(|_| char::from(rng.gen_range(0x20u8..0x7f)))
                .collect::<String>())
        }
    }
}

fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => doc.pointer(&r.replacen('#', "", 1)).unwrap_or(&Value::Null),
        None => schema,
    }
}

fn fuzz_body(rng: &mut impl Rng, doc: &Value, schema: &Value) -> Vec<u8> {
    let schema = resolve(doc, schema);
    match rng.gen_range(0..10) {
        0 => b"{".to_vec(),
        1 => b"[]".to_vec(),
        2 => b"\"text\"".to_vec(),
        _ => {
            let mut body = Map::new();
            if let Some(props) = schema["properties"].as_object() {
                for (name, prop) in props {
                    if rng.gen_bool(0.85) {
                        body.insert(name.clone(), fuzz_value(rng, resolve(doc, prop)));
                    }
                }
            }
            if rng.gen_bool(0.1) {
                body.insert("unexpected".into(), json!(1));
            }
            serde_json::to_vec(&Value::Object(body)).unwrap_or_default()
        }
    }
}

fn encode(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Examples per operation in the fuzz run.
const EXAMPLES_PER_OPERATION: usize = 60;

#[tokio::test]
async fn bounded_fuzz_run_over_every_operation_finds_no_server_error_or_mismatch() -> Result<()> {
    let app = spawn(None).await?;
    let doc = document(&app).await?;
    let mut checker = Checker::new(doc.clone());
    let client = reqwest::Client::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let (mut operations, mut examples, mut server_errors) = (0, 0, 0);
    let mut mismatches = Vec::new();
    for route in public_routes(true) {
        let method = route.method.as_str();
        let op = checker.operation(method, route.path)?.clone();
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        operations += 1;
        for _ in 0..EXAMPLES_PER_OPERATION {
            // Path parameters: a UUID, or anything that stays one path segment.
            let mut path = route.path.to_owned();
            for p in params.iter().filter(|p| p["in"] == "path") {
                let name = p["name"].as_str().unwrap_or_default();
                let value = if rng.gen_bool(0.5) {
                    uuid::Uuid::new_v4().to_string()
                } else {
                    encode(&fuzz_value(&mut rng, &p["schema"]))
                };
                let value = if value.is_empty() { "x".into() } else { value };
                path = path.replace(&format!("{{{name}}}"), &value);
            }
            let mut query = Vec::new();
            for p in params.iter().filter(|p| p["in"] == "query") {
                if rng.gen_bool(0.4) {
                    query.push(format!(
                        "{}={}",
                        p["name"].as_str().unwrap_or_default(),
                        encode(&fuzz_value(&mut rng, &p["schema"]))
                    ));
                }
            }
            if rng.gen_bool(0.05) {
                query.push("unknown=1".into());
            }
            let mut url = format!("{}{path}", app.base);
            if !query.is_empty() {
                url = format!("{url}?{}", query.join("&"));
            }
            let mut req = client.request(route.method.clone(), url.clone());
            if route.path.starts_with("/v1/webhooks") && rng.gen_bool(0.8) {
                req = req.bearer_auth(OPERATOR_KEY);
            }
            if let Some(schema) = op.pointer("/requestBody/content/application~1json/schema") {
                req = req
                    .header("content-type", "application/json")
                    .body(fuzz_body(&mut rng, &doc, schema));
            }
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let request_id = resp
                .headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = resp.bytes().await?;
            examples += 1;
            if status >= 500 {
                server_errors += 1;
            }
            if let Err(e) = checker.check(method, route.path, status, request_id.as_deref(), &body)
            {
                mismatches.push(format!("{method} {url}: {e}"));
            }
        }
    }
    println!(
        "fuzz: {operations} operations, {examples} examples, {server_errors} server errors, {} schema mismatches",
        mismatches.len()
    );
    assert_eq!(server_errors, 0, "{mismatches:#?}");
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    assert!(operations >= 39);
    Ok(())
}
