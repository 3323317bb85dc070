//! Helpers for the review regressions (`pof_reserves`, `pof_time_locks`, `pof_dos`).

#![allow(clippy::unwrap_used, dead_code)] // test code: a panic is the failure report

use bitcoin::base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use bitcoin::hashes::Hash;
use bitcoin::psbt::{raw, Psbt};
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{
    absolute, opcodes, script, transaction, Address, Amount, CompressedPublicKey, Network,
    OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};
use serde_json::json;
use ubtc_bitcoin::bip322::{self, ToSignParams};
use ubtc_bitcoin::descriptor;
use ubtc_core::bundle::Utxo;
use ubtc_core::ProofBundle;

const TEMPLATE: &str = include_str!("../data/review-bundle-template.json");

pub fn msgkey() -> raw::Key {
    raw::Key {
        type_value: 0x09,
        key: vec![],
    }
}

pub fn key() -> SecretKey {
    SecretKey::from_slice(&[0x21; 32]).unwrap()
}

pub fn cpk(k: &SecretKey) -> CompressedPublicKey {
    CompressedPublicKey(k.public_key(&Secp256k1::new()))
}

pub fn wpkh_address(k: &SecretKey) -> Address {
    Address::p2wpkh(&cpk(k), Network::Bitcoin)
}

pub fn sign_der(k: &SecretKey, digest: [u8; 32]) -> Vec<u8> {
    let mut s = Secp256k1::new()
        .sign_ecdsa(&Message::from_digest(digest), k)
        .serialize_der()
        .to_vec();
    s.push(1);
    s
}

/// An extra input: outpoint, witness UTXO, witness, non-witness UTXO, nSequence.
pub struct Extra {
    pub outpoint: OutPoint,
    pub witness_utxo: Option<TxOut>,
    pub witness: Witness,
    pub non_witness_utxo: Option<Transaction>,
    pub sequence: u32,
    /// Sign this input with the key as P2WPKH (its witness is then replaced).
    pub sign_wpkh: bool,
}

/// A `pof…` for the P2WPKH address of `k` over `extra`, the challenge signed with `k`.
pub fn build_pof(k: &SecretKey, msg: &[u8], lock_time: u32, extra: Vec<Extra>) -> String {
    let pk = cpk(k);
    let spk = ScriptBuf::new_p2wpkh(&pk.wpubkey_hash());
    let spend = bip322::to_spend(&spk, msg);
    let mut tx = bip322::to_sign(
        spend.compute_txid(),
        ToSignParams {
            version: 0,
            lock_time,
            sequence: 0,
        },
    );
    for e in &extra {
        tx.input.push(TxIn {
            previous_output: e.outpoint,
            script_sig: ScriptBuf::new(),
            sequence: Sequence(e.sequence),
            witness: Witness::new(),
        });
    }
    let mut psbt = Psbt::from_unsigned_tx(tx.clone()).unwrap();
    psbt.unknown.insert(msgkey(), msg.to_vec());
    let mut cache = SighashCache::new(&tx);
    let d = cache
        .p2wpkh_signature_hash(0, &spk, Amount::ZERO, EcdsaSighashType::All)
        .unwrap();
    psbt.inputs[0].witness_utxo = Some(spend.output[0].clone());
    psbt.inputs[0].final_script_witness = Some(Witness::from_slice(&[
        sign_der(k, d.to_byte_array()),
        pk.to_bytes().to_vec(),
    ]));
    for (i, e) in extra.into_iter().enumerate() {
        let mut witness = e.witness;
        if e.sign_wpkh {
            let value = e.witness_utxo.as_ref().unwrap().value;
            let d = cache
                .p2wpkh_signature_hash(i + 1, &spk, value, EcdsaSighashType::All)
                .unwrap();
            witness =
                Witness::from_slice(&[sign_der(k, d.to_byte_array()), pk.to_bytes().to_vec()]);
        }
        let p = &mut psbt.inputs[i + 1];
        p.witness_utxo = e.witness_utxo;
        if !witness.is_empty() {
            p.final_script_witness = Some(witness);
        }
        p.non_witness_utxo = e.non_witness_utxo;
    }
    format!("pof{}", B64.encode(psbt.serialize()))
}

pub fn statement_text() -> String {
    let b: ProofBundle = serde_json::from_str(TEMPLATE).unwrap();
    b.statement.text()
}

