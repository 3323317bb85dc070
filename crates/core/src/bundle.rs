//! The proof bundle: a self-contained, versioned JSON document that answers one paid
//! challenge. `ubtc verify` needs nothing else to check it offline.
//!
//! The schema is documented in `docs/proof-bundle.md`. Parsing is strict: unknown
//! fields are refused (a change to the format bumps [`BUNDLE_VERSION`]), and the size
//! and list lengths are bounded before anything expensive happens.

use serde::{Deserialize, Serialize};

use crate::amount::{Sats, TokenAmount};
use crate::chain::ChainId;
use crate::registry::RegistryVersion;
use crate::statement::Statement;
use crate::time::Timestamp;

/// Value of the bundle's `format` field.
pub const BUNDLE_FORMAT: &str = "ubtc-proof-bundle";
/// Bundle format version this build writes. Version 2 added `registry`.
pub const BUNDLE_VERSION: u32 = 2;
/// The first bundle version, still read (reported as unpinned: it carries no registry).
pub const BUNDLE_VERSION_LEGACY: u32 = 1;
/// Largest bundle accepted, in bytes. Checked before parsing.
pub const BUNDLE_MAX_BYTES: usize = 4 * 1024 * 1024;
/// Most reserve addresses in one bundle.
pub const BUNDLE_MAX_RESERVES: usize = 64;
/// Most UTXOs in one proof of funds.
pub const BUNDLE_MAX_UTXOS: usize = 10_000;

/// The Bitcoin network the reserve addresses live on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BitcoinNetwork {
    Bitcoin,
    Testnet,
    Testnet4,
    Signet,
    Regtest,
}

impl BitcoinNetwork {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bitcoin => "bitcoin",
            Self::Testnet => "testnet",
            Self::Testnet4 => "testnet4",
            Self::Signet => "signet",
            Self::Regtest => "regtest",
        }
    }
}

