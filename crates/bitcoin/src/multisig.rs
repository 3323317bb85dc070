//! M-of-N reserve addresses and split BIP-322 signing.
//!
//! No function here needs more than one private key: the coordinator builds a
//! [`SigningRequest`] from public data, each guardian runs [`sign_partial`] with its own
//! key (in its own process), and the coordinator checks every answer with
//! [`verify_partial`] before it counts and assembles the witness with [`combine`].
//!
//! Who verifies what:
//! - the **signer** trusts nothing in the request but its own key: it rebuilds
//!   `to_spend` / `to_sign` from the message, the descriptor and the UTXO list, and
//!   refuses a PSBT that differs in any way (so a request cannot show one message and
//!   make it sign another);
//! - the **coordinator** checks each partial signature against the key it names, that
//!   key must be in the policy, and the sighash of the rebuilt transaction.

use std::collections::BTreeMap;

use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::base64::Engine as _;
use bitcoin::hashes::Hash;
use bitcoin::opcodes::all::OP_CHECKMULTISIG;
use bitcoin::psbt::{raw, Psbt};
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{ecdsa, Message, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{Address, CompressedPublicKey, Network, ScriptBuf, Transaction, TxOut, Witness};
use serde::{Deserialize, Serialize};
use ubtc_core::bundle::Utxo;

use crate::bip322::{self, ToSignParams, PSBT_GLOBAL_GENERIC_SIGNED_MESSAGE};
use crate::descriptor::{self, Descriptor, DescriptorError};
use crate::pof::{self, SpendableUtxo};
use crate::script::is_strict_der;
use crate::SECP;

/// Most keys in a CHECKMULTISIG policy we create (the P2SH standardness limit for
/// `sh(wsh(...))` does not apply to witness scripts, but 15 is what wallets support).
pub const MAX_KEYS: usize = 15;
/// Largest message a signing request may carry.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Largest PSBT (base64 characters) in a signing request.
pub const MAX_REQUEST_PSBT_CHARS: usize = bip322::MAX_POF_SIGNATURE_CHARS;

/// How the witness script is wrapped into an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wrapping {
    /// Native P2WSH (`wsh(...)`, `bc1q…`).
    Wsh,
    /// P2SH-wrapped P2WSH (`sh(wsh(...))`, `3…`).
    ShWsh,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultisigError {
    #[error(
        "threshold {threshold} of {keys} keys is not allowed (need 1 <= M <= N <= {MAX_KEYS})"
    )]
    Threshold { threshold: usize, keys: usize },
    #[error("duplicate key {0}")]
    DuplicateKey(String),
    #[error("descriptor: {0}")]
    Descriptor(#[from] DescriptorError),
    #[error("descriptor is not a wsh/sh(wsh) sortedmulti policy")]
    NotSortedMulti,
    #[error("the simple form needs a native segwit (wsh) address")]
    SimpleNeedsWsh,
    #[error("message is {0} bytes; at most {MAX_MESSAGE_BYTES}")]
    MessageTooLong(usize),
    #[error("signing request refused: {0}")]
    RequestMismatch(String),
    #[error("key {0} is not part of this policy")]
    KeyNotInPolicy(String),
    #[error("partial signature from {key} rejected: {reason}")]
    BadPartial { key: String, reason: String },
    #[error("{valid} valid partial signatures from distinct keys; {needed} needed")]
    NotEnoughSignatures { valid: usize, needed: usize },
    #[error("UTXOs: {0}")]
    Utxo(String),
    #[error("could not build the proof: {0}")]
    Build(String),
}

/// The keys and threshold of a CHECKMULTISIG witness script, in script order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultiPolicy {
    threshold: usize,
    keys: Vec<CompressedPublicKey>,
    sorted: bool,
}

impl MultiPolicy {
    /// `sorted` = `sortedmulti` (keys sorted by their serialization, BIP-67 order).
    pub fn new(
        threshold: usize,
        mut keys: Vec<CompressedPublicKey>,
        sorted: bool,
    ) -> Result<Self, MultisigError> {
        if threshold == 0 || threshold > keys.len() || keys.len() > MAX_KEYS {
            return Err(MultisigError::Threshold {
                threshold,
                keys: keys.len(),
            });
        }
        let mut seen = keys.clone();
        seen.sort();
        if let Some(w) = seen.windows(2).find(|w| w[0] == w[1]) {
            return Err(MultisigError::DuplicateKey(w[0].to_string()));
        }
        if sorted {
            keys.sort_by_key(|k| k.to_bytes());
        }
        Ok(Self {
            threshold,
            keys,
            sorted,
        })
    }

