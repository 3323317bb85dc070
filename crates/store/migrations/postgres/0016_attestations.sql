-- Reserve attestations signed by the guardians, with their history. A row is written
-- once; the only change ever allowed is setting `reorged_at` (once) when the attested
-- Bitcoin block left the best chain, so a signed document can never be edited or
-- removed, not even by a buggy or compromised application path.
CREATE TABLE attestations (
    id               BIGSERIAL PRIMARY KEY,
    digest           TEXT NOT NULL UNIQUE,
    bitcoin_height   BIGINT NOT NULL,
    bitcoin_hash     TEXT NOT NULL,
    reserve_sats     BIGINT NOT NULL,
    supply_sats      BIGINT NOT NULL,
    ratio_ppm        BIGINT,
    registry_version BIGINT NOT NULL,
    utxo_count       BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    stored_at        BIGINT NOT NULL,
    reorged_at       BIGINT,
    body             TEXT NOT NULL
);
CREATE INDEX attestations_live_idx ON attestations (id) WHERE reorged_at IS NULL;

CREATE FUNCTION attestations_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.reorged_at IS NULL AND NEW.reorged_at IS NOT NULL
       AND (NEW.id, NEW.digest, NEW.bitcoin_height, NEW.bitcoin_hash, NEW.reserve_sats,
            NEW.supply_sats, NEW.ratio_ppm, NEW.registry_version, NEW.utxo_count,
            NEW.created_at, NEW.stored_at, NEW.body)
           IS NOT DISTINCT FROM
           (OLD.id, OLD.digest, OLD.bitcoin_height, OLD.bitcoin_hash, OLD.reserve_sats,
            OLD.supply_sats, OLD.ratio_ppm, OLD.registry_version, OLD.utxo_count,
            OLD.created_at, OLD.stored_at, OLD.body) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'attestations are immutable (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER attestations_no_update BEFORE UPDATE OR DELETE ON attestations
    FOR EACH ROW EXECUTE FUNCTION attestations_immutable();
CREATE TRIGGER attestations_no_truncate BEFORE TRUNCATE ON attestations
    FOR EACH STATEMENT EXECUTE FUNCTION attestations_immutable();
