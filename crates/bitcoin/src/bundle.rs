//! Offline verification of proof bundles (`ubtc verify FILE`) and of single messages
//! (`ubtc verify-message ADDRESS MESSAGE SIGNATURE`).
//!
//! The verifier trusts nothing in the bundle but its signatures: it rebuilds the
//! statement text from the statement's fields, checks that every descriptor names its
//! address, and verifies every signature over the rebuilt text. A proof of funds counts
//! only UTXOs paying to the scripts of verified reserves. Whether the proven UTXOs
//! exist and are still unspent is not something an offline verifier can know; the
//! report says so.
//!
//! Which reserves are real is the reserve registry's to say: the verifier follows the
//! registry from the version the user pinned (`--registry FILE` or
//! `--registry-fingerprint HEX`) through every later version reachable by guardian
//! signatures, and every reserve of a bundle must be active in the newest of them (a
//! reserve retired since is refused, not excused by an older version that listed it).
//! Without a pin the bundle is checked against its own registry
//! and the report says loudly that nothing pins it: a forger can bring a registry of
//! their own keys. Fields that no signature covers (figures, supply, payment amount
//! and block, approval metadata) are listed as unsigned and never make a bundle valid.

use std::fmt;
use std::str::FromStr;

use bitcoin::{Address, Network, ScriptBuf};
use serde::Serialize;
use ubtc_core::bundle::{ApprovalDecision, BitcoinNetwork, ProofBundle, Utxo};
use ubtc_core::registry::{RegistryVersion, ReserveStatus};

use crate::bip322::{self, Format, Verified};
use crate::descriptor::Descriptor;
use crate::registry as reg;
use crate::{bip137, pof};

/// The `bitcoin` crate's network for a bundle network.
pub fn network_of(n: BitcoinNetwork) -> Network {
    match n {
        BitcoinNetwork::Bitcoin => Network::Bitcoin,
        BitcoinNetwork::Testnet => Network::Testnet,
        BitcoinNetwork::Testnet4 => Network::Testnet4,
        BitcoinNetwork::Signet => Network::Signet,
        BitcoinNetwork::Regtest => Network::Regtest,
    }
}

/// The outcome for one reserve address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReserveReport {
    pub address: String,
    pub descriptor: String,
    pub valid: bool,
    /// Signatures the descriptor needs, when it parsed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<usize>,
    /// The descriptor's keys (hex), in script order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
    /// For a multisig reserve with a verified signature: the keys whose signatures are
    /// in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signed_by: Option<Vec<String>>,
    /// The newest accepted registry version, when it lists this reserve as active
    /// (the only version a reserve is judged against).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub registry_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    /// "valid at time T and age S" for full signatures with time locks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_time: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u32>,
    /// Why not valid; for BIP-322 "inconclusive" results this starts with `inconclusive`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The outcome of the proof of funds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FundsReport {
    pub address: String,
    pub valid: bool,
    pub bitcoin_height: u32,
    pub utxo_count: usize,
    /// Satoshis proven by a valid proof (0 when invalid).
    pub proven_sats: u64,
    /// The proof's nLockTime, when its signatures verified. A bundle's proof must
    /// have 0 here and in every nSequence: reserves must be spendable now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_time: Option<u32>,
    /// nSequence of every input of the proof's `to_sign`, the challenge first, when its
    /// signatures verified.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sequences: Vec<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What the verifier pins the reserve registry to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryPin {
    /// Versions read from a file the user trusts (one version, or a chain whose first
    /// version is taken as given and whose later ones must follow from it).
    Versions(Vec<RegistryVersion>),
    /// The fingerprint of a version the user trusts; the version itself comes from
    /// the bundle.
    Fingerprint(String),
}

/// The registry part of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RegistryReport {
    /// True when the user pinned a registry and the bundle's reserves were checked
    /// against it (and its signed successors).
    pub pinned: bool,
    /// The pinned version's number and fingerprint.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pinned_fingerprint: Option<String>,
    /// The newest accepted version: the one the reserves were checked against.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_fingerprint: Option<String>,
    /// Number of versions the bundle carries.
    pub bundle_versions: usize,
    /// Why the registry chain was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

