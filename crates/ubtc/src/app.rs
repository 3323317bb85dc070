//! Wiring: builds the services named by the configuration and runs them until
//! shutdown. No business logic lives here.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use async_trait::async_trait;
use bitcoin::secp256k1::SecretKey;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use ubtc_api::{
    ApiState, ChainInfo, DemoPaymentError, DemoPaymentReceipt, DemoPaymentRequest, DemoPayments,
};
use ubtc_chains::dev::{DevBitcoin, DevChain};
use ubtc_chains::evm::{EvmAdapter, EvmConfig};
use ubtc_chains::solana::{Commitment, SolanaAdapter, SolanaConfig};
use ubtc_chains::{BitcoinBackend, ChainAdapter};
use ubtc_core::bundle::BitcoinNetwork;
use ubtc_core::payment::Payer;
use ubtc_core::{ChainId, Timestamp};
use ubtc_pipeline::{ChainPolicy, LocalKeySigner, Monitor, ReserveSigner, Worker, WorkerConfig};
use ubtc_store::{NewReserveAddress, Store};

use crate::config::{ChainConfig, ChainSource, Config, SignerKind};

pub fn network(n: BitcoinNetwork) -> bitcoin::Network {
    match n {
        BitcoinNetwork::Bitcoin => bitcoin::Network::Bitcoin,
        BitcoinNetwork::Testnet => bitcoin::Network::Testnet,
        BitcoinNetwork::Testnet4 => bitcoin::Network::Testnet4,
        BitcoinNetwork::Signet => bitcoin::Network::Signet,
        BitcoinNetwork::Regtest => bitcoin::Network::Regtest,
    }
}

/// Opens the configured database and applies migrations.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let url = config.database_url();
    if url.expose().starts_with("sqlite:") {
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
    }
    let store = ubtc_store::connect(url.expose(), config.database.max_connections)
        .await
        .context("cannot open the database")?;
    store
        .migrate()
        .await
        .context("cannot migrate the database")?;
    Ok(store)
}

/// Reads the local reserve key; creates it (mode 0600) when `create` and it is missing.
pub fn load_reserve_key(path: &Path, create: bool) -> anyhow::Result<SecretKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim())
                .with_context(|| format!("reserve key file {} is not hex", path.display()))?;
            SecretKey::from_slice(&bytes)
                .with_context(|| format!("reserve key file {} holds no valid key", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let key = SecretKey::new(&mut rand::thread_rng());
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            write_private(path, &hex::encode(key.secret_bytes()))?;
            tracing::info!(path = %path.display(), "created a new local reserve key");
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!(
                "reserve key file {} does not exist; create it with `ubtc keys local-init`",
                path.display()
            )
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot read reserve key file {}", path.display()))
        }
    }
}

pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut f = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// The local signer, with its reserve address registered in the store.
pub async fn local_signer(
    config: &Config,
    store: &dyn Store,
    create_key: bool,
) -> anyhow::Result<Arc<LocalKeySigner>> {
    let key = load_reserve_key(&config.key_file(), create_key)?;
    let signer = Arc::new(LocalKeySigner::new(key, network(config.bitcoin.network)));
    store
        .add_reserve_address(
            &NewReserveAddress {
                address: signer.address().to_string(),
                descriptor: signer.descriptor().to_owned(),
                kind: "p2wpkh".into(),
                label: Some("local reserve key".into()),
            },
            Timestamp::now(),
        )
        .await
        .context("cannot register the reserve address")?;
    Ok(signer)
}

