//! The store's own connection pools: connections lent out and taken back without the
//! round trip sqlx's pool makes on every return.
//!
//! sqlx's pool pings each connection on its way back, in a task spawned for it, before
//! anyone else may have it, and (by default) again before lending it. For SQLite a ping is
//! a command to the connection's thread and an answer back; for PostgreSQL it is a Sync
//! message over the socket and the server's ReadyForQuery, a network round trip and a
//! wake-up of a server process. Neither buys anything that the next statement does not do
//! anyway: a SQLite connection's thread runs its commands in the order they were sent, and
//! sqlx's PostgreSQL connection sends whatever a dropped caller left queued (a rollback,
//! say) and reads every answer still owed before its next statement. So whatever a dropped
//! caller left runs before the next caller's statements all the same.
//!
//! Removing the ping took SQLite's store enqueue from 11,600-13,200/s to 12,600-16,700/s
//! (`docs/performance.md`). On PostgreSQL every read of an order (its client, its servers'
//! loads) paid three round trips for one.
//!
//! A connection whose transport failed (an I/O or protocol error, a crashed worker thread)
//! is closed rather than lent again; the pool opens a new one when asked. A connection
//! that sat idle longer than the pool's `check_idle_after` (PostgreSQL: a server may have
//! dropped it meanwhile) is pinged before it is lent, so a quiet night does not cost the
//! morning's first caller an error.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::TryStreamExt as _;
use sqlx::{ConnectOptions, Connection, Database, Either, Execute, Executor as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Options<DB> = <<DB as Database>::Connection as Connection>::Options;

/// The databases the store pools connections to.
pub(crate) trait Db: Database {
    /// Runs `sql` (statements with no binds) on `conn`.
    fn run<'a>(
        conn: &'a mut Self::Connection,
        sql: &'static str,
    ) -> BoxFuture<'a, sqlx::Result<()>>;
}

/// Up to `max` connections to one database, opened when first needed; clones share them.
pub(crate) struct Conns<DB: Database> {
    inner: Arc<Inner<DB>>,
}

impl<DB: Database> Clone for Conns<DB> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

/// How a pool opens and checks its connections.
pub(crate) struct Settings {
    /// Connections open at most.
    pub max: u32,
    /// Run on every new connection before it is first lent (session settings).
    pub init: Option<&'static str>,
    /// For a database over a network: a connection idle longer than this, or given back
    /// without [`Conn::ended_cleanly`] after statements of its borrower's own, is pinged
    /// before it is lent again, and replaced if that fails.
    pub check_idle_after: Option<Duration>,
    /// How long a caller waits for a connection before it is told the pool timed out.
    pub acquire_timeout: Option<Duration>,
}

struct Idle<C> {
    conn: C,
    since: Instant,
    /// Its last borrower used it directly and did not say that use ended cleanly.
    unsure: bool,
}

struct Inner<DB: Database> {
    options: Options<DB>,
    settings: Settings,
    idle: Mutex<Vec<Idle<DB::Connection>>>,
    /// One permit per connection that may be lent; closed when the pool is.
    permits: Arc<Semaphore>,
}

/// A lent connection, back in its pool when dropped.
pub(crate) struct Conn<DB: Database> {
    conn: Option<DB::Connection>,
    inner: Arc<Inner<DB>>,
    /// Whether the connection's transport failed: it is closed, not lent again.
    broken: bool,
    /// Whether the borrower's own statements on it (through `DerefMut`) may have failed.
    unsure: bool,
    // Dropped after `drop` has put the connection back, so a waiter finds it idle.
    _permit: OwnedSemaphorePermit,
}

