-- Records of the foundation: clients, servers, products, services, API keys.
-- Times are microseconds since the Unix epoch (UTC); JSON is stored as JSONB.

CREATE TABLE clients (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT    NOT NULL,
    email         TEXT    NOT NULL,
    status        TEXT    NOT NULL,
    balance_minor BIGINT NOT NULL DEFAULT 0,
    currency      TEXT    NOT NULL,
    custom_fields JSONB    NOT NULL DEFAULT '{}',
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);
CREATE INDEX ix_clients_status ON clients (status, id);
CREATE INDEX ix_clients_email ON clients (email, id);

CREATE TABLE servers (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name           TEXT    NOT NULL,
    module         TEXT    NOT NULL,
    server_group   TEXT    NOT NULL,
    settings       JSONB    NOT NULL,
    max_concurrent BIGINT NOT NULL,
    max_per_second BIGINT,
    enabled        BOOLEAN NOT NULL,
    created_at     BIGINT NOT NULL,
    updated_at     BIGINT NOT NULL
);
CREATE UNIQUE INDEX ux_servers_name ON servers (name);
CREATE INDEX ix_servers_module_group ON servers (module, server_group);

CREATE TABLE products (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT    NOT NULL,
    module       TEXT    NOT NULL,
    extends      BIGINT REFERENCES products (id),
    server_group TEXT,
    settings     JSONB    NOT NULL,
    auto_setup   TEXT    NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE UNIQUE INDEX ux_products_name ON products (name);
CREATE INDEX ix_products_extends ON products (extends);

CREATE TABLE services (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id       BIGINT NOT NULL REFERENCES clients (id),
    product_id      BIGINT NOT NULL REFERENCES products (id),
    server_id       BIGINT NOT NULL REFERENCES servers (id),
    username        TEXT    NOT NULL,
    password        BYTEA      NOT NULL,
    status          TEXT    NOT NULL,
    suspend_reason  TEXT,
    suspended_at    BIGINT,
    suspended_until BIGINT,
    invoice         TEXT,
    parent_invoice  TEXT,
    settings        JSONB    NOT NULL,
    outputs         JSONB    NOT NULL,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
-- One live account per username on a server; a terminated one frees the name.
CREATE UNIQUE INDEX ux_services_server_username ON services (server_id, username) WHERE status <> 'terminated';
CREATE INDEX ix_services_client ON services (client_id, id);
CREATE INDEX ix_services_product ON services (product_id, id);
CREATE INDEX ix_services_server ON services (server_id, id);
CREATE INDEX ix_services_status ON services (status, id);
CREATE INDEX ix_services_invoice ON services (invoice, id) WHERE invoice IS NOT NULL;
CREATE INDEX ix_services_parent_invoice ON services (parent_invoice, id) WHERE parent_invoice IS NOT NULL;

CREATE TABLE api_keys (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         TEXT    NOT NULL,
    prefix       TEXT    NOT NULL,
    hash         TEXT    NOT NULL,
    created_at   BIGINT NOT NULL,
    last_used_at BIGINT
);
CREATE UNIQUE INDEX ux_api_keys_name ON api_keys (name);
CREATE UNIQUE INDEX ux_api_keys_hash ON api_keys (hash);
