//! SQLite's order lane: the orders of callers that arrive while the writer is busy are
//! written together, in one savepoint of a few multi-row statements, instead of a savepoint
//! and two statements an order each.
//!
//! Every statement on the one writer is a round trip to its connection's thread, and the
//! writer is shared by everything that writes; a caller's orders cost rows, not round trips,
//! this way. Each caller is still answered only with its own result, and only after the
//! commit that holds its orders ([`GroupWrite::hand_on`]). The orders of one cause (the
//! actor and depth stamped on jobs and events) share statements; when their shared
//! savepoint fails (a username taken by one caller's order, say), it is rolled back and each
//! caller's orders are written again in a savepoint of their own, in the same transaction,
//! so only the caller at fault fails.

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
    let mut done = Vec::new();
    for cause in causes {
        let (actor, depth) = (cause[0].actor.clone(), cause[0].depth);
        let work = write_cause(&mut wr, clock, cause, &mut done);
        match actor {
            Some(a) => crate::acting_at(a, depth, work).await,
            None => work.await,
        }
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

/// The units of one cause: together if they can be, else each in a savepoint of its own.
async fn write_cause(
    wr: &mut GroupWrite<'_>,
    clock: &Clock,
    units: Vec<Unit>,
    done: &mut Vec<(oneshot::Sender<Result<Stored>>, Result<Stored>)>,
) {
    if units.len() > 1 {
        if let Ok(mut stored) = savepoint(wr, clock, &units).await {
            // Rows come back in the order of the units' orders.
            for u in units.into_iter().rev() {
                let mine = stored.split_off(stored.len() - u.orders.len());
                done.push((u.answer, Ok(mine)));
            }
            return;
        }
    }
    for u in units {
        let r = savepoint(wr, clock, std::slice::from_ref(&u)).await;
        done.push((u.answer, r));
    }
}

/// Writes `units` in one savepoint of the group's transaction; rolled back on an error.
async fn savepoint(wr: &mut GroupWrite<'_>, clock: &Clock, units: &[Unit]) -> Result<Stored> {
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
    let mut tx = wr.begin().await?;
    let written = async {
        let stored = super::insert_orders_tx(&mut tx, now, all).await?;
        let mut events = Vec::new();
        let mut rest = stored.as_slice();
        for u in units {
            let (mine, after) = rest.split_at(u.orders.len());
            rest = after;
            events.extend(mine.iter().flat_map(|(s, j)| (u.announce)(s, j.as_ref())));
        }
        super::insert_events_tx(&mut tx, now, &events).await?;
        Ok::<_, StoreError>(stored)
    }
    .await;
    match written {
        Ok(stored) => {
            tx.commit().await?;
            Ok(stored)
        }
        Err(e) => {
            tx.rollback().await?;
            Err(e)
        }
    }
}
