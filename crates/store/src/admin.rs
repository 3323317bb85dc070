//! Admin accounts, login sessions, API keys and login-failure counters (migration
//! 0007).
//!
//! The store keeps what the admin API decides: it hashes nothing and checks no
//! password. Secrets arrive already hashed (Argon2id for passwords, SHA-256 for
//! refresh tokens and API keys, which are random and long). The few operations that
//! must be atomic say so: a TOTP step is consumed at most once, a refresh token is
//! rotated at most once (a second presentation revokes its whole session), a
//! failure counter is bumped in one upsert.
//!
//! [`AdminStore`] is a supertrait of [`crate::Store`], so every `dyn Store` has it.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use ubtc_core::Timestamp;

use crate::StoreResult;

#[derive(Clone, PartialEq, Eq)]
pub struct NewAdminUser {
    pub username: String,
    /// `admin`, `operator` or `auditor` (checked by the caller).
    pub role: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Base32 TOTP secret, when the account has a second factor.
    pub totp_secret: Option<String>,
}

impl std::fmt::Debug for NewAdminUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAdminUser")
            .field("username", &self.username)
            .field("role", &self.role)
            .field("password_hash", &"[redacted]")
            .field(
                "totp_secret",
                &self.totp_secret.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminUser {
    pub id: uuid::Uuid,
    pub username: String,
    pub role: String,
    pub password_hash: String,
    pub totp_secret: Option<String>,
    pub totp_last_step: Option<i64>,
    pub disabled_at: Option<Timestamp>,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for AdminUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminUser")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("role", &self.role)
            .field("password_hash", &"[redacted]")
            .field("totp", &self.totp_secret.is_some())
            .field("disabled_at", &self.disabled_at)
            .finish()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewApiKey {
    pub name: String,
    /// Hex SHA-256 of the key.
    pub key_hash: String,
    pub roles: Vec<String>,
    /// Actor that created it (audit).
    pub created_by: String,
    /// The account the key belongs to: disabling it revokes the key. `None` for keys
    /// of the system (`ubtc admin create-api-key`).
    pub owner_id: Option<uuid::Uuid>,
    /// After this the key is refused; `None`: no expiry.
    pub expires_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: uuid::Uuid,
    pub name: String,
    pub key_hash: String,
    pub roles: Vec<String>,
    pub created_by: String,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    pub owner_id: Option<uuid::Uuid>,
    pub expires_at: Option<Timestamp>,
}

impl ApiKey {
    /// Neither revoked nor expired at `now`.
    pub fn usable(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| e.0 > now.0)
    }
}

/// What presenting a refresh token did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was current: it is now used, and `new_hash` is the session's token.
    Rotated {
        user: AdminUser,
        session_id: uuid::Uuid,
    },
    /// The token had already been rotated: somebody holds a copy. The whole session is
    /// now revoked (every token of the family, and the access tokens it issued).
    Reused { session_id: uuid::Uuid },
    /// Unknown, expired, or of a revoked session or a disabled user. Nothing changed.
    Invalid,
}

/// A login-failure counter after a failure was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginFailures {
    pub failures: u32,
    pub locked_until: Option<Timestamp>,
}

/// The outcome of [`AdminStore::reserve_login_attempt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginAttempt {
    /// The attempt may be evaluated (the counter was within the policy).
    pub admitted: bool,
    /// Attempts counted in the current window (this one included).
    pub failures: u32,
    /// The lockout running after this attempt, if any.
    pub locked_until: Option<Timestamp>,
}

/// What [`AdminStore::disable_admin_user`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DisableOutcome {
    /// The account is now disabled, its sessions and owned API keys revoked.
    Disabled,
    /// No enabled account has that name. Nothing changed.
    NotFound,
    /// It is the last enabled `admin`: disabling it would leave nobody who can manage
    /// accounts. Nothing changed.
    LastAdmin,
}

/// How failures turn into a lockout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures within `window_ms` that lock the key.
    pub max_failures: u32,
    pub window_ms: i64,
    pub lockout_ms: i64,
}

