//! Group commit for SQLite's single writer: write transactions that arrive together share
//! one database transaction, each in a savepoint of its own, and every caller is answered
//! only once the transaction holding its write has committed.
//!
//! How it works: the writer connection sits behind a fair (first come, first served) lock.
//! The first caller of a group takes the pool's one writer connection and opens
//! `BEGIN IMMEDIATE`; each caller runs its work inside a savepoint (sqlx's nested
//! [`sqlx::Transaction`]), so an error rolls back that caller's part alone and reaches that
//! caller alone. A caller that released its savepoint hands the lock on and waits; the
//! flusher task, woken by it, queues for the same lock behind every caller already waiting,
//! so when it gets the lock the group is everyone who came in meanwhile: it commits once and
//! answers them all. A failed commit is answered to every caller of the group as an error,
//! so nobody is told a write is durable that is not.
//!
//! The connection goes back to the pool after each commit, so the claims and single
//! statements that use the writer pool directly still get their turn between groups.
//!
//! A holder of the lock that finds no group open may instead take the writer for a
//! transaction of its own ([`GroupWrite::unshared`]): it commits and answers its callers
//! itself, in the same round trip as its statements, and nobody waits for a flusher.

use std::sync::Arc;

use sqlx::sqlite::SqliteTransactionManager;
use sqlx::{Connection, Database, Sqlite, SqliteConnection, Transaction, TransactionManager};
use tokio::sync::{mpsc, oneshot, Mutex, OwnedMutexGuard};

use crate::sqlite::{Conn, Conns};
use crate::{Result, StoreError};

/// The shared writer of one SQLite store; its clones share it.
#[derive(Clone)]
pub(crate) struct Group {
    writer: Conns,
    state: Arc<Mutex<State>>,
    /// Wakes the flusher; a full channel already holds a wake-up, which is as good.
    wake: mpsc::Sender<()>,
}

#[derive(Default)]
struct State {
    /// The writer connection while a group's transaction is open.
    conn: Option<Conn>,
    /// Callers whose savepoints were released into the open transaction.
    waiting: Vec<oneshot::Sender<std::result::Result<(), String>>>,
    /// Savepoints named by [`GroupWrite::savepoint_name`] in the open transaction.
    named: u32,
}

impl Group {
    /// Must be called inside a Tokio runtime: it starts the flusher, which ends when the
    /// group and its clones are dropped.
    pub(crate) fn new(writer: Conns) -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let (wake, rx) = mpsc::channel(1);
        tokio::spawn(flusher(state.clone(), rx));
        Self {
            writer,
            state,
            wake,
        }
    }

    /// Waits for this caller's turn at the writer.
    pub(crate) async fn write(&self) -> Result<GroupWrite<'_>> {
        Ok(GroupWrite {
            guard: Some(self.state.clone().lock_owned().await),
            group: self,
            own: None,
        })
    }
}

/// One caller's turn at the writer: [`GroupWrite::begin`] its transaction, commit that
/// (which releases its savepoint), then [`GroupWrite::durable`] waits for the real commit.
pub struct GroupWrite<'a> {
    guard: Option<OwnedMutexGuard<State>>,
    group: &'a Group,
    /// The writer taken by [`GroupWrite::unshared`], outside any group transaction.
    own: Option<Conn>,
}

