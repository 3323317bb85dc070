//! BIP-322 generic signed messages, version 2.0.0 (2026): `smp` (simple: the witness
//! stack), `ful` (the whole `to_sign` transaction) and `pof` (a finalized PSBT of
//! `to_sign` with additional inputs, see [`crate::pof`]). Unprefixed signatures are read
//! as simple (the encoding before the prefixes existed); for P2PKH addresses an
//! unprefixed 65-byte signature is read as BIP-137.
//!
//! Verification runs the small interpreter in [`crate::script`], which enforces the
//! BIP-322 required rules. Size limits are checked before decoding and before any
//! elliptic-curve work.

use bitcoin::absolute::LockTime;
use bitcoin::base64::engine::general_purpose::STANDARD as BASE64;
use bitcoin::base64::Engine as _;
use bitcoin::consensus::encode;
use bitcoin::hashes::{sha256, Hash, HashEngine};
use bitcoin::key::{Keypair, TapTweak};
use bitcoin::secp256k1::{Message, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, Prevouts, SighashCache, TapSighashType};
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, CompressedPublicKey, OutPoint, Script, ScriptBuf, Sequence, Transaction, TxIn,
    TxOut, Txid, Witness,
};
use serde::Serialize;

use crate::script::{self, ScriptError};
use crate::SECP;

/// Longest `smp` / `ful` / unprefixed signature string accepted, in characters.
/// Checked before base64 decoding. A 15-of-15 P2SH-P2WSH full signature is under 3 KB.
pub const MAX_SIGNATURE_CHARS: usize = 64 * 1024;
/// Longest `pof` signature string accepted (a PSBT over many UTXOs), in characters.
pub const MAX_POF_SIGNATURE_CHARS: usize = 6 * 1024 * 1024;
/// BIP-340 tag of the message hash.
pub const MESSAGE_TAG: &[u8] = b"BIP0322-signed-message";
/// The BIP-322 PSBT global field carrying the message (`PSBT_GLOBAL_GENERIC_SIGNED_MESSAGE`).
pub const PSBT_GLOBAL_GENERIC_SIGNED_MESSAGE: u8 = 0x09;

/// Which encoding a verified signature used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// `smp`, or an unprefixed witness stack.
    Simple,
    /// `ful`: the whole `to_sign` transaction.
    Full,
    /// `pof`: a finalized PSBT with additional inputs.
    ProofOfFunds,
    /// BIP-137 compact signature (P2PKH only through [`verify`]).
    Legacy,
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Format::Simple => "BIP-322 simple",
            Format::Full => "BIP-322 full",
            Format::ProofOfFunds => "BIP-322 proof of funds",
            Format::Legacy => "BIP-137 legacy",
        })
    }
}

/// A signature that verified. BIP-322 calls this "valid at time T and age S": the
/// `lock_time` and `sequence` of `to_sign` (both 0 for simple and legacy signatures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub format: Format,
    /// nLockTime of `to_sign` (T).
    pub lock_time: u32,
    /// nSequence of `to_sign`'s first input (S).
    pub sequence: u32,
    /// For `pof`: the additional inputs, as the PSBT claims them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub funds: Option<crate::pof::ProvenFunds>,
}

impl Verified {
    /// True when the signature is only valid from some time or age on.
    pub fn is_time_locked(&self) -> bool {
        self.lock_time != 0 || self.sequence != 0
    }
}

