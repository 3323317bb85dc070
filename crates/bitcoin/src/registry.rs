//! Signing and verifying reserve registry versions (`ubtc_core::registry`).
//!
//! A guardian signs a version with its guardian key (the same key that is its reserve
//! key) as ECDSA over
//! `SHA-256("ubtc-reserve-registry-signature-v1\n" || canonical text)`. The tag keeps
//! a registry signature apart from everything else that key signs: guardian protocol
//! envelopes use their own tags (`ubtc-guardian-…`), and BIP-322 signatures are over a
//! transaction sighash of a BIP-340 tagged message hash, never over a bare SHA-256 of
//! text that starts with this tag.
//!
//! [`follow`] is what a verifier does: starting from a version it trusts, it accepts a
//! later version only when it names the previous one's fingerprint, has the next
//! version number, the same network, descriptors that match the keys and thresholds it
//! states, and M valid signatures by distinct guardians of the previous version.

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::{ecdsa, Message, PublicKey, SecretKey};
use ubtc_core::registry::{RegistrySignature, RegistryVersion, REGISTRY_MAX_VERSIONS};

use crate::bundle::network_of;
use crate::descriptor::Descriptor;
use crate::SECP;

/// Domain tag of a registry signature.
pub const REGISTRY_SIGNATURE_TAG: &[u8] = b"ubtc-reserve-registry-signature-v1\n";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("registry version {version}: {source}")]
    Shape {
        version: u64,
        source: ubtc_core::registry::RegistryShapeError,
    },
    #[error("registry version {version}: reserve {address}: {reason}")]
    Descriptor {
        version: u64,
        address: String,
        reason: String,
    },
    #[error("registry version {version}: {found} valid guardian signatures, {needed} needed")]
    NotEnoughSignatures {
        version: u64,
        found: usize,
        needed: usize,
    },
    #[error("registry version {version}: guardian {key} signed more than once")]
    DuplicateSigner { version: u64, key: String },
    #[error("registry version {version}: signer {key} is not a guardian of the version that must sign it")]
    NotAGuardian { version: u64, key: String },
    #[error("registry version {version}: the signature by {key} does not verify")]
    BadSignature { version: u64, key: String },
    #[error("registry version {version} names previous {found:?}, but the version before it has fingerprint {expected}")]
    BrokenLink {
        version: u64,
        expected: String,
        found: Option<String>,
    },
    #[error("registry version {found} follows version {previous}; versions must go up by one")]
    VersionNotIncreasing { previous: u64, found: u64 },
    #[error("registry version {version} is for {found}, the chain is for {expected}")]
    NetworkChanged {
        version: u64,
        expected: String,
        found: String,
    },
    #[error("the registry chain has {0} versions; at most {REGISTRY_MAX_VERSIONS} are read")]
    TooManyVersions(usize),
    #[error("two different registry versions numbered {0}")]
    Fork(u64),
    #[error("registry version 1 is the only version that signs itself; version {0} cannot start a chain")]
    NotGenesis(u64),
    #[error("the registry chain is empty")]
    Empty,
}

impl RegistryError {
    /// Stable code for API answers, command output and tests.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Shape { source, .. } => source.code(),
            Self::Descriptor { .. } => "registry_descriptor_mismatch",
            Self::NotEnoughSignatures { .. } => "registry_not_enough_signatures",
            Self::DuplicateSigner { .. } => "registry_duplicate_signer",
            Self::NotAGuardian { .. } => "registry_not_a_guardian",
            Self::BadSignature { .. } => "registry_bad_signature",
            Self::BrokenLink { .. } => "registry_broken_link",
            Self::VersionNotIncreasing { .. } => "registry_version_not_increasing",
            Self::NetworkChanged { .. } => "registry_network_changed",
            Self::TooManyVersions(_) => "registry_too_long",
            Self::Fork(_) => "registry_fork",
            Self::NotGenesis(_) => "registry_not_genesis",
            Self::Empty => "registry_empty",
        }
    }
}

/// The 32-byte digest a guardian signs for `version`.
pub fn signing_digest(version: &RegistryVersion) -> [u8; 32] {
    let text = version.canonical_text();
    let mut bytes = Vec::with_capacity(REGISTRY_SIGNATURE_TAG.len() + text.len());
    bytes.extend_from_slice(REGISTRY_SIGNATURE_TAG);
    bytes.extend_from_slice(text.as_bytes());
    sha256::Hash::hash(&bytes).to_byte_array()
}