/// A bundle with one P2WPKH reserve (valid simple signature) and the given pof.
pub fn bundle_with_pof(k: &SecretKey, pof_sig: &str, utxos: &[Utxo]) -> ProofBundle {
    let addr = wpkh_address(k);
    let text = statement_text();
    let mut value: serde_json::Value = serde_json::from_str(TEMPLATE).unwrap();
    value["statement_text"] = json!(text);
    value["reserves"] = json!([{
        "address": addr.to_string(),
        "descriptor": descriptor::with_checksum(&format!("wpkh({})", cpk(k))).unwrap(),
        "signature": bip322::sign_simple(k, &addr, text.as_bytes()).unwrap(),
    }]);
    value["proof_of_funds"] = json!({
        "address": addr.to_string(),
        "signature": pof_sig,
        "utxos": utxos,
        "bitcoin_height": 871234,
    });
    serde_json::from_value(value).unwrap()
}

pub fn utxo(op: OutPoint, out: &TxOut) -> Utxo {
    Utxo {
        txid: op.txid.to_string(),
        vout: op.vout,
        amount_sats: out.value.to_sat(),
        script_pubkey_hex: hex::encode(out.script_pubkey.as_bytes()),
    }
}

pub fn reserve_input(k: &SecretKey, txid_byte: &str, vout: u32, sats: u64, sequence: u32) -> Extra {
    Extra {
        outpoint: OutPoint {
            txid: txid_byte.repeat(32).parse().unwrap(),
            vout,
        },
        witness_utxo: Some(TxOut {
            value: Amount::from_sat(sats),
            script_pubkey: wpkh_address(k).script_pubkey(),
        }),
        witness: Witness::new(),
        non_witness_utxo: None,
        sequence,
        sign_wpkh: true,
    }
}

pub fn acs_input(sats: u64) -> Extra {
    let ws = ScriptBuf::from_bytes(vec![0x51]);
    Extra {
        outpoint: OutPoint {
            txid: "aa".repeat(32).parse().unwrap(),
            vout: 7,
        },
        witness_utxo: Some(TxOut {
            value: Amount::from_sat(sats),
            script_pubkey: ScriptBuf::new_p2wsh(&ws.wscript_hash()),
        }),
        witness: Witness::from_slice(&[ws.as_bytes()]),
        non_witness_utxo: None,
        sequence: 0,
        sign_wpkh: false,
    }
}

pub fn utxos_of(extra: &[Extra]) -> Vec<Utxo> {
    extra
        .iter()
        .map(|e| utxo(e.outpoint, e.witness_utxo.as_ref().unwrap()))
        .collect()
}

/// F3's shape: `n` inputs spending outputs of one previous transaction whose first
/// output script is `pad` bytes, carried once (BIP-322's same-txid fallback).
pub fn hostile(k: &SecretKey, msg: &[u8], n: usize, pad: usize, legacy: bool) -> String {
    let prev = Transaction {
        version: transaction::Version(2),
        lock_time: absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: (0..n)
            .map(|i| TxOut {
                value: Amount::from_sat(1),
                script_pubkey: if i == 0 {
                    ScriptBuf::from_bytes(vec![0x6a; pad])
                } else {
                    ScriptBuf::new()
                },
            })
            .collect(),
    };
    let txid = prev.compute_txid();
    let pk = cpk(k);
    let spk = ScriptBuf::new_p2wpkh(&pk.wpubkey_hash());
    let spend = bip322::to_spend(&spk, msg);
    let mut tx = bip322::to_sign(spend.compute_txid(), ToSignParams::default());
    for i in 0..n {
        tx.input.push(TxIn {
            previous_output: OutPoint {
                txid,
                vout: i as u32,
            },
            script_sig: ScriptBuf::new(),
            sequence: Sequence(0),
            witness: Witness::new(),
        });
    }
    let mut psbt = Psbt::from_unsigned_tx(tx).unwrap();
    psbt.unknown.insert(msgkey(), msg.to_vec());
    psbt.inputs[0].witness_utxo = Some(spend.output[0].clone());
    psbt.inputs[0].final_script_witness =
        Some(Witness::from_slice(&[vec![0u8; 72], vec![2u8; 33]]));
    for i in 1..=n {
        if legacy {
            psbt.inputs[i].final_script_sig = Some(
                script::Builder::new()
                    .push_opcode(opcodes::OP_TRUE)
                    .into_script(),
            );
        } else {
            psbt.inputs[i].final_script_witness = Some(Witness::from_slice(&[[0x51u8]]));
        }
    }
    psbt.inputs[1].non_witness_utxo = Some(prev);
    format!("pof{}", B64.encode(psbt.serialize()))
}
