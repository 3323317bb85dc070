-- Registered webhook consumers and one delivery row per (outbox event, consumer).
-- Neither table is ever deleted from: a consumer is deactivated, a delivery is
-- delivered or dead and stays for the delivery log.
CREATE TABLE webhook_consumers (
    id             BLOB PRIMARY KEY,
    url            TEXT NOT NULL,
    secret         TEXT NOT NULL,
    -- ",validation.signed,validation.delayed," (leading and trailing comma, so a
    -- subscription is matched with LIKE '%,type,%' on both dialects).
    events         TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    deactivated_at INTEGER
);

CREATE TABLE webhook_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        BLOB NOT NULL,
    consumer_id     BLOB NOT NULL REFERENCES webhook_consumers (id),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    delivered_at    INTEGER,
    dead_at         INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    UNIQUE (event_id, consumer_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX webhook_deliveries_consumer_idx ON webhook_deliveries (consumer_id, id);
