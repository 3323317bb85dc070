//! The reserve attestation: a versioned JSON document that proves the reserve figures
//! at one Bitcoin block. It lists every reserve address with its UTXOs at that block,
//! the token supply of every chain at a named block, the totals and the ratio, the
//! reserve registry it covers and the audit log's head; a BIP-322 proof of funds
//! (`pof`) spends every listed UTXO with the attestation *text* as its message, and the
//! guardians approve the text's digest.
//!
//! This module owns the format, the strict parser, the deterministic text and the
//! digests; the `bitcoin` crate builds the proof of funds and verifies it. The format
//! is documented in `docs/attestation.md`.
//!
//! Parsing is strict and bounded: the byte size is checked before JSON parsing,
//! unknown fields are refused, and [`ReserveAttestation::check_shape`] checks every
//! list length, hex field, duplicate and amount bound before any signature is looked
//! at, so a hostile document costs little to refuse.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::amount::TokenAmount;
use crate::bundle::{BitcoinNetwork, Utxo};
use crate::chain::ChainId;
use crate::time::Timestamp;

/// Value of the document's `format` field.
pub const ATTESTATION_FORMAT: &str = "ubtc-reserve-attestation";
/// Format version this build writes and reads.
pub const ATTESTATION_VERSION: u32 = 1;
/// Largest document accepted, in bytes, checked before parsing. A 10,000-UTXO 2-of-3
/// attestation is about 7 MB (the proof of funds is most of it).
pub const ATTESTATION_MAX_BYTES: usize = 12 * 1024 * 1024;
/// Most reserve addresses in one attestation.
pub const ATTESTATION_MAX_RESERVES: usize = 64;
/// Most UTXOs in one attestation, over all reserves (the proof of funds has one input
/// more: the BIP-322 challenge).
pub const ATTESTATION_MAX_UTXOS: usize = 10_000;
/// Most supply entries (one per chain and token).
pub const ATTESTATION_MAX_SUPPLY: usize = 32;
/// Most guardian approvals.
pub const ATTESTATION_MAX_APPROVALS: usize = 32;
/// Longest `text` accepted (the real one is well under 8 KiB with 32 supply lines).
pub const ATTESTATION_MAX_TEXT_BYTES: usize = 16 * 1024;
/// Longest reserve address.
pub const ATTESTATION_MAX_ADDRESS_CHARS: usize = 128;
/// Longest reserve descriptor (as in the `bitcoin` crate's descriptor parser).
pub const ATTESTATION_MAX_DESCRIPTOR_CHARS: usize = 4096;
/// Longest UTXO script, in hex characters (consensus script size limit, doubled).
pub const ATTESTATION_MAX_SCRIPT_HEX_CHARS: usize = 20_000;
/// Longest supply `token` or `block_hash`.
pub const ATTESTATION_MAX_SUPPLY_FIELD_CHARS: usize = 128;
/// Most decimals a supply entry may have (10^38 still fits in `u128`).
pub const ATTESTATION_MAX_DECIMALS: u8 = 38;
/// The 21 million BTC supply in satoshis: no UTXO, and no total, may claim more.
pub const MAX_MONEY_SATS: u64 = 21_000_000 * 100_000_000;
/// A ratio of 1 in parts per million.
pub const RATIO_ONE_PPM: u64 = 1_000_000;

/// First line of the attestation text.
pub const ATTESTATION_TEXT_HEADER: &str = "Universal Bitcoin reserve attestation";
/// Domain tags of the hashes below. Each is distinct and ends in a newline, so no
/// preimage of one can be read as a preimage of another (nor of the guardian
/// protocol's `ubtc-guardian-…-v1\n` envelopes).
pub const UTXO_DIGEST_TAG: &[u8] = b"ubtc-attestation-utxos-v1\n";
pub const RESERVES_DIGEST_TAG: &[u8] = b"ubtc-attestation-reserves-v1\n";
pub const APPROVAL_DIGEST_TAG: &[u8] = b"ubtc-attestation-approval-v1\n";

