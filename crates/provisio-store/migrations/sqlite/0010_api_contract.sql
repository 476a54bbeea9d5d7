-- The billing system's own ids for clients and services (WHMCS's userid and serviceid),
-- unique per kind, so a retried or replayed order can be found by them.
ALTER TABLE clients ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX ux_clients_external_id ON clients (external_id) WHERE external_id IS NOT NULL;
-- The key a client was created under (`idem:KEY:IDEMPOTENCY-KEY`, one item of a batch), so
-- the same item sent again finds the client it made; services have had theirs since 0008.
ALTER TABLE clients ADD COLUMN order_key TEXT;
CREATE UNIQUE INDEX ux_clients_order_key ON clients (order_key) WHERE order_key IS NOT NULL;
ALTER TABLE services ADD COLUMN external_id TEXT;
CREATE UNIQUE INDEX ux_services_external_id ON services (external_id) WHERE external_id IS NOT NULL;

-- Requests sent with an Idempotency-Key header, per API key: the first one's answer is
-- kept (sealed, since an answer may hold a new key or password) and given again to a
-- retry with the same key and the same request. status is NULL while the first one runs;
-- locked_until is when a node that died while running it no longer holds it.
CREATE TABLE idempotency_keys (
    id           INTEGER PRIMARY KEY,
    api_key_id   INTEGER NOT NULL,
    key          TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    status       INTEGER,
    response     BLOB,
    locked_until INTEGER NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE UNIQUE INDEX ux_idempotency_keys_key ON idempotency_keys (api_key_id, key);
CREATE INDEX ix_idempotency_keys_created ON idempotency_keys (created_at);
