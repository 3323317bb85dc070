//! The public dashboard in a real browser: a real `ubtc demo` process, headless
//! Chromium (Debian's `chromium`) driven by `tests/e2e/dashboard.mjs` through npm
//! `playwright-core`. The script checks the page against the API, the chart, the
//! live feed, the lookup box, the phone layout and the page weight, and downloads the
//! bundle of a payment made during the test through the page's link; this test then
//! checks that bundle with the `ubtc` binary, as a visitor would.
//!
//! Needs `/usr/bin/chromium` (or `CHROMIUM`) and `npm ci --prefix tests/e2e`; test.sh
//! and .ci/run install both. Screenshots go to docs/screenshots/.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly on purpose

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{stdout_line_after, StopOnDrop};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A day of reserve history written before the demo starts (one snapshot every 30
/// minutes, the reserve moving between 3 and 4.5 BTC against 2 BTC of supply), so
/// the charts have many points to draw; the demo's own snapshots follow it, as the
/// store expects history in insertion order.
fn seed_history(data: &Path) {
    use ubtc_core::bundle::SupplyEntry;
    use ubtc_core::{ChainId, Sats, Timestamp, TokenAmount};
    use ubtc_store::{ReserveSnapshot, Store};

    std::fs::create_dir_all(data).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite:{}", data.join("ubtc.db").display());
        let store = ubtc_store::SqliteStore::connect(&url, 1).await.unwrap();
        store.migrate().await.unwrap();
        // A second reserve address next to the demo's own (empty: the dev Bitcoin
        // backend holds nothing for it), so the page must show each balance apart.
        store
            .add_reserve_address(
                &ubtc_store::NewReserveAddress {
                    address: "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080".into(),
                    // An active reserve is published in the signed registry, so it
                    // needs its descriptor (BIP-173's example key).
                    descriptor: ubtc_bitcoin::descriptor::with_checksum(
                        "wpkh(0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798)",
                    )
                    .unwrap(),
                    kind: "p2wpkh".into(),
                    label: Some("cold storage".into()),
                },
                Timestamp::now(),
            )
            .await
            .unwrap();
        let now = Timestamp::now().as_millis();
        let supply_sats = 200_000_000u64;
        for i in (1..=48i64).rev() {
            let taken_at = Timestamp::from_millis(now - i * 30 * 60 * 1000);
            let reserve_sats = 300_000_000 + (i as u64 % 7) * 25_000_000;
            store
                .record_reserve_snapshot(&ReserveSnapshot {
                    taken_at,
                    bitcoin_height: 850_000 - i as u32,
                    bitcoin_block_hash: format!("{:064x}", 850_000 - i),
                    reserve_sats: Sats(reserve_sats),
                    supply_sats: Sats(supply_sats),
                    ratio_ppm: Some(reserve_sats * 1_000_000 / supply_sats),
                    healthy: true,
                    stale: false,
                    supply: vec![SupplyEntry {
                        chain: ChainId::parse("dev").unwrap(),
                        token: "dev".into(),
                        block_number: 1,
                        block_hash: format!("0x{:064x}", 1),
                        supply: TokenAmount::new(u128::from(supply_sats), 8),
                        as_of: taken_at,
                    }],
                })
                .await
                .unwrap();
        }
    });
}

/// Starts `ubtc demo --port 0` and returns it with its base URL, read from the line
/// `  API  http://…` it prints once it listens.
fn start_demo(data: &Path, extra_env: &[(&str, &str)]) -> (StopOnDrop, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ubtc"));
    cmd.args(["demo", "--port", "0", "--payments", "3", "--data-dir"])
        .arg(data)
        .env_remove("UBTC_DATABASE_URL")
        .env(
            "UBTC_DASHBOARD_EXPLORER_URL",
            "https://mempool.space/testnet4/address/{address}",
        )
        // Snapshots often enough that the chart has several points during the test.
        .env("UBTC_RESERVES_INTERVAL_SECS", "2")
        .env("UBTC_RESERVES_POLL_MS", "500")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    // Stopped when the test ends, passed or not (and with it its guardian processes).
    let mut demo = StopOnDrop(cmd.spawn().expect("ubtc binary runs"));
    let base = stdout_line_after(&mut demo.0, "API", Duration::from_secs(120));
    (demo, base)
}

/// The headless Chromium the browser tests drive: `/usr/bin/chromium` or `CHROMIUM`.
/// A retired reserve address registered before the demo starts: out of /v1/reserves,
/// but listed (as retired) by the admin interface's reserve address registry.
fn seed_retired_address(data: &Path) {
    use ubtc_core::Timestamp;
    use ubtc_store::Store;

    std::fs::create_dir_all(data).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite:{}", data.join("ubtc.db").display());
        let store = ubtc_store::SqliteStore::connect(&url, 1).await.unwrap();
        store.migrate().await.unwrap();
        let retired = "bcrt1qetdh5tmkfkfnjv7dxlyfjmn6xz6yyeh654vuhcmd6ce3uj7e47pq8uwrdp";
        store
            .add_reserve_address(
                &ubtc_store::NewReserveAddress {
                    address: retired.into(),
                    descriptor: String::new(),
                    kind: "p2wsh".into(),
                    label: Some("old vault".into()),
                },
                Timestamp::now(),
            )
            .await
            .unwrap();
        assert!(store
            .retire_reserve_address(retired, Timestamp::now())
            .await
            .unwrap());
    });
}

fn chromium() -> String {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install -y chromium (test.sh does), or set CHROMIUM"
    );
    chromium
}

