-- One successor per audit record: two appends that raced on the same predecessor cannot
-- both commit, so the hash chain never forks.
CREATE UNIQUE INDEX audit_logs_prev_hash_uq ON audit_logs (prev_hash);
