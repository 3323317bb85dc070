//! The reserve registry: the published list of reserve descriptors and guardian keys
//! that a verifier pins.
//!
//! A registry is a chain of versions. Version 1 is signed M-of-N by its own guardians;
//! every later version names its predecessor's fingerprint and is signed M-of-N by the
//! *previous* version's guardians, so a verifier that trusts one version can follow
//! every later one without trusting whoever hands it the chain.
//!
//! This module owns the data, its canonical text and the fingerprint. The signature
//! checks live in the `bitcoin` crate (`ubtc_bitcoin::registry`), which has secp256k1.
//!
//! The canonical text is line based ASCII, one field per line, guardians and reserves
//! in sorted order, signatures excluded:
//!
//! ```text
//! Universal Bitcoin reserve registry
//! format-version: 1
//! version: 2
//! network: regtest
//! previous: 5d1c…e0
//! guardian-threshold: 2
//! guardian: 02…
//! guardian: 03…
//! reserve: bcrt1q… active 2 wsh(sortedmulti(2,…))#checksum
//! reserve-keys: bcrt1q… 02… 03… 03…
//! ```
//!
//! The fingerprint is SHA-256 of that text. Sorting in the text (not in the JSON) makes
//! the fingerprint independent of the order a tool wrote the lists in.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bundle::BitcoinNetwork;

/// Value of the registry's `format` field.
pub const REGISTRY_FORMAT: &str = "ubtc-reserve-registry";
/// First line of the canonical text.
pub const REGISTRY_HEADER: &str = "Universal Bitcoin reserve registry";
/// Version of the canonical text this build writes and reads.
pub const REGISTRY_FORMAT_VERSION: u32 = 1;
/// Most guardians in one version.
pub const REGISTRY_MAX_GUARDIANS: usize = 32;
/// Most reserves in one version (active and retired).
pub const REGISTRY_MAX_RESERVES: usize = 256;
/// Most versions in one chain handed to a verifier.
pub const REGISTRY_MAX_VERSIONS: usize = 1024;
/// Longest descriptor or address accepted in a registry.
const MAX_FIELD_CHARS: usize = 4096;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReserveStatus {
    Active,
    Retired,
}

impl ReserveStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Retired => "retired",
        }
    }
}

/// One reserve address as the registry publishes it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryReserve {
    /// Output descriptor with its BIP-380 checksum.
    pub descriptor: String,
    pub address: String,
    /// Signatures the descriptor needs (1 for a single-key descriptor).
    pub threshold: u32,
    /// The descriptor's keys, compressed hex, in descriptor order. A verifier checks
    /// them against the descriptor: the stated keys are what a reader looks at.
    pub keys: Vec<String>,
    pub status: ReserveStatus,
}

/// One guardian's signature over a version's canonical text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistrySignature {
    /// The signer's compressed public key, hex.
    pub key: String,
    /// DER ECDSA signature over the registry signing digest, hex.
    pub signature: String,
}

/// One version of the reserve registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryVersion {
    /// Always [`REGISTRY_FORMAT`].
    pub format: String,
    /// 1, 2, …: each change is the next number.
    pub version: u64,
    pub network: BitcoinNetwork,
    /// Guardian keys (compressed hex) that sign the *next* version.
    pub guardians: Vec<String>,
    /// Signatures of this version's guardians that the next version needs.
    pub guardian_threshold: u32,
    pub reserves: Vec<RegistryReserve>,
    /// Fingerprint of the previous version; `None` for version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Signatures by the previous version's guardians (version 1: its own).
    #[serde(default)]
    pub signatures: Vec<RegistrySignature>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryShapeError {
    #[error("not a reserve registry (format {0:?})")]
    WrongFormat(String),
    #[error("version 0 does not exist; versions start at 1")]
    VersionZero,
    #[error("version 1 names a previous version")]
    FirstHasPrevious,
    #[error("version {0} names no previous version")]
    MissingPrevious(u64),
    #[error("previous fingerprint {0:?} is not 64 lowercase hex characters")]
    BadPrevious(String),
    #[error("{0} guardians; between 1 and {REGISTRY_MAX_GUARDIANS} are allowed")]
    GuardianCount(usize),
    #[error("guardian key {0:?} is not a compressed public key in lowercase hex")]
    BadGuardianKey(String),
    #[error("guardian key {0} is listed twice")]
    DuplicateGuardian(String),
    #[error("guardian threshold {threshold} is not between 1 and {guardians}")]
    BadThreshold { threshold: u32, guardians: usize },
    #[error("{0} reserves; at most {REGISTRY_MAX_RESERVES} are allowed")]
    TooManyReserves(usize),
    #[error("reserve {0} is listed twice")]
    DuplicateReserve(String),
    #[error("reserve field too long or not printable ASCII without spaces: {0:?}")]
    BadReserveField(String),
    #[error("reserve {0}: key {1:?} is not a compressed public key in lowercase hex")]
    BadReserveKey(String, String),
    #[error("reserve {address}: threshold {threshold} is not between 1 and {keys}")]
    BadReserveThreshold {
        address: String,
        threshold: u32,
        keys: usize,
    },
    #[error("{0} signatures; at most {REGISTRY_MAX_GUARDIANS} are allowed")]
    TooManySignatures(usize),
}

