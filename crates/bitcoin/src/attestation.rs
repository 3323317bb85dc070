//! Reserve attestations (`ubtc_core::attestation`): building their BIP-322 proof of
//! funds with split M-of-N signing, and verifying a whole attestation offline.
//!
//! The proof of funds is a BIP-322 `pof` whose message is the attestation text and
//! whose challenge is the first *active* reserve's script. Its `to_sign` spends the
//! challenge, then every listed UTXO in canonical order (by txid hex, then vout; see
//! [`ubtc_core::attestation::sorted_utxos`]), with nVersion, nLockTime and every
//! nSequence 0. Inputs may mix reserve kinds; each gets its own witness:
//! `wsh`/`sh(wsh)` `multi`/`sortedmulti` (`[<empty>, sig…, witness script]`) and
//! `wpkh`/`sh(wpkh)` (`[sig, key]`). Legacy `pkh` and Taproot reserves are refused:
//! legacy sighashes grow with the square of the input count, and key-path Taproot
//! cannot be split M-of-N without a different signing protocol.
//!
//! Everything is rebuilt from the document, never taken from a PSBT: the coordinator
//! and every guardian run [`PreparedPof::prepare`] on the same unsigned attestation and
//! get the same transaction and sighashes (computed once per input with one
//! [`SighashCache`]: linear in the inputs). Each guardian signs every input its key
//! can sign ([`PreparedPof::sign`]); the coordinator checks each guardian's partials
//! against that guardian's key ([`PreparedPof::check`]) and assembles M per input
//! ([`PreparedPof::combine`]). No function needs two private keys.
//!
//! The verifier ([`verify_attestation`]) rebuilds the same transaction from the
//! document and requires the proof's transaction to be exactly it, so an input added,
//! removed or reordered, an amount changed by one satoshi or a script that is not the
//! reserve's is refused before any signature is checked; then each input's witness is
//! checked against the policy its reserve's descriptor names, with the sighash that
//! was computed once. Only a pinned registry ([`verify_attestation_pinned`]) says the
//! reserves and approvers are the real ones; without it the verdict is `unpinned`.

use std::collections::{HashMap, HashSet};
use std::fmt;

use bitcoin::base64::Engine as _;
use bitcoin::hashes::Hash;
use bitcoin::psbt::{raw, Psbt};
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{ecdsa, Message, PublicKey, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{CompressedPublicKey, OutPoint, ScriptBuf, Transaction, TxOut, Txid, Witness};
use serde::{Deserialize, Serialize};
use ubtc_core::attestation::{
    approval_digest, ratio_ppm, supply_sats_ceil, AttestationApproval, AttestationError,
    ReserveAttestation, ReserveStatus, MAX_MONEY_SATS,
};
use ubtc_core::bundle::Utxo;
use ubtc_core::registry::ReserveStatus as RegistryStatus;

use crate::bip322::{ToSignParams, MAX_POF_SIGNATURE_CHARS, PSBT_GLOBAL_GENERIC_SIGNED_MESSAGE};
use crate::bundle::RegistryPin;
use crate::descriptor::{Descriptor, DescriptorError};
use crate::multisig::Wrapping;
use crate::pof::{self, SpendableUtxo};
use crate::registry as reg;
use crate::script::is_strict_der;
use crate::SECP;

/// Why an attestation's proof of funds cannot be prepared, signed or combined.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    #[error("{0}")]
    Shape(#[from] AttestationError),
    #[error("reserve {index}: descriptor: {source}")]
    Descriptor {
        index: usize,
        source: DescriptorError,
    },
    #[error("reserve {index}: {kind} reserves cannot be attested (only wsh/sh(wsh) multisig and wpkh/sh(wpkh))")]
    UnsupportedKind { index: usize, kind: &'static str },
    #[error("reserve {index}: address {stated} is not the descriptor's address {derived}")]
    AddressMismatch {
        index: usize,
        stated: String,
        derived: String,
    },
    #[error("UTXO {outpoint} pays script {script}, which is not its reserve's ({reserve})")]
    ScriptNotReserve {
        outpoint: String,
        script: String,
        reserve: String,
    },
    #[error("reserves {first} and {index} have the same script")]
    SameScript { first: usize, index: usize },
    #[error("key {0} is in no reserve of this attestation")]
    KeyNotInAnyReserve(String),
    #[error("partial signatures from {key} rejected: {reason}")]
    BadPartial { key: String, reason: String },
    #[error("input {input}: {valid} signatures from distinct keys; {needed} needed")]
    NotEnoughSignatures {
        input: usize,
        valid: usize,
        needed: usize,
    },
    #[error("could not build the proof: {0}")]
    Build(String),
}

impl AttestError {
    /// Stable code for reports and APIs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Shape(e) => e.code(),
            Self::Descriptor { .. } => "descriptor_invalid",
            Self::UnsupportedKind { .. } => "unsupported_reserve_kind",
            Self::AddressMismatch { .. } => "address_mismatch",
            Self::ScriptNotReserve { .. } => "utxo_script_not_reserve",
            Self::SameScript { .. } => "duplicate_reserve",
            Self::KeyNotInAnyReserve(_) => "key_not_in_reserves",
            Self::BadPartial { .. } => "bad_partial",
            Self::NotEnoughSignatures { .. } => "not_enough_signatures",
            Self::Build(_) => "build_failed",
        }
    }
}

/// How one reserve's inputs are signed and what their witness must be.
#[derive(Debug, Clone)]
enum Spend {
    /// `multi`/`sortedmulti`: keys in script order.
    Multi {
        threshold: usize,
        keys: Vec<CompressedPublicKey>,
        witness_script: ScriptBuf,
    },
    /// `wpkh`/`sh(wpkh)`.
    Single {
        key: CompressedPublicKey,
        /// The P2WPKH script the BIP-143 script code is derived from.
        p2wpkh: ScriptBuf,
    },
}

#[derive(Debug, Clone)]
struct ReservePlan {
    spend: Spend,
    script_pubkey: ScriptBuf,
    /// Empty for native segwit; the push of the redeem script for `sh(…)`.
    script_sig: ScriptBuf,
    kind: &'static str,
}

