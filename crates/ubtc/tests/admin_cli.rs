//! `ubtc admin …` as a real process on the real PostgreSQL server (a fresh database,
//! dropped at the end): an account is created (password from an environment variable,
//! never argv; the TOTP secret printed once), `audit-verify` passes, then one audit
//! record is edited directly in the database and `audit-verify` exits 1 naming it.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::Path;
use std::process::{Command, Output, Stdio};

use ubtc_store::{AdminStore, PgStore, Store};

fn admin_url() -> String {
    std::env::var("UBTC_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

struct Db {
    name: String,
    url: String,
}

impl Drop for Db {
    fn drop(&mut self) {
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(async {
                    if let Ok(admin) = PgStore::connect(&admin_url(), 1).await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(admin.pool())
                                .await;
                    }
                })
        })
        .join();
    }
}

async fn create_db() -> Db {
    let name = format!("ubtc_admin_cli_{}", uuid::Uuid::new_v4().simple());
    let admin = PgStore::connect(&admin_url(), 1).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is required at {} (set UBTC_TEST_DATABASE_URL): {e}",
            admin_url()
        )
    });
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(admin.pool())
        .await
        .unwrap();
    let url = match admin_url().rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("database URL without a database name"),
    };
    Db { name, url }
}

fn ubtc(dir: &Path, db_url: &str, args: &[&str], extra_env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ubtc"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("UBTC_DATA_DIR", dir)
        .env("UBTC_DATABASE_URL", db_url)
        .env("UBTC_LOG_LEVEL", "warn")
        .stdin(Stdio::null());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().expect("ubtc binary runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_user_then_audit_verify_finds_a_direct_edit() {
    let dir = tempfile::tempdir().unwrap();
    let db = create_db().await;
    let pw = [("ADMIN_PASSWORD", "correct horse battery staple")];
    for (name, role) in [
        ("alice", "admin"),
        ("olga", "operator"),
        ("aude", "auditor"),
    ] {
        let out = ubtc(
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
        assert!(stdout.contains("otpauth://totp/"), "{stdout}");
        assert!(!stdout.contains("correct horse"));
    }
    // Same name again: refused, exit 1, nothing written.
    let out = ubtc(
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
    let out = ubtc(
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
            "operator",
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
    let probe = PgStore::connect(&db.url, 1).await.unwrap();
    let stored = probe
        .find_api_key(&ubtc_api::admin::auth::secret_hash(&key))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.roles, ["operator", "auditor"]);
    let id = stored.id.to_string();
    let out = ubtc(
        dir.path(),
        &db.url,
        &["admin", "revoke-api-key", "--id", &id],
        &[],
    );
    assert!(out.status.success());
    let out = ubtc(
        dir.path(),
        &db.url,
        &["admin", "revoke-api-key", "--id", &id],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    probe.pool().close().await;

    let out = ubtc(dir.path(), &db.url, &["admin", "audit-verify"], &[]);
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

    let out = ubtc(dir.path(), &db.url, &["admin", "audit-verify"], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("record {victim} ")), "{stderr}");
    store.pool().close().await;
}
