-- A job claim in one round trip: the claim lock, the capacity of every server with a job
-- due, and the claiming UPDATE, in one call (see PgStore::claim_once). Each statement of a
-- volatile function takes a fresh snapshot, so the counts read after the lock see every
-- claim committed before it: max_concurrent holds across nodes as with the lock taken in
-- a transaction of its own. The rules are those of claim_tx (SQLite): per server at most
-- max_concurrent minus what runs anywhere, nor more than this worker's share
-- (max_concurrent divided among the workers seen since p_since, rounded up), its own jobs
-- whose call is over (p_finishing) counting as free; at most p_caps for the servers in
-- p_capped (rate tokens, breaker); p_max_total in all, servers in id order; never a job
-- whose service has an earlier open job. The lease starts when the lock was granted.
CREATE FUNCTION provisio_claim_jobs(
    p_owner TEXT,
    p_now BIGINT,
    p_lease_until BIGINT,
    p_since BIGINT,
    p_max_total BIGINT,
    p_capped BIGINT[],
    p_caps BIGINT[],
    p_finishing BIGINT[]
) RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    waited BIGINT;
BEGIN
    PERFORM pg_advisory_xact_lock(847001);
    waited := GREATEST(0, CAST(EXTRACT(EPOCH FROM clock_timestamp() - statement_timestamp())
                               * 1000000 AS BIGINT));
    RETURN QUERY
    WITH live AS (
        SELECT GREATEST(COUNT(*), 1) AS n FROM queue_workers w WHERE w.seen_at >= p_since
    ), caps AS (
        SELECT s.id, s.max_concurrent,
            (SELECT COUNT(*) FROM jobs r WHERE r.server_id = s.id AND r.state = 'running')
                AS running,
            (SELECT COUNT(*) FROM jobs o WHERE o.server_id = s.id AND o.state = 'running'
                AND o.lease_owner = p_owner) AS own,
            (SELECT COUNT(*) FROM jobs f WHERE f.server_id = s.id AND f.state = 'running'
                AND f.lease_owner = p_owner AND f.id = ANY (p_finishing)) AS finishing,
            (SELECT MIN(a.cap) FROM UNNEST(p_capped, p_caps) AS a (server_id, cap)
                WHERE a.server_id = s.id) AS cap
        FROM servers s
        WHERE EXISTS (SELECT 1 FROM jobs p WHERE p.server_id = s.id AND p.state = 'pending'
                      AND p.run_after <= p_now + waited)
    ), free AS (
        SELECT c.id, LEAST(c.max_concurrent - c.running + c.finishing,
                           (c.max_concurrent + l.n - 1) / l.n - c.own + c.finishing,
                           COALESCE(c.cap, p_max_total)) AS n
        FROM caps c CROSS JOIN live l
    ), budget AS (
        SELECT f.id, LEAST(f.n, p_max_total - COALESCE(SUM(f.n) OVER (
            ORDER BY f.id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0)) AS n
        FROM free f WHERE f.n > 0
    ), picked AS (
        SELECT c.id FROM budget b CROSS JOIN LATERAL (
            SELECT j.id FROM jobs j
            WHERE j.server_id = b.id AND j.state = 'pending' AND j.run_after <= p_now + waited
              AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.service_id = j.service_id
                              AND e.id < j.id AND e.state IN ('pending', 'running'))
            ORDER BY j.id LIMIT b.n
            FOR UPDATE OF j SKIP LOCKED
        ) AS c
        WHERE b.n > 0
    )
    UPDATE jobs SET state = 'running', lease_owner = p_owner,
        lease_until = p_lease_until + waited, updated_at = p_now + waited
    -- An array, so the claimed rows are found by their key rather than by a join the
    -- planner may make a scan of the whole table.
    WHERE jobs.id = ANY (ARRAY(SELECT p.id FROM picked p))
    RETURNING jobs.*;
END
$$;
