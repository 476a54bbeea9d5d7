//! The PostgreSQL store: for several `serve` processes sharing one database.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::Postgres;

use crate::clock::{Sample, SAMPLES};
use crate::sql::impl_store;
use crate::sql_console::impl_console_store;
use crate::sql_hooks::impl_hook_store;
use crate::sql_idempotency::impl_idempotency_store;
use crate::sql_secrets::impl_secret_store;
use crate::sql_usage::impl_usage_store;
use crate::{Backend, Clock, Result, Store as _, StoreError};
use provisio_core::job::Job;

/// The store's pools (see [`crate::conns`]), and what `impl_store!` names them by.
type Conns = crate::conns::Conns<Postgres>;
type Conn = crate::conns::Conn<Postgres>;
type DbPool = Conns;

/// An idle connection older than this is checked before it is lent: the server, or
/// something between, may have closed it meanwhile.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(5);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// A worker claims and writes outcomes one at a time each: one connection for each.
const QUEUE_CONNECTIONS: u32 = 2;

/// How long a caller waits for a connection before its request fails.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);

pub struct PgStore {
    pool: Conns,
    /// The worker's claims and outcome writes, on connections of their own: they run one
    /// at a time per worker, so two connections kept open keep their prepared statements
    /// and plans warm, where the shared pool would hand each claim the least recently used
    /// of sixteen, each compiling the claim function and planning anew.
    queue: Conns,
    /// What job notifications' listening connections are opened with.
    options: PgConnectOptions,
    clock: Clock,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with_clock(url, Clock::system()).await
    }

    /// Connects with `clock` as this node's clock, and sets it to the database's time.
    pub async fn connect_with_clock(url: &str, clock: Clock) -> Result<Self> {
        let options = PgConnectOptions::from_str(url)?;
        let pool = Conns::open(
            options.clone(),
            crate::conns::Settings {
                max: 16,
                init: None,
                check_idle_after: Some(CHECK_IDLE_AFTER),
                acquire_timeout: Some(ACQUIRE_TIMEOUT),
            },
        )
        .await?;
        let queue = Conns::open(
            options.clone(),
            crate::conns::Settings {
                max: QUEUE_CONNECTIONS,
                // The queue's statements take arrays, so one generic plan fits every
                // batch; without this each connection plans its first five calls of each
                // anew (custom plans), a millisecond apiece for the claim.
                init: Some("SET plan_cache_mode = force_generic_plan"),
                check_idle_after: Some(CHECK_IDLE_AFTER),
                acquire_timeout: Some(ACQUIRE_TIMEOUT),
            },
        )
        .await?;
        let store = Self {
            pool,
            queue,
            options,
            clock,
        };
        crate::clock::warn_if_off(store.sync_clock().await?);
        Ok(store)
    }

    fn backend_kind() -> Backend {
        Backend::Postgres
    }

    /// An outcome write's connection: the queue's own (see [`PgStore::queue`]).
    async fn queue_write(&self) -> Result<crate::group::DirectWrite<Postgres>> {
        Ok(crate::group::DirectWrite(self.queue.acquire().await?))
    }

    async fn close_queue(&self) {
        self.queue.close().await;
    }

    /// Readings of the database's clock (`clock_timestamp()`: the time of the reading, not
    /// of the transaction's start), all on one connection so that none waits for the pool.
    async fn clock_samples(&self) -> Result<Vec<Sample>> {
        let mut conn = self.pool.acquire().await?;
        let mut samples = Vec::with_capacity(SAMPLES);
        for _ in 0..SAMPLES {
            let sent = self.clock.local_now();
            let (db,): (i64,) = sqlx::query_as(
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000000 AS BIGINT)",
            )
            .fetch_one(&mut *conn)
            .await?;
            let received = self.clock.local_now();
            samples.push(Sample {
                sent,
                database: crate::rows::from_ts(db)?,
                received,
            });
        }
        conn.ended_cleanly();
        Ok(samples)
    }

    fn writer(&self) -> &Conns {
        &self.pool
    }

    /// A write transaction's turn: PostgreSQL commits concurrent transactions itself.
    async fn write(&self) -> Result<crate::group::DirectWrite<Postgres>> {
        Ok(crate::group::DirectWrite(self.pool.acquire().await?))
    }

    /// One caller's orders in a transaction of its own: the server commits concurrent
    /// callers' transactions together itself.
    async fn store_orders(
        &self,
        orders: &[(
            provisio_core::service::NewService,
            Option<provisio_core::job::NewJob>,
        )],
        announce: crate::Announce,
    ) -> Result<crate::Stored> {
        let mut conn = self.pool.acquire().await?;
        let mut tx = sqlx::Connection::begin(&mut *conn).await?;
        let out = orders_tx(&mut tx, self.clock.now(), orders, announce, Self::ROW_LOCK).await?;
        tx.commit().await?;
        conn.ended_cleanly();
        Ok(out)
    }

    /// Rows another claimer is taking are skipped rather than waited for.
    /// Locks a row read in a transaction that will write it back.
    const ROW_LOCK: &'static str = " FOR UPDATE";

    const LOCK_CLAUSE: &'static str = " FOR UPDATE SKIP LOCKED";

    /// The connection a claim runs on.
    async fn claim_conn(&self) -> Result<Conn> {
        Ok(self.pool.acquire().await?)
    }

    /// Delivery and rule-run claims from all processes take turns (a transaction-scoped
    /// advisory lock of their own, so they never wait behind job claims).
    async fn begin_claim(conn: &mut Conn) -> Result<sqlx::Transaction<'_, Postgres>> {
        let mut tx = sqlx::Connection::begin(&mut **conn).await?;
        sqlx::query("SELECT pg_advisory_xact_lock(847002)")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// A job claim is one call of `provisio_claim_jobs` (migrations 0016, 0020): it takes the job
    /// claims' advisory lock, so claims from all processes take turns and the running
    /// counts they read are exact (`max_concurrent` holds globally), then reads capacity
    /// and claims in one statement. One round trip, with the same text whatever the batch
    /// (arrays, not a bind per id), so the prepared statement is reused.
    async fn claim_once(&self, req: &crate::ClaimRequest<'_>) -> Result<Option<crate::Claimed>> {
        let asked = std::time::Instant::now();
        let mut conn = self.queue.acquire().await?;
        // The lease starts when the claim gets its turn: the wait for a connection is
        // counted here, the wait for the lock inside the function.
        let waited = chrono::Duration::from_std(asked.elapsed()).unwrap_or_default();
        let now = crate::rows::ts(req.now + waited);
        let window = (req.lease_until - req.now)
            .num_microseconds()
            .unwrap_or(0)
            .max(0);
        let (capped, caps): (Vec<i64>, Vec<i64>) = req
            .allowance
            .iter()
            .map(|(s, a)| (s.0, i64::from(*a)))
            .unzip();
        let finishing: Vec<i64> = req.finishing.iter().map(|j| j.0).collect();
        let started: Vec<i64> = req.started.iter().map(|j| j.0).collect();
        let (ahead_at, ahead): (Vec<i64>, Vec<i64>) = req
            .standby
            .iter()
            .map(|(s, n)| (s.0, i64::from(*n)))
            .unzip();
        let rows: Vec<crate::rows::JobRow> = sqlx::query_as(
            "SELECT * FROM provisio_claim_jobs($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(req.owner)
        .bind(now)
        .bind(crate::rows::ts(req.lease_until + waited))
        .bind(now - window)
        .bind(i64::from(req.max_total))
        .bind(&capped)
        .bind(&caps)
        .bind(&finishing)
        .bind(&ahead_at)
        .bind(&ahead)
        .bind(&started)
        .fetch_all(&mut *conn)
        .await?;
        conn.ended_cleanly();
        let mut out = crate::Claimed::default();
        for row in rows {
            let standby = row.standby();
            let job: Job = row.try_into()?;
            if standby {
                out.standby.push(job);
            } else {
                out.run.push(job);
            }
        }
        out.run.sort_by_key(|j| j.id);
        out.standby.sort_by_key(|j| j.id);
        Ok(Some(out))
    }

    /// The versions of the migrations this build carries.
    fn known_migrations() -> impl Iterator<Item = i64> {
        MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
    }

    async fn run_migrations(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        MIGRATOR
            .run_direct(&mut *conn)
            .await
            .map_err(StoreError::Migrate)?;
        conn.ended_cleanly();
        Ok(())
    }
}