impl<DB: Db> Conns<DB> {
    /// Opens the first connection now, so a database that cannot be reached is an error
    /// here rather than at the first statement.
    pub(crate) async fn open(options: Options<DB>, settings: Settings) -> sqlx::Result<Self> {
        let max = settings.max;
        let inner = Arc::new(Inner {
            options,
            settings,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(max as usize)),
        });
        let first = inner.connect().await?;
        inner.idle().push(Idle {
            conn: first,
            since: Instant::now(),
            unsure: false,
        });
        Ok(Self { inner })
    }

    /// Waits for a connection, opening one if none is idle and fewer than `max` are open.
    pub(crate) async fn acquire(&self) -> sqlx::Result<Conn<DB>> {
        let permit = self.inner.permits.clone().acquire_owned();
        let permit = match self.inner.settings.acquire_timeout {
            Some(t) => tokio::time::timeout(t, permit)
                .await
                .map_err(|_| sqlx::Error::PoolTimedOut)?,
            None => permit.await,
        }
        .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.inner.idle().pop();
        let conn = match idle {
            Some(mut idle) => match self.inner.settings.check_idle_after {
                Some(after) if idle.unsure || idle.since.elapsed() > after => {
                    match idle.conn.ping().await {
                        Ok(()) => idle.conn,
                        Err(e) => {
                            tracing::info!(error = %e, "an idle database connection was lost; opening another");
                            self.inner.connect().await?
                        }
                    }
                }
                _ => idle.conn,
            },
            None => self.inner.connect().await?,
        };
        Ok(Conn {
            conn: Some(conn),
            inner: self.inner.clone(),
            broken: false,
            unsure: false,
            _permit: permit,
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.permits.is_closed()
    }

    /// Waits for every lent connection to come back, closes them all, and refuses to lend
    /// any more.
    pub(crate) async fn close(&self) {
        let Ok(all) = self
            .inner
            .permits
            .acquire_many(self.inner.settings.max)
            .await
        else {
            return;
        };
        self.inner.permits.close();
        let idle = std::mem::take(&mut *self.inner.idle());
        for idle in idle {
            let _ = idle.conn.close().await;
        }
        drop(all);
    }
}

impl<DB: Database> std::fmt::Debug for Conns<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("max", &self.inner.settings.max)
            .field("lendable", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl<DB: Db> Inner<DB> {
    async fn connect(&self) -> sqlx::Result<DB::Connection> {
        let mut conn = self.options.connect().await?;
        if let Some(init) = self.settings.init {
            DB::run(&mut conn, init).await?;
        }
        Ok(conn)
    }
}

impl<DB: Database> Inner<DB> {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle<DB::Connection>>> {
        // The list is only pushed to and popped from: a panic elsewhere leaves it whole.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<DB: Database> Conn<DB> {
    /// Closes this connection instead of returning it: a transaction may be open on it.
    pub(crate) async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// Says that the borrower's own statements ended well (a transaction committed): the
    /// next borrower need not have the connection checked first.
    pub(crate) fn ended_cleanly(&mut self) {
        self.unsure = false;
    }

    /// The connection, for statements whose errors this pool sees itself (`note`).
    fn raw(&mut self) -> &mut DB::Connection {
        self.conn.as_mut().expect("present until dropped or closed")
    }

    /// Notes an error from this connection; one that means its transport is gone keeps
    /// the connection from being lent again.
    pub(crate) fn note(&mut self, e: &sqlx::Error) {
        let transport = matches!(
            e,
            sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed
        );
        // PostgreSQL ends a session with a FATAL error of these classes: a connection
        // exception (08) or operator intervention, such as a terminated backend (57P).
        let ended = e
            .as_database_error()
            .and_then(|d| d.code())
            .is_some_and(|c| c.starts_with("08") || c.starts_with("57P"));
        if transport || ended {
            self.broken = true;
        }
    }
}

impl<DB: Database> std::ops::Deref for Conn<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        self.conn.as_ref().expect("present until dropped or closed")
    }
}

impl<DB: Database> std::ops::DerefMut for Conn<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.unsure = true;
        self.raw()
    }
}

impl<DB: Database> Drop for Conn<DB> {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !self.broken && !self.inner.permits.is_closed() {
                self.inner.idle().push(Idle {
                    conn,
                    since: Instant::now(),
                    unsure: self.unsure,
                });
            }
            // Otherwise it is dropped: SQLite's thread closes the database handle, and
            // PostgreSQL's socket is shut.
        }
    }
}