/// Whether a reserve address still receives deposits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReserveStatus {
    Active,
    /// No longer receives deposits but still holds coins, so it is still attested.
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

/// The Bitcoin block at which the reserve UTXO set was read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestedBlock {
    pub height: u32,
    /// Block hash in the usual (reversed) hex, 64 lowercase characters.
    pub hash: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestedReserve {
    pub address: String,
    /// Output descriptor with checksum; the verifier derives the address and the
    /// script every UTXO below must pay from it.
    pub descriptor: String,
    pub status: ReserveStatus,
    /// The address's UTXOs at the attested block. May be empty.
    pub utxos: Vec<Utxo>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestedSupply {
    pub chain: ChainId,
    /// Token contract (EVM) or mint (Solana) address. ASCII letters and digits.
    pub token: String,
    pub block_number: u64,
    /// The chain's block hash as the chain writes it (`0x…` hex, base58). ASCII
    /// letters and digits.
    pub block_hash: String,
    pub supply: TokenAmount,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationTotals {
    /// Sum of every listed UTXO.
    pub reserve_sats: u64,
    /// Sum of every supply entry converted to satoshis, each rounded *up* (a supply
    /// never looks smaller than it is).
    pub supply_sats: u64,
    /// `floor(reserve_sats * 1_000_000 / supply_sats)`, rounded *down* (the ratio
    /// never looks better than it is); `null` when the supply is zero.
    pub ratio_ppm: Option<u64>,
}

/// The reserve registry version the attestation covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryRef {
    pub version: u64,
    /// The registry's fingerprint, 64 lowercase hex characters.
    pub fingerprint: String,
}

/// One guardian's approval: an ECDSA signature over [`approval_digest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationApproval {
    /// Compressed public key, 66 hex characters.
    pub guardian_key: String,
    /// DER signature, hex.
    pub signature: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveAttestation {
    /// Always [`ATTESTATION_FORMAT`].
    pub format: String,
    /// Always [`ATTESTATION_VERSION`].
    pub version: u32,
    pub network: BitcoinNetwork,
    pub bitcoin_block: AttestedBlock,
    /// Every reserve address. The first `active` one is the proof of funds' BIP-322
    /// challenge.
    pub reserves: Vec<AttestedReserve>,
    pub supply: Vec<AttestedSupply>,
    pub totals: AttestationTotals,
    pub registry: RegistryRef,
    /// Hash-chain head of the audit log when the attestation was made, 64 hex.
    pub audit_head: String,
    pub created_at: Timestamp,
    /// The signed text, for human readers; a verifier rebuilds it from the fields
    /// above and refuses the document when the two differ.
    pub text: String,
    /// `pof…`: BIP-322 proof of funds of `text`, spending every listed UTXO. Empty
    /// while the attestation is being signed.
    pub pof: String,
    pub approvals: Vec<AttestationApproval>,
}

#[derive(Debug, thiserror::Error)]
pub enum AttestationError {
    #[error("attestation is {len} bytes; the maximum is {ATTESTATION_MAX_BYTES}")]
    TooLarge { len: usize },
    #[error("attestation is not valid JSON for this format: {0}")]
    Json(#[from] serde_json::Error),
    #[error("not a reserve attestation (format {0:?})")]
    WrongFormat(String),
    #[error(
        "attestation version {0} is not supported (this build reads version {ATTESTATION_VERSION})"
    )]
    UnsupportedVersion(u32),
    #[error("attestation has no reserve")]
    NoReserves,
    #[error("attestation has no active reserve (the first active one is the proof's challenge)")]
    NoActiveReserve,
    #[error("attestation lists {0} reserves; the maximum is {ATTESTATION_MAX_RESERVES}")]
    TooManyReserves(usize),
    #[error("attestation lists {0} UTXOs; the maximum is {ATTESTATION_MAX_UTXOS}")]
    TooManyUtxos(usize),
    #[error("attestation lists {0} supply entries; the maximum is {ATTESTATION_MAX_SUPPLY}")]
    TooManySupply(usize),
    #[error("attestation has {0} approvals; the maximum is {ATTESTATION_MAX_APPROVALS}")]
    TooManyApprovals(usize),
    #[error("{field} is not {expected}")]
    BadField {
        field: String,
        expected: &'static str,
    },
    #[error("reserve {0} is listed twice")]
    DuplicateReserve(String),
    #[error("UTXO {0} is listed twice")]
    DuplicateUtxo(String),
    #[error("supply of {0} is listed twice")]
    DuplicateSupply(String),
    #[error("guardian {0} approves twice")]
    DuplicateApproval(String),
    #[error("UTXO {outpoint} claims {amount_sats} sats, more than 21 million BTC")]
    AmountTooLarge { outpoint: String, amount_sats: u64 },
    #[error("the UTXOs add up to more than 21 million BTC")]
    TotalTooLarge,
    #[error("the supply does not fit in 64-bit satoshis")]
    SupplyTooLarge,
}

