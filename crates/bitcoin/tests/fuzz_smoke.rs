//! Runs the fuzz targets' bodies (`ubtc_bitcoin::fuzzing`) over the seed corpus in
//! `fuzz/seeds/` and deterministic mutations of it, on stable Rust. Not a substitute
//! for fuzzing (see `fuzz/README.md`), but it keeps the targets building and catches
//! panics on the inputs we know.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::path::PathBuf;

use ubtc_bitcoin::fuzzing::{fuzz_attestation, fuzz_bundle, fuzz_pof, fuzz_signature};

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/seeds")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out.push(Vec::new());
    out
}

/// Deterministic xorshift, so that a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn mutations(seed: &[u8], count: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut out = vec![seed.to_vec()];
    if seed.is_empty() {
        return out;
    }
    for cut in [1, seed.len() / 2, seed.len() - 1] {
        out.push(seed[..cut].to_vec());
    }
    for _ in 0..count {
        let mut m = seed.to_vec();
        for _ in 0..(1 + rng.next() % 3) {
            let i = (rng.next() as usize) % m.len();
            match rng.next() % 3 {
                0 => m[i] ^= 1 << (rng.next() % 8),
                1 => m[i] = rng.next() as u8,
                _ => {
                    m.remove(i);
                    if m.is_empty() {
                        break;
                    }
                }
            }
        }
        out.push(m);
    }
    out
}

#[test]
fn signature_target() {
    let mut rng = Rng(0x5eed_0001);
    for seed in seeds("signature") {
        for input in mutations(&seed, 48, &mut rng) {
            fuzz_signature(&input);
        }
    }
}

#[test]
fn pof_target() {
    let mut rng = Rng(0x5eed_0002);
    for seed in seeds("pof") {
        for input in mutations(&seed, 48, &mut rng) {
            fuzz_pof(&input);
        }
    }
}

#[test]
fn bundle_target() {
    let mut rng = Rng(0x5eed_0003);
    for seed in seeds("bundle") {
        for input in mutations(&seed, 48, &mut rng) {
            fuzz_bundle(&input);
        }
    }
}

#[test]
fn attestation_target() {
    let mut rng = Rng(0x5eed_0004);
    for seed in seeds("attestation") {
        for input in mutations(&seed, 96, &mut rng) {
            fuzz_attestation(&input);
        }
    }
}
