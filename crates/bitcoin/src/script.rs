//! A deliberately small Bitcoin Script interpreter: exactly the opcodes that the
//! script templates we verify need (single-key spends, `multi`/`sortedmulti`
//! CHECKMULTISIG, simple time locks, Taproot key path and simple tapscripts).
//!
//! It enforces the BIP-322 *required rules* (SIGHASH_ALL only, or SIGHASH_DEFAULT for
//! Taproot; strict DER; low S; NULLFAIL; NULLDUMMY; MINIMALDATA; MINIMALIF;
//! CLEANSTACK; no CODESEPARATOR) on top of consensus. Anything it does not understand
//! is reported as [`ScriptError::Unsupported`], which callers turn into BIP-322's
//! *inconclusive* rather than *valid*: an unknown opcode must never make a proof pass.

use bitcoin::hashes::{hash160, sha256, Hash};
use bitcoin::secp256k1::{ecdsa, schnorr, Message, PublicKey, XOnlyPublicKey};
use bitcoin::sighash::{EcdsaSighashType, Prevouts, SighashCache, TapSighashType};
use bitcoin::taproot::{ControlBlock, LeafVersion, TapLeafHash};
use bitcoin::{Script, ScriptBuf, Transaction, TxOut, WitnessVersion};

use crate::SECP;

/// Largest script we execute (consensus limit for legacy and v0 scripts).
pub const MAX_SCRIPT_BYTES: usize = 10_000;
/// Largest stack element (consensus).
pub const MAX_ELEMENT_BYTES: usize = 520;
/// Most witness items per input. A 15-of-15 multisig needs 17; time-locked scripts a
/// few. Checked before any EC work.
pub const MAX_WITNESS_ITEMS: usize = 64;
const MAX_STACK: usize = 1000;
const MAX_OPS: usize = 201;
const MAX_PUBKEYS_PER_MULTISIG: i64 = 20;
const LOCKTIME_THRESHOLD: i64 = 500_000_000;
const SEQUENCE_DISABLE_FLAG: u32 = 1 << 31;
const SEQUENCE_TYPE_FLAG: u32 = 1 << 22;
const SEQUENCE_MASK: u32 = 0x0000_ffff;

/// Why a script did not verify. [`ScriptError::is_inconclusive`] tells apart "we could
/// not check this" from "this is wrong".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    #[error("script not understood by this verifier: {0}")]
    Unsupported(String),
    #[error("signature is not strictly DER encoded")]
    SignatureEncoding,
    #[error("signature has a high S value (must be low S)")]
    HighS,
    #[error(
        "sighash type {0:#04x} is not allowed (only SIGHASH_ALL, or SIGHASH_DEFAULT for taproot)"
    )]
    SighashType(u8),
    #[error("public key is not validly encoded")]
    PubkeyEncoding,
    #[error("witness public keys must be compressed")]
    UncompressedWitnessKey,
    #[error("public key does not match the address")]
    PubkeyMismatch,
    #[error("witness script does not match the address")]
    WitnessScriptMismatch,
    #[error("redeem script does not match the address")]
    RedeemScriptMismatch,
    #[error("signature does not verify for this message and key")]
    SignatureCheck,
    #[error("multisig signatures do not verify for this message and keys (NULLFAIL)")]
    NullFail,
    #[error("CHECKMULTISIG dummy element is not empty (NULLDUMMY)")]
    NullDummy,
    #[error("push is not minimally encoded (MINIMALDATA)")]
    MinimalData,
    #[error("IF/NOTIF argument must be empty or 0x01 (MINIMALIF)")]
    MinimalIf,
    #[error("number is not minimally encoded or out of range")]
    BadNumber,
    #[error("stack must hold exactly one true element at the end (CLEANSTACK), it holds {0}")]
    CleanStack(usize),
    #[error("script evaluated to false")]
    EvalFalse,
    #[error("stack underflow")]
    StackUnderflow,
    #[error("VERIFY failed")]
    VerifyFailed,
    #[error("OP_RETURN executed")]
    OpReturn,
    #[error("OP_CODESEPARATOR is forbidden")]
    CodeSeparator,
    #[error("unbalanced IF/ELSE/ENDIF")]
    UnbalancedConditional,
    #[error("scriptSig must contain only pushes")]
    ScriptSigNotPushOnly,
    #[error("scriptSig must be empty for a native segwit output")]
    ScriptSigNotEmpty,
    #[error("scriptSig of a P2SH-wrapped segwit spend must be exactly the redeem script push")]
    WrappedScriptSig,
    #[error("witness given for a non-witness spend")]
    UnexpectedWitness,
    #[error("witness has the wrong shape: {0}")]
    WitnessShape(String),
    #[error("time lock not satisfied: {0}")]
    TimeLock(&'static str),
    #[error("resource limit exceeded: {0}")]
    Limit(String),
    #[error("taproot: {0}")]
    Taproot(String),
    #[error("CHECKMULTISIG is disabled in tapscript")]
    TapscriptMultisig,
    #[error("script is malformed: {0}")]
    Malformed(String),
    #[error("could not compute sighash: {0}")]
    Sighash(String),
}