/// A bundle field that no signature covers: shown as the operator's claim, never
/// counted towards validity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnsignedField {
    pub field: String,
    pub value: String,
}

/// One guardian approval, checked against the reserve signature where it can be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalReport {
    pub guardian_key: String,
    pub decision: ApprovalDecision,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<String>,
    /// Whether this key's signature is in a multisig reserve signature of the bundle
    /// (unknown when no reserve is a multisig of this key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_signed_reserve: Option<bool>,
    /// The approval record itself is unsigned metadata: its identity signature covers
    /// the guardian's whole batch answer, which the bundle does not carry.
    pub record_signed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Everything `ubtc verify` prints. `Display` is the human report, `Serialize` the
/// `--json` form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleReport {
    /// Every check passed against the registry the bundle was checked against. Read
    /// it together with `pinned`: an unpinned bundle may carry a registry of the
    /// forger's own keys.
    pub valid: bool,
    /// True when the reserves were checked against a registry the user pinned.
    pub pinned: bool,
    /// `valid` (pinned), `unpinned` (valid only against its own registry, or a
    /// version 1 bundle with none) or `invalid`.
    pub verdict: &'static str,
    pub bundle_version: u32,
    pub registry: RegistryReport,
    pub network: String,
    /// Problems with the bundle itself (shape, statement text).
    pub errors: Vec<String>,
    /// Things worth knowing that do not make the bundle invalid.
    pub warnings: Vec<String>,
    pub statement_digest: String,
    pub chain: String,
    pub payment: String,
    pub bitcoin_block: String,
    pub request_id: String,
    pub reserves: Vec<ReserveReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proof_of_funds: Option<FundsReport>,
    /// Total satoshis proven by a valid proof of funds.
    pub proven_sats: u64,
    /// False when the bundle has no valid proof of funds: then no reserve amount is
    /// proven, whatever the unsigned figures say.
    pub funds_proven: bool,
    pub approvals: Vec<ApprovalReport>,
    /// Fields no signature covers.
    pub unsigned: Vec<UnsignedField>,
}

impl BundleReport {
    pub fn is_valid(&self) -> bool {
        self.valid
    }
}

fn btc(sats: u64) -> String {
    format!("{}.{:08}", sats / 100_000_000, sats % 100_000_000)
}

