-- The claim of 0020, same arguments and rules, written so that no plan can make it walk
-- the job history. Its plans are generic (the claim connection prepares it once), costed
-- from statistics that a queue in full flow outruns, and they read far more rows than
-- they used (`auto_explain` on a run of 20,000 jobs, claims of 25 to 110 ms):
--
-- * Finishing jobs were a filter (`id = ANY (p_finishing)`) on a walk of every running
--   job: 922 ids against 2,040 rows, 15.9 ms of one claim. Each is looked up by its key
--   now (a lateral lookup, which only the primary key serves).
-- * Pending jobs were taken in key order (`ORDER BY id`) along the primary key, filtered
--   for their server and state: since the finished jobs hold the low ids, the walk
--   passed 7,690 of them to find 8 pending ones, 19.6 ms, and it grows with the history.
--   Ordering by (server_id, state, id) is what ix_jobs_server_state holds, so that index
--   gives the order and no other plan can without sorting every candidate. The same for
--   the look for a due job.
-- * The places taken were counted once per due server, each count a walk of every
--   running job; now one walk counts them for all due servers.

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
) RETURNS SETOF jobs LANGUAGE plpgsql VOLATILE
-- A bitmap scan never marks the index entries of dead row versions as dead, so every
-- claim visited each job that had ever been running since the last vacuum (8,694 heap
-- visits for 99 running jobs, 5 ms a claim, in a run of 10,000); a plain index scan marks
-- them the first time and skips them after.
SET enable_bitmapscan = off
AS $$
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
        -- Each finishing job by its key: as a filter (`id = ANY`) on a walk of the running
        -- jobs it compared every running row with every id.
        -- A standby job only finishes once begun, in a place it was handed: that place
        -- is free again.
        SELECT f.server_id, COUNT(*) AS n
        FROM UNNEST(p_finishing) AS x (id)
        CROSS JOIN LATERAL (
            SELECT j.server_id FROM jobs j
            WHERE j.id = x.id AND j.state = 'running' AND j.lease_owner = p_owner
        ) AS f
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
            ORDER BY p.server_id, p.state, p.id
            LIMIT 1
        ) AS d
        UNION
        SELECT s.id, s.max_concurrent FROM servers s WHERE s.id IN (SELECT server_id FROM held)
    ), busy AS MATERIALIZED (
        -- One walk of the running jobs for every due server, whichever index it takes.
        SELECT r.server_id,
            COUNT(*) FILTER (WHERE NOT r.standby) AS running,
            COUNT(*) FILTER (WHERE NOT r.standby AND r.lease_owner = p_owner) AS own
        FROM jobs r
        WHERE r.state = 'running' AND r.server_id IN (SELECT id FROM due)
        GROUP BY r.server_id
    ), caps AS MATERIALIZED (
        SELECT d.id, d.max_concurrent,
            COALESCE((SELECT b.running FROM busy b WHERE b.server_id = d.id), 0) AS running,
            COALESCE((SELECT b.own FROM busy b WHERE b.server_id = d.id), 0) AS own,
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
            ORDER BY j.server_id, j.state, j.id LIMIT p.fresh + p.ahead
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
