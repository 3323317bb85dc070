//! The admin API over real PostgreSQL (a fresh schema per test on
//! `UBTC_TEST_DATABASE_URL`, default `postgres://root@127.0.0.1:5432/test`): the role
//! matrix of every route in `ADMIN_ROUTES` × every role × every kind of bad or good
//! credential, login with TOTP (wrong, replayed), enrolment of the second factor at
//! the first login, lockouts per username and per address, refresh rotation and
//! reuse, API key scopes and who may grant which (operator keys: operator sessions
//! only, expiring), the disable rules (not oneself, not the last admin), the IP
//! allowlist, and the audit records the actions leave.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use ubtc_api::admin::token::{forge, Claims, TokenKeys};
use ubtc_api::admin::{self, totp, AdminAuth, IpAllowlist, Role, ADMIN_ROUTES};
use ubtc_api::webhooks::WebhookAdmin;
use ubtc_api::{public_router, serve, ApiState};
use ubtc_core::Timestamp;
use ubtc_store::{LockoutPolicy, PgStore, Store};

const PG_URL_DEFAULT: &str = "postgres://root@127.0.0.1:5432/test";
const JWT_SECRET: &[u8] = b"test-jwt-secret-of-at-least-32-bytes!!";
const BOOTSTRAP_KEY: &str = "bootstrap-operator-key-for-tests";
const PASSWORD: &str = "correct horse battery staple";

struct DropSchema {
    url: String,
    schema: String,
}

impl Drop for DropSchema {
    fn drop(&mut self) {
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(store) = PgStore::connect(&url, 1).await {
                    let _ = store.drop_schema(&schema).await;
                }
            })
        })
        .join();
    }
}

struct App {
    base: String,
    client: reqwest::Client,
    store: Arc<dyn Store>,
    keys: TokenKeys,
    /// One user per role: (role, username, TOTP secret).
    users: Vec<(Role, String, String)>,
    _shutdown: CancellationToken,
    _schema: DropSchema,
}

fn auth_settings() -> AdminAuth {
    let mut auth = AdminAuth::new(TokenKeys::new(JWT_SECRET, "ubtc", "ubtc-admin").unwrap());
    auth.user_ip_lockout = LockoutPolicy {
        max_failures: 3,
        window_ms: 60_000,
        lockout_ms: 60_000,
    };
    auth.user_lockout = LockoutPolicy {
        max_failures: 6,
        window_ms: 60_000,
        lockout_ms: 60_000,
    };
    auth.ip_lockout = LockoutPolicy {
        max_failures: 8,
        window_ms: 60_000,
        lockout_ms: 60_000,
    };
    auth
}