#[async_trait]
pub trait AdminStore: Send + Sync + 'static {
    /// Creates a user; `None` (nothing written) when the username is taken.
    async fn create_admin_user(
        &self,
        new: &NewAdminUser,
        now: Timestamp,
    ) -> StoreResult<Option<AdminUser>>;
    async fn get_admin_user(&self, username: &str) -> StoreResult<Option<AdminUser>>;
    async fn get_admin_user_by_id(&self, id: uuid::Uuid) -> StoreResult<Option<AdminUser>>;
    /// Every user, oldest first.
    async fn list_admin_users(&self) -> StoreResult<Vec<AdminUser>>;
    /// Disables a user and revokes all its sessions and the API keys it owns, in ONE
    /// transaction, unless it is the last enabled `admin`. The check and the change are
    /// serialised with every other disable (PostgreSQL: a transaction-scoped advisory
    /// lock; SQLite: the write transaction), so two admins disabling each other at the
    /// same moment cannot both succeed.
    async fn disable_admin_user(
        &self,
        username: &str,
        now: Timestamp,
    ) -> StoreResult<DisableOutcome>;
    /// Completes the enrolment of an account that has no second factor yet: stores its
    /// (sealed) TOTP secret, its new password hash and the TOTP step just used, in ONE
    /// conditional UPDATE. False (nothing written) when the account is unknown,
    /// disabled, or already enrolled, so of two concurrent enrolments one wins.
    async fn enrol_admin_totp(
        &self,
        user_id: uuid::Uuid,
        totp_secret: &str,
        password_hash: &str,
        step: i64,
    ) -> StoreResult<bool>;
    /// Replaces a user's password hash and revokes every session of the user except
    /// `keep` (the one that asked), in ONE transaction. False when the user is
    /// unknown or disabled (nothing written).
    async fn set_admin_password(
        &self,
        user_id: uuid::Uuid,
        password_hash: &str,
        keep: Option<uuid::Uuid>,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Consumes TOTP step `step` for the user: true only if it is later than every
    /// step consumed before (one conditional UPDATE, so two concurrent logins with the
    /// same code cannot both succeed).
    async fn consume_totp_step(&self, user_id: uuid::Uuid, step: i64) -> StoreResult<bool>;

    // ----- login failures -----

    /// Counts a failure against `key` (one upsert): the counter restarts when its
    /// window has passed, and reaching `policy.max_failures` sets `locked_until`.
    async fn record_login_failure(
        &self,
        key: &str,
        policy: &LockoutPolicy,
        now: Timestamp,
    ) -> StoreResult<LoginFailures>;
    /// Reserves one login attempt against `key` BEFORE the password is checked, in
    /// one upsert, so concurrent attempts are serialised by the row: the attempt is
    /// counted as a failure at once, and `admitted` only while the count stays within
    /// `policy.max_failures` (the attempt that reaches it sets the lockout). While a
    /// lockout runs, attempts are counted but refused and do not extend it; once it
    /// has ended (or the window passed) the count restarts. A successful login
    /// clears the key, or gives the attempt back with [`Self::release_login_attempt`].
    async fn reserve_login_attempt(
        &self,
        key: &str,
        policy: &LockoutPolicy,
        now: Timestamp,
    ) -> StoreResult<LoginAttempt>;
    /// Gives back one reserved attempt (it turned out not to be a failure); lifts the
    /// lockout when the count falls below `policy.max_failures`.
    async fn release_login_attempt(&self, key: &str, policy: &LockoutPolicy) -> StoreResult<()>;
    /// Deletes counters whose window started before `window_start_before` and that
    /// hold no lockout running at `now`. Returns how many rows went.
    async fn prune_login_failures(
        &self,
        window_start_before: Timestamp,
        now: Timestamp,
    ) -> StoreResult<u64>;
    /// The lockout of `key`, if one runs at `now`.
    async fn login_locked_until(&self, key: &str, now: Timestamp)
        -> StoreResult<Option<Timestamp>>;
    /// Forgets the failures of `key` (after a successful login).
    async fn clear_login_failures(&self, key: &str) -> StoreResult<()>;

    // ----- sessions and refresh tokens -----

    /// Opens a session for a user with its first refresh token (hash), in ONE
    /// transaction. Returns the session id.
    async fn create_admin_session(
        &self,
        user_id: uuid::Uuid,
        refresh_hash: &str,
        refresh_expires_at: Timestamp,
        session_expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<uuid::Uuid>;
    /// Presents refresh token `presented_hash`, replacing it by `new_hash` (ONE
    /// transaction; see [`RefreshOutcome`]).
    async fn rotate_refresh_token(
        &self,
        presented_hash: &str,
        new_hash: &str,
        new_expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RefreshOutcome>;
    /// True while the session is neither revoked nor expired and its user is enabled.
    async fn admin_session_active(
        &self,
        session_id: uuid::Uuid,
        now: Timestamp,
    ) -> StoreResult<bool>;
    /// Revokes a session (logout). False when unknown or already revoked.
    async fn revoke_admin_session(
        &self,
        session_id: uuid::Uuid,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<bool>;

    // ----- API keys -----

    async fn create_api_key(&self, new: &NewApiKey, now: Timestamp) -> StoreResult<ApiKey>;
    /// The key with this hash, revoked or not.
    async fn find_api_key(&self, key_hash: &str) -> StoreResult<Option<ApiKey>>;
    /// Every key, oldest first.
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKey>>;
    /// False when unknown or already revoked.
    async fn revoke_api_key(&self, id: uuid::Uuid, now: Timestamp) -> StoreResult<bool>;
}

pub(crate) fn roles_column(roles: &[String]) -> String {
    format!(",{},", roles.join(","))
}

pub(crate) type UserRow = (
    uuid::Uuid,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    i64,
);

pub(crate) fn user(r: UserRow) -> AdminUser {
    AdminUser {
        id: r.0,
        username: r.1,
        role: r.2,
        password_hash: r.3,
        totp_secret: r.4,
        totp_last_step: r.5,
        disabled_at: r.6.map(Timestamp),
        created_at: Timestamp(r.7),
    }
}

pub(crate) type KeyRow = (
    uuid::Uuid,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<uuid::Uuid>,
    Option<i64>,
);

pub(crate) fn api_key(r: KeyRow) -> ApiKey {
    ApiKey {
        id: r.0,
        name: r.1,
        key_hash: r.2,
        roles: crate::webhooks::parse_events(&r.3),
        created_by: r.4,
        created_at: Timestamp(r.5),
        revoked_at: r.6.map(Timestamp),
        owner_id: r.7,
        expires_at: r.8.map(Timestamp),
    }
}

macro_rules! user_columns {
    () => {
        "id, username, role, password_hash, totp_secret, totp_last_step, disabled_at, created_at"
    };
}
macro_rules! key_columns {
    () => {
        "id, name, key_hash, roles, created_by, created_at, revoked_at, owner_id, expires_at"
    };
}

pub(crate) const INSERT_USER: &str = "INSERT INTO admin_users (id, username, role, \
     password_hash, totp_secret, created_at) VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (username) DO NOTHING";
pub(crate) const USER_BY_NAME: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM admin_users WHERE username = $1"
);
pub(crate) const USER_BY_ID: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM admin_users WHERE id = $1"
);
pub(crate) const LIST_USERS: &str = concat!(
    "SELECT ",
    user_columns!(),
    " FROM admin_users ORDER BY created_at, username"
);
pub(crate) const ENABLED_USER: &str =
    "SELECT id, role FROM admin_users WHERE username = $1 AND disabled_at IS NULL";
pub(crate) const ENABLED_ADMINS: &str =
    "SELECT COUNT(*) FROM admin_users WHERE role = 'admin' AND disabled_at IS NULL";
pub(crate) const DISABLE_USER: &str = "UPDATE admin_users SET disabled_at = $2 \
     WHERE id = $1 AND disabled_at IS NULL";
pub(crate) const ENROL_TOTP: &str = "UPDATE admin_users SET totp_secret = $2, \
     password_hash = $3, totp_last_step = $4 \
     WHERE id = $1 AND totp_secret IS NULL AND disabled_at IS NULL";
pub(crate) const REVOKE_USER_KEYS: &str = "UPDATE admin_api_keys SET revoked_at = $2 \
     WHERE owner_id = $1 AND revoked_at IS NULL";
pub(crate) const REVOKE_USER_SESSIONS: &str = "UPDATE admin_sessions SET revoked_at = $2, \
     revoke_reason = 'user disabled' WHERE user_id = $1 AND revoked_at IS NULL";
pub(crate) const SET_PASSWORD: &str = "UPDATE admin_users SET password_hash = $2 \
     WHERE id = $1 AND disabled_at IS NULL";
pub(crate) const OPEN_SESSIONS: &str =
    "SELECT id FROM admin_sessions WHERE user_id = $1 AND revoked_at IS NULL";
pub(crate) const CONSUME_TOTP: &str = "UPDATE admin_users SET totp_last_step = $2 \
     WHERE id = $1 AND (totp_last_step IS NULL OR totp_last_step < $2)";

// $1 key, $2 now, $3 window start (now - window), $4 max failures, $5 lock until.
pub(crate) const RECORD_FAILURE: &str = "INSERT INTO admin_login_failures (key, failures, \
     window_start, locked_until) VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN $5 ELSE NULL END) \
     ON CONFLICT (key) DO UPDATE SET \
     failures = CASE WHEN admin_login_failures.window_start < $3 THEN 1 \
         ELSE admin_login_failures.failures + 1 END, \
     window_start = CASE WHEN admin_login_failures.window_start < $3 THEN $2 \
         ELSE admin_login_failures.window_start END, \
     locked_until = CASE WHEN (CASE WHEN admin_login_failures.window_start < $3 THEN 1 \
         ELSE admin_login_failures.failures + 1 END) >= $4 THEN $5 \
         ELSE admin_login_failures.locked_until END \
     RETURNING failures, locked_until";
// $1 key, $2 now, $3 window start (now - window), $4 max failures, $5 lock until.
// Three cases for an existing row: a lockout runs (count, keep window and lockout);
// the window passed or an earlier lockout ended (restart at 1); else count on.
pub(crate) const RESERVE_ATTEMPT: &str = "INSERT INTO admin_login_failures (key, failures, \
     window_start, locked_until) VALUES ($1, 1, $2, CASE WHEN 1 >= $4 THEN $5 ELSE NULL END) \
     ON CONFLICT (key) DO UPDATE SET \
     failures = CASE WHEN admin_login_failures.locked_until > $2 \
             THEN admin_login_failures.failures + 1 \
         WHEN admin_login_failures.window_start < $3 \
             OR admin_login_failures.locked_until IS NOT NULL THEN 1 \
         ELSE admin_login_failures.failures + 1 END, \
     window_start = CASE WHEN admin_login_failures.locked_until > $2 \
             THEN admin_login_failures.window_start \
         WHEN admin_login_failures.window_start < $3 \
             OR admin_login_failures.locked_until IS NOT NULL THEN $2 \
         ELSE admin_login_failures.window_start END, \
     locked_until = CASE WHEN admin_login_failures.locked_until > $2 \
             THEN admin_login_failures.locked_until \
         WHEN admin_login_failures.window_start < $3 \
             OR admin_login_failures.locked_until IS NOT NULL \
             THEN CASE WHEN 1 >= $4 THEN $5 ELSE NULL END \
         WHEN admin_login_failures.failures + 1 >= $4 THEN $5 \
         ELSE NULL END \
     RETURNING failures, locked_until";
// $1 key, $2 max failures. Right-hand sides see the old row on both backends.
pub(crate) const RELEASE_ATTEMPT: &str = "UPDATE admin_login_failures SET \
     failures = failures - 1, \
     locked_until = CASE WHEN failures - 1 < $2 THEN NULL ELSE locked_until END \
     WHERE key = $1 AND failures > 0";
pub(crate) const PRUNE_FAILURES: &str = "DELETE FROM admin_login_failures \
     WHERE window_start < $1 AND (locked_until IS NULL OR locked_until <= $2)";
pub(crate) const LOCKED_UNTIL: &str =
    "SELECT locked_until FROM admin_login_failures WHERE key = $1 AND locked_until > $2";
pub(crate) const CLEAR_FAILURES: &str = "DELETE FROM admin_login_failures WHERE key = $1";

pub(crate) const INSERT_SESSION: &str = "INSERT INTO admin_sessions (id, user_id, created_at, \
     expires_at) VALUES ($1, $2, $3, $4)";
pub(crate) const INSERT_REFRESH: &str = "INSERT INTO admin_refresh_tokens (token_hash, \
     session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)";
pub(crate) const USE_REFRESH: &str = "UPDATE admin_refresh_tokens SET used_at = $2 \
     WHERE token_hash = $1 AND used_at IS NULL RETURNING session_id, expires_at";
pub(crate) const REFRESH_SESSION: &str =
    "SELECT session_id FROM admin_refresh_tokens WHERE token_hash = $1";
pub(crate) const SESSION_USER: &str =
    "SELECT s.revoked_at, s.expires_at, u.id, u.username, u.role, u.password_hash, \
     u.totp_secret, u.totp_last_step, u.disabled_at, u.created_at \
     FROM admin_sessions s JOIN admin_users u ON u.id = s.user_id WHERE s.id = $1";
pub(crate) const SESSION_ACTIVE: &str = "SELECT COUNT(*) FROM admin_sessions s \
     JOIN admin_users u ON u.id = s.user_id WHERE s.id = $1 AND s.revoked_at IS NULL \
     AND s.expires_at > $2 AND u.disabled_at IS NULL";
pub(crate) const REVOKE_SESSION: &str = "UPDATE admin_sessions SET revoked_at = $2, \
     revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL";

pub(crate) const INSERT_KEY: &str = "INSERT INTO admin_api_keys (id, name, key_hash, roles, \
     created_by, created_at, owner_id, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";
pub(crate) const KEY_BY_HASH: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM admin_api_keys WHERE key_hash = $1"
);
pub(crate) const LIST_KEYS: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM admin_api_keys ORDER BY created_at, id"
);
pub(crate) const REVOKE_KEY: &str =
    "UPDATE admin_api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL";

