//! SQLite's order lane: the orders of callers that arrive while the writer is busy are
//! written together, as one round trip of a few multi-row statements, instead of a
//! savepoint and two statements an order each.
//!
//! Every statement on the one writer is a round trip to its connection's thread, and the
//! writer is shared by everything that writes; a caller's orders cost rows, not round trips,
//! this way. When no group transaction is open, the lane's write is a transaction of its
//! own (`BEGIN IMMEDIATE` … `COMMIT` in the same round trip); when one is open, it joins it
//! in a savepoint and its callers are answered only after the group's commit
//! ([`GroupWrite::hand_on`]). Either way each caller is answered only with its own result,
//! and only once the commit holding its orders is done. The orders of one cause (the actor
//! and depth stamped on jobs and events) share statements; when their shared write fails (a
//! username taken by one caller's order, say), it is rolled back and each caller's orders
//! are written again on their own, so only the caller at fault fails.

use provisio_core::access::Actor;
use provisio_core::job::NewJob;
use provisio_core::service::NewService;
use tokio::sync::{mpsc, oneshot};

use crate::group::{Group, GroupWrite};
use crate::{Announce, Clock, Orders, Result, StoreError, Stored};

/// Callers taken into one write at most; the orders are split into statements below.
const MAX_CALLERS: usize = 256;

/// One caller's orders: stored all together or not at all.
struct Unit {
    orders: Orders,
    announce: Announce,
    actor: Option<Actor>,
    depth: u32,
    answer: oneshot::Sender<Result<Stored>>,
}

pub(super) struct OrderLane {
    queue: std::sync::Mutex<mpsc::UnboundedSender<Unit>>,
    group: Group,
    clock: Clock,
}

impl OrderLane {
    /// Must be called inside a Tokio runtime; the lane's task ends with the lane.
    pub(super) fn start(group: Group, clock: Clock) -> Self {
        Self {
            queue: std::sync::Mutex::new(spawn(group.clone(), clock.clone())),
            group,
            clock,
        }
    }

    /// Stores one caller's orders with their events; answers once they are committed.
    pub(super) async fn store(
        &self,
        orders: &[(NewService, Option<NewJob>)],
        announce: Announce,
    ) -> Result<Stored> {
        let (answer, answered) = oneshot::channel();
        let mut unit = Unit {
            orders: orders.to_vec(),
            announce,
            actor: crate::current_actor(),
            depth: crate::current_depth(),
            answer,
        };
        {
            let mut queue = self
                .queue
                .lock()
                .expect("the lane's sender is never held across a panic");
            if let Err(mpsc::error::SendError(back)) = queue.send(unit) {
                // The lane went with the runtime that started it (a store opened in one
                // runtime and used in another): start it again in this one.
                *queue = spawn(self.group.clone(), self.clock.clone());
                unit = back;
                if queue.send(unit).is_err() {
                    return Err(stopped());
                }
            }
        }
        // The write runs in the lane's task: a caller that stops waiting cuts off neither
        // its own orders nor the others'.
        answered.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn spawn(group: Group, clock: Clock) -> mpsc::UnboundedSender<Unit> {
    let (queue, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(group, clock, rx));
    queue
}

fn stopped() -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(
        "the order lane stopped before storing the orders",
    )))
}

/// An error for a caller whose orders were written but not committed (or never written
/// because the write could not begin).
fn not_committed(e: &StoreError) -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(format!(
        "the orders were not committed: {e}"
    ))))
}

async fn run(group: Group, clock: Clock, mut rx: mpsc::UnboundedReceiver<Unit>) {
    let mut taken = Vec::new();
    while rx.recv_many(&mut taken, MAX_CALLERS).await > 0 {
        // Callers answered by the last commit come back at nearly the same moment; the
        // first one wakes the lane. One turn at the back of the queue lets those already
        // running hand their orders in too, so they share this write and its commit
        // rather than each cohort committing on its own.
        tokio::task::yield_now().await;
        while taken.len() < MAX_CALLERS {
            match rx.try_recv() {
                Ok(u) => taken.push(u),
                Err(_) => break,
            }
        }
        write(&group, &clock, std::mem::take(&mut taken)).await;
    }
}