/// Why a signature did not verify. The Display strings are stable prefixes that the
/// BIP-322 test vectors' `error_substr` match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("signature too short: empty")]
    TooShort,
    #[error("signature too long: {len} characters, at most {max}")]
    TooLong { len: usize, max: usize },
    #[error("error decoding signature as base64: {0}")]
    Base64(String),
    #[error("error parsing signature as simple variant: {0}")]
    ParseSimple(String),
    #[error("error parsing signature as full variant: {0}")]
    ParseFull(String),
    #[error("error parsing signature as proof of funds PSBT: {0}")]
    ParsePof(String),
    #[error("invalid signature: {0}")]
    Invalid(String),
    #[error("invalid signature: {0}")]
    Script(ScriptError),
    #[error("inconclusive: {0}")]
    Inconclusive(String),
    #[error("proof of funds does not match the given UTXOs: {0}")]
    UtxoMismatch(String),
    #[error("legacy (BIP-137) signature: {0}")]
    Legacy(#[from] crate::bip137::Bip137Error),
}

impl VerifyError {
    /// BIP-322's three-way outcome: true for "inconclusive" (could not check), false
    /// for "invalid".
    pub fn is_inconclusive(&self) -> bool {
        matches!(self, VerifyError::Inconclusive(_))
    }
}

impl From<ScriptError> for VerifyError {
    fn from(e: ScriptError) -> Self {
        if e.is_inconclusive() {
            VerifyError::Inconclusive(e.to_string())
        } else {
            VerifyError::Script(e)
        }
    }
}

/// Why signing failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("the key does not control address {0}")]
    KeyMismatch(String),
    #[error("{form} signatures are not supported for address {address}")]
    UnsupportedAddress { form: &'static str, address: String },
    #[error("could not compute sighash: {0}")]
    Sighash(String),
    #[error("invalid to_sign parameters: {0}")]
    Params(String),
}

/// BIP-340 tagged hash of the message: `sha256(sha256(tag) || sha256(tag) || message)`.
pub fn message_hash(message: &[u8]) -> [u8; 32] {
    // The two tag hashes fill exactly one SHA-256 block: absorb them once.
    static TAGGED: std::sync::LazyLock<sha256::HashEngine> = std::sync::LazyLock::new(|| {
        let tag = sha256::Hash::hash(MESSAGE_TAG);
        let mut engine = sha256::Hash::engine();
        engine.input(tag.as_byte_array());
        engine.input(tag.as_byte_array());
        engine
    });
    let mut engine = TAGGED.clone();
    engine.input(message);
    sha256::Hash::from_engine(engine).to_byte_array()
}

/// The virtual `to_spend` transaction whose only output carries `challenge`.
pub fn to_spend(challenge: &Script, message: &[u8]) -> Transaction {
    let mut script_sig = Vec::with_capacity(34);
    script_sig.push(0x00);
    script_sig.push(0x20);
    script_sig.extend_from_slice(&message_hash(message));
    Transaction {
        version: Version(0),
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: Txid::all_zeros(),
                vout: u32::MAX,
            },
            script_sig: ScriptBuf::from_bytes(script_sig),
            sequence: Sequence(0),
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: challenge.to_owned(),
        }],
    }
}

/// nVersion, nLockTime and first-input nSequence of `to_sign`. All zero for simple
/// signatures; a full signature may set them (time locks need version 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct ToSignParams {
    pub version: i32,
    pub lock_time: u32,
    pub sequence: u32,
}

impl ToSignParams {
    pub(crate) fn check(&self) -> Result<(), SignError> {
        if self.version != 0 && self.version != 2 {
            return Err(SignError::Params(format!(
                "version must be 0 or 2, not {}",
                self.version
            )));
        }
        Ok(())
    }
}

/// The unsigned `to_sign` transaction spending `to_spend:0`.
pub fn to_sign(to_spend_txid: Txid, params: ToSignParams) -> Transaction {
    Transaction {
        version: Version(params.version),
        lock_time: LockTime::from_consensus(params.lock_time),
        input: vec![TxIn {
            previous_output: OutPoint {
                txid: to_spend_txid,
                vout: 0,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence(params.sequence),
            witness: Witness::new(),
        }],
        output: vec![op_return_output()],
    }
}

pub(crate) fn op_return_output() -> TxOut {
    TxOut {
        value: Amount::ZERO,
        script_pubkey: ScriptBuf::from_bytes(vec![0x6a]),
    }
}

/// The single-key script types we sign for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SingleKeyKind {
    P2pkh,
    P2wpkh,
    P2shP2wpkh,
    /// BIP-86 key path (no script tree).
    P2tr,
}

