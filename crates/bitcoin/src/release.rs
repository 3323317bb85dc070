//! Releasing reserve BTC to a redeemer: a real BIP-174 PSBT that spends reserve UTXOs
//! (P2WSH `sortedmulti`) to the redeemer's address, with change back to the reserve,
//! signed M-of-N by the guardians one key at a time and checked by this crate's strict
//! script interpreter ([`crate::script`]) before anyone may broadcast it.
//!
//! Who verifies what:
//! - the **builder** (coordinator) picks UTXOs largest first and sets the fee from a
//!   fee rate and the transaction's exact worst-case weight;
//! - a **signer** (guardian) trusts nothing in the PSBT: [`ReleaseRequest::plan`]
//!   rebuilds every input's witness UTXO and witness script from the descriptor and the
//!   UTXO list and refuses any difference; the guardian then decides on the
//!   [`ReleaseSummary`] (who is paid how much, the fee) against its own view of the burn;
//! - the **finaliser** verifies every partial signature against the key it names before
//!   it counts, and runs the script interpreter on every input of the final
//!   transaction ([`finalize_release`]): a transaction it returns is valid by the same
//!   rules as a BIP-322 proof (the strict interpreter of [`crate::script`]).
//!
//! What this module does NOT know: whether the listed UTXOs exist with the stated
//! amounts. BIP-143 commits each input's signature to that input's amount only, so a
//! signer must compare every listed UTXO with its OWN Bitcoin view before signing (the
//! guardian does, `ubtc_guardian::reserve_ops`), and [`verify_release_tx`] trusts the
//! prevouts its caller gives it.
//!
//! Every release has version 2, lock time 0 and sequence `0xfffffffd` (RBF, no lock
//! time) on every input; [`ReleaseRequest::plan`] refuses anything else, so a signed
//! release can never be held back by a far-future lock time.

use std::collections::BTreeMap;

use bitcoin::absolute::LockTime;
use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::base64::Engine as _;
use bitcoin::hashes::Hash;
use bitcoin::psbt::Psbt;
use bitcoin::secp256k1::{Message, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, CompressedPublicKey, Network, ScriptBuf, Sequence, Transaction, TxIn, TxOut,
    Witness,
};
use serde::{Deserialize, Serialize};
use ubtc_core::bundle::Utxo;

use crate::multisig::{PartialSignature, SortedMulti, Wrapping};
use crate::pof::{SpendableUtxo, MAX_MONEY_SATS};
use crate::script;
use crate::SECP;

/// Most inputs a release may spend (bounds the work a request can cause a guardian).
pub const MAX_RELEASE_INPUTS: usize = 200;
/// P2WSH dust at the default dust relay fee (the reserve's change). Other scripts have
/// their own limit ([`dust_limit`]): P2PKH 546, P2SH 540, P2WPKH 294.
pub const DUST_SATS: u64 = 330;
/// The one sequence every release input carries (RBF signalled, no relative lock time).
pub const RELEASE_SEQUENCE: Sequence = Sequence::ENABLE_RBF_NO_LOCKTIME;

/// Smallest output to `script_pubkey` that is not dust at the default relay fee.
pub fn dust_limit(script_pubkey: &ScriptBuf) -> u64 {
    script_pubkey.minimal_non_dust().to_sat()
}
/// Highest fee rate accepted when building, in sat/vB (a typo guard).
pub const MAX_FEE_RATE_SAT_VB: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("amount must be positive and at most 21 million BTC")]
    Amount,
    #[error("fee rate must be between 1 and {MAX_FEE_RATE_SAT_VB} sat/vB")]
    FeeRate,
    #[error("reserve UTXOs hold {available_sats} sats; {needed_sats} are needed")]
    InsufficientFunds {
        available_sats: u64,
        needed_sats: u64,
    },
    #[error("the redeemer address is not valid for {0}")]
    Address(Network),
    #[error("the amount left after the fee is dust")]
    Dust,
    #[error("the reserve UTXOs cannot pay exactly this amount: {0} sats would be left over, too few for a change output")]
    DustLeftover(u64),
    #[error("the reserve descriptor must be wsh(sortedmulti(...)): {0}")]
    Descriptor(String),
    #[error("bad UTXO: {0}")]
    Utxo(String),
    #[error("the PSBT does not match its descriptor and UTXOs: {0}")]
    Mismatch(String),
    #[error("too many inputs ({0}; at most {MAX_RELEASE_INPUTS})")]
    TooManyInputs(usize),
    #[error("key {0} is not one of the reserve keys")]
    KeyNotInPolicy(String),
    #[error("partial signature of {key} is invalid: {reason}")]
    BadPartial { key: String, reason: String },
    #[error("{valid} valid signatures, {needed} needed")]
    NotEnoughSignatures { valid: usize, needed: usize },
    #[error("the final transaction does not verify: input {input}: {reason}")]
    Script { input: usize, reason: String },
    #[error("could not build: {0}")]
    Build(String),
}

