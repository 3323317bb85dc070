-- Reserve attestations signed by the guardians, with their history. A row is written
-- once; the only change ever allowed is setting `reorged_at` (once) when the attested
-- Bitcoin block left the best chain, so a signed document can never be edited or
-- removed, not even by a buggy or compromised application path.
CREATE TABLE attestations (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    digest           TEXT NOT NULL UNIQUE,
    bitcoin_height   INTEGER NOT NULL,
    bitcoin_hash     TEXT NOT NULL,
    reserve_sats     INTEGER NOT NULL,
    supply_sats      INTEGER NOT NULL,
    ratio_ppm        INTEGER,
    registry_version INTEGER NOT NULL,
    utxo_count       INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    stored_at        INTEGER NOT NULL,
    reorged_at       INTEGER,
    body             TEXT NOT NULL
);
CREATE INDEX attestations_live_idx ON attestations (id) WHERE reorged_at IS NULL;

CREATE TRIGGER attestations_no_update BEFORE UPDATE ON attestations
WHEN NOT (OLD.reorged_at IS NULL AND NEW.reorged_at IS NOT NULL
          AND NEW.id IS OLD.id AND NEW.digest IS OLD.digest
          AND NEW.bitcoin_height IS OLD.bitcoin_height AND NEW.bitcoin_hash IS OLD.bitcoin_hash
          AND NEW.reserve_sats IS OLD.reserve_sats AND NEW.supply_sats IS OLD.supply_sats
          AND NEW.ratio_ppm IS OLD.ratio_ppm AND NEW.registry_version IS OLD.registry_version
          AND NEW.utxo_count IS OLD.utxo_count AND NEW.created_at IS OLD.created_at
          AND NEW.stored_at IS OLD.stored_at AND NEW.body IS OLD.body)
BEGIN
    SELECT RAISE(ABORT, 'attestations are immutable (UPDATE refused)');
END;
CREATE TRIGGER attestations_no_delete BEFORE DELETE ON attestations
BEGIN
    SELECT RAISE(ABORT, 'attestations are immutable (DELETE refused)');
END;
