//! Typed configuration: embedded defaults, then a TOML file, then `UBTC_` variables.
//!
//! Every setting has a default that runs the embedded system (SQLite in the data
//! directory, the dev chain, a local reserve key). Validation returns errors; nothing
//! here exits the process. Secrets are wrapped so that `Debug` prints `[redacted]`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use ubtc_core::bundle::BitcoinNetwork;
use ubtc_core::{ChainId, ChainKind};

/// A secret string (a database URL with a password, an API key). Never printed.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the embedded database, the demo keys and other files live.
    pub data_dir: PathBuf,
    pub database: DatabaseConfig,
    pub server: ServerConfig,
    pub bitcoin: BitcoinConfig,
    pub signer: SignerConfig,
    pub pipeline: PipelineSettings,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub webhooks: WebhooksConfig,
    /// Accounts, tokens and the IP allowlist of the admin API (docs/admin.md).
    pub admin: AdminConfig,
    pub reserves: ReservesConfig,
    pub dashboard: DashboardConfig,
    /// Deposits → mints and burns → releases under guardian approval
    /// (docs/reserve-ops.md).
    pub reserve_ops: ReserveOpsConfig,
    pub chains: Vec<ChainConfig>,
}

/// Reserve management (`[reserve_ops]`): off unless `enabled`. Needs `signer.kind =
/// "guardians"` (the guardians approve and sign) and EVM chains with `token_contract`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReserveOpsConfig {
    pub enabled: bool,
    /// The minter key, encrypted like a guardian key (`ubtc keys` keystore format).
    pub minter_keystore: PathBuf,
    /// Variable holding the minter keystore's passphrase.
    pub minter_passphrase_env: String,
    /// Solana chains: the minter's ed25519 seed, encrypted in the same keystore format
    /// (its own file, same passphrase variable). Empty: no Solana minter.
    pub solana_minter_keystore: PathBuf,
    /// Depth a deposit needs before a mint may use it.
    pub deposit_confirmations: u32,
    /// Depth of a mint or burn receipt on its chain.
    pub token_confirmations: u64,
    /// Per chain per UTC day, in sats.
    pub mint_daily_limit_sats: u64,
    pub release_daily_limit_sats: u64,
    pub fee_rate_sat_vb: u64,
    pub poll_ms: u64,
}

impl Default for ReserveOpsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            minter_keystore: PathBuf::new(),
            minter_passphrase_env: "UBTC_MINTER_PASSPHRASE".into(),
            solana_minter_keystore: PathBuf::new(),
            deposit_confirmations: 6,
            token_confirmations: 12,
            mint_daily_limit_sats: 100_000_000,
            release_daily_limit_sats: 100_000_000,
            fee_rate_sat_vb: 10,
            poll_ms: 5_000,
        }
    }
}

/// The public dashboard at `/` (docs/dashboard.md).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Block-explorer link of a reserve address: `{address}` is replaced by the
    /// address, else the address is appended. Empty: addresses are not linked.
    pub explorer_url: String,
}

/// Reserve snapshots (`ubtc worker` and `ubtc demo` take them).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReservesConfig {
    /// Take a snapshot at least this often, even when the Bitcoin tip did not move.
    pub interval_secs: u64,
    /// How often the snapshotter looks for a new Bitcoin tip.
    pub poll_ms: u64,
    /// A snapshot with an input older than this is stale and not healthy; the API also
    /// shows a snapshot stale once it is itself older than this.
    pub max_age_secs: u64,
    /// Healthy while the ratio is at least 1 − tolerance, in parts per million.
    pub tolerance_ppm: u64,
}

impl Default for ReservesConfig {
    fn default() -> Self {
        Self {
            interval_secs: 300,
            poll_ms: 10_000,
            max_age_secs: 7_200,
            tolerance_ppm: 0,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…` or `sqlite:PATH`. Empty: SQLite file `ubtc.db` in `data_dir`.
    pub url: Secret,
    pub max_connections: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// `ubtc worker` only: serve `/metrics` (its own counters) on this address.
    /// Unset: the worker serves nothing.
    pub metrics_listen: Option<SocketAddr>,
    /// The whole request head must arrive within this, counted from when the server
    /// starts waiting for it (docs/operations.md, "Connection limits").
    pub header_read_timeout_ms: u64,
    /// A connection with nothing in flight and no byte moved for this long is closed.
    pub idle_timeout_ms: u64,
    /// Connections served at once by this process; more wait in the accept queue.
    pub max_connections: usize,
    /// From a request's head to its answer, body included; then `503 timeout`.
    pub request_timeout_ms: u64,
    /// Largest request body; a larger declared `content-length` gets 413 at once.
    pub body_limit_bytes: usize,
}

impl ServerConfig {
    pub fn serve_limits(&self) -> ubtc_api::ServeLimits {
        ubtc_api::ServeLimits {
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: std::time::Duration::from_millis(self.idle_timeout_ms),
            max_connections: self.max_connections,
        }
    }

    pub fn api_limits(&self) -> ubtc_api::ApiLimits {
        ubtc_api::ApiLimits {
            body_limit_bytes: self.body_limit_bytes,
            request_timeout: std::time::Duration::from_millis(self.request_timeout_ms),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BitcoinConfig {
    pub network: BitcoinNetwork,
    /// `dev` (in-process), `esplora` (`esplora_url`) or `core` (Bitcoin Core JSON-RPC at
    /// `rpc_url`). `ubtc demo` always uses `dev`.
    pub backend: BitcoinBackendKind,
    /// Height the dev backend starts at.
    pub dev_start_height: u32,
    /// `esplora`: the API base (`https://blockstream.info/api`).
    pub esplora_url: String,
    /// `core`: the node's RPC URL (a secret: it may hold credentials).
    pub rpc_url: Secret,
    /// `core`: RPC user and password (or the cookie's two halves); empty user: none.
    pub rpc_user: String,
    pub rpc_password: Secret,
    /// Per request; for `core` it must cover a whole `scantxoutset`.
    pub timeout_ms: u64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SignerConfig {
    /// `local`: one P2WPKH reserve key in this process. `guardians`: the worker
    /// coordinates M-of-N guardian daemons (docs/guardians.md).
    pub kind: SignerKind,
    /// File holding the local reserve key (64 hex characters). Empty:
    /// `reserve-key.hex` in `data_dir`, created on first start.
    pub key_file: PathBuf,
    /// `guardians`: signatures needed (M of the guardians listed).
    pub threshold: u32,
    /// `guardians`: the guardian daemons and their registered keys. The reserve address
    /// is `wsh(sortedmulti(threshold, keys))`; every answer is checked against the key.
    pub guardians: Vec<GuardianPeerConfig>,
    /// `guardians`: the coordinator's encrypted keystore (`ubtc keys guardian-init`);
    /// guardians accept requests signed by its key.
    pub coordinator_keystore: PathBuf,
    /// File holding the keystore passphrase. Empty: the variable named by
    /// `coordinator_passphrase_env`. Never on the command line.
    pub coordinator_passphrase_file: PathBuf,
    pub coordinator_passphrase_env: String,
    /// Per guardian, per request.
    pub timeout_ms: u64,
    /// Lifetime of a signing request (guardians refuse longer ones than they allow).
    pub request_ttl_secs: u64,
}

/// One guardian as the coordinator knows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianPeerConfig {
    /// Shown in reasons and `/v1/guardians`. Default: `g1`, `g2`, … by position.
    #[serde(default)]
    pub name: Option<String>,
    /// Base URL of the guardian daemon (`http://host:port`).
    pub url: String,
    /// Its registered public key (compressed, 66 hex characters).
    pub public_key: String,
}

/// Default name of the variable holding the coordinator keystore's passphrase.
pub const COORDINATOR_PASSPHRASE_ENV: &str = "UBTC_COORDINATOR_PASSPHRASE";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSettings {
    /// Queue workers (concurrent signing tasks) per `worker` process.
    pub workers: u32,
    pub lease_secs: u64,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_secs: u64,
    /// How long an idle worker or monitor sleeps before looking again.
    pub poll_ms: u64,
    /// Jobs a worker task claims, signs and stores together (one commit per step).
    pub batch_size: u32,
    /// Lease (seconds) under which one process runs each chain's monitor; renewed
    /// every third of it. A dead leader's monitor is taken over once it expires.
    pub monitor_lease_secs: u64,
}

/// `bitcoin.backend`: where reserve balances and UTXOs are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BitcoinBackendKind {
    Dev,
    Esplora,
    Core,
}

impl BitcoinBackendKind {
    pub fn as_str(self) -> &'static str {
        match self {
            BitcoinBackendKind::Dev => "dev",
            BitcoinBackendKind::Esplora => "esplora",
            BitcoinBackendKind::Core => "core",
        }
    }
}

