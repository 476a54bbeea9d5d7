//! The lane single orders are stored through: orders that arrive while the previous write
//! is on its way are stored together, in one write of a few multi-row statements, instead
//! of one write (and, on SQLite, one turn at the single writer) each.
//!
//! Each caller is still answered only with its own result, once the write holding its
//! order is durable (`Store::insert_orders` returns only then). Orders of a write are
//! stored under their own cause (the actor and depth stamped on jobs and events), so only
//! orders of the same cause share a statement. When a write fails (a username or external
//! id taken by one of them, say), each of its orders is stored alone, so only the order at
//! fault fails.

use std::sync::{Arc, OnceLock};

use provisio_core::access::Actor;
use provisio_core::job::{Job, NewJob};
use provisio_core::service::{NewService, Service};
use provisio_store::{Store, StoreError};
use tokio::sync::{mpsc, oneshot};

/// Orders taken into one write at most (the store splits them into statements).
const MAX_PER_WRITE: usize = 500;

type Stored = std::result::Result<(Service, Option<Job>), StoreError>;

struct Pending {
    order: (NewService, Option<NewJob>),
    actor: Option<Actor>,
    depth: u32,
    answer: oneshot::Sender<Stored>,
}

#[derive(Default)]
pub(crate) struct OrderLane {
    /// Started at the first order, inside the runtime that serves it; ends with the engine.
    queue: OnceLock<mpsc::UnboundedSender<Pending>>,
}

impl OrderLane {
    /// Stores one order with its create job and `service.create.before` event.
    pub(crate) async fn store(
        &self,
        store: &Arc<dyn Store>,
        order: (NewService, Option<NewJob>),
    ) -> Stored {
        let queue = self.queue.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(run(store.clone(), rx));
            tx
        });
        let (answer, answered) = oneshot::channel();
        let pending = Pending {
            order,
            actor: provisio_store::current_actor(),
            depth: provisio_store::current_depth(),
            answer,
        };
        if queue.send(pending).is_err() {
            return Err(stopped());
        }
        // The write runs in the lane's task: a caller that stops waiting cuts off neither
        // its own order nor the others'.
        answered.await.unwrap_or_else(|_| Err(stopped()))
    }
}

fn stopped() -> StoreError {
    StoreError::Database(sqlx::Error::Io(std::io::Error::other(
        "the order lane stopped before storing the order",
    )))
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut taken = Vec::new();
    while rx.recv_many(&mut taken, MAX_PER_WRITE).await > 0 {
        // Orders of one cause share a write; the writes of different causes run together,
        // so SQLite's group commit still puts them in one commit.
        let mut causes: Vec<Vec<Pending>> = Vec::new();
        for p in taken.drain(..) {
            let same = |c: &&mut Vec<Pending>| {
                let first = &c[0];
                first.depth == p.depth
                    && first.actor.as_ref().map(Actor::stored)
                        == p.actor.as_ref().map(Actor::stored)
            };
            match causes.iter_mut().find(same) {
                Some(c) => c.push(p),
                None => causes.push(vec![p]),
            }
        }
        futures::future::join_all(causes.into_iter().map(|c| write(store.as_ref(), c))).await;
    }
}

async fn write(store: &dyn Store, orders: Vec<Pending>) {
    let (actor, depth) = (orders[0].actor.clone(), orders[0].depth);
    let work = async {
        let rows: Vec<_> = orders.iter().map(|p| p.order.clone()).collect();
        match store
            .insert_orders(&rows, super::services::announce_create)
            .await
        {
            Ok(stored) if stored.len() == orders.len() => {
                for (p, s) in orders.into_iter().zip(stored) {
                    let _ = p.answer.send(Ok(s));
                }
            }
            // One order at fault (or a write that failed as a whole): each alone, so
            // each caller gets its own order's result.
            _ if orders.len() > 1 => {
                for p in orders {
                    let one = store
                        .insert_orders(
                            std::slice::from_ref(&p.order),
                            super::services::announce_create,
                        )
                        .await
                        .and_then(|mut v| {
                            v.pop().ok_or_else(|| {
                                StoreError::Corrupt("a stored order was not returned".into())
                            })
                        });
                    let _ = p.answer.send(one);
                }
            }
            Ok(_) => {
                for p in orders {
                    let _ = p.answer.send(Err(StoreError::Corrupt(
                        "a stored order was not returned".into(),
                    )));
                }
            }
            Err(e) => {
                if let Some(p) = orders.into_iter().next() {
                    let _ = p.answer.send(Err(e));
                }
            }
        }
    };
    match actor {
        Some(a) => provisio_store::acting_at(a, depth, work).await,
        None => work.await,
    }
}
