//! Test harness: a real anvil node (from the npm package `@foundry-rs/anvil`, installed
//! with `npm ci --prefix tools/anvil`) on a free port, the contracts of `contracts/`
//! deployed from anvil's unlocked dev accounts, and a SQLite store for the monitor.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use ubtc_chains::evm::abi::{self, Encoder};
use ubtc_chains::evm::{EvmAdapter, EvmConfig, RetryPolicy, RpcClient};
use ubtc_core::ChainId;
use ubtc_pipeline::{ChainPolicy, Monitor, MonitorTick, Unlimited};
use ubtc_store::Store;

pub const ANVIL_CHAIN_ID: u64 = 31337;
pub const INSTALL_HINT: &str = "npm ci --prefix tools/anvil";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The anvil binary shipped inside the npm package for this platform.
pub fn anvil_binary() -> PathBuf {
    if let Ok(p) = std::env::var("UBTC_ANVIL") {
        return PathBuf::from(p);
    }
    let scope = repo_root().join("tools/anvil/node_modules/@foundry-rs");
    let found = std::fs::read_dir(&scope).ok().and_then(|dir| {
        dir.flatten()
            .map(|e| e.path().join("bin/anvil"))
            .find(|p| p.is_file())
    });
    match found {
        Some(p) => p,
        None => panic!(
            "anvil not found under {}: install it with `{INSTALL_HINT}` from the repository root",
            scope.display()
        ),
    }
}

/// A running anvil; killed on drop.
pub struct Anvil {
    child: Child,
    pub url: String,
    pub rpc: RpcClient,
    automine: std::sync::atomic::AtomicBool,
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
        timeout: Duration::from_secs(5),
    }
}

impl Anvil {
    pub async fn start() -> Result<Self> {
        let bin = anvil_binary();
        // Another process may take the port between probe and bind: try a few.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new(&bin)
                .args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--chain-id",
                    &ANVIL_CHAIN_ID.to_string(),
                    "--silent",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("spawning {}", bin.display()))?;
            let url = format!("http://127.0.0.1:{port}");
            let mut anvil = Anvil {
                child,
                url: url.clone(),
                rpc: RpcClient::new(&url, fast_retry())?,
                automine: true.into(),
            };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = anvil.child.try_wait() {
                    break; // exited: port taken, try another
                }
                if anvil
                    .rpc
                    .call::<String>("eth_chainId", json!([]))
                    .await
                    .is_ok()
                {
                    return Ok(anvil);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        bail!("anvil did not start")
    }

    pub async fn call(&self, method: &str, params: Value) -> Result<Value> {
        Ok(self.rpc.call(method, params).await?)
    }

    pub async fn accounts(&self) -> Result<Vec<String>> {
        Ok(self.rpc.call("eth_accounts", json!([])).await?)
    }

    pub async fn block_number(&self) -> Result<u64> {
        let n: String = self.rpc.call("eth_blockNumber", json!([])).await?;
        Ok(abi::quantity_u64(&n)?)
    }

    /// Sends a transaction from an unlocked account; returns its hash once it is mined
    /// (at once when automine is off).
    pub async fn send(
        &self,
        from: &str,
        to: Option<&str>,
        value_wei: u128,
        data: &[u8],
    ) -> Result<String> {
        let mut tx = json!({
            "from": from,
            "value": format!("0x{value_wei:x}"),
            "data": format!("0x{}", hex::encode(data)),
            "gas": "0x7a1200",
        });
        if let Some(to) = to {
            tx["to"] = json!(to);
        }
        let hash: String = self.rpc.call("eth_sendTransaction", json!([tx])).await?;
        if self.automine.load(std::sync::atomic::Ordering::SeqCst) {
            self.receipt(&hash).await?;
        }
        Ok(hash)
    }

    /// Signs a transaction with an unlocked account without sending it
    /// (`eth_signTransaction`): the raw bytes can be broadcast again after a reorg.
    pub async fn sign(&self, from: &str, to: &str, value_wei: u128, data: &[u8]) -> Result<String> {
        let tx = json!({
            "from": from,
            "to": to,
            "value": format!("0x{value_wei:x}"),
            "data": format!("0x{}", hex::encode(data)),
            "gas": "0x7a1200",
        });
        Ok(self.rpc.call("eth_signTransaction", json!([tx])).await?)
    }

