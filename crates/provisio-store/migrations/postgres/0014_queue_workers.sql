-- Worker nodes seen claiming jobs within a lease's length: each gets an equal share of
-- every server's slots (see claim_tx), so one busy node cannot keep the others out.
CREATE TABLE queue_workers (
    owner TEXT PRIMARY KEY NOT NULL,
    seen_at BIGINT NOT NULL
);

-- Wakes the workers listening on provisio_jobs (every node) when a job becomes pending:
-- queued, retried, handed back or taken over. Sent at commit; PostgreSQL folds the
-- identical notifications of one transaction into one, so a batch costs one wake-up.
CREATE FUNCTION provisio_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('provisio_jobs', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_pending_notify
    AFTER INSERT OR UPDATE OF state ON jobs
    FOR EACH ROW WHEN (NEW.state = 'pending')
    EXECUTE FUNCTION provisio_jobs_notify();
