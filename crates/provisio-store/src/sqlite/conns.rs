//! The SQLite store's own connection pools: connections lent out and taken back without
//! the round trip sqlx's pool makes on every return.
//!
//! sqlx's pool pings each connection on its way back, in a task spawned for it, before
//! anyone else may have it: for SQLite a command to the connection's thread and an answer
//! back, two thread wake-ups per use. A connection to a local file does not go stale, and
//! a connection's thread runs its commands in the order they were sent, so whatever a
//! dropped caller left queued (a rollback, say) runs before the next caller's statements
//! all the same. The ping bought nothing here and cost the writer a round trip per write:
//! removing it (with a patched sqlx, `docs/performance.md`) took the store's enqueue from
//! 11,600-13,200/s to 12,600-16,700/s.
//!
//! A connection whose thread failed (an I/O error, a crashed worker) is closed rather than
//! lent again; the pool opens a new one when asked.

use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::TryStreamExt as _;
use sqlx::sqlite::{SqliteConnectOptions, SqliteQueryResult, SqliteRow, SqliteStatement};
use sqlx::{ConnectOptions as _, Connection as _, Either, Execute, Sqlite, SqliteConnection};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Up to `max` connections to one database, opened when first needed; clones share them.
#[derive(Clone)]
pub(crate) struct Conns {
    inner: Arc<Inner>,
}

struct Inner {
    options: SqliteConnectOptions,
    max: u32,
    idle: Mutex<Vec<SqliteConnection>>,
    /// One permit per connection that may be lent; closed when the pool is.
    permits: Arc<Semaphore>,
}

/// A lent connection, back in its pool when dropped.
pub(crate) struct Conn {
    conn: Option<SqliteConnection>,
    inner: Arc<Inner>,
    /// Whether the connection's thread failed: it is closed, not lent again.
    broken: bool,
    // Dropped after `drop` has put the connection back, so a waiter finds it idle.
    _permit: OwnedSemaphorePermit,
}

impl Conns {
    /// Opens the first connection now, so a database that cannot be opened is an error
    /// here rather than at the first statement.
    pub(crate) async fn open(options: SqliteConnectOptions, max: u32) -> sqlx::Result<Self> {
        let first = options.connect().await?;
        Ok(Self {
            inner: Arc::new(Inner {
                options,
                max,
                idle: Mutex::new(vec![first]),
                permits: Arc::new(Semaphore::new(max as usize)),
            }),
        })
    }

    /// Waits for a connection, opening one if none is idle and fewer than `max` are open.
    pub(crate) async fn acquire(&self) -> sqlx::Result<Conn> {
        let permit = self
            .inner
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| sqlx::Error::PoolClosed)?;
        let idle = self.inner.idle().pop();
        let conn = match idle {
            Some(c) => c,
            None => self.inner.options.connect().await?,
        };
        Ok(Conn {
            conn: Some(conn),
            inner: self.inner.clone(),
            broken: false,
            _permit: permit,
        })
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inner.permits.is_closed()
    }

    /// Waits for every lent connection to come back, closes them all, and refuses to lend
    /// any more.
    pub(crate) async fn close(&self) {
        let Ok(all) = self.inner.permits.acquire_many(self.inner.max).await else {
            return;
        };
        self.inner.permits.close();
        let idle = std::mem::take(&mut *self.inner.idle());
        for conn in idle {
            let _ = conn.close().await;
        }
        drop(all);
    }
}

impl std::fmt::Debug for Conns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conns")
            .field("max", &self.inner.max)
            .field("lendable", &self.inner.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<SqliteConnection>> {
        // The list is only pushed to and popped from: a panic elsewhere leaves it whole.
        self.idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Conn {
    /// Closes this connection instead of returning it: a transaction may be open on it.
    pub(crate) async fn close(mut self) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// Notes an error from this connection's thread; one that means the thread is gone
    /// keeps the connection from being lent again.
    fn note(&mut self, e: &sqlx::Error) {
        if matches!(e, sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed) {
            self.broken = true;
        }
    }
}

impl std::ops::Deref for Conn {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        self.conn.as_ref().expect("present until dropped or closed")
    }
}

impl std::ops::DerefMut for Conn {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        self.conn.as_mut().expect("present until dropped or closed")
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            if !self.broken && !self.inner.permits.is_closed() {
                self.inner.idle().push(conn);
            }
            // Otherwise dropping it ends its thread, which closes the database handle.
        }
    }
}

/// Statements on the pool run on a connection lent for that statement alone, as on
/// sqlx's own pools.
impl<'c> sqlx::Executor<'c> for &'c Conns {
    type Database = Sqlite;

    fn fetch_many<'e, 'q: 'e, E>(
        self,
        query: E,
    ) -> BoxStream<'e, sqlx::Result<Either<SqliteQueryResult, SqliteRow>>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        Box::pin(async_stream::try_stream! {
            let mut conn = self.acquire().await?;
            let mut items = (&mut *conn).fetch_many(query);
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
    ) -> BoxFuture<'e, sqlx::Result<Option<SqliteRow>>>
    where
        'c: 'e,
        E: 'q + Execute<'q, Sqlite>,
    {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            let r = (&mut *conn).fetch_optional(query).await;
            if let Err(e) = &r {
                conn.note(e);
            }
            r
        })
    }

    fn prepare_with<'e, 'q: 'e>(
        self,
        sql: &'q str,
        parameters: &'e [sqlx::sqlite::SqliteTypeInfo],
    ) -> BoxFuture<'e, sqlx::Result<SqliteStatement<'q>>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            (&mut *conn).prepare_with(sql, parameters).await
        })
    }

    fn describe<'e, 'q: 'e>(
        self,
        sql: &'q str,
    ) -> BoxFuture<'e, sqlx::Result<sqlx::Describe<Sqlite>>>
    where
        'c: 'e,
    {
        Box::pin(async move {
            let mut conn = self.acquire().await?;
            (&mut *conn).describe(sql).await
        })
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr as _;
    use std::time::Duration;

    use sqlx::{Connection as _, TransactionManager as _};

    use super::*;

    async fn conns(dir: &tempfile::TempDir, max: u32) -> Conns {
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let conns = Conns::open(options, max).await.unwrap();
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
}
