//! Handlers of the admin routes in [`super::ADMIN_ROUTES`]. Authentication and roles
//! are already checked by the guard; every change writes an audit record.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;
use ubtc_core::Timestamp;
use ubtc_store::{
    AdminUser, ApiKey, AuditEntry, DisableOutcome, LockoutPolicy, NewAdminUser, NewApiKey,
    RefreshOutcome,
};

use super::auth::{lockout_addr, random_secret, secret_hash, API_KEY_PREFIX, REFRESH_PREFIX};
use super::token::{Claims, EnrolClaims};
use super::{password, totp, AdminAuth, ClientInfo, Credential, Principal, Role};
use crate::error::{ApiError, ErrorCode};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::ApiState;

fn admin_auth(state: &ApiState) -> Result<&AdminAuth, ApiError> {
    state.admin.as_deref().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Forbidden,
            "accounts are not enabled (admin.jwt_secret)",
        )
    })
}

/// An audit record written by the server for an unauthenticated event (a failed
/// login, a reused refresh token): the actor is `anonymous`, the target what was
/// tried (`user:<name>`, `session:<id>`).
async fn audit_anonymous(
    state: &ApiState,
    client: &ClientInfo,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    Principal {
        subject: "anonymous".to_owned(),
        roles: Vec::new(),
        credential: Credential::Anonymous,
        ip: client.ip,
        user_agent: client.user_agent.clone(),
    }
    .audit(
        state,
        action,
        Some(target.to_owned()),
        None,
        Some(detail.to_string()),
    )
    .await
}

// ----- sessions -----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: String,
    password: String,
    #[serde(default)]
    totp: Option<String>,
}

#[derive(Serialize)]
pub struct TokenPair {
    access_token: String,
    token_type: &'static str,
    expires_in: i64,
    refresh_token: String,
    refresh_expires_in: i64,
    username: String,
    role: Role,
}

fn locked(until: Timestamp, now: Timestamp) -> Response {
    let secs = (until.as_millis() - now.as_millis()).max(0) / 1000 + 1;
    let mut r = ApiError::new(
        ErrorCode::LoginLocked,
        format!("too many failed logins; retry after {secs} s"),
    )
    .into_response();
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        r.headers_mut().insert(header::RETRY_AFTER, v);
    }
    r
}

/// How often at most failure counters are pruned (per process).
const PRUNE_EVERY_MS: i64 = 60_000;

/// The counters one login attempt is reserved against (docs/admin.md, Lockout): the
/// client address over all usernames, the username from this address (the low
/// threshold), and the username from everywhere (a higher one). `name_key` is the
/// account's username, or a keyed hash of what was typed when no such account exists
/// (it may be a password typed into the wrong field).
fn lockout_keys(
    auth: &AdminAuth,
    name_key: &str,
    client: &ClientInfo,
) -> Vec<(String, LockoutPolicy)> {
    let addr = client.ip.map(lockout_addr);
    let mut keys = Vec::with_capacity(3);
    if let Some(a) = &addr {
        keys.push((format!("ip:{a}"), auth.ip_lockout));
    }
    keys.push((
        format!("user:{name_key}@{}", addr.as_deref().unwrap_or("unknown")),
        auth.user_ip_lockout,
    ));
    keys.push((format!("user:{name_key}"), auth.user_lockout));
    keys
}

/// What identifies a tried username in counters and audit records: the name of an
/// existing account, else `#` and a keyed hash of the typed text (never the text).
fn name_key(auth: &AdminAuth, typed: &str, user: Option<&AdminUser>) -> String {
    match user {
        Some(u) => u.username.clone(),
        None => format!(
            "#{}",
            hex::encode(&auth.tokens.keyed_hash("admin-username", typed.as_bytes())[..12])
        ),
    }
}

/// Reserves one attempt on every key BEFORE the password is checked (so parallel
/// guesses cannot exceed the limits). `Err(until)` when one key refuses: the
/// reservations already made are given back, and the refused attempt counts only on
/// the key that refused it (without extending its lockout). `Ok` holds the reserved
/// keys and the lockout this attempt set, if any.
async fn reserve_attempts(
    state: &ApiState,
    keys: &[(String, LockoutPolicy)],
    now: Timestamp,
) -> Result<Result<Option<Timestamp>, Timestamp>, ApiError> {
    let mut set_lock = None;
    for (i, (key, policy)) in keys.iter().enumerate() {
        let a = state.store.reserve_login_attempt(key, policy, now).await?;
        if !a.admitted {
            release_attempts(state, &keys[..i]).await?;
            return Ok(Err(a.locked_until.unwrap_or(now)));
        }
        if a.locked_until.is_some() {
            set_lock = set_lock.max(a.locked_until);
        }
    }
    Ok(Ok(set_lock))
}