async fn app_with(auth: Option<AdminAuth>, bootstrap: bool) -> App {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let url = std::env::var("UBTC_TEST_DATABASE_URL").unwrap_or_else(|_| PG_URL_DEFAULT.into());
    let schema = format!("ubtc_admin_{}", uuid::Uuid::new_v4().simple());
    let pg = PgStore::connect_in_schema_with(&url, &schema, 8)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is required at {url}: {e}"));
    let guard = DropSchema {
        url: url.clone(),
        schema,
    };
    pg.migrate().await.unwrap();
    let store: Arc<dyn Store> = Arc::new(pg);
    let check: ubtc_api::webhooks::TargetCheck = Arc::new(|_: &str| Ok(()));
    let mut state = ApiState::new(store.clone(), Vec::new());
    state = state.with_webhook_admin(if bootstrap {
        WebhookAdmin::new(BOOTSTRAP_KEY, check).unwrap()
    } else {
        WebhookAdmin::without_key(check)
    });
    if let Some(a) = auth {
        state = state.with_admin(a);
    }
    let mut users = Vec::new();
    for role in Role::ALL {
        let name = format!("{role}-user");
        // Enrolled already, with the secret sealed as the server seals it (enrolment
        // itself: `first_login_enrols_the_second_factor`).
        let mut new = admin::new_account(&name, role, PASSWORD).unwrap();
        let secret = totp::generate_secret();
        new.totp_secret = Some(auth_settings().totp_cipher.seal(&name, &secret).unwrap());
        store
            .create_admin_user(&new, Timestamp::now())
            .await
            .unwrap()
            .unwrap();
        users.push((role, name, secret));
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    tokio::spawn(serve(listener, public_router(state), shutdown.clone()));
    App {
        base,
        client: reqwest::Client::new(),
        store,
        keys: TokenKeys::new(JWT_SECRET, "ubtc", "ubtc-admin").unwrap(),
        users,
        _shutdown: shutdown,
        _schema: guard,
    }
}

async fn app() -> App {
    app_with(Some(auth_settings()), true).await
}

fn now_secs() -> i64 {
    Timestamp::now().as_millis() / 1000
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// How a request authenticates.
#[derive(Clone)]
enum Cred {
    None,
    Bearer(String),
    ApiKey(String),
}

impl App {
    async fn call(
        &self,
        method: Method,
        path: &str,
        cred: &Cred,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.base))
            .header("user-agent", "admin-test/1");
        match cred {
            Cred::None => {}
            Cred::Bearer(t) => req = req.header("authorization", format!("Bearer {t}")),
            Cred::ApiKey(k) => req = req.header("x-api-key", k),
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn user(&self, role: Role) -> &(Role, String, String) {
        self.users.iter().find(|u| u.0 == role).unwrap()
    }

    /// A session opened in the store and its access token, signed as the server
    /// signs (the store and key are real; this skips the one-login-per-TOTP-step
    /// limit so the matrix can use hundreds of sessions).
    async fn session(&self, role: Role, exp_offset_secs: i64) -> (String, String) {
        let name = &self.user(role).1;
        let user = self.store.get_admin_user(name).await.unwrap().unwrap();
        let refresh = format!("ubtc_rt_{}", uuid::Uuid::new_v4().simple());
        let now = Timestamp::now();
        let sid = self
            .store
            .create_admin_session(
                user.id,
                &ubtc_api::admin::auth::secret_hash(&refresh),
                Timestamp(now.as_millis() + 3_600_000),
                Timestamp(now.as_millis() + 86_400_000),
                now,
            )
            .await
            .unwrap();
        let iat = now_secs();
        let claims = Claims {
            iss: "ubtc".into(),
            aud: "ubtc-admin".into(),
            sub: user.id,
            name: name.clone(),
            role,
            sid,
            iat,
            exp: iat + exp_offset_secs,
        };
        (self.keys.sign(&claims).unwrap(), refresh)
    }

    async fn login(&self, role: Role) -> Value {
        let (_, name, secret) = self.user(role);
        let code = totp::current_code(secret, now_secs()).unwrap();
        let (s, v) = self
            .call(
                Method::POST,
                "/v1/admin/login",
                &Cred::None,
                Some(json!({"username": name, "password": PASSWORD, "totp": code})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        v
    }
}

fn concrete(path: &str) -> String {
    path.replace("{id}", &uuid::Uuid::new_v4().to_string())
        .replace("{event_id}", &uuid::Uuid::new_v4().to_string())
        .replace("{username}", "nobody-here")
}

/// Changes one claim of a valid token without re-signing it.
fn tamper(token: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["role"] = json!("admin");
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 3600);
    let body = b64.encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{}.{}", parts[0], body, parts[2])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_every_role_every_credential() {
    let app = app().await;
    let other_keys = TokenKeys::new(
        b"another-secret-of-at-least-32-bytes!!!",
        "ubtc",
        "ubtc-admin",
    )
    .unwrap();
    let mut checked = 0;
    let mut bootstrap_refused = 0;
    for route in ADMIN_ROUTES.iter().filter(|r| r.authenticated) {
        let method = Method::from_bytes(route.method.as_str().as_bytes()).unwrap();
        let body = (method == Method::POST).then(|| json!({}));
        let what = format!("{} {}", route.method, route.path);
        for role in Role::ALL {
            let (valid, refresh) = app.session(role, 600).await;
            let (expired, _) = app.session(role, -10).await;
            let claims: Claims = {
                use base64::Engine;
                let b = valid.split('.').nth(1).unwrap();
                serde_json::from_slice(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(b)
                        .unwrap(),
                )
                .unwrap()
            };
            let wrong_sig = other_keys.sign(&claims).unwrap();
            let alg_none = forge(
                r#"{"alg":"none","typ":"JWT"}"#,
                &serde_json::to_string(&claims).unwrap(),
                None,
            );
            let refused: [(&str, Cred, &str); 5] = [
                ("no token", Cred::None, "unauthorized"),
                ("expired", Cred::Bearer(expired), "token_expired"),
                ("wrong signature", Cred::Bearer(wrong_sig), "unauthorized"),
                ("alg none", Cred::Bearer(alg_none), "unauthorized"),
                (
                    "tampered claims",
                    Cred::Bearer(tamper(&valid)),
                    "unauthorized",
                ),
            ];
            for (label, cred, expect) in refused {
                let (s, v) = app
                    .call(method.clone(), &concrete(route.path), &cred, body.clone())
                    .await;
                assert_eq!(
                    (s, code(&v)),
                    (StatusCode::UNAUTHORIZED, expect),
                    "{what} as {role} with {label}: {v}"
                );
                checked += 1;
            }

            // Refresh token reused after rotation: the session is revoked, and with it
            // the access tokens it issued.
            let (s, rotated) = app
                .call(
                    Method::POST,
                    "/v1/admin/refresh",
                    &Cred::None,
                    Some(json!({ "refresh_token": refresh })),
                )
                .await;
            assert_eq!(s, StatusCode::OK, "{rotated}");
            let fresh = rotated["access_token"].as_str().unwrap().to_owned();
            let (s, v) = app
                .call(
                    Method::POST,
                    "/v1/admin/refresh",
                    &Cred::None,
                    Some(json!({ "refresh_token": refresh })),
                )
                .await;
            assert_eq!(
                (s, code(&v)),
                (StatusCode::UNAUTHORIZED, "refresh_token_reused")
            );
            for (label, token) in [("original", &valid), ("rotated", &fresh)] {
                let (s, v) = app
                    .call(
                        method.clone(),
                        &concrete(route.path),
                        &Cred::Bearer(token.clone()),
                        body.clone(),
                    )
                    .await;
                assert_eq!(
                    (s, code(&v)),
                    (StatusCode::UNAUTHORIZED, "unauthorized"),
                    "{what} as {role} with the {label} access token after refresh reuse: {v}"
                );
                checked += 1;
            }

            // Valid credentials: the role decides.
            let (token, _) = app.session(role, 600).await;
            let (s, v) = app
                .call(
                    method.clone(),
                    &concrete(route.path),
                    &Cred::Bearer(token),
                    body.clone(),
                )
                .await;
            if route.accepts(&[role]) {
                // Past the guard: the handler answers. An empty body, an unknown id
                // or a feature that is not configured here (reserve operations) is
                // refused as bad input, never as an authorization failure, and never
                // with a server error.
                assert!(
                    s != StatusCode::UNAUTHORIZED
                        && s != StatusCode::FORBIDDEN
                        && !s.is_server_error(),
                    "{what} as {role}: {s} {v}"
                );
                if method == Method::GET && !route.path.contains('{') {
                    assert!(
                        s.is_success() || code(&v).ends_with("_disabled"),
                        "{what} as {role}: {s} {v}"
                    );
                }
            } else {
                assert_eq!(
                    (s, code(&v)),
                    (StatusCode::FORBIDDEN, "forbidden"),
                    "{what} as {role}"
                );
            }
            checked += 1;
        }
        // The bootstrap key has the narrow `webhooks` role: the webhook routes, and
        // nothing else an operator may do (no reserve operations).
        let (s, v) = app
            .call(
                method.clone(),
                &concrete(route.path),
                &Cred::Bearer(BOOTSTRAP_KEY.into()),
                body.clone(),
            )
            .await;
        // (Routes open to any caller — me, logout — have no roles to check.)
        if !route.roles.is_empty() {
            assert_eq!(
                route.accepts(&[Role::Webhooks]),
                route.path.starts_with("/v1/webhooks"),
                "{what}: only webhook routes accept the bootstrap key's role"
            );
        }
        if route.accepts(&[Role::Webhooks]) {
            assert!(
                s != StatusCode::UNAUTHORIZED && s != StatusCode::FORBIDDEN,
                "{what}: {v}"
            );
        } else {
            assert_eq!(
                s,
                StatusCode::FORBIDDEN,
                "{what} with the bootstrap key: {v}"
            );
            bootstrap_refused += 1;
        }
    }
    assert!(checked > 200, "{checked}");
    // Every reserve-operation route is among those the bootstrap key was refused.
    assert!(
        ADMIN_ROUTES
            .iter()
            .filter(|r| ["deposits", "mints", "burns", "releases"]
                .iter()
                .any(|k| r.path.ends_with(k)))
            .all(|r| !r.accepts(&[Role::Webhooks])),
        "a reserve route accepts the bootstrap key"
    );
    assert!(bootstrap_refused >= 8, "{bootstrap_refused}");
    // Past the guard, who may grant an operator key: only an operator's session (the
    // route accepts admins too, for admin and auditor keys).
    for role in Role::ALL {
        let (token, _) = app.session(role, 600).await;
        let (s, v) = app
            .call(
                Method::POST,
                "/v1/admin/api-keys",
                &Cred::Bearer(token),
                Some(json!({"name": "matrix", "roles": ["operator"], "expires_in_secs": 60})),
            )
            .await;
        let expect = match role {
            Role::Operator => (StatusCode::CREATED, ""),
            Role::Admin => (StatusCode::FORBIDDEN, "role_not_grantable"),
            _ => (StatusCode::FORBIDDEN, "forbidden"),
        };
        assert_eq!((s, code(&v)), expect, "operator key as {role}: {v}");
    }
    // And a real login per role (password + TOTP) gives a token the guard accepts.
    for role in Role::ALL {
        let tokens = app.login(role).await;
        let access = Cred::Bearer(tokens["access_token"].as_str().unwrap().into());
        let (s, me) = app.call(Method::GET, "/v1/admin/me", &access, None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(me["roles"], json!([role.as_str()]));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_totp_refresh_logout() {
    let app = app().await;
    let (_, name, secret) = app.user(Role::Admin).clone();
    let login = |body: Value| {
        let app = &app;
        async move {
            app.call(Method::POST, "/v1/admin/login", &Cred::None, Some(body))
                .await
        }
    };
    // Password right, no code: asked for one (not counted as a failure).
    let (s, v) = login(json!({"username": name, "password": PASSWORD})).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "totp_required"));
    // Wrong code.
    let good = totp::current_code(&secret, now_secs()).unwrap();
    let wrong = format!("{:06}", (good.parse::<u32>().unwrap() + 1) % 1_000_000);
    let (s, v) = login(json!({"username": name, "password": PASSWORD, "totp": wrong})).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "invalid_totp"));
    // Right code: tokens.
    let (s, tokens) = login(json!({"username": name, "password": PASSWORD, "totp": good})).await;
    assert_eq!(s, StatusCode::OK, "{tokens}");
    assert_eq!(tokens["role"], "admin");
    // The same code again (an observed or replayed code): refused.
    let (s, v) = login(json!({"username": name, "password": PASSWORD, "totp": good})).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_totp"),
        "{v}"
    );
    // Wrong password, unknown user: the same answer.
    let (s1, v1) =
        login(json!({"username": name, "password": "wrong password!!", "totp": good})).await;
    let (s2, v2) = login(json!({"username": "ghost", "password": PASSWORD})).await;
    assert_eq!(
        (s1, code(&v1)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
    assert_eq!((s2, code(&v2)), (s1, code(&v1)));
    assert_eq!(v1["error"]["message"], v2["error"]["message"]);

    let access = Cred::Bearer(tokens["access_token"].as_str().unwrap().into());
    let (s, me) = app.call(Method::GET, "/v1/admin/me", &access, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(me["subject"], name);
    assert_eq!(me["roles"], json!(["admin"]));

    // Rotation: the new pair works, the old refresh token is spent.
    let refresh1 = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (s, pair2) = app
        .call(
            Method::POST,
            "/v1/admin/refresh",
            &Cred::None,
            Some(json!({"refresh_token": refresh1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_ne!(pair2["refresh_token"], refresh1.as_str());
    let access2 = Cred::Bearer(pair2["access_token"].as_str().unwrap().into());
    assert_eq!(
        app.call(Method::GET, "/v1/admin/me", &access2, None)
            .await
            .0,
        StatusCode::OK
    );
    let (s, pair3) = app
        .call(
            Method::POST,
            "/v1/admin/refresh",
            &Cred::None,
            Some(json!({"refresh_token": pair2["refresh_token"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    // Logout ends the session: its access tokens and refresh token stop working.
    let access3 = Cred::Bearer(pair3["access_token"].as_str().unwrap().into());
    let (s, _) = app
        .call(Method::POST, "/v1/admin/logout", &access3, None)
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for a in [&access, &access2, &access3] {
        assert_eq!(
            app.call(Method::GET, "/v1/admin/me", a, None).await.0,
            StatusCode::UNAUTHORIZED
        );
    }
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/refresh",
            &Cred::None,
            Some(json!({"refresh_token": pair3["refresh_token"]})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));

    // The audit log has the login, the failures and the logout, with address and
    // user agent, and never a password or a code.
    let auditor = app.session(Role::Auditor, 600).await.0;
    let (s, page) = app
        .call(
            Method::GET,
            "/v1/admin/audit?limit=100",
            &Cred::Bearer(auditor.clone()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let items = page["items"].as_array().unwrap();
    let actions: Vec<&str> = items
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(actions.contains(&"admin.login"), "{actions:?}");
    assert!(actions.contains(&"admin.logout"));
    assert!(
        actions
            .iter()
            .filter(|a| **a == "admin.login_failed")
            .count()
            >= 3
    );
    let login_rec = items.iter().find(|e| e["action"] == "admin.login").unwrap();
    assert_eq!(login_rec["actor"], name);
    assert_eq!(login_rec["ip"], "127.0.0.1");
    assert_eq!(login_rec["user_agent"], "admin-test/1");
    let all = page.to_string();
    assert!(!all.contains(PASSWORD) && !all.contains(&good) && !all.contains(&secret));
    let (s, check) = app
        .call(
            Method::GET,
            "/v1/admin/audit/verify",
            &Cred::Bearer(auditor),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(check["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_per_username_and_per_address() {
    let app = app().await;
    let (_, name, secret) = app.user(Role::Operator).clone();
    for _ in 0..3 {
        let (s, v) = app
            .call(
                Method::POST,
                "/v1/admin/login",
                &Cred::None,
                Some(json!({"username": name, "password": "not the password"})),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNAUTHORIZED, "invalid_credentials")
        );
    }
    // Locked: even the right password and code are refused, with Retry-After.
    let good = totp::current_code(&secret, now_secs()).unwrap();
    let resp = app
        .client
        .post(format!("{}/v1/admin/login", app.base))
        .json(&json!({"username": name, "password": PASSWORD, "totp": good}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry), "{retry}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code(&v), "login_locked");
    // Nothing was consumed: the TOTP step is still unused.
    let u = app.store.get_admin_user(&name).await.unwrap().unwrap();
    assert_eq!(u.totp_last_step, None);

    // Per address: failures spread over many usernames lock the address (8 in all,
    // 3 already counted above).
    for i in 0..5 {
        let (s, _) = app
            .call(
                Method::POST,
                "/v1/admin/login",
                &Cred::None,
                Some(json!({"username": format!("guess{i}"), "password": "x"})),
            )
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (_, aname, asecret) = app.user(Role::Auditor).clone();
    let code_a = totp::current_code(&asecret, now_secs()).unwrap();
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/login",
            &Cred::None,
            Some(json!({"username": aname, "password": PASSWORD, "totp": code_a})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "login_locked")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_are_scoped_and_revocable() {
    let app = app().await;
    let admin_token = Cred::Bearer(app.session(Role::Admin, 600).await.0);
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/api-keys",
            &admin_token,
            Some(json!({"name": "ci reader", "roles": ["auditor"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let key = v["key"].as_str().unwrap().to_owned();
    let id = v["id"].as_str().unwrap().to_owned();
    assert!(key.starts_with("ubtc_ak_"));
    for cred in [Cred::ApiKey(key.clone()), Cred::Bearer(key.clone())] {
        let (s, me) = app.call(Method::GET, "/v1/admin/me", &cred, None).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(me["subject"], "api-key:ci reader");
        assert_eq!(
            app.call(Method::GET, "/v1/admin/audit", &cred, None)
                .await
                .0,
            StatusCode::OK
        );
        assert_eq!(
            app.call(Method::GET, "/v1/webhooks", &cred, None).await.0,
            StatusCode::OK
        );
        let (s, v) = app
            .call(
                Method::POST,
                "/v1/admin/users",
                &cred,
                Some(json!({"username": "eve", "role": "admin", "password": PASSWORD})),
            )
            .await;
        assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
        let (s, _) = app
            .call(Method::POST, "/v1/webhooks", &cred, Some(json!({"url": "https://example.com/h", "secret": "0123456789abcdef", "events": ["validation.signed"]})))
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
    }
    // The listing never shows the key.
    let (_, list) = app
        .call(Method::GET, "/v1/admin/api-keys", &admin_token, None)
        .await;
    assert!(!list.to_string().contains(&key));
    assert_eq!(list["items"][0]["roles"], json!(["auditor"]));
    // Bad input changes nothing.
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/api-keys",
            &admin_token,
            Some(json!({"name": "x", "roles": ["root"]})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_parameter")
    );
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/api-keys",
            &admin_token,
            Some(json!({"name": "x", "roles": []})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_parameter")
    );
    assert_eq!(app.store.list_api_keys().await.unwrap().len(), 1);
    // Revoked: refused at once.
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{id}"),
            &admin_token,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = app
        .call(Method::GET, "/v1/admin/me", &Cred::ApiKey(key), None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, v) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{id}"),
            &admin_token,
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "api_key_not_found"));

    // Users: created without a second factor (the admin receives no TOTP secret),
    // listed without secrets, and a duplicate is refused.
    let (s, created) = app
        .call(
            Method::POST,
            "/v1/admin/users",
            &admin_token,
            Some(json!({"username": "dora", "role": "operator", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert_eq!(created["totp"], false, "{created}");
    assert!(created.get("totp_secret").is_none() && created.get("otpauth_uri").is_none());
    assert!(!created.to_string().contains("otpauth"), "{created}");
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/users",
            &admin_token,
            Some(json!({"username": "dora", "role": "auditor", "password": PASSWORD})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "user_exists"));
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/users",
            &admin_token,
            Some(json!({"username": "erin", "role": "auditor", "password": "short"})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_parameter")
    );
    let (_, users) = app
        .call(Method::GET, "/v1/admin/users", &admin_token, None)
        .await;
    let text = users.to_string();
    assert!(!text.contains("argon2") && !text.contains("enc:v1:"));
    // Disabling ends the user's sessions.
    let (dora_token, _) = {
        let user = app.store.get_admin_user("dora").await.unwrap().unwrap();
        let now = Timestamp::now();
        let sid = app
            .store
            .create_admin_session(
                user.id,
                "dora-rt",
                Timestamp(now.as_millis() + 60_000),
                Timestamp(now.as_millis() + 60_000),
                now,
            )
            .await
            .unwrap();
        let iat = now_secs();
        (
            app.keys
                .sign(&Claims {
                    iss: "ubtc".into(),
                    aud: "ubtc-admin".into(),
                    sub: user.id,
                    name: "dora".into(),
                    role: Role::Operator,
                    sid,
                    iat,
                    exp: iat + 600,
                })
                .unwrap(),
            (),
        )
    };
    assert_eq!(
        app.call(
            Method::GET,
            "/v1/admin/me",
            &Cred::Bearer(dora_token.clone()),
            None
        )
        .await
        .0,
        StatusCode::OK
    );
    let (s, _) = app
        .call(
            Method::POST,
            "/v1/admin/users/dora/disable",
            &admin_token,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        app.call(Method::GET, "/v1/admin/me", &Cred::Bearer(dora_token), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // Each change left an audit record naming its actor.
    let entries = app.store.list_audit(None, 100).await.unwrap();
    for action in [
        "api_key.create",
        "api_key.revoke",
        "user.create",
        "user.disable",
    ] {
        let e = entries
            .iter()
            .find(|e| e.action == action)
            .unwrap_or_else(|| panic!("{action}"));
        assert_eq!(e.actor, "admin-user", "{action}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_allowlist_and_unconfigured_admin() {
    let mut auth = auth_settings();
    auth.allowed_ips = IpAllowlist::parse(&["10.0.0.0/8"]).unwrap();
    let app = app_with(Some(auth), true).await;
    let token = Cred::Bearer(app.session(Role::Admin, 600).await.0);
    for (m, p) in [
        (Method::GET, "/v1/admin/me"),
        (Method::POST, "/v1/admin/login"),
        (Method::GET, "/v1/webhooks"),
    ] {
        let (s, v) = app.call(m, p, &token, Some(json!({}))).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::FORBIDDEN, "ip_not_allowed"),
            "{p}"
        );
    }
    // Public routes are not affected.
    assert_eq!(
        app.call(Method::GET, "/healthz", &Cred::None, None).await.0,
        StatusCode::OK
    );

    let off = app_with(None, false).await;
    let (s, v) = off
        .call(
            Method::GET,
            "/v1/admin/me",
            &Cred::Bearer(BOOTSTRAP_KEY.into()),
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
    // Bootstrap key only (no jwt secret): webhooks work, login is off.
    let boot = app_with(None, true).await;
    let (s, _) = boot
        .call(
            Method::GET,
            "/v1/webhooks",
            &Cred::Bearer(BOOTSTRAP_KEY.into()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = boot
        .call(
            Method::POST,
            "/v1/admin/login",
            &Cred::None,
            Some(json!({"username": "admin-user", "password": PASSWORD})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::FORBIDDEN, "forbidden"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_change_checks_the_old_one_and_ends_other_sessions() {
    let app = app().await;
    let here = Cred::Bearer(app.session(Role::Operator, 600).await.0);
    let elsewhere = Cred::Bearer(app.session(Role::Operator, 600).await.0);
    let path = "/v1/admin/me/password";
    let new_pw = "a brand new passphrase";
    let (s, v) = app
        .call(
            Method::POST,
            path,
            &here,
            Some(json!({"current_password": "wrong one", "new_password": new_pw})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
    let (s, v) = app
        .call(
            Method::POST,
            path,
            &here,
            Some(json!({"current_password": PASSWORD, "new_password": "short"})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::BAD_REQUEST, "invalid_parameter")
    );
    // Nothing changed so far: both sessions live.
    assert_eq!(
        app.call(Method::GET, "/v1/admin/me", &elsewhere, None)
            .await
            .0,
        StatusCode::OK
    );
    let (s, v) = app
        .call(
            Method::POST,
            path,
            &here,
            Some(json!({"current_password": PASSWORD, "new_password": new_pw})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert_eq!(
        app.call(Method::GET, "/v1/admin/me", &here, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Method::GET, "/v1/admin/me", &elsewhere, None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    // The new password logs in, the old one no longer does.
    let (_, name, secret) = app.user(Role::Operator).clone();
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/login",
            &Cred::None,
            Some(json!({"username": name, "password": PASSWORD})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
    let totp_code = totp::current_code(&secret, now_secs()).unwrap();
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/login",
            &Cred::None,
            Some(json!({"username": name, "password": new_pw, "totp": totp_code})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    // Not for API keys; and audited without any value.
    let (s, v) = app
        .call(
            Method::POST,
            path,
            &Cred::Bearer(BOOTSTRAP_KEY.into()),
            Some(json!({"current_password": "x", "new_password": new_pw})),
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::BAD_REQUEST, "bad_request"));
    let entries = app.store.list_audit(None, 100).await.unwrap();
    let rec = entries
        .iter()
        .find(|e| e.action == "user.password_change")
        .unwrap();
    assert_eq!(
        (
            rec.actor.as_str(),
            rec.old_value.as_deref(),
            rec.new_value.as_deref()
        ),
        (name.as_str(), None, None)
    );
    assert!(entries
        .iter()
        .any(|e| e.action == "user.password_change_failed"));
}

impl App {
    /// A login from `xff` (an `X-Forwarded-For` value; the test server trusts
    /// loopback as a proxy when the test says so).
    async fn login_from(&self, xff: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}/v1/admin/login", self.base))
            .header("x-forwarded-for", xff)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = resp.status();
        (s, resp.json().await.unwrap_or(Value::Null))
    }
}

/// Finding 10: the attempt is reserved before Argon2 runs, so 20 concurrent wrong
/// guesses get at most `max_failures` (3 here) evaluated; the rest are refused
/// unevaluated, and the account is then locked even for the right password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_wrong_logins_cannot_exceed_the_limit() {
    let app = app().await;
    let (_, name, secret) = app.user(Role::Operator).clone();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let (client, base, name) = (app.client.clone(), app.base.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{base}/v1/admin/login"))
                .json(&json!({"username": name, "password": format!("wrong guess {i}")}))
                .send()
                .await
                .unwrap()
                .status()
        }));
    }
    let (mut evaluated, mut refused) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            StatusCode::UNAUTHORIZED => evaluated += 1,
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("unexpected {other}"),
        }
    }
    assert!(evaluated <= 3, "{evaluated} guesses were evaluated");
    assert_eq!(evaluated + refused, 20);
    let failed = app
        .store
        .list_audit(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "admin.login_failed")
        .count();
    assert_eq!(failed, evaluated, "only evaluated attempts are audited");
    let good = totp::current_code(&secret, now_secs()).unwrap();
    let (s, v) = app
        .call(
            Method::POST,
            "/v1/admin/login",
            &Cred::None,
            Some(json!({"username": name, "password": PASSWORD, "totp": good})),
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "login_locked")
    );
}

/// Findings 11 and 14: behind a trusted proxy the client is the right-most
/// untrusted X-Forwarded-For entry; a guesser locks only itself (username +
/// address), the owner logs in from elsewhere; failures from many addresses reach
/// the higher per-user threshold; IPv6 addresses count per /64; X-Forwarded-For from
/// an untrusted peer is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lockout_per_user_and_address_behind_a_trusted_proxy() {
    let mut auth = auth_settings();
    auth.trusted_proxies = IpAllowlist::parse(&["127.0.0.0/8"]).unwrap();
    let app = app_with(Some(auth), true).await;
    let (_, op, _) = app.user(Role::Operator).clone();
    let wrong = |name: &str| json!({"username": name, "password": "not the password"});
    // A right password without a code answers totp_required: proof it was checked.
    let right = |name: &str| json!({"username": name, "password": PASSWORD});
    for _ in 0..3 {
        let (s, _) = app.login_from("203.0.113.5", wrong(&op)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    // A forged left part does not help the guesser: the proxy's entry counts.
    let (s, v) = app
        .login_from("198.51.100.99, 203.0.113.5", right(&op))
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "login_locked")
    );
    // The owner, elsewhere, is not locked out.
    let (s, v) = app.login_from("198.51.100.7", right(&op)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "totp_required"),
        "{v}"
    );
    // Three more from a second address reach the per-user threshold (6): now the
    // account is locked from everywhere.
    for _ in 0..3 {
        let (s, _) = app.login_from("203.0.113.6", wrong(&op)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, v) = app.login_from("198.51.100.8", right(&op)).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::TOO_MANY_REQUESTS, "login_locked")
    );
    // The audit record names the client, not the proxy.
    let last = app.store.list_audit(None, 1).await.unwrap();
    assert_eq!(last[0].action, "admin.login_failed");
    assert_eq!(last[0].ip.as_deref(), Some("203.0.113.6"));

    // IPv6: another address of the same /64 shares the lockout, another /64 not.
    let (_, au, _) = app.user(Role::Auditor).clone();
    for _ in 0..3 {
        let (s, _) = app.login_from("2001:db8:1:2::1", wrong(&au)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _) = app.login_from("2001:db8:1:2:ffff::9", right(&au)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let (s, v) = app.login_from("2001:db8:1:3::1", right(&au)).await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "totp_required"));

    // Without trusted proxies the header is ignored: every request is 127.0.0.1.
    let plain = app_with(Some(auth_settings()), true).await;
    let (_, ad, _) = plain.user(Role::Admin).clone();
    for i in 0..3 {
        let (s, _) = plain
            .login_from(&format!("203.0.113.{i}"), wrong(&ad))
            .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _) = plain.login_from("198.51.100.7", right(&ad)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
}

/// Finding 17: a failed login for a name that is no account leaves neither the
/// typed text in the audit log (it may be a password typed into the wrong field)
/// nor a lockout that tells it apart from a real account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_usernames_are_not_recorded_in_clear() {
    let app = app().await;
    let typed = "MySecretPasswordInTheWrongField";
    for _ in 0..3 {
        let (s, v) = app
            .call(
                Method::POST,
                "/v1/admin/login",
                &Cred::None,
                Some(json!({"username": typed, "password": "x"})),
            )
            .await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::UNAUTHORIZED, "invalid_credentials")
        );
    }
    // Locked like a real account would be (no way to tell the two apart).
    let (s, _) = app
        .call(
            Method::POST,
            "/v1/admin/login",
            &Cred::None,
            Some(json!({"username": typed, "password": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let records = app.store.list_audit(None, 100).await.unwrap();
    let failed: Vec<_> = records
        .iter()
        .filter(|e| e.action == "admin.login_failed")
        .collect();
    assert_eq!(failed.len(), 3);
    for e in failed {
        let text = serde_json::to_string(e).unwrap();
        assert!(
            !text.to_lowercase().contains(&typed.to_lowercase()),
            "{text}"
        );
        assert!(e.target.as_deref().unwrap().starts_with("user:#"), "{text}");
    }
    // The same typed name always maps to the same counter key (one target).
    let targets: std::collections::BTreeSet<_> = records
        .iter()
        .filter(|e| e.action == "admin.login_failed")
        .map(|e| e.target.clone())
        .collect();
    assert_eq!(targets.len(), 1);
    // A real account's records keep its name.
    let (_, op, _) = app.user(Role::Operator).clone();
    app.call(
        Method::POST,
        "/v1/admin/login",
        &Cred::None,
        Some(json!({"username": op, "password": "wrong"})),
    )
    .await;
    let last = app.store.list_audit(None, 1).await.unwrap();
    assert_eq!(
        last[0].target.as_deref(),
        Some(format!("user:{op}").as_str())
    );
}

/// Finding 16: a key belongs to the account that created it (disabling the account
/// revokes it), and may expire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_die_with_their_owner_and_expire() {
    let app = app().await;
    let admin_token = Cred::Bearer(app.session(Role::Admin, 600).await.0);
    let create = |body: Value| {
        let admin_token = admin_token.clone();
        let app = &app;
        async move {
            app.call(Method::POST, "/v1/admin/api-keys", &admin_token, Some(body))
                .await
        }
    };
    let (s, owned) = create(json!({"name": "owned", "roles": ["admin"]})).await;
    assert_eq!(s, StatusCode::CREATED, "{owned}");
    let admin_id = app
        .store
        .get_admin_user(&app.user(Role::Admin).1)
        .await
        .unwrap()
        .unwrap()
        .id;
    assert_eq!(owned["owner_id"], json!(admin_id.to_string()));
    let owned_key = Cred::ApiKey(owned["key"].as_str().unwrap().into());
    // A key made by that key belongs to the same account.
    let (s, child) = app
        .call(
            Method::POST,
            "/v1/admin/api-keys",
            &owned_key,
            Some(json!({"name": "child", "roles": ["auditor"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{child}");
    assert_eq!(child["owner_id"], owned["owner_id"]);
    let child_key = Cred::ApiKey(child["key"].as_str().unwrap().into());
    let (s, short) =
        create(json!({"name": "short", "roles": ["auditor"], "expires_in_secs": 1})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(!short["expires_at"].is_null(), "{short}");
    let short_key = Cred::ApiKey(short["key"].as_str().unwrap().into());
    for k in [&owned_key, &child_key, &short_key] {
        assert_eq!(
            app.call(Method::GET, "/v1/admin/me", k, None).await.0,
            StatusCode::OK
        );
    }
    // Bad lifetimes are refused.
    for bad in [json!(0), json!(-5), json!(400_000_000)] {
        let (s, v) =
            create(json!({"name": "bad", "roles": ["auditor"], "expires_in_secs": bad})).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::BAD_REQUEST, "invalid_parameter"),
            "{bad}"
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (s, v) = app
        .call(Method::GET, "/v1/admin/me", &short_key, None)
        .await;
    assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    // Disabling the owner revokes its keys at once (another admin remains).
    app.store
        .create_admin_user(
            &admin::new_account("second-admin", Role::Admin, PASSWORD).unwrap(),
            Timestamp::now(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        app.store
            .disable_admin_user(&app.user(Role::Admin).1, Timestamp::now())
            .await
            .unwrap(),
        ubtc_store::DisableOutcome::Disabled
    );
    for k in [&owned_key, &child_key] {
        let (s, v) = app.call(Method::GET, "/v1/admin/me", k, None).await;
        assert_eq!((s, code(&v)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    }
}

/// Separation of duties, part one: the admin who creates an account never receives
/// its TOTP secret. The user's first password login offers a fresh secret to the user
/// alone (202, no session); confirming a code with a password of their own enrols
/// the account and opens its first session. The secret is stored sealed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_login_enrols_the_second_factor() {
    let app = app().await;
    let admin_token = Cred::Bearer(app.session(Role::Admin, 600).await.0);
    let (s, created) = app
        .call(
            Method::POST,
            "/v1/admin/users",
            &admin_token,
            Some(json!({"username": "dora", "role": "operator", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    assert!(!created.to_string().contains("secret"), "{created}");
    assert_eq!(
        app.store
            .get_admin_user("dora")
            .await
            .unwrap()
            .unwrap()
            .totp_secret,
        None
    );
    let login = |body: Value| {
        let app = &app;
        async move {
            app.call(Method::POST, "/v1/admin/login", &Cred::None, Some(body))
                .await
        }
    };
    let enrol = |body: Value| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                "/v1/admin/login/enrol",
                &Cred::None,
                Some(body),
            )
            .await
        }
    };
    // A wrong password gets nothing, as for any account.
    let (s, v) = login(json!({"username": "dora", "password": "not the password"})).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
    // The right one: an offer, and no session (no token of any kind works yet).
    let (s, offer) = login(json!({"username": "dora", "password": PASSWORD})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{offer}");
    assert_eq!(offer["enrolment_required"], true);
    assert!(offer.get("access_token").is_none() && offer.get("refresh_token").is_none());
    let secret = offer["totp_secret"].as_str().unwrap().to_owned();
    let token = offer["enrolment_token"].as_str().unwrap().to_owned();
    assert!(offer["otpauth_uri"]
        .as_str()
        .unwrap()
        .contains(&format!("secret={secret}")));
    let (s, v) = app
        .call(
            Method::GET,
            "/v1/admin/me",
            &Cred::Bearer(token.clone()),
            None,
        )
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{v}"
    );
    // A second login offers another secret; only one can be confirmed.
    let (_, offer2) = login(json!({"username": "dora", "password": PASSWORD})).await;
    let secret2 = offer2["totp_secret"].as_str().unwrap().to_owned();
    assert_ne!(secret, secret2);

    let good = totp::current_code(&secret, now_secs()).unwrap();
    let wrong = format!("{:06}", (good.parse::<u32>().unwrap() + 1) % 1_000_000);
    let own_pw = "dora's very own passphrase";
    // Refusals change nothing: a forged or altered token, a wrong code, the initial
    // password again, a short password.
    let forged = forge(
        r#"{"alg":"HS256","typ":"JWT"}"#,
        &json!({"iss": "ubtc", "aud": "ubtc-admin#totp-enrol", "sub": uuid::Uuid::nil(),
                "name": "dora", "totp_sealed": "x", "iat": now_secs(), "exp": now_secs() + 60})
        .to_string(),
        Some(b"another-secret-of-at-least-32-bytes!!!"),
    );
    for (label, body, expect) in [
        (
            "forged token",
            json!({"enrolment_token": forged, "totp": good, "new_password": own_pw}),
            (StatusCode::UNAUTHORIZED, "invalid_enrolment"),
        ),
        (
            "tampered token",
            json!({"enrolment_token": tamper_enrolment(&token), "totp": good, "new_password": own_pw}),
            (StatusCode::UNAUTHORIZED, "invalid_enrolment"),
        ),
        (
            "access token",
            json!({"enrolment_token": app.session(Role::Operator, 600).await.0, "totp": good, "new_password": own_pw}),
            (StatusCode::UNAUTHORIZED, "invalid_enrolment"),
        ),
        (
            "wrong code",
            json!({"enrolment_token": token, "totp": wrong, "new_password": own_pw}),
            (StatusCode::UNAUTHORIZED, "invalid_totp"),
        ),
        (
            "code of the other offer",
            json!({"enrolment_token": token, "totp": totp::current_code(&secret2, now_secs()).unwrap(), "new_password": own_pw}),
            (StatusCode::UNAUTHORIZED, "invalid_totp"),
        ),
        (
            "initial password kept",
            json!({"enrolment_token": token, "totp": good, "new_password": PASSWORD}),
            (StatusCode::BAD_REQUEST, "invalid_parameter"),
        ),
        (
            "short password",
            json!({"enrolment_token": token, "totp": good, "new_password": "short"}),
            (StatusCode::BAD_REQUEST, "invalid_parameter"),
        ),
    ] {
        let (s, v) = enrol(body).await;
        assert_eq!((s, code(&v)), expect, "{label}: {v}");
        let row = app.store.get_admin_user("dora").await.unwrap().unwrap();
        assert_eq!(row.totp_secret, None, "{label}");
    }
    // Confirmed: the first session, and the secret stored sealed.
    let (s, pair) =
        enrol(json!({"enrolment_token": token, "totp": good, "new_password": own_pw})).await;
    assert_eq!(s, StatusCode::OK, "{pair}");
    assert_eq!(pair["role"], "operator");
    let access = Cred::Bearer(pair["access_token"].as_str().unwrap().into());
    let (s, me) = app.call(Method::GET, "/v1/admin/me", &access, None).await;
    assert_eq!((s, me["subject"].as_str()), (StatusCode::OK, Some("dora")));
    let row = app.store.get_admin_user("dora").await.unwrap().unwrap();
    let stored = row.totp_secret.clone().unwrap();
    assert!(stored.starts_with(totp::SEALED_PREFIX), "{stored}");
    assert!(!stored.contains(&secret));
    assert_eq!(
        auth_settings().totp_cipher.open("dora", &stored).unwrap(),
        secret
    );
    assert!(totp::TotpCipher::new([0u8; 32])
        .open("dora", &stored)
        .is_err());
    // The other offer can no longer be confirmed.
    let (s, v) = enrol(json!({
        "enrolment_token": offer2["enrolment_token"],
        "totp": totp::current_code(&secret2, now_secs()).unwrap(),
        "new_password": "yet another passphrase",
    }))
    .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::CONFLICT, "already_enrolled"),
        "{v}"
    );
    // From now on: password AND code; the initial password is dead; the enrolment
    // code was consumed.
    let (s, v) = login(json!({"username": "dora", "password": PASSWORD})).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_credentials")
    );
    let (s, v) = login(json!({"username": "dora", "password": own_pw})).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "totp_required"),
        "{v}"
    );
    let (s, v) = login(json!({"username": "dora", "password": own_pw, "totp": good})).await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "invalid_totp"),
        "{v}"
    );
    // The audit log shows the offer and the enrolment, never a secret or a code.
    let entries = app.store.list_audit(None, 100).await.unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e.action.as_str()).collect();
    assert!(
        actions.contains(&"user.totp_enrolment_offered"),
        "{actions:?}"
    );
    assert!(actions.contains(&"user.totp_enrol"), "{actions:?}");
    let all = serde_json::to_string(&entries).unwrap();
    assert!(!all.contains(&secret) && !all.contains(&secret2) && !all.contains(own_pw));
}

/// Changes the `sub` claim of an enrolment token without re-signing it.
fn tamper_enrolment(token: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let parts: Vec<&str> = token.split('.').collect();
    let mut claims: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 3600);
    let body = b64.encode(serde_json::to_vec(&claims).unwrap());
    format!("{}.{}.{}", parts[0], body, parts[2])
}

/// Separation of duties, part two: only an operator logged in with password and TOTP
/// creates operator API keys, and they always expire (30 days at most). An admin —
/// by session or by API key — cannot make one, nor can an operator key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_operator_session_creates_expiring_operator_keys() {
    let app = app().await;
    let admin = Cred::Bearer(app.session(Role::Admin, 600).await.0);
    let operator = Cred::Bearer(
        app.login(Role::Operator).await["access_token"]
            .as_str()
            .unwrap()
            .into(),
    );
    let create = |cred: Cred, body: Value| {
        let app = &app;
        async move {
            app.call(Method::POST, "/v1/admin/api-keys", &cred, Some(body))
                .await
        }
    };
    let (s, admin_key) = create(admin.clone(), json!({"name": "adm", "roles": ["admin"]})).await;
    assert_eq!(s, StatusCode::CREATED);
    let admin_key = Cred::ApiKey(admin_key["key"].as_str().unwrap().into());
    for (label, cred) in [("admin session", &admin), ("admin API key", &admin_key)] {
        for roles in [json!(["operator"]), json!(["operator", "auditor"])] {
            let (s, v) = create(
                cred.clone(),
                json!({"name": "ops", "roles": roles, "expires_in_secs": 3600}),
            )
            .await;
            assert_eq!(
                (s, code(&v)),
                (StatusCode::FORBIDDEN, "role_not_grantable"),
                "{label} {roles}: {v}"
            );
        }
    }
    assert_eq!(app.store.list_api_keys().await.unwrap().len(), 1);

    // The operator's own session: a key with the operator role alone, expiring.
    let (s, k) = create(
        operator.clone(),
        json!({"name": "ops bot", "roles": ["operator"]}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{k}");
    let stored = app
        .store
        .find_api_key(&ubtc_api::admin::auth::secret_hash(
            k["key"].as_str().unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    let lifetime_ms = stored.expires_at.unwrap().as_millis() - stored.created_at.as_millis();
    assert_eq!(lifetime_ms, 30 * 24 * 3600 * 1000, "the maximum by default");
    let op_key = Cred::ApiKey(k["key"].as_str().unwrap().into());
    let (s, me) = app.call(Method::GET, "/v1/admin/me", &op_key, None).await;
    assert_eq!((s, &me["roles"]), (StatusCode::OK, &json!(["operator"])));
    let (s, short) = create(
        operator.clone(),
        json!({"name": "short", "roles": ["operator"], "expires_in_secs": 600}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(!short["expires_at"].is_null());
    for (label, body, expect) in [
        (
            "over 30 days",
            json!({"name": "long", "roles": ["operator"], "expires_in_secs": 31 * 24 * 3600}),
            (StatusCode::BAD_REQUEST, "invalid_parameter"),
        ),
        (
            "with auditor",
            json!({"name": "mixed", "roles": ["operator", "auditor"]}),
            (StatusCode::FORBIDDEN, "role_not_grantable"),
        ),
        (
            "an auditor key",
            json!({"name": "reader", "roles": ["auditor"]}),
            (StatusCode::FORBIDDEN, "role_not_grantable"),
        ),
        (
            "an admin key",
            json!({"name": "boss", "roles": ["admin"]}),
            (StatusCode::FORBIDDEN, "role_not_grantable"),
        ),
    ] {
        let (s, v) = create(operator.clone(), body).await;
        assert_eq!((s, code(&v)), expect, "{label}: {v}");
    }
    // An operator key cannot make keys (no TOTP behind it).
    let (s, v) = create(
        op_key.clone(),
        json!({"name": "child", "roles": ["operator"]}),
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::FORBIDDEN, "role_not_grantable"),
        "{v}"
    );
    assert_eq!(app.store.list_api_keys().await.unwrap().len(), 3);

    // The operator sees and revokes only its own keys.
    let (s, list) = app
        .call(Method::GET, "/v1/admin/api-keys", &operator, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ops bot", "short"]);
    let admin_key_id = app
        .store
        .list_api_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.name == "adm")
        .unwrap()
        .id;
    let (s, v) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{admin_key_id}"),
            &operator,
            None,
        )
        .await;
    assert_eq!((s, code(&v)), (StatusCode::NOT_FOUND, "api_key_not_found"));
    assert_eq!(
        app.call(Method::GET, "/v1/admin/me", &admin_key, None)
            .await
            .0,
        StatusCode::OK
    );
    let (s, _) = app
        .call(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{}", short["id"].as_str().unwrap()),
            &operator,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);

    // An operator key stored without an expiry (made before the rule) is refused.
    let legacy = ubtc_api::admin::auth::random_secret("ubtc_ak_");
    app.store
        .create_api_key(
            &ubtc_store::NewApiKey {
                name: "legacy".into(),
                key_hash: ubtc_api::admin::auth::secret_hash(&legacy),
                roles: vec!["operator".into()],
                created_by: "old".into(),
                owner_id: None,
                expires_at: None,
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
    let (s, v) = app
        .call(Method::GET, "/v1/webhooks", &Cred::ApiKey(legacy), None)
        .await;
    assert_eq!(
        (s, code(&v)),
        (StatusCode::UNAUTHORIZED, "unauthorized"),
        "{v}"
    );
    // While a key the operator made reaches the operator routes.
    let (s, _) = app.call(Method::GET, "/v1/webhooks", &op_key, None).await;
    assert_eq!(s, StatusCode::OK);
}

/// Admin safety: an admin cannot disable itself (by session or by its own key), nor
/// the last enabled admin; nothing changes when refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_cannot_disable_itself_or_the_last_admin() {
    let app = app().await;
    let me = app.user(Role::Admin).1.clone();
    let admin = Cred::Bearer(app.session(Role::Admin, 600).await.0);
    let (_, k) = app
        .call(
            Method::POST,
            "/v1/admin/api-keys",
            &admin,
            Some(json!({"name": "mine", "roles": ["admin"]})),
        )
        .await;
    let own_key = Cred::ApiKey(k["key"].as_str().unwrap().into());
    let disable = |cred: Cred, name: String| {
        let app = &app;
        async move {
            app.call(
                Method::POST,
                &format!("/v1/admin/users/{name}/disable"),
                &cred,
                None,
            )
            .await
        }
    };
    for cred in [admin.clone(), own_key.clone()] {
        let (s, v) = disable(cred, me.clone()).await;
        assert_eq!(
            (s, code(&v)),
            (StatusCode::CONFLICT, "cannot_disable_self"),
            "{v}"
        );
    }
    // A key of the system (no owner, like `ubtc admin create-api-key`) is nobody's
    // account, but the one admin is still the last one.
    let system = ubtc_api::admin::auth::random_secret("ubtc_ak_");
    app.store
        .create_api_key(
            &ubtc_store::NewApiKey {
                name: "system".into(),
                key_hash: ubtc_api::admin::auth::secret_hash(&system),
                roles: vec!["admin".into()],
                created_by: "cli".into(),
                owner_id: None,
                expires_at: None,
            },
            Timestamp::now(),
        )
        .await
        .unwrap();
    let system = Cred::ApiKey(system);
    let (s, v) = disable(system.clone(), me.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "last_admin"), "{v}");
    let row = app.store.get_admin_user(&me).await.unwrap().unwrap();
    assert_eq!(row.disabled_at, None);
    assert_eq!(
        app.call(Method::GET, "/v1/admin/me", &admin, None).await.0,
        StatusCode::OK
    );
    // With a second admin, either can disable the other — but then the survivor is
    // the last one.
    let (s, _) = app
        .call(
            Method::POST,
            "/v1/admin/users",
            &admin,
            Some(json!({"username": "second", "role": "admin", "password": PASSWORD})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = disable(admin.clone(), "second".into()).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(!v["disabled_at"].is_null());
    let (s, v) = disable(system, me.clone()).await;
    assert_eq!((s, code(&v)), (StatusCode::CONFLICT, "last_admin"), "{v}");
    // Other roles are not protected by the rule.
    let (s, _) = disable(admin.clone(), app.user(Role::Auditor).1.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let refused: Vec<_> = app
        .store
        .list_audit(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.action == "user.disable")
        .map(|e| e.target.unwrap_or_default())
        .collect();
    assert_eq!(
        refused.len(),
        2,
        "only the two real disables are audited: {refused:?}"
    );
}