impl ReservePlan {
    fn new(index: usize, descriptor: &str) -> Result<Self, AttestError> {
        let parsed = Descriptor::parse(descriptor)
            .map_err(|source| AttestError::Descriptor { index, source })?;
        let script_pubkey = parsed.script_pubkey();
        let push = |inner: &ScriptBuf| -> Result<ScriptBuf, AttestError> {
            let bytes = PushBytesBuf::try_from(inner.to_bytes())
                .map_err(|e| AttestError::Build(e.to_string()))?;
            Ok(Builder::new().push_slice(bytes).into_script())
        };
        let (spend, script_sig, kind) = match parsed {
            Descriptor::Multi(policy, wrapping) => {
                let witness_script = policy.witness_script();
                let script_sig = match wrapping {
                    Wrapping::Wsh => ScriptBuf::new(),
                    Wrapping::ShWsh => push(&ScriptBuf::new_p2wsh(&witness_script.wscript_hash()))?,
                };
                let kind = match (wrapping, policy.is_sorted()) {
                    (Wrapping::Wsh, true) => "wsh(sortedmulti)",
                    (Wrapping::Wsh, false) => "wsh(multi)",
                    (Wrapping::ShWsh, true) => "sh(wsh(sortedmulti))",
                    (Wrapping::ShWsh, false) => "sh(wsh(multi))",
                };
                (
                    Spend::Multi {
                        threshold: policy.threshold(),
                        keys: policy.keys().to_vec(),
                        witness_script,
                    },
                    script_sig,
                    kind,
                )
            }
            Descriptor::Wpkh(key) => {
                let p2wpkh = ScriptBuf::new_p2wpkh(&key.wpubkey_hash());
                (Spend::Single { key, p2wpkh }, ScriptBuf::new(), "wpkh")
            }
            Descriptor::ShWpkh(key) => {
                let p2wpkh = ScriptBuf::new_p2wpkh(&key.wpubkey_hash());
                let script_sig = push(&p2wpkh)?;
                (Spend::Single { key, p2wpkh }, script_sig, "sh(wpkh)")
            }
            Descriptor::Pkh(_) => return Err(AttestError::UnsupportedKind { index, kind: "pkh" }),
            Descriptor::Tr(_) => return Err(AttestError::UnsupportedKind { index, kind: "tr" }),
        };
        Ok(Self {
            spend,
            script_pubkey,
            script_sig,
            kind,
        })
    }

    fn threshold(&self) -> usize {
        match &self.spend {
            Spend::Multi { threshold, .. } => *threshold,
            Spend::Single { .. } => 1,
        }
    }

    fn keys(&self) -> &[CompressedPublicKey] {
        match &self.spend {
            Spend::Multi { keys, .. } => keys,
            Spend::Single { key, .. } => std::slice::from_ref(key),
        }
    }
}

/// The proof of funds of one attestation, rebuilt from its content: the unsigned
/// `to_sign`, its prevouts and one sighash per input. What guardians sign with, the
/// coordinator combines with and the verifier checks against.
pub struct PreparedPof {
    reserves: Vec<ReservePlan>,
    unsigned: Transaction,
    prevouts: Vec<TxOut>,
    /// Index into `reserves` of each input's reserve (input 0: the challenge).
    input_reserve: Vec<usize>,
    sighashes: Vec<Message>,
    message: Vec<u8>,
    txid: Txid,
}

impl fmt::Debug for PreparedPof {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PreparedPof")
            .field("inputs", &self.unsigned.input.len())
            .field("txid", &self.txid)
            .finish()
    }
}

/// One guardian's signatures over an attestation's proof of funds: one entry per
/// input of `to_sign`, `None` where its key is not in that input's reserve. Each
/// signature is low-S DER followed by the SIGHASH_ALL byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PofPartials {
    pub pubkey: CompressedPublicKey,
    #[serde(with = "hex_opt_list")]
    pub signatures: Vec<Option<Vec<u8>>>,
}

mod hex_opt_list {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Option<Vec<u8>>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|o| o.as_ref().map(hex::encode)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Option<Vec<u8>>>, D::Error> {
        let v = Vec::<Option<String>>::deserialize(d)?;
        v.into_iter()
            .map(|o| {
                o.map(|s| hex::decode(s).map_err(serde::de::Error::custom))
                    .transpose()
            })
            .collect()
    }
}

/// Partials that [`PreparedPof::check`] accepted, bound to the proof they were
/// checked for.
#[derive(Debug, Clone)]
pub struct VerifiedPofPartials {
    partials: PofPartials,
    txid: Txid,
}

impl VerifiedPofPartials {
    pub fn partials(&self) -> &PofPartials {
        &self.partials
    }
}

/// A DER signature with its SIGHASH_ALL byte, checked for the BIP-322 encoding rules
/// (strict DER, SIGHASH_ALL, low S) and parsed.
fn parse_signature(sig: &[u8]) -> Result<ecdsa::Signature, &'static str> {
    if !is_strict_der(sig) {
        return Err("not strict DER");
    }
    let Some((&hash_type, der)) = sig.split_last() else {
        return Err("empty signature");
    };
    if hash_type != EcdsaSighashType::All as u8 {
        return Err("sighash type is not SIGHASH_ALL");
    }
    let parsed = ecdsa::Signature::from_der(der).map_err(|_| "not DER")?;
    let mut low = parsed;
    low.normalize_s();
    if low != parsed {
        return Err("high S");
    }
    Ok(parsed)
}

fn message_key() -> raw::Key {
    raw::Key {
        type_value: PSBT_GLOBAL_GENERIC_SIGNED_MESSAGE,
        key: Vec::new(),
    }
}

