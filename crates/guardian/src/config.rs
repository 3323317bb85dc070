//! A guardian's own configuration (`guardian.toml`). Documented in docs/guardians.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bitcoin::secp256k1::PublicKey;
use serde::Deserialize;
use ubtc_bitcoin::multisig::{Form, SortedMulti};
use ubtc_chains::bitcoind::{BitcoinCoreBackend, RpcAuth};
use ubtc_chains::dev::DevBitcoin;
use ubtc_chains::esplora::EsploraBackend;
use ubtc_chains::evm::RetryPolicy;
use ubtc_chains::BitcoinBackend;
use ubtc_core::statement::STATEMENT_VERSION;
use ubtc_core::ChainId;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {detail}")]
    Parse { path: String, detail: String },
    #[error("invalid guardian configuration: {0}")]
    Invalid(String),
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianConfig {
    /// Where the guardian's HTTP server listens. Port 0 picks a free port (printed).
    pub listen: SocketAddr,
    pub keystore: PathBuf,
    /// File holding the keystore passphrase (first line).
    #[serde(default)]
    pub passphrase_file: Option<PathBuf>,
    /// Name of the environment variable holding the passphrase, when no file is set.
    #[serde(default = "default_passphrase_env")]
    pub passphrase_env: String,
    /// The durable approval record (JSON lines, fsync'd).
    pub approvals: PathBuf,
    /// Compressed public keys (hex) of the coordinators whose requests are accepted.
    pub coordinators: Vec<String>,
    /// Statement versions this guardian signs.
    #[serde(default = "default_versions")]
    pub statement_versions: Vec<u32>,
    /// Longest request lifetime accepted (`expires_at - now`), seconds.
    #[serde(default = "default_ttl")]
    pub max_request_ttl_secs: u64,
    pub chains: Vec<GuardianChain>,
    /// This guardian's own Bitcoin view, against which statement block stamps are
    /// checked. Required: a guardian that cannot check the stamp would sign a
    /// statement stamped with any block.
    pub bitcoin: GuardianBitcoin,
    /// Also serve reserve operations (`POST /v1/reserve-ops`, docs/reserve-ops.md).
    #[serde(default)]
    pub reserve_ops: Option<crate::reserve_ops::GuardianReserveOpsConfig>,
    /// What this guardian signs statements for (required: a guardian that does not
    /// name its reserves would sign for any descriptor holding its key).
    pub policy: PolicyConfig,
    /// Also make reserve attestations (`POST /v1/attest`, docs/guardians.md): the
    /// chains whose supply it checks. Without it the route refuses every request.
    #[serde(default)]
    pub attest: Option<crate::attest::AttestConfig>,
}

/// `[policy]` of `guardian.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// The reserve descriptors this guardian signs for, with their checksum, as
    /// `ubtc keys reserve-create` prints them. Each must hold this guardian's key.
    pub reserves: Vec<String>,
    /// BIP-322 forms it signs statements in (`simple`, `full`, `proof_of_funds`);
    /// default `simple` only. A lock time, sequence or version other than 0 is never
    /// signed.
    #[serde(default = "default_forms")]
    pub forms: Vec<Form>,
}

impl PolicyConfig {
    /// Every reserve parsed, in the canonical text the coordinator sends
    /// (`SortedMulti::descriptor`: sorted keys, checksum), with its policy.
    pub fn reserves(&self) -> Result<Vec<(String, SortedMulti)>, ConfigError> {
        let mut out: Vec<(String, SortedMulti)> = Vec::with_capacity(self.reserves.len());
        for text in &self.reserves {
            let (policy, wrapping) = SortedMulti::parse_descriptor(text)
                .map_err(|e| ConfigError::Invalid(format!("policy.reserves: {text:?}: {e}")))?;
            let canonical = policy.descriptor(wrapping);
            if out.iter().any(|(d, _)| *d == canonical) {
                return Err(ConfigError::Invalid(format!(
                    "policy.reserves: {text:?} is listed twice"
                )));
            }
            out.push((canonical, policy));
        }
        Ok(out)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if self.reserves.is_empty() {
            return Err(ConfigError::Invalid(
                "policy.reserves is empty: the guardian would refuse every request".into(),
            ));
        }
        if self.forms.is_empty() {
            return Err(ConfigError::Invalid(
                "policy.forms is empty: the guardian would refuse every request".into(),
            ));
        }
        self.reserves().map(|_| ())
    }
}