/// One private key bound to one of its addresses, with everything derived from the key
/// computed once: deriving a public key costs about as much as a signature, so a
/// long-lived signer (a guardian) keeps one of these instead of calling
/// [`sign_simple`] with a bare key. `Debug` does not show the key.
///
/// This is the single-key path; multisig signing is in [`crate::multisig`].
pub struct SingleKeySigner {
    secret: SecretKey,
    pubkey: CompressedPublicKey,
    kind: SingleKeyKind,
    /// BIP-86-tweaked key pair (P2TR only).
    tweaked: Option<Keypair>,
    script_pubkey: ScriptBuf,
    address: String,
}

impl std::fmt::Debug for SingleKeySigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SingleKeySigner")
            .field("address", &self.address)
            .field("secret", &"[redacted]")
            .finish()
    }
}

impl SingleKeySigner {
    /// Binds `secret` to `address`: P2WPKH, P2SH-P2WPKH, P2TR (BIP-86 key path) or
    /// P2PKH (compressed key). Fails when the key does not control the address.
    pub fn new(secret: SecretKey, address: &Address) -> Result<Self, SignError> {
        let spk = address.script_pubkey();
        Self::for_script(secret, spk, address.to_string())
            .ok_or_else(|| SignError::KeyMismatch(address.to_string()))
    }

    fn for_script(secret: SecretKey, spk: ScriptBuf, address: String) -> Option<Self> {
        let pubkey = CompressedPublicKey(secret.public_key(&SECP));
        let mut tweaked = None;
        let kind = if spk.is_p2wpkh() {
            (ScriptBuf::new_p2wpkh(&pubkey.wpubkey_hash()) == spk).then_some(SingleKeyKind::P2wpkh)
        } else if spk.is_p2tr() {
            let keypair = Keypair::from_secret_key(&SECP, &secret);
            let (xonly, _) = keypair.x_only_public_key();
            let program = bitcoin::WitnessProgram::p2tr(&SECP, xonly, None);
            tweaked = Some(keypair.tap_tweak(&SECP, None).to_keypair());
            (ScriptBuf::new_witness_program(&program) == spk).then_some(SingleKeyKind::P2tr)
        } else if spk.is_p2pkh() {
            (ScriptBuf::new_p2pkh(&pubkey.pubkey_hash()) == spk).then_some(SingleKeyKind::P2pkh)
        } else if spk.is_p2sh() {
            let redeem = ScriptBuf::new_p2wpkh(&pubkey.wpubkey_hash());
            (ScriptBuf::new_p2sh(&redeem.script_hash()) == spk).then_some(SingleKeyKind::P2shP2wpkh)
        } else {
            None
        }?;
        Some(Self {
            secret,
            pubkey,
            kind,
            tweaked,
            script_pubkey: spk,
            address,
        })
    }

    pub(crate) fn kind(&self) -> SingleKeyKind {
        self.kind
    }

    pub fn script_pubkey(&self) -> &Script {
        &self.script_pubkey
    }

    /// `smp…`: P2WPKH and P2TR only (the native segwit single-key types).
    pub fn sign_simple(&self, message: &[u8]) -> Result<String, SignError> {
        if !matches!(self.kind, SingleKeyKind::P2wpkh | SingleKeyKind::P2tr) {
            return Err(SignError::UnsupportedAddress {
                form: "simple",
                address: self.address.clone(),
            });
        }
        let spend = to_spend(&self.script_pubkey, message);
        let mut tx = to_sign(spend.compute_txid(), ToSignParams::default());
        self.sign_input(&mut tx, 0, &spend.output)?;
        Ok(encode_simple(&tx.input[0].witness))
    }