    pub fn threshold(&self) -> usize {
        self.threshold
    }

    /// The keys in the order they appear in the script.
    pub fn keys(&self) -> &[CompressedPublicKey] {
        &self.keys
    }

    pub fn is_sorted(&self) -> bool {
        self.sorted
    }

    /// `OP_M <key>… OP_N OP_CHECKMULTISIG`.
    pub fn witness_script(&self) -> ScriptBuf {
        let mut b = Builder::new().push_int(self.threshold as i64);
        for k in &self.keys {
            b = b.push_slice(k.to_bytes());
        }
        b.push_int(self.keys.len() as i64)
            .push_opcode(OP_CHECKMULTISIG)
            .into_script()
    }

    pub fn script_pubkey(&self, wrapping: Wrapping) -> ScriptBuf {
        let wsh = ScriptBuf::new_p2wsh(&self.witness_script().wscript_hash());
        match wrapping {
            Wrapping::Wsh => wsh,
            Wrapping::ShWsh => ScriptBuf::new_p2sh(&wsh.script_hash()),
        }
    }

    fn inner_descriptor(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(ToString::to_string).collect();
        let name = if self.sorted { "sortedmulti" } else { "multi" };
        format!("{name}({},{})", self.threshold, keys.join(","))
    }
}

/// A `sortedmulti` M-of-N policy: the shape of the guardians' reserve addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SortedMulti {
    policy: MultiPolicy,
}

impl SortedMulti {
    /// Checks 1 <= M <= N <= 15 and that the keys are distinct; sorts them.
    pub fn new(threshold: usize, keys: Vec<CompressedPublicKey>) -> Result<Self, MultisigError> {
        Ok(Self {
            policy: MultiPolicy::new(threshold, keys, true)?,
        })
    }

    pub fn threshold(&self) -> usize {
        self.policy.threshold
    }

    /// The keys in sorted (script) order.
    pub fn keys(&self) -> &[CompressedPublicKey] {
        &self.policy.keys
    }

    pub fn policy(&self) -> &MultiPolicy {
        &self.policy
    }

    pub fn witness_script(&self) -> ScriptBuf {
        self.policy.witness_script()
    }

    pub fn script_pubkey(&self, wrapping: Wrapping) -> ScriptBuf {
        self.policy.script_pubkey(wrapping)
    }

    pub fn address(&self, network: Network, wrapping: Wrapping) -> Address {
        let ws = self.witness_script();
        match wrapping {
            Wrapping::Wsh => Address::p2wsh(&ws, network),
            Wrapping::ShWsh => Address::p2shwsh(&ws, network),
        }
    }

    /// `wsh(sortedmulti(M,k1,…))#checksum`.
    pub fn descriptor_wsh(&self) -> String {
        self.descriptor(Wrapping::Wsh)
    }

    /// `sh(wsh(sortedmulti(M,k1,…)))#checksum`.
    pub fn descriptor_sh_wsh(&self) -> String {
        self.descriptor(Wrapping::ShWsh)
    }

    pub fn descriptor(&self, wrapping: Wrapping) -> String {
        let inner = self.policy.inner_descriptor();
        let desc = match wrapping {
            Wrapping::Wsh => format!("wsh({inner})"),
            Wrapping::ShWsh => format!("sh(wsh({inner}))"),
        };
        // Hex keys, digits and parentheses are all in the descriptor alphabet.
        descriptor::with_checksum(&desc).unwrap_or(desc)
    }

    /// Parses `wsh(sortedmulti(...))#cs` or `sh(wsh(sortedmulti(...)))#cs`.
    pub fn parse_descriptor(s: &str) -> Result<(Self, Wrapping), MultisigError> {
        match Descriptor::parse(s)? {
            Descriptor::Multi(policy, wrapping) if policy.sorted => Ok((Self { policy }, wrapping)),
            _ => Err(MultisigError::NotSortedMulti),
        }
    }
}