impl PreparedPof {
    /// Rebuilds the proof of funds of `att` (its `pof` and approvals are ignored).
    /// Checks the document's shape, every descriptor (supported kind, address equal
    /// to the descriptor's) and that every UTXO pays its reserve's script.
    pub fn prepare(att: &ReserveAttestation) -> Result<Self, AttestError> {
        att.check_shape()?;
        let network = crate::bundle::network_of(att.network);
        let mut reserves = Vec::with_capacity(att.reserves.len());
        for (index, r) in att.reserves.iter().enumerate() {
            let plan = ReservePlan::new(index, &r.descriptor)?;
            let derived = Descriptor::parse(&r.descriptor)
                .map_err(|source| AttestError::Descriptor { index, source })?
                .address(network)
                .to_string();
            if derived != r.address {
                return Err(AttestError::AddressMismatch {
                    index,
                    stated: r.address.clone(),
                    derived,
                });
            }
            // Two descriptor spellings of one script (keys listed in another order
            // under sortedmulti) would let UTXOs move between reserves unnoticed.
            if let Some(first) = reserves
                .iter()
                .position(|p: &ReservePlan| p.script_pubkey == plan.script_pubkey)
            {
                return Err(AttestError::SameScript { first, index });
            }
            reserves.push(plan);
        }
        // check_shape guarantees an active reserve.
        let challenge = att
            .reserves
            .iter()
            .position(|r| r.status == ReserveStatus::Active)
            .ok_or(AttestError::Shape(AttestationError::NoActiveReserve))?;

        let mut listed: Vec<(&Utxo, usize)> = Vec::with_capacity(att.utxo_count());
        for (index, (r, plan)) in att.reserves.iter().zip(&reserves).enumerate() {
            let script_hex = hex::encode(plan.script_pubkey.as_bytes());
            for u in &r.utxos {
                if u.script_pubkey_hex != script_hex {
                    return Err(AttestError::ScriptNotReserve {
                        outpoint: format!("{}:{}", u.txid, u.vout),
                        script: u.script_pubkey_hex.clone(),
                        reserve: r.address.clone(),
                    });
                }
                listed.push((u, index));
            }
        }
        listed.sort_unstable_by(|a, b| a.0.txid.cmp(&b.0.txid).then(a.0.vout.cmp(&b.0.vout)));

        let mut utxos = Vec::with_capacity(listed.len());
        let mut input_reserve = Vec::with_capacity(listed.len() + 1);
        input_reserve.push(challenge);
        for (u, index) in &listed {
            let txid: Txid = u
                .txid
                .parse()
                .map_err(|_| AttestError::Build(format!("txid {} does not parse", u.txid)))?;
            utxos.push(SpendableUtxo {
                outpoint: OutPoint { txid, vout: u.vout },
                txout: TxOut {
                    value: bitcoin::Amount::from_sat(u.amount_sats),
                    script_pubkey: reserves[*index].script_pubkey.clone(),
                },
            });
            input_reserve.push(*index);
        }
        let message = att.rebuild_text().into_bytes();
        let (unsigned, prevouts) = pof::pof_to_sign(
            &reserves[challenge].script_pubkey,
            &message,
            ToSignParams::default(),
            &utxos,
        );

        let mut cache = SighashCache::new(&unsigned);
        let mut sighashes = Vec::with_capacity(prevouts.len());
        for (i, (prevout, index)) in prevouts.iter().zip(&input_reserve).enumerate() {
            let hash = match &reserves[*index].spend {
                Spend::Multi { witness_script, .. } => cache
                    .p2wsh_signature_hash(i, witness_script, prevout.value, EcdsaSighashType::All)
                    .map_err(|e| AttestError::Build(e.to_string()))?,
                Spend::Single { p2wpkh, .. } => cache
                    .p2wpkh_signature_hash(i, p2wpkh, prevout.value, EcdsaSighashType::All)
                    .map_err(|e| AttestError::Build(e.to_string()))?,
            };
            sighashes.push(Message::from_digest(hash.to_byte_array()));
        }
        let txid = unsigned.compute_txid();
        Ok(Self {
            reserves,
            unsigned,
            prevouts,
            input_reserve,
            sighashes,
            message,
            txid,
        })
    }

    /// Inputs of `to_sign`: the challenge plus one per UTXO.
    pub fn input_count(&self) -> usize {
        self.unsigned.input.len()
    }

    /// Sighash of each input, in input order.
    pub fn sighashes(&self) -> &[Message] {
        &self.sighashes
    }

    /// Which reserves `key` signs for (one flag per reserve).
    fn signs(&self, key: &CompressedPublicKey) -> Vec<bool> {
        self.reserves
            .iter()
            .map(|r| r.keys().contains(key))
            .collect()
    }

    /// A guardian's step: signs every input whose reserve holds `secret`'s key.
    /// Refuses a key that is in no reserve.
    pub fn sign(&self, secret: &SecretKey) -> Result<PofPartials, AttestError> {
        let pubkey = CompressedPublicKey(secret.public_key(&SECP));
        let signs = self.signs(&pubkey);
        if !signs.iter().any(|s| *s) {
            return Err(AttestError::KeyNotInAnyReserve(pubkey.to_string()));
        }
        let signatures = self
            .sighashes
            .iter()
            .zip(&self.input_reserve)
            .map(|(msg, index)| {
                signs[*index].then(|| {
                    let mut der = SECP.sign_ecdsa(msg, secret).serialize_der().to_vec();
                    der.push(EcdsaSighashType::All as u8);
                    der
                })
            })
            .collect();
        Ok(PofPartials { pubkey, signatures })
    }

    /// The coordinator's check of one guardian's answer, before it counts: one
    /// signature for exactly the inputs whose reserve holds its key, each valid for
    /// that key and the input's sighash.
    pub fn check(&self, partials: PofPartials) -> Result<VerifiedPofPartials, AttestError> {
        let key = partials.pubkey.to_string();
        let bad = |reason: String| AttestError::BadPartial {
            key: key.clone(),
            reason,
        };
        let signs = self.signs(&partials.pubkey);
        if !signs.iter().any(|s| *s) {
            return Err(AttestError::KeyNotInAnyReserve(key));
        }
        if partials.signatures.len() != self.sighashes.len() {
            return Err(bad(format!(
                "{} signatures for {} inputs",
                partials.signatures.len(),
                self.sighashes.len()
            )));
        }
        for (i, ((sig, msg), index)) in partials
            .signatures
            .iter()
            .zip(&self.sighashes)
            .zip(&self.input_reserve)
            .enumerate()
        {
            match (signs[*index], sig) {
                (true, None) => return Err(bad(format!("input {i} is not signed"))),
                (false, Some(_)) => {
                    return Err(bad(format!(
                        "input {i} is signed but the key is not in its reserve"
                    )))
                }
                (false, None) => {}
                (true, Some(sig)) => {
                    let parsed =
                        parse_signature(sig).map_err(|e| bad(format!("input {i}: {e}")))?;
                    SECP.verify_ecdsa(msg, &parsed, &partials.pubkey.0)
                        .map_err(|_| bad(format!("input {i}: signature does not verify")))?;
                }
            }
        }
        Ok(VerifiedPofPartials {
            partials,
            txid: self.txid,
        })
    }