async fn write(group: &Group, clock: &Clock, units: Vec<Unit>) {
    let mut causes: Vec<Vec<Unit>> = Vec::new();
    for u in units {
        let same = |c: &&mut Vec<Unit>| {
            c[0].depth == u.depth
                && c[0].actor.as_ref().map(Actor::stored) == u.actor.as_ref().map(Actor::stored)
        };
        match causes.iter_mut().find(same) {
            Some(c) => c.push(u),
            None => causes.push(vec![u]),
        }
    }
    let mut wr = match group.write().await {
        Ok(wr) => wr,
        Err(e) => {
            for u in causes.into_iter().flatten() {
                let _ = u.answer.send(Err(not_committed(&e)));
            }
            return;
        }
    };
    // With no group transaction open, the orders are a transaction of their own, begun and
    // committed in the round trip that writes them; else they join the open one.
    let frame = if wr.joins_open_group() {
        Frame::Savepoint
    } else {
        Frame::Transaction
    };
    let mut done = Vec::new();
    for cause in causes {
        let (actor, depth) = (cause[0].actor.clone(), cause[0].depth);
        let work = write_cause(&mut wr, clock, frame, cause, &mut done);
        match actor {
            Some(a) => crate::acting_at(a, depth, work).await,
            None => work.await,
        }
    }
    if frame == Frame::Transaction {
        // Each answer's write was committed (or rolled back) before it was made.
        drop(wr);
        for (answer, result) in done {
            let _ = answer.send(result);
        }
        return;
    }
    // The writer is handed on now and the commit awaited beside the lane: callers that
    // came in meanwhile are written next, into the same transaction if the commit has not
    // begun yet.
    let durable = wr.hand_on();
    tokio::spawn(async move {
        let durable = durable.await;
        for (answer, result) in done {
            let result = match (&durable, result) {
                (Ok(()), r) => r,
                // This caller's own failure stays its answer; what it wrote was not committed.
                (Err(_), Err(e)) => Err(e),
                (Err(e), Ok(_)) => Err(not_committed(e)),
            };
            let _ = answer.send(result);
        }
    });
}

/// What a write of orders is bracketed in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Frame {
    /// A savepoint of the open group transaction, committed with the group.
    Savepoint,
    /// A transaction of its own on the writer, taken while no group transaction is open.
    Transaction,
}

/// The units of one cause: together if they can be, else each on its own.
async fn write_cause(
    wr: &mut GroupWrite<'_>,
    clock: &Clock,
    frame: Frame,
    units: Vec<Unit>,
    done: &mut Vec<(oneshot::Sender<Result<Stored>>, Result<Stored>)>,
) {
    if units.len() > 1 {
        if let Ok(mut stored) = attempt(wr, clock, frame, &units).await {
            // Rows come back in the order of the units' orders.
            for u in units.into_iter().rev() {
                let mine = stored.split_off(stored.len() - u.orders.len());
                done.push((u.answer, Ok(mine)));
            }
            return;
        }
    }
    for u in units {
        let r = attempt(wr, clock, frame, std::slice::from_ref(&u)).await;
        done.push((u.answer, r));
    }
}

/// Writes the orders of `units` and their events in `frame`; all or nothing.
async fn attempt(
    wr: &mut GroupWrite<'_>,
    clock: &Clock,
    frame: Frame,
    units: &[Unit],
) -> Result<Stored> {
    let now = clock.now();
    let joined: Orders;
    let all = match units {
        [one] => one.orders.as_slice(),
        _ => {
            joined = units
                .iter()
                .flat_map(|u| u.orders.iter().cloned())
                .collect();
            joined.as_slice()
        }
    };
    match frame {
        Frame::Savepoint => {
            let name = wr.savepoint_name();
            let conn = wr.connection().await?;
            let open = format!("SAVEPOINT {name}");
            let written = write_announced(conn, &open, None, now, all, units).await;
            // The savepoint is left open when all went well: the group's COMMIT commits
            // what it holds, and releasing it would cost a round trip. Its name is this
            // write's alone, so rolling back to it (which fails if it was never opened)
            // undoes nobody else's.
            if written.is_err() {
                sqlx::query(&format!("ROLLBACK TO {name}"))
                    .execute(&mut *conn)
                    .await?;
                sqlx::query(&format!("RELEASE {name}"))
                    .execute(&mut *conn)
                    .await?;
            }
            written
        }
        Frame::Transaction => {
            let conn = wr.unshared().await?;
            let written =
                write_announced(conn, "BEGIN IMMEDIATE", Some("COMMIT"), now, all, units).await;
            if written.is_err() && !rolled_back(conn).await {
                // A transaction may be open on it still: it must not serve anyone else.
                wr.discard_unshared().await;
            }
            written
        }
    }
}

/// Ends whatever transaction a failed write left open; whether none is open now.
async fn rolled_back(conn: &mut sqlx::SqliteConnection) -> bool {
    match sqlx::query("ROLLBACK").execute(&mut *conn).await {
        Ok(_) => true,
        // SQLite rolls a transaction back itself on some errors (a full disk, say).
        Err(e) => e.to_string().contains("no transaction is active"),
    }
}