impl GroupWrite<'_> {
    pub async fn begin(&mut self) -> Result<Transaction<'_, Sqlite>> {
        Ok(self.connection().await?.begin().await?)
    }

    /// Whether a group transaction is open: writes before this one wait in it for their
    /// commit.
    pub(crate) fn joins_open_group(&self) -> bool {
        self.guard
            .as_ref()
            .expect("the guard is held until durable() or drop")
            .conn
            .is_some()
    }

    /// The writer, for a caller that brackets its statements in `BEGIN IMMEDIATE` and
    /// `COMMIT` of its own, so a whole transaction can be one round trip to the connection's
    /// thread. Only while no group transaction is open ([`GroupWrite::joins_open_group`]);
    /// the caller must leave no transaction open on it (or [`GroupWrite::discard_unshared`]
    /// it). It goes back to the pool with this turn.
    pub(crate) async fn unshared(&mut self) -> Result<&mut SqliteConnection> {
        assert!(
            !self.joins_open_group(),
            "the writer is inside an open group transaction"
        );
        if self.own.is_none() {
            self.own = Some(self.group.writer.acquire().await?);
        }
        Ok(self.own.as_mut().expect("taken above"))
    }

    /// Closes the writer taken by [`GroupWrite::unshared`] instead of returning it to the
    /// pool: a transaction may still be open on it. The pool opens a new one when asked.
    pub(crate) async fn discard_unshared(&mut self) {
        if let Some(conn) = self.own.take() {
            conn.close().await;
        }
    }

    /// A savepoint name used by no other write in the group's open transaction, for a caller
    /// of [`GroupWrite::connection`]: rolling back to it can only undo this caller's write,
    /// whatever savepoints the writes before it left open.
    pub(crate) fn savepoint_name(&mut self) -> String {
        let state = self
            .guard
            .as_mut()
            .expect("the guard is held until durable() or drop");
        state.named += 1;
        format!("group_write_{}", state.named)
    }

    /// The writer inside the group's open transaction, for a caller that sends its own
    /// savepoint with its statements (one round trip to the connection's thread, where
    /// [`GroupWrite::begin`] and its commit are one each). What its savepoint holds, released
    /// or left open, is committed with the group: SQLite's COMMIT ends every savepoint.
    pub(crate) async fn connection(&mut self) -> Result<&mut SqliteConnection> {
        let state = self
            .guard
            .as_mut()
            .expect("the guard is held until durable() or drop");
        if state.conn.is_none() {
            let mut conn = self.group.writer.acquire().await?;
            // The write lock up front, as the claims take it: a deferred transaction that
            // read before another process committed could not upgrade to write.
            SqliteTransactionManager::begin(&mut conn, Some("BEGIN IMMEDIATE".into())).await?;
            state.conn = Some(conn);
        }
        Ok(state.conn.as_mut().expect("opened above"))
    }

    /// Hands the writer on and waits until the transaction holding this caller's released
    /// savepoint has committed (or failed to).
    pub async fn durable(self) -> Result<()> {
        self.hand_on().await
    }

    /// Hands the writer on at once (the next caller may write into the same transaction
    /// while this one waits) and answers, when awaited, whether the transaction holding
    /// this caller's released savepoint committed. The answer owns what it needs, so a
    /// caller that writes for others can leave the waiting to another task.
    pub(crate) fn hand_on(
        mut self,
    ) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        drop(self.own.take());
        let mut guard = self.guard.take().expect("hand_on() is called once");
        // Nothing was begun, so nothing waits to be committed.
        let rx = guard.conn.is_some().then(|| {
            let (tx, rx) = oneshot::channel();
            guard.waiting.push(tx);
            rx
        });
        drop(guard);
        let closed = rx.is_some()
            && matches!(
                self.group.wake.try_send(()),
                Err(mpsc::error::TrySendError::Closed(()))
            );
        let state = self.group.state.clone();
        async move {
            let Some(rx) = rx else { return Ok(()) };
            if closed {
                // The flusher went with the runtime that started it: commit here instead
                // of waiting for an answer that would never come.
                flush(&state).await;
            }
            match rx.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(commit_failed(e)),
                Err(_) => Err(commit_failed("the writer stopped before committing".into())),
            }
        }
    }
}

impl Drop for GroupWrite<'_> {
    /// A caller that returns early (an error, nothing to change) still lets the group that
    /// it was part of be committed.
    fn drop(&mut self) {
        // The writer goes back to the pool before the next caller's turn begins.
        drop(self.own.take());
        if let Some(guard) = self.guard.take() {
            drop(guard);
            let _ = self.group.wake.try_send(());
        }
    }
}

fn commit_failed(e: String) -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(format!(
        "the group commit failed: {e}"
    ))))
}

async fn flusher(state: Arc<Mutex<State>>, mut wake: mpsc::Receiver<()>) {
    while wake.recv().await.is_some() {
        flush(&state).await;
    }
}

/// Commits the open group, if any, and answers its callers.
async fn flush(state: &Mutex<State>) {
    let mut st = state.lock().await;
    let Some(mut conn) = st.conn.take() else {
        return;
    };
    let waiting = std::mem::take(&mut st.waiting);
    st.named = 0;
    let result = SqliteTransactionManager::commit(&mut conn).await;
    if let Err(e) = &result {
        tracing::error!(error = %e, callers = waiting.len(), "group commit failed");
        // SQLite may have rolled the transaction back itself; make sure the connection
        // leaves no transaction open, or let it go.
        let clean = SqliteTransactionManager::rollback(&mut conn).await.is_ok()
            && <Sqlite as Database>::TransactionManager::get_transaction_depth(&conn) == 0;
        if !clean {
            conn.close().await;
        }
    } else {
        drop(conn);
    }
    drop(st);
    let answer = result.map_err(|e| e.to_string());
    for w in waiting {
        let _ = w.send(answer.clone());
    }
}

/// A turn at a pool that needs no grouping (PostgreSQL, whose server commits concurrent
/// transactions itself): a connection, its transaction, and nothing to wait for after.
pub struct DirectWrite<DB: Database>(pub(crate) crate::conns::Conn<DB>);

impl<DB: Database> DirectWrite<DB> {
    pub async fn begin(&mut self) -> Result<Transaction<'_, DB>> {
        Ok(self.0.begin().await?)
    }

    /// The transaction's own commit was the durable one, and the connection is sound.
    pub async fn durable(mut self) -> Result<()> {
        self.0.ended_cleanly();
        Ok(())
    }
}