    /// Assembles the `pof…` from checked partials: for each input, the first M
    /// signatures in the reserve's key order. Partials checked for another proof are
    /// checked again; a repeated key counts once.
    pub fn combine(&self, partials: &[VerifiedPofPartials]) -> Result<String, AttestError> {
        let mut by_key: HashMap<CompressedPublicKey, &PofPartials> = HashMap::new();
        let mut rechecked = Vec::new();
        for v in partials {
            if v.txid != self.txid {
                rechecked.push(self.check(v.partials.clone())?);
            }
        }
        for v in partials
            .iter()
            .filter(|v| v.txid == self.txid)
            .chain(&rechecked)
        {
            by_key.entry(v.partials.pubkey).or_insert(&v.partials);
        }
        let mut signed = self.unsigned.clone();
        for (i, (input, index)) in signed.input.iter_mut().zip(&self.input_reserve).enumerate() {
            let plan = &self.reserves[*index];
            let needed = plan.threshold();
            let mut sigs: Vec<&[u8]> = Vec::with_capacity(needed);
            for key in plan.keys() {
                if sigs.len() == needed {
                    break;
                }
                if let Some(Some(sig)) = by_key.get(key).and_then(|p| p.signatures.get(i)) {
                    sigs.push(sig);
                }
            }
            if sigs.len() < needed {
                return Err(AttestError::NotEnoughSignatures {
                    input: i,
                    valid: sigs.len(),
                    needed,
                });
            }
            input.witness = match &plan.spend {
                Spend::Multi { witness_script, .. } => {
                    let mut items: Vec<&[u8]> = Vec::with_capacity(needed + 2);
                    items.push(&[]);
                    items.extend(sigs);
                    items.push(witness_script.as_bytes());
                    Witness::from_slice(&items)
                }
                Spend::Single { key, .. } => Witness::from_slice(&[sigs[0], &key.to_bytes()]),
            };
            input.script_sig = plan.script_sig.clone();
        }
        let pof = pof::encode_pof(
            self.unsigned.clone(),
            &signed,
            &self.prevouts,
            &self.message,
        )
        .map_err(|e| AttestError::Build(e.to_string()))?;
        // Larger policies (more signatures and keys per input) reach the proof's size
        // limit before the UTXO limit; no verifier here would read such a proof.
        if pof.len() > MAX_POF_SIGNATURE_CHARS {
            return Err(AttestError::Build(format!(
                "the proof is {} characters; at most {MAX_POF_SIGNATURE_CHARS}: attest fewer UTXOs",
                pof.len()
            )));
        }
        Ok(pof)
    }

    /// Checks a `pof…` against this rebuilt proof. `Err` for a proof that is not
    /// this transaction at all (unreadable, other message, inputs added, removed,
    /// reordered, other amounts or scripts); otherwise one verdict per input, in
    /// input order (input 0 is the challenge). Counts the ECDSA checks it made.
    pub fn verify(&self, signature: &str) -> Result<PofCheck, PofMismatch> {
        if signature.len() > MAX_POF_SIGNATURE_CHARS {
            return Err(PofMismatch::new(
                "pof_unreadable",
                format!(
                    "proof is {} characters; at most {MAX_POF_SIGNATURE_CHARS}",
                    signature.len()
                ),
            ));
        }
        let Some(b64) = signature.strip_prefix("pof") else {
            return Err(PofMismatch::new(
                "pof_unreadable",
                "the proof does not start with pof",
            ));
        };
        let bytes = bitcoin::base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| PofMismatch::new("pof_unreadable", "the proof is not base64"))?;
        let psbt = Psbt::deserialize(&bytes).map_err(|e| {
            PofMismatch::new(
                "pof_unreadable",
                format!("the proof's PSBT does not parse: {e}"),
            )
        })?;
        match psbt.unknown.get(&message_key()) {
            Some(m) if *m == self.message => {}
            Some(_) => {
                return Err(PofMismatch::new(
                    "pof_message_mismatch",
                    "the proof's signed message is not the attestation text",
                ))
            }
            None => {
                return Err(PofMismatch::new(
                    "pof_message_mismatch",
                    "the proof has no BIP-322 signed-message field",
                ))
            }
        }
        if psbt.unsigned_tx != self.unsigned {
            return Err(self.explain_tx_mismatch(&psbt.unsigned_tx));
        }
        if psbt.inputs.len() != self.prevouts.len() {
            return Err(PofMismatch::new(
                "pof_unreadable",
                "PSBT input maps do not match the transaction's inputs",
            ));
        }
        let mut checks: usize = 0;
        let verdicts = psbt
            .inputs
            .iter()
            .enumerate()
            .map(|(i, pin)| self.verify_input(i, pin, &mut checks).err())
            .collect();
        Ok(PofCheck {
            failures: verdicts,
            ecdsa_checks: checks,
        })
    }

    /// Says how a proof's transaction differs from the rebuilt one. Runs only on a
    /// refusal, so it may allocate freely.
    fn explain_tx_mismatch(&self, tx: &Transaction) -> PofMismatch {
        let ours: HashSet<OutPoint> = self
            .unsigned
            .input
            .iter()
            .skip(1)
            .map(|i| i.previous_output)
            .collect();
        let theirs: HashSet<OutPoint> =
            tx.input.iter().skip(1).map(|i| i.previous_output).collect();
        if let Some(extra) = tx
            .input
            .iter()
            .skip(1)
            .find(|i| !ours.contains(&i.previous_output))
        {
            return PofMismatch::new(
                "utxo_mismatch",
                format!(
                    "the proof spends {} which the attestation does not list",
                    extra.previous_output
                ),
            );
        }
        if let Some(missing) = self
            .unsigned
            .input
            .iter()
            .skip(1)
            .find(|i| !theirs.contains(&i.previous_output))
        {
            return PofMismatch::new(
                "utxo_mismatch",
                format!(
                    "the attestation lists {} which the proof does not spend",
                    missing.previous_output
                ),
            );
        }
        if tx.input.first().map(|i| i.previous_output)
            != self.unsigned.input.first().map(|i| i.previous_output)
        {
            return PofMismatch::new(
                "pof_message_mismatch",
                "the proof's challenge input is not to_spend of this text and challenge reserve",
            );
        }
        PofMismatch::new(
            "pof_tx_mismatch",
            "the proof's to_sign differs from the one rebuilt from the attestation (input order, version, lock time, sequence or outputs)",
        )
    }

    fn verify_input(
        &self,
        i: usize,
        pin: &bitcoin::psbt::Input,
        checks: &mut usize,
    ) -> Result<(), String> {
        let prevout = &self.prevouts[i];
        match &pin.witness_utxo {
            Some(w) if w == prevout => {}
            Some(w) => {
                return Err(format!(
                    "the proof claims {} sats to script {}, the attestation lists {} sats to {}",
                    w.value.to_sat(),
                    hex::encode(w.script_pubkey.as_bytes()),
                    prevout.value.to_sat(),
                    hex::encode(prevout.script_pubkey.as_bytes())
                ))
            }
            None => return Err("no witness UTXO".into()),
        }
        if pin.non_witness_utxo.is_some() {
            return Err("unexpected non-witness UTXO (every reserve input is segwit)".into());
        }
        let plan = &self.reserves[self.input_reserve[i]];
        let script_sig = pin.final_script_sig.clone().unwrap_or_default();
        if script_sig != plan.script_sig {
            return Err("scriptSig is not the reserve's redeem script push".into());
        }
        let Some(witness) = &pin.final_script_witness else {
            return Err("not finalized (no witness)".into());
        };
        let msg = &self.sighashes[i];
        match &plan.spend {
            Spend::Single { key, .. } => {
                if witness.len() != 2 {
                    return Err(format!(
                        "{} witness items; a wpkh spend has 2",
                        witness.len()
                    ));
                }
                if witness.nth(1) != Some(&key.to_bytes()[..]) {
                    return Err("witness key is not the reserve's key".into());
                }
                let sig = parse_signature(witness.nth(0).unwrap_or_default())?;
                *checks += 1;
                SECP.verify_ecdsa(msg, &sig, &key.0)
                    .map_err(|_| "signature does not verify for the reserve's key".to_string())
            }
            Spend::Multi {
                threshold,
                keys,
                witness_script,
            } => {
                let m = *threshold;
                if witness.len() != m + 2 {
                    return Err(format!(
                        "{} witness items; a {m}-of-{} spend has {}",
                        witness.len(),
                        keys.len(),
                        m + 2
                    ));
                }
                if witness.nth(0) != Some(&[][..]) {
                    return Err("CHECKMULTISIG dummy element is not empty (NULLDUMMY)".into());
                }
                if witness.last() != Some(witness_script.as_bytes()) {
                    return Err("witness script is not the reserve's".into());
                }
                // CHECKMULTISIG: signatures in key order, each key used at most once.
                // A key is tried only while enough keys remain for the remaining
                // signatures, so a signature whose key is forced is checked once.
                let mut k = 0usize;
                for s in 0..m {
                    let sig = parse_signature(witness.nth(s + 1).unwrap_or_default())?;
                    loop {
                        if keys.len() - k < m - s {
                            return Err(
                                "multisig signatures do not verify for the reserve's keys".into()
                            );
                        }
                        let key = &keys[k];
                        k += 1;
                        *checks += 1;
                        if SECP.verify_ecdsa(msg, &sig, &key.0).is_ok() {
                            break;
                        }
                    }
                }
                Ok(())
            }
        }
    }
}