    /// `ful…` for any of the four types.
    pub fn sign_full(&self, message: &[u8], params: ToSignParams) -> Result<String, SignError> {
        params.check()?;
        let spend = to_spend(&self.script_pubkey, message);
        let mut tx = to_sign(spend.compute_txid(), params);
        self.sign_input(&mut tx, 0, &spend.output)?;
        Ok(encode_full(&tx))
    }

    /// Signs input `idx` of `tx` (whose spent outputs are `prevouts`, one per input),
    /// filling its scriptSig and witness.
    pub(crate) fn sign_input(
        &self,
        tx: &mut Transaction,
        idx: usize,
        prevouts: &[TxOut],
    ) -> Result<(), SignError> {
        let value = prevouts
            .get(idx)
            .ok_or_else(|| SignError::Params("input index out of range".into()))?
            .value;
        let ecdsa = |digest: [u8; 32]| -> Vec<u8> {
            let sig = SECP.sign_ecdsa(&Message::from_digest(digest), &self.secret);
            let mut out = Vec::with_capacity(73);
            out.extend_from_slice(&sig.serialize_der());
            out.push(EcdsaSighashType::All as u8);
            out
        };
        let sighash_err = |e: &dyn std::fmt::Display| SignError::Sighash(e.to_string());
        let pk = &self.pubkey;
        let (script_sig, witness) = match self.kind {
            SingleKeyKind::P2wpkh | SingleKeyKind::P2shP2wpkh => {
                let wpkh = ScriptBuf::new_p2wpkh(&pk.wpubkey_hash());
                let digest = SighashCache::new(&*tx)
                    .p2wpkh_signature_hash(idx, &wpkh, value, EcdsaSighashType::All)
                    .map_err(|e| sighash_err(&e))?
                    .to_byte_array();
                let witness = Witness::from_slice(&[ecdsa(digest), pk.to_bytes().to_vec()]);
                let script_sig = if self.kind == SingleKeyKind::P2shP2wpkh {
                    let push = bitcoin::script::PushBytesBuf::try_from(wpkh.into_bytes())
                        .map_err(|e| sighash_err(&e))?;
                    let mut s = ScriptBuf::new();
                    s.push_slice(push);
                    s
                } else {
                    ScriptBuf::new()
                };
                (script_sig, witness)
            }
            SingleKeyKind::P2pkh => {
                let spk = ScriptBuf::new_p2pkh(&pk.pubkey_hash());
                let digest = SighashCache::new(&*tx)
                    .legacy_signature_hash(idx, &spk, EcdsaSighashType::All as u32)
                    .map_err(|e| sighash_err(&e))?
                    .to_byte_array();
                let sig = bitcoin::script::PushBytesBuf::try_from(ecdsa(digest))
                    .map_err(|e| sighash_err(&e))?;
                let mut script_sig = ScriptBuf::new();
                script_sig.push_slice(sig);
                script_sig.push_slice(pk.to_bytes());
                (script_sig, Witness::new())
            }
            SingleKeyKind::P2tr => {
                let tweaked = self
                    .tweaked
                    .as_ref()
                    .ok_or_else(|| SignError::Params("missing taproot key".into()))?;
                let digest = SighashCache::new(&*tx)
                    .taproot_key_spend_signature_hash(
                        idx,
                        &Prevouts::All(prevouts),
                        TapSighashType::Default,
                    )
                    .map_err(|e| sighash_err(&e))?
                    .to_byte_array();
                let sig = SECP.sign_schnorr_no_aux_rand(&Message::from_digest(digest), tweaked);
                (
                    ScriptBuf::new(),
                    Witness::from_slice(&[sig.as_ref().to_vec()]),
                )
            }
        };
        let input = &mut tx.input[idx];
        input.script_sig = script_sig;
        input.witness = witness;
        Ok(())
    }
}