/// What is sent to each guardian. Everything in it is public.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The reserve descriptor, `wsh(sortedmulti(...))#checksum`.
    pub descriptor: String,
    pub network: Network,
    /// The spent reserve UTXOs, in input order.
    pub utxos: Vec<Utxo>,
    /// BIP-174 PSBT, base64: the unsigned transaction, a witness UTXO and the witness
    /// script on every input.
    pub psbt: String,
}

/// What a release pays, read from a checked request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseSummary {
    pub input_sats: u64,
    /// Outputs in order: (script pubkey hex, sats).
    pub outputs: Vec<(String, u64)>,
    pub fee_sats: u64,
    /// Sats paid to the reserve's own script (change).
    pub change_sats: u64,
    pub txid: String,
}

impl ReleaseSummary {
    /// Sats paid to `script_pubkey` in all.
    pub fn paid_to(&self, script_pubkey: &ScriptBuf) -> u64 {
        let hex = script_pubkey.to_hex_string();
        self.outputs
            .iter()
            .filter(|(s, _)| *s == hex)
            .map(|(_, v)| *v)
            .sum()
    }
}

/// How much the redeemer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payout {
    /// Exactly this; the fee comes on top, from the reserve.
    Exact(u64),
    /// This total leaves the reserve: the redeemer gets it minus the fee.
    FeeIncluded(u64),
}

/// Everything a request is checked against, rebuilt from public data.
pub struct ReleasePlan {
    pub policy: SortedMulti,
    pub witness_script: ScriptBuf,
    pub unsigned: Transaction,
    pub prevouts: Vec<TxOut>,
}

fn parse_policy(descriptor: &str) -> Result<SortedMulti, ReleaseError> {
    match SortedMulti::parse_descriptor(descriptor) {
        Ok((p, Wrapping::Wsh)) => Ok(p),
        Ok((_, Wrapping::ShWsh)) => Err(ReleaseError::Descriptor(
            "sh(wsh()) is not supported".into(),
        )),
        Err(e) => Err(ReleaseError::Descriptor(e.to_string())),
    }
}

/// Worst-case weight units of one P2WSH m-of-n input (72-byte signatures plus the
/// sighash byte, as low-S DER never exceeds).
fn input_weight(m: usize, witness_script_len: usize) -> u64 {
    let non_witness = 32 + 4 + 1 + 4;
    let witness = 1 + 1 + m * (1 + 73) + varint_len(witness_script_len) + witness_script_len;
    (non_witness * 4 + witness) as u64
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        _ => 5,
    }
}

fn output_weight(spk: &ScriptBuf) -> u64 {
    ((8 + varint_len(spk.len()) + spk.len()) * 4) as u64
}

/// Version, lock time, counts (4 × 10) plus the segwit marker and flag (2).
const TX_OVERHEAD_WEIGHT: u64 = 42;

fn fee_for(weight: u64, rate_sat_vb: u64) -> u64 {
    weight.div_ceil(4).saturating_mul(rate_sat_vb)
}