impl fmt::Display for BitcoinBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `signer.kind`: who holds the reserve keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SignerKind {
    Local,
    Guardians,
}

/// `log.format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `text` or `json`.
    pub format: LogFormat,
    /// A tracing filter (`info`, `ubtc=debug,sqlx=warn`, …).
    pub level: String,
}

/// One `[[chains]]` entry: the fields every chain has, and those of its kind.
///
/// The kind's fields live in [`ChainSource`], an enum tagged by `kind`, so a field of
/// another kind is refused when the file is read and every place that builds a chain
/// matches on the kind: a new kind does not compile until each of them handles it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ChainConfig {
    pub name: ChainId,
    /// Smallest accepted payment in the chain's native base unit, as a decimal string.
    pub min_payment: String,
    pub confirmations: u64,
    #[serde(default = "default_scan_max_blocks")]
    pub scan_max_blocks: u64,
    /// How long this chain's monitor sleeps when idle (0: `pipeline.poll_ms`).
    #[serde(default)]
    pub poll_ms: u64,
    // `flatten` cannot be combined with `deny_unknown_fields` on this struct, so unknown
    // keys are refused one level down: every key this struct does not take reaches the
    // kind's struct, and each of those denies the keys it does not know.
    #[serde(flatten)]
    pub source: ChainSource,
}

/// Where a chain's payments come from, by `kind`, each with only its own fields.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ChainSource {
    Evm(EvmChainConfig),
    Solana(SolanaChainConfig),
    Dev(DevChainConfig),
}

/// `kind = "evm"`: Ethereum, Polygon, Arbitrum, BSC.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmChainConfig {
    /// The JSON-RPC endpoint (it may hold a provider key, so it is a secret).
    pub rpc_url: Secret,
    /// The EIP-155 chain id the node must report; a mismatch stops the start.
    pub chain_id: u64,
    /// The `PaymentRouter` contract (contract payments).
    #[serde(default)]
    pub payment_contract: Option<String>,
    /// Plain transfers to this address.
    #[serde(default)]
    pub payment_address: Option<String>,
    /// The `WrappedBTC` token contract (supply for the reserve ratio).
    #[serde(default)]
    pub token_contract: Option<String>,
    /// First block scanned when the monitor has no cursor yet (the router's
    /// deployment block).
    #[serde(default)]
    pub start_block: u64,
}

/// `kind = "solana"`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SolanaChainConfig {
    /// The JSON-RPC endpoint (it may hold a provider key, so it is a secret).
    pub rpc_url: Secret,
    /// Where payments are sent (a base58 public key).
    pub payment_address: String,
    /// The wrapped token's SPL mint (supply for the reserve ratio).
    #[serde(default)]
    pub token_contract: Option<String>,
    /// The first slot scanned when the monitor has no cursor yet.
    #[serde(default)]
    pub start_block: u64,
    /// The commitment at which a payment counts, `finalized` (default) or `confirmed`.
    #[serde(default)]
    pub commitment: Option<String>,
}

/// `kind = "dev"`: the in-process development chain of `ubtc demo` and the tests.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevChainConfig {
    /// Where payments are sent.
    pub payment_address: String,
    /// Mine a block this often (0: only when told).
    #[serde(default)]
    pub dev_block_ms: u64,
    /// The wrapped-token supply it reports, in satoshis (the dev chain has no token
    /// contract; 0: none).
    #[serde(default)]
    pub dev_supply_sats: u64,
}

impl ChainConfig {
    pub fn kind(&self) -> ChainKind {
        match self.source {
            ChainSource::Evm(_) => ChainKind::Evm,
            ChainSource::Solana(_) => ChainKind::Solana,
            ChainSource::Dev(_) => ChainKind::Dev,
        }
    }

    /// Where payers send plain transfers, if the chain takes them.
    pub fn payment_address(&self) -> Option<&str> {
        match &self.source {
            ChainSource::Evm(c) => c.payment_address.as_deref(),
            ChainSource::Solana(c) => Some(&c.payment_address),
            ChainSource::Dev(c) => Some(&c.payment_address),
        }
    }

    /// The contract payers call, if the chain has one.
    pub fn payment_contract(&self) -> Option<&str> {
        match &self.source {
            ChainSource::Evm(c) => c.payment_contract.as_deref(),
            ChainSource::Solana(_) | ChainSource::Dev(_) => None,
        }
    }

    /// The wrapped token (EVM contract or SPL mint), if configured.
    pub fn token_contract(&self) -> Option<&str> {
        match &self.source {
            ChainSource::Evm(c) => c.token_contract.as_deref(),
            ChainSource::Solana(c) => c.token_contract.as_deref(),
            ChainSource::Dev(_) => None,
        }
    }
}

/// A solana chain needs an RPC URL; addresses are base58 public keys; the commitment is
/// `confirmed` or `finalized`.
fn validate_solana(name: &ChainId, chain: &SolanaChainConfig) -> Result<(), ConfigError> {
    let bad = |m: String| Err(ConfigError::Invalid(m));
    if chain.rpc_url.is_empty() {
        return bad(format!("chains.{name}: a solana chain needs rpc_url"));
    }
    for (what, value) in [
        ("payment_address", Some(chain.payment_address.as_str())),
        ("token_contract", chain.token_contract.as_deref()),
    ] {
        if let Some(v) = value {
            if let Err(e) = ubtc_chains::solana::wire::decode_pubkey(v) {
                return bad(format!(
                    "chains.{name}.{what} {v:?} is not a Solana address: {e}"
                ));
            }
        }
    }
    if let Some(c) = chain.commitment.as_deref() {
        if ubtc_chains::solana::Commitment::parse(c).is_err() {
            return bad(format!(
                "chains.{name}.commitment must be confirmed or finalized, not {c:?}"
            ));
        }
    }
    Ok(())
}