async fn release_attempts(
    state: &ApiState,
    keys: &[(String, LockoutPolicy)],
) -> Result<(), ApiError> {
    for (key, policy) in keys {
        state.store.release_login_attempt(key, policy).await?;
    }
    Ok(())
}

/// Deletes failure counters whose window has passed, at most once a minute per
/// process (rows of made-up usernames would otherwise stay for ever).
async fn prune_failures(state: &ApiState, auth: &AdminAuth, now: Timestamp) {
    use std::sync::atomic::Ordering;
    let last = auth.last_prune_ms.load(Ordering::Relaxed);
    if now.as_millis() - last < PRUNE_EVERY_MS
        || auth
            .last_prune_ms
            .compare_exchange(last, now.as_millis(), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
    {
        return;
    }
    let window = auth
        .user_ip_lockout
        .window_ms
        .max(auth.user_lockout.window_ms)
        .max(auth.ip_lockout.window_ms);
    if let Err(e) = state
        .store
        .prune_login_failures(Timestamp(now.as_millis() - window), now)
        .await
    {
        // Housekeeping only: the login answer does not depend on it.
        tracing::warn!(error = %e, "pruning admin login failure counters failed");
    }
}

fn issue_access(
    auth: &AdminAuth,
    user: &AdminUser,
    role: Role,
    sid: uuid::Uuid,
    now: Timestamp,
) -> Result<String, ApiError> {
    let iat = now.as_millis() / 1000;
    auth.tokens
        .sign(&Claims {
            iss: auth.tokens.issuer.clone(),
            aud: auth.tokens.audience.clone(),
            sub: user.id,
            name: user.username.clone(),
            role,
            sid,
            iat,
            exp: iat + auth.access_ttl_secs,
        })
        .map_err(ApiError::internal)
}

pub async fn login(
    State(state): State<ApiState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<LoginBody>,
) -> Result<Response, ApiError> {
    let auth = admin_auth(&state)?;
    // Bounded before anything is looked up or counted: the name becomes a key of the
    // failure counters, and Argon2 would hash any length.
    if body.username.len() > 64 || body.password.len() > password::PASSWORD_MAX_CHARS * 4 {
        return Err(ApiError::new(
            ErrorCode::InvalidBody,
            "username or password too long",
        ));
    }
    let now = Timestamp::now();
    let user = state.store.get_admin_user(&body.username).await?;
    let name_key = name_key(auth, &body.username, user.as_ref());
    let user_key = format!("user:{name_key}");
    let keys = lockout_keys(auth, &name_key, &client);
    // The attempt is counted (as a failure) before the password is checked, so N
    // parallel guesses get at most the limit evaluated; a success gives it back.
    let set_lock = match reserve_attempts(&state, &keys, now).await? {
        Ok(set_lock) => set_lock,
        Err(until) => return Ok(locked(until, now)),
    };
    let phc = user.as_ref().map_or_else(
        || password::dummy_hash().to_owned(),
        |u| u.password_hash.clone(),
    );
    let pw = body.password.clone();
    // Argon2id costs tens of milliseconds of CPU: off the async workers.
    let password_ok = tokio::task::spawn_blocking(move || password::verify_password(&pw, &phc))
        .await
        .map_err(ApiError::internal)?;
    let role = user.as_ref().and_then(|u| u.role.parse::<Role>().ok());
    let (failure, code, message) = match (&user, role) {
        (Some(u), Some(_)) if password_ok && u.disabled_at.is_none() => {
            match (&u.totp_secret, body.totp.as_deref()) {
                // Not enrolled yet: the right password leads to enrolment, never to
                // a session (below).
                (None, _) => (None, ErrorCode::Internal, ""),
                (Some(_), None) => (
                    Some("totp missing"),
                    ErrorCode::TotpRequired,
                    "a TOTP code is required (field totp)",
                ),
                (Some(stored), Some(code)) => {
                    let secret = auth.totp_cipher.open(&u.username, stored).map_err(|e| {
                        tracing::error!(user = %u.username, error = %e, "TOTP secret unreadable");
                        ApiError::internal(e)
                    })?;
                    match totp::verify(&secret, code, now.as_millis() / 1000) {
                        None => (
                            Some("totp wrong"),
                            ErrorCode::InvalidTotp,
                            "wrong TOTP code",
                        ),
                        Some(step) => {
                            if state.store.consume_totp_step(u.id, step).await? {
                                (None, ErrorCode::Internal, "")
                            } else {
                                (
                                    Some("totp replayed"),
                                    ErrorCode::InvalidTotp,
                                    "this TOTP code was already used; wait for the next one",
                                )
                            }
                        }
                    }
                }
            }
        }
        _ => (
            Some("bad password, unknown or disabled user"),
            ErrorCode::InvalidCredentials,
            "wrong username or password",
        ),
    };
    if let Some(reason) = failure {
        if code == ErrorCode::TotpRequired {
            // A missing TOTP code after a right password is a normal first step of a
            // two-step form, not an attack: the reserved attempt is given back.
            release_attempts(&state, &keys).await?;
        } else {
            if let Some(until) = set_lock {
                // An alert for operators: guessing or a forgotten password.
                tracing::warn!(
                    target: "ubtc::admin",
                    user = %user_key,
                    ip = ?client.ip,
                    locked_until = until.as_millis(),
                    "admin login locked after repeated failures"
                );
            }
            audit_anonymous(
                &state,
                &client,
                "admin.login_failed",
                &user_key,
                json!({ "reason": reason, "locked_until": set_lock }),
            )
            .await?;
            prune_failures(&state, auth, now).await;
        }
        return Err(ApiError::new(code, message));
    }
    let (Some(user), Some(role)) = (user, role) else {
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "wrong username or password",
        ));
    };
    // The username-from-this-address counter is cleared; the others only get this
    // attempt back: clearing the address's would let someone with one valid account
    // reset it between guesses at others, and clearing the username's global one
    // would erase a guesser's progress from elsewhere.
    for (key, policy) in &keys {
        if key.contains('@') {
            state.store.clear_login_failures(key).await?;
        } else {
            state.store.release_login_attempt(key, policy).await?;
        }
    }
    if user.totp_secret.is_none() {
        return start_enrolment(&state, auth, &client, &user, role, now).await;
    }
    let pair = open_session(&state, auth, &client, &user, role, now, "admin.login").await?;
    Ok(Json(pair).into_response())
}

