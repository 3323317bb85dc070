//! BIP-322 proofs of funds (`pof…`): a finalized PSBT of `to_sign` whose additional
//! inputs spend the UTXOs being proven.
//!
//! A proof only shows that the signer *could* spend those outputs; whether they exist
//! and are unspent is the caller's business (a Bitcoin backend). [`verify_pof`]
//! therefore checks the PSBT against the UTXO list the caller trusts, exactly: no
//! extra, no missing, no mismatched amount or script. [`verify_pof_claimed`] reports
//! what the PSBT itself claims, for readers who have no UTXO list.
//!
//! Building proofs: [`sign_pof_single`] for a single-key P2WPKH address; multisig
//! proofs go through the split signing of [`crate::multisig`] with
//! [`crate::multisig::Form::ProofOfFunds`].

use std::collections::{HashMap, HashSet};

use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::base64::Engine as _;
use bitcoin::psbt::{raw, Psbt};
use bitcoin::secp256k1::SecretKey;
use bitcoin::sighash::SighashCache;
use bitcoin::{
    Address, Amount, OutPoint, Script, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness,
};
use serde::Serialize;
use ubtc_core::bundle::Utxo;

use crate::bip322::{
    self, check_to_sign_shape, decode_base64, Format, SignError, ToSignParams, Verified,
    VerifyError, MAX_POF_SIGNATURE_CHARS, PSBT_GLOBAL_GENERIC_SIGNED_MESSAGE,
};
use crate::script;

/// Most inputs in a proof of funds PSBT (the challenge plus the bundle's UTXO limit).
pub const MAX_POF_INPUTS: usize = ubtc_core::bundle::BUNDLE_MAX_UTXOS + 1;
/// Most inputs when any input is a legacy (non-segwit) spend: legacy sighashes hash
/// the whole transaction per input, so the cost grows with the square of the count.
pub const MAX_POF_INPUTS_WITH_LEGACY: usize = 256;
/// Most bytes of non-witness UTXOs (whole previous transactions) in one proof, summed
/// over its inputs and checked before any of them is hashed. Legacy inputs need them;
/// 2 MB is far above what 256 legacy inputs of ordinary transactions carry.
pub const MAX_POF_NON_WITNESS_UTXO_BYTES: usize = 2_000_000;
/// The 21 million BTC supply in satoshis (Bitcoin Core's `MAX_MONEY`): no input, and
/// no proof's total, may claim more.
pub const MAX_MONEY_SATS: u64 = 21_000_000 * 100_000_000;

/// The funds a proof of funds covers: its additional inputs, each verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProvenFunds {
    pub total_sats: u64,
    pub inputs: Vec<Utxo>,
    /// `to_sign`'s nLockTime. Scripts with `OP_CHECKLOCKTIMEVERIFY` verify only
    /// against it, so a non-zero value can mean the coins are spendable only later.
    pub lock_time: u32,
    /// nSequence of every input of `to_sign`, the challenge first (so one more than
    /// `inputs`). A non-zero value can satisfy `OP_CHECKSEQUENCEVERIFY`: a relative
    /// time lock on that coin.
    pub sequences: Vec<u32>,
}

impl ProvenFunds {
    /// True when the proof used a lock time or any nSequence: it then shows the coins
    /// spendable at some time, not necessarily now (BIP-322's "valid at time T and
    /// age S"). Reserve proofs must not be.
    pub fn is_time_locked(&self) -> bool {
        self.lock_time != 0 || self.sequences.iter().any(|s| *s != 0)
    }
}

/// Verifies a `pof…` signature against exactly the UTXOs in `utxos` (order does not
/// matter; duplicates are refused).
///
/// The PSBT's outpoints are matched against `utxos` before any previous transaction
/// is hashed or any script run, so a proof of other coins costs next to nothing to
/// refuse.
pub fn verify_pof(
    address: &Address,
    message: &[u8],
    signature: &str,
    utxos: &[Utxo],
) -> Result<ProvenFunds, VerifyError> {
    let expected: Vec<Utxo> = utxos.iter().map(normalize).collect();
    let mut seen = HashSet::with_capacity(expected.len());
    for u in &expected {
        if !seen.insert((u.txid.as_str(), u.vout)) {
            return Err(VerifyError::UtxoMismatch(format!(
                "UTXO {}:{} is listed twice",
                u.txid, u.vout
            )));
        }
    }
    verify_pof_inner(address, message, signature, Some(&expected))
}