impl fmt::Display for BundleReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let reg = &self.registry;
        match self.verdict {
            "valid" => writeln!(
                f,
                "proof bundle: VALID (reserves checked against the pinned registry)"
            )?,
            "unpinned" => writeln!(
                f,
                "proof bundle: UNPINNED: the signatures check out, but NOTHING PINS THE REGISTRY \
                 (anybody can write a registry of their own keys); pass --registry FILE or \
                 --registry-fingerprint HEX"
            )?,
            _ => writeln!(f, "proof bundle: INVALID")?,
        }
        match (&reg.current_fingerprint, reg.current_version) {
            (Some(fp), Some(v)) => writeln!(f, "  registry:      version {v} fingerprint {fp}")?,
            _ => writeln!(
                f,
                "  registry:      none (version {} bundle)",
                self.bundle_version
            )?,
        }
        if let (Some(fp), Some(v)) = (&reg.pinned_fingerprint, reg.pinned_version) {
            writeln!(f, "  pinned:        version {v} fingerprint {fp}")?;
        } else {
            writeln!(f, "  pinned:        NOTHING")?;
        }
        if let Some(e) = &reg.error {
            writeln!(f, "  registry error: {e}")?;
        }
        writeln!(f, "  network:       {}", self.network)?;
        writeln!(f, "  chain:         {}", self.chain)?;
        writeln!(f, "  payment:       {}", self.payment)?;
        writeln!(f, "  bitcoin block: {}", self.bitcoin_block)?;
        writeln!(f, "  request:       {}", self.request_id)?;
        writeln!(f, "  statement:     sha256 {}", self.statement_digest)?;
        for e in &self.errors {
            writeln!(f, "  error: {e}")?;
        }
        writeln!(f, "reserve signatures:")?;
        for r in &self.reserves {
            if r.valid {
                let format = r.format.map(|x| x.to_string()).unwrap_or_default();
                write!(f, "  ok       {}  ({format})", r.address)?;
                if let (Some(t), Some(s)) = (r.lock_time, r.sequence) {
                    if t != 0 || s != 0 {
                        write!(f, " valid at time {t} and age {s}")?;
                    }
                }
                writeln!(f)?;
            } else {
                writeln!(
                    f,
                    "  INVALID  {}: {}",
                    r.address,
                    r.error.as_deref().unwrap_or("")
                )?;
            }
            if let Some(t) = r.threshold {
                writeln!(f, "           {t}-of-{} keys:", r.keys.len())?;
                for k in &r.keys {
                    let signed = match &r.signed_by {
                        Some(s) if s.contains(k) => "  (signed)",
                        _ => "",
                    };
                    writeln!(f, "             {k}{signed}")?;
                }
            }
            match r.registry_version {
                Some(v) => writeln!(f, "           listed in registry version {v}")?,
                None if reg.current_version.is_some() => {
                    writeln!(f, "           NOT in the registry")?
                }
                None => {}
            }
        }
        if let Some(p) = &self.proof_of_funds {
            writeln!(f, "proof of funds:")?;
            if p.valid {
                writeln!(
                    f,
                    "  ok       {}: {} UTXOs as reported at height {}, {} BTC",
                    p.address,
                    p.utxo_count,
                    p.bitcoin_height,
                    btc(p.proven_sats)
                )?;
            } else {
                writeln!(
                    f,
                    "  INVALID  {}: {}",
                    p.address,
                    p.error.as_deref().unwrap_or("")
                )?;
            }
        }
        if !self.approvals.is_empty() {
            writeln!(f, "guardian approvals (unsigned records; checked against the reserve signature where possible):")?;
            for a in &self.approvals {
                let decision = match a.decision {
                    ApprovalDecision::Approved => "approved".to_string(),
                    ApprovalDecision::Refused => {
                        format!(
                            "refused ({})",
                            a.reason_code.as_deref().unwrap_or("no code")
                        )
                    }
                };
                let signed = match a.key_signed_reserve {
                    Some(true) => ", key signed the reserve",
                    Some(false) => ", key did not sign the reserve",
                    None => "",
                };
                writeln!(f, "  {} {decision}{signed}", a.guardian_key)?;
                if let Some(e) = &a.error {
                    writeln!(f, "    ERROR: {e}")?;
                }
            }
        }
        writeln!(
            f,
            "unsigned (claimed by the operator, covered by no signature, not counted):"
        )?;
        for u in &self.unsigned {
            writeln!(f, "  {}: {}", u.field, u.value)?;
        }
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.funds_proven {
            writeln!(
                f,
                "total proven: {} BTC (UTXOs of the reserve addresses that the reserve keys can spend; \
                 whether they exist and are unspent needs a Bitcoin node)",
                btc(self.proven_sats)
            )
        } else if self.proof_of_funds.is_some() {
            writeln!(
                f,
                "no reserves are proven: the proof of funds did not verify"
            )
        } else {
            writeln!(
                f,
                "no reserves are proven: this bundle has no proof of funds (the signatures prove \
                 control of the reserve keys, not any amount)"
            )
        }
    }
}

/// Verifies every signature in `bundle` against its own registry, with no pin.
pub fn verify_bundle(bundle: &ProofBundle) -> BundleReport {
    verify_bundle_pinned(bundle, None)
}