impl ScriptError {
    /// True when the verifier could not decide (BIP-322 "inconclusive"), false when the
    /// proof is invalid.
    pub fn is_inconclusive(&self) -> bool {
        matches!(self, ScriptError::Unsupported(_))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SigVersion {
    Base,
    WitnessV0,
    Tapscript(TapLeafHash),
}

/// Verifies input `idx` of `tx`, whose spent outputs are `prevouts` (one per input,
/// in order; Taproot sighashes commit to all of them).
pub(crate) fn verify_input(
    tx: &Transaction,
    idx: usize,
    prevouts: &[TxOut],
    cache: &mut SighashCache<&Transaction>,
) -> Result<(), ScriptError> {
    let (Some(input), Some(prevout)) = (tx.input.get(idx), prevouts.get(idx)) else {
        return Err(ScriptError::Malformed("input index out of range".into()));
    };
    let spk = &prevout.script_pubkey;
    let script_sig = &input.script_sig;
    let witness = &input.witness;
    if script_sig.len() > MAX_SCRIPT_BYTES || spk.len() > MAX_SCRIPT_BYTES {
        return Err(ScriptError::Limit("script larger than 10000 bytes".into()));
    }
    if witness.len() > MAX_WITNESS_ITEMS {
        // Not a consensus limit: we decline to check so many, we do not call it wrong.
        return Err(ScriptError::Unsupported(format!(
            "{} witness items; this verifier checks at most {MAX_WITNESS_ITEMS}",
            witness.len()
        )));
    }
    let mut interp = Interp {
        tx,
        idx,
        prevouts,
        cache,
        tap_budget: 0,
    };

    if let Some(version) = spk.witness_version() {
        if !script_sig.is_empty() {
            return Err(ScriptError::ScriptSigNotEmpty);
        }
        return interp.verify_witness_program(version, &spk.as_bytes()[2..], witness, false);
    }

    if !script_sig.is_push_only() {
        return Err(ScriptError::ScriptSigNotPushOnly);
    }
    let mut stack = Vec::new();
    interp.eval(script_sig, &mut stack, SigVersion::Base)?;
    let p2sh_stack = if spk.is_p2sh() {
        Some(stack.clone())
    } else {
        None
    };
    interp.eval(spk, &mut stack, SigVersion::Base)?;
    if !stack.last().is_some_and(|top| cast_to_bool(top)) {
        return Err(ScriptError::EvalFalse);
    }
    if let Some(mut stack) = p2sh_stack {
        let redeem = ScriptBuf::from_bytes(stack.pop().ok_or(ScriptError::StackUnderflow)?);
        if let Some(version) = redeem.witness_version() {
            // Wrapped segwit: the scriptSig must be exactly one push of the program.
            let mut expected = ScriptBuf::new();
            let push = bitcoin::script::PushBytesBuf::try_from(redeem.to_bytes())
                .map_err(|_| ScriptError::WrappedScriptSig)?;
            expected.push_slice(push);
            if *script_sig != expected {
                return Err(ScriptError::WrappedScriptSig);
            }
            return interp.verify_witness_program(version, &redeem.as_bytes()[2..], witness, true);
        }
        interp.eval(&redeem, &mut stack, SigVersion::Base)?;
        clean_stack(&stack)?;
    } else {
        clean_stack(&stack)?;
    }
    if !witness.is_empty() {
        return Err(ScriptError::UnexpectedWitness);
    }
    Ok(())
}

fn clean_stack(stack: &[Vec<u8>]) -> Result<(), ScriptError> {
    match stack {
        [top] if cast_to_bool(top) => Ok(()),
        [_] => Err(ScriptError::EvalFalse),
        _ => Err(ScriptError::CleanStack(stack.len())),
    }
}

struct Interp<'a, 'c, 't> {
    tx: &'a Transaction,
    idx: usize,
    prevouts: &'a [TxOut],
    cache: &'c mut SighashCache<&'t Transaction>,
    tap_budget: i64,
}

impl Interp<'_, '_, '_> {
    fn verify_witness_program(
        &mut self,
        version: WitnessVersion,
        program: &[u8],
        witness: &bitcoin::Witness,
        p2sh_wrapped: bool,
    ) -> Result<(), ScriptError> {
        match (version, program.len()) {
            (WitnessVersion::V0, 20) => {
                if witness.len() != 2 {
                    return Err(ScriptError::WitnessShape(format!(
                        "P2WPKH needs 2 items, got {}",
                        witness.len()
                    )));
                }
                let pk = &witness[1];
                if pk.len() != 33 {
                    return Err(ScriptError::UncompressedWitnessKey);
                }
                if hash160::Hash::hash(pk).as_byte_array() != program {
                    return Err(ScriptError::PubkeyMismatch);
                }
                let mut script_code = Vec::with_capacity(25);
                script_code.extend_from_slice(&[0x76, 0xa9, 0x14]);
                script_code.extend_from_slice(program);
                script_code.extend_from_slice(&[0x88, 0xac]);
                let script_code = ScriptBuf::from_bytes(script_code);
                let mut stack = vec![witness[0].to_vec(), pk.to_vec()];
                check_element_sizes(&stack)?;
                self.eval(&script_code, &mut stack, SigVersion::WitnessV0)?;
                clean_stack(&stack)
            }
            (WitnessVersion::V0, 32) => {
                let Some(script) = witness.last() else {
                    return Err(ScriptError::WitnessShape("P2WSH witness is empty".into()));
                };
                if script.len() > MAX_SCRIPT_BYTES {
                    return Err(ScriptError::Limit("witness script too large".into()));
                }
                if sha256::Hash::hash(script).as_byte_array() != program {
                    return Err(ScriptError::WitnessScriptMismatch);
                }
                let script = ScriptBuf::from_bytes(script.to_vec());
                let n = witness.len() - 1;
                let mut stack: Vec<Vec<u8>> = witness.iter().take(n).map(<[u8]>::to_vec).collect();
                check_element_sizes(&stack)?;
                self.eval(&script, &mut stack, SigVersion::WitnessV0)?;
                clean_stack(&stack)
            }
            (WitnessVersion::V0, n) => Err(ScriptError::WitnessShape(format!(
                "witness v0 program of {n} bytes"
            ))),
            (WitnessVersion::V1, 32) if !p2sh_wrapped => self.verify_taproot(program, witness),
            (v, _) => Err(ScriptError::Unsupported(format!(
                "witness version {} program of {} bytes",
                v.to_num(),
                program.len()
            ))),
        }
    }

