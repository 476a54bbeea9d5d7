//! The runtime of a `serve` process: starts every loop (the worker's turns, its lease
//! heartbeat and maintenance, notify deliveries, automation rules, the usage and audit
//! scheduler) and owns their shutdown, so that one type says how the process stops.

use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::shutdown::Shutdown;
use crate::Engine;

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
    let shutdown = Shutdown::new(rx);
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