fn default_scan_max_blocks() -> u64 {
    500
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from(".data"),
            database: DatabaseConfig::default(),
            server: ServerConfig::default(),
            bitcoin: BitcoinConfig::default(),
            signer: SignerConfig::default(),
            pipeline: PipelineSettings::default(),
            log: LogConfig::default(),
            limits: LimitsConfig::default(),
            webhooks: WebhooksConfig::default(),
            admin: AdminConfig::default(),
            reserves: ReservesConfig::default(),
            dashboard: DashboardConfig::default(),
            reserve_ops: ReserveOpsConfig::default(),
            chains: vec![ChainConfig {
                name: ChainId::parse("dev").unwrap_or_else(|_| unreachable!("valid literal")),
                min_payment: "1000".into(),
                confirmations: 3,
                scan_max_blocks: 500,
                poll_ms: 0,
                source: ChainSource::Dev(DevChainConfig {
                    payment_address: "0xdef0000000000000000000000000000000000001".into(),
                    dev_block_ms: 1000,
                    dev_supply_sats: 200_000_000,
                }),
            }],
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::default(),
            max_connections: 16,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            header_read_timeout_ms: ubtc_api::HEADER_READ_TIMEOUT_MS_DEFAULT,
            idle_timeout_ms: ubtc_api::IDLE_TIMEOUT_MS_DEFAULT,
            max_connections: ubtc_api::MAX_CONNECTIONS_DEFAULT,
            request_timeout_ms: ubtc_api::REQUEST_TIMEOUT_MS_DEFAULT,
            body_limit_bytes: ubtc_api::BODY_LIMIT_BYTES_DEFAULT,
        }
    }
}

impl Default for BitcoinConfig {
    fn default() -> Self {
        Self {
            network: BitcoinNetwork::Regtest,
            backend: BitcoinBackendKind::Dev,
            dev_start_height: 850_000,
            esplora_url: String::new(),
            rpc_url: Secret::default(),
            rpc_user: String::new(),
            rpc_password: Secret::default(),
            timeout_ms: 120_000,
        }
    }
}

impl Default for SignerConfig {
    fn default() -> Self {
        Self {
            kind: SignerKind::Local,
            key_file: PathBuf::new(),
            threshold: 0,
            guardians: Vec::new(),
            coordinator_keystore: PathBuf::new(),
            coordinator_passphrase_file: PathBuf::new(),
            coordinator_passphrase_env: COORDINATOR_PASSPHRASE_ENV.into(),
            timeout_ms: 5_000,
            request_ttl_secs: 60,
        }
    }
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            workers: 4,
            lease_secs: 30,
            max_attempts: 8,
            backoff_base_ms: 1000,
            backoff_max_secs: 600,
            poll_ms: 250,
            batch_size: 64,
            monitor_lease_secs: 15,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

/// Rate limits (validations are delayed, API requests refused with 429).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// `redis://host:port/db`, shared by every process. Empty: limits are kept in
    /// this process's memory (one process only). When Redis is unreachable each
    /// process falls back to its own in-memory limits until it is back.
    pub redis_url: Secret,
    /// Put before every key, so deployments can share one Redis.
    pub redis_prefix: String,
    /// Bound of one Redis round trip before falling back.
    pub redis_timeout_ms: u64,
    /// Validations per payer per chain: sustained rate and burst.
    pub payer_per_minute: u32,
    pub payer_burst: u32,
    /// Validations per chain overall.
    pub chain_per_minute: u32,
    pub chain_burst: u32,
    /// Public API requests per client IP.
    pub api_ip_per_minute: u32,
    pub api_ip_burst: u32,
    /// Public API requests per API key (`x-api-key`), on top of the IP limit.
    pub api_key_per_minute: u32,
    pub api_key_burst: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            redis_url: Secret::default(),
            redis_prefix: "ubtc:rl:".into(),
            redis_timeout_ms: 250,
            payer_per_minute: 6,
            payer_burst: 3,
            chain_per_minute: 600,
            chain_burst: 100,
            api_ip_per_minute: 600,
            api_ip_burst: 60,
            api_key_per_minute: 3_000,
            api_key_burst: 300,
        }
    }
}

/// Webhook delivery from the outbox (run by `worker` and `demo`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// HMAC-SHA256 key of the `ubtc-signature` header. Empty: delivery is off (events
    /// wait in the outbox).
    pub secret: Secret,
    pub timeout_ms: u64,
    /// Attempts before the dead letter; with the back-off below, 17 spans ~3.2 days.
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_secs: u64,
    /// Deliver to loopback and private addresses (internal consumers, the demo).
    pub allow_private_targets: bool,
    /// Operator key of the webhook administration routes (`/v1/webhooks…`), sent as
    /// `authorization: Bearer <key>`. Empty: those routes answer 403.
    pub admin_api_key: Secret,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            secret: Secret::default(),
            timeout_ms: 10_000,
            max_attempts: 17,
            backoff_base_ms: 30_000,
            backoff_max_secs: 12 * 3_600,
            allow_private_targets: false,
            admin_api_key: Secret::default(),
        }
    }
}

/// The admin API (`/v1/admin/…`, docs/admin.md).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// HS256 key of the access tokens, at least 32 bytes. Empty: accounts and login
    /// are off (only the bootstrap key `webhooks.admin_api_key` works).
    pub jwt_secret: Secret,
    pub jwt_issuer: String,
    pub jwt_audience: String,
    pub access_ttl_secs: u64,
    pub refresh_ttl_secs: u64,
    /// A login session ends after this long, however often it is refreshed.
    pub session_max_secs: u64,
    /// Addresses and CIDR blocks allowed to reach admin routes, comma-separated
    /// (`10.0.0.0/8, 192.0.2.7`). Empty: any address.
    pub allowed_ips: String,
    /// Failed logins per username AND client address within `lockout_secs` that lock
    /// that pair for `lockout_secs` (per client address over all usernames: four
    /// times as many).
    pub max_login_failures: u32,
    /// Failed logins per username from all addresses together that lock the account
    /// for everyone (a guesser spread over many addresses).
    pub max_login_failures_per_user: u32,
    pub lockout_secs: u64,
    /// Reverse proxies (addresses and CIDR blocks, comma-separated) whose
    /// `X-Forwarded-For` names the client. Empty: the TCP peer is the client.
    pub trusted_proxies: String,
    /// `Secure` flag of the admin page's cookies: `true`, `false`, or `auto` (on
    /// unless `server.listen` is a loopback address).
    pub cookie_secure: String,
    /// Key (at least 32 bytes) that encrypts TOTP secrets at rest. Empty: a key
    /// derived from `jwt_secret` (then changing `jwt_secret` makes the stored
    /// secrets unreadable; set this to rotate them independently).
    pub totp_key: Secret,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            jwt_secret: Secret::default(),
            jwt_issuer: "ubtc".to_owned(),
            jwt_audience: "ubtc-admin".to_owned(),
            access_ttl_secs: 900,
            refresh_ttl_secs: 12 * 3_600,
            session_max_secs: 7 * 24 * 3_600,
            allowed_ips: String::new(),
            max_login_failures: 5,
            max_login_failures_per_user: 50,
            lockout_secs: 900,
            trusted_proxies: String::new(),
            cookie_secure: "auto".to_owned(),
            totp_key: Secret::default(),
        }
    }
}