/// What the signature will look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    /// `smp…` (native P2WSH only).
    Simple,
    /// `ful…`.
    Full,
    /// `pof…` over the request's UTXOs.
    ProofOfFunds,
}

/// What the coordinator sends each guardian. Serializable; everything in it is public.
///
/// `psbt` is the BIP-322 `to_sign` PSBT (base64) with the
/// `PSBT_GLOBAL_GENERIC_SIGNED_MESSAGE` global, a witness UTXO and the witness script
/// on every input. Signers do not trust it: see [`sign_partial`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SigningRequest {
    /// The multisig descriptor, with checksum.
    pub descriptor: String,
    pub network: Network,
    /// The message bytes, hex.
    #[serde(with = "hex_bytes")]
    pub message: Vec<u8>,
    pub form: Form,
    #[serde(default)]
    pub params: ToSignParams,
    /// Proof of funds only: the UTXOs spent by the additional inputs, in input order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub utxos: Vec<Utxo>,
    pub psbt: String,
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        hex::decode(s).map_err(serde::de::Error::custom)
    }
}

/// One guardian's answer: its key and one DER signature (+ SIGHASH_ALL byte) per
/// input of `to_sign`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialSignature {
    pub pubkey: CompressedPublicKey,
    #[serde(with = "hex_list")]
    pub signatures: Vec<Vec<u8>>,
}

impl PartialSignature {
    /// `pubkey`'s signature over each sighash, SIGHASH_ALL: low-S DER (libsecp256k1
    /// always signs low-S) followed by the sighash byte. `pubkey` must be `secret`'s.
    pub(crate) fn sign(pubkey: CompressedPublicKey, msgs: &[Message], secret: &SecretKey) -> Self {
        let signatures = msgs
            .iter()
            .map(|msg| {
                let mut der = SECP.sign_ecdsa(msg, secret).serialize_der().to_vec();
                der.push(EcdsaSighashType::All as u8);
                der
            })
            .collect();
        Self { pubkey, signatures }
    }

    /// Checks one signature per sighash, in order: strict DER, SIGHASH_ALL, low S, and
    /// valid for `pubkey`. Whether `pubkey` belongs to the policy is the caller's check.
    /// The error says why, for the caller's own error type.
    pub(crate) fn check(&self, msgs: &[Message]) -> Result<(), &'static str> {
        if self.signatures.len() != msgs.len() {
            return Err("wrong number of signatures");
        }
        for (sig, msg) in self.signatures.iter().zip(msgs) {
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
            SECP.verify_ecdsa(msg, &parsed, &self.pubkey.0)
                .map_err(|_| "does not verify")?;
        }
        Ok(())
    }
}

