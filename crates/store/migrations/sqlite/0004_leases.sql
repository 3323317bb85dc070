-- Named leases held by one process at a time (each chain's monitor runs under
-- `monitor:<chain>`). A lease is free once `expires_at` (ms since the epoch) has passed;
-- `token` is a fencing token that grows by one on every acquisition that is not a
-- renewal by the current, unexpired holder.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY NOT NULL,
    holder      TEXT NOT NULL,
    token       INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    acquired_at INTEGER NOT NULL
);