/// Verifies a `pof…` signature and reports the UTXOs its PSBT claims (from its
/// witness / non-witness UTXO fields). Every input's script is verified.
pub fn verify_pof_claimed(
    address: &Address,
    message: &[u8],
    signature: &str,
) -> Result<ProvenFunds, VerifyError> {
    verify_pof_inner(address, message, signature, None)
}

fn verify_pof_inner(
    address: &Address,
    message: &[u8],
    signature: &str,
    expected: Option<&[Utxo]>,
) -> Result<ProvenFunds, VerifyError> {
    if signature.len() > MAX_POF_SIGNATURE_CHARS {
        return Err(VerifyError::TooLong {
            len: signature.len(),
            max: MAX_POF_SIGNATURE_CHARS,
        });
    }
    let Some(rest) = signature.strip_prefix("pof") else {
        return Err(VerifyError::ParsePof(
            "signature does not start with pof".into(),
        ));
    };
    let verified = verify_pof_psbt(&address.script_pubkey(), message, rest, expected)?;
    verified
        .funds
        .ok_or_else(|| VerifyError::Invalid("proof of funds without funds".into()))
}

fn normalize(u: &Utxo) -> Utxo {
    Utxo {
        txid: u.txid.to_ascii_lowercase(),
        vout: u.vout,
        amount_sats: u.amount_sats,
        script_pubkey_hex: u.script_pubkey_hex.to_ascii_lowercase(),
    }
}

/// Parses and verifies the base64 PSBT (without its `pof` prefix) for `challenge`.
pub(crate) fn verify_pof_claimed_script(
    challenge: &Script,
    message: &[u8],
    b64: &str,
) -> Result<Verified, VerifyError> {
    verify_pof_psbt(challenge, message, b64, None)
}

/// The additional inputs' outpoints are exactly `expected`'s (normalized, without
/// duplicates). No hashing: run before anything expensive.
fn match_outpoints(tx: &Transaction, expected: &[Utxo]) -> Result<(), VerifyError> {
    let listed: HashSet<(&str, u32)> = expected.iter().map(|u| (u.txid.as_str(), u.vout)).collect();
    let mut spent = HashSet::with_capacity(tx.input.len());
    for txin in tx.input.iter().skip(1) {
        let txid = txin.previous_output.txid.to_string();
        let vout = txin.previous_output.vout;
        if !listed.contains(&(txid.as_str(), vout)) {
            return Err(VerifyError::UtxoMismatch(format!(
                "proof spends {txid}:{vout} which is not in the UTXO list"
            )));
        }
        spent.insert((txid, vout));
    }
    if let Some(missing) = expected
        .iter()
        .find(|e| !spent.contains(&(e.txid.clone(), e.vout)))
    {
        return Err(VerifyError::UtxoMismatch(format!(
            "UTXO {}:{} is not spent by the proof",
            missing.txid, missing.vout
        )));
    }
    Ok(())
}