    fn verify_taproot(
        &mut self,
        program: &[u8],
        witness: &bitcoin::Witness,
    ) -> Result<(), ScriptError> {
        let output_key = XOnlyPublicKey::from_slice(program)
            .map_err(|_| ScriptError::Taproot("output key is not a valid x-only key".into()))?;
        let items: Vec<&[u8]> = witness.iter().collect();
        if items.len() >= 2 && items.last().is_some_and(|a| a.first() == Some(&0x50)) {
            return Err(ScriptError::Unsupported("taproot annex".into()));
        }
        match items.as_slice() {
            [] => Err(ScriptError::WitnessShape("taproot witness is empty".into())),
            [sig] => {
                if self.check_schnorr(sig, &output_key, None)? {
                    Ok(())
                } else {
                    Err(ScriptError::SignatureCheck)
                }
            }
            [rest @ .., script, control] => {
                let control = ControlBlock::decode(control)
                    .map_err(|e| ScriptError::Taproot(format!("bad control block: {e}")))?;
                if control.leaf_version != LeafVersion::TapScript {
                    return Err(ScriptError::Unsupported("unknown tapleaf version".into()));
                }
                let script = ScriptBuf::from_bytes(script.to_vec());
                if !control.verify_taproot_commitment(&SECP, output_key, &script) {
                    return Err(ScriptError::Taproot(
                        "control block and script do not commit to the address".into(),
                    ));
                }
                let leaf_hash = TapLeafHash::from_script(&script, LeafVersion::TapScript);
                // BIP-342: an OP_SUCCESSx anywhere (where the script still decodes)
                // makes the script succeed before anything runs. We do not call that
                // valid: inconclusive.
                if has_op_success(&script) {
                    return Err(ScriptError::Unsupported("OP_SUCCESSx in tapscript".into()));
                }
                // BIP-342 validation weight budget: 50 + witness size.
                let witness_size = bitcoin::consensus::encode::serialize(witness).len();
                self.tap_budget = 50 + i64::try_from(witness_size).unwrap_or(i64::MAX);
                let mut stack: Vec<Vec<u8>> = rest.iter().map(|s| s.to_vec()).collect();
                check_element_sizes(&stack)?;
                self.eval(&script, &mut stack, SigVersion::Tapscript(leaf_hash))?;
                clean_stack(&stack)
            }
        }
    }