/// Signs `message` for `address` in the simple format (`smp…`). Supports P2WPKH and
/// P2TR key path (BIP-86, no script tree). The key must control the address.
pub fn sign_simple(
    secret: &SecretKey,
    address: &Address,
    message: &[u8],
) -> Result<String, SignError> {
    let spk = address.script_pubkey();
    if !(spk.is_p2wpkh() || spk.is_p2tr()) {
        return Err(SignError::UnsupportedAddress {
            form: "simple",
            address: address.to_string(),
        });
    }
    SingleKeySigner::new(*secret, address)?.sign_simple(message)
}

/// Signs `message` for `address` in the full format (`ful…`): P2WPKH, P2SH-P2WPKH,
/// P2TR key path and P2PKH.
pub fn sign_full(
    secret: &SecretKey,
    address: &Address,
    message: &[u8],
    params: ToSignParams,
) -> Result<String, SignError> {
    let spk = address.script_pubkey();
    if !(spk.is_p2wpkh() || spk.is_p2tr() || spk.is_p2pkh() || spk.is_p2sh()) {
        return Err(SignError::UnsupportedAddress {
            form: "full",
            address: address.to_string(),
        });
    }
    SingleKeySigner::new(*secret, address)?.sign_full(message, params)
}

/// `smp` + base64 of the consensus-encoded witness stack.
pub fn encode_simple(witness: &Witness) -> String {
    format!("smp{}", BASE64.encode(encode::serialize(witness)))
}

/// `ful` + base64 of the consensus-encoded transaction.
pub fn encode_full(tx: &Transaction) -> String {
    format!("ful{}", BASE64.encode(encode::serialize(tx)))
}

pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, VerifyError> {
    BASE64
        .decode(s)
        .map_err(|e| VerifyError::Base64(e.to_string()))
}

/// Verifies a BIP-322 signature of `message` by `address`.
///
/// Accepts `smp…`, `ful…`, `pof…` (checked against the UTXOs the PSBT itself claims;
/// use [`crate::pof::verify_pof`] to check against UTXOs you trust), unprefixed
/// (= simple), and for P2PKH addresses only an unprefixed BIP-137 signature.
pub fn verify(address: &Address, message: &[u8], signature: &str) -> Result<Verified, VerifyError> {
    if signature.is_empty() {
        return Err(VerifyError::TooShort);
    }
    let max = if signature.starts_with("pof") {
        MAX_POF_SIGNATURE_CHARS
    } else {
        MAX_SIGNATURE_CHARS
    };
    if signature.len() > max {
        return Err(VerifyError::TooLong {
            len: signature.len(),
            max,
        });
    }
    let spk = address.script_pubkey();
    if let Some(rest) = signature.strip_prefix("smp") {
        return verify_simple(&spk, message, rest);
    }
    if let Some(rest) = signature.strip_prefix("ful") {
        return verify_full(&spk, message, rest);
    }
    if let Some(rest) = signature.strip_prefix("pof") {
        return crate::pof::verify_pof_claimed_script(&spk, message, rest);
    }
    if spk.is_p2pkh() {
        // BIP-322 2.0 restricts legacy signatures to P2PKH; a simple signature can
        // never satisfy P2PKH (its scriptSig would have to be empty).
        crate::bip137::verify(address, message, signature)?;
        return Ok(Verified {
            format: Format::Legacy,
            lock_time: 0,
            sequence: 0,
            funds: None,
        });
    }
    verify_simple(&spk, message, signature)
}

