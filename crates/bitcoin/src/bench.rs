//! `ubtc bench sign`: signing and verification throughput, measured side by side in
//! one run so that the ratios mean something on any machine.
//!
//! The baseline is raw secp256k1 ECDSA over a 32-byte digest. A BIP-322 simple
//! signature costs one ECDSA signature plus hashing and encoding, so the target is
//! that simple sign and verify reach at least half the raw rate.

use std::fmt;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bitcoin::secp256k1::{Message, SecretKey};
use bitcoin::{Address, CompressedPublicKey, Network};
use serde::Serialize;

use crate::bip322::{self, SingleKeySigner};
use crate::multisig::{self, Form, SigningRequest, SortedMulti, Wrapping};
use crate::SECP;

/// Ratio of BIP-322 simple to raw ECDSA that the benchmark calls good enough.
pub const TARGET_RATIO: f64 = 0.5;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchCase {
    pub name: &'static str,
    pub ops_per_sec: f64,
    pub iterations: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BenchReport {
    pub duration_per_case_ms: u128,
    pub cases: Vec<BenchCase>,
    /// BIP-322 simple P2WPKH sign/s ÷ raw ECDSA sign/s.
    pub simple_sign_ratio: f64,
    /// BIP-322 simple P2WPKH verify/s ÷ raw ECDSA verify/s.
    pub simple_verify_ratio: f64,
    pub target_ratio: f64,
    pub targets_met: bool,
    /// Any step that failed during the run (a bug: every case should succeed).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
}

impl fmt::Display for BenchReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "signing benchmark ({} ms per case)",
            self.duration_per_case_ms
        )?;
        for c in &self.cases {
            writeln!(f, "  {:<48} {:>10.0} /s", c.name, c.ops_per_sec)?;
        }
        writeln!(
            f,
            "  simple sign / raw sign:     {:.2} (target >= {:.2})",
            self.simple_sign_ratio, self.target_ratio
        )?;
        writeln!(
            f,
            "  simple verify / raw verify: {:.2} (target >= {:.2})",
            self.simple_verify_ratio, self.target_ratio
        )?;
        for failure in &self.failures {
            writeln!(f, "  FAILURE: {failure}")?;
        }
        writeln!(
            f,
            "targets {}",
            if self.targets_met { "met" } else { "NOT met" }
        )
    }
}

/// Runs `op` repeatedly for `duration` and returns (ops per second, iterations).
fn measure(duration: Duration, mut op: impl FnMut(u64)) -> (f64, u64) {
    let start = Instant::now();
    let mut n = 0u64;
    loop {
        // Batches keep the clock reads out of the measurement.
        for _ in 0..8 {
            op(n);
            n += 1;
        }
        let elapsed = start.elapsed();
        if elapsed >= duration {
            return (n as f64 / elapsed.as_secs_f64(), n);
        }
    }
}

/// Measures `a` and `b` in alternating slices, so that both see the same machine
/// load (other processes, CPU frequency): their ratio is what the report judges.
fn measure_pair(
    duration: Duration,
    mut a: impl FnMut(u64),
    mut b: impl FnMut(u64),
) -> ((f64, u64), (f64, u64)) {
    const SLICES: u32 = 10;
    let slice = duration / SLICES;
    let (mut na, mut nb) = (0u64, 0u64);
    let (mut ta, mut tb) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..SLICES {
        for (op, n, t) in [
            (&mut a as &mut dyn FnMut(u64), &mut na, &mut ta),
            (&mut b as &mut dyn FnMut(u64), &mut nb, &mut tb),
        ] {
            let start = Instant::now();
            loop {
                for _ in 0..4 {
                    op(*n);
                    *n += 1;
                }
                if start.elapsed() >= slice {
                    break;
                }
            }
            *t += start.elapsed();
        }
    }
    let rate = |n: u64, t: Duration| n as f64 / t.as_secs_f64().max(f64::MIN_POSITIVE);
    ((rate(na, ta), na), (rate(nb, tb), nb))
}