/// `signer.kind = "guardians"`: the coordinator over the configured guardians, with
/// its `wsh(sortedmulti(threshold, keys))` address registered in the store as an
/// active reserve address (as `ubtc keys reserve-create` does).
pub async fn guardian_signer(
    config: &Config,
    store: &dyn Store,
) -> anyhow::Result<Arc<ubtc_guardian::Coordinator>> {
    use ubtc_guardian::keystore;
    let s = &config.signer;
    let keys = config.guardian_keys()?;
    let file = (!s.coordinator_passphrase_file.as_os_str().is_empty())
        .then_some(s.coordinator_passphrase_file.as_path());
    let env =
        (!s.coordinator_passphrase_env.is_empty()).then_some(s.coordinator_passphrase_env.as_str());
    let pass = keystore::passphrase_from(file, env).with_context(|| {
        format!(
            "no passphrase for the coordinator keystore: set signer.coordinator_passphrase_file or the {} variable",
            s.coordinator_passphrase_env
        )
    })?;
    let key = keystore::load(&s.coordinator_keystore, &pass)
        .with_context(|| format!("coordinator keystore {}", s.coordinator_keystore.display()))?;
    let endpoints = s
        .guardians
        .iter()
        .zip(&keys)
        .enumerate()
        .map(|(i, (g, k))| ubtc_guardian::GuardianEndpoint {
            name: g.name.clone().unwrap_or_else(|| format!("g{}", i + 1)),
            url: g.url.trim_end_matches('/').to_owned(),
            key: k.0,
        })
        .collect();
    let threshold = s.threshold as usize;
    let net = network(config.bitcoin.network);
    let coordinator = ubtc_guardian::Coordinator::new(
        key,
        endpoints,
        threshold,
        ubtc_guardian::CoordinatorSettings {
            network: net,
            timeout: Duration::from_millis(s.timeout_ms),
            request_ttl: Duration::from_secs(s.request_ttl_secs),
        },
    )?;
    let (address, _) = crate::guardian_cmd::register_reserve(
        store,
        net,
        threshold,
        keys,
        Some(format!("guardians {threshold}-of-{}", s.guardians.len())),
    )
    .await?;
    anyhow::ensure!(
        address == coordinator.address(),
        "the registered reserve address {address} is not the coordinator's {}",
        coordinator.address()
    );
    // Registering is a no-op for a known address, so a retired one stays retired: it
    // is not signed for again.
    let active = store
        .list_reserve_addresses()
        .await
        .context("cannot list reserve addresses")?;
    anyhow::ensure!(
        active.iter().any(|r| r.address == address),
        "reserve address {address} (signer.threshold and signer.guardians) was retired; \
         configure the guardians of an active reserve address"
    );
    tracing::info!(
        address = %address,
        threshold,
        guardians = s.guardians.len(),
        coordinator_key = %coordinator.coordinator_key(),
        "signing through guardians"
    );
    Ok(Arc::new(coordinator))
}

/// What `ubtc worker` signs with (`signer.kind`), and the dev Bitcoin backend with
/// that reserve address funded.
pub struct WorkerSigner {
    pub signer: Arc<dyn ReserveSigner>,
    pub bitcoin: Arc<DevBitcoin>,
    /// `guardians`: the coordinator, for `GET /v1/guardians`.
    pub guardians: Option<Arc<ubtc_guardian::Coordinator>>,
}

pub async fn worker_signer(config: &Config, store: &dyn Store) -> anyhow::Result<WorkerSigner> {
    if config.signer.kind == SignerKind::Guardians {
        let coordinator = guardian_signer(config, store).await?;
        let address = coordinator
            .address()
            .parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>()?
            .assume_checked();
        return Ok(WorkerSigner {
            signer: coordinator.clone(),
            bitcoin: dev_bitcoin_funding(config, &address),
            guardians: Some(coordinator),
        });
    }
    let signer = local_signer(config, store, false).await?;
    Ok(WorkerSigner {
        bitcoin: dev_bitcoin(config, &signer).await,
        signer,
        guardians: None,
    })
}

pub fn chain_infos(config: &Config) -> anyhow::Result<Vec<ChainInfo>> {
    config
        .chains
        .iter()
        .map(|c| {
            Ok(ChainInfo {
                name: c.name.clone(),
                kind: c.kind(),
                native_unit: c.kind().native_unit().to_owned(),
                min_payment_base_units: config.min_payment(c)?,
                confirmations: c.confirmations,
                payment_address: c.payment_address().map(str::to_owned),
                payment_contract: c.payment_contract().map(str::to_owned),
                token: c.token_contract().map(|address| ubtc_api::TokenInfo {
                    address: address.to_owned(),
                    symbol: "uBTC".into(),
                    decimals: ubtc_chains::evm::TOKEN_DECIMALS,
                }),
            })
        })
        .collect()
}

pub fn worker_config(config: &Config, worker_id: String) -> WorkerConfig {
    WorkerConfig {
        worker_id,
        lease_ms: (config.pipeline.lease_secs * 1000) as i64,
        max_attempts: config.pipeline.max_attempts,
        backoff_base_ms: config.pipeline.backoff_base_ms as i64,
        backoff_max_ms: (config.pipeline.backoff_max_secs * 1000) as i64,
        network: config.bitcoin.network,
        native_units: config
            .chains
            .iter()
            .map(|c| (c.name.clone(), c.kind().native_unit().to_owned()))
            .collect(),
    }
}

