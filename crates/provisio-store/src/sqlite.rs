//! The SQLite store: one file, WAL journal, the default for a single node.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::Sqlite;
use tokio::sync::mpsc;

use crate::clock::Sample;
use crate::group::{Group, GroupWrite};
use crate::sql::impl_store;
use crate::sql_console::impl_console_store;
use crate::sql_hooks::impl_hook_store;
use crate::sql_idempotency::impl_idempotency_store;
use crate::sql_secrets::impl_secret_store;
use crate::sql_usage::impl_usage_store;
use crate::{Backend, Clock, Result, Store as _, StoreError};

mod lane;

/// The SQLite store's pools (see [`crate::conns`]): a local file needs no check of idle
/// connections.
pub(crate) type Conns = crate::conns::Conns<Sqlite>;
pub(crate) type Conn = crate::conns::Conn<Sqlite>;

fn sqlite_pool(max: u32) -> crate::conns::Settings {
    crate::conns::Settings {
        max,
        init: None,
        check_idle_after: None,
        acquire_timeout: None,
    }
}

/// What `impl_store!` names this store's pools by.
type DbPool = Conns;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

pub struct SqliteStore {
    /// Readers: WAL lets them run beside the writer.
    pool: Conns,
    /// The one writer connection. SQLite admits one writer at a time anyway; queueing
    /// writers here, in async code, beats letting them sleep in SQLite's busy handler.
    writer: Conns,
    /// Groups the write transactions of concurrent callers into one commit.
    group: Group,
    /// Writes the orders of concurrent callers in shared statements.
    lane: lane::OrderLane,
    clock: Clock,
    /// Dropped with the store, which ends the checkpoint task.
    _checkpoints: mpsc::Sender<()>,
}

/// WAL frames (pages) past which the writer checkpoints on its own after a commit; below
/// it the background checkpoints keep the WAL short. SQLite's default, 1,000, puts a
/// checkpoint and its two fsyncs on the commit path every few hundred orders.
const WRITER_AUTOCHECKPOINT: u32 = 20_000;

/// The writer's page cache (SQLite's default is 2 MiB a connection).
const WRITER_CACHE_KIB: u32 = 32 * 1024;

/// Rows a connection's thread may hand over before the reader takes them.
const ROW_CHANNEL: usize = 1024;

/// How often the background checkpoint copies committed WAL frames into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);

/// Copies the WAL into the database file on a reader connection, beside the writer, so a
/// commit only appends to the WAL. `PASSIVE` never waits for readers or the writer and
/// changes no durability: a committed transaction is in the WAL either way.
fn checkpoints(pool: Conns) -> mpsc::Sender<()> {
    let (stop, mut stopped) = mpsc::channel::<()>(1);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stopped.recv() => return,
                _ = tokio::time::sleep(CHECKPOINT_EVERY) => {}
            }
            if pool.is_closed() {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::debug!(error = %e, "a background WAL checkpoint did not run");
            }
        }
    });
    stop
}

impl SqliteStore {
    /// Opens (creating if missing) the database `url` names: `sqlite://PATH`, `sqlite:PATH`,
    /// `sqlite::memory:` or a bare path.
    pub async fn open(url: &str) -> Result<Self> {
        Self::open_with_clock(url, Clock::system()).await
    }