/// Opens a login session for `user` (who just proved password and TOTP) and audits
/// it as `action`.
async fn open_session(
    state: &ApiState,
    auth: &AdminAuth,
    client: &ClientInfo,
    user: &AdminUser,
    role: Role,
    now: Timestamp,
    action: &str,
) -> Result<TokenPair, ApiError> {
    let refresh = random_secret(REFRESH_PREFIX);
    let sid = state
        .store
        .create_admin_session(
            user.id,
            &secret_hash(&refresh),
            Timestamp(now.as_millis() + auth.refresh_ttl_secs * 1000),
            Timestamp(now.as_millis() + auth.session_max_secs * 1000),
            now,
        )
        .await?;
    let access = issue_access(auth, user, role, sid, now)?;
    Principal {
        subject: user.username.clone(),
        roles: vec![role],
        credential: Credential::Session {
            user_id: user.id,
            session_id: sid,
        },
        ip: client.ip,
        user_agent: client.user_agent.clone(),
    }
    .audit(state, action, Some(format!("session:{sid}")), None, None)
    .await?;
    Ok(TokenPair {
        access_token: access,
        token_type: "Bearer",
        expires_in: auth.access_ttl_secs,
        refresh_token: refresh,
        refresh_expires_in: auth.refresh_ttl_secs,
        username: user.username.clone(),
        role,
    })
}

// ----- enrolment of the second factor -----

/// How long an enrolment token (and the secret it offers) can be confirmed.
pub const ENROL_TTL_SECS: i64 = 10 * 60;

/// The answer to the first password login of an account without a second factor
/// (`202 Accepted`): no session yet, but a fresh TOTP secret for this user alone, and
/// a token to confirm it with at `POST /v1/admin/login/enrol`.
#[derive(Serialize)]
pub struct EnrolmentOffer {
    enrolment_required: bool,
    enrolment_token: String,
    expires_in: i64,
    /// Shown once, to the user who logged in: put it in an authenticator app.
    totp_secret: String,
    otpauth_uri: String,
    username: String,
    role: Role,
}

