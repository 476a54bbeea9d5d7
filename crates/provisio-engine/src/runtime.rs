//! The runtime of a `serve` process: starts every loop (the worker's turns, its lease
//! heartbeat and maintenance, notify deliveries, automation rules, the usage and audit
//! scheduler) and owns their shutdown, so that one type says how the process stops.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::Engine;

/// What every loop watches to learn that the process is stopping. Each loop holds its
/// own clone.
#[derive(Clone)]
pub(crate) struct Shutdown(watch::Receiver<bool>);

impl Shutdown {
    pub(crate) fn is_stopping(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once shutdown has begun (at once if it already has).
    pub(crate) async fn stopped(&mut self) {
        // An error means the runtime is gone, which is a stop as well.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }

    /// Sleeps for `d` unless shutdown begins first; says whether it did.
    pub(crate) async fn sleep(&mut self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => false,
            _ = self.stopped() => true,
        }
    }
}

/// The running loops of one process; dropping the handle does not stop them,
/// [`WorkerHandle::shutdown`] does.
pub struct WorkerHandle {
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl WorkerHandle {
    /// Stops claiming, lets jobs and deliveries in flight finish and writes their outcomes.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Starts every loop over `engine`; `owner` names this process in job and delivery leases.
pub fn spawn(engine: Arc<Engine>, owner: String) -> WorkerHandle {
    let (stop, rx) = watch::channel(false);
    let shutdown = Shutdown(rx);
    let mut tasks = JoinSet::new();
    crate::jobs::worker::start(&mut tasks, engine.clone(), owner.clone(), &shutdown);
    tasks.spawn(crate::hooks::deliver::delivery_loop(
        engine.clone(),
        owner,
        shutdown.clone(),
    ));
    tasks.spawn(crate::hooks::rules::rule_loop(
        engine.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(crate::usage::schedule_loop(engine, shutdown));
    WorkerHandle { stop, tasks }
}