/// Builds the unsigned release: spends `utxos` (largest first, as few as needed) of the
/// reserve `policy` to `to`, change (if not dust) back to the reserve address.
pub fn build_release(
    policy: &SortedMulti,
    network: Network,
    utxos: &[Utxo],
    to: &str,
    payout: Payout,
    fee_rate_sat_vb: u64,
) -> Result<(ReleaseRequest, ReleaseSummary), ReleaseError> {
    if fee_rate_sat_vb == 0 || fee_rate_sat_vb > MAX_FEE_RATE_SAT_VB {
        return Err(ReleaseError::FeeRate);
    }
    let target = match payout {
        Payout::Exact(v) | Payout::FeeIncluded(v) => v,
    };
    if target == 0 || target > MAX_MONEY_SATS {
        return Err(ReleaseError::Amount);
    }
    let to_spk = to
        .parse::<Address<bitcoin::address::NetworkUnchecked>>()
        .ok()
        .and_then(|a| a.require_network(network).ok())
        .ok_or(ReleaseError::Address(network))?
        .script_pubkey();
    let reserve_spk = policy.script_pubkey(Wrapping::Wsh);
    let ws = policy.witness_script();
    let mut spendable =
        SpendableUtxo::parse_all(utxos).map_err(|e| ReleaseError::Utxo(e.to_string()))?;
    spendable.retain(|u| u.txout.script_pubkey == reserve_spk);
    // Largest first; ties by outpoint so the same UTXO set always gives the same tx.
    spendable.sort_by(|a, b| {
        b.txout
            .value
            .cmp(&a.txout.value)
            .then(a.outpoint.cmp(&b.outpoint))
    });
    let in_w = input_weight(policy.threshold(), ws.len());
    let base_w = TX_OVERHEAD_WEIGHT + output_weight(&to_spk);
    let change_w = output_weight(&reserve_spk);
    let available: u64 = spendable.iter().map(|u| u.txout.value.to_sat()).sum();

    let change_dust = dust_limit(&reserve_spk);
    let mut chosen = Vec::new();
    let mut total = 0u64;
    let mut plan = None;
    let mut leftover_blocked = None;
    for u in &spendable {
        chosen.push(u.clone());
        total = total.saturating_add(u.txout.value.to_sat());
        if chosen.len() > MAX_RELEASE_INPUTS {
            return Err(ReleaseError::TooManyInputs(chosen.len()));
        }
        let w = base_w + in_w * chosen.len() as u64;
        let fee_no_change = fee_for(w, fee_rate_sat_vb);
        let fee_change = fee_for(w + change_w, fee_rate_sat_vb);
        let (pay, spend_no_change) = match payout {
            Payout::Exact(v) => (v, v.saturating_add(fee_no_change)),
            Payout::FeeIncluded(v) => (v.saturating_sub(fee_no_change), v),
        };
        if total < spend_no_change {
            continue;
        }
        // With change, when the change is not dust; else everything left is fee.
        let (pay_c, spend_c) = match payout {
            Payout::Exact(v) => (v, v.saturating_add(fee_change)),
            Payout::FeeIncluded(v) => (v.saturating_sub(fee_change), v),
        };
        let change = total.saturating_sub(spend_c);
        if total >= spend_c && change >= change_dust {
            plan = Some((pay_c, Some(change)));
            break;
        }
        // No change output: what is left over goes to the fee. With the fee included
        // that would take more than the amount out of the reserve (paid + fee > the
        // burn, which every guardian refuses), so another input must make room for a
        // real change output instead.
        let leftover = total - spend_no_change;
        if matches!(payout, Payout::FeeIncluded(_)) && leftover > 0 {
            leftover_blocked = Some(leftover);
            continue;
        }
        plan = Some((pay, None));
        break;
    }
    let Some((pay, change)) = plan else {
        if let Some(leftover) = leftover_blocked {
            return Err(ReleaseError::DustLeftover(leftover));
        }
        let needed = match payout {
            Payout::Exact(v) => v.saturating_add(fee_for(base_w + in_w, fee_rate_sat_vb)),
            Payout::FeeIncluded(v) => v,
        };
        return Err(ReleaseError::InsufficientFunds {
            available_sats: available,
            needed_sats: needed,
        });
    };
    if pay < dust_limit(&to_spk) {
        return Err(ReleaseError::Dust);
    }
    let mut output = vec![TxOut {
        value: Amount::from_sat(pay),
        script_pubkey: to_spk,
    }];
    if let Some(c) = change {
        output.push(TxOut {
            value: Amount::from_sat(c),
            script_pubkey: reserve_spk.clone(),
        });
    }
    let unsigned = Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: chosen
            .iter()
            .map(|u| TxIn {
                previous_output: u.outpoint,
                script_sig: ScriptBuf::new(),
                sequence: RELEASE_SEQUENCE,
                witness: Witness::new(),
            })
            .collect(),
        output,
    };
    let mut psbt =
        Psbt::from_unsigned_tx(unsigned).map_err(|e| ReleaseError::Build(e.to_string()))?;
    for (input, u) in psbt.inputs.iter_mut().zip(&chosen) {
        input.witness_utxo = Some(u.txout.clone());
        input.witness_script = Some(ws.clone());
        input.sighash_type = Some(EcdsaSighashType::All.into());
    }
    let request = ReleaseRequest {
        descriptor: policy.descriptor_wsh(),
        network,
        utxos: chosen
            .iter()
            .map(|u| Utxo {
                txid: u.outpoint.txid.to_string(),
                vout: u.outpoint.vout,
                amount_sats: u.txout.value.to_sat(),
                script_pubkey_hex: u.txout.script_pubkey.to_hex_string(),
            })
            .collect(),
        psbt: BASE64.encode(psbt.serialize()),
    };
    let summary = request.summary()?;
    Ok((request, summary))
}

