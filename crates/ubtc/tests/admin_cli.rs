//! `ubtc admin …` as a real process on the real PostgreSQL server (a fresh database,
//! dropped at the end): an account is created (password from an environment variable,
//! never argv; no TOTP secret: the user enrols at the first login), operator keys are
//! refused, the last admin cannot be disabled, `audit-verify` passes, then one audit
//! record is edited directly in the database and `audit-verify` exits 1 naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use ubtc_store::{AdminStore, PgStore, Store};

mod common;
use common::{run_ubtc, TestDb};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_user_then_audit_verify_finds_a_direct_edit() {
    let dir = tempfile::tempdir().unwrap();
    let db = TestDb::create("ubtc_admin_cli").await;
    let pw = [("ADMIN_PASSWORD", "correct horse battery staple")];
    for (name, role) in [
        ("alice", "admin"),
        ("olga", "operator"),
        ("aude", "auditor"),
    ] {
        let out = run_ubtc(
            dir.path(),
            &db.url,
            &[
                "admin",
                "create-user",
                "--username",
                name,
                "--role",
                role,
                "--password-env",
                "ADMIN_PASSWORD",
            ],
            &pw,
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("first login"), "{stdout}");
        let base32_secret = stdout.split_whitespace().any(|w| {
            w.len() >= 32
                && w.bytes()
                    .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        });
        // Nothing that looks like a TOTP secret (160 bits: 32 base32 characters).
        assert!(!stdout.contains("otpauth") && !base32_secret, "{stdout}");
        assert!(!stdout.contains("correct horse"));
    }
    let probe = PgStore::connect(&db.url, 1).await.unwrap();
    for name in ["alice", "olga", "aude"] {
        let u = probe.get_admin_user(name).await.unwrap().unwrap();
        assert_eq!(u.totp_secret, None, "{name} has no second factor yet");
    }
    // Alice is the only admin: she cannot be disabled (exit 1, nothing changed).
    let out = run_ubtc(
        dir.path(),
        &db.url,
        &["admin", "disable-user", "--username", "alice"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("last enabled admin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let alice = probe.get_admin_user("alice").await.unwrap().unwrap();
    assert_eq!(alice.disabled_at, None);
    // Operator keys are not made from the command line (exit 1, nothing stored).
    let out = run_ubtc(
        dir.path(),
        &db.url,
        &[
            "admin",
            "create-api-key",
            "--name",
            "ops",
            "--role",
            "operator",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(probe.list_api_keys().await.unwrap().is_empty());
    // Same name again: refused, exit 1, nothing written.
    let out = run_ubtc(
        dir.path(),
        &db.url,
        &[
            "admin",
            "create-user",
            "--username",
            "alice",
            "--role",
            "auditor",
            "--password-env",
            "ADMIN_PASSWORD",
        ],
        &pw,
    );
    assert_eq!(out.status.code(), Some(1));

    // An API key for a program: printed once, stored as a hash with its roles.
    let out = run_ubtc(
        dir.path(),
        &db.url,
        &[
            "admin",
            "create-api-key",
            "--name",
            "ci",
            "--role",
            "auditor",
            "--role",
            "admin",
        ],
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let key = stdout
        .lines()
        .find_map(|l| l.strip_prefix("key:"))
        .unwrap()
        .trim()
        .to_owned();
    let stored = probe
        .find_api_key(&ubtc_api::admin::auth::secret_hash(&key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.roles, ["admin", "auditor"]);
    let id = stored.id.to_string();
    let out = run_ubtc(
        dir.path(),
        &db.url,
        &["admin", "revoke-api-key", "--id", &id],
        &[],
    );
    assert!(out.status.success());
    let out = run_ubtc(
        dir.path(),
        &db.url,
        &["admin", "revoke-api-key", "--id", &id],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    probe.pool().close().await;

    let out = run_ubtc(dir.path(), &db.url, &["admin", "audit-verify"], &[]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("intact: 5 records"));

    // Straight into the database, as only the table's owner could: the trigger that
    // refuses UPDATE is disabled for the edit (the test role is a superuser).
    let store = PgStore::connect(&db.url, 1).await.unwrap();
    let entries = store.list_audit(None, 10).await.unwrap();
    let victim = entries
        .iter()
        .find(|e| e.target.as_deref() == Some("user:olga"))
        .unwrap()
        .id;
    let refused = sqlx::query("UPDATE audit_logs SET new_value = '{}' WHERE id = $1")
        .bind(victim)
        .execute(store.pool())
        .await;
    assert!(
        refused.is_err(),
        "the append-only trigger must refuse the edit"
    );
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("ALTER TABLE audit_logs DISABLE TRIGGER audit_logs_no_update")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query(
        r#"UPDATE audit_logs SET new_value = '{"username":"olga","role":"admin"}' WHERE id = $1"#,
    )
    .bind(victim)
    .execute(&mut *tx)
    .await
    .unwrap();
    sqlx::query("ALTER TABLE audit_logs ENABLE TRIGGER audit_logs_no_update")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let out = run_ubtc(dir.path(), &db.url, &["admin", "audit-verify"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("record {victim} ")), "{stderr}");
    store.pool().close().await;
}
