-- One index serves the whole claim query in order: a waiting row is due at its
-- not-before time, a held row one millisecond after its lease expires. The claim scans
-- this index from the oldest due key and stops after LIMIT rows, whatever the backlog
-- (the two partial indexes it replaces needed a sort of every due row).
DROP INDEX validations_claim_idx;
DROP INDEX validations_lease_idx;
CREATE INDEX validations_due_idx ON validations
    ((CASE WHEN status = 'signing' THEN lease_expires + 1 ELSE COALESCE(not_before, 0) END), id)
    WHERE status IN ('queued', 'delayed', 'signing');