/// Statements on the pool run on a connection lent for that statement alone, as on
/// sqlx's own pools.
macro_rules! pooled {
    ($db:ty) => {
        impl Db for $db {
            fn run<'a>(
                conn: &'a mut <$db as Database>::Connection,
                sql: &'static str,
            ) -> BoxFuture<'a, sqlx::Result<()>> {
                Box::pin(async move {
                    conn.execute(sql).await?;
                    Ok(())
                })
            }
        }

        impl<'c> sqlx::Executor<'c> for &'c Conns<$db> {
            type Database = $db;

            fn fetch_many<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> BoxStream<
                'e,
                sqlx::Result<Either<<$db as Database>::QueryResult, <$db as Database>::Row>>,
            >
            where
                'c: 'e,
                E: 'q + Execute<'q, $db>,
            {
                Box::pin(async_stream::try_stream! {
                    let mut conn = self.acquire().await?;
                    let mut items = conn.raw().fetch_many(query);
                    let ended = loop {
                        match items.try_next().await {
                            Ok(Some(item)) => yield item,
                            Ok(None) => break Ok(()),
                            Err(e) => break Err(e),
                        }
                    };
                    drop(items);
                    if let Err(e) = ended {
                        conn.note(&e);
                        Err(e)?;
                    }
                })
            }

            fn fetch_optional<'e, 'q: 'e, E>(
                self,
                query: E,
            ) -> BoxFuture<'e, sqlx::Result<Option<<$db as Database>::Row>>>
            where
                'c: 'e,
                E: 'q + Execute<'q, $db>,
            {
                Box::pin(async move {
                    let mut conn = self.acquire().await?;
                    let r = conn.raw().fetch_optional(query).await;
                    if let Err(e) = &r {
                        conn.note(e);
                    }
                    r
                })
            }

            fn prepare_with<'e, 'q: 'e>(
                self,
                sql: &'q str,
                parameters: &'e [<$db as Database>::TypeInfo],
            ) -> BoxFuture<'e, sqlx::Result<<$db as Database>::Statement<'q>>>
            where
                'c: 'e,
            {
                Box::pin(async move {
                    let mut conn = self.acquire().await?;
                    conn.raw().prepare_with(sql, parameters).await
                })
            }

            fn describe<'e, 'q: 'e>(
                self,
                sql: &'q str,
            ) -> BoxFuture<'e, sqlx::Result<sqlx::Describe<$db>>>
            where
                'c: 'e,
            {
                Box::pin(async move {
                    let mut conn = self.acquire().await?;
                    conn.raw().describe(sql).await
                })
            }
        }
    };
}

