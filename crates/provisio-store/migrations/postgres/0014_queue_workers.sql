-- Worker nodes present (marked at start and by each lease heartbeat, removed at stop):
-- those seen within a lease's length share every server's slots equally (see claim_tx),
-- so one busy node cannot keep the others out.
CREATE TABLE queue_workers (
    owner TEXT PRIMARY KEY NOT NULL,
    seen_at BIGINT NOT NULL
);

-- Wakes the workers listening on provisio_jobs (every node) when a job becomes pending
-- (queued, retried, handed back, taken over) or ends while its service has a job waiting
-- behind it (jobs of a service run in order). One check per statement, not per row; sent
-- at commit, and PostgreSQL folds the identical notifications of a transaction into one.
CREATE FUNCTION provisio_jobs_queued() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM new_jobs WHERE state = 'pending') THEN
        PERFORM pg_notify('provisio_jobs', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_queued_notify
    AFTER INSERT ON jobs REFERENCING NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION provisio_jobs_queued();

CREATE FUNCTION provisio_jobs_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM new_jobs n JOIN old_jobs o ON o.id = n.id
        WHERE (n.state = 'pending' AND o.state <> 'pending')
           OR (o.state = 'running' AND n.state NOT IN ('running', 'pending')
               AND EXISTS (SELECT 1 FROM jobs p WHERE p.service_id = n.service_id
                           AND p.state = 'pending'))
    ) THEN
        PERFORM pg_notify('provisio_jobs', '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_changed_notify
    AFTER UPDATE ON jobs REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs
    FOR EACH STATEMENT EXECUTE FUNCTION provisio_jobs_changed();
