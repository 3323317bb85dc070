-- Universal Bitcoin schema, SQLite dialect. Keep in step with ../postgres/0001_init.sql:
-- same tables, columns and meanings; only types and triggers differ.
-- Timestamps are INTEGER unix milliseconds; u128 amounts are decimal TEXT; JSON is TEXT;
-- UUIDs are 16-byte BLOBs (byte order = UUIDv7 time order).

CREATE TABLE validations (
    id                  BLOB PRIMARY KEY NOT NULL,
    chain               TEXT NOT NULL,
    tx_hash             TEXT NOT NULL,
    tx_index            INTEGER NOT NULL,
    payer               TEXT NOT NULL,
    amount_base_units   TEXT NOT NULL,
    message             BLOB NOT NULL,
    block_number        INTEGER NOT NULL,
    block_hash          TEXT NOT NULL,
    confirmations       INTEGER NOT NULL DEFAULT 0,
    status              TEXT NOT NULL CHECK (status IN ('detected','confirmed','queued','delayed',
        'signing','signed','delivered','dropped','rejected','failed')),
    reason_code         TEXT,
    reason_detail       TEXT,
    pending_reject_code   TEXT,
    pending_reject_detail TEXT,
    callback_url        TEXT,
    attempts            INTEGER NOT NULL DEFAULT 0,
    not_before          INTEGER,
    lease_owner         TEXT,
    lease_expires       INTEGER,
    statement_json      TEXT,
    statement_text      TEXT,
    bundle_json         TEXT,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    confirmed_at        INTEGER,
    signed_at           INTEGER
);
CREATE UNIQUE INDEX validations_payment_uq ON validations (tx_hash, chain, tx_index);
CREATE INDEX validations_claim_idx ON validations (not_before) WHERE status IN ('queued', 'delayed');
CREATE INDEX validations_lease_idx ON validations (lease_expires) WHERE status = 'signing';
CREATE INDEX validations_detected_idx ON validations (chain, id) WHERE status = 'detected';
CREATE INDEX validations_status_id_idx ON validations (status, id DESC);
CREATE INDEX validations_chain_id_idx ON validations (chain, id DESC);

CREATE TABLE bitcoin_wallets (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    address     TEXT NOT NULL UNIQUE,
    descriptor  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    label       TEXT,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);

CREATE TABLE chain_tokens (
    chain         TEXT PRIMARY KEY NOT NULL,
    token_address TEXT NOT NULL,
    decimals      INTEGER NOT NULL,
    symbol        TEXT NOT NULL
);

CREATE TABLE audit_logs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT,
    old_value   TEXT,
    new_value   TEXT,
    ip          TEXT,
    user_agent  TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE
);
CREATE INDEX audit_logs_at_idx ON audit_logs (at);
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE ON audit_logs
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only (UPDATE refused)');
END;
CREATE TRIGGER audit_logs_no_delete BEFORE DELETE ON audit_logs
BEGIN
    SELECT RAISE(ABORT, 'audit_logs is append-only (DELETE refused)');
END;

CREATE TABLE validation_metrics (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    validation_id BLOB NOT NULL,
    chain         TEXT NOT NULL,
    signed_at     INTEGER NOT NULL,
    processing_ms INTEGER NOT NULL
);
CREATE INDEX validation_metrics_signed_at_idx ON validation_metrics (signed_at);

CREATE TABLE reserve_ratios (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    taken_at           INTEGER NOT NULL,
    bitcoin_height     INTEGER NOT NULL,
    bitcoin_block_hash TEXT NOT NULL,
    reserve_sats       INTEGER NOT NULL,
    supply_sats        INTEGER NOT NULL,
    ratio_ppm          INTEGER,
    healthy            BOOLEAN NOT NULL,
    stale              BOOLEAN NOT NULL,
    supply_json        TEXT NOT NULL
);
CREATE INDEX reserve_ratios_taken_at_idx ON reserve_ratios (taken_at);

CREATE TABLE webhook_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        BLOB NOT NULL UNIQUE,
    validation_id   BLOB,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    target_url      TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    dead_at         INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX webhook_outbox_validation_idx ON webhook_outbox (validation_id);

CREATE TABLE chain_cursors (
    chain        TEXT PRIMARY KEY NOT NULL,
    block_number INTEGER NOT NULL,
    block_hash   TEXT NOT NULL,
    updated_at   INTEGER NOT NULL
);
