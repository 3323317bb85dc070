-- Universal Bitcoin schema, PostgreSQL dialect. Keep in step with ../sqlite/0001_init.sql:
-- same tables, columns and meanings; only types and triggers differ.
-- Timestamps are BIGINT unix milliseconds; u128 amounts are decimal TEXT; JSON is TEXT.

CREATE TABLE validations (
    id                  UUID PRIMARY KEY,           -- UUIDv7: sorts by creation time
    chain               TEXT NOT NULL,
    tx_hash             TEXT NOT NULL,
    tx_index            BIGINT NOT NULL,
    payer               TEXT NOT NULL,
    amount_base_units   TEXT NOT NULL,
    message             BYTEA NOT NULL,
    block_number        BIGINT NOT NULL,
    block_hash          TEXT NOT NULL,
    confirmations       BIGINT NOT NULL DEFAULT 0,
    status              TEXT NOT NULL,
    reason_code         TEXT,
    reason_detail       TEXT,
    pending_reject_code   TEXT,
    pending_reject_detail TEXT,
    callback_url        TEXT,
    attempts            BIGINT NOT NULL DEFAULT 0,
    not_before          BIGINT,
    lease_owner         TEXT,
    lease_expires       BIGINT,
    statement_json      TEXT,
    statement_text      TEXT,
    bundle_json         TEXT,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    confirmed_at        BIGINT,
    signed_at           BIGINT,
    CONSTRAINT validations_status_check CHECK (status IN ('detected','confirmed','queued','delayed',
        'signing','signed','delivered','dropped','rejected','failed'))
);
-- A payment is unique. tx_hash leads so that lookups by hash alone use this index too.
CREATE UNIQUE INDEX validations_payment_uq ON validations (tx_hash, chain, tx_index);
-- Claim query: only waiting rows and held rows are indexed (partial), so the index stays
-- small however many validations are signed.
CREATE INDEX validations_claim_idx ON validations (not_before) WHERE status IN ('queued', 'delayed');
CREATE INDEX validations_lease_idx ON validations (lease_expires) WHERE status = 'signing';
CREATE INDEX validations_detected_idx ON validations (chain, id) WHERE status = 'detected';
-- Listing, newest first, filtered by status or chain.
CREATE INDEX validations_status_id_idx ON validations (status, id DESC);
CREATE INDEX validations_chain_id_idx ON validations (chain, id DESC);

CREATE TABLE bitcoin_wallets (
    id          BIGSERIAL PRIMARY KEY,
    address     TEXT NOT NULL UNIQUE,
    descriptor  TEXT NOT NULL,
    kind        TEXT NOT NULL,
    label       TEXT,
    created_at  BIGINT NOT NULL,
    retired_at  BIGINT
);

CREATE TABLE chain_tokens (
    chain         TEXT PRIMARY KEY,
    token_address TEXT NOT NULL,
    decimals      BIGINT NOT NULL,
    symbol        TEXT NOT NULL
);

-- Append-only, hash-chained audit trail of admin actions.
CREATE TABLE audit_logs (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
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

CREATE FUNCTION audit_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER audit_logs_no_update BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();
CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only();

-- Time series. Plain tables with a time index (not partitioned): the write rate is a few
-- thousand rows per second at most and retention is not yet decided.
CREATE TABLE validation_metrics (
    id            BIGSERIAL PRIMARY KEY,
    validation_id UUID NOT NULL,
    chain         TEXT NOT NULL,
    signed_at     BIGINT NOT NULL,
    processing_ms BIGINT NOT NULL
);
CREATE INDEX validation_metrics_signed_at_idx ON validation_metrics (signed_at);

CREATE TABLE reserve_ratios (
    id                 BIGSERIAL PRIMARY KEY,
    taken_at           BIGINT NOT NULL,
    bitcoin_height     BIGINT NOT NULL,
    bitcoin_block_hash TEXT NOT NULL,
    reserve_sats       BIGINT NOT NULL,
    supply_sats        BIGINT NOT NULL,
    ratio_ppm          BIGINT,
    healthy            BOOLEAN NOT NULL,
    stale              BOOLEAN NOT NULL,
    supply_json        TEXT NOT NULL
);
CREATE INDEX reserve_ratios_taken_at_idx ON reserve_ratios (taken_at);

-- Webhook outbox: rows are never deleted (delivered or dead rows stay for audit).
CREATE TABLE webhook_outbox (
    id              BIGSERIAL PRIMARY KEY,
    event_id        UUID NOT NULL UNIQUE,
    validation_id   UUID,
    event_type      TEXT NOT NULL,
    payload         TEXT NOT NULL,
    target_url      TEXT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    dead_at         BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX webhook_outbox_due_idx ON webhook_outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX webhook_outbox_validation_idx ON webhook_outbox (validation_id);

CREATE TABLE chain_cursors (
    chain        TEXT PRIMARY KEY,
    block_number BIGINT NOT NULL,
    block_hash   TEXT NOT NULL,
    updated_at   BIGINT NOT NULL
);