/// Parses and verifies the PSBT; with `expected` (normalized, no duplicates), its
/// additional inputs must spend exactly those UTXOs, with the same amounts and
/// scripts.
///
/// Order of work, cheapest first, so a hostile proof is refused before it costs much:
/// parse and count the inputs; match the outpoints against `expected`; check that
/// every input is finalized and spent once, the legacy-input limit and the limit on
/// non-witness UTXO bytes; only then hash each previous transaction (once), resolve
/// the prevouts, check amounts, and run the scripts.
fn verify_pof_psbt(
    challenge: &Script,
    message: &[u8],
    b64: &str,
    expected: Option<&[Utxo]>,
) -> Result<Verified, VerifyError> {
    let bytes = decode_base64(b64)?;
    let psbt = Psbt::deserialize(&bytes).map_err(|e| VerifyError::ParsePof(e.to_string()))?;
    let n = psbt.unsigned_tx.input.len();
    if n > MAX_POF_INPUTS {
        return Err(VerifyError::Invalid(format!(
            "{n} inputs; at most {MAX_POF_INPUTS}"
        )));
    }
    if psbt.inputs.len() != n {
        return Err(VerifyError::ParsePof(
            "PSBT input maps do not match the transaction's inputs".into(),
        ));
    }
    let message_key = raw::Key {
        type_value: PSBT_GLOBAL_GENERIC_SIGNED_MESSAGE,
        key: Vec::new(),
    };
    if let Some(m) = psbt.unknown.get(&message_key) {
        if m.as_slice() != message {
            return Err(VerifyError::Invalid(
                "the PSBT's signed-message field differs from the message".into(),
            ));
        }
    }
    if let Some(expected) = expected {
        match_outpoints(&psbt.unsigned_tx, expected)?;
    }

    // Cheap structural checks and limits, before any previous transaction is hashed.
    let mut seen = HashSet::with_capacity(n);
    let mut legacy = false;
    let mut non_witness_bytes: usize = 0;
    for (i, (txin, pin)) in psbt.unsigned_tx.input.iter().zip(&psbt.inputs).enumerate() {
        if !seen.insert(txin.previous_output) {
            return Err(VerifyError::Invalid(format!(
                "input {i} spends {} twice",
                txin.previous_output
            )));
        }
        if pin.final_script_sig.is_none() && pin.final_script_witness.is_none() {
            return Err(VerifyError::Invalid(format!("input {i} is not finalized")));
        }
        legacy |= pin
            .final_script_witness
            .as_ref()
            .is_none_or(|w| w.is_empty());
        if let Some(prev) = &pin.non_witness_utxo {
            non_witness_bytes = non_witness_bytes.saturating_add(prev.total_size());
        }
    }
    if legacy && n > MAX_POF_INPUTS_WITH_LEGACY {
        return Err(VerifyError::Invalid(format!(
            "{n} inputs with legacy spends; at most {MAX_POF_INPUTS_WITH_LEGACY}"
        )));
    }
    if non_witness_bytes > MAX_POF_NON_WITNESS_UTXO_BYTES {
        return Err(VerifyError::Invalid(format!(
            "{non_witness_bytes} non-witness UTXO bytes; at most {MAX_POF_NON_WITNESS_UTXO_BYTES}"
        )));
    }

    let spend = bip322::to_spend(challenge, message);
    let mut tx = psbt.unsigned_tx.clone();
    check_to_sign_shape(&tx, spend.compute_txid())?;

    // Each previous transaction is hashed once. An input may omit its own when an
    // input with the same txid carries it (BIP-322's optimisation).
    let mut prev_txs: HashMap<Txid, &Transaction> = HashMap::new();
    for (i, (txin, pin)) in tx.input.iter().zip(&psbt.inputs).enumerate().skip(1) {
        if let Some(prev) = &pin.non_witness_utxo {
            if prev.compute_txid() != txin.previous_output.txid {
                return Err(VerifyError::Invalid(format!(
                    "input {i}: non-witness UTXO does not hash to {}",
                    txin.previous_output.txid
                )));
            }
            prev_txs.entry(txin.previous_output.txid).or_insert(prev);
        }
    }

    let mut prevouts: Vec<TxOut> = Vec::with_capacity(n);
    for (i, (txin, pin)) in tx.input.iter_mut().zip(&psbt.inputs).enumerate() {
        txin.script_sig = pin.final_script_sig.clone().unwrap_or_default();
        txin.witness = pin.final_script_witness.clone().unwrap_or_default();
        let is_legacy = txin.witness.is_empty();

        let from_witness = pin.witness_utxo.clone();
        let own_non_witness = pin.non_witness_utxo.as_ref();
        let from_non_witness = if i == 0 {
            None
        } else {
            match prev_txs.get(&txin.previous_output.txid) {
                None => None,
                Some(prev) => Some(
                    prev.output
                        .get(txin.previous_output.vout as usize)
                        .cloned()
                        .ok_or_else(|| {
                            VerifyError::Invalid(format!("input {i}: vout out of range"))
                        })?,
                ),
            }
        };
        if let (Some(a), Some(b)) = (&from_witness, &from_non_witness) {
            if a != b {
                return Err(VerifyError::Invalid(format!(
                    "input {i}: witness and non-witness UTXO disagree"
                )));
            }
        }
        let prevout = if i == 0 {
            // The challenge output is ours to rebuild; a PSBT that says otherwise lies.
            if let Some(w) = &from_witness {
                if *w != spend.output[0] {
                    return Err(VerifyError::Invalid(
                        "input 0's UTXO is not the BIP-322 challenge".into(),
                    ));
                }
            }
            // BIP-322: every input of a proof of funds carries its UTXO, the first too.
            if from_witness.is_none() && own_non_witness.is_none() {
                return Err(VerifyError::Invalid(
                    "input 0 has no witness or non-witness UTXO".into(),
                ));
            }
            if let Some(prev) = own_non_witness {
                if *prev != spend {
                    return Err(VerifyError::Invalid(
                        "input 0's previous transaction is not to_spend".into(),
                    ));
                }
            }
            spend.output[0].clone()
        } else if is_legacy {
            // A legacy sighash does not commit to the amount: only the full previous
            // transaction proves it.
            from_non_witness.ok_or_else(|| {
                VerifyError::Invalid(format!(
                    "input {i} is a legacy spend without its previous transaction"
                ))
            })?
        } else {
            from_witness.or(from_non_witness).ok_or_else(|| {
                VerifyError::Invalid(format!("input {i} has no witness or non-witness UTXO"))
            })?
        };
        prevouts.push(prevout);
    }

    // Amounts (and, with a list, amounts and scripts) before any script runs.
    let mut total: u64 = 0;
    let mut inputs = Vec::with_capacity(n.saturating_sub(1));
    for (i, (txin, prevout)) in tx.input.iter().zip(&prevouts).enumerate().skip(1) {
        let sats = prevout.value.to_sat();
        if sats > MAX_MONEY_SATS {
            return Err(VerifyError::Invalid(format!(
                "input {i} claims {sats} sats, more than 21 million BTC"
            )));
        }
        total = total
            .checked_add(sats)
            .filter(|t| *t <= MAX_MONEY_SATS)
            .ok_or_else(|| {
                VerifyError::Invalid("the inputs claim more than 21 million BTC in total".into())
            })?;
        inputs.push(Utxo {
            txid: txin.previous_output.txid.to_string(),
            vout: txin.previous_output.vout,
            amount_sats: sats,
            script_pubkey_hex: hex::encode(prevout.script_pubkey.as_bytes()),
        });
    }
    if let Some(expected) = expected {
        let by_outpoint: HashMap<(&str, u32), &Utxo> = expected
            .iter()
            .map(|e| ((e.txid.as_str(), e.vout), e))
            .collect();
        for u in &inputs {
            match by_outpoint.get(&(u.txid.as_str(), u.vout)) {
                // match_outpoints ran first; kept as a guard.
                None => {
                    return Err(VerifyError::UtxoMismatch(format!(
                        "proof spends {}:{} which is not in the UTXO list",
                        u.txid, u.vout
                    )))
                }
                Some(e) if *e != u => {
                    return Err(VerifyError::UtxoMismatch(format!(
                        "{}:{}: proof claims {} sats to script {}, the list says {} sats to {}",
                        u.txid,
                        u.vout,
                        u.amount_sats,
                        u.script_pubkey_hex,
                        e.amount_sats,
                        e.script_pubkey_hex
                    )))
                }
                Some(_) => {}
            }
        }
    }

    let mut cache = SighashCache::new(&tx);
    for i in 0..n {
        script::verify_input(&tx, i, &prevouts, &mut cache).map_err(
            |e| match VerifyError::from(e) {
                VerifyError::Script(e) => VerifyError::Invalid(format!("input {i}: {e}")),
                VerifyError::Inconclusive(e) => {
                    VerifyError::Inconclusive(format!("input {i}: {e}"))
                }
                other => other,
            },
        )?;
    }
    Ok(Verified {
        format: Format::ProofOfFunds,
        lock_time: tx.lock_time.to_consensus_u32(),
        sequence: tx.input[0].sequence.0,
        funds: Some(ProvenFunds {
            total_sats: total,
            inputs,
            lock_time: tx.lock_time.to_consensus_u32(),
            sequences: tx.input.iter().map(|i| i.sequence.0).collect(),
        }),
    })
}

