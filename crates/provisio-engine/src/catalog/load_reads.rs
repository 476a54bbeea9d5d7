//! Placement's reads of server loads, shared by the orders that ask at the same time: one
//! read serves every order that arrived while the previous read was on its way, instead of
//! one read (a database round trip on PostgreSQL) per order.
//!
//! A read that was already running when an order asked may have missed a change committed
//! just before the ask, so an order only ever joins the next read, which starts after it
//! asked: each order sees at least what one read of its own would have seen. The orders of
//! one read also see each other's placements (`Round::place`), as the orders of one batch do:
//! without that, every order of a burst would see the same counts and go to the same server.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use provisio_core::server::Server;
use provisio_core::ServerId;
use provisio_store::Store;
use tokio::sync::oneshot;

/// The counts one read found, and the places its orders have taken since.
pub(crate) struct Round {
    loads: HashMap<ServerId, i64>,
    taken: Mutex<HashMap<ServerId, i64>>,
}

impl Round {
    /// The counts of a read of one order's own.
    pub(crate) fn alone(loads: HashMap<ServerId, i64>) -> Self {
        Self {
            loads,
            taken: Mutex::default(),
        }
    }

    /// Picks the candidate with the fewest live services, counting `extra` more on the
    /// servers it names and the places this round's orders took before; takes its place.
    pub(crate) fn place(
        &self,
        candidates: Vec<Server>,
        extra: &HashMap<ServerId, i64>,
    ) -> Option<Server> {
        let mut taken = self
            .taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut best: Option<(i64, Server)> = None;
        for s in candidates {
            let load = self.loads.get(&s.id).copied().unwrap_or(0)
                + extra.get(&s.id).copied().unwrap_or(0)
                + taken.get(&s.id).copied().unwrap_or(0);
            if best.as_ref().is_none_or(|(l, _)| load < *l) {
                best = Some((load, s));
            }
        }
        let (_, server) = best?;
        *taken.entry(server.id).or_default() += 1;
        Some(server)
    }
}

type Answer = Option<Arc<Round>>;

#[derive(Default)]
struct Waiting {
    servers: BTreeSet<ServerId>,
    answers: Vec<oneshot::Sender<Answer>>,
    /// A task is reading (and will read again for whoever waits when it ends).
    reading: bool,
}

#[derive(Default)]
pub(crate) struct LoadReads {
    waiting: Arc<Mutex<Waiting>>,
}

impl LoadReads {
    /// The loads of `servers` from a read that began after this call. `None` when that
    /// read failed: the caller reads alone, and meets the error itself.
    pub(crate) async fn read(&self, store: &Arc<dyn Store>, servers: &[ServerId]) -> Answer {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut w = lock(&self.waiting);
            w.servers.extend(servers.iter().copied());
            w.answers.push(answer);
            !std::mem::replace(&mut w.reading, true)
        };
        if start {
            // In a task of its own: a caller that stops waiting stops no one else's read.
            tokio::spawn(reads(self.waiting.clone(), store.clone()));
        }
        answered.await.ok().flatten()
    }
}

/// Reads for whoever is waiting, round after round, until no one is.
async fn reads(waiting: Arc<Mutex<Waiting>>, store: Arc<dyn Store>) {
    let _ends = Ends(waiting.clone());
    loop {
        let (servers, answers) = {
            let mut w = lock(&waiting);
            if w.answers.is_empty() {
                return;
            }
            (
                std::mem::take(&mut w.servers),
                std::mem::take(&mut w.answers),
            )
        };
        let ids: Vec<ServerId> = servers.into_iter().collect();
        let round = match store.server_loads(&ids).await {
            Ok(loads) => Some(Arc::new(Round::alone(loads))),
            Err(e) => {
                tracing::debug!(error = %e, "a shared read of server loads failed");
                None
            }
        };
        for a in answers {
            let _ = a.send(round.clone());
        }
    }
}

/// However the reading task ends (no one waiting, a panic, the runtime stopping), the next
/// caller starts another; anyone left waiting is let go to read alone.
struct Ends(Arc<Mutex<Waiting>>);

impl Drop for Ends {
    fn drop(&mut self) {
        let mut w = lock(&self.0);
        w.reading = false;
        w.answers.clear();
        w.servers.clear();
    }
}

fn lock(w: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    // Only taken for a few pushes and swaps: a panic elsewhere leaves it whole.
    w.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