/// Environment variables that override a setting, with the TOML path they set.
/// Unknown `UBTC_` variables are an error, so a typo never goes unnoticed.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("UBTC_DATA_DIR", "data_dir"),
    ("UBTC_DATABASE_URL", "database.url"),
    ("UBTC_DATABASE_MAX_CONNECTIONS", "database.max_connections"),
    ("UBTC_SERVER_LISTEN", "server.listen"),
    ("UBTC_SERVER_METRICS_LISTEN", "server.metrics_listen"),
    (
        "UBTC_SERVER_HEADER_READ_TIMEOUT_MS",
        "server.header_read_timeout_ms",
    ),
    ("UBTC_SERVER_IDLE_TIMEOUT_MS", "server.idle_timeout_ms"),
    ("UBTC_SERVER_MAX_CONNECTIONS", "server.max_connections"),
    (
        "UBTC_SERVER_REQUEST_TIMEOUT_MS",
        "server.request_timeout_ms",
    ),
    ("UBTC_SERVER_BODY_LIMIT_BYTES", "server.body_limit_bytes"),
    ("UBTC_BITCOIN_NETWORK", "bitcoin.network"),
    ("UBTC_BITCOIN_BACKEND", "bitcoin.backend"),
    ("UBTC_BITCOIN_ESPLORA_URL", "bitcoin.esplora_url"),
    ("UBTC_BITCOIN_RPC_URL", "bitcoin.rpc_url"),
    ("UBTC_BITCOIN_RPC_USER", "bitcoin.rpc_user"),
    ("UBTC_BITCOIN_RPC_PASSWORD", "bitcoin.rpc_password"),
    ("UBTC_BITCOIN_TIMEOUT_MS", "bitcoin.timeout_ms"),
    ("UBTC_SIGNER_KIND", "signer.kind"),
    ("UBTC_SIGNER_KEY_FILE", "signer.key_file"),
    ("UBTC_SIGNER_THRESHOLD", "signer.threshold"),
    (
        "UBTC_SIGNER_COORDINATOR_KEYSTORE",
        "signer.coordinator_keystore",
    ),
    (
        "UBTC_SIGNER_COORDINATOR_PASSPHRASE_FILE",
        "signer.coordinator_passphrase_file",
    ),
    (
        "UBTC_SIGNER_COORDINATOR_PASSPHRASE_ENV",
        "signer.coordinator_passphrase_env",
    ),
    ("UBTC_SIGNER_TIMEOUT_MS", "signer.timeout_ms"),
    ("UBTC_SIGNER_REQUEST_TTL_SECS", "signer.request_ttl_secs"),
    ("UBTC_PIPELINE_WORKERS", "pipeline.workers"),
    ("UBTC_PIPELINE_LEASE_SECS", "pipeline.lease_secs"),
    ("UBTC_PIPELINE_MAX_ATTEMPTS", "pipeline.max_attempts"),
    ("UBTC_PIPELINE_BACKOFF_BASE_MS", "pipeline.backoff_base_ms"),
    (
        "UBTC_PIPELINE_BACKOFF_MAX_SECS",
        "pipeline.backoff_max_secs",
    ),
    ("UBTC_PIPELINE_POLL_MS", "pipeline.poll_ms"),
    ("UBTC_PIPELINE_BATCH_SIZE", "pipeline.batch_size"),
    (
        "UBTC_PIPELINE_MONITOR_LEASE_SECS",
        "pipeline.monitor_lease_secs",
    ),
    ("UBTC_LIMITS_REDIS_URL", "limits.redis_url"),
    ("UBTC_LIMITS_REDIS_PREFIX", "limits.redis_prefix"),
    ("UBTC_LIMITS_REDIS_TIMEOUT_MS", "limits.redis_timeout_ms"),
    ("UBTC_LIMITS_PAYER_PER_MINUTE", "limits.payer_per_minute"),
    ("UBTC_LIMITS_PAYER_BURST", "limits.payer_burst"),
    ("UBTC_LIMITS_CHAIN_PER_MINUTE", "limits.chain_per_minute"),
    ("UBTC_LIMITS_CHAIN_BURST", "limits.chain_burst"),
    ("UBTC_LIMITS_API_IP_PER_MINUTE", "limits.api_ip_per_minute"),
    ("UBTC_LIMITS_API_IP_BURST", "limits.api_ip_burst"),
    (
        "UBTC_LIMITS_API_KEY_PER_MINUTE",
        "limits.api_key_per_minute",
    ),
    ("UBTC_LIMITS_API_KEY_BURST", "limits.api_key_burst"),
    ("UBTC_WEBHOOKS_SECRET", "webhooks.secret"),
    ("UBTC_WEBHOOKS_TIMEOUT_MS", "webhooks.timeout_ms"),
    ("UBTC_WEBHOOKS_MAX_ATTEMPTS", "webhooks.max_attempts"),
    ("UBTC_WEBHOOKS_BACKOFF_BASE_MS", "webhooks.backoff_base_ms"),
    (
        "UBTC_WEBHOOKS_BACKOFF_MAX_SECS",
        "webhooks.backoff_max_secs",
    ),
    (
        "UBTC_WEBHOOKS_ALLOW_PRIVATE_TARGETS",
        "webhooks.allow_private_targets",
    ),
    ("UBTC_WEBHOOKS_ADMIN_API_KEY", "webhooks.admin_api_key"),
    ("UBTC_ADMIN_JWT_SECRET", "admin.jwt_secret"),
    ("UBTC_ADMIN_JWT_ISSUER", "admin.jwt_issuer"),
    ("UBTC_ADMIN_JWT_AUDIENCE", "admin.jwt_audience"),
    ("UBTC_ADMIN_ACCESS_TTL_SECS", "admin.access_ttl_secs"),
    ("UBTC_ADMIN_REFRESH_TTL_SECS", "admin.refresh_ttl_secs"),
    ("UBTC_ADMIN_SESSION_MAX_SECS", "admin.session_max_secs"),
    ("UBTC_ADMIN_ALLOWED_IPS", "admin.allowed_ips"),
    ("UBTC_ADMIN_MAX_LOGIN_FAILURES", "admin.max_login_failures"),
    ("UBTC_ADMIN_LOCKOUT_SECS", "admin.lockout_secs"),
    (
        "UBTC_ADMIN_MAX_LOGIN_FAILURES_PER_USER",
        "admin.max_login_failures_per_user",
    ),
    ("UBTC_ADMIN_TRUSTED_PROXIES", "admin.trusted_proxies"),
    ("UBTC_ADMIN_COOKIE_SECURE", "admin.cookie_secure"),
    ("UBTC_ADMIN_TOTP_KEY", "admin.totp_key"),
    ("UBTC_RESERVES_INTERVAL_SECS", "reserves.interval_secs"),
    ("UBTC_RESERVES_POLL_MS", "reserves.poll_ms"),
    ("UBTC_RESERVES_MAX_AGE_SECS", "reserves.max_age_secs"),
    ("UBTC_RESERVES_TOLERANCE_PPM", "reserves.tolerance_ppm"),
    ("UBTC_DASHBOARD_EXPLORER_URL", "dashboard.explorer_url"),
    ("UBTC_RESERVE_OPS_ENABLED", "reserve_ops.enabled"),
    (
        "UBTC_RESERVE_OPS_MINTER_KEYSTORE",
        "reserve_ops.minter_keystore",
    ),
    (
        "UBTC_RESERVE_OPS_DEPOSIT_CONFIRMATIONS",
        "reserve_ops.deposit_confirmations",
    ),
    (
        "UBTC_RESERVE_OPS_TOKEN_CONFIRMATIONS",
        "reserve_ops.token_confirmations",
    ),
    (
        "UBTC_RESERVE_OPS_MINT_DAILY_LIMIT_SATS",
        "reserve_ops.mint_daily_limit_sats",
    ),
    (
        "UBTC_RESERVE_OPS_RELEASE_DAILY_LIMIT_SATS",
        "reserve_ops.release_daily_limit_sats",
    ),
    (
        "UBTC_RESERVE_OPS_FEE_RATE_SAT_VB",
        "reserve_ops.fee_rate_sat_vb",
    ),
    ("UBTC_RESERVE_OPS_POLL_MS", "reserve_ops.poll_ms"),
    ("UBTC_LOG_FORMAT", "log.format"),
    ("UBTC_LOG_LEVEL", "log.level"),
];

