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
                let mut tx = self.writer().begin().await?;
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
                errors_since: chrono::DateTime<chrono::Utc>,
                chart_since: chrono::DateTime<chrono::Utc>,
            ) -> $crate::Result<$crate::ConsoleOverview> {
                use $crate::rows::{from_ts, ts};
                use provisio_core::ServerId;
                let by_state: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT state, COUNT(*) FROM jobs WHERE state IN ('pending', 'running', 'failed') \
                     GROUP BY state ORDER BY state",
                )
                .fetch_all(&self.pool)
                .await?;
                // Grouped by an expression, so that no planner walks the state index over
                // every job for its order rather than the recent range of `ix_jobs_finished`.
                let finished: Vec<(String, i64)> = sqlx::query_as(
                    "SELECT state || '' AS st, COUNT(*) FROM jobs \
                     WHERE finished_at IS NOT NULL AND finished_at >= $1 GROUP BY st ORDER BY st",
                )
                .bind(ts(chart_since))
                .fetch_all(&self.pool)
                .await?;
                let failed: Vec<(i64, Option<String>, Option<String>, i64)> = sqlx::query_as(
                    // The newest 5,000 failed jobs, read through the (state, id) index: grouping
                    // straight from the table lets a planner walk a server-led index over
                    // every job instead, and a backlog's breakdown does not need every row.
                    "SELECT server_id, error_kind, SUBSTR(COALESCE(last_error, ''), 1, 120) AS e, COUNT(*) AS n \
                     FROM (SELECT server_id, error_kind, last_error FROM jobs WHERE state = 'failed' \
                           ORDER BY id DESC LIMIT 5000) AS f \
                     GROUP BY server_id, error_kind, e ORDER BY n DESC, server_id LIMIT 50",
                )
                .fetch_all(&self.pool)
                .await?;
                let servers: Vec<(i64,)> = sqlx::query_as("SELECT id FROM servers ORDER BY id")
                    .fetch_all(&self.pool)
                    .await?;
                let errors: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT j.server_id, COUNT(*) FROM job_attempts a JOIN jobs j ON j.id = a.job_id \
                     WHERE a.started_at >= $1 AND a.outcome IN ('transient', 'permanent', 'unknown') GROUP BY j.server_id",
                )
                .bind(ts(errors_since))
                .fetch_all(&self.pool)
                .await?;
                let mut activity = Vec::with_capacity(servers.len());
                for (id,) in servers {
                    let (running,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) FROM jobs WHERE server_id = $1 AND state = 'running'",
                    )
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?;
                    let last: Option<(Option<i64>,)> = sqlx::query_as(
                        "SELECT finished_at FROM jobs WHERE server_id = $1 AND state = 'done' \
                         ORDER BY id DESC LIMIT 1",
                    )
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await?;
                    activity.push($crate::ServerActivity {
                        server_id: ServerId(id),
                        running,
                        errors: errors.iter().find(|e| e.0 == id).map_or(0, |e| e.1),
                        last_success: last.and_then(|l| l.0).map(from_ts).transpose()?,
                    });
                }
                let minutes: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT (finished_at / 60000000) * 60000000 AS m, COUNT(*) FROM jobs \
                     WHERE finished_at IS NOT NULL AND finished_at >= $1 GROUP BY m ORDER BY m",
                )
                .bind(ts(chart_since))
                .fetch_all(&self.pool)
                .await?;
                let deliveries: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
                    "SELECT handler_id, COUNT(*), MAX(last_error) FROM deliveries \
                     WHERE state IN ('pending', 'failed') AND last_error IS NOT NULL \
                     GROUP BY handler_id ORDER BY handler_id",
                )
                .fetch_all(&self.pool)
                .await?;
                Ok($crate::ConsoleOverview {
                    by_state,
                    finished,
                    failed: failed
                        .into_iter()
                        .map(|(s, k, e, n)| (ServerId(s), k.unwrap_or_default(), e.unwrap_or_default(), n))
                        .collect(),
                    servers: activity,
                    per_minute: minutes
                        .into_iter()
                        .map(|(m, n)| Ok((from_ts(m)?, n)))
                        .collect::<$crate::Result<_>>()?,
                    failing_deliveries: deliveries
                        .into_iter()
                        .map(|(h, n, e)| (h, n, e.unwrap_or_default()))
                        .collect(),
                })
            }
        }
    };
}

pub(crate) use impl_console_store;