impl AttestationError {
    /// Stable code for reports and APIs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "too_large",
            Self::Json(_) => "malformed",
            Self::WrongFormat(_) => "wrong_format",
            Self::UnsupportedVersion(_) => "unsupported_version",
            Self::NoReserves | Self::NoActiveReserve => "no_active_reserve",
            Self::TooManyReserves(_) => "too_many_reserves",
            Self::TooManyUtxos(_) => "too_many_utxos",
            Self::TooManySupply(_) => "too_many_supply_entries",
            Self::TooManyApprovals(_) => "too_many_approvals",
            Self::BadField { .. } => "bad_field",
            Self::DuplicateReserve(_) => "duplicate_reserve",
            Self::DuplicateUtxo(_) => "duplicate_utxo",
            Self::DuplicateSupply(_) => "duplicate_supply",
            Self::DuplicateApproval(_) => "duplicate_approval",
            Self::AmountTooLarge { .. } | Self::TotalTooLarge => "amount_too_large",
            Self::SupplyTooLarge => "supply_too_large",
        }
    }
}

/// What an attestation is made from, before any signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttestationContent {
    pub network: BitcoinNetwork,
    pub bitcoin_block: AttestedBlock,
    pub reserves: Vec<AttestedReserve>,
    pub supply: Vec<AttestedSupply>,
    pub registry: RegistryRef,
    pub audit_head: String,
    pub created_at: Timestamp,
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn check_hex64(field: impl Into<String>, s: &str) -> Result<(), AttestationError> {
    if s.len() == 64 && is_lower_hex(s) {
        Ok(())
    } else {
        Err(AttestationError::BadField {
            field: field.into(),
            expected: "64 lowercase hex characters",
        })
    }
}

fn check_word(field: impl Into<String>, s: &str) -> Result<(), AttestationError> {
    if !s.is_empty()
        && s.len() <= ATTESTATION_MAX_SUPPLY_FIELD_CHARS
        && s.bytes().all(|b| b.is_ascii_alphanumeric())
    {
        Ok(())
    } else {
        Err(AttestationError::BadField {
            field: field.into(),
            expected: "1 to 128 ASCII letters and digits",
        })
    }
}

/// A token amount in satoshis (8 decimals), rounded up; `None` when it does not fit.
pub fn supply_sats_ceil(amount: &TokenAmount) -> Option<u64> {
    let sats = match amount.decimals.cmp(&8) {
        std::cmp::Ordering::Equal => amount.base_units,
        std::cmp::Ordering::Greater => {
            let scale = 10u128.checked_pow(u32::from(amount.decimals - 8))?;
            amount.base_units.div_ceil(scale)
        }
        std::cmp::Ordering::Less => amount
            .base_units
            .checked_mul(10u128.checked_pow(u32::from(8 - amount.decimals))?)?,
    };
    u64::try_from(sats).ok()
}

