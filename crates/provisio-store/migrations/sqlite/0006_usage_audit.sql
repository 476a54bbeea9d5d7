-- Usage (current value per service and metric, history of readings, once-off top-ups,
-- product policies), usage sync runs, and audit reports.

CREATE TABLE service_usage (
    service_id      INTEGER NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    metric          TEXT    NOT NULL,
    period_start    INTEGER NOT NULL,
    used            REAL    NOT NULL,
    limit_value     REAL,
    unit            TEXT,
    topup_used      REAL    NOT NULL,
    exceeded_period INTEGER,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (service_id, metric)
);

CREATE TABLE usage_readings (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id   INTEGER NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    metric       TEXT    NOT NULL,
    period_start INTEGER NOT NULL,
    used         REAL    NOT NULL,
    limit_value  REAL,
    at           INTEGER NOT NULL
);
CREATE INDEX ix_usage_readings_service ON usage_readings (service_id, id);
CREATE INDEX ix_usage_readings_at ON usage_readings (at);

CREATE TABLE usage_topups (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id      INTEGER NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    metric          TEXT    NOT NULL,
    amount          REAL    NOT NULL,
    consumed        REAL    NOT NULL DEFAULT 0,
    note            TEXT,
    idempotency_key TEXT,
    created_at      INTEGER NOT NULL
);
CREATE INDEX ix_usage_topups_service ON usage_topups (service_id, metric, id);
CREATE UNIQUE INDEX ux_usage_topups_key ON usage_topups (service_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE usage_policies (
    product_id INTEGER PRIMARY KEY REFERENCES products (id) ON DELETE CASCADE,
    policy     TEXT    NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE usage_syncs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    slot        TEXT,
    state       TEXT    NOT NULL,
    report      TEXT    NOT NULL,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER
);
CREATE UNIQUE INDEX ux_usage_syncs_slot ON usage_syncs (slot) WHERE slot IS NOT NULL;

CREATE TABLE audits (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    server_id       INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    slot            TEXT,
    state           TEXT    NOT NULL,
    fix             TEXT,
    dry_run         INTEGER NOT NULL,
    force           INTEGER NOT NULL,
    remote_accounts INTEGER NOT NULL DEFAULT 0,
    local_services  INTEGER NOT NULL DEFAULT 0,
    counts          TEXT    NOT NULL,
    note            TEXT,
    findings        TEXT    NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
CREATE INDEX ix_audits_server ON audits (server_id, id);
CREATE UNIQUE INDEX ux_audits_slot ON audits (server_id, slot) WHERE slot IS NOT NULL;
