-- The admin console's sign-in sessions: only the SHA-256 of the cookie's token is kept,
-- never the API key, which the browser does not hold either.
CREATE TABLE console_sessions (
    token_hash TEXT    PRIMARY KEY,
    key_id     BIGINT  NOT NULL REFERENCES api_keys (id) ON DELETE CASCADE,
    csrf       TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    expires_at BIGINT  NOT NULL
);
CREATE INDEX ix_console_sessions_expires ON console_sessions (expires_at);
-- The overview's recent jobs by state and actions per minute, read from the index alone.
CREATE INDEX ix_jobs_finished ON jobs (finished_at, state) WHERE finished_at IS NOT NULL;
-- The services search by username alone (the unique index leads with the server).
CREATE INDEX ix_services_username ON services (username, id);
-- Errors in the last hour, per server.
CREATE INDEX ix_job_attempts_started ON job_attempts (started_at);