/// The orders of `units` (`all`, in the units' order) and the events they announce, after
/// the statement `open` and before `close`, if given: one round trip to the writer's
/// thread for the orders (with `close`, when they announce nothing) and one for the events
/// (with `close`).
async fn write_announced(
    conn: &mut sqlx::SqliteConnection,
    open: &str,
    close: Option<&str>,
    now: chrono::DateTime<chrono::Utc>,
    all: &[(NewService, Option<NewJob>)],
    units: &[Unit],
) -> Result<Stored> {
    // Functions compare equal only if they are one function or have the same code, which
    // for a function returning no events is the same: a miss costs only a round trip.
    let silent = units
        .iter()
        .all(|u| std::ptr::fn_addr_eq(u.announce, crate::sql::unannounced as crate::Announce));
    let stored = write_orders(conn, open, close.filter(|_| silent), now, all).await?;
    if silent {
        return Ok(stored);
    }
    let mut events = Vec::new();
    let mut rest = stored.as_slice();
    for u in units {
        let (mine, after) = rest.split_at(u.orders.len());
        rest = after;
        events.extend(mine.iter().flat_map(|(s, j)| (u.announce)(s, j.as_ref())));
    }
    let at = crate::rows::ts(now);
    let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("");
    let mut statements = 0;
    for chunk in events.chunks(EVENTS_PER_STATEMENT) {
        if statements > 0 {
            qb.push("; ");
        }
        super::SqliteStore::push_event_rows(&mut qb, at, chunk);
        statements += 1;
    }
    if let Some(close) = close {
        if statements > 0 {
            qb.push("; ");
        }
        qb.push(close);
        statements += 1;
    }
    if statements > 0 {
        fetch_statements(conn, qb).await?;
    }
    Ok(stored)
}

/// Events per multi-row statement (6 parameters each).
const EVENTS_PER_STATEMENT: usize = 200;

/// Writes the orders' services and jobs after the statement `open` (and before `close`),
/// all in one round trip to the writer's thread: each job names its service by server and
/// username, which the partial unique index finds among the live services just inserted.
/// A terminated service is outside that index, so orders with one and a job are written
/// the longer way, by id.
async fn write_orders(
    conn: &mut sqlx::SqliteConnection,
    open: &str,
    close: Option<&str>,
    at: chrono::DateTime<chrono::Utc>,
    orders: &[(NewService, Option<NewJob>)],
) -> Result<Stored> {
    use sqlx::FromRow as _;

    let by_lookup = orders
        .iter()
        .all(|(s, j)| j.is_none() || s.status != provisio_core::service::ServiceStatus::Terminated);
    if !by_lookup {
        sqlx::query(open).execute(&mut *conn).await?;
        let stored = super::insert_orders_tx(conn, at, orders).await?;
        if let Some(close) = close {
            sqlx::query(close).execute(&mut *conn).await?;
        }
        return Ok(stored);
    }
    let now = crate::rows::ts(at);
    let chunks: Vec<_> = orders
        .chunks(crate::sql::ORDERS_PER_STATEMENT)
        .map(|chunk| {
            let jobs: Vec<_> = chunk
                .iter()
                .filter_map(|(s, j)| {
                    let service = crate::sql::JobService::Live(s.server_id.0, s.username.as_str());
                    j.as_ref().map(|j| (service, j))
                })
                .collect();
            (chunk, jobs)
        })
        .collect();
    let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(open);
    // Which statements insert services: `open` is statement 0, then each chunk's services
    // and (if any) its jobs.
    let mut services_at = std::collections::HashSet::new();
    let mut statements = 1;
    for (chunk, jobs) in &chunks {
        qb.push("; ");
        super::push_services_insert(&mut qb, now, chunk);
        services_at.insert(statements);
        statements += 1;
        if !jobs.is_empty() {
            qb.push("; ");
            super::push_jobs_insert(&mut qb, now, jobs);
            statements += 1;
        }
    }
    if let Some(close) = close {
        qb.push("; ").push(close);
    }
    // Rows come statement by statement, each statement's end marked by its result.
    let (mut statement, mut services, mut jobs) = (0usize, Vec::new(), Vec::new());
    for item in fetch_statements(conn, qb).await? {
        match item {
            sqlx::Either::Left(_) => statement += 1,
            sqlx::Either::Right(row) => {
                if services_at.contains(&statement) {
                    services.push(crate::rows::ServiceRow::from_row(&row)?);
                } else {
                    jobs.push(crate::rows::JobRow::from_row(&row)?);
                }
            }
        }
    }
    let mut out = Vec::with_capacity(orders.len());
    let mut services = services.into_iter();
    let mut jobs = jobs.into_iter();
    for (chunk, with_jobs) in &chunks {
        let stored = crate::sql::stored_services(
            chunk.len(),
            services.by_ref().take(chunk.len()).collect(),
        )?;
        let mine = jobs.by_ref().take(with_jobs.len()).collect();
        out.extend(crate::sql::pair_orders(stored, with_jobs.len(), mine)?);
    }
    Ok(out)
}

/// Runs every statement `qb` holds, in one round trip; each statement's rows, then its
/// result (the end of it).
///
/// sqlx marks several statements in one query as deprecated (launchbadge/sqlx#3108: only
/// its SQLite driver runs them), and `raw_sql`, which it points to, takes no parameters.
/// Until it offers another way to send parameters with several statements, this is the one
/// place the store relies on it.
#[allow(deprecated)]
async fn fetch_statements(
    conn: &mut sqlx::SqliteConnection,
    mut qb: sqlx::QueryBuilder<'_, sqlx::Sqlite>,
) -> Result<Vec<sqlx::Either<sqlx::sqlite::SqliteQueryResult, sqlx::sqlite::SqliteRow>>> {
    use futures::TryStreamExt as _;
    Ok(qb.build().fetch_many(conn).try_collect().await?)
}