/// Variables read elsewhere, not settings.
const ENV_NOT_SETTINGS: &[&str] = &["UBTC_CONFIG", COORDINATOR_PASSPHRASE_ENV];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("configuration file {path} is not valid: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {name} is not valid for {key}: {message}")]
    Env {
        name: String,
        key: String,
        message: String,
    },
    #[error("unknown environment variable {0} (known: see README, Configuration)")]
    UnknownEnv(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Defaults, then `file` (if any), then the `UBTC_` variables in `env`.
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut tree = toml::Value::try_from(Config::default())
            .map_err(|e| ConfigError::Invalid(format!("defaults do not serialize: {e}")))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            let overlay: toml::Value = toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            merge(&mut tree, overlay);
            // Deserialize once here so errors name the file rather than a later layer.
            Config::deserialize(tree.clone()).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
        }
        for (name, value) in env.iter().filter(|(k, _)| k.starts_with("UBTC_")) {
            if ENV_NOT_SETTINGS.contains(&name.as_str())
                || is_passphrase_env(&tree, name)
                || env.get("UBTC_SIGNER_COORDINATOR_PASSPHRASE_ENV") == Some(name)
            {
                continue;
            }
            let Some((_, key)) = ENV_KEYS.iter().find(|(n, _)| n == name) else {
                return Err(ConfigError::UnknownEnv(name.clone()));
            };
            set_path(&mut tree, key, value);
            Config::deserialize(tree.clone()).map_err(|e| ConfigError::Env {
                name: name.clone(),
                key: (*key).to_owned(),
                message: e.to_string(),
            })?;
        }
        let config = Config::deserialize(tree).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let url = self.limits.redis_url.expose();
        if !url.is_empty() && !url.starts_with("redis://") {
            return bad("limits.redis_url must start with redis:// (or be empty)".into());
        }
        if self.webhooks.max_attempts == 0 || self.webhooks.timeout_ms == 0 {
            return bad("webhooks.max_attempts and webhooks.timeout_ms must be at least 1".into());
        }
        let sv = &self.server;
        if sv.header_read_timeout_ms == 0
            || sv.idle_timeout_ms == 0
            || sv.max_connections == 0
            || sv.request_timeout_ms == 0
            || sv.body_limit_bytes == 0
        {
            return bad(
                "server.header_read_timeout_ms, idle_timeout_ms, max_connections, request_timeout_ms and body_limit_bytes must be at least 1"
                    .into(),
            );
        }
        if self.database.max_connections == 0 {
            return bad("database.max_connections must be at least 1".into());
        }
        crate::admin_cmd::admin_auth(self).map_err(ConfigError::Invalid)?;
        let r = &self.reserves;
        if r.interval_secs == 0 || r.poll_ms == 0 || r.max_age_secs == 0 {
            return bad(
                "reserves.interval_secs, reserves.poll_ms and reserves.max_age_secs must be at least 1"
                    .into(),
            );
        }
        if r.max_age_secs > i64::MAX as u64 / 1000 || r.interval_secs > i64::MAX as u64 / 1000 {
            return bad("reserves.max_age_secs and reserves.interval_secs are too large".into());
        }
        if r.tolerance_ppm > 1_000_000 {
            return bad("reserves.tolerance_ppm must be at most 1000000".into());
        }
        let o = &self.reserve_ops;
        if o.enabled {
            if self.signer.kind != SignerKind::Guardians {
                return bad("reserve_ops.enabled needs signer.kind = \"guardians\"".into());
            }
            if o.minter_keystore.as_os_str().is_empty() {
                return bad(
                    "reserve_ops.minter_keystore is required when reserve_ops.enabled".into(),
                );
            }
            if o.deposit_confirmations == 0
                || o.token_confirmations == 0
                || o.poll_ms == 0
                || !(1..=ubtc_bitcoin::release::MAX_FEE_RATE_SAT_VB).contains(&o.fee_rate_sat_vb)
            {
                return bad(
                    "reserve_ops.deposit_confirmations, token_confirmations and poll_ms must be at least 1, fee_rate_sat_vb 1 to 10000"
                        .into(),
                );
            }
        }
        let explorer = &self.dashboard.explorer_url;
        // The link lands in every visitor's page: only plain http(s) URLs, so it
        // cannot become a `javascript:` link.
        if !explorer.is_empty()
            && (!(explorer.starts_with("https://") || explorer.starts_with("http://"))
                || explorer.len() > 512
                || explorer
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '"' || c == '<'))
        {
            return bad(
                "dashboard.explorer_url must be an http(s) URL of at most 512 characters without spaces or quotes (or be empty)"
                    .into(),
            );
        }
        if self.pipeline.workers == 0 || self.pipeline.workers > 256 {
            return bad("pipeline.workers must be between 1 and 256".into());
        }
        if self.pipeline.batch_size == 0 || self.pipeline.batch_size > 1000 {
            return bad("pipeline.batch_size must be between 1 and 1000".into());
        }
        if self.pipeline.max_attempts == 0 {
            return bad("pipeline.max_attempts must be at least 1".into());
        }
        if self.pipeline.lease_secs < 2 {
            return bad("pipeline.lease_secs must be at least 2".into());
        }
        if self.pipeline.monitor_lease_secs < 2 {
            return bad("pipeline.monitor_lease_secs must be at least 2".into());
        }
        let b = &self.bitcoin;
        let http = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        match b.backend {
            BitcoinBackendKind::Dev => {}
            BitcoinBackendKind::Esplora if http(&b.esplora_url) => {}
            BitcoinBackendKind::Esplora => {
                return bad("bitcoin.esplora_url must be an http(s) URL".into())
            }
            BitcoinBackendKind::Core if http(b.rpc_url.expose()) => {}
            BitcoinBackendKind::Core => return bad("bitcoin.rpc_url must be an http(s) URL".into()),
        }
        if b.timeout_ms == 0 {
            return bad("bitcoin.timeout_ms must be at least 1".into());
        }
        match self.signer.kind {
            SignerKind::Local => {}
            SignerKind::Guardians => {
                self.guardian_keys()?;
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for chain in &self.chains {
            if !seen.insert(chain.name.clone()) {
                return bad(format!("chain {} is configured twice", chain.name));
            }
            self.min_payment(chain)?;
            if chain.confirmations == 0 {
                return bad(format!(
                    "chains.{}.confirmations must be at least 1",
                    chain.name
                ));
            }
            match &chain.source {
                ChainSource::Dev(dev) if dev.payment_address.is_empty() => {
                    return bad(format!("chains.{}.payment_address is required", chain.name));
                }
                ChainSource::Dev(_) => {}
                ChainSource::Evm(evm) => {
                    if evm.rpc_url.is_empty() {
                        return bad(format!(
                            "chains.{}: an evm chain needs rpc_url and chain_id",
                            chain.name
                        ));
                    }
                    if evm.payment_contract.is_none() && evm.payment_address.is_none() {
                        return bad(format!(
                            "chains.{}: an evm chain needs payment_contract or payment_address",
                            chain.name
                        ));
                    }
                }
                ChainSource::Solana(solana) => validate_solana(&chain.name, solana)?,
            }
        }
        Ok(())
    }

    pub fn min_payment(&self, chain: &ChainConfig) -> Result<u128, ConfigError> {
        ubtc_core::TokenAmount::parse_base_units(&chain.min_payment, 0)
            .map(|a| a.base_units)
            .map_err(|e| ConfigError::Invalid(format!("chains.{}.min_payment: {e}", chain.name)))
    }

    /// The database URL, defaulting to SQLite in the data directory.
    pub fn database_url(&self) -> Secret {
        if self.database.url.is_empty() {
            Secret::new(format!(
                "sqlite:{}",
                self.data_dir.join("ubtc.db").display()
            ))
        } else {
            self.database.url.clone()
        }
    }

    /// `signer.kind = "guardians"`: the guardians' registered keys, in configured
    /// order, checked (threshold within 1..=N, valid compressed keys, no duplicates,
    /// a coordinator keystore, positive timeouts).
    pub fn guardian_keys(&self) -> Result<Vec<bitcoin::CompressedPublicKey>, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        let s = &self.signer;
        if s.guardians.is_empty() {
            return bad("signer.kind = \"guardians\" needs at least one [[signer.guardians]] entry (url, public_key)".into());
        }
        let n = s.guardians.len();
        if s.threshold == 0 || s.threshold as usize > n {
            return bad(format!(
                "signer.threshold must be between 1 and the number of guardians ({n}), not {}",
                s.threshold
            ));
        }
        let mut keys: Vec<bitcoin::CompressedPublicKey> = Vec::with_capacity(n);
        for (i, g) in s.guardians.iter().enumerate() {
            let key: bitcoin::CompressedPublicKey = g.public_key.trim().parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "signer.guardians[{i}].public_key {:?} is not a compressed public key (66 hex characters, 02… or 03…)",
                    g.public_key
                ))
            })?;
            if let Some(j) = keys.iter().position(|k| *k == key) {
                return bad(format!(
                    "signer.guardians[{i}].public_key is the same key as signer.guardians[{j}]: each guardian needs its own key"
                ));
            }
            if !(g.url.starts_with("http://") || g.url.starts_with("https://")) {
                return bad(format!(
                    "signer.guardians[{i}].url {:?} must start with http:// or https://",
                    g.url
                ));
            }
            keys.push(key);
        }
        if let Err(e) = ubtc_bitcoin::multisig::SortedMulti::new(s.threshold as usize, keys.clone())
        {
            return bad(format!("signer: no valid reserve policy: {e}"));
        }
        if s.coordinator_keystore.as_os_str().is_empty() {
            return bad("signer.coordinator_keystore is required with signer.kind = \"guardians\" (create it with `ubtc keys guardian-init`)".into());
        }
        if s.coordinator_passphrase_file.as_os_str().is_empty()
            && s.coordinator_passphrase_env.is_empty()
        {
            return bad("signer.coordinator_passphrase_file or signer.coordinator_passphrase_env is required".into());
        }
        if s.timeout_ms == 0 || s.request_ttl_secs == 0 {
            return bad("signer.timeout_ms and signer.request_ttl_secs must be at least 1".into());
        }
        Ok(keys)
    }

    pub fn key_file(&self) -> PathBuf {
        if self.signer.key_file.as_os_str().is_empty() {
            self.data_dir.join("reserve-key.hex")
        } else {
            self.signer.key_file.clone()
        }
    }
}