type SessionUserRow = (
    Option<i64>,
    i64,
    uuid::Uuid,
    String,
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    i64,
);

pub(crate) fn session_user(r: SessionUserRow) -> (Option<i64>, i64, AdminUser) {
    (r.0, r.1, user((r.2, r.3, r.4, r.5, r.6, r.7, r.8, r.9)))
}

/// Writes `impl AdminStore for $store` (expanded next to `impl_store!`, whose
/// `writer()`, `reader()` and `BEGIN_WRITE` it uses). `$admin_lock`: a statement that
/// serialises changes to the set of enabled admins within a write transaction, when
/// `BEGIN_WRITE` alone does not (PostgreSQL's `BEGIN` does not; SQLite's
/// `BEGIN IMMEDIATE` does).
macro_rules! impl_admin_store {
    ($store:ty, $admin_lock:expr) => {
        #[async_trait::async_trait]
        impl $crate::admin::AdminStore for $store {
            async fn create_admin_user(
                &self,
                new: &$crate::admin::NewAdminUser,
                now: Timestamp,
            ) -> StoreResult<Option<$crate::admin::AdminUser>> {
                let id = uuid::Uuid::now_v7();
                let done = sqlx::query($crate::admin::INSERT_USER)
                    .bind(id)
                    .bind(new.username.as_str())
                    .bind(new.role.as_str())
                    .bind(new.password_hash.as_str())
                    .bind(new.totp_secret.as_deref())
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                if done.rows_affected() != 1 {
                    return Ok(None);
                }
                Ok(Some($crate::admin::AdminUser {
                    id,
                    username: new.username.clone(),
                    role: new.role.clone(),
                    password_hash: new.password_hash.clone(),
                    totp_secret: new.totp_secret.clone(),
                    totp_last_step: None,
                    disabled_at: None,
                    created_at: now,
                }))
            }

            async fn get_admin_user(
                &self,
                username: &str,
            ) -> StoreResult<Option<$crate::admin::AdminUser>> {
                let row: Option<$crate::admin::UserRow> =
                    sqlx::query_as($crate::admin::USER_BY_NAME)
                        .bind(username)
                        .fetch_optional(self.reader())
                        .await?;
                Ok(row.map($crate::admin::user))
            }

            async fn get_admin_user_by_id(
                &self,
                id: uuid::Uuid,
            ) -> StoreResult<Option<$crate::admin::AdminUser>> {
                let row: Option<$crate::admin::UserRow> = sqlx::query_as($crate::admin::USER_BY_ID)
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?;
                Ok(row.map($crate::admin::user))
            }

            async fn list_admin_users(&self) -> StoreResult<Vec<$crate::admin::AdminUser>> {
                let rows: Vec<$crate::admin::UserRow> = sqlx::query_as($crate::admin::LIST_USERS)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map($crate::admin::user).collect())
            }

            async fn disable_admin_user(
                &self,
                username: &str,
                now: Timestamp,
            ) -> StoreResult<$crate::admin::DisableOutcome> {
                use $crate::admin::DisableOutcome;
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                if let Some(lock) = $admin_lock {
                    sqlx::query(lock).execute(&mut *tx).await?;
                }
                let target: Option<(uuid::Uuid, String)> =
                    sqlx::query_as($crate::admin::ENABLED_USER)
                        .bind(username)
                        .fetch_optional(&mut *tx)
                        .await?;
                let Some((id, role)) = target else {
                    return Ok(DisableOutcome::NotFound);
                };
                if role == "admin" {
                    let admins: i64 = sqlx::query_scalar($crate::admin::ENABLED_ADMINS)
                        .fetch_one(&mut *tx)
                        .await?;
                    if admins <= 1 {
                        return Ok(DisableOutcome::LastAdmin);
                    }
                }
                sqlx::query($crate::admin::DISABLE_USER)
                    .bind(id)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query($crate::admin::REVOKE_USER_SESSIONS)
                    .bind(id)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query($crate::admin::REVOKE_USER_KEYS)
                    .bind(id)
                    .bind(now.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(DisableOutcome::Disabled)
            }

            async fn enrol_admin_totp(
                &self,
                user_id: uuid::Uuid,
                totp_secret: &str,
                password_hash: &str,
                step: i64,
            ) -> StoreResult<bool> {
                let done = sqlx::query($crate::admin::ENROL_TOTP)
                    .bind(user_id)
                    .bind(totp_secret)
                    .bind(password_hash)
                    .bind(step)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn set_admin_password(
                &self,
                user_id: uuid::Uuid,
                password_hash: &str,
                keep: Option<uuid::Uuid>,
                now: Timestamp,
            ) -> StoreResult<bool> {
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                let done = sqlx::query($crate::admin::SET_PASSWORD)
                    .bind(user_id)
                    .bind(password_hash)
                    .execute(&mut *tx)
                    .await?;
                if done.rows_affected() != 1 {
                    return Ok(false);
                }
                let all: Vec<uuid::Uuid> = sqlx::query_scalar($crate::admin::OPEN_SESSIONS)
                    .bind(user_id)
                    .fetch_all(&mut *tx)
                    .await?;
                for sid in all.into_iter().filter(|s| Some(*s) != keep) {
                    sqlx::query($crate::admin::REVOKE_SESSION)
                        .bind(sid)
                        .bind(now.0)
                        .bind("password changed")
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
                Ok(true)
            }

            async fn consume_totp_step(&self, user_id: uuid::Uuid, step: i64) -> StoreResult<bool> {
                let done = sqlx::query($crate::admin::CONSUME_TOTP)
                    .bind(user_id)
                    .bind(step)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn record_login_failure(
                &self,
                key: &str,
                policy: &$crate::admin::LockoutPolicy,
                now: Timestamp,
            ) -> StoreResult<$crate::admin::LoginFailures> {
                let (failures, locked): (i64, Option<i64>) =
                    sqlx::query_as($crate::admin::RECORD_FAILURE)
                        .bind(key)
                        .bind(now.0)
                        .bind(now.0.saturating_sub(policy.window_ms))
                        .bind(i64::from(policy.max_failures))
                        .bind(now.0.saturating_add(policy.lockout_ms))
                        .fetch_one(self.writer())
                        .await?;
                Ok($crate::admin::LoginFailures {
                    failures: u32::try_from(failures).unwrap_or(u32::MAX),
                    locked_until: locked.map(Timestamp),
                })
            }

            async fn reserve_login_attempt(
                &self,
                key: &str,
                policy: &$crate::admin::LockoutPolicy,
                now: Timestamp,
            ) -> StoreResult<$crate::admin::LoginAttempt> {
                let (failures, locked): (i64, Option<i64>) =
                    sqlx::query_as($crate::admin::RESERVE_ATTEMPT)
                        .bind(key)
                        .bind(now.0)
                        .bind(now.0.saturating_sub(policy.window_ms))
                        .bind(i64::from(policy.max_failures))
                        .bind(now.0.saturating_add(policy.lockout_ms))
                        .fetch_one(self.writer())
                        .await?;
                Ok($crate::admin::LoginAttempt {
                    admitted: failures <= i64::from(policy.max_failures),
                    failures: u32::try_from(failures).unwrap_or(u32::MAX),
                    locked_until: locked.map(Timestamp),
                })
            }

            async fn release_login_attempt(
                &self,
                key: &str,
                policy: &$crate::admin::LockoutPolicy,
            ) -> StoreResult<()> {
                sqlx::query($crate::admin::RELEASE_ATTEMPT)
                    .bind(key)
                    .bind(i64::from(policy.max_failures))
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn prune_login_failures(
                &self,
                window_start_before: Timestamp,
                now: Timestamp,
            ) -> StoreResult<u64> {
                let done = sqlx::query($crate::admin::PRUNE_FAILURES)
                    .bind(window_start_before.0)
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected())
            }

            async fn login_locked_until(
                &self,
                key: &str,
                now: Timestamp,
            ) -> StoreResult<Option<Timestamp>> {
                let until: Option<Option<i64>> = sqlx::query_scalar($crate::admin::LOCKED_UNTIL)
                    .bind(key)
                    .bind(now.0)
                    .fetch_optional(self.reader())
                    .await?;
                Ok(until.flatten().map(Timestamp))
            }

            async fn clear_login_failures(&self, key: &str) -> StoreResult<()> {
                sqlx::query($crate::admin::CLEAR_FAILURES)
                    .bind(key)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn create_admin_session(
                &self,
                user_id: uuid::Uuid,
                refresh_hash: &str,
                refresh_expires_at: Timestamp,
                session_expires_at: Timestamp,
                now: Timestamp,
            ) -> StoreResult<uuid::Uuid> {
                let id = uuid::Uuid::now_v7();
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                sqlx::query($crate::admin::INSERT_SESSION)
                    .bind(id)
                    .bind(user_id)
                    .bind(now.0)
                    .bind(session_expires_at.0)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query($crate::admin::INSERT_REFRESH)
                    .bind(refresh_hash)
                    .bind(id)
                    .bind(now.0)
                    .bind(refresh_expires_at.0)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(id)
            }

            async fn rotate_refresh_token(
                &self,
                presented_hash: &str,
                new_hash: &str,
                new_expires_at: Timestamp,
                now: Timestamp,
            ) -> StoreResult<$crate::admin::RefreshOutcome> {
                use $crate::admin::RefreshOutcome;
                let mut tx = self.writer().begin_with(Self::BEGIN_WRITE).await?;
                // The conditional UPDATE is the claim: of two concurrent presentations
                // of one token, exactly one marks it used.
                let used: Option<(uuid::Uuid, i64)> = sqlx::query_as($crate::admin::USE_REFRESH)
                    .bind(presented_hash)
                    .bind(now.0)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some((session_id, token_expires)) = used else {
                    let known: Option<uuid::Uuid> =
                        sqlx::query_scalar($crate::admin::REFRESH_SESSION)
                            .bind(presented_hash)
                            .fetch_optional(&mut *tx)
                            .await?;
                    return match known {
                        Some(session_id) => {
                            sqlx::query($crate::admin::REVOKE_SESSION)
                                .bind(session_id)
                                .bind(now.0)
                                .bind("refresh token reused")
                                .execute(&mut *tx)
                                .await?;
                            tx.commit().await?;
                            Ok(RefreshOutcome::Reused { session_id })
                        }
                        None => Ok(RefreshOutcome::Invalid),
                    };
                };
                let row = sqlx::query_as($crate::admin::SESSION_USER)
                    .bind(session_id)
                    .fetch_optional(&mut *tx)
                    .await?;
                let Some((revoked, session_expires, user)) = row.map($crate::admin::session_user)
                else {
                    return Ok(RefreshOutcome::Invalid);
                };
                if revoked.is_some()
                    || session_expires <= now.0
                    || token_expires <= now.0
                    || user.disabled_at.is_some()
                {
                    // Rolled back: an invalid presentation changes nothing.
                    return Ok(RefreshOutcome::Invalid);
                }
                sqlx::query($crate::admin::INSERT_REFRESH)
                    .bind(new_hash)
                    .bind(session_id)
                    .bind(now.0)
                    .bind(new_expires_at.0.min(session_expires))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                Ok(RefreshOutcome::Rotated { user, session_id })
            }

            async fn admin_session_active(
                &self,
                session_id: uuid::Uuid,
                now: Timestamp,
            ) -> StoreResult<bool> {
                let n: i64 = sqlx::query_scalar($crate::admin::SESSION_ACTIVE)
                    .bind(session_id)
                    .bind(now.0)
                    .fetch_one(self.reader())
                    .await?;
                Ok(n > 0)
            }

            async fn revoke_admin_session(
                &self,
                session_id: uuid::Uuid,
                reason: &str,
                now: Timestamp,
            ) -> StoreResult<bool> {
                let done = sqlx::query($crate::admin::REVOKE_SESSION)
                    .bind(session_id)
                    .bind(now.0)
                    .bind(reason)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn create_api_key(
                &self,
                new: &$crate::admin::NewApiKey,
                now: Timestamp,
            ) -> StoreResult<$crate::admin::ApiKey> {
                let id = uuid::Uuid::now_v7();
                sqlx::query($crate::admin::INSERT_KEY)
                    .bind(id)
                    .bind(new.name.as_str())
                    .bind(new.key_hash.as_str())
                    .bind($crate::admin::roles_column(&new.roles))
                    .bind(new.created_by.as_str())
                    .bind(now.0)
                    .bind(new.owner_id)
                    .bind(new.expires_at.map(|t| t.0))
                    .execute(self.writer())
                    .await?;
                Ok($crate::admin::ApiKey {
                    id,
                    name: new.name.clone(),
                    key_hash: new.key_hash.clone(),
                    roles: new.roles.clone(),
                    created_by: new.created_by.clone(),
                    created_at: now,
                    revoked_at: None,
                    owner_id: new.owner_id,
                    expires_at: new.expires_at,
                })
            }

            async fn find_api_key(
                &self,
                key_hash: &str,
            ) -> StoreResult<Option<$crate::admin::ApiKey>> {
                let row: Option<$crate::admin::KeyRow> = sqlx::query_as($crate::admin::KEY_BY_HASH)
                    .bind(key_hash)
                    .fetch_optional(self.reader())
                    .await?;
                Ok(row.map($crate::admin::api_key))
            }

            async fn list_api_keys(&self) -> StoreResult<Vec<$crate::admin::ApiKey>> {
                let rows: Vec<$crate::admin::KeyRow> = sqlx::query_as($crate::admin::LIST_KEYS)
                    .fetch_all(self.reader())
                    .await?;
                Ok(rows.into_iter().map($crate::admin::api_key).collect())
            }

            async fn revoke_api_key(&self, id: uuid::Uuid, now: Timestamp) -> StoreResult<bool> {
                let done = sqlx::query($crate::admin::REVOKE_KEY)
                    .bind(id)
                    .bind(now.0)
                    .execute(self.writer())
                    .await?;
                Ok(done.rows_affected() == 1)
            }
        }
    };
}
pub(crate) use impl_admin_store;