/// The chains this process monitors, with the dev chains kept for the demo hook.
pub struct Chains {
    pub adapters: Vec<(Arc<dyn ChainAdapter>, ChainPolicy, ChainConfig)>,
    pub dev: HashMap<ChainId, (DevChain, u128)>,
    /// EVM adapters, checked against their node when their monitor starts.
    pub evm: HashMap<ChainId, Arc<EvmAdapter>>,
    /// Solana adapters (their supply source too, when a mint is configured).
    pub solana: HashMap<ChainId, Arc<SolanaAdapter>>,
}

pub fn build_chains(config: &Config) -> anyhow::Result<Chains> {
    let mut chains = Chains {
        adapters: Vec::new(),
        dev: HashMap::new(),
        evm: HashMap::new(),
        solana: HashMap::new(),
    };
    for c in &config.chains {
        let min = config.min_payment(c)?;
        let policy = ChainPolicy {
            min_payment_base_units: min,
            scan_max_blocks: c.scan_max_blocks,
        };
        match &c.source {
            ChainSource::Evm(e) => {
                let mut evm = EvmConfig::new(c.name.clone(), e.chain_id, e.rpc_url.expose());
                evm.payment_contract = e.payment_contract.clone();
                evm.payment_address = e.payment_address.clone();
                evm.token_contract = e.token_contract.clone();
                evm.confirmations = c.confirmations;
                evm.start_block = e.start_block;
                let adapter =
                    Arc::new(EvmAdapter::new(evm).with_context(|| format!("chain {}", c.name))?);
                chains.evm.insert(c.name.clone(), adapter.clone());
                chains.adapters.push((adapter, policy, c.clone()));
            }
            ChainSource::Solana(s) => {
                let mut solana =
                    SolanaConfig::new(c.name.clone(), s.rpc_url.expose(), &s.payment_address);
                solana.token_mint = s.token_contract.clone();
                solana.start_slot = s.start_block;
                if let Some(commitment) = s.commitment.as_deref() {
                    solana.commitment = Commitment::parse(commitment)
                        .with_context(|| format!("chain {}", c.name))?;
                }
                let adapter = Arc::new(
                    SolanaAdapter::new(solana).with_context(|| format!("chain {}", c.name))?,
                );
                chains.solana.insert(c.name.clone(), adapter.clone());
                chains.adapters.push((adapter, policy, c.clone()));
            }
            ChainSource::Dev(d) => {
                let dev = DevChain::new(c.name.clone(), &d.payment_address, c.confirmations);
                chains.dev.insert(c.name.clone(), (dev.clone(), min));
                chains.adapters.push((Arc::new(dev), policy, c.clone()));
            }
        }
    }
    Ok(chains)
}