    /// Checks one ECDSA signature (with its sighash byte) against `pk`. `Ok(false)` for
    /// an empty signature; errors for every encoding violation.
    fn check_ecdsa(
        &mut self,
        sig: &[u8],
        pk: &[u8],
        script_code: &Script,
        sv: SigVersion,
    ) -> Result<bool, ScriptError> {
        // Core's order: signature encoding (an empty signature passes), then the public
        // key's encoding (STRICTENC, WITNESS_PUBKEYTYPE) even for an empty signature.
        let signature = if sig.is_empty() {
            None
        } else {
            if !is_strict_der(sig) {
                return Err(ScriptError::SignatureEncoding);
            }
            let (hash_type, der) = sig.split_last().ok_or(ScriptError::SignatureEncoding)?;
            if *hash_type != EcdsaSighashType::All as u8 {
                return Err(ScriptError::SighashType(*hash_type));
            }
            let signature =
                ecdsa::Signature::from_der(der).map_err(|_| ScriptError::SignatureEncoding)?;
            let mut normalized = signature;
            normalized.normalize_s();
            if normalized != signature {
                return Err(ScriptError::HighS);
            }
            Some(signature)
        };
        let pubkey_ok = match pk.len() {
            33 => pk[0] == 0x02 || pk[0] == 0x03,
            65 => pk[0] == 0x04,
            _ => false,
        };
        if !pubkey_ok {
            return Err(ScriptError::PubkeyEncoding);
        }
        if sv == SigVersion::WitnessV0 && pk.len() != 33 {
            return Err(ScriptError::UncompressedWitnessKey);
        }
        let Some(signature) = signature else {
            return Ok(false);
        };
        let pubkey = PublicKey::from_slice(pk).map_err(|_| ScriptError::PubkeyEncoding)?;
        let digest = match sv {
            SigVersion::Base => self
                .cache
                .legacy_signature_hash(self.idx, script_code, EcdsaSighashType::All as u32)
                .map_err(|e| ScriptError::Sighash(e.to_string()))?
                .to_byte_array(),
            SigVersion::WitnessV0 => {
                let value = self.prevouts[self.idx].value;
                self.cache
                    .p2wsh_signature_hash(self.idx, script_code, value, EcdsaSighashType::All)
                    .map_err(|e| ScriptError::Sighash(e.to_string()))?
                    .to_byte_array()
            }
            SigVersion::Tapscript(_) => return Err(ScriptError::PubkeyEncoding),
        };
        let msg = Message::from_digest(digest);
        Ok(SECP.verify_ecdsa(&msg, &signature, &pubkey).is_ok())
    }

    /// Checks a BIP-340 signature for the key path (`leaf` = None) or a tapscript leaf.
    fn check_schnorr(
        &mut self,
        sig: &[u8],
        key: &XOnlyPublicKey,
        leaf: Option<TapLeafHash>,
    ) -> Result<bool, ScriptError> {
        let (bytes, ty) = match sig.len() {
            64 => (sig, TapSighashType::Default),
            65 if sig[64] == TapSighashType::All as u8 => (&sig[..64], TapSighashType::All),
            65 => return Err(ScriptError::SighashType(sig[64])),
            _ => return Err(ScriptError::SignatureEncoding),
        };
        let signature =
            schnorr::Signature::from_slice(bytes).map_err(|_| ScriptError::SignatureEncoding)?;
        let prevouts = Prevouts::All(self.prevouts);
        let sighash = match leaf {
            None => self
                .cache
                .taproot_key_spend_signature_hash(self.idx, &prevouts, ty),
            Some(leaf) => self
                .cache
                .taproot_script_spend_signature_hash(self.idx, &prevouts, leaf, ty),
        }
        .map_err(|e| ScriptError::Sighash(e.to_string()))?;
        let msg = Message::from_digest(sighash.to_byte_array());
        Ok(SECP.verify_schnorr(&signature, &msg, key).is_ok())
    }

