//! The reserve registry key ceremony as real `ubtc keys …` processes on the real
//! PostgreSQL server (a fresh database, dropped at the end): three guardian keystores,
//! a reserve, a proposal, signatures one guardian at a time, a publication refused
//! below the quorum and accepted at it, the export a verifier pins, and a second
//! version signed by the first version's guardians.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::Output;

use ubtc_store::{PgStore, Store};

mod common;
use common::{run_ubtc, TestDb};

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn value_after(stdout: &str, label: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {stdout}"))
        .trim()
        .to_owned()
}

fn sign(dir: &Path, db: &str, file: &Path, guardian: usize) -> Output {
    sign_with(dir, db, file, guardian, &["--yes"])
}

fn sign_with(dir: &Path, db: &str, file: &Path, guardian: usize, extra: &[&str]) -> Output {
    let g = dir.join(format!("g{guardian}"));
    let keystore = g.join("keystore.json");
    let passphrase = g.join("passphrase");
    let mut args = vec![
        "keys",
        "registry-sign",
        file.to_str().unwrap(),
        "--keystore",
        keystore.to_str().unwrap(),
        "--passphrase-file",
        passphrase.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    run_ubtc(dir, db, &args, &[])
}

fn refused(out: &Output, code: &str) {
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(code), "expected {code}: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propose_sign_publish_and_export() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = TestDb::create("ubtc_registry_cli").await;
    let mut keys = Vec::new();
    for i in 1..=3 {
        let g = d.join(format!("g{i}"));
        std::fs::create_dir_all(&g).unwrap();
        std::fs::write(g.join("passphrase"), format!("guardian {i} passphrase")).unwrap();
        let out = ok(&run_ubtc(
            d,
            &db.url,
            &[
                "keys",
                "guardian-init",
                "--keystore",
                g.join("keystore.json").to_str().unwrap(),
                "--passphrase-file",
                g.join("passphrase").to_str().unwrap(),
            ],
            &[],
        ));
        keys.push(value_after(&out, "public key:"));
    }
    let mut create = vec!["keys", "reserve-create", "--threshold", "2"];
    for k in &keys {
        create.extend(["--guardian", k.as_str()]);
    }
    let reserve = value_after(&ok(&run_ubtc(d, &db.url, &create, &[])), "address:");

    // Version 1: its guardians and M named on the command line.
    let v1 = d.join("v1.json");
    let mut propose = vec![
        "keys",
        "registry-propose",
        "--guardian-threshold",
        "2",
        "--out",
        v1.to_str().unwrap(),
    ];
    for k in &keys {
        propose.extend(["--guardian", k.as_str()]);
    }
    let out = ok(&run_ubtc(d, &db.url, &propose, &[]));
    let fingerprint = value_after(&out, "fingerprint:");

    // Without --yes (standard input is not a terminal here) nothing is signed.
    let before = std::fs::read(&v1).unwrap();
    refused(
        &sign_with(d, &db.url, &v1, 1, &[]),
        "registry_confirmation_required",
    );
    assert_eq!(std::fs::read(&v1).unwrap(), before);

    // One signature is not a quorum: refused with its code, nothing stored.
    let signed = ok(&sign(d, &db.url, &v1, 1));
    assert!(
        signed.contains(&reserve),
        "the guardian sees what it signs: {signed}"
    );
    let publish = ["keys", "registry-publish", v1.to_str().unwrap()];
    let out = run_ubtc(d, &db.url, &publish, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("registry_not_enough_signatures"),
        "{stderr}"
    );
    // Signing twice with the same key changes nothing.
    ok(&sign(d, &db.url, &v1, 1));
    assert_eq!(run_ubtc(d, &db.url, &publish, &[]).status.code(), Some(1));
    let out = ok(&sign(d, &db.url, &v1, 3));
    assert_eq!(value_after(&out, "signatures:"), "2");
    assert_eq!(
        value_after(&ok(&run_ubtc(d, &db.url, &publish, &[])), "fingerprint:"),
        fingerprint
    );

    let store = PgStore::connect(&db.url, 1).await.unwrap();
    let stored = store.list_registry_versions().await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].fingerprint(), fingerprint);
    assert!(stored[0].reserve(&reserve).is_some());

    // Nothing changed: no new version to propose.
    let v2 = d.join("v2.json");
    let out = run_ubtc(
        d,
        &db.url,
        &["keys", "registry-propose", "--out", v2.to_str().unwrap()],
        &[],
    );
    assert!(!out.status.success());
    // Retire the reserve: version 2, signed by version 1's guardians.
    ok(&run_ubtc(
        d,
        &db.url,
        &["keys", "reserve-retire", &reserve],
        &[],
    ));
    ok(&run_ubtc(
        d,
        &db.url,
        &["keys", "registry-propose", "--out", v2.to_str().unwrap()],
        &[],
    ));
    let v1_export = d.join("registry-v1.json");
    ok(&run_ubtc(
        d,
        &db.url,
        &[
            "keys",
            "registry-export",
            "--out",
            v1_export.to_str().unwrap(),
        ],
        &[],
    ));
    let shown = ok(&sign_with(
        d,
        &db.url,
        &v2,
        2,
        &["--yes", "--previous", v1_export.to_str().unwrap()],
    ));
    assert!(
        shown.contains(&format!("~ reserve {reserve}: active -> retired")),
        "the guardian sees what changed: {shown}"
    );
    // Another version 2 (same content but a lower guardian threshold): refused by the
    // guardian's rules, and even with --allow-unusual refused by guardian 2, which
    // already signed a different version 2. Nothing is written.
    let fork = d.join("v2-fork.json");
    let mut other: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&v2).unwrap()).unwrap();
    other["guardian_threshold"] = 1.into();
    other["signatures"] = serde_json::json!([]);
    std::fs::write(&fork, serde_json::to_vec_pretty(&other).unwrap()).unwrap();
    let fork_before = std::fs::read(&fork).unwrap();
    refused(&sign(d, &db.url, &fork, 3), "registry_policy_refused");
    refused(
        &sign_with(d, &db.url, &fork, 2, &["--yes", "--allow-unusual"]),
        "registry_version_already_signed",
    );
    assert_eq!(std::fs::read(&fork).unwrap(), fork_before);
    // A proposal that does not link to the version given as --previous.
    let mut unlinked = other.clone();
    unlinked["guardian_threshold"] = 2.into();
    unlinked["previous"] = "00".repeat(32).into();
    let unlinked_file = d.join("v2-unlinked.json");
    std::fs::write(
        &unlinked_file,
        serde_json::to_vec_pretty(&unlinked).unwrap(),
    )
    .unwrap();
    refused(
        &sign_with(
            d,
            &db.url,
            &unlinked_file,
            1,
            &["--yes", "--previous", v1_export.to_str().unwrap()],
        ),
        "registry_previous_mismatch",
    );
    ok(&sign(d, &db.url, &v2, 3));
    ok(&run_ubtc(
        d,
        &db.url,
        &["keys", "registry-publish", v2.to_str().unwrap()],
        &[],
    ));

    let export = d.join("registry.json");
    ok(&run_ubtc(
        d,
        &db.url,
        &["keys", "registry-export", "--out", export.to_str().unwrap()],
        &[],
    ));
    let chain = ubtc_core::registry::parse_registry_file(&std::fs::read(&export).unwrap()).unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[0].fingerprint(), fingerprint);
    assert_eq!(
        chain[1].reserve(&reserve).unwrap().status,
        ubtc_core::registry::ReserveStatus::Retired
    );
    assert_eq!(
        ubtc_bitcoin::registry::verify_chain(&chain).unwrap().len(),
        2
    );
}