/// The accepted registry versions, newest last, and the registry report.
fn resolve_registry<'a>(
    bundle: &'a ProofBundle,
    pin: Option<&'a RegistryPin>,
) -> (Vec<&'a RegistryVersion>, RegistryReport) {
    let mut report = RegistryReport {
        pinned: false,
        pinned_version: None,
        pinned_fingerprint: None,
        current_version: None,
        current_fingerprint: None,
        bundle_versions: bundle.registry.len(),
        error: None,
        error_code: None,
    };
    let fail = |mut report: RegistryReport, code: &str, e: String| {
        report.error_code = Some(code.to_string());
        report.error = Some(e);
        (Vec::new(), report)
    };
    let accepted = match pin {
        None if bundle.registry.is_empty() => return (Vec::new(), report),
        None => match reg::verify_chain(&bundle.registry) {
            Ok(a) => a,
            Err(e) => return fail(report, e.code(), e.to_string()),
        },
        Some(RegistryPin::Fingerprint(fp)) => {
            let fp = fp.to_ascii_lowercase();
            report.pinned_fingerprint = Some(fp.clone());
            let Some(trusted) = bundle.registry.iter().find(|v| v.fingerprint() == fp) else {
                return fail(
                    report,
                    "registry_pin_not_found",
                    format!(
                        "the bundle carries no registry version with the pinned fingerprint {fp}"
                    ),
                );
            };
            report.pinned = true;
            report.pinned_version = Some(trusted.version);
            match reg::follow(trusted, &bundle.registry) {
                Ok(a) => a,
                Err(e) => return fail(report, e.code(), e.to_string()),
            }
        }
        Some(RegistryPin::Versions(file)) => {
            // The file's own chain: its first version is what the user trusts, later
            // ones in it must follow by signature like any other.
            let Some(first) = file.first() else {
                return fail(
                    report,
                    "registry_empty",
                    "the pinned registry file is empty".into(),
                );
            };
            let pinned = match reg::follow(first, file) {
                Ok(p) => p,
                Err(e) => return fail(report, e.code(), format!("pinned registry file: {e}")),
            };
            let trusted = pinned[pinned.len() - 1];
            report.pinned = true;
            report.pinned_version = Some(trusted.version);
            report.pinned_fingerprint = Some(trusted.fingerprint());
            match reg::follow(trusted, &bundle.registry) {
                Ok(a) => a,
                Err(e) => return fail(report, e.code(), e.to_string()),
            }
        }
    };
    if let Some(current) = accepted.last() {
        report.current_version = Some(current.version);
        report.current_fingerprint = Some(current.fingerprint());
    }
    (accepted, report)
}

