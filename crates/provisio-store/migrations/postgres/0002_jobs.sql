-- Durable jobs (one per requested action) and the history of their attempts.

CREATE TABLE jobs (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    service_id      BIGINT NOT NULL REFERENCES services (id) ON DELETE CASCADE,
    server_id       BIGINT NOT NULL REFERENCES servers (id),
    action          TEXT    NOT NULL,
    state           TEXT    NOT NULL,
    params          JSONB   NOT NULL,
    idempotency_key TEXT    NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    max_attempts    BIGINT NOT NULL,
    run_after       BIGINT NOT NULL,
    lease_owner     TEXT,
    lease_until     BIGINT,
    needs_lookup    BOOLEAN NOT NULL DEFAULT FALSE,
    last_error      TEXT,
    error_kind      TEXT,
    note            TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    finished_at     BIGINT
);
-- Claiming: due pending jobs per server in id order; and the running count per server.
CREATE INDEX ix_jobs_server_state ON jobs (server_id, state, id);
-- Ordering within a service: is an earlier job still open?
CREATE INDEX ix_jobs_service ON jobs (service_id, id);
CREATE INDEX ix_jobs_state ON jobs (state, id);

CREATE TABLE job_attempts (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id      BIGINT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     BIGINT NOT NULL,
    started_at  BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    outcome     TEXT    NOT NULL,
    message     TEXT
);
CREATE INDEX ix_job_attempts_job ON job_attempts (job_id, id);