    /// Broadcasts a raw signed transaction; returns its hash once it is mined (at once
    /// when automine is off).
    pub async fn send_raw(&self, raw: &str) -> Result<String> {
        let hash: String = self
            .rpc
            .call("eth_sendRawTransaction", json!([raw]))
            .await?;
        if self.automine.load(std::sync::atomic::Ordering::SeqCst) {
            self.receipt(&hash).await?;
        }
        Ok(hash)
    }

    pub async fn receipt(&self, tx: &str) -> Result<Value> {
        // Anvil mines an automined transaction just after answering the send.
        for _ in 0..100 {
            let r: Value = self
                .rpc
                .call("eth_getTransactionReceipt", json!([tx]))
                .await?;
            if !r.is_null() {
                return Ok(r);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bail!("no receipt for {tx}")
    }

    pub async fn deploy(&self, from: &str, artifact: &str, args: Vec<u8>) -> Result<String> {
        let path = repo_root()
            .join("contracts/artifacts")
            .join(format!("{artifact}.json"));
        let json: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
        let mut code = abi::decode_hex(json["bytecode"].as_str().context("bytecode")?)?;
        code.extend(args);
        let tx = self.send(from, None, 0, &code).await?;
        let r = self.receipt(&tx).await?;
        if r["status"] != "0x1" {
            bail!("deploying {artifact} failed: {r}");
        }
        Ok(r["contractAddress"]
            .as_str()
            .context("contractAddress")?
            .to_owned())
    }

    pub async fn mine(&self, blocks: u64) -> Result<()> {
        self.call("anvil_mine", json!([format!("0x{blocks:x}")]))
            .await?;
        Ok(())
    }

    pub async fn automine(&self, on: bool) -> Result<()> {
        self.call("evm_setAutomine", json!([on])).await?;
        self.automine.store(on, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    pub async fn snapshot(&self) -> Result<String> {
        Ok(self.rpc.call("evm_snapshot", json!([])).await?)
    }

    pub async fn revert(&self, id: &str) -> Result<()> {
        let ok: bool = self.rpc.call("evm_revert", json!([id])).await?;
        if !ok {
            bail!("evm_revert {id} refused");
        }
        Ok(())
    }
}

pub fn request_validation(message: &[u8]) -> Vec<u8> {
    Encoder::new()
        .bytes(message)
        .call("requestValidation(string)")
}

/// Anvil with the router deployed; account 8 takes plain transfers, 9 is the treasury.
pub struct Deployed {
    pub anvil: Anvil,
    pub accounts: Vec<String>,
    pub router: String,
    pub payment_address: String,
    pub deployed_at: u64,
}

impl Deployed {
    pub async fn start() -> Result<Self> {
        let anvil = Anvil::start().await?;
        let accounts = anvil.accounts().await?;
        let treasury = accounts[9].clone();
        let router = anvil
            .deploy(
                &accounts[0],
                "PaymentRouter",
                Encoder::new().address(&treasury)?.finish(),
            )
            .await?;
        let deployed_at = anvil.block_number().await?;
        Ok(Self {
            anvil,
            payment_address: accounts[8].clone(),
            accounts,
            router,
            deployed_at,
        })
    }

    pub fn config(&self, confirmations: u64) -> EvmConfig {
        let mut c = EvmConfig::new(chain(), ANVIL_CHAIN_ID, &self.anvil.url);
        c.payment_contract = Some(self.router.clone());
        c.payment_address = Some(self.payment_address.clone());
        c.confirmations = confirmations;
        c.start_block = self.deployed_at;
        c.retry = fast_retry();
        c
    }

    pub async fn pay_contract(
        &self,
        from: usize,
        amount_wei: u128,
        message: &[u8],
    ) -> Result<String> {
        self.anvil
            .send(
                &self.accounts[from],
                Some(&self.router),
                amount_wei,
                &request_validation(message),
            )
            .await
    }

    /// A contract payment signed but not sent (see [`Anvil::sign`]).
    pub async fn sign_contract_payment(
        &self,
        from: usize,
        amount_wei: u128,
        message: &[u8],
    ) -> Result<String> {
        self.anvil
            .sign(
                &self.accounts[from],
                &self.router,
                amount_wei,
                &request_validation(message),
            )
            .await
    }

    pub async fn pay_plain(&self, from: usize, amount_wei: u128, message: &[u8]) -> Result<String> {
        self.anvil
            .send(
                &self.accounts[from],
                Some(&self.payment_address),
                amount_wei,
                message,
            )
            .await
    }
}

pub fn chain() -> ChainId {
    ChainId::parse("anvil").expect("chain name")
}

pub async fn sqlite_store(dir: &Path) -> Result<Arc<dyn Store>> {
    let url = format!("sqlite:{}", dir.join("ubtc.db").display());
    let store = ubtc_store::connect(&url, 4).await?;
    store.migrate().await?;
    Ok(store)
}

pub fn monitor(
    adapter: Arc<EvmAdapter>,
    store: Arc<dyn Store>,
    min_wei: u128,
    max_blocks: u64,
) -> Monitor {
    Monitor::new(
        adapter,
        store,
        Arc::new(Unlimited),
        ChainPolicy {
            min_payment_base_units: min_wei,
            scan_max_blocks: max_blocks,
        },
    )
}

/// Ticks until a tick does nothing; returns the sum of what the ticks did.
pub async fn tick_until_idle(m: &Monitor) -> Result<MonitorTick> {
    use ubtc_pipeline::StepOutcome;
    let mut total = MonitorTick::default();
    for _ in 0..1000 {
        let t = m.tick().await?;
        if t.is_idle() {
            return Ok(total);
        }
        total.detected += t.detected;
        total.already_known += t.already_known;
        total.remined += t.remined;
        total.queued += t.queued;
        total.delayed += t.delayed;
        total.rejected += t.rejected;
        total.dropped += t.dropped;
        total.reorg |= t.reorg;
        total.blocks_advanced |= t.blocks_advanced;
    }
    bail!("monitor never went idle")
}

/// A JSON-RPC proxy in front of anvil that misbehaves on purpose: request `n` (from 0)
/// gets HTTP 503 when `n % 7 == 1`, and is held for `stall` (past the client's timeout)
/// when `n % 11 == 5`; the rest are forwarded.
pub struct FaultyProxy {
    pub url: String,
    pub requests: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultyProxy {
    pub async fn start(upstream: &str, stall: Duration) -> Result<Self> {
        use axum::extract::State;
        use axum::http::StatusCode;
        use axum::response::IntoResponse;
        use std::sync::atomic::{AtomicU64, Ordering};

        #[derive(Clone)]
        struct Proxy {
            upstream: String,
            client: reqwest::Client,
            n: Arc<AtomicU64>,
            stall: Duration,
        }
        async fn forward(
            State(p): State<Proxy>,
            body: axum::body::Bytes,
        ) -> axum::response::Response {
            let n = p.n.fetch_add(1, Ordering::SeqCst);
            if n % 7 == 1 {
                return (StatusCode::SERVICE_UNAVAILABLE, "try later").into_response();
            }
            if n % 11 == 5 {
                tokio::time::sleep(p.stall).await;
            }
            let answer = p
                .client
                .post(&p.upstream)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await;
            match answer {
                Ok(r) => match r.bytes().await {
                    Ok(b) => ([("content-type", "application/json")], b).into_response(),
                    Err(_) => StatusCode::BAD_GATEWAY.into_response(),
                },
                Err(_) => StatusCode::BAD_GATEWAY.into_response(),
            }
        }
        let requests = Arc::new(AtomicU64::new(0));
        let state = Proxy {
            upstream: upstream.to_owned(),
            client: reqwest::Client::new(),
            n: requests.clone(),
            stall,
        };
        let app = axum::Router::new()
            .route("/", axum::routing::post(forward))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            requests,
            task,
        })
    }
}