fn default_forms() -> Vec<Form> {
    vec![Form::Simple]
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianBitcoin {
    pub backend: BitcoinViewKind,
    /// `dev`: the height of this guardian's dev Bitcoin tip (the demo's dev backend
    /// stays at its start height, `bitcoin.dev_start_height` of `ubtc.toml`).
    #[serde(default)]
    pub dev_height: Option<u32>,
    /// `esplora`: the API base; `core`: the node's RPC URL.
    #[serde(default)]
    pub url: Option<String>,
    /// `core`: RPC user (with `rpc_password_file`).
    #[serde(default)]
    pub rpc_user: Option<String>,
    /// `core`: file holding the RPC password (first line); never in this file.
    #[serde(default)]
    pub rpc_password_file: Option<PathBuf>,
    /// Oldest stamp accepted, in blocks below this guardian's tip.
    #[serde(default = "default_stamp_age")]
    pub max_stamp_age_blocks: u32,
    /// `dev`: unspent outputs this guardian's dev view holds (the demo and tests give
    /// each guardian process the reserve UTXOs this way; a real view reads its node).
    #[serde(default)]
    pub dev_utxos: Vec<DevUtxoConfig>,
}

/// One `[[bitcoin.dev_utxos]]` entry.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevUtxoConfig {
    pub address: String,
    pub txid: String,
    pub vout: u32,
    pub amount_sats: u64,
    pub script_pubkey_hex: String,
    /// Block that confirmed it; default `dev_height`.
    #[serde(default)]
    pub height: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BitcoinViewKind {
    /// The deterministic dev backend (hash of block h is fixed), at `dev_height`.
    Dev,
    Esplora,
    Core,
}

/// Default of `bitcoin.max_stamp_age_blocks`: about an hour of blocks, the longest a
/// job usually waits in the queue before it is signed.
pub const MAX_STAMP_AGE_BLOCKS_DEFAULT: u32 = 6;

impl GuardianBitcoin {
    fn check(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(format!("bitcoin: {m}")));
        match self.backend {
            BitcoinViewKind::Dev if self.dev_height.is_none() => {
                invalid("backend \"dev\" needs dev_height")
            }
            _ if self.backend != BitcoinViewKind::Dev && !self.dev_utxos.is_empty() => {
                invalid("dev_utxos is for backend \"dev\" only")
            }
            BitcoinViewKind::Esplora | BitcoinViewKind::Core => match &self.url {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => Ok(()),
                _ => invalid("backend \"esplora\" or \"core\" needs an http(s) url"),
            },
            BitcoinViewKind::Dev => Ok(()),
        }
    }

    /// Builds this guardian's Bitcoin view.
    pub fn backend(&self) -> Result<Arc<dyn BitcoinBackend>, ConfigError> {
        self.check()?;
        let chain_err = |e: ubtc_chains::ChainError| ConfigError::Invalid(format!("bitcoin: {e}"));
        let url = self.url.clone().unwrap_or_default();
        Ok(match self.backend {
            BitcoinViewKind::Dev => {
                let height = self.dev_height.unwrap_or_default();
                let dev = DevBitcoin::new(height);
                for u in &self.dev_utxos {
                    dev.insert_utxo(
                        &u.address,
                        ubtc_core::bundle::Utxo {
                            txid: u.txid.to_ascii_lowercase(),
                            vout: u.vout,
                            amount_sats: u.amount_sats,
                            script_pubkey_hex: u.script_pubkey_hex.to_ascii_lowercase(),
                        },
                        u.height.unwrap_or(height),
                    );
                }
                Arc::new(dev)
            }
            BitcoinViewKind::Esplora => {
                Arc::new(EsploraBackend::new(&url, RetryPolicy::default()).map_err(chain_err)?)
            }
            BitcoinViewKind::Core => {
                let auth = match (&self.rpc_user, &self.rpc_password_file) {
                    (Some(user), Some(file)) => {
                        let text =
                            std::fs::read_to_string(file).map_err(|source| ConfigError::Read {
                                path: file.display().to_string(),
                                source,
                            })?;
                        Some(RpcAuth {
                            user: user.clone(),
                            password: text.lines().next().unwrap_or_default().to_owned(),
                        })
                    }
                    (None, None) => None,
                    _ => {
                        return Err(ConfigError::Invalid(
                            "bitcoin: rpc_user and rpc_password_file go together".into(),
                        ))
                    }
                };
                Arc::new(
                    BitcoinCoreBackend::new(&url, auth, RetryPolicy::default())
                        .map_err(chain_err)?,
                )
            }
        })
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianChain {
    pub name: ChainId,
    /// `dev_http`: the demo's read-only dev-chain endpoint; `solana`: a Solana
    /// JSON-RPC node; `evm`: an EVM JSON-RPC node (Ethereum, Polygon, Arbitrum, BSC,
    /// anvil).
    pub kind: ChainViewKind,
    /// Base URL of this guardian's own endpoint for the chain (`solana`, `evm`: its
    /// own JSON-RPC node, never the coordinator's). It may hold a provider key, so it
    /// is kept out of `Debug`.
    pub url: String,
    /// `solana`: the address payments are sent to (base58). `evm`: the address
    /// receiving plain transfers with the message as calldata (0x…, optional when
    /// `payment_contract` is set).
    #[serde(default)]
    pub payment_address: Option<String>,
    /// `solana`: the wrapped token's SPL mint (base58); optional for payments.
    #[serde(default)]
    pub token_mint: Option<String>,
    /// `solana`: `finalized` (default) or `confirmed` — the depth at which this
    /// guardian counts a payment as confirmed.
    #[serde(default)]
    pub commitment: Option<String>,
    /// `evm`: the EIP-155 chain id this guardian's node must report.
    #[serde(default)]
    pub chain_id: Option<u64>,
    /// `evm`: the `PaymentRouter` contract (contract payments).
    #[serde(default)]
    pub payment_contract: Option<String>,
    /// `evm`: the `WrappedBTC` contract. Optional; when set, this chain is also this
    /// guardian's token view for reserve operations (supply and burns), unless
    /// `[[reserve_ops.tokens]]` names the chain itself.
    #[serde(default)]
    pub token_contract: Option<String>,
    /// `evm`: depth at which this guardian counts a payment as confirmed (the block
    /// holding it counts as one). Required: it is this guardian's own rule, never
    /// the coordinator's.
    #[serde(default)]
    pub confirmations: Option<u64>,
    /// Most approvals per minute on this chain (policy; 0 = none allowed).
    #[serde(default = "default_rate")]
    pub max_signatures_per_minute: u32,
}

impl std::fmt::Debug for GuardianChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardianChain")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("url", &"[redacted]")
            .field("chain_id", &self.chain_id)
            .field("payment_contract", &self.payment_contract)
            .field("payment_address", &self.payment_address)
            .field("confirmations", &self.confirmations)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainViewKind {
    DevHttp,
    Solana,
    Evm,
}

impl ChainViewKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::DevHttp => "dev_http",
            Self::Solana => "solana",
            Self::Evm => "evm",
        }
    }
}