async fn start_enrolment(
    state: &ApiState,
    auth: &AdminAuth,
    client: &ClientInfo,
    user: &AdminUser,
    role: Role,
    now: Timestamp,
) -> Result<Response, ApiError> {
    let secret = totp::generate_secret();
    // Each login offers a new secret; the one confirmed first is stored. The token
    // carries it sealed (bound to the username), so the server keeps no state until
    // the confirmation.
    let sealed = auth
        .totp_cipher
        .seal(&user.username, &secret)
        .map_err(ApiError::internal)?;
    let iat = now.as_millis() / 1000;
    let token = auth
        .tokens
        .sign_enrolment(&EnrolClaims {
            iss: auth.tokens.issuer.clone(),
            aud: auth.tokens.enrol_audience(),
            sub: user.id,
            name: user.username.clone(),
            totp_sealed: sealed,
            iat,
            exp: iat + ENROL_TTL_SECS,
        })
        .map_err(ApiError::internal)?;
    Principal {
        subject: user.username.clone(),
        roles: vec![role],
        credential: Credential::Anonymous,
        ip: client.ip,
        user_agent: client.user_agent.clone(),
    }
    .audit(
        state,
        "user.totp_enrolment_offered",
        Some(format!("user:{}", user.username)),
        None,
        None,
    )
    .await?;
    let uri = totp::otpauth_uri(&auth.totp_issuer, &user.username, &secret);
    Ok((
        StatusCode::ACCEPTED,
        Json(EnrolmentOffer {
            enrolment_required: true,
            enrolment_token: token,
            expires_in: ENROL_TTL_SECS,
            totp_secret: secret,
            otpauth_uri: uri,
            username: user.username.clone(),
            role,
        }),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolBody {
    enrolment_token: String,
    totp: String,
    new_password: String,
}

/// Confirms an enrolment: a code of the offered secret proves the user holds it, and
/// the user's own password replaces the initial one (which the admin who created the
/// account knew). Stores both in one conditional write, then opens the account's first
/// session.
pub async fn enrol(
    State(state): State<ApiState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<EnrolBody>,
) -> Result<Json<TokenPair>, ApiError> {
    let auth = admin_auth(&state)?;
    let now = Timestamp::now();
    let invalid = || {
        ApiError::new(
            ErrorCode::InvalidEnrolment,
            "invalid or expired enrolment token: log in with the password again",
        )
    };
    let claims = auth
        .tokens
        .verify_enrolment(&body.enrolment_token, now.as_millis() / 1000)
        .map_err(|_| invalid())?;
    let user = state
        .store
        .get_admin_user_by_id(claims.sub)
        .await?
        .filter(|u| u.username == claims.name && u.disabled_at.is_none())
        .ok_or_else(invalid)?;
    if user.totp_secret.is_some() {
        return Err(ApiError::new(
            ErrorCode::AlreadyEnrolled,
            "this account already has a second factor: log in with password and code",
        ));
    }
    let role = user
        .role
        .parse::<Role>()
        .map_err(|e| ApiError::internal(format!("stored role: {e}")))?;
    let secret = auth
        .totp_cipher
        .open(&user.username, &claims.totp_sealed)
        .map_err(|_| invalid())?;
    password::check_strength(&body.new_password)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, e.to_string()))?;
    let Some(step) = totp::verify(&secret, &body.totp, now.as_millis() / 1000) else {
        return Err(ApiError::new(ErrorCode::InvalidTotp, "wrong TOTP code"));
    };
    let (new_pw, initial) = (body.new_password, user.password_hash.clone());
    let hash = tokio::task::spawn_blocking(move || {
        if password::verify_password(&new_pw, &initial) {
            Ok(None)
        } else {
            password::hash_password(&new_pw).map(Some)
        }
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?
    .ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidParameter,
            "choose a password of your own: new_password must differ from the initial one",
        )
    })?;
    if !state
        .store
        .enrol_admin_totp(user.id, &claims.totp_sealed, &hash, step)
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::AlreadyEnrolled,
            "this account was enrolled meanwhile: log in with password and code",
        ));
    }
    let pair = open_session(&state, auth, &client, &user, role, now, "user.totp_enrol").await?;
    Ok(Json(pair))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefreshBody {
    refresh_token: String,
}

pub async fn refresh(
    State(state): State<ApiState>,
    client: ClientInfo,
    ApiJson(body): ApiJson<RefreshBody>,
) -> Result<Json<TokenPair>, ApiError> {
    let auth = admin_auth(&state)?;
    let now = Timestamp::now();
    let next = random_secret(REFRESH_PREFIX);
    let outcome = state
        .store
        .rotate_refresh_token(
            &secret_hash(&body.refresh_token),
            &secret_hash(&next),
            Timestamp(now.as_millis() + auth.refresh_ttl_secs * 1000),
            now,
        )
        .await?;
    match outcome {
        RefreshOutcome::Rotated { user, session_id } => {
            let role = user
                .role
                .parse::<Role>()
                .map_err(|e| ApiError::internal(format!("stored role: {e}")))?;
            Ok(Json(TokenPair {
                access_token: issue_access(auth, &user, role, session_id, now)?,
                token_type: "Bearer",
                expires_in: auth.access_ttl_secs,
                refresh_token: next,
                refresh_expires_in: auth.refresh_ttl_secs,
                username: user.username,
                role,
            }))
        }
        RefreshOutcome::Reused { session_id } => {
            audit_anonymous(
                &state,
                &client,
                "admin.refresh_reused",
                &format!("session:{session_id}"),
                json!({ "session": session_id, "revoked": true }),
            )
            .await?;
            Err(ApiError::new(
                ErrorCode::RefreshTokenReused,
                "this refresh token was already used; the session is revoked, log in again",
            ))
        }
        RefreshOutcome::Invalid => Err(ApiError::new(
            ErrorCode::Unauthorized,
            "invalid, expired or revoked refresh token",
        )),
    }
}

