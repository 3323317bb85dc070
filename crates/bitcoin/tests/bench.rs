//! The signing benchmark runs end to end (short durations; the figures themselves are
//! for `ubtc bench sign`, not for a test to judge).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::time::Duration;

use ubtc_bitcoin::bench::bench_sign;

#[test]
fn bench_runs_every_case() {
    let report = bench_sign(Duration::from_millis(20));
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.cases.len(), 7, "{report}");
    assert!(report
        .cases
        .iter()
        .all(|c| c.iterations > 0 && c.ops_per_sec > 0.0));
    assert!(report.simple_sign_ratio > 0.0 && report.simple_verify_ratio > 0.0);
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["cases"].as_array().unwrap().len(), 7);
    assert!(report.to_string().contains("simple sign / raw sign"));
}

/// `cargo test -p ubtc-bitcoin --test bench -- --ignored --nocapture` prints the figures.
#[test]
#[ignore]
fn print_bench() {
    println!("{}", bench_sign(Duration::from_millis(1000)));
}

#[test]
fn attest_bench_makes_and_verifies() {
    let report = ubtc_bitcoin::bench::bench_attest(&[1, 30]);
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.cases.len(), 2);
    for c in &report.cases {
        assert!(c.valid);
        assert_eq!(c.raw_ecdsa_checks, 2 * (c.utxos + 1));
        assert!(c.verifier_ecdsa_checks >= c.raw_ecdsa_checks);
        assert!(c.verify_secs > 0.0 && c.raw_ecdsa_secs > 0.0);
    }
    assert!(report.to_string().contains("raw ECDSA"));
}