/// Verifies every signature in `bundle`, and its reserves against the registry pinned
/// by `pin` (none: the bundle's own). Never panics on hostile input; every problem
/// ends up in the report.
pub fn verify_bundle_pinned(bundle: &ProofBundle, pin: Option<&RegistryPin>) -> BundleReport {
    let network = network_of(bundle.network);
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if let Err(e) = bundle.check_shape() {
        errors.push(format!("bundle shape: {e}"));
    }
    let st = &bundle.statement;
    let text = st.text();
    if text != bundle.statement_text {
        errors
            .push("statement_text differs from the text rebuilt from the statement fields".into());
    }
    let digest = st.digest_hex();

    let (accepted, registry) = resolve_registry(bundle, pin);
    if let Some(e) = &registry.error {
        errors.push(format!("registry: {e}"));
    }
    let has_registry = registry.error.is_some() || registry.current_version.is_some();
    if let Some(current) = accepted.last() {
        if current.network != bundle.network {
            errors.push(format!(
                "the registry is for {}, the bundle for {}",
                current.network.as_str(),
                bundle.network.as_str()
            ));
        }
    }

    let mut reserves = Vec::with_capacity(bundle.reserves.len());
    let mut seen = std::collections::HashSet::new();
    for r in &bundle.reserves {
        if !seen.insert(r.address.as_str()) {
            warnings.push(format!("reserve {} is listed more than once", r.address));
        }
        let mut report = verify_reserve(network, &r.address, &r.descriptor, &r.signature, &text);
        if let (Some(t), Some(s)) = (report.lock_time, report.sequence) {
            if t != 0 || s != 0 {
                // BIP-322 "valid at time T and age S": the key could only spend later.
                warnings.push(format!(
                    "reserve {} signed with time locks (nLockTime {t}, nSequence {s})",
                    r.address
                ));
            }
        }
        if has_registry {
            // Judged against the newest version the verifier accepts, never an older
            // one: once the guardians retire or drop a reserve (its keys leaked, say),
            // a signature by it proves nothing about the reserves today, whatever an
            // older version said.
            if let Some(current) = accepted.last() {
                match current.reserve(&r.address) {
                    Some(x) if x.descriptor == r.descriptor && x.status == ReserveStatus::Active => {
                        report.registry_version = Some(current.version);
                    }
                    Some(x) if x.descriptor == r.descriptor => errors.push(format!(
                        "reserve {} is retired in registry version {}, the newest the verifier accepts",
                        r.address, current.version
                    )),
                    _ => errors.push(format!(
                        "reserve {} ({}) is not an active reserve of registry version {}, the newest the {} registry reaches by guardian signatures",
                        r.address,
                        r.descriptor,
                        current.version,
                        if registry.pinned { "pinned" } else { "bundle's" }
                    )),
                }
            }
        }
        reserves.push(report);
    }

    let proof_of_funds = bundle.proof_of_funds.as_ref().map(|p| {
        let mut report = FundsReport {
            address: p.address.clone(),
            valid: false,
            bitcoin_height: p.bitcoin_height,
            utxo_count: p.utxos.len(),
            proven_sats: 0,
            lock_time: None,
            sequences: Vec::new(),
            error: None,
        };
        // Only reserves whose descriptor names the address and whose signature
        // verified count: the proof's challenge must be one of them, and every UTXO
        // it proves must pay to one of them. An extra input of a BIP-322 proof of
        // funds can spend any script (an anyone-can-spend output commits to no amount
        // at all), so its script, not its signature, is what ties it to the reserve.
        let verified: Vec<ScriptBuf> = reserves
            .iter()
            .filter(|r| r.valid)
            .filter_map(|r| parse_address(&r.address, Some(network)).ok())
            .map(|a| a.script_pubkey())
            .collect();
        if !reserves.iter().any(|r| r.valid && r.address == p.address) {
            report.error = Some("the address is not one of the bundle's verified reserves".into());
            return report;
        }
        if let Err(e) = check_reserve_utxos(&p.utxos, &verified) {
            report.error = Some(e);
            return report;
        }
        match parse_address(&p.address, Some(network)) {
            Err(e) => report.error = Some(e.to_string()),
            Ok(address) => {
                match pof::verify_pof(&address, text.as_bytes(), &p.signature, &p.utxos) {
                    Ok(funds) => {
                        report.lock_time = Some(funds.lock_time);
                        report.sequences = funds.sequences.clone();
                        if let Err(e) = check_reserve_utxos(&funds.inputs, &verified) {
                            report.error = Some(e);
                        } else if funds.is_time_locked() {
                            // BIP-322 would call this "valid at time T and age S"; a
                            // reserve must be spendable now, so a bundle refuses it.
                            report.error = Some(format!(
                                "the proof uses time locks (nLockTime {}, nSequence {:?}); \
                                 reserve funds must be spendable now, so lock time and \
                                 every nSequence must be 0",
                                funds.lock_time, funds.sequences
                            ));
                        } else {
                            report.valid = true;
                            report.proven_sats = funds.total_sats;
                        }
                    }
                    Err(e) => report.error = Some(e.to_string()),
                }
            }
        }
        report
    });

    let funds_proven = proof_of_funds.as_ref().is_some_and(|p| p.valid);
    let proven_sats = proof_of_funds
        .as_ref()
        .filter(|p| p.valid)
        .map_or(0, |p| p.proven_sats);
    if let Some(figures) = &bundle.reserve_figures {
        // The figures are the operator's claim; the proof is what was checked.
        if figures.reserve_sats.0 > proven_sats {
            warnings.push(format!(
                "the unsigned reserve figures claim {} BTC but the proof of funds covers {} BTC",
                btc(figures.reserve_sats.0),
                btc(proven_sats)
            ));
        }
    }

    let approvals = check_approvals(bundle, &digest, &reserves, &mut errors, &mut warnings);
    let unsigned = unsigned_fields(bundle);

    let valid = errors.is_empty()
        && reserves.iter().all(|r| r.valid)
        && proof_of_funds.as_ref().is_none_or(|p| p.valid);
    let pinned = registry.pinned;
    let verdict = match (valid, pinned) {
        (false, _) => "invalid",
        (true, true) => "valid",
        (true, false) => "unpinned",
    };
    if !pinned {
        warnings.push(if bundle.registry.is_empty() {
            format!(
                "version {} bundle: it carries no reserve registry, so nothing says these \
                 addresses are the real reserves; pin one with --registry FILE",
                bundle.version
            )
        } else {
            "unpinned: the bundle was checked against its own registry only; compare its \
             fingerprint with the one the guardians publish, or pass --registry / \
             --registry-fingerprint"
                .to_string()
        });
    }
    BundleReport {
        valid,
        pinned,
        verdict,
        bundle_version: bundle.version,
        registry,
        network: bundle.network.as_str().to_string(),
        errors,
        warnings,
        statement_digest: digest,
        chain: st.payment.chain.to_string(),
        payment: format!("{}:{}", st.payment.tx_hash, st.payment.index),
        bitcoin_block: format!("{} {}", st.bitcoin_block.height, st.bitcoin_block.hash),
        request_id: st.request_id.hyphenated().to_string(),
        reserves,
        proof_of_funds,
        proven_sats,
        funds_proven,
        approvals,
        unsigned,
    }
}

