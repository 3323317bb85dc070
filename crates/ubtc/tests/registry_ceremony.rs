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
    let g = dir.join(format!("g{guardian}"));
    run_ubtc(
        dir,
        db,
        &[
            "keys",
            "registry-sign",
            file.to_str().unwrap(),
            "--keystore",
            g.join("keystore.json").to_str().unwrap(),
            "--passphrase-file",
            g.join("passphrase").to_str().unwrap(),
        ],
        &[],
    )
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
    ok(&sign(d, &db.url, &v2, 2));
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