/// How a guardian's EVM reads are retried. Shorter than the monitor's default: the
/// coordinator waits only its request timeout for an answer, so a read that takes
/// longer only produces an answer nobody reads; a node that is down is refused as
/// `chain_unavailable` and the coordinator retries the whole request later.
pub fn guardian_evm_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 2,
        first_backoff: std::time::Duration::from_millis(100),
        max_backoff: std::time::Duration::from_secs(1),
        timeout: std::time::Duration::from_secs(5),
    }
}

impl GuardianChain {
    fn invalid(&self, m: impl std::fmt::Display) -> ConfigError {
        ConfigError::Invalid(format!("chain {}: {m}", self.name))
    }

    fn needs_http_url(&self) -> Result<(), ConfigError> {
        if self.url.starts_with("http://") || self.url.starts_with("https://") {
            Ok(())
        } else {
            Err(self.invalid(format!(
                "kind \"{}\" needs an http(s) url",
                self.kind.as_str()
            )))
        }
    }

    /// Refuses the fields of other kinds: a Solana field on an EVM chain (or the
    /// reverse) is a mistake worth reporting, not something to ignore.
    fn refuse_foreign_fields(&self) -> Result<(), ConfigError> {
        let solana = [
            ("token_mint", self.token_mint.is_some()),
            ("commitment", self.commitment.is_some()),
        ];
        let evm = [
            ("chain_id", self.chain_id.is_some()),
            ("payment_contract", self.payment_contract.is_some()),
            ("token_contract", self.token_contract.is_some()),
            ("confirmations", self.confirmations.is_some()),
        ];
        let (foreign, owner): (Vec<(&str, bool)>, &str) = match self.kind {
            ChainViewKind::Solana => (evm.to_vec(), "evm"),
            ChainViewKind::Evm => (solana.to_vec(), "solana"),
            ChainViewKind::DevHttp => {
                let mut all = solana.to_vec();
                all.extend(evm);
                all.push(("payment_address", self.payment_address.is_some()));
                (all, "solana\" or \"evm")
            }
        };
        match foreign.iter().find(|(_, set)| *set) {
            Some((field, _)) => Err(self.invalid(format!(
                "{field} is not a setting of kind \"{}\" (it is for kind \"{owner}\")",
                self.kind.as_str()
            ))),
            None => Ok(()),
        }
    }