/// `floor(reserve * 1e6 / supply)`, or `None` for a zero supply.
pub fn ratio_ppm(reserve_sats: u64, supply_sats: u64) -> Option<u64> {
    (supply_sats > 0).then(|| {
        let ppm = u128::from(reserve_sats) * u128::from(RATIO_ONE_PPM) / u128::from(supply_sats);
        // reserve <= 2.1e15 and the factor is 1e6: at most 2.1e21, which only
        // exceeds u64 for a supply under a millisatoshi; saturate rather than wrap.
        u64::try_from(ppm).unwrap_or(u64::MAX)
    })
}

/// Every UTXO of every reserve in canonical order: by txid (its usual hex, as
/// written in the document), then by vout. The proof of funds spends them in this
/// order, after the challenge input.
pub fn sorted_utxos(reserves: &[AttestedReserve]) -> Vec<&Utxo> {
    let mut all: Vec<&Utxo> = reserves.iter().flat_map(|r| r.utxos.iter()).collect();
    all.sort_unstable_by(|a, b| a.txid.cmp(&b.txid).then(a.vout.cmp(&b.vout)));
    all
}

/// SHA-256 over [`UTXO_DIGEST_TAG`] and one line `txid:vout amount_sats script_hex\n`
/// per UTXO in [`sorted_utxos`] order.
pub fn utxo_digest(reserves: &[AttestedReserve]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(UTXO_DIGEST_TAG);
    let mut line = String::with_capacity(160);
    for u in sorted_utxos(reserves) {
        line.clear();
        // Writing to a String cannot fail.
        let _ = writeln!(
            line,
            "{}:{} {} {}",
            u.txid, u.vout, u.amount_sats, u.script_pubkey_hex
        );
        h.update(line.as_bytes());
    }
    h.finalize().into()
}

/// SHA-256 over [`RESERVES_DIGEST_TAG`] and one line `status descriptor\n` per
/// reserve, in document order (the order decides the challenge).
pub fn reserves_digest(reserves: &[AttestedReserve]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(RESERVES_DIGEST_TAG);
    for r in reserves {
        h.update(r.status.as_str().as_bytes());
        h.update(b" ");
        h.update(r.descriptor.as_bytes());
        h.update(b"\n");
    }
    h.finalize().into()
}

/// The message a guardian's approval signs: `SHA-256(APPROVAL_DIGEST_TAG || digest)`
/// where `digest` is [`ReserveAttestation::digest`].
pub fn approval_digest(attestation_digest: &[u8; 32]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(APPROVAL_DIGEST_TAG);
    h.update(attestation_digest);
    h.finalize().into()
}

impl AttestationContent {
    /// Totals computed from the content: what the document must state.
    pub fn totals(&self) -> Result<AttestationTotals, AttestationError> {
        compute_totals(&self.reserves, &self.supply)
    }
}

fn compute_totals(
    reserves: &[AttestedReserve],
    supply: &[AttestedSupply],
) -> Result<AttestationTotals, AttestationError> {
    let mut reserve_sats: u64 = 0;
    for u in reserves.iter().flat_map(|r| &r.utxos) {
        reserve_sats = reserve_sats
            .checked_add(u.amount_sats)
            .filter(|t| *t <= MAX_MONEY_SATS)
            .ok_or(AttestationError::TotalTooLarge)?;
    }
    let mut supply_sats: u64 = 0;
    for s in supply {
        let sats = supply_sats_ceil(&s.supply).ok_or(AttestationError::SupplyTooLarge)?;
        supply_sats = supply_sats
            .checked_add(sats)
            .ok_or(AttestationError::SupplyTooLarge)?;
    }
    Ok(AttestationTotals {
        reserve_sats,
        supply_sats,
        ratio_ppm: ratio_ppm(reserve_sats, supply_sats),
    })
}