impl ReleaseRequest {
    /// Rebuilds and checks the request: the PSBT's inputs are exactly the listed UTXOs,
    /// every one pays the descriptor's P2WSH script, and each PSBT input carries that
    /// witness UTXO and witness script and nothing that could change what is signed.
    pub fn plan(&self) -> Result<ReleasePlan, ReleaseError> {
        let policy = parse_policy(&self.descriptor)?;
        let ws = policy.witness_script();
        let spk = policy.script_pubkey(Wrapping::Wsh);
        let bytes = BASE64
            .decode(self.psbt.as_bytes())
            .map_err(|_| ReleaseError::Mismatch("PSBT is not base64".into()))?;
        let psbt = Psbt::deserialize(&bytes).map_err(|e| ReleaseError::Mismatch(e.to_string()))?;
        let tx = psbt.unsigned_tx;
        if tx.input.is_empty() || tx.output.is_empty() {
            return Err(ReleaseError::Mismatch("no inputs or no outputs".into()));
        }
        if tx.input.len() > MAX_RELEASE_INPUTS {
            return Err(ReleaseError::TooManyInputs(tx.input.len()));
        }
        // One shape for every release: a far-future lock time (absolute or relative)
        // would let a signed release sit unconfirmable while its burn is used up.
        if tx.version != Version::TWO || tx.lock_time != LockTime::ZERO {
            return Err(ReleaseError::Mismatch(
                "a release has version 2 and lock time 0".into(),
            ));
        }
        if let Some(i) = tx.input.iter().position(|t| t.sequence != RELEASE_SEQUENCE) {
            return Err(ReleaseError::Mismatch(format!(
                "input {i} has sequence other than 0xfffffffd"
            )));
        }
        let utxos =
            SpendableUtxo::parse_all(&self.utxos).map_err(|e| ReleaseError::Utxo(e.to_string()))?;
        if utxos.len() != tx.input.len() || psbt.inputs.len() != tx.input.len() {
            return Err(ReleaseError::Mismatch(
                "inputs and UTXOs differ in number".into(),
            ));
        }
        for (i, ((txin, u), pin)) in tx.input.iter().zip(&utxos).zip(&psbt.inputs).enumerate() {
            if txin.previous_output != u.outpoint {
                return Err(ReleaseError::Mismatch(format!(
                    "input {i} spends another outpoint"
                )));
            }
            if u.txout.script_pubkey != spk {
                return Err(ReleaseError::Mismatch(format!(
                    "input {i} is not a reserve output"
                )));
            }
            if pin.witness_utxo.as_ref() != Some(&u.txout) {
                return Err(ReleaseError::Mismatch(format!(
                    "input {i} witness UTXO differs"
                )));
            }
            if pin.witness_script.as_ref() != Some(&ws) {
                return Err(ReleaseError::Mismatch(format!(
                    "input {i} witness script differs"
                )));
            }
            if pin
                .sighash_type
                .is_some_and(|t| t != EcdsaSighashType::All.into())
            {
                return Err(ReleaseError::Mismatch(format!(
                    "input {i} asks for another sighash type"
                )));
            }
            if !txin.script_sig.is_empty() || !txin.witness.is_empty() {
                return Err(ReleaseError::Mismatch(format!("input {i} is not unsigned")));
            }
        }
        let prevouts = utxos.into_iter().map(|u| u.txout).collect();
        Ok(ReleasePlan {
            policy,
            witness_script: ws,
            unsigned: tx,
            prevouts,
        })
    }