mod hex_list {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(hex::encode))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.into_iter()
            .map(|s| hex::decode(s).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// Everything rebuilt from the request's public data.
struct Plan {
    policy: SortedMulti,
    wrapping: Wrapping,
    witness_script: ScriptBuf,
    unsigned: Transaction,
    prevouts: Vec<TxOut>,
}

impl SigningRequest {
    /// A simple or full request (no additional inputs) with default `to_sign` fields.
    pub fn new(
        policy: &SortedMulti,
        wrapping: Wrapping,
        network: Network,
        message: &[u8],
        form: Form,
    ) -> Result<Self, MultisigError> {
        Self::with_params(
            policy,
            wrapping,
            network,
            message,
            form,
            ToSignParams::default(),
            &[],
        )
    }

    /// A proof-of-funds request over `utxos`, which must all pay to the policy's address.
    pub fn proof_of_funds(
        policy: &SortedMulti,
        wrapping: Wrapping,
        network: Network,
        message: &[u8],
        utxos: &[Utxo],
    ) -> Result<Self, MultisigError> {
        Self::with_params(
            policy,
            wrapping,
            network,
            message,
            Form::ProofOfFunds,
            ToSignParams::default(),
            utxos,
        )
    }

    /// Any form; `params` sets nVersion / nLockTime / nSequence (full and pof only).
    pub fn with_params(
        policy: &SortedMulti,
        wrapping: Wrapping,
        network: Network,
        message: &[u8],
        form: Form,
        params: ToSignParams,
        utxos: &[Utxo],
    ) -> Result<Self, MultisigError> {
        Ok(Self::build(policy, wrapping, network, message, form, params, utxos)?.0)
    }

    /// The request and the plan it was built from (the builder trusts its own PSBT, so
    /// it need not parse it back).
    fn build(
        policy: &SortedMulti,
        wrapping: Wrapping,
        network: Network,
        message: &[u8],
        form: Form,
        params: ToSignParams,
        utxos: &[Utxo],
    ) -> Result<(Self, Plan), MultisigError> {
        let mut req = Self {
            descriptor: policy.descriptor(wrapping),
            network,
            message: message.to_vec(),
            form,
            params,
            utxos: utxos.to_vec(),
            psbt: String::new(),
        };
        let (unsigned, prevouts) = req.rebuild_tx(policy, wrapping)?;
        let mut psbt = Psbt::from_unsigned_tx(unsigned.clone())
            .map_err(|e| MultisigError::Build(e.to_string()))?;
        psbt.unknown.insert(message_key(), message.to_vec());
        let ws = policy.witness_script();
        for (pin, prevout) in psbt.inputs.iter_mut().zip(&prevouts) {
            pin.witness_utxo = Some(prevout.clone());
            pin.witness_script = Some(ws.clone());
            if wrapping == Wrapping::ShWsh {
                pin.redeem_script = Some(ScriptBuf::new_p2wsh(&ws.wscript_hash()));
            }
        }
        req.psbt = BASE64.encode(psbt.serialize());
        let plan = Plan {
            policy: policy.clone(),
            wrapping,
            witness_script: ws,
            unsigned,
            prevouts,
        };
        Ok((req, plan))
    }

    /// Checks the request once (see [`sign_partial`]: the PSBT must be exactly the
    /// BIP-322 `to_sign` rebuilt from the public data) and computes its sighashes, so
    /// signing, verifying partials and combining reuse them instead of rebuilding.
    pub fn prepare(self) -> Result<PreparedRequest, MultisigError> {
        let plan = self.plan()?;
        let sighashes = sighashes(&plan)?;
        Ok(PreparedRequest {
            request: self,
            plan,
            sighashes,
        })
    }

    /// [`SigningRequest::prepare`], taking the parsed descriptor from `cache` (a signer
    /// sees the same reserve descriptor in every request; parsing it decompresses
    /// every key). The PSBT is checked exactly as by `prepare`.
    pub fn prepare_cached(self, cache: &DescriptorCache) -> Result<PreparedRequest, MultisigError> {
        let plan = self.plan_with(cache.parse(&self.descriptor)?)?;
        let sighashes = sighashes(&plan)?;
        Ok(PreparedRequest {
            request: self,
            plan,
            sighashes,
        })
    }

    /// The reserve address this request signs for.
    pub fn address(&self) -> Result<Address, MultisigError> {
        let (policy, wrapping) = SortedMulti::parse_descriptor(&self.descriptor)?;
        Ok(policy.address(self.network, wrapping))
    }

    fn rebuild_tx(
        &self,
        policy: &SortedMulti,
        wrapping: Wrapping,
    ) -> Result<(Transaction, Vec<TxOut>), MultisigError> {
        if self.message.len() > MAX_MESSAGE_BYTES {
            return Err(MultisigError::MessageTooLong(self.message.len()));
        }
        let spk = policy.script_pubkey(wrapping);
        let params = match self.form {
            Form::Simple => {
                if wrapping != Wrapping::Wsh {
                    return Err(MultisigError::SimpleNeedsWsh);
                }
                if self.params != ToSignParams::default() {
                    return Err(MultisigError::RequestMismatch(
                        "the simple form has nVersion, nLockTime and nSequence 0".into(),
                    ));
                }
                self.params
            }
            Form::Full | Form::ProofOfFunds => {
                self.params
                    .check()
                    .map_err(|e| MultisigError::RequestMismatch(e.to_string()))?;
                self.params
            }
        };
        if self.form != Form::ProofOfFunds && !self.utxos.is_empty() {
            return Err(MultisigError::RequestMismatch(
                "UTXOs given for a form without additional inputs".into(),
            ));
        }
        if self.utxos.len() > pof::MAX_POF_INPUTS - 1 {
            return Err(MultisigError::Utxo(format!(
                "{} UTXOs; at most {}",
                self.utxos.len(),
                pof::MAX_POF_INPUTS - 1
            )));
        }
        let utxos = SpendableUtxo::parse_all(&self.utxos)
            .map_err(|e| MultisigError::Utxo(e.to_string()))?;
        if let Some(u) = utxos.iter().find(|u| u.txout.script_pubkey != spk) {
            return Err(MultisigError::Utxo(format!(
                "UTXO {} does not pay to the policy's address",
                u.outpoint
            )));
        }
        Ok(pof::pof_to_sign(&spk, &self.message, params, &utxos))
    }

    /// Rebuilds everything from the public data and checks the PSBT against it.
    fn plan(&self) -> Result<Plan, MultisigError> {
        if self.psbt.len() > MAX_REQUEST_PSBT_CHARS {
            return Err(MultisigError::RequestMismatch("PSBT too large".into()));
        }
        self.plan_with(SortedMulti::parse_descriptor(&self.descriptor)?)
    }

    /// [`SigningRequest::plan`] with the descriptor already parsed (from
    /// `self.descriptor`, by the caller).
    fn plan_with(&self, parsed: (SortedMulti, Wrapping)) -> Result<Plan, MultisigError> {
        if self.psbt.len() > MAX_REQUEST_PSBT_CHARS {
            return Err(MultisigError::RequestMismatch("PSBT too large".into()));
        }
        let (policy, wrapping) = parsed;
        let (unsigned, prevouts) = self.rebuild_tx(&policy, wrapping)?;
        let witness_script = policy.witness_script();
        let mismatch = |why: &str| MultisigError::RequestMismatch(why.to_string());
        let bytes = BASE64
            .decode(&self.psbt)
            .map_err(|_| mismatch("PSBT is not base64"))?;
        let psbt = Psbt::deserialize(&bytes).map_err(|_| mismatch("PSBT does not parse"))?;
        match psbt.unknown.get(&message_key()) {
            Some(m) if *m == self.message => {}
            Some(_) => {
                return Err(mismatch(
                    "the PSBT's signed-message field is not the message shown",
                ))
            }
            None => return Err(mismatch("the PSBT has no BIP-322 signed-message field")),
        }
        if psbt.unsigned_tx != unsigned {
            return Err(mismatch(
                "the PSBT's transaction is not the BIP-322 to_sign for this message, script and UTXOs",
            ));
        }
        for (i, (pin, prevout)) in psbt.inputs.iter().zip(&prevouts).enumerate() {
            if pin.witness_utxo.as_ref() != Some(prevout) {
                return Err(MultisigError::RequestMismatch(format!(
                    "input {i}: witness UTXO differs"
                )));
            }
            if pin.witness_script.as_ref() != Some(&witness_script) {
                return Err(MultisigError::RequestMismatch(format!(
                    "input {i}: witness script is not the policy's"
                )));
            }
        }
        Ok(Plan {
            policy,
            wrapping,
            witness_script,
            unsigned,
            prevouts,
        })
    }
}

fn message_key() -> raw::Key {
    raw::Key {
        type_value: PSBT_GLOBAL_GENERIC_SIGNED_MESSAGE,
        key: Vec::new(),
    }
}

fn sighashes(plan: &Plan) -> Result<Vec<Message>, MultisigError> {
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
                .map_err(|e| MultisigError::Build(e.to_string()))
        })
        .collect()
}