    fn eval(
        &mut self,
        script: &Script,
        stack: &mut Vec<Vec<u8>>,
        sv: SigVersion,
    ) -> Result<(), ScriptError> {
        let tapscript = matches!(sv, SigVersion::Tapscript(_));
        if script.len() > MAX_SCRIPT_BYTES {
            if tapscript {
                // BIP-342 removed the limit: a larger tapscript is not wrong, only
                // beyond this verifier.
                return Err(ScriptError::Unsupported(
                    "tapscript larger than 10000 bytes".into(),
                ));
            }
            return Err(ScriptError::Limit("script larger than 10000 bytes".into()));
        }
        let mut exec_stack: Vec<bool> = Vec::new();
        let mut op_count = 0usize;
        for instruction in script.instruction_indices() {
            let (pos, instruction) =
                instruction.map_err(|e| ScriptError::Malformed(e.to_string()))?;
            let exec = exec_stack.iter().all(|b| *b);
            let op = match instruction {
                bitcoin::script::Instruction::PushBytes(bytes) => {
                    if bytes.len() > MAX_ELEMENT_BYTES {
                        return Err(ScriptError::Limit("push larger than 520 bytes".into()));
                    }
                    // MINIMALDATA, as in Core: only for pushes that execute.
                    let opcode = script.as_bytes().get(pos).copied().unwrap_or_default();
                    if exec && !is_minimal_push(bytes.as_bytes(), opcode) {
                        return Err(ScriptError::MinimalData);
                    }
                    if exec {
                        stack.push(bytes.as_bytes().to_vec());
                    }
                    check_stack_size(stack)?;
                    continue;
                }
                bitcoin::script::Instruction::Op(op) => op.to_u8(),
            };
            if op > 0x60 {
                op_count += 1;
                if !tapscript && op_count > MAX_OPS {
                    return Err(ScriptError::Limit("more than 201 opcodes".into()));
                }
            }
            match op {
                // OP_1NEGATE, OP_1 .. OP_16
                0x4f | 0x51..=0x60 => {
                    if exec {
                        let n = if op == 0x4f { -1 } else { i64::from(op) - 0x50 };
                        stack.push(encode_num(n));
                    }
                }
                0x61 => {} // OP_NOP
                0x63 | 0x64 => {
                    // OP_IF / OP_NOTIF
                    let mut value = false;
                    if exec {
                        let top = stack.pop().ok_or(ScriptError::StackUnderflow)?;
                        value = match top.as_slice() {
                            [] => false,
                            [1] => true,
                            _ => return Err(ScriptError::MinimalIf),
                        };
                        if op == 0x64 {
                            value = !value;
                        }
                    }
                    exec_stack.push(value);
                }
                0x67 => {
                    let last = exec_stack
                        .last_mut()
                        .ok_or(ScriptError::UnbalancedConditional)?;
                    *last = !*last;
                }
                0x68 => {
                    exec_stack.pop().ok_or(ScriptError::UnbalancedConditional)?;
                }
                0xab => return Err(ScriptError::CodeSeparator),
                0x69 | 0x6a | 0x75 | 0x76 | 0x87 | 0x88 | 0xa8 | 0xa9 | 0xac | 0xad | 0xae
                | 0xaf | 0xb1 | 0xb2 => {
                    if exec {
                        self.exec_op(op, script, stack, sv, &mut op_count)?;
                    }
                }
                0xb0 | 0xb3..=0xb9 => {
                    return Err(ScriptError::Unsupported(
                        "NOP reserved for upgrades".to_string(),
                    ))
                }
                other => {
                    return Err(ScriptError::Unsupported(format!(
                        "opcode {}",
                        bitcoin::opcodes::Opcode::from(other)
                    )))
                }
            }
            check_stack_size(stack)?;
        }
        if !exec_stack.is_empty() {
            return Err(ScriptError::UnbalancedConditional);
        }
        Ok(())
    }