pooled!(sqlx::Sqlite);
pooled!(sqlx::Postgres);

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;
    use std::time::Duration;

    use sqlx::postgres::PgConnectOptions;
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{Connection as _, Postgres, Sqlite, TransactionManager as _};

    use super::*;

    fn settings(max: u32) -> Settings {
        Settings {
            max,
            init: None,
            check_idle_after: None,
            acquire_timeout: None,
        }
    }

    async fn conns(dir: &tempfile::TempDir, max: u32) -> Conns<Sqlite> {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let conns = Conns::<Sqlite>::open(options, settings(max)).await.unwrap();
        sqlx::query("CREATE TABLE t (v INTEGER)")
            .execute(&conns)
            .await
            .unwrap();
        conns
    }

    #[tokio::test]
    async fn lends_at_most_max_and_the_next_caller_gets_one_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let conns = conns(&dir, 2).await;
        let a = conns.acquire().await.unwrap();
        let _b = conns.acquire().await.unwrap();
        let third = tokio::time::timeout(Duration::from_millis(100), conns.acquire()).await;
        assert!(
            third.is_err(),
            "a third connection was lent beyond the bound of 2"
        );
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(5), conns.acquire()).await;
        assert!(c.expect("the connection given back was not lent").is_ok());
    }

    #[tokio::test]
    async fn a_transaction_dropped_open_is_rolled_back_before_the_next_use() {
        let dir = tempfile::tempdir().unwrap();
        // One connection: the next caller gets the very one the transaction was left on.
        let conns = conns(&dir, 1).await;
        {
            let mut conn = conns.acquire().await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("INSERT INTO t (v) VALUES (1)")
                .execute(&mut *tx)
                .await
                .unwrap();
            // Dropped uncommitted, and the connection given back with no round trip.
        }
        let mut conn = conns.acquire().await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(n, 0, "the dropped transaction's insert was seen");
        assert_eq!(
            sqlx::sqlite::SqliteTransactionManager::get_transaction_depth(&conn),
            0
        );
        // And it writes: no transaction was left open under the next caller's statements.
        sqlx::query("INSERT INTO t (v) VALUES (2)")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&conns)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    #[tokio::test]
    async fn close_waits_for_lent_connections_and_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let conns = conns(&dir, 2).await;
        let lent = conns.acquire().await.unwrap();
        let closing = tokio::spawn({
            let conns = conns.clone();
            async move { conns.close().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !closing.is_finished(),
            "close did not wait for the lent connection"
        );
        drop(lent);
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .expect("close did not finish once the connection came back")
            .unwrap();
        assert!(conns.is_closed());
        assert!(matches!(
            conns.acquire().await,
            Err(sqlx::Error::PoolClosed)
        ));
    }

    /// A database of its own on the cluster `scripts/test` started, with one table.
    async fn pg_options(test: &str) -> PgConnectOptions {
        let admin = std::env::var("PROVISIO_TEST_PG_URL")
            .expect("PROVISIO_TEST_PG_URL is not set: run scripts/test, which starts PostgreSQL");
        let admin = PgConnectOptions::from_str(&admin).unwrap();
        let name = format!("conns_{test}_{}", std::process::id());
        let mut conn = admin.connect().await.unwrap();
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            sqlx::raw_sql(&sql).execute(&mut conn).await.unwrap();
        }
        let options = admin.database(&name);
        let mut conn = options.connect().await.unwrap();
        sqlx::raw_sql("CREATE TABLE t (v BIGINT)")
            .execute(&mut conn)
            .await
            .unwrap();
        options
    }

    #[tokio::test]
    async fn postgres_a_transaction_dropped_open_is_rolled_back_and_settings_hold() {
        let options = pg_options("dropped").await;
        let conns = Conns::<Postgres>::open(
            options,
            Settings {
                max: 1,
                init: Some("SET application_name = 'conns_test'"),
                check_idle_after: None,
                acquire_timeout: None,
            },
        )
        .await
        .unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&conns)
            .await
            .unwrap();
        {
            let mut conn = conns.acquire().await.unwrap();
            let mut tx = conn.begin().await.unwrap();
            sqlx::query("INSERT INTO t (v) VALUES (1)")
                .execute(&mut *tx)
                .await
                .unwrap();
            // Dropped uncommitted: the rollback is only queued, and nothing is sent back.
        }
        let mut conn = conns.acquire().await.unwrap();
        let (n, again, name): (i64, i32, String) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM t), pg_backend_pid(), current_setting('application_name')",
        )
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        assert_eq!(again, pid, "the one connection was not the one given back");
        assert_eq!(n, 0, "the dropped transaction's insert was seen");
        assert_eq!(
            name, "conns_test",
            "the pool's session setting was not applied"
        );
        assert_eq!(
            sqlx::postgres::PgTransactionManager::get_transaction_depth(&conn),
            0
        );
        // Not inside the dropped transaction: this insert stays after the connection's end.
        sqlx::query("INSERT INTO t (v) VALUES (2)")
            .execute(&mut *conn)
            .await
            .unwrap();
        drop(conn);
        conns.close().await;
        let mut conn = conns.inner.options.connect().await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM t")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 1);
    }

    /// Ends the backend behind the connection whose process id is `pid`.
    async fn terminate(options: &PgConnectOptions, pid: i32) {
        let mut admin = options.connect().await.unwrap();
        sqlx::query("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .execute(&mut admin)
            .await
            .unwrap();
        // The backend's end reaches the client's socket a moment later.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// A pool of one connection, checked after it sat idle for `after`.
    async fn one_checked_after(options: &PgConnectOptions, after: Duration) -> Conns<Postgres> {
        let settings = Settings {
            max: 1,
            init: None,
            check_idle_after: Some(after),
            acquire_timeout: None,
        };
        Conns::<Postgres>::open(options.clone(), settings)
            .await
            .unwrap()
    }

    async fn pid(conns: &Conns<Postgres>) -> sqlx::Result<i32> {
        sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(conns)
            .await
    }

    #[tokio::test]
    async fn postgres_a_connection_lost_while_idle_is_checked_and_replaced() {
        let options = pg_options("idle").await;
        let conns = one_checked_after(&options, Duration::from_millis(50)).await;
        let first = pid(&conns).await.unwrap();
        terminate(&options, first).await;
        let second = pid(&conns)
            .await
            .expect("a connection lost while idle was lent");
        assert_ne!(second, first);
    }

    #[tokio::test]
    async fn postgres_a_connection_that_failed_in_use_is_not_lent_again() {
        let options = pg_options("in_use").await;
        // Idle connections are not checked in this test's time: only failures count.
        let conns = one_checked_after(&options, Duration::from_secs(3600)).await;
        // A statement through the pool fails: the pool saw the error and drops the
        // connection; only that caller is told.
        let first = pid(&conns).await.unwrap();
        terminate(&options, first).await;
        pid(&conns)
            .await
            .expect_err("a statement on a terminated backend succeeded");
        let second = pid(&conns)
            .await
            .expect("the connection that failed was lent again");
        assert_ne!(second, first);
        // A borrower's own statements fail, unseen by the pool: given back without
        // `ended_cleanly`, the connection is checked before it is lent again.
        terminate(&options, second).await;
        {
            let mut conn = conns.acquire().await.unwrap();
            sqlx::query("SELECT 1")
                .execute(&mut *conn)
                .await
                .expect_err("a statement on a terminated backend succeeded");
        }
        let third = pid(&conns)
            .await
            .expect("a connection given back after its borrower's failure was lent unchecked");
        assert_ne!(third, second);
        // And one that ended cleanly is lent with no check: the same backend.
        {
            let mut conn = conns.acquire().await.unwrap();
            sqlx::query("SELECT 1").execute(&mut *conn).await.unwrap();
            conn.ended_cleanly();
        }
        assert_eq!(pid(&conns).await.unwrap(), third);
    }
}