impl RegistryShapeError {
    /// Stable code for API answers and command output.
    pub fn code(&self) -> &'static str {
        match self {
            Self::DuplicateReserve(_) => "registry_duplicate_reserve",
            Self::DuplicateGuardian(_) => "registry_duplicate_guardian",
            _ => "registry_malformed",
        }
    }
}

fn is_key_hex(s: &str) -> bool {
    s.len() == 66
        && (s.starts_with("02") || s.starts_with("03"))
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_plain_field(s: &str) -> bool {
    !s.is_empty() && s.len() <= MAX_FIELD_CHARS && s.bytes().all(|b| b.is_ascii_graphic())
}

/// True for 64 lowercase hex characters (a fingerprint).
pub fn is_fingerprint(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl RegistryVersion {
    /// Parses a version read from outside and checks its shape. Signatures and
    /// descriptors are checked by `ubtc_bitcoin::registry`.
    pub fn from_json(bytes: &[u8]) -> Result<Self, RegistryParseError> {
        let v: RegistryVersion = serde_json::from_slice(bytes)?;
        v.check_shape()?;
        Ok(v)
    }

    /// Everything that can be checked without secp256k1 or a descriptor parser.
    pub fn check_shape(&self) -> Result<(), RegistryShapeError> {
        if self.format != REGISTRY_FORMAT {
            return Err(RegistryShapeError::WrongFormat(self.format.clone()));
        }
        match (self.version, &self.previous) {
            (0, _) => return Err(RegistryShapeError::VersionZero),
            (1, Some(_)) => return Err(RegistryShapeError::FirstHasPrevious),
            (n, None) if n > 1 => return Err(RegistryShapeError::MissingPrevious(n)),
            (_, Some(p)) if !is_fingerprint(p) => {
                return Err(RegistryShapeError::BadPrevious(p.clone()))
            }
            _ => {}
        }
        if self.guardians.is_empty() || self.guardians.len() > REGISTRY_MAX_GUARDIANS {
            return Err(RegistryShapeError::GuardianCount(self.guardians.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for g in &self.guardians {
            if !is_key_hex(g) {
                return Err(RegistryShapeError::BadGuardianKey(g.clone()));
            }
            if !seen.insert(g.as_str()) {
                return Err(RegistryShapeError::DuplicateGuardian(g.clone()));
            }
        }
        if self.guardian_threshold == 0 || self.guardian_threshold as usize > self.guardians.len() {
            return Err(RegistryShapeError::BadThreshold {
                threshold: self.guardian_threshold,
                guardians: self.guardians.len(),
            });
        }
        if self.reserves.len() > REGISTRY_MAX_RESERVES {
            return Err(RegistryShapeError::TooManyReserves(self.reserves.len()));
        }
        let mut addresses = std::collections::HashSet::new();
        let mut descriptors = std::collections::HashSet::new();
        for r in &self.reserves {
            for field in [&r.address, &r.descriptor] {
                if !is_plain_field(field) {
                    return Err(RegistryShapeError::BadReserveField(
                        field.chars().take(80).collect(),
                    ));
                }
            }
            if !addresses.insert(r.address.as_str()) {
                return Err(RegistryShapeError::DuplicateReserve(r.address.clone()));
            }
            if !descriptors.insert(r.descriptor.as_str()) {
                return Err(RegistryShapeError::DuplicateReserve(r.descriptor.clone()));
            }
            if let Some(k) = r.keys.iter().find(|k| !is_key_hex(k)) {
                return Err(RegistryShapeError::BadReserveKey(
                    r.address.clone(),
                    k.chars().take(80).collect(),
                ));
            }
            if r.threshold == 0 || r.threshold as usize > r.keys.len() {
                return Err(RegistryShapeError::BadReserveThreshold {
                    address: r.address.clone(),
                    threshold: r.threshold,
                    keys: r.keys.len(),
                });
            }
        }
        if self.signatures.len() > REGISTRY_MAX_GUARDIANS {
            return Err(RegistryShapeError::TooManySignatures(self.signatures.len()));
        }
        Ok(())
    }

    /// The canonical text (see the module documentation). Signatures are not part of
    /// it: they sign it.
    pub fn canonical_text(&self) -> String {
        let mut guardians: Vec<&str> = self.guardians.iter().map(String::as_str).collect();
        guardians.sort_unstable();
        let mut reserves: Vec<&RegistryReserve> = self.reserves.iter().collect();
        reserves.sort_by(|a, b| a.address.cmp(&b.address));
        let mut out = String::with_capacity(256 + reserves.len() * 400);
        out.push_str(REGISTRY_HEADER);
        out.push('\n');
        out.push_str(&format!("format-version: {REGISTRY_FORMAT_VERSION}\n"));
        out.push_str(&format!("version: {}\n", self.version));
        out.push_str(&format!("network: {}\n", self.network.as_str()));
        out.push_str(&format!(
            "previous: {}\n",
            self.previous.as_deref().unwrap_or("none")
        ));
        out.push_str(&format!(
            "guardian-threshold: {}\n",
            self.guardian_threshold
        ));
        for g in guardians {
            out.push_str(&format!("guardian: {g}\n"));
        }
        for r in reserves {
            out.push_str(&format!(
                "reserve: {} {} {} {}\n",
                r.address,
                r.status.as_str(),
                r.threshold,
                r.descriptor
            ));
            out.push_str(&format!(
                "reserve-keys: {} {}\n",
                r.address,
                r.keys.join(" ")
            ));
        }
        out
    }

    /// SHA-256 of the canonical text, lowercase hex: what a verifier pins.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.canonical_text().as_bytes()))
    }

    /// The version as the registry serves it: this with `signatures` cleared, ready
    /// to be signed.
    pub fn unsigned(&self) -> Self {
        Self {
            signatures: Vec::new(),
            ..self.clone()
        }
    }

    pub fn reserve(&self, address: &str) -> Option<&RegistryReserve> {
        self.reserves.iter().find(|r| r.address == address)
    }

    pub fn to_json_pretty(&self) -> String {
        // Plain data with string keys: serialising cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryParseError {
    #[error("registry is not valid JSON for this format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("registry: {0}")]
    Shape(#[from] RegistryShapeError),
}

/// Parses a registry file: either one version (a JSON object) or a chain of versions
/// (a JSON array, oldest first, as `GET /v1/reserves/registry` serves it under
/// `versions`, or a bare array).
pub fn parse_registry_file(bytes: &[u8]) -> Result<Vec<RegistryVersion>, RegistryParseError> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum File {
        One(Box<RegistryVersion>),
        Many(Vec<RegistryVersion>),
        Served { versions: Vec<RegistryVersion> },
    }
    let file: File = serde_json::from_slice(bytes)?;
    let versions = match file {
        File::One(v) => vec![*v],
        File::Many(v) | File::Served { versions: v } => v,
    };
    for v in &versions {
        v.check_shape()?;
    }
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RegistryVersion {
        RegistryVersion {
            format: REGISTRY_FORMAT.into(),
            version: 1,
            network: BitcoinNetwork::Regtest,
            guardians: vec![
                format!("03{}", "b".repeat(64)),
                format!("02{}", "a".repeat(64)),
            ],
            guardian_threshold: 2,
            reserves: vec![RegistryReserve {
                descriptor: "wpkh(02aa)#abcdefgh".into(),
                address: "bcrt1qxyz".into(),
                threshold: 1,
                keys: vec![format!("02{}", "a".repeat(64))],
                status: ReserveStatus::Active,
            }],
            previous: None,
            signatures: vec![],
        }
    }

    #[test]
    fn fingerprint_ignores_list_order_and_signatures() {
        let a = sample();
        let mut b = sample();
        b.guardians.reverse();
        b.signatures.push(RegistrySignature {
            key: "x".into(),
            signature: "y".into(),
        });
        assert_eq!(a.fingerprint(), b.fingerprint());
        let mut c = sample();
        c.guardian_threshold = 1;
        assert_ne!(a.fingerprint(), c.fingerprint());
        assert!(a.canonical_text().starts_with(REGISTRY_HEADER));
    }

    #[test]
    fn shape_errors() {
        assert!(sample().check_shape().is_ok());
        let mut v = sample();
        v.version = 2;
        assert_eq!(v.check_shape(), Err(RegistryShapeError::MissingPrevious(2)));
        let mut v = sample();
        v.previous = Some("00".repeat(32));
        assert_eq!(v.check_shape(), Err(RegistryShapeError::FirstHasPrevious));
        let mut v = sample();
        v.reserves.push(v.reserves[0].clone());
        assert!(matches!(
            v.check_shape(),
            Err(RegistryShapeError::DuplicateReserve(_))
        ));
        let mut v = sample();
        v.guardian_threshold = 3;
        assert!(matches!(
            v.check_shape(),
            Err(RegistryShapeError::BadThreshold { .. })
        ));
        let mut v = sample();
        v.reserves[0].address = "bad address".into();
        assert!(matches!(
            v.check_shape(),
            Err(RegistryShapeError::BadReserveField(_))
        ));
    }
}