    fn exec_op(
        &mut self,
        op: u8,
        script: &Script,
        stack: &mut Vec<Vec<u8>>,
        sv: SigVersion,
        op_count: &mut usize,
    ) -> Result<(), ScriptError> {
        let pop = |stack: &mut Vec<Vec<u8>>| stack.pop().ok_or(ScriptError::StackUnderflow);
        match op {
            0x69 => {
                if !cast_to_bool(&pop(stack)?) {
                    return Err(ScriptError::VerifyFailed);
                }
            }
            0x6a => return Err(ScriptError::OpReturn),
            0x75 => {
                pop(stack)?;
            }
            0x76 => {
                let top = stack.last().ok_or(ScriptError::StackUnderflow)?.clone();
                stack.push(top);
            }
            0x87 | 0x88 => {
                let a = pop(stack)?;
                let b = pop(stack)?;
                if op == 0x88 {
                    if a != b {
                        return Err(ScriptError::VerifyFailed);
                    }
                } else {
                    stack.push(bool_elem(a == b));
                }
            }
            0xa8 => {
                let a = pop(stack)?;
                stack.push(sha256::Hash::hash(&a).to_byte_array().to_vec());
            }
            0xa9 => {
                let a = pop(stack)?;
                stack.push(hash160::Hash::hash(&a).to_byte_array().to_vec());
            }
            0xac | 0xad => {
                let pk = pop(stack)?;
                let sig = pop(stack)?;
                let ok = match sv {
                    SigVersion::Tapscript(leaf) => {
                        if pk.is_empty() {
                            return Err(ScriptError::PubkeyEncoding);
                        }
                        if sig.is_empty() {
                            false
                        } else {
                            self.tap_budget -= 50;
                            if self.tap_budget < 0 {
                                return Err(ScriptError::Limit(
                                    "tapscript validation weight".into(),
                                ));
                            }
                            if pk.len() != 32 {
                                return Err(ScriptError::Unsupported(
                                    "unknown tapscript public key type".into(),
                                ));
                            }
                            let key = XOnlyPublicKey::from_slice(&pk)
                                .map_err(|_| ScriptError::PubkeyEncoding)?;
                            // In tapscript a non-empty failing signature fails the script.
                            if !self.check_schnorr(&sig, &key, Some(leaf))? {
                                return Err(ScriptError::SignatureCheck);
                            }
                            true
                        }
                    }
                    _ => {
                        let ok = self.check_ecdsa(&sig, &pk, script, sv)?;
                        // NULLFAIL: a failing non-empty signature fails the script.
                        if !ok && !sig.is_empty() {
                            return Err(ScriptError::SignatureCheck);
                        }
                        ok
                    }
                };
                if op == 0xad {
                    if !ok {
                        return Err(ScriptError::VerifyFailed);
                    }
                } else {
                    stack.push(bool_elem(ok));
                }
            }
            0xae | 0xaf => {
                if matches!(sv, SigVersion::Tapscript(_)) {
                    return Err(ScriptError::TapscriptMultisig);
                }
                let ok = self.check_multisig(script, stack, sv, op_count)?;
                if op == 0xaf {
                    if !ok {
                        return Err(ScriptError::VerifyFailed);
                    }
                } else {
                    stack.push(bool_elem(ok));
                }
            }
            0xb1 => {
                let top = stack.last().ok_or(ScriptError::StackUnderflow)?;
                let n = decode_num(top, 5)?;
                self.check_lock_time(n)?;
            }
            0xb2 => {
                let top = stack.last().ok_or(ScriptError::StackUnderflow)?;
                let n = decode_num(top, 5)?;
                self.check_sequence(n)?;
            }
            _ => return Err(ScriptError::Unsupported(format!("opcode {op:#04x}"))),
        }
        Ok(())
    }

    fn check_multisig(
        &mut self,
        script: &Script,
        stack: &mut Vec<Vec<u8>>,
        sv: SigVersion,
        op_count: &mut usize,
    ) -> Result<bool, ScriptError> {
        // Same walk as Bitcoin Core's CHECKMULTISIG: keys and signatures are matched in
        // order, each key tried at most once.
        let len = stack.len();
        let at = |i: usize| -> Result<&Vec<u8>, ScriptError> {
            len.checked_sub(i)
                .and_then(|j| stack.get(j))
                .ok_or(ScriptError::StackUnderflow)
        };
        let mut i = 1usize;
        let n_keys = decode_num(at(i)?, 4)?;
        if !(0..=MAX_PUBKEYS_PER_MULTISIG).contains(&n_keys) {
            return Err(ScriptError::BadNumber);
        }
        let mut n_keys = n_keys as usize;
        *op_count += n_keys;
        if *op_count > MAX_OPS {
            return Err(ScriptError::Limit("more than 201 opcodes".into()));
        }
        i += 1;
        let mut ikey = i;
        i += n_keys;
        let n_sigs = decode_num(at(i)?, 4)?;
        if n_sigs < 0 || n_sigs as usize > n_keys {
            return Err(ScriptError::BadNumber);
        }
        let mut n_sigs = n_sigs as usize;
        i += 1;
        let mut isig = i;
        let first_sig = i;
        i += n_sigs;
        let dummy_index = i;
        if len < dummy_index {
            return Err(ScriptError::StackUnderflow);
        }
        let mut success = true;
        while success && n_sigs > 0 {
            let sig = at(isig)?.clone();
            let key = at(ikey)?.clone();
            if self.check_ecdsa(&sig, &key, script, sv)? {
                isig += 1;
                n_sigs -= 1;
            }
            ikey += 1;
            n_keys -= 1;
            if n_sigs > n_keys {
                success = false;
            }
        }
        if !success {
            // NULLFAIL: every signature of a failed CHECKMULTISIG must be empty.
            for pos in first_sig..dummy_index {
                if !at(pos)?.is_empty() {
                    return Err(ScriptError::NullFail);
                }
            }
        }
        if !stack[len - dummy_index].is_empty() {
            return Err(ScriptError::NullDummy);
        }
        stack.truncate(len - dummy_index);
        Ok(success)
    }

