-- Usage (current value per service and metric, history of readings, once-off top-ups,
-- product policies), usage sync runs, and audit reports.

CREATE TABLE service_usage (
    service_id      BIGINT  NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    metric          TEXT    NOT NULL,
    period_start    BIGINT NOT NULL,
    used            DOUBLE PRECISION NOT NULL,
    limit_value     DOUBLE PRECISION,
    unit            TEXT,
    topup_used      DOUBLE PRECISION NOT NULL,
    exceeded_period BIGINT,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (service_id, metric)
);

CREATE TABLE usage_readings (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_id   BIGINT  NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    metric       TEXT    NOT NULL,
    period_start BIGINT NOT NULL,
    used         DOUBLE PRECISION NOT NULL,
    limit_value  DOUBLE PRECISION,
    at           BIGINT NOT NULL
);
CREATE INDEX ix_usage_readings_service ON usage_readings (service_id, id);
CREATE INDEX ix_usage_readings_at ON usage_readings (at);

CREATE TABLE usage_topups (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_id      BIGINT  NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    metric          TEXT    NOT NULL,
    amount          DOUBLE PRECISION NOT NULL,
    consumed        DOUBLE PRECISION NOT NULL DEFAULT 0,
    note            TEXT,
    idempotency_key TEXT,
    created_at      BIGINT NOT NULL
);
CREATE INDEX ix_usage_topups_service ON usage_topups (service_id, metric, id);
CREATE UNIQUE INDEX ux_usage_topups_key ON usage_topups (service_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE usage_policies (
    product_id BIGINT PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
    policy     JSONB   NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE usage_syncs (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    slot        TEXT,
    state       TEXT    NOT NULL,
    report      JSONB   NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT
);
CREATE UNIQUE INDEX ux_usage_syncs_slot ON usage_syncs (slot) WHERE slot IS NOT NULL;

CREATE TABLE audits (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    server_id       BIGINT  NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    slot            TEXT,
    state           TEXT    NOT NULL,
    fix             TEXT,
    dry_run         BOOLEAN NOT NULL,
    force           BOOLEAN NOT NULL,
    remote_accounts BIGINT NOT NULL DEFAULT 0,
    local_services  BIGINT NOT NULL DEFAULT 0,
    counts          JSONB   NOT NULL,
    note            TEXT,
    findings        JSONB   NOT NULL,
    started_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
CREATE INDEX ix_audits_server ON audits (server_id, id);
CREATE UNIQUE INDEX ux_audits_slot ON audits (server_id, slot) WHERE slot IS NOT NULL;