/// Descriptors parsed once, by their exact text (checksum included), for
/// [`SigningRequest::prepare_cached`]. Holds at most [`DescriptorCache::MAX`] entries;
/// others are parsed every time.
#[derive(Debug, Default)]
pub struct DescriptorCache {
    parsed: std::sync::Mutex<std::collections::HashMap<String, (SortedMulti, Wrapping)>>,
}

impl DescriptorCache {
    /// Reserve addresses a signer is expected to serve at once, with room to spare.
    pub const MAX: usize = 64;

    pub fn new() -> Self {
        Self::default()
    }

    fn parse(&self, descriptor: &str) -> Result<(SortedMulti, Wrapping), MultisigError> {
        // A poisoned lock only means a panic elsewhere; the map holds plain data.
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = parsed.get(descriptor) {
            return Ok(p.clone());
        }
        let p = SortedMulti::parse_descriptor(descriptor)?;
        if parsed.len() < Self::MAX {
            parsed.insert(descriptor.to_owned(), p.clone());
        }
        Ok(p)
    }
}

/// A [`SigningRequest`] checked once, with its BIP-322 plan and sighashes: what a
/// guardian signs with and what the coordinator verifies answers and combines with.
/// Built by [`SigningRequest::prepare`] (untrusted request: the PSBT is checked) or
/// [`PreparedRequest::new`] (the coordinator's own request).
pub struct PreparedRequest {
    request: SigningRequest,
    plan: Plan,
    sighashes: Vec<Message>,
}