pub async fn logout(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<StatusCode, ApiError> {
    let Credential::Session { session_id, .. } = principal.credential else {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "logout ends a login session; API keys are revoked with DELETE /v1/admin/api-keys/{id}",
        ));
    };
    state
        .store
        .revoke_admin_session(session_id, "logout", Timestamp::now())
        .await?;
    principal
        .audit(
            &state,
            "admin.logout",
            Some(format!("session:{session_id}")),
            None,
            None,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordBody {
    current_password: String,
    new_password: String,
}

/// Changes the caller's own password (a login session only). The current password is
/// checked (a wrong one counts towards the lockout like a failed login); every other
/// session of the account ends.
pub async fn change_password(
    State(state): State<ApiState>,
    principal: Principal,
    ApiJson(body): ApiJson<PasswordBody>,
) -> Result<StatusCode, ApiError> {
    let auth = admin_auth(&state)?;
    let Credential::Session {
        user_id,
        session_id,
    } = principal.credential
    else {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "a password belongs to an account: log in to change it",
        ));
    };
    let now = Timestamp::now();
    let user = state
        .store
        .get_admin_user_by_id(user_id)
        .await?
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "unknown account"))?;
    let user_key = format!("user:{}", user.username);
    password::check_strength(&body.new_password)
        .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, e.to_string()))?;
    // Reserved before the check, as at login: a stolen session cannot run parallel
    // guesses at the current password either.
    let client = ClientInfo {
        ip: principal.ip,
        user_agent: None,
    };
    let keys = lockout_keys(auth, &user.username, &client);
    if let Err(until) = reserve_attempts(&state, &keys, now).await? {
        return Err(ApiError::new(
            ErrorCode::LoginLocked,
            format!(
                "too many failed attempts; retry after {} s",
                (until.as_millis() - now.as_millis()) / 1000 + 1
            ),
        ));
    }
    let (current, phc, new) = (
        body.current_password,
        user.password_hash.clone(),
        body.new_password,
    );
    let new_hash = tokio::task::spawn_blocking(move || {
        if password::verify_password(&current, &phc) {
            password::hash_password(&new).map(Some)
        } else {
            Ok(None)
        }
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let Some(new_hash) = new_hash else {
        principal
            .audit(
                &state,
                "user.password_change_failed",
                Some(user_key),
                None,
                None,
            )
            .await?;
        return Err(ApiError::new(
            ErrorCode::InvalidCredentials,
            "the current password is wrong",
        ));
    };
    release_attempts(&state, &keys).await?;
    if !state
        .store
        .set_admin_password(user_id, &new_hash, Some(session_id), now)
        .await?
    {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "the account is disabled",
        ));
    }
    // The values are not recorded: not even hashes of passwords go to the audit log.
    principal
        .audit(&state, "user.password_change", Some(user_key), None, None)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn me(principal: Principal) -> Json<Principal> {
    Json(principal)
}

/// The admin settings in force, without secrets.
pub async fn config(State(state): State<ApiState>) -> Json<serde_json::Value> {
    let bootstrap = state.webhook_admin.as_ref().is_some_and(|w| w.has_key());
    let lockout = |p: &ubtc_store::LockoutPolicy| {
        json!({
            "max_failures": p.max_failures,
            "window_secs": p.window_ms / 1000,
            "lockout_secs": p.lockout_ms / 1000,
        })
    };
    Json(match state.admin.as_deref() {
        None => json!({ "accounts": false, "bootstrap_key": bootstrap }),
        Some(a) => json!({
            "accounts": true,
            "bootstrap_key": bootstrap,
            "jwt_issuer": a.tokens.issuer,
            "jwt_audience": a.tokens.audience,
            "access_ttl_secs": a.access_ttl_secs,
            "refresh_ttl_secs": a.refresh_ttl_secs,
            "session_max_secs": a.session_max_secs,
            "allowed_ips": a.allowed_ips.to_strings(),
            "user_ip_lockout": lockout(&a.user_ip_lockout),
            "user_lockout": lockout(&a.user_lockout),
            "trusted_proxies": a.trusted_proxies.to_strings(),
            "cookie_secure": a.cookie_secure,
            "ip_lockout": lockout(&a.ip_lockout),
        }),
    })
}