    fn check_lock_time(&self, n: i64) -> Result<(), ScriptError> {
        if n < 0 {
            return Err(ScriptError::TimeLock("negative lock time"));
        }
        let tx_lock = i64::from(self.tx.lock_time.to_consensus_u32());
        if (n < LOCKTIME_THRESHOLD) != (tx_lock < LOCKTIME_THRESHOLD) {
            return Err(ScriptError::TimeLock("lock time type mismatch"));
        }
        if n > tx_lock {
            return Err(ScriptError::TimeLock(
                "nLockTime below the script's lock time",
            ));
        }
        if self.tx.input[self.idx].sequence.0 == u32::MAX {
            return Err(ScriptError::TimeLock(
                "input is final (nSequence 0xffffffff)",
            ));
        }
        Ok(())
    }

    fn check_sequence(&self, n: i64) -> Result<(), ScriptError> {
        if n < 0 {
            return Err(ScriptError::TimeLock("negative sequence"));
        }
        let n = n as u32;
        if n & SEQUENCE_DISABLE_FLAG != 0 {
            return Ok(());
        }
        if self.tx.version.0 < 2 {
            return Err(ScriptError::TimeLock(
                "CHECKSEQUENCEVERIFY needs transaction version 2",
            ));
        }
        let seq = self.tx.input[self.idx].sequence.0;
        if seq & SEQUENCE_DISABLE_FLAG != 0 {
            return Err(ScriptError::TimeLock(
                "relative lock time disabled on the input",
            ));
        }
        let mask = SEQUENCE_TYPE_FLAG | SEQUENCE_MASK;
        let (n, seq) = (n & mask, seq & mask);
        if (n & SEQUENCE_TYPE_FLAG) != (seq & SEQUENCE_TYPE_FLAG) {
            return Err(ScriptError::TimeLock("relative lock time type mismatch"));
        }
        if n > seq {
            return Err(ScriptError::TimeLock(
                "nSequence below the script's relative lock",
            ));
        }
        Ok(())
    }
}

/// Core's `CheckMinimalPush`: `data` pushed with `opcode` uses the shortest form.
fn is_minimal_push(data: &[u8], opcode: u8) -> bool {
    match data {
        [] => opcode == 0x00,
        // OP_1 .. OP_16 and OP_1NEGATE push these.
        [b] if (1..=16).contains(b) || *b == 0x81 => false,
        _ if data.len() <= 75 => usize::from(opcode) == data.len(),
        _ if data.len() <= 255 => opcode == 0x4c,
        _ if data.len() <= 65_535 => opcode == 0x4d,
        _ => true,
    }
}

/// BIP-342's OP_SUCCESSx opcodes.
fn is_op_success(op: u8) -> bool {
    matches!(
        op,
        80 | 98 | 126..=129 | 131..=134 | 137..=138 | 141..=142 | 149..=153 | 187..=254
    )
}

/// True when `script` contains an OP_SUCCESSx before any decoding error (BIP-342 scans
/// the whole script this way before executing it).
fn has_op_success(script: &Script) -> bool {
    for instruction in script.instructions() {
        match instruction {
            Err(_) => return false,
            Ok(bitcoin::script::Instruction::Op(op)) if is_op_success(op.to_u8()) => return true,
            Ok(_) => {}
        }
    }
    false
}