    /// `kind = "solana"`: the adapter's settings (this guardian's own node). Refused
    /// when a field the kind needs is missing or malformed, or one it does not use is
    /// set (a `dev_http` chain with Solana fields is a mistake worth reporting).
    pub fn solana_config(&self) -> Result<ubtc_chains::solana::SolanaConfig, ConfigError> {
        let invalid = |m: String| self.invalid(m);
        if self.kind != ChainViewKind::Solana {
            return Err(invalid("not a solana chain".into()));
        }
        self.needs_http_url()?;
        self.refuse_foreign_fields()?;
        let address = self
            .payment_address
            .as_deref()
            .ok_or_else(|| invalid("kind \"solana\" needs payment_address".into()))?;
        let key = |what: &str, v: &str| {
            ubtc_chains::solana::wire::decode_pubkey(v)
                .map(|_| ())
                .map_err(|e| invalid(format!("{what} {v:?}: {e}")))
        };
        key("payment_address", address)?;
        let mut c = ubtc_chains::solana::SolanaConfig::new(self.name.clone(), &self.url, address);
        if let Some(mint) = &self.token_mint {
            key("token_mint", mint)?;
            c.token_mint = Some(mint.clone());
        }
        if let Some(level) = &self.commitment {
            c.commitment = ubtc_chains::solana::Commitment::parse(level)
                .map_err(|e| invalid(e.to_string()))?;
        }
        Ok(c)
    }