/// One guardian's signature over `version`.
pub fn sign(version: &RegistryVersion, secret: &SecretKey) -> RegistrySignature {
    let msg = Message::from_digest(signing_digest(version));
    let sig = SECP.sign_ecdsa(&msg, secret);
    RegistrySignature {
        key: PublicKey::from_secret_key(&SECP, secret).to_string(),
        signature: hex::encode(sig.serialize_der()),
    }
}

/// Shape, and every reserve's descriptor against the address, threshold and keys the
/// version states.
pub fn check_content(v: &RegistryVersion) -> Result<(), RegistryError> {
    v.check_shape().map_err(|source| RegistryError::Shape {
        version: v.version,
        source,
    })?;
    let network = network_of(v.network);
    for r in &v.reserves {
        let bad = |reason: String| RegistryError::Descriptor {
            version: v.version,
            address: r.address.clone(),
            reason,
        };
        let d = Descriptor::parse(&r.descriptor).map_err(|e| bad(format!("descriptor: {e}")))?;
        if d.address(network).to_string() != r.address {
            return Err(bad(format!(
                "the descriptor's address on {} is {}",
                v.network.as_str(),
                d.address(network)
            )));
        }
        let (threshold, mut keys) = d.threshold_and_keys();
        if threshold != r.threshold as usize {
            return Err(bad(format!(
                "the descriptor needs {threshold} signatures, the registry states {}",
                r.threshold
            )));
        }
        let mut stated = r.keys.clone();
        keys.sort();
        stated.sort();
        if keys != stated {
            return Err(bad("the descriptor's keys are not the stated keys".into()));
        }
    }
    Ok(())
}

/// `v` carries at least `signers.guardian_threshold` valid signatures by distinct
/// guardians of `signers`. Any signature that is not one (duplicate, stranger, bad
/// bytes) makes the version invalid rather than being skipped: a signed document
/// with a forged signature in it is not one the guardians published.
pub fn check_signatures(
    v: &RegistryVersion,
    signers: &RegistryVersion,
) -> Result<(), RegistryError> {
    let msg = Message::from_digest(signing_digest(v));
    let mut seen = std::collections::HashSet::new();
    for s in &v.signatures {
        if !seen.insert(s.key.as_str()) {
            return Err(RegistryError::DuplicateSigner {
                version: v.version,
                key: s.key.clone(),
            });
        }
        if !signers.guardians.contains(&s.key) {
            return Err(RegistryError::NotAGuardian {
                version: v.version,
                key: s.key.clone(),
            });
        }
        let bad = || RegistryError::BadSignature {
            version: v.version,
            key: s.key.clone(),
        };
        let key: PublicKey = s.key.parse().map_err(|_| bad())?;
        let der = hex::decode(&s.signature).map_err(|_| bad())?;
        let sig = ecdsa::Signature::from_der(&der).map_err(|_| bad())?;
        SECP.verify_ecdsa(&msg, &sig, &key).map_err(|_| bad())?;
    }
    let needed = signers.guardian_threshold as usize;
    if seen.len() < needed {
        return Err(RegistryError::NotEnoughSignatures {
            version: v.version,
            found: seen.len(),
            needed,
        });
    }
    Ok(())
}

/// Version 1, signed by its own guardians.
pub fn check_genesis(v: &RegistryVersion) -> Result<(), RegistryError> {
    if v.version != 1 {
        return Err(RegistryError::NotGenesis(v.version));
    }
    check_content(v)?;
    check_signatures(v, v)
}

/// `next` is a valid successor of `prev`.
pub fn check_next(prev: &RegistryVersion, next: &RegistryVersion) -> Result<(), RegistryError> {
    if next.version != prev.version.saturating_add(1) {
        return Err(RegistryError::VersionNotIncreasing {
            previous: prev.version,
            found: next.version,
        });
    }
    let expected = prev.fingerprint();
    if next.previous.as_deref() != Some(expected.as_str()) {
        return Err(RegistryError::BrokenLink {
            version: next.version,
            expected,
            found: next.previous.clone(),
        });
    }
    if next.network != prev.network {
        return Err(RegistryError::NetworkChanged {
            version: next.version,
            expected: prev.network.as_str().into(),
            found: next.network.as_str().into(),
        });
    }
    check_content(next)?;
    check_signatures(next, prev)
}