/// Approvals are unsigned records (their identity signature covers the guardian's
/// batch answer, which the bundle does not carry). What can be checked is checked: a
/// key whose signature is in a multisig reserve signature approved, whatever the
/// record says; a record saying otherwise is an error.
fn check_approvals(
    bundle: &ProofBundle,
    digest: &str,
    reserves: &[ReserveReport],
    errors: &mut Vec<String>,
    warnings: &mut Vec<String>,
) -> Vec<ApprovalReport> {
    let mut out = Vec::with_capacity(bundle.approvals.len());
    for a in &bundle.approvals {
        let mut report = ApprovalReport {
            guardian_key: a.guardian_key.clone(),
            decision: a.decision,
            reason_code: a.reason_code.clone(),
            key_signed_reserve: None,
            record_signed: false,
            error: None,
        };
        if a.statement_digest != digest {
            warnings.push(format!(
                "approval by {} names another statement digest",
                a.guardian_key
            ));
        }
        // Only a multisig witness names its signers; a single-key reserve holding the
        // same key would otherwise leave the answer unknown and hide a contradiction.
        let multisig: Vec<&ReserveReport> = reserves
            .iter()
            .filter(|r| r.valid && r.signed_by.is_some() && r.keys.contains(&a.guardian_key))
            .collect();
        if let Some(signed) = multisig
            .iter()
            .map(|r| r.signed_by.as_ref().map(|s| s.contains(&a.guardian_key)))
            .collect::<Option<Vec<bool>>>()
            .filter(|v| !v.is_empty())
        {
            let did_sign = signed.iter().any(|x| *x);
            report.key_signed_reserve = Some(did_sign);
            if did_sign && a.decision == ApprovalDecision::Refused {
                let e = format!(
                    "approval record says {} refused ({}), but its signature is in the reserve signature",
                    a.guardian_key,
                    a.reason_code.as_deref().unwrap_or("no code")
                );
                errors.push(e.clone());
                report.error = Some(e);
            }
            if !did_sign && a.decision == ApprovalDecision::Approved {
                warnings.push(format!(
                    "approval record says {} approved, but its signature is not in the reserve signature",
                    a.guardian_key
                ));
            }
        }
        out.push(report);
    }
    out
}

