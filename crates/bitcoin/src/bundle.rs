//! Offline verification of proof bundles (`ubtc verify FILE`) and of single messages
//! (`ubtc verify-message ADDRESS MESSAGE SIGNATURE`).
//!
//! The verifier trusts nothing in the bundle but its signatures: it rebuilds the
//! statement text from the statement's fields, checks that every descriptor names its
//! address, and verifies every signature over the rebuilt text. A proof of funds counts
//! only UTXOs paying to the scripts of verified reserves. Whether the proven UTXOs
//! exist and are still unspent is not something an offline verifier can know; the
//! report says so.

use std::fmt;
use std::str::FromStr;

use bitcoin::{Address, Network, ScriptBuf};
use serde::Serialize;
use ubtc_core::bundle::{BitcoinNetwork, ProofBundle, Utxo};

use crate::bip322::{self, Format, Verified};
use crate::descriptor::Descriptor;
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

/// Everything `ubtc verify` prints. `Display` is the human report, `Serialize` the
/// `--json` form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleReport {
    pub valid: bool,
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
        writeln!(
            f,
            "proof bundle: {}",
            if self.valid { "VALID" } else { "INVALID" }
        )?;
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
        for w in &self.warnings {
            writeln!(f, "warning: {w}")?;
        }
        if self.proof_of_funds.is_some() {
            writeln!(
                f,
                "total proven: {} BTC (UTXOs of the reserve addresses that the reserve keys can spend; \
                 whether they exist and are unspent needs a Bitcoin node)",
                btc(self.proven_sats)
            )
        } else {
            writeln!(f, "no proof of funds in this bundle (the signatures prove control of the reserve keys)")
        }
    }
}

/// Verifies every signature in `bundle`. Never panics on hostile input; every problem
/// ends up in the report.
pub fn verify_bundle(bundle: &ProofBundle) -> BundleReport {
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
    for a in &bundle.approvals {
        if a.statement_digest != digest {
            warnings.push(format!(
                "approval by {} names another statement digest",
                a.guardian_key
            ));
        }
    }

    let mut reserves = Vec::with_capacity(bundle.reserves.len());
    let mut seen = std::collections::HashSet::new();
    for r in &bundle.reserves {
        if !seen.insert(r.address.as_str()) {
            warnings.push(format!("reserve {} is listed more than once", r.address));
        }
        let report = verify_reserve(network, &r.address, &r.descriptor, &r.signature, &text);
        if let (Some(t), Some(s)) = (report.lock_time, report.sequence) {
            if t != 0 || s != 0 {
                // BIP-322 "valid at time T and age S": the key could only spend later.
                warnings.push(format!(
                    "reserve {} signed with time locks (nLockTime {t}, nSequence {s})",
                    r.address
                ));
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

    let proven_sats = proof_of_funds
        .as_ref()
        .filter(|p| p.valid)
        .map_or(0, |p| p.proven_sats);
    if let (Some(figures), Some(p)) = (&bundle.reserve_figures, &proof_of_funds) {
        // The figures are the operator's claim; the proof is what was checked.
        if p.valid && figures.reserve_sats.0 > proven_sats {
            warnings.push(format!(
                "reserve figures claim {} BTC but the proof of funds covers {} BTC",
                btc(figures.reserve_sats.0),
                btc(proven_sats)
            ));
        }
    }
    let valid = errors.is_empty()
        && reserves.iter().all(|r| r.valid)
        && proof_of_funds.as_ref().is_none_or(|p| p.valid);
    BundleReport {
        valid,
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
    }
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
    match Descriptor::parse(descriptor) {
        Err(e) => {
            report.error = Some(format!("descriptor: {e}"));
            return report;
        }
        Ok(d) if d.script_pubkey() != parsed.script_pubkey() => {
            report.error = Some("descriptor does not describe this address".into());
            return report;
        }
        Ok(_) => {}
    }
    match bip322::verify(&parsed, text.as_bytes(), signature) {
        Ok(v) => {
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