/// From `trusted` (taken as given: the caller pinned it), every version of `chain`
/// after it, in order. Versions of `chain` older than `trusted` are ignored; one with
/// the same number but another fingerprint is a fork and refused. Returns the accepted
/// versions, `trusted` first.
pub fn follow<'a>(
    trusted: &'a RegistryVersion,
    chain: &'a [RegistryVersion],
) -> Result<Vec<&'a RegistryVersion>, RegistryError> {
    if chain.len() > REGISTRY_MAX_VERSIONS {
        return Err(RegistryError::TooManyVersions(chain.len()));
    }
    check_content(trusted)?;
    let anchor = trusted.fingerprint();
    let mut accepted = vec![trusted];
    for v in chain {
        if v.version < trusted.version {
            continue;
        }
        if v.version == trusted.version {
            if v.fingerprint() != anchor {
                return Err(RegistryError::Fork(v.version));
            }
            continue;
        }
        let last = accepted[accepted.len() - 1];
        if v.version == last.version {
            // The same version twice is harmless; two different ones under one
            // number are the guardians (or a thief of M keys) saying two things.
            if v.fingerprint() != last.fingerprint() {
                return Err(RegistryError::Fork(v.version));
            }
            continue;
        }
        check_next(last, v)?;
        accepted.push(v);
    }
    Ok(accepted)
}

/// A whole chain from its version 1: what a store checks before it keeps a version,
/// and what a verifier with no pin can at least check.
pub fn verify_chain(chain: &[RegistryVersion]) -> Result<Vec<&RegistryVersion>, RegistryError> {
    let first = chain.first().ok_or(RegistryError::Empty)?;
    check_genesis(first)?;
    follow(first, chain)
}

/// One reserve address as the operator's store lists it, for [`propose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProposedReserve {
    pub address: String,
    pub descriptor: String,
    pub active: bool,
}

/// The unsigned next version after `previous` (none: version 1): the reserves with
/// their thresholds and keys read from their descriptors, and the guardian set that
/// will sign the version after it. The result is checked like any received version,
/// so a proposal that could never verify is refused here, before anybody signs it.
pub fn propose(
    previous: Option<&RegistryVersion>,
    network: ubtc_core::bundle::BitcoinNetwork,
    guardians: Vec<String>,
    guardian_threshold: u32,
    reserves: &[ProposedReserve],
) -> Result<RegistryVersion, RegistryError> {
    use ubtc_core::registry::{RegistryReserve, ReserveStatus, REGISTRY_FORMAT};
    let version = previous.map_or(1, |p| p.version.saturating_add(1));
    let mut out = Vec::with_capacity(reserves.len());
    for r in reserves {
        let d = Descriptor::parse(&r.descriptor).map_err(|e| RegistryError::Descriptor {
            version,
            address: r.address.clone(),
            reason: format!("descriptor: {e}"),
        })?;
        let (threshold, keys) = d.threshold_and_keys();
        out.push(RegistryReserve {
            descriptor: r.descriptor.clone(),
            address: r.address.clone(),
            threshold: u32::try_from(threshold).unwrap_or(u32::MAX),
            keys,
            status: if r.active {
                ReserveStatus::Active
            } else {
                ReserveStatus::Retired
            },
        });
    }
    out.sort_by(|a, b| a.address.cmp(&b.address));
    let mut guardians = guardians;
    guardians.sort();
    let v = RegistryVersion {
        format: REGISTRY_FORMAT.to_string(),
        version,
        network,
        guardians,
        guardian_threshold,
        reserves: out,
        previous: previous.map(RegistryVersion::fingerprint),
        signatures: Vec::new(),
    };
    check_content(&v)?;
    Ok(v)
}

/// Adds `signature` to `version`, replacing an earlier one by the same key (signing
/// twice is harmless; two entries for one key would make the version invalid).
pub fn add_signature(
    version: &mut RegistryVersion,
    signature: ubtc_core::registry::RegistrySignature,
) {
    version.signatures.retain(|s| s.key != signature.key);
    version.signatures.push(signature);
    version.signatures.sort_by(|a, b| a.key.cmp(&b.key));
}