impl std::fmt::Debug for PreparedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedRequest")
            .field("request", &self.request)
            .finish()
    }
}

/// A partial signature that [`PreparedRequest::verify_partial`] accepted, bound to
/// the sighashes it was checked against (so `combine` need not check it again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPartial {
    partial: PartialSignature,
    sighashes: Vec<Message>,
}

impl VerifiedPartial {
    pub fn partial(&self) -> &PartialSignature {
        &self.partial
    }

    pub fn into_partial(self) -> PartialSignature {
        self.partial
    }
}

impl PreparedRequest {
    /// A simple or full request with default `to_sign` fields, prepared (see
    /// [`SigningRequest::new`]).
    pub fn new(
        policy: &SortedMulti,
        wrapping: Wrapping,
        network: Network,
        message: &[u8],
        form: Form,
    ) -> Result<Self, MultisigError> {
        let (request, plan) = SigningRequest::build(
            policy,
            wrapping,
            network,
            message,
            form,
            ToSignParams::default(),
            &[],
        )?;
        let sighashes = sighashes(&plan)?;
        Ok(Self {
            request,
            plan,
            sighashes,
        })
    }

    pub fn request(&self) -> &SigningRequest {
        &self.request
    }

    /// The policy the request signs for.
    pub fn policy(&self) -> &SortedMulti {
        &self.plan.policy
    }

    /// [`sign_partial`] without rebuilding the plan.
    pub fn sign_partial(&self, secret: &SecretKey) -> Result<PartialSignature, MultisigError> {
        self.sign_partial_as(secret, CompressedPublicKey(secret.public_key(&SECP)))
    }

    /// [`PreparedRequest::sign_partial`] for a signer that keeps its public key beside
    /// its secret (deriving it costs as much as a signature). `pubkey` must be
    /// `secret`'s: a wrong one only yields a partial that every verifier rejects.
    pub fn sign_partial_as(
        &self,
        secret: &SecretKey,
        pubkey: CompressedPublicKey,
    ) -> Result<PartialSignature, MultisigError> {
        if !self.plan.policy.keys().contains(&pubkey) {
            return Err(MultisigError::KeyNotInPolicy(pubkey.to_string()));
        }
        Ok(PartialSignature::sign(pubkey, &self.sighashes, secret))
    }

    /// [`verify_partial`] without rebuilding the plan.
    pub fn verify_partial(
        &self,
        partial: PartialSignature,
    ) -> Result<VerifiedPartial, MultisigError> {
        check_partial(&self.plan, &self.sighashes, &partial)?;
        Ok(VerifiedPartial {
            partial,
            sighashes: self.sighashes.clone(),
        })
    }

    /// [`combine`] over partials already verified for this request. A partial verified
    /// against other sighashes (another request) is checked again, and fails.
    pub fn combine(&self, partials: &[VerifiedPartial]) -> Result<String, MultisigError> {
        let mut by_key: BTreeMap<usize, &PartialSignature> = BTreeMap::new();
        for verified in partials {
            let partial = &verified.partial;
            let position = self
                .plan
                .policy
                .keys()
                .iter()
                .position(|k| *k == partial.pubkey)
                .ok_or_else(|| MultisigError::KeyNotInPolicy(partial.pubkey.to_string()))?;
            if by_key.contains_key(&position) {
                continue;
            }
            if verified.sighashes != self.sighashes {
                check_partial(&self.plan, &self.sighashes, partial)?;
            }
            by_key.insert(position, partial);
        }
        assemble(&self.request, &self.plan, by_key)
    }
}

