-- Registered webhook consumers and one delivery row per (outbox event, consumer).
-- Neither table is ever deleted from: a consumer is deactivated, a delivery is
-- delivered or dead and stays for the delivery log.
CREATE TABLE webhook_consumers (
    id             UUID PRIMARY KEY,
    url            TEXT NOT NULL,
    secret         TEXT NOT NULL,
    -- ",validation.signed,validation.delayed," (leading and trailing comma, so a
    -- subscription is matched with LIKE '%,type,%' on both dialects).
    events         TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    deactivated_at BIGINT
);

CREATE TABLE webhook_deliveries (
    id              BIGSERIAL PRIMARY KEY,
    event_id        UUID NOT NULL,
    consumer_id     UUID NOT NULL REFERENCES webhook_consumers (id),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    delivered_at    BIGINT,
    dead_at         BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    UNIQUE (event_id, consumer_id)
);
CREATE INDEX webhook_deliveries_due_idx ON webhook_deliveries (next_attempt_at)
    WHERE delivered_at IS NULL AND dead_at IS NULL;
CREATE INDEX webhook_deliveries_consumer_idx ON webhook_deliveries (consumer_id, id);
