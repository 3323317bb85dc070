-- Each reserve address's balance at a Bitcoin block, written by the reserve
-- snapshotter just before the snapshot at that block (so the newest snapshot always
-- finds its balances). Keyed by block hash: a reorganised block keeps its own rows,
-- and two snapshots at the same tip share (and refresh) one set.
CREATE TABLE reserve_address_balances (
    bitcoin_block_hash TEXT NOT NULL,
    bitcoin_height     INTEGER NOT NULL,
    address            TEXT NOT NULL,
    descriptor         TEXT,
    balance_sats       INTEGER NOT NULL CHECK (balance_sats >= 0),
    utxos              INTEGER NOT NULL CHECK (utxos >= 0),
    recorded_at        INTEGER NOT NULL,
    PRIMARY KEY (bitcoin_block_hash, address)
);