/// A guardian's step: checks the request (see the module docs) and signs every input
/// with `secret`. Refuses when the key is not in the policy.
pub fn sign_partial(
    request: &SigningRequest,
    secret: &SecretKey,
) -> Result<PartialSignature, MultisigError> {
    let plan = request.plan()?;
    let pubkey = CompressedPublicKey(secret.public_key(&SECP));
    if !plan.policy.keys().contains(&pubkey) {
        return Err(MultisigError::KeyNotInPolicy(pubkey.to_string()));
    }
    Ok(PartialSignature::sign(pubkey, &sighashes(&plan)?, secret))
}

fn check_partial(
    plan: &Plan,
    msgs: &[Message],
    partial: &PartialSignature,
) -> Result<(), MultisigError> {
    if !plan.policy.keys().contains(&partial.pubkey) {
        return Err(MultisigError::KeyNotInPolicy(partial.pubkey.to_string()));
    }
    partial
        .check(msgs)
        .map_err(|reason| MultisigError::BadPartial {
            key: partial.pubkey.to_string(),
            reason: reason.to_owned(),
        })
}

/// The coordinator's check of one answer, before it counts.
pub fn verify_partial(
    request: &SigningRequest,
    partial: &PartialSignature,
) -> Result<(), MultisigError> {
    let plan = request.plan()?;
    check_partial(&plan, &sighashes(&plan)?, partial)
}

/// Assembles the final signature from at least M partial signatures of distinct keys.
///
/// Every partial is verified; an invalid one is an error (a guardian that answers with
/// a bad signature should be noticed, not silently skipped). Exact duplicates of a key
/// are ignored. The witness is `[<empty> (NULLDUMMY), sig…in sorted key order,
/// witness script]`; extra signatures beyond M are left out.
pub fn combine(
    request: &SigningRequest,
    partials: &[PartialSignature],
) -> Result<String, MultisigError> {
    let plan = request.plan()?;
    let msgs = sighashes(&plan)?;
    let mut by_key: BTreeMap<usize, &PartialSignature> = BTreeMap::new();
    for partial in partials {
        let position = plan
            .policy
            .keys()
            .iter()
            .position(|k| *k == partial.pubkey)
            .ok_or_else(|| MultisigError::KeyNotInPolicy(partial.pubkey.to_string()))?;
        if by_key.contains_key(&position) {
            continue;
        }
        check_partial(&plan, &msgs, partial)?;
        by_key.insert(position, partial);
    }
    assemble(request, &plan, by_key)
}

/// The witness from checked partials, one per key position (sorted key order).
fn assemble(
    request: &SigningRequest,
    plan: &Plan,
    by_key: BTreeMap<usize, &PartialSignature>,
) -> Result<String, MultisigError> {
    let m = plan.policy.threshold();
    if by_key.len() < m {
        return Err(MultisigError::NotEnoughSignatures {
            valid: by_key.len(),
            needed: m,
        });
    }
    let chosen: Vec<&PartialSignature> = by_key.values().take(m).copied().collect();
    let mut signed = plan.unsigned.clone();
    let redeem_push = if plan.wrapping == Wrapping::ShWsh {
        let p2wsh = ScriptBuf::new_p2wsh(&plan.witness_script.wscript_hash());
        let push = PushBytesBuf::try_from(p2wsh.into_bytes())
            .map_err(|e| MultisigError::Build(e.to_string()))?;
        Some(Builder::new().push_slice(push).into_script())
    } else {
        None
    };
    for (i, input) in signed.input.iter_mut().enumerate() {
        let mut items: Vec<&[u8]> = Vec::with_capacity(m + 2);
        items.push(&[]);
        for p in &chosen {
            items.push(&p.signatures[i]);
        }
        items.push(plan.witness_script.as_bytes());
        input.witness = Witness::from_slice(&items);
        if let Some(push) = &redeem_push {
            input.script_sig = push.clone();
        }
    }
    Ok(match request.form {
        Form::Simple => bip322::encode_simple(&signed.input[0].witness),
        Form::Full => bip322::encode_full(&signed),
        Form::ProofOfFunds => pof::encode_pof(
            plan.unsigned.clone(),
            &signed,
            &plan.prevouts,
            &request.message,
        )
        .map_err(|e| MultisigError::Build(e.to_string()))?,
    })
}
