-- Review findings on the admin API (docs/admin.md).
-- API keys belong to the account that created them (NULL: created by `ubtc admin`,
-- the system): disabling that account revokes them. A key may expire.
ALTER TABLE admin_api_keys ADD COLUMN owner_id BLOB;
ALTER TABLE admin_api_keys ADD COLUMN expires_at INTEGER;
CREATE INDEX admin_api_keys_owner_idx ON admin_api_keys (owner_id);
-- Failure counters are pruned once their window has passed and no lockout runs.
CREATE INDEX admin_login_failures_window_idx ON admin_login_failures (window_start);