fn verify_simple(spk: &Script, message: &[u8], b64: &str) -> Result<Verified, VerifyError> {
    let bytes = decode_base64(b64)?;
    let witness: Witness =
        encode::deserialize(&bytes).map_err(|e| VerifyError::ParseSimple(e.to_string()))?;
    if witness.is_empty() {
        return Err(VerifyError::Invalid("witness stack is empty".into()));
    }
    let spend = to_spend(spk, message);
    let mut tx = to_sign(spend.compute_txid(), ToSignParams::default());
    tx.input[0].witness = witness;
    let mut cache = SighashCache::new(&tx);
    script::verify_input(&tx, 0, &spend.output, &mut cache)?;
    Ok(Verified {
        format: Format::Simple,
        lock_time: 0,
        sequence: 0,
        funds: None,
    })
}

/// Compatibility with wallets (bip322-js, and others) that write a *simple* signature
/// for a P2SH-P2WPKH address. BIP-322 does not define that (simple is for native
/// segwit only: the scriptSig is not in the witness), so [`verify`] refuses it. This
/// rebuilds the scriptSig from the witness's public key and verifies the result as a
/// full signature; the P2SH hash check still binds the key to the address.
///
/// `ubtc verify-message` uses it as a fallback and says so; proof bundles never do.
pub fn verify_p2sh_p2wpkh_simple_compat(
    address: &Address,
    message: &[u8],
    signature: &str,
) -> Result<Verified, VerifyError> {
    if signature.len() > MAX_SIGNATURE_CHARS {
        return Err(VerifyError::TooLong {
            len: signature.len(),
            max: MAX_SIGNATURE_CHARS,
        });
    }
    let spk = address.script_pubkey();
    if !spk.is_p2sh() {
        return Err(VerifyError::Invalid("not a P2SH address".into()));
    }
    let b64 = signature.strip_prefix("smp").unwrap_or(signature);
    let bytes = decode_base64(b64)?;
    let witness: Witness =
        encode::deserialize(&bytes).map_err(|e| VerifyError::ParseSimple(e.to_string()))?;
    let pk = match (witness.len(), witness.nth(1)) {
        (2, Some(pk)) if pk.len() == 33 => pk,
        _ => {
            return Err(VerifyError::Invalid(
                "not a P2SH-P2WPKH witness (signature, compressed key)".into(),
            ))
        }
    };
    let hash = bitcoin::hashes::hash160::Hash::hash(pk);
    let redeem = ScriptBuf::new_p2wpkh(&bitcoin::WPubkeyHash::from_raw_hash(hash));
    let push = bitcoin::script::PushBytesBuf::try_from(redeem.into_bytes())
        .map_err(|e| VerifyError::Invalid(e.to_string()))?;
    let mut script_sig = ScriptBuf::new();
    script_sig.push_slice(push);
    let spend = to_spend(&spk, message);
    let mut tx = to_sign(spend.compute_txid(), ToSignParams::default());
    tx.input[0].script_sig = script_sig;
    tx.input[0].witness = witness;
    let mut cache = SighashCache::new(&tx);
    script::verify_input(&tx, 0, &spend.output, &mut cache)?;
    Ok(Verified {
        format: Format::Simple,
        lock_time: 0,
        sequence: 0,
        funds: None,
    })
}

fn verify_full(spk: &Script, message: &[u8], b64: &str) -> Result<Verified, VerifyError> {
    let bytes = decode_base64(b64)?;
    let tx: Transaction =
        encode::deserialize(&bytes).map_err(|e| VerifyError::ParseFull(e.to_string()))?;
    if tx.input.len() != 1 {
        return Err(VerifyError::Invalid(format!(
            "full signature has {} inputs; additional inputs need the pof format",
            tx.input.len()
        )));
    }
    let spend = to_spend(spk, message);
    check_to_sign_shape(&tx, spend.compute_txid())?;
    let mut cache = SighashCache::new(&tx);
    script::verify_input(&tx, 0, &spend.output, &mut cache)?;
    Ok(Verified {
        format: Format::Full,
        lock_time: tx.lock_time.to_consensus_u32(),
        sequence: tx.input[0].sequence.0,
        funds: None,
    })
}

