//! The dashboard's HTTP side over a real server on loopback (SQLite in a temporary
//! directory): what the pages and assets are served with, and the admin page's
//! cookie session (tokens moved into HttpOnly cookies, CSRF double submit, cookies
//! ignored without the opt-in header, refresh and logout through cookies).
//! The browser itself is exercised by crates/ubtc/tests/dashboard_e2e.rs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use ubtc_api::admin::token::TokenKeys;
use ubtc_api::admin::{self, totp, AdminAuth, Role};
use ubtc_api::{public_router, serve, ApiState};
use ubtc_core::Timestamp;
use ubtc_store::{SqliteStore, Store};

const PASSWORD: &str = "correct horse battery staple";

struct App {
    base: String,
    client: reqwest::Client,
    totp_secret: String,
    _dir: tempfile::TempDir,
    _shutdown: CancellationToken,
}

async fn app() -> App {
    // As `admin.cookie_secure = "auto"` sets it for a server on loopback.
    app_with(false).await
}

async fn app_with(cookie_secure: bool) -> App {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite:{}", dir.path().join("d.db").display());
    let store = SqliteStore::connect(&url, 2).await.unwrap();
    store.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(store);
    // Enrolled already (the enrolment itself is tested in admin.rs): a secret stored
    // plain, as rows from before sealing are read.
    let mut new = admin::new_account("alice", Role::Admin, PASSWORD).unwrap();
    let totp_secret = ubtc_api::admin::totp::generate_secret();
    new.totp_secret = Some(totp_secret.clone());
    store
        .create_admin_user(&new, Timestamp::now())
        .await
        .unwrap()
        .unwrap();
    let mut auth = AdminAuth::new(
        TokenKeys::new(
            b"dashboard-test-jwt-secret-32-bytes-long",
            "ubtc",
            "ubtc-admin",
        )
        .unwrap(),
    );
    auth.cookie_secure = cookie_secure;
    let state = ApiState::new(store, Vec::new())
        .with_admin(auth)
        .with_explorer_url("https://explorer.example/address/{address}".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, public_router(state), shutdown.clone()));
    App {
        base,
        // No automatic decompression: the test looks at the bytes on the wire.
        client: reqwest::Client::new(),
        totp_secret,
        _dir: dir,
        _shutdown: shutdown,
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

#[tokio::test]
async fn pages_and_assets_are_served_compressed_cached_and_locked_down() {
    let app = app().await;
    let page = app
        .client
        .get(format!("{}/", app.base))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let h = page.headers().clone();
    assert_eq!(header(&h, "content-encoding"), "gzip");
    assert_eq!(header(&h, "content-type"), "text/html; charset=utf-8");
    assert_eq!(header(&h, "cache-control"), "no-cache");
    assert_eq!(header(&h, "vary"), "accept-encoding");
    let csp = header(&h, "content-security-policy");
    assert!(
        csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"),
        "{csp}"
    );
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    let etag = header(&h, "etag").to_owned();
    let gz = page.bytes().await.unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip magic");

    // Revalidation: same ETag, no body.
    let again = app
        .client
        .get(format!("{}/", app.base))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
    assert!(again.bytes().await.unwrap().is_empty());

    // Without gzip: the plain page, which names hashed assets served immutable.
    let plain = app
        .client
        .get(format!("{}/", app.base))
        .send()
        .await
        .unwrap();
    assert!(plain.headers().get("content-encoding").is_none());
    let html = plain.text().await.unwrap();
    let script = html
        .split("<script src=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_owned();
    let asset = app
        .client
        .get(format!("{}{script}", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(asset.status(), StatusCode::OK);
    assert_eq!(
        header(asset.headers(), "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert_eq!(
        header(asset.headers(), "content-type"),
        "text/javascript; charset=utf-8"
    );

    // The validation view and the admin page are pages too; unknown assets are the
    // API's JSON 404, and the page itself is not reachable as an asset.
    for path in [
        "/validations/01a20af3-97fd-773b-826b-38304049a84c",
        "/admin",
    ] {
        let r = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        assert!(r.text().await.unwrap().starts_with("<!doctype html>"));
    }
    for path in ["/assets/nope.js", "/assets/index.html"] {
        let r = app
            .client
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "not_found");
    }

    let settings: Value = app
        .client
        .get(format!("{}/dashboard.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        settings["explorer_url"],
        "https://explorer.example/address/{address}"
    );
}

/// `name=value` pairs of the `set-cookie` headers, and the raw headers.
fn set_cookies(h: &HeaderMap) -> Vec<String> {
    h.get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

fn cookie_value(set: &[String], name: &str) -> Option<String> {
    set.iter()
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .map(|rest| rest.split(';').next().unwrap_or("").to_owned())
}

#[tokio::test]
async fn admin_cookie_session_with_csrf() {
    let app = app().await;
    let code = totp::current_code(&app.totp_secret, Timestamp::now().as_millis() / 1000).unwrap();
    let login = app
        .client
        .post(format!("{}/v1/admin/login", app.base))
        .header("x-ubtc-session", "cookie")
        .json(&json!({"username": "alice", "password": PASSWORD, "totp": code}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), StatusCode::OK);
    let set = set_cookies(login.headers());
    let body: Value = login.json().await.unwrap();
    // The tokens left the body for HttpOnly, SameSite=Strict cookies (no Secure: the
    // setting is off here); the CSRF cookie is readable by the page.
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    assert_eq!(body["username"], "alice");
    let access = set
        .iter()
        .find(|c| c.starts_with("ubtc_admin_access="))
        .unwrap();
    assert!(access.contains("HttpOnly") && access.contains("SameSite=Strict"));
    assert!(access.contains("Path=/v1;") && !access.contains("Secure"));
    let refresh_cookie = set
        .iter()
        .find(|c| c.starts_with("ubtc_admin_refresh="))
        .unwrap();
    assert!(refresh_cookie.contains("HttpOnly") && refresh_cookie.contains("Path=/v1/admin;"));
    let csrf_cookie = set
        .iter()
        .find(|c| c.starts_with("ubtc_admin_csrf="))
        .unwrap();
    assert!(!csrf_cookie.contains("HttpOnly"));
    let cookies = ["ubtc_admin_access", "ubtc_admin_refresh", "ubtc_admin_csrf"]
        .iter()
        .map(|n| format!("{n}={}", cookie_value(&set, n).unwrap()))
        .collect::<Vec<_>>()
        .join("; ");
    let csrf = cookie_value(&set, "ubtc_admin_csrf").unwrap();
    assert_eq!(csrf.len(), 64);

    let call = |method: reqwest::Method, path: &str, session: bool, csrf: Option<&str>| {
        let mut r = app
            .client
            .request(method, format!("{}{path}", app.base))
            .header("cookie", HeaderValue::from_str(&cookies).unwrap());
        if session {
            r = r.header("x-ubtc-session", "cookie");
        }
        if let Some(c) = csrf {
            r = r.header("x-csrf-token", c);
        }
        r
    };

    // Reads work with the cookie and the opt-in header…
    let me = call(reqwest::Method::GET, "/v1/admin/me", true, None)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    // …but cookies alone (what a cross-site request would carry) are ignored.
    let me = call(reqwest::Method::GET, "/v1/admin/me", false, None)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::UNAUTHORIZED);

    // A change without the CSRF token, or with another one, is refused and creates
    // nothing; with it, it goes through.
    let new_user = json!({"username": "bob", "role": "auditor", "password": PASSWORD});
    for token in [None, Some("0".repeat(64))] {
        let r = call(
            reqwest::Method::POST,
            "/v1/admin/users",
            true,
            token.as_deref(),
        )
        .json(&new_user)
        .send()
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "forbidden");
        assert!(v["error"]["message"].as_str().unwrap().contains("csrf"));
    }
    let users: Value = call(reqwest::Method::GET, "/v1/admin/users", true, None)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        users["items"].as_array().unwrap().len(),
        1,
        "nothing created"
    );
    let r = call(reqwest::Method::POST, "/v1/admin/users", true, Some(&csrf))
        .json(&new_user)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);

    // Refresh takes the refresh token from its cookie and sets new cookies.
    let r = call(
        reqwest::Method::POST,
        "/v1/admin/refresh",
        true,
        Some(&csrf),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let renewed = set_cookies(r.headers());
    assert_ne!(
        cookie_value(&renewed, "ubtc_admin_refresh"),
        cookie_value(&set, "ubtc_admin_refresh"),
        "the refresh token rotates"
    );

    // Logout clears every cookie.
    let r = call(reqwest::Method::POST, "/v1/admin/logout", true, Some(&csrf))
        .send()
        .await
        .unwrap();
    let cleared = set_cookies(r.headers());
    for name in ["ubtc_admin_access", "ubtc_admin_refresh", "ubtc_admin_csrf"] {
        assert!(
            cleared
                .iter()
                .any(|c| c.starts_with(&format!("{name}=;")) && c.contains("Max-Age=0")),
            "{name} cleared: {cleared:?}"
        );
    }
}

/// The `Secure` flag follows `admin.cookie_secure`, never the client's `Host` header:
/// on, a request naming a loopback host still gets Secure cookies; off, a request
/// naming a public host does not.
#[tokio::test]
async fn cookie_secure_flag_comes_from_configuration() {
    for (secure, host) in [(true, "localhost"), (false, "admin.example.org")] {
        let app = app_with(secure).await;
        let code =
            totp::current_code(&app.totp_secret, Timestamp::now().as_millis() / 1000).unwrap();
        let login = app
            .client
            .post(format!("{}/v1/admin/login", app.base))
            .header("x-ubtc-session", "cookie")
            .header("host", host)
            .json(&json!({"username": "alice", "password": PASSWORD, "totp": code}))
            .send()
            .await
            .unwrap();
        assert_eq!(login.status(), StatusCode::OK);
        let raw: Vec<String> = login
            .headers()
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(raw.len(), 3, "{raw:?}");
        for c in &raw {
            assert_eq!(c.contains("; Secure"), secure, "{host}: {c}");
        }
    }
}