fn unsigned_fields(bundle: &ProofBundle) -> Vec<UnsignedField> {
    let mut out = Vec::new();
    let mut add = |field: &str, value: String| {
        out.push(UnsignedField {
            field: field.to_string(),
            value,
        })
    };
    add(
        "payment.amount_base_units",
        format!(
            "{} {}",
            bundle.payment.amount_base_units, bundle.payment.unit
        ),
    );
    add(
        "payment.block_number",
        bundle.payment.block_number.to_string(),
    );
    add("payment.block_hash", bundle.payment.block_hash.clone());
    match &bundle.reserve_figures {
        Some(r) => add(
            "reserve_figures",
            format!(
                "reserves {} BTC, supply {} BTC, ratio {}, healthy {}, stale {}, at height {}",
                btc(r.reserve_sats.0),
                btc(r.supply_sats.0),
                r.ratio_ppm.map_or("none".to_string(), |p| format!(
                    "{}.{:06}",
                    p / 1_000_000,
                    p % 1_000_000
                )),
                r.healthy,
                r.stale,
                r.bitcoin_height
            ),
        ),
        None => add("reserve_figures", "absent".into()),
    }
    add("supply", format!("{} entries", bundle.supply.len()));
    if let Some(p) = &bundle.proof_of_funds {
        add(
            "proof_of_funds.bitcoin_height",
            p.bitcoin_height.to_string(),
        );
    }
    add(
        "approvals",
        format!(
            "{} records (decision, reason, time: metadata)",
            bundle.approvals.len()
        ),
    );
    add("created_at", bundle.created_at.to_string());
    out
}

/// Every UTXO pays to one of `reserve_scripts`, none claims more than
/// [`pof::MAX_MONEY_SATS`], and neither does their (checked) sum.
fn check_reserve_utxos(utxos: &[Utxo], reserve_scripts: &[ScriptBuf]) -> Result<(), String> {
    let mut total: u64 = 0;
    for u in utxos {
        let is_reserve = hex::decode(&u.script_pubkey_hex)
            .is_ok_and(|spk| reserve_scripts.iter().any(|r| r.as_bytes() == spk));
        if !is_reserve {
            return Err(format!(
                "UTXO {}:{} pays to script {}, which is not the script of a verified reserve",
                u.txid, u.vout, u.script_pubkey_hex
            ));
        }
        if u.amount_sats > pof::MAX_MONEY_SATS {
            return Err(format!(
                "UTXO {}:{} claims {} sats, more than 21 million BTC",
                u.txid, u.vout, u.amount_sats
            ));
        }
        total = total
            .checked_add(u.amount_sats)
            .filter(|t| *t <= pof::MAX_MONEY_SATS)
            .ok_or_else(|| "the UTXOs claim more than 21 million BTC in total".to_string())?;
    }
    Ok(())
}