/// Which keys of a multisig `policy` signed a *verified* `smp` / `ful` signature by a
/// P2WSH or P2SH-P2WSH `address`: each witness signature is matched against the
/// policy's keys under the input's BIP-143 sighash. Call it only after [`verify`]
/// accepted the signature; any shape it does not recognise gives `None` (unknown),
/// never a guess.
pub fn multisig_signers(
    address: &Address,
    message: &[u8],
    signature: &str,
    policy: &crate::multisig::MultiPolicy,
) -> Option<Vec<CompressedPublicKey>> {
    if signature.len() > MAX_SIGNATURE_CHARS {
        return None;
    }
    let spk = address.script_pubkey();
    let spend = to_spend(&spk, message);
    let tx = if let Some(b64) = signature.strip_prefix("ful") {
        let tx: Transaction = encode::deserialize(&decode_base64(b64).ok()?).ok()?;
        if tx.input.len() != 1 {
            return None;
        }
        tx
    } else {
        let b64 = signature.strip_prefix("smp").unwrap_or(signature);
        let witness: Witness = encode::deserialize(&decode_base64(b64).ok()?).ok()?;
        let mut tx = to_sign(spend.compute_txid(), ToSignParams::default());
        tx.input[0].witness = witness;
        tx
    };
    let witness_script = policy.witness_script();
    let stack: Vec<&[u8]> = tx.input[0].witness.iter().collect();
    // [dummy, sig…, witness script]
    if stack.len() < 3 || stack.last().copied() != Some(witness_script.as_bytes()) {
        return None;
    }
    let mut cache = SighashCache::new(&tx);
    let mut signers = Vec::new();
    for sig in &stack[1..stack.len() - 1] {
        let (&hash_type, der) = sig.split_last()?;
        let hash_type = EcdsaSighashType::from_standard(u32::from(hash_type)).ok()?;
        let sighash = cache
            .p2wsh_signature_hash(0, &witness_script, Amount::ZERO, hash_type)
            .ok()?;
        let msg = Message::from_digest(sighash.to_byte_array());
        let sig = bitcoin::secp256k1::ecdsa::Signature::from_der(der).ok()?;
        let key = policy
            .keys()
            .iter()
            .find(|k| SECP.verify_ecdsa(&msg, &sig, &k.0).is_ok())?;
        signers.push(*key);
    }
    Some(signers)
}

/// The checks every `to_sign` gets: the first input spends `to_spend:0`, exactly one
/// OP_RETURN output of value 0, version 0 or 2 (other versions are "inconclusive"
/// under the upgradeable rules).
pub(crate) fn check_to_sign_shape(
    tx: &Transaction,
    to_spend_txid: Txid,
) -> Result<(), VerifyError> {
    let first = tx
        .input
        .first()
        .ok_or_else(|| VerifyError::Invalid("to_sign has no input".into()))?;
    if first.previous_output
        != (OutPoint {
            txid: to_spend_txid,
            vout: 0,
        })
    {
        return Err(VerifyError::Invalid(
            "first input does not spend to_spend:0 (wrong message or address)".into(),
        ));
    }
    if tx.output.len() != 1 || tx.output[0] != op_return_output() {
        return Err(VerifyError::Invalid(
            "to_sign must have exactly one output: OP_RETURN with value 0".into(),
        ));
    }
    if tx.version.0 != 0 && tx.version.0 != 2 {
        return Err(VerifyError::Inconclusive(format!(
            "to_sign version {} (only 0 and 2 are defined)",
            tx.version.0
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_hashes_match_bip() {
        assert_eq!(
            hex::encode(message_hash(b"")),
            "c90c269c4f8fcbe6880f72a721ddfbf1914268a794cbb21cfafee13770ae19f1"
        );
        assert_eq!(
            hex::encode(message_hash(b"Hello World")),
            "f0eb03b1a75ac6d9847f55c624a99169b5dccba2a31f5b23bea77ba270de0a7a"
        );
    }
}
