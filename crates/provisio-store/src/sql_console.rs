//! The SQL of [`crate::ConsoleStore`], shared by both databases like `sql.rs`.

/// Implements [`crate::ConsoleStore`] for a store type set up as `impl_store!` expects.
macro_rules! impl_console_store {
    ($store:ty, $db:ty) => {
        #[async_trait::async_trait]
        impl $crate::ConsoleStore for $store {
            async fn insert_console_session(
                &self,
                s: &$crate::ConsoleSession,
            ) -> $crate::Result<()> {
                use $crate::rows::ts;
                let mut conn = self.writer().acquire().await?;
                let mut tx = sqlx::Connection::begin(&mut *conn).await?;
                sqlx::query("DELETE FROM console_sessions WHERE expires_at < $1")
                    .bind(ts(s.created_at))
                    .execute(&mut *tx)
                    .await?;
                sqlx::query(
                    "INSERT INTO console_sessions (token_hash, key_id, csrf, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&s.token_hash)
                .bind(s.key_id)
                .bind(&s.csrf)
                .bind(ts(s.created_at))
                .bind(ts(s.expires_at))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                conn.ended_cleanly();
                Ok(())
            }

            async fn find_console_session(
                &self,
                token_hash: &str,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<Option<$crate::ConsoleSession>> {
                use $crate::rows::{from_ts, ts};
                let row: Option<(String, i64, String, i64, i64)> = sqlx::query_as(
                    "SELECT token_hash, key_id, csrf, created_at, expires_at FROM console_sessions \
                     WHERE token_hash = $1 AND expires_at > $2",
                )
                .bind(token_hash)
                .bind(ts(now))
                .fetch_optional(&self.pool)
                .await?;
                row.map(|(token_hash, key_id, csrf, c, e)| {
                    Ok($crate::ConsoleSession {
                        token_hash,
                        key_id,
                        csrf,
                        created_at: from_ts(c)?,
                        expires_at: from_ts(e)?,
                    })
                })
                .transpose()
            }

            async fn delete_console_session(&self, token_hash: &str) -> $crate::Result<()> {
                sqlx::query("DELETE FROM console_sessions WHERE token_hash = $1")
                    .bind(token_hash)
                    .execute(self.writer())
                    .await?;
                Ok(())
            }

            async fn console_overview(
                &self,
                w: $crate::OverviewWindow,
            ) -> $crate::Result<$crate::ConsoleOverview> {
                use $crate::rows::{from_ts, ts};
                use provisio_core::ServerId;
                // The parts are independent: run side by side, each on a pool connection of
                // its own, the page waits for the slowest rather than for their sum.
                // Each state counted up to the cap through the (state, id) index.
                let counted = sqlx::query_as::<_, (String, i64)>(
                    "SELECT 'failed' AS st, COUNT(*) FROM (SELECT 1 FROM jobs WHERE state = 'failed' LIMIT $1) AS f \
                     UNION ALL SELECT 'pending', COUNT(*) FROM (SELECT 1 FROM jobs WHERE state = 'pending' LIMIT $1) AS p \
                     UNION ALL SELECT 'running', COUNT(*) FROM (SELECT 1 FROM jobs WHERE state = 'running' LIMIT $1) AS r",
                )
                .bind($crate::COUNT_CAP)
                .fetch_all(&self.pool);
                // One pass over the recent range of `ix_jobs_finished` gives both the states
                // and the chart. Grouped by an expression, so that no planner walks the state
                // index over every job for its order instead.
                let recent = sqlx::query_as::<_, (i64, String, i64)>(
                    "SELECT (finished_at / 60000000) * 60000000 AS m, state || '' AS st, COUNT(*) FROM jobs \
                     WHERE finished_at IS NOT NULL AND finished_at >= $1 GROUP BY m, st ORDER BY m, st",
                )
                .bind(ts(w.chart_since))
                .fetch_all(&self.pool);
                let failed = sqlx::query_as::<_, (i64, Option<String>, Option<String>, i64)>(
                    // The newest failed jobs, read through the (state, id) index: grouping
                    // straight from the table lets a planner walk a server-led index over
                    // every job instead, and a backlog's breakdown does not need every row.
                    "SELECT server_id, error_kind, SUBSTR(COALESCE(last_error, ''), 1, 120) AS e, COUNT(*) AS n \
                     FROM (SELECT server_id, error_kind, last_error FROM jobs WHERE state = 'failed' \
                           ORDER BY id DESC LIMIT $1) AS f \
                     GROUP BY server_id, error_kind, e ORDER BY n DESC, server_id LIMIT 50",
                )
                .bind($crate::FAILED_SAMPLE)
                .fetch_all(&self.pool);
                let errors = sqlx::query_as::<_, (i64, i64)>(
                    "SELECT j.server_id, COUNT(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
                     WHERE a.started_at >= $1 AND a.outcome IN ('transient', 'permanent', 'unknown') GROUP BY j.server_id",
                )
                .bind(ts(w.errors_since))
                .fetch_all(&self.pool);
                // One statement for every server, each part a short walk of the
                // (server, state, id) index, rather than two round trips per server. Jobs
                // held on standby (migration 0020) take no place and are not counted.
                let servers = sqlx::query_as::<_, (i64, i64, Option<i64>)>(
                    "SELECT s.id, \
                       (SELECT COUNT(*) FROM jobs j WHERE j.server_id = s.id AND j.state = 'running' \
                        AND NOT j.standby), \
                       (SELECT j.finished_at FROM jobs j WHERE j.server_id = s.id AND j.state = 'done' \
                        ORDER BY j.id DESC LIMIT 1) \
                     FROM servers s ORDER BY s.id",
                )
                .fetch_all(&self.pool);
                let deliveries = sqlx::query_as::<_, (i64, i64, Option<String>)>(
                    "SELECT handler_id, COUNT(*), MAX(last_error) FROM deliveries \
                     WHERE state IN ('pending', 'failed') AND last_error IS NOT NULL \
                     GROUP BY handler_id ORDER BY handler_id",
                )
                .fetch_all(&self.pool);
                let breakers = sqlx::query_as::<_, (i64, String, String, i64, Option<i64>, i64)>(
                    "SELECT server_id, node, state, since, open_until, seq FROM server_breakers \
                     WHERE seen_at >= $1 ORDER BY server_id, node",
                )
                .bind(ts(w.seen_since))
                .fetch_all(&self.pool);
                let last_sync = sqlx::query_as::<_, (i64, String, i64)>(
                    "SELECT id, state, started_at FROM usage_syncs ORDER BY id DESC LIMIT 1",
                )
                .fetch_optional(&self.pool);
                let last_audit = sqlx::query_as::<_, (i64, i64, String, Option<i64>)>(
                    "SELECT id, server_id, state, finished_at FROM audits ORDER BY id DESC LIMIT 1",
                )
                .fetch_optional(&self.pool);
                let (counted, recent, failed, errors, servers, deliveries, breakers, last_sync, last_audit) =
                    tokio::try_join!(
                        counted, recent, failed, errors, servers, deliveries, breakers, last_sync, last_audit
                    )?;
                let by_state = counted.into_iter().filter(|c| c.1 > 0).collect();
                let mut finished = std::collections::BTreeMap::<String, i64>::new();
                let mut per_minute: Vec<(chrono::DateTime<chrono::Utc>, i64)> = Vec::new();
                for (m, st, n) in recent {
                    *finished.entry(st).or_default() += n;
                    let at = from_ts(m)?;
                    match per_minute.last_mut() {
                        Some(last) if last.0 == at => last.1 += n,
                        _ => per_minute.push((at, n)),
                    }
                }
                let activity = servers
                    .into_iter()
                    .map(|(id, running, last)| {
                        Ok($crate::ServerActivity {
                            server_id: ServerId(id),
                            running,
                            errors: errors.iter().find(|e| e.0 == id).map_or(0, |e| e.1),
                            last_success: last.map(from_ts).transpose()?,
                        })
                    })
                    .collect::<$crate::Result<Vec<_>>>()?;
                Ok($crate::ConsoleOverview {
                    by_state,
                    finished: finished.into_iter().collect(),
                    failed: failed
                        .into_iter()
                        .map(|(s, k, e, n)| (ServerId(s), k.unwrap_or_default(), e.unwrap_or_default(), n))
                        .collect(),
                    servers: activity,
                    per_minute,
                    failing_deliveries: deliveries
                        .into_iter()
                        .map(|(h, n, e)| (h, n, e.unwrap_or_default()))
                        .collect(),
                    breakers: breakers
                        .into_iter()
                        .map(|(server, node, state, since, until, seq)| {
                            Ok($crate::BreakerRecord {
                                server_id: ServerId(server),
                                node,
                                state,
                                since: from_ts(since)?,
                                open_until: until.map(from_ts).transpose()?,
                                seq,
                            })
                        })
                        .collect::<$crate::Result<_>>()?,
                    last_sync: last_sync
                        .map(|(id, st, at)| Ok::<_, $crate::StoreError>((id, st, from_ts(at)?)))
                        .transpose()?,
                    last_audit: last_audit
                        .map(|(id, srv, st, at)| {
                            Ok::<_, $crate::StoreError>((id, ServerId(srv), st, at.map(from_ts).transpose()?))
                        })
                        .transpose()?,
                })
            }

            async fn record_breaker(
                &self,
                b: &$crate::BreakerRecord,
                now: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<()> {
                use $crate::rows::ts;
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                sqlx::query(
                    "INSERT INTO server_breakers (server_id, node, state, since, open_until, seq, seen_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7) \
                     ON CONFLICT (server_id, node) DO UPDATE SET state = excluded.state, \
                       since = excluded.since, open_until = excluded.open_until, seq = excluded.seq, \
                       seen_at = excluded.seen_at \
                     WHERE server_breakers.seq < excluded.seq",
                )
                .bind(b.server_id.0)
                .bind(&b.node)
                .bind(&b.state)
                .bind(ts(b.since))
                .bind(b.open_until.map(ts))
                .bind(b.seq)
                .bind(ts(now))
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(())
            }

            async fn touch_breakers(
                &self,
                node: &str,
                now: chrono::DateTime<chrono::Utc>,
                forget_before: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<()> {
                use $crate::rows::ts;
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                sqlx::query("UPDATE server_breakers SET seen_at = $1 WHERE node = $2")
                    .bind(ts(now))
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM server_breakers WHERE seen_at < $1")
                    .bind(ts(forget_before))
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(())
            }

            async fn drop_breakers(&self, node: &str) -> $crate::Result<()> {
                let mut wr = self.write().await?;
                let mut tx = wr.begin().await?;
                sqlx::query("DELETE FROM server_breakers WHERE node = $1")
                    .bind(node)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                wr.durable().await?;
                Ok(())
            }

            async fn recent_sync_runs(&self, limit: u32) -> $crate::Result<Vec<$crate::SyncRun>> {
                let rows: Vec<$crate::usage::SyncRow> =
                    sqlx::query_as("SELECT * FROM usage_syncs ORDER BY id DESC LIMIT $1")
                        .bind(i64::from(limit))
                        .fetch_all(&self.pool)
                        .await?;
                rows.into_iter().map(TryInto::try_into).collect()
            }

            async fn service_timeline(
                &self,
                service: provisio_core::ServiceId,
                before: Option<chrono::DateTime<chrono::Utc>>,
                limit: u32,
            ) -> $crate::Result<$crate::ServiceTimeline> {
                use $crate::rows::ts;
                // Past the newest time any row can have: one statement shape for both the
                // first look and the "older" pages.
                let before = before.map_or(i64::MAX, ts);
                let limit = i64::from(limit);
                let subject = format!("service:{}", service.0);
                // Four short index walks, each newest first ((service_id, id) of jobs,
                // (subject, id) of events and deliveries), run side by side on their own
                // connections.
                let jobs = sqlx::query_as::<_, $crate::rows::JobRow>(
                    "SELECT * FROM jobs WHERE service_id = $1 AND created_at < $2 ORDER BY id DESC LIMIT $3",
                )
                .bind(service.0)
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool);
                let attempts = sqlx::query_as::<_, $crate::rows::AttemptRow>(
                    "SELECT * FROM job_attempts WHERE job_id IN \
                       (SELECT id FROM jobs WHERE service_id = $1 AND created_at < $2 ORDER BY id DESC LIMIT $3) \
                     ORDER BY job_id, id",
                )
                .bind(service.0)
                .bind(before)
                .bind(limit.min($crate::TIMELINE_ATTEMPTS as i64))
                .fetch_all(&self.pool);
                let events = sqlx::query_as::<_, $crate::rows::EventRow>(
                    "SELECT * FROM events WHERE subject = $1 AND at < $2 ORDER BY id DESC LIMIT $3",
                )
                .bind(&subject)
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool);
                let deliveries = sqlx::query_as::<_, $crate::rows_hooks::DeliveryRow>(
                    "SELECT * FROM deliveries WHERE subject = $1 AND updated_at < $2 ORDER BY id DESC LIMIT $3",
                )
                .bind(&subject)
                .bind(before)
                .bind(limit)
                .fetch_all(&self.pool);
                let (jobs, attempts, events, deliveries) =
                    tokio::try_join!(jobs, attempts, events, deliveries)?;
                Ok($crate::ServiceTimeline {
                    jobs: jobs.into_iter().map(TryInto::try_into).collect::<$crate::Result<_>>()?,
                    attempts: attempts
                        .into_iter()
                        .map(TryInto::try_into)
                        .collect::<$crate::Result<_>>()?,
                    events: events.into_iter().map(TryInto::try_into).collect::<$crate::Result<_>>()?,
                    deliveries: deliveries
                        .into_iter()
                        .map(TryInto::try_into)
                        .collect::<$crate::Result<_>>()?,
                })
            }

            async fn product_chain_rows(
                &self,
                id: provisio_core::ProductId,
            ) -> $crate::Result<Vec<provisio_core::product::Product>> {
                // The chain in one recursive statement rather than one round trip per level.
                let rows: Vec<$crate::rows::ProductRow> = sqlx::query_as(
                    "WITH RECURSIVE chain(id, depth) AS ( \
                       SELECT CAST($1 AS BIGINT), CAST(0 AS BIGINT) \
                       UNION ALL \
                       SELECT p.extends, chain.depth + 1 FROM chain JOIN products p ON p.id = chain.id \
                       WHERE p.extends IS NOT NULL AND chain.depth < $2) \
                     SELECT p.* FROM chain JOIN products p ON p.id = chain.id ORDER BY chain.depth",
                )
                .bind(id.0)
                .bind($crate::CHAIN_MAX)
                .fetch_all(&self.pool)
                .await?;
                let mut seen = std::collections::HashSet::new();
                let mut out = Vec::with_capacity(rows.len());
                for r in rows {
                    let p: provisio_core::product::Product = r.try_into()?;
                    // A cycle repeats its products up to the depth bound: the first
                    // repeat ends the chain, and the engine's resolver names the cycle.
                    if !seen.insert(p.id) {
                        break;
                    }
                    out.push(p);
                }
                Ok(out)
            }
        }
    };
}

pub(crate) use impl_console_store;