// ----- users -----

#[derive(Serialize)]
pub struct UserView {
    id: uuid::Uuid,
    username: String,
    role: String,
    totp: bool,
    disabled_at: Option<Timestamp>,
    created_at: Timestamp,
}

impl From<AdminUser> for UserView {
    // Hash and TOTP secret are not copied: never returned.
    fn from(u: AdminUser) -> Self {
        Self {
            id: u.id,
            username: u.username,
            role: u.role,
            totp: u.totp_secret.is_some(),
            disabled_at: u.disabled_at,
            created_at: u.created_at,
        }
    }
}

#[derive(Serialize)]
pub struct Items<T> {
    items: Vec<T>,
}

pub async fn list_users(State(state): State<ApiState>) -> Result<Json<Items<UserView>>, ApiError> {
    let items = state
        .store
        .list_admin_users()
        .await?
        .into_iter()
        .map(UserView::from)
        .collect();
    Ok(Json(Items { items }))
}

/// Username rule: 3–64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_username(name: &str) -> Result<(), String> {
    let ok = (3..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if ok {
        Ok(())
    } else {
        Err(format!(
            "username {name:?}: 3 to 64 characters of a-z, 0-9, '.', '_', '-', starting with a letter or digit"
        ))
    }
}

/// A new account, its password hashed, WITHOUT a second factor: what both
/// `POST /v1/admin/users` and `ubtc admin create-user` store. The TOTP secret is made
/// at the user's first login and shown only there ([`login`], [`enrol`]), so whoever
/// creates the account never sees it; until then the account can open no session.
pub fn new_account(
    username: &str,
    role: Role,
    password_clear: &str,
) -> Result<NewAdminUser, String> {
    check_username(username)?;
    let password_hash = password::hash_password(password_clear).map_err(|e| e.to_string())?;
    Ok(NewAdminUser {
        username: username.to_owned(),
        role: role.as_str().to_owned(),
        password_hash,
        totp_secret: None,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserBody {
    username: String,
    role: String,
    password: String,
}

pub async fn create_user(
    State(state): State<ApiState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateUserBody>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    admin_auth(&state)?;
    let role: Role = body
        .role
        .parse()
        .map_err(|e: String| ApiError::new(ErrorCode::InvalidParameter, e))?;
    let (username, pw) = (body.username.clone(), body.password);
    let new = tokio::task::spawn_blocking(move || new_account(&username, role, &pw))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::new(ErrorCode::InvalidParameter, e))?;
    let user = state
        .store
        .create_admin_user(&new, Timestamp::now())
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UserExists,
                format!("a user named {:?} exists", body.username),
            )
        })?;
    principal
        .audit(
            &state,
            "user.create",
            Some(format!("user:{}", user.username)),
            None,
            Some(json!({ "username": user.username, "role": user.role }).to_string()),
        )
        .await?;
    Ok((StatusCode::CREATED, Json(user.into())))
}

/// The account behind a caller: its session's, or the owner of its API key.
fn caller_account(principal: &Principal) -> Option<uuid::Uuid> {
    match &principal.credential {
        Credential::Session { user_id, .. } => Some(*user_id),
        Credential::ApiKey { owner_id, .. } => *owner_id,
        Credential::BootstrapKey | Credential::Anonymous => None,
    }
}

/// Disables an account (its sessions and owned API keys end with it). Never the
/// caller's own account (a session, or a key it owns), and never the last enabled admin:
/// either would lock the administration out.
pub async fn disable_user(
    State(state): State<ApiState>,
    principal: Principal,
    ApiPath(username): ApiPath<String>,
) -> Result<Json<UserView>, ApiError> {
    let not_found = || {
        ApiError::new(
            ErrorCode::UserNotFound,
            format!("no enabled user named {username:?}"),
        )
    };
    let target = state
        .store
        .get_admin_user(&username)
        .await?
        .filter(|u| u.disabled_at.is_none())
        .ok_or_else(not_found)?;
    if caller_account(&principal) == Some(target.id) {
        return Err(ApiError::new(
            ErrorCode::CannotDisableSelf,
            "an account cannot disable itself; another admin can",
        ));
    }
    match state
        .store
        .disable_admin_user(&username, Timestamp::now())
        .await?
    {
        DisableOutcome::Disabled => {}
        DisableOutcome::NotFound => return Err(not_found()),
        DisableOutcome::LastAdmin => {
            return Err(ApiError::new(
                ErrorCode::LastAdmin,
                format!("{username:?} is the last enabled admin; create another admin first"),
            ))
        }
    }
    principal
        .audit(
            &state,
            "user.disable",
            Some(format!("user:{username}")),
            Some(json!({ "disabled": false }).to_string()),
            Some(json!({ "disabled": true }).to_string()),
        )
        .await?;
    let user = state
        .store
        .get_admin_user(&username)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(user.into()))
}