fn check_element_sizes(stack: &[Vec<u8>]) -> Result<(), ScriptError> {
    if stack.iter().any(|e| e.len() > MAX_ELEMENT_BYTES) {
        return Err(ScriptError::Limit(
            "stack element larger than 520 bytes".into(),
        ));
    }
    Ok(())
}

fn check_stack_size(stack: &[Vec<u8>]) -> Result<(), ScriptError> {
    if stack.len() > MAX_STACK {
        return Err(ScriptError::Limit("stack larger than 1000 elements".into()));
    }
    Ok(())
}

fn bool_elem(b: bool) -> Vec<u8> {
    if b {
        vec![1]
    } else {
        Vec::new()
    }
}

pub(crate) fn cast_to_bool(v: &[u8]) -> bool {
    for (i, b) in v.iter().enumerate() {
        if *b != 0 {
            // Negative zero is false.
            return !(i == v.len() - 1 && *b == 0x80);
        }
    }
    false
}

fn encode_num(n: i64) -> Vec<u8> {
    if n == 0 {
        return Vec::new();
    }
    let neg = n < 0;
    let mut abs = n.unsigned_abs();
    let mut out = Vec::new();
    while abs > 0 {
        out.push((abs & 0xff) as u8);
        abs >>= 8;
    }
    if out.last().is_some_and(|b| b & 0x80 != 0) {
        out.push(if neg { 0x80 } else { 0 });
    } else if neg {
        if let Some(last) = out.last_mut() {
            *last |= 0x80;
        }
    }
    out
}

/// Decodes a minimally encoded script number of at most `max_len` bytes.
fn decode_num(v: &[u8], max_len: usize) -> Result<i64, ScriptError> {
    if v.len() > max_len {
        return Err(ScriptError::BadNumber);
    }
    let Some(last) = v.last() else {
        return Ok(0);
    };
    // MINIMALDATA for numbers: no needless sign/zero byte at the end.
    if last & 0x7f == 0 && (v.len() <= 1 || v[v.len() - 2] & 0x80 == 0) {
        return Err(ScriptError::BadNumber);
    }
    let mut result: i64 = 0;
    for (i, b) in v.iter().enumerate() {
        result |= i64::from(*b) << (8 * i);
    }
    if last & 0x80 != 0 {
        let mask = !(0x80i64 << (8 * (v.len() - 1)));
        Ok(-(result & mask))
    } else {
        Ok(result)
    }
}

/// Bitcoin Core's `IsValidSignatureEncoding`: strict DER plus one sighash byte.
pub(crate) fn is_strict_der(sig: &[u8]) -> bool {
    let len = sig.len();
    if !(9..=73).contains(&len) {
        return false;
    }
    if sig[0] != 0x30 || usize::from(sig[1]) != len - 3 {
        return false;
    }
    let len_r = usize::from(sig[3]);
    if 5 + len_r >= len {
        return false;
    }
    let len_s = usize::from(sig[5 + len_r]);
    if len_r + len_s + 7 != len {
        return false;
    }
    if sig[2] != 0x02 || len_r == 0 || sig[4] & 0x80 != 0 {
        return false;
    }
    if len_r > 1 && sig[4] == 0 && sig[5] & 0x80 == 0 {
        return false;
    }
    if sig[len_r + 4] != 0x02 || len_s == 0 || sig[len_r + 6] & 0x80 != 0 {
        return false;
    }
    if len_s > 1 && sig[len_r + 6] == 0 && sig[len_r + 7] & 0x80 == 0 {
        return false;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_roundtrip_and_minimal() {
        for n in [
            -70000i64,
            -256,
            -1,
            0,
            1,
            16,
            127,
            128,
            255,
            256,
            2016,
            1 << 22,
        ] {
            assert_eq!(decode_num(&encode_num(n), 5).unwrap(), n);
        }
        assert_eq!(decode_num(&[0x00], 4), Err(ScriptError::BadNumber));
        assert_eq!(decode_num(&[0x01, 0x00], 4), Err(ScriptError::BadNumber));
        assert_eq!(decode_num(&[0x80, 0x00], 4).unwrap(), 128);
        assert_eq!(decode_num(&[1, 2, 3, 4, 5], 4), Err(ScriptError::BadNumber));
    }

    #[test]
    fn bool_casting() {
        assert!(!cast_to_bool(&[]));
        assert!(!cast_to_bool(&[0, 0]));
        assert!(!cast_to_bool(&[0, 0x80]));
        assert!(cast_to_bool(&[0x80, 0]));
        assert!(cast_to_bool(&[1]));
    }
}
