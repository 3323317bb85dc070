//! `ubtc verify` on reserve attestations, through the real binary: the worked example
//! of docs/attestation.md verifies, unpinned (exit 0, from a file and from stdin); edited copies
//! exit 1; unreadable ones exit 2, each with its reason, never a panic.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ubtc_core::attestation::ReserveAttestation;

fn example() -> ReserveAttestation {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/attestation.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let block = doc
        .split("<!-- example-begin -->")
        .nth(1)
        .and_then(|s| s.split("```json").nth(1))
        .and_then(|s| s.split("```").next())
        .unwrap();
    ReserveAttestation::from_json(block.trim().as_bytes()).unwrap()
}

fn verify(path: &Path, json: bool) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ubtc"));
    cmd.arg("verify").arg(path);
    if json {
        cmd.arg("--json");
    }
    cmd.output().unwrap()
}

fn write(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path
}

/// Recomputes the totals and the text, as an attacker keeping the document
/// self-consistent would.
fn relabel(att: &mut ReserveAttestation) {
    att.totals = att.computed_totals().unwrap();
    att.text = att.rebuild_text();
}

#[test]
fn verify_reads_attestations() {
    let dir = tempfile::tempdir().unwrap();
    let att = example();

    let good = write(dir.path(), "good.json", &att.to_json_pretty());
    let out = verify(&good, false);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    // The example is consistent, but nothing pins it: exit 0, said on the first line.
    assert!(
        stdout.starts_with("reserve attestation: UNPINNED"),
        "{stdout}"
    );
    assert!(stdout.contains("2.25010000 BTC proven"), "{stdout}");
    assert!(stdout.contains("claimed and signed"), "{stdout}");

    let out = verify(&good, true);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["verdict"], "unpinned");
    assert_eq!(report["totals"]["proven_reserve_sats"], 225_010_000);
    assert_eq!(report["utxos"].as_array().unwrap().len(), 4);

    // From stdin.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .args(["verify", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(att.to_json_pretty().as_bytes())
        .unwrap();
    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
}

#[test]
fn edited_attestations_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let base = example();
    let mut cases: Vec<(&str, ReserveAttestation, &str)> = Vec::new();

    let mut a = base.clone();
    a.reserves[0].utxos[0].amount_sats += 1;
    relabel(&mut a);
    cases.push(("amount+1", a, "pof_message_mismatch"));

    let mut a = base.clone();
    a.reserves[0].utxos[0].amount_sats += 1;
    cases.push(("amount+1 without relabel", a, "reserve_total_mismatch"));

    let mut a = base.clone();
    a.reserves[0].utxos.pop();
    relabel(&mut a);
    cases.push(("utxo removed", a, "pof_message_mismatch"));

    let mut a = base.clone();
    let mut extra = a.reserves[0].utxos[0].clone();
    extra.vout += 7;
    a.reserves[0].utxos.push(extra);
    relabel(&mut a);
    cases.push(("utxo added", a, "pof_message_mismatch"));

    let mut a = base.clone();
    a.supply[0].supply.base_units -= 1;
    relabel(&mut a);
    cases.push(("supply lowered", a, "approval_invalid"));

    let mut a = base.clone();
    a.totals.ratio_ppm = Some(2_000_000);
    cases.push(("ratio raised", a, "ratio_mismatch"));

    let mut a = base.clone();
    a.reserves[2].utxos[0].script_pubkey_hex = a.reserves[0].utxos[0].script_pubkey_hex.clone();
    relabel(&mut a);
    cases.push(("foreign script", a, "utxo_script_not_reserve"));

    for (name, att, code) in cases {
        let path = write(dir.path(), "edited.json", &att.to_json_pretty());
        let out = verify(&path, true);
        assert_eq!(out.status.code(), Some(1), "{name}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["valid"], false, "{name}");
        let codes: Vec<&str> = report["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap())
            .collect();
        assert!(codes.contains(&code), "{name}: {codes:?}");
        let human = verify(&path, false);
        assert_eq!(human.status.code(), Some(1), "{name}");
        assert!(String::from_utf8_lossy(&human.stdout).contains("INVALID"));
    }
}

#[test]
fn unreadable_attestations_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let base = example();
    let json = base.to_json_pretty();
    let mut cases: Vec<(&str, String, &str)> = vec![(
        "truncated",
        json[..json.len() * 2 / 3].to_string(),
        "malformed",
    )];

    let mut a = base.clone();
    let again = a.reserves[0].utxos[0].clone();
    a.reserves[0].utxos.push(again);
    cases.push(("duplicate utxo", a.to_json_pretty(), "duplicate_utxo"));

    let mut a = base.clone();
    a.reserves[0].utxos[0].amount_sats = 2_100_000_000_000_001;
    cases.push((
        "above 21 million BTC",
        a.to_json_pretty(),
        "amount_too_large",
    ));

    let mut a = base.clone();
    a.bitcoin_block.hash = "not-a-block-hash".into();
    cases.push(("block hash", a.to_json_pretty(), "bad_field"));

    let mut a = base.clone();
    let template = a.reserves[0].utxos[0].clone();
    a.reserves[0].utxos = (0..10_001)
        .map(|vout| ubtc_core::bundle::Utxo {
            vout,
            ..template.clone()
        })
        .collect();
    cases.push(("too many utxos", a.to_json_pretty(), "too_many_utxos"));

    for (name, contents, code) in cases {
        let path = write(dir.path(), "bad.json", &contents);
        let out = verify(&path, true);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(report["unreadable"], true, "{name}");
        if !code.is_empty() {
            assert_eq!(report["code"], code, "{name}: {report}");
        }
        let human = verify(&path, false);
        assert_eq!(human.status.code(), Some(2), "{name}");
        assert!(
            !String::from_utf8_lossy(&human.stderr).contains("panicked"),
            "{name}"
        );
    }
}

#[test]
fn a_closed_pipe_does_not_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "good.json", &example().to_json_pretty());
    // The reader goes away before the report is written.
    let child = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("verify")
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let Output { status, stderr, .. } = {
        let mut child = child;
        drop(child.stdout.take());
        child.wait_with_output().unwrap()
    };
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&stderr)
    );
    assert!(!String::from_utf8_lossy(&stderr).contains("panicked"));
}