impl ReserveAttestation {
    /// An attestation of `content` with its totals and text, no proof of funds and no
    /// approvals yet. The content is shape-checked.
    pub fn unsigned(content: AttestationContent) -> Result<Self, AttestationError> {
        let totals = content.totals()?;
        let mut att = Self {
            format: ATTESTATION_FORMAT.to_owned(),
            version: ATTESTATION_VERSION,
            network: content.network,
            bitcoin_block: content.bitcoin_block,
            reserves: content.reserves,
            supply: content.supply,
            totals,
            registry: content.registry,
            audit_head: content.audit_head,
            created_at: content.created_at,
            text: String::new(),
            pof: String::new(),
            approvals: Vec::new(),
        };
        att.text = att.rebuild_text();
        att.check_shape()?;
        Ok(att)
    }

    /// Parses and shape-checks a document read from outside. Signatures, scripts and
    /// totals are not checked here (that is the `bitcoin` crate's verifier).
    pub fn from_json(bytes: &[u8]) -> Result<Self, AttestationError> {
        if bytes.len() > ATTESTATION_MAX_BYTES {
            return Err(AttestationError::TooLarge { len: bytes.len() });
        }
        let att: Self = serde_json::from_slice(bytes)?;
        att.check_shape()?;
        Ok(att)
    }