/// Starts the monitors (one per chain), the dev miners, and `workers` queue workers.
pub fn spawn_pipeline(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    cancel: &CancellationToken,
    config: &Config,
    store: Arc<dyn Store>,
    signer: Arc<dyn ReserveSigner>,
    bitcoin: Arc<dyn BitcoinBackend>,
    chains: &Chains,
) {
    let poll = Duration::from_millis(config.pipeline.poll_ms);
    let max_backoff = Duration::from_secs(30);
    // Round latency and failures by reason on `/metrics`, whichever signer this is.
    let signer: Arc<dyn ReserveSigner> =
        Arc::new(ubtc_pipeline::metered::MeteredSigner::new(signer));
    // Both are configuration errors caught by `Config::validate`; should one slip
    // through, the process stops with it instead of running unlimited.
    let payment_limits: Arc<dyn ubtc_pipeline::PaymentLimiter> = match limiter(config) {
        Ok(l) => Arc::new(ubtc_limits::PaymentLimits::new(
            l,
            ubtc_limits::Rate::per_minute(
                config.limits.payer_per_minute,
                config.limits.payer_burst,
            ),
            ubtc_limits::Rate::per_minute(
                config.limits.chain_per_minute,
                config.limits.chain_burst,
            ),
        )),
        Err(e) => {
            tasks.spawn(async move { Err(e) });
            return;
        }
    };
    spawn_webhooks(tasks, cancel, config, store.clone(), poll, max_backoff);
    // Each chain's monitor runs in one process at a time: the holder of the lease
    // `monitor:<chain>` in the database (`pipeline.monitor_lease_secs`). This names the
    // process as a holder: host, pid, and a random part against pid reuse.
    let lease_holder = format!(
        "{}:{}:{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into()),
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let monitor_lease = Duration::from_secs(config.pipeline.monitor_lease_secs);
    for (adapter, policy, chain_config) in &chains.adapters {
        let monitor = Arc::new(ubtc_pipeline::LeasedMonitor::new(
            Arc::new(Monitor::new(
                adapter.clone(),
                store.clone(),
                payment_limits.clone(),
                policy.clone(),
            )),
            store.clone(),
            lease_holder.clone(),
            monitor_lease,
        ));
        let monitor_cancel = cancel.clone();
        let name = format!("monitor:{}", chain_config.name);
        let evm = chains.evm.get(&chain_config.name).cloned();
        let poll = match chain_config.poll_ms {
            0 => poll,
            ms => Duration::from_millis(ms),
        };
        tasks.spawn(async move {
            if let Some(evm) = evm {
                // A wrong chain id or contract stops the process; a node that is away
                // is waited for.
                if !check_evm(&evm, &monitor_cancel, max_backoff).await? {
                    return Ok(());
                }
            }
            ubtc_pipeline::run_loop(&name, monitor_cancel, poll, max_backoff, || monitor.tick())
                .await;
            // Shutting down: let a standby take over now rather than at expiry.
            monitor.release().await;
            Ok(())
        });
        if let Some((dev, _)) = chains.dev.get(&chain_config.name) {
            let block_ms = match &chain_config.source {
                ChainSource::Dev(d) => d.dev_block_ms,
                ChainSource::Evm(_) | ChainSource::Solana(_) => 0,
            };
            if block_ms > 0 {
                let dev = dev.clone();
                let cancel = cancel.clone();
                let every = Duration::from_millis(block_ms);
                tasks.spawn(async move {
                    let mut tick = tokio::time::interval(every);
                    loop {
                        tokio::select! {
                            _ = cancel.cancelled() => return Ok(()),
                            _ = tick.tick() => { dev.mine(1); }
                        }
                    }
                });
            }
        }
    }
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    for n in 0..config.pipeline.workers {
        let id = format!("{host}:{}:{n}", std::process::id());
        let worker = Arc::new(Worker::new(
            store.clone(),
            signer.clone(),
            bitcoin.clone(),
            worker_config(config, id),
        ));
        let cancel = cancel.clone();
        let batch = config.pipeline.batch_size;
        tasks.spawn(async move {
            ubtc_pipeline::run_loop("worker", cancel, poll, max_backoff, || {
                worker.tick_batch(batch)
            })
            .await;
            Ok(())
        });
    }
}

/// Checks an EVM adapter against its node, retrying while the node is unavailable.
/// `Ok(false)`: cancelled before the check passed.
async fn check_evm(
    evm: &EvmAdapter,
    cancel: &CancellationToken,
    max_backoff: Duration,
) -> anyhow::Result<bool> {
    let mut backoff = Duration::from_millis(500);
    loop {
        match evm.check().await {
            Ok(()) => return Ok(true),
            Err(e) if e.is_transient() => {
                tracing::warn!(chain = %evm.config().chain, error = %e, "EVM node unavailable at start; retrying");
            }
            Err(e) => return Err(e).context("EVM chain misconfigured"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return Ok(false),
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// The dev Bitcoin backend, with the reserve address funded so the demo has reserves.
pub async fn dev_bitcoin(config: &Config, signer: &LocalKeySigner) -> Arc<DevBitcoin> {
    dev_bitcoin_funding(config, signer.address())
}

/// The dev Bitcoin backend with `address` funded (the guardians' reserve address).
pub fn dev_bitcoin_funding(config: &Config, address: &bitcoin::Address) -> Arc<DevBitcoin> {
    let bitcoin = Arc::new(DevBitcoin::new(config.bitcoin.dev_start_height));
    let spk = hex::encode(address.script_pubkey().as_bytes());
    for amount_sats in [150_000_000u64, 75_000_000, 25_000_000] {
        bitcoin.fund(&address.to_string(), &spk, amount_sats);
    }
    bitcoin
}

/// The demo hook behind `POST /v1/demo/payments`: pays into the in-process dev chain.
pub struct DevPayments {
    pub chains: HashMap<ChainId, (DevChain, u128)>,
}

/// Payer used when a demo payment names none.
pub const DEMO_PAYER: &str = "0xde00000000000000000000000000000000000042";

#[async_trait]
impl DemoPayments for DevPayments {
    async fn submit(
        &self,
        req: DemoPaymentRequest,
    ) -> Result<DemoPaymentReceipt, DemoPaymentError> {
        let Some((chain, min)) = self.chains.get(&req.chain) else {
            return Err(DemoPaymentError::Refused(format!(
                "{} is not a dev chain",
                req.chain
            )));
        };
        let payer = match req.payer {
            Some(p) => p,
            None => Payer::parse(DEMO_PAYER).map_err(|e| DemoPaymentError::Other(Box::new(e)))?,
        };
        let tx_hash =
            chain.submit_payment(&payer, req.amount_base_units.unwrap_or(*min), &req.message);
        Ok(DemoPaymentReceipt {
            chain: req.chain,
            tx_hash,
            index: 0,
        })
    }
}

pub fn api_state(store: Arc<dyn Store>, config: &Config) -> anyhow::Result<ApiState> {
    let limits = ubtc_limits::ClientLimits::new(
        limiter(config)?,
        ubtc_limits::Rate::per_minute(config.limits.api_ip_per_minute, config.limits.api_ip_burst),
        ubtc_limits::Rate::per_minute(
            config.limits.api_key_per_minute,
            config.limits.api_key_burst,
        ),
    );
    let state = ApiState::new(store, chain_infos(config)?)
        .with_limits(config.server.api_limits())
        .with_metrics(ubtc_api::metrics::install_recorder()?)
        .with_rate_limiter(Arc::new(ApiClientLimits(limits)))
        .with_response_cache(Arc::new(ApiResponseCache(response_cache(config)?)));
    let explorer_url = &config.dashboard.explorer_url;
    let state = if explorer_url.is_empty() {
        state
    } else {
        state.with_explorer_url(explorer_url.clone())
    };
    // Consumer URLs are checked at registration as the delivery worker will.
    let allow_private = config.webhooks.allow_private_targets;
    let check: ubtc_api::webhooks::TargetCheck =
        Arc::new(move |url: &str| ubtc_pipeline::webhook::check_target(url, allow_private));
    // Without a bootstrap key the URL check is still needed by operators who log in.
    let state = match ubtc_api::webhooks::WebhookAdmin::new(
        config.webhooks.admin_api_key.expose(),
        check.clone(),
    ) {
        Some(admin) => state.with_webhook_admin(admin),
        None => state.with_webhook_admin(ubtc_api::webhooks::WebhookAdmin::without_key(check)),
    };
    Ok(
        match crate::admin_cmd::admin_auth(config).map_err(anyhow::Error::msg)? {
            Some(auth) => state.with_admin(auth),
            None => state,
        },
    )
}

/// The response cache: shared in Redis (under its own prefix, beside the limits) with
/// a small in-process first layer, or in-process only when no Redis is configured.
///
/// One instance per (database, Redis, prefix) in a process: `ubtc demo` serves the
/// API and takes reserve snapshots in one process, and without Redis only the same
/// instance sees the snapshotter's invalidation.
pub fn response_cache(config: &Config) -> anyhow::Result<Arc<ubtc_limits::ResponseCache>> {
    type Key = (String, String, String);
    type Shared = std::sync::Mutex<HashMap<Key, Arc<ubtc_limits::ResponseCache>>>;
    static SHARED: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    let url = config.limits.redis_url.expose();
    let key = (
        config.database.url.expose().to_owned(),
        url.to_owned(),
        config.limits.redis_prefix.clone(),
    );
    let mut shared = SHARED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(cache) = shared.get(&key) {
        return Ok(cache.clone());
    }
    let cache = Arc::new(if url.is_empty() {
        ubtc_limits::ResponseCache::local_only()
    } else {
        ubtc_limits::ResponseCache::with_redis(
            url,
            format!("{}cache:", config.limits.redis_prefix),
            Duration::from_millis(config.limits.redis_timeout_ms),
        )
        .context("limits.redis_url")?
    });
    shared.insert(key, cache.clone());
    Ok(cache)
}

struct ApiResponseCache(Arc<ubtc_limits::ResponseCache>);

#[async_trait]
impl ubtc_api::ResponseCache for ApiResponseCache {
    async fn get(&self, tag: &'static str, key: &str) -> ubtc_api::cache::CacheLookup {
        match self.0.get(tag, key).await {
            ubtc_limits::Lookup::Hit(b) => ubtc_api::cache::CacheLookup::Hit(b),
            ubtc_limits::Lookup::Miss(g) => ubtc_api::cache::CacheLookup::Miss(g.value()),
        }
    }

    async fn put(&self, key: &str, generation: u64, value: ubtc_api::cache::Bytes, ttl: Duration) {
        self.0.put(key, generation.into(), value, ttl).await
    }
}

/// The configured rate limiter: Redis with a local fallback, or memory only.
pub fn limiter(config: &Config) -> anyhow::Result<Arc<dyn ubtc_limits::Limiter>> {
    let url = config.limits.redis_url.expose();
    if url.is_empty() {
        return Ok(Arc::new(ubtc_limits::MemoryLimiter::new()));
    }
    let redis = ubtc_limits::RedisLimiter::new(
        url,
        config.limits.redis_prefix.clone(),
        Duration::from_millis(config.limits.redis_timeout_ms),
    )
    .context("limits.redis_url")?;
    Ok(Arc::new(ubtc_limits::FallbackLimiter::new(Arc::new(redis))))
}

/// API client keys onto the limits crate (the API depends on a small trait only).
struct ApiClientLimits(ubtc_limits::ClientLimits);

#[async_trait]
impl ubtc_api::RequestLimiter for ApiClientLimits {
    async fn try_acquire(&self, clients: &[ubtc_api::ClientKey]) -> Result<(), Duration> {
        let clients: Vec<ubtc_limits::Client<'_>> = clients
            .iter()
            .map(|c| match c {
                ubtc_api::ClientKey::Ip(ip) => ubtc_limits::Client::Ip(*ip),
                ubtc_api::ClientKey::ApiKey(digest) => ubtc_limits::Client::KeyDigest(digest),
            })
            .collect();
        self.0
            .try_acquire(&clients, Timestamp::now().as_millis())
            .await
    }
}

/// Starts webhook delivery (to consumers always; to callback URLs when
/// `webhooks.secret` is set).
fn spawn_webhooks(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    cancel: &CancellationToken,
    config: &Config,
    store: Arc<dyn Store>,
    poll: Duration,
    max_backoff: Duration,
) {
    let w = &config.webhooks;
    // Always on: registered consumers sign with their own secrets. Without
    // `webhooks.secret`, callback URLs cannot be signed, and their rows go to the dead
    // letter with that reason (a redelivery sends them once a secret is set).
    if w.secret.is_empty() {
        tracing::warn!(
            "webhooks.secret is empty: per-payment callbacks are not sent; consumers are"
        );
    }
    let webhook_config = ubtc_pipeline::WebhookConfig {
        secret: w.secret.expose().as_bytes().to_vec(),
        timeout: Duration::from_millis(w.timeout_ms),
        max_attempts: w.max_attempts,
        backoff_base_ms: w.backoff_base_ms as i64,
        backoff_max_ms: (w.backoff_max_secs * 1000) as i64,
        allow_private_targets: w.allow_private_targets,
    };
    let cancel = cancel.clone();
    tasks.spawn(async move {
        let worker = ubtc_pipeline::WebhookWorker::new(store, webhook_config)?;
        ubtc_pipeline::run_loop("webhooks", cancel, poll, max_backoff, || worker.tick()).await;
        Ok(())
    });
}

/// Waits for Ctrl-C or SIGTERM, then cancels `cancel`.
pub async fn shutdown_signal(cancel: CancellationToken) {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    cancel.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
            _ = cancel.cancelled() => {}
        }
    }
    #[cfg(not(unix))]
    {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = cancel.cancelled() => {}
        }
    }
    tracing::info!("shutting down");
    cancel.cancel();
}

/// Waits for every task; cancels the rest as soon as one fails, and returns the first
/// failure, so `main` exits non-zero when any task died.
pub async fn join_all(
    mut tasks: JoinSet<anyhow::Result<()>>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = match joined {
            Ok(r) => r,
            Err(e) => Err(anyhow::anyhow!("task panicked or was aborted: {e}")),
        };
        if let Err(e) = result {
            tracing::error!(error = %format!("{e:#}"), "task failed; stopping");
            cancel.cancel();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}