impl std::str::FromStr for BitcoinNetwork {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "bitcoin" | "mainnet" => Ok(Self::Bitcoin),
            "testnet" => Ok(Self::Testnet),
            "testnet4" => Ok(Self::Testnet4),
            "signet" => Ok(Self::Signet),
            "regtest" => Ok(Self::Regtest),
            other => Err(format!(
                "unknown bitcoin network {other:?} (expected bitcoin, testnet, testnet4, signet or regtest)"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofBundle {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// [`BUNDLE_VERSION`] for bundles this build writes; [`BUNDLE_VERSION_LEGACY`]
    /// is still read.
    pub version: u32,
    pub network: BitcoinNetwork,
    /// The statement's inputs; the verifier rebuilds the signed text from these.
    pub statement: Statement,
    /// The signed text, for human readers. A verifier rebuilds it from `statement`
    /// and refuses the bundle when the two differ.
    pub statement_text: String,
    /// The payment this proof answers.
    pub payment: PaymentInfo,
    /// One BIP-322 (or, for P2PKH, BIP-137) signature of `statement_text` per reserve
    /// address.
    pub reserves: Vec<ReserveSignature>,
    /// Optional BIP-322 proof of funds over the reserve UTXOs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proof_of_funds: Option<ProofOfFunds>,
    /// Token supply per chain at named blocks, when the snapshot had it.
    #[serde(default)]
    pub supply: Vec<SupplyEntry>,
    /// The reserve figures of the snapshot the proof was signed at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserve_figures: Option<ReserveFigures>,
    /// Each guardian's answer for this statement.
    #[serde(default)]
    pub approvals: Vec<GuardianApproval>,
    pub created_at: Timestamp,
    /// The reserve registry the statement was signed under: its versions from 1 up
    /// to the current one, oldest first (version 2 bundles; absent in version 1).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry: Vec<RegistryVersion>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentInfo {
    /// Amount paid in the chain's smallest unit, decimal string.
    #[serde(with = "crate::amount::u128_string")]
    pub amount_base_units: u128,
    /// Name of that unit (`wei`, `lamports`, …).
    pub unit: String,
    pub block_number: u64,
    pub block_hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveSignature {
    pub address: String,
    /// Output descriptor of the address (`wpkh(…)`, `wsh(sortedmulti(2,…))`, …), with
    /// checksum. Tells the reader which keys stand behind the address; the signature is
    /// checked against the address itself.
    pub descriptor: String,
    /// `smp…` / `ful…` BIP-322 signature, or a base64 BIP-137 signature for P2PKH.
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofOfFunds {
    /// The address whose script is the BIP-322 message challenge.
    pub address: String,
    /// `pof…`: a finalized PSBT spending the challenge and every UTXO below.
    pub signature: String,
    /// The UTXOs the proof claims, as the Bitcoin backend reported them at
    /// `bitcoin_height`. An offline verifier checks the PSBT against exactly these.
    pub utxos: Vec<Utxo>,
    pub bitcoin_height: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Utxo {
    pub txid: String,
    pub vout: u32,
    pub amount_sats: u64,
    pub script_pubkey_hex: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupplyEntry {
    pub chain: ChainId,
    /// Token contract (EVM) or mint (Solana) address.
    pub token: String,
    pub block_number: u64,
    pub block_hash: String,
    pub supply: TokenAmount,
    pub as_of: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveFigures {
    pub bitcoin_height: u32,
    pub bitcoin_block_hash: String,
    pub reserve_sats: Sats,
    /// Total token supply over all chains, converted to satoshis.
    pub supply_sats: Sats,
    /// Reserve ratio in parts per million (1_000_000 = fully backed); absent when the
    /// supply is zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio_ppm: Option<u64>,
    pub healthy: bool,
    pub stale: bool,
    pub as_of: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovalDecision {
    Approved,
    Refused,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardianApproval {
    /// The guardian's registered public key (compressed, hex).
    pub guardian_key: String,
    pub decision: ApprovalDecision,
    /// Stable refusal code (`payment_unknown`, `statement_mismatch`, …) when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// SHA-256 of the statement text the guardian saw, hex.
    pub statement_digest: String,
    /// The guardian's identity signature over its answer, when it gave one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    pub at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle is {len} bytes; the maximum is {BUNDLE_MAX_BYTES}")]
    TooLarge { len: usize },
    #[error("bundle is not valid JSON for this format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a proof bundle (format {0:?})")]
    WrongFormat(String),
    #[error("bundle version {0} is not supported (this build reads versions {BUNDLE_VERSION_LEGACY} and {BUNDLE_VERSION})")]
    UnsupportedVersion(u32),
    #[error("a version {BUNDLE_VERSION} bundle must carry its reserve registry")]
    MissingRegistry,
    #[error("a version {BUNDLE_VERSION_LEGACY} bundle cannot carry a registry")]
    UnexpectedRegistry,
    #[error("the bundle's registry has {0} versions; the maximum is {max}", max = crate::registry::REGISTRY_MAX_VERSIONS)]
    RegistryTooLong(usize),
    #[error("bundle has {0} reserve signatures; the maximum is {BUNDLE_MAX_RESERVES}")]
    TooManyReserves(usize),
    #[error("bundle has no reserve signature")]
    NoReserves,
    #[error("proof of funds lists {0} UTXOs; the maximum is {BUNDLE_MAX_UTXOS}")]
    TooManyUtxos(usize),
    #[error("statement: {0}")]
    Statement(#[from] crate::statement::StatementError),
}

impl ProofBundle {
    /// Parses and checks the shape of a bundle read from outside. Signatures are not
    /// checked here (that is the `bitcoin` crate's verifier).
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > BUNDLE_MAX_BYTES {
            return Err(BundleError::TooLarge { len: bytes.len() });
        }
        let bundle: ProofBundle = serde_json::from_slice(bytes)?;
        bundle.check_shape()?;
        Ok(bundle)
    }

    pub fn check_shape(&self) -> Result<(), BundleError> {
        if self.format != BUNDLE_FORMAT {
            return Err(BundleError::WrongFormat(self.format.clone()));
        }
        match self.version {
            BUNDLE_VERSION if self.registry.is_empty() => return Err(BundleError::MissingRegistry),
            BUNDLE_VERSION_LEGACY if !self.registry.is_empty() => {
                return Err(BundleError::UnexpectedRegistry)
            }
            BUNDLE_VERSION | BUNDLE_VERSION_LEGACY => {}
            other => return Err(BundleError::UnsupportedVersion(other)),
        }
        if self.registry.len() > crate::registry::REGISTRY_MAX_VERSIONS {
            return Err(BundleError::RegistryTooLong(self.registry.len()));
        }
        if self.reserves.is_empty() {
            return Err(BundleError::NoReserves);
        }
        if self.reserves.len() > BUNDLE_MAX_RESERVES {
            return Err(BundleError::TooManyReserves(self.reserves.len()));
        }
        if let Some(pof) = &self.proof_of_funds {
            if pof.utxos.len() > BUNDLE_MAX_UTXOS {
                return Err(BundleError::TooManyUtxos(pof.utxos.len()));
            }
        }
        self.statement.validate()?;
        Ok(())
    }

    pub fn to_json_pretty(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