    /// Opens with `clock` as this node's clock, and sets it to the database's time (which,
    /// for a local file, is the system's).
    pub async fn open_with_clock(url: &str, clock: Clock) -> Result<Self> {
        let url = if url.starts_with("sqlite:") {
            url.to_string()
        } else {
            format!("sqlite://{url}")
        };
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(StoreError::Database)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // WAL with NORMAL loses no committed transaction on a process crash, only
            // (possibly) the last ones on power loss, and is several times faster than FULL.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            // A connection's thread hands rows over in a bounded channel; at the default
            // (50) a claim or a batch read of a few hundred rows puts its thread to sleep
            // and wakes it again every 50 rows.
            .row_buffer_size(ROW_CHANNEL);
        // No memory mapping of the file (SQLite's default, mmap_size 0): mapped pages count
        // in the process's resident size, and an idle `serve` over 1,000,000 services rose
        // from 44 MiB to 817 MiB with 1 GiB mapped, against the 200 MiB bound
        // (`provisio-bench memory`).
        // The pools are the store's own (`conns`): sqlx's pool pings each connection on its way
        // back, a round trip to the connection's thread that a local file never needs.
        // The writer checkpoints only as a backstop: the checkpoints (each with its fsyncs)
        // run beside it, see `checkpoints`. Its page cache is larger than the readers', as
        // every insert lands in every index of the table it writes.
        let writer_opts = opts
            .clone()
            .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT.to_string())
            .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
            .pragma("temp_store", "memory");
        let writer = Conns::open(writer_opts, sqlite_pool(1)).await?;
        let pool = Conns::open(opts, sqlite_pool(8)).await?;
        let group = Group::new(writer.clone());
        let store = Self {
            _checkpoints: checkpoints(pool.clone()),
            pool,
            lane: lane::OrderLane::start(group.clone(), clock.clone()),
            group,
            writer,
            clock,
        };
        crate::clock::warn_if_off(store.sync_clock().await?);
        Ok(store)
    }

    /// SQLite's clock is this process's system clock: one reading in-process gives the
    /// offset exactly (no round trip), where `julianday('now')` would round it to
    /// milliseconds and could stamp times a little ahead of the system clock.
    async fn clock_samples(&self) -> Result<Vec<Sample>> {
        let database = crate::clock::system_now();
        let local = self.clock.local_at(database);
        Ok(vec![Sample {
            sent: local,
            database,
            received: local,
        }])
    }

    fn writer(&self) -> &Conns {
        &self.writer
    }

    /// A write transaction's turn: committed together with the others waiting beside it.
    async fn write(&self) -> Result<GroupWrite<'_>> {
        self.group.write().await
    }

    /// Through the lane: the orders of callers that arrive together share statements.
    async fn store_orders(
        &self,
        orders: &[(
            provisio_core::service::NewService,
            Option<provisio_core::job::NewJob>,
        )],
        announce: crate::Announce,
    ) -> Result<crate::Stored> {
        self.lane.store(orders, announce).await
    }

    fn backend_kind() -> Backend {
        Backend::Sqlite
    }

    /// Outcome writes join the other writes' groups: SQLite has one writer.
    async fn queue_write(&self) -> Result<GroupWrite<'_>> {
        self.write().await
    }

    async fn close_queue(&self) {}

    /// SQLite has one writer at a time, so no row locks are needed in a claim.
    /// Locks a row read in a transaction that will write it back.
    const ROW_LOCK: &'static str = "";

    const LOCK_CLAUSE: &'static str = "";

    /// The connection a claim runs on: the writer.
    async fn claim_conn(&self) -> Result<Conn> {
        Ok(self.writer.acquire().await?)
    }

    /// A claim reads then writes: take the write lock up front, or a writer that commits in
    /// between would make the upgrade fail.
    async fn begin_claim(conn: &mut Conn) -> Result<sqlx::Transaction<'_, Sqlite>> {
        Ok(sqlx::Connection::begin_with(&mut **conn, "BEGIN IMMEDIATE").await?)
    }

    /// SQLite claims through `claim_tx` under its write lock: one writer, no round trips.
    async fn claim_once(&self, _req: &crate::ClaimRequest<'_>) -> Result<Option<crate::Claimed>> {
        Ok(None)
    }

    /// The versions of the migrations this build carries.
    fn known_migrations() -> impl Iterator<Item = i64> {
        MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration())
            .map(|m| m.version)
    }

    async fn run_migrations(&self) -> Result<()> {
        let mut conn = self.writer.acquire().await?;
        MIGRATOR
            .run_direct(&mut *conn)
            .await
            .map_err(StoreError::Migrate)
    }
}

impl_store!(SqliteStore, Sqlite);
impl_hook_store!(SqliteStore, Sqlite);
impl_usage_store!(SqliteStore, Sqlite);
impl_idempotency_store!(SqliteStore, Sqlite);
impl_console_store!(SqliteStore, Sqlite);
impl_secret_store!(SqliteStore, Sqlite);