/// Measures every case for `duration_per_case`.
pub fn bench_sign(duration_per_case: Duration) -> BenchReport {
    let mut cases = Vec::new();
    let mut failures = Vec::new();
    let mut record = |name: &'static str, (ops, n): (f64, u64)| -> f64 {
        cases.push(BenchCase {
            name,
            ops_per_sec: ops,
            iterations: n,
        });
        ops
    };

    // Fixed, valid keys: 0x01…, 0x02…, 0x03… are all below the curve order.
    let key = |b: u8| SecretKey::from_slice(&[b; 32]);
    let (Ok(k1), Ok(k2), Ok(k3)) = (key(1), key(2), key(3)) else {
        failures.push("fixed benchmark keys are invalid".into());
        return empty_report(duration_per_case, failures);
    };
    let pk1 = k1.public_key(&SECP);
    let digest = Message::from_digest([0x42; 32]);

    let raw_sig = SECP.sign_ecdsa(&digest, &k1);
    let address = Address::p2wpkh(&CompressedPublicKey(pk1), Network::Bitcoin);
    let message: &[u8] = b"Universal Bitcoin proof of reserves benchmark message";
    let signer = match SingleKeySigner::new(k1, &address) {
        Ok(signer) => signer,
        Err(e) => {
            failures.push(format!("simple signer: {e}"));
            return empty_report(duration_per_case, failures);
        }
    };
    let (raw, simple) = measure_pair(
        duration_per_case,
        |_| {
            black_box(SECP.sign_ecdsa(black_box(&digest), &k1));
        },
        |_| {
            black_box(signer.sign_simple(black_box(message)).is_ok());
        },
    );
    let raw_sign = record("raw ECDSA sign", raw);
    let simple_sign = record("BIP-322 simple P2WPKH sign", simple);

    let simple_sig = signer.sign_simple(message).unwrap_or_default();
    if let Err(e) = bip322::verify(&address, message, &simple_sig) {
        failures.push(format!("simple signature does not verify: {e}"));
    }
    let (raw, simple) = measure_pair(
        duration_per_case,
        |_| {
            black_box(
                SECP.verify_ecdsa(black_box(&digest), &raw_sig, &pk1)
                    .is_ok(),
            );
        },
        |_| {
            black_box(bip322::verify(&address, black_box(message), &simple_sig).is_ok());
        },
    );
    let raw_verify = record("raw ECDSA verify", raw);
    let simple_verify = record("BIP-322 simple P2WPKH verify", simple);

    match multisig_cases(duration_per_case, [k1, k2, k3], message) {
        Ok(results) => {
            for (name, r) in results {
                record(name, r);
            }
        }
        Err(e) => failures.push(e),
    }

    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    let simple_sign_ratio = ratio(simple_sign, raw_sign);
    let simple_verify_ratio = ratio(simple_verify, raw_verify);
    BenchReport {
        duration_per_case_ms: duration_per_case.as_millis(),
        cases,
        simple_sign_ratio,
        simple_verify_ratio,
        target_ratio: TARGET_RATIO,
        targets_met: failures.is_empty()
            && simple_sign_ratio >= TARGET_RATIO
            && simple_verify_ratio >= TARGET_RATIO,
        failures,
    }
}

type CaseResults = Vec<(&'static str, (f64, u64))>;

fn multisig_cases(
    d: Duration,
    keys: [SecretKey; 3],
    message: &[u8],
) -> Result<CaseResults, String> {
    let pubs = keys
        .iter()
        .map(|k| CompressedPublicKey(k.public_key(&SECP)))
        .collect();
    let policy = SortedMulti::new(2, pubs).map_err(|e| e.to_string())?;
    let address = policy.address(Network::Bitcoin, Wrapping::Wsh);
    let request = SigningRequest::new(
        &policy,
        Wrapping::Wsh,
        Network::Bitcoin,
        message,
        Form::Full,
    )
    .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    out.push((
        "2-of-3 P2WSH full: partial sign (one guardian)",
        measure(d, |_| {
            black_box(multisig::sign_partial(&request, &keys[0]).is_ok());
        }),
    ));
    let partials = [
        multisig::sign_partial(&request, &keys[0]).map_err(|e| e.to_string())?,
        multisig::sign_partial(&request, &keys[1]).map_err(|e| e.to_string())?,
    ];
    out.push((
        "2-of-3 P2WSH full: verify partials + combine",
        measure(d, |_| {
            black_box(multisig::combine(&request, &partials).is_ok());
        }),
    ));
    let sig = multisig::combine(&request, &partials).map_err(|e| e.to_string())?;
    bip322::verify(&address, message, &sig).map_err(|e| format!("multisig verify: {e}"))?;
    out.push((
        "2-of-3 P2WSH full: verify",
        measure(d, |_| {
            black_box(bip322::verify(&address, message, &sig).is_ok());
        }),
    ));
    Ok(out)
}

fn empty_report(d: Duration, failures: Vec<String>) -> BenchReport {
    BenchReport {
        duration_per_case_ms: d.as_millis(),
        cases: Vec::new(),
        simple_sign_ratio: 0.0,
        simple_verify_ratio: 0.0,
        target_ratio: TARGET_RATIO,
        targets_met: false,
        failures,
    }
}