#[test]
fn dashboard_in_headless_chromium() {
    let root = repo_root();
    let chromium = chromium();
    assert!(
        root.join("tests/e2e/node_modules/playwright-core").exists(),
        "playwright-core is missing: npm ci --prefix tests/e2e (test.sh does)"
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    seed_history(&data);
    let (demo, base) = start_demo(&data, &[]);
    let bundle = dir.path().join("downloaded-proof.json");
    let out = Command::new("node")
        .arg(root.join("tests/e2e/dashboard.mjs"))
        .arg(&base)
        .arg("--bundle-out")
        .arg(&bundle)
        .arg("--screenshots")
        .arg(root.join("docs/screenshots"))
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("E2E OK "),
        "browser checks failed:\n{stdout}\n{stderr}"
    );
    println!("{stdout}");
    // The seeded day of history is drawn, not just the demo's first snapshot.
    let points_24h = summary_points(&stdout, "chart_24h");
    assert!(points_24h >= 40, "24 h chart drew {points_24h} points");

    // The page weight the script measured is within the budget.
    let summary: serde_json::Value = serde_json::from_str(
        stdout
            .lines()
            .find_map(|l| l.strip_prefix("E2E OK "))
            .unwrap(),
    )
    .unwrap();
    let bytes = summary["first_page_bytes"].as_u64().unwrap();
    assert!(bytes > 0 && bytes < 100 * 1024, "first page {bytes} bytes");

    // The bundle downloaded through the page verifies with the binary…
    let verify = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .arg("verify")
        .arg(&bundle)
        .output()
        .unwrap();
    assert_eq!(
        verify.status.code(),
        Some(0),
        "ubtc verify refused the downloaded bundle: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    // …and is the validation's own bundle, not any valid one.
    let text = std::fs::read_to_string(&bundle).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        parsed["statement"]["request_id"].as_str(),
        summary["validation"].as_str(),
        "the bundle answers the validation the page showed"
    );
    drop(demo);
}

/// The assets embedded in the binary are what `web/` builds: nobody edited the
/// generated files by hand or forgot to rebuild after changing a source.
#[test]
fn committed_assets_match_web_sources() {
    let root = repo_root();
    assert!(
        root.join("web/node_modules/uplot").exists(),
        "uPlot is missing: npm ci --prefix web (test.sh does)"
    );
    let out = Command::new("node")
        .arg(root.join("web/build.js"))
        .arg("--check")
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Creates an account with `ubtc admin create-user` on the demo's database. It has no
/// second factor yet: the browser test enrols it at the first login.
fn create_user(data: &Path, username: &str, role: &str, password: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_ubtc"))
        .args([
            "admin",
            "create-user",
            "--username",
            username,
            "--role",
            role,
        ])
        .args(["--password-env", "E2E_NEW_PASSWORD"])
        .env_remove("UBTC_DATABASE_URL")
        .env("UBTC_DATA_DIR", data)
        .env("E2E_NEW_PASSWORD", password)
        .env("UBTC_LOG_LEVEL", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("ubtc admin runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "create-user failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // No secret is printed: whoever creates an account never sees its second factor.
    let base32_secret = stdout.split_whitespace().any(|w| {
        w.len() >= 32
            && w.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
    });
    // Nothing that looks like a TOTP secret (160 bits: 32 base32 characters).
    assert!(!stdout.contains("otpauth") && !base32_secret, "{stdout}");
}

/// The admin interface at /admin: each account enrols its second factor at its first
/// login (the secret shown to that user alone; the initial password refused as the
/// new one), then login without TOTP fails and with it succeeds; an admin gets no
/// secret when creating a user and cannot create an operator key; an operator creates
/// its own expiring key and sees only its keys;
/// the session cookie is HttpOnly and SameSite=Strict, a change without the CSRF
/// token is refused, an auditor sees no control that changes anything and the API
/// refuses such calls anyway; an operator gets the reserve-operation forms and a
/// clear error code where reserve operations are not run; the reserve addresses tab
/// lists the registry as the API returns it, a retired address as retired; saves
/// docs/screenshots/admin-home.png and admin-reserve-addresses.png.
#[test]
fn admin_interface_in_headless_chromium() {
    let root = repo_root();
    let chromium = chromium();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("demo");
    seed_retired_address(&data);
    let (demo, base) = start_demo(
        &data,
        &[(
            "UBTC_ADMIN_JWT_SECRET",
            "e2e-only-jwt-secret-of-at-least-32-bytes-0123456789",
        )],
    );
    let admin_password = "e2e admin password 0001";
    let auditor_password = "e2e auditor password 0002";
    create_user(&data, "alice", "admin", admin_password);
    create_user(&data, "bob", "auditor", auditor_password);
    let operator_password = "e2e operator password 0003";
    create_user(&data, "olivia", "operator", operator_password);

    let out = Command::new("node")
        .arg(root.join("tests/e2e/admin.mjs"))
        .arg(&base)
        .arg("--screenshots")
        .arg(root.join("docs/screenshots"))
        .env("CHROMIUM", &chromium)
        .env("E2E_ADMIN_USER", "alice")
        .env("E2E_ADMIN_PASSWORD", admin_password)
        .env("E2E_AUDITOR_USER", "bob")
        .env("E2E_AUDITOR_PASSWORD", auditor_password)
        .env("E2E_OPERATOR_USER", "olivia")
        .env("E2E_OPERATOR_PASSWORD", operator_password)
        .stdin(Stdio::null())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("E2E OK "),
        "admin browser checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
    drop(demo);
}

fn summary_points(stdout: &str, chart: &str) -> u64 {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("E2E OK "))
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    v[chart]["points"].as_u64().unwrap()
}
