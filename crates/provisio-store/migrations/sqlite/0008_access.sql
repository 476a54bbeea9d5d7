-- Roles and scopes for API keys, and resellers that clients may belong to.

CREATE TABLE resellers (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT    NOT NULL,
    status     TEXT    NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX ux_resellers_name ON resellers (name);

ALTER TABLE clients ADD COLUMN reseller_id INTEGER REFERENCES resellers (id);
CREATE INDEX ix_clients_reseller ON clients (reseller_id, id);

-- Keys made before roles existed could do everything: they stay admin keys.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE api_keys ADD COLUMN client_id INTEGER REFERENCES clients (id);
ALTER TABLE api_keys ADD COLUMN reseller_id INTEGER REFERENCES resellers (id);
-- A JSON list of the actions a client key may run; NULL for the role's default.
ALTER TABLE api_keys ADD COLUMN actions TEXT;
ALTER TABLE api_keys ADD COLUMN reveal_secrets INTEGER NOT NULL DEFAULT 0;
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
-- A revoked key stays on record, since jobs and events name the key that caused them.
ALTER TABLE api_keys ADD COLUMN revoked_at INTEGER;

-- A name is unique among the keys in use, so a revoked key's name can be given again.
DROP INDEX ux_api_keys_name;
CREATE UNIQUE INDEX ux_api_keys_name ON api_keys (name) WHERE revoked_at IS NULL;

-- Who caused each job, event and balance transaction (`key:ID:NAME`, `rule:ID`,
-- `scheduler`, `config`); NULL for rows written before actors were recorded.
ALTER TABLE jobs ADD COLUMN actor TEXT;
ALTER TABLE events ADD COLUMN actor TEXT;
ALTER TABLE client_transactions ADD COLUMN actor TEXT;
CREATE INDEX ix_events_actor ON events (actor, id);

-- How many rule firings lie between the outside world and a job or event: rules stop
-- reacting past `[rules] max_depth`, so a rule cannot feed itself forever.
ALTER TABLE jobs ADD COLUMN depth BIGINT NOT NULL DEFAULT 0;
ALTER TABLE events ADD COLUMN depth BIGINT NOT NULL DEFAULT 0;

-- The key a service was ordered under (a rule firing's `rule:R:event:E`): the same key
-- again finds the service instead of ordering a second one.
ALTER TABLE services ADD COLUMN order_key TEXT;
CREATE UNIQUE INDEX ux_services_order_key ON services (order_key);