    /// What the release pays, after [`ReleaseRequest::plan`]'s checks.
    pub fn summary(&self) -> Result<ReleaseSummary, ReleaseError> {
        let plan = self.plan()?;
        let input_sats = plan
            .prevouts
            .iter()
            .try_fold(0u64, |a, o| a.checked_add(o.value.to_sat()))
            .ok_or(ReleaseError::Amount)?;
        let output_sats = plan
            .unsigned
            .output
            .iter()
            .try_fold(0u64, |a, o| a.checked_add(o.value.to_sat()))
            .ok_or(ReleaseError::Amount)?;
        let fee_sats = input_sats
            .checked_sub(output_sats)
            .ok_or_else(|| ReleaseError::Mismatch("outputs exceed inputs".into()))?;
        let reserve = plan.policy.script_pubkey(Wrapping::Wsh);
        let outputs: Vec<(String, u64)> = plan
            .unsigned
            .output
            .iter()
            .map(|o| (o.script_pubkey.to_hex_string(), o.value.to_sat()))
            .collect();
        let change_sats = plan
            .unsigned
            .output
            .iter()
            .filter(|o| o.script_pubkey == reserve)
            .map(|o| o.value.to_sat())
            .sum();
        Ok(ReleaseSummary {
            input_sats,
            outputs,
            fee_sats,
            change_sats,
            txid: plan.unsigned.compute_txid().to_string(),
        })
    }
}

fn sighashes(plan: &ReleasePlan) -> Result<Vec<Message>, ReleaseError> {
    let mut cache = SighashCache::new(&plan.unsigned);
    plan.prevouts
        .iter()
        .enumerate()
        .map(|(i, prevout)| {
            cache
                .p2wsh_signature_hash(
                    i,
                    &plan.witness_script,
                    prevout.value,
                    EcdsaSighashType::All,
                )
                .map(|h| Message::from_digest(h.to_byte_array()))
                .map_err(|e| ReleaseError::Build(e.to_string()))
        })
        .collect()
}

/// A guardian's step, after it has decided on the [`ReleaseSummary`]: signs every
/// input (BIP-143, SIGHASH_ALL, low-S DER) with `secret`.
pub fn sign_release(
    request: &ReleaseRequest,
    secret: &SecretKey,
) -> Result<PartialSignature, ReleaseError> {
    let plan = request.plan()?;
    let pubkey = CompressedPublicKey(secret.public_key(&SECP));
    if !plan.policy.keys().contains(&pubkey) {
        return Err(ReleaseError::KeyNotInPolicy(pubkey.to_string()));
    }
    Ok(PartialSignature::sign(pubkey, &sighashes(&plan)?, secret))
}

fn check_partial(
    plan: &ReleasePlan,
    msgs: &[Message],
    partial: &PartialSignature,
) -> Result<(), ReleaseError> {
    if !plan.policy.keys().contains(&partial.pubkey) {
        return Err(ReleaseError::KeyNotInPolicy(partial.pubkey.to_string()));
    }
    partial
        .check(msgs)
        .map_err(|reason| ReleaseError::BadPartial {
            key: partial.pubkey.to_string(),
            reason: reason.to_owned(),
        })
}

/// The coordinator's check of one guardian's answer, before it counts.
pub fn verify_release_partial(
    request: &ReleaseRequest,
    partial: &PartialSignature,
) -> Result<(), ReleaseError> {
    let plan = request.plan()?;
    check_partial(&plan, &sighashes(&plan)?, partial)
}

/// Assembles the final transaction from at least M valid partial signatures of
/// distinct keys (an invalid one is an error, not skipped), then verifies every input
/// with the strict script interpreter. Witness per input: `[<empty>, sig… in script
/// key order, witness script]`.
pub fn finalize_release(
    request: &ReleaseRequest,
    partials: &[PartialSignature],
) -> Result<Transaction, ReleaseError> {
    let plan = request.plan()?;
    let msgs = sighashes(&plan)?;
    let mut by_key: BTreeMap<usize, &PartialSignature> = BTreeMap::new();
    for partial in partials {
        let position = plan
            .policy
            .keys()
            .iter()
            .position(|k| *k == partial.pubkey)
            .ok_or_else(|| ReleaseError::KeyNotInPolicy(partial.pubkey.to_string()))?;
        if by_key.contains_key(&position) {
            continue;
        }
        check_partial(&plan, &msgs, partial)?;
        by_key.insert(position, partial);
    }
    let m = plan.policy.threshold();
    if by_key.len() < m {
        return Err(ReleaseError::NotEnoughSignatures {
            valid: by_key.len(),
            needed: m,
        });
    }
    let chosen: Vec<&PartialSignature> = by_key.values().take(m).copied().collect();
    let mut tx = plan.unsigned.clone();
    for (i, input) in tx.input.iter_mut().enumerate() {
        let mut items: Vec<&[u8]> = Vec::with_capacity(m + 2);
        items.push(&[]);
        for p in &chosen {
            items.push(&p.signatures[i]);
        }
        items.push(plan.witness_script.as_bytes());
        input.witness = Witness::from_slice(&items);
    }
    verify_release_tx(&tx, &plan.prevouts)?;
    Ok(tx)
}