/// Whether `name` is the variable the configuration names for the coordinator's
/// passphrase (a secret read by the signer, not a setting).
fn is_passphrase_env(tree: &toml::Value, name: &str) -> bool {
    tree.get("signer")
        .and_then(|s| s.get("coordinator_passphrase_env"))
        .and_then(|v| v.as_str())
        .is_some_and(|v| v == name)
}

fn merge(base: &mut toml::Value, overlay: toml::Value) {
    match (base, overlay) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Sets `a.b.c` to `raw`, typed like the value already there (numbers stay numbers).
fn set_path(tree: &mut toml::Value, path: &str, raw: &str) {
    let mut node = tree;
    let parts: Vec<&str> = path.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        let toml::Value::Table(t) = node else { return };
        node = t
            .entry((*part).to_owned())
            .or_insert_with(|| toml::Value::Table(Default::default()));
    }
    let toml::Value::Table(t) = node else { return };
    let last = parts[parts.len() - 1].to_owned();
    let value = match t.get(&last) {
        Some(toml::Value::Integer(_)) => raw
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(raw.into())),
        Some(toml::Value::Boolean(_)) => raw
            .parse::<bool>()
            .map(toml::Value::Boolean)
            .unwrap_or_else(|_| toml::Value::String(raw.into())),
        _ => toml::Value::String(raw.into()),
    };
    t.insert(last, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README documents every environment variable, so the front door stays true.
    #[test]
    fn readme_documents_every_variable() {
        let readme = include_str!("../../../README.md");
        for (name, _) in ENV_KEYS {
            assert!(readme.contains(name), "README.md does not document {name}");
        }
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::load(None, &env(&[])).unwrap();
        assert_eq!(c.chains.len(), 1);
        assert!(c.database_url().expose().starts_with("sqlite:"));
    }

    #[test]
    fn file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ubtc.toml");
        std::fs::write(
            &path,
            "[database]\nmax_connections = 3\n[pipeline]\nworkers = 2\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&path),
            &env(&[
                ("UBTC_PIPELINE_WORKERS", "7"),
                ("UBTC_DATABASE_URL", "postgres://u:pw@h/db"),
                ("HOME", "/x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.database.max_connections, 3);
        assert_eq!(c.pipeline.workers, 7);
        assert_eq!(c.database_url().expose(), "postgres://u:pw@h/db");
        // The password never shows in Debug output.
        assert!(!format!("{c:?}").contains("pw@"));
    }

    #[test]
    fn bad_settings_are_errors() {
        let e = Config::load(None, &env(&[("UBTC_PIPELINE_WORKERS", "many")])).unwrap_err();
        assert!(matches!(e, ConfigError::Env { .. }), "{e}");
        let e = Config::load(None, &env(&[("UBTC_DATABSE_URL", "x")])).unwrap_err();
        assert!(matches!(e, ConfigError::UnknownEnv(_)), "{e}");
        let e = Config::load(None, &env(&[("UBTC_PIPELINE_WORKERS", "0")])).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[database]\nmax_conections = 3\n").unwrap();
        assert!(matches!(
            Config::load(Some(&path), &env(&[])).unwrap_err(),
            ConfigError::File { .. }
        ));
        std::fs::write(&path, "[[chains]]\nname = \"dev\"\nkind = \"dev\"\nmin_payment = \"-5\"\nconfirmations = 1\npayment_address = \"0x1\"\n").unwrap();
        assert!(matches!(
            Config::load(Some(&path), &env(&[])).unwrap_err(),
            ConfigError::Invalid(_)
        ));
    }

    #[test]
    fn evm_chains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("evm.toml");
        let chain = "[[chains]]\nname = \"ethereum\"\nkind = \"evm\"\nmin_payment = \"1000\"\nconfirmations = 12\n";
        let full = format!("{chain}chain_id = 1\nrpc_url = \"https://node.example/key-abc\"\npayment_contract = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\"\ntoken_contract = \"0xe7f1725e7734ce288f8367e1bb143e90bb3f0512\"\nstart_block = 100\npoll_ms = 4000\n");
        std::fs::write(&path, &full).unwrap();
        let c = Config::load(Some(&path), &env(&[])).unwrap();
        let ChainSource::Evm(evm) = &c.chains[0].source else {
            panic!("an evm chain: {:?}", c.chains[0]);
        };
        assert_eq!((evm.chain_id, evm.start_block), (1, 100));
        assert_eq!(c.chains[0].poll_ms, 4000);
        // The RPC URL may hold a provider key.
        assert!(!format!("{c:?}").contains("key-abc"));
        // Without an RPC URL and chain id, or without anywhere to pay: invalid.
        for bad in [
            chain.to_owned(),
            format!("{chain}chain_id = 1\nrpc_url = \"http://x\"\n"),
            format!("{chain}chain_id = 1\nrpc_url = \"\"\npayment_address = \"0x1\"\n"),
        ] {
            std::fs::write(&path, bad).unwrap();
            assert!(refused(&path));
        }
    }

    #[test]
    fn solana_chains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("solana.toml");
        let chain = "[[chains]]\nname = \"solana\"\nkind = \"solana\"\nmin_payment = \"10000000\"\nconfirmations = 32\n";
        let address = "payment_address = \"9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM\"\n";
        let rpc = "rpc_url = \"https://solana.example/?api-key=key-abc\"\n";
        let full = format!("{chain}{address}{rpc}token_contract = \"MemoSq4gqABAXKb96qnH8TysNcWxMyWCqXgDLGmfcHr\"\ncommitment = \"confirmed\"\nstart_block = 5\n");
        std::fs::write(&path, &full).unwrap();
        let c = Config::load(Some(&path), &env(&[])).unwrap();
        assert_eq!(c.chains[0].kind(), ChainKind::Solana);
        let ChainSource::Solana(solana) = &c.chains[0].source else {
            panic!("a solana chain: {:?}", c.chains[0]);
        };
        assert_eq!(solana.commitment.as_deref(), Some("confirmed"));
        assert_eq!(solana.start_block, 5);
        assert!(!format!("{c:?}").contains("key-abc"));
        // Missing RPC URL or address, an address that is not base58 of 32 bytes, an
        // unknown commitment, EVM-only keys, a commitment on another kind: invalid.
        for bad in [
            format!("{chain}{address}"),
            format!("{chain}{rpc}"),
            format!("{chain}{rpc}payment_address = \"0xdef0000000000000000000000000000000000001\"\n"),
            format!("{chain}{rpc}{address}token_contract = \"abc\"\n"),
            format!("{chain}{rpc}{address}commitment = \"processed\"\n"),
            format!("{chain}{rpc}{address}chain_id = 1\n"),
            "[[chains]]\nname = \"dev\"\nkind = \"dev\"\nmin_payment = \"1\"\nconfirmations = 1\npayment_address = \"0x1\"\ncommitment = \"finalized\"\n".to_owned(),
        ] {
            std::fs::write(&path, &bad).unwrap();
            assert!(refused(&path), "{bad}");
        }
    }

    /// Refused, by the file's parse (a field of another kind, a missing field) or by
    /// validation (a value out of range).
    fn refused(path: &Path) -> bool {
        matches!(
            Config::load(Some(path), &env(&[])),
            Err(ConfigError::File { .. } | ConfigError::Invalid(_))
        )
    }

    /// The error a file gets, as text.
    fn file_error(text: &str) -> String {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ubtc.toml");
        std::fs::write(&path, text).unwrap();
        Config::load(Some(&path), &env(&[]))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_field_of_another_chain_kind_is_refused_by_name() {
        let dev = "[[chains]]\nname = \"dev\"\nkind = \"dev\"\nmin_payment = \"1\"\nconfirmations = 1\npayment_address = \"0x1\"\n";
        let evm = "[[chains]]\nname = \"eth\"\nkind = \"evm\"\nmin_payment = \"1\"\nconfirmations = 1\nrpc_url = \"http://x\"\nchain_id = 1\npayment_address = \"0x1\"\n";
        let solana = "[[chains]]\nname = \"sol\"\nkind = \"solana\"\nmin_payment = \"1\"\nconfirmations = 1\nrpc_url = \"http://x\"\npayment_address = \"9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM\"\n";
        // Each kind alone is accepted, so each refusal below is the extra field's.
        for ok in [dev, evm, solana] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ubtc.toml");
            std::fs::write(&path, ok).unwrap();
            Config::load(Some(&path), &env(&[])).unwrap();
        }
        for (base, field) in [
            (dev, "rpc_url = \"http://node\""),
            (dev, "chain_id = 1"),
            (
                dev,
                "payment_contract = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\"",
            ),
            (
                dev,
                "token_contract = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\"",
            ),
            (dev, "start_block = 7"),
            (dev, "commitment = \"finalized\""),
            (evm, "dev_block_ms = 10"),
            (evm, "dev_supply_sats = 10"),
            (evm, "commitment = \"finalized\""),
            (solana, "chain_id = 1"),
            (
                solana,
                "payment_contract = \"0x5fbdb2315678afecb367f032d93f642f64180aa3\"",
            ),
            (solana, "dev_block_ms = 10"),
            (evm, "rpc_urll = \"http://typo\""),
        ] {
            let e = file_error(&format!("{base}{field}\n"));
            let key = field.split(' ').next().unwrap();
            assert!(
                e.contains(&format!("unknown field `{key}`")),
                "{field}: {e}"
            );
        }
    }

    #[test]
    fn an_unknown_chain_kind_or_a_missing_field_of_the_kind_is_refused() {
        let base = "[[chains]]\nname = \"x\"\nmin_payment = \"1\"\nconfirmations = 1\npayment_address = \"0x1\"\n";
        let e = file_error(&format!("{base}kind = \"ton\"\n"));
        assert!(e.contains("unknown variant `ton`"), "{e}");
        let e = file_error(base);
        assert!(e.contains("missing field `kind`"), "{e}");
        let e = file_error(&format!("{base}kind = \"evm\"\nrpc_url = \"http://x\"\n"));
        assert!(e.contains("missing field `chain_id`"), "{e}");
        let e = file_error(
            "[[chains]]\nname = \"x\"\nkind = \"dev\"\nmin_payment = \"1\"\nconfirmations = 1\n",
        );
        assert!(e.contains("missing field `payment_address`"), "{e}");
    }

    #[test]
    fn signer_backend_and_log_format_are_closed_sets() {
        for (text, value) in [
            ("[signer]\nkind = \"hsm\"\n", "hsm"),
            ("[bitcoin]\nbackend = \"electrum\"\n", "electrum"),
            ("[log]\nformat = \"xml\"\n", "xml"),
        ] {
            let e = file_error(text);
            assert!(e.contains(&format!("unknown variant `{value}`")), "{e}");
        }
        let e = Config::load(None, &env(&[("UBTC_LOG_FORMAT", "yaml")])).unwrap_err();
        assert!(matches!(e, ConfigError::Env { .. }), "{e}");
        let c = Config::load(
            None,
            &env(&[
                ("UBTC_LOG_FORMAT", "json"),
                ("UBTC_BITCOIN_BACKEND", "esplora"),
                ("UBTC_BITCOIN_ESPLORA_URL", "http://127.0.0.1:3002"),
            ]),
        )
        .unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.bitcoin.backend, BitcoinBackendKind::Esplora);
        assert_eq!(c.signer.kind, SignerKind::Local);
    }

    #[test]
    fn limits_and_webhooks_settings() {
        let c = Config::load(
            None,
            &env(&[
                ("UBTC_LIMITS_REDIS_URL", "redis://127.0.0.1:6379/0"),
                ("UBTC_LIMITS_PAYER_BURST", "9"),
                ("UBTC_WEBHOOKS_ALLOW_PRIVATE_TARGETS", "true"),
                ("UBTC_WEBHOOKS_SECRET", "hook-secret"),
            ]),
        )
        .unwrap();
        assert_eq!(c.limits.payer_burst, 9);
        assert!(c.webhooks.allow_private_targets);
        // Secrets never show in Debug output.
        assert!(!format!("{c:?}").contains("hook-secret"));
        let e = Config::load(None, &env(&[("UBTC_LIMITS_REDIS_URL", "http://x")])).unwrap_err();
        assert!(matches!(e, ConfigError::Invalid(_)), "{e}");
    }

    #[test]
    fn webhooks_admin_api_key_setting() {
        let c = Config::load(
            None,
            &env(&[("UBTC_WEBHOOKS_ADMIN_API_KEY", "operator-key-123")]),
        )
        .unwrap();
        assert_eq!(c.webhooks.admin_api_key.expose(), "operator-key-123");
        assert!(!format!("{c:?}").contains("operator-key-123"));
        assert!(Config::load(None, &env(&[]))
            .unwrap()
            .webhooks
            .admin_api_key
            .is_empty());
    }

    #[test]
    fn dashboard_explorer_url_setting() {
        let url = "https://mempool.space/address/{address}";
        let c = Config::load(None, &env(&[("UBTC_DASHBOARD_EXPLORER_URL", url)])).unwrap();
        assert_eq!(c.dashboard.explorer_url, url);
        // It lands in every visitor's page: only plain http(s) URLs.
        for bad in [
            "javascript:alert(1)",
            "ftp://x/{address}",
            "https://x/\"onmouseover=1",
            "https://x/ a",
        ] {
            assert!(
                Config::load(None, &env(&[("UBTC_DASHBOARD_EXPLORER_URL", bad)])).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn guardian_signer_settings() {
        const K1: &str = "0289979e1b999bbca39ce6f4ae8f55fd39697e15f3cde350c0373c4557f53dd908";
        const K2: &str = "02c6047f9441ed7d6d3045406e95c07cd85c778e4b8cef3ca7abac09b95c709ee5";
        const K3: &str = "02f9308a019258c31049344f85f89d5229b531c845836f99b08601f113bce036f9";
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.toml");
        let write = |threshold: u32, keys: [&str; 3]| {
            let guardians: String = keys
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    format!(
                        "[[signer.guardians]]\nurl = \"http://127.0.0.1:740{i}\"\npublic_key = \"{k}\"\n"
                    )
                })
                .collect();
            std::fs::write(
                &path,
                format!("[signer]\nkind = \"guardians\"\nthreshold = {threshold}\ncoordinator_keystore = \"c.json\"\n{guardians}"),
            )
            .unwrap();
        };
        write(2, [K1, K2, K3]);
        let c = Config::load(
            Some(&path),
            &env(&[
                ("UBTC_SIGNER_TIMEOUT_MS", "900"),
                // The passphrase variable is a secret for the signer, not a setting.
                (COORDINATOR_PASSPHRASE_ENV, "pw"),
            ]),
        )
        .unwrap();
        assert_eq!(c.signer.threshold, 2);
        assert_eq!(c.signer.timeout_ms, 900);
        assert_eq!(c.guardian_keys().unwrap().len(), 3);
        let c = Config::load(Some(&path), &env(&[("UBTC_SIGNER_THRESHOLD", "3")])).unwrap();
        assert_eq!(c.signer.threshold, 3);
        // A passphrase variable of another name (set by variable too) is not a setting.
        let c = Config::load(
            Some(&path),
            &env(&[
                ("UBTC_A_COORDINATOR_PASS", "pw"),
                (
                    "UBTC_SIGNER_COORDINATOR_PASSPHRASE_ENV",
                    "UBTC_A_COORDINATOR_PASS",
                ),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.signer.coordinator_passphrase_env,
            "UBTC_A_COORDINATOR_PASS"
        );

        let invalid = |env_pairs: &[(&str, &str)]| match Config::load(Some(&path), &env(env_pairs))
        {
            Err(ConfigError::Invalid(m)) => m,
            other => panic!("expected an invalid configuration, got {other:?}"),
        };
        let m = invalid(&[("UBTC_SIGNER_THRESHOLD", "4")]);
        assert!(m.contains("signer.threshold") && m.contains("(3)"), "{m}");
        write(2, [K1, "02zz", K3]);
        let m = invalid(&[]);
        assert!(m.contains("signer.guardians[1].public_key"), "{m}");
        write(2, [K1, K2, K1]);
        let m = invalid(&[]);
        assert!(m.contains("same key as signer.guardians[0]"), "{m}");
        let m = match Config::load(None, &env(&[("UBTC_SIGNER_KIND", "guardians")])) {
            Err(ConfigError::Invalid(m)) => m,
            other => panic!("{other:?}"),
        };
        assert!(m.contains("[[signer.guardians]]"), "{m}");
        let m = match Config::load(None, &env(&[("UBTC_SIGNER_KIND", "hsm")])) {
            Err(ConfigError::Env { message, .. }) => message,
            other => panic!("{other:?}"),
        };
        assert!(m.contains("expected `local` or `guardians`"), "{m}");
    }
}
