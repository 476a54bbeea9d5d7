-- Jobs on standby: claimed ahead of a free slot, leased to their worker, but not yet
-- taking one of their server's `max_concurrent` places. The worker starts one the moment
-- one of its own jobs on that server ends its remote call, and hands the finished job's
-- place to it: the outcome write of the finished job clears the standby flag in the same
-- transaction, so the server's count of places taken never changes in between and never
-- exceeds `max_concurrent`. A claim also promotes the claimer's standby jobs first into
-- the places it finds free, so a standby job never waits behind a newer one.
--
-- Only `running` rows carry meaning in the flag; a job that leaves `running` by any path
-- is given a fresh value by the claim that next takes it.
ALTER TABLE jobs ADD COLUMN standby BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX ix_jobs_standby ON jobs (lease_owner, server_id, id) WHERE standby AND state = 'running';

-- The claim of 0019 with three more arguments: `p_ahead_at` and `p_ahead`, how many jobs
-- the claimer wants held ahead on which servers (at most its fair share; none on servers
-- not named), and `p_started`, its standby jobs it
-- has already begun in a finished job's place (neither promoted nor counted as held).
-- The eight-argument function of 0019 stays for engines of the version before: it counts
-- standby rows as running, which only ever leaves places unused.
CREATE OR REPLACE FUNCTION provisio_claim_jobs(
    p_owner TEXT,
    p_now BIGINT,
    p_lease_until BIGINT,
    p_since BIGINT,
    p_max_total BIGINT,
    p_capped BIGINT[],
    p_caps BIGINT[],
    p_finishing BIGINT[],
    p_ahead_at BIGINT[],
    p_ahead BIGINT[],
    p_started BIGINT[]
) RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    waited BIGINT;
    v_run BIGINT[];
    v_held BIGINT[];
BEGIN
    PERFORM pg_advisory_xact_lock(847001);
    waited := GREATEST(0, CAST(EXTRACT(EPOCH FROM clock_timestamp() - statement_timestamp())
                               * 1000000 AS BIGINT));
    WITH live AS (
        SELECT GREATEST(COUNT(*), 1) AS n FROM queue_workers w WHERE w.seen_at >= p_since
    ), fin AS MATERIALIZED (
        SELECT f.server_id, COUNT(*) AS n
        FROM jobs f
        -- A standby job only finishes once begun, in a place it was handed: that place
        -- is free again.
        WHERE f.id = ANY (p_finishing) AND f.state = 'running' AND f.lease_owner = p_owner
        GROUP BY f.server_id
    ), mine AS MATERIALIZED (
        -- Locked, skipping a row an outcome write is handing a place to: that job was
        -- begun after this claim was asked (not in p_started yet), and waiting for the
        -- write here while it waits for this claim's rows would be a deadlock.
        SELECT h.server_id, h.id
        FROM jobs h
        WHERE h.lease_owner = p_owner AND h.standby AND h.state = 'running'
          AND NOT (h.id = ANY (p_started))
        FOR UPDATE SKIP LOCKED
    ), held AS MATERIALIZED (
        SELECT m.server_id, m.id,
            ROW_NUMBER() OVER (PARTITION BY m.server_id ORDER BY m.id) AS rn
        FROM mine m
    ), due AS MATERIALIZED (
        SELECT s.id, s.max_concurrent
        FROM servers s
        CROSS JOIN LATERAL (
            SELECT 1 FROM jobs p
            WHERE p.server_id = s.id AND p.state = 'pending' AND p.run_after <= p_now + waited
            LIMIT 1
        ) AS d
        UNION
        SELECT s.id, s.max_concurrent FROM servers s WHERE s.id IN (SELECT server_id FROM held)
    ), caps AS MATERIALIZED (
        SELECT d.id, d.max_concurrent,
            (SELECT COUNT(*) FROM jobs r WHERE r.server_id = d.id AND r.state = 'running'
                AND NOT r.standby) AS running,
            (SELECT COUNT(*) FROM jobs o WHERE o.server_id = d.id AND o.state = 'running'
                AND o.lease_owner = p_owner AND NOT o.standby) AS own,
            COALESCE((SELECT fin.n FROM fin WHERE fin.server_id = d.id), 0) AS finishing,
            (SELECT COUNT(*) FROM held WHERE held.server_id = d.id) AS held,
            (SELECT MIN(a.cap) FROM UNNEST(p_capped, p_caps) AS a (server_id, cap)
                WHERE a.server_id = d.id) AS cap
        FROM due d
    ), free AS MATERIALIZED (
        SELECT c.id, c.held, c.cap,
            (c.max_concurrent + l.n - 1) / l.n AS share,
            GREATEST(0, LEAST(c.max_concurrent - c.running + c.finishing,
                              (c.max_concurrent + l.n - 1) / l.n - c.own + c.finishing,
                              COALESCE(c.cap, p_max_total))) AS n
        FROM caps c CROSS JOIN live l
    ), budget AS MATERIALIZED (
        SELECT f.id, f.held, f.cap, f.share,
            GREATEST(0, LEAST(f.n, p_max_total - COALESCE(SUM(f.n) OVER (
                ORDER BY f.id ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0))) AS n
        FROM free f
    ), plan AS MATERIALIZED (
        SELECT b.id, LEAST(b.n, b.held) AS promote, b.n - LEAST(b.n, b.held) AS fresh,
            -- Held ahead only where nothing but `max_concurrent` limits the server: a rate
            -- or an open breaker decides each start on its own.
            CASE WHEN b.cap IS NULL
                 THEN GREATEST(0, LEAST(COALESCE((SELECT MIN(x.n) FROM UNNEST(p_ahead_at, p_ahead)
                                                   AS x (server_id, n) WHERE x.server_id = b.id), 0),
                                        b.share) - (b.held - LEAST(b.n, b.held)))
                 ELSE 0 END AS ahead
        FROM budget b
    ), picked AS (
        SELECT c.id, ROW_NUMBER() OVER (PARTITION BY p.id ORDER BY c.id) > p.fresh AS ahead
        FROM plan p CROSS JOIN LATERAL (
            SELECT j.id FROM jobs j
            WHERE j.server_id = p.id AND j.state = 'pending' AND j.run_after <= p_now + waited
              AND NOT EXISTS (SELECT 1 FROM jobs e WHERE e.service_id = j.service_id
                              AND e.id < j.id AND e.state IN ('pending', 'running'))
            ORDER BY j.id LIMIT p.fresh + p.ahead
            FOR UPDATE OF j SKIP LOCKED
        ) AS c
        WHERE p.fresh + p.ahead > 0
    ), chosen AS (
        SELECT k.id, k.ahead FROM picked k
        UNION ALL
        SELECT h.id, FALSE FROM held h JOIN plan p ON p.id = h.server_id WHERE h.rn <= p.promote
    )
    SELECT COALESCE(ARRAY_AGG(ch.id) FILTER (WHERE NOT ch.ahead), '{}'),
           COALESCE(ARRAY_AGG(ch.id) FILTER (WHERE ch.ahead), '{}')
    INTO v_run, v_held
    FROM chosen ch;
    RETURN QUERY
    UPDATE jobs SET state = 'running', lease_owner = p_owner,
        lease_until = p_lease_until + waited, updated_at = p_now + waited,
        standby = jobs.id = ANY (v_held)
    -- Arrays, so the claimed rows are found by their key rather than by a join the
    -- planner may make a scan of the whole table.
    WHERE jobs.id = ANY (v_run || v_held)
    RETURNING jobs.*;
END
$$;