// ----- API keys -----

#[derive(Serialize)]
pub struct KeyView {
    id: uuid::Uuid,
    name: String,
    roles: Vec<String>,
    created_by: String,
    created_at: Timestamp,
    revoked_at: Option<Timestamp>,
    expires_at: Option<Timestamp>,
    /// The account whose disabling revokes the key; `null`: a key of the system.
    owner_id: Option<uuid::Uuid>,
}

impl From<ApiKey> for KeyView {
    fn from(k: ApiKey) -> Self {
        Self {
            id: k.id,
            name: k.name,
            roles: k.roles,
            created_by: k.created_by,
            created_at: k.created_at,
            revoked_at: k.revoked_at,
            expires_at: k.expires_at,
            owner_id: k.owner_id,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateKeyBody {
    name: String,
    roles: Vec<String>,
    /// Lifetime in seconds; absent: no expiry for admin and auditor keys, the maximum
    /// ([`OPERATOR_KEY_TTL_MAX_SECS`]) for operator keys.
    #[serde(default)]
    expires_in_secs: Option<i64>,
}

/// Longest API key lifetime that can be asked for: ten years.
pub const API_KEY_TTL_MAX_SECS: i64 = 3660 * 24 * 3600;
/// Longest lifetime of an `operator` key: 30 days. Operator keys reach reserve
/// operations without TOTP, so a leaked one must die on its own.
pub const OPERATOR_KEY_TTL_MAX_SECS: i64 = 30 * 24 * 3600;

#[derive(Serialize)]
pub struct CreatedKey {
    #[serde(flatten)]
    key_info: KeyView,
    /// Shown once; only its hash is stored.
    key: String,
}

/// Who may grant which roles (separation of duties):
/// - `operator` keys only by an operator's login session (password and TOTP), with
///   the `operator` role alone and a lifetime of at most [`OPERATOR_KEY_TTL_MAX_SECS`];
///   an admin (session or key) cannot make one, nor can an operator key.
/// - `admin` and `auditor` keys only by an admin.
///
/// Returns the key's expiry.
fn check_grant(
    principal: &Principal,
    roles: &[Role],
    expires_in_secs: Option<i64>,
    now: Timestamp,
) -> Result<Option<Timestamp>, ApiError> {
    let at = |s: i64| Some(Timestamp(now.as_millis() + s * 1000));
    if roles.contains(&Role::Operator) {
        let operator_session = principal.has(Role::Operator)
            && matches!(principal.credential, Credential::Session { .. });
        if !operator_session {
            return Err(ApiError::new(
                ErrorCode::RoleNotGrantable,
                "operator keys are created only by an operator logged in with password and TOTP",
            ));
        }
        if roles.len() > 1 {
            return Err(ApiError::new(
                ErrorCode::RoleNotGrantable,
                "an operator key carries the operator role alone",
            ));
        }
        return match expires_in_secs {
            None => Ok(at(OPERATOR_KEY_TTL_MAX_SECS)),
            Some(s) if (1..=OPERATOR_KEY_TTL_MAX_SECS).contains(&s) => Ok(at(s)),
            Some(_) => Err(ApiError::new(
                ErrorCode::InvalidParameter,
                format!(
                    "expires_in_secs of an operator key must be 1 to {OPERATOR_KEY_TTL_MAX_SECS}"
                ),
            )),
        };
    }
    if !principal.has(Role::Admin) {
        return Err(ApiError::new(
            ErrorCode::RoleNotGrantable,
            "admin and auditor keys are created by an admin",
        ));
    }
    match expires_in_secs {
        None => Ok(None),
        Some(s) if (1..=API_KEY_TTL_MAX_SECS).contains(&s) => Ok(at(s)),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidParameter,
            format!("expires_in_secs must be 1 to {API_KEY_TTL_MAX_SECS}"),
        )),
    }
}

pub async fn create_api_key(
    State(state): State<ApiState>,
    principal: Principal,
    ApiJson(body): ApiJson<CreateKeyBody>,
) -> Result<(StatusCode, Json<CreatedKey>), ApiError> {
    let name = body.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "name must have 1 to 100 characters",
        ));
    }
    if body.roles.is_empty() {
        return Err(ApiError::new(
            ErrorCode::InvalidParameter,
            "roles must name at least one role",
        ));
    }
    let mut roles: Vec<Role> = Vec::new();
    for r in &body.roles {
        let role: Role = r
            .parse()
            .map_err(|e: String| ApiError::new(ErrorCode::InvalidParameter, e))?;
        if !roles.contains(&role) {
            roles.push(role);
        }
    }
    roles.sort();
    let now = Timestamp::now();
    let expires_at = check_grant(&principal, &roles, body.expires_in_secs, now)?;
    // The key belongs to the account behind the caller: disabling that account
    // revokes it (a key made by a key belongs to that key's account).
    let owner_id = caller_account(&principal);
    let key = random_secret(API_KEY_PREFIX);
    let stored = state
        .store
        .create_api_key(
            &NewApiKey {
                name: name.to_owned(),
                key_hash: secret_hash(&key),
                roles: roles.iter().map(|r| r.as_str().to_owned()).collect(),
                created_by: principal.subject.clone(),
                owner_id,
                expires_at,
            },
            now,
        )
        .await?;
    principal
        .audit(
            &state,
            "api_key.create",
            Some(format!("api_key:{}", stored.id)),
            None,
            Some(
                json!({
                    "name": stored.name,
                    "roles": stored.roles,
                    "expires_at": stored.expires_at,
                })
                .to_string(),
            ),
        )
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedKey {
            key_info: stored.into(),
            key,
        }),
    ))
}