/// Checks that `tx` pays out no more than it spends, then runs the strict interpreter
/// of BIP-322 verification ([`crate::script`]) on every input. `prevouts` (the spent outputs, in input
/// order) are TRUSTED: this function cannot know whether they exist with these
/// amounts; the caller takes them from a view it trusts (a guardian from its own node).
pub fn verify_release_tx(tx: &Transaction, prevouts: &[TxOut]) -> Result<(), ReleaseError> {
    if prevouts.len() != tx.input.len() {
        return Err(ReleaseError::Mismatch(
            "one prevout per input is needed".into(),
        ));
    }
    fn sum(values: impl Iterator<Item = Amount>) -> Option<u64> {
        values.map(Amount::to_sat).try_fold(0u64, u64::checked_add)
    }
    let input_sats = sum(prevouts.iter().map(|o| o.value)).ok_or(ReleaseError::Amount)?;
    let output_sats = sum(tx.output.iter().map(|o| o.value)).ok_or(ReleaseError::Amount)?;
    if output_sats > input_sats || output_sats > MAX_MONEY_SATS {
        return Err(ReleaseError::Mismatch(format!(
            "outputs {output_sats} sats exceed inputs {input_sats} sats"
        )));
    }
    let mut cache = SighashCache::new(tx);
    for i in 0..tx.input.len() {
        script::verify_input(tx, i, prevouts, &mut cache).map_err(|e| ReleaseError::Script {
            input: i,
            reason: e.to_string(),
        })?;
    }
    Ok(())
}