impl_store!(PgStore, Postgres, {
    async fn job_notifications(&self) -> Result<Option<crate::JobNotifications>> {
        Ok(Some(crate::JobNotifications::listen(&self.options).await?))
    }
});
impl_hook_store!(PgStore, Postgres);
impl_usage_store!(PgStore, Postgres);
impl_idempotency_store!(PgStore, Postgres);
impl_console_store!(PgStore, Postgres);
impl_secret_store!(PgStore, Postgres);

/// The multi-row writes of outcomes and events, as one array per column: the statement's
/// text is the same for every batch size, so each connection prepares it once.
impl PgStore {
    /// The rows of `table` with these ids, in one statement whatever their number.
    async fn select_by_ids<R>(pool: &Conns, table: &str, ids: &[i64]) -> Result<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        Ok(
            sqlx::query_as(&format!("SELECT * FROM {table} WHERE id = ANY ($1)"))
                .bind(ids)
                .fetch_all(pool)
                .await?,
        )
    }

    /// Writes job states where the job still runs under the update's owner (checked per
    /// row: an outcome is written only while its lease is held); the ids written.
    async fn write_job_outcomes(
        tx: &mut sqlx::Transaction<'_, Postgres>,
        now: i64,
        chunk: &[crate::JobUpdate],
    ) -> Result<Vec<i64>> {
        let ids: Vec<i64> = chunk.iter().map(|u| u.job_id.0).collect();
        let states: Vec<&str> = chunk.iter().map(|u| u.state.as_str()).collect();
        let attempts: Vec<i64> = chunk.iter().map(|u| i64::from(u.attempts)).collect();
        let run_after: Vec<i64> = chunk.iter().map(|u| crate::rows::ts(u.run_after)).collect();
        let lookup: Vec<bool> = chunk.iter().map(|u| u.needs_lookup).collect();
        let errors: Vec<Option<&str>> = chunk.iter().map(|u| u.last_error.as_deref()).collect();
        let kinds: Vec<Option<&str>> = chunk
            .iter()
            .map(|u| u.error_kind.map(crate::rows::error_kind_str))
            .collect();
        let finished: Vec<Option<i64>> = chunk
            .iter()
            .map(|u| u.state.is_final().then_some(now))
            .collect();
        let owners: Vec<&str> = chunk.iter().map(|u| u.owner.as_str()).collect();
        Ok(sqlx::query_scalar(
            "UPDATE jobs SET state = v.state, attempts = v.attempts, run_after = v.run_after, \
             needs_lookup = v.needs_lookup, last_error = v.last_error, error_kind = v.error_kind, \
             lease_owner = NULL, lease_until = NULL, finished_at = v.finished_at, updated_at = $1 \
             FROM UNNEST($2::BIGINT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::BOOLEAN[], \
             $7::TEXT[], $8::TEXT[], $9::BIGINT[], $10::TEXT[]) \
             AS v (id, state, attempts, run_after, needs_lookup, last_error, error_kind, \
             finished_at, owner) \
             WHERE jobs.id = v.id AND jobs.state = 'running' AND jobs.lease_owner = v.owner \
             RETURNING jobs.id",
        )
        .bind(now)
        .bind(&ids)
        .bind(&states)
        .bind(&attempts)
        .bind(&run_after)
        .bind(&lookup)
        .bind(&errors)
        .bind(&kinds)
        .bind(&finished)
        .bind(&owners)
        .fetch_all(&mut **tx)
        .await?)
    }

    async fn insert_attempts(
        tx: &mut sqlx::Transaction<'_, Postgres>,
        chunk: &[&crate::JobUpdate],
    ) -> Result<()> {
        let jobs: Vec<i64> = chunk.iter().map(|u| u.job_id.0).collect();
        let numbers: Vec<i64> = chunk.iter().map(|u| i64::from(u.attempt.attempt)).collect();
        let started: Vec<i64> = chunk
            .iter()
            .map(|u| crate::rows::ts(u.attempt.started_at))
            .collect();
        let durations: Vec<i64> = chunk.iter().map(|u| u.attempt.duration_ms).collect();
        let outcomes: Vec<&str> = chunk.iter().map(|u| u.attempt.outcome.as_str()).collect();
        let messages: Vec<Option<&str>> =
            chunk.iter().map(|u| u.attempt.message.as_deref()).collect();
        sqlx::query(
            "INSERT INTO job_attempts (job_id, attempt, started_at, duration_ms, outcome, message) \
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], \
             $5::TEXT[], $6::TEXT[])",
        )
        .bind(&jobs)
        .bind(&numbers)
        .bind(&started)
        .bind(&durations)
        .bind(&outcomes)
        .bind(&messages)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Inserted in the order of `chunk` (`WITH ORDINALITY`), so ids keep the events' order.
    async fn insert_event_rows(
        conn: &mut sqlx::PgConnection,
        now: i64,
        chunk: &[provisio_core::event::NewEvent],
    ) -> Result<()> {
        let current = crate::actor::stored();
        let depth = crate::actor::current_depth();
        let kinds: Vec<&str> = chunk.iter().map(|e| e.kind.as_str()).collect();
        let subjects: Vec<&str> = chunk.iter().map(|e| e.subject.as_str()).collect();
        let payloads: Vec<sqlx::types::Json<&serde_json::Value>> = chunk
            .iter()
            .map(|e| sqlx::types::Json(&e.payload))
            .collect();
        let actors: Vec<Option<String>> = chunk
            .iter()
            .map(|e| {
                e.actor
                    .as_ref()
                    .map(|a| a.stored())
                    .or_else(|| current.clone())
            })
            .collect();
        let depths: Vec<i64> = chunk
            .iter()
            .map(|e| i64::from(e.depth.unwrap_or(depth)))
            .collect();
        sqlx::query(
            "INSERT INTO events (type, at, subject, payload, actor, depth) \
             SELECT v.type, $1, v.subject, v.payload, v.actor, v.depth \
             FROM UNNEST($2::TEXT[], $3::TEXT[], $4::JSONB[], $5::TEXT[], $6::BIGINT[]) \
             WITH ORDINALITY AS v (type, subject, payload, actor, depth, n) ORDER BY v.n",
        )
        .bind(now)
        .bind(&kinds)
        .bind(&subjects)
        .bind(&payloads)
        .bind(&actors)
        .bind(&depths)
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}
