-- Reserve management (issue #7): deposits → mints, burns → releases, guardian
-- approvals of both, and the per-chain per-day volume governor. Rows are never
-- deleted; every change is a guarded state transition (`WHERE state = $from`).
CREATE TABLE reserve_deposits (
    id                    BLOB PRIMARY KEY,
    reserve_address       TEXT NOT NULL,
    txid                  TEXT NOT NULL,
    vout                  INTEGER,
    -- "txid:vout", or "txid" when any output of the transaction to the address counts:
    -- one deposit per outpoint.
    outpoint              TEXT NOT NULL UNIQUE,
    expected_sats         INTEGER NOT NULL CHECK (expected_sats > 0),
    confirmations_needed  INTEGER NOT NULL CHECK (confirmations_needed > 0),
    confirmations         INTEGER NOT NULL DEFAULT 0,
    state                 TEXT NOT NULL,
    created_by            TEXT NOT NULL,
    created_at            INTEGER NOT NULL,
    updated_at            INTEGER NOT NULL
);

CREATE TABLE reserve_mints (
    id            BLOB PRIMARY KEY,
    chain         TEXT NOT NULL,
    to_address    TEXT NOT NULL,
    amount_sats   INTEGER NOT NULL CHECK (amount_sats > 0),
    -- One mint per deposit: a deposit backs exactly one mint.
    deposit_id    BLOB NOT NULL UNIQUE REFERENCES reserve_deposits (id),
    state         TEXT NOT NULL,
    tx_hash       TEXT,
    raw_tx        TEXT,
    last_error    TEXT,
    created_by    TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX reserve_mints_state_idx ON reserve_mints (state, created_at);

CREATE TABLE reserve_burns (
    id               BLOB PRIMARY KEY,
    chain            TEXT NOT NULL,
    amount_sats      INTEGER NOT NULL CHECK (amount_sats > 0),
    redeemer_address TEXT NOT NULL,
    state            TEXT NOT NULL,
    tx_hash          TEXT,
    raw_tx           TEXT,
    last_error       TEXT,
    created_by       TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);
CREATE INDEX reserve_burns_state_idx ON reserve_burns (state, created_at);

CREATE TABLE reserve_releases (
    id           BLOB PRIMARY KEY,
    -- One release per burn.
    burn_id      BLOB NOT NULL UNIQUE REFERENCES reserve_burns (id),
    amount_sats  INTEGER NOT NULL CHECK (amount_sats > 0),
    fee_sats     INTEGER NOT NULL CHECK (fee_sats >= 0),
    psbt         TEXT NOT NULL,
    state        TEXT NOT NULL,
    final_tx     TEXT,
    txid         TEXT,
    last_error   TEXT,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);
CREATE INDEX reserve_releases_state_idx ON reserve_releases (state, created_at);

-- One row per guardian and operation: recording the same approval twice is a no-op.
CREATE TABLE reserve_approvals (
    op_kind      TEXT NOT NULL,
    op_id        BLOB NOT NULL,
    guardian_key TEXT NOT NULL,
    answer       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (op_kind, op_id, guardian_key)
);

-- Volume committed per chain, UTC day (days since the epoch) and kind (mint,
-- release); raised in the transaction that creates the operation, never lowered.
CREATE TABLE reserve_volume (
    chain      TEXT NOT NULL,
    day        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    used_sats  INTEGER NOT NULL,
    PRIMARY KEY (chain, day, kind)
);