/// The multi-row writes of outcomes and events, as VALUES lists (one bind per value).
impl SqliteStore {
    /// The rows of `table` with these ids (at most a few hundred).
    async fn select_by_ids<R>(pool: &Conns, table: &str, ids: &[i64]) -> Result<Vec<R>>
    where
        R: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
    {
        let mut qb =
            sqlx::QueryBuilder::<Sqlite>::new(format!("SELECT * FROM {table} WHERE id IN ("));
        let mut sep = qb.separated(", ");
        for id in ids {
            sep.push_bind(*id);
        }
        qb.push(")");
        Ok(qb.build_query_as().fetch_all(pool).await?)
    }

    /// Writes job states where the job still runs under the update's owner; the ids written.
    async fn write_job_outcomes(
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        now: i64,
        chunk: &[crate::JobUpdate],
    ) -> Result<Vec<i64>> {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
            "UPDATE jobs SET state = v.column2, attempts = v.column3, run_after = v.column4, \
             needs_lookup = v.column5, last_error = v.column6, error_kind = v.column7, \
             lease_owner = NULL, lease_until = NULL, finished_at = v.column8, updated_at = ",
        );
        qb.push_bind(now).push(" FROM (VALUES ");
        for (i, u) in chunk.iter().enumerate() {
            if i > 0 {
                qb.push(", ");
            }
            qb.push("(CAST(")
                .push_bind(u.job_id.0)
                .push(" AS BIGINT), ")
                .push_bind(u.state.as_str())
                .push(", ")
                .push_bind(i64::from(u.attempts))
                .push(", ")
                .push_bind(crate::rows::ts(u.run_after))
                .push(", ")
                .push_bind(u.needs_lookup)
                .push(", ")
                .push_bind(u.last_error.as_deref())
                .push(", ")
                .push_bind(u.error_kind.map(crate::rows::error_kind_str))
                .push(", ")
                .push_bind(u.state.is_final().then_some(now))
                .push(", ")
                .push_bind(&u.owner)
                .push(")");
        }
        qb.push(
            ") AS v WHERE jobs.id = v.column1 AND jobs.state = 'running' \
             AND jobs.lease_owner = v.column9 RETURNING jobs.id",
        );
        Ok(qb.build_query_scalar().fetch_all(&mut **tx).await?)
    }

    async fn insert_attempts(
        tx: &mut sqlx::Transaction<'_, Sqlite>,
        chunk: &[&crate::JobUpdate],
    ) -> Result<()> {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new(
            "INSERT INTO job_attempts (job_id, attempt, started_at, duration_ms, outcome, message) ",
        );
        qb.push_values(chunk, |mut b, u| {
            let a = &u.attempt;
            b.push_bind(u.job_id.0)
                .push_bind(i64::from(a.attempt))
                .push_bind(crate::rows::ts(a.started_at))
                .push_bind(a.duration_ms)
                .push_bind(&a.outcome)
                .push_bind(a.message.as_deref());
        });
        qb.build().execute(&mut **tx).await?;
        Ok(())
    }

    /// Rows of one VALUES list are inserted in order, so ids keep the events' order.
    async fn insert_event_rows(
        conn: &mut sqlx::SqliteConnection,
        now: i64,
        chunk: &[provisio_core::event::NewEvent],
    ) -> Result<()> {
        let mut qb = sqlx::QueryBuilder::<Sqlite>::new("");
        Self::push_event_rows(&mut qb, now, chunk);
        qb.build().execute(&mut *conn).await?;
        Ok(())
    }

    /// `INSERT INTO events …` for `chunk`, pushed onto `qb`, stamped with the current actor
    /// and depth where an event names none.
    fn push_event_rows<'a>(
        qb: &mut sqlx::QueryBuilder<'a, Sqlite>,
        now: i64,
        chunk: &'a [provisio_core::event::NewEvent],
    ) {
        let current = crate::actor::stored();
        let depth = crate::actor::current_depth();
        qb.push("INSERT INTO events (type, at, subject, payload, actor, depth) ");
        qb.push_values(chunk, |mut b, e| {
            b.push_bind(e.kind.as_str())
                .push_bind(now)
                .push_bind(&e.subject)
                .push_bind(sqlx::types::Json(&e.payload))
                .push_bind(
                    e.actor
                        .as_ref()
                        .map(|a| a.stored())
                        .or_else(|| current.clone()),
                )
                .push_bind(i64::from(e.depth.unwrap_or(depth)));
        });
    }
}