/// The transaction as hex, for a Bitcoin backend's broadcast.
pub fn tx_hex(tx: &Transaction) -> String {
    bitcoin::consensus::encode::serialize_hex(tx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn keys(n: usize) -> Vec<SecretKey> {
        (1..=n)
            .map(|i| SecretKey::from_slice(&[i as u8 + 0x40; 32]).unwrap())
            .collect()
    }

    fn setup() -> (SortedMulti, Vec<SecretKey>, Vec<Utxo>, String) {
        let sk = keys(3);
        let policy = SortedMulti::new(
            2,
            sk.iter()
                .map(|k| CompressedPublicKey(k.public_key(&SECP)))
                .collect(),
        )
        .unwrap();
        let spk = policy.script_pubkey(Wrapping::Wsh).to_hex_string();
        let utxos = [50_000u64, 120_000, 30_000]
            .iter()
            .enumerate()
            .map(|(i, v)| Utxo {
                txid: format!("{:064x}", i + 1),
                vout: i as u32,
                amount_sats: *v,
                script_pubkey_hex: spk.clone(),
            })
            .collect();
        let redeemer = CompressedPublicKey(keys(5)[4].public_key(&SECP));
        let to = Address::p2wpkh(&redeemer, Network::Regtest).to_string();
        (policy, sk, utxos, to)
    }

    #[test]
    fn two_of_three_release_verifies() {
        let (policy, sk, utxos, to) = setup();
        let (req, summary) = build_release(
            &policy,
            Network::Regtest,
            &utxos,
            &to,
            Payout::Exact(100_000),
            5,
        )
        .unwrap();
        // Largest UTXO alone covers it; change back to the reserve.
        assert_eq!(req.utxos.len(), 1);
        assert_eq!(summary.input_sats, 120_000);
        assert_eq!(
            summary.input_sats,
            100_000 + summary.change_sats + summary.fee_sats
        );
        assert!(summary.fee_sats >= 5 * 100, "fee {}", summary.fee_sats);
        let p1 = sign_release(&req, &sk[0]).unwrap();
        let p3 = sign_release(&req, &sk[2]).unwrap();
        verify_release_partial(&req, &p1).unwrap();
        let tx = finalize_release(&req, &[p3.clone(), p1.clone()]).unwrap();
        assert_eq!(tx.compute_txid().to_string(), summary.txid);
        // The real weight never exceeds the estimate the fee was paid for.
        assert!(tx.weight().to_wu().div_ceil(4) * 5 <= summary.fee_sats);
        // One signature is not enough.
        assert!(matches!(
            finalize_release(&req, &[p1]),
            Err(ReleaseError::NotEnoughSignatures {
                valid: 1,
                needed: 2
            })
        ));
    }

    #[test]
    fn fee_included_and_several_inputs() {
        let (policy, sk, utxos, to) = setup();
        let (req, summary) = build_release(
            &policy,
            Network::Regtest,
            &utxos,
            &to,
            Payout::FeeIncluded(190_000),
            2,
        )
        .unwrap();
        assert_eq!(req.utxos.len(), 3);
        let reserve_out = summary.change_sats;
        assert_eq!(summary.input_sats - reserve_out, 190_000);
        let partials: Vec<_> = sk.iter().map(|k| sign_release(&req, k).unwrap()).collect();
        finalize_release(&req, &partials).unwrap();
        assert!(matches!(
            build_release(
                &policy,
                Network::Regtest,
                &utxos,
                &to,
                Payout::Exact(200_000),
                2
            ),
            Err(ReleaseError::InsufficientFunds { .. })
        ));
        assert!(matches!(
            build_release(
                &policy,
                Network::Bitcoin,
                &utxos,
                &to,
                Payout::Exact(1_000),
                2
            ),
            Err(ReleaseError::Address(_))
        ));
        assert!(matches!(
            build_release(&policy, Network::Regtest, &utxos, &to, Payout::Exact(0), 2),
            Err(ReleaseError::Amount)
        ));
    }

    #[test]
    fn tampered_signature_fails() {
        let (policy, sk, utxos, to) = setup();
        let (req, _) = build_release(
            &policy,
            Network::Regtest,
            &utxos,
            &to,
            Payout::Exact(10_000),
            3,
        )
        .unwrap();
        let p1 = sign_release(&req, &sk[0]).unwrap();
        let mut p2 = sign_release(&req, &sk[1]).unwrap();
        // Flip a bit inside r: still DER, no longer valid.
        p2.signatures[0][6] ^= 1;
        assert!(matches!(
            verify_release_partial(&req, &p2),
            Err(ReleaseError::BadPartial { .. })
        ));
        assert!(finalize_release(&req, &[p1.clone(), p2]).is_err());

        // A valid transaction whose witness is then tampered with fails the interpreter.
        let p2 = sign_release(&req, &sk[1]).unwrap();
        let mut tx = finalize_release(&req, &[p1, p2]).unwrap();
        let prevouts = req.plan().unwrap().prevouts;
        verify_release_tx(&tx, &prevouts).unwrap();
        let mut items: Vec<Vec<u8>> = tx.input[0].witness.iter().map(<[u8]>::to_vec).collect();
        items[1][10] ^= 1;
        tx.input[0].witness = Witness::from_slice(&items);
        assert!(matches!(
            verify_release_tx(&tx, &prevouts),
            Err(ReleaseError::Script { input: 0, .. })
        ));
        // Changing an output after signing breaks every signature.
        let p1 = sign_release(&req, &sk[0]).unwrap();
        let p2 = sign_release(&req, &sk[1]).unwrap();
        let mut tx = finalize_release(&req, &[p1, p2]).unwrap();
        tx.output[0].value = Amount::from_sat(tx.output[0].value.to_sat() + 1);
        assert!(verify_release_tx(&tx, &prevouts).is_err());
    }

    #[test]
    fn signer_refuses_a_psbt_that_differs_from_its_inputs() {
        let (policy, sk, utxos, to) = setup();
        let (mut req, _) = build_release(
            &policy,
            Network::Regtest,
            &utxos,
            &to,
            Payout::Exact(10_000),
            3,
        )
        .unwrap();
        // Claim a larger input amount than the PSBT's witness UTXO.
        req.utxos[0].amount_sats += 1;
        assert!(matches!(
            sign_release(&req, &sk[0]),
            Err(ReleaseError::Mismatch(_))
        ));
        let outsider = SecretKey::from_slice(&[0x77; 32]).unwrap();
        let (req, _) = build_release(
            &policy,
            Network::Regtest,
            &utxos,
            &to,
            Payout::Exact(10_000),
            3,
        )
        .unwrap();
        assert!(matches!(
            sign_release(&req, &outsider),
            Err(ReleaseError::KeyNotInPolicy(_))
        ));
    }

    fn tamper_tx(req: &ReleaseRequest, f: impl Fn(&mut Transaction)) -> ReleaseRequest {
        let mut psbt = Psbt::deserialize(&BASE64.decode(&req.psbt).unwrap()).unwrap();
        f(&mut psbt.unsigned_tx);
        ReleaseRequest {
            psbt: BASE64.encode(psbt.serialize()),
            ..req.clone()
        }
    }

    #[test]
    fn signer_refuses_lock_times_and_other_shapes() {
        let (policy, sk, utxos, to) = setup();
        let (req, _) = build_release(
            &policy,
            Network::Regtest,
            &utxos,
            &to,
            Payout::Exact(10_000),
            3,
        )
        .unwrap();
        sign_release(&req, &sk[0]).unwrap();
        let far = tamper_tx(&req, |tx| {
            tx.lock_time = LockTime::from_height(5_000_000).unwrap()
        });
        let relative = tamper_tx(&req, |tx| tx.input[0].sequence = Sequence::from_height(100));
        let final_seq = tamper_tx(&req, |tx| tx.input[0].sequence = Sequence::MAX);
        let v1 = tamper_tx(&req, |tx| tx.version = Version::ONE);
        for bad in [far, relative, final_seq, v1] {
            assert!(
                matches!(sign_release(&bad, &sk[0]), Err(ReleaseError::Mismatch(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn dust_depends_on_the_script_type() {
        let (policy, _, utxos, _) = setup();
        let pk = CompressedPublicKey(keys(6)[5].public_key(&SECP));
        let p2pkh = Address::p2pkh(pk, Network::Regtest).to_string();
        // 400 sats clear P2WSH/P2WPKH dust but not P2PKH's 546.
        assert!(matches!(
            build_release(
                &policy,
                Network::Regtest,
                &utxos,
                &p2pkh,
                Payout::Exact(400),
                1
            ),
            Err(ReleaseError::Dust)
        ));
        build_release(
            &policy,
            Network::Regtest,
            &utxos,
            &p2pkh,
            Payout::Exact(546),
            1,
        )
        .unwrap();
        assert_eq!(dust_limit(&policy.script_pubkey(Wrapping::Wsh)), DUST_SATS);
    }

    #[test]
    fn fee_included_never_takes_more_than_the_amount() {
        let (policy, _, utxos, to) = setup();
        // The largest UTXO (120,000) exceeds 119,900 by less than a change output's
        // dust: the leftover may not go to the fee (paid + fee would be 120,000).
        let (_, summary) = build_release(
            &policy,
            Network::Regtest,
            &utxos,
            &to,
            Payout::FeeIncluded(119_900),
            2,
        )
        .unwrap();
        assert_eq!(summary.input_sats - summary.change_sats, 119_900);
        assert!(summary.change_sats >= DUST_SATS);
        // With only that UTXO there is no way to pay exactly 119,900.
        assert!(matches!(
            build_release(
                &policy,
                Network::Regtest,
                &utxos[1..2],
                &to,
                Payout::FeeIncluded(119_900),
                2
            ),
            Err(ReleaseError::DustLeftover(100))
        ));
    }

    #[test]
    fn verify_checks_values_before_scripts() {
        let (policy, sk, utxos, to) = setup();
        let (req, _) = build_release(
            &policy,
            Network::Regtest,
            &utxos,
            &to,
            Payout::Exact(100_000),
            5,
        )
        .unwrap();
        let partials: Vec<_> = sk.iter().map(|k| sign_release(&req, k).unwrap()).collect();
        let tx = finalize_release(&req, &partials).unwrap();
        let mut prevouts = req.plan().unwrap().prevouts;
        prevouts[0].value = Amount::from_sat(1_000);
        assert!(matches!(
            verify_release_tx(&tx, &prevouts),
            Err(ReleaseError::Mismatch(m)) if m.contains("exceed inputs")
        ));
    }
}
