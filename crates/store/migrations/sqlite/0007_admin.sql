-- Admin accounts, login sessions (refresh-token families), API keys and login-failure
-- counters (issue #7). The audit trail itself is `audit_logs` (0001): its triggers
-- already refuse UPDATE and DELETE.
CREATE TABLE admin_users (
    id             BLOB PRIMARY KEY,
    username       TEXT NOT NULL UNIQUE,
    role           TEXT NOT NULL,
    password_hash  TEXT NOT NULL,
    totp_secret    TEXT,
    -- Last TOTP step accepted: a code of this step or an earlier one is refused.
    totp_last_step INTEGER,
    disabled_at    INTEGER,
    created_at     INTEGER NOT NULL
);

CREATE TABLE admin_sessions (
    id            BLOB PRIMARY KEY,
    user_id       BLOB NOT NULL REFERENCES admin_users (id),
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    revoke_reason TEXT
);
CREATE INDEX admin_sessions_user_idx ON admin_sessions (user_id);

-- Only hashes are stored; a used token stays (used_at set) so its reuse is recognised.
CREATE TABLE admin_refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    session_id BLOB NOT NULL REFERENCES admin_sessions (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX admin_refresh_tokens_session_idx ON admin_refresh_tokens (session_id);

CREATE TABLE admin_api_keys (
    id         BLOB PRIMARY KEY,
    name       TEXT NOT NULL,
    key_hash   TEXT NOT NULL UNIQUE,
    -- Comma-framed list (",operator,auditor,").
    roles      TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    revoked_at INTEGER
);

-- One row per username ("user:alice") or client address ("ip:192.0.2.1").
CREATE TABLE admin_login_failures (
    key          TEXT PRIMARY KEY,
    failures     INTEGER NOT NULL,
    window_start INTEGER NOT NULL,
    locked_until INTEGER
);