    /// `kind = "evm"`: the settings of the EVM adapter the monitor uses, pointed at
    /// this guardian's own node. Refused when the URL is not http(s), the chain id or
    /// the confirmations are missing or zero, neither a payment contract nor a payment
    /// address is set, an address is not 20 bytes of hex, or a Solana field is set.
    pub fn evm_config(&self) -> Result<ubtc_chains::evm::EvmConfig, ConfigError> {
        if self.kind != ChainViewKind::Evm {
            return Err(self.invalid("not an evm chain"));
        }
        self.needs_http_url()?;
        self.refuse_foreign_fields()?;
        let chain_id = match self.chain_id {
            Some(id) if id > 0 => id,
            Some(_) => return Err(self.invalid("chain_id must be positive")),
            None => return Err(self.invalid("kind \"evm\" needs chain_id")),
        };
        let confirmations = match self.confirmations {
            Some(n) if n > 0 => n,
            Some(_) => return Err(self.invalid("confirmations must be at least 1")),
            None => return Err(self.invalid("kind \"evm\" needs confirmations")),
        };
        if self.payment_contract.is_none() && self.payment_address.is_none() {
            return Err(self.invalid("kind \"evm\" needs payment_contract or payment_address"));
        }
        let address = |what: &str, v: &Option<String>| -> Result<Option<String>, ConfigError> {
            v.as_deref()
                .map(|a| {
                    ubtc_chains::evm::abi::normalize_address(a).map_err(|_| {
                        self.invalid(format!("{what} {a:?} is not a 20-byte 0x address"))
                    })
                })
                .transpose()
        };
        let mut c = ubtc_chains::evm::EvmConfig::new(self.name.clone(), chain_id, &self.url);
        c.payment_contract = address("payment_contract", &self.payment_contract)?;
        c.payment_address = address("payment_address", &self.payment_address)?;
        c.token_contract = address("token_contract", &self.token_contract)?;
        c.confirmations = confirmations;
        c.retry = guardian_evm_retry();
        Ok(c)
    }

    fn check(&self) -> Result<(), ConfigError> {
        match self.kind {
            ChainViewKind::Solana => self.solana_config().map(|_| ()),
            ChainViewKind::Evm => self.evm_config().map(|_| ()),
            ChainViewKind::DevHttp => self.refuse_foreign_fields(),
        }
    }
}

fn default_passphrase_env() -> String {
    "UBTC_GUARDIAN_PASSPHRASE".into()
}
fn default_versions() -> Vec<u32> {
    vec![STATEMENT_VERSION]
}
fn default_ttl() -> u64 {
    120
}
fn default_rate() -> u32 {
    600
}
fn default_stamp_age() -> u32 {
    MAX_STAMP_AGE_BLOCKS_DEFAULT
}