fn verify_reserve(
    network: Network,
    address: &str,
    descriptor: &str,
    signature: &str,
    text: &str,
) -> ReserveReport {
    let mut report = ReserveReport {
        address: address.to_string(),
        descriptor: descriptor.to_string(),
        valid: false,
        threshold: None,
        keys: Vec::new(),
        signed_by: None,
        registry_version: None,
        format: None,
        lock_time: None,
        sequence: None,
        error: None,
    };
    let parsed = match parse_address(address, Some(network)) {
        Ok(a) => a,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let policy = match Descriptor::parse(descriptor) {
        Err(e) => {
            report.error = Some(format!("descriptor: {e}"));
            return report;
        }
        Ok(d) if d.script_pubkey() != parsed.script_pubkey() => {
            report.error = Some("descriptor does not describe this address".into());
            return report;
        }
        Ok(d) => {
            let (threshold, keys) = d.threshold_and_keys();
            report.threshold = Some(threshold);
            report.keys = keys;
            match d {
                Descriptor::Multi(policy, _) => Some(policy),
                _ => None,
            }
        }
    };
    match bip322::verify(&parsed, text.as_bytes(), signature) {
        Ok(v) => {
            if let Some(policy) = &policy {
                report.signed_by =
                    bip322::multisig_signers(&parsed, text.as_bytes(), signature, policy)
                        .map(|keys| keys.iter().map(ToString::to_string).collect());
            }
            report.valid = true;
            report.format = Some(v.format);
            report.lock_time = Some(v.lock_time);
            report.sequence = Some(v.sequence);
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}

/// Input that cannot be read at all (the CLI exits 2), as opposed to a signature that
/// does not verify (exit 1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnreadableInput {
    #[error("{0:?} is not a Bitcoin address")]
    Address(String),
    #[error("address {address} is not valid on {network}")]
    Network { address: String, network: Network },
}

fn parse_address(s: &str, network: Option<Network>) -> Result<Address, UnreadableInput> {
    // Bounded before parsing: no address is longer than 90 characters (bech32).
    if s.len() > 100 {
        return Err(UnreadableInput::Address(s.chars().take(100).collect()));
    }
    let unchecked = Address::from_str(s).map_err(|_| UnreadableInput::Address(s.to_string()))?;
    match network {
        None => Ok(unchecked.assume_checked()),
        Some(n) => unchecked
            .require_network(n)
            .map_err(|_| UnreadableInput::Network {
                address: s.to_string(),
                network: n,
            }),
    }
}

/// The result of `ubtc verify-message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageReport {
    pub address: String,
    pub valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub format: Option<Format>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_time: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u32>,
    /// For accepted-but-unusual signatures (segwit BIP-137 headers, the Electrum case).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MessageReport {
    pub fn is_valid(&self) -> bool {
        self.valid
    }
}

impl fmt::Display for MessageReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.valid {
            write!(f, "valid: ")?;
            if let Some(format) = self.format {
                write!(f, "{format} ")?;
            }
            write!(f, "signature by {}", self.address)?;
            if let (Some(t), Some(s)) = (self.lock_time, self.sequence) {
                if t != 0 || s != 0 {
                    write!(f, ", valid at time {t} and age {s}")?;
                }
            }
            if let Some(note) = &self.note {
                write!(f, " ({note})")?;
            }
            writeln!(f)
        } else {
            writeln!(
                f,
                "invalid: {}",
                self.error.as_deref().unwrap_or("signature does not verify")
            )
        }
    }
}

/// Verifies one message signature for `ubtc verify-message`. `network` None accepts
/// an address of any network. Besides BIP-322 it accepts, with a note, BIP-137
/// signatures with segwit headers (35–42) and the Electrum form (a P2PKH header for a
/// segwit address), which wallets still produce.
pub fn verify_message_report(
    address: &str,
    network: Option<Network>,
    message: &[u8],
    signature: &str,
) -> Result<MessageReport, UnreadableInput> {
    let parsed = parse_address(address, network)?;
    let mut report = MessageReport {
        address: address.to_string(),
        valid: false,
        format: None,
        lock_time: None,
        sequence: None,
        note: None,
        error: None,
    };
    let ok = |report: &mut MessageReport, v: Verified| {
        report.valid = true;
        report.format = Some(v.format);
        report.lock_time = Some(v.lock_time);
        report.sequence = Some(v.sequence);
    };
    match bip322::verify(&parsed, message, signature) {
        Ok(v) => ok(&mut report, v),
        Err(e) => {
            let spk = parsed.script_pubkey();
            if spk.is_p2sh() && !signature.starts_with("ful") && !signature.starts_with("pof") {
                if let Ok(v) = bip322::verify_p2sh_p2wpkh_simple_compat(&parsed, message, signature)
                {
                    ok(&mut report, v);
                    report.note = Some(
                        "simple signature for a P2SH-P2WPKH address: not defined by BIP-322, \
                         accepted for compatibility (bip322-js and other wallets write it)"
                            .into(),
                    );
                    return Ok(report);
                }
            }
            let legacy_shaped = signature.len() == 88 && !spk.is_p2pkh();
            match bip137::verify(&parsed, message, signature) {
                Ok(b) if legacy_shaped => {
                    report.valid = true;
                    report.format = Some(Format::Legacy);
                    report.lock_time = Some(0);
                    report.sequence = Some(0);
                    report.note = Some(if b.header_matches_address {
                        format!("BIP-137 with segwit header {}; BIP-322 2.0 restricts legacy signatures to P2PKH", b.header)
                    } else {
                        format!(
                            "Electrum-style BIP-137: P2PKH header {} for a segwit address",
                            b.header
                        )
                    });
                }
                _ => report.error = Some(e.to_string()),
            }
        }
    }
    Ok(report)
}