/// A UTXO the signer wants to prove, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendableUtxo {
    pub outpoint: OutPoint,
    pub txout: TxOut,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UtxoError {
    #[error("UTXO txid {0:?} is not 64 hex characters")]
    Txid(String),
    #[error("UTXO script {0:?} is not hex")]
    Script(String),
    #[error("UTXO {0} is listed twice")]
    Duplicate(String),
}

impl SpendableUtxo {
    pub fn parse(u: &Utxo) -> Result<Self, UtxoError> {
        let txid: Txid = u
            .txid
            .parse()
            .map_err(|_| UtxoError::Txid(u.txid.clone()))?;
        let spk = hex::decode(&u.script_pubkey_hex)
            .map_err(|_| UtxoError::Script(u.script_pubkey_hex.clone()))?;
        Ok(Self {
            outpoint: OutPoint { txid, vout: u.vout },
            txout: TxOut {
                value: Amount::from_sat(u.amount_sats),
                script_pubkey: ScriptBuf::from_bytes(spk),
            },
        })
    }

    pub fn parse_all(utxos: &[Utxo]) -> Result<Vec<Self>, UtxoError> {
        let mut seen = HashSet::new();
        utxos
            .iter()
            .map(|u| {
                let p = Self::parse(u)?;
                if !seen.insert(p.outpoint) {
                    return Err(UtxoError::Duplicate(p.outpoint.to_string()));
                }
                Ok(p)
            })
            .collect()
    }
}

