-- Each worker node's circuit breaker per server, for the console: breakers live in the
-- memory of each process, which writes a row at every transition and marks its rows seen
-- while it runs, so a node that died without saying goodbye shows as gone.
CREATE TABLE server_breakers (
    server_id  INTEGER NOT NULL REFERENCES servers (id) ON DELETE CASCADE,
    node       TEXT    NOT NULL,
    state      TEXT    NOT NULL,
    since      INTEGER NOT NULL,
    -- When an open breaker lets its probe through.
    open_until INTEGER,
    -- The writer's own order of transitions: a late write never replaces a newer one.
    seq        INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL,
    PRIMARY KEY (server_id, node)
);
CREATE INDEX ix_server_breakers_node ON server_breakers (node);
-- The overview's failed attempts of the last hour, without reading the successful ones.
CREATE INDEX ix_job_attempts_failed ON job_attempts (started_at, job_id)
    WHERE outcome IN ('transient', 'permanent', 'unknown');