/// Admins and auditors see every key; an operator sees only the keys its account owns.
fn visible_key(principal: &Principal, key: &ApiKey) -> bool {
    principal.has(Role::Admin)
        || principal.has(Role::Auditor)
        || (key.owner_id.is_some() && key.owner_id == caller_account(principal))
}

pub async fn list_api_keys(
    State(state): State<ApiState>,
    principal: Principal,
) -> Result<Json<Items<KeyView>>, ApiError> {
    let items = state
        .store
        .list_api_keys()
        .await?
        .into_iter()
        .filter(|k| visible_key(&principal, k))
        .map(KeyView::from)
        .collect();
    Ok(Json(Items { items }))
}

/// Admins revoke any key; an operator revokes the keys its account owns (another
/// key answers `api_key_not_found`, as if it did not exist).
pub async fn revoke_api_key(
    State(state): State<ApiState>,
    principal: Principal,
    ApiPath(raw): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    let id: uuid::Uuid = raw.parse().map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidId,
            format!("{raw:?} is not an API key id (a UUID)"),
        )
    })?;
    let not_found = || {
        ApiError::new(
            ErrorCode::ApiKeyNotFound,
            format!("no active API key with id {id}"),
        )
    };
    if !principal.has(Role::Admin) {
        let keys = state.store.list_api_keys().await?;
        let own = keys
            .iter()
            .find(|k| k.id == id)
            .is_some_and(|k| k.owner_id.is_some() && k.owner_id == caller_account(&principal));
        if !own {
            return Err(not_found());
        }
    }
    if !state.store.revoke_api_key(id, Timestamp::now()).await? {
        return Err(not_found());
    }
    principal
        .audit(
            &state,
            "api_key.revoke",
            Some(format!("api_key:{id}")),
            Some(json!({ "revoked": false }).to_string()),
            Some(json!({ "revoked": true }).to_string()),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

// ----- audit log -----

pub const AUDIT_LIMIT_DEFAULT: u32 = 100;
pub const AUDIT_LIMIT_MAX: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    before: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize)]
pub struct AuditPage {
    items: Vec<AuditEntry>,
    /// Pass as `before` for the next (older) page; `null` on the last page.
    next_before: Option<i64>,
}

pub async fn list_audit(
    State(state): State<ApiState>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>, ApiError> {
    let before = q
        .before
        .as_deref()
        .map(|b| {
            b.parse::<i64>().map_err(|_| {
                ApiError::new(ErrorCode::InvalidParameter, "before must be a record id")
            })
        })
        .transpose()?;
    let limit = match q.limit.as_deref() {
        None => AUDIT_LIMIT_DEFAULT,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=AUDIT_LIMIT_MAX).contains(l))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidParameter,
                    format!("limit must be 1 to {AUDIT_LIMIT_MAX}"),
                )
            })?,
    };
    let items = state.store.list_audit(before, limit).await?;
    let next_before = if items.len() == limit as usize {
        items.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(AuditPage { items, next_before }))
}

pub async fn verify_audit(
    State(state): State<ApiState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let check = state.store.verify_audit_chain().await?;
    Ok(Json(json!({
        "entries": check.entries,
        "first_broken": check.first_broken,
        "ok": check.first_broken.is_none(),
    })))
}