/// The unsigned `to_sign` of a proof of funds: the challenge input, then one input per
/// UTXO (in the given order), and its prevouts.
pub(crate) fn pof_to_sign(
    challenge: &Script,
    message: &[u8],
    params: ToSignParams,
    utxos: &[SpendableUtxo],
) -> (Transaction, Vec<TxOut>) {
    let spend = bip322::to_spend(challenge, message);
    let mut tx = bip322::to_sign(spend.compute_txid(), params);
    let mut prevouts = spend.output;
    for u in utxos {
        tx.input.push(TxIn {
            previous_output: u.outpoint,
            script_sig: ScriptBuf::new(),
            sequence: Sequence(0),
            witness: Witness::new(),
        });
        prevouts.push(u.txout.clone());
    }
    (tx, prevouts)
}

/// Encodes a finalized proof-of-funds PSBT: the message global, a witness UTXO on
/// every input, and each input's final scriptSig / witness from `signed`.
pub(crate) fn encode_pof(
    unsigned: Transaction,
    signed: &Transaction,
    prevouts: &[TxOut],
    message: &[u8],
) -> Result<String, SignError> {
    let mut psbt =
        Psbt::from_unsigned_tx(unsigned).map_err(|e| SignError::Params(e.to_string()))?;
    psbt.unknown.insert(
        raw::Key {
            type_value: PSBT_GLOBAL_GENERIC_SIGNED_MESSAGE,
            key: Vec::new(),
        },
        message.to_vec(),
    );
    for ((pin, txin), prevout) in psbt.inputs.iter_mut().zip(&signed.input).zip(prevouts) {
        pin.witness_utxo = Some(prevout.clone());
        if !txin.script_sig.is_empty() {
            pin.final_script_sig = Some(txin.script_sig.clone());
        }
        if !txin.witness.is_empty() {
            pin.final_script_witness = Some(txin.witness.clone());
        }
    }
    Ok(format!("pof{}", BASE64.encode(psbt.serialize())))
}

/// Proof of funds for a single-key P2WPKH (or P2TR key path) address over its own
/// UTXOs. Every UTXO must pay to `address`.
pub fn sign_pof_single(
    secret: &SecretKey,
    address: &Address,
    message: &[u8],
    utxos: &[Utxo],
) -> Result<String, SignError> {
    let spk = address.script_pubkey();
    let signer = bip322::SingleKeySigner::new(*secret, address)?;
    if !matches!(
        signer.kind(),
        bip322::SingleKeyKind::P2wpkh | bip322::SingleKeyKind::P2tr
    ) {
        return Err(SignError::UnsupportedAddress {
            form: "proof of funds",
            address: address.to_string(),
        });
    }
    let utxos = SpendableUtxo::parse_all(utxos).map_err(|e| SignError::Params(e.to_string()))?;
    if let Some(u) = utxos.iter().find(|u| u.txout.script_pubkey != spk) {
        return Err(SignError::Params(format!(
            "UTXO {} does not pay to {address}",
            u.outpoint
        )));
    }
    let (unsigned, prevouts) = pof_to_sign(&spk, message, ToSignParams::default(), &utxos);
    let mut signed = unsigned.clone();
    for i in 0..signed.input.len() {
        signer.sign_input(&mut signed, i, &prevouts)?;
    }
    encode_pof(unsigned, &signed, &prevouts, message)
}