/// Result of [`PreparedPof::verify`] for a proof of the right transaction.
#[derive(Debug, Clone)]
pub struct PofCheck {
    /// One entry per input: `None` when it verified, else why not.
    pub failures: Vec<Option<String>>,
    pub ecdsa_checks: usize,
}

/// A proof of funds that is not the attestation's transaction at all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PofMismatch {
    pub code: &'static str,
    pub message: String,
}

impl PofMismatch {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// A guardian's approval of `att`: its key and an ECDSA signature over
/// [`approval_digest`] of the attestation digest.
pub fn approve(att: &ReserveAttestation, secret: &SecretKey) -> AttestationApproval {
    let msg = Message::from_digest(approval_digest(&att.digest()));
    AttestationApproval {
        guardian_key: hex::encode(secret.public_key(&SECP).serialize()),
        signature: hex::encode(SECP.sign_ecdsa(&msg, secret).serialize_der()),
    }
}

/// The guardian keys whose approvals count, and how many are needed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardianSet {
    pub keys: Vec<PublicKey>,
    pub threshold: usize,
}

/// What [`verify_attestation`] checks approvals against.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// The guardians (from a pinned registry, or given by the user). Without it,
    /// the challenge reserve's keys and threshold are used, and the report says so.
    pub guardians: Option<GuardianSet>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum UtxoState {
    /// Spent by a valid input of the proof of funds, signed by its reserve's keys.
    Proven,
    NotProven,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UtxoVerdict {
    pub txid: String,
    pub vout: u32,
    pub amount_sats: u64,
    pub reserve: String,
    pub verdict: UtxoState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReserveVerdict {
    pub address: String,
    pub descriptor: String,
    pub status: ReserveStatus,
    /// `wsh(sortedmulti)`, `wpkh`, …; absent when the descriptor did not parse.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    pub threshold: usize,
    pub keys: Vec<String>,
    pub utxos: usize,
    pub proven_sats: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SupplyState {
    /// Stated in the document and covered by the guardians' signatures; not checked
    /// against the chain (that needs the holder's own node).
    ClaimedSigned,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SupplyVerdict {
    pub chain: String,
    pub token: String,
    pub block_number: u64,
    pub block_hash: String,
    pub base_units: String,
    pub decimals: u8,
    pub sats: u64,
    pub verdict: SupplyState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Valid,
    BadSignature,
    NotAGuardian,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalVerdict {
    pub guardian_key: String,
    pub verdict: ApprovalState,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportError {
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TotalsCheck {
    pub stated_reserve_sats: u64,
    pub proven_reserve_sats: u64,
    pub stated_supply_sats: u64,
    pub computed_supply_sats: u64,
    pub stated_ratio_ppm: Option<u64>,
    /// From the proven sats and the attested supply.
    pub computed_ratio_ppm: Option<u64>,
}

/// The offline verdict on one attestation. `valid` only when every UTXO is proven,
/// the text, totals and ratio are what the document proves, and enough guardians
/// approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttestationReport {
    /// Every check passed against the guardian set the approvals were counted
    /// against. Read it with `pinned`: unpinned, that set is the document's own.
    pub valid: bool,
    /// True when the approvals were counted against guardians the caller supplied
    /// (a pinned registry, or a set given directly), not the document's own keys.
    pub pinned: bool,
    /// `valid` (pinned), `unpinned` (consistent, but nothing outside the document
    /// vouches for its reserves or guardians) or `invalid`.
    pub verdict: &'static str,
    pub network: &'static str,
    pub bitcoin_height: u32,
    pub bitcoin_block_hash: String,
    /// SHA-256 of the attestation text, hex.
    pub digest: String,
    pub registry_version: u64,
    pub registry_fingerprint: String,
    pub audit_head: String,
    pub challenge_address: String,
    pub reserves: Vec<ReserveVerdict>,
    pub utxos: Vec<UtxoVerdict>,
    pub supply: Vec<SupplyVerdict>,
    pub totals: TotalsCheck,
    pub approvals: Vec<ApprovalVerdict>,
    pub approvals_valid: usize,
    pub approvals_needed: usize,
    /// Where the guardian keys came from: `pinned_registry`, `given` or
    /// `challenge_reserve`.
    pub guardians_from: &'static str,
    pub errors: Vec<ReportError>,
    /// What an offline check cannot establish.
    pub unchecked: Vec<&'static str>,
    /// ECDSA verifications the proof of funds took.
    pub ecdsa_checks: usize,
}

impl AttestationReport {
    pub fn is_valid(&self) -> bool {
        self.valid
    }
}

const UNCHECKED: [&str; 3] = [
    "that the block hash is the block at that height on the best chain (needs a Bitcoin node)",
    "that each UTXO existed and was unspent at that block (needs a Bitcoin node)",
    "each supply figure at its block (needs a node of that chain)",
];

/// Verifies `att` offline. Never panics on hostile input; every refusal is an entry
/// in `errors` with a stable code.
pub fn verify_attestation(att: &ReserveAttestation, options: &VerifyOptions) -> AttestationReport {
    let mut errors = Vec::new();
    let mut error =
        |code: &'static str, message: String| errors.push(ReportError { code, message });

    if let Err(e) = att.check_shape() {
        error(e.code(), e.to_string());
    }
    if att.text != att.rebuild_text() {
        error(
            "text_mismatch",
            "the document's text is not the text rebuilt from its fields".into(),
        );
    }
    let computed = att.computed_totals().ok();

    let prepared = match PreparedPof::prepare(att) {
        Ok(p) => Some(p),
        Err(e) => {
            // A shape error is already reported above.
            if !matches!(e, AttestError::Shape(_)) {
                error(e.code(), e.to_string());
            }
            None
        }
    };
    let reserve_plans: Vec<Option<ReservePlan>> = att
        .reserves
        .iter()
        .enumerate()
        .map(|(i, r)| ReservePlan::new(i, &r.descriptor).ok())
        .collect();

    // Per-UTXO verdicts, keyed by outpoint text (the document's own spelling).
    let mut failures: HashMap<(String, u32), String> = HashMap::new();
    let mut all_unproven: Option<String> = None;
    let mut ecdsa_checks = 0;
    match &prepared {
        None => all_unproven = Some("the proof could not be rebuilt from the document".into()),
        Some(p) => match p.verify(&att.pof) {
            Err(m) => {
                error(m.code, m.message.clone());
                all_unproven = Some(m.message);
            }
            Ok(check) => {
                ecdsa_checks = check.ecdsa_checks;
                if let Some(Some(why)) = check.failures.first() {
                    error("pof_invalid", format!("challenge input: {why}"));
                    all_unproven = Some(format!("the challenge input does not verify: {why}"));
                }
                for (input, failure) in p.unsigned.input.iter().zip(&check.failures).skip(1) {
                    if let Some(why) = failure {
                        let op = input.previous_output;
                        error("pof_invalid", format!("{op}: {why}"));
                        failures.insert((op.txid.to_string(), op.vout), why.clone());
                    }
                }
            }
        },
    }

    let mut reserves = Vec::with_capacity(att.reserves.len());
    let mut utxos = Vec::with_capacity(att.utxo_count());
    let mut proven_sats: u64 = 0;
    for (r, plan) in att.reserves.iter().zip(&reserve_plans) {
        let mut reserve_proven: u64 = 0;
        for u in &r.utxos {
            let reason = all_unproven
                .clone()
                .or_else(|| failures.get(&(u.txid.clone(), u.vout)).cloned());
            if reason.is_none() {
                reserve_proven = reserve_proven.saturating_add(u.amount_sats);
            }
            utxos.push(UtxoVerdict {
                txid: u.txid.clone(),
                vout: u.vout,
                amount_sats: u.amount_sats,
                reserve: r.address.clone(),
                verdict: if reason.is_none() {
                    UtxoState::Proven
                } else {
                    UtxoState::NotProven
                },
                reason,
            });
        }
        proven_sats = proven_sats
            .saturating_add(reserve_proven)
            .min(MAX_MONEY_SATS);
        reserves.push(ReserveVerdict {
            address: r.address.clone(),
            descriptor: r.descriptor.clone(),
            status: r.status,
            kind: plan.as_ref().map(|p| p.kind),
            threshold: plan.as_ref().map_or(0, ReservePlan::threshold),
            keys: plan
                .as_ref()
                .map(|p| p.keys().iter().map(ToString::to_string).collect())
                .unwrap_or_default(),
            utxos: r.utxos.len(),
            proven_sats: reserve_proven,
        });
    }

    let supply: Vec<SupplyVerdict> = att
        .supply
        .iter()
        .map(|s| SupplyVerdict {
            chain: s.chain.to_string(),
            token: s.token.clone(),
            block_number: s.block_number,
            block_hash: s.block_hash.clone(),
            base_units: s.supply.base_units.to_string(),
            decimals: s.supply.decimals,
            sats: supply_sats_ceil(&s.supply).unwrap_or(u64::MAX),
            verdict: SupplyState::ClaimedSigned,
        })
        .collect();
    let computed_supply = computed.map_or(u64::MAX, |t| t.supply_sats);
    let totals = TotalsCheck {
        stated_reserve_sats: att.totals.reserve_sats,
        proven_reserve_sats: proven_sats,
        stated_supply_sats: att.totals.supply_sats,
        computed_supply_sats: computed_supply,
        stated_ratio_ppm: att.totals.ratio_ppm,
        computed_ratio_ppm: ratio_ppm(proven_sats, computed_supply),
    };
    if totals.stated_reserve_sats != totals.proven_reserve_sats {
        error(
            "reserve_total_mismatch",
            format!(
                "the document states {} reserve sats; the proof proves {}",
                totals.stated_reserve_sats, totals.proven_reserve_sats
            ),
        );
    }
    if totals.stated_supply_sats != totals.computed_supply_sats {
        error(
            "supply_total_mismatch",
            format!(
                "the document states {} supply sats; its supply entries add up to {}",
                totals.stated_supply_sats, totals.computed_supply_sats
            ),
        );
    }
    if totals.stated_ratio_ppm != totals.computed_ratio_ppm {
        error(
            "ratio_mismatch",
            format!(
                "the document states a ratio of {} ppm; the proven reserves and attested supply give {}",
                fmt_ppm(totals.stated_ratio_ppm),
                fmt_ppm(totals.computed_ratio_ppm)
            ),
        );
    }

    // Approvals.
    let challenge = att
        .reserves
        .iter()
        .position(|r| r.status == ReserveStatus::Active);
    let (guardians, guardians_from) = match &options.guardians {
        Some(g) => (Some(g.clone()), "given"),
        None => (
            challenge
                .and_then(|i| reserve_plans.get(i))
                .and_then(Option::as_ref)
                .map(|p| GuardianSet {
                    keys: p.keys().iter().map(|k| k.0).collect(),
                    threshold: p.threshold(),
                }),
            "challenge_reserve",
        ),
    };
    let approval_msg = Message::from_digest(approval_digest(&att.digest()));
    let mut approvals = Vec::with_capacity(att.approvals.len());
    let mut counted = HashSet::new();
    for a in &att.approvals {
        let key: Option<PublicKey> = a.guardian_key.parse().ok();
        let verdict = match key {
            Some(k) if guardians.as_ref().is_some_and(|g| g.keys.contains(&k)) => {
                let ok = hex::decode(&a.signature)
                    .ok()
                    .and_then(|b| ecdsa::Signature::from_der(&b).ok())
                    .is_some_and(|s| SECP.verify_ecdsa(&approval_msg, &s, &k).is_ok());
                if ok {
                    counted.insert(k);
                    ApprovalState::Valid
                } else {
                    ApprovalState::BadSignature
                }
            }
            _ => ApprovalState::NotAGuardian,
        };
        if verdict == ApprovalState::BadSignature {
            error(
                "approval_invalid",
                format!("the approval of {} does not verify", a.guardian_key),
            );
        }
        approvals.push(ApprovalVerdict {
            guardian_key: a.guardian_key.clone(),
            verdict,
        });
    }
    let approvals_needed = guardians.as_ref().map_or(1, |g| g.threshold.max(1));
    if counted.len() < approvals_needed {
        error(
            "approvals_insufficient",
            format!(
                "{} valid guardian approvals; {approvals_needed} needed",
                counted.len()
            ),
        );
    }

    let challenge_address = challenge
        .and_then(|i| att.reserves.get(i))
        .map(|r| r.address.clone())
        .unwrap_or_default();
    let valid = errors.is_empty();
    let pinned = options.guardians.is_some();
    AttestationReport {
        valid,
        pinned,
        verdict: verdict_of(valid, pinned),
        network: att.network.as_str(),
        bitcoin_height: att.bitcoin_block.height,
        bitcoin_block_hash: att.bitcoin_block.hash.clone(),
        digest: hex::encode(att.digest()),
        registry_version: att.registry.version,
        registry_fingerprint: att.registry.fingerprint.clone(),
        audit_head: att.audit_head.clone(),
        challenge_address,
        reserves,
        utxos,
        supply,
        totals,
        approvals,
        approvals_valid: counted.len(),
        approvals_needed,
        guardians_from,
        errors,
        unchecked: UNCHECKED.to_vec(),
        ecdsa_checks,
    }
}

fn verdict_of(valid: bool, pinned: bool) -> &'static str {
    match (valid, pinned) {
        (false, _) => "invalid",
        (true, true) => "valid",
        (true, false) => "unpinned",
    }
}

/// Verifies `att` against the reserve registry the caller pinned (none: like
/// [`verify_attestation`] with no guardians, so at best `unpinned`).
///
/// An attestation names its registry version and fingerprint but does not carry the
/// chain, so only a pinned chain ([`RegistryPin::Versions`]) can check it: the
/// chain's first version is trusted as given and the rest must follow by guardian
/// signatures ([`reg::follow`]). The version the attestation names must be the
/// newest of that chain, with the same fingerprint; every attested reserve must be
/// listed there with the same descriptor and status; and the approvals are counted
/// against that version's guardians and threshold, never the document's own keys.
/// Requiring the newest version is strict on purpose: once the guardians publish a
/// version that retires a reserve or replaces a guardian (its key leaked, say), an
/// attestation under the older version proves nothing about today. To check an
/// attestation from before that, pin the chain up to the version it names.
pub fn verify_attestation_pinned(
    att: &ReserveAttestation,
    pin: Option<&RegistryPin>,
) -> AttestationReport {
    let Some(pin) = pin else {
        return verify_attestation(att, &VerifyOptions::default());
    };
    let (guardians, registry_errors) = check_registry(att, pin);
    // Without a usable version no key counts: falling back to the document's own
    // keys would let the pin be bypassed by a chain that does not verify.
    let guardians = guardians.unwrap_or(GuardianSet {
        keys: Vec::new(),
        threshold: 1,
    });
    let mut report = verify_attestation(
        att,
        &VerifyOptions {
            guardians: Some(guardians),
        },
    );
    report.guardians_from = "pinned_registry";
    if !registry_errors.is_empty() {
        let mut errors = registry_errors;
        errors.append(&mut report.errors);
        report.errors = errors;
        report.valid = false;
    }
    report.verdict = verdict_of(report.valid, report.pinned);
    report
}

/// The guardian set of the registry version `att` names, once that version is the
/// newest of the pinned chain and lists every attested reserve as attested; the
/// errors otherwise (the set is still returned when only reserves disagree).
fn check_registry(
    att: &ReserveAttestation,
    pin: &RegistryPin,
) -> (Option<GuardianSet>, Vec<ReportError>) {
    let fail = |code: &'static str, message: String| (None, vec![ReportError { code, message }]);
    let file = match pin {
        RegistryPin::Fingerprint(fp) => {
            return fail(
                "registry_chain_needed",
                format!(
                    "a reserve attestation carries its registry's version and fingerprint, not the registry: pin it with --registry FILE (the chain from the version you trust); a fingerprint alone ({fp}) cannot check its reserves or guardians"
                ),
            )
        }
        RegistryPin::Versions(file) => file,
    };
    let Some(first) = file.first() else {
        return fail("registry_empty", "the pinned registry file is empty".into());
    };
    let accepted = match reg::follow(first, file) {
        Ok(a) => a,
        Err(e) => return fail(e.code(), format!("pinned registry file: {e}")),
    };
    let newest = accepted[accepted.len() - 1];
    if att.registry.version != newest.version {
        return fail(
            "registry_version_not_current",
            format!(
                "the attestation names registry version {}; the pinned chain's newest version is {} (pin the chain up to version {} to check an older attestation)",
                att.registry.version, newest.version, att.registry.version
            ),
        );
    }
    if att.registry.fingerprint != newest.fingerprint() {
        return fail(
            "registry_fingerprint_mismatch",
            format!(
                "the attestation names registry version {} with fingerprint {}; the pinned version {} has fingerprint {}",
                att.registry.version,
                att.registry.fingerprint,
                newest.version,
                newest.fingerprint()
            ),
        );
    }
    if newest.network != att.network {
        return fail(
            "registry_network_mismatch",
            format!(
                "the pinned registry is for {}, the attestation for {}",
                newest.network.as_str(),
                att.network.as_str()
            ),
        );
    }
    let mut keys = Vec::with_capacity(newest.guardians.len());
    for k in &newest.guardians {
        match k.parse::<PublicKey>() {
            Ok(k) => keys.push(k),
            Err(_) => {
                return fail(
                    "registry_guardian_invalid",
                    format!(
                        "pinned registry version {}: guardian key {k} does not parse",
                        newest.version
                    ),
                )
            }
        }
    }
    let guardians = GuardianSet {
        keys,
        threshold: usize::try_from(newest.guardian_threshold).unwrap_or(usize::MAX),
    };
    let mut errors = Vec::new();
    for r in &att.reserves {
        let expected = match r.status {
            ReserveStatus::Active => RegistryStatus::Active,
            ReserveStatus::Retired => RegistryStatus::Retired,
        };
        match newest.reserve(&r.address) {
            Some(x) if x.descriptor == r.descriptor && x.status == expected => {}
            Some(x) if x.descriptor == r.descriptor => errors.push(ReportError {
                code: "reserve_status_mismatch",
                message: format!(
                    "reserve {} is attested as {} but is {} in registry version {}",
                    r.address,
                    r.status.as_str(),
                    x.status.as_str(),
                    newest.version
                ),
            }),
            _ => errors.push(ReportError {
                code: "reserve_not_in_registry",
                message: format!(
                    "reserve {} ({}) is not a reserve of registry version {}",
                    r.address, r.descriptor, newest.version
                ),
            }),
        }
    }
    (Some(guardians), errors)
}

fn fmt_ppm(p: Option<u64>) -> String {
    p.map_or_else(|| "none".into(), |p| p.to_string())
}

fn fmt_sats(sats: u64) -> String {
    ubtc_core::Sats(sats).to_string()
}

/// Most UTXO lines the human report prints one by one; above it, it prints counts
/// and the UTXOs that failed (`--json` always has every verdict).
const REPORT_MAX_UTXO_LINES: usize = 50;

impl fmt::Display for AttestationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verdict {
            "valid" if self.guardians_from == "pinned_registry" => writeln!(
                f,
                "reserve attestation: VALID (reserves and guardians checked against the pinned registry)"
            )?,
            "valid" => writeln!(
                f,
                "reserve attestation: VALID (approvals checked against the given guardian keys)"
            )?,
            "unpinned" => writeln!(
                f,
                "reserve attestation: UNPINNED: the document is consistent, but NOTHING PINS ITS \
                 RESERVES OR GUARDIANS (anybody can sign one with keys of their own); pass \
                 --registry FILE"
            )?,
            _ => writeln!(f, "reserve attestation: INVALID")?,
        }
        writeln!(f, "  network:        {}", self.network)?;
        writeln!(
            f,
            "  bitcoin block:  {} {}",
            self.bitcoin_height, self.bitcoin_block_hash
        )?;
        writeln!(f, "  digest:         {}", self.digest)?;
        writeln!(
            f,
            "  registry:       version {} fingerprint {}{}",
            self.registry_version,
            self.registry_fingerprint,
            if self.guardians_from == "pinned_registry" {
                " (checked against the pinned registry)"
            } else {
                " (not pinned by this check)"
            }
        )?;
        writeln!(f, "  audit head:     {}", self.audit_head)?;
        writeln!(f, "  challenge:      {}", self.challenge_address)?;
        writeln!(f, "reserves:")?;
        for r in &self.reserves {
            writeln!(
                f,
                "  {} ({}, {} {}-of-{}) {} UTXOs, {} proven",
                r.address,
                r.status.as_str(),
                r.kind.unwrap_or("unparsed"),
                r.threshold,
                r.keys.len(),
                r.utxos,
                fmt_sats(r.proven_sats)
            )?;
            writeln!(f, "    descriptor: {}", r.descriptor)?;
        }
        let proven = self
            .utxos
            .iter()
            .filter(|u| u.verdict == UtxoState::Proven)
            .count();
        writeln!(
            f,
            "utxos: {} listed, {} proven, {} not proven",
            self.utxos.len(),
            proven,
            self.utxos.len() - proven
        )?;
        for u in &self.utxos {
            if self.utxos.len() <= REPORT_MAX_UTXO_LINES || u.verdict != UtxoState::Proven {
                write!(
                    f,
                    "  {}:{} {} sats {}",
                    u.txid,
                    u.vout,
                    u.amount_sats,
                    match u.verdict {
                        UtxoState::Proven => "proven",
                        UtxoState::NotProven => "NOT PROVEN",
                    }
                )?;
                match &u.reason {
                    Some(r) => writeln!(f, ": {r}")?,
                    None => writeln!(f)?,
                }
            }
        }
        writeln!(
            f,
            "supply (claimed and signed; not checked against the chains offline):"
        )?;
        if self.supply.is_empty() {
            writeln!(f, "  none")?;
        }
        for s in &self.supply {
            writeln!(
                f,
                "  {} {} at block {} {}: {} base units, {} decimals = {} sats",
                s.chain, s.token, s.block_number, s.block_hash, s.base_units, s.decimals, s.sats
            )?;
        }
        let t = &self.totals;
        writeln!(
            f,
            "totals: reserve {} proven ({} stated), supply {} sats ({} stated)",
            fmt_sats(t.proven_reserve_sats),
            fmt_sats(t.stated_reserve_sats),
            t.computed_supply_sats,
            t.stated_supply_sats
        )?;
        writeln!(
            f,
            "ratio: {} computed ({} ppm), {} ppm stated",
            t.computed_ratio_ppm.map_or_else(
                || "none (no supply)".to_string(),
                |p| format!("{}.{:06}", p / 1_000_000, p % 1_000_000)
            ),
            fmt_ppm(t.computed_ratio_ppm),
            fmt_ppm(t.stated_ratio_ppm)
        )?;
        writeln!(
            f,
            "approvals: {} valid of {} needed",
            self.approvals_valid, self.approvals_needed
        )?;
        if self.guardians_from == "challenge_reserve" {
            writeln!(
                f,
                "  guardian keys: the challenge reserve's own (NOT PINNED: the document names its own reserves and guardians; pin a registry to check them)"
            )?;
        }
        for a in &self.approvals {
            let v = match a.verdict {
                ApprovalState::Valid => "valid",
                ApprovalState::BadSignature => "BAD SIGNATURE",
                ApprovalState::NotAGuardian => "not a guardian (not counted)",
            };
            writeln!(f, "  {} {v}", a.guardian_key)?;
        }
        writeln!(f, "not checked offline:")?;
        for u in &self.unchecked {
            writeln!(f, "  - {u}")?;
        }
        for e in &self.errors {
            writeln!(f, "ERROR [{}]: {}", e.code, e.message)?;
        }
        Ok(())
    }
}