    /// Limits, formats, duplicates and amount bounds: everything that needs no
    /// cryptography. Run before anything expensive.
    pub fn check_shape(&self) -> Result<(), AttestationError> {
        if self.format != ATTESTATION_FORMAT {
            return Err(AttestationError::WrongFormat(self.format.clone()));
        }
        if self.version != ATTESTATION_VERSION {
            return Err(AttestationError::UnsupportedVersion(self.version));
        }
        if self.reserves.is_empty() {
            return Err(AttestationError::NoReserves);
        }
        if self.reserves.len() > ATTESTATION_MAX_RESERVES {
            return Err(AttestationError::TooManyReserves(self.reserves.len()));
        }
        let utxo_count: usize = self.reserves.iter().map(|r| r.utxos.len()).sum();
        if utxo_count > ATTESTATION_MAX_UTXOS {
            return Err(AttestationError::TooManyUtxos(utxo_count));
        }
        if self.supply.len() > ATTESTATION_MAX_SUPPLY {
            return Err(AttestationError::TooManySupply(self.supply.len()));
        }
        if self.approvals.len() > ATTESTATION_MAX_APPROVALS {
            return Err(AttestationError::TooManyApprovals(self.approvals.len()));
        }
        if self.text.len() > ATTESTATION_MAX_TEXT_BYTES {
            return Err(AttestationError::BadField {
                field: "text".into(),
                expected: "at most 16 KiB",
            });
        }
        if !self
            .reserves
            .iter()
            .any(|r| r.status == ReserveStatus::Active)
        {
            return Err(AttestationError::NoActiveReserve);
        }
        check_hex64("bitcoin_block.hash", &self.bitcoin_block.hash)?;
        check_hex64("registry.fingerprint", &self.registry.fingerprint)?;
        check_hex64("audit_head", &self.audit_head)?;

        let mut descriptors = HashSet::with_capacity(self.reserves.len());
        let mut outpoints = HashSet::with_capacity(utxo_count);
        let mut total: u64 = 0;
        for (i, r) in self.reserves.iter().enumerate() {
            if r.address.is_empty()
                || r.address.len() > ATTESTATION_MAX_ADDRESS_CHARS
                || !r.address.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(AttestationError::BadField {
                    field: format!("reserves[{i}].address"),
                    expected: "an address of at most 128 ASCII letters and digits",
                });
            }
            if r.descriptor.is_empty()
                || r.descriptor.len() > ATTESTATION_MAX_DESCRIPTOR_CHARS
                || !r.descriptor.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(AttestationError::BadField {
                    field: format!("reserves[{i}].descriptor"),
                    expected: "a descriptor of at most 4096 printable ASCII characters",
                });
            }
            if !descriptors.insert(r.descriptor.as_str()) {
                return Err(AttestationError::DuplicateReserve(r.address.clone()));
            }
            for (j, u) in r.utxos.iter().enumerate() {
                check_hex64(format!("reserves[{i}].utxos[{j}].txid"), &u.txid)?;
                if u.script_pubkey_hex.is_empty()
                    || u.script_pubkey_hex.len() > ATTESTATION_MAX_SCRIPT_HEX_CHARS
                    || u.script_pubkey_hex.len() % 2 != 0
                    || !is_lower_hex(&u.script_pubkey_hex)
                {
                    return Err(AttestationError::BadField {
                        field: format!("reserves[{i}].utxos[{j}].script_pubkey_hex"),
                        expected: "lowercase hex of a script",
                    });
                }
                if u.amount_sats > MAX_MONEY_SATS {
                    return Err(AttestationError::AmountTooLarge {
                        outpoint: format!("{}:{}", u.txid, u.vout),
                        amount_sats: u.amount_sats,
                    });
                }
                total = total
                    .checked_add(u.amount_sats)
                    .filter(|t| *t <= MAX_MONEY_SATS)
                    .ok_or(AttestationError::TotalTooLarge)?;
                if !outpoints.insert((u.txid.as_str(), u.vout)) {
                    return Err(AttestationError::DuplicateUtxo(format!(
                        "{}:{}",
                        u.txid, u.vout
                    )));
                }
            }
        }

        let mut tokens = HashSet::with_capacity(self.supply.len());
        for (i, s) in self.supply.iter().enumerate() {
            check_word(format!("supply[{i}].token"), &s.token)?;
            check_word(format!("supply[{i}].block_hash"), &s.block_hash)?;
            if s.supply.decimals > ATTESTATION_MAX_DECIMALS {
                return Err(AttestationError::BadField {
                    field: format!("supply[{i}].supply.decimals"),
                    expected: "at most 38",
                });
            }
            if !tokens.insert((s.chain.as_str(), s.token.as_str())) {
                return Err(AttestationError::DuplicateSupply(format!(
                    "{} {}",
                    s.chain, s.token
                )));
            }
        }
        // The supply must be representable: totals() fails otherwise.
        compute_totals(&self.reserves, &self.supply)?;

        let mut guardians = HashSet::with_capacity(self.approvals.len());
        for (i, a) in self.approvals.iter().enumerate() {
            if a.guardian_key.len() != 66 || !is_lower_hex(&a.guardian_key) {
                return Err(AttestationError::BadField {
                    field: format!("approvals[{i}].guardian_key"),
                    expected: "a compressed public key (66 lowercase hex characters)",
                });
            }
            // A DER ECDSA signature is at most 72 bytes.
            if a.signature.is_empty() || a.signature.len() > 144 || !is_lower_hex(&a.signature) {
                return Err(AttestationError::BadField {
                    field: format!("approvals[{i}].signature"),
                    expected: "a DER signature (at most 144 lowercase hex characters)",
                });
            }
            if !guardians.insert(a.guardian_key.as_str()) {
                return Err(AttestationError::DuplicateApproval(a.guardian_key.clone()));
            }
        }
        Ok(())
    }

    /// The totals the content implies (the verifier compares them with `totals`).
    pub fn computed_totals(&self) -> Result<AttestationTotals, AttestationError> {
        compute_totals(&self.reserves, &self.supply)
    }

    /// The attestation text, rebuilt from the document's fields (never from `text`).
    /// ASCII, one `key: value` per line, each line ending in `\n`:
    ///
    /// ```text
    /// Universal Bitcoin reserve attestation
    /// version: 1
    /// network: bitcoin
    /// bitcoin-block: <height> <hash>
    /// reserves: <count> <reserves digest hex>
    /// utxos: <count> <UTXO digest hex>
    /// supply: <chain> <token> <block number> <block hash> <base units> <decimals>   (one per entry, or "supply: none")
    /// reserve-sats: <n>
    /// supply-sats: <n>
    /// ratio-ppm: <n or none>
    /// registry: <version> <fingerprint>
    /// audit-head: <hex>
    /// created-at: <RFC 3339>
    /// ```
    ///
    /// The stated `totals` are what goes in; the verifier separately checks that they
    /// equal the computed ones.
    pub fn rebuild_text(&self) -> String {
        let utxo_count: usize = self.reserves.iter().map(|r| r.utxos.len()).sum();
        let mut t = String::with_capacity(1024);
        // Writing to a String cannot fail.
        let _ = writeln!(t, "{ATTESTATION_TEXT_HEADER}");
        let _ = writeln!(t, "version: {}", self.version);
        let _ = writeln!(t, "network: {}", self.network.as_str());
        let _ = writeln!(
            t,
            "bitcoin-block: {} {}",
            self.bitcoin_block.height, self.bitcoin_block.hash
        );
        let _ = writeln!(
            t,
            "reserves: {} {}",
            self.reserves.len(),
            hex::encode(reserves_digest(&self.reserves))
        );
        let _ = writeln!(
            t,
            "utxos: {} {}",
            utxo_count,
            hex::encode(utxo_digest(&self.reserves))
        );
        if self.supply.is_empty() {
            let _ = writeln!(t, "supply: none");
        }
        for s in &self.supply {
            let _ = writeln!(
                t,
                "supply: {} {} {} {} {} {}",
                s.chain,
                s.token,
                s.block_number,
                s.block_hash,
                s.supply.base_units,
                s.supply.decimals
            );
        }
        let _ = writeln!(t, "reserve-sats: {}", self.totals.reserve_sats);
        let _ = writeln!(t, "supply-sats: {}", self.totals.supply_sats);
        match self.totals.ratio_ppm {
            Some(ppm) => {
                let _ = writeln!(t, "ratio-ppm: {ppm}");
            }
            None => {
                let _ = writeln!(t, "ratio-ppm: none");
            }
        }
        let _ = writeln!(
            t,
            "registry: {} {}",
            self.registry.version, self.registry.fingerprint
        );
        let _ = writeln!(t, "audit-head: {}", self.audit_head);
        let _ = writeln!(t, "created-at: {}", self.created_at);
        t
    }

    /// SHA-256 of [`ReserveAttestation::rebuild_text`]: what guardians approve (under
    /// [`approval_digest`]).
    pub fn digest(&self) -> [u8; 32] {
        Sha256::digest(self.rebuild_text().as_bytes()).into()
    }

    /// The BIP-322 challenge reserve: the first active one.
    pub fn challenge(&self) -> Option<&AttestedReserve> {
        self.reserves
            .iter()
            .find(|r| r.status == ReserveStatus::Active)
    }

    pub fn utxo_count(&self) -> usize {
        self.reserves.iter().map(|r| r.utxos.len()).sum()
    }

    pub fn to_json_pretty(&self) -> String {
        // Serializing plain data with string keys cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supply_rounds_up_ratio_down() {
        assert_eq!(supply_sats_ceil(&TokenAmount::new(1, 18)), Some(1));
        assert_eq!(
            supply_sats_ceil(&TokenAmount::new(10_000_000_000, 18)),
            Some(1)
        );
        assert_eq!(
            supply_sats_ceil(&TokenAmount::new(10_000_000_001, 18)),
            Some(2)
        );
        assert_eq!(supply_sats_ceil(&TokenAmount::new(5, 6)), Some(500));
        assert_eq!(supply_sats_ceil(&TokenAmount::new(u128::MAX, 0)), None);
        assert_eq!(ratio_ppm(2, 3), Some(666_666));
        assert_eq!(ratio_ppm(5, 0), None);
    }
}
