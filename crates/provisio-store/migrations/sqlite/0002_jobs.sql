-- Durable jobs (one per requested action) and the history of their attempts.

CREATE TABLE jobs (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    service_id      INTEGER NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    server_id       INTEGER NOT NULL REFERENCES servers (id),
    action          TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    params          TEXT    NOT NULL,
    idempotency_key TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    run_after       INTEGER NOT NULL,
    lease_owner     TEXT,
    lease_until     INTEGER,
    needs_lookup    INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    error_kind      TEXT,
    note            TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    finished_at     INTEGER
);
-- Claiming: due pending jobs per server in id order; and the running count per server.
CREATE INDEX ix_jobs_server_state ON jobs (server_id, state, id);
-- Ordering within a service: is an earlier job still open?
CREATE INDEX ix_jobs_service ON jobs (service_id, id);
CREATE INDEX ix_jobs_state ON jobs (state, id);

CREATE TABLE job_attempts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    outcome     TEXT    NOT NULL,
    message     TEXT
);
CREATE INDEX ix_job_attempts_job ON job_attempts (job_id, id);
