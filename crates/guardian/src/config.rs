//! A guardian's own configuration (`guardian.toml`). Documented in docs/guardians.md.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use bitcoin::secp256k1::PublicKey;
use serde::Deserialize;
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
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianChain {
    pub name: ChainId,
    /// `dev_http`: the demo's read-only dev-chain endpoint. Real chains come with #5.
    pub kind: ChainViewKind,
    /// Base URL of this guardian's own endpoint for the chain.
    pub url: String,
    /// Most approvals per minute on this chain (policy; 0 = none allowed).
    #[serde(default = "default_rate")]
    pub max_signatures_per_minute: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChainViewKind {
    DevHttp,
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

    #[test]
    fn parses_and_refuses_bad_settings() {
        let ok = format!(
            "listen = \"127.0.0.1:0\"\nkeystore = \"k.json\"\napprovals = \"a.jsonl\"\n\
             coordinators = [\"{KEY}\"]\n[[chains]]\nname = \"dev\"\nkind = \"dev_http\"\nurl = \"http://x\"\n"
        );
        let c = GuardianConfig::parse(&ok).expect("valid config");
        assert_eq!(c.passphrase_env, "UBTC_GUARDIAN_PASSPHRASE");
        assert_eq!(c.statement_versions, vec![STATEMENT_VERSION]);
        assert_eq!(c.chains[0].max_signatures_per_minute, 600);
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
}