impl GuardianConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { detail, .. } => ConfigError::Parse {
                path: path.display().to_string(),
                detail,
            },
            other => other,
        })
    }

    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "guardian config".into(),
            detail: e.to_string(),
        })?;
        config.coordinator_keys()?;
        if config.coordinators.is_empty() {
            return Err(ConfigError::Invalid(
                "no coordinator key: the guardian would refuse every request".into(),
            ));
        }
        config.bitcoin.check()?;
        config.policy.check()?;
        if let Some(attest) = &config.attest {
            attest.check()?;
        }
        let mut names = std::collections::BTreeSet::new();
        for chain in &config.chains {
            if !names.insert(&chain.name) {
                return Err(ConfigError::Invalid(format!(
                    "chain {} is configured twice",
                    chain.name
                )));
            }
            chain.check()?;
        }
        if config.max_request_ttl_secs == 0 {
            return Err(ConfigError::Invalid(
                "max_request_ttl_secs must be positive".into(),
            ));
        }
        Ok(config)
    }

    pub fn coordinator_keys(&self) -> Result<Vec<PublicKey>, ConfigError> {
        self.coordinators
            .iter()
            .map(|k| {
                k.parse().map_err(|_| {
                    ConfigError::Invalid(format!(
                        "coordinator key {k:?} is not a compressed public key"
                    ))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "0289979e1b999bbca39ce6f4ae8f55fd39697e15f3cde350c0373c4557f53dd908";

    /// `[policy]` naming the 1-of-1 reserve over KEY.
    fn policy() -> String {
        format!("[policy]\nreserves = [\"{}\"]\n", reserve(1, &[KEY]))
    }

    fn reserve(m: usize, keys: &[&str]) -> String {
        let keys = keys.iter().map(|k| k.parse().unwrap()).collect();
        SortedMulti::new(m, keys)
            .unwrap()
            .descriptor(ubtc_bitcoin::multisig::Wrapping::Wsh)
    }

    #[test]
    fn parses_and_refuses_bad_settings() {
        let ok = format!(
            "listen = \"127.0.0.1:0\"\nkeystore = \"k.json\"\napprovals = \"a.jsonl\"\n\
             coordinators = [\"{KEY}\"]\n[bitcoin]\nbackend = \"dev\"\ndev_height = 850000\n{}\
             [[chains]]\nname = \"dev\"\nkind = \"dev_http\"\nurl = \"http://x\"\n",
            policy()
        );
        let c = GuardianConfig::parse(&ok).expect("valid config");
        assert_eq!(c.passphrase_env, "UBTC_GUARDIAN_PASSPHRASE");
        assert_eq!(c.statement_versions, vec![STATEMENT_VERSION]);
        assert_eq!(c.chains[0].max_signatures_per_minute, 600);
        assert_eq!(c.bitcoin.max_stamp_age_blocks, MAX_STAMP_AGE_BLOCKS_DEFAULT);
        assert!(matches!(
            GuardianConfig::parse(&ok.replace("dev_height = 850000\n", "")),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            GuardianConfig::parse(&ok.replace("backend = \"dev\"", "backend = \"esplora\"")),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            GuardianConfig::parse(&ok.replace(KEY, "02zz")),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            GuardianConfig::parse(&ok.replace(&format!("\"{KEY}\""), "")),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            GuardianConfig::parse(&format!("{ok}passphrase = \"on the command line\"\n")),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn policy_names_reserves_and_forms() {
        let other = crate::GuardianKey::generate().public_hex();
        let other = other.as_str();
        let base = format!(
            "listen = \"127.0.0.1:0\"\nkeystore = \"k.json\"\napprovals = \"a.jsonl\"\n\
             coordinators = [\"{KEY}\"]\nchains = []\n[bitcoin]\nbackend = \"dev\"\ndev_height = 1\n"
        );
        let c = GuardianConfig::parse(&format!("{base}{}", policy())).unwrap();
        assert_eq!(c.policy.forms, vec![Form::Simple]);
        let reserves = c.policy.reserves().unwrap();
        assert_eq!(reserves[0].0, reserve(1, &[KEY]));
        // Keys in another order (with that text's own checksum) name the same reserve,
        // in the canonical text.
        let (first, second) = if other > KEY {
            (other, KEY)
        } else {
            (KEY, other)
        };
        let mixed = ubtc_bitcoin::descriptor::with_checksum(&format!(
            "wsh(sortedmulti(2,{first},{second}))"
        ))
        .unwrap();
        assert_ne!(mixed, reserve(2, &[KEY, other]));
        let c = GuardianConfig::parse(&format!(
            "{base}[policy]\nreserves = [\"{mixed}\"]\nforms = [\"simple\", \"proof_of_funds\"]\n"
        ))
        .unwrap();
        assert_eq!(c.policy.reserves().unwrap()[0].0, reserve(2, &[KEY, other]));
        assert_eq!(c.policy.forms, vec![Form::Simple, Form::ProofOfFunds]);
        let no_checksum = format!("wsh(sortedmulti(1,{KEY}))");
        let good = reserve(1, &[KEY]);
        for (bad, why) in [
            ("[policy]\nreserves = []\n".to_owned(), "empty"),
            (
                format!("[policy]\nreserves = [\"{no_checksum}\"]\n"),
                "checksum",
            ),
            (
                format!("[policy]\nreserves = [\"{good}\", \"{good}\"]\n"),
                "twice",
            ),
            (
                format!("[policy]\nreserves = [\"{good}\"]\nforms = []\n"),
                "forms",
            ),
        ] {
            match GuardianConfig::parse(&format!("{base}{bad}")) {
                Err(ConfigError::Invalid(m)) => assert!(m.contains(why), "{why}: {m}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        // No [policy] at all, or a form that does not exist: refused at parse.
        assert!(matches!(
            GuardianConfig::parse(&base),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            GuardianConfig::parse(&format!(
                "{base}[policy]\nreserves = [\"{good}\"]\nforms = [\"any\"]\n"
            )),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn solana_chains_build_the_solana_adapter_and_bad_ones_are_refused() {
        let mint = "So11111111111111111111111111111111111111112";
        let pay = "9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM";
        let base = format!(
            "listen = \"127.0.0.1:0\"\nkeystore = \"k.json\"\napprovals = \"a.jsonl\"\n\
             coordinators = [\"{KEY}\"]\n[bitcoin]\nbackend = \"dev\"\ndev_height = 850000\n{}",
            policy()
        );
        let chain = format!(
            "[[chains]]\nname = \"solana\"\nkind = \"solana\"\nurl = \"https://rpc.example\"\n\
             payment_address = \"{pay}\"\ntoken_mint = \"{mint}\"\ncommitment = \"confirmed\"\n"
        );
        let c = GuardianConfig::parse(&format!("{base}{chain}")).expect("valid solana chain");
        let s = c.chains[0].solana_config().unwrap();
        assert_eq!(s.rpc_url, "https://rpc.example");
        assert_eq!(s.payment_address, pay);
        assert_eq!(s.token_mint.as_deref(), Some(mint));
        assert_eq!(s.commitment, ubtc_chains::solana::Commitment::Confirmed);
        assert!(ubtc_chains::solana::SolanaAdapter::new(s).is_ok());
        // Defaults: finalized, no mint.
        let minimal = chain
            .replace(&format!("token_mint = \"{mint}\"\n"), "")
            .replace("commitment = \"confirmed\"\n", "");
        let c = GuardianConfig::parse(&format!("{base}{minimal}")).unwrap();
        let s = c.chains[0].solana_config().unwrap();
        assert_eq!(s.commitment, ubtc_chains::solana::Commitment::Finalized);
        assert_eq!(s.token_mint, None);

        for (bad, why) in [
            (
                chain.replace(&format!("payment_address = \"{pay}\"\n"), ""),
                "payment_address",
            ),
            (chain.replace(pay, "0xnot-base58"), "payment_address"),
            (chain.replace(mint, "short"), "token_mint"),
            (chain.replace("\"confirmed\"", "\"processed\""), "processed"),
            (chain.replace("https://rpc.example", "rpc.example"), "http"),
        ] {
            match GuardianConfig::parse(&format!("{base}{bad}")) {
                Err(ConfigError::Invalid(m)) => assert!(m.contains(why), "{why}: {m}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        // Solana fields on a dev chain, or unknown fields: refused.
        let dev = format!(
            "[[chains]]\nname = \"dev\"\nkind = \"dev_http\"\nurl = \"http://x\"\ntoken_mint = \"{mint}\"\n"
        );
        assert!(matches!(
            GuardianConfig::parse(&format!("{base}{dev}")),
            Err(ConfigError::Invalid(_))
        ));
        assert!(matches!(
            GuardianConfig::parse(&format!("{base}{chain}start_slot = 5\n")),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn evm_chains_build_the_evm_adapter_and_bad_ones_are_refused() {
        let router = "0x5FbDB2315678afecb367f032d93F642f64180aa3";
        let token = "0x00000000000000000000000000000000000000aa";
        let base = format!(
            "listen = \"127.0.0.1:0\"\nkeystore = \"k.json\"\napprovals = \"a.jsonl\"\n\
             coordinators = [\"{KEY}\"]\n[bitcoin]\nbackend = \"dev\"\ndev_height = 850000\n"
        );
        let chain = format!(
            "[[chains]]\nname = \"ethereum\"\nkind = \"evm\"\nurl = \"https://node.example/key\"\n\
             chain_id = 1\npayment_contract = \"{router}\"\ntoken_contract = \"{token}\"\n\
             confirmations = 12\n"
        );
        let c = GuardianConfig::parse(&format!("{base}{chain}")).expect("valid evm chain");
        let e = c.chains[0].evm_config().unwrap();
        assert_eq!(e.rpc_url, "https://node.example/key");
        assert_eq!(e.chain_id, 1);
        assert_eq!(e.confirmations, 12);
        assert_eq!(
            e.payment_contract.as_deref(),
            Some(router.to_lowercase().as_str())
        );
        assert_eq!(e.token_contract.as_deref(), Some(token));
        assert_eq!(e.payment_address, None);
        assert!(ubtc_chains::evm::EvmAdapter::new(e).is_ok());
        // The node's URL may hold a provider key: not in Debug.
        assert!(!format!("{c:?}").contains("node.example"));
        // Plain transfers alone are enough.
        let plain = chain.replace(
            &format!("payment_contract = \"{router}\"\n"),
            "payment_address = \"0x00000000000000000000000000000000000000bb\"\n",
        );
        assert!(GuardianConfig::parse(&format!("{base}{plain}")).is_ok());

        for (bad, why) in [
            (chain.replace("chain_id = 1\n", ""), "needs chain_id"),
            (
                chain.replace("chain_id = 1\n", "chain_id = 0\n"),
                "chain_id",
            ),
            (
                chain.replace("confirmations = 12\n", ""),
                "needs confirmations",
            ),
            (
                chain.replace("confirmations = 12\n", "confirmations = 0\n"),
                "confirmations",
            ),
            (
                chain.replace(&format!("payment_contract = \"{router}\"\n"), ""),
                "payment_contract or payment_address",
            ),
            (chain.replace(router, "0x1234"), "payment_contract"),
            (chain.replace(token, "not-hex"), "token_contract"),
            (chain.replace("https://node.example/key", ""), "http"),
            (
                chain.replace("https://node.example/key", "node.example"),
                "http",
            ),
            (format!("{chain}commitment = \"finalized\"\n"), "commitment"),
            (format!("{chain}token_mint = \"x\"\n"), "token_mint"),
            (format!("{chain}{chain}"), "configured twice"),
        ] {
            match GuardianConfig::parse(&format!("{base}{bad}")) {
                Err(ConfigError::Invalid(m)) => assert!(m.contains(why), "{why}: {m}"),
                other => panic!("{why}: {other:?}"),
            }
        }
        // No url at all: a parse error naming the field.
        match GuardianConfig::parse(&format!(
            "{base}{}",
            chain.replace("url = \"https://node.example/key\"\n", "")
        )) {
            Err(ConfigError::Parse { detail, .. }) => assert!(detail.contains("url"), "{detail}"),
            other => panic!("{other:?}"),
        }
        // EVM fields on a dev or a Solana chain: refused.
        let dev = "[[chains]]\nname = \"dev\"\nkind = \"dev_http\"\nurl = \"http://x\"\n";
        let sol = "[[chains]]\nname = \"solana\"\nkind = \"solana\"\nurl = \"http://x\"\n\
                   payment_address = \"9WzDXwBbmkg8ZTbNMqUxvQRAyrZzDsGYdLVL9zYtAWWM\"\n";
        for (other, field) in [
            (dev, "chain_id = 1\n"),
            (dev, "confirmations = 3\n"),
            (dev, format!("payment_contract = \"{router}\"\n").as_str()),
            (sol, format!("token_contract = \"{token}\"\n").as_str()),
            (sol, "chain_id = 1\n"),
        ] {
            match GuardianConfig::parse(&format!("{base}{other}{field}")) {
                Err(ConfigError::Invalid(m)) => assert!(m.contains("not a setting"), "{m}"),
                res => panic!("{field} on {other}: {res:?}"),
            }
        }
    }
}
