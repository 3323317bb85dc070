-- Claims on webhook rows: a worker takes due rows for a while (claim_until) under a
-- token before it delivers them, so two workers never send the same row at once. A
-- worker that dies leaves its claim to expire; recording an attempt ends the claim.
ALTER TABLE webhook_outbox ADD COLUMN claim_token UUID;
ALTER TABLE webhook_outbox ADD COLUMN claim_until BIGINT;
ALTER TABLE webhook_deliveries ADD COLUMN claim_token UUID;
ALTER TABLE webhook_deliveries ADD COLUMN claim_until BIGINT;
CREATE INDEX webhook_outbox_claim_idx ON webhook_outbox (claim_token);
CREATE INDEX webhook_deliveries_claim_idx ON webhook_deliveries (claim_token);
